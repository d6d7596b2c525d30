"""``python -m bench``: run the benchmark scenarios and write results.md and results.json."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import lifecycle, memory, pod2, pull, start, startnet
from bench.context import BenchContext
from bench.host import ensure_packages, machine_info, tool_versions
from bench.report import ScenarioResult, write_results

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Scenario:
    """One benchmark: a name for ``--scenario`` and the function that runs it."""

    name: str
    summary: str
    run: Callable[[BenchContext], ScenarioResult | list[ScenarioResult]]
    sections: tuple[str, ...] = ()  # result sections it writes, if not just its name


# They run, and appear in results.md, in this order.
SCENARIOS: list[Scenario] = [
    Scenario("pull", "registry → unpacked layers: podrun fetch vs podman pull vs skopeo copy + umoci unpack",
             pull.run),
    Scenario("start", "warm start of /bin/true, no network: podrun vs crun, runc, systemd-nspawn, podman",
             start.run),
    Scenario("start-net", "warm start of /bin/true with bridge + NAT: podrun --net default vs podman bridge",
             startnet.run),
    Scenario("pod2", "two-app pod of /bin/true: podrun multi-app run vs podman pod create + 2 run + pod rm",
             pod2.run),
    Scenario("memory", "host-side PSS of a running pod: podrun vs conmon, crun, runc, systemd-nspawn", memory.run),
    Scenario("memory-20", "host-side PSS per pod with 20 pods running at once: podrun vs conmon, crun, runc, nspawn",
             memory.run_many),
    Scenario("lifecycle", "list and gc with 1,000 exited pods: podrun vs podman ps -a / container prune",
             lifecycle.run, ("list", "gc")),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--runs", type=int, default=None, metavar="N",
                   help="runs per tool in every scenario (default per scenario: pull 3, start 20, pod2 10, memory 5)")
    p.add_argument("--quick", action="store_true", help="fewer runs (pull 1, start 5, pod2 3, memory 2)")
    p.add_argument("--smoke", action="store_true",
                   help="a ~7 MB image instead of ~200 MB and one run per tool (for the smoke test)")
    p.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                   help="run only this scenario (repeatable; default: all)")
    p.add_argument("--output", type=Path, default=BENCH_DIR, metavar="DIR",
                   help="where results.md and results.json go (default: bench/)")
    p.add_argument("--work", type=Path, default=BENCH_DIR / "work", metavar="DIR",
                   help="cache of built images (default: bench/work/)")
    p.add_argument("--podrun", type=Path, default=Path(sys.executable).parent / "podrun", metavar="PATH",
                   help="podrun console script (default: the one beside this Python)")
    p.add_argument("--settle", type=float, default=0.0, metavar="SECONDS",
                   help="before each run, wait up to this long for file creation to be cheap again (default 0: "
                        "only measure it)")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be at least 1")
    return args


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios and write the reports; return the exit code."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: must run as root (podman's rootful store, umoci unpack, podrun's store)", file=sys.stderr)
        return 2
    # A plain `kill` must still run the clean-ups (registry, scratch dirs, podman store): turn
    # SIGTERM into SystemExit so every `finally` on the way out runs.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    installed = ensure_packages()
    ctx = BenchContext(runs=args.runs, profile="smoke" if args.smoke else "full",
                       work=args.work.resolve(), podrun_bin=args.podrun.absolute(),
                       settle=args.settle, quick=args.quick, smoke=args.smoke)
    if installed:
        ctx.log(f"installed {', '.join(installed)}")
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    meta: dict[str, object] = {
        "command": shlex.join(["python", "-m", "bench", *argv]),
        "machine": machine_info(),
        "versions": tool_versions(ctx.podrun_bin),
        "profile": ctx.profile,
        "runs": ctx.runs,
        "quick": ctx.quick,
        "settle_timeout_s": ctx.settle,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    for scenario in chosen:
        ctx.log(f"scenario {scenario.name}: {scenario.summary}")
        # Written after each scenario, so a later scenario's failure does not lose earlier results.
        result = scenario.run(ctx)
        order = [name for s in SCENARIOS for name in (s.sections or (s.name,))]
        write_results(args.output, meta, result if isinstance(result, list) else [result], order)
    ctx.log(f"wrote {args.output / 'results.md'} and {args.output / 'results.json'}")
    return 0
