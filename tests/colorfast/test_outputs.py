"""`cli.py colorize` outputs: never over an input or a foreign file, formats, alpha, layout, what counts as input."""
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cli import cli
from pipeline.images import load_rgb, rgb_to_lab
from smooth_photos import smooth_rgb


def colorize(*args):
    res = CliRunner().invoke(cli, ["colorize", *map(str, args), "--size", "32"])
    assert "Traceback" not in res.output, res.output
    return res


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_output_never_replaces_an_input(tmp_path, ckpt, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(smooth_rgb(30, 40, 0)).save(photos / "cat.png")
    Image.fromarray(smooth_rgb(30, 40, 1)).save(photos / "dog.jpg")
    before = snapshot(tmp_path)
    monkeypatch.chdir(photos)
    res = colorize("cat.png", "--checkpoint", ckpt, "--out", ".")              # cd DIR && colorize cat.png --out .
    assert res.exit_code == 1 and "refusing to write over 1 input file" in res.output, res.output
    assert "nothing was written" in res.output
    res = colorize(".", "--checkpoint", ckpt, "--out", "..")                 # colorize . --out ..: into photos/
    assert res.exit_code == 1 and f"outputs of the folder {photos} into that folder itself" in res.output, res.output
    assert snapshot(tmp_path) == before                                      # not a byte changed, nothing added
    res = colorize("dog.jpg", "--checkpoint", ckpt, "--out", ".")             # dog.png beside dog.jpg: fine
    assert res.exit_code == 0, res.output
    assert load_rgb(photos / "dog.png").shape == (30, 40, 3)


def test_existing_outputs_are_replaced_only_by_a_rerun_of_the_same_job(tmp_path, ckpt):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(smooth_rgb(30, 40, 2)).save(src / "a.png")
    Image.fromarray(smooth_rgb(30, 40, 3)).save(src / "b.png")
    out = tmp_path / "out"
    assert colorize(src, "--checkpoint", ckpt, "--out", out).exit_code == 0
    first = (out / "in" / "a.png").read_bytes()
    res = colorize(src, "--checkpoint", ckpt, "--out", out, "--temperature", "0.1")   # the same job, rerun
    assert res.exit_code == 0, res.output
    assert (out / "in" / "a.png").read_bytes() != first                      # replaced: new temperature

    (out / "in" / "b.png").write_bytes(b"the user's own file, or an edited output")
    (out / "other.png").write_bytes(b"unrelated")
    res = colorize(src, "--checkpoint", ckpt, "--out", out)
    assert res.exit_code == 1 and "1 output(s) exist and were not written by this job" in res.output, res.output
    assert "--overwrite" in res.output
    assert (out / "in" / "b.png").read_bytes() == b"the user's own file, or an edited output"

    other = tmp_path / "other"                                               # another source, same output name
    (other / "in").mkdir(parents=True)
    Image.fromarray(smooth_rgb(30, 40, 4)).save(other / "in" / "a.png")
    res = colorize(other / "in", "--checkpoint", ckpt, "--out", out, "--overwrite")
    assert res.exit_code == 0                                                # --overwrite: replaced...
    assert colorize(src / "a.png", "--checkpoint", ckpt, "--out", out / "in").exit_code == 1   # ...and now foreign
    res = colorize(src, "--checkpoint", ckpt, "--out", out, "--overwrite")
    assert res.exit_code == 0 and load_rgb(out / "in" / "b.png").shape == (30, 40, 3)
    assert (out / "other.png").read_bytes() == b"unrelated"                  # never part of the job
    assert not [p for p in out.rglob("*.tmp*")]                              # no temporary file left


@pytest.mark.parametrize("fmt, suffix", [("png", ".png"), ("jpg", ".jpg"), ("webp", ".webp")])
def test_formats_and_alpha(tmp_path, ckpt, fmt, suffix):
    src = tmp_path / "in"
    src.mkdir()
    rgb = smooth_rgb(33, 47, 5)
    alpha = np.linspace(0, 255, 33 * 47).reshape(33, 47).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(src / "logo.png")
    Image.fromarray(rgb).save(src / "photo.png")
    out = tmp_path / "out"
    res = colorize(src, "--checkpoint", ckpt, "--out", out, "--format", fmt)
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "in").iterdir()) == ["logo" + suffix, "photo" + suffix]
    with Image.open(out / "in" / ("logo" + suffix)) as im:
        assert im.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[fmt] and im.size == (47, 33)
        if fmt == "jpg":
            assert im.mode == "RGB" and "1 lost their transparency" in res.output
        else:
            assert im.mode == "RGBA"
            assert np.array_equal(np.asarray(im)[..., 3], alpha)             # alpha kept exactly
    dL = np.abs(rgb_to_lab(load_rgb(out / "in" / ("photo" + suffix)))[..., 0] - rgb_to_lab(rgb)[..., 0])
    assert dL.mean() < (0.5 if fmt == "png" else 2.0)                        # lossy formats: still the photo


def test_folders_keep_their_layout_and_odd_names_are_read_by_content(tmp_path, ckpt):
    a, b = tmp_path / "a", tmp_path / "b"
    (a / "deep" / "er").mkdir(parents=True)
    b.mkdir()
    Image.fromarray(smooth_rgb(20, 30, 6)).save(a / "deep" / "er" / "x.png")
    Image.fromarray(smooth_rgb(20, 30, 7)).save(a / "scan.jfif", format="JPEG")   # preprocess reads .jfif
    Image.fromarray(smooth_rgb(20, 30, 8)).save(a / "deep" / "IMG_0001", format="PNG")  # no suffix
    Image.fromarray(smooth_rgb(20, 30, 9)).save(b / "photo.dat", format="JPEG")   # odd suffix
    (a / "README.txt").write_text("notes")                                  # not an image: ignored, counted
    Image.fromarray(smooth_rgb(20, 30, 10)).save(tmp_path / "single.bmp")
    out = tmp_path / "out"
    res = colorize(a, b, tmp_path / "single.bmp", "--checkpoint", ckpt, "--out", out)
    assert res.exit_code == 0, res.output
    assert "1 non-image file(s) in folders ignored" in res.output
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a/deep/IMG_0001.png", "a/deep/er/x.png", "a/scan.png", "b/photo.png", "single.png"]
    assert os.path.exists(out / ".colorize-record.jsonl")


def test_a_run_killed_right_after_a_rename_leaves_outputs_its_rerun_recognises(tmp_path, ckpt, monkeypatch):
    """The record line is written before the rename, so no moment of a kill leaves an output that the rerun
    would refuse as foreign (nor a partial file under the final name)."""
    import colorfast.outputs as outputs
    from colorfast.photos import ColorizeConfig, run
    from colorfast.loader import load_colorizer
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(smooth_rgb(20, 30, 20 + i)).save(src / f"p{i}.png")
    cfg = ColorizeConfig(inputs=(str(src),), checkpoint=ckpt, out=str(tmp_path / "out"), size=32, device="cpu")
    colorizer = load_colorizer(ckpt)
    real_replace = os.replace

    def replace_then_die(a, b):
        real_replace(a, b)
        raise KeyboardInterrupt                               # killed just after the first output is in place

    monkeypatch.setattr(outputs.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, colorizer)
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    assert [p.name for p in (tmp_path / "out" / "in").iterdir()] == ["p0.png"]
    assert len(run(cfg, colorizer).written) == 3              # the rerun replaces it and does the rest
