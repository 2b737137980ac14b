#!/usr/bin/env bash
# Runs every test: installs dependencies, then builds and tests with GCC 12
# (release), Clang 14 (clang) and ASan+UBSan (asan), and runs each libFuzzer target
# for a bounded time. Fails on the first failing step. CI runs exactly this.
#
#   VPCI_FUZZ_SECONDS   seconds per fuzz target (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds=${VPCI_FUZZ_SECONDS:-30}
jobs=$(nproc)

step() { printf '\n==== %s\n' "$*"; }

step "install dependencies"
scripts/install-deps.sh

for preset in release clang asan; do
  step "build and test: $preset"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  ctest --preset "$preset" -j "$jobs"
done

step "fuzz: every target for ${fuzz_seconds}s"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs"
scripts/run-fuzzers.sh "$fuzz_seconds"

step "all tests passed"
