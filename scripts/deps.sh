#!/usr/bin/env bash
# Installs the Debian 12 packages semalign3d needs to build and test (run as root, or with sudo available).
# Idempotent: packages already present are left alone.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-openmp-dev libcjson-dev libjpeg62-turbo-dev libpng-dev
      zlib1g-dev)
# clang + its sanitizer/fuzzer runtime for the fuzz targets (optional: skipped with SEMALIGN3D_NO_FUZZ=1)
if [ "${SEMALIGN3D_NO_FUZZ:-0}" != 1 ]; then pkgs+=(clang libclang-rt-14-dev); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing: ${missing[*]}" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
