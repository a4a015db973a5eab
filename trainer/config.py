"""FitConfig: everything `cli.py fit` can set, frozen, with the DESIGN.md recipe as defaults.
`asdict(cfg)` goes into every checkpoint and into RUN_DIR/config.json; variants come from `replace(cfg, ...)`."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields


LOSS_REDUCTIONS = ("reference", "mean")
REG_LOSSES = ("smooth-l1", "l2")
# trainer.siggraph17's registered networks: they take hints and have two heads (a name test: config imports no model)
GUIDED_MODELS = ("siggraph17", "siggraph17-tiny")
# what a run did before a field existed: a checkpoint without it ran like this (so --resume compares the truth)
BEFORE_FIELD = {"loss_reduction": "mean", "gray_crops": "train", "data_init": "off"}


class FitError(ValueError):
    """A training run that cannot start or continue for a reason the user can fix (bad option, bad data)."""


@dataclass(frozen=True)
class FitConfig:
    data: str = "artifacts/shards/sample"   # shard folder written by `cli.py preprocess` (its "train" split)
    out: str = "artifacts/runs/default"     # run dir: log.jsonl, config.json, last.pt
    model: str = "eccv16"                   # trainer.models.MODELS: eccv16 | tiny | siggraph17 | siggraph17-tiny
    loss: str = "ce"                        # trainer.losses.LOSSES: ce | l2 | focal | focal-exact
    init: str = ""                          # state dict in the released ECCV16 layout (model1..model8, model_out)
    lr: float = 3.16e-5                     # Adam, betas (0.9, 0.99), base_lr of the reference solver
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
    # watching the run (trainer/validate.py, schedule.py, ema.py)
    val_every: int = 0                      # steps between validations; 0: once per epoch; -1: never; always at the end
    val_data: tuple = ()                    # shard folders validated on (their test split, else all); (): data's test split
    val_limit: int = 1000                   # first N samples of each validation folder (0: all)
    select: str = "auc_rebalanced"          # [FOLDER:]METRIC that picks RUN_DIR/best.pt (first folder by default)
    lr_schedule: str = "constant"           # constant | step | cosine
    warmup: int = 0                         # steps of linear warm-up from 0 to lr
    lr_step: int = 0                        # step schedule: steps between decays; 0: 215,000 x 40 / global batch
    lr_gamma: float = 0.316                 # step schedule: lr multiplied by this at every lr_step
    ema: float = 0.0                        # decay of an exponential moving average of the weights; 0: off
    grad_clip: float = 0.0                  # clip the global gradient norm to this; 0: off (the norm is logged)
    loss_reduction: str = "reference"       # reference: the reference's data-to-decay ratio (its loss sums over a
                                            # crop's target pixels): Adam's decay and eps / (crop/4)^2; mean: as given
    gray_crops: str = "skip"                # skip: a crop with no target |a| or |b| > 5 weighs 0 (the reference's);
                                            # train: every crop at full weight
    data_init: str = "lsuv"                 # from scratch: lsuv (trainer/init.py) | off (torch's default init);
                                            # with init the trunk comes from the file: recorded as off
    data_init_samples: int = 32             # training crops the data init measures variances on
    # siggraph17 (trainer/hint_sampling.py, losses.Guided); colorization-pytorch's values as defaults
    class_weight: float = 1.0               # the class head's loss (--loss) in the total: its lambda_A
    reg_weight: float = 10.0                # the regression head's loss in the total: its 10 x loss_G_L1_reg
    reg_loss: str = "smooth-l1"             # smooth-l1: its HuberLoss(delta = 1/110) on ab / 110 | l2
    hint_p: float = 0.125                   # P(no more hints): geometric count; its --sample_p of the hinted phases
    hint_sizes: tuple = (1, 2, 3, 4, 5, 6, 7, 8, 9)   # hint patch sides in px (its --sample_Ps), up to the 4 px grid

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
        object.__setattr__(self, "val_data", tuple(self.val_data))    # a list from JSON -> the tuple of the CLI
        if self.val_every < -1 or self.val_limit < 0 or self.warmup < 0 or self.lr_step < 0:
            raise FitError("--val-every must be >= -1; --val-limit, --warmup and --lr-step >= 0")
        if self.lr_schedule not in ("constant", "step", "cosine"):
            raise FitError(f"--lr-schedule must be constant, step or cosine, got {self.lr_schedule!r}")
        if not 0 < self.lr_gamma <= 1:
            raise FitError(f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        if not 0 <= self.ema < 1:
            raise FitError(f"--ema must be in [0, 1) (0: off), got {self.ema}")
        if not (math.isfinite(self.grad_clip) and self.grad_clip >= 0):
            raise FitError(f"--grad-clip must be >= 0 (0: off), got {self.grad_clip}")
        if self.loss_reduction not in LOSS_REDUCTIONS:
            raise FitError(f"--loss-reduction must be reference or mean, got {self.loss_reduction!r}")
        if self.gray_crops not in ("skip", "train"):
            raise FitError(f"--gray-crops must be skip or train, got {self.gray_crops!r}")
        if self.data_init not in ("lsuv", "off"):
            raise FitError(f"--data-init must be lsuv or off, got {self.data_init!r}")
        if self.data_init_samples < 1:
            raise FitError(f"--data-init-samples must be >= 1, got {self.data_init_samples}")
        for name in ("class_weight", "reg_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise FitError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {v!r}")
        if self.reg_loss not in REG_LOSSES:
            raise FitError(f"--reg-loss must be one of {', '.join(REG_LOSSES)}, got {self.reg_loss!r}")
        if not (isinstance(self.hint_p, (int, float)) and 0 < self.hint_p <= 1):
            raise FitError(f"--hint-p must be in (0, 1] (1: no hints), got {self.hint_p!r}")
        object.__setattr__(self, "hint_sizes", tuple(self.hint_sizes))
        if not self.hint_sizes or any(not isinstance(v, int) or v < 1 for v in self.hint_sizes):
            raise FitError(f"--hint-sizes must be patch sides >= 1 px, got {self.hint_sizes!r}")
        if self.guided and self.loss == "l2" and self.block > 0:
            raise FitError("--block applies to the class head; --model siggraph17 --loss l2 trains none")
        if self.guided and self.init:
            raise FitError(f"--init is for eccv16 and tiny; --model {self.model} trains from scratch here")
        if self.init or self.guided:
            # --init: the weights come from the file; siggraph17: LSUV walks ColorNet's sequential blocks, not a
            # U-Net with skips, so it keeps torch's default init (colorization-pytorch: a normal init)
            object.__setattr__(self, "data_init", "off")

    @property
    def guided(self) -> bool:
        """A network that takes hints (siggraph17): trained with simulated hints and two losses."""
        return self.model in GUIDED_MODELS

    @property
    def decay_scale(self) -> float:
        """What Adam's weight decay and eps are divided by: the target pixels of a crop under "reference", else 1.
        The reference's loss layer sums over a crop's pixels and divides by the batch; ours takes the mean over
        pixels too, so its data gradient is (crop/4)^2 smaller. Adam is invariant to a common scale of gradient
        and eps, so dividing decay and eps by that factor gives the reference's updates exactly, while the logged
        losses and gradient norms stay per-pixel means, comparable across crops and with earlier runs."""
        return (self.crop / 4) ** 2 if self.loss_reduction == "reference" else 1.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FitConfig":
        """Rebuild from a checkpoint's config, ignoring fields this version does not know."""
        known = {f.name for f in fields(cls)}
        return cls(**{**BEFORE_FIELD, **{k: v for k, v in d.items() if k in known}})
