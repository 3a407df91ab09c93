#!/usr/bin/env bash
# CLI contract of the network commands: exit codes 0/1/2, --help on stdout, outputs with Hugging Face names,
# no partial output file after a failure. Args: path to the semalign3d binary, fixture root.
set -u
BIN="$1"
FIX="${SEMALIGN3D_FIXTURES:-$2}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() {   # check NAME EXPECTED_RC ACTUAL_RC
  if [ "$2" != "$3" ]; then echo "FAIL $1: exit $3, expected $2"; fail=1; else echo "ok   $1"; fi
}

"$BIN" --help >"$T/help" 2>/dev/null; check "top-level --help" 0 $?
grep -q forward "$T/help" || { echo "FAIL --help lists no commands"; fail=1; }
for c in forward features depth; do
  "$BIN" $c --help >"$T/h" 2>"$T/e"; check "$c --help" 0 $?
  [ -s "$T/h" ] && [ ! -s "$T/e" ] || { echo "FAIL $c --help is not on stdout"; fail=1; }
done
"$BIN" >/dev/null 2>&1; check "no command" 2 $?
"$BIN" frobnicate >/dev/null 2>&1; check "unknown command" 2 $?
"$BIN" forward --model x >/dev/null 2>&1; check "forward missing options" 2 $?
"$BIN" forward --bogus >/dev/null 2>&1; check "forward unknown option" 2 $?
"$BIN" features --model x --out "$T" --size 841 a.jpg 2>"$T/e" >/dev/null; check "features --size 841" 2 $?
grep -q "multiple of 14" "$T/e" || { echo "FAIL --size message"; fail=1; }
# unknown device and dtype names are usage errors, named (whether a known one can run here is a run error)
"$BIN" features --model x --out "$T/o1" --dtype fp8 a.jpg 2>"$T/e" >/dev/null; check "features --dtype fp8" 2 $?
grep -q -- "--dtype fp8" "$T/e" && [ ! -e "$T/o1" ] || { echo "FAIL --dtype message: $(cat "$T/e")"; fail=1; }
"$BIN" depth --model x --out "$T/o1" --device tpu a.jpg 2>"$T/e" >/dev/null; check "depth --device tpu" 2 $?
"$BIN" forward --model x --input a --output "$T/o1.st" --dtype half 2>"$T/e" >/dev/null
check "forward --dtype half" 2 $?
"$BIN" forward --model "$T/none" --input "$T/none.st" --output "$T/out.st" 2>"$T/e"; check "forward missing input" 1 $?
grep -q "none.st" "$T/e" || { echo "FAIL missing-input message does not name the file"; fail=1; }
[ ! -e "$T/out.st" ] || { echo "FAIL partial output after failure"; fail=1; }

n=0
for d in "$FIX"/*/; do
  [ -f "$d/config.json" ] && [ -f "$d/reference.safetensors" ] || continue
  name=$(basename "$d")
  "$BIN" forward --model "$d" --input "$d/reference.safetensors" --output "$T/$name.st" 2>/dev/null
  check "forward $name" 0 $?
  [ -s "$T/$name.st" ] || { echo "FAIL forward $name wrote nothing"; fail=1; }
  # more threads than cores runs (the attention wrote past its scratch; test_nn 2.1 and 3.2 compare the outputs)
  "$BIN" forward --model "$d" --input "$d/reference.safetensors" --threads 16 --output "$T/$name.t16.st" 2>"$T/e"
  check "forward $name --threads 16" 0 $?
  [ -s "$T/$name.t16.st" ] || { echo "FAIL forward $name --threads 16: $(cat "$T/e")"; fail=1; }
  # wrong input key: clear error, no output
  "$BIN" forward --model "$d" --input "$d/reference.safetensors" --input-key nope --output "$T/$name.bad" 2>"$T/e"
  check "forward $name bad key" 1 $?
  [ ! -e "$T/$name.bad" ] || { echo "FAIL partial output"; fail=1; }
  # a NaN pixel: the input file is named (not the model), no output
  "$SA3D_T_TOOL" poison "$d/reference.safetensors" pixel_values 5 "$T/nan.st"; check "t_tool poison $name" 0 $?
  "$BIN" forward --model "$d" --input "$T/nan.st" --output "$T/$name.nan" 2>"$T/e"; check "forward $name NaN pixel" 1 $?
  grep -q "nan.st: tensor 'pixel_values': non-finite value at index 5" "$T/e" && [ ! -e "$T/$name.nan" ] ||
    { echo "FAIL NaN pixel: $(cat "$T/e")"; fail=1; }
  n=$((n + 1))
done
[ $n -gt 0 ] || { echo "FAIL no model fixtures under $FIX"; fail=1; }

# features/depth on a real image, and a truncated image gives exit 1 and no output
img="$FIX/preprocess_depth_anything/input.png"
dino=$(grep -l '"Dinov2Model"' "$FIX"/*/config.json | head -1 | xargs dirname)
da=$(grep -l '"model_type": "depth_anything"' "$FIX"/*/config.json | head -1 | xargs dirname)
if [ -f "$img" ] && [ -n "$dino" ] && [ -n "$da" ]; then
  mkdir -p "$T/o"
  "$BIN" features --model "$dino" --out "$T/o" --size 112 --flip --quiet "$img"; check "features" 0 $?
  [ -s "$T/o/input.features.safetensors" ] || { echo "FAIL no feature file"; fail=1; }
  "$BIN" depth --model "$da" --out "$T/o" --quiet "$img"; check "depth" 0 $?
  [ -s "$T/o/input.depth.png" ] && [ -s "$T/o/input.depth.safetensors" ] || { echo "FAIL no depth files"; fail=1; }
  head -c 3000 "$img" > "$T/trunc.png"
  "$BIN" depth --model "$da" --out "$T/o" --quiet "$T/trunc.png" 2>"$T/e"; check "depth truncated image" 1 $?
  grep -q "trunc.png" "$T/e" || { echo "FAIL truncated-image message does not name the file"; fail=1; }
  [ ! -e "$T/o/trunc.depth.png" ] || { echo "FAIL partial output for a bad image"; fail=1; }
  # --out is created when missing; a file in its way is one clear error before any image
  "$BIN" features --model "$dino" --out "$T/new/feats" --size 112 --quiet "$img"; check "features --out created" 0 $?
  [ -s "$T/new/feats/input.features.safetensors" ] || { echo "FAIL no feature file in the new folder"; fail=1; }
  touch "$T/file"
  "$BIN" depth --model "$da" --out "$T/file/d" --quiet "$img" 2>"$T/e"; check "depth --out under a file" 1 $?
  grep -q "$T/file/d: cannot create directory" "$T/e" || { echo "FAIL --out message: $(cat "$T/e")"; fail=1; }
  [ "$(wc -l < "$T/e")" = 1 ] || { echo "FAIL --out failure is not one message: $(cat "$T/e")"; fail=1; }
  # the model folder's processor: preprocessor_config.json (else processor_config.json) decides the input, the
  # output records it, and an output made with other settings is redone; a broken config is one error, no output
  mkdir -p "$T/da2" "$T/o2"
  ln -s "$(cd "$da" && pwd)"/* "$T/da2"/
  rm -f "$T/da2/preprocessor_config.json" "$T/da2/processor_config.json"
  cp "$T/o/input.depth.safetensors" "$T/def.safetensors"
  sed 's/518/266/' "$FIX/preprocess_depth_anything/processor_config.json" > "$T/da2/preprocessor_config.json"
  "$BIN" depth --model "$T/da2" --out "$T/o" "$img" 2>"$T/e"; check "depth, a 266 processor" 0 $?
  grep -q "processor: $T/da2/preprocessor_config.json" "$T/e" ||
    { echo "FAIL processor not named: $(cat "$T/e")"; fail=1; }
  if [ -n "${SA3D_T_TOOL:-}" ]; then
    "$SA3D_T_TOOL" same "$T/def.safetensors" predicted_depth "$T/o/input.depth.safetensors" predicted_depth \
      2>/dev/null
    check "depth: another processor's output is redone, not kept" 1 $?
  fi
  rm "$T/da2/preprocessor_config.json"   # processor_config.json holding the default settings: the default again
  cp "$FIX/preprocess_depth_anything/processor_config.json" "$T/da2/processor_config.json"
  "$BIN" depth --model "$T/da2" --out "$T/o" --quiet "$img"; check "depth, processor_config.json" 0 $?
  if [ -n "${SA3D_T_TOOL:-}" ]; then
    "$SA3D_T_TOOL" same "$T/def.safetensors" predicted_depth "$T/o/input.depth.safetensors" predicted_depth
    check "depth: the default's settings in processor_config.json give the default's output" 0 $?
  fi
  touch -d 2001-01-01 "$T/o/input.depth.safetensors"
  "$BIN" depth --model "$da" --out "$T/o" --quiet "$img"; check "depth, default processor again" 0 $?
  [ "$(date -r "$T/o/input.depth.safetensors" +%Y)" = 2001 ] || { echo "FAIL same settings not kept"; fail=1; }
  # positions by the original release's rule: another model id, so the hf file is not taken as done; a bad name is
  # a usage error
  cp "$T/o/input.features.safetensors" "$T/hf.safetensors"
  "$BIN" features --model "$dino" --out "$T/o" --size 112 --flip --positions hub --quiet "$img"
  check "features --positions hub" 0 $?
  if [ -n "${SA3D_T_TOOL:-}" ]; then
    "$SA3D_T_TOOL" same "$T/hf.safetensors" feature_map "$T/o/input.features.safetensors" feature_map 2>/dev/null
    check "features --positions hub: recomputed, other maps" 1 $?
  fi
  "$BIN" features --model "$dino" --out "$T/o" --size 112 --flip --positions timm --quiet "$img" 2>"$T/e"
  check "features --positions timm" 2 $?
  grep -q "expected hf or hub" "$T/e" || { echo "FAIL --positions message: $(cat "$T/e")"; fail=1; }
  "$BIN" features --model "$dino" --out "$T/o" --size 112 --flip --quiet "$img"; check "features back to hf" 0 $?
  # another image under the same name is not taken as done (the file records a digest of the image's bytes)
  mkdir -p "$T/other"
  "$BIN" synth-spair --out "$T/sy" --categories 1 --images 2 2>/dev/null
  cp "$(ls "$T"/sy/JPEGImages/*/*.jpg | head -1)" "$T/other/input.png"
  touch -d 2001-01-01 "$T/o/input.features.safetensors"
  "$BIN" features --model "$dino" --out "$T/o" --size 112 --flip --quiet "$img"; check "features kept" 0 $?
  [ "$(date -r "$T/o/input.features.safetensors" +%Y)" = 2001 ] || { echo "FAIL same image not kept"; fail=1; }
  for cmd in features depth; do
    f="$T/o/input.$cmd.safetensors"
    [ $cmd = depth ] && touch -d 2001-01-01 "$f"
    if [ $cmd = features ]; then
      "$BIN" features --model "$dino" --out "$T/o" --size 112 --flip --quiet "$T/other/input.png"
    else
      "$BIN" depth --model "$da" --out "$T/o" --quiet "$T/other/input.png"
    fi
    check "$cmd, another image of the same name" 0 $?
    [ "$(date -r "$f" +%Y)" != 2001 ] || { echo "FAIL $cmd kept the output of another image"; fail=1; }
  done
  # not regular files: refused at once, naming the file (a device was hashed forever, a FIFO blocked the open)
  mkfifo "$T/fifo.jpg"
  for bad in /dev/zero "$T/fifo.jpg"; do
    timeout 60 "$BIN" features --model "$dino" --out "$T/o3" --size 112 --quiet "$bad" 2>"$T/e"
    check "features on $bad" 1 $?
    grep -q "$bad: not a regular file" "$T/e" || { echo "FAIL $bad: $(cat "$T/e")"; fail=1; }
  done
  # damaged image data (a bad Huffman code, which libjpeg repairs): decoded, and said so, naming the file
  "$SA3D_T_TOOL" damage "$(ls "$T"/sy/JPEGImages/*/*.jpg | head -1)" "$T/damaged.jpg"; check "t_tool damage" 0 $?
  "$BIN" depth --model "$da" --out "$T/o3" --quiet "$T/damaged.jpg" 2>"$T/e"; check "depth on a damaged JPEG" 0 $?
  grep -q "warning: $T/damaged.jpg: damaged JPEG data decoded as libjpeg repairs it" "$T/e" ||
    { echo "FAIL damaged JPEG not named: $(cat "$T/e")"; fail=1; }
  echo '{"size": {"height": 518}}' > "$T/da2/preprocessor_config.json"
  "$BIN" depth --model "$T/da2" --out "$T/o2" --quiet "$img" 2>"$T/e"; check "depth, broken processor" 1 $?
  grep -q "$T/da2/preprocessor_config.json: size" "$T/e" || { echo "FAIL config message: $(cat "$T/e")"; fail=1; }
  [ -z "$(ls -A "$T/o2")" ] || { echo "FAIL output after a broken processor config"; fail=1; }

else
  echo "FAIL image or model fixtures missing"; fail=1
fi
exit $fail
