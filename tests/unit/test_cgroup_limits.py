"""The limit-writing logic of ``podrun.isolation.cgroups`` on FAKE directory trees (no kernel
cgroups, no root), for both layouts whatever this host has: which files it writes, what it writes
into them, and in which order (seen through inotify).  The kernel's reaction is covered by the
root tests in tests/integration/test_cgroups.py."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from podrun.isolation import cgroups
from podrun.isolation.cgroups import CgroupDir, CgroupTree, Hierarchy, Limits
from tests.fixtures.inotify import WriteRecorder

LIMITS = Limits(memory_max=128 << 20, cpu_millis=500, pids_max=64)



def _fake_v2(tmp_path: Path) -> tuple[Hierarchy, Path]:
    root = tmp_path / "fake-v2"
    pod_dir = root / "podrun" / "pod"
    pod_dir.mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpu io memory pids\n")
    for d in (root, root / "podrun", pod_dir):
        (d / "cgroup.subtree_control").write_text("")
        if d != root:
            (d / "cgroup.controllers").write_text("")
    for name in ("memory.max", "cpu.max", "pids.max"):
        (pod_dir / name).write_text("max\n")
    return Hierarchy(str(root), 2, frozenset({"cpu", "io", "memory", "pids"}), "/"), pod_dir


def test_fake_v2_limit_files_and_controller_enabling(tmp_path: Path) -> None:
    h, pod_dir = _fake_v2(tmp_path)
    tree = CgroupTree([CgroupDir(str(pod_dir), h, h.mountpoint)])
    root = Path(h.mountpoint)
    with WriteRecorder(root, root / "podrun", pod_dir) as recorder:
        tree.set_limits(LIMITS)
        written = recorder.writes()
    # Controllers are enabled top-down (a child can only enable what its parent enabled), and
    # before any limit file is written (the files appear only once the controller is enabled).
    assert written[:2] == [root / "cgroup.subtree_control", root / "podrun" / "cgroup.subtree_control"]
    assert sorted(written[2:]) == [pod_dir / "cpu.max", pod_dir / "memory.max", pod_dir / "pids.max"]
    assert Path(h.mountpoint, "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert Path(h.mountpoint, "podrun", "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert (pod_dir / "memory.max").read_text().strip() == str(128 << 20)
    assert (pod_dir / "cpu.max").read_text().strip() == "50000 100000"
    assert (pod_dir / "pids.max").read_text().strip() == "64"


def test_fake_v2_enables_only_what_is_limited(tmp_path: Path) -> None:
    h, pod_dir = _fake_v2(tmp_path)
    CgroupTree([CgroupDir(str(pod_dir), h, h.mountpoint)]).set_limits(Limits(cpu_millis=1500))
    assert Path(h.mountpoint, "podrun", "cgroup.subtree_control").read_text() == "+cpu"
    assert (pod_dir / "cpu.max").read_text().strip() == "150000 100000"
    assert (pod_dir / "memory.max").read_text() == "max\n"


def test_fake_v2_never_writes_above_the_delegation_base(tmp_path: Path) -> None:
    h, pod_dir = _fake_v2(tmp_path)
    base = str(pod_dir.parent)   # e.g. a unit without these controllers delegated
    with pytest.raises(OSError) as info:
        CgroupTree([CgroupDir(str(pod_dir), h, base)]).set_limits(LIMITS)
    assert info.value.errno == errno.EOPNOTSUPP
    assert info.value.filename == base
    assert Path(h.mountpoint, "cgroup.subtree_control").read_text() == ""


def test_fake_v1_limit_files(tmp_path: Path) -> None:
    dirs = []
    files = {"memory": ["memory.limit_in_bytes"], "cpu": ["cpu.cfs_quota_us", "cpu.cfs_period_us"],
             "pids": ["pids.max"]}
    for controller, names in files.items():
        d = tmp_path / controller / "podrun" / "pod"
        d.mkdir(parents=True)
        for name in names:
            (d / name).write_text("")
        h = Hierarchy(str(tmp_path / controller), 1, frozenset({controller}), "/")
        dirs.append(CgroupDir(str(d), h, h.mountpoint))
    CgroupTree(dirs).set_limits(LIMITS)
    assert (tmp_path / "memory/podrun/pod/memory.limit_in_bytes").read_text() == str(128 << 20)
    assert (tmp_path / "cpu/podrun/pod/cpu.cfs_quota_us").read_text() == "50000"
    assert (tmp_path / "cpu/podrun/pod/cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "pids/podrun/pod/pids.max").read_text() == "64"


def test_fake_missing_controller_and_bad_names(tmp_path: Path) -> None:
    h = Hierarchy(str(tmp_path), 1, frozenset({"pids"}), "/")
    tree = CgroupTree([CgroupDir(str(tmp_path), h, str(tmp_path))])
    with pytest.raises(OSError) as info:
        tree.set_limits(Limits(memory_max=1))
    assert info.value.errno == errno.EOPNOTSUPP and "memory" in info.value.strerror
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(OSError) as info:
            tree.child(bad)
        assert info.value.errno == errno.EINVAL
    with pytest.raises(OSError):
        cgroups.pod_cgroup_paths("x", parent="../escape")
