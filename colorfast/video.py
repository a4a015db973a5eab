"""Colorize a video (`cli.py colorize clip.mp4`): every frame through the photo path, colours smoothed over time.

Per frame, as for a photo (colorfast/photos.py):

    frame -> RGB (H, W, 3) -> net_input_rgb -> network -> ab (2, size/4, size/4)      (predict_ab_small)
    ab averaged over the `smooth` frames centred on this one, never across a scene cut
    rebuild_rgb: the frame's own L with that ab upsampled to (H, W) (the colorizer's mode), in gamut -> RGB

Each frame keeps its own lightness; only the colour is shared with its neighbours, which removes the frame to
frame flicker of a per-image model without smearing motion into L. Averaging the low-resolution ab before
upsampling gives the same result as averaging the full-size ab (bicubic resizing is linear) at 1/16 of the
pixels. A scene cut is a frame whose L histogram differs from the previous frame's by more than
`cut_threshold` (total variation distance; a pan or a moving object barely changes the histogram, a new
shot does), and the average restarts there so the colours of one shot never bleed into the next.

The output has the source's container, frame size (odd sizes too), frame count and timestamps (so its frame
rate); the audio stream is copied packet for packet, or re-encoded to AAC where the container cannot take it
as it is. It is written to a hidden temporary name beside the output and renamed at the end, so a killed run
never leaves a partial file under the final name (and Ctrl-C or SIGTERM removes the temporary file). A write
that fails (disk full, no permission) is one line naming the folder and the cause; colorize goes on with its
other inputs. Decoding and encoding go through PyAV, whose wheel bundles FFmpeg (extra `[video]`).
"""
from __future__ import annotations

import io
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from colorfast.full_resolution import rebuild_rgb
from colorfast.inputs import shown
from colorfast.net_input import cubic_upsampling, net_input_rgb, predict_ab_small   # the photo path's own pieces
from colorfast.outputs import WriteError, write_failure
from pipeline.images import rgb_to_lab
from pipeline.progress import progress, write as progress_write

VIDEO_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".avi": "avi"}   # suffix -> muxer
HIST_BINS = 32                   # L histogram for cut detection
HIST_SIDE = 64                   # frames are shrunk to this side first: the histogram needs no detail


class VideoError(ValueError):
    """A video that cannot be read or written; str(e) is one line a user can act on."""


@dataclass(frozen=True)
class VideoConfig:
    size: int = 256                  # side of the square L the network sees
    temperature: float | None = None # None: the colorizer's default (colorfast.colorizer.temperature_for)
    smooth: int = 5                  # frames of ab averaged, centred on each frame; 1: no smoothing
    cut_threshold: float = 0.3       # L-histogram total variation distance to the previous frame that starts a new shot
    crf: int = 18                    # x264 quality (lower: better, larger); 18 is visually lossless


@dataclass
class VideoResult:
    path: Path
    frames: int
    cuts: list                       # frame indices that start a new shot (frame 0 not counted)
    audio: str                       # "copied" | "re-encoded" | "none"

    def summary(self) -> str:
        return (f"{shown(self.path)}: {self.frames} frame(s), {len(self.cuts)} scene cut(s), audio {self.audio}")


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_FORMATS


def split_videos(inputs) -> tuple[list[tuple[Path, Path]], list]:
    """colorize's inputs -> ((video file, output name) pairs, the other inputs). Only files named explicitly
    count as videos; outputs keep the source's name and suffix, with -1, -2 .. when two share a name."""
    pairs, seen, others = [], set(), []
    for item in inputs:
        p = Path(item)
        if not (is_video(p) and p.is_file()):
            others.append(item)
            continue
        rel, n = Path(p.name), 1
        while rel in seen:
            rel, n = Path(f"{p.stem}-{n}{p.suffix}"), n + 1
        seen.add(rel)
        pairs.append((p, rel))
    return pairs, others


def _import_av():
    from colorfast.extras import require
    av, = require("av", extra="video", what="colorizing video")
    return av


# ---- time: cuts and smoothing ---------------------------------------------------------------------------
def luma_histogram(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (HIST_BINS,) float64 histogram of L* summing to 1, from a HIST_SIDE-pixel thumbnail."""
    H, W = rgb.shape[:2]
    s = HIST_SIDE / max(H, W)
    if s < 1:
        rgb = cv2.resize(rgb, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
    h, _ = np.histogram(rgb_to_lab(rgb)[..., 0], bins=HIST_BINS, range=(0, 100))
    return h / max(h.sum(), 1)


def is_cut(prev_hist: np.ndarray | None, hist: np.ndarray, threshold: float) -> bool:
    return prev_hist is not None and 0.5 * np.abs(hist - prev_hist).sum() > threshold


class TemporalSmoother:
    """Centred moving average of per-frame ab over `n` frames that restarts at every scene cut.

    push(item, ab, cut) takes frames in order and returns the frames now complete as (item, smoothed ab);
    flush() returns the rest. A frame waits for the n // 2 frames after it (or for a cut, or the end), so
    the output lags the input by that many frames and comes out in the same order."""

    def __init__(self, n: int):
        if n < 1:
            raise ValueError(f"smooth must be >= 1 frame, got {n}")
        self.before, self.after = (n - 1) // 2, n // 2
        self.pending: deque = deque()    # (item, ab) not yet emitted, in order
        self.history: deque = deque(maxlen=max(self.before, 1))   # ab of emitted frames of this shot

    def push(self, item, ab: np.ndarray, cut: bool) -> list:
        out = self.flush() if cut else []
        self.pending.append((item, ab))
        if len(self.pending) > self.after:
            out.append(self._emit())
        return out

    def flush(self) -> list:
        out = [self._emit() for _ in range(len(self.pending))]
        self.history.clear()
        return out

    def _emit(self):
        item, ab = self.pending[0]
        past = list(self.history)[-self.before:] if self.before else []
        window = past + [a for _, a in list(self.pending)[: self.after + 1]]
        self.pending.popleft()
        if self.before:
            self.history.append(ab)
        return item, np.mean(window, axis=0) if len(window) > 1 else ab


# ---- files ---------------------------------------------------------------------------------------------
def _audio_copyable(av, template, fmt: str) -> bool:
    """Whether the muxer takes this audio stream's packets as they are (checked on an in-memory file)."""
    try:
        with av.open(io.BytesIO(), "w", format=fmt) as probe:
            probe.add_stream_from_template(template)
            probe.start_encoding()
        return True
    except (av.FFmpegError, ValueError):
        return False


def _open_input(av, src: Path):
    try:
        container = av.open(str(src))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{shown(src)}: cannot open as a video ({e})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{shown(src)}: has no video stream")
    return container


def _frame_pts(frame, index: int, stream) -> int:
    """The decoded frame's timestamp in the stream's time base; a count of frames when the file has none."""
    if frame.pts is not None:
        return frame.pts
    rate = stream.average_rate or stream.guessed_rate or 25
    return int(round(index / (rate * stream.time_base)))


def colorize_video(colorizer, src, dst, cfg: VideoConfig = VideoConfig(), before_rename=None) -> VideoResult:
    """Colorize the video at `src` into `dst` (same container as dst's suffix), see the module docstring.
    `before_rename(tmp_path)` is called once the file is complete (colorize's job record)."""
    av = _import_av()
    src, dst = Path(src), Path(dst)
    fmt = VIDEO_FORMATS.get(dst.suffix.lower())
    if fmt is None:
        raise VideoError(f"{shown(dst)}: unknown video suffix; use one of {', '.join(VIDEO_FORMATS)}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise VideoError(f"{shown(dst)}: the output would overwrite its input; choose another --out")
    tmp = dst.with_name(f".{dst.stem}.{os.getpid()}.part{dst.suffix}")
    inp = _open_input(av, src)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        result = _transcode(av, colorizer, inp, src, tmp, fmt, cfg)
        if before_rename:
            before_rename(tmp)
        os.replace(tmp, dst)
    except BaseException as e:       # KeyboardInterrupt, SIGTERM too: nothing half-written may stay behind
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_failure(dst.parent, e) from None      # disk full, no permission: the output side
        raise
    finally:
        inp.close()
    result.path = dst
    return result


def _transcode(av, colorizer, inp, src: Path, tmp: Path, fmt: str, cfg: VideoConfig) -> VideoResult:
    vin = inp.streams.video[0]
    ain = inp.streams.audio[0] if inp.streams.audio else None
    vin.thread_type = "AUTO"
    W, H = vin.codec_context.width, vin.codec_context.height
    out = av.open(str(tmp), "w", format=fmt)

    def mux(packets):                 # an error here is the output's (disk full), not the source's
        try:
            out.mux(packets)
        except av.FFmpegError as e:
            raise write_failure(tmp.parent, e) from None

    try:
        vout = out.add_stream("libx264", rate=vin.average_rate or vin.guessed_rate or 25)
        vout.width, vout.height = W, H
        vout.pix_fmt = "yuv420p" if W % 2 == 0 and H % 2 == 0 else "yuv444p"   # x264's 4:2:0 needs even sides
        vout.time_base = vin.time_base
        vout.codec_context.time_base = vin.time_base
        vout.options = {"crf": str(cfg.crf), "preset": "medium"}
        audio, aout = "none", None
        if ain is not None:
            if _audio_copyable(av, ain, fmt):
                aout, audio = out.add_stream_from_template(ain), "copied"
            else:
                aout, audio = out.add_stream("aac", rate=ain.codec_context.sample_rate or 48000), "re-encoded"
                aout.layout = ain.codec_context.layout

        smoother, prev_hist, cuts, written = TemporalSmoother(cfg.smooth), None, [], 0
        cubic = cubic_upsampling(colorizer)                     # released weights: bilinear, as for their photos
        total = vin.frames or None

        def encode(done):
            nonlocal written
            for (pts, rgb), ab in done:
                frame = av.VideoFrame.from_ndarray(rebuild_rgb(rgb, ab, out=rgb, cubic=cubic), format="rgb24")
                frame.pts, frame.time_base = pts, vin.time_base
                mux(vout.encode(frame))
                written += 1

        streams = [vin] + ([ain] if ain is not None else [])
        index = 0
        with progress(total=total, desc=f"colorize {shown(src.name)}", unit="frame") as bar:
            try:
                for packet in inp.demux(*streams):
                    if packet.stream.type == "audio":
                        if audio == "copied":
                            if packet.dts is not None:           # the demuxer's final empty packet has none
                                packet.stream = aout
                                mux(packet)
                        else:
                            for af in packet.decode():
                                af.pts = None                    # the encoder numbers samples itself
                                mux(aout.encode(af))
                        continue
                    for frame in packet.decode():
                        rgb = frame.to_ndarray(format="rgb24")
                        hist = luma_histogram(rgb)
                        cut = is_cut(prev_hist, hist, cfg.cut_threshold)
                        if cut:
                            cuts.append(index)
                        prev_hist = hist
                        ab = predict_ab_small(colorizer, net_input_rgb(rgb, cfg.size), cfg.temperature)
                        encode(smoother.push((_frame_pts(frame, index, vin), rgb), ab, cut))
                        index += 1
                        bar.update()
            except av.FFmpegError as e:
                raise VideoError(f"{shown(src)}: decoding failed after {index} frame(s) ({e})") from None
            encode(smoother.flush())
        mux(vout.encode())
        if aout is not None and audio == "re-encoded":
            mux(aout.encode())
    finally:
        out.close()
    if written == 0:
        raise VideoError(f"{shown(src)}: no video frame could be decoded")
    return VideoResult(path=tmp, frames=written, cuts=cuts, audio=audio)


def colorize_videos(colorizer, pairs, out_dir, cfg, result, record=None) -> None:
    """`cli.py colorize` for the video files among its inputs: (source, output path relative to out_dir)
    pairs, already checked by colorfast.outputs.check_outputs. cfg: a ColorizeConfig (size, temperature,
    smooth); written paths and (path, reason) failures are appended to result, and each file to the job
    record before it is renamed into place, as for photos."""
    vcfg = VideoConfig(size=cfg.size, temperature=cfg.temperature, smooth=cfg.smooth)
    for src, rel in pairs:
        add = (lambda tmp, rel=rel, src=src: record.add(rel, src, tmp)) if record is not None else None
        try:
            done = colorize_video(colorizer, src, Path(out_dir) / rel, vcfg, before_rename=add)
        except (VideoError, OSError) as e:            # a bad file or a failed write, not a bug: say it, go on
            line = str(e) if isinstance(e, VideoError) else f"{shown(src)}: {e}"
            progress_write(f"error: {line}")
            result.failed.append((str(src), str(e)))
            continue
        progress_write(done.summary())
        result.written.append(done.path)
