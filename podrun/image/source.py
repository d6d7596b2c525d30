"""The interface every transport implements (``docker://``, ``oci:``, ``oci-archive:``,
``docker-archive:``).  The puller (``podrun.image.pull``) drives a source: it reads the top
manifest, picks a platform from an index, verifies every byte against its digest and stores it.
Sources only *deliver* bytes; they never decide what is trusted.

Local sources (``LocalSource``) also say which documents decide the image they name, so that
``podrun.image.api`` can reuse a stored image when those documents are unchanged (docs/store.md,
"Reuse of local sources"): content is compared by digest, never by file times.
"""

from __future__ import annotations

from podrun.image.digest import Digest
from podrun.lean import Record

TYPE_CHECKING = False  # typing costs ~4 ms at start-up; annotations only (podrun.lean)
if TYPE_CHECKING:
    from typing import BinaryIO, Final, Protocol
else:
    Protocol = object


class ManifestBytes(Record):
    """Raw manifest or index bytes, their declared media type and, when the transport knows
    it (a digest reference, an index descriptor), the digest they must match."""

    data: Final[bytes]
    media_type: Final[str]
    expected_digest: Final[Digest | None]

    __slots__ = ("data", "media_type", "expected_digest")

    def __init__(self, data: bytes, media_type: str, expected_digest: Digest | None = None) -> None:
        self.data = data
        self.media_type = media_type
        self.expected_digest = expected_digest


class ImageSource(Protocol):
    """One opened image reference."""

    description: str
    """Human name for messages, e.g. ``docker://127.0.0.1:5000/demo:latest``."""

    default_name: str | None
    """``NAME:TAG`` to record in the store for this image, or None when the input names none."""

    def top_manifest(self, limit: int) -> ManifestBytes:
        """The manifest or index the reference names (at most *limit* bytes, else
        LimitExceededError)."""
        ...

    def manifest_by_digest(self, digest: Digest, limit: int) -> ManifestBytes:
        """A manifest named by digest, e.g. one picked from an index."""
        ...

    def open_blob(self, digest: Digest, size: int) -> BinaryIO:
        """A stream of the blob's bytes; the caller verifies digest and size while reading."""
        ...

    def close(self) -> None:
        """Release connections and files."""
        ...


class LocalSource(ImageSource, Protocol):
    """A source on this machine (``oci:``, ``oci-archive:``, ``docker-archive:``), opened
    without parsing more than it must: ``load`` checks and selects, as the full read needs."""

    def load(self) -> None:
        """Parse what the constructor read and select the image (idempotent); raises the
        source's own errors (no image with that ref, not an index, …)."""
        ...

    def reuse_key(self, platform: str) -> str | None:
        """A digest of everything that decides which image the source names for *platform*
        (documents as read, the REF), or None when it cannot be made cheaply."""
        ...

    def reuse_checks(self) -> tuple[tuple[Digest, int], ...]:
        """The documents a finished pull read by digest (``(digest, size)``), which a reuse
        reads and verifies again (e.g. the manifest an index names)."""
        ...

    def confirm(self, digest: Digest, size: int) -> bool:
        """Whether the source still holds exactly *size* bytes hashing to *digest*."""
        ...


def reuse_key(*parts: str | bytes) -> str:
    """The sha256 hex of *parts*, each length-prefixed (no two part lists give one input)."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(b"%d:" % len(data))
        h.update(data)
    return h.hexdigest()


def content_matches(data: bytes, digest: Digest) -> bool:
    """Whether *data* hashes to *digest*."""
    import hashlib

    return hashlib.new(digest.algorithm, data).hexdigest() == digest.hex
