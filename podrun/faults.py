"""Fault injection for crash-safety tests (SECURITY-TESTS cases 17–18).

``PODRUN_FAULT=NAME`` makes podrun SIGKILL itself when it reaches checkpoint NAME, which is
exactly what a ``kill -9`` at that step does.  The variable is read once; unset, a checkpoint
costs one comparison.  Checkpoint names are listed in CHECKPOINTS and documented in
docs/store.md; tests iterate over them.
"""

from __future__ import annotations

import os

SIGKILL = 9  # Linux's number; the signal module (enum) would cost stage0 ~1 ms for one constant

CHECKPOINTS = (
    "pull:after-manifest",
    "store:blob-midway",
    "store:blob-before-rename",
    "store:layer-midway",
    "store:layer-before-rename",
    "pull:before-record",
    "pull:before-name",
)

# prepare/run/stop/gc checkpoints (issue 4); the stage1 ones fire in the exec'd supervisor
POD_CHECKPOINTS = (
    "prepare:embryo-hidden",
    "prepare:embryo-created",
    "run:before-exec",
    "stage1:after-cgroups",
    "stage1:after-mounts",
    "stage1:apps-started",
    "stage1:supervising",
    "stop:after-signal",
    "gc:after-mark",
    "gc:in-garbage",
    "gc:before-delete",
)

# networking checkpoints (issue 5): a pod on the default network with --port and a CNI network
# reaches them all; net:after-netns is the supervisor's, the others kill helper and supervisor
NET_CHECKPOINTS = (
    "net:after-netns",
    "net:after-lease",
    "net:after-veth",
    "net:after-cni",
    "net:after-ports",
)

# image export (SECURITY-TESTS case 26): with the archive's blobs written but not its end, and
# with the archive complete but not yet renamed over DEST
EXPORT_CHECKPOINTS = ("export:midway", "export:before-commit")

_ACTIVE = os.environ.get("PODRUN_FAULT") or None


def checkpoint(name: str, with_parent: bool = False) -> None:
    """Die by SIGKILL here if the test asked for it (*with_parent*: the parent first, for a
    helper process whose parent would otherwise clean up after it)."""
    if _ACTIVE == name:
        if with_parent:
            os.kill(os.getppid(), SIGKILL)
        os.kill(os.getpid(), SIGKILL)
        # Still here: we are pid 1 of a PID namespace, which ignores its own SIGKILL.  Dying
        # without any cleanup is what the fault means, so exit at once.
        os._exit(128 + SIGKILL)


def armed(name: str) -> bool:
    return _ACTIVE == name
