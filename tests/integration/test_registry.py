"""The ``docker://`` client against Debian's docker-registry (main flows), directly and through
the CLI.  The scriptable fake registry's cases (auth realms, redirects, retries, hostile answers —
SECURITY-TESTS case 10) need no root: tests/unit/test_registry_client.py."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from podrun.errors import FetchError, LimitExceededError, NotFoundError
from podrun.image import mediatypes as mt
from podrun.image.digest import Digest
from tests.conftest import PodrunRunner, require_root
from tests.fixtures import images as img
from tests.fixtures.registry import (
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    RunningRegistry,
    auth_registry,
    registry,
    write_auth_file,
)
from tests.fixtures.registry_client import LIMIT, busybox, check_image, source

__all__ = ["auth_registry", "busybox", "registry"]  # fixtures, imported for pytest to find



@pytest.fixture(scope="module")
def pushed(registry: RunningRegistry, busybox: img.BuiltImage) -> RunningRegistry:
    registry.push(busybox.layout, "latest", "test/busybox:latest")
    return registry


@pytest.fixture(scope="module")
def pushed_auth(auth_registry: RunningRegistry, busybox: img.BuiltImage) -> RunningRegistry:
    auth_registry.push(busybox.layout, "latest", "test/busybox:latest")
    return auth_registry


# -- real registry ---------------------------------------------------------------------------------

def test_anonymous_pull_manifest_and_blobs(pushed: RunningRegistry, busybox: img.BuiltImage) -> None:
    src = source(f"{pushed.host}/test/busybox:latest")
    try:
        assert src.description == f"docker://{pushed.host}/test/busybox:latest"
        assert src.default_name == f"{pushed.host}/test/busybox:latest"
        check_image(src, busybox)
    finally:
        src.close()


def test_pull_by_digest_sets_expected_digest(pushed: RunningRegistry, busybox: img.BuiltImage) -> None:
    src = source(f"{pushed.host}/test/busybox@{busybox.manifest_digest}")
    try:
        assert src.default_name is None
        top = src.top_manifest(LIMIT)
        assert top.expected_digest == Digest.parse(busybox.manifest_digest)
        again = src.manifest_by_digest(Digest.parse(busybox.manifest_digest), LIMIT)
        assert again.data == top.data
    finally:
        src.close()


def test_unknown_tag_repo_and_blob_are_not_found(pushed: RunningRegistry) -> None:
    src = source(f"{pushed.host}/test/busybox:nope")
    with pytest.raises(NotFoundError, match="test/busybox:nope"):
        src.top_manifest(LIMIT)
    missing = Digest.of_bytes(b"not there")
    with pytest.raises(NotFoundError, match=missing.hex):
        src.open_blob(missing, 9)
    src.close()
    with pytest.raises(NotFoundError, match="test/absent"):
        source(f"{pushed.host}/test/absent:latest").top_manifest(LIMIT)


def test_manifest_over_limit_real_registry(pushed: RunningRegistry) -> None:
    with pytest.raises(LimitExceededError, match="limit exceeded"):
        source(f"{pushed.host}/test/busybox:latest").top_manifest(100)


def test_basic_auth_with_auth_file(pushed_auth: RunningRegistry, busybox: img.BuiltImage,
                                   tmp_path: Path) -> None:
    auth_file = write_auth_file(tmp_path / "auth.json", pushed_auth.host, REGISTRY_USER, REGISTRY_PASSWORD)
    src = source(f"{pushed_auth.host}/test/busybox:latest", env={"REGISTRY_AUTH_FILE": str(auth_file)})
    try:
        check_image(src, busybox)
    finally:
        src.close()


def test_basic_auth_missing_credentials(pushed_auth: RunningRegistry) -> None:
    src = source(f"{pushed_auth.host}/test/busybox:latest")
    with pytest.raises(FetchError, match=f"authentication required by registry {pushed_auth.host}") as info:
        src.top_manifest(LIMIT)
    assert info.value.hint and "REGISTRY_AUTH_FILE" in info.value.hint


def test_basic_auth_wrong_credentials(pushed_auth: RunningRegistry, tmp_path: Path) -> None:
    auth_file = write_auth_file(tmp_path / "auth.json", pushed_auth.host, REGISTRY_USER, "wrong")
    src = source(f"{pushed_auth.host}/test/busybox:latest", env={"REGISTRY_AUTH_FILE": str(auth_file)})
    with pytest.raises(FetchError, match=f"rejected the credentials for user '{REGISTRY_USER}'.*{pushed_auth.host}"):
        src.top_manifest(LIMIT)


def _two_platform_layout(layout: Path) -> tuple[str, dict[str, str]]:
    """An OCI layout whose ref ``multi`` is an index of an amd64 and an arm64 image."""
    layers = [img.tar_bytes(img.busybox_entries())]
    children = {}
    for arch in ("amd64", "arm64"):
        built = img.write_oci_layout(layout, layers, ref=None, architecture=arch,
                                     config={"architecture": arch})
        children[arch] = built.manifest_digest
    descs = []
    for arch, digest in children.items():
        size = (layout / "blobs" / "sha256" / digest.split(":")[1]).stat().st_size
        descs.append({"mediaType": mt.OCI_MANIFEST, "digest": digest, "size": size,
                      "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": mt.OCI_INDEX, "manifests": descs}).encode()
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    (layout / "blobs" / "sha256" / index_digest.split(":")[1]).write_bytes(index)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": mt.OCI_INDEX, "digest": index_digest, "size": len(index),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    return index_digest, children


def test_index_is_returned_as_index(registry: RunningRegistry, tmp_path: Path) -> None:
    index_digest, children = _two_platform_layout(tmp_path / "multi")
    registry.push(tmp_path / "multi", "multi", "test/multi:latest", all_images=True)
    src = source(f"{registry.host}/test/multi:latest")
    try:
        top = src.top_manifest(LIMIT)
        assert top.media_type == mt.OCI_INDEX
        assert "sha256:" + hashlib.sha256(top.data).hexdigest() == index_digest
        listed = {m["platform"]["architecture"]: m["digest"] for m in json.loads(top.data)["manifests"]}
        assert listed == children
        for digest in children.values():
            child = src.manifest_by_digest(Digest.parse(digest), LIMIT)
            assert child.media_type == mt.OCI_MANIFEST
            assert child.expected_digest == Digest.parse(digest)
            assert "sha256:" + hashlib.sha256(child.data).hexdigest() == digest
    finally:
        src.close()


# -- end to end through the CLI ------------------------------------------------------------------------

def test_cli_fetch_from_registry(pushed: RunningRegistry, busybox: img.BuiltImage, podrun: PodrunRunner) -> None:
    require_root()
    image_id = podrun("fetch", f"docker://{pushed.host}/test/busybox:latest").stdout.strip()
    assert image_id == busybox.manifest_digest
    names = json.dumps(json.loads(podrun("image", "list", "--format", "json").stdout))
    assert f"{pushed.host}/test/busybox:latest" in names


def test_cli_fetch_with_auth_and_errors(pushed_auth: RunningRegistry, busybox: img.BuiltImage,
                                        podrun: PodrunRunner, tmp_path: Path) -> None:
    require_root()
    image = f"docker://{pushed_auth.host}/test/busybox:latest"
    denied = podrun("fetch", image, check=False, env={"REGISTRY_AUTH_FILE": str(tmp_path / "none.json")})
    assert denied.returncode == FetchError.exit_code
    assert "authentication required" in denied.stderr and "Traceback" not in denied.stderr
    auth_file = write_auth_file(tmp_path / "auth.json", pushed_auth.host, REGISTRY_USER, REGISTRY_PASSWORD)
    out = podrun("fetch", image, env={"REGISTRY_AUTH_FILE": str(auth_file)}).stdout.strip()
    assert out == busybox.manifest_digest
    missing = podrun("fetch", image.replace(":latest", ":nope"), check=False,
                     env={"REGISTRY_AUTH_FILE": str(auth_file)})
    assert missing.returncode == NotFoundError.exit_code


def test_cli_fetch_platform_from_index(registry: RunningRegistry, podrun: PodrunRunner, tmp_path: Path) -> None:
    require_root()
    _, children = _two_platform_layout(tmp_path / "multi")
    registry.push(tmp_path / "multi", "multi", "test/multi2:latest", all_images=True)
    out = podrun("fetch", "--platform", "linux/arm64", f"docker://{registry.host}/test/multi2:latest")
    assert out.stdout.strip() == children["arm64"]
