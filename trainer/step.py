"""The training step's hot path without host syncs: `fit` and `bench epoch` both run it.

A step (TrainStep) queues forward, loss, backward and the Adam update and returns device tensors; nothing in
it waits for the GPU. Its finiteness check is on the device too: the loss's `isfinite` (max-reduced over the
ranks, so every rank agrees) becomes fused Adam's `found_inf`, which skips the update of every parameter and
the step counter inside the kernel, as torch.amp.GradScaler does. StepLog keeps each step's values and reads
them back to the host in one transfer every `log_every` steps (and before each save), so a non-finite loss is
reported a few steps later, by its step and batch keys, and never reaches the weights or a checkpoint.

DevicePrefetcher copies the next batch to the GPU (pinned memory, non_blocking, on a side stream) while the
current step runs; the step's stream waits for that copy before using it.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from pipeline import contract
from trainer import dist
from trainer.losses import Targets

DEVICE_KEYS = ("L", "ab", "nn_idx", "nn_w")


ADAM_EPS = 1e-8                 # torch's default and caffe's Adam `delta` default


def fused_adam(params, lr: float, weight_decay: float, eps: float = ADAM_EPS) -> torch.optim.Adam:
    """Adam with the reference recipe's betas (0.9, 0.99), fused: one kernel for the update, and it honours
    `found_inf` (the update skipped on the device when the loss was not finite)."""
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay, eps=eps, fused=True)


def keep_fused(opt: torch.optim.Optimizer) -> None:
    """After load_state_dict from a checkpoint written by the unfused optimiser: its groups say fused False."""
    for g in opt.param_groups:
        g["fused"], g["foreach"] = True, None


def compile_parts(model, loss_fn):
    """torch.compile of the network and of the loss (the DDP wrap, if any, comes after). The module itself is
    kept for state_dict, so checkpoints never carry the compiled wrapper's `_orig_mod.` prefix."""
    return torch.compile(model), torch.compile(loss_fn)


def forward_loss(net, loss_fn, batch: dict, device, rebal: torch.Tensor, remap: torch.Tensor | None,
                 hints=None, step: int = 0) -> dict:
    """Move a loader batch to the device (a no-op for a prefetched one), run the network (bf16 autocast,
    channels-last on CUDA) and the loss. rebal (Q_shards,) rebalancing weights; remap (Q_shards,) shard bin ->
    model bin, or None. hints: a hint_sampling.HintSampler for a network that takes hints (siggraph17), drawn
    from the batch's stored ab on the device for this step."""
    cuda = device.type == "cuda"
    L = batch["L"].to(device, non_blocking=True).unsqueeze(1).float() * contract.L_SCALE       # (B, 1, c, c) L*
    if cuda:
        L = L.contiguous(memory_format=torch.channels_last)
    nn_idx = batch["nn_idx"].to(device, non_blocking=True).long()                             # (B, K, t, t)
    tg = Targets(ab=batch["ab"].to(device, non_blocking=True).float(),
                 nn_idx=nn_idx if remap is None else remap[nn_idx],
                 nn_w=batch["nn_w"].to(device, non_blocking=True).float(),
                 w=rebal[nn_idx[:, 0]])                                                       # (B, t, t)
    planes = hints(tg.ab, step) if hints is not None else ()                                 # (hint_ab, hint_mask)
    with torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext():
        out = net(L, *planes)
    return loss_fn(out, tg)


class TrainStep:
    """step(batch) -> {"loss", its extra terms, "finite" (this rank), "applied" (all ranks)}: 0-dim device
    tensors, nothing synced. The update is applied only when every rank's loss is finite."""

    def __init__(self, net, loss_fn, opt: torch.optim.Optimizer, device, rebal, remap, info: dist.DistInfo,
                 clip: float = 0.0, hints=None):
        self.net, self.loss_fn, self.opt, self.device = net, loss_fn, opt, device
        self.rebal, self.remap, self.info, self.clip, self.hints = rebal, remap, info, clip, hints
        self.step = 0                  # the optimiser step the next call is (0-based): seeds its hints; fit sets it
        self.clipped = [p for g in opt.param_groups for p in g["params"]]     # (bench sets .params: a count)

    def __call__(self, batch: dict) -> dict:
        res = forward_loss(self.net, self.loss_fn, batch, self.device, self.rebal, self.remap, self.hints, self.step)
        self.step += 1
        loss = res["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        finite = torch.isfinite(loss.detach()).float()
        applied = dist.device_min(finite, self.info)                  # 0 on every rank if any rank's was not
        self.opt.found_inf = 1.0 - applied                            # read by fused Adam inside its kernel
        norm = clip_gradients(self.clipped, self.clip)                # a device value, not read here
        self.opt.step()
        return {**{k: v.detach() for k, v in res.items()}, "grad_norm": norm.detach(), "finite": finite,
                "applied": applied}


def clip_gradients(params, clip: float = 0.0) -> torch.Tensor:
    """The global gradient norm (before clipping), with the gradients scaled down to `clip` when it is > 0.
    (after DDP's all-reduce, so every rank sees the same norm)."""
    params = [p for p in params if p.grad is not None]
    return torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else float("inf"))


class StepLog:
    """Per-step device values, read to the host in one transfer at flush(): a list of rows (floats) and, when a
    step's update was skipped, that step's index in the list (else None)."""

    def __init__(self):
        self.values, self.extra = [], []

    def add(self, values: dict, **host) -> None:
        self.values.append(values)
        self.extra.append(host)

    def __len__(self) -> int:
        return len(self.values)

    def flush(self) -> tuple[list[dict], int | None]:
        if not self.values:
            return [], None
        names = list(self.values[0])
        stacked = torch.stack([torch.stack([v[n].float() for n in names]) for v in self.values]).cpu()  # (S, n)
        rows = [dict(zip(names, r), **e) for r, e in zip(stacked.tolist(), self.extra)]
        self.values, self.extra = [], []
        bad = next((i for i, r in enumerate(rows) if r["applied"] < 1), None)
        return rows, bad


class DevicePrefetcher:
    """Iterate a loader with each batch's tensors already on `device`: batch i + 1 is copied on a side stream
    while step i runs. On the CPU it passes batches through."""

    def __init__(self, loader, device):
        self.loader, self.device = loader, device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None

    def _copy(self, batch):
        with torch.cuda.stream(self.stream):
            return {**batch, **{k: batch[k].to(self.device, non_blocking=True) for k in DEVICE_KEYS}}

    def __iter__(self):
        if not self.cuda:
            yield from self.loader
            return
        it = iter(self.loader)
        nxt = next(it, None)
        nxt = self._copy(nxt) if nxt is not None else None
        while nxt is not None:
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            batch = nxt
            for k in DEVICE_KEYS:                  # the side stream's memory is now used by the step's stream
                batch[k].record_stream(torch.cuda.current_stream(self.device))
            nxt = next(it, None)
            nxt = self._copy(nxt) if nxt is not None else None
            yield batch
