#!/usr/bin/env bash
# Copies the source tree to DEST as a fresh clone has it, plus the working tree's edits and new
# files (git's tracked and untracked, less the ignored: no build/, *.egg-info, .venv, bench/work).
# Wheels are built from such a copy (scripts/build-deb.sh, the wheel test, the bench): setuptools
# reuses an existing build/lib, so a build in the tree itself could ship files an earlier build
# left there.
set -euo pipefail
dest=${1:?usage: packaging/copy-source.sh DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
cd "$(dirname "$0")/.."
git ls-files -z --cached --others --exclude-standard |
  while IFS= read -r -d '' f; do
    # a tracked file deleted in the working tree is not part of the copy
    if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
  done |
  tar --null --no-recursion -T - -cf - | tar -xf - -C "$dest"
