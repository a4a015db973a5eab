"""fit(cfg): train a colorization network on a shard folder; one process or many under torchrun (DDP).

RUN_DIR (cfg.out) receives config.json, log.jsonl (one JSON object per step: step, epoch, loss, the loss's
extra terms such as ce_unweighted, lr, samples, elapsed_s) and last.pt, written atomically every
cfg.save_every steps and at the end. The step itself never waits for the GPU (trainer.step): the log rows,
the finiteness check and the progress bar's loss are read back every cfg.log_every steps and before each
save; a non-finite loss skips its update on the device and stops the run at that read, naming the batch.
With cfg.compile the network and the loss go through torch.compile (before the DDP wrap). With cfg.resume
the run continues from last.pt: model, optimiser, step, epoch and the position inside the epoch are restored,
and since crops, flips and the shuffle derive from (seed, epoch, index), the continued run logs the losses
an uninterrupted one would have (on CPU).
Only rank 0 logs and saves. SIGINT/SIGTERM stop the run after the current step with a checkpoint
(trainer.stop): fit then raises stop.RunStopped, and --resume continues exactly.
"""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pipeline import contract
from pipeline.verify import verify_folder
from pipeline.progress import progress, write as progress_write
from trainer import checkpoint, dist, schedule, stop
from trainer import init as data_init
from trainer.config import FitConfig, FitError
from trainer.ema import EMA
from trainer.hint_sampling import HintSampler
from trainer.scoring import map_bins
from trainer.tb import Board
from trainer.validate import BEST, VAL_LOG, Validator
from trainer.validate import trim_rows
from trainer.data import EpochSampler, ShardDataset, make_loader
from trainer.losses import LOSSES, create_loss
from trainer.models import MODELS, ColorNet, create_model, from_released, is_released_layout, load_trunk
from trainer.step import ADAM_EPS, DevicePrefetcher, StepLog, TrainStep, compile_parts, fused_adam, keep_fused

LOG, LAST, CONFIG = "log.jsonl", "last.pt", "config.json"
HOST_FIELDS = ("step", "epoch", "lr", "samples", "elapsed_s")     # a log row's fields beside the loss terms
# Options whose change would make a resumed run a different run; the others (steps, workers, ...) may differ.
SAME_ON_RESUME = ("data", "model", "loss", "init", "lr", "weight_decay", "batch_size", "crop", "flip", "seed",
                  "alpha", "beta", "gamma", "block", "block_size", "lr_schedule", "warmup", "lr_step", "lr_gamma",
                  "ema", "grad_clip", "val_data", "val_limit", "select", "loss_reduction", "gray_crops",
                  "data_init", "data_init_samples", "class_weight", "reg_weight", "reg_loss", "hint_p", "hint_sizes")


class NonFiniteLoss(FitError):
    """The loss of a batch was NaN or infinite; the step was not applied."""


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise FitError("--device cuda: no CUDA device is visible")
    return torch.device("cuda" if name in ("cuda", "auto") and torch.cuda.is_available() else "cpu")


def build_model(cfg: FitConfig, prior: contract.Prior) -> ColorNet:
    """The network of cfg.model with its head sized from the prior (Q logits) or 2 channels for l2; with
    cfg.init, the trunk (and, for class heads, the bins) of a released-layout or colorfast state dict."""
    if cfg.model not in MODELS:
        raise FitError(f"unknown model {cfg.model!r}; known: {sorted(MODELS)}")
    if cfg.loss not in LOSSES:
        raise FitError(f"unknown loss {cfg.loss!r}; known: {sorted(LOSSES)}")
    classes = LOSSES[cfg.loss].head == "classes"
    state, centers = None, torch.from_numpy(prior.centers)
    if cfg.init:
        raw = checkpoint.load_any(cfg.init)
        if is_released_layout(raw):
            try:
                state, centers = from_released(raw)          # its bins come with it: the released 313
            except ValueError as e:
                raise FitError(f"--init {cfg.init}: {e}") from None
            state_classes = True
        elif raw.get("format") == checkpoint.FORMAT:
            state = checkpoint.check_fields(raw, cfg.init, ("model",))["model"]
            state_classes = "centers" in state
            if state_classes and (state["centers"].ndim != 2 or state["centers"].shape[1] != 2):
                raise FitError(f"--init {cfg.init}: its bin centres (model.centers) have shape "
                               f"{tuple(state['centers'].shape)}, not (Q, 2)")
        else:
            raise FitError(f"--init {cfg.init}: neither the released ECCV16 layout (model1..model8, model_out) "
                           f"nor a colorfast checkpoint")
        if classes and "centers" in state:
            centers = state["centers"]                       # else an l2 trunk gets a new classifier over the shards' bins
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model, len(centers), centers) if classes else create_model(cfg.model, 2)
    if state is not None:
        # a head of the other kind (class logits vs ab) is not reused: it starts fresh, the trunk is loaded
        try:
            load_trunk(model, state, skip_head=state_classes != classes)
        except ValueError as e:
            raise FitError(f"--init {cfg.init} does not fit --model {cfg.model} with --loss {cfg.loss}: {e}") from None
    return model


def guided_terms(cfg: FitConfig) -> dict | None:
    """The two-head loss's settings for a network that takes hints (losses.Guided), else None."""
    if not cfg.guided:
        return None
    return {"class_weight": cfg.class_weight, "reg_weight": cfg.reg_weight, "reg_loss": cfg.reg_loss}


def hint_sampler(cfg: FitConfig, info: dist.DistInfo) -> HintSampler | None:
    """Simulated hints for a network that takes them, a different draw on every rank and step (hint_sampling)."""
    return HintSampler(cfg.hint_p, cfg.hint_sizes, cfg.seed, info.rank) if cfg.guided else None


def create_optimizer(model: ColorNet, cfg: FitConfig) -> torch.optim.Optimizer:
    """Fused Adam with the reference recipe's betas (0.9, 0.99) (trainer.step.fused_adam). Under
    --loss-reduction reference its decay and eps are divided by cfg.decay_scale: the updates of a loss summed
    over each crop's target pixels, as the reference's caffe loss layer is (README, "Following the reference
    recipe")."""
    return fused_adam(model.parameters(), cfg.lr, cfg.weight_decay / cfg.decay_scale, eps=ADAM_EPS / cfg.decay_scale)


def bin_remap(model: ColorNet, prior: contract.Prior) -> torch.Tensor | None:
    """(Q_shards,) index of each shard bin among the model's bins, or None when they are the same list.
    Needed when the model's bins come from --init (the released 313) rather than from the shards."""
    if model.centers is None:
        return None
    try:
        return map_bins(model.centers.cpu().numpy(), prior.centers)
    except ValueError as e:
        raise FitError(str(e)) from None


def _non_finite(step: int, reports: list[tuple[int, float, float, list]]) -> NonFiniteLoss:
    """reports: (rank, 1.0 if its loss was finite, its loss, its batch keys) of every rank, for the skipped step.
    Under torchrun the rank whose batch failed is named, whichever rank prints."""
    bad = [(rank, loss, keys) for rank, finite, loss, keys in reports if finite < 1]   # >= 1: applied = min finite
    if len(reports) == 1:
        where = f"batch keys {bad[0][2]}"
    else:
        where = "; ".join(f"rank {rank}'s batch, keys {keys}" for rank, _, keys in bad)
    losses = ", ".join(str(loss) for _, loss, _ in bad)
    return NonFiniteLoss(f"non-finite loss ({losses}) at step {step}, {where}; the step was not applied "
                         f"and no checkpoint was written for it")


def _check_data(cfg: FitConfig, info: dist.DistInfo, device) -> None:
    problems = []
    # quick by default: every chunk's fletcher32 is also checked when the loader reads it, naming file and key
    if info.is_primary and cfg.verify != "off":
        problems = verify_folder(cfg.data, deep=cfg.verify == "deep")
    if dist.any_rank(bool(problems), info, device):
        shown = "\n  ".join(problems[:10]) or "(see rank 0)"
        raise FitError(f"{cfg.data} failed verification; run `cli.py verify {cfg.data}` and preprocess again:\n  {shown}")


def _resume(cfg: FitConfig, run_dir: Path) -> dict:
    ck = checkpoint.load(run_dir / LAST)
    try:
        old = FitConfig.from_dict(ck["config"])
    except (TypeError, ValueError) as e:                 # FitError is a ValueError
        raise FitError(f"--resume {run_dir / LAST}: its config is not a valid run's ({e})") from None
    changed = [f"{k}: {getattr(old, k)!r} -> {getattr(cfg, k)!r}" for k in SAME_ON_RESUME if getattr(old, k) != getattr(cfg, k)]
    if old.lr_schedule == "cosine" and (old.steps, old.epochs) != (cfg.steps, cfg.epochs):
        changed.append("steps/epochs (the cosine schedule spans the whole run)")
    if changed:
        raise FitError(f"--resume {run_dir / LAST}: options differ from the stopped run ({'; '.join(changed)})")
    return ck


def _check_same_bins(ck: dict, prior: contract.Prior, run_dir: Path) -> None:
    if "centers" not in ck["prior"]:
        raise FitError(f"--resume {run_dir / LAST}: its prior has no bin centres")
    old = ck["prior"]["centers"].numpy()
    if old.shape != prior.centers.shape or not np.allclose(old, prior.centers):
        raise FitError(f"--resume {run_dir / LAST}: the shards' ab bins changed since this run started "
                       f"({len(old)} -> {len(prior.centers)} bins); preprocess was rerun with other settings")


def _restore(ck: dict, model, opt, ema, path: Path) -> None:
    """Weights, optimiser, EMA and RNG of last.pt into this run; parts that do not fit it are one FitError
    (load_state_dict's errors span lines; Adam takes moments of the wrong shape, and its fused kernel then
    kills the process at the first step, SIGSEGV or SIGABRT)."""
    try:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        for p in (p for group in opt.param_groups for p in group["params"]):
            for name, v in opt.state.get(p, {}).items():
                if isinstance(v, torch.Tensor) and v.ndim and v.shape != p.shape:
                    raise ValueError(f"optimizer {name} of shape {tuple(v.shape)} for a parameter of {tuple(p.shape)}")
        keep_fused(opt)
        if ema is not None:
            ema.load(ck["ema"], ck["ema_updates"])
        torch.set_rng_state(ck["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
        raise FitError(f"--resume {path}: its saved state does not fit this run ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:300]})") from None


def fit(cfg: FitConfig) -> Path:
    """Train as cfg says; return the run dir. Raises FitError (and its NonFiniteLoss), CheckpointError or
    ShardFormatError with a message for the user."""
    device = pick_device(cfg.device)
    info = dist.setup("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    try:
        return _fit(cfg, info, device)
    except OSError as e:
        if not _writing_run_dir(e, Path(cfg.out)):
            raise
        raise FitError(_write_failure(e, Path(cfg.out))) from None
    finally:
        dist.cleanup(info)


# What a full disk, a quota or a read-only folder raises; a write through an open file names no file.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EACCES, errno.EPERM}


def _writing_run_dir(e: OSError, run_dir: Path) -> bool:
    """Whether e is a failed write of the run's own files (last.pt, best.pt, logs, samples, config.json)."""
    if e.filename is None:
        return e.errno in WRITE_ERRNOS
    where = Path(os.path.abspath(e.filename))
    return where == Path(os.path.abspath(run_dir)) or Path(os.path.abspath(run_dir)) in where.parents


def _write_failure(e: OSError, run_dir: Path) -> str:
    """One line: the folder, the cause (ENOSPC, EACCES, ...), and what is still there."""
    cause = f"{errno.errorcode.get(e.errno, 'error')}: {os.strerror(e.errno) if e.errno else e}"
    name = Path(e.filename).name if e.filename else ""
    if name.startswith(".") and name.endswith(".tmp"):      # atomic_write's temporary .NAME.XXXX.tmp -> NAME
        name = name[1:-4].rsplit(".", 1)[0]
    at = f", at {name}" if name else ""
    kept = (f"{LAST} there is the last complete save (resume with --resume once fixed)"
            if (run_dir / LAST).is_file() else "no checkpoint was written")
    return f"{run_dir}: cannot write the run's files ({cause}{at}); {kept}"


def _fit(cfg: FitConfig, info: dist.DistInfo, device: torch.device) -> Path:
    run_dir = Path(cfg.out)
    _check_data(cfg, info, device)
    prior = contract.Prior.load(Path(cfg.data) / contract.PRIOR)
    dataset = ShardDataset(cfg.data, "train", cfg.crop, cfg.flip, cfg.seed)
    model = build_model(cfg, prior)
    remap = bin_remap(model, prior)
    loss_fn = create_loss(cfg.loss, alpha=cfg.alpha, beta=cfg.beta, gamma=cfg.gamma, block=cfg.block,
                          block_size=cfg.block_size, centers=model.centers, gray_crops=cfg.gray_crops,
                          guided=guided_terms(cfg))
    cuda = device.type == "cuda"
    model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    if not cfg.resume and not cfg.init:              # from scratch; before the optimiser and the EMA copy
        data_init.apply(cfg.data_init, model, dataset, cfg.data_init_samples, cfg.seed,
                        echo=print if info.is_primary else None)
    opt = create_optimizer(model, cfg)
    ema = EMA(model, cfg.ema) if cfg.ema > 0 else None

    step = epoch = epoch_step = 0
    if cfg.resume:
        ck = _resume(cfg, run_dir)
        _check_same_bins(ck, prior, run_dir)
        _restore(ck, model, opt, ema, run_dir / LAST)
        step, epoch, epoch_step = ck["step"], ck["epoch"], ck["epoch_step"]
        if ck.get("world_size", 1) != info.world_size:
            raise FitError(f"--resume: the run was stopped with {ck.get('world_size', 1)} process(es), this one has "
                           f"{info.world_size}; the position inside the epoch would not carry over")
    elif (run_dir / LAST).exists():
        raise FitError(f"{run_dir} already holds a run ({LAST}); pass --resume to continue it or choose another --out")

    sampler = EpochSampler(dataset, info.world_size, info.rank, cfg.seed)
    steps_per_epoch = len(sampler) // cfg.batch_size
    if steps_per_epoch == 0:
        raise FitError(f"{cfg.data}: {len(dataset)} training samples make no full batch of {cfg.batch_size} "
                       f"per process ({info.world_size} process(es)); lower --batch-size")
    total = cfg.steps or cfg.epochs * steps_per_epoch
    validator = Validator(cfg, prior, info, device, run_dir, model.centers is not None, steps_per_epoch, total)
    if cfg.resume:
        validator.restore(ck.get("validation"))
    sched = schedule.create(opt, cfg.lr, step, cfg.lr_schedule, total, cfg.warmup, cfg.lr_step, cfg.lr_gamma,
                            cfg.batch_size * info.world_size)      # the lr of `step` set; after the optimiser's load
    loader = make_loader(dataset, cfg.batch_size, sampler, cfg.workers)
    loader.worker_init_fn = stop.with_ignored_signals(loader.worker_init_fn)   # the training process decides
    net, loss_c = compile_parts(model, loss_fn) if cfg.compile else (model, loss_fn)
    net = DistributedDataParallel(net, device_ids=[device.index] if cuda else None) if info.enabled else net

    rebal = torch.as_tensor(prior.weights, dtype=torch.float32, device=device)     # (Q_shards,)
    remap = remap.to(device) if remap is not None else None
    log = None
    if info.is_primary:
        run_dir.mkdir(parents=True, exist_ok=True)
        with contract.atomic_write(run_dir / CONFIG) as tmp:
            tmp.write_text(json.dumps(cfg.to_dict(), indent=1))
        if cfg.resume:
            trim_rows(run_dir / LOG, step)             # steps and validations after the checkpoint are
            trim_rows(run_dir / VAL_LOG, step)         # redone, and each is logged once
        elif (run_dir / VAL_LOG).exists():
            (run_dir / VAL_LOG).unlink()
        if not validator.enabled:
            print(f"no validation: {cfg.data} has no test split and no --val-data was given"
                  if cfg.val_every != -1 else "no validation (--val-every -1)")
        log = open(run_dir / LOG, "a" if cfg.resume else "w", buffering=1)
    board = Board(run_dir, purge_step=step + 1 if cfg.resume else None, enabled=info.is_primary)

    def save(path=run_dir / LAST, **extra):
        checkpoint.save(path, {
            "model": model.state_dict(), "optimizer": opt.state_dict(), "model_name": cfg.model,
            "out_channels": model.out_channels, "loss": cfg.loss, "config": cfg.to_dict(),
            "step": step, "epoch": epoch, "epoch_step": epoch_step, "world_size": info.world_size,
            "rng": torch.get_rng_state(),
            "ema": ema.state_dict() if ema is not None else None, "ema_updates": ema.updates if ema else 0,
            "validation": validator.state(),
            "prior": {k: torch.as_tensor(getattr(prior, k)) for k in ("centers", "prob", "weights")}, **extra})

    train_step = TrainStep(net, loss_c, opt, device, rebal, remap, info, clip=cfg.grad_clip,
                           hints=hint_sampler(cfg, info))
    train_step.step = step                             # a resumed run's hints continue where it stopped
    pending = StepLog()

    def read_back():
        """The one host sync: the pending steps' values -> log rows; stop at a skipped (non-finite) step."""
        rows, bad = pending.flush()
        for r in rows[:bad]:
            if log is not None:
                terms = {k: v for k, v in r.items() if k not in ("finite", "applied", "keys", *HOST_FIELDS)}
                log.write(json.dumps({"step": r["step"], "epoch": r["epoch"], **terms,
                                      **{k: r[k] for k in HOST_FIELDS[2:]}}) + "\n")
                board.scalars(r["step"], {**terms, "lr": r["lr"]}, prefix="train/")
        if bad is not None:
            r = rows[bad]
            raise _non_finite(r["step"], dist.gather_objects((info.rank, r["finite"], r["loss"], list(r["keys"])), info))
        if rows:
            bar.set_postfix(loss=f"{rows[-1]['loss']:.4f}", epoch=rows[-1]["epoch"])

    t0 = time.perf_counter()
    bar = progress(total=total, initial=step, desc="fit", disable=not info.is_primary, unit="step",
                   dynamic_ncols=True)
    stopper = stop.GracefulStop(announce=progress_write if info.is_primary else None).install()
    try:
        net.train()
        while step < total:
            sampler.set_position(epoch, epoch_step * cfg.batch_size)
            dataset.epoch = epoch
            for batch in DevicePrefetcher(loader, device):
                lr = opt.param_groups[0]["lr"]                           # set by the scheduler for this step
                res = train_step(batch)                                  # queued on the device, not waited for
                sched.step()                                             # host arithmetic: the next step's lr
                if ema is not None:
                    ema.update(model)                                    # one fused kernel, no sync
                step, epoch_step = step + 1, epoch_step + 1
                pending.add(res, step=step, epoch=epoch, keys=batch["key"], lr=lr,
                            samples=step * cfg.batch_size * info.world_size,
                            elapsed_s=round(time.perf_counter() - t0, 3))    # when the step was queued
                bar.update()
                saved = step % cfg.save_every == 0 or step == total
                stopping = step < total and dist.any_rank_now(stopper.requested, info)   # all ranks, same step
                validating = validator.due(step, epoch_step)
                if saved or stopping or validating or step % cfg.log_every == 0:
                    read_back()                                          # before any save: no NaN step is saved
                if validating:
                    shown = ema.model if ema is not None else model
                    improved = validator.run(step, epoch, shown, "ema" if ema is not None else "raw", board)
                    if info.is_primary:
                        board.image("samples", step, validator.last_grid)
                        if improved:
                            save(run_dir / BEST, best=validator.best)
                if info.is_primary and saved:
                    save()
                if step >= total:
                    break
                if stopping:
                    if info.is_primary and not saved:
                        save()
                    dist.barrier(info)
                    raise stop.RunStopped(run_dir, step, total, stopper.signum, info.world_size)
            else:
                epoch, epoch_step = epoch + 1, 0
        dist.barrier(info)
    finally:
        stopper.restore()
        bar.close()
        board.close()
        if log is not None:
            log.close()
    if info.is_primary and validator.enabled:
        wall = time.perf_counter() - t0
        share = 100 * validator.seconds / max(wall, 1e-9)
        print(f"validation: {validator.seconds:.1f} s of {wall:.1f} s ({share:.0f} %)"
              + (f"; best {validator.best['metric']} {validator.best['value']:.3f} at step {validator.best['step']}"
                 f" -> {run_dir / BEST}" if validator.best else ""))
    return run_dir
