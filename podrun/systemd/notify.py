"""sd_notify through python-systemd, and the relay of an app's notifications (``--notify=app``).

The pod's supervisor is the unit's main process (stage0 execs stage1), so with the default
``NotifyAccess=main`` only it may notify: it sends ``READY=1`` itself, and in ``app`` mode it
receives the app's datagrams on a socket of its own, bound into the app as ``NOTIFY_SOCKET``,
and forwards the fields systemd acts on.  ``MAINPID`` is never forwarded: the supervisor stays
the main PID, so ``KillMode=mixed`` and restarts keep working.
"""

from __future__ import annotations

import os

from podrun.lean import load_site_packages

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket

FORWARDED = ("READY=", "STATUS=", "WATCHDOG=", "ERRNO=", "BUSERROR=", "EXTEND_TIMEOUT_USEC=", "STOPPING=",
             "RELOADING=", "WATCHDOG_USEC=")
APP_SOCKET = "/run/podrun/notify"  # NOTIFY_SOCKET as the app sees it (a bind mount of ours)


def active() -> bool:
    return bool(os.environ.get("NOTIFY_SOCKET"))


def notify(message: str) -> None:
    """Send *message* (``KEY=VALUE`` lines) to the service manager, if there is one."""
    if not active():
        return
    load_site_packages()
    from systemd import daemon

    daemon.notify(message)


def filter_app_message(data: bytes) -> str:
    """The lines of an app's notification that are passed on (MAINPID and the like dropped)."""
    lines = data.decode("utf-8", errors="replace").splitlines()
    return "\n".join(line for line in lines if line.startswith(FORWARDED))


def app_socket(path: str) -> socket.socket:
    """A datagram socket bound at *path* (host side) for the app's notifications."""
    import socket as sock

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path), mode=0o711, exist_ok=True)
    s = sock.socket(sock.AF_UNIX, sock.SOCK_DGRAM | sock.SOCK_CLOEXEC)
    s.bind(path)
    os.chmod(path, 0o666)  # the app may run as any user
    return s
