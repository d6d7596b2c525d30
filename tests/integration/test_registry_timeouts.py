"""A slow registry cannot hang ``podrun fetch``: the stall timeout (no byte for N seconds) and the
deadline of each registry request end it with one line, exit code 251, nothing left in
``store/tmp`` and the store as it was.  The fake registry drips its answers a byte at a time; the
timeouts are set small through the environment, as man/podrun-fetch.1 documents."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.errors import FetchError, UsageError
from tests.conftest import PodrunRunner, Result, require_root
from tests.fixtures import fakeregistry as fr
from tests.fixtures import images as img

BOUND = 120  # seconds: without the timeouts these fetches take hours; the test then fails


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One layout with two small images: ``good`` and ``slow``."""
    path = tmp_path_factory.mktemp("images") / "layout"
    for ref in ("good", "slow"):
        img.write_oci_layout(path, [img.tar_bytes([img.file(ref, f"{ref} image\n".encode())])], ref=ref)
    return path


@pytest.fixture
def fake(layout: Path) -> Iterator[fr.FakeRegistry]:
    require_root()
    with fr.serve("127.0.0.1", layout=layout) as registry:
        yield registry


def _fetch(podrun: PodrunRunner, fake: fr.FakeRegistry, ref: str, **env: str) -> Result:
    return podrun("fetch", f"docker://{fake.host}/test/busybox:{ref}", check=False, env=env, timeout=BOUND)


def _store_files(data_dir: Path) -> dict[str, int]:
    """Every file of the store but its lock files, with its size."""
    store = data_dir / "store"
    out = {}
    for dirpath, _dirs, files in os.walk(store):
        for name in files:
            path = Path(dirpath) / name
            if path.parent.name != "locks":
                out[str(path.relative_to(store))] = path.lstat().st_size
    return out


def _refused(res: Result, *words: str) -> None:
    assert res.returncode == FetchError.exit_code, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("podrun: "), res.stderr
    for word in words:
        assert word in lines[0], lines[0]


def _slow_blob(fake: fr.FakeRegistry) -> str:
    """The config digest of the ``slow`` image (its first blob a fetch downloads)."""
    import json

    manifest = json.loads(fake.blobs[fake.tags["slow"]])
    return str(manifest["config"]["digest"])


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_stalled_blob_fails_and_leaves_the_store_as_it_was(fake: fr.FakeRegistry, podrun: PodrunRunner,
                                                           data_dir: Path, phase: str) -> None:
    env = {"PODRUN_REGISTRY_STALL_TIMEOUT": "1", "PODRUN_REGISTRY_DEADLINE": "600"}
    assert _fetch(podrun, fake, "good", **env).returncode == 0
    before = _store_files(data_dir)
    blob = _slow_blob(fake)
    # One byte every 3 s: each gap is longer than the 1 s stall timeout.
    fake.behaviour.drip_prefix = f"/v2/test/busybox/blobs/{blob}"
    fake.behaviour.drip_interval = 3.0
    fake.behaviour.drip_headers = phase == "headers"
    res = _fetch(podrun, fake, "slow", **env)
    _refused(res, fake.host, blob, "stalled", "no data for 1 s", "PODRUN_REGISTRY_STALL_TIMEOUT")
    assert list((data_dir / "store" / "tmp").iterdir()) == []
    assert _store_files(data_dir) == before


@pytest.mark.parametrize("what", ["manifest", "blob"])
def test_trickle_past_the_deadline_fails_and_leaves_the_store_as_it_was(
        fake: fr.FakeRegistry, podrun: PodrunRunner, data_dir: Path, what: str) -> None:
    env = {"PODRUN_REGISTRY_STALL_TIMEOUT": "5", "PODRUN_REGISTRY_DEADLINE": "2"}
    assert _fetch(podrun, fake, "good", **env).returncode == 0
    before = _store_files(data_dir)
    # A byte every 0.2 s never stalls, but the answer takes minutes; the deadline is 2 s.
    fake.behaviour.drip_prefix = "/v2/test/busybox/manifests/slow" if what == "manifest" \
        else f"/v2/test/busybox/blobs/{_slow_blob(fake)}"
    fake.behaviour.drip_interval = 0.2
    res = _fetch(podrun, fake, "slow", **env)
    _refused(res, fake.host, what, "not complete within 2 s", "PODRUN_REGISTRY_DEADLINE")
    assert list((data_dir / "store" / "tmp").iterdir()) == []
    assert _store_files(data_dir) == before


@pytest.mark.parametrize("variable", ["PODRUN_REGISTRY_STALL_TIMEOUT", "PODRUN_REGISTRY_DEADLINE"])
@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", "1e12", ""])
def test_bad_timeout_values_are_usage_errors(fake: fr.FakeRegistry, podrun: PodrunRunner,
                                             variable: str, value: str) -> None:
    res = _fetch(podrun, fake, "good", **{variable: value})
    if value == "":
        assert res.returncode == 0, res.stderr  # empty means unset: the default applies
        return
    assert res.returncode == UsageError.exit_code, res.stderr
    assert res.stderr.splitlines()[0] == f"podrun: {variable}={value!r} is not a positive number of seconds"
    assert fake.seen == []  # refused before any request
