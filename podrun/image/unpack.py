"""Safe unpacking of one untrusted layer tar into its own overlayfs lowerdir.

Each layer is unpacked independently into an empty directory; the overlay stack of those trees
gives the image's merged view, so whiteouts become what overlayfs understands (a 0/0 character
device, ``trusted.overlay.opaque=y``) rather than deletions in other layers.

Why not ``tarfile.extractall``: Python 3.11's extraction filters had bypasses fixed only in
later releases (SECURITY-TESTS case 2).  Here tarfile only *parses* headers, in streaming mode,
and every file is created by this module with ``*at()`` calls relative to directory fds walked
one component at a time with ``O_NOFOLLOW``: no symlink in the tree is ever followed, so
nothing can be written outside ``dest`` whatever the layer contains (docker CVE-2014-6407,
CVE-2014-9356, containerd CVE-2021-32760).

Choices, matching Docker/containerd's merged view where they are defined:

* names: a leading ``./`` is stripped; absolute names, ``..`` components and NUL bytes are
  refused (stricter than Docker, which cleans them); a ``.`` directory entry sets the layer
  root's metadata.
* an entry whose path exists in this layer replaces it (a directory over a directory only
  updates metadata), last one wins; a whiteout followed by a same-name directory in the same
  layer gives a plain (non-opaque) directory, as Docker's and containerd's overlay appliers do.
* hardlinks must name a regular file already unpacked in this layer; their own header metadata
  is not applied (it would rewrite the shared inode, as GNU tar also declines to do).
* device nodes are skipped and counted (a debootstrapped ``/dev`` is common): they are never
  usable in a pod, whose root is ``nodev`` and whose ``/dev`` is podrun's own, as rootless
  podman skips them.  Their path is still checked like any other entry, so one placed through
  a symlink is refused, and a hardlink to one finds no file and is refused.
* GNU/PAX sparse files are refused: their holes would let a small stream expand past
  ``layer_bytes`` on disk, and no image builder emits them.
* the bytes after the end-of-archive marker must be zeros: tarfile silently treats a corrupt
  header as the end of the archive, and Go's archive/tar (Docker) refuses such a layer.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO, Protocol, cast

from podrun.errors import LimitExceededError, PodrunError, VerificationError
from podrun.image.digest import Digest
from podrun.image.limits import DEFAULT_LIMITS, Limits

CHUNK = 1 << 20
# Bytes of tar headers (PAX records, GNU long names) tolerated for one entry; tarfile reads a
# whole extended header into memory, so this bounds memory whatever the layer declares.
MAX_HEADER_BYTES = 4 << 20
_MAX_ID = 0xFFFF_FFFE  # (uid_t)-1 means "unchanged" to chown(2)
_DIR_CACHE_SIZE = 256  # open directory fds kept for consecutive entries in the same directory
_DEVICE_PATHS = 4096  # skipped device paths remembered (for messages); memory stays bounded
_DEVICE_EXAMPLES = 5  # of them named in the warning
_STREAM_BUFSIZE = 64 << 10  # tarfile copies its whole buffer on every small read: keep it small

OPAQUE_MARKER = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PREFIX = "SCHILY.xattr."

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


@dataclass(frozen=True)
class UnpackResult:
    """What was unpacked: the layer's diff_id and size (of the uncompressed tar), entry count,
    and the device nodes skipped (how many, and the first few paths)."""

    diff_id: Digest
    size: int
    entries: int
    devices_skipped: int = 0
    device_examples: tuple[str, ...] = ()


class _TarStream(Protocol):
    """The part of tarfile's internal stream object that is used to read member data."""

    def read(self, size: int) -> bytes: ...

    def tell(self) -> int: ...


class _MemberList(Protocol):
    """TarFile's (untyped) list of the members parsed so far."""

    members: list[tarfile.TarInfo]


def entry_components(name: str, limits: Limits, what: str, role: str = "entry") -> tuple[str, ...]:
    """Split a tar entry name into path components below the layer root, refusing escapes.

    Returns ``()`` for the root itself (``.``/``./``).  Raises VerificationError for absolute
    names, ``..`` components, NUL bytes and empty names, LimitExceededError for names over
    the path, component or depth limits; messages name *what* and the entry (repr-escaped).
    """
    label = f"{what}: {role} {name!r}"
    if name == "":
        raise VerificationError(f"{label}: empty name")
    if "\x00" in name:
        raise VerificationError(f"{label}: name contains a NUL byte")
    if len(_fsencode(name)) > limits.path_bytes:
        raise LimitExceededError(f"{label}: path longer than {limits.path_bytes} bytes, limit exceeded")
    if name.startswith("/"):
        raise VerificationError(f"{label}: absolute path escapes the layer")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise VerificationError(f"{label}: '..' component escapes the layer")
    if len(parts) > limits.path_depth:
        raise LimitExceededError(f"{label}: deeper than {limits.path_depth} components, limit exceeded")
    for part in parts:
        if len(_fsencode(part)) > limits.name_bytes:
            raise LimitExceededError(f"{label}: component longer than {limits.name_bytes} bytes, limit exceeded")
    return parts


def xattrs_to_apply(pax_headers: Mapping[str, str], regular_file: bool) -> list[tuple[str, bytes]]:
    """The extended attributes of a PAX header (``SCHILY.xattr.*``) that may be applied.

    Dropped: every ``trusted.*`` (overlayfs reads ``trusted.overlay.*`` from lowerdirs, so a
    layer could otherwise forge opaque dirs, redirects or metacopy), ``user.overlay.*`` (the
    same for ``userxattr`` mounts), and ``security.capability`` except on regular files.
    File capabilities are kept as data: they cannot exceed the pod's bounding set.
    """
    out: list[tuple[str, bytes]] = []
    for key, value in pax_headers.items():
        if not key.startswith(_XATTR_PREFIX):
            continue
        name = key[len(_XATTR_PREFIX):]
        if not name or "\x00" in name or name.startswith(("trusted.", "user.overlay.")):
            continue
        if name == "security.capability" and not regular_file:
            continue
        out.append((name, _fsencode(value)))
    return out


def _fsencode(text: str) -> bytes:
    # tarfile decodes names with surrogateescape, so this gives back the bytes of the archive.
    return text.encode("utf-8", "surrogateescape")


class _HashingReader:
    """Hashes and counts what tarfile reads; enforces the layer size and per-entry header limits."""

    def __init__(self, raw: BinaryIO, limit: int, what: str) -> None:
        self._raw = raw
        self._limit = limit
        self._what = what
        self._hash = hashlib.sha256()
        self.total = 0
        self.entry = ""  # the entry being processed, for messages
        self._header_budget: int | None = None

    def read(self, size: int = -1) -> bytes:
        """Read like a file object, refusing data past the limits."""
        try:
            data = self._raw.read(size)
        except PodrunError:
            raise
        except OSError as exc:
            if exc.errno is not None:  # a real I/O error: the caller reports it as a store problem
                raise
            raise VerificationError(f"{self._what}: corrupt compressed stream: {exc}") from exc
        except Exception as exc:  # zlib/zstd/isal decoder errors have no common base class
            raise VerificationError(f"{self._what}: corrupt compressed stream: {exc}") from exc
        n = len(data)
        self.total += n
        if self.total > self._limit:
            raise LimitExceededError(
                f"{self._what}: more than {self._limit} bytes uncompressed at entry {self.entry!r}, limit exceeded"
            )
        if self._header_budget is not None:
            self._header_budget -= n
            if self._header_budget < 0:
                raise LimitExceededError(
                    f"{self._what}: tar headers after entry {self.entry!r} exceed {MAX_HEADER_BYTES} bytes,"
                    " limit exceeded"
                )
        self._hash.update(data)
        return data

    def reading_headers(self, on: bool) -> None:
        """Bound the bytes read while tarfile parses one entry's headers (plus its read-ahead)."""
        self._header_budget = MAX_HEADER_BYTES + 2 * CHUNK if on else None

    def digest(self) -> Digest:
        return Digest("sha256", self._hash.hexdigest())


def unpack_layer(
    tar_stream: BinaryIO, dest: Path, limits: Limits = DEFAULT_LIMITS, what: str = "layer"
) -> UnpackResult:
    """Unpack the (already decompressed) layer tar *tar_stream* into the empty directory *dest*.

    The stream is read to EOF so ``diff_id`` covers all of it.  Raises VerificationError (or
    LimitExceededError) naming *what* and the offending entry; nothing is ever written outside
    *dest*, but *dest* may hold a partial tree afterwards, which the caller removes.  No data
    is fsynced: the caller syncs the filesystem once.
    """
    reader = _HashingReader(tar_stream, limits.layer_bytes, what)
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    unpacker = _Unpacker(root_fd, limits, what)
    try:
        entries = unpacker.run(reader)
    finally:
        unpacker.close()
        os.close(root_fd)
    return UnpackResult(reader.digest(), reader.total, entries, unpacker.devices_skipped,
                        tuple(sorted(unpacker.devices)[:_DEVICE_EXAMPLES]))


class _Unpacker:
    """The state of one unpack: the layer root fd, a cache of open parent directories, the
    directory mtimes to set once all children exist."""

    def __init__(self, root_fd: int, limits: Limits, what: str) -> None:
        self.root_fd = root_fd
        self.limits = limits
        self.what = what
        self.dirs: dict[tuple[str, ...], int] = {}
        self.dir_mtimes: dict[tuple[str, ...], int] = {}
        self.devices_skipped = 0
        self.devices: set[str] = set()  # their paths (up to _DEVICE_PATHS), for messages

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    # -- the tar stream --------------------------------------------------------------------

    def run(self, reader: _HashingReader) -> int:
        what = self.what
        reader.reading_headers(True)
        try:
            tf = tarfile.open(
                fileobj=cast(IO[bytes], reader),
                mode="r|",
                bufsize=_STREAM_BUFSIZE,
                encoding="utf-8",
                errors="surrogateescape",
            )
        except tarfile.ReadError as exc:
            if reader.total == 0:  # an empty stream is an empty layer (Go's archive/tar agrees)
                return 0
            raise VerificationError(f"{what}: not a valid tar stream: {exc}") from exc
        stream = cast(_TarStream, tf.fileobj)
        count = 0
        try:
            while True:
                reader.reading_headers(True)
                member = tf.next()
                reader.reading_headers(False)
                if member is None:
                    break
                # tarfile keeps every TarInfo it parsed; memory must not grow with the entry count.
                cast(_MemberList, tf).members.clear()
                count += 1
                reader.entry = member.name
                if count > self.limits.layer_entries:
                    raise LimitExceededError(
                        f"{what}: more than {self.limits.layer_entries} entries at entry {member.name!r},"
                        " limit exceeded"
                    )
                self._entry(member, stream)
                if member.isreg():  # skip data not consumed (whiteouts) so headers stay bounded
                    _discard(stream, member.offset_data + member.size - stream.tell())
            self._drain_trailer(stream, reader)
        except tarfile.TarError as exc:
            raise VerificationError(f"{what}: invalid tar stream after entry {reader.entry!r}: {exc}") from exc
        finally:
            reader.reading_headers(False)
        self._set_dir_mtimes()
        return count

    def _drain_trailer(self, stream: _TarStream, reader: _HashingReader) -> None:
        # tarfile stops at the first zero block; read the rest (second zero block, record
        # padding) so the digest covers the whole stream, and check it is all zeros.
        while chunk := stream.read(CHUNK):
            if chunk.count(0) != len(chunk):
                raise VerificationError(
                    f"{self.what}: invalid tar header or data after the end of the archive (after entry"
                    f" {reader.entry!r})"
                )

    # -- one entry ------------------------------------------------------------------------

    def _refuse(self, member: tarfile.TarInfo, why: str) -> VerificationError:
        return VerificationError(f"{self.what}: entry {member.name!r} {why}")

    def _entry(self, member: tarfile.TarInfo, stream: _TarStream) -> None:
        parts = entry_components(member.name, self.limits, self.what)
        if not parts:
            if not member.isdir():
                raise self._refuse(member, "has an empty name")
            self._metadata(self.root_fd, member, regular=False)
            self.dir_mtimes[()] = _mtime_ns(member)
            return
        parents, base = parts[:-1], parts[-1]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(member, parents, base)
            return
        kind = member.type
        if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            self._skip_device(member, parts)
            return
        if member.issparse():
            raise self._refuse(member, "is a sparse file (not supported)")
        if not (0 <= member.uid <= _MAX_ID and 0 <= member.gid <= _MAX_ID):
            raise self._refuse(member, f"has an invalid owner {member.uid}:{member.gid}")
        if kind == tarfile.LNKTYPE:
            self._hardlink(member, parts)
            return
        if kind not in (*_FILE_TYPES, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.FIFOTYPE):
            raise self._refuse(member, f"has an unsupported type {kind!r}")
        pfd = self._dir(parents, member, create=True)
        assert pfd is not None
        if kind == tarfile.DIRTYPE:
            self._directory(member, parts, pfd, base)
        elif kind == tarfile.SYMTYPE:
            self._symlink(member, parts, pfd, base)
        elif kind == tarfile.FIFOTYPE:
            self._create(pfd, parts, lambda: os.mkfifo(base, 0o600, dir_fd=pfd))
            self.dir_mtimes.pop(parts, None)
            fd = os.open(base, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                self._metadata(fd, member, regular=False)
                os.utime(fd, ns=(_mtime_ns(member),) * 2)
            finally:
                os.close(fd)
        else:
            self._regular(member, parts, pfd, base, stream)

    def _regular(
        self, member: tarfile.TarInfo, parts: tuple[str, ...], pfd: int, base: str, stream: _TarStream
    ) -> None:
        try:
            fd = os.open(base, _NEW_FILE_FLAGS, 0o600, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, parts)
            fd = os.open(base, _NEW_FILE_FLAGS, 0o600, dir_fd=pfd)
        self.dir_mtimes.pop(parts, None)
        try:
            remaining = member.size
            while remaining > 0:
                chunk = stream.read(min(CHUNK, remaining))
                if not chunk:
                    raise self._refuse(member, "is truncated")
                remaining -= len(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
            # Data first (writing clears setuid and file caps), then owner (chown clears
            # setuid/setgid), then mode, then xattrs (chown clears security.capability).
            self._metadata(fd, member, regular=True)
            os.utime(fd, ns=(_mtime_ns(member),) * 2)
        finally:
            os.close(fd)

    def _directory(self, member: tarfile.TarInfo, parts: tuple[str, ...], pfd: int, base: str) -> None:
        try:
            os.mkdir(base, 0o700, dir_fd=pfd)
        except FileExistsError:
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):  # a directory over a directory only updates metadata
                self._remove(pfd, parts)
                os.mkdir(base, 0o700, dir_fd=pfd)
        fd = self.dirs.get(parts)
        if fd is None:
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            self._cache(parts, fd)
        self._metadata(fd, member, regular=False)
        self.dir_mtimes[parts] = _mtime_ns(member)

    def _symlink(self, member: tarfile.TarInfo, parts: tuple[str, ...], pfd: int, base: str) -> None:
        target = member.linkname
        if not target or "\x00" in target:
            raise self._refuse(member, f"has an invalid symlink target {target!r}")
        if len(_fsencode(target)) > self.limits.path_bytes:
            raise LimitExceededError(
                f"{self.what}: entry {member.name!r}: symlink target longer than {self.limits.path_bytes} bytes,"
                " limit exceeded"
            )
        # The target is only data inside the tree: it is never followed here.
        self._create(pfd, parts, lambda: os.symlink(target, base, dir_fd=pfd))
        self.dir_mtimes.pop(parts, None)
        os.chown(base, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
        mtime = _mtime_ns(member)
        os.utime(base, ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)

    def _hardlink(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        target = entry_components(member.linkname, self.limits, self.what, role=f"entry {member.name!r}: hardlink to")
        if not target:
            raise self._refuse(member, "is a hardlink to the layer root")
        if target[: len(parts)] == parts:
            raise self._refuse(member, f"is a hardlink to itself or beneath itself ({member.linkname!r})")
        tdir = self._dir(target[:-1], member, create=False)
        missing = self._refuse(member, f"is a hardlink to {member.linkname!r}, which is not in this layer")
        if tdir is None:
            raise missing
        try:
            st = os.stat(target[-1], dir_fd=tdir, follow_symlinks=False)
        except FileNotFoundError:
            if "/".join(target) in self.devices:
                raise self._refuse(member, f"is a hardlink to {member.linkname!r}, a device node (refused)") from None
            raise missing from None
        if not stat.S_ISREG(st.st_mode):
            raise self._refuse(member, f"is a hardlink to {member.linkname!r}, which is not a regular file")
        tfd = os.dup(tdir)  # the walk below may evict tdir from the cache
        try:
            pfd = self._dir(parts[:-1], member, create=True)
            assert pfd is not None
            base = parts[-1]
            self._create(
                pfd, parts, lambda: os.link(target[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
            )
        finally:
            os.close(tfd)
        self.dir_mtimes.pop(parts, None)

    def _skip_device(self, member: tarfile.TarInfo, parts: tuple[str, ...]) -> None:
        """Skip a device node, after walking to its directory as if to create it: a symlink or
        a non-directory on the way is refused as for any entry.  Nothing is created."""
        self._dir(parts[:-1], member, create=False)
        self.devices_skipped += 1
        if len(self.devices) < _DEVICE_PATHS:
            self.devices.add("/".join(parts))

    def _whiteout(self, member: tarfile.TarInfo, parents: tuple[str, ...], base: str) -> None:
        if base == OPAQUE_MARKER:
            # Only this layer's directory is marked: entries unpacked from the same layer stay,
            # before or after the marker, as in Docker (OCI image-spec "Opaque Whiteout").
            fd = self._dir(parents, member, create=True)
            assert fd is not None
            os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
            return
        hidden = base[len(WHITEOUT_PREFIX):]
        if hidden.startswith(WHITEOUT_PREFIX) or hidden in ("", ".", ".."):
            raise self._refuse(member, "is a reserved or invalid whiteout name")
        pfd = self._dir(parents, member, create=True)
        assert pfd is not None
        path = (*parents, hidden)
        # overlayfs whiteout: a 0/0 character device hides *hidden* in the layers below.
        self._create(pfd, path, lambda: os.mknod(hidden, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd))
        self.dir_mtimes.pop(path, None)

    # -- helpers --------------------------------------------------------------------------

    def _metadata(self, fd: int, member: tarfile.TarInfo, regular: bool) -> None:
        os.fchown(fd, member.uid, member.gid)
        os.fchmod(fd, member.mode & 0o7777)
        for name, value in xattrs_to_apply(member.pax_headers, regular):
            try:
                os.setxattr(fd, name, value)
            except OSError as exc:
                # ENOTSUP: the filesystem does not do this namespace; EPERM: not on this file type.
                if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                    continue
                if exc.errno in (errno.EINVAL, errno.E2BIG, errno.ERANGE):
                    raise self._refuse(member, f"has an invalid xattr {name!r}: {exc.strerror}") from exc
                raise

    def _create(self, pfd: int, parts: tuple[str, ...], make: Callable[[], object]) -> None:
        """Run *make* (creates ``parts[-1]`` in *pfd*); if the name exists, remove it (last entry
        wins, as in Docker) and run it again."""
        try:
            make()
        except FileExistsError:
            self._remove(pfd, parts)
            make()

    def _remove(self, pfd: int, parts: tuple[str, ...]) -> None:
        base = parts[-1]
        try:
            os.unlink(base, dir_fd=pfd)
        except IsADirectoryError:
            n = len(parts)
            for key in [k for k in self.dirs if k[:n] == parts]:
                os.close(self.dirs.pop(key))
            shutil.rmtree(base, dir_fd=pfd)  # fd-based walk, never follows symlinks
        except FileNotFoundError:
            pass

    def _cache(self, parts: tuple[str, ...], fd: int) -> None:
        if len(self.dirs) >= _DIR_CACHE_SIZE:
            self.close()
        self.dirs[parts] = fd

    def _dir(self, parts: tuple[str, ...], member: tarfile.TarInfo, create: bool) -> int | None:
        """The fd of directory *parts* in this layer (cached; do not close), walking without
        following symlinks; missing components are created 0755 root-owned when *create*,
        else None is returned."""
        if not parts:
            return self.root_fd
        fd = self.dirs.get(parts)
        if fd is not None:
            return fd
        pfd = self._dir(parts[:-1], member, create)
        if pfd is None:
            return None
        pfd = os.dup(pfd)  # caching the child may evict the parent
        base = parts[-1]
        try:
            try:
                fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(base, 0o755, dir_fd=pfd)
                fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
                os.fchmod(fd, 0o755)  # whatever the umask
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                where = "/".join(parts)
                if stat.S_ISLNK(st.st_mode):
                    raise self._refuse(member, f"writes through a symlink ({where!r})") from None
                raise self._refuse(member, f"needs {where!r} to be a directory but it is not") from None
        finally:
            os.close(pfd)
        self._cache(parts, fd)
        return fd

    def _set_dir_mtimes(self) -> None:
        # Last, because creating children changed them.  Paths replaced since are skipped.
        for parts, mtime in self.dir_mtimes.items():
            if not parts:
                os.utime(self.root_fd, ns=(mtime, mtime))
                continue
            try:
                pfd = self._dir(parts[:-1], _NO_MEMBER, create=False)
                if pfd is not None:
                    os.utime(parts[-1], ns=(mtime, mtime), dir_fd=pfd, follow_symlinks=False)
            except (VerificationError, FileNotFoundError):
                continue


_NO_MEMBER = tarfile.TarInfo("")


def _mtime_ns(member: tarfile.TarInfo) -> int:
    # PAX mtimes may be fractional; clamp absurd values instead of failing on them.
    ns = int(member.mtime * 1_000_000_000) if isinstance(member.mtime, float) else int(member.mtime) * 1_000_000_000
    return max(-(1 << 62), min(ns, 1 << 62))


def _discard(stream: _TarStream, count: int) -> None:
    while count > 0:
        chunk = stream.read(min(CHUNK, count))
        if not chunk:
            return
        count -= len(chunk)
