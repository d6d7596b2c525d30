"""The warm start path stays lean: stage1 never imports click, jsonschema, pyroute2 or HTTP
code, nor the standard modules that cost milliseconds each (podrun.lean says why), and runs
without site-packages (python -I -S, as stage0 execs it)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

HEAVY = ("click", "jsonschema", "pyroute2", "urllib3", "http.client", "podrun.image", "podrun.cli", "podrun.stage0")
SLOW_STDLIB = ("dataclasses", "inspect", "json", "re", "enum", "typing", "pathlib", "signal", "socket",
               "selectors", "functools", "contextlib", "hashlib", "shutil", "collections")


def test_stage1_imports_are_lean() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        "import podrun.stage1.default.run, podrun.stage1.fly, podrun.stage2.confine; "
        f"bad = [m for m in {HEAVY + SLOW_STDLIB!r} if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"stage1 imported {out.stdout.strip()}"


def test_stage0_run_path_skips_http_and_schema_code() -> None:
    code = (
        "import sys; from podrun.cli import run; from podrun.stage0 import prepare; from podrun.image import api; "
        "print(','.join(m for m in ('jsonschema', 'pyroute2', 'urllib3', 'http.client') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == ""


def test_fast_run_path_skips_click() -> None:
    """``podrun run`` with well-formed flags never imports click (podrun.cli.runflags)."""
    code = (
        "import sys; from podrun.cli import runflags; "
        "f = runflags.fast_path(['--dir', '/nonexistent', 'run', 'img', '--exec', '/bin/true']); "
        "import podrun.stage0.launch, podrun.stage0.prepare, podrun.image.api, podrun.pod.seccomp_cache; "
        "print(f is not None, ','.join(m for m in ('click', 'typing', 'ctypes', 'hashlib', 'logging') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True"], out.stdout
