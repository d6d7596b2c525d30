"""What every scenario gets from the command line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchContext:
    """Options shared by all scenarios."""

    runs: int
    profile: str
    work: Path
    podrun_bin: Path
    settle: float = 0.0
    verbose: bool = True

    def log(self, message: str) -> None:
        """Progress line on stderr."""
        if self.verbose:
            print(f"bench: {message}", file=sys.stderr, flush=True)
