"""Evaluate checkpoints against ground-truth colours (`cli.py evaluate`), beside a gray baseline (ab = 0).

Two protocols, both on size x size squares so that numbers from shards and from images compare:
- `--data SHARD_DIR`: the shards' test split. The network sees the stored L (S x S); AuC and chroma
  are measured at target resolution (S/4), where the shards keep the ground-truth ab. PSNR, SSIM and
  colourfulness use RGB rebuilt from the full-resolution L and bicubically upsampled ab, for the
  prediction and for the ground truth alike (the shards hold no full-resolution ab).
- `--images DIR`: colour photos (grayscale ones are skipped: they hold no colour truth), shorter side
  resized to S and centre-cropped as in preprocessing. The prediction is upsampled to S and everything
  is measured at full resolution against the photo itself.

Rebalanced AuC weighs pixels by 1 / prior of their ground-truth bin, with the prior of the shards each
model was trained on (stored in our checkpoints). For a model without one (a released ECCV16 state
dict) and for the gray baseline, the first available of: --prior FILE, a model's training prior, the
evaluated shards' prior; metrics.json records which was used.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from pipeline import contract
from pipeline.images import is_grayscale, load_rgb, resize_center_crop, rgb_to_lab
from trainer import metrics
from inference.full_resolution import lab_to_rgb_in_gamut
from inference.inputs import READ_ERRORS, list_inputs, report_unreadable

GRAY = "gray (ab = 0)"


class EvalError(ValueError):
    """Nothing to evaluate or compare (empty split, no colour photo, both or neither source given)."""


@dataclass(frozen=True)
class EvalConfig:
    checkpoints: tuple = ()          # one or more checkpoints; each becomes a row
    data: str = ""                   # shard folder: evaluate its `split`
    images: str = ""                 # or a folder of colour photos
    out: str = "artifacts/eval"
    split: str = "test"
    size: int = 256                  # side of the squares evaluated with --images
    temperature: float | None = None  # None: each model's default (1 for released weights, 0.38 for ours)
    prior: str = ""                  # prior.npz for models that carry none and for the gray baseline
    limit: int = 0                   # evaluate at most this many images (0: all)
    batch_size: int = 8
    device: str = "auto"


@dataclass
class Sample:
    key: str
    L: np.ndarray            # (S, S) float32, L* 0..100: what the network sees
    gt_ab: np.ndarray        # (2, s, s) float32: ground truth at the resolution AuC is measured at
    gt_rgb: np.ndarray       # (S, S, 3) uint8


@dataclass
class Model:
    name: str
    checkpoint: str
    colorizer: object


# ---- samples --------------------------------------------------------------------------------------------
def upsample_ab(ab: np.ndarray, side: int, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """(2, s, s) -> (2, side, side), bicubic unless told (a model's own mode: Colorizer.interpolation)."""
    return cv2.resize(ab.transpose(1, 2, 0), (side, side), interpolation=interpolation).transpose(2, 0, 1)


def to_rgb(L: np.ndarray, ab_full: np.ndarray) -> np.ndarray:
    """L (S, S), ab (2, S, S) -> (S, S, 3) uint8, chroma pulled into gamut so L is kept."""
    return lab_to_rgb_in_gamut(L, np.ascontiguousarray(ab_full.transpose(1, 2, 0), dtype=np.float32))


def shard_samples(folder, split: str = "test", limit: int = 0):
    """Yield Samples of one split of a shard folder, in manifest order."""
    paths = contract.shard_paths(folder, split)
    if not paths:
        raise EvalError(f"{folder}: no shards in split {split!r}")
    n = 0
    for path in paths:
        with contract.open_shard(path) as shard:
            keys = shard.keys()
            for i in range(len(shard)):
                if limit and n >= limit:
                    return
                L = contract.uint8_to_l(shard.L[i])
                gt = shard.ab[i].astype(np.float32)
                yield Sample(keys[i], L, gt, to_rgb(L, upsample_ab(gt, L.shape[0])))
                n += 1


def image_samples(folder, size: int, limit: int, skipped: list, failed: list, echo: bool = True):
    """Yield Samples of the colour photos under a folder. (path, reason) of grayscale photos go to `skipped`
    (no colour truth: not an error), of files that cannot be decoded to `failed` (printed unless `echo` is
    False, the policy of inference/inputs.py)."""
    pairs, _, _ = list_inputs([folder])
    n = 0
    for path, _ in pairs:
        if limit and n >= limit:
            return
        try:
            rgb = resize_center_crop(load_rgb(path), size)
        except READ_ERRORS as e:
            failed.append(report_unreadable(path, e, echo))
            continue
        if is_grayscale(rgb):
            skipped.append((str(path), "grayscale: no colour truth"))
            continue
        lab = rgb_to_lab(rgb)
        yield Sample(Path(os.path.relpath(path, folder)).as_posix(), lab[..., 0], lab[..., 1:].transpose(2, 0, 1), rgb)
        n += 1


# ---- models ---------------------------------------------------------------------------------------------
def model_name(checkpoint: str, taken: set) -> str:
    """runs/ce/last.pt -> 'ce'; eccv16.pth -> 'eccv16'; made unique with a suffix."""
    p = Path(checkpoint)
    name = p.parent.name if p.stem in ("last", "best") and p.parent.name else p.stem
    base, n = name, 2
    while name in taken or name == GRAY:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def load_models(checkpoints, device: str = "auto") -> list[Model]:
    from inference.colorizer import load_colorizer
    taken: set = set()
    return [Model(model_name(c, taken), str(c), load_colorizer(c, device=device))
            for c in checkpoints]


def model_prior(colorizer):
    """(centers (Q, 2), prob (Q,)) of the shards a model was trained on, or None (released weights)."""
    prior = colorizer.prior                    # {"centers", "prob", "weights"} numpy arrays, or None
    return None if prior is None else (np.asarray(prior["centers"]), np.asarray(prior["prob"]))


def describe(colorizer, temperature) -> str | None:
    """Colorizer.describe(): the temperature and upsampling a model's row was decoded with."""
    return colorizer.describe(temperature) if hasattr(colorizer, "describe") else None


# ---- evaluation -----------------------------------------------------------------------------------------
@torch.no_grad()
def predict_batch(colorizer, Ls: list[np.ndarray], temperature: float | None) -> np.ndarray:
    """[(S, S)] -> (B, 2, S/4, S/4) float32."""
    x = torch.from_numpy(np.stack(Ls))[:, None]
    return colorizer.predict_ab(x, temperature=temperature).float().cpu().numpy()


def choose_priors(models: list[Model], explicit=None, evaluated=None) -> dict:
    """{row name: ((centers, prob), where it came from) or None}. A model's own training prior wins; the
    others (and the gray baseline) take --prior, else the first model's training prior, else the
    evaluated shards' prior. `explicit`/`evaluated`: ((centers, prob), description) or None."""
    own = {m.name: model_prior(m.colorizer) for m in models}
    first = next(((p, f"training shards of {n} (checkpoint)") for n, p in own.items() if p), None)
    shared = explicit or first or evaluated
    chosen = {n: (p, "training shards (checkpoint)") if p else shared for n, p in own.items()}
    chosen[GRAY] = shared
    return chosen


def evaluate(models: list[Model], samples, cfg: EvalConfig, explicit_prior=None, evaluated_prior=None,
             desc: str = "evaluate") -> dict:
    """Run every model and the gray baseline over the samples; returns metrics.json's content. desc labels
    the progress bar (compare runs this for its metric table)."""
    priors = choose_priors(models, explicit_prior, evaluated_prior)
    by_name = {m.name: m for m in models}
    totals = {name: metrics.MetricTotals(rebalancer=metrics.Rebalancer(*priors[name][0]) if priors[name] else None)
              for name in [GRAY] + [m.name for m in models]}

    def flush(batch):
        preds = {m.name: predict_batch(m.colorizer, [s.L for s in batch], cfg.temperature) for m in models}
        for i, s in enumerate(batch):
            side = s.L.shape[0]
            for name, t in totals.items():
                small = preds[name][i] if name != GRAY else np.zeros((2, side // 4, side // 4), np.float32)
                full = (upsample_ab(small, side, getattr(by_name[name].colorizer, "interpolation", cv2.INTER_CUBIC))
                        if name != GRAY
                        else np.zeros((2, side, side), np.float32))
                at_gt = small if s.gt_ab.shape[1] == small.shape[1] else full
                t.update(s.key, at_gt, s.gt_ab, to_rgb(s.L, full), s.gt_rgb)

    batch = []
    for s in tqdm(samples, desc=desc, unit="img"):
        batch.append(s)
        if len(batch) == cfg.batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if not totals[GRAY].images:
        raise EvalError("no colour images to evaluate")
    return {"config": asdict(cfg),
            "models": {name: {"checkpoint": by_name[name].checkpoint if name in by_name else None,
                              "loss": getattr(by_name[name].colorizer, "loss", None) if name in by_name else None,
                              "prior": priors[name][1] if priors[name] else None,
                              "decoding": describe(by_name[name].colorizer, cfg.temperature) if name in by_name else None,
                              "summary": t.summary(), "per_image": t.per_image}
                       for name, t in totals.items()}}


def summaries(report: dict) -> dict:
    return {name: m["summary"] for name, m in report["models"].items()}


def write_report(report: dict, out) -> tuple[Path, Path]:
    """metrics.json (everything, per image too) and metrics.md (the table) under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = report["config"]
    source = f"shards `{cfg['data']}` (split {cfg['split']})" if cfg["data"] else f"images `{cfg['images']}`"
    md = [f"# Evaluation on {source}\n",
          metrics.markdown_table(summaries(report)),
          f"AuC over ab-error thresholds 0..150; rebalanced AuC weighs pixels by 1/prior of their ground-truth "
          f"bin; colourfulness: Hasler & Suesstrunk 2003 M(3); gap = prediction - ground truth.\n",
          "Decoding: " + "; ".join(f"{n}: {m['decoding']}" for n, m in report["models"].items()
                                   if m.get("decoding")) + "\n",
          "Prior used for rebalancing: " + "; ".join(f"{n}: {m['prior'] or 'none'}"
                                                     for n, m in report["models"].items()) + "\n"]
    if report.get("skipped"):
        md.append(f"Skipped inputs: {len(report['skipped'])} grayscale (see metrics.json)\n")
    if report.get("failed"):
        md.append(f"Unreadable inputs: {len(report['failed'])} (see metrics.json)\n")
    js, mdp = out / "metrics.json", out / "metrics.md"
    with contract.atomic_write(js) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    with contract.atomic_write(mdp) as tmp:
        tmp.write_text("\n".join(md))
    return js, mdp


def summary_line(report: dict) -> str:
    """One line of counts, in the words colorize and compare use."""
    s = f"evaluated {report['models'][GRAY]['summary']['images']} image(s), {len(report.get('failed', []))} failed"
    n_gray = len(report.get("skipped", []))
    return s + (f", {n_gray} grayscale skipped (no colour truth)" if n_gray else "")


def load_prior(path, description: str):
    p = contract.Prior.load(path)
    return (p.centers, p.prob), description


def run(cfg: EvalConfig, models: list[Model] | None = None, echo: bool = True, desc: str = "evaluate") -> dict:
    """Evaluate and write the report; returns metrics.json's content, whose "failed" lists the files that could
    not be decoded (printed as met unless `echo` is False) and "skipped" the grayscale photos. desc labels the
    progress bar."""
    if bool(cfg.data) == bool(cfg.images):
        raise EvalError("give exactly one of --data SHARD_DIR or --images DIR")
    models = models if models is not None else load_models(cfg.checkpoints, cfg.device)
    skipped: list = []
    failed: list = []
    samples = (shard_samples(cfg.data, cfg.split, cfg.limit) if cfg.data
               else image_samples(cfg.images, cfg.size, cfg.limit, skipped, failed, echo))
    explicit = load_prior(cfg.prior, f"--prior {cfg.prior}") if cfg.prior else None
    data_prior = Path(cfg.data) / contract.PRIOR if cfg.data else None
    evaluated = (load_prior(data_prior, f"evaluated shards ({data_prior})")
                 if data_prior and data_prior.exists() else None)
    report = evaluate(models, samples, cfg, explicit, evaluated, desc=desc)
    report["skipped"] = skipped
    report["failed"] = failed
    write_report(report, cfg.out)
    return report
