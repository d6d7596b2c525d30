"""``podrun stop`` and ``status --wait``: signals and waits, with liveness from the pod lock."""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

from podrun import faults
from podrun.pod.state import lock_held

POLL = 0.02


def wait_unlocked(path: Path, timeout: float | None) -> bool:
    """Wait until nobody holds the pod's lock.  Without a timeout this is a blocking flock (no
    polling loop); with one, a short poll.  Returns False on timeout."""
    if timeout is None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)
        return True
    deadline = time.monotonic() + timeout
    while lock_held(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _pod_pid(path: Path, uuid: str) -> int | None:
    """The pod's pid 1 (host PID), only if it still is that pod's process (a recycled PID in
    another cgroup is never signalled)."""
    try:
        pid = int((path / "pid").read_text().strip())
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except (OSError, ValueError):
        return None
    return pid if f"pod-{uuid}" in cgroup else None


def stop_pod(path: Path, uuid: str, force: bool, timeout: float) -> str:
    """SIGTERM (or SIGKILL with *force*) to the pod; SIGKILL after *timeout*; wait for its end."""
    if not lock_held(path):
        return f"{uuid} was not running"
    pid = _pod_pid(path, uuid)
    if pid is None:
        wait_unlocked(path, 5.0)
        return f"{uuid} stopped"
    try:
        os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
    except ProcessLookupError:
        pass
    faults.checkpoint("stop:after-signal")
    if not wait_unlocked(path, timeout):
        try:
            os.kill(pid, signal.SIGKILL)  # the PID namespace and every app in it die with pid 1
        except ProcessLookupError:
            pass
        wait_unlocked(path, None)
    return f"{uuid} stopped"
