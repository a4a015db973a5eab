"""Validation inside `fit`: held-out figures, sample grids and the choice of best.pt while a run trains.

Every validation scores a fixed subset of each validation folder (its first `val_limit` samples of the
test split, or of every shard when the folder has no test split; centre crops at the training crop size,
no flips, eval mode) with trainer/scoring.py, the code `evaluate` uses, so a row equals
`evaluate --data FOLDER --crop CROP --limit N` of the checkpoint written at that step. With --ema the EMA
weights are validated (they are what colorize and evaluate load). Under torchrun each rank scores every
world_size-th sample and the sums are all-reduced: the figures equal a one-process validation.

Rank 0 writes RUN_DIR/val.jsonl (one object per validation and folder: step, epoch, folder, weights,
seconds and every figure of metrics.MetricTotals.summary; once per folder a row with "baseline": "gray"),
a console line, and RUN_DIR/samples/step_NNNNNNN.png (8 images of the first folder: gray | prediction | truth).

A guided network (siggraph17) is scored as the reference decodes it and as `evaluate` scores it, on its
full-resolution regression head (area means at the targets' resolution for AuC and L2; no CE), with no hints
(the row's figures: the automatic colorizer) and with each count N of hint_sampling.SWEEP_POINTS (0, 1, 2, 5,
10, 20) drawn from the image's own ab, the same hints at every validation: the row's "by_hints" {"N": every
figure}, the reference's "PSNR vs number of points" curve.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import contract
from pipeline.progress import write as progress_write
from trainer import dist, metrics, scoring
from trainer.config import FitConfig, FitError
from trainer.decode import DEFAULT_TEMPERATURE, decode
from trainer.grid import draw_grid, gray_rgb, save_png
from trainer.hint_sampling import SWEEP_POINTS, sweep_hints, sweep_points
from trainer.models import AB_NORM

VAL_LOG, SAMPLES_DIR, BEST = "val.jsonl", "samples", "best.pt"
GRID_IMAGES = 8
BATCH = 16
# direction of each figure for --select: +1 higher is better, -1 lower, 0 closer to zero
DIRECTION = {"auc": 1, "auc_rebalanced": 1, "psnr": 1, "ssim": 1, "colourfulness": 1, "chroma": 1,
             "l2": -1, "ce": -1, "ce_rebalanced": -1, "colourfulness_gap": 0}


@dataclass
class Folder:
    name: str
    path: Path
    split: str | None                # "test", or None: every shard of a folder without a test split
    count: int                       # samples validated
    centers: np.ndarray              # the folder's bins (its nn_idx refer to them)


def validation_folders(cfg: FitConfig) -> list[Folder]:
    """The folders `fit` validates on, each with its own name (made unique); [] when there is nothing to
    validate on (no --val-data and no test split in --data)."""
    paths = [Path(p) for p in cfg.val_data] or [Path(cfg.data)]
    folders, taken = [], set()
    for p in paths:
        try:
            shards = contract.read_manifest(p)["shards"]
            centers = contract.Prior.load(p / contract.PRIOR).centers
        except contract.ShardFormatError as e:
            raise FitError(f"--val-data {p}: {e}") from None
        split = "test" if any(s["split"] == "test" for s in shards) else None
        if split is None and not cfg.val_data:
            return []                                # training data without a test split: nothing held out
        name, n = p.name or str(p), 2
        while name in taken:
            name, n = f"{p.name}-{n}", n + 1
        taken.add(name)
        count = scoring.count_samples(p, split, cfg.val_limit)
        if count == 0:
            raise FitError(f"--val-data {p}: no samples")
        folders.append(Folder(name, p, split, count, centers))
    return folders


def parse_select(select: str, folders: list[Folder], classes: bool) -> tuple[str, str]:
    """--select [FOLDER:]METRIC -> (folder name, metric), checked against what validation logs."""
    folder, _, metric = select.rpartition(":")
    folder = folder or (folders[0].name if folders else "")
    if metric not in DIRECTION:
        raise FitError(f"--select {select}: unknown figure {metric!r}; known: {sorted(DIRECTION)}")
    if metric in ("ce", "ce_rebalanced") and not classes:
        raise FitError(f"--select {select}: an l2 model has no CE; choose e.g. auc_rebalanced or l2")
    if folders and folder not in [f.name for f in folders]:
        raise FitError(f"--select {select}: no validation folder {folder!r}; they are {[f.name for f in folders]}")
    return folder, metric


def better(metric: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    d = DIRECTION[metric]
    return abs(new) < abs(old) if d == 0 else (new - old) * d > 0


class Validator:
    """Built once per run; `due` says when, `run` validates, logs and says whether best.pt should be written."""

    def __init__(self, cfg: FitConfig, prior: contract.Prior, info: dist.DistInfo, device: torch.device,
                 run_dir: Path, classes: bool, steps_per_epoch: int, total: int):
        self.cfg, self.info, self.device, self.run_dir = cfg, info, device, run_dir
        self.steps_per_epoch, self.total = steps_per_epoch, total
        self.folders = [] if cfg.val_every == -1 else validation_folders(cfg)
        # a guided network is scored on its regression head (the reference's decoding): no CE is measured
        self.select = parse_select(cfg.select, self.folders, classes and not cfg.guided)
        self.training_prior = (prior.centers, prior.prob, prior.weights)
        self.best: dict | None = None                # {"folder", "metric", "value", "step"}
        self.baselines: set = set()                  # folders whose gray row is in val.jsonl
        self.seconds = 0.0                           # spent validating in this process
        self._grid = None

    @property
    def enabled(self) -> bool:
        return bool(self.folders)

    def due(self, step: int, epoch_step: int) -> bool:
        if not self.enabled:
            return False
        if step >= self.total:
            return True
        if self.cfg.val_every > 0:
            return step % self.cfg.val_every == 0
        return epoch_step == self.steps_per_epoch       # val_every 0: at the end of every epoch

    # ---- state carried by last.pt across --resume -------------------------------------------------------
    def state(self) -> dict:
        return {"best": self.best, "baselines": sorted(self.baselines)}

    def restore(self, state: dict | None) -> None:
        if state:
            self.best, self.baselines = state.get("best"), set(state.get("baselines", ()))

    # ---- one validation ---------------------------------------------------------------------------------
    def _predictors(self, model) -> list[scoring.Predictor]:
        """The model as validation scores it: one predictor; a guided network one per SWEEP_POINTS count of hints
        ("model" with none, "hints N"), each returning its regression head's ab / AB_NORM at full size."""
        device = self.device
        if not self.cfg.guided:
            return [scoring.Predictor("model", lambda x: model(x.to(device)).float().cpu(), model.centers)]

        def hinted(n):
            def forward(x, batch):
                return guided_ab(model, x.to(device), batch, n).cpu()
            return scoring.Predictor("model" if n == 0 else f"hints {n}", forward, None, with_samples=True)
        return [hinted(n) for n in SWEEP_POINTS]

    def _score(self, folder: Folder, predictors: list[scoring.Predictor]) -> dict:
        totals = {p.name: metrics.MetricTotals(rebalancer=metrics.Rebalancer(*self.training_prior))
                  for p in predictors}
        samples = scoring.shard_samples(folder.path, folder.split, self.cfg.val_limit, self.cfg.crop,
                                        self.info.rank, self.info.world_size)
        scoring.score_samples(predictors, totals, samples, BATCH, DEFAULT_TEMPERATURE, folder.centers)
        out = {}
        for name, t in totals.items():
            t.set_vector(dist.all_sum(t.vector(), self.info, self.device))
            out[name] = t.summary()
        return out

    def run(self, step: int, epoch: int, model, weights: str, board=None) -> bool:
        """Validate `model` (eval mode for the duration) on every folder; rank 0 logs. Returns True on every
        rank when the --select figure improved (the caller then writes best.pt)."""
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        rows = []
        try:
            with torch.no_grad():
                for folder in self.folders:
                    preds = self._predictors(model)
                    baseline = folder.name not in self.baselines
                    if baseline:
                        preds.append(scoring.Predictor(scoring.GRAY, None))
                    res = self._score(folder, preds)
                    rows.append({"step": step, "epoch": epoch, "folder": folder.name, "weights": weights,
                                 **res["model"]})
                    if self.cfg.guided:        # the reference's PSNR-vs-points curve, every figure at each count
                        rows[-1]["by_hints"] = {str(n): res["model" if n == 0 else f"hints {n}"] for n in SWEEP_POINTS}
                    if baseline:
                        rows.append({"step": step, "folder": folder.name, "baseline": "gray", **res[scoring.GRAY]})
                        self.baselines.add(folder.name)
                if self.info.is_primary:
                    self._write_grid(step, model, rows[0])
        finally:
            model.train(was_training)
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        for r in rows:
            if "baseline" not in r:
                r["seconds"] = round(seconds, 3)
        if self.info.is_primary:
            with open(self.run_dir / VAL_LOG, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            for r in rows:
                if "baseline" not in r:
                    progress_write(_console_line(r))
                if board is not None:
                    sweep = {f"psnr_hints_{n}": v["psnr"] for n, v in r.get("by_hints", {}).items()}
                    board.scalars(step, {**{k: v for k, v in r.items() if k in DIRECTION or k == "seconds"}, **sweep},
                                  prefix=f"val/{r['folder']}/" if "baseline" not in r else f"gray/{r['folder']}/")
        folder, metric = self.select
        value = next(r[metric] for r in rows if r["folder"] == folder and "baseline" not in r)
        if value is not None and better(metric, value, self.best and self.best["value"]):
            self.best = {"folder": folder, "metric": metric, "value": value, "step": step}
            return True
        return False

    def _write_grid(self, step: int, model, row: dict) -> None:
        """8 fixed images of the first folder: gray | prediction | truth, labelled with step and figures."""
        folder = self.folders[0]
        if self._grid is None:
            self._grid = list(scoring.shard_samples(folder.path, folder.split, GRID_IMAGES, self.cfg.crop))
        x = torch.from_numpy(np.stack([s.L for s in self._grid]))[:, None]
        if self.cfg.guided:                                              # no hints: the automatic colorizer
            ab = guided_ab(model, x.to(self.device), self._grid, 0).cpu().numpy() * AB_NORM
        else:
            ab = decode(model(x.to(self.device)).float().cpu(), model.centers, DEFAULT_TEMPERATURE).numpy()
        rows = []
        for s, a in zip(self._grid, ab):
            pred = scoring.to_rgb(s.L, scoring.upsample_ab(a, s.L.shape[0]))
            rows.append((f"{s.key}  M={metrics.colourfulness(pred):.0f} (truth {metrics.colourfulness(s.gt_rgb):.0f})",
                         [gray_rgb(s.L), pred, s.gt_rgb]))
        loss = f"CE {row['ce']:.3f}" if row.get("ce") is not None else f"L2 {row['l2']:.4f}"
        title = (f"step {step}  {self.cfg.model}/{self.cfg.loss}  {folder.name}: {loss}, "
                 f"rebal. AuC {row['auc_rebalanced']:.1f}")
        img = draw_grid(title, ["gray input", "prediction", "truth"], rows)
        save_png(img, self.run_dir / SAMPLES_DIR / f"step_{step:07d}.png")
        self.last_grid = np.asarray(img)


def guided_ab(model, x: torch.Tensor, samples: list, n: int) -> torch.Tensor:
    """A guided network's regression head, ab / AB_NORM at the input's size (B, 2, S, S), given n hints per sample
    drawn from the sample's own ab (hint_sampling.sweep_hints; 0: none). Scoring measures it against the 1/4
    targets by area means and builds the RGB from it directly, as `evaluate` scores a guided checkpoint."""
    planes = ()
    if n:
        ab = torch.from_numpy(np.stack([s.gt_ab for s in samples]))                   # (B, 2, t, t)
        planes = tuple(p.to(x.device) for p in sweep_hints(ab, sweep_points([s.key for s in samples], ab.shape[-1]), n))
    _, reg = model(x, *planes)
    return reg.float()


def _console_line(r: dict) -> str:
    ce = f" ce {r['ce']:.3f} rebal-ce {r['ce_rebalanced']:.3f}" if r.get("ce") is not None else ""
    if "by_hints" in r:
        ce += " psnr by hints " + ", ".join(f"{n}: {v['psnr']:.2f}" for n, v in r["by_hints"].items())
    return (f"val step {r['step']} {r['folder']} ({r['weights']}): auc {r['auc']:.2f} rebal-auc "
            f"{r['auc_rebalanced']:.2f} l2 {r['l2']:.4f}{ce} colourfulness {r['colourfulness']:.1f} "
            f"(truth {r['gt_colourfulness']:.1f}) chroma {r['chroma']:.1f} (truth {r['gt_chroma']:.1f}) "
            f"[{r['seconds']:.1f} s]")


def trim_rows(path: Path, last_step: int) -> None:
    """Drop the rows of a JSON-lines log (log.jsonl, val.jsonl) whose step is after the checkpoint's: a resumed
    run redoes those steps and validations."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= last_step]
        with contract.atomic_write(path) as tmp:
            tmp.write_text("".join(ln + "\n" for ln in keep))
