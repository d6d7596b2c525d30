"""The signature policy end to end through the real CLI (issue 15), for what the podman matrix
(test_trust_interop.py) does not cover: local transports and their scopes, ``--insecure-options
image``, a missing or invalid policy, ``podrun run`` (refused: no pod left; stored images are not
verified again), ``podrun image sign`` read back by ``fetch`` and ``podman pull``, sigstore
attachments with a public key, and a fetch killed while it waits for a signature.

Every command names its policy and registries.d (``--signature-policy``, ``--registries.d``);
the session's accept-anything policy (tests/conftest.py) is never what is tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from podrun.trust import cosign, sources
from tests.conftest import ROOT
from tests.fixtures import images as img
from tests.fixtures import trust_matrix as tm
from tests.fixtures.registry import RunningRegistry, free_port, registry
from tests.fixtures.trust.servers import serving, sig_layout

__all__ = ["registry"]  # a fixture, imported for pytest to find

REFUSED, USAGE = 250, 253
Policy = dict[str, object]
ACCEPT: Policy = {"default": [{"type": "insecureAcceptAnything"}]}
REJECT: Policy = {"default": [{"type": "reject"}]}


# -- helpers ---------------------------------------------------------------------------------------

@dataclass
class Env:
    """A data dir, a place for policies, and an empty registries.d (signatures nowhere)."""

    data: Path
    work: Path
    registries_d: Path

    def policy(self, doc: Policy | str, name: str = "policy.json") -> Path:
        path = self.work / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        return path

    def podrun(self, policy: Path, *args: str, registries_d: Path | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``podrun --dir DATA --signature-policy POLICY --registries.d DIR ARGS…``."""
        return subprocess.run(
            [sys.executable, "-m", "podrun", "--dir", str(self.data), "--signature-policy", str(policy),
             "--registries.d", str(registries_d or self.registries_d), *args],
            capture_output=True, text=True, timeout=tm.TIMEOUT, cwd=ROOT, env={**os.environ, **(env or {})})

    def ok(self, policy: Path, *args: str, registries_d: Path | None = None, env: dict[str, str] | None = None) -> str:
        res = self.podrun(policy, *args, registries_d=registries_d, env=env)
        assert res.returncode == 0, f"podrun {' '.join(args)}: exit {res.returncode}: {res.stderr}"
        return res.stdout.strip()

    def stored(self) -> list[str]:
        return tm.stored_image_ids(self.data)

    def trust(self, image: str) -> Any:
        """What admitted *image* (``image inspect --format json``'s ``trust``)."""
        return json.loads(self.ok(self.policy(ACCEPT, "inspect.json"), "image", "inspect", "--format", "json",
                                  image))["trust"]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    (tmp_path / "registries.d").mkdir()
    return Env(tmp_path / "data", tmp_path, tmp_path / "registries.d")


def refused(res: subprocess.CompletedProcess[str], *words: str, code: int = REFUSED) -> str:
    """One line on stderr (maybe a hint), the exit code, each of *words* in the line."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, f"exit {res.returncode}: {res.stderr}"
    assert lines and lines[0].startswith("podrun: ") and "Traceback" not in res.stderr, res.stderr
    assert all(line.startswith("hint: ") for line in lines[1:]), res.stderr
    for word in words:
        assert word in lines[0], f"{word!r} not in {lines[0]!r}"
    return res.stderr


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> img.BuiltImage:
    return img.busybox_image(tmp_path_factory.mktemp("busybox") / "layout")


@pytest.fixture(scope="module")
def layout(busybox: img.BuiltImage) -> Path:
    return busybox.layout


def archive_of(layout: Path, path: Path) -> Path:
    """An oci-archive: the layout's files in a tar."""
    with tarfile.open(path, "w") as tar:
        for entry in sorted(layout.rglob("*")):
            tar.add(entry, arcname=str(entry.relative_to(layout)), recursive=False)
    return path


def pod_dirs(data: Path) -> list[Path]:
    """Every pod directory under DATA/pods, in any phase."""
    pods = data / "pods"
    return sorted(p for phase in pods.iterdir() if phase.is_dir() for p in phase.iterdir()) if pods.exists() else []


# -- 1. local transports -----------------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_local_transports_under_the_policy(env: Env, layout: Path, transport: str) -> None:
    """Layouts and archives carry no signatures: signedBy and reject refuse them (one line,
    nothing stored); insecureAcceptAnything stores them and says so; an ``oci`` /
    ``oci-archive`` scope naming the path wins over the default, one naming another path does not."""
    path = layout if transport == "oci" else archive_of(layout, env.work / "image.tar")
    image = f"{transport}:{path}"
    signed_by = env.policy({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/dev/null"}]})
    refused(env.podrun(signed_by, "fetch", image), f"{transport}:", "needs a signature", str(signed_by))
    assert env.stored() == []
    refused(env.podrun(env.policy(REJECT), "fetch", image), image, "rejected")
    assert env.stored() == []
    elsewhere = env.policy({"default": [{"type": "reject"}],
                            "transports": {transport: {str(env.work / "other"): [{"type": "insecureAcceptAnything"}]}}})
    refused(env.podrun(elsewhere, "fetch", image), "rejected")
    assert env.stored() == []

    accept = env.policy(ACCEPT)
    image_id = env.ok(accept, "fetch", image)
    assert env.stored() == [image_id]
    assert env.trust(image_id) == {"policy": str(accept), "scope": "default",
                                   "requirements": [{"type": "insecureAcceptAnything"}]}
    # stored already: the policy is asked again all the same (no reuse around it)
    refused(env.podrun(env.policy(REJECT), "fetch", image), "rejected")

    scoped = env.policy({"default": [{"type": "reject"}],
                         "transports": {transport: {str(path): [{"type": "insecureAcceptAnything"}]}}}, "scoped.json")
    assert env.ok(scoped, "fetch", image) == image_id
    assert env.trust(image_id) == {"policy": str(scoped), "scope": f"transports.{transport}[{json.dumps(str(path))}]",
                                   "requirements": [{"type": "insecureAcceptAnything"}]}


def test_oci_scopes_name_resolved_directories(env: Env, layout: Path) -> None:
    """An ``oci`` scope is a directory prefix matched against the layout's resolved path (as
    containers/image): the parent directory's scope applies, through a symlink too; a scope
    naming the symlink itself does not."""
    link = env.work / "link"
    link.symlink_to(layout)

    def only(scope: Path) -> Path:
        return env.policy({"default": [{"type": "reject"}],
                           "transports": {"oci": {str(scope): [{"type": "insecureAcceptAnything"}]}}})

    image_id = env.ok(only(layout.parent), "fetch", f"oci:{link}")
    assert env.trust(image_id)["scope"] == f"transports.oci[{json.dumps(str(layout.parent))}]"
    refused(env.podrun(only(link), "fetch", f"oci:{link}"), "rejected", "scope default")


def test_docker_archive_has_only_the_transport_scope(env: Env, layout: Path) -> None:
    """A docker-archive (made by skopeo) carries no signatures either; its transport has no
    scope but ``""`` (containers/image), which wins over the default."""
    archive = env.work / "docker.tar"
    done = subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", f"oci:{layout}:latest",
                           f"docker-archive:{archive}:trust/archive:v1"], capture_output=True, text=True,
                          timeout=tm.TIMEOUT)
    assert done.returncode == 0, done.stderr
    image = f"docker-archive:{archive}"
    signed_by = env.policy({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/dev/null"}]})
    refused(env.podrun(signed_by, "fetch", image), image, "docker-archive: images carry none")
    transport = env.policy({"default": [{"type": "reject"}],
                            "transports": {"docker-archive": {"": [{"type": "insecureAcceptAnything"}]}}})
    image_id = env.ok(transport, "fetch", image)
    assert env.trust(image_id)["scope"] == 'transports.docker-archive[""]'
    path_scope = env.policy({"default": [{"type": "reject"}],
                             "transports": {"docker-archive": {str(archive): [{"type": "insecureAcceptAnything"}]}}})
    refused(env.podrun(path_scope, "fetch", image), str(path_scope), "no scopes", code=USAGE)


# -- 2. --insecure-options image, missing and invalid policies ----------------------------------------

def test_insecure_options_image_skips_the_policy(env: Env, layout: Path, registry: RunningRegistry) -> None:
    registry.push(layout, "latest", "trust-fetch/insecure:v1")
    reject = env.policy(REJECT)
    for image in (f"oci:{layout}", f"docker://{registry.host}/trust-fetch/insecure:v1"):
        refused(env.podrun(reject, "fetch", image), "rejected")
        image_id = env.ok(reject, "--insecure-options", "image", "fetch", image)
        assert env.trust(image_id) == {"insecure": True}
    assert "Admitted by" in env.ok(reject, "image", "inspect", image_id)


def test_missing_policy_refuses_before_the_network(env: Env) -> None:
    """No policy file: exit 253 with the hint to create one, and the registry (a closed port) is
    never asked: the message is the policy's, not a connection error."""
    missing = env.work / "no-policy.json"
    port = free_port()
    out = refused(env.podrun(missing, "fetch", f"docker://127.0.0.1:{port}/app:1"), str(missing), code=USAGE)
    assert "podrun trust set" in out
    assert "connect" not in out.lower() and str(port) not in out
    refused(env.podrun(missing, "fetch", f"oci:{env.work}/nothing-here"), str(missing), code=USAGE)
    assert env.stored() == []


def test_invalid_policy_names_file_and_key(env: Env) -> None:
    bad = env.policy('{"default": [{"type": "reject"}], "defualt": []}')
    refused(env.podrun(bad, "fetch", f"docker://127.0.0.1:{free_port()}/app:1"), str(bad), "defualt", code=USAGE)
    bad = env.policy({"default": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/dev/null", "keyPaht": "x"}]})
    refused(env.podrun(bad, "fetch", f"oci:{env.work}"), str(bad), "keyPaht", code=USAGE)


# -- 3. podrun run ----------------------------------------------------------------------------------

def test_run_under_the_policy(env: Env, layout: Path, registry: RunningRegistry) -> None:
    """A refused image starts no pod (exit 250, no pod directory in any phase); an allowed one
    runs; once stored, running it by name with the pull policy ``new`` is not verified again."""
    registry.push(layout, "latest", "trust-fetch/run:v1")
    name = f"{registry.host}/trust-fetch/run:v1"
    reject, accept = env.policy(REJECT, "reject.json"), env.policy(ACCEPT, "accept.json")
    run = ("run", "--net", "none")
    try:
        refused(env.podrun(reject, *run, f"docker://{name}", "--exec", "/bin/true"), "rejected")
        assert env.ok(reject, "list", "--format", "json") in ("", "[]")
        assert pod_dirs(env.data) == []
        assert env.stored() == []
        env.ok(accept, *run, f"docker://{name}", "--exec", "/bin/true")
        env.ok(reject, *run, "--pull-policy", "new", name, "--exec", "/bin/true")
        env.ok(reject, *run, "--pull-policy", "never", name, "--exec", "/bin/true")
        assert len(json.loads(env.ok(reject, "list", "--format", "json"))) == 3
        # what asks the registry asks the policy: docker://, and a name under the pull policy update
        refused(env.podrun(reject, *run, f"docker://{name}", "--exec", "/bin/true"), "rejected")
        refused(env.podrun(reject, *run, "--pull-policy", "update", name, "--exec", "/bin/true"), "rejected")
        assert len(pod_dirs(env.data)) == 3
    finally:
        env.ok(accept, "gc", "--grace-period", "0s")
    assert pod_dirs(env.data) == []


def test_run_asks_the_policy_for_a_stored_layout(env: Env, layout: Path) -> None:
    """A layout that an earlier run stored is reused without reading its layers, yet the
    policy is asked again: ``run`` and ``prepare`` under reject start no pod."""
    reject, accept = env.policy(REJECT, "reject.json"), env.policy(ACCEPT, "accept.json")
    app = (f"oci:{layout}", "--exec", "/bin/true")
    try:
        env.ok(accept, "run", "--net", "none", *app)
        for command in ("run", "prepare"):
            refused(env.podrun(reject, command, "--net", "none", *app), f"oci:{layout}", "rejected")
        assert len(pod_dirs(env.data)) == 1
    finally:
        env.ok(accept, "gc", "--grace-period", "0s")
    assert pod_dirs(env.data) == []


# -- 4. podrun image sign -----------------------------------------------------------------------------

@dataclass
class Pushed:
    """An image fetched from a layout, exported, pushed with skopeo; a key to sign it with."""

    image_id: str
    name: str  # HOST/REPO:TAG it was pushed as
    data: Path  # the store that holds it
    key: tm.Key
    work: Path


@pytest.fixture(scope="module")
def pushed(registry: RunningRegistry, layout: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushed]:
    work = tmp_path_factory.mktemp("sign")
    (work / "registries.d").mkdir()
    e = Env(work / "data", work, work / "registries.d")
    accept = e.policy(ACCEPT)
    image_id = e.ok(accept, "fetch", f"oci:{layout}")
    archive = work / "image.tar"
    e.ok(accept, "image", "export", image_id, f"oci-archive:{archive}")
    name = f"{registry.host}/trust-fetch/signed:v1"
    done = subprocess.run(["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
                           f"oci-archive:{archive}", f"docker://{name}"], capture_output=True, text=True,
                          timeout=tm.TIMEOUT)
    assert done.returncode == 0, done.stderr
    keyring = tm.Keyring(work)
    try:
        yield Pushed(image_id, name, e.data, keyring.generate("signer"), work)
    finally:
        keyring.close()


def sign(p: Pushed, lookaside: Path, identity: str) -> Path:
    """``podrun image sign`` with the key of *p*, printing the signature's path."""
    e = Env(p.data, p.work, p.work / "registries.d")
    out = e.ok(e.policy(ACCEPT), "image", "sign", "--sign-by", p.key.fingerprint, "--identity", identity,
               "--lookaside", str(lookaside), p.image_id, env={"GNUPGHOME": str(p.key.home)})
    return Path(out)


def signed_by_policy(env: Env, host: str, key: Path) -> Path:
    return env.policy({"default": [{"type": "reject"}],
                       "transports": {"docker": {host: [{"type": "signedBy", "keyType": "GPGKeys",
                                                         "keyPath": str(key)}]}}})


def test_image_sign_is_read_by_fetch_and_podman(env: Env, pushed: Pushed, registry: RunningRegistry) -> None:
    lookaside = env.work / "sigs"
    invalid = f"{pushed.name.split('/')[0]}/Trust-Fetch/signed:v1"  # no upper case in a repository
    signer = Env(pushed.data, env.work, env.registries_d)
    refused(signer.podrun(env.policy(ACCEPT), "image", "sign", "--sign-by", pushed.key.fingerprint, "--identity",
                       invalid, "--lookaside", str(lookaside), pushed.image_id), invalid, "--identity", code=USAGE)
    assert not lookaside.exists()
    first = sign(pushed, lookaside, pushed.name)
    assert first == tm.signature_dir(lookaside, "trust-fetch/signed", pushed.image_id) / "signature-1"
    registries_d = tm.write_registries_d(env.work / "rd", registry.host, lookaside)
    policy = signed_by_policy(env, registry.host, pushed.key.public)
    image_id = env.ok(policy, "fetch", f"docker://{pushed.name}", registries_d=registries_d)
    assert image_id == pushed.image_id  # the digest podrun signed is the one the registry serves
    assert env.trust(image_id) == {
        "policy": str(policy), "scope": f'transports.docker["{registry.host}"]', "manifest": image_id,
        "requirements": [{"type": "signedBy", "key": pushed.key.fingerprint, "signature": f"file://{first}",
                          "identity": pushed.name}]}
    podman = tm.podman_pull(env.work, policy, registries_d, pushed.name)
    assert podman.verdict == tm.ALLOW, podman.detail
    assert sign(pushed, lookaside, pushed.name) == first.parent / "signature-2"


def test_image_sign_for_another_identity_is_refused(env: Env, pushed: Pushed, registry: RunningRegistry) -> None:
    """Signed for :v2 of the same repository (so the signature sits where :v1's is looked
    for): fetching :v1 is refused for the identity."""
    lookaside = env.work / "sigs"
    sign(pushed, lookaside, pushed.name.replace(":v1", ":v2"))
    registries_d = tm.write_registries_d(env.work / "rd", registry.host, lookaside)
    policy = signed_by_policy(env, registry.host, pushed.key.public)
    refused(env.podrun(policy, "fetch", f"docker://{pushed.name}", registries_d=registries_d),
            "signed identity", ":v2")
    assert env.stored() == []
    podman = tm.podman_pull(env.work, policy, registries_d, pushed.name)
    assert podman.verdict == tm.REFUSE, podman.detail


def test_image_sign_finds_where_to_write_before_signing(env: Env, pushed: Pushed, registry: RunningRegistry) -> None:
    """No lookaside to write to (none given, none in registries.d; an http:// one): a usage
    error naming it, before gpg is asked to sign (a key that does not exist is not reached)."""
    signer = Env(pushed.data, env.work, env.registries_d)
    sign_args = ("image", "sign", "--sign-by", "0" * 40, "--identity", pushed.name)
    accept = env.policy(ACCEPT)
    refused(signer.podrun(accept, *sign_args, pushed.image_id), "no lookaside", pushed.name, code=USAGE)
    http = f"http://{registry.host}/sigs"
    refused(signer.podrun(accept, *sign_args, "--lookaside", http, pushed.image_id), http, "file://", code=USAGE)
    staging = env.work / "rd"
    staging.mkdir()
    (staging / "http.yaml").write_text(f"docker:\n  {registry.host}:\n    lookaside-staging: {http}\n")
    refused(signer.podrun(accept, *sign_args, pushed.image_id, registries_d=staging), http, "file://", code=USAGE)


# -- 5. sigstore attachments with a public key -----------------------------------------------------

@dataclass
class SigstoreKey:
    private_pem: bytes
    public: Path
    name: str  # "sha256:" + hex of the SubjectPublicKeyInfo DER


def sigstore_key(path: Path) -> SigstoreKey:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key()
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return SigstoreKey(private, path, "sha256:" + hashlib.sha256(der).hexdigest())


def push_attachment(registry: RunningRegistry, repo: str, digest: str, payload: bytes, signature: str,
                    work: Path) -> None:
    """The cosign attachment image ``REPO:sha256-HEX.sig`` holding one signed payload."""
    layout = work / f"sig-{digest.split(':')[1][:12]}"
    sig_layout(layout, [(sources.SIGSTORE_PAYLOAD, payload, {sources.SIGSTORE_ANNOTATION: signature})])
    registry.push(layout, "sig", f"{repo}:{digest.replace(':', '-')}.sig")


def sigstore_policy(env: Env, host: str, requirement: dict[str, object], name: str) -> Path:
    return env.policy({"default": [{"type": "reject"}],
                       "transports": {"docker": {host: [{"type": "sigstoreSigned", **requirement}]}}}, name)


def test_sigstore_signed_end_to_end(env: Env, busybox: img.BuiltImage, registry: RunningRegistry) -> None:
    layout, digest = busybox.layout, busybox.manifest_digest
    repo, unsigned_repo = "trust-fetch/cosigned", "trust-fetch/cosign-absent"
    registry.push(layout, "latest", f"{repo}:v1")
    registry.push(layout, "latest", f"{unsigned_repo}:v1")
    name = f"{registry.host}/{repo}:v1"
    key, other = sigstore_key(env.work / "cosign.pub"), sigstore_key(env.work / "other.pub")
    payload = cosign.payload(digest, name)
    push_attachment(registry, repo, digest, payload, cosign.sign(payload, key.private_pem), env.work)
    registries_d = env.work / "rd"
    registries_d.mkdir()
    (registries_d / "sigstore.yaml").write_text(f"docker:\n  {registry.host}:\n    use-sigstore-attachments: true\n")

    allowed = sigstore_policy(env, registry.host, {"keyPath": str(key.public)}, "allowed.json")
    image_id = env.ok(allowed, "fetch", f"docker://{name}", registries_d=registries_d)
    assert image_id == digest
    (req,) = env.trust(image_id)["requirements"]
    assert req["type"] == "sigstoreSigned" and req["key"] == key.name and req["identity"] == name
    assert req["signature"].startswith("sigstore attachment")

    fresh = Env(env.work / "data2", env.work, env.registries_d)
    wrong = sigstore_policy(env, registry.host, {"keyPath": str(other.public)}, "other.json")
    refused(fresh.podrun(wrong, "fetch", f"docker://{name}", registries_d=registries_d), "no valid signature")
    refused(fresh.podrun(allowed, "fetch", f"docker://{registry.host}/{unsigned_repo}:v1", registries_d=registries_d),
            "needs a signature", "none was found")
    # the attachment is there, but registries.d does not say to use it
    refused(fresh.podrun(allowed, "fetch", f"docker://{name}"), "none was found")
    fulcio = sigstore_policy(env, registry.host, {
        "fulcio": {"caPath": str(key.public), "oidcIssuer": "https://x.test", "subjectEmail": "a@x.test"},
        "rekorPublicKeyPath": str(other.public)}, "fulcio.json")
    refused(fresh.podrun(fulcio, "fetch", f"docker://{name}", registries_d=registries_d), "cannot check yet")
    assert fresh.stored() == []


# -- 6. a fetch killed while it waits for a signature ------------------------------------------------

class SlowLookaside(SimpleHTTPRequestHandler):
    """Serves a directory; while ``hold`` is set, a request waits until it is cleared (or 60 s)."""

    hold = threading.Event()
    asked = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        if self.hold.is_set():
            self.asked.set()
            self.release.wait(60)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_fetch_killed_waiting_for_the_lookaside(env: Env, pushed: Pushed, registry: RunningRegistry) -> None:
    """kill -9 while the fetch waits for its signature: nothing stored, and the next fetch (and
    ``image gc``, which takes the store lock exclusively) works: no lock left held."""
    sign(pushed, env.work / "sigs", pushed.name)
    policy = signed_by_policy(env, registry.host, pushed.key.public)
    handler: type[SlowLookaside] = type("H", (SlowLookaside,), {
        "hold": threading.Event(), "asked": threading.Event(), "release": threading.Event()})
    handler.hold.set()
    with serving(partial(handler, directory=str(env.work))) as host:
        registries_d = env.work / "rd"
        registries_d.mkdir()
        (registries_d / "http.yaml").write_text(f"docker:\n  {registry.host}:\n    lookaside: http://{host}/sigs\n")
        cmd = [sys.executable, "-m", "podrun", "--dir", str(env.data), "--signature-policy", str(policy),
               "--registries.d", str(registries_d), "fetch", f"docker://{pushed.name}"]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            assert handler.asked.wait(tm.TIMEOUT), "podrun never asked the lookaside"
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(tm.TIMEOUT) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            handler.hold.clear()
            handler.release.set()
        assert env.stored() == []
        assert env.ok(policy, "fetch", f"docker://{pushed.name}", registries_d=registries_d) == pushed.image_id
    assert env.stored() == [pushed.image_id]
    env.ok(policy, "image", "gc")
