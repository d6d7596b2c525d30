"""podrun as a service of a real OpenRC (issue 17, man podrun-init(7)): a Debian 12 root whose
/sbin/init is sysvinit running OpenRC (tests/fixtures/debroot.py) booted with systemd-nspawn
--boot, the podrun .deb installed inside, and the script ``podrun generate service --init
openrc`` writes into /etc/init.d, run by OpenRC's own commands: ``rc-service web start`` returns
once the pod is ready (the script's start_post), supervise-daemon's pod serves HTTP through
``--port`` and its output reaches the script's log file, ``kill -9`` of podrun makes
supervise-daemon start a new pod (``gc`` collects the old one), ``restart`` waits for the pod it
makes, and ``rc-service web stop`` ends the pod cleanly (exit 143; no cgroup, veth, lease, port
forward, mount or process left); a start of a pod podrun refuses fails once supervise-daemon gives
up, not after start_post's 60 s.  Not on the host: OpenRC there would meddle with its own init."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.fixtures import nspawn
from tests.fixtures.debroot import debian_root
from tests.fixtures.nspawn import Booted
from tests.integration.test_init_systems import APP, wait_for

MACHINE = "podrun-openrc"
PORT = 18080  # in the container's own network namespace: no host port is taken
UUID_FILE = "/run/podrun-web.uuid"
LOG = "/var/log/podrun-web.log"


def _booted_to_default(box: Booted) -> bool:
    """OpenRC runs its default runlevel and starts nothing any more."""
    res = box.sh('[ "$(rc-status --runlevel)" = default ] && [ -z "$(ls /run/openrc/starting)" ]', check=False)
    return res.returncode == 0


@pytest.fixture(scope="module")
def openrc(tmp_path_factory: pytest.TempPathFactory, podrun_deb: Path) -> Iterator[Booted]:
    require_root()
    root = debian_root("openrc")
    binds = nspawn.podrun_binds(tmp_path_factory.mktemp("openrc"), podrun_deb)
    # sysvinit takes no SIGRTMIN+3 (nspawn's shutdown request): halt, which runs OpenRC's shutdown
    # (stopping the service), then powers the container off
    with nspawn.booted(root, MACHINE, binds, _booted_to_default, "logread | tail -n 40", halt="halt",
                       join_cgroup=True) as box:
        nspawn.install_podrun(box, podrun_deb)
        yield box


def _pods(box: Booted) -> list[dict[str, object]]:
    return json.loads(box.sh("podrun list --format json").stdout)  # type: ignore[no-any-return]


def _status(box: Booted, uuid: str) -> dict[str, object]:
    return json.loads(box.sh(f"podrun status --format json {uuid}").stdout)  # type: ignore[no-any-return]


def _running(box: Booted) -> list[str]:
    return [str(p["uuid"]) for p in _pods(box) if p["state"] == "running"]


def _ppid(box: Booted, pid: object) -> int:
    return int(box.sh(f"sed -n 's/^PPid:\\t//p' /proc/{pid}/status").stdout)


def _assert_serves(box: Booted, uuid: str) -> None:
    """The pod answers HTTP on the container's forwarded port (its /etc/hostname names it);
    the host's curl, in the container's network namespace."""
    res = subprocess.run(["nsenter", "-t", str(box.leader), "-n", "curl", "-sS", "-m", "10",
                          f"http://127.0.0.1:{PORT}/hostname"], capture_output=True, text=True)
    assert res.stdout == f"podrun-{uuid[:8]}\n", res.stderr


def _lines(box: Booted, text: str) -> int:
    """How many lines of the service's log file (supervise-daemon's output_log) hold *text*."""
    return int(box.sh(f"grep -c -F -- '{text}' {LOG} || true").stdout or 0)


def _processes(box: Booted, word: str) -> str:
    """The command lines of the container's processes that contain *word* (no procps there)."""
    script = (f"for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null; echo; done | grep -F -- {word} "
              "| grep -v -e 'grep -F' -e 'for p in' || true")
    return box.sh(script).stdout.strip()


def _traces(box: Booted) -> dict[str, list[str]]:
    """What a running pod has in the container (each empty once the pod is gone): its cgroups,
    its veth, its port forward, its address lease, and its mounts (the netns file)."""
    def lines(script: str) -> list[str]:
        return box.sh(script + " || true").stdout.split()
    return {
        "cgroups": lines("find /sys/fs/cgroup -name 'pod-*'"),
        "veths": lines("ip -br link | cut -d' ' -f1 | grep '^pr'"),
        "forwards": lines(f"nft list ruleset | grep -o ' {PORT} '"),
        "leases": lines("cat /var/lib/podrun/net/*/leases/* 2>/dev/null"),
        "mounts": lines("cut -d' ' -f5 /proc/self/mountinfo | grep -e ^/var/lib/podrun/ -e ^/run/podrun/"),
    }


def test_openrc_script_readiness_logs_respawn_and_stop(openrc: Booted) -> None:
    box = openrc
    box.sh(f"podrun generate service --init openrc --name web --output /etc/init.d --port 80:{PORT} demo "
           f"--exec /bin/sh -- -c '{APP}' >/dev/null")
    assert box.sh("head -n 1 /etc/init.d/web").stdout == "#!/sbin/openrc-run\n"
    try:
        # readiness by the script's own means: start returns once start_post's podrun status
        # --wait-ready saw every app of the new pod started
        box.sh("rc-service web start")
        assert "started" in box.sh("rc-service web status").stdout
        uuid = box.sh(f"cat {UUID_FILE}").stdout.strip()
        assert _running(box) == [uuid] and _status(box, uuid)["ready"]
        # the pod's supervisor is the process supervise-daemon started (its PID is OpenRC's pidfile)
        supervisor = _ppid(box, _status(box, uuid)["pid"])
        assert _ppid(box, supervisor) == int(box.sh("cat /run/supervise-web.pid").stdout)
        _assert_serves(box, uuid)
        wait_for(lambda: "yes" if _lines(box, "hello-from-web") == 1 else "", 30, f"the app's line in {LOG}")

        box.sh(f"kill -9 {supervisor}")  # supervise-daemon respawns podrun after respawn_delay: a new pod
        new = wait_for(lambda: next((u for u in _running(box) if u != uuid), ""), 60, "a new pod")
        box.sh(f"podrun status --wait-ready=30s {new} >/dev/null")
        assert box.sh(f"cat {UUID_FILE}").stdout.strip() == new and _running(box) == [new]
        assert "started" in box.sh("rc-service web status").stdout
        box.sh("podrun gc --grace-period 0s >/dev/null")  # the killed podrun's pod: its lock went with it
        assert uuid not in [p["uuid"] for p in _pods(box)]
        _assert_serves(box, new)  # the old pod's forward of the same port went with it
        wait_for(lambda: "yes" if _lines(box, "hello-from-web") == 2 else "", 30, f"the new pod's line in {LOG}")

        # a restart's start_post waits for the pod it made, not for the one before (whose UUID
        # file is still there when supervise-daemon forks the new podrun)
        box.sh("rc-service web restart")
        last = box.sh(f"cat {UUID_FILE}").stdout.strip()
        assert last != new and _running(box) == [last] and _status(box, last)["ready"]
        assert _status(box, new)["exit_code"] == 143
        _assert_serves(box, last)

        assert "supervise-daemon web" in _processes(box, "supervise-daemon")
        running = _traces(box)
        assert all(running.values()), running  # what the checks after the stop look for is there
        assert any(last in c for c in running["cgroups"]), running
        box.sh("rc-service web stop")  # SIGTERM to podrun through supervise-daemon; stop_post marks the pod
        assert "stopped" in box.sh("rc-service web status", check=False).stdout
        st = _status(box, last)
        assert st["state"] == "exited-garbage" and st["exit_code"] == 143, st  # SIGTERM: 128+15
        assert _running(box) == []
        left = _traces(box)
        assert not any(left.values()), left
        assert _processes(box, "supervise-daemon") == "" and _processes(box, "podrun") == ""
    finally:
        box.sh("rc-service web stop; podrun gc --grace-period 0s", check=False)


def test_openrc_start_fails_once_supervise_daemon_gives_up(openrc: Booted) -> None:
    """podrun refuses an image that is not in the store (--pull-policy never) at every start:
    supervise-daemon gives up after respawn_max=5 respawns and removes its pidfile, and start_post,
    which checks for it while it waits for the UUID file, fails then (not by its 60 s timeout)."""
    box = openrc
    box.sh("podrun generate service --init openrc --name nopod --output /etc/init.d --pull-policy never "
           "nosuchimage --exec /bin/true >/dev/null")
    error = "podrun: image 'nosuchimage' is not in the store"
    try:
        res = box.sh("rc-service nopod start", check=False)
        out = res.stdout + res.stderr
        assert res.returncode != 0, out
        assert error in out and "no pod after 60 s" not in out, out  # start_post's eerror names the reason
        # supervise-daemon's output_log: podrun's error at each of its 6 starts (the first and 5 respawns)
        assert box.sh(f"grep -c -F -- \"{error}\" /var/log/podrun-nopod.log").stdout == "6\n"
        assert box.sh("test -e /run/supervise-nopod.pid", check=False).returncode == 1
        assert "stopped" in box.sh("rc-service nopod status", check=False).stdout
        assert _processes(box, "nopod") == "" and _processes(box, "nosuchimage") == ""
        assert _running(box) == []
    finally:
        box.sh("rc-service nopod stop; rm -f /etc/init.d/nopod", check=False)
