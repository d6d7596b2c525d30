"""sd_notify, and the relay of an app's notifications (``--notify=app``).

The pod's supervisor is the unit's main process (stage0 execs stage1), so with the default
``NotifyAccess=main`` only it may notify: it sends ``READY=1`` itself, and in ``app`` mode it
receives the app's datagrams on a socket of its own, bound into the app as ``NOTIFY_SOCKET``,
and forwards the fields systemd acts on.  ``MAINPID`` is never forwarded: the supervisor stays
the main PID, so ``KillMode=mixed`` and restarts keep working.

Sends never wait (issue 18): the manager's socket is shared by every service, and a full queue
there must not stall the supervisor, whose one poll loop also reaps, relays output and forwards
signals.  What the manager cannot take now waits in a ``Backlog``, coalesced so that an app
flooding its socket costs bounded memory, and goes out when the manager's socket has room (the
supervisor's poll loop watches it: podrun.pod.sdglue).  The pod's end makes one more attempt
and never waits: what the manager still cannot take then is dropped.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

FORWARDED = ("READY=", "STATUS=", "WATCHDOG=", "ERRNO=", "BUSERROR=", "EXTEND_TIMEOUT_USEC=", "STOPPING=",
             "RELOADING=", "WATCHDOG_USEC=")
APP_SOCKET = "/run/podrun/notify"  # NOTIFY_SOCKET as the app sees it (a bind mount of ours)
DATAGRAM_MAX = 4096  # systemd reads a notification into PIPE_BUF bytes (NOTIFY_BUFFER_MAX) and drops a longer one
# Lines the backlog keeps once each beside their field's latest value: a later STATUS= replaces the
# previous one (it is a state, not a log), but READY=1 is never lost to a later READY=/WATCHDOG= line.
FLAGS = frozenset({"READY=1", "STOPPING=1", "RELOADING=1", "WATCHDOG=1", "WATCHDOG=trigger"})


def active() -> bool:
    return bool(os.environ.get("NOTIFY_SOCKET"))


def filter_app_message(data: bytes) -> str:
    """The lines of an app's notification that are passed on (MAINPID and the like dropped)."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(line for line in lines if line.startswith(FORWARDED))


class Backlog:
    """Notification lines the manager has not taken yet, coalesced: one per flag line of FLAGS
    and one (the latest) per other field, in the order they last came; lines of fields not in
    FORWARDED are ignored.  So it never holds more than len(FLAGS) + len(FORWARDED) lines,
    however many datagrams an app sends."""

    __slots__ = ("lines",)

    def __init__(self) -> None:
        self.lines: dict[str, str] = {}  # the line for a flag, else its field name -> line

    def __bool__(self) -> bool:
        return bool(self.lines)

    def add(self, message: str) -> None:
        for line in message.split("\n"):
            if not line.startswith(FORWARDED):
                continue
            key = line if line in FLAGS else line.partition("=")[0]
            self.lines.pop(key, None)  # re-inserted last: the order is that of the latest lines
            self.lines[key] = line

    def next_datagram(self) -> tuple[bytes, int]:
        """The oldest lines that fit together in one datagram (at least one), and their count."""
        parts: list[bytes] = []
        size = -1  # no newline before the first line
        for line in self.lines.values():
            data = line.encode("utf-8", errors="replace")
            if parts and size + 1 + len(data) > DATAGRAM_MAX:
                break
            parts.append(data)
            size += 1 + len(data)
        return b"\n".join(parts), len(parts)

    def drop(self, count: int) -> None:
        """Forget the *count* oldest lines (sent, or refused by the manager)."""
        for key in list(self.lines)[:count]:
            del self.lines[key]


class Notifier:
    """The supervisor's end of ``$NOTIFY_SOCKET``: a non-blocking datagram socket connected to
    *address* (a path, or ``@name`` for an abstract socket, as sd_notify(3) accepts), made on
    the first send unless opened before.  Connected, so that poll(2) reports room in the
    manager's queue (for an unconnected datagram socket it only looks at our own buffer)."""

    __slots__ = ("address", "backlog", "connected", "sock", "warned")

    def __init__(self, address: str) -> None:
        self.address = address
        self.backlog = Backlog()
        self.sock: socket.socket | None = None
        self.connected = False
        self.warned = False

    def fileno(self) -> int:
        return self.sock.fileno() if self.sock is not None else -1

    def send(self, message: str) -> bool:
        """Pass *message* (``KEY=VALUE`` lines) on, after what waits; whether nothing waits now."""
        self.backlog.add(message)
        return self.flush()

    def flush(self) -> bool:
        """Send what waits, as far as the manager takes it without waiting; whether all went."""
        while self.backlog:
            data, count = self.backlog.next_datagram()
            try:
                self._send(data)
            except BlockingIOError:  # the manager's queue is full: later, when poll says there is room
                return False
            except (OSError, ValueError) as exc:  # no manager there, or a datagram it refuses: dropped
                self._warn(exc)
            self.backlog.drop(count)
        return True

    def _send(self, data: bytes) -> None:
        if self.sock is None:
            self.open()
        assert self.sock is not None
        if not self.connected:
            self.sock.connect(self._address())
            self.connected = True
        try:
            self.sock.send(data)
        except (ConnectionRefusedError, ConnectionResetError):  # a manager restarted: its new socket
            self.sock.connect(self._address())
            self.sock.send(data)

    def open(self) -> None:
        """Make the socket now: an abstract address is looked up in the network namespace the
        socket was made in, so for ``@name`` the supervisor opens it before it enters the pod's."""
        import socket as sock

        if self.sock is None:
            self.sock = sock.socket(sock.AF_UNIX, sock.SOCK_DGRAM | sock.SOCK_CLOEXEC | sock.SOCK_NONBLOCK)

    def _address(self) -> str:
        if self.address.startswith("@"):
            return "\0" + self.address[1:]
        if self.address.startswith("/"):
            return self.address
        raise OSError(errno.EAFNOSUPPORT, "not a socket path or @abstract name")

    def _warn(self, exc: Exception) -> None:
        if self.warned:
            return
        self.warned = True
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        try:
            os.write(2, f"podrun: warning: notifying the service manager at NOTIFY_SOCKET={self.address}: "
                        f"{reason} (notifications dropped)\n".encode(errors="replace"))
        except OSError:
            pass

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.connected = False


def app_socket(path: str) -> socket.socket:
    """A datagram socket bound at *path* (host side) for the app's notifications."""
    import socket as sock

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    # The directory is root's alone: the apps reach their socket through its bind mount (their
    # own path, /run/podrun/notify), never through this one, so no host user can send a pod's
    # supervisor READY=1 or STATUS= in its name.
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)  # one an older podrun made 0711
    s = sock.socket(sock.AF_UNIX, sock.SOCK_DGRAM | sock.SOCK_CLOEXEC)
    s.bind(path)
    os.chmod(path, 0o666)  # the app may run as any user
    return s
