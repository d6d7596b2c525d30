"""stage1 flavor ``default``: the pod supervisor.

Process chain (see man/podrun-stage1.7)::

    podrun run (stage0) --exec--> this module, same PID, holding the pod lock ("supervisor")
        unshare mount/UTS/IPC/net + PID namespaces; overlay root per app; cgroups; pod files
        ├─ fork: pod pid 1 (podrun.pod.init) -> execve(catatonit -P) in an empty root
        └─ fork per app, into the pod's namespaces: stage2 launcher -> execve(app)

The supervisor stays in the host PID namespace so the unit's main PID (or the shell's child)
is the pod, and it is the pod's one Python process.  It supervises the apps itself
(podrun.stage1.default.supervise): relays their output, forwards SIGTERM/SIGINT/SIGHUP
(``podrun stop`` signals it), records each app's exit status, applies the exit rule and exits
with the pod's exit code.  pid 1 dies with the supervisor (the kernel signals it when the
supervisor's end of its lifeline pipe closes: podrun.pod.init), and every app dies
with pid 1 (the kernel kills a PID namespace whose first process exits), so nothing outlives
a ``kill -9``.  All mounts live in the pod's private mount namespaces and vanish with them.
"""

from __future__ import annotations

from podrun.pod import podsetup
from podrun.stage1.default.supervise import Supervisor
from podrun.stage2.rootfs import mount_app_root

# Start-up budget: this module and everything it imports stay off dataclasses, json, re, enum,
# typing, pathlib, signal, socket, functools and contextlib (podrun.lean; tests/unit/test_hot_path.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NoReturn


def main(argv: list[str]) -> NoReturn:
    """``stages/default/run --pod-dir DIR [--debug]``; the pod lock fd is in $PODRUN_LOCK_FD
    (the contract: podrun.abi).  The pod's setup and teardown: podrun.pod.podsetup."""
    pod, init_exe = podsetup.start(argv, mount_app_root)
    assert pod.init_cgroup is not None
    code = Supervisor(pod.pod_dir, pod.manifest, pod.roots, pod.files, pod.init_cgroup, pod.app_cgroups, pod.sd,
                      pod.netns_fd, init_exe).run()
    podsetup.finish(pod, code)
