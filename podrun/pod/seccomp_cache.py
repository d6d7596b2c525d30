"""Compiled seccomp programs: stage0 compiles each app's filter (or takes it from the cache
``DIR/cache/seccomp``) and writes it into the pod dir as ``apps/NAME/seccomp.bpf``, so stage1
only reads bytes and hands them to the kernel.

Compiling costs ~60 ms (importing the policy, libseccomp's compiler); the cache key covers
everything a program is built from, including the policy module's and libseccomp's identity, so
an upgrade never reuses a stale program.
"""

from __future__ import annotations

import os

from podrun import __version__, fsutil
from podrun.isolation.consts import LIBSECCOMP
from podrun.lean import sha256
from podrun.model.manifest import AppSpec
from podrun.pod.layout import app_seccomp_path


def _filter_key(app: AppSpec, cap_set: frozenset[str]) -> str:
    policy = os.stat(os.path.join(os.path.dirname(__file__), "seccomp_policy.py"))
    try:
        lib = os.stat(f"/usr/lib/{os.uname().machine}-linux-gnu/{LIBSECCOMP}")
        lib_id: tuple[int, int] = (lib.st_size, lib.st_mtime_ns)
    except OSError:
        lib_id = (0, 0)
    text = repr((__version__, os.uname().machine, app.seccomp, sorted(cap_set), policy.st_size,
                 policy.st_mtime_ns, lib_id))
    return sha256(text.encode()).hexdigest()


def seccomp_program(app: AppSpec, cache_dir: str | None) -> bytes:
    """The app's BPF program, from *cache_dir* when built before."""
    cap_set = frozenset(app.capabilities)
    path = os.path.join(cache_dir, f"{_filter_key(app, cap_set)}.bpf") if cache_dir else None
    cached = read_program(path) if path is not None else None
    if cached is not None:
        return cached
    from podrun.pod import seccomp_policy

    filt = (seccomp_policy.parse_seccomp_flag(app.seccomp, cap_set) if app.seccomp
            else seccomp_policy.filter_for(cap_set))
    from podrun.isolation import seccomp

    bpf = seccomp.compile_bpf(filt)
    if path is not None and cache_dir is not None:
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            fsutil.atomic_write(path, bpf, 0o600)
        except OSError:
            pass  # a cache that cannot be written only costs time
    return bpf


def read_program(path: str) -> bytes | None:
    """The program stored at *path*, or None if it is missing or not non-empty whole
    instructions (a file cut short by a crash is rebuilt, never loaded)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    return data if len(data) > 0 and len(data) % 8 == 0 else None


def pod_program(app: AppSpec, pod_dir: str) -> bytes:
    """The program stage0 wrote for *app* into the pod dir; rebuilt (through the cache) if it is
    missing or was cut short, e.g. a pod prepared before a power cut."""
    stored = read_program(os.path.join(pod_dir, app_seccomp_path(app.name)))
    if stored is not None:
        return stored
    data_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(pod_dir))))
    return seccomp_program(app, os.path.join(data_dir, "cache", "seccomp"))
