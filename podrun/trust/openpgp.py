"""Simple signing (the "atomic container signature", containers-signature(5)): an OpenPGP
message whose literal data is a JSON payload naming a manifest digest and a docker reference.

Verification decides as containers/image's gpgme mechanism does (podman, skopeo): exactly one
signature, made by a key of the policy's keyring (a subkey's signature counts for its primary),
that key neither revoked nor expired *now* (gpg reports REVKEYSIG / EXPKEYSIG for a key revoked
or expired after it signed, and containers/image refuses both), then the payload parsed
strictly.  pysequoia checks the cryptography and the key's validity at signing time; the
checks at the time of use are ours, because sequoia (like gpgv) accepts a signature made
before a soft revocation or an expiry.  The digest and identity are returned, never compared
here: the caller checks them against the exact manifest bytes and the policy's signedIdentity.

Signing runs ``gpg --batch --sign`` as ``skopeo standalone-sign`` does (through gpgme), so a
signature podrun makes is one podman and skopeo accept.

pysequoia is imported on first use: importing this module costs nothing more than its own code
(the payload functions here are shared with ``cosign``).
"""

from __future__ import annotations

import json
import re
import time

from podrun import __version__
from podrun.errors import PodrunError, UsageError, VerificationError
from podrun.trust.signature import SignatureError, VerifiedSignature, key_sources

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from datetime import datetime, timedelta

    from pysequoia import Cert

SIMPLE_SIGNING_TYPE = "atomic container signature"
CREATOR = f"podrun {__version__}"

# go-digest's algorithms (digest.Parse in containers/image): lower-case hex of the exact length.
_DIGEST_HEX = {"sha256": 64, "sha384": 96, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")
_INT64 = 1 << 63


# ---- the payload (shared with cosign: same JSON, another "type") -----------------------------

def make_payload(signature_type: str, manifest_digest: str, docker_reference: str, creator: str,
                 timestamp: int | None) -> bytes:
    """The payload containers/image writes: compact JSON, keys sorted (Go's map order)."""
    if not _is_digest(manifest_digest):
        raise UsageError(f"cannot sign {manifest_digest!r}: not a manifest digest")
    if not docker_reference:
        raise UsageError("cannot sign an empty docker reference")
    optional: dict[str, object] = {"creator": creator}
    optional["timestamp"] = int(time.time()) if timestamp is None else timestamp
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": signature_type,
        },
        "optional": optional,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def check_digest(text: str) -> str:
    """*text* if it is a digest containers/image accepts (sha256, sha384, sha512; lower-case
    hex of the algorithm's length), else SignatureError: nothing unvalidated reaches a path."""
    if not _is_digest(text):
        raise SignatureError(f"signature payload: invalid docker-manifest-digest {text!r}")
    return text


def _is_digest(text: str) -> bool:
    algorithm, sep, hexpart = text.partition(":")
    return bool(sep) and len(hexpart) == _DIGEST_HEX.get(algorithm) and _HEX.fullmatch(hexpart) is not None


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise SignatureError(f"signature payload: duplicate key {key!r}")
        result[key] = value
    return result


def _refuse_constant(name: str) -> object:
    raise SignatureError(f"signature payload: {name} is not JSON")


def _exact_object(value: object, fields: Iterable[str], where: str) -> dict[str, object]:
    """*value* as an object with exactly *fields* (containers/image's
    ParanoidUnmarshalJSONObjectExactFields: none missing, none unknown)."""
    if not isinstance(value, dict):
        raise SignatureError(f"signature payload: {where} is not a JSON object")
    wanted = set(fields)
    unknown = sorted(set(value) - wanted)
    if unknown:
        raise SignatureError(f"signature payload: unknown field {where}.{unknown[0]}")
    missing = sorted(wanted - set(value))
    if missing:
        raise SignatureError(f"signature payload: missing field {where}.{missing[0]}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise SignatureError(f"signature payload: {where} is not a string")
    return value


def parse_payload(
    data: bytes, signature_type: str, *, optional_may_be_null: bool = False
) -> tuple[str, str, int | None]:
    """(manifest digest, docker reference, timestamp) of a payload, parsed as strictly as
    containers/image does: ``critical`` and ``optional`` both present and nothing else;
    ``critical`` exactly ``type`` (= *signature_type*), ``image`` (exactly
    ``docker-manifest-digest``, a valid digest) and ``identity`` (exactly ``docker-reference``);
    ``optional`` an object whose ``creator`` is a string and ``timestamp`` an integer, any other
    optional field ignored (cosign writes ``"optional": null``: *optional_may_be_null*).
    Stricter than Go's decoder where that is harmless: duplicate keys anywhere, invalid UTF-8,
    NaN, and null where a string or number belongs are refused."""
    try:
        text = data.decode("utf-8")
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise SignatureError("signature payload: not UTF-8") from None
    except RecursionError:
        raise SignatureError("signature payload: nested too deeply") from None
    except ValueError as e:  # json.JSONDecodeError
        raise SignatureError(f"signature payload: not JSON: {e}") from None
    top = _exact_object(document, ("critical", "optional"), "payload")
    timestamp = None
    optional = top["optional"]
    if not (optional is None and optional_may_be_null):
        if not isinstance(optional, dict):
            raise SignatureError("signature payload: optional is not a JSON object")
        if "creator" in optional:
            _string(optional["creator"], "optional.creator")
        if "timestamp" in optional:
            timestamp = _integer(optional["timestamp"], "optional.timestamp")
    critical = _exact_object(top["critical"], ("type", "image", "identity"), "critical")
    kind = _string(critical["type"], "critical.type")
    if kind != signature_type:
        raise SignatureError(f"signature payload: unrecognized signature type {kind!r}")
    image = _exact_object(critical["image"], ("docker-manifest-digest",), "critical.image")
    digest = check_digest(_string(image["docker-manifest-digest"], "critical.image.docker-manifest-digest"))
    identity = _exact_object(critical["identity"], ("docker-reference",), "critical.identity")
    reference = _string(identity["docker-reference"], "critical.identity.docker-reference")
    return digest, reference, timestamp


def _integer(value: object, where: str) -> int:
    # Go decodes it as a float64 and refuses a fractional value: 1e9 is an integer, 1.5 is not.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SignatureError(f"signature payload: {where} is not a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise SignatureError(f"signature payload: {where} is not an integer")
        value = int(value)
    if not -_INT64 <= value < _INT64:
        raise SignatureError(f"signature payload: {where} is out of range")
    return value


def payload(manifest_digest: str, docker_reference: str, creator: str = CREATOR, timestamp: int | None = None) -> bytes:
    """A simple-signing payload for *manifest_digest* as *docker_reference* (now, unless
    *timestamp* is given)."""
    return make_payload(SIMPLE_SIGNING_TYPE, manifest_digest, docker_reference, creator, timestamp)


# ---- keys ------------------------------------------------------------------------------------

class Keyring:
    """The public keys a ``signedBy`` requirement trusts: certificates by primary fingerprint,
    and every key (primary and subkeys, fingerprint and key ID, lower-case) to its primary."""

    __slots__ = ("certs", "owner")

    def __init__(self, certs: dict[str, Cert], owner: dict[str, str]) -> None:
        self.certs = certs
        self.owner = owner

    def lookup(self, handles: Iterable[str]) -> list[Cert]:
        """The certificates holding any of the keys *handles* name (sequoia's key store)."""
        found = {self.owner[h.lower()] for h in handles if h.lower() in self.owner}
        return [self.certs[fpr] for fpr in sorted(found)]


def load_keyring(paths: list[str] | None = None, data: bytes | None = None) -> Keyring:
    """The certificates of *paths* (``keyPath``/``keyPaths``) and *data* (``keyData``): armored
    or binary, one or many per source.  A source that does not parse, or holds no key, is
    refused with its name; so is an empty keyring (containers/image: "No public keys imported")."""
    import pysequoia

    sources = key_sources(paths, [] if data is None else [data], "key file")
    certs: dict[str, Cert] = {}
    for name, blob in sources:
        try:
            found = pysequoia.Cert.split_bytes(blob)
        except Exception as e:  # pysequoia raises RuntimeError, ValueError… with a Rust backtrace
            raise VerificationError(f"{name}: not an OpenPGP public key: {_first_line(e)}") from None
        if not found:
            raise VerificationError(f"{name}: holds no OpenPGP public key")
        for cert in found:
            fpr = cert.fingerprint.upper()
            certs[fpr] = certs[fpr].merge(cert) if fpr in certs else cert
    if not certs:
        raise VerificationError("no public keys in the keyring")
    owner: dict[str, str] = {}
    for fpr, cert in certs.items():
        for key_fpr, key_id in _keys(cert):
            owner[key_fpr] = owner[key_id] = fpr
    return Keyring(certs, owner)


def _keys(cert: Cert) -> list[tuple[str, str]]:
    """(fingerprint, key ID) of the primary key and every subkey of *cert*, lower-case."""
    from pysequoia.packet import PacketPile, Tag

    keys = []
    for packet in PacketPile.from_bytes(bytes(cert)):
        if packet.tag in (Tag.PublicKey, Tag.PublicSubkey, Tag.SecretKey, Tag.SecretSubkey):
            fpr, key_id = packet.fingerprint, packet.key_id
            assert fpr is not None and key_id is not None
            keys.append((fpr.lower(), key_id.lower()))
    return keys


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else error.__class__.__name__


# ---- verification ----------------------------------------------------------------------------

# The packets of a signed message (RFC 9580 §10.3) once compression is undone (_flatten):
# nothing else.
_MESSAGE_TAGS = ("OnePassSig", "Literal", "Signature", "Marker", "Padding")


def verify(blob: bytes, keyring: Keyring, now: float | None = None) -> VerifiedSignature:
    """The claims of the simple signature *blob* if a key of *keyring* made it and that key is
    valid *now*; else SignatureError with a one-line reason.  Digest and identity are NOT
    compared here (the caller does, against the exact manifest bytes)."""
    import pysequoia
    from pysequoia.packet import PacketPile, Tag

    blob = _flatten(blob)
    try:
        packets = list(PacketPile.from_bytes(blob))
    except Exception as e:
        raise SignatureError(f"not an OpenPGP message: {_first_line(e)}") from None
    allowed = [getattr(Tag, name) for name in _MESSAGE_TAGS if hasattr(Tag, name)]  # Tag is not hashable
    for packet in packets:
        if packet.tag not in allowed:
            raise SignatureError(f"not a signed OpenPGP message: it holds a {packet.tag!r} packet")
    signatures = [p for p in packets if p.tag == Tag.Signature]
    if len(signatures) != 1:
        # containers/image: "Unexpected GPG signature count"
        raise SignatureError(f"the message holds {len(signatures)} signatures, not exactly one")
    if sum(p.tag == Tag.Literal for p in packets) != 1:
        raise SignatureError("the message does not hold exactly one literal data packet")
    issuer = signatures[0].issuer_fingerprint or signatures[0].issuer_key_id
    if issuer is None or issuer.lower() not in keyring.owner:
        raise SignatureError(f"signed by key {(issuer or 'unnamed').upper()}, which the policy does not trust")
    try:
        result = pysequoia.verify(blob, keyring.lookup)
    except Exception as e:
        raise SignatureError(f"the signature by key {issuer.upper()} does not verify: {_first_line(e)}") from None
    if len(result.valid_sigs) != 1 or result.bytes is None:
        raise SignatureError(f"the signature by key {issuer.upper()} does not verify")
    valid = result.valid_sigs[0]
    primary = str(valid.certificate).upper()
    signing_key = str(valid.signing_key).lower()
    cert = keyring.certs.get(primary)
    if cert is None or keyring.owner.get(signing_key) != primary:
        raise SignatureError(f"signed by key {signing_key.upper()}, which the policy does not trust")
    try:
        _check_valid_now(cert, signing_key, time.time() if now is None else now)
    except SignatureError:
        raise
    except Exception as e:  # a certificate sequoia cannot evaluate now
        raise SignatureError(f"key {primary}: {_first_line(e)}") from None
    digest, reference, created = parse_payload(result.bytes, SIMPLE_SIGNING_TYPE)
    return VerifiedSignature(digest, reference, primary, created)


# What a compressed message may expand to: a payload is well under 1 KiB (a signature is read
# up to 4 MiB); sequoia, like gpg, would inflate a bzip2 bomb of a few KiB to gigabytes in memory.
EXPANSION_LIMIT = 4 << 20
_COMPRESSED = 8  # the Compressed Data packet's tag


def _flatten(blob: bytes) -> bytes:
    """*blob* in binary with each compressed packet replaced by the packets it holds, inflated
    here within EXPANSION_LIMIT (sequoia inflates nothing then; it also lacks bzip2, which gpg
    writes).  The signature covers the literal data, not its compression, so this is the same
    signed message.  Nested compression is refused: gpg never writes it."""
    data = _dearmor(blob) if blob.lstrip().startswith(b"-----BEGIN PGP") else blob
    out = []
    for tag, body, raw in _top_level_packets(data):
        if tag != _COMPRESSED:
            out.append(raw)
            continue
        inflated = _inflate(body)
        if any(inner == _COMPRESSED for inner, _, _ in _top_level_packets(inflated)):
            raise SignatureError("the message nests compressed data")
        out.append(inflated)
    return b"".join(out)


def _inflate(body: bytes) -> bytes:
    import bz2
    import zlib

    algorithm, data = (body[0], body[1:]) if body else (-1, b"")
    if algorithm == 0:  # uncompressed
        return data
    decompressor: zlib._Decompress | bz2.BZ2Decompressor
    if algorithm in (1, 2):  # ZIP (raw deflate), ZLIB
        decompressor = zlib.decompressobj(-15 if algorithm == 1 else 15)
    elif algorithm == 3:
        decompressor = bz2.BZ2Decompressor()
    else:
        raise SignatureError(f"the message uses unknown compression algorithm {algorithm}")
    try:
        out = decompressor.decompress(data, EXPANSION_LIMIT + 1)
    except (OSError, ValueError, zlib.error) as e:
        raise SignatureError(f"the message's compressed data is corrupt: {e}") from None
    if len(out) > EXPANSION_LIMIT:
        raise SignatureError(f"the message's compressed data expands past {EXPANSION_LIMIT} bytes")
    if not decompressor.eof:
        raise SignatureError("the message's compressed data is truncated")
    return out


def _top_level_packets(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(tag, body, the packet's bytes) of each packet of *data* (RFC 9580 §4.2: both header
    formats, partial lengths); what follows malformed framing is kept, for sequoia to refuse."""
    packets = []
    pos = 0
    while pos < len(data):
        start, first = pos, data[pos]
        if not first & 0x80:
            packets.append((-1, b"", data[pos:]))
            break
        if first & 0x40:  # new format
            tag, pos, chunks = first & 0x3F, pos + 1, []
            while True:
                length, pos, partial = _new_length(data, pos)
                chunks.append(data[pos:pos + length])
                pos += length
                if not partial:
                    break
            packets.append((tag, b"".join(chunks), data[start:pos]))
            continue
        tag, kind = (first >> 2) & 0x0F, first & 0x03
        if kind == 3:  # indeterminate: to the end (how gpg frames a compressed packet)
            packets.append((tag, data[pos + 1:], data[start:]))
            break
        size = 1 << kind
        length = int.from_bytes(data[pos + 1:pos + 1 + size], "big")
        pos += 1 + size + length
        packets.append((tag, data[pos - length:pos], data[start:pos]))
    return packets


def _new_length(data: bytes, pos: int) -> tuple[int, int, bool]:
    """(length, position after the length, partial?) of a new-format length at *pos*."""
    octet = data[pos] if pos < len(data) else 0
    if octet < 192:
        return octet, pos + 1, False
    if octet < 224:
        second = data[pos + 1] if pos + 1 < len(data) else 0
        return ((octet - 192) << 8) + second + 192, pos + 2, False
    if octet == 255:
        return int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5, False
    return 1 << (octet & 0x1F), pos + 1, True


def _dearmor(blob: bytes) -> bytes:
    """The binary form of an ASCII-armored message (headers and the CRC line dropped)."""
    import base64
    import binascii

    lines = blob.strip().splitlines()[1:]  # after the BEGIN line
    blank = next((i for i, line in enumerate(lines) if not line.strip()), None)
    if blank is not None and all(b":" in line for line in lines[:blank]):
        lines = lines[blank + 1:]  # armor headers (Version: …) end at a blank line
    body = []
    for line in lines:
        if line.startswith((b"=", b"-----END")):
            break
        body.append(line.strip())
    try:
        return base64.b64decode(b"".join(body), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the message's ASCII armor is not valid base64") from None


def _check_valid_now(cert: Cert, signing_key: str, now: float) -> None:
    """Refuse a certificate, or a signing subkey, revoked or expired at *now* (gpg's REVKEYSIG
    and EXPKEYSIG, which containers/image refuses), whatever the time of signing."""
    primary = cert.fingerprint.upper()
    if cert.is_revoked:
        raise SignatureError(f"key {primary} is revoked")
    expiration = cert.expiration
    if expiration is not None and expiration.timestamp() <= now:
        raise SignatureError(f"key {primary} expired at {expiration:%Y-%m-%d %H:%M:%S %Z}")
    if signing_key == primary.lower():
        return
    revoked, expires = _subkey_state(cert, signing_key)
    subkey = f"signing subkey {signing_key.upper()} of key {primary}"
    if revoked:
        raise SignatureError(f"{subkey} is revoked")
    if expires is not None and expires.timestamp() <= now:
        raise SignatureError(f"{subkey} expired at {expires:%Y-%m-%d %H:%M:%S %Z}")


def _subkey_state(cert: Cert, subkey: str) -> tuple[bool, datetime | None]:
    """(revoked, expiry) of *subkey* of *cert*: any revocation of it (the keyring is the
    policy's trusted input; a revocation there is honoured whatever its reason and time), and
    the expiry its newest binding signature gives."""
    from pysequoia.packet import PacketPile, SignatureType, Tag

    in_subkey, revoked = False, False
    created: datetime | None = None
    binding: tuple[datetime, timedelta | None] | None = None
    for packet in PacketPile.from_bytes(bytes(cert)):
        if packet.tag != Tag.Signature:
            is_subkey = packet.tag in (Tag.PublicSubkey, Tag.SecretSubkey)
            in_subkey = is_subkey and (packet.fingerprint or "").lower() == subkey
            created = packet.key_created if in_subkey else created
            continue
        made = packet.signature_created
        if not in_subkey or made is None:
            continue
        if packet.signature_type == SignatureType.SubkeyRevocation:
            revoked = True
        elif packet.signature_type == SignatureType.SubkeyBinding and (binding is None or made > binding[0]):
            binding = (made, packet.key_validity_period)
    if created is None or binding is None:
        raise SignatureError(f"signing subkey {subkey.upper()} is not bound to key {cert.fingerprint.upper()}")
    validity = binding[1]
    return revoked, None if validity is None else created + validity


# ---- signing ---------------------------------------------------------------------------------

def sign(data: bytes, key: str, gnupg_home: str | None = None, passphrase_file: str | None = None) -> bytes:
    """An OpenPGP message signing *data* with the secret key *key* (a fingerprint, as
    ``--sign-by``) from *gnupg_home* (else gpg's default home): binary, not armored, gpg's
    choice of signing subkey, as ``skopeo standalone-sign`` and ``podman image sign`` make it."""
    import subprocess

    if not key or key.startswith("-") or any(c.isspace() or not c.isprintable() for c in key):
        raise PodrunError(f"signing key {key!r}: not a key identity")
    cmd = ["gpg", "--batch", "--no-tty", "--sign", "--local-user", key, "--output", "-"]
    if gnupg_home is not None:
        cmd[1:1] = ["--homedir", gnupg_home]
    if passphrase_file is not None:
        cmd[1:1] = ["--pinentry-mode", "loopback", "--passphrase-file", passphrase_file]
    try:
        done = subprocess.run(cmd, input=data, capture_output=True, check=False)
    except OSError as e:
        raise PodrunError(f"cannot run gpg to sign: {e.strerror}") from None
    if done.returncode != 0 or not done.stdout:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise PodrunError(f"gpg could not sign with key {key}: {reason}")
    return done.stdout
