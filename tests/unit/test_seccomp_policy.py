"""The seccomp policy as data: default profile contents, ``--seccomp`` parsing, OCI profiles.

No root and no filter is loaded here (tests/unit/test_seccomp.py does that); libseccomp
is only asked to resolve syscall names.
"""

from __future__ import annotations

import errno

import pytest

from podrun.errors import UsageError
from podrun.isolation.seccomp import ArgCond, Filter, Rule, native_arch
from podrun.pod import seccomp_policy
from podrun.pod.seccomp_policy import (
    CAP_GATED,
    DENIED,
    GROUP_ALLOWLIST,
    GROUP_DENYLIST,
    MAX_FLAG_CHARS,
    NAMESPACE_CLONE_MASK,
    RETAIN_ALWAYS,
    _guard_socketcall,
    allowed_names,
    default_architectures,
    denied_names,
    filter_for,
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
    f = filter_for(NO_CAPS)
    assert (f.default_action, f.default_errno) == ("ERRNO", ENOSYS)
    for name in ("mount", "umount2", "pivot_root", "unshare", "setns", "keyctl", "add_key", "request_key",
                 "bpf", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
                 "ptrace", "perf_event_open", "reboot", "swapon", "swapoff", "acct", "settimeofday",
                 "clock_settime", "open_by_handle_at", "userfaultfd", "io_uring_setup", "chroot"):
        assert unconditional_action(f, name) == ("ERRNO", EPERM), name
        assert name not in allowed_names(f), name


def test_default_allows_the_basics() -> None:
    f = filter_for(NO_CAPS)
    for name in ("read", "write", "openat", "close", "execve", "exit_group", "mmap", "brk", "futex",
                 "rt_sigaction", "getpid", "wait4", "epoll_wait", "connect", "stat64", "_llseek",
                 "getcwd", "arch_prctl", "set_tls", "seccomp", "prctl"):
        assert unconditional_action(f, name) == ("ALLOW", EPERM), name


def test_allowed_and_denied_never_overlap() -> None:
    for caps in (NO_CAPS, frozenset({"CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_TIME"})):
        f = filter_for(caps)
        assert not allowed_names(f) & {n for r in f.rules if r.action == "ERRNO" and not r.args for n in r.names}


def test_clone_namespace_flags_are_denied_and_clone3_is_enosys() -> None:
    f = filter_for(NO_CAPS)
    clone = rules_for(f, "clone")
    allow = [r for r in clone if r.action == "ALLOW"]
    assert allow == [Rule(("clone",), "ALLOW", EPERM, (ArgCond(0, "MASKED_EQ", NAMESPACE_CLONE_MASK, 0),))]
    denied_bits = sum(r.args[0].value for r in clone if r.action == "ERRNO")
    assert denied_bits == NAMESPACE_CLONE_MASK
    assert all(r.errno == EPERM and r.args[0].op == "MASKED_EQ" for r in clone if r.action == "ERRNO")
    assert unconditional_action(f, "clone3") == ("ERRNO", ENOSYS)


def test_socket_excludes_vsock_and_alg_and_socketcall_is_denied() -> None:
    f = filter_for(NO_CAPS)
    allowed_ranges = [(r.args[0].op, r.args[0].value) for r in rules_for(f, "socket")]
    assert sorted(allowed_ranges) == [("EQ", 39), ("GT", 40), ("LT", 38)]
    assert all(r.action == "ALLOW" for r in rules_for(f, "socket"))
    assert unconditional_action(f, "socketcall") == ("ERRNO", EPERM)


def test_personality_only_safe_values() -> None:
    values = {r.args[0].value for r in rules_for(filter_for(NO_CAPS), "personality")}
    assert values == {0, 8, 0x20000, 0x20008, 0xFFFFFFFF}


def test_architectures_cover_compat_abis() -> None:
    arches = filter_for(NO_CAPS).architectures
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
    f = filter_for(NO_CAPS)
    for _, names in CAP_GATED:
        for name in names:
            assert unconditional_action(f, name) == ("ERRNO", EPERM), name


# Every namespace flag of clone(2), as <linux/sched.h> numbers them.
CLONE_NS_BITS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)


def conditional_rules(f: Filter, name: str) -> list[Rule]:
    return [r for r in rules_for(f, name) if r.args]


@pytest.mark.parametrize(("arch", "flags_arg"), [("x86_64", 0), ("aarch64", 0), ("s390x", 1), ("s390", 1)])
def test_clone_rules_test_the_flags_argument_of_the_machine(monkeypatch: pytest.MonkeyPatch, arch: str,
                                                            flags_arg: int) -> None:
    # s390 passes clone's flags second; a filter on the wrong argument would test the stack pointer.
    monkeypatch.setattr(seccomp_policy, "native_arch", lambda: arch)
    assert conditional_rules(filter_for(NO_CAPS), "clone") == [
        Rule(("clone",), "ALLOW", EPERM, (ArgCond(flags_arg, "MASKED_EQ", 0x7E020000, 0),)),
        *(Rule(("clone",), "ERRNO", EPERM, (ArgCond(flags_arg, "MASKED_EQ", bit, bit),)) for bit in CLONE_NS_BITS),
    ]


def test_socket_and_personality_rules_exactly() -> None:
    f = filter_for(NO_CAPS)
    assert conditional_rules(f, "socket") == [
        Rule(("socket",), "ALLOW", EPERM, (ArgCond(0, "LT", 38),)),
        Rule(("socket",), "ALLOW", EPERM, (ArgCond(0, "EQ", 39),)),
        Rule(("socket",), "ALLOW", EPERM, (ArgCond(0, "GT", 40),)),
    ]
    assert conditional_rules(f, "personality") == [
        Rule(("personality",), "ALLOW", EPERM, (ArgCond(0, "EQ", value),))
        for value in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
    ]
    assert unconditional_action(f, "socket") is None and unconditional_action(f, "personality") is None


@pytest.mark.parametrize(("arch", "expected"), [
    ("x86_64", ("x86_64", "x86", "x32")),
    ("aarch64", ("aarch64", "arm")),
    ("riscv64", ("riscv64",)),  # no compat ABI listed: the native one alone
])
def test_default_architectures_per_machine(monkeypatch: pytest.MonkeyPatch, arch: str,
                                           expected: tuple[str, ...]) -> None:
    monkeypatch.setattr(seccomp_policy, "native_arch", lambda: arch)
    assert default_architectures() == expected
    assert filter_for(NO_CAPS).architectures == expected


def test_denied_names_are_the_unconditional_denials_only() -> None:
    f = Filter("ERRNO", ENOSYS, ("x86_64",), (
        Rule(("read", "write"), "ALLOW"),
        Rule(("mount",), "ERRNO", EPERM),
        Rule(("reboot",), "KILL_PROCESS"),
        Rule(("clone",), "ERRNO", EPERM, (ArgCond(0, "MASKED_EQ", 1, 1),)),
        Rule(("socket",), "ALLOW", args=(ArgCond(0, "LT", 38),)),
    ))
    assert denied_names(f) == {"mount", "reboot"}
    assert allowed_names(f) == {"read", "write", "socket"}


# ---- i386 socketcall ------------------------------------------------------------------------

ARCHES = ("x86_64", "x86", "x32")


def test_socketcall_guard_replaces_socketcall_in_other_rules() -> None:
    kill_one = (ArgCond(0, "EQ", 1),)
    f = Filter("ERRNO", ENOSYS, ARCHES, (
        Rule(("socket",), "ALLOW", args=(ArgCond(0, "LT", 38),)),
        Rule(("socketcall", "kill"), "ERRNO", errno.EACCES, kill_one),
        Rule(("socketcall",), "ERRNO", errno.EACCES),
    ))
    assert _guard_socketcall(f) == Filter("ERRNO", ENOSYS, ARCHES, (
        Rule(("socket",), "ALLOW", args=(ArgCond(0, "LT", 38),)),
        Rule(("kill",), "ERRNO", errno.EACCES, kill_one),
        Rule(("socketcall",), "ERRNO", EPERM),
    ))


@pytest.mark.parametrize("rules", [
    (Rule(("socket", "socketcall"), "ALLOW"),),                                     # socketcall allowed on purpose
    (Rule(("socket",), "ALLOW"), Rule(("socketcall",), "ALLOW", args=(ArgCond(0, "EQ", 1),))),
    (Rule(("read",), "ALLOW"), Rule(("socketcall",), "ERRNO", errno.EACCES)),      # socket not allowed
    (Rule(("socket",), "ERRNO", errno.EACCES),),
])
def test_socketcall_guard_leaves_filters_alone(rules: tuple[Rule, ...]) -> None:
    f = Filter("ERRNO", ENOSYS, ARCHES, rules)
    assert _guard_socketcall(f) == f


def test_socketcall_follows_the_retained_names() -> None:
    assert "socketcall" not in {n for r in parse_seccomp_flag("mode=retain,read", NO_CAPS).rules for n in r.names}
    if native_arch() == "x86_64":
        f = parse_seccomp_flag("mode=retain,socket,socketcall", NO_CAPS)
        assert "socketcall" in allowed_names(f) and "socketcall" not in denied_names(f)


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
    base = filter_for(NO_CAPS)
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


def test_retain_clone3_allows_it() -> None:
    f = parse_seccomp_flag("mode=retain,clone3,read", NO_CAPS)
    assert f == Filter("ERRNO", EPERM, default_architectures(),
                       (Rule(("execve", "exit", "exit_group", "clone3", "read"), "ALLOW"),))


def test_retain_and_remove_keep_the_architectures() -> None:
    assert parse_seccomp_flag("mode=retain,read", NO_CAPS).architectures == default_architectures()
    assert parse_seccomp_flag("mode=remove,read", NO_CAPS).architectures == default_architectures()


@pytest.mark.parametrize(("text", "message", "hint"), [
    ("mode=retain,read,,write", "--seccomp 'mode=retain,read,,write': empty item",
     "separate items with single commas"),
    ("mode=retain,errno=EPERM,errno=EPERM,read", "--seccomp 'mode=retain,errno=EPERM,errno=EPERM,read': "
     "unknown or repeated option 'errno'", "options are mode=retain|remove and errno=ENAME, once each"),
    ("mode=retain=x,read", "--seccomp 'mode=retain=x,read': mode must be retain or remove, not 'retain=x'", None),
    ("mode=retain,errno=EPERM=1,read", "--seccomp 'mode=retain,errno=EPERM=1,read': unknown errno name 'EPERM=1'",
     "use a name such as EPERM or ENOSYS"),
    ("mode=retain,nosuch", "--seccomp 'mode=retain,nosuch': unknown syscall 'nosuch'",
     "names as in syscalls(2), or a group: @podrun/default-allowlist, @podrun/default-denylist"),
    ("mode=remove,@x", "--seccomp 'mode=remove,@x': unknown group '@x'",
     "groups: @podrun/default-allowlist, @podrun/default-denylist"),
    ("mode=remove", "--seccomp 'mode=remove': no syscalls named", None),
    ("read", "--seccomp 'read': missing mode=retain or mode=remove", None),
])
def test_flag_error_messages_and_hints(text: str, message: str, hint: str | None) -> None:
    with pytest.raises(UsageError) as info:
        parse_seccomp_flag(text, NO_CAPS)
    assert (str(info.value), info.value.hint) == (message, hint)


def test_flag_length_limit_is_inclusive() -> None:
    at_limit = "mode=retain" + ",read" * ((MAX_FLAG_CHARS - 11) // 5)
    assert len(at_limit) == MAX_FLAG_CHARS
    assert "read" in allowed_names(parse_seccomp_flag(at_limit, NO_CAPS))
    with pytest.raises(UsageError) as info:
        parse_seccomp_flag(at_limit + " ", NO_CAPS)
    assert str(info.value) == "--seccomp value is 65537 characters long, limit is 65536"
