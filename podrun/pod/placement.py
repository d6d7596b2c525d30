"""Where a pod's cgroup goes: the placement policy of docs/cgroups.md ("Where cgroups go").

The kernel layer (``podrun.isolation.cgroups``) creates a pod's cgroup below the ``parent`` it is
given; this module decides that parent.  The decision (``pod_parent``) is a pure function of the
hierarchy kind and the systemd unit podrun runs in; ``place_pods`` (stage1) also makes the unit's
cgroup able to hold pods on pure v2, ``expected_parent`` (gc) only decides.
"""

from __future__ import annotations

import os
import posixpath

from podrun.isolation import cgroups

# Directory that holds pods when podrun is not inside a systemd unit (named so that a leak check
# such as ``find /sys/fs/cgroup -maxdepth 3 -iname '*podrun*'`` finds it in every hierarchy).
PODS_DIR = cgroups.PODRUN_DIR
# The leaf a unit's processes move into on pure v2: a cgroup whose subtree has controllers
# enabled may hold no processes (cgroup-v2.rst, "no internal processes").
SUPERVISOR_LEAF = "supervisor"


def in_a_unit(own_scope: bool) -> bool:
    """Whether this process runs in a systemd unit of its own: systemd started it
    (``$INVOCATION_ID``), or it asked systemd for a transient scope (*own_scope*)."""
    return own_scope or bool(os.environ.get("INVOCATION_ID"))


def unit_cgroup(own: dict[frozenset[str], str], in_unit: bool) -> str | None:
    """The unit's cgroup path (from *own*, ``/proc/self/cgroup`` as ``cgroups.own_cgroups`` gives
    it: the v2 path, else the ``name=systemd`` one) when *in_unit* and that cgroup is a
    ``.service`` or ``.scope``; a ``supervisor`` leaf we moved into earlier counts as its unit."""
    if not in_unit:
        return None
    for key in (frozenset(), frozenset({"name=systemd"})):
        path = own.get(key)
        if not path:
            continue
        if posixpath.basename(path) == SUPERVISOR_LEAF:
            path = posixpath.dirname(path)
        if path.endswith((".service", ".scope")):
            return path
    return None


def pod_parent(kind: str, unit: str | None) -> str:
    """The ``parent`` for a pod's cgroup on a host of cgroup *kind* (``cgroups.detect()``):

    - in a systemd *unit*: below the unit's own cgroup (it needs ``Delegate=yes``); on pure v2
      the unit's absolute path (its processes are in the ``supervisor`` leaf, see place_pods),
      on v1/hybrid ``"."``, our own cgroup in each hierarchy;
    - otherwise on pure v2: ``/podrun`` at the root (exempt from the no-internal-processes rule;
      our own cgroup, a login session's scope say, is not ours to delegate from);
    - otherwise on v1/hybrid: ``podrun`` below our own cgroup in each hierarchy (runc's convention
      for relative paths), so pods stay inside the memory cgroup the caller was started in.
    """
    if unit is not None:
        return unit if kind == "v2" else "."
    return "/" + PODS_DIR if kind == "v2" else PODS_DIR


def place_pods(own_scope: bool = False) -> str:
    """stage1: the parent for its pod's cgroup.  Inside a unit on pure v2, first moves the unit's
    processes (ours included) into its ``supervisor`` leaf, so that controllers can be enabled
    below the unit; calling it again is harmless."""
    kind = cgroups.detect()
    unit = unit_cgroup(cgroups.own_cgroups(), in_a_unit(own_scope))
    if unit is not None and kind == "v2":
        unit_dir = posixpath.join(cgroups.CGROUP_ROOT, unit.lstrip("/"))
        cgroups.move_processes(unit_dir, posixpath.join(unit_dir, SUPERVISOR_LEAF))
    return pod_parent(kind, unit)


def expected_parent() -> str:
    """The parent place_pods would choose in this process, without moving anything (gc names a
    pod's cgroups with it when the pod's record of them is damaged)."""
    kind = cgroups.detect()
    return pod_parent(kind, unit_cgroup(cgroups.own_cgroups(), in_a_unit(False)))
