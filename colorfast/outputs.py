"""Where colorize's outputs go and how they are written, without ever losing a file.

Safety rules, checked for the whole job before the first image is read:
- an output never replaces an input: when an output path is one of the inputs (`colorize cat.png --out .`
  in cat.png's folder), the job is refused and nothing is written. Writing beside it under another name was
  not chosen: the outputs would then sit among the inputs, and the next run over that folder would colorize
  its own outputs. For the same reason a folder's outputs never go into the folder itself (`colorize . --out
  ..`, check_out_folder), even when no name collides;
- an existing output file is replaced only when this output folder's job record says colorize wrote it from
  a source file that is an input of this job too, and it has not changed since (same inode, size and mtime):
  that is a rerun of the same job, and what it replaces is made again from the untouched input (under this
  name, or under the one it has now: x.jpg's output becomes x.jpg.png once an x.png joins it, see
  colorfast/inputs.py). Any other existing file is refused unless `--overwrite` is given (which still never
  touches an input);
- a file is never written where a folder is (or must go), nor a folder where a file is: `a.png` and a folder
  `a.png/` (existing, or both among the outputs) are refused whatever `--overwrite` says.
The record, OUT/.colorize-record.jsonl, gets one line per written file, appended before the file is renamed
into place, so a run killed at any point leaves no file that the next run would refuse as foreign.

Outputs are written to a temporary name and renamed (a killed run leaves no partial file under the final
name; SIGTERM removes the temporary file as Ctrl-C does: sigterm_raises). The image is encoded in memory
(cv2.imencode) and its bytes written by Python: cv2.imwrite crashes the process on a name that is not UTF-8.
A write that fails (disk full, no permission) raises WriteError naming the folder and the cause.
PNG is lossless; JPEG (quality 92) and WebP (quality 90) are for sharing: the colours come from a
1/4-resolution prediction, so chroma subsampling costs nothing visible. An alpha channel is kept in PNG and
WebP; JPEG has none, and the summary says how many inputs lost theirs.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import signal
import stat
import threading
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from colorfast.inputs import shown
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


class WriteError(OSError):
    """An output could not be written (disk full, no permission); str(e) is one line naming the folder."""


class Terminated(BaseException):
    """SIGTERM arrived (sigterm_raises). A BaseException, as KeyboardInterrupt is: only cleanup catches it."""


@contextlib.contextmanager
def sigterm_raises():
    """While active, SIGTERM raises Terminated where the program is, so the cleanup that Ctrl-C runs (the
    temporary files of atomic_write and of a video) runs for it too. Python's default for SIGTERM is to die
    without running any. Does nothing outside the main thread (signals cannot be caught there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise Terminated(signum)

    old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def write_failure(folder, error: OSError) -> WriteError:
    """One line naming `folder` and the cause: `cannot write into out/x: No space left on device (ENOSPC)`."""
    code = errno.errorcode.get(error.errno or 0)
    cause = (error.strerror or str(error)) + (f" ({code})" if code else "")
    failure = WriteError(f"cannot write into {shown(folder)}: {cause}")     # one argument: str() is just that
    failure.errno = error.errno
    return failure


# ---- alpha ---------------------------------------------------------------------------------------------
def load_alpha(source, shape: tuple[int, int]) -> np.ndarray | None:
    """(H, W) uint8 alpha of an image with transparency, oriented like load_rgb's output; None without one
    (or when Pillow cannot read it: the colours are still written, opaque). `source`: the file's bytes (colorize
    has read them already, bounded) or its path."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
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
    (a full-size BGR copy would double the memory): `img` is consumed.
    Raises WriteError when the file system refuses (naming the folder), ValueError when the format cannot hold
    the image (WebP is at most 16383 px a side)."""
    suffix, params, _ = FORMATS[fmt]
    order = [2, 1, 0, 3][: img.shape[2]]
    for y0 in range(0, img.shape[0], 256):
        img[y0:y0 + 256] = img[y0:y0 + 256][..., order]
    try:
        ok, encoded = cv2.imencode(suffix, img, params)
    except cv2.error as e:
        ok, encoded = False, str(e).strip().splitlines()[-1]
    if not ok:
        raise ValueError(f"cannot encode a {img.shape[1]} x {img.shape[0]} image as {fmt}"
                         + (f" ({encoded})" if isinstance(encoded, str) else ""))
    try:
        with atomic_write(path, suffix=".tmp" + suffix) as tmp:
            with open(tmp, "wb") as f:
                f.write(encoded.data)
            if before_rename:
                before_rename(tmp)
    except OSError as e:
        raise write_failure(Path(path).parent, e) from None


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

    def wrote(self, rel: Path, sources, existing: Path) -> bool:
        """True when the file at `existing` is one this record says colorize wrote at `rel` from one of
        `sources` (real paths of this job's inputs)."""
        ident = _identity(existing.stat())
        return any(s in sources and f == ident for s, f in self.entries.get(rel.as_posix(), []))

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
    or an existing file that is not this job's own earlier output (unless `overwrite`), or put a file where a
    folder is or must go (or the other way round)."""
    inputs = {}
    for src, _ in pairs:
        with contextlib.suppress(OSError):
            st = os.stat(src)
            inputs[(st.st_dev, st.st_ino)] = src
    sources = {os.path.realpath(src) for src, _ in pairs}
    onto_inputs, foreign, shapes = [], [], _file_folder_clashes(pairs, out_dir)
    for src, rel in pairs:
        target = out_dir / rel
        try:
            st = os.stat(target)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inputs:
            onto_inputs.append(f"{target} is the input {inputs[(st.st_dev, st.st_ino)]}")
        elif stat.S_ISDIR(st.st_mode):
            shapes.append(f"{target} is a folder")
        elif not overwrite and not record.wrote(rel, sources, target):
            foreign.append(str(target))
    if onto_inputs:
        raise OutputConflict(f"refusing to write over {len(onto_inputs)} input file(s): "
                             + _some(onto_inputs, "; ") + ". Choose an --out folder outside the inputs; nothing was "
                             "written.")
    if shapes:
        raise OutputConflict(f"{len(shapes)} output file(s) would take the place of a folder or need a folder where "
                             f"a file is: " + _some(shapes, "; ") + ". Rename or move one of them, or use another "
                             f"--out; nothing was written.")
    if foreign:
        raise OutputConflict(f"{len(foreign)} output(s) exist and were not written by this job (no record in "
                             f"{record.path}): " + _some(foreign, ", ")
                             + ". Use another --out, or --overwrite to replace them; nothing was written.")


def check_out_folder(inputs, out_dir: Path) -> None:
    """Raise OutputConflict when a folder given as input would get its outputs inside itself, among its own
    inputs: OUT/NAME is where folder NAME's outputs go, so that is --out being the folder's parent (`colorize
    photos --out .`, `colorize . --out ..`). The next run would take those outputs as inputs. --out inside the
    folder, or the folder itself, is fine: OUT and OUT/NAME are never walked (colorfast.photos.run)."""
    for item in inputs:
        folder = Path(os.path.abspath(item))
        if os.path.isdir(folder) and os.path.realpath(out_dir / folder.name) == os.path.realpath(folder):
            raise OutputConflict(f"--out {shown(out_dir)} would put the outputs of the folder {shown(folder)} into "
                                 f"that folder itself, among its inputs (a folder's outputs go into OUT/ITS_NAME); "
                                 f"choose another --out, e.g. {shown(folder / 'colorized')}; nothing was written.")


def _some(items: list[str], sep: str) -> str:
    return sep.join(map(shown, items[:5])) + (sep + "..." if len(items) > 5 else "")


def _file_folder_clashes(pairs, out_dir: Path) -> list[str]:
    """Outputs that are also the folder of another output, and existing non-folders where a folder must go."""
    targets = {rel for _, rel in pairs}
    folders = {parent for rel in targets for parent in rel.parents if parent != Path(".")}
    clashes = [f"{out_dir / rel} is both an output file and the folder of another" for rel in sorted(targets & folders)]
    for folder in sorted(folders - targets):
        if os.path.lexists(out_dir / folder) and not os.path.isdir(out_dir / folder):
            clashes.append(f"{out_dir / folder} is a file, where a folder of outputs must go")
    return clashes
