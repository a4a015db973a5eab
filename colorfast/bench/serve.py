"""`cli.py bench serve`: latency of `serve` per request for a ~1 MP photo, against a real server.

Starts `python -m colorfast serve` as a subprocess on a free port, posts a ~1 MP JPEG (scikit-image's astronaut
scaled to 1155 x 866) `requests` times one after another (after one warm-up request), each followed by the same
photo through colorize_rgb in this process (what HTTP, decoding and PNG add), then the same number of requests
from 4 clients at once. `eccv16`: a full-size ECCV16 network (32 M parameters) with random weights in the
checkpoint's bins instead of the checkpoint's own network; latency does not depend on the weights' values.
(Until issue 20 this was tools/serve_latency.py.)
"""
from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import cv2

from colorfast.bench.memory import PACKAGE_ROOT, tiny_checkpoint
from colorfast.photos import colorize_rgb
from colorfast.loader import load_colorizer
from pipeline.images import load_rgb

PHOTO = (1155, 866)               # ~1 MP, the size the web page's users send most


def eccv16_checkpoint(like: str, path: Path) -> Path:
    """A colorfast checkpoint of a randomly initialised ECCV16 network with `like`'s bin centres."""
    from trainer import checkpoint
    from trainer.models import create_model
    centers = load_colorizer(like).centers
    model = create_model("eccv16", len(centers), centers)
    return checkpoint.save(path, {"model": model.state_dict(), "model_name": "eccv16",
                                  "out_channels": len(centers), "loss": "ce", "prior": None, "step": 0})


def write_astronaut(path: Path) -> Path:
    """scikit-image's astronaut scaled to PHOTO (~1 MP), as a quality-92 JPEG: the photo every serve bench posts."""
    from skimage import data
    cv2.imwrite(str(path), cv2.resize(data.astronaut()[..., ::-1], PHOTO, interpolation=cv2.INTER_CUBIC),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/health", timeout=10).read()
            return
        except (urllib.error.URLError, ConnectionError):
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the server did not start (exit status {server.poll()}): "
                                   f"{server.stdout.read().decode(errors='replace').strip()[-300:]}") from None
            time.sleep(0.2)


@contextmanager
def running_server(checkpoint: str, size: int, *args: str):
    """A real `python -m colorfast serve --checkpoint CHECKPOINT --size SIZE [ARGS]` on a free port, on the CPU
    -> its base URL once /api/health answers; stopped on exit."""
    port = _free_port()
    env = {**os.environ, "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")) if p)}
    server = subprocess.Popen([sys.executable, "-m", "colorfast", "serve", "--checkpoint", checkpoint, "--port",
                               str(port), "--size", str(size), "--device", "cpu", *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, server)
        yield url
    finally:
        server.terminate()
        server.wait(30)


def multipart(file: bytes, fields: dict[str, str], filename: str = "photo.jpg") -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data upload, as the web page sends it: the photo and text fields.
    Hand-written because the standard library only parses these and httpx is a test dependency."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                 f'Content-Type: image/jpeg\r\n\r\n'.encode() + file + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes, content_type: str = "application/octet-stream") -> tuple[float, float, bytes]:
    """POST body to url -> (seconds the request took here, the server's X-Seconds, the answer's bytes)."""
    t = time.perf_counter()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=300) as r:
        answer = r.read()
        return time.perf_counter() - t, float(r.headers["x-seconds"]), answer


def bench_serve(checkpoint: str = "", eccv16: bool = False, requests: int = 8, size: int = 256, echo=print) -> dict:
    """-> the figures (seconds); echoes a markdown row."""
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as d:
        base = checkpoint or str(tiny_checkpoint(Path(d)))
        ck = str(eccv16_checkpoint(base, Path(d) / "eccv16.pt")) if eccv16 else base
        photo = write_astronaut(Path(d) / "photo.jpg")
        body = photo.read_bytes()
        with running_server(ck, size) as url:

            def post_photo(_=None):
                return post(f"{url}/api/colorize", body)[:2]

            colorizer = load_colorizer(ck, device="cpu")
            rgb = load_rgb(photo)

            def direct():
                t = time.perf_counter()
                colorize_rgb(colorizer, rgb, size)
                return time.perf_counter() - t

            post_photo(), direct()                                            # warm-up
            serial, inproc = [], []
            for _ in range(requests):                   # interleaved, so that both see the same machine load
                serial.append(post_photo())
                inproc.append(direct())
            t = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(post_photo, range(requests)))
            concurrent_wall = time.perf_counter() - t
    res = {"photo": f"{PHOTO[0]}x{PHOTO[1]} JPEG (1.0 MP)",
           "model": "eccv16 (random weights)" if eccv16 else (checkpoint or "tiny (2 steps, synthetic)"),
           "request_s_median": statistics.median(s for s, _ in serial), "request_s_min": min(s for s, _ in serial),
           "server_work_s_median": statistics.median(w for _, w in serial),
           "colorize_rgb_s_median": statistics.median(inproc),
           "concurrent4_s_per_request": concurrent_wall / requests, "loadavg": os.getloadavg()[0]}
    echo("| model | request (median) | min | decode+colorize+PNG in the server | colorize_rgb in-process | "
         "4 clients at once, wall per request |")
    echo("|---|---|---|---|---|---|")
    echo(f"| {res['model']} | {res['request_s_median']:.2f} s | {res['request_s_min']:.2f} s | "
         f"{res['server_work_s_median']:.2f} s | {res['colorize_rgb_s_median']:.2f} s | "
         f"{res['concurrent4_s_per_request']:.2f} s |")
    return res
