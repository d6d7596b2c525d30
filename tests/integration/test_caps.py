"""Capabilities, no_new_privs and rlimits applied for real, each in a forked child (root only).

The child applies the identity and either reports /proc/self/status itself or execs a reader, whose
output reaches the parent through a pipe: what the kernel says, not what podrun believes it did.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable

import pytest

from podrun.isolation import caps
from podrun.isolation.kernel import KERNEL
from podrun.model.caps import CAP_NAMES
from podrun.pod.caps_policy import DEFAULT_CAPS, cap_numbers
from podrun.stage2.confine import default_rlimits

DEFAULT = cap_numbers(DEFAULT_CAPS)
DEFAULT_MASK = 0x800405FB   # podman's default CapBnd
NOBODY = 65534


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def _reader() -> list[str]:
    busybox = "/bin/busybox"
    if os.path.exists(busybox):
        return [busybox, "cat"]
    cat = shutil.which("cat")
    assert cat
    return [cat]


def run_in_child(body: Callable[[int], None]) -> tuple[int, str]:
    """Fork; the child runs ``body(write_fd)`` (which may exec with stdout on the fd) and exits.

    Returns the child's exit code and everything it wrote; an exception in the child is written as
    ``CHILD-ERROR errno=N message`` and gives exit code 1.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            body(wfd)
            os._exit(0)
        except BaseException as exc:
            os.write(wfd, f"CHILD-ERROR errno={getattr(exc, 'errno', None)} {exc}".encode())
            os._exit(1)
    os.close(wfd)
    chunks = []
    while data := os.read(rfd, 65536):
        chunks.append(data)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


def exec_reader(fd: int, path: str) -> None:
    os.dup2(fd, 1)
    argv = [*_reader(), path]
    os.execv(argv[0], argv)


def status_fields(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


def cap_field(fields: dict[str, str], name: str) -> int:
    return int(fields[name], 16)


def test_root_before_exec_has_exact_sets_and_nnp() -> None:
    def body(fd: int) -> None:
        KERNEL.apply_app_identity(0, 0, [0], DEFAULT)
        caps.set_no_new_privs()
        with open("/proc/self/status") as f:
            os.write(fd, f.read().encode())

    code, out = run_in_child(body)
    assert code == 0, out
    st = status_fields(out)
    assert cap_field(st, "CapEff") == DEFAULT_MASK
    assert cap_field(st, "CapPrm") == DEFAULT_MASK
    assert cap_field(st, "CapBnd") == DEFAULT_MASK
    assert cap_field(st, "CapInh") == 0
    assert cap_field(st, "CapAmb") == 0
    assert st["NoNewPrivs"] == "1"


def test_root_after_exec_keeps_exactly_the_set() -> None:
    def body(fd: int) -> None:
        KERNEL.apply_app_identity(0, 0, [0, 10], DEFAULT)
        caps.set_no_new_privs()
        exec_reader(fd, "/proc/self/status")

    code, out = run_in_child(body)
    assert code == 0, out
    st = status_fields(out)
    assert (cap_field(st, "CapEff"), cap_field(st, "CapPrm"), cap_field(st, "CapBnd")) == (DEFAULT_MASK,) * 3
    assert (cap_field(st, "CapInh"), cap_field(st, "CapAmb")) == (0, 0)
    assert st["NoNewPrivs"] == "1"
    assert st["Groups"].split() == ["0", "10"]


def test_non_root_after_exec_has_bounding_only() -> None:
    """rkt's rule: for a non-root user the set limits bounding; effective/permitted end up empty."""
    def body(fd: int) -> None:
        KERNEL.apply_app_identity(NOBODY, NOBODY, [NOBODY], DEFAULT)
        caps.set_no_new_privs()
        exec_reader(fd, "/proc/self/status")

    code, out = run_in_child(body)
    assert code == 0, out
    st = status_fields(out)
    assert st["Uid"].split() == [str(NOBODY)] * 4
    assert st["Gid"].split() == [str(NOBODY)] * 4
    assert st["Groups"].split() == [str(NOBODY)]
    assert cap_field(st, "CapBnd") == DEFAULT_MASK
    for name in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert cap_field(st, name) == 0, name
    assert st["NoNewPrivs"] == "1"


def test_non_root_with_ambient_keeps_those_caps_across_exec() -> None:
    """podman's rule for caps added explicitly to a non-root user: ambient (and inheritable)."""
    bind = CAP_NAMES["CAP_NET_BIND_SERVICE"]

    def body(fd: int) -> None:
        KERNEL.apply_app_identity(NOBODY, NOBODY, [], DEFAULT, ambient=frozenset({bind}))
        caps.set_no_new_privs()
        exec_reader(fd, "/proc/self/status")

    code, out = run_in_child(body)
    assert code == 0, out
    st = status_fields(out)
    for name in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert cap_field(st, name) == 1 << bind, name
    assert cap_field(st, "CapBnd") == DEFAULT_MASK


def test_ambient_outside_the_set_is_refused() -> None:
    def body(fd: int) -> None:
        KERNEL.apply_app_identity(NOBODY, NOBODY, [], frozenset({0}), ambient=frozenset({1}))

    code, out = run_in_child(body)
    assert code == 1
    assert f"errno={errno.EINVAL}" in out and "subset" in out


def test_errors_carry_errno_and_call() -> None:
    def body(fd: int) -> None:
        KERNEL.apply_app_identity(NOBODY, NOBODY, [], DEFAULT - {CAP_NAMES["CAP_SETPCAP"]})
        caps.drop_bounding(frozenset())   # dropping from bounding needs CAP_SETPCAP

    code, out = run_in_child(body)
    assert code == 1
    assert f"errno={errno.EPERM}" in out and "PR_CAPBSET_DROP" in out

    def body2(fd: int) -> None:
        caps.set_caps(frozenset(), frozenset(), frozenset())
        caps.set_caps(DEFAULT, DEFAULT, frozenset())     # permitted can never grow again

    code, out = run_in_child(body2)
    assert code == 1
    assert f"errno={errno.EPERM}" in out and "capset" in out


def test_rlimits_applied_across_exec() -> None:
    def body(fd: int) -> None:
        caps.set_rlimits({"RLIMIT_NOFILE": (64, 128), "RLIMIT_CORE": (0, 0), "RLIMIT_STACK": (8 << 20, -1)})
        exec_reader(fd, "/proc/self/limits")

    code, out = run_in_child(body)
    assert code == 0, out
    lines = {line[:26].strip(): line[26:].split() for line in out.splitlines()[1:]}
    assert lines["Max open files"][:2] == ["64", "128"]
    assert lines["Max core file size"][:2] == ["0", "0"]
    assert lines["Max stack size"][:2] == [str(8 << 20), "unlimited"]


def test_default_rlimits_apply_on_this_host() -> None:
    """The clamped defaults never ask for more than the process may set (no EPERM)."""
    expected = default_rlimits()

    def body(fd: int) -> None:
        caps.set_rlimits(expected)
        exec_reader(fd, "/proc/self/limits")

    code, out = run_in_child(body)
    assert code == 0, out
    lines = {line[:26].strip(): line[26:].split() for line in out.splitlines()[1:]}
    assert lines["Max open files"][:2] == [str(v) for v in expected["RLIMIT_NOFILE"]]
    assert lines["Max processes"][:2] == [str(v) for v in expected["RLIMIT_NPROC"]]


def test_unknown_rlimit_and_soft_over_hard_refused() -> None:
    def body(fd: int) -> None:
        caps.set_rlimits({"RLIMIT_BOGUS": (1, 1)})

    code, out = run_in_child(body)
    assert code == 1 and f"errno={errno.EINVAL}" in out and "RLIMIT_BOGUS" in out

    def body2(fd: int) -> None:
        caps.set_rlimits({"RLIMIT_NOFILE": (100, 10)})

    code, out = run_in_child(body2)
    assert code == 1 and f"errno={errno.EINVAL}" in out and "setrlimit(RLIMIT_NOFILE)" in out
