"""The content-addressed image store (stage0's on-disk state).

Layout under the data dir (``--dir``, default /var/lib/podrun); see docs/store.md::

    store/blobs/<alg>/<hex>          immutable blobs: manifests, configs, compressed layers
    store/layers/<alg>/<hex>/        one unpacked layer per diff_id: rootfs/ (an overlayfs
                                     lowerdir) and layer.json; present == complete
    store/images/<alg>/<hex>.json    image records, keyed by manifest digest (the image ID)
    store/refs/<quoted NAME:TAG>     name -> image ID, one small file per name
    store/sources/<key>              what a local source named when last read in full (a
                                     cache: podrun.image.api reuses the image it names)
    store/tmp/                       work in progress, never visible as complete; each entry
                                     locked by its writer (cleaners remove only dead writers')
    locks/store.lock                 shared by writers (fetch, import) and by run/prepare until
                                     the pod's manifest is written; exclusive for rm and gc
    locks/blob-<hex>, layer-<hex>    per-digest locks: concurrent fetches do the work once

Layers are keyed by diff_id (not chain id): each tree holds exactly one layer, with whiteouts
as overlay whiteouts, so one tree serves every image that contains that layer whatever sits
below it.  Every durable change is temp + fsync (or syncfs for trees) + rename.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

from podrun import faults, fsutil
from podrun import log as podrun_log
from podrun.errors import NotFoundError, PodrunError, StoreError, UsageError
from podrun.fsutil import remove_path, remove_tree
from podrun.image.digest import Digest, copy_verified
from podrun.image.reference import parse_docker_name
from podrun.lean import Record

TYPE_CHECKING = False  # typing costs ~4 ms at start-up; annotations only (podrun.lean)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, BinaryIO, Final


class LayerRecord(Record):
    digest: Final[Digest]  # blob digest (compressed, as distributed)
    diff_id: Final[Digest]
    media_type: Final[str]
    size: Final[int]  # compressed size

    __slots__ = ("digest", "diff_id", "media_type", "size")

    def __init__(self, digest: Digest, diff_id: Digest, media_type: str, size: int) -> None:
        self.digest = digest
        self.diff_id = diff_id
        self.media_type = media_type
        self.size = size


class ImageRecord(Record):
    """What the store knows of one complete image.  ``id`` is the manifest digest."""

    id: Final[Digest]
    manifest_media_type: Final[str]
    manifest_size: Final[int]
    config: Final[Digest]
    config_size: Final[int]
    layers: Final[tuple[LayerRecord, ...]]
    created: Final[str | None]
    fetched: Final[float]
    source: Final[str]
    unpacked_size: Final[int]
    # What admitted the image at its last fetch (podrun.trust.decide): the policy, the scope,
    # each requirement with the key and signature that satisfied it, or {"insecure": true}.
    # None: fetched before podrun checked policies, or imported (``image import``).
    trust: Final[dict[str, Any] | None]

    __slots__ = ("id", "manifest_media_type", "manifest_size", "config", "config_size", "layers", "created",
                 "fetched", "source", "unpacked_size", "trust")

    def __init__(
        self, id: Digest,
        manifest_media_type: str,
        manifest_size: int,
        config: Digest,
        config_size: int,
        layers: tuple[LayerRecord, ...],
        created: str | None,
        fetched: float,
        source: str,
        unpacked_size: int,
        trust: dict[str, Any] | None = None,
    ) -> None:
        self.id = id
        self.manifest_media_type = manifest_media_type
        self.manifest_size = manifest_size
        self.config = config
        self.config_size = config_size
        self.layers = layers
        self.created = created
        self.fetched = fetched
        self.source = source
        self.unpacked_size = unpacked_size
        self.trust = trust

    def admitted(self, trust: dict[str, Any] | None) -> ImageRecord:
        """This record with *trust* as what admitted the image."""
        return ImageRecord(self.id, self.manifest_media_type, self.manifest_size, self.config, self.config_size,
                           self.layers, self.created, self.fetched, self.source, self.unpacked_size, trust)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "manifest": {"mediaType": self.manifest_media_type, "size": self.manifest_size},
            "config": {"digest": str(self.config), "size": self.config_size},
            "layers": [
                {
                    "digest": str(layer.digest),
                    "diff_id": str(layer.diff_id),
                    "mediaType": layer.media_type,
                    "size": layer.size,
                }
                for layer in self.layers
            ],
            "created": self.created,
            "fetched": self.fetched,
            "source": self.source,
            "unpacked_size": self.unpacked_size,
            **({"trust": self.trust} if self.trust is not None else {}),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ImageRecord:
        return cls(
            id=Digest.parse(doc["id"]),
            manifest_media_type=doc["manifest"]["mediaType"],
            manifest_size=int(doc["manifest"]["size"]),
            config=Digest.parse(doc["config"]["digest"]),
            config_size=int(doc["config"]["size"]),
            layers=tuple(
                LayerRecord(
                    Digest.parse(x["digest"]), Digest.parse(x["diff_id"]), x["mediaType"], int(x["size"])
                )
                for x in doc["layers"]
            ),
            created=doc.get("created"),
            fetched=float(doc["fetched"]),
            source=str(doc.get("source", "")),
            unpacked_size=int(doc.get("unpacked_size", 0)),
            trust=doc["trust"] if isinstance(doc.get("trust"), dict) else None,
        )


class SourceMemo(Record):
    """What a local source named when it was last read in full, kept under a key that digests
    the documents deciding it (``LocalSource.reuse_key``).  A cache: a missing, damaged or
    stale memo only means the source is read in full again."""

    image: Final[Digest]
    checks: Final[tuple[tuple[Digest, int], ...]]  # documents read again and verified on reuse
    name: Final[str | None]  # NAME:TAG the source gives the image

    __slots__ = ("image", "checks", "name")

    def __init__(self, image: Digest, checks: tuple[tuple[Digest, int], ...], name: str | None) -> None:
        self.image = image
        self.checks = checks
        self.name = name

    def to_json(self) -> dict[str, Any]:
        return {"image": str(self.image), "checks": [[str(d), n] for d, n in self.checks], "name": self.name}

    @classmethod
    def from_json(cls, doc: Any) -> SourceMemo:
        """Parse a memo; ValueError (or KeyError, TypeError) when it is not one."""
        checks = tuple((Digest.parse(d), n) for d, n in doc["checks"])
        if not all(type(n) is int and n >= 0 for _, n in checks):
            raise ValueError("bad size")
        name = doc["name"]
        if name is not None and not isinstance(name, str):
            raise ValueError("bad name")
        return cls(Digest.parse(doc["image"]), checks, name)


_MEMO_LIMIT = 1 << 16


def normalize_name(text: str) -> str:
    """``NAME[:TAG]`` -> ``registry/repo:tag``; names without a registry go under ``localhost/``
    as podman does for local images (so ``demo`` is ``localhost/demo:latest``)."""
    first = text.split("/", 1)[0]
    if "/" not in text or not ("." in first or ":" in first or first == "localhost"):
        text = "localhost/" + text
    ref = parse_docker_name(text)
    if ref.digest is not None:
        raise UsageError(f"invalid image name {text!r}: a name cannot carry a digest")
    return f"{ref.name}:{ref.tag}"


def candidate_names(text: str) -> list[str]:
    """Store names a user's bare ``NAME[:TAG]`` may mean, most specific first."""
    out = []
    with contextlib.suppress(UsageError):
        ref = parse_docker_name(text)
        if ref.tag:
            out.append(f"{ref.name}:{ref.tag}")
    with contextlib.suppress(UsageError):
        name = normalize_name(text)
        if name not in out:
            out.append(name)
    return out


def _storage_error(exc: OSError, action: str) -> StoreError:
    if exc.errno == errno.ENOSPC:
        return StoreError(f"{action}: no space left on device", hint="free space, then `podrun image gc`")
    if exc.errno == errno.EROFS:
        return StoreError(f"{action}: the store is on a read-only filesystem")
    if exc.errno == errno.EMFILE:
        return StoreError(f"{action}: too many open files", hint="raise `ulimit -n`")
    return StoreError(f"{action}: {exc.strerror or exc} ({exc.filename or ''})".replace(" ()", ""))


@contextlib.contextmanager
def storage_errors(action: str) -> Iterator[None]:
    """Turn OSError into a one-line StoreError naming *action*."""
    try:
        yield
    except OSError as exc:
        raise _storage_error(exc, action) from exc


class Store:
    """The image store rooted at ``DIR/store`` (with locks in ``DIR/locks``)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "store"
        self.locks = self.data_dir / "locks"
        self.tmp = self.root / "tmp"

    # -- set-up -------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory tree (modes: data dir 0711, store and locks 0700)."""
        with storage_errors(f"creating the store in {self.data_dir}"):
            self.data_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
            for sub in (self.root, self.locks, self.tmp, self.root / "refs"):
                sub.mkdir(mode=0o700, exist_ok=True)
            for kind in ("blobs", "layers", "images"):
                (self.root / kind / "sha256").mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Shared store lock for commands that add content (gc takes it exclusively)."""
        self.ensure()
        with storage_errors("locking the store"), fsutil.flocked(self.locks / "store.lock", shared=True):
            with contextlib.suppress(OSError):  # best effort: image gc finishes the job
                self.clean_temp()
            yield

    @contextlib.contextmanager
    def using(self) -> Iterator[None]:
        """Shared store lock for ``run`` and ``prepare``, held from resolving their images until
        the pod's layer references are on disk (its manifest written): ``image rm`` and
        ``image gc`` (exclusive) then run either before the image is resolved or after gc can
        see the pod, so no pod starts with a layer gc deleted.  Lean: no ``ensure`` once the
        store exists (it is on the ``podrun run`` path)."""
        if not self.locks.is_dir():
            self.ensure()
        lock = fsutil.flocked(self.locks / "store.lock", shared=True)
        with storage_errors("locking the store"):
            lock.__enter__()
        try:
            yield
        finally:
            lock.__exit__()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        self.ensure()
        with storage_errors("locking the store"), fsutil.flocked(self.locks / "store.lock"):
            yield

    # -- blobs --------------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: Digest, limit: int | None = None) -> bytes:
        try:
            with open(self.blob_path(digest), "rb") as f:
                data = f.read() if limit is None else f.read(limit + 1)
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is not in the store") from None
        return data

    def put_blob_stream(self, digest: Digest, size: int, opener: Callable[[], BinaryIO], what: str) -> Path:
        """Store a blob from *opener*'s stream unless present; verified while streaming.

        Concurrent callers for one digest serialize on its lock; the loser finds it present.
        A partial download lives only in ``store/tmp`` and is removed on any failure.
        """
        final = self.blob_path(digest)
        if final.is_file():
            return final
        final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with fsutil.flocked(self.locks / f"blob-{digest.hex}.lock"):
            if final.is_file():
                return final
            with storage_errors(f"storing {what}"), self.temp_entry(f"blob-{digest.hex}") as (tmp, fd):
                src = opener()
                try:
                    with os.fdopen(fd, "wb", closefd=False) as out:
                        if faults.armed("store:blob-midway"):
                            out.write(src.read(max(1, size // 2)))
                            out.flush()
                            faults.checkpoint("store:blob-midway")
                        copy_verified(src, out, digest, size, what)
                        out.flush()
                        os.fsync(fd)
                finally:
                    src.close()
                os.fchmod(fd, 0o444)
                faults.checkpoint("store:blob-before-rename")
                os.rename(tmp, final)
                fsutil.fsync_dir(final.parent)
        return final

    def put_blob_bytes(self, data: bytes, what: str, digest: Digest | None = None) -> Digest:
        """Store small in-memory content (manifests, configs); returns its digest."""
        import io

        digest = digest or Digest.of_bytes(data)
        self.put_blob_stream(digest, len(data), lambda: io.BytesIO(data), what)
        return digest

    @contextlib.contextmanager
    def temp_entry(self, prefix: str, directory: bool = False) -> Iterator[tuple[Path, int]]:
        """A new file (or directory) in ``store/tmp`` under a unique name, with an fd holding
        its lock for the whole block: the lock is what tells cleaners (``clean_temp``) that its
        writer lives.  Removed at the end of the block unless renamed away."""
        path = self.tmp / f"{prefix}.{os.urandom(6).hex()}.{os.getpid()}"
        fd = fsutil.create_locked(path, directory)
        try:
            yield path, fd
        finally:
            try:
                # Best effort: when this fails too (EMFILE, EIO), the next fetch or
                # `image gc` finishes the job, the lock being free once we close.
                with contextlib.suppress(OSError):
                    remove_path(path)
            finally:
                os.close(fd)

    def clean_temp(self) -> list[str]:
        """Remove what killed writers left in ``store/tmp`` (entries whose lock is free) and
        return their names.  A live writer's entry is locked and kept, so this is safe beside
        concurrent fetches (under the shared store lock)."""
        try:
            names = sorted(os.listdir(self.tmp))
        except FileNotFoundError:
            return []
        return [name for name in names if fsutil.remove_if_abandoned(self.tmp / name)]

    # -- layers -------------------------------------------------------------------------------

    def layer_dir(self, diff_id: Digest) -> Path:
        return self.root / "layers" / diff_id.algorithm / diff_id.hex

    def layer_rootfs(self, diff_id: Digest) -> Path:
        """The overlayfs lowerdir of one unpacked layer."""
        return self.layer_dir(diff_id) / "rootfs"

    def has_layer(self, diff_id: Digest) -> bool:
        return (self.layer_dir(diff_id) / "layer.json").is_file()

    def layer_metadata(self, diff_id: Digest) -> dict[str, Any]:
        """The layer.json of an unpacked layer ({} when it is missing or damaged: fsck's job)."""
        try:
            doc = json.loads((self.layer_dir(diff_id) / "layer.json").read_bytes())
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def ensure_layer(self, diff_id: Digest, build: Callable[[Path], dict[str, Any]]) -> None:
        """Make the unpacked tree for *diff_id* exist, building it at most once across processes.

        *build(rootfs)* fills an empty directory and returns metadata for layer.json; it must
        raise if the content's diff_id differs.  The tree becomes visible by one rename after
        a syncfs, so a crash leaves either nothing or a complete layer.
        """
        if self.has_layer(diff_id):
            return
        with fsutil.flocked(self.locks / f"layer-{diff_id.hex}.lock"):
            if self.has_layer(diff_id):
                return
            with storage_errors(f"unpacking layer {diff_id}"), \
                    self.temp_entry(f"layer-{diff_id.hex}", directory=True) as (work, _):
                rootfs = work / "rootfs"
                rootfs.mkdir(mode=0o755)
                meta = build(rootfs)
                (work / "layer.json").write_text(json.dumps(meta, sort_keys=True))
                fsutil.syncfs(work)
                faults.checkpoint("store:layer-before-rename")
                final = self.layer_dir(diff_id)
                final.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if final.exists():  # an incomplete leftover without layer.json
                    remove_tree(final)
                os.rename(work, final)
                fsutil.fsync_dir(final.parent)
                podrun_log.get(__name__).info("unpacked layer %s", diff_id)

    # -- images and names ---------------------------------------------------------------------

    def _image_path(self, image_id: Digest) -> Path:
        return self.root / "images" / image_id.algorithm / f"{image_id.hex}.json"

    def has_image(self, image_id: Digest) -> bool:
        return self._image_path(image_id).is_file()

    def complete_image(self, image_id: Digest) -> ImageRecord | None:
        """The image's record when it, its config and all its layers are in the store (a
        damaged or half-removed image is fetched again)."""
        if not self.has_image(image_id):
            return None
        try:
            record = self.image(image_id)
        except (NotFoundError, StoreError):
            return None
        if all(self.has_layer(layer.diff_id) for layer in record.layers) and self.has_blob(record.config):
            return record
        return None

    def write_image(self, record: ImageRecord) -> None:
        with storage_errors(f"recording image {record.id}"):
            fsutil.atomic_write(
                self._image_path(record.id), json.dumps(record.to_json(), indent=1).encode(), 0o600
            )

    def image(self, image_id: Digest) -> ImageRecord:
        path = self._image_path(image_id)
        try:
            return ImageRecord.from_json(json.loads(path.read_bytes()))
        except FileNotFoundError:
            raise NotFoundError(f"image {image_id} is not in the store") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"image record {path} is corrupted ({exc})", hint="podrun image rm it") from None

    def image_ids(self) -> list[Digest]:
        out: list[Digest] = []
        base = self.root / "images"
        if not base.is_dir():
            return out
        for alg_dir in sorted(base.iterdir()):
            for f in sorted(alg_dir.glob("*.json")):
                with contextlib.suppress(Exception):
                    out.append(Digest.parse(f"{alg_dir.name}:{f.stem}"))
        return out

    def _ref_path(self, name: str) -> Path:
        from urllib.parse import quote

        return self.root / "refs" / quote(name, safe="")

    def set_name(self, name: str, image_id: Digest) -> None:
        """Point *name* (normalized ``registry/repo:tag``) at *image_id*, atomically."""
        with storage_errors(f"naming image {name}"):
            fsutil.atomic_write(self._ref_path(name), f"{image_id}\n".encode(), 0o600)

    def name_target(self, name: str) -> Digest | None:
        """The image ID *name* (normalized) points at, None when it names none."""
        try:
            return Digest.parse(self._ref_path(name).read_text().strip())
        except (OSError, ValueError, PodrunError):
            return None

    def remove_name(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._ref_path(name))

    def names(self) -> dict[str, Digest]:
        """All names, even those whose image is gone (fsck reports those)."""
        out: dict[str, Digest] = {}
        refs = self.root / "refs"
        if not refs.is_dir():
            return out
        from urllib.parse import unquote

        for f in sorted(refs.iterdir()):
            if f.name.startswith("."):
                continue
            with contextlib.suppress(Exception):
                out[unquote(f.name)] = Digest.parse(f.read_text().strip())
        return out

    def dangling_names(self) -> list[str]:
        """Names pointing at an image whose record is missing (fsck reports them)."""
        return [name for name, dig in self.names().items() if not self.has_image(dig)]

    def remove_dangling_name(self, text: str) -> str | None:
        """Remove the name *text* means if it points at a missing image; returns it, or None
        when *text* names no such name.  Under the exclusive store lock, so a fetch that is
        naming an image meanwhile (record first, then name) is never undone."""
        with self.exclusive():
            dangling = set(self.dangling_names())
            name = next((n for n in candidate_names(text) if n in dangling), None)
            if name is not None:
                self.remove_name(name)
            return name

    def names_of(self, image_id: Digest) -> list[str]:
        return sorted(n for n, d in self.names().items() if d == image_id)

    def resolve(self, text: str) -> Digest:
        """An image ID from a full ID, a unique ID prefix (>= 4 hex digits) or a name."""
        names = self.names()
        for cand in candidate_names(text):
            if cand in names and self.has_image(names[cand]):
                return names[cand]
        hexpart = text.split(":", 1)[1] if text.startswith("sha256:") else text
        if len(hexpart) >= 4 and all(c in "0123456789abcdef" for c in hexpart):
            matches = [i for i in self.image_ids() if i.hex.startswith(hexpart)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise UsageError(f"image ID prefix {text!r} is ambiguous ({len(matches)} images)")
        raise NotFoundError(f"image {text!r} is not in the store", hint="podrun fetch it first")

    def remove_image(self, image_id: Digest) -> list[str]:
        """Forget an image and every name pointing at it; content stays until ``gc``.
        Exclusive store lock: a running fetch of the same image finishes first."""
        with self.exclusive():
            removed = self.names_of(image_id)
            for name in removed:
                self.remove_name(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._image_path(image_id))
            return removed

    # -- what local sources named (podrun.image.api) ---------------------------------------------

    def _memo_path(self, key: str) -> Path:
        if len(key) != 64 or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"invalid source key {key!r}")
        return self.root / "sources" / key

    def source_memo(self, key: str) -> SourceMemo | None:
        """The memo stored under *key*; None when there is none or it is damaged."""
        try:
            with open(self._memo_path(key), "rb") as f:
                data = f.read(_MEMO_LIMIT + 1)
            return SourceMemo.from_json(json.loads(data))
        except (OSError, ValueError, KeyError, TypeError, PodrunError):
            return None

    def remember_source(self, key: str, memo: SourceMemo) -> None:
        """Store *memo* under *key* (replaced atomically; not fsynced: losing it costs one full
        read of the source, and a damaged one reads as none)."""
        path = self._memo_path(key)
        with storage_errors("recording a local source"):
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fsutil.atomic_write(path, json.dumps(memo.to_json()).encode(), 0o600, durable=False)

    def _stale_memos(self, images: set[Digest]) -> list[Path]:
        """Memos that are damaged or name an image not in *images* (gc removes them)."""
        base = self.root / "sources"
        if not base.is_dir():
            return []
        stale = []
        for path in sorted(base.iterdir()):
            memo = self.source_memo(path.name) if not path.name.startswith(".") else None
            if memo is None or memo.image not in images:
                stale.append(path)
        return stale

    # -- maintenance ----------------------------------------------------------------------------

    def gc(self, in_use: Callable[[], set[Digest] | None] | None = None) -> list[str]:
        """Remove blobs and layer trees no image record references, temp leftovers and idle
        lock files.  Takes the store lock exclusively; returns what it removed.

        *in_use* (called under the lock) names the layers pods use; ``None`` from it means they
        could not all be read, and then every layer tree is kept (never delete on doubt)."""
        removed: list[str] = []
        with self.exclusive():
            keep_blobs: set[Digest] = set()
            used = in_use() if in_use else set()
            keep_layers: set[Digest] = set(used or ())
            images: set[Digest] = set()
            for image_id in self.image_ids():
                try:
                    rec = self.image(image_id)
                except StoreError:
                    continue  # a corrupted record keeps nothing alive; fsck names it
                images.add(rec.id)
                keep_blobs |= {rec.id, rec.config} | {layer.digest for layer in rec.layers}
                keep_layers |= {layer.diff_id for layer in rec.layers}
            kinds = [("blobs", keep_blobs)] + ([("layers", keep_layers)] if used is not None else [])
            for kind, keep in kinds:
                base = self.root / kind
                for alg_dir in sorted(base.iterdir()):
                    for entry in sorted(alg_dir.iterdir()):
                        if Digest(alg_dir.name, entry.name) in keep:
                            continue
                        remove_path(entry)
                        removed.append(f"{kind[:-1]} {alg_dir.name}:{entry.name}")
            for name in self.dangling_names():
                self.remove_name(name)
                removed.append(f"name {name} (its image is missing)")
            for memo in self._stale_memos(images):
                remove_path(memo)
                removed.append(f"source memo {memo.name}")
            removed += [f"temporary {name}" for name in self.clean_temp()]
            # Lock files are only unlinked under the exclusive store lock: no writer can be
            # holding or about to take one, so no two processes can lock different inodes.
            for lock in sorted(self.locks.glob("blob-*.lock")) + sorted(self.locks.glob("layer-*.lock")):
                lock.unlink()
        return removed

    def fsck(self, verify_content: bool = True) -> list[str]:
        """Check the store without changing it; returns one line per problem found."""
        problems: list[str] = []
        for image_id in self.image_ids():
            try:
                rec = self.image(image_id)
            except StoreError as exc:
                problems.append(str(exc))
                continue
            for dig in [rec.id, rec.config, *(layer.digest for layer in rec.layers)]:
                if not self.has_blob(dig):
                    problems.append(f"image {image_id.short}: blob {dig} is missing")
            for layer in rec.layers:
                if not self.has_layer(layer.diff_id):
                    problems.append(f"image {image_id.short}: layer {layer.diff_id} is not unpacked")
        names = self.names()
        problems += [f"name {name} points to missing image {names[name]}" for name in self.dangling_names()]
        if verify_content:
            problems += self._verify_blobs()
        if self.tmp.is_dir():  # a live fetch's work in progress is no problem
            problems += [f"temporary leftover {p.name} (the next fetch or podrun image gc removes it)"
                         for p in sorted(self.tmp.iterdir()) if not fsutil.writer_alive(p)]
        return problems

    def _verify_blobs(self) -> list[str]:
        problems = []
        base = self.root / "blobs"
        for alg_dir in sorted(base.iterdir()) if base.is_dir() else []:
            for blob in sorted(alg_dir.iterdir()):
                digest = Digest(alg_dir.name, blob.name)
                h = digest.hasher()
                try:
                    with open(blob, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                except OSError as exc:
                    problems.append(f"blob {digest}: unreadable ({exc.strerror})")
                    continue
                if h.hexdigest() != digest.hex:
                    problems.append(f"blob {digest}: content does not match its digest")
        return problems
