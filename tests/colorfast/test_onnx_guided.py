"""`cli.py export` of a guided network (siggraph17): hints are graph inputs, onnxruntime's colours and suggested
colours equal torch's, and `colorize --runtime onnx --hints` and `serve --runtime onnx` take hints."""
import io
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli import cli
from colorfast.net_input import net_input_rgb
from colorfast.loader import load_colorizer
from colorfast.hints import hint_planes, parse_hints
from pipeline.images import rgb_to_lab
from siggraph17_weights import random_hints, released_siggraph17_state_dict

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
from test_onnx import _one_line_error, _rewritten, _gray_png     # noqa: E402

HINTS = [{"x": 150, "y": 120, "color": "#2050d0"}, {"x": 380, "y": 300, "ab": [45, 35]}]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(torch checkpoint: a live published-layout SIGGRAPH17 state dict with a hint path, its .onnx)."""
    d = tmp_path_factory.mktemp("guided-onnx")
    torch.save(released_siggraph17_state_dict(), d / "siggraph17_tiny.pth")
    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(d / "siggraph17_tiny.pth"), "--out",
                                   str(d / "guided.onnx")])
    assert res.exit_code == 0, res.output
    return d / "siggraph17_tiny.pth", d / "guided.onnx"


def assert_same_picture(a: np.ndarray, b: np.ndarray) -> None:
    """8-bit rounding apart, but for a few near-black pixels: there the gamut fit (full_resolution.fit_gamut)
    turns the runtimes' <1e-3 ab difference into a visible one (7 of 262,144 pixels in the run checked)."""
    diff = np.abs(a.astype(int) - b.astype(int)).max(-1)
    assert (diff > 1).mean() < 1e-4, ((diff > 1).sum(), diff.max())


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data
    return skimage.data.astronaut()                                   # (512, 512, 3) uint8


def test_the_graph_takes_hints_and_gives_both_heads(exported):
    session = ort.InferenceSession(str(exported[1]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["L", "hint_ab", "hint_mask"]
    assert [o.name for o in session.get_outputs()] == ["ab", "logits"]
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["colorfast.guided"] == "true" and len(json.loads(meta["colorfast.centers"])) == 529
    onnx_colorizer = load_colorizer(exported[1])
    assert onnx_colorizer.guided and onnx_colorizer.runtime == "onnx"
    assert "regression head" in onnx_colorizer.describe()


def test_onnx_equals_torch_with_and_without_hints_on_a_real_photo(exported, astronaut):
    torch_c, onnx_c = load_colorizer(exported[0], device="cpu"), load_colorizer(exported[1])
    L = net_input_rgb(astronaut, 128)
    planes = hint_planes(parse_hints(HINTS), astronaut.shape[:2], (128, 128))
    hinted = torch_c.predict_ab(L, hints=planes)
    plain = torch_c.predict_ab(L)
    assert (hinted - plain).abs().max() > 5                          # the hints matter to this network
    for hints, want in ((planes, hinted), (None, plain)):
        got = onnx_c.predict_ab(L, hints=hints)
        assert got.shape == want.shape == (1, 2, 128, 128)
        assert (got - want).abs().max() < 1e-3
    batch_L = torch.cat([L, L.flip(-1)])
    batch_hints = random_hints(2, 128)
    assert (onnx_c.predict_ab(batch_L, hints=batch_hints) - torch_c.predict_ab(batch_L, hints=batch_hints)).abs().max() < 1e-3
    # odd sizes are padded and cropped as torch's are
    odd = L[..., :100, :92]
    assert (onnx_c.predict_ab(odd, hints=tuple(p[..., :100, :92] for p in planes)) -
            torch_c.predict_ab(odd, hints=tuple(p[..., :100, :92] for p in planes))).abs().max() < 1e-3
    # suggested colours: the same bins, the same probabilities
    for hints in (None, planes):
        a, b = torch_c.suggest(L, 40, 70, hints=hints, k=5), onnx_c.suggest(L, 40, 70, hints=hints, k=5)
        assert [x[:2] for x in a] == [x[:2] for x in b] and np.allclose([x[2] for x in a], [x[2] for x in b], atol=1e-4)


def test_colorize_runtime_onnx_with_hints_writes_what_torch_writes(exported, astronaut, tmp_path):
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    (tmp_path / "hints.json").write_text(json.dumps(HINTS))
    out = {}
    for name, ck in (("torch", exported[0]), ("onnx", exported[1])):
        res = CliRunner().invoke(cli, ["colorize", str(tmp_path / "astronaut.png"), "--checkpoint", str(ck),
                                       "--hints", str(tmp_path / "hints.json"), "--size", "128",
                                       "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        assert ("onnxruntime" in res.output) == (name == "onnx")
        out[name] = np.asarray(Image.open(tmp_path / name / "astronaut.png").convert("RGB"))
    assert_same_picture(out["torch"], out["onnx"])


def test_serve_runtime_onnx_guides(exported, astronaut, start_server):
    httpx = pytest.importorskip("httpx", reason="the API tests need httpx (extra [test])")
    pytest.importorskip("fastapi", reason="serve needs the web extra")
    buf = io.BytesIO()
    Image.fromarray(astronaut).save(buf, "PNG")
    files = {"file": ("astronaut.png", buf.getvalue(), "image/png")}
    got = {}
    for name, ck in (("torch", exported[0]), ("onnx", exported[1])):
        with start_server(load_colorizer(ck, device="cpu"), size=128) as url, httpx.Client(timeout=120) as c:
            assert c.get(f"{url}/api/health").json()["guided"] is True
            r = c.post(f"{url}/api/colorize", files=files, data={"hints": json.dumps(HINTS)})
            s = c.post(f"{url}/api/suggest", params={"x": 150, "y": 120}, files=files)
        assert r.status_code == 200 and r.headers["x-hints"] == "2" and s.status_code == 200, (r.text, s.text)
        got[name] = (np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int), s.json()["colors"])
    assert_same_picture(got["torch"][0], got["onnx"][0])
    assert [c["ab"] for c in got["torch"][1]] == [c["ab"] for c in got["onnx"][1]]
    ab = rgb_to_lab(got["onnx"][0].astype(np.uint8))[..., 1:]
    blue = rgb_to_lab(np.array([[[0x20, 0x50, 0xd0]]], np.uint8))[0, 0, 1:]
    near = ab[117:124, 147:154].reshape(-1, 2).mean(0)
    assert near @ blue / (np.linalg.norm(near) * np.linalg.norm(blue)) > 0.9, near      # the hint's hue there


@pytest.mark.parametrize("meta, key", [({"guided": "false"}, "colorfast.loss"), ({"guided": "maybe"}, "colorfast.guided")])
def test_a_guided_graph_with_spoofed_metadata_is_a_one_line_error(exported, tmp_path, meta, key):
    spoofed = _rewritten(exported[1], tmp_path / "spoofed.onnx", **meta)
    res = CliRunner().invoke(cli, ["colorize", str(_gray_png(tmp_path)), "--checkpoint", str(spoofed),
                                   "--out", str(tmp_path / "o")])
    _one_line_error(res, str(spoofed), key)
