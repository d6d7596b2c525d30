"""The ``docker://`` transport: a client for the OCI distribution API (registry v2).

Only what a pull needs: ``GET`` of manifests and blobs, Basic and Bearer-token auth, redirects
and retries.  urllib3 is used with its own redirects and retries off, because both carry
security decisions this module makes itself (SECURITY-TESTS case 10):

- HTTPS always, except for loopback registries and with ``--insecure-options=http``; for those
  HTTPS is tried first and plain HTTP is used only when HTTPS cannot connect (what Docker does
  for ``localhost``).  Never a silent downgrade otherwise.
- Credentials go only to the registry's own origin, and to a token realm on the registry's host
  (or ``auth.docker.io`` for Docker Hub) over HTTPS.  A redirect to another origin loses the
  ``Authorization`` header; a redirect from https to http is refused.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import threading
import time
import urllib.parse
import warnings
from collections.abc import Mapping
from typing import BinaryIO, cast

import urllib3
from urllib3.exceptions import HTTPError, InsecureRequestWarning, SSLError

from podrun import log as podrun_log
from podrun.errors import FetchError, LimitExceededError, NotFoundError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.auth import DOCKER_HUB_NAMES, Challenge, Credentials, lookup_credentials, parse_www_authenticate
from podrun.image.digest import Digest
from podrun.image.reference import DockerReference
from podrun.image.source import ManifestBytes

log = podrun_log.get(__name__)

DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_AUTH = "auth.docker.io"
MAX_REDIRECTS = 5
MAX_AUTH_ROUNDS = 4  # a registry inventing a new token scope on every 401 must not loop us forever
MAX_RETRY_AFTER = 5.0  # seconds; a longer Retry-After is capped rather than obeyed
BACKOFF_BASE = 0.2
RETRY_STATUSES = frozenset({408, 429})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_TOKEN_RESPONSE = 1 << 20
MAX_ERROR_BODY = 64 << 10

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


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of *url*, with the scheme's default port filled in."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:  # e.g. a hostile Location header with a bad port or IPv6 literal
        raise FetchError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or (443 if scheme == "https" else 80)


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


class _BlobStream(io.RawIOBase):
    """A blob response body as a file; network errors surface as FetchError, and close()
    returns the connection to the pool (or drops it when the body was not read to the end)."""

    def __init__(self, resp: urllib3.BaseHTTPResponse, what: str) -> None:
        super().__init__()
        self._resp = resp
        self._what = what
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._resp.read() if size is None or size < 0 else self._resp.read(size)
        except (HTTPError, OSError) as exc:
            raise FetchError(f"{self._what}: download failed: {_reason(exc)}") from None
        if not data:
            self._eof = True
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            if self._eof:
                self._resp.release_conn()
            else:
                self._resp.close()
        super().close()


class RegistrySource:
    """An image in a registry, opened for pulling (implements ``ImageSource``)."""

    def __init__(
        self,
        ref: DockerReference,
        *,
        insecure: frozenset[str] = frozenset(),
        user_agent: str = "podrun/0.1",
        timeout: float = 30.0,
        retries: int = 3,
        env: Mapping[str, str] | None = None,
    ) -> None:
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
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            cert_reqs="CERT_REQUIRED" if verify else "CERT_NONE",
        )

    # -- ImageSource ---------------------------------------------------------------------------

    def top_manifest(self, limit: int) -> ManifestBytes:
        """The manifest or index the reference names (by tag, or by digest when it has one)."""
        return self._manifest(self.ref.reference, limit, self.ref.digest)

    def manifest_by_digest(self, digest: Digest, limit: int) -> ManifestBytes:
        """A manifest of this repository named by *digest*."""
        return self._manifest(str(digest), limit, digest)

    def open_blob(self, digest: Digest, size: int) -> BinaryIO:
        """Stream blob *digest*; the caller verifies digest and size while reading."""
        what = f"{self.description} blob {digest}"
        resp = self._registry_get(f"/v2/{self.ref.repository}/blobs/{digest}", {}, what)
        if resp.status == 404:
            _discard(resp)
            raise NotFoundError(f"{what}: not found in the registry")
        if resp.status != 200:
            body = _discard(resp)
            raise FetchError(f"{what}: registry answered HTTP {resp.status}{_registry_message(body)}")
        return cast(BinaryIO, _BlobStream(resp, what))

    def close(self) -> None:
        """Close all pooled connections."""
        self._pool.clear()

    # -- manifests -----------------------------------------------------------------------------

    def _manifest(self, reference: str, limit: int, expected: Digest | None) -> ManifestBytes:
        what = f"docker://{self.ref.name}" + (f"@{reference}" if ":" in reference else f":{reference}")
        resp = self._registry_get(
            f"/v2/{self.ref.repository}/manifests/{reference}", {"Accept": mt.ACCEPT_MANIFESTS}, what
        )
        if resp.status == 404:
            _discard(resp)
            raise NotFoundError(f"{what}: manifest not found in the registry")
        if resp.status != 200:
            body = _discard(resp)
            raise FetchError(f"{what}: registry answered HTTP {resp.status}{_registry_message(body)}")
        media_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type in mt.SCHEMA1_TYPES:
            resp.close()
            raise VerificationError(f"{what}: Docker schema1 manifests are not supported")
        length = resp.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            resp.close()
            raise LimitExceededError(f"{what}: manifest limit exceeded ({length} > {limit} bytes)")
        try:
            data = resp.read(limit + 1)
        except (HTTPError, OSError) as exc:
            resp.close()
            raise FetchError(f"{what}: reading the manifest failed: {_reason(exc)}") from None
        if len(data) > limit:
            resp.close()
            raise LimitExceededError(f"{what}: manifest limit exceeded ({limit} bytes)")
        resp.release_conn()
        return ManifestBytes(data, media_type, expected)

    # -- HTTP core -----------------------------------------------------------------------------

    def _plain_allowed(self, host: str) -> bool:
        return is_loopback(host) or "http" in self._insecure

    def _base_url(self) -> str:
        """``scheme://host[:port]`` of the registry API, probing HTTPS first when HTTP is allowed."""
        with self._lock:
            if self._scheme is None:
                self._scheme = self._probe_scheme()
            return f"{self._scheme}://{self._api_host}"

    def _probe_scheme(self) -> str:
        if not self._plain_ok:
            return "https"
        try:
            resp = self._pool.urlopen(
                "GET", f"https://{self._api_host}/v2/", headers={"User-Agent": self._user_agent},
                redirect=False, retries=False, preload_content=False, decode_content=False,
            )
        except (HTTPError, OSError) as exc:
            # Docker's rule for localhost: no TLS spoken there, so use plain HTTP.
            self._https_failure = _reason(exc)
            log.debug("%s: HTTPS failed (%s); using plain HTTP", self.registry, self._https_failure)
            return "http"
        _discard(resp)
        return "https"

    def _send(self, url: str, headers: Mapping[str, str], what: str) -> urllib3.BaseHTTPResponse:
        """One GET with retries on connection errors, 408, 429 and 5xx (never other 4xx)."""
        scheme, host, _ = origin_of(url)
        if scheme not in ("http", "https"):
            raise FetchError(f"{what}: refusing URL with scheme {scheme!r}: {url}")
        if scheme == "http" and not self._plain_allowed(host):
            raise FetchError(
                f"{what}: refusing plain HTTP to {host} ({url})",
                hint="use --insecure-options=http to allow plain HTTP to this registry",
            )
        full = {"User-Agent": self._user_agent, **headers}
        attempt = 0
        while True:
            try:
                resp = self._pool.urlopen(
                    "GET", url, headers=full, redirect=False, retries=False,
                    preload_content=False, decode_content=False,
                )
            except SSLError as exc:
                # A certificate or handshake problem does not heal by retrying.
                raise FetchError(
                    f"{what}: TLS connection to {host} failed: {_reason(exc)}",
                    hint="for a self-signed certificate use --insecure-options=tls; "
                    "for a plain-HTTP registry --insecure-options=http",
                ) from None
            except (HTTPError, OSError) as exc:
                if attempt >= self._retries:
                    https = f" (HTTPS failed first: {self._https_failure})" if scheme == "http" and \
                        self._https_failure else ""
                    raise FetchError(
                        f"{what}: cannot connect to {host}: {_reason(exc)}{https}",
                        hint=None if scheme == "http" or self._plain_ok
                        else "if the registry serves plain HTTP, use --insecure-options=http",
                    ) from None
                time.sleep(_retry_delay(None, attempt))
                attempt += 1
                continue
            if (resp.status in RETRY_STATUSES or resp.status >= 500) and attempt < self._retries:
                delay = _retry_delay(resp, attempt)
                _discard(resp)
                log.debug("%s: HTTP %d, retrying in %.1fs", url, resp.status, delay)
                time.sleep(delay)
                attempt += 1
                continue
            return resp

    def _get(
        self, url: str, headers: Mapping[str, str], authorization: str | None, what: str
    ) -> tuple[urllib3.BaseHTTPResponse, bool]:
        """GET following redirects; *authorization* is sent only while the request stays on
        *url*'s origin.  Returns the response and whether it came from that origin."""
        home = origin_of(url)
        auth = authorization
        for _ in range(MAX_REDIRECTS + 1):
            here = origin_of(url)
            if here != home:
                auth = None  # never carry credentials to another origin, even back again
            hop = dict(headers)
            if auth:
                hop["Authorization"] = auth
            resp = self._send(url, hop, what)
            if resp.status not in REDIRECT_STATUSES:
                return resp, here == home
            location = resp.headers.get("Location")
            _discard(resp)
            if not location:
                raise FetchError(f"{what}: HTTP {resp.status} redirect without a Location")
            target = urllib.parse.urljoin(url, location)
            if here[0] == "https" and origin_of(target)[0] == "http":
                raise FetchError(f"{what}: refusing redirect from HTTPS to plain HTTP ({target})")
            url = target
        raise FetchError(f"{what}: more than {MAX_REDIRECTS} redirects")

    # -- authentication --------------------------------------------------------------------------

    def _credentials(self) -> Credentials | None:
        if not self._creds_loaded:
            self._creds = lookup_credentials(self.registry, self._env)
            self._creds_loaded = True
        return self._creds

    def _registry_get(self, path: str, headers: Mapping[str, str], what: str) -> urllib3.BaseHTTPResponse:
        """GET *path* on the registry, answering 401 challenges (at most once per scheme)."""
        url = self._base_url() + path
        tried: set[str] = set()
        for _ in range(MAX_AUTH_ROUNDS):
            authorization = self._authorization
            resp, same_origin = self._get(url, headers, authorization, what)
            if resp.status != 401 or not same_origin:
                return resp
            header = resp.headers.get("WWW-Authenticate", "")
            _discard(resp)
            challenges = parse_www_authenticate(header)
            self._answer_challenge(challenges, authorization, tried, what)
        raise FetchError(f"{what}: registry {self.registry} keeps asking for authentication")

    def _answer_challenge(
        self, challenges: list[Challenge], sent: str | None, tried: set[str], what: str
    ) -> None:
        by_scheme = {c.scheme: c for c in challenges}
        with self._lock:
            if self._authorization != sent:
                return  # another thread already authenticated meanwhile; just retry
            if "bearer" in by_scheme:
                challenge = by_scheme["bearer"]
                scope = challenge.params.get("scope") or f"repository:{self.ref.repository}:pull"
                if "bearer:" + scope in tried:
                    raise self._refused(what, "the registry refused the token")
                tried.add("bearer:" + scope)
                token = self._tokens.get(scope)
                if token is None or (sent is not None and sent == f"Bearer {token}"):
                    token = self._fetch_token(challenge, scope, what)
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

    def _may_send_credentials(self, realm: str) -> bool:
        """Credentials go to a token realm only on the registry's own host (or Docker Hub's
        auth host), and only over HTTPS unless that host is one we may talk plain HTTP to."""
        scheme, host, _ = origin_of(realm)
        same_host = host == self._host or (self._hub and host == DOCKER_HUB_AUTH)
        if not same_host:
            return False
        return scheme == "https" or (scheme == "http" and self._scheme == "http" and self._plain_allowed(host))

    def _fetch_token(self, challenge: Challenge, scope: str, what: str) -> str:
        realm = challenge.params.get("realm", "")
        if origin_of(realm)[0] not in ("http", "https"):
            raise FetchError(f"{what}: registry {self.registry} sent an unusable token realm {realm!r}")
        query = {"scope": scope}
        if challenge.params.get("service"):
            query["service"] = challenge.params["service"]
        sep = "&" if urllib.parse.urlsplit(realm).query else "?"
        url = realm + sep + urllib.parse.urlencode(query)
        creds = self._credentials()
        authorization = None
        if creds is not None:
            if self._may_send_credentials(realm):
                authorization = "Basic " + _basic(creds)
            else:
                log.warning(
                    "%s: token realm %s is not on the registry's host over HTTPS; "
                    "requesting an anonymous token, credentials withheld", self.registry, realm,
                )
        resp, _ = self._get(url, {}, authorization, f"{what} token")
        if resp.status == 401:
            _discard(resp)
            if authorization is None:
                raise self._auth_required(what)
            raise self._refused(what, "the token server rejected the credentials")
        if resp.status != 200:
            body = _discard(resp)
            raise FetchError(f"{what}: token server {realm} answered HTTP {resp.status}{_registry_message(body)}")
        try:
            body = resp.read(MAX_TOKEN_RESPONSE + 1)
        except (HTTPError, OSError) as exc:
            resp.close()
            raise FetchError(f"{what}: reading the token from {realm} failed: {_reason(exc)}") from None
        resp.release_conn()
        try:
            doc = json.loads(body) if len(body) <= MAX_TOKEN_RESPONSE else None
        except ValueError:
            doc = None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise FetchError(f"{what}: token server {realm} sent no usable token")
        return token


def _basic(creds: Credentials) -> str:
    return base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode("ascii")
