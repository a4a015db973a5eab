"""`--help` on every command and subcommand (click's advice for lazily importing commands): it exits 0, every
option says what it does, and no default is shown as an empty string."""
import click
import pytest
from click.testing import CliRunner

from cli import cli


def _commands(group=cli, path=()):
    yield path, group
    if isinstance(group, click.Group):
        for name, cmd in sorted(group.commands.items()):
            yield from _commands(cmd, (*path, name))


COMMANDS = list(_commands())


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[" ".join(p) or "cli" for p, _ in COMMANDS])
def test_help_of_every_command(path, cmd):
    res = CliRunner().invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output
    assert '[default: ""]' not in res.output, res.output
    undocumented = [p.opts[0] for p in cmd.params if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert not undocumented, f"{' '.join(path)}: options without help text: {undocumented}"


def test_every_command_is_reached():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"fit", "preprocess", "evaluate", "compare", "bench step", "bench epoch"} <= names
