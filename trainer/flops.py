"""FLOPs of one training step and the achieved fraction of a GPU's peak (MFU), for the benchmarks.

step_flops counts one forward and backward of the network and the loss with torch.utils.flop_counter on the
meta device (shapes only: no memory, no compute, the same count on any machine): convolutions, matmuls and
their gradients, as MFU is usually quoted; the Adam update and elementwise work are not counted.
peak_tflops: dense bf16 tensor-core TFLOP/s from the vendors' data sheets (no sparsity), matched by name.
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from trainer.losses import Targets, create_loss
from trainer.models import create_model

# (substring of torch.cuda.get_device_name, dense bf16 TFLOP/s); the first match wins, so PCIe before SXM
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),            # SXM5 ("NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("V100", 125.0),            # no bf16: its fp16 tensor-core peak, which autocast bf16 does not reach
)


def peak_tflops(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def step_flops(model: str, loss: str, batch_size: int, crop: int, classes: int = 313, knn: int = 5) -> int:
    """FLOPs of forward + backward of `model` with `loss` on a batch of crop x crop crops."""
    with torch.device("meta"):
        head = 2 if loss == "l2" else classes
        centers = None if loss == "l2" else torch.zeros(classes, 2)
        net = create_model(model, head, centers)
        guided = getattr(net, "guided", False) and dict(class_weight=1.0, reg_weight=10.0, reg_loss="smooth-l1")
        t = crop // 4
        L = torch.zeros(batch_size, 1, crop, crop)
        tg = Targets(ab=torch.zeros(batch_size, 2, t, t), nn_idx=torch.zeros(batch_size, knn, t, t, dtype=torch.long),
                     nn_w=torch.zeros(batch_size, knn, t, t), w=torch.zeros(batch_size, t, t))
        counter = FlopCounterMode(display=False)
        with counter:
            # siggraph17: both heads' losses; its simulated hints are elementwise work, not counted
            create_loss(loss, centers=centers, guided=guided or None)(net(L), tg)["loss"].backward()
    return int(counter.get_total_flops())


def throughput(flops: int, seconds: float, peak: float | None) -> dict:
    """{"tflops": achieved TFLOP/s, "mfu": its share of peak (None without a peak)}."""
    tflops = flops / max(seconds, 1e-12) / 1e12
    return {"tflops": float(f"{tflops:.4g}"), "mfu": round(tflops / peak, 4) if peak else None}
