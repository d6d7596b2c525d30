"""cgroups on the real kernel (root, this host's layout: pure v2 or the v1/v2 hybrid).  The
limit-writing logic on fake trees of both layouts is in tests/unit/test_cgroup_limits.py.

Every cgroup a test creates has a unique ``podrun-test-<hex>`` name and is killed and removed in a
finally; processes are moved, never the pytest process itself.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.isolation import cgroups
from podrun.isolation.cgroups import CgroupTree, Limits
from podrun.pod import placement

LIMITS = Limits(memory_max=128 << 20, cpu_millis=500, pids_max=64)


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def _name() -> str:
    return f"podrun-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pod() -> Iterator[CgroupTree]:
    _need_root()
    tree = cgroups.create_pod_cgroup(_name(), placement.place_pods())
    try:
        yield tree
    finally:
        tree.kill_all()
        tree.remove()
        assert not [p for p in tree.paths if os.path.exists(p)]


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "600"])


def _reap(proc: subprocess.Popen[bytes]) -> int:
    try:
        return proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _limit_files(tree: CgroupTree) -> dict[str, str]:
    """What the kernel holds for memory/cpu/pids in ``tree``, read back per hierarchy kind."""
    found: dict[str, str] = {}
    for d in tree.dirs:
        def read(name: str, path: str = d.path) -> str:
            return Path(path, name).read_text().strip()

        if d.hierarchy.version == 1:
            if "memory" in d.hierarchy.controllers:
                found["memory"] = read("memory.limit_in_bytes")
            if "cpu" in d.hierarchy.controllers:
                found["cpu"] = f"{read('cpu.cfs_quota_us')} {read('cpu.cfs_period_us')}"
            if "pids" in d.hierarchy.controllers:
                found["pids"] = read("pids.max")
        else:
            for controller, name in (("memory", "memory.max"), ("cpu", "cpu.max"), ("pids", "pids.max")):
                if controller not in found and os.path.exists(posixpath.join(d.path, name)):
                    found[controller] = read(name)
    return found


def _proc_cgroups(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        out[controllers] = path
    return out


def test_detect_agrees_with_the_mounts() -> None:
    kind = cgroups.detect()
    root_magic = cgroups.fs_magic("/sys/fs/cgroup")
    if kind == "v2":
        assert root_magic == cgroups.CGROUP2_SUPER_MAGIC
    else:
        assert root_magic == cgroups.TMPFS_MAGIC
        has_unified = os.path.isdir("/sys/fs/cgroup/unified") and \
            cgroups.fs_magic("/sys/fs/cgroup/unified") == cgroups.CGROUP2_SUPER_MAGIC
        assert kind == ("hybrid" if has_unified else "v1")


def test_hierarchies_know_our_own_cgroup() -> None:
    own = _proc_cgroups(os.getpid())
    for h in cgroups.hierarchies():
        if h.version == 2:
            assert h.own == own[""]
        else:
            key = next(k for k in own if set(k.split(",")) & h.controllers)
            assert h.own == own[key]
        assert os.path.isdir(h.mountpoint + h.own)


def test_pod_parent_outside_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert placement.place_pods() == ("/podrun" if cgroups.detect() == "v2" else "podrun")


def test_limits_membership_kill_and_remove(pod: CgroupTree) -> None:
    assert cgroups.pod_cgroup_paths(posixpath.basename(pod.paths[0]), placement.place_pods()) == pod.paths
    pod.set_limits(Limits(memory_max=256 << 20))
    app = pod.child("app")
    app.set_limits(LIMITS)
    assert _limit_files(app) == {"memory": str(128 << 20), "cpu": "50000 100000", "pids": "64"}
    assert _limit_files(pod)["memory"] == str(256 << 20)

    proc = _sleeper()
    try:
        app.add_process(proc.pid)
        where = _proc_cgroups(proc.pid)
        for d in app.dirs:
            h = d.hierarchy
            key = "" if h.version == 2 else next(k for k in where if set(k.split(",")) & h.controllers)
            assert h.mountpoint + where[key] == d.path
        assert app.procs() == [proc.pid]
        assert pod.procs() == []
        assert pod.procs(recursive=True) == [proc.pid]
        pod.kill_all()
        assert _reap(proc) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pod.remove()
    assert not [p for p in pod.paths + app.paths if os.path.exists(p)]


def test_kill_all_gets_forked_descendants(pod: CgroupTree) -> None:
    app = pod.child("forker")
    # the shell waits until it is inside the cgroup, then forks sleepers and reports their pids
    script = "read x; sleep 600 >/dev/null & a=$!; sleep 600 >/dev/null & echo $a $!; wait"
    proc = subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        app.add_process(proc.pid)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        sleepers = [int(x) for x in proc.stdout.readline().split()]
        assert len(sleepers) == 2
        assert set(sleepers) <= set(app.procs())
        pod.kill_all()
        assert _reap(proc) == -9
        deadline = time.monotonic() + 10
        while pod.procs(recursive=True) and time.monotonic() < deadline:
            time.sleep(0.01)   # the orphaned sleepers are reaped by init
        assert pod.procs(recursive=True) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_memory_limit_oom_kills(pod: CgroupTree) -> None:
    app = pod.child("hog")
    app.set_limits(Limits(memory_max=64 << 20))
    hog = "import sys; sys.stdin.read(1); x = bytearray(b'x') * (512 << 20); print(len(x))"
    proc = subprocess.Popen([sys.executable, "-c", hog], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        app.add_process(proc.pid)
        out, _ = proc.communicate(b"g", timeout=60)
        assert proc.returncode == -9, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    mem = next(d for d in app.dirs if "memory" in d.hierarchy.controllers)
    if mem.hierarchy.version == 1:
        counters = Path(mem.path, "memory.oom_control").read_text().split()
    else:
        counters = Path(mem.path, "memory.events").read_text().split()
    assert int(counters[counters.index("oom_kill") + 1]) >= 1


def test_remove_refuses_a_populated_cgroup(pod: CgroupTree) -> None:
    proc = _sleeper()
    try:
        pod.add_process(proc.pid)
        with pytest.raises(OSError) as info:
            pod.remove()
        assert info.value.errno == errno.EBUSY
        assert info.value.filename in pod.paths
    finally:
        pod.kill_all()
        _reap(proc)


def test_open_existing_cleans_up_for_gc(pod: CgroupTree) -> None:
    app = pod.child("app")
    proc = _sleeper()
    try:
        app.add_process(proc.pid)
        again = cgroups.open_existing(pod.paths)
        assert again.paths == pod.paths
        again.kill_all()
        assert _reap(proc) == -9
        again.remove()
        again.remove()    # idempotent: gone is fine
        assert not [p for p in pod.paths if os.path.exists(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(OSError) as info:
        cgroups.open_existing(["/tmp/not-a-cgroup"])
    assert info.value.errno == errno.EINVAL


def test_v2_code_path_on_the_hybrid_unified_mount() -> None:
    """Create/add/kill/remove through the v2 code alone (cgroup.kill); on a hybrid host that is the
    controller-less ``unified`` mount, so limits there must be refused.  Pure v2 hosts run the
    main tests above on v2 already."""
    _need_root()
    if cgroups.detect() != "hybrid":
        pytest.skip("host has no v1/v2 hybrid")
    v2 = [h for h in cgroups.hierarchies() if h.version == 2]
    tree = cgroups.create_pod_cgroup(_name(), parent="/podrun", using=v2)
    proc = _sleeper()
    try:
        assert tree.paths[0].startswith("/sys/fs/cgroup/unified/podrun/")
        app = tree.child("app")
        app.add_process(proc.pid)
        assert _proc_cgroups(proc.pid)[""] == app.paths[0][len("/sys/fs/cgroup/unified"):]
        with pytest.raises(OSError) as info:
            app.set_limits(Limits(memory_max=1 << 30))
        assert info.value.errno == errno.EOPNOTSUPP
        tree.kill_all()
        assert _reap(proc) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tree.remove()
    assert not os.path.exists(tree.paths[0])


def test_inside_a_systemd_unit_pods_stay_in_the_unit() -> None:
    """A forked child pretends to be a unit's main process: $INVOCATION_ID set and its v2 cgroup
    named ``*.service``.  place_pods() must keep pods below that cgroup (and on pure v2 move the
    unit's processes into its ``supervisor`` leaf first)."""
    _need_root()
    kind = cgroups.detect()
    if kind == "v1":
        pytest.skip("no v2 hierarchy to fake a unit in")
    v2 = next(h for h in cgroups.hierarchies() if h.version == 2)
    unit = f"/{_name()}.service"
    unit_dir = v2.mountpoint + unit
    pod_name = _name()
    os.mkdir(unit_dir)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(rfd)
            cgroups._write(unit_dir + "/cgroup.procs", str(os.getpid()))
            os.environ["INVOCATION_ID"] = uuid.uuid4().hex
            parent = placement.place_pods()
            tree = cgroups.create_pod_cgroup(pod_name, parent)
            if kind == "v2":
                tree.set_limits(LIMITS)
            os.write(wfd, json.dumps({"parent": parent, "paths": tree.paths,
                                      "own": _proc_cgroups(os.getpid())[""]}).encode())
            os._exit(0)
        except BaseException as exc:
            os.write(wfd, json.dumps({"error": repr(exc)}).encode())
            os._exit(1)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        report = json.loads(f.read() or "{}")
    os.waitpid(pid, 0)
    leftovers = [unit_dir] + [h.mountpoint + posixpath.join(h.own, pod_name)
                              for h in cgroups.hierarchies() if h.version == 1]
    try:
        assert "error" not in report, report
        pod_v2 = next(p for p in report["paths"] if p.startswith(v2.mountpoint + "/"))
        assert pod_v2 == f"{unit_dir}/{pod_name}"
        if kind == "v2":
            assert report["parent"] == unit
            assert report["own"] == f"{unit}/supervisor"
        else:
            assert report["parent"] == "."
            assert report["own"] == unit
    finally:
        cgroups.open_existing([p for p in leftovers if os.path.exists(p)]).remove()
    assert not [p for p in leftovers if os.path.exists(p)]
