"""The ``docker://`` client against the scriptable fake registry (tests/fixtures/fakeregistry.py):
auth realms, redirects, retries, hostile answers (SECURITY-TESTS case 10).  No root; the flows
against Debian's docker-registry are in tests/integration/test_registry.py."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from podrun.errors import FetchError, LimitExceededError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.digest import Digest
from podrun.image.registry import RegistrySource
from tests.fixtures import fakeregistry as fr
from tests.fixtures import images as img
from tests.fixtures.registry_client import LIMIT, busybox, check_image, source

__all__ = ["busybox"]  # a fixture, imported for pytest to find


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
    return source(f"{fake.host}/test/busybox:latest", env=env, **kw)


def test_bearer_same_host_realm_gets_credentials(busybox: img.BuiltImage, fake_env: AuthEnv) -> None:
    behaviour = fr.Behaviour(token_requires=CREDS)
    with fr.serve("127.0.0.1", behaviour, busybox.layout) as fake:
        behaviour.bearer_realm = f"{fake.url}/token"
        fake_env.allow(fake.host)
        src = _fake_source(fake, fake_env)
        try:
            check_image(src, busybox)
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
            check_image(src, busybox)
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
        check_image(_fake_source(fake, fake_env), busybox)
        assert fake.authorizations()[0] is None
        check_image(_fake_source(other, fake_env), busybox)
        assert other.authorizations() == [None] * len(other.seen)


def test_blob_redirect_to_other_host_drops_authorization(busybox: img.BuiltImage,
                                                         fake_env: AuthEnv) -> None:
    with fr.serve("127.0.0.2", layout=busybox.layout) as cdn, \
            fr.serve("127.0.0.1", fr.Behaviour(basic=CREDS), busybox.layout) as fake:
        fake.behaviour.blob_redirect = cdn.url
        fake_env.allow(fake.host)
        check_image(_fake_source(fake, fake_env), busybox)
        assert len(cdn.seen) == 2  # config + one layer, fetched through the redirect
        assert cdn.authorizations() == [None, None]
        assert BASIC in fake.authorizations("/v2/test/busybox/blobs/")


def test_blob_redirect_same_origin_keeps_authorization(busybox: img.BuiltImage,
                                                       fake_env: AuthEnv) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(basic=CREDS), busybox.layout) as fake:
        fake.behaviour.blob_redirect = fake.url
        fake_env.allow(fake.host)
        check_image(_fake_source(fake, fake_env), busybox)
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
    src = source("example.invalid/test/busybox:latest", retries=0, stall_timeout=5.0)
    with pytest.raises(FetchError, match="example.invalid") as info:
        src.top_manifest(LIMIT)
    assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    assert info.value.hint and "--insecure-options=http" in info.value.hint


def test_docker_hub_maps_to_api_host() -> None:
    src = source("busybox")
    assert src.description == "docker://docker.io/library/busybox:latest"
    assert src.default_name == "docker.io/library/busybox:latest"
    assert src._api_host == "registry-1.docker.io"


def test_redirect_to_other_scheme_refused(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", fr.Behaviour(blob_redirect="file://"), busybox.layout) as fake, \
            pytest.raises(FetchError, match="refusing URL with scheme 'file'"):
        _fake_source(fake, {}).open_blob(Digest.parse(busybox.config_digest), 1)


def test_connection_refused_is_retried_then_clean_error(busybox: img.BuiltImage) -> None:
    with fr.serve("127.0.0.1", layout=busybox.layout) as fake:
        host = fake.host
    start = time.monotonic()
    with pytest.raises(FetchError, match="cannot connect to 127.0.0.1.*refused") as info:
        source(f"{host}/test/busybox:latest", retries=2).top_manifest(LIMIT)
    assert time.monotonic() - start >= 0.6  # backoff 0.2 s + 0.4 s between the three attempts
    assert "\n" not in str(info.value)
