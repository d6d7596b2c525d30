"""The registry client's pure rules: which origin a URL names (as urllib3 will connect to it),
when a token realm may receive the registry's credentials, the timeout settings from the
environment, and how a request's deadline ends a blocked read."""

from __future__ import annotations

import socket

import pytest
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from podrun.errors import FetchError, UsageError
from podrun.image import registry as reg
from podrun.image.registry import origin_of, realm_gets_credentials, seconds_from_env

# -- origin_of ------------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b", [
    ("https://reg.example", "https://reg.example:443/v2/"),
    ("http://reg.example/x", "http://reg.example:80/y"),
    ("https://reg.example:0443/", "https://reg.example/"),
    ("HTTPS://REG.Example/", "https://reg.example/"),
    ("https://Reg.EXAMPLE:5000/", "https://reg.example:5000/"),
    ("https://[::1]:5000/v2/", "https://[0:0::1]:5000/token"),
    ("https://[FE80::1]/", "https://[fe80::1]/"),
    ("https://u:p@reg.example/token", "https://reg.example/token"),
    ("https://user@reg.example:443/", "https://reg.example/"),
])
def test_same_origin(a: str, b: str) -> None:
    assert origin_of(a) == origin_of(b)


@pytest.mark.parametrize("a, b", [
    ("https://reg.example/", "http://reg.example/"),  # scheme
    ("https://reg.example:443/", "http://reg.example:443/"),  # scheme, same port number
    ("http://reg.example:80/", "https://reg.example:80/"),
    ("https://reg.example/", "https://reg.example:80/"),  # default ports belong to their scheme
    ("http://reg.example/", "http://reg.example:443/"),
    ("https://reg.example:5000/", "https://reg.example:5001/"),  # port
    ("https://reg.example/", "https://reg.example:0/"),  # port 0 is a port, not "the default"
    ("https://reg.example/", "https://other.example/"),  # host
    ("https://reg.example/", "https://evil.reg.example/"),
    ("https://reg.example/", "https://reg.example.evil/"),
    ("https://reg.example/", "https://reg.example./"),
    ("https://[::1]/", "https://[::2]/"),
    ("https://127.0.0.1/", "https://[::ffff:127.0.0.1]/"),
    ("https://127.0.0.1/", "https://127.0.0.2/"),
])
def test_different_origin(a: str, b: str) -> None:
    assert origin_of(a) != origin_of(b)


def test_origin_parts() -> None:
    assert origin_of("https://Reg.Example/v2/") == ("https", "reg.example", 443)
    assert origin_of("http://reg.example/v2/") == ("http", "reg.example", 80)
    assert origin_of("https://[0:0::1]:5000/") == ("https", "::1", 5000)
    assert origin_of("https://reg.example:0/") == ("https", "reg.example", 0)


@pytest.mark.parametrize("url, host", [
    ("https://reg.example@evil.example/", "evil.example"),  # userinfo, then the real host
    ("https://reg.example:443@evil.example/", "evil.example"),
    # Python's urlsplit reads reg.example here; urllib3, which connects, reads evil.example.
    ("https://evil.example\\@reg.example/token", "evil.example"),
    ("https://evil.example#@reg.example/", "evil.example"),
    ("https://evil.example?@reg.example/", "evil.example"),
])
def test_origin_is_where_urllib3_connects(url: str, host: str) -> None:
    from urllib3.util import parse_url

    assert origin_of(url)[1] == host == parse_url(url).host


@pytest.mark.parametrize("url", ["https:///token", "https:reg.example/token",
                                 "https://reg.example:65536/", "https://reg.example:x/", "https://[::1/"])
def test_urls_without_a_usable_origin_are_refused(url: str) -> None:
    with pytest.raises(FetchError, match="^blob x: invalid URL"):
        origin_of(url, "blob x")


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://reg.example/x", "/relative/path", "reg.example/x",
                                 "gopher://reg.example:70/"])
def test_only_http_and_https_urls_have_an_origin(url: str) -> None:
    with pytest.raises(FetchError, match="^blob x: refusing URL with scheme"):
        origin_of(url, "blob x")


# -- realm_gets_credentials ------------------------------------------------------------------------


@pytest.mark.parametrize("realm, registry, hub", [
    ("https://reg.example/token", "https://reg.example", False),
    ("https://reg.example:443/token?x=1", "https://reg.example", False),
    ("https://REG.example/token", "https://reg.example:443", False),
    ("http://127.0.0.1:5000/token", "http://127.0.0.1:5000", False),  # a plain-HTTP loopback registry
    ("https://auth.docker.io/token", "https://registry-1.docker.io", True),
    ("https://auth.docker.io:443/token", "https://registry-1.docker.io", True),
])
def test_realm_on_the_registry_origin_gets_credentials(realm: str, registry: str, hub: bool) -> None:
    assert realm_gets_credentials(realm, registry, hub)


@pytest.mark.parametrize("realm, registry, hub", [
    ("https://reg.example:8443/token", "https://reg.example", False),  # another port
    ("http://127.0.0.1:5001/token", "http://127.0.0.1:5000", False),
    ("http://reg.example/token", "https://reg.example", False),  # another scheme
    ("https://127.0.0.1:5000/token", "http://127.0.0.1:5000", False),
    ("https://auth.example/token", "https://reg.example", False),  # another host
    ("https://reg.example.evil/token", "https://reg.example", False),
    ("https://evil\\@reg.example/token", "https://reg.example", False),
    ("https://auth.docker.io/token", "https://reg.example", False),  # Hub's realm, not Hub
    ("http://auth.docker.io/token", "https://registry-1.docker.io", True),  # Hub over plain HTTP
    ("https://auth.docker.io:8443/token", "https://registry-1.docker.io", True),
    ("https://evil.example/token", "https://registry-1.docker.io", True),
])
def test_realm_on_another_origin_gets_none(realm: str, registry: str, hub: bool) -> None:
    assert not realm_gets_credentials(realm, registry, hub)


# -- timeouts from the environment --------------------------------------------------------------


def test_timeout_defaults_and_values() -> None:
    assert seconds_from_env({}, "X", 30.0) == 30.0
    assert seconds_from_env({"X": ""}, "X", 30.0) == 30.0
    assert seconds_from_env({"X": "2"}, "X", 30.0) == 2.0
    assert seconds_from_env({"X": "0.5"}, "X", 30.0) == 0.5
    assert seconds_from_env({"X": str(reg.MAX_SECONDS)}, "X", 30.0) == reg.MAX_SECONDS


@pytest.mark.parametrize("value", ["0", "-1", "abc", "nan", "inf", "-inf", "1e9", "2s"])
def test_bad_timeouts_are_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(UsageError, match=f"^PODRUN_X='{value}' is not a positive number of seconds$"):
        seconds_from_env({"PODRUN_X": value}, "PODRUN_X", 30.0)


def test_registry_source_reads_its_timeouts_from_env() -> None:
    from podrun.image.reference import parse_docker_name

    ref = parse_docker_name("127.0.0.1:5000/a/b:c")
    src = reg.RegistrySource(ref, env={reg.STALL_TIMEOUT_ENV: "7", reg.DEADLINE_ENV: "9"})
    assert (src._stall, src._deadline) == (7.0, 9.0)
    src = reg.RegistrySource(ref, env={})
    assert (src._stall, src._deadline) == (reg.DEFAULT_STALL_TIMEOUT, reg.DEFAULT_DEADLINE)
    with pytest.raises(UsageError, match=reg.DEADLINE_ENV):
        reg.RegistrySource(ref, env={reg.DEADLINE_ENV: "0"})


# -- the deadline of one request ------------------------------------------------------------------


def _connection() -> tuple[reg._WatchedHTTPConnection, socket.socket]:
    """A registry connection over a socket pair (no network); and the peer's end."""
    ours, theirs = socket.socketpair()
    ours.settimeout(10)  # a failure, not a hang, if a shutdown does not happen
    conn = reg._WatchedHTTPConnection("registry.invalid")
    conn.sock = ours
    return conn, theirs


def test_deadline_shuts_down_watched_connections_and_names_itself() -> None:
    conn, peer = _connection()
    late, late_peer = _connection()
    deadline = reg._Deadline(600, 30, "docker://r/x blob sha256:ab", "download")
    try:
        deadline.watch(conn)
        deadline.check()  # not yet
        deadline._expire()  # what the timer does
        assert conn.sock.recv(1) == b""  # a blocked read would end now
        with pytest.raises(FetchError, match=r"^docker://r/x blob sha256:ab: download not complete within 600 s "
                                             r"\(PODRUN_REGISTRY_DEADLINE\)$"):
            deadline.check()
        deadline.watch(late)  # watched after the deadline: shut down at once
        assert late.sock.recv(1) == b""
    finally:
        deadline.cancel()
        for sock in (conn.sock, peer, late.sock, late_peer):
            sock.close()


def test_deadline_leaves_alone_a_connection_it_no_longer_holds() -> None:
    conn, peer = _connection()
    first = reg._Deadline(600, 30, "first", "download")
    second = reg._Deadline(600, 30, "second", "download")
    try:
        first.watch(conn)
        second.watch(conn)  # back in the pool, then taken by another operation
        first._expire()
        peer.sendall(b"x")
        assert conn.sock.recv(1) == b"x"
        second.cancel()  # a timer firing just after its operation ended does nothing
        second._expire()
        peer.sendall(b"y")
        assert conn.sock.recv(1) == b"y"
    finally:
        first.cancel()
        second.cancel()
        conn.sock.close()
        peer.close()


def test_deadline_failure_messages() -> None:
    deadline = reg._Deadline(600, 2.5, "docker://r/x blob sha256:ab", "download")
    try:
        stall = deadline.failure(ReadTimeoutError(None, None, "Read timed out."), "download")  # type: ignore[arg-type]
        assert str(stall) == "docker://r/x blob sha256:ab: registry stalled: no data for 2.5 s " \
                             "(PODRUN_REGISTRY_STALL_TIMEOUT)"
        assert "stalled" in str(deadline.failure(TimeoutError("timed out"), "download"))
        other = deadline.failure(ProtocolError("Connection broken"), "download")
        assert str(other) == "docker://r/x blob sha256:ab: download failed: Connection broken"
        deadline._expire()
        late = deadline.failure(ProtocolError("Connection broken"), "download")
        assert "not complete within 600 s" in str(late)  # the cause, not its symptom
    finally:
        deadline.cancel()
