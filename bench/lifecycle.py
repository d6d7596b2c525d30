"""Lifecycle benchmark (issue 4): ``podrun list`` and ``podrun gc`` with many exited pods.

    python -m bench.lifecycle [--count 1000] [--runs 5] [--output DIR]

Creates COUNT real exited pods (``podrun run --net none demo --exec /bin/true``, the demo image from
busybox-static), times ``podrun list`` (table and JSON) RUNS times, then one ``podrun gc
--grace-period 0s`` of all of them, and writes lifecycle.md / lifecycle.json.  Aims from the issue:
list of 1,000 pods under 0.3 s, gc of 1,000 exited pods under 10 s.

podman is not compared: creating and running 1,000 podman containers takes far longer than the
measurement itself on this machine; ``podman ps -a`` and ``container prune`` figures would need a
dedicated run (left to the harness's next revision).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str]) -> float:
    start = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--output", type=Path, default=ROOT / "bench")
    p.add_argument("--podrun", type=Path, default=Path(sys.executable).parent / "podrun")
    args = p.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="podrun-bench-life-"))
    podrun = [str(args.podrun), "--dir", str(base / "data")]
    try:
        rootfs = subprocess.run(["bash", str(ROOT / "demo" / "build-rootfs.sh"), str(base / "rootfs")],
                                check=True, capture_output=True, text=True).stdout.strip()
        subprocess.run([*podrun, "image", "import", rootfs, "demo"], check=True, stdout=subprocess.DEVNULL)
        start = time.monotonic()
        for _ in range(args.count):
            subprocess.run([*podrun, "run", "--net", "none", "demo", "--exec", "/bin/true"], check=True)
        create = time.monotonic() - start
        list_table = [timed([*podrun, "list"]) for _ in range(args.runs)]
        list_json = [timed([*podrun, "list", "--format", "json"]) for _ in range(args.runs)]
        gc = timed([*podrun, "gc", "--grace-period", "0s"])
        left = json.loads(subprocess.run([*podrun, "list", "--format", "json"], check=True, capture_output=True,
                                         text=True).stdout)
    finally:
        subprocess.run([str(args.podrun), "--dir", str(base / "data"), "gc", "--grace-period", "0s"],
                       check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "pods": args.count,
        "runs": args.runs,
        "create_s_per_pod": round(create / args.count, 4),
        "list_table_s": {"median": round(statistics.median(list_table), 4), "min": round(min(list_table), 4),
                         "max": round(max(list_table), 4)},
        "list_json_s": {"median": round(statistics.median(list_json), 4), "min": round(min(list_json), 4),
                        "max": round(max(list_json), 4)},
        "gc_s": round(gc, 3),
        "pods_left_after_gc": len(left),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "lifecycle.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output / "lifecycle.md").write_text(
        "# podrun lifecycle benchmark\n\n"
        f"Date: {result['date']}. Command: `python -m bench.lifecycle --count {args.count} --runs {args.runs}`.\n\n"
        f"{args.count} real exited pods (`podrun run demo --exec /bin/true`, {result['create_s_per_pod']} s each "
        "to create, run and exit).\n\n"
        "| operation | median s | min s | max s | aim |\n| --- | ---: | ---: | ---: | --- |\n"
        f"| `podrun list` | {result['list_table_s']['median']} | {result['list_table_s']['min']} | "
        f"{result['list_table_s']['max']} | < 0.3 s for 1,000 pods |\n"
        f"| `podrun list --format json` | {result['list_json_s']['median']} | {result['list_json_s']['min']} | "
        f"{result['list_json_s']['max']} | |\n"
        f"| `podrun gc --grace-period 0s` (mark + sweep all) | {result['gc_s']} | | | < 10 s for 1,000 pods |\n\n"
        f"Pods left after gc: {result['pods_left_after_gc']}. podman is not compared (see the module docstring).\n"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
