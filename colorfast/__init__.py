"""colorfast: Zhang-style automatic colorization (ECCV 2016): train on HDF5 shards, colorize, evaluate, serve.

The Python API (colorfast/api.py has the details):

    import colorfast
    colorizer = colorfast.load("eccv16-released")       # a file (.pt, .pth, .safetensors, .onnx) or a name
    colour = colorizer.colorize(image, temperature=None) # a PIL image, a numpy array or a path
    colour = colorfast.colorize(image, checkpoint="best.pt")

colorize returns the kind of image it was given: PIL in, PIL out; a numpy array (uint8, uint16 or float in
0..1; (H, W) gray, (H, W, 3) or (H, W, 4) RGBA) in, an array of the same dtype and range out ((H, W) gray in:
(H, W, 3) out; alpha kept); a path in, a PIL image out.

Importing colorfast is light: torch and the rest load on the first use of load, colorize or Colorizer
(PEP 562 module __getattr__), so the `colorfast` command's --help stays instant. The commands themselves
(`colorfast --help`, `python -m colorfast`) are cli.py's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["Colorizer", "colorize", "load"]

if TYPE_CHECKING:                                    # for editors and type checkers; never run
    from colorfast.api import Colorizer, colorize, load


def __getattr__(name: str):
    if name in __all__:
        from colorfast import api
        value = globals()[name] = getattr(api, name)
        return value
    raise AttributeError(f"module 'colorfast' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
