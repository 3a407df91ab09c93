#!/usr/bin/python3
"""PyTorch peer of bench_flip (STYLE.md section 11): GeoAware-SC's two pose distances of its adaptive flip,
restated in torch on the input bench_flip wrote, timed the same way (one warm-up, best of R).

    torch_flip.py --input in.safetensors --threads N --runs R
        in: "a", "b" [C][60][60] unit feature maps, "mask_a", "mask_b" [64][64] (0 / 1).
        Prints one JSON line: both distances, their best ms, torch's version.

masked (GeoAware's get_distance): both maps bilinearly resized to 64 x 64 (align_corners False), multiplied by
their masks, every exact zero set to -1e5, and for each foreground cell of a the smallest Euclidean distance to
any cell of b; the mean. GeoAware loops over the source cells; here one torch.cdist over the foreground rows
gives the same minima (what a PyTorch user would write), so the ratio is against the faster form.
mutual_nn (get_distance_mutual_nn): torch.cdist of all 3600 cells both ways, argmin along each axis, and the
mean distance of the cells of a that are their nearest neighbour's nearest neighbour.
Exit status: 0, or 1 on any error (message on stderr).
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_nn import read_safetensors  # noqa: E402  (the same reader as bench_nn's peer)


def masked_distance(a, b, mask_a, mask_b):
    """a, b: [C][g][g]; masks [64][64]."""
    up_a = F.interpolate(a[None], size=(64, 64), mode="bilinear", align_corners=False)[0] * mask_a
    up_b = F.interpolate(b[None], size=(64, 64), mode="bilinear", align_corners=False)[0] * mask_b
    up_a[up_a == 0] = -100000.0
    up_b[up_b == 0] = -100000.0
    rows = up_a.reshape(up_a.shape[0], -1).t()[mask_a.reshape(-1) == 1]
    cols = up_b.reshape(up_b.shape[0], -1).t()
    return torch.cdist(rows, cols).min(dim=1).values.mean().item()


def mutual_nn_distance(a, b):
    fa = a.reshape(a.shape[0], -1).t()
    fb = b.reshape(b.shape[0], -1).t()
    d = torch.cdist(fa, fb)
    nn12 = d.argmin(dim=1)
    nn21 = d.argmin(dim=0)
    mutual = nn21[nn12] == torch.arange(fa.shape[0])
    return d.min(dim=1).values[mutual].mean().item()


def best_of(fn, runs):
    fn()
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        v = fn()
        best = min(best, 1e3 * (time.perf_counter() - t0))
    return v, best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if a.threads < 1 or a.runs < 1:
        ap.error("--threads and --runs must be >= 1")
    torch.set_num_threads(a.threads)
    t = read_safetensors(a.input)
    with torch.no_grad():
        masked, masked_ms = best_of(lambda: masked_distance(t["a"], t["b"], t["mask_a"], t["mask_b"]), a.runs)
        mutual, mutual_ms = best_of(lambda: mutual_nn_distance(t["a"], t["b"]), a.runs)
    print(json.dumps({"masked": masked, "masked_ms": masked_ms, "mutual_nn": mutual, "mutual_nn_ms": mutual_ms,
                      "torch": torch.__version__}), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"torch_flip.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
