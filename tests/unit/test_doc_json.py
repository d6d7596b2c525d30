"""fsutil.doc_json: the config.json writer of the oci flavor's start path.  Its output must be
exactly json.dumps' (compact) for plain documents, and json's own for anything else."""

from __future__ import annotations

import json
from typing import Any

import pytest

from podrun.fsutil import doc_json


def compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()

DOCS: list[Any] = [
    None, True, False, 0, -7, 2**40, "", "plain text /with/ slashes", [], {}, [[]], {"a": {}},
    {"ociVersion": "1.0.2", "root": {"path": "/p/rootfs", "readonly": False},
     "process": {"terminal": False, "args": ["/bin/sh", "-c", "echo hi"], "user": {"uid": 0, "gid": 0},
                 "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 524288}]},
     "linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}, {"type": "mount"}]}},
    ("tuple", 1, None),
    'a "quoted" word', "back\\slash \\\" both", {"k\"ey": ["v\\"]},  # printable ASCII: escaped here as json does
    {"env": ["A=1", 'B="two"']},
    [True, 1, False, 0],  # bools are never written as numbers, nor numbers as bools
]
NOT_PLAIN: list[Any] = [
    "tab\there", "new\nline", "ünïcödé", "\x00", {"ké": 1}, [["deep", ["deeper", "é"]]],
]


@pytest.mark.parametrize("doc", DOCS)
def test_plain_documents_are_written_as_json_dumps_writes_them(doc: Any) -> None:
    assert doc_json(doc) == compact(doc)


@pytest.mark.parametrize("doc", NOT_PLAIN)
def test_other_strings_go_through_the_json_module(doc: Any) -> None:
    out = doc_json(doc)
    assert out == compact(doc)
    assert json.loads(out) == doc


@pytest.mark.parametrize("value", [1.5, object(), {1, 2}, b"bytes"])
def test_what_it_does_not_write_is_a_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        doc_json({"k": [value]})


def test_a_real_app_config_round_trips() -> None:
    from podrun.model.manifest import AppSpec, PodManifest
    from podrun.stage1.oci.spec import build_config

    app = AppSpec("web", "sha256:" + "0" * 64, "web", ("/unused",), ("/bin/sh", "-c", 'echo "hi"'), ("PATH=/bin",),
                  capabilities=(0, 10))
    manifest = PodManifest("0123456789abcdef0123456789abcdef", (app,))
    config = build_config(manifest, app, rootfs="/r", pod_dir="/p", namespaces={"pid": "/proc/9/ns/pid"},
                          cgroups_path="/podrun/x", user=(0, 0, [0]), home="/root", seccomp=True)
    assert json.loads(doc_json(config)) == config
    config["process"]["args"] = ["/bin/true"]
    assert doc_json(config) == compact(config)  # plain: the fast path


def test_raw_json_is_spliced_as_it_is_and_parsed_only_on_the_slow_path() -> None:
    from podrun.fsutil import RawJSON

    section = b'{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}'
    doc = {"linux": {"seccomp": RawJSON(section)}, "args": ["/bin/true"]}
    assert doc_json(doc) == b'{"linux":{"seccomp":' + section + b'},"args":["/bin/true"]}'
    doc["args"] = ['say "hi"']  # not plain: json writes it, RawJSON parsed back into the document
    assert json.loads(doc_json(doc)) == {"linux": {"seccomp": json.loads(section)}, "args": ['say "hi"']}
