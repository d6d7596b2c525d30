"""Capabilities, no_new_privs, user switching and rlimits: what stage2 applies to an app before execve.

Kernel layer: no policy, nothing of podrun but ``podrun.isolation.libc``.  Every failure raises
``OSError`` carrying errno and the call it came from.  capset(2), prctl(2) and the capability sets
are *per thread*: call these in a single-threaded process (the forked child that is about to exec
the app), never in a threaded one.

Which capabilities an app should end up with is decided in ``podrun.pod.caps_policy``; the order in
which the sets are applied around the user change is ``podrun.isolation.kernel.Kernel.apply_app_identity``.
"""

from __future__ import annotations

import ctypes
import errno
import resource

from podrun.isolation.libc import LIBC, check

# Capability numbers and names: podrun.model.caps (no ctypes there, for stage0's flag parsing).

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


def _prctl(option: int, arg2: int = 0, arg3: int = 0, call: str = "prctl") -> int:
    return check(LIBC.prctl(option, arg2, arg3, 0, 0), call)


def cap_mask(caps: frozenset[int]) -> int:
    """The capability set as the bitmask /proc/PID/status shows (CapEff etc.)."""
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


_LAST_CAP: list[int] = []


def last_cap() -> int:
    """The highest capability number the running kernel knows (/proc/sys/kernel/cap_last_cap)."""
    if not _LAST_CAP:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            _LAST_CAP.append(int(f.read()))
    return _LAST_CAP[0]


def set_no_new_privs() -> None:
    """Set no_new_privs: execve can no longer grant privileges (setuid bits, file capabilities)."""
    _prctl(PR_SET_NO_NEW_PRIVS, 1, call="prctl(PR_SET_NO_NEW_PRIVS)")


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
    check(LIBC.capset(ctypes.addressof(header), ctypes.addressof(data)), "capset",
          f"effective={cap_mask(effective):#x} permitted={cap_mask(permitted):#x} "
          f"inheritable={cap_mask(inheritable):#x}")


def keep_caps(on: bool) -> None:
    """PR_SET_KEEPCAPS: keep the permitted set when all uids change from 0 to non-zero."""
    _prctl(PR_SET_KEEPCAPS, 1 if on else 0, call="prctl(PR_SET_KEEPCAPS)")


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
        check(LIBC.setrlimit(number, ctypes.addressof(value)), f"setrlimit({name})", f"soft={soft} hard={hard}")
