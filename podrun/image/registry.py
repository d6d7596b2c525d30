"""The ``docker://`` transport: a client for the OCI distribution API (registry v2).

What a pull needs: ``GET`` of manifests and blobs, Basic and Bearer-token auth, redirects
and retries; and what attaching a signature needs: ``put_blob`` and ``put_manifest`` (a token
asked for with ``pull,push`` scope).  urllib3 is used with its own redirects and retries off, because both carry
security decisions this module makes itself (SECURITY-TESTS case 10):

- HTTPS always, except for loopback registries and with ``--insecure-options=http``; for those
  HTTPS is tried first and plain HTTP is used only when HTTPS cannot connect (what Docker does
  for ``localhost``).  Never a silent downgrade otherwise.
- Credentials (the ``Authorization`` header: Basic credentials from auth.json, or a token) go
  only to the registry's own *origin*: scheme, host and port (RFC 6454; the scheme's default
  port filled in, host names compared without case, IPv6 literals in canonical form, userinfo
  ignored).  Origins are read with urllib3's URL parser, the one that decides where the
  connection goes, so a URL cannot name one host to this check and another to the socket
  (``http://other\\@registry/`` connects to ``other``).
- A token realm gets the Basic credentials only when it is on the registry's origin (or is
  ``https://auth.docker.io`` for Docker Hub).  A realm on another origin (another host, port or
  scheme) is still asked for a token, anonymously, with a warning; if it insists on
  credentials the pull fails with "authentication required".  containers/image (podman,
  skopeo) and Docker send the credentials to any realm; podrun does not, so a registry whose
  token service lives elsewhere (GitLab's) serves only public images to podrun.
- A redirect to another origin loses the ``Authorization`` header, even if a later hop comes
  back.  A redirect from HTTPS to plain HTTP is refused unless the registry is a loopback one
  or ``--insecure-options=http`` is given (and then the target must be one plain HTTP is
  allowed to, as for the registry itself).

Slow registries are bounded twice (``PODRUN_REGISTRY_STALL_TIMEOUT``, default 30 s, and
``PODRUN_REGISTRY_DEADLINE``, default 3600 s):

- stall timeout: no byte for that long while connecting, waiting for an answer or reading a body
  fails the request (a socket timeout; stalls before an answer are retried like a failed
  connection, a stall in a body is not);
- deadline: each registry operation -- one manifest, or one blob to its last byte, with its
  redirects, retries and token requests -- must be complete within it.  A registry sending a
  byte every second never stalls; a timer then shuts the operation's socket down, which ends
  the blocked read (as Go's ``http.Client.Timeout`` does).  Per operation rather than per
  fetch, so an image with many layers is not penalised; podman and containers/image have no
  such bound (only connection and TLS handshake timeouts), containerd's CRI plugin only a
  progress timeout.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import math
import os
import socket
import threading
import time
import urllib.parse
import warnings
from collections.abc import Mapping
from typing import BinaryIO, cast

import urllib3
import urllib3.connection
from urllib3.exceptions import HTTPError, InsecureRequestWarning, ReadTimeoutError, SSLError
from urllib3.util import parse_url

from podrun import log as podrun_log
from podrun.errors import FetchError, LimitExceededError, NotFoundError, UsageError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.auth import DOCKER_HUB_NAMES, Challenge, Credentials, lookup_credentials, parse_www_authenticate
from podrun.image.digest import Digest
from podrun.image.reference import DockerReference
from podrun.image.source import ManifestBytes

log = podrun_log.get(__name__)

DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH_ORIGIN = ("https", "auth.docker.io", 443)
MAX_REDIRECTS = 5
MAX_AUTH_ROUNDS = 4  # a registry inventing a new token scope on every 401 must not loop us forever
MAX_RETRY_AFTER = 5.0  # seconds; a longer Retry-After is capped rather than obeyed
BACKOFF_BASE = 0.2
RETRY_STATUSES = frozenset({408, 429})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_TOKEN_RESPONSE = 1 << 20
MAX_ERROR_BODY = 64 << 10
STALL_TIMEOUT_ENV = "PODRUN_REGISTRY_STALL_TIMEOUT"
DEADLINE_ENV = "PODRUN_REGISTRY_DEADLINE"
DEFAULT_STALL_TIMEOUT = 30.0
DEFAULT_DEADLINE = 3600.0
MAX_SECONDS = 1e8  # ~3 years; beyond threading's and the socket layer's timeout range anyway
DEFAULT_PORTS = {"https": 443, "http": 80}

Origin = tuple[str, str, int]


def split_host_port(hostport: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host without brackets, port)."""
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    return host.lower(), (int(port) if port.isdigit() else None)


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals (127.0.0.0/8, ::1).  Names are not
    resolved: a DNS answer must not decide whether plain HTTP is allowed."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _canonical_host(host: str) -> str:
    """*host* as urllib3's parser gives it (names already lowercased), without IPv6 brackets
    and with an IP literal in its canonical text (``[0:0::1]`` and ``[::1]`` are one host)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


def origin_of(url: str, what: str = "") -> Origin:
    """(scheme, host, port) of *url* as urllib3 will connect to it, with the scheme's default
    port filled in.  Raises FetchError (prefixed with *what*) for a scheme other than http and
    https, a URL without a host or with an invalid port."""
    prefix = f"{what}: " if what else ""
    try:
        parts = parse_url(url)
    except ValueError as exc:  # e.g. a hostile Location header with a bad port or IPv6 literal
        raise FetchError(f"{prefix}invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme or ""  # lowercased by the parser
    if scheme not in DEFAULT_PORTS:
        raise FetchError(f"{prefix}refusing URL with scheme {scheme!r}: {url}")
    if not parts.host:
        raise FetchError(f"{prefix}invalid URL {url!r}: no host")
    port = parts.port if parts.port is not None else DEFAULT_PORTS[scheme]
    return scheme, _canonical_host(parts.host), port


def realm_gets_credentials(realm_url: str, registry_url: str, hub: bool) -> bool:
    """Whether a token request to *realm_url* may carry the Basic credentials of the registry
    at *registry_url*: only on the registry's own origin, or Docker Hub's auth service."""
    realm = origin_of(realm_url)
    return realm == origin_of(registry_url) or (hub and realm == DOCKER_HUB_AUTH_ORIGIN)


def seconds_from_env(env: Mapping[str, str], name: str, default: float) -> float:
    """A timeout in seconds from environment variable *name* (unset or empty: *default*)."""
    text = env.get(name, "")
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_SECONDS:  # also refuses nan and inf
        raise UsageError(f"{name}={text!r} is not a positive number of seconds",
                         hint=f"at most {MAX_SECONDS:.0f}; see man podrun-fetch")
    return value


def _reason(exc: BaseException) -> str:
    """A one-line description of a urllib3/socket error without object reprs."""
    text = str(exc) or type(exc).__name__
    if text.startswith("<") and ">: " in text:
        text = text.split(">: ", 1)[1]
    return text.splitlines()[0] if text else type(exc).__name__


def _retry_delay(resp: urllib3.BaseHTTPResponse | None, attempt: int) -> float:
    delay = BACKOFF_BASE * (1 << attempt)
    if resp is not None:
        after: str = resp.headers.get("Retry-After", "")
        if after.strip().isdigit():
            delay = max(delay, float(after.strip()))
    return min(delay, MAX_RETRY_AFTER)


def _discard(resp: urllib3.BaseHTTPResponse) -> bytes:
    """Read a small error body (for its message) and give the connection back or drop it."""
    try:
        body = resp.read(MAX_ERROR_BODY + 1)
        if len(body) > MAX_ERROR_BODY:
            resp.close()  # too big to drain; do not reuse the connection
        else:
            resp.release_conn()
        return body[:MAX_ERROR_BODY]
    except (HTTPError, OSError):
        resp.close()
        return b""


def _registry_message(body: bytes) -> str:
    """The first ``errors[].message`` of a distribution-spec error body, or ''."""
    try:
        doc = json.loads(body)
        first = doc["errors"][0]
        return f": {first.get('code', '')} {first.get('message', '')}".rstrip()
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""


_ACTIVE = threading.local()  # .deadline: the _Deadline of the request this thread is sending


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown even for TLS: ssl.SSLSocket.shutdown would also drop its
    # SSL object under a reader in another thread.
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Deadline:
    """The time one registry operation may take (a manifest, or a blob to its last byte, with
    redirects, retries and token requests), and how its transfer failures read.

    When the time is up, the connections the operation still holds are shut down: that ends a
    read blocked on a registry that trickles bytes, which no socket timeout does (every byte
    restarts it).  The read then fails, and ``failure()`` names the deadline rather than the
    broken connection it caused.  A connection handed back to the pool and taken by another
    operation belongs to that one and is left alone."""

    def __init__(self, seconds: float, stall: float, what: str, activity: str) -> None:
        self.seconds, self.stall, self.what, self.activity = seconds, stall, what, activity
        self.expired = False
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._connections: list[_WatchedHTTPConnection] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, conn: _WatchedHTTPConnection) -> None:
        """Make *conn* this operation's; shut it down when the deadline passes (at once if it
        has)."""
        conn.deadline = self
        with self._lock:
            if not self.expired:
                self._connections.append(conn)
                return
        _shut_down(conn.sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            connections, self._connections = self._connections, []
        for conn in connections:
            sock = conn.sock
            if conn.deadline is self and sock is not None:
                _shut_down(sock)

    def cancel(self) -> None:
        """The operation is over: stop the timer."""
        self._timer.cancel()
        with self._lock:
            self._connections.clear()

    def _too_late(self) -> FetchError:
        return FetchError(f"{self.what}: {self.activity} not complete within {self.seconds:g} s ({DEADLINE_ENV})")

    def check(self) -> None:
        """Raise the deadline's error once it has passed."""
        if self.expired:
            raise self._too_late()

    def sleep(self, delay: float) -> None:
        """Sleep before a retry, never past the deadline."""
        time.sleep(max(0.0, min(delay, self._end - time.monotonic())))
        self.check()

    def failure(self, exc: BaseException, doing: str) -> FetchError:
        """The error for *exc*, raised while *doing*: the deadline, a stall, or the cause."""
        if self.expired:
            return self._too_late()
        if isinstance(exc, ReadTimeoutError | TimeoutError):
            return FetchError(f"{self.what}: registry stalled: no data for {self.stall:g} s ({STALL_TIMEOUT_ENV})")
        return FetchError(f"{self.what}: {doing} failed: {_reason(exc)}")


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """A connection the sending thread's deadline can shut down: it becomes the operation's
    when its answer is awaited, so a reused pooled connection is covered as well as a new one."""

    deadline: _Deadline | None = None  # the operation that used it last

    def getresponse(self) -> urllib3.HTTPResponse:  # type: ignore[override]  # as urllib3 itself
        active: _Deadline | None = getattr(_ACTIVE, "deadline", None)
        if active is not None:
            active.watch(self)
        return super().getresponse()


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection, _WatchedHTTPConnection):
    """The HTTPS twin of _WatchedHTTPConnection."""



class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _BlobStream(io.RawIOBase):
    """A blob response body as a file; network errors surface as FetchError, and close()
    ends the blob's deadline and returns the connection to the pool (or drops it when the
    body was not read to the end)."""

    def __init__(self, resp: urllib3.BaseHTTPResponse, deadline: _Deadline) -> None:
        super().__init__()
        self._resp = resp
        self._deadline = deadline
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._resp.read() if size is None or size < 0 else self._resp.read(size)
        except (HTTPError, OSError) as exc:
            raise self._deadline.failure(exc, "download") from None
        if not data:
            self._deadline.check()  # a deadline shutdown can look like the end of the body
            self._eof = True
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._deadline.cancel()
            if self._eof:
                self._resp.release_conn()
            else:
                self._resp.close()
        super().close()


class RegistrySource:
    """An image in a registry, opened for pulling (implements ``ImageSource``).

    *stall_timeout* and *deadline* (seconds) default to ``$PODRUN_REGISTRY_STALL_TIMEOUT`` and
    ``$PODRUN_REGISTRY_DEADLINE`` from *env* (``os.environ`` when None), else 30 and 3600."""

    def __init__(
        self,
        ref: DockerReference,
        *,
        insecure: frozenset[str] = frozenset(),
        user_agent: str = "podrun/0.1",
        stall_timeout: float | None = None,
        deadline: float | None = None,
        retries: int = 3,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environ = os.environ if env is None else env
        self._stall = stall_timeout or seconds_from_env(environ, STALL_TIMEOUT_ENV, DEFAULT_STALL_TIMEOUT)
        self._deadline = deadline or seconds_from_env(environ, DEADLINE_ENV, DEFAULT_DEADLINE)
        self.ref = ref
        self.description = f"docker://{ref}"
        self.default_name: str | None = f"{ref.name}:{ref.tag}" if ref.tag else None
        self.registry = ref.registry
        self._hub = ref.registry.lower() in DOCKER_HUB_NAMES
        self._api_host = DOCKER_HUB_API if self._hub else ref.registry
        self._host, _ = split_host_port(self._api_host)
        self._insecure = insecure
        self._plain_ok = is_loopback(self._host) or "http" in insecure
        self._retries = max(0, retries)
        self._env = env
        self._user_agent = user_agent
        self._lock = threading.Lock()
        self._scheme: str | None = None  # decided on first contact
        self._https_failure = ""  # why HTTPS was given up on a loopback/--insecure registry
        self._authorization: str | None = None  # header value sent to the registry's origin
        self._tokens: dict[str, str] = {}
        self._creds_loaded = False
        self._creds: Credentials | None = None
        verify = "tls" not in insecure
        if not verify:
            log.warning("%s: TLS certificate verification is disabled (--insecure-options=tls)", self.registry)
            warnings.simplefilter("ignore", InsecureRequestWarning)
        self._pool = urllib3.PoolManager(
            num_pools=4,
            maxsize=8,
            retries=False,
            timeout=urllib3.Timeout(connect=self._stall, read=self._stall),
            cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        )
        self._pool.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}

    # -- ImageSource ---------------------------------------------------------------------------

    def top_manifest(self, limit: int) -> ManifestBytes:
        """The manifest or index the reference names (by tag, or by digest when it has one)."""
        return self._manifest(self.ref.reference, limit, self.ref.digest)

    def manifest_by_digest(self, digest: Digest, limit: int) -> ManifestBytes:
        """A manifest of this repository named by *digest*."""
        return self._manifest(str(digest), limit, digest)

    def open_blob(self, digest: Digest, size: int) -> BinaryIO:
        """Stream blob *digest*; the caller verifies digest and size while reading.  The blob's
        deadline runs until the stream is closed."""
        what = f"{self.description} blob {digest}"
        deadline = _Deadline(self._deadline, self._stall, what, "download")
        try:
            resp = self._registry_get(f"/v2/{self.ref.repository}/blobs/{digest}", {}, deadline)
            _expect_ok(resp, what, "not found in the registry")
        except BaseException:
            deadline.cancel()
            raise
        return cast(BinaryIO, _BlobStream(resp, deadline))

    def close(self) -> None:
        """Close all pooled connections."""
        self._pool.clear()

    # -- for signature sources (podrun.trust.sources) ------------------------------------------

    def manifest_by_tag(self, tag: str, limit: int) -> ManifestBytes:
        """A manifest of this repository named by *tag* (e.g. a sigstore ``sha256-HEX.sig``
        attachment); NotFoundError when the registry has none."""
        return self._manifest(tag, limit, None)

    def get_small(self, path: str, limit: int, what: str) -> tuple[int, dict[str, str], bytes]:
        """GET *path* (``/v2/…``, ``/extensions/…``) on the registry with this source's
        authentication, TLS rules, retries and deadline: the status, the headers (lower-case
        names) and, for a 200 answer, its body (LimitExceededError beyond *limit* bytes)."""
        return self._small(path, limit, what, external=False)

    def get_url(self, url: str, limit: int, what: str) -> tuple[int, dict[str, str], bytes]:
        """As get_small, for an absolute http(s) *url* outside the registry API (a signature
        lookaside): never with credentials, and plain HTTP is allowed to any host, as
        containers/image does: what is fetched this way must verify itself."""
        return self._small(url, limit, what, external=True)

    def _small(self, target: str, limit: int, what: str, external: bool) -> tuple[int, dict[str, str], bytes]:
        deadline = _Deadline(self._deadline, self._stall, what, "request")
        try:
            if external:
                resp, _ = self._get(target, {}, None, deadline, plain=True)
            else:
                resp = self._registry_get(target, {}, deadline)
            headers = {name.lower(): value for name, value in resp.headers.items()}
            if resp.status != 200:
                _discard(resp)
                return resp.status, headers, b""
            data = _read_body(resp, limit + 1, deadline, "reading the answer")
            if len(data) > limit:
                resp.close()
                raise LimitExceededError(f"{what}: limit exceeded ({limit} bytes)")
            resp.release_conn()
            return resp.status, headers, data
        finally:
            deadline.cancel()

    # -- push (podrun.trust.attach) --------------------------------------------------------------

    def put_blob(self, data: bytes, digest: Digest) -> None:
        """Upload blob *digest* (*data*) to this repository unless the registry has it: a
        monolithic upload (POST, then PUT to the upload location with ``?digest=``), the
        location on the registry's origin only."""
        what = f"docker://{self.ref.name} blob {digest}"
        deadline = _Deadline(self._deadline, self._stall, what, "upload")
        try:
            blobs = f"/v2/{self.ref.repository}/blobs/"
            resp = self._registry_get(blobs + str(digest), {}, deadline, method="HEAD")
            _discard(resp)
            if resp.status == 200:
                return
            resp = self._registry_get(blobs + "uploads/", {}, deadline, method="POST", body=b"")
            location = resp.headers.get("Location", "")
            _expect_status(resp, 202, what)
            base = self._base_url(deadline)
            target = urllib.parse.urljoin(base + blobs + "uploads/", location)
            if not location or origin_of(target, what) != origin_of(base, what):
                raise FetchError(f"{what}: the registry gave an upload location off its origin: {location!r}")
            parts = urllib.parse.urlsplit(target)
            query = "&".join(q for q in (parts.query, urllib.parse.urlencode({"digest": str(digest)})) if q)
            resp = self._registry_get(urllib.parse.urlunsplit(parts._replace(query=query)),
                                      {"Content-Type": "application/octet-stream"}, deadline, method="PUT", body=data)
            _expect_status(resp, 201, what)
        finally:
            deadline.cancel()

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> None:
        """Store manifest *data* of *media_type* in this repository as *reference* (a tag)."""
        what = f"docker://{self.ref.name}:{reference}"
        deadline = _Deadline(self._deadline, self._stall, what, "manifest upload")
        try:
            resp = self._registry_get(f"/v2/{self.ref.repository}/manifests/{reference}",
                                      {"Content-Type": media_type}, deadline, method="PUT", body=data)
            _expect_status(resp, 201, what)
        finally:
            deadline.cancel()

    # -- manifests -----------------------------------------------------------------------------

    def _manifest(self, reference: str, limit: int, expected: Digest | None) -> ManifestBytes:
        what = f"docker://{self.ref.name}" + (f"@{reference}" if ":" in reference else f":{reference}")
        deadline = _Deadline(self._deadline, self._stall, what, "manifest request")
        try:
            return self._read_manifest(reference, limit, expected, deadline)
        finally:
            deadline.cancel()

    def _read_manifest(self, reference: str, limit: int, expected: Digest | None,
                       deadline: _Deadline) -> ManifestBytes:
        what = deadline.what
        resp = self._registry_get(
            f"/v2/{self.ref.repository}/manifests/{reference}", {"Accept": mt.ACCEPT_MANIFESTS}, deadline
        )
        _expect_ok(resp, what, "manifest not found in the registry")
        media_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type in mt.SCHEMA1_TYPES:
            resp.close()
            raise VerificationError(f"{what}: Docker schema1 manifests are not supported")
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            resp.close()
            raise LimitExceededError(f"{what}: manifest limit exceeded ({length} > {limit} bytes)")
        data = _read_body(resp, limit + 1, deadline, "reading the manifest")
        if len(data) > limit:
            resp.close()
            raise LimitExceededError(f"{what}: manifest limit exceeded ({limit} bytes)")
        resp.release_conn()
        return ManifestBytes(data, media_type, expected)

    # -- HTTP core -----------------------------------------------------------------------------

    def _plain_allowed(self, host: str) -> bool:
        return is_loopback(host) or "http" in self._insecure

    def _base_url(self, deadline: _Deadline) -> str:
        """``scheme://host[:port]`` of the registry API, probing HTTPS first when HTTP is allowed."""
        with self._lock:
            if self._scheme is None:
                self._scheme = self._probe_scheme(deadline)
            return f"{self._scheme}://{self._api_host}"

    def _urlopen(self, url: str, headers: Mapping[str, str], deadline: _Deadline, method: str = "GET",
                 body: bytes | None = None) -> urllib3.BaseHTTPResponse:
        """One request through the pool, its socket watched by *deadline*."""
        _ACTIVE.deadline = deadline
        try:
            return self._pool.urlopen(
                method, url, body=body, headers=headers, redirect=False, retries=False,
                preload_content=False, decode_content=False,
            )
        finally:
            _ACTIVE.deadline = None

    def _probe_scheme(self, deadline: _Deadline) -> str:
        if not self._plain_ok:
            return "https"
        try:
            resp = self._urlopen(f"https://{self._api_host}/v2/", {"User-Agent": self._user_agent}, deadline)
        except (HTTPError, OSError) as exc:
            deadline.check()
            # Docker's rule for localhost: no TLS spoken there, so use plain HTTP.
            self._https_failure = _reason(exc)
            log.debug("%s: HTTPS failed (%s); using plain HTTP", self.registry, self._https_failure)
            return "http"
        _discard(resp)
        return "https"

    def _send(
        self, url: str, headers: Mapping[str, str], deadline: _Deadline, plain: bool = False,
        method: str = "GET", body: bytes | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """One request with retries on connection errors, stalls, 408, 429 and 5xx (never other
        4xx).  *plain*: plain HTTP allowed to any host (get_url)."""
        what = deadline.what
        scheme, host, _ = origin_of(url, what)
        if scheme == "http" and not plain and not self._plain_allowed(host):
            raise FetchError(
                f"{what}: refusing plain HTTP to {host} ({url})",
                hint="use --insecure-options=http to allow plain HTTP to this registry",
            )
        full = {"User-Agent": self._user_agent, **headers}
        attempt = 0
        while True:
            try:
                resp = self._urlopen(url, full, deadline, method, body)
            except SSLError as exc:
                deadline.check()
                # A certificate or handshake problem does not heal by retrying.
                raise FetchError(
                    f"{what}: TLS connection to {host} failed: {_reason(exc)}",
                    hint="for a self-signed certificate use --insecure-options=tls; "
                    "for a plain-HTTP registry --insecure-options=http",
                ) from None
            except (HTTPError, OSError) as exc:
                deadline.check()
                if attempt >= self._retries:
                    if isinstance(exc, ReadTimeoutError):
                        raise deadline.failure(exc, "request") from None
                    https = f" (HTTPS failed first: {self._https_failure})" if scheme == "http" and \
                        self._https_failure else ""
                    raise FetchError(
                        f"{what}: cannot connect to {host}: {_reason(exc)}{https}",
                        hint=None if scheme == "http" or self._plain_ok
                        else "if the registry serves plain HTTP, use --insecure-options=http",
                    ) from None
                deadline.sleep(_retry_delay(None, attempt))
                attempt += 1
                continue
            if (resp.status in RETRY_STATUSES or resp.status >= 500) and attempt < self._retries:
                delay = _retry_delay(resp, attempt)
                _discard(resp)
                log.debug("%s: HTTP %d, retrying in %.1fs", url, resp.status, delay)
                deadline.sleep(delay)
                attempt += 1
                continue
            return resp

    def _get(
        self, url: str, headers: Mapping[str, str], authorization: str | None, deadline: _Deadline,
        plain: bool = False,
    ) -> tuple[urllib3.BaseHTTPResponse, bool]:
        """GET following redirects; *authorization* is sent only while the request stays on
        *url*'s origin.  Returns the response and whether it came from that origin."""
        what = deadline.what
        home = origin_of(url, what)
        auth = authorization
        for _ in range(MAX_REDIRECTS + 1):
            here = origin_of(url, what)
            if here != home:
                auth = None  # never carry credentials to another origin, even back again
            hop = dict(headers)
            if auth:
                hop["Authorization"] = auth
            resp = self._send(url, hop, deadline, plain)
            if resp.status not in REDIRECT_STATUSES:
                return resp, here == home
            location = resp.headers.get("Location")
            _discard(resp)
            if not location:
                raise FetchError(f"{what}: HTTP {resp.status} redirect without a Location")
            target = urllib.parse.urljoin(url, location)
            if here[0] == "https" and origin_of(target, what)[0] == "http" and not (plain or self._plain_ok):
                raise FetchError(
                    f"{what}: refusing redirect from HTTPS to plain HTTP ({target})",
                    hint="only a loopback registry or --insecure-options=http allows it",
                )
            url = target
        raise FetchError(f"{what}: more than {MAX_REDIRECTS} redirects")

    # -- authentication --------------------------------------------------------------------------

    def _credentials(self) -> Credentials | None:
        if not self._creds_loaded:
            self._creds = lookup_credentials(self.registry, self._env)
            self._creds_loaded = True
        return self._creds

    def _registry_get(self, path: str, headers: Mapping[str, str], deadline: _Deadline,
                      method: str = "GET", body: bytes | None = None) -> urllib3.BaseHTTPResponse:
        """GET *path* on the registry, answering 401 challenges (at most once per scheme).
        Another *method* (a push: HEAD, POST, PUT, with a token for ``pull,push``) follows no
        redirect; its *path* may be a URL on the registry's origin (an upload location)."""
        base = self._base_url(deadline)
        url = path if "://" in path else base + path
        tried: set[str] = set()
        for _ in range(MAX_AUTH_ROUNDS):
            authorization = self._authorization
            if method == "GET":
                resp, same_origin = self._get(url, headers, authorization, deadline)
            else:
                auth = {"Authorization": authorization} if authorization else {}
                resp, same_origin = self._send(url, {**headers, **auth}, deadline, method=method, body=body), True
            if resp.status != 401 or not same_origin:
                return resp
            header = resp.headers.get("WWW-Authenticate", "")
            _discard(resp)
            challenges = parse_www_authenticate(header)
            self._answer_challenge(challenges, authorization, tried, base, deadline, push=method != "GET")
        raise FetchError(f"{deadline.what}: registry {self.registry} keeps asking for authentication")

    def _answer_challenge(
        self, challenges: list[Challenge], sent: str | None, tried: set[str], base: str, deadline: _Deadline,
        push: bool = False,
    ) -> None:
        what = deadline.what
        by_scheme = {c.scheme: c for c in challenges}
        with self._lock:
            if self._authorization != sent:
                return  # another thread already authenticated meanwhile; just retry
            if "bearer" in by_scheme:
                challenge = by_scheme["bearer"]
                scope = f"repository:{self.ref.repository}:pull,push" if push else \
                    challenge.params.get("scope") or f"repository:{self.ref.repository}:pull"
                if "bearer:" + scope in tried:
                    raise self._refused(what, "the registry refused the token")
                tried.add("bearer:" + scope)
                token = self._tokens.get(scope)
                if token is None or (sent is not None and sent == f"Bearer {token}"):
                    token = self._fetch_token(challenge, scope, base, deadline)
                    self._tokens[scope] = token
                self._authorization = f"Bearer {token}"
                return
            if "basic" in by_scheme:
                if "basic" in tried or (sent or "").startswith("Basic "):
                    raise self._refused(what, "the registry rejected the credentials")
                tried.add("basic")
                creds = self._credentials()
                if creds is None:
                    raise self._auth_required(what)
                self._authorization = "Basic " + _basic(creds)
                return
        schemes = ", ".join(sorted(by_scheme)) or "none"
        raise FetchError(f"{what}: registry {self.registry} asks for unsupported authentication ({schemes})")

    def _refused(self, what: str, why: str) -> FetchError:
        creds = self._credentials()
        if creds is None:
            return self._auth_required(what)
        return FetchError(
            f"{what}: {why} for user {creds.username!r} at registry {self.registry}",
            hint="check the credentials stored for this registry in $REGISTRY_AUTH_FILE, "
            "${XDG_RUNTIME_DIR}/containers/auth.json or ~/.docker/config.json",
        )

    def _auth_required(self, what: str) -> FetchError:
        return FetchError(
            f"{what}: authentication required by registry {self.registry}",
            hint=f"store credentials for {self.registry} in $REGISTRY_AUTH_FILE, "
            "${XDG_RUNTIME_DIR}/containers/auth.json or ~/.docker/config.json",
        )

    def _fetch_token(self, challenge: Challenge, scope: str, base: str, deadline: _Deadline) -> str:
        """A token for *scope* from the challenge's realm; Basic credentials go along only when
        the realm is on the origin of the registry at *base*."""
        what = deadline.what
        realm = challenge.params.get("realm", "")
        try:
            origin_of(realm)
        except FetchError:
            raise FetchError(f"{what}: registry {self.registry} sent an unusable token realm {realm!r}") from None
        query = {"scope": scope}
        if challenge.params.get("service"):
            query["service"] = challenge.params["service"]
        sep = "&" if urllib.parse.urlsplit(realm).query else "?"
        url = realm + sep + urllib.parse.urlencode(query)
        creds = self._credentials()
        authorization = None
        if creds is not None:
            # The URL as sent is checked, not the realm alone: its origin is where the
            # connection goes.
            if realm_gets_credentials(url, base, self._hub):
                authorization = "Basic " + _basic(creds)
            else:
                log.warning(
                    "%s: token realm %s is not on the registry's origin; "
                    "requesting an anonymous token, credentials withheld", self.registry, realm,
                )
        resp, _ = self._get(url, {}, authorization, deadline)
        if resp.status == 401:
            _discard(resp)
            if authorization is None:
                raise self._auth_required(what)
            raise self._refused(what, "the token server rejected the credentials")
        if resp.status != 200:
            body = _discard(resp)
            raise FetchError(f"{what}: token server {realm} answered HTTP {resp.status}{_registry_message(body)}")
        body = _read_body(resp, MAX_TOKEN_RESPONSE + 1, deadline, f"reading the token from {realm}")
        resp.release_conn()
        try:
            doc = json.loads(body) if len(body) <= MAX_TOKEN_RESPONSE else None
        except ValueError:
            doc = None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise FetchError(f"{what}: token server {realm} sent no usable token")
        return token


def _expect_ok(resp: urllib3.BaseHTTPResponse, what: str, missing: str) -> None:
    """Raise NotFoundError (*missing*) for a 404 answer, FetchError for any other but 200."""
    if resp.status == 404:
        _discard(resp)
        raise NotFoundError(f"{what}: {missing}")
    if resp.status != 200:
        body = _discard(resp)
        raise FetchError(f"{what}: registry answered HTTP {resp.status}{_registry_message(body)}")


def _expect_status(resp: urllib3.BaseHTTPResponse, status: int, what: str) -> None:
    """Release *resp*; FetchError unless it answered *status*."""
    body = _discard(resp)
    if resp.status != status:
        raise FetchError(f"{what}: registry answered HTTP {resp.status}{_registry_message(body)}")


def _read_body(resp: urllib3.BaseHTTPResponse, limit: int, deadline: _Deadline, doing: str) -> bytes:
    """At most *limit* bytes of a small body (manifest, token); the connection is dropped on
    failure."""
    try:
        data = resp.read(limit)
    except (HTTPError, OSError) as exc:
        resp.close()
        raise deadline.failure(exc, doing) from None
    deadline.check()  # a body without a length ends early, without error, when shut down
    return data


def _basic(creds: Credentials) -> str:
    return base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode("ascii")
