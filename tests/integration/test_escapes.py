"""Hostile images and apps against the host (SECURITY-TESTS 24, 27, 28): each test builds the
image itself, runs a real pod and checks the host afterwards.

24: magic links as paths (working dir from the image, from --working-dir, through a symlink of
the image, swapped in by a running app before ``enter``; mount targets), and the pod's pid 1
showing nothing of the host.  27: /etc/passwd and /etc/group that are FIFOs, directories,
links into /proc, huge.  28: ids -1 / 4294967295 and beyond, runc's group rules.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import time
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.fixtures import images as img
from tests.fixtures.probe import parse_probe, probe_layer_entries
from tests.integration.test_run import Pods, module_pods

APPLETS = ("pwd", "ln", "mkfifo", "readlink", "od", "tr", "wc", "head", "stat", "grep", "ls", "rmdir", "cut")
MAGIC_WORKDIRS = ("/proc/1/cwd", "/proc/1/root", "/proc/self/root", "/proc/self/cwd", "/proc/thread-self/root",
                  "/proc/1/cwd/tmp", "/proc/self/fd/3", "/proc/1/root/../..", "/proc/self/root/etc")


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "escapes")


class Marker:
    """A file name an escaped app would create in its (host) working directory; ``found`` looks
    where such a write could land on the host."""

    def __init__(self, pods: Pods) -> None:
        self.name = f"podrun-escape-{uuidlib.uuid4().hex[:12]}"
        self.pods = pods

    def found(self) -> list[str]:
        places = [Path("/"), Path("/tmp"), Path("/root"), ROOT, Path.cwd(), self.pods.data.parent]
        hits = [str(p / self.name) for p in places if (p / self.name).exists()]
        hits += [str(p) for p in self.pods.data.parent.rglob(self.name) if "/upper/" not in str(p)]
        return hits


def hostile_image(pods: Pods, tmp_path: Path, entries: Sequence[img.Entry] = (), config: dict[str, Any] | None = None,
                  base: list[img.Entry] | None = None) -> str:
    """Build an image (busybox, the probe, *entries*; *config* merged into the image config's
    ``config``), fetch it into the pods' store and return its manifest digest."""
    layer = (base if base is not None else img.busybox_entries(APPLETS)) + probe_layer_entries() + list(entries)
    cfg: dict[str, Any] = {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}
    cfg.update(config or {})
    built = img.write_oci_layout(tmp_path / f"layout-{uuidlib.uuid4().hex[:8]}", [img.tar_bytes(layer)],
                                 config={"config": cfg})
    pods.run("fetch", f"oci:{built.layout}", check=True)
    return built.manifest_digest


def wait_for_file(path: Path) -> None:
    """Until the app has created *path* (seen through its overlay's upper dir)."""
    deadline = time.monotonic() + 20
    while not path.exists():
        assert time.monotonic() < deadline, f"the app did not create {path.name}"
        time.sleep(0.05)


def refused(res: subprocess.CompletedProcess[str], *words: str, code: int = 254) -> None:
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


# ---- 24: magic links as paths ---------------------------------------------------------------

@pytest.mark.parametrize("workdir", MAGIC_WORKDIRS)
@pytest.mark.parametrize("user", ["0", "65534"])
def test_image_workdir_magic_link_is_refused(pods: Pods, tmp_path: Path, workdir: str, user: str) -> None:
    mark = Marker(pods)
    digest = hostile_image(pods, tmp_path, config={"WorkingDir": workdir, "User": user,
                                                   "Cmd": ["/bin/sh", "-c", f"touch {mark.name}; pwd"]})
    res = pods.run("run", "--net", "none", digest)
    if ".." in workdir:  # refused by stage0 already, before any pod exists
        refused(res, "WorkingDir", workdir, code=253)
    else:
        refused(res, "working directory", workdir)
    assert res.stdout == "" and mark.found() == []


@pytest.mark.parametrize("workdir", MAGIC_WORKDIRS[:4])
@pytest.mark.parametrize("user", ["root", "nobody"])
def test_working_dir_flag_magic_link_is_refused(pods: Pods, workdir: str, user: str) -> None:
    mark = Marker(pods)
    res = pods.run("run", "--net", "none", "demo", "--user", user, "--working-dir", workdir, "--exec", "/bin/sh",
                   "--", "-c", f"touch {mark.name}; pwd")
    refused(res, "working directory", "refused")
    assert mark.found() == []


@pytest.mark.parametrize(("link", "workdir"), [
    ("/proc/1/cwd", "/work"), ("../proc/self/root", "/work/etc"), ("/proc/1/root/tmp", "/work"),
    ("proc/thread-self/cwd", "/work"),
])
def test_image_symlink_to_a_magic_link_is_refused(pods: Pods, tmp_path: Path, link: str, workdir: str) -> None:
    mark = Marker(pods)
    digest = hostile_image(pods, tmp_path, [img.symlink("work", link)],
                           {"WorkingDir": workdir, "Cmd": ["/bin/sh", "-c", f"touch {mark.name}"]})
    refused(pods.run("run", "--net", "none", digest), "working directory", "refused")
    assert mark.found() == []


def test_missing_working_dir_is_created_inside_the_root(pods: Pods, tmp_path: Path) -> None:
    """A dangling symlink on the way is followed inside the root: the dir lands in the image."""
    outside = f"/tmp/{Marker(pods).name}"  # a name no other run or session uses
    digest = hostile_image(pods, tmp_path, [img.symlink("out", f"/../../..{outside}")],
                           {"WorkingDir": "/out/sub", "Cmd": ["/bin/sh", "-c", f"pwd; ls -d {outside}/sub"]})
    res = pods.run("run", "--net", "none", digest, "--user", "nobody")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [f"{outside}/sub"] * 2  # pwd shows the resolved path
    assert not Path(outside).exists()


@pytest.mark.parametrize("target", ["/proc/1/root/tmp/VOLMARK", "/proc/self/cwd/VOLMARK", "/mnt/VOLMARK",
                                    "/proc/thread-self/root/VOLMARK"])
def test_mount_target_magic_link_is_refused(pods: Pods, tmp_path: Path, target: str) -> None:
    mark = Marker(pods)
    target = target.replace("VOLMARK", mark.name)
    digest = hostile_image(pods, tmp_path, [img.symlink("mnt", "/proc/1/cwd")], {"Cmd": ["/bin/true"]})
    source = tmp_path / "vol"
    source.mkdir()
    res = pods.run("run", "--net", "none", "--volume", f"v,kind=host,source={source}", digest,
                   "--mount", f"volume=v,target={target}")
    refused(res, "symbolic links")
    assert mark.found() == [] and not Path("/tmp", mark.name).exists()


def test_enter_refuses_a_working_dir_swapped_for_a_magic_link(pods: Pods) -> None:
    """The app (root in the pod) replaces its working dir by a link to pid 1's root before
    ``podrun enter`` starts a shell there."""
    mark = Marker(pods)
    proc, uuid, pod = pods.start("--net", "none", "demo", "--working-dir", "/w", "--exec", "/bin/sh", "--", "-c",
                                 "cd /; rmdir /w; ln -s /proc/1/root /w; touch /swapped; exec sleep 600",
                                 stdout=subprocess.PIPE)
    try:
        wait_for_file(pod / "apps" / "demo" / "upper" / "swapped")
        res = pods.run("enter", uuid, "/bin/sh", "-c", f"touch {mark.name}; pwd")
        refused(res, "working directory", "/w", "refused")
        assert mark.found() == []
    finally:
        pods.run("stop", "--force", uuid)
        proc.wait(timeout=30)


def test_pid1_shows_nothing_of_the_host(pods: Pods) -> None:
    """With the capabilities that let an app look into pid 1 at all."""
    script = ("ls -a /proc/1/root/ | tr '\\n' ' '; echo; ls -a /proc/1/cwd/ | tr '\\n' ' '; echo; "
              "wc -l < /proc/1/mountinfo; cut -d' ' -f5 /proc/1/mountinfo; tr '\\0' '\\n' < /proc/1/cmdline | head -1; "
              "tr -d '\\0' < /proc/1/environ | wc -c; cat /proc/1/comm; ls /proc/1/fd | tr '\\n' ' '; echo; "
              "for f in /proc/1/fd/*; do readlink $f; done; mkdir /proc/1/root/x 2>/dev/null && echo WROTE; "
              "cat /proc/1/cmdline /proc/1/environ /proc/1/mountinfo")
    res = pods.run("run", "--net", "none", "demo", "--caps-retain",
                   "CAP_SYS_PTRACE,CAP_DAC_OVERRIDE,CAP_DAC_READ_SEARCH,CAP_SYS_ADMIN", "--exec", "/bin/sh", "--",
                   "-c", script)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.split("\n")
    assert lines[0].split() == [".", ".."] and lines[1].split() == [".", ".."]
    assert lines[2].strip() == "1" and lines[3] == "/"
    assert lines[4] == "catatonit" and lines[5].strip() == "0" and lines[6] == "catatonit"
    assert lines[7].split() == ["0", "1", "2", "3"]  # its lifeline, /dev/null twice, its signalfd
    assert lines[8].startswith("pipe:") and all(t.endswith("null") for t in lines[9:11]), lines[8:12]
    assert "signalfd" in lines[11], lines[8:12]
    assert "WROTE" not in res.stdout
    for host_path in (str(ROOT), str(pods.data), ".venv", "stages", "PODRUN", "site-packages", "/work"):
        assert host_path not in res.stdout, host_path


# ---- 27: files read from the image as root ----------------------------------------------------

def passwd_entries(kind: str) -> list[img.Entry]:
    if kind == "fifo":
        return [img.Entry("etc/passwd", tarfile.FIFOTYPE)]
    if kind == "directory":
        return [img.directory("etc/passwd")]
    if kind == "huge":
        line = b"u:x:1000:1000::/:/bin/sh\n"
        return [img.file("etc/passwd", line * ((5 << 20) // len(line)))]
    return [img.symlink("etc/passwd", kind)]


@pytest.mark.parametrize("kind", ["fifo", "directory", "huge", "/proc/kmsg", "/proc/self/fd/0", "/dev/zero",
                                  "../../proc/1/environ", "/proc/self/environ"])
def test_hostile_passwd_is_refused_without_hanging(pods: Pods, tmp_path: Path, kind: str) -> None:
    base = [e for e in img.busybox_entries(APPLETS) if e.name != "etc/passwd"]
    digest = hostile_image(pods, tmp_path, passwd_entries(kind), {"Cmd": ["/bin/id"]}, base=base)
    started = time.monotonic()
    res = pods.run("run", "--net", "none", digest, "--user", "nobody", timeout=60)
    assert time.monotonic() - started < 30
    refused(res, "/etc/passwd" if kind in ("fifo", "directory", "huge") else "nobody")
    assert res.stdout == ""


@pytest.mark.parametrize("kind", ["fifo", "/proc/kmsg", "/dev/zero"])
def test_hostile_group_file_is_refused(pods: Pods, tmp_path: Path, kind: str) -> None:
    base = [e for e in img.busybox_entries(APPLETS) if e.name != "etc/group"]
    group = [img.Entry("etc/group", tarfile.FIFOTYPE)] if kind == "fifo" else [img.symlink("etc/group", kind)]
    digest = hostile_image(pods, tmp_path, group, {"Cmd": ["/probe"]}, base=base)
    res = pods.run("run", "--net", "none", digest, "--user", "root", timeout=60)
    if kind == "fifo":
        refused(res, "/etc/group", "not a regular file")
    else:  # a link into /proc or /dev of an image leads to the image's own (empty) directories
        assert res.returncode == 0, res.stderr
        assert (parse_probe(res.stdout)["uid"], parse_probe(res.stdout)["groups"]) == (0, [0])


@pytest.mark.parametrize("swap", ["mkfifo /etc/passwd", "ln -s /proc/kmsg /etc/passwd",
                                  "ln -s /proc/self/environ /etc/passwd", "mkdir /etc/passwd"])
def test_enter_refuses_a_passwd_the_app_replaced(pods: Pods, swap: str) -> None:
    """The app (root in the pod) replaces /etc/passwd before ``podrun enter`` looks the user up."""
    proc, uuid, pod = pods.start("--net", "none", "demo", "--exec", "/bin/sh", "--", "-c",
                                 f"rm /etc/passwd; {swap}; touch /swapped; exec sleep 600", stdout=subprocess.PIPE)
    try:
        wait_for_file(pod / "apps" / "demo" / "upper" / "swapped")
        started = time.monotonic()
        res = pods.run("enter", uuid, "/bin/id", timeout=60)
        assert time.monotonic() - started < 30
        refused(res, "/etc/passwd", "not a regular file")
        assert res.stdout == ""
    finally:
        pods.run("stop", "--force", uuid)
        proc.wait(timeout=30)


# ---- 28: identities ---------------------------------------------------------------------------

@pytest.mark.parametrize("flags", [("--user", "-1"), ("--user", "4294967295"), ("--user", "2147483648"),
                                   ("--user", "99999999999999999999"), ("--group", "-1"), ("--group", "4294967295"),
                                   ("--user", "0", "--group", "4294967296")])
def test_out_of_range_ids_from_flags_are_refused(pods: Pods, flags: tuple[str, ...]) -> None:
    res = pods.run("run", "--net", "none", "demo", *flags, "--exec", "/bin/id")
    assert res.returncode in (253, 254), res.stderr
    assert res.stdout == "" and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert flags[-1] in res.stderr


@pytest.mark.parametrize(("passwd", "user"), [
    ("evil:x:-1:-1::/:/bin/sh\n", "evil"), ("evil:x:4294967295:0::/:/bin/sh\n", "evil"),
    ("evil:x:0:4294967295::/:/bin/sh\n", "evil"), ("evil:x:0:-1::/:/bin/sh\n", "evil"),
    ("root:x:0:0::/:/bin/sh\n", "4294967295"), ("root:x:0:0::/:/bin/sh\n", "-1:0"),
])
def test_out_of_range_ids_from_the_image_are_refused(pods: Pods, tmp_path: Path, passwd: str, user: str) -> None:
    base = [e for e in img.busybox_entries(APPLETS) if e.name != "etc/passwd"]
    digest = hostile_image(pods, tmp_path, [img.file("etc/passwd", passwd.encode())],
                           {"Cmd": ["/bin/id"], "User": user}, base=base)
    res = pods.run("run", "--net", "none", digest)
    assert res.returncode in (250, 253, 254), res.stderr  # 250: the image's User, refused by stage0
    assert res.stdout == "" and "Traceback" not in res.stderr and "range" in res.stderr


def probe_ids(pods: Pods, tmp_path: Path, user: str, group_file: bytes) -> dict[str, Any]:
    base = [e for e in img.busybox_entries(APPLETS) if e.name != "etc/group"]
    digest = hostile_image(pods, tmp_path, [img.file("etc/group", group_file)],
                           {"Cmd": ["/probe"], "User": user}, base=base)
    res = pods.run("run", "--net", "none", digest)
    assert res.returncode == 0, res.stderr
    return parse_probe(res.stdout)


GROUPS = b"root:x:0:\nwheel:x:10:root,nobody\naudio:x:29:nobody\nnogroup:x:65534:\n"


@pytest.mark.parametrize(("user", "ids"), [
    ("12345", (12345, 0, [0])),           # no passwd entry: gid 0, as runc
    ("12345:77", (12345, 77, [77])),      # explicit group: exactly that one
    ("root", (0, 0, [0, 10])),            # memberships from /etc/group
    ("root:root", (0, 0, [0])),           # an explicit group: no memberships
    ("0:0", (0, 0, [0])),
    ("nobody", (65534, 65534, [10, 29, 65534])),
    ("nobody:audio", (65534, 29, [29])),
])
def test_runc_group_rules(pods: Pods, tmp_path: Path, user: str, ids: tuple[int, int, list[int]]) -> None:
    r = probe_ids(pods, tmp_path, user, GROUPS)
    assert (r["uid"], r["gid"], sorted(r["groups"])) == ids, json.dumps(r)[:400]


def test_fly_flavor_refuses_magic_working_dir(pods: Pods) -> None:
    mark = Marker(pods)
    res = pods.run("run", "--stage1", "fly", "--net", "host", "demo", "--working-dir", "/proc/1/cwd", "--exec",
                   "/bin/sh", "--", "-c", f"touch {mark.name}")
    assert res.returncode == 254 and "working directory" in res.stderr, res.stderr
    assert mark.found() == []


def test_fly_flavor_binds_dev_proc_sys_inside_the_root(pods: Pods, tmp_path: Path) -> None:
    """An image whose /dev is a link out of its tree: fly binds the host's /dev inside the root."""
    mark = Marker(pods)
    digest = hostile_image(pods, tmp_path, [img.symlink("dev", f"/tmp/{mark.name}")],
                           {"Cmd": ["/bin/sh", "-c", f"test -c /tmp/{mark.name}/null && echo INSIDE"]})
    res = pods.run("run", "--stage1", "fly", "--net", "host", digest)
    assert res.returncode == 0 and res.stdout.split() == ["INSIDE"], res.stderr
    assert not Path("/tmp", mark.name).exists() and mark.found() == []
