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
])
def test_read_log_gives_the_last_line_and_runcs_message(tmp_path: Path, text: str, last: str) -> None:
    log = tmp_path / "log"
    log.write_text(text)
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
    problems = o.delete("/nonexistent/crun", ["../../keep", ".hidden", "podrun-u-gone"])
    assert outside.is_dir()
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
    assert isinstance(args, list) and args[0] == "sh" and args[-2:] == ["remount,bind,nodev,ro", "/p/apps/a/rootfs"]
    assert 'rm -f "$2/dev/core"' in args[2] and args[2].split()[0] in o.MOUNT_PATHS
    rw = o.root_flags_hook("/usr/bin/crun", "/r", False)
    assert rw is not None and rw["args"][-2] == "remount,bind,nodev"  # type: ignore[index]
