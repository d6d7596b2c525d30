"""seccomp filters on the real kernel (SECURITY-TESTS case 13: seccomp denies mount, unshare,
keyctl, bpf, kexec…, built per ABI including i386 and x32).

Every filter is loaded in a forked child (seccomp cannot be undone); the child makes raw
syscalls and sends back ``{probe: result}`` where a result is the syscall's return value or
``-errno``.  Root-free but for the two tests marked ``root``.  As root, each probe also runs in an unfiltered child (the control): a denial only
counts when the kernel itself would have answered differently, so a broken filter fails.
Probes are chosen to have no side effect on the host even when nothing blocks them (mount on
a missing path, kexec_load with an invalid arch flag, ptrace PEEKDATA without attaching…).
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import platform
import threading
from collections.abc import Callable, Iterator

import pytest

from podrun.isolation.seccomp import ArgCond, Filter, Rule, compile_bpf, native_arch, resolve_syscall
from podrun.isolation.syscalls import CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWUSER
from podrun.isolation.syscalls import load_seccomp as load_bpf
from podrun.pod.seccomp_policy import (
    default_architectures,
    filter_for,
    parse_seccomp_flag,
)

EPERM, ENOSYS, EACCES = errno.EPERM, errno.ENOSYS, errno.EACCES
PR_SET_NO_NEW_PRIVS = 38
SIGCHLD = 17
MISSING = b"/nonexistent-podrun-seccomp-probe\0"

Probes = Callable[[], dict[str, int]]

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

IS_X86_64 = native_arch() == "x86_64" and platform.machine() == "x86_64"


def nr(name: str) -> int:
    number = resolve_syscall(name, native_arch())
    assert number is not None and number >= 0, name
    return number


def sys(name: str, *args: int) -> int:
    """Raw syscall on the native ABI: the result, or -errno."""
    ctypes.set_errno(0)
    res = int(_libc.syscall(ctypes.c_long(nr(name)), *(ctypes.c_long(a) for a in args)))
    return -ctypes.get_errno() if res == -1 else res


def clone_raw(flags: int) -> int:
    """clone(flags|SIGCHLD) with the parent's stack (fork-like); the child exits at once."""
    res = sys("clone", flags | SIGCHLD, 0, 0, 0, 0)
    if res == 0:
        os._exit(0)
    if res > 0:
        os.waitpid(res, 0)
    return res


class CompatStubs:
    """Machine code to enter the kernel through the i386 (``int 0x80``) and x32 (``syscall``
    with bit 30 set) ABIs from this 64-bit process, placed below 4 GiB (MAP_32BIT) so 32-bit
    pointer arguments can point into the same page."""

    # push rbx; mov eax,edi; mov ebx,esi; mov r8d,ecx; mov ecx,edx; mov edx,r8d; int 0x80; pop rbx; ret
    I386 = bytes.fromhex("5389f889f34189c889d14489c2cd805bc3")
    # mov rax,rdi; mov rdi,rsi; mov rsi,rdx; mov rdx,rcx; syscall; ret
    X64 = bytes.fromhex("4889f84889f74889d64889ca0f05c3")
    X32_BIT = 0x40000000

    def __init__(self) -> None:
        self.page = mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40,  # MAP_32BIT
                              prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self.page[0:len(self.I386)] = self.I386
        self.page[64:64 + len(self.X64)] = self.X64
        self.page[512:512 + len(MISSING)] = MISSING
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.page))
        assert base < 2**32
        fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long)
        self._i386 = fn(base)
        self._x64 = fn(base + 64)
        self.missing_path = base + 512
        self.args = base + 1024  # socketcall's argument array

    def i386(self, number: int, a: int = 0, b: int = 0, c: int = 0) -> int:
        return ctypes.c_int32(self._i386(number, a, b, c)).value

    def x32(self, number: int, a: int = 0, b: int = 0, c: int = 0) -> int:
        return int(self._x64(number | self.X32_BIT, a, b, c))

    def socketcall_socket(self, family: int, kind: int) -> int:
        (ctypes.c_uint32 * 3).from_buffer(self.page, 1024)[:] = [family, kind, 0]
        return self.i386(102, 1, self.args)  # socketcall(SYS_SOCKET, args)


def run_child(probes: Probes, bpf: bytes | None, *, nnp: bool = True,
              before: Callable[[], None] | None = None) -> dict[str, int]:
    """Run ``probes`` in a forked child after loading ``bpf``; return its results."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        try:
            os.close(rfd)
            if before is not None:
                before()
            if nnp:
                assert _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            if bpf is not None:
                load_bpf(bpf)
            out: dict[str, object] = dict(probes())
        except BaseException as exc:
            out = {"error": repr(exc)}
        try:
            os.write(wfd, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    chunks = []
    try:
        while chunk := os.read(rfd, 65536):
            chunks.append(chunk)
    finally:
        os.close(rfd)
        _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"probe child died: {status:#x}"
    result = json.loads(b"".join(chunks) or b"{}")
    assert "error" not in result, result["error"]
    return {k: int(v) for k, v in result.items()}


@pytest.fixture(scope="module")
def default_bpf() -> bytes:
    return compile_bpf(filter_for(frozenset()))


@pytest.fixture(scope="module")
def compat() -> Iterator[CompatStubs | None]:
    if not IS_X86_64:
        yield None
        return
    stubs = CompatStubs()
    # IA32 emulation may be off (ia32_emulation=0): then int 0x80 faults; find out in a child.
    ok = run_child(lambda: {"pid": stubs.i386(20)}, None, nnp=False)
    yield stubs if ok.get("pid", -1) > 0 else None


def native_probes() -> dict[str, int]:
    r: dict[str, int] = {}
    r["getpid"] = sys("getpid")
    rfd, wfd = os.pipe()
    r["write"] = os.write(wfd, b"x")
    os.close(rfd)
    os.close(wfd)
    fd = os.open("/proc/self/status", os.O_RDONLY)
    r["open"] = fd
    os.close(fd)
    path = ctypes.create_string_buffer(MISSING)
    r["mount"] = sys("mount", 0, ctypes.addressof(path), 0, 0, 0)
    r["umount2"] = sys("umount2", ctypes.addressof(path), 0)
    r["unshare_newns"] = sys("unshare", CLONE_NEWNS)
    r["keyctl"] = sys("keyctl", 0, -3, 0)  # KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING
    r["add_key"] = sys("add_key", 0, 0, 0, 0, 0)
    r["bpf"] = sys("bpf", 5, 0, 0)  # BPF_PROG_LOAD with no attributes
    r["kexec_load"] = sys("kexec_load", 0, 0, 0, 0xFFFF0000)  # invalid arch flag
    r["perf_event_open"] = sys("perf_event_open", 0, 0, -1, -1, 0)
    r["ptrace"] = sys("ptrace", 2, 1, 0, 0)  # PEEKDATA on pid 1, not attached
    r["userfaultfd"] = sys("userfaultfd", 0)
    r["io_uring_setup"] = sys("io_uring_setup", 0, 0)
    r["chroot"] = sys("chroot", ctypes.addressof(path))
    r["socket_vsock"] = sys("socket", 40, 1, 0)
    r["socket_alg"] = sys("socket", 38, 5, 0)
    r["socket_unix"] = sys("socket", 1, 1, 0)
    r["socket_inet"] = sys("socket", 2, 2, 0)
    r["clone_newuser"] = clone_raw(CLONE_NEWUSER)
    r["clone_newnet"] = clone_raw(CLONE_NEWNET)
    r["clone_plain"] = clone_raw(0)
    r["clone3"] = sys("clone3", 0, 0)
    r["personality_query"] = sys("personality", 0xFFFFFFFF)
    r["personality_exec"] = sys("personality", 0x0400000)  # READ_IMPLIES_EXEC
    r["unknown_1000"] = int(_libc.syscall(ctypes.c_long(1000))) and -ctypes.get_errno()
    pid = os.fork()  # glibc fork → clone without namespace flags
    if pid == 0:
        os._exit(7)
    r["fork"] = os.WEXITSTATUS(os.waitpid(pid, 0)[1])
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(1))  # glibc tries clone3, falls back to clone
    t.start()
    t.join()
    r["thread"] = len(seen)
    return r


DENIED_EPERM = ("mount", "umount2", "unshare_newns", "keyctl", "add_key", "bpf", "kexec_load",
                "perf_event_open", "ptrace", "userfaultfd", "io_uring_setup", "chroot",
                "clone_newuser", "clone_newnet")
DENIED_ENOSYS = ("socket_vsock", "socket_alg", "clone3", "personality_exec", "unknown_1000")


def test_default_filter_allows_basics_and_denies_escapes(default_bpf: bytes) -> None:
    got = run_child(native_probes, default_bpf)
    for name in ("getpid", "open", "socket_unix", "socket_inet", "clone_plain", "personality_query"):
        assert got[name] >= 0, (name, got[name])
    assert got["write"] == 1 and got["fork"] == 7 and got["thread"] == 1
    for name in DENIED_EPERM:
        assert got[name] == -EPERM, (name, got[name])
    for name in DENIED_ENOSYS:
        assert got[name] == -ENOSYS, (name, got[name])
    if os.geteuid() == 0:
        # The same probes unfiltered: the kernel itself answers otherwise, so the answers
        # above came from the filter.
        control = run_child(native_probes, None, nnp=False)
        for name in ("mount", "umount2", "unshare_newns", "bpf", "perf_event_open", "ptrace",
                     "chroot", "clone_newuser", "clone_newnet", "clone3"):
            assert control[name] != got[name], (name, control[name])


def compat_probes(stubs: CompatStubs) -> Probes:
    def probes() -> dict[str, int]:
        return {
            "i386_getpid": stubs.i386(20),
            "i386_mount": stubs.i386(21, 0, stubs.missing_path, 0),
            "i386_unshare": stubs.i386(310, CLONE_NEWNS),
            "i386_keyctl": stubs.i386(288, 0, -3 & 0xFFFFFFFF, 0),
            "i386_socket_vsock": stubs.i386(359, 40, 1, 0),
            "i386_socket_unix": stubs.i386(359, 1, 1, 0),
            "i386_socketcall_vsock": stubs.socketcall_socket(40, 1),
            "i386_socketcall_unix": stubs.socketcall_socket(1, 1),
            "i386_clone3": stubs.i386(435, 0, 0),
            "x32_keyctl": stubs.x32(250, 0, 0, 0),
            "x32_mount": stubs.x32(165, 0, stubs.missing_path, 0),
            "x32_getpid": stubs.x32(39),
        }
    return probes


def test_compat_abis_are_filtered(default_bpf: bytes, compat: CompatStubs | None) -> None:
    if compat is None:
        pytest.skip("needs x86_64 with IA32 emulation")
    got = run_child(compat_probes(compat), default_bpf)
    assert got["i386_getpid"] > 0 and got["i386_socket_unix"] >= 0
    for name in ("i386_mount", "i386_unshare", "i386_keyctl", "x32_keyctl", "x32_mount"):
        assert got[name] == -EPERM, (name, got[name])
    for name in ("i386_socket_vsock", "i386_clone3"):
        assert got[name] == -ENOSYS, (name, got[name])
    # socketcall hides its arguments: blocked entirely so the family filter cannot be skipped.
    assert got["i386_socketcall_vsock"] == got["i386_socketcall_unix"] == -EPERM
    # x32 getpid passes the filter; the kernel answers (ENOSYS when built without x32).
    assert got["x32_getpid"] != -EPERM
    if os.geteuid() == 0:
        control = run_child(compat_probes(compat), None, nnp=False)
        for name in ("i386_mount", "i386_unshare", "i386_socketcall_unix", "x32_keyctl", "x32_mount"):
            assert control[name] != got[name], (name, control[name])


def test_bpf_checks_every_abi(default_bpf: bytes) -> None:
    if not IS_X86_64:
        pytest.skip("x86_64 ABI constants")
    insns = [(int.from_bytes(default_bpf[i:i + 2], "little"), int.from_bytes(default_bpf[i + 4:i + 8], "little"))
             for i in range(0, len(default_bpf), 8)]
    jeq_k = {k for code, k in insns if code == 0x15}  # BPF_JMP|BPF_JEQ|BPF_K
    assert 0xC000003E in jeq_k  # AUDIT_ARCH_X86_64 (native and x32 share it)
    assert 0x40000003 in jeq_k  # AUDIT_ARCH_I386
    # x32 syscalls are told apart by __X32_SYSCALL_BIT in the number (BPF_ALU|BPF_AND|BPF_K),
    # and get their own number checks: x32 keyctl is 0x40000000 | 250.
    assert (0x54, 0x40000000) in insns
    assert 0x40000000 | 250 in jeq_k
    assert len(default_bpf) % 8 == 0 and len(default_bpf) // 8 < 4096


def getcwd_probe() -> dict[str, int]:
    buf = ctypes.create_string_buffer(4096)
    return {"getcwd": sys("getcwd", ctypes.addressof(buf), 4096), "getpid": sys("getpid")}


# What the probe harness itself needs after the filter is loaded (pipe write, memory, exit).
HARNESS = "write,brk,mmap,munmap,mprotect,madvise,rt_sigprocmask,rt_sigaction,futex,getpid"


@pytest.mark.parametrize(("flag", "expect_getcwd"), [
    (f"mode=retain,{HARNESS},getcwd", None),
    (f"mode=retain,{HARNESS}", -EPERM),
    (f"mode=retain,errno=EACCES,{HARNESS}", -EACCES),
    ("mode=remove,getcwd,errno=EACCES", -EACCES),
    ("mode=remove,keyctl", None),
])
def test_seccomp_flag_filters(flag: str, expect_getcwd: int | None) -> None:
    bpf = compile_bpf(parse_seccomp_flag(flag, frozenset()))
    got = run_child(getcwd_probe, bpf)
    assert got["getpid"] > 0
    if expect_getcwd is None:
        assert got["getcwd"] > 0
    else:
        assert got["getcwd"] == expect_getcwd


def test_retain_blocks_everything_else() -> None:
    bpf = compile_bpf(parse_seccomp_flag(f"mode=retain,{HARNESS}", frozenset()))

    def probes() -> dict[str, int]:
        return {"getppid": sys("getppid"), "uname": sys("uname", 0), "socket": sys("socket", 1, 1, 0),
                "clone3": sys("clone3", 0, 0)}

    got = run_child(probes, bpf)
    assert got == {"getppid": -EPERM, "uname": -EPERM, "socket": -EPERM, "clone3": -ENOSYS}


def test_remove_keeps_the_rest_of_the_default() -> None:
    bpf = compile_bpf(parse_seccomp_flag("mode=remove,getcwd,errno=EACCES", frozenset()))

    def probes() -> dict[str, int]:
        path = ctypes.create_string_buffer(MISSING)
        return {"mount": sys("mount", 0, ctypes.addressof(path), 0, 0, 0), "clone3": sys("clone3", 0, 0)}

    # errno= also replaces EPERM for the profile's own denials; unknown syscalls keep ENOSYS.
    assert run_child(probes, bpf) == {"mount": -EACCES, "clone3": -ENOSYS}


@pytest.mark.root
def test_kept_capabilities_keep_their_syscalls() -> None:
    bpf = compile_bpf(filter_for(frozenset({"CAP_SYS_ADMIN", "CAP_SYS_PTRACE"})))

    def probes() -> dict[str, int]:
        path = ctypes.create_string_buffer(MISSING)
        return {"unshare_newns": sys("unshare", CLONE_NEWNS),  # only this child's mount ns
                "mount": sys("mount", 0, ctypes.addressof(path), 0, 0, 0),
                "ptrace": sys("ptrace", 2, 1, 0, 0), "clone3": sys("clone3", 0, 0),
                "keyctl": sys("keyctl", 0, -3, 0)}

    got = run_child(probes, bpf)
    assert got["unshare_newns"] == 0
    assert got["mount"] == -errno.ENOENT  # reached the kernel
    assert got["ptrace"] not in (-EPERM, -ENOSYS)
    assert got["clone3"] == -errno.EINVAL  # reached the kernel (NULL args, size 0)
    assert got["keyctl"] == -EPERM  # never allowed


def test_an_arbitrary_filter_compiles_and_filters() -> None:
    """Errno values, argument conditions and names the local libseccomp does not know (skipped,
    as runc does) reach the kernel as written."""
    f = Filter("ALLOW", EPERM, default_architectures(), (
        Rule(("getcwd",), "ERRNO", EACCES),
        Rule(("getppid",), "ERRNO", EPERM, (ArgCond(0, "EQ", 0),)),
        Rule(("no_such_syscall_anywhere",), "ERRNO", EPERM),
    ))
    bpf = compile_bpf(f)

    def probes() -> dict[str, int]:
        return {**getcwd_probe(), "getppid": sys("getppid", 0)}

    got = run_child(probes, bpf)
    assert got["getcwd"] == -EACCES and got["getpid"] > 0 and got["getppid"] == -EPERM


@pytest.mark.root
def test_load_needs_no_new_privs_or_cap_sys_admin(default_bpf: bytes) -> None:

    def become_nobody() -> None:
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)  # drops every capability

    def probes() -> dict[str, int]:
        return {}

    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            become_nobody()
            try:
                load_bpf(default_bpf)
            except OSError as exc:
                code = 0 if exc.errno == EACCES and "no_new_privs" in str(exc) else 2
        finally:
            os._exit(code)
    os.close(rfd)
    os.close(wfd)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # With no_new_privs the same unprivileged load works.
    assert run_child(probes, default_bpf, before=become_nobody) == {}


def test_load_rejects_malformed_bpf() -> None:
    def probes() -> dict[str, int]:
        out = {}
        for name, bpf in (("empty", b""), ("partial", b"\0" * 12), ("too_long", b"\0" * 8 * 5000)):
            try:
                load_bpf(bpf)
                out[name] = 0
            except OSError as exc:
                out[name] = -(exc.errno or 0)
        return out

    got = run_child(probes, None)
    assert got == {"empty": -errno.EINVAL, "partial": -errno.EINVAL, "too_long": -errno.E2BIG}


def test_compile_reports_unknown_architecture() -> None:
    with pytest.raises(OSError) as info:
        compile_bpf(Filter("ALLOW", 0, ("no-such-arch",), ()))
    assert info.value.errno == errno.EINVAL and "no-such-arch" in str(info.value)
