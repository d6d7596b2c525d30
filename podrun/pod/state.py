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
import fcntl
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from podrun.pod.layout import MANIFEST, PHASES, PodDirs

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
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _read_json(path: Path, errors: list[str]) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        errors.append(f"{path.name}: unreadable ({exc.__class__.__name__})")
        return None
    if not isinstance(doc, dict):
        errors.append(f"{path.name}: not a JSON object")
        return None
    return doc


def read_status(dirs: PodDirs, phase: str, uuid: str) -> PodStatus:
    """Everything known about one pod; never raises for a damaged pod (errors are listed)."""
    path = dirs.path(phase, uuid)
    held = lock_held(path)
    state = (_LOCKED_STATE if held else _UNLOCKED_STATE).get(phase, phase)
    errors: list[str] = []
    manifest = _read_json(path / MANIFEST, errors)
    if manifest is None and not any(e.startswith(MANIFEST) for e in errors):
        errors.append(f"{MANIFEST}: missing")
    apps = []
    for app in (manifest or {}).get("apps", ()) if isinstance((manifest or {}).get("apps"), list) else ():
        if not isinstance(app, dict) or not isinstance(app.get("name"), str):
            errors.append(f"{MANIFEST}: malformed app entry")
            continue
        st = _read_json(path / "status" / app["name"], errors) or {}
        apps.append(AppStatus(app["name"], app.get("image_id"), app.get("image_name"), st.get("exit_code"),
                              st.get("signal"), st.get("finished")))
    pid = None
    with contextlib.suppress(OSError, ValueError):
        pid = int((path / "pid").read_text().strip())
    finished = _read_json(path / "finished", errors) or {}
    cgroup_paths = _read_json_list(path / "cgroups", errors)
    return PodStatus(
        uuid=uuid, state=state, phase=phase, path=str(path), created=_mtime(path / MANIFEST),
        started=_mtime(path / "pid"), finished=finished.get("finished"), pid=pid if held else None,
        exit_code=finished.get("exit_code"), ready=(path / "ready").exists(), apps=tuple(apps),
        networks=(str((manifest or {}).get("net", "")),) if manifest else (), cgroups=tuple(cgroup_paths),
        errors=tuple(errors),
    )


def _read_json_list(path: Path, errors: list[str]) -> list[str]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        errors.append(f"{path.name}: unreadable")
        return []
    return [str(p) for p in doc] if isinstance(doc, list) else []


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
