"""The last steps before an app's execve: rlimits, identity, capabilities, no_new_privs, seccomp.

``prepare`` runs in the pod's pid 1 before the app is forked (it reads the app's compiled
seccomp program, written by stage0 as ``apps/NAME/seccomp.bpf`` (podrun.pod.seccomp_cache), while
the host's files are still reachable); ``apply`` runs in the app's process after pivot_root.  Order (runc's):
rlimits; bounding set dropped and the user switched while capabilities are still held; the app's
capability sets installed; no_new_privs; the seccomp filter last, since it may forbid the calls
made before it.
"""

from __future__ import annotations

from podrun.isolation.kernel import KERNEL, Kernel
from podrun.lean import Record
from podrun.pod import caps_policy, seccomp_cache

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
    bpf = seccomp_cache.pod_program(app, pod_dir)
    return Confinement(frozenset(app.capabilities), caps_policy.default_rlimits(), app.no_new_privileges, bpf)


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
