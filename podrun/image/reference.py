"""Image references, named as in containers-transports(5).

``docker://HOST[:PORT]/REPO[:TAG|@DIGEST]``, ``oci:DIR[:REF]``, ``oci-archive:FILE[:REF]``,
``docker-archive:FILE[:REF]``, and bare ``NAME[:TAG|@DIGEST]`` (the local store, then
``docker://`` when the pull policy allows).  Docker Hub short names expand the way Docker does
(``busybox`` -> ``docker.io/library/busybox:latest``).
"""

from __future__ import annotations

import re

from podrun.errors import UsageError
from podrun.image.digest import Digest
from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_HOST_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)

TRANSPORTS = ("docker", "oci", "oci-archive", "docker-archive")


class DockerReference(Record):
    """A registry image: ``registry/repository`` plus a tag or a digest (or both)."""

    registry: Final[str]
    repository: Final[str]
    tag: Final[str | None]
    digest: Final[Digest | None]

    __slots__ = ("registry", "repository", "tag", "digest")

    def __init__(self, registry: str, repository: str, tag: str | None, digest: Digest | None) -> None:
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest

    @property
    def name(self) -> str:
        """``registry/repository``: the name under which tags are recorded."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What to ask the registry for: the digest when present, else the tag."""
        return str(self.digest) if self.digest else (self.tag or DEFAULT_TAG)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


class ImageReference(Record):
    """A parsed image argument.  ``transport`` is one of TRANSPORTS or ``store`` (bare name)."""

    transport: Final[str]
    docker: Final[DockerReference | None]
    path: Final[str | None]  # oci:, oci-archive:, docker-archive:
    ref: Final[str | None]  # the :REF part of a local layout or archive

    __slots__ = ("transport", "docker", "path", "ref")

    def __init__(
        self, transport: str,
        docker: DockerReference | None = None,
        path: str | None = None,
        ref: str | None = None,
    ) -> None:
        self.transport = transport
        self.docker = docker
        self.path = path
        self.ref = ref

    def __str__(self) -> str:
        if self.transport == "store":
            return str(self.docker)
        if self.transport == "docker":
            return f"docker://{self.docker}"
        return f"{self.transport}:{self.path}" + (f":{self.ref}" if self.ref else "")


def parse_docker_name(text: str) -> DockerReference:
    """Parse ``[HOST[:PORT]/]REPO[:TAG][@DIGEST]`` with Docker's defaulting rules."""
    original = text
    if not text or len(text) > 4096:
        raise UsageError(f"invalid image reference {original!r}")
    digest = None
    if "@" in text:
        text, _, dig = text.partition("@")
        try:
            digest = Digest.parse(dig)
        except Exception as exc:
            raise UsageError(f"invalid image reference {original!r}: {exc}") from None
    tag = None
    slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise UsageError(f"invalid image reference {original!r}: bad tag {tag!r}")
    first, sep, rest = text.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
        if not _HOST_RE.match(registry):
            raise UsageError(f"invalid image reference {original!r}: bad registry {registry!r}")
    else:
        registry, repository = DEFAULT_REGISTRY, text
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"library/{repository}"
    if not _REPO_RE.match(repository):
        raise UsageError(
            f"invalid image reference {original!r}: repository must be lowercase "
            "letters, digits and separators"
        )
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return DockerReference(registry, repository, tag, digest)


def parse_reference(text: str) -> ImageReference:
    """Parse an image argument in any transport syntax; raises UsageError naming *text*."""
    if text.startswith("docker://"):
        return ImageReference("docker", docker=parse_docker_name(text[len("docker://") :]))
    for transport in ("oci-archive", "docker-archive", "oci"):
        prefix = transport + ":"
        if text.startswith(prefix):
            body = text[len(prefix) :]
            if not body:
                raise UsageError(f"invalid image reference {text!r}: missing path")
            # As containers-transports(5): the first ':' ends the path, the rest is REF
            # (which may itself hold ':', as in docker-archive:FILE:NAME:TAG).
            path, _, ref_text = body.partition(":")
            ref = ref_text or None
            if not path:
                raise UsageError(f"invalid image reference {text!r}: missing path")
            if "\0" in path:
                raise UsageError(f"invalid image reference {text!r}: NUL in path")
            return ImageReference(transport, path=path, ref=ref)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise UsageError(
            f"invalid image reference {text!r}: unknown transport {scheme!r} "
            f"(known: {', '.join(TRANSPORTS)})"
        )
    return ImageReference("store", docker=parse_docker_name(text))
