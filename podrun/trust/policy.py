"""containers-policy.json(5): strict parsing, scope resolution and ``signedIdentity`` matching,
decided as containers/image (podman, skopeo) decides, so one host policy governs them all.

- The file: ``--signature-policy FILE``, else ``$HOME/.config/containers/policy.json`` when it
  exists, else ``/etc/containers/policy.json`` (:func:`policy_path`).
- Parsing is as strict as containers/image's: an unknown, duplicated or mistyped key, a missing
  ``default``, an empty requirement list, an unknown requirement or identity type, an invalid
  scope of a transport containers/image knows, refuses the whole file.  The error names the
  file and the JSON key path (``policy.json: transports.docker["x"][0].keyType: …``).
  Deviation: a JSON ``null`` is refused wherever it appears (containers/image reads some as
  "absent").
- Scopes (:meth:`Policy.requirements_for`): the image's identity, then its namespaces from the
  most specific, then the transport's ``""``, then ``default``; the first that exists wins,
  nothing is merged.  containers/image validates no ``docker`` scope on reading (a malformed one
  simply never matches); :func:`set_scope` does, so ``podrun trust set`` writes none.
- Identities are compared in the fully expanded Docker form (``busybox`` is
  ``docker.io/library/busybox``), with the grammar and normalisation of containers/image's
  ``docker/reference`` (``ParseNormalizedNamed``), reproduced here by :func:`parse_normalized`.

Requirements podrun cannot evaluate yet (``signedBy`` with a keyType other than ``GPGKeys``,
``signedBaseLayer``, ``sigstoreSigned`` with ``fulcio``, ``pki`` or a Rekor key) parse as
containers/image parses them and report ``needs_unsupported``: the caller refuses the image.
"""

from __future__ import annotations

import base64
import json
import os
import re

from podrun.errors import UsageError
from podrun.lean import Record
from podrun.trust.identity import (
    DIGEST_PATTERN,
    DOMAIN_NAME_RE,
    ExactReference,
    ExactRepository,
    IdentityRule,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    RemapIdentity,
    image_named,
    parse,
    parse_canonical,
    parse_normalized,
    valid_remap_prefix,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Final

    from podrun.image.reference import DockerReference

SYSTEM_POLICY = "/etc/containers/policy.json"
USER_POLICY = ".config/containers/policy.json"  # under $HOME
CREATE_HINT = ('create one with "podrun trust set --type signedBy --pubkeysfile KEY SCOPE" (everything else is '
               'then refused; "--type accept default" accepts any image), or name one with --signature-policy FILE')


class PolicyError(UsageError):
    """The host's signature policy is missing or invalid: a configuration input, like a bad flag
    value, so exit status 253 (UsageError's).  The message names the file (and the key)."""


# --- Requirements ------------------------------------------------------------------------------


class Requirement(Record):
    """One entry of a scope's requirement list; every entry must allow the image."""

    TYPE = ""
    __slots__ = ()

    @property
    def needs_unsupported(self) -> bool:
        """True when podrun cannot evaluate this requirement: the caller refuses the image."""
        return False

    def keys(self) -> str:
        """The trusted keys, for ``trust show``."""
        return ""

    def identity(self) -> str:
        return ""


class InsecureAcceptAnything(Requirement):
    TYPE = "insecureAcceptAnything"
    __slots__ = ()


class Reject(Requirement):
    TYPE = "reject"
    __slots__ = ()


def _key_summary(**sources: object) -> str:
    """``keyPath=/a``, ``keyPaths=/a,/b``, ``keyData=(N bytes)``, … of the sources that are set."""
    parts = []
    for name, value in sources.items():
        if value is None:
            continue
        if isinstance(value, bytes):
            parts.append(f"{name}=({len(value)} bytes)")
        elif isinstance(value, tuple):
            shown = (f"({len(v)} bytes)" if isinstance(v, bytes) else str(v) for v in value)
            parts.append(f"{name}={','.join(shown)}")
        else:
            parts.append(f"{name}={value}")
    return " ".join(parts)


class SignedBy(Requirement):
    """Simple signing (OpenPGP): a signature by one of the keys, with an acceptable identity."""

    TYPE = "signedBy"
    key_type: Final[str]
    key_path: Final[str | None]
    key_paths: Final[tuple[str, ...] | None]
    key_data: Final[bytes | None]
    signed_identity: Final[IdentityRule]
    __slots__ = ("key_type", "key_path", "key_paths", "key_data", "signed_identity")

    def __init__(
        self, key_type: str, signed_identity: IdentityRule, key_path: str | None = None,
        key_paths: tuple[str, ...] | None = None, key_data: bytes | None = None,
    ) -> None:
        self.key_type = key_type
        self.key_path = key_path
        self.key_paths = key_paths
        self.key_data = key_data
        self.signed_identity = signed_identity

    @property
    def needs_unsupported(self) -> bool:
        # containers/image parses the X.509 key types but evaluates none of them ("unimplemented").
        return self.key_type != "GPGKeys"

    def keys(self) -> str:
        return _key_summary(keyPath=self.key_path, keyPaths=self.key_paths, keyData=self.key_data)

    def identity(self) -> str:
        return self.signed_identity.describe()


class SignedBaseLayer(Requirement):
    """Parsed as containers/image parses it, never satisfied (containers/image: "not implemented")."""

    TYPE = "signedBaseLayer"
    base_layer_identity: Final[IdentityRule]
    __slots__ = ("base_layer_identity",)

    def __init__(self, base_layer_identity: IdentityRule) -> None:
        self.base_layer_identity = base_layer_identity

    @property
    def needs_unsupported(self) -> bool:
        return True

    def identity(self) -> str:
        return self.base_layer_identity.describe()


Fields = tuple[tuple[str, object], ...]  # a sub-object as parsed (key, value), in file order


class SigstoreSigned(Requirement):
    """A sigstore (cosign) signature by one of the public keys, with an acceptable identity.
    ``keys`` holds the key sources that are set (``keyPath`` …) and ``rekor`` the Rekor key
    source, both as (field name, value) pairs."""

    TYPE = "sigstoreSigned"
    key_path: Final[str | None]
    key_paths: Final[tuple[str, ...] | None]
    key_data: Final[bytes | None]
    key_datas: Final[tuple[bytes, ...] | None]
    fulcio: Final[Fields | None]
    pki: Final[Fields | None]
    rekor: Final[tuple[str, object] | None]
    signed_identity: Final[IdentityRule]
    __slots__ = ("key_path", "key_paths", "key_data", "key_datas", "fulcio", "pki", "rekor", "signed_identity")

    def __init__(
        self, signed_identity: IdentityRule, key_path: str | None = None, key_paths: tuple[str, ...] | None = None,
        key_data: bytes | None = None, key_datas: tuple[bytes, ...] | None = None, fulcio: Fields | None = None,
        pki: Fields | None = None, rekor: tuple[str, object] | None = None,
    ) -> None:
        self.key_path = key_path
        self.key_paths = key_paths
        self.key_data = key_data
        self.key_datas = key_datas
        self.fulcio = fulcio
        self.pki = pki
        self.rekor = rekor
        self.signed_identity = signed_identity

    @property
    def needs_unsupported(self) -> bool:
        return self.fulcio is not None or self.pki is not None or self.rekor is not None

    def keys(self) -> str:
        text = _key_summary(
            keyPath=self.key_path, keyPaths=self.key_paths, keyData=self.key_data, keyDatas=self.key_datas,
        )
        text = " ".join(filter(None, [text, "fulcio" if self.fulcio else "", "pki" if self.pki else ""]))
        return text + (f" {_key_summary(**{self.rekor[0]: self.rekor[1]})}" if self.rekor else "")

    def identity(self) -> str:
        return self.signed_identity.describe()


# --- Parsing -----------------------------------------------------------------------------------


class _Bad(Exception):
    """A refusal inside the document: the key path and what is wrong."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


class _Object(dict[str, object]):
    """A JSON object that remembers the keys it saw twice (json keeps only the last)."""

    duplicates: list[str] = []  # replaced, never changed in place


def _object(pairs: list[tuple[str, object]]) -> _Object:
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _load_json(data: bytes) -> object:
    return json.loads(data.decode("utf-8"), object_pairs_hook=_object, parse_constant=_no_constant)


_TYPE_NAMES: dict[type, str] = {str: "a string", list: "a list", dict: "an object"}


def _typed(value: object, kind: type, where: str) -> object:
    if not isinstance(value, kind):
        raise _Bad(where, f"must be {_TYPE_NAMES[kind]}, not {json.dumps(value)[:40]}")
    return value


def _object_at(value: object, where: str) -> _Object:
    """*value* as a JSON object without duplicated keys."""
    obj = _typed(value, dict, where)
    assert isinstance(obj, _Object)
    if obj.duplicates:
        raise _Bad(where, f"duplicate key {json.dumps(obj.duplicates[0])}")
    return obj


def _fields(value: object, where: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> _Object:
    """*value* as an object with only *allowed* keys, each at most once, and every *required* one."""
    obj = _object_at(value, where)
    for key in obj:
        if key not in allowed:
            raise _Bad(where, f"unknown key {json.dumps(key)}")
    for key in required:
        if key not in obj:
            raise _Bad(where, f"missing key {json.dumps(key)}")
    return obj


def _str(obj: _Object, key: str, where: str) -> str | None:
    value = obj.get(key)
    return None if key not in obj else str(_typed(value, str, f"{where}.{key}"))


def _str_list(obj: _Object, key: str, where: str) -> tuple[str, ...] | None:
    if key not in obj:
        return None
    items = _typed(obj[key], list, f"{where}.{key}")
    assert isinstance(items, list)
    if not items:
        raise _Bad(f"{where}.{key}", "must not be empty")
    return tuple(str(_typed(v, str, f"{where}.{key}[{i}]")) for i, v in enumerate(items))


def _b64(text: str, where: str) -> bytes:
    try:  # Go's encoding/json: standard base64 with padding; line breaks are skipped
        return base64.b64decode(text.replace("\r", "").replace("\n", ""), validate=True)
    except ValueError:
        raise _Bad(where, "invalid base64") from None


def _bytes(obj: _Object, key: str, where: str) -> bytes | None:
    text = _str(obj, key, where)
    return None if text is None else _b64(text, f"{where}.{key}")


def _bytes_list(obj: _Object, key: str, where: str) -> tuple[bytes, ...] | None:
    texts = _str_list(obj, key, where)
    return None if texts is None else tuple(_b64(t, f"{where}.{key}[{i}]") for i, t in enumerate(texts))


def _one_of(obj: _Object, where: str, keys: tuple[str, ...]) -> None:
    present = [k for k in keys if k in obj]
    if len(present) != 1:
        got = "none" if not present else ", ".join(present)
        raise _Bad(where, f"exactly one of {', '.join(keys)} must be present (got {got})")


def _identity(value: object, where: str) -> IdentityRule:
    obj = _typed(value, dict, where)
    assert isinstance(obj, _Object)
    kind = obj.get("type")
    if kind == MatchRepoDigestOrExact.TYPE:
        _fields(obj, where, ("type",))
        return MatchRepoDigestOrExact()
    if kind == MatchExact.TYPE:
        _fields(obj, where, ("type",))
        return MatchExact()
    if kind == MatchRepository.TYPE:
        _fields(obj, where, ("type",))
        return MatchRepository()
    if kind == ExactReference.TYPE:
        _fields(obj, where, ("type", "dockerReference"), ("dockerReference",))
        ref = str(_str(obj, "dockerReference", where))
        try:
            named = parse_normalized(ref)
        except ValueError as exc:
            raise _Bad(f"{where}.dockerReference", str(exc)) from None
        if named.name_only:
            raise _Bad(f"{where}.dockerReference", f"{ref!r} has neither a tag nor a digest")
        return ExactReference(ref)
    if kind == ExactRepository.TYPE:
        _fields(obj, where, ("type", "dockerRepository"), ("dockerRepository",))
        repo = str(_str(obj, "dockerRepository", where))
        try:
            parse_normalized(repo)
        except ValueError as exc:
            raise _Bad(f"{where}.dockerRepository", str(exc)) from None
        return ExactRepository(repo)
    if kind == RemapIdentity.TYPE:
        _fields(obj, where, ("type", "prefix", "signedPrefix"), ("prefix", "signedPrefix"))
        prefixes = [str(_str(obj, key, where)) for key in ("prefix", "signedPrefix")]
        for key, prefix in zip(("prefix", "signedPrefix"), prefixes, strict=True):
            if not valid_remap_prefix(prefix):
                raise _Bad(f"{where}.{key}", f"{prefix!r} is not host[:port] or host[:port]/namespace")
        return RemapIdentity(prefixes[0], prefixes[1])
    raise _Bad(f"{where}.type", f"unknown signedIdentity type {json.dumps(kind)}")


def _signed_identity(obj: _Object, where: str) -> IdentityRule:
    if "signedIdentity" not in obj:
        return MatchRepoDigestOrExact()
    return _identity(obj["signedIdentity"], f"{where}.signedIdentity")


_SIGNED_BY_KEYS = ("keyPath", "keyPaths", "keyData")
_KEY_TYPES = ("GPGKeys", "signedByGPGKeys", "X509Certificates", "signedByX509CAs")


def _signed_by(obj: _Object, where: str) -> SignedBy:
    _fields(obj, where, ("type", "keyType", "signedIdentity", *_SIGNED_BY_KEYS), ("keyType",))
    key_type = _str(obj, "keyType", where)
    if key_type not in _KEY_TYPES:
        raise _Bad(f"{where}.keyType", f"unknown key type {json.dumps(key_type)}")
    identity = _signed_identity(obj, where)
    _one_of(obj, where, _SIGNED_BY_KEYS)
    key_path = _str(obj, "keyPath", where)
    if key_path == "":
        raise _Bad(f"{where}.keyPath", "must not be empty")
    return SignedBy(
        key_type, identity, key_path=key_path, key_paths=_str_list(obj, "keyPaths", where),
        key_data=_bytes(obj, "keyData", where),
    )


_SIGSTORE_KEYS = ("keyPath", "keyPaths", "keyData", "keyDatas", "fulcio", "pki")
_REKOR_READERS: dict[str, Callable[[_Object, str, str], object]] = {
    "rekorPublicKeyPath": _str, "rekorPublicKeyPaths": _str_list,
    "rekorPublicKeyData": _bytes, "rekorPublicKeyDatas": _bytes_list,
}
_REKOR_KEYS = tuple(_REKOR_READERS)


def _fulcio(value: object, where: str) -> Fields:
    obj = _fields(value, where, ("caPath", "caData", "oidcIssuer", "subjectEmail"), ("oidcIssuer", "subjectEmail"))
    _one_of(obj, where, ("caPath", "caData"))
    if not _str(obj, "oidcIssuer", where) or not _str(obj, "subjectEmail", where):
        raise _Bad(where, "oidcIssuer and subjectEmail must not be empty")
    return tuple((k, _bytes(obj, k, where) if k == "caData" else _str(obj, k, where)) for k in obj)


def _pki(value: object, where: str) -> Fields:
    keys = ("caRootsPath", "caRootsData", "caIntermediatesPath", "caIntermediatesData")
    obj = _fields(value, where, (*keys, "subjectEmail", "subjectHostname"))
    _one_of(obj, where, keys[:2])
    if keys[2] in obj and keys[3] in obj:
        raise _Bad(where, "caIntermediatesPath and caIntermediatesData cannot be used together")
    if not _str(obj, "subjectEmail", where) and not _str(obj, "subjectHostname", where):
        raise _Bad(where, "at least one of subjectEmail, subjectHostname must be set")
    return tuple((k, _bytes(obj, k, where) if k.endswith("Data") else _str(obj, k, where)) for k in obj)


def _sigstore_signed(obj: _Object, where: str) -> SigstoreSigned:
    _fields(obj, where, ("type", "signedIdentity", *_SIGSTORE_KEYS, *_REKOR_KEYS))
    identity = _signed_identity(obj, where)
    _one_of(obj, where, _SIGSTORE_KEYS)
    rekor_keys = [k for k in _REKOR_KEYS if k in obj]
    if len(rekor_keys) > 1:
        raise _Bad(where, f"at most one of {', '.join(_REKOR_KEYS)} may be present")
    rekor: tuple[str, object] | None = None
    if rekor_keys:
        key = rekor_keys[0]
        rekor = (key, _REKOR_READERS[key](obj, key, where))
    if "fulcio" in obj and rekor is None:
        raise _Bad(where, f"fulcio needs one of {', '.join(_REKOR_KEYS)}")
    key_path = _str(obj, "keyPath", where)
    if key_path == "":
        raise _Bad(f"{where}.keyPath", "must not be empty")
    return SigstoreSigned(
        identity, key_path=key_path, key_paths=_str_list(obj, "keyPaths", where),
        key_data=_bytes(obj, "keyData", where), key_datas=_bytes_list(obj, "keyDatas", where),
        fulcio=_fulcio(obj["fulcio"], f"{where}.fulcio") if "fulcio" in obj else None,
        pki=_pki(obj["pki"], f"{where}.pki") if "pki" in obj else None, rekor=rekor,
    )


def _requirement(value: object, where: str) -> Requirement:
    obj = _typed(value, dict, where)
    assert isinstance(obj, _Object)
    kind = obj.get("type")
    if kind == InsecureAcceptAnything.TYPE:
        _fields(obj, where, ("type",))
        return InsecureAcceptAnything()
    if kind == Reject.TYPE:
        _fields(obj, where, ("type",))
        return Reject()
    if kind == SignedBy.TYPE:
        return _signed_by(obj, where)
    if kind == SigstoreSigned.TYPE:
        return _sigstore_signed(obj, where)
    if kind == SignedBaseLayer.TYPE:
        _fields(obj, where, ("type", "baseLayerIdentity"), ("baseLayerIdentity",))
        return SignedBaseLayer(_identity(obj["baseLayerIdentity"], f"{where}.baseLayerIdentity"))
    raise _Bad(f"{where}.type", f"unknown requirement type {json.dumps(kind)}")


def _requirements(value: object, where: str) -> tuple[Requirement, ...]:
    items = _typed(value, list, where)
    assert isinstance(items, list)
    if not items:
        raise _Bad(where, "the list of requirements must not be empty")
    return tuple(_requirement(item, f"{where}[{i}]") for i, item in enumerate(items))


# Scope checks of the transports containers/image knows (any other transport is kept, unchecked).
def _path_scope(scope: str) -> str | None:
    if not scope.startswith("/"):
        return "must be an absolute path"
    if scope == "/":
        return 'use the transport default "" instead of "/"'
    clean = "/" + os.path.normpath(scope).lstrip("/")  # Go's filepath.Clean: "//a" is "/a"
    if clean != scope:
        return f"not in canonical form (use {clean!r})"
    return None


def _default_only(scope: str) -> str | None:
    return 'this transport has no scopes but the default ""'


def _docker_daemon_scope(scope: str) -> str | None:
    return f"{scope!r} is a digest, not a namespace" if re.fullmatch(DIGEST_PATTERN, scope) else None


_SCOPE_CHECKS: dict[str, Callable[[str], str | None]] = {
    "oci": _path_scope, "oci-archive": _path_scope, "dir": _path_scope,
    "docker-archive": _default_only, "tarball": _default_only, "sif": _default_only,
    "docker-daemon": _docker_daemon_scope,
}


class Policy(Record):
    """A parsed policy: the global default and, per transport, the requirements of each scope."""

    path: Final[str]
    default: Final[tuple[Requirement, ...]]
    transports: Final[dict[str, dict[str, tuple[Requirement, ...]]]]

    __slots__ = ("path", "default", "transports")

    def __init__(
        self, path: str, default: tuple[Requirement, ...], transports: dict[str, dict[str, tuple[Requirement, ...]]],
    ) -> None:
        self.path = path
        self.default = default
        self.transports = transports

    def requirements_for(
        self, transport: str, identity: DockerReference | str | None,
    ) -> tuple[str, tuple[Requirement, ...]]:
        """The requirements of the most specific scope that exists for the image, and that
        scope's name (``transports.docker["docker.io/library"]``, ``default``) for messages.

        *identity*: for ``docker`` the reference (with both a tag and a digest, the digest one:
        podman pulls by the digest then); for ``oci`` / ``oci-archive`` the path as given
        (resolved as containers/image resolves it: absolute, symlinks resolved); anything for a
        transport without scopes.  Raises UsageError for an identity that cannot be resolved."""
        scopes = self.transports.get(transport)
        if scopes is not None:
            for name in [*candidate_scopes(transport, identity), ""]:
                if name in scopes:
                    return f"transports.{transport}[{json.dumps(name)}]", scopes[name]
        return "default", self.default


def candidate_scopes(transport: str, identity: DockerReference | str | None) -> list[str]:
    """The scopes that name the image, most specific first (the transport's ``""`` excluded)."""
    if transport == "docker":
        assert identity is not None and not isinstance(identity, str)
        return docker_scopes(identity)
    if transport in ("oci", "oci-archive"):
        assert isinstance(identity, str)
        return path_scopes(identity)
    return []


def docker_scopes(image: DockerReference) -> list[str]:
    """``host/ns/repo:tag`` (or ``@digest``), ``host/ns/repo``, ``host/ns``, ``host``, then
    ``*.domain`` wildcards of the host without its port, the longest first."""
    try:
        named = image_named(image)
    except ValueError as exc:
        raise UsageError(f"invalid image reference {str(image)!r}: {exc}") from None
    scopes = [named.name + (f"@{named.digest}" if named.digest else f":{named.tag}")]
    name = named.name
    while True:
        scopes.append(name)
        if "/" not in name:
            break
        name = name.rpartition("/")[0]
    host = name.partition(":")[0]
    while "." in host:
        host = host.partition(".")[2]
        scopes.append("*." + host)
    return scopes


def resolve_path(path: str) -> str:
    """containers/image's ``ResolvePathToFullyExplicit``: absolute, clean, symlinks resolved;
    the last component may be missing (not a dangling symlink); ``/proc/…`` kept as given."""
    if path.startswith("///"):
        path = path[2:]
    if path.startswith("/proc/"):
        return path
    try:
        if os.path.lexists(path):
            return os.path.realpath(os.path.abspath(path), strict=True)
        parent, last = os.path.split(path)
        return os.path.join(os.path.realpath(os.path.abspath(parent), strict=True), last)
    except OSError as exc:
        raise UsageError(f"cannot resolve the image path {path!r}: {exc.strerror or exc}") from None


def path_scopes(path: str) -> list[str]:
    """The resolved path, then each parent directory but ``/``."""
    resolved = resolve_path(path)
    scopes = []
    while resolved != "/" and "/" in resolved:
        scopes.append(resolved)
        resolved = resolved.rpartition("/")[0] or "/"
    return scopes


def _transports(value: object) -> dict[str, dict[str, tuple[Requirement, ...]]]:
    obj = _object_at(value, "transports")
    result: dict[str, dict[str, tuple[Requirement, ...]]] = {}
    for transport, scopes_value in obj.items():
        plain = re.fullmatch(r"[a-z0-9-]+", transport)
        where = f"transports.{transport}" if plain else f"transports[{json.dumps(transport)}]"
        scopes = _object_at(scopes_value, where)
        check = _SCOPE_CHECKS.get(transport)
        result[transport] = {}
        for scope, reqs in scopes.items():
            scope_where = f"{where}[{json.dumps(scope)}]"
            problem = check(scope) if check and scope else None
            if problem:
                raise _Bad(scope_where, f"invalid scope: {problem}")
            result[transport][scope] = _requirements(reqs, scope_where)
    return result


def parse_policy(data: bytes, path: str) -> Policy:
    """Parse a policy document; PolicyError naming *path* and the key for anything invalid."""
    try:
        doc = _load_json(data)
        top = _fields(doc, "policy", ("default", "transports"), ("default",))
        return Policy(path, _requirements(top["default"], "default"), _transports(top.get("transports", _Object())))
    except _Bad as exc:
        raise PolicyError(f"{path}: {exc}") from None
    except ValueError as exc:  # not JSON, not UTF-8
        raise PolicyError(f"{path}: not a valid JSON document: {exc}") from None


def load_policy(path: str) -> Policy:
    """Read and parse the policy file at *path*."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PolicyError(f"cannot read the signature policy {path}: {exc.strerror or exc}") from None
    return parse_policy(data, path)


def policy_path(flag: str | None) -> str:
    """The policy file to use: *flag* (``--signature-policy``), else the user's file when it
    exists, else the system's; PolicyError when the chosen file does not exist."""
    if flag:
        path = flag
    else:
        user = os.path.join(os.path.expanduser("~"), USER_POLICY)
        path = user if os.path.lexists(user) else SYSTEM_POLICY
    if not os.path.lexists(path):
        raise PolicyError(f"no signature policy: {path} does not exist; {CREATE_HINT}")
    return path


# --- Editing (podrun trust set) and listing (podrun trust show) ----------------------------------


def validate_scope(transport: str, scope: str) -> None:
    """What ``trust set`` may write: a known transport and ``""`` or a scope it can match.  For
    ``docker`` (which containers/image does not check on reading): ``*.domain``, ``host[:port]``,
    or a fully expanded ``host[:port]/path[:tag|@digest]``.  Raises PolicyError."""
    problem: str | None = None
    if transport != "docker" and transport not in _SCOPE_CHECKS:
        problem = "unknown transport"
    elif not scope:
        pass
    elif transport == "docker":
        try:
            if scope.startswith("*."):
                ok = bool(DOMAIN_NAME_RE.fullmatch(scope[2:]))
            elif "/" not in scope or parse(scope).name_only:  # a host or a namespace: its children expand to it
                ok = parse_normalized(scope + "/x/y").name == scope + "/x/y"
            else:
                ok = str(parse_canonical(scope)) == scope
        except ValueError:
            ok = False
        if not ok:
            problem = "not *.domain, host[:port] or a fully expanded host[:port]/path[:tag|@digest]"
    else:
        problem = _SCOPE_CHECKS[transport](scope)
    if problem:
        raise PolicyError(f"invalid scope {scope!r} for {transport}: {problem}")


def _edit(doc: bytes | None, path: str, change: Callable[[dict[str, object]], None]) -> bytes:
    if doc is None:  # no file yet: everything else stays refused, as without a policy
        top: dict[str, object] = {"default": [{"type": Reject.TYPE}]}
    else:
        parse_policy(doc, path)  # an invalid document is not edited
        loaded = json.loads(doc.decode("utf-8"))
        assert isinstance(loaded, dict)
        top = loaded
    change(top)
    out = (json.dumps(top, indent=4, ensure_ascii=False) + "\n").encode("utf-8")
    parse_policy(out, path)  # the requirements given must make a valid policy
    return out


def set_scope(
    doc: bytes | None, transport: str, scope: str, requirements: list[object], path: str = "policy.json",
) -> bytes:
    """*doc* (None: no file yet) with ``transports[transport][scope]`` set to *requirements*,
    every other entry (unknown transports included) kept as it was."""
    validate_scope(transport, scope)

    def change(top: dict[str, object]) -> None:
        transports = top.setdefault("transports", {})
        assert isinstance(transports, dict)
        scopes = transports.setdefault(transport, {})
        assert isinstance(scopes, dict)
        scopes[scope] = requirements

    return _edit(doc, path, change)


def set_default(doc: bytes | None, requirements: list[object], path: str = "policy.json") -> bytes:
    """*doc* (None: no file yet) with ``default`` set to *requirements*, the rest kept."""

    def change(top: dict[str, object]) -> None:
        top["default"] = requirements

    return _edit(doc, path, change)


class PolicyRow(Record):
    """One requirement of one scope, for ``trust show``; ``transport`` is "" for ``default``."""

    transport: Final[str]
    scope: Final[str]
    type: Final[str]
    keys: Final[str]
    identity: Final[str]
    __slots__ = ("transport", "scope", "type", "keys", "identity")

    def __init__(self, transport: str, scope: str, type: str, keys: str, identity: str) -> None:
        self.transport = transport
        self.scope = scope
        self.type = type
        self.keys = keys
        self.identity = identity


def describe(policy: Policy) -> list[PolicyRow]:
    """Every requirement of the policy, ``default`` first, then transports and scopes in file order."""

    def rows(transport: str, scope: str, reqs: tuple[Requirement, ...]) -> Iterator[PolicyRow]:
        for req in reqs:
            yield PolicyRow(transport, scope, req.TYPE, req.keys(), req.identity())

    result = list(rows("", "default", policy.default))
    for transport, scopes in policy.transports.items():
        for scope, reqs in scopes.items():
            result.extend(rows(transport, scope, reqs))
    return result
