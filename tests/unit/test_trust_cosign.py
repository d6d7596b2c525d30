"""trust.cosign: sigstore signatures with public keys made by ``cryptography`` in cosign's
format (base64 DER signature over the exact payload bytes, SHA-256): good, bad, another key,
tampered payload, the payload's strictness, and which key files are usable."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from podrun.errors import UsageError, VerificationError
from podrun.trust import cosign
from podrun.trust.signature import SignatureError, VerifiedSignature

DIGEST = "sha256:" + "fedcba9876543210" * 4
REF = "registry.example.com/ns/app:1.0"

KEYS: dict[str, Callable[[], PrivateKeyTypes]] = {
    "P-256": lambda: ec.generate_private_key(ec.SECP256R1()),
    "P-384": lambda: ec.generate_private_key(ec.SECP384R1()),
    "P-521": lambda: ec.generate_private_key(ec.SECP521R1()),
    "RSA-2048": lambda: rsa.generate_private_key(65537, 2048),
    "Ed25519": ed25519.Ed25519PrivateKey.generate,
}


def private_pem(key: PrivateKeyTypes, password: bytes | None = None) -> bytes:
    encryption = (serialization.BestAvailableEncryption(password) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_pem(key: PrivateKeyTypes) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_name(key: PrivateKeyTypes) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


@pytest.fixture(scope="module", params=sorted(KEYS))
def key(request: pytest.FixtureRequest) -> PrivateKeyTypes:
    return KEYS[request.param]()


@pytest.fixture(scope="module")
def other() -> PrivateKeyTypes:
    return ec.generate_private_key(ec.SECP256R1())


def test_a_good_signature_verifies(key: PrivateKeyTypes) -> None:
    payload = cosign.payload(DIGEST, REF, timestamp=7)
    signature = cosign.sign(payload, private_pem(key))
    got = cosign.verify(payload, signature, cosign.load_public_keys(data=public_pem(key)))
    assert got == VerifiedSignature(DIGEST, REF, spki_name(key), 7)


def test_ecdsa_is_over_sha256_of_the_payload() -> None:
    # what cosign writes and containers/image checks, made here without podrun's sign()
    key = ec.generate_private_key(ec.SECP384R1())
    payload = cosign.payload(DIGEST, REF)
    from cryptography.hazmat.primitives import hashes

    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    assert cosign.verify(payload, signature, cosign.load_public_keys(data=public_pem(key))).key == spki_name(key)


def test_another_key_is_refused(key: PrivateKeyTypes, other: PrivateKeyTypes) -> None:
    payload = cosign.payload(DIGEST, REF)
    signature = cosign.sign(payload, private_pem(other))
    with pytest.raises(SignatureError, match="not made by a trusted key"):
        cosign.verify(payload, signature, cosign.load_public_keys(data=public_pem(key)))


def test_any_trusted_key_will_do(key: PrivateKeyTypes, other: PrivateKeyTypes) -> None:
    payload = cosign.payload(DIGEST, REF)
    keys = cosign.load_public_keys(data=[public_pem(other), public_pem(key)])
    assert cosign.verify(payload, cosign.sign(payload, private_pem(key)), keys).key == spki_name(key)


@pytest.mark.parametrize("change", [
    lambda p: p.replace(b"app:1.0", b"app:2.0"),   # identity swapped
    lambda p: p.replace(b"fedc", b"fedd", 1),       # digest swapped
    lambda p: p + b" ",                             # same JSON, other bytes
    lambda p: p.replace(b",", b", ", 1),
])
def test_a_tampered_payload_is_refused(key: PrivateKeyTypes, change: Callable[[bytes], bytes]) -> None:
    payload = cosign.payload(DIGEST, REF)
    signature = cosign.sign(payload, private_pem(key))
    tampered = change(payload)
    assert tampered != payload
    with pytest.raises(SignatureError, match="not made by a trusted key"):
        cosign.verify(tampered, signature, cosign.load_public_keys(data=public_pem(key)))


def test_a_corrupt_signature_is_refused(key: PrivateKeyTypes) -> None:
    payload = cosign.payload(DIGEST, REF)
    raw = bytearray(base64.b64decode(cosign.sign(payload, private_pem(key))))
    raw[len(raw) // 2] ^= 1
    with pytest.raises(SignatureError, match="not made by a trusted key"):
        cosign.verify(payload, base64.b64encode(bytes(raw)).decode(), cosign.load_public_keys(data=public_pem(key)))


@pytest.mark.parametrize("signature", ["", "not base64!", "AAA", "AA==AA=="])
def test_a_signature_that_is_not_base64(signature: str) -> None:
    keys = cosign.load_public_keys(data=public_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(SignatureError):
        cosign.verify(cosign.payload(DIGEST, REF), signature, keys)


def test_line_breaks_in_the_base64_are_skipped_as_go_does() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    payload = cosign.payload(DIGEST, REF)
    signature = cosign.sign(payload, private_pem(key))
    wrapped = signature[:10] + "\r\n" + signature[10:] + "\n"
    assert cosign.verify(payload, wrapped, cosign.load_public_keys(data=public_pem(key))).manifest_digest == DIGEST


def sign_document(key: PrivateKeyTypes, document: object) -> tuple[bytes, str]:
    payload = json.dumps(document).encode()
    return payload, cosign.sign(payload, private_pem(key))


def test_cosign_writes_optional_null() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    document = json.loads(cosign.payload(DIGEST, REF))
    document["optional"] = None
    got = cosign.verify(*sign_document(key, document), cosign.load_public_keys(data=public_pem(key)))
    assert (got.manifest_digest, got.docker_reference, got.created) == (DIGEST, REF, None)


@pytest.mark.parametrize("change", [
    {"type": "atomic container signature"},                 # simple signing's type
    {"image": {"docker-manifest-digest": "sha256:../../x"}},
    {"extra": True},
    {"identity": {"docker-reference": REF, "extra": 1}},
])
def test_a_signed_but_malformed_payload_is_refused(change: dict[str, object]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    document = json.loads(cosign.payload(DIGEST, REF))
    document["critical"].update(change)
    with pytest.raises(SignatureError, match="^signature payload: "):
        cosign.verify(*sign_document(key, document), cosign.load_public_keys(data=public_pem(key)))


def test_the_signature_is_checked_before_the_payload_is_parsed() -> None:
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    payload, signature = sign_document(other, {"not": "a payload"})
    with pytest.raises(SignatureError, match="not made by a trusted key"):
        cosign.verify(payload, signature, cosign.load_public_keys(data=public_pem(key)))


# ---- key files -----------------------------------------------------------------------------

def test_keys_from_files_and_pkcs1(tmp_path: Path) -> None:
    ec_key, rsa_key = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    (tmp_path / "ec.pub").write_bytes(b"comment before\n" + public_pem(ec_key) + b"trailing text\n")
    pkcs1 = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    assert pkcs1.startswith(b"-----BEGIN RSA PUBLIC KEY-----")
    (tmp_path / "rsa.pub").write_bytes(pkcs1)
    keys = cosign.load_public_keys(paths=[str(tmp_path / "ec.pub"), str(tmp_path / "rsa.pub")])
    assert [k.name for k in keys] == [spki_name(ec_key), spki_name(rsa_key)]


@pytest.mark.parametrize(("content", "reason"), [
    (b"", "no PEM block"),
    (b"junk", "no PEM block"),
    (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a public key"),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "is not a public key"),
    (private_pem(ec.generate_private_key(ec.SECP256R1())), "is not a public key"),
    (public_pem(dsa.generate_private_key(2048)), "cannot verify"),
    (public_pem(x25519.X25519PrivateKey.generate()), "cannot verify"),
    (public_pem(ec.generate_private_key(ec.BrainpoolP256R1())), "cannot verify"),  # Go's x509 has no Brainpool
])
def test_an_unusable_key_file_is_named(tmp_path: Path, content: bytes, reason: str) -> None:
    bad = tmp_path / "key.pub"
    bad.write_bytes(content)
    with pytest.raises(VerificationError, match=f"^{bad}: .*{reason}"):
        cosign.load_public_keys(paths=[str(bad)])


def test_no_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(VerificationError, match="no sigstore public keys"):
        cosign.load_public_keys()
    with pytest.raises(VerificationError, match="absent.pub: cannot read"):
        cosign.load_public_keys(paths=[str(tmp_path / "absent.pub")])


def test_sign_with_an_encrypted_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    payload = cosign.payload(DIGEST, REF)
    signature = cosign.sign(payload, private_pem(key, b"secret"), b"secret")
    assert cosign.verify(payload, signature, cosign.load_public_keys(data=public_pem(key))).key == spki_name(key)
    with pytest.raises(UsageError):
        cosign.sign(payload, private_pem(key, b"secret"), b"wrong")
    with pytest.raises(UsageError):
        cosign.sign(payload, b"not a key")


def test_messages_name_the_source_and_the_key_type(tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as caught:
        cosign.load_public_keys(data=[public_pem(ec.generate_private_key(ec.SECP256R1())), b"junk"])
    assert str(caught.value) == "keyData: no PEM block"
    with pytest.raises(VerificationError) as caught:
        cosign.load_public_keys(paths=[], data=[])
    assert str(caught.value) == "no sigstore public keys given"
    dsa_public = public_pem(dsa.generate_private_key(2048))
    kind = type(serialization.load_pem_public_key(dsa_public)).__name__
    with pytest.raises(VerificationError) as caught:
        cosign.load_public_keys(data=dsa_public)
    assert str(caught.value) == f"keyData: a {kind} cannot verify sigstore signatures"


def test_sign_messages() -> None:
    with pytest.raises(UsageError) as caught:
        cosign.sign(b"{}", b"not a key")
    assert str(caught.value).startswith("cannot read the sigstore private key: ")
    assert len(str(caught.value)) > len("cannot read the sigstore private key: ")
    dsa_key = dsa.generate_private_key(2048)
    with pytest.raises(UsageError) as caught:
        cosign.sign(b"{}", private_pem(dsa_key))
    assert str(caught.value) == f"a {type(dsa_key).__name__} cannot make sigstore signatures"


@pytest.mark.parametrize("signature", ["", "not base64!", "AAA", "AA==AA==", "QUFB\tQUFB"])
def test_the_base64_refusal_is_exact(signature: str) -> None:
    keys = cosign.load_public_keys(data=public_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(SignatureError) as caught:
        cosign.verify(cosign.payload(DIGEST, REF), signature, keys)
    message = str(caught.value)
    expected = ("the sigstore signature was not made by a trusted key over this payload" if signature == ""
                else "the sigstore signature is not valid base64")
    assert message == expected


def test_a_key_that_cannot_verify_never_verifies() -> None:
    # load_public_keys refuses such a key; a PublicKey made another way must not pass either
    ec_key = ec.generate_private_key(ec.SECP256R1())
    payload = cosign.payload(DIGEST, REF)
    signature = cosign.sign(payload, private_pem(ec_key))
    keys = [cosign.PublicKey(x25519.X25519PrivateKey.generate().public_key(), "sha256:x")]
    with pytest.raises(SignatureError) as caught:
        cosign.verify(payload, signature, keys)
    assert str(caught.value) == "the sigstore signature was not made by a trusted key over this payload"


def test_key_files_are_read_bounded_by_both_verifiers(tmp_path: Path) -> None:
    from podrun.trust import openpgp
    from podrun.trust.signature import KEY_FILE_LIMIT

    big = tmp_path / "big.key"
    big.write_bytes(b"x" * (KEY_FILE_LIMIT + 1))
    with pytest.raises(VerificationError, match=f"{big}: public key file larger than {KEY_FILE_LIMIT} bytes"):
        cosign.load_public_keys([str(big)])
    with pytest.raises(VerificationError, match=f"{big}: key file larger than {KEY_FILE_LIMIT} bytes"):
        openpgp.load_keyring([str(big)])
