"""`cli.py export --format safetensors`: the ecosystem's weights format, loaded by every command as .pt is."""
import json
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cli import cli
from colorfast.loader import load_colorizer
from trainer.checkpoint import CheckpointError

st = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")


@pytest.fixture(scope="module")
def ema_run(tiny_runs, tmp_path_factory):
    """A tiny ce run with --ema: its colorizer uses the EMA weights, which differ from the raw ones."""
    from trainer.config import FitConfig
    from trainer.loop import fit
    root = tmp_path_factory.mktemp("ema_run")
    return fit(FitConfig(data=str(tiny_runs[0]), out=str(root / "ce"), model="tiny", loss="ce", steps=3,
                         batch_size=4, crop=32, workers=0, device="cpu", lr=1e-2, ema=0.5)) / "last.pt"


@pytest.fixture(scope="module")
def exported(tiny_runs, ema_run, released_file, tmp_path_factory):
    """{"ce", "l2", "ema", "released"} -> (checkpoint, .safetensors written by `cli.py export`)."""
    out = tmp_path_factory.mktemp("safetensors")
    made = {}
    for name, ckpt in {"ce": tiny_runs[1]["ce"], "l2": tiny_runs[1]["l2"], "ema": ema_run,
                       "released": released_file[0]}.items():
        res = CliRunner().invoke(cli, ["export", "--checkpoint", str(ckpt), "--out", str(out / f"{name}.safetensors")])
        assert res.exit_code == 0, res.output
        made[name] = (ckpt, out / f"{name}.safetensors")
    return made


@pytest.mark.parametrize("name", ["ce", "l2", "ema", "released"])
def test_predictions_equal_the_checkpoints_exactly(exported, name):
    ckpt, path = exported[name]
    a, b = load_colorizer(ckpt), load_colorizer(path)
    assert (b.loss, b.released, b.weights, b.default_temperature, b.upsample) == \
           (a.loss, a.released, a.weights, a.default_temperature, a.upsample)
    assert b.weights == ("ema" if name == "ema" else "raw")
    L = torch.rand(2, 1, 40, 56, generator=torch.Generator().manual_seed(0)) * 100
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    for t in ([None, 0.2] if name != "l2" else [None]):
        if name == "released":     # its bins are a transposed view of model_out in the .pth, contiguous in the
            # file: the same numbers summed in another order by the decoding's einsum (~2e-5 ab units)
            assert (a.predict_ab(L, t) - b.predict_ab(L, t)).abs().max() <= 1e-4
        else:
            assert torch.equal(a.predict_ab(L, t), b.predict_ab(L, t))
    if a.prior is not None:
        assert all(np.array_equal(a.prior[k], b.prior[k]) and a.prior[k].dtype == b.prior[k].dtype for k in a.prior)


def test_the_ecosystems_reader_gets_the_state_dict(exported):
    ckpt, path = exported["ema"]
    state = st.load_file(str(path))                   # plain safetensors, no colorfast code
    model = load_colorizer(ckpt).model
    assert set(state) == set(model.state_dict()) and "centers" in state
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["colorfast"])
    assert meta["loss"] == "ce" and meta["default_temperature"] == 0.38 and meta["upsample"] == "bicubic"


def test_colorize_takes_a_safetensors_file(exported, tmp_path):
    import skimage.data
    import cv2
    from pipeline.images import load_rgb
    photo = tmp_path / "in.png"
    cv2.imwrite(str(photo), skimage.data.astronaut()[::4, ::4, ::-1])
    outs = {}
    for kind, ckpt in zip(("pt", "st"), exported["ce"]):
        res = CliRunner().invoke(cli, ["colorize", str(photo), "--checkpoint", str(ckpt),
                                       "--out", str(tmp_path / kind)])
        assert res.exit_code == 0, res.output
        (outs[kind],) = (tmp_path / kind).glob("*.png")
    assert np.array_equal(load_rgb(outs["pt"]), load_rgb(outs["st"]))


def _copy(path, tmp_path):
    bad = tmp_path / path.name
    bad.write_bytes(path.read_bytes())
    return bad


def test_a_flipped_weight_byte_is_refused_in_one_line(exported, tmp_path):
    bad = _copy(exported["ce"][1], tmp_path)
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0x01                                 # in the tensor bytes (after the header)
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum mismatch") as e:
        load_colorizer(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    res = CliRunner().invoke(cli, ["colorize", str(bad), "--checkpoint", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "Traceback" not in res.output


def _with_metadata(path, tmp_path, edit):
    """A copy of `path` whose colorfast metadata went through `edit` (a dict -> None), rewritten by safetensors."""
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["colorfast"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(meta)
    bad = tmp_path / "edited.safetensors"
    st.save_file(tensors, str(bad), metadata={"colorfast": json.dumps(meta)})
    return bad


def test_edited_metadata_is_refused(exported, tmp_path):
    path = exported["ce"][1]
    assert load_colorizer(_with_metadata(path, tmp_path, lambda m: None)).loss == "ce"    # rewriting alone is fine
    for edit in (lambda m: m.update(loss="focal"), lambda m: m.update(released=True),
                 lambda m: m["prior"]["weights"]["data"].__setitem__(0, 9.0)):
        with pytest.raises(CheckpointError, match="checksum mismatch"):
            load_colorizer(_with_metadata(path, tmp_path, edit))


def test_damaged_and_foreign_files_are_one_line_errors(exported, tmp_path):
    path = exported["ce"][1]
    cases = {"truncated": path.read_bytes()[:-50], "garbage": b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all.",
             "huge header": struct.pack("<Q", 2 ** 40) + b"{}"}
    foreign = tmp_path / "foreign.safetensors"
    st.save_file({"w": torch.zeros(3)}, str(foreign))
    for name, data in cases.items():
        bad = tmp_path / f"{name.replace(' ', '_')}.safetensors"
        bad.write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            load_colorizer(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value), name
    with pytest.raises(CheckpointError, match="without colorfast metadata"):
        load_colorizer(foreign)


def test_export_never_replaces_its_input_and_checks_the_suffix(exported, tmp_path):
    path = exported["ce"][1]
    before = path.read_bytes()
    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(path), "--out", str(path), "--force"])
    assert res.exit_code != 0 and "never replaces its input" in res.output
    assert path.read_bytes() == before
    # a .safetensors file exports again (to onnx or safetensors): it is a checkpoint like any other
    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(path), "--out", str(tmp_path / "again.safetensors")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(path), "--format", "onnx",
                                   "--out", str(tmp_path / "x.safetensors")])
    assert res.exit_code != 0 and "must end in .onnx for --format onnx" in res.output
    assert not (tmp_path / "x.safetensors").exists()


def test_fit_init_takes_a_safetensors_file(exported, tiny_runs, tmp_path):
    from types import SimpleNamespace
    from trainer.config import FitConfig
    from trainer.loop import build_model
    path = exported["ema"][1]
    cfg = FitConfig(data=str(tiny_runs[0]), out=str(tmp_path / "run"), model="tiny", loss="ce", init=str(path))
    model = build_model(cfg, SimpleNamespace(centers=np.zeros((5, 2), np.float32)))     # the bins come with --init
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in st.load_file(str(path)).items())
    res = CliRunner().invoke(cli, ["fit", "--data", str(tiny_runs[0]), "--out", str(tmp_path / "run"), "--model", "tiny",
                                   "--init", str(path), "--steps", "1", "--batch-size", "4", "--crop", "32",
                                   "--workers", "0", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    bad.write_bytes(bytes(data))
    res = CliRunner().invoke(cli, ["fit", "--data", str(tiny_runs[0]), "--out", str(tmp_path / "bad"), "--model", "tiny",
                                   "--init", str(bad), "--crop", "32", "--workers", "0", "--device", "cpu"])
    assert res.exit_code != 0 and "checksum mismatch" in res.output and "Traceback" not in res.output
