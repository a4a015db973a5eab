"""`fit`'s 39 options in the groups its --help shows them under, as decorators cli.py applies, so that cli.py reads as
the table of contents it is meant to be; and the option types and callbacks the commands share.

Each group is one decorator (option_group); SectionedCommand lists a command's options under their group's heading
(click has no option groups of its own: its help formatter's sections are the hook). Names, defaults and help
texts are the options' contract with users, configs (`--config`, a run's config.json) and scripts: a group moves
where an option is listed, never what it is. Here, not in trainer/, because --init accepts checkpoint names
(colorfast.hub); imports click only, so `--help` stays instant.
"""
from __future__ import annotations

import math

import click

OTHER = "Other options"


class SectionedCommand(click.Command):
    """A command whose --help lists its options under headings: each option's `section` (set by option_group),
    in the order the sections first appear; options without one (--config, --help) last, under OTHER."""

    def format_options(self, ctx, formatter):
        sections: dict[str, list] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                sections.setdefault(getattr(param, "section", OTHER), []).append(record)
        for name in sorted(sections, key=lambda n: n == OTHER):         # stable: OTHER moves to the end
            with formatter.section(name):
                formatter.write_dl(sections[name])


def option_group(section: str, *options):
    """Many click.option decorators as one, in the order given; --help lists them under `section`."""
    def apply(f):
        for option in reversed(options):          # decorators apply bottom-up: the first listed ends up first
            f = option(f)
            f.__click_params__[-1].section = section
        return f
    return apply


class FiniteFloat(click.FloatRange):
    """FloatRange that also refuses nan and inf (a FloatRange lets nan through: every comparison is false)."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return value


FINITE_POSITIVE = FiniteFloat(min=0, min_open=True)
FINITE_NONNEGATIVE = FiniteFloat(min=0)


def net_size(ctx, param, value):
    if value < 8 or value % 8:
        raise click.BadParameter(f"{value}: must be a positive multiple of 8 (the network halves the side 3 times)")
    return value


def hint_sizes(ctx, param, value):
    """"1,2,3" (or a list, from a --config file or a run's config.json) -> (1, 2, 3): positive ints."""
    parts = value if isinstance(value, (list, tuple)) else str(value).strip("[]() ").replace(",", " ").split()
    try:
        sizes = tuple(int(v) for v in parts)
    except (TypeError, ValueError):
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"{value!r}: give patch sides in px, comma-separated, each >= 1 (e.g. 1,2,3)")
    return sizes


def checkpoint_ref(ctx, param, value):
    """A checkpoint file or a known name (colorfast.hub); names are fetched only when a command loads them."""
    from colorfast.hub import HubError, check_ref     # stdlib only: --help stays instant
    try:
        return tuple(check_ref(v) for v in value) if isinstance(value, tuple) else value and check_ref(value)
    except HubError as e:
        raise click.BadParameter(str(e)) from None


# ---- fit ------------------------------------------------------------------------------------------------
data = option_group(
    "Data",
    click.option("--data", default="artifacts/shards/sample", type=click.Path(file_okay=False),
                 help="Shard folder written by `preprocess`; trains on its train split."),
    click.option("--batch-size", default=40, type=click.IntRange(min=1),
                 help="Per process; torchrun multiplies it by the world size."),
    click.option("--crop", default=176, callback=net_size,
                 help="Random crop side (multiple of 8, at most the shards' size)."),
    click.option("--flip/--no-flip", default=True, help="Random horizontal flips."),
    click.option("--workers", default=2, type=click.IntRange(min=0),
                 help="DataLoader worker processes per training process."),
    click.option("--verify", type=click.Choice(["quick", "deep", "off"]), default="quick",
                 help="Check the shard folder before training (deep: read every chunk's checksum)."),
)

model_and_loss = option_group(
    "Model and loss",
    click.option("--model", type=click.Choice(["eccv16", "tiny", "siggraph17", "siggraph17-tiny"]), default="eccv16",
                 help="eccv16: the published ~32 M-parameter network; tiny: same shape at 1/8 width, for CPUs; "
                      "siggraph17: the user-guided U-Net, trained with simulated hints (--hint-p), -tiny at 1/8 width."),
    click.option("--loss", type=click.Choice(["ce", "l2", "focal", "focal-exact"]), default="ce",
                 help="ce: class-rebalanced soft CE; l2: ab regression; focal: 1/(1+alpha exp(-beta t)) mask; "
                      "focal-exact: Lin et al. (1-p)^gamma. siggraph17: the class head's loss (l2: none), "
                      "beside --reg-loss."),
    click.option("--init", default=None, callback=checkpoint_ref,
                 help="Start from a released-ECCV16-layout state dict (model1..model8, model_out), our checkpoint, "
                      "or eccv16-released (downloaded once into the torch hub cache)."),
    click.option("--data-init", type=click.Choice(["lsuv", "off"]), default="lsuv",
                 help="From scratch: LSUV, every conv scaled to unit output variance on real training crops, the "
                      "classifier to a near-uniform softmax (trainer/init.py); off: torch's default init. Not "
                      "applied with --init or --resume."),
    click.option("--data-init-samples", default=32, type=click.IntRange(min=1),
                 help="Training crops the data init measures on."),
    click.option("--alpha", default=10.0, type=FINITE_NONNEGATIVE, help="focal: mask 1/(1 + alpha exp(-beta t))."),
    click.option("--beta", default=5.0, type=FINITE_NONNEGATIVE, help="focal: see --alpha."),
    click.option("--gamma", default=2.0, type=FINITE_NONNEGATIVE, help="focal-exact: (1 - p)^gamma."),
    click.option("--block", default=0.0, type=FINITE_NONNEGATIVE,
                 help="Weight of the block-averaged-colour term added to the loss (0: off)."),
    click.option("--block-size", default=4, type=click.IntRange(min=1),
                 help="Block side in target pixels (1/4 of the input)."),
    click.option("--loss-reduction", type=click.Choice(["reference", "mean"]), default="reference",
                 help="reference: the reference's data-to-decay ratio (its loss sums over each crop's target pixels; "
                      "here Adam's decay and eps are divided by (crop/4)^2, the same updates); mean: --weight-decay "
                      "against the per-pixel mean loss, ~1,936x stronger at crop 176 (before this option)."),
    click.option("--gray-crops", type=click.Choice(["skip", "train"]), default="skip",
                 help="skip: a crop none of whose target pixels has |a| or |b| > 5 gets no weight in the loss "
                      "(the reference's); train: every crop at full weight."),
)

siggraph17 = option_group(
    "SIGGRAPH17 (user-guided) training",
    click.option("--class-weight", default=1.0, type=FINITE_NONNEGATIVE,
                 help="siggraph17: weight of the class head's loss (colorization-pytorch's lambda_A)."),
    click.option("--reg-weight", default=10.0, type=FINITE_NONNEGATIVE,
                 help="siggraph17: weight of the regression head's loss (colorization-pytorch's 10 x L1_reg)."),
    click.option("--reg-loss", type=click.Choice(["smooth-l1", "l2"]), default="smooth-l1",
                 help="siggraph17: the regression head's loss on ab/110, 4x4 block means vs the stored ab; "
                      "smooth-l1: the reference's Huber, delta 1 ab unit."),
    click.option("--hint-p", default=0.125, type=click.FloatRange(0, 1, min_open=True),
                 help="siggraph17: hints per crop are geometric, P(no more) = this (colorization-pytorch's "
                      "--sample_p of its hinted phases: 1/8 get none, 7 on average; 1: never a hint)."),
    click.option("--hint-sizes", default="1,2,3,4,5,6,7,8,9", callback=hint_sizes,
                 help="siggraph17: hint patch sides in px, one drawn per hint (the reference's --sample_Ps), each "
                      "rounded up to the 4 px grid of the stored ab."),
)

optimisation = option_group(
    "Optimisation and schedule",
    click.option("--lr", default=3.16e-5, type=FINITE_POSITIVE,
                 help="Adam learning rate (the reference solver's base_lr)."),
    click.option("--weight-decay", default=1e-3, type=FINITE_NONNEGATIVE, help="Adam weight decay (L2 penalty)."),
    click.option("--epochs", default=1, type=click.IntRange(min=0),
                 help="Full passes over the train split (ignored with --steps)."),
    click.option("--steps", default=0, type=click.IntRange(min=0), help="Total optimiser steps; 0: use --epochs."),
    click.option("--seed", default=0, help="Seed of the model's init, the shuffle, crops and flips."),
    click.option("--lr-schedule", type=click.Choice(["constant", "step", "cosine"]), default="constant",
                 help="step: the reference solver's x0.316 every 215k iterations of batch 40 (see --lr-step)."),
    click.option("--warmup", default=0, type=click.IntRange(min=0), help="Steps of linear lr warm-up."),
    click.option("--lr-step", default=0, type=click.IntRange(min=0),
                 help="step schedule: steps between decays (0: 215,000 x 40 / global batch, the reference's "
                      "samples)."),
    click.option("--lr-gamma", default=0.316, type=click.FloatRange(0, 1, min_open=True),
                 help="step schedule: lr factor at every decay."),
    click.option("--ema", default=0.0, type=click.FloatRange(0, 1, max_open=True),
                 help="Decay of an exponential moving average of the weights (0: off); validation, best.pt and "
                      "colorize/evaluate/compare then use the EMA weights."),
    click.option("--grad-clip", default=0.0, type=click.FloatRange(min=0),
                 help="Clip the global gradient norm to this (0: off); the norm is logged either way."),
)

validation_and_checkpoints = option_group(
    "Validation and checkpoints",
    click.option("--out", default="artifacts/runs/default", type=click.Path(file_okay=False),
                 help="Run dir: config.json, log.jsonl (one JSON object per step), last.pt."),
    click.option("--val-every", default=0, type=click.IntRange(min=-1),
                 help="Steps between validations (0: once per epoch; -1: never); always at the end."),
    click.option("--val-data", multiple=True, type=click.Path(exists=True, file_okay=False),
                 help="Shard folder to validate on (its test split, else all of it); repeatable, each reported under "
                      "its own name. Default: the test split of --data."),
    click.option("--val-limit", default=1000, type=click.IntRange(min=0),
                 help="Validate on the first N samples of each folder (0: all)."),
    click.option("--select", default="auc_rebalanced",
                 help="[FOLDER:]METRIC whose improvement writes RUN_DIR/best.pt (first validation folder by "
                      "default)."),
    click.option("--save-every", default=500, type=click.IntRange(min=1),
                 help="Steps between checkpoints (RUN_DIR/last.pt); also saved at the end and on Ctrl-C."),
    click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt."),
)

hardware_and_logging = option_group(
    "Hardware and logging",
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                 help="auto: CUDA when a GPU is visible, else the CPU."),
    click.option("--compile", is_flag=True, help="torch.compile the network and the loss (first steps are slow)."),
    click.option("--log-every", default=20, type=click.IntRange(min=1),
                 help="Steps between reads of the losses to the host (log rows, NaN check, progress)."),
)
