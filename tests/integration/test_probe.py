"""The in-pod probe itself: it builds, and its report matches facts the host test can check directly.

Podrun's pod tests trust the probe's data, so the probe is checked here against ground truth: run on
the host, under util-linux's unshare/setpriv/chroot, and read back from the OCI image that ships it.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import pty
import resource
import shutil
import socket
import stat
import subprocess
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.images import file
from tests.fixtures.probe import (
    BUILD_DIR,
    build_probe,
    compile_probe,
    parse_probe,
    probe_check,
    probe_image,
)

NS_NAMES = ("mnt", "pid", "net", "ipc", "uts", "cgroup", "user", "time")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")


def run_probe(*args: str | bytes, prefix: Sequence[str] = (), check_rc: int | None = 0,
              **kwargs: Any) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run the probe (behind *prefix*, e.g. unshare) and return the process and its parsed report."""
    proc = subprocess.run([*prefix, str(build_probe()), *args], capture_output=True, text=True, timeout=60,
                          **kwargs)
    if check_rc is not None:
        assert proc.returncode == check_rc, proc.stderr
    return proc, parse_probe(proc.stdout)


def host_status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in /proc/self/status")


def host_ns() -> dict[str, str]:
    return {name: os.readlink(f"/proc/self/ns/{name}") for name in NS_NAMES}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-writable directory outside pytest's 0700 tmp tree, for checks run as nobody."""
    d = Path(tempfile.mkdtemp(prefix="probe-test-"))
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A root-owned process to ptrace or signal."""
    proc = subprocess.Popen(["sleep", "300"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- building


def test_probe_compiles_cleanly_with_warnings_as_errors(tmp_path: Path) -> None:
    proc = compile_probe(tmp_path / "probe", "-Werror")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_build_probe_caches_on_disk_by_source_hash() -> None:
    first = build_probe()
    mtime = first.stat().st_mtime_ns
    build_probe.cache_clear()
    second = build_probe()
    assert second == first
    assert second.stat().st_mtime_ns == mtime  # reused, not recompiled
    assert second.parent in (BUILD_DIR, Path(tempfile.gettempdir()) / "podrun-probe-build")
    assert os.access(second, os.X_OK)


def test_probe_is_statically_linked() -> None:
    # No PT_INTERP program header means no dynamic loader: the probe runs in any rootfs.
    data = build_probe().read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2  # 64-bit ELF
    phoff = int.from_bytes(data[0x20:0x28], "little")
    phentsize = int.from_bytes(data[0x36:0x38], "little")
    phnum = int.from_bytes(data[0x38:0x3A], "little")
    types = [int.from_bytes(data[phoff + i * phentsize:phoff + i * phentsize + 4], "little") for i in range(phnum)]
    assert 1 in types  # PT_LOAD: the parse found real headers
    assert 3 not in types  # PT_INTERP


# ---------------------------------------------------------------- report vs host facts


def test_host_report_matches_host_facts(tmp_path: Path) -> None:
    proc = subprocess.Popen([str(build_probe()), "--", "extra arg"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    report = parse_probe(stdout)

    assert report["pid"] == proc.pid
    assert report["ppid"] == os.getpid()
    assert (report["uid"], report["euid"], report["gid"], report["egid"]) == (
        os.getuid(), os.geteuid(), os.getgid(), os.getegid())
    assert sorted(report["groups"]) == sorted(os.getgroups())
    assert report["cwd"] == str(tmp_path)
    assert report["argv"] == [str(build_probe()), "--", "extra arg"]
    assert report["env"] == dict(os.environ)
    assert report["hostname"] == socket.gethostname() == os.uname().nodename
    assert report["ns"] == host_ns()
    assert report["no_new_privs"] == int(host_status("NoNewPrivs"))
    assert report["seccomp"] == int(host_status("Seccomp"))
    assert report["checks"] == {}
    assert "stdin" not in report and "isatty" not in report

    # Popen closes other fds, so the probe sees exactly stdin/stdout/stderr.
    assert sorted(fd["fd"] for fd in report["fds"]) == [0, 1, 2]
    assert all(fd["target"].startswith(("pipe:", "/dev/")) for fd in report["fds"])

    mounts = {m["mount_point"]: m for m in report["mounts"]}
    assert "/" in mounts
    assert mounts["/proc"]["fs_type"] == "proc"
    assert all(set(m) == {"mount_point", "root", "fs_type", "source", "options", "super_options"}
               for m in report["mounts"])

    dev = {d["name"]: d for d in report["dev"]}
    assert dev["null"] == {"name": "null", "type": "char", "major": 1, "minor": 3}
    names = [d["name"] for d in report["dev"]]
    assert names == sorted(names)
    assert dev["pts"]["type"] == "dir"
    assert dev["fd"] == {"name": "fd", "type": "link", "target": "/proc/self/fd"}

    assert report["cgroup"] == Path("/proc/self/cgroup").read_text().splitlines()
    assert set(report["cgroup_limits"]) == {"v1", "v2"}
    for name in ("NOFILE", "NPROC", "CORE", "STACK"):
        res = getattr(resource, f"RLIMIT_{name}")
        assert report["rlimits"][name] == list(resource.getrlimit(res))


def test_capabilities_as_root_are_the_full_bounding_set() -> None:
    require_root()
    _, report = run_probe()
    caps = report["caps"]
    # Root's permitted/effective set after execve is its bounding set (not necessarily all 41 bits:
    # this host drops some from the bounding set), and inheritable/ambient stay empty.
    assert caps["bnd"] == host_status("CapBnd")
    assert caps["eff"] == caps["prm"] == caps["bnd"]
    assert int(caps["eff"], 16) != 0
    assert caps["inh"] == caps["amb"] == "0" * 16


def test_passed_fd_is_listed_with_its_target(tmp_path: Path) -> None:
    target = tmp_path / "held open"
    with target.open("w") as f:
        _, report = run_probe(pass_fds=(f.fileno(),))
        fds = {fd["fd"]: fd["target"] for fd in report["fds"]}
        assert fds[f.fileno()] == str(target)
        assert set(fds) == {0, 1, 2, f.fileno()}


def test_namespaces_differ_under_unshare() -> None:
    require_root()
    prefix = ["unshare", "--mount", "--uts", "--ipc", "--pid", "--fork", "--net", "--mount-proc"]
    _, report = run_probe("--try-kill", str(os.getpid()), "--try-kill", "1", prefix=prefix)
    host = host_ns()
    for name in ("mnt", "pid", "net", "ipc", "uts"):
        assert report["ns"][name] != host[name], name
        assert report["ns"][name].startswith(f"{name}:[")
    for name in ("user", "cgroup", "time"):
        assert report["ns"][name] == host[name], name
    assert report["pid"] == 1
    assert probe_check(report, f"kill:{os.getpid()}")["errno"] == errno.ESRCH  # host pids are invisible
    assert probe_check(report, "kill:1")["ok"] is True


def test_hostname_set_in_own_uts_namespace() -> None:
    require_root()
    script = f'hostname probe-uts-test && exec "{build_probe()}"'
    proc = subprocess.run(["unshare", "--uts", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert parse_probe(proc.stdout)["hostname"] == "probe-uts-test"
    assert socket.gethostname() != "probe-uts-test"


def test_mounts_show_options_and_escaped_mount_points(tmp_path: Path) -> None:
    require_root()
    target = tmp_path / "ro mnt\tpoint"
    target.mkdir()
    # unshare --mount makes the new namespace private: the tmpfs vanishes with the process.
    script = f'mount -t tmpfs -o ro,size=64k probe-src "$1" && exec "{build_probe()}" --try-write "$1/new"'
    proc = subprocess.run(["unshare", "--mount", "sh", "-c", script, "sh", str(target)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = parse_probe(proc.stdout)
    mount = next(m for m in report["mounts"] if m["mount_point"] == str(target))
    assert mount["fs_type"] == "tmpfs"
    assert mount["source"] == "probe-src"
    assert "ro" in mount["options"].split(",")
    assert probe_check(report, f"write:{target}/new")["errno"] == errno.EROFS
    assert not os.path.ismount(target)


# ---------------------------------------------------------------- checks


def test_checks_as_root(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    require_root()
    owned = tmp_path / "owned"
    owned.write_bytes(b"x")
    owned.chmod(0o4755)
    created = tmp_path / "created"
    node = tmp_path / "node"
    _, report = run_probe(
        "--try-read", "/proc/self/status", "--try-read", str(tmp_path / "missing"), "--try-read", str(tmp_path),
        "--try-write", str(created), "--try-mount", "--try-unshare", "--try-setuid0", "--try-mknod", str(node),
        "--try-chown", str(owned), "--try-kill", str(sleeper.pid), "--try-ptrace-attach", str(sleeper.pid),
        "--try-keyctl", "--try-bpf", "--try-socket-vsock", "--try-clone-newuser",
    )
    assert probe_check(report, "read:/proc/self/status") == {"ok": True, "errno": 0, "error": "", "bytes": 16}
    assert probe_check(report, f"read:{tmp_path}/missing") == {
        "ok": False, "errno": errno.ENOENT, "error": os.strerror(errno.ENOENT)}
    listing = probe_check(report, f"read:{tmp_path}")
    assert listing["ok"] and listing["entries"] == 1  # "owned": checks run in argv order, before --try-write
    assert probe_check(report, f"write:{created}")["ok"] and created.exists()
    mount = probe_check(report, "mount")
    assert mount["ok"], mount
    assert not os.path.exists(mount["path"])  # unmounted and removed again
    for key in ("unshare", "setuid0", f"mknod:{node}", f"chown:{owned}", f"kill:{sleeper.pid}",
                f"ptrace-attach:{sleeper.pid}"):
        assert probe_check(report, key)["ok"], (key, report["checks"][key])
    assert not node.exists()
    st = owned.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o4755)  # owner and setuid bit restored
    assert sleeper.poll() is None  # kill used signal 0 and ptrace detached
    for key in ("keyctl", "bpf", "socket-vsock", "clone-newuser"):
        result = probe_check(report, key)
        assert set(result) == {"ok", "errno", "error"}
        assert result["ok"] == (result["errno"] == 0) == (result["error"] == "")


def test_checks_as_nobody_are_denied(shared_dir: Path, sleeper: subprocess.Popen[bytes]) -> None:
    require_root()
    mine = shared_dir / "mine"
    mine.write_bytes(b"x")
    os.chown(mine, 65534, 65534)
    secret = shared_dir / "secret"
    secret.write_bytes(b"root only")
    secret.chmod(0o600)
    _, report = run_probe(
        "--try-setuid0", "--try-mount", "--try-unshare", "--try-mknod", str(shared_dir / "node"),
        "--try-chown", str(mine), "--try-read", str(secret), "--try-kill", str(sleeper.pid),
        "--try-ptrace-attach", str(sleeper.pid), "--try-write", str(shared_dir / "new"),
        prefix=[*NOBODY, "--no-new-privs"],
    )
    assert (report["uid"], report["euid"], report["gid"], report["groups"]) == (65534, 65534, 65534, [])
    assert report["caps"]["eff"] == report["caps"]["prm"] == "0" * 16
    assert report["no_new_privs"] == 1
    for key in ("setuid0", "mount", "unshare", f"mknod:{shared_dir}/node", f"chown:{mine}",
                f"kill:{sleeper.pid}", f"ptrace-attach:{sleeper.pid}"):
        result = probe_check(report, key)
        assert (result["ok"], result["errno"], result["error"]) == (False, errno.EPERM, os.strerror(errno.EPERM)), key
    assert probe_check(report, f"read:{secret}")["errno"] == errno.EACCES
    assert probe_check(report, f"write:{shared_dir}/new")["ok"]
    assert (shared_dir / "new").stat().st_uid == 65534
    assert mine.stat().st_uid == 65534
    assert not (shared_dir / "node").exists()


def test_no_new_privs_under_setpriv() -> None:
    _, report = run_probe(prefix=["setpriv", "--no-new-privs"])
    assert report["no_new_privs"] == 1


def test_repeated_check_keeps_one_key(tmp_path: Path) -> None:
    path = tmp_path / "later"
    proc, report = run_probe("--try-read", str(path), "--write-file", str(path), "hi", "--try-read", str(path))
    assert probe_check(report, f"read:{path}")["ok"]  # the later result replaced the ENOENT one
    assert proc.stdout.count(f'"read:{path}"') == 1


# ---------------------------------------------------------------- control flags


def test_exit_code() -> None:
    _, report = run_probe("--exit", "7", check_rc=7)
    assert report["pid"] > 0


@pytest.mark.parametrize("name", ["TERM", "SIGTERM", "15"])
def test_signal_self(name: str) -> None:
    _, report = run_probe("--signal-self", name, check_rc=-15)
    assert report["argv"][-1] == name


def test_signal_self_as_pid1_exits_with_128_plus_signal() -> None:
    require_root()
    # pid 1 of a pid namespace ignores signals it has no handler for; the probe says so and exits 143.
    proc, report = run_probe("--signal-self", "TERM", prefix=["unshare", "--pid", "--fork", "--mount-proc"],
                             check_rc=143)
    assert report["pid"] == 1
    assert "survived signal 15" in proc.stderr


def test_output_file_instead_of_stdout(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run([str(build_probe()), "--output", str(out), "--exit", "3"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert parse_probe(out.read_text())["argv"][1:] == ["--output", str(out), "--exit", "3"]
    assert os.listdir(tmp_path) == ["report.json"]  # no temp file left behind


def test_output_to_unwritable_place_fails_with_3(tmp_path: Path) -> None:
    proc = subprocess.run([str(build_probe()), "--output", str(tmp_path / "no" / "such" / "dir")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "probe:" in proc.stderr


def test_sleep_delays_exit_after_printing(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.Popen([str(build_probe()), "--output", str(out), "--sleep", "300"])
    try:
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert parse_probe(out.read_text())["pid"] == proc.pid  # report written while still sleeping
        assert proc.poll() is None
        proc.terminate()
        assert proc.wait(timeout=30) == -15
    finally:
        proc.kill()
        proc.wait()


def test_wait_file_then_write_file(tmp_path: Path) -> None:
    gate, written, out = tmp_path / "gate", tmp_path / "written", tmp_path / "out.json"
    proc = subprocess.Popen([str(build_probe()), "--wait-file", str(gate), "--write-file", str(written),
                             "hello\nworld", "--output", str(out)])
    try:
        time.sleep(0.2)  # give a broken --wait-file the chance to run ahead
        assert proc.poll() is None
        assert not written.exists() and not out.exists()
        gate.touch()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
    assert written.read_text() == "hello\nworld"
    assert probe_check(parse_probe(out.read_text()), f"write-file:{written}")["ok"]


def test_usage_errors_exit_2() -> None:
    for args in (["--no-such-flag"], ["--exit", "256"], ["--exit", "x"], ["--try-read"],
                 ["--signal-self", "NOPE"], ["--sleep", "-1"], ["--write-file", "only-path"]):
        proc = subprocess.run([str(build_probe()), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, args
        assert proc.stdout == "", args


# ---------------------------------------------------------------- JSON robustness

HOSTILE = b'q"uote \\back\nnew\tline\r\x01\x1f\x7f bad:\xff\xfe over:\xc0\xaf surr:\xed\xa0\x80 ok:h\xc3\xa9\xe2\x9c\x93\xf0\x9f\x98\x80'
# Valid UTF-8 passes through; each byte outside valid UTF-8 comes back as the Latin-1 char of that byte.
HOSTILE_TEXT = 'q"uote \\back\nnew\tline\r\x01\x1f\x7f bad:\xff\xfe over:\xc0\xaf surr:\xed\xa0\x80 ok:hé✓😀'


def test_json_stays_valid_for_hostile_env_argv_and_stdin() -> None:
    env = {b"HOSTILE": HOSTILE, b"KEY\xff": b"v", b"EMPTY": b""}
    proc = subprocess.run([bytes(build_probe()), b"--print-stdin", b"--isatty", b"--", HOSTILE],
                          input=HOSTILE + b"\x00end", env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.decode("utf-8")  # the whole report is valid UTF-8
    assert line.count("\n") == 1 and line.endswith("\n")  # one line, one object
    report = json.loads(line)
    assert report["env"] == {"HOSTILE": HOSTILE_TEXT, "KEY\xff": "v", "EMPTY": ""}
    assert report["argv"][-1] == HOSTILE_TEXT
    assert report["stdin"] == HOSTILE_TEXT + "\x00end"
    assert report["isatty"] == {"0": False, "1": False, "2": False}


def test_isatty_sees_a_pseudo_terminal() -> None:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run([str(build_probe()), "--isatty"], stdin=terminal, stdout=subprocess.PIPE,
                              stderr=terminal, timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert proc.returncode == 0
    assert parse_probe(proc.stdout.decode())["isatty"] == {"0": True, "1": False, "2": True}


def test_parse_probe_errors_are_helpful() -> None:
    with pytest.raises(AssertionError, match="no probe report.*hello"):
        parse_probe("hello\n")
    with pytest.raises(AssertionError, match="not valid JSON"):
        parse_probe("log line\n{broken\n")
    assert parse_probe('{"a": 1}\nnoise\n{"b": 2}\n') == {"b": 2}
    with pytest.raises(AssertionError, match="has no check 'mount'"):
        probe_check({"checks": {}}, "mount")


# ---------------------------------------------------------------- cgroups


def _v1_memory_cgroup_dir() -> Path | None:
    mount = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        if fields[sep + 1] == "cgroup" and "memory" in fields[sep + 3].split(","):
            mount, root = fields[4], fields[3]
            break
    if mount is None:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            rel = path[len(root):] if root != "/" and path.startswith(root) else path
            return Path(mount + rel.rstrip("/"))
    return None


def test_cgroup_v1_memory_limit_is_reported() -> None:
    require_root()
    parent = _v1_memory_cgroup_dir()
    if parent is None or not (parent / "memory.limit_in_bytes").exists():
        pytest.skip("needs a cgroup v1 memory hierarchy")
    cg = parent / f"podrun-probe-{uuid.uuid4().hex[:8]}"
    cg.mkdir()
    try:
        (cg / "memory.limit_in_bytes").write_text(str(64 << 20))
        script = f'echo $$ > "{cg}/cgroup.procs" && exec "{build_probe()}"'
        proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        report = parse_probe(proc.stdout)
    finally:
        cg.rmdir()
    memory = report["cgroup_limits"]["v1"]["memory"]
    assert memory == {"path": str(cg), "memory.limit_in_bytes": str(64 << 20)}
    assert any(line.split(":", 2)[2].endswith(cg.name) for line in report["cgroup"] if ":memory:" in line)


# ---------------------------------------------------------------- the test image


def _image_layer(layout: Path) -> tuple[dict[str, Any], tarfile.TarFile]:
    index = json.loads((layout / "index.json").read_text())
    blob = layout / "blobs" / "sha256"
    manifest = json.loads((blob / index["manifests"][0]["digest"].split(":")[1]).read_text())
    config = json.loads((blob / manifest["config"]["digest"].split(":")[1]).read_text())
    assert len(manifest["layers"]) == 1
    layer = gzip.decompress((blob / manifest["layers"][0]["digest"].split(":")[1]).read_bytes())
    return config, tarfile.open(fileobj=io.BytesIO(layer))


def test_probe_image_contains_probe(tmp_path: Path) -> None:
    image = probe_image(tmp_path / "layout", ref="probe", extra_entries=[file("etc/marker", b"m")])
    config, tf = _image_layer(image.layout)
    assert config["config"]["Cmd"] == ["/probe"]
    member = tf.getmember("probe")
    assert member.isfile() and member.mode == 0o755
    extracted = tf.extractfile(member)
    assert extracted is not None and extracted.read() == build_probe().read_bytes()
    names = tf.getnames()
    assert "bin/busybox" in names and "etc/marker" in names
    index = json.loads((image.layout / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "probe"


def test_probe_runs_in_image_rootfs_without_proc(tmp_path: Path) -> None:
    require_root()
    _, tf = _image_layer(probe_image(tmp_path / "layout").layout)
    root = tmp_path / "rootfs"
    root.mkdir()
    for m in tf.getmembers():  # our own trusted layer: plain files, dirs and relative symlinks
        dest = root / m.name
        if m.isdir():
            dest.mkdir(mode=m.mode, exist_ok=True)
        elif m.issym():
            dest.symlink_to(m.linkname)
        elif m.isfile():
            data = tf.extractfile(m)
            assert data is not None
            dest.write_bytes(data.read())
            dest.chmod(m.mode)
    # No /proc, /dev or libc in this root: the static probe still reports, with nulls and empty lists.
    proc = subprocess.run(["chroot", str(root), "/probe", "--try-read", "/proc/self/status"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = parse_probe(proc.stdout)
    assert report["cwd"] == "/"
    assert report["ns"] == dict.fromkeys(NS_NAMES)
    assert report["caps"] == dict.fromkeys(("inh", "prm", "eff", "bnd", "amb"))
    assert report["seccomp"] is None and "seccomp_filters" not in report
    assert report["no_new_privs"] == 0  # from prctl when /proc/self/status is missing
    assert report["mounts"] == report["fds"] == report["dev"] == report["cgroup"] == []
    assert report["cgroup_limits"] == {"v2": None, "v1": {"memory": None, "cpu": None, "pids": None}}
    assert probe_check(report, "read:/proc/self/status")["errno"] == errno.ENOENT
    assert report["hostname"] == socket.gethostname()
