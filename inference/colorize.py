"""Colorize photos at full resolution with a trained checkpoint (`cli.py colorize`).

Per image (any size, colour or grayscale; an old scan is the main case):

    rgb (H, W, 3) uint8 -> Lab; L (H, W) is kept as it is
    L resized (whole image, no crop) to size x size -> network -> ab (2, size/4, size/4)
    ab upsampled bicubically to (H, W) -> chroma pulled into the sRGB gamut -> Lab (H, W, 3) -> RGB, PNG

so the output has the input's size and its lightness, and only the colour comes from the network, as in
the reference demo (richzhang/colorization `postprocess_tens`). Pulling out-of-gamut colours towards gray
(keeping L and hue) replaces the plain clipping of RGB, which would change the lightness of saturated
pixels. One bad file is reported in one line and the others are still written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline.images import ImageError, lab_to_rgb, load_rgb, rgb_to_lab
from trainer.decode import DEFAULT_TEMPERATURE

# Suffixes picked up when a folder is given; a file named explicitly is always tried, whatever its name.
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jp2",
                  ".pbm", ".pgm", ".ppm", ".pnm"}
NET_STRIDE = 8                   # the network halves the side three times, so its input side is a multiple of 8


@dataclass(frozen=True)
class ColorizeConfig:
    inputs: tuple = ()               # image files and/or folders (searched recursively)
    checkpoint: str = ""             # our checkpoint (last.pt) or a released ECCV16 state dict
    out: str = "artifacts/colorized"
    size: int = 256                  # side of the square L the network sees
    temperature: float = DEFAULT_TEMPERATURE  # annealed mean for CE/focal models; ignored by L2 models
    device: str = "auto"             # auto | cpu | cuda


@dataclass
class ColorizeResult:
    written: list = field(default_factory=list)      # output paths
    failed: list = field(default_factory=list)       # (input path, one-line reason)
    ignored: int = 0                                 # files in folders whose suffix is not an image's

    def summary(self) -> str:
        s = f"colorized {len(self.written)} image(s), {len(self.failed)} failed"
        return s + (f", {self.ignored} non-image file(s) in folders ignored" if self.ignored else "")


# ---- the colour of one image --------------------------------------------------------------------------
def _in_gamut(lab_pts: np.ndarray, tol: float) -> np.ndarray:
    """(n, 3) Lab -> (n,) bool: converting to sRGB needs no clipping (OpenCV clips, so round-trip)."""
    img = lab_pts.reshape(-1, 1, 3).astype(np.float32)
    back = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_Lab2RGB), cv2.COLOR_RGB2Lab)
    return np.abs(back - img).reshape(-1, 3).max(1) <= tol


def fit_gamut(L: np.ndarray, ab: np.ndarray, iters: int = 8, tol: float = 0.25) -> np.ndarray:
    """Scale each out-of-gamut pixel's ab towards 0 (same L, same hue) until its colour is displayable.
    L (H, W), ab (H, W, 2) float32 -> ab (H, W, 2); per-pixel bisection on the scale in [0, 1]."""
    lab = np.dstack([L, ab]).reshape(-1, 3)
    bad = ~_in_gamut(lab, tol)
    if not bad.any():
        return ab
    pts = lab[bad]
    lo, hi = np.zeros(len(pts), np.float32), np.ones(len(pts), np.float32)    # ab = 0 (gray) is in gamut
    for _ in range(iters):
        mid = (lo + hi) / 2
        ok = _in_gamut(np.column_stack([pts[:, 0], pts[:, 1:] * mid[:, None]]), tol)
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    out = ab.reshape(-1, 2).copy()
    out[bad] = pts[:, 1:] * lo[:, None]
    return out.reshape(ab.shape)


def net_input(L: np.ndarray, size: int) -> torch.Tensor:
    """L (H, W) float32 in L* units -> (1, 1, size, size); area-averaged when shrinking."""
    H, W = L.shape
    interp = cv2.INTER_AREA if size <= min(H, W) else cv2.INTER_CUBIC
    small = cv2.resize(L, (size, size), interpolation=interp)
    return torch.from_numpy(np.clip(small, 0, 100))[None, None]


@torch.no_grad()
def predict_ab_full(colorizer, L: np.ndarray, size: int, temperature: float) -> np.ndarray:
    """L (H, W) float32 -> ab (H, W, 2) float32 upsampled bicubically from the network's 1/4 output."""
    ab = colorizer.predict_ab(net_input(L, size), temperature=temperature)     # (1, 2, size/4, size/4)
    ab = ab[0].float().cpu().numpy().transpose(1, 2, 0)
    return cv2.resize(ab, (L.shape[1], L.shape[0]), interpolation=cv2.INTER_CUBIC)


def lab_to_rgb_in_gamut(L: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """L (H, W), ab (H, W, 2) float32 -> (H, W, 3) uint8, chroma pulled into gamut so L is kept."""
    return lab_to_rgb(np.dstack([L, fit_gamut(L, ab)]).astype(np.float32))


def colorize_rgb(colorizer, rgb: np.ndarray, size: int = 256, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 with the input's lightness and the network's colours."""
    L = rgb_to_lab(rgb)[..., 0]
    return lab_to_rgb_in_gamut(L, predict_ab_full(colorizer, L, size, temperature))


def save_png(path: Path, rgb: np.ndarray) -> None:
    """Lossless, so the saved lightness is the computed one up to 8-bit rounding."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


# ---- many images ----------------------------------------------------------------------------------------
def list_inputs(inputs, exclude: Path | None = None) -> tuple[list[tuple[Path, Path]], int, list]:
    """Expand files and folders into (input path, output path relative to --out) pairs.

    Folders are walked recursively (hidden entries and `exclude`, the output folder, skipped) and keep
    their relative layout; names that would collide get a numeric suffix. Returns the pairs, the count
    of folder files ignored for their suffix, and (path, reason) for inputs that do not exist."""
    pairs, ignored, missing = [], 0, []
    exclude = exclude.resolve() if exclude else None
    for item in map(Path, inputs):
        if item.is_dir():
            item = Path(os.path.abspath(item))          # so that "." still names its folder in the output
            for dirpath, dirnames, filenames in os.walk(item):
                here = Path(dirpath)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                     and (here / d).resolve() != exclude)
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    if Path(name).suffix.lower() not in IMAGE_SUFFIXES:
                        ignored += 1
                        continue
                    pairs.append((here / name, (here / name).relative_to(item.parent)))
        elif item.is_file():
            pairs.append((item, Path(item.name)))
        else:
            missing.append((item, "no such file or folder"))
    seen, unique = set(), []
    for src, rel in pairs:
        out, n = rel.with_suffix(".png"), 1
        while out in seen:
            out, n = rel.with_name(f"{rel.stem}-{n}.png"), n + 1
        seen.add(out)
        unique.append((src, out))
    return unique, ignored, missing


def run(cfg: ColorizeConfig, colorizer=None) -> ColorizeResult:
    """Colorize every input into cfg.out. `colorizer` is loaded from cfg.checkpoint unless given."""
    if colorizer is None:
        from inference.colorizer import load_colorizer
        colorizer = load_colorizer(cfg.checkpoint, device=cfg.device)
    out_dir = Path(cfg.out)
    pairs, ignored, missing = list_inputs(cfg.inputs, exclude=out_dir)
    result = ColorizeResult(ignored=ignored)
    for path, reason in missing:
        tqdm.write(f"error: {path}: {reason}")
        result.failed.append((str(path), reason))
    for src, rel in tqdm(pairs, desc="colorize", unit="img", disable=len(pairs) < 2):
        try:
            rgb = load_rgb(src)
        except (ImageError, OSError, ValueError) as e:   # a bad file, not a bug: report it and go on
            reason = str(e) or type(e).__name__
            tqdm.write(f"error: {src}: {reason}")
            result.failed.append((str(src), reason))
            continue
        save_png(out_dir / rel, colorize_rgb(colorizer, rgb, cfg.size, cfg.temperature))
        result.written.append(out_dir / rel)
    return result
