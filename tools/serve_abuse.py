"""`cli.py serve` under load and abuse (docs/benchmarks.md): the server's peak memory while many clients upload
large files at once, and how long a small photo waits behind large requests whose clients have gone.

    PYTHONPATH=. python tools/serve_abuse.py [--server-root DIR] [--uploads 60] [--upload-mb 24] [--queue N]

Starts `cli.py serve` from --server-root (default: this checkout; another checkout, e.g. `git archive` of an
older commit, measures that version) as a subprocess on a free port, serving a full-size ECCV16 network with
random weights (the time per photo does not depend on the weights' values). Two measurements:

  uploads:   --uploads clients each POST a --upload-mb body at once (a 60 x 40 JPEG followed by padding, which
             decoders ignore: the body is large, the work small, so what is measured is how uploads are held);
             the server's RSS is sampled every 20 ms; prints the peak and the responses' status codes.
  abandoned: --abandoned clients each send a --large-mp JPEG and hang up 1 s later, before their answer; then a
             60 x 40 JPEG is posted and its latency measured.

Prints a markdown table and the figures as JSON on the last line.
"""
import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2                                         # noqa: E402
import httpx                                       # noqa: E402
import numpy as np                                 # noqa: E402
import psutil                                      # noqa: E402


def eccv16_checkpoint(path: Path) -> Path:
    """A colorfast checkpoint of a randomly initialised ECCV16 network over the in-gamut bins."""
    import torch
    from pipeline.bins import in_gamut_centers
    from trainer import checkpoint
    from trainer.models import create_model
    centers = torch.tensor(np.array(in_gamut_centers()), dtype=torch.float32)
    model = create_model("eccv16", len(centers), centers)
    return checkpoint.save(path, {"model": model.state_dict(), "model_name": "eccv16",
                                  "out_channels": len(centers), "loss": "ce", "prior": None, "step": 0})


def jpeg(w: int, h: int, seed: int = 0) -> bytes:
    small = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC),
                            [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return data.tobytes()


def raw_post(port: int, body: bytes) -> socket.socket:
    """Sends a whole POST /api/colorize and returns the open socket (the answer not read)."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /api/colorize HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: image/jpeg\r\n"
              b"Content-Length: %d\r\n\r\n" % (port, len(body)) + body)
    return s


class PeakRss:
    """The peak resident memory of a process, sampled every 20 ms in a thread."""

    def __init__(self, pid: int):
        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure_uploads(url: str, pid: int, n: int, mb: float) -> dict:
    body = jpeg(60, 40) + b"\0" * int(mb * 2**20)
    barrier = threading.Barrier(n)

    def post(_):
        with httpx.Client(timeout=600) as c:
            barrier.wait()
            try:
                return str(c.post(f"{url}/api/colorize", content=body).status_code)
            except httpx.TransportError as e:            # a refused upload may see its connection closed
                return type(e).__name__

    before = psutil.Process(pid).memory_info().rss
    t = time.perf_counter()
    with PeakRss(pid) as rss, ThreadPoolExecutor(n) as pool:
        codes = Counter(pool.map(post, range(n)))
    return {"uploads": n, "upload_mb": mb, "rss_before_mb": before / 2**20, "rss_peak_mb": rss.peak / 2**20,
            "statuses": dict(codes), "uploads_wall_s": time.perf_counter() - t}


def measure_abandoned(url: str, port: int, n: int, mp: float) -> dict:
    w = int((mp * 1e6 * 1.5) ** 0.5)
    large, small = jpeg(w, int(mp * 1e6 / w), seed=1), jpeg(60, 40, seed=2)

    def abandon(_):
        s = raw_post(port, large)
        time.sleep(1.0)                                   # its body is in; then the client goes away
        s.close()

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(abandon, range(n)))
    t = time.perf_counter()
    with httpx.Client(timeout=600) as c:
        r = c.post(f"{url}/api/colorize", content=small)
    latency = time.perf_counter() - t
    assert r.status_code == 200, r.text
    return {"abandoned": n, "large_mp": w * int(mp * 1e6 / w) / 1e6, "large_mb": len(large) / 2**20,
            "small_latency_s": latency, "small_x_seconds": float(r.headers["x-seconds"])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server-root", default=str(ROOT), help="checkout whose cli.py serve is measured")
    ap.add_argument("--uploads", type=int, default=60)
    ap.add_argument("--upload-mb", type=float, default=24)
    ap.add_argument("--abandoned", type=int, default=4)
    ap.add_argument("--large-mp", type=float, default=36)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--queue", type=int, default=None, help="the server's --queue (only servers that have it)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        ck = eccv16_checkpoint(Path(d) / "eccv16.pt")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        root = Path(args.server_root).resolve()
        cmd = [sys.executable, str(root / "cli.py"), "serve", "--checkpoint", str(ck), "--port", str(port),
               "--size", str(args.size), "--device", "cpu"] + (["--queue", str(args.queue)] if args.queue else [])
        server = subprocess.Popen(cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 300
            while True:
                try:
                    httpx.get(f"{url}/api/health", timeout=5)
                    break
                except httpx.TransportError:
                    assert server.poll() is None and time.time() < deadline, "the server did not start"
                    time.sleep(0.2)
            with httpx.Client(timeout=300) as c:                  # warm-up: the first request loads lazily
                assert c.post(f"{url}/api/colorize", content=jpeg(60, 40)).status_code == 200
            res = {"server": str(root), "queue": args.queue}
            res.update(measure_uploads(url, server.pid, args.uploads, args.upload_mb))
            time.sleep(2)
            res.update(measure_abandoned(url, port, args.abandoned, args.large_mp))
        finally:
            server.terminate()
            server.wait(30)
    res["loadavg"] = os.getloadavg()[0]
    print("| server | uploads at once | RSS before | peak RSS | statuses | small photo behind "
          f"{args.abandoned} abandoned {res['large_mp']:.0f} MP | its X-Seconds |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {res['server']} | {res['uploads']} x {res['upload_mb']:g} MB | {res['rss_before_mb']:.0f} MB | "
          f"{res['rss_peak_mb']:.0f} MB | {res['statuses']} | {res['small_latency_s']:.1f} s | "
          f"{res['small_x_seconds']:.2f} s |")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
