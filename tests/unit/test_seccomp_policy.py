"""The seccomp policy as data: default profile contents, ``--seccomp`` parsing, OCI profiles.

No root and no filter is loaded here (tests/integration/test_seccomp.py does that); libseccomp
is only asked to resolve syscall names.
"""

from __future__ import annotations

import errno
import json

import pytest

from podrun.errors import UsageError
from podrun.isolation.seccomp import ArgCond, Filter, Rule, native_arch
from podrun.pod.seccomp_policy import (
    CAP_GATED,
    DENIED,
    GROUP_ALLOWLIST,
    GROUP_DENYLIST,
    MAX_PROFILE_BYTES,
    NAMESPACE_CLONE_MASK,
    RETAIN_ALWAYS,
    allowed_names,
    default_architectures,
    default_filter,
    denied_names,
    filter_for,
    load_oci_profile,
    parse_seccomp_flag,
)

EPERM, ENOSYS = errno.EPERM, errno.ENOSYS
NO_CAPS: frozenset[str] = frozenset()


def rules_for(f: Filter, name: str) -> list[Rule]:
    return [r for r in f.rules if name in r.names]


def unconditional_action(f: Filter, name: str) -> tuple[str, int] | None:
    """The action of the argument-less rule for ``name``, or None if there is none."""
    found = [(r.action, r.errno) for r in rules_for(f, name) if not r.args]
    assert len(found) <= 1, (name, found)
    return found[0] if found else None


def test_default_errno_is_enosys_and_denials_are_eperm() -> None:
    f = default_filter()
    assert (f.default_action, f.default_errno) == ("ERRNO", ENOSYS)
    for name in ("mount", "umount2", "pivot_root", "unshare", "setns", "keyctl", "add_key", "request_key",
                 "bpf", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                 "ptrace", "perf_event_open", "reboot", "swapon", "swapoff", "acct", "settimeofday",
                 "clock_settime", "open_by_handle_at", "userfaultfd", "io_uring_setup", "chroot"):
        assert unconditional_action(f, name) == ("ERRNO", EPERM), name
        assert name not in allowed_names(f), name


def test_default_allows_the_basics() -> None:
    f = default_filter()
    for name in ("read", "write", "openat", "close", "execve", "exit_group", "mmap", "brk", "futex",
                 "rt_sigaction", "getpid", "wait4", "epoll_wait", "connect", "stat64", "_llseek",
                 "getcwd", "arch_prctl", "set_tls", "seccomp", "prctl"):
        assert unconditional_action(f, name) == ("ALLOW", EPERM), name


def test_allowed_and_denied_never_overlap() -> None:
    for caps in (NO_CAPS, frozenset({"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME"})):
        f = filter_for(caps)
        assert not allowed_names(f) & {n for r in f.rules if r.action == "ERRNO" and not r.args for n in r.names}


def test_clone_namespace_flags_are_denied_and_clone3_is_enosys() -> None:
    f = default_filter()
    clone = rules_for(f, "clone")
    allow = [r for r in clone if r.action == "ALLOW"]
    assert allow == [Rule(("clone",), "ALLOW", EPERM, (ArgCond(0, "MASKED_EQ", NAMESPACE_CLONE_MASK, 0),))]
    denied_bits = sum(r.args[0].value for r in clone if r.action == "ERRNO")
    assert denied_bits == NAMESPACE_CLONE_MASK
    assert all(r.errno == EPERM and r.args[0].op == "MASKED_EQ" for r in clone if r.action == "ERRNO")
    assert unconditional_action(f, "clone3") == ("ERRNO", ENOSYS)


def test_socket_excludes_vsock_and_alg_and_socketcall_is_denied() -> None:
    f = default_filter()
    allowed_ranges = [(r.args[0].op, r.args[0].value) for r in rules_for(f, "socket")]
    assert sorted(allowed_ranges) == [("EQ", 39), ("GT", 40), ("LT", 38)]
    assert all(r.action == "ALLOW" for r in rules_for(f, "socket"))
    assert unconditional_action(f, "socketcall") == ("ERRNO", EPERM)


def test_personality_only_safe_values() -> None:
    values = {r.args[0].value for r in rules_for(default_filter(), "personality")}
    assert values == {0, 8, 0x20000, 0x20008, 0xFFFFFFFF}


def test_architectures_cover_compat_abis() -> None:
    arches = default_filter().architectures
    assert arches[0] == native_arch()
    if native_arch() == "x86_64":
        assert set(arches) == {"x86_64", "x86", "x32"}
    if native_arch() == "aarch64":
        assert set(arches) == {"aarch64", "arm"}


@pytest.mark.parametrize(("cap", "names"), [
    ("CAP_SYS_ADMIN", ("mount", "umount2", "unshare", "setns", "pivot_root", "bpf", "clone3")),
    ("SYS_PTRACE", ("ptrace", "process_vm_readv")),
    ("cap_sys_time", ("settimeofday", "clock_settime")),
    ("CAP_SYS_MODULE", ("init_module", "delete_module")),
    ("CAP_BPF", ("bpf",)),
    ("CAP_SYS_CHROOT", ("chroot",)),
])
def test_capabilities_widen_the_filter(cap: str, names: tuple[str, ...]) -> None:
    f = filter_for(frozenset({cap}))
    for name in names:
        assert unconditional_action(f, name) == ("ALLOW", EPERM), (cap, name)
    # Never widened by any capability.
    for name in DENIED:
        assert unconditional_action(f, name) == ("ERRNO", EPERM), name


def test_cap_sys_admin_allows_any_clone() -> None:
    f = filter_for(frozenset({"CAP_SYS_ADMIN"}))
    assert [r.args for r in rules_for(f, "clone")] == [()]


def test_every_cap_gated_name_is_denied_without_caps() -> None:
    f = default_filter()
    for _, names in CAP_GATED:
        for name in names:
            assert unconditional_action(f, name) == ("ERRNO", EPERM), name


# ---- --seccomp ------------------------------------------------------------------------------

def test_retain_allows_exactly_the_named_syscalls() -> None:
    f = parse_seccomp_flag("mode=retain,read,write,getcwd", NO_CAPS)
    assert (f.default_action, f.default_errno) == ("ERRNO", EPERM)
    assert allowed_names(f) == {"read", "write", "getcwd", *RETAIN_ALWAYS}
    assert unconditional_action(f, "clone3") == ("ERRNO", ENOSYS)


def test_retain_keeps_argument_filters() -> None:
    f = parse_seccomp_flag("mode=retain,clone,socket", NO_CAPS)
    assert all(r.args for r in rules_for(f, "clone"))
    assert all(r.args for r in rules_for(f, "socket"))
    # socket allowed → socketcall denied with an errno other than the default (i386 bypass).
    assert unconditional_action(f, "socketcall") == ("ERRNO", ENOSYS)


def test_retain_with_errno_and_denied_name() -> None:
    f = parse_seccomp_flag("mode=retain,errno=ENOTSUP,mount,write", NO_CAPS)
    assert f.default_errno == errno.ENOTSUP
    assert "mount" in allowed_names(f)  # an explicit retain is an explicit opt-in


def test_remove_denies_the_named_syscalls() -> None:
    f = parse_seccomp_flag("mode=remove,getcwd,chmod", NO_CAPS)
    assert (f.default_action, f.default_errno) == ("ERRNO", ENOSYS)
    assert unconditional_action(f, "getcwd") == ("ERRNO", EPERM)
    assert "getcwd" not in allowed_names(f) and "chmod" not in allowed_names(f)
    assert "read" in allowed_names(f)


def test_remove_errno_replaces_the_profiles_eperm() -> None:
    f = parse_seccomp_flag("mode=remove,getcwd,errno=EACCES", NO_CAPS)
    assert unconditional_action(f, "getcwd") == ("ERRNO", errno.EACCES)
    assert unconditional_action(f, "mount") == ("ERRNO", errno.EACCES)
    assert unconditional_action(f, "clone3") == ("ERRNO", ENOSYS)


def test_remove_with_errno_equal_to_default_keeps_socketcall_denied() -> None:
    f = parse_seccomp_flag("mode=remove,getcwd,errno=ENOSYS", NO_CAPS)
    assert unconditional_action(f, "socketcall") == ("ERRNO", EPERM)


def test_remove_conditional_syscall() -> None:
    f = parse_seccomp_flag("mode=remove,clone", NO_CAPS)
    assert rules_for(f, "clone") == [Rule(("clone",), "ERRNO", EPERM)]


def test_groups_expand() -> None:
    base = default_filter()
    f = parse_seccomp_flag(f"mode=remove,{GROUP_DENYLIST}", NO_CAPS)
    assert denied_names(f) >= denied_names(base)
    g = parse_seccomp_flag(f"mode=retain,{GROUP_ALLOWLIST}", NO_CAPS)
    assert allowed_names(g) == allowed_names(base) | set(RETAIN_ALWAYS)
    assert "mount" not in allowed_names(g)
    h = parse_seccomp_flag(f"mode=retain,{GROUP_ALLOWLIST}", frozenset({"CAP_SYS_ADMIN"}))
    assert "mount" in allowed_names(h)


@pytest.mark.parametrize(("text", "fragment"), [
    ("read,write", "missing mode"),
    ("mode=keep,read", "mode must be retain or remove"),
    ("mode=retain", "no syscalls named"),
    ("mode=retain,read,,write", "empty item"),
    ("mode=retain,mode=remove,read", "unknown or repeated option 'mode'"),
    ("mode=retain,level=3,read", "unknown or repeated option 'level'"),
    ("mode=retain,errno=EWHATEVER,read", "unknown errno name 'EWHATEVER'"),
    ("mode=retain,errno=errno,read", "unknown errno name 'errno'"),
    ("mode=retain,no_such_syscall", "unknown syscall 'no_such_syscall'"),
    ("mode=remove,Read", "unknown syscall 'Read'"),
    ("mode=remove,@rkt/default-blacklist", "unknown group '@rkt/default-blacklist'"),
])
def test_flag_errors(text: str, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_seccomp_flag(text, NO_CAPS)
    message = str(info.value)
    assert fragment in message
    assert "--seccomp" in message and "\n" not in message


def test_flag_too_long() -> None:
    with pytest.raises(UsageError, match="limit"):
        parse_seccomp_flag("mode=retain," + "read," * 20000 + "write", NO_CAPS)


def test_compat_only_syscall_names_are_accepted() -> None:
    if native_arch() != "x86_64":
        pytest.skip("x86 names")
    f = parse_seccomp_flag("mode=retain,socketcall,stat64", NO_CAPS)
    assert {"socketcall", "stat64"} <= allowed_names(f)


# ---- OCI profiles ---------------------------------------------------------------------------

def oci(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_oci_profile_parses() -> None:
    f = load_oci_profile(oci({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64",
                          "SCMP_ARCH_ARM", "SCMP_ARCH_S390X"],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": ["reboot"], "action": "SCMP_ACT_KILL"},
            {"names": ["acct"], "action": "SCMP_ACT_LOG"},
        ],
    }))
    assert (f.default_action, f.default_errno) == ("ERRNO", 38)
    assert set(f.architectures) == set(default_architectures())
    assert f.rules[0] == Rule(("read", "write"), "ALLOW")
    assert f.rules[1] == Rule(("mount",), "ERRNO", EPERM)
    assert f.rules[2].errno == 13
    assert f.rules[3].args == (ArgCond(0, "EQ", 8),)
    assert f.rules[4].args == (ArgCond(0, "MASKED_EQ", 2114060288, 0),)
    assert [r.action for r in f.rules[5:]] == ["KILL_THREAD", "LOG"]


def test_oci_profile_minimal() -> None:
    f = load_oci_profile(b'{"defaultAction": "SCMP_ACT_ALLOW"}')
    assert f == Filter("ALLOW", EPERM, (native_arch(),), ())


@pytest.mark.parametrize(("data", "fragment"), [
    (b"{not json", "not valid JSON"),
    (b"[]", "top level must be a JSON object"),
    (b"\xff\xfe", "not valid JSON"),
    (oci({}), "defaultAction None is not a known"),
    (oci({"defaultAction": "SCMP_ACT_NOTIFY"}), "not supported"),
    (oci({"defaultAction": "SCMP_ACT_TRACE"}), "not supported"),
    (oci({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}), "defaultErrnoRet"),
    (oci({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": True}), "defaultErrnoRet"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "architectures": "SCMP_ARCH_X86"}), "architectures"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}), "syscalls must be a list"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [1]}), "syscalls[0] must be an object"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
     "syscalls[0].names"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["../x"], "action": "SCMP_ACT_ERRNO"}]}),
     "syscalls[0].names"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOPE"}]}),
     "syscalls[0].action"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                           "errnoRet": 5000}]}), "errnoRet"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                           "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
     "args[0].index"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                           "args": [{"index": 0, "value": 1, "op": "EQ"}]}]}),
     "args[0] needs an op"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                           "args": [{"index": 0, "value": 2**64, "op": "SCMP_CMP_EQ"}]}]}),
     "args[0].value"),
    (oci({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                                                           "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}),
     "includes/excludes"),
])
def test_oci_profile_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(UsageError) as info:
        load_oci_profile(data)
    assert fragment in str(info.value)
    assert str(info.value).startswith("seccomp profile")


def test_oci_profile_size_limit() -> None:
    data = b" " * MAX_PROFILE_BYTES + b'{"defaultAction": "SCMP_ACT_ALLOW"}'
    with pytest.raises(UsageError, match="limit"):
        load_oci_profile(data)
