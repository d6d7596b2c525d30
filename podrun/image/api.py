"""stage0's image operations as the CLI calls them: fetch with a pull policy, import, export."""

from __future__ import annotations

import re

from podrun import faults
from podrun.errors import NotFoundError, UsageError
from podrun.image.reference import DockerReference, ImageReference, parse_reference
from podrun.image.source import ImageSource
from podrun.image.store import ImageRecord, Store, normalize_name
from podrun.lean import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from podrun.image.pull import PullOptions

PULL_POLICIES = ("new", "update", "never")
_IMAGE_ID_RE = re.compile(r"(sha256:)?[0-9a-f]{12,64}")


@dataclass(frozen=True)
class FetchRequest:
    image: str
    pull_policy: str = "new"
    insecure: frozenset[str] = field(default_factory=frozenset)
    options: PullOptions | None = None


def open_source(ref: ImageReference, insecure: frozenset[str]) -> ImageSource:
    """Open the transport for *ref* (HTTP code is imported only when a registry is used)."""
    if ref.transport in ("docker", "store"):
        from podrun.image.registry import RegistrySource

        assert ref.docker is not None
        return RegistrySource(ref.docker, insecure=insecure)
    assert ref.path is not None
    if ref.transport == "oci":
        from podrun.image.layout import OCILayoutSource

        return OCILayoutSource(ref.path, ref.ref)
    if ref.transport == "oci-archive":
        from podrun.image.layout import OCIArchiveSource

        return OCIArchiveSource(ref.path, ref.ref)
    if ref.transport == "docker-archive":
        from podrun.image.dockerarchive import DockerArchiveSource

        return DockerArchiveSource(ref.path, ref.ref)
    raise UsageError(f"unknown transport {ref.transport!r}")


def _local(store: Store, text: str, docker: DockerReference) -> ImageRecord | None:
    """The stored image a bare reference names (by digest, or by name as ``Store.resolve``)."""
    if docker.digest is not None and store.has_image(docker.digest):
        return store.image(docker.digest)
    try:
        return store.image(store.resolve(text))
    except NotFoundError:
        return None


def fetch(store: Store, req: FetchRequest) -> ImageRecord:
    """Fetch one image into the store and name it; returns its record.

    Bare names follow the pull policy (rkt's): ``new`` uses the store when the image is there,
    ``update`` always asks the registry, ``never`` uses only the store.  Explicit transports
    always read their source.
    """
    if req.pull_policy not in PULL_POLICIES:
        raise UsageError(f"invalid pull policy {req.pull_policy!r} (choose from {', '.join(PULL_POLICIES)})")
    if _IMAGE_ID_RE.fullmatch(req.image):
        # An image ID (or a prefix of 12+ hex digits) names what is in the store, nothing remote.
        return store.image(store.resolve(req.image))
    ref = parse_reference(req.image)
    if ref.transport == "store":
        assert ref.docker is not None
        if req.pull_policy != "update":
            local = _local(store, req.image, ref.docker)
            if local is not None:
                return local
        if req.pull_policy == "never":
            raise NotFoundError(f"image {req.image!r} is not in the store", hint="pull policy is 'never'")
    source = open_source(ref, req.insecure)
    try:
        # The shared store lock spans pull and naming, so `image rm` and `image gc` (exclusive)
        # see either no image or a named one.
        with store.writing():
            from podrun.image.pull import pull

            record = pull(store, source, req.options)
            name = source.default_name
            if ref.docker is not None and ref.docker.tag:
                name = f"{ref.docker.name}:{ref.docker.tag}"
            if name:
                faults.checkpoint("pull:before-name")
                store.set_name(normalize_name(name), record.id)
        return record
    finally:
        source.close()
