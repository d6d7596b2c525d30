"""Results of a bench run, their statistics, and the results.json / results.md writers.

results.json holds the latest data of *every* scenario ever run into that output dir: a run of a
subset of scenarios replaces only those scenarios' entries (each entry carries its own date and
command), and results.md is always rendered from the merged results.json, so the two never
disagree and a ``--scenario start`` run keeps the pull section.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.image import ImageInfo

BASELINE = "podrun"

# What a scenario measures, which decides its JSON keys and its table.
THROUGHPUT = "throughput"  # seconds per run of a job of known size (+ MB/s)
TIME = "time"  # seconds per run; lower is better
MEMORY = "memory"  # MB (10^6 bytes) of PSS per running pod; lower is better


def _stats(values: list[float], digits: int = 4) -> dict[str, object]:
    if not values:
        return {"runs": [], "median": None, "min": None, "max": None}
    return {"runs": [round(v, digits) for v in values], "median": round(statistics.median(values), digits),
            "min": round(min(values), digits), "max": round(max(values), digits)}


@dataclass
class ToolResult:
    """One tool's values in one scenario; ``status`` is ok, skipped (never ran) or failed (stopped).

    ``totals`` are seconds (throughput and time scenarios) or MB of PSS (memory scenario).
    """

    name: str
    command: str
    totals: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    stored_bytes: int | None = None

    def add_run(self, total: float, phases: dict[str, float]) -> None:
        """Record one successful run: its value and the value of each phase."""
        self.totals.append(total)
        for name, secs in phases.items():
            self.phases.setdefault(name, []).append(secs)

    @property
    def median(self) -> float | None:
        """Median value, or None with no successful run."""
        return statistics.median(self.totals) if self.totals else None

    def mb_per_s(self, unpacked_bytes: int) -> float | None:
        """Throughput in MB/s (10^6 bytes) of unpacked image data, from the median time."""
        med = self.median
        return unpacked_bytes / 1e6 / med if med else None

    def to_json(self, kind: str, unpacked_bytes: int | None) -> dict[str, object]:
        """This tool's entry in results.json."""
        doc: dict[str, object] = {"command": self.command, "status": self.status, "reason": self.reason,
                                  "notes": self.notes}
        if kind == MEMORY:
            doc["mb"] = _stats(self.totals, 3)
        else:
            doc["seconds"] = _stats(self.totals)
        if kind == THROUGHPUT and unpacked_bytes is not None:
            mbps = self.mb_per_s(unpacked_bytes)
            doc["mb_per_s"] = round(mbps, 2) if mbps else None
        doc["phases"] = {name: _stats(values, 3 if kind == MEMORY else 4) for name, values in self.phases.items()}
        if kind == THROUGHPUT:
            doc["stored_bytes"] = self.stored_bytes
        return doc


@dataclass
class ScenarioResult:
    """All tools' results for one scenario."""

    name: str
    description: str
    image: ImageInfo | None
    runs: int
    tools: list[ToolResult]
    notes: list[str] = field(default_factory=list)
    # Machine calibration figures taken during the scenario, e.g. per-round file-creation cost.
    calibration: dict[str, list[float]] = field(default_factory=dict)
    kind: str = THROUGHPUT
    # What every tool ran on, for scenarios without a built ImageInfo (e.g. the busybox rootfs).
    subject: str = ""

    def tool(self, name: str) -> ToolResult | None:
        """The result of the tool called *name*, if it is in this scenario."""
        return next((t for t in self.tools if t.name == name), None)

    def ratios(self) -> dict[str, dict[str, float]]:
        """podrun's median ÷ each peer's (and, for throughput, the peer's ÷ podrun's as throughput_ratio)."""
        base = self.tool(BASELINE)
        out: dict[str, dict[str, float]] = {}
        if base is None or base.median is None:
            return out
        for peer in self.tools:
            if peer.name == BASELINE or peer.median is None:
                continue
            key = f"{BASELINE}/{peer.name}"
            if self.kind == THROUGHPUT:
                out[key] = {"throughput_ratio": round(peer.median / base.median, 3),
                            "time_ratio": round(base.median / peer.median, 3)}
            elif self.kind == TIME:
                out[key] = {"time_ratio": round(base.median / peer.median, 3)}
            elif peer.median > 0:
                out[key] = {"memory_ratio": round(base.median / peer.median, 3)}
        return out

    def to_json(self) -> dict[str, object]:
        """This scenario's entry in results.json."""
        unpacked = self.image.unpacked_bytes if self.image else None
        return {
            "kind": self.kind,
            "description": self.description,
            "subject": self.subject,
            "runs": self.runs,
            "image": self.image.to_json() if self.image else None,
            "tools": {t.name: t.to_json(self.kind, unpacked) for t in self.tools},
            "ratios": self.ratios(),
            "notes": self.notes,
            "calibration": {k: [round(v, 4) for v in vals] for k, vals in self.calibration.items()},
        }


def merge_results(previous: dict[str, Any] | None, meta: dict[str, Any],
                  scenarios: list[ScenarioResult]) -> dict[str, Any]:
    """The new results.json document: *previous* scenarios kept, this run's *scenarios* replacing theirs.

    Each scenario entry gets this run's date, command, profile and run count; the top level holds
    this run's metadata, with tool versions merged (a peer this run did not use keeps its entry).
    """
    old_scenarios: dict[str, Any] = {}
    old_versions: dict[str, Any] = {}
    if previous:
        old_scenarios = dict(previous.get("scenarios") or {})
        old_versions = dict(previous.get("versions") or {})
        # Entries written before scenarios carried their own stamps take the old top-level ones.
        for entry in old_scenarios.values():
            machine = previous.get("machine") or {}
            entry.setdefault("date", machine.get("date"))
            entry.setdefault("command", previous.get("command"))
            entry.setdefault("profile", previous.get("profile"))
    doc = dict(meta)
    doc["versions"] = {**old_versions, **dict(meta.get("versions") or {})}
    machine = meta.get("machine") or {}
    for s in scenarios:
        entry = s.to_json()
        entry = {"date": machine.get("date"), "command": meta.get("command"), "profile": meta.get("profile"),
                 **entry}
        old_scenarios[s.name] = entry
    doc["scenarios"] = old_scenarios
    return doc


def write_results(output: Path, meta: dict[str, Any], scenarios: list[ScenarioResult],
                  order: list[str]) -> None:
    """Merge this run into *output*/results.json and render *output*/results.md from it.

    *order* is the order scenario sections appear in (the harness's scenario list).
    """
    json_path = output / "results.json"
    previous: dict[str, Any] | None = None
    try:
        previous = json.loads(json_path.read_text())
    except (OSError, ValueError):
        previous = None
    doc = merge_results(previous, meta, scenarios)
    rank = {name: i for i, name in enumerate(order)}
    doc["scenarios"] = dict(sorted(doc["scenarios"].items(), key=lambda kv: rank.get(kv[0], len(rank))))
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    (output / "results.md").write_text(render_markdown(doc))


def _fmt(v: object, digits: int = 2) -> str:
    return "–" if not isinstance(v, (int, float)) else f"{v:.{digits}f}"


def _ms(v: object) -> str:
    return "–" if not isinstance(v, (int, float)) else f"{v * 1000:.1f}"


def _throughput_table(s: dict[str, Any]) -> list[str]:
    img = s["image"]
    unpacked = img["unpacked_bytes"]
    tools = s["tools"]
    lines = [
        f"Image: profile `{img['profile']}` (recipe v{img['version']}), {len(img['layer_tar_sizes'])} gzip layers, "
        f"{img['regular_files']} regular files. **Unpacked size: {unpacked / 1e6:.1f} MB** "
        f"(sum of the uncompressed layer tars: {', '.join(f'{b / 1e6:.1f}' for b in img['layer_tar_sizes'])} MB); "
        f"compressed: {img['compressed_bytes'] / 1e6:.1f} MB "
        f"(gzip ratio {unpacked / img['compressed_bytes']:.2f}x). MB = 10^6 bytes.",
        "",
        f"Runs per tool: {s['runs']}, interleaved ({' → '.join(tools)} → …), each from an empty store.",
        "",
        "| tool | status | median s | min s | max s | MB/s (unpacked, median) | runs (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, t in tools.items():
        sec = t["seconds"]
        runs = ", ".join(f"{v:.2f}" for v in sec["runs"]) or "–"
        lines.append(f"| {name} | {t['status']} | {_fmt(sec['median'])} | {_fmt(sec['min'])} | {_fmt(sec['max'])} "
                     f"| {_fmt(t.get('mb_per_s'), 1)} | {runs} |")
    for name, t in tools.items():
        if len(t["phases"]) > 1:
            lines += ["", f"Phases of {name} (median s): "
                      + "; ".join(f"{p} {_fmt(v['median'])}" for p, v in t["phases"].items() if v["runs"])]
    if s["ratios"]:
        lines += ["", "| ratio | throughput (podrun MB/s ÷ peer MB/s) | time (podrun s ÷ peer s) |",
                  "| --- | ---: | ---: |"]
        lines += [f"| {k} | **{_fmt(v['throughput_ratio'])}** | {_fmt(v['time_ratio'])} |"
                  for k, v in s["ratios"].items()]
    return lines


def _time_table(s: dict[str, Any]) -> list[str]:
    tools = s["tools"]
    lines = [
        f"Runs per tool: {s['runs']}, interleaved (each round runs every tool once; the first tool of a round "
        "rotates), after one untimed warm-up run per tool. Times in milliseconds.",
        "",
        "| tool | status | median ms | min ms | max ms | podrun ÷ tool (median) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, t in tools.items():
        sec = t["seconds"]
        ratio = s["ratios"].get(f"{BASELINE}/{name}", {}).get("time_ratio")
        lines.append(f"| {name} | {t['status']} | {_ms(sec['median'])} | {_ms(sec['min'])} | {_ms(sec['max'])} "
                     f"| {'**' + _fmt(ratio) + '**' if ratio is not None else '–'} |")
    for name, t in tools.items():
        if len(t["phases"]) > 1:
            lines += ["", f"Phases of {name} (median ms): "
                      + "; ".join(f"{p} {_ms(v['median'])}" for p, v in t["phases"].items() if v["runs"])]
    lines += ["", "All runs (ms):", ""]
    lines += [f"- {name}: " + (", ".join(f"{v * 1000:.0f}" for v in t["seconds"]["runs"]) or "–")
              for name, t in tools.items()]
    return lines


def _memory_table(s: dict[str, Any]) -> list[str]:
    tools = s["tools"]
    lines = [
        f"Measurements per tool: {s['runs']}, interleaved. MB = 10^6 bytes of PSS (proportional set size, from "
        "/proc/PID/smaps_rollup), summed over the runtime's host-side processes while the app sleeps.",
        "",
        "| tool | status | median MB | min MB | max MB | podrun ÷ tool (median) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, t in tools.items():
        mb = t["mb"]
        ratio = s["ratios"].get(f"{BASELINE}/{name}", {}).get("memory_ratio")
        lines.append(f"| {name} | {t['status']} | {_fmt(mb['median'])} | {_fmt(mb['min'])} | {_fmt(mb['max'])} "
                     f"| {'**' + _fmt(ratio) + '**' if ratio is not None else '–'} |")
    for name, t in tools.items():
        if t["phases"]:
            lines += ["", f"Processes of {name} (median MB): "
                      + "; ".join(f"{p} {_fmt(v['median'])}" for p, v in t["phases"].items() if v["runs"])]
    return lines


def _scenario_md(name: str, s: dict[str, Any]) -> list[str]:
    kind = s.get("kind", THROUGHPUT)
    lines = [f"## Scenario `{name}`", ""]
    if s.get("date") or s.get("command"):
        lines += [f"Measured {s.get('date')} by `{s.get('command')}`.", ""]
    lines += [s["description"], ""]
    if s.get("subject"):
        lines += [s["subject"], ""]
    if kind == TIME:
        lines += _time_table(s)
    elif kind == MEMORY:
        lines += _memory_table(s)
    else:
        lines += _throughput_table(s)
    tools = s["tools"]
    lines += ["", "Commands:", ""]
    lines += [f"- {n}: `{t['command']}`" for n, t in tools.items()]
    extra = [f"{n}: {t['status']}: {t['reason']}" for n, t in tools.items() if t["status"] != "ok"]
    extra += [f"{n}: {note}" for n, t in tools.items() for note in t["notes"]]
    extra += [f"{n}: {t['stored_bytes'] / 1e6:.1f} MB of regular files in its storage after its first run "
              "(kept compressed blobs + unpacked trees + metadata; a check that it really unpacked)"
              for n, t in tools.items() if t.get("stored_bytes") is not None]
    extra += s["notes"]
    extra += [f"calibration, {k}: {', '.join(f'{v:.3f}' for v in vals)}" for k, vals in s["calibration"].items()]
    if extra:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in extra]
    return lines


def render_markdown(doc: dict[str, Any]) -> str:
    """results.md from a results.json document: machine, versions, then one section per scenario."""
    machine = doc.get("machine") or {}
    versions = doc.get("versions") or {}
    lines = [
        "# podrun benchmark results",
        "",
        f"Latest run: {machine.get('date')}, `{doc.get('command')}`. Each scenario below says when and by "
        "which command it was measured (a run of some scenarios keeps the others' latest results).",
        "",
        "## Machine",
        "",
        f"- kernel: {machine.get('kernel')}",
        f"- CPUs: {machine.get('cpu_count')} × {machine.get('cpu_model')}",
        f"- memory: {machine.get('memory_gib')} GiB; PID 1: {machine.get('pid1')}",
        "",
        "## Versions",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in versions.items()]
    lines.append("")
    for name, s in (doc.get("scenarios") or {}).items():
        lines += _scenario_md(name, s)
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
