"""trust.openpgp without gpg: the simple-signing payload parsed as strictly as containers/image
does (each malformed case refused), payloads podrun writes, keyrings, and verification of
messages signed in-process with pysequoia keys.  tests/integration/test_trust_keys.py has the
real gpg keys (subkeys, revocations, expiry) and skopeo."""

from __future__ import annotations

import json
from pathlib import Path

import pysequoia
import pytest

from podrun.errors import UsageError, VerificationError
from podrun.trust import openpgp
from podrun.trust.signature import SignatureError, VerifiedSignature

DIGEST = "sha256:" + "0123456789abcdef" * 4
REF = "registry.example.com:5000/ns/app:1.0"
TYPE = "atomic container signature"


def doc(**changes: object) -> dict[str, object]:
    """A valid payload document; *changes* replace its parts (``critical``, ``optional``)."""
    document: dict[str, object] = {
        "critical": {
            "type": TYPE,
            "image": {"docker-manifest-digest": DIGEST},
            "identity": {"docker-reference": REF},
        },
        "optional": {"creator": "atomic 2.0.0", "timestamp": 1700000000},
    }
    document.update(changes)
    return document


def critical(**changes: object) -> dict[str, object]:
    part: dict[str, object] = {
        "type": TYPE, "image": {"docker-manifest-digest": DIGEST}, "identity": {"docker-reference": REF},
    }
    part.update(changes)
    return part


def parse(data: bytes) -> tuple[str, str, int | None]:
    return openpgp.parse_payload(data, TYPE)


def test_a_valid_payload_parses() -> None:
    assert parse(json.dumps(doc()).encode()) == (DIGEST, REF, 1700000000)


@pytest.mark.parametrize("optional", [
    {},                                        # nothing optional
    {"creator": "x"},
    {"timestamp": 1e9},                        # Go decodes a float64: integral is fine
    {"unknown": {"nested": [1, 2]}},           # unknown optional fields are ignored
])
def test_optional_fields_are_optional(optional: dict[str, object]) -> None:
    digest, reference, _ = parse(json.dumps(doc(optional=optional)).encode())
    assert (digest, reference) == (DIGEST, REF)


@pytest.mark.parametrize("digest", [
    "sha256:" + "a" * 64,
    "sha384:" + "b" * 96,
    "sha512:" + "c" * 128,
])
def test_digests_containers_image_accepts(digest: str) -> None:
    data = json.dumps(doc(critical=critical(image={"docker-manifest-digest": digest}))).encode()
    assert parse(data)[0] == digest


MALFORMED: dict[str, bytes | object] = {
    "not json": b"{critical",
    "not utf-8": b'{"critical": "\xff"}',
    "utf-16": json.dumps(doc()).encode("utf-16"),
    "BOM": b"\xef\xbb\xbf" + json.dumps(doc()).encode(),
    "trailing data": json.dumps(doc()).encode() + b" {}",
    "NaN": json.dumps(doc(optional={"timestamp": float("nan")})).encode(),
    "an array": [doc()],
    "a string": "critical",
    "null": None,
    "no critical": {"optional": {}},
    "no optional": {"critical": critical()},
    "optional null (cosign only)": doc(optional=None),
    "optional a list": doc(optional=[]),
    "unknown top-level field": {**doc(), "extra": 1},
    "critical null": doc(critical=None),
    "critical a list": doc(critical=[critical()]),
    "critical: unknown field": doc(critical=critical(extra="x")),
    "critical: no type": doc(critical={"image": {"docker-manifest-digest": DIGEST}, "identity": {"docker-reference": REF}}),
    "critical: no image": doc(critical={"type": TYPE, "identity": {"docker-reference": REF}}),
    "critical: no identity": doc(critical={"type": TYPE, "image": {"docker-manifest-digest": DIGEST}}),
    "type: another": doc(critical=critical(type="cosign container image signature")),
    "type: case": doc(critical=critical(type="Atomic Container Signature")),
    "type: not a string": doc(critical=critical(type=1)),
    "type: null": doc(critical=critical(type=None)),
    "image: a string": doc(critical=critical(image=DIGEST)),
    "image: unknown field": doc(critical=critical(image={"docker-manifest-digest": DIGEST, "x": 1})),
    "image: no digest": doc(critical=critical(image={})),
    "image: key case": doc(critical=critical(image={"Docker-Manifest-Digest": DIGEST})),
    "digest: not a string": doc(critical=critical(image={"docker-manifest-digest": 5})),
    "digest: null": doc(critical=critical(image={"docker-manifest-digest": None})),
    "digest: empty": doc(critical=critical(image={"docker-manifest-digest": ""})),
    "digest: no algorithm": doc(critical=critical(image={"docker-manifest-digest": "a" * 64})),
    "digest: unknown algorithm": doc(critical=critical(image={"docker-manifest-digest": "md5:" + "a" * 32})),
    "digest: upper-case hex": doc(critical=critical(image={"docker-manifest-digest": "sha256:" + "A" * 64})),
    "digest: short": doc(critical=critical(image={"docker-manifest-digest": "sha256:" + "a" * 63})),
    "digest: long": doc(critical=critical(image={"docker-manifest-digest": "sha256:" + "a" * 65})),
    "digest: a path (CVE-2024-3727)": doc(critical=critical(image={"docker-manifest-digest": "sha256:../../../../etc/passwd"})),
    "digest: trailing newline": doc(critical=critical(image={"docker-manifest-digest": DIGEST + "\n"})),
    "digest: sha256 length, sha512 name": doc(critical=critical(image={"docker-manifest-digest": "sha512:" + "a" * 64})),
    "identity: a string": doc(critical=critical(identity=REF)),
    "identity: unknown field": doc(critical=critical(identity={"docker-reference": REF, "x": 1})),
    "identity: no reference": doc(critical=critical(identity={})),
    "reference: not a string": doc(critical=critical(identity={"docker-reference": ["a"]})),
    "reference: null": doc(critical=critical(identity={"docker-reference": None})),
    "creator: not a string": doc(optional={"creator": 1}),
    "timestamp: a string": doc(optional={"timestamp": "1700000000"}),
    "timestamp: fractional": doc(optional={"timestamp": 1.5}),
    "timestamp: a boolean": doc(optional={"timestamp": True}),
    "timestamp: out of int64": doc(optional={"timestamp": 1 << 64}),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_payloads_are_refused(case: str) -> None:
    value = MALFORMED[case]
    data = value if isinstance(value, bytes) else json.dumps(value).encode()
    with pytest.raises(SignatureError) as caught:
        parse(data)
    message = str(caught.value)
    assert message.startswith("signature payload: ") and "\n" not in message


@pytest.mark.parametrize("where", ["top", "critical", "image", "identity", "optional"])
def test_duplicate_keys_are_refused(where: str) -> None:
    # a JSON decoder that keeps the last duplicate would let a second "docker-reference" win
    text = json.dumps(doc())
    needle = {
        "top": ('"critical": ', '"critical": {}, "critical": '),
        "critical": ('"type": ', '"type": "x", "type": '),
        "image": ('"docker-manifest-digest": ', f'"docker-manifest-digest": "{DIGEST}", "docker-manifest-digest": '),
        "identity": ('"docker-reference": ', '"docker-reference": "a", "docker-reference": '),
        "optional": ('"creator": ', '"creator": "a", "creator": '),
    }[where]
    assert needle[0] in text
    with pytest.raises(SignatureError, match="duplicate key"):
        parse(text.replace(needle[0], needle[1], 1).encode())


def test_payload_is_what_containers_image_writes() -> None:
    data = openpgp.payload(DIGEST, REF, creator="podrun 1", timestamp=1700000000)
    # Go's json.Marshal of maps: keys sorted, compact
    assert data == (
        b'{"critical":{"identity":{"docker-reference":"registry.example.com:5000/ns/app:1.0"},'
        b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},"type":"atomic container signature"},'
        b'"optional":{"creator":"podrun 1","timestamp":1700000000}}'
    )
    assert parse(data) == (DIGEST, REF, 1700000000)
    assert json.loads(openpgp.payload(DIGEST, REF))["optional"]["creator"].startswith("podrun ")


@pytest.mark.parametrize(("digest", "reference"), [("sha256:abc", REF), ("", REF), (DIGEST, "")])
def test_payload_refuses_what_it_cannot_sign(digest: str, reference: str) -> None:
    with pytest.raises(UsageError):
        openpgp.payload(digest, reference)


# ---- keys and verification with pysequoia keys (in-process) ----------------------------------

@pytest.fixture(scope="module")
def alice() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("alice <alice@example.com>")


@pytest.fixture(scope="module")
def mallory() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("mallory <mallory@example.com>")


def signed(key: pysequoia.Tsk, data: bytes) -> bytes:
    return pysequoia.sign(key.signer(), data, armor=False)


def public(key: pysequoia.Tsk) -> bytes:
    return bytes(key.extract_certificate())


def test_a_good_signature_verifies(alice: pysequoia.Tsk) -> None:
    keyring = openpgp.load_keyring(data=public(alice))
    got = openpgp.verify(signed(alice, openpgp.payload(DIGEST, REF, timestamp=5)), keyring)
    # Cert.generate signs with a subkey: the signature counts for the primary key
    assert got == VerifiedSignature(DIGEST, REF, alice.extract_certificate().fingerprint.upper(), 5)


def test_another_key_is_not_trusted(alice: pysequoia.Tsk, mallory: pysequoia.Tsk) -> None:
    keyring = openpgp.load_keyring(data=public(alice))
    with pytest.raises(SignatureError, match="does not trust"):
        openpgp.verify(signed(mallory, openpgp.payload(DIGEST, REF)), keyring)


def test_a_keyring_of_many_keys(alice: pysequoia.Tsk, mallory: pysequoia.Tsk, tmp_path: Path) -> None:
    (tmp_path / "both.gpg").write_bytes(public(alice) + public(mallory))
    (tmp_path / "alice.asc").write_text(str(alice.extract_certificate()))
    keyring = openpgp.load_keyring(paths=[str(tmp_path / "both.gpg")])
    assert openpgp.verify(signed(mallory, openpgp.payload(DIGEST, REF)), keyring).key == mallory.extract_certificate().fingerprint.upper()
    keyring = openpgp.load_keyring(paths=[str(tmp_path / "alice.asc")])
    assert openpgp.verify(signed(alice, openpgp.payload(DIGEST, REF)), keyring).key == alice.extract_certificate().fingerprint.upper()


def test_the_payload_is_checked_after_the_signature(alice: pysequoia.Tsk) -> None:
    keyring = openpgp.load_keyring(data=public(alice))
    with pytest.raises(SignatureError, match="signature payload: unknown field critical.extra"):
        openpgp.verify(signed(alice, json.dumps(doc(critical=critical(extra=1))).encode()), keyring)


def test_a_corrupt_signature_is_refused(alice: pysequoia.Tsk) -> None:
    keyring = openpgp.load_keyring(data=public(alice))
    message = bytearray(signed(alice, openpgp.payload(DIGEST, REF)))
    message[-3] ^= 0x40  # inside the signature's MPIs
    with pytest.raises(SignatureError, match="does not verify"):
        openpgp.verify(bytes(message), keyring)


@pytest.mark.parametrize("blob", [b"", b"junk", b"\x00" * 100])
def test_not_a_message(alice: pysequoia.Tsk, blob: bytes) -> None:
    with pytest.raises(SignatureError):
        openpgp.verify(blob, openpgp.load_keyring(data=public(alice)))


def test_a_certificate_is_not_a_signature(alice: pysequoia.Tsk) -> None:
    with pytest.raises(SignatureError, match="not a signed OpenPGP message"):
        openpgp.verify(public(alice), openpgp.load_keyring(data=public(alice)))


def test_unsigned_literal_data_is_refused(alice: pysequoia.Tsk) -> None:
    message = signed(alice, openpgp.payload(DIGEST, REF))
    literal = pysequoia.packet.PacketPile.from_bytes(message)
    bare = b"".join(bytes(p) for p in literal if p.tag == pysequoia.packet.Tag.Literal)
    assert bare
    with pytest.raises(SignatureError, match="0 signatures"):
        openpgp.verify(bare, openpgp.load_keyring(data=public(alice)))


@pytest.mark.parametrize("content", [b"", b"junk", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAA==\n-----END PGP PUBLIC KEY BLOCK-----\n"])
def test_a_bad_key_file_is_named(content: bytes, tmp_path: Path, alice: pysequoia.Tsk) -> None:
    good, bad = tmp_path / "good.gpg", tmp_path / "bad.gpg"
    good.write_bytes(public(alice))
    bad.write_bytes(content)
    with pytest.raises(VerificationError, match=f"^{bad}: "):
        openpgp.load_keyring(paths=[str(good), str(bad)])


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="missing.gpg: cannot read"):
        openpgp.load_keyring(paths=[str(tmp_path / "missing.gpg")])


def test_an_empty_keyring_is_refused() -> None:
    with pytest.raises(VerificationError, match="no public keys"):
        openpgp.load_keyring(paths=[])


@pytest.mark.parametrize("key", ["", "-o/etc/passwd", "a b", "x\n"])
def test_sign_refuses_what_is_no_key_identity(key: str) -> None:
    with pytest.raises(Exception, match="not a key identity"):
        openpgp.sign(b"{}", key)
