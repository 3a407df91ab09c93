#!/usr/bin/env bash
# CLI contract of synth-spair, eval and pck: a synthetic SPair-layout dataset whose matches are known, PCK 100 at
# alpha 0.1, resume, feature cache, predictions-file validation. Args: semalign3d binary, fixture root.
set -u
BIN="$1"
FIX="${SEMALIGN3D_FIXTURES:-$2}"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
check() { if [ "$2" != "$3" ]; then echo "FAIL $1: exit $3, expected $2"; fail=1; else echo "ok   $1"; fi; }

"$BIN" synth-spair --out "$T/ds" --categories 2 --pairs-test 12 2>/dev/null; check "synth-spair" 0 $?
"$BIN" synth-spair --out "$T/ds" 2>/dev/null; check "synth-spair into a non-empty dir" 1 $?
# SIGTERM (as Ctrl-C; a script's background job ignores SIGINT) while synth3d writes: exit 130 and nothing left
# behind (the dataset is staged, then moved up whole; it left .tmp files and a partial tree the rerun refused)
"$BIN" synth3d --out "$T/s3i" --images 1000 --threads 1 2>"$T/e" &
pid=$!; sleep 1; kill -TERM $pid; wait $pid; check "synth3d interrupted" 130 $?
[ -z "$(ls "$T" | grep s3i)" ] || { echo "FAIL interrupted synth3d left $(ls "$T" | grep s3i)"; fail=1; }
"$BIN" synth3d --out "$T/s3i/" --images 12 --pairs-trn 4 --pairs-val 2 --pairs-test 2 2>/dev/null
check "synth3d after the interruption" 0 $?
[ -s "$T/s3i/synth_params.json" ] && [ -z "$(ls -A "$T/s3i" | grep partial)" ] ||
  { echo "FAIL synth3d rerun output"; fail=1; }
# roots the staging must serve too: DIR/. (a stage beside it, DIR/..partial-PID, was inside it), a link to an
# empty folder, and one holding a killed run's staging folder
mkdir -p "$T/dot" "$T/tgt" "$T/stale/.partial-x1y2z3/JPEGImages"
ln -s "$T/tgt" "$T/lnk"
"$BIN" synth-spair --out "$T/dot/." --categories 1 2>/dev/null; check "synth-spair --out DIR/." 0 $?
"$BIN" synth-spair --out "$T/lnk" --categories 1 2>/dev/null; check "synth-spair --out a link" 0 $?
"$BIN" synth-spair --out "$T/stale" --categories 1 2>/dev/null; check "synth-spair over a stale staging folder" 0 $?
for d in dot tgt stale; do
  [ -s "$T/$d/synth_params.json" ] && [ -z "$(ls -A "$T/$d" | grep partial)" ] || { echo "FAIL synth root $d"; fail=1; }
done
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --out "$T/ev" --quiet >"$T/table" 2>/dev/null
check "eval baseline" 0 $?
grep -q "All: pair-weighted" "$T/table" || { echo "FAIL eval table"; fail=1; }
v=$(grep "All: pair-weighted" "$T/table" | awk '{print $6}')
[ "$v" = "100.00" ] || { echo "FAIL PCK@0.1 per-image is $v, expected 100.00 (features encode the answer)"; fail=1; }
[ -s "$T/ev/report.json" ] && [ -s "$T/ev/predictions.jsonl" ] || { echo "FAIL eval outputs missing"; fail=1; }
# GeoAware's adaptive flip: both metrics decide every pair and say so; the options it cannot combine with
for m in 1 2; do
  "$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --out "$T/evf$m" --quiet \
    --set match.baseline.adapt_flip=$m >"$T/table2" 2>"$T/e"
  check "eval --set match.baseline.adapt_flip=$m" 0 $?
  grep -q "adaptive flip (.*): the mirrored source was closer in [0-9]* of 12 pairs" "$T/e" ||
    { echo "FAIL adaptive flip $m summary: $(cat "$T/e")"; fail=1; }
  grep -q "match.baseline.adapt_flip=$m" "$T/evf$m/parts/settings.txt" || { echo "FAIL settings lack adapt_flip"; fail=1; }
done
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --masks none --set match.baseline.adapt_flip=1 \
  >/dev/null 2>"$T/e"; check "adapt_flip=1 without masks" 2 $?
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --method semalign3d --priors "$T" \
  --set match.baseline.adapt_flip=2 >/dev/null 2>"$T/e"; check "adapt_flip with --method semalign3d" 2 $?
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --method semalign3d --priors "$T" \
  --set match.lift=1 >/dev/null 2>"$T/e"; check "match.lift without --depth" 2 $?
grep -q "give --depth" "$T/e" || { echo "FAIL lift without depth message: $(cat "$T/e")"; fail=1; }
for set in match.lift=1 align.n_hyp=5; do   # settings the baseline would ignore
  "$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --set "$set" >/dev/null 2>"$T/e"
  check "baseline --set $set" 2 $?
  grep -q -- "--set ${set%=*}: belongs to --method semalign3d" "$T/e" ||
    { echo "FAIL baseline $set: $(cat "$T/e")"; fail=1; }
done
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --out "$T/evf3" --set match.baseline.adapt_flip=3 \
  >/dev/null 2>"$T/e"; check "adapt_flip=3" 2 $?
grep -q "option baseline.adapt_flip" "$T/e" && [ ! -e "$T/evf3" ] ||
  { echo "FAIL adapt_flip=3 message: $(cat "$T/e")"; fail=1; }
# an output folder name too long for its files' paths (they were cut short: the parts went to a sibling folder)
long="$T"
for k in $(seq 1 20); do long="$long/$(printf 'x%.0s' $(seq 1 99))"; done   # 2000 bytes in 100-byte parts
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --out "$long" >/dev/null 2>"$T/e"
check "eval --out too long" 2 $?
grep -q "at most" "$T/e" && [ -z "$(ls "$T" | grep '^xxx')" ] || { echo "FAIL long --out: $(cat "$T/e")"; fail=1; }
# the baseline's window radius is bounded (a radius of INT_MAX overflowed the window and gave NaN predictions)
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --out "$T/evr" --set match.baseline.window_radius=2147483647 \
  >/dev/null 2>"$T/e"; check "eval window_radius INT_MAX" 2 $?
grep -q "option baseline.window_radius" "$T/e" && [ ! -e "$T/evr" ] ||
  { echo "FAIL window_radius: $(cat "$T/e")"; fail=1; }
# a run that fails before its first category leaves no settings that block the corrected run
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --size 420 --out "$T/evs" --quiet >/dev/null 2>"$T/e"
check "eval --size other than the files'" 1 $?
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --out "$T/evs" --quiet >/dev/null 2>"$T/e"
check "eval rerun after a failed start" 0 $?
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --size 420 --out "$T/evs" --quiet >/dev/null 2>"$T/e"
check "eval other settings over finished categories" 1 $?
grep -q "made with other settings" "$T/e" || { echo "FAIL settings guard: $(cat "$T/e")"; fail=1; }
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --out "" >/dev/null 2>"$T/e"
check "eval --out ''" 2 $?   # "" + "/parts" wrote under /
grep -q -- "--out: empty value" "$T/e" || { echo "FAIL --out '': $(cat "$T/e")"; fail=1; }
# the baseline too refuses a device this build or machine lacks, before any work (where it can run, this passes)
if ! "$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --device cuda --out "$T/evc" --quiet >/dev/null \
     2>"$T/e"; then
  grep -q "cuda" "$T/e" && [ ! -e "$T/evc" ] || { echo "FAIL eval --device cuda: $(cat "$T/e")"; fail=1; }
fi
"$BIN" pck --dataset "$T/ds" --predictions "$T/ds" --allow-missing --json "$T/rd.json" >/dev/null 2>"$T/e"
check "pck --predictions a folder" 1 $?   # it read as an empty file
grep -q "not a regular file" "$T/e" && [ ! -e "$T/rd.json" ] || { echo "FAIL pck folder: $(cat "$T/e")"; fail=1; }
mkfifo "$T/fifo.jsonl"   # without a writer: the open itself blocked
timeout 60 "$BIN" pck --dataset "$T/ds" --predictions "$T/fifo.jsonl" >/dev/null 2>"$T/e"
check "pck --predictions a FIFO" 1 $?
grep -q "fifo.jsonl: not a regular file" "$T/e" || { echo "FAIL FIFO: $(cat "$T/e")"; fail=1; }
"$BIN" eval --dataset "$T/ds" --features "$T/ds/Features" --out "$T/ev" --quiet >"$T/table2" 2>"$T/e"
check "eval rerun" 0 $?
grep -q "(12 resumed" "$T/table2" || { echo "FAIL rerun did not resume the finished categories"; fail=1; }
# features written again into the same folder (same settings text): their category is redone, the other resumed
cp -r "$T/ds/Features" "$T/feat"
"$BIN" eval --dataset "$T/ds" --features "$T/feat" --out "$T/evt" --quiet >/dev/null 2>&1
c=$(ls "$T/feat" | head -n 1)
touch -d 2001-01-01 "$T/feat/$c"/*
"$BIN" eval --dataset "$T/ds" --features "$T/feat" --out "$T/evt" --quiet >"$T/table2" 2>"$T/e"
check "eval rerun, one category's features rewritten" 0 $?
n=$(grep -o "([0-9]* resumed" "$T/table2" | tr -dc 0-9)
[ -n "$n" ] && [ "$n" -gt 0 ] && [ "$n" -lt 12 ] && grep -q "features [0-9a-f]*" "$T/evt/parts/$c.key" ||
  { echo "FAIL rewritten features: $(head -n 1 "$T/table2"), key $(cat "$T/evt/parts/$c.key")"; fail=1; }
"$BIN" pck --dataset "$T/ds" --predictions "$T/ev/predictions.jsonl" --json "$T/r.json" >/dev/null 2>&1
check "pck" 0 $?
cmp -s <(grep -v semalign3d_version "$T/r.json" | grep -A3 '"per_keypoint"' | head -4) \
       <(grep -v semalign3d_version "$T/ev/report.json" | grep -A3 '"per_keypoint"' | head -4) ||
  { echo "FAIL pck and eval reports differ"; fail=1; }
# a pair record whose image size disagrees with its image's record: refused before the category's work, naming it
cp -r "$T/ds" "$T/ds4"
victim=$(ls "$T/ds4/PairAnnotation/test" | head -n 1)
sed -i 's/"src_imsize": \[\([0-9]*\),/"src_imsize": [1\1,/' "$T/ds4/PairAnnotation/test/$victim"
"$BIN" eval --dataset "$T/ds4" --features "$T/ds/Features" --out "$T/ev4" --quiet >/dev/null 2>"$T/e"
check "eval, a pair's src_imsize unlike its image record" 1 $?
grep -q "${victim%.json}: src_imsize 1[0-9]* x [0-9]*, but the record of image" "$T/e" ||
  { echo "FAIL imsize mismatch message: $(cat "$T/e")"; fail=1; }
# a malformed pair record: skipped in lenient mode, and said so in the table, the report and on stderr
cp -r "$T/ds" "$T/ds2"
victim=$(ls "$T/ds2/PairAnnotation/test" | head -n 1)
echo '{"not": "a pair"' > "$T/ds2/PairAnnotation/test/$victim"
"$BIN" eval --dataset "$T/ds2" --features "$T/ds/Features" --out "$T/ev2" --quiet >"$T/table2" 2>"$T/e"
check "eval, a malformed pair record" 0 $?
grep -q "11 pairs .*; 1 malformed pair records skipped" "$T/table2" ||
  { echo "FAIL eval title: $(head -1 "$T/table2")"; fail=1; }
grep -q "1 malformed pair records skipped" "$T/e" || { echo "FAIL eval skip warning: $(cat "$T/e")"; fail=1; }
grep -Eq '"skipped_records":[[:space:]]*"1"' "$T/ev2/report.json" ||
  { echo "FAIL report lacks skipped_records"; fail=1; }
"$BIN" pck --dataset "$T/ds2" --predictions "$T/ev2/predictions.jsonl" --json "$T/r2.json" >"$T/table2" 2>/dev/null
check "pck, a malformed pair record" 0 $?
grep -q "1 malformed pair records skipped" "$T/table2" && grep -Eq '"skipped_records":[[:space:]]*"1"' "$T/r2.json" ||
  { echo "FAIL pck does not report the skipped record"; fail=1; }
grep -Eq '"skipped_records":[[:space:]]*"0"' "$T/r.json" || { echo "FAIL pck report lacks skipped_records 0"; fail=1; }
# the whole split's predictions (made before the record broke): the line of the skipped pair is named as such
"$BIN" pck --dataset "$T/ds2" --predictions "$T/ev/predictions.jsonl" >/dev/null 2>"$T/e"
check "pck, a line for the skipped record" 1 $?
grep -q "or its record is one of those skipped as malformed" "$T/e" ||
  { echo "FAIL skipped line: $(cat "$T/e")"; fail=1; }
"$BIN" eval --dataset "$T/ds2" --features "$T/ds/Features" --out "$T/ev3" --strict --quiet >/dev/null 2>"$T/e"
check "eval --strict, a malformed pair record" 1 $?
grep -q "$victim" "$T/e" || { echo "FAIL --strict message does not name the record: $(cat "$T/e")"; fail=1; }
head -n 3 "$T/ev/predictions.jsonl" > "$T/partial.jsonl"
"$BIN" pck --dataset "$T/ds" --predictions "$T/partial.jsonl" >/dev/null 2>"$T/e"; check "pck missing pairs" 1 $?
grep -q "have no prediction" "$T/e" || { echo "FAIL missing-pairs message"; fail=1; }
"$BIN" pck --dataset "$T/ds" --predictions "$T/partial.jsonl" --allow-missing >/dev/null 2>&1
check "pck --allow-missing" 0 $?
{ head -n 1 "$T/ev/predictions.jsonl"; echo '{"pair": "nope", "trg_kps": []}'; } > "$T/bad.jsonl"
"$BIN" pck --dataset "$T/ds" --predictions "$T/bad.jsonl" --json "$T/bad.json" >/dev/null 2>"$T/e"
check "pck unknown pair" 1 $?
grep -q "bad.jsonl:2" "$T/e" || { echo "FAIL message does not name file:line"; fail=1; }
[ ! -e "$T/bad.json" ] || { echo "FAIL report written after a failure"; fail=1; }
echo '{"pair": 5' > "$T/bad2.jsonl"
"$BIN" pck --dataset "$T/ds" --predictions "$T/bad2.jsonl" >/dev/null 2>&1; check "pck malformed JSON" 1 $?
# an output file in a folder that does not exist, or a folder given as the file: usage errors before any work
"$BIN" pck --dataset "$T/ds" --predictions "$T/ev/predictions.jsonl" --json "$T/no/such/r.json" >/dev/null 2>"$T/e"
check "pck --json in a missing folder" 2 $?
grep -q "the folder $T/no/such does not exist" "$T/e" || { echo "FAIL missing folder: $(cat "$T/e")"; fail=1; }
"$BIN" pck --dataset "$T/ds" --predictions "$T/ev/predictions.jsonl" --json "$T/ds" >/dev/null 2>"$T/e"
check "pck --json a folder" 2 $?
# --categories: the whole split's predictions scored against one category (the other's lines counted and skipped);
# a malformed line, or one of no category the dataset kind has, is still an error
cat1=$(head -n 1 "$T/ev/predictions.jsonl" | sed 's/^{"pair": "[^:]*:\([a-z]*\)".*/\1/')
"$BIN" pck --dataset "$T/ds" --predictions "$T/ev/predictions.jsonl" --categories "$cat1" >"$T/table" 2>"$T/e"
check "pck --categories $cat1 on the whole split" 0 $?
grep -q "predicted pairs of categories outside the selection were not scored" "$T/table" ||
  { echo "FAIL pck --categories: $(cat "$T/table" "$T/e")"; fail=1; }
# a listed category without a pair in the split is named once, trimmed, however often it is listed
"$BIN" pck --dataset "$T/ds" --predictions "$T/ev/predictions.jsonl" --categories " $cat1 , tvmonitor,tvmonitor " \
  >/dev/null 2>"$T/e"
check "pck --categories with a category of no pair" 0 $?
[ "$(grep -c "warning: --categories: tvmonitor has no pair in $T/ds split test" "$T/e")" = 1 ] &&
  ! grep -q "$cat1 has no pair" "$T/e" || { echo "FAIL category without pairs: $(cat "$T/e")"; fail=1; }
{ cat "$T/ev/predictions.jsonl"; echo '{"pair": "9-a-b:spaceship", "trg_kps": [[1, 2]]}'; } > "$T/bad5.jsonl"
"$BIN" pck --dataset "$T/ds" --predictions "$T/bad5.jsonl" --categories "$cat1" >/dev/null 2>"$T/e"
check "pck --categories, a line of no known category" 1 $?
# two records on one line (the second would go unread), or one with a second "pair" key
{ l1=$(head -n 1 "$T/ev/predictions.jsonl"); echo "$l1 $l1"; } > "$T/bad3.jsonl"
"$BIN" pck --dataset "$T/ds" --predictions "$T/bad3.jsonl" --allow-missing >/dev/null 2>"$T/e"
check "pck two records on a line" 1 $?
grep -q "bad3.jsonl:1: not one JSON object" "$T/e" || { echo "FAIL two records: $(cat "$T/e")"; fail=1; }
head -n 1 "$T/ev/predictions.jsonl" | sed 's/^{/{"pair": "x", /' > "$T/bad4.jsonl"
"$BIN" pck --dataset "$T/ds" --predictions "$T/bad4.jsonl" --allow-missing >/dev/null 2>"$T/e"
check "pck a key twice" 1 $?
grep -q 'bad4.jsonl:1: "pair" given twice' "$T/e" || { echo "FAIL key twice: $(cat "$T/e")"; fail=1; }
"$BIN" eval --dataset "$T/ds" >/dev/null 2>&1; check "eval without features" 2 $?
"$BIN" pck --dataset "$T/nope" --predictions "$T/bad.jsonl" >/dev/null 2>&1; check "pck missing dataset" 1 $?

# --kind: PF-PASCAL (threshold from the target image size) built from two synthetic images, and usage errors
P="$T/pf/PF-dataset-PASCAL"
mkdir -p "$P/JPEGImages" "$T/pff"
ia=$(ls "$T/ds/JPEGImages/aeroplane" | sed -n 1p); ib=$(ls "$T/ds/JPEGImages/aeroplane" | sed -n 2p)
for i in "$ia" "$ib"; do
  cp "$T/ds/JPEGImages/aeroplane/$i" "$P/JPEGImages/"
  cp "$T/ds/Features/aeroplane/${i%.jpg}.features.safetensors" "$T/pff/"
done
printf 'source_image,target_image,class,XA,YA,XB,YB\nPF-dataset-PASCAL/JPEGImages/%s,PF-dataset-PASCAL/JPEGImages/%s,1,10;40;70,20;50;80,12;42;72,22;52;82\n' \
  "$ia" "$ib" > "$P/test_pairs_pf_pascal.csv"
"$BIN" eval --kind pfpascal --dataset "$T/pf" --features "$T/pff" --out "$T/evpf" --quiet >"$T/table" 2>"$T/e"
check "eval --kind pfpascal" 0 $?
grep -q "max(W, H) of the target image" "$T/table" || { echo "FAIL PF-PASCAL threshold rule not in the table"; fail=1; }
grep -Eq '"dataset_kind":[[:space:]]*"pfpascal"' "$T/evpf/report.json" || { echo "FAIL report.json lacks dataset_kind"; fail=1; }
grep -q "1 pairs" "$T/table" || { echo "FAIL PF-PASCAL pair count: $(head -1 "$T/table")"; fail=1; }
"$BIN" pck --kind pfpascal --dataset "$T/pf" --predictions "$T/evpf/predictions.jsonl" --json "$T/rpf.json" >"$T/table" 2>&1
check "pck --kind pfpascal" 0 $?
grep -q "max(W, H) of the target image" "$T/table" || { echo "FAIL pck PF-PASCAL threshold rule"; fail=1; }
grep -Eq '"threshold":[[:space:]]*"alpha x max\(W, H\) of the target image, strict <"' "$T/rpf.json" || { echo "FAIL pck JSON threshold"; fail=1; }
"$BIN" pck --dataset "$T/ds" --predictions "$T/ev/predictions.jsonl" >"$T/table" 2>&1
grep -q "max(w, h) of the target bbox" "$T/table" || { echo "FAIL SPair threshold rule"; fail=1; }
"$BIN" pck --kind pascal --dataset "$T/pf" --predictions "$T/bad.jsonl" >/dev/null 2>"$T/e"; check "pck --kind pascal" 2 $?
grep -q "expected spair, pfpascal or ap10k" "$T/e" || { echo "FAIL --kind message: $(cat "$T/e")"; fail=1; }
"$BIN" eval --kind spair --split test_cross_species --dataset "$T/ds" --features "$T/ds/Features" >/dev/null 2>&1
check "eval --split test_cross_species on SPair" 2 $?
"$BIN" eval --kind ap10k --split test_cross_species --dataset "$T/nope" --features "$T/ds/Features" --quiet >/dev/null 2>"$T/e"
check "eval --kind ap10k, missing root" 1 $?
grep -q "nope" "$T/e" || { echo "FAIL ap10k open message: $(cat "$T/e")"; fail=1; }

# computed features with the tiny DINOv2 fixture: a second run is served from the cache
dino=$(grep -l '"Dinov2Model"' "$FIX"/*/config.json | head -1 | xargs dirname)
"$BIN" eval --dataset "$T/ds" --model "$dino" --size 112 --cache "$T/cache" --out "$T/evm" --quiet >/dev/null 2>"$T/e"
check "eval with computed features" 0 $?
rm -rf "$T/evm"
"$BIN" eval --dataset "$T/ds" --model "$dino" --size 112 --cache "$T/cache" --out "$T/evm" --quiet >/dev/null 2>"$T/e"
check "eval from the cache" 0 $?
grep -q "0 computed or imported" "$T/e" || { echo "FAIL second run recomputed features: $(cat "$T/e")"; fail=1; }
# another position rule is another network: its predictions are not taken from the hf run's folder
"$BIN" eval --dataset "$T/ds" --model "$dino" --size 112 --positions hub --out "$T/evm" --quiet >/dev/null 2>"$T/e"
check "eval --positions hub over an hf folder" 1 $?
grep -q "made with other settings" "$T/e" || { echo "FAIL hub resumed hf predictions: $(cat "$T/e")"; fail=1; }
f=$(find "$T/cache" -name '*.safetensors' | head -1)
echo garbage > "$f"
rm -rf "$T/evm"
"$BIN" eval --dataset "$T/ds" --model "$dino" --size 112 --cache "$T/cache" --out "$T/evm" --quiet >/dev/null 2>"$T/e"
check "eval with a corrupt cache entry" 0 $?
grep -q "1 stale cache entries replaced" "$T/e" || { echo "FAIL corrupt cache entry not replaced: $(cat "$T/e")"; fail=1; }
# an image whose file is not the size its annotation says (every prediction would be scaled): refused, naming both
# (the image file replaced by another of another size: its records, image and pair, still agree with each other)
cp -r "$T/ds" "$T/dsz"
imgs=("$T"/dsz/JPEGImages/aeroplane/*.jpg)
cp "${imgs[1]}" "${imgs[0]}"
"$BIN" eval --dataset "$T/dsz" --model "$dino" --size 112 --out "$T/evz" --quiet >/dev/null 2>"$T/e"
check "eval --model, an image of another size than its annotation" 1 $?
grep -q "its annotation says" "$T/e" || { echo "FAIL image size mismatch: $(cat "$T/e")"; fail=1; }

# features computed during eval equal the files of `features --flip`, whatever images share a network pass (--batch;
# the CPU runs a batch image by image): the same predictions, byte for byte
mkdir "$T/fx"
"$BIN" features --model "$dino" --size 112 --flip --out "$T/fx" --quiet "$T"/ds/JPEGImages/*/*.jpg 2>"$T/e"
check "features --flip for eval" 0 $?
"$BIN" eval --dataset "$T/ds" --features "$T/fx" --size 112 --out "$T/evf" --quiet >/dev/null 2>"$T/e"
check "eval with the features files" 0 $?
cmp -s "$T/evf/predictions.jsonl" "$T/evm/predictions.jsonl" || { echo "FAIL eval --model differs from the files"; fail=1; }
"$BIN" eval --dataset "$T/ds" --model "$dino" --size 112 --batch 3 --out "$T/evb" --quiet >/dev/null 2>"$T/e"
check "eval --batch 3" 0 $?
cmp -s "$T/evf/predictions.jsonl" "$T/evb/predictions.jsonl" || { echo "FAIL eval --batch 3 differs"; fail=1; }
"$BIN" eval --dataset "$T/ds" --features "$T/fx" --batch 2 --out "$T/evx" >/dev/null 2>"$T/e"
check "eval --batch without --model" 2 $?
# SA3D_EMU_BIN (set by CMake where it is built): the CLI with the emulated CUDA network backend. --device cuda runs
# two images a pass by default; one a pass must give the same bytes (the emulator's products do not depend on the
# batch; a real GPU's cuBLAS may pick other kernels for other shapes)
if [ -n "${SA3D_EMU_BIN:-}" ]; then
  for b in 1 default; do
    opt=(); [ "$b" = default ] || opt=(--batch "$b")
    "$SA3D_EMU_BIN" eval --dataset "$T/ds" --model "$dino" --size 112 --device cuda "${opt[@]}" --out "$T/eg$b" \
        --quiet >/dev/null 2>"$T/e"
    check "eval --device cuda (emulated), batch $b" 0 $?
  done
  cmp -s "$T/eg1/predictions.jsonl" "$T/egdefault/predictions.jsonl" || { echo "FAIL emulated GPU: batch 2 differs"; fail=1; }
  # the cache key names the dtype: fp16 entries are never served to an fp32 run (they are replaced, as stale),
  # and `features` redoes an image made in another dtype instead of calling it up to date
  k=0
  for dt in fp16 fp32 fp32; do
    k=$((k + 1))
    rm -rf "$T/egc"
    "$SA3D_EMU_BIN" eval --dataset "$T/ds" --model "$dino" --size 112 --device cuda --dtype $dt --cache "$T/cdt" \
        --out "$T/egc" --quiet >/dev/null 2>"$T/e$k"
    check "eval --device cuda --dtype $dt (emulated) with a cache" 0 $?
  done
  grep -q " 0 from cache, [1-9][0-9]* stale" "$T/e2" || { echo "FAIL fp32 after fp16: $(cat "$T/e2")"; fail=1; }
  grep -q " 0 computed or imported" "$T/e3" || { echo "FAIL fp32 cache not used: $(cat "$T/e3")"; fail=1; }
  img=$(ls "$T"/ds/JPEGImages/*/*.jpg | head -1)
  f="$T/fdt/$(basename "${img%.jpg}").features.safetensors"
  for dt in fp16 fp32; do
    "$SA3D_EMU_BIN" features --model "$dino" --size 112 --device cuda --dtype $dt --out "$T/fdt" --quiet "$img"
    check "features --dtype $dt (emulated)" 0 $?
    head -c 400 "$f" | grep -aq "\"dtype\":\"$dt\"" || { echo "FAIL features file not redone in $dt"; fail=1; }
  done
fi
"$BIN" eval --dataset "$T/ds" --model "$dino" --dtype fp16 --out "$T/evx" --quiet >/dev/null 2>"$T/e"
check "eval --dtype fp16 on the cpu" 1 $?
grep -q "needs device cuda" "$T/e" || { echo "FAIL --dtype on the cpu message: $(cat "$T/e")"; fail=1; }
exit $fail
