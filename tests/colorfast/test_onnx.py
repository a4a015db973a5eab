"""`cli.py export` and `colorize --runtime onnx`: the .onnx file alone reproduces torch's colours."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from colorfast.photos import predict_ab_full
from colorfast.loader import load_colorizer
from pipeline.images import load_rgb, rgb_to_lab

ort = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")


@pytest.fixture(scope="module")
def exported(tiny_runs, released_file, tmp_path_factory):
    """{"ce", "l2", "released"} -> (checkpoint, .onnx written by `cli.py export`, its output)."""
    out = tmp_path_factory.mktemp("onnx")
    sources = {"ce": tiny_runs[1]["ce"], "l2": tiny_runs[1]["l2"], "released": released_file[0]}
    made = {}
    for name, ckpt in sources.items():
        res = CliRunner().invoke(cli, ["export", "--checkpoint", str(ckpt), "--out", str(out / f"{name}.onnx")])
        assert res.exit_code == 0, res.output
        made[name] = (ckpt, out / f"{name}.onnx", res.output)
    return made


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data
    return skimage.data.astronaut()                                   # (512, 512, 3) uint8, a real photo


@pytest.mark.parametrize("name", ["ce", "l2", "released"])
def test_onnx_matches_torch_on_a_real_photo(exported, astronaut, name):
    ckpt, path, output = exported[name]
    assert "max |delta ab| vs torch" in output
    torch_col, onnx_col = load_colorizer(ckpt), load_colorizer(path)
    assert onnx_col.runtime == "onnx" and onnx_col.model is None
    L = rgb_to_lab(astronaut)[..., 0]
    for t in ([None, 0.2] if name != "l2" else [None]):
        a = predict_ab_full(torch_col, L, 256, t)
        b = predict_ab_full(onnx_col, L, 256, t)
        assert a.shape == (512, 512, 2) and np.abs(a).max() > 0.5      # real colour, not zeros on both sides
        # at T = 0.2 the logits are amplified 5x, and with them the float32 differences of the two runtimes'
        # convolutions (~5e-3 ab units on the released fixture, whose output depends on L)
        tol = 1e-3 if t is None else 1e-2
        assert np.abs(a - b).max() <= tol, (name, t, np.abs(a - b).max())


def test_batch_height_and_width_are_dynamic(exported):
    torch_col, onnx_col = (load_colorizer(p) for p in exported["released"][:2])
    for shape in [(1, 1, 64, 64), (3, 1, 40, 136), (2, 1, 37, 53)]:   # the last is padded to multiples of 8
        L = torch.rand(*shape) * 100
        a, b = torch_col.predict_ab(L), onnx_col.predict_ab(L)
        assert b.shape == a.shape == (shape[0], 2, shape[2] // 4, shape[3] // 4)
        assert (a - b).abs().max() <= 1e-3
    dims = [d.dim_param or d.dim_value for d in onnx.load(str(exported["released"][1])).graph.input[0].type.tensor_type.shape.dim]
    assert isinstance(dims[0], str) and dims[1] == 1 and isinstance(dims[2], str) and isinstance(dims[3], str)


def test_the_file_carries_what_decoding_needs(exported):
    meta = {p.key: p.value for p in onnx.load(str(exported["released"][1])).metadata_props}
    assert meta["colorfast.loss"] == "ce" and meta["colorfast.released"] == "true"
    assert float(meta["colorfast.default_temperature"]) == 1.0 and meta["colorfast.upsample"] == "bilinear"
    torch_col = load_colorizer(exported["released"][0])
    np.testing.assert_allclose(json.loads(meta["colorfast.centers"]), torch_col.centers.numpy(), atol=1e-4)
    ours = load_colorizer(exported["ce"][1])
    assert ours.default_temperature == 0.38 and ours.upsample == "bicubic" and ours.prior is not None
    np.testing.assert_allclose(ours.prior["prob"], load_colorizer(exported["ce"][0]).prior["prob"], rtol=1e-6)
    assert load_colorizer(exported["l2"][1]).default_temperature is None


def test_colorize_runtime_onnx_writes_what_torch_writes(exported, tmp_path):
    import skimage.data
    from PIL import Image
    Image.fromarray(skimage.data.chelsea()).save(tmp_path / "cat.png")
    ckpt, path, _ = exported["ce"]
    outs = {}
    for runtime, source in (("torch", ckpt), ("onnx", path)):
        res = CliRunner().invoke(cli, ["colorize", str(tmp_path / "cat.png"), "--checkpoint", str(source),
                                       "--runtime", runtime, "--out", str(tmp_path / runtime), "--size", "128"])
        assert res.exit_code == 0, res.output
        outs[runtime] = load_rgb(tmp_path / runtime / "cat.png").astype(int)
        assert ("onnxruntime" in res.output) == (runtime == "onnx")
    assert np.abs(outs["torch"] - outs["onnx"]).max() <= 1                 # 8-bit rounding at most


def test_wrong_files_for_a_runtime_are_clear_errors(exported, tmp_path):
    ckpt, path, _ = exported["ce"]
    img = tmp_path / "i.png"
    from PIL import Image
    Image.fromarray(np.full((16, 16, 3), 120, np.uint8)).save(img)
    res = CliRunner().invoke(cli, ["colorize", str(img), "--checkpoint", str(ckpt), "--runtime", "onnx"])
    assert res.exit_code == 1 and "cli.py export" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["colorize", str(img), "--checkpoint", str(path), "--runtime", "torch"])
    assert res.exit_code == 1 and "--runtime onnx" in res.output
    # an ONNX model from elsewhere: its inputs could mean anything
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), str(tmp_path / "other.onnx"))
    res = CliRunner().invoke(cli, ["colorize", str(img), "--checkpoint", str(tmp_path / "other.onnx")])
    assert res.exit_code == 1 and "without colorfast metadata" in res.output
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    res = CliRunner().invoke(cli, ["colorize", str(img), "--checkpoint", str(tmp_path / "junk.onnx")])
    assert res.exit_code == 1 and "not a loadable ONNX model" in res.output and "Traceback" not in res.output


def test_export_does_not_overwrite_without_force(exported):
    ckpt, path, _ = exported["l2"]
    before = path.read_bytes()
    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(ckpt), "--out", str(path)])
    assert res.exit_code == 2 and "--force" in res.output
    assert path.read_bytes() == before


# ---- integrity: a digest in the file, metadata checked, inputs never overwritten ------------------------------
def _one_line_error(res, *fragments):
    assert isinstance(res.exception, SystemExit) and res.exit_code == 1, (res.exception, res.output)
    assert "Traceback" not in res.output, res.output
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and res.stderr.rstrip().splitlines()[-1] == errors[0], res.stderr
    assert all(f in errors[0] for f in fragments), (fragments, errors[0])


def _gray_png(tmp_path):
    from PIL import Image
    Image.fromarray(np.full((24, 24, 3), 120, np.uint8)).save(tmp_path / "i.png")
    return tmp_path / "i.png"


def _rewritten(path, out, stamp=True, **meta):
    """A copy of an exported file with colorfast.* metadata set (None: removed), its digest recomputed when
    `stamp` (what a hand edit with the project's own writer would give), else dropped."""
    from colorfast.onnx_runtime import DIGEST_KEY, with_digest
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({f"colorfast.{k}": v for k, v in meta.items()})
    props[DIGEST_KEY] = "0" * 64 if stamp else None
    del proto.metadata_props[:]
    for k, v in props.items():
        if v is not None:
            proto.metadata_props.add(key=k, value=v)
    data = proto.SerializeToString()
    out.write_bytes(with_digest(data) if stamp else data)
    return out


def test_a_flipped_byte_anywhere_in_an_onnx_file_is_refused(exported, tmp_path):
    from trainer.checkpoint import CheckpointError
    good = exported["ce"][1].read_bytes()
    bad = tmp_path / "bad.onnx"
    for offset in np.linspace(0, len(good) - 1, 40).astype(int):     # header, weights, graph, metadata, digest
        data = bytearray(good)
        data[offset] ^= 0x10
        bad.write_bytes(bytes(data))
        with pytest.raises(CheckpointError, match="bad.onnx: (checksum mismatch|damaged|not a loadable)"):
            load_colorizer(bad)
    data = bytearray(good)
    data[len(good) // 2] ^= 0x10                                     # inside the weights
    bad.write_bytes(bytes(data))
    res = CliRunner().invoke(cli, ["colorize", str(_gray_png(tmp_path)), "--checkpoint", str(bad),
                                   "--out", str(tmp_path / "o")])
    _one_line_error(res, str(bad), "checksum mismatch (the file is damaged)")


def test_onnx_files_without_a_digest(exported, tmp_path, capsys):
    from trainer.checkpoint import CheckpointError
    old = _rewritten(exported["ce"][1], tmp_path / "old.onnx", stamp=False, version="1")
    assert load_colorizer(old).loss == "ce"                          # exported before digests: loads, warned
    assert "old.onnx: exported before .onnx files carried a checksum" in capsys.readouterr().err
    lost = _rewritten(exported["ce"][1], tmp_path / "lost.onnx", stamp=False)
    with pytest.raises(CheckpointError, match="lost.onnx: damaged: its colorfast.sha256 entry is missing"):
        load_colorizer(lost)


SPOOFED = {                 # name -> (exported model, metadata set, the key the one-line error names)
    "unknown loss": ("ce", {"loss": "bogus"}, "colorfast.loss"),
    "l2 on a class graph": ("ce", {"loss": "l2"}, "colorfast.loss"),
    "class loss on an l2 graph": ("l2", {"loss": "ce"}, "colorfast.loss"),
    "centres of 3 columns": ("ce", {"centers": "[[1, 2, 3], [4, 5, 6]]"}, "colorfast.centers"),
    "centres not JSON": ("ce", {"centers": "[[1, 2], "}, "colorfast.centers"),
    "centres missing": ("ce", {"centers": None}, "colorfast.centers"),
    "centres not finite": ("released", {"centers": "[[NaN, 0], [1, 1]]"}, "colorfast.centers"),
    "centres on an l2 model": ("l2", {"centers": "[[0, 0], [1, 1]]"}, "colorfast.centers"),
    "temperature not a number": ("ce", {"default_temperature": "warm"}, "colorfast.default_temperature"),
    "temperature not finite": ("ce", {"default_temperature": "inf"}, "colorfast.default_temperature"),
    "released neither true nor false": ("released", {"released": "maybe"}, "colorfast.released"),
    "prior without weights": ("ce", {"prior": '{"centers": [[0, 0]], "prob": [1]}'}, "colorfast.prior"),
}


@pytest.mark.parametrize("name", list(SPOOFED))
def test_spoofed_metadata_is_a_one_line_error(name, exported, tmp_path):
    model, meta, key = SPOOFED[name]
    spoofed = _rewritten(exported[model][1], tmp_path / "spoofed.onnx", **meta)
    res = CliRunner().invoke(cli, ["colorize", str(_gray_png(tmp_path)), "--checkpoint", str(spoofed),
                                   "--out", str(tmp_path / "o")])
    _one_line_error(res, str(spoofed), key)


def test_export_never_writes_over_its_input(exported, tmp_path):
    import shutil
    from colorfast.onnx_export import ExportError, export
    ckpt = shutil.copy(exported["ce"][0], tmp_path / "last.pt")
    before = ckpt.read_bytes()
    (tmp_path / "link.onnx").symlink_to(ckpt)
    for out in (ckpt, tmp_path / "link.onnx"):
        res = CliRunner().invoke(cli, ["export", "--checkpoint", str(ckpt), "--out", str(out), "--force"])
        assert res.exit_code == 2 and "is the checkpoint being exported" in res.output, res.output
        assert "Traceback" not in res.output
        with pytest.raises(ExportError, match="never replaces its input"):
            export(ckpt, out)
    assert ckpt.read_bytes() == before and (tmp_path / "link.onnx").is_symlink()


def test_the_onnx_runtime_refuses_absurd_temperatures(exported):
    """The graph divides the logits by the temperature unchecked: nan or 1e-300 decoded to an all-white image."""
    colorizer = load_colorizer(exported["ce"][1])
    L = torch.full((1, 1, 32, 32), 50.0)
    for t in (float("nan"), 1e-300, float("inf"), -1.0):
        with pytest.raises(ValueError, match="finite number between"):
            colorizer._forward_ab(L, t)                       # below temperature_for, as onnx_runtime receives it
    assert torch.isfinite(colorizer.predict_ab(L, temperature=0.38)).all()
