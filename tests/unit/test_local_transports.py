"""The local transports ``oci:``, ``oci-archive:`` and ``docker-archive:`` against images written
by real tools (the test builder, skopeo, umoci, podman), and hostile local inputs
(SECURITY-TESTS case 9)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from podrun.errors import LimitExceededError, NotFoundError, UsageError, VerificationError
from podrun.image import mediatypes as mt
from podrun.image.decompress import open_decompressed
from podrun.image.digest import Digest
from podrun.image.dockerarchive import DockerArchiveSource
from podrun.image.layout import OCIArchiveSource, OCILayoutSource
from podrun.image.limits import DEFAULT_LIMITS
from podrun.image.manifest import Platform, parse_config
from podrun.image.pull import resolve_manifest
from podrun.image.source import ImageSource
from tests.conftest import require_root
from tests.fixtures import images as img

LIMIT = DEFAULT_LIMITS.manifest_bytes
Source = OCILayoutSource | OCIArchiveSource | DockerArchiveSource


def need_tool(name: str) -> None:
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed")


def run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed: {proc.stderr}"
    return proc.stdout


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class ReadImage:
    manifest_digest: str
    manifest_media_type: str
    config: dict[str, Any]
    layer_digests: list[str]


def read_image(source: ImageSource) -> ReadImage:
    """Read everything through *source* the way the puller does and check every byte: the
    manifest against its digest, each blob against its descriptor, each layer against the
    config's diff_id."""
    top, manifest, digest = resolve_manifest(source, None, DEFAULT_LIMITS)
    blobs: dict[Digest, bytes] = {}
    for desc in (manifest.config, *manifest.layers):
        with source.open_blob(desc.digest, desc.size) as f:
            data = f.read()
        assert len(data) == desc.size, desc
        assert sha256(data) == str(desc.digest), desc
        blobs[desc.digest] = data
    config_bytes = blobs[manifest.config.digest]
    config = parse_config(config_bytes, len(manifest.layers), source.description)
    for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
        raw = io.BytesIO(blobs[desc.digest])
        plain = open_decompressed(raw, mt.LAYER_COMPRESSION[desc.media_type], "layer").read()
        assert sha256(plain) == str(diff_id)
    return ReadImage(str(digest), top.media_type, config.raw, [str(d.digest) for d in manifest.layers])


@pytest.fixture
def busybox(tmp_path: Path) -> img.BuiltImage:
    return img.busybox_image(tmp_path / "layout")


@pytest.fixture
def opened() -> Iterator[list[Source]]:
    """Sources a test opens; closed even when the test fails."""
    sources: list[Source] = []
    yield sources
    for s in sources:
        s.close()


def open_src(opened: list[Source], cls: type[Source], path: Path | str, ref: str | None) -> Source:
    src = cls(str(path), ref)
    opened.append(src)
    return src


# --------------------------------------------------------------------------- oci:


def test_oci_layout_reads_busybox(busybox: img.BuiltImage, opened: list[Source]) -> None:
    for ref in ("latest", None):
        src = open_src(opened, OCILayoutSource, busybox.layout, ref)
        got = read_image(src)
        assert got.manifest_digest == busybox.manifest_digest
        assert got.layer_digests == busybox.layer_digests
        assert src.default_name is None  # a plain tag names no image
        top = src.top_manifest(LIMIT)
        assert str(top.expected_digest) == busybox.manifest_digest
        assert top.media_type == mt.OCI_MANIFEST
    assert opened[0].description == f"oci:{busybox.layout}:latest"


def test_oci_layout_ref_selection(tmp_path: Path, opened: list[Source]) -> None:
    layout = tmp_path / "multi"
    a = img.write_oci_layout(layout, [img.tar_bytes([img.file("a", b"a")])], ref="a")
    b = img.write_oci_layout(layout, [img.tar_bytes([img.file("b", b"b")])], ref="demo:v2")
    assert read_image(open_src(opened, OCILayoutSource, layout, "a")).manifest_digest == a.manifest_digest
    by_name = open_src(opened, OCILayoutSource, layout, "demo:v2")
    assert read_image(by_name).manifest_digest == b.manifest_digest
    assert by_name.default_name == "docker.io/library/demo:v2"
    # The same name spelled in full also selects it.
    full = open_src(opened, OCILayoutSource, layout, "docker.io/library/demo:v2")
    assert read_image(full).manifest_digest == b.manifest_digest
    with pytest.raises(UsageError, match=r"a, demo:v2"):
        OCILayoutSource(str(layout), None)
    with pytest.raises(NotFoundError, match=rf"{layout}.*'nope'"):
        OCILayoutSource(str(layout), "nope")


def test_oci_layout_index_json_as_platform_index(tmp_path: Path, opened: list[Source]) -> None:
    layout = tmp_path / "multiarch"
    arm = img.write_oci_layout(layout, [img.tar_bytes([img.file("arm", b"a")])], ref=None, architecture="arm64")
    amd = img.write_oci_layout(layout, [img.tar_bytes([img.file("amd", b"b")])], ref=None, architecture="amd64")
    index = json.loads((layout / "index.json").read_text())
    for desc, arch in zip(index["manifests"], ("arm64", "amd64"), strict=True):
        desc["platform"] = {"os": "linux", "architecture": arch}
    (layout / "index.json").write_text(json.dumps(index))
    src = open_src(opened, OCILayoutSource, layout, None)
    assert src.top_manifest(LIMIT).media_type == mt.OCI_INDEX
    top, manifest, digest = resolve_manifest(src, Platform("linux", "arm64"), DEFAULT_LIMITS)
    assert str(digest) == arm.manifest_digest
    top, manifest, digest = resolve_manifest(src, Platform("linux", "amd64"), DEFAULT_LIMITS)
    assert str(digest) == amd.manifest_digest


def test_oci_layout_top_dir_may_be_a_symlink(busybox: img.BuiltImage, tmp_path: Path,
                                             opened: list[Source]) -> None:
    link = tmp_path / "link"
    link.symlink_to(busybox.layout)
    assert read_image(open_src(opened, OCILayoutSource, link, None)).manifest_digest == busybox.manifest_digest


def test_oci_layout_tampered_manifest_fails_verification(busybox: img.BuiltImage, opened: list[Source]) -> None:
    blob = busybox.layout / "blobs" / "sha256" / busybox.manifest_digest.split(":")[1]
    data = bytearray(blob.read_bytes())
    data[-2] ^= 0x01
    blob.write_bytes(bytes(data))
    src = open_src(opened, OCILayoutSource, busybox.layout, None)
    with pytest.raises(VerificationError, match="does not match digest"):
        read_image(src)


@pytest.mark.root
def test_umoci_image(tmp_path: Path, opened: list[Source]) -> None:
    need_tool("umoci")
    layout, bundle = tmp_path / "umoci", tmp_path / "bundle"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:t")
    run("umoci", "unpack", "--image", f"{layout}:t", str(bundle))
    (bundle / "rootfs" / "hello").write_text("from umoci\n")
    shutil.copy(img.BUSYBOX, bundle / "rootfs" / "busybox")
    run("umoci", "repack", "--image", f"{layout}:t", str(bundle))
    src = open_src(opened, OCILayoutSource, layout, "t")
    got = read_image(src)
    index = json.loads((layout / "index.json").read_text())
    assert got.manifest_digest == index["manifests"][0]["digest"]
    assert len(got.layer_digests) == 1


# --------------------------------------------------------------------------- skopeo archives


def test_skopeo_oci_archive(busybox: img.BuiltImage, tmp_path: Path, opened: list[Source]) -> None:
    need_tool("skopeo")
    archive = tmp_path / "oci.tar"
    run("skopeo", "--insecure-policy", "copy", f"oci:{busybox.layout}:latest", f"oci-archive:{archive}:latest")
    for ref in ("latest", None):
        src = open_src(opened, OCIArchiveSource, archive, ref)
        got = read_image(src)
        assert got.manifest_digest == busybox.manifest_digest
        assert got.layer_digests == busybox.layer_digests
    with pytest.raises(NotFoundError, match=re.escape(f"{archive}:other: no image with ref 'other'")):
        OCIArchiveSource(str(archive), "other")
    # Streams of one archive are independent: interleaved reads give each blob's exact bytes.
    src = opened[0]
    config, layer = Digest.parse(busybox.config_digest), Digest.parse(busybox.layer_digests[0])
    h1, h2 = hashlib.sha256(), hashlib.sha256()
    with src.open_blob(config, 0) as f1, src.open_blob(layer, 0) as f2:
        while True:
            c1, c2 = f1.read(7), f2.read(65536)
            h1.update(c1)
            h2.update(c2)
            if not c1 and not c2:
                break
    assert (h1.hexdigest(), h2.hexdigest()) == (config.hex, layer.hex)


def test_skopeo_docker_archive(busybox: img.BuiltImage, tmp_path: Path, opened: list[Source]) -> None:
    need_tool("skopeo")
    archive = tmp_path / "docker.tar"
    run("skopeo", "--insecure-policy", "copy", f"oci:{busybox.layout}:latest", f"docker-archive:{archive}:demo:v1")
    for ref in (None, "demo:v1", "docker.io/library/demo:v1", "@0"):
        src = open_src(opened, DockerArchiveSource, archive, ref)
        got = read_image(src)
        assert src.default_name == "docker.io/library/demo:v1"
        assert got.manifest_media_type == mt.DOCKER_MANIFEST
        assert got.config["rootfs"]["diff_ids"] == busybox.diff_ids
        # skopeo stores layers uncompressed: the layer digest is the diff_id.
        assert got.layer_digests == busybox.diff_ids
        top = src.top_manifest(LIMIT)
        assert top.expected_digest is None
        assert src.manifest_by_digest(Digest.of_bytes(top.data), LIMIT).data == top.data
    with pytest.raises(NotFoundError, match="demo:v2"):
        DockerArchiveSource(str(archive), "demo:v2")
    with pytest.raises(NotFoundError, match="@1"):
        DockerArchiveSource(str(archive), "@1")
    with pytest.raises(LimitExceededError, match="limit exceeded"):
        open_src(opened, DockerArchiveSource, archive, None).top_manifest(50)


def classic_docker_archive(path: Path, layer: bytes, config: bytes, tags: list[list[str]]) -> None:
    """A ``docker save`` (pre-25) style archive: one image per tag list, each with the layer
    twice, the second copy a symlink to the first as Docker writes repeated layers."""
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    entries = [img.directory("l1"), img.file("l1/layer.tar", layer), img.directory("l2"),
               img.symlink("l2/layer.tar", "../l1/layer.tar"), img.file(cfg_name, config)]
    manifest = [{"Config": cfg_name, "RepoTags": t, "Layers": ["l1/layer.tar", "l2/layer.tar"]} for t in tags]
    entries.append(img.file("manifest.json", json.dumps(manifest).encode()))
    path.write_bytes(img.tar_bytes(entries))


def test_classic_docker_archive_with_linked_layers(tmp_path: Path, opened: list[Source]) -> None:
    layer = img.tar_bytes([img.file("x", b"y" * 5000)])
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [sha256(layer)] * 2}}).encode()
    archive = tmp_path / "classic.tar"
    classic_docker_archive(archive, layer, config, [["busybox:latest"], ["localhost/other:1", "other:2"]])
    src = open_src(opened, DockerArchiveSource, archive, "docker.io/library/busybox")
    got = read_image(src)
    assert got.layer_digests == [sha256(layer)] * 2
    assert src.default_name == "docker.io/library/busybox:latest"
    assert open_src(opened, DockerArchiveSource, archive, "busybox").default_name == "docker.io/library/busybox:latest"
    other = open_src(opened, DockerArchiveSource, archive, "other:1")
    assert other.default_name == "localhost/other:1"
    assert open_src(opened, DockerArchiveSource, archive, "@1").default_name == "localhost/other:1"
    with pytest.raises(UsageError, match="busybox:latest, localhost/other:1, other:2"):
        DockerArchiveSource(str(archive), None)


# --------------------------------------------------------------------------- podman


@pytest.fixture
def podman() -> Iterator[list[str]]:
    """podman with throwaway storage (vfs, cgroupfs, file events: this host's PID 1 is not
    systemd); the storage is reset and removed afterwards even on failure.  Everything podman
    writes or reads lives there: its libpod state (else /run/libpod), network config (else a lock
    file in /etc/cni/net.d), home (else ~/.config/containers) and signature policy (else
    /etc/containers/policy.json), so a run leaves the machine as it was and never meets what
    another run left or the machine's policy."""
    require_root()
    need_tool("podman")
    # podman refuses a runroot path longer than 50 characters, so pytest's tmp_path is too long.
    root = Path(tempfile.mkdtemp(prefix="pm-", dir="/tmp"))
    (root / "net.d").mkdir()
    # its own signature policy (podman reads ~/.config/containers/policy.json before the machine's)
    (root / "home" / ".config" / "containers").mkdir(parents=True)
    (root / "home" / ".config" / "containers" / "policy.json").write_text(
        '{"default": [{"type": "insecureAcceptAnything"}]}')
    cmd = ["env", f"HOME={root / 'home'}", "XDG_CONFIG_HOME=", "XDG_DATA_HOME=", "XDG_RUNTIME_DIR=",
           "podman", "--root", str(root / "root"), "--runroot", str(root / "runroot"), "--tmpdir", str(root / "tmp"),
           "--network-config-dir", str(root / "net.d"),
           "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    try:
        probe = subprocess.run([*cmd, "info"], capture_output=True, text=True, timeout=120)
        if probe.returncode != 0:
            pytest.skip(f"podman cannot run here: {probe.stderr.strip()[-300:]}")
        yield cmd
    finally:
        subprocess.run([*cmd, "system", "reset", "-f"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.root  # the podman fixture
def test_podman_saved_archives(busybox: img.BuiltImage, tmp_path: Path, podman: list[str],
                               opened: list[Source]) -> None:
    run(*podman, "pull", "-q", f"oci:{busybox.layout}:latest")
    image_id = run(*podman, "images", "-q", "--no-trunc").split()[0]
    run(*podman, "tag", image_id, "demo:latest")
    docker_tar, oci_tar = tmp_path / "pd.tar", tmp_path / "po.tar"
    run(*podman, "save", "--format", "docker-archive", "-o", str(docker_tar), "demo:latest")
    run(*podman, "save", "--format", "oci-archive", "-o", str(oci_tar), "demo:latest")
    for cls, path in ((DockerArchiveSource, docker_tar), (OCIArchiveSource, oci_tar)):
        for ref in (None, "demo:latest", "localhost/demo:latest"):
            src = open_src(opened, cls, path, ref)
            got = read_image(src)
            assert src.default_name == "localhost/demo:latest", (cls, ref)
            assert got.config["rootfs"]["diff_ids"] == busybox.diff_ids
    # podman's image ID is the config digest: the same config came through every path.
    assert "sha256:" + image_id.removeprefix("sha256:") == busybox.config_digest


# --------------------------------------------------------------------------- hostile inputs


def blob_path(built: img.BuiltImage, digest: str) -> Path:
    return built.layout / "blobs" / "sha256" / digest.split(":")[1]


@pytest.mark.parametrize("target", ["etc", "copy"])
def test_blobs_dir_symlink_refused(busybox: img.BuiltImage, tmp_path: Path, target: str) -> None:
    blobs = busybox.layout / "blobs"
    if target == "etc":
        dest = Path("/etc")
    else:
        # A full copy of the blobs outside the layout: following the link would *work*.
        dest = tmp_path / "outside"
        shutil.copytree(blobs, dest)
    shutil.rmtree(blobs)
    blobs.symlink_to(dest)
    src = OCILayoutSource(str(busybox.layout), None)
    try:
        with pytest.raises(VerificationError, match=r"blobs/sha256/[0-9a-f]{64}.*symlink"):
            src.top_manifest(LIMIT)
    finally:
        src.close()


@pytest.mark.parametrize("which", ["manifest", "layer"])
@pytest.mark.parametrize("kind", ["fifo", "chardev", "symlink"])
def test_non_regular_blob_refused(busybox: img.BuiltImage, which: str, kind: str) -> None:
    digest = busybox.manifest_digest if which == "manifest" else busybox.layer_digests[0]
    path = blob_path(busybox, digest)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "chardev":
        require_root()
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
    else:
        path.symlink_to(busybox.layout / "index.json")
    fired = threading.Event()

    def unblock() -> None:
        # If a read blocked on the FIFO, open its write end and close it: the reader wakes up
        # with EOF and the test fails below instead of hanging.
        fired.set()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass

    watchdog = threading.Timer(10, unblock)
    watchdog.start()
    src = OCILayoutSource(str(busybox.layout), None)
    try:
        with pytest.raises(VerificationError, match=digest.split(":")[1] + " is not a regular file"):
            if which == "manifest":
                src.top_manifest(LIMIT)
            else:
                src.open_blob(Digest.parse(digest), 0).close()
    finally:
        watchdog.cancel()
        src.close()
    assert not fired.is_set(), "reading a non-regular blob blocked"


def test_index_pointing_to_missing_blob(busybox: img.BuiltImage, opened: list[Source]) -> None:
    blob_path(busybox, busybox.manifest_digest).unlink()
    src = open_src(opened, OCILayoutSource, busybox.layout, None)
    with pytest.raises(NotFoundError, match=busybox.manifest_digest.split(":")[1]):
        src.top_manifest(LIMIT)
    with pytest.raises(NotFoundError, match="blobs/sha256/0000"):
        src.open_blob(Digest("sha256", "0" * 64), 1)


def test_bad_layout_files(tmp_path: Path, busybox: img.BuiltImage) -> None:
    with pytest.raises(NotFoundError, match="nothere"):
        OCILayoutSource(str(tmp_path / "nothere"), None)
    (busybox.layout / "index.json").write_text("{not json")
    with pytest.raises(VerificationError, match=r"index\.json: not valid JSON"):
        OCILayoutSource(str(busybox.layout), None)
    (busybox.layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}) + " " * LIMIT)
    with pytest.raises(LimitExceededError, match="index.json"):
        OCILayoutSource(str(busybox.layout), None)
    (busybox.layout / "oci-layout").unlink()
    with pytest.raises(NotFoundError, match="oci-layout"):
        OCILayoutSource(str(busybox.layout), None)
    (busybox.layout / "oci-layout").symlink_to("/etc/hostname")
    with pytest.raises(VerificationError, match="oci-layout"):
        OCILayoutSource(str(busybox.layout), None)


def layout_entries(layout: Path) -> list[img.Entry]:
    """The files of an OCI layout as tar entries (for hand-made archives)."""
    out = []
    for p in sorted(layout.rglob("*")):
        rel = str(p.relative_to(layout))
        out.append(img.directory(rel) if p.is_dir() else img.file(rel, p.read_bytes()))
    return out


@pytest.mark.parametrize(("entry", "error"), [
    (img.file("../evil", b"pwned"), "'../evil' contains '..'"),
    (img.file("blobs/../../evil", b"pwned"), "'blobs/../../evil' contains '..'"),
    (img.file("/evil", b"pwned"), "'/evil' is an absolute path"),
    (img.Entry("ok", data=b"pwned", pax={"path": "ok\0evil"}), "contains a NUL byte"),
], ids=["dotdot", "nested-dotdot", "absolute", "nul"])
@pytest.mark.parametrize("cls", [OCIArchiveSource, DockerArchiveSource])
def test_archive_with_escaping_names_refused(busybox: img.BuiltImage, tmp_path: Path, entry: img.Entry,
                                             error: str, cls: type[Source]) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "evil.tar"
    entries = [*layout_entries(busybox.layout), img.file("manifest.json", b"[]"), entry]
    archive.write_bytes(img.tar_bytes(entries))
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(VerificationError, match=re.escape(f"{archive}: entry ") + ".*" + re.escape(error)):
        cls(str(archive), None)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "evil").exists() and not Path("/evil").exists()


def test_archive_link_members(busybox: img.BuiltImage, tmp_path: Path, opened: list[Source]) -> None:
    layer_rel = f"blobs/sha256/{busybox.layer_digests[0].split(':')[1]}"
    entries = [e for e in layout_entries(busybox.layout) if e.name != layer_rel]
    # A hardlink to a regular member is the same bytes: accepted.
    data = blob_path(busybox, busybox.layer_digests[0]).read_bytes()
    hard = tmp_path / "hard.tar"
    hard.write_bytes(img.tar_bytes([*entries, img.file("real", data), img.hardlink(layer_rel, "real")]))
    assert read_image(open_src(opened, OCIArchiveSource, hard, None)).layer_digests == busybox.layer_digests
    # A symlink blob is refused, even when it points at the right bytes inside the archive.
    soft = tmp_path / "soft.tar"
    soft.write_bytes(img.tar_bytes([*entries, img.file("real", data), img.symlink(layer_rel, "../../real")]))
    src = open_src(opened, OCIArchiveSource, soft, None)
    with pytest.raises(VerificationError, match="not a regular file"):
        src.open_blob(Digest.parse(busybox.layer_digests[0]), len(data))
    # A device member is refused.
    dev = tmp_path / "dev.tar"
    dev.write_bytes(img.tar_bytes([*entries, img.Entry(layer_rel, tarfile.CHRTYPE, devmajor=1, devminor=3)]))
    src = open_src(opened, OCIArchiveSource, dev, None)
    with pytest.raises(VerificationError, match="not a regular file"):
        src.open_blob(Digest.parse(busybox.layer_digests[0]), len(data))


def test_docker_archive_symlink_out_of_archive_refused(tmp_path: Path) -> None:
    layer = img.tar_bytes([img.file("x", b"y")])
    cfg = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha256(layer)]}}).encode()
    archive = tmp_path / "out.tar"
    manifest = [{"Config": "c.json", "RepoTags": ["a:b"], "Layers": ["l/layer.tar"]}]
    archive.write_bytes(img.tar_bytes([
        img.file("c.json", cfg), img.symlink("l/layer.tar", "../../../etc/passwd"),
        img.file("manifest.json", json.dumps(manifest).encode()),
    ]))
    src = DockerArchiveSource(str(archive), None)
    try:
        with pytest.raises(VerificationError, match="links outside the archive"):
            src.top_manifest(LIMIT)
    finally:
        src.close()


@pytest.mark.parametrize("cls", [OCIArchiveSource, DockerArchiveSource])
def test_bad_archive_files(tmp_path: Path, cls: type[Source]) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(VerificationError, match=rf"{junk}.* not a tar archive"):
        cls(str(junk), None)
    with pytest.raises(NotFoundError, match="missing.tar"):
        cls(str(tmp_path / "missing.tar"), None)
    fifo = tmp_path / "fifo.tar"
    os.mkfifo(fifo)
    with pytest.raises(VerificationError, match="not a regular file"):
        cls(str(fifo), None)  # returns at once: a FIFO is never read
    empty = tmp_path / "empty.tar"
    empty.write_bytes(img.tar_bytes([img.file("manifest.json", b"{oops"), img.file("oci-layout", b"{oops")]))
    with pytest.raises(VerificationError, match=r"(manifest\.json|oci-layout): not valid JSON"):
        cls(str(empty), None)
