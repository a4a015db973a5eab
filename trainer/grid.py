"""Labelled picture grids: the sample grids written at every validation (gray | prediction | truth per
validation image) and the study's comparison panels (gray | each loss | truth). Pillow does the drawing.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline import contract
from pipeline.images import lab_to_rgb

TITLE_H, HEAD_H, ROW_LABEL_H, GAP = 30, 24, 18, 4      # px
MIN_PANEL = 144                  # px: smaller crops are enlarged (nearest neighbour, whole factors) to be readable


def gray_rgb(L: np.ndarray) -> np.ndarray:
    """L (H, W) L* -> (H, W, 3) uint8: what the network sees, as an image."""
    return lab_to_rgb(np.dstack([L, np.zeros(L.shape + (2,), np.float32)]).astype(np.float32))


def draw_grid(title: str, columns: list[str], rows: list[tuple[str, list[np.ndarray]]]) -> Image.Image:
    """title over column headers over rows; each row (label, [(H, W, 3) uint8 per column]), all the same size;
    a row's label (e.g. its key and figures) is drawn above it."""
    h, w = rows[0][1][0].shape[:2]
    f = max(1, -(-MIN_PANEL // w))
    H, W = h * f, w * f
    n = len(columns)
    big, small = ImageFont.load_default(size=16), ImageFont.load_default(size=12)
    width = max(n * W + (n - 1) * GAP, int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title, font=big)) + 8)
    height = TITLE_H + HEAD_H + len(rows) * (ROW_LABEL_H + H + GAP)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 6), title, fill="black", font=big)
    for c, name in enumerate(columns):
        x = c * (W + GAP)
        draw.text((x + max(0, (W - draw.textlength(name, font=big)) / 2), TITLE_H + 2), name, fill="black", font=big)
    y = TITLE_H + HEAD_H
    for label, images in rows:
        draw.text((2, y + 2), label, fill="#333", font=small)
        y += ROW_LABEL_H
        for c, img in enumerate(images):
            im = Image.fromarray(np.ascontiguousarray(img))
            canvas.paste(im.resize((W, H), Image.NEAREST) if f > 1 else im, (c * (W + GAP), y))
        y += H + GAP
    return canvas


def save_png(img: Image.Image, path) -> Path:
    """Atomically, so a viewer never sees half a picture."""
    path = Path(path)
    with contract.atomic_write(path) as tmp:
        img.save(tmp, format="PNG")
    return path
