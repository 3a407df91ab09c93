#!/usr/bin/env bash
# The test command: installs what is missing, builds (Release) and runs the whole ctest suite.
# Fixtures are found at ../shared/fixtures, or at $SEMALIGN3D_FIXTURES.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSEMALIGN3D_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
