"""Compiled seccomp programs: stage0 compiles each app's filter (or takes it from the cache
``DIR/cache/seccomp``) and writes it into the pod dir where the manifest's ``seccomp_bpf`` says
(``apps/NAME/seccomp.bpf``), so stage1 only reads bytes and hands them to the kernel.

Compiling costs ~60 ms (importing the policy, libseccomp's compiler); the cache key covers
everything a program is built from, including the policy module's and libseccomp's identity, so
an upgrade never reuses a stale program.  stage1 never compiles: a program missing from the pod
dir, or cut short, refuses the app (the pod must be prepared again; podrun.stage2.confine reads it).
"""

from __future__ import annotations

import os

from podrun import __version__, fsutil
from podrun.isolation.consts import LIBSECCOMP
from podrun.model.manifest import SECCOMP_BPF

__all__ = ["SECCOMP_BPF", "seccomp_program"]


def _filter_key(flag: str | None, cap_names: frozenset[str]) -> bytes:
    """Everything the program is built from, as one line of text (repr escapes newlines)."""
    policy = os.stat(os.path.join(os.path.dirname(__file__), "seccomp_policy.py"))
    try:
        lib = os.stat(f"/usr/lib/{os.uname().machine}-linux-gnu/{LIBSECCOMP}")
        lib_id: tuple[int, int] = (lib.st_size, lib.st_mtime_ns)
    except OSError:
        lib_id = (0, 0)
    return repr((__version__, os.uname().machine, flag, sorted(cap_names), policy.st_size,
                 policy.st_mtime_ns, lib_id)).encode()


def _cache_name(key: bytes) -> str:
    """The cache file of *key*.  The name only locates the entry (CRC-32 and length: zlib is
    loaded already, hashlib would load OpenSSL on every run, ~4 ms); the entry starts with its
    whole key and is used only if that matches, so two keys sharing a name cost a compile,
    never the wrong program."""
    import zlib

    return f"{zlib.crc32(key):08x}-{len(key)}.bpf"


def _read_cached(path: str, key: bytes) -> bytes | None:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    stored_key, newline, program = data.partition(b"\n")
    if stored_key != key or not newline or not program or len(program) % 8:
        return None
    return program


def seccomp_section(flag: str | None, cap_names: frozenset[str]) -> bytes:
    """The runtime-spec ``linux.seccomp`` section (JSON) of an app with the ``--seccomp`` text
    *flag* (None: the default filter) keeping *cap_names*: the same filter as
    :func:`seccomp_program`, for a flavor whose runtime compiles it (``oci``; stage0 only)."""
    import json

    from podrun.pod import seccomp_policy

    filt = seccomp_policy.parse_seccomp_flag(flag, cap_names) if flag else seccomp_policy.filter_for(cap_names)
    return json.dumps(seccomp_policy.runtime_spec_section(filt), separators=(",", ":")).encode()


def seccomp_program(flag: str | None, cap_names: frozenset[str], cache_dir: str | None) -> bytes:
    """The BPF program of an app with the ``--seccomp`` text *flag* (None: the default filter)
    keeping *cap_names*, from *cache_dir* when built before (stage0 only)."""
    key = _filter_key(flag, cap_names)
    path = os.path.join(cache_dir, _cache_name(key)) if cache_dir else None
    cached = _read_cached(path, key) if path is not None else None
    if cached is not None:
        return cached
    from podrun.pod import seccomp_policy

    filt = seccomp_policy.parse_seccomp_flag(flag, cap_names) if flag else seccomp_policy.filter_for(cap_names)
    from podrun.isolation import seccomp

    bpf = seccomp.compile_bpf(filt)
    if path is not None and cache_dir is not None:
        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)
            fsutil.atomic_write(path, key + b"\n" + bpf, 0o600)
        except OSError:
            pass  # a cache that cannot be written only costs time
    return bpf
