"""``podrun run``, ``podrun prepare`` and ``podrun run-prepared`` (rkt's syntax).

    podrun run [run flags] IMAGE [app flags] [-- ARGS…] [--- IMAGE [app flags] [-- ARGS…]]…
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from podrun.cli import runflags
from podrun.cli.group import click_options
from podrun.cli.runflags import RUN_FLAGS, RunFlag
from podrun.stage0 import Globals, launch

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
  --stop-signal SIGNAL      what a stop request sends it (default: the image's StopSignal, else TERM)
  -- ARGS…                  replace the image's Cmd
  --- IMAGE …               next app of the pod
"""


class TableCommand(click.Command):
    """A command whose flags are a runflags table: click shows the help (its options are made
    from the table) and reports errors; ``runflags.parse_run`` parses the argv, for click and
    for the fast path alike."""

    def __init__(self, *args: Any, flags: Sequence[RunFlag] = RUN_FLAGS, **kwargs: Any) -> None:
        self.flags = tuple(flags)
        kwargs.setdefault("context_settings", SETTINGS)
        kwargs.setdefault("epilog", APP_FLAGS_HELP)
        params = [*click_options(self.flags), click.Argument(["args"], nargs=-1, type=click.UNPROCESSED,
                                                               required=True)]
        kwargs["params"] = [*kwargs.get("params", ()), *params]
        super().__init__(*args, **kwargs)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            kw = runflags.parse_run(args, self.flags)
        except runflags.RunArgsError as exc:
            if ctx.resilient_parsing:  # shell completion of a half-typed line: no error, no help
                return []
            raise click.UsageError(str(exc), ctx) from None
        if kw is None and ctx.resilient_parsing:
            return []
        if kw is None:
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit()
        ctx.params.update(kw)
        ctx.args = []
        return []


SETTINGS = {"ignore_unknown_options": True, "allow_interspersed_args": False,
            "help_option_names": list(runflags.HELP_NAMES)}


@click.command("run", cls=TableCommand)
@click.pass_obj
def run_cmd(g: Globals, /, **kw: Any) -> None:
    """Run a pod of one or more apps (several: output lines tagged 'NAME | '); exits with the app's exit
    code (see podrun-run(1))."""
    launch.run_pod(g, kw)


@click.command("prepare", cls=TableCommand)
@click.pass_obj
def prepare_cmd(g: Globals, /, **kw: Any) -> None:
    """Prepare a pod without running it; prints its UUID (run it with run-prepared)."""
    import os

    manifest, _, lock_fd = launch.prepare_pod(g, kw, "prepared")
    os.close(lock_fd)
    click.echo(manifest.uuid)


@click.command("run-prepared")
@click.argument("uuid")
@click.pass_obj
def run_prepared_cmd(g: Globals, uuid: str) -> None:
    """Run a prepared pod (UUID or unique prefix)."""
    launch.run_prepared(g, uuid)
