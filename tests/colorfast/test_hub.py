"""`--checkpoint eccv16-released`: downloaded once into the torch hub cache, hash-checked, then loaded as a file.

The publisher is replaced by a local http.server serving a generated released-layout state dict under a
name carrying its own SHA-256 prefix (COLORFAST_ECCV16_RELEASED_URL points there; TORCH_HOME moves the cache).
"""
import hashlib

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cli import cli
from colorfast import hub
from colorfast.loader import load_colorizer
from pipeline.images import load_rgb, rgb_to_lab
from released_weights import hash_named, released_centers, released_state_dict, torch_bytes


@pytest.fixture
def publisher(file_server, tmp_path, monkeypatch):
    """Serve a good released file; returns (its bytes, its name, the cache dir, requested paths)."""
    root, url, requests = file_server
    data = torch_bytes(released_state_dict())
    name = hash_named(data)
    (root / name).write_bytes(data)
    monkeypatch.setenv("COLORFAST_ECCV16_RELEASED_URL", f"{url}/{name}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return data, name, tmp_path / "torch_home" / "hub" / "checkpoints", requests


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    path = tmp_path / "photo.png"
    Image.fromarray(rgb).save(path)
    return path


def test_the_published_address_and_hash_are_the_reference_projects():
    entry = hub.NAMED["eccv16-released"]
    assert entry.url == "https://colorizers.s3.us-east-2.amazonaws.com/colorization_release_v2-9b330a0b.pth"
    assert hub.expected_prefix(entry.url) == ("colorization_release_v2-9b330a0b.pth", "9b330a0b")


def test_named_checkpoint_is_downloaded_once_and_colorizes(publisher, photo, tmp_path):
    data, name, cache, requests = publisher
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["colorize", str(photo), "--checkpoint", "eccv16-released", "--out", str(out),
                                   "--size", "32"])
    assert res.exit_code == 0, res.output
    assert (cache / name).read_bytes() == data                       # in the torch hub cache, byte for byte
    assert requests == [f"/{name}"]
    assert "temperature 1 (released weights" in res.output and "bilinear" in res.output
    rgb_out = load_rgb(out / "photo.png")
    assert np.abs(rgb_to_lab(rgb_out)[..., 0] - rgb_to_lab(load_rgb(photo))[..., 0]).max() < 1.0

    # a second use is a cache hit: no request; it loads as the local file would
    col = load_colorizer("eccv16-released")
    assert requests == [f"/{name}"]
    assert col.released and "eccv16-released" in col.source and str(cache / name) in col.source
    torch.testing.assert_close(col.centers, released_centers())
    assert not list(cache.glob("*.partial"))


def test_evaluate_and_compare_take_the_name_too(publisher, photo, tmp_path):
    _, name, _, requests = publisher
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    photo.rename(imgs / photo.name)
    res = CliRunner().invoke(cli, ["evaluate", "--checkpoint", "eccv16-released", "--images", str(imgs),
                                   "--size", "32", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["compare", "--checkpoint", "eccv16-released", "--images", str(imgs),
                                   "--size", "32", "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert requests == [f"/{name}"]                                  # one download for both commands
    assert "eccv16-released: temperature 1" in (tmp_path / "cmp" / "index.html").read_text()


def test_a_corrupted_download_is_refused_and_not_kept(file_server, tmp_path, monkeypatch, photo):
    root, url, _ = file_server
    good = torch_bytes(released_state_dict())
    name = hash_named(good)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF                                       # one flipped byte in the middle
    (root / name).write_bytes(bytes(bad))
    monkeypatch.setenv("COLORFAST_ECCV16_RELEASED_URL", f"{url}/{name}")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    res = CliRunner().invoke(cli, ["colorize", str(photo), "--checkpoint", "eccv16-released",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    message = res.output.strip().split("\n")[-1]
    assert "corrupt" in message and name[-12:-4] in message and "Traceback" not in res.output
    assert len(res.output.strip().split("\n")) <= 2                  # the progress bar at most, then the error
    cache = tmp_path / "th" / "hub" / "checkpoints"
    assert not cache.exists() or not list(cache.iterdir())           # neither the file nor a .partial stays
    assert not (tmp_path / "o").exists()


def test_a_corrupted_cached_copy_is_refused(publisher, photo, tmp_path):
    data, name, cache, requests = publisher
    cache.mkdir(parents=True)
    (cache / name).write_bytes(data[: len(data) // 2])               # e.g. an interrupted manual copy
    res = CliRunner().invoke(cli, ["colorize", str(photo), "--checkpoint", "eccv16-released",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "cached copy" in res.output and "delete it" in res.output
    assert requests == []


def test_offline_is_a_one_line_instruction(tmp_path, monkeypatch, photo):
    monkeypatch.setenv("COLORFAST_ECCV16_RELEASED_URL", "http://127.0.0.1:9/colorization_release_v2-9b330a0b.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    res = CliRunner().invoke(cli, ["colorize", str(photo), "--checkpoint", "eccv16-released",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "could not download" in res.output and "colorization_release_v2-9b330a0b.pth" in res.output
    assert "pass its path to --checkpoint" in res.output


def test_an_offline_copy_in_the_cache_is_used_without_the_network(tmp_path, monkeypatch):
    """What the README tells offline users: put the file under its published name into the cache."""
    data = torch_bytes(released_state_dict())
    name = hash_named(data)
    monkeypatch.setenv("COLORFAST_ECCV16_RELEASED_URL", f"http://127.0.0.1:9/{name}")   # nothing listens there
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cache = tmp_path / "th" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / name).write_bytes(data)
    assert hub.resolve_checkpoint("eccv16-released") == cache / name
    assert hashlib.sha256((cache / name).read_bytes()).hexdigest().startswith(name[-12:-4])


def test_fit_init_takes_the_name(publisher, tiny_runs, tmp_path):
    data_dir = tiny_runs[0]
    _, name, cache, requests = publisher
    res = CliRunner().invoke(cli, ["fit", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--model", "tiny",
                                   "--init", "eccv16-released", "--steps", "1", "--batch-size", "2", "--crop", "32",
                                   "--workers", "0", "--device", "cpu", "--verify", "off"])
    assert res.exit_code == 0, res.output
    assert requests == [f"/{name}"]
    col = load_colorizer(tmp_path / "run" / "last.pt")
    torch.testing.assert_close(col.centers, released_centers())      # the released bins came with the trunk
    assert not col.released and col.default_temperature == pytest.approx(0.38)   # now our checkpoint


def test_unknown_names_and_missing_files_list_the_known_names(tmp_path, photo):
    res = CliRunner().invoke(cli, ["colorize", str(photo), "--checkpoint", "eccv17-released"])
    assert res.exit_code == 2 and "eccv16-released" in res.output and "no such file" in res.output
    res = CliRunner().invoke(cli, ["export", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "is a folder" in res.output
