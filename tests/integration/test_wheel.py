"""A pip user's podrun runs pods: the stage1 flavors travel in the wheel (docs/packaging.md).

From a clean copy of the tree (packaging/copy-source.sh: nothing an earlier build left), build
an sdist and a wheel with ``python -m build``, install the wheel with its pinned dependencies
into a fresh virtualenv, import the demo image and run pods of both flavors with the installed
command, from outside the checkout; then the same after a plain ``pip install SRC``.  pip keeps
no cache (PIP_NO_CACHE_DIR): each run downloads what a fresh machine would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_root

PIP_ENV = dict(os.environ, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
SITE = "lib/python3.11/site-packages"


@dataclass
class Venv:
    """A fresh virtualenv with podrun's pinned dependencies, the demo rootfs beside it."""

    path: Path
    rootfs: Path

    def pip(self, *args: str) -> None:
        res = subprocess.run([str(self.path / "bin" / "python"), "-m", "pip", "-q", *args], capture_output=True,
                             text=True, env=PIP_ENV, timeout=900)
        assert res.returncode == 0, res.stderr[-3000:]

    def podrun(self, data: Path, *args: str, debug: bool = False) -> subprocess.CompletedProcess[str]:
        """The installed ``podrun`` command, run from outside the checkout with no stages override."""
        env = {k: v for k, v in os.environ.items() if k not in ("PODRUN_STAGES_DIR", "PYTHONPATH")}
        argv = [str(self.path / "bin" / "podrun"), "--dir", str(data), *(["--debug"] if debug else []), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=data.parent, timeout=120)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("wheel-src") / "podrun"
    subprocess.run(["bash", str(ROOT / "packaging" / "copy-source.sh"), str(src)], check=True)
    return src


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    require_root()
    base = tmp_path_factory.mktemp("wheel-venv")
    rootfs = subprocess.run(["bash", str(ROOT / "demo" / "build-rootfs.sh"), str(base / "rootfs")],
                            check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    v = Venv(base / "venv", Path(rootfs))
    v.pip("install", *tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    yield v
    shutil.rmtree(base)


def _runs_pods(venv: Venv, data: Path) -> None:
    """The installed podrun imports the demo image and runs a pod of each flavor from its own
    ``podrun/_stages``; everything it made is collected after."""
    try:
        res = venv.podrun(data, "image", "import", str(venv.rootfs), "demo")
        assert res.returncode == 0, res.stderr
        for flavor in ("default", "fly", "oci"):
            net = "host" if flavor == "fly" else "none"  # fly runs in the host's network only
            res = venv.podrun(data, "run", "--net", net, "--stage1", flavor, "demo", "--exec", "/bin/sh", "--",
                              "-c", f"echo {flavor} from a pip install")
            assert (res.returncode, res.stdout) == (0, f"{flavor} from a pip install\n"), res.stderr
        res = venv.podrun(data, "run", "--net", "none", "demo", "--exec", "/bin/true", debug=True)
        assert res.returncode == 0, res.stderr
        entry = venv.path / SITE / "podrun" / "_stages" / "default" / "run"
        assert f" -I -S {entry} --pod-dir " in res.stderr, res.stderr
    finally:
        res = venv.podrun(data, "gc", "--grace-period", "0s")
        assert res.returncode == 0, res.stderr
    assert venv.podrun(data, "list", "--format", "json").stdout.strip() == "[]"


def _installed_files(venv: Venv) -> None:
    """The command is podrun's launcher (pip's entry-point wrapper imports re on every start),
    pointed at the virtualenv's Python; the modules were compiled at install."""
    script = (venv.path / "bin" / "podrun").read_text()
    assert script.startswith(f"#!{venv.path}/bin/python\n") and "import re" not in script, script
    assert (venv.path / SITE / "podrun" / "stage1" / "__pycache__").is_dir()
    res = subprocess.run([str(venv.path / "bin" / "python"), "-m", "podrun", "--version"], capture_output=True,
                         text=True, cwd="/")
    assert res.stdout.startswith("podrun, version "), res.stderr


def _uninstall(venv: Venv) -> None:
    venv.pip("uninstall", "-y", "podrun")
    assert not (venv.path / SITE / "podrun").exists() and not (venv.path / "bin" / "podrun").exists()


def test_built_wheel_installs_and_runs_pods(source: Path, venv: Venv, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    res = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(source)], capture_output=True,
                         text=True, env=PIP_ENV, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    (sdist,), (wheel,) = out.glob("*.tar.gz"), out.glob("*.whl")
    with tarfile.open(sdist) as tar:
        assert f"{sdist.name.removesuffix('.tar.gz')}/stages/default/run" in tar.getnames()
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        assert {"podrun/_stages/default/manifest.json", "podrun/_stages/default/run", "podrun/_stages/default/enter",
                "podrun/_stages/fly/manifest.json", "podrun/_stages/fly/run"} <= set(names)
        assert not [n for n in names if "__pycache__" in n or n.startswith("stages/")]
        (script,) = (n for n in names if n.endswith(".data/scripts/podrun"))
        assert whl.read(script).startswith(b"#!python\n")
    venv.pip("install", str(wheel))
    try:
        _installed_files(venv)
        _runs_pods(venv, tmp_path / "data")
    finally:
        _uninstall(venv)


def test_pip_install_of_the_tree_runs_pods(source: Path, venv: Venv, tmp_path: Path) -> None:
    """``pip install .`` (not editable): pip builds the wheel itself."""
    venv.pip("install", str(source))
    try:
        _installed_files(venv)
        _runs_pods(venv, tmp_path / "data")
    finally:
        _uninstall(venv)
