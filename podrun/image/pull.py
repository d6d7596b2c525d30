"""Pulling: drive an ImageSource, verify everything, fill the store (stage0's fetch).

Order of work, each step idempotent so a rerun after ``kill -9`` finishes the job:
manifest (and index) -> config -> every layer blob downloaded and unpacked, in parallel
(per-digest locks make concurrent pulls do each one once) -> image record -> name.
An image is visible only once its record exists, and the record is written last.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podrun import faults
from podrun.errors import LimitExceededError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.decompress import open_decompressed
from podrun.image.digest import Digest
from podrun.image.limits import DEFAULT_LIMITS, Limits
from podrun.image.manifest import (
    Index,
    Manifest,
    Platform,
    parse_config,
    parse_manifest_or_index,
    select_platform,
    verify_manifest_bytes,
)
from podrun.image.source import ImageSource, ManifestBytes
from podrun.image.store import ImageRecord, LayerRecord, Store

Progress = Callable[[str, int, int], None]
"""progress(what, done_bytes, total_bytes) — called from worker threads."""

MAX_PARALLEL_LAYERS = 4


# Admission (podrun.trust.decide, handed in by stage0: image never imports trust): called with
# the exact bytes and digest of the chosen per-platform manifest, before any config or layer is
# read; returns what admitted the image (recorded with it) or raises VerificationError.
Admit = Callable[[ManifestBytes, Digest], dict[str, Any]]


@dataclass(frozen=True)
class PullOptions:
    platform: Platform | None = None
    limits: Limits = DEFAULT_LIMITS
    progress: Progress | None = None
    admit: Admit | None = None


class _ProgressReader:
    """Counts bytes read from a stream for progress reporting."""

    def __init__(self, raw: Any, what: str, total: int, progress: Progress) -> None:
        self.raw, self.what, self.total, self.progress = raw, what, total, progress
        self.done = 0

    def read(self, n: int = -1) -> bytes:
        data: bytes = self.raw.read(n)
        self.done += len(data)
        self.progress(self.what, self.done, self.total)
        return data

    def close(self) -> None:
        self.raw.close()


def resolve_manifest(
    source: ImageSource, platform: Platform | None, limits: Limits
) -> tuple[ManifestBytes, Manifest, Digest]:
    """The platform manifest the source's reference names, verified; and its digest."""
    top = source.top_manifest(limits.manifest_bytes)
    what = source.description
    top_digest = verify_manifest_bytes(top, what)
    doc = parse_manifest_or_index(top, what)
    if isinstance(doc, Index):
        desc = select_platform(doc, platform or Platform.host(), what)
        if desc.size > limits.manifest_bytes:
            raise LimitExceededError(f"{what}: manifest {desc.digest} limit exceeded ({desc.size} bytes)")
        mb = source.manifest_by_digest(desc.digest, limits.manifest_bytes)
        mb = ManifestBytes(mb.data, mb.media_type or desc.media_type, desc.digest)
        if len(mb.data) != desc.size:
            raise VerificationError(f"{what}: manifest {desc.digest} size does not match the index")
        top_digest = verify_manifest_bytes(mb, what)
        doc = parse_manifest_or_index(mb, f"{what} ({desc.digest.short})")
        if isinstance(doc, Index):
            raise VerificationError(f"{what}: nested index where a manifest was expected")
        top = mb
    if len(doc.layers) > limits.layers:
        raise LimitExceededError(f"{what}: {len(doc.layers)} layers, limit exceeded ({limits.layers})")
    return top, doc, top_digest


def unpack_from_blob(store: Store, blob: Path, layer: LayerRecord, limits: Limits, what: str) -> None:
    """Unpack a stored layer blob into the layer store, checking its diff_id."""
    from podrun.image.unpack import unpack_layer

    def build(rootfs: Path) -> dict[str, Any]:
        if faults.armed("store:layer-midway"):
            (rootfs / "partial-file").write_bytes(b"x")
            faults.checkpoint("store:layer-midway")
        with open(blob, "rb") as raw:
            stream = open_decompressed(raw, mt.LAYER_COMPRESSION[layer.media_type], what)
            result = unpack_layer(stream, rootfs, limits, what)
        if result.diff_id != layer.diff_id:
            raise VerificationError(f"{what}: diff_id {result.diff_id} does not match the config's {layer.diff_id}")
        if result.devices_skipped:
            from podrun import log as podrun_log

            more = ", …" if result.devices_skipped > len(result.device_examples) else ""
            podrun_log.get(__name__).warning(
                "%s: skipped %d device node(s) (%s%s): devices are never usable in a pod", what,
                result.devices_skipped, ", ".join(result.device_examples), more)
        return {
            "diff_id": str(layer.diff_id),
            "size": result.size,
            "entries": result.entries,
            "devices_skipped": result.devices_skipped,
            "blob": str(layer.digest),
        }

    store.ensure_layer(layer.diff_id, build)


def pull(store: Store, source: ImageSource, options: PullOptions | None = None) -> ImageRecord:
    """Fetch the image *source* names into *store*; returns its record (idempotent)."""
    options = options or PullOptions()
    limits = options.limits
    what = source.description
    with store.writing():
        top, manifest, image_id = resolve_manifest(source, options.platform, limits)
        faults.checkpoint("pull:after-manifest")
        trust = options.admit(top, image_id) if options.admit is not None else None
        existing = store.complete_image(image_id)
        if existing is not None:
            if trust is not None and trust != existing.trust:
                existing = existing.admitted(trust)
                store.write_image(existing)
            return existing
        if manifest.config.size > limits.manifest_bytes:
            raise LimitExceededError(f"{what}: config limit exceeded ({manifest.config.size} bytes)")
        config_digest = manifest.config.digest
        store.put_blob_stream(
            config_digest, manifest.config.size,
            lambda: source.open_blob(config_digest, manifest.config.size), f"{what} config",
        )
        config = parse_config(store.read_blob(config_digest), len(manifest.layers), f"{what} config")
        layers = tuple(
            LayerRecord(d.digest, diff_id, d.media_type, d.size)
            for d, diff_id in zip(manifest.layers, config.diff_ids, strict=True)
        )

        def fetch_layer(layer: LayerRecord) -> None:
            lwhat = f"{what} layer {layer.digest.short}"
            # The blob is kept even when the tree exists (from another image with the same
            # diff_id but another compression): exports and fsck need the exact blob.
            if store.has_layer(layer.diff_id) and store.has_blob(layer.digest):
                return

            def opener() -> Any:
                raw = source.open_blob(layer.digest, layer.size)
                if options.progress:
                    return _ProgressReader(raw, layer.digest.short, layer.size, options.progress)
                return raw

            blob = store.put_blob_stream(layer.digest, layer.size, opener, lwhat)
            if not store.has_layer(layer.diff_id):
                unpack_from_blob(store, blob, layer, limits, lwhat)

        try:
            _run_parallel(fetch_layer, layers)
        except BaseException:
            with contextlib.suppress(OSError):
                store.clean_temp()  # what a failed removal left (EMFILE, EIO); live writers' stay
            raise
        store.put_blob_bytes(top.data, f"{what} manifest", image_id)
        unpacked = sum(_layer_size(store, layer.diff_id) for layer in layers)
        record = ImageRecord(
            id=image_id,
            manifest_media_type=manifest.media_type,
            manifest_size=len(top.data),
            config=config_digest,
            config_size=manifest.config.size,
            layers=layers,
            created=config.created,
            fetched=time.time(),
            source=what,
            unpacked_size=unpacked,
            trust=trust,
        )
        faults.checkpoint("pull:before-record")
        store.write_image(record)
        return record


def _layer_size(store: Store, diff_id: Digest) -> int:
    import json

    try:
        return int(json.loads((store.layer_dir(diff_id) / "layer.json").read_text()).get("size", 0))
    except (OSError, ValueError):
        return 0


def _run_parallel(fn: Callable[[LayerRecord], None], layers: tuple[LayerRecord, ...]) -> None:
    """Run *fn* on every layer, a few at a time; the first error is re-raised after the others
    have stopped (no worker keeps writing once the command is failing)."""
    if len(layers) <= 1:
        for layer in layers:
            fn(layer)
        return
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_LAYERS, len(layers))) as pool:
        futures = [pool.submit(fn, layer) for layer in layers]
        error: BaseException | None = None
        for fut in futures:
            try:
                fut.result()
            except BaseException as exc:
                if error is None:
                    error = exc
                    for other in futures:
                        other.cancel()
        if error is not None:
            raise error
