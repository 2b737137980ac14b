#!/usr/bin/env python3
"""Fails if a library file includes a header of a higher layer (ARCHITECTURE.md: layers,
lowest first, as the top-level CMakeLists.txt adds them). Run by scripts/test-all.sh."""
import pathlib
import re
import subprocess
import sys

root = pathlib.Path(__file__).resolve().parent.parent
cmake = (root / "CMakeLists.txt").read_text()
layers = re.search(r"foreach\(layer ([a-z ]+)\)", cmake).group(1).split()
files = subprocess.run(["git", "ls-files", "*.cc", "*.h"], cwd=root, check=True,
                       capture_output=True, text=True).stdout.split()
include = re.compile(r'#include "([a-z_]+)/')
violations = []
for name in files:
    layer = name.split("/")[0]
    if layer not in layers:
        continue
    for number, line in enumerate((root / name).read_text().splitlines(), 1):
        match = include.match(line)
        if match and match.group(1) in layers and layers.index(match.group(1)) > layers.index(layer):
            violations.append(f"{name}:{number}: {layer}/ includes {match.group(1)}/ (a higher layer)")
if violations:
    print("check-layers: includes must run downward (" + " < ".join(layers) + "):", file=sys.stderr)
    print("\n".join("  " + v for v in violations), file=sys.stderr)
    sys.exit(1)
print(f"check-layers: {len(files)} files, every include runs downward ({' < '.join(layers)})")
