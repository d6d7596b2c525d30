"""Content digests (OCI image-spec "descriptor" digests) and streaming verification."""

from __future__ import annotations

import re

from podrun.errors import LimitExceededError, VerificationError
from podrun.lean import Record

TYPE_CHECKING = False  # typing costs ~4 ms at start-up; annotations only (podrun.lean)
if TYPE_CHECKING:
    import hashlib
    from typing import BinaryIO, Final, Protocol
else:
    Protocol = object

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")

CHUNK = 1 << 20


class Digest(Record):
    """A validated ``algorithm:hex`` digest; only sha256 and sha512 are accepted."""

    algorithm: Final[str]
    hex: Final[str]

    __slots__ = ("algorithm", "hex")

    def __init__(self, algorithm: str, hex: str) -> None:
        self.algorithm = algorithm
        self.hex = hex

    def __lt__(self, other: Digest) -> bool:  # sorted() of digests: by algorithm, then hex
        return (self.algorithm, self.hex) < (other.algorithm, other.hex)

    @classmethod
    def parse(cls, text: str) -> Digest:
        """Parse and validate *text*; raises VerificationError naming it when malformed."""
        m = _DIGEST_RE.fullmatch(text)
        if not m:
            raise VerificationError(f"malformed digest {text!r}")
        alg, hexpart = m.group(1), m.group(2)
        if alg not in _ALGORITHMS:
            raise VerificationError(f"digest {text!r}: unsupported algorithm {alg!r}")
        if len(hexpart) != _ALGORITHMS[alg] or not re.fullmatch(r"[0-9a-f]+", hexpart):
            raise VerificationError(f"malformed digest {text!r}: bad {alg} hex")
        return cls(alg, hexpart)

    @classmethod
    def of_bytes(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        import hashlib  # on first use: loading OpenSSL costs ~3 ms that a warm run never needs

        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())

    def hasher(self) -> hashlib._Hash:
        import hashlib

        return hashlib.new(self.algorithm)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return self.hex[:12]


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


def copy_verified(
    src: BinaryIO, dst: _Writable, digest: Digest, size: int | None, what: str
) -> int:
    """Copy *src* to *dst* while hashing; stop reading at size+1 and fail on any mismatch.

    Returns the byte count.  When *size* is unknown the caller must bound the stream itself.
    """
    h = digest.hasher()
    total = 0
    limit = None if size is None else size + 1
    while True:
        want = CHUNK if limit is None else min(CHUNK, limit - total)
        if want <= 0:
            break
        chunk = src.read(want)
        if not chunk:
            break
        total += len(chunk)
        if size is not None and total > size:
            raise VerificationError(f"{what}: more data than the declared size {size}")
        h.update(chunk)
        dst.write(chunk)
    if size is not None and total != size:
        raise VerificationError(f"{what}: size {total} does not match the declared size {size}")
    if h.hexdigest() != digest.hex:
        raise VerificationError(f"{what}: content does not match digest {digest}")
    return total


def read_bounded(src: BinaryIO, limit: int, what: str) -> bytes:
    """Read all of *src*, refusing (LimitExceededError) more than *limit* bytes."""
    data = src.read(limit + 1)
    if len(data) > limit:
        raise LimitExceededError(f"{what}: limit exceeded ({limit} bytes)")
    return data
