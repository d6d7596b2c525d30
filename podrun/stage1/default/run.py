"""stage1 flavor ``default``: the pod supervisor.

Process chain (see man/podrun-stage1.7)::

    podrun run (stage0) --exec--> this module, same PID, holding the pod lock ("supervisor")
        unshare mount/UTS/IPC/net + PID namespaces; overlay root per app; cgroups; pod files
        ├─ fork: pod pid 1 (podrun.stage1.default.init: a reaper in an empty root of its own)
        └─ fork per app, into the pod's namespaces: stage2 launcher -> execve(app)

The supervisor stays in the host PID namespace so the unit's main PID (or the shell's child)
is the pod.  It supervises the apps itself (podrun.stage1.default.supervise): relays their output,
forwards SIGTERM/SIGINT/SIGHUP (pid 1 passes on those sent to it), records each app's exit
status, applies the exit rule and exits with the pod's exit code.  pid 1 dies with the
supervisor (PR_SET_PDEATHSIG), and every app dies with pid 1 (the kernel kills a PID namespace
whose first process exits), so nothing outlives a ``kill -9``.  All mounts live in the pod's
private mount namespaces and vanish with them.
"""

from __future__ import annotations

import os
import sys
import time

from podrun import abi, faults, fsutil
from podrun.errors import PodrunError
from podrun.isolation import cgroups
from podrun.isolation import syscalls as sc
from podrun.model.manifest import PodManifest
from podrun.pod import layout, placement
from podrun.pod.podfiles import default_hostname, write_pod_files
from podrun.pod.sdglue import Systemd
from podrun.stage1.default.supervise import EXIT_STAGE1_FAILED, Supervisor
from podrun.stage2.rootfs import mount_app_root

# Start-up budget: this module and everything it imports stay off dataclasses, json, re, enum,
# typing, pathlib, signal, socket, functools and contextlib (podrun.lean; tests/unit/test_hot_path.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

    from podrun.net import helper


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


def _mkdirs(path: str) -> None:
    os.makedirs(path, mode=0o755, exist_ok=True)


def main(argv: list[str]) -> NoReturn:
    """``stages/default/run --pod-dir DIR [--debug]``; the pod lock fd is in $PODRUN_LOCK_FD
    (the contract: podrun.abi)."""
    try:
        args = abi.parse_run_argv(argv)
        lock_fd = abi.take_lock_fd()
    except abi.AbiError as exc:
        sys.stderr.write(f"podrun: {exc}\n")
        sys.exit(EXIT_STAGE1_FAILED)
    pod_dir = args.pod_dir
    networked = False
    host_pidns = -1
    pod_cgroup = None
    sd: Systemd | None = None
    doing = "reading the pod manifest"  # named in the error message (a full disk says where)
    try:
        manifest = layout.read_manifest_at(pod_dir)
        sd = Systemd(manifest)
        if manifest.register:
            doing = "registering the pod's systemd scope"
            from podrun.systemd import scope

            scope.register(manifest.uuid, os.getpid())  # before any cgroup of the pod exists
        networked = bool(manifest.networks)
        net_helper = None
        netns_fd = -1
        if networked:
            doing = "creating the pod's network namespace"
            host_pidns, netns_fd, net_helper = _start_network(pod_dir, manifest, lock_fd)
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
                _mkdirs(os.path.join(pod_dir, layout.volume_path(vol.name)))
        roots = {app.name: mount_app_root(os.path.join(pod_dir, layout.app_dir(app.name)), app)
                 for app in manifest.apps}
        faults.checkpoint("stage1:after-mounts")
        doing = "creating the pod's cgroups"
        pod_cgroup, init_cgroup, app_cgroups = _make_cgroups(pod_dir, manifest)
        faults.checkpoint("stage1:after-cgroups")
        if net_helper is not None:
            doing = "attaching the pod's networks"
            from podrun.net import helper

            helper.wait(net_helper)
        doing = "writing the pod's /etc/hostname, /etc/hosts and /etc/resolv.conf"
        files = write_pod_files(pod_dir, manifest)
    except Exception as exc:
        if args.debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, OSError):
            where = f" ({exc.filename})" if exc.filename else f" (pod {pod_dir})"
            message = f"{doing}{where}: {(exc.strerror or str(exc)).rpartition(': ')[2]}"
        else:
            message = f"{doing}: {exc}"
        sys.stderr.write(f"podrun: stage1: {message}\n")
        _undo_setup(pod_dir, networked, host_pidns, pod_cgroup)
        if sd is not None:
            sd.close()
        # a PodrunError keeps its code (247: a running pod holds the address or port asked for)
        sys.exit(exc.exit_code if isinstance(exc, PodrunError) else EXIT_STAGE1_FAILED)
    code = Supervisor(pod_dir, manifest, roots, files, init_cgroup, app_cgroups, sd, netns_fd).run()
    sd.close()
    finished = os.path.join(pod_dir, layout.FINISHED)
    try:
        record = fsutil.numbers_json({"exit_code": code, "finished": time.time()})
        fsutil.atomic_write(finished, record, 0o644, durable=False)
    except OSError as exc:  # a full disk: the pod still ends with its code; status reads "unknown"
        sys.stderr.write(f"podrun: warning: writing {finished}: {exc.strerror} (the exit code is not recorded)\n")
    if networked:
        os.close(netns_fd)
        _detach_network(pod_dir, host_pidns)
    try:
        pod_cgroup.kill_all()  # nothing of the pod outlives it, not even a daemonized process
        pod_cgroup.remove()
    except OSError as exc:
        sys.stderr.write(f"podrun: warning: removing the pod's cgroup: {exc} (podrun gc retries)\n")
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Exit without the interpreter's teardown (module and object finalization costs ~5-10 ms
    at the very end of every pod); nothing of podrun's needs it, stdio is flushed here."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _start_network(pod_dir: str, manifest: PodManifest, lock_fd: int) -> tuple[int, int, helper.Handle]:
    """Create the pod's netns here (in the host's mount namespace, before ours is unshared) and
    fork the network helper (podrun.net.helper) to attach the networks while this process goes
    on.  Returns (host PID ns fd, netns fd, helper)."""
    from podrun.net import helper, setup
    from podrun.pod.boot import current_boot_id

    data_dir = abi.data_dir()  # named by stage0, never derived from the pod dir's place
    host_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    netns_fd = setup.create_netns(pod_dir, data_dir, manifest.uuid)
    handle = helper.spawn(os.path.abspath(pod_dir), data_dir, manifest, current_boot_id(),
                          close_fds=(lock_fd,) if lock_fd >= 0 else ())
    return host_pidns, netns_fd, handle


def _detach_network(pod_dir: str, host_pidns: int) -> None:
    from podrun.net import setup

    if host_pidns >= 0:
        # Teardown runs nft and CNI plugins; our children would otherwise be born into the
        # pod's PID namespace, where fork fails (ENOMEM) once its pid 1 has exited.
        sc.setns(host_pidns, sc.CLONE_NEWPID)

    for problem in setup.detach(pod_dir, delete_links=False):
        sys.stderr.write(f"podrun: warning: network teardown: {problem} (podrun gc retries)\n")


def _undo_setup(pod_dir: str, networked: bool, host_pidns: int, pod_cgroup: cgroups.CgroupTree | None) -> None:
    """After a failed start: release what was made (gc would too, later)."""
    try:
        if networked:
            _detach_network(pod_dir, host_pidns)
        if pod_cgroup is not None:
            pod_cgroup.remove()
    except Exception as exc:
        sys.stderr.write(f"podrun: warning: cleaning up: {exc} (podrun gc retries)\n")


def _make_cgroups(
    pod_dir: str, manifest: PodManifest
) -> tuple[cgroups.CgroupTree, cgroups.CgroupTree, dict[str, cgroups.CgroupTree]]:
    """The pod's cgroup with a leaf for its pid 1 and one per app (v2 allows no processes in a
    cgroup whose children have controllers).  The paths are recorded in the pod dir *before*
    anything is created, so gc can remove them after any crash."""
    name = f"pod-{manifest.uuid}"
    parent = placement.place_pods(own_scope=manifest.register)
    paths = cgroups.pod_cgroup_paths(name, parent)
    fsutil.atomic_write(os.path.join(pod_dir, layout.CGROUPS), fsutil.strings_json(list(paths)), 0o644)
    pod_cgroup = cgroups.create_pod_cgroup(name, parent)
    try:
        init_cgroup = pod_cgroup.child("init")
        app_cgroups = {}
        for app in manifest.apps:
            tree = pod_cgroup.child(f"app-{app.name}")
            res = app.resources
            tree.set_limits(cgroups.Limits(res.memory_max, res.cpu_millis, res.pids_max))
            app_cgroups[app.name] = tree
    except BaseException:
        pod_cgroup.remove()
        raise
    return pod_cgroup, init_cgroup, app_cgroups
