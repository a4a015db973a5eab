"""FitConfig: everything `cli.py fit` can set, frozen, with the DESIGN.md recipe as defaults.
`asdict(cfg)` goes into every checkpoint and into RUN_DIR/config.json; variants come from `replace(cfg, ...)`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


class FitError(ValueError):
    """A training run that cannot start or continue for a reason the user can fix (bad option, bad data)."""


@dataclass(frozen=True)
class FitConfig:
    data: str = "artifacts/shards/sample"   # shard folder written by `cli.py preprocess` (its "train" split)
    out: str = "artifacts/runs/default"     # run dir: log.jsonl, config.json, last.pt
    model: str = "eccv16"                   # trainer.models.MODELS: eccv16 | tiny
    loss: str = "ce"                        # trainer.losses.LOSSES: ce | l2 | focal | focal-exact
    init: str = ""                          # state dict in the released ECCV16 layout (model1..model8, model_out)
    lr: float = 3e-5                        # Adam, betas (0.9, 0.99), as in the reference recipe
    weight_decay: float = 1e-3
    batch_size: int = 40                    # per process; the global batch is batch_size * world size
    crop: int = 176                         # random crops, offsets multiples of 4 so targets stay aligned
    flip: bool = True                       # random horizontal flips of every array
    epochs: int = 1                         # ignored when steps > 0
    steps: int = 0                          # total optimiser steps; 0: run `epochs` full epochs
    seed: int = 0                           # model init, shuffling, crops and flips all derive from it
    save_every: int = 500                   # steps between checkpoints (RUN_DIR/last.pt); one is also written at the end
    resume: bool = False                    # continue from RUN_DIR/last.pt
    workers: int = 2                        # DataLoader worker processes per training process
    device: str = "auto"                    # auto | cpu | cuda
    verify: str = "quick"                   # shard folder check before training: quick | deep | off
    alpha: float = 10.0                     # focal mask 1 / (1 + alpha exp(-beta t)): hard pixels weigh ~alpha x more
    beta: float = 5.0
    gamma: float = 2.0                      # focal-exact: Lin et al. (1 - p)^gamma
    block: float = 0.0                      # weight of the block-averaged-colour term added to the loss; 0: off
    block_size: int = 4                     # block side, in target pixels
    compile: bool = False                   # torch.compile the network and the loss (before the DDP wrap)
    log_every: int = 20                     # steps between host reads of the losses (log rows, NaN check, bar)

    def __post_init__(self):
        if self.crop <= 0 or self.crop % 8:
            raise FitError(f"--crop {self.crop}: must be a positive multiple of 8 "
                           "(targets are at 1/4 resolution and the network halves the side three times)")
        for name in ("batch_size", "save_every", "block_size", "log_every"):
            if getattr(self, name) < 1:
                raise FitError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.steps < 0 or self.epochs < 0 or self.epochs < 1 and self.steps == 0:
            raise FitError(f"give --steps N (N > 0) or --epochs N (N > 0), got --steps {self.steps} "
                           f"--epochs {self.epochs}")
        # (name, smallest allowed, whether the bound itself is allowed): NaN and infinities never are
        for name, low, closed in (("lr", 0.0, False), ("weight_decay", 0.0, True), ("alpha", 0.0, True),
                                  ("beta", 0.0, True), ("gamma", 0.0, True), ("block", 0.0, True)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and (v >= low if closed else v > low)):
                raise FitError(f"--{name.replace('_', '-')} must be a finite number {'>=' if closed else '>'} "
                               f"{low:g}, got {v!r}")
        if self.workers < 0:
            raise FitError(f"--workers must be >= 0, got {self.workers}")
        if self.verify not in ("quick", "deep", "off"):
            raise FitError(f"--verify must be quick, deep or off, got {self.verify!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise FitError(f"--device must be auto, cpu or cuda, got {self.device!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        """Rebuild from a checkpoint's config, ignoring fields this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})
