"""Throughput measurements behind `cli.py bench step` and `cli.py bench loader` (docs/benchmarks.md).

bench_step: seconds per training step (batch to device, forward, loss, backward, Adam) for `ce` and `l2` on
the same network, batches and crop, interleaved (ce, l2, knn, then l2, ce, knn, ...) after a warm-up, medians
quoted, so that load from other jobs hits all three alike; `ratio_paired` is the median of the per-round
ratios, the figure least moved by other jobs. `knn` is CE with targets soft-encoded per batch on
the CPU (brute-force nearest bins + Gaussian weights inside the step), as the reference implementation did:
the cost this project's precomputed shards remove (`knn_over_ce`: that step over CE from the shards).
For siggraph17 every step also draws its simulated hints on the device; `ce` is the class head's CE plus the
regression head's loss (fit's defaults) and `l2` the regression head alone (`fit --model siggraph17 --loss l2`).
With compile, `ce_compiled` and `l2_compiled` (torch.compile of network and loss, as `fit --compile`) join the
rounds. Each variant's achieved TFLOP/s (trainer.flops: forward + backward FLOPs counted once for the model,
batch and crop) and, on a GPU of known peak or with peak_tflops, its MFU.
bench_loader: samples/s delivered by the shard loader for several worker counts.
bench_epoch: one epoch per loss through fit's hot path (trainer.step: prefetch, sync-free step, read-back
every log_every steps; the GPU check: ECCV16, batch 40, 176 crops, bf16), the losses interleaved in segments.
All build a temporary synthetic shard folder when given none.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import torch

from pipeline import contract
from trainer import dist, flops
from trainer.config import FitConfig
from trainer.data import EpochSampler, ShardDataset, make_loader
from trainer.loop import build_model, create_optimizer, guided_terms, hint_sampler, pick_device
from trainer.losses import create_loss
from trainer.models import count_params
from trainer.step import DevicePrefetcher, StepLog, TrainStep, compile_parts
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


def _peak(dev: torch.device, peak_tflops: float | None) -> tuple[str, float | None]:
    """(device name, peak TFLOP/s): the given peak, else the table's for a known GPU, else None (CPUs)."""
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return name, peak_tflops or (flops.peak_tflops(name) if dev.type == "cuda" else None)


def _train_step(model: str, loss: str, prior, dev, compiled: bool = False) -> TrainStep:
    """fit's network, init seed, fused Adam and step for `loss` (one process)."""
    cfg = FitConfig(model=model, loss=loss)
    net = build_model(cfg, prior)
    net = net.to(dev, memory_format=torch.channels_last if dev.type == "cuda" else torch.contiguous_format).train()
    loss_fn = create_loss(loss, centers=net.centers, guided=guided_terms(cfg))     # siggraph17: both heads' terms
    opt = create_optimizer(net, cfg)
    run, loss_run = compile_parts(net, loss_fn) if compiled else (net, loss_fn)
    rebal = torch.as_tensor(prior.weights, dtype=torch.float32, device=dev)
    info = dist.DistInfo()
    step = TrainStep(run, loss_run, opt, dev, rebal, None, info, hints=hint_sampler(cfg, info))
    step.params = count_params(net)
    return step


def bench_step(model: str = "eccv16", data: str | None = None, batch_size: int = 8, crop: int = 176,
               steps: int = 5, warmup: int = 1, device: str = "auto", compile: bool = False,
               peak_tflops: float | None = None, progress=print) -> dict:
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
    runs = {loss: _train_step(model, loss, prior, dev) for loss in ("ce", "l2")}
    runs["knn"] = runs["ce"]                          # same network and loss; only the data path differs
    if compile:
        runs.update({f"{loss}_compiled": _train_step(model, loss, prior, dev, compiled=True) for loss in ("ce", "l2")})
    knn, sigma = ds.knn, float(prior.sigma)
    times = {k: [] for k in runs}
    encode_s = []

    def one(kind, batch):
        sync()
        t0 = time.perf_counter()
        if kind == "knn":
            batch = _knn_batch(batch, prior.centers, knn, sigma)
            encode_s.append(time.perf_counter() - t0)
        runs[kind](batch)
        sync()
        return time.perf_counter() - t0

    for i, batch in enumerate(batches):
        order = list(runs) if i % 2 == 0 else list(runs)[::-1]   # interleaved, alternating who goes first
        for kind in order:
            dt = one(kind, batch)
            if i >= warmup:
                times[kind].append(dt)
        if i >= warmup and progress:
            progress(f"step {i - warmup + 1}/{steps}: " + ", ".join(f"{k} {times[k][-1]:.3f} s" for k in runs))
    med = {k: statistics.median(v) for k, v in times.items()}
    gpu, peak = _peak(dev, peak_tflops)
    out = {"model": model, "params": runs["ce"].params, "classes": len(prior.centers), "device": str(dev), "gpu": gpu,
           "threads": torch.get_num_threads(), "batch_size": batch_size, "crop": crop, "steps": steps,
           "warmup": warmup, "ce_step_s": round(med["ce"], 4), "l2_step_s": round(med["l2"], 4),
           "ratio": round(med["ce"] / med["l2"], 4),
           # per-round ce / l2 (adjacent in time, so under the same load), then the median: robust on a busy machine
           "ratio_paired": round(statistics.median(c / l for c, l in zip(times["ce"], times["l2"])), 4),
           "ce_min_s": round(min(times["ce"]), 4), "l2_min_s": round(min(times["l2"]), 4),
           "knn_baseline_step_s": round(med["knn"], 4),
           "knn_ratio": round(med["knn"] / med["l2"], 4),
           "knn_over_ce": round(med["knn"] / med["ce"], 4),      # per-batch target encoding vs the shards' targets
           "knn_encode_s": round(statistics.median(encode_s[warmup:] or encode_s), 4),
           "peak_tflops": peak}
    for loss in ("ce", "l2"):
        f = flops.step_flops(model, loss, batch_size, crop, classes=len(prior.centers), knn=knn)
        out[f"{loss}_gflop_per_step"] = round(f / 1e9, 2)
        for kind in (loss, f"{loss}_compiled"):
            if kind in med:
                fig = flops.throughput(f, med[kind], peak)
                out[f"{kind}_tflops"], out[f"{kind}_mfu"] = fig["tflops"], fig["mfu"]
    if compile:
        for loss in ("ce", "l2"):
            out[f"{loss}_compiled_step_s"] = round(med[f"{loss}_compiled"], 4)
            out[f"{loss}_compile_speedup"] = round(med[loss] / med[f"{loss}_compiled"], 4)
    return out


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
                compile: bool = False, log_every: int = FitConfig.log_every, segments: int = 8,
                peak_tflops: float | None = None, progress=print) -> dict:
    """One epoch per loss on the same shards through fit's hot path (loader with `workers`, device prefetch,
    sync-free steps, a read-back every log_every steps), the losses interleaved: the epoch is cut into
    `segments` runs of steps, and each round runs every loss's next segment, alternating who goes first, so
    load from other jobs or clock drift hits all alike. The first step of each loss (start-up, cudnn autotuning,
    compilation) is untimed; `{loss}_epoch_s` includes it, `{loss}_epoch_after_first_step_s` does not.
    Caveat of interleaving: a loader waiting its turn fills its prefetch queue (workers x 4 batches), so a
    loader-bound figure needs one loss alone (losses=("ce",)), as the 16k-sample GPU check does."""
    dev = pick_device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gpu, peak = _peak(dev, peak_tflops)
    out = {"model": model, "batch_size": batch_size, "crop": crop, "workers": workers, "device": str(dev),
           "gpu": gpu, "compile": compile, "log_every": log_every, "losses": list(losses), "peak_tflops": peak}
    with ExitStack() as stack:
        folder = _folder(stack, data, n=n, size=256)
        prior = contract.Prior.load(folder / contract.PRIOR)
        state = {}
        for loss in losses:
            ds = ShardDataset(folder, "train", crop=crop, flip=True, seed=0)
            stack.callback(ds.close)
            sampler = EpochSampler(ds)
            if len(sampler) < 2 * batch_size:
                raise ValueError(f"{folder}: {len(ds)} training samples, fewer than two batches of {batch_size}")
            loader = make_loader(ds, batch_size, sampler, workers)
            knn = ds.knn
            state[loss] = {"step": _train_step(model, loss, prior, dev, compiled=compile),
                           "it": iter(DevicePrefetcher(loader, dev)), "log": StepLog(), "steps": 0, "timed_s": 0.0,
                           "wall_s": 0.0, "total": len(sampler) // batch_size}
        total = min(s["total"] for s in state.values())

        def run(loss, k):
            """k steps of `loss`, synced at both ends; the seconds they took."""
            s = state[loss]
            sync()
            t0 = time.perf_counter()
            for _ in range(k):
                s["log"].add(s["step"](next(s["it"])))
                s["steps"] += 1
                if s["steps"] % log_every == 0:
                    s["log"].flush()                  # the host read-back fit does every log_every steps
            s["log"].flush()
            sync()
            return time.perf_counter() - t0

        for loss in losses:                           # first step: untimed for the epoch after it
            state[loss]["wall_s"] += run(loss, 1)
        bounds = np.linspace(1, total, segments + 1).round().astype(int)
        out["order"] = []
        for r, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            for loss in (losses if r % 2 == 0 else losses[::-1]):
                out["order"].append(f"{loss}:{b - a}")
                dt = run(loss, int(b - a))
                state[loss]["timed_s"] += dt
                state[loss]["wall_s"] += dt
        for loss in losses:
            s = state[loss]
            out[f"{loss}_epoch_s"] = round(s["wall_s"], 3)
            out[f"{loss}_epoch_after_first_step_s"] = round(s["timed_s"], 3)
            out[f"{loss}_steps"] = s["steps"]
            f = flops.step_flops(model, loss, batch_size, crop, classes=len(prior.centers), knn=knn)
            fig = flops.throughput(f * (s["steps"] - 1), s["timed_s"], peak)
            out[f"{loss}_tflops"], out[f"{loss}_mfu"] = fig["tflops"], fig["mfu"]
            out[f"{loss}_samples_s"] = round((s["steps"] - 1) * batch_size / max(s["timed_s"], 1e-9), 1)
            if progress:
                progress(f"{loss}: {out[f'{loss}_epoch_s']} s for {s['steps']} steps, {fig['tflops']} TFLOP/s"
                         + (f", MFU {fig['mfu']:.1%}" if fig["mfu"] is not None else ""))
        out["samples"] = total * batch_size
        del state                                      # stop the loaders' workers before the folder goes
    if "ce" in losses and "l2" in losses:
        out["ratio"] = round(out["ce_epoch_after_first_step_s"] / max(out["l2_epoch_after_first_step_s"], 1e-9), 4)
    return out

