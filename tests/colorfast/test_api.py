"""`import colorfast` as a user calls it: load a checkpoint, colorize PIL images, numpy arrays and paths.

The network is the conftest's tiny released-layout state dict, its BatchNorms calibrated on real photos
(live_networks), so its colours depend on the input: a test that loses or rescales the input sees it."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage
from click.testing import CliRunner
from PIL import Image

import colorfast
from pipeline.images import rgb_to_lab
from released_weights import hash_named

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def colorizer(released_file):
    return colorfast.load(released_file[0])


@pytest.fixture(scope="module")
def photo():
    """A real colour photo, small enough to be quick (96 x 128), uint8 RGB."""
    return np.ascontiguousarray(skimage.data.chelsea()[::3, ::3][:96, :128])


def lightness(rgb) -> np.ndarray:
    return rgb_to_lab(np.asarray(rgb))[..., 0]


def chroma(rgb) -> np.ndarray:
    ab = rgb_to_lab(np.asarray(rgb))[..., 1:]
    return np.hypot(ab[..., 0], ab[..., 1])


def test_import_is_light_and_the_api_is_its_face():
    """`import colorfast` must not import torch (the command's --help stays instant); the names load."""
    code = ("import sys, colorfast; heavy = [m for m in ('torch', 'cv2', 'numpy') if m in sys.modules]; "
            "assert not heavy, heavy; assert {'load', 'colorize', 'Colorizer'} <= set(dir(colorfast))")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    assert callable(colorfast.load) and isinstance(colorfast.Colorizer, type)


def test_colorize_stays_the_function_once_the_command_modules_are_imported(photo, colorizer):
    """A submodule colorfast.colorize would replace the function as the package's attribute when imported."""
    import importlib
    import pkgutil
    for module in pkgutil.walk_packages(colorfast.__path__, "colorfast."):
        if not module.name.endswith("__main__"):               # __main__ runs the command line
            importlib.import_module(module.name)
    out = colorfast.colorize(photo, checkpoint=colorizer)
    assert out.shape == photo.shape


def test_uint8_rgb_keeps_its_lightness_gets_the_networks_colours_and_the_input_is_untouched(photo, colorizer):
    before = photo.copy()
    out = colorizer.colorize(photo)
    assert out.dtype == np.uint8 and out.shape == photo.shape
    np.testing.assert_array_equal(photo, before)
    assert np.abs(lightness(out) - lightness(photo)).max() < 1.0
    assert chroma(out).mean() > 2.0                                    # colour, not the gray input's
    assert np.abs(out.astype(int) - photo).mean() > 2.0                # and not the photo's own colours
    other = colorizer.colorize(np.ascontiguousarray(photo[::-1, ::-1]))[::-1, ::-1]
    assert np.abs(other.astype(int) - out).mean() > 1.0                # the colours depend on the input


def test_a_float_image_never_comes_back_black(photo, colorizer):
    """float in 0..1 -> float in 0..1 with the colours of the uint8 image (it came back black: every array
    was read as 0..255)."""
    want = colorizer.colorize(photo).astype(np.float64) / 255
    for dtype in (np.float32, np.float64, np.float16):
        out = colorizer.colorize(photo.astype(dtype) / dtype(255))
        assert out.dtype == dtype and out.shape == photo.shape
        assert 0 <= out.min() and out.max() <= 1
        assert out.mean() > 0.2, f"{dtype.__name__}: came back dark ({out.mean():.3f})"
        tolerance = 0.05 if dtype is np.float16 else 1.5 / 255        # float16: a coarser L goes in
        assert np.abs(out - want).max() < tolerance, dtype.__name__


def test_uint16_keeps_its_range_and_colours(photo, colorizer):
    out = colorizer.colorize(photo.astype(np.uint16) * 257)
    assert out.dtype == np.uint16 and out.max() > 255 * 20                # 0..65535, not 0..255
    np.testing.assert_allclose(out / 65535, colorizer.colorize(photo) / 255, atol=1.5 / 255)


def test_gray_array_comes_back_rgb_and_rgba_keeps_its_alpha(photo, colorizer):
    gray = lightness(photo).astype(np.float32) / 100
    out = colorizer.colorize(gray)
    assert out.shape == gray.shape + (3,) and out.dtype == np.float32
    assert np.abs(lightness(out) - lightness(np.repeat(gray[..., None], 3, 2))).max() < 1.0
    alpha = np.linspace(0, 255, photo.shape[0] * photo.shape[1]).reshape(photo.shape[:2]).astype(np.uint8)
    out = colorizer.colorize(np.dstack([photo, alpha]))
    assert out.shape == photo.shape[:2] + (4,)
    np.testing.assert_array_equal(out[..., 3], alpha)
    np.testing.assert_array_equal(out[..., :3], colorizer.colorize(photo))


def test_pil_in_pil_out_in_the_same_mode_family(photo, colorizer):
    rgb = colorizer.colorize(photo)
    for mode, want in (("RGB", "RGB"), ("L", "RGB"), ("RGBA", "RGBA"), ("LA", "RGBA"), ("P", "RGB")):
        out = colorizer.colorize(Image.fromarray(photo).convert(mode))
        assert isinstance(out, Image.Image) and out.mode == want and out.size == (photo.shape[1], photo.shape[0])
    np.testing.assert_array_equal(np.asarray(colorizer.colorize(Image.fromarray(photo))), rgb)
    la = Image.fromarray(photo).convert("LA")
    la.putalpha(77)
    assert np.all(np.asarray(colorizer.colorize(la))[..., 3] == 77)
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    deep = Image.fromarray(gray.astype(np.uint16) * 257)                                    # I;16, a 16-bit scan
    assert deep.mode.startswith("I;16")
    gray_l = lightness(np.repeat(gray[..., None], 3, 2))
    assert np.abs(lightness(colorizer.colorize(deep)) - gray_l).max() < 1.0                # not clipped to white
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        colorizer.colorize(Image.fromarray(np.full((8, 8), 3.0, np.float32), "F"))


def test_a_path_gives_the_colorize_commands_own_pixels(tmp_path, photo, released_file, colorizer):
    """Path in -> PIL out, decoded and colorized exactly as `colorfast colorize` writes it."""
    from cli import cli
    alpha = np.full(photo.shape[:2], 200, np.uint8)
    Image.fromarray(np.dstack([photo, alpha]), "RGBA").save(tmp_path / "cat.png")
    res = CliRunner().invoke(cli, ["colorize", str(tmp_path / "cat.png"), "--checkpoint", str(released_file[0]),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    out = colorizer.colorize(tmp_path / "cat.png")
    assert isinstance(out, Image.Image) and out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out), np.asarray(Image.open(tmp_path / "out" / "cat.png")))
    assert colorizer.colorize(str(tmp_path / "cat.png")).size == (photo.shape[1], photo.shape[0])


@pytest.mark.parametrize("image, expected", [
    (np.zeros((3, 16, 16), np.uint8), r"channels last.*\(3, 16, 16\).*transpose"),
    (np.zeros((16, 16, 2), np.uint8), r"\(H, W\) gray.*\(16, 16, 2\)"),
    (np.zeros((16, 16, 3), np.int64), r"uint8 .*uint16 .*float .*got int64"),
    (np.zeros((16, 16), bool), r"got bool"),
    (np.full((16, 16, 3), 255.0), r"\[0, 1\].*max 255"),
    (np.full((16, 16), -0.5, np.float32), r"\[0, 1\].*min -0.5"),
    (np.where(np.eye(16, dtype=bool), np.nan, 0.5), r"\[0, 1\].*16 NaN"),
    (np.zeros((0, 16, 3), np.uint8), r"must have pixels"),
    ([[0, 1], [1, 0]], r"PIL image, a numpy array .* or a path, got list"),
])
def test_wrong_images_are_one_line_value_errors(colorizer, image, expected):
    with pytest.raises(ValueError, match=expected) as e:
        colorizer.colorize(image)
    assert "\n" not in str(e.value)


def test_bad_files_and_settings_are_one_line_value_errors(tmp_path, colorizer, photo):
    (tmp_path / "notes.jpg").write_text("not a photo")
    for path, expected in ((tmp_path / "notes.jpg", r"notes\.jpg: unknown format"),
                           (tmp_path / "gone.png", r"gone\.png does not exist")):
        with pytest.raises(ValueError, match=expected) as e:
            colorizer.colorize(path)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="temperature"):
        colorizer.colorize(photo, temperature=float("nan"))
    with pytest.raises(ValueError, match="multiple of 8"):
        colorizer.colorize(photo, size=100)


def test_temperature_and_size_change_the_colours(colorizer, photo):
    vivid, default = colorizer.colorize(photo, temperature=0.2), colorizer.colorize(photo)
    assert chroma(vivid).mean() > chroma(default).mean() + 1.0
    assert np.abs(colorizer.colorize(photo, size=64).astype(int) - default).mean() > 0.5


def test_colorize_in_one_call_loads_once_and_again_when_the_file_changes(tmp_path, released_file, photo,
                                                                      monkeypatch):
    import colorfast.api
    loads = []
    real = colorfast.api.load_colorizer
    monkeypatch.setattr(colorfast.api, "load_colorizer", lambda *a, **k: loads.append(a) or real(*a, **k))
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(released_file[0].read_bytes())
    first = colorfast.colorize(photo, checkpoint=ckpt)
    np.testing.assert_array_equal(colorfast.colorize(photo, str(ckpt)), first)
    assert len(loads) == 1
    os.utime(ckpt, ns=(1, 1))                                     # "rewritten": another mtime
    colorfast.colorize(photo, checkpoint=ckpt)
    assert len(loads) == 2


def test_a_training_checkpoint_loads_and_colorizes(tiny_runs, photo):
    for loss in ("ce", "l2"):
        colorizer = colorfast.load(tiny_runs[1][loss])
        assert colorizer.loss == loss and colorizer.runtime == "torch"
        assert ("l2 regression" in repr(colorizer)) == (loss == "l2")
        gray = Image.fromarray(photo).convert("L")
        out = colorizer.colorize(gray)
        assert out.mode == "RGB" and np.abs(lightness(out) - lightness(gray.convert("RGB"))).max() < 1.0


def test_the_readme_example_runs_as_written(tmp_path, released_file, photo):
    """The README's "Python API" block, run unchanged; `eccv16-released` comes from a local mirror of the
    fixture weights (the hub's URL variable) into a torch hub cache of the test's own."""
    block = re.search(r"\n## Python API\n\n```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)[1]
    data = released_file[0].read_bytes()
    (tmp_path / hash_named(data)).write_bytes(data)
    Image.fromarray(photo).save(tmp_path / "old_scan.jpg")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path / "torch"),
           "COLORFAST_ECCV16_RELEASED_URL": (tmp_path / hash_named(data)).as_uri()}
    res = subprocess.run([sys.executable, "-c", block + "print(rgb.shape, rgb.dtype, same.mode)"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "(96, 128, 3) float32 RGB"
    assert Image.open(tmp_path / "old_scan_colour.png").size == (photo.shape[1], photo.shape[0])


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    """A guided network (SIGGRAPH17, published layout, small widths) whose output follows its hints."""
    import torch
    from siggraph17_weights import released_siggraph17_state_dict
    path = tmp_path_factory.mktemp("guided") / "siggraph17.pth"
    torch.save(released_siggraph17_state_dict(), path)
    return colorfast.load(path)


def test_hints_move_the_colours_near_them_in_every_form_a_user_gives_them(guided, photo, tmp_path, colorizer):
    from colorfast.hints import Hint, color_ab
    import json
    target = np.array(color_ab("#1040e0"))
    as_dict = [{"x": 90, "y": 30, "color": "#1040e0", "size": 8}]
    file = tmp_path / "hints.json"
    file.write_text(json.dumps(as_dict))
    plain = guided.colorize(photo, size=64)
    assert guided.guided and not colorizer.guided
    near = (slice(27, 34), slice(87, 94))
    outs = [guided.colorize(photo, size=64, hints=h) for h in
            (as_dict, file, str(file), [Hint(90, 30, tuple(target), 8)])]
    for out in outs:
        ab, ab0 = rgb_to_lab(out)[..., 1:], rgb_to_lab(plain)[..., 1:]
        assert np.linalg.norm(ab[near] - target, axis=-1).mean() < np.linalg.norm(ab0[near] - target, axis=-1).mean() - 10
    np.testing.assert_array_equal(outs[0], outs[1])
    pil = colorfast.colorize(Image.fromarray(photo), guided, size=64, hints=as_dict)
    np.testing.assert_array_equal(np.asarray(pil), outs[0])
    np.testing.assert_array_equal(guided.colorize(photo, size=64, hints=[]), plain)


@pytest.mark.parametrize("hints, expected", [
    ([{"x": 200, "y": 5, "ab": [1, 1]}], "hint 0 at (200, 5) is outside the 128 x 96 photo"),
    ([{"x": 5, "y": 5, "color": "blue"}], "hint 0: color 'blue' is not of the form '#rrggbb'"),
    ({"x": 5}, "hints must be a list"),
])
def test_bad_hints_are_one_line_value_errors(guided, photo, hints, expected):
    with pytest.raises(ValueError, match=re.escape(expected)) as e:
        guided.colorize(photo, size=64, hints=hints)
    assert "\n" not in str(e.value)


def test_hints_for_a_network_that_takes_none_are_refused(colorizer, photo):
    with pytest.raises(ValueError, match="this network takes no hints"):
        colorizer.colorize(photo, hints=[{"x": 5, "y": 5, "ab": [1, 1]}])
