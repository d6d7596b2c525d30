"""podrun.pod.ociruntime's pure parts: names, argv, the runtime log's last line, cgroup paths,
state entries, the crun root hook."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podrun.pod import ociruntime as o


@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PODRUN_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_the_state_root_is_under_run_podrun_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODRUN_RUNTIME_DIR", raising=False)
    assert o.state_root("/usr/bin/crun") == "/run/podrun/oci/crun"


def test_names_and_state_root(runtime_dir: Path) -> None:
    assert o.name_of("/usr/sbin/runc") == "runc"
    assert o.state_root("/usr/bin/crun") == f"{runtime_dir}/oci/crun"
    assert o.container_id("u-1", "web") == "podrun-u-1-web"


def test_global_argv_per_runtime(runtime_dir: Path) -> None:
    root = f"{runtime_dir}/oci"
    assert o.global_argv("/usr/bin/crun") == ["/usr/bin/crun", "--root", f"{root}/crun", "--cgroup-manager=disabled"]
    assert o.global_argv("/usr/bin/crun", "/p/log", net_none=True) == [
        "/usr/bin/crun", "--root", f"{root}/crun", "--log", "/p/log", "--cgroup-manager=disabled"]
    assert o.global_argv("/usr/sbin/runc", "/p/log", net_none=True) == ["/usr/sbin/runc", "--root", f"{root}/runc",
                                                                        "--log", "/p/log"]
    assert o.global_argv("/usr/bin/runsc", net_none=True) == ["/usr/bin/runsc", "--root", f"{root}/runsc",
                                                              "--network=none"]
    assert o.global_argv("/usr/bin/runsc") == ["/usr/bin/runsc", "--root", f"{root}/runsc"]
    assert not o.manages_cgroups("/x/crun") and o.manages_cgroups("/x/runc") and o.manages_cgroups("/x/runsc")


@pytest.mark.parametrize(("text", "last"), [
    ("", ""),
    ("\n  \n", ""),
    ("executable file `/x` not found in $PATH: No such file or directory", "executable file `/x` not found in $PATH: No such file or directory"),
    ("first\nsecond line\n\n", "second line"),
    ('{"level":"error","msg":"runc run failed: \\"x\\" is bad","time":"t"}\n', 'runc run failed: "x" is bad'),
    ('time="2026-01-01T00:00:00Z" level=error msg="runc run failed: no \\"x\\""\n', 'runc run failed: no "x"'),
    ('error: "msg":"not json"\n', 'error: "msg":"not json"'),  # neither of runc's formats: as it is
    ('{"level":"error"}\n', '{"level":"error"}'),
    ('time=now level=error\n', 'time=now level=error'),
    ('crun: x msg="y"\n', 'crun: x msg="y"'),
    (b"bad \xff byte\n", "bad \ufffd byte"),
])
def test_read_log_gives_the_last_line_and_runcs_message(tmp_path: Path, text: str | bytes, last: str) -> None:
    log = tmp_path / "log"
    log.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert o.read_log(str(log)) == last


def test_read_log_reads_only_the_end_and_never_through_a_link(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("x" * 10000 + "\nthe end\n")
    assert o.read_log(str(log), limit=64) == "the end"
    assert o.read_log(str(tmp_path / "missing")) == ""
    (tmp_path / "link").symlink_to(log)
    assert o.read_log(str(tmp_path / "link")) == ""


def test_cgroups_path_below_the_hierarchy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "exists", lambda p: False)  # a v1 or hybrid host
    assert o.cgroups_path("/sys/fs/cgroup/unified/podrun/pod-u/app-a") == "/podrun/pod-u/app-a"
    assert o.cgroups_path("/sys/fs/cgroup/cpu,cpuacct/podrun/pod-u/app-a") == "/podrun/pod-u/app-a"
    assert o.cgroups_path("/sys/fs/cgroup/memory/x/y/podrun/pod-u/app-a") == "/x/y/podrun/pod-u/app-a"
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/sys/fs/cgroup/cgroup.controllers")  # v2 only
    assert o.cgroups_path("/sys/fs/cgroup/system.slice/podrun/pod-u/app-a") == "/system.slice/podrun/pod-u/app-a"


def test_state_entries_of_each_runtime(runtime_dir: Path) -> None:
    for runtime in ("crun", "runsc"):
        (runtime_dir / "oci" / runtime).mkdir(parents=True)
    (runtime_dir / "oci" / "crun" / "podrun-u-a").mkdir()
    (runtime_dir / "oci" / "crun" / "podrun-u-ab").mkdir()  # another app's, not a prefix match
    runsc = runtime_dir / "oci" / "runsc"
    for name in ("podrun-u-a_sandbox:podrun-u-a.state", "podrun-u-a_sandbox:podrun-u-a.lock", "podrun-u-b_sandbox:x"):
        (runsc / name).write_text("")
    assert o.state_entries("/usr/bin/crun", "podrun-u-a") == [f"{runtime_dir}/oci/crun/podrun-u-a"]
    assert sorted(o.state_entries("/usr/bin/runsc", "podrun-u-a")) == sorted(
        [str(runsc / "podrun-u-a_sandbox:podrun-u-a.state"), str(runsc / "podrun-u-a_sandbox:podrun-u-a.lock")])
    assert o.state_entries("/usr/sbin/runc", "podrun-u-a") == []  # no state root at all


def test_delete_refuses_names_podrun_does_not_make(runtime_dir: Path) -> None:
    (runtime_dir / "oci" / "crun").mkdir(parents=True)
    outside = runtime_dir / "keep"
    outside.mkdir()
    left = runtime_dir / "oci" / "crun" / "podrun-u-left"
    left.mkdir()
    problems = o.delete("/nonexistent/crun", ["../../keep", ".hidden", "podrun-u-gone", "podrun-u-left"])
    assert outside.is_dir() and not left.exists()  # each name judged on its own
    assert problems == ["'../../keep' is not a container name podrun makes: left alone",
                        "'.hidden' is not a container name podrun makes: left alone"]


def test_delete_removes_what_a_missing_runtime_left(runtime_dir: Path) -> None:
    state = runtime_dir / "oci" / "crun" / "podrun-u-a"
    (state / "sub").mkdir(parents=True)
    (state / "status").write_text("x")
    os.mkfifo(state / "exec.fifo")
    assert o.delete("/nonexistent/crun", ["podrun-u-a"]) == []
    assert not state.exists()


def test_root_hook_only_for_crun() -> None:
    assert o.root_flags_hook("/usr/sbin/runc", "/r", False) is None
    hook = o.root_flags_hook("/usr/bin/crun", "/p/apps/a/rootfs", True)
    assert hook is not None and hook["path"] == "/bin/sh"
    args = hook["args"]
    assert isinstance(args, list) and args[:2] == ["sh", "-c"] and args[3:] == ["sh", "remount,bind,nodev,ro",
                                                                                   "/p/apps/a/rootfs"]
    assert args[2] == o.ROOT_HOOK.replace("mount ", args[2].split()[0] + " ") and args[2].split()[0] in o.MOUNT_PATHS
    rw = o.root_flags_hook("/usr/bin/crun", "/r", False)
    assert rw is not None and rw["args"][-2] == "remount,bind,nodev"  # type: ignore[index]


def _tree(base: Path, *paths: str) -> None:
    for p in paths:
        (base / p).mkdir(parents=True, exist_ok=True)


def test_remove_cgroup_dirs_in_hierarchies_podrun_uses_and_the_others(tmp_path: Path) -> None:
    base = tmp_path / "cgroup"
    _tree(base, "cpu/podrun/pod-u/app-a", "cpu/podrun/pod-other", "blkio/podrun/pod-u/app-a", "freezer/podrun/pod-u",
          "devices/podrun/pod-v/app-b", "devices/podrun/pod-u/app-a")
    o.remove_cgroup_dirs("/podrun/pod-u/app-a", str(base), used={str(base / "cpu")})
    assert sorted(str(p.relative_to(base)) for p in base.rglob("*")) == sorted([
        "cpu", "cpu/podrun", "cpu/podrun/pod-other",  # podrun's own top dir stays where podrun uses it
        "blkio", "freezer",  # a runtime's empty parents go where podrun does not
        "devices", "devices/podrun", "devices/podrun/pod-v", "devices/podrun/pod-v/app-b"])  # another pod's stay


@pytest.mark.parametrize("path", ["/podrun/app-a", "/podrun/pod-u/../../etc/app-a", "app-a", "/x/y/z"])
def test_remove_cgroup_dirs_of_paths_podrun_never_gives(tmp_path: Path, path: str) -> None:
    base = tmp_path / "cgroup"
    _tree(base, "blkio/podrun/app-a", "blkio/x/y/z", "blkio/etc/app-a")
    before = sorted(base.rglob("*"))
    o.remove_cgroup_dirs(path, str(base), used=set())
    assert sorted(base.rglob("*")) == before


def test_remove_cgroup_dirs_on_cgroup_v2(tmp_path: Path) -> None:
    base = tmp_path / "cgroup"
    _tree(base, "podrun/pod-u/app-a", "blkio/podrun/pod-u/app-a")
    (base / "cgroup.controllers").write_text("cpu memory\n")
    o.remove_cgroup_dirs("/podrun/pod-u/app-a", str(base), used={str(base)})
    assert (base / "podrun").is_dir() and not (base / "podrun" / "pod-u").exists()
    assert (base / "blkio/podrun/pod-u/app-a").is_dir()  # only the one hierarchy of a v2 host
