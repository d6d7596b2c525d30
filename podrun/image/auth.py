"""Registry credentials and ``WWW-Authenticate`` challenges.

Credentials come from the files containers-auth.json(5) names, in its order (first match wins):
``$REGISTRY_AUTH_FILE``, ``$XDG_RUNTIME_DIR/containers/auth.json``, ``~/.docker/config.json``.
All three share Docker's format ``{"auths": {"HOST[:PORT]": {"auth": base64("user:pass")}}}``,
where a key may also be a URL (``https://index.docker.io/v1/``) or ``host/namespace``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from podrun.errors import UsageError

# Docker Hub is known under several names; credentials stored under any of them apply to all.
DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for HTTP Basic authentication."""

    username: str
    password: str

    def __repr__(self) -> str:
        # Never let a password reach a log line or a traceback through repr().
        return f"Credentials(username={self.username!r}, password=<hidden>)"


@dataclass(frozen=True)
class Challenge:
    """One parsed ``WWW-Authenticate`` challenge: scheme (lowercased) and its parameters
    (keys lowercased, values unquoted)."""

    scheme: str
    params: Mapping[str, str]


def auth_file_paths(env: Mapping[str, str]) -> list[Path]:
    """The credential files to consult, in priority order (missing ones are skipped later)."""
    paths: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        paths.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        paths.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    home = env.get("HOME") or os.path.expanduser("~")
    paths.append(Path(home) / ".docker" / "config.json")
    return paths


def _key_host(key: str) -> str:
    """``https://host:port/v1/`` or ``host/namespace`` -> ``host:port`` (lowercased)."""
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    return text.split("/", 1)[0].lower()


def _same_registry(key_host: str, registry: str) -> bool:
    registry = registry.lower()
    if key_host == registry:
        return True
    return key_host in DOCKER_HUB_NAMES and registry in DOCKER_HUB_NAMES


def _decode_entry(entry: object, path: Path, key: str) -> Credentials | None:
    """Credentials of one ``auths`` entry; None when it holds none (e.g. a credential helper)."""
    if not isinstance(entry, dict):
        raise UsageError(f"credential file {path}: entry {key!r} is not an object")
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(f"credential file {path}: entry {key!r} has invalid base64 in 'auth'") from None
        user, sep, password = decoded.partition(":")
        if not sep or not user:
            raise UsageError(f"credential file {path}: entry {key!r} 'auth' is not base64 of 'user:password'")
        return Credentials(user, password)
    username, secret = entry.get("username"), entry.get("password")
    if isinstance(username, str) and username and isinstance(secret, str):
        return Credentials(username, secret)
    return None


def _load_auths(path: Path) -> dict[str, object] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read credential file {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"credential file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"credential file {path}: top level is not a JSON object")
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise UsageError(f"credential file {path}: 'auths' is not an object")
    return auths


def lookup_credentials(registry: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for *registry* (``host[:port]`` as written in the image reference).

    Files are read in containers-auth.json(5) order and the first file holding an entry for the
    registry wins; within a file an exact key beats a URL or ``host/namespace`` key.  A missing
    file is skipped; a malformed one raises UsageError naming it.
    """
    environ = os.environ if env is None else env
    for path in auth_file_paths(environ):
        auths = _load_auths(path)
        if not auths:
            continue
        keys = sorted(auths, key=lambda k: k != registry)  # the exact key first, rest in file order
        for key in keys:
            if not _same_registry(_key_host(key), registry):
                continue
            creds = _decode_entry(auths[key], path, key)
            if creds is not None:
                return creds
    return None


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _read_token(text: str, pos: int, stops: str) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] not in stops:
        pos += 1
    return text[start:pos].strip(), pos


def _read_quoted(text: str, pos: int) -> tuple[str, int]:
    """Read a quoted-string starting at the opening quote; backslash escapes one character."""
    out: list[str] = []
    pos += 1
    while pos < len(text):
        ch = text[pos]
        if ch == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
            continue
        if ch == '"':
            return "".join(out), pos + 1
        out.append(ch)
        pos += 1
    return "".join(out), pos  # unterminated: take what there is


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value (RFC 7235) into challenges.

    Handles several challenges in one header (``Basic realm="a", Bearer realm="b",service="c"``),
    quoted values containing commas and escaped quotes, and stray whitespace.  Malformed
    parameters are skipped rather than fatal: a registry's odd header should not crash a pull.
    """
    challenges: list[Challenge] = []
    scheme: str | None = None
    params: dict[str, str] = {}
    pos = 0
    text = header or ""
    while pos < len(text):
        pos = _skip_spaces(text, pos)
        if pos >= len(text):
            break
        if text[pos] == ",":
            pos += 1
            continue
        word, end = _read_token(text, pos, " \t,=")
        after = _skip_spaces(text, end)
        if after < len(text) and text[after] == "=" and scheme is not None:
            # auth-param: name = token / quoted-string
            after = _skip_spaces(text, after + 1)
            if after < len(text) and text[after] == '"':
                value, pos = _read_quoted(text, after)
            else:
                value, pos = _read_token(text, after, ",")
            if word:
                params[word.lower()] = value
            continue
        if after < len(text) and text[after] == "=":
            # A parameter before any scheme (or token68 padding): ignore it up to the next comma.
            _, pos = _read_token(text, after, ",")
            continue
        # A new scheme name.
        if scheme is not None:
            challenges.append(Challenge(scheme, params))
        scheme, params = word.lower(), {}
        pos = end
    if scheme is not None:
        challenges.append(Challenge(scheme, params))
    return challenges
