"""Shared fixtures: a throwaway data dir and a runner for the real ``podrun`` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.fixtures.registry import auth_registry, registry  # noqa: F401  (shared fixtures)

ROOT = Path(__file__).resolve().parents[1]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs as root)")


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


PodrunRunner = Callable[..., Result]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    return d


@pytest.fixture
def podrun(data_dir: Path) -> PodrunRunner:
    """Run ``python -m podrun --dir DATA ARGS…`` and return its exit code and output."""

    def run(*args: str, check: bool = True, env: dict[str, str] | None = None,
            timeout: float = 300) -> Result:
        full_env = dict(os.environ, **(env or {}))
        proc = subprocess.run(
            [sys.executable, "-m", "podrun", "--dir", str(data_dir), *args],
            capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT,
        )
        res = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"podrun {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return res

    return run


def _leftover_mounts() -> list[str]:
    try:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if "pytest-of-" in line.split()[4] or "podrun" in line.split()[4]]
    except OSError:
        return []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Report (and fail the run on) mounts that tests left behind: every test must clean up."""
    left = _leftover_mounts()
    if left:
        sys.stderr.write("\ntests left these mounts behind:\n  " + "\n  ".join(left) + "\n")
        session.exitstatus = 1
