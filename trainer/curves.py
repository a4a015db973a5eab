"""`cli.py plot RUN_DIR [RUN_DIR ...] --out FILE.png`: training and validation curves of runs, overlaid.

One panel per figure: the training loss (raw, faint, and smoothed) and every validation figure of val.jsonl
against steps; for a guided network (siggraph17) also PSNR against the number of hints at its last
validation, the reference's "PSNR vs number of points" curve. Each run has its colour and is labelled with its
directory, model, loss and lr; each validation folder its line style; the gray baseline of a folder is a
dotted gray line, and for colourfulness and chroma the ground truth's value a dashed black one. This is the picture that shows CE against L2
against focal over a run. Reads only RUN_DIR/config.json, log.jsonl and val.jsonl (matplotlib, Agg).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline import contract

# (key in val.jsonl, panel title, key of the truth's value or None)
PANELS = (("auc", "AuC % (higher is better)", None),
          ("auc_rebalanced", "rebalanced AuC % (higher is better)", None),
          ("ce", "CE (soft targets, unweighted)", None),
          ("ce_rebalanced", "class-rebalanced CE", None),
          ("l2", "L2 on ab / 110", None),
          ("colourfulness", "colourfulness M(3)", "gt_colourfulness"),
          ("chroma", "mean chroma (ab units)", "gt_chroma"),
          ("psnr", "PSNR dB", None),
          ("ssim", "SSIM", None))
STYLES = ("-", "--", "-.", ":")
AUTO_X = 0.4                     # where "no hints" sits on the log axis of the hints panel (test_sweep.py's place)


class PlotError(ValueError):
    """A folder that is not a run dir (no log.jsonl)."""


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def load_run(run_dir) -> dict:
    run_dir = Path(run_dir)
    log = _rows(run_dir / "log.jsonl")
    if not log:
        raise PlotError(f"{run_dir}: no log.jsonl with rows; is it a `fit --out` folder?")
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    label = f"{run_dir.name}: {cfg.get('model', '?')}/{cfg.get('loss', '?')}, lr {cfg.get('lr', '?')}"
    if cfg.get("ema"):
        label += f", ema {cfg['ema']}"
    return {"dir": run_dir, "label": label, "log": log, "val": _rows(run_dir / "val.jsonl")}


def smooth(x: np.ndarray, weight: float = 0.9) -> np.ndarray:
    """Debiased exponential smoothing, as TensorBoard's slider does."""
    out, acc = np.empty(len(x)), 0.0
    for i, v in enumerate(x):
        acc = weight * acc + (1 - weight) * v
        out[i] = acc / (1 - weight ** (i + 1))
    return out


def present_panels(runs: list[dict]) -> list[tuple]:
    """The validation panels some run has figures for (an l2-only set of runs has no CE panels)."""
    return [p for p in PANELS if any(r.get(p[0]) is not None and "baseline" not in r
                                     for run in runs for r in run["val"])]


def hint_curves(runs: list[dict]) -> list[dict]:
    """The PSNR-vs-number-of-hints curve of each run and folder validated with hints (a guided network: val.jsonl
    rows with "by_hints"), from its last such validation: {"run", "folder", "step", "hints" [N], "psnr" [dB]}."""
    curves = []
    for i, run in enumerate(runs):
        last = {}
        for r in run["val"]:
            if "by_hints" in r and "baseline" not in r:
                last[r["folder"]] = r                                   # rows are in step order
        for folder, r in last.items():
            pts = sorted((int(n), v["psnr"]) for n, v in r["by_hints"].items() if v.get("psnr") is not None)
            curves.append({"run": i, "folder": folder, "step": r["step"], "hints": [n for n, _ in pts],
                           "psnr": [v for _, v in pts]})
    return curves


def _draw_hint_curves(ax, runs, curves, colours) -> None:
    """The reference's "PSNR vs number of points" (colorization-pytorch test_sweep.py): log x, 0 hints at AUTO_X."""
    for j, c in enumerate(curves):
        run = runs[c["run"]]
        x = [AUTO_X if n == 0 else n for n in c["hints"]]
        ax.plot(x, c["psnr"], STYLES[j % len(STYLES)], marker="o", ms=4, color=colours[c["run"] % len(colours)],
                label=f"{run['label']} [{c['folder']}] step {c['step']}")
        base = [r for r in run["val"] if r["folder"] == c["folder"] and r.get("baseline") == "gray"]
        if base and base[0].get("psnr") is not None:
            ax.axhline(base[0]["psnr"], color="gray", ls=":", lw=1.2, label=f"gray baseline [{c['folder']}]")
    ticks = sorted({n for c in curves for n in c["hints"]})
    ax.set_xscale("log")
    ax.set_xticks([AUTO_X if n == 0 else n for n in ticks], ["auto" if n == 0 else str(n) for n in ticks])
    ax.minorticks_off()
    ax.set_title("validation: PSNR dB vs number of hints (last validation)")
    ax.set_xlabel("hints per image (drawn from its own colours)")


def plot_runs(run_dirs, out, max_step: int = 0) -> Path:
    """max_step > 0: only the steps up to it (a close look at the start of the runs)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [load_run(d) for d in run_dirs]
    if max_step:
        runs = [{**r, "log": [x for x in r["log"] if x["step"] <= max_step],
                 "val": [x for x in r["val"] if x["step"] <= max_step]} for r in runs]
    present = present_panels(runs)
    curves = hint_curves(runs)
    n = 1 + len(present) + bool(curves)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    axes = axes.ravel()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    folders = sorted({r["folder"] for run in runs for r in run["val"]},
                     key=lambda f: min(i for run in runs for i, r in enumerate(run["val"]) if r["folder"] == f))

    ax = axes[0]
    for i, run in enumerate(runs):
        steps = np.array([r["step"] for r in run["log"]])
        loss = np.array([r["loss"] for r in run["log"]], np.float64)
        ax.plot(steps, loss, color=colours[i % len(colours)], alpha=0.2, lw=0.8)
        ax.plot(steps, smooth(loss), color=colours[i % len(colours)], lw=1.6, label=run["label"])
    ax.set_title("training loss (smoothed; each run its own loss)" + (f", steps <= {max_step}" if max_step else ""))
    ax.set_xlabel("step")

    for ax, (key, title, truth) in zip(axes[1:], present):
        seen_truth = set()
        for i, run in enumerate(runs):
            for j, folder in enumerate(folders):
                pts = [(r["step"], r[key]) for r in run["val"]
                       if r["folder"] == folder and "baseline" not in r and r.get(key) is not None]
                if pts:
                    s, v = zip(*pts)
                    ax.plot(s, v, STYLES[j % len(STYLES)], marker="o", ms=3, color=colours[i % len(colours)],
                            label=f"{run['label']} [{folder}]" if len(folders) > 1 else run["label"])
                base = [r for r in run["val"] if r["folder"] == folder and r.get("baseline") == "gray"]
                if i == 0 and base and base[0].get(key) is not None:
                    ax.axhline(base[0][key], color="gray", ls=":", lw=1.2, label=f"gray baseline [{folder}]")
                gt = [r[truth] for r in run["val"] if truth and r["folder"] == folder and r.get(truth) is not None]
                if gt and folder not in seen_truth:
                    seen_truth.add(folder)
                    ax.axhline(gt[0], color="black", ls="--", lw=1.0, label=f"ground truth [{folder}]")
        ax.set_title(f"validation: {title}")
        ax.set_xlabel("step")
    if curves:
        _draw_hint_curves(axes[n - 1], runs, curves, colours)
    for ax in axes[n:]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes[:n]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(labels)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.015 + 0.022 * (-(-len(labels) // 3)), 1, 1))
    out = Path(out)
    with contract.atomic_write(out) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return out
