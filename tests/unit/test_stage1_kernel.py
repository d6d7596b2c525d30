"""stage1's privileged sequences against the recording kernel (tests/unit/recording_kernel.py),
without root: the pod's pid 1 moving into its empty root and giving up every privilege before
it execs catatonit (test_pod_init.py runs it for real), the
``fly`` flavor's chroot with /dev, /proc, /sys and volumes bound at targets resolved inside the
app's root, and ``enter`` joining the app's cgroup, namespaces and root in order.  Paths inside
a root are resolved for real; only the privileged calls are recorded.  The integration tests
(test_fly.py, test_lifecycle.py's enter tests, test_escapes.py) apply the same code as root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from podrun.isolation import syscalls as sc
from podrun.model.manifest import AppSpec, MountSpec, PodManifest, Volume
from podrun.pod import init
from podrun.stage1.default import enter
from podrun.stage1.fly import enter_app_root
from tests.unit.recording_kernel import RecordingKernel

BIND = sc.MS_BIND | sc.MS_REC


def test_init_moves_into_an_empty_read_only_root_of_its_own() -> None:
    """Own mount namespace (private: nothing propagates to the host) before the tmpfs; pivot_root
    into it and the old root detached, so /proc/1/root and /proc/1/cwd lead nowhere."""
    flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    kernel = RecordingKernel()
    init.empty_root("/pods/run/u", kernel)
    assert kernel.calls == [
        ("unshare", sc.CLONE_NEWNS),
        ("mount", None, "/", None, sc.MS_REC | sc.MS_PRIVATE, None),
        ("mount", "podrun-init", "/pods/run/u", "tmpfs", flags, "size=4k,nr_inodes=1,mode=0555"),
        ("chdir", "/pods/run/u"),
        ("pivot_root", ".", "."),
        ("umount", ".", sc.MNT_DETACH),
        ("mount", None, "/", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | flags, None),
        ("chdir", "/"),
    ]


def test_init_splits_its_gid_then_drops_the_bounding_set_before_its_capabilities() -> None:
    """Effective gid apart from the real one: the exec of catatonit leaves pid 1 non-dumpable."""
    kernel = RecordingKernel()
    init.lock_down(kernel)
    none = frozenset[int]()
    assert kernel.calls == [("setgroups", []), ("set_gids", 0, 65534), ("drop_bounding", none),
                            ("set_caps", none, none, none), ("clear_ambient",)]


def test_catatonit_is_the_first_executable_regular_file_of_the_directories(tmp_path: Path) -> None:
    dirs = [tmp_path / name for name in ("a", "b", "c", "d", "e")]
    for d in dirs:
        d.mkdir()
    (dirs[1] / "catatonit").write_bytes(b"not executable")
    (dirs[2] / "catatonit").mkdir(mode=0o755)
    for d in dirs[3:]:
        (d / "catatonit").write_bytes(d.name.encode())
        (d / "catatonit").chmod(0o755)
    fd = init.open_catatonit(tuple(map(str, dirs)))
    try:
        assert os.read(fd, 10) == b"d" and os.get_inheritable(fd) is False
    finally:
        os.close(fd)
    with pytest.raises(FileNotFoundError, match="install the catatonit package"):
        init.open_catatonit(tuple(map(str, dirs[:3])))


def test_fly_binds_the_host_trees_and_volumes_inside_the_root_then_chroots(tmp_path: Path) -> None:
    """An image's ``proc -> /`` and a volume target linking out of the root are followed as if
    the root were / (runc CVE-2021-30465): the binds land inside the root, never on the host."""
    pod = tmp_path / "pod"
    root = pod / "apps" / "web" / "rootfs"
    (root / "sys").mkdir(parents=True)
    (root / "proc").symlink_to("/")
    (root / "data").symlink_to("../../../../outside")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("app:x:1000:100::/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("users:x:100:app\nwheel:x:10:app\n")
    source = tmp_path / "src"
    source.mkdir()
    app = AppSpec(name="web", image_id="sha256:0", image_name="demo", lower_dirs=(), exec_argv=("/bin/true",),
                  env=(), user="app", supplementary_gids=(7,),
                  mounts=(MountSpec("host", "/data"), MountSpec("scratch", "/tmp/s")))
    manifest = PodManifest("u", (app,), volumes=(Volume("host", "host", str(source)), Volume("scratch", "empty")))
    kernel = RecordingKernel(str(root))

    home = enter_app_root(str(pod), manifest, app, kernel)

    assert home == "/home/app"
    names = kernel.names()
    assert names[:2] == ["unshare", "mount"] and kernel.calls[:2] == [
        ("unshare", sc.CLONE_NEWNS), ("mount", None, "/", None, sc.MS_REC | sc.MS_PRIVATE, None)]
    overlay = names.index("mount", 2)
    assert kernel.calls[overlay][1:4] == ("overlay", str(root), "overlay")
    assert kernel.calls[overlay + 2:] == [
        ("mount", "/dev", "/dev", None, BIND, None),
        ("mount", "/proc", "/", None, BIND, None),   # "proc -> /" stays the root itself
        ("mount", "/sys", "/sys", None, BIND, None),
        ("mount", str(source), "/outside", None, BIND, None),
        ("mount", str(pod / "volumes" / "scratch"), "/tmp/s", None, BIND, None),
        ("chroot", str(root)),
        ("chdir", "/"),
        ("setgroups", [7, 10, 100]),
        ("setresgid", 100),
        ("setresuid", 1000),
    ]
    assert (root / "dev").is_dir() and (root / "outside").is_dir() and not (tmp_path / "outside").exists()


def test_enter_joins_the_apps_cgroup_then_its_namespaces_mount_last_then_its_root(tmp_path: Path) -> None:
    """The app's main process is the member of its cgroup whose parent is pid 1's parent: here
    this process stands for both, so the namespaces joined are this process's own, each of the
    type setns is told."""
    me = os.getpid()
    base = tmp_path / "pod-u"
    (base / "app-web").mkdir(parents=True)
    (base / "app-web" / "cgroup.procs").write_text(f"{me}\n")
    kernel = RecordingKernel()
    fds = os.listdir("/proc/self/fd")

    enter.join_app(me, [str(base)], "web", kernel)

    ns = [(flag, os.readlink(f"/proc/{me}/ns/{name}")) for name, flag in (
        ("cgroup", sc.CLONE_NEWCGROUP), ("ipc", sc.CLONE_NEWIPC), ("uts", sc.CLONE_NEWUTS),
        ("net", sc.CLONE_NEWNET), ("pid", sc.CLONE_NEWPID), ("mnt", sc.CLONE_NEWNS))]
    assert kernel.calls == [
        ("set_dumpable", False),   # before anything of the pod is opened
        ("join_cgroup", [str(base / "app-web")]),
        *[("setns", flag, link) for flag, link in ns],
        ("fchdir", os.readlink(f"/proc/{me}/root")),
        ("chroot", "."),
        ("chdir", "/"),
    ]
    assert len(os.listdir("/proc/self/fd")) == len(fds)   # the namespace and root fds are closed
