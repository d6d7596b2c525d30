"""Pod directories on disk: ``DIR/pods/<phase>/<uuid>/`` (rkt's model, ARCHITECTURE.md §2).

A pod's phase is the directory it sits in; it moves by ``rename(2)`` while its exclusive
``flock`` is held.  The lock is taken on the pod directory's own fd, so it follows the
directory across renames, and the stage1 supervisor holds it for the pod's whole life: a pod in
``run/`` is running iff its lock is held.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from podrun import fsutil
from podrun.errors import ConflictError, NotFoundError, UsageError
from podrun.pod.manifest import MANIFEST

PHASES = ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")


class PodDirs:
    """Paths and phase moves for pods under a data dir."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "pods"

    def ensure(self) -> None:
        self.data_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)
        for phase in PHASES:
            (self.root / phase).mkdir(mode=0o700, exist_ok=True)

    def path(self, phase: str, uuid: str) -> Path:
        return self.root / phase / uuid

    def create_embryo(self, uuid: str, manifest: bytes, files: dict[str, bytes] | None = None) -> tuple[Path, int]:
        """Create ``embryo/<uuid>`` holding the manifest (and *files*, relative path → bytes,
        e.g. compiled seccomp programs); returns it with its lock fd held."""
        self.ensure()
        # Built under a hidden name and renamed once locked, so no reader can ever see (and
        # briefly lock) an unlocked embryo that is still being created.
        tmp = self.root / "embryo" / f".{uuid}.tmp"
        tmp.mkdir(mode=0o700)
        fd = lock_pod(tmp, blocking=False)
        for rel, data in (files or {}).items():
            # No fsync of their own: readers rebuild a file a power cut left empty or short.
            (tmp / rel).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        fsutil.atomic_write(tmp / MANIFEST, manifest, 0o600)
        path = self.path("embryo", uuid)
        os.rename(tmp, path)
        return path, fd

    def move(self, uuid: str, src: str, dst: str) -> Path:
        """Rename a pod between phases (caller holds its lock)."""
        target = self.path(dst, uuid)
        try:
            os.rename(self.path(src, uuid), target)
        except FileNotFoundError:
            raise ConflictError(f"pod {uuid} is no longer {src} (another command moved it)") from None
        fsutil.fsync_dir(target.parent)
        return target

    def find(self, text: str) -> tuple[str, str]:
        """(phase, uuid) of the pod whose UUID is *text* or starts with it (unique prefix)."""
        text = text.strip().lower()
        if not text or "/" in text or text.startswith("."):
            raise UsageError(f"invalid pod UUID {text!r}")
        hits = []
        for phase in PHASES:
            base = self.root / phase
            if base.is_dir():
                hits += [(phase, p.name) for p in base.iterdir() if p.name.startswith(text)]
        if not hits:
            raise NotFoundError(f"no pod with UUID {text!r}")
        if len({u for _, u in hits}) > 1:
            raise UsageError(f"pod UUID prefix {text!r} is ambiguous ({len(hits)} pods)")
        return hits[0]


def lock_pod(path: Path, blocking: bool) -> int:
    """flock the pod directory itself; returns the fd (close it to release)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise ConflictError(f"pod {path.name} is locked by another podrun process") from None
    return fd


def layers_in_use(dirs: PodDirs) -> set[str]:
    """Layer directories referenced by any pod that still exists (image gc must keep them)."""
    import json

    used: set[str] = set()
    for manifest in dirs.root.glob(f"*/*/{MANIFEST}"):
        try:
            doc = json.loads(manifest.read_bytes())
            for app in doc.get("apps", ()):
                used.update(str(d) for d in app.get("lower_dirs", ()))
        except (OSError, ValueError, AttributeError):
            continue  # a corrupted pod keeps nothing alive; pod gc reports it
    return used
