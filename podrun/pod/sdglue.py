"""What the default flavor does for a service manager; every part is a no-op outside systemd.

- readiness: once every app has started, the supervisor (the unit's main process) sends
  ``READY=1`` (``--notify=ready``), or, with ``--notify=app``, forwards the app's own
  notifications received on a socket bound into the app (podrun.systemd.notify), watched in
  the supervisor's poll loop; sends never wait for the manager: while it is behind, its socket
  is watched in the same loop and the backlog goes out when there is room;
- socket activation: the fds systemd passed go to the pod's first app (podrun.systemd.activation);
- journal: app output goes to the journal tagged with app and pod (podrun.systemd.journal);
- ``--ready-fd N`` (s6's notification-fd, any service manager): a newline written to fd N and
  the fd closed at the same moment as READY=1 would be sent (every app started, or the app's
  own READY=1 with ``--notify=app``, for which the app's socket is made even without systemd).

Only ``os`` and ``select`` are imported up front; ``socket`` is loaded when notifying, and
python-systemd for the journal when used.
"""

from __future__ import annotations

import os
import select

from podrun.systemd import activation
from podrun.systemd.journal import to_journal

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from podrun.model.manifest import PodManifest
    from podrun.pod.logrelay import Relay
    from podrun.systemd.notify import Notifier

# Datagrams of the app read at the pod's end: the pod's processes are gone by then, but the
# socket file is open to other local users, who must not keep the supervisor reading forever.
DRAIN_MAX = 1024


class Systemd:
    def __init__(self, manifest: PodManifest, ready_fd: int = -1) -> None:
        self.listen = activation.take()
        self.notify = bool(os.environ.get("NOTIFY_SOCKET"))
        self.mode = manifest.notify
        self.ready_fd = ready_fd  # --ready-fd, close-on-exec (podrun.abi.take_ready_fd); -1 once used
        self.journal = to_journal()
        self.app_socket = ""  # host path of the socket bound into the apps (--notify=app)
        self.sock: socket.socket | None = None
        self.manager: Notifier | None = None  # our end of NOTIFY_SOCKET, made on the first send
        self.relay: Relay | None = None
        self.watching = -1  # the manager's socket while the loop waits for room in it
        if (self.notify or ready_fd >= 0) and self.mode == "app":
            from podrun.systemd import notify

            runtime = os.environ.get("PODRUN_RUNTIME_DIR", "/run/podrun")
            self.app_socket = os.path.join(runtime, "notify", f"{manifest.uuid}.sock")
            self.sock = notify.app_socket(self.app_socket)
            self.sock.setblocking(False)
        if self.notify and os.environ["NOTIFY_SOCKET"].startswith("@"):
            self._notifier().open()  # now, in the host's network namespace (podrun.systemd.notify)

    def _notifier(self) -> Notifier:
        if self.manager is None:
            from podrun.systemd.notify import Notifier

            self.manager = Notifier(os.environ.get("NOTIFY_SOCKET", ""))
        return self.manager

    def app_env(self) -> dict[str, str]:
        if not self.app_socket:
            return {}
        from podrun.systemd.notify import APP_SOCKET

        return {"NOTIFY_SOCKET": APP_SOCKET}

    def attach(self, relay: Relay) -> None:
        """Relay the app's notifications from *relay*'s poll loop (which also waits for room in
        the manager's socket when it is behind)."""
        self.relay = relay
        if self.sock is not None:
            relay.watch(self.sock.fileno(), select.POLLIN, lambda _events: self.forward())

    def apps_started(self) -> None:
        """Every app has started: READY=1 (and the ready fd's newline) unless the app says so itself."""
        if self.mode == "ready":
            self._ready_fd_done(b"\n")
            if self.notify:
                self._send("READY=1\nSTATUS=apps started")

    def _ready_fd_done(self, data: bytes) -> None:
        """Write *data* (b"\\n": ready; b"": never ready) to the ``--ready-fd`` descriptor and close
        it.  A reader that went away (EPIPE) or a full pipe (EAGAIN) is not the pod's failure."""
        fd, self.ready_fd = self.ready_fd, -1
        if fd < 0:
            return
        try:
            if data:
                os.write(fd, data)
        except OSError:
            pass
        finally:
            os.close(fd)

    def forward(self) -> None:
        """Pass on the app's pending notification."""
        self._receive(1)

    def _receive(self, count: int) -> None:
        """Pass on up to *count* of the app's queued notifications."""
        from podrun.systemd import notify

        assert self.sock is not None
        for _ in range(count):
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            message = notify.filter_app_message(data)
            if "READY=1" in message.split("\n"):
                self._ready_fd_done(b"\n")
            if message and self.notify:
                self._send(message)

    def _send(self, message: str) -> None:
        self._notifier().send(message)
        self._follow_manager()

    def _on_room(self, _events: int) -> None:
        assert self.manager is not None
        self.manager.flush()
        self._follow_manager()

    def _follow_manager(self) -> None:
        """Watch the manager's socket for room while something waits for it, and only then."""
        fd = self.manager.fileno() if self.manager is not None and self.manager.backlog else -1
        if fd == self.watching or self.relay is None:
            return
        if self.watching >= 0:
            self.relay.unwatch(self.watching)
        if fd >= 0:
            self.relay.watch(fd, select.POLLOUT, self._on_room)
        self.watching = fd

    def finish(self) -> None:
        """At the pod's end: pass on what the app sent last in one attempt that never waits for
        the manager (what it cannot take now is dropped), then close and remove the sockets."""
        try:
            if self.sock is not None:
                self._receive(DRAIN_MAX)
            if self.manager is not None:
                self.manager.flush()
        finally:
            self.close()

    def close(self) -> None:
        self._ready_fd_done(b"")  # the pod ends unready: the reader sees EOF and no newline
        if self.watching >= 0 and self.relay is not None:
            self.relay.unwatch(self.watching)
        self.watching = -1
        if self.manager is not None:
            self.manager.close()
            self.manager = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.app_socket:
            try:
                os.unlink(self.app_socket)
            except OSError:
                pass
