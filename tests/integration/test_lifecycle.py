"""Pod lifecycle from disk state: list/status/stop/rm/gc, fault injection at every pod
checkpoint, corrupted state, and a bounded concurrency soak (SECURITY-TESTS 17–21, 23)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podrun.faults import POD_CHECKPOINTS
from tests.conftest import ROOT
from tests.integration.test_run import PODRUN, Pods, module_pods


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "life")


def listing(pods: Pods) -> dict[str, dict[str, Any]]:
    res = pods.run("list", "--format", "json", check=True)
    return {p["uuid"]: p for p in json.loads(res.stdout)}


def pod_cgroups(uuid: str) -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/podrun/pod-{uuid}")] + [
        str(p) for p in Path("/sys/fs/cgroup").glob(f"*/*/*/podrun/pod-{uuid}")]


def pod_mounts(uuid: str) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if uuid in line]


def start_pod(pods: Pods, *app: str) -> tuple[subprocess.Popen[str], str]:
    proc, uuid, _ = pods.start(*app, stdout=subprocess.PIPE)
    return proc, uuid


def test_list_status_and_exit_codes(pods: Pods, tmp_path: Path) -> None:
    prepared = pods.run("prepare", "demo", "--exec", "/bin/true", check=True).stdout.strip()
    proc, running = start_pod(pods, "demo", "--exec", "/bin/sh", "--", "-c", "sleep 2; exit 7")
    pods_now = listing(pods)
    assert pods_now[prepared]["state"] == "prepared"
    assert pods_now[running]["state"] == "running" and pods_now[running]["pid"] > 0
    assert {"uuid", "state", "apps", "created", "started", "pid"} <= set(pods_now[running])
    waited = pods.run("status", "--wait", "--format", "json", running[:10], check=True)
    st = json.loads(waited.stdout)
    assert st["state"] == "exited" and st["exit_code"] == 7 and st["apps"][0]["exit_code"] == 7
    assert proc.wait(timeout=10) == 7
    assert listing(pods)[running]["pid"] is None
    assert pods.run("cat-manifest", running, check=True).stdout.startswith("{")
    table = pods.run("list", check=True).stdout
    assert running[:8] in table and "exited" in table
    assert pods.run("status", "nope-not-a-pod").returncode == 252


def test_stop_rm_and_gc(pods: Pods, tmp_path: Path) -> None:
    proc, uuid = start_pod(pods, "demo", "--exec", "/bin/sleep", "--", "600")
    assert pods.run("rm", uuid).returncode == 247  # running pods are not removed
    assert pods.run("stop", uuid, check=True).stdout.strip() == f"{uuid} stopped"
    assert proc.wait(timeout=20) == 128 + 15
    proc2, uuid2 = start_pod(pods, "demo", "--exec", "/bin/sh", "--", "-c", "trap '' TERM; sleep 600")
    pods.run("stop", "--timeout", "0.5s", uuid2, check=True)
    assert proc2.wait(timeout=20) == 128 + 9
    assert pod_cgroups(uuid) == [] and pod_cgroups(uuid2) == []
    out = pods.run("rm", uuid, check=True).stdout
    assert f"removed pod {uuid}" in out and uuid not in listing(pods)
    marked = pods.run("gc", "--mark-only", check=True).stdout
    assert f"marked pod {uuid2}" in marked and listing(pods)[uuid2]["state"] == "exited-garbage"
    assert uuid2 in listing(pods)  # grace period not over
    pods.run("gc", "--grace-period", "0s", check=True)
    assert uuid2 not in listing(pods)


@pytest.mark.parametrize("checkpoint", POD_CHECKPOINTS)
def test_kill9_at_each_checkpoint(pods: Pods, tmp_path: Path, checkpoint: str) -> None:
    env = dict(os.environ, PODRUN_FAULT=checkpoint if not checkpoint.startswith(("stop:", "gc:")) else "")
    uuid_file = tmp_path / "uuid"
    proc = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run", "--uuid-file-save", str(uuid_file), "demo",
                             "--exec", "/bin/sleep", "--", "600"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    uuid = None
    if checkpoint.startswith(("stop:", "gc:")):
        deadline = time.monotonic() + 30
        while not uuid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        uuid = uuid_file.read_text().strip()
        pods.run("status", "--wait-ready=20s", uuid, check=True)
        fault = dict(os.environ, PODRUN_FAULT=checkpoint)
        if checkpoint.startswith("stop:"):
            res = pods.run("stop", uuid, env=fault)
        else:
            pods.run("stop", uuid, check=True)
            res = pods.run("gc", "--grace-period", "0s", env=fault)
        assert res.returncode == -9, res.stderr
    try:
        proc.wait(timeout=30 if not checkpoint.startswith("stop:") else 1)
    except subprocess.TimeoutExpired:
        pods.run("stop", "--force", uuid or "", check=False)
        proc.wait(timeout=30)
    if uuid is None and uuid_file.exists():
        uuid = uuid_file.read_text().strip()
    assert all(p["state"] != "running" for p in listing(pods).values()), listing(pods)
    pods.run("gc", "--grace-period", "0s", "--expire-prepared", "0s", check=True)
    assert pods.run("gc", "--grace-period", "0s", "--expire-prepared", "0s", check=True).stdout == ""
    assert listing(pods) == {}
    if uuid:
        assert pod_cgroups(uuid) == [] and pod_mounts(uuid) == []
    assert not list((pods.data / "pods").glob("*/.*")), "no hidden leftovers"


def test_corrupted_state_is_listed_and_removable(pods: Pods) -> None:
    a = pods.run("prepare", "demo", check=True).stdout.strip()
    b = pods.run("prepare", "demo", check=True).stdout.strip()
    c = pods.run("prepare", "demo", check=True).stdout.strip()
    (pods.data / "pods" / "prepared" / a / "pod.json").write_text('{"version": 1, "apps": [')  # truncated
    (pods.data / "pods" / "prepared" / b / "pod.json").unlink()  # missing
    (pods.data / "pods" / "prepared" / c / "status").mkdir()
    (pods.data / "pods" / "prepared" / c / "status" / "demo").write_text("{")  # truncated status
    res = pods.run("list")
    assert res.returncode == 0 and "Traceback" not in res.stderr
    for uuid in (a, b, c):
        assert uuid in res.stderr  # each broken pod is named
    assert pods.run("status", a).returncode == 0
    assert pods.run("rm", a, b, c, check=True).stdout.count("removed pod") == 3
    assert listing(pods) == {}


def test_concurrency_soak(pods: Pods) -> None:
    """Parallel run/stop/rm/gc/list loops: no deadlock, no traceback, no half-deleted pod."""
    base = " ".join([sys.executable, "-m", "podrun", "--dir", str(pods.data)])
    # The stop loop stops what the run loops start: such a run exits 128+SIGTERM (or +SIGKILL).
    stopped_or = "|| { rc=$?; [ $rc = 143 ] || [ $rc = 137 ] || exit 1; }"
    loops = [
        f"for i in 1 2 3 4 5 6; do {base} run demo --exec /bin/sh -- -c 'sleep 0.$i' >/dev/null {stopped_or}; done",
        f"for i in 1 2 3 4 5 6; do {base} run demo --exec /bin/true >/dev/null {stopped_or}; done",
        f"for i in $(seq 1 10); do {base} gc --grace-period 0s >/dev/null || exit 2; done",
        f"for i in $(seq 1 15); do {base} list >/dev/null || exit 3; done",
        f"for i in $(seq 1 8); do for u in $({base} list --no-legend --full | awk '{{print $1}}'); do "
        f"{base} stop $u >/dev/null 2>&1; {base} rm $u >/dev/null 2>&1; done; done",
    ]
    procs = [subprocess.Popen(["bash", "-c", loop], cwd=ROOT, stderr=subprocess.PIPE, text=True) for loop in loops]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert "Traceback" not in err, err
        assert p.returncode == 0, err
    pods.run("gc", "--grace-period", "0s", check=True)
    assert listing(pods) == {}
    assert list((pods.data / "pods" / "garbage").iterdir()) == []


def test_enter_gets_the_apps_confinement(pods: Pods, tmp_path: Path) -> None:
    proc, uuid = start_pod(pods, "demo", "--name", "web", "--exec", "/bin/sleep",
                                  "--caps-remove", "CAP_KILL", "--user", "nobody", "--", "600",
                                  "---", "demo", "--name", "side", "--exec", "/bin/sleep", "--", "600")
    try:
        from podrun.stage1.default.enter import app_main_pid

        pod_dir = pods.data / "pods" / "run" / uuid
        app_pid = app_main_pid(pod_dir, "web")
        script = ("for n in mnt pid net ipc uts cgroup; do readlink /proc/self/ns/$n; done; "
                  "grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; ls /proc/self/fd; "
                  "cat /proc/self/cgroup | head -1")
        res = pods.run("enter", "--app", "web", uuid[:12], "/bin/sh", "-c", script)
        assert res.returncode == 0, res.stderr
        lines = res.stdout.splitlines()
        assert lines[:6] == [os.readlink(f"/proc/{app_pid}/ns/{n}") for n in ("mnt", "pid", "net", "ipc", "uts",
                                                                               "cgroup")]
        status = dict(line.split(":\t") for line in lines[6:11])
        assert status["Uid"].split()[0] == "65534"
        assert int(status["CapBnd"], 16) == 0x800405FB & ~(1 << 5) and int(status["CapEff"], 16) == 0
        assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
        assert lines[11:15] == ["0", "1", "2", "3"]  # 3 is ls's own directory
        assert lines[15].endswith(":/")
        assert pods.run("enter", uuid, "/bin/true").returncode == 253  # two apps: --app needed
        assert pods.run("enter", "--app", "nope", uuid, "/bin/true").returncode == 253
        assert pods.run("enter", "--app", "side", uuid, "/bin/sh", "-c", "exit 9").returncode == 9
    finally:
        pods.run("stop", "--force", uuid)
        proc.wait(timeout=30)
    assert pods.run("enter", uuid, "/bin/true").returncode == 254  # not running


def test_logs_are_kept_per_app(pods: Pods, tmp_path: Path) -> None:
    uuid_file = tmp_path / "uuid"
    res = pods.run("run", "--uuid-file-save", str(uuid_file), "demo", "--name", "a", "--exec", "/bin/sh", "--", "-c",
                   "echo a-out; echo a-err >&2", "---", "demo", "--name", "b", "--exec", "/bin/sh", "--", "-c",
                   "sleep 0.2; echo b-out; printf b-tail")
    assert res.returncode == 0
    # the caller sees it too, each line tagged with its app (several apps), a last partial line ended
    assert sorted(res.stdout.splitlines(keepends=True)) == ["a | a-out\n", "b | b-out\n", "b | b-tail\n"]
    assert "a | a-err\n" in res.stderr.splitlines(keepends=True), res.stderr
    uuid = uuid_file.read_text().strip()
    assert pods.run("logs", "--app", "a", uuid, check=True).stdout.split() == ["a-out", "a-err"]
    assert pods.run("logs", "--app", "b", uuid, check=True).stdout == "b-out\nb-tail"  # one app: its own bytes
    both = pods.run("logs", uuid, check=True).stdout.splitlines()
    assert sorted(both) == ["a | a-err", "a | a-out", "b | b-out", "b | b-tail"]
    proc, live = start_pod(pods, "demo", "--exec", "/bin/sh", "--", "-c",
                                  "echo first; sleep 1; echo second")
    follow = pods.run("logs", "-f", live, check=True, timeout=30)
    assert follow.stdout.split() == ["first", "second"]
    proc.wait(timeout=30)
    assert pods.run("logs", "--app", "zzz", uuid).returncode == 253


def test_simulated_reboot_reconciles(pods: Pods, tmp_path: Path) -> None:
    runtime = tmp_path / "run-podrun"
    env = dict(os.environ, PODRUN_RUNTIME_DIR=str(runtime), PODRUN_BOOT_ID="boot-one")
    pods.run("list", env=env, check=True)
    assert (runtime / "boot_id").read_text().strip() == "boot-one"
    proc, uuid = start_pod(pods, "demo", "--exec", "/bin/sleep", "--", "600")
    os.kill(proc.pid, 9)  # the machine "crashes": the supervisor dies without cleaning up
    proc.wait(timeout=10)
    pods.run("status", "--wait", uuid, env=env, timeout=30)  # until the pod's last lock holder is gone
    (runtime / "boot_id").unlink()  # /run is a tmpfs: gone after the reboot
    env["PODRUN_BOOT_ID"] = "boot-two"
    listed = {p["uuid"]: p for p in json.loads(pods.run("list", "--format", "json", env=env, check=True).stdout)}
    assert listed[uuid]["state"] == "exited-garbage"
    out = pods.run("gc", "--grace-period", "0s", env=env, check=True).stdout
    assert f"removed pod {uuid}" in out and pod_cgroups(uuid) == []
    assert pods.run("gc", env=env, check=True).stdout == ""
