"""Every user-facing command. Thin on purpose: options -> a frozen config -> one call into pipeline/ or trainer/.
Heavy imports (torch, faiss, numba) happen inside the commands, so `--help` is instant.
Multi-GPU training launches this same file: `torchrun --nproc-per-node=4 cli.py fit ...`."""
import click


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
def cli():
    """Zhang-style colorization: preprocess images into shards, train, colorize, evaluate."""


# ---- pipeline: images -> shards -------------------------------------------------------------------------


# ---- trainer: shards -> checkpoints ---------------------------------------------------------------------


# ---- checkpoints -> colours and numbers -----------------------------------------------------------------


# ---- benchmarks (each prints one JSON object on its last line) -------------------------------------------
@cli.group()
def bench():
    """Throughput measurements; figures go to docs/benchmarks.md."""


if __name__ == "__main__":
    cli()
