#!/usr/bin/env bash
# Downloads the Hugging Face checkpoints semalign3d runs (config.json + model.safetensors, or the shards listed
# by model.safetensors.index.json) into models/<name>/. Resumable: partial files are continued with curl -C -,
# finished files are skipped. Needs network access to huggingface.co (or $HF_ENDPOINT).
#
# usage: scripts/download-models.sh [--dir DIR] [MODEL...]
#   MODEL is a short name below or a full repo id (owner/name). Default: dinov2-base Depth-Anything-V2-Large-hf
#   (what SemAlign3D uses: GeoAware's DINOv2 ViT-B/14 and Depth Anything V2 Large).
#   --list     print the known models
#   env: HF_TOKEN (sent as a bearer token, for gated repos), HF_ENDPOINT (default https://huggingface.co)
set -euo pipefail

declare -A REPOS=(
  [dinov2-small]=facebook/dinov2-small
  [dinov2-base]=facebook/dinov2-base
  [dinov2-large]=facebook/dinov2-large
  [dinov2-giant]=facebook/dinov2-giant
  [dinov2-with-registers-small]=facebook/dinov2-with-registers-small
  [dinov2-with-registers-base]=facebook/dinov2-with-registers-base
  [dinov2-with-registers-large]=facebook/dinov2-with-registers-large
  [dinov2-with-registers-giant]=facebook/dinov2-with-registers-giant
  [Depth-Anything-V2-Small-hf]=depth-anything/Depth-Anything-V2-Small-hf
  [Depth-Anything-V2-Base-hf]=depth-anything/Depth-Anything-V2-Base-hf
  [Depth-Anything-V2-Large-hf]=depth-anything/Depth-Anything-V2-Large-hf
)
endpoint="${HF_ENDPOINT:-https://huggingface.co}"
dest="models"
models=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dest="$2"; shift 2 ;;
    --dir=*) dest="${1#--dir=}"; shift ;;
    --list) for k in "${!REPOS[@]}"; do echo "$k  ${REPOS[$k]}"; done | sort; exit 0 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "download-models.sh: unknown option $1" >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
[ ${#models[@]} -eq 0 ] && models=(dinov2-base Depth-Anything-V2-Large-hf)
command -v curl >/dev/null || { echo "download-models.sh: curl is not installed (apt install curl)" >&2; exit 1; }

auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer ${HF_TOKEN}")

if ! curl -sS --max-time 20 -o /dev/null -I "${auth[@]}" "$endpoint" 2>/tmp/sa3d_dl_err.$$; then
  echo "download-models.sh: cannot reach $endpoint ($(head -c 200 /tmp/sa3d_dl_err.$$))." >&2
  echo "  No network? Download on another machine and copy models/<name>/{config.json,model.safetensors}" >&2
  echo "  (and Depth Anything's preprocessor_config.json)." >&2
  rm -f /tmp/sa3d_dl_err.$$
  exit 1
fi
rm -f /tmp/sa3d_dl_err.$$

# fetch URL FILE: resumable download into FILE (via FILE.part); 0 on success, 22 when the server says 404.
fetch() {
  local url="$1" out="$2"
  [ -s "$out" ] && { echo "  have $(basename "$out")"; return 0; }
  echo "  get  $(basename "$out")"
  local code
  code=$(curl -L --fail --retry 5 --retry-delay 3 -C - "${auth[@]}" -w '%{http_code}' -o "$out.part" "$url" \
         2>/dev/null) || {
    if [ "$code" = "404" ]; then rm -f "$out.part"; return 22; fi
    echo "download-models.sh: $url: download failed (HTTP ${code:-?}); rerun to resume" >&2; return 1; }
  mv "$out.part" "$out"
}

for name in "${models[@]}"; do
  repo="${REPOS[$name]:-$name}"
  case "$repo" in */*) ;; *) echo "download-models.sh: unknown model '$name' (see --list)" >&2; exit 2 ;; esac
  dir="$dest/${repo#*/}"
  mkdir -p "$dir"
  echo "$repo -> $dir"
  base="$endpoint/$repo/resolve/main"
  fetch "$base/config.json" "$dir/config.json"
  # Depth Anything's input settings (`depth` and `build-prior --depth-model` read them; a repository without the
  # file gets the settings every Depth-Anything-V2-*-hf ships). DINOv2 uses GeoAware-SC's input, not its own.
  case "$repo" in
    depth-anything/*) rc=0; fetch "$base/preprocessor_config.json" "$dir/preprocessor_config.json" || rc=$?
                      [ $rc -eq 0 ] || [ $rc -eq 22 ] || exit 1 ;;
  esac
  rc=0
  fetch "$base/model.safetensors" "$dir/model.safetensors" || rc=$?
  if [ $rc -eq 22 ]; then   # sharded checkpoint
    fetch "$base/model.safetensors.index.json" "$dir/model.safetensors.index.json"
    shards=$(grep -o '"[^"]*\.safetensors"' "$dir/model.safetensors.index.json" | tr -d '"' | sort -u)
    for s in $shards; do
      case "$s" in */*|*..*) echo "download-models.sh: suspicious shard name '$s'" >&2; exit 1 ;; esac
      fetch "$base/$s" "$dir/$s"
    done
  elif [ $rc -ne 0 ]; then
    exit 1
  fi
done
echo "done: models are in $dest/"
