"""A full disk under a running pod (issue 12): the data dir on a small tmpfs.  An app that fills
its log or its root keeps running and the pod exits with the app's code; log writes are dropped
with one warning; exit records that cannot be written are warned about, not crashed on; a
`run` that cannot even start names the step and the path.  No traceback anywhere."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_root
from tests.integration.test_run import PODRUN, Pods

FILL_LOG = "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | head -c 60000000; echo still-alive >&2; exit 7"


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[Pods, Path]]:
    """Demo pods in a data dir on a 48 MiB tmpfs (unmounted at the end, whatever happened)."""
    require_root()
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], check=True)
    try:
        rootfs = subprocess.run(["bash", str(ROOT / "demo" / "build-rootfs.sh"), str(tmp_path / "rootfs")],
                                check=True, capture_output=True, text=True).stdout.strip()
        p = Pods(mnt / "data")
        p.run("image", "import", rootfs, "demo", check=True)
        yield p, mnt
        (mnt / "filler").unlink(missing_ok=True)
        p.cleanup()
        assert p.run("list", "--format", "json").stdout.strip() == "[]"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> None:
    subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'filler'}", "bs=1M"], capture_output=True)
    assert subprocess.run(["df", "--output=avail", str(mnt)], capture_output=True, text=True).stdout.split()[1] == "0"


def no_traceback(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr


def test_an_app_filling_its_log_keeps_running(small: tuple[Pods, Path]) -> None:
    p, _ = small
    res = subprocess.run([*PODRUN, "--dir", str(p.data), "run", "--net", "none", "--log-max-size", "-1", "demo",
                          "--exec", "/bin/sh", "--", "-c", FILL_LOG], cwd=ROOT, capture_output=True, timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 7, err
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if line.startswith("podrun: warning:")]
    assert sum("writing its log" in w and "No space left on device" in w for w in warnings) == 1, warnings
    assert "still-alive" in err  # output still reaches the caller
    assert res.stdout.count(b"x") > 40_000_000


def test_an_app_filling_its_root_exits_with_its_code(small: tuple[Pods, Path]) -> None:
    p, _ = small
    res = p.run("run", "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c",
                "dd if=/dev/zero of=/big bs=1M 2>/dev/null; echo dd-done; exit 5", timeout=120)
    assert res.returncode == 5 and res.stdout.split() == ["dd-done"], res.stderr
    no_traceback(res)


def test_run_on_a_full_disk_names_the_step_and_path(small: tuple[Pods, Path]) -> None:
    p, mnt = small
    fill(mnt)
    res = p.run("run", "--net", "none", "demo", "--exec", "/bin/true")
    assert res.returncode == 248, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"podrun: writing the pod directory ({p.data / 'pods'}): No space left on device"]
    assert not [d for d in (p.data / "pods").glob("*/*")], "no pod may be left half-written"


def test_stage1_on_a_full_disk_names_the_step_and_path(small: tuple[Pods, Path]) -> None:
    p, mnt = small
    uuid = p.run("prepare", "--net", "none", "demo", "--exec", "/bin/true", check=True).stdout.strip()
    fill(mnt)
    res = p.run("run-prepared", uuid)
    assert res.returncode == 254, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("podrun: stage1: "), lines
    assert "No space left on device" in lines[0] and f"pods/run/{uuid}" in lines[0]
    no_traceback(res)
    mounts = Path("/proc/self/mountinfo").read_text()
    assert uuid not in mounts
    assert not list(Path("/sys/fs/cgroup").glob(f"*/podrun/pod-{uuid}"))


def test_exit_records_that_cannot_be_written_are_warned_about(small: tuple[Pods, Path]) -> None:
    """The app fills the disk and ends: its status and the pod's `finished` cannot be written."""
    p, _ = small
    res = p.run("run", "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c",
                "dd if=/dev/zero of=/big bs=1M 2>/dev/null; exit 3", timeout=120)
    assert res.returncode == 3
    no_traceback(res)
    assert "recording its exit status" in res.stderr and "the pod's exit code is still the app's" in res.stderr, res.stderr
    status = p.run("list", "--format", "json")
    assert status.returncode == 0 and '"exited"' in status.stdout
