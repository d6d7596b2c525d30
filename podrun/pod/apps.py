"""What every supervising flavor's supervisor does with the apps it runs, once they run: stop
signals, the exit rule, reaping pid 1 at the end (podrun.stage1.default.supervise and
podrun.stage1.oci.run subclass :class:`AppsSupervisor`).

- ``podrun stop`` (SIGTERM to the supervisor), SIGINT and SIGHUP are forwarded to every
  running app; SIGTERM becomes each app's own stop signal (the image's StopSignal or
  --stop-signal, as Docker and podman do);
- rkt's exit rule: the first app that fails stops the others, and SIGALRM, STOP_TIMEOUT later,
  kills what is left;
- at the end pid 1 is killed, which takes every leftover process of the pod with it, and
  reaped together with whatever the supervisor still has to reap.
"""

from __future__ import annotations

import os
import sys

from podrun.isolation import signals as sig
from podrun.pod import exits

TYPE_CHECKING = False
if TYPE_CHECKING:
    from podrun.model.manifest import PodManifest

FORWARDED = (sig.SIGTERM, sig.SIGINT, sig.SIGHUP)
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL when the pod stops other apps


class AppsSupervisor:
    def __init__(self, manifest: PodManifest) -> None:
        self.running: dict[int, str] = {}  # host PID -> app name
        self.stop_signals = {app.name: app.stop_signal for app in manifest.apps}
        self.init_pid = -1
        self.init_status: int | None = None

    def _stop_apps(self, signum: int) -> None:
        """Send *signum* to every running app; SIGTERM means "stop": each app gets its own stop
        signal instead."""
        for pid, name in self.running.items():
            try:
                os.kill(pid, self.stop_signals[name] if signum == sig.SIGTERM else signum)
            except ProcessLookupError:
                pass

    def _on_signal(self, signum: int) -> None:
        """One signal from the supervisor's signalfd: forwarded signals stop (or reach) the apps,
        SIGALRM (the stop timeout) kills them; SIGCHLD only wakes the loop, which reaps."""
        if signum in FORWARDED:
            self._stop_apps(signum)
        elif signum == sig.SIGALRM:
            self._stop_apps(sig.SIGKILL)

    def _reaped(self, pid: int, status: int, records: exits.Records) -> None:
        if pid == self.init_pid:
            self.init_status = status
            if self.running:  # the kernel kills every app now
                sys.stderr.write(f"podrun: the pod's pid 1 ended ({exits.describe(status)}): the pod stops\n")
            return
        name = self.running.pop(pid, None)
        if name is None:
            return  # not an app: for a subreaper, a process of the pod orphaned to it
        if records.ended(name, status):
            self._failed_first()

    def _failed_first(self) -> None:
        """An app failed first: rkt's rule stops the others."""
        if self.running:
            self._stop_apps(sig.SIGTERM)
            sig.alarm(int(STOP_TIMEOUT))

    def _end_init(self) -> None:
        """Kill pid 1 (and so every process left in the pod) and reap it, with every other child
        that ends meanwhile: the kernel holds pid 1's exit until every process of its PID
        namespace is reaped, and a subreaper's orphans from the pod are its own to reap."""
        if self.init_pid < 0 or self.init_status is not None:
            return
        try:
            os.kill(self.init_pid, sig.SIGKILL)
        except ProcessLookupError:
            pass
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            if pid == self.init_pid:
                self.init_status = status
                break
