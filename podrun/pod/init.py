"""The pod's pid 1: Debian's ``catatonit -P``, confined so that it shows the pod nothing of the
host (SECURITY-TESTS 24), and bound to die with the supervisor (issue 16).

Both supervising flavors (``default``, ``oci``) use it: the supervisor forks pid 1 first into
the pod's new PID namespace (:class:`Pid1`); this module turns that fork into catatonit in
pause mode (catatonit(1), package ``catatonit``): a small static C program that only reaps
the orphans re-parented to it and exits on SIGTERM or SIGINT.  Apps are the supervisor's
children (forked by it, or, for ``oci``, orphaned to it by their runtime: it is a child
subreaper), not pid 1's, and a pod has one Python process, its supervisor.

Every process of a pod can name pid 1 in /proc, and the kernel follows ``/proc/1/cwd`` and
``/proc/1/root`` for whoever may trace pid 1 (an app given CAP_SYS_PTRACE).  So the fork,
non-dumpable from its first step (until the exec it is a copy of the supervisor):

- leaves the caller's session (``setsid``): Ctrl-C on the caller's terminal reaches the
  supervisor, which passes SIGINT on to the apps, never pid 1, which would end the pod;
- keeps three fds: stdin, the read end of the supervisor's *lifeline* (below), and /dev/null
  as stdout and stderr (catatonit's diagnostics); every other fd is closed;
- moves into a mount namespace of its own whose only mount is an empty read-only tmpfs, made
  its root by ``pivot_root`` with the old root detached: ``/proc/1/{cwd,root}`` lead into that
  empty tree and ``/proc/1/mountinfo`` lists that one mount;
- drops its supplementary groups, splits its gid (real 0, effective and saved 65534) and drops
  every capability, the bounding and ambient sets included;
- execs catatonit through an fd the supervisor opened on the host (``fexecve``: the empty
  root holds no file), with an empty environment: ``/proc/1/cmdline`` reads ``catatonit -P``,
  ``environ`` is empty.

Why the split gid: an exec by a process whose effective id differs from its real one leaves
it non-dumpable (fs/exec.c ``begin_new_exec``: fs.suid_dumpable, 0 by default, never "user"),
and no plain exec does (it makes the process dumpable again, whatever PR_SET_DUMPABLE said
before).  Non-dumpable, pid 1 cannot be ptraced and its /proc links and memory cannot be read
by anything of the pod without CAP_SYS_PTRACE; its ids (gid 0 real, 65534 effective) match no
app's either, and with no capability it can do nothing but reap.

That exec is a "secure exec" (AT_SECURE) too, which clears PR_SET_PDEATHSIG: pid 1 would no
longer die with the supervisor by that.  Hence the *lifeline*: a pipe whose only write end
the supervisor holds (close-on-exec, and closed by each app's fork), its read end pid 1's
stdin, armed with O_ASYNC, F_SETOWN (pid 1) and F_SETSIG (SIGTERM).  When its last write end
closes, however the supervisor ends (exit, crash, ``kill -9``), the kernel signals the read
end's owner (fs/pipe.c ``pipe_release`` -> ``kill_fasync``); catatonit takes that SIGTERM
through its signalfd and exits, and the kernel then kills every process of the PID namespace.
catatonit keeps fds 0-2 open and never reads stdin.  Until the exec, the PDEATHSIG the
supervisor's fork armed covers the same case.  ``podrun stop`` signals the supervisor, not
pid 1: catatonit would end the pod at once (SIGKILL for every app).
"""

from __future__ import annotations

import os
import stat

from podrun.isolation import caps
from podrun.isolation import signals as sig
from podrun.isolation import syscalls as sc
from podrun.isolation.kernel import KERNEL, Kernel

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

CATATONIT = "catatonit"
ARGV = [CATATONIT, "-P"]
SEARCHED = ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
# pid 1's effective (and saved) gid: any gid but its real one (0) makes the exec leave it
# non-dumpable; nogroup owns nothing on a Debian host.
EFFECTIVE_GID = 65534
EXIT_FAILED = 254


def open_catatonit(searched: tuple[str, ...] = SEARCHED) -> int:
    """An fd (read-only, close-on-exec: enough for ``fexecve``, which an O_PATH fd is not
    meant for) on the first executable regular file named catatonit in *searched*.  Raises
    FileNotFoundError when there is none."""
    for directory in searched:
        try:
            fd = os.open(os.path.join(directory, CATATONIT), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return fd
        os.close(fd)
    raise FileNotFoundError(2, f"{CATATONIT} not found in {', '.join(searched)} (install the catatonit package)")


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
    """The last steps before the exec: no supplementary groups, the split gid (both need
    CAP_SETGID), then every capability gone (bounding set first: dropping it needs
    CAP_SETPCAP, which the empty sets take away)."""
    kernel.setgroups([])
    kernel.set_gids(0, EFFECTIVE_GID)
    kernel.drop_bounding(frozenset())
    kernel.set_caps(frozenset(), frozenset(), frozenset())
    kernel.clear_ambient()


def become_init(exe: int, lifeline: int, report: int, netns_fd: int, mountpoint: str,
                kernel: Kernel = KERNEL) -> NoReturn:
    """Turn this freshly forked process into the pod's pid 1: catatonit (never returns).
    *exe*: catatonit (:func:`open_catatonit`); *lifeline*: the read end of the pipe whose write
    end only the supervisor holds; *report*: a close-on-exec pipe on which a failure is told
    (the supervisor reads its end until the exec closes it); *netns_fd*: the pod's network
    namespace (-1: stay in this one); *mountpoint*: any directory, covered by the empty root
    in this process's namespace only."""
    try:
        kernel.set_dumpable(False)
        caps.last_cap()  # read while /proc is still reachable (drop_bounding needs it; cached)
        os.setsid()
        if netns_fd >= 0:
            kernel.setns(netns_fd, sc.CLONE_NEWNET)
        os.dup2(lifeline, 0)
        sig.signal_on_hangup(0, sig.SIGTERM)
        null = os.open("/dev/null", os.O_RDWR)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        sc.close_fds_from(3, frozenset({exe, report}))
        empty_root(mountpoint, kernel)
        lock_down(kernel)
        os.execve(exe, ARGV, {})
    except Exception as exc:
        try:
            os.write(report, describe(exc).encode())
        except OSError:
            pass
    os._exit(EXIT_FAILED)  # the supervisor reads why, kills the apps and says so


def describe(exc: Exception) -> str:
    """One line: an OSError without its "[Errno N]" prefix, with its path."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)


class Pid1:
    """The supervisor's side of the pod's pid 1: :meth:`fork` it (the fork becomes catatonit,
    :func:`become_init`), hold the write end of its lifeline for the supervisor's whole life
    (``lifeline``: children the supervisor forks must close it), and :meth:`wait_exec` before
    anything of an image runs."""

    __slots__ = ("lifeline", "pid", "report")

    def __init__(self) -> None:
        self.pid = -1
        self.lifeline = -1
        self.report = -1

    def fork(self, exe: int, netns_fd: int, mountpoint: str, child_defaults: tuple[int, ...]) -> int:
        """Fork pid 1 into the PID namespace the caller unshared; its PID (host namespace).
        *exe* (:func:`open_catatonit`) is closed here; *child_defaults*: signals the supervisor
        ignores or handles, reset to their defaults in pid 1 (an ignored signal stays ignored
        across the exec; catatonit blocks the others itself)."""
        import select

        supervisor = os.pidfd_open(os.getpid())
        lifeline_r, self.lifeline = os.pipe2(os.O_CLOEXEC)
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            # Until pid 1 execs catatonit (whose exec clears it: the module docstring).
            sc.prctl(sc.PR_SET_PDEATHSIG, sig.SIGKILL)
            # getppid() is 0 across the PID namespace boundary, so ask the pidfd whether the
            # supervisor died before PDEATHSIG was armed.
            if select.select([supervisor], [], [], 0)[0]:
                os._exit(EXIT_FAILED)
            sig.set_default(child_defaults)
            become_init(exe, lifeline_r, report_w, netns_fd, mountpoint)
        os.close(supervisor)
        os.close(lifeline_r)
        os.close(report_w)
        os.close(exe)
        self.report = report_r
        self.pid = pid
        return pid

    def wait_exec(self) -> str | None:
        """Wait until pid 1 is catatonit: its report pipe closes when it execs, or tells why it
        could not (returned)."""
        chunks = []
        try:
            while chunk := os.read(self.report, 4096):
                chunks.append(chunk)
        finally:
            os.close(self.report)
            self.report = -1
        return b"".join(chunks).decode(errors="replace") if chunks else None
