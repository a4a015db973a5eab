"""Hostile inputs and faults, round three (issue 19), preprocessing side: file names that are not UTF-8,
decompression bombs, files that are not regular files, HDF5_PLUGIN_PATH set as README advises, temporary files
of other programs, workers orphaned by a killed run, and tar names stored twice."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


def _env(plugin_path: bool) -> dict:
    import hdf5plugin
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HDF5_PLUGIN_PATH", None)
    if plugin_path:
        env["HDF5_PLUGIN_PATH"] = hdf5plugin.PLUGIN_PATH
    return env


ROUND_TRIP = """
import numpy as np, sys
from pipeline import contract
rng = np.random.default_rng(0)
arr = dict(L=rng.integers(0, 256, (2, 16, 16), dtype=np.uint8), ab=rng.normal(0, 30, (2, 2, 4, 4)).astype(np.float16),
           nn_idx=rng.integers(0, 262, (2, 5, 4, 4)).astype(np.uint16),
           nn_w=rng.random((2, 5, 4, 4)).astype(np.float16), keys=["a.jpg", "b.jpg"])
for storage in contract.STORAGE:
    contract.write_shard(f"{sys.argv[1]}/{storage}.h5", **arr, storage=storage)
    with contract.open_shard(f"{sys.argv[1]}/{storage}.h5") as sh:
        for name in contract.ARRAYS:
            np.testing.assert_array_equal(sh.read(slice(None))[name], arr[name])
print("round trip ok")
"""


@pytest.mark.parametrize("plugin_path", [False, True], ids=["plain", "HDF5_PLUGIN_PATH"])
def test_every_storage_writes_with_or_without_hdf5_plugin_path(tmp_path, plugin_path):
    """README tells plain-h5py readers to set HDF5_PLUGIN_PATH to hdf5plugin's folder; with it set, HDF5 found
    blosc there as a bare plugin whose calls into HDF5 were never wired up, and every blosc write failed."""
    proc = subprocess.run([sys.executable, "-c", ROUND_TRIP, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=_env(plugin_path), cwd=ROOT)
    assert proc.returncode == 0 and "round trip ok" in proc.stdout, proc.stderr[-2000:]
    # and the CLI of the issue: preprocess --storage blosc-lz4, then a plain-h5py read of what it wrote
    from hostile_files import jpeg_bytes, photo
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        (photos / f"{i}.jpg").write_bytes(jpeg_bytes(photo(name)))
    out = tmp_path / "out"
    proc = _cli("preprocess", "folder", "--root", photos, "--out", out, "--size", 64, "--jobs", 1,
                "--storage", "blosc-lz4", env=_env(plugin_path))
    assert proc.returncode == 0 and "3 written" in proc.stdout, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# ---- decompression bombs ----------------------------------------------------------------------------------
def _jpeg_declaring(w: int, h: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is patched to declare w x h pixels."""
    import struct

    from hostile_files import jpeg_bytes, photo
    data = bytearray(jpeg_bytes(photo("coffee")))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


BOMBS = """
import re, sys
from pathlib import Path
from pipeline.config import PrepConfig
from pipeline.datasets import list_dataset
from pipeline.preprocess import encode_image
cfg = PrepConfig(size=64)
print(encode_image(Path(sys.argv[1]) / "bomb.png", cfg))
listing = list_dataset("coco", sys.argv[1])
key = "train2017/000000000001.jpg"
print(encode_image(Path(sys.argv[1]) / key, cfg, listing.members[key]))
# VmHWM, this process's own peak: ru_maxrss would carry the forking parent's (pytest's) peak across exec
print(int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read())[1]) // 1024)
"""


def test_bombs_are_skipped_before_they_are_inflated_or_decoded(tmp_path):
    """A 1.2 MB PNG declaring 20000 x 20000 px (decoded by OpenCV after Pillow refused it: 2.3 GB of peak RSS),
    and a zip entry declaring 1 MiB that inflates to 2 GiB (inflated whole before any check: 4.1 GB): skipped
    with their reasons, in a process that stays small."""
    from hostile_files import png_bomb, zip_bomb
    (tmp_path / "bomb.png").write_bytes(png_bomb(20000, 20000))
    (tmp_path / "train2017.zip").write_bytes(zip_bomb("train2017/000000000001.jpg", 1 << 20, 2 << 30))
    proc = subprocess.run([sys.executable, "-c", BOMBS, str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env=_env(False), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png, zipped, peak_mib = proc.stdout.strip().splitlines()
    assert png.startswith("too large: png of 400.0 MP, over --max-pixels 178,956,970"), png
    assert zipped.startswith("undecodable:") and "inflates past the 1,048,576 bytes its header declares" in zipped
    assert int(peak_mib) < 400, f"peak RSS {peak_mib} MiB"


def test_max_pixels_skips_by_the_header_of_every_format_and_the_run_goes_on(tmp_path):
    from PIL import Image

    from hostile_files import jpeg_bytes, photo, png_bomb
    from pipeline.config import PrepConfig
    from pipeline.preprocess import run
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        (photos / f"{i}.jpg").write_bytes(jpeg_bytes(photo(name)))                      # 128 x 96 px
    (photos / "big.jpg").write_bytes(_jpeg_declaring(12000, 11000))          # the JPEG fast path (OpenCV)
    (photos / "big.png").write_bytes(png_bomb(12500, 12000))                  # 150 MP: under the default
    Image.fromarray(photo("rocket", 200, 300)).save(photos / "wide.bmp")      # 60,000 px
    cfg = PrepConfig(dataset="folder", root=str(photos), out_dir=str(tmp_path / "a"), size=64, jobs=1,
                     max_pixels=50_000)
    result = run(cfg, progress=False)
    reasons = {s["key"]: s["reason"] for s in json.loads((tmp_path / "a" / "manifest.json").read_text())["skipped"]}
    assert result.written == 3 and set(reasons) == {"big.jpg", "big.png", "wide.bmp"}, reasons
    assert reasons["big.jpg"].startswith("too large: jpeg of 12000x11000 px = 132.0 MP, over --max-pixels 50,000")
    assert reasons["big.png"].startswith("too large: png of 12500x12000 px = 150.0 MP, over --max-pixels 50,000")
    assert reasons["wide.bmp"].startswith("too large: bmp of 300x200 px = 0.1 MP, over --max-pixels 50,000")
    # the CLI's option, and a recorded config
    proc = _cli("preprocess", "folder", "--root", photos, "--out", tmp_path / "b", "--size", 64, "--jobs", 1,
                "--max-pixels", 70_000, env=_env(False))
    assert proc.returncode == 0 and "4 written, 2 skipped" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]["max_pixels"] == 70_000


# ---- file names that are not UTF-8 -------------------------------------------------------------------------
def test_keys_of_names_that_are_not_utf8_are_utf8_and_map_back_one_to_one():
    from pipeline.keys import key_of_name, name_of_key
    names = [b"caf\xe9.jpg", b"a/b.jpg", "café/ü.jpg".encode(), b"a\\b.jpg", b"a\\x41.jpg", b"x\xe9\\x5c\xff.png"]
    keys = [key_of_name(os.fsdecode(n)) for n in names]
    assert keys[:4] == ["caf\\xe9.jpg", "a/b.jpg", "café/ü.jpg", "a\\b.jpg"]   # valid names are their own keys
    assert len(set(keys)) == len(names) and all(k.encode("utf-8") for k in keys)
    assert [os.fsencode(name_of_key(k)) for k in keys] == names


def _photos_with_latin1_names(root: Path) -> dict[bytes, str]:
    """Photos in a tree whose file and folder names are partly Latin-1 bytes; returns {name: photo}."""
    from hostile_files import jpeg_bytes, photo
    files = {b"0.jpg": "astronaut", b"caf\xe9.jpg": "coffee", b"r\xe9sum\xe9/chat.jpg": "chelsea",
             b"r\xe9sum\xe9/fus\xe9e.png": "rocket"}
    for name, what in files.items():
        path = os.fsencode(root) + b"/" + name
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(jpeg_bytes(photo(what)))
    return files


def _keys_and_first_pixels(out: Path) -> dict[str, bytes]:
    from pipeline import contract
    found = {}
    for path in contract.shard_paths(out):
        with contract.open_shard(path) as sh:
            found.update({k: sh.L[i].tobytes() for i, k in enumerate(sh.keys())})
    return found


def test_folder_and_webdataset_keep_files_whose_names_are_not_utf8(tmp_path):
    """`preprocess folder` stopped with a UnicodeEncodeError traceback in the hash split; a webdataset tar with
    Latin-1 member names likewise. Now every file is a sample, keyed by an escaped UTF-8 name that leads back to
    it, and the tar gives the same samples as the tree it was made of."""
    import tarfile

    from pipeline.keys import name_of_key
    tree = tmp_path / "tree"
    files = _photos_with_latin1_names(tree)
    proc = _cli("preprocess", "folder", "--root", tree, "--out", tmp_path / "a", "--size", 64, "--jobs", 1,
                env=_env(False))
    assert proc.returncode == 0 and "4 written, 0 skipped" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    folder = _keys_and_first_pixels(tmp_path / "a")
    assert sorted(folder) == ["0.jpg", "caf\\xe9.jpg", "r\\xe9sum\\xe9/chat.jpg", "r\\xe9sum\\xe9/fus\\xe9e.png"]
    assert sorted(os.fsencode(name_of_key(k)) for k in folder) == sorted(files)
    assert all((tree / name_of_key(k)).is_file() for k in folder)
    # the same files in a GNU tar whose member names are Latin-1 bytes
    wds = tmp_path / "wds"
    wds.mkdir()
    with tarfile.open(wds / "shard-000000.tar", "w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for name in files:
            tar.add(os.fsdecode(os.fsencode(tree) + b"/" + name), arcname=os.fsdecode(name))
    assert b"caf\xe9.jpg\0" in (wds / "shard-000000.tar").read_bytes()             # Latin-1 bytes, as named
    proc = _cli("preprocess", "webdataset", "--root", wds, "--out", tmp_path / "b", "--size", 64, "--jobs", 1,
                env=_env(False))
    assert proc.returncode == 0 and "4 written, 0 skipped" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert _keys_and_first_pixels(tmp_path / "b") == folder


# ---- files that are not regular files ---------------------------------------------------------------------
def test_fifos_devices_and_dangling_links_are_recorded_skips_not_hangs(tmp_path):
    """A FIFO named b.jpg blocked the read forever; a link to /dev/zero was read until memory ran out. Now each
    is one skip with its reason, and the photos beside them are written; a FIFO among webdataset shards is left
    out with one line on stderr."""
    import tarfile

    from hostile_files import jpeg_bytes, photo
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        (photos / f"{i}.jpg").write_bytes(jpeg_bytes(photo(name)))
    os.mkfifo(photos / "b.jpg")
    (photos / "zero.png").symlink_to("/dev/zero")
    (photos / "gone.jpg").symlink_to(photos / "nowhere.jpg")
    proc = _cli("preprocess", "folder", "--root", photos, "--out", tmp_path / "a", "--size", 64, "--jobs", 1,
                env=_env(False), timeout=120)
    assert proc.returncode == 0 and "3 written, 3 skipped" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    reasons = {s["key"]: s["reason"] for s in json.loads((tmp_path / "a" / "manifest.json").read_text())["skipped"]}
    assert reasons["b.jpg"] == f"not a regular file: {photos / 'b.jpg'} is a FIFO (named pipe)"
    assert reasons["zero.png"] == f"not a regular file: {photos / 'zero.png'} is a character device"
    assert reasons["gone.jpg"].startswith("missing:")
    # webdataset: a FIFO and a link to /dev/zero named like shards beside a real one
    wds = tmp_path / "wds"
    wds.mkdir()
    with tarfile.open(wds / "shard-000000.tar", "w") as tar:
        for i in range(3):
            tar.add(photos / f"{i}.jpg", arcname=f"{i:06d}.jpg")
    os.mkfifo(wds / "shard-000001.tar")
    (wds / "shard-000002.tar").symlink_to("/dev/zero")
    proc = _cli("preprocess", "webdataset", "--root", wds, "--out", tmp_path / "b", "--size", 64, "--jobs", 1,
                env=_env(False), timeout=120)
    assert proc.returncode == 0 and "3 written, 0 skipped" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "webdataset: skipped shard-000001.tar: not a regular file (a FIFO)" in proc.stderr
    assert "webdataset: skipped shard-000002.tar: not a regular file (a character device)" in proc.stderr


# ---- temporary files ---------------------------------------------------------------------------------------
def test_a_rerun_removes_only_its_own_temporary_files(tmp_path):
    """A killed write's temporary is ours and goes; another program's .train-00000.h5.backup.tmp stays."""
    from hostile_files import jpeg_bytes, photo
    from pipeline.config import PrepConfig
    from pipeline.preprocess import run
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, name in enumerate(("astronaut", "coffee", "chelsea")):
        (photos / f"{i}.jpg").write_bytes(jpeg_bytes(photo(name)))
    cfg = PrepConfig(dataset="folder", root=str(photos), out_dir=str(tmp_path / "out"), size=64, jobs=1)
    run(cfg, progress=False)
    out = tmp_path / "out"
    theirs = [out / ".train-00000.h5.backup.tmp", out / ".prior.npz.x.tmp", out / ".manifest.json.colorfast.tmp"]
    for p in theirs:
        p.write_text("another program's")
    ours = out / ".train-00000.h5.colorfast-4242-k1ll3d.tmp"
    ours.write_bytes(b"half a shard")
    assert run(cfg, progress=False).reused == 2
    assert [p.name for p in theirs if not p.exists()] == [], "another program's temporary file deleted"
    assert not ours.exists()


# ---- workers of a killed run -------------------------------------------------------------------------------
def test_workers_exit_when_preprocess_is_killed(tmp_path):
    """kill -9 of preprocess --jobs 2 left its loky workers running for minutes, writing more shards. Now they
    are gone within a second or two, and no shard appears after the kill."""
    import signal
    import time

    import psutil

    from colorfast.bench.scale import make_images
    make_images(tmp_path / "photos", 64, px=256)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "preprocess", "folder", "--root",
                             str(tmp_path / "photos"), "--out", str(out), "--size", "256", "--shard-size", "4",
                             "--jobs", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(False))
    try:
        deadline = time.monotonic() + 240
        while not list(out.glob("*.h5")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert proc.poll() is None and len(children) >= 2, "the run ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    shards = set(out.glob("*.h5"))
    time.sleep(3)
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    for c in alive:                                     # leave nothing behind, whatever the outcome
        c.kill()
    assert not alive, f"{len(alive)} worker process(es) outlived the killed run"
    assert set(out.glob("*.h5")) == shards, "a shard was written after the run was killed"


ORPHAN = """
import sys
import numpy as np
from pipeline import contract, parallel
parallel._parent = -1                  # as in a worker whose run was killed: getppid() is no longer its pid
L, ab = np.zeros((1, 8, 8), np.uint8), np.zeros((1, 2, 2, 2), np.float16)
idx, w = np.zeros((1, 5, 2, 2), np.uint16), np.full((1, 5, 2, 2), 0.2, np.float16)
contract.write_shard(sys.argv[1], L, ab, idx, w, ["k"], before_commit=parallel.exit_if_orphaned)
print("committed")
"""


def test_a_worker_whose_run_is_gone_never_commits_its_shard(tmp_path):
    """The watch thread can wait through a whole in-memory shard build (h5py holds the GIL), so the rename itself
    asks: a worker whose parent is gone exits there, and the shard never appears (its temporary is ours)."""
    target = tmp_path / "train-00000.h5"
    proc = subprocess.run([sys.executable, "-c", ORPHAN, str(target)], capture_output=True, text=True, timeout=120,
                          env=_env(False), cwd=ROOT)
    assert proc.returncode == 1 and "committed" not in proc.stdout, (proc.returncode, proc.stdout, proc.stderr)
    assert not target.exists()


# ---- names stored twice in a tar --------------------------------------------------------------------------
def test_a_name_stored_twice_is_its_later_copy_in_webdataset_and_nested_tars(tmp_path, monkeypatch):
    """`tar x` leaves the later copy of a name on disk; webdataset kept the first. A per-class tar stored twice
    in ILSVRC2012_img_train.tar: the later one alone, as extracting the outer tar leaves it, in whatever order
    the listing workers finish (here: the last first)."""
    import io
    import tarfile

    from archive_trees import tar_bytes
    from pipeline.archives import read_member
    from pipeline.datasets import list_dataset
    wds = tmp_path / "wds"
    wds.mkdir()
    (wds / "shard-000000.tar").write_bytes(tar_bytes({"000001.jpg": b"old", "000001.cls": b"0", "000002.jpg": b"b"}))
    with tarfile.open(wds / "shard-000000.tar", "a") as tar:
        info = tarfile.TarInfo("000001.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"new"))
    listing = list_dataset("webdataset", str(wds))
    assert sorted(k for k, _ in listing.items) == ["000001.jpg", "000002.jpg"]
    assert read_member(listing.members["000001.jpg"]) == b"new"

    imagenet = tmp_path / "imagenet"
    imagenet.mkdir()
    (imagenet / "ILSVRC2012_img_train.tar").write_bytes(tar_bytes({
        "n01.tar": tar_bytes({"n01_1.JPEG": b"old", "n01_2.JPEG": b"gone"}), "n02.tar": tar_bytes({"n02_1.JPEG": b"2"})}))
    with tarfile.open(imagenet / "ILSVRC2012_img_train.tar", "a") as tar:
        again = tar_bytes({"n01_1.JPEG": b"new"})
        info = tarfile.TarInfo("n01.tar")
        info.size = len(again)
        tar.addfile(info, io.BytesIO(again))
    import pipeline.parallel
    in_order = pipeline.parallel.imap_unordered
    monkeypatch.setattr(pipeline.parallel, "imap_unordered", lambda *a, **kw: reversed(list(in_order(*a, **kw))))
    listing = list_dataset("imagenet", str(imagenet))
    assert sorted(k for k, _ in listing.items) == ["train/n01/n01_1.JPEG", "train/n02/n02_1.JPEG"]
    assert read_member(listing.members["train/n01/n01_1.JPEG"]) == b"new"


def test_list_files_naming_files_that_are_not_utf8_key_them_as_the_files_are(tmp_path):
    """SUN397's lists are text: a Latin-1 line (read strictly, a UnicodeDecodeError) names the same key as the
    file it names."""
    from pipeline.datasets import list_dataset
    from pipeline.keys import name_of_key
    (tmp_path / "a" / "abbey").mkdir(parents=True)
    (tmp_path / "a" / "abbey" / os.fsdecode(b"caf\xe9.jpg")).write_bytes(b"x")
    (tmp_path / "Training_01.txt").write_bytes(b"/a/abbey/caf\xe9.jpg\n")
    (tmp_path / "Testing_01.txt").write_bytes(b"/a/abbey/other.jpg\n")
    listing = list_dataset("sun_scenes", str(tmp_path))
    assert listing.items == (("a/abbey/caf\\xe9.jpg", "train"), ("a/abbey/other.jpg", "test"))
    assert (tmp_path / name_of_key(listing.items[0][0])).read_bytes() == b"x"
