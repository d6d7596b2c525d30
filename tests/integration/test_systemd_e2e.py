"""podrun under a real systemd as PID 1: a minimal Debian root (tests/fixtures/debroot.py)
booted with systemd-nspawn --boot (tests/fixtures/nspawn.py), the podrun .deb installed inside,
then a Type=notify pod unit (active, main PID the supervisor, journal lines tagged, clean stop),
a socket-activated pod unit, and the gc timer loaded."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_root
from tests.fixtures import nspawn
from tests.fixtures.debroot import debian_root
from tests.fixtures.nspawn import Booted

MACHINE = "podrun-e2e"


def _running(box: Booted) -> bool:
    return box.sh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory, podrun_deb: Path) -> Iterator[Booted]:
    require_root()
    root = debian_root()
    work = tmp_path_factory.mktemp("e2e")
    sdapp = work / "sdapp"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(sdapp), str(ROOT / "tests" / "fixtures" / "sdapp" / "sdapp.c")],
                   check=True, capture_output=True)
    binds = [*nspawn.podrun_binds(work, podrun_deb), f"--bind-ro={sdapp}:/mnt/sdapp"]
    with nspawn.booted(root, MACHINE, binds, _running, "journalctl -n 30 --no-pager") as box:
        nspawn.install_podrun(box, podrun_deb)
        yield box


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
