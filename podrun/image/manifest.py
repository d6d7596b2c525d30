"""Frozen models of image manifests, indexes and configs, parsed from untrusted JSON.

Parsing validates every field podrun uses (types, digests, sizes, media types) so the rest of
stage0 works with checked data only (SECURITY-TESTS case 7 and 8).
"""

from __future__ import annotations

import json
import platform as _platform
from dataclasses import dataclass
from typing import Any

from podrun.errors import NotFoundError, UsageError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.digest import Digest
from podrun.image.source import ManifestBytes

_MACHINE_TO_ARCH = {
    "x86_64": ("amd64", ""),
    "aarch64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i686": ("386", ""),
    "i386": ("386", ""),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def host(cls) -> Platform:
        arch, variant = _MACHINE_TO_ARCH.get(_platform.machine(), (_platform.machine(), ""))
        return cls("linux", arch, variant)

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``OS/ARCH[/VARIANT]`` as in ``--platform linux/arm64/v8``."""
        parts = text.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config podrun reads, plus the raw document."""

    raw: dict[str, Any]
    diff_ids: tuple[Digest, ...]
    os: str
    architecture: str
    created: str | None


def _load_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise VerificationError(f"{what}: expected a JSON object")
    return doc


def _descriptor(obj: Any, what: str) -> Descriptor:
    if not isinstance(obj, dict):
        raise VerificationError(f"{what}: descriptor is not an object")
    media_type = obj.get("mediaType")
    size = obj.get("size")
    digest = obj.get("digest")
    if not isinstance(media_type, str) or not media_type:
        raise VerificationError(f"{what}: descriptor without mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise VerificationError(f"{what}: descriptor has invalid size {size!r}")
    if not isinstance(digest, str):
        raise VerificationError(f"{what}: descriptor has invalid digest {digest!r}")
    plat = None
    p = obj.get("platform")
    if isinstance(p, dict):
        plat = Platform(str(p.get("os", "")), str(p.get("architecture", "")), str(p.get("variant", "")))
    ann = obj.get("annotations") or {}
    annotations = tuple(sorted((str(k), str(v)) for k, v in ann.items())) if isinstance(ann, dict) else ()
    return Descriptor(media_type, Digest.parse(digest), size, plat, annotations)


def verify_manifest_bytes(mb: ManifestBytes, what: str) -> Digest:
    """Check *mb* against its expected digest (if any); return its actual sha256 digest."""
    if mb.expected_digest is not None:
        actual = Digest.of_bytes(mb.data, mb.expected_digest.algorithm)
        if actual != mb.expected_digest:
            raise VerificationError(f"{what}: content does not match digest {mb.expected_digest}")
    return Digest.of_bytes(mb.data)


def parse_manifest_or_index(mb: ManifestBytes, what: str) -> Manifest | Index:
    """Parse a manifest or index; the declared media type and the document's must agree."""
    if mb.media_type in mt.SCHEMA1_TYPES:
        raise VerificationError(f"{what}: Docker schema1 manifests are not supported")
    doc = _load_object(mb.data, what)
    if doc.get("schemaVersion") == 1:
        raise VerificationError(f"{what}: Docker schema1 manifests are not supported")
    if doc.get("schemaVersion") != 2:
        raise VerificationError(f"{what}: unsupported schemaVersion {doc.get('schemaVersion')!r}")
    inner = doc.get("mediaType")
    declared = mb.media_type if mb.media_type in mt.INDEX_TYPES | mt.MANIFEST_TYPES else None
    if inner is not None and not isinstance(inner, str):
        raise VerificationError(f"{what}: mediaType is not a string")
    if declared and inner and inner != declared:
        raise VerificationError(
            f"{what}: media type mismatch: served as {declared}, document says {inner}"
        )
    kind = declared or inner
    if kind is None:
        # OCI allows omitting mediaType; tell the two apart by their fields.
        kind = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if kind in mt.INDEX_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise VerificationError(f"{what}: index without a manifests list")
        return Index(kind, tuple(_descriptor(e, what) for e in entries))
    if kind not in mt.MANIFEST_TYPES:
        raise VerificationError(f"{what}: unsupported manifest media type {kind!r}")
    config = _descriptor(doc.get("config"), what + " config")
    if config.media_type not in mt.CONFIG_TYPES:
        raise VerificationError(f"{what}: unsupported config media type {config.media_type!r}")
    layers_raw = doc.get("layers")
    if not isinstance(layers_raw, list):
        raise VerificationError(f"{what}: manifest without a layers list")
    layers = tuple(_descriptor(layer, what + " layer") for layer in layers_raw)
    for layer in layers:
        if layer.media_type not in mt.LAYER_COMPRESSION:
            raise VerificationError(f"{what}: unsupported layer media type {layer.media_type!r}")
    return Manifest(kind, config, layers)


def select_platform(index: Index, want: Platform, what: str) -> Descriptor:
    """Pick the manifest for *want* from an index (variant matched when both sides name one)."""
    candidates = [d for d in index.manifests if d.media_type in mt.MANIFEST_TYPES]
    for d in candidates:
        p = d.platform
        if p is None or p.os != want.os or p.architecture != want.architecture:
            continue
        if want.variant and p.variant and p.variant != want.variant:
            continue
        return d
    available = sorted({str(d.platform) for d in candidates if d.platform})
    raise NotFoundError(
        f"{what}: no image for platform {want} (available: {', '.join(available) or 'none'})",
        hint="use --platform OS/ARCH[/VARIANT]",
    )


def _str_list(value: Any, field: str, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise VerificationError(f"{what}: config field {field} must be a list of strings")
    if any("\0" in v for v in value):
        raise VerificationError(f"{what}: config field {field} contains a NUL byte")


def parse_config(data: bytes, layer_count: int, what: str) -> ImageConfig:
    """Parse an image config; the number of diff_ids must equal the manifest's layer count."""
    doc = _load_object(data, what)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise VerificationError(f"{what}: rootfs.type must be 'layers'")
    raw_ids = rootfs.get("diff_ids")
    if not isinstance(raw_ids, list) or not all(isinstance(d, str) for d in raw_ids):
        raise VerificationError(f"{what}: rootfs.diff_ids must be a list of digests")
    diff_ids = tuple(Digest.parse(d) for d in raw_ids)
    if len(diff_ids) != layer_count:
        raise VerificationError(
            f"{what}: {len(diff_ids)} diff_ids for {layer_count} layers in the manifest"
        )
    cfg = doc.get("config") or {}
    if not isinstance(cfg, dict):
        raise VerificationError(f"{what}: config must be an object")
    for field in ("Env", "Cmd", "Entrypoint"):
        _str_list(cfg.get(field), field, what)
    for field in ("User", "WorkingDir"):
        value = cfg.get(field)
        if value is not None and (not isinstance(value, str) or "\0" in value):
            raise VerificationError(f"{what}: config field {field} must be a string without NUL")
    workdir = cfg.get("WorkingDir")
    if workdir and not workdir.startswith("/"):
        raise VerificationError(f"{what}: WorkingDir {workdir!r} is not an absolute path")
    volumes = cfg.get("Volumes")
    if volumes is not None:
        if not isinstance(volumes, dict):
            raise VerificationError(f"{what}: config field Volumes must be an object")
        for vol in volumes:
            if not vol.startswith("/") or ".." in vol.split("/") or "\0" in vol:
                raise VerificationError(f"{what}: volume {vol!r} is not a clean absolute path")
    created = doc.get("created")
    return ImageConfig(
        raw=doc,
        diff_ids=diff_ids,
        os=str(doc.get("os", "")),
        architecture=str(doc.get("architecture", "")),
        created=created if isinstance(created, str) else None,
    )
