"""Side-by-side panels of several models on the same photos (`cli.py compare`).

For each input, one PNG:  gray | model 1 | model 2 | ... | ground truth,  each panel labelled with its
name and its colourfulness (Hasler & Suesstrunk M(3)), so a desaturating loss shows at a glance. An
index.html holds the metric table of `evaluate` on the same photos and all the panels.
"""
from __future__ import annotations

import html
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline import contract
from pipeline.images import is_grayscale, lab_to_rgb, load_rgb, rgb_to_lab
from pipeline.progress import progress, write as progress_write
from trainer import metrics
from colorfast.photos import colorize_rgb
from colorfast.inputs import READ_ERRORS, list_inputs, report_unreadable
from colorfast.outputs import OutputConflict, check_outputs  # noqa: F401  (OutputConflict: raised by run)
from colorfast.evaluate import GRAY, EvalConfig, EvalError, Model, describe, load_models, summaries
from colorfast.evaluate import run as run_evaluate

LABEL_H = 30                     # px of the label strip above each panel
GAP = 6                          # px of white between panels


@dataclass(frozen=True)
class CompareConfig:
    checkpoints: tuple = ()
    images: str = ""                 # folder of photos
    out: str = "artifacts/compare"
    size: int = 256                  # side of the square L the network sees
    panel: int = 256                 # panel height in px; larger inputs are shrunk to it, smaller kept
    temperature: float | None = None  # None: each model's default (1 for released weights, 0.38 for ours)
    prior: str = ""
    limit: int = 0
    device: str = "auto"


def gray_of(rgb: np.ndarray) -> np.ndarray:
    """The network's view: the photo's lightness with ab = 0, as RGB."""
    lab = rgb_to_lab(rgb)
    lab[..., 1:] = 0
    return lab_to_rgb(lab)


def display_size(rgb: np.ndarray, panel: int) -> np.ndarray:
    H, W = rgb.shape[:2]
    if H <= panel:
        return rgb
    return cv2.resize(rgb, (max(1, round(W * panel / H)), panel), interpolation=cv2.INTER_AREA)


def labelled_strip(panels: list[tuple[str, np.ndarray]]) -> Image.Image:
    """[(label, (H, W, 3) uint8)] with equal H -> one image, labels above the panels."""
    H = panels[0][1].shape[0]
    W = sum(p.shape[1] for _, p in panels) + GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (W, H + LABEL_H), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=17)
    x = 0
    for label, p in panels:
        canvas.paste(Image.fromarray(p), (x, LABEL_H))
        tw = draw.textlength(label, font=font)
        draw.text((x + max(0, (p.shape[1] - tw) / 2), 5), label, fill="black", font=font)
        x += p.shape[1] + GAP
    return canvas


def compare_one(models: list[Model], rgb: np.ndarray, cfg: CompareConfig) -> Image.Image:
    rgb = display_size(rgb, cfg.panel)
    panels = [("gray input", gray_of(rgb))]
    for m in models:
        out = colorize_rgb(m.colorizer, rgb, cfg.size, cfg.temperature)
        panels.append((f"{m.name}  M={metrics.colourfulness(out):.1f}", out))
    truth = "input (grayscale)" if is_grayscale(rgb) else "ground truth"
    panels.append((f"{truth}  M={metrics.colourfulness(rgb):.1f}", rgb))
    return labelled_strip(panels)


def index_html(report: dict | None, items: list[tuple[str, str]], failed: list, cfg: CompareConfig,
               decoding: dict | None = None) -> str:
    """The page: metric table (if any colour photo was evaluated), then every panel image."""
    parts = ["<!doctype html><meta charset='utf-8'><title>colorization comparison</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:4px 8px;text-align:right}td:first-child{text-align:left}"
             "img{max-width:100%}</style>",
             "<h1>Colorization comparison</h1>",
             f"<p>Models: {', '.join(html.escape(m) for m in cfg.checkpoints)}; network input {cfg.size} px; "
             f"decoding: {html.escape('; '.join(f'{n}: {d}' for n, d in (decoding or {}).items() if d))}. "
             "Panels: gray input | each model | ground truth; "
             "M = colourfulness (Hasler &amp; S&uuml;sstrunk 2003, M(3)).</p>"]
    if report:
        headers, rows = metrics.table_rows(summaries(report))
        parts.append(f"<h2>Metrics ({report['models'][GRAY]['summary']['images']} colour photos, "
                     f"{cfg.size} px centre crops)</h2><table><tr>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table><p>AuC over ab-error thresholds 0..150 (%); rebalanced AuC weighs each pixel "
                     "by 1/prior of its ground-truth bin. Full numbers: <a href='metrics.json'>metrics.json</a>."
                     "</p>")
    for key, png in items:
        # a file name is a URL path here: '#', '?', '%' and spaces must be percent-encoded, then HTML-escaped
        src = html.escape(urllib.parse.quote(png))
        parts.append(f'<h3>{html.escape(key)}</h3><img src="{src}" alt="{html.escape(key)}">')
    if failed:
        parts.append("<h2>Not compared</h2><ul>"
                     + "".join(f"<li>{html.escape(p)}: {html.escape(r)}</li>" for p, r in failed) + "</ul>")
    return "\n".join(parts) + "\n"


def run(cfg: CompareConfig, models: list[Model] | None = None) -> tuple[Path, int, list]:
    """Write one panel PNG per input and index.html under cfg.out; returns (index path, panels written,
    (path, reason) of the files that could not be decoded)."""
    out = Path(cfg.out)
    models = models if models is not None else load_models(cfg.checkpoints, cfg.device)
    pairs, _, unusable = list_inputs([cfg.images], exclude=out)
    if cfg.limit:
        pairs = pairs[:cfg.limit]
    pairs = [(src, Path(*rel.parts[1:])) for src, rel in pairs]    # rel is "<folder name>/<sub path>.png"
    check_outputs(pairs, out, record=None, overwrite=True)         # --out inside --images: never over a photo
    items, failed = [], [report_unreadable(path, ValueError(reason)) for path, reason in unusable]  # FIFOs, devices
    for src, png in progress(pairs, desc="compare", unit="img"):
        try:
            rgb = load_rgb(src)
        except READ_ERRORS as e:
            failed.append(report_unreadable(src, e))
            continue
        with contract.atomic_write(out / png) as tmp:
            compare_one(models, rgb, cfg).save(tmp, format="PNG")
        items.append((Path(os.path.relpath(src, cfg.images)).as_posix(), png.as_posix()))
    report = None
    try:
        report = run_evaluate(EvalConfig(checkpoints=cfg.checkpoints, images=cfg.images, out=str(out),
                                         size=cfg.size, temperature=cfg.temperature, prior=cfg.prior,
                                         limit=cfg.limit, device=cfg.device), models=models,
                              echo=False,          # its unreadable files are the ones reported above
                              desc="compare: metrics")
    except EvalError as e:             # no colour photo among the inputs: panels without a table
        progress_write(f"note: no metric table: {e}")
    with contract.atomic_write(out / "index.html") as tmp:
        tmp.write_text(index_html(report, items, failed, cfg,
                                  {m.name: describe(m.colorizer, cfg.temperature) for m in models}))
    return out / "index.html", len(items), failed
