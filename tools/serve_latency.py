"""Latency of `cli.py serve` per request for a 1 MP photo, measured against a real server (docs/benchmarks.md).

    PYTHONPATH=. python tools/serve_latency.py --checkpoint artifacts/runs/demo/last.pt [--eccv16]

Starts `cli.py serve` as a subprocess on a free port, posts a ~1 MP JPEG (scikit-image's astronaut scaled to
1155 x 866) `--requests` times one after another (after one warm-up request), each followed by the same
photo through colorize_rgb in this process (the cost of HTTP, decoding and PNG), then the same number of
requests from 4 clients at once.
`--eccv16`: a full-size ECCV16 network (32 M parameters) with random weights in the checkpoint's bins
instead of the checkpoint's own network; latency does not depend on the weights' values. Prints a
markdown table and the figures as JSON on the last line.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2                                         # noqa: E402
import httpx                                       # noqa: E402
from PIL import Image                              # noqa: E402

from colorfast.colorize import colorize_rgb        # noqa: E402
from colorfast.loader import load_colorizer     # noqa: E402
from pipeline.images import load_rgb               # noqa: E402


def eccv16_checkpoint(like: str, path: Path) -> Path:
    """A colorfast checkpoint of a randomly initialised ECCV16 network with `like`'s bin centres."""
    from trainer import checkpoint
    from trainer.models import create_model
    centers = load_colorizer(like).centers
    model = create_model("eccv16", len(centers), centers)
    return checkpoint.save(path, {"model": model.state_dict(), "model_name": "eccv16",
                                  "out_channels": len(centers), "loss": "ce", "prior": None, "step": 0})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--eccv16", action="store_true")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        ck = eccv16_checkpoint(args.checkpoint, Path(d) / "eccv16.pt") if args.eccv16 else Path(args.checkpoint)
        from skimage import data
        photo = Path(d) / "photo.jpg"
        Image.fromarray(cv2.resize(data.astronaut(), (1155, 866), interpolation=cv2.INTER_CUBIC)).save(photo, quality=92)
        body = photo.read_bytes()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--checkpoint", str(ck),
                                   "--port", str(port), "--size", str(args.size), "--device", "cpu"],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
        url = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(timeout=300) as c:
                deadline = time.time() + 300
                while True:
                    try:
                        c.get(f"{url}/api/health")
                        break
                    except httpx.TransportError:
                        assert server.poll() is None and time.time() < deadline, "the server did not start"
                        time.sleep(0.2)

                def post(_=None):
                    t = time.perf_counter()
                    r = c.post(f"{url}/api/colorize", content=body)
                    assert r.status_code == 200, r.text
                    return time.perf_counter() - t, float(r.headers["x-seconds"])

                colorizer = load_colorizer(ck, device="cpu")
                rgb = load_rgb(photo)

                def direct():
                    t = time.perf_counter()
                    colorize_rgb(colorizer, rgb, args.size)
                    return time.perf_counter() - t

                post(), direct()                                              # warm-up
                serial, inproc = [], []
                for _ in range(args.requests):          # interleaved, so that both see the same machine load
                    serial.append(post())
                    inproc.append(direct())
                t = time.perf_counter()
                with ThreadPoolExecutor(4) as pool:
                    list(pool.map(post, range(args.requests)))
                concurrent_wall = time.perf_counter() - t
        finally:
            server.terminate()
            server.wait(30)
    res = {"photo": "1155x866 JPEG (1.0 MP)", "model": "eccv16 (random weights)" if args.eccv16 else str(args.checkpoint),
           "request_s_median": statistics.median(s for s, _ in serial), "request_s_min": min(s for s, _ in serial),
           "server_work_s_median": statistics.median(w for _, w in serial),
           "colorize_rgb_s_median": statistics.median(inproc),
           "concurrent4_s_per_request": concurrent_wall / args.requests, "loadavg": os.getloadavg()[0]}
    print("| model | request (median) | min | decode+colorize+PNG in the server | colorize_rgb in-process | "
          "4 clients at once, wall per request |")
    print("|---|---|---|---|---|---|")
    print(f"| {res['model']} | {res['request_s_median']:.2f} s | {res['request_s_min']:.2f} s | "
          f"{res['server_work_s_median']:.2f} s | {res['colorize_rgb_s_median']:.2f} s | "
          f"{res['concurrent4_s_per_request']:.2f} s |")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
