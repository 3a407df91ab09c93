#!/usr/bin/env bash
# The network commands over many images (cli/pipeline.c: the network on one image while helper threads decode
# the next and write the previous). Six images of different sizes, a truncated one in the middle: it fails alone
# (exit 1, named, counted), and every other output is the bytes of a run on that image alone, with the helper
# threads forced on (SA3D_PIPELINE=1), off (0) and the device's default. Then resume and duplicate output names.
#   cli_pipeline.sh BIN FIXTURES COMMANDS [OPTIONS...]     COMMANDS: features,depth or features; OPTIONS go to
#                                                          every run (--device cuda, --threads 1)
# ctest runs it on the CPU (cli_pipeline) and on the emulated GPU (cli_pipeline_emu, features only: the DPT head
# at image size takes minutes through the emulator); CI also runs it on a ThreadSanitizer build.
set -u
BIN="$1"
FIX="${SEMALIGN3D_FIXTURES:-$2}"
CMDS=",$3,"
shift 3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() {   # check NAME EXPECTED_RC ACTUAL_RC
  if [ "$2" != "$3" ]; then echo "FAIL $1: exit $3, expected $2"; fail=1; else echo "ok   $1"; fi
}
dino=$(grep -l '"Dinov2Model"' "$FIX"/*/config.json | head -1 | xargs dirname)
da=$(grep -l '"model_type": "depth_anything"' "$FIX"/*/config.json | head -1 | xargs dirname)
[ -n "$dino" ] && [ -n "$da" ] || { echo "FAIL model fixtures missing under $FIX"; exit 1; }
run() {   # run COMMAND OUT_DIR IMAGE...: one command over the images, stderr into $T/e
  local c=$1 out=$2
  shift 2
  case $c in
    features) "$BIN" features --model "$dino" --size 112 --flip --out "$out" --quiet "${OPTS[@]}" "$@" 2>"$T/e" ;;
    depth) "$BIN" depth --model "$da" --out "$out" --quiet "${OPTS[@]}" "$@" 2>"$T/e" ;;
  esac
}
OPTS=("$@")
ext_features="features.safetensors" ext_depth="depth.safetensors depth.png"

"$BIN" synth-spair --out "$T/synth" >/dev/null 2>&1; check "synth-spair for images" 0 $?
mkdir -p "$T/in" "$T/r"
i=0
for f in "$T"/synth/JPEGImages/*/*.jpg; do
  i=$((i + 1)); [ $i -le 5 ] && cp "$f" "$T/in/im$i.jpg"
done
mv "$T/in/im5.jpg" "$T/in/im6.jpg"
head -c 2000 "$T/in/im4.jpg" > "$T/in/im5.jpg"
good="im1 im2 im3 im4 im6"
for c in features depth; do
  [[ "$CMDS" == *",$c,"* ]] || continue
  for f in $good; do
    run $c "$T/r" "$T/in/$f.jpg" || { echo "FAIL $c: single-image run $f: $(cat "$T/e")"; fail=1; }
  done
  exts=ext_$c
  for mode in 1 0 default; do
    mkdir -p "$T/$c$mode"
    if [ $mode = default ]; then run $c "$T/$c$mode" "$T"/in/im*.jpg
    else SA3D_PIPELINE=$mode run $c "$T/$c$mode" "$T"/in/im*.jpg; fi
    check "$c, 6 images, one bad (SA3D_PIPELINE=$mode)" 1 $?
    grep -q "im5.jpg" "$T/e" && grep -q "1 of 6 images failed" "$T/e" && [ "$(grep -c semalign3d "$T/e")" = 2 ] ||
      { echo "FAIL messages: $(cat "$T/e")"; fail=1; }
    for f in $good; do
      for ext in ${!exts}; do
        cmp -s "$T/$c$mode/$f.$ext" "$T/r/$f.$ext" ||
          { echo "FAIL $f.$ext (SA3D_PIPELINE=$mode) differs from the image's own run"; fail=1; }
      done
    done
    ls "$T/$c$mode" | grep -q "^im5" && { echo "FAIL $c: output for the bad image"; fail=1; }
  done
done

# the mirror map of `features --flip` (the image and its mirror run as one batch) is the feature map of a mirrored
# copy of the image (needs tests/t_tool.c, SA3D_T_TOOL; the ThreadSanitizer run goes without)
if [[ "$CMDS" == *",features,"* ]] && [ -n "${SA3D_T_TOOL:-}" ]; then
  mkdir -p "$T/m"
  "$SA3D_T_TOOL" mirror "$T/in/im2.jpg" "$T/m/im2m.png" && run features "$T/m" "$T/m/im2m.png" &&
    "$SA3D_T_TOOL" same "$T/r/im2.features.safetensors" feature_map_flip "$T/m/im2m.features.safetensors" \
      feature_map && "$SA3D_T_TOOL" same "$T/r/im2.features.safetensors" feature_map \
      "$T/m/im2m.features.safetensors" feature_map_flip
  check "features --flip: the mirror's map is the mirrored image's map, and back" 0 $?
fi

# resume: a second run rewrites nothing that is up to date
c=${CMDS:1}; c=${c%%,*}
touch "$T/stamp"; sleep 1
run "$c" "$T/${c}1" "$T"/in/im[1234].jpg; check "$c resume" 0 $?
new=$(find "$T/${c}1" -newer "$T/stamp")
[ -z "$new" ] || { echo "FAIL resume rewrote $new"; fail=1; }
# two images with one output name: a usage error before any work
mkdir -p "$T/in2"; cp "$T/in/im1.jpg" "$T/in2/im1.jpg"
run "$c" "$T/${c}1" "$T/in/im2.jpg" "$T/in/im1.jpg" "$T/in2/im1.jpg"; check "$c duplicate output names" 2 $?
grep -q "separate --out" "$T/e" || { echo "FAIL duplicate-name message: $(cat "$T/e")"; fail=1; }
exit $fail
