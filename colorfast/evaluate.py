"""Evaluate checkpoints against ground-truth colours (`cli.py evaluate`), beside a gray baseline (ab = 0).

Two protocols, both on size x size squares so that numbers from shards and from images compare:
- `--data SHARD_DIR`: the shards' test split. The network sees the stored L (S x S); AuC and chroma
  are measured at target resolution (S/4), where the shards keep the ground-truth ab. PSNR, SSIM and
  colourfulness use RGB rebuilt from the full-resolution L and bicubically upsampled ab, for the
  prediction and for the ground truth alike (the shards hold no full-resolution ab).
- `--images DIR`: colour photos (grayscale ones are skipped: they hold no colour truth), shorter side
  resized to S and centre-cropped as in preprocessing. The prediction is upsampled to S and everything
  is measured at full resolution against the photo itself.

With --data, class models also get the soft-target CE against the stored targets, unweighted and
class-rebalanced (the CE training loss), and every model the L2 on ab; `--crop C` scores centre crops, as
the validation inside `fit` does. All scoring is trainer/scoring.py, the code `fit` validates with, so a
validation row of a run equals `evaluate --data` of its checkpoint on the same samples.

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

from pipeline import contract
from pipeline.images import is_grayscale, load_rgb, resize_center_crop, rgb_to_lab
from pipeline.progress import progress
from trainer import metrics, scoring
from colorfast.inputs import READ_ERRORS, list_inputs, report_unreadable
from trainer.decode import DEFAULT_TEMPERATURE
from trainer.scoring import GRAY, Sample, to_rgb, upsample_ab  # noqa: F401  (the shared scoring code)


class EvalError(ValueError):
    """Nothing to evaluate or compare (empty split, no colour photo, both or neither source given)."""


@dataclass(frozen=True)
class EvalConfig:
    checkpoints: tuple = ()          # one or more checkpoints; each becomes a row
    data: str = ""                   # shard folder: evaluate its `split`
    images: str = ""                 # or a folder of colour photos
    out: str = "artifacts/eval"
    split: str = "test"              # train | test | all
    crop: int = 0                    # --data: centre crops of this side (0: the stored size), as `fit` validates
    size: int = 256                  # side of the squares evaluated with --images
    temperature: float | None = None  # None: each model's default (1 for released weights, 0.38 for ours)
    prior: str = ""                  # prior.npz for models that carry none and for the gray baseline
    limit: int = 0                   # evaluate at most this many images (0: all)
    batch_size: int = 8
    device: str = "auto"


@dataclass
class Model:
    name: str
    checkpoint: str
    colorizer: object


# ---- samples --------------------------------------------------------------------------------------------
def shard_samples(folder, split: str = "test", limit: int = 0, crop: int = 0):
    """Samples of one split of a shard folder, in manifest order (trainer.scoring.shard_samples)."""
    split = None if split == "all" else split
    if not contract.shard_paths(folder, split):
        raise EvalError(f"{folder}: no shards in split {split!r}")
    return scoring.shard_samples(folder, split, limit, crop)


def image_samples(folder, size: int, limit: int, skipped: list, failed: list, echo: bool = True):
    """Yield Samples of the colour photos under a folder. (path, reason) of grayscale photos go to `skipped`
    (no colour truth: not an error), of files that cannot be decoded to `failed` (printed unless `echo` is
    False, the policy of colorfast/inputs.py)."""
    pairs, _, unusable = list_inputs([folder])
    failed += [report_unreadable(path, ValueError(reason), echo) for path, reason in unusable]   # FIFOs, devices
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
    from colorfast.colorizer import load_colorizer
    taken: set = set()
    return [Model(model_name(c, taken), str(c), load_colorizer(c, device=device, announce=True))
            for c in checkpoints]


def describe(colorizer, temperature) -> str | None:
    """Colorizer.describe(): the temperature and upsampling a model's row was decoded with."""
    return colorizer.describe(temperature) if hasattr(colorizer, "describe") else None


def predictor(m: Model, temperature: float | None = None) -> scoring.Predictor:
    """A colorizer as a scoring.Predictor, with its own default temperature and upsampling unless `temperature`
    is given: its raw head output when it has a torch model (CE can then be scored)."""
    col = m.colorizer
    t = col.temperature_for(temperature) if hasattr(col, "temperature_for") else (
        DEFAULT_TEMPERATURE if temperature is None else temperature)
    interp = getattr(col, "interpolation", cv2.INTER_CUBIC)
    if getattr(col, "guided", False):                # SIGGRAPH17: its colours are its regression head's, full size
        return scoring.Predictor(m.name, lambda x: col.predict_ab(x).float().cpu() / metrics.L2_SCALE, None, t,
                                 interp)
    if hasattr(col, "predict_raw") and getattr(col, "model", "no model attribute") is not None:
        return scoring.Predictor(m.name, lambda x: col.predict_raw(x).float().cpu(), col.centers, t, interp)
    # a colorizer that only decodes (ONNX, a stand-in): scored as an ab regressor, without CE
    return scoring.Predictor(m.name, lambda x: col.predict_ab(x, temperature=t).float().cpu() / metrics.L2_SCALE,
                             None, t, interp)


def model_prior(colorizer):
    """(centers (Q, 2), prob (Q,), weights (Q,)) of the shards a model was trained on, or None (released weights)."""
    prior = colorizer.prior                    # {"centers", "prob", "weights"} numpy arrays, or None
    if prior is None:
        return None
    return tuple(np.asarray(prior[k]) for k in ("centers", "prob", "weights") if k in prior)


# ---- evaluation -----------------------------------------------------------------------------------------
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


def rebalancer(prior) -> metrics.Rebalancer | None:
    """((centers, prob[, weights]), description) or None -> the Rebalancer of rebalanced AuC (and CE)."""
    return metrics.Rebalancer(*prior[0]) if prior else None


def evaluate(models: list[Model], samples, cfg: EvalConfig, explicit_prior=None, evaluated_prior=None,
             folder_centers=None, desc: str = "evaluate") -> dict:
    """Run every model and the gray baseline over the samples; returns metrics.json's content.
    folder_centers: the bins of shard samples' targets (CE is then scored for class models); desc labels
    the progress bar (compare runs this for its metric table)."""
    priors = choose_priors(models, explicit_prior, evaluated_prior)
    totals = {name: metrics.MetricTotals(rebalancer=rebalancer(priors[name]))
              for name in [GRAY] + [m.name for m in models]}
    predictors = [scoring.Predictor(GRAY, None)] + [predictor(m, cfg.temperature) for m in models]
    bar = progress(desc=desc, unit="img")
    scoring.score_samples(predictors, totals, samples, cfg.batch_size, DEFAULT_TEMPERATURE, folder_centers, bar.update)
    bar.close()
    if not totals[GRAY].images:
        raise EvalError("no colour images to evaluate")
    by_name = {m.name: m for m in models}
    return {"config": asdict(cfg),
            "models": {name: {"checkpoint": by_name[name].checkpoint if name in by_name else None,
                              "loss": getattr(by_name[name].colorizer, "loss", None) if name in by_name else None,
                              "weights": getattr(by_name[name].colorizer, "weights", None) if name in by_name else None,
                              "decoding": describe(by_name[name].colorizer, cfg.temperature) if name in by_name else None,
                              "prior": priors[name][1] if priors[name] else None,
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
          "AuC over ab-error thresholds 0..150; rebalanced AuC weighs pixels by 1/prior of their ground-truth "
          "bin; colourfulness: Hasler & Suesstrunk 2003 M(3); gap = prediction - ground truth.\n",
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
    return (p.centers, p.prob, p.weights), description


def run(cfg: EvalConfig, models: list[Model] | None = None, echo: bool = True, desc: str = "evaluate") -> dict:
    """Evaluate and write the report; returns metrics.json's content, whose "failed" lists the files that could
    not be decoded (printed as met unless `echo` is False) and "skipped" the grayscale photos. desc labels the
    progress bar."""
    if bool(cfg.data) == bool(cfg.images):
        raise EvalError("give exactly one of --data SHARD_DIR or --images DIR")
    models = models if models is not None else load_models(cfg.checkpoints, cfg.device)
    skipped: list = []
    failed: list = []
    samples = (shard_samples(cfg.data, cfg.split, cfg.limit, cfg.crop) if cfg.data
               else image_samples(cfg.images, cfg.size, cfg.limit, skipped, failed, echo))
    explicit = load_prior(cfg.prior, f"--prior {cfg.prior}") if cfg.prior else None
    data_prior = Path(cfg.data) / contract.PRIOR if cfg.data else None
    evaluated = (load_prior(data_prior, f"evaluated shards ({data_prior})")
                 if data_prior and data_prior.exists() else None)
    folder_centers = contract.Prior.load(data_prior).centers if evaluated else None
    report = evaluate(models, samples, cfg, explicit, evaluated, folder_centers, desc=desc)
    report["skipped"] = skipped
    report["failed"] = failed
    write_report(report, cfg.out)
    return report
