"""The last steps before an app's execve: rlimits, identity, capabilities, no_new_privs, seccomp.

``prepare`` runs in the pod's supervisor before the app is forked (it reads the app's compiled
seccomp program, written by stage0 where the manifest's ``seccomp_bpf`` says
(podrun.pod.seccomp_cache), while the host's files are still reachable, and computes the default
rlimits); ``apply`` runs in the app's process after pivot_root.  Order (runc's):
rlimits; bounding set dropped and the user switched while capabilities are still held; the app's
capability sets installed; no_new_privs; the seccomp filter last, since it may forbid the calls
made before it.
"""

from __future__ import annotations

import os
import resource

from podrun.isolation.kernel import KERNEL, Kernel
from podrun.lean import Record
from podrun.model.caps import CAP_NAMES
from podrun.model.manifest import seccomp_bpf_path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from podrun.model.manifest import AppSpec

class Confinement(Record):
    caps: Final[frozenset[int]]
    rlimits: Final[dict[str, tuple[int, int]]]
    no_new_privs: Final[bool]
    seccomp_bpf: Final[bytes | None]

    __slots__ = ("caps", "rlimits", "no_new_privs", "seccomp_bpf")

    def __init__(
        self, caps: frozenset[int],
        rlimits: dict[str, tuple[int, int]],
        no_new_privs: bool,
        seccomp_bpf: bytes | None,
    ) -> None:
        self.caps = caps
        self.rlimits = rlimits
        self.no_new_privs = no_new_privs
        self.seccomp_bpf = seccomp_bpf


def prepare(app: AppSpec, pod_dir: str) -> Confinement:
    """Everything ``apply`` needs, computed before the fork (and before pivot_root)."""
    bpf = pod_program(app, pod_dir)
    return Confinement(frozenset(app.capabilities), default_rlimits(), app.no_new_privileges, bpf)


def read_program(path: str) -> bytes | None:
    """The program stored at *path*, or None if it is missing or not non-empty whole
    instructions (a file cut short by a crash is never loaded)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return data if len(data) > 0 and len(data) % 8 == 0 else None


def pod_program(app: AppSpec, pod_dir: str) -> bytes | None:
    """The program stage0 wrote for *app* into the pod dir (None: the manifest names none).
    OSError if the manifest names another file than stage0 writes, or the file is missing or
    cut short (a pod prepared before a power cut): stage1 compiles nothing."""
    if app.seccomp_bpf is None:
        return None
    path = os.path.join(pod_dir, app.seccomp_bpf)
    if app.seccomp_bpf != seccomp_bpf_path(app.name):
        raise OSError(f"the manifest names {app.seccomp_bpf!r} as the seccomp program, not "
                      f"{seccomp_bpf_path(app.name)!r}")
    stored = read_program(path)
    if stored is None:
        raise OSError(f"{path}: the seccomp program is missing or damaged (prepare the pod again)")
    return stored


# podman's define.RLimitDefaultValue: RLIMIT_NOFILE and RLIMIT_NPROC default to this (soft = hard)
# unless the user set them; when podman lacks CAP_SYS_RESOURCE (rootless, or a host that removed it)
# it clamps both to the current limits instead of failing.
RLIMIT_DEFAULT = 1048576

_CAP_SYS_RESOURCE = CAP_NAMES["CAP_SYS_RESOURCE"]


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return False


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except OSError:
        return RLIMIT_DEFAULT


def default_rlimits(can_raise: bool | None = None) -> dict[str, tuple[int, int]]:
    """Default rlimits for apps, following podman: NOFILE and NPROC at 1048576 (soft = hard).

    Without CAP_SYS_RESOURCE (``can_raise`` False; detected from our effective set when None) a hard
    limit cannot be raised, so each value is clamped to the current soft/hard limits, as podman does.
    RLIMIT_NOFILE is also capped at fs.nr_open, which even CAP_SYS_RESOURCE cannot exceed.
    Everything else is inherited unchanged.
    """
    if can_raise is None:
        can_raise = _has_cap_sys_resource()
    limits: dict[str, tuple[int, int]] = {}
    for name, number in (("RLIMIT_NOFILE", resource.RLIMIT_NOFILE), ("RLIMIT_NPROC", resource.RLIMIT_NPROC)):
        soft = hard = RLIMIT_DEFAULT
        if name == "RLIMIT_NOFILE":
            soft = hard = min(RLIMIT_DEFAULT, _nr_open())
        if not can_raise:
            cur_soft, cur_hard = resource.getrlimit(number)
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
            if cur_soft != resource.RLIM_INFINITY:
                soft = min(soft, cur_soft)
            soft = min(soft, hard)
        limits[name] = (soft, hard)
    return limits


def apply(conf: Confinement, uid: int, gid: int, groups: list[int], kernel: Kernel = KERNEL) -> None:
    """Confine the calling process (single-threaded, about to execve)."""
    kernel.set_rlimits(conf.rlimits)
    if conf.seccomp_bpf is not None and not conf.no_new_privs:
        # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the app is about to
        # lose: load it now (as runc does); the filter allows the identity calls that follow.
        kernel.load_seccomp(conf.seccomp_bpf)
    kernel.apply_app_identity(uid, gid, groups, conf.caps)
    if conf.no_new_privs:
        kernel.set_no_new_privs()
        if conf.seccomp_bpf is not None:
            kernel.load_seccomp(conf.seccomp_bpf)
