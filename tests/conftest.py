import sys
from pathlib import Path

import setuptools  # noqa: F401  (first: setuptools' distutils shim must be in place before anything imports
                   #  distutils; torch.compile's CPU backend imports setuptools late, and in one full run that
                   #  found the standard library's distutils already loaded and failed its own assertion)
import hdf5plugin  # noqa: F401  (registers zstd/blosc: tests read shard arrays with plain h5py, as README tells
                  #  outside readers to; colorfast itself registers them when it opens a shard)
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / "tests"))            # helpers shared by the test folders (live_networks)
SHARED = ROOT.parent / "shared"


@pytest.fixture(autouse=True, scope="session")
def _listing_cache(tmp_path_factory):
    """Archive listings go to a cache of the session's own (pipeline.archives), never the user's ~/.cache;
    set in the environment, so the commands the tests start as subprocesses use it too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLORFAST_CACHE", str(tmp_path_factory.mktemp("colorfast_cache")))
        yield


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """48 train + 8 test synthetic 64 px samples, K = 5, two train shards (tests/trainer, tests/colorfast/bench)."""
    from trainer.synthetic import write_synthetic_shards
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), n=56, size=64, knn=5, per_shard=24,
                                  test_every=7, seed=1)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Synthetic shards (2 of 8 images in the test split) and real checkpoints in seconds: {"ce", "l2"} ->
    RUN_DIR/last.pt of the tiny model after 2 steps on them."""
    from trainer.config import FitConfig
    from trainer.loop import fit
    from trainer.synthetic import write_synthetic_shards
    root = tmp_path_factory.mktemp("tiny_runs")
    data = write_synthetic_shards(root / "shards", n=8, size=64, test_every=4)
    cks = {loss: fit(FitConfig(data=str(data), out=str(root / loss), model="tiny", loss=loss, steps=2, batch_size=4,
                               crop=32, workers=0, device="cpu", lr=1e-3)) / "last.pt" for loss in ("ce", "l2")}
    return data, cks
