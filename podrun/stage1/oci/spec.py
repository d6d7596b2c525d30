"""An app's OCI runtime-spec ``config.json``, built from the decided pod manifest.

The bundle gets the confinement the ``default`` flavor applies itself, taken from the same
sources rather than restated: the mount plan (podrun.stage2.mountplan: /proc, /dev and its
nodes, devpts, shm, mqueue, read-only /sys, the pod's files, volumes), its masked and
read-only paths, the app's decided capabilities and no_new_privs, the default rlimits
(podrun.stage2.confine), and the seccomp allowlist (podrun.pod.seccomp_policy) written as
runtime-spec rules, with the TIOCSTI/TIOCLINUX refusal expressed as argument conditions so
the runtime's filter refuses exactly what podrun's own refuses.

Format: runtime-spec config.md and config-linux.md; the subset emitted here is described by
podrun/schemas/runtime-spec-config.json, which the tests check every generated document against.
The seccomp section uses ``defaultErrnoRet`` (runtime-spec 1.1; crun and runc ≥ 1.0.0 read it
whatever ``ociVersion`` says): without it the default for unknown syscalls, ENOSYS,
would become EPERM, and libc then gives up instead of falling back to an older call.
"""

from __future__ import annotations

import os

from podrun.isolation import syscalls as sc
from podrun.isolation.cgroups import CPU_PERIOD_US
from podrun.model.caps import CAP_NAMES
from podrun.pod import layout
from podrun.stage2.confine import default_rlimits
from podrun.stage2.mountplan import DEVICES, MASKED_PATHS, READONLY_PATHS, Mount, app_plan

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from podrun.model.manifest import AppSpec, PodManifest

OCI_VERSION = "1.0.2"

# Namespaces an app may share with the pod (joined by path) or get anew; the order runtimes
# create them in does not matter, a fixed one keeps configs comparable.
SHARED_NAMESPACES = ("pid", "ipc", "uts", "network")

_CAP_BY_NUMBER = {number: name for name, number in CAP_NAMES.items()}

# mount(2) flags as runtime-spec mount options (the options runc and crun parse).
_FLAG_OPTIONS = (
    (sc.MS_RDONLY, "ro"), (sc.MS_NOSUID, "nosuid"), (sc.MS_NODEV, "nodev"), (sc.MS_NOEXEC, "noexec"),
    (sc.MS_STRICTATIME, "strictatime"),
)


def build_config(
    manifest: PodManifest,
    app: AppSpec,
    *,
    rootfs: str,
    pod_dir: str,
    namespaces: dict[str, str],
    cgroups_path: str,
    user: tuple[int, int, list[int]],
    terminal: bool = False,
    home: str | None = None,
    extra_env: dict[str, str] | None = None,
    seccomp: object,
) -> dict[str, Any]:
    """The ``config.json`` document of *app* of the pod *manifest*.

    *rootfs*: the app's root (the overlay podrun mounts).  *pod_dir*: the pod directory, holding
    the pod files (etc/) and empty volumes (volumes/).  *namespaces*: for each of pid, ipc, uts
    and network, the path of the pod's namespace to join, or "" for a new one; a type left out
    is shared with the runtime's caller.  The app always gets a new mount and cgroup namespace.
    *cgroups_path*: the app's cgroup (linux.cgroupsPath).  *user*: (uid, gid, groups) as
    podrun.stage2.app.lookup_user finds them in the image's own files; the app's decided
    supplementary gids are added here.  *home*: the user's home from the same lookup, the
    default of HOME (None: looked up here in *rootfs* the same way).  *extra_env*: variables
    podrun adds over the app's (NOTIFY_SOCKET, LISTEN_FDS).  *seccomp*: linux.seccomp as stage0
    decided it (podrun.pod.seccomp_cache.seccomp_section: the runtime-spec form of the app's
    filter), as a document or as fsutil.RawJSON, always given: stage0's decision is the only one
    (no filter is computed here), and None, no filter, only for an app whose manifest names
    none (ValueError otherwise: an app never runs unfiltered by a slip)."""
    if seccomp is None and app.seccomp_bpf is not None:
        raise ValueError(f"app {app.name}: the manifest names a seccomp filter ({app.seccomp_bpf}) "
                         "but none was given for config.json")
    uid, gid, groups = user
    if home is None:
        home = _home_in(rootfs, app)
    env = dict(e.split("=", 1) for e in app.env if "=" in e)
    env.setdefault("HOME", home)
    env.update(extra_env or {})
    caps = [_CAP_BY_NUMBER[c] for c in sorted(set(app.capabilities))]
    process: dict[str, Any] = {
        "terminal": terminal,
        "user": {"uid": uid, "gid": gid, "additionalGids": sorted(set(groups) | set(app.supplementary_gids))},
        "args": list(app.exec_argv),
        "env": [f"{k}={v}" for k, v in env.items()],
        "cwd": app.working_dir or "/",
        "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps),
                         "inheritable": [], "ambient": []},
        "noNewPrivileges": app.no_new_privileges,
        "rlimits": [{"type": name, "soft": soft, "hard": hard}
                    for name, (soft, hard) in sorted(default_rlimits().items())],
    }
    mounts, devices = oci_mounts(manifest, app, pod_dir)
    linux: dict[str, Any] = {
        "namespaces": oci_namespaces(namespaces),
        "cgroupsPath": cgroups_path,
        "devices": devices,
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
        "resources": oci_resources(app),
    }
    if seccomp is not None:
        linux["seccomp"] = seccomp
    config: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "root": {"path": rootfs, "readonly": app.read_only_rootfs},
        "process": process,
        "mounts": mounts,
        "linux": linux,
    }
    if "uts" in namespaces:  # runtimes refuse a hostname for a UTS namespace that is not the app's
        config["hostname"] = default_hostname(manifest)
    return config


def default_hostname(manifest: PodManifest) -> str:
    """The pod's hostname, as the ``default`` flavor sets it (podrun.pod.podfiles)."""
    return manifest.hostname or f"podrun-{manifest.uuid[:8]}"


def _home_in(rootfs: str, app: AppSpec) -> str:
    from podrun.stage2.app import lookup_user

    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return lookup_user(app.user, app.group, root_fd)[3]
    finally:
        os.close(root_fd)


def pod_files(manifest: PodManifest, pod_dir: str) -> dict[str, str]:
    """{in-pod path: host path} of the pod's files (podrun.pod.podfiles writes them
    into etc/): hostname and hosts always, resolv.conf unless ``--dns none`` keeps the image's."""
    names = ["hostname", "hosts"] + ([] if manifest.dns == ("none",) else ["resolv.conf"])
    return {f"/etc/{name}": os.path.join(pod_dir, layout.ETC_DIR, name) for name in names}


def volume_binds(manifest: PodManifest, app: AppSpec, pod_dir: str) -> list[tuple[str, str, bool, bool]]:
    """The app's volumes as the mount plan takes them: (host source, target, read-only, is a
    file); an empty volume lives in the pod dir (volumes/NAME).  Whether the source is a file
    is the runtime's to find out (it stats the source), so it is left False."""
    vols = {v.name: v for v in manifest.volumes}
    binds = []
    for m in app.mounts:
        vol = vols[m.volume]
        source = vol.source if vol.kind == "host" else os.path.join(pod_dir, layout.volume_path(vol.name))
        if source is None:
            raise ValueError(f"host volume {vol.name!r} has no source")
        binds.append((source, m.target, vol.read_only, False))
    return binds


def mount_options(op: Mount) -> list[str]:
    """The runtime-spec options of one mount of the plan: its flags, then its data."""
    if op.fstype is None:
        options = ["rbind" if op.flags & sc.MS_REC else "bind"]
        if op.read_only:  # the default flavor remounts a read-only bind nosuid,nodev too
            options += ["ro", "nosuid", "nodev"]
        return options
    options = [name for flag, name in _FLAG_OPTIONS if op.flags & flag]
    return options + (op.data.split(",") if op.data else [])


def oci_mounts(manifest: PodManifest, app: AppSpec, pod_dir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mounts, linux.devices): the ``default`` flavor's mount plan for *app*, written for a
    runtime.  The plan's masks and read-only binds are linux.maskedPaths/readonlyPaths, its
    device nodes linux.devices (runtimes create the /dev symlinks themselves)."""
    mounts = []
    for op in app_plan(pod_files(manifest, pod_dir), volume_binds(manifest, app, pod_dir)):
        if isinstance(op, Mount):
            mounts.append({"destination": op.target, "type": op.fstype or "bind", "source": op.source,
                           "options": mount_options(op)})
    devices = [{"path": f"/dev/{name}", "type": "c", "major": major, "minor": minor, "fileMode": 0o666,
                "uid": 0, "gid": 0} for name, major, minor in DEVICES]
    return mounts, devices


def device_rules() -> list[dict[str, Any]]:
    """linux.resources.devices: every device refused but the nodes the app gets.  runc lets a
    listed node through its device cgroup only if a rule allows it ("error reopening /dev/null
    inside container: operation not permitted" otherwise); runtimes add the pty devices they
    create themselves (/dev/ptmx, /dev/pts/N) after these rules."""
    allowed = [{"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
               for _name, major, minor in DEVICES]
    return [{"allow": False, "access": "rwm"}, *allowed]


def oci_namespaces(namespaces: dict[str, str]) -> list[dict[str, str]]:
    """linux.namespaces: the given shared types (joined when a path is given), then a new mount
    and cgroup namespace.  ValueError for a type that is not shareable."""
    unknown = set(namespaces) - set(SHARED_NAMESPACES)
    if unknown:
        raise ValueError(f"namespace types {sorted(unknown)} cannot be shared with an app")
    out = []
    for kind in SHARED_NAMESPACES:
        if kind in namespaces:
            path = namespaces[kind]
            out.append({"type": kind, "path": path} if path else {"type": kind})
    return [*out, {"type": "mount"}, {"type": "cgroup"}]


def oci_resources(app: AppSpec) -> dict[str, Any]:
    """linux.resources: the device rules and the app's decided limits (cpu as quota per
    CPU_PERIOD_US, the period podrun.isolation.cgroups writes)."""
    res = app.resources
    out: dict[str, Any] = {"devices": device_rules()}
    if res.memory_max is not None:
        out["memory"] = {"limit": res.memory_max}
    if res.cpu_millis is not None:
        out["cpu"] = {"quota": res.cpu_millis * CPU_PERIOD_US // 1000, "period": CPU_PERIOD_US}
    if res.pids_max is not None:
        out["pids"] = {"limit": res.pids_max}
    return out
