"""Latency of one hint update in the web page for a ~1 MP photo: torch CPU vs ONNX Runtime (docs/benchmarks.md).

    PYTHONPATH=. python tools/hint_latency.py [--requests 6] [--size 256] [--tiny]

A hint update is what the page sends when a person drops a moved hint or picks its colour: the photo again
with every hint (`POST /api/colorize`, multipart, 2 hints, one of them moved each time as in a drag), and the
suggested colours for the moved one (`POST /api/suggest`, with the other hint). Both go to real `cli.py serve`
subprocesses, one serving the checkpoint with torch and one its `cli.py export` with `--runtime onnx`, the
requests interleaved between the two so that load on a shared machine hits both alike (one server works at a
time). A suggestion is the photo's decode and one network pass; an update adds the full-resolution rebuild
and the PNG.

The network is the full-size SIGGRAPH17 one (34 M parameters; `--tiny`: siggraph17-tiny) with random weights
in the reference's 529 bins: latency does not depend on the weights' values, and nothing is downloaded.
Prints a markdown table and the figures as JSON on the last line.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2                                         # noqa: E402
import httpx                                       # noqa: E402
import torch                                       # noqa: E402
from PIL import Image                              # noqa: E402


W, H = 1155, 866                                   # scikit-image's astronaut scaled to 1.0 MP, as serve_latency


def random_checkpoint(path: Path, tiny: bool) -> Path:
    """A colorfast checkpoint of a randomly initialised SIGGRAPH17 network with the reference's 529 bins."""
    from trainer import checkpoint
    from trainer.models import create_model
    from trainer.siggraph17 import grid_centers
    centers = grid_centers()
    name = "siggraph17-tiny" if tiny else "siggraph17"
    model = create_model(name, len(centers), centers)
    return checkpoint.save(path, {"model": model.state_dict(), "model_name": name, "out_channels": len(centers),
                                  "loss": "ce", "step": 0})


def hints_at(step: int) -> list[dict]:
    """Two hints; the second one moves 9 px a step (a drag across the astronaut's suit)."""
    return [{"x": 300, "y": 200, "color": "#3a6bc4"}, {"x": 600 + 9 * step, "y": 650, "color": "#d8d0c0"}]


def start_server(ck: Path, runtime: str, size: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--checkpoint", str(ck), "--port",
                               str(port), "--size", str(size), "--device", "cpu", "--runtime", runtime],
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    return server, f"http://127.0.0.1:{port}"


def wait_until_up(c: httpx.Client, server: subprocess.Popen, url: str) -> None:
    deadline = time.time() + 300
    while True:
        try:
            c.get(f"{url}/api/health")
            return
        except httpx.TransportError:
            assert server.poll() is None and time.time() < deadline, "the server did not start"
            time.sleep(0.2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args(argv)
    from colorfast.onnx_export import export
    from skimage import data
    runtimes = ("torch", "onnx")
    with tempfile.TemporaryDirectory() as d:
        ck = random_checkpoint(Path(d) / "siggraph17.pt", args.tiny)
        onnx_path, _, delta = export(ck, Path(d) / "siggraph17.onnx")
        photo = Path(d) / "photo.jpg"
        Image.fromarray(cv2.resize(data.astronaut(), (W, H), interpolation=cv2.INTER_CUBIC)).save(photo, quality=92)
        body = photo.read_bytes()
        servers = {"torch": start_server(ck, "torch", args.size), "onnx": start_server(onnx_path, "onnx", args.size)}
        update = {r: [] for r in runtimes}          # (client seconds, server X-Seconds) per colorize request
        suggest = {r: [] for r in runtimes}
        try:
            with httpx.Client(timeout=300) as c:
                for r in runtimes:
                    wait_until_up(c, *servers[r])

                def post(r, route, step):
                    hints = hints_at(step)
                    params = {"x": hints[1]["x"], "y": hints[1]["y"]} if route == "suggest" else {}
                    sent = hints[:1] if route == "suggest" else hints
                    t = time.perf_counter()
                    res = c.post(f"{servers[r][1]}/api/{route}", params=params,
                                 files={"file": ("photo.jpg", body, "image/jpeg")}, data={"hints": json.dumps(sent)})
                    assert res.status_code == 200, res.text
                    return time.perf_counter() - t, float(res.headers["x-seconds"])

                for r in runtimes:                                  # warm-up
                    post(r, "colorize", 0), post(r, "suggest", 0)
                for step in range(1, args.requests + 1):
                    for r in runtimes:          # interleaved, so that both see the same machine load
                        update[r].append(post(r, "colorize", step))
                        suggest[r].append(post(r, "suggest", step))
        finally:
            for server, _ in servers.values():
                server.terminate()
                server.wait(30)
    med = statistics.median
    res = {"photo": f"{W}x{H} JPEG ({W * H / 1e6:.1f} MP), 2 hints", "model": ("siggraph17-tiny" if args.tiny else
           "siggraph17") + " (random weights)", "size": args.size, "requests": args.requests,
           "onnx_parity_ab": delta, "loadavg": os.getloadavg()[0], "torch_threads": torch.get_num_threads()}
    for r in runtimes:
        res[r] = {"update_s_median": med(s for s, _ in update[r]), "update_s_min": min(s for s, _ in update[r]),
                  "update_server_s_median": med(w for _, w in update[r]),
                  "suggest_s_median": med(s for s, _ in suggest[r])}
    print("| runtime | hint update: request, median | min | server work (`X-Seconds`) | suggested colours "
          "(`/api/suggest`), median |")
    print("|---|---|---|---|---|")
    for r in runtimes:
        f = res[r]
        print(f"| {'torch CPU' if r == 'torch' else 'ONNX Runtime CPU'} | {f['update_s_median']:.2f} s | "
              f"{f['update_s_min']:.2f} s | {f['update_server_s_median']:.2f} s | {f['suggest_s_median']:.2f} s |")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
