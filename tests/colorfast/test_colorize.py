"""`cli.py colorize`: full-resolution output with the input's size and lightness, whatever the input."""
import cv2
import numpy as np
from click.testing import CliRunner
from PIL import Image

from cli import cli
from pipeline.images import load_rgb, rgb_to_lab
from colorfast.photos import fit_gamut, list_inputs
from smooth_photos import smooth_rgb


def test_output_keeps_size_and_lightness_for_awkward_inputs(tmp_path, ckpt):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(smooth_rgb(37, 53, 0)).save(src / "landscape_odd.png")              # odd sides
    Image.fromarray(smooth_rgb(301, 77, 1)).save(src / "sub" / "portrait.jpg", quality=92)
    Image.fromarray(smooth_rgb(45, 45, 2)[..., 0]).save(src / "scan_gray.png")         # mode L, like an old scan
    rgba = np.dstack([smooth_rgb(33, 47, 3), np.linspace(0, 255, 33 * 47).reshape(33, 47).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    Image.fromarray(smooth_rgb(20, 31, 4)).save(src / "big_upscaled.bmp")               # smaller than --size
    (src / "notes.jpg").write_text("not an image at all")
    out = tmp_path / "out"

    res = CliRunner().invoke(cli, ["colorize", str(src), "--checkpoint", str(ckpt), "--out", str(out),
                                   "--size", "64"])

    assert res.exit_code == 1, res.output
    assert "notes.jpg" in res.output and "unknown format" in res.output
    assert "Traceback" not in res.output
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert written == {"in/landscape_odd.png", "in/sub/portrait.png", "in/scan_gray.png", "in/alpha.png",
                       "in/big_upscaled.png"}
    for name in ["landscape_odd.png", "sub/portrait.jpg", "scan_gray.png", "alpha.png", "big_upscaled.bmp"]:
        rgb_in = load_rgb(src / name)
        rgb_out = load_rgb((out / "in" / name).with_suffix(".png"))
        assert rgb_out.shape == rgb_in.shape, name
        dL = np.abs(rgb_to_lab(rgb_out)[..., 0] - rgb_to_lab(rgb_in)[..., 0])
        assert dL.max() < 1.0, (name, dL.max())          # gamut tolerance + 8-bit rounding (<= 0.4 measured)


def test_gray_scan_gets_colour_from_the_network(tmp_path, ckpt):
    """The tiny model trained for 2 steps predicts *some* colour; the output must carry it, not the gray."""
    Image.fromarray(smooth_rgb(40, 56, 5)[..., 1]).save(tmp_path / "old.png")
    res = CliRunner().invoke(cli, ["colorize", str(tmp_path / "old.png"), "--checkpoint", str(ckpt),
                                   "--out", str(tmp_path / "o"), "--size", "32", "--temperature", "0.2"])
    assert res.exit_code == 0, res.output
    ab = rgb_to_lab(load_rgb(tmp_path / "o" / "old.png"))[..., 1:]
    assert np.hypot(ab[..., 0], ab[..., 1]).mean() > 1.0


def test_fit_gamut_keeps_lightness_and_hue_and_only_touches_impossible_colours():
    L = np.array([[50.0, 97.0, 20.0]], np.float32)
    ab = np.array([[[10.0, -10.0], [-60.0, 90.0], [40.0, -70.0]]], np.float32)        # in, out, out of gamut
    fitted = fit_gamut(L, ab)
    assert np.allclose(fitted[0, 0], ab[0, 0])                                        # displayable: untouched
    ratio = fitted[0, 1:] / ab[0, 1:]
    assert np.all(ratio < 1) and np.allclose(ratio[:, 0], ratio[:, 1])                # same hue, less chroma
    lab = np.dstack([L, fitted]).astype(np.float32)
    back = cv2.cvtColor(cv2.cvtColor(lab, cv2.COLOR_Lab2RGB), cv2.COLOR_RGB2Lab)
    assert np.abs(back[..., 0] - L).max() < 1.0


def test_list_inputs_walks_folders_and_keeps_names_unique(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for p in ["a/x.jpg", "a/x.png", "a/deep/y.JPEG", "a/readme.txt", "a/.hidden.png", "z.tif"]:
        (tmp_path / p).write_bytes(b"")
    pairs, ignored, missing = list_inputs([tmp_path / "a", tmp_path / "z.tif", tmp_path / "nope.png"])
    outs = [o.as_posix() for _, o in pairs]
    assert sorted(outs) == ["a/deep/y.png", "a/x.jpg.png", "a/x.png", "z.png"]    # x.png keeps its own name
    assert ignored == 1 and [str(p.name) for p, _ in missing] == ["nope.png"]


def test_bad_options_are_clear_errors(tmp_path, ckpt):
    img = tmp_path / "i.png"
    Image.fromarray(smooth_rgb(16, 16, 6)).save(img)
    res = CliRunner().invoke(cli, ["colorize", str(img), "--checkpoint", str(ckpt), "--size", "100"])
    assert res.exit_code == 2 and "multiple of 8" in res.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    res = CliRunner().invoke(cli, ["colorize", str(img), "--checkpoint", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "bad.pt" in res.output and "Traceback" not in res.output
