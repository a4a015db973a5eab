"""`bench scale` helpers: the synthetic images are reproducible colour photos, and bad --n is a usage error."""
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from colorfast.bench.scale import make_images
from pipeline.images import is_gray_ab, load_rgb, rgb_to_lab


def test_synthetic_images_are_reproducible_and_coloured(tmp_path):
    a = make_images(tmp_path / "a", 6, px=64, seed=3)
    b = make_images(tmp_path / "b", 3, px=64, seed=3, start=3)           # a later batch continues the series
    assert [p.read_bytes() for p in a[3:]] == [p.read_bytes() for p in b]
    assert len({p.read_bytes() for p in a}) == 6
    for p in a:
        rgb = load_rgb(p)
        assert rgb.shape[0] == 64 and 64 <= rgb.shape[1] <= 80
        assert not is_gray_ab(rgb_to_lab(rgb)[..., 1:], 5.0)             # none would be skipped as grayscale


def test_peak_rss_sees_memory_allocated_inside_the_block():
    """In a fresh interpreter: in the suite's process, descendants of earlier tests (loky workers, servers) that
    exit during the block take their RSS out of the sum and can hide the 128 MiB."""
    code = """if True:
        import numpy as np
        from colorfast.bench.scale import PeakRSS
        with PeakRSS(interval=0.01) as mem:
            before = mem.peak
            block = np.ones(128 * 2 ** 20, np.uint8)        # touched: fresh pages
        print(mem.peak - before)
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).parents[3])   # the repository root
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 100 * 2 ** 20


def test_bench_scale_rejects_a_tiny_n():
    from cli import cli
    r = CliRunner().invoke(cli, ["bench", "scale", "--n", "10"])
    assert r.exit_code == 2 and "--n must be at least" in r.output


def test_shard_copies_make_a_loadable_folder_of_the_asked_size_with_links(tmp_path):
    from pipeline import contract
    from colorfast.bench.scale import shard_copies
    from trainer.data import ShardDataset
    from trainer.synthetic import write_synthetic_shards
    base = write_synthetic_shards(tmp_path / "base", n=16, size=16, per_shard=8)
    assert shard_copies(base, tmp_path / "big", 80) == 80
    assert shard_copies(base, tmp_path / "small", 20, link_from=tmp_path / "big") == 16
    assert (tmp_path / "small" / "train-00001.h5").stat().st_ino == (tmp_path / "big" / "train-00001.h5").stat().st_ino
    ds = ShardDataset(tmp_path / "big", crop=16)
    assert len(ds) == 80 and len(ds.counts) == 10
    assert contract.read_manifest(tmp_path / "big")["counts"]["written"] == 80
