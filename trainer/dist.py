"""Process plumbing for `torchrun --nproc-per-node N cli.py fit ...`: the only trainer module that reads
RANK/WORLD_SIZE or calls torch.distributed. A plain `python cli.py fit` gets DistInfo() and never touches it."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

_CONTROL = None        # a gloo group beside an NCCL one: host-side flags agreed without a GPU sync


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def setup(backend: str) -> DistInfo:
    """Join the process group torchrun describes in the environment; `backend` is nccl (GPUs) or gloo (CPU)."""
    if "RANK" not in os.environ:
        return DistInfo()
    info = DistInfo(*(int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")))
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend)
    global _CONTROL
    _CONTROL = dist.new_group(backend="gloo") if backend != "gloo" else None
    return info


def cleanup(info: DistInfo) -> None:
    global _CONTROL
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL = None


def is_primary_process() -> bool:
    """Rank 0, or no torchrun at all: the process that prints a run's summary (read before setup runs)."""
    return int(os.environ.get("RANK", "0")) == 0


def world_size_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def any_rank(flag: bool, info: DistInfo, device) -> bool:
    """True on every rank when `flag` is true on at least one (so all ranks stop together, none hangs)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def any_rank_now(flag: bool, info: DistInfo) -> bool:
    """any_rank over a CPU tensor (the gloo group, or the gloo side group of an NCCL run): cheap enough to ask
    every step, and it never waits for the GPU, so the training step's kernels keep running meanwhile."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_CONTROL)
    return bool(t.item())


def gather_objects(obj, info: DistInfo) -> list:
    """obj of every rank, in rank order, on every rank: a pickled all-gather over the CPU group (gloo), for the
    rare report that must name another rank's data (a non-finite loss), never per step."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj, group=_CONTROL)
    return out


def device_min(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The minimum of t over every rank, computed where t lives (on a GPU: an NCCL all-reduce queued on the
    stream, no host sync). t itself in one process."""
    if not info.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def global_max(t: torch.Tensor) -> torch.Tensor:
    """The maximum of t over every rank (t itself in one process), detached: for batch statistics that must
    not depend on how the global batch is split over processes."""
    t = t.detach()
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_sum(values, info: DistInfo, device):
    """Element-wise sum of a float64 array over all ranks (itself in one process)."""
    if not info.enabled:
        return values
    import numpy as np
    t = torch.as_tensor(np.asarray(values, np.float64), device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().numpy()
