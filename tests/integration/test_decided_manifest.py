"""stage1 acts on stage0's decisions and compiles nothing (issue 14): a prepared pod whose
seccomp program is gone or cut short is refused with one line, never run unconfined or
compiled again; the program stage0 wrote is the one the app runs under."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.integration.test_run import Pods, module_pods


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "decided")


def _prepare(pods: Pods, *app_flags: str) -> str:
    out = pods.run("prepare", "--net", "none", "demo", *app_flags, "--exec", "/bin/sh", "--", "-c",
                   "grep -E 'CapEff|Seccomp:' /proc/self/status", check=True).stdout
    return out.split()[-1]


def test_the_app_runs_as_the_manifest_decided(pods: Pods) -> None:
    uuid = _prepare(pods, "--caps-retain", "chown,kill")
    (pod_dir,) = (pods.data / "pods" / "prepared").glob(f"{uuid}*")
    app = json.loads((pod_dir / "pod.json").read_text())["apps"][0]
    assert (app["capabilities"], app["seccomp_bpf"]) == ([0, 5], "apps/demo/seccomp.bpf")
    res = pods.run("run-prepared", uuid, check=True)
    assert res.stdout.split() == ["CapEff:", "0000000000000021", "Seccomp:", "2"], res.stdout


@pytest.mark.parametrize("damage", ["missing", "cut-short"])
def test_stage1_refuses_a_missing_or_damaged_program(pods: Pods, damage: str) -> None:
    uuid = _prepare(pods)
    (program,) = (pods.data / "pods" / "prepared").glob(f"{uuid}*/apps/demo/seccomp.bpf")
    if damage == "missing":
        program.unlink()
    else:
        program.write_bytes(program.read_bytes()[:-3])
    res = pods.run("run-prepared", uuid)
    assert res.returncode == 254 and res.stdout == "", (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "seccomp program is missing or damaged" in lines[0], res.stderr
