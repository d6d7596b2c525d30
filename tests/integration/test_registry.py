"""The ``docker://`` client against Debian's docker-registry (main flows) and the scriptable fake
registry (auth realms, redirects, retries, hostile answers — SECURITY-TESTS case 10)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest

from podrun.errors import FetchError, LimitExceededError, NotFoundError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.digest import Digest
from podrun.image.reference import parse_docker_name
from podrun.image.registry import RegistrySource
from tests.conftest import PodrunRunner, require_root
from tests.fixtures import fakeregistry as fr
from tests.fixtures import images as img
from tests.fixtures.registry import (
    REGISTRY_PASSWORD,
    REGISTRY_USER,
    RunningRegistry,
    auth_registry,
    registry,
    write_auth_file,
)

__all__ = ["auth_registry", "registry"]  # fixtures, imported for pytest to find

LIMIT = 4 << 20


def _source(name: str, env: dict[str, str] | None = None, **kw: object) -> RegistrySource:
    return RegistrySource(parse_docker_name(name), env=env or {"HOME": "/nonexistent"}, **kw)  # type: ignore[arg-type]


def _read_all(src: RegistrySource, digest: str, size: int) -> bytes:
    stream = src.open_blob(Digest.parse(digest), size)
    try:
        return stream.read()
    finally:
        stream.close()


def _check_image(src: RegistrySource, built: img.BuiltImage) -> None:
    """Pull the top manifest and every blob; each must hash to its digest."""
    top = src.top_manifest(LIMIT)
    assert top.media_type == mt.OCI_MANIFEST
    assert "sha256:" + hashlib.sha256(top.data).hexdigest() == built.manifest_digest
    manifest = json.loads(top.data)
    for desc in [manifest["config"], *manifest["layers"]]:
        data = _read_all(src, desc["digest"], desc["size"])
        assert len(data) == desc["size"]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == desc["digest"]


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> img.BuiltImage:
    return img.busybox_image(tmp_path_factory.mktemp("busybox") / "layout")


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
    src = _source(f"{pushed.host}/test/busybox:latest")
    try:
        assert src.description == f"docker://{pushed.host}/test/busybox:latest"
        assert src.default_name == f"{pushed.host}/test/busybox:latest"
        _check_image(src, busybox)
    finally:
        src.close()


def test_pull_by_digest_sets_expected_digest(pushed: RunningRegistry, busybox: img.BuiltImage) -> None:
    src = _source(f"{pushed.host}/test/busybox@{busybox.manifest_digest}")
    try:
        assert src.default_name is None
        top = src.top_manifest(LIMIT)
        assert top.expected_digest == Digest.parse(busybox.manifest_digest)
        again = src.manifest_by_digest(Digest.parse(busybox.manifest_digest), LIMIT)
        assert again.data == top.data
    finally:
        src.close()


def test_unknown_tag_repo_and_blob_are_not_found(pushed: RunningRegistry) -> None:
    src = _source(f"{pushed.host}/test/busybox:nope")
    with pytest.raises(NotFoundError, match="test/busybox:nope"):
        src.top_manifest(LIMIT)
    missing = Digest.of_bytes(b"not there")
    with pytest.raises(NotFoundError, match=missing.hex):
        src.open_blob(missing, 9)
    src.close()
    with pytest.raises(NotFoundError, match="test/absent"):
        _source(f"{pushed.host}/test/absent:latest").top_manifest(LIMIT)


def test_manifest_over_limit_real_registry(pushed: RunningRegistry) -> None:
    with pytest.raises(LimitExceededError, match="limit exceeded"):
        _source(f"{pushed.host}/test/busybox:latest").top_manifest(100)


def test_basic_auth_with_auth_file(pushed_auth: RunningRegistry, busybox: img.BuiltImage,
                                   tmp_path: Path) -> None:
    auth_file = write_auth_file(tmp_path / "auth.json", pushed_auth.host, REGISTRY_USER, REGISTRY_PASSWORD)
    src = _source(f"{pushed_auth.host}/test/busybox:latest", env={"REGISTRY_AUTH_FILE": str(auth_file)})
    try:
        _check_image(src, busybox)
    finally:
        src.close()


def test_basic_auth_missing_credentials(pushed_auth: RunningRegistry) -> None:
    src = _source(f"{pushed_auth.host}/test/busybox:latest")
    with pytest.raises(FetchError, match=f"authentication required by registry {pushed_auth.host}") as info:
        src.top_manifest(LIMIT)
    assert info.value.hint and "REGISTRY_AUTH_FILE" in info.value.hint


def test_basic_auth_wrong_credentials(pushed_auth: RunningRegistry, tmp_path: Path) -> None:
    auth_file = write_auth_file(tmp_path / "auth.json", pushed_auth.host, REGISTRY_USER, "wrong")
    src = _source(f"{pushed_auth.host}/test/busybox:latest", env={"REGISTRY_AUTH_FILE": str(auth_file)})
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
    src = _source(f"{registry.host}/test/multi:latest")
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


# -- fake registry -----------------------------------------------------------------------------------

CREDS = ("bob", "fake-pass")
BASIC = "Basic " + base64.b64encode(":".join(CREDS).encode()).decode()


class AuthEnv(dict[str, str]):
    """An environment whose REGISTRY_AUTH_FILE gets CREDS for each host passed to allow()."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(REGISTRY_AUTH_FILE=str(tmp_path / "auth.json"), HOME=str(tmp_path))
        self.path = tmp_path / "auth.json"
        self.path.write_text(json.dumps({"auths": {}}))

    def allow(self, host: str) -> None:
        doc = json.loads(self.path.read_text())
        doc["auths"][host] = {"auth": base64.b64encode(":".join(CREDS).encode()).decode()}
        self.path.write_text(json.dumps(doc))


@pytest.fixture
def fake_env(tmp_path: Path) -> AuthEnv:
    return AuthEnv(tmp_path)


def _fake_source(fake: fr.FakeRegistry, env: dict[str, str], **kw: object) -> RegistrySource:
    return _source(f"{fake.host}/test/busybox:latest", env=env, **kw)


def test_bearer_same_host_realm_gets_credentials(busybox: img.BuiltImage, fake_env: AuthEnv) -> None:
    behaviour = fr.Behaviour(token_requires=CREDS)
    with fr.serve("127.0.0.1", behaviour, busybox.layout) as fake:
        behaviour.bearer_realm = f"{fake.url}/token"
        fake_env.allow(fake.host)
        src = _fake_source(fake, fake_env)
        try:
            _check_image(src, busybox)
        finally:
            src.close()
        assert fake.authorizations("/token") == [BASIC]  # one token, cached for the source's life
        v2 = fake.authorizations("/v2/")
        assert v2[0] is None and set(v2[1:]) == {f"Bearer {fr.TOKEN}"}


def test_bearer_realm_on_other_host_gets_no_credentials(busybox: img.BuiltImage,
                                                         fake_env: AuthEnv) -> None:
    with fr.serve("127.0.0.2") as tokens, fr.serve("127.0.0.1", layout=busybox.layout) as fake:
        fake.behaviour.bearer_realm = f"{tokens.url}/token"
        fake_env.allow(fake.host)
        src = _fake_source(fake, fake_env)
        try:
            _check_image(src, busybox)
        finally:
            src.close()
        assert tokens.authorizations("/token") == [None]
        assert all(a != BASIC for a in fake.authorizations())


def test_bearer_other_host_realm_requiring_creds_fails_cleanly(busybox: img.BuiltImage,
                                                               fake_env: AuthEnv) -> None:
    with fr.serve("127.0.0.2", fr.Behaviour(token_requires=CREDS)) as tokens, \
            fr.serve("127.0.0.1", layout=busybox.layout) as fake:
        fake.behaviour.bearer_realm = f"{tokens.url}/token"
        fake_env.allow(fake.host)
        with pytest.raises(FetchError, match="authentication required"):
            _fake_source(fake, fake_env).top_manifest(LIMIT)
        assert tokens.authorizations() == [None]


def test_bearer_wrong_credentials(busybox: img.BuiltImage, fake_env: AuthEnv) -> None:
    behaviour = fr.Behaviour(token_requires=("bob", "other"))
    with fr.serve("127.0.0.1", behaviour, busybox.layout) as fake:
        behaviour.bearer_realm = f"{fake.url}/token"
        fake_env.allow(fake.host)
        with pytest.raises(FetchError, match=f"rejected the credentials for user 'bob' at registry {fake.host}"):
            _fake_source(fake, fake_env).top_manifest(LIMIT)


def test_basic_credentials_not_sent_before_challenge_nor_to_other_registry(
        busybox: img.BuiltImage, fake_env: AuthEnv) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(basic=CREDS), busybox.layout) as fake, \
            fr.serve("127.0.0.2", layout=busybox.layout) as other:
        fake_env.allow(fake.host)
        _check_image(_fake_source(fake, fake_env), busybox)
        assert fake.authorizations()[0] is None
        _check_image(_fake_source(other, fake_env), busybox)
        assert other.authorizations() == [None] * len(other.seen)


def test_blob_redirect_to_other_host_drops_authorization(busybox: img.BuiltImage,
                                                         fake_env: AuthEnv) -> None:
    with fr.serve("127.0.0.2", layout=busybox.layout) as cdn, \
            fr.serve("127.0.0.1", fr.Behaviour(basic=CREDS), busybox.layout) as fake:
        fake.behaviour.blob_redirect = cdn.url
        fake_env.allow(fake.host)
        _check_image(_fake_source(fake, fake_env), busybox)
        assert len(cdn.seen) == 2  # config + one layer, fetched through the redirect
        assert cdn.authorizations() == [None, None]
        assert BASIC in fake.authorizations("/v2/test/busybox/blobs/")


def test_blob_redirect_same_origin_keeps_authorization(busybox: img.BuiltImage,
                                                       fake_env: AuthEnv) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(basic=CREDS), busybox.layout) as fake:
        fake.behaviour.blob_redirect = fake.url
        fake_env.allow(fake.host)
        _check_image(_fake_source(fake, fake_env), busybox)
        assert fake.authorizations("/direct/") == [BASIC, BASIC]


def test_self_signed_certificate_needs_tls_option(busybox: img.BuiltImage, tmp_path: Path) -> None:
    cert = fr.self_signed_cert(tmp_path, "127.0.0.1")
    # Loopback: HTTPS fails verification, plain HTTP is tried, and that fails too.
    with fr.serve("127.0.0.1", layout=busybox.layout, tls=cert) as secure, \
            pytest.raises(FetchError, match="HTTPS failed first.*CERTIFICATE_VERIFY_FAILED"):
        _fake_source(secure, {}, retries=0).top_manifest(LIMIT)


def test_retry_on_500_then_success(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(fail_manifest=2), busybox.layout) as fake:
        top = _fake_source(fake, {}).top_manifest(LIMIT)
        assert top.media_type == mt.OCI_MANIFEST
        assert len([s for s in fake.seen if "/manifests/" in s.path]) == 3


def test_retries_exhausted_is_fetch_error(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(fail_manifest=10, fail_status=503), busybox.layout) as fake:
        with pytest.raises(FetchError, match="HTTP 503.*UNAVAILABLE"):
            _fake_source(fake, {}, retries=2).top_manifest(LIMIT)
        assert len([s for s in fake.seen if "/manifests/" in s.path]) == 3


def test_retry_after_is_honoured(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(fail_manifest=1, fail_status=429, retry_after="1"),
                  busybox.layout) as fake:
        start = time.monotonic()
        _fake_source(fake, {}).top_manifest(LIMIT)
        assert time.monotonic() - start >= 1.0


def test_4xx_is_not_retried(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(fail_manifest=5, fail_status=403), busybox.layout) as fake:
        with pytest.raises(FetchError, match="HTTP 403"):
            _fake_source(fake, {}).top_manifest(LIMIT)
        assert len([s for s in fake.seen if "/manifests/" in s.path]) == 1


def test_schema1_refused(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(schema1=True), busybox.layout) as fake, \
            pytest.raises(VerificationError, match="schema1 manifests are not supported"):
        _fake_source(fake, {}).top_manifest(LIMIT)


@pytest.mark.parametrize("omit_length", [False, True])
def test_manifest_over_limit_refused(busybox: img.BuiltImage, omit_length: bool) -> None:
    behaviour = fr.Behaviour(manifest_padding=5000, omit_length=omit_length)
    with fr.serve("127.0.0.1", behaviour, busybox.layout) as fake:
        with pytest.raises(LimitExceededError, match="limit exceeded"):
            _fake_source(fake, {}).top_manifest(4000)
        behaviour.manifest_padding = 0
        assert len(_fake_source(fake, {}).top_manifest(4000).data) < 4000


def test_plain_http_to_non_loopback_needs_insecure_option(busybox: img.BuiltImage) -> None:
    address = fr.non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this host")
    with fr.serve(address, layout=busybox.layout) as fake:
        with pytest.raises(FetchError, match=f"TLS connection to {address} failed") as info:
            _fake_source(fake, {}).top_manifest(LIMIT)
        assert info.value.hint and "--insecure-options=http" in info.value.hint
        assert fake.seen == []  # no plain-HTTP request was ever made
        top = _fake_source(fake, {}, insecure=frozenset({"http"})).top_manifest(LIMIT)
        assert top.media_type == mt.OCI_MANIFEST


def test_unreachable_registry_is_clean_fetch_error() -> None:
    src = _source("example.invalid/test/busybox:latest", retries=0, stall_timeout=5.0)
    with pytest.raises(FetchError, match="example.invalid") as info:
        src.top_manifest(LIMIT)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    assert info.value.hint and "--insecure-options=http" in info.value.hint


def test_docker_hub_maps_to_api_host() -> None:
    src = _source("busybox")
    assert src.description == "docker://docker.io/library/busybox:latest"
    assert src.default_name == "docker.io/library/busybox:latest"
    assert src._api_host == "registry-1.docker.io"


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


def test_redirect_to_other_scheme_refused(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(blob_redirect="file://"), busybox.layout) as fake, \
            pytest.raises(FetchError, match="refusing URL with scheme 'file'"):
        _fake_source(fake, {}).open_blob(Digest.parse(busybox.config_digest), 1)


def test_connection_refused_is_retried_then_clean_error(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", layout=busybox.layout) as fake:
        host = fake.host
    start = time.monotonic()
    with pytest.raises(FetchError, match="cannot connect to 127.0.0.1.*refused") as info:
        _source(f"{host}/test/busybox:latest", retries=2).top_manifest(LIMIT)
    assert time.monotonic() - start >= 0.6  # backoff 0.2 s + 0.4 s between the three attempts
    assert "\n" not in str(info.value)
