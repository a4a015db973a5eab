"""The loss study (`cli.py study`): which loss gives the better colours under an equal budget, on a training
set and on unseen sets?

    study [--train DIR] [--test DIR ...] [--losses l2,ce,focal,focal-exact] [--model tiny|eccv16] [--steps N]
          [--variant NAME:key=value,... ...] [--train-eval N]

  1. the training shards: --train DIR, or (no --train) the bundled sample preprocessed into OUT/shards;
  2. train every loss with the same steps, seed (so the same initialisation and data order), batch, crop and
     lr, validating along the way on each --test folder (default: the training folder's test split), so
     each run has val.jsonl, sample grids and best.pt; finished runs of the same config are reused. Each
     --variant (colorfast/variants.py) is one more run with other fit options (default: ce without the data
     init), under the same budget;
  3. evaluate every run's last.pt beside the gray baseline on each test folder (its test split, or all of
     it) and on the first --train-eval samples of the training split (fit beside generalisation), with
     `evaluate`'s code (whole stored squares), plus the logit spread of class heads; draw the curves of
     all runs (curves.png), their first `early` steps (curves_early.png: the data init's effect) and, per
     test folder, one panel of its first 8 samples (gray | each run | truth);
  4. write OUT/report.md and OUT/study.json (every figure, machine-readable).

Logit spread: the RMS over pixels of the standard deviation of a pixel's Q logits. The softmax ignores a
shift of all logits, so this is the part that decides how peaked it is: falling, the softmax flattens
(the annealed mean then drifts to the bins' average, a dull colour); 0 would be uniform.

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
from colorfast.compare import CompareConfig
from colorfast.compare import run as run_compare
from colorfast.evaluate import GRAY, EvalConfig, Model, load_models, predictor, summaries
from colorfast.evaluate import run as run_evaluate
from colorfast.variants import VariantError, parse_variants

LOSSES = ("l2", "ce", "focal")
# what the data init changes (torch's default init instead), and the loss scale against weight decay (the old mean)
DEFAULT_VARIANTS = ("ce-init-off:data_init=off", "ce-mean:loss_reduction=mean")
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
    variants: tuple = DEFAULT_VARIANTS  # NAME:key=value,... runs beside the losses (colorfast/variants.py)
    train_eval: int = 1000           # training samples (the first, in stored order) scored like the test folders
    early: int = 200                 # steps of the first-steps view (curves_early.png and its table)

    def __post_init__(self):
        from trainer.losses import LOSSES as KNOWN
        object.__setattr__(self, "tests", tuple(self.tests))
        object.__setattr__(self, "losses", tuple(self.losses))
        unknown = [x for x in self.losses if x not in KNOWN]
        if unknown or not self.losses:
            raise StudyError(f"--losses {','.join(self.losses)}: unknown {unknown}; known: {sorted(KNOWN)}")
        object.__setattr__(self, "variants", tuple(self.variants))
        run_options(self)                              # a bad --variant fails before anything runs
        if self.train_eval < 0 or self.early < 1:
            raise StudyError(f"--train-eval must be >= 0 and early >= 1, got {self.train_eval}, {self.early}")


def run_options(cfg: StudyConfig) -> dict:
    """{run name: the fit options it sets}: one run per loss, then one per variant."""
    try:
        return {**{loss: {"loss": loss} for loss in cfg.losses}, **parse_variants(cfg.variants, cfg.losses)}
    except VariantError as e:
        raise StudyError(str(e)) from None


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


def fit_config(cfg: StudyConfig, shards: Path, name: str, options: dict) -> FitConfig:
    """The study's recipe for run `name`, with its options (its loss, or a variant's fit options) on top."""
    return FitConfig(**{**dict(data=str(shards), out=str(Path(cfg.out) / "runs" / name), model=cfg.model,
                               lr=cfg.lr, batch_size=cfg.batch_size, crop=cfg.crop, steps=cfg.steps, seed=cfg.seed,
                               save_every=cfg.steps, workers=0, device=cfg.device,
                               val_data=tuple(map(str, cfg.tests)), val_every=cfg.val_every or max(1, cfg.steps // 10),
                               val_limit=cfg.val_limit), **options})


def train(cfg: StudyConfig, shards: Path, loss: str, options: dict) -> tuple[Path, float, dict]:
    """Train one run; reuses a finished run of the same config. Returns (checkpoint, wall seconds or None when
    reused, last log row)."""
    from trainer.loop import fit
    fc = fit_config(cfg, shards, loss, options)
    run_dir = Path(fc.out)
    done = run_dir / "last.pt"
    t0 = time.perf_counter()
    reused = (done.exists() and (run_dir / "config.json").exists()
              and json.loads((run_dir / "config.json").read_text()) == json.loads(json.dumps(fc.to_dict())))
    if reused:
        print(f"{loss}: reusing the finished run in {run_dir}")
    else:
        shutil.rmtree(run_dir, ignore_errors=True)
        extra = ", ".join(f"{k}={v}" for k, v in options.items() if k != "loss")
        print(f"training {loss}: {cfg.model} with {fc.loss}{f' ({extra})' if extra else ''} for {cfg.steps} steps")
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
    img = draw_grid(f"{name}: gray | {' | '.join(m.name for m in models)} | truth (last.pt of each run)",
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


@torch.no_grad()
def logit_spread(model: Model, folder: Path, split: str, limit: int = 0, batch_size: int = 8) -> float | None:
    """RMS over pixels of the std of a pixel's logits across bins (module docstring); None for an l2 head."""
    col = model.colorizer
    if getattr(col, "model", None) is None or col.centers is None:
        return None
    total, pixels, batch = 0.0, 0, []

    def flush():
        nonlocal total, pixels
        raw = col.predict_raw(torch.from_numpy(np.stack([s.L for s in batch]))[:, None]).double()
        var = raw.var(dim=1, unbiased=False)                                 # (B, h, w): the shift is gone
        total, pixels = total + float(var.sum()), pixels + var.numel()
        batch.clear()

    for s in scoring.shard_samples(folder, None if split == "all" else split, limit):
        batch.append(s)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return (total / pixels) ** 0.5 if pixels else None


def early_view(cfg: StudyConfig, names: list[str], folder: str) -> dict:
    """{run: figures of its first `early` steps}: the training loss averaged over its first and last window of
    steps, and the last validation at or before step `early` on `folder` (val.jsonl)."""
    early = min(cfg.early, cfg.steps)
    window = max(1, min(20, early // 10))
    out = {}
    for name in names:
        run_dir = Path(cfg.out) / "runs" / name
        log = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines() if x.strip()]
        loss = [r["loss"] for r in log if r["step"] <= early]
        val = [json.loads(x) for x in (run_dir / "val.jsonl").read_text().splitlines() if x.strip()] \
            if (run_dir / "val.jsonl").exists() else []
        val = [r for r in val if r["step"] <= early and r["folder"] == folder and "baseline" not in r]
        last = val[-1] if val else {}
        out[name] = {"steps": early, "window": window, "loss_first": float(np.mean(loss[:window])),
                     "loss_last": float(np.mean(loss[-window:])), "val_step": last.get("step"),
                     **{k: last.get(k) for k in ("ce", "auc_rebalanced", "colourfulness", "gt_colourfulness")}}
    return out


def compared_early(cfg: StudyConfig, options: dict) -> list[str]:
    """The runs of the first-steps view: those sharing a loss with a variant (what the variant changes shows
    against its plain run), or all runs when there is no variant."""
    losses = {o["loss"] for name, o in options.items() if name not in cfg.losses}
    return [n for n, o in options.items() if o["loss"] in losses] or list(options)


def command(cfg: StudyConfig) -> str:
    parts = ["python cli.py study"]
    if cfg.train:
        parts.append(f"--train {cfg.train}")
    parts += [f"--test {t}" for t in cfg.tests]
    if cfg.losses != LOSSES:
        parts.append(f"--losses {','.join(cfg.losses)}")
    if cfg.variants != DEFAULT_VARIANTS:
        parts += [f"--variant {v}" for v in cfg.variants] or ["--variant none"]
    if cfg.train_eval != StudyConfig.train_eval:
        parts.append(f"--train-eval {cfg.train_eval}")
    return " ".join(parts + [f"--model {cfg.model} --steps {cfg.steps} --seed {cfg.seed}"])


def _fmt(v, f: str) -> str:
    return "n/a" if v is None else f.format(v)


# (key in a summary, header, format) of the fit-beside-generalisation table
FIT_COLUMNS = (("auc_rebalanced", "rebal. AuC %", "{:.2f}"), ("ce", "CE", "{:.3f}"),
               ("colourfulness", "colourfulness", "{:.2f}"), ("logit_spread", "logit spread", "{:.3f}"))


def fit_table(seen: dict, held: dict) -> list[str]:
    """Markdown: per run, each figure on the training samples beside the same figure on the test folder."""
    head = ["run"] + [f"{h} {where}" for _, h, _ in FIT_COLUMNS for where in ("train", "test")]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for name in held:
        cells = [name] + [_fmt(src.get(name, {}).get(k), f) for k, _, f in FIT_COLUMNS for src in (seen, held)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def early_table(early: dict) -> list[str]:
    """Markdown: per run, the training loss at the start and at the end of the first steps, and the last
    validation within them."""
    any_row = next(iter(early.values()))
    w, n = any_row["window"], any_row["steps"]
    lines = [f"| run | train loss, steps 1-{w} | train loss, steps {n - w + 1}-{n} | validated at step | CE | "
             f"rebal. AuC % | colourfulness (truth) |", "|---|---|---|---|---|---|---|"]
    for name, r in early.items():
        lines.append(f"| {name} | {r['loss_first']:.4f} | {r['loss_last']:.4f} | {_fmt(r['val_step'], '{}')} | "
                     f"{_fmt(r['ce'], '{:.3f}')} | {_fmt(r['auc_rebalanced'], '{:.2f}')} | "
                     f"{_fmt(r['colourfulness'], '{:.2f}')} ({_fmt(r['gt_colourfulness'], '{:.2f}')}) |")
    return lines


def write_report(cfg: StudyConfig, out: Path, runs: dict, tests: dict, seen: dict, keys: list, seconds: float,
                 panels: dict, early: dict) -> Path:
    fc = fit_config(cfg, Path("."), "x", {"loss": "ce"})
    md = [f"# Loss study: {' vs '.join(cfg.losses)} on {cfg.train or 'the bundled sample'}\n",
          f"`{command(cfg)}` ({seconds / 60:.1f} min in all"
          f"{', finished runs reused' if any(r['seconds'] is None for r in runs.values()) else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads).\n",
          f"Model `{cfg.model}`, {cfg.steps} steps per run, batch {cfg.batch_size}, {cfg.crop} px random crops "
          f"with flips, Adam lr {cfg.lr}, seed {cfg.seed} (same data order for every run; same initialisation "
          f"for runs with the same data init: {fc.data_init}, {fc.data_init_samples} crops, unless a run's "
          f"options say otherwise); CE/focal decoded with the annealed mean at T = {cfg.temperature}. "
          f"Validation every {fc.val_every} steps on the first {cfg.val_limit} samples of each test folder "
          f"({cfg.crop} px centre crops): `curves.png`, `runs/RUN/val.jsonl`, `runs/RUN/samples/`.\n"]
    if keys:
        md.append(f"Held out ({len(keys)} photos, never trained on): {', '.join(keys)}. See the module docstring "
                  f"of colorfast/study.py for how they were chosen.\n")
    md += ["| run | fit options | wall s (with start-up) | loop s | s/step | final loss |", "|---|---|---|---|---|---|"]
    for k, r in runs.items():
        wall, loop = "reused" if r["seconds"] is None else f"{r['seconds']:.0f}", r["last"]["elapsed_s"]
        opts = ", ".join(f"{o}={v}" for o, v in r["options"].items())
        md.append(f"| {k} | {opts} | {wall} | {loop:.0f} | {loop / cfg.steps:.3f} | {r['last']['loss']:.4f} |")
    md.append("\nStep times are wall-clock on a shared machine (validation included); other jobs may have run at "
              "the same time.")
    n_seen = next(iter(seen.values()))["images"]
    for name, table in tests.items():
        md += [f"\n## Test folder `{name}` (last.pt of each run; whole squares, AuC at 1/4 resolution)\n",
               metrics.markdown_table(table), f"Panels: `{panels[name]}`.\n",
               f"Fit beside generalisation: the same figures on the first {n_seen} training samples (train) and "
               f"on `{name}` (test); logit spread: see colorfast/study.py (class heads only; falling: the softmax "
               f"flattens).\n", *fit_table(seen, table), "", "Findings:\n", *verdict(table)]
    md += ["\n## Training split (seen in training; what each run reproduces)\n",
           f"The first {n_seen} training samples in stored order (`--train-eval {cfg.train_eval}`).\n",
           metrics.markdown_table(seen)]
    if early:
        md += [f"\n## The first {next(iter(early.values()))['steps']} steps (what the variants change early on)\n",
               *early_table(early), f"\nValidation on `{next(iter(tests))}`; `curves_early.png`: the curves of "
               f"these runs up to that step."]
    if keys:
        md.append("\nPhotos: `compare/index.html` (gray | each run | ground truth on each held-out photo).\n")
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
    options = run_options(cfg)
    runs = {}
    for name, opts in options.items():
        ck, seconds, last = train(cfg, shards, name, opts)
        runs[name] = {"checkpoint": str(ck), "seconds": seconds, "last": last, "options": opts}
    models: list[Model] = load_models([r["checkpoint"] for r in runs.values()], device=cfg.device)
    common = dict(checkpoints=tuple(r["checkpoint"] for r in runs.values()), temperature=cfg.temperature)
    tests, panels = {}, {}
    for name, folder, split in folders:
        tests[name] = summaries(run_evaluate(EvalConfig(data=str(folder), split=split, out=str(out / f"eval_{name}"),
                                                        **common), models=models))
        tests[name][GRAY]["logit_spread"] = None
        for m in models:
            tests[name][m.name]["logit_spread"] = logit_spread(m, folder, split)
        panels[name] = draw_panels(models, folder, split, name, out, cfg.temperature).name
    seen = summaries(run_evaluate(EvalConfig(data=str(shards), split="train", limit=cfg.train_eval,
                                             out=str(out / "eval_train"), **common), models=models))
    seen[GRAY]["logit_spread"] = None
    for m in models:
        seen[m.name]["logit_spread"] = logit_spread(m, shards, "train", cfg.train_eval)
    plot_runs([out / "runs" / k for k in runs], out / "curves.png")
    early_runs = compared_early(cfg, options)
    early = early_view(cfg, early_runs, folders[0][0])
    plot_runs([out / "runs" / k for k in early_runs], out / "curves_early.png", max_step=min(cfg.early, cfg.steps))
    if keys:
        run_compare(CompareConfig(images=str(out / "heldout"), out=str(out / "compare"), **common), models=models)
    seconds = time.perf_counter() - t0
    first = next(iter(tests.values()))
    with contract.atomic_write(out / "study.json") as tmp:
        tmp.write_text(json.dumps({"config": asdict(cfg), "heldout_keys": keys, "runs": runs, "heldout": first,
                                   "tests": tests, "train": seen, "early": early, "seconds": seconds}, indent=1))
    return write_report(cfg, out, runs, tests, seen, keys, seconds, panels, early)
