"""The loss study (`cli.py study`): which loss gives the better colours under an equal budget, on a training
set and on unseen sets?

    study [--train DIR] [--test DIR ...] [--losses l2,ce,focal,focal-exact] [--model tiny|eccv16] [--steps N]

  1. the training shards: --train DIR, or (no --train) the bundled sample preprocessed into OUT/shards;
  2. train every loss with the same steps, seed (so the same initialisation and data order), batch, crop and
     lr, validating along the way on each --test folder (default: the training folder's test split), so
     each run has val.jsonl, sample grids and best.pt; finished runs of the same config are reused;
  3. evaluate every loss's last.pt beside the gray baseline on each test folder (its test split, or all of
     it) and on the training split, with `evaluate`'s code (whole stored squares), and draw the curves of
     all runs (curves.png) and, per test folder, one panel of its first 8 samples (gray | each loss | truth);
  4. write OUT/report.md and OUT/study.json (every figure, machine-readable).

Held-out set of the bundled sample. It has 11 colour photos; its default hash split (`preprocess sample`)
holds out one (rocket.jpg), too few to compare anything. The study therefore preprocesses the same photos
into its own folder with test_fraction = 0.6 in the same deterministic hash split (a key is in the test
split when sha1(key) / 2^64 < fraction), which holds out astronaut.png, hubble_deep_field.jpg, logo.png and
rocket.jpg and trains on the other 7. The split is fixed by the file names, so every run holds out the same.
For the sample, the held-out photos are also compared as photos (compare/index.html).
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import contract
from trainer import metrics, scoring
from trainer.config import FitConfig
from trainer.curves import plot_runs
from trainer.decode import DEFAULT_TEMPERATURE, decode
from trainer.grid import draw_grid, gray_rgb, save_png
from inference.compare import CompareConfig
from inference.compare import run as run_compare
from inference.evaluate import GRAY, EvalConfig, Model, load_models, predictor, summaries
from inference.evaluate import run as run_evaluate

LOSSES = ("l2", "ce", "focal")
PANEL_IMAGES = 8


class StudyError(ValueError):
    """A study that cannot run as asked (unknown loss, a test folder without shards)."""


@dataclass(frozen=True)
class StudyConfig:
    out: str = "artifacts/study"
    train: str = ""                  # training shard folder; "": the bundled sample, preprocessed into OUT/shards
    tests: tuple = ()                # test shard folders; (): the training folder's test split
    losses: tuple = LOSSES
    model: str = "tiny"
    steps: int = 600                 # optimiser steps per loss (equal budgets)
    seed: int = 0                    # same init, shuffles, crops and flips for every loss
    batch_size: int = 6              # the sample study trains on 7 photos; one batch per epoch
    crop: int = 176                  # random crops of the 256 px shards, offsets multiples of 4, with flips
    lr: float = 1e-3                 # Adam; higher than the reference 3.16e-5 because the run is short and small
    val_every: int = 0               # steps between validations; 0: steps / 10
    val_limit: int = 1000            # validation samples per test folder
    test_fraction: float = 0.6       # hash split of the sample for the study (module docstring)
    temperature: float = DEFAULT_TEMPERATURE
    device: str = "cpu"
    threads: int = 1                 # torch CPU threads while the study runs: float sums depend on the thread
                                     # count, so it is fixed and the figures reproduce on any machine (and on a
                                     # loaded 2-core machine 1 thread was 10x faster than 2)

    def __post_init__(self):
        from trainer.losses import LOSSES as KNOWN
        object.__setattr__(self, "tests", tuple(self.tests))
        object.__setattr__(self, "losses", tuple(self.losses))
        unknown = [x for x in self.losses if x not in KNOWN]
        if unknown or not self.losses:
            raise StudyError(f"--losses {','.join(self.losses)}: unknown {unknown}; known: {sorted(KNOWN)}")


def prepare_shards(cfg: StudyConfig) -> Path:
    """The training shard folder: --train, or the sample preprocessed once (a complete folder is reused)."""
    if cfg.train:
        contract.read_manifest(cfg.train)              # a clear error when it is not a shard folder
        return Path(cfg.train)
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


def test_folders(cfg: StudyConfig, shards: Path) -> list[tuple[str, Path, str]]:
    """(name, folder, split) of each test set: the split is "test" when the folder has one, else "all"."""
    out, taken = [], set()
    for p in [Path(t) for t in cfg.tests] or [shards]:
        splits = {s["split"] for s in contract.read_manifest(p)["shards"]}
        if not cfg.tests and "test" not in splits:
            raise StudyError(f"{p}: no test split; give --test DIR")
        name, n = p.name, 2
        while name in taken:
            name, n = f"{p.name}-{n}", n + 1
        taken.add(name)
        out.append((name, p, "test" if "test" in splits else "all"))
    return out


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


def fit_config(cfg: StudyConfig, shards: Path, loss: str) -> FitConfig:
    return FitConfig(data=str(shards), out=str(Path(cfg.out) / "runs" / loss), model=cfg.model, loss=loss,
                     lr=cfg.lr, batch_size=cfg.batch_size, crop=cfg.crop, steps=cfg.steps, seed=cfg.seed,
                     save_every=cfg.steps, workers=0, device=cfg.device, val_data=tuple(map(str, cfg.tests)),
                     val_every=cfg.val_every or max(1, cfg.steps // 10), val_limit=cfg.val_limit)


def train(cfg: StudyConfig, shards: Path, loss: str) -> tuple[Path, float, dict]:
    """Train one loss; reuses a finished run of the same config. Returns (checkpoint, wall seconds or None when
    reused, last log row)."""
    from trainer.loop import fit
    fc = fit_config(cfg, shards, loss)
    run_dir = Path(fc.out)
    done = run_dir / "last.pt"
    t0 = time.perf_counter()
    reused = (done.exists() and (run_dir / "config.json").exists()
              and json.loads((run_dir / "config.json").read_text()) == json.loads(json.dumps(fc.to_dict())))
    if reused:
        print(f"{loss}: reusing the finished run in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        print(f"training {cfg.model} with {loss} for {cfg.steps} steps")
        fit(fc)
    seconds = None if reused else time.perf_counter() - t0
    rows = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
    return done, seconds, rows[-1]


def draw_panels(models: list[Model], folder: Path, split: str, name: str, out: Path, temperature: float) -> Path:
    """The first 8 samples of a test folder: gray | each loss | truth, each labelled with its colourfulness."""
    samples = list(scoring.shard_samples(folder, None if split == "all" else split, PANEL_IMAGES))
    x = torch.from_numpy(np.stack([s.L for s in samples]))[:, None]
    preds = []
    for m in models:
        p = predictor(m)
        preds.append(decode(p.forward(x), p.centers, temperature).numpy())
    rows = []
    for i, s in enumerate(samples):
        cells = [gray_rgb(s.L)] + [scoring.to_rgb(s.L, scoring.upsample_ab(ab[i], s.L.shape[0])) for ab in preds]
        figs = "  ".join(f"{m.name} M={metrics.colourfulness(c):.0f}" for m, c in zip(models, cells[1:]))
        rows.append((f"{s.key}  {figs}  truth M={metrics.colourfulness(s.gt_rgb):.0f}", cells + [s.gt_rgb]))
    img = draw_grid(f"{name}: gray | {' | '.join(m.name for m in models)} | truth (last.pt of each loss)",
                    ["gray input"] + [m.name for m in models] + ["truth"], rows)
    return save_png(img, out / f"panels_{name}.png")


def verdict(held: dict) -> list[str]:
    """Plain-language findings from one test folder's summaries {name: summary}."""
    gray = held[GRAY]
    lines = []
    if "ce" in held and "l2" in held:
        ce, l2 = held["ce"], held["l2"]
        more = "more" if ce["colourfulness"] > l2["colourfulness"] else "less"
        lines.append(f"- CE is **{more} colourful** than L2: colourfulness {ce['colourfulness']:.1f} vs "
                     f"{l2['colourfulness']:.1f} (ground truth {ce['gt_colourfulness']:.1f}), mean chroma "
                     f"{ce['chroma']:.1f} vs {l2['chroma']:.1f} (ground truth {ce['gt_chroma']:.1f}).")
    losses = [k for k in held if k != GRAY]
    for k in losses:
        if k not in ("ce", "l2"):
            lines.append(f"- {k}: colourfulness {held[k]['colourfulness']:.1f}, chroma {held[k]['chroma']:.1f}.")
    best = max(losses, key=lambda k: held[k]["auc_rebalanced"])
    lines.append("- Rebalanced AuC (rare colours count): " + ", ".join(
        f"{k} {held[k]['auc_rebalanced']:.1f}" for k in losses) + f", gray {gray['auc_rebalanced']:.1f} "
        f"(best: {best}); raw AuC: " + ", ".join(f"{k} {held[k]['auc']:.1f}" for k in losses)
        + f", gray {gray['auc']:.1f}.")
    pattern = gray["auc"] > gray["auc_rebalanced"]
    lines.append(f"- Gray baseline: raw AuC {gray['auc']:.1f} vs rebalanced {gray['auc_rebalanced']:.1f}"
                 + (" (the known pattern: high raw, low rebalanced)." if pattern else " (pattern NOT reproduced)."))
    return lines


def command(cfg: StudyConfig) -> str:
    parts = ["python cli.py study"]
    if cfg.train:
        parts.append(f"--train {cfg.train}")
    parts += [f"--test {t}" for t in cfg.tests]
    if cfg.losses != LOSSES:
        parts.append(f"--losses {','.join(cfg.losses)}")
    return " ".join(parts + [f"--model {cfg.model} --steps {cfg.steps} --seed {cfg.seed}"])


def write_report(cfg: StudyConfig, out: Path, runs: dict, tests: dict, seen: dict, keys: list, seconds: float,
                 panels: dict) -> Path:
    fc = fit_config(cfg, Path("."), "x")
    md = [f"# Loss study: {' vs '.join(cfg.losses)} on {cfg.train or 'the bundled sample'}\n",
          f"`{command(cfg)}` ({seconds / 60:.1f} min in all"
          f"{', finished runs reused' if any(r['seconds'] is None for r in runs.values()) else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads).\n",
          f"Model `{cfg.model}`, {cfg.steps} steps per loss, batch {cfg.batch_size}, {cfg.crop} px random crops "
          f"with flips, Adam lr {cfg.lr}, seed {cfg.seed} (same initialisation and data order for every loss); "
          f"CE/focal decoded with the annealed mean at T = {cfg.temperature}. Validation every {fc.val_every} "
          f"steps on the first {cfg.val_limit} samples of each test folder ({cfg.crop} px centre crops): "
          f"`curves.png`, `runs/LOSS/val.jsonl`, `runs/LOSS/samples/`.\n"]
    if keys:
        md.append(f"Held out ({len(keys)} photos, never trained on): {', '.join(keys)}. See the module docstring "
                  f"of inference/study.py for how they were chosen.\n")
    md += ["| loss | wall s (with start-up) | loop s | s/step | final loss |", "|---|---|---|---|---|"]
    for k, r in runs.items():
        wall, loop = "reused" if r["seconds"] is None else f"{r['seconds']:.0f}", r["last"]["elapsed_s"]
        md.append(f"| {k} | {wall} | {loop:.0f} | {loop / cfg.steps:.3f} | {r['last']['loss']:.4f} |")
    md.append("\nStep times are wall-clock on a shared machine (validation included); other jobs may have run at "
              "the same time.")
    for name, table in tests.items():
        md += [f"\n## Test folder `{name}` (last.pt of each loss; whole squares, AuC at 1/4 resolution)\n",
               metrics.markdown_table(table), f"Panels: `{panels[name]}`.\n", "Findings:\n", *verdict(table)]
    md += ["\n## Training split (seen in training; what each loss reproduces)\n", metrics.markdown_table(seen)]
    if keys:
        md.append("\nPhotos: `compare/index.html` (gray | each loss | ground truth on each held-out photo).\n")
    path = out / "report.md"
    with contract.atomic_write(path) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    return path


def run(cfg: StudyConfig) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: StudyConfig) -> Path:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    shards = prepare_shards(cfg)
    folders = test_folders(cfg, shards)
    keys = [] if cfg.train else heldout_photos(shards, out / "heldout")
    runs = {}
    for loss in cfg.losses:
        ck, seconds, last = train(cfg, shards, loss)
        runs[loss] = {"checkpoint": str(ck), "seconds": seconds, "last": last}
    models: list[Model] = load_models([runs[k]["checkpoint"] for k in cfg.losses], device=cfg.device)
    common = dict(checkpoints=tuple(runs[k]["checkpoint"] for k in cfg.losses), temperature=cfg.temperature)
    tests, panels = {}, {}
    for name, folder, split in folders:
        tests[name] = summaries(run_evaluate(EvalConfig(data=str(folder), split=split, out=str(out / f"eval_{name}"),
                                                        **common), models=models))
        panels[name] = draw_panels(models, folder, split, name, out, cfg.temperature).name
    seen = summaries(run_evaluate(EvalConfig(data=str(shards), split="train", out=str(out / "eval_train"),
                                             **common), models=models))
    plot_runs([Path(cfg.out) / "runs" / k for k in cfg.losses], out / "curves.png")
    if keys:
        run_compare(CompareConfig(images=str(out / "heldout"), out=str(out / "compare"), **common), models=models)
    seconds = time.perf_counter() - t0
    first = next(iter(tests.values()))
    with contract.atomic_write(out / "study.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "heldout_keys": keys, "runs": runs, "heldout": first,
                                   "tests": tests, "train": seen, "seconds": seconds}, indent=1))
    return write_report(cfg, out, runs, tests, seen, keys, seconds, panels)
