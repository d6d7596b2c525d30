"""The network helper: the process that attaches a pod to its networks (podrun.net.setup) while
the stage1 supervisor goes on with the rest of the pod's set-up (man podrun-stage1(7)).

stage1 forks it once the pod's network namespace exists, before it unshares its own namespaces
(``spawn``): the child already holds the decided manifest, attaches the networks (netlink
through ``net.rtnl``, nftables, CNI plugins), reports ``ok`` or ``CODE MESSAGE`` on a pipe and
exits; the supervisor reads that (``wait``) before any app starts.  Nothing crosses the stage
contract: stage0 once started the helper itself, to overlap loading pyroute2 with preparing the
pod; with podrun's own netlink client there is nothing left to overlap (measured: no difference).
"""

from __future__ import annotations

import os

from podrun.errors import PodrunError
from podrun.isolation import syscalls as sc
from podrun.model.manifest import PodManifest

Handle = tuple[int, int]  # (pid, result fd)


def spawn(pod_dir: str, data_dir: str, manifest: PodManifest, boot_id: str,
          close_fds: tuple[int, ...] = ()) -> Handle:
    """Fork the helper (closing *close_fds* in it, e.g. the pod lock); it attaches the pod
    *manifest* describes (its netns must exist) and exits."""
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(res_r)
            for fd in close_fds:
                os.close(fd)
            sc.prctl(sc.PR_SET_PDEATHSIG, 9)
            from podrun.net import setup

            setup.run_helper(pod_dir, data_dir, manifest, boot_id, res_w)
        finally:
            os._exit(1)
    os.close(res_w)
    return pid, res_r


def wait(handle: Handle) -> None:
    """The helper's answer.  If it failed: a PodrunError carrying the exit status the helper
    reported (247 when an address or port is held by a running pod), or OSError (254) when it
    died without a word."""
    pid, res_r = handle
    chunks = []
    while chunk := os.read(res_r, 4096):
        chunks.append(chunk)
    os.close(res_r)
    _, status = os.waitpid(pid, 0)
    report = b"".join(chunks).decode(errors="replace")
    if status == 0 and report == "ok":
        return
    code, _, message = report.partition(" ")
    if not (code.isdigit() and message):
        raise OSError(f"network: {report or 'the network helper died'}")
    error = PodrunError(f"network: {message}")
    error.exit_code = int(code)  # stage1 exits with it
    raise error
