"""``fsutil.user_output``: files podrun writes where the user says (SECURITY-TESTS case 26).

Real files in a temporary directory, no root needed (cases needing mknod or chown skip without
it).  No path under /dev is ever handed to the helper here: a broken helper (or a mutant of it)
must not be able to replace a host device node; the CLI tests in
tests/integration/test_user_files.py use /dev/null and /dev/stdout.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from podrun import fsutil
from podrun.errors import UsageError

FIXED_TEMP = ".dest.planted.tmp"  # not a temp_name() name: the stale-temporary sweep ignores it


def entries(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def umask() -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("Umask:"))
    return int(line.split()[1], 8)


def fd_flags(fd: int) -> int:
    line = next(x for x in Path(f"/proc/self/fdinfo/{fd}").read_text().splitlines() if x.startswith("flags:"))
    return int(line.split()[1], 8)


def flocked_by_other(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def refusal(path: Path | str, why: str) -> str:
    return f"refusing to write {path}: {why}"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.write_text("precious\n")
    return v


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


@pytest.fixture
def fixed_temp(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the random temporary name predictable, to plant things at it."""
    monkeypatch.setattr(fsutil, "temp_name", lambda name: f".{name}.planted.tmp")


@pytest.fixture
def fifo_reader() -> Iterator[Callable[[Path], Callable[[], bytes]]]:
    """Start a thread reading a FIFO to its end; call the result to join it and get the data."""
    threads: list[threading.Thread] = []

    def start(path: Path) -> Callable[[], bytes]:
        got: list[bytes] = []
        t = threading.Thread(target=lambda: got.append(path.read_bytes()), daemon=True)
        t.start()
        threads.append(t)

        def finish() -> bytes:
            t.join(10)
            return got[0]

        return finish

    yield start
    for t in threads:
        t.join(10)


# -- which paths name an open descriptor ---------------------------------------------------------

@pytest.mark.parametrize(("path", "fd"), [
    ("-", 1), ("/dev/stdout", 1), ("/dev/stderr", 2), ("/dev/fd/0", 0), ("/dev/fd/7", 7),
    ("/proc/self/fd/12", 12), ("/proc/thread-self/fd/3", 3), ("/dev/fd/007", 7),
])
def test_fd_alias_names_an_open_descriptor(path: str, fd: int) -> None:
    assert fsutil.fd_alias(path) == fd


@pytest.mark.parametrize("path", [
    "/dev/stdin", "/dev/fd/", "/dev/fd/x", "/dev/fd/1/", "/dev/fd/-1", "/dev/fd/\u00b2", "/dev/fd/\u0663",
    "/proc/1/fd/3", "/proc/self/fd", "dev/stdout", "/dev//stdout", "/dev/stdout/", "--", "out.tar", "",
    "/dev/fdx/1", "x/dev/fd/1",
])
def test_other_paths_are_not_aliases(path: str) -> None:
    assert fsutil.fd_alias(path) is None


def test_open_flags_are_exact() -> None:
    assert fsutil.USER_TEMP_FLAGS == os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    assert fsutil.IN_PLACE_FLAGS == os.O_WRONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


# -- a new or regular DEST: random temporary, then rename --------------------------------------

def test_new_file_goes_through_a_locked_random_temporary(out_dir: Path) -> None:
    dest = out_dir / "dest"
    with fsutil.user_output(str(dest)) as out:
        assert out.in_place is False
        assert fd_flags(out._dir_fd) & (os.O_DIRECTORY | os.O_CLOEXEC) == os.O_DIRECTORY | os.O_CLOEXEC
        [temp] = entries(out_dir)
        assert fsutil._is_temp_of(temp, "dest") and temp != FIXED_TEMP
        assert os.path.samestat(os.fstat(out.fd), (out_dir / temp).lstat())
        flags = fd_flags(out.fd)
        assert flags & (os.O_ACCMODE | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_APPEND) == \
            os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        assert flocked_by_other(out_dir / temp)  # a sweeping podrun sees the writer alive
        fsutil.write_all(out.fd, b"archive")
        assert not dest.exists()  # nothing at DEST until complete
    assert dest.read_bytes() == b"archive" and entries(out_dir) == ["dest"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o666 & ~umask()
    assert out.fd == -1 and not flocked_by_other(dest)


def test_two_outputs_use_different_temporaries(out_dir: Path) -> None:
    with fsutil.user_output(str(out_dir / "dest")), fsutil.user_output(str(out_dir / "dest")):
        assert len(entries(out_dir)) == 2


def test_regular_dest_is_replaced_not_written_through(out_dir: Path, tmp_path: Path) -> None:
    dest = out_dir / "dest"
    dest.write_text("old")
    other = tmp_path / "hardlink"
    os.link(dest, other)
    with fsutil.user_output(str(dest)) as out:
        fsutil.write_all(out.fd, b"new")
        assert dest.read_text() == "old"
    assert dest.read_text() == "new" and other.read_text() == "old"


def test_relative_dest_is_in_the_current_directory(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(out_dir)
    with fsutil.user_output("dest") as out:
        fsutil.write_all(out.fd, b"x")
    assert (out_dir / "dest").read_bytes() == b"x" and entries(out_dir) == ["dest"]


def test_failure_while_writing_leaves_dest_as_it_was(out_dir: Path) -> None:
    dest = out_dir / "dest"
    dest.write_text("old")
    with pytest.raises(RuntimeError), fsutil.user_output(str(dest)) as out:
        fsutil.write_all(out.fd, b"half")
        raise RuntimeError("disk on fire")
    assert dest.read_text() == "old" and entries(out_dir) == ["dest"]


def test_close_without_commit_removes_the_temporary(out_dir: Path) -> None:
    out = fsutil.user_output(str(out_dir / "dest")).open()
    fsutil.write_all(out.fd, b"half")
    out.close()
    out.close()  # twice is harmless
    assert entries(out_dir) == [] and out.fd == -1


def test_commit_then_close_keeps_dest(out_dir: Path) -> None:
    out = fsutil.user_output(str(out_dir / "dest")).open()
    fsutil.write_all(out.fd, b"all")
    out.commit()
    assert entries(out_dir) == ["dest"]
    out.close()
    assert (out_dir / "dest").read_bytes() == b"all"


def test_temporary_already_removed_is_no_error_on_close(out_dir: Path) -> None:
    out = fsutil.user_output(str(out_dir / "dest")).open()
    [temp] = entries(out_dir)
    (out_dir / temp).unlink()
    out.close()
    assert entries(out_dir) == []


# -- what is planted at the temporary name is never followed or truncated -------------------------

def test_symlink_at_the_temporary_name_is_not_followed(out_dir: Path, victim: Path, fixed_temp: None) -> None:
    (out_dir / FIXED_TEMP).symlink_to(victim)
    with pytest.raises(FileExistsError):
        fsutil.user_output(str(out_dir / "dest")).open()
    assert victim.read_text() == "precious\n"
    assert os.readlink(out_dir / FIXED_TEMP) == str(victim) and entries(out_dir) == [FIXED_TEMP]


def test_dangling_symlink_at_the_temporary_name_creates_nothing(out_dir: Path, tmp_path: Path,
                                                                fixed_temp: None) -> None:
    (out_dir / FIXED_TEMP).symlink_to(tmp_path / "created")
    with pytest.raises(FileExistsError):
        fsutil.user_output(str(out_dir / "dest")).open()
    assert not (tmp_path / "created").exists()


def test_file_at_the_temporary_name_is_not_truncated(out_dir: Path, fixed_temp: None) -> None:
    (out_dir / FIXED_TEMP).write_text("theirs")
    with pytest.raises(FileExistsError):
        fsutil.user_output(str(out_dir / "dest")).open()
    assert (out_dir / FIXED_TEMP).read_text() == "theirs"


# -- refusals --------------------------------------------------------------------------------

def test_symlink_dest_is_refused(out_dir: Path, victim: Path) -> None:
    dest = out_dir / "dest"
    dest.symlink_to(victim)
    with pytest.raises(UsageError) as caught:
        fsutil.user_output(str(dest)).open()
    assert str(caught.value) == refusal(dest, "it is a symbolic link, which podrun does not follow (whoever can "
                                              "write its directory may have planted it); name the file it points to")
    assert victim.read_text() == "precious\n" and os.readlink(dest) == str(victim) and entries(out_dir) == ["dest"]


def test_dangling_symlink_dest_is_refused(out_dir: Path, tmp_path: Path) -> None:
    (out_dir / "dest").symlink_to(tmp_path / "created")
    with pytest.raises(UsageError, match="symbolic link"):
        fsutil.user_output(str(out_dir / "dest")).open()
    assert not (tmp_path / "created").exists()


@pytest.mark.parametrize("name", ["sub", "sub/", "sub/.", "sub/..", "."])
def test_directory_dest_is_refused(out_dir: Path, name: str) -> None:
    (out_dir / "sub").mkdir()
    with pytest.raises(UsageError) as caught:
        fsutil.user_output(f"{out_dir}/{name}").open()
    assert str(caught.value) == refusal(f"{out_dir}/{name}", "it is a directory")
    assert entries(out_dir) == ["sub"] and entries(out_dir / "sub") == []


def test_socket_dest_is_refused(out_dir: Path) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(out_dir / "dest"))
        with pytest.raises(UsageError) as caught:
            fsutil.user_output(str(out_dir / "dest")).open()
    assert str(caught.value) == refusal(out_dir / "dest", "it is a socket")
    assert stat.S_ISSOCK((out_dir / "dest").lstat().st_mode) and entries(out_dir) == ["dest"]


def mknod_or_skip(path: Path, mode: int, dev: int) -> None:
    try:
        os.mknod(path, mode | 0o600, dev)
    except PermissionError:
        pytest.skip("needs root (mknod)")


def test_block_device_dest_is_refused(out_dir: Path) -> None:
    mknod_or_skip(out_dir / "dest", stat.S_IFBLK, os.makedev(7, 255))
    with pytest.raises(UsageError) as caught:
        fsutil.user_output(str(out_dir / "dest")).open()
    assert str(caught.value) == refusal(out_dir / "dest", "it is a block device")
    assert stat.S_ISBLK((out_dir / "dest").lstat().st_mode) and entries(out_dir) == ["dest"]


def test_missing_directory_is_an_os_error(tmp_path: Path) -> None:
    out = fsutil.user_output(str(tmp_path / "nope" / "dest"))
    with pytest.raises(FileNotFoundError):
        out.open()
    assert out.fd == -1
    os.fstat(1)  # closing after the failure closed only what it had opened


@pytest.mark.parametrize(("make", "kind"), [
    (lambda p: p.symlink_to("/etc/passwd"), "a symbolic link"),
    (lambda p: p.mkdir(), "a directory"),
    (lambda p: os.mkfifo(p), "not a regular file"),
])
def test_dest_swapped_while_writing_is_not_replaced(out_dir: Path, make: Callable[[Path], None], kind: str) -> None:
    dest = out_dir / "dest"
    out = fsutil.user_output(str(dest)).open()
    fsutil.write_all(out.fd, b"archive")
    make(dest)  # planted after podrun checked DEST
    with pytest.raises(UsageError) as caught:
        out.commit()
    out.close()
    assert str(caught.value) == refusal(dest, f"it became {kind} while podrun wrote it")
    assert entries(out_dir) == ["dest"] and not stat.S_ISREG(dest.lstat().st_mode)


def test_dest_regular_again_before_commit_is_replaced(out_dir: Path) -> None:
    dest = out_dir / "dest"
    with fsutil.user_output(str(dest)) as out:
        fsutil.write_all(out.fd, b"new")
        dest.write_text("appeared meanwhile")
    assert dest.read_bytes() == b"new"


# -- in place: FIFOs, character devices, open descriptors ------------------------------------------

def test_fifo_is_written_in_place(out_dir: Path, fifo_reader: Callable[[Path], Callable[[], bytes]]) -> None:
    dest = out_dir / "dest"
    os.mkfifo(dest)
    received = fifo_reader(dest)
    with fsutil.user_output(str(dest)) as out:
        assert out.in_place and entries(out_dir) == ["dest"]
        assert fd_flags(out.fd) & (os.O_ACCMODE | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_APPEND) == \
            os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
        fsutil.write_all(out.fd, b"streamed")
    assert received() == b"streamed"  # close() ended the stream
    assert stat.S_ISFIFO(dest.lstat().st_mode) and entries(out_dir) == ["dest"]


def test_character_device_is_written_in_place(out_dir: Path) -> None:
    dest = out_dir / "null"
    mknod_or_skip(dest, stat.S_IFCHR, os.makedev(1, 3))
    before = dest.lstat()
    try:
        out = fsutil.user_output(str(dest)).open()
    except PermissionError:
        pytest.skip("device nodes cannot be opened on this filesystem (nodev)")
    with out:
        assert out.in_place
        fsutil.write_all(out.fd, b"x" * 100_000)
    after = dest.lstat()
    assert stat.S_ISCHR(after.st_mode) and after.st_rdev == os.makedev(1, 3) and after.st_ino == before.st_ino
    assert entries(out_dir) == ["null"]


def test_dest_replaced_between_check_and_open_is_refused(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest, other = out_dir / "dest", out_dir / "other"
    os.mkfifo(dest)
    os.mkfifo(other)
    reader = os.open(dest, os.O_RDONLY | os.O_NONBLOCK)  # so the writer's open does not block
    real_lstat = fsutil._lstat
    monkeypatch.setattr(fsutil, "_lstat", lambda name, dir_fd: real_lstat("other", dir_fd))
    try:
        with pytest.raises(UsageError) as caught:
            fsutil.user_output(str(dest)).open()
    finally:
        os.close(reader)
    assert str(caught.value) == refusal(dest, "it was replaced while podrun opened it")


def test_open_descriptor_name_writes_to_that_descriptor(out_dir: Path) -> None:
    r, w = os.pipe()
    try:
        with fsutil.user_output(f"/proc/self/fd/{w}") as out:
            assert out.in_place and out.fd != w
            fsutil.write_all(out.fd, b"piped")
        os.write(w, b"!")  # ours was a duplicate: the caller's descriptor stays open
        assert os.read(r, 100) == b"piped!"
        os.fstat(1)  # closing closed only the duplicate
    finally:
        os.close(r)
        os.close(w)
    assert entries(out_dir) == []


def test_dash_is_standard_output(capfd: pytest.CaptureFixture[str], out_dir: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(out_dir)
    with fsutil.user_output("-") as out:
        assert out.in_place
        fsutil.write_all(out.fd, b"to stdout")
    assert capfd.readouterr().out == "to stdout" and entries(out_dir) == []
    os.fstat(1)  # still open: we wrote to and closed a duplicate


def test_closed_descriptor_name_fails(out_dir: Path) -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(OSError) as caught:
        fsutil.user_output(f"/dev/fd/{w}").open()
    assert caught.value.errno == errno.EBADF


# -- temporaries left by kill -9 ------------------------------------------------------------------

@pytest.mark.parametrize(("entry", "ours"), [
    (".dest.0123456789ab.tmp", True),
    (".dest.00000000000f.tmp", True),
    (".dest.0123456789a.tmp", False),
    (".dest.0123456789abc.tmp", False),
    (".dest.0123456789AB.tmp", False),
    (".dest.0123456789ag.tmp", False),
    (".dest.0123456789aX.tmp", False),
    ("dest.0123456789ab.tmp", False),
    (".dest.0123456789ab.tm", False),
    (".dest.0123456789ab.tmpx", False),
    (".dest-0123456789ab.tmp", False),
    (".other.0123456789ab.tmp", False),
    (".dest.tmp", False),
])
def test_temporary_names(entry: str, ours: bool) -> None:
    assert fsutil._is_temp_of(entry, "dest") is ours


def test_temp_name_matches_its_recogniser() -> None:
    assert fsutil._is_temp_of(fsutil.temp_name("dest"), "dest")


def test_stale_temporary_is_removed_by_the_next_open(out_dir: Path) -> None:
    stale = out_dir / ".dest.0123456789ab.tmp"
    stale.write_text("half an archive")
    with fsutil.user_output(str(out_dir / "dest")):
        assert not stale.exists()
    assert entries(out_dir) == ["dest"]


def test_only_stale_temporaries_of_this_dest_are_removed(out_dir: Path, victim: Path) -> None:
    d = out_dir
    # in the sorted order the sweep takes, what it must skip comes before what it must remove
    (d / ".dest.00000000000a.tmp").symlink_to(victim)  # planted: not ours
    os.mkfifo(d / ".dest.00000000000b.tmp")  # planted: must not block either
    (d / ".dest.00000000000c.tmp").write_text("live")
    (d / ".dest.00000000000d.tmp").write_text("stale")
    (d / ".dest.00000000000f.tmp").write_text("stale too")
    (d / ".other.00000000000e.tmp").write_text("another dest's")
    (d / ".dest.tmp").write_text("not our pattern")
    live = os.open(d / ".dest.00000000000c.tmp", os.O_RDONLY)
    fcntl.flock(live, fcntl.LOCK_EX)  # a writer still at work
    dir_fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fsutil.remove_stale_temps(dir_fd, "dest") == [".dest.00000000000d.tmp", ".dest.00000000000f.tmp"]
    finally:
        os.close(dir_fd)
        os.close(live)
    assert entries(d) == [".dest.00000000000a.tmp", ".dest.00000000000b.tmp", ".dest.00000000000c.tmp",
                          ".dest.tmp", ".other.00000000000e.tmp"]
    assert victim.read_text() == "precious\n"


@pytest.mark.root
def test_another_users_temporary_is_kept(out_dir: Path) -> None:
    theirs = out_dir / ".dest.00000000000a.tmp"
    theirs.write_text("theirs")
    os.chown(theirs, 65534, 65534)
    dir_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fsutil.remove_stale_temps(dir_fd, "dest") == []
    finally:
        os.close(dir_fd)
    assert theirs.read_text() == "theirs"


def test_stale_temporary_swapped_before_removal_is_kept(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale = out_dir / ".dest.00000000000a.tmp"
    stale.write_text("stale")
    (out_dir / "newer").write_text("newer")
    real_lstat = fsutil._lstat
    monkeypatch.setattr(fsutil, "_lstat", lambda name, dir_fd: real_lstat("newer", dir_fd))
    dir_fd = os.open(out_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert fsutil.remove_stale_temps(dir_fd, "dest") == []
    finally:
        os.close(dir_fd)
    assert stale.exists()


def test_unreadable_directory_skips_the_sweep() -> None:
    assert fsutil.remove_stale_temps(-1, "dest") == []


def test_temporary_taken_by_a_concurrent_sweep_is_reported(out_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_flock = fcntl.flock

    def swept_first(fd: int, op: int) -> None:  # another podrun removes our file before we lock it
        for e in entries(out_dir):
            os.unlink(out_dir / e)
        real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", swept_first)
    with pytest.raises(OSError) as caught:
        fsutil.user_output(str(out_dir / "dest")).open()
    assert caught.value.errno == errno.EAGAIN and caught.value.filename == str(out_dir / "dest")
    assert caught.value.strerror == "temporary file removed by a concurrent podrun, try again"
    assert entries(out_dir) == []
