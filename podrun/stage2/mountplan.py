"""The mount plan of one app's root filesystem, as data (built without root, applied by
``podrun.stage2.app``).

Defaults follow runc/podman: /proc with masked and read-only paths, /sys read-only, /dev a
small noexec tmpfs with only the standard nodes, devpts, shm and mqueue; the pod's hostname, hosts
and resolv.conf files bound in; then volumes.  Every target is resolved *inside* the app's
root (openat2 RESOLVE_IN_ROOT) and mounted through the opened fd, so an image (or a racing
app, runc CVE-2021-30465) cannot redirect a mount outside its tree.
"""

from __future__ import annotations

from podrun.isolation.syscalls import (
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_REC,
    MS_STRICTATIME,
)
from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

MASKED_PATHS = (
    "/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
    "/sys/fs/selinux", "/sys/dev/block", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# (name, major, minor) of the character devices every app gets, as runc's defaults
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
DEV_SYMLINKS = (
    ("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx"),
)  # no "core" -> /proc/kcore: masked anyway, and podman dropped it too


class Mount(Record):
    """Mount *source* (a host path for binds) of *fstype* on *target* inside the root."""

    target: Final[str]
    fstype: Final[str | None]  # None = bind mount
    source: Final[str]
    flags: Final[int]
    data: Final[str | None]
    is_file: Final[bool]  # the target must be a file (file bind mounts)
    read_only: Final[bool]  # binds: remount read-only after binding

    __slots__ = ("target", "fstype", "source", "flags", "data", "is_file", "read_only")

    def __init__(
        self, target: str,
        fstype: str | None,
        source: str = "none",
        flags: int = 0,
        data: str | None = None,
        is_file: bool = False,
        read_only: bool = False,
    ) -> None:
        self.target = target
        self.fstype = fstype
        self.source = source
        self.flags = flags
        self.data = data
        self.is_file = is_file
        self.read_only = read_only


class Mask(Record):
    """Hide *target*: /dev/null over files, an empty read-only tmpfs over directories."""

    target: Final[str]

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        self.target = target


class ReadOnly(Record):
    """Bind *target* onto itself read-only (kept nosuid/nodev/noexec)."""

    target: Final[str]

    __slots__ = ("target",)

    def __init__(self, target: str) -> None:
        self.target = target


class DevNodes(Record):
    """Create the standard device nodes and symlinks in the app's /dev tmpfs."""

    __slots__ = ()

    def __init__(self) -> None:
        pass


Op = Mount | Mask | ReadOnly | DevNodes

PROC_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC


def app_plan(
    pod_files: dict[str, str],
    volumes: list[tuple[str, str, bool, bool]],
    sysfs_read_only: bool = True,
) -> list[Op]:
    """Ops for one app, in order.  *pod_files* maps in-pod paths (/etc/hosts…) to host files;
    *volumes* are (host source, in-pod target, read_only, source is a file)."""
    plan: list[Op] = [
        Mount("/proc", "proc", "proc", PROC_FLAGS),
        Mount("/dev", "tmpfs", "tmpfs", MS_NOSUID | MS_NOEXEC | MS_STRICTATIME, "mode=755,size=65536k"),
        DevNodes(),
        Mount("/dev/pts", "devpts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        Mount("/dev/shm", "tmpfs", "shm", PROC_FLAGS, "mode=1777,size=65536k"),
        Mount("/dev/mqueue", "mqueue", "mqueue", PROC_FLAGS),
        Mount("/sys", "sysfs", "sysfs", PROC_FLAGS | (MS_RDONLY if sysfs_read_only else 0)),
    ]
    plan += [Mask(p) for p in MASKED_PATHS]
    plan += [ReadOnly(p) for p in READONLY_PATHS]
    for target, source in sorted(pod_files.items()):
        plan.append(Mount(target, None, source, MS_BIND, is_file=True))
    for source, target, read_only, is_file in volumes:
        plan.append(Mount(target, None, source, MS_BIND | MS_REC, read_only=read_only, is_file=is_file))
    return plan
