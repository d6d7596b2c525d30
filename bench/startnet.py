"""Scenario ``start-net``: warm start of ``/bin/true`` with a bridged network and NAT, podrun's
default network vs podman's bridge network (``podman run --rm --network=bridge``).

podrun uses a bench-only default network (bridge ``prbench0``, 172.16.31.0/24, through
``PODRUN_NET_DIR``); the bridge and its nftables table are removed after the scenario, and so is
podman's ``cni-podman0`` bridge if the scenario created it.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import tempfile
from collections.abc import Iterator

from bench.context import BenchContext
from bench.report import TIME, ScenarioResult
from bench.runtimes import (
    PODMAN_IMAGE,
    PODRUN_IMAGE,
    Contender,
    Runtimes,
    harness_overhead,
    prepared_runtimes,
    run_rounds,
)

DEFAULT_RUNS = 20
QUICK_RUNS = 5
BRIDGE = "prbench0"
SUBNET = "172.16.31.0/24"
PODMAN_BRIDGE = "cni-podman0"
DESCRIPTION = (
    "Warm start of `/bin/true` on a bridged network with NAT (veth pair, address from the tool's IPAM, "
    "masquerade rules) from the same busybox root filesystem. Wall time of the whole command, including "
    "the network's set-up and tear-down."
)


@contextlib.contextmanager
def _bench_network() -> Iterator[str]:
    """A net.d holding the bench's default network; everything it creates is removed after."""
    podman_bridge_before = os.path.exists(f"/sys/class/net/{PODMAN_BRIDGE}")
    with tempfile.TemporaryDirectory(prefix="podrun-bench-net.") as d:
        with open(os.path.join(d, "default.json"), "w") as f:
            json.dump({"bridge": BRIDGE, "subnet": SUBNET}, f)
        try:
            yield d
        finally:
            subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
            subprocess.run(["nft", "delete", "table", "ip", f"podrun-{BRIDGE}"], capture_output=True)
            subprocess.run(["nft", "delete", "table", "bridge", f"podrun-{BRIDGE}"], capture_output=True)
            if not podman_bridge_before:
                subprocess.run(["ip", "link", "del", PODMAN_BRIDGE], capture_output=True)


def contenders(rt: Runtimes, net_dir: str) -> list[Contender]:
    env = dict(rt.env, PODRUN_NET_DIR=net_dir)
    podrun = Contender(
        "podrun", f"podrun --dir DATA run --net default {PODRUN_IMAGE} --exec /bin/true",
        lambda _id: [("run", rt.podrun("run", "--net", "default", PODRUN_IMAGE, "--exec", "/bin/true"))],
        env, lambda _id: rt.remove_podrun_pods(),
        notes=["the exited pod is removed (`podrun rm`) after each run, untimed",
               f"podrun's default network for the bench: bridge {BRIDGE}, {SUBNET}"])
    podman = Contender(
        "podman", f"podman --root R --runroot RR run --rm --network=bridge {PODMAN_IMAGE} /bin/true",
        lambda _id: [("run", rt.podman("run", "--rm", "--network=bridge", PODMAN_IMAGE, "/bin/true"))],
        rt.podman_env)
    return [podrun, podman]


def run(ctx: BenchContext) -> ScenarioResult:
    runs = ctx.runs_for(DEFAULT_RUNS, QUICK_RUNS)
    with prepared_runtimes(ctx) as rt, _bench_network() as net_dir:
        tools = run_rounds(ctx, "start-net", contenders(rt, net_dir), runs)
        overhead = harness_overhead()
        notes = list(rt.notes)
    notes.append(f"harness overhead included in every time: {statistics.median(overhead) * 1000:.1f} ms (median)")
    return ScenarioResult("start-net", DESCRIPTION, None, runs, tools, notes=notes, kind=TIME,
                          subject="Root filesystem: `demo/build-rootfs.sh` (Debian's busybox-static).")
