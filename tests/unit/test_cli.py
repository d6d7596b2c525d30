"""CLI behaviour that needs no root: one-line errors, exit codes, help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def run(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podrun", "--dir", str(data), *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_help_lists_commands(tmp_path: Path) -> None:
    res = run("--help", data=tmp_path)
    assert res.returncode == 0
    for cmd in ("fetch", "image"):
        assert cmd in res.stdout
    sub = run("image", "--help", data=tmp_path)
    for cmd in ("list", "inspect", "rm", "gc", "import", "export", "fsck"):
        assert cmd in sub.stdout


def one_line_error(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    first = res.stderr.splitlines()[0]
    assert first.startswith("podrun: ")
    for w in words:
        assert w in first


def test_bad_reference_is_a_usage_error(tmp_path: Path) -> None:
    one_line_error(run("fetch", "ftp://x/y", data=tmp_path), 253, "ftp://x/y", "unknown transport")
    one_line_error(run("fetch", "Bad/Name", data=tmp_path), 253, "Bad/Name")


def test_bad_flags_are_usage_errors(tmp_path: Path) -> None:
    one_line_error(run("fetch", "--pull-policy", "sometimes", "x", data=tmp_path), 253, "sometimes")
    one_line_error(run("--insecure-options", "yolo", "fetch", "x", data=tmp_path), 253, "yolo")
    one_line_error(run("fetch", "--platform", "linux", "x", data=tmp_path), 253, "linux")


def test_missing_local_inputs(tmp_path: Path) -> None:
    one_line_error(run("fetch", f"oci:{tmp_path}/nope", data=tmp_path / "d"), 252, "nope")
    one_line_error(run("image", "inspect", "nothing", data=tmp_path / "d"), 252, "nothing")
    one_line_error(run("image", "import", f"{tmp_path}/nope", "x", data=tmp_path / "d"), 252, "nope")


def test_empty_store_listing(tmp_path: Path) -> None:
    res = run("image", "list", "--format", "json", data=tmp_path / "d")
    assert res.returncode == 0 and res.stdout.strip() == "[]"
    res = run("image", "list", data=tmp_path / "d")
    assert res.stdout.split() == ["ID", "NAME", "SIZE", "CREATED"]


def test_python_m_and_version(tmp_path: Path) -> None:
    res = run("--version", data=tmp_path)
    assert res.returncode == 0 and "podrun" in res.stdout
