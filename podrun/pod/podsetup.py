"""What every supervising stage1 flavor (``default``, ``oci``) does around its apps: set up the
pod before the first app starts and take it down after the last one ended.

Setup, in the supervisor (the process stage0 exec'd, holding the pod lock): the systemd scope,
the pod's network namespace and its network helper (podrun.net.helper), new mount, UTS, IPC
and PID namespaces (the supervisor's *next* child is the pod's pid 1), the pod's hostname and
loopback, each app's root (mounted by the flavor's stage2 call), the pod's cgroup with a leaf for pid 1 and
one per app, and the pod files (/etc/hosts…).  A failure releases what was made and exits with
one line on stderr.  Teardown: the ``finished`` record, the network, every process left in the
pod's cgroup and the cgroup itself.

A flavor imports this module, never another flavor (docs/architecture.md).
"""

from __future__ import annotations

import os
import sys
import time

from podrun import abi, faults, fsutil
from podrun.errors import PodrunError
from podrun.isolation import cgroups
from podrun.isolation import syscalls as sc
from podrun.pod import layout, placement
from podrun.pod.podfiles import default_hostname, write_pod_files
from podrun.pod.sdglue import Systemd

# Start-up budget: this module and everything it imports stay off dataclasses, json, re, enum,
# typing, pathlib, signal, socket, functools and contextlib (podrun.lean; tests/unit/test_hot_path.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn

    from podrun.model.manifest import AppSpec, PodManifest

    MountRoot = Callable[[str, AppSpec], str]
    from podrun.net import helper

EXIT_STAGE1_FAILED = 254


class Pod:
    """A pod set up by :func:`setup`: what its supervisor works with."""

    __slots__ = ("app_cgroups", "cgroup", "debug", "files", "host_pidns", "init_cgroup", "manifest", "netns_fd",
                 "networked", "pod_dir", "roots", "sd")

    def __init__(self, pod_dir: str, manifest: PodManifest, sd: Systemd, debug: bool) -> None:
        self.pod_dir = pod_dir
        self.manifest = manifest
        self.sd = sd
        self.debug = debug
        self.networked = bool(manifest.networks)
        self.host_pidns = -1  # the host's PID namespace (to return to, for children of ours)
        self.netns_fd = -1  # the pod's network namespace when networked (-1: ours, unshared)
        self.roots: dict[str, str] = {}
        self.files: dict[str, str] = {}
        self.cgroup: cgroups.CgroupTree | None = None
        self.init_cgroup: cgroups.CgroupTree | None = None
        self.app_cgroups: dict[str, cgroups.CgroupTree] = {}


def start(argv: list[str], mount_root: MountRoot) -> tuple[Pod, int]:
    """The ``run`` entrypoint's start, for every supervising flavor: open catatonit, the pod's
    pid 1 (podrun.pod.init), before anything of the pod is made (a host without it is refused
    in one line, with nothing to undo); parse the argv and take the lock fd and the
    ``--ready-fd`` descriptor (podrun.abi; exit 254 if they are not of the contract); then
    :func:`setup`.  Returns the pod, set up, and catatonit's fd."""
    from podrun.pod import init

    try:
        init_exe = init.open_catatonit()
    except OSError as exc:
        sys.stderr.write(f"podrun: stage1: the pod's pid 1: {exc.strerror}\n")
        sys.exit(EXIT_STAGE1_FAILED)
    try:
        args = abi.parse_run_argv(argv)
        lock_fd = abi.take_lock_fd()
        ready_fd = abi.take_ready_fd()  # close-on-exec from here: no app, helper or runtime gets it
    except abi.AbiError as exc:
        sys.stderr.write(f"podrun: {exc}\n")
        sys.exit(EXIT_STAGE1_FAILED)
    return setup(args.pod_dir, lock_fd, args.debug, mount_root, ready_fd), init_exe


def setup(pod_dir: str, lock_fd: int, debug: bool, mount_root: MountRoot, ready_fd: int = -1) -> Pod:
    """Set the pod of *pod_dir* up (module docstring); on failure say why and exit (the PID
    file removed, *ready_fd* closed unwritten: s6 then sees the service down, not ready).
    *mount_root(app_dir, app)* mounts an app's root and returns its path (the stage2 layer's
    podrun.stage2.rootfs.mount_app_root: the pod layer never imports stage2)."""
    pod: Pod | None = None
    sd: Systemd | None = None
    manifest: PodManifest | None = None
    doing = "reading the pod manifest"  # named in the error message (a full disk says where)
    try:
        manifest = layout.read_manifest_at(pod_dir)
        sd = Systemd(manifest, ready_fd)
        pod = Pod(pod_dir, manifest, sd, debug)
        if manifest.register:
            doing = "registering the pod's systemd scope"
            from podrun.systemd import scope

            scope.register(manifest.uuid, os.getpid())  # before any cgroup of the pod exists
        net_helper = None
        pod.host_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
        if pod.networked:
            doing = "creating the pod's network namespace"
            pod.netns_fd, net_helper = _start_network(pod_dir, manifest, lock_fd)
        doing = "creating the pod's namespaces"
        flags = sc.CLONE_NEWNS | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWPID
        if manifest.net == "none":
            flags |= sc.CLONE_NEWNET  # networked pods: pid 1 joins the helper's netns instead
        sc.unshare(flags)
        sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
        sc.sethostname(default_hostname(manifest))
        if manifest.net == "none":
            _bring_up_loopback()
            _allow_ping()
        doing = "mounting the apps' root filesystems"
        for vol in manifest.volumes:
            if vol.kind == "empty":
                os.makedirs(os.path.join(pod_dir, layout.volume_path(vol.name)), mode=0o755, exist_ok=True)
        pod.roots = {app.name: mount_root(os.path.join(pod_dir, layout.app_dir(app.name)), app)
                     for app in manifest.apps}
        faults.checkpoint("stage1:after-mounts")
        doing = "creating the pod's cgroups"
        _make_cgroups(pod)
        faults.checkpoint("stage1:after-cgroups")
        if net_helper is not None:
            doing = "attaching the pod's networks"
            from podrun.net import helper

            helper.wait(net_helper)
        doing = "writing the pod's /etc/hostname, /etc/hosts and /etc/resolv.conf"
        pod.files = write_pod_files(pod_dir, manifest)
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else f" (pod {pod_dir})"
            message = f"{doing}{where}: {(exc.strerror or str(exc)).rpartition(': ')[2]}"
        else:
            message = f"{doing}: {exc}"
        sys.stderr.write(f"podrun: stage1: {message}\n")
        if pod is not None:
            _undo_setup(pod)
        if sd is not None:
            sd.close()
        elif ready_fd >= 0:
            os.close(ready_fd)
        if manifest is not None and manifest.pid_file:
            fsutil.remove_pid_file(manifest.pid_file, os.getpid())
        # a PodrunError keeps its code (247: a running pod holds the address or port asked for)
        sys.exit(exc.exit_code if isinstance(exc, PodrunError) else EXIT_STAGE1_FAILED)
    return pod


def finish(pod: Pod, code: int) -> NoReturn:
    """After the last app: record the pod's end, take the network and the cgroups down, and exit
    with *code* (the pod's exit code)."""
    pod.sd.close()
    finished = os.path.join(pod.pod_dir, layout.FINISHED)
    try:
        record = fsutil.numbers_json({"exit_code": code, "finished": time.time()})
        fsutil.atomic_write(finished, record, 0o644, durable=False)
    except OSError as exc:  # a full disk: the pod still ends with its code; status reads "unknown"
        sys.stderr.write(f"podrun: warning: writing {finished}: {exc.strerror} (the exit code is not recorded)\n")
    if pod.networked:
        os.close(pod.netns_fd)
        _detach_network(pod)
    if pod.cgroup is not None:
        try:
            pod.cgroup.kill_all()  # nothing of the pod outlives it, not even a daemonized process
            pod.cgroup.remove()
        except OSError as exc:
            sys.stderr.write(f"podrun: warning: removing the pod's cgroup: {exc} (podrun gc retries)\n")
    if pod.manifest.pid_file:  # last: once it is gone, start-stop-daemon --stop may see the pod as ended
        fsutil.remove_pid_file(pod.manifest.pid_file, os.getpid())
    exit_now(code)


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter's teardown (module and object finalization costs ~5-10 ms
    at the very end of every pod); nothing of podrun's needs it, stdio is flushed here."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def host_pid_namespace(pod: Pod) -> None:
    """Make this process's later children be born in the host's PID namespace again (after the
    pod's pid 1 was forked): they run nft, CNI plugins or an OCI runtime, which the pod must
    not see and which cannot fork in a PID namespace whose pid 1 has gone (ENOMEM)."""
    if pod.host_pidns >= 0:
        sc.setns(pod.host_pidns, sc.CLONE_NEWPID)


def _bring_up_loopback() -> None:
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    s = sc.dgram_socket()  # not the socket module: it imports selectors, enum… (~8 ms)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, siocgifflags, ifr))[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH14x", b"lo", flags | iff_up))
    except OSError as exc:
        hint = " (podrun needs CAP_NET_ADMIN)" if exc.errno == 1 else ""
        raise OSError(exc.errno, f"bringing up lo in the pod's network namespace: {exc.strerror}{hint}") from None
    finally:
        os.close(s)


def _allow_ping() -> None:
    """Root in the pod may use ICMP echo sockets in its own network namespace, as on the
    default network (podrun.net.link) and in podman (``net.ipv4.ping_group_range=0 0``)."""
    fd = os.open("/proc/sys/net/ipv4/ping_group_range", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"0 0")
    finally:
        os.close(fd)


def _start_network(pod_dir: str, manifest: PodManifest, lock_fd: int) -> tuple[int, helper.Handle]:
    """Create the pod's netns here (in the host's mount namespace, before ours is unshared) and
    fork the network helper (podrun.net.helper) to attach the networks while this process goes
    on.  Returns (netns fd, helper)."""
    from podrun.net import helper, setup
    from podrun.pod.boot import current_boot_id

    data_dir = abi.data_dir()  # named by stage0, never derived from the pod dir's place
    netns_fd = setup.create_netns(pod_dir, data_dir, manifest.uuid)
    handle = helper.spawn(os.path.abspath(pod_dir), data_dir, manifest, current_boot_id(),
                          close_fds=(lock_fd,) if lock_fd >= 0 else ())
    return netns_fd, handle


def _detach_network(pod: Pod) -> None:
    from podrun.net import setup

    host_pid_namespace(pod)
    for problem in setup.detach(pod.pod_dir, delete_links=False):
        sys.stderr.write(f"podrun: warning: network teardown: {problem} (podrun gc retries)\n")


def _undo_setup(pod: Pod) -> None:
    """After a failed start: release what was made (gc would too, later)."""
    try:
        if pod.networked:
            _detach_network(pod)
        if pod.cgroup is not None:
            pod.cgroup.remove()
    except Exception as exc:
        sys.stderr.write(f"podrun: warning: cleaning up: {exc} (podrun gc retries)\n")


def _make_cgroups(pod: Pod) -> None:
    """The pod's cgroup with a leaf for its pid 1 and one per app (v2 allows no processes in a
    cgroup whose children have controllers).  The paths are recorded in the pod dir *before*
    anything is created, so gc can remove them after any crash."""
    manifest = pod.manifest
    name = f"pod-{manifest.uuid}"
    parent = placement.place_pods(own_scope=manifest.register)
    paths = cgroups.pod_cgroup_paths(name, parent)
    fsutil.atomic_write(os.path.join(pod.pod_dir, layout.CGROUPS), fsutil.strings_json(list(paths)), 0o644)
    pod_cgroup = cgroups.create_pod_cgroup(name, parent)
    try:
        pod.init_cgroup = pod_cgroup.child("init")
        for app in manifest.apps:
            tree = pod_cgroup.child(layout.app_cgroup(app.name))
            res = app.resources
            tree.set_limits(cgroups.Limits(res.memory_max, res.cpu_millis, res.pids_max))
            pod.app_cgroups[app.name] = tree
    except BaseException:
        pod_cgroup.remove()
        raise
    pod.cgroup = pod_cgroup
