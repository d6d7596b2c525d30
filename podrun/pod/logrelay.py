"""App output: each app's stdout and stderr go through pipes to the pod's supervisor, which
copies them to the app's log file in the pod dir (kept until gc, read by ``podrun logs``) and
to its own stdout/stderr (the caller's terminal, or the unit's journal under systemd).

The same poll loop carries the other fds the supervisor watches (``watch``): its signalfd
(podrun.isolation.signals; SIGCHLD included, so it reaps and relays in one thread without
polling), an interactive app's pty (podrun.stage2.tty) and the socket of ``--notify=app``.
An interactive app with a terminal writes to its pty, not through here.

Log files are bounded (``--log-max-size``, podman's ``log_size_max`` keeping the newest data):
a log is filled up to the limit, then renamed to ``log.1`` (replacing the older one) and a new
``log`` started, so each app keeps between one and two limits of its newest output, in order
across ``log.1`` then ``log``.  The journal gets everything.

In a pod of several apps, the lines forwarded to the supervisor's stdout/stderr are tagged
``NAME | line`` (``LineTagger``: whole lines only, so two apps' lines never mix; a line longer
than CHUNK is cut, and a last line without a newline gets one at EOF).  That is what a
supervisor's logger (svlogd, s6-log, supervisord's files, syslog) stores, and the format of
``podrun logs`` for several apps.  The log files and the journal (tagged by field) stay untagged.
"""

from __future__ import annotations

import errno
import os
import select
import time

from podrun.pod.layout import LOG_OLDER

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from podrun.model.manifest import PodManifest
    from podrun.systemd.journal import Sender

CHUNK = 1 << 16
_READABLE = select.POLLIN | select.POLLHUP | select.POLLERR


class LogFile:
    """One app's log file, rotated once past *limit* bytes (-1: never).  A write that fails (a
    full disk) drops that output with one warning per failing streak: the app keeps running and
    its output still reaches the caller or the journal (issue 12)."""

    __slots__ = ("failing", "fd", "limit", "path", "size")

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.fd = self._open()
        self.size = os.fstat(self.fd).st_size
        self.failing = False

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        try:
            while data:
                room = len(data) if self.limit < 0 else self.limit - self.size
                if room <= 0:
                    self._rotate()
                    continue
                piece, data = data[:room], data[room:]
                view = memoryview(piece)
                while view:
                    written = os.write(self.fd, view)
                    self.size += written
                    view = view[written:]
        except OSError as exc:
            if not self.failing:
                self.failing = True
                app = os.path.basename(os.path.dirname(self.path))
                _warn(f"app {app}: writing its log {self.path}: {exc.strerror}; its output is not logged "
                      "while this lasts (it still reaches podrun's output)")
        else:
            self.failing = False

    def _rotate(self) -> None:
        try:
            os.rename(self.path, os.path.join(os.path.dirname(self.path), LOG_OLDER))  # replaces the older one
            fd = self._open()
        except OSError:  # the bound holds even so: this file starts over
            os.ftruncate(self.fd, 0)
        else:
            os.close(self.fd)
            self.fd = fd
        self.size = 0


class Lines:
    """The whole lines of a stream fed in pieces (without their newlines); a partial last line
    is kept until its newline (or ``flush``), but with *limit* >= 0 never more than *limit*
    bytes of it (cut there).  Used by LineTagger, and by the Relay for the journal."""

    __slots__ = ("limit", "pending")

    def __init__(self, limit: int = -1) -> None:
        self.limit = limit
        self.pending = b""

    def feed(self, data: bytes) -> list[bytes]:
        *lines, self.pending = (self.pending + data).split(b"\n")
        if 0 <= self.limit <= len(self.pending):
            lines.append(self.pending)
            self.pending = b""
        return lines

    def flush(self) -> list[bytes]:
        rest, self.pending = self.pending, b""
        return [rest] if rest else []


class LineTagger:
    """Whole lines of one app's output, each prefixed with ``NAME | ``; a partial last line is
    kept until its newline (or ``flush``), but never more than CHUNK bytes of it."""

    __slots__ = ("lines", "prefix")

    def __init__(self, name: str) -> None:
        self.prefix = name.encode() + b" | "
        self.lines = Lines(CHUNK)

    @property
    def pending(self) -> bytes:
        return self.lines.pending

    def feed(self, data: bytes) -> bytes:
        return self._tag(self.lines.feed(data))

    def flush(self) -> bytes:
        return self._tag(self.lines.flush())

    def _tag(self, lines: list[bytes]) -> bytes:
        return b"".join(self.prefix + line + b"\n" for line in lines)


def _warn(message: str) -> None:
    try:
        os.write(2, f"podrun: warning: {message}\n".encode())
    except OSError:
        pass


class Relay:
    """With *journal_uuid* (podrun's own output is the journal), each app's lines go to the
    journal tagged with the app and the pod (podrun.systemd.journal) instead of to our stdout;
    otherwise, with *tag_apps* (a pod of several apps), each line is tagged with its app.
    Each app's log file is rotated past *log_max_size* bytes (-1: never)."""

    @classmethod
    def for_pod(cls, manifest: PodManifest, journal: bool) -> Relay:
        """The supervisor's relay of *manifest*'s apps (*journal*: podrun's output is the journal)."""
        return cls(manifest.uuid if journal else None, manifest.log_max_size, tag_apps=len(manifest.apps) > 1)

    def __init__(self, journal_uuid: str | None = None, log_max_size: int = -1, tag_apps: bool = False) -> None:
        self.journal_uuid = journal_uuid
        self.log_max_size = log_max_size
        self.tag_apps = tag_apps and journal_uuid is None
        self.senders: dict[int, tuple[Sender, Lines]] = {}  # the journal's, with its lines (never cut)
        self.taggers: dict[int, LineTagger] = {}
        self.poll = select.poll()
        self.pipes: dict[int, tuple[LogFile, int]] = {}  # read end -> (the app's log, 1 or 2)
        self.forward_ok = {1: True, 2: True}
        self.watched: dict[int, Callable[[int], None]] = {}  # other fds of the loop (tty, notify)

    def watch(self, fd: int, events: int, callback: Callable[[int], None]) -> None:
        """Call *callback(revents)* whenever *fd* has one of *events* (re-watching changes them)."""
        self.poll.register(fd, events)
        self.watched[fd] = callback

    def unwatch(self, fd: int) -> None:
        if self.watched.pop(fd, None) is not None:
            self.poll.unregister(fd)

    def add_app(self, log_path: str) -> tuple[int, int]:
        """Pipes for one app; returns the write ends (its stdout and stderr)."""
        log = LogFile(log_path, self.log_max_size)
        ends = []
        for target in (1, 2):
            r, w = os.pipe2(os.O_CLOEXEC)
            self.poll.register(r, _READABLE)
            self.pipes[r] = (log, target)
            app = os.path.basename(os.path.dirname(log_path))
            if self.journal_uuid is not None:
                from podrun.systemd.journal import Sender

                self.senders[r] = Sender(self.journal_uuid, app, stderr=target == 2), Lines()
            elif self.tag_apps:
                self.taggers[r] = LineTagger(app)
            ends.append(w)
        return ends[0], ends[1]

    def wait(self, timeout: float | None) -> None:
        """Copy whatever is ready; return after one round of events (or *timeout*)."""
        try:
            events = self.poll.poll(None if timeout is None else timeout * 1000)
        except InterruptedError:
            return
        for fd, revents in events:
            if fd in self.pipes:
                self._copy(fd, *self.pipes[fd])
            elif fd in self.watched:
                self.watched[fd](revents)

    def _copy(self, fd: int, log: LogFile, target: int) -> None:
        try:
            data = os.read(fd, CHUNK)
        except OSError:
            data = b""
        if data:
            log.write(data)
            sender, tagger = self.senders.get(fd), self.taggers.get(fd)
        else:  # EOF: what a partial last line holds goes out, ended
            self.poll.unregister(fd)
            del self.pipes[fd]
            os.close(fd)
            sender, tagger = self.senders.pop(fd, None), self.taggers.pop(fd, None)
        if sender is not None:
            journal, lines = sender
            for line in lines.feed(data) if data else lines.flush():
                journal.emit(line)
        elif tagger is not None:
            self._forward(target, tagger.feed(data) if data else tagger.flush())
        else:
            self._forward(target, data)

    def _forward(self, target: int, data: bytes) -> None:
        if data and self.forward_ok[target]:
            try:
                _write_all(target, data)
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.EIO, errno.EBADF):
                    raise
                self.forward_ok[target] = False  # the caller went away: keep logging only

    def drain(self, seconds: float) -> None:
        """After the apps ended: copy what is left, until EOF or *seconds* (a daemonized
        grandchild may keep a pipe open; it dies with the pod anyway)."""
        deadline = time.monotonic() + seconds
        while self.pipes and time.monotonic() < deadline:
            self.wait(max(0.0, deadline - time.monotonic()))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
