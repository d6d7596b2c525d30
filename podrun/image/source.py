"""The interface every transport implements (``docker://``, ``oci:``, ``oci-archive:``,
``docker-archive:``).  The puller (``podrun.image.pull``) drives a source: it reads the top
manifest, picks a platform from an index, verifies every byte against its digest and stores it.
Sources only *deliver* bytes; they never decide what is trusted.
"""

from __future__ import annotations

from podrun.image.digest import Digest
from podrun.lean import dataclass

TYPE_CHECKING = False  # typing costs ~4 ms at start-up; annotations only (podrun.lean)
if TYPE_CHECKING:
    from typing import BinaryIO, Protocol
else:
    Protocol = object


@dataclass(frozen=True)
class ManifestBytes:
    """Raw manifest or index bytes, their declared media type and, when the transport knows
    it (a digest reference, an index descriptor), the digest they must match."""

    data: bytes
    media_type: str
    expected_digest: Digest | None = None


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
