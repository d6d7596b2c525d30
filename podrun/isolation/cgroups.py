"""cgroups for pods and apps: one interface over cgroup v2 and the v1 (+ v2 "unified") hybrid.

Kernel layer: no policy, no podrun imports; failures raise ``OSError`` with errno, what was done and
the path.  The design (where cgroups go, systemd units, limit mapping, cleanup) is in docs/cgroups.md.

Hierarchies podrun uses:
- pure v2 (``/sys/fs/cgroup`` is cgroup2): that one hierarchy, controllers memory, cpu, pids.
- hybrid (tmpfs at ``/sys/fs/cgroup``, v1 controllers beside a controller-less v2 at ``unified``):
  the v1 ``cpu``, ``memory`` and ``pids`` hierarchies for limits, plus the v2 one, because it gives
  ``cgroup.kill`` and is the hierarchy systemd tracks processes in on such hosts.
- pure v1: the v1 ``cpu``, ``memory`` and ``pids`` hierarchies.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import signal
import time
from functools import cache

from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Final

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP2_SUPER_MAGIC = 0x63677270
TMPFS_MAGIC = 0x01021994

V1_CONTROLLERS = ("cpu", "memory", "pids")
CPU_PERIOD_US = 100000
# Directory that holds pods when podrun is not inside a systemd unit; a leftover check such as
# ``find /sys/fs/cgroup -maxdepth 3 -iname '*podrun*'`` finds it in every hierarchy.
PODRUN_DIR = "podrun"
# The leaf a process that owns child cgroups moves into on v2 ("no internal processes" rule).
SUPERVISOR_LEAF = "supervisor"

_RMDIR_RETRY_S = 2.0
_KILL_PASSES = 200


class Limits(Record):
    """Resource limits of one cgroup; None leaves the kernel's (unlimited) default."""

    memory_max: Final[int | None]  # bytes
    cpu_millis: Final[int | None]  # 1000 = one CPU
    pids_max: Final[int | None]

    __slots__ = ("memory_max", "cpu_millis", "pids_max")

    def __init__(
        self, memory_max: int | None = None,
        cpu_millis: int | None = None,
        pids_max: int | None = None,
    ) -> None:
        self.memory_max = memory_max
        self.cpu_millis = cpu_millis
        self.pids_max = pids_max


class Hierarchy(Record):
    """One mounted cgroup hierarchy podrun uses."""

    mountpoint: Final[str]
    version: Final[int]  # 1 or 2
    controllers: Final[frozenset[str]]  # v1: controllers mounted here; v2: the root's cgroup.controllers
    own: Final[str]  # the calling process's cgroup in it, "/"-rooted below mountpoint

    __slots__ = ("mountpoint", "version", "controllers", "own")

    def __init__(self, mountpoint: str, version: int, controllers: frozenset[str], own: str) -> None:
        self.mountpoint = mountpoint
        self.version = version
        self.controllers = controllers
        self.own = own


class CgroupDir(Record):
    """One cgroup directory of a tree, in one hierarchy."""

    path: Final[str]
    hierarchy: Final[Hierarchy]
    base: Final[str]  # the highest directory whose cgroup.subtree_control podrun may write (v2 delegation)

    __slots__ = ("path", "hierarchy", "base")

    def __init__(self, path: str, hierarchy: Hierarchy, base: str) -> None:
        self.path = path
        self.hierarchy = hierarchy
        self.base = base


def _write(path: str, value: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)   # O_TRUNC as `echo >` does
    except OSError as exc:
        raise OSError(exc.errno, f"open for writing {value!r}: {exc.strerror}", path) from exc
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise OSError(exc.errno, f"write {value!r}: {exc.strerror}", path) from exc
    finally:
        os.close(fd)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise OSError(exc.errno, f"read: {exc.strerror}", path) from exc


@cache
def _libc() -> ctypes.CDLL:
    # loaded on first use; CDLL(None) is the already-loaded C library, no find_library() subprocess
    libc = ctypes.CDLL(None, use_errno=True)
    libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    return libc


def fs_magic(path: str) -> int:
    """statfs(2) f_type of the filesystem holding ``path``."""
    buf = ctypes.create_string_buffer(256)   # struct statfs is 120 bytes on 64-bit, f_type first
    if _libc().statfs(os.fsencode(path), buf) < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"statfs: {os.strerror(err)}", path)
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


@cache
def detect() -> str:
    """``"v2"`` (unified only), ``"hybrid"`` (v1 controllers + v2 at ``unified``) or ``"v1"``."""
    if fs_magic(CGROUP_ROOT) == CGROUP2_SUPER_MAGIC:
        return "v2"
    unified = posixpath.join(CGROUP_ROOT, "unified")
    if os.path.isdir(unified) and fs_magic(unified) == CGROUP2_SUPER_MAGIC:
        return "hybrid"
    return "v1"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return field.encode().decode("unicode_escape") if "\\" in field else field


def _cgroup_mounts() -> list[tuple[str, str, int, frozenset[str]]]:
    """(mount root, mountpoint, version, v1 controllers) of every cgroup mount, in mount order."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(fields) < 5 or len(rfields) < 3 or rfields[0] not in ("cgroup", "cgroup2"):
                continue
            opts = frozenset(rfields[2].split(","))
            version = 2 if rfields[0] == "cgroup2" else 1
            controllers = frozenset(o for o in opts if o in V1_CONTROLLERS or o.startswith("name=")) \
                if version == 1 else frozenset()
            mounts.append((_unescape(fields[3]), _unescape(fields[4]), version, controllers))
    return mounts


def _own_cgroups() -> dict[frozenset[str], str]:
    """/proc/self/cgroup as {controllers of the hierarchy: path}; the v2 entry has no controllers."""
    own: dict[frozenset[str], str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[frozenset(c for c in controllers.split(",") if c)] = path
    return own


def _below_mount(mount_root: str, cgpath: str) -> str:
    # A mount may show only part of a hierarchy (bind mount, cgroup namespace): make the process's
    # path relative to what this mount shows.
    if mount_root == "/" or not (cgpath == mount_root or cgpath.startswith(mount_root + "/")):
        return cgpath
    return cgpath[len(mount_root):] or "/"


def hierarchies() -> list[Hierarchy]:
    """The hierarchies podrun uses on this host, with the calling process's cgroup in each."""
    kind = detect()
    own = _own_cgroups()
    found: list[Hierarchy] = []
    seen_v1: set[frozenset[str]] = set()
    for mount_root, mountpoint, version, controllers in _cgroup_mounts():
        if version == 2:
            if kind == "v1" or any(h.version == 2 for h in found):
                continue
            if (kind == "v2") != (mountpoint == CGROUP_ROOT):
                continue
            path = own.get(frozenset(), "/")
            avail = frozenset(_read(posixpath.join(mountpoint, "cgroup.controllers")).split())
            found.append(Hierarchy(mountpoint, 2, avail, _below_mount(mount_root, path)))
        elif kind != "v2" and controllers & set(V1_CONTROLLERS) and controllers not in seen_v1:
            seen_v1.add(controllers)
            path = next((p for key, p in own.items() if key and key & controllers), "/")
            found.append(Hierarchy(mountpoint, 1, controllers, _below_mount(mount_root, path)))
    if not found:
        raise OSError(errno.ENOENT, "no usable cgroup hierarchy mounted", CGROUP_ROOT)
    return found


def _join(mountpoint: str, cgpath: str) -> str:
    return posixpath.normpath(mountpoint + "/" + cgpath.lstrip("/"))


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise OSError(errno.EINVAL, "invalid cgroup name", name)


def _parent_dir(h: Hierarchy, parent: str) -> str:
    """An absolute parent is the same path in every hierarchy; a relative one is below our own cgroup."""
    if "\0" in parent or ".." in parent.split("/"):
        raise OSError(errno.EINVAL, "invalid cgroup parent", parent)
    cgpath = parent if parent.startswith("/") else posixpath.join(h.own, parent)
    return _join(h.mountpoint, cgpath)


def _mkdir_under(parent_dir: str, name: str) -> str:
    path = posixpath.join(parent_dir, name)
    for _ in range(10):
        os.makedirs(parent_dir, exist_ok=True)
        try:
            os.mkdir(path)
            return path
        except FileNotFoundError:
            continue   # another podrun pruned the empty parent between the two calls: recreate it
        except OSError as exc:
            raise OSError(exc.errno, f"mkdir: {exc.strerror}", path) from exc
    raise OSError(errno.ENOENT, "mkdir: parent keeps disappearing", path)


def _rmdir_tree(path: str) -> None:
    """rmdir a cgroup and its descendants, deepest first; retries EBUSY while dying tasks leave."""
    if not os.path.isdir(path):
        return
    children = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    for child in children:
        _rmdir_tree(child)
    deadline = time.monotonic() + _RMDIR_RETRY_S
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise OSError(exc.errno, f"rmdir: {exc.strerror}", path) from exc
            time.sleep(0.01)


def _read_pids(path: str) -> set[int]:
    try:
        with open(posixpath.join(path, "cgroup.procs")) as f:
            return {int(x) for x in f.read().split()}
    except FileNotFoundError:
        return set()


def _available(path: str) -> frozenset[str]:
    try:
        return frozenset(_read(posixpath.join(path, "cgroup.controllers")).split())
    except FileNotFoundError:
        return frozenset()


def _enable_v2(path: str, wanted: frozenset[str], base: str) -> None:
    """Make ``wanted`` controllers available in ``path`` by enabling them in each ancestor's
    cgroup.subtree_control, top-down, never above ``base`` (the delegation boundary)."""
    missing = wanted - _available(path)
    if not missing:
        return
    parent = posixpath.dirname(path)
    if path == base or not (parent == base or parent.startswith(base.rstrip("/") + "/")):
        raise OSError(errno.EOPNOTSUPP, f"cgroup controllers {' '.join(sorted(missing))} are not delegated here",
                      path)
    _enable_v2(parent, missing, base)
    # EBUSY here means the parent holds processes ("no internal processes" rule, cgroup-v2.rst).
    _write(posixpath.join(parent, "cgroup.subtree_control"), " ".join("+" + c for c in sorted(missing)))


class CgroupTree:
    """A cgroup that exists (under the same relative name) in every hierarchy podrun uses."""

    def __init__(self, dirs: Sequence[CgroupDir], prune: Sequence[str] = ()) -> None:
        self.dirs = tuple(dirs)
        # empty ``podrun`` parent dirs to remove after this tree, so no leftover shows up in a leak check
        self.prune = tuple(prune)

    @property
    def paths(self) -> tuple[str, ...]:
        """The absolute directories of this cgroup (what a pod dir records for cleanup)."""
        return tuple(d.path for d in self.dirs)

    def __repr__(self) -> str:
        return f"CgroupTree({self.paths!r})"

    def child(self, name: str) -> CgroupTree:
        """Create the child cgroup ``name`` in every hierarchy (FileExistsError if it exists)."""
        _check_name(name)
        made: list[CgroupDir] = []
        try:
            for d in self.dirs:
                made.append(CgroupDir(_mkdir_under(d.path, name), d.hierarchy, d.base))
        except BaseException:
            CgroupTree(made).remove()
            raise
        return CgroupTree(made)

    def _dir_for(self, controller: str) -> CgroupDir | None:
        for d in self.dirs:
            if d.hierarchy.version == 1 and controller in d.hierarchy.controllers:
                return d
        for d in self.dirs:
            if d.hierarchy.version == 2 and controller in d.hierarchy.controllers:
                return d
        return None

    def set_limits(self, limits: Limits) -> None:
        """Write the limits into the controllers' files (see docs/cgroups.md for the mapping).

        On v2 the controllers are first enabled in the ancestors' cgroup.subtree_control, which needs
        those ancestors (below the delegation base) to hold no processes.
        """
        wanted: dict[str, list[tuple[str, str]]] = {}
        if limits.memory_max is not None:
            wanted["memory"] = [("memory.max", str(limits.memory_max))]
        if limits.cpu_millis is not None:
            quota = limits.cpu_millis * CPU_PERIOD_US // 1000
            wanted["cpu"] = [("cpu.max", f"{quota} {CPU_PERIOD_US}")]
        if limits.pids_max is not None:
            wanted["pids"] = [("pids.max", str(limits.pids_max))]
        plan: list[tuple[CgroupDir, str, list[tuple[str, str]]]] = []
        for controller, v2_files in wanted.items():
            d = self._dir_for(controller)
            if d is None:
                raise OSError(errno.EOPNOTSUPP, f"no cgroup hierarchy offers the {controller} controller",
                              self.paths[0] if self.paths else None)
            plan.append((d, controller, v2_files if d.hierarchy.version == 2 else _v1_files(controller, limits)))
        v2_needed: dict[str, tuple[CgroupDir, set[str]]] = {}
        for d, controller, _ in plan:
            if d.hierarchy.version == 2:
                v2_needed.setdefault(d.path, (d, set()))[1].add(controller)
        for d, controllers in v2_needed.values():
            _enable_v2(d.path, frozenset(controllers), d.base)
        for d, _, files in plan:
            for name, value in files:
                _write(posixpath.join(d.path, name), value)

    def add_process(self, pid: int) -> None:
        """Move process ``pid`` (as seen from the caller's pid namespace) into this cgroup everywhere."""
        for d in self.dirs:
            _write(posixpath.join(d.path, "cgroup.procs"), str(pid))

    def join(self) -> None:
        """Move the calling process into this cgroup (e.g. an app's child before its execve)."""
        self.add_process(os.getpid())

    def procs(self, recursive: bool = False) -> list[int]:
        """Pids in this cgroup (and its descendants when ``recursive``), over all hierarchies."""
        pids: set[int] = set()
        for d in self.dirs:
            for path in _walk(d.path) if recursive else [d.path]:
                pids |= _read_pids(path)
        return sorted(pids)

    def kill_all(self) -> None:
        """SIGKILL every process in this cgroup and below; does not wait for them to be reaped.

        v2 ``cgroup.kill`` (Linux 5.14) kills the subtree atomically, forks included.  Otherwise (and
        as a backstop for v1 hierarchies) kill what ``cgroup.procs`` lists until a pass finds no new
        pid: a process killed mid-fork leaves its child, which the next pass sees.  Killed but not yet
        reaped processes may stay listed; they are not killed twice.
        """
        for d in self.dirs:
            kill_file = posixpath.join(d.path, "cgroup.kill")
            if d.hierarchy.version == 2 and os.path.exists(kill_file):
                _write(kill_file, "1")
                break
        killed: set[int] = set()
        for _ in range(_KILL_PASSES):
            fresh = set(self.procs(recursive=True)) - killed
            if not fresh:
                return
            for pid in fresh:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed |= fresh
            time.sleep(0.005)
        raise OSError(errno.EBUSY, "processes keep appearing after SIGKILL", self.paths[0])

    def remove(self) -> None:
        """rmdir this cgroup and its children in every hierarchy; missing ones are fine.

        Call after kill_all and after the processes were reaped or left; EBUSY is retried briefly.
        Then removes empty ``podrun`` parent dirs recorded in ``prune``.
        """
        for d in self.dirs:
            _rmdir_tree(d.path)
        for path in self.prune:
            try:
                os.rmdir(path)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY, errno.EBUSY, errno.EEXIST):
                    raise OSError(exc.errno, f"rmdir: {exc.strerror}", path) from exc


def _walk(path: str) -> Iterable[str]:
    yield path
    try:
        entries = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    for child in entries:
        yield from _walk(child)


def _v1_files(controller: str, limits: Limits) -> list[tuple[str, str]]:
    if controller == "memory":
        return [("memory.limit_in_bytes", str(limits.memory_max))]
    if controller == "cpu":
        assert limits.cpu_millis is not None
        # period before quota: the kernel checks the quota against the period in force
        return [("cpu.cfs_period_us", str(CPU_PERIOD_US)),
                ("cpu.cfs_quota_us", str(limits.cpu_millis * CPU_PERIOD_US // 1000))]
    return [("pids.max", str(limits.pids_max))]


_IN_UNIT: list[bool] = []  # set by in_own_unit()


def in_own_unit() -> None:
    """Declare that this process now runs in a unit of its own (a transient scope it asked
    systemd for), although systemd did not start it (no $INVOCATION_ID)."""
    _IN_UNIT.append(True)


def _unit_cgroup() -> str | None:
    """Our systemd unit's cgroup path (v2 path, else name=systemd path) when running in a unit."""
    if not os.environ.get("INVOCATION_ID") and not _IN_UNIT:
        return None
    own = _own_cgroups()
    for key in (frozenset(), frozenset({"name=systemd"})):
        path = own.get(key)
        if not path:
            continue
        if posixpath.basename(path) == SUPERVISOR_LEAF:
            path = posixpath.dirname(path)   # we moved ourselves into the leaf on an earlier call
        if path.endswith((".service", ".scope")):
            return path
    return None


def pod_parent() -> str:
    """Where pod cgroups go (the ``parent`` for create_pod_cgroup); see docs/cgroups.md.

    - Inside a systemd unit (``$INVOCATION_ID`` set, our cgroup is a .service/.scope): below the
      unit's own cgroup, which needs ``Delegate=yes``.  On pure v2 the unit's processes first move
      into the unit's ``supervisor`` leaf (a cgroup whose subtree has controllers enabled may hold no
      processes), so the unit's path is returned absolute; on v1/hybrid ``"."`` (our own cgroup in
      each hierarchy, nothing moves).
    - Otherwise on pure v2: ``/podrun`` at the root (the root is exempt from the no-internal-processes
      rule; our own cgroup, e.g. a login session scope, is not ours to delegate from).
    - Otherwise on v1/hybrid: ``podrun`` below our own cgroup in each hierarchy (runc's convention
      for relative paths): the same as ``/podrun`` where we sit at the root, and it keeps pods inside
      whatever memory cgroup the caller was started in.
    """
    kind = detect()
    unit = _unit_cgroup()
    if unit is not None:
        if kind == "v2":
            _move_unit_into_leaf(_join(CGROUP_ROOT, unit))
            return unit
        return "."
    return "/" + PODRUN_DIR if kind == "v2" else PODRUN_DIR


def _move_unit_into_leaf(unit_dir: str) -> None:
    leaf = posixpath.join(unit_dir, SUPERVISOR_LEAF)
    os.makedirs(leaf, exist_ok=True)
    for pid in sorted(_read_pids(unit_dir)):
        try:
            _write(posixpath.join(leaf, "cgroup.procs"), str(pid))
        except ProcessLookupError:
            continue


def pod_cgroup_paths(name: str, parent: str | None = None,
                     using: Sequence[Hierarchy] | None = None) -> tuple[str, ...]:
    """The directories create_pod_cgroup would create, to record in the pod dir *before* creating."""
    _check_name(name)
    parent = pod_parent() if parent is None else parent
    return tuple(posixpath.join(_parent_dir(h, parent), name) for h in using or hierarchies())


def create_pod_cgroup(name: str, parent: str | None = None,
                      using: Sequence[Hierarchy] | None = None) -> CgroupTree:
    """Create the pod's cgroup ``name`` below ``parent`` (default: pod_parent()) in every hierarchy.

    ``parent``: absolute = the same path in every hierarchy; relative = below the caller's own cgroup
    in each.  ``using`` restricts the hierarchies (default: hierarchies()).  FileExistsError if the
    cgroup exists; on any failure what was created is removed again.
    """
    _check_name(name)
    parent = pod_parent() if parent is None else parent
    hs = list(using or hierarchies())
    made: list[CgroupDir] = []
    prune: list[str] = []
    try:
        for h in hs:
            parent_dir = _parent_dir(h, parent)
            # Delegation base: the deepest directory of the parent path that existed before us.  We
            # may enable controllers in its subtree_control but never above it (a unit's parent slice
            # is systemd's, not ours).
            base = parent_dir
            while base != h.mountpoint and not os.path.isdir(base):
                base = posixpath.dirname(base)
            made.append(CgroupDir(_mkdir_under(parent_dir, name), h, base))
            if posixpath.basename(parent_dir) == PODRUN_DIR:
                prune.append(parent_dir)
    except BaseException:
        CgroupTree(made, prune).remove()
        raise
    return CgroupTree(made, prune)


def open_existing(paths: Sequence[str]) -> CgroupTree:
    """Re-open a tree from recorded paths (for gc).  Paths that are already gone are fine."""
    known = _all_hierarchies()
    dirs: list[CgroupDir] = []
    prune: list[str] = []
    for path in paths:
        norm = posixpath.normpath(path)
        owner = max((h for h in known if norm.startswith(h.mountpoint.rstrip("/") + "/")),
                    key=lambda h: len(h.mountpoint), default=None)
        if owner is None:
            raise OSError(errno.EINVAL, "not inside a mounted cgroup hierarchy", path)
        dirs.append(CgroupDir(norm, owner, posixpath.dirname(norm)))
        if posixpath.basename(posixpath.dirname(norm)) == PODRUN_DIR:
            prune.append(posixpath.dirname(norm))
    return CgroupTree(dirs, prune)


def _all_hierarchies() -> list[Hierarchy]:
    # gc may run where our own cgroups differ from the creator's: `own` is irrelevant here
    return [Hierarchy(mp, version, controllers, "/") for _, mp, version, controllers in _cgroup_mounts()]
