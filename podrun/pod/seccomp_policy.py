"""Which syscalls a podrun app may make: the default seccomp allowlist and ``--seccomp`` flags,
turned into a ``podrun.isolation.seccomp.Filter``.

The default profile is podrun's own list, modelled on the behaviour (not the text) of the
Docker/moby and containers/common (podman) default profiles:

* Unknown syscalls get ENOSYS, as in containers/common since 2021 (PR #573): a syscall newer
  than this list (``clone3``, ``faccessat2``, ``close_range`` were the historic cases) must
  look "not implemented" so that libc falls back to the older call; EPERM (Docker's default)
  makes glibc give up instead (runc#2151, moby#42871).
* Syscalls denied on purpose get EPERM through explicit rules, so programs see "not allowed".
* Syscalls that only make sense with a capability (mount with CAP_SYS_ADMIN, ptrace with
  CAP_SYS_PTRACE, …) are allowed exactly when the app keeps that capability, like both
  profiles do; the kernel still checks the capability itself.
* Argument filters: ``clone`` with namespace flags → EPERM, ``clone3`` → ENOSYS (its flags are
  behind a pointer seccomp cannot read; glibc then falls back to ``clone``), ``socket`` for
  AF_VSOCK/AF_ALG and ``personality`` with unusual personas are not allowed; i386's
  ``socketcall`` multiplexer is denied so that the family filter cannot be bypassed.
* ``ioctl`` TIOCSTI and TIOCLINUX get EPERM in every filter podrun builds (SECURITY-TESTS 25):
  they push input into a terminal (bubblewrap CVE-2017-5226, flatpak CVE-2023-28100).  The
  request is compared on its low 32 bits, as the kernel reads it (flatpak CVE-2019-10063).

podrun is stricter than podman in one way: podman allows mount/unshare/keyctl/reboot and leaves
them to the capability checks (rootless podman needs that); podrun denies them unless the cap
is kept, and never allows the keyring syscalls (keyrings are not namespaced).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from typing import Any

from podrun.errors import UsageError
from podrun.isolation.seccomp import ArgCond, Filter, Rule, native_arch, syscall_exists
from podrun.isolation.syscalls import (
    CLONE_NEWCGROUP,
    CLONE_NEWIPC,
    CLONE_NEWNET,
    CLONE_NEWNS,
    CLONE_NEWPID,
    CLONE_NEWUSER,
    CLONE_NEWUTS,
)

EPERM = errno.EPERM
ENOSYS = errno.ENOSYS

# clone(2) flags that create namespaces (<linux/sched.h>).  CLONE_NEWTIME (0x80) is left out:
# in clone() the low byte is the exit signal; new time namespaces need unshare/clone3.
NAMESPACE_CLONE_FLAGS = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
                         CLONE_NEWPID, CLONE_NEWNET)
NAMESPACE_CLONE_MASK = sum(NAMESPACE_CLONE_FLAGS)

AF_ALG = 38
AF_VSOCK = 40

# Compat ABIs a native kernel also runs: each must be in the filter, or a 32-bit (int 0x80)
# or x32 syscall would bypass the native syscall-number checks.  libseccomp kills syscalls
# from ABIs not in the filter (ACT_BADARCH, set to kill-process by the kernel layer).
COMPAT_ARCHES = {"x86_64": ("x86", "x32"), "aarch64": ("arm",)}

# Allowed for every app.  Grouped by purpose; names libseccomp does not know on an ABI are
# skipped when compiling, so names of newer syscalls may be listed ahead of time.
ALLOWED: dict[str, tuple[str, ...]] = {
    # Starting, ending and identifying processes and threads (clone is filtered separately).
    "process": (
        "execve", "execveat", "exit", "exit_group", "fork", "vfork", "wait4", "waitid", "waitpid",
        "getpid", "getppid", "gettid", "getpgid", "getpgrp", "getsid", "setpgid", "setsid",
        "set_tid_address", "get_robust_list", "set_robust_list", "rseq", "restart_syscall",
        "prctl", "arch_prctl", "get_thread_area", "set_thread_area", "modify_ldt", "set_tls",
        "capget", "capset", "pidfd_open", "pidfd_send_signal", "seccomp", "membarrier",
        "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    ),
    # Futexes and scheduling.
    "sync": (
        "futex", "futex_time64", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
        "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
        "sched_getscheduler", "sched_setscheduler", "sched_getattr", "sched_setattr",
        "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
        "sched_rr_get_interval_time64", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
        "getcpu",
    ),
    # Credentials; the kernel checks CAP_SETUID/CAP_SETGID itself.
    "identity": (
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
        "setfsuid", "setfsgid",
        "getuid32", "geteuid32", "getgid32", "getegid32", "getresuid32", "getresgid32",
        "getgroups32", "setuid32", "setgid32", "setreuid32", "setregid32", "setresuid32",
        "setresgid32", "setgroups32", "setfsuid32", "setfsgid32",
    ),
    # Signals.
    "signals": (
        "kill", "tkill", "tgkill", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
        "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
        "rt_sigtimedwait_time64", "sigaction", "sigaltstack", "signal", "signalfd", "signalfd4",
        "sigpending", "sigprocmask", "sigreturn", "sigsuspend", "pause", "alarm",
    ),
    # Memory management.
    "memory": (
        "brk", "mmap", "mmap2", "munmap", "mprotect", "mremap", "msync", "madvise", "mincore",
        "mlock", "mlock2", "mlockall", "munlock", "munlockall", "memfd_create", "remap_file_pages",
        "pkey_alloc", "pkey_free", "pkey_mprotect", "cacheflush", "breakpoint",
    ),
    # File descriptors and I/O.
    "io": (
        "open", "openat", "openat2", "creat", "close", "close_range", "read", "readv", "pread64",
        "preadv", "preadv2", "write", "writev", "pwrite64", "pwritev", "pwritev2", "lseek",
        "_llseek", "dup", "dup2", "dup3", "fcntl", "fcntl64", "flock", "ioctl", "pipe", "pipe2",
        "sendfile", "sendfile64", "splice", "tee", "copy_file_range", "readahead",
        "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "sync_file_range2",
        "arm_sync_file_range", "fadvise64", "fadvise64_64", "arm_fadvise64_64", "fallocate",
    ),
    # Waiting for events, timers and async I/O (io_uring is denied, see DENIED).
    "events": (
        "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6", "pselect6_time64",
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_wait",
        "epoll_wait_old", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2",
        "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        "io_pgetevents_time64",
    ),
    # Paths, metadata and directories; the mount namespace and rootfs confine them.
    "filesystem": (
        "access", "faccessat", "faccessat2", "stat", "stat64", "lstat", "lstat64", "fstat",
        "fstat64", "fstatat64", "newfstatat", "statx", "statfs", "statfs64", "fstatfs",
        "fstatfs64", "getdents", "getdents64", "readdir", "getcwd", "chdir", "fchdir",
        "mkdir", "mkdirat", "rmdir", "rename", "renameat", "renameat2", "link", "linkat",
        "symlink", "symlinkat", "unlink", "unlinkat", "readlink", "readlinkat", "truncate",
        "truncate64", "ftruncate", "ftruncate64", "chmod", "fchmod", "fchmodat", "fchmodat2",
        "chown", "fchown", "lchown", "fchownat", "chown32", "fchown32", "lchown32", "umask",
        "utime", "utimes", "utimensat", "utimensat_time64", "futimesat", "mknod", "mknodat",
        "name_to_handle_at",
        "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr", "listxattr",
        "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
    ),
    # Clocks; setting them needs CAP_SYS_TIME (see CAP_GATED).  adjtimex only reads without it.
    "time": (
        "clock_gettime", "clock_gettime64", "clock_getres", "clock_getres_time64",
        "clock_nanosleep", "clock_nanosleep_time64", "nanosleep", "gettimeofday", "time", "times",
        "getitimer", "setitimer", "timer_create", "timer_delete", "timer_gettime",
        "timer_gettime64", "timer_settime", "timer_settime64", "timer_getoverrun",
        "timerfd_create", "timerfd_settime", "timerfd_settime64", "timerfd_gettime",
        "timerfd_gettime64", "adjtimex", "clock_adjtime", "clock_adjtime64",
    ),
    # Sockets (socket itself is filtered by address family) and System V / POSIX IPC, which
    # the pod's IPC namespace confines.
    "ipc": (
        "socketpair", "bind", "connect", "listen", "accept", "accept4", "getsockname",
        "getpeername", "getsockopt", "setsockopt", "sendto", "recvfrom", "sendmsg", "recvmsg",
        "sendmmsg", "recvmmsg", "recvmmsg_time64", "send", "recv", "shutdown",
        "msgget", "msgsnd", "msgrcv", "msgctl", "semget", "semop", "semtimedop",
        "semtimedop_time64", "semctl", "shmget", "shmat", "shmdt", "shmctl", "ipc",
        "mq_open", "mq_unlink", "mq_timedsend", "mq_timedsend_time64", "mq_timedreceive",
        "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
    ),
    # Limits and system information.
    "system": (
        "getrlimit", "setrlimit", "prlimit64", "ugetrlimit", "getrusage", "sysinfo", "uname",
        "getrandom",
    ),
}

# Allowed only while the app keeps one of the named capabilities, else EPERM.
CAP_GATED: tuple[tuple[frozenset[str], tuple[str, ...]], ...] = (
    # Mounts, namespaces, hostnames, quotas, fanotify: the host-facing half of CAP_SYS_ADMIN.
    (frozenset({"CAP_SYS_ADMIN"}), (
        "mount", "umount", "umount2", "pivot_root", "unshare", "setns", "fsopen", "fsconfig",
        "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr", "quotactl", "quotactl_fd",
        "sethostname", "setdomainname", "fanotify_init", "lookup_dcookie",
    )),
    (frozenset({"CAP_SYS_ADMIN", "CAP_BPF"}), ("bpf",)),
    (frozenset({"CAP_SYS_ADMIN", "CAP_PERFMON"}), ("perf_event_open",)),
    (frozenset({"CAP_SYS_ADMIN", "CAP_SYSLOG"}), ("syslog",)),
    # Reading and writing other processes (podman gates these on CAP_SYS_PTRACE too).
    (frozenset({"CAP_SYS_PTRACE"}), (
        "ptrace", "kcmp", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd",
    )),
    (frozenset({"CAP_SYS_BOOT"}), ("reboot",)),
    (frozenset({"CAP_SYS_CHROOT"}), ("chroot",)),
    (frozenset({"CAP_SYS_MODULE"}), ("init_module", "finit_module", "delete_module")),
    (frozenset({"CAP_SYS_NICE"}), (
        "get_mempolicy", "set_mempolicy", "set_mempolicy_home_node", "mbind", "migrate_pages",
        "move_pages",
    )),
    (frozenset({"CAP_SYS_PACCT"}), ("acct",)),
    (frozenset({"CAP_SYS_RAWIO"}), ("iopl", "ioperm")),
    (frozenset({"CAP_SYS_TIME"}), ("settimeofday", "stime", "clock_settime", "clock_settime64")),
    (frozenset({"CAP_SYS_TTY_CONFIG"}), ("vhangup",)),
    # Opening files by handle bypasses the mount namespace (the "shocker" escape, 2014).
    (frozenset({"CAP_DAC_READ_SEARCH"}), ("open_by_handle_at",)),
)

# Denied (EPERM) whatever the capabilities.
DENIED: tuple[str, ...] = (
    # Kernel keyrings are not namespaced: keys of the host and of other pods are reachable.
    "keyctl", "add_key", "request_key",
    # Replacing the running kernel.
    "kexec_load", "kexec_file_load",
    # Host swap.
    "swapon", "swapoff",
    # Common building blocks of kernel exploits with little use in apps (Docker/podman deny
    # userfaultfd; Docker removed io_uring from its default in 2023 after a run of CVEs).
    "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register", "vmsplice",
    # Obsolete interfaces: never needed by current libcs.
    "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old", "nfsservctl", "bdflush",
    "create_module", "get_kernel_syms", "query_module", "pciconfig_iobase", "pciconfig_read",
    "pciconfig_write",
)

# ioctl requests that inject input into a terminal: TIOCSTI (asm-generic 0x5412) and TIOCLINUX
# (0x541C, whose subcommand TIOCL_PASTESEL pastes into a virtual console).
TIOCSTI = 0x5412
TIOCLINUX = 0x541C
TTY_INJECTION = (TIOCSTI, TIOCLINUX)
_LOW32 = 0xFFFFFFFF

# personality(2) values programs legitimately use: PER_LINUX, PER_LINUX32, UNAME26 variants,
# and 0xffffffff (query).  Others (READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE…) weaken the process.
SAFE_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)

GROUP_ALLOWLIST = "@podrun/default-allowlist"
GROUP_DENYLIST = "@podrun/default-denylist"
GROUPS = (GROUP_ALLOWLIST, GROUP_DENYLIST)

# Without these an app cannot even be started (the filter is loaded before execve) or end:
# mode=retain always allows them.
RETAIN_ALWAYS = ("execve", "exit", "exit_group")

MAX_FLAG_CHARS = 64 * 1024
_NAME_RE = re.compile(r"^[a-z0-9_]{1,64}$")


def _normalize_caps(caps: Iterable[str]) -> frozenset[str]:
    out = set()
    for cap in caps:
        c = cap.strip().upper()
        out.add(c if c.startswith("CAP_") else "CAP_" + c)
    return frozenset(out)


def default_architectures() -> tuple[str, ...]:
    """The native ABI plus the compat ABIs the kernel also accepts on this machine."""
    native = native_arch()
    return (native, *COMPAT_ARCHES.get(native, ()))


def _clone_flags_arg() -> int:
    # s390/s390x swap clone's first two arguments; everywhere else flags come first.
    return 1 if native_arch().startswith("s390") else 0


def filter_for(caps: frozenset[str]) -> Filter:
    """The default filter for an app that keeps ``caps`` (names like ``CAP_SYS_ADMIN`` or
    ``SYS_ADMIN``): the ALLOWED groups, each CAP_GATED group allowed when one of its caps is
    kept (EPERM otherwise), DENIED as EPERM, argument filters for clone/socket/personality, and
    ENOSYS for everything else."""
    held = _normalize_caps(caps)
    allowed: list[str] = [name for group in ALLOWED.values() for name in group]
    denied: list[str] = list(DENIED)
    for gate, names in CAP_GATED:
        (allowed if gate & held else denied).extend(names)
    rules: list[Rule] = []
    flags_arg = _clone_flags_arg()
    if "CAP_SYS_ADMIN" in held:
        # Creating namespaces is then the app's right (Docker does the same); clone3's flags
        # cannot be checked, but nothing is left to check.
        allowed.extend(("clone", "clone3"))
    else:
        rules.append(Rule(("clone",), "ALLOW", args=(ArgCond(flags_arg, "MASKED_EQ", NAMESPACE_CLONE_MASK, 0),)))
        # One rule per flag: seccomp cannot express "(flags & mask) != 0" in one comparison.
        rules.extend(Rule(("clone",), "ERRNO", EPERM, (ArgCond(flags_arg, "MASKED_EQ", bit, bit),))
                     for bit in NAMESPACE_CLONE_FLAGS)
        rules.append(Rule(("clone3",), "ERRNO", ENOSYS))
    # Address families: everything but AF_ALG (38) and AF_VSOCK (40).  As three ALLOW ranges
    # rather than ALLOW + EPERM rules: on i386 libseccomp also emits socket rules through
    # socketcall(SYS_SOCKET), where arguments are unreadable and ALLOW/ERRNO rules collide,
    # so the two families fall through to the default action (ENOSYS).
    rules.extend((
        Rule(("socket",), "ALLOW", args=(ArgCond(0, "LT", AF_ALG),)),
        Rule(("socket",), "ALLOW", args=(ArgCond(0, "EQ", AF_ALG + 1),)),
        Rule(("socket",), "ALLOW", args=(ArgCond(0, "GT", AF_VSOCK),)),
    ))
    rules.extend(Rule(("personality",), "ALLOW", args=(ArgCond(0, "EQ", value),)) for value in SAFE_PERSONALITIES)
    rules.insert(0, Rule(tuple(denied), "ERRNO", EPERM))
    rules.insert(0, Rule(tuple(allowed), "ALLOW"))
    return guard_tty_ioctls(_guard_socketcall(Filter("ERRNO", ENOSYS, default_architectures(), tuple(rules))))


def ioctl_request_conditions(excluded: tuple[int, ...] = TTY_INJECTION) -> tuple[ArgCond, ...]:
    """Conditions on ioctl's request (argument 1), each a single MASKED_EQ on its low 32 bits,
    whose union is every request but *excluded*.

    A seccomp rule holds one comparison per argument and libseccomp lets an unconditional ALLOW
    win over any conditional rule of the same syscall, so "all but these" is spelt as a union:
    requests that differ from the excluded values in a bit where those values agree (one
    condition per such bit), plus the other combinations of the bits where they disagree.
    """
    agree = _LOW32
    for value in excluded[1:]:
        agree &= ~(value ^ excluded[0])
    conds = [ArgCond(1, "MASKED_EQ", 1 << bit, (excluded[0] ^ _LOW32) & (1 << bit))
             for bit in range(32) if agree >> bit & 1]
    varying = [bit for bit in range(32) if not agree >> bit & 1]
    for combo in range(1 << len(varying)):
        value = excluded[0] & agree
        for i, bit in enumerate(varying):
            if combo >> i & 1:
                value |= 1 << bit
        if value not in excluded:
            conds.append(ArgCond(1, "MASKED_EQ", _LOW32, value))
    return tuple(conds)


def _admits(cond: ArgCond, value: int) -> bool:
    """Whether the argument value *value* satisfies *cond* (for conditions on ioctl's request)."""
    if cond.op == "MASKED_EQ":
        return value & cond.value == cond.value_two
    ops = {"EQ": value == cond.value, "NE": value != cond.value, "LT": value < cond.value,
           "LE": value <= cond.value, "GT": value > cond.value, "GE": value >= cond.value}
    return ops[cond.op]


_HIGH = _LOW32 << 32  # the bits of ioctl's request that the kernel ignores (it reads an int)
_PASSING = ("ALLOW", "LOG")  # actions that let the syscall run


def _may_admit(cond: ArgCond, low: int) -> bool:
    """Whether some request whose low 32 bits are *low*, whatever its high bits, satisfies *cond*."""
    if cond.op == "MASKED_EQ":
        return cond.value_two & ~cond.value == 0 and low & cond.value & _LOW32 == cond.value_two & _LOW32
    if cond.op == "EQ":
        return cond.value & _LOW32 == low
    if cond.op == "NE":
        return True  # a request with other high bits differs from any single value
    if cond.op in ("LT", "LE"):
        return _admits(cond, low)  # the smallest such request: high bits 0
    return _admits(cond, low | _HIGH)  # GT, GE: the largest, all high bits set


def guard_tty_ioctls(f: Filter) -> Filter:
    """*f* with ``ioctl`` TIOCSTI and TIOCLINUX refused (EPERM) whatever it allowed: an
    unconditional ALLOW (or LOG) of ioctl becomes one for every other request, a conditional one
    gets those request conditions added; a rule that already tests the request keeps its
    conditions if one of them excludes both requests whatever the high bits, and is refused as a
    UsageError otherwise (podrun cannot add a second condition on the same argument)."""
    allow_requests = ioctl_request_conditions()
    rules: list[Rule] = []
    for r in f.rules:
        if "ioctl" not in r.names or r.action not in _PASSING:
            rules.append(r)
            continue
        others = tuple(n for n in r.names if n != "ioctl")
        if others:
            rules.append(Rule(others, r.action, r.errno, r.args))
        on_request = [c for c in r.args if c.index == 1]
        if on_request:
            if not any(all(not _may_admit(c, v) for v in TTY_INJECTION) for c in on_request):
                raise UsageError("seccomp profile allows ioctl TIOCSTI or TIOCLINUX, which podrun always refuses",
                                 hint="exclude those requests (0x5412, 0x541c) from the ioctl rule")
            rules.append(Rule(("ioctl",), r.action, r.errno, r.args))
            continue
        rules.extend(Rule(("ioctl",), r.action, r.errno, (*r.args, c)) for c in allow_requests)
    rules.extend(Rule(("ioctl",), "ERRNO", EPERM, (ArgCond(1, "MASKED_EQ", _LOW32, request),))
                 for request in TTY_INJECTION)
    return Filter(f.default_action, f.default_errno, f.architectures, tuple(rules))


def _guard_socketcall(f: Filter) -> Filter:
    """Deny i386's socketcall(2) whenever socket(2) is allowed and socketcall is not.

    libseccomp turns every socket rule on i386 into a socketcall(SYS_SOCKET) rule without the
    argument checks (they sit behind a pointer), so an allowed socket would let 32-bit code
    open AF_VSOCK/AF_ALG sockets through socketcall.  An explicit socketcall rule overrides
    those derived rules, but only if its action differs from the default (libseccomp refuses
    rules equal to the default and the kernel layer skips them), hence EPERM, or ENOSYS when
    EPERM is the default.  32-bit programs then need the direct socket syscalls (Linux ≥ 4.3,
    used by musl and by glibc built for such kernels); moby made the same trade in 2026.
    """
    if any("socketcall" in r.names and r.action == "ALLOW" for r in f.rules):
        return f
    if not any("socket" in r.names and r.action == "ALLOW" for r in f.rules):
        return f
    rules = [r if "socketcall" not in r.names else Rule(tuple(n for n in r.names if n != "socketcall"),
                                                        r.action, r.errno, r.args)
             for r in f.rules]
    err = ENOSYS if (f.default_action, f.default_errno) == ("ERRNO", EPERM) else EPERM
    rules = [r for r in rules if r.names]
    rules.append(Rule(("socketcall",), "ERRNO", err))
    return Filter(f.default_action, f.default_errno, f.architectures, tuple(rules))


def allowed_names(f: Filter) -> frozenset[str]:
    """Names that some rule of ``f`` allows (unconditionally or for some arguments)."""
    return frozenset(n for r in f.rules if r.action == "ALLOW" for n in r.names)


def denied_names(f: Filter) -> frozenset[str]:
    """Names that ``f`` denies with an explicit unconditional rule (not via the default)."""
    return frozenset(n for r in f.rules if r.action != "ALLOW" and not r.args for n in r.names)


def _errno_value(flag: str, name: str) -> int:
    value = getattr(errno, name, None) if re.fullmatch(r"E[A-Z0-9]+", name) else None
    if not isinstance(value, int):
        raise UsageError(f"--seccomp {flag!r}: unknown errno name {name!r}", hint="use a name such as EPERM or ENOSYS")
    return value


def _check_syscall_name(flag: str, name: str, arches: tuple[str, ...]) -> None:
    if not _NAME_RE.match(name) or not any(syscall_exists(name, a) for a in arches):
        raise UsageError(f"--seccomp {flag!r}: unknown syscall {name!r}",
                         hint=f"names as in syscalls(2), or a group: {', '.join(GROUPS)}")


def parse_seccomp_flag(text: str, caps: frozenset[str]) -> Filter:
    """Parse rkt's ``--seccomp`` syntax into a Filter for an app that keeps ``caps``.

    ``mode=retain,NAME…`` allows only the named syscalls (plus execve/exit/exit_group, without
    which no app can start or end); everything else fails with the ``errno=`` value (EPERM by
    default), except ``clone3``, which gives ENOSYS unless named so libc falls back to clone.
    Named syscalls that the default profile filters by argument (clone, socket, personality)
    keep those argument filters.  ``mode=remove,NAME…`` is the default profile with the named
    syscalls denied with the ``errno=`` value, which also replaces EPERM for the profile's own
    denials; unknown syscalls still get ENOSYS.  NAME may be a group: ``@podrun/default-allowlist``
    or ``@podrun/default-denylist``.  Raises UsageError naming the flag and the problem.
    """
    if len(text) > MAX_FLAG_CHARS:
        raise UsageError(f"--seccomp value is {len(text)} characters long, limit is {MAX_FLAG_CHARS}")
    mode: str | None = None
    err_name: str | None = None
    names: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise UsageError(f"--seccomp {text!r}: empty item", hint="separate items with single commas")
        if "=" in item:
            key, _, value = item.partition("=")
            if key == "mode" and mode is None:
                if value not in ("retain", "remove"):
                    raise UsageError(f"--seccomp {text!r}: mode must be retain or remove, not {value!r}")
                mode = value
            elif key == "errno" and err_name is None:
                err_name = value
            else:
                raise UsageError(f"--seccomp {text!r}: unknown or repeated option {key!r}",
                                 hint="options are mode=retain|remove and errno=ENAME, once each")
        else:
            names.append(item)
    if mode is None:
        raise UsageError(f"--seccomp {text!r}: missing mode=retain or mode=remove")
    if not names:
        raise UsageError(f"--seccomp {text!r}: no syscalls named")
    err = _errno_value(text, err_name) if err_name is not None else EPERM
    base = filter_for(caps)
    selected: list[str] = []
    for name in names:
        if name.startswith("@"):
            if name == GROUP_ALLOWLIST:
                selected.extend(sorted(allowed_names(base)))
            elif name == GROUP_DENYLIST:
                selected.extend(sorted(denied_names(base)))
            else:
                raise UsageError(f"--seccomp {text!r}: unknown group {name!r}", hint=f"groups: {', '.join(GROUPS)}")
        else:
            _check_syscall_name(text, name, base.architectures)
            selected.append(name)
    chosen = tuple(dict.fromkeys(selected))
    if mode == "retain":
        return _retain(base, chosen, err)
    return _remove(base, chosen, err)


def _retain(base: Filter, names: tuple[str, ...], err: int) -> Filter:
    rules: list[Rule] = []
    plain: list[str] = list(RETAIN_ALWAYS)
    for name in names:
        conditional = [r for r in base.rules if name in r.names and r.args]
        if conditional:
            rules.extend(Rule((name,), r.action, r.errno, r.args) for r in conditional)
        else:
            plain.append(name)
    plain = [n for n in dict.fromkeys(plain) if not any(n in r.names for r in rules)]
    rules.insert(0, Rule(tuple(plain), "ALLOW"))
    if "clone3" not in names:
        rules.append(Rule(("clone3",), "ERRNO", ENOSYS))
    return _guard_socketcall(Filter("ERRNO", err, base.architectures, tuple(rules)))


def _remove(base: Filter, names: tuple[str, ...], err: int) -> Filter:
    removed = set(names)
    rules: list[Rule] = []
    for r in base.rules:
        kept = tuple(n for n in r.names if n not in removed)
        if kept:
            rules.append(Rule(kept, r.action, err if r.action == "ERRNO" and r.errno == EPERM else r.errno, r.args))
    rules.append(Rule(names, "ERRNO", err))
    return _guard_socketcall(Filter(base.default_action, base.default_errno, base.architectures, tuple(rules)))


def _spec_action(action: str, err: int) -> dict[str, Any]:
    if action == "ERRNO":
        return {"action": "SCMP_ACT_ERRNO", "errnoRet": err}
    return {"action": f"SCMP_ACT_{action}"}


def runtime_spec_section(f: Filter) -> dict[str, Any]:
    """*f* (podrun.isolation.seccomp) as linux.seccomp: one entry per rule, its conditions ANDed
    as in the rule.  Rules whose action is the default's are left out, as podrun's own compiler
    skips them (libseccomp refuses them; they change nothing)."""
    default = _spec_action(f.default_action, f.default_errno)
    syscalls = []
    for rule in f.rules:
        action = _spec_action(rule.action, rule.errno)
        if action == default:
            continue
        entry: dict[str, Any] = {"names": list(rule.names), **action}
        if rule.args:
            entry["args"] = [{"index": c.index, "value": c.value, "valueTwo": c.value_two, "op": f"SCMP_CMP_{c.op}"}
                             for c in rule.args]
        syscalls.append(entry)
    return {
        "defaultAction": default["action"],
        **({"defaultErrnoRet": default["errnoRet"]} if "errnoRet" in default else {}),
        # libseccomp's ABI names (x86_64, x32, aarch64…) are the runtime-spec's without the prefix
        "architectures": [f"SCMP_ARCH_{a.upper()}" for a in f.architectures],
        "syscalls": syscalls,
    }
