"""How much a colorized video flickers, and a test clip to measure it on.

Two measures over the frames of one shot (pairs that straddle a scene cut are left out: a cut is supposed
to change the colours):
- CDC, colour distribution consistency (Liu et al., "Temporally consistent video colorization", 2021):
  the Jensen-Shannon divergence (base 2, so 0..1) between the per-channel RGB histograms of frame i and
  frame i + gap, averaged over R, G, B and over i; reported at gaps 1, 2 and 4 and as their mean. It ignores
  where colours are, so motion alone barely moves it, while a frame whose colours jump does.
- mean |delta ab|: the mean length of the Lab ab difference between consecutive frames, per pixel. Motion
  moves it too, so the source clip's own value (its true colours) is the floor to compare against.

`pan_clip` writes the clip the tests (and the flicker table of docs/benchmarks.md) use: a photo from scikit-image panned
across the frame, a cut to a second panned photo, and a sine tone as the audio track, all through PyAV.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.distance import jensenshannon

from pipeline.images import rgb_to_lab

GAPS = (1, 2, 4)
SOURCE_CODECS = {".mp4": ("libx264", "aac"), ".mov": ("libx264", "aac"), ".mkv": ("libx264", "libopus"),
                 ".avi": ("mpeg4", "libmp3lame")}


def read_frames(path) -> tuple[list, float]:
    """Every frame of the first video stream as (H, W, 3) uint8 RGB, and the stream's average frame rate."""
    import av
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in c.decode(s)], float(s.average_rate)


def _shots(n: int, cuts) -> list[range]:
    edges = [0, *sorted(c for c in cuts if 0 < c < n), n]
    return [range(a, b) for a, b in zip(edges, edges[1:]) if b > a]


def cdc(frames, cuts=(), gaps=GAPS, bins: int = 64) -> dict:
    """frames: (H, W, 3) uint8 RGB, cuts: indices of first frames of new shots -> {"gap1": .., "mean": ..}."""
    hists = [np.stack([np.histogram(f[..., c], bins=bins, range=(0, 256))[0] for c in range(3)]).astype(np.float64)
             for f in frames]
    out = {}
    for g in gaps:
        js = [np.mean([jensenshannon(hists[i][c], hists[i + g][c], base=2) ** 2 for c in range(3)])
              for shot in _shots(len(frames), cuts) for i in shot if i + g in shot]
        out[f"gap{g}"] = float(np.mean(js)) if js else float("nan")
    measured = [out[f"gap{g}"] for g in gaps if not np.isnan(out[f"gap{g}"])]   # shots shorter than a gap have none
    out["mean"] = float(np.mean(measured)) if measured else float("nan")
    return out


def mean_delta_ab(frames, cuts=()) -> float:
    """Mean per-pixel |ab(i+1) - ab(i)| in ab units over consecutive frames of the same shot."""
    ab = [rgb_to_lab(f)[..., 1:] for f in frames]
    d = [np.hypot(*(ab[i + 1] - ab[i]).transpose(2, 0, 1)).mean()
         for shot in _shots(len(frames), cuts) for i in shot if i + 1 in shot]
    return float(np.mean(d)) if d else float("nan")


def flicker(frames, cuts=()) -> dict:
    return {"cdc": cdc(frames, cuts), "mean_delta_ab": mean_delta_ab(frames, cuts)}


def _photo(name: str) -> np.ndarray:
    from skimage import data
    img = getattr(data, name)()
    return img[..., :3] if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)


def pan_frames(size=(96, 64), frames: int = 24, cut: int = 12, photos=("astronaut", "coffee"),
               step: float = 2.0, grain: float = 0.0) -> list:
    """(W, H) frames: a window panning right by `step` px per frame over photos[0], then from `cut` on over
    photos[1]. The photos are scaled so the window covers at most 60% of their height and the pan fits.
    grain: standard deviation (8-bit levels) of fresh Gaussian noise per frame, like film grain or sensor
    noise; the per-frame jitter it causes in a per-image model's colours is what smoothing is for."""
    W, H = size
    out = []
    for i in range(frames):
        shot, t = (0, i) if i < cut else (1, i - cut)
        img = _photo(photos[shot])
        s = max(H / (0.6 * img.shape[0]), (W + step * frames + 2) / img.shape[1])   # room for the whole pan
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        x = t * step
        M = np.float32([[1, 0, -x], [0, 1, -(img.shape[0] - H) / 2]])       # subpixel pans: warpAffine
        frame = cv2.warpAffine(img, M, (W, H), flags=cv2.INTER_LINEAR)
        if grain:
            noise = np.random.default_rng(i).normal(0, grain, (H, W, 1))          # luma grain, as on film
            frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
        out.append(frame)
    return out


def write_clip(path, frames, fps: int = 24, audio_seconds: float | None = None, tone_hz: float = 440.0) -> Path:
    """Encode RGB frames (and a sine tone as long as the video, unless audio_seconds is 0) into `path`,
    with codecs that suit its suffix (SOURCE_CODECS); odd frame sizes get mpeg4, which takes them in 4:2:0."""
    import av
    path = Path(path)
    vcodec, acodec = SOURCE_CODECS[path.suffix.lower()]
    H, W = frames[0].shape[:2]
    if W % 2 or H % 2:
        vcodec = "mpeg4"
    with av.open(str(path), "w") as c:
        v = c.add_stream(vcodec, rate=fps)
        v.width, v.height, v.pix_fmt = W, H, "yuv420p"
        if vcodec == "libx264":
            v.options = {"crf": "12"}
        else:
            v.bit_rate = 4_000_000
        seconds = len(frames) / fps if audio_seconds is None else audio_seconds
        rate = 48000 if acodec == "libopus" else 44100          # opus takes 48 kHz only
        a = None
        if seconds > 0:
            a = c.add_stream(acodec, rate=rate)
            a.layout = "mono"
        for f in frames:
            c.mux(v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        c.mux(v.encode())
        if a is not None:
            t = np.arange(int(seconds * rate)) / rate
            pcm = (0.3 * np.sin(2 * np.pi * tone_hz * t) * 32767).astype(np.int16)
            for k in range(0, len(pcm), 960):
                frame = av.AudioFrame.from_ndarray(pcm[None, k:k + 960], format="s16", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = rate, k, Fraction(1, rate)
                c.mux(a.encode(frame))
            c.mux(a.encode())
    return path


def pan_clip(path, size=(96, 64), frames: int = 24, cut: int = 12, fps: int = 24, audio: bool = True,
             step: float = 2.0, grain: float = 0.0) -> Path:
    """The flicker test clip: pan_frames written by write_clip (with a tone unless audio=False)."""
    return write_clip(path, pan_frames(size, frames, cut, step=step, grain=grain), fps, None if audio else 0)
