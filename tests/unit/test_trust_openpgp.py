"""trust.openpgp without gpg: the simple-signing payload parsed as strictly as containers/image
does (each malformed case refused), payloads podrun writes, keyrings, and verification of
messages signed in-process with pysequoia keys.  tests/integration/test_trust_keys.py has the
real gpg keys (subkeys, revocations, expiry) and skopeo."""

from __future__ import annotations

import base64
import bz2
import json
import re
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pysequoia
import pytest
from pysequoia.packet import PacketPile, Tag

from podrun.errors import PodrunError, UsageError, VerificationError
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


def test_sign_names_the_refused_key_identity() -> None:
    with pytest.raises(PodrunError) as caught:
        openpgp.sign(b"{}", "--homedir=/tmp")
    assert str(caught.value) == "signing key '--homedir=/tmp': not a key identity"


def test_make_payload_messages_and_encoding() -> None:
    with pytest.raises(UsageError, match=r"^cannot sign 'sha256:abc': not a manifest digest$"):
        openpgp.payload("sha256:abc", REF)
    with pytest.raises(UsageError, match="^cannot sign an empty docker reference$"):
        openpgp.payload(DIGEST, "")
    # keys sorted at every level, UTF-8 kept as UTF-8 (Go's json.Marshal escapes nothing here)
    data = openpgp.make_payload("t", DIGEST, "r", "créateur", 1)
    assert data == ('{"critical":{"identity":{"docker-reference":"r"},"image":{"docker-manifest-digest":"'
                    + DIGEST + '"},"type":"t"},"optional":{"creator":"créateur","timestamp":1}}').encode()


@pytest.mark.parametrize(("data", "message"), [
    (b"\xff", "signature payload: not UTF-8"),
    (b"[" * 100000 + b"]" * 100000, "signature payload: nested too deeply"),
    (b'{"critical": NaN}', "signature payload: NaN is not JSON"),
    (b'{"critical": Infinity}', "signature payload: Infinity is not JSON"),
    (b"[]", "signature payload: payload is not a JSON object"),
    (json.dumps(doc(optional=[])).encode(), "signature payload: optional is not a JSON object"),
    (json.dumps(doc(optional={"creator": 1})).encode(), "signature payload: optional.creator is not a string"),
    (json.dumps(doc(optional={"timestamp": "1"})).encode(), "signature payload: optional.timestamp is not a number"),
    (json.dumps(doc(optional={"timestamp": 1.5})).encode(), "signature payload: optional.timestamp is not an integer"),
    (json.dumps(doc(optional={"timestamp": 1 << 63})).encode(), "signature payload: optional.timestamp is out of range"),
    (json.dumps(doc(optional={"timestamp": -(1 << 63) - 1})).encode(),
     "signature payload: optional.timestamp is out of range"),
    (json.dumps(doc(critical=critical(type=1))).encode(), "signature payload: critical.type is not a string"),
    (json.dumps(doc(critical=critical(image=[]))).encode(), "signature payload: critical.image is not a JSON object"),
    (json.dumps(doc(critical=critical(image={"docker-manifest-digest": 1}))).encode(),
     "signature payload: critical.image.docker-manifest-digest is not a string"),
    (json.dumps(doc(critical=critical(identity=[]))).encode(),
     "signature payload: critical.identity is not a JSON object"),
    (json.dumps(doc(critical=critical(identity={"docker-reference": 1}))).encode(),
     "signature payload: critical.identity.docker-reference is not a string"),
    (json.dumps({"critical": critical()}).encode(), "signature payload: missing field payload.optional"),
    (json.dumps(doc(critical=critical(type="x"))).encode(), "signature payload: unrecognized signature type 'x'"),
    (json.dumps(doc(critical=critical(image={"docker-manifest-digest": "x:y:" + "a" * 64}))).encode(),
     "signature payload: invalid docker-manifest-digest 'x:y:" + "a" * 64 + "'"),
])
def test_payload_errors_name_the_field(data: bytes, message: str) -> None:
    with pytest.raises(SignatureError) as caught:
        parse(data)
    assert str(caught.value) == message


def test_timestamps_at_the_int64_bounds() -> None:
    for timestamp in (-(1 << 63), (1 << 63) - 1):
        assert parse(json.dumps(doc(optional={"timestamp": timestamp})).encode())[2] == timestamp


# ---- packet framing, armor and compression (RFC 9580 §4.2, §6, §5.6) -------------------------

def new_length(n: int, form: int) -> bytes:
    """A new-format length of *n* in its 1-, 2- or 5-byte form."""
    if form == 1:
        assert n < 192
        return bytes([n])
    if form == 2:
        assert 192 <= n < 8384
        return struct.pack(">H", n - 192 + (192 << 8))
    return b"\xff" + struct.pack(">I", n)


def new_packet(tag: int, body: bytes, form: int = 0) -> bytes:
    """A new-format packet; form 0: the shortest length form."""
    form = form or (1 if len(body) < 192 else 2 if len(body) < 8384 else 5)
    return bytes([0xC0 | tag]) + new_length(len(body), form) + body


def old_packet(tag: int, body: bytes, size: int) -> bytes:
    """An old-format packet with a *size*-byte length (1, 2, 4), or indeterminate (0)."""
    if size == 0:
        return bytes([0x80 | tag << 2 | 3]) + body
    kind, fmt = {1: (0, ">B"), 2: (1, ">H"), 4: (2, ">I")}[size]
    return bytes([0x80 | tag << 2 | kind]) + struct.pack(fmt, len(body)) + body


def partial_packet(tag: int, body: bytes, power: int) -> bytes:
    """A new-format packet in partial chunks of 2**power bytes, then the rest."""
    out, chunk = bytearray([0xC0 | tag]), 1 << power
    while len(body) >= chunk:
        out += bytes([0xE0 | power]) + body[:chunk]
        body = body[chunk:]
    return bytes(out + new_packet(0, body)[1:])


@pytest.mark.parametrize(("data", "at", "expected"), [
    (b"\x00", 0, (0, 1, False)),
    (b"\xbf", 0, (191, 1, False)),
    (b"\xc0\x00", 0, (192, 2, False)),
    (b"\xc0\x01", 0, (193, 2, False)),
    (b"\xc5\x07", 0, ((5 << 8) + 7 + 192, 2, False)),
    (b"\xdf\xff", 0, (8383, 2, False)),
    (b"\xe0", 0, (1, 1, True)),
    (b"\xe1", 0, (2, 1, True)),
    (b"\xf0", 0, (1 << 16, 1, True)),
    (b"\xfe", 0, (1 << 30, 1, True)),
    (b"\xff\x12\x34\x56\x78", 0, (0x12345678, 5, False)),
    (b"..\xc1\x02", 2, (256 + 2 + 192, 4, False)),
    (b"..\xff\x00\x00\x01\x00", 2, (256, 7, False)),
    # truncated: a missing octet reads as 0, the caller finds the body short
    (b"", 0, (0, 1, False)),
    (b"\x05", 1, (0, 2, False)),
    (b"\xc1", 0, (256 + 192, 2, False)),
    (b"\xff\x01", 0, (1, 5, False)),
])
def test_new_format_lengths(data: bytes, at: int, expected: tuple[int, int, bool]) -> None:
    assert openpgp._new_length(data, at) == expected


@pytest.mark.parametrize("frame", [
    lambda tag, body: old_packet(tag, body, 1),
    lambda tag, body: old_packet(tag, body, 2),
    lambda tag, body: old_packet(tag, body, 4),
    lambda tag, body: new_packet(tag, body, 1),
    lambda tag, body: new_packet(tag, body, 2) if len(body) >= 192 else new_packet(tag, body, 5),
    lambda tag, body: new_packet(tag, body, 5),
    lambda tag, body: partial_packet(tag, body, 0),
    lambda tag, body: partial_packet(tag, body, 2),
], ids=["old-1", "old-2", "old-4", "new-1", "new-5b", "new-5", "partial-1", "partial-4"])
def test_top_level_packets_reads_every_header_format(frame: Callable[[int, bytes], bytes]) -> None:
    first, second = frame(11, b"hello world"), frame(2, b"sig")
    after = new_packet(10, b"PGP")
    assert openpgp._top_level_packets(first + second + after) == [
        (11, b"hello world", first), (2, b"sig", second), (10, b"PGP", after)]


def test_top_level_packets_tags_and_odd_framing() -> None:
    tags = [old_packet(tag, b"x", 1) for tag in (1, 8, 15)] + [new_packet(tag, b"y") for tag in (16, 40, 63)]
    assert [tag for tag, _, _ in openpgp._top_level_packets(b"".join(tags))] == [1, 8, 15, 16, 40, 63]
    # indeterminate length: the rest of the data, whatever it looks like
    rest = old_packet(8, b"\x00" + new_packet(11, b"abc"), 0)
    assert openpgp._top_level_packets(rest + new_packet(2, b"s")) == [
        (8, b"\x00" + new_packet(11, b"abc") + new_packet(2, b"s"), rest + new_packet(2, b"s"))]
    # not a packet header (bit 7 clear): kept as it is, for sequoia to refuse
    literal = new_packet(11, b"ab")
    assert openpgp._top_level_packets(literal + b"\x7fjunk\xc1\x01z") == [
        (11, b"ab", literal), (-1, b"", b"\x7fjunk\xc1\x01z")]
    # truncated bodies are what is there
    assert openpgp._top_level_packets(b"\x85\x01\x00hello") == [(1, b"hello", b"\x85\x01\x00hello")]
    assert openpgp._top_level_packets(b"\xcb\x64abc") == [(11, b"abc", b"\xcb\x64abc")]
    assert openpgp._top_level_packets(b"\xcb\xe2ab") == [(11, b"ab", b"\xcb\xe2ab")]
    assert openpgp._top_level_packets(b"") == []


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


COMPRESS: dict[int, Callable[[bytes], bytes]] = {
    0: lambda data: data, 1: raw_deflate, 2: zlib.compress, 3: bz2.compress,
}


@pytest.mark.parametrize("algorithm", sorted(COMPRESS))
def test_inflate_each_algorithm(algorithm: int) -> None:
    data = b"literal data " * 50
    assert openpgp._inflate(bytes([algorithm]) + COMPRESS[algorithm](data)) == data


@pytest.mark.parametrize("algorithm", [1, 2, 3])
def test_inflate_stops_at_the_expansion_limit(algorithm: int) -> None:
    limit = openpgp.EXPANSION_LIMIT
    assert limit == 4 << 20
    assert len(openpgp._inflate(bytes([algorithm]) + COMPRESS[algorithm](b"\0" * limit))) == limit
    with pytest.raises(SignatureError) as caught:
        openpgp._inflate(bytes([algorithm]) + COMPRESS[algorithm](b"\0" * (limit + 1)))
    assert str(caught.value) == "the message's compressed data expands past 4194304 bytes"


@pytest.mark.parametrize(("body", "message"), [
    (b"", "the message uses unknown compression algorithm -1"),
    (b"\x04" + zlib.compress(b"x"), "the message uses unknown compression algorithm 4"),
    (b"\x6e", "the message uses unknown compression algorithm 110"),
    (b"\x01" + zlib.compress(b"x")[:-4], "the message's compressed data is corrupt: "),  # a zlib header is no deflate
    (b"\x02not zlib", "the message's compressed data is corrupt: "),
    (b"\x03not bzip2", "the message's compressed data is corrupt: "),
    (b"\x01" + raw_deflate(b"x" * 1000)[:-3], "the message's compressed data is truncated"),
    (b"\x02" + zlib.compress(b"x" * 1000)[:-3], "the message's compressed data is truncated"),
    (b"\x03" + bz2.compress(b"x" * 1000)[:-3], "the message's compressed data is truncated"),
    (b"\x02", "the message's compressed data is truncated"),
])
def test_inflate_refuses(body: bytes, message: str) -> None:
    with pytest.raises(SignatureError) as caught:
        openpgp._inflate(body)
    assert str(caught.value).startswith(message)
    assert message.endswith(": ") or str(caught.value) == message


def armored(binary: bytes, headers: str = "Version: GnuPG v2\nComment: https://example.com/x:y\n",
            newline: str = "\n") -> bytes:
    """ASCII armor as gpg writes it: headers, a blank line, 64-column base64, the CRC line."""
    text = base64.b64encode(binary).decode()
    crc = 0xB704CE
    for byte in binary:
        crc ^= byte << 16
        for _ in range(8):
            crc = (crc << 1) ^ 0x1864CFB if crc & 0x800000 else crc << 1
    lines = ["-----BEGIN PGP MESSAGE-----", *headers.splitlines(), "",
             *(text[i:i + 64] for i in range(0, len(text), 64)),
             "=" + base64.b64encode((crc & 0xFFFFFF).to_bytes(3, "big")).decode(), "-----END PGP MESSAGE-----", ""]
    return newline.join(lines).encode()


BINARY = bytes(range(256)) * 2


@pytest.mark.parametrize("text", [
    armored(BINARY),
    armored(BINARY, headers=""),
    armored(BINARY, newline="\r\n"),
    b"\n  " + armored(BINARY) + b"trailing text\n=AAAA\n",
    armored(BINARY, headers="").replace(b"\n\n", b"\n", 1),  # no blank line: no headers either
    armored(BINARY, headers="").replace(b"\n\n", b"\n", 1).replace(b"\n=", b"\n\n=", 1),  # blank before the CRC
    armored(BINARY).replace(b"\n=", b"\n-----END PGP MESSAGE-----\nAAAA\n=", 1),  # no CRC line
])
def test_dearmor(text: bytes) -> None:
    assert openpgp._dearmor(text) == BINARY
    assert openpgp._flatten(text) == BINARY  # BINARY is no packet: kept as it is


@pytest.mark.parametrize("text", [
    b"-----BEGIN PGP MESSAGE-----\n\n!!!!\n-----END PGP MESSAGE-----\n",
    b"-----BEGIN PGP MESSAGE-----\nVersion: 1\nAAAA\n-----END PGP MESSAGE-----\n",  # a header without blank line
    b"-----BEGIN PGP MESSAGE-----\n\nAAA\n-----END PGP MESSAGE-----\n",
])
def test_dearmor_refuses_what_is_not_base64(text: bytes) -> None:
    with pytest.raises(SignatureError) as caught:
        openpgp._dearmor(text)
    assert str(caught.value) == "the message's ASCII armor is not valid base64"


# ---- whole messages: framing, armor and compression as gpg and others write them -----------

@pytest.fixture(scope="module")
def parts(alice: pysequoia.Tsk) -> list[tuple[int, bytes]]:
    """(tag, body) of the packets of a message alice signed: one-pass signature, literal, signature."""
    message = signed(alice, openpgp.payload(DIGEST, REF, creator="c", timestamp=5))
    return [(int(p.tag), bytes(p.body)) for p in PacketPile.from_bytes(message)]


def by_alice(alice: pysequoia.Tsk) -> VerifiedSignature:
    return VerifiedSignature(DIGEST, REF, alice.extract_certificate().fingerprint.upper(), 5)


@pytest.mark.parametrize("frame", [
    lambda tag, body: old_packet(tag, body, 2),
    lambda tag, body: old_packet(tag, body, 4),
    lambda tag, body: new_packet(tag, body),
    lambda tag, body: new_packet(tag, body, 5),
], ids=["old-2", "old-4", "new", "new-5"])
def test_a_message_verifies_in_every_header_format(
        alice: pysequoia.Tsk, parts: list[tuple[int, bytes]], frame: Callable[[int, bytes], bytes]) -> None:
    assert [tag for tag, _ in parts] == [4, 11, 2]
    message = b"".join(frame(tag, body) for tag, body in parts)
    assert openpgp.verify(message, openpgp.load_keyring(data=public(alice))) == by_alice(alice)


@pytest.mark.parametrize("algorithm", sorted(COMPRESS))
@pytest.mark.parametrize("frame", [
    lambda body: old_packet(8, body, 0),  # gpg: indeterminate length
    lambda body: new_packet(8, body, 5),
    lambda body: partial_packet(8, body, 4),
    lambda body: new_packet(10, b"PGP") + old_packet(8, body, 2),  # after a marker packet
], ids=["gpg", "new-5", "partial", "marker"])
def test_a_compressed_message_verifies(alice: pysequoia.Tsk, parts: list[tuple[int, bytes]], algorithm: int,
                                       frame: Callable[[bytes], bytes]) -> None:
    inner = b"".join(new_packet(tag, body) for tag, body in parts)
    message = frame(bytes([algorithm]) + COMPRESS[algorithm](inner))
    keyring = openpgp.load_keyring(data=public(alice))
    assert openpgp.verify(message, keyring) == by_alice(alice)
    assert openpgp.verify(armored(message), keyring) == by_alice(alice)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda inner: old_packet(8, b"\x02" + zlib.compress(old_packet(8, b"\x00" + inner, 0)), 0),
     "the message nests compressed data"),
    (lambda inner: old_packet(8, b"\x02" + zlib.compress(inner)[:-6], 0), "the message's compressed data is truncated"),
    (lambda inner: old_packet(8, b"\x09" + inner, 0), "the message uses unknown compression algorithm 9"),
    (lambda inner: armored(inner).replace(b"\n=", b"!\n=", 1), "the message's ASCII armor is not valid base64"),
])
def test_a_malformed_message_is_refused_with_its_reason(
        alice: pysequoia.Tsk, parts: list[tuple[int, bytes]], change: Callable[[bytes], bytes], reason: str) -> None:
    inner = b"".join(new_packet(tag, body) for tag, body in parts)
    with pytest.raises(SignatureError) as caught:
        openpgp.verify(change(inner), openpgp.load_keyring(data=public(alice)))
    assert str(caught.value) == reason


def test_two_literal_packets_are_refused(alice: pysequoia.Tsk, parts: list[tuple[int, bytes]]) -> None:
    (ops, ops_body), (lit, lit_body), (sig, sig_body) = parts
    message = new_packet(ops, ops_body) + new_packet(lit, lit_body) * 2 + new_packet(sig, sig_body)
    with pytest.raises(SignatureError) as caught:
        openpgp.verify(message, openpgp.load_keyring(data=public(alice)))
    assert str(caught.value) == "the message does not hold exactly one literal data packet"


def subpacket(kind: int, data: bytes) -> bytes:
    return bytes([len(data) + 1, kind]) + data


def signature_packet(kind: int, created: int | None, validity: int | None = None) -> bytes:
    """A v4 EdDSA signature packet of type *kind* (its MPIs are not a signature: sequoia reads
    packets without checking them) with a creation time and a key expiration time."""
    hashed = b"" if created is None else subpacket(2, struct.pack(">I", created))
    hashed += b"" if validity is None else subpacket(9, struct.pack(">I", validity))
    mpis = (struct.pack(">H", 256) + b"\x80" * 32) * 2
    body = struct.pack(">BBBBH", 4, kind, 22, 8, len(hashed)) + hashed + struct.pack(">H", 0) + b"\0\0" + mpis
    return new_packet(2, body)


def key_packet(tag: int, created: int, seed: int) -> bytes:
    """A v4 Ed25519 (EdDSA legacy) public key or subkey packet."""
    oid = bytes.fromhex("2b06010401da470f01")
    point = struct.pack(">H", 263) + b"\x40" + bytes([seed]) * 32
    return new_packet(tag, struct.pack(">BIB", 4, created, 22) + bytes([len(oid)]) + oid + point)


def fingerprint(packet: bytes) -> str:
    found: str | None = next(iter(PacketPile.from_bytes(packet))).fingerprint
    assert found is not None
    return found.lower()


def test_an_unnamed_signature_is_not_trusted(alice: pysequoia.Tsk, parts: list[tuple[int, bytes]]) -> None:
    message = new_packet(11, parts[1][1]) + signature_packet(0, 1700000000)
    with pytest.raises(SignatureError) as caught:
        openpgp.verify(message, openpgp.load_keyring(data=public(alice)))
    assert str(caught.value) == "signed by key UNNAMED, which the policy does not trust"


def test_refusals_name_the_signing_key(alice: pysequoia.Tsk, mallory: pysequoia.Tsk) -> None:
    message = signed(mallory, openpgp.payload(DIGEST, REF))
    issuer = next(p.issuer_fingerprint for p in PacketPile.from_bytes(message) if p.tag == Tag.Signature)
    assert issuer is not None and issuer.lower() in dict(openpgp._keys(mallory.extract_certificate()))
    with pytest.raises(SignatureError) as caught:
        openpgp.verify(message, openpgp.load_keyring(data=public(alice)))
    assert str(caught.value) == f"signed by key {issuer.upper()}, which the policy does not trust"
    corrupt = bytearray(message)
    corrupt[-3] ^= 0x40
    with pytest.raises(SignatureError) as caught:
        openpgp.verify(bytes(corrupt), openpgp.load_keyring(data=public(mallory)))
    assert re.fullmatch(f"the signature by key {issuer.upper()} does not verify: [A-Z][^\n]+", str(caught.value))
    assert not str(caught.value).endswith("None")


def test_not_a_message_names_sequoia_reason(alice: pysequoia.Tsk) -> None:
    with pytest.raises(SignatureError) as caught:
        openpgp.verify(b"\xc2\x05ab", openpgp.load_keyring(data=public(alice)))
    assert re.fullmatch("not an OpenPGP message: [a-z][^\n]+", str(caught.value))
    assert not str(caught.value).endswith("None")


def test_a_key_expired_now_is_refused_whenever_it_signed(alice: pysequoia.Tsk) -> None:
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)
    cert = alice.extract_certificate().set_expiration(expiry, alice.certifier())
    keyring = openpgp.load_keyring(data=bytes(cert))
    message = signed(alice, openpgp.payload(DIGEST, REF, creator="c", timestamp=5))
    assert openpgp.verify(message, keyring) == by_alice(alice)  # now: the clock
    assert openpgp.verify(message, keyring, now=expiry.timestamp() - 1) == by_alice(alice)
    with pytest.raises(SignatureError) as caught:
        openpgp.verify(message, keyring, now=expiry.timestamp())
    assert str(caught.value) == f"key {by_alice(alice).key} expired at {expiry:%Y-%m-%d %H:%M:%S} UTC"


class HandBuiltCert:
    """What _check_valid_now and _subkey_state read of a certificate, over hand-built packets:
    a soft revocation, a subkey's expiry or revocation, which pysequoia cannot make."""

    def __init__(self, packets: bytes, revoked: bool = False, expiration: datetime | None = None) -> None:
        self.packets, self.is_revoked, self.expiration = packets, revoked, expiration
        self.fingerprint = fingerprint(packets)

    def __bytes__(self) -> bytes:
        return self.packets


T0 = 1600000000
PRIMARY = key_packet(6, T0 - 100, 1)
SUBKEY = key_packet(14, T0, 2)
OTHER = key_packet(14, T0 + 5, 3)
DAY = 86400
BINDING, REVOCATION, DIRECT = 0x18, 0x28, 0x1F


def subkey_state(*packets: bytes) -> tuple[bool, datetime | None]:
    cert = cast("pysequoia.Cert", HandBuiltCert(PRIMARY + b"".join(packets)))
    return openpgp._subkey_state(cert, fingerprint(SUBKEY))


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_subkey_state_from_the_newest_binding() -> None:
    older, newer = signature_packet(BINDING, T0 + 10, 100 * DAY), signature_packet(BINDING, T0 + 20, 200 * DAY)
    assert subkey_state(SUBKEY, older) == (False, at(T0 + 100 * DAY))
    assert subkey_state(SUBKEY, older, newer) == (False, at(T0 + 200 * DAY))
    assert subkey_state(SUBKEY, newer, older) == (False, at(T0 + 200 * DAY))
    # the same time: the first one read stays
    assert subkey_state(SUBKEY, older, signature_packet(BINDING, T0 + 10, 300 * DAY)) == (False, at(T0 + 100 * DAY))
    # a newer binding without an expiry: the subkey no longer expires
    assert subkey_state(SUBKEY, older, signature_packet(BINDING, T0 + 20)) == (False, None)
    # signatures without a creation time, or of another type, are no binding
    assert subkey_state(SUBKEY, signature_packet(BINDING, None, DAY), older,
                        signature_packet(DIRECT, T0 + 30, DAY)) == (False, at(T0 + 100 * DAY))


def test_subkey_state_of_that_subkey_only() -> None:
    binding = signature_packet(BINDING, T0 + 10, 100 * DAY)
    others = OTHER + signature_packet(BINDING, T0 + 11, DAY) + signature_packet(REVOCATION, T0 + 12)
    assert subkey_state(others, SUBKEY, signature_packet(BINDING, T0 + 10)) == (False, None)
    assert subkey_state(SUBKEY, binding, others) == (False, at(T0 + 100 * DAY))
    assert subkey_state(SUBKEY, binding, signature_packet(REVOCATION, T0 + 40), others) == (True, at(T0 + 100 * DAY))


def test_an_unbound_subkey_is_refused() -> None:
    expected = f"signing subkey {fingerprint(SUBKEY).upper()} is not bound to key {fingerprint(PRIMARY).upper()}"
    for packets in [(SUBKEY,), (SUBKEY, signature_packet(BINDING, None, DAY)), (OTHER, signature_packet(BINDING, T0))]:
        with pytest.raises(SignatureError) as caught:
            subkey_state(*packets)
        assert str(caught.value) == expected


def check_valid_now(cert: HandBuiltCert, key: bytes, now: float) -> None:
    openpgp._check_valid_now(cast("pysequoia.Cert", cert), fingerprint(key), now)


def test_check_valid_now_of_the_primary_key() -> None:
    primary = fingerprint(PRIMARY).upper()
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    check_valid_now(HandBuiltCert(PRIMARY, expiration=expiry), PRIMARY, expiry.timestamp() - 1)  # no subkey needed
    with pytest.raises(SignatureError) as caught:
        check_valid_now(HandBuiltCert(PRIMARY, expiration=expiry), PRIMARY, expiry.timestamp())
    assert str(caught.value) == f"key {primary} expired at 2030-01-01 00:00:00 UTC"
    with pytest.raises(SignatureError) as caught:  # a soft revocation made after the signature
        check_valid_now(HandBuiltCert(PRIMARY, revoked=True), PRIMARY, T0)
    assert str(caught.value) == f"key {primary} is revoked"


def test_check_valid_now_of_a_signing_subkey() -> None:
    subkey = f"signing subkey {fingerprint(SUBKEY).upper()} of key {fingerprint(PRIMARY).upper()}"
    expiring = HandBuiltCert(PRIMARY + SUBKEY + signature_packet(BINDING, T0 + 10, 100 * DAY))
    check_valid_now(expiring, SUBKEY, T0 + 100 * DAY - 1)
    with pytest.raises(SignatureError) as caught:
        check_valid_now(expiring, SUBKEY, T0 + 100 * DAY)
    assert str(caught.value) == f"{subkey} expired at {at(T0 + 100 * DAY):%Y-%m-%d %H:%M:%S} UTC"
    revoked = HandBuiltCert(PRIMARY + SUBKEY + signature_packet(BINDING, T0 + 10) + signature_packet(REVOCATION, T0 + 20))
    with pytest.raises(SignatureError) as caught:
        check_valid_now(revoked, SUBKEY, T0)
    assert str(caught.value) == f"{subkey} is revoked"


def test_keyring_messages_and_merging(alice: pysequoia.Tsk, tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as caught:
        openpgp.load_keyring(data=b"")
    assert str(caught.value) == "keyData: holds no OpenPGP public key"
    with pytest.raises(VerificationError) as caught:
        openpgp.load_keyring(data=b"\x99junk")
    assert re.fullmatch("keyData: not an OpenPGP public key: [A-Za-z][^\n]+", str(caught.value))
    assert not str(caught.value).endswith("None")
    with pytest.raises(VerificationError) as caught:
        openpgp.load_keyring()
    assert str(caught.value) == "no public keys in the keyring"
    # one key in two files: merged, whichever file comes first
    expiry = datetime(2031, 1, 1, tzinfo=UTC)
    (tmp_path / "expiring.gpg").write_bytes(bytes(alice.extract_certificate().set_expiration(expiry, alice.certifier())))
    (tmp_path / "plain.gpg").write_bytes(public(alice))
    keyring = openpgp.load_keyring(paths=[str(tmp_path / "expiring.gpg"), str(tmp_path / "plain.gpg")])
    assert [cert.expiration for cert in keyring.certs.values()] == [expiry]


def test_keyring_owner_names_every_key_lower_case(alice: pysequoia.Tsk) -> None:
    keyring = openpgp.load_keyring(data=public(alice))
    keys = [(p.fingerprint, p.key_id) for p in PacketPile.from_bytes(public(alice))
            if p.tag in (Tag.PublicKey, Tag.PublicSubkey)]
    assert len(keys) == 3  # primary, signing and encryption subkeys
    primary = alice.extract_certificate().fingerprint.upper()
    assert keyring.owner == {handle.lower(): primary for key in keys for handle in key if handle is not None}
    assert keyring.lookup([keys[1][1] or "", "unknown"]) == [keyring.certs[primary]]


def test_first_line_of_an_error() -> None:
    assert openpgp._first_line(ValueError("first\nsecond")) == "first"
    assert openpgp._first_line(ValueError("  \n")) == "ValueError"
