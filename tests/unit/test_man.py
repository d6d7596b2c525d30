"""The manual pages render from their source (groff, warnings on) and cover every command."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from podrun.cli.group import COMMANDS
from tests.conftest import ROOT

PAGES = sorted((ROOT / "man").glob("*.[1-8]"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path) -> None:
    res = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-P-c", "-P-b", "-P-u", str(page)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "NAME" in res.stdout and "SEE ALSO" in res.stdout


def test_every_command_is_documented() -> None:
    text = "".join(p.read_text() for p in PAGES).replace("\\-", "-")
    for command in COMMANDS:
        assert command in text, command
    for page in PAGES:  # every page named in SEE ALSO sections exists
        for ref in page.read_text().split(".BR ")[1:]:
            name = ref.split()[0]
            if name.startswith("podrun"):
                assert any(p.name.startswith(name + ".") for p in PAGES), f"{page.name}: {name}"
