"""The policy decision (podrun.trust.decide) without a registry: a policy file, in-process keys
(pysequoia), signatures handed in as a source would find them.  The same decisions against
podman, with real registries and skopeo, are tests/integration/test_trust_interop.py."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pysequoia
import pytest

from podrun.errors import UsageError
from podrun.image.digest import Digest
from podrun.image.reference import ImageReference, parse_docker_name
from podrun.trust import cosign, decide, openpgp
from podrun.trust.decide import PolicyGate, PolicyRefusal
from podrun.trust.signature import COSIGN, SIMPLE, FoundSignature

MANIFEST = b'{"schemaVersion": 2, "layers": []}'
DIGEST = Digest.of_bytes(MANIFEST)
REF = parse_docker_name("registry.example/team/app:1")


@pytest.fixture(scope="module")
def alice() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("alice <alice@example.com>")


@pytest.fixture(scope="module")
def mallory() -> pysequoia.Tsk:
    return pysequoia.Tsk.generate("mallory <mallory@example.com>")


def sign(key: pysequoia.Tsk, digest: str = str(DIGEST), identity: str = "registry.example/team/app:1") -> bytes:
    return bytes(pysequoia.sign(key.signer(), openpgp.payload(digest, identity), armor=False))


def gate(tmp_path: Path, policy: dict[str, Any], sigs: list[bytes], insecure: bool = False) -> PolicyGate:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    g = PolicyGate(str(path), str(tmp_path / "registries.d"), insecure)
    found = [FoundSignature(SIMPLE, s, f"sig-{i + 1}") for i, s in enumerate(sigs)]
    g._signatures = lambda kind, ref, digest, source: found if kind == SIMPLE else []  # type: ignore[method-assign]
    return g


def signed_by(key: pysequoia.Tsk, **extra: Any) -> dict[str, Any]:
    data = base64.b64encode(bytes(key.extract_certificate())).decode()
    return {"type": "signedBy", "keyType": "GPGKeys", "keyData": data, **extra}


def decided(g: PolicyGate, manifest: bytes = MANIFEST) -> dict[str, Any]:
    return g.decide_registry(REF, None, manifest, Digest.of_bytes(manifest))  # type: ignore[arg-type]


def test_a_good_signature_admits_and_says_by_what(tmp_path: Path, alice: pysequoia.Tsk) -> None:
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [sign(alice)])
    trust = decided(g)
    fpr = alice.extract_certificate().fingerprint.upper()
    assert trust == {"policy": str(tmp_path / "policy.json"), "scope": "default", "manifest": str(DIGEST),
                     "requirements": [{"type": "signedBy", "key": fpr, "signature": "sig-1",
                                       "identity": "registry.example/team/app:1"}]}


def test_every_requirement_must_allow(tmp_path: Path, alice: pysequoia.Tsk, mallory: pysequoia.Tsk) -> None:
    g = gate(tmp_path, {"default": [signed_by(alice), signed_by(mallory)]}, [sign(alice)])
    with pytest.raises(PolicyRefusal, match="no valid signature: sig-1: "):
        decided(g)
    g = gate(tmp_path, {"default": [signed_by(alice), signed_by(mallory)]}, [sign(alice), sign(mallory)])
    assert [r["signature"] for r in decided(g)["requirements"]] == ["sig-1", "sig-2"]
    g = gate(tmp_path, {"default": [{"type": "insecureAcceptAnything"}, {"type": "reject"}]}, [])
    with pytest.raises(PolicyRefusal, match=r"\(scope default\): rejected$"):
        decided(g)


def test_bad_signatures_do_no_harm_and_the_first_reason_is_named(
        tmp_path: Path, alice: pysequoia.Tsk, mallory: pysequoia.Tsk) -> None:
    good = sign(alice)
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [b"garbage", sign(mallory), good])
    assert decided(g)["requirements"][0]["signature"] == "sig-3"
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [b"garbage", sign(mallory)])
    with pytest.raises(PolicyRefusal) as caught:
        decided(g)
    assert "no valid signature: sig-1: " in str(caught.value) and str(caught.value).endswith("(and 1 more)")


def test_the_signed_digest_must_be_of_these_manifest_bytes(tmp_path: Path, alice: pysequoia.Tsk) -> None:
    other = Digest.of_bytes(b"another manifest")
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [sign(alice, digest=str(other))])
    with pytest.raises(PolicyRefusal, match=f"signed manifest {other} is not this image's"):
        decided(g)
    sha512 = Digest.of_bytes(MANIFEST, "sha512")
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [sign(alice, digest=str(sha512))])
    assert decided(g)["requirements"][0]["type"] == "signedBy"  # the payload's algorithm, the same bytes


def test_the_identity_rule_decides(tmp_path: Path, alice: pysequoia.Tsk) -> None:
    moved = sign(alice, identity="registry.example/team/app:2")
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [moved])
    with pytest.raises(PolicyRefusal, match="signed identity 'registry.example/team/app:2' is not accepted"):
        decided(g)
    rule = {"signedIdentity": {"type": "matchRepository"}}
    g = gate(tmp_path, {"default": [signed_by(alice, **rule)]}, [moved])
    assert decided(g)["requirements"][0]["identity"] == "registry.example/team/app:2"


def test_no_signature_at_all(tmp_path: Path, alice: pysequoia.Tsk) -> None:
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [])
    with pytest.raises(PolicyRefusal, match="signedBy needs a signature, and none was found"):
        decided(g)


def test_the_most_specific_scope_wins_without_merging(tmp_path: Path, alice: pysequoia.Tsk) -> None:
    policy = {"default": [{"type": "reject"}],
              "transports": {"docker": {"registry.example": [{"type": "reject"}],
                                        "registry.example/team": [{"type": "insecureAcceptAnything"}]}}}
    trust = decided(gate(tmp_path, policy, []))
    assert trust["scope"] == 'transports.docker["registry.example/team"]'
    assert trust["requirements"] == [{"type": "insecureAcceptAnything"}]


def test_requirements_podrun_cannot_check_refuse(tmp_path: Path) -> None:
    fulcio = {"type": "sigstoreSigned", "fulcio": {"caPath": "/ca.pem", "oidcIssuer": "https://i",
                                                   "subjectEmail": "a@b"}, "rekorPublicKeyPath": "/r.pem"}
    g = gate(tmp_path, {"default": [fulcio]}, [])
    with pytest.raises(PolicyRefusal, match="cannot check yet"):
        decided(g)


def test_insecure_skips_the_policy_and_says_so(tmp_path: Path) -> None:
    g = gate(tmp_path, {"default": [{"type": "reject"}]}, [], insecure=True)
    assert decided(g) == {"insecure": True}
    assert g.admit_local(ImageReference("oci", path=str(tmp_path))) == {"insecure": True}


def test_local_sources_carry_no_signatures(tmp_path: Path, alice: pysequoia.Tsk) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    ref = ImageReference("oci", path=str(layout))
    with pytest.raises(PolicyRefusal, match=r"oci:.*: refused by policy .*signedBy needs a signature, and oci: "
                                            "images carry none"):
        gate(tmp_path, {"default": [signed_by(alice)]}, []).admit_local(ref)
    with pytest.raises(PolicyRefusal, match=r"\(scope default\): rejected$"):
        gate(tmp_path, {"default": [{"type": "reject"}]}, []).admit_local(ref)
    policy = {"default": [{"type": "reject"}],
              "transports": {"oci": {str(layout): [{"type": "insecureAcceptAnything"}]}}}
    trust = gate(tmp_path, policy, []).admit_local(ref)
    assert trust["requirements"] == [{"type": "insecureAcceptAnything"}]
    assert trust["scope"] == f"transports.oci[{json.dumps(str(layout))}]"


def test_a_missing_policy_is_refused_before_anything(tmp_path: Path) -> None:
    g = PolicyGate(str(tmp_path / "none.json"), None, False)
    with pytest.raises(UsageError, match="podrun trust set"):
        g.policy()


def test_matches_bytes() -> None:
    assert decide._matches_bytes(str(DIGEST), MANIFEST)
    assert decide._matches_bytes(str(Digest.of_bytes(MANIFEST, "sha512")), MANIFEST)
    assert not decide._matches_bytes(str(DIGEST), MANIFEST + b" ")
    assert not decide._matches_bytes("sha256:" + "A" * 64, MANIFEST)
    assert not decide._matches_bytes("md5:abc", MANIFEST)
    assert not decide._matches_bytes(str(DIGEST) + "\n", MANIFEST)


# ---- sigstore (cosign) keys, key files, and which signatures reach the checks -----------------

def _p256() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def cosign_gate(tmp_path: Path, policy: dict[str, Any], sigs: list[FoundSignature]) -> PolicyGate:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    g = PolicyGate(str(path), None, False)
    g._signatures = lambda kind, ref, digest, source: sigs if kind == COSIGN else []  # type: ignore[method-assign]
    return g


def cosign_sig(private: bytes, digest: str = str(DIGEST), identity: str = "registry.example/team/app:1",
               origin: str = "attachment-1") -> FoundSignature:
    payload = cosign.payload(digest, identity)
    return FoundSignature(COSIGN, payload, origin, cosign.sign(payload, private))


def test_sigstore_signed_with_key_data_and_key_files(tmp_path: Path) -> None:
    private, public = _p256()
    other_private, other_public = _p256()
    (tmp_path / "a.pem").write_bytes(public)
    (tmp_path / "b.pem").write_bytes(other_public)
    name = cosign.load_public_keys(data=public)[0].name
    by_data = {"type": "sigstoreSigned", "keyData": base64.b64encode(public).decode()}
    trust = decided(cosign_gate(tmp_path, {"default": [by_data]}, [cosign_sig(private)]))
    assert trust["requirements"] == [{"type": "sigstoreSigned", "key": name, "signature": "attachment-1",
                                      "identity": "registry.example/team/app:1"}]
    by_datas = {"type": "sigstoreSigned", "keyDatas": [base64.b64encode(k).decode() for k in (other_public, public)]}
    assert decided(cosign_gate(tmp_path, {"default": [by_datas]}, [cosign_sig(private)]))["requirements"][0]["key"] == name
    by_path = {"type": "sigstoreSigned", "keyPath": str(tmp_path / "a.pem")}
    assert decided(cosign_gate(tmp_path, {"default": [by_path]}, [cosign_sig(private)]))["requirements"][0]["key"] == name
    by_paths = {"type": "sigstoreSigned", "keyPaths": [str(tmp_path / "b.pem"), str(tmp_path / "a.pem")]}
    assert decided(cosign_gate(tmp_path, {"default": [by_paths]}, [cosign_sig(private)]))["requirements"][0]["key"] == name
    with pytest.raises(PolicyRefusal, match="no valid signature: attachment-1: "):
        decided(cosign_gate(tmp_path, {"default": [by_path]}, [cosign_sig(other_private)]))


def test_a_cosign_layer_without_its_signature_annotation(tmp_path: Path) -> None:
    private, public = _p256()
    bare = FoundSignature(COSIGN, cosign.payload(str(DIGEST), "registry.example/team/app:1"), "attachment-1")
    policy = {"default": [{"type": "sigstoreSigned", "keyData": base64.b64encode(public).decode()}]}
    with pytest.raises(PolicyRefusal, match="attachment-1: no signature annotation$"):
        decided(cosign_gate(tmp_path, policy, [bare]))
    assert decided(cosign_gate(tmp_path, policy, [bare, cosign_sig(private, origin="attachment-2")]))[
        "requirements"][0]["signature"] == "attachment-2"


def test_signed_by_key_files(tmp_path: Path, alice: pysequoia.Tsk, mallory: pysequoia.Tsk) -> None:
    (tmp_path / "alice.gpg").write_bytes(bytes(alice.extract_certificate()))
    (tmp_path / "mallory.gpg").write_bytes(bytes(mallory.extract_certificate()))
    one = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(tmp_path / "alice.gpg")}
    assert decided(gate(tmp_path, {"default": [one]}, [sign(alice)]))["requirements"][0]["type"] == "signedBy"
    many = {"type": "signedBy", "keyType": "GPGKeys",
            "keyPaths": [str(tmp_path / "mallory.gpg"), str(tmp_path / "alice.gpg")]}
    assert decided(gate(tmp_path, {"default": [many]}, [sign(alice)]))["requirements"][0]["signature"] == "sig-1"
    with pytest.raises(PolicyRefusal):
        decided(gate(tmp_path, {"default": [one]}, [sign(mallory)]))


def test_a_good_signature_after_each_kind_of_bad_one(tmp_path: Path, alice: pysequoia.Tsk) -> None:
    wrong_digest = sign(alice, digest=str(Digest.of_bytes(b"x")))
    wrong_identity = sign(alice, identity="registry.example/other/app:1")
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [wrong_digest, wrong_identity, sign(alice)])
    assert decided(g)["requirements"][0]["signature"] == "sig-3"
    g = gate(tmp_path, {"default": [signed_by(alice)]}, [wrong_identity])
    with pytest.raises(PolicyRefusal) as caught:
        decided(g)
    assert not str(caught.value).endswith("more)")  # one reason: no "(and N more)"


def test_signatures_are_looked_up_for_this_reference_and_digest_once(tmp_path: Path, alice: pysequoia.Tsk) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"default": [signed_by(alice), signed_by(alice)]}))
    g = PolicyGate(str(path), None, False)
    asked: list[tuple[str, object, object, object]] = []
    source = object()

    def signatures(kind: str, ref: object, digest: object, src: object) -> list[FoundSignature]:
        asked.append((kind, ref, digest, src))
        return [FoundSignature(SIMPLE, sign(alice), "sig-1")]

    g._signatures = signatures  # type: ignore[method-assign, assignment]
    g.decide_registry(REF, source, MANIFEST, DIGEST)  # type: ignore[arg-type]
    assert asked == [(SIMPLE, REF, DIGEST, source)]
