"""trust.openpgp with real keys: made by ``gpg --batch`` in throwaway GNUPGHOMEs, signatures by
gpg, by podrun's ``sign`` and by ``skopeo standalone-sign``.  Where a case is about what
containers/image decides (a revoked subkey, an expired key, a revoked certificate),
``skopeo standalone-verify`` (containers/image over gpgme) is asked too, and podrun must decide
as it does: gpgv would accept some of these.

Times in the past come from gpg's --faked-system-time: a key that expired a year ago, a
signature made before its key was revoked."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.errors import PodrunError
from podrun.trust import openpgp
from podrun.trust.signature import SignatureError, VerifiedSignature
from tests.fixtures.trust.gpg import GpgHome

MANIFEST = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[]}'
DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
REF = "registry.example.com/ns/app:1.0"
YEAR = 365 * 86400
NOW = int(time.time())


@pytest.fixture
def home() -> Iterator[GpgHome]:
    with GpgHome() as made:
        yield made


@pytest.fixture
def stranger() -> Iterator[GpgHome]:
    with GpgHome() as made:
        yield made


def keyring(home: GpgHome, *keys: str) -> openpgp.Keyring:
    return openpgp.load_keyring(data=home.export(*keys))


def payload() -> bytes:
    return openpgp.payload(DIGEST, REF)


def skopeo_accepts(home: GpgHome, fingerprint: str, signature: bytes, tmp_path: Path) -> bool:
    """What containers/image decides (``skopeo standalone-verify`` with *home*'s keyring;
    it wants the fingerprint of the key that signed, subkey or primary)."""
    (tmp_path / "manifest.json").write_bytes(MANIFEST)
    (tmp_path / "signature").write_bytes(signature)
    done = subprocess.run(
        ["skopeo", "standalone-verify", str(tmp_path / "manifest.json"), REF, fingerprint, str(tmp_path / "signature")],
        env=home.env, capture_output=True, text=True,
    )
    assert done.returncode == 0 or "Error verifying signature" in done.stderr, done.stderr
    return done.returncode == 0


def test_a_good_signature(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("alice")
    signature = home.sign(payload(), key)
    assert skopeo_accepts(home, key, signature, tmp_path)
    got = openpgp.verify(signature, keyring(home, key))
    assert (got.manifest_digest, got.docker_reference, got.key) == (DIGEST, REF, key)
    assert got.created is not None and abs(got.created - time.time()) < 3600


def test_a_subkey_signature_counts_for_its_primary(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("alice", at=NOW - 1000)
    subkey = home.add_signing_subkey(key, at=NOW - 1000)
    signature = home.sign(payload(), subkey)
    assert skopeo_accepts(home, subkey, signature, tmp_path)
    assert openpgp.verify(signature, keyring(home, key)).key == key


def test_an_untrusted_key(home: GpgHome, stranger: GpgHome, tmp_path: Path) -> None:
    trusted = home.generate("alice")
    other = stranger.generate("mallory")
    signature = stranger.sign(payload(), other)
    assert not skopeo_accepts(home, other, signature, tmp_path)
    with pytest.raises(SignatureError, match=f"signed by key {other}, which the policy does not trust"):
        openpgp.verify(signature, keyring(home, trusted))


def test_a_key_with_the_same_user_id_is_still_another_key(home: GpgHome, stranger: GpgHome) -> None:
    trusted = home.generate("alice")
    impostor = stranger.generate("alice")
    with pytest.raises(SignatureError, match="does not trust"):
        openpgp.verify(stranger.sign(payload(), impostor), keyring(home, trusted))


@pytest.mark.parametrize("reason", [0, 2], ids=["no-reason", "superseded"])
def test_a_revoked_subkey(home: GpgHome, tmp_path: Path, reason: int) -> None:
    # signed before the revocation: sequoia (like gpgv) accepts a signature made before a soft
    # revocation ("superseded"); gpg reports REVKEYSIG and containers/image refuses
    key = home.generate("alice", at=NOW - YEAR)
    subkey = home.add_signing_subkey(key, at=NOW - YEAR)
    signature = home.sign(payload(), subkey, at=NOW - 1000)
    assert openpgp.verify(signature, keyring(home, key)).key == key
    home.revoke_subkey(key, 1, reason=reason)
    assert not skopeo_accepts(home, subkey, signature, tmp_path)
    with pytest.raises(SignatureError, match=f"signing subkey {subkey} of key {key} is revoked|does not verify"):
        openpgp.verify(signature, keyring(home, key))
    # the primary key itself still signs
    assert openpgp.verify(home.sign(payload(), key), keyring(home, key)).key == key


def test_a_soft_revoked_subkey_is_refused_by_podrun_itself(home: GpgHome) -> None:
    key = home.generate("alice", at=NOW - YEAR)
    subkey = home.add_signing_subkey(key, at=NOW - YEAR)
    signature = home.sign(payload(), subkey, at=NOW - 1000)
    home.revoke_subkey(key, 1, reason=2)
    with pytest.raises(SignatureError, match=f"signing subkey {subkey} of key {key} is revoked"):
        openpgp.verify(signature, keyring(home, key))


@pytest.mark.parametrize("reason", [0, 2], ids=["no-reason", "superseded"])
def test_a_revoked_key(home: GpgHome, tmp_path: Path, reason: int) -> None:
    key = home.generate("alice", at=NOW - YEAR)
    signature = home.sign(payload(), key, at=NOW - 1000)
    home.revoke_key(key, reason=reason)
    assert not skopeo_accepts(home, key, signature, tmp_path)
    with pytest.raises(SignatureError, match=f"key {key} is revoked|does not verify"):
        openpgp.verify(signature, keyring(home, key))


def test_an_expired_key(home: GpgHome, tmp_path: Path) -> None:
    # made two years ago for one year, signed while it was valid: expired now, so refused
    key = home.generate("alice", at=NOW - 2 * YEAR, expire="1y")
    signature = home.sign(payload(), key, at=NOW - 2 * YEAR + YEAR // 2)
    assert not skopeo_accepts(home, key, signature, tmp_path)
    with pytest.raises(SignatureError, match=f"key {key} expired at"):
        openpgp.verify(signature, keyring(home, key))


def test_an_expired_subkey(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("alice", at=NOW - 2 * YEAR)
    subkey = home.add_signing_subkey(key, expire="1y", at=NOW - 2 * YEAR)
    signature = home.sign(payload(), subkey, at=NOW - 2 * YEAR + YEAR // 2)
    assert not skopeo_accepts(home, subkey, signature, tmp_path)
    with pytest.raises(SignatureError, match=f"signing subkey {subkey} of key {key} expired at"):
        openpgp.verify(signature, keyring(home, key))


def test_a_key_that_expires_later_is_fine(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("alice", expire="1y")
    signature = home.sign(payload(), key)
    assert skopeo_accepts(home, key, signature, tmp_path)
    assert openpgp.verify(signature, keyring(home, key)).key == key


def test_an_expired_signature(home: GpgHome, tmp_path: Path) -> None:
    # the signature's own expiry (gpg's EXPSIG), the key still valid
    key = home.generate("alice", at=NOW - YEAR)
    signature = home.gpg("--default-sig-expire", "1d", "--sign", "--local-user", key, "--output", "-",
                         stdin=payload(), at=NOW - 3 * 86400)
    assert not skopeo_accepts(home, key, signature, tmp_path)
    with pytest.raises(SignatureError, match="does not verify"):
        openpgp.verify(signature, keyring(home, key))
    assert openpgp.verify(home.sign(payload(), key), keyring(home, key)).key == key


@pytest.mark.parametrize("algorithm", ["uncompressed", "zip", "zlib", "bzip2"])
def test_every_compression_gpg_writes(home: GpgHome, algorithm: str) -> None:
    key = home.generate("alice")
    signature = home.gpg("--compress-algo", algorithm, "--sign", "--local-user", key, "--output", "-", stdin=payload())
    assert openpgp.verify(signature, keyring(home, key)).key == key


@pytest.mark.parametrize("algorithm", ["zip", "zlib", "bzip2"])
def test_a_compression_bomb_is_refused_before_it_inflates(home: GpgHome, algorithm: str) -> None:
    # a hostile lookaside server's few KiB that sequoia (or gpg) would inflate in memory
    key = home.generate("alice")
    huge = b"{" + b" " * (openpgp.EXPANSION_LIMIT + 1) + b"}"
    signature = home.gpg("--compress-algo", algorithm, "-z", "9", "--sign", "--local-user", key, "--output", "-",
                         stdin=huge)
    assert len(signature) < len(huge) // 100
    with pytest.raises(SignatureError, match="expands past"):
        openpgp.verify(signature, keyring(home, key))


def test_nested_compression_is_refused(home: GpgHome) -> None:
    key = home.generate("alice")
    signed = home.gpg("--compress-algo", "uncompressed", "--sign", "--local-user", key, "--output", "-",
                      stdin=payload())
    assert openpgp.verify(signed, keyring(home, key)).key == key
    nested = bytes([0xA3, 0x00, 0xA3, 0x00]) + signed  # compressed (algorithm 0) twice, old format
    with pytest.raises(SignatureError, match="nests compressed data"):
        openpgp.verify(nested, keyring(home, key))
    once = bytes([0xA3, 0x00]) + signed
    assert openpgp.verify(once, keyring(home, key)).key == key


def test_a_corrupt_signature(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("alice")
    signature = bytearray(home.sign(payload(), key))
    signature[-10] ^= 0x01
    assert not skopeo_accepts(home, key, bytes(signature), tmp_path)
    with pytest.raises(SignatureError):
        openpgp.verify(bytes(signature), keyring(home, key))


def test_two_signatures_in_one_message(home: GpgHome, tmp_path: Path) -> None:
    # containers/image: "Unexpected GPG signature count 2", even when both keys are trusted
    alice, bob = home.generate("alice"), home.generate("bob")
    signature = home.sign(payload(), alice, bob)
    assert not skopeo_accepts(home, alice, signature, tmp_path)
    with pytest.raises(SignatureError, match="2 signatures, not exactly one"):
        openpgp.verify(signature, keyring(home, alice, bob))


def test_an_armored_message_is_what_gpg_would_verify_too(home: GpgHome) -> None:
    key = home.generate("alice")
    armored = home.gpg("--armor", "--sign", "--local-user", key, "--output", "-", stdin=payload())
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----\n")
    assert openpgp.verify(armored, keyring(home, key)).key == key
    with_headers = armored.replace(b"-----\n", b"-----\nVersion: x\nComment: y\n", 1)
    assert b"\n\n" in with_headers and with_headers != armored
    assert openpgp.verify(with_headers, keyring(home, key)).key == key


def test_truncated_compressed_data_is_refused(home: GpgHome) -> None:
    key = home.generate("alice")
    signature = home.gpg("--compress-algo", "zlib", "--sign", "--local-user", key, "--output", "-", stdin=payload())
    with pytest.raises(SignatureError, match="truncated|corrupt|does not verify|not an OpenPGP message"):
        openpgp.verify(signature[:-20], keyring(home, key))


def test_keyrings_from_files(home: GpgHome, stranger: GpgHome, tmp_path: Path) -> None:
    alice, bob = home.generate("alice"), home.generate("bob")
    carol = stranger.generate("carol")
    (tmp_path / "alice-and-bob.asc").write_bytes(home.export(alice, bob, armor=True))
    (tmp_path / "carol.gpg").write_bytes(stranger.export(carol))
    ring = openpgp.load_keyring(paths=[str(tmp_path / "alice-and-bob.asc"), str(tmp_path / "carol.gpg")])
    for signer, key in ((home, alice), (home, bob), (stranger, carol)):
        assert openpgp.verify(signer.sign(payload(), key), ring).key == key


def test_a_secret_key_file_serves_as_its_public_key(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("alice")
    (tmp_path / "secret.gpg").write_bytes(home.gpg("--export-secret-keys", key))
    ring = openpgp.load_keyring(paths=[str(tmp_path / "secret.gpg")])
    assert openpgp.verify(home.sign(payload(), key), ring).key == key


def test_skopeo_standalone_sign_verified_by_podrun(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("alice", at=NOW - 1000)
    home.add_signing_subkey(key, at=NOW - 1000)  # gpg signs with the subkey, as podman would
    (tmp_path / "manifest.json").write_bytes(MANIFEST)
    subprocess.run(
        ["skopeo", "standalone-sign", "--output", str(tmp_path / "sig"), str(tmp_path / "manifest.json"), REF, key],
        env=home.env, check=True, capture_output=True,
    )
    got = openpgp.verify((tmp_path / "sig").read_bytes(), keyring(home, key))
    assert (got.manifest_digest, got.docker_reference, got.key) == (DIGEST, REF, key)


def test_podrun_sign_verified_by_skopeo(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("alice")
    signed = payload()  # one payload: it carries a creation time in seconds
    signature = openpgp.sign(signed, key, gnupg_home=str(home.path))
    assert skopeo_accepts(home, key, signature, tmp_path)
    assert openpgp.verify(signature, keyring(home, key)) == VerifiedSignature(
        DIGEST, REF, key, openpgp.parse_payload(signed, openpgp.SIMPLE_SIGNING_TYPE)[2])


def test_podrun_sign_with_a_subkey_and_a_passphrase(home: GpgHome, tmp_path: Path) -> None:
    key = home.generate("dave", at=NOW - 1000, passphrase="hunter2")
    subkey = home.add_signing_subkey(key, at=NOW - 1000, passphrase="hunter2")
    (tmp_path / "pass").write_text("hunter2\n")
    signature = openpgp.sign(payload(), key, gnupg_home=str(home.path), passphrase_file=str(tmp_path / "pass"))
    assert skopeo_accepts(home, subkey, signature, tmp_path)  # gpg chose the subkey, as gpgme does
    assert openpgp.verify(signature, keyring(home, key)).key == key
    home.stop_agent()  # it cached the passphrase
    (tmp_path / "pass").write_text("wrong\n")
    with pytest.raises(PodrunError, match="gpg could not sign"):
        openpgp.sign(payload(), key, gnupg_home=str(home.path), passphrase_file=str(tmp_path / "pass"))


def test_sign_with_an_unknown_key_fails_in_one_line(home: GpgHome) -> None:
    home.generate("alice")
    with pytest.raises(PodrunError, match="gpg could not sign with key 0123") as caught:
        openpgp.sign(payload(), "0123456789ABCDEF0123456789ABCDEF01234567", gnupg_home=str(home.path))
    assert "\n" not in str(caught.value)
