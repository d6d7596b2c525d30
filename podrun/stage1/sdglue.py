"""What the default flavor does for a service manager; every part is a no-op outside systemd.

- readiness: once every app has started, the supervisor (the unit's main process) sends
  ``READY=1`` (``--notify=ready``), or, with ``--notify=app``, forwards the app's own
  notifications received on a socket bound into the app (podrun.systemd.notify), watched in
  the supervisor's poll loop;
- socket activation: the fds systemd passed go to the pod's first app (podrun.systemd.activation);
- journal: app output goes to the journal tagged with app and pod (podrun.systemd.journal).

Only ``os`` is imported up front; python-systemd is loaded when used.
"""

from __future__ import annotations

import os

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
        self.app_socket = ""  # host path of the socket bound into the apps (--notify=app)
        self.sock: socket.socket | None = None
        if self.notify and self.mode == "app":
            from podrun.systemd import notify

            runtime = os.environ.get("PODRUN_RUNTIME_DIR", "/run/podrun")
            self.app_socket = os.path.join(runtime, "notify", f"{manifest.uuid}.sock")
            self.sock = notify.app_socket(self.app_socket)
            self.sock.setblocking(False)

    def app_env(self) -> dict[str, str]:
        if not self.app_socket:
            return {}
        from podrun.systemd.notify import APP_SOCKET

        return {"NOTIFY_SOCKET": APP_SOCKET}

    def apps_started(self) -> None:
        """Every app has started: READY=1 unless the app says so itself."""
        if self.notify and self.mode == "ready":
            from podrun.systemd import notify

            notify.notify("READY=1\nSTATUS=apps started")

    def notify_fd(self) -> int:
        """The fd to watch for the app's notifications (-1 without ``--notify=app``)."""
        return self.sock.fileno() if self.sock is not None else -1

    def forward(self, drain: bool = False) -> None:
        """Pass on the app's pending notification (all of them with *drain*, at the end)."""
        from podrun.systemd import notify

        assert self.sock is not None
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            message = notify.filter_app_message(data)
            if message:
                notify.notify(message)
            if not drain:
                return

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.app_socket:
            try:
                os.unlink(self.app_socket)
            except FileNotFoundError:
                pass
