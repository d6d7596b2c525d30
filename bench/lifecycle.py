"""Scenarios ``list`` and ``gc`` (run together as ``lifecycle``): many exited pods on disk.

COUNT real exited podrun pods (``podrun run --net none demo --exec /bin/true``) and COUNT podman
containers (``podman create --network=none IMG /bin/true``: creating them is what takes time, so
they are created, not run) are made, untimed.  Then ``podrun list`` and ``podman ps -a`` are timed
in interleaved rounds, and finally one ``podrun gc --grace-period 0s`` (mark and sweep of every
pod) and one ``podman container prune -f``.  COUNT is 1,000 (``--quick``: 200, ``--smoke``: 3).
The issue's aims: list of 1,000 pods under 0.3 s, gc of 1,000 exited pods under 10 s.

    python -m bench --scenario lifecycle          (``python -m bench.lifecycle`` does the same)
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.context import BenchContext
from bench.pull import ToolFailed, timed
from bench.report import TIME, ScenarioResult, ToolResult
from bench.runtimes import PODMAN_IMAGE, PODRUN_IMAGE, Runtimes, prepared_runtimes

DEFAULT_RUNS = 5
QUICK_RUNS = 3
LIST_DESCRIPTION = ("Listing COUNT exited pods: `podrun list` (table) vs `podman ps -a` with as many created "
                    "containers. Wall time of the command.")
GC_DESCRIPTION = ("Collecting COUNT exited pods at once: `podrun gc --grace-period 0s` (mark + sweep: every pod "
                  "dir, cgroup record and mount checked and removed) vs `podman container prune -f`. One run each.")


def _count(ctx: BenchContext) -> int:
    return 3 if ctx.smoke else (200 if ctx.quick else 1000)


def _make(rt: Runtimes, count: int) -> str | None:
    """Create the pods and containers; returns why podman could not, or None."""
    for _ in range(count):
        subprocess.run(rt.podrun("run", "--net", "none", PODRUN_IMAGE, "--exec", "/bin/true"), env=rt.env,
                       check=True, capture_output=True)
    try:
        for _ in range(count):
            timed(rt.podman("create", "--network=none", PODMAN_IMAGE, "/bin/true"), rt.podman_env)
    except ToolFailed as exc:
        return str(exc)
    return None


def run(ctx: BenchContext) -> list[ScenarioResult]:
    count = _count(ctx)
    runs = ctx.runs_for(DEFAULT_RUNS, QUICK_RUNS)
    with prepared_runtimes(ctx) as rt:
        podrun_list = ToolResult("podrun", "podrun --dir DATA list")
        podman_list = ToolResult("podman", "podman --root R --runroot RR ps -a")
        podrun_gc = ToolResult("podrun", "podrun --dir DATA gc --grace-period 0s")
        podman_gc = ToolResult("podman", "podman --root R --runroot RR container prune -f")
        try:
            ctx.log(f"lifecycle: creating {count} exited podrun pods and {count} podman containers (untimed)")
            podman_failed = _make(rt, count)
            if podman_failed:
                for t in (podman_list, podman_gc):
                    t.status, t.reason = "skipped", f"creating containers: {podman_failed}"
            json_times = []
            timed(rt.podrun("list"), rt.env)  # warm-up runs, untimed
            if podman_list.status == "ok":
                timed(rt.podman("ps", "-a"), rt.podman_env)
            for round_no in range(runs):
                podrun_list.add_run(timed(rt.podrun("list"), rt.env), {})
                json_times.append(timed(rt.podrun("list", "--format", "json"), rt.env))
                if podman_list.status == "ok":
                    podman_list.add_run(timed(rt.podman("ps", "-a"), rt.podman_env), {})
                ctx.log(f"list round {round_no + 1}/{runs}: podrun {podrun_list.totals[-1] * 1000:.0f} ms"
                        + (f", podman {podman_list.totals[-1] * 1000:.0f} ms" if podman_list.totals else ""))
            podrun_list.notes.append(f"`podrun list --format json`: median "
                                     f"{sorted(json_times)[len(json_times) // 2] * 1000:.0f} ms")
            podrun_gc.add_run(timed(rt.podrun("gc", "--grace-period", "0s"), rt.env), {})
            left = json.loads(subprocess.run(rt.podrun("list", "--format", "json"), env=rt.env, check=True,
                                             capture_output=True, text=True).stdout)
            podrun_gc.notes.append(f"pods left after gc: {len(left)}")
            if podman_gc.status == "ok":
                podman_gc.add_run(timed(rt.podman("container", "prune", "-f"), rt.podman_env), {})
            ctx.log(f"gc: podrun {podrun_gc.totals[0]:.2f} s"
                    + (f", podman {podman_gc.totals[0]:.2f} s" if podman_gc.totals else ""))
        finally:
            rt.remove_podrun_pods()
            subprocess.run(rt.podman("rm", "-a", "-f"), env=rt.podman_env, capture_output=True)
        notes = list(rt.notes)
    subject = f"COUNT = {count} exited pods / containers from the busybox root filesystem."
    return [
        ScenarioResult("list", LIST_DESCRIPTION.replace("COUNT", str(count)), None, runs,
                       [podrun_list, podman_list], notes=notes, kind=TIME, subject=subject),
        ScenarioResult("gc", GC_DESCRIPTION.replace("COUNT", str(count)), None, 1, [podrun_gc, podman_gc],
                       notes=notes, kind=TIME, subject=subject),
    ]


if __name__ == "__main__":
    from bench.cli import main

    sys.exit(main(["--scenario", "lifecycle", *sys.argv[1:]]))
