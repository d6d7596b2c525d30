"""How stage2 finds and runs an app's program (podrun.stage2.app.exec_in_path, ``execvpe``
without the os module) and words its errors (describe).  Each exec happens in a forked child,
on a throwaway PATH of shell scripts; no root needed."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from podrun.stage2.app import SetupError, describe, exec_in_path

SCRIPT = '#!/bin/sh\necho "$0|$*|$MARK"\n'
NOT_FOUND_STATUS = 100


def run_exec(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[str, int | None]:
    """(stdout, None) if exec_in_path ran a program, or ("", errno) if it raised OSError."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 101
        try:
            os.close(out_r)
            os.close(err_r)
            os.dup2(out_w, 1)
            if cwd is not None:
                os.chdir(cwd)
            exec_in_path(argv, env)
        except OSError as exc:
            os.write(err_w, str(exc.errno).encode())
            code = NOT_FOUND_STATUS
        finally:
            os._exit(code)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r, "rb") as out, os.fdopen(err_r, "rb") as err:
        stdout, raised = out.read().decode(), err.read().decode()
    _, status = os.waitpid(pid, 0)
    if raised:
        assert os.waitstatus_to_exitcode(status) == NOT_FOUND_STATUS
        return "", int(raised)
    assert os.waitstatus_to_exitcode(status) == 0, stdout
    return stdout, None


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    """Directories to put on PATH: each holds a 'prog' of a different kind, or is not a directory."""
    made = {name: tmp_path / name for name in ("missing", "first", "second", "noexec", "badformat", "empty")}
    for name in ("first", "second", "noexec", "badformat", "empty"):
        made[name].mkdir()
    for name in ("first", "second"):
        (made[name] / "prog").write_text(SCRIPT)
        (made[name] / "prog").chmod(0o755)
    (made["noexec"] / "prog").write_text(SCRIPT)
    (made["noexec"] / "prog").chmod(0o644)  # no execute bit: EACCES, even for root
    (made["badformat"] / "prog").write_bytes(b"\0\1not a program")
    (made["badformat"] / "prog").chmod(0o755)  # ENOEXEC: execve runs no shell for it
    made["file"] = tmp_path / "file"
    made["file"].write_text("")  # a PATH entry that is a file: ENOTDIR
    return made


def path_of(dirs: dict[str, Path], *names: str) -> str:
    return ":".join(str(dirs[n]) for n in names)


def test_the_first_match_in_path_runs_with_argv_and_env(dirs: dict[str, Path]) -> None:
    env = {"PATH": path_of(dirs, "missing", "file", "empty", "noexec", "badformat", "first", "second"), "MARK": "m"}
    assert run_exec(["prog", "a", "b c"], env) == (f"{dirs['first']}/prog|a b c|m\n", None)


@pytest.mark.parametrize(("order", "expected"), [
    (("missing", "noexec", "badformat", "empty"), errno.EACCES),
    (("file", "badformat", "noexec", "missing"), errno.ENOEXEC),
])
def test_the_first_error_other_than_not_found_is_raised(dirs: dict[str, Path], order: tuple[str, ...],
                                                        expected: int) -> None:
    assert run_exec(["prog"], {"PATH": path_of(dirs, *order)}) == ("", expected)


@pytest.mark.parametrize(("order", "expected"), [
    (("file", "missing"), errno.ENOENT),
    (("missing", "empty", "file"), errno.ENOTDIR),
    (("empty",), errno.ENOENT),
])
def test_not_found_anywhere_raises_the_last_error(dirs: dict[str, Path], order: tuple[str, ...],
                                                  expected: int) -> None:
    assert run_exec(["prog"], {"PATH": path_of(dirs, *order)}) == ("", expected)


def test_without_path_bin_and_usr_bin_are_searched() -> None:
    assert run_exec(["sh", "-c", 'echo "$0 ran"'], {}) == ("sh ran\n", None)
    assert run_exec(["podrun-test-no-such-program"], {}) == ("", errno.ENOENT)


def test_a_name_with_a_slash_is_not_searched(dirs: dict[str, Path], tmp_path: Path) -> None:
    env = {"PATH": path_of(dirs, "first"), "MARK": "m"}
    (dirs["second"] / "sub").mkdir()
    (dirs["second"] / "prog").rename(dirs["second"] / "sub" / "prog")
    assert run_exec(["sub/prog"], env, cwd=dirs["second"]) == ("sub/prog||m\n", None)
    assert run_exec(["sub/prog"], env, cwd=dirs["first"]) == ("", errno.ENOENT)  # first/sub/prog: never tried
    assert run_exec([str(dirs["noexec"] / "prog")], env) == ("", errno.EACCES)


@pytest.mark.parametrize(("exc", "line"), [
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/bin/app"), "No such file or directory (/bin/app)"),
    (OSError(errno.EPERM, "mount: Operation not permitted"), "mount: Operation not permitted"),
    (OSError(errno.EPERM, ""), "[Errno 1] "),
    (OSError("the supervisor did not place the app in its cgroup"), "the supervisor did not place the app in its cgroup"),
    (SetupError("working directory '/w': Not a directory"), "working directory '/w': Not a directory"),
    (ValueError("bad"), "bad"),
])
def test_describe_is_one_line_without_the_errno_prefix(exc: Exception, line: str) -> None:
    assert describe(exc) == line
