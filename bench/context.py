"""What every scenario gets from the command line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchContext:
    """Options shared by all scenarios.

    ``runs`` is the ``--runs`` value (None when not given); each scenario asks :meth:`runs_for`
    with its own defaults, because a 20 ms start needs many more runs than a 10 s pull.
    """

    runs: int | None
    profile: str
    work: Path
    podrun_bin: Path
    settle: float = 0.0
    verbose: bool = True
    quick: bool = False
    smoke: bool = False

    def runs_for(self, default: int, quick: int) -> int:
        """Runs per tool for a scenario: ``--runs`` if given, else 1 for ``--smoke``, else *quick* or *default*."""
        if self.runs is not None:
            return self.runs
        if self.smoke:
            return 1
        return quick if self.quick else default

    def log(self, message: str) -> None:
        """Progress line on stderr."""
        if self.verbose:
            print(f"bench: {message}", file=sys.stderr, flush=True)
