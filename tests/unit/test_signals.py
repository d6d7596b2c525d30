"""The kernel layer's signals (podrun.isolation.signals), without root: the blocked mask, a
signalfd, dispositions.  Each case runs in a fresh interpreter, since it changes the mask."""

from __future__ import annotations

import signal
import subprocess
import sys

from podrun.isolation import signals as sig
from tests.conftest import ROOT


def _run(code: str) -> list[str]:
    prelude = f"import os, sys; sys.path.insert(0, {str(ROOT)!r}); from podrun.isolation import signals as s; "
    out = subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_numbers_are_the_kernels() -> None:
    for name in ("SIGHUP", "SIGINT", "SIGKILL", "SIGUSR1", "SIGPIPE", "SIGALRM", "SIGTERM", "SIGCHLD", "SIGXFSZ",
                 "SIGWINCH"):
        assert getattr(sig, name) == getattr(signal, name).value, name


def test_a_blocked_signal_waits_in_the_signalfd() -> None:
    out = _run(
        "old = s.sigprocmask(s.SIG_BLOCK, (s.SIGUSR1, s.SIGTERM)); fd = s.signalfd((s.SIGUSR1, s.SIGTERM)); "
        "print(sorted(old) == [], s.read_signals(fd) == []); "
        "os.kill(os.getpid(), s.SIGTERM); os.kill(os.getpid(), s.SIGUSR1); "
        "got = []\nwhile len(got) < 2 and (new := s.read_signals(fd)): got += new\n"
        "print(sorted(got) == [s.SIGUSR1, s.SIGTERM], s.read_signals(fd) == []); "
        "print(sorted(s.sigprocmask(s.SIG_SETMASK, ())) == [s.SIGUSR1, s.SIGTERM])"
    )
    assert out == ["True"] * 5


def test_a_pipe_losing_its_last_writer_signals_its_readers_owner() -> None:
    """The pod's pid 1 lifeline (podrun.pod.init): nothing while the write end is
    open somewhere (a second copy here), the signal asked for once the last copy closes."""
    out = _run(
        "s.sigprocmask(s.SIG_BLOCK, (s.SIGTERM,)); fd = s.signalfd((s.SIGTERM,)); "
        "r, w = os.pipe(); w2 = os.dup(w); s.signal_on_hangup(r, s.SIGTERM); os.close(w); "
        "print(s.read_signals(fd) == []); os.close(w2); print(s.read_signals(fd) == [s.SIGTERM])"
    )
    assert out == ["True", "True"]


def test_the_mask_is_what_the_kernel_shows() -> None:
    out = _run(
        "s.sigprocmask(s.SIG_SETMASK, (s.SIGCHLD, s.SIGHUP)); "
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('SigBlk:')][0])"
    )
    assert int(out[0], 16) == 1 << 16 | 1 << 0


def test_set_default_undoes_ignoring() -> None:
    """Python ignores SIGPIPE; an ignored signal would stay ignored across execve into an app."""
    out = _run(
        "s.set_default((s.SIGPIPE,)); "
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('SigIgn:')][0])"
    )
    assert not int(out[0], 16) & 1 << (sig.SIGPIPE - 1)


def test_a_signal_number_out_of_range_is_refused() -> None:
    out = _run("\ntry:\n s.signalfd((65,))\nexcept ValueError as e:\n print('refused')")
    assert out == ["refused"]
