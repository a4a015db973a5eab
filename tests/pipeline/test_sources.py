"""Changed inputs, stale shards (issue 19, item 8): every shard records what each input was made from, a rerun of
the same command rewrites the shards whose inputs changed (and only those), and `verify --sources` lists changed or
missing inputs. Shards written before sources were recorded still load, verify and are reused."""
import io
import os
import zipfile

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from archive_trees import _image, tar_bytes
from cli import cli
from pipeline import contract
from pipeline.config import PrepConfig
from pipeline.preprocess import encode_image, run
from pipeline.verify import verify_folder


def _cfg(root, out, dataset="folder", **kw):
    return PrepConfig(**{"dataset": dataset, "root": str(root), "out_dir": str(out), "size": 32, "min_side": 16,
                         "shard_size": 2, "jobs": 1, "test_fraction": 0.0, **kw})


def _files(root, n=6):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"{i}.jpg").write_bytes(_image(i))
    return root


def _identity(out):
    """shard file -> (inode, mtime_ns): an atomic rewrite gives a new inode."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(out.glob("*.h5"))}


def _holder(out, key):
    """(shard file, index) of the sample stored under `key`."""
    for p in sorted(out.glob("*.h5")):
        with contract.Shard(p) as sh:
            if key in sh.keys():
                return p.name, sh.keys().index(key)
    raise AssertionError(f"{key} is in no shard")


def _stored_l(out, key):
    name, i = _holder(out, key)
    with contract.Shard(out / name) as sh:
        return sh.L[i]


def _verify_sources(out, deep=False):
    return CliRunner().invoke(cli, ["verify", "--sources-deep" if deep else "--sources", str(out)])


@pytest.mark.parametrize("rerun", ["same", "overwrite", "larger limit"])
def test_a_replaced_input_is_reported_then_its_shard_alone_is_rewritten(tmp_path, rerun):
    root, out = _files(tmp_path / "in"), tmp_path / "out"
    cfg = _cfg(root, out)
    run(_cfg(root, out, limit=4) if rerun == "larger limit" else cfg, progress=False)
    r = _verify_sources(out)
    assert r.exit_code == 0 and "shard(s) unchanged (size and mtime)" in r.output, r.output
    key = sorted(k for p in out.glob("*.h5") for k in contract.Shard(p).keys())[0]
    holder, _ = _holder(out, key)
    old_l = _stored_l(out, key)
    (root / key).write_bytes(_image(9))                         # repaired or replaced: same name, other image
    r = _verify_sources(out)
    assert r.exit_code == 1, r.output
    assert f"{out / holder}: {key}: changed: " in r.output and "1 problem(s) with its inputs" in r.output
    before = _identity(out)

    result = run(cfg, progress=False, overwrite=rerun == "overwrite")
    assert list(result.changed) == [holder] and result.reused == len(before) - 1
    assert f"rewrote 1 shard(s) whose inputs changed since they were written (1 input(s), e.g. {key}: changed:" \
        in result.summary()
    after = _identity(out)
    assert after[holder] != before[holder]
    assert {k: after[k] for k in before if k != holder} == {k: v for k, v in before.items() if k != holder}
    new_l = _stored_l(out, key)
    assert not np.array_equal(new_l, old_l)
    assert np.array_equal(new_l, encode_image(root / key, cfg)[0])
    assert verify_folder(out) == []
    assert _verify_sources(out).exit_code == 0
    assert run(cfg, progress=False).reused == len(after)        # and a third run has nothing to redo


def test_a_deleted_input_is_reported_and_a_rerun_leaves_it_out(tmp_path):
    root, out = _files(tmp_path / "in"), tmp_path / "out"
    run(_cfg(root, out), progress=False)
    holder, _ = _holder(out, "2.jpg")
    (root / "2.jpg").unlink()
    r = _verify_sources(out)
    assert r.exit_code == 1 and f"{out / holder}: 2.jpg: missing" in r.output, r.output
    result = run(_cfg(root, out), progress=False)
    assert result.seen == 5 and "2.jpg" not in {k for p in out.glob("*.h5") for k in contract.Shard(p).keys()}
    assert _verify_sources(out).exit_code == 0


def test_same_size_new_bytes_with_the_old_mtime_are_found_by_deep_only(tmp_path):
    """`cp -p` of another file of the same size: stat cannot see it, the recorded digest can."""
    root, out = _files(tmp_path / "in"), tmp_path / "out"
    run(_cfg(root, out), progress=False)
    path = root / "4.jpg"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                                 # inside the scan: still a decodable JPEG
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert _verify_sources(out).exit_code == 0
    r = _verify_sources(out, deep=True)
    assert r.exit_code == 1 and "4.jpg: changed: content differs (same size and mtime)" in r.output, r.output


def test_a_changed_tar_member_rewrites_its_shard_and_an_untouched_tar_is_reused(tmp_path):
    root, out = tmp_path / "wds", tmp_path / "out"
    root.mkdir()
    files = {f"{i:06d}.jpg": _image(i) for i in range(6)}
    (root / "shard-train-000.tar").write_bytes(tar_bytes(files))
    cfg = _cfg(root, out, dataset="webdataset")
    first = run(cfg, progress=False)
    with contract.Shard(out / _holder(out, "000002.jpg")[0]) as sh:
        recorded = {s.key: s for s in sh.sources()}["000002.jpg"]
    assert recorded.archive == str(root / "shard-train-000.tar") and recorded.offset > 0 and recorded.crc == -1
    assert run(cfg, progress=False).reused == first.shards          # same tar: nothing to redo

    (root / "shard-train-000.tar").write_bytes(tar_bytes({**files, "000002.jpg": _image(11)}))
    r = _verify_sources(out)
    assert r.exit_code == 1 and "000002.jpg: changed:" in r.output, r.output
    holder, _ = _holder(out, "000002.jpg")
    before = _identity(out)
    result = run(cfg, progress=False)
    assert holder in result.changed and _identity(out)[holder] != before[holder]
    new = tmp_path / "000002.jpg"
    new.write_bytes(_image(11))
    assert np.array_equal(_stored_l(out, "000002.jpg"), encode_image(new, cfg)[0])
    assert _verify_sources(out, deep=True).exit_code == 0


def _zip(path, files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    path.write_bytes(buf.getvalue())


def test_a_changed_zip_entry_rewrites_only_its_shard_by_its_crc(tmp_path):
    """A zip's central directory gives each entry's CRC-32 for free: a rewritten zip only costs the shards
    whose entries changed."""
    root, out = tmp_path / "coco", tmp_path / "out"
    root.mkdir()
    files = {f"train2017/{i:012d}.jpg": _image(i) for i in range(6)}
    _zip(root / "train2017.zip", files)
    cfg = _cfg(root, out, dataset="coco")
    run(cfg, progress=False)
    key = "train2017/000000000001.jpg"
    _zip(root / "train2017.zip", {**files, key: _image(10)})
    r = _verify_sources(out)
    assert r.exit_code == 1 and f"{key}: changed: the zip entry's size or CRC-32 differs" in r.output, r.output
    assert r.output.count("changed:") == 1
    holder, _ = _holder(out, key)
    before = _identity(out)
    result = run(cfg, progress=False)
    assert list(result.changed) == [holder]
    after = _identity(out)
    assert [k for k in after if after[k] != before[k]] == [holder]
    assert _verify_sources(out, deep=True).exit_code == 0


def test_shards_without_recorded_sources_still_load_verify_and_are_reused_with_a_note(tmp_path):
    root, out = _files(tmp_path / "in"), tmp_path / "out"
    cfg = _cfg(root, out)
    first = run(cfg, progress=False)
    for p in out.glob("*.h5"):                                   # as written before sources were recorded
        with h5py.File(p, "r+") as h:
            del h[contract.SOURCES]
    with contract.Shard(next(out.glob("*.h5"))) as sh:
        assert sh.sources() is None and len(sh.keys()) == len(sh)
    assert verify_folder(out) == []
    (root / "3.jpg").write_bytes(_image(9))                     # not detectable: nothing recorded to compare with
    r = _verify_sources(out)
    assert r.exit_code == 0, r.output
    assert f"{first.shards} shard(s) predate recorded sources and were not checked" in r.output
    result = run(cfg, progress=False)
    assert result.reused == first.shards and result.unrecorded == first.shards and not result.changed
    assert f"{first.shards} reused shard(s) predate recorded sources" in result.summary()


def test_every_input_is_recorded_the_skipped_ones_too(tmp_path):
    """A skipped input (here truncated) is recorded as well, so repairing it rewrites its shard."""
    root, out = _files(tmp_path / "in", 4), tmp_path / "out"
    good = (root / "1.jpg").read_bytes()
    (root / "1.jpg").write_bytes(good[:300])
    (root / "copy.jpg").write_bytes(good)
    cfg = _cfg(root, out)
    run(cfg, progress=False)
    recorded = {s.key: s for p in out.glob("*.h5") for s in contract.read_sources(p)}
    assert set(recorded) == {"0.jpg", "1.jpg", "2.jpg", "3.jpg", "copy.jpg"}
    assert recorded["1.jpg"].size == 300 and recorded["1.jpg"].digest     # skipped as truncated, still recorded
    assert len(recorded["0.jpg"].digest) == 32
    (root / "1.jpg").write_bytes(good)                          # repaired
    result = run(cfg, progress=False)
    assert len(result.changed) == 1 and result.skipped == 0 and result.written == 5


def test_a_tar_changed_in_place_counts_as_changed_for_its_members(tmp_path):
    """Member offsets and sizes stay when bytes are patched in place: the tar's own size and mtime tell, and every
    member of it counts as changed (telling which would mean reading them all)."""
    root, out = tmp_path / "wds", tmp_path / "out"
    root.mkdir()
    tar = root / "shard-train-000.tar"
    tar.write_bytes(tar_bytes({f"{i:06d}.jpg": _image(i) for i in range(4)}))
    cfg = _cfg(root, out, dataset="webdataset")
    first = run(cfg, progress=False)
    with contract.Shard(out / _holder(out, "000001.jpg")[0]) as sh:
        at = {s.key: s for s in sh.sources()}["000001.jpg"]
    data = bytearray(tar.read_bytes())
    data[at.offset + at.size // 2] ^= 0xFF
    tar.write_bytes(bytes(data))
    os.utime(tar, ns=(at.archive_mtime_ns + 10**9, at.archive_mtime_ns + 10**9))   # a coarse clock still moves
    r = _verify_sources(out)
    assert r.exit_code == 1 and f"000001.jpg: changed: its archive {tar} was modified" in r.output, r.output
    assert len(run(cfg, progress=False).changed) == first.shards


def test_a_damaged_sources_table_is_named_and_a_rerun_rewrites_its_shard(tmp_path):
    root, out = _files(tmp_path / "in", 4), tmp_path / "out"
    cfg = _cfg(root, out)
    run(cfg, progress=False)
    victim = sorted(out.glob("*.h5"))[0]
    with h5py.File(victim, "r+") as h:
        del h[contract.SOURCES]
        h[contract.SOURCES] = np.arange(3)                      # not the table
    r = _verify_sources(out)
    assert r.exit_code == 1 and f"{victim}: '{contract.SOURCES}' is not the table" in r.output, r.output
    assert "Traceback" not in r.output
    assert list(run(cfg, progress=False).changed) == [victim.name]
    assert _verify_sources(out).exit_code == 0


@pytest.mark.parametrize("limit", [0, 5])
def test_a_new_input_is_reported_until_a_rerun_adds_it(tmp_path, limit):
    root, out = _files(tmp_path / "in", 4), tmp_path / "out"
    cfg = _cfg(root, out, limit=limit)
    run(cfg, progress=False)
    (root / "new.jpg").write_bytes(_image(7))
    r = _verify_sources(out)
    assert r.exit_code == 1, r.output
    assert f"{out}: 1 input(s) the dataset lists now are in no shard (e.g. new.jpg); a rerun adds them" in r.output
    assert run(cfg, progress=False).seen == 5
    assert _verify_sources(out).exit_code == 0
