"""The flags of ``podrun run``/``prepare`` as data, and the one parser of them.

``RUN_FLAGS`` is the single declaration of the run flags and ``parse_run`` the single parser:
the click commands of ``podrun.cli.run`` (and ``generate unit``) take their help text from the
table and hand their argv to ``parse_run``; the fast path of ``podrun.cli.main`` calls the same
``parse_run`` without importing click.  So both agree by construction.  The fast path takes
only what parses; help and every malformed argv go to click, which shows the help or reports
``parse_run``'s error with its usage hint.  ``GLOBAL_FLAGS`` does the same for the options
before the verb: the click group's options are made from it and ``parse_globals`` reads it.

The grammar is click's for a command with ``ignore_unknown_options`` and no interspersed
arguments: ``--flag VALUE`` or ``--flag=VALUE`` (a value may start with ``-``), ``--`` ends the
flags, ``-h``/``--help`` asks for help, and the first argument that is not a known flag starts
the image arguments (an unknown ``-x`` there is refused later, by ``split_apps``).
"""

from __future__ import annotations

import os

from podrun.cli import DEFAULT_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

VALUE, MULTIPLE, FLAG = "value", "multiple", "flag"
HELP_NAMES = ("-h", "--help")


class RunFlag:
    """One flag: its name, the keyword the command receives, its kind and its help."""

    __slots__ = ("choices", "default", "dest", "envvar", "file", "help", "kind", "metavar", "name", "show_default")

    def __init__(self, name: str, dest: str, kind: str, default: Any = None, help: str | None = None,
                 metavar: str | None = None, *, choices: tuple[str, ...] = (), show_default: bool = False,
                 file: bool = False, envvar: str | None = None) -> None:
        self.name = name                  # "--hostname"
        self.dest = dest                  # keyword the command receives
        self.kind = kind                  # VALUE, MULTIPLE (repeatable, a tuple) or FLAG (boolean)
        self.default = default
        self.help = help
        self.metavar = metavar
        self.choices = choices
        self.show_default = show_default
        self.file = file                  # a file path: a directory is refused
        self.envvar = envvar              # a non-empty value of this variable replaces the default

    def __repr__(self) -> str:
        return f"RunFlag({self.name!r})"


class RunArgsError(Exception):
    """A malformed run flag; the message is the one click gives for the same mistake."""


# The global options (before the verb); the click group adds --version and --help.
GLOBAL_FLAGS = (
    RunFlag("--dir", "data_dir", VALUE, DEFAULT_DIR, "Data directory (store, pods, state); env PODRUN_DIR.", "DIR",
            show_default=True, envvar="PODRUN_DIR"),
    RunFlag("--debug", "debug", FLAG, False, "Verbose logs and tracebacks on errors."),
    RunFlag("--insecure-options", "insecure_options", VALUE, "none",
            "Comma-separated: http (plain HTTP to registries), tls (no TLS verification), image (no "
            "signature policy: the image is marked so), all.", "LIST"),
    RunFlag("--signature-policy", "signature_policy", VALUE, "",
            "containers-policy.json(5) to fetch images under (default: ~/.config/containers/policy.json, "
            "else /etc/containers/policy.json); env PODRUN_SIGNATURE_POLICY.", "FILE",
            envvar="PODRUN_SIGNATURE_POLICY", file=True),
    RunFlag("--registries.d", "registries_d", VALUE, "",
            "containers-registries.d(5) directory: where signatures are (default: ~/.config/containers/"
            "registries.d, else /etc/containers/registries.d); env PODRUN_REGISTRIES_D.", "DIR",
            envvar="PODRUN_REGISTRIES_D"),
)
RUN_FLAGS = (
    RunFlag("--stage1", "stage1", VALUE, "default", "Stage1 flavor: default, oci (each app through an OCI "
            "runtime, --runtime) or fly.", show_default=True),
    RunFlag("--runtime", "runtime", VALUE, None, "OCI runtime of --stage1 oci: crun (default), runc, runsc, "
            "or a path.", "NAME|PATH"),
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
    RunFlag("--pid-file", "pid_file", VALUE, None, "Write the supervisor's PID (that of podrun run) to this file, "
            "removed when the pod ends (start-stop-daemon, OpenRC).", "FILE", file=True),
    RunFlag("--ready-fd", "ready_fd", VALUE, None, "run: write a newline to this open descriptor (>= 3) and close "
            "it once the apps run, or when the app sends READY=1 with --notify app (s6's notification-fd).", "N"),
)


def _split(arg: str) -> tuple[str, str | None]:
    name, eq, value = arg.partition("=")
    return (name, value) if eq else (arg, None)


def parse_globals(args: list[str]) -> tuple[dict[str, Any], int] | None:
    """Global options before the verb: ({data_dir, debug, insecure_options}, index of the verb),
    or None for anything else there (help, version, an unknown or incomplete option)."""
    by_name = {f.name: f for f in GLOBAL_FLAGS}
    out: dict[str, Any] = {f.dest: (f.envvar and os.environ.get(f.envvar)) or f.default for f in GLOBAL_FLAGS}
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, value = _split(args[i])
        flag = by_name.get(name)
        if flag is None:
            return None
        if flag.kind == FLAG:
            if value is not None:
                return None
            out[flag.dest] = True
        else:
            if value is None:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            out[flag.dest] = value
        i += 1
    return out, i


def wants_debug(args: list[str]) -> bool:
    """Whether the global options (before the verb) ask for ``--debug``: a ``--debug`` among an
    app's arguments (``run img -- --debug``) is the app's."""
    parsed = parse_globals(args)
    return parsed is not None and bool(parsed[0]["debug"])


def parse_run(args: list[str], flags: Sequence[RunFlag] = RUN_FLAGS) -> dict[str, Any] | None:
    """The keywords of ``run``/``prepare`` for *args* (what follows the verb): every flag's
    ``dest`` and ``args``, the image arguments.  None when help is asked for; RunArgsError for
    a malformed flag or no image."""
    by_name = {f.name: f for f in flags}
    kw: dict[str, Any] = {f.dest: f.default for f in flags}
    wants_help = False
    bad_value: str | None = None  # click checks values after it has seen every flag (and help)
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if arg in HELP_NAMES:
            wants_help = True
            i += 1
            continue
        name, value = _split(arg)
        flag = by_name.get(name)
        if flag is None:  # not ours: the first image argument (split_apps refuses it if it is no image)
            break
        i += 1
        if flag.kind == FLAG:
            if value is not None:
                raise RunArgsError(f"Option '{name}' does not take a value.")
            kw[flag.dest] = True
            continue
        if value is None:
            if i >= len(args):
                raise RunArgsError(f"Option '{name}' requires an argument.")
            value = args[i]
            i += 1
        if bad_value is None:
            bad_value = _check_value(flag, value)
        kw[flag.dest] = (*kw[flag.dest], value) if flag.kind == MULTIPLE else value
    if wants_help:
        return None
    if bad_value is not None:
        raise RunArgsError(bad_value)
    if i >= len(args):
        raise RunArgsError("Missing argument 'ARGS...'.")
    kw["args"] = tuple(args[i:])
    return kw


def _check_value(flag: RunFlag, value: str) -> str | None:
    """What is wrong with *value* for *flag*, in click's words, or None."""
    if flag.choices and value not in flag.choices:
        allowed = ", ".join(repr(c) for c in flag.choices)
        return f"Invalid value for '{flag.name}': {value!r} is not one of {allowed}."
    if flag.file and os.path.isdir(value):
        return f"Invalid value for '{flag.name}': File '{value}' is a directory."
    return None


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
        try:
            kw = parse_run(rest)
        except RunArgsError:
            return None  # click reports it, with its usage hint
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
