/* bench_gpu: times one network on one device for bench/peers/torch_gpu.py, which runs PyTorch on the same model
 * folder, input and GPU in the same session and prints the table (STYLE.md section 11).
 *
 *     bench_gpu --model DIR [--input FILE] --height H --width W --batch B [--device cuda] [--dtype fp32|fp16|bf16]
 *               [--warmup N] [--runs N] [--out FILE]
 *
 * FILE holds B x 3 x H x W float32 pixels (raw, little-endian; seeded random ones without it), read into the workspace's input buffer
 * (page-locked on the GPU). One timed pass = sa3d_model_forward: upload of the pixels, the whole network
 * (a CUDA graph replay), the non-finite check of every output; outputs stay on the device
 * (SA3D_WS_NO_DOWNLOAD), as PyTorch's stay in GPU memory. The download of all outputs is timed separately.
 * --out writes the first output (last_hidden_state or predicted_depth) of the whole batch as raw float32 for the
 * driver to compare with PyTorch's. Prints one JSON line, with the device memory of the weights and of the
 * workspace (everything the backend allocated: activations, scratch, the cuBLAS workspace) in MiB. Exit status
 * 0, 1 on failure, 2 on usage errors. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/nn.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *out = NULL, *device = "cuda", *dtype = "fp32";
    int H = 0, W = 0, B = 1, warmup = 5, runs = 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) { fprintf(stderr, "bench_gpu: %s needs a value\n", a); return 2; }
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--input")) input = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--device")) device = v;
        else if (!strcmp(a, "--dtype")) dtype = v;
        else if (!strcmp(a, "--height")) H = atoi(v);
        else if (!strcmp(a, "--width")) W = atoi(v);
        else if (!strcmp(a, "--batch")) B = atoi(v);
        else if (!strcmp(a, "--warmup")) warmup = atoi(v);
        else if (!strcmp(a, "--runs")) runs = atoi(v);
        else { fprintf(stderr, "bench_gpu: unknown argument '%s'\n", a); return 2; }
        i++;
    }
    if (!model || H <= 0 || W <= 0 || B <= 0 || runs <= 0 || runs > 10000 || warmup < 0) {
        fprintf(stderr, "usage: bench_gpu --model DIR --input FILE --height H --width W --batch B [--dtype D] "
                        "[--warmup N] [--runs N] [--out FILE]\n");
        return 2;
    }
    sa3d_error err = { 0 };
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    double *t = calloc((size_t)runs, sizeof *t);
    int rc = 1;
    sa3d_model_params p = sa3d_model_params_default();
    p.device = device;
    p.dtype = dtype;
    double t0 = sa3d_now();
    if (!t || sa3d_model_open(&m, model, &p, &err)) goto fail;
    double load_s = sa3d_now() - t0;
    if (sa3d_workspace_new_batch(&ws, m, H, W, B, SA3D_WS_NO_DOWNLOAD, &err)) goto fail;
    float *px = sa3d_workspace_input(ws);
    size_t n = (size_t)B * 3 * H * W;
    if (!px) { snprintf(err.msg, sizeof err.msg, "out of memory"); goto fail; }
    if (input) {
        FILE *f = fopen(input, "rb");
        if (!f || fread(px, sizeof(float), n, f) != n) {
            snprintf(err.msg, sizeof err.msg, "%s: cannot read %zu floats", input, n);
            if (f) fclose(f);
            goto fail;
        }
        fclose(f);
    } else {   /* no input file: seeded pseudo-random pixels in [-2, 2) */
        uint64_t st = 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < n; i++) {
            st ^= st << 13; st ^= st >> 7; st ^= st << 17;
            px[i] = (float)(st >> 40) / (float)(1u << 24) * 4.0f - 2.0f;
        }
    }
    for (int i = 0; i < warmup; i++)
        if (sa3d_model_forward(m, ws, NULL, &err)) goto fail;
    for (int i = 0; i < runs; i++) {
        double s = sa3d_now();
        if (sa3d_model_forward(m, ws, NULL, &err)) goto fail;
        t[i] = (sa3d_now() - s) * 1e3;
    }
    double s = sa3d_now();
    if (sa3d_workspace_download(ws, &err)) goto fail;
    double dl_ms = (sa3d_now() - s) * 1e3;
    const sa3d_tensor_view *o = sa3d_workspace_output_at(ws, 0);
    if (out) {
        size_t k = 1;
        for (int d = 0; d < o->ndim; d++) k *= (size_t)o->shape[d];
        FILE *g = fopen(out, "wb");
        if (!g || fwrite(o->data, sizeof(float), k, g) != k) {
            snprintf(err.msg, sizeof err.msg, "%s: cannot write", out);
            if (g) fclose(g);
            goto fail;
        }
        fclose(g);
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    printf("{\"impl\": \"semalign3d\", \"device\": \"%s\", \"dtype\": \"%s\", \"batch\": %d, \"height\": %d, "
           "\"width\": %d, \"ms_min\": %.4f, \"ms_median\": %.4f, \"ms_download\": %.4f, \"load_s\": %.3f, "
           "\"mib_weights\": %.2f, \"mib_workspace\": %.2f, \"output\": \"%s\"}\n", sa3d_model_device(m), dtype, B,
           H, W, t[0], t[runs / 2], dl_ms, load_s, sa3d_model_device_bytes(m) / 1048576.0,
           sa3d_workspace_device_bytes(ws) / 1048576.0, o->name);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "bench_gpu: %s\n", err.msg);
    free(t);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    return rc;
}
