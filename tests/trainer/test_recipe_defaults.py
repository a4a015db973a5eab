"""The reference recipe's defaults (DESIGN.md, "The recipe"; RECIPE.md), pinned in one table and checked where
a user meets them: the config dataclasses, the CLI's options, and what `fit` actually builds (the optimiser,
the loss with its options). A default that drifts in any one of these places fails here."""
import pytest
import torch

from cli import cli
from pipeline.config import PrepConfig
from trainer import loop
from trainer.config import FitConfig
from trainer.decode import DEFAULT_TEMPERATURE
from trainer.models import create_model

# (what, where the default lives, attribute, the CLI command and option that sets it, value). The one place to
# change when the recipe changes (K: the soft encoding's neighbours, per pipeline/config.py).
RECIPE = [
    ("soft-encoding and prior sigma", PrepConfig, "sigma", ("preprocess", "sigma"), 5.0),
    ("soft-encoding neighbours K", PrepConfig, "knn", ("preprocess", "knn"), 5),
    ("prior / uniform mix lambda", PrepConfig, "lam", ("preprocess", "lam"), 0.5),
    ("Adam learning rate", FitConfig, "lr", ("fit", "lr"), 3.16e-5),
    ("Adam weight decay", FitConfig, "weight_decay", ("fit", "weight_decay"), 1e-3),
    ("batch size", FitConfig, "batch_size", ("fit", "batch_size"), 40),
    ("random crop side", FitConfig, "crop", ("fit", "crop"), 176),
    ("random flips", FitConfig, "flip", ("fit", "flip"), True),
    ("loss", FitConfig, "loss", ("fit", "loss"), "ce"),
    ("network", FitConfig, "model", ("fit", "model"), "eccv16"),
]
BETAS = (0.9, 0.99)              # Adam's betas, built by trainer.step.fused_adam
TEMPERATURE = 0.38               # the annealed mean of our class checkpoints (trainer.decode)


def _cli_default(command: str, option: str):
    return next(p.default for p in cli.commands[command].params if p.name == option)


@pytest.mark.parametrize("what, cls, attr, cli_option, value", RECIPE, ids=[r[2] for r in RECIPE])
def test_recipe_default_in_the_config_and_the_cli(what, cls, attr, cli_option, value):
    assert getattr(cls(), attr) == value, what
    assert _cli_default(*cli_option) == value, f"{what}: cli.py {cli_option[0]} --{cli_option[1]}"


def test_fit_builds_adam_with_the_recipe_and_the_options_it_was_given():
    assert DEFAULT_TEMPERATURE == TEMPERATURE
    # the decay 1e-3 of the reference's summed loss: against our per-pixel mean, 1e-3 / (176 / 4)^2 (README,
    # "Following the reference recipe"); --loss-reduction mean gives it as is
    opt = loop.create_optimizer(create_model("tiny", 2), FitConfig())
    (group,) = opt.param_groups
    assert (group["lr"], group["betas"], group["weight_decay"]) == (3.16e-5, BETAS, pytest.approx(1e-3 / 44 ** 2))
    opt = loop.create_optimizer(create_model("tiny", 2), FitConfig(loss_reduction="mean"))
    assert opt.param_groups[0]["weight_decay"] == 1e-3
    opt = loop.create_optimizer(create_model("tiny", 2), FitConfig(lr=2e-4, weight_decay=0.0))
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (2e-4, 0.0)


class _Built(Exception):
    pass


def test_fit_builds_the_loss_with_every_option_it_was_given(shards, tmp_path, monkeypatch):
    """--block-size, --alpha ... reach the loss `fit` trains with (stopped right after it is built)."""
    seen = {}

    def spy(name, **kw):
        seen.update(kw, name=name)
        raise _Built

    monkeypatch.setattr(loop, "create_loss", spy)
    cfg = FitConfig(data=str(shards), out=str(tmp_path / "run"), model="tiny", loss="focal", alpha=3.0, beta=2.0,
                    gamma=1.5, block=0.25, block_size=2, crop=32, batch_size=2, steps=1, workers=0, verify="off")
    with pytest.raises(_Built):
        loop.fit(cfg)
    assert seen["name"] == "focal"
    assert (seen["alpha"], seen["beta"], seen["gamma"], seen["block"], seen["block_size"]) == (3.0, 2.0, 1.5, 0.25, 2)
    assert isinstance(seen["centers"], torch.Tensor) and seen["centers"].shape[1] == 2
