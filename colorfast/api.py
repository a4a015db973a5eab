"""The Python API, what `import colorfast` offers: load a checkpoint once, then colorize images in memory.

    import colorfast
    colorizer = colorfast.load("eccv16-released")        # or RUN_DIR/best.pt, model.safetensors, model.onnx
    colour = colorizer.colorize(image)                    # a PIL image, a numpy array or a path
    colour = colorfast.colorize(image, checkpoint="best.pt", temperature=0.5)    # load + colorize in one call
    guided = colorfast.load("siggraph17-released")        # a network that takes colour hints (SIGGRAPH17)
    colour = guided.colorize(image, hints=[{"x": 120, "y": 48, "color": "#2050c0"}])

What comes back is the kind of image that went in:
- a PIL image -> a PIL image: "RGBA" when the input has alpha (RGBA, LA, PA, a palette with transparency), its
  alpha unchanged; "RGB" otherwise (L, 1, P, CMYK, ... and the deep gray modes I;16, I and F, since Pillow has no
  deeper colour mode). Its pixels are taken as they are in memory (no EXIF rotation);
- a numpy array -> a numpy array of the same dtype and range: uint8 (0..255), uint16 (0..65535) or float
  (float16/32/64, 0..1). (H, W, 3) RGB and (H, W, 4) RGBA keep their shape (alpha unchanged); (H, W) gray comes
  back (H, W, 3), since a colour image has three channels. The input array is never modified;
- a path (str or pathlib.Path) -> a PIL image, the file decoded as the `colorize` command decodes it (any depth,
  EXIF orientation applied; "RGBA" when it has transparency).
A wrong dtype, shape or range (a float outside 0..1, NaN) is a ValueError of one line saying what was expected;
so is a file that is not an image (naming it), a temperature out of bounds, and hints that cannot be used.

The colours are the colorize command's (colorfast.photos.colorize_rgb): the network sees the whole image resized
to `size` x `size`, and its 1/4-resolution colours are rebuilt at the input's full resolution around the
input's own lightness, which the output keeps.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np
from PIL import Image

from colorfast.loader import load_colorizer
from colorfast.hints import Hint, HintError, load_hints, parse_hints
from colorfast.inputs import read_input, shown
from colorfast.outputs import load_alpha
from colorfast.photos import colorize_rgb
from pipeline.images import ImageError, load_rgb, pil_to_rgb, white_of

ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SHAPES = "(H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA, channels last"
_DTYPES = "uint8 (0..255), uint16 (0..65535) or float (0..1)"


class Colorizer:
    """A loaded checkpoint, ready to colorize (made by colorfast.load).

    `engine` is the colorfast.colorizer.Colorizer doing the work (torch or onnxruntime); `source`, `loss`,
    `device` and `runtime` say what was loaded and where it runs."""

    def __init__(self, engine):
        self.engine = engine

    source = property(lambda self: self.engine.source, doc="The file (or name) the checkpoint came from.")
    loss = property(lambda self: self.engine.loss, doc='"ce", "l2", "focal" or "focal-exact" (released: "ce").')
    device = property(lambda self: self.engine.device, doc="Where the network runs (a torch.device).")
    runtime = property(lambda self: self.engine.runtime, doc='"torch" or "onnx".')

    def describe(self, temperature: float | None = None) -> str:
        """One line: the decoding and upsampling colorize uses (at `temperature`, or this model's default)."""
        return self.engine.describe(temperature)

    def __repr__(self) -> str:
        return f"<colorfast.Colorizer {self.source}: {self.describe()}>"

    guided = property(lambda self: bool(getattr(self.engine, "guided", False)),
                      doc="True for a network that takes colour hints (SIGGRAPH17).")

    def colorize(self, image, temperature: float | None = None, *, size: int = 256, hints=None):
        """Colours for `image`: a PIL image, a numpy array or a path; returns the same kind (module docstring:
        (H, W) gray arrays come back (H, W, 3), paths come back as PIL images).

        temperature: the annealed mean's temperature for class models (lower: more vivid, patchier), a finite
        number in 0.01..100; None: the model's default (0.38 for colorfast checkpoints, 1 for the released
        weights). l2 models have none and ignore it.
        size: the side of the square the network sees (a multiple of 8); the output keeps the input's size.
        hints: colour hints for a guided network (`guided`): a list of dicts in the `colorize --hints` JSON
        format ({"x": px, "y": px, "color": "#rrggbb"} or "ab": [a, b], optional "size"; positions in the
        image's pixels), of colorfast.hints.Hint, or the path of such a JSON file. None or []: no hints."""
        self.engine.temperature_for(temperature)           # a bad temperature fails before any work
        hints = self._parse_hints(hints)
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 8 or size % 8:
            raise ValueError(f"size must be an int, a positive multiple of 8 (the network halves the side 3 times), "
                             f"got {size!r}")
        size = int(size)                                     # a numpy integer too
        if isinstance(image, (str, os.PathLike)):
            return self._colorize_file(Path(image), temperature, size, hints)
        if isinstance(image, Image.Image):
            return self._colorize_pil(image, temperature, size, hints)
        if isinstance(image, np.ndarray):
            return self._colorize_array(image, temperature, size, hints)
        raise ValueError(f"image must be a PIL image, a numpy array ({_SHAPES}) or a path, "
                         f"got {type(image).__name__}")

    def _colorize_array(self, image: np.ndarray, temperature, size: int, hints=()) -> np.ndarray:
        """The array rules of the module docstring; the colour channels are written into a new array."""
        check_array(image)
        H, W = image.shape[:2]
        rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        out = np.empty((H, W, 4 if image.ndim == 3 and image.shape[2] == 4 else 3), image.dtype)
        if out.shape[2] == 4:
            out[..., 3] = image[..., 3]
        colorize_rgb(self.engine, rgb, size, temperature, out=out[..., :3], hints=hints)
        return out

    def _parse_hints(self, hints) -> list[Hint]:
        if hints is None or isinstance(hints, (list, tuple)) and not hints:
            return []
        if not self.guided:
            raise HintError(f"{self.source}: this network takes no hints; hints need a guided checkpoint "
                            f"(colorfast.load('siggraph17-released'))")
        if isinstance(hints, (str, os.PathLike)):
            return load_hints(hints)
        if not isinstance(hints, (list, tuple)):
            raise HintError(f"hints must be a list of dicts or Hints, or a JSON file's path; got {type(hints).__name__}")
        try:
            return parse_hints(list(hints))
        except ValueError as e:
            raise HintError(str(e)) from None

    def _colorize_pil(self, image: Image.Image, temperature, size: int, hints=()) -> Image.Image:
        if image.mode in ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
            return Image.fromarray(self._colorize_array(np.asarray(image.convert("RGBA")), temperature, size, hints), "RGBA")
        if image.mode == "F":                            # float gray: checked for 0..1 and NaN like an array
            out = self._colorize_array(np.asarray(image, np.float32), temperature, size, hints)
            return Image.fromarray(np.rint(out * 255).astype(np.uint8), "RGB")
        return Image.fromarray(self._colorize_array(pil_to_rgb(image), temperature, size, hints), "RGB")

    def _colorize_file(self, path: Path, temperature, size: int, hints=()) -> Image.Image:
        """As the colorize command reads a file: a bounded read, decoded by content, alpha kept."""
        try:
            data = read_input(path)
            rgb = load_rgb(path, data=data)
        except ImageError as e:                          # "unknown format: ..." would not say which file
            raise ValueError(f"{shown(path)}: {e}") from None
        alpha = load_alpha(data, rgb.shape[:2])
        if alpha is None:
            return Image.fromarray(self._colorize_array(rgb, temperature, size, hints), "RGB")
        return Image.fromarray(self._colorize_array(np.dstack([rgb, alpha]), temperature, size, hints), "RGBA")


def check_array(image: np.ndarray) -> None:
    """ValueError in one line when `image` is not an image array colorize takes (module docstring)."""
    if image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] not in (3, 4):
        hint = " (channels first? use image.transpose(1, 2, 0))" if image.ndim == 3 and image.shape[0] in (3, 4) else ""
        raise ValueError(f"an image array must be {_SHAPES}; got shape {image.shape}{hint}")
    if 0 in image.shape:
        raise ValueError(f"an image array must have pixels; got shape {image.shape}")
    try:
        white_of(image.dtype)
    except ValueError:
        raise ValueError(f"an image array must be {_DTYPES}; got {image.dtype}") from None
    if image.dtype.kind == "f":
        bad = ~np.isfinite(image)
        if bad.any() or image.min() < 0 or image.max() > 1:
            seen = image[~bad]
            got = f"min {seen.min():g}, max {seen.max():g}" if seen.size else "no finite value"
            got += f", {np.count_nonzero(bad)} NaN or infinite value(s)" if bad.any() else ""
            raise ValueError(f"a float image array must hold finite values in [0, 1] (white is 1.0; for 0..255 "
                             f"pass uint8 or divide by 255); got {got}")

def load(checkpoint, device: str = "cpu", runtime: str = "auto") -> Colorizer:
    """A checkpoint -> Colorizer, ready to colorize.

    checkpoint: a file (a training checkpoint RUN_DIR/last.pt or best.pt, the released ECCV16 .pth state dict,
    an .onnx or .safetensors file written by `colorfast export`) or a name (`eccv16-released`, downloaded once
    into the torch hub cache). device: "cpu", "cuda" or "auto" (CUDA if visible). runtime: "auto" (onnxruntime
    for .onnx files, torch for the rest), "torch" or "onnx".
    Raises a one-line error naming the file when it cannot be loaded: trainer.checkpoint.CheckpointError or
    colorfast.hub.HubError (both ValueError), colorfast.extras.MissingExtra (an ImportError) without
    onnxruntime for an .onnx file."""
    return Colorizer(load_colorizer(checkpoint, device=device, runtime=runtime))


_last_loaded: dict = {}       # (checkpoint, device, runtime, file identity) -> Colorizer: the last one only


def colorize(image, checkpoint, temperature: float | None = None, *, device: str = "cpu", runtime: str = "auto",
             size: int = 256, hints=None):
    """load(checkpoint, device, runtime).colorize(image, temperature, size=size) in one call; see
    Colorizer.colorize for what image may be and what comes back. The last checkpoint loaded is kept, so a
    loop over images loads it once (a file is loaded again when it changes). `checkpoint` may also be a
    Colorizer from colorfast.load."""
    if isinstance(checkpoint, Colorizer):
        return checkpoint.colorize(image, temperature, size=size, hints=hints)
    key = (str(checkpoint), str(device), runtime, _identity(checkpoint))
    if key not in _last_loaded:
        colorizer = load(checkpoint, device=device, runtime=runtime)
        _last_loaded.clear()
        _last_loaded[key] = colorizer
    return _last_loaded[key].colorize(image, temperature, size=size, hints=hints)


def _identity(checkpoint) -> tuple:
    """What tells a rewritten checkpoint file from the one loaded before (a name: its cached file's own)."""
    try:
        st = os.stat(checkpoint)
    except (OSError, TypeError, ValueError):
        return ()
    return st.st_ino, st.st_size, st.st_mtime_ns
