"""`cli.py colorize clip.mp4`: a colorized video with the source's rate, frame count, size, audio and lightness."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

av = pytest.importorskip("av", reason="video needs PyAV (extra [video])")

from cli import cli                                                    # noqa: E402
from colorfast.flicker import cdc, mean_delta_ab, pan_clip, pan_frames, read_frames, write_clip  # noqa: E402
from colorfast.video import TemporalSmoother, is_cut, luma_histogram, split_videos  # noqa: E402
from pipeline.images import rgb_to_lab                                 # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def varied_ckpt(tiny_runs, tmp_path_factory):
    """The tiny CE checkpoint with its conv weights redrawn at a large scale: after 2 training steps the model
    predicts nearly the same ab everywhere (nothing to smooth); this one's colours change with the content,
    frame to frame, as a real model's do."""
    import torch
    from trainer import checkpoint
    ck = torch.load(tiny_runs[1]["ce"], weights_only=True)
    g = torch.Generator().manual_seed(0)
    for k, v in ck["model"].items():
        if v.is_floating_point() and v.ndim > 1 and k != "centers":
            ck["model"][k] = torch.randn(v.shape, generator=g) * 3 * (2.0 / v[0].numel()) ** 0.5
    path = tmp_path_factory.mktemp("varied") / "varied.pt"
    return checkpoint.save(path, ck)                      # a changed checkpoint needs its checksum recomputed


def probe(path):
    """(frame count, average rate, (W, H), audio codec, audio samples) of a file, by decoding it."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        n = sum(1 for _ in c.decode(v))
        rate, size = v.average_rate, (v.width, v.height)
    with av.open(str(path)) as c:
        a = c.streams.audio[0] if c.streams.audio else None
        samples = sum(f.samples for f in c.decode(a)) if a else 0
        return n, rate, size, a.codec_context.name if a else None, samples


@pytest.mark.parametrize("suffix,size", [(".mp4", (96, 64)), (".mov", (37, 21)), (".mkv", (64, 48)),
                                         (".avi", (51, 33))])
def test_video_keeps_rate_frames_size_audio_and_lightness(tmp_path, ckpt, suffix, size):
    src = pan_clip(tmp_path / f"clip{suffix}", size=size, frames=20, cut=10, fps=24)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["colorize", str(src), "--checkpoint", str(ckpt), "--out", str(out),
                                   "--size", "32", "--temperature", "0.2"])
    assert res.exit_code == 0, res.output
    dst = out / src.name
    assert probe(dst) == probe(src)                           # frames, rate, odd sizes, audio codec and samples
    assert [p.name for p in out.iterdir() if ".part" in p.name or p.suffix == suffix] == [src.name]  # no temp file left
    frames_in, _ = read_frames(src)
    frames_out, _ = read_frames(dst)
    dL = [np.abs(rgb_to_lab(a)[..., 0] - rgb_to_lab(b)[..., 0]).mean() for a, b in zip(frames_in, frames_out)]
    assert max(dL) < 2.0, dL                                  # x264 at crf 18 on top of the gamut fit
    chroma = np.mean([np.hypot(*rgb_to_lab(f)[..., 1:].transpose(2, 0, 1)).mean() for f in frames_out])
    chroma_gray = np.mean([np.hypot(*rgb_to_lab(f)[..., 1:].transpose(2, 0, 1)).mean()
                           for f in read_frames(write_clip(tmp_path / f"gray{suffix}",
                                                           [np.repeat(rgb_to_lab(f)[..., :1].astype(np.uint8), 3, 2)
                                                            for f in frames_in[:2]], audio_seconds=0))[0]])
    assert chroma > chroma_gray + 1.0                         # the colour comes from the network


def test_videos_are_named_files_and_same_names_stay_apart(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for p in ["a/clip.mp4", "b/clip.mp4", "b/x.MKV", "photo.jpg"]:
        (tmp_path / p).write_bytes(b"")
    args = [str(tmp_path / p) for p in ["a/clip.mp4", "b/clip.mp4", "b/x.MKV", "photo.jpg", "a", "missing.mp4"]]
    pairs, others = split_videos(args)
    assert [(s.relative_to(tmp_path).as_posix(), r.as_posix()) for s, r in pairs] == \
        [("a/clip.mp4", "clip.mp4"), ("b/clip.mp4", "clip-1.mp4"), ("b/x.MKV", "x.MKV")]
    assert others == args[3:]                        # a photo, a folder and a missing file go the photos' way


def test_smoother_averages_centred_windows_and_restarts_at_cuts():
    ab = [np.full((2, 1, 1), float(v)) for v in [0, 3, 6, 100, 110, 120, 130]]
    cuts = [False, False, False, True, False, False, False]
    s, out = TemporalSmoother(3), []
    for i, (a, c) in enumerate(zip(ab, cuts)):
        out += s.push(i, a, c)
    out += s.flush()
    assert [i for i, _ in out] == list(range(7))               # every frame, in order
    assert [float(a.ravel()[0]) for _, a in out] == [1.5, 3.0, 4.5, 105.0, 110.0, 120.0, 125.0]
    one = TemporalSmoother(1)
    assert [float(a.ravel()[0]) for _, a in one.push(0, ab[1], False)] == [3.0]   # 1: no smoothing, no lag


def test_cut_detection_finds_the_cut_and_not_the_pan():
    frames = pan_frames(size=(96, 64), frames=24, cut=12)
    hists = [luma_histogram(f) for f in frames]
    cuts = [i for i in range(1, 24) if is_cut(hists[i - 1], hists[i], 0.3)]
    assert cuts == [12]


def test_smoothing_reduces_frame_to_frame_colour_change(tmp_path, varied_ckpt):
    src = pan_clip(tmp_path / "clip.mp4", size=(96, 64), frames=24, cut=12, audio=False)
    measured = {}
    for n in (1, 7):
        out = tmp_path / f"s{n}"
        res = CliRunner().invoke(cli, ["colorize", str(src), "--checkpoint", str(varied_ckpt), "--out", str(out),
                                       "--size", "32", "--smooth", str(n)])
        assert res.exit_code == 0, res.output
        assert "1 scene cut(s)" in res.output
        frames, _ = read_frames(out / "clip.mp4")
        measured[n] = mean_delta_ab(frames, cuts=[12])
    assert measured[7] < 0.8 * measured[1], measured


def test_flicker_measures_see_colour_jumps_and_skip_cuts():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    still = [base] * 6
    assert cdc(still)["mean"] == 0 and mean_delta_ab(still) == 0
    jumpy = [base if i % 2 else np.roll(base, 1, axis=2) for i in range(6)]   # channels swapped every other frame
    assert cdc(jumpy)["gap1"] > 0.01 and cdc(jumpy)["gap2"] == 0 and mean_delta_ab(jumpy) > 5
    cut = [base] * 3 + [np.roll(base, 1, axis=2)] * 3
    assert cdc(cut, cuts=[3])["mean"] == 0 and mean_delta_ab(cut, cuts=[3]) == 0


def test_bad_video_is_one_line_and_the_others_are_still_written(tmp_path, ckpt):
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    good = pan_clip(tmp_path / "good.mkv", size=(48, 32), frames=6, cut=3)
    res = CliRunner().invoke(cli, ["colorize", str(tmp_path / "broken.mp4"), str(good), "--checkpoint", str(ckpt),
                                   "--out", str(tmp_path / "out"), "--size", "32"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "broken.mp4: cannot open as a video" in res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == ["good.mkv"]
    args = ["colorize", str(good), "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--size", "32"]
    assert CliRunner().invoke(cli, args).exit_code == 0                 # a rerun replaces its own output
    (tmp_path / "out" / "good.mkv").write_bytes(b"someone else's file")
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "not written by this job" in res.output
    assert (tmp_path / "out" / "good.mkv").read_bytes() == b"someone else's file"
    res = CliRunner().invoke(cli, ["colorize", str(good), "--checkpoint", str(ckpt), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "refusing to write over 1 input file" in res.output
    assert probe(good)[0] == 6


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM])
def test_a_killed_run_leaves_nothing_under_the_final_name(tmp_path, ckpt, sig):
    src = pan_clip(tmp_path / "long.mp4", size=(64, 48), frames=400, cut=200, audio=False)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLORFAST_PROGRESS_EVERY": "0"}   # a progress line per frame
    p = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "colorize", str(src), "--checkpoint", str(ckpt),
                          "--out", str(out), "--size", "32"], stderr=subprocess.PIPE, env=env, cwd=tmp_path,
                         # a suite started in the background inherits SIGINT ignored; a user's shell does not
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = b""
    deadline = time.time() + 300
    def frames_done():
        return max(map(int, re.findall(rb" (\d+)/400 ", seen)), default=0)      # the progress line's count

    while frames_done() < 120 and time.time() < deadline and p.poll() is None:    # past x264's lookahead,
        seen += os.read(p.stderr.fileno(), 4096)                                  # so the file is being written
    assert 120 <= frames_done() < 400, seen[-500:]
    p.send_signal(sig)
    p.wait(60)
    assert not (out / "long.mp4").exists()
    leftovers = [q.name for q in out.iterdir()]
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert leftovers == []                                   # the temporary file is removed on the way out
        if sig == signal.SIGTERM:
            assert p.returncode == 128 + signal.SIGTERM and b"stopped by SIGTERM" in p.stderr.read()
    else:
        assert len(leftovers) == 1 and leftovers[0].startswith(".long.") and ".part" in leftovers[0], leftovers
        assert (out / leftovers[0]).stat().st_size > 0                          # it was writing: the kill was mid-run


def test_a_video_named_in_latin1_keeps_its_name(tmp_path, ckpt):
    src = pan_clip(tmp_path / "clip.mkv", size=(48, 32), frames=6, cut=3)
    latin1 = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9.mkv")
    os.rename(src, latin1)
    res = CliRunner().invoke(cli, ["colorize", latin1, "--checkpoint", str(ckpt), "--out", str(tmp_path / "out"),
                                   "--size", "32"])
    assert res.exit_code == 0, res.output
    assert "caf\\xe9.mkv: 6 frame(s)" in res.output                      # printable whatever the terminal
    assert sorted(os.listdir(os.fsencode(tmp_path / "out"))) == [b".colorize-record.jsonl", b"caf\xe9.mkv"]
    assert probe(os.fsdecode(os.fsencode(tmp_path) + b"/out/caf\xe9.mkv"))[0] == 6


def test_a_failed_video_write_is_one_line_and_the_other_inputs_are_still_done(tmp_path, ckpt):
    """A real write failure, also as root: with a file size limit (RLIMIT_FSIZE) of 0 every write fails with
    EFBIG, as a full disk fails with ENOSPC; the video's fails while frames are being muxed (past x264's
    lookahead), where it must not pass for a decoding error of the source."""
    import resource
    import cv2
    src = pan_clip(tmp_path / "clip.mp4", size=(64, 48), frames=60, cut=30, audio=False)
    cv2.imwrite(str(tmp_path / "small.png"), np.full((20, 30, 3), 90, np.uint8))
    out = tmp_path / "out"

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)                  # a write past the limit fails, not kills
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    p = subprocess.run([sys.executable, str(ROOT / "cli.py"), "colorize", str(src), str(tmp_path / "small.png"),
                        "--checkpoint", str(ckpt), "--out", str(out), "--size", "32"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                       preexec_fn=limited, timeout=300)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"error: {src}: cannot write into {out}: File too large (EFBIG)" in p.stdout, p.stdout
    assert f"error: {tmp_path / 'small.png'}: cannot write into {out}: File too large (EFBIG)" in p.stdout
    assert "colorized 0 image(s), 2 failed" in p.stdout
    assert [q.name for q in out.iterdir()] == []                        # no .part nor temporary file left
