"""The click-free fast path of ``podrun run`` parses exactly as click does, or declines."""

from __future__ import annotations

from typing import Any

import click
import pytest

from podrun.cli import group, runflags
from podrun.cli import run as run_module
from podrun.stage0 import launch

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
    ["run", "--log-max-size", "-1", "img"], ["run", "--log-max-size=16M", "img"],
]
DECLINED = [
    [], ["--help"], ["--version"], ["run"], ["run", "--help"], ["run", "-h", "img"], ["run", "--", "img"],
    ["run", "--pull-policy", "bad", "img"], ["run", "--interactive=yes", "img"], ["run", "--bogus", "img"],
    ["run", "--hostname"], ["run", "--set-env-file", "/tmp", "img"], ["--dir"], ["-x", "run", "img"],
    ["list"], ["prepare", "img"], ["run-prepared"], ["run-prepared", "a", "b"], ["run-prepared", "--help"],
]


def _click_parse(args: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """What click hands the group callback and the run command for *args*."""
    seen: dict[str, Any] = {}

    def fake_run(g: Any, kw: dict[str, Any]) -> None:
        seen["run"] = kw

    def fake_globals(data_dir: str, debug: bool, insecure_options: str) -> None:
        seen["globals"] = {"data_dir": data_dir, "debug": debug, "insecure_options": insecure_options}

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(launch, "run_pod", fake_run)
        mp.setattr(group, "make_globals", fake_globals)
        group.cli.main(args=args, prog_name="podrun", standalone_mode=False)
    return seen["globals"], seen["run"]


@pytest.mark.parametrize("args", ACCEPTED)
def test_fast_path_agrees_with_click(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODRUN_DIR", raising=False)
    parsed = runflags.parse_globals(args)
    assert parsed is not None
    opts, i = parsed
    assert args[i] == "run"
    kw = runflags.parse_run(args[i + 1:])
    assert kw is not None
    assert runflags.fast_path(args) is not None
    click_globals, click_kw = _click_parse(args)
    assert opts == click_globals
    assert kw == click_kw


@pytest.mark.parametrize("args", DECLINED)
def test_fast_path_declines_what_it_is_not_sure_of(args: list[str]) -> None:
    assert runflags.fast_path(args) is None


def test_podrun_dir_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODRUN_DIR", "/srv/podrun")
    parsed = runflags.parse_globals(["run", "img"])
    assert parsed is not None and parsed[0]["data_dir"] == "/srv/podrun"
    assert _click_parse(["run", "img"])[0]["data_dir"] == "/srv/podrun"


def test_run_prepared_fast_path() -> None:
    assert runflags.fast_path(["--dir", "/tmp/d", "run-prepared", "0123abcd"]) is not None


def test_click_options_come_from_the_table() -> None:
    names = {p.opts[0] for p in run_module.run_cmd.params if isinstance(p, click.Option)}
    assert names == {f.name for f in runflags.RUN_FLAGS}
