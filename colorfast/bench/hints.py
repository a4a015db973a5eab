"""`cli.py bench hints`: latency of one hint update in the web page for a ~1 MP photo, torch CPU vs ONNX Runtime.

A hint update is what the page sends when a person drops a moved hint or picks its colour: the photo again with
every hint (`POST /api/colorize`, multipart, 2 hints, one of them moved 9 px each time as in a drag), and the
suggested colours for the moved one (`POST /api/suggest`, with the other hint). Both go to real `serve`
subprocesses (bench/serve.py), one serving the checkpoint with torch and one its `export` with `--runtime onnx`,
the requests interleaved between the two so that load on a shared machine hits both alike (one server works at
a time). A suggestion is the photo's decode and one network pass; an update adds the full-resolution rebuild and
the PNG. Before timing, each server colorizes the photo once without hints and once with them: the figures
say whether the hints changed its answer (they must, or the timing is of a page that ignores them).

The network is the full-size SIGGRAPH17 one (34 M parameters; `tiny`: siggraph17-tiny) with random weights in
the reference's 529 bins: latency does not depend on the weights' values, and nothing is downloaded.
(Until issue 20 this was tools/hint_latency.py.)
"""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from colorfast.bench.serve import PHOTO, multipart, post, running_server, write_astronaut

RUNTIMES = ("torch", "onnx")


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


def bench_hints(requests: int = 6, size: int = 256, tiny: bool = False, echo=print) -> dict:
    """-> the figures (seconds); echoes a markdown table, a row per runtime."""
    import torch
    from colorfast.onnx_export import export
    with tempfile.TemporaryDirectory(prefix="bench_hints_") as d, ExitStack() as servers:
        ck = random_checkpoint(Path(d) / "siggraph17.pt", tiny)
        onnx_path, _, delta = export(ck, Path(d) / "siggraph17.onnx")
        photo = write_astronaut(Path(d) / "photo.jpg").read_bytes()
        urls = {"torch": servers.enter_context(running_server(str(ck), size, "--runtime", "torch")),
                "onnx": servers.enter_context(running_server(str(onnx_path), size, "--runtime", "onnx"))}

        served = {r: json.loads(urllib.request.urlopen(f"{urls[r]}/api/health", timeout=30).read())["checkpoint"]
                  for r in RUNTIMES}                 # the file each server loaded: the .pt with torch, the .onnx

        def send(r: str, route: str, hints: list[dict], query: str = "") -> tuple[float, float, bytes]:
            return post(f"{urls[r]}/api/{route}{query}", *multipart(photo, {"hints": json.dumps(hints)}))

        def update(r: str, step: int) -> tuple[float, float]:
            return send(r, "colorize", hints_at(step))[:2]

        def suggest(r: str, step: int) -> tuple[float, float]:
            moved = hints_at(step)[1]
            return send(r, "suggest", hints_at(step)[:1], f"?x={moved['x']}&y={moved['y']}")[:2]

        # also the warm-up: the first request of each server pays for its lazy set-up
        hints_change = {r: send(r, "colorize", [])[2] != send(r, "colorize", hints_at(0))[2] for r in RUNTIMES}
        for r in RUNTIMES:
            suggest(r, 0)
        updates, suggestions = {r: [] for r in RUNTIMES}, {r: [] for r in RUNTIMES}
        for step in range(1, requests + 1):
            for r in RUNTIMES:                  # interleaved, so that both see the same machine load
                updates[r].append(update(r, step))
                suggestions[r].append(suggest(r, step))
    med = statistics.median
    res = {"photo": f"{PHOTO[0]}x{PHOTO[1]} JPEG (1.0 MP), 2 hints",
           "model": ("siggraph17-tiny" if tiny else "siggraph17") + " (random weights)", "size": size,
           "requests": requests, "onnx_parity_ab": delta, "loadavg": os.getloadavg()[0],
           "torch_threads": torch.get_num_threads()}
    for r in RUNTIMES:
        res[r] = {"update_s_median": med(s for s, _ in updates[r]), "update_s_min": min(s for s, _ in updates[r]),
                  "update_server_s_median": med(w for _, w in updates[r]),
                  "suggest_s_median": med(s for s, _ in suggestions[r]), "hints_change_png": hints_change[r],
                  "served": served[r]}
    echo("| runtime | hint update: request, median | min | server work (`X-Seconds`) | suggested colours "
         "(`/api/suggest`), median |")
    echo("|---|---|---|---|---|")
    for r in RUNTIMES:
        f = res[r]
        echo(f"| {'torch CPU' if r == 'torch' else 'ONNX Runtime CPU'} | {f['update_s_median']:.2f} s | "
             f"{f['update_s_min']:.2f} s | {f['update_server_s_median']:.2f} s | {f['suggest_s_median']:.2f} s |")
    return res
