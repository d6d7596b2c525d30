"""``podrun run --register``: on a systemd host, run the pod in its own transient scope
``podrun-UUID.scope`` (as ``systemd-run --scope`` does), so that a pod started from a shell is a
unit too (``systemctl status``, ``systemctl stop``, resource accounting), with ``Delegate=yes``
so that the pod's cgroups live below it.

python-systemd has no D-Bus client; the call goes through systemd's own ``busctl``
(``org.freedesktop.systemd1.Manager.StartTransientUnit``), made by the supervisor for itself
before it creates any cgroup.
"""

from __future__ import annotations

import os
import subprocess
import time

from podrun.errors import PodrunError


def available() -> bool:
    """Whether this host runs systemd as its service manager."""
    return os.path.isdir("/run/systemd/system")


def unit_name(uuid: str) -> str:
    return f"podrun-{uuid}.scope"


def register(uuid: str, pid: int, timeout: float = 10) -> str:
    """Start the scope with *pid* in it; returns once *pid* is in the scope's cgroup."""
    name = unit_name(uuid)
    argv = ["busctl", "call", "--quiet", "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager", "StartTransientUnit", "ssa(sv)a(sa(sv))", name, "fail", "3",
            "PIDs", "au", "1", str(pid), "Delegate", "b", "true", "Description", "s", f"podrun pod {uuid}", "0"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PodrunError(f"--register: calling systemd: {exc}") from None
    if res.returncode != 0:
        raise PodrunError(f"--register: systemd refused the scope {name}: {res.stderr.strip()}")
    deadline = time.monotonic() + timeout  # the job runs asynchronously
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/cgroup") as f:
            if f"/{name}" in f.read():
                return name
        time.sleep(0.01)
    raise PodrunError(f"--register: the pod did not move into {name} within {timeout:.0f} s")
