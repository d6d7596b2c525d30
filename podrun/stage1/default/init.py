"""The pod's pid 1: a reaper that shows the pod nothing of the host (SECURITY-TESTS 24).

The supervisor forks it first into the pod's new PID namespace; it then only reaps the
orphans re-parented to it and passes SIGTERM/SIGINT/SIGHUP (``podrun stop`` signals the pod's
pid 1) on to the supervisor, as one byte each on a pipe (a pidfd cannot signal a process of
an ancestor PID namespace).  Apps are the supervisor's children, not its own.

Every process of a pod can name pid 1 in /proc, and the kernel follows ``/proc/1/cwd`` and
``/proc/1/root`` for whoever may trace pid 1 (a process of the pod being set up as root, an
app given CAP_SYS_PTRACE).  So before anything of the pod runs, pid 1:

- moves into a mount namespace of its own whose only mount is an empty read-only tmpfs, made
  its root by ``pivot_root`` with the old root detached: ``/proc/1/{cwd,root}`` lead into that
  empty tree and ``/proc/1/mountinfo`` lists that one mount;
- replaces stdio with /dev/null and closes every other fd but that pipe;
- blanks its argv and environment (``/proc/1/cmdline`` reads ``podrun-init``, ``environ`` is
  empty: no venv, stages or data dir paths), names itself ``podrun-init``;
- becomes non-dumpable and drops every capability: nothing in the pod can ptrace it, and it
  can do nothing but reap and signal its parent.

It dies with the supervisor (PR_SET_PDEATHSIG), and the kernel then kills the whole pod.
"""

from __future__ import annotations

import os

from podrun.isolation import caps
from podrun.isolation import signals as sig
from podrun.isolation import syscalls as sc
from podrun.isolation.kernel import KERNEL, Kernel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

NAME = b"podrun-init"
PASSED_ON = (sig.SIGTERM, sig.SIGINT, sig.SIGHUP)
WAITED = (sig.SIGCHLD, *PASSED_ON)
EXIT_FAILED = 254


def empty_root(mountpoint: str, kernel: Kernel = KERNEL) -> None:
    """Make an empty, read-only tmpfs this process's root, in a mount namespace of its own."""
    kernel.unshare(sc.CLONE_NEWNS)
    kernel.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    kernel.mount("podrun-init", mountpoint, "tmpfs", flags, "size=4k,nr_inodes=1,mode=0555")
    kernel.chdir(mountpoint)
    kernel.pivot_root(".", ".")
    kernel.umount(".", sc.MNT_DETACH)
    kernel.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | flags)
    kernel.chdir("/")


def lock_down(kernel: Kernel = KERNEL) -> None:
    """The last steps: non-dumpable, then every capability gone (bounding set first: dropping it
    needs CAP_SETPCAP, which the empty sets take away)."""
    kernel.set_dumpable(False)
    kernel.drop_bounding(frozenset())
    kernel.set_caps(frozenset(), frozenset(), frozenset())


def _memory_layout() -> tuple[int, int, int, int]:
    """(arg_start, arg_end, env_start, env_end) of this process (proc(5), stat fields 48-51)."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rpartition(b")")[2].split()
    # fields[0] is field 3 (state): field N is fields[N - 3]
    return int(fields[45]), int(fields[46]), int(fields[47]), int(fields[48])


def _blank_cmdline_and_environ(layout: tuple[int, int, int, int], kernel: Kernel) -> None:
    """Overwrite argv and environ in memory, then shrink what /proc shows of them."""
    arg_start, arg_end, env_start, env_end = layout
    sc.memset(arg_start, 0, arg_end - arg_start)
    sc.memset(env_start, 0, env_end - env_start)
    sc.memmove(arg_start, NAME + b"\0")
    try:
        kernel.set_mm(sc.PR_SET_MM_ENV_END, env_start)  # needs CAP_SYS_RESOURCE: before lock_down
        kernel.set_mm(sc.PR_SET_MM_ARG_END, arg_start + len(NAME) + 1)
    except OSError:
        pass  # the memory is blank anyway; /proc then shows NUL bytes after the name
    sc.set_name(NAME)


def become_init(signals_w: int, netns_fd: int, mountpoint: str, kernel: Kernel = KERNEL) -> NoReturn:
    """Turn this freshly forked process into the pod's pid 1 (never returns); it is forked with
    ``WAITED`` blocked (the supervisor's mask), which it keeps.  *signals_w*: the pipe to the
    supervisor; *netns_fd*: the pod's network namespace (-1: stay in this one);
    *mountpoint*: any directory, covered by the empty root in this process's namespace only."""
    try:
        layout = _memory_layout()  # read while /proc is still reachable
        caps.last_cap()  # the same (cached)
        sig.sigprocmask(sig.SIG_SETMASK, WAITED)
        if netns_fd >= 0:
            kernel.setns(netns_fd, sc.CLONE_NEWNET)
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        sc.close_fds_from(3, frozenset({signals_w}))
        os.set_blocking(signals_w, False)
        empty_root(mountpoint, kernel)
        _blank_cmdline_and_environ(layout, kernel)
        lock_down(kernel)
    except Exception:
        os._exit(EXIT_FAILED)  # the supervisor sees pid 1 end, kills the apps and says so
    _reap_forever(signals_w)


def _reap_forever(signals_w: int) -> NoReturn:
    # Blocked and taken with sigwaitinfo: no handler runs, none is needed, and no fd is open
    # but the pipe.  A PID namespace's init gets no signal it has left at SIG_DFL
    # (pid_namespaces(7)) unless the signal is blocked: the kernel queues a blocked signal
    # whatever its disposition (kernel/signal.c, sig_ignored()).
    while True:
        _reap()
        signum = sig.wait_signal(WAITED)
        if signum in PASSED_ON:
            try:
                os.write(signals_w, bytes((signum,)))
            except OSError:
                pass  # a full pipe already says "stop"; a closed one: the supervisor is ending


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
