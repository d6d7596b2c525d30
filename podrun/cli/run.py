"""``podrun run``, ``podrun prepare`` and ``podrun run-prepared`` (rkt's syntax).

    podrun run [run flags] IMAGE [app flags] [-- ARGS…] [--- IMAGE [app flags] [-- ARGS…]]…
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from podrun.cli import Globals
from podrun.errors import PodrunError

if TYPE_CHECKING:
    from podrun.pod.manifest import PodManifest

APP_FLAGS_HELP = """
\b
App flags (after an IMAGE, for that app):
  --exec PATH               command to run instead of the image's
  --name NAME               app name (default: from the image name)
  --user U / --group G      number or name from the image's /etc/passwd, /etc/group
  --supplementary-gids G,…  extra groups
  --working-dir DIR         working directory
  --environment K=V         environment entry (repeatable; beats --set-env)
  --mount volume=NAME,target=PATH
  --readonly-rootfs[=true]  read-only root filesystem
  --memory 128M --cpu 500m --pids-limit N
  --caps-retain CAP,… | --caps-remove CAP,…
  --seccomp mode=retain|remove,SYSCALL,…[,errno=ENAME]
  --no-new-privileges=false opt out of no_new_privs
  -- ARGS…                  replace the image's Cmd
  --- IMAGE …               next app of the pod
"""


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--stage1", default="default", show_default=True, help="Stage1 flavor: default or fly."),
        click.option("--hostname", default="", help="Pod hostname (default podrun-UUIDPREFIX)."),
        click.option("--net", default="none", show_default=True, help="Network: none (own netns, lo) or host."),
        click.option("--interactive", is_flag=True, help="Pass stdin and the terminal to the (single) app."),
        click.option("--volume", "volumes", multiple=True, metavar="NAME,kind=host|empty[,source=P][,readOnly=B]"),
        click.option("--set-env", "set_env", multiple=True, metavar="K=V", help="Environment for all apps."),
        click.option("--set-env-file", type=click.Path(dir_okay=False), help="File of K=V lines for all apps."),
        click.option("--dns", multiple=True, metavar="IP", help="Nameserver for /etc/resolv.conf."),
        click.option("--hosts-entry", "hosts_entries", multiple=True, metavar="IP=NAME", help="Extra /etc/hosts line."),
        click.option("--pull-policy", type=click.Choice(["new", "update", "never"]), default="new", show_default=True),
        click.option("--uuid-file-save", type=click.Path(dir_okay=False), help="Write the pod UUID to this file."),
        click.argument("args", nargs=-1, type=click.UNPROCESSED, required=True),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


SETTINGS = {"ignore_unknown_options": True, "allow_interspersed_args": False,
            "help_option_names": ["-h", "--help"]}


def _prepare(g: Globals, kw: dict[str, Any], phase: str) -> tuple[PodManifest, Path, int]:
    from podrun.image.api import FetchRequest, fetch
    from podrun.image.store import Store
    from podrun.pod import appflags
    from podrun.pod.layout import PodDirs
    from podrun.pod.prepare import ImageInfo, RunRequest, build_manifest, create_pod

    store = Store(g.data_dir)

    def resolve(image: str) -> ImageInfo:
        rec = fetch(store, FetchRequest(image, kw["pull_policy"], g.insecure))
        config = json.loads(store.read_blob(rec.config))
        names = store.names_of(rec.id)
        return ImageInfo(str(rec.id), names[0] if names else "app", config,
                         tuple(str(store.layer_rootfs(layer.diff_id)) for layer in rec.layers))

    req = RunRequest(
        apps=appflags.split_apps(list(kw["args"])), stage1=kw["stage1"], hostname=kw["hostname"], net=kw["net"],
        interactive=kw["interactive"], volumes=list(kw["volumes"]), set_env=list(kw["set_env"]),
        set_env_file=kw["set_env_file"], dns=list(kw["dns"]), hosts_entries=list(kw["hosts_entries"]),
    )
    manifest = build_manifest(req, resolve)
    pod_dir, lock_fd = create_pod(PodDirs(g.data_dir), manifest, phase)
    if kw["uuid_file_save"]:
        from podrun import fsutil

        fsutil.atomic_write(kw["uuid_file_save"], f"{manifest.uuid}\n".encode(), 0o644)
    return manifest, pod_dir, lock_fd


@click.command("run", context_settings=SETTINGS, epilog=APP_FLAGS_HELP)
@run_options
@click.pass_obj
def run_cmd(g: Globals, /, **kw: Any) -> None:
    """Run a pod of one or more apps; exits with the app's exit code (see podrun-run(1))."""
    from podrun.pod.prepare import exec_stage1

    manifest, pod_dir, lock_fd = _prepare(g, kw, "run")
    exec_stage1(pod_dir, manifest.stage1, lock_fd, g.debug)


@click.command("prepare", context_settings=SETTINGS, epilog=APP_FLAGS_HELP)
@run_options
@click.pass_obj
def prepare_cmd(g: Globals, /, **kw: Any) -> None:
    """Prepare a pod without running it; prints its UUID (run it with run-prepared)."""
    import os

    manifest, _, lock_fd = _prepare(g, kw, "prepared")
    os.close(lock_fd)
    click.echo(manifest.uuid)


@click.command("run-prepared")
@click.argument("uuid")
@click.pass_obj
def run_prepared_cmd(g: Globals, uuid: str) -> None:
    """Run a prepared pod (UUID or unique prefix)."""
    from podrun.errors import ConflictError
    from podrun.pod.layout import PodDirs, lock_pod
    from podrun.pod.manifest import MANIFEST, PodManifest
    from podrun.pod.prepare import exec_stage1

    dirs = PodDirs(g.data_dir)
    phase, full = dirs.find(uuid)
    if phase != "prepared":
        raise ConflictError(f"pod {full} is {phase}, not prepared")
    lock_fd = lock_pod(dirs.path("prepared", full), blocking=False)
    pod_dir = dirs.move(full, "prepared", "run")
    try:
        manifest = PodManifest.from_json((pod_dir / MANIFEST).read_bytes())
    except (OSError, ValueError, KeyError) as exc:
        raise PodrunError(f"pod {full}: unreadable manifest ({exc})") from None
    exec_stage1(pod_dir, manifest.stage1, lock_fd, g.debug)

