"""stage1 entrypoint ``enter``: run a command inside a running app with the app's confinement
(SECURITY-TESTS 14; rkt CVE-2019-10144/10145/10147 are the failures this avoids).

The entering process joins the app's cgroup, then its cgroup, IPC, UTS, network, PID and mount
namespaces, takes the app's root, and forks (a PID namespace applies to children); the child
closes every descriptor but 0-2 and then receives exactly the app's user, groups, rlimits,
capabilities, no_new_privs and seccomp filter before exec.  The parent is made non-dumpable
before it touches the pod, so nothing in the pod can ptrace it or read its memory.
"""

from __future__ import annotations

import os
import select
import sys

from podrun import abi
from podrun.isolation import signals as sig
from podrun.isolation import syscalls as sc
from podrun.isolation.kernel import KERNEL, Kernel
from podrun.pod import layout
from podrun.pod.logrelay import Relay  # imported here: the code below runs in the app's root
from podrun.stage2 import confine, tty
from podrun.stage2.app import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED,
    describe,
    enter_workdir,
    exec_in_path,
    lookup_user,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from podrun.model.manifest import AppSpec, PodManifest

FORWARDED = (sig.SIGTERM, sig.SIGINT, sig.SIGHUP)
NAMESPACES = (("cgroup", sc.CLONE_NEWCGROUP), ("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
              ("net", sc.CLONE_NEWNET), ("pid", sc.CLONE_NEWPID), ("mnt", sc.CLONE_NEWNS))


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    return -1


def _pod_records(pod_dir: str) -> tuple[PodManifest, int, list[str]]:
    """The manifest, pid 1's PID and the cgroup list, read as every pod file is
    (podrun.pod.state: no link followed, never a FIFO or device, bounded, type-checked)."""
    from podrun.pod.state import PodFileDamage, load_manifest, open_pod_dir, read_cgroups, read_pid

    name = os.path.basename(os.path.normpath(pod_dir))
    fd = open_pod_dir(pod_dir)
    try:
        manifest, _ = load_manifest(fd)
        pid, cgroup_list = read_pid(fd), read_cgroups(fd)
    except PodFileDamage as exc:
        raise LookupError(f"pod {name}: {exc}") from None
    finally:
        os.close(fd)
    if pid is None or not cgroup_list:
        raise LookupError(f"pod {name} has not started yet")
    return manifest, pid, cgroup_list


def app_main_pid(pod_dir: str | os.PathLike[str], app: str) -> int:
    """Host PID of the app's main process: the member of its cgroup whose parent is the pod's
    supervisor, the parent of the pod's pid 1 (cgroupfs lists PIDs as the reader sees them,
    i.e. host PIDs)."""
    _, init_pid, cgroup_list = _pod_records(os.fspath(pod_dir))
    return _main_pid(init_pid, cgroup_list, app)


def _main_pid(init_pid: int, cgroup_list: list[str], app: str) -> int:
    supervisor = _ppid(init_pid)
    for base in layout.app_cgroup_dirs(cgroup_list, app):
        try:
            with open(os.path.join(base, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except OSError:
            continue
        for pid in sorted(pids):
            try:
                if _ppid(pid) == supervisor:
                    return pid
            except OSError:
                continue
    raise LookupError(f"app {app} is not running")


def main(argv: list[str]) -> NoReturn:
    """``enter --pod-dir DIR --app NAME -- CMD...`` (the contract: podrun.abi)."""
    args = abi.enter_argv_or_exit(argv)
    pod_dir, name, cmd = args.pod_dir, args.app, args.command
    try:
        manifest, init_pid, cgroup_list = _pod_records(pod_dir)
        app = next(a for a in manifest.apps if a.name == name)
        conf = confine.prepare(app, pod_dir)
        join_app(init_pid, cgroup_list, name)
    except Exception as exc:
        sys.stderr.write(f"podrun: enter: {exc}\n")
        sys.exit(EXIT_SETUP_FAILED)
    _run(app, conf, cmd or ["/bin/sh"])


def join_app(init_pid: int, cgroup_list: list[str], name: str, kernel: Kernel = KERNEL) -> None:
    """Move this process into app *name*'s cgroup and namespaces and take its root, the app's
    main process found from the pod's pid 1 *init_pid*.  Non-dumpable before anything of the pod
    is touched; the cgroup joined while the host's cgroup tree is still mounted here; the mount
    namespace joined last (the ``/proc`` fds are open by then), then the app's root entered."""
    kernel.set_dumpable(False)
    pid = _main_pid(init_pid, cgroup_list, name)
    ns_fds: list[tuple[int, int]] = []
    root_fd = -1
    try:
        for ns, flag in NAMESPACES:
            ns_fds.append((os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC), flag))
        root_fd = os.open(f"/proc/{pid}/root", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        kernel.join_cgroup(layout.app_cgroup_dirs(cgroup_list, name))
        for fd, flag in ns_fds:
            kernel.setns(fd, flag)
        kernel.fchdir(root_fd)
        kernel.chroot(".")
        kernel.chdir("/")
    finally:
        for fd, _ in ns_fds:
            os.close(fd)
        if root_fd >= 0:
            os.close(root_fd)


def _run(app: AppSpec, conf: confine.Confinement, cmd: list[str]) -> NoReturn:
    """Fork the command into the pod and relay its terminal: with a terminal on stdin it gets
    a pty of the app's devpts (podrun.stage2.tty), else the caller's stdin and, in place of a
    terminal on stdout/stderr, pipes copied out here.  The caller's terminal never enters."""
    loop = Relay()
    waited = (sig.SIGCHLD, *FORWARDED)
    sig.sigprocmask(sig.SIG_BLOCK, waited)  # taken from a signalfd in the loop below
    try:
        pty = tty.open_pty("/dev/pts/ptmx") if os.isatty(0) else None
    except OSError as exc:
        sys.stderr.write(f"podrun: enter: allocating a terminal in the app's /dev/pts: {exc}\n")
        sys.exit(EXIT_SETUP_FAILED)
    pipes = None if pty is not None else tty.PipeOut(loop)
    child = os.fork()
    if child == 0:
        sig.set_default((*waited, sig.SIGPIPE, sig.SIGXFSZ))  # Python ignores SIGPIPE and SIGXFSZ; the command must not
        sig.sigprocmask(sig.SIG_SETMASK, ())
        os.setsid()
        if pty is not None:
            os.close(pty[0])
            tty.make_controlling(pty[1])
        elif pipes is not None:
            pipes.in_child()
        _become(app, conf, cmd)
    relay = None
    if pty is not None:
        os.close(pty[1])
        relay = tty.PtyRelay(loop, pty[0])
    elif pipes is not None:
        pipes.in_parent()
    signals = sig.signalfd(waited)
    loop.watch(signals, select.POLLIN, lambda _events: _forward(signals, child))
    status = None
    while status is None:
        loop.wait(None)
        pid, st = os.waitpid(child, os.WNOHANG)
        if pid == child:
            status = st
    if relay is not None:
        relay.finish()
    elif pipes is not None:
        pipes.finish()
    sys.exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.waitstatus_to_exitcode(status))


def _forward(signals: int, child: int) -> None:
    """Pass the signals sent to ``podrun enter`` on to its command (SIGCHLD: the loop reaps)."""
    for signum in sig.read_signals(signals):
        if signum in FORWARDED:
            os.kill(child, signum)


def _become(app: AppSpec, conf: confine.Confinement, cmd: list[str]) -> NoReturn:
    try:
        root_fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            uid, gid, groups, home = lookup_user(app.user, app.group, root_fd)
        finally:
            os.close(root_fd)
        env = dict(e.split("=", 1) for e in app.env if "=" in e)
        env.setdefault("HOME", home)
        sc.close_fds_from(3)
        enter_workdir(app.working_dir)
        confine.apply(conf, uid, gid, sorted(set(groups) | set(app.supplementary_gids)))
    except Exception as exc:
        sys.stderr.write(f"podrun: enter: {describe(exc)}\n")
        os._exit(EXIT_SETUP_FAILED)
    try:
        exec_in_path(cmd, env)
    except OSError as exc:
        sys.stderr.write(f"podrun: enter: cannot execute {cmd[0]!r}: {exc.strerror}\n")
        os._exit(EXIT_NOT_FOUND if exc.errno in (2, 20) else EXIT_NOT_EXECUTABLE)
