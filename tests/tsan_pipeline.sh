#!/usr/bin/env bash
# ThreadSanitizer on the network commands' image pipeline (cli/pipeline.c): features and depth over images of
# different sizes, one of them truncated, with the helper threads forced on (SA3D_PIPELINE=1) and one network
# thread (OpenBLAS's own threads are not instrumented). Run by .ci/run against a -DSEMALIGN3D_SANITIZE_THREAD=ON
# build: bash tests/tsan_pipeline.sh build-tsan/semalign3d ../shared/fixtures
set -u
BIN="$1"
FIX="${SEMALIGN3D_FIXTURES:-$2}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export TSAN_OPTIONS="halt_on_error=1:exitcode=66" SA3D_PIPELINE=1
dino=$(grep -l '"Dinov2Model"' "$FIX"/*/config.json | head -1 | xargs dirname)
da=$(grep -l '"model_type": "depth_anything"' "$FIX"/*/config.json | head -1 | xargs dirname)
[ -n "$dino" ] && [ -n "$da" ] || { echo "FAIL model fixtures missing under $FIX"; exit 1; }
"$BIN" synth-spair --out "$T/synth" >/dev/null 2>&1 || { echo "FAIL synth-spair"; exit 1; }
mapfile -t images < <(find "$T/synth/JPEGImages" -name '*.jpg' | sort)
head -c 2000 "${images[2]}" > "$T/truncated.jpg"
fail=0
mkdir -p "$T/o"
for c in "features --model $dino --size 112 --flip" "depth --model $da"; do
  # shellcheck disable=SC2086 # $c is the command and its options
  "$BIN" $c --threads 1 --out "$T/o" --quiet "${images[@]:0:3}" "$T/truncated.jpg" "${images[@]:3}" 2>"$T/e"
  rc=$?
  if grep -q ThreadSanitizer "$T/e" || [ $rc != 1 ]; then
    echo "FAIL ${c%% *}: exit $rc (1 expected: one truncated image)"; cat "$T/e"; fail=1
  else
    echo "ok   ${c%% *}: ${#images[@]} images and a truncated one, no ThreadSanitizer report"
  fi
done
exit $fail
