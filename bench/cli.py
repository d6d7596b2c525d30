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

from bench import pull
from bench.context import BenchContext
from bench.host import ensure_packages, machine_info, tool_versions
from bench.report import ScenarioResult, write_json, write_markdown

BENCH_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Scenario:
    """One benchmark: a name for ``--scenario`` and the function that runs it."""

    name: str
    summary: str
    run: Callable[[BenchContext], ScenarioResult]


# Later scenarios (run, start-up, gc…) are appended here; they run in this order.
SCENARIOS: list[Scenario] = [
    Scenario("pull", "registry → unpacked layers: podrun fetch vs podman pull vs skopeo copy + umoci unpack",
             pull.run),
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--runs", type=int, default=None, metavar="N", help="runs per tool (default 3)")
    p.add_argument("--quick", action="store_true", help="one run per tool")
    p.add_argument("--smoke", action="store_true", help="a ~7 MB image instead of ~200 MB (for the smoke test)")
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
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if args.runs < 1:
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
                       settle=args.settle)
    if installed:
        ctx.log(f"installed {', '.join(installed)}")
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    meta: dict[str, object] = {
        "command": shlex.join(["python", "-m", "bench", *argv]),
        "machine": machine_info(),
        "versions": tool_versions(ctx.podrun_bin),
        "profile": ctx.profile,
        "runs": ctx.runs,
        "settle_timeout_s": ctx.settle,
    }
    results = []
    for scenario in chosen:
        ctx.log(f"scenario {scenario.name}: {scenario.summary}")
        results.append(scenario.run(ctx))
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "results.json", meta, results)
    write_markdown(args.output / "results.md", meta, results)
    ctx.log(f"wrote {args.output / 'results.md'} and {args.output / 'results.json'}")
    return 0
