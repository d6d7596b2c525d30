"""stage1 flavor ``oci``: the pod supervisor, with each app an OCI runtime-spec bundle run by
the runtime the pod manifest names (crun, runc, runsc: podrun.pod.ociruntime).

Process chain (man/podrun-stage1.7)::

    podrun run (stage0) --exec--> this module, same PID, holding the pod lock ("supervisor")
        the pod's setup as for every flavor (podrun.pod.podsetup): namespaces, overlay root
        per app, cgroups, network, pod files
        ├─ fork: pod pid 1 = ``catatonit -P`` in the new PID namespace, holding the pod's PID,
        │  IPC, UTS and network namespaces (Kubernetes' infra container, podman's pause),
        │  confined as for the default flavor (podrun.pod.init)
        └─ fork per app: join the app's cgroup, exec ``RUNTIME run --detach`` on the app's
           bundle (apps/APP/oci/config.json, podrun.stage1.oci.spec), whose namespaces are
           pid 1's, joined by path; the runtime exits once the app runs

The supervisor is a child subreaper, so each app, orphaned when its runtime process exits,
becomes the supervisor's child: it waits for the apps itself, relays their stdout/stderr
(the runtime hands the app the pipes it got as its own stdio), forwards stop signals
(SIGTERM becomes each app's stop signal), records exit codes and applies the exit rule, as
the ``default`` flavor does; then it kills pid 1 (the kernel kills whatever is left in the
pod's PID namespace), ``delete``s the containers and takes the pod down.  pid 1 dies with the
supervisor (its lifeline, podrun.pod.init), so a ``kill -9`` of it ends the whole pod; gc deletes the
containers' runtime state after that.
"""

from __future__ import annotations

import os
import select
import sys

from podrun import faults
from podrun.isolation import signals as sig
from podrun.isolation import syscalls as sc
from podrun.pod import exits, layout, ociruntime, podsetup
from podrun.pod.apps import FORWARDED, AppsSupervisor
from podrun.pod.init import Pid1
from podrun.pod.logrelay import Relay
from podrun.stage2.rootfs import mount_app_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from podrun.model.manifest import AppSpec

SECCOMP_LIMIT = 1 << 20  # bytes of an app's seccomp section (stage0 writes ~20 KiB)
SUPERVISED = (*FORWARDED, sig.SIGALRM, sig.SIGCHLD)
# Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across execve.
CHILD_DEFAULTS = (*SUPERVISED, sig.SIGPIPE, sig.SIGXFSZ)


def main(argv: list[str]) -> NoReturn:
    """``stages/oci/run --pod-dir DIR [--debug]``; the pod lock fd is in $PODRUN_LOCK_FD."""
    pod, init_exe = podsetup.start(argv, mount_app_root)
    code = Supervisor(pod, init_exe).run()
    podsetup.finish(pod, code)


class Launch:
    """An app whose runtime was forked: its name, the runtime's PID, its bundle dir."""

    __slots__ = ("bundle", "name", "pid")

    def __init__(self, name: str, pid: int, bundle: str) -> None:
        self.name, self.pid, self.bundle = name, pid, bundle


class Supervisor(AppsSupervisor):
    def __init__(self, pod: podsetup.Pod, init_exe: int) -> None:
        super().__init__(pod.manifest)
        self.pod = pod
        self.init_exe = init_exe  # catatonit, opened on the host (podrun.pod.init.open_catatonit)
        self.init = Pid1()
        self.manifest = pod.manifest
        self.runtime = pod.manifest.runtime
        self.ids = {app.name: ociruntime.container_id(pod.manifest.uuid, app.name) for app in pod.manifest.apps}

    # signals -------------------------------------------------------------------------------

    def _on_signals(self, fd: int) -> None:
        for signum in sig.read_signals(fd):
            self._on_signal(signum)

    def _fail(self, message: str) -> NoReturn:
        """Say why, kill what started, tear the pod down (podsetup.finish) with 254."""
        sys.stderr.write(f"podrun: {message}\n")
        self._stop_apps(sig.SIGKILL)
        self._end_init()
        self._delete_containers()
        podsetup.finish(self.pod, podsetup.EXIT_STAGE1_FAILED)

    # pid 1 ---------------------------------------------------------------------------------

    def _fork_init(self) -> None:
        """pid 1 (podrun.pod.init: catatonit -P, confined), in the pod's PID namespace; its
        PID in the pod's ``pid`` file; in the pod's ``init`` cgroup."""
        self.init_pid = self.init.fork(self.init_exe, self.pod.netns_fd, self.pod.pod_dir, CHILD_DEFAULTS)
        path = os.path.join(self.pod.pod_dir, layout.PID)
        try:
            exits.write_text(path, f"{self.init_pid}\n")
        except OSError as exc:
            exits.warn(f"writing {path}: {exc.strerror} (podrun stop signals the supervisor, PID {os.getpid()})")
        assert self.pod.init_cgroup is not None
        try:
            self.pod.init_cgroup.add_process(self.init_pid)
        except OSError as exc:
            exits.warn(f"moving the pod's pid 1 into the pod's cgroup: {exc}")
        failure = self.init.wait_exec()
        if failure is not None:
            self._fail(f"stage1: the pod's pid 1 (catatonit): {failure}")

    def _namespaces(self) -> dict[str, str]:
        """The pod's namespaces each app joins: pid 1's, by path (runtime-spec
        ``namespaces[].path``); with ``--net host`` the network stays the host's."""
        kinds = {"pid": "pid", "ipc": "ipc", "uts": "uts", "network": "net"}
        if self.manifest.net == "host":
            del kinds["network"]
        return {kind: f"/proc/{self.init_pid}/ns/{name}" for kind, name in kinds.items()}

    # apps ----------------------------------------------------------------------------------

    def _config(self, app: AppSpec, root: str) -> dict[str, Any]:
        from podrun.stage1.oci.spec import build_config
        from podrun.stage2.app import lookup_user

        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            uid, gid, groups, home = lookup_user(app.user, app.group, root_fd)
        finally:
            os.close(root_fd)
        tree = self.pod.app_cgroups[app.name]
        config = build_config(self.manifest, app, rootfs=root, pod_dir=self.pod.pod_dir,
                              namespaces=self._namespaces(), cgroups_path=ociruntime.cgroups_path(tree.paths[0]),
                              user=(uid, gid, groups), home=home, extra_env=self.pod.sd.app_env(),
                              seccomp=self._seccomp(app))
        if not ociruntime.manages_cgroups(self.runtime):
            del config["linux"]["cgroupsPath"]
        hook = ociruntime.root_flags_hook(self.runtime, root, app.read_only_rootfs)
        if hook is not None:
            config["hooks"] = {"createContainer": [hook]}
        if self.pod.sd.app_socket:
            from podrun.systemd.notify import APP_SOCKET

            config["mounts"].append({"destination": APP_SOCKET, "type": "bind", "source": self.pod.sd.app_socket,
                                     "options": ["bind"]})
        return config

    def _seccomp(self, app: AppSpec) -> object:
        """The app's linux.seccomp as stage0 wrote it (the manifest names the file), spliced
        into config.json unparsed (fsutil.RawJSON); None: the manifest asks for no filter."""
        if app.seccomp_bpf is None:
            return None
        from podrun.fsutil import RawJSON, read_at_most
        from podrun.model.manifest import seccomp_spec_path

        if app.seccomp_bpf != seccomp_spec_path(app.name):
            raise OSError(f"the manifest names {app.seccomp_bpf!r} as the seccomp filter, not "
                          f"{seccomp_spec_path(app.name)!r}")
        fd = os.open(os.path.join(self.pod.pod_dir, app.seccomp_bpf),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            data = read_at_most(fd, SECCOMP_LIMIT + 1)
        finally:
            os.close(fd)
        if not data.startswith(b"{") or len(data) > SECCOMP_LIMIT:
            raise OSError(f"{app.seccomp_bpf}: not a seccomp section stage0 wrote")
        return RawJSON(data)

    def _start(self, app: AppSpec, relay: Relay, records: exits.Records) -> Launch | None:
        """Write the app's bundle and fork its runtime (``RUNTIME run --detach``), which
        :meth:`_started` waits for; None when the app cannot start (recorded as failed)."""
        from podrun.fsutil import doc_json

        app_dir = os.path.join(self.pod.pod_dir, layout.app_dir(app.name))
        bundle = os.path.join(app_dir, "oci")
        log = os.path.join(bundle, "runtime.log")
        pid_file = os.path.join(bundle, "pid")
        try:
            config = self._config(app, self.pod.roots[app.name])
            failed = _prepare_root(self.pod.roots[app.name], config)
            if failed is not None:  # said as the default flavor says it, with its exit code
                sys.stderr.write(f"podrun: app {app.name}: {failed[1]}\n")
                self._failed(app.name, failed[0], records)
                return None
            os.makedirs(bundle, mode=0o700, exist_ok=True)
            data = doc_json(config)
            fd = os.open(os.path.join(bundle, "config.json"),
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        except Exception as exc:  # the user, a mount target, the bundle: as the default flavor's launcher says it
            from podrun.stage2.app import EXIT_SETUP_FAILED, describe

            sys.stderr.write(f"podrun: app {app.name}: setting up: {describe(exc)}\n")
            self._failed(app.name, EXIT_SETUP_FAILED, records)
            return None
        out = relay.add_app(os.path.join(app_dir, layout.LOG))
        argv = [*ociruntime.global_argv(self.runtime, log, self.manifest.net == "none"), "run", "--detach",
                "--bundle", bundle, "--pid-file", pid_file, self.ids[app.name]]
        tree = self.pod.app_cgroups[app.name]
        interactive = self.manifest.interactive
        pid = os.fork()
        if pid == 0:
            try:
                sig.set_default(CHILD_DEFAULTS)
                sig.sigprocmask(sig.SIG_SETMASK, ())
                tree.add_process(os.getpid())  # the runtime, and so the app, start in the app's cgroup
                if not interactive:
                    null = os.open("/dev/null", os.O_RDONLY)
                    os.dup2(null, 0)
                    os.close(null)
                os.dup2(out[0], 1)
                os.dup2(out[1], 2)
                sc.close_fds_from(3)
                ociruntime.exec_runtime(argv)
            except BaseException as exc:
                os.write(2, f"podrun: app {app.name}: starting {argv[0]}: {exc}\n".encode())
            finally:
                os._exit(podsetup.EXIT_STAGE1_FAILED)
        os.close(out[0])
        os.close(out[1])
        return Launch(app.name, pid, bundle)

    def _started(self, launch: Launch, records: exits.Records) -> None:
        """Wait for the runtime of :meth:`_start`: the app runs (its PID, which the runtime
        wrote, becomes a running app's), or did not start (recorded with the runtime's reason)."""
        _, status = os.waitpid(launch.pid, 0)
        if status == 0:
            try:
                with open(os.path.join(launch.bundle, "pid"), "rb") as f:
                    app_pid = int(f.read().strip() or b"0")
            except (OSError, ValueError) as exc:
                self._fail(f"app {launch.name}: reading the PID {ociruntime.name_of(self.runtime)} wrote: {exc}")
            self.running[app_pid] = launch.name
            return
        # The command was checked before (127/126 as in the default flavor): anything else the
        # runtime refuses is a failure to set the app up, 254 as for the default flavor's launcher.
        reason = ociruntime.read_log(os.path.join(launch.bundle, "runtime.log")) or exits.describe(status)
        sys.stderr.write(f"podrun: app {launch.name}: {ociruntime.name_of(self.runtime)}: {reason}\n")
        self._failed(launch.name, podsetup.EXIT_STAGE1_FAILED, records)


    def _failed(self, name: str, code: int, records: exits.Records) -> None:
        """App *name* did not start: recorded with exit code *code*, and the exit rule applied."""
        if records.ended(name, code << 8):
            self._failed_first()

    def _delete_containers(self) -> None:
        for problem in ociruntime.delete(self.runtime, list(self.ids.values()), ended=self.init_status is not None):
            exits.warn(f"{problem} (podrun gc retries)")
        if ociruntime.manages_cgroups(self.runtime):
            for tree in self.pod.app_cgroups.values():
                ociruntime.remove_cgroup_dirs(ociruntime.cgroups_path(tree.paths[0]))

    # run -----------------------------------------------------------------------------------

    def run(self) -> int:
        """Start pid 1 and the apps, supervise them until the last one ends; the pod's exit code."""
        if self.manifest.interactive and os.isatty(0):
            self._fail("--interactive with a terminal on stdin is not supported by --stage1 oci (use the default "
                       "flavor, or give stdin as a pipe or file)")
        if self.pod.sd.listen[0]:
            self._fail("socket activation is not supported by --stage1 oci (use the default flavor)")
        relay = Relay.for_pod(self.manifest, self.pod.sd.journal)
        sig.sigprocmask(sig.SIG_BLOCK, SUPERVISED)
        signals = sig.signalfd(SUPERVISED)
        relay.watch(signals, select.POLLIN, lambda _events: self._on_signals(signals))
        sc.prctl(sc.PR_SET_CHILD_SUBREAPER, 1)  # orphaned apps become our children
        self._fork_init()
        podsetup.host_pid_namespace(self.pod)  # the runtimes run in the host's PID namespace
        records = exits.Records(self.pod.pod_dir)
        # Every app's runtime runs at once (a runtime takes ~20 ms, mostly its own set-up of the
        # container); then each is waited for.
        launches = [launch for app in self.manifest.apps if (launch := self._start(app, relay, records))]
        for launch in launches:
            self._started(launch, records)
        exits.write_ready(self.pod.pod_dir)
        sd = self.pod.sd
        sd.attach(relay)
        try:
            sd.apps_started()
            faults.checkpoint("stage1:apps-started")
            faults.checkpoint("stage1:supervising")
            while self.running:
                relay.wait(None)
                for pid, status in exits.reap():
                    self._reaped(pid, status, records)
            relay.drain(0.5)
            records.flush()
            self._end_init()
        finally:
            sd.finish()
        self._delete_containers()
        return records.pod_exit_code([app.name for app in self.manifest.apps])


def _prepare_root(root: str, config: dict[str, Any]) -> tuple[int, str] | None:
    """Before the runtime runs: the app's mount targets and working directory made inside its
    root, and its command checked, as the default flavor's launcher does them
    (podrun.stage2.app); (exit code, the launcher's message) when one fails."""
    from podrun.stage2.app import EXIT_SETUP_FAILED, SetupError, check_executable, make_targets

    process = config["process"]
    targets = [(m["destination"], not os.path.isdir(m["source"])) for m in config["mounts"] if m["type"] == "bind"]
    env = dict(e.split("=", 1) for e in process["env"])
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        make_targets(root_fd, targets, process["cwd"])
        return check_executable(root_fd, process["args"][0], env)
    except SetupError as exc:
        return EXIT_SETUP_FAILED, f"setting up: {exc}"
    finally:
        os.close(root_fd)
