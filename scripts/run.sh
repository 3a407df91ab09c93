#!/usr/bin/env bash
# The main job on an embedded default (no download): installs what is missing, builds, and runs the networks
# end to end on the bundled test models and image - DINOv2 features (with the mirrored image) and a Depth
# Anything V2 depth map with its PNG - into out/. With real checkpoints (scripts/download-models.sh) pass
# MODELS=models to use models/dinov2-base and models/Depth-Anything-V2-Large-hf instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
FIX="${SEMALIGN3D_FIXTURES:-../shared/fixtures}"
if [ -n "${MODELS:-}" ]; then
  dino="$MODELS/dinov2-base"; da="$MODELS/Depth-Anything-V2-Large-hf"; size=840
else
  dino="$FIX/dinov2_tiny"; da="$FIX/depth_anything_v2_tiny"; size=112
fi
img="${IMAGE:-$FIX/preprocess_depth_anything/input.png}"
mkdir -p out
./build/semalign3d features --model "$dino" --size "$size" --flip --out out "$img"
./build/semalign3d depth --model "$da" --out out "$img"
echo "outputs:"; ls -l out
