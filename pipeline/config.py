"""Configuration of one preprocessing run: a frozen dataclass, built the same way by cli.py and the tests."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

BACKENDS = ("loky", "dask")
SPLITS = ("all", "train", "test", "val")   # val: ImageNet's, Places365's and COCO's name for the held-out split,
                                           # which shards store as "test" (what evaluate reads by default)
ORDERS = ("mixed", "name")               # the order of keys within a split's shards (pipeline.datasets.shard_order)
SUBSETS = ("", "first10k", "ctest10k")     # ImageNet evaluation subsets (pipeline.subsets); "" = the whole split
STORAGE = ("none", "lzf", "gzip", "gzip-targets", "lzf-targets", "zstd", "blosc-lz4", "blosc-zstd", "zstd-targets",
           "blosc-mixed")                # names of contract.STORAGE (kept here so that the CLI needs no h5py)


@dataclass(frozen=True)
class PrepConfig:
    dataset: str = "sample"      # a name in pipeline.datasets.DATASETS
    root: str = ""               # dataset root; "" for `sample` (scikit-image's data folder)
    out_dir: str = ""            # "" -> artifacts/shards/<dataset>
    size: int = 256              # shorter side resized to size, then centre-cropped to size x size
    knn: int = 5                 # ab bins that share one pixel's soft target (paper 5, reference code 10)
    sigma: float = 5.0           # Gaussian width in ab units, for the soft targets and for smoothing the prior
    lam: float = 0.5             # prior mixed with uniform: w = ((1 - lam) p + lam / Q)^-1
    shard_size: int = 256        # inputs per shard (~40 MB of shard at size 256); also the unit of work
    jobs: int = 0                # worker processes; 0 = one per CPU core
    limit: int = 0               # process at most this many inputs (a stable, spread-out subset); 0 = all
    split: str = "all"           # all | train | test (= val)
    subset: str = ""             # imagenet: first10k | ctest10k, validation images only (pipeline.subsets)
    backend: str = "loky"        # loky (processes on this machine) | dask (a LocalCluster, or --scheduler)
    scheduler: str = ""          # address of a running dask scheduler, e.g. tcp://10.0.0.1:8786
    partition: int = 1           # SUN397 partition: Training_NN.txt / Testing_NN.txt, NN = 01..10
    min_side: int = 64           # images whose shorter side is below this are skipped as too small
    test_fraction: float = 0.1   # hash split of the sample and of folders without train/ and val/ folders:
                                 # share of keys put in test
    gray_chroma: float = 5.0     # ab chroma above which a pixel counts as coloured (grayscale test)
    decode_slack: float = 0.9    # JPEGs are decoded at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling, an area
                                 # average) when that leaves the shorter side >= decode_slack * size: about 2x
                                 # faster, for at most a 1/0.9 upscale (640x480 -> 240 -> 256; L PSNR ~42 dB
                                 # against a full decode). 1.0: never upscale after a reduced decode
    storage: str = "zstd-targets"  # lossless filter of the shard arrays, a name in contract.STORAGE
    max_pixels: int = 178_956_970  # an image whose header declares more (width x height) is skipped undecoded:
                                 # pipeline.images.MAX_PIXELS (twice Pillow's own limit), not imported here so
                                 # that the CLI loads no OpenCV
    order: str = "mixed"         # mixed: each split's keys in a stable hash order, so every shard mixes classes;
                                 # name: sorted by name, as class folders list them (reads archives in sequence)

    def __post_init__(self):
        if self.size <= 0 or self.size % 4:
            raise ValueError(f"size must be a positive multiple of 4 (targets are at 1/4), got {self.size}")
        if self.shard_size < 1 or self.jobs < 0 or self.limit < 0 or self.min_side < 1 or self.max_pixels < 1:
            raise ValueError("shard_size, min_side and max_pixels must be >= 1, jobs and limit >= 0")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.split == "val":
            object.__setattr__(self, "split", "test")       # one name per split in shards and manifests
        if self.subset not in SUBSETS:
            raise ValueError(f"subset must be one of {SUBSETS[1:]}, got {self.subset!r}")
        if not 0 <= self.lam <= 1 or self.sigma <= 0 or not 0 <= self.test_fraction < 1:
            raise ValueError("need 0 <= lam <= 1, sigma > 0 and 0 <= test_fraction < 1")
        if not 0 < self.decode_slack <= 1:
            raise ValueError(f"decode_slack must be in (0, 1], got {self.decode_slack}")
        if self.storage not in STORAGE:
            raise ValueError(f"storage must be one of {sorted(STORAGE)}, got {self.storage!r}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")
        if not 1 <= self.partition <= 10:
            raise ValueError(f"partition must be 1..10, got {self.partition}")

    @property
    def out(self) -> str:
        return self.out_dir or os.path.join("artifacts", "shards", self.dataset)

    @property
    def workers(self) -> int:
        return self.jobs or os.cpu_count() or 1

    def encoding(self) -> dict:
        """The fields that decide a shard's content. Stored in each shard and compared on a rerun; the run-only
        fields (jobs, backend, scheduler, out_dir) are left out, so results do not depend on them."""
        keep = ("dataset", "size", "knn", "sigma", "min_side", "gray_chroma", "decode_slack",   # in field order
                "storage")
        encoding = {name: getattr(self, name) for name in keep}
        if self.max_pixels != PrepConfig.max_pixels:   # only then: a folder made before the option keeps its
            encoding["max_pixels"] = self.max_pixels    # fingerprint, so its shards are reused, not rebuilt
        return encoding

    def as_dict(self) -> dict:
        return asdict(self)
