"""pod.json, the pod manifest on disk: a golden file written by podrun 0.1 (manifest version 1)
reads back to the values it holds, and what podrun writes reads back to the same manifest.

Only the public ``PodManifest.from_json``/``to_json`` are used, so the test holds across a
change of the records; a change of the on-disk format needs the golden file to stay readable
(a documented migration, man podrun-state.5) or refused with a clear error."""

from __future__ import annotations

import json

from podrun.model.manifest import PodManifest
from tests.conftest import ROOT
from tests.fixtures.schemas import validate

GOLDEN = ROOT / "tests" / "fixtures" / "pod-manifest-v1.json"


def test_golden_pod_json_reads_back_its_values() -> None:
    m = PodManifest.from_json(GOLDEN.read_bytes())
    assert m.uuid == "0b6f5c1e-7d2a-4c3b-9e8f-1a2b3c4d5e6f"
    assert [a.name for a in m.apps] == ["web", "side"]
    web, side = m.apps
    assert web.image_id == "sha256:" + "ab" * 32 and web.image_name == "docker://example.org/web:1.0"
    assert len(web.lower_dirs) == 2 and web.lower_dirs[0].endswith("01" * 32 + "/rootfs")
    assert web.exec_argv == ("/bin/httpd", "-f", "-p", "80")
    assert web.env == ("PATH=/usr/bin:/bin", "GREETING=hello world", "container=podrun")
    assert (web.user, web.group, web.supplementary_gids, web.working_dir) == ("33", "33", (4, 27), "/srv")
    assert [(mt.volume, mt.target) for mt in web.mounts] == [("data", "/data"), ("scratch", "/tmp/scratch")]
    assert web.read_only_rootfs is True and web.no_new_privileges is True and web.stop_signal == 3
    assert (web.resources.memory_max, web.resources.cpu_millis, web.resources.pids_max) == (128 << 20, 500, 64)
    assert side.exec_argv == ("/bin/sh", "-c", "sleep 1000") and side.read_only_rootfs is False
    assert [(v.name, v.kind, v.source, v.read_only) for v in m.volumes] == [
        ("data", "host", "/srv/data", True), ("scratch", "empty", None, False)]
    assert (m.hostname, m.stage1, m.interactive, m.register, m.notify) == ("web-1", "default", False, False, "app")
    assert (m.dns, m.hosts_entries, m.dns_search, m.dns_opts) == (("1.1.1.1",), ("10.0.0.1=db",), ("example.org",),
                                                                   ("ndots:2",))
    assert [(n.name, n.args) for n in m.networks] == [("default", ()), ("mycni", (("IP", "10.1.2.3"),))]
    assert [(p.proto, p.pod_port, p.host_port, p.host_ip) for p in m.ports] == [
        ("tcp", 80, 8080, ""), ("udp", 53, 5353, "127.0.0.1")]
    assert m.log_max_size == 16 << 20


def test_what_podrun_writes_reads_back_the_same() -> None:
    m = PodManifest.from_json(GOLDEN.read_bytes())
    written = m.to_json()
    # read back and written again, byte for byte (records need not define ==)
    assert PodManifest.from_json(written).to_json() == written
    validate(json.loads(written), "pod-manifest")
