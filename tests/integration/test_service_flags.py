"""``run --ready-fd`` and ``--pid-file`` on real pods, without a supervisor in between (man
podrun-run(1), podrun-init(7)): the newline comes once the apps run (or when the app sends
READY=1 with ``--notify app``, no systemd needed), the descriptor never reaches an app, and the
PID file names the supervisor, also for ``prepare`` + ``run-prepared``, and goes with the pod."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_run import PODRUN, Pods, demo_pods
from tests.integration.test_systemd_protocol import sdapp  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    p = demo_pods(tmp_path_factory.mktemp("svcflags"))
    yield p
    p.cleanup()
    assert p.run("list", "--format", "json").stdout.strip() == "[]"


def _start(pods: Pods, *args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}  # no systemd: s6's protocol only
    return subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds)


def _readable(fd: int, timeout: float) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def _running(pods: Pods) -> str:
    deadline = time.monotonic() + 30
    while True:
        out = pods.run("list", "--format", "json", check=True).stdout
        running = [p["uuid"] for p in json.loads(out) if p["state"] == "running"]
        if running:
            assert len(running) == 1
            return str(running[0])
        assert time.monotonic() < deadline, "no running pod"
        time.sleep(0.05)


@pytest.mark.parametrize("flavor", ["default", "oci"])
def test_ready_fd_gets_its_newline_once_the_apps_run_and_no_app_gets_it(pods: Pods, flavor: str) -> None:
    r, w = os.pipe()
    try:
        # the app lists its open descriptors: 0, 1, 2 and ls's own directory, never the ready fd
        proc = _start(pods, "--stage1", flavor, "--ready-fd", str(w), "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c",
                      "ls /proc/self/fd; exec sleep 100", pass_fds=(w,))
        os.close(w)
        w = -1
        assert _readable(r, 60), "no readiness"
        assert os.read(r, 16) == b"\n" and os.read(r, 16) == b""  # the newline, then closed (EOF)
        uuid = _running(pods)
        assert pods.run("status", "--wait-ready=0s", uuid).returncode == 0  # the ready record came first
        pods.run("stop", uuid, check=True)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
        assert set(out.split()) <= {"0", "1", "2", "3"}, out  # 3: ls's own /proc/self/fd
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_with_notify_app_the_apps_ready_1_is_the_newline(pods: Pods, sdapp: Path, tmp_path: Path) -> None:  # noqa: F811
    ctl = tmp_path / "ctl"
    ctl.mkdir()
    r, w = os.pipe()
    try:
        proc = _start(pods, "--ready-fd", str(w), "--notify", "app", "--net", "none",
                      "--volume", f"sd,kind=host,source={sdapp},readOnly=true",
                      "--volume", f"ctl,kind=host,source={ctl}", "demo",
                      "--mount", "volume=sd,target=/sdapp", "--mount", "volume=ctl,target=/ctl",
                      "--exec", "/bin/sh", "--", "-c",
                      "/sdapp notify STATUS=starting; while [ ! -e /ctl/go ]; do sleep 0.1; done; "
                      "/sdapp notify READY=1; exec sleep 100", pass_fds=(w,))
        os.close(w)
        w = -1
        uuid = _running(pods)
        assert pods.run("status", "--wait-ready=30s", uuid).returncode == 0  # the apps run…
        assert not _readable(r, 1.0)  # …but the app has not said it is ready
        (ctl / "go").touch()
        assert _readable(r, 30) and os.read(r, 16) == b"\n" and os.read(r, 16) == b""
        pods.run("stop", uuid, check=True)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 143, err
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_pod_that_fails_to_start_closes_the_ready_fd_unwritten(pods: Pods) -> None:
    r, w = os.pipe()
    try:
        # a volume whose host source is missing: the pod never gets to run its app
        proc = _start(pods, "--ready-fd", str(w), "--net", "none", "--volume", "v,kind=host,source=/nonexistent-i17",
                      "demo", "--mount", "volume=v,target=/v", "--exec", "/bin/true", pass_fds=(w,))
        os.close(w)
        w = -1
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0, err
        assert _readable(r, 5) and os.read(r, 16) == b""  # EOF, no newline: never ready
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


@pytest.mark.parametrize("flavor", ["default", "oci"])
def test_pid_file_names_the_supervisor_and_goes_with_the_pod(pods: Pods, tmp_path: Path, flavor: str) -> None:
    pid_file = tmp_path / "web.pid"
    proc = _start(pods, "--stage1", flavor, "--pid-file", str(pid_file), "--net", "none", "demo", "--exec", "/bin/sleep", "--", "100")
    uuid = _running(pods)
    assert pid_file.read_text() == f"{proc.pid}\n"  # the PID of `podrun run`, now stage1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["web.pid"]  # no temporary left
    pods.run("stop", uuid, check=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert not pid_file.exists()


def test_pid_file_of_a_prepared_pod_is_written_by_run_prepared(pods: Pods, tmp_path: Path) -> None:
    res = pods.run("prepare", "--pid-file", "rel.pid", "--net", "none", "demo", "--exec", "/bin/sleep", "--", "100",
                   cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})  # a relative name: recorded absolute
    assert res.returncode == 0, res.stderr
    uuid = res.stdout.strip()
    assert not (tmp_path / "rel.pid").exists()  # written when the pod runs, not when it is prepared
    proc = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run-prepared", uuid], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert _running(pods) == uuid
    assert (tmp_path / "rel.pid").read_text() == f"{proc.pid}\n"
    pods.run("stop", uuid, check=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert not (tmp_path / "rel.pid").exists()


def test_a_pid_file_replaced_meanwhile_is_left_alone(pods: Pods, tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    proc = _start(pods, "--pid-file", str(pid_file), "--net", "none", "demo", "--exec", "/bin/sleep", "--", "100")
    uuid = _running(pods)
    pid_file.write_text("1\n")  # a newer instance's, say
    pods.run("stop", uuid, check=True)
    proc.communicate(timeout=30)
    assert pid_file.read_text() == "1\n"


def test_a_planted_link_is_refused_before_any_pod(pods: Pods, tmp_path: Path) -> None:
    (tmp_path / "web.pid").symlink_to(tmp_path / "target")
    before = pods.run("list", "--format", "json", check=True).stdout
    res = pods.run("run", "--pid-file", str(tmp_path / "web.pid"), "--net", "none", "demo", "--exec", "/bin/true")
    assert res.returncode == 253 and "symbolic link" in res.stderr
    assert not (tmp_path / "target").exists()
    assert pods.run("list", "--format", "json", check=True).stdout == before


def _killed(pods: Pods, pid_file: Path) -> str:
    """A pod started with --pid-file whose supervisor got SIGKILL (it cannot remove the file); its UUID."""
    proc = _start(pods, "--pid-file", str(pid_file), "--net", "none", "demo", "--exec", "/bin/sleep", "--", "100")
    uuid = _running(pods)
    assert pid_file.read_text() == f"{proc.pid}\n"
    proc.kill()
    proc.communicate(timeout=30)
    assert pid_file.read_text() == f"{proc.pid}\n"  # stale: as any killed daemon leaves it
    return uuid


def test_gc_removes_the_pid_file_a_killed_supervisor_left(pods: Pods, tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    uuid = _killed(pods, pid_file)
    out = pods.run("gc", check=True).stdout  # the default grace period: marked, the PID file goes at once
    assert [line for line in out.splitlines() if uuid in line or "PID file" in line] == [
        f"removed PID file {pid_file} of pod {uuid}", f"marked pod {uuid} exited-garbage"]
    assert not pid_file.exists() and os.listdir(tmp_path) == []
    out = pods.run("gc", "--grace-period", "0s", check=True).stdout
    assert f"removed pod {uuid}" in out and "PID file" not in out


def test_gc_leaves_the_pid_file_a_restarted_pod_wrote(pods: Pods, tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    killed = _killed(pods, pid_file)
    proc = _start(pods, "--pid-file", str(pid_file), "--net", "none", "demo", "--exec", "/bin/sleep", "--", "100")
    uuid = _running(pods)  # the service manager's restart: a new pod, the same PID file
    assert pid_file.read_text() == f"{proc.pid}\n"
    out = pods.run("gc", "--grace-period", "0s", check=True).stdout
    assert f"removed pod {killed}" in out and "PID file" not in out, out
    assert pid_file.read_text() == f"{proc.pid}\n"
    pods.run("stop", uuid, check=True)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert not pid_file.exists()  # the new pod's supervisor removes its own


def test_gc_follows_no_link_at_the_pid_files_path(pods: Pods, tmp_path: Path) -> None:
    pid_file = tmp_path / "web.pid"
    uuid = _killed(pods, pid_file)
    target = tmp_path / "elsewhere"
    os.rename(pid_file, target)  # the very file, the supervisor's PID in it, now behind a link
    pid_file.symlink_to(target)
    out = pods.run("gc", "--grace-period", "0s", check=True).stdout
    assert f"removed pod {uuid}" in out and "PID file" not in out, out
    assert pid_file.is_symlink() and target.read_text().strip().isdigit()
