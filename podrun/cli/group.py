"""The click group of ``podrun``: the only user of click (with the verbs' modules).

Usage errors from click are mapped to podrun's usage exit code here; podrun's own failures go
through ``podrun.cli.guarded``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from podrun import __version__
from podrun.cli import guarded, make_globals
from podrun.cli.runflags import FLAG, GLOBAL_FLAGS, MULTIPLE, RunFlag
from podrun.errors import UsageError


class LazyGroup(click.Group):
    """Imports a verb's module only when that verb runs (keeps `podrun run` start-up lean)."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module, attr = self.lazy[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, cmd_name)


COMMANDS = {
    "fetch": "podrun.cli.fetch:fetch_cmd",
    "image": "podrun.cli.image:image_group",
    "run": "podrun.cli.run:run_cmd",
    "prepare": "podrun.cli.run:prepare_cmd",
    "run-prepared": "podrun.cli.run:run_prepared_cmd",
    "list": "podrun.cli.pods:list_cmd",
    "status": "podrun.cli.pods:status_cmd",
    "stop": "podrun.cli.pods:stop_cmd",
    "rm": "podrun.cli.pods:rm_cmd",
    "gc": "podrun.cli.pods:gc_cmd",
    "cat-manifest": "podrun.cli.pods:cat_manifest_cmd",
    "enter": "podrun.cli.pods:enter_cmd",
    "logs": "podrun.cli.pods:logs_cmd",
    "generate": "podrun.cli.generate:generate_group",
    "trust": "podrun.cli.trust:trust_group",
    "version": "podrun.cli.version:version_cmd",
}


def click_options(flags: Sequence[RunFlag]) -> list[click.Option]:
    """The click options of a runflags table: they make the help text (and, for the global
    options, the parsing: the fast path reads the same table)."""
    options = []
    for flag in flags:
        kwargs: dict[str, Any] = {"help": flag.help, "metavar": flag.metavar, "envvar": flag.envvar}
        if flag.kind == FLAG:
            kwargs["is_flag"] = True
        else:
            kwargs["default"] = flag.default
            kwargs["show_default"] = flag.show_default
            kwargs["multiple"] = flag.kind == MULTIPLE
        if flag.choices:
            kwargs["type"] = click.Choice(list(flag.choices))
        elif flag.file:
            kwargs["type"] = click.Path(dir_okay=False)
        options.append(click.Option([flag.name, flag.dest], **kwargs))
    return options


@click.group(
    cls=LazyGroup, lazy=COMMANDS, params=click_options(GLOBAL_FLAGS),
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="podrun")
@click.pass_context
def cli(ctx: click.Context, data_dir: str, debug: bool, insecure_options: str, signature_policy: str,
        registries_d: str) -> None:
    """podrun: a daemonless pod runner for Linux (OCI images, namespaces, cgroups, systemd)."""
    ctx.obj = make_globals(data_dir, debug, insecure_options, signature_policy, registries_d)


def click_main(args: list[str], debug: bool) -> None:
    """Run the click group on *args*, mapping click's own failures to exit codes."""

    def invoke() -> None:
        try:
            cli.main(args=args, prog_name="podrun", standalone_mode=False)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            sys.stderr.write("podrun: aborted\n")
            sys.exit(130)
        except click.ClickException as exc:
            # Bad flags and arguments: podrun's usage code, so callers can tell it from an app's.
            sys.stderr.write(f"podrun: {exc.format_message()}\n")
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                sys.stderr.write(f"Try '{exc.ctx.command_path} --help' for help.\n")
            sys.exit(UsageError.exit_code)

    guarded(invoke, debug)
