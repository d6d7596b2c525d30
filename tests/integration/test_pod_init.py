"""The default flavor's pod pid 1 on the real kernel (issue 16; podrun.pod.init):
``catatonit -P`` with nothing of the host, no capability, non-dumpable, in a session of its
own; ``podrun stop`` reaching the apps through the supervisor; pid 1 ending with the supervisor
whatever kills it, and every app with pid 1; a host without catatonit refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.pod import init
from tests.conftest import ROOT
from tests.integration.test_run import PODRUN, Pods, module_pods

PF_EXITING = 0x4  # include/linux/sched.h: set as a process starts to exit (do_exit)


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "init")


def status_fields(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def init_pid(path: Path) -> int:
    return int((path / "pid").read_text())


def pod_processes(uuid: str) -> list[int]:
    """Every process in the pod's cgroup tree (pid 1 and the apps), in any hierarchy."""
    return sorted({int(p) for procs in Path("/sys/fs/cgroup").glob(f"**/pod-{uuid}/**/cgroup.procs")
                   for p in procs.read_text().split()})


def ending(pid: int) -> bool:
    """*pid* has exited, is a zombie, or is exiting (a PID namespace's init waits in its exit
    until the host reaps its namespace's processes: that wait is not the kernel's choice)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return fields[0] in ("Z", "X") or bool(int(fields[6]) & PF_EXITING)  # fields[N - 3]: state, flags


def wait_until(condition: object, what: str, timeout: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def app_signal(path: Path, name: str) -> int | None:
    return json.loads((path / "status" / name).read_text())["signal"]  # type: ignore[no-any-return]


def test_pid1_is_catatonit_with_nothing_of_the_host(pods: Pods) -> None:
    proc, uuid, path = pods.start("--net", "none", "demo", "--exec", "/bin/sleep", "--", "600")
    try:
        pid = init_pid(path)
        assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"catatonit\0-P\0"
        assert Path(f"/proc/{pid}/environ").read_bytes() == b""
        st = status_fields(pid)
        assert st["NSpid"].split()[1:] == ["1"] and st["Name"] == "catatonit"
        assert all(int(st[key], 16) == 0 for key in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")), st
        assert st["Gid"].split() == ["0", "65534", "65534", "65534"] and st["Groups"] == ""
        # Non-dumpable: the kernel gives its /proc files to root instead of its effective ids
        # (fs/proc/base.c task_dump_owner); /proc/PID itself keeps them.
        assert os.stat(f"/proc/{pid}/status").st_gid == 0 and os.stat(f"/proc/{pid}").st_gid == 65534
        # a session of its own, not the caller's (Ctrl-C is the supervisor's to pass on)
        assert st["NSsid"].split()[0] == str(pid) and os.getsid(pid) != os.getsid(proc.pid)
        fds = {n: os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
        assert sorted(fds) == ["0", "1", "2", "3"], fds  # its stdin: the lifeline; 3: its signalfd
        assert fds["0"].startswith("pipe:") and fds["1"] == fds["2"] == "/dev/null" and "signalfd" in fds["3"]
        assert os.listdir(f"/proc/{pid}/root") == [] and os.listdir(f"/proc/{pid}/cwd") == []
        assert len(Path(f"/proc/{pid}/mountinfo").read_text().splitlines()) == 1
        # What a root app of the pod (default capabilities: no CAP_SYS_PTRACE) gets of it.
        seen = pods.sh("tr '\\0' ' ' < /proc/1/cmdline; echo; for l in root cwd exe; do readlink /proc/1/$l || "
                       "echo denied; done; ls /proc/1/root/ || echo denied; cat /proc/1/environ || echo denied",
                       "--net", "none")
        assert seen.stdout.splitlines() == ["catatonit -P "] + ["denied"] * 5, seen.stdout
    finally:
        pods.run("stop", uuid)
        proc.wait(timeout=30)
        pods.run("rm", uuid)


def test_stop_gives_each_app_its_stop_signal_and_leaves_nothing(pods: Pods) -> None:
    """SIGTERM to the supervisor (to pid 1 it would end the pod with SIGKILL): 143, each app's
    record says SIGTERM, and no process of the pod is left."""
    proc, uuid, path = pods.start("demo", "--name", "a", "--exec", "/bin/sleep", "--", "600",
                                  "---", "demo", "--name", "b", "--exec", "/bin/sleep", "--", "600")
    processes = pod_processes(uuid)
    assert len(processes) == 3 and init_pid(path) in processes, processes
    res = pods.run("stop", uuid)
    assert res.returncode == 0 and res.stdout == f"{uuid} stopped\n", res.stderr
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert (app_signal(path, "a"), app_signal(path, "b")) == (signal.SIGTERM, signal.SIGTERM)
    assert all(ending(p) for p in processes) and pod_processes(uuid) == []
    pods.run("rm", uuid)


def test_kill9_of_the_supervisor_ends_the_pod_at_once(pods: Pods) -> None:
    """pid 1's exec clears PDEATHSIG; the lifeline makes the kernel signal it instead."""
    proc, uuid, path = pods.start("demo", "--name", "a", "--exec", "/bin/sleep", "--", "600",
                                  "---", "demo", "--name", "b", "--exec", "/bin/sh", "--", "-c",
                                  "trap '' TERM INT HUP; sleep 600 & wait")
    processes = pod_processes(uuid)
    assert len(processes) >= 4 and init_pid(path) in processes, processes
    proc.kill()
    proc.wait(timeout=10)
    wait_until(lambda: all(ending(p) for p in processes), f"the pod outlived its supervisor: {processes}")
    assert pods.run("gc", "--grace-period", "0s").returncode == 0
    assert pod_processes(uuid) == [] and uuid not in pods.run("list").stdout


def test_ctrl_c_reaches_the_apps_not_pid1(pods: Pods) -> None:
    """SIGINT to the caller's process group (what a terminal's Ctrl-C does): the supervisor
    passes it to the app (130), pid 1 never sees it (it would SIGKILL the app: 137)."""
    uuid_file = pods.data.parent / f"uuid-int-{time.monotonic_ns()}"
    proc = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run", "--uuid-file-save", str(uuid_file), "demo",
                             "--exec", "/bin/sleep", "--", "600"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_until(uuid_file.exists, "the pod did not start", 30)
        uuid = uuid_file.read_text().strip()
        assert pods.run("status", "--wait-ready=20s", uuid).returncode == 0
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 128 + signal.SIGINT
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pods.run("rm", uuid)


def test_without_catatonit_run_says_so_in_one_line(pods: Pods, tmp_path: Path) -> None:
    """The host's catatonit hidden (an empty file bound over it in a mount namespace of the
    test's own): exit 254 with one line, before any of the pod's namespaces, mounts or cgroups."""
    real = [os.path.realpath(os.path.join(d, "catatonit")) for d in init.SEARCHED
            if os.path.exists(os.path.join(d, "catatonit"))]
    if set(real) != {"/usr/bin/catatonit"}:
        pytest.skip(f"catatonit is not (only) /usr/bin/catatonit here: {real}")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    uuid_file = tmp_path / "uuid"
    res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                          f"mount --bind {empty} /usr/bin/catatonit && exec \"$@\"", "sh",
                          *PODRUN, "--dir", str(pods.data), "run", "--uuid-file-save", str(uuid_file), "demo",
                          "--exec", "/bin/true"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 254, res.stderr
    assert res.stderr == ("podrun: stage1: the pod's pid 1: catatonit not found in /usr/bin, /usr/sbin, /bin, "
                          "/sbin (install the catatonit package)\n")
    uuid = uuid_file.read_text().strip()
    assert list(Path("/sys/fs/cgroup").glob(f"**/pod-{uuid}")) == []
    assert uuid not in Path("/proc/self/mountinfo").read_text()
    assert pods.run("rm", uuid).returncode == 0
