"""Every user-facing command. Thin on purpose: options -> a frozen config -> one call into pipeline/ or trainer/.
Heavy imports (torch, faiss, numba) happen inside the commands, so `--help` is instant.
Multi-GPU training launches this same file: `torchrun --nproc-per-node=4 cli.py fit ...`."""
import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """Zhang-style colorization: preprocess images into shards, train, colorize, evaluate."""


# ---- pipeline: images -> shards -------------------------------------------------------------------------

@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--shallow", is_flag=True, help="Metadata, counts and prior only; skip reading every chunk.")
def verify(folder, shallow):
    """Check a shard FOLDER against its manifest: counts, checksums, shapes, prior. Exit 1 on problems."""
    from pipeline import contract
    problems = contract.verify_folder(folder, deep=not shallow, progress=True)
    if problems:
        for p in problems:
            click.echo(p, err=True)
        raise click.ClickException(f"{folder}: {len(problems)} problem(s); preprocess again into a fresh folder")
    click.echo(f"ok: {contract.describe_folder(folder)}, "
               f"{'metadata only' if shallow else 'every chunk checksummed'}")


# ---- trainer: shards -> checkpoints ---------------------------------------------------------------------


# ---- checkpoints -> colours and numbers -----------------------------------------------------------------
def _net_size(ctx, param, value):
    if value < 8 or value % 8:
        raise click.BadParameter(f"{value}: must be a positive multiple of 8 (the network halves the side 3 times)")
    return value


def _positive(ctx, param, value):
    if value <= 0:
        raise click.BadParameter(f"{value}: must be > 0")
    return value


def _user_errors():
    """Exceptions that mean bad input (a wrong checkpoint, shards, an empty folder): message, no traceback."""
    from pipeline.contract import ShardFormatError
    from trainer.checkpoint import CheckpointError
    from trainer.evaluate import EvalError
    return CheckpointError, ShardFormatError, EvalError


_checkpoint_opt = click.option("--checkpoint", "checkpoints", multiple=True, required=True,
                               type=click.Path(exists=True, dir_okay=False),
                               help="Our checkpoint (RUN_DIR/last.pt) or a released ECCV16 state dict; repeat to compare.")
_size_opt = click.option("--size", default=256, callback=_net_size, help="Side of the square L the network sees.")
_temp_opt = click.option("--temperature", default=0.38, callback=_positive,
                         help="Annealed-mean temperature for CE/focal models (1: mean, -> 0: mode).")
_device_opt = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto")
_prior_opt = click.option("--prior", default=None, type=click.Path(exists=True, dir_okay=False),
                          help="prior.npz for rebalanced AuC of models that carry no training prior.")


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Our checkpoint (RUN_DIR/last.pt) or a released ECCV16 state dict.")
@click.option("--out", default="artifacts/colorized", type=click.Path(file_okay=False))
@_size_opt
@_temp_opt
@_device_opt
def colorize(inputs, **opts):
    """Colorize INPUTS (image files or folders) at full resolution; PNGs with the input's size and lightness."""
    from trainer.colorize import ColorizeConfig, run
    try:
        result = run(ColorizeConfig(inputs=tuple(inputs), **opts))
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"{result.summary()} -> {opts['out']}")
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} input(s) could not be colorized (listed above)")


@cli.command()
@_checkpoint_opt
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False), help="Shard folder (its --split).")
@click.option("--images", default=None, type=click.Path(exists=True, file_okay=False), help="Folder of colour photos.")
@click.option("--out", default="artifacts/eval", type=click.Path(file_okay=False))
@click.option("--split", default="test", help="Split of the shard folder evaluated with --data.")
@_size_opt
@_temp_opt
@_prior_opt
@click.option("--limit", default=0, help="Evaluate at most this many images (0: all).")
@click.option("--batch-size", default=8, callback=_positive)
@_device_opt
def evaluate(checkpoints, **opts):
    """AuC, rebalanced AuC, PSNR, SSIM, colourfulness per model and for a gray baseline -> metrics.json/.md."""
    from trainer import metrics
    from trainer.evaluate import EvalConfig, run
    if bool(opts["data"]) == bool(opts["images"]):
        raise click.UsageError("give exactly one of --data SHARD_DIR or --images DIR")
    try:
        report = run(EvalConfig(checkpoints=tuple(checkpoints),
                                **{**opts, **{k: opts[k] or "" for k in ("data", "images", "prior")}}))
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(metrics.markdown_table({n: m["summary"] for n, m in report["models"].items()}))
    click.echo(f"-> {opts['out']}/metrics.json, metrics.md")


@cli.command()
@_checkpoint_opt
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of photos.")
@click.option("--out", default="artifacts/compare", type=click.Path(file_okay=False))
@_size_opt
@click.option("--panel", default=256, callback=_positive, help="Panel height in px (larger photos are shrunk).")
@_temp_opt
@_prior_opt
@click.option("--limit", default=0, help="Compare at most this many images (0: all).")
@_device_opt
def compare(checkpoints, **opts):
    """One PNG per photo: gray | each model | ground truth, labelled; index.html with the metric table."""
    from trainer.compare import CompareConfig, run
    try:
        index, failed = run(CompareConfig(checkpoints=tuple(checkpoints), **{**opts, "prior": opts["prior"] or ""}))
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"-> {index}")
    if failed:
        raise click.ClickException(f"{len(failed)} input(s) could not be compared (listed above)")


@cli.command()
@click.option("--steps", default=600, callback=_positive,
              help="Training steps per loss (same for l2, ce, focal).")
@click.option("--out", default="artifacts/study", type=click.Path(file_okay=False))
@click.option("--data", default="artifacts/shards/sample", type=click.Path(file_okay=False),
              help="Sample shard folder; preprocessed first when missing.")
@click.option("--seed", default=0)
def study(**opts):
    """Loss study on the bundled sample: train `tiny` with l2, ce, focal for equal steps; evaluate and compare."""
    from trainer.study import StudyConfig, run
    try:
        report = run(StudyConfig(**opts))
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"-> {report}")


# ---- benchmarks (each prints one JSON object on its last line) -------------------------------------------
@cli.group()
def bench():
    """Throughput measurements; figures go to docs/benchmarks.md."""


@bench.command("scale")
@click.option("--n", default=20000, help="Synthetic images at the large size; the small size is N/4.")
@click.option("--size", default=64, help="Preprocess --size (small, so 20,000 images take minutes on 2 cores).")
@click.option("--px", default=96, help="Side of the generated JPEGs.")
@click.option("--jobs", default=2, help="Preprocess worker processes.")
@click.option("--workers", default=2, help="DataLoader worker processes.")
@click.option("--batch-size", default=64)
@click.option("--workdir", default="", type=click.Path(file_okay=False),
              help="Where the temporary images and shards go (deleted afterwards); default: the system temp dir.")
def bench_scale(**opts):
    """Preprocess + one loader epoch at N/4 and N images: throughput per image and peak RSS at both."""
    import json
    from pipeline.bench_scale import run_scale
    try:
        figures = run_scale(**opts, echo=click.echo)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(json.dumps(figures))


@bench.command("preprocess")
@click.argument("dataset", required=False, type=click.Choice(["folder", "sun_objects", "sun_scenes"]))
@click.option("--root", default=None, type=click.Path(exists=True, file_okay=False))
@click.option("--images", default=600, type=click.IntRange(min=20),
              help="Images timed (generated 640x480 JPEGs when no DATASET is given); half of them for the small size.")
@click.option("--jobs", default=0, type=click.IntRange(min=0), help="Workers for both measurements (0: one per core).")
@click.option("--size", default=256, callback=_size)
def bench_preprocess(dataset, root, images, jobs, size):
    """Full pipeline vs decode-only images/s on the same files, and peak memory at two dataset sizes."""
    import json
    from pipeline.bench import bench_preprocess as measure
    if dataset and not root:
        raise click.BadParameter(f"dataset {dataset!r} needs --root DIR", param_hint="--root")
    figures = measure(dataset, root or "", images, jobs, size, echo=click.echo)
    click.echo(json.dumps(figures))


if __name__ == "__main__":
    cli()
