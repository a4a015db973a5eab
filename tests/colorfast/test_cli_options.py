"""colorfast/cli_options.py: fit's options in named groups that `fit --help` shows as headings, every option in
one group, none renamed; the grouping decorators themselves."""
import click
from click.testing import CliRunner

from cli import cli, fit
from colorfast.cli_options import OTHER, SectionedCommand, option_group

HEADINGS = ["Data", "Model and loss", "SIGGRAPH17 (user-guided) training", "Optimisation and schedule", "Validation and checkpoints",
            "Hardware and logging", OTHER]


def _sections(help_text: str) -> dict[str, str]:
    """{heading: the text under it} of a --help page."""
    sections, current = {}, None
    for line in help_text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            current = line[:-1]
            sections[current] = ""
        elif current:
            sections[current] += line + "\n"
    return sections


def test_fit_help_lists_its_options_under_their_group_headings():
    res = CliRunner().invoke(cli, ["fit", "--help"])
    assert res.exit_code == 0, res.output
    sections = _sections(res.output)
    assert list(sections) == HEADINGS
    where = {"--data ": "Data", "--crop ": "Data", "--loss ": "Model and loss", "--gray-crops ": "Model and loss",
             "--hint-p ": "SIGGRAPH17 (user-guided) training",
             "--lr ": "Optimisation and schedule", "--ema ": "Optimisation and schedule",
             "--val-every ": "Validation and checkpoints", "--resume ": "Validation and checkpoints",
             "--device ": "Hardware and logging", "--config ": OTHER, "-h, --help ": OTHER}
    for option, heading in where.items():
        assert [h for h, text in sections.items() if f"  {option}" in text] == [heading], option


def test_every_fit_option_is_in_exactly_one_group_and_keeps_its_name():
    options = [p for p in fit.params if isinstance(p, click.Option) and p.name != "config"]
    assert all(getattr(p, "section", None) in HEADINGS[:-1] for p in options)
    names = {p.name for p in options}
    assert len(names) == len(options) == 44                    # the 39 options fit had before the grouping + 5 of siggraph17
    assert {"data", "lr", "weight_decay", "ema", "grad_clip", "val_data", "data_init_samples", "log_every",
            "class_weight", "reg_weight", "reg_loss", "hint_p", "hint_sizes"} <= names


def test_option_group_keeps_the_order_given_and_other_options_come_last():
    @click.command(cls=SectionedCommand)
    @option_group("First", click.option("--b", help="b."), click.option("--a", help="a."))
    @option_group("Second", click.option("--c", help="c."))
    def command(**opts):
        click.echo(repr(sorted(opts.items())))

    res = CliRunner().invoke(command, ["--help"])
    assert list(_sections(res.output)) == ["First", "Second", OTHER]
    assert res.output.index("--b") < res.output.index("--a") < res.output.index("--c") < res.output.index("--help")
    run = CliRunner().invoke(command, ["--a", "1", "--c", "3"])
    assert run.output.strip() == "[('a', '1'), ('b', None), ('c', '3')]"
