#!/usr/bin/env python3
"""GPU benchmark (issue 6): semalign3d's CUDA backend and PyTorch + Hugging Face transformers, side by side on the
same GPU, model folder and input, in one run (STYLE.md section 11).

    torch_gpu.py --bench PATH/bench_gpu [--cases vits518,...] [--dtypes fp32,fp16] [--batches 1,8]
                 [--warmup 3] [--runs 10] [--json OUT.json] [--dir TMPDIR]

For each case it builds the Hugging Face model with seeded random weights at the real dimensions (DINOv2
ViT-S/14, ViT-B/14, ViT-L/14 at 518 and 840, Depth Anything V2 Small at 518x686) directly on the GPU, saves it
(config.json + model.safetensors), and for each dtype and batch size:
  - PyTorch: model(pixel_values) under inference_mode, pixel values already on the GPU, wall-clock time of the
    call + synchronize, best and median of --runs after --warmup. fp32 is run twice: PyTorch's default (TF32
    off for matmul) and with torch.backends.cuda.matmul.allow_tf32 = True (what our fp32 uses). fp16 runs the
    model in .half(). The attention implementation transformers picked (sdpa) is printed.
  - ours: bench_gpu (a separate process) on the same folder and pixels; its time includes the pixel upload
    (page-locked DMA), the whole pass and the non-finite check of every output.
  - parity: the largest |ours - torch fp32| over the first output (last_hidden_state / predicted_depth),
    relative to max(1, max |torch|).
  - memory (MiB): PyTorch's weights (parameters and buffers in the run's dtype) + input + the allocator's peak
    growth during one pass (torch.cuda.max_memory_allocated), against ours: the device memory bench_gpu reports
    for the weights + the workspace (activations, scratch and the 32 MiB cuBLAS workspace). Neither counts the CUDA
    context or cuBLAS's own allocations.
Prints one table row per (case, dtype, batch) and writes every number to --json.

With --sizes HxW,HxW,... it times instead, per case and dtype, one image per pass with each pass at the next size
of the list (as a run of `semalign3d depth` over photos of varying aspect ratios): PyTorch (pixels from host
memory, output copied back; its caching allocator reuses memory across sizes) against bench_gpu --sizes (the
same work: our workspace resized to each size, a new workspace per pass as before sa3d_workspace_resize, and the
floor: passes at one size at a time).
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

DINO = {
    "s": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6),
    "b": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12),
    "l": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16),
}
CASES = {
    "vits518": ("dinov2", "s", 518, 518), "vits840": ("dinov2", "s", 840, 840),
    "vitb518": ("dinov2", "b", 518, 518), "vitb840": ("dinov2", "b", 840, 840),
    "vitl518": ("dinov2", "l", 518, 518), "vitl840": ("dinov2", "l", 840, 840),
    "da_s518x686": ("depth_anything", "s", 518, 686),
}


def build_model(kind, size, path, seed):
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, Dinov2Model
    torch.manual_seed(seed)
    common = dict(image_size=518, patch_size=14, mlp_ratio=4, layerscale_value=1.0, **DINO[size])
    if kind == "dinov2":
        cfg = Dinov2Config(**common)
        with torch.device("cuda"):
            model = Dinov2Model(cfg)
    else:   # Depth Anything V2 Small: DINOv2-S backbone, stages 3, 6, 9, 12
        bb = Dinov2Config(out_indices=[3, 6, 9, 12], apply_layernorm=True, reshape_hidden_states=False, **common)
        cfg = DepthAnythingConfig(backbone_config=bb, neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64,
                                  head_hidden_size=32, reassemble_hidden_size=384, reassemble_factors=[4, 2, 1, 0.5],
                                  depth_estimation_type="relative", max_depth=1)
        with torch.device("cuda"):
            model = DepthAnythingForDepthEstimation(cfg)
    model.eval()
    model.save_pretrained(path, safe_serialization=True)
    return model


def first_output(out):
    return out.predicted_depth if hasattr(out, "predicted_depth") else out.last_hidden_state


def torch_mib(model, x):
    """Weights + input + the allocator's peak growth during one pass, in MiB."""
    weights = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        model(pixel_values=x)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return (weights + x.numel() * x.element_size() + peak) / 2**20


def time_torch(model, x, warmup, runs):
    with torch.inference_mode():
        for _ in range(warmup):
            model(pixel_values=x)
        torch.cuda.synchronize()
        t = []
        for _ in range(runs):
            s = time.perf_counter()
            out = model(pixel_values=x)
            torch.cuda.synchronize()
            t.append((time.perf_counter() - s) * 1e3)
    t.sort()
    return t[0], t[len(t) // 2], first_output(out).float()


def print_header(hdr):
    print(hdr)
    print("-" * len(hdr), flush=True)


def time_torch_sizes(model, sizes, dtype, warmup, runs):
    """Median and mean ms of a pass (upload, model, output back to the host) over runs cycles of the sizes."""
    rng = np.random.default_rng(0)
    pxs = [torch.from_numpy(rng.standard_normal((1, 3, h, w), dtype=np.float32)) for h, w in sizes]
    t = []
    with torch.inference_mode():
        for c in range(warmup + runs):
            for x in pxs:
                s = time.perf_counter()
                first_output(model(pixel_values=x.cuda().to(dtype))).float().cpu()
                if c >= warmup:
                    t.append((time.perf_counter() - s) * 1e3)
    return sorted(t)[len(t) // 2], sum(t) / len(t)


def run_sizes(a, tmp, dev):
    sizes = [tuple(int(v) for v in hw.split("x")) for hw in a.sizes.split(",")]
    print(f"# {dev}, torch {torch.__version__}; one image per pass, sizes cycled: {a.sizes}; warmup {a.warmup} "
          f"cycles, runs {a.runs} cycles; ms per pass (median / mean)", flush=True)
    hdr = (f"{'case':<12} {'dtype':<5} | {'torch':>15} | {'ours (resize)':>15} | {'ours (new ws)':>15} | "
           f"{'ours (fixed)':>15} | {'speed-up':>8} | {'new/resize':>10}")
    print_header(hdr)
    rows = []
    for name in a.cases.split(","):
        kind, size, _, _ = CASES[name]
        path = os.path.join(tmp, name)
        model = build_model(kind, size, path, seed=1)
        for dtype in a.dtypes.split(","):
            row = dict(case=name, dtype=dtype, sizes=a.sizes, gpu=dev)
            torch.backends.cuda.matmul.allow_tf32 = dtype == "fp32"   # what our fp32 uses
            tdt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
            m = model if dtype == "fp32" else copy.deepcopy(model).to(tdt)
            row["torch_ms_median"], row["torch_ms_mean"] = time_torch_sizes(m, sizes, tdt, a.warmup, a.runs)
            del m
            torch.cuda.empty_cache()
            cmd = [a.bench, "--model", path, "--sizes", a.sizes, "--dtype", dtype, "--warmup", str(a.warmup),
                   "--runs", str(a.runs)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                row["error"] = r.stderr.strip()
                print(f"{name:<12} {dtype:<5} | ours failed: {row['error']}", flush=True)
                rows.append(row)
                continue
            ours = json.loads(r.stdout.strip().splitlines()[-1])
            row.update({f"ours_{k}": v for k, v in ours.items() if k.startswith(("ms_", "new_", "resize_", "mib_"))})
            row["speedup_mean"] = row["torch_ms_mean"] / ours["ms_resize_mean"]
            print(f"{name:<12} {dtype:<5} | {row['torch_ms_median']:6.2f} /{row['torch_ms_mean']:7.2f} | "
                  f"{ours['ms_resize_median']:6.2f} /{ours['ms_resize_mean']:7.2f} | "
                  f"{ours['ms_new_median']:6.2f} /{ours['ms_new_mean']:7.2f} | "
                  f"{ours['ms_fixed_median']:6.2f} /{ours['ms_fixed_mean']:7.2f} | {row['speedup_mean']:7.2f}x | "
                  f"{ours['new_over_resize']:9.2f}x", flush=True)
            rows.append(row)
        torch.backends.cuda.matmul.allow_tf32 = False
        del model
        torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--dtypes", default="fp32,fp16")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--json")
    ap.add_argument("--dir")
    ap.add_argument("--sizes")
    a = ap.parse_args()
    tmp = a.dir or tempfile.mkdtemp(prefix="sa3d-gpu-")
    dev = torch.cuda.get_device_name(0)
    if a.sizes:
        rows = run_sizes(a, tmp, dev)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
        return 0 if all("error" not in r for r in rows) else 1
    print(f"# {dev}, torch {torch.__version__}, CUDA {torch.version.cuda}; warmup {a.warmup}, runs {a.runs}; "
          f"times in ms (best / median)", flush=True)
    hdr = (f"{'case':<12} {'dtype':<5} {'B':>2} | {'torch':>15} {'torch tf32':>15} | {'ours':>15} | "
           f"{'speed-up':>8} | {'dl ms':>6} | {'rel err':>8} | {'MiB torch':>9} {'ours':>7}")
    print_header(hdr)
    rows = []
    for name in a.cases.split(","):
        kind, size, H, W = CASES[name]
        path = os.path.join(tmp, name)
        model = build_model(kind, size, path, seed=1)
        attn = getattr(model.config, "_attn_implementation", "?")
        for B in [int(b) for b in a.batches.split(",")]:
            rng = np.random.default_rng(B)
            px = rng.standard_normal((B, 3, H, W), dtype=np.float32)
            px_path = os.path.join(tmp, f"{name}_b{B}.f32")
            px.tofile(px_path)
            x = torch.from_numpy(px).cuda()
            torch.backends.cuda.matmul.allow_tf32 = False
            tb, tm, ref = time_torch(model, x, a.warmup, a.runs)
            mib32 = torch_mib(model, x)
            for dtype in a.dtypes.split(","):
                row = dict(case=name, dtype=dtype, batch=B, height=H, width=W, attn=attn, gpu=dev)
                if dtype == "fp32":
                    row.update(torch_ms_min=tb, torch_ms_median=tm, torch_mib=mib32)
                    torch.backends.cuda.matmul.allow_tf32 = True
                    row["torch_tf32_ms_min"], row["torch_tf32_ms_median"], _ = time_torch(model, x, a.warmup, a.runs)
                    torch.backends.cuda.matmul.allow_tf32 = False
                else:
                    half = copy.deepcopy(model).to(torch.float16 if dtype == "fp16" else torch.bfloat16)
                    xh = x.to(half.dtype)
                    row["torch_ms_min"], row["torch_ms_median"], _ = time_torch(half, xh, a.warmup, a.runs)
                    row["torch_mib"] = torch_mib(half, xh)
                    del half, xh
                    torch.cuda.empty_cache()
                out_path = os.path.join(tmp, f"{name}_b{B}_{dtype}.out")
                cmd = [a.bench, "--model", path, "--input", px_path, "--height", str(H), "--width", str(W),
                       "--batch", str(B), "--dtype", dtype, "--warmup", str(a.warmup), "--runs", str(a.runs),
                       "--out", out_path]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    row["error"] = r.stderr.strip()
                    print(f"{name:<12} {dtype:<5} {B:>2} | ours failed: {row['error']}", flush=True)
                    rows.append(row)
                    continue
                ours = json.loads(r.stdout.strip().splitlines()[-1])
                row.update(ours_ms_min=ours["ms_min"], ours_ms_median=ours["ms_median"],
                           ours_ms_download=ours["ms_download"], ours_mib_outputs=ours["mib_outputs"],
                           ours_ms_download_feature_map=ours["ms_download_feature_map"], ours_load_s=ours["load_s"],
                           ours_mib=ours["mib_weights"] + ours["mib_workspace"])
                got = torch.from_numpy(np.fromfile(out_path, dtype=np.float32)).cuda()
                want = ref.reshape(-1)
                row["rel_err"] = (got.reshape(-1) - want).abs().max().item() / max(1.0, want.abs().max().item())
                base = row["torch_ms_median"]
                row["speedup_median"] = base / row["ours_ms_median"]
                tf = (f"{row['torch_tf32_ms_min']:6.2f} /{row['torch_tf32_ms_median']:7.2f}" if dtype == "fp32"
                      else f"{'-':>15}")
                print(f"{name:<12} {dtype:<5} {B:>2} | {row['torch_ms_min']:6.2f} /{row['torch_ms_median']:7.2f} "
                      f"{tf} | {row['ours_ms_min']:6.2f} /{row['ours_ms_median']:7.2f} | "
                      f"{row['speedup_median']:7.2f}x | {row['ours_ms_download']:6.2f} | {row['rel_err']:8.2e} | "
                      f"{row['torch_mib']:9.1f} {row['ours_mib']:7.1f}", flush=True)
                rows.append(row)
                os.remove(out_path)
            os.remove(px_path)
            del x, ref
        del model
        torch.cuda.empty_cache()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
