"""`cli.py bench colorize`: seconds per megapixel of `colorize`, torch CPU vs ONNX Runtime CPU, one run.

The same photos go through colorize_rgb (Lab conversion, the network on a size x size L, upsampling, gamut
fitting, back to RGB) with the torch colorizer and with its export run by onnxruntime, interleaved photo
by photo so that load on a shared machine hits both sides alike. Quoted per side: end-to-end seconds per
megapixel of input (median over repeats of total time / total megapixels) and the network's own
milliseconds per image (predict_ab on the size x size input, median), plus the ratio torch / onnx and the
largest |delta ab| between the two sides' full-resolution outputs.

Without --checkpoint the network is the full ECCV16 one with random weights: speed does not depend on the
weights, and no file has to be downloaded.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from colorfast.photos import colorize_rgb, predict_ab_full
from colorfast.net_input import net_input
from colorfast.colorizer import Colorizer
from colorfast.loader import load_colorizer
from colorfast.extras import require
from colorfast.inputs import READ_ERRORS, list_inputs
from pipeline.images import load_rgb, rgb_to_lab

# scikit-image's bundled colour photos (0.14 to 2 MP), as shipped with the base install
SAMPLE_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "ihc.png",
                 "hubble_deep_field.jpg", "retina.jpg")


def sample_photos() -> list[tuple[str, np.ndarray]]:
    import skimage
    root = Path(skimage.__file__).resolve().parent / "data"
    return [(name, load_rgb(root / name)) for name in SAMPLE_PHOTOS if (root / name).is_file()]


def folder_photos(folder, echo=print) -> list[tuple[str, np.ndarray]]:
    photos = []
    for src, _ in list_inputs([folder])[0]:
        try:
            photos.append((str(src), load_rgb(src)))
        except READ_ERRORS as e:                                # a bad file is skipped, not timed
            echo(f"skipped {src}: {e}")
    return photos


def random_colorizer(model: str) -> Colorizer:
    """A class-head network with random weights over the in-gamut bins (our default decoding)."""
    from pipeline.bins import in_gamut_centers
    from trainer.models import create_model
    torch.manual_seed(0)
    centers = torch.tensor(in_gamut_centers(), dtype=torch.float32)
    net = create_model(model, len(centers), centers).eval()
    return Colorizer(model=net, loss="ce", prior=None, source=f"{model} (random weights)", device=torch.device("cpu"))


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_colorize(checkpoint: str = "", model: str = "eccv16", images: str = "", size: int = 256,
                   repeats: int = 3, echo=print) -> dict:
    """Returns the figures (also echoed as they come); the caller prints them as JSON."""
    from colorfast.onnx_export import to_onnx_proto
    from colorfast.onnx_runtime import load_onnx_colorizer, with_digest
    require("onnx", "onnxruntime", extra="onnx", what="`bench colorize`")
    photos = folder_photos(images, echo) if images else sample_photos()
    if not photos:
        raise ValueError(f"no photos to time in {images or 'the scikit-image data folder'}")
    mp = sum(rgb.shape[0] * rgb.shape[1] for _, rgb in photos) / 1e6
    sides = {"torch": load_colorizer(checkpoint, device="cpu", runtime="torch") if checkpoint
             else random_colorizer(model)}
    with tempfile.TemporaryDirectory() as tmp:
        t_export = _timed(lambda: (Path(tmp) / "m.onnx").write_bytes(
            with_digest(to_onnx_proto(sides["torch"]).SerializeToString())))     # as `export` writes it
        sides["onnx"] = load_onnx_colorizer(Path(tmp) / "m.onnx")
        echo(f"{len(photos)} photos, {mp:.2f} MP, network input {size} px; exported to ONNX in {t_export:.1f} s; "
             f"{sides['torch'].source}")
        Ls = [rgb_to_lab(rgb)[..., 0] for _, rgb in photos]
        delta = max(float(np.abs(predict_ab_full(sides["torch"], L, size) - predict_ab_full(sides["onnx"], L, size)).max())
                    for L in Ls)
        for name, col in sides.items():                       # warm-up: first calls allocate and pick kernels
            colorize_rgb(col, photos[0][1], size)
        totals = {k: [] for k in sides}
        nets = {k: [] for k in sides}
        for r in range(repeats):
            spent = dict.fromkeys(sides, 0.0)
            order = list(sides) if r % 2 == 0 else list(sides)[::-1]
            for (_, rgb), L in zip(photos, Ls):
                for name in order:
                    col = sides[name]
                    spent[name] += _timed(lambda: colorize_rgb(col, rgb, size))
                    x = net_input(L, size)
                    nets[name].append(_timed(lambda: col.predict_ab(x)) * 1e3)
            for name in sides:
                totals[name].append(spent[name] / mp)
            echo(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {totals[k][-1]:.3f} s/MP" for k in sides))
    s_mp = {k: statistics.median(v) for k, v in totals.items()}
    net_ms = {k: statistics.median(v) for k, v in nets.items()}
    return {"photos": len(photos), "megapixels": round(mp, 3), "size": size, "repeats": repeats,
            "model": sides["torch"].source, "export_s": round(t_export, 2),
            "torch_s_per_mp": round(s_mp["torch"], 4), "onnx_s_per_mp": round(s_mp["onnx"], 4),
            "torch_over_onnx": round(s_mp["torch"] / s_mp["onnx"], 3),
            "torch_net_ms": round(net_ms["torch"], 1), "onnx_net_ms": round(net_ms["onnx"], 1),
            "net_torch_over_onnx": round(net_ms["torch"] / net_ms["onnx"], 3),
            "max_abs_delta_ab": float(f"{delta:.3g}"), "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "loadavg": round(os.getloadavg()[0], 2)}
