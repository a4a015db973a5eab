import pytest

from trainer.synthetic import write_synthetic_shards


@pytest.fixture(scope="session")
def shards(tmp_path_factory):
    """48 train + 8 test synthetic 64 px samples, K = 5, two train shards."""
    return write_synthetic_shards(tmp_path_factory.mktemp("shards"), n=56, size=64, knn=5, per_shard=24,
                                  test_every=7, seed=1)
