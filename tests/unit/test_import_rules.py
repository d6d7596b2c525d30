"""The import direction of docs/architecture.md, checked over the source's AST: stages depend
downward only, a flavor never imports another, the kernel layer (``isolation``) and ``model``
import nothing of podrun but ``errors`` and ``lean``, nothing imports ``cli``.

Every ``import`` counts, at module level, inside functions (lazy) and under ``TYPE_CHECKING``
alike: a lazy or type-only import is still a dependency.  KNOWN lists today's exceptions, each
with the part of issue 14 that removes it; it may only shrink (a listed import that is gone
fails too, so the list stays true).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "podrun"
BOTTOM = {"errors", "lean", "fsutil", "log", "faults", "isolation", "abi"}
MIDDLE = {"image", "pod", "net", "model", "systemd"}
# unit -> the podrun units it may import ("podrun" is the package itself: __version__).
ALLOWED: dict[str, set[str]] = {
    "errors": set(), "lean": set(),
    "abi": {"errors"},  # the stage contract: names and argv only
    "isolation": {"errors", "lean"},
    "model": {"errors", "lean"},
    "fsutil": {"errors", "lean", "isolation"}, "log": {"errors", "lean"}, "faults": {"errors", "lean"},
    "systemd": BOTTOM,
    "image": BOTTOM | {"model"},
    "net": BOTTOM | {"model", "systemd"},
    "pod": BOTTOM | {"model", "net", "systemd"},  # pod's gc tears down a pod's network; net never imports pod
    "trust": BOTTOM | {"image", "model"},  # image never imports trust: pull takes the decision as a callback
    "stage2": {"model", "isolation", "fsutil", "errors", "lean", "log", "faults"},
    "stage1.*": BOTTOM | {"stage2", "pod", "net", "model", "systemd"},
    "stage0": BOTTOM | MIDDLE | {"trust"},
    "cli": BOTTOM | MIDDLE | {"stage0", "trust"},
    "__main__": {"cli"},
}
# Imports that break the rules today: (importing module, imported module) -> the part that
# removes them.
KNOWN: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    rel = Path(*name.split("."))
    return (ROOT / rel).is_dir() or (ROOT / rel).with_suffix(".py").is_file()


def imported_modules(path: Path) -> set[str]:
    """The podrun modules *path* imports (``from podrun.x import name`` counts as podrun.x.name
    when that is a module, else as podrun.x)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if is_module(sub) else base)
    return {m for m in found if m == "podrun" or m.startswith("podrun.")}


def unit(module: str) -> str:
    """The architectural unit of a podrun module: its subpackage or top module, a flavor for
    stage1 (``stage1.default``), ``podrun`` for the package itself."""
    parts = module.split(".")[1:]
    if not parts:
        return "podrun"
    if parts[0] == "stage1" and len(parts) > 1:
        return f"stage1.{parts[1]}"
    return parts[0]


def allowed(importer: str, imported: str) -> bool:
    src, dst = unit(importer), unit(imported)
    if dst in (src, "podrun"):
        return True
    rule = ALLOWED["stage1.*"] if src.startswith("stage1.") else ALLOWED[src]
    return dst in rule


def all_imports() -> dict[tuple[str, str], Path]:
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for imported in imported_modules(path):
            edges[(module_name(path), imported)] = path
    return edges


def violations(edges: dict[tuple[str, str], Path]) -> set[tuple[str, str]]:
    return {edge for edge in edges if not allowed(*edge)}


def test_every_unit_has_a_rule() -> None:
    units = {unit(module_name(p)) for p in PACKAGE.rglob("*.py")} - {"podrun"}
    flavors = {u for u in units if u.startswith("stage1.")}
    assert flavors == {"stage1.default", "stage1.fly", "stage1.oci"}
    assert units - flavors - {"stage1"} == set(ALLOWED) - {"stage1.*"}


def test_imports_go_downward_only() -> None:
    found = violations(all_imports())
    assert found - set(KNOWN) == set(), "imports against docs/architecture.md"
    assert set(KNOWN) - found == set(), "fixed: remove from KNOWN"


@pytest.mark.parametrize(("importer", "imported"), [
    ("podrun.stage1.fly", "podrun.stage1.default.run"),       # a flavor imports another
    ("podrun.stage1.default.run", "podrun.stage1.fly"),
    ("podrun.isolation.cgroups", "podrun.pod.layout"),        # the kernel layer decides policy
    ("podrun.model.manifest", "podrun.net.setup"),            # the pod<->net cycle again
    ("podrun.net.setup", "podrun.pod.layout"),
    ("podrun.stage0.launch", "podrun.cli"),                   # upward
    ("podrun.stage2.app", "podrun.stage1.default.run"),
    ("podrun.stage1.default.run", "podrun.stage0.prepare"),
    ("podrun.stage1.default.run", "podrun.image.store"),
    ("podrun.image.store", "podrun.pod.layout"),
])
def test_the_rules_refuse(importer: str, imported: str) -> None:
    assert not allowed(importer, imported)


def test_imports_are_resolved_to_modules() -> None:
    edges = all_imports()
    assert ("podrun.__main__", "podrun.cli") in edges  # from podrun.cli import main: main is no module
    assert ("podrun.stage0.launch", "podrun.stage0") in edges  # from podrun.stage0 import Globals
    assert ("podrun.cli.pods", "podrun.pod.state") in edges  # from podrun.pod import state (lazily)


def test_podrun_needs_jsonschema_only_in_its_tests() -> None:
    """jsonschema is a test dependency (pyproject.toml): no podrun module may import it."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("jsonschema")]
    assert [d for d in project["optional-dependencies"]["test"] if d.startswith("jsonschema")]
    users = [p for p in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Import | ast.ImportFrom)
             and any((getattr(node, "module", None) or a.name).split(".")[0] == "jsonschema" for a in node.names)]
    assert users == []
