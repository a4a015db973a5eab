"""Optional extras (setup.cfg [options.extras_require]): a missing one is a one-line instruction, not a traceback.

    ort, = require("onnxruntime", extra="onnx", what="--runtime onnx")

The base install (torch, OpenCV, ...) stays lean; `pip install 'colorfast[onnx]'` (or web, video) adds what a
command needs. cli.py turns MissingExtra into its message and exit code 1.
"""
from __future__ import annotations

import importlib


class MissingExtra(ImportError):
    """A module of an optional extra is not installed; the message says what to pip-install."""


def require(*modules: str, extra: str, what: str) -> list:
    """Import `modules` and return them; MissingExtra naming the extra if any cannot be imported."""
    found, missing = [], []
    for name in modules:
        try:
            found.append(importlib.import_module(name))
        except ImportError:                  # ModuleNotFoundError, or a broken install of that package
            missing.append(name)
    if missing:
        raise MissingExtra(f"{what} needs {', '.join(missing)}, which is not installed: "
                           f"pip install 'colorfast[{extra}]'")
    return found
