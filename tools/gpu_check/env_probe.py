"""One JSON line: the Python, torch/CUDA build and GPU the checks run on; whether every repo module the
checks use imports there (a half-edited file shows up here first) without pulling in faiss; whether faiss
is installed at all."""
import importlib
import json
import os
import sys

import cv2
import h5py
import numpy
import torch

sys.path.insert(0, os.getcwd())
bad = {}
for mod in ("cli", "trainer.loop", "colorfast.bench.step", "colorfast.photos", "colorfast.evaluate", "trainer.synthetic"):
    try:
        importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - reported; the other steps still run
        bad[mod] = f"{type(e).__name__}: {e}"
repo_loaded_faiss = sys.modules.get("faiss") is not None
try:
    import faiss  # noqa: F401
    fa = "installed"
except ImportError:
    fa = "absent"
ok = torch.cuda.is_available()
try:
    import subprocess
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
except (OSError, IndexError, subprocess.SubprocessError):
    driver = None
info = {"python": sys.version.split()[0], "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(), "cuda_available": ok, "driver": driver, "numpy": numpy.__version__,
        "h5py": h5py.__version__, "cv2": cv2.__version__, "cpu_threads": torch.get_num_threads(),
        "repo_imports": bad or "ok", "repo_imports_faiss": repo_loaded_faiss, "faiss": fa}
if ok:
    p = torch.cuda.get_device_properties(0)
    info.update(gpu=p.name, sms=p.multi_processor_count, mem_gib=round(p.total_memory / 2**30, 1),
                bf16=torch.cuda.is_bf16_supported())
    x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    (x @ x).sum().item()                                   # warm-up
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        x @ x
    end.record()
    torch.cuda.synchronize()
    info["bf16_matmul_tflops"] = round(20 * 2 * 4096 ** 3 / (start.elapsed_time(end) / 1e3) / 1e12, 1)
print(json.dumps(info))
