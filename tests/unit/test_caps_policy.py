"""Capability and rlimit policy: defaults and the --caps-retain/--caps-remove flags (no root needed)."""

from __future__ import annotations

import resource

import pytest

from podrun.errors import UsageError
from podrun.isolation.caps import cap_mask
from podrun.model.caps import CAP_NAMES
from podrun.pod.caps_policy import DEFAULT_CAPS, cap_numbers, resolve_caps
from podrun.stage2.confine import RLIMIT_DEFAULT, default_rlimits

PODMAN_DEFAULT = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
}


def test_cap_names_cover_oci_list_in_kernel_order() -> None:
    assert len(CAP_NAMES) == 41
    assert sorted(CAP_NAMES.values()) == list(range(41))
    assert CAP_NAMES["CAP_SYS_ADMIN"] == 21
    assert CAP_NAMES["CAP_CHECKPOINT_RESTORE"] == 40


def test_default_is_podmans_eleven() -> None:
    assert resolve_caps(None, None) == PODMAN_DEFAULT == DEFAULT_CAPS
    # the CapBnd value `podman run` shows for its default set
    assert cap_mask(cap_numbers(DEFAULT_CAPS)) == 0x800405FB


def test_retain_is_exactly_the_set_any_spelling() -> None:
    assert resolve_caps("CAP_NET_RAW, net_bind_service,Sys_Admin", None) == {
        "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"}


def test_retain_empty_means_no_capabilities() -> None:
    assert resolve_caps("", None) == frozenset()


def test_remove_subtracts_from_default() -> None:
    assert resolve_caps(None, "kill,CAP_SETUID") == PODMAN_DEFAULT - {"CAP_KILL", "CAP_SETUID"}
    # removing one the default lacks is not an error: the result simply does not have it
    assert resolve_caps(None, "net_raw") == PODMAN_DEFAULT


@pytest.mark.parametrize(("retain", "remove", "bad"), [
    ("CAP_NET_RAW,CAP_FLY", None, "CAP_FLY"),
    (None, "nonsense", "nonsense"),
    ("CAP_", None, "CAP_"),
])
def test_unknown_name_is_usage_error_naming_it(retain: str | None, remove: str | None, bad: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve_caps(retain, remove)
    assert repr(bad) in str(info.value)
    assert info.value.exit_code == 253


def test_both_flags_refused() -> None:
    with pytest.raises(UsageError, match="--caps-retain and --caps-remove"):
        resolve_caps("CAP_KILL", "CAP_KILL")


def _nr_open() -> int:
    with open("/proc/sys/fs/nr_open") as f:
        return int(f.read())


def test_default_rlimits_when_allowed_to_raise() -> None:
    limits = default_rlimits(can_raise=True)
    nofile = min(RLIMIT_DEFAULT, _nr_open())
    assert limits == {"RLIMIT_NOFILE": (nofile, nofile), "RLIMIT_NPROC": (RLIMIT_DEFAULT, RLIMIT_DEFAULT)}


def test_default_rlimits_clamped_without_cap_sys_resource() -> None:
    limits = default_rlimits(can_raise=False)
    for name, number in (("RLIMIT_NOFILE", resource.RLIMIT_NOFILE), ("RLIMIT_NPROC", resource.RLIMIT_NPROC)):
        soft, hard = limits[name]
        cur_soft, cur_hard = resource.getrlimit(number)
        assert soft <= hard <= RLIMIT_DEFAULT
        if cur_hard != resource.RLIM_INFINITY:
            assert hard <= cur_hard
        if cur_soft != resource.RLIM_INFINITY:
            assert soft <= cur_soft
