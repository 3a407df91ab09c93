#!/usr/bin/env bash
# CLI contract of build-prior and show-prior: a prior built from a synthetic SPair-layout dataset (imported features,
# depth computed by the tiny Depth Anything fixture, Segmentation masks, reduced iteration counts), shown as PLY and
# PNG; bad input (missing dataset, unknown category, corrupt prior file, usage errors) exits non-zero and leaves no
# output. Args: semalign3d binary, fixture root.
set -u
BIN="$1"
FIX="${SEMALIGN3D_FIXTURES:-$2}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() { if [ "$2" != "$3" ]; then echo "FAIL $1: exit $3, expected $2"; fail=1; else echo "ok   $1"; fi; }
da=$(grep -l '"DepthAnythingForDepthEstimation"\|"depth_anything"' "$FIX"/*/config.json | head -1 | xargs dirname)
FAST="--max-images 6 --refine-iters 20 --grid 16 --kmeans-k 16 --focal-iters 100 --quiet"

"$BIN" synth-spair --out "$T/ds" --categories 1 --images 8 --pairs-test 4 2>/dev/null; check "synth-spair" 0 $?
"$BIN" build-prior --dataset "$T/ds" --category aeroplane --features-dir "$T/ds/Features" --depth-model "$da" \
  --out "$T/out" $FAST >"$T/stdout" 2>"$T/e"
check "build-prior" 0 $?
P="$T/out/aeroplane.prior.safetensors"
[ -s "$P" ] || { echo "FAIL no prior written: $(cat "$T/e")"; fail=1; }
grep -q "slots placed" "$T/stdout" || { echo "FAIL summary line missing"; fail=1; }
grep -q '"refine_iters"' "$P" && grep -q '"refine_tol"' "$P" || { echo "FAIL settings missing from the metadata"; fail=1; }
ls "$T/out" | grep -q tmp && { echo "FAIL temporary file left behind"; fail=1; }
"$BIN" build-prior --dataset "$T/ds" --category aeroplane --features-dir "$T/ds/Features" --depth-model "$da" \
  --out "$T/out2" --seed 0 $FAST >/dev/null 2>&1
cmp -s "$P" "$T/out2/aeroplane.prior.safetensors" || { echo "FAIL same seed, different file"; fail=1; }
# resume: a prior made by this version from the same inputs and settings is kept; --force, another setting or
# another input rebuilds it (the same seed gives the same bytes)
P2="$T/out2/aeroplane.prior.safetensors"
touch -d '2001-01-01' "$P2"
for run in "kept" "--force" "--seed 1" "--masks bbox"; do
  extra=$run; [ "$run" = kept ] && extra=
  "$BIN" build-prior --dataset "$T/ds" --category aeroplane --features-dir "$T/ds/Features" --depth-model "$da" \
    --out "$T/out2" $FAST $extra >"$T/stdout" 2>"$T/e"
  check "build-prior rerun: $run" 0 $?
  if [ "$run" = kept ]; then
    grep -q "aeroplane: kept .*aeroplane.prior.safetensors" "$T/stdout" && [ "$(date -r "$P2" +%Y)" = 2001 ] ||
      { echo "FAIL the current prior was not kept: $(cat "$T/stdout" "$T/e")"; fail=1; }
  else
    grep -q "slots placed" "$T/stdout" && [ "$(date -r "$P2" +%Y)" != 2001 ] ||
      { echo "FAIL $run did not rebuild: $(cat "$T/stdout" "$T/e")"; fail=1; }
    touch -d '2001-01-01' "$P2"
  fi
done
grep -q '"masks":"bbox"' "$P2" || { echo "FAIL the inputs are not in the metadata"; fail=1; }
# the depth model's processor is an input too: another preprocessor_config.json rebuilds, and the record names it
mkdir -p "$T/da2" && ln -s "$(cd "$da" && pwd)"/* "$T/da2"/ && rm -f "$T/da2"/*processor_config.json
echo '{"size": 266, "keep_aspect_ratio": true}' > "$T/da2/preprocessor_config.json"
"$BIN" build-prior --dataset "$T/ds" --category aeroplane --features-dir "$T/ds/Features" --depth-model "$T/da2" \
  --out "$T/out2" $FAST --masks bbox >"$T/stdout" 2>"$T/e"
check "build-prior, another depth processor" 0 $?
grep -q "slots placed" "$T/stdout" && [ "$(date -r "$P2" +%Y)" != 2001 ] ||
  { echo "FAIL another depth processor did not rebuild: $(cat "$T/stdout" "$T/e")"; fail=1; }
grep -q 'processor size=266x266 ' "$P2" || { echo "FAIL the depth processor is not in the metadata"; fail=1; }
echo '{"size": "big"}' > "$T/da2/preprocessor_config.json"
"$BIN" build-prior --dataset "$T/ds" --category aeroplane --features-dir "$T/ds/Features" --depth-model "$T/da2" \
  --out "$T/out3" $FAST 2>"$T/e"
check "build-prior, broken depth processor" 1 $?
grep -q "$T/da2/preprocessor_config.json: size" "$T/e" && [ ! -e "$T/out3" ] ||
  { echo "FAIL broken processor: $(cat "$T/e")"; fail=1; }
# features computed during the build (read 8 images ahead, sa3d_provider_get_many) give the prior that the files of
# `features --flip` give, byte for byte: 11 training images, so the window is refilled, for the images and mirrors
dino=$(grep -l '"Dinov2Model"' "$FIX"/*/config.json | head -1 | xargs dirname)
"$BIN" synth3d --out "$T/s3" --images 24 >/dev/null 2>&1; check "synth3d" 0 $?
"$BIN" features --model "$dino" --size 112 --flip --out "$T/s3f" --quiet "$T"/s3/JPEGImages/dog/*.jpg
check "features --flip for build-prior" 0 $?
F3="--max-images 11 --refine-iters 20 --grid 16 --kmeans-k 16 --focal-iters 100 --quiet"
"$BIN" build-prior --dataset "$T/s3" --category dog --features-model "$dino" --size 112 --depth-dir "$T/s3/Depth" \
  --out "$T/pm" $F3 >/dev/null 2>"$T/e"; check "build-prior --features-model" 0 $?
"$BIN" build-prior --dataset "$T/s3" --category dog --features-dir "$T/s3f" --depth-dir "$T/s3/Depth" \
  --out "$T/pf" $F3 >/dev/null 2>"$T/e"; check "build-prior --features-dir" 0 $?
# the same tensors: the bytes after the header (its metadata names the inputs, which differ)
data_of() { tail -c +$(( $(od -An -t u8 -N 8 "$1") + 9 )) "$1"; }
cmp -s <(data_of "$T/pm/dog.prior.safetensors") <(data_of "$T/pf/dog.prior.safetensors") &&
  [ "$(data_of "$T/pf/dog.prior.safetensors" | wc -c)" -gt 1000 ] || { echo "FAIL computed features, other prior"; fail=1; }
# match computing the features (--model: feature_map alone downloaded from the workspace) gives what the
# `features --flip` files give, byte for byte
imgs=("$T"/s3/JPEGImages/dog/*.jpg)
s1=$(basename "${imgs[0]%.jpg}"); s2=$(basename "${imgs[1]%.jpg}")
MP=(--points "40,40;60,50" --prior "$T/pm/dog.prior.safetensors" --size 112 --set align.n_hyp=8 --set align.n_iter=20)
"$BIN" match "${imgs[0]}" "${imgs[1]}" "${MP[@]}" --model "$dino" --json "$T/mm.json" >/dev/null 2>"$T/e"
check "match --model" 0 $?
"$BIN" match "${imgs[0]}" "${imgs[1]}" "${MP[@]}" --features1 "$T/s3f/$s1.features.safetensors" \
  --features2 "$T/s3f/$s2.features.safetensors" --json "$T/mf.json" >/dev/null 2>"$T/e"
check "match --features1/2" 0 $?
results() { sed 's/^.*, "category"/"category"/' "$1"; }   # what follows the record of the inputs
grep -q '"matches": \[\[' "$T/mm.json" && grep -q '"network":' "$T/mm.json" && grep -q '"features":' "$T/mf.json" &&
  cmp -s <(results "$T/mm.json") <(results "$T/mf.json") ||
  { echo "FAIL match --model differs from the features files: $(cat "$T/e")"; fail=1; }
"$BIN" match "${imgs[0]}" "${imgs[1]}" --points "40,40" --prior "$T/pm/dog.prior.safetensors" \
  --features1 "$T/s3f/$s1.features.safetensors" --features2 "$T/s3f/$s2.features.safetensors" --json "$T/mz.json" \
  >/dev/null 2>"$T/e"; check "match on features of another input size" 1 $?
grep -q "computed at input size 112; this run reads features at 840" "$T/e" && [ ! -e "$T/mz.json" ] ||
  { echo "FAIL match size mismatch: $(cat "$T/e")"; fail=1; }
# features of image 2 given for image 1: the file's image_digest names other bytes (it ran, on wrong features)
"$BIN" match "${imgs[0]}" "${imgs[1]}" "${MP[@]}" --features1 "$T/s3f/$s2.features.safetensors" \
  --features2 "$T/s3f/$s2.features.safetensors" --json "$T/mw.json" >/dev/null 2>"$T/e"
check "match on another image's features" 1 $?
grep -q "computed from another image than ${imgs[0]}" "$T/e" && [ ! -e "$T/mw.json" ] ||
  { echo "FAIL match other image: $(cat "$T/e")"; fail=1; }
"$BIN" build-prior --dataset "$T/s3" --category dog --features-dir "$T/s3f" --depth-dir "$T/s3/Depth" --dtype fp16 \
  --out "$T/px" $F3 >/dev/null 2>"$T/e"; check "build-prior --dtype without a network" 2 $?

"$BIN" show-prior "$P" --ply "$T/a.ply" --png "$T/a.png" >"$T/stdout" 2>/dev/null; check "show-prior" 0 $?
head -c 4 "$T/a.png" | grep -q PNG || { echo "FAIL PNG not written"; fail=1; }
grep -q "flip map: " "$T/stdout" || { echo "FAIL show-prior does not report the flip map"; fail=1; }
n=$(grep "element vertex" "$T/a.ply" | awk '{print $3}')
[ "$(($(wc -l < "$T/a.ply") - 11))" = "$n" ] || { echo "FAIL PLY has not $n points"; fail=1; }

"$BIN" build-prior --dataset "$T/nope" --category aeroplane --features-dir "$T/ds/Features" --depth-model "$da" \
  --out "$T/o3" $FAST >/dev/null 2>"$T/e"; check "build-prior missing dataset" 1 $?
[ ! -e "$T/o3/aeroplane.prior.safetensors" ] || { echo "FAIL output after a failure"; fail=1; }
"$BIN" build-prior --dataset "$T/ds" --category spaceship --features-dir "$T/ds/Features" --depth-model "$da" \
  --out "$T/o4" $FAST >/dev/null 2>"$T/e"; check "build-prior unknown category" 1 $?
grep -q spaceship "$T/e" || { echo "FAIL message does not name the category: $(cat "$T/e")"; fail=1; }
[ -z "$(ls "$T/o4" 2>/dev/null)" ] || { echo "FAIL output after a failure"; fail=1; }
"$BIN" build-prior --dataset "$T/ds" --category aeroplane --features-dir "$T/nofeat" --depth-model "$da" \
  --out "$T/o5" $FAST >/dev/null 2>"$T/e"; check "build-prior missing features folder" 2 $?
grep -q "features-dir $T/nofeat: no such folder" "$T/e" || { echo "FAIL missing folder: $(cat "$T/e")"; fail=1; }
mkdir -p "$T/nofeat"
"$BIN" build-prior --dataset "$T/ds" --category aeroplane --features-dir "$T/nofeat" --depth-model "$da" \
  --out "$T/o5" $FAST >/dev/null 2>"$T/e"; check "build-prior missing features" 1 $?
[ -z "$(ls "$T/o5" 2>/dev/null)" ] || { echo "FAIL output after a failure"; fail=1; }
"$BIN" build-prior --dataset "$T/ds" --category aeroplane --out "$T/o6" >/dev/null 2>&1
check "build-prior without feature/depth sources" 2 $?
"$BIN" build-prior --dataset "$T/ds" --category aeroplane --all --features-dir x --depth-dir y --out "$T/o6" >/dev/null 2>&1
check "build-prior --category with --all" 2 $?
for tol in -1 nan 2 x; do
  "$BIN" build-prior --dataset "$T/ds" --category aeroplane --features-dir x --depth-dir y --out "$T/o6" \
    --refine-tol "$tol" >/dev/null 2>"$T/e"
  check "build-prior --refine-tol $tol" 2 $?
  grep -q "refine-tol" "$T/e" || { echo "FAIL message does not name the option: $(cat "$T/e")"; fail=1; }
done

head -c 2000 "$P" > "$T/cut.safetensors"
"$BIN" show-prior "$T/cut.safetensors" --ply "$T/b.ply" --png "$T/b.png" >/dev/null 2>"$T/e"
check "show-prior truncated file" 1 $?
grep -q "cut.safetensors" "$T/e" || { echo "FAIL message does not name the file"; fail=1; }
[ ! -e "$T/b.ply" ] && [ ! -e "$T/b.png" ] || { echo "FAIL output after a failure"; fail=1; }
echo garbage > "$T/bad.safetensors"
"$BIN" show-prior "$T/bad.safetensors" --png "$T/b.png" >/dev/null 2>&1; check "show-prior corrupt file" 1 $?
"$BIN" show-prior "$T/ds/Features/aeroplane/$(ls "$T/ds/Features/aeroplane" | head -1)" >/dev/null 2>"$T/e"
check "show-prior on a feature file" 1 $?
grep -q "format" "$T/e" || { echo "FAIL message does not say the format tag: $(cat "$T/e")"; fail=1; }
"$BIN" show-prior >/dev/null 2>&1; check "show-prior without a file" 2 $?

# The prior through eval --method semalign3d and match, with a few short hypotheses: cli_demo covers these with
# the real settings but is labelled slow, so this is what the sanitizer run of CI sees of them.
SMALL="--set align.n_hyp=4 --set align.n_iter=10"
"$BIN" eval --dataset "$T/ds" --method semalign3d --priors "$T/out" --features "$T/ds/Features" --out "$T/ev" \
  --quiet $SMALL >/dev/null 2>"$T/e"; check "eval --method semalign3d on the prior" 0 $?
[ -s "$T/ev/predictions.jsonl" ] && [ -s "$T/ev/report.json" ] || { echo "FAIL eval outputs missing"; fail=1; }
# feature files without the mirrored maps: the aligner's mirror term says what it lacks and how to do without
"$BIN" features --model "$dino" --size 112 --out "$T/noflip" --quiet "$T"/ds/JPEGImages/aeroplane/*.jpg
"$BIN" eval --dataset "$T/ds" --method semalign3d --priors "$T/out" --features "$T/noflip" --out "$T/evn" \
  --size 112 --quiet $SMALL >/dev/null 2>"$T/e"; check "eval --method semalign3d without mirrored maps" 1 $?
grep -q "feature_map_flip.*align.w_mirror=0 aligns without them" "$T/e" || { echo "FAIL message: $(cat "$T/e")"; fail=1; }
I="$T/ds/JPEGImages/aeroplane"
F="$T/ds/Features/aeroplane"
"$BIN" match "$I/synth_000001.jpg" "$I/synth_000002.jpg" --points "40,40;60,50" --prior "$P" $SMALL \
  --features1 "$F/synth_000001.features.safetensors" --features2 "$F/synth_000002.features.safetensors" \
  --json "$T/m.json" --png "$T/m.png" >/dev/null 2>"$T/e"; check "match on the prior" 0 $?
grep -q '"matches": \[\[' "$T/m.json" && head -c 4 "$T/m.png" | grep -q PNG ||
  { echo "FAIL match outputs: $(cat "$T/e")"; fail=1; }
# without the mirror term (the images alone): the same outputs, other matches possible
"$BIN" match "$I/synth_000001.jpg" "$I/synth_000002.jpg" --points "40,40;60,50" --prior "$P" $SMALL \
  --set align.w_mirror=0 --features1 "$F/synth_000001.features.safetensors" \
  --features2 "$F/synth_000002.features.safetensors" --json "$T/m0.json" >/dev/null 2>"$T/e"
check "match without the mirror term" 0 $?
grep -q '"matches": \[\[' "$T/m0.json" || { echo "FAIL match outputs: $(cat "$T/e")"; fail=1; }
"$BIN" match "$I/synth_000001.jpg" "$I/synth_000002.jpg" --points "40,40" --prior "$P" --set align.w_mirror=2 \
  --features1 "$F/synth_000001.features.safetensors" --features2 "$F/synth_000002.features.safetensors" \
  --json "$T/m2.json" >/dev/null 2>"$T/e"; check "match with w_mirror out of range" 2 $?
grep -q "w_mirror" "$T/e" && [ ! -e "$T/m2.json" ] || { echo "FAIL w_mirror 2: $(cat "$T/e")"; fail=1; }
# --device: an unknown name is a usage error; cuda either runs (a CUDA build on a GPU machine) or is refused before
# any output with a message that says why
"$BIN" eval --dataset "$T/ds" --method semalign3d --priors "$T/out" --features "$T/ds/Features" --out "$T/evt" \
  --device tpu >/dev/null 2>&1; check "eval --device tpu" 2 $?
"$BIN" eval --dataset "$T/ds" --method semalign3d --priors "$T/out" --features "$T/ds/Features" --out "$T/evc" \
  --quiet $SMALL --device cuda >/dev/null 2>"$T/e"
rc=$?
if [ $rc -eq 0 ]; then
  [ -s "$T/evc/predictions.jsonl" ] || { echo "FAIL eval --device cuda ran without predictions"; fail=1; }
else
  check "eval --device cuda without a usable GPU" 1 $rc
  grep -q "device cuda" "$T/e" && [ ! -e "$T/evc" ] || { echo "FAIL eval --device cuda: $(cat "$T/e")"; fail=1; }
fi
"$BIN" match "$I/synth_000001.jpg" "$I/synth_000002.jpg" --points "40,40" --prior "$P" $SMALL --device cuda \
  --features1 "$F/synth_000001.features.safetensors" --features2 "$F/synth_000002.features.safetensors" \
  --json "$T/mc.json" >/dev/null 2>"$T/e"
rc=$?
if [ $rc -ne 0 ]; then
  check "match --device cuda without a usable GPU" 1 $rc
  grep -q "device cuda" "$T/e" && [ ! -e "$T/mc.json" ] || { echo "FAIL match --device cuda: $(cat "$T/e")"; fail=1; }
fi
# the training images are inputs too: the same root with changed annotations rebuilds instead of keeping
"$BIN" synth-spair --out "$T/ds5" --categories 1 --images 8 --pairs-test 4 2>/dev/null
B5=("$BIN" build-prior --dataset "$T/ds5" --category aeroplane --features-dir "$T/ds5/Features" --depth-model "$da"
    --out "$T/out5" $FAST)
"${B5[@]}" >/dev/null 2>&1; "${B5[@]}" >"$T/stdout" 2>&1
grep -q "aeroplane: kept" "$T/stdout" || { echo "FAIL unchanged dataset not kept: $(cat "$T/stdout")"; fail=1; }
sed -i 's/"0": \[[0-9]*, [0-9]*\]/"0": null/' "$T/ds5"/ImageAnnotation/aeroplane/*.json
"${B5[@]}" >"$T/stdout" 2>&1; check "build-prior, annotations changed" 0 $?
grep -q "slots placed" "$T/stdout" || { echo "FAIL changed annotations kept the old prior: $(cat "$T/stdout")"; fail=1; }
# and so are the imported maps' files: features written again into the same folder rebuild
"${B5[@]}" >"$T/stdout" 2>&1
grep -q "aeroplane: kept" "$T/stdout" || { echo "FAIL unchanged inputs not kept: $(cat "$T/stdout")"; fail=1; }
touch -d 2001-01-01 "$T/ds5"/Features/aeroplane/*
"${B5[@]}" >"$T/stdout" 2>&1; check "build-prior, features written again" 0 $?
grep -q "slots placed" "$T/stdout" || { echo "FAIL rewritten features kept the old prior: $(cat "$T/stdout")"; fail=1; }
exit $fail
