"""Tiny dataset trees shaped like the distributions, and the tar files they ship as, for the archive tests.
A helper module, not a conftest.py (tests/conftest.py owns that name)."""
import io
import tarfile
from pathlib import Path

import numpy as np

from hostile_files import jpeg_bytes, photo

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "coffee", "astronaut")


def _image(i: int) -> bytes:
    """A distinct colour JPEG per i (photo, flip and crop vary), ~100x130 px."""
    rgb = photo(PHOTOS[i % len(PHOTOS)], h=96 + i % 3 * 8, w=128 + i % 4 * 8)
    return jpeg_bytes(np.ascontiguousarray(rgb[:, ::-1] if i % 2 else rgb))


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, payload in files.items():
            _add(tar, name, payload)
    return buf.getvalue()


def imagenet_files() -> dict[str, bytes]:
    """key -> bytes of a tiny ILSVRC2012: 2 classes of training images (one of them a truncated JPEG, one a PNG
    named .JPEG, as the real n02105855_2933.JPEG is) and 5 flat validation images."""
    files, i = {}, 0
    for wnid, n in (("n01440764", 4), ("n01443537", 3)):
        for j in range(n):
            files[f"train/{wnid}/{wnid}_{j + 1}.JPEG"] = _image(i)
            i += 1
    files["train/n01440764/n01440764_4.JPEG"] = files["train/n01440764/n01440764_4.JPEG"][:900]   # truncated
    import cv2
    files["train/n01443537/n01443537_3.JPEG"] = cv2.imencode(".png", photo("rocket")[..., ::-1])[1].tobytes()
    for v in range(1, 6):
        files[f"val/ILSVRC2012_val_{v:08d}.JPEG"] = _image(10 + v)
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for key, payload in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(payload)
    return root


def write_imagenet_tars(root: Path, files: dict[str, bytes]) -> Path:
    """ILSVRC2012_img_train.tar (a tar of per-class tars nXXXXXXXX.tar) and ILSVRC2012_img_val.tar (flat), as
    image-net.org distributes them."""
    root.mkdir(parents=True, exist_ok=True)
    classes: dict[str, dict[str, bytes]] = {}
    for key, payload in files.items():
        if key.startswith("train/"):
            _, wnid, name = key.split("/")
            classes.setdefault(wnid, {})[name] = payload
    (root / "ILSVRC2012_img_train.tar").write_bytes(
        tar_bytes({f"{wnid}.tar": tar_bytes(members) for wnid, members in sorted(classes.items())}))
    (root / "ILSVRC2012_img_val.tar").write_bytes(
        tar_bytes({k.split("/", 1)[1]: v for k, v in files.items() if k.startswith("val/")}))
    return root
