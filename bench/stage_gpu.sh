#!/usr/bin/env bash
# Stages what bench/run_gpu.sh needs into one folder (default .devrun, git-ignored) for the `device` tool to carry
# to a GPU machine: the CUDA build's test and benchmark programs, the non-CUDA shared libraries they load
# (OpenBLAS, cJSON, libjpeg, libpng, ...; the GPU machine has the CUDA ones), and the network fixtures.
#
#   bench/stage_gpu.sh [BUILD [STAGE]]    BUILD: a -DSEMALIGN3D_CUDA=ON build folder (default build-cuda)
#
# It also packs STAGE into STAGE.tar.gz (24 MB against 60 MB unpacked, most of it OpenBLAS), which is what to carry:
# the `device` tool carries at most 64 MiB with the working tree. On the GPU machine:
#   tar xzf .devrun.tar.gz && bash bench/run_gpu.sh .devrun
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build-cuda}"
stage="${2:-.devrun}"
fixtures="${SEMALIGN3D_FIXTURES:-../shared/fixtures}"
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib" "$stage/fixtures"
for b in tests/test_nn_cuda tests/test_nn tests/test_align_cuda bench/bench_gpu bench/bench_align semalign3d; do
  cp "$build/$b" "$stage/bin/"
done
# shared libraries outside the CUDA toolkit and the C library
ldd "$stage"/bin/* | awk '/=> \// {print $3}' | sort -u |
  grep -vE 'libcuda|libcublas|libcudart|/libc\.so|/libm\.so|ld-linux|libpthread|libdl|librt|libgcc_s|libstdc' |
  while read -r lib; do cp -L "$lib" "$stage/lib/"; done
for d in "$fixtures"/*/; do
  [ -f "$d/config.json" ] && cp -r "$d" "$stage/fixtures/"
done
tar czf "$stage.tar.gz" "$stage"
du -sh "$stage" "$stage.tar.gz"
