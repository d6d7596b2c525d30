"""A pod's phase is its directory, moved under the pod's flock (podrun.pod.layout), and gc's
mark-and-sweep over those phases (podrun.pod.gc): on plain directories, without root.  The
locks are real flocks: a lock held through another open file is what a live supervisor holds."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from podrun import fsutil
from podrun.errors import ConflictError, NotFoundError, UsageError
from podrun.model.manifest import AppSpec, PodManifest
from podrun.pod import gc
from podrun.pod.layout import PHASES, PID_FILE_RECORD, PodDirs, lock_held_fd, lock_pod

UUID = "0123abcd-0000-4000-8000-000000000001"
OTHER = "0123abff-0000-4000-8000-000000000002"
MANIFEST = b'{"version": 1}\n'


@pytest.fixture
def dirs(tmp_path: Path) -> PodDirs:
    d = PodDirs(tmp_path / "data")
    d.ensure()
    return d


def make_pod(dirs: PodDirs, phase: str, uuid: str = UUID) -> Path:
    pod = dirs.path(phase, uuid)
    pod.mkdir()
    (pod / "pod.json").write_bytes(MANIFEST)
    return pod


def phase_of(dirs: PodDirs, uuid: str = UUID) -> list[str]:
    return [p for p in PHASES if dirs.path(p, uuid).exists()]


def test_layout() -> None:
    assert PHASES == ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage")


def test_create_embryo_is_locked_and_complete(dirs: PodDirs) -> None:
    path, fd = dirs.create_embryo(UUID, MANIFEST, {"seccomp/web.bpf": b"\x06\0\0\0"})
    try:
        assert path == dirs.path("embryo", UUID)
        assert (path / "pod.json").read_bytes() == MANIFEST and (path / "seccomp" / "web.bpf").read_bytes() == b"\x06\0\0\0"
        assert os.listdir(dirs.root / "embryo") == [UUID]  # no hidden .UUID.tmp left
        probe = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            assert lock_held_fd(probe)  # another open file sees the creator's lock
        finally:
            os.close(probe)
        with pytest.raises(ConflictError):
            lock_pod(path, blocking=False)
    finally:
        os.close(fd)


def test_phase_moves_follow_the_lock(dirs: PodDirs) -> None:
    path, fd = dirs.create_embryo(UUID, MANIFEST)
    try:
        for src, dst in (("embryo", "prepare"), ("prepare", "prepared"), ("prepared", "run")):
            path = dirs.move(UUID, src, dst)
            assert path == dirs.path(dst, UUID) and phase_of(dirs) == [dst]
            with pytest.raises(ConflictError):  # the lock is on the directory: it moved along
                lock_pod(path, blocking=False)
    finally:
        os.close(fd)
    os.close(lock_pod(path, blocking=False))  # free once the holder closed it


def test_a_move_from_the_wrong_phase_is_a_conflict(dirs: PodDirs) -> None:
    make_pod(dirs, "prepared")
    with pytest.raises(ConflictError) as caught:
        dirs.move(UUID, "run", "exited-garbage")
    assert str(caught.value) == f"pod {UUID} is no longer run (another command moved it)"
    assert phase_of(dirs) == ["prepared"]


def test_find_by_uuid_or_unique_prefix(dirs: PodDirs) -> None:
    make_pod(dirs, "run")
    make_pod(dirs, "prepared", OTHER)
    assert dirs.find(UUID) == ("run", UUID)
    assert dirs.find(" 0123ABCD ") == ("run", UUID)
    assert dirs.find("0123abf") == ("prepared", OTHER)
    with pytest.raises(UsageError, match="ambiguous"):
        dirs.find("0123ab")
    with pytest.raises(NotFoundError):
        dirs.find("ffff")
    for bad in ("", "../x", ".hidden", "a/b"):
        with pytest.raises(UsageError, match="invalid pod UUID"):
            dirs.find(bad)


# -- gc: mark, then sweep ------------------------------------------------------------------------

NOW = 1_800_000_000.0


def test_gc_marks_an_exited_pod_and_leaves_a_running_one(dirs: PodDirs, hold: Callable[[Path], None]) -> None:
    make_pod(dirs, "run")
    hold(make_pod(dirs, "run", OTHER))
    out = gc.gc(dirs, grace_period=60, expire_prepared=3600, mark_only=True, now=NOW)
    assert out == [f"marked pod {UUID} exited-garbage"]
    assert phase_of(dirs) == ["exited-garbage"] and phase_of(dirs, OTHER) == ["run"]
    assert float((dirs.path("exited-garbage", UUID) / gc.GARBAGE_MARK).read_text()) == NOW
    assert gc.gc(dirs, 60, 3600, mark_only=True, now=NOW + 1000) == []  # mark_only never deletes


def test_gc_sweeps_garbage_after_the_grace_period(dirs: PodDirs) -> None:
    make_pod(dirs, "run")
    gc.gc(dirs, 60, 3600, mark_only=True, now=NOW)
    assert gc.gc(dirs, 60, 3600, mark_only=False, now=NOW + 59) == []
    assert phase_of(dirs) == ["exited-garbage"]
    assert gc.gc(dirs, 60, 3600, mark_only=False, now=NOW + 60) == [f"removed pod {UUID}"]
    assert phase_of(dirs) == []
    assert gc.gc(dirs, 60, 3600, mark_only=False, now=NOW + 61) == []  # a second pass changes nothing


def test_gc_collects_what_no_one_holds(dirs: PodDirs, hold: Callable[[Path], None]) -> None:
    make_pod(dirs, "embryo")                 # its creator died
    hold(make_pod(dirs, "prepare", OTHER))   # being prepared: kept
    out = gc.gc(dirs, 60, 3600, mark_only=True, now=NOW)
    assert out == [f"removed pod {UUID}"]
    assert phase_of(dirs) == [] and phase_of(dirs, OTHER) == ["prepare"]


def test_gc_expires_prepared_pods(dirs: PodDirs) -> None:
    pod = make_pod(dirs, "prepared")
    os.utime(pod / "pod.json", (NOW - 100, NOW - 100))
    assert gc.gc(dirs, 60, expire_prepared=100, mark_only=True, now=NOW) == []
    assert gc.gc(dirs, 60, expire_prepared=99, mark_only=True, now=NOW) == [f"removed pod {UUID}"]


def test_gc_removes_an_aborted_hidden_embryo(dirs: PodDirs) -> None:
    hidden = dirs.root / "embryo" / f".{UUID}.tmp"
    hidden.mkdir()
    (hidden / "pod.json").write_bytes(MANIFEST)
    assert gc.gc(dirs, 60, 3600, mark_only=True, now=NOW) == [f"removed aborted embryo .{UUID}.tmp"]
    assert os.listdir(dirs.root / "embryo") == []


# -- gc and a killed supervisor's --pid-file -------------------------------------------------------

def pod_with_pid_file(dirs: PodDirs, pid_file: Path, pid: int = 4242) -> Path:
    """An exited pod whose supervisor (*pid*) wrote *pid_file* and was killed before removing it."""
    pod = dirs.path("run", UUID)
    pod.mkdir()
    app = AppSpec("web", "sha256:" + "a" * 64, "demo", ("/l",), ("/bin/true",), ())
    (pod / "pod.json").write_bytes(PodManifest(UUID, (app,), pid_file=str(pid_file)).to_json())
    pid_file.write_text(f"{pid}\n")
    st = pid_file.stat()
    record = {"pid": pid, "dev": st.st_dev, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}
    (pod / PID_FILE_RECORD).write_text(json.dumps(record))
    return pod


def test_gc_removes_a_killed_supervisors_pid_file_when_it_marks_the_pod(dirs: PodDirs, tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    pod_with_pid_file(dirs, pid_file)
    out = gc.gc(dirs, 60, 3600, mark_only=True, now=NOW)
    assert out == [f"removed PID file {pid_file} of pod {UUID}", f"marked pod {UUID} exited-garbage"]
    assert not pid_file.exists()
    pid_file.write_text("4343\n")  # a restart's, written meanwhile
    assert gc.gc(dirs, 60, 3600, mark_only=False, now=NOW + 60) == [f"removed pod {UUID}"]
    assert pid_file.read_text() == "4343\n"


def test_rm_removes_a_killed_supervisors_pid_file(dirs: PodDirs, tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    pod_with_pid_file(dirs, pid_file)
    assert gc.remove_pod(dirs, "run", UUID) == [f"removed PID file {pid_file} of pod {UUID}", f"removed pod {UUID}"]
    assert not pid_file.exists()


def _restarted(pid_file: Path) -> None:
    (pid_file.parent / "new").write_text("4343\n")  # the service manager's restart: a new pod's supervisor
    os.rename(pid_file.parent / "new", pid_file)


def _linked(pid_file: Path) -> None:
    os.rename(pid_file, pid_file.parent / "elsewhere")  # the same file (PID, inode), reached through a link
    pid_file.symlink_to("elsewhere")


@pytest.mark.parametrize("change", [_restarted, _linked, Path.unlink])
def test_gc_leaves_a_pid_file_that_is_not_the_pods(dirs: PodDirs, tmp_path: Path, change: Callable[[Path], None]) -> None:
    pid_file = tmp_path / "web.pid"
    pod_with_pid_file(dirs, pid_file)
    change(pid_file)
    before = {p.name: (p.is_symlink(), p.read_bytes()) for p in tmp_path.iterdir() if p.name != "data"}
    out = gc.gc(dirs, 0, 3600, mark_only=False, now=NOW)
    assert out == [f"marked pod {UUID} exited-garbage", f"removed pod {UUID}"]
    assert {p.name: (p.is_symlink(), p.read_bytes()) for p in tmp_path.iterdir() if p.name != "data"} == before


def test_a_damaged_record_or_an_error_is_a_warning_and_the_pod_still_goes(
        dirs: PodDirs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pid_file = tmp_path / "web.pid"
    pod = pod_with_pid_file(dirs, pid_file)
    (pod / PID_FILE_RECORD).write_text("[4242]")
    out = gc.gc(dirs, 60, 3600, mark_only=True, now=NOW)
    assert out == [f"warning: pod {UUID}: pid-file: not a process ID with a file's device, inode and mtime: "
                   f"its PID file {pid_file} is left alone", f"marked pod {UUID} exited-garbage"]

    def refused(*_: object) -> bool:
        raise PermissionError(13, "Permission denied")

    st = pid_file.stat()
    (dirs.path("exited-garbage", UUID) / PID_FILE_RECORD).write_text(
        json.dumps({"pid": 4242, "dev": st.st_dev, "ino": st.st_ino, "mtime_ns": st.st_mtime_ns}))
    monkeypatch.setattr(fsutil, "remove_own_pid_file", refused)
    out = gc.gc(dirs, 60, 3600, mark_only=False, now=NOW + 60)
    assert out == [f"warning: pod {UUID}: PID file {pid_file}: Permission denied: left alone", f"removed pod {UUID}"]
    assert pid_file.exists() and phase_of(dirs) == []
