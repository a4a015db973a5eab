"""`cli.py serve` with a guided checkpoint: hints in POST /api/colorize, suggested colours from POST /api/suggest,
one-line 4xx for bad hints, and the upload guards on the new route. The network is guided_weights' hint copier,
so where a hint's colour must appear is known."""
import io
import json
import threading

import cv2
import numpy as np
import pytest
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the API tests need httpx (extra [test])")
pytest.importorskip("fastapi", reason="serve needs the web extra")

import colorfast.serve as serve                        # noqa: E402
from cli import cli                                    # noqa: E402
from click.testing import CliRunner                    # noqa: E402
from colorfast.loader import load_colorizer         # noqa: E402
from guided_weights import LIKELY, save_hint_copy      # noqa: E402
from pipeline.images import lab_to_rgb, rgb_to_lab     # noqa: E402

W, H = 120, 90
HINTS = [{"x": 30, "y": 22, "color": "#2050d0"}, {"x": 92, "y": 66, "ab": [40, 30]}]


@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    return load_colorizer(save_hint_copy(tmp_path_factory.mktemp("guided") / "copy.pt"), device="cpu")


@pytest.fixture(scope="module")
def photo() -> bytes:
    small = np.random.default_rng(0).integers(60, 200, (3, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)).save(buf, "PNG")
    return buf.getvalue()


def ab_of(png: bytes) -> np.ndarray:
    return rgb_to_lab(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")))[..., 1:]


def ab_near(ab: np.ndarray, x: int, y: int, r: int = 2) -> np.ndarray:
    return ab[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 2).mean(0)


def hint_ab(hint) -> np.ndarray:
    if "ab" in hint:
        return np.array(hint["ab"], np.float32)
    rgb = np.array([[[int(hint["color"][i:i + 2], 16) for i in (1, 3, 5)]]], np.uint8)
    return rgb_to_lab(rgb)[0, 0, 1:]


def toward(got: np.ndarray, want: np.ndarray) -> float:
    """Cosine between two ab vectors (1: the same hue direction)."""
    return float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) + 1e-9))


def test_hints_colour_the_photo_where_they_are_as_the_form_field_or_the_query(guided, photo, start_server, tmp_path):
    with start_server(guided, size=64) as url, httpx.Client(timeout=60) as c:
        health = c.get(f"{url}/api/health").json()
        plain = c.post(f"{url}/api/colorize", content=photo)
        form = c.post(f"{url}/api/colorize", files={"file": ("p.png", photo, "image/png")},
                      data={"hints": json.dumps(HINTS)})
        query = c.post(f"{url}/api/colorize", content=photo, params={"hints": json.dumps(HINTS)})
    assert health["guided"] is True
    assert plain.status_code == form.status_code == query.status_code == 200, (form.text, query.text)
    assert plain.headers["x-hints"] == "0" and form.headers["x-hints"] == "2"
    assert form.content == query.content                   # the same hints either way
    gray, hinted = ab_of(plain.content), ab_of(form.content)
    assert np.abs(gray).max() < 2                          # this network adds colour only at hints
    for h in HINTS:
        got, want = ab_near(hinted, h["x"], h["y"]), hint_ab(h)
        assert toward(got, want) > 0.97 and np.linalg.norm(got) > 0.5 * np.linalg.norm(want), (h, got, want)
    assert np.abs(hinted[:8, -8:]).max() < 2 and np.abs(hinted[-8:, :8]).max() < 2   # far from both: gray
    # the same pixels as `cli.py colorize --hints`
    (tmp_path / "p.png").write_bytes(photo)
    (tmp_path / "hints.json").write_text(json.dumps(HINTS))
    res = CliRunner().invoke(cli, ["colorize", str(tmp_path / "p.png"), "--checkpoint", guided.source, "--size", "64",
                                   "--hints", str(tmp_path / "hints.json"), "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    cli_rgb = np.asarray(Image.open(tmp_path / "out" / "p.png").convert("RGB"))
    assert np.array_equal(cli_rgb, np.asarray(Image.open(io.BytesIO(form.content)).convert("RGB")))


def test_suggest_returns_the_class_heads_likely_colours_at_the_point(guided, photo, start_server):
    with start_server(guided, size=64) as url, httpx.Client(timeout=60) as c:
        r = c.post(f"{url}/api/suggest", params={"x": 50, "y": 40}, content=photo)
        two = c.post(f"{url}/api/suggest", params={"x": 50, "y": 40, "k": 2},
                     files={"file": ("p.png", photo, "image/png")}, data={"hints": json.dumps(HINTS)})
    assert r.status_code == 200 and two.status_code == 200, (r.text, two.text)
    body = r.json()
    assert (body["x"], body["y"]) == (50, 40) and len(body["colors"]) == 5
    assert [tuple(c["ab"]) for c in body["colors"][:3]] == [tuple(map(float, ab)) for ab in LIKELY]
    ps = [c["p"] for c in body["colors"]]
    assert ps == sorted(ps, reverse=True) and 0.5 < ps[0] < 1
    # a swatch shows that ab at the photo's own lightness there
    rgb = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    L = rgb_to_lab(rgb[40:41, 50:51])[0, 0, 0]
    first = lab_to_rgb(np.array([[[L, *LIKELY[0]]]], np.float32))[0, 0]
    assert body["colors"][0]["hex"] == "#" + "".join(f"{v:02x}" for v in first)
    assert len(two.json()["colors"]) == 2


@pytest.mark.parametrize("hints, status, words", [
    ("[{\"x\": 3", 400, "hints: not JSON"),
    ("[" * 200_000, 400, "nested too deeply"),
    (json.dumps([{"x": 500, "y": 3, "color": "#ff0000"}]), 400, "outside the 120 x 90 photo"),
    (json.dumps([{"x": 5, "y": 3, "colour": "#ff0000"}]), 400, "unknown key"),
    (json.dumps([{"x": 5, "y": 3, "color": "red"}]), 400, "#rrggbb"),
    (json.dumps({"x": 5, "y": 3}), 400, "list"),
    (json.dumps([{"x": 1, "y": 1, "ab": [0, 0]}] * (serve.MAX_HINTS + 1)), 400, f"at most {serve.MAX_HINTS}"),
])
def test_bad_hints_get_one_line_and_the_server_keeps_serving(guided, photo, start_server, hints, status, words):
    with start_server(guided, size=64) as url, httpx.Client(timeout=60) as c:
        r = c.post(f"{url}/api/colorize", files={"file": ("p.png", photo, "image/png")}, data={"hints": hints})
        s = c.post(f"{url}/api/suggest", params={"x": 5, "y": 5}, files={"file": ("p.png", photo, "image/png")},
                   data={"hints": hints})
        ok = c.post(f"{url}/api/colorize", content=photo)
    for res in (r, s):
        detail = res.json()["detail"]
        assert res.status_code == status and words in detail and "\n" not in detail, (res.status_code, detail)
    assert ok.status_code == 200


def test_suggest_points_outside_or_missing_are_422(guided, photo, start_server):
    with start_server(guided, size=64) as url, httpx.Client(timeout=60) as c:
        outside = c.post(f"{url}/api/suggest", params={"x": W, "y": 5}, content=photo)
        negative = c.post(f"{url}/api/suggest", params={"x": -1, "y": 5}, content=photo)
        missing = c.post(f"{url}/api/suggest", params={"x": 3}, content=photo)
        many = c.post(f"{url}/api/suggest", params={"x": 3, "y": 3, "k": 1000}, content=photo)
    assert outside.status_code == 422 and "outside the 120 x 90 photo" in outside.json()["detail"]
    assert negative.status_code == missing.status_code == many.status_code == 422
    assert "y" in missing.json()["detail"] and "\n" not in missing.json()["detail"]


def test_an_unguided_checkpoint_refuses_hints_and_suggestions_in_one_line(tiny_runs, photo, start_server):
    eccv = load_colorizer(tiny_runs[1]["ce"], device="cpu")
    with start_server(eccv, size=64) as url, httpx.Client(timeout=60) as c:
        health = c.get(f"{url}/api/health").json()
        hinted = c.post(f"{url}/api/colorize", files={"file": ("p.png", photo, "image/png")},
                        data={"hints": json.dumps(HINTS)})
        empty = c.post(f"{url}/api/colorize", files={"file": ("p.png", photo, "image/png")}, data={"hints": "[]"})
        suggest = c.post(f"{url}/api/suggest", params={"x": 3, "y": 3}, content=photo)
    assert health["guided"] is False
    assert hinted.status_code == 400 and "guided checkpoint" in hinted.json()["detail"]
    assert empty.status_code == 200                                   # no hints is no hints
    assert suggest.status_code == 400 and "guided checkpoint" in suggest.json()["detail"]


def test_suggest_waits_in_the_same_line_and_passes_the_same_guards(guided, photo, start_server, monkeypatch):
    hold, started = threading.Event(), threading.Event()
    load_rgb = serve.load_rgb

    def held(path):
        started.set()
        assert hold.wait(60)
        return load_rgb(path)

    monkeypatch.setattr(serve, "load_rgb", held)
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo)).resize((50, 40)).save(buf, "PNG")
    small = buf.getvalue()
    with start_server(guided, size=64, queue=0, max_mb=0.05, max_pixels=5000) as url, httpx.Client(timeout=60) as c:
        with httpx.Client(timeout=60) as other:
            import concurrent.futures
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                first = pool.submit(other.post, f"{url}/api/colorize", content=small)
                assert started.wait(30)
                busy = c.post(f"{url}/api/suggest", params={"x": 3, "y": 3}, content=small)
                hold.set()
                assert first.result().status_code == 200
        foreign = c.post(f"{url}/api/suggest", params={"x": 3, "y": 3}, content=small,
                         headers={"Origin": "http://evil.example"})
        big = c.post(f"{url}/api/suggest", params={"x": 3, "y": 3}, content=small + b"\0" * 60_000)
        wide = c.post(f"{url}/api/suggest", params={"x": 3, "y": 3}, content=photo)       # 10,800 px > 5,000
    assert busy.status_code == 503 and "busy" in busy.json()["detail"] and busy.headers["retry-after"]
    assert foreign.status_code == 403
    assert big.status_code == 413 and "over the limit" in big.json()["detail"]
    assert wide.status_code == 413 and "120 x 90" in wide.json()["detail"]
