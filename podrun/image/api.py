"""stage0's image operations as the CLI calls them: fetch with a pull policy, import, export."""

from __future__ import annotations

import os
import re

from podrun import faults
from podrun.errors import NotFoundError, UsageError
from podrun.image.limits import DEFAULT_LIMITS
from podrun.image.reference import DockerReference, ImageReference, parse_reference
from podrun.image.source import ImageSource, LocalSource
from podrun.image.store import ImageRecord, SourceMemo, Store, normalize_name
from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final, Protocol

    from podrun.image.pull import Admit, PullOptions

    class Gate(Protocol):
        """The signature policy (podrun.trust.decide.PolicyGate; image never imports trust)."""

        def admit_local(self, ref: ImageReference) -> dict[str, Any]:
            """What admits an image of a layout or archive (no signatures there), or raise."""

        def admit_registry(self, ref: DockerReference, source: ImageSource) -> Admit:
            """The check ``pull`` makes on the chosen manifest, before any config or layer."""

PULL_POLICIES = ("new", "update", "never")
LOCAL_TRANSPORTS = ("oci", "oci-archive", "docker-archive")
_IMAGE_ID_RE = re.compile(r"(sha256:)?[0-9a-f]{12,64}")


class FetchRequest(Record):
    """One image to fetch.  *gate*: the signature policy every image read from a source must
    pass (stage0 always hands one; None only for callers that fetch without a policy, tests
    of the store)."""

    image: Final[str]
    pull_policy: Final[str]
    insecure: Final[frozenset[str]]
    options: Final[PullOptions | None]
    gate: Final[Gate | None]

    __slots__ = ("image", "pull_policy", "insecure", "options", "gate")

    def __init__(
        self, image: str,
        pull_policy: str = "new",
        insecure: frozenset[str] | None = None,
        options: PullOptions | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.image = image
        self.pull_policy = pull_policy
        self.insecure = frozenset() if insecure is None else insecure
        self.options = options
        self.gate = gate


def _with_admit(options: PullOptions | None, admit: Admit) -> PullOptions:
    import dataclasses

    from podrun.image.pull import PullOptions

    return dataclasses.replace(options or PullOptions(), admit=admit)


def open_source(ref: ImageReference, insecure: frozenset[str]) -> ImageSource:
    """Open the transport for *ref* (HTTP code is imported only when a registry is used)."""
    if ref.transport in ("docker", "store"):
        from podrun.image.registry import RegistrySource

        assert ref.docker is not None
        return RegistrySource(ref.docker, insecure=insecure)
    return open_local(ref, deferred=False)


def open_local(ref: ImageReference, *, deferred: bool) -> LocalSource:
    """Open a layout or archive; *deferred*: read only what ``LocalSource.reuse_key`` needs."""
    assert ref.path is not None
    if ref.transport == "oci":
        from podrun.image.layout import OCILayoutSource

        return OCILayoutSource(ref.path, ref.ref, deferred=deferred)
    if ref.transport == "oci-archive":
        from podrun.image.layout import OCIArchiveSource

        return OCIArchiveSource(ref.path, ref.ref, deferred=deferred)
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
    ``update`` always asks the registry, ``never`` uses only the store.  ``docker://`` always
    asks the registry; layouts and archives are read as ``_fetch_local`` says.
    """
    if req.pull_policy not in PULL_POLICIES:
        raise UsageError(f"invalid pull policy {req.pull_policy!r} (choose from {', '.join(PULL_POLICIES)})")
    if _IMAGE_ID_RE.fullmatch(req.image):
        # An image ID (or a prefix of 12+ hex digits) names what is in the store, nothing remote.
        return store.image(store.resolve(req.image))
    ref = parse_reference(req.image)
    if ref.transport in LOCAL_TRANSPORTS:
        return _fetch_local(store, ref, req)
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
        name = source.default_name
        if ref.docker is not None and ref.docker.tag:
            name = f"{ref.docker.name}:{ref.docker.tag}"
        options = req.options
        if req.gate is not None:
            assert ref.docker is not None
            options = _with_admit(options, req.gate.admit_registry(ref.docker, source))
        return _pull(store, source, options, name)
    finally:
        source.close()


def _fetch_local(store: Store, ref: ImageReference, req: FetchRequest) -> ImageRecord:
    """Fetch from a layout or archive (docs/store.md, "Reuse of local sources").

    When the documents that decide the image (``LocalSource.reuse_key``) are byte for byte
    those of an earlier full read (never judged by file times), and the documents that read
    took by digest (the manifest) still hash to it, the stored image is used without parsing
    anything or reading any config or layer.  Otherwise the source is read and verified in
    full and what the store lacks is stored.  Pull policies concern bare names only.
    """
    # The policy decides before anything of the source is used (local sources carry no
    # signatures: a policy that asks for them refuses; containers/image's rule).
    trust = req.gate.admit_local(ref) if req.gate is not None else None
    source = open_local(ref, deferred=True)
    try:
        key = None
        if req.options is None or req.options.limits == DEFAULT_LIMITS:
            platform = req.options.platform if req.options is not None else None
            key = source.reuse_key(str(platform) if platform else "host " + os.uname().machine)
        if key is not None:
            record = _reuse(store, source, key)
            if record is not None:
                if trust is not None and trust != record.trust:
                    with store.writing():
                        record = record.admitted(trust)
                        store.write_image(record)
                return record
        source.load()

        def remember(record: ImageRecord) -> None:
            if key is not None:
                store.remember_source(key, SourceMemo(record.id, source.reuse_checks(), source.default_name))

        options = req.options if trust is None else _with_admit(req.options, lambda _top, _digest: trust)
        return _pull(store, source, options, source.default_name, remember)
    finally:
        source.close()


def _reuse(store: Store, source: LocalSource, key: str) -> ImageRecord | None:
    """The stored image an earlier full read of *source* found under *key*, if the store still
    holds it complete and *source* still holds the documents read by digest; else None."""
    memo = store.source_memo(key)
    if memo is None:
        return None
    record = store.complete_image(memo.image)
    if record is None or not all(source.confirm(digest, size) for digest, size in memo.checks):
        return None
    if memo.name:
        name = normalize_name(memo.name)
        if store.name_target(name) != record.id:
            with store.writing():
                store.set_name(name, record.id)
    return record


def _pull(
    store: Store, source: ImageSource, options: PullOptions | None, name: str | None,
    then: Callable[[ImageRecord], None] | None = None,
) -> ImageRecord:
    """Pull *source*, name the image *name*, then call *then* with its record, all under the
    shared store lock."""
    # The shared store lock spans pull and naming, so `image rm` and `image gc` (exclusive)
    # see either no image or a named one.
    with store.writing():
        from podrun.image.pull import pull

        record = pull(store, source, options)
        if name:
            faults.checkpoint("pull:before-name")
            store.set_name(normalize_name(name), record.id)
        if then is not None:
            then(record)
    return record
