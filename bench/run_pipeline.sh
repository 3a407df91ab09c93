#!/usr/bin/env bash
# Images per second of `semalign3d features --flip` (a DINOv2 model) or `semalign3d depth` (a Depth Anything
# model) with the image pipeline (cli/pipeline.c: the network on one image while helper threads decode the next
# and write the previous) against the same stages one after another (SA3D_PIPELINE=0), same binary, images,
# model and options, in one run; best of RUNS for each, alternating.
#
#   bench/run_pipeline.sh BIN MODEL_DIR [IMAGES [RUNS]] [-- OPTIONS...]
#   bench/run_pipeline.sh build-rel/semalign3d ../shared/fixtures/dinov2_tiny 24 3
#   bench/run_pipeline.sh build-cuda/semalign3d models/dinov2-base 96 3 -- --device cuda --dtype fp16
#
# The images are synth3d's (about 230 x 220 JPEGs of varying size, seeded). `features` takes each through the
# 840 x 840 GeoAware input and its mirror; `depth` through Depth Anything's processor, whose input size follows
# the image's, so the workspace is resized whenever it changes. The pipeline pays off when the network is fast
# next to the decode, resize and write: a GPU, or on the CPU a small model such as the tiny fixture (which stands
# in for a GPU pass here). The output folder is under $TMPDIR, so the writes' fsync goes to that disk.
set -eu
[ $# -ge 2 ] || { sed -n 2,15p "$0"; exit 2; }
BIN=$1 MODEL=$2
shift 2
N=24 RUNS=3
[ $# -gt 0 ] && [ "$1" != -- ] && { N=$1; shift; }
[ $# -gt 0 ] && [ "$1" != -- ] && { RUNS=$1; shift; }
[ $# -gt 0 ] && [ "$1" = -- ] && shift
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
# synth3d makes 12 images at least
"$BIN" synth3d --out "$T/img" --images $((N < 12 ? 12 : N)) --seed 1 >/dev/null 2>"$T/e" || { cat "$T/e"; exit 1; }
mapfile -t IMAGES < <(find "$T/img/JPEGImages" -name '*.jpg' | sort | head -n "$N")
CMD=(features --flip)
grep -q '"depth_anything"' "$MODEL/config.json" && CMD=(depth)

best() {   # best MODE: the best of RUNS wall times (s) of one mode, into $T/best.MODE
  local mode=$1 t0 t1 b
  shift
  rm -rf "$T/out"; mkdir -p "$T/out"
  t0=$(date +%s.%N)
  SA3D_PIPELINE=$mode "$BIN" "${CMD[@]}" --model "$MODEL" --out "$T/out" --quiet "$@" "${IMAGES[@]}"
  t1=$(date +%s.%N)
  b=$(cat "$T/best.$mode" 2>/dev/null || echo 1e30)
  awk -v a="$t0" -v b="$t1" -v c="$b" 'BEGIN { print (b - a < c ? b - a : c) }' > "$T/best.$mode"
}
for r in $(seq "$RUNS"); do
  best 0 "$@"
  best 1 "$@"
done
s=$(cat "$T/best.0") p=$(cat "$T/best.1")
echo "${CMD[*]}, ${#IMAGES[@]} images, model $MODEL, options: ${*:-none}; $(nproc) cores ($(uname -m));" \
  "best of $RUNS"
awk -v s="$s" -v p="$p" -v n="${#IMAGES[@]}" 'BEGIN {
  printf "%-28s %10s %10s\n", "", "s", "images/s"
  printf "%-28s %10.2f %10.1f\n", "stages one after another", s, n / s
  printf "%-28s %10.2f %10.1f\n", "pipeline", p, n / p
  printf "pipeline vs one after another: %.2fx\n", s / p }'
