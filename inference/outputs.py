"""Where colorize's outputs go and how they are written, without ever losing a file.

Safety rules, checked for the whole job before the first image is read:
- an output never replaces an input: when an output path is one of the inputs (`colorize cat.png --out .`
  in cat.png's folder, or `colorize . --out ..`), the job is refused and nothing is written. Writing beside
  it under another name was not chosen: the outputs would then sit among the inputs, and the next run over
  that folder would colorize its own outputs;
- an existing output file is replaced only when this output folder's job record says colorize wrote it from
  the same source file and it has not changed since (same inode, size and mtime): that is a rerun of the
  same job, and what it replaces can be made again from the untouched input. Any other existing file is
  refused unless `--overwrite` is given (which still never touches an input).
The record, OUT/.colorize-record.jsonl, gets one line per written file, appended before the file is renamed
into place, so a run killed at any point leaves no file that the next run would refuse as foreign.

Outputs are written to a temporary name and renamed (a killed run leaves no partial file under the final
name). PNG is lossless; JPEG (quality 92) and WebP (quality 90) are for sharing: the colours come from a
1/4-resolution prediction, so chroma subsampling costs nothing visible. An alpha channel is kept in PNG and
WebP; JPEG has none, and the summary says how many inputs lost theirs.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from pipeline.contract import atomic_write
from pipeline.images import EXIF_ORIENTATION, orient

RECORD = ".colorize-record.jsonl"
FORMATS = {                       # --format -> (suffix, OpenCV encoder parameters, keeps alpha)
    "png": (".png", [], True),
    "jpg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 92], False),
    "webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90], True),
}


class OutputConflict(ValueError):
    """The job would replace an input or a file it did not write; nothing has been written."""


# ---- alpha ---------------------------------------------------------------------------------------------
def load_alpha(path, shape: tuple[int, int]) -> np.ndarray | None:
    """(H, W) uint8 alpha of an image with transparency, oriented like load_rgb's output; None without one
    (or when Pillow cannot read it: the colours are still written, opaque)."""
    try:
        with Image.open(path) as im:
            if "A" not in im.mode and "transparency" not in im.info:
                return None
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            alpha = np.asarray((im if im.mode in ("RGBA", "LA", "PA") else im.convert("RGBA")).getchannel("A"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    alpha = orient(alpha[..., None], orientation)[..., 0]
    return alpha if alpha.shape == tuple(shape) else None


def write_image(path: Path, img: np.ndarray, fmt: str, before_rename=None) -> None:
    """(H, W, 3) RGB or (H, W, 4) RGBA uint8 -> `path` in `fmt`, atomically; `before_rename(tmp_path)` is
    called once the file is complete. The channels are swapped to OpenCV's order in place, strip by strip
    (a full-size BGR copy would double the memory): `img` is consumed."""
    suffix, params, _ = FORMATS[fmt]
    order = [2, 1, 0, 3][: img.shape[2]]
    for y0 in range(0, img.shape[0], 256):
        img[y0:y0 + 256] = img[y0:y0 + 256][..., order]
    with atomic_write(path, suffix=".tmp" + suffix) as tmp:
        if not cv2.imwrite(str(tmp), img, params):
            raise OSError(f"could not write {path}")
        if before_rename:
            before_rename(tmp)


# ---- the job record --------------------------------------------------------------------------------------
def _identity(st: os.stat_result) -> list:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


class JobRecord:
    """OUT/.colorize-record.jsonl: {"out": relative path, "source": real path of the input, "file": identity}."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / RECORD
        self.entries: dict[str, list[tuple[str, list]]] = {}
        if self.path.exists():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    e = json.loads(line)
                    self.entries.setdefault(e["out"], []).append((e["source"], e["file"]))
                except (ValueError, KeyError, TypeError):    # a line cut short by a killed run
                    continue

    def wrote(self, rel: Path, source: Path, existing: Path) -> bool:
        """True when the file at `existing` is one this record says colorize wrote at `rel` from `source`."""
        ident = _identity(existing.stat())
        src = os.path.realpath(source)
        return any(s == src and f == ident for s, f in self.entries.get(rel.as_posix(), []))

    def add(self, rel: Path, source: Path, tmp_file: Path) -> None:
        """Record the file about to be renamed to `rel` (a rename keeps inode, size and mtime)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"out": rel.as_posix(), "source": os.path.realpath(source),
                           "file": _identity(tmp_file.stat())})
        with open(self.path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())


def check_outputs(pairs: list[tuple[Path, Path]], out_dir: Path, record: JobRecord | None, overwrite: bool) -> None:
    """Raise OutputConflict (naming up to 5 files) when writing `pairs` under `out_dir` would replace an input,
    or an existing file that is not this job's own earlier output (unless `overwrite`)."""
    inputs = {}
    for src, _ in pairs:
        with contextlib.suppress(OSError):
            st = os.stat(src)
            inputs[(st.st_dev, st.st_ino)] = src
    onto_inputs, foreign = [], []
    for src, rel in pairs:
        target = out_dir / rel
        try:
            st = os.stat(target)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inputs:
            onto_inputs.append(f"{target} is the input {inputs[(st.st_dev, st.st_ino)]}")
        elif not overwrite and not record.wrote(rel, src, target):
            foreign.append(str(target))
    if onto_inputs:
        raise OutputConflict(f"refusing to write over {len(onto_inputs)} input file(s): "
                             + "; ".join(onto_inputs[:5]) + ("; ..." if len(onto_inputs) > 5 else "")
                             + ". Choose an --out folder outside the inputs; nothing was written.")
    if foreign:
        raise OutputConflict(f"{len(foreign)} output(s) exist and were not written by this job (no record in "
                             f"{record.path}): " + ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
                             + ". Use another --out, or --overwrite to replace them; nothing was written.")
