"""seccomp-bpf through libseccomp (ctypes): compile a filter to BPF bytes, and load BPF bytes.

Kernel layer (ARCHITECTURE.md §3): no policy here and no imports from the rest of podrun.  The
filter is plain data (``Filter``/``Rule``/``ArgCond``); which syscalls to allow is decided in
``podrun.pod.seccomp_policy``.  Failures raise ``OSError(errno, message, name)``.

Compiling and loading are separate steps so that stage0 (or a cache keyed by the filter) can
compile once and stage2 only has to call ``load_bpf`` right before ``execve``: loading is one
``prctl`` and needs no libseccomp at all.

Loading a filter requires that the calling thread either has ``no_new_privs`` set
(``prctl(PR_SET_NO_NEW_PRIVS, 1)``) or holds ``CAP_SYS_ADMIN`` in its user namespace
(seccomp(2), "EACCES").  ``load_bpf`` deliberately does not set no_new_privs itself: the caller
decides (``--no-new-privileges=false`` is a supported opt-out), so the order "set NNP, drop
capabilities, load seccomp, execve" stays visible in stage2.
"""

from __future__ import annotations

import ctypes
import errno
import os
from functools import cache

from podrun.isolation.consts import LIBSECCOMP
from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# Actions as libseccomp encodes them (seccomp.h); they equal the kernel's SECCOMP_RET_* values.
_ACT_KILL_PROCESS = 0x80000000
_ACT_KILL_THREAD = 0x00000000
_ACT_TRAP = 0x00030000
_ACT_ERRNO = 0x00050000
_ACT_LOG = 0x7FFC0000
_ACT_ALLOW = 0x7FFF0000

ACTIONS = frozenset({"ALLOW", "ERRNO", "KILL_PROCESS", "KILL_THREAD", "TRAP", "LOG"})

# enum scmp_compare
_OPS = {"NE": 1, "LT": 2, "LE": 3, "EQ": 4, "GE": 5, "GT": 6, "MASKED_EQ": 7}
OPS = frozenset(_OPS)

# enum scmp_filter_attr
_ATTR_ACT_BADARCH = 2
_ATTR_CTL_OPTIMIZE = 8

# libseccomp's "unknown syscall" marker (__NR_SCMP_ERROR).  Numbers at or below
# _PNR_BASE are its pseudo-syscalls for names that do not exist on the ABI asked about;
# numbers between them (x86's -101 for socket, -200 for ipc…) are syscalls multiplexed
# through socketcall/ipc, which do exist there.
_NR_SCMP_ERROR = -1
_PNR_BASE = -10000

# prctl(2) / seccomp(2) constants from <linux/prctl.h> and <linux/seccomp.h>.
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_BPF_INSN_SIZE = 8  # struct sock_filter {u16 code; u8 jt; u8 jf; u32 k;}
_BPF_MAXINSNS = 4096  # kernel limit per filter program

# uname machine → libseccomp arch name, for the few spellings that differ.
_MACHINE_TO_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "i386": "x86", "i686": "x86", "armv7l": "arm"}


_EPERM = errno.EPERM  # the Rule field named errno hides the module in its __init__


class ArgCond(Record):
    """One comparison on a syscall argument: ``args[index] OP value`` (``MASKED_EQ``:
    ``args[index] & value == value_two``)."""

    index: Final[int]
    op: Final[str]
    value: Final[int]
    value_two: Final[int]

    __slots__ = ("index", "op", "value", "value_two")

    def __init__(self, index: int, op: str, value: int, value_two: int = 0) -> None:
        self.index = index
        self.op = op
        self.value = value
        self.value_two = value_two


class Rule(Record):
    """``action`` for every syscall in ``names`` whose arguments satisfy all of ``args``.
    ``errno`` is used only by the ERRNO action."""

    names: Final[tuple[str, ...]]
    action: Final[str]
    errno: Final[int]
    args: Final[tuple[ArgCond, ...]]

    __slots__ = ("names", "action", "errno", "args")

    def __init__(
        self, names: tuple[str, ...],
        action: str,
        errno: int = _EPERM,
        args: tuple[ArgCond, ...] = (),
    ) -> None:
        self.names = names
        self.action = action
        self.errno = errno
        self.args = args


class Filter(Record):
    """A whole seccomp filter: the default for syscalls no rule matches, the ABIs it covers
    (libseccomp arch names such as ``x86_64``, ``x86``, ``x32``) and the rules."""

    default_action: Final[str]
    default_errno: Final[int]
    architectures: Final[tuple[str, ...]]
    rules: Final[tuple[Rule, ...]]

    __slots__ = ("default_action", "default_errno", "architectures", "rules")

    def __init__(
        self, default_action: str,
        default_errno: int,
        architectures: tuple[str, ...],
        rules: tuple[Rule, ...],
    ) -> None:
        self.default_action = default_action
        self.default_errno = default_errno
        self.architectures = architectures
        self.rules = rules


class _ArgCmp(ctypes.Structure):
    """struct scmp_arg_cmp."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@cache
def _lib() -> ctypes.CDLL:
    """Load libseccomp once, on first use (stage2 only loads BPF and never needs it)."""
    try:
        lib = ctypes.CDLL(LIBSECCOMP, use_errno=True)
    except OSError as exc:
        raise OSError(errno.ENOENT, f"cannot load {LIBSECCOMP}: {exc}", LIBSECCOMP) from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.restype = None
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_arch_add.restype = ctypes.c_int
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_native.restype = ctypes.c_uint32
    lib.seccomp_arch_native.argtypes = []
    lib.seccomp_attr_set.restype = ctypes.c_int
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name_arch.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name_arch.argtypes = [ctypes.c_uint32, ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _check(rc: int, call: str, name: str) -> None:
    """libseccomp returns -errno; turn that into OSError naming the call and its subject."""
    if rc < 0:
        raise OSError(-rc, f"{call}: {os.strerror(-rc)}", name)


@cache
def native_arch() -> str:
    """The libseccomp name of this machine's ABI (``x86_64``, ``aarch64``, …), without
    loading libseccomp."""
    machine = os.uname().machine
    return _MACHINE_TO_ARCH.get(machine, machine)


@cache
def arch_token(name: str) -> int:
    """libseccomp's token (the AUDIT_ARCH_* value) for an arch name; OSError(EINVAL) if unknown."""
    token = int(_lib().seccomp_arch_resolve_name(name.encode()))
    if token == 0:
        raise OSError(errno.EINVAL, "unknown seccomp architecture", name)
    return token


def resolve_syscall(name: str, arch: str | None = None) -> int | None:
    """The syscall number of ``name`` on ``arch`` (default: native), or None when libseccomp
    does not know the name there.  Negative numbers are libseccomp's pseudo-syscalls (the name
    exists on some ABI, e.g. ``socketcall`` on x86_64, or is multiplexed on this one)."""
    lib = _lib()
    if arch is None:
        nr = int(lib.seccomp_syscall_resolve_name(name.encode()))
    else:
        nr = int(lib.seccomp_syscall_resolve_name_arch(arch_token(arch), name.encode()))
    return None if nr == _NR_SCMP_ERROR else nr


def syscall_exists(name: str, arch: str) -> bool:
    """Whether ``name`` is a real (possibly socketcall/ipc-multiplexed) syscall on ``arch``."""
    nr = resolve_syscall(name, arch)
    return nr is not None and nr > _PNR_BASE


def _action_value(action: str, err: int) -> int:
    if action == "ALLOW":
        return _ACT_ALLOW
    if action == "ERRNO":
        if not 0 <= err <= 4095:
            raise OSError(errno.EINVAL, "seccomp errno out of range 0..4095", str(err))
        return _ACT_ERRNO | err
    if action == "KILL_PROCESS":
        return _ACT_KILL_PROCESS
    if action == "KILL_THREAD":
        return _ACT_KILL_THREAD
    if action == "TRAP":
        return _ACT_TRAP
    if action == "LOG":
        return _ACT_LOG
    raise OSError(errno.EINVAL, "unknown seccomp action", action)


def _arg_array(rule: Rule) -> ctypes.Array[_ArgCmp]:
    conds = (_ArgCmp * max(1, len(rule.args)))()
    for i, cond in enumerate(rule.args):
        if cond.op not in _OPS:
            raise OSError(errno.EINVAL, "unknown seccomp comparison operator", cond.op)
        if not 0 <= cond.index <= 5:
            raise OSError(errno.EINVAL, "seccomp argument index out of range 0..5", str(cond.index))
        conds[i].arg = cond.index
        conds[i].op = _OPS[cond.op]
        # Values are 64-bit unsigned in libseccomp: store negative numbers two's-complement.
        conds[i].datum_a = cond.value & 0xFFFFFFFFFFFFFFFF
        conds[i].datum_b = cond.value_two & 0xFFFFFFFFFFFFFFFF
    return conds


def compile_bpf(f: Filter) -> bytes:
    """Compile ``f`` into a classic-BPF program (raw ``struct sock_filter`` array) for
    ``load_bpf``.  The native arch is always covered; every name in ``f.architectures`` is
    added.  Syscall names libseccomp does not know on any of the filter's ABIs are skipped, as
    runc does, so one policy works across libseccomp versions.  Rules whose action equals the
    default are skipped too (libseccomp refuses them; they would change nothing)."""
    lib = _lib()
    default = _action_value(f.default_action, f.default_errno)
    arches = tuple(dict.fromkeys((native_arch(), *f.architectures)))
    tokens = [arch_token(a) for a in arches]
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise OSError(errno.EINVAL, "seccomp_init failed", f.default_action)
    try:
        native = int(lib.seccomp_arch_native())
        for arch, token in zip(arches, tokens, strict=True):
            if token != native:
                _check(lib.seccomp_arch_add(ctx, token), "seccomp_arch_add", arch)
        # A syscall from an ABI not listed must never run unfiltered: kill the process.
        _check(lib.seccomp_attr_set(ctx, _ATTR_ACT_BADARCH, _ACT_KILL_PROCESS), "seccomp_attr_set", "badarch")
        # Binary search over syscall numbers instead of a linear scan: an allowlist of
        # ~350 names otherwise costs every syscall of the app a walk through the list.
        _check(lib.seccomp_attr_set(ctx, _ATTR_CTL_OPTIMIZE, 2), "seccomp_attr_set", "optimize")
        for rule in f.rules:
            action = _action_value(rule.action, rule.errno)
            if action == default:
                continue
            conds = _arg_array(rule)
            for name in rule.names:
                # The generic resolver maps a name to the native number or to libseccomp's
                # pseudo number, which rule_add translates per ABI (e.g. socketcall exists
                # only on x86); names unknown on every ABI of the filter are skipped.
                nr = resolve_syscall(name)
                if nr is None or not any(syscall_exists(name, arch) for arch in arches):
                    continue
                rc = lib.seccomp_rule_add_array(ctx, action, nr, len(rule.args), conds)
                _check(rc, "seccomp_rule_add", name)
        fd = os.memfd_create("podrun-seccomp", os.MFD_CLOEXEC)
        try:
            _check(lib.seccomp_export_bpf(ctx, fd), "seccomp_export_bpf", "memfd")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


class _SockFprog(ctypes.Structure):
    """struct sock_fprog."""

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.restype = ctypes.c_int
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def load_bpf(bpf: bytes) -> None:
    """Install ``bpf`` (from ``compile_bpf``) as a seccomp filter on the calling thread.

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
    rc = _libc().prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0)
    if rc != 0:
        err = ctypes.get_errno()
        hint = " (set no_new_privs or hold CAP_SYS_ADMIN first)" if err == errno.EACCES else ""
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}{hint}", "seccomp")
