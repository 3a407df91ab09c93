#!/usr/bin/env bash
# The GPU check of issue 6, as one script for a machine with an NVIDIA GPU, PyTorch and transformers (the
# `device` machine of this workplace): the CUDA parity tests (networks, aligner), the side-by-side benchmark of
# the networks with PyTorch, then the aligner on the CPU and the GPU side by side.
#
#   bench/run_gpu.sh [STAGE]     STAGE (default .devrun) holds what was built elsewhere:
#       STAGE/bin/{test_nn_cuda,test_nn,bench_gpu,test_align_cuda,bench_align,semalign3d}
#                                                     from a -DSEMALIGN3D_CUDA=ON build
#       STAGE/lib/*.so*                               their non-CUDA shared libraries (OpenBLAS, cJSON, ...)
#       STAGE/fixtures/<model fixture dirs>           copies of ../shared/fixtures model folders
# With a full build tree on the GPU machine itself, point STAGE at a folder of links instead. Arguments after STAGE
# go to peers/torch_gpu.py (for example --cases vitb840,vitl840 --batches 1).
# Results go to $OUT (or /tmp/sa3d-gpu-out): parity.log, parity_align.log, bench.log, bench_gpu.json,
# attention_rows.log, dpt_profile.log, sizes.log + bench_sizes.json, bench_align.log, pipeline.log.
# SECTIONS (default "parity bench attention dpt sizes align pipeline") picks the sections to run, in this order; a
# first short run on a GPU lent for minutes can be SECTIONS="parity bench" with a few cases.
set -uo pipefail
stage="${1:-.devrun}"
out="${OUT:-/tmp/sa3d-gpu-out}"
sections=" ${SECTIONS:-parity bench attention dpt sizes align pipeline} "
want() { [[ "$sections" == *" $1 "* ]]; }
mkdir -p "$out"
cublas_dir="$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null || true)"
export LD_LIBRARY_PATH="$PWD/$stage/lib:/usr/local/cuda/lib64:${cublas_dir}:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
ldd "$stage/bin/bench_gpu" | grep "not found" && echo "missing libraries (above)"
if want parity; then
  echo "== parity (GPU vs CPU on every fixture, fp32/fp16/bf16)"
  SEMALIGN3D_FIXTURES="$PWD/$stage/fixtures" timeout 120 "$stage/bin/test_nn_cuda" 2>&1 | tee "$out/parity.log"
  echo "test_nn_cuda exit: ${PIPESTATUS[0]}"
  echo "== aligner parity (GPU vs CPU)"
  timeout 120 "$stage/bin/test_align_cuda" 2>&1 | tee "$out/parity_align.log"
  echo "test_align_cuda exit: ${PIPESTATUS[0]}"
fi
if want bench; then
  echo "== benchmark"
  PYTHONUNBUFFERED=1 timeout "${BENCH_TIMEOUT:-240}" python3 bench/peers/torch_gpu.py --bench "$stage/bin/bench_gpu" \
      --json "$out/bench_gpu.json" --dir /tmp/sa3d-gpu "${@:2}" 2>&1 | tee "$out/bench.log"
  echo "bench exit: ${PIPESTATUS[0]}"
fi
if want attention; then
  echo "== fused attention: 64 against 128 query rows per block (SA3D_CUDA_FLASH), fp16, on the models saved above"
  # The backend picks 128 rows when that still gives every multiprocessor a block; this measures both where it
  # matters, then one eager pass with per-step times (SA3D_CUDA_PROFILE) to see the attention's share.
  for c in vits518:518:518 vitb840:840:840 vitl840:840:840; do
    IFS=: read -r name H W <<<"$c"
    [ -d "/tmp/sa3d-gpu/$name" ] || continue
    for B in 1 8; do
      for rows in 64 128; do
        printf '%s b%s rows %s: ' "$name" "$B" "$rows"
        SA3D_CUDA_FLASH=$rows timeout 60 "$stage/bin/bench_gpu" --model "/tmp/sa3d-gpu/$name" --height "$H" \
            --width "$W" --batch "$B" --dtype fp16 --warmup 3 --runs 10 2>&1 | tail -1
      done
    done
    SA3D_CUDA_PROFILE=1 timeout 60 "$stage/bin/bench_gpu" --model "/tmp/sa3d-gpu/$name" --height "$H" --width "$W" \
        --batch 1 --dtype fp16 --warmup 1 --runs 1 2>&1 | grep "cuda profile" | tail -1
  done 2>&1 | tee "$out/attention_rows.log"
fi
if want dpt; then
  echo "== Depth Anything V2 Small: per-step times of one eager pass (the DPT head against the backbone), with the"
  echo "   k x k convolutions by the implicit-GEMM kernel (the default) and by im2col + GEMM (SA3D_CUDA_IMPLICIT=0)"
  if [ -d /tmp/sa3d-gpu/da_s518x686 ]; then
    for dt in fp32 fp16; do
      for B in 1 8; do
        printf 'da_s518x686 %s b%s: ' "$dt" "$B"
        SA3D_CUDA_PROFILE=1 timeout 60 "$stage/bin/bench_gpu" --model /tmp/sa3d-gpu/da_s518x686 --height 518 \
            --width 686 --batch "$B" --dtype "$dt" --warmup 1 --runs 1 2>&1 | grep "cuda profile" | tail -1
        for im in 1 0; do   # timed by graph replay, both ways
          printf 'da_s518x686 %s b%s implicit %s, timed: ' "$dt" "$B" "$im"
          SA3D_CUDA_IMPLICIT=$im timeout 60 "$stage/bin/bench_gpu" --model /tmp/sa3d-gpu/da_s518x686 --height 518 \
              --width 686 --batch "$B" --dtype "$dt" --warmup 3 --runs 10 2>&1 | tail -1
        done
      done
    done
  fi 2>&1 | tee "$out/dpt_profile.log"
fi
if want sizes; then
  echo "== Depth Anything V2 Small, one image per pass at SPair-like sizes in turn (what depth meets): PyTorch against"
  echo "   our workspace resized to each size, and against a new workspace per pass (before sa3d_workspace_resize)"
  PYTHONUNBUFFERED=1 timeout 180 python3 bench/peers/torch_gpu.py --bench "$stage/bin/bench_gpu" --cases da_s518x686 \
      --sizes 392x518,518x392,350x518,518x518,294x518,378x518 --dtypes fp32,fp16 --warmup 2 --runs 5 \
      --json "$out/bench_sizes.json" --dir /tmp/sa3d-gpu 2>&1 | tee "$out/sizes.log"
  echo "sizes exit: ${PIPESTATUS[0]}"
fi
if want align; then
  echo "== aligner benchmark (CPU threads: all cores)"
  timeout "${ALIGN_TIMEOUT:-180}" "$stage/bin/bench_align" --device cuda --threads "$(nproc)" --poses 2 2>&1 | \
      tee "$out/bench_align.log"
  echo "bench_align exit: ${PIPESTATUS[0]}"
fi
if want pipeline; then
  echo "== features --flip (fp16 ViT-B/14 at 840) and depth (fp16 Depth Anything V2 Small) over 48 images: the image"
  echo "   pipeline against the stages one by one"
  for name in vitb840 da_s518x686; do
    [ -d "/tmp/sa3d-gpu/$name" ] || continue
    timeout 240 bash bench/run_pipeline.sh "$stage/bin/semalign3d" "/tmp/sa3d-gpu/$name" 48 2 -- --device cuda \
        --dtype fp16
  done 2>&1 | tee "$out/pipeline.log"
fi
