"""Fixtures shared by the unit tests."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def hold() -> Iterator[Callable[[Path], None]]:
    """Hold a pod directory's lock through an open file of the test's own, as its creator or
    supervisor does: the pod reads as being created or running."""
    held: list[int] = []

    def lock(pod: Path) -> None:
        held.append(os.open(pod, os.O_RDONLY | os.O_DIRECTORY))
        fcntl.flock(held[-1], fcntl.LOCK_EX)

    yield lock
    for fd in held:
        os.close(fd)
