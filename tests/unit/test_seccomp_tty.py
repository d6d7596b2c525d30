"""The terminal-injection guard of every podrun seccomp filter (SECURITY-TESTS 25), as data:
``ioctl`` TIOCSTI and TIOCLINUX refused, every other request allowed, compared on the low 32
bits of the request as the kernel reads it.  tests/integration/test_tty.py loads the filters."""

from __future__ import annotations

import errno
import random

import pytest

from podrun.errors import UsageError
from podrun.isolation.seccomp import ArgCond, Filter, Rule
from podrun.pod.seccomp_policy import (
    TIOCLINUX,
    TIOCSTI,
    TTY_INJECTION,
    _admits,
    filter_for,
    guard_tty_ioctls,
    ioctl_request_conditions,
    parse_seccomp_flag,
)

LOW32 = 0xFFFFFFFF


def allowed_by(conds: tuple[ArgCond, ...], value: int) -> bool:
    return any(_admits(c, value) for c in conds)


def sample_requests() -> list[int]:
    rng = random.Random(20261201)
    near = [v ^ (1 << b) for v in TTY_INJECTION for b in range(40)]
    ordinary = [0x5401, 0x5413, 0x5414, 0x540E, 0x541B, 0x541D, 0x5410, 0x80045430, 0xC0045877, 0, LOW32]
    return near + ordinary + [rng.getrandbits(64) for _ in range(3000)] + list(range(0x5400, 0x5440))


def test_conditions_admit_every_request_but_the_injecting_ones() -> None:
    conds = ioctl_request_conditions()
    for value in sample_requests():
        assert allowed_by(conds, value) == ((value & LOW32) not in TTY_INJECTION), hex(value)
    for value in TTY_INJECTION:
        for high in (0, 1 << 32, 0xDEAD << 40, LOW32 << 32):
            assert not allowed_by(conds, value | high), hex(value | high)


def test_conditions_are_single_masked_comparisons_on_the_request() -> None:
    conds = ioctl_request_conditions()
    assert {(c.index, c.op) for c in conds} == {(1, "MASKED_EQ")}
    assert all(c.value & ~LOW32 == 0 and c.value_two & ~c.value == 0 for c in conds)
    # TIOCSTI and TIOCLINUX differ in 3 bits: 29 single-bit conditions + 2**3 - 2 full ones
    assert sum(c.value == LOW32 for c in conds) == 6 and len(conds) == 35


@pytest.mark.parametrize("excluded", [(TIOCSTI,), (0x0,), (LOW32,), (1, 2, 3)])
def test_conditions_for_other_exclusions(excluded: tuple[int, ...]) -> None:
    conds = ioctl_request_conditions(excluded)
    for value in [*range(0, 16), *excluded, LOW32, LOW32 - 1, 0x5412, 0x1_0000_0001]:
        assert allowed_by(conds, value) == ((value & LOW32) not in excluded), (excluded, hex(value))


def test_admits_every_operator() -> None:
    assert _admits(ArgCond(1, "EQ", 5), 5) and not _admits(ArgCond(1, "EQ", 5), 6)
    assert _admits(ArgCond(1, "NE", 5), 6) and not _admits(ArgCond(1, "NE", 5), 5)
    assert _admits(ArgCond(1, "LT", 5), 4) and not _admits(ArgCond(1, "LT", 5), 5)
    assert _admits(ArgCond(1, "LE", 5), 5) and not _admits(ArgCond(1, "LE", 5), 6)
    assert _admits(ArgCond(1, "GT", 5), 6) and not _admits(ArgCond(1, "GT", 5), 5)
    assert _admits(ArgCond(1, "GE", 5), 5) and not _admits(ArgCond(1, "GE", 5), 4)
    assert _admits(ArgCond(1, "MASKED_EQ", 0xF0, 0x50), 0x5F) and not _admits(ArgCond(1, "MASKED_EQ", 0xF0, 0x50), 0x4F)


def injection_denials(f: Filter) -> list[Rule]:
    return [r for r in f.rules if r.names == ("ioctl",) and r.action == "ERRNO"]


def assert_guarded(f: Filter) -> None:
    ioctl_rules = [r for r in f.rules if "ioctl" in r.names]
    assert ioctl_rules, "ioctl is not mentioned at all"
    assert all(r.args for r in ioctl_rules), "an unconditional ioctl rule overrides the guard in libseccomp"
    denials = injection_denials(f)
    assert [(r.errno, r.args) for r in denials] == [
        (errno.EPERM, (ArgCond(1, "MASKED_EQ", LOW32, TIOCSTI),)),
        (errno.EPERM, (ArgCond(1, "MASKED_EQ", LOW32, TIOCLINUX),)),
    ]
    allows = [r for r in ioctl_rules if r.action == "ALLOW"]
    for value in sample_requests()[:400]:
        admitted = any(all(_admits(c, value) for c in r.args) for r in allows)
        assert admitted == ((value & LOW32) not in TTY_INJECTION), hex(value)


@pytest.mark.parametrize("caps", [frozenset(), frozenset({"CAP_SYS_ADMIN"}), frozenset({"CAP_SYS_TTY_CONFIG"})])
def test_default_filters_are_guarded(caps: frozenset[str]) -> None:
    assert_guarded(filter_for(caps))


@pytest.mark.parametrize("flag", ["mode=remove,keyctl", "mode=retain,read,write,ioctl,exit_group",
                                  "mode=retain,@podrun/default-allowlist"])
def test_seccomp_flags_keep_the_guard(flag: str) -> None:
    assert_guarded(parse_seccomp_flag(flag, frozenset()))


def test_retain_without_ioctl_denies_every_ioctl() -> None:
    f = parse_seccomp_flag("mode=retain,read,write", frozenset())
    assert not [r for r in f.rules if "ioctl" in r.names and r.action == "ALLOW"]


def test_guard_splits_an_unconditional_allow() -> None:
    f = guard_tty_ioctls(Filter("ERRNO", errno.ENOSYS, ("x86_64",), (Rule(("read", "ioctl", "write"), "ALLOW"),)))
    assert f.rules[0] == Rule(("read", "write"), "ALLOW")
    assert [r.args for r in f.rules[1:36]] == [(c,) for c in ioctl_request_conditions()]
    assert len(f.rules) == 38
    assert_guarded(f)


def test_guard_adds_request_conditions_to_a_conditional_allow() -> None:
    fd_cond = ArgCond(0, "LT", 100)
    f = guard_tty_ioctls(Filter("ALLOW", 0, ("x86_64",), (Rule(("ioctl",), "ALLOW", args=(fd_cond,)),)))
    expanded = [r for r in f.rules if r.action == "ALLOW"]
    assert [r.args for r in expanded] == [(fd_cond, c) for c in ioctl_request_conditions()]
    assert len(injection_denials(f)) == 2


def test_guard_keeps_a_rule_that_excludes_the_injecting_requests() -> None:
    only_tcgets = Rule(("ioctl",), "ALLOW", args=(ArgCond(1, "EQ", 0x5401),))
    f = guard_tty_ioctls(Filter("ERRNO", errno.EPERM, ("x86_64",), (only_tcgets,)))
    assert f.rules[0] == only_tcgets and len(f.rules) == 3


@pytest.mark.parametrize("cond", [ArgCond(1, "EQ", TIOCSTI), ArgCond(1, "GE", 0x5400), ArgCond(1, "NE", 0x5401),
                                  ArgCond(1, "MASKED_EQ", 0xFFFF, TIOCLINUX), ArgCond(1, "GT", 0xFFFFFFFF),
                                  # only with bit 32 set, which the kernel drops (cmd is an unsigned int)
                                  ArgCond(1, "MASKED_EQ", 1 << 32 | LOW32, 1 << 32 | TIOCSTI),
                                  ArgCond(1, "EQ", 1 << 32 | TIOCLINUX),
                                  # any high bit, not only bit 32
                                  ArgCond(1, "MASKED_EQ", 1 << 40 | LOW32, 1 << 40 | TIOCSTI),
                                  ArgCond(1, "EQ", 0xDEAD << 44 | TIOCSTI),
                                  ArgCond(1, "GT", 0x6000), ArgCond(1, "GE", 1 << 63),
                                  ArgCond(1, "LE", TIOCSTI), ArgCond(1, "LT", TIOCSTI + 1)])
@pytest.mark.parametrize("action", ["ALLOW", "LOG"])
def test_guard_refuses_a_rule_that_allows_injection(cond: ArgCond, action: str) -> None:
    with pytest.raises(UsageError) as info:
        guard_tty_ioctls(Filter("ERRNO", errno.EPERM, ("x86_64",), (Rule(("ioctl",), action, args=(cond,)),)))
    assert str(info.value) == "seccomp profile allows ioctl TIOCSTI or TIOCLINUX, which podrun always refuses"
    assert info.value.hint == "exclude those requests (0x5412, 0x541c) from the ioctl rule"


def test_guard_keeps_the_conditions_of_names_split_off() -> None:
    fd_cond = ArgCond(0, "LT", 100)
    f = guard_tty_ioctls(Filter("ERRNO", errno.ENOSYS, ("x86_64",), (Rule(("write", "ioctl"), "ALLOW", args=(fd_cond,)),)))
    assert f.rules[0] == Rule(("write",), "ALLOW", errno.EPERM, (fd_cond,))
    assert [r.args for r in f.rules[1:36]] == [(fd_cond, c) for c in ioctl_request_conditions()]
    assert len(injection_denials(f)) == 2 and len(f.rules) == 38


def test_guard_goes_on_after_a_rule_on_the_request() -> None:
    only_tcgets = Rule(("ioctl",), "ALLOW", args=(ArgCond(1, "EQ", 0x5401),))
    after = (Rule(("read",), "ALLOW"), Rule(("ioctl", "write"), "ALLOW"))
    f = guard_tty_ioctls(Filter("ERRNO", errno.EPERM, ("x86_64",), (only_tcgets, *after)))
    assert f.rules[:3] == (only_tcgets, after[0], Rule(("write",), "ALLOW"))
    assert [r.args for r in f.rules[3:38]] == [(c,) for c in ioctl_request_conditions()]
    assert len(f.rules) == 40


def test_guard_leaves_other_rules_alone() -> None:
    rules = (Rule(("mount",), "ERRNO", errno.EPERM), Rule(("ioctl",), "ERRNO", errno.EACCES),
             Rule(("socket",), "ALLOW", args=(ArgCond(0, "LT", 38),)))
    f = guard_tty_ioctls(Filter("ERRNO", errno.ENOSYS, ("x86_64",), rules))
    assert f.rules[:3] == rules and len(f.rules) == 5
    assert (f.default_action, f.default_errno, f.architectures) == ("ERRNO", errno.ENOSYS, ("x86_64",))


@pytest.mark.parametrize("conds", [
    (ArgCond(1, "LT", TIOCSTI),), (ArgCond(1, "LE", TIOCSTI - 1),), (ArgCond(1, "EQ", 0x5401),),
    (ArgCond(1, "MASKED_EQ", 0xFF00, 0x8900),), (ArgCond(1, "MASKED_EQ", 1 << 40, 0x5412),),  # never satisfiable
    (ArgCond(1, "NE", 7), ArgCond(1, "LT", 0x5000)),  # one excluding condition is enough
])
def test_guard_keeps_rules_whose_conditions_exclude_injection(conds: tuple[ArgCond, ...]) -> None:
    rule = Rule(("ioctl",), "ALLOW", args=conds)
    f = guard_tty_ioctls(Filter("ERRNO", errno.EPERM, ("x86_64",), (rule,)))
    assert f.rules[0] == rule and len(injection_denials(f)) == 2


def test_guard_rewrites_an_unconditional_log_rule() -> None:
    """LOG lets the syscall run: an unconditional LOG of ioctl would win over the EPERM rules."""
    f = guard_tty_ioctls(Filter("ERRNO", errno.EPERM, ("x86_64",), (Rule(("ioctl", "read"), "LOG"),)))
    assert f.rules[0] == Rule(("read",), "LOG")
    logged = [r for r in f.rules if r.names == ("ioctl",) and r.action == "LOG"]
    assert [r.args for r in logged] == [(c,) for c in ioctl_request_conditions()]
    assert not [r for r in f.rules if "ioctl" in r.names and not r.args]


def test_guard_leaves_refusing_actions_alone() -> None:
    rules = (Rule(("ioctl",), "KILL_PROCESS"), Rule(("ioctl",), "TRAP", args=(ArgCond(0, "EQ", 3),)))
    f = guard_tty_ioctls(Filter("ALLOW", 0, ("x86_64",), rules))
    assert f.rules[:2] == rules and len(f.rules) == 4
