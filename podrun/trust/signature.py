"""The records the trust modules share: a signature as found, and what a verified one says."""

from __future__ import annotations

from podrun.errors import VerificationError
from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

SIMPLE = "simple"  # an OpenPGP message whose literal data is the simple-signing payload
COSIGN = "cosign"  # a sigstore (cosign) payload with a detached base64 signature


KEY_FILE_LIMIT = 1 << 20  # a key file larger than this is not a key file


def key_sources(paths: list[str] | None, data: list[bytes], what: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each key source of a requirement: the files *paths* (``keyPath``/
    ``keyPaths``, read up to KEY_FILE_LIMIT) then the inline *data* (``keyData``/``keyDatas``).
    A file that cannot be read is refused with its name and *what* it should hold."""
    sources: list[tuple[str, bytes]] = []
    for path in paths or ():
        try:
            with open(path, "rb") as f:
                blob = f.read(KEY_FILE_LIMIT + 1)
        except OSError as e:
            raise VerificationError(f"{path}: cannot read the {what}: {e.strerror}") from None
        if len(blob) > KEY_FILE_LIMIT:
            raise VerificationError(f"{path}: {what} larger than {KEY_FILE_LIMIT} bytes")
        sources.append((path, blob))
    sources.extend(("keyData", blob) for blob in data)
    return sources


class SignatureError(VerificationError):
    """One signature does not verify (or says something else); exit status 250 when it decides
    the outcome.  Under a policy, one bad signature among others does no harm."""


class FoundSignature(Record):
    """A signature as a source found it, not yet verified."""

    kind: Final[str]  # SIMPLE or COSIGN
    blob: Final[bytes]  # SIMPLE: the OpenPGP message; COSIGN: the exact payload bytes
    cosign_signature: Final[str | None]  # COSIGN: the base64 signature annotation
    origin: Final[str]  # where it was found (a URL, "registry API", "sigstore attachment")

    __slots__ = ("kind", "blob", "cosign_signature", "origin")

    def __init__(self, kind: str, blob: bytes, origin: str, cosign_signature: str | None = None) -> None:
        self.kind = kind
        self.blob = blob
        self.origin = origin
        self.cosign_signature = cosign_signature


class VerifiedSignature(Record):
    """What a cryptographically valid signature by a trusted key claims; the caller still checks
    the manifest digest (against the exact bytes used) and the identity (signedIdentity)."""

    manifest_digest: Final[str]  # "sha256:…" as the payload says
    docker_reference: Final[str]  # critical.identity.docker-reference, as the payload says
    key: Final[str]  # OpenPGP: the primary key's fingerprint (upper-case hex); cosign: "sha256:" of the SPKI DER
    created: Final[int | None]  # optional.timestamp (seconds), when present

    __slots__ = ("manifest_digest", "docker_reference", "key", "created")

    def __init__(self, manifest_digest: str, docker_reference: str, key: str, created: int | None = None) -> None:
        self.manifest_digest = manifest_digest
        self.docker_reference = docker_reference
        self.key = key
        self.created = created
