"""What the default flavor does for a service manager; every part is a no-op outside systemd.

- readiness: pid 1 writes a byte on a pipe once every app has started; the supervisor (the
  unit's main process) then sends ``READY=1`` (``--notify=ready``), or, with ``--notify=app``,
  forwards the app's own notifications received on a socket bound into the app
  (podrun.systemd.notify);
- socket activation: the fds systemd passed go to the pod's first app (podrun.systemd.activation);
- journal: app output goes to the journal tagged with app and pod (podrun.systemd.journal).

Only ``os`` and ``select`` are imported up front; python-systemd is loaded when used.
"""

from __future__ import annotations

import os
import select

from podrun.systemd import activation
from podrun.systemd.journal import to_journal

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

    from podrun.pod.manifest import PodManifest


class Systemd:
    def __init__(self, manifest: PodManifest) -> None:
        self.listen = activation.take()
        self.notify = bool(os.environ.get("NOTIFY_SOCKET"))
        self.mode = manifest.notify
        self.journal = to_journal()
        self.ready_r, self.ready_w = os.pipe2(os.O_CLOEXEC) if self.notify else (-1, -1)
        self.app_socket = ""  # host path of the socket bound into the apps (--notify=app)
        self.sock: socket.socket | None = None
        if self.notify and self.mode == "app":
            from podrun.systemd import notify

            runtime = os.environ.get("PODRUN_RUNTIME_DIR", "/run/podrun")
            self.app_socket = os.path.join(runtime, "notify", f"{manifest.uuid}.sock")
            self.sock = notify.app_socket(self.app_socket)

    def app_env(self) -> dict[str, str]:
        if not self.app_socket:
            return {}
        from podrun.systemd.notify import APP_SOCKET

        return {"NOTIFY_SOCKET": APP_SOCKET}

    def in_init(self) -> None:
        """In pid 1 after the fork: keep only the write end of the readiness pipe."""
        if self.ready_r >= 0:
            os.close(self.ready_r)
            self.ready_r = -1
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def apps_started(self) -> None:
        """pid 1: every app has been started."""
        if self.ready_w >= 0:
            os.write(self.ready_w, b"1")
            os.close(self.ready_w)
            self.ready_w = -1

    def wait(self, init_pid: int) -> int:
        """Supervisor: wait for pid 1 to end (its wait status), notifying the manager meanwhile."""
        if self.ready_w >= 0:
            os.close(self.ready_w)
            self.ready_w = -1
        if not self.notify:
            return os.waitpid(init_pid, 0)[1]
        from podrun.systemd import notify

        pidfd = os.pidfd_open(init_pid)
        watched = [pidfd, self.ready_r] + ([self.sock.fileno()] if self.sock is not None else [])
        try:
            while True:
                ready = select.select(watched, [], [])[0]
                if self.ready_r in ready:
                    started = os.read(self.ready_r, 1) == b"1"
                    watched.remove(self.ready_r)
                    os.close(self.ready_r)
                    self.ready_r = -1
                    if started and self.mode == "ready":
                        notify.notify("READY=1\nSTATUS=apps started")
                if self.sock is not None and (self.sock.fileno() in ready or pidfd in ready):
                    self._forward(pidfd in ready)
                if pidfd in ready:
                    break
        finally:
            os.close(pidfd)
        return os.waitpid(init_pid, 0)[1]

    def _forward(self, drain: bool) -> None:
        """Pass on the app's pending notifications (all of them once pid 1 has ended)."""
        from podrun.systemd import notify

        assert self.sock is not None
        self.sock.setblocking(False)
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return
            message = notify.filter_app_message(data)
            if message:
                notify.notify(message)
            if not drain:
                return

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.app_socket:
            try:
                os.unlink(self.app_socket)
            except FileNotFoundError:
                pass
