"""--hints: the JSON format, its errors, where a hint lands in the network's input, and that a hint moves the
colours of `colorize --checkpoint siggraph17-released` near it towards its colour."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli import cli
from colorfast.hints import DEFAULT_NET_PATCH, Hint, color_ab, hint_planes, load_hints
from pipeline.images import load_rgb, resize_center_crop, rgb_to_lab
from released_weights import hash_named, torch_bytes
from siggraph17_weights import released_siggraph17_state_dict


def _write(tmp_path, data, name="hints.json"):
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return p


def test_the_documented_format_loads(tmp_path):
    hints = load_hints(_write(tmp_path, [{"x": 10, "y": 20.5, "color": "#2050c0"},
                                         {"x": 3, "y": 4, "ab": [40, -10], "size": 12}]))
    a, b = rgb_to_lab(np.array([[[0x20, 0x50, 0xc0]]], np.uint8))[0, 0, 1:]
    assert hints[0] == Hint(10.0, 20.5, (pytest.approx(float(a)), pytest.approx(float(b))), None)
    assert b < -40                                                    # a blue: strongly negative b
    assert hints[1] == Hint(3.0, 4.0, (40.0, -10.0), 12.0)


def test_a_hint_is_a_patch_at_the_scaled_position():
    """Photo 200 wide x 100 high -> network input 64 x 64: x scales by 0.32, y by 0.64 (pixel centres aligned)."""
    ab, mask = hint_planes([Hint(150, 25, (30.0, -20.0))], (100, 200), (64, 64))
    assert ab.shape == (1, 2, 64, 64) and mask.shape == (1, 1, 64, 64)
    ys, xs = torch.nonzero(mask[0, 0], as_tuple=True)
    assert mask.sum() == DEFAULT_NET_PATCH ** 2
    assert (int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())) == (46, 50, 14, 18)   # centre (48, 16)
    assert ab[0, 0, 16, 48] == 30 and ab[0, 1, 16, 48] == -20 and ab[0, :, 0, 0].abs().sum() == 0
    # "size" is in photo pixels: 20 x 20 px -> 6 x 13 network pixels, centred on the point (clipped at the corner)
    _, mask = hint_planes([Hint(100, 50, (1.0, 1.0), size=20)], (100, 200), (64, 64))
    ys, xs = torch.nonzero(mask[0, 0], as_tuple=True)
    assert (int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1, int(mask.sum())) == (6, 13, 78)
    _, mask = hint_planes([Hint(0, 0, (1.0, 1.0), size=20)], (100, 200), (64, 64))
    assert mask.sum() == 4 * 7


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a JSON file"),
    ('{"x": 1, "y": 2, "color": "#ffffff"}', "expected a JSON list of hints, got dict"),
    ('[{"x": 1, "y": 2, "colour": "#ffffff"}]', "hint 0: unknown key(s) ['colour']"),
    ('[{"x": 1, "color": "#ffffff"}]', "hint 0: missing y"),
    ('[{"x": 1, "y": 2}]', 'exactly one of "color"'),
    ('[{"x": 1, "y": 2, "color": "#fff", "ab": [1, 2]}]', 'exactly one of "color"'),
    ('[{"x": 1, "y": 2, "color": "blue"}]', "color 'blue' is not of the form '#rrggbb'"),
    ('[{"x": 1, "y": 2, "ab": [200, 0]}]', "outside -110..110"),
    ('[{"x": 1, "y": 2, "ab": [1]}]', "ab must be a list [a, b]"),
    ('[{"x": "1", "y": 2, "ab": [1, 2]}]', "x must be a finite number"),
    ('[{"x": 1, "y": 2, "ab": [1, 2], "size": 0}]', "size must be positive"),
])
def test_bad_hint_files_get_one_line_errors(tmp_path, content, message):
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photo)
    res = CliRunner().invoke(cli, ["colorize", str(photo), "--checkpoint", str(photo), "--hints",
                                   str(_write(tmp_path, content)), "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "out").exists()


@pytest.fixture
def photo(tmp_path):
    """A real photo, 96 high x 128 wide."""
    import skimage
    from pathlib import Path
    rgb = resize_center_crop(load_rgb(Path(skimage.__file__).parent / "data" / "astronaut.png"), 128)[16:112]
    path = tmp_path / "astronaut.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def publisher(file_server, tmp_path, monkeypatch):
    """siggraph17-released served locally (a live published-layout state dict, small widths)."""
    root, url, requests = file_server
    data = torch_bytes(released_siggraph17_state_dict())
    name = hash_named(data, "siggraph17")
    (root / name).write_bytes(data)
    monkeypatch.setenv("COLORFAST_SIGGRAPH17_RELEASED_URL", f"{url}/{name}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return requests


def _ab(path):
    return rgb_to_lab(load_rgb(path))[..., 1:]


def test_a_hint_moves_the_colours_near_it_towards_its_colour(publisher, photo, tmp_path):
    target = np.array(color_ab("#1040e0"))                            # a saturated blue
    hints = _write(tmp_path, [{"x": 90, "y": 30, "color": "#1040e0", "size": 8}])
    runner = CliRunner()
    args = ["colorize", str(photo), "--checkpoint", "siggraph17-released", "--size", "64"]
    res = runner.invoke(cli, args + ["--out", str(tmp_path / "plain")])
    assert res.exit_code == 0, res.output
    assert "regression head" in res.output and "bilinear" in res.output
    res = runner.invoke(cli, args + ["--hints", str(hints), "--out", str(tmp_path / "hinted")])
    assert res.exit_code == 0, res.output
    assert len(publisher) == 1                                         # downloaded once, then from the cache
    plain, hinted = _ab(tmp_path / "plain" / "astronaut.png"), _ab(tmp_path / "hinted" / "astronaut.png")
    near = (slice(27, 34), slice(87, 94))
    # towards the blue: the photo is light there (L ~ 81), so the gamut bounds how far, not where
    before = np.linalg.norm(plain[near] - target, axis=-1).mean()
    after = np.linalg.norm(hinted[near] - target, axis=-1).mean()
    moved = hinted[near].mean((0, 1)) - plain[near].mean((0, 1))
    wanted = target - plain[near].mean((0, 1))
    assert after < before - 10 and moved @ wanted / np.linalg.norm(moved) / np.linalg.norm(wanted) > 0.9, \
        (before, after, moved, wanted)
    assert np.abs(hinted[80:, :30] - plain[80:, :30]).mean() < 0.2 * np.abs(hinted[near] - plain[near]).mean()
    assert np.abs(rgb_to_lab(load_rgb(tmp_path / "hinted" / "astronaut.png"))[..., 0]
                  - rgb_to_lab(load_rgb(photo))[..., 0]).max() < 1.0  # the photo's lightness is kept


def test_hints_need_one_photo_inside_and_a_guided_checkpoint(publisher, photo, tmp_path):
    from released_weights import released_state_dict
    eccv = tmp_path / "eccv16.pth"
    torch.save(released_state_dict(), eccv)
    good = _write(tmp_path, [{"x": 5, "y": 5, "ab": [10, 10]}])
    outside = _write(tmp_path, [{"x": 5, "y": 5, "ab": [10, 10]}, {"x": 128, "y": 5, "ab": [1, 1]}], "out.json")
    runner = CliRunner()
    cases = [([str(photo), "--checkpoint", str(eccv), "--hints", str(good)], "this network takes no hints"),
             ([str(photo), str(photo), "--checkpoint", "siggraph17-released", "--hints", str(good)],
              "give exactly one photo file, not 2 inputs"),
             ([str(tmp_path), "--checkpoint", "siggraph17-released", "--hints", str(good)], "not a folder"),
             ([str(photo), "--checkpoint", "siggraph17-released", "--hints", str(outside)],
              "hint 1 at (128, 5) is outside the 128 x 96 photo")]
    for args, message in cases:
        res = runner.invoke(cli, ["colorize", *args, "--size", "64", "--out", str(tmp_path / "o")])
        assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output, (args, res.output)
        assert not list((tmp_path / "o").glob("*.png"))
