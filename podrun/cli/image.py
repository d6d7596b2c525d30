"""``podrun image …``: list, inspect, rm, gc, import, export and fsck of the image store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from podrun.cli.output import (
    FORMAT_OPTION,
    NO_LEGEND_OPTION,
    human_size,
    human_time,
    print_fields,
    print_json,
    print_table,
    printable,
)
from podrun.errors import NotFoundError, StoreError, UsageError
from podrun.image.reference import parse_reference
from podrun.image.store import ImageRecord, Store, candidate_names
from podrun.stage0 import Globals


@click.group("image")
def image_group() -> None:
    """Manage the local image store."""


def _summary(store: Store, rec: ImageRecord) -> dict[str, object]:
    return {
        "id": str(rec.id),
        "names": store.names_of(rec.id),
        "size": rec.unpacked_size,
        "created": rec.created,
        "fetched": rec.fetched,
        "layers": len(rec.layers),
        "source": rec.source,
    }


@image_group.command("list")
@FORMAT_OPTION
@NO_LEGEND_OPTION
@click.option("--full", is_flag=True, help="Show full image IDs.")
@click.pass_obj
def list_cmd(g: Globals, fmt: str, no_legend: bool, full: bool) -> None:
    """List images in the store."""
    store = Store(g.data_dir)
    records = []
    for image_id in store.image_ids():
        try:
            records.append(store.image(image_id))
        except StoreError as exc:
            click.echo(f"podrun: warning: {exc}", err=True)
    records.sort(key=lambda r: r.fetched, reverse=True)
    if fmt == "json":
        print_json([_summary(store, r) for r in records])
        return
    rows = []
    for r in records:
        names = store.names_of(r.id) or ["<none>"]
        shown = str(r.id) if full else r.id.short
        rows.append([shown, ",".join(names), human_size(r.unpacked_size), human_time(r.created)])
    print_table(["ID", "NAME", "SIZE", "CREATED"], rows, legend=not no_legend)


@image_group.command("inspect")
@click.argument("image")
@FORMAT_OPTION
@click.pass_obj
def inspect_cmd(g: Globals, image: str, fmt: str) -> None:
    """Show an image: its record and the main fields of its config; with --format json, the
    record with the whole manifest and config documents."""
    store = Store(g.data_dir)
    doc = _inspect_doc(store, store.image(store.resolve(image)))
    if fmt == "json":
        print_json(doc)
        return
    print_fields(_inspect_fields(doc))


def _inspect_doc(store: Store, rec: ImageRecord) -> dict[str, Any]:
    """``image inspect --format json`` (podrun/schemas/image-inspect.json): the summary ``image
    list`` gives, the fields podman's inspect has at its top (architecture, os, labels,
    manifest_type), then the manifest and config documents."""
    config = json.loads(store.read_blob(rec.config))
    doc: dict[str, Any] = _summary(store, rec)
    inner = config.get("config") if isinstance(config, dict) else None
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    doc["architecture"] = _text_or_none(config, "architecture")
    doc["os"] = _text_or_none(config, "os")
    doc["labels"] = {k: v for k, v in labels.items() if isinstance(v, str)} if isinstance(labels, dict) else {}
    doc["manifest_type"] = rec.manifest_media_type
    skipped = (store.layer_metadata(layer.diff_id).get("devices_skipped", 0) for layer in rec.layers)
    doc["devices_skipped"] = sum(n for n in skipped if isinstance(n, int))
    doc["manifest"] = json.loads(store.read_blob(rec.id))
    doc["config"] = config
    doc["trust"] = rec.trust
    return doc


def _admitted(trust: dict[str, Any] | None) -> str:
    """What admitted the image, in one line (``Admitted by`` of ``image inspect``)."""
    if trust is None:
        return "not recorded (imported, or fetched before podrun checked a signature policy)"
    if trust.get("insecure"):
        return "nothing: fetched with --insecure-options image (no signature policy)"
    parts = []
    for req in trust.get("requirements", []):
        if req.get("type") == "insecureAcceptAnything":
            parts.append("insecureAcceptAnything")
        else:
            parts.append(f"{req.get('type')}: key {req.get('key')}, signature {req.get('signature')}")
    return f"{'; '.join(parts) or '?'} (policy {trust.get('policy')}, scope {trust.get('scope')})"


def _text_or_none(doc: Any, key: str) -> str | None:
    value = doc.get(key) if isinstance(doc, dict) else None
    return value if isinstance(value, str) else None


def _inspect_fields(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The text of ``image inspect``: one line per field; what comes from the image is escaped
    (podrun.cli.output.printable), lists and other values shown as JSON."""

    def show(value: Any) -> str:
        return printable(value if isinstance(value, str) else json.dumps(value))

    inner = doc["config"].get("config") if isinstance(doc["config"], dict) else None
    inner = inner if isinstance(inner, dict) else {}
    fields = [("ID", doc["id"]), ("Names", show(", ".join(doc["names"]) or "<none>")), ("Source", show(doc["source"])),
              ("Created", human_time(doc["created"])), ("Fetched", human_time(doc["fetched"])),
              ("Size", human_size(doc["size"])), ("Layers", str(doc["layers"])),
              ("Manifest type", show(doc["manifest_type"])),
              ("OS/Arch", show(f"{doc['os'] or '?'}/{doc['architecture'] or '?'}"))]
    for label, key in (("Entrypoint", "Entrypoint"), ("Cmd", "Cmd"), ("User", "User"),
                       ("Working dir", "WorkingDir"), ("Stop signal", "StopSignal")):
        if inner.get(key) not in (None, "", []):
            fields.append((label, show(inner[key])))
    env = inner.get("Env")
    fields += [("Env", show(e)) for e in (env if isinstance(env, list) else [])]
    ports = inner.get("ExposedPorts")
    if isinstance(ports, dict) and ports:
        fields.append(("Exposed ports", show(", ".join(str(p) for p in ports))))
    fields += [("Label", show(f"{k}={v}")) for k, v in doc["labels"].items()]
    if doc["devices_skipped"]:
        fields.append(("Devices skipped", str(doc["devices_skipped"])))
    fields.append(("Admitted by", show(_admitted(doc["trust"]))))
    return fields


@image_group.command("sign")
@click.argument("image")
@click.option("--sign-by", metavar="FINGERPRINT",
              help="The gpg key to sign with (simple signing, as skopeo's and podman's --sign-by).")
@click.option("--sign-by-sigstore-key", metavar="KEYFILE", type=click.Path(dir_okay=False),
              help="The PEM private key to sign with (sigstore); the signature is pushed to --to.")
@click.option("--identity", metavar="HOST[:PORT]/REPO:TAG",
              help="The reference the image will be fetched as (default: --to with a tag, else IMAGE).")
@click.option("--lookaside", metavar="DIR|file://DIR",
              help="With --sign-by: the lookaside to write into (default: registries.d's "
              "lookaside-staging for the identity).")
@click.option("--to", metavar="docker://HOST/REPO",
              help="With --sign-by-sigstore-key: the repository (holding the image) to push the signature to.")
@click.option("--sign-passphrase-file", metavar="FILE", type=click.Path(dir_okay=False),
              help="The key's passphrase, from this file.")
@click.pass_obj
def sign_cmd(g: Globals, image: str, sign_by: str | None, sign_by_sigstore_key: str | None, identity: str | None,
             lookaside: str | None, to: str | None, sign_passphrase_file: str | None) -> None:
    """Sign IMAGE (from the store) for the reference it will be fetched as.  With --sign-by,
    print the signature file written (BASE/REPO@sha256=HEX/signature-N,
    containers-registries.d(5)); with --sign-by-sigstore-key, the sigstore attachment the
    signature was pushed to (HOST/REPO:sha256-HEX.sig)."""
    from podrun.trust import sign

    if (sign_by is None) == (sign_by_sigstore_key is None):
        raise UsageError("image sign: give exactly one of --sign-by and --sign-by-sigstore-key")
    if sign_by is not None:
        if to is not None:
            raise UsageError("image sign: --to is for --sign-by-sigstore-key (--sign-by writes to a lookaside)")
        click.echo(sign.sign_image(Store(g.data_dir), image, identity, sign_by, lookaside, g.registries_d,
                                   sign_passphrase_file))
        return
    assert sign_by_sigstore_key is not None
    if lookaside is not None:
        raise UsageError("image sign: --lookaside is for --sign-by (sigstore signatures go to the registry, --to)")
    if to is None:
        raise UsageError("image sign: --sign-by-sigstore-key needs --to docker://HOST/REPO")
    click.echo(sign.sign_image_sigstore(Store(g.data_dir), image, identity, sign_by_sigstore_key, to, g.insecure,
                                        sign_passphrase_file))


@image_group.command("rm")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.pass_obj
def rm_cmd(g: Globals, images: tuple[str, ...]) -> None:
    """Remove images (by name, ID or unique ID prefix).  A name removes only that name unless it
    was the image's last; an ID removes the image and all its names; a name whose image is
    missing is removed.  `image gc` frees space."""
    store = Store(g.data_dir)
    for text in images:
        try:
            image_id = store.resolve(text)
        except NotFoundError:
            dangling = store.remove_dangling_name(text)  # what fsck reports: the image is gone
            if dangling is None:
                raise
            click.echo(f"untagged {dangling} (its image was missing)")
            continue
        names = store.names_of(image_id)
        given = [n for n in names if n in candidate_names(text)]
        if given and len(names) > 1:
            store.remove_name(given[0])
            click.echo(f"untagged {given[0]}")
            continue
        store.remove_image(image_id)
        click.echo(f"removed {image_id}")


@image_group.command("gc")
@click.pass_obj
def gc_cmd(g: Globals) -> None:
    """Delete blobs and layer trees no image or pod uses, names of missing images and
    interrupted downloads."""
    from podrun.image.digest import Digest
    from podrun.pod.layout import PodDirs, pod_references

    store = Store(g.data_dir)

    def in_use() -> set[Digest] | None:
        refs = pod_references(PodDirs(g.data_dir))
        for problem in refs.unreadable:  # never delete on doubt: such a pod keeps every layer
            click.echo(f"podrun: warning: {problem}; keeping every layer tree", err=True)
        if refs.unreadable:
            return None
        # lower dirs look like .../layers/<alg>/<hex>/rootfs
        return {Digest(Path(d).parent.parent.name, Path(d).parent.name) for d in refs.lower_dirs}

    for line in store.gc(in_use):
        click.echo(f"removed {line}")


@image_group.command("import")
@click.argument("source", metavar="ROOTFS-DIR|TAR")
@click.argument("name", metavar="NAME[:TAG]")
@click.option("--cmd", "cmd", multiple=True, metavar="ARG", help="Default command (repeat for each word).")
@click.pass_obj
def import_cmd(g: Globals, source: str, name: str, cmd: tuple[str, ...]) -> None:
    """Make a single-layer image from a root filesystem directory or tar archive; print its ID."""
    from podrun.image.importer import import_rootfs

    rec = import_rootfs(Store(g.data_dir), source, name, list(cmd) or None)
    click.echo(str(rec.id))


@image_group.command("export")
@click.argument("image")
@click.argument("destination", metavar="oci-archive:FILE[:REF]")
@click.pass_obj
def export_cmd(g: Globals, image: str, destination: str) -> None:
    """Write IMAGE as an OCI archive (loadable by skopeo, podman and podrun).  FILE may be a
    FIFO, a character device or - (stdout); a symbolic link is refused (see podrun-image(1))."""
    from podrun.image.importer import export_oci_archive

    ref = parse_reference(destination)
    if ref.transport != "oci-archive" or ref.path is None:
        raise UsageError(f"invalid export destination {destination!r}: expected oci-archive:FILE[:REF]")
    store = Store(g.data_dir)
    export_oci_archive(store, store.resolve(image), ref.path, ref.ref)


@image_group.command("fsck")
@click.option("--quick", is_flag=True, help="Skip re-hashing every blob.")
@click.pass_obj
def fsck_cmd(g: Globals, quick: bool) -> None:
    """Check the store: missing or corrupted blobs and layers, dangling names, leftovers.
    Exits 248 when it finds problems; `podrun image rm` and `podrun image gc` repair them."""
    problems = Store(g.data_dir).fsck(verify_content=not quick)
    for p in problems:
        click.echo(p)
    if problems:
        raise StoreError(f"{len(problems)} problem(s) found in the store")
    click.echo("store is consistent")
