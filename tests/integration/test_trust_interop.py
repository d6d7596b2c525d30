"""Signature policy interop (issue 15, "Real tools in the tests"): for each row of MATRIX, podman
(the reference, containers/image) and podrun fetch the same image from a real registry under the
same containers-policy.json(5) and registries.d(5); podrun must decide as podman does.

Each row: a name; how its repository was pushed and signed (SETUPS, run once per module, each in
a repository of its own); the policy; the registries.d (LOOKASIDE: a file:// lookaside holding the
signatures; EMPTY: none); the reference fetched; the verdict podman gives (written down, so a
change in podman's behaviour is noticed); and, only where podrun deliberately differs from this
podman, podrun's verdict and why.  Placeholders: ``$HOST`` (the registry), ``$A``/``$B`` (the
two images' manifest digests), ``$KEY_name`` (a public key file).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.fixtures import images as img
from tests.fixtures import trust_matrix as tm
from tests.fixtures.registry import RunningRegistry, registry
from tests.fixtures.trust_matrix import ALLOW, REFUSE, Key, Outcome, Verdict

__all__ = ["registry"]  # a fixture, imported for pytest to find

LOOKASIDE, EMPTY = "lookaside", "empty"
Requirement = dict[str, object]
# the instance of a manifest list that podman and podrun pick on this machine
HOST_ARCH = {"aarch64": "arm64"}.get(platform.machine(), "amd64")
REJECT: Requirement = {"type": "reject"}
ACCEPT: Requirement = {"type": "insecureAcceptAnything"}


def signed_by(*keys: str, identity: dict[str, str] | None = None) -> Requirement:
    """A ``signedBy`` requirement trusting *keys* (one: ``keyPath``; several: ``keyPaths``)."""
    req: Requirement = {"type": "signedBy", "keyType": "GPGKeys"}
    paths = [f"$KEY_{k}" for k in keys or ("trusted",)]
    if len(paths) == 1:
        req["keyPath"] = paths[0]
    else:
        req["keyPaths"] = paths
    if identity is not None:
        req["signedIdentity"] = identity
    return req


def only(*reqs: Requirement) -> dict[str, object]:
    """Reject by default; the registry's scope (``$HOST``) requires *reqs*."""
    return {"default": [REJECT], "transports": {"docker": {"$HOST": list(reqs)}}}


def scopes(default: Requirement, docker: dict[str, list[Requirement]]) -> dict[str, object]:
    return {"default": [default], "transports": {"docker": docker}}


@dataclass(frozen=True)
class Case:
    name: str
    setup: str
    policy: dict[str, object]
    registries_d: str
    reference: str
    podman: Verdict
    podman_says: str = ""  # for a refusal: a part of podman's message (" || " between alternatives)
    podrun: Verdict | None = None  # only where podrun deliberately differs from this podman
    why_podrun_differs: str = ""


NEWER_SUBKEYS = ("containers/image accepts signatures by a signing subkey of a trusted key since "
                 "containers/image#2905 (2025); Debian 12's podman 4.3.1 predates it; issue 15 "
                 "follows the newer rule")
MATCH_REPOSITORY = {"type": "matchRepository"}
# what podman says for each kind of refusal (gpgme's error codes for the key's state)
NO_SIGNATURE = "A signature was required, but no signature exists"
IDENTITY = "Signature for identity"
DIGEST = "does not match"
REJECTED = "is rejected by policy"
NO_PUBKEY = "Status:gpgme.Error{err:0x9}"  # GPG_ERR_NO_PUBKEY
BAD_SIGNATURE = "Status:gpgme.Error{err:0x7000008}"  # GPG_ERR_BAD_SIGNATURE
REVOKED = "Status:gpgme.Error{err:0x700005e}"  # GPG_ERR_CERT_REVOKED
EXPIRED = "Status:gpgme.Error{err:0x7000099}"  # GPG_ERR_KEY_EXPIRED
KEY_NOT_ACCEPTED = "is not accepted"  # a signature by a key the policy does not list
MATRIX = [
    Case("signed-tag", "signed", only(signed_by()), LOOKASIDE, "$HOST/signed:v1", ALLOW),
    Case("signed-digest", "signed", only(signed_by()), LOOKASIDE, "$HOST/signed@$A", ALLOW),
    Case("signed-digest-matchExact", "signed", only(signed_by(identity={"type": "matchExact"})), LOOKASIDE,
         "$HOST/signed@$A", REFUSE, IDENTITY),
    Case("retagged-matchRepoDigestOrExact", "retagged", only(signed_by()), LOOKASIDE, "$HOST/retagged:b", REFUSE, IDENTITY),
    Case("retagged-matchRepository", "retagged", only(signed_by(identity=MATCH_REPOSITORY)), LOOKASIDE,
         "$HOST/retagged:b", ALLOW),
    Case("retagged-exactReference", "retagged",
         only(signed_by(identity={"type": "exactReference", "dockerReference": "$HOST/retagged:a"})),
         LOOKASIDE, "$HOST/retagged:b", ALLOW),
    Case("unsigned", "unsigned", only(signed_by()), LOOKASIDE, "$HOST/unsigned:v1", REFUSE, NO_SIGNATURE),
    Case("unsigned-insecureAcceptAnything", "unsigned", only(ACCEPT), LOOKASIDE, "$HOST/unsigned:v1", ALLOW),
    Case("signature-copied-to-other-repo", "copied", only(signed_by()), LOOKASIDE, "$HOST/copied-to:v1", REFUSE, IDENTITY),
    Case("signature-copied-matchRepository", "copied", only(signed_by(identity=MATCH_REPOSITORY)), LOOKASIDE,
         "$HOST/copied-to:v1", REFUSE, IDENTITY),
    Case("signature-copied-exactRepository", "copied",
         only(signed_by(identity={"type": "exactRepository", "dockerRepository": "$HOST/copied-from"})), LOOKASIDE,
         "$HOST/copied-to:v1", ALLOW),
    Case("digest-swapped", "swapped", only(signed_by()), LOOKASIDE, "$HOST/swapped:v1", REFUSE, DIGEST),
    Case("untrusted-key", "stranger", only(signed_by()), LOOKASIDE, "$HOST/stranger:v1", REFUSE, NO_PUBKEY),
    # the flipped byte lands in the signature or, when gpg compressed the message, in the
    # compressed stream (then gpg finds no signature): both are refusals of a corrupt signature
    Case("corrupt-signature", "corrupt", only(signed_by()), LOOKASIDE, "$HOST/corrupt:v1", REFUSE,
         f"{BAD_SIGNATURE} || Unexpected GPG signature count 0"),
    Case("gap-in-signature-N", "gap", only(signed_by()), LOOKASIDE, "$HOST/gap:v1", REFUSE, NO_SIGNATURE),
    Case("extra-invalid-signature", "extra", only(signed_by()), LOOKASIDE, "$HOST/extra:v1", ALLOW),
    Case("every-requirement-must-allow", "signed", only(signed_by(), signed_by("stranger")), LOOKASIDE,
         "$HOST/signed:v1", REFUSE, NO_PUBKEY),
    Case("every-requirement-allows", "extra", only(signed_by(), signed_by("stranger")), LOOKASIDE,
         "$HOST/extra:v1", ALLOW),
    Case("keyPaths-one-matches", "stranger", only(signed_by("trusted", "stranger")), LOOKASIDE,
         "$HOST/stranger:v1", ALLOW),
    Case("remapIdentity", "remapped",
         only(signed_by(identity={"type": "remapIdentity", "prefix": "$HOST", "signedPrefix": "mirror.podrun.test"})),
         LOOKASIDE, "$HOST/remapped:v1", ALLOW),
    Case("remapped-without-remapIdentity", "remapped", only(signed_by()), LOOKASIDE, "$HOST/remapped:v1", REFUSE, IDENTITY),
    Case("list-instances-signed", "list-instances", only(signed_by()), LOOKASIDE, "$HOST/list-instances:v1", ALLOW),
    Case("list-only-signed", "list-only", only(signed_by()), LOOKASIDE, "$HOST/list-only:v1", REFUSE, NO_SIGNATURE),
    Case("list-signature-at-instance-path", "list-confused", only(signed_by()), LOOKASIDE,
         "$HOST/list-confused:v1", REFUSE, DIGEST),
    Case("list-and-instances-signed-by-skopeo", "list-all", only(signed_by()), LOOKASIDE, "$HOST/list-all:v1", ALLOW),
    Case("default-reject", "signed", {"default": [REJECT]}, LOOKASIDE, "$HOST/signed:v1", REFUSE, REJECTED),
    Case("docker-reject-beats-default-accept", "unsigned", scopes(ACCEPT, {"": [REJECT]}), LOOKASIDE,
         "$HOST/unsigned:v1", REFUSE, REJECTED),
    Case("repo-scope-beats-docker-reject", "unsigned", scopes(REJECT, {"": [REJECT], "$HOST/unsigned": [ACCEPT]}),
         LOOKASIDE, "$HOST/unsigned:v1", ALLOW),
    Case("tag-scope-beats-repo-scope", "unsigned",
         scopes(ACCEPT, {"$HOST/unsigned": [ACCEPT], "$HOST/unsigned:v1": [REJECT]}), LOOKASIDE,
         "$HOST/unsigned:v1", REFUSE, REJECTED),
    Case("subkey-signature", "subkey", only(signed_by("subkey")), LOOKASIDE, "$HOST/subkey:v1", REFUSE, KEY_NOT_ACCEPTED,
         podrun=ALLOW, why_podrun_differs=NEWER_SUBKEYS),
    Case("revoked-subkey", "subkey", only(signed_by("subkey_revoked")), LOOKASIDE, "$HOST/subkey:v1", REFUSE, REVOKED),
    Case("expired-key", "expired", only(signed_by("expired")), LOOKASIDE, "$HOST/expired:v1", REFUSE, EXPIRED),
    Case("signed-but-no-lookaside-configured", "signed", only(signed_by()), EMPTY, "$HOST/signed:v1", REFUSE, NO_SIGNATURE),
]


@dataclass
class World:
    """The module's registry, keys, images and lookaside, and podman's verdicts (cached)."""

    registry: RunningRegistry
    work: Path
    keys: dict[str, Key]
    layouts: dict[str, Path]
    digests: dict[str, str]
    lookaside: Path
    registries: dict[str, Path]
    served: dict[str, str] = field(default_factory=dict)  # repo -> the manifest podrun should store
    podman_outcomes: dict[str, Outcome] = field(default_factory=dict)

    @property
    def values(self) -> dict[str, str]:
        return {"HOST": self.registry.host, "A": self.digests["a"], "B": self.digests["b"],
                **{f"KEY_{name}": str(key.public) for name, key in self.keys.items()}}

    def push(self, image: str, repo_tag: str, *, sign_by: str | None = None, all_images: bool = False) -> None:
        """Push layout *image* (``a``, ``b`` or ``list``) as ``HOST/REPO:TAG``, signed by key *sign_by*."""
        key = self.keys[sign_by] if sign_by else None
        tm.skopeo_push(self.layouts[image], "latest", f"{self.registry.host}/{repo_tag}", self.registries[LOOKASIDE],
                       sign_by=key, all_images=all_images)
        self.served[repo_tag.split(":")[0]] = self.digests[HOST_ARCH if image == "list" else image]

    def sign(self, image: str, identity: str, key: str, repo: str, digest: str, n: int = 1) -> Path:
        """A signature by *key* of *image*'s manifest for *identity*, stored as ``signature-N`` of
        ``REPO@DIGEST`` in the lookaside."""
        layout = self.layouts["list" if image in ("amd64", "arm64") else image]
        manifest = tm.blob(layout, self.digests[image])
        out = tm.signature_dir(self.lookaside, repo, digest) / f"signature-{n}"
        return tm.standalone_sign(manifest, identity, self.keys[key], out)

    def sig_dir(self, repo: str, image: str = "a") -> Path:
        return tm.signature_dir(self.lookaside, repo, self.digests[image])

    def policy_file(self, case: Case) -> Path:
        path = self.work / "policies" / f"{case.name}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(tm.expand(case.policy, self.values))
        return path

    def podman(self, case: Case) -> Outcome:
        if case.name not in self.podman_outcomes:
            self.podman_outcomes[case.name] = tm.podman_pull(
                self.work, self.policy_file(case), self.registries[case.registries_d],
                tm.expand(case.reference, self.values))
        return self.podman_outcomes[case.name]


# -- how each repository is pushed and signed (run once per module) --------------------------------

SETUPS: dict[str, Callable[[World], None]] = {}


def setup(fn: Callable[[World], None]) -> Callable[[World], None]:
    SETUPS[fn.__name__.removeprefix("push_").replace("_", "-")] = fn
    return fn


@setup
def push_signed(w: World) -> None:
    """Image A, signed by the trusted key at push (skopeo copy --sign-by)."""
    w.push("a", "signed:v1", sign_by="trusted")


@setup
def push_retagged(w: World) -> None:
    """Image A pushed as :a, signed for :a; then pushed again as :b, unsigned (same digest, so
    :b's lookaside directory is :a's)."""
    w.push("a", "retagged:a", sign_by="trusted")
    w.push("a", "retagged:b")


@setup
def push_unsigned(w: World) -> None:
    w.push("a", "unsigned:v1")


@setup
def push_copied(w: World) -> None:
    """copied-from:v1 signed; copied-to:v1 (same image) unsigned, with copied-from's signature
    copied into copied-to's lookaside directory."""
    w.push("a", "copied-from:v1", sign_by="trusted")
    w.push("a", "copied-to:v1")
    w.sig_dir("copied-to").mkdir(parents=True)
    (w.sig_dir("copied-to") / "signature-1").write_bytes((w.sig_dir("copied-from") / "signature-1").read_bytes())


@setup
def push_swapped(w: World) -> None:
    """Image B pushed unsigned; a signature of image A for the same name placed at B's digest."""
    w.push("b", "swapped:v1")
    w.sign("a", f"{w.registry.host}/swapped:v1", "trusted", "swapped", w.digests["b"])


@setup
def push_stranger(w: World) -> None:
    w.push("a", "stranger:v1", sign_by="stranger")


@setup
def push_corrupt(w: World) -> None:
    """Signed, then one byte in the middle of signature-1 flipped."""
    w.push("a", "corrupt:v1", sign_by="trusted")
    sig = w.sig_dir("corrupt") / "signature-1"
    data = bytearray(sig.read_bytes())
    data[len(data) // 2] ^= 0xFF
    sig.write_bytes(bytes(data))


@setup
def push_gap(w: World) -> None:
    """Signed, then signature-1 renamed signature-2: the lookup stops at the first missing N."""
    w.push("a", "gap:v1", sign_by="trusted")
    (w.sig_dir("gap") / "signature-1").rename(w.sig_dir("gap") / "signature-2")


@setup
def push_extra(w: World) -> None:
    """signature-1 by the stranger (at push), signature-2 by the trusted key."""
    w.push("a", "extra:v1", sign_by="stranger")
    w.sign("a", f"{w.registry.host}/extra:v1", "trusted", "extra", w.digests["a"], n=2)


@setup
def push_remapped(w: World) -> None:
    """Pushed unsigned; signed (standalone) for mirror.podrun.test/remapped:v1."""
    w.push("a", "remapped:v1")
    w.sign("a", "mirror.podrun.test/remapped:v1", "trusted", "remapped", w.digests["a"])


@setup
def push_list_instances(w: World) -> None:
    """The two-platform index pushed unsigned (--all); each instance signed for the list's tag."""
    w.push("list", "list-instances:v1", all_images=True)
    for arch in ("amd64", "arm64"):
        w.sign(arch, f"{w.registry.host}/list-instances:v1", "trusted", "list-instances", w.digests[arch])


@setup
def push_list_only(w: World) -> None:
    """The index pushed unsigned; only the index itself signed for the tag."""
    w.push("list", "list-only:v1", all_images=True)
    w.sign("list", f"{w.registry.host}/list-only:v1", "trusted", "list-only", w.digests["list"])


@setup
def push_list_confused(w: World) -> None:
    """The index pushed unsigned; a signature of the index's digest stored at each instance's path."""
    w.push("list", "list-confused:v1", all_images=True)
    for arch in ("amd64", "arm64"):
        w.sign("list", f"{w.registry.host}/list-confused:v1", "trusted", "list-confused", w.digests[arch])


@setup
def push_list_all(w: World) -> None:
    """skopeo copy --all --sign-by: skopeo signs the index and each instance."""
    w.push("list", "list-all:v1", sign_by="trusted", all_images=True)
    assert w.sig_dir("list-all", "list").exists() and w.sig_dir("list-all", "amd64").exists()


@setup
def push_subkey(w: World) -> None:
    """Signed by the signing subkey of a certify-only primary key (revoked after, in world())."""
    w.push("a", "subkey:v1", sign_by="subkey")


@setup
def push_expired(w: World) -> None:
    """Signed in 2020 (faked time) by a key that expired a day after its creation."""
    w.push("a", "expired:v1", sign_by="expired")


def _images(work: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Layouts ``a`` and ``b`` (busybox, different configs) and ``list`` (an amd64 and an arm64
    image); digests of a, b, amd64, arm64 and the list."""
    layer = img.tar_bytes(img.busybox_entries())
    a = img.write_oci_layout(work / "a", [layer])
    b = img.write_oci_layout(work / "b", [layer], config={"config": {"Cmd": ["/bin/true"], "Env": ["PATH=/bin"]}})
    digests = {"a": a.manifest_digest, "b": b.manifest_digest}
    for arch in ("amd64", "arm64"):
        built = img.write_oci_layout(work / "list", [layer], ref=None, architecture=arch, config={"architecture": arch})
        digests[arch] = built.manifest_digest
    digests["list"] = tm.add_index(work / "list", "latest", {k: digests[k] for k in ("amd64", "arm64")})
    return {"a": a.layout, "b": b.layout, "list": work / "list"}, digests


@pytest.fixture(scope="module")
def world(registry: RunningRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    work = tmp_path_factory.mktemp("trust")
    keyring = tm.Keyring(work)
    try:
        keys = {
            "trusted": keyring.generate("trusted", algo="rsa2048"),
            "stranger": keyring.generate("stranger"),
            "subkey": keyring.generate("subkey", signing_subkey=True),
            "expired": keyring.generate("expired", expire="1d", created="20200101T000000",
                                        signs="20200101T010000"),
        }
        lookaside = work / "sigs"
        registries = {LOOKASIDE: tm.write_registries_d(work / "registries.d", registry.host, lookaside),
                      EMPTY: tm.write_registries_d(work / "registries.d-empty", registry.host, None)}
        layouts, digests = _images(work)
        w = World(registry, work, keys, layouts, digests, lookaside, registries)
        for name in sorted({case.setup for case in MATRIX}):
            SETUPS[name](w)
        keys["subkey_revoked"] = keyring.revoke_subkeys(keys["subkey"], "subkey_revoked")
        yield w
    finally:
        keyring.close()


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: c.name)
def test_podman_decides_as_the_table_says(world: World, case: Case) -> None:
    """The reference: podman's verdict (and, for a refusal, its reason) is the row's."""
    got = world.podman(case)
    assert got.verdict == case.podman, f"podman: {got.verdict}: {got.detail}"
    assert any(part in got.detail for part in case.podman_says.split(" || ")), got.detail


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: c.name)
def test_podrun_decides_as_podman(world: World, case: Case, tmp_path: Path) -> None:
    """podrun fetch allows what podman allows (and stores exactly that manifest), refuses what it
    refuses (exit 250, one line, nothing stored); a row may name a deliberate difference."""
    reference = world.podman(case)
    assert reference.verdict != "error", f"podman failed: {reference.detail}"
    want = case.podrun or reference.verdict
    data = tmp_path / "data"
    got = tm.podrun_fetch(data, world.policy_file(case), world.registries[case.registries_d],
                          tm.expand(case.reference, world.values))
    assert got.verdict == want, (f"podrun: {got.verdict}: {got.detail} (podman: {reference.detail}) "
                                 f"{case.why_podrun_differs}")
    repo = case.reference.removeprefix("$HOST/").split(":")[0].split("@")[0]
    if want == ALLOW:
        assert got.detail == world.served[repo]
        assert tm.stored_image_ids(data) == [world.served[repo]]
    else:
        assert tm.stored_image_ids(data) == []


def test_matrix_covers_issue_15() -> None:
    """At least 16 rows, both verdicts, every refusal with podman's reason, and every repository a
    row names set up."""
    assert len(MATRIX) >= 16
    assert {c.podman for c in MATRIX} == {ALLOW, REFUSE}
    assert {c.setup for c in MATRIX} <= set(SETUPS)
    assert all(c.podman_says for c in MATRIX if c.podman == REFUSE)
    assert len({c.name for c in MATRIX}) == len(MATRIX)
