"""Pod directories on disk: ``DIR/pods/<phase>/<uuid>/`` (rkt's model, ARCHITECTURE.md §2).

A pod's phase is the directory it sits in; it moves by ``rename(2)`` while its exclusive
``flock`` is held.  The lock is taken on the pod directory's own fd, so it follows the
directory across renames, and the stage1 supervisor holds it for the pod's whole life: a pod in
``run/`` is running iff its lock is held.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat

from podrun import faults, fsutil
from podrun.errors import ConflictError, NotFoundError, UsageError
from podrun.model.manifest import MANIFEST as MANIFEST  # noqa: PLC0414 (re-exported: pod.json, named by its model)
from podrun.model.manifest import SECCOMP_BPF as SECCOMP_BPF  # noqa: PLC0414 (in apps/APP/: compiled by stage0)
from podrun.model.manifest import PodManifest
from podrun.model.manifest import seccomp_bpf_path as app_seccomp_path  # noqa: F401 (the manifest records it)
from podrun.model.netspec import NET_DIR as NET_DIR  # noqa: PLC0414 (re-exported: net/ of a pod, named by net's model)
from podrun.model.netspec import NET_STATE as NET_STATE  # noqa: PLC0414
from podrun.model.netspec import cni_config_path as cni_config_path  # noqa: PLC0414

TYPE_CHECKING = False  # stage1 imports the names below: no pathlib, contextlib or typing at import
if TYPE_CHECKING:
    from pathlib import Path

PHASES = ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")

# -- every name inside a pod directory (man/podrun-state.5, man/podrun-stage1.7) ------------------
# rkt's common.go: Stage1ManifestPath, AppStatusPath...  Paths are relative to the pod directory.
# MANIFEST (pod.json, imported above): the pod manifest; stage0 writes it, every reader uses read_manifest
PID = "pid"  # the host PID of the pod's pid 1 (stage1)
# {"pid", "dev", "ino", "mtime_ns"}: stage0, with --pid-file: the supervisor's PID and the file it wrote (gc removes
# that file after a kill -9 of the supervisor if it is still that one; the manifest names its path)
PID_FILE_RECORD = "pid-file"
CGROUPS = "cgroups"  # JSON list of the pod's cgroup dirs, written before they are created
READY = "ready"  # every app has started
FINISHED = "finished"  # {"exit_code", "finished"}: the supervisor's exit
STATUS_DIR = "status"  # status/APP: {"exit_code", "signal", "finished"} of each app
APPS_DIR = "apps"  # apps/APP/: log, log.1, seccomp.bpf, and upper, work, rootfs (podrun.stage2.rootfs)
VOLUMES_DIR = "volumes"  # volumes/NAME: the empty volumes
ETC_DIR = "etc"  # etc/hostname, etc/hosts, etc/resolv.conf, bound into every app
LOG, LOG_OLDER = "log", "log.1"  # in apps/APP/


def app_status_path(app: str) -> str:
    return f"{STATUS_DIR}/{app}"


def app_dir(app: str) -> str:
    return f"{APPS_DIR}/{app}"


def app_log_path(app: str) -> str:
    return f"{APPS_DIR}/{app}/{LOG}"


def app_cgroup(app: str) -> str:
    """An app's cgroup, a child of each of the pod's cgroup dirs (the CGROUPS file lists those)."""
    return f"app-{app}"


def app_cgroup_dirs(cgroup_list: list[str], app: str) -> list[str]:
    return [os.path.join(os.path.normpath(base), app_cgroup(app)) for base in cgroup_list]


def volume_path(name: str) -> str:
    return f"{VOLUMES_DIR}/{name}"


class PodDirs:
    """Paths and phase moves for pods under a data dir."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        from pathlib import Path

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
            try:
                fsutil.remove_tree(tmp)  # ours: we hold its lock
            except OSError:
                pass
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
        manifest, _ = read_manifest(pod_fd)
        refs.lower_dirs.update(d for app in manifest.apps for d in app.lower_dirs)
    except FileNotFoundError:
        if phase == "embryo" and not lock_held_fd(pod_fd):
            return  # creation aborted before the manifest was written: it names nothing, never runs
        refs.unreadable.append(f"{what}: {MANIFEST} is missing")
    except OSError as exc:
        reason = {errno.ELOOP: "is a symlink", errno.EINVAL: "is not a regular file"}.get(exc.errno or 0)
        refs.unreadable.append(f"{what}: {MANIFEST} {reason or f'cannot be read ({exc.strerror})'}")
    except ValueError as exc:
        refs.unreadable.append(f"{what}: {MANIFEST} is damaged ({exc})")
    finally:
        os.close(pod_fd)


# -- the one reader of pod.json -----------------------------------------------------------------

def decode_manifest(data: bytes) -> PodManifest:
    """The pod manifest in *data*, typed, or ValueError naming why it is not one podrun wrote.

    Every reader goes through here (stage1, run-prepared, enter, logs, stop, image gc), so a
    field renamed in podrun.model.manifest is renamed for all of them at once; what image gc
    trusts (each app's layer paths) is checked, never coerced: a string is not a list of paths
    (podrun.model.manifest).
    """
    if len(data) > MANIFEST_LIMIT:
        raise ValueError(f"larger than {MANIFEST_LIMIT} bytes")
    try:
        manifest = PodManifest.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueError(" ".join(f"{type(exc).__name__}: {exc}".split())[:200]) from None
    if not manifest.apps:
        raise ValueError("no list of apps")
    return manifest


def read_manifest(pod_fd: int) -> tuple[PodManifest, bytes]:
    """The manifest of the pod directory *pod_fd* and its bytes: a regular file (never through a
    link, never blocking on a FIFO), bounded; OSError when it cannot be read, ValueError when it
    is not a pod manifest (decode_manifest)."""
    fd = fsutil.open_regular(MANIFEST, dir_fd=pod_fd)
    try:
        data = fsutil.read_at_most(fd, MANIFEST_LIMIT + 1)
    finally:
        os.close(fd)
    return decode_manifest(data), data


def read_manifest_at(pod_dir: str) -> PodManifest:
    """stage1: the manifest stage0 handed over (podrun.abi.take_manifest_doc: the document it
    wrote to pod.json, without json's import), else the one of the pod directory *pod_dir*
    (read_manifest)."""
    from podrun import abi

    doc = abi.take_manifest_doc()
    if doc is not None:
        try:
            manifest = PodManifest.from_doc(doc)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise abi.AbiError(f"stage1: the manifest handed over is not one: {type(exc).__name__}: {exc}") from None
        if not manifest.apps:
            raise abi.AbiError("stage1: the manifest handed over has no apps")
        return manifest
    pod_fd = os.open(pod_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return read_manifest(pod_fd)[0]
    finally:
        os.close(pod_fd)
