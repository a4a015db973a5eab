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


# ---- benchmarks (each prints one JSON object on its last line) -------------------------------------------
@cli.group()
def bench():
    """Throughput measurements; figures go to docs/benchmarks.md."""


if __name__ == "__main__":
    cli()
