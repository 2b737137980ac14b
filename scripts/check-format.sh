#!/usr/bin/env bash
# Fails if any tracked C/C++ file differs from what clang-format (.clang-format at the
# root) makes of it, listing each such file. `scripts/check-format.sh --fix` rewrites
# them instead. Run by scripts/test-all.sh (CI) and worth running before a commit.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.cc' '*.h' '*.c')
if [[ ${1:-} == --fix ]]; then
  clang-format -i "${files[@]}"
  exit 0
fi
unformatted=()
for file in "${files[@]}"; do
  clang-format --dry-run --Werror "$file" >/dev/null 2>&1 || unformatted+=("$file")
done
if ((${#unformatted[@]})); then
  printf 'check-format: %d file(s) are not clang-format clean (scripts/check-format.sh --fix):\n' \
    "${#unformatted[@]}" >&2
  printf '  %s\n' "${unformatted[@]}" >&2
  exit 1
fi
echo "check-format: ${#files[@]} files clean"
