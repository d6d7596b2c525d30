"""Capability policy for apps: the default set and the ``--caps-retain``/``--caps-remove`` flags.

Pure policy, decided by stage0 (the manifest records capability numbers); stage2 applies the
result through ``podrun.isolation.caps``.  The default rlimits are stage2's (podrun.stage2.confine:
they are clamped to what the pod's pid 1 may raise).
"""

from __future__ import annotations

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
