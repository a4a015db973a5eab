"""What giving up a guarantee would buy ImageNet-sized photos: pipeline ms/image against decode-only, in one process.

    python tools/preprocess_relaxations.py [--photo 500 375] [--images 300]

The pipeline keeps three guarantees that cost time on a ~500x375 JPEG; each row drops some and measures the real
`preprocess.run` (jobs 1, one process, best of 2 runs) against the full-resolution decode of the same files:
- OpenCV's float Lab, bit for bit (the row "CIE float32 kernel" swaps in a fused numba kernel of the CIE formulas:
  one pass for Lab, stored L and the 4x4 ab mean; within 0.005 ab of scikit-image's float64 rgb2lab where OpenCV's
  float path is within ~0.4, but the stored bytes change: L moves by one step on ~20 % of the pixels);
- compact shards (`--storage none`: format 1's uncompressed arrays, 0.73 -> 1.00 of the bytes);
- full-resolution L (`decode_slack 0.7`: a 500x375 JPEG decoded at 1/2 by DCT scaling, 250x187, then upscaled
  1.37x to 256).
Nothing here is used by the pipeline; it produced the relaxation table in docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import contract, preprocess                          # noqa: E402
from pipeline.bench import _decode_shard, synth_jpegs              # noqa: E402
from pipeline.config import PrepConfig                             # noqa: E402
from pipeline.datasets import list_dataset                         # noqa: E402
from pipeline.preprocess import ShardSpec                          # noqa: E402

_V = np.arange(256) / 255.0
SRGB_TO_LINEAR = np.where(_V <= 0.04045, _V / 12.92, ((_V + 0.055) / 1.055) ** 2.4).astype(np.float32)
# OpenCV's sRGB -> XYZ (D65) matrix with its rows divided by the white point, so white has a = b = 0 exactly
XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
XYZ = (XYZ / XYZ.sum(1, keepdims=True)).astype(np.float32)


@numba.njit(fastmath=True, nogil=True, boundscheck=False, error_model="numpy")
def cie_lab_kernel(rgb, lut, M, inv_lscale, L_out, ab_out):
    """(S, S, 3) uint8 sRGB -> L_out (S, S) uint8 (round(L* / L_SCALE)), ab_out (2, S/4, S/4) float32 4x4 means.
    Row by row, in loops LLVM vectorises: a cube root from the float bits (i / 3 + bias) and two Halley steps."""
    S = rgb.shape[0]
    T = S // 4
    X, Y, Z = np.empty(S, np.float32), np.empty(S, np.float32), np.empty(S, np.float32)
    F = np.empty((3, S), np.float32)
    A, B = np.empty(S, np.float32), np.empty(S, np.float32)
    acc = np.zeros((2, T), np.float32)
    eps, k, c = np.float32(0.008856), np.float32(7.787), np.float32(16.0 / 116.0)
    Fi = F.view(np.int32)
    for y in range(S):
        for x in range(S):
            r, g, b = lut[rgb[y, x, 0]], lut[rgb[y, x, 1]], lut[rgb[y, x, 2]]
            X[x] = M[0, 0] * r + M[0, 1] * g + M[0, 2] * b
            Y[x] = M[1, 0] * r + M[1, 1] * g + M[1, 2] * b
            Z[x] = M[2, 0] * r + M[2, 1] * g + M[2, 2] * b
        Xi, Yi, Zi = X.view(np.int32), Y.view(np.int32), Z.view(np.int32)
        for x in range(S):
            Fi[0, x] = Xi[x] // 3 + 709921077
            Fi[1, x] = Yi[x] // 3 + 709921077
            Fi[2, x] = Zi[x] // 3 + 709921077
        for x in range(S):
            vx, vy, vz = X[x], Y[x], Z[x]
            fx, fy, fz = F[0, x], F[1, x], F[2, x]
            for _ in range(2):
                t = fx * fx * fx
                fx = fx * (t + 2 * vx) / (2 * t + vx)
                t = fy * fy * fy
                fy = fy * (t + 2 * vy) / (2 * t + vy)
                t = fz * fz * fz
                fz = fz * (t + 2 * vz) / (2 * t + vz)
            fx = fx if vx > eps else k * vx + c
            fz = fz if vz > eps else k * vz + c
            L = np.float32(116.0) * fy - np.float32(16.0) if vy > eps else np.float32(903.3) * vy
            fy = fy if vy > eps else k * vy + c
            q = math.floor(L * inv_lscale + np.float32(0.5))
            L_out[y, x] = np.uint8(min(max(q, np.float32(0)), np.float32(255)))
            A[x] = np.float32(500.0) * (fx - fy)
            B[x] = np.float32(200.0) * (fy - fz)
        for t in range(T):
            acc[0, t] += (A[4 * t] + A[4 * t + 1]) + (A[4 * t + 2] + A[4 * t + 3])
            acc[1, t] += (B[4 * t] + B[4 * t + 1]) + (B[4 * t + 2] + B[4 * t + 3])
        if y % 4 == 3:
            for t in range(T):
                ab_out[0, y // 4, t] = acc[0, t] * np.float32(1 / 16)
                ab_out[1, y // 4, t] = acc[1, t] * np.float32(1 / 16)
                acc[0, t] = 0
                acc[1, t] = 0


def cie_stored_l_ab(square: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """preprocess.stored_l_ab through the CIE kernel instead of OpenCV's float Lab, 4x4 mean and L rounding."""
    S = square.shape[0]
    L, ab = np.empty((S, S), np.uint8), np.empty((2, S // 4, S // 4), np.float32)
    cie_lab_kernel(square, SRGB_TO_LINEAR, XYZ, np.float32(1 / contract.L_SCALE), L, ab)
    return L, ab.transpose(1, 2, 0)


ROWS = (("as is", {}, False), ("CIE float32 kernel", {}, True), ("storage none", {"storage": "none"}, False),
        ("decode_slack 0.7", {"decode_slack": 0.7}, False),
        ("all three", {"storage": "none", "decode_slack": 0.7}, True), ("as is (again)", {}, False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photo", type=int, nargs=2, default=(500, 375), metavar=("W", "H"))
    ap.add_argument("--images", type=int, default=300)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="preprocess_relaxations_"))
    original = preprocess.stored_l_ab
    try:
        root = str(synth_jpegs(tmp / "images", args.images, w=args.photo[0], h=args.photo[1]))
        listing = list_dataset("folder", root, 1, 0.1, "all", args.images)
        everything = ShardSpec("all", 0, tuple(k for k, _ in listing.items))
        base = PrepConfig(dataset="folder", root=root, jobs=1, limit=args.images)
        preprocess.run(replace(base, limit=20, out_dir=str(tmp / "warm")), progress=False)
        cie_stored_l_ab(np.zeros((base.size, base.size, 3), np.uint8))               # compiles the kernel
        for label, changes, cie in ROWS:
            preprocess.stored_l_ab = cie_stored_l_ab if cie else original
            best = math.inf
            for attempt in range(2):
                t0 = time.perf_counter()
                result = preprocess.run(replace(base, out_dir=str(tmp / f"out{attempt}"), **changes), progress=False)
                best = min(best, (time.perf_counter() - t0) / result.seen)
                shutil.rmtree(tmp / f"out{attempt}")
            t0 = time.perf_counter()
            _decode_shard(everything, str(listing.root))
            decode = (time.perf_counter() - t0) / len(everything.keys)
            print(f"{label:20s} pipeline {1e3 * best:.3f} ms/img, decode-only {1e3 * decode:.3f}: "
                  f"ratio {decode / best:.2f}", flush=True)
    finally:
        preprocess.stored_l_ab = original
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
