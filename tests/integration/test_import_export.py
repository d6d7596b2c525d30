"""``podrun image import`` / ``export`` and interop with skopeo and umoci (real tools)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, PodrunRunner, require_root


@pytest.fixture
def demo_rootfs(tmp_path: Path) -> Path:
    require_root()
    out = subprocess.run(["bash", str(ROOT / "demo" / "build-rootfs.sh"), str(tmp_path / "rootfs")],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def test_import_dir_export_and_skopeo_umoci_read_it(
    tmp_path: Path, demo_rootfs: Path, podrun: PodrunRunner, data_dir: Path
) -> None:
    image_id = podrun("image", "import", str(demo_rootfs), "demo:latest").stdout.strip()
    listed = json.loads(podrun("image", "list", "--format", "json").stdout)
    assert listed == [dict(listed[0], id=image_id, names=["localhost/demo:latest"])]
    inspected = json.loads(podrun("image", "inspect", "--format", "json", "demo").stdout)
    diff_id = inspected["config"]["rootfs"]["diff_ids"][0].split(":")[1]
    layer = data_dir / "store" / "layers" / "sha256" / diff_id / "rootfs"
    assert (layer / "bin" / "busybox").stat().st_size > 100_000
    assert (layer / "bin" / "sh").is_symlink() and (layer / "tmp").stat().st_mode & 0o7777 == 0o1777

    archive = tmp_path / "demo.tar"
    podrun("image", "export", "demo", f"oci-archive:{archive}")
    info = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}:latest"],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["Digest"] == image_id and len(info["Layers"]) == 1
    # umoci unpacks what podrun exported (via an OCI layout made by skopeo)
    subprocess.run(["skopeo", "--insecure-policy", "copy", f"oci-archive:{archive}:latest", f"oci:{tmp_path / 'layout'}:latest"],
                   check=True, capture_output=True)
    subprocess.run(["umoci", "unpack", "--image", f"{tmp_path / 'layout'}:latest", str(tmp_path / "bundle")],
                   check=True, capture_output=True)
    assert (tmp_path / "bundle" / "rootfs" / "bin" / "busybox").read_bytes() == (layer / "bin" / "busybox").read_bytes()

    # and podrun fetches its own export back into a fresh store with the same ID
    other = subprocess.run(
        [str(Path(ROOT, ".venv", "bin", "podrun")), "--dir", str(tmp_path / "d2"), "fetch", f"oci-archive:{archive}"],
        check=True, capture_output=True, text=True,
    )
    assert other.stdout.strip() == image_id


def test_import_compressed_tar(tmp_path: Path, demo_rootfs: Path, podrun: PodrunRunner) -> None:
    tar = tmp_path / "rootfs.tar.zst"
    subprocess.run(["tar", "--zstd", "-C", str(demo_rootfs), "-cf", str(tar), "."], check=True)
    image_id = podrun("image", "import", str(tar), "registry.example/team/demo:v2").stdout.strip()
    assert podrun("image", "list").stdout.count("registry.example/team/demo:v2") == 1
    assert podrun("fetch", "--pull-policy", "never", "registry.example/team/demo:v2").stdout.strip() == image_id


def test_export_rejects_other_transports(podrun: PodrunRunner, demo_rootfs: Path) -> None:
    podrun("image", "import", str(demo_rootfs), "demo")
    res = podrun("image", "export", "demo", "docker://127.0.0.1/x", check=False)
    assert res.returncode == 253 and "oci-archive" in res.stderr
