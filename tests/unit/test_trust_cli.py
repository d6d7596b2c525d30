"""``podrun trust show|set`` through the real CLI (``python -m podrun``), root-free: what the
file becomes, what is refused (one line, exit 253, the file untouched), and how it is
written (a new file renamed into place, mode 0644)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import ROOT

USAGE = 253


def trust(tmp_path: Path, policy: Path, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``podrun --signature-policy POLICY trust ARGS…`` with a data dir under *tmp_path*, run
    in *cwd* (this checkout's podrun imported all the same)."""
    return subprocess.run([sys.executable, "-m", "podrun", "--dir", str(tmp_path / "data"),
                           "--signature-policy", str(policy), "trust", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def one_line(res: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert res.returncode == code, (res.returncode, res.stderr)
    lines = res.stderr.strip().splitlines()  # one line, maybe a hint (click's "Try …" for bad flags)
    assert lines[0].startswith("podrun: ") and len(lines) <= 2, res.stderr
    assert all(line.startswith(("hint: ", "Try ")) for line in lines[1:]), res.stderr
    for word in words:
        assert word in lines[0], res.stderr


def cosign_key(path: Path) -> Path:
    """A P-256 public key in PEM (what cosign and sigstoreSigned's keyPath hold)."""
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


# an existing policy with what podrun does not use: transports it has no scopes for, a
# requirement kind it cannot check yet, and scopes of other transports
EXISTING = {
    "default": [{"type": "insecureAcceptAnything"}],
    "transports": {
        "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
        "atomic": {"registry.example.com/ns": [{"type": "reject"}]},
        "containers-storage": {"": [{"type": "reject"}]},
        "docker": {"quay.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "AAAA",
                                "signedIdentity": {"type": "matchRepository"}}]},
    },
}


def test_set_creates_a_missing_file_rejecting_by_default(tmp_path: Path) -> None:
    policy = tmp_path / "etc" / "policy.json"
    res = trust(tmp_path, policy, "set", "--type", "accept", "registry.example.com/ns/app")
    assert res.returncode == 0, res.stderr
    assert json.loads(policy.read_text()) == {
        "default": [{"type": "reject"}],
        "transports": {"docker": {"registry.example.com/ns/app": [{"type": "insecureAcceptAnything"}]}}}
    assert f"{policy}: docker registry.example.com/ns/app: insecureAcceptAnything" in res.stderr


def test_set_keeps_the_rest_of_an_existing_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(EXISTING))
    key = cosign_key(tmp_path / "cosign.pub")
    res = trust(tmp_path, policy, "set", "--type", "sigstoreSigned", "--pubkeysfile", str(key), "--prefix",
                "registry.example.com:5000")
    assert res.returncode == 0, res.stderr
    want = json.loads(json.dumps(EXISTING))
    want["transports"]["docker"]["registry.example.com:5000"] = [{"type": "sigstoreSigned", "keyPath": str(key)}]
    assert json.loads(policy.read_text()) == want
    assert trust(tmp_path, policy, "set", "--type", "reject", "default").returncode == 0
    want["default"] = [{"type": "reject"}]
    assert json.loads(policy.read_text()) == want


def test_set_with_several_key_files_writes_key_paths(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    keys = [cosign_key(tmp_path / "a.pub"), cosign_key(tmp_path / "b.pub")]
    # relative key paths are written absolute
    res = trust(tmp_path, policy, "set", "-t", "sigstoreSigned", "-f", "a.pub", "-f", "b.pub", "*.example.com",
                cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    written = json.loads(policy.read_text())["transports"]["docker"]["*.example.com"]
    assert written == [{"type": "sigstoreSigned", "keyPaths": [str(k) for k in keys]}]


@pytest.mark.parametrize(("args", "code", "words"), [  # a key file that is no key is a bad argument too
    (["-t", "accept", "-f", "KEY", "example.com"], USAGE, ["--pubkeysfile", "accept"]),
    (["-t", "reject", "-f", "KEY", "default"], USAGE, ["--pubkeysfile", "reject"]),
    (["-t", "signedBy", "example.com"], USAGE, ["signedBy", "--pubkeysfile"]),
    (["-t", "sigstoreSigned", "example.com"], USAGE, ["sigstoreSigned", "--pubkeysfile"]),
    (["-t", "signedBy", "-f", "NOTAKEY", "example.com"], USAGE, ["NOTAKEY", "not an OpenPGP public key"]),
    (["-t", "sigstoreSigned", "-f", "NOTAKEY", "example.com"], USAGE, ["NOTAKEY"]),
    (["-t", "signedBy", "-f", "MISSING", "example.com"], USAGE, ["MISSING"]),
    (["-t", "accept", "--prefix", "a.example.com", "b.example.com"], USAGE, ["SCOPE or --prefix"]),
    (["-t", "accept"], USAGE, ["SCOPE or --prefix"]),
    (["-t", "accept", "library/busybox"], USAGE, ["library/busybox", "invalid scope"]),
    (["-t", "accept", "Example.com/UPPER"], USAGE, ["Example.com/UPPER", "invalid scope"]),
    (["-t", "accept", "--prefix", "example.com/app:1:2"], USAGE, ["example.com/app:1:2", "invalid scope"]),
    (["-t", "maybe", "example.com"], USAGE, ["maybe"]),
])
def test_set_refuses_bad_input_and_leaves_the_file(tmp_path: Path, args: list[str], code: int,
                                                   words: list[str]) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(EXISTING))
    before = policy.read_bytes(), policy.stat().st_ino
    (tmp_path / "NOTAKEY").write_text("hello, this is not a key\n")
    paths = {"KEY": str(cosign_key(tmp_path / "key.pub")), "NOTAKEY": str(tmp_path / "NOTAKEY"),
             "MISSING": str(tmp_path / "MISSING")}
    res = trust(tmp_path, policy, "set", *[paths.get(a, a) for a in args])
    one_line(res, code, *[paths.get(w, w) for w in words])
    assert "Traceback" not in res.stderr
    assert (policy.read_bytes(), policy.stat().st_ino) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["policy.json", "NOTAKEY", "key.pub"])


def test_set_does_not_edit_an_invalid_file(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"default": [{"type": "reject"}], "frobnicate": 1}')
    before = policy.read_bytes()
    one_line(trust(tmp_path, policy, "set", "-t", "accept", "example.com"), USAGE, str(policy), "frobnicate")
    assert policy.read_bytes() == before


def test_set_writes_a_new_file_in_place_mode_0644(tmp_path: Path) -> None:
    """The policy is replaced by renaming a complete new file over it (a reader sees the old or
    the new one, never a part), readable by all whatever the umask; nothing else is left."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(EXISTING))
    policy.chmod(0o600)
    old = policy.stat().st_ino
    keep = os.open(policy, os.O_RDONLY)  # a reader holding the old file sees it whole
    old_umask = os.umask(0o077)
    try:
        res = trust(tmp_path, policy, "set", "-t", "reject", "example.com")
    finally:
        os.umask(old_umask)
    try:
        assert res.returncode == 0, res.stderr
        assert json.loads(os.pread(keep, 1 << 16, 0)) == EXISTING
    finally:
        os.close(keep)
    st = policy.stat()
    assert st.st_ino != old
    assert st.st_mode & 0o7777 == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name != "data"] == ["policy.json"]


def test_show_json(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    key = cosign_key(tmp_path / "cosign.pub")
    for args in (["-t", "reject", "default"], ["-t", "accept", "docker.io/library/busybox"],
                 ["-t", "sigstoreSigned", "-f", str(key), "registry.example.com"]):
        assert trust(tmp_path, policy, "set", *args).returncode == 0
    res = trust(tmp_path, policy, "show", "--format", "json")
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["policy"] == str(policy)
    rows = {(r["transport"], r["scope"]): r for r in shown["requirements"]}
    assert set(rows) == {("", "default"), ("docker", "docker.io/library/busybox"), ("docker", "registry.example.com")}
    assert rows["", "default"] == {"transport": "", "scope": "default", "type": "reject", "keys": "", "identity": ""}
    assert rows["docker", "docker.io/library/busybox"]["type"] == "insecureAcceptAnything"
    signed = rows["docker", "registry.example.com"]
    assert signed["type"] == "sigstoreSigned" and str(key) in signed["keys"] and signed["identity"]
    table = trust(tmp_path, policy, "show", "--no-legend")
    assert table.returncode == 0 and len(table.stdout.splitlines()) == 3
    assert "TRANSPORT" not in table.stdout


def test_show_without_a_policy_file(tmp_path: Path) -> None:
    one_line_hint = trust(tmp_path, tmp_path / "none.json", "show")
    assert one_line_hint.returncode == USAGE
    assert str(tmp_path / "none.json") in one_line_hint.stderr and "podrun trust set" in one_line_hint.stderr
    assert "Traceback" not in one_line_hint.stderr


def test_set_never_writes_through_a_link(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(EXISTING))
    before = target.read_bytes()
    policy = tmp_path / "policy.json"
    policy.symlink_to(target)
    one_line(trust(tmp_path, policy, "set", "-t", "accept", "default"), USAGE, str(policy))
    assert policy.is_symlink() and target.read_bytes() == before
