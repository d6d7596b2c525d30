"""podrun's side of the systemd protocols, with the test playing systemd's side for real:
a NOTIFY_SOCKET datagram socket (credentials checked: the notifications come from the PID the
"unit" started), and listening sockets passed by Debian's systemd-socket-activate."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_run import PODRUN, Pods, demo_pods

SDAPP_SOURCE = ROOT / "tests" / "fixtures" / "sdapp" / "sdapp.c"


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    base = tmp_path_factory.mktemp("sd")
    p = demo_pods(base)
    yield p
    p.cleanup()
    assert p.run("list", "--format", "json").stdout.strip() == "[]"


@pytest.fixture(scope="module")
def sdapp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdapp") / "sdapp"
    subprocess.run(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-o", str(out), str(SDAPP_SOURCE)], check=True,
                   capture_output=True)
    return out


class FakeManager:
    """systemd's end of NOTIFY_SOCKET (*path*, or ``@name`` for an abstract socket): receives
    datagrams with the sender's credentials, only when asked."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)  # as in NOTIFY_SOCKET
        self.bound = "\0" + self.path[1:] if self.path.startswith("@") else self.path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.bound)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)

    def fill(self) -> int:
        """Fill the queue (net.unix.max_dgram_qlen) from a socket of the test's, as a busy
        manager's; how many datagrams it took."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            count = 0
            while True:
                try:
                    s.sendto(b"FILLER=1", self.bound)
                except BlockingIOError:
                    return count
                count += 1

    def receive(self, timeout: float = 30) -> tuple[str, int]:
        """(message, sender pid)."""
        self.sock.settimeout(timeout)
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return data.decode(), pid

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[FakeManager]:
    m = FakeManager(tmp_path / "notify.sock")
    yield m
    m.close()


def _podrun(pods: Pods, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_ready_is_sent_by_the_main_pid_once_the_apps_run(pods: Pods, manager: FakeManager, tmp_path: Path) -> None:
    uuid_file = tmp_path / "uuid"
    env = dict(os.environ, NOTIFY_SOCKET=manager.path)
    proc = _podrun(pods, "--net", "none", "--uuid-file-save", str(uuid_file), "demo", "--exec", "/bin/sleep",
                   "--", "30", env=env)
    message, pid = manager.receive()
    assert "READY=1" in message.splitlines() and pid == proc.pid  # the unit's main PID: the supervisor
    pod_dir = pods.data / "pods" / "run" / uuid_file.read_text().strip()
    assert (pod_dir / "ready").exists()  # sent after pid 1 started every app
    pods.run("stop", uuid_file.read_text().strip(), check=True)
    assert proc.wait(timeout=20) == 143


def test_app_notifications_are_forwarded(pods: Pods, manager: FakeManager, sdapp: Path) -> None:
    env = dict(os.environ, NOTIFY_SOCKET=manager.path)
    proc = _podrun(pods, "--net", "none", "--notify", "app", "--volume", f"sd,kind=host,source={sdapp},readOnly=true",
                   "demo", "--mount", "volume=sd,target=/sdapp", "--exec", "/sdapp", "--",
                   "notify", "STATUS=warming up", "MAINPID=1\nREADY=1", "WATCHDOG=1", env=env)
    got = [manager.receive() for _ in range(3)]
    assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    assert [m for m, _ in got] == ["STATUS=warming up", "READY=1", "WATCHDOG=1"]  # MAINPID dropped
    assert {pid for _, pid in got} == {proc.pid}
    # the supervisor sent no READY=1 of its own in app mode
    with pytest.raises(TimeoutError):
        manager.receive(timeout=0.5)


def test_without_notify_socket_nothing_is_sent(pods: Pods, manager: FakeManager) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    assert pods.run("run", "--net", "none", "demo", "--exec", "/bin/true", env=env).returncode == 0
    with pytest.raises(TimeoutError):
        manager.receive(timeout=0.3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_socket_activation_passes_the_listening_socket_to_the_app(pods: Pods, sdapp: Path) -> None:
    port = _free_port()
    activate = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", sys.executable, "-m", "podrun",
         "--dir", str(pods.data), "run", "--net", "none",
         "--volume", f"sd,kind=host,source={sdapp},readOnly=true", "demo", "--mount", "volume=sd,target=/sdapp",
         "--exec", "/sdapp", "--", "accept", "hello from a socket-activated pod"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=30)
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline and activate.poll() is None, "socket-activate did not listen"
                time.sleep(0.05)
        with conn:
            data = b""
            while chunk := conn.recv(1024):
                data += chunk
        assert data == b"hello from a socket-activated pod\n"
    finally:
        activate.terminate()
        activate.wait(timeout=20)


def _parse_native(datagram: bytes) -> dict[str, str]:
    """journald's native protocol: KEY=VALUE lines, or KEY, a 64-bit length and binary data."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, sep, tail = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = tail
        else:
            size = struct.unpack("<Q", tail[:8])[0]
            fields[line.decode()] = tail[8:8 + size].decode()
            rest = tail[8 + size + 1:]
    return fields


@pytest.fixture
def journald() -> Iterator[socket.socket]:
    """A stand-in for journald's native socket (this machine runs no journald; a real one is
    left alone and the test skipped, saying so).  A socket nobody listens on (a killed run's)
    is replaced, and removed with the directories it alone kept."""
    sock_path = Path("/run/systemd/journal/socket")
    created = [p for p in (Path("/run/systemd"), sock_path.parent) if not p.exists()]
    if sock_path.exists() or sock_path.is_symlink():
        if _listening(sock_path):
            pytest.skip("a journald owns /run/systemd/journal/socket here; covered by the systemd e2e test")
        sock_path.unlink()
        created = [sock_path.parent]  # only an empty one goes (rmdir)
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(sock_path))
    try:
        yield s
    finally:
        s.close()
        sock_path.unlink(missing_ok=True)
        for p in reversed(created):
            with contextlib.suppress(OSError):
                p.rmdir()


def _listening(path: Path) -> bool:
    """True unless *path* is a datagram socket nobody is bound to (connecting is refused)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError:
            return True  # not a socket, or not ours to judge: leave it alone
    return True


def test_app_output_goes_to_the_journal_tagged(pods: Pods, journald: socket.socket, tmp_path: Path) -> None:
    out_path = tmp_path / "stdout"
    with open(out_path, "w") as out:
        st = os.fstat(out.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        res = subprocess.run([*PODRUN, "--dir", str(pods.data), "run", "--net", "none", "demo", "--name", "web",
                              "--exec", "/bin/sh", "--", "-c", "echo to stdout; echo to stderr >&2"],
                             cwd=ROOT, env=env, stdout=out, stderr=subprocess.PIPE, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    journald.settimeout(5)
    entries = [_parse_native(journald.recv(65536)) for _ in range(2)]
    by_message = {e["MESSAGE"]: e for e in entries}
    assert set(by_message) == {"to stdout", "to stderr"}
    uuid = by_message["to stdout"]["PODRUN_POD_UUID"]
    assert len(uuid) == 36 and all(e["SYSLOG_IDENTIFIER"] == "web" and e["PODRUN_APP"] == "web" for e in entries)
    assert by_message["to stdout"]["PRIORITY"] == "6" and by_message["to stderr"]["PRIORITY"] == "3"
    assert out_path.read_text() == ""  # not a second time, untagged, through the unit's stdout
    assert pods.run("logs", uuid, check=True).stdout.count("to stdout") == 1  # podrun logs still has it
