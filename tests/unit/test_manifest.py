"""Manifest, index and config validation (SECURITY-TESTS cases 7 and 8)."""

from __future__ import annotations

import json

import pytest

from podrun.errors import NotFoundError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.digest import Digest
from podrun.image.manifest import (
    Index,
    Manifest,
    Platform,
    parse_config,
    parse_manifest_or_index,
    select_platform,
    verify_manifest_bytes,
)
from podrun.image.source import ManifestBytes

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def manifest(**over: object) -> bytes:
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_MANIFEST,
        "config": {"mediaType": mt.OCI_CONFIG, "digest": D1, "size": 10},
        "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": 20}],
    }
    doc.update(over)
    return json.dumps(doc).encode()


def test_valid_manifest() -> None:
    m = parse_manifest_or_index(ManifestBytes(manifest(), mt.OCI_MANIFEST), "img")
    assert isinstance(m, Manifest)
    assert m.layers[0].digest == Digest.parse(D2)


@pytest.mark.parametrize(
    ("data", "declared", "message"),
    [
        (manifest(), mt.DOCKER_MANIFEST, "media type mismatch"),
        (manifest(schemaVersion=1), mt.OCI_MANIFEST, "schema1"),
        (b"{}", mt.DOCKER_SCHEMA1_SIGNED, "schema1"),
        (manifest(layers=[{"mediaType": "text/plain", "digest": D2, "size": 1}]), mt.OCI_MANIFEST, "layer media type"),
        (manifest(layers=[{"mediaType": mt.OCI_LAYER_GZIP, "digest": "sha256:xyz", "size": 1}]), mt.OCI_MANIFEST,
         "malformed digest"),
        (manifest(layers=[{"mediaType": mt.OCI_LAYER_GZIP, "digest": D2, "size": -1}]), mt.OCI_MANIFEST, "invalid size"),
        (manifest(config={"mediaType": "application/json", "digest": D1, "size": 1}), mt.OCI_MANIFEST,
         "config media type"),
        (b"[1,2]", mt.OCI_MANIFEST, "JSON object"),
        (b"\xff\xfe", mt.OCI_MANIFEST, "not valid JSON"),
    ],
)
def test_bad_manifests(data: bytes, declared: str, message: str) -> None:
    with pytest.raises(VerificationError, match=message):
        parse_manifest_or_index(ManifestBytes(data, declared), "img")


def test_manifest_digest_checked() -> None:
    data = manifest()
    with pytest.raises(VerificationError, match="does not match"):
        verify_manifest_bytes(ManifestBytes(data, mt.OCI_MANIFEST, Digest.parse(D1)), "img")
    assert verify_manifest_bytes(ManifestBytes(data, mt.OCI_MANIFEST, Digest.of_bytes(data)), "img") == Digest.of_bytes(data)


def test_platform_selection() -> None:
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {"mediaType": mt.OCI_MANIFEST, "digest": D1, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": mt.OCI_MANIFEST, "digest": D2, "size": 1,
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        ],
    }
    idx = parse_manifest_or_index(ManifestBytes(json.dumps(index).encode(), mt.OCI_INDEX), "img")
    assert isinstance(idx, Index)
    assert select_platform(idx, Platform.parse("linux/amd64"), "img").digest == Digest.parse(D1)
    assert select_platform(idx, Platform.parse("linux/arm64"), "img").digest == Digest.parse(D2)
    with pytest.raises(NotFoundError, match="linux/s390x"):
        select_platform(idx, Platform.parse("linux/s390x"), "img")


def config(**cfg: object) -> bytes:
    return json.dumps({"rootfs": {"type": "layers", "diff_ids": [D1]}, "config": cfg}).encode()


def test_config_checks() -> None:
    assert parse_config(config(Cmd=["/bin/sh"]), 1, "c").diff_ids == (Digest.parse(D1),)
    with pytest.raises(VerificationError, match="diff_ids"):
        parse_config(config(), 2, "c")
    with pytest.raises(VerificationError, match="WorkingDir"):
        parse_config(config(WorkingDir="relative/dir"), 1, "c")
    with pytest.raises(VerificationError, match="NUL"):
        parse_config(config(User="root\0"), 1, "c")
    with pytest.raises(VerificationError, match="volume"):
        parse_config(config(Volumes={"/data/../../etc": {}}), 1, "c")
    with pytest.raises(VerificationError, match="Cmd"):
        parse_config(config(Cmd="/bin/sh"), 1, "c")
