#!/usr/bin/env bash
# The demo end to end (synthetic category -> prior -> baseline, baseline with the adaptive flip and SemAlign3D on
# the test split): exit 0, the JSON keys with finite values, SemAlign3D above the baseline, the pictures; bad
# arguments exit 2 and write nothing. Usage: cli_demo.sh BIN FIXTURES
set -u
BIN="$1"
T="$(mktemp -d)"
trap 'rm -rf "$T"' EXIT
fail=0
check() { if [ "$2" != "$3" ]; then echo "FAIL $1: exit $3, expected $2"; fail=1; else echo "ok   $1"; fi; }

"$BIN" demo --seed 1 --out "$T/d" --json "$T/d.json" --quiet > "$T/log" 2>&1; check "demo" 0 $?
for k in baseline_pck10 semalign3d_pck10 baseline_pck10_hard semalign3d_pck10_hard baseline_flip_pck10 \
         baseline_flip_pck10_hard; do
  grep -q "\"$k\": [0-9]" "$T/d.json" || { echo "FAIL key $k missing or not a number"; fail=1; }
done
grep -q '^{"semalign3d_version": "[0-9.]*", "seed": 1,' "$T/d.json" ||
  { echo "FAIL demo JSON: $(cat "$T/d.json")"; fail=1; }
b=$(sed 's/.*"baseline_pck10": \([0-9.]*\).*/\1/' "$T/d.json")
s=$(sed 's/.*"semalign3d_pck10": \([0-9.]*\).*/\1/' "$T/d.json")
awk -v b="$b" -v s="$s" 'BEGIN { exit !(s > b) }' || { echo "FAIL SemAlign3D $s not above the baseline $b"; fail=1; }
for f in matches_baseline.png matches_semalign3d.png aligned.png dog.prior.safetensors semalign3d/predictions.jsonl \
         baseline_flip/predictions.jsonl baseline/report.json baseline_flip/report.json semalign3d/report.json; do
  [ -s "$T/d/$f" ] || { echo "FAIL $f missing"; fail=1; }
done
grep -q "viewpoint variation 2" "$T/log" || { echo "FAIL no viewpoint table"; fail=1; }
grep -q "mirror taken in [0-9]* pairs" "$T/log" || { echo "FAIL no adaptive-flip summary"; fail=1; }

# eval --method semalign3d with the demo's prior: the same kind of numbers through the eval command
D="$T/d/dataset"
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/d" --features "$D/Features" --depth "$D/Depth" \
  --limit 20 --out "$T/ev" --quiet > "$T/ev.log" 2>&1; check "eval --method semalign3d" 0 $?
[ -s "$T/ev/predictions.jsonl" ] && [ -s "$T/ev/report.json" ] || { echo "FAIL eval outputs missing"; fail=1; }
"$BIN" eval --dataset "$D" --method semalign3d --features "$D/Features" > /dev/null 2>&1; check "eval semalign3d without --priors" 2 $?
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/none" --features "$D/Features" --out "$T/ev2" > /dev/null 2>"$T/e"
check "eval semalign3d, no priors folder" 2 $?
grep -q "priors $T/none: no such folder" "$T/e" || { echo "FAIL the missing folder is not named: $(cat "$T/e")"; fail=1; }
mkdir -p "$T/none"
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/none" --features "$D/Features" --out "$T/ev2" > /dev/null 2>"$T/e"
check "eval semalign3d, no prior file" 1 $?
grep -q "prior.safetensors" "$T/e" || { echo "FAIL the missing prior file is not named"; fail=1; }
# a segmentation mask of another size than its image (it would be laid over the wrong cells): refused, named
cp -r "$D" "$T/dm"
src=$(ls "$T/dm/PairAnnotation/test" | head -n 1 | cut -d- -f2)
w=$(grep -o '"image_width": [0-9]*' "$T/dm/ImageAnnotation/dog/$src.json")
other=$(grep -L "$w," "$T"/dm/ImageAnnotation/dog/*.json | head -n 1 | xargs basename | sed 's/\.json$//')
cp "$T/dm/Segmentation/dog/$other.png" "$T/dm/Segmentation/dog/$src.png"
"$BIN" eval --dataset "$T/dm" --method semalign3d --priors "$T/d" --features "$D/Features" --limit 20 --out "$T/evm" \
  --quiet > /dev/null 2>"$T/e"; check "eval semalign3d, a mask of another size" 1 $?
grep -q "dog/$src: mask is .* the image is " "$T/e" || { echo "FAIL mask size message: $(cat "$T/e")"; fail=1; }
# --set: a rerun into the same folder with other settings refuses instead of mixing predictions; the same
# settings resume; the options are listed; bad names and values exit 2
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/d" --features "$D/Features" --depth "$D/Depth" \
  --limit 20 --out "$T/ev" --quiet --set match.w_direct=0 > /dev/null 2>"$T/e"; check "eval resume with other settings" 1 $?
grep -q "other settings" "$T/e" || { echo "FAIL other-settings message: $(cat "$T/e")"; fail=1; }
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/d" --features "$D/Features" --depth "$D/Depth" \
  --limit 20 --out "$T/ev" > "$T/ev2.log" 2>&1; check "eval resume, same settings" 0 $?
# the same path, other prior bytes (its seed, "1" from demo --seed 1, made "7"): the category is recomputed, not
# resumed from the old prior's predictions (parts/dog.key holds the prior's digest); a part without a key file,
# from an earlier version, is reused
mkdir -p "$T/p5" && sed 's/"seed":"1"/"seed":"7"/' "$T/d/dog.prior.safetensors" > "$T/p5/dog.prior.safetensors"
cmp -s "$T/d/dog.prior.safetensors" "$T/p5/dog.prior.safetensors" && { echo "FAIL the prior copy is unchanged"; fail=1; }
cp -r "$T/ev" "$T/ev5" && sed -i "s|^priors=.*|priors=$T/p5|" "$T/ev5/parts/settings.txt"
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/p5" --features "$D/Features" --depth "$D/Depth" \
  --limit 20 --out "$T/ev5" > "$T/out5" 2>"$T/e"; check "eval with a rebuilt prior" 0 $?
grep -q "(0 resumed" "$T/out5" && ! cmp -s "$T/ev/parts/dog.key" "$T/ev5/parts/dog.key" ||
  { echo "FAIL a rebuilt prior's category was resumed: $(head -1 "$T/out5")"; fail=1; }
rm "$T/ev5/parts/dog.key"
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/p5" --features "$D/Features" --depth "$D/Depth" \
  --limit 20 --out "$T/ev5" > "$T/out5" 2>"$T/e"; check "eval, a part without its key file" 0 $?
grep -q "(20 resumed" "$T/out5" || { echo "FAIL a part without a key was not reused: $(head -1 "$T/out5")"; fail=1; }
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/d" --features "$D/Features" --depth "$D/Depth" \
  --limit 20 --out "$T/ev3" --quiet --set match.anchor_snap=0 --set match.w_direct=0 > /dev/null 2>&1
check "eval --set" 0 $?
grep -q "match.anchor_snap=0$" "$T/ev3/parts/settings.txt" || { echo "FAIL --set not in settings.txt"; fail=1; }
# a settings file that cannot be read (here: over the 1 MiB limit) is an error, not a fresh start
mkdir -p "$T/ev4/parts" && head -c 2000000 /dev/zero | tr '\0' 'x' > "$T/ev4/parts/settings.txt"
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/d" --features "$D/Features" --depth "$D/Depth" \
  --limit 20 --out "$T/ev4" --quiet > /dev/null 2>"$T/e"; check "eval, unreadable settings.txt" 1 $?
grep -q "settings.txt" "$T/e" && [ "$(wc -c < "$T/ev4/parts/settings.txt")" -eq 2000000 ] ||
  { echo "FAIL unreadable settings.txt: $(cat "$T/e")"; fail=1; }
cmp -s "$T/ev/predictions.jsonl" "$T/ev3/predictions.jsonl" && { echo "FAIL --set changed nothing"; fail=1; }
"$BIN" demo --set list > "$T/list"; check "demo --set list" 0 $?
grep -q "^match.w_direct=0.35$" "$T/list" && grep -q "^align.n_hyp=100$" "$T/list" || { echo "FAIL --set list"; fail=1; }
"$BIN" demo --set match.nope=1 > /dev/null 2>"$T/e"; check "demo --set unknown" 2 $?
grep -q "match.nope" "$T/e" || { echo "FAIL unknown option not named"; fail=1; }
"$BIN" demo --set align.n_hyp=1.5 > /dev/null 2>&1; check "demo --set non-integer" 2 $?
"$BIN" demo --set match.sigma=nan > /dev/null 2>&1; check "demo --set nan" 2 $?
"$BIN" demo --set match.sigma > /dev/null 2>&1; check "demo --set without =" 2 $?
# numbers of the right type out of their options' domains: refused before any work, naming the option
for opt in align.rec_mode=3 align.sigma_start=-1 align.focal_init=25 match.sigma=0 match.lift_k=17; do
  "$BIN" demo --set "$opt" --out "$T/dbad" > /dev/null 2>"$T/e"; check "demo --set $opt" 2 $?
  name=${opt%%=*}
  grep -q "option ${name#*.} " "$T/e" && [ ! -e "$T/dbad" ] || { echo "FAIL demo --set $opt: $(cat "$T/e")"; fail=1; }
done
"$BIN" demo --device gpu > /dev/null 2>&1; check "demo --device unknown" 2 $?
"$BIN" demo --out "$T/d" > /dev/null 2>"$T/e"; check "demo --out a folder not empty" 2 $?   # before any work
grep -q "not a new or empty folder" "$T/e" || { echo "FAIL demo --out not empty: $(cat "$T/e")"; fail=1; }
# --device cuda where it cannot run: refused before any work, nothing written (where it can, this is skipped)
"$BIN" eval --dataset "$D" --method semalign3d --priors "$T/d" --features "$D/Features" --device cuda \
  --limit 1 --out "$T/evx" --quiet > /dev/null 2>&1 ||
  { "$BIN" demo --device cuda --out "$T/dx" > /dev/null 2>"$T/e"; check "demo --device cuda without a GPU" 1 $?
    grep -q "device cuda" "$T/e" && [ ! -e "$T/dx" ] || { echo "FAIL demo --device cuda: $(cat "$T/e")"; fail=1; }
    # match: before reading any file (it blamed the image it was aligning)
    "$BIN" match "$T/none1.jpg" "$T/none2.jpg" --prior "$T/none.prior.safetensors" --features1 x --features2 y \
      --points 1,1 --device cuda > /dev/null 2>"$T/e"; check "match --device cuda without a GPU" 1 $?
    grep -q "device cuda" "$T/e" && ! grep -q none "$T/e" ||
      { echo "FAIL match --device cuda: $(cat "$T/e")"; fail=1; }; }

# match on two images of the dataset through the demo's prior (imported features)
ids=$(ls "$D/JPEGImages/dog" | head -2 | sed 's/\.jpg$//')
a=$(echo "$ids" | sed -n 1p); b=$(echo "$ids" | sed -n 2p)
margs=("$D/JPEGImages/dog/$a.jpg" "$D/JPEGImages/dog/$b.jpg" --prior "$T/d/dog.prior.safetensors"
       --features1 "$D/Features/dog/$a.features.safetensors" --features2 "$D/Features/dog/$b.features.safetensors")
"$BIN" match "${margs[@]}" --points "100,100;120,90" --json "$T/m.json" --png "$T/m.png"; check "match" 0 $?
grep -q '"matches": \[\[' "$T/m.json" && [ -s "$T/m.png" ] || { echo "FAIL match outputs"; fail=1; }
# the JSON records what made it: version, inputs, size, device, the seed the alignments ran with (--set after
# --seed) and the other options set away from their defaults
"$BIN" match "${margs[@]}" --points "100,100" --seed 3 --set align.n_hyp=24 --set align.seed=9 --json "$T/m4.json"
check "match with --seed and --set" 0 $?
grep -q '"semalign3d_version":"[0-9.]*","images":\[".*\.jpg",".*\.jpg"\],"prior":".*dog.prior.safetensors",'\
'"features":\[.*\],"size":840,"device":"cpu","seed":9,"settings":{"align.n_hyp":"24"}, "category": "dog"' "$T/m4.json" ||
  { echo "FAIL match JSON record: $(cat "$T/m4.json")"; fail=1; }
grep -q '"per_image"' "$T/d/semalign3d/report.json" || { echo "FAIL demo report.json without PCK"; fail=1; }
# a --json in a folder that does not exist: a usage error before the work, nothing written
"$BIN" match "${margs[@]}" --points "100,100" --json "$T/nodir/m.json" --png "$T/m3.png" 2>/dev/null
check "match with --json in a missing folder" 2 $?
[ ! -e "$T/m3.png" ] || { echo "FAIL match wrote its PNG although the JSON failed"; fail=1; }
"$BIN" match "${margs[@]}" --points "100,abc" --json "$T/m2.json" 2>/dev/null; check "match malformed points" 2 $?
"$BIN" match "${margs[@]}" --points "100,100" --set match.lift=1 --json "$T/m2.json" 2>"$T/e"
check "match with match.lift" 2 $?
grep -q "does not compute" "$T/e" || { echo "FAIL match.lift message: $(cat "$T/e")"; fail=1; }
"$BIN" match "${margs[@]}" --points "100,100;9999,1" --json "$T/m2.json" 2>/dev/null; check "match point outside" 1 $?
"$BIN" match "$T/none.jpg" "$D/JPEGImages/dog/$b.jpg" --prior "$T/d/dog.prior.safetensors" --points "1,1" \
  --features1 x --features2 y --json "$T/m2.json" 2>/dev/null; check "match missing image" 1 $?
[ ! -e "$T/m2.json" ] || { echo "FAIL match wrote JSON after a failure"; fail=1; }
# a NaN in a features file: refused naming the file, tensor and index, nothing written
"$SA3D_T_TOOL" poison "$D/Features/dog/$b.features.safetensors" feature_map 7 "$T/nan.features.safetensors"
check "t_tool poison" 0 $?
"$BIN" match "${margs[@]:0:6}" --features2 "$T/nan.features.safetensors" --points "100,100" --json "$T/m2.json" \
  2>"$T/e"; check "match with a NaN feature" 1 $?
grep -q "nan.features.safetensors: tensor 'feature_map': non-finite value at index 7" "$T/e" && [ ! -e "$T/m2.json" ] ||
  { echo "FAIL NaN feature: $(cat "$T/e")"; fail=1; }

"$BIN" demo --seed x > /dev/null 2>&1; check "demo --seed x" 2 $?
"$BIN" demo --out "" > /dev/null 2>"$T/e"; check "demo --out ''" 2 $?   # "" + "/dataset" was a folder under /
grep -q "empty value" "$T/e" || { echo "FAIL demo --out '': $(cat "$T/e")"; fail=1; }
"$BIN" demo --difficulty extreme > /dev/null 2>&1; check "demo --difficulty extreme" 2 $?
"$BIN" demo --split trn > /dev/null 2>&1; check "demo --split trn" 2 $?
mkdir -p "$T/full/dataset"; touch "$T/full/dataset/x"
"$BIN" demo --out "$T/full" --json "$T/full.json" --quiet > /dev/null 2>&1; check "demo into a used folder" 2 $?
[ ! -e "$T/full.json" ] || { echo "FAIL JSON written after a failure"; fail=1; }
exit $fail
