"""The safe layer unpacker on a real kernel (SECURITY-TESTS cases 1-6).

Every refusal is checked three ways: the exception type, the message naming the entry, and
nothing changed outside the layer directory (a sandbox holding a sentinel directory is
snapshotted before and after).  Whiteout semantics are checked by unpacking each layer into
its own directory and mounting the real overlayfs stack over them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from podrun.errors import LimitExceededError, VerificationError
from podrun.image.decompress import open_decompressed
from podrun.image.digest import Digest
from podrun.image.limits import DEFAULT_LIMITS, Limits
from podrun.image.unpack import MAX_HEADER_BYTES, UnpackResult, unpack_layer
from tests.conftest import require_root
from tests.fixtures import hostile as h
from tests.fixtures.images import Entry, directory, file, hardlink, symlink, tar_bytes, tree_listing

pytestmark = pytest.mark.usefixtures("root_only")

MTIME = 1_700_000_000  # what tests.fixtures.images.tar_bytes writes


@pytest.fixture
def root_only() -> None:
    require_root()


@dataclass
class Sandbox:
    """``root/`` holds ``layer/`` (the unpack destination) and ``sentinel/`` (must never change)."""

    root: Path
    dest: Path
    sentinel: Path

    def outside(self) -> dict[str, tuple[int, int, int, int, bytes]]:
        """Everything in the sandbox except the layer tree: mode, owner, size, mtime, content."""
        out: dict[str, tuple[int, int, int, int, bytes]] = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            if Path(dirpath) == self.root:
                dirnames.remove("layer")
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
                out[str(p.relative_to(self.root))] = (st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, data)
        xattrs = sorted(os.listxattr(self.sentinel))
        out["sentinel xattrs"] = (0, 0, 0, 0, repr(xattrs).encode())
        return out


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    root = tmp_path / "sandbox"
    dest = root / "layer"
    sentinel = root / "sentinel"
    dest.mkdir(parents=True)
    sentinel.mkdir(mode=0o755)
    (sentinel / "keep").write_bytes(b"original")
    (sentinel / "sub").mkdir()
    return Sandbox(root, dest, sentinel)


def unpack(raw: bytes | BinaryIO, dest: Path, limits: Limits = DEFAULT_LIMITS) -> UnpackResult:
    stream = cast(BinaryIO, io.BytesIO(raw)) if isinstance(raw, bytes) else raw
    return unpack_layer(stream, dest, limits, "layer sha256:test")


def assert_refused(
    sb: Sandbox,
    raw: bytes | BinaryIO,
    entry: str | None,
    expected: type[VerificationError] = VerificationError,
    limits: Limits = DEFAULT_LIMITS,
    also: str = "",
) -> str:
    """Unpack must raise *expected* naming *entry* (repr-escaped; None for stream-level errors
    before any entry) and leave the sandbox alone."""
    before = sb.outside()
    with pytest.raises(expected) as info:
        unpack(raw, sb.dest, limits)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("layer sha256:test: "), message
    assert entry is None or repr(entry) in message, message
    assert also in message, message
    assert sb.outside() == before
    assert not any(sb.root.parent.glob("x")) and not Path("/x-podrun-escape").exists()
    return message


# -- case 1: names that escape -----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../x", "../sentinel/keep", "a/../../x", "a/b/../../../sentinel/pwned", "./../x", "..", "ok/.."],
)
def test_dotdot_names_refused(sandbox: Sandbox, name: str) -> None:
    raw = tar_bytes([directory("a"), file(name, b"pwned")])
    assert_refused(sandbox, raw, name, also="escapes the layer")
    assert not (sandbox.root / "x").exists()


def test_absolute_name_refused(sandbox: Sandbox) -> None:
    for name in [str(sandbox.sentinel / "pwned"), "/x-podrun-escape", "//x-podrun-escape"]:
        assert_refused(sandbox, tar_bytes([file(name, b"pwned")]), name, also="absolute")
    assert not (sandbox.sentinel / "pwned").exists()


def test_nul_byte_in_name_refused(sandbox: Sandbox) -> None:
    # tarfile's writer would truncate at the NUL; a raw PAX header carries it.
    raw = h.raw_tar(h.raw_entry(b"placeholder", pax={b"path": b"ok\0/../../x"}, data=b"pwned"))
    assert_refused(sandbox, raw, "ok\0/../../x", also="NUL")
    raw = h.raw_tar(h.raw_entry(b"keep"), h.raw_entry(b"s", b"1", linkname=b"keep", pax={b"linkpath": b"ke\0ep"}))
    assert_refused(sandbox, raw, "ke\0ep", also="hardlink")


def test_empty_name_refused(sandbox: Sandbox) -> None:
    raw = h.raw_tar(h.raw_entry(b"", data=b"x"))
    assert_refused(sandbox, raw, "", also="empty")
    assert_refused(sandbox, tar_bytes([file("./", b"x")]), "./", also="empty name")


def test_over_long_names_refused(sandbox: Sandbox) -> None:
    long_component = "a" * 256
    assert_refused(sandbox, tar_bytes([file(long_component)]), long_component, LimitExceededError, also="limit exceeded")
    long_path = "/".join(["b" * 200] * 25)
    assert_refused(sandbox, tar_bytes([file(long_path)]), long_path, LimitExceededError, also="limit exceeded")
    deep = h.deep_path(DEFAULT_LIMITS.path_depth + 1)
    assert_refused(sandbox, tar_bytes([file(deep)]), deep, LimitExceededError, also="limit exceeded")
    long_target = "t" * 5000
    assert_refused(sandbox, tar_bytes([symlink("s", long_target)]), "s", LimitExceededError)


def test_leading_dot_slash_and_root_entry(sandbox: Sandbox) -> None:
    entries = [Entry("./", tarfile.DIRTYPE, mode=0o750, uid=7, gid=8), directory("./etc"), file("./etc/a", b"1"),
               file(".//etc//b", b"2")]
    result = unpack(tar_bytes(entries), sandbox.dest)
    assert result.entries == 4
    assert tree_listing(sandbox.dest) == {"etc": "dir", "etc/a": "mode:100644", "etc/b": "mode:100644"}
    st = sandbox.dest.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o750, 7, 8, MTIME)


# -- case 2: symlink tricks ------------------------------------------------------------------------


def outside_links(sb: Sandbox) -> list[tuple[str, str]]:
    return [("rel", "../sentinel"), ("abs", str(sb.sentinel)), ("up", "../../../../../../../../" + str(sb.sentinel))]


@pytest.mark.parametrize("variant", ["rel", "abs", "up"])
def test_write_through_symlink_refused(sandbox: Sandbox, variant: str) -> None:
    target = dict(outside_links(sandbox))[variant]
    link = symlink("evil", target)
    cases: list[tuple[list[Entry], str]] = [
        ([link, file("evil/pwned", b"x")], "evil/pwned"),
        ([link, file("evil/keep", b"overwritten")], "evil/keep"),
        ([link, directory("evil/newdir")], "evil/newdir"),
        ([link, file("evil/sub/deeper/f")], "evil/sub/deeper/f"),
        ([file("real"), link, hardlink("evil/pwned", "real")], "evil/pwned"),
        ([link, symlink("evil/s", "/etc/shadow")], "evil/s"),
        ([link, file("evil/.wh.keep")], "evil/.wh.keep"),
        ([link, file("evil/.wh..wh..opq")], "evil/.wh..wh..opq"),
        ([link, Entry("evil/fifo", tarfile.FIFOTYPE)], "evil/fifo"),
    ]
    for entries, entry in cases:
        shutil.rmtree(sandbox.dest)  # never follows the symlinks left by the previous case
        sandbox.dest.mkdir()
        assert_refused(sandbox, tar_bytes(entries), entry, also="writes through a symlink")
    assert (sandbox.sentinel / "keep").read_bytes() == b"original"


def test_entry_replacing_a_symlink_is_confined(sandbox: Sandbox) -> None:
    """A later entry *named* like the symlink replaces the link; it never chmods or writes the target."""
    entries = [
        symlink("d", "../sentinel"),
        Entry("d", tarfile.DIRTYPE, mode=0o777),  # a chmod attempt through the link
        symlink("f", "../sentinel/keep"),
        file("f", b"new content", mode=0o4777),
        symlink("g", "../sentinel/keep"),
        Entry("g", tarfile.FIFOTYPE),
    ]
    before = sandbox.outside()
    unpack(tar_bytes(entries), sandbox.dest)
    assert sandbox.outside() == before
    assert tree_listing(sandbox.dest) == {"d": "dir", "f": "mode:104777", "g": "mode:10644"}
    assert (sandbox.dest / "f").read_bytes() == b"new content"


def test_directory_turned_into_symlink_in_same_layer(sandbox: Sandbox) -> None:
    entries = [directory("d"), file("d/f", b"1"), symlink("d", "../sentinel"), file("d/g", b"pwned")]
    assert_refused(sandbox, tar_bytes(entries), "d/g", also="writes through a symlink")


def test_directory_turned_into_symlink_by_later_layer(sandbox: Sandbox, tmp_path: Path) -> None:
    """Layer 2 turns d into a link to the host; layer 3 writes d/x: each layer unpacks into its own
    tree, so the write lands in layer 3's own d/ and the merged view holds it, confined."""
    layers = [
        [directory("d"), file("d/lower", b"1")],
        [symlink("d", str(sandbox.sentinel)), symlink("e", "../sentinel")],
        [file("d/x", b"pwned"), directory("e"), file("e/keep", b"pwned")],
    ]
    before = sandbox.outside()
    with overlay_stack(tmp_path, layers) as merged:
        listing = tree_listing(merged)
    assert listing == {"d": "dir", "d/x": "mode:100644", "e": "dir", "e/keep": "mode:100644"}
    assert sandbox.outside() == before


# -- case 3: hardlinks ------------------------------------------------------------------------------


def test_hardlink_within_layer(sandbox: Sandbox) -> None:
    entries = [directory("a"), file("a/f", b"data", mode=0o755), hardlink("b/h", "a/f"), hardlink("./c", "./a/f")]
    unpack(tar_bytes(entries), sandbox.dest)
    st = (sandbox.dest / "a/f").stat()
    assert st.st_nlink == 3
    assert (sandbox.dest / "b/h").stat().st_ino == st.st_ino == (sandbox.dest / "c").stat().st_ino


@pytest.mark.parametrize(
    ("entries", "entry", "why"),
    [
        ([hardlink("h", "../sentinel/keep")], "h", "escapes"),
        ([hardlink("h", "/etc/passwd")], "h", "absolute"),
        ([hardlink("h", "a/../../sentinel/keep")], "h", "escapes"),
        ([hardlink("h", "missing")], "h", "not in this layer"),
        ([symlink("s", "/etc/passwd"), hardlink("h", "s")], "h", "not a regular file"),
        ([symlink("s", "../sentinel"), hardlink("h", "s/keep")], "h", "writes through a symlink"),
        ([file("gone"), file(".wh.gone"), hardlink("h", "gone")], "h", "not a regular file"),
        ([file(".wh.gone"), hardlink("h", ".wh.gone")], "h", "not in this layer"),
        ([Entry("p", tarfile.FIFOTYPE), hardlink("h", "p")], "h", "not a regular file"),
        ([directory("dir"), hardlink("h", "dir")], "h", "not a regular file"),
        ([file("f"), hardlink("f", "f")], "f", "itself"),
        ([directory("d"), file("d/f"), hardlink("d", "d/f")], "d", "itself"),
        ([hardlink("h", ".")], "h", "root"),
    ],
)
def test_hardlink_refused(sandbox: Sandbox, entries: list[Entry], entry: str, why: str) -> None:
    assert_refused(sandbox, tar_bytes(entries), entry, also=why)
    assert (sandbox.sentinel / "keep").stat().st_nlink == 1


def test_hardlink_to_device_refused(sandbox: Sandbox) -> None:
    entries = [Entry("null", tarfile.CHRTYPE, devmajor=1, devminor=3), hardlink("h", "null")]
    assert_refused(sandbox, tar_bytes(entries), "h", also="'null', a device node (refused)")


# -- case 4: whiteouts (real overlayfs) --------------------------------------------------------------


@contextlib.contextmanager
def overlay_stack(tmp_path: Path, layers: list[list[Entry]]) -> Iterator[Path]:
    """Unpack each layer (bottom first) into its own dir and mount them read-only as one overlay."""
    lowers = []
    for i, entries in enumerate(layers):
        d = tmp_path / f"L{i + 1}"
        d.mkdir()
        unpack(tar_bytes(entries), d)
        lowers.append(str(d))
    merged = tmp_path / "merged"
    merged.mkdir()
    opts = "ro,lowerdir=" + ":".join(reversed(lowers))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_whiteouts_merged_view_matches_docker(tmp_path: Path) -> None:
    l1 = [
        directory("etc"), file("etc/keep", b"old"), file("etc/gone"),
        directory("a"), directory("a/b"), file("a/b/f"), file("a/x"),
        directory("opq"), file("opq/old1"), directory("opq/sub"), file("opq/sub/old2"),
        directory("dir2"), file("dir2/lower"),
        directory("nested"), file("nested/keep1"), directory("nested/in"), file("nested/in/old"),
        directory("rep"), file("rep/sub"),
        directory("plain"), file("plain/low"),
    ]
    l2 = [
        file("etc/.wh.gone"),                    # whiteout of a file
        file(".wh.a"),                           # whiteout of a directory
        file(".wh.missing"),                     # whiteout of a path no layer has
        file("opq/.wh..wh..opq"), file("opq/new1"),  # opaque before its siblings
        file("nested/.wh..wh..opq"), directory("nested/in"), file("nested/in/.wh..wh..opq"),
        file("nested/in/new"),                   # nested opaque directories
        file(".wh.rep"), file("rep", b"now a file"),  # whiteout then same-name entry, same layer
        file("plain/up"),                        # an ordinary merge
    ]
    l3 = [
        file("etc/.wh.keep"), file("etc/keep", b"new", mode=0o600),
        directory("a"), file("a/again"),         # re-created after a lower whiteout
        file("opq/new2"),
        directory("dir2"), file("dir2/mine"), file("dir2/.wh..wh..opq"),  # opaque after a sibling
    ]
    # What `docker run` shows for these three layers (worked out by hand from the OCI
    # image-spec whiteout rules, which Docker and containerd implement).
    expected = {
        "etc": "dir", "etc/keep": "mode:100600",
        "a": "dir", "a/again": "mode:100644",
        "opq": "dir", "opq/new1": "mode:100644", "opq/new2": "mode:100644",
        "dir2": "dir", "dir2/mine": "mode:100644",
        "nested": "dir", "nested/in": "dir", "nested/in/new": "mode:100644",
        "rep": "mode:100644",
        "plain": "dir", "plain/low": "mode:100644", "plain/up": "mode:100644",
    }
    with overlay_stack(tmp_path, [l1, l2, l3]) as merged:
        assert tree_listing(merged) == expected
        assert (merged / "etc/keep").read_bytes() == b"new"
        assert (merged / "rep").read_bytes() == b"now a file"
    l2_tree = tmp_path / "L2"
    assert os.getxattr(l2_tree / "opq", "trusted.overlay.opaque") == b"y"
    assert os.getxattr(l2_tree / "nested/in", "trusted.overlay.opaque") == b"y"
    st = (l2_tree / "missing").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert not any(p.name.startswith(".wh.") for p in tmp_path.rglob("*"))


def test_whiteout_of_entry_from_same_layer_and_dir_replacements(sandbox: Sandbox) -> None:
    entries = [
        directory("d"), file("d/f"), file(".wh.d"),          # whiteout removes the dir just made
        file("x"), directory("x"), file("x/in"),              # dir replaces file
        directory("y"), file("y/in"), file("y", b"file"),     # file replaces dir (recursively)
        directory("z", 0o700), file("z/kept"), directory("z", 0o711),  # dir over dir: metadata only
        file("l"), symlink("l", "target"),                    # symlink replaces file
    ]
    unpack(tar_bytes(entries), sandbox.dest)
    listing = tree_listing(sandbox.dest)
    assert listing == {
        "d": "mode:20000", "x": "dir", "x/in": "mode:100644", "y": "mode:100644",
        "z": "dir", "z/kept": "mode:100644", "l": "link:target",
    }
    assert stat.S_IMODE((sandbox.dest / "z").stat().st_mode) == 0o711


def test_reserved_whiteout_names_refused(sandbox: Sandbox) -> None:
    for name in [".wh..wh.foo", "d/.wh..wh.plnk", ".wh.", "d/.wh..", "d/.wh..."]:
        assert_refused(sandbox, tar_bytes([file(name)]), name, also="whiteout")


def test_whiteout_below_a_regular_file_refused(sandbox: Sandbox) -> None:
    entries = [file("f"), file("f/.wh.x")]  # a whiteout below a regular file
    assert_refused(sandbox, tar_bytes(entries), "f/.wh.x", also="not")


# -- case 5: devices, FIFOs, setuid, xattrs -----------------------------------------------------------


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_device_nodes_are_skipped_and_counted(sandbox: Sandbox, kind: bytes) -> None:
    """A debootstrapped /dev: skipped (never usable in a pod), counted; the rest is unpacked."""
    raw = tar_bytes([directory("dev"), Entry("dev/sda", kind, devmajor=8, devminor=0), file("dev/keep", b"k"),
                     Entry("dev/sda", kind, devmajor=8, devminor=0), Entry("gone/null", kind, devmajor=1, devminor=3)])
    before = sandbox.outside()
    result = unpack(raw, sandbox.dest)
    assert (result.devices_skipped, result.device_examples, result.entries) == (3, ("dev/sda", "gone/null"), 5)
    assert sorted(p.name for p in (sandbox.dest / "dev").iterdir()) == ["keep"]
    assert not (sandbox.dest / "gone").exists()  # nothing is created for a skipped node
    assert sandbox.outside() == before


@pytest.mark.parametrize(
    ("entries", "entry", "why"),
    [
        ([symlink("dev", "../sentinel"), Entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)],
         "dev/null", "writes through a symlink"),
        ([symlink("d", "/dev"), Entry("d/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)], "d/sda",
         "writes through a symlink"),
        ([file("f"), Entry("f/null", tarfile.CHRTYPE, devmajor=1, devminor=3)], "f/null", "to be a directory"),
        ([directory("dev"), Entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0), hardlink("disk", "dev/sda")],
         "disk", "a device node (refused)"),
    ],
    ids=["through-symlink-out", "through-symlink-absolute", "below-a-file", "hardlink-to-device"],
)
def test_device_nodes_placed_through_tricks_refused(sandbox: Sandbox, entries: list[Entry], entry: str,
                                                    why: str) -> None:
    assert_refused(sandbox, tar_bytes(entries), entry, also=why)


def test_fifo_setuid_ownership_and_mtimes(sandbox: Sandbox) -> None:
    entries = [
        Entry("run", tarfile.DIRTYPE, mode=0o1777, uid=5, gid=6),
        Entry("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=1000, gid=1001),
        Entry("bin/su", tarfile.REGTYPE, b"#!", mode=0o4755),
        Entry("bin/tool", tarfile.REGTYPE, b"#!", mode=0o6750, uid=1000, gid=50),
        Entry("bin/link", tarfile.SYMTYPE, linkname="su", uid=3, gid=4),
    ]
    unpack(tar_bytes(entries), sandbox.dest)
    d = sandbox.dest
    fifo = (d / "run/fifo").lstat()
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o620
    assert (fifo.st_uid, fifo.st_gid, fifo.st_mtime) == (1000, 1001, MTIME)
    run = (d / "run").lstat()
    assert (stat.S_IMODE(run.st_mode), run.st_uid, run.st_gid, run.st_mtime) == (0o1777, 5, 6, MTIME)
    assert stat.S_IMODE((d / "bin/su").stat().st_mode) == 0o4755
    tool = (d / "bin/tool").stat()
    assert (stat.S_IMODE(tool.st_mode), tool.st_uid, tool.st_gid) == (0o6750, 1000, 50)
    link = (d / "bin/link").lstat()
    assert (link.st_uid, link.st_gid, link.st_mtime) == (3, 4, MTIME)
    implicit = (d / "bin").lstat()  # created for bin/su: 0755 root
    assert (stat.S_IMODE(implicit.st_mode), implicit.st_uid) == (0o755, 0)


def test_overlay_xattrs_stripped_capability_kept_on_regular_files(sandbox: Sandbox) -> None:
    cap = b"\x01\x00\x00\x02" + struct.pack("<IIII", 1 << 10, 0, 0xFF, 0)  # VFS_CAP_REVISION_2
    xattr = b"SCHILY.xattr."
    evil = {
        xattr + b"trusted.overlay.opaque": b"y",
        xattr + b"trusted.overlay.redirect": b"/etc",
        xattr + b"trusted.other": b"1",
        xattr + b"user.overlay.opaque": b"y",
        xattr + b"user.keep": b"\xff\x00kept",
    }
    raw = h.raw_tar(
        h.raw_entry(b"dir", b"5", pax=evil | {xattr + b"security.capability": cap}, mode=0o755),
        h.raw_entry(b"dir/ping", pax=evil | {xattr + b"security.capability": cap}, mode=0o755, data=b"elf"),
        h.raw_entry(b"dir/link", b"2", linkname=b"ping", pax={xattr + b"security.capability": cap}),
    )
    unpack(raw, sandbox.dest)
    for rel in ("dir", "dir/ping"):
        names = os.listxattr(sandbox.dest / rel)
        assert not [n for n in names if n.startswith(("trusted.", "user.overlay."))], (rel, names)
        assert os.getxattr(sandbox.dest / rel, "user.keep") == b"\xff\x00kept"
    assert os.getxattr(sandbox.dest / "dir/ping", "security.capability") == cap
    assert "security.capability" not in os.listxattr(sandbox.dest / "dir")
    assert os.listxattr(sandbox.dest / "dir/link", follow_symlinks=False) == []


# -- case 6: bombs ------------------------------------------------------------------------------------


def test_size_bomb_refused_early_with_bounded_memory(sandbox: Sandbox) -> None:
    limit = 8 << 20
    bomb = h.big_file_stream(1 << 40, name=b"bomb")  # a 1 TiB file, generated lazily
    tracemalloc.start()
    try:
        assert_refused(sandbox, cast(BinaryIO, bomb), "bomb", LimitExceededError, Limits(layer_bytes=limit),
                       also="limit exceeded")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bomb.consumed <= limit + (2 << 20)
    assert peak < 24 << 20, peak


def test_many_entries_refused_early(sandbox: Sandbox) -> None:
    stream = h.many_entries_stream(1_000_000)
    assert_refused(sandbox, cast(BinaryIO, stream), "d1/f1000", LimitExceededError, Limits(layer_entries=1000),
                   also="limit exceeded")
    assert stream.consumed < 4 << 20


def test_huge_pax_header_refused_with_bounded_memory(sandbox: Sandbox) -> None:
    size = 1 << 30
    def chunks() -> Iterator[bytes]:
        yield h.ustar_header(b"PaxHeader", b"x", size=size)
        record = b"9 a=bcde\n" * (1 << 17)  # 1.1 MiB of valid-looking records
        for _ in range(size // len(record) + 1):
            yield record
    stream = h.GeneratedStream(chunks())
    tracemalloc.start()
    try:
        assert_refused(sandbox, cast(BinaryIO, stream), "", LimitExceededError, also="limit exceeded")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stream.consumed <= MAX_HEADER_BYTES + (4 << 20)
    assert peak < 40 << 20, peak


def test_sparse_files_refused(sandbox: Sandbox) -> None:
    pax = {b"GNU.sparse.major": b"1", b"GNU.sparse.minor": b"0", b"GNU.sparse.name": b"sparse",
           b"GNU.sparse.realsize": b"1099511627776"}
    body = b"1\n0\n512\n".ljust(512, b"\0") + b"x" * 512
    raw = h.raw_tar(h.raw_entry(b"GNUSparseFile.0/sparse", data=body, pax=pax))
    assert_refused(sandbox, raw, "sparse", also="sparse")


# -- streams, digests, throughput ---------------------------------------------------------------------


def test_diff_id_covers_the_whole_stream(sandbox: Sandbox, tmp_path: Path) -> None:
    raw = tar_bytes([directory("d"), file("d/f", b"x" * 1000)]) + b"\0" * 10240  # record padding
    result = unpack(raw, sandbox.dest)
    assert str(result.diff_id) == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert (result.size, result.entries) == (len(raw), 2)
    other = tmp_path / "gz"
    other.mkdir()
    stream = open_decompressed(cast(BinaryIO, io.BytesIO(gzip.compress(raw))), "gzip", "layer sha256:test")
    assert unpack_layer(stream, other, DEFAULT_LIMITS, "layer sha256:test") == result


def test_empty_stream_is_an_empty_layer(sandbox: Sandbox) -> None:
    assert unpack(b"", sandbox.dest) == UnpackResult(Digest.of_bytes(b""), 0, 0)


def test_corrupt_streams_refused(sandbox: Sandbox) -> None:
    raw = tar_bytes([file("a", b"x" * 5000), file("b", b"y")])
    assert_refused(sandbox, raw[:2048], "a", also="truncated")
    garbage = raw[:-1024] + b"garbage".ljust(512, b"\0") + b"\0" * 1024
    assert_refused(sandbox, garbage, "b", also="end of the archive")
    assert_refused(sandbox, b"not a tar".ljust(1024, b"!"), None, also="not a valid tar")
    corrupt_gz = gzip.compress(raw)[:-30] + b"\x00" * 30
    stream = open_decompressed(cast(BinaryIO, io.BytesIO(corrupt_gz)), "gzip", "layer sha256:test")
    assert_refused(sandbox, stream, None, also="corrupt compressed stream")


def test_large_file_throughput(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    size = 100 << 20
    stream = h.big_file_stream(size, block=os.urandom(1 << 20))
    start = time.monotonic()
    result = unpack(cast(BinaryIO, stream), sandbox.dest)
    elapsed = time.monotonic() - start
    assert result.diff_id.hex == stream.sha256.hexdigest()
    assert (sandbox.dest / "big.bin").stat().st_size == size
    with capsys.disabled():
        print(f"\nunpack: {size / elapsed / 1e6:.0f} MB/s for one {size >> 20} MiB file")


def test_many_small_files_throughput(sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    count = 20_000
    stream = h.many_entries_stream(count)
    start = time.monotonic()
    result = unpack(cast(BinaryIO, stream), sandbox.dest)
    elapsed = time.monotonic() - start
    assert result.entries == count
    assert len(list((sandbox.dest / "d3").iterdir())) == 1000
    with capsys.disabled():
        print(f"\nunpack: {count / elapsed:.0f} files/s for {count} one-byte files")
