#!/usr/bin/env bash
# Runs every test: installs dependencies, checks formatting (clang-format) and layering,
# builds and tests with GCC 12 (release, from a standalone copy of the tree), Clang 14
# (clang) and ASan+UBSan (asan) — each including the real-guest tests (label "guest":
# QEMU >= 10.1 + Linux driving `vpci serve`; needs root) — runs clang-tidy over the
# library, runs the server and guest tests again under TSan, and runs each libFuzzer
# target for a bounded time. Fails on the first failing step. CI runs exactly this.
#
#   VPCI_FUZZ_SECONDS   seconds per fuzz target (default 30)
#   VPCI_SKIP_GUEST=1   skip the real-guest tests (no root or no network)
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds=${VPCI_FUZZ_SECONDS:-30}
jobs=$(nproc)

step() { printf '\n==== %s\n' "$*"; }

step "install dependencies"
scripts/install-deps.sh

step "source checks: clang-format, layering"
scripts/check-format.sh
scripts/check-layers.py

# The release build and every one of its tests (guest included) run from a copy of
# the tree alone, in a fresh directory with nothing beside it: the repository must be
# self-contained (issue 20: no ../shared, no files outside the checkout). The copy has
# every tracked and untracked-but-not-ignored file, so local changes are tested too.
step "build and test: release, from a standalone copy of the tree"
standalone_parent=$(mktemp -d /tmp/vpci-standalone.XXXXXX)
standalone=$standalone_parent/vpci
mkdir "$standalone"
git ls-files -z --cached --others --exclude-standard |
  tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$standalone"
(
  cd "$standalone"
  [[ ! -e ../shared ]] || { echo "test-all: $standalone/../shared exists" >&2; exit 1; }
  cmake --preset release >/dev/null
  cmake --build --preset release -j "$jobs"
  ctest --preset release -j "$jobs"
)
rm -rf "$standalone_parent"

for preset in clang asan; do
  step "build and test: $preset"
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  if [[ $preset == clang ]]; then
    # The real-guest tests already ran on the GCC build and run again under ASan and
    # TSan; the Clang build's own difference is the compiler, which the rest covers.
    ctest --preset "$preset" -j "$jobs" -LE guest
  else
    ctest --preset "$preset" -j "$jobs"
  fi
  if [[ $preset == clang ]]; then
    step "clang-tidy (bug-class checks are errors)"
    scripts/run-clang-tidy.sh build/clang
  fi
done

# The vfio-user server is the multi-threaded part (a thread per socket, interrupts
# from any thread): its tests, the serve CLI tests and the real guest run under TSan.
step "build and test: tsan (server, serve, guest)"
cmake --preset tsan >/dev/null
cmake --build --preset tsan -j "$jobs" --target server_test serve_config_test serve_cli_test hostile_guest_test hostile_peer_test vpci \
  vpci_scratch_server event_loop_test
ctest --preset tsan -L 'server|guest'
ctest --preset tsan -R '^EventLoop\.'

step "fuzz: every target for ${fuzz_seconds}s"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$jobs"
scripts/run-fuzzers.sh "$fuzz_seconds"

step "all tests passed"
