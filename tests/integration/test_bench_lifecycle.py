"""Smoke run of the lifecycle benchmark (bench/lifecycle.py) so it cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, require_root


def test_lifecycle_bench_smoke(tmp_path: Path) -> None:
    require_root()
    subprocess.run([sys.executable, "-m", "bench.lifecycle", "--count", "5", "--runs", "1", "--output", str(tmp_path)],
                   check=True, cwd=ROOT, capture_output=True)
    result = json.loads((tmp_path / "lifecycle.json").read_text())
    assert result["pods"] == 5 and result["pods_left_after_gc"] == 0 and result["gc_s"] > 0
    assert result["list_table_s"]["median"] > 0
    assert (tmp_path / "lifecycle.md").read_text().startswith("# podrun lifecycle benchmark")
