"""The wheel a user installs: its top-level names, its package data, and that it runs with the clone out of sight.

Built from a copy of this tree (setuptools writes build/ and *.egg-info/ beside its input), installed with
`pip install --no-deps --target` into a folder that is the only addition to the path: the venv's site-packages
still give torch and the other dependencies, and a check that `colorfast.__file__` lies in that folder makes
sure the clone (or the venv's editable install of it) did not answer instead. Skipped, with the reason, only
when this Python cannot build a wheel at all (no pip, no setuptools with bdist_wheel); a build that fails is a
failure."""
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL = {"colorfast", "pipeline", "trainer", "cli.py"}
PACKAGE_DATA = {"colorfast/static/index.html", "pipeline/resources/README.md",
                "pipeline/resources/ilsvrclin12_val_inds.txt"}
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "artifacts", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", "shared")


def _cannot_build() -> str | None:
    """Why this Python cannot build a wheel offline, or None when it can."""
    if importlib.util.find_spec("pip") is None:
        return "pip is not installed in this Python"
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools (the build backend of pyproject.toml) is not installed in this Python"
    # in a child: importing setuptools here, after torch has imported distutils, trips setuptools' distutils shim
    probe = ("import importlib.util as u, setuptools.command; "
             "u.find_spec('setuptools.command.bdist_wheel') or u.find_spec('wheel') or exit(1)")
    if subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode:
        return "neither setuptools >= 70.1 nor the wheel package is installed: no bdist_wheel"
    return None


def _run(args, cwd, env, timeout=120) -> subprocess.CompletedProcess:
    res = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{args} exited {res.returncode}:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(wheel file, target folder it is installed into, environment with only that folder added)."""
    why = _cannot_build()
    if why:
        pytest.skip(f"cannot build a wheel here: {why}")
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist, target = tmp / "src", tmp / "dist", tmp / "target"
    shutil.copytree(ROOT, src, ignore=NOT_COPIED)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src],
         cwd=tmp, env=env)
    (wheel,) = dist.glob("colorfast-*.whl")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target, wheel],
         cwd=tmp, env=env)
    return wheel, target, {**env, "PYTHONPATH": str(target)}


def test_the_wheel_holds_exactly_our_top_level_names_and_the_package_data(installed):
    wheel, _, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == TOP_LEVEL, "another top-level name would clash with other packages (issue 20)"
    assert PACKAGE_DATA <= set(names), PACKAGE_DATA - set(names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "colorfast = cli:cli" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_installed_wheel_runs_the_command_and_the_api_from_another_folder(installed, tmp_path):
    """`colorfast --help`, `python -m colorfast colorize` and a 3-line API script, with the clone off the path."""
    _, target, env = installed
    away = tmp_path / "elsewhere"
    away.mkdir()
    ckpt = away / "tiny_released.pth"
    torch.save(_released_state_dict(), ckpt)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(away / "photo.png")

    script = target / "bin" / "colorfast"
    res = _run([script, "--help"], cwd=away, env=env)
    assert "colorize" in res.stdout and "Usage: colorfast" in res.stdout

    _run([sys.executable, "-m", "colorfast", "colorize", "photo.png", "--checkpoint", ckpt, "--out", "out"],
         cwd=away, env=env)
    assert Image.open(away / "out" / "photo.png").size == (56, 40)

    api = ("import colorfast, numpy as np\n"
           f"out = colorfast.load({str(ckpt)!r}).colorize(np.full((20, 30), 0.5))\n"
           "print(colorfast.__file__, out.shape, out.dtype)\n")
    res = _run([sys.executable, "-c", api], cwd=away, env=env)
    where, shape = res.stdout.split(" ", 1)
    assert Path(where).resolve().is_relative_to(target.resolve()), f"colorfast came from {where}, not the wheel"
    assert shape.strip() == "(20, 30, 3) float64"


def _released_state_dict() -> dict:
    """The tests' tiny released-layout weights (tests/colorfast/released_weights.py)."""
    spec = importlib.util.spec_from_file_location("released_weights", ROOT / "tests/colorfast/released_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.released_state_dict()
