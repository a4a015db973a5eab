"""Every user-facing command. Thin on purpose: options -> a frozen config -> one call into pipeline/ or trainer/.
Heavy imports (torch, faiss, numba) happen inside the commands, so `--help` is instant. fit's options are grouped
decorators (colorfast/cli_options.py) that its --help shows under headings.
Multi-GPU training launches this same file: `torchrun --nproc-per-node=4 cli.py fit ...`."""
import click

from pipeline.config import BACKENDS, ORDERS, SPLITS, STORAGE, SUBSETS, PrepConfig   # both stdlib-only: --help stays instant
from pipeline.config_files import config_option
from pipeline.datasets import DATASETS, DatasetError
from colorfast import cli_options as fit_options        # fit's options, grouped; click only
from colorfast.cli_options import FINITE_POSITIVE, SectionedCommand, checkpoint_ref, net_size


def _print_version(ctx, param, value):
    """`--version`: the installed package's version; from a plain checkout, setup.cfg's (the one source of both)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import PackageNotFoundError, version
    try:
        number = version("colorfast")
    except PackageNotFoundError:
        import configparser
        from pathlib import Path
        setup = configparser.ConfigParser()
        setup.read(Path(__file__).with_name("setup.cfg"))
        number = setup.get("metadata", "version", fallback="unknown")
    click.echo(f"colorfast {number}")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
              help="Print the version and exit.")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars or progress lines (errors and each command's summary still print). "
                   "Without a terminal, progress is a plain line every $COLORFAST_PROGRESS_EVERY s (30).")
def cli(quiet):
    """Zhang-style colorization: preprocess images into shards, train, colorize, evaluate."""
    if quiet:
        from pipeline.progress import set_quiet     # through the environment: workers and ranks inherit it
        set_quiet()


# ---- pipeline: images -> shards -------------------------------------------------------------------------
def _size(ctx, param, value):
    if value <= 0 or value % 4:
        raise click.BadParameter("must be a positive multiple of 4 (targets are at 1/4 resolution)")
    return value


@cli.command()
@config_option("pipeline.config:PrepConfig")
@click.argument("dataset", type=click.Choice(list(DATASETS)))
@click.option("--root", default=None, type=click.Path(exists=True, file_okay=False),
              help="Dataset root (not for `sample`, which uses scikit-image's bundled photos).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Output folder  [default: artifacts/shards/DATASET]")
@click.option("--size", default=PrepConfig.size, callback=_size,
              help="Images are resized and centre-cropped to SIZE x SIZE.")
@click.option("--knn", default=PrepConfig.knn, type=click.IntRange(1, 64), help="Nearest ab bins per target pixel.")
@click.option("--sigma", default=PrepConfig.sigma, type=click.FloatRange(min=0, min_open=True),
              help="Gaussian width (ab units) of the soft targets and of the prior smoothing.")
@click.option("--lam", default=PrepConfig.lam, type=click.FloatRange(0, 1),
              help="Prior mixed with uniform for the weights.")
@click.option("--shard-size", default=PrepConfig.shard_size, type=click.IntRange(min=1), help="Inputs per shard file.")
@click.option("--jobs", default=PrepConfig.jobs, type=click.IntRange(min=0),
              help="Worker processes (0: one per CPU core).")
@click.option("--limit", default=PrepConfig.limit, type=click.IntRange(min=0),
              help="At most this many inputs, a stable subset (0: all).")
@click.option("--split", default=PrepConfig.split, type=click.Choice(SPLITS),
              help="Which inputs to write: all, train or test; val is the held-out split's usual name (ImageNet, "
                   "Places365, COCO); shards call it test.")
@click.option("--subset", default=None, type=click.Choice(SUBSETS[1:]),
              help="imagenet: first10k (first 10,000 val images) or ctest10k (colorization-pytorch's test set).")
@click.option("--backend", default=PrepConfig.backend, type=click.Choice(BACKENDS),
              help="loky: processes on this machine; dask: a LocalCluster, or the cluster at --scheduler.")
@click.option("--scheduler", default=None,
              help="Address of a running dask scheduler (implies --backend dask).")
@click.option("--partition", default=PrepConfig.partition, type=click.IntRange(1, 10),
              help="sun_scenes: Training_NN/Testing_NN list.")
@click.option("--min-side", default=PrepConfig.min_side, type=click.IntRange(min=1),
              help="Skip images whose shorter side is smaller.")
@click.option("--max-pixels", default=PrepConfig.max_pixels, show_default=True, type=click.IntRange(min=1),
              help="Skip, undecoded, images whose header declares more pixels (width x height): decompression "
                   "bombs. The default is twice Pillow's own limit (~13,400 px square).")
@click.option("--overwrite", is_flag=True,
              help="Replace shards in --out that another dataset, root or config wrote (never other files).")
@click.option("--storage", default=PrepConfig.storage, show_default=True, type=click.Choice(sorted(STORAGE)),
              help="Lossless filter of the shard arrays (docs/benchmarks.md, 'Shard storage'); none: format 1's.")
@click.option("--order", default=PrepConfig.order, show_default=True, type=click.Choice(ORDERS),
              help="Keys within each split's shards: mixed (a stable hash order: every shard and every batch "
                   "mixes classes) or name (sorted, as before; reads an archive in sequence, and a dataset that "
                   "grows at the end keeps its earlier shards).")
@click.option("--test-fraction", default=PrepConfig.test_fraction, type=click.FloatRange(0, 1, max_open=True),
              help="folder (without train/ and val/ or test/ subfolders, which are the splits when there) and "
                   "sample: share of the images, picked by a hash of their path, put in the test split.")
def preprocess(overwrite, **opts):
    """Images -> Lab -> soft-encoded ab targets -> HDF5 shards, manifest.json and prior.npz.
    Rerunning the same command keeps the shards already complete."""
    from pipeline.output_folder import OutputConflict
    from pipeline.preprocess import OutputError, run  # faiss/numba load only when this command runs
    opts = {**opts, "root": opts["root"] or "", "out_dir": opts["out_dir"] or "", "subset": opts["subset"] or "",
            "scheduler": opts["scheduler"] or "",
            "backend": "dask" if opts["scheduler"] else opts["backend"]}
    if opts["dataset"] != "sample" and not opts["root"]:
        raise click.BadParameter(f"dataset {opts['dataset']!r} needs --root DIR", param_hint="--root")
    try:
        result = run(PrepConfig(**opts), overwrite=overwrite)
    except DatasetError as e:                       # a bad root, or one whose every input was skipped
        raise click.BadParameter(str(e), param_hint="--root / --partition / --subset") from None
    except (OutputError, OutputConflict) as e:      # disk full, read-only, another job's shards: nothing lost
        raise click.ClickException(str(e)) from None
    click.echo(result.summary())


@cli.command("prior-plot")
@click.option("--data", default="artifacts/shards/sample", type=click.Path(file_okay=False),
              help="Shard folder holding prior.npz.")
@click.option("--out", default="artifacts/prior.png", type=click.Path(dir_okay=False), help="PNG file to write.")
def prior_plot(data, out):
    """The empirical ab distribution (log scale) beside the class-rebalancing weights, on the ab plane."""
    from pipeline.contract import PRIOR, Prior, ShardFormatError
    from pipeline.plot import plot_prior
    try:
        prior = Prior.load(f"{data}/{PRIOR}")
    except ShardFormatError as e:                   # its message says what to do
        raise click.ClickException(str(e)) from None
    click.echo(f"-> {plot_prior(prior, out, title=data)}")


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--shallow", is_flag=True, help="Metadata, counts and prior only; skip reading every chunk.")
@click.option("--sources", is_flag=True, help="Also compare each input's size and mtime (a tar's, a zip entry's "
              "CRC-32) with what its shard recorded. Exit 1 when an input changed or is gone.")
@click.option("--sources-deep", is_flag=True, help="--sources, and read every input to compare its digest too.")
def verify(folder, shallow, sources, sources_deep):
    """Check a shard FOLDER against its manifest: counts, checksums, shapes, prior. Exit 1 on problems."""
    from pipeline.verify import describe_folder, repair_advice, verify_folder
    problems = verify_folder(folder, deep=not shallow, progress=True)
    if problems:
        for p in problems:
            click.echo(p, err=True)
        raise click.ClickException(f"{folder}: {len(problems)} problem(s). "
                                   f"{repair_advice(folder, problems)}")
    checked = ""
    if sources or sources_deep:
        from pipeline.contract import read_manifest
        from pipeline.sources import check_folder
        changed, unrecorded = check_folder(folder, deep=sources_deep, progress=True)
        for line in changed:
            click.echo(line, err=True)
        if changed:
            raise click.ClickException(f"{folder}: {len(changed)} problem(s) with its inputs (changed, gone or new "
                                       "since its shards were written); rerun the same `cli.py preprocess` command: "
                                       "it rewrites those shards")
        n = len(read_manifest(folder)["shards"])
        checked = (f", inputs of {n - len(unrecorded)} shard(s) unchanged "
                   f"({'content digests' if sources_deep else 'size and mtime'})")
        if unrecorded:
            checked += (f"; {len(unrecorded)} shard(s) predate recorded sources and were not checked "
                        f"(e.g. {unrecorded[0]})")
    click.echo(f"ok: {describe_folder(folder)}, "
               f"{'metadata only' if shallow else 'every chunk checksummed'}{checked}")


# ---- trainer: shards -> checkpoints ---------------------------------------------------------------------
def _user_errors():
    """Exceptions of the trainer's commands that mean bad input (options, shards, checkpoints, an empty
    folder): a message, no traceback. Called only while an exception is being handled, so the imports cost
    nothing on success."""
    from pipeline.contract import ShardFormatError
    from trainer.checkpoint import CheckpointError
    from trainer.config import FitError
    from colorfast.evaluate import EvalError
    from colorfast.extras import MissingExtra
    from colorfast.hub import HubError
    return FitError, CheckpointError, ShardFormatError, EvalError, HubError, MissingExtra


@cli.command(cls=SectionedCommand)
@config_option("trainer.config:FitConfig", before="trainer.config:BEFORE_FIELD")
@fit_options.data
@fit_options.model_and_loss
@fit_options.siggraph17
@fit_options.optimisation
@fit_options.validation_and_checkpoints
@fit_options.hardware_and_logging
def fit(**opts):
    """Train a colorization network on shards (`torchrun --nproc-per-node N cli.py fit ...` for DDP).
    Ctrl-C (or SIGTERM) finishes the current step, saves last.pt and prints the --resume command."""
    import sys
    from trainer.config import FitConfig
    from trainer.dist import is_primary_process
    from trainer.loop import fit as run_fit
    from colorfast.hub import resolve_checkpoint
    from trainer.stop import RunStopped, resume_command
    try:
        init = str(resolve_checkpoint(opts["init"])) if opts["init"] else ""
        run_dir = run_fit(FitConfig(**{**opts, "init": init, "val_data": tuple(opts["val_data"])}))
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    except RunStopped as e:
        if is_primary_process():
            click.echo(f"{e}\nresume with: {resume_command(world_size=e.world_size)}", err=True)
        sys.exit(128 + int(e.signum))            # the shell's convention for "ended by signal N"
    if is_primary_process():                     # under torchrun every rank returns here; one line is enough
        click.echo(f"run: {run_dir}  (log {run_dir / 'log.jsonl'}, checkpoint {run_dir / 'last.pt'})")


# ---- checkpoints -> colours and numbers -----------------------------------------------------------------
def _positive(ctx, param, value):
    if value is not None and value <= 0:
        raise click.BadParameter(f"{value}: must be > 0")
    return value



_CKPT_HELP = ("Our checkpoint (RUN_DIR/last.pt), a released ECCV16 state dict, an .onnx or .safetensors file from "
              "`export`, or "
              "eccv16-released / siggraph17-released (the published weights, downloaded once into the torch hub "
              "cache)")
_checkpoint_opt = click.option("--checkpoint", "checkpoints", multiple=True, required=True, callback=checkpoint_ref,
                               help=_CKPT_HELP + "; repeat to compare.")
_size_opt = click.option("--size", default=256, callback=net_size, help="Side of the square L the network sees.")


def _temperature(ctx, param, value):
    """trainer.decode.check_temperature's bounds: nan, inf and 1e-300 would decode to an all-white image."""
    if value is None:
        return None
    from trainer.decode import check_temperature      # imports torch: only once a temperature is given
    try:
        return check_temperature(value, "--temperature")
    except ValueError as e:
        raise click.BadParameter(str(e).removeprefix("--temperature ")) from None


def _hints_file(ctx, param, value):
    """--hints FILE -> tuple of colorfast.hints.Hint, or None; a bad file is a one-line usage error."""
    if value is None:
        return None
    from colorfast.hints import HintError, load_hints
    try:
        return tuple(load_hints(value))
    except HintError as e:
        raise click.BadParameter(str(e)) from None


_temp_opt = click.option("--temperature", default=None, type=float, callback=_temperature,
                         help="Annealed-mean temperature for class models (1: mean, -> 0: mode)  [default: 1 for "
                              "released ECCV16 weights, as the reference decodes them; 0.38 for our CE/focal ones]")
_runtime_opt = click.option("--runtime", type=click.Choice(["auto", "torch", "onnx"]), default="auto",
                            help="onnx: run an .onnx file from `export` with onnxruntime (CPU); auto: onnx for "
                                 ".onnx files, torch otherwise.")
_device_opt = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                           help="auto: CUDA when a GPU is visible, else the CPU.")
_prior_opt = click.option("--prior", default=None, type=click.Path(exists=True, dir_okay=False),
                          help="prior.npz for rebalanced AuC of models that carry no training prior.")


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--checkpoint", required=True, callback=checkpoint_ref, help=_CKPT_HELP + ".")
@click.option("--out", default="artifacts/colorized", type=click.Path(file_okay=False),
              help="Output folder; a folder given as INPUTS keeps its layout under OUT/ITS_NAME, which (like OUT) "
                   "is never read as input, so --out may be inside an input folder or the folder itself "
                   "(`colorize photos --out photos` writes photos/photos/, rerun at will); not its parent, and "
                   "never an input's place.")
@click.option("--format", type=click.Choice(["png", "jpg", "webp"]), default="png", show_default=True,
              help="png: lossless; jpg (quality 92) and webp (90) are smaller. PNG and WebP keep an input's alpha.")
@click.option("--overwrite", is_flag=True,
              help="Replace existing files in --out that this job did not write (inputs are never replaced).")
@_size_opt
@_temp_opt
@_device_opt
@_runtime_opt
@click.option("--smooth", default=5, type=click.IntRange(min=1),
              help="Videos: frames of colour averaged over time, restarted at scene cuts (1: off).")
@click.option("--hints", default=None, type=click.Path(dir_okay=False), callback=_hints_file,
              help='One photo, a guided checkpoint (siggraph17-released): a JSON list of {"x": px, "y": px, '
                   '"color": "#rrggbb"} or {..., "ab": [a, b]}, optional "size" (px); see README.')
def colorize(inputs, **opts):
    """Colorize INPUTS (image files or folders) at full resolution, with the input's size and lightness.
    Video files (.mp4 .mov .mkv .avi) become videos of the same kind, frame rate, frame count and audio."""
    import sys
    from colorfast.photos import ColorizeConfig, run
    from colorfast.outputs import OutputConflict, Terminated
    from colorfast.hints import HintError
    try:
        result = run(ColorizeConfig(inputs=tuple(inputs), **opts))
    except (OutputConflict, HintError, *_user_errors()) as e:
        raise click.ClickException(str(e)) from None
    except Terminated:                           # the file being written was removed on the way out
        click.echo("colorize: stopped by SIGTERM; the outputs written so far are kept", err=True)
        sys.exit(143)                            # 128 + SIGTERM, the shell's convention
    click.echo(f"{result.summary()} -> {opts['out']}")
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} input(s) could not be colorized (listed above)")


@cli.command()
@click.option("--checkpoint", required=True, callback=checkpoint_ref,
              help=_CKPT_HELP + "; loaded once, shared by every request.")
@click.option("--host", default="127.0.0.1", help="Interface to listen on (0.0.0.0: every one; the page has no login).")
@click.option("--port", default=8000, type=click.IntRange(1, 65535), help="TCP port to listen on.")
@click.option("--max-mb", default=25.0, type=click.FloatRange(min=0, min_open=True), help="Largest upload in MB.")
@click.option("--max-pixels", default=40_000_000, type=click.IntRange(min=1),
              help="Largest width x height accepted, read from the header before decoding (decompression bombs).")
@click.option("--queue", default=4, type=click.IntRange(min=0), show_default=True,
              help="Requests that may wait behind the one being colorized; more get 503 with Retry-After.")
@click.option("--body-timeout", default=60.0, type=click.FloatRange(min=0, min_open=True), show_default=True,
              help="Seconds for a whole upload to arrive (else 408).")
@click.option("--header-timeout", default=10.0, type=click.FloatRange(min=0, min_open=True), show_default=True,
              help="Seconds for a request's headers to arrive (else the connection is closed).")
@click.option("--allow-origin", multiple=True, metavar="URL",
              help="Let pages from this origin (http://name:port) use the API, and accept its name as Host; "
                   "repeatable. Others get 403.")
@_size_opt
@_temp_opt
@_device_opt
@_runtime_opt
def serve(**opts):
    """A web page (drop a photo, compare, download the PNG) and an HTTP API: POST /api/colorize, GET /api/health."""
    from colorfast.extras import MissingExtra, require
    try:
        require("fastapi", "uvicorn", "python_multipart", extra="web", what="serve")
    except MissingExtra as e:
        raise click.ClickException(str(e)) from None
    from colorfast.serve import ServeConfig, run
    try:
        cfg = ServeConfig(**opts)
    except ValueError as e:                     # a bad --temperature or --allow-origin: one line
        raise click.ClickException(str(e)) from None
    try:
        run(cfg)
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None


@cli.command()
@_checkpoint_opt
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False), help="Shard folder (its --split).")
@click.option("--images", default=None, type=click.Path(exists=True, file_okay=False), help="Folder of colour photos.")
@click.option("--out", default="artifacts/eval", type=click.Path(file_okay=False),
              help="Folder for metrics.json and metrics.md.")
@click.option("--split", default="test", type=click.Choice(["train", "test"]),
              help="Split of the shard folder evaluated with --data (a val split is stored as test).")
@click.option("--crop", default=0, type=click.IntRange(min=0),
              help="--data: score centre crops of this side (0: the stored size), as `fit` validates at its --crop.")
@_size_opt
@_temp_opt
@_prior_opt
@click.option("--limit", default=0, help="Evaluate at most this many images (0: all).")
@click.option("--batch-size", default=8, callback=_positive, help="Images per network call.")
@_device_opt
def evaluate(checkpoints, **opts):
    """AuC, rebalanced AuC, PSNR, SSIM, colourfulness per model and for a gray baseline -> metrics.json/.md."""
    from trainer import metrics
    from colorfast.evaluate import EvalConfig, run, summaries, summary_line
    if bool(opts["data"]) == bool(opts["images"]):
        raise click.UsageError("give exactly one of --data SHARD_DIR or --images DIR")
    try:
        report = run(EvalConfig(checkpoints=tuple(checkpoints),
                                **{**opts, **{k: opts[k] or "" for k in ("data", "images", "prior")}}))
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(metrics.markdown_table(summaries(report)))
    click.echo(f"{summary_line(report)} -> {opts['out']}/metrics.json, metrics.md")
    if report["failed"]:
        raise click.ClickException(f"{len(report['failed'])} input(s) could not be evaluated (listed above)")


@cli.command()
@_checkpoint_opt
@click.option("--images", required=True, type=click.Path(exists=True, file_okay=False), help="Folder of photos.")
@click.option("--out", default="artifacts/compare", type=click.Path(file_okay=False),
              help="Folder for the panel PNGs, index.html and metrics.json.")
@_size_opt
@click.option("--panel", default=256, callback=_positive, help="Panel height in px (larger photos are shrunk).")
@_temp_opt
@_prior_opt
@click.option("--limit", default=0, help="Compare at most this many images (0: all).")
@_device_opt
def compare(checkpoints, **opts):
    """One PNG per photo: gray | each model | ground truth, labelled; index.html with the metric table."""
    from colorfast.compare import CompareConfig, OutputConflict, run
    try:
        index, compared, failed = run(CompareConfig(checkpoints=tuple(checkpoints),
                                                    **{**opts, "prior": opts["prior"] or ""}))
    except (OutputConflict, *_user_errors()) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"compared {compared} image(s), {len(failed)} failed -> {index}")
    if failed:
        raise click.ClickException(f"{len(failed)} input(s) could not be compared (listed above)")


def _losses(ctx, param, value):
    return tuple(x.strip() for x in value.split(",") if x.strip())


@cli.command()
@click.option("--checkpoint", required=True, callback=checkpoint_ref,
              help="Our checkpoint, a released ECCV16 state dict or eccv16-released.")
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The file to write: .onnx (onnxruntime) or .safetensors (weights + decoding settings).")
@click.option("--format", "fmt", type=click.Choice(["onnx", "safetensors"]), default=None,
              help="What to write  [default: from the --out suffix]")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
def export(checkpoint, out, fmt, force):
    """A checkpoint -> one .onnx file (network and decoding; dynamic batch, height, width) for onnxruntime,
    or one .safetensors file (the weights, and what decoding needs in its metadata) for any runtime."""
    from pathlib import Path
    from colorfast.onnx_export import ExportError, export as run, is_input
    if is_input(out, checkpoint):
        raise click.BadParameter(f"{out} is the checkpoint being exported; an export never replaces its input "
                                 f"(not even with --force)", param_hint="--out")
    suffix = Path(out).suffix.lower()
    if suffix not in (".onnx", ".safetensors") or (fmt and suffix != f".{fmt}"):
        raise click.BadParameter(f"{out}: the file written must end in " +
                                 (f".{fmt} for --format {fmt}" if fmt else ".onnx or .safetensors") +
                                 " (commands pick the reader by suffix)", param_hint="--out")
    if Path(out).exists() and not force:
        raise click.BadParameter(f"{out} exists; pass --force to replace it", param_hint="--out")
    try:
        if suffix == ".safetensors":
            from colorfast.onnx_export import export_safetensors
            path, colorizer = export_safetensors(checkpoint, out)
            check = f"{colorizer.weights} weights, read back and compared"
        else:
            path, colorizer, delta = run(checkpoint, out)
            check = "not checked (onnxruntime missing)" if delta is None else f"max |delta ab| vs torch {delta:.1e}"
    except (*_user_errors(), ExportError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"-> {path} ({path.stat().st_size / 1e6:.1f} MB; decodes by default with "
               f"{colorizer.describe()}; {check})")


@cli.command()
@config_option("colorfast.study:StudyConfig", empty={"variants": ("none",)})
@click.option("--train", default=None, type=click.Path(exists=True, file_okay=False),
              help="Training shard folder  [default: the bundled sample, preprocessed into OUT/shards]")
@click.option("--test", "tests", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Test shard folder (its test split, else all of it); repeatable. "
                   "Default: the test split of --train.")
@click.option("--losses", default="l2,ce,focal", callback=_losses, help="Comma-separated losses to compare.")
@click.option("--model", type=click.Choice(["tiny", "eccv16"]), default="tiny", help="The network every loss trains.")
@click.option("--steps", default=600, callback=_positive, help="Training steps per loss (the same for every loss).")
@click.option("--out", default="artifacts/study", type=click.Path(file_okay=False),
              help="Shards, runs, evaluations, curves, panels and report.md go here; finished parts are reused.")
@click.option("--seed", default=0, help="Seed of every run's init, shuffle, crops and flips.")
@click.option("--lr", default=1e-3, callback=_positive, help="Adam learning rate of every run.")
@click.option("--batch-size", default=6, callback=_positive, help="Batch size of every run.")
@click.option("--crop", default=176, callback=net_size, help="Training crop (and validation centre crop) side.")
@click.option("--val-every", default=0, type=click.IntRange(min=0), help="Steps between validations (0: steps / 10).")
@click.option("--val-limit", default=1000, type=click.IntRange(min=0), help="Validation samples per test folder.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", help="Where the runs train.")
@click.option("--variant", "variants", multiple=True, metavar="NAME:KEY=VALUE,...",
              help="One more run with other fit options (FitConfig fields, e.g. ce-init-off:data_init=off), "
                   "same budget and seed; ce unless it sets loss; repeatable. 'none': no variant  "
                   "[default: ce-init-off:data_init=off]")
@click.option("--train-eval", default=1000, type=click.IntRange(min=0),
              help="Training samples (the first, in stored order) scored beside each test folder (0: all).")
def study(train, tests, variants, **opts):
    """Loss study: train each loss with the same budget, init and data order, validate along the way, and
    report every metric per test folder beside the gray baseline (with no --train: on the bundled sample)."""
    from colorfast.study import StudyConfig, StudyError, run
    try:
        chosen = {} if not variants else {"variants": () if variants == ("none",) else tuple(variants)}
        report = run(StudyConfig(train=train or "", tests=tuple(tests), **chosen, **opts))
    except (*_user_errors(), StudyError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"-> {report}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", default="artifacts/curves.png", type=click.Path(dir_okay=False),
              help="The PNG to write (one panel per figure).")
def plot(run_dirs, out):
    """Curves of RUN_DIRs overlaid: training loss and every validation figure against steps, one panel each."""
    from trainer.curves import PlotError, plot_runs
    try:
        click.echo(f"-> {plot_runs(run_dirs, out)}")
    except PlotError as e:
        raise click.ClickException(str(e)) from None


# ---- benchmarks (each prints one JSON object on its last line) -------------------------------------------
_peak_opt = click.option("--peak-tflops", default=None, type=FINITE_POSITIVE,
                         help="Peak TFLOP/s for MFU  [default: the table's dense bf16 peak for a known GPU; "
                              "none on CPUs]")


@cli.group()
def bench():
    """Throughput measurements; each prints its figures as JSON on its last line (quote them in
    docs/benchmarks.md with the machine and the command)."""


@bench.command("colorize")
@click.option("--checkpoint", default=None, callback=checkpoint_ref,
              help="Checkpoint to time; default: the full ECCV16 network with random weights (speed does not "
                   "depend on the weights).")
@click.option("--model", type=click.Choice(["eccv16", "tiny"]), default="eccv16", help="Network without --checkpoint.")
@click.option("--images", default=None, type=click.Path(exists=True, file_okay=False),
              help="Folder of photos; default: scikit-image's bundled colour photos (8, 0.14-2 MP).")
@_size_opt
@click.option("--repeats", default=3, type=click.IntRange(min=1), help="Timed passes over the photos (median quoted).")
def bench_colorize(checkpoint, images, **opts):
    """Seconds per megapixel of colorize: torch CPU vs ONNX Runtime CPU on the same photos, interleaved."""
    import json
    from colorfast.bench.colorize import bench_colorize as measure
    try:
        figures = measure(checkpoint=checkpoint or "", images=images or "", **opts, echo=click.echo)
    except (*_user_errors(), ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(figures))


def _photo_sizes(ctx, param, values):
    try:
        return tuple(tuple(int(x) for x in v.lower().split("x", 1)) for v in values)
    except ValueError:
        raise click.BadParameter(f"{' '.join(values)}: expected sizes like 5120x2880") from None


@bench.command("memory")
@click.option("--size", "sizes", multiple=True, default=("5120x2880", "12000x12000"), show_default=True,
              callback=_photo_sizes, help="A photo's WIDTHxHEIGHT; repeatable (a 256x256 one is always first).")
@click.option("--input", "fmt", type=click.Choice(["jpg", "png"]), default="jpg", show_default=True,
              help="The photos' format (PNG: Pillow decodes).")
@click.option("--checkpoint", default=None, help="Colorize with this  [default: a tiny network trained 2 steps]")
def bench_memory(sizes, fmt, checkpoint):
    """Peak memory (RSS) and time of `colorize` on large photos, a fresh process per photo."""
    import json
    from colorfast.bench.memory import bench_memory as measure
    try:
        figures = measure(sizes, fmt, checkpoint or "", echo=click.echo)
    except RuntimeError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(figures))


@bench.command("serve")
@click.option("--checkpoint", default=None, callback=checkpoint_ref,
              help="The network served  [default: a tiny one trained 2 steps]")
@click.option("--eccv16", is_flag=True,
              help="Serve a full-size ECCV16 network (random weights, the checkpoint's bins).")
@click.option("--requests", default=8, type=click.IntRange(min=1),
              help="Timed requests, one after another, then as many from 4 clients at once.")
@click.option("--size", default=256, callback=net_size, help="serve --size: the side of the square L the network sees.")
def bench_serve(checkpoint, **opts):
    """Seconds per request of `serve` for a 1 MP photo (a real server on a free port) beside colorize_rgb in-process."""
    import json
    from colorfast.bench.serve import bench_serve as measure
    try:
        figures = measure(checkpoint or "", **opts, echo=click.echo)
    except (*_user_errors(), RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(figures))


@bench.command("hints")
@click.option("--requests", default=6, type=click.IntRange(min=1),
              help="Timed hint updates per runtime (each an /api/colorize and an /api/suggest), interleaved.")
@click.option("--size", default=256, callback=net_size, help="serve --size: the side of the square L the network sees.")
@click.option("--tiny", is_flag=True, help="siggraph17-tiny instead of the full-size SIGGRAPH17 network.")
def bench_hints(**opts):
    """Seconds per hint update of the web page for a 1 MP photo: torch CPU vs ONNX Runtime, two real servers
    of a SIGGRAPH17 network (random weights)."""
    import json
    from colorfast.bench.hints import bench_hints as measure
    try:
        figures = measure(**opts, echo=click.echo)
    except (*_user_errors(), RuntimeError, ValueError) as e:          # ValueError: the export's parity check
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(figures))


@bench.command("scale")
@click.option("--n", default=20000, help="Synthetic images at the large size; the small size is N/4.")
@click.option("--size", default=64, help="Preprocess --size (small, so 20,000 images take minutes on 2 cores).")
@click.option("--px", default=96, help="Side of the generated JPEGs.")
@click.option("--jobs", default=2, help="Preprocess worker processes.")
@click.option("--workers", default=2, help="DataLoader worker processes.")
@click.option("--batch-size", default=64, help="Loader batch size.")
@click.option("--workdir", default="", show_default=False, type=click.Path(file_okay=False),
              help="Where the temporary images and shards go (deleted afterwards); default: the system temp dir.")
@click.option("--loader-n", default=0, type=click.IntRange(min=0),
              help="Instead: the loader alone at LOADER_N/8 and LOADER_N samples in shards written directly "
                   "(e.g. 1000000); --workers and --batch-size apply.")
def bench_scale(loader_n, **opts):
    """Preprocess, deep verify and the shard loader at N/4 and N images: rate per image and peak RSS at both."""
    import json
    from colorfast.bench.scale import run_loader_scale, run_scale
    try:
        if loader_n:
            figures = run_loader_scale(loader_n, batch_size=opts["batch_size"], workers=opts["workers"],
                                       workdir=opts["workdir"], echo=click.echo)
        else:
            figures = run_scale(**opts, echo=click.echo)
    except ValueError as e:
        raise click.BadParameter(str(e)) from None
    click.echo(json.dumps(figures))


@bench.command("preprocess")
@click.argument("dataset", required=False, type=click.Choice([d for d in DATASETS if d != "sample"]))
@click.option("--root", default=None, type=click.Path(exists=True, file_okay=False),
              help="Root of DATASET (with a DATASET).")
@click.option("--images", default=600, type=click.IntRange(min=20),
              help="Images timed (generated JPEGs when no DATASET is given); half of them for the small size.")
@click.option("--jobs", default=0, type=click.IntRange(min=0), help="Workers for both measurements (0: one per core).")
@click.option("--size", default=PrepConfig.size, callback=_size, help="Preprocess --size.")
@click.option("--photo", default=(1024, 768), type=(click.IntRange(min=64), click.IntRange(min=64)),
              help="Width and height of the generated JPEGs (no DATASET); SUN397 averages ~340 KB a JPEG, ~1 MP.")
def bench_preprocess(dataset, root, images, jobs, size, photo):
    """Full pipeline vs decode-only images/s on the same files, and peak memory at two dataset sizes."""
    import json
    from colorfast.bench.preprocess import bench_preprocess as measure
    if dataset and not root:
        raise click.BadParameter(f"dataset {dataset!r} needs --root DIR", param_hint="--root")
    figures = measure(dataset, root or "", images, jobs, size, photo=photo, echo=click.echo)
    click.echo(json.dumps(figures))


@bench.command("stages")
@click.option("--root", default=None, type=click.Path(exists=True, file_okay=False),
              help="A folder of photos  [default: generated JPEGs]")
@click.option("--images", default=200, type=click.IntRange(min=20), help="Images preprocessed (at most).")
@click.option("--photo", default=(1024, 768), type=(click.IntRange(min=64), click.IntRange(min=64)),
              help="Width and height of the generated JPEGs (no --root).")
@click.option("--storage", type=click.Choice(sorted(STORAGE)), default=PrepConfig.storage, show_default=True,
              help="Shard storage (preprocess --storage).")
def bench_stages(root, images, photo, storage):
    """Where a photo's time goes inside preprocess: ms per image of each stage of a real run, one process,
    beside the full-resolution decode of the same files."""
    import json
    from colorfast.bench.stages import bench_stages as measure
    click.echo(json.dumps(measure(images, photo, root or "", storage, echo=click.echo)))


@bench.command("step")
@click.option("--model", type=click.Choice(["eccv16", "tiny", "siggraph17", "siggraph17-tiny"]), default="eccv16",
              help="eccv16: the published network; tiny: 1/8 width, for CPUs; siggraph17: the user-guided U-Net "
                   "with simulated hints (ce: class + regression loss; l2: regression alone).")
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False),
              help="Shard folder to draw batches from; default: a temporary synthetic one.")
@click.option("--batch-size", default=8, type=click.IntRange(min=1), help="Samples per step.")
@click.option("--crop", default=176, type=click.IntRange(min=8), help="Random crop side in px.")
@click.option("--steps", default=5, type=click.IntRange(min=1), help="Timed steps per variant (medians quoted).")
@click.option("--warmup", default=1, type=click.IntRange(min=0), help="Untimed steps per variant first.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto: CUDA when a GPU is visible, else the CPU.")
@click.option("--compile", is_flag=True, help="Also time ce and l2 under torch.compile (as fit --compile).")
@_peak_opt
def bench_step(**opts):
    """Seconds per training step: ce vs l2 vs ce with per-batch CPU kNN targets, interleaved, same batches;
    achieved TFLOP/s and MFU of each (knn_over_ce: what the shards' targets save)."""
    import json
    from colorfast.bench.step import bench_step as measure
    if opts["crop"] % 8:
        raise click.BadParameter(f"{opts['crop']}: must be a multiple of 8", param_hint="--crop")
    try:
        figures = measure(**opts, progress=click.echo)
    except _user_errors() as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(figures))


@bench.command("loader")
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False),
              help="Shard folder; default: a temporary synthetic one (240 samples of 256 px).")
@click.option("--batch-size", default=40, type=click.IntRange(min=1), help="Samples per batch.")
@click.option("--crop", default=176, type=click.IntRange(min=8), help="Random crop side in px.")
@click.option("--batches", default=60, type=click.IntRange(min=1), help="Timed batches per worker count.")
@click.option("--workers", default="0,1,2", help="Comma-separated DataLoader worker counts to time.")
def bench_loader(workers, **opts):
    """Samples/s the shard loader delivers (random crops and flips, batched) at several worker counts."""
    import json
    from colorfast.bench.step import bench_loader as measure
    try:
        counts = tuple(int(w) for w in workers.split(","))
    except ValueError:
        raise click.BadParameter(f"{workers!r}: expected integers like 0,1,2", param_hint="--workers") from None
    try:
        figures = measure(**opts, workers=counts, progress=click.echo)
    except (*_user_errors(), ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(figures))


@bench.command("epoch")
@click.option("--data", default=None, type=click.Path(exists=True, file_okay=False),
              help="Shard folder; default: N synthetic 256 px samples in a temporary folder.")
@click.option("--n", default=3000, type=click.IntRange(min=1), help="Synthetic samples when no --data is given.")
@click.option("--model", type=click.Choice(["eccv16", "tiny"]), default="eccv16",
              help="eccv16: the published network; tiny: 1/8 width, for CPUs.")
@click.option("--batch-size", default=40, type=click.IntRange(min=1), help="Samples per batch.")
@click.option("--crop", default=176, type=click.IntRange(min=8), help="Random crop side in px.")
@click.option("--workers", default=8, type=click.IntRange(min=0), help="DataLoader worker processes.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
              help="auto: CUDA when a GPU is visible, else the CPU.")
@click.option("--losses", default="ce,l2", help="Comma-separated losses, interleaved in segments of the epoch.")
@click.option("--compile", is_flag=True, help="torch.compile of the network and the loss, as fit --compile.")
@click.option("--log-every", default=20, type=click.IntRange(min=1), help="Steps between host read-backs, as in fit.")
@_peak_opt
def bench_epoch(losses, **opts):
    """Seconds per training epoch for ce and l2 on the same shards, interleaved (bf16 and channels-last on a
    GPU), with achieved TFLOP/s and MFU."""
    import json
    from colorfast.bench.step import bench_epoch as measure
    names = tuple(x.strip() for x in losses.split(",") if x.strip())
    if not names or any(x not in ("ce", "l2", "focal", "focal-exact") for x in names):
        raise click.BadParameter(f"{losses!r}: expected names among ce, l2, focal, focal-exact", param_hint="--losses")
    try:
        figures = measure(**opts, losses=names, progress=click.echo)
    except (*_user_errors(), ValueError) as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(figures))


if __name__ == "__main__":
    cli()
