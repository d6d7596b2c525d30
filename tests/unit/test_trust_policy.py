"""containers-policy.json(5) as containers/image reads it: strict parsing (file and key path in
every refusal), scope precedence, signedIdentity rules, and the editing helpers of ``trust set``."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from podrun.errors import UsageError
from podrun.image.reference import parse_docker_name
from podrun.trust.identity import (
    ExactReference,
    ExactRepository,
    IdentityRule,
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    Named,
    RemapIdentity,
    parse_canonical,
    parse_normalized,
    valid_remap_prefix,
)
from podrun.trust.policy import (
    InsecureAcceptAnything,
    Policy,
    PolicyError,
    PolicyRow,
    Reject,
    SignedBaseLayer,
    SignedBy,
    SigstoreSigned,
    describe,
    docker_scopes,
    load_policy,
    parse_policy,
    path_scopes,
    policy_path,
    resolve_path,
    set_default,
    set_scope,
    validate_scope,
)

HEX = "a" * 64
HEX2 = "b" * 64
ACCEPT = {"type": "insecureAcceptAnything"}
REJECT = {"type": "reject"}
GPG = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}
COSIGN = {"type": "sigstoreSigned", "keyPath": "/k.pub"}


def doc(default: object = None, **transports: object) -> bytes:
    top: dict[str, object] = {"default": [REJECT] if default is None else default}
    if transports:
        top["transports"] = transports
    return json.dumps(top).encode()


def refused(data: bytes | str) -> str:
    with pytest.raises(PolicyError) as exc:
        parse_policy(data.encode() if isinstance(data, str) else data, "/etc/p.json")
    assert exc.value.exit_code == 253
    message = str(exc.value)
    assert message.startswith("/etc/p.json: ") and "\n" not in message
    return message[len("/etc/p.json: ") :]


def req(requirement: object) -> object:
    """The single parsed requirement of a policy whose default is [requirement]."""
    (only,) = parse_policy(doc([requirement]), "p").default
    return only


def ref(text: str) -> object:
    return parse_docker_name(text)


# --- policy_path / load_policy -------------------------------------------------------------------


def test_policy_path_flag_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "mine.json"
    flag.write_text("{}")
    (tmp_path / ".config/containers").mkdir(parents=True)
    (tmp_path / ".config/containers/policy.json").write_text("{}")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert policy_path(str(flag)) == str(flag)
    assert policy_path(None) == str(tmp_path / ".config/containers/policy.json")


def test_policy_path_system_when_no_user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr("podrun.trust.policy.SYSTEM_POLICY", str(tmp_path / "sys.json"))
    (tmp_path / "sys.json").write_text("{}")
    assert policy_path(None) == str(tmp_path / "sys.json")
    assert policy_path("") == str(tmp_path / "sys.json")


@pytest.mark.parametrize("use_flag", [True, False])
def test_missing_policy_says_how_to_create_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_flag: bool) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    missing = str(tmp_path / "none.json")
    monkeypatch.setattr("podrun.trust.policy.SYSTEM_POLICY", missing)
    with pytest.raises(PolicyError) as exc:
        policy_path(missing if use_flag else None)
    text = str(exc.value)
    assert missing in text and "podrun trust set --type signedBy --pubkeysfile KEY SCOPE" in text and "\n" not in text
    assert isinstance(exc.value, UsageError)


def test_load_policy_reads_and_names_file(tmp_path: Path) -> None:
    f = tmp_path / "p.json"
    f.write_bytes(doc([ACCEPT]))
    policy = load_policy(str(f))
    assert policy.default == (InsecureAcceptAnything(),) and policy.path == str(f)
    with pytest.raises(PolicyError, match="cannot read the signature policy .*nope.json"):
        load_policy(str(tmp_path / "nope.json"))
    f.write_text("{")
    with pytest.raises(PolicyError, match=f"^{f}: not a valid JSON"):
        load_policy(str(f))


# --- strict parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("[]", "policy: must be an object"),
        ("{}", 'policy: missing key "default"'),
        ('{"default": [{"type": "reject"}], "extra": 1}', 'policy: unknown key "extra"'),
        ('{"default": [{"type": "reject"}], "default": [{"type": "reject"}]}', 'policy: duplicate key "default"'),
        ('{"default": []}', "default: the list of requirements must not be empty"),
        ('{"default": {}}', "default: must be a list"),
        ('{"default": null}', "default: must be a list"),
        ('{"default": ["reject"]}', "default[0]: must be an object"),
        ('{"default": [{}]}', 'default[0].type: unknown requirement type null'),
        ('{"default": [{"type": "accept"}]}', 'default[0].type: unknown requirement type "accept"'),
        ('{"default": [{"type": "reject", "x": 1}]}', 'default[0]: unknown key "x"'),
        ('{"default": [{"type": "reject", "type": "reject"}]}', 'default[0]: duplicate key "type"'),
        ('{"default": [{"type": "insecureAcceptAnything", "keyPath": "/a"}]}', 'default[0]: unknown key "keyPath"'),
        ('{"default": [{"type": "reject"}], "transports": []}', "transports: must be an object"),
        ('{"default": [{"type": "reject"}], "transports": {"docker": []}}', "transports.docker: must be an object"),
        ('{"default": [{"type": "reject"}], "transports": {"docker": {"a.com": []}}}',
         'transports.docker["a.com"]: the list of requirements must not be empty'),
        ('{"default": [{"type": "reject"}], "transports": {"docker": {"a.com": [{"type": "reject"}], "a.com": []}}}',
         'transports.docker: duplicate key "a.com"'),
        ('{"default": [{"type": "reject"}], "transports": {"docker": {}, "docker": {}}}',
         'transports: duplicate key "docker"'),
        ('{"default": [{"type": "reject"}], "transports": {"Odd Name": {"x": []}}}',
         'transports["Odd Name"]["x"]: the list of requirements must not be empty'),
        ('{"default": [{"type": "reject"}]} {}', "not a valid JSON document"),
        ('{"default": [{"type": "reject", "n": NaN}]}', "not a valid JSON document"),
    ],
)
def test_structure_refusals(data: str, expected: str) -> None:
    assert expected in refused(data)


def test_not_utf8_refused() -> None:
    assert "not a valid JSON document" in refused(b'{"default": [{"type": "reject\xff"}]}')


def test_minimal_policy_and_unknown_transport_kept() -> None:
    policy = parse_policy(doc([ACCEPT], atomic={"anything at all": [REJECT]}, docker={}), "p")
    assert policy.default == (InsecureAcceptAnything(),)
    assert policy.transports == {"atomic": {"anything at all": (Reject(),)}, "docker": {}}


def test_unknown_transport_contents_still_checked() -> None:
    assert refused(doc(**{"containers-storage": {"": [{"type": "nope"}]}})) == (
        'transports.containers-storage[""][0].type: unknown requirement type "nope"'
    )


@pytest.mark.parametrize(
    ("transport", "scope", "expected"),
    [
        ("oci", "relative/dir", "must be an absolute path"),
        ("oci", "/", 'use the transport default "" instead of "/"'),
        ("oci", "/a/../b", "not in canonical form (use '/b')"),
        ("oci", "/a/", "not in canonical form (use '/a')"),
        ("oci", "//a", "not in canonical form (use '/a')"),
        ("oci-archive", "a.tar", "must be an absolute path"),
        ("dir", "/x/./y", "not in canonical form (use '/x/y')"),
        ("docker-archive", "/x.tar", 'no scopes but the default ""'),
        ("tarball", "x", 'no scopes but the default ""'),
        ("sif", "/x", 'no scopes but the default ""'),
        ("docker-daemon", f"sha256:{HEX}", "is a digest, not a namespace"),
    ],
)
def test_invalid_scopes_of_known_transports(transport: str, scope: str, expected: str) -> None:
    message = refused(doc(**{transport: {scope: [ACCEPT]}}))
    assert message.startswith(f"transports.{transport}[{json.dumps(scope)}]: invalid scope: ")
    assert message.endswith(expected)


@pytest.mark.parametrize(
    ("transport", "scope"),
    [
        ("oci", "/srv/images"), ("oci-archive", "/srv/a.tar"), ("docker-archive", ""), ("oci", ""),
        ("docker-daemon", "docker.io/library/busybox:latest"), ("dir", "/x"),
        # containers/image checks no docker scope on reading: a malformed one only never matches.
        ("docker", "NOT a reference"), ("docker", "*.example.com"), ("docker", "busybox"),
    ],
)
def test_valid_scopes_accepted(transport: str, scope: str) -> None:
    policy = parse_policy(doc(**{transport: {scope: [ACCEPT]}}), "p")
    assert policy.transports[transport][scope] == (InsecureAcceptAnything(),)


# --- requirements ------------------------------------------------------------------------------


def test_signed_by_forms() -> None:
    assert req(GPG) == SignedBy("GPGKeys", MatchRepoDigestOrExact(), key_path="/k.gpg")
    paths = req({"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/a", "/b"]})
    assert paths == SignedBy("GPGKeys", MatchRepoDigestOrExact(), key_paths=("/a", "/b"))
    data = req({"type": "signedBy", "keyType": "GPGKeys", "keyData": base64.b64encode(b"KEY\0").decode()})
    assert isinstance(data, SignedBy) and data.key_data == b"KEY\0" and data.key_path is None
    assert not data.needs_unsupported
    wrapped = req({"type": "signedBy", "keyType": "GPGKeys", "keyData": "S0VZ\nAA==\r\n"})
    assert isinstance(wrapped, SignedBy) and wrapped.key_data == b"KEY\0"


@pytest.mark.parametrize("key_type", ["signedByGPGKeys", "X509Certificates", "signedByX509CAs"])
def test_signed_by_other_key_types_parse_but_fail_closed(key_type: str) -> None:
    parsed = req({**GPG, "keyType": key_type})
    assert isinstance(parsed, SignedBy) and parsed.key_type == key_type and parsed.needs_unsupported


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ({**GPG, "keyType": "X"}, 'default[0].keyType: unknown key type "X"'),
        ({"type": "signedBy", "keyPath": "/k"}, 'default[0]: missing key "keyType"'),
        ({**GPG, "keyType": 1}, "default[0].keyType: must be a string, not 1"),
        ({"type": "signedBy", "keyType": "GPGKeys"}, "exactly one of keyPath, keyPaths, keyData must be present (got none)"),
        ({**GPG, "keyData": "AA=="}, "exactly one of keyPath, keyPaths, keyData must be present (got keyPath, keyData)"),
        ({**GPG, "keyPath": ""}, "default[0].keyPath: must not be empty"),
        ({**GPG, "keyPath": ["/a"]}, "default[0].keyPath: must be a string"),
        ({"type": "signedBy", "keyType": "GPGKeys", "keyPaths": []}, "default[0].keyPaths: must not be empty"),
        ({"type": "signedBy", "keyType": "GPGKeys", "keyPaths": "/a"}, "default[0].keyPaths: must be a list"),
        ({"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/a", 2]}, "default[0].keyPaths[1]: must be a string"),
        ({"type": "signedBy", "keyType": "GPGKeys", "keyData": "not base64!"}, "default[0].keyData: invalid base64"),
        ({"type": "signedBy", "keyType": "GPGKeys", "keyData": "QQ"}, "default[0].keyData: invalid base64"),
        ({**GPG, "signedIdentity": {"type": "matchTag"}}, 'default[0].signedIdentity.type: unknown signedIdentity type "matchTag"'),
        ({**GPG, "signedIdentity": "matchExact"}, "default[0].signedIdentity: must be an object"),
        ({**GPG, "signedIdentity": None}, "default[0].signedIdentity: must be an object"),
        ({**GPG, "keyring": "/x"}, 'default[0]: unknown key "keyring"'),
    ],
)
def test_signed_by_refusals(requirement: object, expected: str) -> None:
    assert expected in refused(doc([requirement]))


def test_sigstore_forms() -> None:
    assert req(COSIGN) == SigstoreSigned(MatchRepoDigestOrExact(), key_path="/k.pub")
    keyed = req({"type": "sigstoreSigned", "keyDatas": ["QQ==", "Qg=="], "signedIdentity": {"type": "matchRepository"}})
    assert keyed == SigstoreSigned(MatchRepository(), key_datas=(b"A", b"B"))
    assert isinstance(keyed, SigstoreSigned) and not keyed.needs_unsupported
    paths = req({"type": "sigstoreSigned", "keyPaths": ["/a", "/b"]})
    assert isinstance(paths, SigstoreSigned) and paths.key_paths == ("/a", "/b")
    data = req({"type": "sigstoreSigned", "keyData": "QQ=="})
    assert isinstance(data, SigstoreSigned) and data.key_data == b"A"


FULCIO = {"caPath": "/ca.pem", "oidcIssuer": "https://issuer", "subjectEmail": "a@b"}


@pytest.mark.parametrize(
    "requirement",
    [
        {**COSIGN, "rekorPublicKeyPath": "/rekor.pub"},
        {**COSIGN, "rekorPublicKeyData": "QQ=="},
        {**COSIGN, "rekorPublicKeyPaths": ["/r1", "/r2"]},
        {**COSIGN, "rekorPublicKeyDatas": ["QQ=="]},
        {"type": "sigstoreSigned", "fulcio": FULCIO, "rekorPublicKeyPath": "/r"},
        {"type": "sigstoreSigned", "fulcio": {"caData": "QQ==", "oidcIssuer": "i", "subjectEmail": "e"}, "rekorPublicKeyPath": "/r"},
        {"type": "sigstoreSigned", "pki": {"caRootsPath": "/roots", "subjectHostname": "h"}},
        {"type": "sigstoreSigned", "pki": {"caRootsData": "QQ==", "caIntermediatesPath": "/i", "subjectEmail": "e"}},
    ],
)
def test_sigstore_unsupported_parts_parse_but_fail_closed(requirement: dict[str, object]) -> None:
    parsed = req(requirement)
    assert isinstance(parsed, SigstoreSigned) and parsed.needs_unsupported


def test_sigstore_rekor_and_fulcio_recorded() -> None:
    parsed = req({"type": "sigstoreSigned", "fulcio": {**FULCIO, "caPath": "/ca"}, "rekorPublicKeyData": "QQ=="})
    assert isinstance(parsed, SigstoreSigned)
    assert parsed.rekor == ("rekorPublicKeyData", b"A")
    assert parsed.fulcio == (("caPath", "/ca"), ("oidcIssuer", "https://issuer"), ("subjectEmail", "a@b"))
    pki = req({"type": "sigstoreSigned", "pki": {"caRootsData": "QQ==", "subjectEmail": "e"}})
    assert isinstance(pki, SigstoreSigned) and pki.pki == (("caRootsData", b"A"), ("subjectEmail", "e"))


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ({"type": "sigstoreSigned"}, "exactly one of keyPath, keyPaths, keyData, keyDatas, fulcio, pki must be present (got none)"),
        ({**COSIGN, "keyData": "QQ=="}, "(got keyPath, keyData)"),
        ({**COSIGN, "keyPath": ""}, "default[0].keyPath: must not be empty"),
        ({"type": "sigstoreSigned", "keyPaths": []}, "default[0].keyPaths: must not be empty"),
        ({"type": "sigstoreSigned", "keyDatas": []}, "default[0].keyDatas: must not be empty"),
        ({"type": "sigstoreSigned", "keyDatas": ["%%"]}, "default[0].keyDatas[0]: invalid base64"),
        ({**COSIGN, "keyType": "GPGKeys"}, 'default[0]: unknown key "keyType"'),
        ({**COSIGN, "rekorPublicKeyPath": "/a", "rekorPublicKeyData": "QQ=="}, "at most one of rekorPublicKeyPath"),
        ({**COSIGN, "rekorPublicKeyPaths": []}, "default[0].rekorPublicKeyPaths: must not be empty"),
        ({"type": "sigstoreSigned", "fulcio": FULCIO}, "fulcio needs one of rekorPublicKeyPath"),
        ({"type": "sigstoreSigned", "fulcio": {"oidcIssuer": "i", "subjectEmail": "e"}, "rekorPublicKeyPath": "/r"},
         "default[0].fulcio: exactly one of caPath, caData must be present (got none)"),
        ({"type": "sigstoreSigned", "fulcio": {**FULCIO, "caData": "QQ=="}, "rekorPublicKeyPath": "/r"},
         "(got caPath, caData)"),
        ({"type": "sigstoreSigned", "fulcio": {"caPath": "/c", "subjectEmail": "e"}, "rekorPublicKeyPath": "/r"},
         'default[0].fulcio: missing key "oidcIssuer"'),
        ({"type": "sigstoreSigned", "fulcio": {**FULCIO, "oidcIssuer": ""}, "rekorPublicKeyPath": "/r"},
         "default[0].fulcio: oidcIssuer and subjectEmail must not be empty"),
        ({"type": "sigstoreSigned", "fulcio": {**FULCIO, "x": 1}, "rekorPublicKeyPath": "/r"}, 'default[0].fulcio: unknown key "x"'),
        ({"type": "sigstoreSigned", "pki": {"subjectEmail": "e"}}, "default[0].pki: exactly one of caRootsPath, caRootsData"),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r"}}, "at least one of subjectEmail, subjectHostname"),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "subjectEmail": ""}}, "at least one of subjectEmail"),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "caIntermediatesPath": "/i", "caIntermediatesData": "QQ==",
                                            "subjectEmail": "e"}}, "caIntermediatesPath and caIntermediatesData cannot"),
    ],
)
def test_sigstore_refusals(requirement: object, expected: str) -> None:
    assert expected in refused(doc([requirement]))


def test_signed_base_layer_parses_and_fails_closed() -> None:
    parsed = req({"type": "signedBaseLayer", "baseLayerIdentity": {"type": "matchExact"}})
    assert parsed == SignedBaseLayer(MatchExact()) and isinstance(parsed, SignedBaseLayer) and parsed.needs_unsupported
    assert 'missing key "baseLayerIdentity"' in refused(doc([{"type": "signedBaseLayer"}]))


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ({"type": "matchExact"}, MatchExact()),
        ({"type": "matchRepoDigestOrExact"}, MatchRepoDigestOrExact()),
        ({"type": "matchRepository"}, MatchRepository()),
        ({"type": "exactReference", "dockerReference": "busybox:1"}, ExactReference("busybox:1")),
        ({"type": "exactReference", "dockerReference": f"a.com/x@sha256:{HEX}"}, ExactReference(f"a.com/x@sha256:{HEX}")),
        ({"type": "exactRepository", "dockerRepository": "a.com/x"}, ExactRepository("a.com/x")),
        ({"type": "remapIdentity", "prefix": "m.com:5000/v", "signedPrefix": "v.com"}, RemapIdentity("m.com:5000/v", "v.com")),
    ],
)
def test_identity_forms(identity: object, expected: IdentityRule) -> None:
    parsed = req({**GPG, "signedIdentity": identity})
    assert isinstance(parsed, SignedBy) and parsed.signed_identity == expected


@pytest.mark.parametrize(
    ("identity", "expected"),
    [
        ({"type": "matchExact", "dockerReference": "x:1"}, 'signedIdentity: unknown key "dockerReference"'),
        ({"type": "matchRepoDigestOrExact", "x": 1}, 'signedIdentity: unknown key "x"'),
        ({"type": "matchRepository", "x": 1}, 'signedIdentity: unknown key "x"'),
        ({"type": "exactReference"}, 'signedIdentity: missing key "dockerReference"'),
        ({"type": "exactReference", "dockerReference": "busybox"}, "signedIdentity.dockerReference: 'busybox' has neither a tag"),
        ({"type": "exactReference", "dockerReference": "Bad Ref:1"}, "signedIdentity.dockerReference: repository name 'library/Bad Ref' must be lowercase"),
        ({"type": "exactReference", "dockerReference": 5}, "signedIdentity.dockerReference: must be a string"),
        ({"type": "exactRepository"}, 'signedIdentity: missing key "dockerRepository"'),
        ({"type": "exactRepository", "dockerRepository": "a.com//x"}, "signedIdentity.dockerRepository: invalid reference format"),
        ({"type": "exactRepository", "dockerRepository": "docker.io/UP"}, "signedIdentity.dockerRepository: repository name 'library/UP' must be lowercase"),
        ({"type": "remapIdentity", "prefix": "a.com"}, 'signedIdentity: missing key "signedPrefix"'),
        ({"type": "remapIdentity", "prefix": "*.a.com", "signedPrefix": "b.com"}, "signedIdentity.prefix: '*.a.com' is not"),
        ({"type": "remapIdentity", "prefix": "a.com", "signedPrefix": "b.com/x:1"}, "signedIdentity.signedPrefix: 'b.com/x:1'"),
        ({"type": "remapIdentity", "prefix": "", "signedPrefix": "b.com"}, "signedIdentity.prefix: '' is not"),
        ({"type": "remapIdentity", "prefix": "a.com", "signedPrefix": "b.com", "x": 1}, 'signedIdentity: unknown key "x"'),
        ({"type": "matchExact", "type2": 1}, 'signedIdentity: unknown key "type2"'),
    ],
)
def test_identity_refusals(identity: object, expected: str) -> None:
    assert f"default[0].{expected}" in refused(doc([{**GPG, "signedIdentity": identity}]))


def test_identity_error_path_inside_transport() -> None:
    policy = doc(docker={"example.com": [ACCEPT, {**GPG, "keyType": "X"}]})
    assert refused(policy) == 'transports.docker["example.com"][1].keyType: unknown key type "X"'


@pytest.mark.parametrize(
    ("prefix", "valid"),
    [
        ("example.com", True), ("example.com:5000", True), ("localhost", True), ("busybox", True),
        ("example.com/ns", True), ("example.com:5000/ns/repo", True), ("[::1]:5000/ns", True),
        ("ns/repo", True), ("UP/x", True), ("example.com/ns:tag", False), (f"example.com/x@sha256:{HEX}", False),
        ("*.example.com", False), ("example.com/", False), ("", False), ("example.com/UP", False),
    ],
)
def test_remap_prefix_validity(prefix: str, valid: bool) -> None:
    assert valid_remap_prefix(prefix) is valid


# --- references --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox"),
        ("busybox:latest", "docker.io/library/busybox:latest"),
        ("docker.io/busybox:1", "docker.io/library/busybox:1"),
        ("index.docker.io/busybox:1", "docker.io/library/busybox:1"),
        ("index.docker.io/u/r", "docker.io/u/r"),
        ("user/repo", "docker.io/user/repo"),
        ("localhost/repo", "localhost/repo"),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t"),
        ("Registry/repo", "Registry/repo"),  # an upper-case first component is a registry
        ("foo:5000", "docker.io/library/foo:5000"),  # no slash: a tag, not a port
        (f"busybox@sha256:{HEX}", f"docker.io/library/busybox@sha256:{HEX}"),
        (f"a.com/x:t@sha256:{HEX}", f"a.com/x:t@sha256:{HEX}"),
        (f"a.com/x@sha512:{'c' * 128}", f"a.com/x@sha512:{'c' * 128}"),
        (f"a.com/x@sha384:{'c' * 96}", f"a.com/x@sha384:{'c' * 96}"),
        ("[::1]:5000/x", "[::1]:5000/x"),
        ("a.com/x__y/a-----b/c.d:T_a.g-1", "a.com/x__y/a-----b/c.d:T_a.g-1"),
    ],
)
def test_parse_normalized(text: str, expected: str) -> None:
    assert str(parse_normalized(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "", "Busybox", "docker.io/Busybox", "a.com/UP", HEX, "a.com/x:", "a.com/x@sha256:abc", f"a.com/x@sha256:{'A' * 64}",
        f"a.com/x@md5:{'a' * 32}", f"a.com/x@sha256:{HEX}a", "a.com//x", "a.com/x_", "a.com/-x", "-a.com/x",
        "a.com/x:" + "t" * 129, "a.com/" + "x" * 251, "a.com/x:é", "a.com/x:ta g", "a.com/x___y",
    ],
)
def test_parse_normalized_refusals(text: str) -> None:
    with pytest.raises(ValueError):
        parse_normalized(text)


def test_name_length_limit_is_255() -> None:
    assert parse_normalized("a.com/" + "x" * 249).name == "a.com/" + "x" * 249
    with pytest.raises(ValueError, match="longer than 255"):
        parse_normalized("a.com/" + "x" * 250)


def test_parse_canonical_and_named() -> None:
    assert parse_canonical("docker.io/library/busybox:1") == Named("docker.io/library/busybox", "1", None)
    for short in ("busybox:1", "docker.io/busybox:1", "index.docker.io/library/busybox:1"):
        with pytest.raises(ValueError, match="fully expanded"):
            parse_canonical(short)
    named = parse_normalized(f"a.com/x:t@sha256:{HEX}")
    assert (named.name, named.tag, named.digest, named.name_only) == ("a.com/x", "t", f"sha256:{HEX}", False)
    assert parse_normalized("a.com/x").name_only
    assert not parse_normalized(f"a.com/x@sha256:{HEX}").name_only


# --- scopes ------------------------------------------------------------------------------------


def test_docker_scopes_order() -> None:
    assert docker_scopes(ref("a.example.com:5000/ns/sub/repo:1")) == [  # type: ignore[arg-type]
        "a.example.com:5000/ns/sub/repo:1", "a.example.com:5000/ns/sub/repo", "a.example.com:5000/ns/sub",
        "a.example.com:5000/ns", "a.example.com:5000", "*.example.com", "*.com",
    ]
    assert docker_scopes(ref("busybox")) == [  # type: ignore[arg-type]
        "docker.io/library/busybox:latest", "docker.io/library/busybox", "docker.io/library", "docker.io", "*.io",
    ]
    assert docker_scopes(ref(f"localhost:5000/x@sha256:{HEX}")) == [  # type: ignore[arg-type]
        f"localhost:5000/x@sha256:{HEX}", "localhost:5000/x", "localhost:5000",
    ]
    # Both a tag and a digest: the digest names the image (the tag is dropped, as podman pulls).
    assert docker_scopes(ref(f"q.io/x:t@sha256:{HEX}"))[0] == f"q.io/x@sha256:{HEX}"  # type: ignore[arg-type]
    assert docker_scopes(ref("[::1]:5000/x:1")) == ["[::1]:5000/x:1", "[::1]:5000/x", "[::1]:5000"]  # type: ignore[arg-type]


LEVELS = {
    "a.example.com:5000/ns/repo:1": "tag",
    f"a.example.com:5000/ns/repo@sha256:{HEX}": "digest",
    "a.example.com:5000/ns/repo": "repo",
    "a.example.com:5000/ns": "namespace",
    "a.example.com:5000": "host",
    "*.example.com": "wildcard",
    "*.com": "tld",
    "": "transport",
}


def layered(drop: set[str]) -> Policy:
    scopes = {scope: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": f"/{name}"}]
              for scope, name in LEVELS.items() if name not in drop}
    return parse_policy(doc([REJECT], docker=scopes), "p")


@pytest.mark.parametrize(
    ("image", "drop", "scope", "key"),
    [
        ("a.example.com:5000/ns/repo:1", set(), "a.example.com:5000/ns/repo:1", "/tag"),
        ("a.example.com:5000/ns/repo:2", set(), "a.example.com:5000/ns/repo", "/repo"),
        (f"a.example.com:5000/ns/repo@sha256:{HEX}", set(), f"a.example.com:5000/ns/repo@sha256:{HEX}", "/digest"),
        (f"a.example.com:5000/ns/repo@sha256:{HEX2}", set(), "a.example.com:5000/ns/repo", "/repo"),
        ("a.example.com:5000/ns/repo:1", {"tag"}, "a.example.com:5000/ns/repo", "/repo"),
        ("a.example.com:5000/ns/other:1", set(), "a.example.com:5000/ns", "/namespace"),
        ("a.example.com:5000/ns/deep/er:1", set(), "a.example.com:5000/ns", "/namespace"),
        ("a.example.com:5000/nsx:1", set(), "a.example.com:5000", "/host"),
        ("a.example.com:5000/ns/repo:1", {"tag", "repo", "namespace"}, "a.example.com:5000", "/host"),
        ("a.example.com/ns/repo:1", set(), "*.example.com", "/wildcard"),  # another port, another host
        ("a.example.com:5001/x:1", set(), "*.example.com", "/wildcard"),
        ("b.a.example.com/x:1", set(), "*.example.com", "/wildcard"),
        ("example.com/x:1", set(), "*.com", "/tld"),  # never *.example.com itself
        ("a.example.com:5000/ns/repo:1", {"tag", "repo", "namespace", "host"}, "*.example.com", "/wildcard"),
        ("a.example.com:5000/ns/repo:1", {"tag", "repo", "namespace", "host", "wildcard"}, "*.com", "/tld"),
        ("example.org/x:1", set(), "", "/transport"),
        ("localhost/x:1", {"transport"}, None, None),
    ],
)
def test_scope_precedence(image: str, drop: set[str], scope: str | None, key: str | None) -> None:
    name, reqs = layered(drop).requirements_for("docker", ref(image))  # type: ignore[arg-type]
    if scope is None:
        assert (name, reqs) == ("default", (Reject(),))
        return
    assert name == f"transports.docker[{json.dumps(scope)}]"
    (only,) = reqs
    assert isinstance(only, SignedBy) and only.key_path == key


def test_no_transport_section_uses_default() -> None:
    policy = parse_policy(doc([ACCEPT], oci={"": [REJECT]}), "p")
    assert policy.requirements_for("docker", ref("busybox")) == ("default", (InsecureAcceptAnything(),))  # type: ignore[arg-type]


def test_docker_hub_scope_needs_expanded_form() -> None:
    policy = parse_policy(doc(docker={"busybox": [ACCEPT], "docker.io/library/alpine": [ACCEPT]}), "p")
    assert policy.requirements_for("docker", ref("busybox"))[0] == "default"  # type: ignore[arg-type]
    assert policy.requirements_for("docker", ref("alpine:3"))[0] == 'transports.docker["docker.io/library/alpine"]'  # type: ignore[arg-type]


def test_docker_scope_uses_normalized_registry() -> None:
    policy = parse_policy(doc(docker={"docker.io/library/busybox": [ACCEPT]}), "p")
    name, _ = policy.requirements_for("docker", ref("index.docker.io/library/busybox:1"))  # type: ignore[arg-type]
    assert name == 'transports.docker["docker.io/library/busybox"]'


def test_invalid_docker_identity_is_usage_error() -> None:
    from podrun.image.reference import DockerReference

    with pytest.raises(UsageError, match="invalid image reference"):
        docker_scopes(DockerReference("a.com", "UP", "t", None))


def test_path_scopes_and_oci_resolution(tmp_path: Path) -> None:
    real = tmp_path / "real" / "layout"
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    base = str(tmp_path.resolve())
    assert resolve_path(str(link / "layout")) == f"{base}/real/layout"
    assert resolve_path(str(link / "missing.tar")) == f"{base}/real/missing.tar"
    assert resolve_path("///proc/self/fd/3") == "/proc/self/fd/3"
    assert resolve_path("/proc/self/../x") == "/proc/self/../x"
    scopes = path_scopes(str(link / "layout"))
    assert scopes[:3] == [f"{base}/real/layout", f"{base}/real", base] and "/" not in scopes
    assert scopes[-1] == "/" + base.split("/")[1]
    with pytest.raises(UsageError, match="cannot resolve the image path"):
        resolve_path(str(tmp_path / "no" / "such"))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError):
        resolve_path(str(tmp_path / "dangling"))


def test_relative_path_resolved_from_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_path("d") == f"{tmp_path.resolve()}/d"
    assert resolve_path("new.tar") == f"{tmp_path.resolve()}/new.tar"


@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_path_scope_precedence(tmp_path: Path, transport: str) -> None:
    base = tmp_path.resolve()
    (base / "imgs" / "a").mkdir(parents=True)
    policy = parse_policy(doc(**{transport: {
        str(base / "imgs" / "a"): [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/a"}],
        str(base / "imgs"): [ACCEPT],
        "": [REJECT],
    }}), "p")
    name, reqs = policy.requirements_for(transport, str(base / "imgs" / "a"))
    assert name == f"transports.{transport}[{json.dumps(str(base / 'imgs' / 'a'))}]" and isinstance(reqs[0], SignedBy)
    assert policy.requirements_for(transport, str(base / "imgs" / "b")) == (
        f"transports.{transport}[{json.dumps(str(base / 'imgs'))}]", (InsecureAcceptAnything(),))
    assert policy.requirements_for(transport, str(base / "b"))[0] == f'transports.{transport}[""]'


def test_docker_archive_only_transport_default() -> None:
    policy = parse_policy(doc([ACCEPT], **{"docker-archive": {"": [REJECT]}}), "p")
    assert policy.requirements_for("docker-archive", "/x.tar") == ('transports.docker-archive[""]', (Reject(),))
    assert policy.requirements_for("docker-archive", None) == ('transports.docker-archive[""]', (Reject(),))
    assert policy.requirements_for("oci", "/x") == ("default", (InsecureAcceptAnything(),))


# --- signedIdentity ------------------------------------------------------------------------------

BB = "docker.io/library/busybox"


@pytest.mark.parametrize(
    ("rule", "image", "signed", "expected"),
    [
        # matchRepoDigestOrExact: a tag must match exactly; a digest needs the same repository.
        (MatchRepoDigestOrExact(), "busybox", f"{BB}:latest", True),
        (MatchRepoDigestOrExact(), "busybox", "busybox:latest", True),
        (MatchRepoDigestOrExact(), "busybox", "busybox", False),
        (MatchRepoDigestOrExact(), "busybox", f"{BB}:1", False),
        (MatchRepoDigestOrExact(), "busybox:1", f"{BB}:1", True),
        (MatchRepoDigestOrExact(), "busybox", "docker.io/library/alpine:latest", False),
        (MatchRepoDigestOrExact(), f"busybox@sha256:{HEX}", f"{BB}:anything", True),
        (MatchRepoDigestOrExact(), f"busybox@sha256:{HEX}", f"{BB}@sha256:{HEX2}", True),
        (MatchRepoDigestOrExact(), f"busybox@sha256:{HEX}", BB, False),
        (MatchRepoDigestOrExact(), f"busybox@sha256:{HEX}", "docker.io/library/alpine:1", False),
        (MatchRepoDigestOrExact(), f"busybox:1@sha256:{HEX}", f"{BB}:1@sha256:{HEX}", True),
        (MatchRepoDigestOrExact(), f"busybox:1@sha256:{HEX}", f"{BB}:1", False),
        (MatchRepoDigestOrExact(), "busybox", "not a reference", False),
        (MatchRepoDigestOrExact(), "busybox", "", False),
        # matchExact: both must carry a tag or digest and be equal.
        (MatchExact(), "busybox", f"{BB}:latest", True),
        (MatchExact(), "busybox", BB, False),
        (MatchExact(), f"busybox@sha256:{HEX}", f"{BB}:latest", False),
        (MatchExact(), f"busybox@sha256:{HEX}", f"busybox@sha256:{HEX}", True),
        (MatchExact(), "busybox:1", f"{BB}:2", False),
        (MatchExact(), "busybox:1", "Bad", False),
        # matchRepository: the repository only, a name-only claim included.
        (MatchRepository(), "busybox:1", f"{BB}:2", True),
        (MatchRepository(), "busybox:1", "busybox", True),
        (MatchRepository(), f"busybox@sha256:{HEX}", BB, True),
        (MatchRepository(), "busybox:1", "docker.io/library/busybox2:1", False),
        (MatchRepository(), "a.com/busybox:1", f"{BB}:1", False),
        # exactReference / exactRepository: the image's own name does not matter.
        (ExactReference("busybox:1"), "a.com/mirror:9", f"{BB}:1", True),
        (ExactReference("busybox:1"), "a.com/mirror:9", f"{BB}:2", False),
        (ExactReference("busybox:1"), "a.com/mirror:9", BB, False),
        (ExactReference("busybox:1"), "busybox:1", "a.com/mirror:1", False),
        (ExactReference(f"busybox@sha256:{HEX}"), "x.com/y:1", f"{BB}@sha256:{HEX}", True),
        (ExactRepository("busybox"), "a.com/mirror:9", f"{BB}:7", True),
        (ExactRepository("busybox"), "a.com/mirror:9", BB, True),
        (ExactRepository("busybox:1"), "a.com/mirror:9", f"{BB}:7", True),
        (ExactRepository("busybox"), "busybox:1", "docker.io/library/alpine:1", False),
        (ExactRepository("busybox"), "busybox:1", "Not Valid", False),
    ],
)
def test_identity_matching(rule: IdentityRule, image: str, signed: str, expected: bool) -> None:
    assert rule.matches(ref(image), signed) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prefix", "signed_prefix", "image", "signed", "expected"),
    [
        ("mirror.com:5000/vendor", "vendor.com", "mirror.com:5000/vendor/app/x:1", "vendor.com/app/x:1", True),
        ("mirror.com:5000/vendor", "vendor.com", "mirror.com:5000/vendor/app/x:1", "vendor.com/app/x:2", False),
        ("mirror.com:5000/vendor", "vendor.com", "mirror.com:5000/vendor/app/x:1", "mirror.com:5000/vendor/app/x:1", False),
        # not under the prefix: no remapping, plain matchRepoDigestOrExact
        ("mirror.com:5000/vendor", "vendor.com", "mirror.com:5000/other/x:1", "mirror.com:5000/other/x:1", True),
        ("mirror.com:5000/vendor", "vendor.com", "mirror.com:5000/vendorx/x:1", "vendor.comx/x:1", False),
        ("mirror.com:5000/vendor", "vendor.com", "mirror.com:5000/vendorx/x:1", "mirror.com:5000/vendorx/x:1", True),
        ("mirror.com", "vendor.com", "mirror.com:5000/x:1", "vendor.com:5000/x:1", False),  # a port is part of the host
        ("mirror.com", "vendor.com", "mirror.com:5000/x:1", "mirror.com:5000/x:1", True),
        # the whole repository as prefix
        ("m.com/a/x", "v.com/b/y", "m.com/a/x:1", "v.com/b/y:1", True),
        ("m.com/a/x", "v.com/b/y", f"m.com/a/x@sha256:{HEX}", "v.com/b/y:7", True),
        ("m.com/a/x", "v.com/b/y", f"m.com/a/x@sha256:{HEX}", "m.com/a/x:7", False),
        # remapped into Docker Hub: only the fully expanded form is accepted
        ("m.com/hub", "docker.io/library", "m.com/hub/busybox:1", "busybox:1", True),
        ("m.com/hub", "docker.io", "m.com/hub/busybox:1", "busybox:1", False),  # docker.io/busybox is not canonical
        ("m.com/hub", "docker.io", "m.com/hub/library/busybox:1", "busybox:1", True),
        # remapped from Docker Hub
        ("docker.io/library", "v.com/lib", "busybox", "v.com/lib/busybox:latest", True),
        ("docker.io", "v.com", "busybox:2", "v.com/library/busybox:2", True),
        ("docker.io", "v.com", "busybox:2", "busybox:2", False),
        # a result that is not a valid reference never matches
        ("m.com", "UPPER.com/X", "m.com/x:1", "UPPER.com/X/x:1", False),
    ],
)
def test_remap_identity(prefix: str, signed_prefix: str, image: str, signed: str, expected: bool) -> None:
    assert RemapIdentity(prefix, signed_prefix).matches(ref(image), signed) is expected  # type: ignore[arg-type]


def test_remap_returns_unchanged_outside_prefix() -> None:
    named = parse_normalized("a.com/x:1")
    assert RemapIdentity("b.com", "c.com").remap(named) is named
    assert str(RemapIdentity("a.com", "c.com:1").remap(named)) == "c.com:1/x:1"


# --- editing and listing -------------------------------------------------------------------------


def test_set_scope_keeps_everything_else() -> None:
    original = json.dumps({
        "default": [REJECT],
        "transports": {
            "atomic": {"x": [{"type": "insecureAcceptAnything"}]},
            "docker": {"a.com": [ACCEPT]},
        },
    }).encode()
    out = set_scope(original, "docker", "b.com:5000/ns", [GPG], "/etc/p.json")
    new = json.loads(out)
    assert new["transports"]["atomic"] == {"x": [ACCEPT]} and new["transports"]["docker"]["a.com"] == [ACCEPT]
    assert new["transports"]["docker"]["b.com:5000/ns"] == [GPG] and new["default"] == [REJECT]
    assert out.endswith(b"}\n")
    replaced = json.loads(set_scope(out, "docker", "a.com", [REJECT]))
    assert replaced["transports"]["docker"]["a.com"] == [REJECT]
    assert list(replaced["transports"]["docker"]) == ["a.com", "b.com:5000/ns"]  # order kept


def test_set_scope_without_file_starts_from_reject() -> None:
    new = json.loads(set_scope(None, "oci", "/srv", [ACCEPT]))
    assert new == {"default": [REJECT], "transports": {"oci": {"/srv": [ACCEPT]}}}
    assert json.loads(set_default(None, [ACCEPT])) == {"default": [ACCEPT]}
    assert json.loads(set_scope(None, "docker-archive", "", [ACCEPT]))["transports"] == {"docker-archive": {"": [ACCEPT]}}


def test_set_default_keeps_transports() -> None:
    original = doc([REJECT], docker={"a.com": [ACCEPT]}, weird={"x": [REJECT]})
    new = json.loads(set_default(original, [ACCEPT]))
    assert new == {"default": [ACCEPT], "transports": {"docker": {"a.com": [ACCEPT]}, "weird": {"x": [REJECT]}}}


def test_set_refuses_invalid_input_and_result() -> None:
    with pytest.raises(PolicyError, match=r"^/p.json: default: the list"):
        set_default(b'{"default": []}', [ACCEPT], "/p.json")
    with pytest.raises(PolicyError, match=r'transports.docker\["a.com"\]\[0\].keyType: unknown key type "Y"'):
        set_scope(doc(), "docker", "a.com", [{**GPG, "keyType": "Y"}])
    with pytest.raises(PolicyError, match="default: the list of requirements must not be empty"):
        set_default(doc(), [])


@pytest.mark.parametrize(
    ("transport", "scope"),
    [
        ("docker", "busybox"), ("docker", "docker.io/busybox:1"), ("docker", "library/busybox"), ("docker", "ns/repo"), ("docker", "a.com/UP"),
        ("docker", "*.a.com:5000"), ("docker", "*"), ("docker", "a*.com"), ("docker", "a.com/x:"),
        ("docker", f"a.com/x@sha256:{HEX[:10]}"),
        ("oci", "rel"), ("oci", "/"), ("oci-archive", "/a/../b"), ("docker-archive", "/x"), ("nosuch", ""),
        ("nosuch", "x"),
    ],
)
def test_validate_scope_refusals(transport: str, scope: str) -> None:
    with pytest.raises(PolicyError, match=f"invalid scope .* for {transport}"):
        validate_scope(transport, scope)
    with pytest.raises(PolicyError):
        set_scope(doc(), transport, scope, [ACCEPT])


@pytest.mark.parametrize(
    ("transport", "scope"),
    [
        ("docker", "*.example.com"), ("docker", "example.com"), ("docker", "example.com:5000"), ("docker", "localhost"),
        ("docker", "docker.io/library/busybox"), ("docker", "docker.io/library"), ("docker", "docker.io"),
        ("docker", "a.com:5000/ns/x:1"), ("docker", f"a.com/x@sha256:{HEX}"), ("docker", ""),
        ("oci", "/srv/x"), ("oci-archive", ""), ("docker-archive", ""),
    ],
)
def test_validate_scope_accepts(transport: str, scope: str) -> None:
    validate_scope(transport, scope)


def test_describe_rows() -> None:
    policy = parse_policy(doc(
        [REJECT],
        docker={
            "a.com": [
                {"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/a", "/b"],
                 "signedIdentity": {"type": "remapIdentity", "prefix": "a.com", "signedPrefix": "b.com"}},
                {"type": "sigstoreSigned", "keyData": "QUJD", "signedIdentity": {"type": "matchRepository"}},
            ],
            "b.com": [{"type": "sigstoreSigned", "keyDatas": ["QQ==", "Qg=="], "rekorPublicKeyPath": "/r"}],
            "c.com": [{"type": "signedBy", "keyType": "GPGKeys", "keyData": "QQ==",
                       "signedIdentity": {"type": "exactReference", "dockerReference": "x.com/y:1"}}],
            "d.com": [{"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "subjectEmail": "e"},
                       "signedIdentity": {"type": "exactRepository", "dockerRepository": "x.com/y"}}],
        },
        oci={"": [ACCEPT, {"type": "signedBaseLayer", "baseLayerIdentity": {"type": "matchExact"}}]},
    ), "p")
    assert describe(policy) == [
        PolicyRow("", "default", "reject", "", ""),
        PolicyRow("docker", "a.com", "signedBy", "keyPaths=/a,/b", "remapIdentity a.com -> b.com"),
        PolicyRow("docker", "a.com", "sigstoreSigned", "keyData=(3 bytes)", "matchRepository"),
        PolicyRow("docker", "b.com", "sigstoreSigned", "keyDatas=(1 bytes),(1 bytes) rekorPublicKeyPath=/r",
                  "matchRepoDigestOrExact"),
        PolicyRow("docker", "c.com", "signedBy", "keyData=(1 bytes)", "exactReference x.com/y:1"),
        PolicyRow("docker", "d.com", "sigstoreSigned", "pki", "exactRepository x.com/y"),
        PolicyRow("oci", "", "insecureAcceptAnything", "", ""),
        PolicyRow("oci", "", "signedBaseLayer", "", "matchExact"),
    ]


def test_describe_key_path_and_fulcio() -> None:
    policy = parse_policy(doc([GPG, {"type": "sigstoreSigned", "fulcio": FULCIO, "rekorPublicKeyDatas": ["QQ=="]}]), "p")
    rows = describe(policy)
    assert rows[0] == PolicyRow("", "default", "signedBy", "keyPath=/k.gpg", "matchRepoDigestOrExact")
    assert rows[1].keys == "fulcio rekorPublicKeyDatas=(1 bytes)"


def test_identity_to_json_round_trips() -> None:
    rules: list[IdentityRule] = [
        MatchExact(), MatchRepoDigestOrExact(), MatchRepository(), ExactReference("a.com/x:1"),
        ExactRepository("a.com/x"), RemapIdentity("a.com", "b.com"),
    ]
    for rule in rules:
        parsed = req({**GPG, "signedIdentity": rule.to_json()})
        assert isinstance(parsed, SignedBy) and parsed.signed_identity == rule


def test_fixture_like_real_policy(tmp_path: Path) -> None:
    """A policy as Debian ships it and as podman's `image trust set` writes it."""
    f = tmp_path / "policy.json"
    f.write_text(json.dumps({
        "default": [{"type": "insecureAcceptAnything"}],
        "transports": {
            "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]},
            "docker": {"registry.example": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k",
                                             "signedIdentity": {"type": "matchRepository"}}]},
        },
    }, indent=2))
    policy = load_policy(str(f))
    assert os.fspath(f) == policy.path
    name, reqs = policy.requirements_for("docker", ref("registry.example/app:1"))  # type: ignore[arg-type]
    assert name == 'transports.docker["registry.example"]' and reqs[0].needs_unsupported is False


# --- every field's own key path, and what the records hold --------------------------------------


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ({**GPG, "signedIdentity": {"type": "exactRepository", "dockerRepository": 5}},
         "default[0].signedIdentity.dockerRepository: must be a string, not 5"),
        ({**GPG, "signedIdentity": {"type": "remapIdentity", "prefix": 5, "signedPrefix": "b.com"}},
         "default[0].signedIdentity.prefix: must be a string"),
        ({**GPG, "signedIdentity": {"type": "remapIdentity", "prefix": "a.com", "signedPrefix": []}},
         "default[0].signedIdentity.signedPrefix: must be a string"),
        ({"type": "signedBy", "keyType": "GPGKeys"}, "default[0]: exactly one of keyPath"),
        ({"type": "signedBy", "keyType": "GPGKeys", "keyData": 1}, "default[0].keyData: must be a string"),
        ({"type": "sigstoreSigned"}, "default[0]: exactly one of keyPath"),
        ({**COSIGN, "keyPath": 1}, "default[0].keyPath: must be a string"),
        ({"type": "sigstoreSigned", "keyData": 1}, "default[0].keyData: must be a string"),
        ({**COSIGN, "signedIdentity": {"type": "x"}}, 'default[0].signedIdentity.type: unknown signedIdentity type "x"'),
        ({**COSIGN, "rekorPublicKeyPath": "/a", "rekorPublicKeyData": "QQ=="}, "default[0]: at most one of rekorPublicKeyPath"),
        ({"type": "sigstoreSigned", "fulcio": FULCIO}, "default[0]: fulcio needs one of"),
        ({"type": "sigstoreSigned", "fulcio": {**FULCIO, "oidcIssuer": 1}, "rekorPublicKeyPath": "/r"},
         "default[0].fulcio.oidcIssuer: must be a string"),
        ({"type": "sigstoreSigned", "fulcio": {**FULCIO, "subjectEmail": 1}, "rekorPublicKeyPath": "/r"},
         "default[0].fulcio.subjectEmail: must be a string"),
        ({"type": "sigstoreSigned", "fulcio": {**FULCIO, "caPath": 1}, "rekorPublicKeyPath": "/r"},
         "default[0].fulcio.caPath: must be a string"),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "subjectEmail": "e", "x": 1}}, 'default[0].pki: unknown key "x"'),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "caIntermediatesPath": "/i", "caIntermediatesData": "QQ==",
                                            "subjectEmail": "e"}}, "default[0].pki: caIntermediatesPath and"),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "subjectHostname": 1}}, "default[0].pki.subjectHostname: must be"),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": 1, "subjectEmail": "e"}}, "default[0].pki.caRootsPath: must be"),
        ({"type": "sigstoreSigned", "pki": {"caRootsData": "%", "subjectEmail": "e"}}, "default[0].pki.caRootsData: invalid base64"),
        ({"type": "sigstoreSigned", "fulcio": {**FULCIO, "caPath": None}, "rekorPublicKeyPath": "/r"},
         "default[0].fulcio.caPath: must be a string, not null"),
        ({"type": "signedBaseLayer", "baseLayerIdentity": {"type": "matchExact"}, "x": 1}, 'default[0]: unknown key "x"'),
        ({"type": "signedBaseLayer", "baseLayerIdentity": {"type": "y"}}, 'default[0].baseLayerIdentity.type: unknown signedIdentity'),
        ({"type": "sigstoreSigned", "fulcio": {"caData": "%", "oidcIssuer": "i", "subjectEmail": "e"}, "rekorPublicKeyPath": "/r"},
         "default[0].fulcio.caData: invalid base64"),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "subjectEmail": 1}}, "default[0].pki.subjectEmail: must be"),
        ({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r"}},
         "default[0].pki: at least one of subjectEmail, subjectHostname must be set"),
        ({**COSIGN, "rekorPublicKeyPath": "/a", "rekorPublicKeyDatas": ["QQ=="]},
         "default[0]: at most one of rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData, rekorPublicKeyDatas may"),
    ],
)
def test_field_refusals_name_their_key(requirement: object, expected: str) -> None:
    assert refused(doc([requirement])).startswith(expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (f"{'{'}\"default\": [{'{'}\"type\": \"signedBy\", \"keyType\": \"GPGKeys\", \"keyPath\": \"/k\", \"n\": Infinity}}]}}",
         "Infinity is not JSON"),
        ('{"default": [{"type": "reject"}], "x": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]}', 'unknown key "x"'),
        ('{"default": "' + "r" * 60 + '"}', 'default: must be a list, not "' + "r" * 39),
    ],
)
def test_messages(data: str, expected: str) -> None:
    message = refused(data)
    assert expected in message
    if "must be a list" in message:
        assert message == 'default: must be a list, not "' + "r" * 39  # a long value is cut at 40 characters


def test_messages_of_bad_references() -> None:
    with pytest.raises(ValueError, match="invalid digest 'sha256:abc"):
        parse_normalized(f"a.com/x@sha256:abc{'d' * 30}")
    with pytest.raises(ValueError, match="64-hex-digit image ID"):
        parse_normalized(HEX)


def test_records_hold_what_was_parsed() -> None:
    cosign = req({"type": "sigstoreSigned", "keyPath": "/k.pub", "signedIdentity": {"type": "matchExact"}})
    assert isinstance(cosign, SigstoreSigned)
    assert (cosign.key_path, cosign.key_paths, cosign.key_data, cosign.key_datas, cosign.fulcio, cosign.pki, cosign.rekor) == (
        "/k.pub", None, None, None, None, None, None)
    assert cosign.signed_identity == MatchExact() and not cosign.needs_unsupported
    assert cosign.keys() == "keyPath=/k.pub" and cosign.identity() == "matchExact"
    gpg = req({"type": "signedBy", "keyType": "GPGKeys", "keyPaths": ["/a"]})
    assert isinstance(gpg, SignedBy)
    assert (gpg.key_type, gpg.key_path, gpg.key_paths, gpg.key_data) == ("GPGKeys", None, ("/a",), None)
    assert isinstance(gpg.signed_identity, MatchRepoDigestOrExact)
    fulcio = req({"type": "sigstoreSigned", "fulcio": {"caData": "QQ==", "oidcIssuer": "i", "subjectEmail": "e"},
                  "rekorPublicKeyPath": "/r"})
    assert isinstance(fulcio, SigstoreSigned)
    assert fulcio.fulcio == (("caData", b"A"), ("oidcIssuer", "i"), ("subjectEmail", "e"))
    assert fulcio.keys() == "fulcio rekorPublicKeyPath=/r"
    pki = req({"type": "sigstoreSigned", "pki": {"caRootsPath": "/r", "caIntermediatesData": "QQ==", "subjectHostname": "h"}})
    assert isinstance(pki, SigstoreSigned)
    assert pki.pki == (("caRootsPath", "/r"), ("caIntermediatesData", b"A"), ("subjectHostname", "h"))
    assert pki.keys() == "pki"
    both = req({"type": "sigstoreSigned", "keyPaths": ["/a", "/b"], "rekorPublicKeyData": "QQ=="})
    assert isinstance(both, SigstoreSigned) and both.keys() == "keyPaths=/a,/b rekorPublicKeyData=(1 bytes)"
    row = describe(parse_policy(doc([GPG], docker={"a.com": [ACCEPT]}), "p"))[1]
    assert (row.transport, row.scope, row.type, row.keys, row.identity) == ("docker", "a.com", "insecureAcceptAnything", "", "")
    row = describe(parse_policy(doc([GPG]), "p"))[0]
    assert (row.transport, row.scope, row.type, row.keys, row.identity) == (
        "", "default", "signedBy", "keyPath=/k.gpg", "matchRepoDigestOrExact")


def test_name_only_image_matches_only_by_repository() -> None:
    from podrun.image.reference import DockerReference

    bare = DockerReference("docker.io", "library/busybox", None, None)
    assert not MatchRepoDigestOrExact().matches(bare, f"{BB}:latest")
    assert not MatchExact().matches(bare, BB)
    assert MatchRepository().matches(bare, f"{BB}:1")
    assert not RemapIdentity("docker.io", "docker.io").matches(bare, f"{BB}:latest")


def test_scope_edge_cases() -> None:
    assert parse_policy(doc(oci={"/Xdir/XX": [ACCEPT]}), "p").transports["oci"] == {"/Xdir/XX": (InsecureAcceptAnything(),)}
    validate_scope("docker", "*.a")
    with pytest.raises(PolicyError, match="unknown transport"):
        validate_scope("nosuch", "")
    with pytest.raises(PolicyError, match="not \\*.domain, host"):
        validate_scope("docker", "busybox")
    with pytest.raises(PolicyError, match='no scopes but the default ""'):
        validate_scope("docker-archive", "/x")
    with pytest.raises(UsageError, match="invalid image reference 'a.com/UP:t'"):
        from podrun.image.reference import DockerReference

        docker_scopes(DockerReference("a.com", "UP", "t", None))


def test_unreadable_and_unresolvable_messages(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="No such file or directory"):
        load_policy(str(tmp_path / "nope.json"))
    with pytest.raises(UsageError, match="No such file or directory"):
        resolve_path(str(tmp_path / "no" / "such"))


def test_edit_output_format_and_paths() -> None:
    out = set_scope(None, "oci", "/ключ", [ACCEPT])
    assert "/ключ".encode() in out and b'\n    "default": [\n' in out
    assert set_default(None, [ACCEPT]) == b'{\n    "default": [\n        {\n            "type": "insecureAcceptAnything"\n        }\n    ]\n}\n'
    with pytest.raises(PolicyError, match=r"^policy.json: transports.docker\[\"a.com\"\]\[0\].keyType"):
        set_scope(doc(), "docker", "a.com", [{**GPG, "keyType": "Y"}])
    with pytest.raises(PolicyError, match=r"^/x/p.json: transports.docker\[\"a.com\"\]\[0\].keyType"):
        set_scope(doc(), "docker", "a.com", [{**GPG, "keyType": "Y"}], "/x/p.json")
    with pytest.raises(PolicyError, match=r"^policy.json: default: the list"):
        set_default(None, [])
    with pytest.raises(PolicyError, match=r"^/y.json: default: the list"):
        set_default(doc(), [], "/y.json")
