"""The stage contract (podrun.abi, man/podrun-stage1.7): what stage0 builds, stage1 parses back
exactly; anything else, and a flavor of another ABI, is refused with one line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from podrun import abi
from podrun.errors import NotFoundError
from podrun.stage0.prepare import entrypoint, stages_dir

ENTRY = Path("/stages/default/run")


@pytest.mark.parametrize("debug", [False, True])
def test_run_argv_round_trip(debug: bool) -> None:
    argv = abi.run_argv(ENTRY, abi.RunArgs("/d/pods/run/u", debug))
    assert argv[:4] == [sys.executable, "-I", "-S", str(ENTRY)]
    parsed = abi.parse_run_argv(argv[4:])
    assert (parsed.pod_dir, parsed.debug) == ("/d/pods/run/u", debug)


@pytest.mark.parametrize("command", [[], ["/bin/sh", "-c", "echo --debug -- --app x"], ["--", "--pod-dir"]])
def test_enter_argv_round_trip(command: list[str]) -> None:
    argv = abi.enter_argv(ENTRY, abi.EnterArgs("/d/pods/run/u", "web", command))
    parsed = abi.parse_enter_argv(argv[4:])
    assert (parsed.pod_dir, parsed.app, parsed.command) == ("/d/pods/run/u", "web", command)


@pytest.mark.parametrize("argv", [
    [], ["--pod-dir"], ["--pod-dir", ""], ["/d"], ["--debug", "--pod-dir", "/d"], ["--pod-dir", "/d", "--verbose"],
    ["--pod-dir", "/d", "--debug", "--debug"], ["--pod-dir", "/d", "--", "--debug"],
])
def test_run_argv_outside_the_contract_is_refused(argv: list[str]) -> None:
    with pytest.raises(abi.AbiError, match=r"stage1 run: arguments .* \(ABI 1\)") as err:
        abi.parse_run_argv(argv)
    assert err.value.exit_code == 254 and "\n" not in str(err.value)


@pytest.mark.parametrize("argv", [
    ["--pod-dir", "/d", "--app", "web"], ["--pod-dir", "/d", "--app", "", "--"], ["--app", "web", "--pod-dir", "/d", "--"],
    ["--pod-dir", "/d", "--app", "web", "sh"],
])
def test_enter_argv_outside_the_contract_is_refused(argv: list[str]) -> None:
    with pytest.raises(abi.AbiError, match="stage1 enter: arguments"):
        abi.parse_enter_argv(argv)


def test_stage1_env_names_the_data_dir_and_hands_over_only_the_given_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(abi.ENV_LOCK_FD, "9")  # inherited from whoever ran stage0: never passed on
    monkeypatch.chdir("/tmp")
    env = abi.stage1_env("rel/data")
    assert env[abi.ENV_DIR] == "/tmp/rel/data" and abi.ENV_LOCK_FD not in env
    assert Path(env[abi.ENV_PYTHONPATH], "podrun", "abi.py").is_file()
    assert abi.stage1_env("/data", 5)[abi.ENV_LOCK_FD] == "5"


def test_take_lock_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(abi.ENV_LOCK_FD, raising=False)
    assert abi.take_lock_fd() == -1
    fd = os.open("/", os.O_RDONLY)
    try:
        os.set_inheritable(fd, True)
        monkeypatch.setenv(abi.ENV_LOCK_FD, str(fd))
        assert abi.take_lock_fd() == fd
        assert abi.ENV_LOCK_FD not in os.environ and not os.get_inheritable(fd)
    finally:
        os.close(fd)
    for bad in ("x", str(fd)):  # not a number; a closed descriptor
        monkeypatch.setenv(abi.ENV_LOCK_FD, bad)
        with pytest.raises(abi.AbiError, match="PODRUN_LOCK_FD"):
            abi.take_lock_fd()


def test_data_dir_comes_from_stage0(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(abi.ENV_DIR, "/var/lib/podrun")
    assert abi.data_dir() == "/var/lib/podrun"
    for bad in ("", "relative/dir"):
        monkeypatch.setenv(abi.ENV_DIR, bad)
        with pytest.raises(abi.AbiError, match="PODRUN_DIR"):
            abi.data_dir()


def test_every_shipped_flavor_speaks_this_abi() -> None:
    for flavor in abi.STAGE1_FLAVORS:
        doc = json.loads((stages_dir() / flavor / abi.FLAVOR_MANIFEST).read_text())
        assert doc["abi"] == abi.ABI and doc["name"] == flavor
        assert entrypoint(flavor, abi.RUN).is_file()
    assert entrypoint("default", abi.ENTER).is_file()


@pytest.mark.parametrize("value", [2, 0, "1", True, 1.0, None, [1]])
def test_a_flavor_of_another_abi_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: object) -> None:
    monkeypatch.setenv(abi.ENV_STAGES_DIR, str(tmp_path))
    (tmp_path / "default").mkdir()
    doc: dict[str, object] = {"name": "default", "entrypoints": {"run": "run"}}
    if value is not None:
        doc["abi"] = value
    (tmp_path / "default" / abi.FLAVOR_MANIFEST).write_text(json.dumps(doc))
    with pytest.raises(abi.AbiError, match="this podrun speaks ABI 1") as err:
        entrypoint("default", abi.RUN)
    assert err.value.exit_code == 254 and "\n" not in str(err.value)


def test_a_flavor_manifest_that_is_not_an_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(abi.ENV_STAGES_DIR, str(tmp_path))
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / abi.FLAVOR_MANIFEST).write_text("[1]")
    with pytest.raises(abi.AbiError, match="not a stage1 flavor manifest"):
        entrypoint("default", abi.RUN)
    (tmp_path / "default" / abi.FLAVOR_MANIFEST).write_text("{")
    with pytest.raises(NotFoundError, match="is not installed"):
        entrypoint("default", abi.RUN)


@pytest.mark.parametrize(("flavor", "name", "argv"), [
    ("default", "run", ["--pod-dir"]), ("default", "run", ["--pod-dir", "/nonexistent", "--verbose"]),
    ("fly", "run", []), ("default", "enter", ["--pod-dir", "/nonexistent", "--app", "web"]),
])
def test_an_entrypoint_refuses_argv_outside_the_contract(flavor: str, name: str, argv: list[str]) -> None:
    """One line and exit status 254, before stage1 touches anything (no traceback, as the
    hand-written ``argv.index`` parsers gave)."""
    import subprocess

    env = {"PATH": os.environ.get("PATH", ""), abi.ENV_PYTHONPATH: str(Path(abi.__file__).parents[1])}
    res = subprocess.run([sys.executable, "-I", "-S", str(entrypoint(flavor, name)), *argv], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 254, res
    assert res.stderr.count("\n") == 1 and "arguments" in res.stderr and "(ABI 1)" in res.stderr, res.stderr
