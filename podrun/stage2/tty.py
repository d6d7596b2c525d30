"""Terminals and pod code (SECURITY-TESTS 25): the caller's terminal never reaches a pod.

A process that holds a terminal as its controlling tty can push bytes into that terminal's
input queue (``ioctl(TIOCSTI)``), which the administrator's shell then reads as typed commands
once the pod is gone (bubblewrap's CVE-2017-5226, flatpak's CVE-2019-10063 and CVE-2023-28100
with TIOCLINUX).  So, as podman (conmon) and bubblewrap (``--new-session``) do:

- every app and every ``enter`` command runs in a session of its own (``setsid``);
- when the caller's stdin is a terminal (``run --interactive``, ``enter``), the pod process gets
  a new pseudo-terminal allocated in the app's own devpts instance (its ``/dev/pts``), with the
  pty as controlling terminal and stdio; podrun copies bytes between the caller's terminal (in
  raw mode, window size followed, settings restored at the end) and the pty master, which
  never enters the pod;
- a caller's terminal on stdout or stderr alone is never handed over either: the pod writes
  into a pipe that podrun copies out (the log relay, or ``PipeOut`` for ``enter``);
- the seccomp filter refuses TIOCSTI and TIOCLINUX to every app (podrun.pod.seccomp_policy).

Only the C modules ``fcntl``, ``termios`` and ``struct`` are used; the pod supervisor imports this
module only for interactive pods.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import termios

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Protocol

    class Relay(Protocol):
        """The poll loop a flavor runs these relays in (the default flavor's is
        ``podrun.pod.logrelay.Relay``); stage2 imports no flavor."""

        def watch(self, fd: int, events: int, callback: Callable[[int], None]) -> None: ...

        def unwatch(self, fd: int) -> None: ...

        def wait(self, timeout: float | None) -> None: ...

TIOCSPTLCK = 0x40045431  # unlock the pty (asm-generic/ioctls.h: _IOW('T', 0x31, int))
TIOCGPTPEER = 0x5441  # open the slave from the master, no path lookup (Linux 4.13)
CHUNK = 1 << 16
MAX_PENDING = 1 << 20  # caller input buffered for an app that does not read it


def open_pty(ptmx: str) -> tuple[int, int]:
    """(master, slave) of a new pty of the devpts instance whose ``ptmx`` node is *ptmx*."""
    master = os.open(ptmx, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def make_controlling(slave: int) -> None:
    """In a session leader without a terminal: *slave* becomes the controlling tty and stdio."""
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)


def allocate_for_session(ptmx: str) -> int:
    """A new pty for the calling session leader (its controlling terminal and stdio); returns the
    master fd, which the caller hands to its parent and then closes."""
    master, slave = open_pty(ptmx)
    make_controlling(slave)
    return master


def copy_winsize(source: int, target: int) -> None:
    """Give the pty *target* the window size of the terminal *source* (the kernel then sends
    SIGWINCH to the pty's foreground process group)."""
    try:
        size = fcntl.ioctl(source, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(target, termios.TIOCSWINSZ, size)
    except OSError:
        pass  # not a terminal (any more): nothing to follow


class RawMode:
    """The caller's terminal in raw mode (cfmakeraw) until ``restore``: keys such as ^C and ^Z
    reach the pod's pty, whose line discipline turns them into the app's signals."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved = termios.tcgetattr(fd)
        mode = list(self.saved)
        mode[0] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
                     | termios.IGNCR | termios.ICRNL | termios.IXON)
        mode[1] &= ~termios.OPOST
        mode[2] = (mode[2] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
        mode[3] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        cc = list(mode[6])
        cc[termios.VMIN], cc[termios.VTIME] = 1, 0
        mode[6] = cc
        termios.tcsetattr(fd, termios.TCSANOW, mode)
        self.active = True

    def restore(self) -> None:
        if self.active:
            self.active = False
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            except (OSError, termios.error):
                pass  # the terminal went away


def _write_all(fd: int, data: bytes) -> bool:
    """Write everything to *fd* (blocking); False once the reader has gone."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.EIO, errno.EBADF):
            return False
        raise
    return True


class PtyRelay:
    """Copies the caller's terminal input to the pty master and the pty's output to the caller,
    inside the poll loop of a ``Relay``.  Input is buffered (up to MAX_PENDING) while the app
    does not read, so the loop never blocks on the pty: writes to the master are non-blocking."""

    def __init__(self, loop: Relay, master: int, caller_in: int = 0, caller_out: int = 1) -> None:
        self.loop = loop
        self.master = master
        self.caller_in = caller_in
        self.caller_out = caller_out
        self.pending = bytearray()
        self.input_open = True
        self.output_ok = True
        os.set_blocking(master, False)
        copy_winsize(caller_in, master)
        self.raw: RawMode | None = None
        try:
            self.raw = RawMode(caller_in)
        except termios.error:
            self.raw = None
        self._arm()

    def _arm(self) -> None:
        if self.input_open and len(self.pending) < MAX_PENDING:
            self.loop.watch(self.caller_in, select.POLLIN, self._on_input)
        else:
            self.loop.unwatch(self.caller_in)
        if self.master >= 0:
            self.loop.watch(self.master, select.POLLIN | (select.POLLOUT if self.pending else 0), self._on_master)

    def _on_input(self, _events: int) -> None:
        try:
            data = os.read(self.caller_in, CHUNK)
        except OSError:
            data = b""
        if data:
            self.pending += data
        else:
            self.input_open = False  # hangup of the caller's terminal
        self._arm()

    def _on_master(self, events: int) -> None:
        if events & select.POLLOUT and self.pending:
            try:
                del self.pending[:os.write(self.master, self.pending)]
            except BlockingIOError:
                pass
            except OSError:
                self.pending.clear()
        if events & (select.POLLIN | select.POLLHUP | select.POLLERR):
            self._read_master()
        if self.master >= 0:
            self._arm()

    def _read_master(self) -> None:
        try:
            data = os.read(self.master, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # EIO: no process holds the pty's slave side any more
        if not data:
            self.loop.unwatch(self.master)
            self.loop.unwatch(self.caller_in)
            os.close(self.master)
            self.master = -1
        elif self.output_ok:
            self.output_ok = _write_all(self.caller_out, data)

    def resize(self) -> None:
        """SIGWINCH: follow the caller's window size."""
        if self.master >= 0:
            copy_winsize(self.caller_in, self.master)

    def finish(self, seconds: float = 1.0) -> None:
        """After the pod process ended: pass on what it wrote last (until the pty is quiet for
        0.2 s, at most *seconds*: a leftover process may go on writing), restore the terminal."""
        import time

        deadline = time.monotonic() + seconds
        while self.master >= 0 and time.monotonic() < deadline:
            try:
                ready = select.select([self.master], [], [], 0.2)[0]
            except InterruptedError:
                continue
            if not ready:
                break
            self._read_master()
        if self.master >= 0:
            self.loop.unwatch(self.master)
            os.close(self.master)
            self.master = -1
        self.loop.unwatch(self.caller_in)
        if self.raw is not None:
            self.raw.restore()


class PipeOut:
    """For a pod process whose stdin is not a terminal: each of the caller's stdout/stderr that
    is a terminal is replaced by a pipe, copied to it in the loop.  ``child_fds`` maps the
    caller's fd to the pipe end the child must dup2 onto it."""

    def __init__(self, loop: Relay, fds: tuple[int, ...] = (1, 2)) -> None:
        self.loop = loop
        self.child_fds: dict[int, int] = {}
        self.targets: dict[int, int] = {}
        for fd in fds:
            if os.isatty(fd):
                r, w = os.pipe2(os.O_CLOEXEC)
                self.child_fds[fd] = w
                self.targets[r] = fd
                loop.watch(r, select.POLLIN, self._copier(r))

    def in_child(self) -> None:
        for fd, w in self.child_fds.items():
            os.dup2(w, fd)

    def in_parent(self) -> None:
        for w in self.child_fds.values():
            os.close(w)

    def _copier(self, r: int) -> Callable[[int], None]:
        return lambda _events: self._copy(r)

    def _copy(self, r: int) -> None:
        try:
            data = os.read(r, CHUNK)
        except OSError:
            data = b""
        if not data or not _write_all(self.targets[r], data):
            self.loop.unwatch(r)
            os.close(r)
            del self.targets[r]

    def finish(self, seconds: float = 0.5) -> None:
        """Copy what is left (until EOF, or *seconds* if a background process keeps a pipe)."""
        import time

        deadline = time.monotonic() + seconds
        while self.targets and time.monotonic() < deadline:
            self.loop.wait(max(0.0, deadline - time.monotonic()))
