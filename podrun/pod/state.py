"""Pod state derived from disk and kernel facts only (no daemon, no pid-file liveness).

A pod's state is its phase directory plus whether its lock is held (rkt's model)::

    embryo/   locked: embryo        unlocked: aborted (stage0 died while creating it)
    prepared/ prepared               run/ locked: running   unlocked: exited
    exited-garbage/ exited-garbage   garbage/ locked: deleting   unlocked: garbage

Files read (see man/podrun-state.5): pod.json (manifest), pid and ready (stage1), status/APP
(exit of each app, written by the pod's pid 1), finished (the supervisor's exit), cgroups (the
cgroup directories, recorded before they are created).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podrun.pod.layout import PHASES, PodDirs, lock_held_fd
from podrun.pod.manifest import MANIFEST

_LOCKED_STATE = {"embryo": "embryo", "prepare": "preparing", "run": "running", "garbage": "deleting"}
_UNLOCKED_STATE = {"embryo": "aborted", "prepare": "aborted", "run": "exited"}


@dataclass(frozen=True)
class AppStatus:
    name: str
    image_id: str | None = None
    image_name: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    finished: float | None = None


@dataclass(frozen=True)
class PodStatus:
    uuid: str
    state: str
    phase: str
    path: str
    created: float | None = None
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    exit_code: int | None = None
    ready: bool = False
    apps: tuple[AppStatus, ...] = ()
    networks: tuple[str, ...] = ()
    cgroups: tuple[str, ...] = ()
    errors: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["apps"] = [asdict(a) for a in self.apps]
        return doc


def lock_held(path: Path) -> bool:
    """True when another process holds the pod's lock (a shared try-lock, released at once)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return lock_held_fd(fd)
    finally:
        os.close(fd)


class _PodFiles:
    """Reads a pod's small files relative to its directory fd (fast: `list` reads thousands)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.errors: list[str] = []

    def read(self, name: str) -> bytes | None:
        try:
            f = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.errors.append(f"{name}: unreadable ({exc.strerror})")
            return None
        try:
            chunks = []
            while chunk := os.read(f, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            os.close(f)

    def json(self, name: str) -> Any:
        data = self.read(name)
        if data is None:
            return None
        try:
            return json.loads(data)
        except ValueError:
            self.errors.append(f"{name}: unreadable (truncated or not JSON)")
            return None

    def obj(self, name: str) -> dict[str, Any]:
        doc = self.json(name)
        if doc is not None and not isinstance(doc, dict):
            self.errors.append(f"{name}: not a JSON object")
        return doc if isinstance(doc, dict) else {}

    def mtime(self, name: str) -> float | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mtime
        except OSError:
            return None


def read_status(dirs: PodDirs, phase: str, uuid: str) -> PodStatus:
    """Everything known about one pod; never raises for a damaged pod (errors are listed)."""
    path = dirs.path(phase, uuid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        return PodStatus(uuid, "deleting" if phase == "garbage" else phase, phase, str(path),
                         errors=(f"pod directory unreadable ({exc.strerror})",))
    try:
        return _status(fd, path, phase, uuid)
    finally:
        os.close(fd)


def _status(fd: int, path: Path, phase: str, uuid: str) -> PodStatus:
    held = lock_held_fd(fd)
    state = (_LOCKED_STATE if held else _UNLOCKED_STATE).get(phase, phase)
    files = _PodFiles(fd)
    manifest = files.json(MANIFEST)
    if manifest is None and not files.errors:
        files.errors.append(f"{MANIFEST}: missing")
    if manifest is not None and not isinstance(manifest, dict):
        files.errors.append(f"{MANIFEST}: not a JSON object")
        manifest = None
    apps = []
    raw_apps = (manifest or {}).get("apps", ())
    for app in raw_apps if isinstance(raw_apps, list) else ():
        if not isinstance(app, dict) or not isinstance(app.get("name"), str):
            files.errors.append(f"{MANIFEST}: malformed app entry")
            continue
        st = files.obj(f"status/{app['name']}")
        apps.append(AppStatus(app["name"], app.get("image_id"), app.get("image_name"), st.get("exit_code"),
                              st.get("signal"), st.get("finished")))
    pid = None
    with contextlib.suppress(ValueError, TypeError):
        pid = int((files.read("pid") or b"").strip())
    finished = files.obj("finished")
    networks = _networks(manifest, files.json("net/state.json") if manifest and manifest.get("networks") else None)
    cgroup_doc = files.json("cgroups")
    cgroup_paths = [str(p) for p in cgroup_doc] if isinstance(cgroup_doc, list) else []
    return PodStatus(
        uuid=uuid, state=state, phase=phase, path=str(path), created=files.mtime(MANIFEST),
        started=files.mtime("pid"), finished=finished.get("finished"), pid=pid if held else None,
        exit_code=finished.get("exit_code"), ready=files.mtime("ready") is not None, apps=tuple(apps),
        networks=networks, cgroups=tuple(cgroup_paths),
        errors=tuple(files.errors),
    )


def _networks(manifest: dict[str, Any] | None, net_state: Any) -> tuple[str, ...]:
    """``none``, ``host`` or NAME[:IP] per network (addresses from the pod's network record;
    a pod whose networks were released shows the names only)."""
    if not manifest:
        return ()
    nets = manifest.get("networks")
    if not nets or not isinstance(nets, list):
        return (str(manifest.get("net", "")),)
    ips: dict[str, str] = {}
    if isinstance(net_state, dict) and not net_state.get("detached"):
        for entry in net_state.get("networks", []):
            if isinstance(entry, dict) and entry.get("ip"):
                ips[str(entry.get("name"))] = str(entry["ip"])
    names = [str(n.get("name")) for n in nets if isinstance(n, dict)]
    return tuple(f"{n}:{ips[n]}" if n in ips else n for n in names)


def list_pods(dirs: PodDirs) -> list[PodStatus]:
    out = []
    for phase in PHASES:
        base = dirs.root / phase
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            out.append(read_status(dirs, phase, entry.name))
    return out
