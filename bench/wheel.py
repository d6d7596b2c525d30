"""A wheel-installed podrun for the ``start`` scenario: what ``pip install .`` gives a pip user.

The tree is copied as git knows it (``packaging/copy-source.sh``: nothing an earlier build left),
then ``pip install COPY`` into a fresh virtualenv of the bench's own Python: pip builds the wheel,
installs it with the pinned dependencies and compiles its bytecode, as for any pip user.  It all
lives in the scenario's scratch dir and goes with it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class WheelInstallFailed(Exception):
    """The wheel could not be built or installed (the reason is the message)."""


def _step(argv: list[str], what: str) -> None:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # pip compiles at install, as for any user
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise WheelInstallFailed(f"{what} failed ({proc.returncode}): {tail}")


def install_wheel(base: Path) -> Path:
    """Install podrun from a wheel into ``BASE/wheel-venv``; return its ``podrun`` command."""
    src, venv = base / "wheel-src", base / "wheel-venv"
    _step(["bash", str(ROOT / "packaging" / "copy-source.sh"), str(src)], "copying the source")
    _step([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    _step([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(src)], "pip install")
    return venv / "bin" / "podrun"
