"""The default flavor's supervisor at work, once the pod is set up (podrun.stage1.default).

It forks the pod's pid 1 first (podrun.pod.init: ``catatonit -P`` in an empty root),
then every app into the pod's namespaces (stage2: podrun.stage2.app), so the apps are the
supervisor's own children and the pod sees no podrun process at all.  Then, in one poll loop
(podrun.pod.logrelay), it relays the apps' output, an interactive app's pty (podrun.stage2.tty)
and ``--notify=app`` messages, forwards signals (``podrun stop`` sends its SIGTERM here), reaps,
records each app's exit status and applies rkt's exit rule: the first app that fails stops the
others.  When the last app has ended it kills pid 1, which takes every leftover process of the
pod with it; pid 1 also ends when the supervisor does, however (its lifeline, podrun.pod.init).
"""

from __future__ import annotations

import os
import select
import sys

from podrun import faults
from podrun.isolation import signals as sig
from podrun.isolation import syscalls as sc
from podrun.pod import exits, layout
from podrun.pod.apps import FORWARDED, AppsSupervisor
from podrun.pod.init import Pid1
from podrun.pod.logrelay import Relay
from podrun.pod.podsetup import EXIT_STAGE1_FAILED
from podrun.stage2 import app as stage2
from podrun.stage2 import confine
from podrun.stage2.mountplan import app_plan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from podrun.isolation import cgroups
    from podrun.model.manifest import AppSpec, PodManifest
    from podrun.pod.sdglue import Systemd
    from podrun.stage2.mountplan import Op
    from podrun.stage2.tty import PtyRelay

# What the supervisor takes through its signalfd (blocked from the start of run() on).
SUPERVISED = (*FORWARDED, sig.SIGALRM, sig.SIGCHLD, sig.SIGWINCH)


class Started:
    """One forked app until it runs: the write end of its cgroup gate and, for an app with a
    terminal, the read end of the pipe on which it reports its pty master's fd number."""

    __slots__ = ("gate", "name", "pid", "report")

    def __init__(self, pid: int, name: str, gate: int, report: int) -> None:
        self.pid, self.name, self.gate, self.report = pid, name, gate, report


class Supervisor(AppsSupervisor):
    def __init__(self, pod_dir: str, manifest: PodManifest, roots: dict[str, str], files: dict[str, str],
                 init_cgroup: cgroups.CgroupTree, app_cgroups: dict[str, cgroups.CgroupTree], sd: Systemd,
                 netns_fd: int, init_exe: int) -> None:
        self.pod_dir = pod_dir
        self.manifest = manifest
        self.roots = roots
        self.files = files
        self.init_cgroup = init_cgroup
        self.app_cgroups = app_cgroups
        self.sd = sd
        self.netns_fd = netns_fd
        self.init_exe = init_exe  # catatonit, opened on the host (init.open_catatonit)
        self.init = Pid1()  # holds the write end of pid 1's lifeline until this process ends
        super().__init__(manifest)
        self.tty: PtyRelay | None = None
        # A terminal on stdin: the (single) interactive app gets a pty of its own.
        self.use_tty = manifest.interactive and os.isatty(0)
        if self.use_tty:
            from podrun.stage2 import tty  # noqa: F401  (the app imports it after pivot_root)

    # signals -------------------------------------------------------------------------------

    def _on_signals(self, fd: int) -> None:
        """What the signalfd holds (podrun.pod.apps), and SIGWINCH, which resizes the pty."""
        for signum in sig.read_signals(fd):
            if signum == sig.SIGWINCH and self.tty is not None:
                self.tty.resize()
            else:
                self._on_signal(signum)

    # start ---------------------------------------------------------------------------------

    def _plan_for(self, app: AppSpec) -> list[Op]:
        vols = {v.name: v for v in self.manifest.volumes}
        binds = []
        for m in app.mounts:
            vol = vols[m.volume]
            source = vol.source if vol.kind == "host" else os.path.join(self.pod_dir, layout.volume_path(vol.name))
            assert source is not None
            binds.append((source, m.target, vol.read_only, not os.path.isdir(source)))
        files = dict(self.files)
        if self.sd.app_socket:
            from podrun.systemd.notify import APP_SOCKET

            files[APP_SOCKET] = self.sd.app_socket  # NOTIFY_SOCKET of the app (--notify=app)
        return app_plan(files, binds)

    def _fork_init(self) -> None:
        self.init_pid = self.init.fork(self.init_exe, self.netns_fd, self.pod_dir, CHILD_DEFAULTS)
        path = os.path.join(self.pod_dir, layout.PID)
        try:
            exits.write_text(path, f"{self.init_pid}\n")
        except OSError as exc:  # a full disk: the pod runs all the same, podrun stop cannot find it
            exits.warn(f"writing {path}: {exc.strerror} (podrun stop will not find the pod: signal PID "
                       f"{os.getpid()} instead)")

    def _fail(self, message: str) -> NoReturn:
        sys.stderr.write(f"podrun: {message}\n")
        self._stop_apps(sig.SIGKILL)
        if self.init_pid > 0:
            os.kill(self.init_pid, sig.SIGKILL)
        if self.tty is not None:
            self.tty.finish()
        try:
            self.sd.close()  # the app's notify socket goes too
        except OSError:
            pass
        os._exit(EXIT_STAGE1_FAILED)

    def _fork_app(self, app: AppSpec, relay: Relay, started: list[Started]) -> None:
        try:
            plan = self._plan_for(app)
            conf = confine.prepare(app, self.pod_dir)
        except Exception as exc:
            self._fail(f"app {app.name}: {exc}")
        out = None
        if not self.use_tty:
            out = relay.add_app(os.path.join(self.pod_dir, layout.app_log_path(app.name)))
        gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
        report_r, report_w = os.pipe2(os.O_CLOEXEC) if self.use_tty else (-1, -1)
        try:
            pid = os.fork()
        except OSError as exc:  # ENOMEM: the pod's PID namespace has no pid 1 any more
            self._fail(f"app {app.name}: cannot start it in the pod ({exc.strerror}; did the pod's pid 1 fail?)")
        if pid == 0:
            _default_signals()
            os.close(self.init.lifeline)  # the supervisor's alone: pid 1 ends when it closes
            os.close(gate_w)
            for s in started:
                os.close(s.gate)
            if report_r >= 0:
                os.close(report_r)
            if self.netns_fd >= 0:
                sc.setns(self.netns_fd, sc.CLONE_NEWNET)
            if out is not None:
                os.dup2(out[0], 1)
                os.dup2(out[1], 2)
            first = app is self.manifest.apps[0]
            stage2.launch(app, self.roots[app.name], plan, conf, self.manifest.interactive, frozenset(),
                          cgroup_gate=gate_r, listen=self.sd.listen if first else ([], ""),
                          extra_env=self.sd.app_env(), tty_report=report_w if report_w >= 0 else None)
        os.close(gate_r)
        if report_w >= 0:
            os.close(report_w)
        started.append(Started(pid, app.name, gate_w, report_r))
        self.running[pid] = app.name
        if out is not None:
            os.close(out[0])
            os.close(out[1])

    def _take_tty(self, s: Started, relay: Relay) -> None:
        """Take the pty master the app allocated in its devpts (it reports the fd number)."""
        from podrun.stage2.tty import PtyRelay  # already loaded (__init__)

        try:
            number = os.read(s.report, 16)
        finally:
            os.close(s.report)
        if not number:
            return  # the app failed before (and said why on its stderr, the caller's terminal)
        pidfd = os.pidfd_open(s.pid)
        try:
            master = sc.pidfd_getfd(pidfd, int(number))
        finally:
            os.close(pidfd)
        self.tty = PtyRelay(relay, master)

    def _init_started(self) -> None:
        """Wait until pid 1 is catatonit (podrun.pod.init.Pid1.wait_exec).  Before any app's gate
        opens, so no image code ever runs beside a pid 1 that is still a copy of the supervisor."""
        failure = self.init.wait_exec()
        if failure is not None:
            self._fail(f"stage1: the pod's pid 1 (catatonit): {failure}")

    def _place(self, started: list[Started], relay: Relay) -> None:
        """Move pid 1 and each forked app into its cgroup, then open the app's gate.  Done here,
        after every fork, rather than by the app itself: the first cgroup migration of a burst
        waits for an RCU grace period (~10 ms here), which thus overlaps the apps' own mount
        work instead of delaying each of them in turn.  An app never runs its image's code
        before its gate opens, nor before pid 1 is catatonit."""
        try:
            self.init_cgroup.add_process(self.init_pid)
        except ProcessLookupError:
            pass  # pid 1 has already ended: the loop sees it
        except OSError as exc:
            sys.stderr.write(f"podrun: warning: moving the pod's pid 1 into the pod's cgroup: {exc}\n")
        self._init_started()
        for s in started:
            try:
                if s.report >= 0:
                    self._take_tty(s, relay)
                self.app_cgroups[s.name].add_process(s.pid)
                os.write(s.gate, b"1")
            except (ProcessLookupError, BrokenPipeError):
                pass  # the app failed before its gate (and said why): reaped and recorded as usual
            except OSError as exc:
                if not exits.ended(s.pid):
                    self._fail(f"app {s.name}: joining its cgroup: {exc}")
            finally:
                os.close(s.gate)

    # run -----------------------------------------------------------------------------------

    def run(self) -> int:
        """Start pid 1 and the apps, supervise them until the last one ends; the pod's exit code."""
        relay = Relay.for_pod(self.manifest, self.sd.journal)
        # Blocked for good (the teardown after the loop ignores them as the handlers did): they
        # wait in the signalfd, which wakes the poll loop, until it reads them.
        sig.sigprocmask(sig.SIG_BLOCK, SUPERVISED)
        signals = sig.signalfd(SUPERVISED)
        relay.watch(signals, select.POLLIN, lambda _events: self._on_signals(signals))
        self._fork_init()
        records = exits.Records(self.pod_dir)
        started: list[Started] = []
        for app in self.manifest.apps:
            self._fork_app(app, relay, started)
        self._place(started, relay)
        exits.write_ready(self.pod_dir)
        self.sd.attach(relay)  # first: READY=1 too may wait in the loop for room at the manager
        try:
            self.sd.apps_started()
            faults.checkpoint("stage1:apps-started")
            faults.checkpoint("stage1:supervising")
            while self.running:
                relay.wait(None)  # output, input, or a signal (SIGCHLD included) through the signalfd
                for pid, status in exits.reap():
                    self._reaped(pid, status, records)
            relay.drain(0.5)
            records.flush()
            if self.tty is not None:
                self.tty.finish()
            self._end_init()
        finally:  # the app's last notifications, never waiting for the manager; the socket removed
            self.sd.finish()
        return records.pod_exit_code([app.name for app in self.manifest.apps])


# Python ignores SIGPIPE and SIGXFSZ in itself; an ignored signal stays ignored across execve,
# so an app would never die of a closed pipe (``yes | head`` would spin forever).
# Python's own SIGINT handler would run (KeyboardInterrupt) before the exec; a blocked mask
# survives execve too.
CHILD_DEFAULTS = (*SUPERVISED, sig.SIGPIPE, sig.SIGXFSZ)


def _default_signals() -> None:
    """In a forked app: the supervisor's blocked mask and ignored signals are not the app's."""
    sig.set_default(CHILD_DEFAULTS)
    sig.sigprocmask(sig.SIG_SETMASK, ())
