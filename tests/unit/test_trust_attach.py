"""The sigstore attachment podrun builds (podrun.trust.attach.build_attachment), as data: the
shape cosign pushes, appending to what is there, no duplicate layer, the bounds a verifier
applies.  Pushing it to a real registry: tests/integration/test_trust_attach.py."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from podrun.errors import LimitExceededError, VerificationError
from podrun.image.digest import Digest
from podrun.trust import attach, sources

CREATED = "2026-12-01T08:00:00Z"
PAYLOAD = b'{"critical":{"identity":{"docker-reference":"h/r:1"}}}'


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def built(existing: object | None, payload: bytes = PAYLOAD, signature: str = "c2lnLTE=") -> tuple[dict[str, Any], dict[str, Any]]:
    result = attach.build_attachment(existing, payload, signature, CREATED)
    assert result is not None
    config, manifest = result
    doc = json.loads(manifest)
    assert doc["config"] == {"mediaType": "application/vnd.oci.image.config.v1+json", "size": len(config),
                             "digest": sha256(config)}
    return json.loads(config), doc


def test_a_first_signature_is_an_attachment_as_cosign_pushes_it() -> None:
    config, manifest = built(None)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == sources.OCI_MANIFEST
    assert manifest["layers"] == [{
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "size": len(PAYLOAD),
        "digest": sha256(PAYLOAD), "annotations": {"dev.cosignproject.cosign/signature": "c2lnLTE="}}]
    assert config == {"architecture": "", "created": CREATED, "history": [{"created": "0001-01-01T00:00:00Z"}],
                      "os": "", "rootfs": {"type": "layers", "diff_ids": [sha256(PAYLOAD)]}, "config": {}}
    assert sources.attachment_layers(manifest, "t") == [(Digest.parse(sha256(PAYLOAD)), len(PAYLOAD),
                                                         "c2lnLTE=")]


def test_a_signature_is_appended_and_other_layers_are_kept() -> None:
    _, first = built(None)
    other = {"mediaType": "application/vnd.dsse.envelope.v1+json", "size": 3, "digest": sha256(b"att"),
             "annotations": {"x": "y"}}
    first["layers"].append(other)
    config, manifest = built(first, PAYLOAD + b" ", "c2lnLTI=")
    assert manifest["layers"][:2] == first["layers"]
    assert manifest["layers"][2]["digest"] == sha256(PAYLOAD + b" ")
    assert config["rootfs"]["diff_ids"] == [sha256(PAYLOAD), sha256(b"att"), sha256(PAYLOAD + b" ")]
    assert len(config["history"]) == 3


def test_an_identical_signature_is_not_added_twice() -> None:
    _, first = built(None)
    assert attach.build_attachment(first, PAYLOAD, "c2lnLTE=", CREATED) is None
    _, second = built(first, PAYLOAD, "b3RoZXI=")  # the same payload signed again (ECDSA differs)
    assert [layer["annotations"] for layer in second["layers"]] == [
        {sources.SIGSTORE_ANNOTATION: "c2lnLTE="}, {sources.SIGSTORE_ANNOTATION: "b3RoZXI="}]


def test_no_more_signatures_than_a_verifier_reads() -> None:
    _, doc = built(None)
    doc["layers"] = doc["layers"] * sources.MAX_SIGNATURES
    with pytest.raises(LimitExceededError):
        attach.build_attachment(doc, PAYLOAD + b" ", "c2ln", CREATED)
    doc["layers"].pop()
    _, full = built(doc, PAYLOAD + b" ", "c2ln")
    assert len(full["layers"]) == sources.MAX_SIGNATURES


@pytest.mark.parametrize("existing", [{}, {"layers": "x"}, [], {"layers": [{"mediaType": sources.SIGSTORE_PAYLOAD}]}])
def test_an_existing_tag_that_is_no_attachment_is_refused(existing: object) -> None:
    with pytest.raises(VerificationError):
        attach.build_attachment(existing, PAYLOAD, "c2ln", CREATED)
