#!/usr/bin/env bash
# Builds bench_nn (Release, in build-bench/) and runs the networks benchmark with the PyTorch peer, writing the
# table to stdout and the numbers to out/bench_nn.json. Extra arguments go to bench_nn, e.g.
#     bench/run_nn.sh --threads 2 --runs 3
#     bench/run_nn.sh --cases vitb840 --runs 1
# Waits (up to BENCH_WAIT_S seconds, default 600) for the 1-minute load average to fall below BENCH_MAX_LOAD
# (default 0.5) before it starts, since other work on the machine skews every number.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${BUILD_DIR:-$root/build-bench}"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j2 --target bench_nn >/dev/null

max_load="${BENCH_MAX_LOAD:-0.5}"
deadline=$(( $(date +%s) + ${BENCH_WAIT_S:-600} ))
while :; do
    load="$(cut -d' ' -f1 /proc/loadavg)"
    if awk -v l="$load" -v m="$max_load" 'BEGIN { exit !(l < m) }'; then break; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "run_nn.sh: load average still $load (>= $max_load); running anyway" >&2
        break
    fi
    sleep 10
done

mkdir -p "$root/out"
exec "$build/bench/bench_nn" --json "$root/out/bench_nn.json" "$@"
