"""``podrun fetch IMAGE…``: fetch images into the store and print their IDs."""

from __future__ import annotations

import click

from podrun.cli.output import Progress
from podrun.image.api import PULL_POLICIES, FetchRequest, fetch
from podrun.image.manifest import Platform
from podrun.image.pull import PullOptions
from podrun.image.store import Store
from podrun.stage0 import Globals


@click.command("fetch")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option(
    "--pull-policy", type=click.Choice(PULL_POLICIES), default="new", show_default=True,
    help="For bare names: new = store first, update = always the registry, never = store only.",
)
@click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Pick this platform from an index.")
@click.pass_obj
def fetch_cmd(g: Globals, images: tuple[str, ...], pull_policy: str, platform: str | None) -> None:
    """Fetch IMAGE(s) into the store and print one image ID per image.

    IMAGE is docker://HOST[:PORT]/REPO[:TAG|@DIGEST], oci:DIR[:REF], oci-archive:FILE[:REF],
    docker-archive:FILE[:REF], or a bare NAME[:TAG] (the store, then docker://).
    Credentials go only to the registry's own origin; PODRUN_REGISTRY_STALL_TIMEOUT and
    PODRUN_REGISTRY_DEADLINE bound slow registries (see podrun-fetch(1)).
    """
    from podrun.trust.decide import PolicyGate

    store = Store(g.data_dir)
    gate = PolicyGate(g.signature_policy, g.registries_d, "image" in g.insecure)
    progress = Progress()
    options = PullOptions(platform=Platform.parse(platform) if platform else None, progress=progress)
    for image in images:
        try:
            record = fetch(store, FetchRequest(image, pull_policy, g.insecure, options, gate))
        finally:
            progress.finish()
        click.echo(str(record.id))
