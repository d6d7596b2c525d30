"""CLI behaviour that needs no root: one-line errors, exit codes, help, for every command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fixtures.commands import command_paths


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


PATHS = command_paths()
GROUPS = sorted({p.split()[0] for p in PATHS if " " in p})
# Commands that need an argument, and what they say without one.
NEEDS_ARGUMENT = {
    "fetch": "Missing argument 'IMAGE...'.", "image inspect": "Missing argument 'IMAGE'.",
    "image rm": "Missing argument 'IMAGE...'.", "image import": "Missing argument 'ROOTFS-DIR|TAR'.",
    "image export": "Missing argument 'IMAGE'.", "image sign": "Missing argument 'IMAGE'.", "run": "Missing argument 'ARGS...'.",
    "prepare": "Missing argument 'ARGS...'.", "generate unit": "Missing argument 'ARGS...'.",
    "generate service": "Missing argument 'ARGS...'.",
    "run-prepared": "Missing argument 'UUID'.", "status": "no pod UUID given", "stop": "no pod UUID given",
    "rm": "no pod UUID given", "cat-manifest": "no pod UUID given", "enter": "no pod UUID given",
    "logs": "no pod UUID given", "trust set": "give a SCOPE or --prefix (one of them)",
}
TAKES_NO_ARGUMENT = ["image list", "image gc", "image fsck", "list", "gc", "version", "trust show"]


def test_the_command_tree_is_covered() -> None:
    assert len(PATHS) == 25 and GROUPS == ["generate", "image", "trust"]
    assert sorted([*NEEDS_ARGUMENT, *TAKES_NO_ARGUMENT]) == sorted(PATHS)


@pytest.mark.parametrize("path", PATHS + GROUPS)
def test_every_command_has_help(path: str, tmp_path: Path) -> None:
    res = run(*path.split(), "--help", data=tmp_path / "d")
    assert res.returncode == 0 and res.stderr == ""
    assert res.stdout.startswith(f"Usage: podrun {path} ")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("path", PATHS + GROUPS)
def test_every_command_refuses_an_unknown_flag(path: str, tmp_path: Path) -> None:
    res = run(*path.split(), "--no-such-flag", data=tmp_path / "d")
    if path in ("run", "prepare", "generate unit", "generate service"):  # flags after the run flags belong to an app
        one_line_error(res, 253, "expected an image, got '--no-such-flag'")
    elif path == "enter":  # enter UUID [CMD ARGS…]: the first word is the pod
        one_line_error(res, 252, "no pod with UUID '--no-such-flag'")
    else:
        one_line_error(res, 253, "No such option: --no-such-flag")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("path", "message"), NEEDS_ARGUMENT.items())
def test_a_missing_argument_is_a_usage_error(path: str, message: str, tmp_path: Path) -> None:
    res = run(*path.split(), data=tmp_path / "d")
    one_line_error(res, 253, message)
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("path", TAKES_NO_ARGUMENT)
def test_an_extra_argument_is_a_usage_error(path: str, tmp_path: Path) -> None:
    one_line_error(run(*path.split(), "extra", data=tmp_path / "d"), 253, "Got unexpected extra argument (extra)")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("group", GROUPS)
def test_an_unknown_subcommand_is_a_usage_error(group: str, tmp_path: Path) -> None:
    one_line_error(run(group, "frobnicate", data=tmp_path / "d"), 253, "No such command 'frobnicate'.")
    one_line_error(run("frobnicate", data=tmp_path / "d"), 253, "No such command 'frobnicate'.")
