"""``--pid-file`` and ``--ready-fd`` (man podrun-run(1), podrun-init(7)): what stage0 checks and
writes, what stage1 takes over the exec, and how the supervisor signals readiness and removes
the PID file.  The real supervisors (s6, runit, start-stop-daemon) are driven in
tests/integration/test_init_systems.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun import abi, fsutil
from podrun.errors import UsageError
from podrun.model.manifest import AppSpec, PodManifest
from podrun.pod.sdglue import Systemd
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


def test_the_pid_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "web.pid"
    target.write_text("stale\n")
    out = launch.open_pid_file(str(target))
    try:
        assert target.read_text() == "stale\n"  # replaced only by the commit
        launch.write_pid(out)
    finally:
        out.close()
    assert target.read_text() == f"{os.getpid()}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.pid"]  # no temporary left


def test_no_pid_file_writes_nothing() -> None:
    out = launch.open_pid_file(None)
    launch.write_pid(out)
    out.close()


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
