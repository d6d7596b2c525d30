"""Signals as the kernel sees them: numbers, the blocked mask, dispositions and a signalfd.

Kernel layer, no policy.  The run path takes signals through a signalfd (signalfd(2)) in its
poll loop rather than through Python handlers: the ``signal`` module pulls ``enum``,
``functools`` and ``collections`` into every pod's start (~8 ms), and a signalfd needs no
handler, no wakeup pipe and no re-entrancy.

Signal numbers are Linux's generic ones (x86_64 and aarch64 share them, signal(7)).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import sys

from podrun.isolation.libc import LIBC as _libc
from podrun.isolation.libc import check as _check
from podrun.isolation.libc import oserror

SIGHUP, SIGINT, SIGKILL, SIGUSR1, SIGPIPE, SIGALRM, SIGTERM = 1, 2, 9, 10, 13, 14, 15
SIGCHLD, SIGXFSZ, SIGWINCH = 17, 25, 28

SIG_BLOCK, SIG_UNBLOCK, SIG_SETMASK = 0, 1, 2
_SIG_DFL, _SIG_ERR = 0, ctypes.c_void_p(-1).value
_SFD_NONBLOCK, _SFD_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_SIGSET_BYTES = 128  # glibc's and musl's sigset_t (1024 bits); the kernel reads the first 8
SIGINFO_SIZE = 128  # struct signalfd_siginfo; ssi_signo is its first member, a u32


def _sigset(signals: tuple[int, ...] | frozenset[int]) -> ctypes.Array[ctypes.c_char]:
    bits = 0
    for sig in signals:
        if not 1 <= sig <= 64:
            raise ValueError(f"signal number out of range: {sig}")
        bits |= 1 << (sig - 1)
    return ctypes.create_string_buffer(bits.to_bytes(8, sys.byteorder), _SIGSET_BYTES)


def _signals_of(buf: ctypes.Array[ctypes.c_char]) -> frozenset[int]:
    bits = int.from_bytes(buf.raw[:8], sys.byteorder)
    return frozenset(n + 1 for n in range(64) if bits >> n & 1)


def sigprocmask(how: int, signals: tuple[int, ...] | frozenset[int]) -> frozenset[int]:
    """Change the blocked mask (SIG_BLOCK, SIG_UNBLOCK or SIG_SETMASK *signals*); returns the
    mask before.  podrun's stage1 is single-threaded, where this is pthread_sigmask(3)."""
    new, old = _sigset(signals), _sigset(())
    _check(_libc.sigprocmask(how, ctypes.addressof(new), ctypes.addressof(old)), "sigprocmask")
    return _signals_of(old)


def signalfd(signals: tuple[int, ...] | frozenset[int]) -> int:
    """A new non-blocking, close-on-exec signalfd for *signals* (which the caller keeps blocked)."""
    flags = _SFD_CLOEXEC | _SFD_NONBLOCK
    mask = _sigset(signals)  # kept alive across the call: the kernel reads it through its address
    return _check(_libc.signalfd(-1, ctypes.addressof(mask), flags), "signalfd")


def read_signals(fd: int) -> list[int]:
    """Signal numbers waiting on signalfd *fd* (empty when none: a non-blocking fd).  Not
    always all of them: one read may dequeue fewer than are pending, and the fd stays readable
    (poll) while any is, so a poll loop or a blocking reader calls again."""
    try:
        data = os.read(fd, SIGINFO_SIZE * 16)
    except BlockingIOError:
        return []
    return [int.from_bytes(data[i:i + 4], sys.byteorder) for i in range(0, len(data) - SIGINFO_SIZE + 1, SIGINFO_SIZE)]


def set_default(signals: tuple[int, ...] | frozenset[int]) -> None:
    """Put *signals* back to their default action (an ignored signal stays ignored across
    execve; a handler does not survive it, but may run before it)."""
    for sig in signals:
        if _libc.signal(sig, _SIG_DFL) == _SIG_ERR:
            raise oserror(f"signal({sig}, SIG_DFL)")


def alarm(seconds: int) -> None:
    """Have SIGALRM sent to this process in *seconds* (0: cancel), alarm(2)."""
    _libc.alarm(seconds)


def signal_on_hangup(fd: int, signum: int) -> None:
    """Have the kernel send *signum* to this process when the pipe whose read end is *fd*
    loses its last writer (or is written to): O_ASYNC with F_SETOWN and F_SETSIG (fcntl(2);
    fs/pipe.c ``pipe_release`` signals the readers' owner).  Set on the open file, not the fd:
    it holds across dup and execve, as long as the read end stays open."""
    fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(fd, fcntl.F_SETSIG, signum)
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
