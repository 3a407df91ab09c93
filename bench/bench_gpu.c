/* bench_gpu: times one network on one device for bench/peers/torch_gpu.py, which runs PyTorch on the same model
 * folder, input and GPU in the same session and prints the table (STYLE.md section 11).
 *
 *     bench_gpu --model DIR [--input FILE] --height H --width W --batch B [--device cuda] [--dtype fp32|fp16|bf16]
 *               [--warmup N] [--runs N] [--out FILE]
 *     bench_gpu --model DIR --sizes HxW,HxW,... [--device ...] [--dtype ...] [--warmup N] [--runs N]
 *
 * FILE holds B x 3 x H x W float32 pixels (raw, little-endian; seeded random ones without it), read into the
 * workspace's input buffer (page-locked on the GPU). One timed pass = sa3d_model_forward: upload of the pixels,
 * the whole network (a CUDA graph replay), the non-finite check of every output; outputs stay on the device
 * (SA3D_WS_NO_DOWNLOAD), as PyTorch's stay in GPU memory. The download of all outputs is timed separately, and
 * for DINOv2 that of feature_map alone (what features and eval read), each after a pass of its own.
 * --out writes the first output (last_hidden_state or predicted_depth) of the whole batch as raw float32 for the
 * driver to compare with PyTorch's. Prints one JSON line, with the device memory of the weights and of the
 * workspace (everything the backend allocated: activations, scratch, the cuBLAS workspace) in MiB.
 *
 * --sizes: one image per pass, each pass at the next size of the list (over and over), as `semalign3d depth` meets
 * images of varying aspect ratios. Times a pass (seeded pixels from host memory, outputs downloaded) two ways in
 * the same run: one workspace resized to each size (sa3d_workspace_resize, what depth and eval do), and a new
 * workspace made for each pass (what they did before: a workspace per input size). Warm-up: --warmup cycles of
 * the list; timed: --runs cycles. Prints one JSON line with the median and mean pass of each and their ratio.
 * Exit status 0, 1 on failure, 2 on usage errors. */
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

/* Seeded pseudo-random pixels in [-2, 2) (xorshift64), the same for every run. */
static void fill_pixels(float *px, size_t n) {
    uint64_t st = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        st ^= st << 13; st ^= st >> 7; st ^= st << 17;
        px[i] = (float)(st >> 40) / (float)(1u << 24) * 4.0f - 2.0f;
    }
}

enum { MAX_SIZES = 32 };

static int parse_sizes(const char *list, int (*hw)[2]) {
    int n = 0;
    for (const char *p = list; *p && n < MAX_SIZES; n++) {
        char *end;
        long h = strtol(p, &end, 10), w = *end == 'x' ? strtol(end + 1, &end, 10) : 0;
        if (h < 1 || w < 1 || h > 16384 || w > 16384 || (*end && *end != ',')) return 0;
        hw[n][0] = (int)h;
        hw[n][1] = (int)w;
        p = *end ? end + 1 : end;
    }
    return n;
}

/* How bench_sizes gets a workspace for each pass. */
enum sizes_mode { SIZES_RESIZE, SIZES_NEW, SIZES_FIXED, N_SIZES_MODES };
static const char *const sizes_mode_name[N_SIZES_MODES] = { "resize", "new", "fixed" };

/* One pass at hw: RESIZE resizes one workspace to it, NEW makes a new workspace for it, FIXED reuses a workspace
 * already at that size (made on its first pass). */
static sa3d_status sizes_pass(const sa3d_model *m, sa3d_workspace **ws, const int hw[2], enum sizes_mode mode,
                              const float *px, sa3d_error *err) {
    if (mode == SIZES_RESIZE && *ws) {
        if (sa3d_workspace_resize(*ws, hw[0], hw[1], err)) return err->code;
    } else if (mode == SIZES_NEW || !*ws) {
        sa3d_workspace_free(*ws);
        *ws = NULL;
        if (sa3d_workspace_new(ws, m, hw[0], hw[1], 0, err)) return err->code;
    }
    return sa3d_model_forward(m, *ws, px, err);
}

/* The --sizes benchmark: RESIZE and NEW cycle through the sizes, warmup + runs times, each pass at the next size;
 * FIXED, the floor (the network alone), runs warmup + runs passes of each size on a workspace made for it. Median
 * and mean of the runs x n timed passes of each mode, in one JSON line. */
static int bench_sizes(const sa3d_model *m, const char *list, const char *dtype, int warmup, int runs) {
    int hw[MAX_SIZES][2], n = parse_sizes(list, hw);
    if (n < 1) {
        fprintf(stderr, "bench_gpu: --sizes '%s': expected HxW[,HxW...] (at most %d, sides 1..16384)\n", list,
                MAX_SIZES);
        return 2;
    }
    size_t most = 0;
    for (int i = 0; i < n; i++)
        if ((size_t)hw[i][0] * hw[i][1] > most) most = (size_t)hw[i][0] * hw[i][1];
    float *px = malloc(most * 3 * sizeof(float));
    size_t passes = (size_t)runs * n;
    double *t[N_SIZES_MODES] = { 0 }, mean[N_SIZES_MODES] = { 0 };
    size_t held = 0;
    sa3d_error err = { 0 };
    int rc = 1;
    for (int k = 0; k < N_SIZES_MODES; k++) t[k] = calloc(passes, sizeof(double));
    if (!px || !t[0] || !t[1] || !t[2]) { fprintf(stderr, "bench_gpu: out of memory\n"); goto done; }
    fill_pixels(px, most * 3);
    for (int k = 0; k < N_SIZES_MODES; k++) {
        sa3d_workspace *ws = NULL;
        size_t nt = 0;
        /* RESIZE and NEW: cycles of the sizes; FIXED: all passes of one size, then the next size's */
        int fixed = k == SIZES_FIXED, outer = fixed ? n : warmup + runs, inner = fixed ? warmup + runs : n;
        for (int a = 0; a < outer; a++) {
            if (fixed) {
                sa3d_workspace_free(ws);
                ws = NULL;
            }
            for (int b = 0; b < inner; b++) {
                int size = fixed ? a : b, cycle = fixed ? b : a;
                double s = sa3d_now();
                if (sizes_pass(m, &ws, hw[size], (enum sizes_mode)k, px, &err)) {
                    fprintf(stderr, "bench_gpu: %s, %d x %d: %s\n", sizes_mode_name[k], hw[size][0], hw[size][1],
                            err.msg);
                    sa3d_workspace_free(ws);
                    goto done;
                }
                double ms = (sa3d_now() - s) * 1e3;
                if (cycle >= warmup) {
                    t[k][nt++] = ms;
                    mean[k] += ms / (double)passes;
                }
            }
        }
        if (k == SIZES_RESIZE) held = sa3d_workspace_device_bytes(ws) + sa3d_workspace_bytes(ws);
        sa3d_workspace_free(ws);
        qsort(t[k], passes, sizeof(double), cmp_double);
    }
    printf("{\"impl\": \"semalign3d\", \"mode\": \"sizes\", \"device\": \"%s\", \"dtype\": \"%s\", \"sizes\": \"%s\", "
           "\"passes\": %zu", sa3d_model_device(m), dtype, list, passes);
    for (int k = 0; k < N_SIZES_MODES; k++)
        printf(", \"ms_%s_median\": %.4f, \"ms_%s_mean\": %.4f", sizes_mode_name[k], t[k][passes / 2],
               sizes_mode_name[k], mean[k]);
    printf(", \"new_over_resize\": %.3f, \"resize_over_fixed\": %.3f, \"mib_resize\": %.2f}\n",
           mean[SIZES_NEW] / mean[SIZES_RESIZE], mean[SIZES_RESIZE] / mean[SIZES_FIXED], held / 1048576.0);
    rc = 0;
done:
    for (int k = 0; k < N_SIZES_MODES; k++) free(t[k]);
    free(px);
    return rc;
}

int main(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *out = NULL, *device = "cuda", *dtype = "fp32", *sizes = NULL;
    int H = 0, W = 0, B = 1, warmup = 5, runs = 20;
    for (int i = 1; i < argc; i += 2) {   /* --name value pairs */
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
        else if (!strcmp(a, "--sizes")) sizes = v;
        else { fprintf(stderr, "bench_gpu: unknown argument '%s'\n", a); return 2; }
    }
    if (!model || (!sizes && (H <= 0 || W <= 0)) || B <= 0 || runs <= 0 || runs > 10000 || warmup < 0) {
        fprintf(stderr, "usage: bench_gpu --model DIR --input FILE --height H --width W --batch B [--dtype D] "
                        "[--warmup N] [--runs N] [--out FILE]\n"
                        "       bench_gpu --model DIR --sizes HxW,HxW,... [--dtype D] [--warmup N] [--runs N]\n");
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
    if (sizes) {
        rc = bench_sizes(m, sizes, dtype, warmup, runs);
        sa3d_model_free(m);
        free(t);
        return rc;
    }
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
    } else {
        fill_pixels(px, n);
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
    double dl_ms = (sa3d_now() - s) * 1e3, dl_fmap_ms = -1, out_mib = 0;
    for (int i = 0; i < sa3d_workspace_n_outputs(ws); i++)
        out_mib += (double)sa3d_tensor_view_numel(sa3d_workspace_output_at(ws, i)) * sizeof(float) / 1048576.0;
    if (sa3d_workspace_output(ws, "feature_map")) {
        if (sa3d_model_forward(m, ws, NULL, &err)) goto fail;
        s = sa3d_now();
        if (sa3d_workspace_download_output(ws, "feature_map", &err)) goto fail;
        dl_fmap_ms = (sa3d_now() - s) * 1e3;
    }
    const sa3d_tensor_view *o = sa3d_workspace_output_at(ws, 0);
    if (out) {
        size_t k = sa3d_tensor_view_numel(o);
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
           "\"width\": %d, \"ms_min\": %.4f, \"ms_median\": %.4f, \"ms_download\": %.4f, \"mib_outputs\": %.2f, "
           "\"ms_download_feature_map\": %.4f, \"load_s\": %.3f, \"mib_weights\": %.2f, \"mib_workspace\": %.2f, "
           "\"output\": \"%s\"}\n", sa3d_model_device(m), dtype, B, H, W, t[0], t[runs / 2], dl_ms, out_mib,
           dl_fmap_ms, load_s, sa3d_model_device_bytes(m) / 1048576.0,
           sa3d_workspace_device_bytes(ws) / 1048576.0, o->name);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "bench_gpu: %s\n", err.msg);
    free(t);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    return rc;
}
