"""Local OCI image layouts: ``oci:DIR[:REF]`` and ``oci-archive:FILE[:REF]`` (containers-transports(5)).

Both inputs are untrusted (SECURITY-TESTS case 9).  A layout directory is walked with
fd-relative opens that never follow a symlink *inside* it (only the directory the user named
may itself be a symlink), and only regular files are ever opened, so a ``blobs/`` that points
at ``/etc`` or a blob that is a FIFO or a device is refused before any read could block.
An archive is never extracted: its tar headers are indexed once and each blob is read in
place with ``pread`` (thread-safe, so the puller can fetch layers in parallel), only from
regular members.

Opening a layout reads ``oci-layout`` and ``index.json`` and nothing else; parsing them and
selecting the image (``load``) may wait, so that a reuse of the stored image (podrun.image.api)
costs no more than reading and hashing them and the manifest they name: the module imports
neither ``tarfile`` nor the manifest models until they are needed (podrun.lean says why).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import posixpath
import stat

from podrun import fsutil
from podrun.errors import (
    FetchError,
    LimitExceededError,
    NotFoundError,
    PodrunError,
    UsageError,
    VerificationError,
)
from podrun.image import mediatypes as mt
from podrun.image.digest import Digest, read_bounded
from podrun.image.limits import DEFAULT_LIMITS
from podrun.image.reference import parse_docker_name
from podrun.image.source import ManifestBytes, content_matches, reuse_key

TYPE_CHECKING = False  # typing costs ~4 ms at start-up; annotations only (podrun.lean)
if TYPE_CHECKING:
    import tarfile
    from collections.abc import Iterator
    from typing import BinaryIO

    from podrun.image.manifest import Descriptor, Index

REF_ANNOTATION = "org.opencontainers.image.ref.name"

MAX_ARCHIVE_MEMBERS = 100_000
"""Entries indexed in one image archive; a real one holds a few per layer."""

MAX_LINK_HOPS = 8


def _expanded(text: str) -> str | None:
    """*text* parsed as a Docker name, as ``registry/repo:tag``; None when it is not one."""
    try:
        ref = parse_docker_name(text)
    except UsageError:
        return None
    if ref.digest is not None or ref.tag is None:
        return None
    return f"{ref.name}:{ref.tag}"


def docker_name(text: str) -> str | None:
    """``registry/repo:tag`` for a NAME:TAG-looking *text*, None for a plain tag or junk.

    Plain tags (``latest``, ``v1``) name no image, so the caller decides the name."""
    if ":" not in text and "/" not in text:
        return None
    return _expanded(text)


def ref_matches(wanted: str, value: str) -> bool:
    """Whether the user's REF names the image recorded as *value* (a ref.name annotation or
    a RepoTag): equal text, or the same image once both are expanded the way Docker does
    (``busybox`` == ``docker.io/library/busybox:latest``; ``demo:latest`` also matches
    podman's ``localhost/demo:latest``)."""
    if wanted == value:
        return True
    have = docker_name(value)
    if have is None:
        return False
    if _expanded(wanted) == have:
        return True
    return "/" not in wanted and _expanded("localhost/" + wanted) == have


def load_json(data: bytes, what: str) -> object:
    """Parse untrusted JSON; VerificationError naming *what* when it is not JSON."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"{what}: not valid JSON ({exc})") from None


# --------------------------------------------------------------------------- tar archives


class _MemberReader(io.RawIOBase):
    """The bytes of one tar member, read with ``pread`` so readers share no file position."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd, self._offset, self._remaining = fd, offset, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._remaining)
        if want <= 0:
            return 0
        data = os.pread(self._fd, want, self._offset)
        n = len(data)
        buffer[:n] = data
        self._offset += n
        # A truncated archive ends the member early; the caller's size check reports it.
        self._remaining = self._remaining - n if n else 0
        return n


def _clean_member_name(name: str, archive: str) -> str:
    """A member name made relative and canonical; refuses escapes (SECURITY-TESTS case 9)."""
    if "\0" in name:
        raise VerificationError(f"{archive}: entry {name!r} contains a NUL byte")
    if name.startswith("/"):
        raise VerificationError(f"{archive}: entry {name!r} is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise VerificationError(f"{archive}: entry {name!r} contains '..'")
    return "/".join(parts)


class TarArchive:
    """An image archive opened for random access: its members indexed, nothing extracted."""

    def __init__(self, path: str, what: str) -> None:
        self.what = what
        self.members: dict[str, tarfile.TarInfo] = {}
        self._fd = open_user_file(path, what)
        try:
            self._index()
        except BaseException:
            os.close(self._fd)
            raise

    def _index(self) -> None:
        import tarfile

        from podrun.image.decompress import sniff

        head = os.pread(self._fd, 4, 0)
        if sniff(head) != "none":
            raise VerificationError(f"{self.what} is a compressed file, not a tar archive")
        raw = os.fdopen(self._fd, "rb", closefd=False)
        try:
            tf = tarfile.open(fileobj=raw, mode="r:")
        except (tarfile.TarError, OSError) as exc:
            raw.close()
            raise VerificationError(f"{self.what} is not a tar archive ({exc})") from None
        count = 0
        try:
            while True:
                try:
                    info = tf.next()
                except (tarfile.TarError, UnicodeDecodeError) as exc:
                    raise VerificationError(f"{self.what}: damaged tar archive ({exc})") from None
                if info is None:
                    break
                count += 1
                if count > MAX_ARCHIVE_MEMBERS:
                    raise LimitExceededError(
                        f"{self.what}: more than {MAX_ARCHIVE_MEMBERS} entries, limit exceeded"
                    )
                name = _clean_member_name(info.name, self.what)
                if not name or info.isdir():
                    continue
                if name in self.members:
                    raise VerificationError(f"{self.what}: duplicate entry {name!r}")
                self.members[name] = info
        finally:
            tf.close()
            raw.close()

    def _resolve(self, name: str, follow_symlinks: bool) -> tarfile.TarInfo:
        """The regular member *name* stands for; hardlinks (and, when asked, symlinks) are
        followed by name inside the archive only, never through the host filesystem."""
        current = name
        for _ in range(MAX_LINK_HOPS):
            info = self.members.get(current)
            if info is None:
                raise NotFoundError(f"{self.what}: no entry {current!r}")
            if info.isreg():
                if info.sparse is not None:
                    raise VerificationError(f"{self.what}: entry {current!r} is a sparse file")
                return info
            if info.islnk():
                current = _clean_member_name(info.linkname, self.what)
            elif info.issym() and follow_symlinks:
                target = info.linkname
                if target.startswith("/") or "\0" in target:
                    raise VerificationError(
                        f"{self.what}: entry {current!r} links outside the archive ({target!r})"
                    )
                joined = posixpath.normpath(posixpath.join(posixpath.dirname(current), target))
                if joined == ".." or joined.startswith("../"):
                    raise VerificationError(
                        f"{self.what}: entry {current!r} links outside the archive ({target!r})"
                    )
                current = joined
            else:
                raise VerificationError(f"{self.what}: entry {current!r} is not a regular file")
        raise VerificationError(f"{self.what}: entry {name!r}: too many levels of links")

    def has(self, name: str) -> bool:
        """Whether the archive holds an entry (of any type) called *name*."""
        return name in self.members

    def size(self, name: str, *, follow_symlinks: bool = False) -> int:
        """The byte size of regular member *name*."""
        return self._resolve(name, follow_symlinks).size

    def open(self, name: str, *, follow_symlinks: bool = False) -> BinaryIO:
        """A bounded stream of regular member *name*'s bytes (NotFoundError when absent)."""
        info = self._resolve(name, follow_symlinks)
        return io.BufferedReader(_MemberReader(self._fd, info.offset_data, info.size))

    def read(self, name: str, limit: int) -> bytes:
        """All of member *name*, refusing (LimitExceededError) more than *limit* bytes."""
        info = self._resolve(name, False)
        if info.size > limit:
            raise LimitExceededError(f"{self.what}: {name} limit exceeded ({limit} bytes)")
        with self.open(name) as f:
            return read_bounded(f, limit, f"{self.what}: {name}")

    def close(self) -> None:
        """Close the archive file (streams opened from it stop working)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def open_user_file(path: str, what: str) -> int:
    """Open the archive the user named.  The name itself may be a symlink (the user chose
    it), but what it resolves to must be a regular file: a FIFO or device is refused before
    any read could block on it."""
    try:
        return fsutil.open_regular(os.path.realpath(path))
    except FileNotFoundError:
        raise NotFoundError(f"{what}: {path} does not exist") from None
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ELOOP):
            raise VerificationError(f"{what}: {path} is not a regular file") from None
        raise FetchError(f"{what}: cannot open {path}: {exc.strerror}") from None


# --------------------------------------------------------------------------- OCI layouts


class _OCIBase:
    """What ``oci:`` and ``oci-archive:`` share: reading an image layout through ``_open``.

    The subclass's constructor opens the layout and calls ``_read_documents`` (then ``load``
    unless deferred); ``load`` parses what was read and selects the image REF names."""

    description: str
    default_name: str | None

    def __init__(self, transport: str, path: str, ref: str | None) -> None:
        self.description = f"{transport}:{path}" + (f":{ref}" if ref else "")
        self.default_name = None
        self._ref = ref
        self._marker = self._index_data = b""
        self._loaded = False
        self._selected: Descriptor | None = None
        self._platform_index: bytes | None = None  # index.json itself, when it is the image
        self._read_by_digest: list[tuple[Digest, int]] = []

    # Subclasses: open a file of the layout by its relative path ("index.json", "blobs/…").
    def _open(self, relpath: str) -> BinaryIO:
        raise NotImplementedError

    def _read_file(self, relpath: str, limit: int) -> bytes:
        with self._open(relpath) as f:
            return read_bounded(f, limit, f"{self.description}: {relpath}")

    def _read_documents(self) -> None:
        """Read and check ``oci-layout``, read ``index.json``: all that decides which image
        REF names."""
        limit = DEFAULT_LIMITS.manifest_bytes
        self._marker = self._read_file("oci-layout", limit)
        marker = load_json(self._marker, f"{self.description}: oci-layout")
        if not isinstance(marker, dict) or not isinstance(marker.get("imageLayoutVersion"), str):
            raise VerificationError(f"{self.description}: oci-layout has no imageLayoutVersion")
        self._index_data = self._read_file("index.json", limit)

    def load(self) -> None:
        """Parse ``index.json`` and select the descriptor REF names."""
        if self._loaded:
            return
        from podrun.image.manifest import Index, parse_manifest_or_index

        data = self._index_data
        what = f"{self.description}: index.json"
        index = parse_manifest_or_index(ManifestBytes(data, ""), what)
        if not isinstance(index, Index):
            raise VerificationError(f"{what}: not an image index")
        if self._ref is None and len(index.manifests) > 1 and all(
            REF_ANNOTATION not in dict(d.annotations) and d.platform is not None for d in index.manifests
        ):
            # Tools such as crane write one multi-platform image as index.json listing its
            # per-platform manifests directly: index.json is then the image index itself.
            self._platform_index = data
        else:
            self._selected = self._select(index)
            name = dict(self._selected.annotations).get(REF_ANNOTATION)
            self.default_name = docker_name(name) if name else None
        self._loaded = True

    def reuse_key(self, platform: str) -> str | None:
        """A digest of ``oci-layout``, ``index.json`` as read, REF and *platform*: with the
        documents ``reuse_checks`` names, all the selection of the image depends on."""
        return reuse_key("oci-layout", self._ref or "", platform, self._marker, self._index_data)

    def reuse_checks(self) -> tuple[tuple[Digest, int], ...]:
        """The manifests (and indexes) read by digest since the layout was opened."""
        return tuple(self._read_by_digest)

    def confirm(self, digest: Digest, size: int) -> bool:
        """Whether blob *digest* is a regular file of *size* bytes with that content."""
        try:
            data = self._read_file(self._blob_path(digest), size)
        except PodrunError:
            return False
        return len(data) == size and content_matches(data, digest)

    def _select(self, index: Index) -> Descriptor:
        def ref_of(d: Descriptor) -> str | None:
            return dict(d.annotations).get(REF_ANNOTATION)

        refs = sorted({r for d in index.manifests if (r := ref_of(d)) is not None})
        if self._ref is None:
            if len(index.manifests) == 1:
                return index.manifests[0]
            if not index.manifests:
                raise NotFoundError(f"{self.description}: the layout holds no image")
            raise UsageError(
                f"{self.description}: holds {len(index.manifests)} images, name one "
                f"(refs: {', '.join(refs) or 'none'})",
                hint=f"use {self.description}:REF",
            )
        exact = [d for d in index.manifests if ref_of(d) == self._ref]
        found = exact or [d for d in index.manifests if (r := ref_of(d)) and ref_matches(self._ref, r)]
        if not found:
            raise NotFoundError(
                f"{self.description}: no image with ref {self._ref!r} (refs: {', '.join(refs) or 'none'})"
            )
        if len({d.digest for d in found}) > 1:
            raise UsageError(f"{self.description}: ref {self._ref!r} names more than one image")
        return found[0]

    def _read(self, deferred: bool) -> None:
        """The constructors' last step: read the documents (and load unless *deferred*),
        closing the source on any failure."""
        try:
            self._read_documents()
            if not deferred:
                self.load()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        raise NotImplementedError

    def _blob_path(self, digest: Digest) -> str:
        return f"blobs/{digest.algorithm}/{digest.hex}"

    def top_manifest(self, limit: int) -> ManifestBytes:
        """The manifest (or index) REF selects, with the digest its descriptor declares."""
        self.load()
        if self._platform_index is not None:
            if len(self._platform_index) > limit:
                raise LimitExceededError(f"{self.description}: index.json limit exceeded ({limit} bytes)")
            return ManifestBytes(self._platform_index, mt.OCI_INDEX, None)
        desc = self._selected
        assert desc is not None
        if desc.size > limit:
            raise LimitExceededError(f"{self.description}: manifest {desc.digest} limit exceeded ({desc.size} bytes)")
        data = self._read_file(self._blob_path(desc.digest), limit)
        if len(data) != desc.size:
            raise VerificationError(
                f"{self.description}: manifest {desc.digest} is {len(data)} bytes, index says {desc.size}"
            )
        self._read_by_digest.append((desc.digest, desc.size))
        return ManifestBytes(data, desc.media_type, desc.digest)

    def manifest_by_digest(self, digest: Digest, limit: int) -> ManifestBytes:
        """A manifest blob by digest; its media type is the one the document declares."""
        data = self._read_file(self._blob_path(digest), limit)
        doc = load_json(data, f"{self.description}: manifest {digest}")
        media_type = doc.get("mediaType") if isinstance(doc, dict) else None
        self._read_by_digest.append((digest, len(data)))
        return ManifestBytes(data, media_type if isinstance(media_type, str) else "", digest)

    def open_blob(self, digest: Digest, size: int) -> BinaryIO:
        """A stream of blob *digest*; the caller verifies digest and size."""
        return self._open(self._blob_path(digest))


class OCILayoutSource(_OCIBase):
    """``oci:DIR[:REF]``: an OCI image layout directory, as skopeo, umoci and podman write."""

    def __init__(self, path: str, ref: str | None, *, deferred: bool = False) -> None:
        """Open the layout; *deferred*: leave its parsing to ``load`` (or the first read)."""
        super().__init__("oci", path, ref)
        self._path = path
        try:
            # The directory the user named may be a symlink; nothing beneath it is followed.
            self._root = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"{self.description}: directory {path} does not exist") from None
        except NotADirectoryError:
            raise VerificationError(f"{self.description}: {path} is not a directory") from None
        except OSError as exc:
            raise FetchError(f"{self.description}: cannot open {path}: {exc.strerror}") from None
        self._read(deferred)

    def _open(self, relpath: str) -> BinaryIO:
        parent, _, name = relpath.rpartition("/")
        with self._errors(relpath, "a parent directory is a symlink or not a directory"):
            dir_fd = fsutil.open_dir_beneath(self._root, parent) if parent else os.dup(self._root)
        try:
            with self._errors(relpath, "is not a regular file"):
                # lstat first: a device or FIFO is refused without even opening it.
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    raise OSError(errno.EINVAL, "not a regular file", relpath)
                fd = fsutil.open_regular(name, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
        return os.fdopen(fd, "rb")

    @contextlib.contextmanager
    def _errors(self, relpath: str, refusal: str) -> Iterator[None]:
        """Map OSError to podrun errors; *refusal* says what ELOOP/ENOTDIR/EINVAL mean here."""
        try:
            yield
        except FileNotFoundError:
            raise NotFoundError(f"{self.description}: {relpath} does not exist") from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EINVAL, errno.EPERM):
                sep = " " if refusal.startswith("is ") else ": "
                raise VerificationError(f"{self.description}: {relpath}{sep}{refusal}") from None
            raise FetchError(f"{self.description}: cannot read {relpath}: {exc.strerror}") from None

    def close(self) -> None:
        """Close the layout directory."""
        if getattr(self, "_root", -1) >= 0:
            os.close(self._root)
            self._root = -1


class OCIArchiveSource(_OCIBase):
    """``oci-archive:FILE[:REF]``: a tar of an OCI image layout, as skopeo and podman write."""

    def __init__(self, path: str, ref: str | None, *, deferred: bool = False) -> None:
        """Open and index the archive; *deferred*: leave its parsing to ``load``."""
        super().__init__("oci-archive", path, ref)
        self._archive = TarArchive(path, self.description)
        self._read(deferred)

    def _open(self, relpath: str) -> BinaryIO:
        if not self._archive.has(relpath):
            raise NotFoundError(f"{self.description}: {relpath} does not exist")
        return self._archive.open(relpath)

    def close(self) -> None:
        """Close the archive file."""
        self._archive.close()

