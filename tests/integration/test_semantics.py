"""OCI and podman semantics users rely on (issue 12): the image's StopSignal and --stop-signal,
bare command names in every network mode, /dev mounted noexec without /dev/core, and the
environment every app gets (container=podrun)."""

from __future__ import annotations

import signal
import subprocess
import uuid as uuidlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import images as img
from tests.integration.test_run import Pods, module_pods

TRAPS = ("trap 'echo got-quit; exit 3' QUIT; trap 'echo got-int; exit 4' INT; trap 'echo got-term; exit 5' TERM; "
         "echo ready; while :; do sleep 0.1; done")


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "semantics")


def image(pods: Pods, tmp_path: Path, config: dict[str, Any]) -> str:
    """The busybox test image with *config* merged into its config; fetched, by digest."""
    cfg: dict[str, Any] = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], **config}
    built = img.write_oci_layout(tmp_path / f"layout-{uuidlib.uuid4().hex[:8]}",
                                 [img.tar_bytes(img.busybox_entries(("grep", "cp", "cat")))], config={"config": cfg})
    pods.run("fetch", f"oci:{built.layout}", check=True)
    return built.manifest_digest


def start(pods: Pods, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc, uuid, _ = pods.start("--net", "none", *args, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", line
    return proc, uuid


@pytest.mark.parametrize(("stop_signal", "flags", "expected"), [
    ("SIGQUIT", (), ("got-quit", 3)),
    ("quit", (), ("got-quit", 3)),
    ("3", (), ("got-quit", 3)),
    (None, (), ("got-term", 5)),
    ("SIGQUIT", ("--stop-signal", "SIGINT"), ("got-int", 4)),
    (None, ("--stop-signal", "2"), ("got-int", 4)),
])
def test_podrun_stop_sends_the_apps_stop_signal(pods: Pods, tmp_path: Path, stop_signal: str | None,
                                                flags: tuple[str, ...], expected: tuple[str, int]) -> None:
    digest = image(pods, tmp_path, {"StopSignal": stop_signal} if stop_signal else {})
    proc, uuid = start(pods, digest, *flags, "--exec", "/bin/sh", "--", "-c", TRAPS)
    assert pods.run("stop", uuid).returncode == 0
    out, _ = proc.communicate(timeout=30)
    assert (out.split(), proc.returncode) == ([expected[0]], expected[1])


def test_sigterm_to_the_supervisor_sends_the_stop_signal(pods: Pods, tmp_path: Path) -> None:
    """As systemd stops a unit: SIGTERM to the main PID."""
    digest = image(pods, tmp_path, {"StopSignal": "SIGQUIT"})
    proc, _ = start(pods, digest, "--exec", "/bin/sh", "--", "-c", TRAPS)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert (out.split(), proc.returncode) == (["got-quit"], 3)


def test_sigint_and_sighup_pass_as_they_are(pods: Pods, tmp_path: Path) -> None:
    digest = image(pods, tmp_path, {"StopSignal": "SIGQUIT"})
    proc, _ = start(pods, digest, "--exec", "/bin/sh", "--", "-c", TRAPS)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert (out.split(), proc.returncode) == (["got-int"], 4)


def test_a_failing_app_stops_the_others_with_their_stop_signal(pods: Pods, tmp_path: Path) -> None:
    digest = image(pods, tmp_path, {"StopSignal": "SIGQUIT"})
    res = pods.run("run", "--net", "none", digest, "--name", "server", "--exec", "/bin/sh", "--", "-c", TRAPS,
                   "---", "demo", "--name", "failing", "--exec", "/bin/sh", "--", "-c", "sleep 0.5; exit 9")
    assert res.returncode == 9, res.stderr
    assert res.stdout.splitlines() == ["server | ready", "server | got-quit"]


@pytest.mark.parametrize(("stop_signal", "fragment"), [("SIGNOPE", "not a signal name"), ("65", "out of range"),
                                                       ("0", "out of range")])
def test_bad_stop_signals_are_refused(pods: Pods, tmp_path: Path, stop_signal: str, fragment: str) -> None:
    flag = pods.run("run", "--net", "none", "demo", "--stop-signal", stop_signal, "--exec", "/bin/true")
    assert flag.returncode == 253 and "--stop-signal" in flag.stderr and fragment in flag.stderr, flag.stderr
    digest = image(pods, tmp_path, {"StopSignal": stop_signal})
    from_image = pods.run("run", "--net", "none", digest, "--exec", "/bin/true")
    assert from_image.returncode == 250 and "StopSignal" in from_image.stderr, from_image.stderr
    assert "Traceback" not in flag.stderr + from_image.stderr


@pytest.mark.parametrize("net", ["none", "host", "default"])
def test_bare_command_names_in_every_network_mode(pods: Pods, net: str) -> None:
    ok = pods.run("run", "--net", net, "demo", "--exec", "id", "--", "-u")
    assert (ok.returncode, ok.stdout.strip()) == (0, "0"), ok.stderr
    missing = pods.run("run", "--net", net, "demo", "--exec", "no-such-command")
    assert missing.returncode == 127 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == ["podrun: app demo: cannot execute 'no-such-command': "
                                                   "No such file or directory"]


def test_dev_is_noexec_and_has_no_core_link(pods: Pods) -> None:
    res = pods.run("run", "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c",
                   "cp /bin/busybox /dev/bb && /dev/bb true; echo rc=$?; test -e /dev/core || echo no-core; "
                   "grep ' /dev ' /proc/self/mounts")
    lines = res.stdout.splitlines()
    assert lines[0] == "rc=126" and lines[1] == "no-core", res.stdout
    assert "noexec" in lines[2].split()[3].split(",")


def test_environment_of_an_app(pods: Pods, tmp_path: Path) -> None:
    digest = image(pods, tmp_path, {"Env": ["FROM_IMAGE=1"]})
    res = pods.run("run", "--net", "none", "--set-env", "SET=2", digest, "--user", "nobody", "--exec", "/bin/env")
    env = dict(line.split("=", 1) for line in res.stdout.splitlines())
    assert env == {"FROM_IMAGE": "1", "SET": "2", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "container": "podrun", "HOME": "/"}, env
    own = pods.run("run", "--net", "none", "demo", "--environment", "container=other", "--exec", "/bin/sh", "--",
                   "-c", "echo $container")
    assert own.stdout.strip() == "other"


def test_apps_die_of_a_closed_pipe(pods: Pods) -> None:
    """Python ignores SIGPIPE; the apps must not inherit that (``yes | head`` would never end)."""
    res = pods.run("run", "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c",
                   "yes | head -c 3 >/dev/null; echo $?; grep -E '^Sig(Ign|Cgt)' /proc/self/status", timeout=60)
    lines = res.stdout.split()
    assert res.returncode == 0 and lines[0] == "0", res.stderr
    ignored = int(dict(zip(lines[1::2], lines[2::2], strict=True))["SigIgn:"], 16)
    assert ignored & (1 << (13 - 1)) == 0 and ignored & (1 << (25 - 1)) == 0  # SIGPIPE, SIGXFSZ
