"""Throughput measurements behind `cli.py bench step` and `cli.py bench loader` (docs/benchmarks.md).

bench_step: seconds per training step (batch to device, forward, loss, backward, Adam) for `ce` and `l2` on
the same network, batches and crop, interleaved (ce, l2, knn, then l2, ce, knn, ...) after a warm-up, medians
quoted, so that load from other jobs hits all three alike; `ratio_paired` is the median of the per-round
ratios, the figure least moved by other jobs. `knn` is CE with targets soft-encoded per batch on
the CPU (brute-force nearest bins + Gaussian weights inside the step), as the reference implementation did:
the cost this project's precomputed shards remove.
bench_loader: samples/s delivered by the shard loader for several worker counts.
bench_epoch: one epoch of `fit` per loss (the GPU check: ECCV16, batch 40, 176 crops, bf16).
All build a temporary synthetic shard folder when given none.
"""
from __future__ import annotations

import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from pipeline import contract
from trainer.config import FitConfig
from trainer.data import EpochSampler, ShardDataset, make_loader
from trainer.loop import apply_step, build_model, create_optimizer, forward_loss, pick_device
from trainer.losses import create_loss
from trainer.models import count_params
from trainer.synthetic import soft_encode, write_synthetic_shards


def _folder(stack: ExitStack, data: str | None, n: int, size: int) -> Path:
    if data:
        return Path(data)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="colorfast-bench-")))
    return write_synthetic_shards(tmp / "shards", n=n, size=size, per_shard=min(256, max(n // 2, 1)))


def _knn_batch(batch: dict, centers: np.ndarray, k: int, sigma: float) -> dict:
    """The batch with nn_idx / nn_w recomputed from its ab on the CPU (the per-batch reference data path)."""
    ab = batch["ab"].float().numpy()                                  # (B, 2, t, t)
    B, _, t, _ = ab.shape
    idx, w = soft_encode(ab.transpose(0, 2, 3, 1).reshape(-1, 2), centers, k, sigma)        # (P, k)
    to_bkt = lambda a: torch.from_numpy(np.ascontiguousarray(a.reshape(B, t, t, k).transpose(0, 3, 1, 2)))
    return {**batch, "nn_idx": to_bkt(idx.astype(np.int16)), "nn_w": to_bkt(w)}


def bench_step(model: str = "eccv16", data: str | None = None, batch_size: int = 8, crop: int = 176,
               steps: int = 5, warmup: int = 1, device: str = "auto", progress=print) -> dict:
    dev = pick_device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with ExitStack() as stack:
        folder = _folder(stack, data, n=max(batch_size * 2, 16), size=crop + 16)
        prior = contract.Prior.load(folder / contract.PRIOR)
        ds = ShardDataset(folder, "train", crop=crop, flip=True, seed=0)
        sampler = EpochSampler(ds)
        loader = make_loader(ds, batch_size, sampler, workers=0)
        batches, epoch = [], 0
        while len(batches) < warmup + steps:           # every timed step gets a distinct batch, the same for all
            sampler.set_position(epoch)
            batches += list(loader)
            epoch += 1
        batches = batches[:warmup + steps]
        ds.close()
    centers = torch.from_numpy(prior.centers)
    rebal = torch.as_tensor(prior.weights, dtype=torch.float32, device=dev)
    runs = {}
    for loss in ("ce", "l2"):
        cfg = FitConfig(model=model, loss=loss)       # fit's network, init seed and Adam settings
        net = build_model(cfg, prior)
        net = net.to(dev, memory_format=torch.channels_last if dev.type == "cuda" else torch.contiguous_format)
        runs[loss] = (net.train(), create_optimizer(net, cfg), create_loss(loss, centers=centers))
    runs["knn"] = runs["ce"]                          # same network and loss; only the data path differs
    knn, sigma = ds.knn, float(prior.sigma)
    times = {k: [] for k in runs}
    encode_s = []

    def one(kind, batch):
        net, opt, loss_fn = runs[kind]
        sync()
        t0 = time.perf_counter()
        if kind == "knn":
            batch = _knn_batch(batch, prior.centers, knn, sigma)
            encode_s.append(time.perf_counter() - t0)
        apply_step(opt, forward_loss(net, loss_fn, batch, dev, rebal, None)["loss"])
        sync()
        return time.perf_counter() - t0

    for i, batch in enumerate(batches):
        order = list(runs) if i % 2 == 0 else ["l2", "ce", "knn"]     # interleaved, alternating who goes first
        for kind in order:
            dt = one(kind, batch)
            if i >= warmup:
                times[kind].append(dt)
        if i >= warmup and progress:
            progress(f"step {i - warmup + 1}/{steps}: " + ", ".join(f"{k} {times[k][-1]:.3f} s" for k in runs))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": model, "params": count_params(runs["ce"][0]), "device": str(dev),
            "threads": torch.get_num_threads(), "batch_size": batch_size, "crop": crop, "steps": steps,
            "warmup": warmup, "ce_step_s": round(med["ce"], 4), "l2_step_s": round(med["l2"], 4),
            "ratio": round(med["ce"] / med["l2"], 4),
            # per-round ce / l2 (adjacent in time, so under the same load), then the median: robust on a busy machine
            "ratio_paired": round(statistics.median(c / l for c, l in zip(times["ce"], times["l2"])), 4),
            "ce_min_s": round(min(times["ce"]), 4), "l2_min_s": round(min(times["l2"]), 4),
            "knn_baseline_step_s": round(med["knn"], 4),
            "knn_ratio": round(med["knn"] / med["l2"], 4),
            "knn_encode_s": round(statistics.median(encode_s[warmup:] or encode_s), 4)}


def bench_loader(data: str | None = None, batch_size: int = 40, crop: int = 176, batches: int = 60,
                 workers: tuple[int, ...] = (0, 1, 2), progress=print) -> dict:
    """Samples/s of the training loader over `batches` batches after 2 warm-up batches, per worker count."""
    out = {}
    with ExitStack() as stack:
        folder = _folder(stack, data, n=240, size=256)
        for w in workers:
            ds = ShardDataset(folder, "train", crop=crop, flip=True, seed=0)
            if len(ds) < batch_size:
                raise ValueError(f"{folder}: {len(ds)} training samples, fewer than one batch of {batch_size}")
            sampler = EpochSampler(ds)
            loader = make_loader(ds, batch_size, sampler, workers=w)
            n, epoch, seen, t0 = 0, 0, 0, None
            while seen < batches + 2:
                sampler.set_position(epoch)
                for batch in loader:
                    seen += 1
                    if seen == 2:                     # workers forked and warm: start the clock
                        t0 = time.perf_counter()
                    elif seen > 2:
                        n += len(batch["key"])
                    if seen >= batches + 2:
                        break
                epoch += 1
            out[str(w)] = round(n / (time.perf_counter() - t0), 1)
            del loader                                 # stop persistent workers before the next count
            ds.close()
            if progress:
                progress(f"workers {w}: {out[str(w)]:.0f} samples/s")
        size = ds.size
    return {"samples_s": out, "batch_size": batch_size, "crop": crop, "stored_size": size, "batches": batches}


def bench_epoch(data: str | None = None, n: int = 3000, model: str = "eccv16", batch_size: int = 40,
                crop: int = 176, workers: int = 8, device: str = "auto", losses: tuple[str, ...] = ("ce", "l2"),
                progress=print) -> dict:
    """One epoch of `fit` per loss on the same shards (bf16 + channels-last on CUDA): wall seconds per epoch
    from the run's own log, and the same without the first step (start-up, cudnn autotuning)."""
    from trainer.loop import fit
    out = {"model": model, "batch_size": batch_size, "crop": crop, "workers": workers,
           "device": str(pick_device(device))}
    if out["device"].startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    with ExitStack() as stack:
        folder = _folder(stack, data, n=n, size=256)
        runs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="colorfast-epoch-")))
        for loss in losses:
            cfg = FitConfig(data=str(folder), out=str(runs / loss), model=model, loss=loss, batch_size=batch_size,
                            crop=crop, epochs=1, workers=workers, device=device, verify="quick")
            t0 = time.perf_counter()
            rows = [json.loads(ln) for ln in (fit(cfg) / "log.jsonl").read_text().splitlines()]
            out[f"{loss}_epoch_s"] = round(time.perf_counter() - t0, 2)
            out[f"{loss}_epoch_after_first_step_s"] = round(rows[-1]["elapsed_s"] - rows[0]["elapsed_s"], 2)
            out[f"{loss}_steps"] = len(rows)
            if progress:
                progress(f"{loss}: {out[f'{loss}_epoch_s']} s for {len(rows)} steps")
        out["samples"] = rows[-1]["samples"]
    if "ce_epoch_s" in out and "l2_epoch_s" in out:
        out["ratio"] = round(out["ce_epoch_after_first_step_s"] / max(out["l2_epoch_after_first_step_s"], 1e-9), 4)
    return out
