"""`cli.py plot` on runs of two losses: one PNG with a panel per figure, runs overlaid and labelled."""
import numpy as np
from click.testing import CliRunner
from PIL import Image

from cli import cli
from trainer import curves, loop
from trainer.config import FitConfig


def test_plot_overlays_runs_of_two_losses(shards, tmp_path):
    runs = [loop.fit(FitConfig(data=str(shards), out=str(tmp_path / loss), model="tiny", loss=loss, crop=48,
                               batch_size=8, steps=4, val_every=2, val_limit=4, workers=0, lr=1e-3))
            for loss in ("l2", "ce")]
    res = CliRunner().invoke(cli, ["plot", *map(str, runs), "--out", str(tmp_path / "curves.png")])
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(tmp_path / "curves.png").convert("RGB"))
    assert img.shape[0] > 600 and img.shape[1] > 1000 and img.std() > 10
    loaded = [curves.load_run(r) for r in runs]
    assert [r["label"] for r in loaded] == ["l2: tiny/l2, lr 0.001", "ce: tiny/ce, lr 0.001"]
    keys = [p[0] for p in curves.present_panels(loaded)]
    assert {"auc", "auc_rebalanced", "ce", "ce_rebalanced", "l2", "colourfulness", "chroma"} <= set(keys)
    assert "ce" not in [p[0] for p in curves.present_panels(loaded[:1])]      # an l2 run alone has no CE panel
    bad = CliRunner().invoke(cli, ["plot", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert bad.exit_code == 1 and "no log.jsonl" in bad.output


def test_smoothing_is_debiased():
    assert curves.smooth(np.array([4.0, 4.0, 4.0])) == __import__("pytest").approx([4.0, 4.0, 4.0])
