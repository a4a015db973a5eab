"""Helpers for tests of released-layout weights: generated state dicts and torch.hub-style file names."""
import functools
import hashlib
import io

import numpy as np
import torch

from live_networks import calibrate_batchnorm
from trainer.models import create_model
from trainer.synthetic import gamut_centers


@functools.lru_cache(maxsize=1)
def released_centers(q: int = 313) -> torch.Tensor:
    """(q, 2): the synthetic shards' in-gamut bins plus the nearest other grid cells, a superset like the
    released 313 (so that `fit --init` can map shard targets onto them)."""
    base = gamut_centers()
    grid = np.stack(np.meshgrid(np.arange(-110, 111, 10), np.arange(-110, 111, 10), indexing="ij"), -1).reshape(-1, 2)
    extra = [g for g in grid if not (np.abs(base - g).max(1) < 1e-3).any()]
    extra = sorted(extra, key=lambda g: (np.hypot(*g), tuple(g)))[: q - len(base)]
    return torch.from_numpy(np.concatenate([base, np.array(extra, np.float32)])).float()


def released_state_dict(model: str = "tiny", seed: int = 0, scale: float = 10.0) -> dict:
    """A random state dict in the released ECCV16 layout (model1..model8 + model_out (2, Q, 1, 1) = centres / 110),
    with BN statistics calibrated on real photos' L (live_networks: the output depends on L, as a trained
    network's does) and a classifier scaled (logits' std ~2-4, as a trained one's) so that the class
    distribution is far from uniform and the temperature matters; small enough that torch and onnxruntime
    agree within export's 1e-3 ab units even on noise)."""
    torch.manual_seed(seed)
    centers = released_centers()
    net = calibrate_batchnorm(create_model(model, len(centers), torch.zeros(len(centers), 2)))
    sd = {k: v.clone() for k, v in net.state_dict().items() if k != "centers" and not k.endswith("num_batches_tracked")}
    head = f"model8.{len(net.model8) - 1}.weight"
    sd[head] = sd[head] * scale
    sd[head.replace("weight", "bias")] = torch.randn(len(centers)) * 2
    sd["model_out.weight"] = (centers / 110).t().reshape(2, len(centers), 1, 1).contiguous()
    return sd


def torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def hash_named(data: bytes, stem: str = "colorization_release_v2") -> str:
    """torch.hub's convention: the file name carries the first 8 hex digits of its SHA-256."""
    return f"{stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth"
