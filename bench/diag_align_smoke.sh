#!/usr/bin/env bash
# diag_align on a demo's val split with short alignments, on the images and on their mirrors: it runs, every
# image gets its three poses, and the ground-truth pose hits every visible keypoint (GroundTruth/, its mirror
# through the flip map, and the aligner's grid frame agree).
# Usage: diag_align_smoke.sh SEMALIGN3D DIAG_ALIGN
set -u
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
"$1" demo --seed 2 --split val --out "$T/d" --quiet > "$T/log" 2>&1 || { echo "FAIL demo: $(tail -3 "$T/log")"; exit 1; }
fail=0
for m in "" --mirror; do
  "$2" "$T/d" --split val --refine 20 --set align.n_hyp=8 --set align.n_iter=30 $m > "$T/out" 2>&1 ||
    { echo "FAIL diag_align $m: $(tail -3 "$T/out")"; exit 1; }
  cat "$T/out"
  n=$(grep -c "^    refined" "$T/out")
  last=$(tail -1 "$T/out")
  if echo "$last" | grep -q "^$n images: .* the truth hits every visible keypoint on $n\$" && [ "$n" -gt 0 ]; then
    echo "ok   diag_align $m on $n images"
  else
    echo "FAIL diag_align $m: expected $n images, all hit by the truth: $last"
    fail=1
  fi
done
exit $fail
