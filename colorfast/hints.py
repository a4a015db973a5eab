"""Colour hints for a guided network (SIGGRAPH17): `colorize PHOTO --checkpoint siggraph17-released --hints FILE`.

The file is a JSON list, one object a hint, positions in the input photo's pixels (x to the right, y down,
0-based, fractions allowed):

    [{"x": 120, "y": 48, "color": "#2050c0"},            # the colour's a and b (its lightness is ignored)
     {"x": 300, "y": 210, "ab": [40, -10], "size": 12}]   # a and b directly (-110..110); "size": patch side, px

A hint sets a square patch of the network's input as the reference does (richzhang/colorization's demo and
richzhang/interactive-deep-colorization's GUI: the hint's ab into input_B, 1 into mask_B over the patch; later
hints over earlier ones). Without "size" the patch is the GUI's: 5 x 5 pixels of the network input (its
point of half-width 2 at 256 x 256), whatever the photo's size; with it, a square of `size` photo pixels,
resized with the photo to the network input (at least one pixel a side).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.images import rgb_to_lab

DEFAULT_NET_PATCH = 5            # network pixels: interactive-deep-colorization's point (2 * 2 + 1 at 256)
AB_LIMIT = 110.0                 # the network's ab range (hints are divided by 110 inside)
KEYS = {"x", "y", "color", "ab", "size"}
_HEX = re.compile(r"#[0-9a-fA-F]{6}")


class HintError(ValueError):
    """Hints that cannot be used: a bad file, a point outside the photo, a network that takes none."""


@dataclass(frozen=True)
class Hint:
    x: float                     # photo pixels
    y: float
    ab: tuple[float, float]      # ab units
    size: float | None = None    # patch side in photo pixels; None: DEFAULT_NET_PATCH network pixels


def color_ab(color: str) -> tuple[float, float]:
    """'#rrggbb' -> its (a, b) in CIE Lab (D65, as the pipeline converts photos)."""
    if not isinstance(color, str) or not _HEX.fullmatch(color):
        raise ValueError(f"color {color!r} is not of the form '#rrggbb'")
    rgb = np.array([[[int(color[i:i + 2], 16) for i in (1, 3, 5)]]], np.uint8)
    lab = rgb_to_lab(rgb)[0, 0]
    return float(lab[1]), float(lab[2])


def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def parse_hint(obj) -> Hint:
    """One JSON object (or a Hint, returned as it is) -> Hint; ValueError (one line) for a bad one."""
    if isinstance(obj, Hint):
        return obj
    if not isinstance(obj, dict):
        raise ValueError(f"expected an object {{\"x\", \"y\", \"color\" or \"ab\"}}, got {type(obj).__name__}")
    unknown = sorted(set(obj) - KEYS)
    missing = [k for k in ("x", "y") if k not in obj]
    if unknown or missing:
        raise ValueError(f"unknown key(s) {unknown}" if unknown else f"missing {' and '.join(missing)}")
    if ("color" in obj) == ("ab" in obj):
        raise ValueError("give exactly one of \"color\" (\"#rrggbb\") and \"ab\" ([a, b])")
    if "color" in obj:
        ab = color_ab(obj["color"])
    else:
        v = obj["ab"]
        if not isinstance(v, list) or len(v) != 2:
            raise ValueError(f"ab must be a list [a, b], got {v!r}")
        ab = (_number(v[0], "ab[0]"), _number(v[1], "ab[1]"))
        if max(abs(ab[0]), abs(ab[1])) > AB_LIMIT:
            raise ValueError(f"ab {v} is outside -{AB_LIMIT:g}..{AB_LIMIT:g}")
    size = None
    if obj.get("size") is not None:
        size = _number(obj["size"], "size")
        if size <= 0:
            raise ValueError(f"size must be positive, got {obj['size']!r}")
    return Hint(_number(obj["x"], "x"), _number(obj["y"], "y"), ab, size)


def parse_hints(data) -> list[Hint]:
    """A decoded JSON document -> hints; ValueError naming the entry for a bad one."""
    if not isinstance(data, list):
        raise ValueError(f"expected a JSON list of hints, got {type(data).__name__}")
    hints = []
    for i, obj in enumerate(data):
        try:
            hints.append(parse_hint(obj))
        except ValueError as e:
            raise ValueError(f"hint {i}: {e}") from None
    return hints


def load_hints(path) -> list[Hint]:
    """A hints file -> hints; HintError (a ValueError) in one line, naming the file, for one that is unreadable, not JSON or
    not in the format above."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise HintError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HintError(f"{path}: not a JSON file ({str(e).splitlines()[0][:120]})") from None
    except RecursionError:                      # "[[[[...": deeper than the JSON parser's stack
        raise HintError(f"{path}: not a list of hints (nested too deeply)") from None
    try:
        return parse_hints(data)
    except ValueError as e:
        raise HintError(f"{path}: {e}") from None


def check_inside(hints: list[Hint], photo_hw: tuple[int, int], where: str = "") -> None:
    """HintError naming the first hint outside a photo of (H, W) pixels."""
    H, W = photo_hw
    for i, h in enumerate(hints):
        if not (0 <= h.x < W and 0 <= h.y < H):
            raise HintError(f"{where}hint {i} at ({h.x:g}, {h.y:g}) is outside the {W} x {H} photo")


def net_pixel(v: float, photo_side: int, net_side: int) -> int:
    """A photo coordinate along a side of `photo_side` pixels -> the network input's pixel along `net_side`, with
    pixel centres aligned as the resize that makes the input aligns them."""
    return min(net_side - 1, max(0, round((v + 0.5) * net_side / photo_side - 0.5)))


def hint_planes(hints: list[Hint], photo_hw: tuple[int, int], net_hw: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hints in photo pixels -> (hint_ab (1, 2, h, w) ab units, hint_mask (1, 1, h, w)) at the network input's
    (h, w), which is the whole photo resized (colorfast.net_input.net_input). A point maps with pixel centres
    aligned, as the resize does; its patch is clipped to the image. Raises HintError for a hint outside."""
    check_inside(hints, photo_hw)
    (H, W), (h, w) = photo_hw, net_hw
    hint_ab, mask = torch.zeros(1, 2, h, w), torch.zeros(1, 1, h, w)
    for hint in hints:
        cx, cy = net_pixel(hint.x, W, w), net_pixel(hint.y, H, h)
        sx, sy = (DEFAULT_NET_PATCH, DEFAULT_NET_PATCH) if hint.size is None else \
            (max(1, round(hint.size * w / W)), max(1, round(hint.size * h / H)))    # the photo's square, resized
        x0, y0 = cx - (sx - 1) // 2, cy - (sy - 1) // 2
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x0 + sx), min(h, y0 + sy)
        hint_ab[0, :, y0:y1, x0:x1] = torch.tensor(hint.ab, dtype=torch.float32)[:, None, None]
        mask[0, :, y0:y1, x0:x1] = 1.0
    return hint_ab, mask
