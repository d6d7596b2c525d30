"""The manual pages render from their source (groff, warnings on) and cover every command."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from podrun.cli.group import COMMANDS
from tests.conftest import ROOT
from tests.fixtures.commands import command_paths

ALL_PAGES = sorted((ROOT / "man").glob("*.[1-8]"))
# pages that only point at another (".so"): one name per command, as man(1) users expect
ALIASES = [p for p in ALL_PAGES if p.read_text().startswith(".so ")]
PAGES = [p for p in ALL_PAGES if p not in ALIASES]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path) -> None:
    res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-P-c", "-P-b", "-P-u", str(page)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "NAME" in res.stdout and "SEE ALSO" in res.stdout


@pytest.mark.parametrize("alias", ALIASES, ids=lambda p: p.name)
def test_alias_pages_point_at_a_page(alias: Path) -> None:
    target = alias.read_text().split()[1]  # man1/podrun-pods.1
    assert (ROOT / "man" / Path(target).name).is_file() and Path(target).parent.name == f"man{Path(target).suffix[1:]}"


def test_every_command_has_a_page() -> None:
    names = {p.name for p in ALL_PAGES}
    for command in COMMANDS:
        assert f"podrun-{command}.1" in names, command


def test_every_run_and_app_flag_is_documented() -> None:
    from podrun.cli.runflags import RUN_FLAGS
    from podrun.stage0.appflags import BOOL_FLAGS, VALUE_FLAGS

    text = (ROOT / "man" / "podrun-run.1").read_text().replace("\\-", "-")
    for name in [f.name for f in RUN_FLAGS] + list(VALUE_FLAGS + BOOL_FLAGS):
        assert re.search(re.escape(name) + "(?![a-z-])", text), name


def man_text(pages: list[Path]) -> str:
    return "\n".join(p.read_text() for p in pages).replace("\\-", "-")


def undocumented(paths: list[str], text: str) -> list[str]:
    """The command paths no page introduces: ``.B podrun PATH`` alone on its line (a SYNOPSIS)
    or a line that starts with ``\\fBpodrun PATH\\fR`` (a mention in passing is no documentation)."""
    return [path for path in paths
            if not re.search(rf"^(\.B podrun {re.escape(path)}|\\fBpodrun {re.escape(path)}\\fR.*)$", text, re.M)]


def listed_commands(page: Path) -> set[str]:
    """The first words of the bold terms of *page*'s COMMANDS section (``.B fetch``,
    ``.BR list ", " status``)."""
    section = man_text([page]).split(".SH COMMANDS\n", 1)[1].split("\n.SH ", 1)[0]
    words = set()
    for line in section.splitlines():
        if line.startswith(".B "):
            words.add(line.split()[1])
        elif line.startswith(".BR "):
            words.update(shlex.split(line)[1::2])
    return words


def test_every_command_is_documented() -> None:
    paths = command_paths()
    assert "image list" in paths and "generate unit" in paths and "cat-manifest" in paths
    text = man_text(PAGES)
    assert undocumented(paths, text) == []
    assert undocumented(["frobnicate", "image frob", "ru"], text) == ["frobnicate", "image frob", "ru"]
    assert listed_commands(ROOT / "man" / "podrun.1") == set(COMMANDS)


def test_see_also_names_existing_pages() -> None:
    for page in PAGES:
        for ref in page.read_text().split(".BR ")[1:]:
            name = ref.split()[0]
            if name.startswith("podrun"):
                assert any(p.name.startswith(name + ".") for p in PAGES), f"{page.name}: {name}"
