"""The --notify app relay against a service manager that is behind (issue 18): the test binds the
manager's NOTIFY_SOCKET and fills its queue (net.unix.max_dgram_qlen) without reading, as a busy
systemd would.  The supervisor must go on relaying, coalescing what waits, end the pod with the
app, never wait for the manager, and always remove the app's socket."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid as uuidlib
from pathlib import Path

import pytest

from tests.conftest import RUNTIME_DIR
from tests.integration.test_run import Pods
from tests.integration.test_systemd_protocol import FakeManager, _podrun, manager, pods, sdapp  # noqa: F401

STATUSES = 40
RUNTIME = RUNTIME_DIR / "notify"  # the session's PODRUN_RUNTIME_DIR (tests/conftest.py)


class Pod:
    """One ``podrun run --notify app`` of a shell *script* with /sdapp and a control dir /ctl."""

    def __init__(self, data: Pods, binary: Path, tmp_path: Path, fake: FakeManager, script: str,
                 notify: str = "app") -> None:
        self.ctl = tmp_path / "ctl"
        self.ctl.mkdir()
        uuid_file = tmp_path / "uuid"
        env = dict(os.environ, NOTIFY_SOCKET=fake.path)
        self.proc = _podrun(data, "--net", "none", "--notify", notify, "--uuid-file-save", str(uuid_file),
                            "--volume", f"sd,kind=host,source={binary},readOnly=true",
                            "--volume", f"ctl,kind=host,source={self.ctl}", "demo",
                            "--mount", "volume=sd,target=/sdapp", "--mount", "volume=ctl,target=/ctl",
                            "--exec", "/bin/sh", "--", "-c", script, env=env)
        deadline = time.monotonic() + 30
        while not uuid_file.exists() or not uuid_file.read_text().strip():
            assert time.monotonic() < deadline and self.proc.poll() is None, "the pod did not start"
            time.sleep(0.02)
        self.socket_file = RUNTIME / f"{uuid_file.read_text().strip()}.sock"

    def wait_for(self, name: str) -> None:
        """Until the app creates /ctl/NAME (the supervisor keeps reading the app's socket, or the
        app would block in its sends)."""
        deadline = time.monotonic() + 60
        while not (self.ctl / name).exists():
            assert self.proc.poll() is None, f"the pod ended ({self.proc.returncode}) before /ctl/{name}"
            assert time.monotonic() < deadline, f"the app did not get to /ctl/{name}: its sends block"
            time.sleep(0.05)

    def end(self) -> tuple[int, str]:
        """The pod's exit code and stderr (it ends by itself, or the test fails)."""
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("the pod did not end with its app: the supervisor waits for the manager")
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.socket_file.unlink(missing_ok=True)  # left by a failing supervisor only


def _notify_all(*messages: str) -> str:
    return "/sdapp notify " + " ".join(messages)


STATUS_FLOOD = _notify_all(*(f"STATUS={i}" for i in range(1, STATUSES + 1)), "READY=1")


def test_a_full_manager_gets_the_latest_status_and_ready_once_it_reads(pods: Pods, sdapp: Path, tmp_path: Path, manager: FakeManager) -> None:  # noqa: F811
    fillers = manager.fill()
    pod = Pod(pods, sdapp, tmp_path, manager,
              f"{STATUS_FLOOD} && touch /ctl/sent && while [ ! -e /ctl/go ]; do sleep 0.1; done; exit 7")
    try:
        pod.wait_for("sent")  # every STATUS= and READY=1 taken by the supervisor, none by the manager
        assert pod.socket_file.exists()
        assert [manager.receive()[0] for _ in range(fillers)] == ["FILLER=1"] * fillers
        got: list[tuple[str, int]] = []
        while not got or "READY=1" not in got[-1][0].splitlines():
            got.append(manager.receive())
        assert {pid for _, pid in got} == {pod.proc.pid}  # the unit's main PID
        lines = [line for message, _ in got for line in message.splitlines()]
        statuses = [line for line in lines if line.startswith("STATUS=")]
        assert lines.count("READY=1") == 1 and statuses[-1] == f"STATUS={STATUSES}", got
        assert len(statuses) < STATUSES, got  # coalesced while the manager was full
        (pod.ctl / "go").touch()
        code, stderr = pod.end()
        assert code == 7, stderr
        assert "Traceback" not in stderr and stderr == "", stderr
        assert not pod.socket_file.exists()
    finally:
        pod.cleanup()


def test_the_pod_ends_with_its_app_while_the_manager_never_reads(pods: Pods, sdapp: Path, tmp_path: Path, manager: FakeManager) -> None:  # noqa: F811
    manager.fill()
    pod = Pod(pods, sdapp, tmp_path, manager, f"{STATUS_FLOOD}; exit 7")
    try:
        code, stderr = pod.end()
        assert code == 7, stderr
        assert stderr == "", stderr
        assert not pod.socket_file.exists()
    finally:
        pod.cleanup()


def test_sigterm_while_notifications_wait_ends_the_pod_cleanly(pods: Pods, sdapp: Path, tmp_path: Path, manager: FakeManager) -> None:  # noqa: F811
    manager.fill()
    pod = Pod(pods, sdapp, tmp_path, manager, f"{STATUS_FLOOD} && touch /ctl/sent && exec sleep 1000")
    try:
        pod.wait_for("sent")
        os.kill(pod.proc.pid, signal.SIGTERM)  # systemd stopping the unit
        code, stderr = pod.end()
        assert code == 143, stderr
        assert "Traceback" not in stderr and "Error" not in stderr, stderr
        assert not pod.socket_file.exists()
    finally:
        pod.cleanup()


@pytest.mark.parametrize("mode", ["app", "ready"])
def test_an_abstract_notify_socket(mode: str, pods: Pods, sdapp: Path, tmp_path: Path) -> None:  # noqa: F811
    abstract = FakeManager(f"@podrun-test-{uuidlib.uuid4()}")
    script = _notify_all("STATUS=up", "READY=1") if mode == "app" else "true"
    pod = Pod(pods, sdapp, tmp_path, abstract, script, notify=mode)
    try:
        expected = ["STATUS=up", "READY=1"] if mode == "app" else ["READY=1\nSTATUS=apps started"]
        got = [abstract.receive() for _ in expected]
        assert [m for m, _ in got] == expected
        assert {pid for _, pid in got} == {pod.proc.pid}
        code, stderr = pod.end()
        assert code == 0, stderr
        assert not pod.socket_file.exists()
    finally:
        pod.cleanup()
        abstract.close()


def test_no_host_user_can_notify_in_the_pods_name(pods: Pods, sdapp: Path, tmp_path: Path, manager: FakeManager) -> None:  # noqa: F811
    """The app's socket is 0666 (the app may run as any user), but its host directory is root's
    alone: a host user who knows the pod's UUID cannot send READY=1 through it; the app still
    can, through its own path."""
    pod = Pod(pods, sdapp, tmp_path, manager,
              "touch /ctl/up && while [ ! -e /ctl/go ]; do sleep 0.1; done; /sdapp notify STATUS=from-the-app; exit 3")
    try:
        pod.wait_for("up")
        assert (RUNTIME.stat().st_mode & 0o777) == 0o700 and pod.socket_file.exists()
        forge = ("import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
                 f"s.sendto(b'READY=1', {str(pod.socket_file)!r})")
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-I",
                              "-c", forge], capture_output=True, text=True, timeout=30)
        assert res.returncode != 0 and "PermissionError" in res.stderr, res.stderr
        (pod.ctl / "go").touch()
        code, stderr = pod.end()
        assert code == 3, stderr
        assert manager.receive()[0] == "STATUS=from-the-app"
        with pytest.raises(TimeoutError):
            manager.receive(timeout=0.5)  # nothing else: no READY=1 in the pod's name
    finally:
        pod.cleanup()
