"""``--pid-file`` and ``--ready-fd`` (man podrun-run(1), podrun-init(7)): what stage0 checks and
writes, what stage1 takes over the exec, and how the supervisor signals readiness and removes
the PID file.  The real supervisors (s6, runit, start-stop-daemon) are driven in
tests/integration/test_init_systems.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun import abi, fsutil
from podrun.errors import PodrunError, UsageError
from podrun.model.manifest import AppSpec, PodManifest
from podrun.pod.layout import PID_FILE_RECORD
from podrun.pod.sdglue import Systemd
from podrun.pod.state import PodFileDamage, read_pid_file_record
from podrun.stage0 import launch
from podrun.stage0.prepare import pid_file_path
from tests.conftest import ROOT
from tests.fixtures.schemas import validate

UUID = "0f0e0d0c-0b0a-4908-8706-050403020100"


def _manifest(**kw: object) -> PodManifest:
    app = AppSpec("web", "sha256:" + "a" * 64, "demo", ("/l",), ("/bin/true",), ())
    return PodManifest(UUID, (app,), **kw)  # type: ignore[arg-type]


# -- --pid-file ----------------------------------------------------------------------------------

def test_the_pid_file_is_recorded_absolute_and_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/tmp")
    assert pid_file_path("run/../web.pid") == "/tmp/web.pid"
    assert pid_file_path(None) == pid_file_path("") == ""
    m = _manifest(pid_file="/run/web.pid")
    doc = m.to_doc()
    validate(doc, "pod-manifest")
    assert doc["pid_file"] == "/run/web.pid" and PodManifest.from_doc(doc).pid_file == "/run/web.pid"
    assert "pid_file" not in _manifest().to_doc()  # manifests without one are as before
    assert PodManifest.from_doc(_manifest().to_doc()).pid_file == ""


@pytest.mark.parametrize("name", ["-", "/dev/stdout", "/dev/fd/3", "/proc/self/fd/1"])
def test_a_descriptor_is_no_pid_file(name: str) -> None:
    with pytest.raises(UsageError, match="not a descriptor"):
        pid_file_path(name)


def test_the_pid_is_written_atomically_and_recorded_in_the_pod(tmp_path: Path) -> None:
    target, pod = tmp_path / "web.pid", tmp_path / "pod"
    target.write_text("stale\n")
    pod.mkdir()
    out = launch.open_pid_file(str(target))
    try:
        assert target.read_text() == "stale\n"  # replaced only by the commit
        launch.write_pid(out, pod)
    finally:
        out.close()
    assert target.read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pod", "web.pid"]  # no temporary left
    st = target.stat()
    assert json.loads((pod / PID_FILE_RECORD).read_text()) == {"pid": os.getpid(), "dev": st.st_dev, "ino": st.st_ino,
                                                               "mtime_ns": st.st_mtime_ns}
    assert os.listdir(pod) == [PID_FILE_RECORD]


def test_no_pid_file_writes_nothing(tmp_path: Path) -> None:
    out = launch.open_pid_file(None)
    launch.write_pid(out, tmp_path)
    out.close()
    assert os.listdir(tmp_path) == []


def test_a_pid_file_is_not_committed_without_its_record(tmp_path: Path) -> None:
    target = tmp_path / "web.pid"
    target.write_text("stale\n")
    out = launch.open_pid_file(str(target))
    try:
        with pytest.raises(PodrunError, match="recording the PID file"):
            launch.write_pid(out, tmp_path / "no-such-pod")
    finally:
        out.close()
    assert target.read_text() == "stale\n" and os.listdir(tmp_path) == ["web.pid"]


def test_a_link_or_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UsageError, match="symbolic link"):
        launch.open_pid_file(str(tmp_path / "link"))
    with pytest.raises(UsageError, match="directory"):
        launch.open_pid_file(str(tmp_path) + "/")
    assert not (tmp_path / "elsewhere").exists()


def test_the_pid_file_is_removed_only_while_it_holds_our_pid(tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    pid_file.write_text("4242\n")  # a newer podrun (a restart) wrote its own
    assert not fsutil.remove_pid_file(str(pid_file), 4241) and pid_file.exists()
    assert fsutil.remove_pid_file(str(pid_file), 4242) and not pid_file.exists()
    assert not fsutil.remove_pid_file(str(pid_file), 4242)  # gone is fine
    (tmp_path / "other").write_text("4242\n")
    pid_file.symlink_to(tmp_path / "other")
    assert not fsutil.remove_pid_file(str(pid_file), 4242)  # a link is never followed
    assert pid_file.is_symlink() and (tmp_path / "other").exists()
    assert not fsutil.remove_pid_file(str(tmp_path / "nodir" / "web.pid"), 4242)


T = 1_800_000_000_123_456_789  # an mtime in ns


def _stat(mode: int = stat.S_IFREG | 0o644, dev: int = 8, ino: int = 42, size: int = 5, mtime_ns: int = T) -> os.stat_result:
    # the 10 fields of the tuple, then st_atime, st_mtime, st_ctime (floats) and st_atime_ns, st_mtime_ns, st_ctime_ns
    return os.stat_result((mode, ino, dev, 1, 0, 0, size, 0, 0, 0, 0.0, 0.0, 0.0, 0, mtime_ns, 0))


@pytest.mark.parametrize(("data", "st", "written", "holds"), [
    (b"4242\n", _stat(), None, True),
    (b"4242\n", _stat(), (8, 42, T), True),
    (b" 4242 \n", _stat(size=7), (8, 42, T), True),
    (b"4242\n", _stat(ino=43), (8, 42, T), False),      # another file with the same PID: a PID come round again
    (b"4242\n", _stat(dev=9), (8, 42, T), False),
    (b"4242\n", _stat(mtime_ns=T + 1), (8, 42, T), False),  # written anew, in a freed inode of the same number
    (b"4241\n", _stat(), (8, 42, T), False),            # a restart's PID
    (b"42420\n", _stat(size=6), None, False),
    (b"4242\n", _stat(size=500), None, False),       # more than was read: not only the PID
    (b"", _stat(size=0), None, False),
    (b"4242\n", _stat(mode=stat.S_IFIFO | 0o644), None, False),
    (b"4242\n", _stat(mode=stat.S_IFLNK | 0o777), None, False),
])
def test_a_pid_file_holds_the_pid_only_as_a_regular_file_of_that_pid_alone(
        data: bytes, st: os.stat_result, written: tuple[int, int, int] | None, holds: bool) -> None:
    assert fsutil.holds_pid(data, st, 4242, written) is holds


def test_the_pid_file_stage0_wrote_is_told_from_another_with_the_same_pid(tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    pid_file.write_text("4242\n")
    st = pid_file.stat()
    written = (st.st_dev, st.st_ino, st.st_mtime_ns)
    (tmp_path / "new").write_text("4242\n")  # a restart whose supervisor got the same PID
    os.rename(tmp_path / "new", pid_file)
    assert not fsutil.remove_own_pid_file(str(pid_file), 4242, written) and pid_file.exists()
    st = pid_file.stat()
    assert fsutil.remove_own_pid_file(str(pid_file), 4242, (st.st_dev, st.st_ino, st.st_mtime_ns))
    assert not pid_file.exists()


def test_only_a_regular_pid_file_is_opened(tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    os.mkfifo(pid_file)  # no writer: an open without O_NONBLOCK would block
    assert not fsutil.remove_own_pid_file(str(pid_file), 4242) and pid_file.exists()
    pid_file.unlink()
    pid_file.mkdir()
    assert not fsutil.remove_own_pid_file(str(pid_file), 4242) and pid_file.is_dir()
    (tmp_path / "file").write_text("4242\n")
    assert not fsutil.remove_own_pid_file(str(tmp_path / "file" / "web.pid"), 4242)  # its "directory" is a file


def test_an_error_on_the_pid_file_is_raised_for_its_caller_to_report(tmp_path: Path) -> None:
    (tmp_path / "loop").symlink_to("loop")  # its directory cannot be opened (ELOOP), even by root
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        fsutil.remove_own_pid_file(str(tmp_path / "loop" / "web.pid"), 4242)
    assert not fsutil.remove_pid_file(str(tmp_path / "loop" / "web.pid"), 4242)  # the supervisor's best effort


# -- the pod's record of the PID file (podrun.pod.state) ------------------------------------------

def _record(pod: Path, data: bytes) -> int:
    (pod / PID_FILE_RECORD).write_bytes(data)
    return os.open(pod, os.O_RDONLY | os.O_DIRECTORY)


@pytest.mark.parametrize(("data", "record"), [
    (None, None),                                         # no --pid-file, or an older podrun
    (b"", None),                                          # emptied by a power cut (not fsynced)
    (b'{"pid":4242,"dev":8,"ino":42,"mtime_ns":7}', (4242, (8, 42, 7))),
])
def test_the_pid_file_record_is_read(tmp_path: Path, data: bytes | None, record: object) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY) if data is None else _record(tmp_path, data)
    try:
        assert read_pid_file_record(fd) == record
    finally:
        os.close(fd)


@pytest.mark.parametrize("data", [b'{"pid":0,"dev":8,"ino":42,"mtime_ns":7}', b'{"pid":4242,"dev":-1,"ino":42,"mtime_ns":7}',
                                  b'{"pid":4242,"dev":8,"ino":42}', b'{"pid":true,"dev":8,"ino":42,"mtime_ns":7}',
                                  b'{"pid":4242,"dev":8,"ino":42,"mtime_ns":7.5}', b"[4242]",
                                  b'{"pid":"4242","dev":8,"ino":42,"mtime_ns":7}', b"4242\n"])
def test_a_damaged_pid_file_record_is_damage(tmp_path: Path, data: bytes) -> None:
    fd = _record(tmp_path, data)
    try:
        with pytest.raises(PodFileDamage, match="^pid-file: "):
            read_pid_file_record(fd)
    finally:
        os.close(fd)


# -- --ready-fd ----------------------------------------------------------------------------------

def test_ready_fd_must_be_an_open_writable_descriptor_from_3() -> None:
    r, w = os.pipe()
    try:
        assert launch.check_ready_fd(None) is None
        assert launch.check_ready_fd(str(w)) == w
        for bad, why in (("x", "not a descriptor number"), ("+5", "not a descriptor number"),
                         ("1", "give 3 or more"), (str(r), "read-only")):
            with pytest.raises(UsageError, match=why):
                launch.check_ready_fd(bad)
    finally:
        os.close(r)
        os.close(w)
    with pytest.raises(UsageError, match="not an open descriptor"):
        launch.check_ready_fd(str(w))


def test_stage0_hands_the_ready_fd_over_and_stage1_takes_it_close_on_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(abi.ENV_READY_FD, "9")  # inherited from whoever ran stage0: never passed on
    assert abi.ENV_READY_FD not in abi.stage1_env("/data")
    env = abi.stage1_env("/data", 5, None, 7)
    assert env[abi.ENV_READY_FD] == "7"
    monkeypatch.delenv(abi.ENV_READY_FD)
    assert abi.take_ready_fd() == -1
    r, w = os.pipe()
    try:
        os.set_inheritable(w, True)
        monkeypatch.setenv(abi.ENV_READY_FD, str(w))
        assert abi.take_ready_fd() == w
        assert abi.ENV_READY_FD not in os.environ and not os.get_inheritable(w)
    finally:
        os.close(r)
        os.close(w)
    monkeypatch.setenv(abi.ENV_READY_FD, str(w))
    with pytest.raises(abi.AbiError, match=abi.ENV_READY_FD):
        abi.take_ready_fd()


@pytest.fixture
def no_systemd(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "JOURNAL_STREAM"):
        monkeypatch.delenv(name, raising=False)
    runtime = Path(tempfile.mkdtemp(prefix="prn", dir="/tmp"))  # short: a socket path is at most 107 bytes
    monkeypatch.setenv("PODRUN_RUNTIME_DIR", str(runtime))
    yield runtime
    shutil.rmtree(runtime)


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 64):
        data += chunk
    return data


def test_ready_fd_gets_a_newline_once_the_apps_run(no_systemd: Path) -> None:
    r, w = os.pipe()
    sd = Systemd(_manifest(), w)
    sd.apps_started()
    assert _read_all(r) == b"\n"  # written and closed: the reader sees EOF after it
    sd.close()
    os.close(r)


def test_a_pod_that_ends_unready_closes_the_ready_fd_empty(no_systemd: Path) -> None:
    r, w = os.pipe()
    Systemd(_manifest(), w).close()
    assert _read_all(r) == b""
    os.close(r)


def test_a_reader_gone_is_not_the_pods_failure(no_systemd: Path) -> None:
    r, w = os.pipe()
    os.close(r)
    sd = Systemd(_manifest(), w)
    sd.apps_started()  # EPIPE (Python ignores SIGPIPE) is swallowed
    assert sd.ready_fd == -1


def test_with_notify_app_the_apps_ready_1_makes_the_pod_ready(no_systemd: Path) -> None:
    r, w = os.pipe()
    sd = Systemd(_manifest(notify="app"), w)
    try:
        assert sd.app_socket.startswith(str(no_systemd)) and sd.app_env()  # made without systemd
        sd.apps_started()
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)  # not yet: the app has not said so
        app = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        app.sendto(b"STATUS=warming up", sd.app_socket)
        sd.forward()
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
        app.sendto(b"STATUS=up\nREADY=1", sd.app_socket)
        app.close()
        sd.forward()
        os.set_blocking(r, True)
        assert _read_all(r) == b"\n"
    finally:
        sd.close()
        os.close(r)
    assert not os.path.exists(sd.app_socket)


@pytest.mark.parametrize(("args", "message"), [
    (("run", "--pid-file", "-"), "--pid-file '-': name a file, not a descriptor"),
    (("run", "--ready-fd", "1"), "--ready-fd 1: stdin, stdout and stderr are the apps' (give 3 or more)"),
    (("run", "--ready-fd", "99"), "--ready-fd 99: not an open descriptor"),
    (("run", "--stage1", "fly", "--ready-fd", "5"), "--ready-fd needs a supervisor: --stage1 fly execs the app"),
    (("prepare", "--ready-fd", "5"), "--ready-fd is a flag of run: the descriptor would be prepare's, not "
                                     "run-prepared's"),
])
def test_refused_before_any_pod_exists(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    # fd 5 is open (on /dev/null) in podrun: only what the message names is wrong
    res = subprocess.run(["sh", "-c", 'exec 5>/dev/null; exec "$0" "$@"', sys.executable, "-m", "podrun", "--dir",
                          str(tmp_path / "d"), *args, "demo"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 253 and res.stderr == f"podrun: {message}\n", res.stderr
    assert not (tmp_path / "d" / "pods").exists()
