"""Credential lookup (containers-auth.json order and key forms) and the WWW-Authenticate parser,
plus the small host rules of the registry client that need no network."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from podrun.errors import UsageError
from podrun.image.auth import Challenge, Credentials, lookup_credentials, parse_www_authenticate
from podrun.image.registry import is_loopback, origin_of, split_host_port


def _auth(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def _write(path: Path, auths: dict[str, object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": auths}))
    return path


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    return h


# -- lookup_credentials ----------------------------------------------------------------------------

def test_no_files_means_no_credentials(home: Path) -> None:
    assert lookup_credentials("quay.io", {"HOME": str(home)}) is None


def test_registry_auth_file_wins_over_others(tmp_path: Path, home: Path) -> None:
    first = _write(tmp_path / "first.json", {"quay.io": _auth("one", "p1")})
    runtime = tmp_path / "run"
    _write(runtime / "containers" / "auth.json", {"quay.io": _auth("two", "p2")})
    _write(home / ".docker" / "config.json", {"quay.io": _auth("three", "p3")})
    env = {"HOME": str(home), "XDG_RUNTIME_DIR": str(runtime), "REGISTRY_AUTH_FILE": str(first)}
    assert lookup_credentials("quay.io", env) == Credentials("one", "p1")
    del env["REGISTRY_AUTH_FILE"]
    assert lookup_credentials("quay.io", env) == Credentials("two", "p2")
    del env["XDG_RUNTIME_DIR"]
    assert lookup_credentials("quay.io", env) == Credentials("three", "p3")


def test_file_without_entry_falls_through_to_next(tmp_path: Path, home: Path) -> None:
    first = _write(tmp_path / "first.json", {"other.example": _auth("x", "y")})
    _write(home / ".docker" / "config.json", {"quay.io": _auth("docker", "pw")})
    env = {"HOME": str(home), "REGISTRY_AUTH_FILE": str(first)}
    assert lookup_credentials("quay.io", env) == Credentials("docker", "pw")


def test_missing_registry_auth_file_is_skipped(tmp_path: Path, home: Path) -> None:
    _write(home / ".docker" / "config.json", {"quay.io": _auth("docker", "pw")})
    env = {"HOME": str(home), "REGISTRY_AUTH_FILE": str(tmp_path / "nope.json")}
    assert lookup_credentials("quay.io", env) == Credentials("docker", "pw")


def test_port_is_part_of_the_registry_name(tmp_path: Path, home: Path) -> None:
    f = _write(tmp_path / "a.json", {"127.0.0.1:5000": _auth("u", "p")})
    env = {"HOME": str(home), "REGISTRY_AUTH_FILE": str(f)}
    assert lookup_credentials("127.0.0.1:5000", env) == Credentials("u", "p")
    assert lookup_credentials("127.0.0.1:5001", env) is None
    assert lookup_credentials("127.0.0.1", env) is None


def test_url_and_namespace_keys_match_the_host(tmp_path: Path, home: Path) -> None:
    f = _write(tmp_path / "a.json", {
        "https://index.docker.io/v1/": _auth("hub", "hp"),
        "quay.io/someorg": _auth("org", "op"),
        "http://reg.example:8443/": _auth("r", "rp"),
    })
    env = {"HOME": str(home), "REGISTRY_AUTH_FILE": str(f)}
    assert lookup_credentials("docker.io", env) == Credentials("hub", "hp")
    assert lookup_credentials("quay.io", env) == Credentials("org", "op")
    assert lookup_credentials("reg.example:8443", env) == Credentials("r", "rp")
    assert lookup_credentials("reg.example", env) is None


def test_exact_key_beats_namespace_key(tmp_path: Path, home: Path) -> None:
    f = _write(tmp_path / "a.json", {"quay.io/org": _auth("ns", "1"), "quay.io": _auth("exact", "2")})
    assert lookup_credentials("quay.io", {"HOME": str(home), "REGISTRY_AUTH_FILE": str(f)}) == Credentials("exact", "2")


def test_password_may_contain_colons(tmp_path: Path, home: Path) -> None:
    f = _write(tmp_path / "a.json", {"quay.io": _auth("u", "a:b:c")})
    assert lookup_credentials("quay.io", {"HOME": str(home), "REGISTRY_AUTH_FILE": str(f)}) == Credentials("u", "a:b:c")


def test_entry_without_auth_is_ignored(tmp_path: Path, home: Path) -> None:
    # Docker writes empty entries when a credential helper holds the secret.
    f = _write(tmp_path / "a.json", {"quay.io": {}})
    assert lookup_credentials("quay.io", {"HOME": str(home), "REGISTRY_AUTH_FILE": str(f)}) is None


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"auths": []}'])
def test_malformed_file_is_a_usage_error_naming_it(tmp_path: Path, home: Path, content: str) -> None:
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(UsageError, match="bad.json"):
        lookup_credentials("quay.io", {"HOME": str(home), "REGISTRY_AUTH_FILE": str(f)})


def test_bad_base64_is_a_usage_error(tmp_path: Path, home: Path) -> None:
    f = _write(tmp_path / "b64.json", {"quay.io": {"auth": "%%%not-base64"}})
    with pytest.raises(UsageError, match=r"b64\.json.*quay\.io"):
        lookup_credentials("quay.io", {"HOME": str(home), "REGISTRY_AUTH_FILE": str(f)})


def test_credentials_repr_hides_password() -> None:
    assert "hunter2" not in repr(Credentials("u", "hunter2"))


# -- parse_www_authenticate ------------------------------------------------------------------------

def test_parse_basic() -> None:
    assert parse_www_authenticate('Basic realm="Registry Realm"') == [
        Challenge("basic", {"realm": "Registry Realm"})
    ]


def test_parse_bearer_docker_hub_style() -> None:
    header = ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
              'scope="repository:library/busybox:pull"')
    [c] = parse_www_authenticate(header)
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    }


def test_parse_quoted_commas_escapes_and_spaces() -> None:
    header = r'Bearer  realm = "https://a/t?x=1,2" , scope="repository:a/b:pull,push", error="say \"hi\""'
    [c] = parse_www_authenticate(header)
    assert c.params["realm"] == "https://a/t?x=1,2"
    assert c.params["scope"] == "repository:a/b:pull,push"
    assert c.params["error"] == 'say "hi"'


def test_parse_several_challenges_and_case() -> None:
    cs = parse_www_authenticate('BASIC Realm="r1", Bearer realm="https://t",Service=svc')
    assert cs == [Challenge("basic", {"realm": "r1"}), Challenge("bearer", {"realm": "https://t", "service": "svc"})]


@pytest.mark.parametrize("header", ["", "   ", ",,", '="x"', 'Bearer realm="unterminated', "Bearer ,,realm=x,,"])
def test_parse_odd_headers_does_not_crash(header: str) -> None:
    result = parse_www_authenticate(header)
    assert all(isinstance(c, Challenge) for c in result)


def test_parse_unterminated_quote_keeps_text() -> None:
    [c] = parse_www_authenticate('Bearer realm="https://x/token')
    assert c.params["realm"] == "https://x/token"


# -- host rules ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("host, expected", [
    ("localhost", True), ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("LOCALHOST", True), ("128.0.0.1", False), ("example.com", False), ("localhost.example.com", False),
    ("10.0.0.1", False), ("::2", False),
])
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_split_host_port() -> None:
    assert split_host_port("Reg.Example:5000") == ("reg.example", 5000)
    assert split_host_port("[::1]:5000") == ("::1", 5000)
    assert split_host_port("[::1]") == ("::1", None)
    assert split_host_port("docker.io") == ("docker.io", None)


def test_origin_default_ports() -> None:
    assert origin_of("https://Reg.example/v2/") == ("https", "reg.example", 443)
    assert origin_of("http://reg.example/v2/") == ("http", "reg.example", 80)
    assert origin_of("https://reg.example:443/x") == origin_of("https://reg.example/y")
    assert origin_of("https://reg.example:5000/x") != origin_of("https://reg.example/y")
