"""What the wheel holds (the metadata and dependencies are in pyproject.toml).

- the ``podrun`` package, with its JSON Schemas;
- the stage1 flavors: ``stages/`` stays at the top of the repository (README's layout) and is
  mapped into the package as ``podrun._stages`` (one package per flavor, its files as data), so
  ``pip install .``, a wheel or ``pipx install`` put them beside the code, where
  ``podrun.stage0.prepare.stages_dir`` looks first;
- the command: ``packaging/bin/podrun`` as a script (the installer points its first line at the
  environment's Python) rather than a ``[project.scripts]`` entry point, whose generated wrapper
  imports ``re`` (~8 ms on every start of every pod).

docs/packaging.md says where each kind of install finds the flavors.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

FLAVORS = sorted(p.name for p in Path("stages").iterdir() if p.is_dir() and p.name.isidentifier())

setup(
    packages=[*find_namespace_packages(include=["podrun", "podrun.*"]), "podrun._stages",
              *(f"podrun._stages.{f}" for f in FLAVORS)],
    package_dir={"podrun._stages": "stages"},
    package_data={"podrun": ["schemas/*.json", "py.typed"], "podrun._stages": ["README.md"],
                  **{f"podrun._stages.{f}": ["*"] for f in FLAVORS}},
    exclude_package_data={"": ["__pycache__"]},
    scripts=["packaging/bin/podrun"],
)
