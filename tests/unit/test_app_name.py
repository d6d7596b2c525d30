"""The app-name rule now lives in the model (stage0 checks it, pod/state judges pod files with
it), without a regex on the stage1 path: the same names as rkt's DNS-label rule."""

from __future__ import annotations

import itertools
import re

import pytest

from podrun.model.manifest import is_app_name

LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def test_same_as_the_dns_label_rule_on_every_short_name() -> None:
    alphabet = "a0-Z_."
    for n in range(0, 4):
        for chars in itertools.product(alphabet, repeat=n):
            name = "".join(chars)
            assert is_app_name(name) == bool(LABEL.match(name)), name


@pytest.mark.parametrize("name", ["a" * 63, "a" + "-" * 61 + "b", "x", "0"])
def test_accepted(name: str) -> None:
    assert is_app_name(name)


@pytest.mark.parametrize("name", ["a" * 64, "-a", "a-", "", "é", "a\n", "A", 5, None, "a.b"])
def test_refused(name: object) -> None:
    assert not is_app_name(name)
