"""Process plumbing for `torchrun --nproc-per-node N cli.py fit ...`: the only trainer module that reads
RANK/WORLD_SIZE or calls torch.distributed. A plain `python cli.py fit` gets DistInfo() and never touches it."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
    return info


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo, device) -> bool:
    """True on every rank when `flag` is true on at least one (so all ranks stop together, none hangs)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
