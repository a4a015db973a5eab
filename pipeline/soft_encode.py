"""Soft encoding: each target pixel's K nearest ab bins with Gaussian weights (DESIGN.md, "The recipe").

Exact, and cheap. A faiss IndexFlatL2 search of one image's 4,096 pixels costs ~13 ms, several times the
JPEG decode, yet the answer depends only on (a, b). So faiss runs once, when the encoder is built, over the
centres of a fine lookup grid on the ab plane (CELL = 1 ab unit): for each cell it yields a candidate set
that provably holds the K nearest bins of *every* point in the cell. By the triangle inequality, for a
point p in a cell with centre c and half-diagonal r, the K-th nearest distance from p is at most
D_K(c) + r, and a bin q can only be that near if |c - q| <= D_K(c) + 2 r. Per pixel, a numba kernel then
ranks the ~8-12 candidates of its cell exactly (float64 squared distances, ties to the lower bin index,
exactly like a stable argsort of brute-force distances). Points outside the grid scan all bins.

Targets are encoded from the float16-rounded ab that the shard stores, so anyone recomputing the
neighbours from the stored `ab` gets the same indices.
"""
from __future__ import annotations

import hashlib
import math
import zlib

import numba
import numpy as np

CELL = 1.0                       # lookup-grid cell side, in ab units
GRID_LO, GRID_HI = -128.0, 128.0 # the grid covers the ab square that sRGB colours (and their averages) fill
FAISS_K = 64                     # neighbours faiss returns per cell centre; cells it cannot certify fall back


class SoftEncoder:
    """Exact K-nearest-bin soft encoder over fixed bin centres. Picklable (plain arrays), so it is built once
    in the main process and shipped to workers; building it needs faiss, using it needs only numba."""

    def __init__(self, centers: np.ndarray, k: int, sigma: float):
        self.centers = np.ascontiguousarray(centers, np.float64)          # (Q, 2)
        if not 1 <= k <= len(self.centers):
            raise ValueError(f"knn must be between 1 and the number of bins ({len(self.centers)}), got {k}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.k, self.sigma = int(k), float(sigma)
        self.offsets, self.cand = candidate_table(self.centers, self.k)   # CSR: cell g owns cand[off[g]:off[g+1]]

    @property
    def Q(self) -> int:
        return len(self.centers)

    def __reduce__(self):
        """Pickle as ~140 KB instead of ~1.3 MB, and unpickle to the same object once per process. The encoder
        rides along with every shard task, and on 16 cores shipping 1.3 MB per task through loky's one feeder
        thread held workers idle between tasks (7-11 ms mean gaps, 20-34 ms max) and delayed the first tasks
        (docs/benchmarks.md, "On 16 cores"). The lookup table is very redundant (neighbouring cells share candidates),
        so zlib at level 1 shrinks it ~10x; the digest lets a worker skip even the decompression after its
        first task."""
        if not hasattr(self, "_packed"):              # cell sizes fit uint16: nn_idx is uint16, so Q < 65536
            table = np.diff(self.offsets).astype(np.uint16).tobytes() + self.cand.tobytes()
            digest = hashlib.sha1(table + self.centers.tobytes() + f"{self.k} {self.sigma}".encode()).hexdigest()
            self._packed = (digest, self.centers, self.k, self.sigma, zlib.compress(table, 1))
        return _unpack, self._packed

    def encode(self, ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ab (N, 2, H, W) (float16 as stored) -> nn_idx (N, K, H, W) uint16, nn_w (N, K, H, W) float16,
        neighbours nearest first, weights exp(-d^2 / 2 sigma^2) normalised to sum 1 over K."""
        N, two, H, W = ab.shape
        assert two == 2, ab.shape
        flat = np.ascontiguousarray(ab, np.float64).reshape(N, 2, H * W)
        idx = np.empty((N, self.k, H * W), np.uint16)
        w = np.empty((N, self.k, H * W), np.float32)       # squared distance beyond the nearest, then weight
        _encode_kernel(flat, self.centers, self.offsets, self.cand, GRID_LO, 1.0 / CELL, _grid_n(), self.k, idx, w)
        # exp(-d^2 / 2 sigma^2) normalised over K; relative to the nearest, so nothing underflows. Done here
        # rather than in the kernel: numpy's vectorised float32 exp is ~10x cheaper than scalar calls
        np.multiply(w, np.float32(-1.0 / (2 * self.sigma ** 2)), out=w)
        np.exp(w, out=w)
        w /= w.sum(axis=1, keepdims=True)
        return idx.reshape(N, self.k, H, W), w.astype(np.float16).reshape(N, self.k, H, W)

    def encode_points(self, ab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ab (P, 2) -> idx (P, K) uint16, w (P, K) float16; for tests and one-off use."""
        idx, w = self.encode(np.asarray(ab, np.float64).T.reshape(1, 2, 1, -1))
        return idx[0, :, 0].T, w[0, :, 0].T


_UNPACKED: dict[str, SoftEncoder] = {}          # digest -> encoder, this process's copies (see __reduce__)


def _unpack(digest: str, centers: np.ndarray, k: int, sigma: float, packed: bytes) -> SoftEncoder:
    if digest not in _UNPACKED:
        table = zlib.decompress(packed)
        n_cells = _grid_n() ** 2
        enc = SoftEncoder.__new__(SoftEncoder)
        enc.centers, enc.k, enc.sigma = centers, k, sigma
        enc.offsets = np.zeros(n_cells + 1, np.int64)
        np.cumsum(np.frombuffer(table, np.uint16, n_cells), out=enc.offsets[1:])
        enc.cand = np.frombuffer(table, np.int16, offset=2 * n_cells).copy()
        _UNPACKED.clear()                            # one encoder per run: keep only the latest
        _UNPACKED[digest] = enc
    return _UNPACKED[digest]


def _grid_n() -> int:
    return int(round((GRID_HI - GRID_LO) / CELL))


def candidate_table(centers: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """For every grid cell, the bins that can be among the k nearest of some point in it.
    centers (Q, 2) float64 -> offsets (G*G + 1,) int64, cand (total,) int16, cells in row-major (a, b) order."""
    import faiss                                        # only the builder needs faiss; workers get the table

    G, Q = _grid_n(), len(centers)
    r = CELL * math.sqrt(0.5)                                            # half-diagonal of a cell
    ticks = GRID_LO + CELL * (np.arange(G) + 0.5)
    cell_centres = np.stack(np.meshgrid(ticks, ticks, indexing="ij"), -1).reshape(-1, 2)     # (G*G, 2)
    index = faiss.IndexFlatL2(2)
    index.add(centers.astype(np.float32))
    kk = min(FAISS_K, Q)
    _, I = index.search(cell_centres.astype(np.float32), kk)            # (G*G, kk), approximately sorted
    # faiss ranks in float32 (|x|^2 + |y|^2 - 2xy); redo the distances of its answer exactly
    d = np.sqrt(((cell_centres[:, None, :] - centers[I]) ** 2).sum(-1))  # (G*G, kk)
    order = np.argsort(d, axis=1, kind="stable")
    d, I = np.take_along_axis(d, order, axis=1), np.take_along_axis(I, order, axis=1)
    margin = 1e-6 * (1 + d[:, -1])                                        # float rounding of the bound itself
    bound = d[:, k - 1] + 2 * r + margin                                 # D_K(c) + 2r
    certified = (d[:, -1] > bound) | (kk == Q)                           # faiss's kk reach past the bound
    rows = []
    for g in range(G * G):
        if certified[g]:                                                 # nearest to the cell centre first
            rows.append(I[g][d[g] <= bound[g]])
        else:                                                            # far outside the gamut: exact numpy
            dg = np.sqrt(((centers - cell_centres[g]) ** 2).sum(-1))
            order = np.argsort(dg, kind="stable")
            rows.append(order[dg[order] <= dg[order[k - 1]] + 2 * r + 1e-6 * (1 + dg.max())])
    offsets = np.zeros(G * G + 1, np.int64)
    offsets[1:] = np.cumsum([len(r) for r in rows])
    return offsets, np.concatenate(rows).astype(np.int16)


@numba.njit(cache=True, nogil=True)
def _encode_kernel(ab, centers, offsets, cand, lo, inv_cell, G, k, idx_out, d_out):
    """ab (N, 2, P) float64 -> idx_out (N, k, P) uint16, the k nearest bins (nearest first), and d_out (N, k, P)
    float32, their squared distances minus the nearest one's (written in place)."""
    N, P, Q = ab.shape[0], ab.shape[2], centers.shape[0]
    best_d = np.empty(k, np.float64)
    best_i = np.empty(k, np.int64)
    everything = np.arange(Q).astype(cand.dtype)
    for n in range(N):
        for p in range(P):
            x, y = ab[n, 0, p], ab[n, 1, p]
            gx = int(math.floor((x - lo) * inv_cell))
            gy = int(math.floor((y - lo) * inv_cell))
            if 0 <= gx < G and 0 <= gy < G:
                cell = gx * G + gy
                rows = cand[offsets[cell]:offsets[cell + 1]]
            else:                                                   # outside the grid: every bin
                rows = everything
            m = 0                                                   # neighbours kept so far, sorted by (d, q)
            for c in range(rows.shape[0]):
                q = rows[c]
                dx = x - centers[q, 0]
                dy = y - centers[q, 1]
                d = dx * dx + dy * dy
                if m == k and (d > best_d[k - 1] or (d == best_d[k - 1] and q > best_i[k - 1])):
                    continue
                j = m if m < k else k - 1
                while j > 0 and (best_d[j - 1] > d or (best_d[j - 1] == d and best_i[j - 1] > q)):
                    best_d[j] = best_d[j - 1]
                    best_i[j] = best_i[j - 1]
                    j -= 1
                best_d[j] = d
                best_i[j] = q
                if m < k:
                    m += 1
            for j in range(k):
                idx_out[n, j, p] = best_i[j]
                d_out[n, j, p] = best_d[j] - best_d[0]
