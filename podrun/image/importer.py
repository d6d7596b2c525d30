"""``podrun image import``: a single-layer image from a root filesystem (directory or tar)
and ``podrun image export``: an image from the store as an OCI archive (oci-archive:)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path
from typing import BinaryIO

from isal import igzip

from podrun import faults, fsutil
from podrun.errors import NotFoundError, UsageError
from podrun.image import mediatypes as mt
from podrun.image.decompress import open_decompressed
from podrun.image.digest import CHUNK, Digest
from podrun.image.limits import DEFAULT_LIMITS
from podrun.image.manifest import Platform
from podrun.image.pull import unpack_from_blob
from podrun.image.store import ImageRecord, LayerRecord, Store, normalize_name, storage_errors

DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes what passes through to *out* and counts it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.hash.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)


def _tar_directory(root: Path, out: BinaryIO) -> None:
    """Write *root*'s contents as a tar with sorted entries, numeric owners and no symlink
    following (so the layer is what the directory holds, byte for byte)."""

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:
        for child in sorted(os.listdir(root)):
            tf.add(root / child, arcname=child, recursive=True, filter=clean)


def import_rootfs(store: Store, src: str, name: str, cmd: list[str] | None = None) -> ImageRecord:
    """Make a one-layer image of the directory or tar archive *src* and name it *name*."""
    full_name = normalize_name(name)
    path = Path(src)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise NotFoundError(f"import source {src!r} does not exist") from None
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        raise UsageError(f"import source {src!r} is neither a directory nor a tar file")
    with store.writing():
        store.ensure()
        with storage_errors(f"importing {src}"), store.temp_entry("import") as (tmp, fd):
            with os.fdopen(fd, "wb", closefd=False) as f:
                compressed = _HashingWriter(f)
                with igzip.IGzipFile(fileobj=compressed, mode="wb", compresslevel=1, mtime=0) as gz:  # type: ignore[no-untyped-call]
                    plain = _HashingWriter(gz)  # type: ignore[arg-type]
                    if stat.S_ISDIR(st.st_mode):
                        _tar_directory(path, plain)  # type: ignore[arg-type]
                    else:
                        with open(path, "rb") as raw:
                            stream = open_decompressed(raw, None, f"import source {src}")
                            while chunk := stream.read(CHUNK):
                                plain.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            diff_id = Digest("sha256", plain.hash.hexdigest())
            digest = Digest("sha256", compressed.hash.hexdigest())
            blob = store.put_blob_stream(digest, compressed.size, lambda: open(tmp, "rb"), f"import {src}")
        layer = LayerRecord(digest, diff_id, mt.OCI_LAYER_GZIP, compressed.size)
        unpack_from_blob(store, blob, layer, DEFAULT_LIMITS, f"import {src}")
        host = Platform.host()
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        config = {
            "created": created,
            "architecture": host.architecture,
            "os": "linux",
            "config": {"Env": DEFAULT_ENV, "Cmd": cmd or ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]},
            "history": [{"created": created, "created_by": f"podrun image import {Path(src).name}"}],
        }
        if host.variant:
            config["variant"] = host.variant
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        config_digest = store.put_blob_bytes(config_bytes, "image config")
        manifest = {
            "schemaVersion": 2,
            "mediaType": mt.OCI_MANIFEST,
            "config": {"mediaType": mt.OCI_CONFIG, "digest": str(config_digest), "size": len(config_bytes)},
            "layers": [{"mediaType": mt.OCI_LAYER_GZIP, "digest": str(digest), "size": compressed.size}],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        image_id = store.put_blob_bytes(manifest_bytes, "image manifest")
        record = ImageRecord(
            id=image_id,
            manifest_media_type=mt.OCI_MANIFEST,
            manifest_size=len(manifest_bytes),
            config=config_digest,
            config_size=len(config_bytes),
            layers=(layer,),
            created=created,
            fetched=time.time(),
            source=f"import:{os.path.abspath(src)}",
            unpacked_size=plain.size,
        )
        store.write_image(record)
        store.set_name(full_name, image_id)
        return record


def export_oci_archive(store: Store, image_id: Digest, dest: str, ref: str | None) -> None:
    """Write the image as an OCI image layout in a tar archive at *dest*: a new file that
    replaces DEST only once complete, or a stream into a FIFO, a character device or an open
    descriptor (``-``, /dev/stdout, /dev/fd/N); a symlink or other DEST is refused
    (``fsutil.user_output``, SECURITY-TESTS case 26)."""
    rec = store.image(image_id)
    if ref is None:
        names = store.names_of(image_id)
        ref = names[0].rsplit(":", 1)[1] if names else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": mt.OCI_INDEX,
        "manifests": [
            {
                "mediaType": rec.manifest_media_type,
                "digest": str(rec.id),
                "size": rec.manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": ref},
            }
        ],
    }
    blobs = [rec.id, rec.config, *dict.fromkeys(layer.digest for layer in rec.layers)]
    for dig in blobs:  # before DEST is touched: a reader of a FIFO gets no half archive
        if not store.blob_path(dig).is_file():
            raise NotFoundError(f"blob {dig} of image {image_id.short} is missing from the store")
    with storage_errors(f"exporting to {dest}"), fsutil.user_output(dest) as out:
        if out.in_place and os.isatty(out.fd):
            raise UsageError(f"refusing to write an image archive to a terminal ({dest}): redirect it or name a file")
        # stream mode ("w|"): no seek or tell, so pipes and devices work as files do
        with open(out.fd, "wb", closefd=False) as f, \
                tarfile.open(fileobj=f, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            _add_bytes(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
            _add_bytes(tf, "index.json", json.dumps(index).encode())
            for dig in blobs:
                path = store.blob_path(dig)
                info = tf.gettarinfo(str(path), arcname=f"blobs/{dig.algorithm}/{dig.hex}")
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = 0o644
                with open(path, "rb") as blob:
                    tf.addfile(info, blob)
            faults.checkpoint("export:midway")  # every blob written, the archive not yet ended
        faults.checkpoint("export:before-commit")


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = int(time.time())
    tf.addfile(info, io.BytesIO(data))

