"""Reuse of stored images for unchanged local sources (docs/store.md, "Reuse of local sources"):
a second `run` of an unchanged layout or archive reads no config or layer blob and runs the stored,
verified image; a retagged layout runs its new image; a replaced manifest is refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, PodrunRunner, require_root
from tests.fixtures import images as img

pytestmark = pytest.mark.usefixtures("root_only")


@pytest.fixture
def root_only() -> None:
    require_root()


def marked_image(layout: Path, mark: str, ref: str = "latest") -> img.BuiltImage:
    """A busybox image with a second layer holding /mark = *mark* (gzip, so blobs differ)."""
    layers = [img.tar_bytes(img.busybox_entries()), img.tar_bytes([img.file("mark", mark.encode())])]
    return img.write_oci_layout(layout, layers, ref=ref)


def blob(built: img.BuiltImage, digest: str) -> Path:
    return built.layout / "blobs" / "sha256" / digest.split(":")[1]


def replace_manifest(path: Path) -> None:
    """Other content of the same size under the manifest's name (schemaVersion 3)."""
    doc = path.read_bytes()
    path.write_bytes(doc.replace(b'schemaVersion": 2', b'schemaVersion": 3'))
    assert path.stat().st_size == len(doc) and path.read_bytes() != doc


def run_mark(podrun: PodrunRunner, image: str) -> str:
    return podrun("run", "--net", "none", image, "--exec", "/bin/cat", "--", "/mark").stdout


def store_state(podrun: PodrunRunner, data_dir: Path) -> tuple[list[str], list[str]]:
    images = sorted(i["id"] for i in json.loads(podrun("image", "list", "--format", "json").stdout))
    blobs = sorted(p.name for p in (data_dir / "store" / "blobs" / "sha256").iterdir())
    return images, blobs


def memos(data_dir: Path) -> list[str]:
    base = data_dir / "store" / "sources"
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def test_unchanged_layout_runs_stored_image_without_reading_layers(
    tmp_path: Path, podrun: PodrunRunner, data_dir: Path
) -> None:
    built = marked_image(tmp_path / "l", "one")
    ref = f"oci:{built.layout}:latest"
    assert run_mark(podrun, ref) == "one"
    assert len(memos(data_dir)) == 1
    # Replace every layer blob and the config with garbage of the same size: the index and the
    # manifest are unchanged, so the stored verified image (the one the manifest digest names)
    # runs, and nothing of the replaced blobs is read (they would fail verification).
    for digest in [*built.layer_digests, built.config_digest]:
        path = blob(built, digest)
        path.write_bytes(b"\0" * path.stat().st_size)
    assert run_mark(podrun, ref) == "one"
    out = podrun("fetch", ref).stdout.split()
    assert out == [built.manifest_digest]
    assert podrun("image", "fsck").returncode == 0


def test_other_layout_naming_a_stored_image_runs_it(tmp_path: Path, podrun: PodrunRunner) -> None:
    """A hostile layout elsewhere whose index names stored image D, with D's manifest but other
    layer bytes, runs exactly the stored, verified D (content addressing); with another manifest
    under D's name it is refused."""
    built = marked_image(tmp_path / "l", "one")
    assert run_mark(podrun, f"oci:{built.layout}:latest") == "one"
    for changed_index in (False, True):
        other = tmp_path / f"other-{changed_index}"
        shutil.copytree(built.layout, other)
        if changed_index:  # a new index.json: no earlier read of it, so the full read path
            (other / "index.json").write_text((other / "index.json").read_text() + "\n")
        for digest in [*built.layer_digests, built.config_digest]:
            path = other / "blobs" / "sha256" / digest.split(":")[1]
            path.write_bytes(os.urandom(path.stat().st_size))
        assert run_mark(podrun, f"oci:{other}:latest") == "one"
        replace_manifest(other / "blobs" / "sha256" / built.manifest_digest.split(":")[1])
        res = podrun("run", "--net", "none", f"oci:{other}:latest", "--exec", "/bin/true", check=False)
        assert res.returncode == 250 and built.manifest_digest in res.stderr, res.stderr


def test_reuse_imports_no_puller(tmp_path: Path, podrun: PodrunRunner, data_dir: Path) -> None:
    """The reuse path parses no document: neither the puller nor the manifest models (nor
    typing, tarfile) are imported, which is what a second run saves.  (hashlib is: reuse
    verifies the deciding documents' sha256, and no private CPython module stands in for it.)"""
    built = marked_image(tmp_path / "l", "one")
    ref = f"oci:{built.layout}:latest"
    podrun("fetch", ref)
    heavy = ("podrun.image.pull", "podrun.image.manifest", "podrun.image.decompress", "typing", "tarfile")
    code = (
        "import sys; from pathlib import Path; from podrun.image.api import FetchRequest, fetch; "
        "from podrun.image.store import Store; "
        f"rec = fetch(Store(Path({str(data_dir)!r})), FetchRequest({ref!r})); "
        f"print(rec.id, ','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == [built.manifest_digest]


def test_retagged_layout_runs_new_image(tmp_path: Path, podrun: PodrunRunner, data_dir: Path) -> None:
    layout = tmp_path / "l"
    first = marked_image(layout, "one", "demo:v1")
    ref = f"oci:{layout}:demo:v1"
    assert run_mark(podrun, ref) == "one"
    second = marked_image(layout, "two", "demo:v1")  # the tag moves to a new manifest
    assert second.manifest_digest != first.manifest_digest
    assert run_mark(podrun, ref) == "two"
    assert run_mark(podrun, ref) == "two"
    names = {i["id"]: i["names"] for i in json.loads(podrun("image", "list", "--format", "json").stdout)}
    assert names[second.manifest_digest] == ["docker.io/library/demo:v1"]
    assert names[first.manifest_digest] == []
    # Back to the first image: a known index again, and the name follows it.
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0]["digest"] = first.manifest_digest
    index["manifests"][0]["size"] = blob(first, first.manifest_digest).stat().st_size
    (layout / "index.json").write_text(json.dumps(index))
    assert run_mark(podrun, ref) == "one"
    names = {i["id"]: i["names"] for i in json.loads(podrun("image", "list", "--format", "json").stdout)}
    assert names[first.manifest_digest] == ["docker.io/library/demo:v1"]


def test_replaced_manifest_refused_store_intact(tmp_path: Path, podrun: PodrunRunner, data_dir: Path) -> None:
    built = marked_image(tmp_path / "l", "one")
    ref = f"oci:{built.layout}:latest"
    assert run_mark(podrun, ref) == "one"
    before = store_state(podrun, data_dir)
    # Same name and size, other content (a config of another image, say): refused, not run.
    replace_manifest(blob(built, built.manifest_digest))
    for _ in range(2):
        res = podrun("run", "--net", "none", ref, "--exec", "/bin/true", check=False)
        assert res.returncode == 250, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert built.manifest_digest in res.stderr
    assert store_state(podrun, data_dir) == before
    assert podrun("image", "fsck").returncode == 0
    assert len(json.loads(podrun("list", "--format", "json").stdout)) == 1  # the first run only


def test_removed_image_is_fetched_again_and_gc_drops_its_memo(
    tmp_path: Path, podrun: PodrunRunner, data_dir: Path
) -> None:
    built = marked_image(tmp_path / "l", "one")
    ref = f"oci:{built.layout}:latest"
    podrun("fetch", ref)
    assert len(memos(data_dir)) == 1
    podrun("image", "rm", built.manifest_digest)
    podrun("image", "gc")
    assert memos(data_dir) == []
    assert run_mark(podrun, ref) == "one"  # read in full again
    assert len(memos(data_dir)) == 1
    # A damaged memo is only a cache miss.
    memo = data_dir / "store" / "sources" / memos(data_dir)[0]
    memo.write_bytes(b"{not json")
    assert run_mark(podrun, ref) == "one"
    assert json.loads(memo.read_bytes())["image"] == built.manifest_digest


def test_oci_archive_reused(tmp_path: Path, podrun: PodrunRunner) -> None:
    built = marked_image(tmp_path / "l", "one")
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-C", str(built.layout), "-cf", str(archive), "."], check=True)
    ref = f"oci-archive:{archive}:latest"
    assert run_mark(podrun, ref) == "one"
    assert run_mark(podrun, ref) == "one"
    assert podrun("fetch", ref).stdout.split() == [built.manifest_digest]


def test_unchanged_docker_archive_reads_no_layer(tmp_path: Path, podrun: PodrunRunner) -> None:
    """A docker archive's image ID is computed by hashing every layer; a reuse hashes only
    manifest.json and the config, whose diff_ids pin the layers the store verified."""
    built = marked_image(tmp_path / "l", "one")
    archive = tmp_path / "a.tar"
    subprocess.run(["skopeo", "copy", f"oci:{built.layout}:latest", f"docker-archive:{archive}:demo:v1"],
                   check=True, capture_output=True)
    ref = f"docker-archive:{archive}"
    first = podrun("fetch", ref).stdout.strip()
    assert run_mark(podrun, ref) == "one"
    # Overwrite the bytes of each layer member in place (same size, so the tar's index and
    # manifest.json are unchanged): the stored, verified image still runs.
    with tarfile.open(archive) as tf:
        layers = json.load(tf.extractfile("manifest.json"))[0]["Layers"]  # type: ignore[arg-type]
        spans = [(info.offset_data, info.size) for info in map(tf.getmember, layers)]
    with open(archive, "r+b") as f:
        for offset, size in spans:
            f.seek(offset)
            f.write(os.urandom(size))
    assert run_mark(podrun, ref) == "one"
    assert podrun("fetch", ref).stdout.strip() == first
