"""stage2 against the recording kernel (tests/unit/recording_kernel.py), without root: where the
mount plan's mounts land inside an app's root and in what order, the overlay root's options, the
pivot into the root, and the order of the confinement steps.  Paths inside the root are resolved
for real (openat2 works on any directory); only the privileged calls are recorded.  The
integration tests (test_run_probe.py, test_escapes.py, test_caps.py) apply the same code as root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from podrun.isolation import syscalls as sc
from podrun.isolation.kernel import Kernel
from podrun.model.manifest import AppSpec
from podrun.stage2 import confine
from podrun.stage2.app import apply_plan, set_up_root
from podrun.stage2.mountplan import (
    DEVICES,
    MASKED_PATHS,
    PROC_FLAGS,
    READONLY_PATHS,
    Mask,
    Mount,
    Op,
    ReadOnly,
    app_plan,
)
from podrun.stage2.rootfs import mount_app_root
from tests.unit.recording_kernel import RecordingKernel

RO_REMOUNT = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY


def test_the_double_records_every_call_of_the_interface() -> None:
    """A method added to Kernel but not to the double would make unit tests call the real kernel."""
    calls = {n for n, v in vars(Kernel).items() if callable(v) and not n.startswith("_")} - {"apply_app_identity"}
    assert calls <= set(vars(RecordingKernel)), calls - set(vars(RecordingKernel))


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """An app root as an image leaves it: /proc and /sys as empty dirs, plus what a test adds."""
    root = tmp_path / "root"
    for sub in ("proc", "sys", "etc"):
        (root / sub).mkdir(parents=True)
    return root


def _mounts(kernel: RecordingKernel) -> list[tuple[object, ...]]:
    return [c[1:] for c in kernel.calls if c[0] == "mount"]


def test_default_plan_in_order(image: Path, tmp_path: Path) -> None:
    (image / "proc" / "kcore").write_text("")   # a masked file
    (image / "proc" / "acpi").mkdir()            # a masked directory
    (image / "proc" / "sys").mkdir()             # a read-only path
    hosts = tmp_path / "hosts"
    hosts.write_text("")
    kernel = RecordingKernel(str(image))
    apply_plan(str(image), app_plan({"/etc/hosts": str(hosts)}, [("/srv/data", "/data", True, False)]), kernel)

    nodev_nosuid = sc.MS_NOSUID | sc.MS_NODEV
    assert _mounts(kernel) == [
        ("proc", "/proc", "proc", PROC_FLAGS, None),
        ("tmpfs", "/dev", "tmpfs", sc.MS_NOSUID | sc.MS_NOEXEC | sc.MS_STRICTATIME, "mode=755,size=65536k"),
        ("devpts", "/dev/pts", "devpts", sc.MS_NOSUID | sc.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"),
        ("shm", "/dev/shm", "tmpfs", PROC_FLAGS, "mode=1777,size=65536k"),
        ("mqueue", "/dev/mqueue", "mqueue", PROC_FLAGS, None),
        ("sysfs", "/sys", "sysfs", PROC_FLAGS | sc.MS_RDONLY, None),
        ("tmpfs", "/proc/acpi", "tmpfs", sc.MS_RDONLY | nodev_nosuid | sc.MS_NOEXEC, "size=0,mode=0"),
        ("/dev/null", "/proc/kcore", None, sc.MS_BIND, None),
        ("/proc/sys", "/proc/sys", None, sc.MS_BIND | sc.MS_REC, None),
        (None, "/proc/sys", None, RO_REMOUNT | nodev_nosuid | sc.MS_NOEXEC, None),
        (str(hosts), "/etc/hosts", None, sc.MS_BIND, None),
        ("/srv/data", "/data", None, sc.MS_BIND | sc.MS_REC, None),
        (None, "/data", None, RO_REMOUNT | nodev_nosuid, None),
    ]
    # the device nodes come right after /dev's tmpfs, with exact modes; the rest of /dev is real
    names = kernel.names()
    assert names[2:2 + len(DEVICES)] == ["mknod"] * len(DEVICES)
    assert [c[1:] for c in kernel.calls if c[0] == "mknod"] == [
        (name, 0o666 | stat.S_IFCHR, major, minor) for name, major, minor in DEVICES]
    assert os.readlink(image / "dev" / "ptmx") == "pts/ptmx"
    assert (image / "etc" / "hosts").is_file() and (image / "data").is_dir()


def test_masks_and_read_only_paths_missing_from_the_image_are_skipped(image: Path) -> None:
    kernel = RecordingKernel(str(image))
    plan: list[Op] = [Mask(p) for p in MASKED_PATHS]
    plan += [ReadOnly(p) for p in READONLY_PATHS]
    apply_plan(str(image), plan, kernel)
    assert kernel.calls == []
    assert not (image / "proc" / "acpi").exists()   # nothing created for them either


def test_an_images_symlinks_cannot_take_a_mount_out_of_its_root(image: Path, tmp_path: Path) -> None:
    """A volume target, hosts file or /proc that is a symlink out of the image (absolute or
    climbing with ..) is followed as if the root were / (runc CVE-2021-30465)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (image / "vol").symlink_to(outside)                      # absolute: /…/outside inside the root
    (image / "up").symlink_to("../../../../../../outside")   # climbs: clamped at the root
    (image / "proc").rmdir()
    (image / "proc").symlink_to("/")                         # "proc -> /" stays the root itself
    kernel = RecordingKernel(str(image))
    apply_plan(str(image), [Mount("/vol", None, "/src1", sc.MS_BIND), Mount("/up", None, "/src2", sc.MS_BIND),
                            Mount("/proc", "proc", "proc", PROC_FLAGS)], kernel)
    assert [m[1] for m in _mounts(kernel)] == [str(outside), "/outside", "/"]
    assert list(outside.iterdir()) == []
    assert (image / str(outside).lstrip("/")).is_dir() and (image / "outside").is_dir()


def test_set_up_root_enters_the_root_and_detaches_the_old_one(image: Path) -> None:
    kernel = RecordingKernel(str(image))
    set_up_root(str(image), [], read_only=True, kernel=kernel)
    assert kernel.calls == [
        ("unshare", sc.CLONE_NEWNS),
        ("mount", None, "/", None, sc.MS_REC | sc.MS_SLAVE, None),   # no mount propagates back to the host
        ("mount", None, str(image), None, RO_REMOUNT | sc.MS_NODEV, None),
        ("chdir", str(image)),
        ("pivot_root", ".", "."),
        ("umount", ".", sc.MNT_DETACH),
        ("chdir", "/"),
    ]
    kernel = RecordingKernel(str(image))
    set_up_root(str(image), [], read_only=False, kernel=kernel)
    assert "pivot_root" in kernel.names() and str(image) not in [c[2] for c in kernel.calls if c[0] == "mount"]


def _app(lower_dirs: tuple[str, ...]) -> AppSpec:
    return AppSpec(name="web", image_id="sha256:0", image_name="demo", lower_dirs=lower_dirs,
                   exec_argv=("/bin/true",), env=())


def test_overlay_root_lists_layers_top_first_relative_to_their_directory(tmp_path: Path) -> None:
    pod = tmp_path / "pod"
    layers = tmp_path / "layers"
    kernel = RecordingKernel()
    base = pod / "apps" / "web"
    root = mount_app_root(str(base), _app((str(layers / "base"), str(layers / "mid"), str(layers / "top"))), kernel)
    assert root == f"{base}/rootfs"
    assert kernel.calls == [
        ("chdir", str(layers)),
        ("mount", "overlay", root, "overlay", sc.MS_NODEV,
         f"lowerdir=top:mid:base,upperdir={base}/upper,workdir={base}/work"),
        ("chdir", "/"),
    ]
    assert all((base / sub).is_dir() for sub in ("upper", "work", "rootfs"))


def test_overlay_root_of_an_image_without_layers(tmp_path: Path) -> None:
    kernel = RecordingKernel()
    base = tmp_path / "apps" / "web"
    mount_app_root(str(base), _app(()), kernel)
    assert (base / "empty").is_dir()
    assert kernel.calls[1][5] == f"lowerdir=empty,upperdir={base}/upper,workdir={base}/work"


CAPS = frozenset({0, 5, 10})
IDENTITY = ["drop_bounding", "keep_caps", "setgroups", "setresgid", "setresuid", "keep_caps", "set_caps",
            "clear_ambient"]


def _confine(no_new_privs: bool, bpf: bytes | None) -> RecordingKernel:
    kernel = RecordingKernel()
    conf = confine.Confinement(caps=CAPS, rlimits={"RLIMIT_NOFILE": (1024, 1024)}, no_new_privs=no_new_privs,
                               seccomp_bpf=bpf)
    confine.apply(conf, 1000, 1000, [1000, 27], kernel)
    return kernel


def test_confinement_order_with_no_new_privs() -> None:
    """runc's order: rlimits; bounding dropped while CAP_SETPCAP is held; user switched with
    KEEPCAPS; the sets installed; no_new_privs; seccomp last (it may forbid the calls before)."""
    kernel = _confine(True, b"\0" * 8)
    assert kernel.names() == ["set_rlimits", *IDENTITY, "set_no_new_privs", "load_seccomp"]
    assert kernel.calls[1:7] == [("drop_bounding", CAPS), ("keep_caps", True), ("setgroups", [1000, 27]),
                                 ("setresgid", 1000), ("setresuid", 1000), ("keep_caps", False)]
    assert kernel.calls[7] == ("set_caps", CAPS, CAPS, frozenset())


def test_confinement_without_no_new_privs_loads_seccomp_while_still_privileged() -> None:
    """Without no_new_privs the filter needs CAP_SYS_ADMIN, which the identity change drops."""
    assert _confine(False, b"\0" * 8).names() == ["set_rlimits", "load_seccomp", *IDENTITY]
    assert _confine(True, None).names() == ["set_rlimits", *IDENTITY, "set_no_new_privs"]
    assert _confine(False, None).names() == ["set_rlimits", *IDENTITY]


def test_ambient_caps_are_raised_last_and_must_be_retained() -> None:
    kernel = RecordingKernel()
    kernel.apply_app_identity(1000, 1000, [], CAPS, ambient=frozenset({10}))
    assert kernel.names() == [*IDENTITY, "raise_ambient"]
    assert kernel.calls[-3] == ("set_caps", CAPS, CAPS, frozenset({10}))
    kernel = RecordingKernel()
    with pytest.raises(OSError, match="subset"):
        kernel.apply_app_identity(1000, 1000, [], CAPS, ambient=frozenset({21}))
    assert kernel.calls == []   # refused before anything changed
