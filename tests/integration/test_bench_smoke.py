"""The benchmark harness still works: ``python -m bench --quick --smoke`` runs every scenario once.

Not a performance check (CI's numbers mean nothing): it asserts that every tool ran and was
timed (or that the report says why not), that the reports were written where asked, and that the
bench put the host back as it was (scratch dirs, mounts, registry, cgroup controllers, the peers'
cgroups and side files such as /run/crun, /run/systemd/nspawn) — also on a fresh machine, where
each peer's first use makes its state dirs.  The peers are installed by scripts/install-deps.sh
before the suite, never by the bench during it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.host import PEER_HOST_PATHS, PEER_PACKAGES, missing_packages
from bench.hostprep import NSPAWN_RUNTIME, UNIFIED, is_mount_point, peer_cgroup_dirs
from bench.report import TIME, ScenarioResult, ToolResult, write_results
from tests.conftest import ROOT, require_root

OCI_FLAVORS = ("podrun oci (crun)", "podrun oci (runc)")  # podrun's stage1 flavor oci on each runtime


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


def _host_state() -> dict[str, object]:
    """The host facts the run-time scenarios change while they run and must restore."""
    controllers = UNIFIED / "cgroup.controllers"
    return {
        "cgroup2 controllers": controllers.read_text().split() if controllers.exists() else None,
        "v1 mounts": sorted(line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                            if " - cgroup " in line),
        "nspawn tmpfs": is_mount_point(NSPAWN_RUNTIME),
        "nspawn dir": NSPAWN_RUNTIME.exists(),
        "peer side files": sorted(str(p) for p in PEER_HOST_PATHS if p.exists() or p.is_symlink()),
    }


def _check_peer(scenario: dict[str, Any], md: str, name: str, key: str = "seconds") -> None:
    """A peer either ran (a positive median and a ratio) or the report says why not."""
    tool = scenario["tools"][name]
    if tool["status"] == "ok":
        assert tool[key]["median"] is not None and tool[key]["median"] >= 0
    else:
        assert tool["reason"] and tool["reason"] in md


def test_bench_smoke(tmp_path: Path) -> None:
    require_root()
    missing = missing_packages(PEER_PACKAGES)
    assert not missing, f"scripts/install-deps.sh did not install {missing}: the bench would run apt-get now"
    before = set(_bench_leftovers())
    host_before = _host_state()
    cgroups_before = peer_cgroup_dirs()
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
    assert set(tools) == {"podrun", "podrun (signed)", "podman", "skopeo+umoci"}
    for name in ("podrun", "podrun (signed)", "skopeo+umoci"):
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

    # start: every tool timed or explained; podrun really ran.
    start = doc["scenarios"]["start"]
    assert set(start["tools"]) == {"podrun", "podrun (wheel)", *OCI_FLAVORS, "crun", "runc", "systemd-nspawn", "podman"}
    for name in ("podrun", "podrun (wheel)"):  # the editable install, and pip install . into a fresh venv
        assert start["tools"][name]["status"] == "ok", start["tools"][name]["reason"]
        assert start["tools"][name]["seconds"]["median"] > 0
    assert start["ratios"]["podrun/podrun (wheel)"]["time_ratio"] > 0
    for name in OCI_FLAVORS:  # podrun's own flavor runs wherever podrun's tests run
        assert start["tools"][name]["status"] == "ok", start["tools"][name]["reason"]
    for name in (*OCI_FLAVORS, "crun", "runc", "systemd-nspawn", "podman"):
        _check_peer(start, md, name)
        if start["tools"][name]["status"] == "ok":
            assert start["ratios"][f"podrun/{name}"]["time_ratio"] > 0
    assert "Scenario `start`" in md

    # start-net: podrun's default network vs podman's bridge; the bench's bridge is gone after.
    startnet = doc["scenarios"]["start-net"]
    assert startnet["tools"]["podrun"]["status"] == "ok", startnet["tools"]["podrun"]["reason"]
    assert startnet["tools"]["podrun"]["seconds"]["median"] > 0
    _check_peer(startnet, md, "podman")
    assert not Path("/sys/class/net/prbench0").exists()

    # pod2: podrun's two-app pod, podman's pod as four timed phases.
    pod2 = doc["scenarios"]["pod2"]
    assert pod2["tools"]["podrun"]["status"] == "ok", pod2["tools"]["podrun"]["reason"]
    assert pod2["tools"]["podrun"]["seconds"]["median"] > 0
    for name in OCI_FLAVORS:
        assert pod2["tools"][name]["status"] == "ok", pod2["tools"][name]["reason"]
    for name in ("podman", *OCI_FLAVORS):
        _check_peer(pod2, md, name)
    if pod2["tools"]["podman"]["status"] == "ok":
        assert set(pod2["tools"]["podman"]["phases"]) == {"pod create", "run a", "run b", "pod rm"}

    # memory: podrun's supervisor and pod pid 1 measured (not the app); crun -d keeps nothing.
    mem = doc["scenarios"]["memory"]
    podrun_mem = mem["tools"]["podrun"]
    assert podrun_mem["status"] == "ok", podrun_mem["reason"]
    assert podrun_mem["mb"]["median"] > 0
    assert len(podrun_mem["phases"]) == 2 and not any("sleep" in p for p in podrun_mem["phases"])
    for name in OCI_FLAVORS:  # the supervisor and catatonit, never the app
        assert mem["tools"][name]["status"] == "ok", mem["tools"][name]["reason"]
        assert len(mem["tools"][name]["phases"]) == 2 and not any("sleep" in p for p in mem["tools"][name]["phases"])
    for name in (*OCI_FLAVORS, "podman (conmon)", "crun (foreground)", "runc (foreground)", "systemd-nspawn"):
        _check_peer(mem, md, name, "mb")
    if mem["tools"]["crun -d"]["status"] == "ok":
        assert mem["tools"]["crun -d"]["mb"]["median"] == 0
    assert "Scenario `memory`" in md

    # memory-20 (two pods per tool in the smoke run, side by side): the same tools, per pod.
    many = doc["scenarios"]["memory-20"]
    assert set(many["tools"]) == set(mem["tools"])
    assert many["tools"]["podrun"]["status"] == "ok", many["tools"]["podrun"]["reason"]
    assert many["tools"]["podrun"]["mb"]["median"] > 0
    for name in OCI_FLAVORS:
        assert many["tools"][name]["status"] == "ok", many["tools"][name]["reason"]
    for name in set(many["tools"]) - {"podrun", "crun -d"}:
        _check_peer(many, md, name, "mb")
    assert "Scenario `memory-20`" in md and "with 2 pods of a tool running at once" in md

    # list and gc (the lifecycle scenario): pods made, listed, collected to the last one.
    for name in ("list", "gc"):
        section = doc["scenarios"][name]
        assert section["tools"]["podrun"]["status"] == "ok", section["tools"]["podrun"]["reason"]
        assert section["tools"]["podrun"]["seconds"]["median"] > 0
        _check_peer(section, md, "podman")
        assert f"Scenario `{name}`" in md
    assert "pods left after gc: 0" in json.dumps(doc["scenarios"]["gc"])

    # Nothing of the bench is left on the host: no scratch dirs, mounts or registry; cgroup
    # controllers, the peers' cgroups and /run/systemd/nspawn as they were.
    assert set(_bench_leftovers()) <= before
    assert _host_state() == host_before
    assert peer_cgroup_dirs() <= cgroups_before
    # The committed results were not overwritten by the smoke run.
    assert _stamp(ROOT / "bench" / "results.json") == committed


def test_version_lines_leave_no_first_use_state() -> None:
    """The bench asks every tool its version before any scenario; ``crun --version`` alone makes
    /run/crun.  Run where /run and /var/tmp are empty, as on a machine where no peer ever ran (a
    child in its own mount namespace, tmpfs on both), nothing of the peers may be left there after."""
    require_root()
    versions = ("import sys; from pathlib import Path; from bench.host import tool_versions; "
                "print(tool_versions(Path('/bin/true'))['crun'], file=sys.stderr)")
    # mount(8) itself writes /run/mount/utab: compare with what is there before the bench's code runs.
    script = ("set -e; for d in /var/tmp /run; do mount -t tmpfs -o mode=0755 tmpfs $d; done; "
              f"find /run /var/tmp -mindepth 1; echo ---; {shlex.quote(sys.executable)} -c {shlex.quote(versions)}; "
              "find /run /var/tmp -mindepth 1")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr.startswith("crun version"), proc.stderr
    fresh, after = proc.stdout.split("---\n")
    assert after == fresh


def test_results_of_some_scenarios_keep_the_others(tmp_path: Path) -> None:
    """A run of one scenario replaces only its section: results.md is rendered from the merged JSON."""
    old = {
        "command": "python -m bench", "machine": {"date": "2026-01-01 00:00 UTC", "kernel": "k"},
        "versions": {"umoci": "umoci version 0.4.7"},
        "scenarios": {"memory": {"kind": "memory", "description": "old memory section", "subject": "", "runs": 1,
                                 "image": None, "tools": {}, "ratios": {}, "notes": [], "calibration": {}}},
    }
    (tmp_path / "results.json").write_text(json.dumps(old))
    tools = [ToolResult("podrun", "podrun run", totals=[0.2, 0.1, 0.3]), ToolResult("crun", "crun run", totals=[0.05])]
    meta = {"command": "python -m bench --scenario start", "machine": {"date": "2026-02-02 00:00 UTC", "kernel": "k"},
            "versions": {"crun": "crun version 1.8.1"}}
    write_results(tmp_path, meta, [ScenarioResult("start", "warm start", None, 3, tools, kind=TIME)],
                  ["pull", "start", "memory"])

    doc = json.loads((tmp_path / "results.json").read_text())
    assert list(doc["scenarios"]) == ["start", "memory"]
    assert doc["scenarios"]["memory"]["description"] == "old memory section"
    assert doc["scenarios"]["memory"]["date"] == "2026-01-01 00:00 UTC"
    assert doc["scenarios"]["start"]["date"] == "2026-02-02 00:00 UTC"
    assert doc["scenarios"]["start"]["tools"]["podrun"]["seconds"]["median"] == 0.2
    assert doc["scenarios"]["start"]["ratios"]["podrun/crun"]["time_ratio"] == 4.0
    assert doc["versions"] == {"umoci": "umoci version 0.4.7", "crun": "crun version 1.8.1"}
    md = (tmp_path / "results.md").read_text()
    assert "old memory section" in md and "warm start" in md
    assert md.index("Scenario `start`") < md.index("Scenario `memory`")
    assert "| podrun | ok | 200.0 | 100.0 | 300.0 | – |" in md
