"""The kernel layer's one handle on the C library and its one errno helper.

Every ctypes call into libc in podrun goes through ``LIBC``, whose prototypes are declared once
here (two modules declaring ``prctl`` differently on one shared handle would break each other),
and every failure becomes an ``OSError`` through ``oserror``: errno, ``"call: strerror"`` and the
path it was about (STYLE.md: errors carry errno, call and path; mkosi's ``oserror()``).

``CDLL(None)`` is the C library already loaded into the interpreter (glibc or musl): no
``find_library``, which would run ldconfig in a subprocess.
"""

from __future__ import annotations

import ctypes
import os

LIBC = ctypes.CDLL(None, use_errno=True)

_int, _uint, _long, _ulong, _size, _ptr, _str = (
    ctypes.c_int, ctypes.c_uint, ctypes.c_long, ctypes.c_ulong, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_char_p)

# The prototypes of the libc functions podrun calls (syscall(2) stays variadic: its callers
# pass ctypes values).  Pointers to structures are passed as addresses (ctypes.addressof).
for _name, _args in (
    ("unshare", [_int]),
    ("setns", [_int, _int]),
    ("mount", [_str, _str, _str, _ulong, _str]),
    ("umount2", [_str, _int]),
    ("sethostname", [_str, _size]),
    ("prctl", [_int, _ulong, _ulong, _ulong, _ulong]),
    ("statfs", [_str, _ptr]),
    ("fstatfs", [_int, _ptr]),
    ("capget", [_ptr, _ptr]),
    ("capset", [_ptr, _ptr]),
    ("setrlimit", [_int, _ptr]),
    ("syncfs", [_int]),
    ("sigprocmask", [_int, _ptr, _ptr]),
    ("signalfd", [_int, _ptr, _int]),
):
    _func = getattr(LIBC, _name)
    _func.argtypes = _args
    _func.restype = _int
LIBC.syscall.restype = _long
LIBC.signal.argtypes, LIBC.signal.restype = [_int, _ptr], _ptr  # returns the old handler, SIG_ERR on failure
LIBC.alarm.argtypes, LIBC.alarm.restype = [_uint], _uint


def oserror(call: str, path: str | None = None, err: int | None = None, hint: str = "") -> OSError:
    """The ``OSError`` for a failed *call*: *err* (default: the errno the last ctypes call left),
    its message ``"call: strerror"`` (and *hint*), and *path* as the file name."""
    if err is None:
        err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)}{hint}", path)


def check(ret: int, call: str, path: str | None = None) -> int:
    """*ret* from a libc call that returns -1 and sets errno on failure; raises ``oserror``."""
    if ret < 0:
        raise oserror(call, path)
    return ret
