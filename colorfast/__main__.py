"""`python -m colorfast ...`: the same commands as the `colorfast` console script and `python cli.py` from a clone."""
from cli import cli

cli(prog_name="colorfast")
