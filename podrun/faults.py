"""Fault injection for crash-safety tests (SECURITY-TESTS cases 17–18).

``PODRUN_FAULT=NAME`` makes podrun SIGKILL itself when it reaches checkpoint NAME, which is
exactly what a ``kill -9`` at that step does.  The variable is read once; unset, a checkpoint
costs one comparison.  Checkpoint names are listed in CHECKPOINTS and documented in
docs/store.md; tests iterate over them.
"""

from __future__ import annotations

import os
import signal

CHECKPOINTS = (
    "pull:after-manifest",
    "store:blob-midway",
    "store:blob-before-rename",
    "store:layer-midway",
    "store:layer-before-rename",
    "pull:before-record",
    "pull:before-name",
)

_ACTIVE = os.environ.get("PODRUN_FAULT") or None


def checkpoint(name: str) -> None:
    """Die by SIGKILL here if the test asked for it."""
    if _ACTIVE == name:
        os.kill(os.getpid(), signal.SIGKILL)


def armed(name: str) -> bool:
    return _ACTIVE == name
