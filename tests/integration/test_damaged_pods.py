"""One damaged pod must not break the others (issue 12; SECURITY-TESTS 23).

Every file of a pod directory that ``list``, ``status``, ``logs``, ``cat-manifest``, ``stop``
and ``enter`` read, damaged in every way a file can be (a directory, a FIFO, a device node, a
symbolic link to a file elsewhere, to a FIFO or to /dev/zero, truncated, JSON of the wrong
types, huge, nested past the parser's depth), on copies of a real exited pod next to the
intact original, and on running pods.  Expected (podrun-pods(1), EXIT STATUS):

- ``list`` and ``status`` exit 0: every pod is listed, the intact one normally, the damaged
  one with its ``errors`` and one warning line on stderr; nothing hangs, memory stays bounded;
- ``cat-manifest``, ``logs`` and ``enter`` exit 248 with one line naming the file when a file
  they need is damaged; ``stop`` still stops a pod whose ``pid`` file is damaged;
- no symbolic link is ever followed: what a link points at (a decoy record, log or manifest
  outside the pod directory) never shows in any output, and never picks what runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from podrun.stage0.prepare import stages_dir
from tests.conftest import ROOT
from tests.integration.test_run import PODRUN, Pods, module_pods

APP = "demo"
SECRET = "DECOY-SECRET"  # in every decoy a link points at: must never be printed
DECOY_APP = "decoy"
DECOY_IP = "10.66.66.66"
DECOY_EXIT = 42
HUGE = 256 << 20  # sparse: past every bound podrun reads a pod file with
MAX_RSS_KB = 100 << 10  # a podrun command reading pod files, in KiB (~30 MiB in practice)
TIMEOUT = 30.0  # no command may hang on a damaged file


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "damage")


@pytest.fixture(scope="module")
def template(pods: Pods) -> str:
    """A real exited pod on the default network: every record written, an app log."""
    uuid_file = pods.data.parent / "template-uuid"
    res = pods.run("run", "--uuid-file-save", str(uuid_file), "demo", "--exec", "/bin/sh", "--", "-c",
                   "echo out; exit 3")
    assert res.returncode == 3, res.stderr
    return uuid_file.read_text().strip()


def pod_dir(p: Pods, uuid: str) -> Path:
    return p.data / "pods" / "run" / uuid


@pytest.fixture
def copy_pod(pods: Pods, template: str) -> Iterator[Callable[[], tuple[str, Path]]]:
    """Copies of the template pod under new UUIDs (exited pods too), deleted after the test."""
    made: list[Path] = []

    def make() -> tuple[str, Path]:
        uuid = str(uuidlib.uuid4())
        made.append(pod_dir(pods, uuid))
        shutil.copytree(pod_dir(pods, template), made[-1], symlinks=True)
        return uuid, made[-1]

    yield make
    for uuid in (d.name for d in made):  # wherever it is now (rm moves a pod to garbage/ first)
        for d in (pods.data / "pods").glob(f"*/{uuid}"):
            if d.is_symlink() or not d.is_dir():
                d.unlink()
            else:
                shutil.rmtree(d)


# -- damage -----------------------------------------------------------------------------------

def _decoy_file(rel: str, manifest: dict[str, Any]) -> bytes:
    """What a link at *rel* points at: a well-formed record that would show if it were read."""
    record = {"exit_code": DECOY_EXIT, "signal": None, "finished": 1.0}
    decoys: dict[str, Any] = {
        "finished": record, f"status/{APP}": record, "cgroups": [f"/sys/fs/cgroup/{SECRET}"],
        "net/state.json": {"networks": [{"name": "default", "ip": DECOY_IP}]},
    }
    if rel == "pod.json":
        return json.dumps(dict(manifest, apps=[dict(manifest["apps"][0], name=DECOY_APP, image_name=SECRET)])).encode()
    if rel == "pid":
        return b"1\n"
    if rel in decoys:
        return json.dumps(decoys[rel]).encode()
    return f"{SECRET}\n".encode()  # ready, logs


def _decoy_tree(rel: str, outside: Path, manifest: dict[str, Any]) -> Path:
    """A directory like the pod's *rel* directory, holding decoys."""
    d = outside / "tree" / rel
    names = {"status": [APP], "net": ["state.json"], "apps": [f"{APP}/log"], f"apps/{APP}": ["log"]}[rel]
    for name in names:
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(_decoy_file(f"{rel}/{name}", manifest))
    return d


WRONG_TYPES = {
    "pod.json": {"version": 1, "uuid": "x", "apps": [{"name": 5, "image_id": []}], "networks": "default"},
    "finished": {"exit_code": "zero", "finished": 1.0},
    f"status/{APP}": {"exit_code": 3, "signal": "KILL", "finished": 1.0},
    "cgroups": {"/sys/fs/cgroup": 1},
    "net/state.json": {"networks": [{"name": "default", "ip": 167772161}]},
}


def damage(pod: Path, rel: str, kind: str, outside: Path) -> None:
    """Damage the pod file (or directory) *rel* in the way *kind* names."""
    target = pod / rel
    manifest = json.loads((pod / "pod.json").read_text())
    original = target.read_bytes() if target.is_file() and not target.is_symlink() else b""
    if kind in ("truncated", "wrong-types", "huge", "deep", "not-a-pid"):
        data = {"truncated": original[:len(original) // 2], "deep": b"[" * 50_000, "huge": b"",
                "not-a-pid": b"12ab\n", "wrong-types": json.dumps(WRONG_TYPES.get(rel)).encode()}[kind]
        target.write_bytes(data)
        if kind == "huge":
            os.truncate(target, HUGE)
        return
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink()
    outside.mkdir(exist_ok=True)
    if kind == "directory":
        target.mkdir()
    elif kind == "file":
        target.write_text("")
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "device":
        os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero's numbers
    elif kind == "symlink-out":
        if original or rel in ("ready", "pid") or "." in rel or rel.startswith(("status/", "apps/demo/")):
            decoy = outside / rel.replace("/", "_")
            decoy.write_bytes(_decoy_file(rel, manifest))
        else:
            decoy = _decoy_tree(rel, outside, manifest)
        target.symlink_to(decoy)
    elif kind == "symlink-fifo":
        os.mkfifo(outside / "fifo")
        target.symlink_to(outside / "fifo")
    elif kind == "symlink-zero":
        target.symlink_to("/dev/zero")
    else:
        raise AssertionError(kind)


KINDS = ("directory", "fifo", "device", "symlink-out", "symlink-fifo", "symlink-zero")
JSON_KINDS = ("truncated", "wrong-types", "huge", "deep")
CASES = [
    *[(rel, k) for rel in ("pod.json", "finished", f"status/{APP}", "cgroups", "net/state.json")
      for k in KINDS + JSON_KINDS],
    *[("pid", k) for k in (*KINDS, "not-a-pid", "huge")],
    *[("ready", k) for k in KINDS],  # its content is never read: only its kind matters
    *[(rel, k) for rel in ("status", "net", "apps", f"apps/{APP}") for k in ("symlink-out", "fifo", "file")],
    *[(f"apps/{APP}/log", k) for k in KINDS],
]
# The files each command reads (a directory: the files beneath it).
LISTED = ("pod.json", "pid", "ready", "finished", "status", "cgroups", "net")
LOGGED = ("pod.json", "apps")


def _reads(rel: str, files: tuple[str, ...]) -> bool:
    return any(rel == f or rel.startswith(f + "/") for f in files)


# -- running podrun, bounded in time and measured in memory -----------------------------------

@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    max_rss_kb: int


# The peak memory of a podrun command, measured by GNU time: the rusage of a child pytest
# forks counts the pages it had before exec (the kernel keeps the highest RSS across exec), so
# the test session's own size (larger with every module its tests import) would be charged to
# podrun; time's child starts from time's own small image.
TIME = "/usr/bin/time"


def run_all(p: Pods, *commands: tuple[str, ...], stdout_to_null: bool = False, timeout: float = TIMEOUT) -> list[Run]:
    """Run podrun commands side by side; each must end within *timeout* (a hang fails the
    test, the hung command is killed)."""
    assert os.access(TIME, os.X_OK), f"{TIME} missing (Debian package time, scripts/install-deps.sh)"
    started = []
    for i, args in enumerate(commands):
        out = open(os.devnull, "wb") if stdout_to_null else open(p.data.parent / f"out.{i}", "w+b")
        err = open(p.data.parent / f"err.{i}", "w+b")
        rss = p.data.parent / f"rss.{i}"
        proc = subprocess.Popen([TIME, "-q", "-f", "%M", "-o", str(rss), *PODRUN, "--dir", str(p.data), *args],
                                cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        started.append((args, proc, out, err, rss))
    deadline = time.monotonic() + timeout
    runs = []
    try:
        for args, proc, out, err, rss in started:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"podrun {' '.join(args)} hangs")
                time.sleep(0.02)
            out.seek(0) if not stdout_to_null else None
            err.seek(0)
            runs.append(Run(args, proc.returncode, "" if stdout_to_null else out.read().decode(errors="replace"),
                            err.read().decode(errors="replace"), int(rss.read_text().split()[-1])))
    finally:
        for _, proc, out, err, _rss in started:
            if proc.returncode is None:
                os.killpg(proc.pid, 9)  # time and the podrun command it runs
                proc.wait()
            out.close()
            err.close()
    return runs


def assert_clean(run: Run) -> None:
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr, run
    assert run.max_rss_kb < MAX_RSS_KB, f"podrun {' '.join(run.args)} used {run.max_rss_kb} KiB"
    assert SECRET not in run.stdout + run.stderr and DECOY_IP not in run.stdout, run


def warning_lines(run: Run, uuid: str) -> list[str]:
    return [line for line in run.stderr.splitlines() if uuid in line]


def one_error_line(run: Run, uuid: str, rel: str, code: int = 248) -> None:
    """The command failed with *code* and one line on stderr naming the pod and the file."""
    assert run.returncode == code, run
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(f"podrun: pod {uuid}: {rel}"), run


# -- a damaged pod next to an intact one ------------------------------------------------------

@pytest.mark.parametrize(("rel", "kind"), CASES, ids=[f"{r}-{k}" for r, k in CASES])
def test_damaged_pod_files(pods: Pods, template: str, copy_pod: Callable[[], tuple[str, Path]],
                           tmp_path: Path, rel: str, kind: str) -> None:
    uuid, pod = copy_pod()
    damage(pod, rel, kind, tmp_path / "outside")
    # logs and cat-manifest where they read the damaged file (and once where they do not)
    logs_too = _reads(rel, LOGGED) or (rel, kind) == ("cgroups", "fifo")
    runs = run_all(pods, ("list", "--format", "json"), ("status", "--format", "json", uuid),
                   *[("logs", uuid), ("cat-manifest", uuid)] * logs_too)
    listed_json, status_json = runs[:2]
    damaged = _reads(rel, LISTED)

    for run in (listed_json, status_json):  # reported, never a failure
        assert run.returncode == 0, run
        assert len(warning_lines(run, uuid)) == (1 if damaged else 0), run
        assert template not in run.stderr, run
    by_uuid = {p["uuid"]: p for p in json.loads(listed_json.stdout)}
    assert by_uuid.keys() == {template, uuid}
    intact = by_uuid[template]
    assert intact["errors"] == [] and intact["exit_code"] == 3 and intact["state"] == "exited"
    assert intact["apps"][0]["name"] == APP and intact["apps"][0]["exit_code"] == 3
    doc = json.loads(status_json.stdout)
    assert doc == by_uuid[uuid]
    # the error names the damaged file or directory
    assert [e for e in doc["errors"] if e.startswith(f"{rel}: ")] if damaged else doc["errors"] == [], doc
    assert doc["state"] == "exited" and DECOY_EXIT not in (doc["exit_code"], *(a["exit_code"] for a in doc["apps"]))
    assert doc["ready"] is (rel != "ready") and DECOY_APP not in listed_json.stdout

    if not logs_too:
        return
    logs, manifest = runs[2:]
    if _reads(rel, LOGGED):
        one_error_line(logs, uuid, rel)
    else:
        assert logs.returncode == 0 and logs.stdout == "out\n", logs
    if rel == "pod.json":
        one_error_line(manifest, uuid, rel)
        assert manifest.stdout == ""
    else:
        assert manifest.returncode == 0 and json.loads(manifest.stdout)["uuid"] == template, manifest


def test_many_damaged_pods_in_tables(pods: Pods, template: str, copy_pod: Callable[[], tuple[str, Path]],
                                     tmp_path: Path) -> None:
    """Table output, with a damaged pod for each file list reads and each kind of damage at
    once: every pod has its row, each damaged one one warning line, the intact one none."""
    damaged = {}
    for i, (rel, kind) in enumerate(c for c in CASES if _reads(c[0], LISTED)):
        uuid, pod = copy_pod()
        damage(pod, rel, kind, tmp_path / f"outside-{i}")
        damaged[uuid] = rel
    listed, status = run_all(pods, ("list", "--full"), ("status", next(iter(damaged))))
    for run in (listed, status):
        assert_clean(run)
        assert run.returncode == 0, run
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows.keys() == {template, *damaged}
    assert rows[template][1:4] == [APP, "localhost/demo:latest", "exited"]
    assert all(rows[u][3] == "exited" for u in damaged)
    assert len(listed.stderr.splitlines()) == len(damaged) and template not in listed.stderr
    for uuid, rel in damaged.items():
        (line,) = warning_lines(listed, uuid)
        assert line.startswith(f"podrun: warning: pod {uuid}: {rel}: "), line
    assert status.stdout.startswith("state=exited\n") and len(status.stderr.splitlines()) == 1


def test_a_pod_directory_that_is_a_link_is_not_followed(pods: Pods, template: str,
                                                         copy_pod: Callable[[], tuple[str, Path]],
                                                         tmp_path: Path) -> None:
    _, decoy = copy_pod()
    (decoy / "pod.json").write_bytes(_decoy_file("pod.json", json.loads((pod_dir(pods, template) / "pod.json")
                                                                        .read_text())))
    outside = tmp_path / "decoy-pod"
    decoy.rename(outside)
    uuid = decoy.name
    decoy.symlink_to(outside)
    runs = run_all(pods, ("list", "--format", "json"), ("list",), ("status", uuid), ("logs", uuid),
                   ("cat-manifest", uuid), ("stop", uuid), ("enter", uuid, "/bin/true"))
    listed_json, listed, status, *acting = runs
    for run in runs:
        assert_clean(run)
        assert DECOY_APP not in run.stdout
    doc = {p["uuid"]: p for p in json.loads(listed_json.stdout)}[uuid]
    assert doc["state"] == "unknown" and doc["errors"] == ["the pod directory is a symbolic link"]
    assert listed.returncode == status.returncode == 0 and len(warning_lines(status, uuid)) == 1
    for run in acting:
        one_error_line(run, uuid, "the pod directory is a symbolic link")


def test_app_names_never_lead_out_of_the_pod(pods: Pods, copy_pod: Callable[[], tuple[str, Path]],
                                             tmp_path: Path) -> None:
    """An app named ``../../x`` in a manifest: its status and log paths would lead out of the
    pod directory; the manifest is damaged instead."""
    record = tmp_path / "record"
    record.write_bytes(_decoy_file("finished", {}))
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "log").write_text(f"{SECRET}\n")
    uuids = []
    for target in (record, logs):
        uuid, pod = copy_pod()
        manifest = json.loads((pod / "pod.json").read_text())
        manifest["apps"][0]["name"] = os.path.relpath(target, pod / "status")  # == relative to apps/
        (pod / "pod.json").write_text(json.dumps(manifest))
        uuids.append(uuid)
    runs = run_all(pods, ("list", "--format", "json"), *[(verb, u) for u in uuids for verb in ("logs", "status")])
    for run in runs:
        assert_clean(run)
    docs = {p["uuid"]: p for p in json.loads(runs[0].stdout)}
    for uuid in uuids:
        assert docs[uuid]["errors"] == ["pod.json: malformed app entry"] and docs[uuid]["apps"] == []
    for logs_run, status_run in zip(runs[1::2], runs[2::2], strict=True):
        one_error_line(logs_run, logs_run.args[1], "pod.json: no apps, or an app without a valid name")
        assert status_run.returncode == 0 and len(warning_lines(status_run, status_run.args[1])) == 1


def test_a_huge_log_is_read_in_bounded_memory(pods: Pods, copy_pod: Callable[[], tuple[str, Path]]) -> None:
    uuid, pod = copy_pod()
    os.truncate(pod / "apps" / APP / "log", HUGE)  # sparse
    (run,) = run_all(pods, ("logs", uuid), stdout_to_null=True)
    assert_clean(run)
    assert run.returncode == 0, run


# -- running pods -----------------------------------------------------------------------------

@pytest.fixture
def running(pods: Pods) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """A running pod (one app sleeping); stopped and collected after the test."""
    proc, uuid, path = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    yield proc, uuid, path
    if proc.poll() is None:
        pods.run("stop", "--force", uuid)
        proc.wait(timeout=30)
    pods.run("rm", uuid)


@pytest.fixture(scope="module")
def running_long(pods: Pods) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """A running pod for tests that repair what they damage."""
    proc, uuid, path = pods.start("demo", "--exec", "/bin/sleep", "--", "600")
    yield proc, uuid, path
    pods.run("stop", "--force", uuid)
    proc.wait(timeout=30)
    pods.run("rm", uuid)


@pytest.fixture
def decoy_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process that a damaged pid file may name: it must never be signalled."""
    proc = subprocess.Popen(["sleep", "600"])
    yield proc
    assert proc.poll() is None, "podrun signalled a process that is not the pod's"
    proc.kill()
    proc.wait()


PID_DAMAGE = ("directory", "fifo", "device", "symlink-zero", "symlink-decoy", "not-a-pid", "huge", "missing")


@pytest.mark.parametrize("kind", PID_DAMAGE)
def test_stop_with_a_damaged_pid_file(pods: Pods, running: tuple[subprocess.Popen[str], str, Path],
                                      decoy_process: subprocess.Popen[bytes], tmp_path: Path, kind: str) -> None:
    """The pod is stopped through the holder of its lock (its supervisor), never through what
    the damaged file names: the app gets SIGTERM as with an intact pid file."""
    proc, uuid, path = running
    if kind == "symlink-decoy":
        (tmp_path / "pid").write_text(f"{decoy_process.pid}\n")
        (path / "pid").unlink()
        (path / "pid").symlink_to(tmp_path / "pid")
    elif kind == "missing":
        (path / "pid").unlink()
    else:
        damage(path, "pid", kind, tmp_path)
    (run,) = run_all(pods, ("stop", "--timeout", "2s", uuid))  # a missing pid is waited for that long
    assert_clean(run)
    assert run.returncode == 0 and run.stdout == f"{uuid} stopped\n", run
    assert proc.wait(timeout=10) == 128 + signal.SIGTERM


def test_stop_a_fly_pod(pods: Pods) -> None:
    """A fly pod has no pid file: its app holds the pod's lock and is stopped through it."""
    uuid_file = pods.data.parent / "fly-uuid"
    proc = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run", "--uuid-file-save", str(uuid_file),
                             "--stage1", "fly", "demo", "--exec", "/bin/sleep", "--", "600"], cwd=ROOT)
    deadline = time.monotonic() + TIMEOUT  # a fly pod writes no ready file: running is its lock held
    while not (uuid_file.exists() and '"running"' in pods.run("status", "--format", "json",
                                                               uuid_file.read_text().strip()).stdout):
        assert time.monotonic() < deadline and proc.poll() is None, "the fly pod did not start"
        time.sleep(0.05)
    uuid = uuid_file.read_text().strip()
    try:
        (run,) = run_all(pods, ("stop", uuid))
        assert_clean(run)
        assert run.returncode == 0 and run.stdout == f"{uuid} stopped\n", run
        assert proc.wait(timeout=10) == -signal.SIGTERM  # podrun run became the app itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        pods.run("rm", uuid)


def test_stop_never_signals_a_podrun_command_holding_the_lock(pods: Pods, copy_pod: Callable[[], tuple[str, Path]],
                                                              tmp_path: Path) -> None:
    """gc and rm lock an exited pod while they move it: a stop at that moment finds a lock
    holder and no pid 1, and must not signal them."""
    uuid, pod = copy_pod()
    script = tmp_path / "podrun"  # what ``python /usr/bin/podrun gc`` looks like in /proc
    script.write_text("import fcntl, os, sys, time\nfd = os.open(sys.argv[1], os.O_RDONLY)\n"
                      "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(600)\n")
    holder = subprocess.Popen(["python3", str(script), str(pod)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        (run,) = run_all(pods, ("stop", "--timeout", "1s", uuid))
        assert_clean(run)
        assert run.returncode == 247 and "no process of it to signal" in run.stderr, run
        assert holder.poll() is None
    finally:
        holder.kill()
        holder.wait()


def _evil_flavor(tmp_path: Path) -> str:
    """A stage1 "flavor" outside podrun's stages/, as a relative name: its enter would leave a
    mark if it ran."""
    evil = tmp_path / "evil-flavor"
    evil.mkdir()
    (evil / "manifest.json").write_text('{"entrypoints": {"run": "enter", "enter": "enter"}}')
    (evil / "enter").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    return os.path.relpath(evil, stages_dir())


ENTER_CASES = [("pod.json", k) for k in ("truncated", "wrong-types", "fifo", "symlink-out", "deep", "huge",
                                         "flavor-outside")] + [
    ("pid", "fifo"), ("pid", "symlink-zero"), ("cgroups", "fifo"), ("cgroups", "directory"),
    ("cgroups", "wrong-types")]


@pytest.mark.parametrize(("rel", "kind"), ENTER_CASES, ids=[f"{r}-{k}" for r, k in ENTER_CASES])
def test_enter_a_damaged_pod(pods: Pods, running_long: tuple[subprocess.Popen[str], str, Path], tmp_path: Path,
                             rel: str, kind: str) -> None:
    _, uuid, path = running_long
    saved = (path / rel).read_bytes()
    if kind == "flavor-outside":
        manifest = json.loads(saved)
        (path / rel).write_text(json.dumps(dict(manifest, stage1=_evil_flavor(tmp_path))))
    else:
        damage(path, rel, kind, tmp_path / "outside")
    try:
        (run,) = run_all(pods, ("enter", uuid, "/bin/true"))
    finally:  # repaired, so that the pod can stop and be collected as usual
        if (path / rel).is_dir() and not (path / rel).is_symlink():
            (path / rel).rmdir()
        else:
            (path / rel).unlink()
        (path / rel).write_bytes(saved)
    assert_clean(run)
    one_error_line(run, uuid, rel)
    assert not (tmp_path / "ran").exists()
    assert pods.run("enter", uuid, "/bin/true").returncode == 0  # repaired: enter works again


def test_status_waits_on_a_damaged_running_pod(pods: Pods, running: tuple[subprocess.Popen[str], str, Path],
                                               tmp_path: Path) -> None:
    proc, uuid, path = running
    damage(path, "pid", "fifo", tmp_path)
    damage(path, "ready", "directory", tmp_path)
    (ready,) = run_all(pods, ("status", uuid, "--wait-ready"))
    assert_clean(ready)
    one_error_line(ready, uuid, "ready: is a directory")
    waiting = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "status", "--format", "json", uuid, "--wait"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pods.run("stop", uuid, check=True, timeout=TIMEOUT)
    out, err = waiting.communicate(timeout=TIMEOUT)
    assert waiting.returncode == 0 and proc.wait(timeout=10) == 128 + signal.SIGTERM
    doc = json.loads(out)
    assert doc["state"] == "exited" and doc["exit_code"] == 128 + signal.SIGTERM
    assert doc["errors"] == ["pid: is a FIFO", "ready: is a directory"]
    assert err == f"podrun: warning: pod {uuid}: pid: is a FIFO; ready: is a directory\n"


def test_wait_ready_ends_with_a_pod_that_ended_unready(pods: Pods, copy_pod: Callable[[], tuple[str, Path]]) -> None:
    """A pod whose supervisor was killed before its apps all started has neither ready nor
    finished: waiting for it to become ready must end (it never will)."""
    uuid, pod = copy_pod()
    (pod / "ready").unlink()
    (pod / "finished").unlink()
    (run,) = run_all(pods, ("status", uuid, "--wait-ready"))
    assert_clean(run)
    assert run.returncode == 0 and run.stdout.startswith("state=exited\n"), run


def test_wait_ready_follows_a_prepared_pod_into_run(pods: Pods) -> None:
    uuid = pods.run("prepare", "demo", "--exec", "/bin/sleep", "--", "600", check=True).stdout.strip()
    waiting = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "status", uuid, "--wait-ready=60s"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT  # run it once status polls the prepared pod (sleeps between looks)
    while Path(f"/proc/{waiting.pid}/wchan").read_text() != "hrtimer_nanosleep":
        assert time.monotonic() < deadline and waiting.poll() is None, "status --wait-ready did not wait"
        time.sleep(0.01)
    proc = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run-prepared", uuid], cwd=ROOT)
    try:
        out, err = waiting.communicate(timeout=TIMEOUT)
        assert waiting.returncode == 0 and out.startswith("state=running\n"), err
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
        pods.run("stop", uuid)
        proc.wait(timeout=TIMEOUT)
        pods.run("rm", uuid)


@pytest.mark.parametrize("kind", ["fifo", "symlink-out", "symlink-zero"])
def test_logs_follow_a_damaged_log(pods: Pods, running: tuple[subprocess.Popen[str], str, Path], tmp_path: Path,
                                   kind: str) -> None:
    _, uuid, path = running
    damage(path, f"apps/{APP}/log", kind, tmp_path / "outside")
    (run,) = run_all(pods, ("logs", "-f", uuid))
    assert_clean(run)
    one_error_line(run, uuid, f"apps/{APP}/log: is a ")


# -- rm (podrun/pod/gc.py) --------------------------------------------------------------------

RM_CASES = [
    ("cgroups", "fifo"), ("cgroups", "symlink-zero"), ("cgroups", "huge"),
    ("cgroups", "directory"), ("cgroups", "wrong-types"), ("net/state.json", "fifo"),
    ("net/state.json", "truncated"), ("pod.json", "fifo"), ("pid", "fifo"), ("status", "symlink-out"),
    ("net", "symlink-record"), ("pod", "symlink-out"),
]


@pytest.mark.parametrize(("rel", "kind"), RM_CASES, ids=lambda v: str(v))
def test_rm_a_damaged_pod(pods: Pods, copy_pod: Callable[[], tuple[str, Path]], tmp_path: Path,
                          rel: str, kind: str) -> None:
    """An exited pod is removed whatever is damaged in it, without acting outside it."""
    uuid, pod = copy_pod()
    victim = tmp_path / "victim"  # what a record outside the pod names
    victim.write_text("not podrun's\n")
    if kind == "symlink-record":
        outside = tmp_path / "net"
        outside.mkdir()
        (outside / "state.json").write_text(json.dumps({"netns": str(victim), "uuid": uuid, "networks": []}))
        shutil.rmtree(pod / "net")
        (pod / "net").symlink_to(outside)
    elif rel == "pod":
        pod.rename(tmp_path / "pod")
        pod.symlink_to(tmp_path / "pod")
    else:
        damage(pod, rel, kind, tmp_path / "outside")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    (run,) = run_all(pods, ("rm", uuid), timeout=10)
    assert_clean(run)
    assert run.returncode == 0 and run.stdout.endswith(f"removed pod {uuid}\n"), run
    assert not list((pods.data / "pods").glob(f"*/{uuid}"))
    assert victim.read_text() == "not podrun's\n" and sorted(p.name for p in tmp_path.rglob("*")) == before
