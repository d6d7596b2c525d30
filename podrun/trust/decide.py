"""The policy decision for one image (containers/image's ``IsRunningImageAllowed``).

The scope's requirement list is chosen without merging (``policy.Policy.requirements_for``),
and *every* requirement must allow the image: ``insecureAcceptAnything`` does, ``reject`` never
does, ``signedBy`` / ``sigstoreSigned`` do when at least one signature verifies with one of
their keys, names the digest of the exact manifest bytes podrun will use, and carries an
identity their ``signedIdentity`` accepts.  Other signatures, however broken, do no harm; when
none satisfies a requirement the refusal names the first reason.

Time of check = time of use: ``pull`` calls the registry check with the chosen per-platform
manifest (by digest, as read once), before any config or layer is read; signatures are looked
up by that digest and the identity is the reference the user gave (a signature on a manifest
list neither suffices nor is needed).  Layouts and archives carry no signatures: a requirement
that needs one refuses them.  ``--insecure-options image`` skips the policy, and the image's
record says so.

What admitted an image is recorded with it (``ImageRecord.trust``, ``podrun image inspect``).
"""

from __future__ import annotations

from podrun.errors import VerificationError
from podrun.image.digest import Digest
from podrun.trust.signature import COSIGN, SIMPLE, FoundSignature, SignatureError, VerifiedSignature

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from podrun.image.pull import Admit
    from podrun.image.reference import DockerReference, ImageReference
    from podrun.image.registry import RegistrySource
    from podrun.image.source import ImageSource, ManifestBytes
    from podrun.trust import policy as pol


class PolicyRefusal(VerificationError):
    """The policy does not allow the image (exit status 250, as every verification failure)."""


def _matches_bytes(claimed: str, data: bytes) -> bool:
    """Whether the payload's ``docker-manifest-digest`` is the digest of *data* (the exact
    manifest bytes podrun uses), in the payload's own algorithm."""
    try:
        digest = Digest.parse(claimed)  # sha256 or sha512, as the store knows them
    except VerificationError:
        return False
    return Digest.of_bytes(data, digest.algorithm) == digest


class PolicyGate:
    """The signature policy of one podrun command (``Gate`` of podrun.image.api).

    *policy_file* / *registries_d*: the global options (None: the containers tools' default
    places); *insecure*: ``--insecure-options image`` (no policy at all).  The policy file is
    read once, when the first image needs it, so commands that fetch nothing never need one."""

    def __init__(self, policy_file: str | None, registries_d: str | None, insecure: bool) -> None:
        self.policy_file = policy_file
        self.registries_d = registries_d
        self.insecure = insecure
        self._policy: pol.Policy | None = None
        self._path = ""

    def policy(self) -> tuple[pol.Policy, str]:
        from podrun.trust import policy as pol

        if self._policy is None:
            self._path = pol.policy_path(self.policy_file)
            self._policy = pol.load_policy(self._path)
        return self._policy, self._path

    # -- the two checks podrun.image.api makes -------------------------------------------------
    def admit_local(self, ref: ImageReference) -> dict[str, Any]:
        from podrun.trust import policy as pol

        if self.insecure:
            return {"insecure": True}
        policy, path = self.policy()
        assert ref.path is not None
        scope, reqs = policy.requirements_for(ref.transport, ref.path)
        admitted = []
        for req in reqs:
            if isinstance(req, pol.InsecureAcceptAnything):
                admitted.append({"type": req.TYPE})
                continue
            raise PolicyRefusal(
                f"{ref}: refused by policy {path} (scope {scope}): "
                + ("rejected" if isinstance(req, pol.Reject)
                   else f"{req.TYPE} needs a signature, and {ref.transport}: images carry none"))
        return {"policy": path, "scope": scope, "requirements": admitted}

    def admit_registry(self, ref: DockerReference, source: ImageSource) -> Admit:
        from podrun.image.registry import RegistrySource

        assert isinstance(source, RegistrySource)
        if not self.insecure:
            self.policy()  # a missing or invalid policy refuses before the registry is asked

        def admit(top: ManifestBytes, digest: Digest) -> dict[str, Any]:
            return self.decide_registry(ref, source, top.data, digest)

        return admit

    def decide_registry(self, ref: DockerReference, source: RegistrySource, manifest: bytes,
                        digest: Digest) -> dict[str, Any]:
        """Whether the policy allows the registry image *ref* whose chosen manifest is
        *manifest* (with *digest*); what allowed it, or PolicyRefusal."""
        from podrun.trust import policy as pol

        if self.insecure:
            return {"insecure": True}
        policy, path = self.policy()
        scope, reqs = policy.requirements_for("docker", ref)
        where = f"docker://{ref}: refused by policy {path} (scope {scope})"
        found: dict[str, list[FoundSignature]] = {}

        def signatures(kind: str) -> list[FoundSignature]:
            if kind not in found:
                found[kind] = self._signatures(kind, ref, digest, source)
            return found[kind]

        admitted: list[dict[str, Any]] = []
        for req in reqs:
            if isinstance(req, pol.InsecureAcceptAnything):
                admitted.append({"type": req.TYPE})
            elif isinstance(req, pol.Reject):
                raise PolicyRefusal(f"{where}: rejected")
            elif req.needs_unsupported or not isinstance(req, (pol.SignedBy, pol.SigstoreSigned)):
                raise PolicyRefusal(f"{where}: {req.TYPE} requirement of a kind podrun cannot check yet "
                                    "(X.509 keys, Fulcio, Rekor, PKI or signedBaseLayer)")
            else:
                admitted.append(self._signed(req, ref, manifest, signatures, where))
        return {"policy": path, "scope": scope, "manifest": str(digest), "requirements": admitted}

    # -- signatures ---------------------------------------------------------------------------
    def _signatures(self, kind: str, ref: DockerReference, digest: Digest,
                    source: RegistrySource) -> list[FoundSignature]:
        from podrun.trust import registriesd, sources

        config = registriesd.load(registriesd.registries_d_dir(self.registries_d))
        entry = config.for_image(ref)
        if kind == SIMPLE:
            return sources.simple_signatures(ref, str(digest), entry, source)
        if not entry.use_sigstore_attachments:
            return []
        return sources.cosign_signatures(ref, str(digest), source)

    def _signed(self, req: pol.SignedBy | pol.SigstoreSigned, ref: DockerReference, manifest: bytes,
                signatures: Callable[[str], list[FoundSignature]], where: str) -> dict[str, Any]:
        """What satisfies one signature requirement: the first signature that verifies with
        its keys, names these manifest bytes and an identity it accepts."""
        kind = COSIGN if req.TYPE == "sigstoreSigned" else SIMPLE
        verify = _verifier(req)
        candidates = signatures(kind)
        reasons: list[str] = []
        for sig in candidates:
            try:
                claim: VerifiedSignature = verify(sig)
            except SignatureError as exc:
                reasons.append(f"{sig.origin}: {exc}")
                continue
            if not _matches_bytes(claim.manifest_digest, manifest):
                reasons.append(f"{sig.origin}: signed manifest {claim.manifest_digest} is not this image's")
                continue
            if not req.signed_identity.matches(ref, claim.docker_reference):
                reasons.append(f"{sig.origin}: signed identity {claim.docker_reference!r} is not accepted "
                               f"for {ref} ({req.signed_identity.describe()})")
                continue
            return {"type": req.TYPE, "key": claim.key, "signature": sig.origin,
                    "identity": claim.docker_reference}
        if not candidates:
            raise PolicyRefusal(f"{where}: {req.TYPE} needs a signature, and none was found")
        more = f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else ""
        raise PolicyRefusal(f"{where}: no valid signature: {reasons[0]}{more}")


def _paths(one: str | None, many: tuple[str, ...] | None) -> list[str] | None:
    return [one] if one is not None else list(many) if many is not None else None


def _verifier(req: pol.SignedBy | pol.SigstoreSigned) -> Callable[[FoundSignature], VerifiedSignature]:
    from podrun.trust import policy as pol

    if isinstance(req, pol.SignedBy):
        from podrun.trust import openpgp

        keyring = openpgp.load_keyring(_paths(req.key_path, req.key_paths), req.key_data)
        return lambda sig: openpgp.verify(sig.blob, keyring)
    from podrun.trust import cosign

    datas = [req.key_data] if req.key_data is not None else list(req.key_datas) if req.key_datas else None
    keys = cosign.load_public_keys(_paths(req.key_path, req.key_paths), datas)

    def verify(sig: FoundSignature) -> VerifiedSignature:
        if sig.cosign_signature is None:
            raise SignatureError("no signature annotation")
        return cosign.verify(sig.blob, sig.cosign_signature, keys)

    return verify

