"""podrun under a real systemd as PID 1: a minimal Debian root (tests/fixtures/debroot.py)
booted with systemd-nspawn --boot, the podrun .deb installed inside, then a Type=notify pod unit
(active, main PID the supervisor, journal lines tagged, clean stop), a socket-activated pod unit,
and the gc timer loaded."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.hostprep import _rmdir_tree, nspawn_runtime_tmpfs, peer_cgroup_dirs
from tests.conftest import ROOT, require_root
from tests.fixtures.debroot import debian_root

MACHINE = "podrun-e2e"


class Booted:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.leader = 0

    def find_leader(self) -> None:
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        if children:
            self.leader = int(children[0])

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", script], capture_output=True,
                             text=True, timeout=timeout)
        if check and res.returncode != 0:
            journal = subprocess.run(["nsenter", "-t", str(self.leader), "-a", "journalctl", "-n", "30", "--no-pager"],
                                     capture_output=True, text=True, timeout=60).stdout
            raise AssertionError(f"in the container: {script!r} -> {res.returncode}\n{res.stdout}\n{res.stderr}\n"
                                 f"journal:\n{journal}")
        return res


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory, podrun_deb: Path) -> Iterator[Booted]:
    require_root()
    root = debian_root()
    work = tmp_path_factory.mktemp("e2e")
    rootfs = subprocess.run(["bash", str(ROOT / "demo" / "build-rootfs.sh"), str(work / "rootfs")], check=True,
                            capture_output=True, text=True).stdout.strip()
    sdapp = work / "sdapp"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(sdapp), str(ROOT / "tests" / "fixtures" / "sdapp" / "sdapp.c")],
                   check=True, capture_output=True)
    cgroups_before = peer_cgroup_dirs()  # nspawn makes payload/ and supervisor/ beside its own cgroup
    with contextlib.ExitStack() as stack:
        stack.enter_context(nspawn_runtime_tmpfs())
        # --volatile=overlay keeps the cached root pristine, so podrun's data dir (overlay upper dirs
        # cannot live on overlayfs) is a host directory; a private network gives the container
        # CAP_NET_ADMIN; a unified cgroup hierarchy, as on production hosts (this VM is a hybrid,
        # whose v1 controllers nspawn mounts read-only).
        data = work / "data"
        data.mkdir()
        proc = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "-q", "--volatile=overlay",
             "--private-network", f"--machine={MACHINE}", "-D", str(root), f"--bind-ro={podrun_deb.parent}:/mnt/deb",
             f"--bind-ro={rootfs}:/mnt/rootfs", f"--bind-ro={sdapp}:/mnt/sdapp", f"--bind={data}:/var/lib/podrun"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1"))
        box = Booted(proc)
        try:
            deadline = time.monotonic() + 120
            state = ""
            while time.monotonic() < deadline:
                box.find_leader()
                if box.leader:
                    state = box.sh("systemctl is-system-running", check=False).stdout.strip()
                    if state in ("running", "degraded"):
                        break
                assert proc.poll() is None, "systemd-nspawn exited"
                time.sleep(0.5)
            assert state in ("running", "degraded"), f"container did not boot: {state!r}"
            box.sh(f"dpkg -i /mnt/deb/{podrun_deb.name} >/dev/null && podrun image import /mnt/rootfs demo >/dev/null")
            yield box
        finally:
            proc.terminate()  # an orderly shutdown of the container
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    deadline = time.monotonic() + 15  # emptied cgroups can be busy for a moment after the container ends
    while (left := sorted(peer_cgroup_dirs() - cgroups_before)) and time.monotonic() < deadline:
        for top in left:
            _rmdir_tree(top)
        time.sleep(0.2)
    assert left == []


def test_notify_unit_runs_logs_and_stops_cleanly(booted: Booted) -> None:
    booted.sh("podrun generate unit --net none demo --name web --exec /bin/sh -- -c "
              "'echo hello-journal; exec sleep 1000' > /etc/systemd/system/web.service && systemctl daemon-reload")
    booted.sh("systemctl start web.service")  # Type=notify: returns once podrun sent READY=1
    assert booted.sh("systemctl is-active web.service").stdout.strip() == "active"
    main_pid = booted.sh("systemctl show -p MainPID --value web.service").stdout.strip()
    comm = booted.sh(f"cat /proc/{main_pid}/cmdline | tr '\\0' ' '").stdout
    assert "stages/default/run" in comm  # the unit's main process is the pod's supervisor
    entries: list[dict[str, str]] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not entries:
        out = booted.sh("journalctl -t web -o json --no-pager", check=False).stdout
        entries = [json.loads(line) for line in out.splitlines() if line.strip()]
        time.sleep(0.2)
    assert any(e["MESSAGE"] == "hello-journal" and len(e.get("PODRUN_POD_UUID", "")) == 36 for e in entries), entries
    booted.sh("systemctl stop web.service")
    assert booted.sh("systemctl is-active web.service", check=False).stdout.strip() == "inactive"
    pods = json.loads(booted.sh("podrun list --format json").stdout)
    assert [p["exit_code"] for p in pods if p["apps"][0]["name"] == "web"] == [143]


def test_socket_activated_unit(booted: Booted) -> None:
    port = 18099
    socket_unit = f"[Socket]\nListenStream=127.0.0.1:{port}\n"
    service_unit = ("[Service]\nType=notify\nKillMode=mixed\nExecStart=/usr/bin/podrun run --net none "
                    "--volume sd,kind=host,source=/mnt/sdapp,readOnly=true demo --mount volume=sd,target=/sdapp "
                    "--exec /sdapp -- accept hello-activated\n")
    booted.sh(f"printf '%s' '{socket_unit}' > /etc/systemd/system/echo.socket && "
              f"printf '%s' '{service_unit}' > /etc/systemd/system/echo.service && "
              "systemctl daemon-reload && systemctl start echo.socket")
    client = ("import socket; c = socket.create_connection(('127.0.0.1', PORT), timeout=60); "
              "print(c.makefile().read(), end='')").replace("PORT", str(port))
    out = booted.sh(f'python3 -c "{client}"', timeout=90).stdout  # from inside: the container's network
    assert out == "hello-activated\n"


def test_register_runs_a_shell_started_pod_in_its_own_scope(booted: Booted) -> None:
    booted.sh("(podrun run --register --uuid-file-save /tmp/reg-uuid --net none demo --exec /bin/sleep -- 600 "
              ">/dev/null 2>&1 &) && sleep 0.2 && podrun status --wait-ready=20s $(cat /tmp/reg-uuid) >/dev/null")
    uuid = booted.sh("cat /tmp/reg-uuid").stdout.strip()
    unit = f"podrun-{uuid}.scope"
    assert booted.sh(f"systemctl is-active {unit}").stdout.strip() == "active"
    cgroup = booted.sh(f"systemctl show -p ControlGroup --value {unit}").stdout.strip()
    tree = booted.sh(f"ls /sys/fs/cgroup{cgroup}").stdout.split()
    assert f"pod-{uuid}" in tree and "supervisor" in tree  # the pod's cgroups below the scope (Delegate=yes)
    booted.sh(f"systemctl stop {unit}")
    booted.sh(f"podrun status --wait=20s {uuid} >/dev/null")
    assert booted.sh(f"systemctl is-active {unit}", check=False).stdout.strip() != "active"


def test_gc_timer_is_loaded(booted: Booted) -> None:
    assert booted.sh("systemctl is-enabled podrun-gc.timer").stdout.strip() == "enabled"
    assert booted.sh("systemctl show -p LoadState --value podrun-gc.service").stdout.strip() == "loaded"
