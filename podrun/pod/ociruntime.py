"""How podrun drives an OCI runtime (crun, runc, runsc) for ``--stage1 oci`` pods: the names
the stage1 supervisor, ``enter`` and gc share, and the one way each invokes the runtime.

- The runtime is the absolute path stage0 recorded in the pod manifest (``runtime``); its
  state lives under ``$PODRUN_RUNTIME_DIR/oci/NAME`` (``/run/podrun/oci/crun``…), passed as
  ``--root``, so podrun's containers never mix with podman's or containerd's.
- An app's container is ``podrun-UUID-APP``: unique per pod, and gc finds a dead pod's
  containers from its manifest alone.
- Cgroups are podrun's (podrun.isolation.cgroups, on v1, v2 and hybrids alike): the process
  that execs the runtime first joins the app's cgroup, so the runtime and the container it
  makes start there.  crun is told to manage none (``--cgroup-manager=disabled``); runc and
  runsc are given that very cgroup as ``linux.cgroupsPath``, which they join.
- crun refuses a cgroup v1/v2 hybrid whose cgroup2 holds a controller ("cgroups in hybrid mode
  not supported").  It manages no cgroup here, so it is run in a mount namespace of its own
  without the cgroup2 mount: it sees v1 only, and the host is left as it is.
- A runtime writes its errors to a log file (``--log``) in the app's dir, which the supervisor
  reads back to say, in one line, why an app did not start.

``os`` and podrun's kernel layer only: the supervisor imports this on its warm path.
"""

from __future__ import annotations

import os

from podrun.isolation import syscalls as sc

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn

UNIFIED = "/sys/fs/cgroup/unified"
DELETE_TIMEOUT = 10.0  # seconds a ``delete --force`` may take before gc gives up on it


def name_of(runtime: str) -> str:
    """The runtime's name: its file name (``/usr/bin/crun`` -> ``crun``)."""
    return os.path.basename(runtime)


def state_root(runtime: str) -> str:
    return os.path.join(os.environ.get("PODRUN_RUNTIME_DIR", "/run/podrun"), "oci", name_of(runtime))


def container_id(uuid: str, app: str) -> str:
    return f"podrun-{uuid}-{app}"


def manages_cgroups(runtime: str) -> bool:
    """Whether the runtime is given the app's cgroup to join (runc, runsc) rather than told to
    leave cgroups alone (crun)."""
    return name_of(runtime) != "crun"


def global_argv(runtime: str, log: str | None = None, net_none: bool = False) -> list[str]:
    """``RUNTIME --root STATE [--log LOG] [--cgroup-manager=disabled]``: the options before the
    command, for every call.  *net_none*: the pod has no network (``--net none``); gVisor's
    runsc then gets ``--network=none`` (a loopback of its own netstack): it refuses to take
    over a network namespace that is its own caller's, as the pod's is then."""
    argv = [runtime, "--root", state_root(runtime)]
    if log is not None:
        argv += ["--log", log]
    if net_none and name_of(runtime) == "runsc":
        argv.append("--network=none")
    if not manages_cgroups(runtime):
        argv.append("--cgroup-manager=disabled")
    return argv


MOUNT_PATHS = ("/usr/bin/mount", "/bin/mount")
# The hook's script: $1 the remount options, $2 the app's root (as the runtime sees it then).
ROOT_HOOK = 'mount -o "$1" "$2" && rm -f "$2/dev/core"'


def root_flags_hook(runtime: str, rootfs: str, read_only: bool) -> dict[str, object] | None:
    """A ``createContainer`` hook that makes the app's root what the default flavor makes it,
    for crun, which does otherwise (runc does not):

    - crun bind-mounts the root onto itself and remounts it with only ``root.readonly``'s flag,
      which drops the ``nodev`` of podrun's overlay: remounted ``nodev`` (``ro`` too with
      --readonly-rootfs);
    - crun adds ``/dev/core`` -> ``/proc/kcore`` to the /dev it makes (podman dropped that link,
      and so does podrun): removed.

    The hook runs in the container's mount namespace after its mounts and before pivot_root,
    where the root still has its host path.  None when the runtime needs none or util-linux's
    mount is missing (then the root is as crun leaves it)."""
    if manages_cgroups(runtime):
        return None
    mount = next((p for p in MOUNT_PATHS if os.access(p, os.X_OK)), None)
    if mount is None or not os.access("/bin/sh", os.X_OK):
        return None
    options = "remount,bind,nodev" + (",ro" if read_only else "")
    return {"path": "/bin/sh", "args": ["sh", "-c", ROOT_HOOK.replace("mount ", mount + " ", 1), "sh", options,
                                        rootfs]}


def hybrid_with_v2_controllers() -> bool:
    try:
        with open(os.path.join(UNIFIED, "cgroup.controllers")) as f:
            return bool(f.read().split())
    except OSError:
        return False


def exec_runtime(argv: list[str], env: dict[str, str] | None = None) -> NoReturn:
    """Exec the runtime command *argv* (in a freshly forked child; never returns).  For crun on
    a hybrid host, first a mount namespace of its own without the cgroup2 mount (module
    docstring).  Exits 127 if the runtime cannot be executed."""
    try:
        if not manages_cgroups(argv[0]) and hybrid_with_v2_controllers():
            sc.unshare(sc.CLONE_NEWNS)
            sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
            sc.umount(UNIFIED, sc.MNT_DETACH)
        os.execve(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"} if env is None else env)
    except OSError as exc:
        try:
            os.write(2, f"podrun: {argv[0]}: {exc.strerror}\n".encode())
        finally:
            os._exit(127)


def read_log(path: str, limit: int = 4096) -> str:
    """The last line the runtime logged (runc writes JSON lines: their ``msg``), or ""."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, limit, max(0, size - limit))
    finally:
        os.close(fd)
    lines = [line for line in data.decode(errors="replace").splitlines() if line.strip()]
    if not lines:
        return ""
    last = lines[-1].strip()
    if last.startswith("{") and '"msg":"' in last:  # runc: {"level":"error","msg":"…","time":"…"}
        last = last.split('"msg":"', 1)[1].split('","', 1)[0].replace('\\"', '"')
    elif last.startswith("time=") and ' msg="' in last:  # runc's text format
        last = last.split(' msg="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
    return last


def state_entries(runtime: str, cid: str) -> list[str]:
    """The runtime's state of container *cid* under its root: crun's and runc's directory named
    *cid*, runsc's files ``CID_sandbox:CID.state`` and ``.lock`` ([] when it has none)."""
    root = state_root(runtime)
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return [os.path.join(root, n) for n in names if n == cid or n.startswith(f"{cid}_sandbox:")]


def delete(runtime: str, ids: list[str], ended: bool = False) -> list[str]:
    """``delete --force`` each container (their processes are gone or going: the pod's pid 1
    has ended), then remove a state dir the runtime left; what could not be done, as warnings.
    Returns at once for containers the runtime never made.  *ended*: every process of the
    containers is known to be reaped (the supervisor, after pid 1): for crun, which manages no
    cgroup here, its ``delete`` would only remove the state dir, so the dir is removed without
    running it (~10 ms off the end of every pod)."""
    problems = []
    for cid in ids:
        if "/" in cid or cid.startswith("."):
            problems.append(f"{cid!r} is not a container name podrun makes: left alone")
            continue
        if not state_entries(runtime, cid):
            continue
        if os.access(runtime, os.X_OK) and (manages_cgroups(runtime) or not ended):
            pid = os.fork()
            if pid == 0:
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                from podrun.isolation import signals as sig

                sig.sigprocmask(sig.SIG_SETMASK, ())
                exec_runtime([*global_argv(runtime), "delete", "--force", cid])
            os.waitpid(pid, 0)
        for state in state_entries(runtime, cid):
            try:
                _remove_tree(state)
            except OSError as exc:
                problems.append(f"removing the {name_of(runtime)} state of {cid}: {exc.strerror}")
    return problems


def cgroups_path(directory: str) -> str:
    """linux.cgroupsPath for runc/runsc: cgroup *directory* below its hierarchy's root (for v1,
    below the controller's mount: ``/sys/fs/cgroup/cpu,cpuacct/podrun/…`` -> ``/podrun/…``)."""
    root = "/sys/fs/cgroup"
    if directory.startswith(root + "/unified/"):
        return directory[len(root) + len("/unified"):]
    rest = directory[len(root):]
    if os.path.exists(os.path.join(root, "cgroup.controllers")):  # cgroup v2 only
        return rest
    return "/" + rest.lstrip("/").partition("/")[2]


def remove_cgroup_dirs(cgroups_path: str, base: str = "/sys/fs/cgroup", used: set[str] | None = None) -> None:
    """After ``delete`` by a runtime that manages cgroups (runc, runsc): the app's cgroup and
    its pod's, at *cgroups_path* (linux.cgroupsPath) and its parent, in every cgroup hierarchy
    mounted under /sys/fs/cgroup.  On cgroup v1 such a runtime joins every controller's
    hierarchy, podrun only those it uses, and the runtime's ``delete`` leaves the parents it
    made; in a hierarchy podrun does not use, every empty ancestor it made goes too (a v1
    hierarchy with cgroups left cannot be unmounted, which bench/hostprep.py does).  rmdir only:
    a directory that still holds anything stays.  *used*: the mount points of the hierarchies
    podrun uses (default: podrun.isolation.cgroups.hierarchies())."""
    rel = os.path.normpath(cgroups_path).strip("/")
    parts = rel.split("/")
    if len(parts) < 2 or not parts[-2].startswith("pod-") or ".." in parts:
        return  # not a path podrun gave (…/pod-UUID/app-NAME)
    if os.path.exists(os.path.join(base, "cgroup.controllers")):
        mounts = [base]
    else:
        try:
            mounts = [os.path.join(base, m) for m in os.listdir(base)]
        except OSError:
            return
    if used is None:
        from podrun.isolation import cgroups

        try:
            used = {h.mountpoint for h in cgroups.hierarchies()}
        except OSError:
            used = set(mounts)
    for mount in mounts:
        levels = 2 if mount in used else len(parts)
        for depth in range(len(parts), len(parts) - levels, -1):
            try:
                os.rmdir(os.path.join(mount, *parts[:depth]))
            except FileNotFoundError:
                continue  # the runtime removed it (or never made it here)
            except OSError:
                break  # holds another pod's cgroups, or processes


def _remove_tree(path: str) -> None:
    """rm -r without following links (the runtime's state dir: files, a FIFO, subdirs)."""
    if os.path.islink(path) or not os.path.isdir(path):
        os.unlink(path)
        return
    for entry in os.listdir(path):
        _remove_tree(os.path.join(path, entry))
    os.rmdir(path)
