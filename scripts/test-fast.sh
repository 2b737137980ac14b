#!/usr/bin/env bash
# The fast tier, run before every commit: builds the release preset and runs every
# test labelled "fast" (unit, CLI, server, fuzz-corpus replay). No root, no network,
# no guest; a few minutes on 2 cores. Dependencies must already be installed
# (scripts/install-deps.sh). The full tier is scripts/test-all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc)"
ctest --preset fast -j "$(nproc)"
