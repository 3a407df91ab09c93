#!/usr/bin/env bash
# The main job on an embedded default (no download): installs what is missing, builds, and runs
# `semalign3d demo`: a synthetic category with known 3D truth, its prior built from the training split, and the
# GeoAware baseline (plain and with its test-time adaptive flip) against SemAlign3D on the test split - the PCK
# table, pictures and out/demo.json.
# Arguments go to the demo (e.g. --seed 3). With real checkpoints, the networks run end to end with
# MODELS=models (DINOv2 features and Depth Anything V2 depth of IMAGE into out/networks/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${MODELS:-}" ] && [ -z "${IMAGE:-}" ]; then   # before the build and the demo, not after them
  echo "scripts/run.sh: MODELS is set: set IMAGE too (a JPEG or PNG for the networks)" >&2
  exit 2
fi
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
rm -rf out/demo
mkdir -p out
./build/semalign3d demo --out out/demo --json out/demo.json "$@"
if [ -n "${MODELS:-}" ]; then
  img="$IMAGE"
  mkdir -p out/networks
  ./build/semalign3d features --model "$MODELS/dinov2-base" --size 840 --flip --out out/networks "$img"
  ./build/semalign3d depth --model "$MODELS/Depth-Anything-V2-Large-hf" --out out/networks "$img"
fi
