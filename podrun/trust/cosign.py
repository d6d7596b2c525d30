"""Sigstore (cosign) signatures with public keys, as containers/image's ``sigstoreSigned``
verifies them: a base64 signature over the exact payload bytes, checked with the policy's PEM
public key(s) BEFORE the payload is parsed, then the payload (type "cosign container image
signature") parsed as strictly as simple signing's.

containers/image hashes with SHA-256 whatever the key (sigstore's LoadVerifier with
crypto.SHA256): ECDSA (any NIST curve) over SHA-256 with an ASN.1 DER signature, RSA PKCS#1 v1.5
over SHA-256, Ed25519 over the payload itself.  A key is named "sha256:" + the hex SHA-256 of
its SubjectPublicKeyInfo DER.

``cryptography`` is imported on first use.
"""

from __future__ import annotations

from podrun.errors import UsageError, VerificationError
from podrun.trust.openpgp import CREATOR, make_payload, parse_payload
from podrun.trust.signature import SignatureError, VerifiedSignature, key_sources

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

    from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

COSIGN_TYPE = "cosign container image signature"


class PublicKey:
    """A trusted sigstore public key and its name ("sha256:" + hex of the SPKI DER)."""

    key: Final[PublicKeyTypes]
    name: Final[str]

    __slots__ = ("key", "name")

    def __init__(self, key: PublicKeyTypes, name: str) -> None:
        self.key = key
        self.name = name

    def __repr__(self) -> str:
        return f"PublicKey({self.name})"


def load_public_keys(paths: list[str] | None = None, data: list[bytes] | bytes | None = None) -> list[PublicKey]:
    """The public keys of *paths* (``keyPath``/``keyPaths``) and *data* (``keyData``/
    ``keyDatas``): one PEM public key per source, its first PEM block as sigstore's
    UnmarshalPEMToPublicKey reads it (``PUBLIC KEY``, or ``RSA PUBLIC KEY`` in PKCS#1).  A
    source that does not hold a usable key is refused with its name."""
    blobs = [data] if isinstance(data, bytes) else (data or [])
    sources = key_sources(paths, blobs, "public key file")
    keys = [_load(name, blob) for name, blob in sources]
    if not keys:
        raise VerificationError("no sigstore public keys given")
    return keys


def _load(name: str, blob: bytes) -> PublicKey:
    import hashlib
    import re

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    # the first PEM block, text around it ignored (Go's pem.Decode)
    block = re.search(rb"-----BEGIN ([A-Z0-9 ]*)-----\r?\n.*?-----END \1-----", blob, re.S)
    if block is None:
        raise VerificationError(f"{name}: no PEM block")
    kind = block.group(1).decode()
    if kind not in ("PUBLIC KEY", "RSA PUBLIC KEY"):  # SubjectPublicKeyInfo, or PKCS#1 RSA
        raise VerificationError(f"{name}: a PEM {kind!r} block is not a public key")
    try:
        key = serialization.load_pem_public_key(block.group(0))
    except ValueError as e:
        raise VerificationError(f"{name}: not a public key: {e}") from None
    except Exception as e:  # cryptography's UnsupportedAlgorithm
        raise VerificationError(f"{name}: unsupported public key: {e}") from None
    usable = (
        isinstance(key, rsa.RSAPublicKey | ed25519.Ed25519PublicKey)
        or (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _GO_CURVES)
    )
    if not usable:  # DSA, X25519, Brainpool…: Go's x509 or sigstore's verifiers refuse them
        raise VerificationError(f"{name}: a {type(key).__name__} cannot verify sigstore signatures")
    spki = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return PublicKey(key, "sha256:" + hashlib.sha256(spki).hexdigest())


_GO_CURVES = ("secp224r1", "secp256r1", "secp384r1", "secp521r1")  # crypto/x509's named curves


def _verifies(key: PublicKeyTypes, signature: bytes, payload: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, payload)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def verify(payload: bytes, signature_b64: str, keys: list[PublicKey]) -> VerifiedSignature:
    """The claims of the cosign *payload* if *signature_b64* (the
    ``dev.cosignproject.cosign/signature`` annotation) is a signature over its exact bytes by one
    of *keys*; else SignatureError with a one-line reason.  The signature is checked before the
    payload is parsed; digest and identity are NOT compared here (the caller does)."""
    import base64
    import binascii

    try:
        # Go's StdEncoding: padding required; it skips CR and LF, nothing else
        signature = base64.b64decode(signature_b64.replace("\r", "").replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the sigstore signature is not valid base64") from None
    signer = next((k for k in keys if _verifies(k.key, signature, payload)), None)
    if signer is None:
        raise SignatureError("the sigstore signature was not made by a trusted key over this payload")
    digest, reference, created = parse_payload(payload, COSIGN_TYPE, optional_may_be_null=True)
    return VerifiedSignature(digest, reference, signer.name, created)


def payload(manifest_digest: str, docker_reference: str, creator: str = CREATOR, timestamp: int | None = None) -> bytes:
    """A cosign payload for *manifest_digest* as *docker_reference*, as containers/image writes it."""
    return make_payload(COSIGN_TYPE, manifest_digest, docker_reference, creator, timestamp)


def sign(payload: bytes, private_key_pem: bytes, password: bytes | None = None) -> str:
    """The base64 signature of *payload* with the PEM (PKCS#8 or traditional) private key, as
    containers/image verifies it (cosign's own encrypted key format is not read)."""
    import base64

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

    try:
        key = serialization.load_pem_private_key(private_key_pem, password)
    except (ValueError, TypeError) as e:
        raise UsageError(f"cannot read the sigstore private key: {e}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        signature = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(payload)
    else:
        raise UsageError(f"a {type(key).__name__} cannot make sigstore signatures")
    return base64.b64encode(signature).decode()
