"""Files podrun writes where the user says, as root, through the real CLI (SECURITY-TESTS
case 26): ``image export … oci-archive:DEST`` and ``run --uuid-file-save FILE``.

The attacker is an unprivileged user (uid 65534) who can write DEST's directory: a sticky,
world-writable directory they own, where the kernel's fs.protected_symlinks does not stop root
from following their links.  They plant links at DEST and at every temporary name podrun could
be expected to use; podrun must leave the victim file alone.  FIFOs, character devices and
standard output are written in place; a ``kill -9`` never leaves a partial DEST, and the next
export to the same DEST removes the temporary it left.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.faults import EXPORT_CHECKPOINTS
from tests.conftest import ROOT, require_root
from tests.fixtures import images as img
from tests.integration.test_run import Pods

PODRUN = [sys.executable, "-m", "podrun"]
NOBODY = 65534
PRECIOUS = b"root's precious file\n"
# names a writer might put beside DEST: the PID-based one podrun used before (podrun runs as pid
# 1 of a new PID namespace in these tests, so the PID is known) and common conventions
PLAUSIBLE_TEMPS = [f".demo.tar.{pid}.tmp" for pid in range(1, 301)] + [
    ".demo.tar.tmp", "demo.tar.tmp", ".demo.tar.part", "demo.tar.part", ".demo.tar.swp", "demo.tar~", ".demo.tar",
]


class Image:
    def __init__(self, base: Path) -> None:
        self.data = base / "data"
        layout = img.busybox_image(base / "layout").layout
        self.id = self.run("fetch", f"oci:{layout}:latest", check=True).stdout.decode().strip()

    def run(self, *args: str, check: bool = False, prefix: tuple[str, ...] = (), timeout: float = 120,
            env: dict[str, str] | None = None, **kw: object) -> subprocess.CompletedProcess[bytes]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        proc = subprocess.run([*prefix, *PODRUN, "--dir", str(self.data), *args], cwd=ROOT, timeout=timeout,
                              env=dict(os.environ, **(env or {})), **kw)  # type: ignore[call-overload]
        if check and proc.returncode != 0:
            raise AssertionError(f"podrun {args} -> {proc.returncode}: {proc.stderr.decode()}")
        return proc  # type: ignore[no-any-return]

    def export(self, dest: str | Path, **kw: object) -> subprocess.CompletedProcess[bytes]:
        return self.run("image", "export", self.id, f"oci-archive:{dest}", **kw)  # type: ignore[arg-type]

    def assert_archive(self, data: bytes) -> None:
        """*data* is a complete OCI archive of this image."""
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            names = tf.getnames()
            index_file = tf.extractfile("index.json")
            assert index_file is not None
            index = json.load(index_file)
        assert names[:2] == ["oci-layout", "index.json"], names
        assert f"blobs/sha256/{self.id.split(':')[1]}" in names and len(names) == 5
        assert index["manifests"][0]["digest"] == self.id


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    require_root()
    return Image(tmp_path_factory.mktemp("userfiles"))


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.write_bytes(PRECIOUS)
    return v


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A sticky world-writable directory owned by nobody (a user's /tmp-like directory)."""
    d = Path(tempfile.mkdtemp(prefix="podrun-userfiles-", dir="/tmp"))
    os.chown(d, NOBODY, NOBODY)
    d.chmod(0o1777)
    yield d
    shutil.rmtree(d)


def as_nobody(script: str, cwd: Path) -> None:
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "sh", "-ec", script],
                   cwd=cwd, check=True)


def plant_links(d: Path, names: list[str], target: Path) -> None:
    as_nobody(" ".join(["for n in", *names, f"; do ln -s {target} \"$n\"; done"]), d)


def one_line_error(res: subprocess.CompletedProcess[bytes]) -> str:
    err = res.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


class FifoReader(threading.Thread):
    """Reads a FIFO to its end (a reader must exist before podrun's open of it returns)."""

    def __init__(self, fifo: Path) -> None:
        super().__init__(daemon=True)  # on a broken podrun it may block in open() for good
        self.fifo = fifo
        self.data = b""
        self.start()

    def run(self) -> None:
        self.data = self.fifo.read_bytes()

    def result(self) -> bytes:
        self.join(60)
        assert not self.is_alive(), "nothing was written into the FIFO"
        return self.data


# -- export: links planted by another user ---------------------------------------------------------

def test_export_refuses_a_symlink_planted_at_dest(image: Image, shared_dir: Path, victim: Path) -> None:
    plant_links(shared_dir, ["demo.tar"], victim)
    res = image.export(shared_dir / "demo.tar")
    assert res.returncode == 253
    assert one_line_error(res).startswith(f"podrun: refusing to write {shared_dir}/demo.tar: it is a symbolic link")
    assert victim.read_bytes() == PRECIOUS
    assert os.listdir(shared_dir) == ["demo.tar"] and os.readlink(shared_dir / "demo.tar") == str(victim)


def test_export_refuses_a_dangling_symlink_at_dest(image: Image, shared_dir: Path, tmp_path: Path) -> None:
    plant_links(shared_dir, ["demo.tar"], tmp_path / "created-by-root")
    assert image.export(shared_dir / "demo.tar").returncode == 253
    assert not (tmp_path / "created-by-root").exists()


def test_export_never_follows_links_planted_at_temporary_names(image: Image, shared_dir: Path,
                                                               victim: Path) -> None:
    plant_links(shared_dir, PLAUSIBLE_TEMPS, victim)
    res = image.export(shared_dir / "demo.tar", prefix=("unshare", "--pid", "--fork", "--"))
    assert res.returncode == 0, res.stderr
    assert victim.read_bytes() == PRECIOUS
    assert sorted(os.listdir(shared_dir)) == sorted([*PLAUSIBLE_TEMPS, "demo.tar"])
    assert all(os.readlink(shared_dir / n) == str(victim) for n in PLAUSIBLE_TEMPS)
    dest = shared_dir / "demo.tar"
    assert stat.S_ISREG(dest.lstat().st_mode) and dest.lstat().st_uid == 0
    image.assert_archive(dest.read_bytes())


def test_export_replaces_a_regular_dest_and_the_archive_fetches_back(image: Image, tmp_path: Path) -> None:
    dest = tmp_path / "demo.tar"
    dest.write_text("an older export")
    keep = tmp_path / "hardlink"
    os.link(dest, keep)
    assert image.export(dest).returncode == 0
    assert keep.read_text() == "an older export"  # replaced by rename, not written through
    image.assert_archive(dest.read_bytes())
    again = subprocess.run([*PODRUN, "--dir", str(tmp_path / "d2"), "fetch", f"oci-archive:{dest}"], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    assert again.stdout.strip() == image.id
    assert sorted(os.listdir(tmp_path)) == ["d2", "demo.tar", "hardlink"]


@pytest.mark.parametrize("make", ["dir", "socket"])
def test_export_refuses_other_kinds_of_dest(image: Image, tmp_path: Path, make: str) -> None:
    dest = tmp_path / "dest"
    if make == "dir":
        dest.mkdir()
    else:
        subprocess.run([sys.executable, "-c", f"import socket; socket.socket(socket.AF_UNIX).bind({str(dest)!r})"],
                       check=True)
    res = image.export(dest)
    assert res.returncode == 253
    kind = "a directory" if make == "dir" else "a socket"
    assert one_line_error(res) == f"podrun: refusing to write {dest}: it is {kind}\n"


# -- export: written in place ------------------------------------------------------------------

def test_export_into_a_fifo(image: Image, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = FifoReader(fifo)
    res = image.export(fifo)
    image.assert_archive(received.result())
    assert res.returncode == 0, res.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and os.listdir(tmp_path) == ["pipe"]


def test_export_into_a_character_device(image: Image, tmp_path: Path) -> None:
    node = tmp_path / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    before = node.lstat()
    assert image.export(node).returncode == 0
    after = node.lstat()
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert os.listdir(tmp_path) == ["null"]


def test_export_to_dev_null_keeps_the_device(image: Image) -> None:
    before = os.lstat("/dev/null")
    assert image.export("/dev/null").returncode == 0
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert not [n for n in os.listdir("/dev") if n.startswith(".null.")]


@pytest.mark.parametrize("dest", ["-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_export_to_standard_output_through_a_pipe(image: Image, dest: str) -> None:
    res = subprocess.run(["bash", "-c", 'set -o pipefail; "$@" | tar t', "sh", *PODRUN, "--dir", str(image.data),
                          "image", "export", image.id, f"oci-archive:{dest}"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[:2] == ["oci-layout", "index.json"] and len(res.stdout.splitlines()) == 5
    out = image.export(dest)
    image.assert_archive(out.stdout)
    assert not (ROOT / "-").exists()


def test_export_to_an_inherited_descriptor(image: Image) -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb") as rf:
        proc = subprocess.Popen([*PODRUN, "--dir", str(image.data), "image", "export", image.id,
                                 f"oci-archive:/dev/fd/{w}"], cwd=ROOT, pass_fds=(w,), stderr=subprocess.PIPE)
        os.close(w)
        data = rf.read()
    assert proc.wait(timeout=60) == 0
    image.assert_archive(data)


def test_export_refuses_to_write_to_a_terminal(image: Image) -> None:
    master, slave = os.openpty()
    try:
        res = image.export("-", stdout=slave)
        os.set_blocking(master, False)
        with pytest.raises(BlockingIOError):
            os.read(master, 100)
    finally:
        os.close(master)
        os.close(slave)
    assert res.returncode == 253 and "terminal" in one_line_error(res).split("\n")[0]


# -- export: kill -9 midway ----------------------------------------------------------------------

@pytest.mark.parametrize("checkpoint", EXPORT_CHECKPOINTS)
def test_kill9_never_leaves_a_partial_dest_and_the_next_export_cleans_up(
    image: Image, tmp_path: Path, checkpoint: str
) -> None:
    """DEST keeps its old content (or stays absent); the killed run's temporary stays until the
    next export to the same DEST removes it."""
    out = tmp_path / "out"
    out.mkdir()
    old = out / "old.tar"
    old.write_text("previous export")
    for dest, before in ((old, "previous export"), (out / "new.tar", None)):
        res = image.export(dest, env={"PODRUN_FAULT": checkpoint})
        assert res.returncode == -9, res.stderr
        assert (dest.read_text() if dest.exists() else None) == before
        left = [n for n in os.listdir(out) if n.startswith(f".{dest.name}.")]
        assert len(left) == 1 and left[0].endswith(".tmp") and (out / left[0]).stat().st_size > 0
        assert image.export(dest).returncode == 0
        image.assert_archive(dest.read_bytes())
    assert sorted(os.listdir(out)) == ["new.tar", "old.tar"]


# -- run --uuid-file-save ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pods(image: Image) -> Iterator[Pods]:
    p = Pods(image.data)
    yield p
    p.cleanup()
    assert p.run("list", "--format", "json").stdout.strip() == "[]"


def run_true(pods: Pods, image: Image, uuid_file: Path) -> subprocess.CompletedProcess[str]:
    return pods.run("run", "--net", "none", "--uuid-file-save", str(uuid_file), image.id, "--exec", "/bin/true")


def test_uuid_file_save_refuses_a_planted_symlink(pods: Pods, image: Image, shared_dir: Path, victim: Path) -> None:
    plant_links(shared_dir, ["uuid"], victim)
    res = run_true(pods, image, shared_dir / "uuid")
    assert res.returncode == 253
    assert res.stderr.startswith(f"podrun: refusing to write {shared_dir}/uuid: it is a symbolic link")
    assert res.stderr.count("\n") == 1
    assert victim.read_bytes() == PRECIOUS and os.listdir(shared_dir) == ["uuid"]
    assert json.loads(pods.run("list", "--format", "json").stdout) == []  # refused before any pod existed


def test_uuid_file_save_into_a_fifo(pods: Pods, image: Image, tmp_path: Path) -> None:
    fifo = tmp_path / "uuid"
    os.mkfifo(fifo)
    received = FifoReader(fifo)
    res = run_true(pods, image, fifo)
    uuid = received.result().decode()
    assert res.returncode == 0, res.stderr
    assert uuid.endswith("\n") and len(uuid.strip()) == 36
    assert uuid.strip() in [p["uuid"] for p in json.loads(pods.run("list", "--format", "json").stdout)]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_uuid_file_save_ignores_links_at_temporary_names(pods: Pods, image: Image, shared_dir: Path,
                                                         victim: Path) -> None:
    names = [f".uuid.{pid}.tmp" for pid in range(1, 301)] + [".uuid.tmp", "uuid.tmp"]
    plant_links(shared_dir, names, victim)
    res = run_true(pods, image, shared_dir / "uuid")
    assert res.returncode == 0, res.stderr
    assert victim.read_bytes() == PRECIOUS
    assert len((shared_dir / "uuid").read_text().strip()) == 36
    assert sorted(os.listdir(shared_dir)) == sorted([*names, "uuid"])
