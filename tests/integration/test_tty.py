"""Pod code and the caller's terminal (SECURITY-TESTS 25), through a pty harness that stands
for the administrator's terminal: podrun runs with the harness's pty slave as its controlling
terminal and stdio, as under an interactive shell.

Checked on the in-pod probe's data: the app's terminal is a pty of the pod's own devpts (never
the harness's), it leads its own session, TIOCSTI/TIOCLINUX are refused (also with high bits
set in the request), nothing reaches the harness's input queue, and the harness's terminal
settings are the same afterwards (also after SIGTERM).  Plus the relay itself: typing, window
size, ^C, and 10 MB through a pipe.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.fixtures.probe import parse_probe, probe_image
from tests.integration.test_run import PODRUN, Pods, demo_pods

PROBE_CHECKS = ("--ttyinfo", "--isatty", "--try-tiocsti", "0", "--try-tiocsti-high", "0", "--try-tioclinux", "0",
                "--try-tiocsti", "1", "--try-open-tty")


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pods, str]]:
    base = tmp_path_factory.mktemp("tty")
    p = demo_pods(base)
    built = probe_image(base / "probe-layout")
    p.run("fetch", f"oci:{built.layout}", check=True)
    yield p, built.manifest_digest
    p.cleanup()
    assert p.run("list", "--format", "json").stdout.strip() == "[]"


class Terminal:
    """The administrator's terminal: a pty whose slave becomes the controlling terminal and stdio
    of a spawned command; the test reads the screen from the master and types into it."""

    def __init__(self, rows: int = 24, cols: int = 80) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols)
        self.before = termios.tcgetattr(self.slave)
        self.screen = b""
        self.pid = -1

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def spawn(self, *args: str, stdin: int | None = None) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                fcntl.ioctl(self.slave, termios.TIOCSCTTY, 0)
                os.dup2(stdin if stdin is not None else self.slave, 0)
                os.dup2(self.slave, 1)
                os.dup2(self.slave, 2)
                os.close(self.master)
                os.chdir(ROOT)
                os.execv(sys.executable, [sys.executable, *PODRUN[1:], *args])
            finally:
                os._exit(127)
        self.pid = pid

    def read_until(self, needle: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.screen and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.screen += chunk
        return self.screen

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.read_until(b"\0never\0", 0.3)
                return os.waitstatus_to_exitcode(status)
            self.read_until(b"\0never\0", 0.1)
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)
        raise AssertionError(f"podrun did not end; the screen shows {self.screen[-2000:]!r}")

    def pending_input(self) -> int:
        """Bytes waiting in the terminal's input queue, for whoever reads it next (the shell)."""
        return int(struct.unpack("i", fcntl.ioctl(self.slave, termios.FIONREAD, b"\0\0\0\0"))[0])

    def devpts(self) -> str:
        """The devpts instance of the terminal (pty numbers restart at 0 in every instance)."""
        dev = os.fstat(self.slave).st_dev
        return f"{os.major(dev)}:{os.minor(dev)}"

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    t = Terminal()
    yield t
    if t.pid > 0:
        try:
            os.kill(t.pid, signal.SIGKILL)
            os.waitpid(t.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    t.close()


def pipe_holding(data: bytes) -> int:
    """The read end of a pipe that holds *data* and then ends."""
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    return r


def assert_piped_report(terminal: Terminal, expected_stdin: str) -> None:
    assert terminal.wait() == 0, terminal.screen[-2000:]
    report = parse_probe(terminal.screen.decode(errors="replace"))
    assert report["stdin"] == expected_stdin
    assert report["isatty"] == {"0": False, "1": False, "2": False} and report["tty"]["tty_nr"] == 0
    assert_terminal_intact(terminal)


def tty_nr_device(tty_nr: int) -> str:
    return f"{(tty_nr >> 8) & 0xFFF}:{(tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)}"


def assert_own_pty(report: dict[str, Any], terminal: Terminal) -> None:
    tty = report["tty"]
    assert report["isatty"] == {"0": True, "1": True, "2": True}, report["isatty"]
    assert tty["0"] == tty["1"] == tty["2"] and tty["0"]["fsdev"] != terminal.devpts(), (tty, terminal.devpts())
    assert tty["0"]["rdev"].split(":")[0] == "136"  # a Unix98 pty slave
    assert tty["sid"] == report["pid"]  # a session of its own
    assert tty["tty_nr"] != 0 and tty_nr_device(tty["tty_nr"]) == tty["0"]["rdev"]  # and its controlling tty
    assert_injection_refused(report)


def assert_injection_refused(report: dict[str, Any]) -> None:
    for key in ("tiocsti:0", "tiocsti-high:0", "tioclinux:0", "tiocsti:1"):
        check = report["checks"][key]
        assert check["ok"] is False, (key, check)
    for key in ("tiocsti:0", "tiocsti-high:0", "tioclinux:0"):
        assert report["checks"][key]["errno"] == errno.EPERM, (key, report["checks"][key])


def assert_terminal_intact(terminal: Terminal) -> None:
    assert terminal.pending_input() == 0, "something was pushed into the caller's terminal input"
    assert termios.tcgetattr(terminal.slave) == terminal.before, "the terminal settings were not restored"


@pytest.mark.parametrize("caps", ["", "CAP_SYS_ADMIN,CAP_SYS_TTY_CONFIG"])
def test_interactive_app_gets_a_pty_of_its_own(pods: tuple[Pods, str], terminal: Terminal, caps: str) -> None:
    p, probe = pods
    flags = ("--caps-retain", caps) if caps else ()
    terminal.spawn("--dir", str(p.data), "run", "--net", "none", "--interactive", probe, *flags, "--exec",
                   "/probe", "--", *PROBE_CHECKS)
    assert terminal.wait() == 0, terminal.screen[-2000:]
    report = parse_probe(terminal.screen.decode(errors="replace"))
    assert_own_pty(report, terminal)
    assert_terminal_intact(terminal)


def test_app_without_interactive_has_no_terminal(pods: tuple[Pods, str], terminal: Terminal) -> None:
    p, probe = pods
    terminal.spawn("--dir", str(p.data), "run", "--net", "none", probe, "--exec", "/probe", "--", *PROBE_CHECKS)
    assert terminal.wait() == 0, terminal.screen[-2000:]
    report = parse_probe(terminal.screen.decode(errors="replace"))
    assert report["tty"]["tty_nr"] == 0 and report["tty"]["sid"] == report["pid"]
    assert [report["tty"][fd] for fd in "012"] == [None, None, None]
    assert report["checks"]["open-tty"]["errno"] == errno.ENXIO  # no controlling terminal at all
    for key in ("tiocsti:0", "tiocsti-high:0", "tioclinux:0", "tiocsti:1"):
        assert report["checks"][key]["ok"] is False
    assert_terminal_intact(terminal)


def test_piped_stdin_keeps_terminal_output_outside(pods: tuple[Pods, str], terminal: Terminal) -> None:
    """``echo … | podrun run --interactive``: stdin is the pipe, and the terminal on stdout and
    stderr is not handed over either (the output is relayed)."""
    p, probe = pods
    r = pipe_holding(b"piped input\n")
    terminal.spawn("--dir", str(p.data), "run", "--net", "none", "--interactive", probe, "--exec", "/probe", "--",
                   "--print-stdin", *PROBE_CHECKS, stdin=r)
    os.close(r)
    assert_piped_report(terminal, "piped input\n")


@pytest.fixture
def running_probe(pods: tuple[Pods, str]) -> Iterator[str]:
    p, probe = pods
    proc, uuid, _ = p.start("--net", "none", probe, "--exec", "/probe", "--", "--sleep", "600",
                            stdout=subprocess.DEVNULL)
    yield uuid
    p.run("stop", "--force", uuid)
    proc.wait(timeout=30)


def test_enter_gets_a_pty_of_the_apps_devpts(pods: tuple[Pods, str], terminal: Terminal, running_probe: str) -> None:
    p, _ = pods
    terminal.spawn("--dir", str(p.data), "enter", running_probe, "/probe", *PROBE_CHECKS)
    assert terminal.wait() == 0, terminal.screen[-2000:]
    report = parse_probe(terminal.screen.decode(errors="replace"))
    assert_own_pty(report, terminal)
    assert_terminal_intact(terminal)


def test_enter_with_piped_stdin_keeps_the_terminal_outside(pods: tuple[Pods, str], terminal: Terminal,
                                                           running_probe: str) -> None:
    p, _ = pods
    r = pipe_holding(b"to enter\n")
    terminal.spawn("--dir", str(p.data), "enter", running_probe, "/probe", "--print-stdin", *PROBE_CHECKS, stdin=r)
    os.close(r)
    assert_piped_report(terminal, "to enter\n")


def test_typing_window_size_and_ctrl_c(pods: tuple[Pods, str], terminal: Terminal) -> None:
    p, _ = pods
    terminal.resize(33, 101)
    terminal.spawn("--dir", str(p.data), "run", "--net", "none", "--interactive", "demo", "--exec", "/bin/sh", "--",
                   "-c", "stty size; read x; echo got-$x; "
                   "while read y; do s=$(stty size); echo \"size $s\"; [ \"$s\" = '40 120' ] && break; done; "
                   "echo sleeping; exec sleep 100")
    assert b"33 101" in terminal.read_until(b"33 101")
    terminal.type(b"hello\r")
    assert b"got-hello" in terminal.read_until(b"got-hello")
    terminal.resize(40, 120)
    os.kill(terminal.pid, signal.SIGWINCH)  # as the kernel does for the foreground process group
    # The relay passes the new size on in its own time: ask the app again until it sees it (a
    # size never relayed fails below after 30 tries).
    for _ in range(30):
        terminal.type(b"\r")
        if b"size 40 120" in terminal.read_until(b"size 40 120", timeout=1):
            break
    assert b"size 40 120" in terminal.screen
    terminal.read_until(b"sleeping")
    terminal.type(b"\x03")  # ^C: the pod's pty turns it into SIGINT for the app
    assert terminal.wait() == 130
    assert_terminal_intact(terminal)


def test_terminal_restored_after_sigterm(pods: tuple[Pods, str], terminal: Terminal) -> None:
    p, _ = pods
    terminal.spawn("--dir", str(p.data), "run", "--net", "none", "--interactive", "demo", "--exec", "/bin/sh", "--",
                   "-c", "echo started; exec sleep 100")
    terminal.read_until(b"started")
    assert termios.tcgetattr(terminal.slave) != terminal.before  # raw mode while the pod runs
    os.kill(terminal.pid, signal.SIGTERM)
    assert terminal.wait() == 128 + signal.SIGTERM
    assert_terminal_intact(terminal)


def test_ten_megabytes_through_a_pipe(pods: tuple[Pods, str]) -> None:
    p, _ = pods
    data = os.urandom(10 << 20)
    proc = subprocess.run([*PODRUN, "--dir", str(p.data), "run", "--net", "none", "--interactive", "demo", "--exec",
                           "/bin/sha256sum"], input=data, capture_output=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_ten_megabytes_of_output_through_the_pty(pods: tuple[Pods, str], terminal: Terminal) -> None:
    """The relay never blocks: the app's output arrives whole while the caller's keys go in."""
    p, _ = pods
    terminal.spawn("--dir", str(p.data), "run", "--net", "none", "--interactive", "demo", "--exec", "/bin/sh", "--",
                   "-c", "head -c 10485760 /dev/zero | tr '\\0' x; echo; echo END-OF-OUTPUT")
    screen = terminal.read_until(b"END-OF-OUTPUT", timeout=120)
    assert terminal.wait() == 0
    assert screen.count(b"x") == 10 << 20
    assert_terminal_intact(terminal)
