"""``podrun trust …``: show and edit the signature policy (containers-policy.json(5)) that
``fetch`` and ``run`` enforce; podman's ``image trust`` grammar, rkt's ``--prefix`` spelling."""

from __future__ import annotations

import os

import click

from podrun.cli.output import FORMAT_OPTION, NO_LEGEND_OPTION, print_json, print_table, printable
from podrun.errors import UsageError, VerificationError
from podrun.stage0 import Globals

TYPES = {"accept": "insecureAcceptAnything", "reject": "reject", "signedBy": "signedBy",
         "sigstoreSigned": "sigstoreSigned"}


@click.group("trust")
def trust_group() -> None:
    """Show and edit the signature policy images are fetched under (the file podman and skopeo
    read: --signature-policy, else ~/.config/containers/policy.json, else /etc/containers/policy.json)."""


def _write_target(g: Globals) -> str:
    """The policy file ``trust set`` edits: the one ``fetch`` would read, or, when there is
    none yet, the user's (the system's for root)."""
    from podrun.trust.policy import SYSTEM_POLICY, USER_POLICY

    if g.signature_policy:
        return g.signature_policy
    user = os.path.join(os.path.expanduser("~"), USER_POLICY)
    if os.path.lexists(user) or os.geteuid() != 0:
        return user
    return SYSTEM_POLICY


@trust_group.command("show")
@FORMAT_OPTION
@NO_LEGEND_OPTION
@click.pass_obj
def show_cmd(g: Globals, fmt: str, no_legend: bool) -> None:
    """One line per requirement: transport, scope, type, keys and the identity rule."""
    from podrun.trust.policy import describe, load_policy, policy_path

    path = policy_path(g.signature_policy)
    rows = describe(load_policy(path))
    if fmt == "json":
        print_json({"policy": path, "requirements": [
            {"transport": r.transport, "scope": r.scope, "type": r.type, "keys": r.keys, "identity": r.identity}
            for r in rows]})
        return
    print_table(["TRANSPORT", "SCOPE", "TYPE", "KEYS", "IDENTITY"],
                [[r.transport or "-", printable(r.scope) or '""', r.type, printable(r.keys) or "-",
                  printable(r.identity) or "-"] for r in rows], legend=not no_legend)


@trust_group.command("set")
@click.argument("scope", required=False, metavar="[SCOPE]")
@click.option("--type", "-t", "kind", type=click.Choice(list(TYPES)), default="signedBy", show_default=True,
              help="accept (insecureAcceptAnything), reject, signedBy (GPG keys), sigstoreSigned (public keys).")
@click.option("--pubkeysfile", "-f", "keys", multiple=True, metavar="FILE",
              help="A key file for signedBy / sigstoreSigned (repeat: a signature by any of them).")
@click.option("--prefix", metavar="HOST[/REPO]", help="rkt's spelling of a docker SCOPE.")
@click.pass_obj
def set_cmd(g: Globals, scope: str | None, kind: str, keys: tuple[str, ...], prefix: str | None) -> None:
    """Set the requirements of SCOPE: `default`, or a docker registry, namespace or repository
    (HOST[:PORT][/PATH], *.DOMAIN), replacing what it had; the rest of the file is kept.  A
    missing policy file is created with default: reject."""
    from podrun import fsutil
    from podrun.trust import policy

    if (scope is None) == (prefix is None):
        raise UsageError("give a SCOPE or --prefix (one of them)")
    target = scope if scope is not None else prefix
    assert target is not None
    requirements: list[object] = [_requirement(kind, keys)]
    path = _write_target(g)
    try:
        with open(path, "rb") as f:
            doc: bytes | None = f.read()
    except FileNotFoundError:
        doc = None
    except OSError as exc:
        raise UsageError(f"cannot read the signature policy {path}: {exc.strerror or exc}") from None
    if target == "default":
        out = policy.set_default(doc, requirements, path)
    else:
        out = policy.set_scope(doc, "docker", target, requirements, path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # a file the user names: never written through a link (fsutil.user_output's rules)
    with fsutil.user_output(path) as dest:
        if not dest.in_place:
            os.fchmod(dest.fd, 0o644)
        fsutil.write_all(dest.fd, out)
    click.echo(f"{path}: {'default' if target == 'default' else 'docker ' + target}: {TYPES[kind]}", err=True)


def _requirement(kind: str, keys: tuple[str, ...]) -> dict[str, object]:
    """The requirement ``trust set`` writes; key files are checked (read and parsed) first."""
    kind_name = TYPES[kind]
    if kind in ("accept", "reject"):
        if keys:
            raise UsageError(f"--pubkeysfile does not apply to --type {kind}")
        return {"type": kind_name}
    if not keys:
        raise UsageError(f"--type {kind} needs at least one --pubkeysfile")
    paths = [os.path.abspath(k) for k in keys]
    try:
        return _key_requirement(kind, kind_name, paths)
    except VerificationError as exc:  # a key file that is not a key: a bad argument
        raise UsageError(str(exc)) from None


def _key_requirement(kind: str, kind_name: str, paths: list[str]) -> dict[str, object]:
    if kind == "signedBy":
        from podrun.trust import openpgp

        openpgp.load_keyring(paths)
        req: dict[str, object] = {"type": kind_name, "keyType": "GPGKeys"}
    else:
        from podrun.trust import cosign

        cosign.load_public_keys(paths)
        req = {"type": kind_name}
    if len(paths) == 1:
        req["keyPath"] = paths[0]
    else:
        req["keyPaths"] = paths
    return req
