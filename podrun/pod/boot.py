"""Reboot detection (SECURITY-TESTS case 20).

``/run/podrun/boot_id`` (tmpfs, gone at reboot) records the boot the pods on disk belong to.
The first lifecycle command of a new boot (``list``, ``status``, ``gc``, and ``run``/``prepare``
before they create a pod) reconciles: locks died with the old boot, so no pod reads running
anyway; exited pods are marked for gc and their leftovers collected then.
Tests inject a boot with ``PODRUN_BOOT_ID`` and move the runtime dir with ``PODRUN_RUNTIME_DIR``.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

    from podrun.pod.layout import PodDirs


def current_boot_id() -> str:
    injected = os.environ.get("PODRUN_BOOT_ID")
    if injected:
        return injected
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def boot_recorded() -> bool:
    """Whether the runtime dir already records this boot: two small reads, no import.  ``run``
    and ``prepare`` reconcile first when it does not, so the first pods of a boot (or of a new
    runtime dir) are never taken later for pods of the boot before."""
    try:
        with open(os.path.join(os.environ.get("PODRUN_RUNTIME_DIR", "/run/podrun"), "boot_id")) as f:
            return f.read().strip() == current_boot_id()
    except OSError:
        return False


def runtime_dir() -> Path:
    from pathlib import Path

    return Path(os.environ.get("PODRUN_RUNTIME_DIR", "/run/podrun"))


def reconcile(dirs: PodDirs) -> list[str]:
    """Record this boot; after a change of boot, mark every pod left in run/ for collection."""
    marker = runtime_dir() / "boot_id"
    boot = current_boot_id()
    try:
        if marker.read_text().strip() == boot:
            return []
    except OSError:
        pass
    from podrun import fsutil
    from podrun.pod.gc import gc

    done: list[str] = []
    if dirs.root.is_dir():
        done = [f"after reboot: {line}" for line in gc(dirs, grace_period=float("inf"),
                                                        expire_prepared=float("inf"), mark_only=True)]
    marker.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
    fsutil.atomic_write(marker, f"{boot}\n".encode(), 0o644)
    return done
