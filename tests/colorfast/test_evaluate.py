"""`cli.py evaluate` and `cli.py compare` on real (tiny, 2-step) checkpoints and small data."""
import json
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli
from colorfast.evaluate import GRAY


@pytest.fixture(scope="module")
def setup(tiny_runs, tmp_path_factory):
    """The shared tiny shards, their ce and l2 checkpoints, and a folder of photos (one gray, one broken)."""
    data, cks = tiny_runs
    photos = tmp_path_factory.mktemp("eval") / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(48, 80), (90, 40), (64, 64)]):
        small = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
        Image.fromarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)).save(photos / f"p{i}.png")
    Image.fromarray(np.full((50, 50), 90, np.uint8)).save(photos / "gray.png")          # no colour truth
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 10)               # truncated PNG
    return data, [cks["ce"], cks["l2"]], photos


def invoke(*args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    return res


def test_evaluate_on_shards_writes_json_and_table_with_gray_baseline(tmp_path, setup):
    data, (ce, l2), _ = setup
    out = tmp_path / "ev"
    res = invoke("evaluate", "--checkpoint", ce, "--checkpoint", l2, "--data", data, "--out", out)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "metrics.json").read_text())
    rows = report["models"]
    assert list(rows) == [GRAY, "ce", "l2"]
    for name, row in rows.items():
        s = row["summary"]
        assert s["images"] == 2 and len(row["per_image"]) == 2
        assert 0 <= s["auc"] <= 100 and 0 <= s["auc_rebalanced"] <= 100 and -1 <= s["ssim"] <= 1
        assert s["gt_colourfulness"] > 0 and row["prior"]
    gray = rows[GRAY]["summary"]
    assert gray["chroma"] == 0 and gray["colourfulness"] < 1 and gray["colourfulness_gap"] < 0
    assert gray["auc"] > gray["auc_rebalanced"]            # rare saturated bins weigh more in the rebalanced one
    assert rows["ce"]["loss"] == "ce" and rows["l2"]["loss"] == "l2"
    table = (out / "metrics.md").read_text()
    assert "| gray (ab = 0) | 2 |" in table and "| ce | 2 |" in table and "M(3)" in table
    assert "| ce | 2 |" in res.output


def test_evaluate_on_images_skips_gray_and_reports_unreadable_files_like_colorize(tmp_path, setup):
    """One policy for colorize, evaluate and compare: each unreadable file in one line, counts, exit 1 (the
    others still evaluated and written). Grayscale photos are skipped by design, not an error."""
    _, (ce, _), photos = setup
    res = invoke("evaluate", "--checkpoint", ce, "--images", photos, "--out", tmp_path, "--size", "32")
    assert res.exit_code == 1, res.output
    reason = json.loads((tmp_path / "metrics.json").read_text())["failed"][0][1]
    assert res.output.count(f"error: {photos / 'broken.png'}: {reason}\n") == 1
    assert "evaluated 3 image(s), 1 failed, 1 grayscale skipped" in res.output
    assert "1 input(s) could not be evaluated" in res.output
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["models"]["ce"]["summary"]["images"] == 3
    assert [s[0].rsplit("/", 1)[-1] for s in report["skipped"]] == ["gray.png"]
    assert "grayscale" in report["skipped"][0][1]
    assert [s[0].rsplit("/", 1)[-1] for s in report["failed"]] == ["broken.png"]
    assert report["models"]["ce"]["prior"] == "training shards (checkpoint)"


def test_evaluate_needs_exactly_one_source(setup):
    data, (ce, _), photos = setup
    assert "exactly one" in invoke("evaluate", "--checkpoint", ce).output
    res = invoke("evaluate", "--checkpoint", ce, "--data", data, "--images", photos)
    assert res.exit_code == 2 and "exactly one" in res.output


def test_compare_writes_labelled_panels_and_an_index(tmp_path, setup):
    _, (ce, l2), photos = setup
    res = invoke("compare", "--checkpoint", ce, "--checkpoint", l2, "--images", photos, "--out", tmp_path,
                 "--size", "32", "--panel", "40")
    assert res.exit_code == 1 and "compared 4 image(s), 1 failed" in res.output   # one bad file: reported, others done
    assert res.output.count(f"error: {photos / 'broken.png'}:") == 1       # once, not once per stage
    assert "compare: metrics" in res.output and "evaluate:" not in res.output      # the progress bars' labels
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["gray.png", "p0.png", "p1.png", "p2.png"]
    panel = np.asarray(Image.open(tmp_path / "p0.png"))                 # 48 x 80 shrunk to 40 x 67
    assert panel.shape[0] == 40 + 30 and panel.shape[1] == 4 * 67 + 3 * 6
    page = (tmp_path / "index.html").read_text()
    for s in ("<table>", "gray (ab = 0)", ">ce<", ">l2<", "p1.png", "broken.png", "M(3)"):
        assert s in page, s


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def test_hostile_names_and_suffixes_in_compare_and_evaluate(tmp_path, setup):
    """Names with '#', '?', '%', spaces, quotes and '<' must load in the page (a browser reads src as a URL:
    '#' starts a fragment, '?' a query, '%' an escape). A .jfif and a file without a suffix are photos too."""
    _, (ce, _), _ = setup
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    names = ["it's #1 & <b>.png", "50% off?.png", 'say "cheese".png', "scan 2.jfif", "IMG_0001"]
    for i, name in enumerate(names):
        rgb = cv2.resize(rng.integers(0, 256, (3, 3, 3), dtype=np.uint8), (40, 30), interpolation=cv2.INTER_CUBIC)
        Image.fromarray(rgb).save(photos / name, format="JPEG" if i >= 3 else "PNG")
    out = tmp_path / "cmp"
    res = invoke("compare", "--checkpoint", ce, "--images", photos, "--out", out, "--size", "32", "--panel", "30")
    assert res.exit_code == 0, res.output
    assert "compared 5 image(s), 0 failed" in res.output
    parser = _Images()
    parser.feed((out / "index.html").read_text())
    assert len(parser.srcs) == 5
    page_url = (out / "index.html").as_uri()
    for src in parser.srcs:
        url = urllib.parse.urlsplit(urllib.parse.urljoin(page_url, src))
        assert not url.query and not url.fragment, src                   # nothing cut off the file name
        assert Path(urllib.request.url2pathname(url.path)).is_file(), src
    report = json.loads((out / "metrics.json").read_text())
    assert report["models"]["ce"]["summary"]["images"] == 5                # evaluate read the same five
