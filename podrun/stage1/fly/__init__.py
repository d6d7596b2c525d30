"""stage1 flavor ``fly`` (rkt's): run one app chrooted into its overlay root, in the host's
PID, network, IPC and UTS namespaces, with full privileges and no supervisor: the app *is* the
pod's process.  Meant for privileged host tools shipped as images.

Only a private mount namespace is created, so the overlay root and the host /dev, /proc and
/sys bound into it disappear with the app.  The pod lock fd stays open across the app's exec:
the pod is running exactly as long as the app.
"""

from __future__ import annotations

import errno
import os
import sys

from podrun import abi
from podrun.isolation import signals
from podrun.isolation import syscalls as sc
from podrun.isolation.kernel import KERNEL, Kernel
from podrun.pod import layout
from podrun.stage2.app import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    EXIT_SETUP_FAILED,
    ensure_in_root,
    enter_workdir,
    exec_in_path,
    lookup_user,
)
from podrun.stage2.rootfs import mount_app_root

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from podrun.model.manifest import AppSpec, PodManifest


def main(argv: list[str]) -> NoReturn:
    """``stages/fly/run --pod-dir DIR [--debug]``; the pod lock fd is in $PODRUN_LOCK_FD
    (the contract: podrun.abi)."""
    try:
        pod_dir = abi.parse_run_argv(argv).pod_dir
        lock_fd = abi.take_lock_fd()
        manifest = layout.read_manifest_at(pod_dir)
        app = manifest.apps[0]
        home = enter_app_root(pod_dir, manifest, app)
        env = dict(e.split("=", 1) for e in app.env if "=" in e)
        env.setdefault("HOME", home)
        enter_workdir(app.working_dir)
        if lock_fd >= 0:
            os.set_inheritable(lock_fd, True)
    except Exception as exc:
        sys.stderr.write(f"podrun: stage1 fly: {exc}\n")
        sys.exit(EXIT_SETUP_FAILED)
    argv_app = list(app.exec_argv)
    signals.set_default((signals.SIGPIPE, signals.SIGXFSZ))  # ignored by Python, and ignoring survives execve
    try:
        exec_in_path(argv_app, env)
    except OSError as exc:
        sys.stderr.write(f"podrun: app {app.name}: cannot execute {argv_app[0]!r}: {exc.strerror}\n")
        sys.exit(EXIT_NOT_FOUND if exc.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_NOT_EXECUTABLE)


def enter_app_root(pod_dir: str, manifest: PodManifest, app: AppSpec, kernel: Kernel = KERNEL) -> str:
    """Chroot this process into *app*'s overlay root, in a private mount namespace with the
    host's /dev, /proc, /sys and the app's volumes bound in, as the app's user; the user's home.

    The bind targets are resolved inside the root, so an image's ``proc -> /`` or a volume
    target that is a symlink out of the root stays inside it (runc CVE-2021-30465)."""
    kernel.unshare(sc.CLONE_NEWNS)
    kernel.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    root = mount_app_root(os.path.join(pod_dir, layout.app_dir(app.name)), app, kernel)
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        uid, gid, groups, home = lookup_user(app.user, app.group, root_fd)  # before /proc is bound in
        for sub in ("dev", "proc", "sys"):
            _bind_in_root(kernel, root_fd, f"/{sub}", f"/{sub}", False)
        vols = {v.name: v for v in manifest.volumes}
        for m in app.mounts:
            vol = vols[m.volume]
            source = vol.source if vol.kind == "host" else os.path.join(pod_dir, layout.volume_path(vol.name))
            assert source is not None
            _bind_in_root(kernel, root_fd, source, m.target, os.path.isfile(source))
    finally:
        os.close(root_fd)
    kernel.chroot(root)
    kernel.chdir("/")
    kernel.setgroups(sorted(set(groups) | set(app.supplementary_gids)))
    kernel.setresgid(gid)
    kernel.setresuid(uid)
    return home


def _bind_in_root(kernel: Kernel, root_fd: int, source: str, target: str, is_file: bool) -> None:
    fd = ensure_in_root(root_fd, target, is_file)
    try:
        kernel.mount(source, sc.fd_path(fd), None, sc.MS_BIND | sc.MS_REC)
    finally:
        os.close(fd)
