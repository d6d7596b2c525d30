"""The last steps before an app's execve: rlimits, identity, capabilities, no_new_privs, seccomp.

``prepare`` runs in the pod's pid 1 before the app is forked (it loads ctypes libraries and
compiles the seccomp filter while the host's files are still reachable); ``apply`` runs in the
app's process after pivot_root.  Order (runc's): rlimits; bounding set dropped and the user
switched while capabilities are still held; the app's capability sets installed; no_new_privs;
the seccomp filter last, since it may forbid the calls made before it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from podrun import __version__, fsutil
from podrun.isolation import caps, seccomp
from podrun.pod import caps_policy
from podrun.pod.manifest import AppSpec


@dataclass(frozen=True)
class Confinement:
    caps: frozenset[int]
    rlimits: dict[str, tuple[int, int]]
    no_new_privs: bool
    seccomp_bpf: bytes | None


def _filter_key(app: AppSpec, cap_set: frozenset[str]) -> str:
    """Cache key of an app's seccomp program: everything it is built from, including the
    policy module's identity, so an upgrade never reuses a stale program."""
    policy = Path(__file__).resolve().parents[1] / "pod" / "seccomp_policy.py"
    st = policy.stat()
    try:  # a libseccomp upgrade may compile differently
        lib = os.stat(f"/usr/lib/{os.uname().machine}-linux-gnu/{seccomp.LIBSECCOMP}")
        lib_id: tuple[int, int] = (lib.st_size, lib.st_mtime_ns)
    except OSError:
        lib_id = (0, 0)
    text = repr((__version__, os.uname().machine, app.seccomp, sorted(cap_set), st.st_size, st.st_mtime_ns, lib_id))
    return hashlib.sha256(text.encode()).hexdigest()


def seccomp_program(app: AppSpec, cap_set: frozenset[str], cache_dir: Path | None) -> bytes:
    """The app's BPF program, from *cache_dir* when built before.  Building it costs ~60 ms
    (importing the policy, libseccomp's compiler); a warm start only reads a small file."""
    path = cache_dir / f"{_filter_key(app, cap_set)}.bpf" if cache_dir else None
    if path is not None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            pass
    from podrun.isolation import seccomp
    from podrun.pod import seccomp_policy

    filt = (seccomp_policy.parse_seccomp_flag(app.seccomp, cap_set) if app.seccomp
            else seccomp_policy.filter_for(cap_set))
    bpf = seccomp.compile_bpf(filt)
    if path is not None:
        with contextlib.suppress(OSError):
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fsutil.atomic_write(path, bpf, 0o600)
    return bpf


def prepare(app: AppSpec, cache_dir: Path | None = None) -> Confinement:
    """Everything ``apply`` needs, computed before the fork (and before pivot_root)."""
    cap_set = frozenset(app.capabilities)
    bpf = seccomp_program(app, cap_set, cache_dir)
    return Confinement(caps_policy.cap_numbers(cap_set), caps_policy.default_rlimits(), app.no_new_privileges, bpf)


def apply(conf: Confinement, uid: int, gid: int, groups: list[int]) -> None:
    """Confine the calling process (single-threaded, about to execve)."""
    caps.set_rlimits(conf.rlimits)
    if conf.seccomp_bpf is not None and not conf.no_new_privs:
        # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the app is about to
        # lose: load it now (as runc does); the filter allows the identity calls that follow.
        seccomp.load_bpf(conf.seccomp_bpf)
    caps.apply_app_identity(uid, gid, groups, conf.caps)
    if conf.no_new_privs:
        caps.set_no_new_privs()
        if conf.seccomp_bpf is not None:
            seccomp.load_bpf(conf.seccomp_bpf)
