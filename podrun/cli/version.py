"""``podrun version``: podrun's version and what it runs with, named after ``podman version``'s
fields (Version, OsArch, Os; python_version where podman has GoVersion)."""

from __future__ import annotations

import platform

import click

from podrun import __version__
from podrun.cli.output import FORMAT_OPTION, print_fields, print_json


def version_info() -> dict[str, object]:
    """``podrun version --format json`` (podrun/schemas/version.json)."""
    from podrun.abi import FLAVOR_MANIFEST, STAGE1_FLAVORS
    from podrun.image.manifest import Platform
    from podrun.stage0.prepare import stages_dir

    host = Platform.host()
    stages = stages_dir()
    return {
        "version": __version__,
        "python_version": platform.python_version(),
        "os_arch": f"{host.os}/{host.architecture}",
        "os": host.os,
        "stages_dir": str(stages),
        "stage1_flavors": [f for f in STAGE1_FLAVORS if (stages / f / FLAVOR_MANIFEST).is_file()],
    }


@click.command("version")
@FORMAT_OPTION
def version_cmd(fmt: str) -> None:
    """Show podrun's version, Python's, the platform and the installed stage1 flavors."""
    doc = version_info()
    if fmt == "json":
        print_json(doc)
        return
    flavors = doc["stage1_flavors"]
    print_fields([("Version", str(doc["version"])), ("Python version", str(doc["python_version"])),
                  ("OS/Arch", str(doc["os_arch"])), ("Stages dir", str(doc["stages_dir"])),
                  ("Stage1 flavors", ", ".join(flavors) if isinstance(flavors, list) and flavors else "none")])
