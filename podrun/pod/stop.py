"""``podrun stop`` and ``status --wait``: signals and waits, with liveness from the pod lock."""

from __future__ import annotations

import fcntl
import os
import signal
import time

from podrun import faults
from podrun.errors import ConflictError
from podrun.pod.layout import lock_held_fd
from podrun.pod.state import PodFileDamage, read_pid

POLL = 0.02
# After SIGKILL of the lock holder found in /proc/locks, how long its lock may take to go: a
# process that inherited the lock (a fly app's child) keeps the pod running past this.
HOLDER_KILL_WAIT = 10.0


def wait_unlocked(fd: int, timeout: float | None) -> bool:
    """Wait until nobody holds the lock of the pod directory *fd*.  Without a timeout this is a
    blocking flock (no polling loop); with one, a short poll.  Returns False on timeout."""
    if timeout is None:
        fcntl.flock(fd, fcntl.LOCK_SH)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    deadline = time.monotonic() + timeout
    while lock_held_fd(fd):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)
    return True


def _pod_pid(fd: int, uuid: str) -> int | None:
    """The pod's pid 1 (host PID) from its ``pid`` file, only if it still is that pod's process
    (a recycled PID in another cgroup is never signalled).  Raises PodFileDamage."""
    pid = read_pid(fd)
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            cgroup = f.read()
    except OSError:
        return None
    return pid if f"pod-{uuid}" in cgroup else None


def lock_holder(fd: int) -> int | None:
    """The process holding the exclusive flock of the pod directory *fd*: the stage1 supervisor,
    or for the ``fly`` flavor the app itself (both took it as stage0, then exec'd).  Found in
    /proc/locks and accepted only if it has this very directory open."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INO 0 EOF"; a waiter's line has "->" after N:
        fields = line.split()
        if fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"] and fields[5:6] == [key] and fields[4].isdigit():
            pid = int(fields[4])
            if _has_open(pid, st):
                return pid
    return None


def _has_open(pid: int, st: os.stat_result) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for n in fds:
        try:
            other = os.stat(f"/proc/{pid}/fd/{n}")
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            return True
    return False


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_pod(fd: int, uuid: str, force: bool, timeout: float) -> str:
    """SIGTERM (or SIGKILL with *force*) to the pod; SIGKILL after *timeout*; wait for its end.

    The signal goes to the pod's pid 1 named by its ``pid`` file; when that file is absent
    (``fly`` pods, a pod still starting) or damaged, to the holder of the pod's lock, which is
    the pod's supervisor (or a fly pod's app) by construction."""
    if not lock_held_fd(fd):
        return f"{uuid} was not running"
    try:
        pid = _pod_pid(fd, uuid)
    except PodFileDamage:
        pid = None
    holder = pid is None
    if holder:
        pid = lock_holder(fd)
    if pid is None:
        if wait_unlocked(fd, timeout):  # released meanwhile: the pod ended
            return f"{uuid} stopped"
        raise ConflictError(f"pod {uuid}: still running, and no process holding its lock was found")
    _kill(pid, signal.SIGKILL if force else signal.SIGTERM)
    faults.checkpoint("stop:after-signal")
    if not wait_unlocked(fd, timeout):
        _kill(pid, signal.SIGKILL)  # the PID namespace and every app in it die with pid 1
        if not wait_unlocked(fd, HOLDER_KILL_WAIT if holder else None):
            raise ConflictError(f"pod {uuid}: still locked after SIGKILL of its process {pid}",
                                hint="a process that inherited the pod's lock keeps it running")
    return f"{uuid} stopped"
