"""Where pods' cgroups go (podrun.pod.placement), decided without root: the policy is a function of
the hierarchy kind and /proc/self/cgroup; the kernel layer only acts on the parent it is given.
The moves and mkdirs themselves are covered by tests/integration/test_cgroups.py."""

from __future__ import annotations

import pytest

from podrun.isolation import cgroups
from podrun.isolation.cgroups import Hierarchy
from podrun.pod import gc, placement

V2: frozenset[str] = frozenset()
SYSTEMD = frozenset({"name=systemd"})
UNIT = "/system.slice/podrun-web.service"


@pytest.mark.parametrize(("kind", "unit", "parent"), [
    ("v2", UNIT, UNIT),
    ("hybrid", UNIT, "."),
    ("v1", UNIT, "."),
    ("v2", None, "/podrun"),
    ("hybrid", None, "podrun"),
    ("v1", None, "podrun"),
])
def test_pod_parent(kind: str, unit: str | None, parent: str) -> None:
    assert placement.pod_parent(kind, unit) == parent


def test_unit_cgroup_is_a_service_or_scope_we_run_in() -> None:
    assert placement.unit_cgroup({V2: UNIT}, in_unit=True) == UNIT
    assert placement.unit_cgroup({V2: UNIT + "/supervisor"}, in_unit=True) == UNIT  # moved there earlier
    assert placement.unit_cgroup({V2: "/", SYSTEMD: "/run-u7.scope"}, in_unit=True) == "/run-u7.scope"
    assert placement.unit_cgroup({V2: UNIT}, in_unit=False) is None  # a login shell's session scope
    assert placement.unit_cgroup({V2: "/user.slice"}, in_unit=True) is None
    assert placement.unit_cgroup({}, in_unit=True) is None


def test_in_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert not placement.in_a_unit(own_scope=False)
    assert placement.in_a_unit(own_scope=True)  # stage1 registered a transient scope
    monkeypatch.setenv("INVOCATION_ID", "0123")
    assert placement.in_a_unit(own_scope=False)


class _FakeV2Unit:
    """A pure-v2 host on which this process is a unit's main process; records cgroup moves."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.moves: list[tuple[str, str]] = []
        monkeypatch.setenv("INVOCATION_ID", "0123")
        monkeypatch.setattr(cgroups, "detect", lambda: "v2")
        monkeypatch.setattr(cgroups, "own_cgroups", lambda: {V2: UNIT})
        monkeypatch.setattr(cgroups, "move_processes", lambda src, dest: self.moves.append((src, dest)))
        monkeypatch.setattr(cgroups, "hierarchies", lambda: [Hierarchy("/sys/fs/cgroup", 2, frozenset(), UNIT)])


def test_stage1_moves_the_units_processes_into_the_supervisor_leaf(monkeypatch: pytest.MonkeyPatch) -> None:
    host = _FakeV2Unit(monkeypatch)
    assert placement.place_pods() == UNIT
    assert host.moves == [(f"/sys/fs/cgroup{UNIT}", f"/sys/fs/cgroup{UNIT}/supervisor")]


def test_gc_names_a_damaged_pods_cgroups_without_moving_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """gc under a systemd timer must not rearrange its own unit's cgroup (before the placement
    policy left the kernel layer, naming the expected paths moved gc into a ``supervisor`` leaf)."""
    host = _FakeV2Unit(monkeypatch)
    monkeypatch.setattr("os.path.isdir", lambda path: True)
    assert gc._expected_cgroups("u1") == [f"/sys/fs/cgroup{UNIT}/pod-u1"]
    assert placement.expected_parent() == UNIT
    assert host.moves == []
