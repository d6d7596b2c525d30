"""Registry credentials go to the registry's own origin only (SECURITY-TESTS case 10), through the
real ``podrun fetch``: a token realm or a redirect on another port, scheme or host gets no
``Authorization`` header, and what each fake server received is the evidence."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from podrun.errors import FetchError
from tests.conftest import PodrunRunner, Result, require_root
from tests.fixtures import fakeregistry as fr
from tests.fixtures import images as img
from tests.fixtures.registry import write_auth_file

CREDS = ("bob", "fake-pass")
BASIC = "Basic " + base64.b64encode(":".join(CREDS).encode()).decode()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> img.BuiltImage:
    layer = img.tar_bytes([img.file("hello", b"hello from a tiny image\n")])
    return img.write_oci_layout(tmp_path_factory.mktemp("tiny") / "layout", [layer])


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return fr.self_signed_cert(tmp_path_factory.mktemp("cert"), "127.0.0.1")


@pytest.fixture(autouse=True)
def _root() -> None:
    require_root()


def _fetch(podrun: PodrunRunner, fake: fr.FakeRegistry, tmp_path: Path, *options: str) -> Result:
    """``podrun [OPTIONS] fetch docker://FAKE/test/busybox:latest`` with CREDS stored for FAKE."""
    auth = write_auth_file(tmp_path / "auth.json", fake.host, *CREDS)
    return podrun(*options, "fetch", f"docker://{fake.host}/test/busybox:latest", check=False,
                  env={"REGISTRY_AUTH_FILE": str(auth)})


def _fetched(res: Result, image: img.BuiltImage) -> None:
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == image.manifest_digest


def test_realm_on_the_registry_origin_gets_the_credentials(tiny: img.BuiltImage, podrun: PodrunRunner,
                                                           tmp_path: Path) -> None:
    # The control case: where the rule allows it, Basic credentials do reach the token server.
    with fr.serve("127.0.0.1", fr.Behaviour(token_requires=CREDS), tiny.layout) as fake:
        fake.behaviour.bearer_realm = f"{fake.url}/token"
        _fetched(_fetch(podrun, fake, tmp_path), tiny)
        assert fake.authorizations("/token") == [BASIC]


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2"], ids=["other-port", "other-host"])
def test_realm_on_another_port_or_host_gets_no_credentials(tiny: img.BuiltImage, podrun: PodrunRunner,
                                                           tmp_path: Path, address: str) -> None:
    with fr.serve(address) as tokens, fr.serve("127.0.0.1", layout=tiny.layout) as fake:
        fake.behaviour.bearer_realm = f"{tokens.url}/token"
        _fetched(_fetch(podrun, fake, tmp_path), tiny)  # with an anonymous token
        assert tokens.authorizations() == [None]
        assert BASIC not in fake.authorizations()


@pytest.mark.parametrize("registry_scheme", ["http", "https"])
def test_realm_over_another_scheme_gets_no_credentials(tiny: img.BuiltImage, podrun: PodrunRunner,
                                                       tmp_path: Path, cert: tuple[Path, Path],
                                                       registry_scheme: str) -> None:
    # One port speaks both protocols: registry and realm differ in the scheme alone.  For a
    # plain-HTTP registry the HTTPS probe is turned away, as a plain server would.
    behaviour = fr.Behaviour(reject_tls=1 if registry_scheme == "http" else 0)
    with fr.serve("127.0.0.1", behaviour, tiny.layout, tls=cert, plain_too=True) as fake:
        realm_scheme = "https" if registry_scheme == "http" else "http"
        behaviour.bearer_realm = f"{realm_scheme}://{fake.host}/token"
        _fetched(_fetch(podrun, fake, tmp_path, "--insecure-options=tls"), tiny)
        assert fake.authorizations("/token") == [None]
        assert BASIC not in fake.authorizations()


def test_realm_url_naming_another_host_behind_a_backslash_gets_no_credentials(
        tiny: img.BuiltImage, podrun: PodrunRunner, tmp_path: Path) -> None:
    # http://OTHER\@REGISTRY/token: Python's urlsplit reads the host as REGISTRY, urllib3 (which
    # makes the connection) as OTHER.  The origin must be the one the connection goes to.
    with fr.serve("127.0.0.2") as tokens, fr.serve("127.0.0.1", layout=tiny.layout) as fake:
        fake.behaviour.bearer_realm = f"http://{tokens.host}\\@{fake.host}/token"
        _fetched(_fetch(podrun, fake, tmp_path), tiny)
        assert len(tokens.seen) == 1 and tokens.authorizations() == [None]


@pytest.mark.parametrize("trick", ["other-port", "backslash"])
def test_blob_redirect_to_another_origin_drops_credentials(tiny: img.BuiltImage, podrun: PodrunRunner,
                                                           tmp_path: Path, trick: str) -> None:
    cdn_address = "127.0.0.1" if trick == "other-port" else "127.0.0.2"
    with fr.serve(cdn_address, layout=tiny.layout) as cdn, \
            fr.serve("127.0.0.1", fr.Behaviour(basic=CREDS), tiny.layout) as fake:
        fake.behaviour.blob_redirect = cdn.url if trick == "other-port" else f"http://{cdn.host}\\@{fake.host}"
        _fetched(_fetch(podrun, fake, tmp_path), tiny)
        assert len(cdn.seen) == 2  # config and layer, through the redirect
        assert cdn.authorizations() == [None, None]
        assert BASIC in fake.authorizations("/v2/test/busybox/blobs/")


def test_https_to_http_redirect_of_a_loopback_registry_goes_without_credentials(
        tiny: img.BuiltImage, podrun: PodrunRunner, tmp_path: Path, cert: tuple[Path, Path]) -> None:
    with fr.serve("127.0.0.2", layout=tiny.layout) as plain, \
            fr.serve("127.0.0.1", fr.Behaviour(basic=CREDS), tiny.layout, tls=cert) as secure:
        secure.behaviour.blob_redirect = plain.url
        _fetched(_fetch(podrun, secure, tmp_path, "--insecure-options=tls"), tiny)
        assert plain.authorizations() == [None, None]
        assert BASIC in secure.authorizations("/v2/test/busybox/manifests/")


def test_https_to_http_redirect_of_a_remote_registry_is_refused(tiny: img.BuiltImage, podrun: PodrunRunner,
                                                                tmp_path: Path) -> None:
    address = fr.non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this host")
    remote_cert = fr.self_signed_cert(tmp_path, address)
    with fr.serve("127.0.0.2", layout=tiny.layout) as plain, \
            fr.serve(address, fr.Behaviour(basic=CREDS), tiny.layout, tls=remote_cert) as secure:
        secure.behaviour.blob_redirect = plain.url
        refused = _fetch(podrun, secure, tmp_path, "--insecure-options=tls")
        assert refused.returncode == FetchError.exit_code
        assert "refusing redirect from HTTPS to plain HTTP" in refused.stderr
        errors = [line for line in refused.stderr.splitlines() if not line.startswith("podrun: WARNING:")]
        assert len(errors) == 2 and errors[1].startswith("hint: "), refused.stderr  # one error, one hint
        assert plain.seen == []
        # --insecure-options=http allows the downgrade, still without credentials.
        _fetched(_fetch(podrun, secure, tmp_path, "--insecure-options=tls,http"), tiny)
        assert plain.authorizations() == [None, None]
