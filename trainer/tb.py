"""TensorBoard, when the optional `tensorboard` package is installed (`pip install colorfast[tensorboard]`):
scalars, lr and sample grids also go to RUN_DIR/tb. Without it one line says so and nothing else changes;
log.jsonl and val.jsonl stay the source of truth either way."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np


def available() -> bool:
    try:
        return importlib.util.find_spec("tensorboard") is not None
    except (ImportError, ValueError):                  # a module set to None in sys.modules (tests) or broken
        return False


class Board:
    """A SummaryWriter or nothing; every method is a no-op without TensorBoard."""

    def __init__(self, run_dir, purge_step: int | None = None, enabled: bool = True):
        self.writer = None
        if not enabled:
            return
        if not available():
            print("tensorboard is not installed: curves stay in log.jsonl / val.jsonl (`cli.py plot RUN_DIR`)")
            return
        from torch.utils.tensorboard import SummaryWriter
        # purge_step: on --resume, events after the checkpoint's step are dropped, as they are from the logs
        self.writer = SummaryWriter(str(Path(run_dir) / "tb"), purge_step=purge_step)

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and np.isfinite(v):
                self.writer.add_scalar(f"{prefix}{k}", v, step)

    def image(self, tag: str, step: int, rgb: np.ndarray) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, rgb, step, dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
