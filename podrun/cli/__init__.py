"""The ``podrun`` command line.

Each verb lives in its own module and only parses, calls the library and prints.  Errors are
printed here, as one line (plus a hint) on stderr, with the class's exit code; ``--debug``
adds the traceback.

This package module stays free of click: ``main`` first offers the command line to the fast
path of ``podrun.cli.runflags`` (``run`` and ``run-prepared`` with well-formed flags: a pod's
start is not kept waiting ~25 ms for click to import); anything else, help and every error
included, goes to the click group in ``podrun.cli.group``, which owns all messages.
"""

from __future__ import annotations

import sys

from podrun.errors import PodrunError, UsageError
from podrun.stage0 import Globals

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

INSECURE_WORDS = ("http", "tls", "image", "all")
DEFAULT_DIR = "/var/lib/podrun"


def parse_insecure(text: str) -> frozenset[str]:
    words = frozenset(w.strip() for w in text.split(",") if w.strip())
    unknown = words - set(INSECURE_WORDS) - {"none"}
    if unknown:
        raise UsageError(
            f"invalid --insecure-options {text!r}: unknown {', '.join(sorted(unknown))} "
            f"(known: {', '.join(INSECURE_WORDS)})"
        )
    if "all" in words:
        return frozenset({"http", "tls", "image"})
    return words - {"none"}


def make_globals(data_dir: str, debug: bool, insecure_options: str, signature_policy: str = "",
                 registries_d: str = "") -> Globals:
    import os

    from podrun import log

    log.set_debug(debug)
    return Globals(os.path.abspath(data_dir), debug, parse_insecure(insecure_options),
                   os.path.abspath(signature_policy) if signature_policy else None,
                   os.path.abspath(registries_d) if registries_d else None)


def guarded(action: Callable[[], None], debug: bool) -> None:
    """Run *action*, turning podrun's failures into one line on stderr and an exit code."""
    try:
        action()
    except PodrunError as exc:
        if debug:
            _traceback()
        sys.stderr.write(f"podrun: {exc}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("podrun: interrupted\n")
        sys.exit(130)
    except OSError as exc:
        if debug:
            _traceback()
        where = f" ({exc.filename})" if exc.filename else ""
        sys.stderr.write(f"podrun: {exc.strerror or exc}{where}\n")
        sys.exit(PodrunError.exit_code)
    except Exception as exc:
        if debug:
            _traceback()
        sys.stderr.write(f"podrun: internal error: {type(exc).__name__}: {exc}\n")
        sys.stderr.write("hint: rerun with --debug and report the traceback\n")
        sys.exit(PodrunError.exit_code)


def _traceback() -> None:
    import traceback

    traceback.print_exc()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    from podrun.cli import runflags

    debug = runflags.wants_debug(args)
    fast = runflags.fast_path(args)
    if fast is not None:
        guarded(fast, debug)
        return
    from podrun.cli.group import click_main

    click_main(args, debug)
