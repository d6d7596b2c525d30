"""Pods as services of real supervisors from Debian's packages, no PID 1 needed (issue 17,
man podrun-init(7)): s6 (s6-svscan, s6-supervise, s6-log; readiness by ``--ready-fd`` and
``s6-svwait -U``), runit (runsv, svlogd; readiness by the ``check`` script and ``sv check``) and
an LSB script driving start-stop-daemon through ``--pid-file`` (and its default logger, to a /dev/log
of the test's in a private mount namespace), and supervisord (its own
config and socket in the test's directory; readiness by ``podrun status --wait-ready``).  The service files are the
ones ``podrun generate service`` writes.  For each: the supervisor's own readiness, the app's
line in its logger, ``kill -9`` of podrun (a new pod; ``gc`` collects the old one) and a clean
stop by the supervisor's stop command (exit 143, no cgroup, nothing running); a pod of two apps
under s6-log has each line tagged with its app.  Every process
a test starts is ended in its teardown, even on failure."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, leftover_netns, leftover_pod_interfaces
from tests.integration.test_net import _forwards, _free_port, _leases, _wait_no_interfaces
from tests.integration.test_run import Pods, demo_pods

# a line for the logger, then HTTP (busybox httpd serving the pod's /etc) until the app's stop
APP = "echo hello-from-web; exec httpd -f -p 80 -h /etc"
TOOLS = ("s6-svscan", "s6-svc", "s6-svwait", "s6-svstat", "s6-log", "runsv", "sv", "svlogd", "start-stop-daemon",
         "supervisord", "supervisorctl")


@dataclass
class Service:
    pods: Pods
    base: Path
    podrun: Path  # this checkout's podrun, called as an installed one is
    port: int = field(default_factory=_free_port)  # the host port forwarded to the pod's httpd
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stops: list[Callable[[], object]] = field(default_factory=list)

    def generate(self, init: str, output: Path, *extra: str, more_apps: tuple[str, ...] = ()) -> None:
        self.pods.run("generate", "service", "--init", init, "--podrun-path", str(self.podrun), "--output",
                      str(output), *extra, "--port", f"80:{self.port}", "demo", "--exec", "/bin/sh", "--", "-c", APP,
                      *more_apps, check=True)

    def assert_serves(self, uuid: str) -> None:
        """The pod answers HTTP on the forwarded host port (its /etc/hostname names it)."""
        res = subprocess.run(["curl", "-sS", "-m", "10", f"http://127.0.0.1:{self.port}/hostname"],
                             capture_output=True, text=True)
        assert res.stdout == f"podrun-{uuid[:8]}\n", res.stderr

    def spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        """A supervisor in its own session, its output in a file; ended by the teardown."""
        out = open(self.base / f"{Path(argv[0]).name}.out", "ab")  # the child keeps its own copy
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def running(self) -> list[dict[str, object]]:
        listed = json.loads(self.pods.run("list", "--format", "json", check=True).stdout)
        return [p for p in listed if p["state"] == "running"]

    def status(self, uuid: str) -> dict[str, object]:
        return json.loads(self.pods.run("status", uuid, "--format", "json", check=True).stdout)  # type: ignore[no-any-return]

    def one_running_pod(self, other_than: str = "", timeout: float = 60) -> str:
        """The UUID of the one running pod (not *other_than*), once it is there."""
        uuid = wait_for(lambda: next((str(p["uuid"]) for p in self.running() if p["uuid"] != other_than), ""),
                        timeout, "a running pod")
        assert [p["uuid"] for p in self.running()] == [uuid]
        return uuid

    def assert_collected(self, uuid: str) -> None:
        """After kill -9 of its podrun: gc collects the old pod (its lock is gone with it)."""
        self.pods.run("gc", "--grace-period", "0s", check=True)
        listed = json.loads(self.pods.run("list", "--format", "json", check=True).stdout)
        assert uuid not in [p["uuid"] for p in listed]
        assert no_cgroup(uuid)

    def assert_stopped_cleanly(self, uuid: str) -> None:
        st = self.status(uuid)
        # exited, and marked for collection by the service's finish script (gc --mark-only)
        assert st["state"] in ("exited", "exited-garbage") and st["exit_code"] == 143, st  # SIGTERM: 128+15
        assert no_cgroup(uuid) and self.running() == []
        assert f"tcp . {self.port}" not in _forwards()  # the port forward is gone with the pod
        assert uuid not in _leases(self.pods).values()  # and its address lease


def no_cgroup(uuid: str) -> bool:
    return not list(Path("/sys/fs/cgroup").glob(f"**/pod-{uuid}"))


def wait_for(probe: Callable[[], str], timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.1)
    return value


def wait_for_line(path: Path, text: str, timeout: float = 30) -> None:
    wait_for(lambda: "yes" if path.exists() and text in path.read_text(errors="replace") else "", timeout,
             f"line {text!r} in {path}")


def _ours(pid: int, base: str) -> bool:
    """Whether process *pid* is one this test started: its command line or working directory
    is in the test's own directory (the supervisors, their loggers, podrun, the apps' sleep)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    return base in cmdline or cwd.startswith(base)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    assert not missing, f"install s6, runit and supervisor (scripts/install-deps.sh): {missing} missing"
    pods = demo_pods(tmp_path)  # a data dir of this test's own
    wrapper = tmp_path / "podrun"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m podrun \"$@\"\n")
    wrapper.chmod(0o755)
    svc = Service(pods, tmp_path, wrapper)
    try:
        yield svc
    finally:
        for stop in svc.stops:  # the supervisor's own way down first: the pods end cleanly
            try:
                stop()
            except Exception:  # a teardown goes on
                pass
        for proc in svc.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        # what is left after a failure (an s6-supervise or runsv child respawning podrun, a
        # logger): killed until nothing of ours runs; the pods it leaves are gc's (a crash)
        for _ in range(10):
            left = [pid for pid in (int(p) for p in os.listdir("/proc") if p.isdigit())
                    if pid != os.getpid() and _ours(pid, str(tmp_path))]
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
        pods.cleanup()  # a pod left running is stopped, then everything collected
        assert pods.run("list", "--format", "json").stdout.strip() == "[]"


def test_s6_readiness_logs_restart_and_stop(service: Service) -> None:
    scan = service.base / "scan"
    web = scan / "web"
    service.generate("s6", web)
    assert (web / "notification-fd").read_text() == "3\n"
    service.spawn("s6-svscan", str(scan))
    service.stops.append(lambda: subprocess.run(["s6-svscanctl", "-t", str(scan)], timeout=30))
    wait_for(lambda: "yes" if (web / "supervise" / "status").exists() else "", 30, "s6-supervise of the service")
    # readiness by s6's own means: the newline podrun writes to the notification fd
    res = subprocess.run(["s6-svwait", "-U", "-t", "60000", str(web)], capture_output=True, text=True, timeout=70)
    assert res.returncode == 0, res.stderr
    uuid = service.one_running_pod()
    assert service.status(uuid)["ready"], "s6 saw the pod ready before podrun's own ready record"
    service.assert_serves(uuid)
    wait_for_line(web / "log" / "main" / "current", "hello-from-web")  # through s6-log
    pid = int(subprocess.run(["s6-svstat", "-o", "pid", str(web)], capture_output=True, text=True,
                             check=True).stdout)
    os.kill(pid, signal.SIGKILL)
    new = service.one_running_pod(other_than=uuid)  # s6-supervise ran it again: a new pod
    assert subprocess.run(["s6-svwait", "-U", "-t", "60000", str(web)], timeout=70).returncode == 0
    service.assert_collected(uuid)
    service.assert_serves(new)  # the old pod's forward of the same port went with it
    res = subprocess.run(["s6-svc", "-wD", "-d", "-T", "30000", str(web)], capture_output=True, text=True,
                         timeout=40)
    assert res.returncode == 0, res.stderr
    service.assert_stopped_cleanly(new)
    assert "down (exitcode 143)" in subprocess.run(["s6-svstat", str(web)], capture_output=True, text=True).stdout


def test_s6_log_tags_the_lines_of_a_pod_of_several_apps(service: Service) -> None:
    scan = service.base / "scan"
    web = scan / "web"
    service.generate("s6", web, more_apps=("---", "demo", "--name", "db", "--exec", "/bin/sh", "--", "-c",
                                           "echo hello-from-db; echo db-err >&2; printf db-tail; exec sleep 1000"))
    service.spawn("s6-svscan", str(scan))
    service.stops.append(lambda: subprocess.run(["s6-svscanctl", "-t", str(scan)], timeout=30))
    wait_for(lambda: "yes" if (web / "supervise" / "status").exists() else "", 30, "s6-supervise of the service")
    assert subprocess.run(["s6-svwait", "-U", "-t", "60000", str(web)], timeout=70).returncode == 0
    uuid = service.one_running_pod()
    current = web / "log" / "main" / "current"
    wait_for_line(current, "db | db-err")
    wait_for_line(current, "demo | hello-from-web")
    res = subprocess.run(["s6-svc", "-wD", "-d", "-T", "30000", str(web)], capture_output=True, text=True,
                         timeout=40)
    assert res.returncode == 0, res.stderr
    service.assert_stopped_cleanly(uuid)
    # one s6-log line per app line (s6-log adds a timestamp), each tagged with its app; the
    # partial last line came out ended when its app stopped
    lines = [line.partition("  ")[2] for line in current.read_text().splitlines()]  # after "DATE TIME  "
    assert sorted(line for line in lines if " | " in line) == [
        "db | db-err", "db | db-tail", "db | hello-from-db", "demo | hello-from-web"], lines


def test_runit_check_logs_restart_and_stop(service: Service) -> None:
    web = service.base / "sv" / "web"
    service.generate("runit", web)
    service.spawn("runsv", str(web))
    service.stops.append(lambda: (subprocess.run(["sv", "-w", "30", "down", str(web)], timeout=40),
                                  subprocess.run(["sv", "exit", str(web)], timeout=10)))
    wait_for(lambda: "yes" if (web / "supervise" / "ok").exists() else "", 30, "runsv of the service")
    # readiness without a protocol: `sv -w N up` waits until the service's check (podrun status
    # --wait-ready) succeeds
    res = subprocess.run(["sv", "-w", "60", "up", str(web)], capture_output=True, text=True, timeout=70)
    assert res.returncode == 0 and res.stdout.startswith("ok: run:"), res.stdout
    uuid = service.one_running_pod()
    assert (web / "pod.uuid").read_text().strip() == uuid
    service.assert_serves(uuid)
    wait_for_line(web / "log" / "main" / "current", "hello-from-web")  # through svlogd
    os.kill(int((web / "supervise" / "pid").read_text()), signal.SIGKILL)
    new = service.one_running_pod(other_than=uuid)
    assert subprocess.run(["sv", "-w", "60", "check", str(web)], capture_output=True, timeout=70).returncode == 0
    service.assert_collected(uuid)
    service.assert_serves(new)
    res = subprocess.run(["sv", "-w", "30", "down", str(web)], capture_output=True, text=True, timeout=40)
    assert res.returncode == 0 and res.stdout.startswith("ok: down:"), res.stdout
    service.assert_stopped_cleanly(new)


def test_lsb_script_with_start_stop_daemon_and_pid_file(service: Service) -> None:
    init = service.base / "init.d"
    service.generate("sysv", init, "--name", "web")
    script = init / "web"
    pid_file = service.base / "run" / "web.pid"
    pid_file.parent.mkdir()
    log = service.base / "web.log"
    env = dict(os.environ, PIDFILE=str(pid_file), LOG_COMMAND=f"cat >>{log}")  # no syslog daemon here

    def lsb(action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["sh", str(script), action], env=env, capture_output=True, text=True, timeout=60)

    service.stops.append(lambda: lsb("stop"))
    assert lsb("start").returncode == 0
    uuid = service.one_running_pod()
    assert service.pods.run("status", "--wait-ready=30s", uuid).returncode == 0
    pid = int(wait_for(lambda: pid_file.read_text() if pid_file.exists() else "", 30, "PID file"))
    # the PID file names the pod's supervisor (podrun run, exec'd into stage1): pid 1 is its child
    init_pid = str(service.status(uuid)["pid"])
    assert init_pid in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert lsb("status").returncode == 0
    service.assert_serves(uuid)
    wait_for_line(log, "hello-from-web")
    assert lsb("start").returncode == 0 and [p["uuid"] for p in service.running()] == [uuid]  # already running
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: "" if Path(f"/proc/{pid}").exists() else "gone", 10, "end of the killed podrun")
    assert pid_file.read_text() == f"{pid}\n"  # a stale PID file, as any killed daemon leaves
    assert lsb("status").returncode == 1  # "program is dead and the PID file exists"
    assert lsb("start").returncode == 0  # start-stop-daemon sees the PID is dead
    new = service.one_running_pod(other_than=uuid)
    assert service.pods.run("status", "--wait-ready=30s", new).returncode == 0
    service.assert_collected(uuid)
    service.assert_serves(new)
    new_pid = int(wait_for(lambda: pid_file.read_text() if pid_file.exists() else "", 30, "new PID file"))
    assert new_pid != pid
    res = lsb("stop")  # TERM, wait up to 30 s, then KILL
    assert res.returncode == 0, res.stderr
    assert not Path(f"/proc/{new_pid}").exists()
    assert not pid_file.exists()  # removed by the supervisor at the pod's end
    service.assert_stopped_cleanly(new)
    assert lsb("status").returncode == 3  # not running


# A mount namespace whose /dev has a /dev/log of the test's: the host's /dev is a devtmpfs
# (shared with the host and every other namespace), so nothing is created there.  A tmpfs goes
# over /dev holding a bind mount of each entry of the host's (device nodes; pts, shm, net and
# the other directories with what is mounted beneath them; the fd, stdin, stdout and stderr
# links copied), and /dev/log links to the test's socket.  The namespace, and every mount in
# it, ends with its last process.
PRIVATE_DEV = r"""
set -eu
host=$1 sock=$2 ready=$3
mount --rbind /dev "$host"
mount -t tmpfs -o mode=755,nosuid podrun-test-dev /dev
for src in "$host"/* "$host"/.[!.]*; do
    name=${src##*/}
    { [ -e "$src" ] || [ -L "$src" ]; } && [ "$name" != log ] || continue
    if [ -L "$src" ]; then ln -s "$(readlink "$src")" "/dev/$name"
    elif [ -d "$src" ]; then mkdir "/dev/$name" && mount --rbind "$src" "/dev/$name"
    else : >"/dev/$name" && mount --bind "$src" "/dev/$name"
    fi
done
umount -l "$host"
ln -s "$sock" /dev/log
: >"$ready"
exec sleep infinity
"""


def _dev_state() -> tuple[list[str], tuple[int, int] | None]:
    """The host's /dev entries, and what its /dev/log is (absent on this machine; a syslog
    daemon's socket or journald's link elsewhere)."""
    log = os.lstat("/dev/log") if os.path.lexists("/dev/log") else None
    return sorted(os.listdir("/dev")), None if log is None else (log.st_ino, log.st_mode)


def _in_mount_namespace(namespace: str) -> list[int]:
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") == namespace:
                found.append(pid)
        except OSError:
            pass  # ended meanwhile
    return found


def _syslog_message(sock: socket.socket, text: str, timeout: float) -> str:
    """The first datagram on *sock* that holds *text* (all that came, in the failure)."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no {text!r} through syslog after {timeout} s; got {seen}"
        if select.select([sock], [], [], left)[0]:
            seen.append(sock.recv(65536).decode(errors="replace"))
            if text in seen[-1]:
                return seen[-1]


def test_lsb_script_logs_through_logger_by_default(service: Service) -> None:
    """The LSB script's default LOG_COMMAND (``logger -t NAME -p daemon.info``): the app's lines
    reach syslog at /dev/log, here a datagram socket the test reads in a mount namespace of the
    script's own (this machine runs no syslog daemon)."""
    missing = [t for t in ("unshare", "nsenter", "logger") if shutil.which(t) is None]
    assert not missing, f"util-linux and bsdutils are Debian's essentials: {missing} missing"
    init = service.base / "init.d"
    service.generate("sysv", init, "--name", "web")
    script = init / "web"
    assert 'LOG_COMMAND=${LOG_COMMAND:-"logger -t web -p daemon.info"}' in script.read_text()
    pid_file = service.base / "web.pid"
    env = {k: v for k, v in os.environ.items() if k != "LOG_COMMAND"}  # the script's default
    env["PIDFILE"] = str(pid_file)
    host_dev, interfaces, netns = _dev_state(), leftover_pod_interfaces(), leftover_netns()
    host_dir, ready = service.base / "host-dev", service.base / "dev-ready"
    host_dir.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(service.base / "syslog.sock"))
        holder = service.spawn("unshare", "--mount", "--propagation", "private", "sh", "-c", PRIVATE_DEV,
                               "private-dev", str(host_dir), str(service.base / "syslog.sock"), str(ready))
        wait_for(lambda: "yes" if ready.exists() or holder.poll() is not None else "", 30, "the private /dev")
        assert holder.poll() is None, (service.base / "unshare.out").read_text()
        namespace = os.readlink(f"/proc/{holder.pid}/ns/mnt")
        assert namespace != os.readlink("/proc/self/ns/mnt")

        def lsb(action: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["nsenter", f"--target={holder.pid}", "--mount", "sh", str(script), action],
                                  env=env, capture_output=True, text=True, timeout=60)

        service.stops.append(lambda: lsb("stop"))
        res = lsb("start")
        assert res.returncode == 0, res.stderr
        uuid = service.one_running_pod()
        message = _syslog_message(syslog, "hello-from-web", 60)
        # RFC 3164 as logger sends it to a local socket: <daemon.info = 3*8+6>TIMESTAMP TAG: MSG
        assert re.fullmatch(r"<30>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d web: hello-from-web", message), message
        service.assert_serves(uuid)
        res = lsb("stop")
        assert res.returncode == 0, res.stderr
        service.assert_stopped_cleanly(uuid)
        assert not pid_file.exists()
    _wait_no_interfaces(interfaces)  # the pod's veth
    assert leftover_netns() == netns
    # podrun, the logger and the script's shell ended with the pod: only the holder is left
    wait_for(lambda: "yes" if _in_mount_namespace(namespace) == [holder.pid] else "", 30,
             "the end of every process but the holder in the namespace")
    holder.kill()
    holder.wait(timeout=10)
    assert _in_mount_namespace(namespace) == []  # so the namespace and its mounts are gone
    assert _dev_state() == host_dev  # the host's untouched (its own /dev/log, where it has one, too)


def test_supervisord_program_logs_restart_and_stop(service: Service) -> None:
    conf_d = service.base / "conf.d"
    service.generate("supervisord", conf_d, "--name", "web")
    uuid_file = service.base / "web.uuid"
    log = service.base / "web.log"
    section = conf_d / "web.conf"
    # the generated section, its two host paths moved into the test's directory
    section.write_text(section.read_text().replace("/run/podrun-web.uuid", str(uuid_file))
                       .replace("/var/log/podrun-web.log", str(log)))
    conf = service.base / "supervisord.conf"
    sock = service.base / "supervisor.sock"
    conf.write_text(f"""[unix_http_server]
file={sock}
[supervisord]
nodaemon=true
logfile={service.base}/supervisord.log
pidfile={service.base}/supervisord.pid
childlogdir={service.base}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{sock}
[include]
files = {conf_d}/*.conf
""")

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["supervisorctl", "-c", str(conf), *args], capture_output=True, text=True, timeout=60)

    service.spawn("supervisord", "-c", str(conf))
    service.stops.append(lambda: (ctl("stop", "web"), ctl("shutdown")))
    wait_for(lambda: "yes" if "RUNNING" in ctl("status", "web").stdout else "", 60, "RUNNING web")
    uuid = service.one_running_pod()
    wait_for(lambda: uuid_file.read_text().strip() if uuid_file.exists() else "", 10, "the UUID file")
    # no readiness protocol: the section's comment names podrun status --wait-ready
    assert service.pods.run("status", "--uuid-file", str(uuid_file), "--wait-ready=30s").returncode == 0
    service.assert_serves(uuid)
    wait_for_line(log, "hello-from-web")  # supervisord's log file of the program
    pid = int(ctl("pid", "web").stdout)
    os.kill(pid, signal.SIGKILL)  # not one of exitcodes=0,143: autorestart=unexpected restarts it
    new = service.one_running_pod(other_than=uuid)
    assert service.pods.run("status", "--wait-ready=30s", new).returncode == 0
    service.assert_collected(uuid)
    service.assert_serves(new)
    res = ctl("stop", "web")  # stopsignal=TERM
    assert res.returncode == 0 and "stopped" in res.stdout, res.stdout + res.stderr
    service.assert_stopped_cleanly(new)
    assert "STOPPED" in ctl("status", "web").stdout
