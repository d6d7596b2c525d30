"""One parser for ``podrun run``: ``runflags.parse_run`` serves the click commands and the
click-free fast path alike; its grammar is click's own for the options made from the table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from podrun.cli import group, runflags
from podrun.cli import run as run_module
from podrun.stage0 import launch
from tests.conftest import ROOT

ACCEPTED = [
    ["run", "img"],
    ["run", "img", "--exec", "/bin/true", "--", "-x"],
    ["run", "--net", "host", "--hostname=web", "--interactive", "img", "--", "a", "b"],
    ["run", "--volume", "v,kind=empty", "--volume=w,kind=host,source=/tmp", "--set-env", "A=1=2", "img"],
    ["run", "--dns", "1.1.1.1", "--hosts-entry", "10.0.0.1=db", "--pull-policy", "never", "img", "---", "img2"],
    ["run", "--stage1", "fly", "--set-env-file", "/etc/hostname", "--uuid-file-save", "/tmp/u", "img"],
    ["--dir", "/tmp/d", "--debug", "run", "img"],
    ["--dir=/tmp/d", "--insecure-options=http", "run", "img"],
    ["run", "--hostname", "-x", "img"],  # a value that looks like a flag is still the value
    ["run", "--hostname", "--help", "img"], ["run", "--hostname=", "img"], ["run", "--net=", "img"],
    ["run", "--log-max-size", "-1", "img"], ["run", "--log-max-size=16M", "img"],
    ["run", "--", "img"], ["run", "--hostname", "a", "--", "--", "img"], ["run", "--net", "x", "--", "--exec", "a"],
    ["run", "--bogus", "img"], ["run", "-x", "img"], ["run", "-", "img"],  # the image arguments (split_apps refuses)
    ["run", "--port", "1", "--port=2", "img", "--port", "3"], ["run", "--stage1", "fly", "--stage1", "default", "img"],
    ["run", "--interactive", "--interactive", "img"], ["run", "img", "--help"], ["run", "img", "--", "--debug"],
]
# argv after "run" -> the message click gives (and parse_run raises), or None for help.
REFUSED: list[tuple[list[str], str | None]] = [
    ([], "Missing argument 'ARGS...'."),
    (["--interactive"], "Missing argument 'ARGS...'."),
    (["--hostname"], "Option '--hostname' requires an argument."),
    (["--pull-policy", "bad", "img"], "Invalid value for '--pull-policy': 'bad' is not one of 'new', 'update', 'never'."),
    (["--notify=NEW", "img"], "Invalid value for '--notify': 'NEW' is not one of 'ready', 'app'."),
    (["--interactive=yes", "img"], "Option '--interactive' does not take a value."),
    (["--set-env-file", "/tmp", "img"], "Invalid value for '--set-env-file': File '/tmp' is a directory."),
    (["--uuid-file-save=/", "img"], "Invalid value for '--uuid-file-save': File '/' is a directory."),
    (["--help"], None), (["-h", "img"], None), (["--net", "none", "--help", "img"], None),
    (["--pull-policy", "bad", "--help", "img"], None),  # click shows help before it checks values
]
DECLINED = [
    [], ["--help"], ["--version"], ["--dir"], ["-x", "run", "img"], ["list"], ["prepare", "img"],
    ["run-prepared"], ["run-prepared", "a", "b"], ["run-prepared", "--help"],
    *(["run", *args] for args, _ in REFUSED),
]


def _click_oracle(args: list[str]) -> dict[str, Any] | None:
    """What click's own parser makes of *args* with the options made from the table (the
    grammar parse_run follows): a plain click command, not podrun's; None when it shows help."""
    seen: dict[str, Any] = {}
    command = click.Command("run", params=[*group.click_options(runflags.RUN_FLAGS),
                                           click.Argument(["args"], nargs=-1, type=click.UNPROCESSED, required=True)],
                            callback=lambda **kw: seen.update(kw), context_settings=run_module.SETTINGS)
    command.main(args=args, prog_name="run", standalone_mode=False)
    return seen or None


def _podrun_parse(args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What podrun's click group hands the group callback and the run command for *args*."""
    seen: dict[str, Any] = {}

    def fake_run(g: Any, kw: dict[str, Any]) -> None:
        seen["run"] = kw

    def fake_globals(data_dir: str, debug: bool, insecure_options: str, signature_policy: str,
                     registries_d: str) -> None:
        seen["globals"] = {"data_dir": data_dir, "debug": debug, "insecure_options": insecure_options,
                           "signature_policy": signature_policy, "registries_d": registries_d}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launch, "run_pod", fake_run)
        mp.setattr(group, "make_globals", fake_globals)
        group.cli.main(args=args, prog_name="podrun", standalone_mode=False)
    return seen["globals"], seen["run"]


@pytest.mark.parametrize("args", ACCEPTED)
def test_fast_path_click_and_the_grammar_agree(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODRUN_DIR", raising=False)
    parsed = runflags.parse_globals(args)
    assert parsed is not None
    opts, i = parsed
    assert args[i] == "run"
    kw = runflags.parse_run(args[i + 1:])
    assert kw is not None
    assert runflags.fast_path(args) is not None
    assert _podrun_parse(args) == (opts, kw)
    assert _click_oracle(args[i + 1:]) == kw


@pytest.mark.parametrize(("args", "message"), REFUSED)
def test_malformed_flags_are_refused_in_clicks_words(args: list[str], message: str | None) -> None:
    if message is None:
        assert runflags.parse_run(args) is None
        assert _click_oracle(args) is None
        return
    with pytest.raises(runflags.RunArgsError) as caught:
        runflags.parse_run(args)
    assert str(caught.value) == message
    with pytest.raises(click.UsageError) as by_click:
        _click_oracle(args)
    assert by_click.value.format_message() == message


@pytest.mark.parametrize("args", DECLINED)
def test_fast_path_declines_help_and_errors(args: list[str]) -> None:
    assert runflags.fast_path(args) is None


def test_podrun_dir_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODRUN_DIR", "/srv/podrun")
    parsed = runflags.parse_globals(["run", "img"])
    assert parsed is not None and parsed[0]["data_dir"] == "/srv/podrun"
    assert _podrun_parse(["run", "img"])[0]["data_dir"] == "/srv/podrun"


def test_run_prepared_fast_path() -> None:
    assert runflags.fast_path(["--dir", "/tmp/d", "run-prepared", "0123abcd"]) is not None


def test_click_options_come_from_the_table() -> None:
    for command, flags in ((run_module.run_cmd, runflags.RUN_FLAGS), (run_module.prepare_cmd, runflags.RUN_FLAGS)):
        names = [p.opts[0] for p in command.params if isinstance(p, click.Option)]
        assert names == [f.name for f in flags]
        assert isinstance(command, run_module.TableCommand)


def test_debug_is_a_global_option_only() -> None:
    assert runflags.wants_debug(["--debug", "run", "img"])
    assert runflags.wants_debug(["--dir", "/d", "--debug", "list"])
    assert not runflags.wants_debug(["run", "img", "--", "--debug"])
    assert not runflags.wants_debug(["--dir", "--debug", "run", "img"])  # --debug is the data dir there
    assert not runflags.wants_debug(["list", "--debug"])


@pytest.mark.parametrize("where", [["run", "--pull-policy", "never", "nosuchimage", "--", "--debug"],
                                   ["run", "--pull-policy", "never", "nosuchimage", "--exec", "--debug"]])
def test_an_apps_debug_argument_does_not_turn_on_tracebacks(tmp_path: Path, where: list[str]) -> None:
    res = subprocess.run([sys.executable, "-m", "podrun", "--dir", str(tmp_path / "d"), *where],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 252, res.stderr
    assert res.stderr.startswith("podrun: ") and "nosuchimage" in res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    with_debug = subprocess.run([sys.executable, "-m", "podrun", "--dir", str(tmp_path / "d"), "--debug", *where],
                                capture_output=True, text=True, cwd=ROOT)
    assert with_debug.returncode == 252 and "Traceback" in with_debug.stderr  # the check above can fail


def test_click_reports_a_malformed_run_flag_with_the_usage_hint(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "podrun", "--dir", str(tmp_path), "run", "--pull-policy", "x", "img"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 253
    assert res.stderr.splitlines() == [
        "podrun: Invalid value for '--pull-policy': 'x' is not one of 'new', 'update', 'never'.",
        "Try 'podrun run --help' for help."]


def test_global_options_come_from_the_table() -> None:
    names = [p.opts[0] for p in group.cli.params if isinstance(p, click.Option)]
    assert names == [f.name for f in runflags.GLOBAL_FLAGS] + ["--version"]  # and click's own --help


@pytest.mark.parametrize("args", [["--debug", "--debug", "run", "img"], ["--insecure-options", "--dir", "run", "img"],
                                  ["--dir", "a", "--dir=b", "run", "img"]])
def test_global_options_agree_with_click(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODRUN_DIR", "")  # empty: the default, for both
    parsed = runflags.parse_globals(args)
    assert parsed is not None
    assert _podrun_parse(args)[0] == parsed[0]
