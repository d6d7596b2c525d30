"""The flags of ``podrun run``/``prepare`` as data, and a click-free fast path for starting pods.

``RUN_FLAGS`` is the single declaration of the run flags: ``podrun.cli.run`` builds its click
options from it, and ``fast_path`` parses the same flags without importing click.  The fast path
only accepts what it is sure click would accept with the same result: the global options, the
verb ``run`` or ``run-prepared``, run flags as ``--flag VALUE`` or ``--flag=VALUE``, then the
image and app arguments.  Anything else (help, version, unknown or malformed flags, a missing
value) returns ``None`` and goes to click, so every message and exit code stays click's.
``tests/unit/test_runflags.py`` checks both parsers agree.
"""

from __future__ import annotations

import os

from podrun.lean import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Final

VALUE, MULTIPLE, FLAG = "value", "multiple", "flag"


class RunFlag(Record):
    name: Final[str]  # "--hostname"
    dest: Final[str]  # keyword the command receives
    kind: Final[str]  # VALUE, MULTIPLE (repeatable, a tuple) or FLAG (boolean)
    default: Final[Any]
    help: Final[str | None]
    metavar: Final[str | None]
    choices: Final[tuple[str, ...]]
    show_default: Final[bool]
    file: Final[bool]  # a file path (click.Path(dir_okay=False)): a directory is refused

    __slots__ = ("name", "dest", "kind", "default", "help", "metavar", "choices", "show_default", "file")

    def __init__(
        self, name: str,
        dest: str,
        kind: str,
        default: Any = None,
        help: str | None = None,
        metavar: str | None = None,
        choices: tuple[str, ...] = (),
        show_default: bool = False,
        file: bool = False,
    ) -> None:
        self.name = name
        self.dest = dest
        self.kind = kind
        self.default = default
        self.help = help
        self.metavar = metavar
        self.choices = choices
        self.show_default = show_default
        self.file = file


RUN_FLAGS = (
    RunFlag("--stage1", "stage1", VALUE, "default", "Stage1 flavor: default or fly.", show_default=True),
    RunFlag("--hostname", "hostname", VALUE, "", "Pod hostname (default podrun-UUIDPREFIX)."),
    RunFlag("--net", "net", VALUE, "default",
            "Network: default (bridge + NAT), none (lo only), host, or CNI networks NAME[:IP=A][,NAME…].",
            show_default=True),
    RunFlag("--port", "ports", MULTIPLE, (), "Forward a host port (default network).",
            "PODPORT|NAME:[HOSTIP:]HOSTPORT[/tcp|udp]"),
    RunFlag("--interactive", "interactive", FLAG, False, "Pass stdin to the (single) app; a terminal on stdin "
            "becomes a new pty of the pod's own, relayed (the caller's terminal never enters the pod)."),
    RunFlag("--volume", "volumes", MULTIPLE, (), metavar="NAME,kind=host|empty[,source=P][,readOnly=B]"),
    RunFlag("--set-env", "set_env", MULTIPLE, (), "Environment for all apps.", "K=V"),
    RunFlag("--set-env-file", "set_env_file", VALUE, None, "File of K=V lines for all apps.", file=True),
    RunFlag("--dns", "dns", MULTIPLE, (), "Nameserver for /etc/resolv.conf; host copies the host's, none "
            "keeps the image's.", "IP|host|none"),
    RunFlag("--dns-search", "dns_search", MULTIPLE, (), "Search domain for /etc/resolv.conf.", "DOMAIN"),
    RunFlag("--dns-opt", "dns_opts", MULTIPLE, (), "Option line entry for /etc/resolv.conf.", "OPT"),
    RunFlag("--hosts-entry", "hosts_entries", MULTIPLE, (), "Extra /etc/hosts line; host copies the host's.",
            "IP=NAME|host"),
    RunFlag("--pull-policy", "pull_policy", VALUE, "new", choices=("new", "update", "never"), show_default=True),
    RunFlag("--notify", "notify", VALUE, None, "Under systemd (Type=notify): ready sends READY=1 once the "
            "apps run (default); app lets the app notify (image label io.podrun.notify=app does too).",
            choices=("ready", "app")),
    RunFlag("--register", "register", FLAG, False, "On a systemd host: run the pod in its own transient "
            "scope podrun-UUID.scope (systemctl status/stop)."),
    RunFlag("--log-max-size", "log_max_size", VALUE, "8M", "Rotate each app's log file in the pod dir past "
            "SIZE (kept: the newest SIZE to 2xSIZE bytes); -1: no limit.", "SIZE", show_default=True),
    RunFlag("--uuid-file-save", "uuid_file_save", VALUE, None, "Write the pod UUID to this file.", file=True),
)
_BY_NAME = {f.name: f for f in RUN_FLAGS}
_GLOBAL_VALUE = {"--dir": "data_dir", "--insecure-options": "insecure_options"}


def _split(arg: str) -> tuple[str, str | None]:
    name, eq, value = arg.partition("=")
    return (name, value) if eq else (arg, None)


def parse_globals(args: list[str]) -> tuple[dict[str, Any], int] | None:
    """Global options before the verb: ({data_dir, debug, insecure_options}, index of the verb)."""
    from podrun.cli import DEFAULT_DIR

    out: dict[str, Any] = {"data_dir": os.environ.get("PODRUN_DIR") or DEFAULT_DIR, "debug": False,
                           "insecure_options": "none"}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, value = _split(args[i])
        if name == "--debug" and value is None:
            out["debug"] = True
        elif name in _GLOBAL_VALUE:
            if value is None:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            out[_GLOBAL_VALUE[name]] = value
        else:
            return None
        i += 1
    return out, i


def parse_run(args: list[str]) -> dict[str, Any] | None:
    """The keywords click would pass to ``run``/``prepare`` for *args* (after the verb), or None."""
    kw: dict[str, Any] = {f.dest: f.default for f in RUN_FLAGS}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, value = _split(args[i])
        flag = _BY_NAME.get(name)
        if flag is None:  # help, "--", a short or unknown option: click decides
            return None
        if flag.kind == FLAG:
            if value is not None:
                return None
            kw[flag.dest] = True
            i += 1
            continue
        if value is None:
            if i + 1 >= len(args):
                return None
            i += 1
            value = args[i]
        if (flag.choices and value not in flag.choices) or (flag.file and os.path.isdir(value)):
            return None
        if flag.kind == MULTIPLE:
            kw[flag.dest] = (*kw[flag.dest], value)
        else:
            kw[flag.dest] = value
        i += 1
    if i >= len(args):
        return None  # no IMAGE: click's "missing argument" message
    kw["args"] = tuple(args[i:])
    return kw


def fast_path(args: list[str]) -> Callable[[], None] | None:
    """The action for ``podrun [globals] run …`` or ``run-prepared UUID``, or None (use click)."""
    parsed = parse_globals(args)
    if parsed is None:
        return None
    opts, i = parsed
    if i >= len(args):
        return None
    verb, rest = args[i], args[i + 1:]
    if verb == "run":
        kw = parse_run(rest)
        if kw is None:
            return None

        def run() -> None:
            from podrun.cli import make_globals
            from podrun.stage0 import launch

            launch.run_pod(make_globals(**opts), kw)

        return run
    if verb == "run-prepared" and len(rest) == 1 and not rest[0].startswith("-"):
        def run_prepared() -> None:
            from podrun.cli import make_globals
            from podrun.stage0 import launch

            launch.run_prepared(make_globals(**opts), rest[0])

        return run_prepared
    return None
