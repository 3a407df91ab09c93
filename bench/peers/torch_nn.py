#!/usr/bin/python3
"""PyTorch peer of bench_nn (STYLE.md section 11): the same DINOv2 / Depth Anything V2 forward pass in plain torch.

transformers is not a dependency: the modules below restate Hugging Face's Dinov2Model,
Dinov2WithRegistersModel and DepthAnythingForDepthEstimation (eager attention: matmul, softmax, matmul) as
functional torch code over the state dict of a Hugging Face model folder (config.json + model.safetensors, read
with json + numpy; no safetensors package). Weights are memory-mapped copy-on-write, as bench_nn maps them.

    torch_nn.py --model DIR --input in.safetensors [--ours out.safetensors] --threads N --warmup W --runs R
        times the forward pass on input's "pixel_values" [1][3][H][W] (warm-up, then best of R) and prints one
        JSON line: best ms, every run, peak RSS (VmHWM), minor page faults per timed run, and, with --ours, the
        largest difference from bench_nn's output for the same input.
    torch_nn.py --probe [--threads N]   prints torch's version, its BLAS and its matmul rate (2048^3 float32 at
                                        N threads, GFLOP/s) as one JSON line.
    torch_nn.py --check-fixture DIR     runs DIR's reference.safetensors input (a Hugging Face model folder with
                                        reference outputs, ../shared/fixtures) and compares with the reference.
Exit status: 0 on success, 1 on any error (message on stderr), 2 when --check-fixture exceeds its bound.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# ---- safetensors (https://huggingface.co/docs/safetensors): 8-byte little-endian header length, JSON header,
# ---- then the data section. Only what the model files use.

_NP_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path):
    """name -> torch tensor (float32). Aligned F32 tensors share the copy-on-write mapping; others are copied."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ValueError(f"{path}: file too short for a safetensors header")
        n = int.from_bytes(f.read(8), "little")
        if n > size - 8:
            raise ValueError(f"{path}: header length {n} runs past the end of the file")
        header = json.loads(f.read(n))
        buf = np.memmap(f, dtype=np.uint8, mode="c") if size > 8 + n else np.zeros(8 + n, np.uint8)
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        raw = buf[base + begin:base + end]
        shape = tuple(t["shape"])
        dt = t["dtype"]
        if dt == "BF16":
            a = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dt in _NP_DTYPES:
            if (base + begin) % np.dtype(_NP_DTYPES[dt]).itemsize:
                raw = raw.copy()
            a = raw.view(_NP_DTYPES[dt])
            if dt != "F32":
                a = a.astype(np.float32)
        else:
            raise ValueError(f"{path}: tensor '{name}': unsupported dtype {dt}")
        out[name] = torch.from_numpy(a.reshape(shape))
    return out


def read_config(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        return json.load(f)


# ---- DINOv2 (Dinov2Model / Dinov2WithRegistersModel / the Dinov2Backbone inside Depth Anything) ----

def vit_config(c, with_registers):
    """The Dinov2Config fields that change the computation, with Hugging Face's defaults."""
    D = c.get("hidden_size", 768)
    swiglu = c.get("use_swiglu_ffn", False)
    hidden = int(D * c.get("mlp_ratio", 4))
    act = c.get("hidden_act", "gelu")
    acts = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu,
            "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
            "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
            "gelu_fast": lambda x: F.gelu(x, approximate="tanh")}
    if act not in acts:
        raise ValueError(f"hidden_act {act!r} is not supported")
    return {
        "D": D, "L": c.get("num_hidden_layers", 12), "heads": c.get("num_attention_heads", 12),
        "P": c.get("patch_size", 14), "eps": c.get("layer_norm_eps", 1e-6),
        "registers": c.get("num_register_tokens", 4) if with_registers else 0,
        "antialias": with_registers, "swiglu": swiglu, "act": acts[act],
        "mlp_hidden": (int(hidden * 2 / 3) + 7) // 8 * 8 if swiglu else hidden,
        "apply_layernorm": c.get("apply_layernorm", True),
    }


def interpolate_pos_encoding(pos, gh, gw, H, W, antialias):
    """Dinov2Embeddings.interpolate_pos_encoding: bicubic (align_corners=False) to the patch grid."""
    n_pos = pos.shape[1] - 1
    if gh * gw == n_pos and H == W:
        return pos
    D = pos.shape[-1]
    G = int(math.sqrt(n_pos))
    grid = pos[:, 1:].reshape(1, G, G, D).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False, antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, D)
    return torch.cat((pos[:, :1], grid), dim=1)


def vit_forward(w, v, px, p="", stages=()):
    """Returns (final hidden state before the norm [1][T][D], {stage index: hidden state after block i})."""
    _, _, H, W = px.shape
    D, P, nh = v["D"], v["P"], v["heads"]
    dh = D // nh
    x = F.conv2d(px, w[p + "embeddings.patch_embeddings.projection.weight"],
                 w[p + "embeddings.patch_embeddings.projection.bias"], stride=P)       # [1][D][gh][gw]
    gh, gw = x.shape[2], x.shape[3]
    x = x.flatten(2).transpose(1, 2)                                                 # [1][Np][D]
    x = torch.cat((w[p + "embeddings.cls_token"].expand(1, -1, -1), x), dim=1)
    x = x + interpolate_pos_encoding(w[p + "embeddings.position_embeddings"], gh, gw, H, W, v["antialias"])
    if v["registers"]:
        x = torch.cat((x[:, :1], w[p + "embeddings.register_tokens"].expand(1, -1, -1), x[:, 1:]), dim=1)
    T = x.shape[1]
    scale = 1.0 / math.sqrt(dh)
    out = {}
    for l in range(v["L"]):
        q_ = f"{p}encoder.layer.{l}."
        h = F.layer_norm(x, (D,), w[q_ + "norm1.weight"], w[q_ + "norm1.bias"], v["eps"])
        a = q_ + "attention.attention."
        q = F.linear(h, w[a + "query.weight"], w.get(a + "query.bias")).view(1, T, nh, dh).transpose(1, 2)
        k = F.linear(h, w[a + "key.weight"], w.get(a + "key.bias")).view(1, T, nh, dh).transpose(1, 2)
        val = F.linear(h, w[a + "value.weight"], w.get(a + "value.bias")).view(1, T, nh, dh).transpose(1, 2)
        probs = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * scale, dim=-1)    # eager attention
        ctx = torch.matmul(probs, val).transpose(1, 2).reshape(1, T, D)
        del q, k, val, probs
        attn = F.linear(ctx, w[q_ + "attention.output.dense.weight"], w[q_ + "attention.output.dense.bias"])
        x = x + attn * w[q_ + "layer_scale1.lambda1"]
        h = F.layer_norm(x, (D,), w[q_ + "norm2.weight"], w[q_ + "norm2.bias"], v["eps"])
        if v["swiglu"]:
            h = F.linear(h, w[q_ + "mlp.weights_in.weight"], w[q_ + "mlp.weights_in.bias"])
            h1, h2 = h.chunk(2, dim=-1)
            h = F.linear(F.silu(h1) * h2, w[q_ + "mlp.weights_out.weight"], w[q_ + "mlp.weights_out.bias"])
        else:
            h = v["act"](F.linear(h, w[q_ + "mlp.fc1.weight"], w[q_ + "mlp.fc1.bias"]))
            h = F.linear(h, w[q_ + "mlp.fc2.weight"], w[q_ + "mlp.fc2.bias"])
        x = x + h * w[q_ + "layer_scale2.lambda1"]
        if l + 1 in stages:
            out[l + 1] = x
    return x, out


def dinov2_forward(w, cfg, px):
    """Dinov2Model: last_hidden_state = layernorm(final hidden state)."""
    v = cfg["vit"]
    x, _ = vit_forward(w, v, px)
    return F.layer_norm(x, (v["D"],), w["layernorm.weight"], w["layernorm.bias"], v["eps"])


# ---- Depth Anything V2 (DepthAnythingForDepthEstimation: Dinov2Backbone, DPT-style neck, head) ----

def da_config(c):
    bb = c["backbone_config"]
    v = vit_config(bb, False)
    idx = bb.get("out_indices")
    if idx is None:
        idx = [int(s[len("stage"):]) for s in bb["out_features"]]
    idx = [i if i >= 0 else i + v["L"] + 1 for i in idx]
    return {"vit": v, "out_indices": idx, "reassemble_factors": c["reassemble_factors"],
            "metric": c.get("depth_estimation_type", "relative") == "metric",
            "max_depth": c.get("max_depth", 1.0)}


def preact_residual(w, p, x):
    """DepthAnythingPreActResidualLayer: x + conv2(relu(conv1(relu(x))))."""
    h = F.conv2d(F.relu(x), w[p + "convolution1.weight"], w[p + "convolution1.bias"], padding=1)
    h = F.conv2d(F.relu(h), w[p + "convolution2.weight"], w[p + "convolution2.bias"], padding=1)
    return h + x


def depth_anything_forward(w, cfg, px):
    v = cfg["vit"]
    D, P = v["D"], v["P"]
    _, _, H, W = px.shape
    gh, gw = H // P, W // P
    _, hs = vit_forward(w, v, px, "backbone.", set(cfg["out_indices"]))
    feats = []
    n_prefix = 1 + v["registers"]
    for i, idx in enumerate(cfg["out_indices"]):
        h = hs[idx]
        if v["apply_layernorm"]:
            h = F.layer_norm(h, (D,), w["backbone.layernorm.weight"], w["backbone.layernorm.bias"], v["eps"])
        # DepthAnythingReassembleStage: drop the CLS token, tokens -> [1][D][gh][gw], 1x1 projection, resize
        h = h[:, n_prefix:].reshape(1, gh, gw, D).permute(0, 3, 1, 2).contiguous()
        r = f"neck.reassemble_stage.layers.{i}."
        h = F.conv2d(h, w[r + "projection.weight"], w[r + "projection.bias"])
        f = cfg["reassemble_factors"][i]
        if f > 1:
            h = F.conv_transpose2d(h, w[r + "resize.weight"], w[r + "resize.bias"], stride=int(f))
        elif f < 1:
            h = F.conv2d(h, w[r + "resize.weight"], w[r + "resize.bias"], stride=int(1 / f), padding=1)
        feats.append(F.conv2d(h, w[f"neck.convs.{i}.weight"], None, padding=1))
    # DepthAnythingFeatureFusionStage: from the coarsest map up
    feats = feats[::-1]
    fused = None
    for i, h in enumerate(feats):
        p = f"neck.fusion_stage.layers.{i}."
        if fused is None:
            x = h
        else:
            res = h
            if fused.shape != res.shape:
                res = F.interpolate(res, size=fused.shape[2:], mode="bilinear", align_corners=False)
            x = fused + preact_residual(w, p + "residual_layer1.", res)
        x = preact_residual(w, p + "residual_layer2.", x)
        if i + 1 < len(feats):
            x = F.interpolate(x, size=feats[i + 1].shape[2:], mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        fused = F.conv2d(x, w[p + "projection.weight"], w[p + "projection.bias"])
    # DepthAnythingDepthEstimationHead
    d = F.conv2d(fused, w["head.conv1.weight"], w["head.conv1.bias"], padding=1)
    d = F.interpolate(d, size=(gh * P, gw * P), mode="bilinear", align_corners=True)
    d = F.relu(F.conv2d(d, w["head.conv2.weight"], w["head.conv2.bias"], padding=1))
    d = F.conv2d(d, w["head.conv3.weight"], w["head.conv3.bias"])
    d = torch.sigmoid(d) if cfg["metric"] else F.relu(d)
    return (d * cfg["max_depth"]).squeeze(1)                                        # [1][H][W]


def load_model(model_dir):
    """(forward function, config, weights, output name) for a Hugging Face model folder."""
    c = read_config(model_dir)
    w = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    mt = c.get("model_type")
    if mt in ("dinov2", "dinov2_with_registers"):
        return dinov2_forward, {"vit": vit_config(c, mt == "dinov2_with_registers")}, w, "last_hidden_state"
    if mt == "depth_anything":
        return depth_anything_forward, da_config(c), w, "predicted_depth"
    raise ValueError(f"{model_dir}/config.json: model_type {mt!r} is not supported")


# ---- measurement ----

def peak_rss_kb():
    """VmHWM of this process (peak RSS since exec), else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def blas_library():
    """The BLAS shared object torch's matmuls actually run in (from the process's mappings)."""
    torch.matmul(torch.ones(64, 64), torch.ones(64, 64))
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1] if len(line.split()) >= 6 else ""
                base = os.path.basename(path)
                if "blas" in base or "mkl" in base or "blis" in base:
                    libs.add(os.path.realpath(path))
    except OSError:
        pass
    return ", ".join(sorted(libs)) or "unknown"


def matmul_gflops(threads, n=2048, runs=5):
    """torch.matmul's rate on an n x n x n float32 product at the run's thread count, best of runs after one
    warm-up: the peer's own GEMM rate, to read beside ours (a BLAS that runs torch's products on fewer cores than
    asked would otherwise pass for slow attention or kernels)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def compare(ours, ref):
    d = (ours.double() - ref.double()).abs().max().item() if ref.numel() else 0.0
    ref_max = ref.double().abs().max().item() if ref.numel() else 0.0
    return d, ref_max


def cmd_run(a):
    torch.set_num_threads(a.threads)
    fwd, cfg, w, out_name = load_model(a.model)
    px = read_safetensors(a.input)["pixel_values"].clone()
    times = []
    with torch.no_grad():
        for _ in range(a.warmup):
            y = fwd(w, cfg, px)
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(a.runs):
            t0 = time.perf_counter()
            y = fwd(w, cfg, px)
            times.append((time.perf_counter() - t0) * 1e3)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / a.runs
    if not bool(torch.isfinite(y).all()):
        raise ValueError(f"{out_name}: non-finite output")
    r = {"ms": min(times), "runs_ms": times, "peak_rss_kb": peak_rss_kb(), "faults_per_run": faults,
         "threads": torch.get_num_threads(),
         "output": out_name, "shape": list(y.shape)}
    if a.ours:
        ours = read_safetensors(a.ours)[out_name]
        if tuple(ours.shape) != tuple(y.shape):
            raise ValueError(f"{a.ours}: {out_name} has shape {list(ours.shape)}, torch gives {list(y.shape)}")
        d, ref_max = compare(ours, y)
        r.update({"max_abs_diff": d, "torch_max_abs": ref_max, "max_rel_diff": d / ref_max if ref_max else d})
    print(json.dumps(r), flush=True)


def cmd_check_fixture(a):
    """Validates this peer against Hugging Face's own outputs (transformers, eager attention)."""
    torch.set_num_threads(a.threads)
    fwd, cfg, w, out_name = load_model(a.check_fixture)
    ref = read_safetensors(os.path.join(a.check_fixture, "reference.safetensors"))
    with torch.no_grad():
        y = fwd(w, cfg, ref["pixel_values"].clone())
    d, ref_max = compare(y, ref[out_name])
    bound = 1e-4 * max(1.0, ref_max)   # STYLE.md section 7: network output vs HF reference
    print(json.dumps({"fixture": a.check_fixture, "output": out_name, "max_abs_diff": d, "ref_max_abs": ref_max,
                      "bound": bound, "ok": d <= bound}), flush=True)
    return 0 if d <= bound else 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model")
    ap.add_argument("--input")
    ap.add_argument("--ours")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--probe", action="store_true")
    ap.add_argument("--check-fixture")
    a = ap.parse_args()
    if a.probe:
        print(json.dumps({"torch": torch.__version__, "numpy": np.__version__, "blas": blas_library(),
                          "python": sys.version.split()[0], "threads": a.threads,
                          "matmul_2048_gflops": matmul_gflops(a.threads)}), flush=True)
        return 0
    if a.check_fixture:
        return cmd_check_fixture(a)
    if not a.model or not a.input:
        ap.error("--model and --input are required (or --probe / --check-fixture)")
    if a.threads < 1 or a.runs < 1 or a.warmup < 0:
        ap.error("--threads and --runs must be >= 1, --warmup >= 0")
    cmd_run(a)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"torch_nn.py: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
