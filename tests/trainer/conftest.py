import pytest

from trainer.config import FitConfig
from trainer.loop import fit
from trainer.synthetic import write_synthetic_shards


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """48 train + 8 test synthetic 64 px samples, K = 5, two train shards."""
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), n=56, size=64, knn=5, per_shard=24,
                                  test_every=7, seed=1)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """Synthetic shards (2 of 8 images in the test split) and real checkpoints in seconds: {"ce", "l2"} ->
    RUN_DIR/last.pt of the tiny model after 2 steps on them."""
    root = tmp_path_factory.mktemp("tiny_runs")
    data = write_synthetic_shards(root / "shards", n=8, size=64, test_every=4)
    cks = {loss: fit(FitConfig(data=str(data), out=str(root / loss), model="tiny", loss=loss, steps=2, batch_size=4,
                               crop=32, workers=0, device="cpu", lr=1e-3)) / "last.pt" for loss in ("ce", "l2")}
    return data, cks
