"""RegistrySource's push (put_blob, put_manifest) and podrun.trust.attach against the scriptable
fake registry: a token asked for with ``pull,push`` scope, blobs the registry has not uploaded
again, upload locations relative or absolute but on the registry's origin only (credentials never
sent elsewhere).  No root; pushing to Debian's docker-registry: tests/integration/test_trust_attach.py."""

from __future__ import annotations

import json

import pytest

from podrun.errors import FetchError
from podrun.image.digest import Digest
from podrun.image.reference import parse_docker_name
from podrun.image.registry import RegistrySource
from podrun.trust import attach, sources
from tests.fixtures import fakeregistry as fr
from tests.fixtures import images as img
from tests.fixtures.registry_client import busybox, source

__all__ = ["busybox"]  # a fixture, imported for pytest to find

ENV = {"HOME": "/nonexistent", "REGISTRY_AUTH_FILE": "/nonexistent/auth.json"}


def opened(fake: fr.FakeRegistry) -> RegistrySource:
    return source(f"{fake.host}/test/busybox:latest", env=ENV)


def uploads(fake: fr.FakeRegistry) -> list[str]:
    return [s.path for s in fake.seen if "/blobs/uploads/" in s.path]


def test_push_with_a_pull_push_token(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(), busybox.layout) as fake:
        fake.behaviour.bearer_realm = f"{fake.url}/token"
        src = opened(fake)
        try:
            data = b"a new blob"
            src.put_blob(data, Digest.of_bytes(data))
            assert fake.blobs[str(Digest.of_bytes(data))] == data
            token_requests = [s.path for s in fake.seen if s.path.startswith("/token")]
            assert token_requests and all("pull%2Cpush" in p for p in token_requests)
            # PUT to the upload location with ?digest= added to its own query
            assert any(p.startswith("/v2/test/busybox/blobs/uploads/u1?_state=s1&digest=sha256%3A")
                       for p in uploads(fake))
            before = len(uploads(fake))
            src.put_blob(data, Digest.of_bytes(data))  # the registry has it: HEAD only
            assert len(uploads(fake)) == before
            src.put_manifest("v1", b'{"schemaVersion": 2}', sources.OCI_MANIFEST)
            assert fake.tags["v1"] == str(Digest.of_bytes(b'{"schemaVersion": 2}'))
            assert fake.media_types[fake.tags["v1"]] == sources.OCI_MANIFEST
        finally:
            src.close()


def test_an_absolute_upload_location_on_the_registry_is_followed(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(), busybox.layout) as fake:
        fake.behaviour.upload_location = f"{fake.url}/v2/test/busybox/blobs/uploads/abs"
        src = opened(fake)
        try:
            src.put_blob(b"x", Digest.of_bytes(b"x"))
            assert str(Digest.of_bytes(b"x")) in fake.blobs
        finally:
            src.close()


@pytest.mark.parametrize("where", ["host", "port", "scheme"])
def test_an_upload_location_off_the_origin_is_refused(busybox: img.BuiltImage, where: str) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(), busybox.layout) as fake, \
            fr.serve("127.0.0.2" if where == "host" else "127.0.0.1", fr.Behaviour()) as other:
        fake.behaviour.bearer_realm = f"{fake.url}/token"
        target = other.url if where != "scheme" else f"https://{fake.host}"
        fake.behaviour.upload_location = f"{target}/v2/test/busybox/blobs/uploads/u2"
        src = opened(fake)
        try:
            with pytest.raises(FetchError, match="upload location off its origin"):
                src.put_blob(b"y", Digest.of_bytes(b"y"))
        finally:
            src.close()
        assert other.seen == []
        assert str(Digest.of_bytes(b"y")) not in fake.blobs


def test_attach_appends_to_the_attachment_in_the_registry(busybox: img.BuiltImage) -> None:
    digest = busybox.manifest_digest
    with fr.serve("127.0.0.1", fr.Behaviour(), busybox.layout) as fake:
        fake.behaviour.bearer_realm = f"{fake.url}/token"
        ref = parse_docker_name(f"{fake.host}/test/busybox:latest")
        src = opened(fake)
        try:
            assert attach.attach_cosign_signature(src, ref, digest, b"payload-1", "c2lnMQ==") == \
                f"{fake.host}/test/busybox:{digest.replace(':', '-')}.sig"
            attach.attach_cosign_signature(src, ref, digest, b"payload-2", "c2lnMg==")
            puts = len([s for s in fake.seen if "/manifests/" in s.path])
            attach.attach_cosign_signature(src, ref, digest, b"payload-2", "c2lnMg==")  # already there
            assert len([s for s in fake.seen if "/manifests/" in s.path]) == puts + 1  # the GET alone
            found = sources.cosign_signatures(ref, digest, src)
        finally:
            src.close()
    assert [(s.blob, s.cosign_signature) for s in found] == [(b"payload-1", "c2lnMQ=="), (b"payload-2", "c2lnMg==")]
    manifest = json.loads(fake.blobs[fake.tags[digest.replace(":", "-") + ".sig"]])
    assert json.loads(fake.blobs[manifest["config"]["digest"]])["rootfs"]["diff_ids"] == [
        str(Digest.of_bytes(b"payload-1")), str(Digest.of_bytes(b"payload-2"))]
