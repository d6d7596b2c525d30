"""stage1 flavor ``default``: the pod supervisor.

Process chain (see man/podrun-stage1.7)::

    podrun run (stage0) --exec--> this module, same PID, holding the pod lock ("supervisor")
        unshare mount/UTS/IPC/net(/cgroup) + PID namespaces; overlay root per app
        └─ fork: pod pid 1 ("init", first process of the new PID namespace)
              └─ fork per app: stage2 launcher -> execve(app)

The supervisor stays in the host PID namespace so the unit's main PID (or the shell's child)
is the pod; it forwards SIGTERM/SIGINT/SIGHUP to init and exits with init's exit code.  Init
reaps every process of the pod, records each app's exit status and applies the exit rule.
Init dies with the supervisor (PR_SET_PDEATHSIG), and every app dies with init (the kernel
kills a PID namespace whose first process exits), so nothing outlives a ``kill -9``.  All
mounts live in the pod's private mount namespace and vanish with it.
"""

from __future__ import annotations

import os
import select
import sys
import time

from podrun import faults, fsutil
from podrun.isolation import cgroups
from podrun.isolation import syscalls as sc
from podrun.lean import json_dumps, signal
from podrun.pod.manifest import MANIFEST, AppSpec, PodManifest
from podrun.stage1 import app as stage2
from podrun.stage1 import confine
from podrun.stage1.logrelay import Relay
from podrun.stage1.mountplan import app_plan
from podrun.stage1.pod import default_hostname, write_pod_files
from podrun.stage1.sdglue import Systemd

# Start-up budget: this module and everything it imports stay off dataclasses, json, re, enum,
# typing, pathlib, signal, socket, functools and contextlib (podrun.lean; tests/unit/test_hot_path.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from podrun.net import helper
    from podrun.stage1.mountplan import Op

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL when the pod stops other apps
EXIT_STAGE1_FAILED = 254


def _bring_up_loopback() -> None:
    import fcntl
    import struct

    if TYPE_CHECKING:
        import socket as _socket
    else:
        import _socket  # the socket module imports enum, selectors…: ~8 ms

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), siocgifflags, ifr))[1]
        fcntl.ioctl(s.fileno(), siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))
    except OSError as exc:
        hint = " (podrun needs CAP_NET_ADMIN)" if exc.errno == 1 else ""
        raise OSError(exc.errno, f"bringing up lo in the pod's network namespace: {exc.strerror}{hint}") from None
    finally:
        s.close()


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def mount_app_root(pod_dir: str, app: AppSpec) -> str:
    """Overlay root for *app*: the image's layers under an upper dir in the pod dir."""
    base = os.path.join(pod_dir, "apps", app.name)
    for sub in ("upper", "work", "rootfs"):
        _mkdirs(os.path.join(base, sub))
    lowers = list(reversed(app.lower_dirs)) or [os.path.join(base, "empty")]
    if not app.lower_dirs:
        _mkdirs(os.path.join(base, "empty"))
    # Overlay wants the top layer first.  Layer paths are made relative to their common
    # directory (we chdir there) so that many layers fit in one page of mount options.
    common = os.path.commonpath(lowers) if len(lowers) > 1 else os.path.dirname(lowers[0])
    os.chdir(common)
    lowerdir = ":".join(os.path.relpath(p, common) for p in lowers)
    data = f"lowerdir={lowerdir},upperdir={base}/upper,workdir={base}/work"
    sc.mount("overlay", f"{base}/rootfs", "overlay", sc.MS_NODEV, data)
    os.chdir("/")
    return f"{base}/rootfs"


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status)


class Init:
    """The pod's pid 1: start apps, reap, forward signals, record statuses, apply the exit rule."""

    def __init__(self, pod_dir: str, manifest: PodManifest, roots: dict[str, str], files: dict[str, str],
                 app_cgroups: dict[str, cgroups.CgroupTree], sd: Systemd) -> None:
        self.sd = sd
        self.app_cgroups = app_cgroups
        self.pod_dir = pod_dir
        self.manifest = manifest
        self.roots = roots
        self.files = files
        self.running: dict[int, str] = {}
        self.first_failure: int | None = None
        self.stopping = False

    def _plan_for(self, app: AppSpec) -> list[Op]:
        vols = {v.name: v for v in self.manifest.volumes}
        binds = []
        for m in app.mounts:
            vol = vols[m.volume]
            source = vol.source if vol.kind == "host" else os.path.join(self.pod_dir, "volumes", vol.name)
            assert source is not None
            binds.append((source, m.target, vol.read_only, not os.path.isdir(source)))
        files = dict(self.files)
        if self.sd.app_socket:
            from podrun.systemd.notify import APP_SOCKET

            files[APP_SOCKET] = self.sd.app_socket  # NOTIFY_SOCKET of the app (--notify=app)
        return app_plan(files, binds)

    def _stop_others(self, sig: int) -> None:
        for pid in self.running:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._stop_others(signum)
        if signum != signal.SIGHUP:
            self.stopping = True

    def _on_alarm(self, _signum: int, _frame: object) -> None:
        self._stop_others(signal.SIGKILL)

    def run(self) -> NoReturn:
        for sig in FORWARDED:
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_alarm)
        status_dir = os.path.join(self.pod_dir, "status")
        _mkdirs(status_dir)
        relay = None if self.manifest.interactive else Relay(self.manifest.uuid if self.sd.journal else None)
        gates: list[tuple[int, str, int]] = []  # (pid, app, write end of its cgroup gate)
        for app in self.manifest.apps:
            try:
                plan = self._plan_for(app)
                conf = confine.prepare(app, self.pod_dir)
            except Exception as exc:
                sys.stderr.write(f"podrun: app {app.name}: {exc}\n")
                self._stop_others(signal.SIGKILL)
                os._exit(EXIT_STAGE1_FAILED)
            out = relay.add_app(os.path.join(self.pod_dir, "apps", app.name, "log")) if relay else None
            gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
            pid = os.fork()
            if pid == 0:
                for sig in (*FORWARDED, signal.SIGALRM, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                signal.set_wakeup_fd(-1)
                os.close(gate_w)
                for _, _, other in gates:
                    os.close(other)
                if out is not None:
                    os.dup2(out[0], 1)
                    os.dup2(out[1], 2)
                first = app is self.manifest.apps[0]
                stage2.launch(app, self.roots[app.name], plan, conf, self.manifest.interactive, frozenset(),
                              cgroup_gate=gate_r, listen=self.sd.listen if first else ([], ""),
                              extra_env=self.sd.app_env())
            os.close(gate_r)
            gates.append((pid, app.name, gate_w))
            self.running[pid] = app.name
            if out is not None:
                os.close(out[0])
                os.close(out[1])
        self._place_apps(gates)
        _write_text(os.path.join(self.pod_dir, "ready"), f"{time.time():.6f}\n")
        self.sd.apps_started()
        faults.checkpoint("stage1:apps-started")  # kills pid 1: the supervisor sees it die
        codes: dict[str, int] = {}
        while self.running:
            if relay is not None:
                relay.wait(None)  # output, or a signal (SIGCHLD included) through the wakeup fd
            for pid, status in _reap(block=relay is None):
                name = self.running.pop(pid, None)
                if name is not None:  # else an orphan re-parented to us: reaped, nothing to record
                    codes[name] = self._finished(status_dir, name, status)
        if relay is not None:
            relay.drain(0.5)
        result = 0 if self.first_failure is None else self.first_failure
        if len(self.manifest.apps) == 1:
            result = codes.get(self.manifest.apps[0].name, result)
        os._exit(result)

    def _place_apps(self, gates: list[tuple[int, str, int]]) -> None:
        """Move each forked app into its cgroup, then open its gate.  Done here, after every
        fork, rather than by the app itself: the first cgroup migration of a burst waits for an
        RCU grace period (~10 ms here), which thus overlaps the apps' own mount work instead of
        delaying each of them in turn.  An app never runs its image's code before its gate opens."""
        for pid, name, gate_w in gates:
            try:
                self.app_cgroups[name].add_process(pid)
                os.write(gate_w, b"1")
            except (ProcessLookupError, BrokenPipeError):
                pass  # the app failed before its gate (and said why): reaped and recorded as usual
            except OSError as exc:
                if _ended(pid):
                    continue
                sys.stderr.write(f"podrun: app {name}: joining its cgroup: {exc}\n")
                self._stop_others(signal.SIGKILL)
                os._exit(EXIT_STAGE1_FAILED)
            finally:
                os.close(gate_w)

    def _finished(self, status_dir: str, name: str, status: int) -> int:
        code = _exit_code(status)
        _record(status_dir, name, code, status)
        if code != 0 and self.first_failure is None:
            self.first_failure = code
            if self.running:  # rkt: one failing app stops the pod
                self._stop_others(signal.SIGTERM)
                signal.alarm(int(STOP_TIMEOUT))
        return code


def _ended(pid: int) -> bool:
    """Whether child *pid* has exited (a zombie not yet reaped counts)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0] == b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True


def _reap(block: bool) -> list[tuple[int, int]]:
    """Every child that has ended (at least one when *block*)."""
    out: list[tuple[int, int]] = []
    flags = 0 if block else os.WNOHANG
    while True:
        try:
            pid, status = os.waitpid(-1, flags)
        except ChildProcessError:
            return out
        if pid == 0:
            return out
        out.append((pid, status))
        flags = os.WNOHANG


def _write_text(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _record(status_dir: str, name: str, code: int, status: int) -> None:
    doc = {
        "exit_code": code,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "finished": time.time(),
    }
    # Atomic but not fsynced (podrun-state(5)): an exit record lost to a power cut reads as
    # "exited, code unknown", and two fsyncs would sit on every pod's exit path.
    fsutil.atomic_write(os.path.join(status_dir, name), json_dumps(doc).encode(), 0o644, durable=False)


def main(argv: list[str]) -> NoReturn:
    """``stages/default/run --pod-dir DIR [--debug]``; the pod lock fd is in $PODRUN_LOCK_FD."""
    pod_dir = argv[argv.index("--pod-dir") + 1]
    lock_fd = int(os.environ.pop("PODRUN_LOCK_FD", "-1"))
    if lock_fd >= 0:
        os.set_inheritable(lock_fd, False)
    networked = False
    host_pidns = -1
    pod_cgroup = None
    sd: Systemd | None = None
    try:
        with open(os.path.join(pod_dir, MANIFEST), "rb") as f:
            manifest = PodManifest.from_json(f.read())
        sd = Systemd(manifest)
        if manifest.register:
            from podrun.systemd import scope

            scope.register(manifest.uuid, os.getpid())  # before any cgroup of the pod exists
            cgroups.in_own_unit()
        networked = bool(manifest.networks)
        net_helper = None
        netns_fd = -1
        if networked:
            host_pidns, netns_fd, net_helper = _start_network(pod_dir, manifest, lock_fd)
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID
        if manifest.net == "none":
            flags |= sc.CLONE_NEWNET  # networked pods: pid 1 joins the helper's netns instead
        sc.unshare(flags)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        sc.sethostname(default_hostname(manifest))
        if manifest.net == "none":
            _bring_up_loopback()
        for vol in manifest.volumes:
            if vol.kind == "empty":
                _mkdirs(os.path.join(pod_dir, "volumes", vol.name))
        roots = {app.name: mount_app_root(pod_dir, app) for app in manifest.apps}
        faults.checkpoint("stage1:after-mounts")
        pod_cgroup, init_cgroup, app_cgroups = _make_cgroups(pod_dir, manifest)
        faults.checkpoint("stage1:after-cgroups")
        if net_helper is not None:
            from podrun.net import helper

            helper.wait(net_helper)
        files = write_pod_files(pod_dir, manifest)
    except Exception as exc:
        if "--debug" in argv:
            import traceback

            traceback.print_exc()
        sys.stderr.write(f"podrun: stage1: {exc}\n")
        _undo_setup(pod_dir, networked, host_pidns, pod_cgroup)
        if sd is not None:
            sd.close()
        sys.exit(EXIT_STAGE1_FAILED)
    supervisor = os.pidfd_open(os.getpid())
    init_pid = os.fork()
    if init_pid == 0:
        sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        # getppid() is 0 across the PID namespace boundary, so ask the pidfd whether the
        # supervisor died before PDEATHSIG was armed.
        if select.select([supervisor], [], [], 0)[0]:
            os._exit(EXIT_STAGE1_FAILED)
        os.close(supervisor)
        if lock_fd >= 0:
            os.close(lock_fd)  # only the supervisor holds the pod lock
        if netns_fd >= 0:
            sc.setns(netns_fd, sc.CLONE_NEWNET)
            os.close(netns_fd)
        sd.in_init()
        Init(pod_dir, manifest, roots, files, app_cgroups, sd).run()
    os.close(supervisor)
    _write_text(os.path.join(pod_dir, "pid"), f"{init_pid}\n")

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(init_pid, signum)
        except ProcessLookupError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    try:
        # Moved by the supervisor while pid 1 goes on starting the apps (see Init._place_apps).
        init_cgroup.add_process(init_pid)
    except ProcessLookupError:
        pass  # pid 1 has already ended
    except OSError as exc:
        sys.stderr.write(f"podrun: warning: moving the pod's pid 1 into the pod's cgroup: {exc}\n")
    faults.checkpoint("stage1:supervising")
    status = sd.wait(init_pid)
    sd.close()
    code = _exit_code(status)
    fsutil.atomic_write(os.path.join(pod_dir, "finished"),
                        json_dumps({"exit_code": code, "finished": time.time()}).encode(), 0o644, durable=False)
    if networked:
        os.close(netns_fd)
        _detach_network(pod_dir, host_pidns)
    try:
        pod_cgroup.kill_all()  # nothing of the pod outlives it, not even a daemonized process
        pod_cgroup.remove()
    except OSError as exc:
        sys.stderr.write(f"podrun: warning: removing the pod's cgroup: {exc} (podrun gc retries)\n")
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Exit without the interpreter's teardown (module and object finalization costs ~5-10 ms
    at the very end of every pod); nothing of podrun's needs it, stdio is flushed here."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _start_network(pod_dir: str, manifest: PodManifest, lock_fd: int) -> tuple[int, int, helper.Handle]:
    """Create the pod's netns here (in the host's mount namespace, before ours is unshared) and
    ask the network helper (podrun.net.helper; stage0's, or one forked now) to attach the
    networks while this process goes on.  Returns (host PID ns fd, netns fd, helper)."""
    from podrun.net import helper, setup
    from podrun.pod.boot import current_boot_id

    data_dir = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(pod_dir))))
    host_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    netns_fd = setup.create_netns(pod_dir, data_dir, manifest.uuid)
    handle = helper.take() or helper.spawn(close_fds=(lock_fd,) if lock_fd >= 0 else ())
    helper.request(handle, os.path.abspath(pod_dir), data_dir, current_boot_id())
    return host_pidns, netns_fd, handle


def _detach_network(pod_dir: str, host_pidns: int) -> None:
    from podrun.net import setup

    if host_pidns >= 0:
        # Teardown runs nft and CNI plugins; our children would otherwise be born into the
        # pod's PID namespace, where fork fails (ENOMEM) once its pid 1 has exited.
        sc.setns(host_pidns, sc.CLONE_NEWPID)

    for problem in setup.detach(pod_dir, delete_links=False):
        sys.stderr.write(f"podrun: warning: network teardown: {problem} (podrun gc retries)\n")


def _undo_setup(pod_dir: str, networked: bool, host_pidns: int, pod_cgroup: cgroups.CgroupTree | None) -> None:
    """After a failed start: release what was made (gc would too, later)."""
    try:
        if networked:
            _detach_network(pod_dir, host_pidns)
        if pod_cgroup is not None:
            pod_cgroup.remove()
    except Exception as exc:
        sys.stderr.write(f"podrun: warning: cleaning up: {exc} (podrun gc retries)\n")


def _make_cgroups(
    pod_dir: str, manifest: PodManifest
) -> tuple[cgroups.CgroupTree, cgroups.CgroupTree, dict[str, cgroups.CgroupTree]]:
    """The pod's cgroup with a leaf for its pid 1 and one per app (v2 allows no processes in a
    cgroup whose children have controllers).  The paths are recorded in the pod dir *before*
    anything is created, so gc can remove them after any crash."""
    name = f"pod-{manifest.uuid}"
    paths = cgroups.pod_cgroup_paths(name)
    fsutil.atomic_write(os.path.join(pod_dir, "cgroups"), json_dumps(list(paths)).encode(), 0o644)
    pod_cgroup = cgroups.create_pod_cgroup(name)
    try:
        init_cgroup = pod_cgroup.child("init")
        app_cgroups = {}
        for app in manifest.apps:
            tree = pod_cgroup.child(f"app-{app.name}")
            res = app.resources
            tree.set_limits(cgroups.Limits(res.memory_max, res.cpu_millis, res.pids_max))
            app_cgroups[app.name] = tree
    except BaseException:
        pod_cgroup.remove()
        raise
    return pod_cgroup, init_cgroup, app_cgroups
