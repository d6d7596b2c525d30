"""containers-registries.d(5): where the signatures of a registry image live.

Read as containers/image (podman, skopeo) reads it (``docker/registries_d.go``), so one host
configuration serves them all:

- The directory: ``--registries.d DIR``, else ``$HOME/.config/containers/registries.d`` if it
  exists, else ``/etc/containers/registries.d``.  A missing directory is an empty configuration.
- Every ``*.yaml`` file in it is merged.  ``default-docker`` may appear in one file only, and a
  scope under ``docker`` in one file only (even when the two halves would not conflict): both
  are errors naming the two files.  A key twice in one mapping is refused (as yaml.v3 does).
- Per scope: ``lookaside`` / ``lookaside-staging`` and their old names ``sigstore`` /
  ``sigstore-staging`` (the new name wins within a scope), ``use-sigstore-attachments``.
  A ``null`` value is "not set"; so is ``default-docker:`` left empty (Debian's default.yaml).
- Unknown keys: containers/image decodes with yaml.v3's non-strict ``Unmarshal``, which ignores
  them, so a file podman reads must read here too: podrun ignores them as well, with one warning
  naming file and key (a misspelt ``lookaside`` does not pass unnoticed).
- Scope resolution, per setting (a scope that does not set one falls through to the next):
  the image's identity (``host[:port]/repo:tag`` or ``@digest``), the repository and each parent
  namespace down to ``host[:port]``, then ``*.domain`` wildcards of the host without its port,
  then ``default-docker``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from podrun.errors import UsageError
from podrun.image.reference import DockerReference

USER_DIR = ".config/containers/registries.d"
SYSTEM_DIR = "/etc/containers/registries.d"
# containers/image's built-in lookaside when none is configured, for root and for other users.
BUILTIN_LOOKASIDE_ROOT = "file:///var/lib/containers/sigstore"
BUILTIN_LOOKASIDE_USER = ".local/share/containers/sigstore"  # under $HOME

SECTION_KEYS = ("lookaside", "lookaside-staging", "sigstore", "sigstore-staging", "use-sigstore-attachments")
TOP_KEYS = ("default-docker", "docker")
MAX_FILE = 1 << 20  # a registries.d file larger than this is a mistake, not a configuration


@dataclass(frozen=True)
class Section:
    """One configuration section (``default-docker`` or a ``docker`` scope), as written."""

    lookaside: str | None = None
    lookaside_staging: str | None = None
    sigstore: str | None = None
    sigstore_staging: str | None = None
    use_sigstore_attachments: bool | None = None

    def read_url(self) -> str | None:
        """The URL signatures are read from: ``lookaside``, else ``sigstore``."""
        return self.lookaside or self.sigstore

    def write_url(self) -> str | None:
        """The URL signatures are written to: the staging URL, else the read URL."""
        return self.lookaside_staging or self.sigstore_staging or self.read_url()


@dataclass(frozen=True)
class Entry:
    """What registries.d says about one image.  ``lookaside`` is None when nothing is
    configured (containers/image then uses ``builtin_lookaside()``); ``lookaside_staging`` is
    where new signatures go (the staging URL, else the read URL of the first scope that has
    either)."""

    lookaside: str | None
    lookaside_staging: str | None
    use_sigstore_attachments: bool


@dataclass(frozen=True)
class RegistriesConfig:
    """The merged configuration of a registries.d directory."""

    default_docker: Section | None = None
    docker: dict[str, Section] = field(default_factory=dict)

    def for_image(self, ref: DockerReference) -> Entry:
        """The lookaside and sigstore-attachment settings for *ref* (see the module docstring)."""
        sections = [self.docker[s] for s in docker_scopes(ref) if s in self.docker]
        if self.default_docker is not None:
            sections.append(self.default_docker)
        read = next((url for s in sections if (url := s.read_url())), None)
        write = next((url for s in sections if (url := s.write_url())), None)
        attach = next((s.use_sigstore_attachments for s in sections if s.use_sigstore_attachments is not None), False)
        return Entry(read, write, attach)


def docker_scopes(ref: DockerReference) -> list[str]:
    """The scopes to search for *ref*, most specific first (containers/image's
    PolicyConfigurationIdentity, then PolicyConfigurationNamespaces): the identity, the
    repository, its parent namespaces down to ``host[:port]``, then ``*.`` wildcards of the host
    without its port (``a.example.com:5000`` -> ``*.example.com``, ``*.com``)."""
    name = ref.name
    identity = f"{name}@{ref.digest}" if ref.digest else f"{name}:{ref.tag or 'latest'}"
    scopes = [identity]
    while True:
        scopes.append(name)
        slash = name.rfind("/")
        if slash < 0:
            break
        name = name[:slash]
    host = name.split(":", 1)[0]  # as containers/image: an IPv6 literal gets no wildcards
    while "." in host:
        host = host.split(".", 1)[1]
        scopes.append("*." + host)
    return scopes


def registries_d_dir(flag: str | None, env: Mapping[str, str] | None = None) -> str:
    """The registries.d directory: *flag* (``--registries.d``), else
    ``$HOME/.config/containers/registries.d`` if it exists, else the system one."""
    if flag:
        return flag
    home = (os.environ if env is None else env).get("HOME", "")
    if home:
        user = os.path.join(home, USER_DIR)
        if os.path.exists(user):
            return user
    return SYSTEM_DIR


def builtin_lookaside(env: Mapping[str, str] | None = None) -> str:
    """containers/image's lookaside when registries.d configures none: for root
    ``/var/lib/containers/sigstore``, for other users ``$HOME/.local/share/containers/sigstore``."""
    if os.geteuid() == 0:
        return BUILTIN_LOOKASIDE_ROOT
    home = (os.environ if env is None else env).get("HOME", "") or os.path.expanduser("~")
    return "file://" + os.path.join(home, BUILTIN_LOOKASIDE_USER)


class _Loader(yaml.SafeLoader):  # type: ignore[misc]
    """safe_load that refuses a key twice in one mapping (yaml.v3 does; PyYAML keeps the last)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} defined twice", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _parse_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except IsADirectoryError:
        raise UsageError(f"registries.d file {path}: is a directory") from None
    except OSError as exc:
        raise UsageError(f"registries.d file {path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE:
        raise UsageError(f"registries.d file {path}: larger than {MAX_FILE} bytes")
    try:
        doc = yaml.load(data, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass
    except yaml.YAMLError as exc:
        reason = " ".join(str(exc).split())
        raise UsageError(f"registries.d file {path}: invalid YAML: {reason}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UsageError(f"registries.d file {path}: must be a YAML mapping, not {type(doc).__name__}")
    return doc


def _check_keys(path: str, where: str, doc: dict[Any, Any], known: tuple[str, ...]) -> None:
    for key in doc:
        if not isinstance(key, str):
            raise UsageError(f"registries.d file {path}: {where}key {key!r} is not a string")
        if key not in known:
            from podrun import log

            log.get(__name__).warning("registries.d file %s: unknown key %s%r ignored (known keys: %s)",
                                      path, where, key, ", ".join(known))


def _section(path: str, where: str, value: object) -> Section:
    if value is None:
        return Section()
    if not isinstance(value, dict):
        raise UsageError(f"registries.d file {path}: {where.rstrip('.')} must be a mapping")
    _check_keys(path, where, value, SECTION_KEYS)
    urls: dict[str, str | None] = {}
    for key in SECTION_KEYS[:4]:
        url = value.get(key)
        if url is not None and not isinstance(url, str):
            raise UsageError(f"registries.d file {path}: {where}{key} must be a URL string")
        urls[key.replace("-", "_")] = url or None
    attach = value.get("use-sigstore-attachments")
    if attach is not None and not isinstance(attach, bool):
        raise UsageError(f"registries.d file {path}: {where}use-sigstore-attachments must be true or false")
    return Section(use_sigstore_attachments=attach, **urls)


def load(directory: str) -> RegistriesConfig:
    """Read and merge every ``*.yaml`` file of *directory* (sorted by name); errors name the
    file and the key.  A missing directory is an empty configuration."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".yaml"))
    except FileNotFoundError:
        return RegistriesConfig()
    except OSError as exc:
        raise UsageError(f"registries.d directory {directory}: {exc.strerror or exc}") from None
    default: Section | None = None
    default_from = ""
    docker: dict[str, Section] = {}
    docker_from: dict[str, str] = {}
    for name in names:
        path = os.path.join(directory, name)
        if not os.path.lexists(path):
            continue  # removed since the listing (containers/image ignores that race too)
        doc = _parse_file(path)
        _check_keys(path, "", doc, TOP_KEYS)
        if doc.get("default-docker") is not None:
            if default is not None:
                raise UsageError(f'registries.d: "default-docker" defined both in {default_from} and {path}')
            default, default_from = _section(path, "default-docker.", doc["default-docker"]), path
        scopes = doc.get("docker")
        if scopes is None:
            continue
        if not isinstance(scopes, dict):
            raise UsageError(f"registries.d file {path}: docker must be a mapping of scopes")
        for scope, value in scopes.items():
            if not isinstance(scope, str) or not scope:
                raise UsageError(f"registries.d file {path}: docker scope {scope!r} is not a non-empty string")
            if scope in docker:
                raise UsageError(
                    f'registries.d: docker scope "{scope}" defined both in {docker_from[scope]} and {path}')
            docker[scope] = _section(path, f"docker.{scope}.", value)
            docker_from[scope] = path
    return RegistriesConfig(default, docker)
