"""stage1 flavor ``oci`` on real OCI runtimes (issue 16): crun and runc, both installed by
scripts/install-deps.sh (this VM is a cgroup v1/v2 hybrid; crun then runs without the cgroup2
mount, podrun.pod.ociruntime).

The pod tests of test_run.py run here again, unchanged, on each runtime: what a user sees
(exit codes, namespaces, mounts, identity, volumes, stop, kill -9, cgroups) must not depend
on the flavor.  The tests below are the flavor's own: the bundles it writes, the runtime's
state and its removal, enter through ``RUNTIME exec``, and the refusals.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.schemas import validate
from tests.integration.test_run import (  # noqa: F401  (collected here again, with this module's `pods`)
    Pods,
    demo_pods,
    test_an_app_that_ignores_the_stop_is_killed_after_the_stop_timeout,
    test_apps_share_net_ipc_uts_not_root,
    test_cgroup_limits_and_cleanup,
    test_default_hardening,
    test_dev_proc_sys,
    test_exit_codes,
    test_mount_target_symlink_cannot_escape,
    test_namespaces_and_hostname,
    test_no_host_fds_or_cwd,
    test_prepare_and_run_prepared_once,
    test_proc_self_exe_and_init_unreachable,
    test_supervisor_kill9_kills_apps,
    test_users_groups_env,
    test_volumes_and_readonly_rootfs,
    test_written_manifests_match_the_schema,
)

RUNTIMES = ("crun", "runc")


def state_root(runtime: str) -> Path:
    return Path(os.environ.get("PODRUN_RUNTIME_DIR", "/run/podrun")) / "oci" / runtime


class OciPods(Pods):
    """The demo pods of test_run.py, run by ``--stage1 oci --runtime RUNTIME``."""

    runtime: str = "crun"

    def flags(self) -> tuple[str, ...]:
        return ("--stage1", "oci", "--runtime", self.runtime)

    def run(self, *args: str, check: bool = False, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
        if args and args[0] in ("run", "prepare") and "--stage1" not in args:
            args = (args[0], *self.flags(), *args[1:])
        return super().run(*args, check=check, timeout=timeout, **kw)

    def start(self, *args: str, stdout: int | None = None) -> tuple[subprocess.Popen[str], str, Path]:
        return super().start(*self.flags(), *args, stdout=stdout)


@pytest.fixture(scope="module", params=RUNTIMES)
def pods(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciPods]:
    runtime = request.param
    if shutil.which(runtime) is None and not Path(f"/usr/sbin/{runtime}").exists():
        pytest.fail(f"{runtime} is not installed (scripts/install-deps.sh installs it)")
    base = tmp_path_factory.mktemp(f"oci-{runtime}")
    plain = demo_pods(base)
    p = OciPods(plain.data)
    p.runtime = runtime
    yield p
    uuids = p.cleanup()
    assert p.run("list", "--format", "json").stdout.strip() == "[]"
    left = [str(c) for u in uuids for c in Path("/sys/fs/cgroup").glob(f"**/pod-{u}")]
    assert left == [], left
    states = [c.name for u in uuids for c in state_root(runtime).glob(f"podrun-{u}-*")]
    assert states == [], states
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(base) in line]


def _pod_dir(pods: OciPods, uuid: str) -> Path:
    [path] = (pods.data / "pods").glob(f"*/{uuid}")
    return path


def test_each_app_is_a_bundle_joining_pid_1s_namespaces(pods: OciPods) -> None:
    proc, uuid, pod = pods.start("demo", "--name", "web", "--exec", "/bin/sleep", "--", "300",
                                 "---", "demo", "--name", "side", "--exec", "/bin/sleep", "--", "300")
    try:
        init_pid = int((pod / "pid").read_text())
        manifest = json.loads((pod / "pod.json").read_text())
        validate(manifest, "pod-manifest")
        assert manifest["stage1"] == "oci" and os.path.basename(manifest["runtime"]) == pods.runtime
        for app in ("web", "side"):
            config = json.loads((pod / "apps" / app / "oci" / "config.json").read_text())
            validate(config, "runtime-spec-config")
            joined = {ns["type"]: ns.get("path") for ns in config["linux"]["namespaces"]}
            assert joined == {"pid": f"/proc/{init_pid}/ns/pid", "ipc": f"/proc/{init_pid}/ns/ipc",
                              "uts": f"/proc/{init_pid}/ns/uts", "network": f"/proc/{init_pid}/ns/net",
                              "mount": None, "cgroup": None}
            assert config["root"]["path"] == str(pod / "apps" / app / "rootfs")
            assert (state_root(pods.runtime) / f"podrun-{uuid}-{app}").is_dir()
        # pid 1 is catatonit; both apps are the supervisor's children (a subreaper), in pid 1's namespaces
        assert Path(f"/proc/{init_pid}/cmdline").read_bytes() == b"catatonit\0-P\0"
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 3 and str(init_pid) in children, children
        for child in children:  # pid 1 and both apps
            for ns in ("pid", "net", "ipc", "uts"):
                assert os.readlink(f"/proc/{child}/ns/{ns}") == os.readlink(f"/proc/{init_pid}/ns/{ns}"), (child, ns)
            assert os.readlink(f"/proc/{child}/ns/pid") != os.readlink("/proc/self/ns/pid")
        assert pods.run("stop", uuid).returncode == 0
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # the supervisor deleted the containers
    assert not list(state_root(pods.runtime).glob(f"podrun-{uuid}-*"))
    for app in ("web", "side"):
        record = json.loads((_pod_dir(pods, uuid) / "status" / app).read_text())
        assert (record["exit_code"], record["signal"]) == (143, 15)


def test_stop_sends_each_app_its_stop_signal(pods: OciPods) -> None:
    script = "trap 'echo got-HUP; exit 7' HUP; echo up; while :; do sleep 0.05; done"
    proc, uuid, _ = pods.start("demo", "--stop-signal", "SIGHUP", "--exec", "/bin/sh", "--", "-c", script,
                               stdout=subprocess.PIPE)
    assert pods.run("stop", uuid).returncode == 0
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 7 and out.split() == ["up", "got-HUP"], out
    logs = pods.run("logs", uuid)
    assert logs.returncode == 0 and logs.stdout.split() == ["up", "got-HUP"], logs


def test_output_and_logs_of_every_app(pods: OciPods) -> None:
    res = pods.run("run", "--uuid-file-save", str(pods.data.parent / "logs-uuid"),
                   "demo", "--name", "a", "--exec", "/bin/sh", "--", "-c", "echo out-a; echo err-a >&2",
                   "---", "demo", "--name", "b", "--exec", "/bin/sh", "--", "-c", "echo out-b")
    assert res.returncode == 0, res.stderr
    assert sorted(res.stdout.splitlines()) == ["a | out-a", "b | out-b"] and res.stderr.splitlines() == ["a | err-a"]
    uuid = (pods.data.parent / "logs-uuid").read_text().strip()
    assert pods.run("logs", "--app", "a", uuid).stdout.split() == ["out-a", "err-a"]
    assert sorted(pods.run("logs", uuid).stdout.splitlines()) == ["a | err-a", "a | out-a", "b | out-b"]


def test_stdin_of_an_interactive_pod_is_the_callers(pods: OciPods) -> None:
    res = pods.run("run", "--interactive", "demo", "--exec", "/bin/sh", "--", "-c", "read x; echo got-$x",
                   input="hello\n")
    assert res.returncode == 0 and res.stdout.split() == ["got-hello"], res


def test_enter_runs_with_the_apps_settings_and_its_exit_code(pods: OciPods) -> None:
    proc, uuid, _ = pods.start("demo", "--user", "nobody", "--exec", "/bin/sleep", "--", "300")
    try:
        res = pods.run("enter", uuid, "/bin/sh", "-c",
                       "id -u; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status; ps -o pid,args; exit 9",
                       stdin=subprocess.DEVNULL)
        assert res.returncode == 9, res.stderr
        lines = res.stdout.splitlines()
        assert lines[0] == "65534"
        status = dict(line.split(":\t") for line in lines[1:4])
        assert status == {"CapEff": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
        assert "catatonit -P" in res.stdout and "sleep 300" in res.stdout  # the pod's PID namespace
        missing = pods.run("enter", uuid, "/nope", stdin=subprocess.DEVNULL)
        assert missing.returncode != 0
    finally:
        pods.run("stop", uuid)
        proc.wait(timeout=30)


def test_kill9_of_the_supervisor_then_gc_leaves_nothing(pods: OciPods) -> None:
    proc, uuid, pod = pods.start("demo", "--exec", "/bin/sleep", "--", "300")
    init_pid = int((pod / "pid").read_text())
    app = [int(c) for c in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split() if int(c) != init_pid]
    assert (state_root(pods.runtime) / f"podrun-{uuid}-demo").is_dir()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in [init_pid, *app]):
        assert time.monotonic() < deadline, "the pod outlived its supervisor"
        time.sleep(0.01)
    out = pods.run("gc", "--grace-period", "0s", check=True).stdout
    assert f"deleted container podrun-{uuid}-demo ({pods.runtime})" in out, out
    assert not (state_root(pods.runtime) / f"podrun-{uuid}-demo").exists()
    assert not list(Path("/sys/fs/cgroup").glob(f"**/pod-{uuid}"))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_command_that_cannot_run_is_said_as_in_the_default_flavor(pods: OciPods) -> None:
    for command, code, reason in (("/nope", 127, "No such file or directory"), ("nope", 127, "No such file"),
                                  ("/etc", 126, "Permission denied")):
        oci = pods.run("run", "demo", "--exec", command)
        default = pods.run("run", "--stage1", "default", "demo", "--exec", command)
        assert (oci.returncode, oci.stderr) == (default.returncode, default.stderr) == (
            code, f"podrun: app demo: cannot execute {command!r}: {os.strerror(2) if code == 127 else reason}\n")
    oci = pods.run("run", "demo", "--user", "nosuchuser", "--exec", "/bin/true")
    default = pods.run("run", "--stage1", "default", "demo", "--user", "nosuchuser", "--exec", "/bin/true")
    assert (oci.returncode, oci.stderr) == (default.returncode, default.stderr) == (
        254, "podrun: app demo: setting up: user 'nosuchuser' not found in the image's /etc/passwd\n")


def test_an_apps_own_seccomp_filter_is_the_runtimes_too(pods: OciPods) -> None:
    """stage0 writes the app's filter (here the default one less mkdir, refused with EACCES) in
    runtime-spec form; the runtime applies it, and the app sees what it sees in the default
    flavor."""
    script = "mkdir /tmp/x; echo $?; grep Seccomp: /proc/self/status"
    flags = ("--seccomp", "mode=remove,mkdir,mkdirat,errno=EACCES")
    oci = pods.sh(script, app_flags=flags)
    default = pods.sh(script, "--stage1", "default", app_flags=flags)
    assert (oci.returncode, oci.stdout, oci.stderr) == (default.returncode, default.stdout, default.stderr)
    assert oci.stdout.split() == ["1", "Seccomp:", "2"] and "Permission denied" in oci.stderr, oci


def test_refusals_are_one_line(pods: OciPods) -> None:
    cases = (
        (("run", "--runtime", "nosuch-runtime", "demo"), 252, "--runtime nosuch-runtime: the OCI runtime is not installed"),
        (("run", "--runtime", "/nonexistent/crun", "demo"), 252, "no executable file there"),
        (("run", "--stage1", "default", "--runtime", "crun", "demo"), 253, "needs --stage1 oci"),
    )
    before = sorted((pods.data / "pods").glob("*/*"))
    for args, code, words in cases:
        res = pods.run(*args)
        assert res.returncode == code and words in res.stderr, (args, res)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert sorted((pods.data / "pods").glob("*/*")) == before  # refused before any pod was written


def test_gvisor_runs_pods_without_a_network() -> None:
    """gVisor's runsc (Debian's package): each app is a sandbox with a kernel of its own, so
    apps do not share the pod's PID namespace (runsc does not join one by path) and ``enter``
    is not available; exit codes, output, stop and collection are the flavor's.  Pods with a
    network are refused at once (stage0.runtime.check_network)."""
    if shutil.which("runsc") is None:
        pytest.fail("runsc is not installed (scripts/install-deps.sh installs it)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="podrun-runsc-") as tmp:
        p = OciPods(demo_pods(Path(tmp)).data)
        p.runtime = "runsc"
        try:
            res = p.run("run", "--net", "none", "demo", "--exec", "/bin/sh", "--", "-c", "echo in-gvisor; uname -r; exit 5")
            assert res.returncode == 5 and res.stdout.split()[0] == "in-gvisor", res
            assert res.stdout.split()[1] != os.uname().release  # gVisor's own kernel
            refused = p.run("run", "demo", "--exec", "/bin/true")
            assert refused.returncode == 253 and "--net none only" in refused.stderr, refused
            proc, uuid, _ = p.start("--net", "none", "demo", "--exec", "/bin/sleep", "--", "300")
            assert p.run("stop", uuid).returncode == 0
            assert proc.wait(timeout=60) == 143
            proc, uuid, _ = p.start("--net", "none", "demo", "--exec", "/bin/sleep", "--", "300")
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            out = p.run("gc", "--grace-period", "0s", check=True).stdout
            assert f"deleted container podrun-{uuid}-demo (runsc)" in out, out
        finally:
            uuids = p.cleanup()
        assert not [s for u in uuids for s in state_root("runsc").glob(f"podrun-{u}-*")]
        assert not [c for u in uuids for c in Path("/sys/fs/cgroup").glob(f"**/pod-{u}")]

