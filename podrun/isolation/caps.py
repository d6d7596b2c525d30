"""Capabilities, no_new_privs, user switching and rlimits: what stage2 applies to an app before execve.

Kernel layer: no policy, no podrun imports.  Every failure raises ``OSError`` carrying errno and the
call it came from.  capset(2), prctl(2) and the capability sets are *per thread*: call these in a
single-threaded process (the forked child that is about to exec the app), never in a threaded one.

Which capabilities an app should end up with is decided in ``podrun.pod.caps_policy``; here we only
know how to make the kernel hold a given set across the user change and the execve.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource
from functools import cache

# Capability numbers: podrun.isolation.consts (no ctypes there, for stage0's flag parsing).

# prctl(2) options (linux/prctl.h)
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_RLIM_INFINITY = ctypes.c_ulong(-1).value


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _Rlimit(ctypes.Structure):
    _fields_ = [("rlim_cur", ctypes.c_ulong), ("rlim_max", ctypes.c_ulong)]


@cache
def _libc() -> ctypes.CDLL:
    # Loaded on first use: stage1 imports this module on every start, most calls never need it.
    # CDLL(None) is the already-loaded C library (glibc or musl) without a find_library() subprocess.
    lib = ctypes.CDLL(None, use_errno=True)
    lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    lib.prctl.restype = ctypes.c_int
    lib.capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
    lib.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
    lib.setrlimit.argtypes = [ctypes.c_int, ctypes.POINTER(_Rlimit)]
    return lib


def _raise_errno(call: str, detail: str | None = None) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{call}: {os.strerror(err)}", detail)


def _prctl(option: int, arg2: int = 0, arg3: int = 0, call: str = "prctl") -> int:
    ret: int = _libc().prctl(option, arg2, arg3, 0, 0)
    if ret < 0:
        _raise_errno(call)
    return ret


def cap_mask(caps: frozenset[int]) -> int:
    """The capability set as the bitmask /proc/PID/status shows (CapEff etc.)."""
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


def _caps_of(mask: int) -> frozenset[int]:
    return frozenset(bit for bit in range(64) if mask >> bit & 1)


@cache
def last_cap() -> int:
    """The highest capability number the running kernel knows (/proc/sys/kernel/cap_last_cap)."""
    with open("/proc/sys/kernel/cap_last_cap") as f:
        return int(f.read())


def set_no_new_privs() -> None:
    """Set no_new_privs: execve can no longer grant privileges (setuid bits, file capabilities)."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1, call="prctl(PR_SET_NO_NEW_PRIVS)")


def read_bounding() -> frozenset[int]:
    """The calling thread's capability bounding set."""
    return frozenset(cap for cap in range(last_cap() + 1)
                     if _prctl(PR_CAPBSET_READ, cap, call=f"prctl(PR_CAPBSET_READ, {cap})") == 1)


def drop_bounding(keep: frozenset[int]) -> None:
    """Drop every capability not in ``keep`` from the bounding set (needs CAP_SETPCAP in effective)."""
    for cap in range(last_cap() + 1):
        if cap not in keep:
            _prctl(PR_CAPBSET_DROP, cap, call=f"prctl(PR_CAPBSET_DROP, {cap})")


def clear_ambient() -> None:
    """Empty the ambient set."""
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, call="prctl(PR_CAP_AMBIENT_CLEAR_ALL)")


def raise_ambient(caps: frozenset[int]) -> None:
    """Add ``caps`` to the ambient set; each must already be in permitted *and* inheritable."""
    for cap in sorted(caps):
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, call=f"prctl(PR_CAP_AMBIENT_RAISE, {cap})")


def get_caps() -> tuple[frozenset[int], frozenset[int], frozenset[int]]:
    """The calling thread's (effective, permitted, inheritable) sets, via capget v3."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc().capget(ctypes.byref(header), data) < 0:
        _raise_errno("capget")
    eff = data[0].effective | data[1].effective << 32
    prm = data[0].permitted | data[1].permitted << 32
    inh = data[0].inheritable | data[1].inheritable << 32
    return _caps_of(eff), _caps_of(prm), _caps_of(inh)


def set_caps(effective: frozenset[int], permitted: frozenset[int], inheritable: frozenset[int]) -> None:
    """Replace the calling thread's effective, permitted and inheritable sets (capset v3: two u32 words).

    The kernel only lets permitted shrink, effective be a subset of permitted and inheritable grow
    within bounding & permitted; a set outside those rules fails with EPERM.
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for word in range(2):
        shift = 32 * word
        data[word].effective = cap_mask(effective) >> shift & 0xFFFFFFFF
        data[word].permitted = cap_mask(permitted) >> shift & 0xFFFFFFFF
        data[word].inheritable = cap_mask(inheritable) >> shift & 0xFFFFFFFF
    if _libc().capset(ctypes.byref(header), data) < 0:
        _raise_errno("capset", f"effective={cap_mask(effective):#x} permitted={cap_mask(permitted):#x} "
                               f"inheritable={cap_mask(inheritable):#x}")


def keep_caps(on: bool) -> None:
    """PR_SET_KEEPCAPS: keep the permitted set when all uids change from 0 to non-zero."""
    _prctl(PR_SET_KEEPCAPS, 1 if on else 0, call="prctl(PR_SET_KEEPCAPS)")


def switch_user(uid: int, gid: int, groups: list[int]) -> None:
    """setgroups, setresgid, setresuid (real, effective and saved ids), keeping the permitted caps.

    Groups first: setgroups and setresgid need CAP_SETGID, which a process keeps while it is still
    uid 0.  KEEPCAPS is on around the uid change so permitted survives it; the kernel still clears
    *effective* when the euid leaves 0, so the caller must capset afterwards (apply_app_identity does).
    """
    keep_caps(True)
    try:
        os.setgroups(groups)
    except OSError as exc:
        raise OSError(exc.errno, f"setgroups({groups}): {exc.strerror}") from exc
    try:
        os.setresgid(gid, gid, gid)
    except OSError as exc:
        raise OSError(exc.errno, f"setresgid({gid}): {exc.strerror}") from exc
    try:
        os.setresuid(uid, uid, uid)
    except OSError as exc:
        raise OSError(exc.errno, f"setresuid({uid}): {exc.strerror}") from exc
    keep_caps(False)


def apply_app_identity(uid: int, gid: int, groups: list[int], caps: frozenset[int],
                       ambient: frozenset[int] = frozenset()) -> None:
    """Give the calling (single-threaded, about to execve) process the app's ids and capabilities.

    Result: bounding = ``caps``; effective = permitted = ``caps``; inheritable = ambient = ``ambient``
    (empty by default).  What survives the execve that follows is the kernel's rule (capabilities(7)):
    - uid 0: a file without capabilities counts as having all of them, so the new permitted and
      effective sets are exactly the bounding set = ``caps``.
    - non-root uid: the new permitted/effective sets are the *ambient* set only.  podrun follows rkt
      here (Documentation/capabilities-guide.md, "Capabilities when running as non-root"): the
      retain/remove sets limit the bounding set, a non-root app starts with no effective caps and can
      only gain them through file capabilities (which no_new_privs blocks).  podman instead gives a
      non-root user the caps named with --cap-add through ambient (pkg/specgen/generate/
      security_linux.go); ``ambient`` lets a policy do that, and runc applies the sets in the same
      order as below (bounding, keepcaps, user, capset, ambient).

    Order matters:
    1. bounding drop first: PR_CAPBSET_DROP needs CAP_SETPCAP in effective, which we lose later;
    2. user switch with KEEPCAPS on (see switch_user) so permitted survives setresuid to non-root;
    3. capset: re-raises effective (cleared by the euid change) and shrinks permitted to ``caps``;
       inheritable must hold a cap before it can be raised into ambient;
    4. ambient last: clear, then raise the requested ones (each needs permitted and inheritable).
    """
    if not ambient <= caps:
        raise OSError(errno.EINVAL, "ambient capabilities must be a subset of the retained set",
                      f"{cap_mask(ambient):#x} not within {cap_mask(caps):#x}")
    drop_bounding(caps)
    switch_user(uid, gid, groups)
    set_caps(caps, caps, ambient)
    clear_ambient()
    if ambient:
        raise_ambient(ambient)


def set_rlimits(limits: dict[str, tuple[int, int]]) -> None:
    """Set each resource limit, e.g. ``{"RLIMIT_NOFILE": (soft, hard)}``; -1 means unlimited.

    Raising a hard limit needs CAP_SYS_RESOURCE (EPERM otherwise); RLIMIT_NOFILE cannot exceed
    fs.nr_open even then.  The policy layer clamps its defaults accordingly.
    """
    for name, (soft, hard) in limits.items():
        number = getattr(resource, name, None)
        if not name.startswith("RLIMIT_") or not isinstance(number, int):
            raise OSError(errno.EINVAL, "unknown resource limit", name)
        value = _Rlimit(_RLIM_INFINITY if soft < 0 else soft, _RLIM_INFINITY if hard < 0 else hard)
        if _libc().setrlimit(number, ctypes.byref(value)) < 0:
            _raise_errno(f"setrlimit({name})", f"soft={soft} hard={hard}")
