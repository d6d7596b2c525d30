"""``docker-archive:FILE[:REF]``: the ``docker save`` / ``podman save`` format (containers-transports(5)).

The archive's ``manifest.json`` lists images as ``{"Config", "RepoTags", "Layers"}`` with
member paths: ``<id>/layer.tar`` and ``<hex>.json`` in the classic format, ``blobs/sha256/<hex>``
in what Docker 25+ writes.  There is no registry manifest inside, so one is synthesized (Docker
schema2) from the hashes of the config and layer members as stored; the puller then verifies
every blob against it and every layer against the config's diff_ids like any other source.

Symlinks between members are followed *by name inside the archive* (classic ``docker save``
links a repeated layer to its first copy); nothing is ever extracted.

Hashing every layer on every read is what makes this transport slow, so its reuse key
(podrun.image.api) digests ``manifest.json``, the REF and the selected image's *config* (hashed:
it is small) with its layers' sizes: the config's diff_ids pin the content of every layer, so
an unchanged config names the same root filesystem, which the store verified when it kept it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from podrun.errors import LimitExceededError, NotFoundError, PodrunError, UsageError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.digest import CHUNK, Digest
from podrun.image.layout import TarArchive, docker_name, load_json, ref_matches
from podrun.image.limits import DEFAULT_LIMITS
from podrun.image.source import ManifestBytes, reuse_key

TYPE_CHECKING = False  # typing costs ~4 ms at start-up; annotations only (podrun.lean)
if TYPE_CHECKING:
    from typing import BinaryIO

_LAYER_TYPES = {"gzip": mt.DOCKER_LAYER_GZIP, "zstd": mt.OCI_LAYER_ZSTD, "none": mt.DOCKER_LAYER_TAR}

_MIN_DESCRIPTOR_JSON = 100
"""Fewer bytes than any layer descriptor takes in the synthesized manifest: bounds the layer
count by the manifest byte limit before any layer is hashed."""


@dataclass(frozen=True)
class _ArchivedImage:
    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


@dataclass(frozen=True)
class _HashedMember:
    digest: Digest
    size: int
    compression: str


def _parse_manifest_json(data: bytes, what: str) -> list[_ArchivedImage]:
    doc = load_json(data, what)
    if not isinstance(doc, list):
        raise VerificationError(f"{what}: expected a list of images")
    images = []
    for n, entry in enumerate(doc):
        if not isinstance(entry, dict):
            raise VerificationError(f"{what}: image {n} is not an object")
        config = entry.get("Config")
        tags = entry.get("RepoTags") or []
        layers = entry.get("Layers")
        if not isinstance(config, str) or not config:
            raise VerificationError(f"{what}: image {n} has no Config path")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise VerificationError(f"{what}: image {n}: RepoTags must be a list of strings")
        if not isinstance(layers, list) or not all(isinstance(p, str) and p for p in layers):
            raise VerificationError(f"{what}: image {n}: Layers must be a list of paths")
        images.append(_ArchivedImage(config, tuple(tags), tuple(layers)))
    return images


class DockerArchiveSource:
    """``docker-archive:FILE[:REF]``; REF is a tag (``name:tag``) or ``@N`` (the N-th image, from 0)."""

    def __init__(self, path: str, ref: str | None) -> None:
        self.description = f"docker-archive:{path}" + (f":{ref}" if ref else "")
        self.default_name: str | None = None
        self._archive = TarArchive(path, self.description)
        self._ref = ref
        self._blobs: dict[Digest, str] = {}  # digest -> member, filled by top_manifest
        self._hashed: dict[str, _HashedMember] = {}  # member -> its hash, each member read once
        self._manifest: bytes | None = None
        try:
            what = f"{self.description}: manifest.json"
            if not self._archive.has("manifest.json"):
                raise NotFoundError(f"{self.description}: manifest.json does not exist (not a docker archive)")
            self._manifest_json = self._archive.read("manifest.json", DEFAULT_LIMITS.manifest_bytes)
            images = _parse_manifest_json(self._manifest_json, what)
            self._image, tag = self._select(images, ref)
            self.default_name = docker_name(tag) if tag else None
        except BaseException:
            self.close()
            raise

    def _select(self, images: list[_ArchivedImage], ref: str | None) -> tuple[_ArchivedImage, str | None]:
        """The image REF names and the RepoTag to record it under."""
        tags = sorted({t for image in images for t in image.repo_tags})
        if not images:
            raise NotFoundError(f"{self.description}: the archive holds no image")
        if ref is None:
            if len(images) > 1:
                raise UsageError(
                    f"{self.description}: holds {len(images)} images, name one "
                    f"(tags: {', '.join(tags) or 'none'})",
                    hint=f"use {self.description}:NAME:TAG or :@N",
                )
            return images[0], next(iter(images[0].repo_tags), None)
        if ref.startswith("@"):
            if not ref[1:].isdigit() or int(ref[1:]) >= len(images):
                raise NotFoundError(
                    f"{self.description}: no image {ref} (the archive holds {len(images)}, from @0)"
                )
            image = images[int(ref[1:])]
            return image, next(iter(image.repo_tags), None)
        for image in images:
            for tag in image.repo_tags:
                if ref_matches(ref, tag):
                    return image, tag
        raise NotFoundError(f"{self.description}: no image tagged {ref!r} (tags: {', '.join(tags) or 'none'})")

    def _hash(self, member: str) -> _HashedMember:
        """Digest, size and compression of *member* as stored (each member read once)."""
        if member in self._hashed:
            return self._hashed[member]
        h = hashlib.sha256()
        size = 0
        head = b""
        with self._archive.open(member, follow_symlinks=True) as f:
            while chunk := f.read(CHUNK):
                if not head:
                    head = chunk[:4]
                h.update(chunk)
                size += len(chunk)
        from podrun.image.decompress import sniff

        hashed = _HashedMember(Digest("sha256", h.hexdigest()), size, sniff(head))
        self._hashed[member] = hashed
        self._blobs[hashed.digest] = member
        return hashed

    def _missing(self, member: str, role: str) -> None:
        if not self._archive.has(member):
            raise NotFoundError(f"{self.description}: {role} {member} does not exist in the archive")

    def top_manifest(self, limit: int) -> ManifestBytes:
        """A Docker schema2 manifest synthesized from the archive (hashing it once)."""
        if self._manifest is None:
            image = self._image
            if len(image.layers) * _MIN_DESCRIPTOR_JSON > limit:
                raise LimitExceededError(
                    f"{self.description}: {len(image.layers)} layers, manifest limit exceeded ({limit} bytes)"
                )
            for member, role in [(image.config, "config"), *((p, "layer") for p in image.layers)]:
                self._missing(member, role)
            config = self._hash(image.config)
            layers = [self._hash(p) for p in image.layers]
            doc = {
                "schemaVersion": 2,
                "mediaType": mt.DOCKER_MANIFEST,
                "config": {"mediaType": mt.DOCKER_CONFIG, "digest": str(config.digest), "size": config.size},
                "layers": [
                    {"mediaType": _LAYER_TYPES[layer.compression], "digest": str(layer.digest), "size": layer.size}
                    for layer in layers
                ],
            }
            self._manifest = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        if len(self._manifest) > limit:
            raise LimitExceededError(f"{self.description}: manifest limit exceeded ({limit} bytes)")
        return ManifestBytes(self._manifest, mt.DOCKER_MANIFEST, None)

    def manifest_by_digest(self, digest: Digest, limit: int) -> ManifestBytes:
        """Only the synthesized manifest has a digest here."""
        top = self.top_manifest(limit)
        if Digest.of_bytes(top.data, digest.algorithm) != digest:
            raise NotFoundError(f"{self.description}: no manifest {digest}")
        return ManifestBytes(top.data, top.media_type, digest)

    def open_blob(self, digest: Digest, size: int) -> BinaryIO:
        """The config or layer member that hashed to *digest* in top_manifest."""
        member = self._blobs.get(digest)
        if member is None:
            raise NotFoundError(f"{self.description}: no blob {digest}")
        return self._archive.open(member, follow_symlinks=True)

    def load(self) -> None:
        """Nothing to do: the constructor parsed ``manifest.json`` and selected the image."""

    def reuse_key(self, platform: str) -> str | None:
        """A digest of ``manifest.json``, REF, the image's config (hashed here) and its layers'
        sizes; None when a member is missing or the config is too large (the full read then
        reports it)."""
        image = self._image
        try:
            if self._archive.size(image.config, follow_symlinks=True) > DEFAULT_LIMITS.manifest_bytes:
                return None
            sizes = [str(self._archive.size(p, follow_symlinks=True)) for p in image.layers]
            config = self._hash(image.config)
        except PodrunError:
            return None
        return reuse_key("docker-archive", self._ref or "", platform, self._manifest_json,
                         str(config.digest), *sizes)

    def reuse_checks(self) -> tuple[tuple[Digest, int], ...]:
        """None: the key holds the config's digest, and only the synthesized manifest (no
        member of the archive) is read by digest."""
        return ()

    def confirm(self, digest: Digest, size: int) -> bool:
        """False: no member is known by digest before every one is hashed (and ``reuse_checks``
        names none, so a reuse never asks)."""
        return False

    def close(self) -> None:
        """Close the archive file."""
        if hasattr(self, "_archive"):
            self._archive.close()
