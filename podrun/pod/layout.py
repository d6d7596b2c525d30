"""Pod directories on disk: ``DIR/pods/<phase>/<uuid>/`` (rkt's model, ARCHITECTURE.md §2).

A pod's phase is the directory it sits in; it moves by ``rename(2)`` while its exclusive
``flock`` is held.  The lock is taken on the pod directory's own fd, so it follows the
directory across renames, and the stage1 supervisor holds it for the pod's whole life: a pod in
``run/`` is running iff its lock is held.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from podrun import faults, fsutil
from podrun.errors import ConflictError, NotFoundError, UsageError
from podrun.model.manifest import MANIFEST, READABLE_VERSIONS

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

    def create_embryo(self, uuid: str, manifest: bytes, files: dict[str, bytes] | None = None,
                      durable_files: bool = False) -> tuple[Path, int]:
        """Create ``embryo/<uuid>`` holding the manifest (and *files*, relative path → bytes,
        e.g. compiled seccomp programs; fsynced with *durable_files*: a prepared pod must find
        them whole after a power cut, as stage1 rebuilds nothing); returns it with its lock fd held.  On failure nothing
        is left behind; after a ``kill -9`` the hidden directory is left unlocked, and gc
        removes it at once."""
        self.ensure()
        # Built under a hidden name and renamed once locked, so no reader can ever see (and
        # briefly lock) an unlocked embryo that is still being created.
        # gc judges it by its lock alone (creation is fast; after a kill -9 it goes at once).
        tmp = self.root / "embryo" / f".{uuid}.tmp"
        fd = fsutil.create_locked(tmp, directory=True)
        try:
            for rel, data in (files or {}).items():
                (tmp / rel).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                if durable_files:
                    fsutil.atomic_write(tmp / rel, data, 0o644)
                else:  # a pod that runs now: a power cut ends it, and it never runs again
                    (tmp / rel).write_bytes(data)
            faults.checkpoint("prepare:embryo-hidden")
            fsutil.atomic_write(tmp / MANIFEST, manifest, 0o600)
            path = self.path("embryo", uuid)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                fsutil.remove_tree(tmp)  # ours: we hold its lock
            os.close(fd)
            raise
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


def lock_held_fd(fd: int) -> bool:
    """True when another open file holds the lock of the pod directory *fd* (a shared try-lock,
    released at once)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def lock_pod(path: Path, blocking: bool) -> int:
    """flock the pod directory itself (never through a symbolic link); returns the fd (close it
    to release)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise ConflictError(f"pod {path.name} is locked by another podrun process") from None
    return fd


# A pod manifest is a few KiB; anything past this is damage, not something to read into memory.
MANIFEST_LIMIT = 16 << 20


class PodReferences:
    """What ``image gc`` must keep for the pods: the layer directories their manifests name, and
    one line per pod whose references could not be read.  While ``unreadable`` is not empty
    every layer must be kept: collection never deletes on doubt (docs/store.md)."""

    __slots__ = ("lower_dirs", "unreadable")

    def __init__(self) -> None:
        self.lower_dirs: set[str] = set()
        self.unreadable: list[str] = []


def pod_references(dirs: PodDirs) -> PodReferences:
    """The layer references of every pod in every phase, hidden embryos (``.UUID.tmp``) included.

    Call it under the exclusive store lock: ``run`` holds the lock shared from resolving its
    images until its manifest is on disk, so no pod is then between the two.  Phases are read in
    the order pods move through them and each pod is read through its directory fd, so a pod
    that moves while this runs is read in one phase or the next, never missed.
    """
    refs = PodReferences()
    for phase in PHASES:
        try:
            phase_fd = os.open(dirs.root / phase, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        except OSError as exc:
            refs.unreadable.append(f"pods/{phase}: cannot be read ({exc.strerror})")
            continue
        try:
            for name in sorted(os.listdir(phase_fd)):
                _read_references(phase_fd, phase, name, refs)
        except OSError as exc:
            refs.unreadable.append(f"pods/{phase}: cannot be read ({exc.strerror})")
        finally:
            os.close(phase_fd)
    return refs


def _read_references(phase_fd: int, phase: str, name: str, refs: PodReferences) -> None:
    what = f"pod {name} ({phase})"
    try:
        st = os.stat(name, dir_fd=phase_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            refs.unreadable.append(f"{what}: the pod directory is a symlink")
            return
        if not stat.S_ISDIR(st.st_mode):
            return  # a stray file is no pod: nothing can run it
        pod_fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=phase_fd)
    except FileNotFoundError:
        return  # moved on (read again in a later phase) or deleted
    except OSError as exc:
        refs.unreadable.append(f"{what}: {exc.strerror}")
        return
    try:
        refs.lower_dirs.update(_manifest_lower_dirs(pod_fd))
    except FileNotFoundError:
        if phase == "embryo" and not lock_held_fd(pod_fd):
            return  # creation aborted before the manifest was written: it names nothing, never runs
        refs.unreadable.append(f"{what}: {MANIFEST} is missing")
    except OSError as exc:
        reason = {errno.ELOOP: "is a symlink", errno.EINVAL: "is not a regular file"}.get(exc.errno or 0)
        refs.unreadable.append(f"{what}: {MANIFEST} {reason or f'cannot be read ({exc.strerror})'}")
    except (ValueError, RecursionError) as exc:
        refs.unreadable.append(f"{what}: {MANIFEST} is damaged ({exc})")
    finally:
        os.close(pod_fd)


def _manifest_lower_dirs(pod_fd: int) -> list[str]:
    """The layer directories a pod's manifest names; raises OSError or ValueError if it cannot
    be read or is not a pod manifest podrun wrote (regular file, bounded, never blocking)."""
    import json  # not podrun.lean's: image gc is off the hot path, and this input may be damaged

    fd = fsutil.open_regular(MANIFEST, dir_fd=pod_fd)
    with os.fdopen(fd, "rb") as f:
        data = f.read(MANIFEST_LIMIT + 1)
    if len(data) > MANIFEST_LIMIT:
        raise ValueError(f"larger than {MANIFEST_LIMIT} bytes")
    doc = json.loads(data.decode())
    if not isinstance(doc, dict) or doc.get("version") not in READABLE_VERSIONS:  # lower_dirs: the same in each
        raise ValueError(f"not a pod manifest of version {' or '.join(map(str, READABLE_VERSIONS))}")
    apps = doc.get("apps")
    if not isinstance(apps, list) or not apps:
        raise ValueError("no list of apps")
    out: list[str] = []
    for app in apps:
        lower = app.get("lower_dirs") if isinstance(app, dict) else None
        if not isinstance(lower, list) or not all(isinstance(d, str) and d.startswith("/") for d in lower):
            raise ValueError("an app without a list of layer paths")
        out += lower
    return out
