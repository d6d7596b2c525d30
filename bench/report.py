"""Results of a bench run, their statistics, and the results.json / results.md writers."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from bench.image import ImageInfo

BASELINE = "podrun"


@dataclass
class ToolResult:
    """Timings of one tool in one scenario; ``status`` is ok, skipped (never ran) or failed (stopped)."""

    name: str
    command: str
    totals: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=dict)
    status: str = "ok"
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    stored_bytes: int | None = None

    def add_run(self, total: float, phases: dict[str, float]) -> None:
        """Record one successful run: its wall time and the wall time of each phase."""
        self.totals.append(total)
        for name, secs in phases.items():
            self.phases.setdefault(name, []).append(secs)

    @property
    def median(self) -> float | None:
        """Median wall time in seconds, or None with no successful run."""
        return statistics.median(self.totals) if self.totals else None

    def mb_per_s(self, unpacked_bytes: int) -> float | None:
        """Throughput in MB/s (10^6 bytes) of unpacked image data, from the median time."""
        med = self.median
        return unpacked_bytes / 1e6 / med if med else None

    def to_json(self, unpacked_bytes: int) -> dict[str, object]:
        """This tool's entry in results.json."""
        def stats(values: list[float]) -> dict[str, object]:
            if not values:
                return {"runs": [], "median": None, "min": None, "max": None}
            return {"runs": [round(v, 4) for v in values], "median": round(statistics.median(values), 4),
                    "min": round(min(values), 4), "max": round(max(values), 4)}

        mbps = self.mb_per_s(unpacked_bytes)
        return {
            "command": self.command,
            "status": self.status,
            "reason": self.reason,
            "notes": self.notes,
            "seconds": stats(self.totals),
            "mb_per_s": round(mbps, 2) if mbps else None,
            "phases": {name: stats(values) for name, values in self.phases.items()},
            "stored_bytes": self.stored_bytes,
        }


@dataclass
class ScenarioResult:
    """All tools' results for one scenario."""

    name: str
    description: str
    image: ImageInfo
    runs: int
    tools: list[ToolResult]
    notes: list[str] = field(default_factory=list)
    # Machine calibration figures taken during the scenario, e.g. per-round file-creation cost.
    calibration: dict[str, list[float]] = field(default_factory=dict)

    def tool(self, name: str) -> ToolResult | None:
        """The result of the tool called *name*, if it is in this scenario."""
        return next((t for t in self.tools if t.name == name), None)

    def ratios(self) -> dict[str, dict[str, float]]:
        """For each peer with timings: podrun's throughput ÷ the peer's, and podrun's time ÷ the peer's."""
        base = self.tool(BASELINE)
        out: dict[str, dict[str, float]] = {}
        if base is None or base.median is None:
            return out
        for peer in self.tools:
            if peer.name == BASELINE or peer.median is None:
                continue
            out[f"{BASELINE}/{peer.name}"] = {
                "throughput_ratio": round(peer.median / base.median, 3),
                "time_ratio": round(base.median / peer.median, 3),
            }
        return out

    def to_json(self) -> dict[str, object]:
        """This scenario's entry in results.json."""
        unpacked = self.image.unpacked_bytes
        return {
            "description": self.description,
            "runs": self.runs,
            "image": self.image.to_json(),
            "tools": {t.name: t.to_json(unpacked) for t in self.tools},
            "ratios": self.ratios(),
            "notes": self.notes,
            "calibration": {k: [round(v, 4) for v in vals] for k, vals in self.calibration.items()},
        }


def write_json(path: Path, meta: dict[str, object], scenarios: list[ScenarioResult]) -> None:
    """Write results.json: the run's metadata and every scenario's numbers."""
    doc = dict(meta)
    doc["scenarios"] = {s.name: s.to_json() for s in scenarios}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _scenario_md(s: ScenarioResult) -> list[str]:
    img = s.image
    unpacked = img.unpacked_bytes
    lines = [
        f"## Scenario `{s.name}`",
        "",
        s.description,
        "",
        f"Image: profile `{img.profile}` (recipe v{img.version}), {len(img.layer_tar_sizes)} gzip layers, "
        f"{img.regular_files} regular files. **Unpacked size: {unpacked / 1e6:.1f} MB** "
        f"(sum of the uncompressed layer tars: {', '.join(f'{b / 1e6:.1f}' for b in img.layer_tar_sizes)} MB); "
        f"compressed: {img.compressed_bytes / 1e6:.1f} MB "
        f"(gzip ratio {unpacked / img.compressed_bytes:.2f}x). MB = 10^6 bytes.",
        "",
        f"Runs per tool: {s.runs}, interleaved ({' → '.join(t.name for t in s.tools)} → …), "
        "each from an empty store.",
        "",
        "| tool | status | median s | min s | max s | MB/s (unpacked, median) | runs (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for t in s.tools:
        runs = ", ".join(f"{v:.2f}" for v in t.totals) or "–"
        lines.append(
            f"| {t.name} | {t.status} | {_fmt(t.median)} | {_fmt(min(t.totals) if t.totals else None)} | "
            f"{_fmt(max(t.totals) if t.totals else None)} | {_fmt(t.mb_per_s(unpacked), 1)} | {runs} |"
        )
    phased = [t for t in s.tools if len(t.phases) > 1]
    for t in phased:
        lines += ["", f"Phases of {t.name} (median s): "
                  + "; ".join(f"{name} {_fmt(statistics.median(v))}" for name, v in t.phases.items() if v)]
    ratios = s.ratios()
    if ratios:
        lines += [
            "",
            "| ratio | throughput (podrun MB/s ÷ peer MB/s) | time (podrun s ÷ peer s) |",
            "| --- | ---: | ---: |",
        ]
        lines += [f"| {k} | **{_fmt(v['throughput_ratio'])}** | {_fmt(v['time_ratio'])} |" for k, v in ratios.items()]
    lines += ["", "Commands:", ""]
    lines += [f"- {t.name}: `{t.command}`" for t in s.tools]
    extra = [f"{t.name}: {t.status}: {t.reason}" for t in s.tools if t.status != "ok"]
    extra += [f"{t.name}: {n}" for t in s.tools for n in t.notes]
    extra += [f"{t.name}: {t.stored_bytes / 1e6:.1f} MB of regular files in its storage after its first run "
              "(kept compressed blobs + unpacked trees + metadata; a check that it really unpacked)"
              for t in s.tools if t.stored_bytes is not None]
    extra += s.notes
    extra += [f"calibration, {k}: {', '.join(f'{v:.3f}' for v in vals)}" for k, vals in s.calibration.items()]
    if extra:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in extra]
    return lines


def write_markdown(path: Path, meta: dict[str, object], scenarios: list[ScenarioResult]) -> None:
    """Write results.md: machine, versions, then one section per scenario."""
    machine = meta.get("machine", {})
    versions = meta.get("versions", {})
    assert isinstance(machine, dict) and isinstance(versions, dict)
    lines = [
        "# podrun benchmark results",
        "",
        f"Date: {machine.get('date')}. Command: `{meta.get('command')}`.",
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
    for s in scenarios:
        lines += _scenario_md(s)
        lines.append("")
    path.write_text("\n".join(lines).rstrip("\n") + "\n")
