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
    from typing import Any, NoReturn

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
    from podrun.isolation.libc import LIBC, oserror  # ctypes: loaded only when a sync is asked for

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if LIBC.syncfs(fd) != 0:
            raise oserror("syncfs", os.fspath(path))
    finally:
        os.close(fd)


def temp_name(final: str | os.PathLike[str], suffix: str = ".tmp") -> str:
    """A unique sibling name for *final*, starting with a dot so listings skip it."""
    head, tail = os.path.split(os.fspath(final))
    return os.path.join(head, f".{tail}.{os.urandom(6).hex()}{suffix}")


def write_all(fd: int, data: bytes) -> None:
    """Write all of *data* to *fd* (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace *path* with *data* atomically and (unless ``durable=False``) durably.

    ``durable=False`` skips both fsyncs: for records whose loss in a power cut is harmless
    (readers must then accept a missing or empty file), e.g. an app's exit status."""
    final = os.fspath(path)
    tmp = temp_name(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        try:
            write_all(fd, data)
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


def read_at_most(fd: int, count: int) -> bytes:
    """Read *fd* to its end or until *count* bytes (read ``limit + 1`` to tell "too big")."""
    chunks: list[bytes] = []
    while count > 0 and (chunk := os.read(fd, count)):
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


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


# -- files written for the user (SECURITY-TESTS case 26) ---------------------------------------
#
# ``image export`` and ``--uuid-file-save`` write, as root, a path the user named, often in a
# directory other users can write (/tmp).  Whoever can write that directory may plant a symlink
# at DEST or at the temporary name, or swap DEST while we write.  So: the directory is opened
# once and every step is relative to that fd; the temporary is created with O_EXCL|O_NOFOLLOW on
# a random name (a link planted there is never followed); DEST is replaced by rename(2) only
# when it is absent or a regular file, checked again just before the rename; a symlink at DEST
# is refused (skopeo follows it: containers/image opens oci-archive: destinations with
# os.Create); a FIFO or character device is written in place, as a shell redirection would; the
# names of already-open descriptors (``-``, /dev/stdout, /dev/fd/N, /proc/self/fd/N) write to
# that descriptor, so ``podrun image export IMG oci-archive:- | tar t`` works.

USER_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NOCTTY: opening a terminal must not make it our controlling terminal.  No O_CREAT or O_TRUNC.
IN_PLACE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_STALE_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_STD_NAMES = {"-": 1, "/dev/stdout": 1, "/dev/stderr": 2}
_FD_DIRS = ("/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/")
_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def fd_alias(path: str) -> int | None:
    """The open descriptor *path* names: 1 for ``-`` and /dev/stdout, 2 for /dev/stderr, N for
    /dev/fd/N, /proc/self/fd/N and /proc/thread-self/fd/N; None for any other path."""
    if path in _STD_NAMES:
        return _STD_NAMES[path]
    for prefix in _FD_DIRS:
        number = path[len(prefix):]
        if path.startswith(prefix) and number.isascii() and number.isdigit():
            return int(number)
    return None


def _refuse(path: str, why: str) -> NoReturn:
    from podrun.errors import UsageError

    raise UsageError(f"refusing to write {path}: {why}")


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _lstat(name: str, dir_fd: int | None) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _same_file(a: os.stat_result | None, b: os.stat_result) -> bool:
    return a is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _is_temp_of(entry: str, name: str) -> bool:
    """Whether *entry* is a name ``temp_name(name)`` makes: ``.NAME.`` + 12 hex digits + ``.tmp``."""
    middle = entry[len(name) + 2:-4]
    return (entry.startswith(f".{name}.") and entry.endswith(".tmp") and len(middle) == 12
            and all(c in "0123456789abcdef" for c in middle))


def remove_stale_temps(dir_fd: int, name: str) -> list[str]:
    """Delete temporaries of *name* in *dir_fd* that a killed writer left (``kill -9`` while
    writing): regular files we own, named by ``temp_name``, whose ``flock`` no live writer holds.
    Anything else (a planted link or FIFO, another user's file, a live writer's) is left alone.
    Returns the names removed; an unreadable directory is skipped (best effort)."""
    removed: list[str] = []
    try:
        entries = sorted(e for e in os.listdir(dir_fd) if _is_temp_of(e, name))
    except OSError:
        return removed
    for entry in entries:
        try:
            fd = os.open(entry, _STALE_OPEN_FLAGS, dir_fd=dir_fd)
        except OSError:
            continue  # a symlink (ELOOP), or gone
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its writer lives
            if _same_file(_lstat(entry, dir_fd), st):
                os.unlink(entry, dir_fd=dir_fd)
                removed.append(entry)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


# -- entries whose liveness is their writer's lock (store/tmp, hidden embryos) ----------------
#
# A writer creates the entry and holds an exclusive flock on it while it works; a cleaner removes
# an entry only after taking that lock itself, so only what a dead writer (``kill -9``) left.


def create_locked(path: str | os.PathLike[str], directory: bool = False, attempts: int = 5) -> int:
    """Create *path* (a new file, or a directory with *directory*) and return an fd holding its
    exclusive flock.  A cleaner may take and delete the entry between its creation and our
    flock: lock blocking (such a cleaner lets go once it has deleted it), then check that *path*
    still names the locked inode, and create it again if not."""
    for _ in range(attempts):
        try:
            if directory:
                os.mkdir(path, 0o700)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass  # left over and being removed by a cleaner: wait for it below
        try:
            fd = os.open(path, (os.O_RDONLY | os.O_DIRECTORY if directory else os.O_RDWR) | os.O_NOFOLLOW
                         | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        fcntl.flock(fd, fcntl.LOCK_EX)
        st = os.fstat(fd)
        if st.st_nlink > 0 and _same_file(_lstat(os.fspath(path), None), st):
            return fd
        os.close(fd)
    raise OSError(errno.EAGAIN, "removed by a concurrent podrun each time, try again", os.fspath(path))


def _open_entry(path: str | os.PathLike[str]) -> int | None:
    """An fd of *path* for its lock, or None when it is gone or cannot carry one (a symlink,
    a socket: nothing a writer makes)."""
    try:
        return os.open(path, _STALE_OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):
            return None
        raise


def writer_alive(path: str | os.PathLike[str]) -> bool:
    """Whether a live process holds the lock of entry *path* (a shared try-lock, let go at once)."""
    fd = _open_entry(path)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def remove_if_abandoned(path: Path, remove: Callable[[Path], object] | None = None) -> bool:
    """Remove *path* (with *remove*, default ``remove_path``) if no live writer holds its lock;
    returns whether it was removed.  A symlink or socket in place of an entry is removed
    unlocked: no writer makes one."""
    fd = _open_entry(path)
    if fd is None:
        if os.path.lexists(path):
            os.unlink(path)
            return True
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its writer lives
        if not _same_file(_lstat(os.fspath(path), None), os.fstat(fd)):
            return False  # renamed away (complete) or replaced meanwhile: not ours to judge
        (remove or remove_path)(path)
        return True
    finally:
        os.close(fd)


class user_output:  # lower-case: used like open(), ``with user_output(path) as out``
    """Write a file the user named (``path``) without trusting its directory.

    ``open()`` (or ``with``) decides how: a name of an open descriptor (see ``fd_alias``) or an
    existing FIFO or character device is written in place (``in_place``); an absent or regular
    DEST gets a new temporary (``USER_TEMP_FLAGS``, random name, flock held while writing) that
    ``commit()`` renames over it; anything else (a symlink, directory, block device, socket) is
    refused with a UsageError.  Write to ``fd``.  ``close()`` without ``commit()`` removes the
    temporary, so DEST is never partial; a temporary left by ``kill -9`` is removed by the next
    ``open()`` of the same DEST (``remove_stale_temps``).  The ``with`` form commits on success.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1
        self.in_place = False
        self._dir_fd = -1
        self._name = ""
        self._temp = ""  # our temporary's name while it exists

    def open(self) -> user_output:
        alias = fd_alias(self.path)
        if alias is not None:
            self.fd = os.dup(alias)  # EBADF: the descriptor is not open
            self.in_place = True
            return self
        head, self._name = os.path.split(self.path)
        if not self._name:  # "DIR/"; "." and ".." are refused below as directories
            _refuse(self.path, "it is a directory")
        try:
            self._dir_fd = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            st = _lstat(self._name, self._dir_fd)
            if st is None or stat.S_ISREG(st.st_mode):
                self._create_temp()
            elif stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
                self._open_in_place(st)
            elif stat.S_ISLNK(st.st_mode):
                _refuse(self.path, "it is a symbolic link, which podrun does not follow (whoever can write "
                                   "its directory may have planted it); name the file it points to")
            else:
                _refuse(self.path, f"it is {_kind(st.st_mode)}")
        except BaseException:
            self.close()
            raise
        return self

    def _create_temp(self) -> None:
        remove_stale_temps(self._dir_fd, self._name)
        temp = temp_name(self._name)
        self.fd = os.open(temp, USER_TEMP_FLAGS, 0o666, dir_fd=self._dir_fd)
        self._temp = temp
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        # A concurrent podrun's remove_stale_temps may have taken our file between open and flock.
        if not _same_file(_lstat(temp, self._dir_fd), os.fstat(self.fd)):
            self._temp = ""
            raise OSError(errno.EAGAIN, "temporary file removed by a concurrent podrun, try again", self.path)

    def _open_in_place(self, st: os.stat_result) -> None:
        # blocks on a FIFO until it has a reader, as a shell redirection does
        self.fd = os.open(self._name, IN_PLACE_FLAGS, dir_fd=self._dir_fd)
        self.in_place = True
        if not _same_file(os.fstat(self.fd), st):
            _refuse(self.path, "it was replaced while podrun opened it")

    def commit(self) -> None:
        """Make what was written DEST's content: fsync the temporary, check that DEST is still
        absent or a regular file, rename over it and fsync the directory (nothing in place)."""
        if not self._temp:
            return
        os.fsync(self.fd)
        st = _lstat(self._name, self._dir_fd)
        if st is not None and not stat.S_ISREG(st.st_mode):
            _refuse(self.path, f"it became {_kind(st.st_mode)} while podrun wrote it")
        os.rename(self._temp, self._name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._temp = ""
        os.fsync(self._dir_fd)

    def close(self) -> None:
        """Release everything; an uncommitted temporary is removed (DEST stays as it was)."""
        if self._temp:
            try:
                os.unlink(self._temp, dir_fd=self._dir_fd)
            except FileNotFoundError:
                pass
            self._temp = ""
        for fd in (self.fd, self._dir_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self._dir_fd = -1

    def __enter__(self) -> user_output:
        return self.open()

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            if exc_type is None:
                self.commit()
        finally:
            self.close()


def remove_pid_file(path: str, pid: int) -> bool:
    """Remove the PID file *path* (``--pid-file``) if it is still a regular file holding *pid*
    (:func:`remove_own_pid_file`); returns whether it was removed; any error leaves it (best
    effort, at the supervisor's end: start-stop-daemon and OpenRC check the PID in a stale file)."""
    try:
        return remove_own_pid_file(path, pid)
    except OSError:
        return False


def remove_own_pid_file(path: str, pid: int, written: tuple[int, int, int] | None = None) -> bool:
    """Remove the PID file *path* if it is still a regular file holding *pid* and, with
    *written*, still the file of that ``(st_dev, st_ino, st_mtime_ns)`` (the one stage0 wrote: a
    PID that came round again in a newer file, even one with a freed inode number, is then not
    taken for ours).  A newer podrun started by the supervisor may already have written its own
    PID there (or the user replaced it), and that file is not ours.  The last component is
    never followed (a symbolic link there is left alone, as is anything but a regular file) and
    nothing but a regular file is opened (O_NOFOLLOW|O_NONBLOCK against a swap between the
    check and the open).  Returns whether it was removed (False: absent or not ours); OSError
    when it could not be inspected or removed."""
    head, name = os.path.split(path)
    try:
        dir_fd = os.open(head or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return False  # its directory is gone: so is the file
    try:
        before = _lstat(name, dir_fd)
        if before is None or not stat.S_ISREG(before.st_mode):
            return False
        try:
            fd = os.open(name, _STALE_OPEN_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # became a link since the check: not ours
                return False
            raise
        try:
            st = os.fstat(fd)
            data = os.read(fd, 64) if stat.S_ISREG(st.st_mode) else b""
        finally:
            os.close(fd)
        if not holds_pid(data, st, pid, written) or not _same_file(_lstat(name, dir_fd), st):
            return False
        os.unlink(name, dir_fd=dir_fd)
        return True
    finally:
        os.close(dir_fd)


def holds_pid(data: bytes, st: os.stat_result, pid: int, written: tuple[int, int, int] | None = None) -> bool:
    """Whether a PID file whose first bytes are *data* and whose fstat is *st* is the one that
    names *pid*: a regular file whose whole content is that number (whitespace around it aside)
    and, with *written*, the file of that ``(st_dev, st_ino, st_mtime_ns)``."""
    return (stat.S_ISREG(st.st_mode) and len(data) == st.st_size and data.strip() == str(pid).encode()
            and (written is None or (st.st_dev, st.st_ino, st.st_mtime_ns) == written))


# stage1 writes a few small JSON records (exit statuses, its cgroup paths) on every pod's
# path; the json module would cost it ~13 ms of imports (it loads re, enum, functools).  These
# two write the plain cases directly, byte for byte what json.dumps(..., separators=(",", ":"))
# writes, and hand anything else to json.
def numbers_json(fields: dict[str, int | float | None]) -> bytes:
    """*fields* (keys plain, values ints, finite floats or None) as compact JSON."""
    parts = []
    for key, value in fields.items():
        if not _plain(key):
            break
        if value is None:
            text = "null"
        elif type(value) is int or (type(value) is float and value - value == 0):  # not a bool, nan or inf
            text = repr(value)
        else:
            break
        parts.append(f'"{key}":{text}')
    else:
        return ("{" + ",".join(parts) + "}").encode()
    import json

    return json.dumps(fields, separators=(",", ":")).encode()


def strings_json(items: list[str]) -> bytes:
    """*items* as a compact JSON list of strings."""
    if all(_plain(item) for item in items):
        return ("[" + ",".join(f'"{item}"' for item in items) + "]").encode()
    import json

    return json.dumps(items, separators=(",", ":")).encode()


class RawJSON:
    """A JSON text :func:`doc_json` writes as it is (a document podrun wrote itself)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def doc_json(doc: object) -> bytes:
    """*doc* (dicts with string keys, lists, strings, ints, bools, None) as compact JSON, written
    here while every string is printable ASCII (quotes and backslashes escaped as json does),
    else by the json module: the oci flavor
    writes each app's config.json on the start path, where importing json (and re) costs
    ~8 ms.  TypeError for anything else, as json.dumps raises it."""
    parts: list[str] = []
    if _write_plain(doc, parts):
        return "".join(parts).encode()
    import json

    def raw(value: object) -> object:
        if isinstance(value, RawJSON):
            return json.loads(value.data)
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    return json.dumps(doc, separators=(",", ":"), default=raw).encode()


def _write_plain(value: object, out: list[str]) -> bool:
    """Append *value*'s JSON to *out*; False (and *out* to be dropped) at the first string
    that is not printable ASCII."""
    if value is None:
        out.append("null")
    elif value is True or value is False:
        out.append("true" if value else "false")
    elif type(value) is int:
        out.append(repr(value))
    elif type(value) is str:
        if not (value.isascii() and value.isprintable()):
            return False
        out.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
    elif type(value) is RawJSON:
        out.append(value.data.decode())
    elif type(value) is list or type(value) is tuple:
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            if not _write_plain(item, out):
                return False
        out.append("]")
    elif type(value) is dict:
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if type(key) is not str or not _plain(key):
                return False
            out.append(f',"{key}":' if i else f'"{key}":')
            if not _write_plain(item, out):
                return False
        out.append("}")
    else:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
    return True


def _plain(text: str) -> bool:
    """Printable ASCII without a quote or a backslash: JSON writes it as it is."""
    return text.isascii() and text.isprintable() and '"' not in text and "\\" not in text
