"""Colorize photos at full resolution with a trained checkpoint (`cli.py colorize`).

Per image (any size, colour or grayscale; an old scan is the main case):

    rgb (H, W, 3) uint8 -> L, strip by strip, resized (whole image, no crop) to size x size, each axis with
    the filter its own factor calls for -> network -> ab (2, size/4, size/4)
    -> colorfast.full_resolution.rebuild_rgb: ab upsampled to (H, W) by the colorizer's mode (bilinear for
    released weights, bicubic for ours), chroma pulled into the sRGB gamut, Lab -> RGB, in strips of bounded
    memory -> PNG (or JPEG/WebP), alpha kept

so the output has the input's size and its lightness, and only the colour comes from the network, as in
the reference demo (richzhang/colorization `postprocess_tens`). A guided network (SIGGRAPH17) gives ab at the
full size x size and takes `--hints` for one photo (colorfast/hints.py: hint planes at size x size).
Memory: the decoded photo (3 bytes a pixel;
`run` writes the output over it when it is writable, as OpenCV's JPEG decode is) plus ~50 MB of strips,
whatever the size, and the encoded output (its file size) while it is written: outputs.write_image encodes in
memory, since cv2.imwrite crashes on a name that is not UTF-8 and gives no cause when a write fails.
One bad file, or one that cannot be written (disk full, no permission), is reported in one line and the
others are still done; outputs never replace inputs or files of another job (colorfast/outputs.py). A folder
given as input writes into OUT/ITS_NAME; OUT and those folders are never read as inputs, so `colorize photos
--out photos` (into photos/photos/) can be rerun like any job.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.images import load_rgb
from pipeline.progress import progress, write as progress_write
from colorfast.full_resolution import (STRIP_PIXELS, fit_gamut, lab_to_rgb_in_gamut, lightness_strips,  # noqa: F401
                                       rebuild_rgb, resize_width, upsample_ab_rows, widen_ab)
from colorfast.inputs import READ_ERRORS, list_inputs, read_input, report_unreadable, shown
from colorfast.outputs import (FORMATS, JobRecord, WriteError, check_out_folder, check_outputs, load_alpha,
                               sigterm_raises, write_image)

NET_STRIDE = 8                   # the network halves the side three times, so its input side is a multiple of 8


@dataclass(frozen=True)
class ColorizeConfig:
    inputs: tuple = ()               # image files and/or folders (searched recursively)
    checkpoint: str = ""             # our checkpoint (last.pt) or a released ECCV16 state dict
    out: str = "artifacts/colorized"
    size: int = 256                  # side of the square L the network sees
    temperature: float | None = None  # annealed mean for CE/focal models (None: the colorizer's default); L2 ignores it
    device: str = "auto"             # auto | cpu | cuda
    runtime: str = "auto"            # auto (.onnx files: onnxruntime) | torch | onnx
    format: str = "png"              # png | jpg | webp (colorfast.outputs.FORMATS)
    overwrite: bool = False          # replace existing outputs this job did not write (never an input)
    smooth: int = 5                  # videos: frames of ab averaged over time (colorfast/video.py); 1: off
    hints: tuple | None = None       # colorfast.hints.Hint of the one photo, for a guided checkpoint


@dataclass
class ColorizeResult:
    written: list = field(default_factory=list)      # output paths
    failed: list = field(default_factory=list)       # (input path, one-line reason)
    ignored: int = 0                                 # files in folders that are not images
    alpha_dropped: int = 0                           # inputs with transparency written in a format without it
    decoding: str = ""                               # Colorizer.describe(): temperature and upsampling used

    def summary(self) -> str:
        s = f"colorized {len(self.written)} image(s), {len(self.failed)} failed"
        s += f", {self.ignored} non-image file(s) in folders ignored" if self.ignored else ""
        s += f", {self.alpha_dropped} lost their transparency (JPEG has none)" if self.alpha_dropped else ""
        return s + (f"; {self.decoding}" if self.decoding else "")


# ---- the colour of one image --------------------------------------------------------------------------
def axis_interpolation(src: int, dst: int) -> int:
    """OpenCV filter for one axis resized from src to dst px: area when it shrinks 2x or more (every source
    pixel counts: no aliasing), bilinear when it shrinks less (as pipeline.images.resize_center_crop),
    bicubic when it grows."""
    if src >= 2 * dst:
        return cv2.INTER_AREA
    return cv2.INTER_LINEAR if src > dst else cv2.INTER_CUBIC


def _resize_width(L: np.ndarray, size: int) -> np.ndarray:
    """(h, W) -> (h, size), the same bytes for a row whatever strip it is in (cv2's area filter is; its
    bilinear and bicubic ones are not, hence full_resolution.resize_width)."""
    interp = axis_interpolation(L.shape[1], size)
    if interp == cv2.INTER_AREA:
        return cv2.resize(L, (size, L.shape[0]), interpolation=interp)
    return resize_width(L, size, cubic=interp == cv2.INTER_CUBIC)


def _resize_height(L: np.ndarray, size: int) -> torch.Tensor:
    small = cv2.resize(L, (L.shape[1], size), interpolation=axis_interpolation(L.shape[0], size))
    return torch.from_numpy(np.clip(small, 0, 100))[None, None]


def net_input(L: np.ndarray, size: int) -> torch.Tensor:
    """L (H, W) float32 in L* units -> (1, 1, size, size): the whole image, no crop. Width and height are
    resized one after the other, each with its own filter, so a 200 x 2000 strip is area-averaged along its
    long side even though its short side is enlarged (one filter for both would alias one of them)."""
    return _resize_height(_resize_width(L, size), size)


def net_input_rgb(rgb: np.ndarray, size: int, strip_pixels: int = STRIP_PIXELS) -> torch.Tensor:
    """(H, W, 3) uint8 -> net_input of its L, the same tensor bit for bit, computed strip by strip so that no
    full-size float copy of the image exists (the width pass is row by row)."""
    rows = [_resize_width(L, size) for _, _, L in lightness_strips(rgb, strip_pixels)]
    return _resize_height(np.concatenate(rows), size)


def _cubic(colorizer) -> bool:
    """The colorizer's upsampling mode (colorfast.colorizer.Colorizer.upsample); bicubic for one without it."""
    return getattr(colorizer, "upsample", "bicubic") == "bicubic"


@torch.no_grad()
def predict_ab_small(colorizer, x: torch.Tensor, temperature: float | None, planes=None) -> np.ndarray:
    """(1, 1, size, size) L -> the network's ab (2, size/4, size/4) float32 on the CPU ((2, size, size) for a
    guided network). planes: hint planes at size x size (colorfast.hints.hint_planes), guided networks only."""
    if planes is None:                # colorizers that take no hints (onnx_runtime) have no `hints` argument
        return colorizer.predict_ab(x, temperature=temperature)[0].float().cpu().numpy()
    return colorizer.predict_ab(x, temperature=temperature, hints=planes)[0].float().cpu().numpy()


def predict_ab_full(colorizer, L: np.ndarray, size: int, temperature: float | None = None) -> np.ndarray:
    """L (H, W) float32 -> ab (H, W, 2) float32 upsampled from the network's 1/4 output by the colorizer's
    mode (colorizer.upsample). Holds the whole ab in memory (8 bytes a pixel); colorize_rgb does not need it."""
    ab = predict_ab_small(colorizer, net_input(L, size), temperature)
    cubic = _cubic(colorizer)
    return upsample_ab_rows(widen_ab(ab, L.shape[1], cubic), L.shape[0], 0, L.shape[0], cubic)


def colorize_rgb(colorizer, rgb: np.ndarray, size: int = 256, temperature: float | None = None, *,
                 out: np.ndarray | None = None, strip_pixels: int = STRIP_PIXELS, between=None,
                 hints=None) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 with the input's lightness and the network's colours.
    `out`: where to write it (may be `rgb` itself, or rgba[..., :3]); see full_resolution.rebuild_rgb.
    `between(stage)`: called after the network, before the full-resolution rebuild (serve stops there when
    the client has gone). `hints`: colorfast.hints.Hint list in rgb's pixels (a guided colorizer)."""
    planes = None
    if hints:
        from colorfast.hints import hint_planes
        planes = hint_planes(list(hints), rgb.shape[:2], (size, size))
    ab = predict_ab_small(colorizer, net_input_rgb(rgb, size, strip_pixels), temperature, planes)
    if between is not None:
        between("after the network, before the full-resolution rebuild")
    return rebuild_rgb(rgb, ab, out=out, strip_pixels=strip_pixels, cubic=_cubic(colorizer))


def save_png(path: Path, rgb: np.ndarray) -> None:
    """Lossless, so the saved lightness is the computed one up to 8-bit rounding. Atomic; `rgb` is kept."""
    write_image(Path(path), rgb.copy(), "png")


# ---- many images ----------------------------------------------------------------------------------------
def colorize_image(colorizer, rgb: np.ndarray, alpha: np.ndarray | None, cfg: ColorizeConfig,
                   between=None) -> np.ndarray:
    """Colorize over the decoded pixels (so one full-size array) and reattach alpha if the format keeps it.
    rgb (H, W, 3) uint8 (consumed), alpha (H, W) uint8 or None -> (H, W, 3 or 4) uint8 RGB(A).
    `between`: see colorize_rgb."""
    if alpha is not None and FORMATS[cfg.format][2]:
        out = np.empty(rgb.shape[:2] + (4,), np.uint8)
        out[..., 3] = alpha
        colorize_rgb(colorizer, rgb, cfg.size, cfg.temperature, out=out[..., :3], between=between, hints=cfg.hints)
        return out
    # Pillow's arrays are read-only views of its bytes (their decode already peaked higher); OpenCV's are ours
    return colorize_rgb(colorizer, rgb, cfg.size, cfg.temperature, out=rgb if rgb.flags.writeable else None,
                        between=between, hints=cfg.hints)


def run(cfg: ColorizeConfig, colorizer=None) -> ColorizeResult:
    """Colorize every input into cfg.out. `colorizer` is loaded from cfg.checkpoint unless given.
    Raises OutputConflict, before loading anything, when an output would replace an input or a foreign file;
    ValueError for a temperature out of bounds (trainer.decode.check_temperature); outputs.Terminated on
    SIGTERM, after removing the file being written."""
    out_dir = Path(cfg.out)
    suffix, _, keeps_alpha = FORMATS[cfg.format]
    from colorfast.video import colorize_videos, split_videos    # video files named explicitly go there
    videos, photos = split_videos(cfg.inputs)
    if cfg.hints is not None:
        check_hinted_inputs(cfg.inputs, videos)
    check_out_folder(photos, out_dir)
    own = [out_dir] + [out_dir / Path(os.path.abspath(p)).name for p in photos if os.path.isdir(p)]
    pairs, ignored, unusable = list_inputs(photos, exclude=own, suffix=suffix)
    record = JobRecord(out_dir)
    check_outputs(pairs + videos, out_dir, record, cfg.overwrite)
    if colorizer is None:
        from colorfast.colorizer import load_colorizer
        colorizer = load_colorizer(cfg.checkpoint, device=cfg.device, runtime=cfg.runtime, announce=True)
    if cfg.hints is not None and not getattr(colorizer, "guided", False):
        from colorfast.hints import HintError
        raise HintError(f"{cfg.checkpoint}: this network takes no hints; --hints needs a guided checkpoint "
                        f"(siggraph17-released or a siggraph17 run)")
    result = ColorizeResult(ignored=ignored, decoding=colorizer.describe(cfg.temperature))
    for path, reason in unusable:
        progress_write(f"error: {shown(path)}: {reason}")
        result.failed.append((str(path), reason))
    with sigterm_raises():
        for src, rel in progress(pairs, desc="colorize", unit="img", disable=len(pairs) < 2):
            if colorize_file(colorizer, src, rel, cfg, record, keeps_alpha, result):
                result.written.append(out_dir / rel)
        colorize_videos(colorizer, videos, out_dir, cfg, result, record)
    return result


def check_hinted_inputs(inputs, videos) -> None:
    """Hints are positions in one photo: HintError unless the inputs are exactly one photo file."""
    from colorfast.hints import HintError
    if len(inputs) != 1 or videos or os.path.isdir(inputs[0]):
        what = "a video" if videos else "a folder" if len(inputs) == 1 else f"{len(inputs)} inputs"
        raise HintError(f"--hints are positions in one photo; give exactly one photo file, not {what}")


def colorize_file(colorizer, src: Path, rel: Path, cfg: ColorizeConfig, record: JobRecord, keeps_alpha: bool,
                  result: ColorizeResult) -> bool:
    """One photo into cfg.out / rel; False (reported in one line, in result.failed) when it cannot be read or
    written."""
    try:
        data = read_input(src)                            # a bounded read of a regular file
        rgb = load_rgb(src, data=data)
    except READ_ERRORS as e:                             # a bad file, not a bug: report it and go on
        result.failed.append(report_unreadable(src, e))
        return False
    if cfg.hints:                                        # a mistake in the hints, not a bad photo: stop here
        from colorfast.hints import check_inside
        check_inside(list(cfg.hints), rgb.shape[:2], f"{shown(src)}: ")
    alpha = load_alpha(data, rgb.shape[:2])
    del data
    result.alpha_dropped += alpha is not None and not keeps_alpha
    img = colorize_image(colorizer, rgb, alpha, cfg)
    del rgb                                              # img may be rgb itself; no second full-size copy
    try:
        write_image(Path(cfg.out) / rel, img, cfg.format, before_rename=lambda tmp: record.add(rel, src, tmp))
    except (WriteError, ValueError) as e:                # disk full, no permission, too large for the format
        result.failed.append(report_unreadable(src, e))
        return False
    return True
