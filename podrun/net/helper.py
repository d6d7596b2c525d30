"""The network helper: the process that attaches a pod to its networks (podrun.net.setup) while
the stage1 supervisor goes on with the rest of the pod's set-up (man podrun-stage1(7)).

Loading pyroute2 is the longest step of a networked pod's start (~0.1 s), so ``podrun run`` and
``run-prepared`` fork the helper first thing (``start``): it loads pyroute2 while stage0 prepares
the pod and stage1 starts, then waits for one request on a pipe.  stage0 hands the pipes to
stage1 through the environment (``PODRUN_NET_HELPER=PID:REQUEST_FD:RESULT_FD``; the helper is a
child of that same process, exec does not change that).  The default flavor takes it (``take``),
or spawns one itself when there is none, sends ``{"pod_dir", "data_dir", "boot_id"}`` once the
netns exists (``request``) and reads ``ok`` or an error line (``wait``).  A flavor that ignores
the variable leaves the helper waiting until the pod's process exits (EOF); it then exits too.
"""

from __future__ import annotations

import json
import os

from podrun.abi import ENV_NET_HELPER
from podrun.errors import PodrunError
from podrun.isolation import syscalls as sc
from podrun.lean import load_site_packages

ENV = ENV_NET_HELPER  # the stage contract names it (podrun.abi)
Handle = tuple[int, int, int]  # (pid, request fd, result fd)


def spawn(close_fds: tuple[int, ...] = ()) -> Handle:
    """Fork the helper (closing *close_fds* in it, e.g. the pod lock)."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(req_w)
        os.close(res_r)
        for fd in close_fds:
            os.close(fd)
        try:
            sc.prctl(sc.PR_SET_PDEATHSIG, 9)
            _serve(req_r, res_w)
        finally:
            os._exit(1)
    os.close(req_r)
    os.close(res_w)
    return pid, req_w, res_r


def start() -> str:
    """stage0: spawn the helper early; returns the value for ``PODRUN_NET_HELPER``."""
    pid, req_w, res_r = spawn()
    os.set_inheritable(req_w, True)
    os.set_inheritable(res_r, True)
    return f"{pid}:{req_w}:{res_r}"


def take() -> Handle | None:
    """stage1: the helper stage0 started, if any and still ours (the variable is removed)."""
    value = os.environ.pop(ENV, "")
    try:
        pid, req_w, res_r = (int(x) for x in value.split(":"))
        os.fstat(req_w)
        os.fstat(res_r)
    except (ValueError, OSError):
        return None
    os.set_inheritable(req_w, False)
    os.set_inheritable(res_r, False)
    return pid, req_w, res_r


def request(handle: Handle, pod_dir: str, data_dir: str, boot_id: str) -> None:
    """Ask the helper to attach the pod (its netns must exist)."""
    _, req_w, _ = handle
    try:
        req = {"pod_dir": pod_dir, "data_dir": data_dir, "boot_id": boot_id}
        os.write(req_w, json.dumps(req, separators=(",", ":")).encode())
    finally:
        os.close(req_w)


def wait(handle: Handle) -> None:
    """The helper's answer.  If it failed: a PodrunError carrying the exit status the helper
    reported (247 when an address or port is held by a running pod), or OSError (254) when it
    died without a word."""
    pid, _, res_r = handle
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


def _serve(req_r: int, res_w: int) -> None:
    load_site_packages()  # in stage1 (python -I -S): pyroute2 lives in site-packages
    try:
        from podrun.net import link  # noqa: F401  (the point: pyroute2 loads now)
    except ImportError:
        pass  # reported when the request comes, by setup
    chunks = []
    while chunk := os.read(req_r, 65536):
        chunks.append(chunk)
    if not chunks:
        os._exit(0)  # stage1 did not want us
    from podrun.model.manifest import MANIFEST, PodManifest
    from podrun.net import setup

    req = json.loads(b"".join(chunks))
    with open(os.path.join(req["pod_dir"], MANIFEST), "rb") as f:
        manifest = PodManifest.from_json(f.read())
    setup.run_helper(req["pod_dir"], req["data_dir"], manifest, req["boot_id"], res_w)
