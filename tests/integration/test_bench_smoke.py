"""The benchmark harness still works: ``python -m bench --quick --smoke`` on a ~7 MB image.

Not a performance check (CI's numbers mean nothing): it asserts that every tool ran and was
timed, that the reports were written where asked, and that the bench put the host back as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import ROOT, require_root


def _bench_leftovers() -> list[str]:
    """Scratch dirs, mounts and registry processes of the bench that exist right now."""
    found = [str(p) for p in Path(tempfile.gettempdir()).glob("podrun-bench-*")]
    found += [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if "podrun-bench-" in line]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"podrun-registry-" in a for a in argv):
            found.append(" ".join(a.decode(errors="replace") for a in argv))
    return found


def _stamp(path: Path) -> tuple[int, int] | None:
    """(mtime, size) of *path*, or None if it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_mtime_ns, st.st_size


def test_bench_smoke(tmp_path: Path) -> None:
    require_root()
    before = set(_bench_leftovers())
    committed = _stamp(ROOT / "bench" / "results.json")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--smoke", "--output", str(out), "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    doc = json.loads((out / "results.json").read_text())
    pull = doc["scenarios"]["pull"]
    tools = pull["tools"]
    assert set(tools) == {"podrun", "podman", "skopeo+umoci"}
    for name in ("podrun", "skopeo+umoci"):
        assert tools[name]["status"] == "ok", f"{name}: {tools[name]['reason']}"
        assert tools[name]["seconds"]["median"] > 0
        assert tools[name]["mb_per_s"] > 0
    phases = tools["skopeo+umoci"]["phases"]
    assert phases["skopeo copy"]["median"] > 0 and phases["umoci unpack"]["median"] > 0

    md = (out / "results.md").read_text()
    podman = tools["podman"]
    if podman["status"] == "ok":
        assert podman["seconds"]["median"] > 0
        assert "podrun/podman" in pull["ratios"]
    else:
        # podman could not run here: the report must say why.
        assert podman["reason"]
        assert podman["reason"] in md
    assert pull["ratios"]["podrun/skopeo+umoci"]["throughput_ratio"] > 0
    assert pull["image"]["unpacked_bytes"] == sum(pull["image"]["layer_tar_sizes"]) > 0
    assert "Unpacked size" in md
    assert doc["machine"]["kernel"] and doc["versions"]["podrun"]

    # Nothing of the bench is left on the host: no scratch dirs, mounts or registry.
    assert set(_bench_leftovers()) <= before
    # The committed results were not overwritten by the smoke run.
    assert _stamp(ROOT / "bench" / "results.json") == committed
