"""`--config FILE` on fit, study and preprocess (YAML or JSON; command-line options override it; a run's own
record replays it), `--version`, and the LICENSE that setup.cfg names."""
import configparser
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import cli
from trainer.synthetic import write_synthetic_shards

ROOT = Path(__file__).resolve().parent.parent


def _setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _ok(args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def _one_line_error(args, *says):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    error = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and all(s in error[0] for s in says), res.output
    return error[0]


def test_version_prints_the_package_version():
    assert _ok(["--version"]).output == f"colorfast {_setup_cfg()['metadata']['version']}\n"


def test_version_from_a_checkout_that_is_not_installed(monkeypatch):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)
    monkeypatch.setattr(md, "version", missing)
    assert _ok(["--version"]).output == f"colorfast {_setup_cfg()['metadata']['version']}\n"


def test_license_is_the_mit_text_that_setup_cfg_names():
    assert _setup_cfg()["metadata"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 the colorfast authors" in text
    assert "Permission is hereby granted, free of charge" in text and 'THE SOFTWARE IS PROVIDED "AS IS"' in text


# ---- fit ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    return write_synthetic_shards(tmp_path_factory.mktemp("cfg") / "shards", n=16, size=32, per_shard=8,
                                  test_every=4)


def test_fit_config_file_then_command_line_then_replay(tiny_shards, tmp_path):
    given = {"data": str(tiny_shards), "out": str(tmp_path / "run1"), "model": "tiny", "crop": 32,
             "batch_size": 4, "steps": 2, "workers": 0, "verify": "off", "lr": 0.002, "flip": False, "seed": 5,
             "val-data": [str(tiny_shards)]}
    (tmp_path / "fit.json").write_text(json.dumps(given))
    _ok(["fit", "--config", tmp_path / "fit.json", "--seed", "3"])
    stored = json.loads((tmp_path / "run1" / "config.json").read_text())
    assert stored["seed"] == 3                                    # the command line wins over the file
    assert stored["val_data"] == [str(tiny_shards)]
    assert {k: stored[k.replace("-", "_")] for k in given if k not in ("seed", "val-data")} == \
        {k: v for k, v in given.items() if k not in ("seed", "val-data")}
    assert stored["loss"] == "ce" and stored["weight_decay"] == 1e-3        # the rest: the defaults

    _ok(["fit", "--config", tmp_path / "run1" / "config.json", "--out", tmp_path / "run2"])
    replayed = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert replayed == {**stored, "out": str(tmp_path / "run2")}

    # a config.json from before --loss-reduction, --gray-crops and --data-init: those replay as the run had them
    from trainer.config import BEFORE_FIELD
    old = {k: v for k, v in stored.items() if k not in BEFORE_FIELD}
    (tmp_path / "old.json").write_text(json.dumps(old))
    _ok(["fit", "--config", tmp_path / "old.json", "--out", tmp_path / "run3"])
    replayed = json.loads((tmp_path / "run3" / "config.json").read_text())
    assert replayed == {**stored, **BEFORE_FIELD, "out": str(tmp_path / "run3")}
    assert replayed["loss_reduction"] == "mean"


def test_config_file_errors_are_one_line(tmp_path):
    (tmp_path / "typo.json").write_text(json.dumps({"model": "tiny", "learning_rate": 1, "bach_size": 2}))
    line = _one_line_error(["fit", "--config", tmp_path / "typo.json"], "unknown key(s) bach_size, learning_rate",
                           "known:", "batch_size", "lr")
    assert "weight_decay" in line
    (tmp_path / "bad.json").write_text("{model: tiny")
    _one_line_error(["fit", "--config", tmp_path / "bad.json"], "not valid JSON")
    (tmp_path / "bad.yaml").write_text("model: [tiny\n")
    _one_line_error(["fit", "--config", tmp_path / "bad.yaml"], "not valid YAML")
    (tmp_path / "photo.yaml").write_bytes(b"\xff\xd8\xff\xe0 not text")
    _one_line_error(["fit", "--config", tmp_path / "photo.yaml"], "cannot be read as a text file")
    (tmp_path / "list.yaml").write_text("- tiny\n")
    _one_line_error(["fit", "--config", tmp_path / "list.yaml"], "expected a mapping", "got list")
    (tmp_path / "crop.json").write_text(json.dumps({"crop": 30}))           # values pass the options' checks
    _one_line_error(["fit", "--config", tmp_path / "crop.json"], "multiple of 8")
    (tmp_path / "chroma.json").write_text(json.dumps({"gray_chroma": 3.0}))  # recorded, not an option
    _one_line_error(["preprocess", "sample", "--config", tmp_path / "chroma.json"],
                    "gray_chroma=3.0: not an option of `preprocess`")


def test_yaml_without_pyyaml_names_the_package(tmp_path, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "yaml", None)                          # import yaml -> ImportError
    (tmp_path / "fit.yaml").write_text("model: tiny\n")
    _one_line_error(["fit", "--config", tmp_path / "fit.yaml"], "pip install pyyaml")


# ---- preprocess and study ----------------------------------------------------------------------------------
def test_preprocess_yaml_config_then_command_line_then_manifest_replay(tmp_path):
    from PIL import Image
    from skimage import data
    root = tmp_path / "photos"
    root.mkdir()
    for name in ("astronaut", "coffee"):
        Image.fromarray(getattr(data, name)()).resize((96, 80)).save(root / f"{name}.jpg")
    (tmp_path / "prep.yaml").write_text(f"dataset: folder\nroot: {root}\nout: {tmp_path / 'a'}\nsize: 32\n"
                                        f"jobs: 1\nshard-size: 1\nknn: 4\n")
    _ok(["preprocess", "--config", tmp_path / "prep.yaml", "--knn", "3"])   # the dataset comes from the file
    stored = json.loads((tmp_path / "a" / "manifest.json").read_text())["config"]
    assert (stored["dataset"], stored["root"], stored["size"], stored["shard_size"], stored["knn"]) == \
        ("folder", str(root), 32, 1, 3)
    _ok(["preprocess", "--config", tmp_path / "a" / "manifest.json", "--out", tmp_path / "b"])
    replayed = json.loads((tmp_path / "b" / "manifest.json").read_text())["config"]
    assert replayed == {**stored, "out_dir": str(tmp_path / "b")}


def test_study_config_then_command_line_then_study_json_replay(tmp_path):
    train = write_synthetic_shards(tmp_path / "objects", n=16, size=64, test_every=4, seed=2)
    (tmp_path / "study.json").write_text(json.dumps(
        {"train": str(train), "losses": "l2,ce", "steps": 2, "batch_size": 4, "crop": 48, "variant": ["none"],
         "train_eval": 3, "out": str(tmp_path / "s1"), "seed": 4}))
    _ok(["study", "--config", tmp_path / "study.json", "--seed", "1"])
    stored = json.loads((tmp_path / "s1" / "study.json").read_text())["config"]
    assert (stored["train"], stored["losses"], stored["steps"], stored["variants"], stored["seed"]) == \
        (str(train), ["l2", "ce"], 2, [], 1)
    _ok(["study", "--config", tmp_path / "s1" / "study.json", "--out", tmp_path / "s2"])
    replayed = json.loads((tmp_path / "s2" / "study.json").read_text())["config"]
    assert replayed == {**stored, "out": str(tmp_path / "s2")}
