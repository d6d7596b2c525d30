"""``podrun stop`` and ``status --wait``: signals and waits, with liveness from the pod lock."""

from __future__ import annotations

import fcntl
import os
import signal
import time

from podrun import faults
from podrun.errors import ConflictError
from podrun.pod.layout import lock_held_fd, read_manifest
from podrun.pod.state import PodFileDamage, read_pid

POLL = 0.02
# After SIGKILL of the lock holder found in /proc/locks, how long its lock may take to go: a
# process that inherited the lock (a fly app's child) keeps the pod running past this.
HOLDER_KILL_WAIT = 10.0
# Flavors whose supervisor takes ``podrun stop``'s SIGTERM itself and passes each app its stop
# signal (their pod's pid 1 is a plain init such as catatonit, which would end the pod at
# once: SIGKILL for the apps); SIGKILL after the timeout, or with --force, still goes to pid 1.
SUPERVISOR_TAKES_STOP = ("default", "oci")


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


def _in_pod(pid: int, uuid: str) -> bool:
    """Whether *pid* still is that pod's process (a recycled PID in another cgroup is never
    signalled)."""
    try:
        with open(f"/proc/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return f"pod-{uuid}" in f.read()
    except OSError:
        return False


def _flavor(fd: int) -> str | None:
    try:
        manifest, _ = read_manifest(fd)
    except (OSError, ValueError):
        return None  # damaged: wait for the pid file as for any pod, then signal the lock holder
    return manifest.stage1


def _target(fd: int, uuid: str, timeout: float, flavor: str | None) -> tuple[int | None, bool]:
    """What to signal: ``(pid 1, False)`` from the pod's ``pid`` file, or ``(lock holder, True)``
    when that file is damaged, names a process that is not the pod's, or is still absent after
    *timeout* (a starting pod writes it within moments; a fly pod never: no wait for one).
    ``(None, True)`` when the lock went meanwhile or no holder can be signalled."""
    deadline = time.monotonic() + (0 if flavor == "fly" else timeout)
    while True:
        try:
            pid = read_pid(fd)
        except PodFileDamage:
            break
        if pid is not None:
            if _in_pod(pid, uuid):
                return pid, False
            break  # its pid 1 is gone: the supervisor is ending, or stuck
        if not lock_held_fd(fd) or time.monotonic() >= deadline:
            break
        time.sleep(POLL)
    return (lock_holder(fd) if lock_held_fd(fd) else None), True


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
            if _has_open(pid, st) and not _is_podrun_command(pid):
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


def _is_podrun_command(pid: int) -> bool:
    """Whether *pid* runs podrun's own command line (``python -m podrun …``, the ``podrun``
    script): gc and rm hold the lock of a pod that is not running while they move it, and
    stage0 before it execs the stage1 flavor; none of them is ever signalled.  Unknown: yes."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return True
    return argv[1:3] == [b"-m", b"podrun"] or b"podrun" in (os.path.basename(a) for a in argv[:2])


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_pod(fd: int, uuid: str, force: bool, timeout: float) -> str:
    """SIGTERM (or SIGKILL with *force*) to the pod; SIGKILL after *timeout*; wait for its end.

    The signal goes to the pod's pid 1 named by its ``pid`` file (a starting pod's is waited
    for); when that file is damaged or never comes (``fly`` pods), to the holder of the pod's
    lock, which is the pod's supervisor (or a fly pod's app) by construction.  SIGTERM to a pod
    of a flavor in SUPERVISOR_TAKES_STOP goes to its supervisor (the lock holder), once its
    pid 1 is known (the supervisor is then past its setup and supervising)."""
    if not lock_held_fd(fd):
        return f"{uuid} was not running"
    flavor = _flavor(fd)
    pid, holder = _target(fd, uuid, timeout, flavor)
    if pid is None:
        if wait_unlocked(fd, timeout):  # released meanwhile: the pod ended
            return f"{uuid} stopped"
        raise ConflictError(f"pod {uuid}: still running, and no process of it to signal was found")
    supervisor = lock_holder(fd) if flavor in SUPERVISOR_TAKES_STOP and not force and not holder else None
    _kill(supervisor or pid, signal.SIGKILL if force else signal.SIGTERM)
    faults.checkpoint("stop:after-signal")
    if not wait_unlocked(fd, timeout):
        _kill(pid, signal.SIGKILL)  # the PID namespace and every app in it die with pid 1
        if not wait_unlocked(fd, HOLDER_KILL_WAIT if holder else None):
            raise ConflictError(f"pod {uuid}: still locked after SIGKILL of its process {pid}",
                                hint="a process that inherited the pod's lock keeps it running")
    return f"{uuid} stopped"
