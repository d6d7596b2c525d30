"""ctypes bindings for the namespace, mount and process calls the stages need.

Kernel layer: no policy, nothing of podrun but ``podrun.isolation.libc``, through which every call
goes and every failure raises ``OSError`` carrying errno, the call's name and the path it was about.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct

from podrun.isolation.libc import LIBC as _libc
from podrun.isolation.libc import check as _check
from podrun.isolation.libc import oserror

# clone/unshare flags (linux/sched.h)
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags (linux/mount.h)
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36

_NR = {"x86_64": {"openat2": 437, "pivot_root": 155, "close_range": 436, "pidfd_getfd": 438},
       "aarch64": {"openat2": 437, "pivot_root": 41, "close_range": 436, "pidfd_getfd": 438}}
_MACHINE = os.uname().machine
_LITTLE = struct.pack("=H", 1) == b"\x01\x00"

AF_INET, SOCK_DGRAM, SOCK_CLOEXEC = 2, 2, 0o2000000

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_IN_ROOT = 0x10


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def dgram_socket() -> int:
    """A new UDP socket's fd (close-on-exec), for interface ioctls; the socket module costs ~8 ms."""
    return _check(_libc.socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), "socket")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount {fstype or 'bind'} {source or ''}".rstrip(), target,
    )


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), flags), "umount2", target)


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _NR[_MACHINE]["pivot_root"]
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root", new_root)


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname", name)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> None:
    _check(_libc.prctl(option, arg2, arg3, 0, 0), f"prctl({option})")


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    """A duplicate of fd *targetfd* of the process *pidfd* refers to (pidfd_getfd(2), Linux 5.6)."""
    nr = _NR[_MACHINE]["pidfd_getfd"]
    fd = _check(_libc.syscall(ctypes.c_long(nr), ctypes.c_int(pidfd), ctypes.c_int(targetfd), ctypes.c_uint(0)),
                "pidfd_getfd", str(targetfd))
    return fd  # the kernel sets O_CLOEXEC on it


def fs_type(fd: int) -> int:
    """The filesystem magic number of the file open as *fd* (fstatfs(2) f_type)."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    _check(_libc.fstatfs(fd, ctypes.addressof(buf)), "fstatfs")
    return _f_type(buf)


def path_fs_type(path: str) -> int:
    """The filesystem magic number of the filesystem holding *path* (statfs(2) f_type)."""
    buf = ctypes.create_string_buffer(256)
    _check(_libc.statfs(os.fsencode(path), ctypes.addressof(buf)), "statfs", path)
    return _f_type(buf)


def _f_type(buf: ctypes.Array[ctypes.c_char]) -> int:
    # f_type is the struct's first member, a long; magic numbers are 32-bit
    return int.from_bytes(buf.raw[:ctypes.sizeof(ctypes.c_long)], "little" if _LITTLE else "big") & 0xFFFFFFFF


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open *path* beneath *dirfd* with RESOLVE_* rules (kernel >= 5.6)."""
    how = struct.pack("QQQ", flags, mode, resolve)
    buf = ctypes.create_string_buffer(how, len(how))
    nr = _NR[_MACHINE]["openat2"]
    return _check(
        _libc.syscall(ctypes.c_long(nr), ctypes.c_int(dirfd), _b(path), buf, ctypes.c_size_t(len(how))),
        "openat2", path,
    )


def open_in_root(root_fd: int, path: str, flags: int = os.O_PATH) -> int:
    """Open *path* as if *root_fd* were ``/``: symlinks and ``..`` cannot leave it
    (RESOLVE_IN_ROOT), and /proc magic links are refused (runc CVE-2019-5736 / 2024-21626)."""
    return openat2(root_fd, path.lstrip("/") or ".", flags | os.O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)


def fd_path(fd: int) -> str:
    """The magic link that names an open fd; mount(2) on it targets exactly that inode."""
    return f"/proc/self/fd/{fd}"


def close_fds_from(lowest: int, keep: frozenset[int] = frozenset()) -> None:
    """Close every fd >= *lowest* except *keep* (so no host fd reaches an app, case 12)."""
    fds = sorted(int(n) for n in os.listdir("/proc/self/fd") if int(n) >= lowest and int(n) not in keep)
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


# prctl(2) / seccomp(2) constants from <linux/prctl.h> and <linux/seccomp.h>.
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_BPF_INSN_SIZE = 8  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}
_BPF_MAXINSNS = 4096  # kernel limit per filter program


class _SockFprog(ctypes.Structure):
    """struct sock_fprog."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(bpf: bytes) -> None:
    """Install ``bpf`` (from ``seccomp.compile_bpf``) as a seccomp filter on the calling thread.

    Needs no_new_privs set or CAP_SYS_ADMIN (else EACCES); does not set no_new_privs itself.
    Uses ``prctl(PR_SET_SECCOMP)``, which filters the calling thread only: call it on the
    single-threaded path right before ``execve`` (the filter is inherited across fork/exec and
    cannot be removed).  Raises OSError with the kernel's errno on failure.
    """
    if not bpf or len(bpf) % _BPF_INSN_SIZE:
        raise OSError(errno.EINVAL, "seccomp BPF is empty or not a whole number of instructions", str(len(bpf)))
    count = len(bpf) // _BPF_INSN_SIZE
    if count > _BPF_MAXINSNS:
        raise OSError(errno.E2BIG, f"seccomp BPF has {count} instructions, kernel limit is {_BPF_MAXINSNS}", "bpf")
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(count, ctypes.addressof(buf))
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        exc = oserror("prctl(PR_SET_SECCOMP)", "seccomp")
        if exc.errno == errno.EACCES:
            hint = " (set no_new_privs or hold CAP_SYS_ADMIN first)"
            raise oserror("prctl(PR_SET_SECCOMP)", "seccomp", exc.errno, hint)
        raise exc
