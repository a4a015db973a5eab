"""`cli.py colorize` against hostile inputs and faults: names that are not UTF-8, FIFOs and devices among the
photos, full disks, file/folder clashes, colliding stems, --out inside the input, absurd temperatures."""
import errno
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from cli import cli
from colorfast.inputs import list_inputs, read_input
from pipeline.images import ImageError, load_rgb
from smooth_photos import smooth_rgb

ROOT = Path(__file__).resolve().parents[2]


def save(path: bytes | Path, rgb, ext=".png"):
    """Write an image under any name, UTF-8 or not (bytes), without going through the name in OpenCV."""
    with open(path, "wb") as f:
        f.write(cv2.imencode(ext, rgb[..., ::-1])[1].tobytes())


def colorize(*args):
    res = CliRunner().invoke(cli, ["colorize", *map(str, args), "--size", "32"])
    assert "Traceback" not in res.output, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.output, res.exception)
    return res


def colorize_process(*args, timeout=240):
    """`cli.py colorize ARGS` in its own process (a crash or a hang must not take the test run with it), with
    a strict stdout encoding: printing a non-UTF-8 name as it is would raise there."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "utf-8:strict"}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), "colorize", *map(os.fsencode, args), "--size", "32"],
                          capture_output=True, env=env, timeout=timeout)


def files(folder: Path) -> dict[bytes, int]:
    """Every file under `folder` -> its size, names as bytes."""
    root = os.fsencode(folder)
    return {os.path.relpath(os.path.join(d, f), root): os.path.getsize(os.path.join(d, f))
            for d, _, fs in os.walk(root) for f in fs}


def test_names_that_are_not_utf8_are_colorized_under_the_same_bytes(tmp_path, ckpt):
    """cv2.imwrite died with SIGSEGV on such a name (exit 139, the batch lost, a 0-byte temporary file left)."""
    src = tmp_path / "in"
    src.mkdir()
    save(os.fsencode(src) + b"/caf\xe9.jpg", smooth_rgb(20, 30, 0), ".jpg")       # Latin-1, as old tar members
    save(src / "a.jpg", smooth_rgb(20, 30, 1), ".jpg")
    save(src / "z.png", smooth_rgb(20, 30, 2))
    out = tmp_path / "out"
    p = colorize_process(src, "--checkpoint", ckpt, "--out", out)
    assert p.returncode == 0, p.stderr[-2000:]
    written = files(out)
    assert {k for k in written if not k.startswith(b".")} == {b"in/a.png", b"in/z.png", b"in/caf\xe9.png"}
    assert all(size > 0 for size in written.values())                   # no 0-byte temporary file left
    assert load_rgb(os.fsdecode(os.fsencode(out) + b"/in/caf\xe9.png")).shape == (20, 30, 3)
    with open(os.fsencode(src) + b"/bad\xe9.jpg", "wb") as f:          # a bad photo under such a name
        f.write(b"not a JPEG")
    p = colorize_process(src, "--checkpoint", ckpt, "--out", out)        # a rerun: the record knows the others
    assert p.returncode == 1 and b"Traceback" not in p.stderr, p.stderr[-2000:]
    assert b"error: " + os.fsencode(src) + b"/bad\\xe9.jpg: unknown format" in p.stdout        # printable
    assert b"colorized 3 image(s), 1 failed" in p.stdout


def test_only_regular_files_are_read_and_each_other_entry_is_one_line(tmp_path, ckpt):
    """A FIFO named b.jpg hung colorize; a link to /dev/zero was read until memory ran out."""
    src = tmp_path / "in"
    src.mkdir()
    save(src / "a.png", smooth_rgb(20, 30, 3))
    os.mkfifo(src / "b.jpg")
    os.mkfifo(src / "pipe")                                             # no image suffix: ignored, never opened
    (src / "zero.jpg").symlink_to("/dev/zero")
    (src / "null.png").symlink_to("/dev/null")
    (src / "gone.png").symlink_to(tmp_path / "nowhere")
    (tmp_path / "real.png").symlink_to(src / "a.png")                   # a link to a photo is a photo
    out = tmp_path / "out"
    p = colorize_process(src, src / "b.jpg", tmp_path / "real.png", "--checkpoint", ckpt, "--out", out, timeout=120)
    err = p.stdout.decode()
    assert p.returncode == 1 and b"Traceback" not in p.stderr, p.stderr[-2000:]
    assert err.count("b.jpg: not a regular file (a FIFO)") == 2                      # in the folder and named
    assert "zero.jpg: not a regular file (a character device)" in err
    assert "null.png: not a regular file (a character device)" in err
    assert "gone.png: not a regular file (a broken link)" in err
    assert "colorized 2 image(s), 5 failed, 1 non-image file(s) in folders ignored" in err
    assert sorted(files(out)) == [b".colorize-record.jsonl", b"in/a.png", b"real.png"]


def test_reads_are_bounded(tmp_path):
    big = tmp_path / "big.png"
    save(big, smooth_rgb(20, 30, 4))
    assert read_input(big) == big.read_bytes()
    with pytest.raises(ImageError, match="too large"):
        read_input(big, limit=100)
    os.mkfifo(tmp_path / "f.png")
    with pytest.raises(ImageError, match="not a regular file: a FIFO"):                # opened without blocking
        read_input(tmp_path / "f.png")


def test_a_failed_write_is_one_line_and_the_other_inputs_are_still_done(tmp_path, ckpt, monkeypatch):
    """A full disk (ENOSPC, injected: no small file system to fill here) on one output gave a traceback and
    left the remaining inputs undone."""
    import colorfast.outputs as outputs
    src = tmp_path / "in"
    src.mkdir()
    for name in ("a", "b", "c"):
        save(src / f"{name}.png", smooth_rgb(20, 30, ord(name)))
    real_open = open

    def full_for_b(path, mode="r", *a, **k):
        if "w" in mode and Path(path).name.startswith(".b.png."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_open(path, mode, *a, **k)

    monkeypatch.setattr(outputs, "open", full_for_b, raising=False)
    out = tmp_path / "out"
    res = colorize(src, "--checkpoint", ckpt, "--out", out)
    assert res.exit_code == 1, res.output
    assert f"b.png: cannot write into {out / 'in'}: No space left on device (ENOSPC)" in res.output
    assert sorted(p.name for p in (out / "in").iterdir()) == ["a.png", "c.png"]        # no temporary file left


def test_an_unwritable_out_is_one_line_per_input(tmp_path, ckpt, monkeypatch):
    """Permission denied on --out: root passes any permission check, so it is injected there."""
    src = tmp_path / "in"
    src.mkdir()
    save(src / "a.png", smooth_rgb(20, 30, 5))
    save(src / "b.png", smooth_rgb(20, 30, 6))
    out = tmp_path / "locked"
    out.mkdir()
    if os.geteuid() == 0:
        real_mkdir = Path.mkdir

        def denied(self, *a, **k):
            if self == out / "in":
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
            return real_mkdir(self, *a, **k)
        monkeypatch.setattr(Path, "mkdir", denied)
    else:
        out.chmod(0o555)
    try:
        res = colorize(src, "--checkpoint", ckpt, "--out", out)
    finally:
        out.chmod(0o755)
    assert res.exit_code == 1, res.output
    assert res.output.count(f"cannot write into {out / 'in'}: Permission denied (EACCES)") == 2, res.output
    assert "colorized 0 image(s), 2 failed" in res.output


def test_an_output_file_never_meets_an_output_folder(tmp_path, ckpt):
    """a.jpg and a folder a.png/ (whose outputs go into out/a.png/) failed mid-run with FileExistsError."""
    src = tmp_path / "in"
    (src / "a.png").mkdir(parents=True)
    save(src / "a.jpg", smooth_rgb(20, 30, 7), ".jpg")
    save(src / "a.png" / "x.png", smooth_rgb(20, 30, 8))
    out = tmp_path / "out"
    res = colorize(src, "--checkpoint", ckpt, "--out", out)                # among the outputs: named apart
    assert res.exit_code == 0, res.output
    assert sorted(k for k in files(out) if not k.startswith(b".")) == [b"in/a.jpg.png", b"in/a.png/x.png"]

    save(src / "b.jpg", smooth_rgb(20, 30, 9), ".jpg")                    # out/in/b.png: an existing folder
    (out / "in" / "b.png").mkdir()
    (src / "sub").mkdir()
    save(src / "sub" / "c.png", smooth_rgb(20, 30, 10))                  # out/in/sub: an existing file
    (out / "in" / "sub").write_bytes(b"a file of the user's")
    before = files(out)
    for extra in ([], ["--overwrite"]):
        res = colorize(src, "--checkpoint", ckpt, "--out", out, *extra)
        assert res.exit_code == 1 and "2 output file(s) would take the place of a folder" in res.output, res.output
        assert f"{out / 'in' / 'b.png'} is a folder" in res.output and "nothing was written" in res.output
        assert f"{out / 'in' / 'sub'} is a file, where a folder of outputs must go" in res.output
        assert files(out) == before


def test_adding_a_photo_of_the_same_stem_moves_no_output(tmp_path, ckpt):
    """cat.jpg beside cat.png used to take cat.png's output name (cat.png -> cat-1.png): a false 'not written
    by this job' refusal, and with --overwrite the two outputs swapped."""
    src = tmp_path / "in"
    src.mkdir()
    save(src / "cat.png", smooth_rgb(20, 30, 11))
    save(src / "dog.jpg", smooth_rgb(20, 30, 12), ".jpg")
    out = tmp_path / "out"
    assert colorize(src, "--checkpoint", ckpt, "--out", out).exit_code == 0
    cat, dog = (out / "in" / "cat.png").read_bytes(), (out / "in" / "dog.png").read_bytes()
    save(src / "cat.jpg", smooth_rgb(20, 30, 13), ".jpg")               # a new photo sorting before cat.png
    save(src / "dog.png", smooth_rgb(20, 30, 14))                       # a new photo taking dog.jpg's name
    for extra in ([], ["--overwrite"]):
        res = colorize(src, "--checkpoint", ckpt, "--out", out, *extra)
        assert res.exit_code == 0, res.output
        assert (out / "in" / "cat.png").read_bytes() == cat             # still cat.png's colours
        assert (out / "in" / "dog.jpg.png").read_bytes() == dog         # dog.jpg's, under its own suffix
        assert sorted(p.name for p in (out / "in").iterdir()) == ["cat.jpg.png", "cat.png", "dog.jpg.png", "dog.png"]


def test_out_inside_the_input_folder_reruns_and_its_parent_is_refused(tmp_path, ckpt, monkeypatch):
    """`colorize DIR --out DIR` was accepted once, then refused forever (its outputs became inputs)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    save(photos / "a.jpg", smooth_rgb(20, 30, 15), ".jpg")
    for extra in ([], [], ["--overwrite"]):
        res = colorize(photos, "--checkpoint", ckpt, "--out", photos, *extra)
        assert res.exit_code == 0 and "colorized 1 image(s)" in res.output, res.output
    assert sorted(k for k in files(photos) if not k.startswith(b".")) == [b"a.jpg", b"photos/a.png"]
    monkeypatch.chdir(photos)
    res = colorize(".", "--checkpoint", ckpt, "--out", "..")              # would write photos/a.png
    assert res.exit_code == 1 and "into that folder itself" in res.output, res.output
    assert not (photos / "a.png").exists()


@pytest.mark.parametrize("command", ["colorize", "evaluate", "compare"])
@pytest.mark.parametrize("value", ["nan", "inf", "1e-300", "0", "-1", "1e9"])
def test_absurd_temperatures_are_refused_in_one_line(tmp_path, ckpt, command, value):
    """--temperature nan or 1e-300 decoded to an all-white image and reported success."""
    save(tmp_path / "a.png", smooth_rgb(20, 30, 16))
    where = {"colorize": [str(tmp_path / "a.png")], "evaluate": ["--images", str(tmp_path)],
             "compare": ["--images", str(tmp_path)]}[command]
    res = CliRunner().invoke(cli, [command, *where, "--checkpoint", ckpt, "--out", str(tmp_path / "o"),
                                   "--temperature", value])
    assert res.exit_code == 2, res.output
    assert "--temperature" in res.output and "finite number between 0.01 and 100" in res.output
    assert not (tmp_path / "o").exists()


def test_the_colorizer_refuses_them_too(tiny_runs, tmp_path):
    """Colorizer.temperature_for is where the torch and onnx runtimes, evaluate and compare take theirs."""
    import torch
    from colorfast.photos import ColorizeConfig, run
    from colorfast.loader import load_colorizer
    colorizer = load_colorizer(tiny_runs[1]["ce"])
    L = torch.full((1, 1, 32, 32), 50.0)
    for t in (float("nan"), 1e-300, float("inf")):
        with pytest.raises(ValueError, match="finite number between"):
            colorizer.temperature_for(t)
        with pytest.raises(ValueError, match="finite number between"):
            colorizer.predict_ab(L, temperature=t)
    assert colorizer.temperature_for(None) == 0.38 and colorizer.temperature_for(0.5) == 0.5
    save(tmp_path / "a.png", smooth_rgb(20, 30, 17))
    cfg = ColorizeConfig(inputs=(str(tmp_path / "a.png"),), out=str(tmp_path / "o"), size=32, temperature=float("nan"))
    with pytest.raises(ValueError, match="finite number between"):
        run(cfg, colorizer)
    assert not (tmp_path / "o" / "a.png").exists()


def test_list_inputs_reports_what_it_cannot_read(tmp_path):
    os.mkfifo(tmp_path / "f.jpg")
    pairs, ignored, unusable = list_inputs([tmp_path / "f.jpg", tmp_path / "nope.png"])
    assert pairs == [] and ignored == 0
    assert [(p.name, r) for p, r in unusable] == [("f.jpg", "not a regular file (a FIFO)"),
                                                   ("nope.png", "no such file or folder")]


@pytest.mark.parametrize("command", ["evaluate", "compare"])
def test_evaluate_and_compare_say_which_entries_are_not_files(tmp_path, ckpt, command):
    """They share colorize's listing: a FIFO among the photos is one line (it hung them), the others are done."""
    photos = tmp_path / "photos"
    photos.mkdir()
    save(photos / "a.png", smooth_rgb(32, 32, 18))
    os.mkfifo(photos / "b.jpg")
    res = CliRunner().invoke(cli, [command, "--images", str(photos), "--checkpoint", ckpt, "--size", "32",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert res.output.count(f"error: {photos / 'b.jpg'}: not a regular file (a FIFO)") == 1, res.output
    assert "1 input(s) could not be" in res.output
