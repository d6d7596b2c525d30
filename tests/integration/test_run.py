"""``podrun run`` on the real kernel: namespaces, mounts, identity, exit codes, pod lifecycle
(SECURITY-TESTS cases 11–16).  Uses the demo image (all busybox applets)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, require_root

PODRUN = [sys.executable, "-m", "podrun"]


@dataclass
class Pods:
    data: Path

    def run(self, *args: str, check: bool = False, timeout: float = 120, **kw: object) -> subprocess.CompletedProcess[str]:
        kw.setdefault("cwd", ROOT)
        proc = subprocess.run([*PODRUN, "--dir", str(self.data), *args], capture_output=True, text=True,
                              timeout=timeout, **kw)  # type: ignore[call-overload]
        if check and proc.returncode != 0:
            raise AssertionError(f"podrun {args} -> {proc.returncode}: {proc.stderr}")
        return proc  # type: ignore[no-any-return]

    def cleanup(self) -> list[str]:
        """Stop every running pod (even after a failed test), then gc everything; returns the
        UUIDs that existed."""
        import json

        listed = self.run("list", "--format", "json")
        pods = json.loads(listed.stdout) if listed.returncode == 0 else []
        running = [p["uuid"] for p in pods if p["state"] == "running"]
        if running:
            self.run("stop", "--force", *running)
        self.run("gc", "--grace-period", "0s", "--expire-prepared", "0s")
        return [p["uuid"] for p in pods]

    def start(self, *args: str, stdout: int | None = None) -> tuple[subprocess.Popen[str], str, Path]:
        """Start ``podrun run ARGS…`` in the background; return it once all apps have started."""
        uuid_file = self.data.parent / f"uuid-{time.monotonic_ns()}"
        proc = subprocess.Popen([*PODRUN, "--dir", str(self.data), "run", "--uuid-file-save", str(uuid_file), *args],
                                cwd=ROOT, stdout=stdout, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not uuid_file.exists():
            assert time.monotonic() < deadline and proc.poll() is None, "pod did not start"
            time.sleep(0.02)
        uuid = uuid_file.read_text().strip()
        assert self.run("status", "--wait-ready=20s", uuid).returncode == 0
        return proc, uuid, self.data / "pods" / "run" / uuid

    def sh(self, script: str, *run_flags: str, app_flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return self.run("run", *run_flags, "demo", "--exec", "/bin/sh", *app_flags, "--", "-c", script)


def demo_pods(base: Path) -> Pods:
    """A data dir under *base* holding the demo image (every busybox applet) as ``demo``."""
    require_root()
    rootfs = subprocess.run(["bash", str(ROOT / "demo" / "build-rootfs.sh"), str(base / "rootfs")],
                            check=True, capture_output=True, text=True).stdout.strip()
    p = Pods(base / "data")
    p.run("image", "import", rootfs, "demo", check=True)
    return p


def module_pods(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Pods]:
    """The body of a module's ``pods`` fixture: demo pods in a fresh data dir; at the end every
    pod is stopped and collected, and none may be listed any more."""
    p = demo_pods(tmp_path_factory.mktemp(name))
    yield p
    p.cleanup()
    assert p.run("list", "--format", "json").stdout.strip() == "[]"


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    base = tmp_path_factory.mktemp("run")
    p = demo_pods(base)
    yield p
    # every pod the tests made, even one whose supervisor was killed, is collected by one gc
    uuids = p.cleanup()
    assert p.run("list", "--format", "json").stdout.strip() == "[]"
    left = [str(c) for u in uuids for c in Path("/sys/fs/cgroup").glob(f"**/pod-{u}")]
    assert left == [], left
    assert p.run("gc", "--grace-period", "0s").stdout == ""  # a second gc changes nothing
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(base) in line]


def test_exit_codes(pods: Pods) -> None:
    assert pods.sh("exit 0").returncode == 0
    assert pods.sh("exit 3").returncode == 3
    assert pods.sh("kill -9 $$").returncode == 128 + 9
    res = pods.run("run", "demo", "--exec", "/nope")
    assert res.returncode == 127 and "/nope" in res.stderr
    multi = pods.run("run", "demo", "--exec", "/bin/sh", "--", "-c", "sleep 30", "---",
                     "demo", "--exec", "/bin/sh", "--", "-c", "exit 5")
    assert multi.returncode == 5  # the failing app's code; the other app was stopped
    ok = pods.run("run", "demo", "--exec", "/bin/true", "---", "demo", "--exec", "/bin/true")
    assert ok.returncode == 0


def test_an_app_that_ignores_the_stop_is_killed_after_the_stop_timeout(pods: Pods) -> None:
    """rkt's exit rule: app a fails, the supervisor sends app b SIGTERM, which b ignores; the
    stop timeout (SIGALRM, taken through the supervisor's signalfd) then kills it."""
    mount = ("--mount", "volume=v,target=/shared")
    res = pods.run(
        "run", "--volume", "v,kind=empty", "--uuid-file-save", str(pods.data / "uuid"),
        "demo", "--name", "a", *mount, "--exec", "/bin/sh", "--", "-c",
        "while [ ! -e /shared/ready ]; do sleep 0.05; done; exit 3",
        "---", "demo", "--name", "b", *mount, "--exec", "/bin/sh", "--", "-c",
        "trap '' TERM; touch /shared/ready; while :; do sleep 1; done",
        check=False, timeout=120,
    )
    assert res.returncode == 3, res.stderr
    uuid = (pods.data / "uuid").read_text().strip()
    [status] = (pods.data / "pods").glob(f"*/{uuid}/status/b")
    assert json.loads(status.read_text())["signal"] == 9


def test_namespaces_and_hostname(pods: Pods) -> None:
    res = pods.sh("for n in mnt pid net ipc uts; do readlink /proc/self/ns/$n; done; hostname; cat /etc/hostname; "
                  "cat /etc/hosts; echo pid=$$", "--hostname", "web")
    lines = res.stdout.split()
    host = [os.readlink(f"/proc/self/ns/{n}") for n in ("mnt", "pid", "net", "ipc", "uts")]
    assert all(a != b for a, b in zip(lines[:5], host, strict=True)), (lines, host)
    assert lines[5] == "web" and lines[6] == "web"
    assert "web" in res.stdout.split("pid=")[0]
    assert re.search(r"pid=(\d+)", res.stdout) and int(re.search(r"pid=(\d+)", res.stdout).group(1)) < 10  # type: ignore[union-attr]
    net_host = pods.sh("readlink /proc/self/ns/net", "--net", "host")
    assert net_host.stdout.strip() == os.readlink("/proc/self/ns/net")


def test_apps_share_net_ipc_uts_not_root(pods: Pods) -> None:
    script = "for n in net ipc uts mnt; do readlink /proc/self/ns/$n; done; "
    res = pods.run(
        "run", "demo", "--name", "a", "--exec", "/bin/sh", "--", "-c", script + "touch /tmp/from-a; sleep 0.5",
        "---", "demo", "--name", "b", "--exec", "/bin/sh", "--", "-c",
        "sleep 0.3; " + script + "test -e /tmp/from-a && echo SEEN || echo NOT-SEEN",
    )
    assert res.returncode == 0, res.stderr
    a, b = (tagged_lines(res.stdout, name) for name in ("a", "b"))  # several apps: each line tagged
    assert len(a) == 4 and len(b) == 5, res.stdout
    assert a[:3] == b[:3] and a[3] != b[3]
    assert b[4] == "NOT-SEEN"


def tagged_lines(out: str, app: str) -> list[str]:
    """The lines a pod of several apps forwarded for *app* (``NAME | line``), untagged; no line
    may be untagged."""
    lines = out.splitlines()
    assert all(" | " in line for line in lines), out
    return [line.split(" | ", 1)[1] for line in lines if line.startswith(f"{app} | ")]


def test_dev_proc_sys(pods: Pods) -> None:
    res = pods.sh("ls /dev; echo ---; cat /proc/kcore | wc -c; cat /proc/keys | wc -c; ls /sys/firmware | wc -l; "
                  "echo ---; echo x > /proc/sys/kernel/hostname && echo W1; echo 1 > /proc/sysrq-trigger && echo W2; "
                  "touch /sys/kernel/x && echo W3; mknod /tmp/n c 1 3 && cat /tmp/n && echo W4; echo done")
    dev, masked, writes = res.stdout.split("---")
    assert sorted(dev.split()) == sorted(["fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm",
                                          "stderr", "stdin", "stdout", "tty", "urandom", "zero"])
    assert masked.split() == ["0", "0", "0"]
    assert writes.split() == ["done"], writes  # no write succeeded, no device usable
    mounts = pods.sh("cat /proc/self/mountinfo").stdout
    root = next(line for line in mounts.splitlines() if line.split()[4] == "/")
    assert "nodev" in root.split()[5]
    sys_line = next(line for line in mounts.splitlines() if line.split()[4] == "/sys")
    assert sys_line.split()[5].startswith("ro")


def test_default_hardening(pods: Pods) -> None:
    res = pods.sh("grep -E '^(Cap|NoNewPrivs)' /proc/self/status")
    status = dict(line.split(":\t") for line in res.stdout.splitlines())
    default_mask = "00000000800405fb"  # podman's 11 capabilities
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == default_mask
    assert status["CapInh"] == status["CapAmb"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1"
    opt_out = pods.sh("grep NoNewPrivs /proc/self/status", app_flags=("--no-new-privileges=false",))
    assert opt_out.stdout.split() == ["NoNewPrivs:", "0"]
    retained = pods.sh("grep CapEff /proc/self/status", app_flags=("--caps-retain", "CAP_CHOWN,net_bind_service"))
    assert retained.stdout.split()[1] == f"{(1 << 0) | (1 << 10):016x}"
    removed = pods.sh("grep CapEff /proc/self/status", app_flags=("--caps-remove", "CAP_KILL"))
    assert int(removed.stdout.split()[1], 16) == int(default_mask, 16) & ~(1 << 5)


def test_no_host_fds_or_cwd(pods: Pods) -> None:
    extra = os.open("/etc/hostname", os.O_RDONLY)  # inheritable by the podrun process
    os.set_inheritable(extra, True)
    try:
        res = pods.run("run", "demo", "--exec", "/bin/sh", "--", "-c", "ls /proc/self/fd; pwd",
                       pass_fds=(extra,), cwd="/etc", env={**os.environ, "PYTHONPATH": str(ROOT)})  # this tree's podrun
    finally:
        os.close(extra)
    fds = res.stdout.split()[:-1]
    assert set(fds) <= {"0", "1", "2", "3"}, fds  # 3 is ls's own directory fd
    assert res.stdout.split()[-1] == "/"


@pytest.mark.parametrize("flavor", ["default", "fly", "oci"])
def test_the_manifest_handed_to_stage1_never_reaches_the_app(pods: Pods, flavor: str) -> None:
    """stage0 hands stage1 the manifest in a memfd (PODRUN_MANIFEST_FD): stage1 closes it and
    drops the variable before any app runs, in both flavors (fly's app inherits the lock fd)."""
    res = pods.sh("ls -l /proc/self/fd/; env; echo END", "--stage1", flavor)
    assert res.returncode == 0 and res.stdout.split()[-1] == "END", res.stderr
    assert "memfd" not in res.stdout and "PODRUN_MANIFEST_FD" not in res.stdout, res.stdout


def test_users_groups_env(pods: Pods) -> None:
    res = pods.sh("id -u; id -g; echo $HOME", app_flags=("--user", "nobody"))
    assert res.stdout.split() == ["65534", "65534", "/"]
    res = pods.sh("id -u; id -g; id -G", app_flags=("--user", "1234", "--group", "nogroup",
                                                    "--supplementary-gids", "5,7"))
    assert res.stdout.split()[:2] == ["1234", "65534"] and {"5", "7"} <= set(res.stdout.split()[2:])
    bad = pods.sh("true", app_flags=("--user", "nosuchuser"))
    assert bad.returncode == 254 and "nosuchuser" in bad.stderr
    env_file = pods.data.parent / "env"
    env_file.write_text("A=file\nB=file\nC=file\n")
    res = pods.sh("echo $A $B $C $PATH", "--set-env-file", str(env_file), "--set-env", "B=set", "--set-env", "C=set",
                  app_flags=("--environment", "C=app"))
    assert res.stdout.split() == ["file", "set", "app", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


def test_volumes_and_readonly_rootfs(pods: Pods, tmp_path: Path) -> None:
    host = tmp_path / "shared"
    host.mkdir()
    (host / "in").write_text("from host\n")
    res = pods.sh("cat /data/in; echo out > /data/out; echo x > /ro/x || echo RO; echo s > /scratch/s && echo E",
                  "--volume", f"data,kind=host,source={host}", "--volume", f"ro,kind=host,source={host},readOnly=true",
                  "--volume", "scratch,kind=empty",
                  app_flags=("--mount", "volume=data,target=/data", "--mount", "volume=ro,target=/ro",
                             "--mount", "volume=scratch,target=/scratch"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["from", "host", "RO", "E"]
    assert (host / "out").read_text() == "out\n" and not (host / "x").exists()
    ro = pods.sh("touch /newfile && echo WROTE; touch /tmp/t && echo TMP; echo STARTED",
                 app_flags=("--readonly-rootfs",))
    assert ro.returncode == 0, ro.stderr  # the pod started and its app ran to the end
    assert ro.stdout.split() == ["STARTED"], ro.stdout
    assert ro.stderr.count("Read-only file system") == 2, ro.stderr


def test_proc_self_exe_and_init_unreachable(pods: Pods) -> None:
    exe = os.path.realpath(sys.executable)
    before = Path(exe).stat()
    res = pods.sh("cat /proc/1/exe > /dev/null && echo READ; echo x >> /proc/1/exe && echo WROTE; "
                  "ls /proc/1/root/ >/dev/null 2>&1 && echo ROOT; echo done")
    assert res.stdout.split() == ["done"], res.stdout
    after = Path(exe).stat()
    assert (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)


def test_prepare_and_run_prepared_once(pods: Pods, tmp_path: Path) -> None:
    # The app says it runs, then waits for the test's word: the second run-prepared comes while
    # the first surely holds the pod, whatever the machine's speed.
    gate = tmp_path / "gate"
    gate.mkdir()
    uuid = pods.run("prepare", "--volume", f"gate,kind=host,source={gate}", "demo", "--exec", "/bin/sh",
                    "--mount", "volume=gate,target=/gate", "--",
                    "-c", "touch /gate/running; while [ ! -e /gate/go ]; do sleep 0.05; done; exit 4",
                    check=True).stdout.strip()
    assert re.fullmatch(r"[0-9a-f-]{36}", uuid)
    first = subprocess.Popen([*PODRUN, "--dir", str(pods.data), "run-prepared", uuid[:8]], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (gate / "running").exists():
            assert time.monotonic() < deadline and first.poll() is None, "the prepared pod did not start"
            time.sleep(0.02)
        second = pods.run("run-prepared", uuid)
        assert second.returncode == 247 and uuid in second.stderr
    finally:
        (gate / "go").touch()
    assert first.wait(timeout=60) == 4


def test_supervisor_kill9_kills_apps(pods: Pods, tmp_path: Path) -> None:
    proc, _, pod = pods.start("demo", "--exec", "/bin/sleep", "--", "300")
    init_pid = int((pod / "pid").read_text())
    # the apps are the supervisor's children, beside the pod's pid 1
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert str(init_pid) in children and len(children) == 2, children
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in [init_pid, *children]):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{p}").exists() for p in [init_pid, *children])


def test_fly_flavor_uses_host_namespaces(pods: Pods) -> None:
    res = pods.sh("readlink /proc/self/ns/pid; readlink /proc/self/ns/net; test -x /bin/busybox && echo CHROOT; exit 6",
                  "--stage1", "fly")
    assert res.returncode == 6, res.stderr
    assert res.stdout.split() == [os.readlink("/proc/self/ns/pid"), os.readlink("/proc/self/ns/net"), "CHROOT"]
    two = pods.run("run", "--stage1", "fly", "demo", "---", "demo")
    assert two.returncode == 253 and "exactly one app" in two.stderr


def test_bad_run_input_is_refused_cleanly(pods: Pods) -> None:
    before = sorted(p.name for p in (pods.data / "pods").rglob("*") if p.parent.parent == pods.data / "pods")
    for args, words in [
        (("run", "demo", "--memory", "lots"), "--memory"),
        (("run", "demo", "--bogus"), "--bogus"),
        (("run", "--volume", "v,kind=weird", "demo"), "kind"),
        (("run", "demo", "--mount", "volume=nope,target=/x"), "nope"),
        (("run", "--stage1", "nspawnx", "demo"), "nspawnx"),
        (("run", "demo", "--caps-retain", "CAP_FLY"), "CAP_FLY"),
        (("run", "demo", "--seccomp", "mode=remove,notasyscall"), "notasyscall"),
    ]:
        res = pods.run(*args)
        assert res.returncode == 253, (args, res.stderr)
        assert words in res.stderr.splitlines()[0] and "Traceback" not in res.stderr
    after = sorted(p.name for p in (pods.data / "pods").rglob("*") if p.parent.parent == pods.data / "pods")
    assert before == after  # refused before any pod directory was written


def _pod_manifests(pods: Pods) -> list[Path]:
    return sorted((pods.data / "pods").glob("*/*/pod.json"))


def test_written_manifests_match_the_schema(pods: Pods) -> None:
    import json

    import jsonschema

    schema = json.loads((ROOT / "podrun" / "schemas" / "pod-manifest.json").read_text())
    pods.run("prepare", "--volume", "v,kind=empty", "--hostname", "h", "demo", "--memory", "64M", "--cpu", "250m",
             "--pids-limit", "20", "--mount", "volume=v,target=/v", "--user", "nobody", "--seccomp",
             "mode=remove,keyctl", check=True)
    manifests = _pod_manifests(pods)
    assert manifests
    for path in manifests:
        jsonschema.validate(json.loads(path.read_text()), schema)


def test_mount_target_symlink_cannot_escape(pods: Pods, tmp_path: Path) -> None:
    """A volume target that is a symlink out of the root (runc CVE-2021-30465 class) lands inside."""
    from tests.fixtures import images as img

    name = f"podrun-escape-{os.getpid()}-{tmp_path.name}"  # names no other run or test uses
    layer = img.tar_bytes([*img.busybox_entries(), img.symlink("evil", f"/etc/{name}"),
                           img.symlink("up", "../../../../../tmp")])
    built = img.write_oci_layout(tmp_path / "l", [layer])
    pods.run("fetch", f"oci:{built.layout}", check=True)
    src = tmp_path / "vol"
    src.mkdir()
    (src / "marker").write_text("vol\n")
    assert not Path(f"/etc/{name}").exists() and not Path(f"/tmp/{name}").exists()
    res = pods.run("run", "--volume", f"v,kind=host,source={src}", built.manifest_digest, "--exec", "/bin/sh",
                   "--mount", "volume=v,target=/evil", "--mount", f"volume=v,target=/up/{name}", "--",
                   "-c", f"cat /etc/{name}/marker; cat /tmp/{name}/marker")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["vol", "vol"]
    assert not Path(f"/etc/{name}").exists() and not Path(f"/tmp/{name}").exists()


def test_interactive_uses_the_terminal(pods: Pods) -> None:
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [*PODRUN, "--dir", str(pods.data), "run", "--interactive", "demo", "--exec",
                                  "/bin/sh", "--", "-c", "test -t 0 && echo IS-TTY; read x; echo got-$x"])
    out = b""
    os.write(fd, b"hello\n")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and b"got-hello" not in out:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert b"IS-TTY" in out and b"got-hello" in out, out
    assert os.waitstatus_to_exitcode(status) == 0


def test_cgroup_limits_and_cleanup(pods: Pods, tmp_path: Path) -> None:
    import json

    proc, _, pod = pods.start("demo", "--exec", "/bin/sh", "--memory", "64M", "--cpu", "500m", "--pids-limit", "30",
                              "--", "-c", "cat /proc/self/cgroup; sleep 2", stdout=subprocess.PIPE)
    paths = json.loads((pod / "cgroups").read_text())
    values = {}
    for base in paths:
        app = Path(base) / "app-demo"
        for name in ("memory.limit_in_bytes", "memory.max", "cpu.cfs_quota_us", "cpu.max", "pids.max"):
            if (app / name).exists():
                values[name] = (app / name).read_text().split()
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert values.get("memory.limit_in_bytes", values.get("memory.max")) == [str(64 << 20)]
    assert values.get("cpu.cfs_quota_us", values.get("cpu.max", [""])[:1]) == ["50000"]
    assert values["pids.max"] == ["30"]
    # inside, the app's own cgroup is the namespace root
    assert all(line.endswith(":/") for line in out.splitlines() if "pids" in line or line.startswith("0::"))
    assert not any(Path(p).exists() for p in paths), "the pod's cgroups must be removed when it ends"


def test_image_gc_keeps_layers_of_existing_pods(pods: Pods, tmp_path: Path) -> None:
    from tests.fixtures import images as img

    built = img.write_oci_layout(tmp_path / "l", [img.tar_bytes([*img.busybox_entries(), img.file("only-here", b"x")])])
    image_id = pods.run("fetch", f"oci:{built.layout}", check=True).stdout.strip()
    uuid = pods.run("prepare", image_id, "--exec", "/bin/true", check=True).stdout.strip()
    pods.run("image", "rm", image_id, check=True)
    pods.run("image", "gc", check=True)
    layer = pods.data / "store" / "layers" / "sha256" / built.diff_ids[0].split(":")[1]
    assert layer.is_dir(), "a prepared pod's layer must survive image gc"
    assert pods.run("run-prepared", uuid).returncode == 0
    for sub in ("pods", "locks", "store"):
        assert (pods.data / sub).stat().st_mode & 0o077 == 0, sub
