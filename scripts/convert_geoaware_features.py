#!/usr/bin/env python3
"""Converts GeoAware-SC feature files (.pt, torch.save'd tensors) into NumPy files semalign3d imports.

usage: convert_geoaware_features.py SRC_DIR DST_DIR [--suffix _dino]

For every SRC_DIR/**/<id><suffix>.pt (and <id><suffix>_flip.pt, the mirrored image) holding a tensor of shape
[1][C][g][g] or [C][g][g], writes DST_DIR/<category>/<id>.npy (and <id>_flip.npy) as float32 [C][g][g], where
<category> is the .pt file's parent folder name (GeoAware keeps one folder per SPair category). Then:

    semalign3d eval --dataset SPair-71k --features DST_DIR ...

GeoAware-SC's raw DINOv2 maps are <id>_dino.pt (--suffix _dino). For its fused SD+DINOv2 features (the 85.6 PCK
model), run GeoAware's aggregation network in Python and torch.save the [1][768][60][60] result per image
(e.g. as <id>_agg.pt), then convert with --suffix _agg. Needs PyTorch and NumPy (Debian: python3-torch).
"""
import argparse
import os
import sys

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--suffix", default="_dino")
    a = ap.parse_args()
    n = 0
    for dirpath, _, files in os.walk(a.src):
        category = os.path.basename(dirpath)
        for f in sorted(files):
            for flip in ("", "_flip"):
                tail = a.suffix + flip + ".pt"
                if not f.endswith(tail) or (flip == "" and f.endswith(a.suffix + "_flip.pt")):
                    continue
                image_id = f[: -len(tail)]
                t = torch.load(os.path.join(dirpath, f), map_location="cpu")
                if isinstance(t, dict):
                    sys.exit(f"{f}: holds a dict ({', '.join(t)}); aggregate it to one [C][g][g] tensor first")
                x = t.detach().float().numpy()
                if x.ndim == 4 and x.shape[0] == 1:
                    x = x[0]
                if x.ndim != 3 or x.shape[1] != x.shape[2]:
                    sys.exit(f"{f}: expected [1][C][g][g] or [C][g][g], got {list(t.shape)}")
                out_dir = os.path.join(a.dst, category)
                os.makedirs(out_dir, exist_ok=True)
                out = os.path.join(out_dir, image_id + flip + ".npy")
                np.save(out + ".tmp.npy", np.ascontiguousarray(x, dtype=np.float32))
                os.replace(out + ".tmp.npy", out)
                n += 1
    print(f"converted {n} feature maps into {a.dst}")


if __name__ == "__main__":
    main()
