"""Host changes the runtime peers need on this kind of machine, each undone on exit.

- crun refuses a cgroup v1/v2 hybrid in which a controller is still attached to the cgroup2
  hierarchy ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"; here it
  is ``hugetlb``): :func:`hybrid_controllers_on_v1` mounts each such controller as a v1 hierarchy
  for the duration and gives it back to cgroup2 after.
- systemd-nspawn wants a tmpfs on ``/run/systemd/nspawn`` (it refuses to clean up its propagation
  dir on a disk file system) when PID 1 is not systemd: :func:`nspawn_runtime_tmpfs`.
- podman (cgroupfs manager) and systemd-nspawn (``--keep-unit``, no systemd) create cgroups of
  their own (``libpod_parent``; ``payload`` and ``supervisor`` beside the caller's cgroup):
  :func:`peer_cgroups_removed` removes the ones that did not exist before.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
UNIFIED = CGROUP_ROOT / "unified"
NSPAWN_RUNTIME = Path("/run/systemd/nspawn")
# Cgroup names the peers create outside any directory the bench names for them.
PEER_CGROUP_NAMES = ("libpod_parent", "payload", "supervisor")

Log = Callable[[str], None]


def _mount_points(fstypes: tuple[str, ...]) -> list[Path]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in fstypes:
            points.append(Path(left.split()[4]))
    return points


def is_mount_point(path: Path) -> bool:
    """Whether *path* is exactly a mount point (from /proc/self/mountinfo)."""
    target = str(path)
    return any(line.split()[4] == target for line in Path("/proc/self/mountinfo").read_text().splitlines())


def _num_cgroups(controller: str) -> int | None:
    """The num_cgroups column of /proc/cgroups for *controller* (live and dying cgroups of its hierarchy)."""
    for line in Path("/proc/cgroups").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == controller:
            return int(fields[2])
    return None


def _on_cgroup2(controller: str) -> bool:
    return controller in (UNIFIED / "cgroup.controllers").read_text().split()


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _release_v1(controller: str, point: Path, created: bool, log: Log) -> None:
    """Unmount the v1 hierarchy of *controller* so that the kernel hands the controller back to cgroup2.

    The kernel destroys a v1 hierarchy at unmount only if its root has no children at that moment,
    dying ones included (cgroup_kill_sb); a hierarchy unmounted too early lingers, detached, and
    keeps the controller away from cgroup2 until it is mounted and unmounted again.  So: wait until
    /proc/cgroups counts only the root, unmount, and retry (remount + unmount) if the controller
    does not come back.
    """
    start = time.monotonic()
    for attempt in range(3):
        if attempt:
            point.mkdir(exist_ok=True)
            subprocess.run(["mount", "-t", "cgroup", "-o", controller, "cgroup", str(point)], capture_output=True)
        _wait(lambda: _num_cgroups(controller) == 1, 20.0)
        subprocess.run(["umount", str(point)], capture_output=True)
        if created:
            with contextlib.suppress(OSError):
                point.rmdir()
        if _wait(lambda: _on_cgroup2(controller), 10.0):
            log(f"cgroup controller {controller} back on cgroup2 after {time.monotonic() - start:.1f} s"
                + (f" ({attempt + 1} attempts)" if attempt else ""))
            return
    log(f"WARNING: cgroup controller {controller} did not return to cgroup2 "
        f"(mount it at {point} and unmount it again once /proc/cgroups shows 1 cgroup for it)")


@contextlib.contextmanager
def hybrid_controllers_on_v1(log: Log) -> Iterator[list[str]]:
    """On a v1/v2 hybrid, mount every controller still on cgroup2 as v1 for the duration; yield their names.

    A controller can move only while cgroup2 does not use it (its root's ``cgroup.subtree_control``
    is empty); if it is in use, nothing is moved and crun will be reported as failing.
    """
    controllers_file = UNIFIED / "cgroup.controllers"
    if not controllers_file.exists():
        yield []
        return
    controllers = controllers_file.read_text().split()
    if not controllers or (UNIFIED / "cgroup.subtree_control").read_text().split():
        yield []
        return
    moved: list[tuple[str, Path, bool]] = []
    try:
        for controller in controllers:
            point = CGROUP_ROOT / controller
            created = not point.exists()
            point.mkdir(exist_ok=True)
            proc = subprocess.run(["mount", "-t", "cgroup", "-o", controller, "cgroup", str(point)],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                if created:
                    point.rmdir()
                log(f"could not mount cgroup controller {controller} as v1: {proc.stderr.strip()}")
                continue
            moved.append((controller, point, created))
        yield [c for c, _p, _c in moved]
    finally:
        for controller, point, created in reversed(moved):
            _release_v1(controller, point, created, log)


@contextlib.contextmanager
def nspawn_runtime_tmpfs() -> Iterator[bool]:
    """A tmpfs on /run/systemd/nspawn for the duration, unless one is there already; yield whether mounted."""
    if is_mount_point(NSPAWN_RUNTIME):
        yield False
        return
    made = [p for p in (NSPAWN_RUNTIME.parent, NSPAWN_RUNTIME) if not p.exists()]
    NSPAWN_RUNTIME.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755,size=16m,nosuid,nodev", "tmpfs", str(NSPAWN_RUNTIME)],
                   check=True, capture_output=True)
    try:
        yield True
    finally:
        if subprocess.run(["umount", str(NSPAWN_RUNTIME)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(NSPAWN_RUNTIME)], capture_output=True)
        for p in reversed(made):
            with contextlib.suppress(OSError):
                p.rmdir()


def _own_cgroup_dirs() -> list[Path]:
    """Every cgroup directory this process is in, on every mounted hierarchy (plus each hierarchy's root)."""
    rels = {"/"}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        rels.add(line.split(":", 2)[2])
    dirs = []
    for point in _mount_points(("cgroup", "cgroup2")):
        for rel in rels:
            d = point / rel.lstrip("/")
            if d.is_dir():
                dirs.append(d)
    return dirs


def peer_cgroup_dirs() -> set[Path]:
    """The peers' own cgroups (:data:`PEER_CGROUP_NAMES`) that exist right now."""
    return {d / name for d in _own_cgroup_dirs() for name in PEER_CGROUP_NAMES if (d / name).is_dir()}


def _rmdir_tree(top: Path) -> None:
    """Remove an (empty of processes) cgroup tree bottom-up; cgroup dirs go with rmdir, not unlink."""
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: w[0].count("/"), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(dirpath)


@contextlib.contextmanager
def peer_cgroups_removed(log: Log) -> Iterator[None]:
    """Remove, on exit, the peers' cgroups that did not exist on entry."""
    before = peer_cgroup_dirs()
    try:
        yield
    finally:
        for top in sorted(peer_cgroup_dirs() - before):
            _rmdir_tree(top)
            if top.exists():
                log(f"WARNING: could not remove cgroup {top} (processes still in it?)")
