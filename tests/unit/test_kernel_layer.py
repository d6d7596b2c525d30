"""The kernel layer's one libc handle and one errno helper (podrun.isolation.libc), without root."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import podrun
from podrun.isolation import syscalls as sc
from podrun.isolation.libc import check, oserror

PACKAGE = Path(podrun.__file__).parent


def test_only_libc_py_loads_the_c_library_or_reads_errno() -> None:
    """Another CDLL(None) handle would bring back prototypes declared twice, differently."""
    offenders = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
                 if p.name != "libc.py" and ("CDLL(None" in p.read_text() or "get_errno" in p.read_text())]
    assert offenders == []


def test_a_failed_call_names_errno_call_and_path() -> None:
    with pytest.raises(OSError) as info:
        sc.fs_type(-1)
    assert info.value.errno == errno.EBADF
    assert info.value.strerror == "fstatfs: Bad file descriptor"
    with pytest.raises(FileNotFoundError) as missing:
        sc.path_fs_type("/nonexistent/podrun")
    assert (missing.value.strerror, missing.value.filename) == ("statfs: No such file or directory",
                                                                "/nonexistent/podrun")


def test_oserror_and_check() -> None:
    exc = oserror("mount", "/x", errno.EPERM, " (podrun needs CAP_SYS_ADMIN)")
    assert isinstance(exc, PermissionError)
    assert (exc.errno, exc.strerror, exc.filename) == (errno.EPERM, "mount: Operation not permitted (podrun needs "
                                                       "CAP_SYS_ADMIN)", "/x")
    assert check(3, "open") == 3
