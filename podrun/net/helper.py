"""A network helper started by stage0 ahead of time (optional; man podrun-stage1(7)).

Loading pyroute2 is the longest step of a networked pod's start (~0.1 s).  When ``podrun run``
sees that the pod will have networks, it forks this helper first thing: the helper loads pyroute2
while stage0 prepares the pod and stage1 starts, then waits for one request on a pipe.  stage0
hands the pipes to stage1 through the environment (``PODRUN_NET_HELPER=PID:REQUEST_FD:RESULT_FD``;
the helper is a child of that same process, exec does not change that).  The default flavor
sends ``{"pod_dir", "data_dir", "boot_id"}`` once the netns exists and reads the result exactly
as from a helper it forks itself (podrun.net.setup.run_helper).  A flavor that ignores the
variable leaves the helper waiting until the pod's process exits (EOF), then it exits too.
"""

from __future__ import annotations

import os

from podrun.isolation import syscalls as sc

ENV = "PODRUN_NET_HELPER"


def start() -> str:
    """Fork the helper; returns the value for ``PODRUN_NET_HELPER``."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(req_w)
        os.close(res_r)
        try:
            sc.prctl(sc.PR_SET_PDEATHSIG, 9)
            _serve(req_r, res_w)
        finally:
            os._exit(1)
    os.close(req_r)
    os.close(res_w)
    os.set_inheritable(req_w, True)
    os.set_inheritable(res_r, True)
    return f"{pid}:{req_w}:{res_r}"


def _serve(req_r: int, res_w: int) -> None:
    try:
        from podrun.net import link  # noqa: F401  (the point: pyroute2 loads now)
    except ImportError:
        pass  # reported when the request comes, by setup
    chunks = []
    while chunk := os.read(req_r, 65536):
        chunks.append(chunk)
    if not chunks:
        os._exit(0)  # stage1 did not want us
    from podrun.lean import json_loads
    from podrun.net import setup
    from podrun.pod.manifest import MANIFEST, PodManifest

    req = json_loads(b"".join(chunks))
    with open(os.path.join(req["pod_dir"], MANIFEST), "rb") as f:
        manifest = PodManifest.from_json(f.read())
    setup.run_helper(req["pod_dir"], req["data_dir"], manifest, req["boot_id"], res_w)


def parse(value: str) -> tuple[int, int, int] | None:
    """(pid, request fd, result fd) from the variable, or None if malformed."""
    try:
        pid, req_w, res_r = (int(x) for x in value.split(":"))
    except ValueError:
        return None
    return pid, req_w, res_r
