"""The loss study (`cli.py study`): is class-rebalanced CE more colourful than L2 under an equal budget?

One command, from a fresh clone, on a quiet 2-core CPU in about three minutes (docs/results.md):
  1. preprocess the bundled sample (scikit-image's colour photos) into OUT/shards, unless already there;
  2. train the `tiny` model with `l2`, `ce` and `focal`: same steps, seed, batch, crop and learning rate;
  3. evaluate all three beside the gray baseline on the held-out photos (metrics from the test shards) and
     on the training photos (what each loss reproduces of images it has seen), and draw comparison panels;
  4. write OUT/report.md and OUT/study.json.

Held-out set. The sample has 11 colour photos; its default hash split (`preprocess sample`) holds out one
(rocket.jpg), too few to compare anything. The study therefore preprocesses the same photos into its own
folder with test_fraction = 0.6 in the same deterministic hash split (a key is in the test split when
sha1(key) / 2^64 < fraction), which holds out astronaut.png, hubble_deep_field.jpg, logo.png and
rocket.jpg and trains on the other 7. The split is fixed by the file names, so every run holds out the same.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from pipeline import contract
from trainer import metrics
from inference.compare import CompareConfig
from inference.compare import run as run_compare
from trainer.config import FitConfig
from trainer.decode import DEFAULT_TEMPERATURE
from inference.evaluate import GRAY, EvalConfig, Model, load_models, summaries
from inference.evaluate import run as run_evaluate

LOSSES = ("l2", "ce", "focal")


@dataclass(frozen=True)
class StudyConfig:
    out: str = "artifacts/study"
    steps: int = 600                 # optimiser steps per loss (equal budgets)
    seed: int = 0                    # same init, shuffles, crops and flips for every loss
    batch_size: int = 6              # the study trains on 7 photos; one batch per epoch
    crop: int = 176                  # random crops of the 256 px shards, offsets multiples of 4, with flips
    lr: float = 1e-3                 # Adam; higher than the reference 3e-5 because the run is short and small
    test_fraction: float = 0.6       # hash split of the sample for the study (module docstring)
    temperature: float = DEFAULT_TEMPERATURE
    model: str = "tiny"


def prepare_shards(cfg: StudyConfig) -> Path:
    """The study's shard folder, preprocessed from the sample once (a complete folder is reused)."""
    folder = Path(cfg.out) / "shards"
    try:
        contract.read_manifest(folder)
        return folder
    except contract.ShardFormatError:
        pass
    from pipeline.config import PrepConfig
    from pipeline.preprocess import run as preprocess
    print(preprocess(PrepConfig(dataset="sample", out_dir=str(folder), test_fraction=cfg.test_fraction)).summary())
    return folder


def heldout_photos(shards: Path, dest: Path) -> list[str]:
    """Copy the test split's source photos into `dest` (for the panels); returns their keys."""
    manifest = contract.read_manifest(shards)
    root = Path(manifest["root"])
    keys = []
    for path in contract.shard_paths(shards, "test"):
        with contract.open_shard(path) as s:
            keys += s.keys()
    dest.mkdir(parents=True, exist_ok=True)
    for k in keys:
        shutil.copy2(root / k, dest / Path(k).name)
    return keys


def train(cfg: StudyConfig, shards: Path, loss: str) -> tuple[Path, float, dict]:
    """Train one loss; reuses a finished run of the same config. Returns (checkpoint, wall seconds or None when
    reused, last log row)."""
    from trainer.loop import fit
    run_dir = Path(cfg.out) / "runs" / loss
    fc = FitConfig(data=str(shards), out=str(run_dir), model=cfg.model, loss=loss, lr=cfg.lr,
                   batch_size=cfg.batch_size, crop=cfg.crop, steps=cfg.steps, seed=cfg.seed,
                   save_every=cfg.steps, workers=0, device="cpu")
    done = run_dir / "last.pt"
    t0 = time.perf_counter()
    reused = done.exists() and json.loads((run_dir / "config.json").read_text()) == fc.to_dict()
    if reused:
        print(f"{loss}: reusing the finished run in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"training {cfg.model} with {loss} for {cfg.steps} steps")
        fit(fc)
    seconds = None if reused else time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return done, seconds, rows[-1]


def verdict(held: dict) -> list[str]:
    """Plain-language findings from the held-out summaries {name: summary}."""
    ce, l2, focal, gray = held["ce"], held["l2"], held["focal"], held[GRAY]
    more = "more" if ce["colourfulness"] > l2["colourfulness"] else "less"
    lines = [f"- CE is **{more} colourful** than L2 on the held-out photos: colourfulness "
             f"{ce['colourfulness']:.1f} vs {l2['colourfulness']:.1f} (ground truth {ce['gt_colourfulness']:.1f}), "
             f"mean chroma {ce['chroma']:.1f} vs {l2['chroma']:.1f} (ground truth {ce['gt_chroma']:.1f}).",
             f"- Focal: colourfulness {focal['colourfulness']:.1f}, chroma {focal['chroma']:.1f}.",
             f"- Rebalanced AuC (rare colours count): CE {ce['auc_rebalanced']:.1f}, L2 {l2['auc_rebalanced']:.1f}, "
             f"focal {focal['auc_rebalanced']:.1f}, gray {gray['auc_rebalanced']:.1f}; raw AuC: CE {ce['auc']:.1f}, "
             f"L2 {l2['auc']:.1f}, focal {focal['auc']:.1f}, gray {gray['auc']:.1f}."]
    pattern = gray["auc"] > gray["auc_rebalanced"]
    lines.append(f"- Gray baseline: raw AuC {gray['auc']:.1f} vs rebalanced {gray['auc_rebalanced']:.1f}"
                 + (" (the known pattern: high raw, low rebalanced)." if pattern else " (pattern NOT reproduced)."))
    return lines


def write_report(cfg: StudyConfig, out: Path, runs: dict, held: dict, seen: dict, keys: list, seconds: float) -> Path:
    md = ["# Loss study: l2 vs ce vs focal on the bundled sample\n",
          f"`python cli.py study --steps {cfg.steps} --seed {cfg.seed}` ({seconds / 60:.1f} min in all"
          f"{', finished runs reused' if any(r['seconds'] is None for r in runs.values()) else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads).\n",
          f"Model `{cfg.model}`, {cfg.steps} steps per loss, batch {cfg.batch_size}, {cfg.crop} px random crops "
          f"with flips, Adam lr {cfg.lr}, seed {cfg.seed}; CE/focal decoded with the annealed mean at "
          f"T = {cfg.temperature}.\n",
          f"Held out ({len(keys)} photos, never trained on): {', '.join(keys)}. See the module docstring of "
          f"inference/study.py for how they were chosen.\n",
          "| loss | wall s (with start-up) | loop s | s/step | final loss |", "|---|---|---|---|---|"]
    for k, r in runs.items():
        wall, loop = "reused" if r["seconds"] is None else f"{r['seconds']:.0f}", r["last"]["elapsed_s"]
        md.append(f"| {k} | {wall} | {loop:.0f} | {loop / cfg.steps:.3f} | {r['last']['loss']:.4f} |")
    md.append("\nStep times are wall-clock on a shared machine; other jobs may have run at the same time.")
    md += ["\n## Held-out photos (test shards, AuC at 1/4 resolution)\n", metrics.markdown_table(held),
           "## Training photos (seen in training; what each loss reproduces)\n", metrics.markdown_table(seen),
           "## Findings\n", *verdict(held),
           "\nPanels: `compare/index.html` (gray | l2 | ce | focal | ground truth on each held-out photo).\n"]
    path = out / "report.md"
    with contract.atomic_write(path) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    return path


def run(cfg: StudyConfig) -> Path:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    shards = prepare_shards(cfg)
    keys = heldout_photos(shards, out / "heldout")
    runs = {}
    for loss in LOSSES:
        ck, seconds, last = train(cfg, shards, loss)
        runs[loss] = {"checkpoint": str(ck), "seconds": seconds, "last": last}
    models: list[Model] = load_models([runs[k]["checkpoint"] for k in LOSSES], device="cpu")
    common = dict(checkpoints=tuple(runs[k]["checkpoint"] for k in LOSSES), temperature=cfg.temperature)
    held = summaries(run_evaluate(EvalConfig(data=str(shards), split="test", out=str(out / "eval_heldout"),
                                             **common), models=models))
    seen = summaries(run_evaluate(EvalConfig(data=str(shards), split="train", out=str(out / "eval_train"),
                                             **common), models=models))
    run_compare(CompareConfig(images=str(out / "heldout"), out=str(out / "compare"), **common), models=models)
    seconds = time.perf_counter() - t0
    with contract.atomic_write(out / "study.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "heldout_keys": keys, "runs": runs, "heldout": held,
                                   "train": seen, "seconds": seconds}, indent=1))
    return write_report(cfg, out, runs, held, seen, keys, seconds)
