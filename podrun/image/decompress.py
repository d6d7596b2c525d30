"""Decompressing readers for layer blobs: gzip (ISA-L when available), zstd and plain tar.

The compression is detected from the magic bytes and checked against what the media type
declares, so a blob cannot claim one format and feed a decoder another.
"""

from __future__ import annotations

import io
from typing import BinaryIO, cast

from podrun.errors import VerificationError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def sniff(head: bytes) -> str:
    """Compression of a stream from its first bytes: ``gzip``, ``zstd`` or ``none``."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    return "none"


def open_decompressed(raw: BinaryIO, declared: str | None, what: str) -> BinaryIO:
    """Wrap *raw* in a decompressor.  *declared* is the media type's compression, or None
    to trust the magic bytes (local archives whose media type says nothing)."""
    buffered = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # type: ignore[arg-type]
    actual = sniff(buffered.peek(4)[:4])
    if declared is not None and actual != declared and not (declared == "none" and actual == "none"):
        raise VerificationError(f"{what}: media type says {declared} but content is {actual}")
    if actual == "gzip":
        try:
            from isal import igzip

            return cast(BinaryIO, igzip.IGzipFile(fileobj=buffered, mode="rb"))  # type: ignore[no-untyped-call]
        except ImportError:  # pragma: no cover - isal is a pinned dependency
            import gzip

            return cast(BinaryIO, gzip.GzipFile(fileobj=buffered, mode="rb"))
    if actual == "zstd":
        import zstandard

        return cast(BinaryIO, zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True))
    return buffered
