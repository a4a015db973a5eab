"""A released-layout SIGGRAPH17 file without hints is an automatic colorizer like any other checkpoint:
colorize, evaluate, compare, video and the safetensors export take it."""
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli import cli
from colorfast.colorizer import load_colorizer
from pipeline.images import load_rgb, rgb_to_lab
from siggraph17_weights import released_siggraph17_state_dict


@pytest.fixture(scope="module")
def sg17(tmp_path_factory):
    path = tmp_path_factory.mktemp("sg17") / "siggraph17-tiny.pth"
    torch.save(released_siggraph17_state_dict(), path)
    return path


@pytest.fixture
def images(tmp_path):
    import skimage
    from pathlib import Path
    from pipeline.images import resize_center_crop
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("chelsea.png", "coffee.png"):
        rgb = resize_center_crop(load_rgb(Path(skimage.__file__).parent / "data" / name), 64)
        Image.fromarray(rgb).save(folder / name)
    return folder


def _chroma(path):
    return float(np.hypot(*rgb_to_lab(load_rgb(path))[..., 1:].transpose(2, 0, 1)).mean())


def test_colorize_evaluate_compare(sg17, images, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["colorize", str(images), "--checkpoint", str(sg17), "--size", "64",
                              "--out", str(tmp_path / "col")])
    assert res.exit_code == 0, res.output
    assert "colorized 2 image(s)" in res.output and "regression head" in res.output
    assert _chroma(tmp_path / "col" / "imgs" / "chelsea.png") > 2.0      # colours from the network
    res = runner.invoke(cli, ["evaluate", "--checkpoint", str(sg17), "--images", str(images), "--size", "64",
                              "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    assert "siggraph17-tiny" in res.output and "PSNR" in res.output.upper()
    res = runner.invoke(cli, ["compare", "--checkpoint", str(sg17), "--images", str(images), "--size", "64",
                              "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert "regression head" in (tmp_path / "cmp" / "index.html").read_text()


def test_evaluate_scores_the_colours_the_user_gets_the_regression_heads(sg17):
    """Not the class head's annealed mean: the figures are those of the ab that colorize writes."""
    from colorfast.evaluate import Model, predictor
    col = load_colorizer(sg17)
    p = predictor(Model("sg17", str(sg17), col))
    L = torch.rand(2, 1, 32, 32) * 100
    assert p.centers is None
    torch.testing.assert_close(p.forward(L) * 110, col.predict_ab(L))


def test_safetensors_export_round_trips_and_decodes_the_same(sg17, images, tmp_path):
    out = tmp_path / "sg17.safetensors"
    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(sg17), "--out", str(out)])
    assert res.exit_code == 0, res.output
    a, b = load_colorizer(sg17), load_colorizer(out)
    assert b.guided and b.released and b.upsample == "bilinear" and b.default_temperature is None
    L = torch.rand(1, 1, 48, 64) * 100
    hint_ab, mask = torch.zeros(1, 2, 48, 64), torch.zeros(1, 1, 48, 64)
    hint_ab[..., 10:15, 20:25], mask[..., 10:15, 20:25] = 50.0, 1.0
    torch.testing.assert_close(a.predict_ab(L, hints=(hint_ab, mask)), b.predict_ab(L, hints=(hint_ab, mask)))
    res = CliRunner().invoke(cli, ["colorize", str(images / "coffee.png"), "--checkpoint", str(out),
                                   "--size", "64", "--out", str(tmp_path / "col")])
    assert res.exit_code == 0, res.output


def test_video(sg17, tmp_path):
    pytest.importorskip("av", reason="video needs PyAV (extra [video])")
    from colorfast.flicker import pan_clip, read_frames
    src = pan_clip(tmp_path / "clip.mp4", size=(64, 48), frames=6, cut=3, fps=12)
    res = CliRunner().invoke(cli, ["colorize", str(src), "--checkpoint", str(sg17), "--size", "32",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    frames_out, _ = read_frames(tmp_path / "out" / "clip.mp4")
    assert len(frames_out) == 6 and frames_out[0].shape == (48, 64, 3)
