"""Removing pods: ``rm`` of one pod and ``gc``'s mark-and-sweep (rkt's model).

gc marks exited pods (``run/`` without a lock holder) as ``exited-garbage`` and deletes them
after the grace period; prepared pods expire; aborted embryos go at once.  Deleting a pod first
undoes its host side effects from what the pod dir records (cgroups), unmounts anything still
mounted beneath it, and never deletes while a mount remains (so never through a host volume).
Every step is idempotent: a gc killed midway is finished by the next one.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import time
from pathlib import Path

from podrun import faults, fsutil
from podrun.errors import ConflictError, StoreError
from podrun.pod.layout import MANIFEST, NET_DIR, NET_STATE, PHASES, PodDirs, app_cgroup, lock_pod

TYPE_CHECKING = False
if TYPE_CHECKING:
    from podrun.model.manifest import PodManifest

GARBAGE_MARK = "exited-garbage-since"


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below *path*, deepest first (from /proc/self/mountinfo)."""
    prefix = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def _undo_host_effects(path: Path) -> list[str]:
    """Undo what the pod's records list, in an order that needs no free space: unmount, kill
    and remove its cgroups, delete its files but the network record and the manifest (the
    space they held is then free), and only then tear the network down, which rewrites its
    record.  So ``rm`` and ``gc`` work on a full disk."""
    from podrun.isolation import syscalls as sc

    manifest = _manifest(path)  # damaged: what only it names (containers, the PID file) stays
    done = _delete_containers(path, manifest)
    for point in mounts_under(path):
        try:
            sc.umount(point, sc.MNT_DETACH)
            done.append(f"unmounted {point}")
        except OSError as exc:
            raise StoreError(f"pod {path.name}: cannot unmount {point}: {exc.strerror}") from None
    paths, warnings = _own_cgroups(path)
    done += warnings
    if paths:
        from podrun.isolation import cgroups

        tree = cgroups.open_existing(paths)
        try:
            tree.kill_all()
            tree.remove()
        except OSError as exc:
            raise StoreError(f"pod {path.name}: cannot remove cgroup: {exc}") from None
        done += [f"removed cgroup {p}" for p in paths]
    done += _remove_pid_file(path, manifest)  # once nothing of the pod runs, as the supervisor does at its end
    _delete(path, keep=(NET_DIR, MANIFEST))  # the network record: read by the teardown
    return done + _detach_network(path)


def _manifest(path: Path) -> PodManifest | None:
    """The pod's manifest; None when it cannot be read (damaged: what only it names stays)."""
    from podrun.pod.state import PodFileDamage, load_manifest, open_pod_dir

    try:
        fd = open_pod_dir(path)
    except StoreError:
        return None
    try:
        return load_manifest(fd)[0]
    except (PodFileDamage, OSError):
        return None
    finally:
        os.close(fd)


def _delete_containers(path: Path, manifest: PodManifest | None) -> list[str]:
    """An ``oci`` pod's containers, deleted with its runtime (state under --root; a supervisor
    killed before it could delete them leaves them): podrun.pod.ociruntime.  Without a
    manifest (damaged) the containers' state, a few small files in a tmpfs, stays."""
    if manifest is None or manifest.stage1 != "oci" or not manifest.runtime:
        return []
    from podrun.pod import ociruntime

    ids = [ociruntime.container_id(manifest.uuid, app.name) for app in manifest.apps]
    present = [cid for cid in ids if ociruntime.state_entries(manifest.runtime, cid)]
    problems = ociruntime.delete(manifest.runtime, present)
    if ociruntime.manages_cgroups(manifest.runtime):
        paths, _ = _own_cgroups(path)
        for app in manifest.apps if paths else ():
            ociruntime.remove_cgroup_dirs(f"{ociruntime.cgroups_path(paths[0])}/{app_cgroup(app.name)}")
    return [f"warning: pod {path.name}: {p}" for p in problems] + [
        f"deleted container {cid} ({ociruntime.name_of(manifest.runtime)})" for cid in present]


def _remove_pid_file(path: Path, manifest: PodManifest | None) -> list[str]:
    """The ``--pid-file`` a supervisor killed by SIGKILL could not remove (it does at any other
    end): removed only while it still is the regular file stage0 wrote for this pod and holds
    that supervisor's PID (the pod's ``pid-file`` record), so a newer pod's file at the same
    path (the service manager's restart) stays.  The path comes from the manifest and is
    checked without following its last component (fsutil.remove_own_pid_file).  Never fails
    the collection: errors are warnings, and start-stop-daemon and OpenRC check the PID in a
    stale file anyway."""
    from podrun.pod.state import PodFileDamage, open_pod_dir, read_pid_file_record

    if manifest is None or not manifest.pid_file:
        return []
    try:
        fd = open_pod_dir(path)
    except StoreError:
        return []
    try:
        record = read_pid_file_record(fd)
    except PodFileDamage as exc:
        return [f"warning: pod {path.name}: {exc}: its PID file {manifest.pid_file} is left alone"]
    finally:
        os.close(fd)
    if record is None:
        return []
    pid, written = record
    try:
        removed = fsutil.remove_own_pid_file(manifest.pid_file, pid, written)
    except OSError as exc:
        return [f"warning: pod {path.name}: PID file {manifest.pid_file}: {exc.strerror or exc}: left alone"]
    return [f"removed PID file {manifest.pid_file} of pod {path.name}"] if removed else []


def _own_cgroups(path: Path) -> tuple[list[str], list[str]]:
    """The cgroup directories the pod's record lists that are the pod's own (named
    ``pod-UUID``, as stage1 makes them), and warnings about the rest: gc kills every process in
    a cgroup it removes, so a damaged record must never lead it to another pod's cgroup or the
    host's.  The record is read as every pod file is (podrun.pod.state: no link followed, never
    a FIFO or device, bounded); a damaged one is replaced by the paths stage1 would have made."""
    from podrun.pod.state import PodFileDamage, open_pod_dir, read_cgroups

    try:
        fd = open_pod_dir(path)
    except StoreError:
        return [], []
    try:
        paths = read_cgroups(fd)
    except PodFileDamage as exc:
        return _expected_cgroups(path.name), [f"warning: pod {path.name}: {exc}: removing its cgroups by name"]
    finally:
        os.close(fd)
    own: list[str] = []
    warnings: list[str] = []
    for p in paths or []:
        if posixpath.basename(posixpath.normpath(p)) == f"pod-{path.name}":
            own.append(p)
        else:
            warnings.append(f"warning: pod {path.name}: its cgroup record names {p}, not its own cgroup: left alone")
    return own, warnings


def _expected_cgroups(uuid: str) -> list[str]:
    """The pod's cgroup directories that exist, as stage1 names them (for a damaged record)."""
    from podrun.isolation import cgroups
    from podrun.pod import placement

    try:
        return [p for p in cgroups.pod_cgroup_paths(f"pod-{uuid}", placement.expected_parent()) if os.path.isdir(p)]
    except (OSError, ValueError):
        return []


def _detach_network(path: Path) -> list[str]:
    """Release what the pod's network record lists (netns, lease, veth, port forwards, CNI).
    A record reached through a symbolic link is never followed (it would name and rewrite
    things outside the pod): left alone with a warning, as allocation takes a dead pod's
    addresses and ports back anyway (podrun.net.owners)."""
    net = path / NET_DIR
    record = path / NET_STATE
    if net.is_symlink() or record.is_symlink():
        return [f"warning: pod {path.name}: its network record is a symbolic link: not followed"]
    if not record.is_file():
        return []
    from podrun.net import setup

    try:
        problems = setup.detach(str(path))
    except OSError as exc:  # rewriting the record failed (EIO, ENOSPC): retried next time
        problems = [f"{exc.strerror or exc} ({exc.filename or 'network record'})"]
    if problems:
        raise StoreError(f"pod {path.name}: network teardown: {'; '.join(problems)}")
    return [f"released the networks of pod {path.name}"]


def _delete(path: Path, keep: tuple[str, ...] = ()) -> None:
    """Delete the pod directory (or, with *keep*, every entry but those), never while a mount
    remains beneath it (so never through a host volume)."""
    left = mounts_under(path)
    if left:
        raise StoreError(f"pod {path.name}: {left[0]} is still mounted; not deleting through it")
    if not keep:
        fsutil.remove_tree(path)
        return
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return
    for name in names:
        if name not in keep:
            fsutil.remove_path(path / name)


def collect(dirs: PodDirs, phase: str, uuid: str, lock_fd: int) -> list[str]:
    """Move a locked, non-running pod to garbage/ and delete it; returns what was done."""
    try:
        path = dirs.move(uuid, phase, "garbage") if phase != "garbage" else dirs.path("garbage", uuid)
        faults.checkpoint("gc:in-garbage")
        done = _undo_host_effects(path)
        faults.checkpoint("gc:before-delete")
        _delete(path)
        fsutil.fsync_dir(path.parent)
    finally:
        os.close(lock_fd)
    return [*done, f"removed pod {uuid}"]


def _linked_pod(path: Path) -> list[str] | None:
    """A pod "directory" that is a symbolic link is damage, never followed: the link is removed
    and what it names left alone.  None when *path* is no link."""
    if not path.is_symlink():
        return None
    path.unlink()
    return [f"warning: pod {path.name}: its directory is a symbolic link: removed the link, not what it names",
            f"removed pod {path.name}"]


def remove_pod(dirs: PodDirs, phase: str, uuid: str) -> list[str]:
    """``podrun rm``: any pod that is not running or being created."""
    path = dirs.path(phase, uuid)
    linked = _linked_pod(path)
    if linked is not None:
        return linked
    try:
        fd = lock_pod(path, blocking=False)
    except ConflictError:
        raise ConflictError(f"pod {uuid} is running or busy", hint=f"podrun stop {uuid}") from None
    return collect(dirs, phase, uuid, fd)


def gc(dirs: PodDirs, grace_period: float, expire_prepared: float, mark_only: bool,
       now: float | None = None) -> list[str]:
    """One mark-and-sweep pass; returns a line per action."""
    now = time.time() if now is None else now
    dirs.ensure()
    out: list[str] = []
    for phase in PHASES:
        for entry in sorted((dirs.root / phase).iterdir()):
            if entry.name.startswith("."):
                if phase == "embryo":
                    _remove_aborted_embryo(entry, out)
                continue
            expired = phase == "prepared" and now - _mtime(entry / MANIFEST, now) > expire_prepared
            if phase in ("embryo", "prepare") or expired:
                _collect_unlocked(dirs, phase, entry.name, out)
            elif phase == "run":
                _mark(dirs, entry.name, now, out)
            elif phase == "exited-garbage" and not mark_only:
                if now - _since(entry, now) >= grace_period:
                    _collect_unlocked(dirs, phase, entry.name, out)
            elif phase == "garbage" and not mark_only:
                _collect_unlocked(dirs, phase, entry.name, out)
    return out


def _mtime(path: Path, default: float) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def _since(path: Path, now: float) -> float:
    try:
        return float((path / GARBAGE_MARK).read_text().strip())
    except (OSError, ValueError):
        return _mtime(path, now)


def _write_mark(path: Path, now: float) -> None:
    """Record when the pod became garbage.  On a full disk the mark file cannot be written:
    the pod directory's own mtime (set without allocating a block) is the mark instead, so gc
    frees space without needing any first."""
    mark = path / GARBAGE_MARK
    try:
        mark.write_text(f"{now}\n")
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            mark.unlink()
        os.utime(path, (now, now))


def _mark(dirs: PodDirs, uuid: str, now: float, out: list[str]) -> None:
    path = dirs.path("run", uuid)
    try:
        fd = lock_pod(path, blocking=False)
    except (ConflictError, FileNotFoundError):
        return  # running (or just moved by another gc)
    try:
        _write_mark(path, now)
        try:
            out += _detach_network(path)  # addresses and ports are free again at once
        except StoreError as exc:
            out.append(f"warning: {exc} (retried when the pod is collected)")
        out += _remove_pid_file(path, _manifest(path))  # at once too: the grace period is for the pod's logs and status
        dirs.move(uuid, "run", "exited-garbage")
        faults.checkpoint("gc:after-mark")
        out.append(f"marked pod {uuid} exited-garbage")
    except ConflictError:
        pass
    finally:
        os.close(fd)


def _collect_unlocked(dirs: PodDirs, phase: str, name: str, out: list[str]) -> None:
    path = dirs.root / phase / name
    linked = _linked_pod(path)
    if linked is not None:
        out += linked
        return
    try:
        fd = lock_pod(path, blocking=False)
    except (ConflictError, FileNotFoundError):
        return  # in use, or another gc got there first
    try:
        out += collect(dirs, phase, name, fd)
    except ConflictError:
        pass  # moved away under us: nothing to do
    except StoreError as exc:
        out.append(f"failed: {exc}")


def _remove_aborted_embryo(path: Path, out: list[str]) -> None:
    """Remove a hidden embryo (``.UUID.tmp``) whose creator's lock is free, whatever its age:
    its creator died before renaming it, so it never ran and nothing can run it."""

    def remove(p: Path) -> None:
        _undo_host_effects(p)
        _delete(p)

    try:
        if fsutil.remove_if_abandoned(path, remove):
            out.append(f"removed aborted embryo {path.name}")
    except StoreError as exc:
        out.append(f"failed: {exc}")
    except OSError as exc:
        out.append(f"failed: aborted embryo {path.name}: {exc.strerror or exc}")
