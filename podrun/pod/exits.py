"""How a supervising stage1 flavor records what its apps did (podrun-state(5)): exit codes in
the shell's convention, the per-app exit records, the pod's small text files, and reaping.

Shared by the ``default`` and ``oci`` flavors' supervisors; ``os`` and podrun.fsutil only.
"""

from __future__ import annotations

import os
import sys
import time

from podrun import fsutil


def exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def ended(pid: int) -> bool:
    """Whether child *pid* has exited (a zombie not yet reaped counts)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def reap() -> list[tuple[int, int]]:
    """Every child that has ended."""
    out: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status))


def write_text(path: str, text: str) -> None:
    # never through a link, never blocked by a FIFO put in its place (ENXIO then: warned about)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def record_bytes(code: int, status: int) -> bytes:
    return fsutil.numbers_json({
        "exit_code": code,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "finished": time.time(),
    })


def record(status_dir: str, name: str, record: bytes) -> None:
    # Atomic but not fsynced (podrun-state(5)): an exit record lost to a power cut reads as
    # "exited, code unknown", and two fsyncs would sit on every pod's exit path.
    fsutil.atomic_write(os.path.join(status_dir, name), record, 0o644, durable=False)


def warn(message: str) -> None:
    try:
        sys.stderr.write(f"podrun: warning: {message}\n")
        sys.stderr.flush()
    except OSError:
        pass


class Records:
    """The pod's exit records (``status/APP``) and the pod's exit code, as apps end.

    rkt's rule: the first app that fails decides the pod's exit code (and the supervisor stops
    the others); a one-app pod's code is its app's.  A record that cannot be written (a full
    disk) is kept and retried by :meth:`flush` when the pod ends."""

    __slots__ = ("codes", "first_failure", "pending", "status_dir")

    def __init__(self, pod_dir: str) -> None:
        from podrun.pod import layout

        self.status_dir = os.path.join(pod_dir, layout.STATUS_DIR)
        self.codes: dict[str, int] = {}
        self.first_failure: int | None = None
        self.pending: dict[str, bytes] = {}
        try:
            os.makedirs(self.status_dir, mode=0o755, exist_ok=True)
        except OSError:
            pass  # a full disk: each exit record says so when it cannot be written

    def ended(self, name: str, status: int) -> bool:
        """Record that app *name* ended with wait *status*; whether it is the pod's first failure."""
        code = exit_code(status)
        data = record_bytes(code, status)
        try:
            record(self.status_dir, name, data)
        except OSError as exc:  # a full disk: kept, written at the end if there is room by then
            self.pending[name] = data
            warn(f"app {name}: recording its exit status in {os.path.join(self.status_dir, name)}: {exc.strerror} "
                 "(retried when the pod ends)")
        self.codes[name] = code
        if code != 0 and self.first_failure is None:
            self.first_failure = code
            return True
        return False

    def flush(self) -> None:
        for name, data in list(self.pending.items()):
            try:
                record(self.status_dir, name, data)
            except OSError as exc:
                warn(f"app {name}: its exit status is not recorded ({exc.strerror}); the pod's exit code is "
                     "still the app's")
            del self.pending[name]

    def pod_exit_code(self, apps: list[str]) -> int:
        result = 0 if self.first_failure is None else self.first_failure
        if len(apps) == 1:
            result = self.codes.get(apps[0], result)
        return result


def write_ready(pod_dir: str) -> None:
    """The ``ready`` file: every app has started (``status --wait-ready``)."""
    from podrun.pod import layout

    path = os.path.join(pod_dir, layout.READY)
    try:
        write_text(path, f"{time.time():.6f}\n")
    except OSError as exc:
        warn(f"writing {path}: {exc.strerror} (status --wait-ready will not see the pod ready)")
