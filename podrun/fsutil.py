"""Crash-safe file primitives shared by the store and pod state.

Design rule (docs/store.md): every durable update is *write temp, fsync, rename, fsync dir*,
and every shared structure is guarded by ``flock(2)`` on a lock file.  Locks held by a process
are released by the kernel when it dies, so a ``kill -9`` never leaves a lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from typing import Any

# Only os, fcntl and stat at import time: stage1 writes its records through this module, and
# pathlib, contextlib, shutil or ctypes would each add milliseconds to every pod start.


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames and creations inside it are durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: str | os.PathLike[str]) -> None:
    """Flush the whole filesystem holding *path* (one call instead of fsync per file)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # the loaded libc; find_library would run ldconfig
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fspath(path))
    finally:
        os.close(fd)


def temp_name(final: str | os.PathLike[str], suffix: str = ".tmp") -> str:
    """A unique sibling name for *final*, starting with a dot so listings skip it."""
    head, tail = os.path.split(os.fspath(final))
    return os.path.join(head, f".{tail}.{os.urandom(6).hex()}{suffix}")


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace *path* with *data* atomically and (unless ``durable=False``) durably.

    ``durable=False`` skips both fsyncs: for records whose loss in a power cut is harmless
    (readers must then accept a missing or empty file), e.g. an app's exit status."""
    final = os.fspath(path)
    tmp = temp_name(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, final)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if durable:
        fsync_dir(os.path.dirname(final) or ".")


class flocked:  # lower-case: used like a function, ``with flocked(path) as fd``
    """Hold ``flock`` on *path* (created 0600 if missing) for the ``with`` block; yields the fd."""

    def __init__(self, path: str | os.PathLike[str], *, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self.fd = -1

    def __enter__(self) -> int:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX)
        except BaseException:
            os.close(self.fd)
            raise
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def open_regular(path: str | os.PathLike[str], *, dir_fd: int | None = None) -> int:
    """Open an existing *regular* file read-only without following a final symlink.

    FIFOs and devices are refused before any read can block on them (``O_NONBLOCK`` on open,
    then ``fstat``), as SECURITY-TESTS case 9 requires for local image inputs.
    """
    fd = os.open(
        path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
    )
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", os.fspath(path))
    os.set_blocking(fd, True)
    return fd


def open_dir_beneath(root_fd: int, relpath: str) -> int:
    """Open directory *relpath* under *root_fd* one component at a time, never following links.

    Raises ``OSError(ELOOP/ENOTDIR)`` when any component is a symlink or not a directory.
    """
    fd = os.dup(root_fd)
    try:
        for part in relpath.split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                raise OSError(errno.EPERM, "'..' in path", relpath)
            nfd = os.open(
                part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_tree(path: Path) -> None:
    """Delete a tree without following symlinks (shutil.rmtree's fd-based walk); a path that
    is already gone is not an error, so concurrent cleaners do not fail each other."""

    import shutil

    def onerror(func: Callable[..., Any], p: str, exc_info: Any) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):
            raise exc_info[1]

    shutil.rmtree(path, onerror=onerror)


def remove_path(path: Path) -> None:
    """Remove a file, symlink or whole directory tree (never following links); gone is fine."""
    if path.is_dir() and not path.is_symlink():
        remove_tree(path)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
