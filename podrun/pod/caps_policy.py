"""Capability and rlimit policy for apps: the defaults and the ``--caps-retain``/``--caps-remove`` flags.

Pure policy (no syscalls except reading the current limits for clamping); stage2 applies the result
through ``podrun.isolation.caps``.
"""

from __future__ import annotations

import resource

from podrun.errors import UsageError
from podrun.model.caps import CAP_NAMES

# podman's default set (containers.conf ``default_capabilities`` in containers/common): docker's
# minus CAP_AUDIT_WRITE, CAP_MKNOD and CAP_NET_RAW.
DEFAULT_CAPS: frozenset[str] = frozenset({
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
})

# podman's define.RLimitDefaultValue: RLIMIT_NOFILE and RLIMIT_NPROC default to this (soft = hard)
# unless the user set them; when podman lacks CAP_SYS_RESOURCE (rootless, or a host that removed it)
# it clamps both to the current limits instead of failing.
RLIMIT_DEFAULT = 1048576

_CAP_SYS_RESOURCE = CAP_NAMES["CAP_SYS_RESOURCE"]


def _parse_names(value: str, flag: str) -> frozenset[str]:
    names: set[str] = set()
    for raw in value.split(","):
        item = raw.strip().upper()
        if not item:
            continue
        name = item if item.startswith("CAP_") else "CAP_" + item
        if name not in CAP_NAMES:
            raise UsageError(f"{flag}: unknown capability {raw.strip()!r}",
                             hint="names as in capabilities(7), e.g. CAP_NET_RAW or net_raw")
        names.add(name)
    return frozenset(names)


def resolve_caps(retain: str | None, remove: str | None) -> frozenset[str]:
    """The app's capability set from rkt's flags.

    ``retain`` (``--caps-retain``): exactly these capabilities.  ``remove`` (``--caps-remove``): the
    default set minus these.  Neither: the default set.  Names are comma separated, case-insensitive,
    with or without the ``CAP_`` prefix.  Both flags together are refused, as rkt did.
    """
    if retain is not None and remove is not None:
        raise UsageError("--caps-retain and --caps-remove cannot be used together",
                         hint="use one: retain lists the whole set, remove subtracts from the default")
    if retain is not None:
        return _parse_names(retain, "--caps-retain")
    if remove is not None:
        return DEFAULT_CAPS - _parse_names(remove, "--caps-remove")
    return DEFAULT_CAPS


def cap_numbers(names: frozenset[str]) -> frozenset[int]:
    """Capability names (as returned by resolve_caps) to the kernel's numbers."""
    return frozenset(CAP_NAMES[name] for name in names)


def _has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
    return False


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except OSError:
        return RLIMIT_DEFAULT


def default_rlimits(can_raise: bool | None = None) -> dict[str, tuple[int, int]]:
    """Default rlimits for apps, following podman: NOFILE and NPROC at 1048576 (soft = hard).

    Without CAP_SYS_RESOURCE (``can_raise`` False; detected from our effective set when None) a hard
    limit cannot be raised, so each value is clamped to the current soft/hard limits, as podman does.
    RLIMIT_NOFILE is also capped at fs.nr_open, which even CAP_SYS_RESOURCE cannot exceed.
    Everything else is inherited unchanged.
    """
    if can_raise is None:
        can_raise = _has_cap_sys_resource()
    limits: dict[str, tuple[int, int]] = {}
    for name, number in (("RLIMIT_NOFILE", resource.RLIMIT_NOFILE), ("RLIMIT_NPROC", resource.RLIMIT_NPROC)):
        soft = hard = RLIMIT_DEFAULT
        if name == "RLIMIT_NOFILE":
            soft = hard = min(RLIMIT_DEFAULT, _nr_open())
        if not can_raise:
            cur_soft, cur_hard = resource.getrlimit(number)
            if cur_hard != resource.RLIM_INFINITY:
                hard = min(hard, cur_hard)
            if cur_soft != resource.RLIM_INFINITY:
                soft = min(soft, cur_soft)
            soft = min(soft, hard)
        limits[name] = (soft, hard)
    return limits
