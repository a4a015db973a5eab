"""`cli.py serve`: the HTTP API on a real uvicorn server: CLI-equal PNGs under concurrency, 4xx for bad input."""
import io
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

httpx = pytest.importorskip("httpx", reason="the API tests need httpx (extra [test])")
pytest.importorskip("fastapi", reason="serve needs the web extra")

from cli import cli                                    # noqa: E402
from colorfast.loader import load_colorizer         # noqa: E402
from smooth_photos import smooth_rgb                    # noqa: E402


@pytest.fixture(scope="module")
def colorizer(ckpt):
    return load_colorizer(ckpt, device="cpu")


def encoded(rgb, fmt, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, fmt, **kw)
    return buf.getvalue()


def png_declaring(w: int, h: int) -> bytes:
    """A 1x1 PNG whose header (IHDR, CRC fixed up) claims w x h: what a decompression bomb's header says."""
    data = bytearray(encoded(np.zeros((1, 1, 3), np.uint8), "PNG"))
    ihdr = bytearray(data[12:29])                        # b"IHDR" + 13 bytes
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def test_20_concurrent_requests_all_succeed_and_equal_the_cli(tmp_path, ckpt, colorizer, start_server):
    photos = {"odd.png": encoded(smooth_rgb(37, 53, 0), "PNG"),
              "photo.jpg": encoded(smooth_rgb(120, 90, 1), "JPEG", quality=90),
              "scan.png": encoded(smooth_rgb(64, 48, 2)[..., 0], "PNG"),       # gray, mode L
              "wide.webp": encoded(smooth_rgb(40, 160, 3), "WEBP", lossless=True),
              "alpha.png": encoded(np.dstack([smooth_rgb(33, 47, 6), np.arange(33 * 47, dtype=np.uint8).reshape(33, 47)]),
                                   "PNG")}                                         # RGBA: alpha kept
    temps = [0.38, 0.2]
    expected = {}
    for name, data in photos.items():
        (tmp_path / name).write_bytes(data)
        for t in temps:
            out = tmp_path / f"cli-{t}"
            res = CliRunner().invoke(cli, ["colorize", str(tmp_path / name), "--checkpoint", str(ckpt),
                                           "--out", str(out), "--size", "64", "--temperature", str(t)])
            assert res.exit_code == 0, res.output
            expected[name, t] = np.asarray(Image.open((out / name).with_suffix(".png")))
    jobs = [(name, temps[i % 2]) for i, name in enumerate(list(photos) * 4)]          # 20 requests
    with start_server(colorizer, size=64, queue=len(jobs)) as url:                   # room for all of them
        start = threading.Barrier(len(jobs))

        def post(job):
            name, t = job
            with httpx.Client(timeout=120) as client:
                start.wait()                                                       # all at once
                if name.endswith(".jpg"):                                          # the form upload too
                    return client.post(f"{url}/api/colorize", params={"temperature": t},
                                       files={"image": (name, photos[name])})
                return client.post(f"{url}/api/colorize", params={"temperature": t}, content=photos[name])

        with ThreadPoolExecutor(len(jobs)) as pool:
            responses = list(pool.map(post, jobs))
    for (name, t), r in zip(jobs, responses):
        assert r.status_code == 200, (name, r.text)
        assert r.headers["content-type"] == "image/png" and r.headers["x-temperature"] == f"{t:g}"
        got = np.asarray(Image.open(io.BytesIO(r.content)))
        assert got.shape[2] == (4 if name == "alpha.png" else 3), name
        assert np.array_equal(got, expected[name, t]), name


def test_bad_input_gets_a_4xx_with_a_message_and_the_server_keeps_serving(colorizer, start_server):
    good = encoded(smooth_rgb(30, 40, 4), "PNG")
    with start_server(colorizer, size=64, max_mb=0.05, max_pixels=1_000_000) as url, httpx.Client(timeout=60) as c:
        api = f"{url}/api/colorize"

        def chunks():                                          # no Content-Length: the limit applies while reading
            for _ in range(20):
                yield b"\0" * 8192

        cases = {
            "not an image": (c.post(api, content=b"just some text, no image"), 415, "not an image"),
            "empty": (c.post(api, content=b""), 400, "empty upload"),
            "over max-mb": (c.post(api, content=good + b"\0" * 60_000), 413, "over the limit of 0.05 MB"),
            "over max-mb, chunked": (c.post(api, content=chunks()), 413, "over the limit of 0.05 MB"),
            "over max-mb, form": (c.post(api, files={"image": ("a.png", good + b"\0" * 60_000)}), 413, "over the limit"),
            "over max-pixels": (c.post(api, content=png_declaring(2000, 1000)), 413, "2000 x 1000 = 2.0 MP"),
            "a bomb's header": (c.post(api, content=png_declaring(60000, 60000)), 413, "too large"),
            "truncated header": (c.post(api, content=encoded(smooth_rgb(64, 64, 5), "JPEG")[:300]), 400, "truncated"),
            "truncated pixels": (c.post(api, content=encoded(smooth_rgb(64, 64, 5), "JPEG")[:-200]), 400, "truncated"),
            "form without a file": (c.post(api, content=b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n',
                                           headers={"content-type": "multipart/form-data; boundary=b"}), 400, "no file field"),
            "bad temperature": (c.post(api, params={"temperature": "-1"}, content=good), 422, "temperature"),
            "wrong method": (c.get(api), 405, "Method Not Allowed"),
            "wrong method 2": (c.delete(api), 405, "Method Not Allowed"),
        }
        for case, (r, status, words) in cases.items():
            assert r.status_code == status, (case, r.status_code, r.text)
            assert words in r.json()["detail"], (case, r.text)
        assert c.get(f"{url}/api/health").json()["status"] == "ok"
        r = c.post(api, content=good)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (40, 30)


def test_health_and_an_offline_page(colorizer, start_server):
    with start_server(colorizer, size=64) as url, httpx.Client(timeout=30) as c:
        h = c.get(f"{url}/api/health").json()
        page = c.get(url)
    assert h["status"] == "ok" and h["loss"] == "ce" and h["max_mb"] == 25 and h["temperature"] == 0.38
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    html = page.text.lower()
    assert 'type="file"' in html and "api/colorize" in html
    for external in ('src="http', "src='http", 'href="http', "url(http", "@import", "//cdn"):
        assert external not in html, external                 # nothing fetched from elsewhere: works offline


def test_released_weights_are_served_at_their_own_temperature(released_file, start_server):
    colorizer = load_colorizer(released_file[0], device="cpu")
    png = encoded(smooth_rgb(40, 56, 7), "PNG")
    with start_server(colorizer, size=64) as url, httpx.Client(timeout=60) as c:
        h = c.get(f"{url}/api/health").json()
        default, chosen = (c.post(f"{url}/api/colorize", content=png, params=p) for p in ({}, {"temperature": 0.5}))
    assert h["temperature"] == 1 and "bilinear" in h["decoding"]      # as the reference decodes them
    assert default.headers["x-temperature"] == "1" and chosen.headers["x-temperature"] == "0.5"
    assert default.content != chosen.content


def test_serve_refuses_a_missing_or_bad_checkpoint(tmp_path):
    res = CliRunner().invoke(cli, ["serve", "--checkpoint", str(tmp_path / "nope.pt")])
    assert res.exit_code == 2 and "no such file, and not a known checkpoint name" in res.output
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    res = CliRunner().invoke(cli, ["serve", "--checkpoint", str(tmp_path / "bad.pt")])
    assert res.exit_code == 1 and "not a PyTorch checkpoint" in res.output and "Traceback" not in res.output
