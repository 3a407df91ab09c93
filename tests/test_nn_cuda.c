/* CUDA backend parity: on every model fixture directory, the GPU's outputs against the CPU backend's (and the
 * Hugging Face reference) for fp32/TF32, fp16 and bf16, batched and not. Skips (exit 77) in builds without the
 * CUDA backend or on machines without a GPU, so the CPU CI runs it as "skipped".
 *
 * Bounds, relative to the largest magnitude of the tensor (max |gpu - cpu| <= rel * max(1, max |cpu|)):
 *   fp32 (TF32 matrix products)  1e-3   (issue 6)
 *   fp16                          2e-2   (11-bit significand in every matrix operand and activation)
 *   bf16                          8e-2   (8-bit significand)
 * The fp16/bf16 bounds are documented in README.md; they hold on the fixtures with margin and are not tuned
 * to pass: a kernel bug gives errors of order 1.
 *
 * Linked with tests/nn_cuda_emu.cc (the test_nn_emu program) it runs the backend's own source on the CPU
 * through tests/cuda_emu.hh, in every build: the same cases, the same bounds. */
#define _XOPEN_SOURCE 700   /* nftw (t_files.h) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"
#include "t.h"
#include "t_files.h"

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

static double max_err(const float *a, const float *b, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;   /* NaN propagates as the worst */
    }
    return m;
}

static int cuda_available(void) {
    char **dirs;
    int n = t_model_fixture_dirs(&dirs);
    int ok = 0;
    if (n > 0) {
        sa3d_model_params p = sa3d_model_params_default();
        p.device = "cuda";
        sa3d_model *m = NULL;
        sa3d_error err;
        ok = sa3d_model_open(&m, dirs[0], &p, &err) == SA3D_OK;
        if (!ok) printf("CUDA backend not usable here: %s\n", err.msg);
        sa3d_model_free(m);
    }
    for (int i = 0; i < n; i++) free(dirs[i]);
    free(dirs);
    return ok;
}

static void fill_random(float *x, size_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        x[i] = 2.0f * ((float)(s >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
    }
}

/* One fixture, one dtype, batch B: CPU pass per image vs one GPU pass over the batch, every output. */
static void compare(const char *dir, const char *dtype, double rel, int B, int H, int W) {
    sa3d_error err;
    sa3d_model *cpu = NULL, *gpu = NULL;
    sa3d_workspace *wc = NULL, *wg = NULL;
    sa3d_model_params pc = sa3d_model_params_default(), pg = pc;
    pg.device = "cuda";
    pg.dtype = dtype;
    T_OK(sa3d_model_open(&cpu, dir, &pc, &err), &err);
    T_OK(sa3d_model_open(&gpu, dir, &pg, &err), &err);
    if (!cpu || !gpu) goto done;
    T_OK(sa3d_workspace_new(&wc, cpu, H, W, SA3D_WS_HIDDEN_STATES, &err), &err);
    T_OK(sa3d_workspace_new_batch(&wg, gpu, H, W, B, SA3D_WS_HIDDEN_STATES, &err), &err);
    if (!wc || !wg) goto done;
    size_t n_img = (size_t)3 * H * W;
    float *px = malloc((size_t)B * n_img * sizeof(float));
    fill_random(px, (size_t)B * n_img, 5);
    T_OK(sa3d_model_forward(gpu, wg, px, &err), &err);
    T_CHECK(sa3d_workspace_n_outputs(wc) == sa3d_workspace_n_outputs(wg));
    double worst = 0.0;
    const char *worst_name = "";
    for (int b = 0; b < B; b++) {
        T_OK(sa3d_model_forward(cpu, wc, px + (size_t)b * n_img, &err), &err);
        for (int i = 0; i < sa3d_workspace_n_outputs(wc); i++) {
            const sa3d_tensor_view *c = sa3d_workspace_output_at(wc, i), *g = sa3d_workspace_output_at(wg, i);
            size_t n = sa3d_tensor_view_numel(c);
            T_CHECK(g->shape[0] == B && sa3d_tensor_view_numel(g) == n * (size_t)B);
            double e = max_err(g->data + (size_t)b * n, c->data, n) / fmax(1.0, max_abs(c->data, n));
            if (!(e <= worst)) { worst = e; worst_name = c->name; }
            if (!(e <= rel))
                T_FAIL("%s %s batch %d image %d: %s: relative error %.3g > %.3g", dir, dtype, B, b, c->name, e, rel);
        }
    }
    const char *slash = strrchr(dir, '/');
    printf("  %-30s %-4s batch %d  %dx%d: worst relative error %.3g (%s), bound %.0e\n", slash ? slash + 1 : dir,
           dtype, B, H, W, worst, worst_name, rel);
    free(px);
done:
    sa3d_workspace_free(wc);
    sa3d_workspace_free(wg);
    sa3d_model_free(cpu);
    sa3d_model_free(gpu);
}

static void case_parity_all(void) {
    static const struct { const char *dtype; double rel; } kinds[] = {
        { "fp32", 1e-3 }, { "fp16", 2e-2 }, { "bf16", 8e-2 },
    };
    char **dirs;
    int n = t_model_fixture_dirs(&dirs);
    T_CHECK(n > 0);
    for (int i = 0; i < n; i++) {
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            compare(dirs[i], kinds[k].dtype, kinds[k].rel, 1, 56, 70);
            compare(dirs[i], kinds[k].dtype, kinds[k].rel, 3, 98, 84);
        }
        free(dirs[i]);
    }
    free(dirs);
}

/* The GPU against the fixture's own Hugging Face reference (fp32/TF32), at the reference's input size. */
static void case_reference(void) {
    char **dirs;
    int n = t_model_fixture_dirs(&dirs);
    for (int i = 0; i < n; i++) {
        char path[4300];
        snprintf(path, sizeof path, "%s/reference.safetensors", dirs[i]);
        sa3d_error err;
        sa3d_safetensors *ref = NULL;
        sa3d_model *m = NULL;
        sa3d_workspace *ws = NULL;
        sa3d_model_params p = sa3d_model_params_default();
        p.device = "cuda";
        T_OK(sa3d_st_open(&ref, path, &err), &err);
        T_OK(sa3d_model_open(&m, dirs[i], &p, &err), &err);
        const sa3d_st_tensor *px = ref ? sa3d_st_find(ref, "pixel_values") : NULL;
        if (m && px && px->ndim == 4) {
            float *pixels = malloc(px->numel * sizeof(float));
            T_OK(sa3d_st_read_f32(px, pixels, px->numel, &err), &err);
            T_OK(sa3d_workspace_new(&ws, m, (int)px->shape[2], (int)px->shape[3], SA3D_WS_HIDDEN_STATES, &err), &err);
            if (ws) T_OK(sa3d_model_forward(m, ws, pixels, &err), &err);
            for (int t = 0; ws && t < sa3d_st_count(ref); t++) {
                const sa3d_st_tensor *rt = sa3d_st_get(ref, t);
                const sa3d_tensor_view *o = sa3d_workspace_output(ws, rt->name);
                if (!o) continue;
                float *want = malloc(rt->numel * sizeof(float));
                T_OK(sa3d_st_read_f32(rt, want, rt->numel, &err), &err);
                double e = max_err(o->data, want, rt->numel) / fmax(1.0, max_abs(want, rt->numel));
                if (!(e <= 1e-3)) T_FAIL("%s: %s vs reference: relative error %.3g > 1e-3", dirs[i], rt->name, e);
                free(want);
            }
            free(pixels);
        }
        sa3d_workspace_free(ws);
        sa3d_model_free(m);
        sa3d_st_close(ref);
        free(dirs[i]);
    }
    free(dirs);
}

/* SA3D_WS_NO_DOWNLOAD leaves the views untouched until sa3d_workspace_download (or _download_output, which copies
 * its one view, and only while that view is still on the device); a second pass is identical. */
static void case_download_and_replay(void) {
    char **dirs;
    int n = t_model_fixture_dirs(&dirs);
    if (n <= 0) { T_FAIL("no model fixtures"); return; }
    for (int f = 0; f < n; f++) {   /* DINOv2's several views and Depth Anything's one */
        sa3d_error err;
        sa3d_model *m = NULL;
        sa3d_workspace *ws = NULL;
        sa3d_model_params p = sa3d_model_params_default();
        p.device = "cuda";
        T_OK(sa3d_model_open(&m, dirs[f], &p, &err), &err);
        if (m) T_OK(sa3d_workspace_new(&ws, m, 42, 56, SA3D_WS_NO_DOWNLOAD, &err), &err);
        if (ws) {
            size_t n_px = (size_t)3 * 42 * 56;
            float *px = malloc(n_px * sizeof(float));
            fill_random(px, n_px, 9);
            const sa3d_tensor_view *o = sa3d_workspace_output_at(ws, 0);
            int n_out = sa3d_workspace_n_outputs(ws);
            const sa3d_tensor_view *last = sa3d_workspace_output_at(ws, n_out - 1);
            size_t k = sa3d_tensor_view_numel(o), k_last = sa3d_tensor_view_numel(last);
            for (int i = 0; i < n_out; i++) {
                const sa3d_tensor_view *v = sa3d_workspace_output_at(ws, i);
                memset((void *)v->data, 0, sa3d_tensor_view_numel(v) * sizeof(float));
            }
            T_OK(sa3d_model_forward(m, ws, px, &err), &err);
            T_CHECK(max_abs(o->data, k) == 0.0);   /* not downloaded yet */
            T_OK(sa3d_workspace_download_output(ws, last->name, &err), &err);
            T_CHECK(max_abs(last->data, k_last) > 0.0);
            if (n_out > 1) T_CHECK(max_abs(o->data, k) == 0.0);   /* only the view asked for */
            float *last_copy = malloc(k_last * sizeof(float));
            memcpy(last_copy, last->data, k_last * sizeof(float));
            T_OK(sa3d_workspace_download(ws, &err), &err);
            T_CHECK(max_abs(o->data, k) > 0.0);
            T_CHECK(memcmp(last_copy, last->data, k_last * sizeof(float)) == 0);
            memset((void *)last->data, 0, k_last * sizeof(float));   /* downloaded already: not copied again */
            T_OK(sa3d_workspace_download_output(ws, last->name, &err), &err);
            T_CHECK(max_abs(last->data, k_last) == 0.0);
            memcpy((void *)last->data, last_copy, k_last * sizeof(float));
            free(last_copy);
            T_STATUS(sa3d_workspace_download_output(ws, "no_such_output", &err), SA3D_ERR_ARG, &err);
            T_CHECK(strstr(err.msg, "no_such_output") != NULL);
            float *first = malloc(k * sizeof(float));
            memcpy(first, o->data, k * sizeof(float));
            T_OK(sa3d_model_forward(m, ws, px, &err), &err);   /* graph replay */
            T_OK(sa3d_workspace_download(ws, &err), &err);
            T_CHECK(memcmp(first, o->data, k * sizeof(float)) == 0);
            px[17] = NAN;
            T_STATUS(sa3d_model_forward(m, ws, px, &err), SA3D_ERR_NUMERIC, &err);
            free(first);
            free(px);
    }
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    }
    for (int i = 0; i < n; i++) free(dirs[i]);
    free(dirs);
}

/* The fixtures' heads are 8 wide; DINOv2's are 64, the size the fused fp16/bf16 attention kernel serves. This
 * writes a random two-layer DINOv2 with 64-wide heads (hidden 128, 2 heads) and compares GPU with CPU, so the
 * fused kernel (query and key counts that are not multiples of its 64-row tiles included) is checked here. With
 * swiglu, its MLP is ViT-G's SwiGLU (no fixture has one): hidden (2/3 of 4 D, rounded up to 8) = 344. */
static int write_dh64_model(const char *dir, int swiglu) {
    const int D = 128, L = 2, M = swiglu ? 344 : 4 * D, G = 4, K = 3 * 14 * 14;
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 0;
    fprintf(f, "{\"architectures\": [\"Dinov2Model\"], \"model_type\": \"dinov2\", \"hidden_size\": %d, "
               "\"num_hidden_layers\": %d, \"num_attention_heads\": 2, \"mlp_ratio\": 4, \"image_size\": 56, "
               "\"patch_size\": 14, \"num_channels\": 3, \"hidden_act\": \"gelu\", \"layer_norm_eps\": 1e-06, "
               "\"layerscale_value\": 1.0, \"qkv_bias\": true, \"use_swiglu_ffn\": %s, "
               "\"apply_layernorm\": true}\n", D, L, swiglu ? "true" : "false");
    fclose(f);
    sa3d_st_writer *w = sa3d_st_writer_new();
    sa3d_error err;
    float *buf = malloc(sizeof(float) * 4000000);
    size_t used = 0;
    uint64_t seed = 1;
    int ok = w && buf;
#define ADD(name, scale, ...) do { \
        int64_t sh_[] = { __VA_ARGS__ }; int nd_ = (int)(sizeof sh_ / sizeof sh_[0]); size_t n_ = 1; \
        for (int d_ = 0; d_ < nd_; d_++) n_ *= (size_t)sh_[d_]; \
        fill_random(buf + used, n_, seed++); \
        for (size_t i_ = 0; i_ < n_; i_++) buf[used + i_] *= (scale); \
        if (ok && sa3d_st_writer_add_f32(w, name, nd_, sh_, buf + used, &err)) ok = 0; \
        used += n_; } while (0)
    ADD("embeddings.patch_embeddings.projection.weight", 0.05f, D, 3, 14, 14);
    ADD("embeddings.patch_embeddings.projection.bias", 0.1f, D);
    ADD("embeddings.cls_token", 0.5f, 1, 1, D);
    ADD("embeddings.position_embeddings", 0.5f, 1, 1 + G * G, D);
    ADD("layernorm.weight", 0.5f, D);
    ADD("layernorm.bias", 0.1f, D);
    for (int l = 0; l < L; l++) {
        char n[128];
        static const char *vec[] = { "norm1.weight", "norm1.bias", "attention.attention.query.bias",
                                     "attention.attention.key.bias", "attention.attention.value.bias",
                                     "attention.output.dense.bias", "layer_scale1.lambda1", "norm2.weight",
                                     "norm2.bias", "layer_scale2.lambda1" };
        static const char *mat[] = { "attention.attention.query.weight", "attention.attention.key.weight",
                                     "attention.attention.value.weight", "attention.output.dense.weight" };
        for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
            snprintf(n, sizeof n, "encoder.layer.%d.%s", l, vec[i]);
            ADD(n, 0.5f, D);
        }
        for (size_t i = 0; i < sizeof mat / sizeof mat[0]; i++) {
            snprintf(n, sizeof n, "encoder.layer.%d.%s", l, mat[i]);
            ADD(n, 0.15f, D, D);   /* scores of order a few units: a peaked softmax, as trained models give */
        }
        const char *in = swiglu ? "weights_in" : "fc1", *out = swiglu ? "weights_out" : "fc2";
        int rows_in = swiglu ? 2 * M : M;
        snprintf(n, sizeof n, "encoder.layer.%d.mlp.%s.weight", l, in);
        ADD(n, 0.1f, rows_in, D);
        snprintf(n, sizeof n, "encoder.layer.%d.mlp.%s.bias", l, in);
        ADD(n, 0.1f, rows_in);
        snprintf(n, sizeof n, "encoder.layer.%d.mlp.%s.weight", l, out);
        ADD(n, 0.05f, D, M);
        snprintf(n, sizeof n, "encoder.layer.%d.mlp.%s.bias", l, out);
        ADD(n, 0.5f, D);
    }
#undef ADD
    (void)K;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (ok && sa3d_st_writer_write(w, path, &err)) ok = 0;
    if (!ok && w) printf("writing %s failed: %s\n", path, err.msg);
    sa3d_st_writer_free(w);
    free(buf);
    return ok;
}

static void case_fused_attention(void) {
    for (int swiglu = 0; swiglu <= 1; swiglu++) {
        char dir[512];
        make_tmp(dir, sizeof dir);
        if (!dir[0]) return;
        T_CHECK(write_dh64_model(dir, swiglu));
        if (swiglu) printf("  with a SwiGLU MLP:\n");
        /* 13 x 17 = 221 patches + 1: four query tiles and key tiles, the last ones partial */
        compare(dir, "fp16", 2e-2, 1, 182, 238);
        compare(dir, "bf16", 8e-2, 2, 182, 238);
        compare(dir, "fp32", 1e-3, 1, 182, 238);   /* the two-GEMM path on the same model */
        rm_tree(dir);
    }
}

/* The emulator's count of device bytes held (tests/nn_cuda_emu.cc); not linked into the GPU build. */
size_t t_device_live_bytes(void) __attribute__((weak));

/* One GPU workspace resized through larger and smaller sizes against a GPU workspace made for each size, the
 * same pixels: every output bit for bit (the same kernels on the same sizes; cuBLAS is deterministic on one GPU
 * with a fixed workspace), so a buffer sized for another input, a stale position table, or a pass graph replayed
 * at the wrong size or after its buffers moved shows. The sizes go up (buffers grow: every graph dropped), down
 * (no growth) and back up to a size whose graph is kept, which is replayed. Its device memory grows with the
 * largest size and stays when it shrinks; under the emulator it is also what the backend really holds. */
static void resized_vs_new(const char *dir, const char *dtype, int B) {
    static const int sizes[][2] = { { 56, 70 }, { 84, 98 }, { 42, 56 }, { 84, 98 }, { 56, 70 } };
    sa3d_model_params p = sa3d_model_params_default();
    p.device = "cuda";
    p.dtype = dtype;
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    sa3d_error err;
    T_OK(sa3d_model_open(&m, dir, &p, &err), &err);
    if (m) T_OK(sa3d_workspace_new_batch(&ws, m, sizes[0][0], sizes[0][1], B, 0, &err), &err);
    size_t live0 = t_device_live_bytes ? t_device_live_bytes() - (ws ? sa3d_workspace_device_bytes(ws) : 0) : 0;
    size_t held = 0;
    int bad = 0;
    for (size_t k = 0; ws && k < sizeof sizes / sizeof sizes[0]; k++) {
        int H = sizes[k][0], W = sizes[k][1];
        size_t n_px = (size_t)B * 3 * H * W;
        sa3d_workspace *fresh = NULL;
        T_OK(sa3d_workspace_resize(ws, H, W, &err), &err);
        if (k == 1) held = sa3d_workspace_device_bytes(ws);
        if (k > 1) T_CHECK(sa3d_workspace_device_bytes(ws) == held);
        if (t_device_live_bytes) T_CHECK(t_device_live_bytes() - live0 == sa3d_workspace_device_bytes(ws));
        float *px = malloc(n_px * sizeof(float));
        fill_random(px, n_px, 100 + k);
        T_OK(sa3d_model_forward(m, ws, px, &err), &err);
        T_OK(sa3d_workspace_new_batch(&fresh, m, H, W, B, 0, &err), &err);
        if (fresh) T_OK(sa3d_model_forward(m, fresh, px, &err), &err);
        for (int i = 0; fresh && i < sa3d_workspace_n_outputs(fresh); i++) {
            const sa3d_tensor_view *a = sa3d_workspace_output_at(ws, i), *b = sa3d_workspace_output_at(fresh, i);
            if (memcmp(a->shape, b->shape, sizeof a->shape) ||
                memcmp(a->data, b->data, sa3d_tensor_view_numel(b) * sizeof(float))) {
                T_FAIL("%s %s batch %d, %d x %d: output %s of the resized workspace differs from a new one's", dir,
                       dtype, B, H, W, b->name);
                bad = 1;
            }
        }
        sa3d_workspace_free(fresh);
        free(px);
    }
    const char *slash = strrchr(dir, '/');
    printf("  %-30s %-4s batch %d: %s at 5 sizes; device memory %zu bytes at the largest\n",
           slash ? slash + 1 : dir, dtype, B, bad ? "DIFFERENT" : "equal", held);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
}

static void case_resize(void) {
    char **dirs;
    int n = t_model_fixture_dirs(&dirs);
    T_CHECK(n > 0);
    for (int i = 0; i < n; i++) {
        resized_vs_new(dirs[i], "fp32", 1);
        resized_vs_new(dirs[i], "fp16", 2);
        free(dirs[i]);
    }
    free(dirs);
    char dir[512];   /* the fused attention kernel at each size */
    make_tmp(dir, sizeof dir);
    if (!dir[0]) return;
    T_CHECK(write_dh64_model(dir, 0));
    resized_vs_new(dir, "fp16", 1);
    rm_tree(dir);
}

/* A Depth Anything fixture's depth is nearly constant (the tiny fixture's spans 0.5512 to 0.5553: its random neck
 * and head weights are too small to carry the image through, so the biases decide), and a wrong DPT step would
 * move it by less than the bound. This copies such a fixture (one with a DPT head) into dir with every neck and
 * head weight rescaled to RMS 1 / sqrt(fan-in): the depth then varies by O(1) with the image, and every
 * convolution, resize, residual and activation of the head shows in it.
 *
 * Its fp32 parity is checked with exact fp32 products (SA3D_CUDA_TF32=0; measured 1e-6), which isolates the
 * kernels. With TF32 products, the default, the O(1) gains carry TF32's 2^-11 input rounding through some 15
 * chained convolutions: measured 1.2e-3, checked against
 * 1e-2 here; the fixtures themselves stay within 1e-3 with TF32 (case 1.1). */
static int write_loud_dpt(const char *src, const char *dir) {
    sa3d_error err;
    sa3d_checkpoint *ck = NULL;
    if (sa3d_checkpoint_open(&ck, src, &err)) { printf("%s\n", err.msg); return 0; }
    int n = sa3d_checkpoint_count(ck), ok = 1;
    sa3d_st_writer *w = sa3d_st_writer_new();
    float **bufs = calloc((size_t)n, sizeof *bufs);
    ok = w && bufs;
    for (int i = 0; ok && i < n; i++) {
        const sa3d_st_tensor *t = sa3d_checkpoint_get(ck, i);
        if (!(bufs[i] = malloc((t->numel ? t->numel : 1) * sizeof(float))) ||
            sa3d_st_read_f32(t, bufs[i], t->numel, &err)) { ok = 0; break; }
        if ((!strncmp(t->name, "neck.", 5) || !strncmp(t->name, "head.", 5)) && t->ndim >= 2 && t->numel) {
            double ss = 0.0, fan = (double)t->numel / (double)t->shape[0];
            for (size_t k = 0; k < t->numel; k++) ss += (double)bufs[i][k] * (double)bufs[i][k];
            float gain = ss > 0.0 ? (float)(1.0 / sqrt(fan) / sqrt(ss / (double)t->numel)) : 0.0f;
            for (size_t k = 0; k < t->numel; k++) bufs[i][k] *= gain;
        }
        if (sa3d_st_writer_add_f32(w, t->name, t->ndim, t->shape, bufs[i], &err)) ok = 0;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (ok && sa3d_st_writer_write(w, path, &err)) {
        printf("writing %s failed: %s\n", path, err.msg);
        ok = 0;
    }
    snprintf(path, sizeof path, "%s/config.json", src);
    size_t len = 0;
    char *cfg = ok ? slurp(path, &len) : NULL;
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (!cfg || sa3d_write_file_atomic(path, cfg, len, &err)) {
        if (cfg) printf("%s\n", err.msg);
        ok = 0;
    }
    sa3d_free(cfg);
    for (int i = 0; bufs && i < n; i++) free(bufs[i]);
    free(bufs);
    sa3d_st_writer_free(w);
    sa3d_checkpoint_close(ck);
    return ok;
}

/* The depth's spread on the CPU, (max - min) / max |depth|, for input seed 5 at 56 x 70. */
static double depth_spread(const char *dir) {
    sa3d_error err;
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    sa3d_model_params p = sa3d_model_params_default();
    double spread = -1.0;
    float *px = malloc((size_t)3 * 56 * 70 * sizeof(float));
    fill_random(px, (size_t)3 * 56 * 70, 5);
    if (px && !sa3d_model_open(&m, dir, &p, &err) && !sa3d_workspace_new(&ws, m, 56, 70, 0, &err) &&
        !sa3d_model_forward(m, ws, px, &err)) {
        const sa3d_tensor_view *o = sa3d_workspace_output_at(ws, 0);
        size_t k = sa3d_tensor_view_numel(o);
        float lo = o->data[0], hi = o->data[0];
        for (size_t i = 1; i < k; i++) { lo = fminf(lo, o->data[i]); hi = fmaxf(hi, o->data[i]); }
        spread = (double)(hi - lo) / fmax(1e-30, max_abs(o->data, k));
    }
    free(px);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    return spread;
}

static void case_loud_dpt(void) {
    char **dirs;
    int n = t_model_fixture_dirs(&dirs), n_dpt = 0;
    for (int i = 0; i < n; i++) {
        char probe[4300];
        size_t len = 0;
        snprintf(probe, sizeof probe, "%s/config.json", dirs[i]);
        char *cfg = slurp(probe, &len);
        int dpt = cfg && strstr(cfg, "fusion_hidden_size");   /* a DPT head */
        sa3d_free(cfg);
        if (dpt) {
            char dir[512];
            make_tmp(dir, sizeof dir);
            if (!dir[0]) break;
            n_dpt++;
            T_CHECK(write_loud_dpt(dirs[i], dir));
            double before = depth_spread(dirs[i]), after = depth_spread(dir);
            printf("  %s: depth spread %.3g, rescaled %.3g\n", strrchr(dirs[i], '/') + 1, before, after);
            T_CHECK(after >= 0.3);   /* else this case would not see a wrong step either */
            setenv("SA3D_CUDA_TF32", "0", 1);   /* exact fp32 products: what is left is the kernels' own error */
            compare(dir, "fp32", 1e-3, 1, 56, 70);
            compare(dir, "fp32", 1e-3, 3, 98, 84);
            unsetenv("SA3D_CUDA_TF32");
            printf("  with TF32 products (the default), the convolutions by the implicit-GEMM kernel:\n");
            compare(dir, "fp32", 1e-2, 1, 56, 70);
            compare(dir, "fp16", 2e-2, 1, 56, 70);
            compare(dir, "bf16", 8e-2, 3, 98, 84);
            printf("  by im2col + GEMM (SA3D_CUDA_IMPLICIT=0): fp32, fp16 in whole bands, fp16 in one-row bands "
                   "(SA3D_CUDA_COL_CAP=1):\n");
            setenv("SA3D_CUDA_IMPLICIT", "0", 1);
            compare(dir, "fp32", 1e-2, 1, 56, 70);
            compare(dir, "fp16", 2e-2, 3, 98, 84);
            setenv("SA3D_CUDA_COL_CAP", "1", 1);
            compare(dir, "fp16", 2e-2, 3, 98, 84);
            unsetenv("SA3D_CUDA_COL_CAP");
            unsetenv("SA3D_CUDA_IMPLICIT");
            rm_tree(dir);
        }
    }
    for (int i = 0; i < n; i++) free(dirs[i]);
    free(dirs);
    T_CHECK(n_dpt > 0);
}

/* Device bytes of the model in one dtype (0 when it does not open) and of a workspace for it, batch B. Under the
 * emulator each figure must equal what the backend really holds: the device bytes it allocated and has not freed
 * (a scratch kept past its use, or an allocation the count misses, shows here). */
static size_t device_bytes(const char *dir, const char *device, const char *dtype, int B, int H, int W,
                           size_t *ws_bytes, size_t *n_params) {
    sa3d_model_params p = sa3d_model_params_default();
    p.device = device;
    p.dtype = dtype;
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    sa3d_error err;
    size_t bytes = 0, live0 = t_device_live_bytes ? t_device_live_bytes() : 0;
    T_OK(sa3d_model_open(&m, dir, &p, &err), &err);
    if (m) {
        bytes = sa3d_model_device_bytes(m);
        *n_params = sa3d_model_n_params(m);
        size_t live1 = t_device_live_bytes ? t_device_live_bytes() : 0;
        if (t_device_live_bytes) T_CHECK(live1 - live0 == bytes);
        T_OK(sa3d_workspace_new_batch(&ws, m, H, W, B, 0, &err), &err);
        *ws_bytes = ws ? sa3d_workspace_device_bytes(ws) : 0;
        if (t_device_live_bytes) T_CHECK(t_device_live_bytes() - live1 == *ws_bytes);
    }
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    if (t_device_live_bytes) T_CHECK(t_device_live_bytes() == live0);
    return bytes;
}

/* The device memory the API reports. The weights: the same in fp16 and bf16, between half and 3/4 of fp32's
 * (matrices halve, vectors stay fp32), 0 on the CPU. A workspace: more than nothing, 0 on the CPU, the same in
 * fp16 and bf16; with the implicit-GEMM convolutions smaller than with im2col (SA3D_CUDA_IMPLICIT=0), whose col
 * and band scratch it does not allocate. (Parameters include the position embeddings, which a workspace holds
 * resized, so they bound nothing here.) Under the emulator every figure is also checked against what is really
 * allocated (device_bytes). */
static void case_device_memory(void) {
    char **dirs;
    int n = t_model_fixture_dirs(&dirs);
    for (int i = 0; i < n; i++) {
        size_t np = 0, w32, w16, wbf, wcpu, s32, s16, sbf, scpu, s16_im2col, np16 = 0;
        w32 = device_bytes(dirs[i], "cuda", "fp32", 2, 56, 70, &s32, &np);
        w16 = device_bytes(dirs[i], "cuda", "fp16", 2, 56, 70, &s16, &np16);
        wbf = device_bytes(dirs[i], "cuda", "bf16", 2, 56, 70, &sbf, &np16);
        wcpu = device_bytes(dirs[i], "cpu", "fp32", 2, 56, 70, &scpu, &np16);
        setenv("SA3D_CUDA_IMPLICIT", "0", 1);
        device_bytes(dirs[i], "cuda", "fp16", 2, 56, 70, &s16_im2col, &np16);
        unsetenv("SA3D_CUDA_IMPLICIT");
        int dpt = s16_im2col != s16;
        printf("  %-30s %zu parameters; weights fp32 %zu, fp16 %zu, bf16 %zu bytes; workspace (2 x 56 x 70) fp32 "
               "%zu, fp16 %zu%s\n", strrchr(dirs[i], '/') + 1, np, w32, w16, wbf, s32, s16,
               dpt ? "" : " (no convolutions)");
        if (dpt) printf("  %-30s fp16 workspace with im2col + GEMM %zu bytes\n", "", s16_im2col);
        T_CHECK(w16 == wbf && 2 * w16 >= w32 && 4 * w16 < 3 * w32);
        T_CHECK(wcpu == 0 && scpu == 0 && s32 > 0 && s16 > 0 && s16 == sbf);
        T_CHECK(s16_im2col >= s16);
        if (strstr(dirs[i], "depth")) T_CHECK(dpt);
    }
    for (int i = 0; i < n; i++) free(dirs[i]);
    free(dirs);
    T_CHECK(n > 0);
}

void t_set_compute_capability(int major, int minor) __attribute__((weak));

/* A GPU older than the kernels' sm_80 is refused when the model opens, naming its compute capability, instead of
 * failing at the first launch (emulator only: it sets the GPU's capability). */
static void case_old_gpu(void) {
    if (!t_set_compute_capability) {
        printf("  (a real GPU: its own capability stands)\n");
        return;
    }
    char **dirs;
    int n = t_model_fixture_dirs(&dirs);
    T_CHECK(n > 0);
    sa3d_model_params p = sa3d_model_params_default();
    p.device = "cuda";
    sa3d_error err = { 0 };
    sa3d_model *m = NULL;
    t_set_compute_capability(7, 5);
    T_STATUS(sa3d_model_open(&m, dirs[0], &p, &err), SA3D_ERR_UNSUPPORTED, &err);
    T_CONTAINS(err.msg, "compute capability 7.5");
    T_CHECK(m == NULL);
    printf("  %s\n", err.msg);
    t_set_compute_capability(8, 0);
    T_OK(sa3d_model_open(&m, dirs[0], &p, &err), &err);
    sa3d_model_free(m);
    t_set_compute_capability(9, 0);
    for (int i = 0; i < n; i++) free(dirs[i]);
    free(dirs);
}

int main(int argc, char **argv) {
    if (!cuda_available()) return 77;
    static const t_case cases[] = {
        { "1.1", "GPU equals CPU on every fixture (fp32, fp16, bf16; batch 1, 3)", case_parity_all },
        { "1.2", "GPU fp32 equals the Hugging Face reference", case_reference },
        { "1.3", "fused attention (64-wide heads), and SwiGLU, equal the CPU", case_fused_attention },
        { "1.4", "DPT head with O(1) weights (every step visible in the depth) equals the CPU", case_loud_dpt },
        { "1.5", "device memory: weights once in the pass dtype, workspace without unused scratch", case_device_memory },
        { "2.1", "deferred download, graph replay, non-finite input", case_download_and_replay },
        { "2.2", "a resized workspace equals one made for the size", case_resize },
        { "2.3", "a GPU older than compute capability 8.0 is refused at open", case_old_gpu },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
