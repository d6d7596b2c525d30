"""Image trust (issue 15): containers-policy.json(5) and containers-registries.d(5), as podman,
skopeo and containers/image read them, so one host policy governs them all and podrun decides
as they do.  stage0 only (never imported on the ``run`` path of a stored image).

- ``policy``: strict parsing of policy.json, scope resolution, editing (``trust set``).
- ``identity``: Docker references as containers/image normalises them; ``signedIdentity`` rules.
- ``openpgp``: simple signing (the "atomic container signature"): verification (pysequoia) and
  signing (gpg).
- ``cosign``: sigstore signatures with public keys (``cryptography``).
- ``registriesd``: registries.d parsing: where signatures live (lookaside, sigstore attachments).
- ``sources``: reading a manifest's signatures: lookaside (file://, http(s)://), the registry's
  signature extension API, sigstore attachments.
- ``decide``: every requirement of the scope must allow the image; what admitted it.
- ``signature``: the records those share.
"""
