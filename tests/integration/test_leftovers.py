"""What a crash, a full disk or a damaged name leaves behind is collected by the next command, and
never what a live process is still writing (issue 12, "Collection must fail safe", "Disk full",
device nodes in layers; SECURITY-TESTS 5, 17, 18, 22, 23).

- A ``kill -9`` while a pod's directory is still hidden (``embryo/.UUID.tmp``) leaves it
  unlocked: the next ``gc`` removes it at once, judged by its creator's lock, not by its age.
- A killed fetch's files in ``store/tmp`` are removed by the next fetch; a live fetch's are
  locked and survive other fetches and ``fsck``.
- ``image rm NAME`` and ``image gc`` remove a name whose image is missing (what fsck reports).
- Device nodes in a layer (a debootstrapped ``/dev``) are skipped with one warning and counted
  by ``image inspect``; one placed through a symlink, or a hardlink to one, is still refused.
- ``gc`` and ``rm`` work and free space with the data dir on a tmpfs filled to the last byte.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.errors import VerificationError
from tests.conftest import ROOT, TEST_BRIDGE, PodrunRunner, require_root
from tests.fixtures import fakeregistry as fr
from tests.fixtures import images as img
from tests.integration.test_run import PODRUN, Pods, module_pods
from tests.integration.test_store import mounted_tmpfs


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pods]:
    yield from module_pods(tmp_path_factory, "leftovers")


def hidden_embryos(p: Pods) -> list[str]:
    return sorted(e.name for e in (p.data / "pods" / "embryo").iterdir() if e.name.startswith("."))


def store_tmp(data_dir: Path) -> list[str]:
    tmp = data_dir / "store" / "tmp"
    return sorted(os.listdir(tmp)) if tmp.is_dir() else []


# -- aborted embryos ----------------------------------------------------------------------------

def test_kill9_while_the_pod_dir_is_hidden_then_one_gc_removes_it(pods: Pods) -> None:
    res = pods.run("run", "--net", "none", "demo", "--exec", "/bin/true",
                   env=dict(os.environ, PODRUN_FAULT="prepare:embryo-hidden"))
    assert res.returncode == -9, res.stderr
    left = hidden_embryos(pods)
    assert len(left) == 1 and left[0].endswith(".tmp"), left
    assert (pods.data / "pods" / "embryo" / left[0] / "apps").is_dir()  # killed with its files half written
    out = pods.run("gc", check=True).stdout  # default grace periods: only the lock decides
    assert f"removed aborted embryo {left[0]}" in out, out
    assert hidden_embryos(pods) == []
    assert pods.run("gc", check=True).stdout == ""


def test_gc_judges_a_hidden_embryo_by_its_creators_lock_not_by_its_age(pods: Pods) -> None:
    base = pods.data / "pods" / "embryo"
    fresh, old = base / ".00000000-0000-4000-8000-00000000000a.tmp", base / ".00000000-0000-4000-8000-00000000000b.tmp"
    for d in (fresh, old):
        (d / "apps" / "demo").mkdir(parents=True)
        (d / "apps" / "demo" / "seccomp.bpf").write_bytes(b"half")
    an_hour_ago = time.time() - 7200
    os.utime(old, (an_hour_ago, an_hour_ago))
    fd = os.open(old, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a creator still at work, however long it takes
        out = pods.run("gc", check=True).stdout
        assert out == f"removed aborted embryo {fresh.name}\n", out  # its creator died: at once
        assert hidden_embryos(pods) == [old.name]
    finally:
        os.close(fd)
    assert pods.run("gc", check=True).stdout == f"removed aborted embryo {old.name}\n"
    assert hidden_embryos(pods) == []


# -- store/tmp: a dead writer's files go, a live writer's stay --------------------------------------

def _layers(tag: str) -> list[bytes]:
    return [img.tar_bytes(img.busybox_entries()),
            img.tar_bytes([img.file(f"{tag}/f{i}", os.urandom(40_000)) for i in range(10)])]


@pytest.mark.parametrize("checkpoint", ["store:blob-midway", "store:blob-before-rename", "store:layer-midway",
                                        "store:layer-before-rename"])
def test_the_next_fetch_removes_what_a_killed_fetch_left_in_store_tmp(tmp_path: Path, podrun: PodrunRunner,
                                                                      data_dir: Path, checkpoint: str) -> None:
    require_root()
    victim = img.write_oci_layout(tmp_path / "victim", _layers("victim"))
    other = img.write_oci_layout(tmp_path / "other", _layers("other"))
    res = podrun("fetch", f"oci:{victim.layout}", check=False, env={"PODRUN_FAULT": checkpoint})
    assert res.returncode == -9, res.stderr
    assert store_tmp(data_dir) != []
    assert podrun("fetch", f"oci:{other.layout}").stdout.strip() == other.manifest_digest  # no gc in between
    assert store_tmp(data_dir) == []
    fsck = podrun("image", "fsck", check=False)
    assert fsck.returncode == 0, fsck.stdout
    assert podrun("fetch", f"oci:{victim.layout}").stdout.strip() == victim.manifest_digest
    assert podrun("image", "fsck", check=False).returncode == 0


def test_a_live_fetchs_files_survive_other_fetches_and_fsck(tmp_path: Path, podrun: PodrunRunner,
                                                            data_dir: Path) -> None:
    """A fetch is held in the middle of a blob (the registry drips it); meanwhile another fetch
    cleans store/tmp and fsck checks the store: the held fetch's file stays and is no problem."""
    require_root()
    layout = tmp_path / "layout"
    slow = img.write_oci_layout(layout, [img.tar_bytes([img.file("slow", os.urandom(2000))])], ref="slow",
                                compression="none")
    other = img.write_oci_layout(tmp_path / "other", _layers("other"))
    behaviour = fr.Behaviour(drip_prefix=f"/v2/test/busybox/blobs/{slow.layer_digests[0]}", drip_interval=0.2,
                             drip_headers=False)
    with fr.serve("127.0.0.1", behaviour=behaviour, layout=layout) as fake:
        held = subprocess.Popen([*PODRUN, "--dir", str(data_dir), "fetch", f"docker://{fake.host}/test/busybox:slow"],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            blob = f"blob-{slow.layer_digests[0].split(':')[1]}."
            while not [n for n in store_tmp(data_dir) if n.startswith(blob)]:
                assert time.monotonic() < deadline and held.poll() is None, "the fetch did not start its blob"
                time.sleep(0.05)
            time.sleep(0.5)  # a few bytes in (only makes the case stronger; nothing depends on it)
            [entry] = store_tmp(data_dir)
            inode = (data_dir / "store" / "tmp" / entry).stat().st_ino
            assert podrun("fetch", f"oci:{other.layout}").returncode == 0
            fsck = podrun("image", "fsck", "--quick", check=False)
            assert fsck.returncode == 0, fsck.stdout  # work in progress is not a leftover
            assert (data_dir / "store" / "tmp" / entry).stat().st_ino == inode
            behaviour.drip_interval = 0  # let it finish
            out, err = held.communicate(timeout=120)
        finally:
            if held.poll() is None:
                held.kill()
                held.wait()
    assert held.returncode == 0 and out.strip() == slow.manifest_digest, err
    assert store_tmp(data_dir) == [] and podrun("image", "fsck", check=False).returncode == 0


# -- names pointing at a missing image ---------------------------------------------------------------

def test_image_rm_and_image_gc_remove_a_name_whose_image_is_missing(tmp_path: Path, podrun: PodrunRunner,
                                                                    data_dir: Path) -> None:
    require_root()
    ids = {}
    for name in ("a", "b", "c"):
        root = tmp_path / name
        root.mkdir()
        (root / "hello").write_text(f"{name}\n")
        ids[name] = podrun("image", "import", str(root), f"{name}:1").stdout.strip()
    for name in ("a", "b"):
        (data_dir / "store" / "images" / "sha256" / f"{ids[name][7:]}.json").unlink()
    fsck = podrun("image", "fsck", "--quick", check=False)
    assert fsck.returncode == 248
    assert "name localhost/a:1 points to missing image" in fsck.stdout, fsck.stdout
    assert "name localhost/b:1 points to missing image" in fsck.stdout, fsck.stdout
    rm = podrun("image", "rm", "a:1", check=False)
    assert rm.returncode == 0 and rm.stdout == "untagged localhost/a:1 (its image was missing)\n", rm.stderr
    assert podrun("image", "rm", "a:1", check=False).returncode == 252  # gone now: not found
    gc = podrun("image", "gc").stdout
    assert "removed name localhost/b:1 (its image is missing)" in gc, gc
    assert podrun("image", "fsck").returncode == 0
    assert [n for i in json.loads(podrun("image", "list", "--format", "json").stdout) for n in i["names"]] == [
        "localhost/c:1"]


# -- device nodes in layers ----------------------------------------------------------------------------

def _dev(name: str, kind: bytes, major: int, minor: int) -> img.Entry:
    return img.Entry(name, kind, mode=0o666, devmajor=major, devminor=minor)


DEBOOTSTRAP_DEV = [
    img.directory("dev"),
    _dev("dev/null", tarfile.CHRTYPE, 1, 3),
    _dev("dev/zero", tarfile.CHRTYPE, 1, 5),
    _dev("dev/console", tarfile.CHRTYPE, 5, 1),
    _dev("dev/sda", tarfile.BLKTYPE, 8, 0),
    _dev("dev/loop0", tarfile.BLKTYPE, 7, 0),
    img.symlink("dev/fd", "/proc/self/fd"),
    img.directory("etc"),
    img.file("etc/debian_version", b"12.0\n"),
]


def test_a_layer_with_device_nodes_is_fetched_with_one_warning_and_runs(pods: Pods, tmp_path: Path) -> None:
    built = img.write_oci_layout(tmp_path / "deb", [img.tar_bytes(img.busybox_entries()), img.tar_bytes(DEBOOTSTRAP_DEV)])
    res = pods.run("fetch", f"oci:{built.layout}")
    assert res.returncode == 0 and res.stdout.strip() == built.manifest_digest, res.stderr
    layer = built.layer_digests[1].split(":")[1][:12]
    assert res.stderr.count("\n") == 1 and "skipped 5 device node(s)" in res.stderr and layer in res.stderr, res.stderr
    assert "dev/console, dev/loop0, dev/null, dev/sda, dev/zero" in res.stderr
    doc = json.loads(pods.run("image", "inspect", "--format", "json", built.manifest_digest, check=True).stdout)
    assert doc["devices_skipped"] == 5
    rootfs = pods.data / "store" / "layers" / "sha256" / built.diff_ids[1].split(":")[1] / "rootfs"
    assert sorted(p.name for p in (rootfs / "dev").iterdir()) == ["fd"]
    run = pods.run("run", "--net", "none", built.manifest_digest, "--exec", "/bin/sh", "--", "-c",
                   "cat /etc/debian_version; echo x > /dev/null && echo NULL-OK; test -e /dev/sda || echo NO-SDA")
    assert run.returncode == 0 and run.stdout.split() == ["12.0", "NULL-OK", "NO-SDA"], run.stderr
    assert pods.run("fetch", f"oci:{built.layout}").stderr == ""  # unpacked once: warned once
    pods.run("gc", "--grace-period", "0s", check=True)
    pods.run("image", "rm", built.manifest_digest, check=True)


@pytest.mark.parametrize(
    "entries",
    [
        [img.symlink("dev", "/dev"), _dev("dev/sda", tarfile.BLKTYPE, 8, 0)],
        [img.directory("dev"), _dev("dev/null", tarfile.CHRTYPE, 1, 3), img.hardlink("null", "dev/null")],
    ],
    ids=["device-through-a-symlink", "hardlink-to-a-device"],
)
def test_a_device_placed_through_a_trick_is_refused_and_the_store_left_as_it_was(
        tmp_path: Path, podrun: PodrunRunner, data_dir: Path, entries: list[img.Entry]) -> None:
    require_root()
    built = img.write_oci_layout(tmp_path / "evil", [img.tar_bytes(img.busybox_entries()), img.tar_bytes(entries)])
    res = podrun("fetch", f"oci:{built.layout}", check=False)
    assert res.returncode == VerificationError.exit_code and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.splitlines()) == 1 and ("symlink" in res.stderr or "device node" in res.stderr)
    assert json.loads(podrun("image", "list", "--format", "json").stdout) == []
    assert store_tmp(data_dir) == []
    assert podrun("image", "fsck", "--quick").returncode == 0


# -- a full disk --------------------------------------------------------------------------------------

def _fill(fs: Path) -> None:
    """Fill *fs* to its last byte (a file written until ENOSPC, in ever smaller pieces)."""
    with open(fs / f"filler-{time.monotonic_ns()}", "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert os.statvfs(fs).f_bavail == 0


def _free(fs: Path) -> int:
    st = os.statvfs(fs)
    return st.f_bavail * st.f_frsize


@pytest.fixture
def full_fs(tmp_path: Path) -> Iterator[Path]:
    require_root()
    with mounted_tmpfs(tmp_path / "full", "64m") as mnt:
        yield mnt


def test_gc_and_rm_free_space_on_a_full_disk(pods: Pods, full_fs: Path) -> None:
    p = Pods(full_fs / "data")
    p.run("image", "import", str(pods.data.parent / "rootfs"), "demo", check=True)
    uuids = []
    try:
        for i in range(3):  # exited pods holding space: a root written to, a log
            res = p.run("run", "--net", "none", "--uuid-file-save", str(full_fs.parent / f"u{i}"), "demo",
                        "--exec", "/bin/sh", "--", "-c", "head -c 4000000 /dev/zero > /tmp/big; seq 1 20000")
            assert res.returncode == 0, res.stderr
            uuids.append((full_fs.parent / f"u{i}").read_text().strip())
        dead, dead_uuid, _ = p.start("demo", "--exec", "/bin/sleep", "--", "600")  # default network
        dead.kill()  # kill -9 of the supervisor: its lease and network record stay for gc
        dead.wait(timeout=30)
        leases = p.data / "net" / TEST_BRIDGE / "leases"
        assert [f.name for f in leases.iterdir()] != []
        _fill(full_fs)
        p.run("run", "--net", "none", "demo", "--exec", "/bin/true")  # fails, somehow: no space
        rm = p.run("rm", dead_uuid)  # its network teardown rewrites the pod's network record
        assert rm.returncode == 0 and f"removed pod {dead_uuid}" in rm.stdout, rm.stdout + rm.stderr
        assert f"released the networks of pod {dead_uuid}" in rm.stdout and list(leases.iterdir()) == []
        _fill(full_fs)
        gc = p.run("gc", "--grace-period", "0s")
        assert gc.returncode == 0 and "Traceback" not in gc.stderr, gc.stdout + gc.stderr
        for uuid in uuids:
            assert f"removed pod {uuid}" in gc.stdout, gc.stdout
        assert p.run("list", "--format", "json", check=True).stdout.strip() == "[]"
        assert not [e for e in (p.data / "pods").glob("*/*")] and not [e for e in (p.data / "pods").glob("*/.*")]
        assert _free(full_fs) > 12_000_000
    finally:
        for filler in full_fs.glob("filler-*"):
            filler.unlink()
        p.cleanup()
