"""Output helpers shared by the verbs: tables, JSON, sizes, times, progress."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import click

# Every verb that prints data takes this one option: ``table`` (human-readable: a table, or
# ``key: value`` lines for one object) by default, ``json`` for scripts (its documents are
# described by the JSON Schemas in podrun/schemas/, which the tests check the output against).
FORMAT_OPTION = click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    help="Output format: table (human-readable text) or json.",
)
NO_LEGEND_OPTION = click.option("--no-legend", is_flag=True, help="Omit the table header.")


def print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, sort_keys=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], legend: bool = True) -> None:
    table = ([list(headers)] if legend else []) + [list(r) for r in rows]
    if not table:
        return
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def print_fields(fields: Sequence[tuple[str, str]]) -> None:
    """One object as aligned ``Label:  value`` lines (``podman version``'s layout)."""
    width = max((len(label) for label, _ in fields), default=0) + 2
    for label, value in fields:
        click.echo(f"{label + ':':<{width}}{value}".rstrip())


def printable(text: str) -> str:
    """*text* with every control or invisible character escaped (``\\x1b``): strings from an
    image (labels, env, cmd) must not reach a terminal as escape sequences."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def warn_damage(uuid: str, errors: Sequence[str]) -> None:
    """One warning line on stderr naming what is damaged in a pod (podrun-state(5))."""
    if errors:
        click.echo(f"podrun: warning: pod {uuid}: {'; '.join(errors)}", err=True)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def human_time(ts: str | float | None) -> str:
    if ts is None:
        return "-"
    if isinstance(ts, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
    return ts.replace("T", " ")[:19]


class Progress:
    """Per-blob progress on stderr, only when stderr is a terminal (quiet otherwise)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.lock = threading.Lock()
        self.state: dict[str, tuple[int, int]] = {}
        self.last = 0.0

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.state[what] = (done, total)
            now = time.monotonic()
            if now - self.last < 0.1 and done < total:
                return
            self.last = now
            parts = [f"{w} {100 * d // max(t, 1):3d}%" for w, (d, t) in self.state.items()]
            sys.stderr.write("\r\033[K" + "  ".join(parts[-4:]))
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self.state:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self.state.clear()
