"""The app's user and groups from the image's own files (podrun.stage2.app.lookup_user),
SECURITY-TESTS 27 and 28, on throwaway root directories: no root needed (openat2 works on any
directory).  tests/integration/test_escapes.py runs the same rules in real pods."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.stage2.app import MAX_DB_BYTES, MAX_ID, SetupError, _path_error, lookup_user, parse_id, read_db

PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "# a comment:x:5:5::/c:\n"
          "daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n"
          "short:x\n"
          "app:x:1000:1001:App:/home/app:/bin/sh\n"
          "nohome:x:1002:1002\n"
          "emptyhome:x:1003:1003:::/bin/sh\n"
          "five:x:1004:1004:gecos\n"
          "six:x:1005:1005::/six\n"
          "app:x:2000:2000:second app entry:/other:/bin/sh\n"
          "nobody:x:65534:65534::/nonexistent:/bin/false\n")
GROUP = ("root:x:0:\n"
         "wheel:x:10:root,app\n"
         "audio:x:29:app,nobody\n"
         "staff:x:50:appx,xapp\n"
         "users:x:100\n"
         "two:x\n"
         "appgrp:x:1001:\n"
         "nogroup:x:65534:\n")


@pytest.fixture
def root(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(PASSWD)
    (tmp_path / "etc" / "group").write_text(GROUP)
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    yield tmp_path, fd
    os.close(fd)


def lookup(root: tuple[Path, int], user: str, group: str | None = None) -> tuple[int, int, list[int], str]:
    return lookup_user(user, group, root[1])


@pytest.mark.parametrize(("user", "group", "expected"), [
    ("root", None, (0, 0, [0, 10], "/root")),
    ("0", None, (0, 0, [0, 10], "/root")),
    ("app", None, (1000, 1001, [10, 29, 1001], "/home/app")),       # first entry wins; memberships by name
    ("1000", None, (1000, 1001, [10, 29, 1001], "/home/app")),
    ("2000", None, (2000, 2000, [10, 29, 2000], "/other")),          # the uid's own entry
    ("nobody", None, (65534, 65534, [29, 65534], "/nonexistent")),
    ("daemon", None, (1, 1, [1], "/usr/sbin")),                      # no memberships: its own group only
    ("nohome", None, (1002, 1002, [1002], "/")),                     # fields missing: home /
    ("emptyhome", None, (1003, 1003, [1003], "/")),
    ("five", None, (1004, 1004, [1004], "/")),                       # five fields: no home field
    ("six", None, (1005, 1005, [1005], "/six")),                     # six fields: no shell field
    ("4321", None, (4321, 0, [0], "/")),                             # no entry: gid 0 (runc)
    ("4321", "77", (4321, 77, [77], "/")),
    ("app", "audio", (1000, 29, [29], "/home/app")),                 # explicit group: no memberships
    ("app", "0", (1000, 0, [0], "/home/app")),
    ("root", "nogroup", (0, 65534, [65534], "/root")),
    ("root", "users", (0, 100, [100], "/root")),                     # a group line without its member field
    ("+7", None, (7, 0, [0], "/")),
    (str(MAX_ID), None, (MAX_ID, 0, [0], "/")),
    ("0", str(MAX_ID), (0, MAX_ID, [MAX_ID], "/root")),
])
def test_runc_rules(root: tuple[Path, int], user: str, group: str | None,
                    expected: tuple[int, int, list[int], str]) -> None:
    assert lookup(root, user, group) == expected


@pytest.mark.parametrize(("user", "group", "fragment"), [
    ("-1", None, "user id '-1' is out of range"),
    ("4294967295", None, "user id '4294967295' is out of range"),
    (str(MAX_ID + 1), None, "out of range (0-2147483647"),
    ("0", "-1", "group id '-1' is out of range"),
    ("0", "4294967295", "group id '4294967295' is out of range"),
    ("ghost", None, "user 'ghost' not found in the image's /etc/passwd"),
    ("app", "ghosts", "group 'ghosts' not found in the image's /etc/group"),
    ("a comment", None, "user 'a comment' not found"),  # comment lines are not entries
    ("short", None, "user 'short' not found"),          # nor lines with too few fields
    ("users", None, "user 'users' not found"),
    ("X1", None, "user 'X1' not found in the image's /etc/passwd"),       # a name, not a number
    ("app", "two", "group 'two' not found in the image's /etc/group"),  # a line without a gid
])
def test_refusals(root: tuple[Path, int], user: str, group: str | None, fragment: str) -> None:
    with pytest.raises(SetupError) as info:
        lookup(root, user, group)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("passwd", "fragment"), [
    ("evil:x:-1:0::/:\n", "user 'evil' has uid '-1' is out of range"),
    ("evil:x:4294967295:0::/:\n", "has uid '4294967295' is out of range"),
    ("evil:x:0:-1::/:\n", "the image's /etc/passwd: user 'evil' has gid '-1' is out of range (0-2147483647; "
                           "-1 would mean \"unchanged\")"),
    ("evil:x:0:4294967296::/:\n", "has gid '4294967296'"),
    ("evil:x:zero:0::/:\n", "has uid 'zero' is not a number"),
    ("evil:x:٣:0::/:\n", "is not a number"),
])
def test_hostile_passwd_ids(root: tuple[Path, int], passwd: str, fragment: str) -> None:
    (root[0] / "etc" / "passwd").write_text(passwd)
    with pytest.raises(SetupError) as info:
        lookup(root, "evil")
    assert fragment in str(info.value)


def test_hostile_group_gid_of_a_membership(root: tuple[Path, int]) -> None:
    (root[0] / "etc" / "group").write_text("evil:x:-1:app\n")
    with pytest.raises(SetupError, match="group 'evil' has gid '-1' is out of range"):
        lookup(root, "app")
    assert lookup(root, "app", "0") == (1000, 0, [0], "/home/app")  # an explicit group reads no memberships


def test_hostile_gid_of_a_named_group(root: tuple[Path, int]) -> None:
    (root[0] / "etc" / "group").write_text("bad:x:-5:\n")
    with pytest.raises(SetupError) as info:
        lookup(root, "app", "bad")
    assert str(info.value) == ("the image's /etc/group: group 'bad' has gid '-5' is out of range (0-2147483647; "
                               "-1 would mean \"unchanged\")")


def test_numeric_user_skips_entries_with_bad_uids(root: tuple[Path, int]) -> None:
    (root[0] / "etc" / "passwd").write_text("bad:x:x1:0::/bad:\nok:x:5:6::/ok:\n")
    assert lookup(root, "5") == (5, 6, [6], "/ok")


def test_missing_files_are_empty_databases(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        assert lookup_user("0", None, fd) == (0, 0, [0], "/")
        assert lookup_user("12", "34", fd) == (12, 34, [34], "/")
        with pytest.raises(SetupError, match="not found"):
            lookup_user("root", None, fd)
        assert read_db(fd, "/etc/passwd") == []
    finally:
        os.close(fd)


def test_files_that_are_not_regular_are_refused(root: tuple[Path, int]) -> None:
    passwd = root[0] / "etc" / "passwd"
    passwd.unlink()
    os.mkfifo(passwd)  # would block a plain open for reading
    with pytest.raises(SetupError, match="the image's /etc/passwd is not a regular file"):
        lookup(root, "root")
    passwd.unlink()
    passwd.mkdir()
    with pytest.raises(SetupError, match="is not a regular file"):
        lookup(root, "0")


def test_links_stay_inside_the_root(root: tuple[Path, int], tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside") / "passwd"
    outside.write_text("root:x:0:0::/outside:\n")
    passwd = root[0] / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to(outside)  # absolute: resolved inside the root, where it does not exist
    assert read_db(root[1], "/etc/passwd") == []
    passwd.unlink()
    passwd.symlink_to("../../../../../../../../etc/shadow")  # clamped at the root
    assert read_db(root[1], "/etc/passwd") == []
    (root[0] / "etc" / "real").write_text("root:x:0:0::/inside:\n")
    passwd.unlink()
    passwd.symlink_to("/etc/real")
    assert lookup(root, "root")[3] == "/inside"


def test_links_to_proc_never_reach_the_hosts(root: tuple[Path, int]) -> None:
    passwd = root[0] / "etc" / "passwd"
    passwd.unlink()
    passwd.symlink_to("/proc/self/environ")  # the image has no /proc: missing, an empty database
    assert read_db(root[1], "/etc/passwd") == []
    (root[0] / "proc").symlink_to("/proc")  # a link to "/proc" is a link to itself inside the root
    with pytest.raises(SetupError, match="leads through a /proc magic link or too many symbolic links"):
        read_db(root[1], "/etc/passwd")


def test_size_bound(root: tuple[Path, int]) -> None:
    line = "u:x:1:1::/:\n"
    passwd = root[0] / "etc" / "passwd"
    passwd.write_text(line * (MAX_DB_BYTES // len(line)) + "x" * (MAX_DB_BYTES % len(line)))
    assert os.path.getsize(passwd) == MAX_DB_BYTES
    assert len(read_db(root[1], "/etc/passwd")) == MAX_DB_BYTES // len(line) + 1
    with open(passwd, "a") as f:
        f.write("\n")
    with pytest.raises(SetupError, match="larger than 4 MiB"):
        read_db(root[1], "/etc/passwd")


def test_records_split_on_colons_and_lines(root: tuple[Path, int]) -> None:
    (root[0] / "etc" / "group").write_bytes(b"a:x:1:u,v\n\n#c:x:2:\nb:x:2:\xff\nc::3:w\r\n")
    assert read_db(root[1], "/etc/group") == [["a", "x", "1", "u,v"], ["b", "x", "2", "\ufffd"], ["c", "", "3", "w"]]


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("00", 0), ("+5", 5), ("-0", 0), (" 7 ", 7),
                                             ("2147483647", MAX_ID)])
def test_parse_id_accepts(text: str, value: int) -> None:
    assert parse_id(text, "user id") == value


@pytest.mark.parametrize(("text", "fragment"), [
    ("-1", "out of range"), ("2147483648", "out of range"), ("4294967295", "out of range"),
    ("", "not a number"), ("-", "not a number"), ("1.0", "not a number"), ("0x10", "not a number"),
    ("١", "not a number"), ("1 2", "not a number"), ("--1", "not a number"), ("X1", "not a number"),
    ("+-1", "not a number"),
])
def test_parse_id_refuses(text: str, fragment: str) -> None:
    with pytest.raises(SetupError) as info:
        parse_id(text, "gid")
    assert fragment in str(info.value) and f"gid {text!r}" in str(info.value)


def test_open_errors_name_the_file(root: tuple[Path, int]) -> None:
    long_name = "/etc/" + "p" * 300
    with pytest.raises(SetupError) as info:
        read_db(root[1], long_name)
    assert str(info.value) == f"the image's {long_name!r}: File name too long"


@pytest.mark.parametrize(("exc", "message"), [
    (OSError(errno.ELOOP, "openat2: Too many levels of symbolic links"),
     "working directory '/w' leads through a /proc magic link or too many symbolic links (refused)"),
    (OSError(errno.EACCES, "openat2: Permission denied", "w"), "working directory '/w': Permission denied"),
    (OSError(errno.EACCES, "Permission denied"), "working directory '/w': Permission denied"),
    (OSError("mount: refused: by policy"), "working directory '/w': by policy"),
])
def test_path_errors_drop_the_call_name(exc: OSError, message: str) -> None:
    assert str(_path_error("working directory", "/w", exc)) == message


class ShortReads:
    """os.read that returns at most 1 MiB per call (as a kernel may), counting what it returned."""

    def __init__(self) -> None:
        self.real = os.read
        self.total = 0

    def __call__(self, fd: int, size: int) -> bytes:
        chunk = self.real(fd, min(size, 1 << 20))
        self.total += len(chunk)
        return chunk


def test_short_reads_are_joined_and_bounded(root: tuple[Path, int], monkeypatch: pytest.MonkeyPatch) -> None:
    passwd = root[0] / "etc" / "passwd"
    line = "u:x:1:1::/:\n"
    middle = (MAX_DB_BYTES - 32) // len(line)
    passwd.write_text("root:x:0:0::/r:\n" + line * middle + "last:x:2:2::/l:\n")
    assert MAX_DB_BYTES - len(line) < os.path.getsize(passwd) <= MAX_DB_BYTES
    reads = ShortReads()
    monkeypatch.setattr(os, "read", reads)
    records = read_db(root[1], "/etc/passwd")
    assert (records[0], records[-1], len(records)) == (["root", "x", "0", "0", "", "/r", ""],
                                                       ["last", "x", "2", "2", "", "/l", ""], middle + 2)
    passwd.write_text("x" * (MAX_DB_BYTES + 1))
    with pytest.raises(SetupError, match="larger than 4 MiB"):
        read_db(root[1], "/etc/passwd")
    passwd.write_text("x" * (3 * MAX_DB_BYTES))
    reads.total = 0
    with pytest.raises(SetupError, match="larger than 4 MiB"):
        read_db(root[1], "/etc/passwd")
    assert reads.total == MAX_DB_BYTES + 1  # one byte past the limit tells; no more is read
