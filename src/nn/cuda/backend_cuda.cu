/* CUDA backend (-DSEMALIGN3D_CUDA=ON, `--device cuda`): DINOv2 and Depth Anything V2 forward passes on one
 * NVIDIA GPU, step for step as src/nn/vit.c and src/nn/dpt.c do them on the CPU.
 *
 *   - Weights are uploaded once at model open: matrices in the pass's dtype (fp32, fp16 or bf16), vectors
 *     (biases, norms, layer scales, tokens) in fp32; query/key/value are fused into one [3D][D] matrix.
 *   - Matrix products go to cuBLAS (cublasGemmEx): TF32 tensor cores for fp32 (SA3D_CUDA_TF32=0 turns them off),
 *     fp16/bf16 inputs with fp32 accumulation otherwise. Attention is one fused kernel for fp16/bf16 with 64-wide
 *     heads (kernels.cuh), which also applies the query/key/value biases, else two strided-batched products around
 *     a row softmax of fp32 scores; the residual stream, norms and softmax sums stay fp32 in every dtype.
 *   - Between the products, one row kernel per step: each residual add also computes the next norm, and Linear
 *     biases ride with the activation or the residual add.
 *   - The DPT neck and head keep fp32 maps. Each k x k convolution is one implicit-GEMM kernel (k_conv_mma:
 *     gather, tensor cores, output step) on operands in the pass dtype (TF32 for fp32); with exact fp32 products
 *     (SA3D_CUDA_TF32=0) or SA3D_CUDA_IMPLICIT=0, im2col + GEMM in row bands. The 1 x 1 and transposed
 *     convolutions are TF32 GEMMs.
 *   - A whole pass is captured once per workspace and input size as a CUDA graph and replayed (SA3D_CUDA_GRAPH=0
 *     runs it eagerly), so small models are not bound by launch overhead; a resized workspace keeps the graphs
 *     of up to 8 sizes while its buffers stay where they are.
 *   - The batch runs at once (the token rows of all images are one GEMM operand, the fused attention and the DPT
 *     head's kernels take the images as a grid dimension, the DPT's products are strided-batched GEMMs with the
 *     weights shared); only the unfused attention loops over the images.
 * Every output is checked for non-finite values on the device, then downloaded (unless SA3D_WS_NO_DOWNLOAD). */
#ifndef SA3D_CUDA_EMU   /* tests/cuda_emu.hh stands in for the runtime and cuBLAS: the test_nn_emu build */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
extern "C" {
#include "nn/backend.h"
}
#include "base/cuda_util.cuh"
#include "kernels.cuh"

/* Leading dimensions handed to cuBLAS are padded to a multiple of 8 elements: with an odd pitch (T = 3601 tokens
 * at 840 px, a 588-wide patch row) cuBLAS cannot use its tensor-core kernels and falls back to far slower ones
 * (measured: fp16 attention no faster than fp32). */
static int pad8(int n) { return (n + 7) & ~7; }

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

static unsigned nblocks(size_t n) {
    size_t b = (n + 255) / 256;
    return (unsigned)(b < 8192 ? (b ? b : 1) : 8192);
}

/* ---- model: device weights ---- */

typedef struct dlayer {
    float *ln1_w, *ln1_b, *bqkv, *bo, *ls1, *ln2_w, *ln2_b, *fc1_b, *fc2_b, *ls2;
    void *wqkv, *wo, *fc1_w, *fc2_w;   /* pass dtype */
} dlayer;

/* The DPT's k x k convolution weights (void *) are in the pass dtype, like the backbone's matrices: so is the
 * operand gathered from the maps (conv2d). The 1 x 1 and transposed convolutions read fp32 maps, so their weights
 * stay fp32. */
typedef struct dfusion {
    float *proj_w, *proj_b, *r1c1_b, *r1c2_b, *r2c1_b, *r2c2_b;
    void *r1c1_w, *r1c2_w, *r2c1_w, *r2c2_w;
} dfusion;

typedef struct dmodel {
    dmem mem;
    cudaDataType_t at;             /* activation / matrix dtype of the backbone */
    size_t es;                     /* its element size */
    cublasComputeType_t ct;        /* backbone GEMMs */
    cublasComputeType_t ct32;      /* fp32 GEMMs (DPT): TF32 unless disabled */
    float *stage32;                /* fp32 conversion scratch during upload, freed after it */
    void *patch_w;
    float *patch_b, *cls, *reg, *ln_w, *ln_b;
    dlayer *L;
    float *reasm_proj_w[4], *reasm_proj_b[4], *reasm_resize_b[4];
    void *reasm_resize_w[4];       /* fp32 for the transposed convolution (f > 1), else 3 x 3: pass dtype */
    void *neck_conv_w[4];
    dfusion fu[4];
    void *head_c1_w, *head_c2_w;
    float *head_c1_b, *head_c2_b, *head_c3_w, *head_c3_b;
} dmodel;

template <typename A>
__global__ void k_convert(A *out, const float *in, size_t n) { SA3D_GRID_STRIDE(i, n) out[i] = from_f<A>(in[i]); }

/* f(T()) with T the element type of dtype t (float, __half or __nv_bfloat16): one place that turns the runtime
 * dtype into a template argument. */
template <typename F> static void with_dtype(cudaDataType_t t, F f) {
    if (t == CUDA_R_16F) f(__half());
    else if (t == CUDA_R_16BF) f(__nv_bfloat16());
    else f(0.0f);
}

/* Uploads in the backbone dtype go through fp32 first: straight into p in fp32 passes, else into the staging
 * scratch, which convert_staged then converts into p. */
static float *staging(dmodel *d, void *p) { return d->at == CUDA_R_32F ? (float *)p : d->stage32; }
static void convert_staged(dmodel *d, void *p, size_t n) {
    if (d->at == CUDA_R_32F) return;
    with_dtype(d->at, [&](auto tag) {
        using T = decltype(tag);
        SA3D_LAUNCH(k_convert<T>, nblocks(n), 256, 0, (T *)p, d->stage32, n);
    });
}

static float *up_f32(dmodel *d, const float *h, size_t n) {
    if (!h) return NULL;
    float *p = (float *)dalloc(&d->mem, n * sizeof(float));
    if (p) {
        cudaError_t e = cudaMemcpy(p, h, n * sizeof(float), cudaMemcpyHostToDevice);
        if (e != cudaSuccess && d->mem.first == cudaSuccess) d->mem.first = e;
    }
    return p;
}

/* Uploads up to three host matrices stacked (rows of a, then b, then c) in the backbone dtype; NULL for a missing
 * a (a layer the checkpoint does not have), as up_f32. */
static void *up_mat(dmodel *d, const float *a, const float *b, const float *c, size_t n_each) {
    if (!a) return NULL;
    size_t n = n_each * (1 + (b != NULL) + (c != NULL));
    void *p = dalloc(&d->mem, n * d->es);
    if (!p) return NULL;
    const float *parts[3] = { a, b, c };
    float *dst = staging(d, p);
    for (int i = 0; i < 3 && parts[i]; i++) {
        cudaError_t e = cudaMemcpy(dst + i * n_each, parts[i], n_each * sizeof(float), cudaMemcpyHostToDevice);
        if (e != cudaSuccess && d->mem.first == cudaSuccess) d->mem.first = e;
    }
    convert_staged(d, p, n);
    return p;
}

/* A [rows][cols] host matrix as [rows][cols_p] on the device (zero columns beyond cols), in the backbone dtype. */
static void *up_mat_padded(dmodel *d, const float *h, size_t rows, size_t cols, size_t cols_p) {
    void *p = dalloc(&d->mem, rows * cols_p * d->es);
    if (!p) return NULL;
    float *dst = staging(d, p);
    cudaError_t e = cudaMemset(dst, 0, rows * cols_p * sizeof(float));
    if (e == cudaSuccess)
        e = cudaMemcpy2D(dst, cols_p * sizeof(float), h, cols * sizeof(float), cols * sizeof(float), rows,
                         cudaMemcpyHostToDevice);
    if (e != cudaSuccess && d->mem.first == cudaSuccess) d->mem.first = e;
    convert_staged(d, p, rows * cols_p);
    return p;
}

/* Three bias vectors stacked ([3D]); a missing one is zeros (qkv_bias = false gives no bias at all). */
static float *up_bias3(dmodel *d, const float *a, const float *b, const float *c, size_t n) {
    if (!a) return NULL;
    float *p = (float *)dalloc(&d->mem, 3 * n * sizeof(float));
    if (!p) return NULL;
    const float *parts[3] = { a, b, c };
    for (int i = 0; i < 3; i++) {
        cudaError_t e = parts[i] ? cudaMemcpy(p + i * n, parts[i], n * sizeof(float), cudaMemcpyHostToDevice)
                                 : cudaMemset(p + i * n, 0, n * sizeof(float));
        if (e != cudaSuccess && d->mem.first == cudaSuccess) d->mem.first = e;
    }
    return p;
}

static void cuda_model_release(sa3d_model *m) {
    dmodel *d = (dmodel *)m->dev;
    if (!d) return;
    dmem_free(&d->mem);
    free(d->L);
    free(d);
    m->dev = NULL;
    m->dev_bytes = 0;
}

static sa3d_status cuda_model_init(sa3d_model *m, sa3d_error *err) {
    sa3d_status st = cuda_device_check(err, m->dir);
    if (st != SA3D_OK) return st;
    const sa3d_vit_config *c = &m->vit;
    dmodel *d = (dmodel *)calloc(1, sizeof *d);
    if (!d || !(d->L = (dlayer *)calloc((size_t)c->n_layers, sizeof *d->L))) {
        free(d);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", m->dir);
    }
    m->dev = d;
    const char *tf32 = getenv("SA3D_CUDA_TF32");
    d->ct32 = tf32 && !strcmp(tf32, "0") ? CUBLAS_COMPUTE_32F : CUBLAS_COMPUTE_32F_FAST_TF32;
    d->at = m->dtype == SA3D_NN_FP16 ? CUDA_R_16F : m->dtype == SA3D_NN_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    d->es = d->at == CUDA_R_32F ? 4 : 2;
    d->ct = d->at == CUDA_R_32F ? d->ct32 : CUBLAS_COMPUTE_32F;
    size_t D = (size_t)c->hidden_size, M = (size_t)c->mlp_hidden * (c->use_swiglu ? 2 : 1);
    size_t K = (size_t)c->n_channels * c->patch_size * c->patch_size, Kp = (size_t)pad8((int)K);
    size_t stage = 3 * D * D > M * D ? 3 * D * D : M * D;
    if (Kp * D > stage) stage = Kp * D;
    if (m->kind == SA3D_MODEL_DEPTH_ANYTHING) {   /* the DPT's 3 x 3 weights pass through the same scratch */
        size_t F = (size_t)m->dpt.fusion_hidden_size;
        stage = zmax(stage, 9 * F * zmax(F, (size_t)m->dpt.head_hidden_size));   /* fusion units, head */
        for (int s = 0; s < 4; s++) {   /* resize conv N x N, neck conv F x N */
            size_t N = (size_t)m->dpt.neck_hidden_sizes[s];
            stage = zmax(stage, 9 * N * zmax(N, F));
        }
    }
    if (d->at != CUDA_R_32F) d->stage32 = (float *)dalloc(&d->mem, stage * sizeof(float));

    const sa3d_vit_weights *w = &m->vw;
    d->patch_w = up_mat_padded(d, w->patch_w, D, K, Kp);
    d->patch_b = up_f32(d, w->patch_b, D);
    d->cls = up_f32(d, w->cls, D);
    d->reg = up_f32(d, w->registers, (size_t)c->n_registers * D);
    d->ln_w = up_f32(d, w->ln_w, D);
    d->ln_b = up_f32(d, w->ln_b, D);
    for (int l = 0; l < c->n_layers; l++) {
        const sa3d_vit_layer *h = &w->layer[l];
        dlayer *y = &d->L[l];
        y->ln1_w = up_f32(d, h->ln1_w, D); y->ln1_b = up_f32(d, h->ln1_b, D);
        y->wqkv = up_mat(d, h->wq, h->wk, h->wv, D * D);
        y->bqkv = up_bias3(d, h->bq, h->bk, h->bv, D);
        y->wo = up_mat(d, h->wo, NULL, NULL, D * D); y->bo = up_f32(d, h->bo, D);
        y->ls1 = up_f32(d, h->ls1, D);
        y->ln2_w = up_f32(d, h->ln2_w, D); y->ln2_b = up_f32(d, h->ln2_b, D);
        y->fc1_w = up_mat(d, h->fc1_w, NULL, NULL, M * D); y->fc1_b = up_f32(d, h->fc1_b, M);
        y->fc2_w = up_mat(d, h->fc2_w, NULL, NULL, D * (size_t)c->mlp_hidden); y->fc2_b = up_f32(d, h->fc2_b, D);
        y->ls2 = up_f32(d, h->ls2, D);
    }
    if (m->kind == SA3D_MODEL_DEPTH_ANYTHING) {
        const sa3d_dpt_config *p = &m->dpt;
        const sa3d_dpt_weights *v = &m->dw;
        size_t F = (size_t)p->fusion_hidden_size, Fh = F / 2, Hh = (size_t)p->head_hidden_size;
        for (int s = 0; s < 4; s++) {
            size_t N = (size_t)p->neck_hidden_sizes[s], f = (size_t)p->reassemble_num[s];
            d->reasm_proj_w[s] = up_f32(d, v->reasm_proj_w[s], N * D);
            d->reasm_proj_b[s] = up_f32(d, v->reasm_proj_b[s], N);
            d->reasm_resize_w[s] = f > 1 ? (void *)up_f32(d, v->reasm_resize_w[s], N * N * f * f)
                                         : up_mat(d, v->reasm_resize_w[s], NULL, NULL, N * N * 9);
            d->reasm_resize_b[s] = up_f32(d, v->reasm_resize_b[s], N);
            d->neck_conv_w[s] = up_mat(d, v->neck_conv_w[s], NULL, NULL, F * N * 9);
            const sa3d_fusion_layer *h = &v->fusion[s];
            dfusion *y = &d->fu[s];
            y->proj_w = up_f32(d, h->proj_w, F * F); y->proj_b = up_f32(d, h->proj_b, F);
            y->r1c1_w = up_mat(d, h->r1c1_w, NULL, NULL, F * F * 9);   /* NULL in the first fusion layer */
            y->r1c2_w = up_mat(d, h->r1c2_w, NULL, NULL, F * F * 9);
            y->r2c1_w = up_mat(d, h->r2c1_w, NULL, NULL, F * F * 9);
            y->r2c2_w = up_mat(d, h->r2c2_w, NULL, NULL, F * F * 9);
            y->r1c1_b = up_f32(d, h->r1c1_b, F); y->r1c2_b = up_f32(d, h->r1c2_b, F);
            y->r2c1_b = up_f32(d, h->r2c1_b, F); y->r2c2_b = up_f32(d, h->r2c2_b, F);
        }
        d->head_c1_w = up_mat(d, v->head_c1_w, NULL, NULL, Fh * F * 9); d->head_c1_b = up_f32(d, v->head_c1_b, Fh);
        d->head_c2_w = up_mat(d, v->head_c2_w, NULL, NULL, Hh * Fh * 9); d->head_c2_b = up_f32(d, v->head_c2_b, Hh);
        d->head_c3_w = up_f32(d, v->head_c3_w, Hh); d->head_c3_b = up_f32(d, v->head_c3_b, 1);
    }
    cudaError_t e = d->mem.first != cudaSuccess ? d->mem.first : cudaDeviceSynchronize();
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) {
        cuda_model_release(m);
        return cuda_fail(err, m->dir, "uploading the weights", e);
    }
    dfree(&d->mem, d->stage32);   /* the conversions have finished (synchronised above) */
    d->stage32 = NULL;
    m->dev_bytes = d->mem.bytes;
    return SA3D_OK;
}

/* ---- workspace: device activations ---- */

enum { GRAPH_CACHE = 8 };   /* captured passes kept per workspace (input sizes) */

typedef struct dws {
    dmem mem;
    cudaStream_t st;
    cublasHandle_t blas;
    cublasStatus_t bstat;          /* first cuBLAS failure of the pass */
    float *pixels, *pos, *x, *stage;
    void *patches, *tok, *xn, *qkv, *scores, *ctx, *tmp, *mlp, *mlp2;
    float *out[SA3D_MAX_OUTPUTS];  /* device copies of the output views, same layout */
    unsigned long long *bad, bad_host[SA3D_MAX_OUTPUTS + 1];   /* first non-finite index per output, then input */
    /* DPT maps (the whole batch); col and band only for im2col (see conv2d) */
    float *proj, *reasm[4], *feat[4], *res_a, *res_b, *fused, *up, *convt_tmp, *col, *band, *head1, *head_up, *head2;
    size_t col_floats, band_floats;
    int rh[4], rw[4];
    /* Captured passes, one per input size met since the buffers last moved (a graph holds their addresses): a
     * resize back to a size seen before replays its graph instead of capturing the pass again. */
    struct { int H, W; unsigned long uses; cudaGraphExec_t exec; } graphs[GRAPH_CACHE];
    unsigned long n_passes;        /* forward calls, for the least recently used graph */
    int cur;                       /* graphs[cur] is the pass at the current size; -1: not captured yet */
    int eager;                     /* passes run without graphs (SA3D_CUDA_GRAPH=0, profiling, a failed capture) */
    /* SA3D_CUDA_PROFILE=1: the pass runs eagerly with an event after every step, and the time of each kind of
     * step is printed to stderr after each pass (to see where a pass goes without a profiler). */
    int flash;                     /* fused attention: 0 off, 1 rows per block chosen here, 64 or 128 forced */
    int implicit;                  /* DPT k x k convolutions by k_conv_mma (SA3D_CUDA_IMPLICIT=0: im2col + GEMM) */
    int n_sm;                      /* the GPU's multiprocessors (the fused attention's block size) */
    int prof, n_ev;
    cudaEvent_t ev[1024];
    const char *ev_name[1024];
} dws;

/* Marks the end of a step of kind `name` (profiling only). */
static void mark(dws *w, const char *name) {
    if (!w->prof || w->n_ev >= 1024) return;
    cudaEventRecord(w->ev[w->n_ev], w->st);
    w->ev_name[w->n_ev++] = name;
}

static void profile_report(dws *w) {
    const char *names[64];
    float ms[64];
    int n = 0;
    for (int i = 1; i < w->n_ev; i++) {
        float t = 0.0f;
        cudaEventElapsedTime(&t, w->ev[i - 1], w->ev[i]);
        int k = 0;
        while (k < n && strcmp(names[k], w->ev_name[i])) k++;
        if (k == n && n < 64) { names[n] = w->ev_name[i]; ms[n++] = 0.0f; }
        if (k < n) ms[k] += t;
    }
    float total = 0.0f;
    for (int k = 0; k < n; k++) total += ms[k];
    fprintf(stderr, "cuda profile (eager, ms):");
    for (int k = 0; k < n; k++) fprintf(stderr, " %s %.3f", names[k], (double)ms[k]);
    fprintf(stderr, " | total %.3f\n", (double)total);
}

static size_t zmin(size_t a, size_t b) { return a < b ? a : b; }

/* Scratch of one k x k convolution of B images, for `rows` GEMM operand rows per output position (Ci k k for
 * im2col, Co for the band result): all output rows when they fit the cap, else bands of rows, one at least. A row
 * is counted at pad8(Wo) positions, which covers a band's padded pitch (pad8 of its rows times Wo). The cap is
 * 32 Mi floats (128 MiB) each; SA3D_CUDA_COL_CAP=<floats> sets another (the tests force one-row bands). */
static size_t scratch_need(size_t cap, size_t B, size_t rows, size_t Ho, size_t Wo) {
    size_t row = B * rows * (size_t)pad8((int)Wo), full = row * Ho;
    return full <= cap ? full : zmax(row, cap);
}

static void drop_graphs(dws *w) {
    for (int i = 0; i < GRAPH_CACHE; i++)
        if (w->graphs[i].exec) cudaGraphExecDestroy(w->graphs[i].exec);
    memset(w->graphs, 0, sizeof w->graphs);
    w->cur = -1;
}

/* After a fit: the current size's captured pass, if any (none when passes run eagerly). */
static void pick_graph(sa3d_workspace *ws, dws *w) {
    w->cur = -1;
    for (int i = 0; i < GRAPH_CACHE && !w->eager; i++)
        if (w->graphs[i].exec && w->graphs[i].H == ws->H && w->graphs[i].W == ws->W) w->cur = i;
}

/* Keeps a newly captured pass for the current size, in place of the least recently used one when all are taken. */
static void keep_graph(sa3d_workspace *ws, dws *w, cudaGraphExec_t exec) {
    int k = 0;
    for (int i = 1; i < GRAPH_CACHE && w->graphs[k].exec; i++)
        if (!w->graphs[i].exec || w->graphs[i].uses < w->graphs[k].uses) k = i;
    if (w->graphs[k].exec) cudaGraphExecDestroy(w->graphs[k].exec);
    w->graphs[k].H = ws->H;
    w->graphs[k].W = ws->W;
    w->graphs[k].uses = w->n_passes;
    w->graphs[k].exec = exec;
    w->cur = k;
}

static void cuda_workspace_release(sa3d_workspace *ws) {
    dws *w = (dws *)ws->dev;
    if (!w) return;
    drop_graphs(w);
    if (w->prof)
        for (int i = 0; i < 1024; i++) cudaEventDestroy(w->ev[i]);
    if (w->blas) cublasDestroy(w->blas);
    if (w->st) cudaStreamDestroy(w->st);
    dmem_free(&w->mem);
    free(w);
    ws->dev = NULL;
}

/* The workspace's device state that does not depend on the input size: settings, stream, cuBLAS handle and its
 * workspace, the non-finite flags. */
static sa3d_status cuda_workspace_setup(sa3d_workspace *ws, sa3d_error *err) {
    const sa3d_model *m = ws->m;
    const dmodel *d = (const dmodel *)m->dev;
    dws *w = (dws *)calloc(1, sizeof *w);
    if (!w) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", m->dir);
    ws->dev = w;
    const char *g = getenv("SA3D_CUDA_GRAPH"), *pr = getenv("SA3D_CUDA_PROFILE");
    w->prof = pr && !strcmp(pr, "1");
    w->eager = (g && !strcmp(g, "0")) || w->prof;
    w->cur = -1;
    const char *fl = getenv("SA3D_CUDA_FLASH");
    w->flash = !fl || !*fl ? 1 : !strcmp(fl, "0") ? 0 : !strcmp(fl, "64") ? 64 : !strcmp(fl, "128") ? 128 : 1;
    const char *im = getenv("SA3D_CUDA_IMPLICIT");
    /* fp32 passes with exact products (SA3D_CUDA_TF32=0) keep im2col + fp32 GEMM: the kernel's products are TF32 */
    w->implicit = !(im && !strcmp(im, "0")) && (d->at != CUDA_R_32F || d->ct32 == CUBLAS_COMPUTE_32F_FAST_TF32);
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&w->n_sm, cudaDevAttrMultiProcessorCount, dev) !=
                                                  cudaSuccess)
        w->n_sm = 1;
    if (w->prof)
        for (int i = 0; i < 1024; i++) cudaEventCreate(&w->ev[i]);
    cudaError_t e = cudaStreamCreateWithFlags(&w->st, cudaStreamNonBlocking);
    if (e != cudaSuccess) return cuda_fail(err, m->dir, "creating a stream", e);
    if (cublasCreate(&w->blas) != CUBLAS_STATUS_SUCCESS) {
        w->blas = NULL;
        return sa3d_fail(err, SA3D_ERR_IO, "%s: cuBLAS could not be initialised", m->dir);
    }
    cublasSetStream(w->blas, w->st);
    size_t blas_ws = (size_t)32 << 20;   /* a fixed cuBLAS workspace, so graph capture never allocates */
    void *bw = dalloc(&w->mem, blas_ws);
    if (bw) cublasSetWorkspace(w->blas, bw, blas_ws);
    w->bad = (unsigned long long *)dalloc(&w->mem, (SA3D_MAX_OUTPUTS + 1) * sizeof(unsigned long long));
    if (w->mem.first != cudaSuccess) return cuda_fail(err, m->dir, "allocating the workspace", w->mem.first);
    return SA3D_OK;
}

/* The fused attention kernel serves fp16/bf16 with head size 64 (SA3D_CUDA_FLASH=0 forces the two-GEMM path,
 * SA3D_CUDA_FLASH=64 or 128 the query rows per block). */
static int fused_attention(const dws *w, const dmodel *d, const sa3d_vit_config *c) {
    return d->at != CUDA_R_32F && w->flash && c->hidden_size / c->n_heads == 64 && c->hidden_size % 8 == 0;
}

/* Every buffer sized for the workspace's current input size (DPT maps and scratch included): the first fit
 * allocates them, a resize keeps each one that is large enough. Any pass captured for another size is dropped. */
static sa3d_status cuda_workspace_fit(sa3d_workspace *ws, sa3d_error *err) {
    const sa3d_model *m = ws->m;
    const dmodel *d = (const dmodel *)m->dev;
    const sa3d_vit_config *c = &m->vit;
    sa3d_status st;
    if (!ws->dev && (st = cuda_workspace_setup(ws, err))) return st;
    dws *w = (dws *)ws->dev;
    dmem *mem = &w->mem;
    mem->first = cudaSuccess;   /* a failed fit before this one may have left its failure */
    unsigned long made = mem->n_made;

    size_t B = (size_t)ws->batch, T = (size_t)ws->T, D = (size_t)c->hidden_size, Np = (size_t)ws->gh * ws->gw;
    size_t M = (size_t)c->mlp_hidden, K = (size_t)c->n_channels * c->patch_size * c->patch_size, es = d->es;
    size_t H = (size_t)c->n_heads, n_px = B * c->n_channels * ws->H * ws->W;
#define FIT(ptr, type, bytes) ((ptr) = (type)dfit(mem, (ptr), (bytes)))
    FIT(w->pixels, float *, n_px * sizeof(float));
    FIT(w->pos, float *, (1 + Np) * D * sizeof(float));
    FIT(w->x, float *, B * T * D * sizeof(float));
    FIT(w->patches, void *, B * Np * (size_t)pad8((int)K) * es);
    FIT(w->tok, void *, B * Np * D * es);
    FIT(w->xn, void *, B * T * D * es);
    FIT(w->qkv, void *, (B * T + 8) * 3 * D * es);   /* + the key/value rows the padded products read */
    /* the two-GEMM attention's scores, fp32 in every dtype (k_softmax): H T^2 (832 MB for ViT-L at 840 px), unused
     * by the fused kernel */
    FIT(w->scores, void *, fused_attention(w, d, c) ? 16 : H * T * (size_t)pad8((int)T) * sizeof(float));
    FIT(w->ctx, void *, B * T * D * es);
    FIT(w->tmp, void *, B * T * D * es);
    FIT(w->mlp, void *, B * T * M * (c->use_swiglu ? 2 : 1) * es);
    if (c->use_swiglu) FIT(w->mlp2, void *, B * T * M * es);
    for (int i = 0; i < ws->n_out; i++)
        FIT(w->out[i], float *, sa3d_output_floats_per_image(ws, i) * B * sizeof(float));
    if (m->kind == SA3D_MODEL_DEPTH_ANYTHING) {
        const sa3d_dpt_config *p = &m->dpt;
        int gh = ws->gh, gw = ws->gw, P = c->patch_size;
        size_t F = (size_t)p->fusion_hidden_size, Fh = F / 2, Hh = (size_t)p->head_hidden_size;
        size_t proj = 0, convt = 0, max_map = 0, col = 0, band = 0, cap = (size_t)32 << 20;
        const char *cap_env = getenv("SA3D_CUDA_COL_CAP");
        if (cap_env && *cap_env) cap = (size_t)strtoull(cap_env, NULL, 10);
        FIT(w->stage, float *, 4 * B * T * D * sizeof(float));
        /* the maps hold the whole batch; the scratch covers every k x k convolution of dpt_pass */
        for (int s = 0; s < 4; s++) {
            size_t N = (size_t)p->neck_hidden_sizes[s], f = (size_t)p->reassemble_num[s];
            sa3d_dpt_reassembled_size(p, s, gh, gw, &w->rh[s], &w->rw[s]);
            size_t rh = (size_t)w->rh[s], rw = (size_t)w->rw[s], hw = rh * rw;
            proj = zmax(proj, B * N * Np);
            if (f > 1) convt = zmax(convt, B * N * f * f * Np);
            max_map = zmax(max_map, hw);
            FIT(w->reasm[s], float *, B * N * hw * sizeof(float));
            FIT(w->feat[s], float *, B * F * hw * sizeof(float));
            col = zmax(col, scratch_need(cap, B, N * 9, rh, rw));   /* resize conv (output size), neck conv */
            band = zmax(band, scratch_need(cap, B, zmax(N, F), rh, rw));
            col = zmax(col, scratch_need(cap, B, F * 9, rh, rw));   /* residual units */
        }
        size_t th = 2 * (size_t)w->rh[0], tw = 2 * (size_t)w->rw[0], OH = (size_t)gh * P, OW = (size_t)gw * P;
        col = zmax(col, scratch_need(cap, B, F * 9, th, tw));   /* head conv1 */
        band = zmax(band, scratch_need(cap, B, Fh, th, tw));
        col = zmax(col, scratch_need(cap, B, Fh * 9, OH, OW));   /* head conv2 */
        band = zmax(band, scratch_need(cap, B, Hh, OH, OW));
        if (!w->implicit) {   /* the implicit-GEMM kernel needs no scratch */
            w->col_floats = col;
            w->band_floats = band;
            FIT(w->col, float *, col * sizeof(float));
            FIT(w->band, float *, band * sizeof(float));
        }
        FIT(w->proj, float *, proj * sizeof(float));
        FIT(w->convt_tmp, float *, zmax(convt, 1) * sizeof(float));
        FIT(w->res_a, float *, B * F * max_map * sizeof(float));
        FIT(w->res_b, float *, B * F * max_map * sizeof(float));
        FIT(w->fused, float *, B * F * zmax(max_map, th * tw) * sizeof(float));
        FIT(w->up, float *, B * F * zmax(max_map, th * tw) * sizeof(float));
        FIT(w->head1, float *, B * Fh * th * tw * sizeof(float));
        FIT(w->head_up, float *, B * Fh * OH * OW * sizeof(float));
        FIT(w->head2, float *, B * Hh * OH * OW * sizeof(float));
    }
#undef FIT
    if (mem->n_made != made) drop_graphs(w);   /* a buffer moved: every captured pass holds its old address */
    pick_graph(ws, w);
    ws->dev_bytes = mem->bytes;
    cudaError_t e = mem->first;
    /* On the passes' stream: it does not wait for the legacy default stream, and a copy from pageable memory may
     * return before its data has landed, so the next pass could read part of the old embeddings. */
    if (e == cudaSuccess) e = cudaMemsetAsync(w->qkv, 0, (B * T + 8) * 3 * D * es, w->st);
    if (e == cudaSuccess)
        e = cudaMemcpyAsync(w->pos, ws->pos, (1 + Np) * D * sizeof(float), cudaMemcpyHostToDevice, w->st);
    if (e != cudaSuccess) return cuda_fail(err, m->dir, "allocating the activations", e);
    return SA3D_OK;
}

/* ---- matrix products (row-major views of cuBLAS's column-major ones) ---- */

/* C[M][N] = alpha op(A) op(B) + beta C with op(A) [M][K], op(B) [K][N], row-major, leading dimensions as
 * stored. cuBLAS is column-major, so it computes C^T = op(B)^T op(A)^T on the same memory. */
static void gemm(dws *w, cudaDataType_t t, cublasComputeType_t ct, int ta, int tb, int M, int N, int K,
                 float alpha, const void *A, int lda, const void *B, int ldb, float beta, void *C, int ldc) {
    cublasStatus_t s = cublasGemmEx(w->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
                                    K, &alpha, B, t, ldb, A, t, lda, &beta, C, t, ldc, ct, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS && w->bstat == CUBLAS_STATUS_SUCCESS) w->bstat = s;
}

/* C[q] = alpha op(A[q]) op(B[q]) for q < batch, A[q] = A + q sa elements (sa = 0: one A for all), likewise B and
 * C; A and B of type t, C of type tc. */
static void gemm_batched(dws *w, cudaDataType_t t, cudaDataType_t tc, cublasComputeType_t ct, int ta, int tb, int M,
                         int N, int K, float alpha, const void *A, int lda, long long sa, const void *B, int ldb,
                         long long sb, void *C, int ldc, long long sc, int batch) {
    float beta = 0.0f;
    cublasStatus_t s = cublasGemmStridedBatchedEx(w->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                  ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, t, ldb, sb, A,
                                                  t, lda, sa, &beta, C, tc, ldc, sc, batch, ct, CUBLAS_GEMM_DEFAULT);
    if (s != CUBLAS_STATUS_SUCCESS && w->bstat == CUBLAS_STATUS_SUCCESS) w->bstat = s;
}

/* nn.Linear without bias: y[rows][N] = x[rows][K] . W[N][K]^T (the bias is fused into the next kernel). */
static void linear(dws *w, const dmodel *d, void *y, const void *x, const void *W, int rows, int K, int N) {
    gemm(w, d->at, d->ct, 0, 1, rows, N, K, 1.0f, x, K, W, K, 0.0f, y, N);
}

/* ---- the ViT pass (vit.c's sa3d_vit_encode / sa3d_vit_finish) ---- */

/* 128 query rows per block (each K/V fragment serves two row tiles) when that still gives every multiprocessor
 * a block, else 64. */
template <typename A>
static void flash_attention(dws *w, A *ctx, const A *qkv, const float *bqkv, int B, int T, int D, int H,
                            float scale) {
    long long blocks128 = (long long)((T + 127) / 128) * H * B;
    int rows = w->flash == 64 || w->flash == 128 ? w->flash : blocks128 >= w->n_sm ? 128 : 64;
    dim3 grid((unsigned)((T + rows - 1) / rows), (unsigned)H, (unsigned)B);
    void (*kernel)(A *, const A *, const float *, int, int, float) =
        rows == 128 ? k_flash_attn<A, 2> : k_flash_attn<A, 1>;
    SA3D_LAUNCH(kernel, grid, 128, w->st, ctx, qkv, bqkv, T, D, scale);
}
template <> void flash_attention<float>(dws *, float *, const float *, const float *, int, int, int, int, float) {}

/* The row kernels, 4 elements per access where the row length allows (kernels.cuh). */
template <typename A, typename O>
static void residual_norm(dws *w, float *x, const A *y, const float *bias, const float *s, O *out, const float *g,
                          const float *b, int rows, int D, float eps) {
    void (*kernel)(float *, const A *, const float *, const float *, O *, const float *, const float *, int, int,
                   float) = D % 4 ? k_residual_norm<A, O, 1> : k_residual_norm<A, O, 4>;
    SA3D_LAUNCH(kernel, (unsigned)((rows + 7) / 8), 256, w->st, x, y, bias, s, out, g, b, rows, D, eps);
}
template <typename A> static void bias_act(dws *w, A *y, const float *bias, int rows, int N, int act) {
    void (*kernel)(A *, const float *, int, int) = N % 4 ? k_bias_act<A, 1> : k_bias_act<A, 4>;
    SA3D_LAUNCH(kernel, (unsigned)rows, 256, w->st, y, bias, N, act);
}
template <typename A> static void swiglu(dws *w, A *out, const A *in, const float *bias, int rows, int M) {
    void (*kernel)(A *, const A *, const float *, int) = M % 4 ? k_swiglu<A, 1> : k_swiglu<A, 4>;
    SA3D_LAUNCH(kernel, (unsigned)rows, 256, w->st, out, in, bias, M);
}

template <typename A>
static void vit_pass(const sa3d_model *m, sa3d_workspace *ws, dws *w, const dmodel *d, const int *out_idx,
                     int n_stages) {
    const sa3d_vit_config *c = &m->vit;
    cudaStream_t st = w->st;
    int B = ws->batch, T = ws->T, D = c->hidden_size, M = c->mlp_hidden, H = c->n_heads, Dh = D / H;
    int P = c->patch_size, Np = ws->gh * ws->gw, K = pad8(c->n_channels * P * P), rows = B * T, Tp = pad8(T);
    size_t TD = (size_t)T * D, n_x = (size_t)B * TD;
    float scale = (float)(1.0 / sqrt((double)Dh));
    int fused = fused_attention(w, d, c);
    float eps = c->ln_eps;

    SA3D_LAUNCH(k_patches<A>, (unsigned)(B * Np), 256, st, (A *)w->patches, w->pixels, c->n_channels, ws->H, ws->W,
                P, ws->gh, ws->gw, K);
    linear(w, d, w->tok, w->patches, d->patch_w, B * Np, K, D);
    mark(w, "patch_gemm");
    SA3D_LAUNCH(k_embed<A>, (unsigned)(B * T), 256, st, w->x, (const A *)w->tok, d->patch_b, d->cls, d->reg, w->pos,
                T, D, ws->n_prefix, c->n_registers);
    mark(w, "elementwise");
    int hidden = (ws->flags & SA3D_WS_HIDDEN_STATES) != 0;
    if (hidden) cudaMemcpyAsync(w->out[3], w->x, n_x * sizeof(float), cudaMemcpyDeviceToDevice, st);
    /* The first layer's norm1; every later norm runs in the residual add before it (k_residual_norm). */
    residual_norm<A, A>(w, w->x, NULL, NULL, NULL, (A *)w->xn, d->L[0].ln1_w, d->L[0].ln1_b, rows, D, eps);
    mark(w, "elementwise");
    for (int l = 0; l < c->n_layers; l++) {
        const dlayer *L = &d->L[l], *next = l + 1 < c->n_layers ? &d->L[l + 1] : NULL;
        linear(w, d, w->qkv, w->xn, L->wqkv, rows, D, 3 * D);                       /* [B*T][3D] */
        mark(w, "linear_gemm");
        if (L->bqkv && !fused) bias_act<A>(w, (A *)w->qkv, L->bqkv, rows, 3 * D, ACT_NONE);   /* else fused below */
        mark(w, "elementwise");
        /* Per image: scores_h = softmax(q_h k_h^T scale), ctx_h = scores_h v_h. cuBLAS picks its fast kernels only
         * when the contiguous extents are multiples of 8, so the key count is padded to Tp: the extra score columns
         * come from the next rows of qkv (the next image, or the zeroed slack after the last), the softmax zeroes
         * them, and the value rows they meet are finite, so they add exactly 0. */
        if (fused) {
            flash_attention<A>(w, (A *)w->ctx, (const A *)w->qkv, L->bqkv, B, T, D, H, scale);
            mark(w, "attention");
        } else for (int b = 0; b < B; b++) {
            const A *q = (const A *)w->qkv + (size_t)b * T * 3 * D;
            gemm_batched(w, d->at, CUDA_R_32F, d->ct, 0, 1, T, Tp, Dh, scale, q, 3 * D, Dh, q + D, 3 * D, Dh,
                         w->scores, Tp, (long long)T * Tp, H);
            mark(w, "scores_gemm");
            SA3D_LAUNCH(k_softmax<A>, (unsigned)(H * T), 256, st, (float *)w->scores, T, Tp);
            mark(w, "softmax");
            int pp = Tp * (int)(sizeof(float) / sizeof(A));   /* the probabilities' pitch, in A elements */
            gemm_batched(w, d->at, d->at, d->ct, 0, 0, T, Dh, Tp, 1.0f, w->scores, pp, (long long)T * pp, q + 2 * D,
                         3 * D, Dh, (A *)w->ctx + (size_t)b * TD, D, Dh, H);
            mark(w, "pv_gemm");
        }
        linear(w, d, w->tmp, w->ctx, L->wo, rows, D, D);
        mark(w, "linear_gemm");
        residual_norm<A, A>(w, w->x, (const A *)w->tmp, L->bo, L->ls1, (A *)w->xn, L->ln2_w, L->ln2_b, rows, D, eps);
        mark(w, "elementwise");
        if (c->use_swiglu) {
            linear(w, d, w->mlp, w->xn, L->fc1_w, rows, D, 2 * M);
            swiglu<A>(w, (A *)w->mlp2, (const A *)w->mlp, L->fc1_b, rows, M);
            linear(w, d, w->tmp, w->mlp2, L->fc2_w, rows, M, D);
        } else {
            linear(w, d, w->mlp, w->xn, L->fc1_w, rows, D, M);
            mark(w, "linear_gemm");
            bias_act<A>(w, (A *)w->mlp, L->fc1_b, rows, M, (int)c->act);
            mark(w, "elementwise");
            linear(w, d, w->tmp, w->mlp, L->fc2_w, rows, M, D);
            mark(w, "linear_gemm");
        }
        residual_norm<A, A>(w, w->x, (const A *)w->tmp, L->fc2_b, L->ls2, (A *)w->xn, next ? next->ln1_w : NULL,
                            next ? next->ln1_b : NULL, rows, D, eps);   /* with the next layer's norm1 */
        mark(w, "elementwise");
        if (hidden) cudaMemcpyAsync(w->out[4 + l], w->x, n_x * sizeof(float), cudaMemcpyDeviceToDevice, st);
        for (int s = 0; s < n_stages; s++) {   /* Dinov2Backbone stage outputs, normed when apply_layernorm */
            if (out_idx[s] != l + 1) continue;
            float *dst = w->stage + (size_t)s * n_x;
            if (c->apply_layernorm)
                residual_norm<A, float>(w, w->x, NULL, NULL, NULL, dst, d->ln_w, d->ln_b, rows, D, eps);
            else
                cudaMemcpyAsync(dst, w->x, n_x * sizeof(float), cudaMemcpyDeviceToDevice, st);
        }
    }
    if (m->kind == SA3D_MODEL_DINOV2) {   /* last_hidden_state, pooler_output, feature_map */
        residual_norm<A, float>(w, w->x, NULL, NULL, NULL, w->out[0], d->ln_w, d->ln_b, rows, D, eps);
        SA3D_LAUNCH(k_cls_rows, nblocks((size_t)B * D), 256, st, w->out[1], w->out[0], B, T, D);
        dim3 tiles((unsigned)((Np + 31) / 32), (unsigned)((D + 31) / 32), (unsigned)B);
        SA3D_LAUNCH(k_tokens_to_channels, tiles, 256, st, w->out[2], w->x, T, D, ws->n_prefix, Np);
    }
}

/* ---- the DPT pass (dpt.c), fp32 ---- */

/* out = act(nn.Conv2d(relu_in ? relu(in) : in) + b) + res over the B images of in [B][Ci][H][W] (b, res may be
 * NULL; relu_in only for k > 1). Maps are fp32.
 *   k x k: one implicit-GEMM kernel (k_conv_mma): the gather, the tensor-core products (fp16/bf16, or TF32 in
 *          fp32 passes) and the output step in one launch, no scratch.
 *   k x k with exact fp32 products (SA3D_CUDA_TF32=0) or SA3D_CUDA_IMPLICIT=0: im2col + one strided-batched GEMM
 *          (the weights shared: stride 0) per band of output rows, fp32 accumulation and result, on pitches padded
 *          to 8 (col and the band result); each band's output step (k_conv_out) moves it into the unpadded maps
 *          with bias, activation and residual. The im2col matrix is in the pass dtype, as wt is.
 *   1 x 1: wt fp32; one strided-batched GEMM (TF32) into out, the output step in place. */
static void conv2d(dws *w, const dmodel *d, float *out, const float *in, const void *wt, const float *b, int B,
                   int Ci, int H, int W, int Co, int k, int stride, int pad, int relu_in, int act, const float *res) {
    int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, Kc = Ci * k * k, HWo = Ho * Wo;
    size_t out_img = (size_t)Co * HWo;
    if (k > 1 && w->implicit) {
        with_dtype(d->at, [&](auto tag) {
            using T = decltype(tag);
            int mt = Co <= 32 ? 1 : 2;   /* 32 or 64 channels a block: the head's 32 fill one */
            auto *kern = mt == 1 ? k_conv_mma<T, 1> : k_conv_mma<T, 2>;
            dim3 grid((unsigned)((HWo + CV_BN - 1) / CV_BN), (unsigned)((Co + 32 * mt - 1) / (32 * mt)), (unsigned)B);
            SA3D_LAUNCH(kern, grid, 128, w->st, out, in, (const T *)wt, b, res, Ci, H, W, Co, k, stride, pad, Ho, Wo,
                        relu_in, act);
        });
        return;
    }
    if (k == 1 && stride == 1 && pad == 0) {
        gemm_batched(w, CUDA_R_32F, CUDA_R_32F, d->ct32, 0, 0, Co, HWo, Ci, 1.0f, wt, Ci, 0, in, HWo,
                     (long long)Ci * HWo, out, HWo, (long long)out_img, B);
        if (b || act != ACT_NONE || res)
            SA3D_LAUNCH(k_conv_out, dim3((unsigned)((HWo + 255) / 256), (unsigned)Co, (unsigned)B), 256, w->st, out,
                        (size_t)HWo, out_img, (size_t)0, out, HWo, out_img, HWo, b, act, res);
        return;
    }
    /* output rows per band: the workspace sized the scratch (scratch_need) for one row of every image at least */
    size_t row_col = (size_t)B * Kc * pad8(Wo), row_band = (size_t)B * Co * pad8(Wo);
    size_t band = zmax(1, zmin(w->col_floats / row_col, w->band_floats / row_band));
    for (int y0 = 0; y0 < Ho; y0 += (int)band) {
        int y1 = (size_t)(Ho - y0) > band ? y0 + (int)band : Ho, nc = (y1 - y0) * Wo, ncp = pad8(nc);
        unsigned bx = (unsigned)((nc + 255) / 256);
        dim3 grid(bx, (unsigned)Kc, (unsigned)B);
        size_t in_img = (size_t)Ci * H * W, col_img = (size_t)Kc * ncp;
        with_dtype(d->at, [&](auto tag) {
            using T = decltype(tag);
            SA3D_LAUNCH(k_im2col<T>, grid, 256, w->st, (T *)w->col, in, H, W, k, stride, pad, Wo, y0, nc, ncp,
                        relu_in, in_img, col_img);
        });
        gemm_batched(w, d->at, CUDA_R_32F, d->ct, 0, 0, Co, nc, Kc, 1.0f, wt, Kc, 0, w->col, ncp, (long long)col_img,
                     w->band, ncp, (long long)Co * ncp, B);
        SA3D_LAUNCH(k_conv_out, dim3(bx, (unsigned)Co, (unsigned)B), 256, w->st, out, (size_t)HWo, out_img,
                    (size_t)y0 * Wo, w->band, ncp, (size_t)Co * ncp, nc, b, act, res);
    }
}

/* DepthAnythingPreActResidualLayer: out = x + conv2(relu(conv1(relu(x)))), the ReLUs and the sum inside the
 * convolutions' gather and output steps; tmp holds conv1's output. */
static void preact_residual(dws *w, const dmodel *d, float *out, const float *x, const void *c1w, const float *c1b,
                            const void *c2w, const float *c2b, int B, int F, int h, int wd, float *tmp) {
    conv2d(w, d, tmp, x, c1w, c1b, B, F, h, wd, F, 3, 1, 1, 1, 2 /* ReLU */, NULL);
    conv2d(w, d, out, tmp, c2w, c2b, B, F, h, wd, F, 3, 1, 1, 0, ACT_NONE, x);
}

/* Bilinear resize (align_corners) of `planes` maps [H][W]: a block per output row of each plane. */
static void resize(dws *w, float *out, const float *in, size_t planes, int H, int W, int Ho, int Wo) {
    SA3D_LAUNCH(k_resize_bilinear_ac, dim3((unsigned)planes, (unsigned)Ho), 256, w->st, out, in, H, W, Ho, Wo);
}

/* The whole batch through the neck and head. */
static void dpt_pass(const sa3d_model *m, sa3d_workspace *ws, dws *w, const dmodel *d) {
    const sa3d_dpt_config *c = &m->dpt;
    cudaStream_t st = w->st;
    int B = ws->batch, T = ws->T, D = m->vit.hidden_size, gh = ws->gh, gw = ws->gw, HW = gh * gw;
    int P = m->vit.patch_size, F = c->fusion_hidden_size, Fh = F / 2, Hh = c->head_hidden_size;
    size_t n_x = (size_t)B * T * D;
    for (int s = 0; s < 4; s++) {   /* reassemble + neck.convs */
        int N = c->neck_hidden_sizes[s], f = c->reassemble_num[s];
        const float *tok = w->stage + (size_t)s * n_x + (size_t)ws->n_prefix * D;   /* image b: + b T D */
        gemm_batched(w, CUDA_R_32F, CUDA_R_32F, d->ct32, 0, 1, N, HW, D, 1.0f, d->reasm_proj_w[s], D, 0, tok, D,
                     (long long)T * D, w->proj, HW, (long long)N * HW, B);
        SA3D_LAUNCH(k_conv_out, dim3((unsigned)((HW + 255) / 256), (unsigned)N, (unsigned)B), 256, st, w->proj,
                    (size_t)HW, (size_t)N * HW, (size_t)0, w->proj, HW, (size_t)N * HW, HW, d->reasm_proj_b[s],
                    ACT_NONE, (const float *)NULL);
        if (f > 1) {
            gemm_batched(w, CUDA_R_32F, CUDA_R_32F, d->ct32, 1, 0, N * f * f, HW, N, 1.0f, d->reasm_resize_w[s],
                         N * f * f, 0, w->proj, HW, (long long)N * HW, w->convt_tmp, HW, (long long)N * f * f * HW, B);
            SA3D_LAUNCH(k_convt_scatter, dim3((unsigned)(B * N), (unsigned)(gh * f)), 256, st, w->reasm[s],
                        w->convt_tmp, d->reasm_resize_b[s], N, gh, gw, f);
        } else if (c->reassemble_den[s] > 1) {
            conv2d(w, d, w->reasm[s], w->proj, d->reasm_resize_w[s], d->reasm_resize_b[s], B, N, gh, gw, N, 3,
                   c->reassemble_den[s], 1, 0, ACT_NONE, NULL);
        } else {
            cudaMemcpyAsync(w->reasm[s], w->proj, (size_t)B * N * HW * sizeof(float), cudaMemcpyDeviceToDevice, st);
        }
        conv2d(w, d, w->feat[s], w->reasm[s], d->neck_conv_w[s], NULL, B, N, w->rh[s], w->rw[s], F, 3, 1, 1, 0,
               ACT_NONE, NULL);
    }
    int fh = w->rh[3], fw = w->rw[3];
    for (int idx = 0; idx < 4; idx++) {   /* fusion, coarsest first */
        int s = 3 - idx;
        const dfusion *L = &d->fu[idx];
        const float *x = w->feat[s];
        if (idx > 0) {
            preact_residual(w, d, w->res_a, w->feat[s], L->r1c1_w, L->r1c1_b, L->r1c2_w, L->r1c2_b, B, F, fh, fw,
                            w->res_b);
            size_t n = (size_t)B * F * fh * fw;
            SA3D_LAUNCH(k_add, nblocks(n), 256, st, w->fused, w->fused, w->res_a, n);
            x = w->fused;
        }
        preact_residual(w, d, w->res_a, x, L->r2c1_w, L->r2c1_b, L->r2c2_w, L->r2c2_b, B, F, fh, fw, w->res_b);
        int th = idx < 3 ? w->rh[s - 1] : 2 * fh, tw = idx < 3 ? w->rw[s - 1] : 2 * fw;
        resize(w, w->up, w->res_a, (size_t)B * F, fh, fw, th, tw);
        conv2d(w, d, w->fused, w->up, L->proj_w, L->proj_b, B, F, th, tw, F, 1, 1, 0, 0, ACT_NONE, NULL);
        fh = th;
        fw = tw;
    }
    int OH = gh * P, OW = gw * P;
    conv2d(w, d, w->head1, w->fused, d->head_c1_w, d->head_c1_b, B, F, fh, fw, Fh, 3, 1, 1, 0, ACT_NONE, NULL);
    resize(w, w->head_up, w->head1, (size_t)B * Fh, fh, fw, OH, OW);
    conv2d(w, d, w->head2, w->head_up, d->head_c2_w, d->head_c2_b, B, Fh, OH, OW, Hh, 3, 1, 1, 0, 2 /* ReLU */, NULL);
    conv2d(w, d, w->out[0], w->head2, d->head_c3_w, d->head_c3_b, B, Hh, OH, OW, 1, 1, 1, 0, 0, ACT_NONE, NULL);
    SA3D_LAUNCH(k_depth_out, nblocks((size_t)B * OH * OW), 256, st, w->out[0], (size_t)B * OH * OW, c->metric,
                c->max_depth);
}

/* Everything between the pixel upload and the flag download: what the graph captures. */
static void whole_pass(const sa3d_model *m, sa3d_workspace *ws, dws *w) {
    const dmodel *d = (const dmodel *)m->dev;
    w->n_ev = 0;
    mark(w, "start");
    size_t n_in = (size_t)ws->batch * m->vit.n_channels * ws->H * ws->W;
    cudaMemsetAsync(w->bad, 0xff, (size_t)(ws->n_out + 1) * sizeof(unsigned long long), w->st);
    SA3D_LAUNCH(k_first_nonfinite, nblocks(n_in), 256, w->st, w->pixels, n_in, w->bad + ws->n_out);
    int da = m->kind == SA3D_MODEL_DEPTH_ANYTHING;
    const int *idx = da ? m->dpt.out_indices : NULL;
    int n_stages = da ? 4 : 0;
    with_dtype(d->at, [&](auto tag) { vit_pass<decltype(tag)>(m, ws, w, d, idx, n_stages); });
    mark(w, "elementwise");
    if (da) dpt_pass(m, ws, w, d);
    mark(w, "dpt");
    for (int i = 0; i < ws->n_out; i++) {
        size_t n = sa3d_output_floats_per_image(ws, i) * ws->batch;
        SA3D_LAUNCH(k_first_nonfinite, nblocks(n), 256, w->st, w->out[i], n, w->bad + i);
    }
}

static sa3d_status cuda_download(sa3d_workspace *ws, int which, sa3d_error *err) {
    dws *w = (dws *)ws->dev;
    int any = 0;
    for (int i = 0; i < ws->n_out; i++) {
        if (!ws->out_stale[i] || (which >= 0 && i != which)) continue;
        cudaMemcpyAsync((void *)ws->out[i].data, w->out[i],
                        sa3d_output_floats_per_image(ws, i) * ws->batch * sizeof(float), cudaMemcpyDeviceToHost, w->st);
        any = 1;
    }
    if (!any) return SA3D_OK;
    cudaError_t e = cudaStreamSynchronize(w->st);
    if (e != cudaSuccess) return cuda_fail(err, ws->m->dir, "downloading the outputs", e);
    for (int i = 0; i < ws->n_out; i++)
        if (which < 0 || i == which) ws->out_stale[i] = 0;
    return SA3D_OK;
}

/* Page-locked host memory for the pixels and the output views (sa3d_backend.host_alloc): a copy from pageable
 * memory goes through a staging buffer at a fraction of the bus's speed. */
static void *cuda_host_alloc(size_t bytes) {
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes ? bytes : 1, cudaHostAllocDefault) != cudaSuccess) {
        cudaGetLastError();   /* not sticky: the next call must not see it */
        return NULL;
    }
    return p;
}
static void cuda_host_free(void *p) { cudaFreeHost(p); }

static sa3d_status cuda_forward(const sa3d_model *m, sa3d_workspace *ws, const float *pixels, sa3d_error *err) {
    dws *w = (dws *)ws->dev;
    size_t n_in = (size_t)ws->batch * m->vit.n_channels * ws->H * ws->W;
    cudaMemcpyAsync(w->pixels, pixels, n_in * sizeof(float), cudaMemcpyHostToDevice, w->st);
    w->bstat = CUBLAS_STATUS_SUCCESS;
    w->n_passes++;
    if (w->cur < 0 && !w->eager) {   /* first pass at this size: capture it; if that fails, run eagerly from now on */
        cudaGraph_t g = NULL;
        cudaGraphExec_t exec = NULL;
        w->eager = 1;
        if (cudaStreamBeginCapture(w->st, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
            whole_pass(m, ws, w);
            cudaError_t e = cudaStreamEndCapture(w->st, &g);
            if (e == cudaSuccess && g && w->bstat == CUBLAS_STATUS_SUCCESS &&
                cudaGraphInstantiate(&exec, g, 0) == cudaSuccess) {
                keep_graph(ws, w, exec);
                w->eager = 0;
            }
            if (g) cudaGraphDestroy(g);
        }
        cudaGetLastError();   /* a failed capture leaves an error behind; the eager pass reports its own */
        w->bstat = CUBLAS_STATUS_SUCCESS;
    }
    if (w->cur >= 0) {
        w->graphs[w->cur].uses = w->n_passes;
        cudaGraphLaunch(w->graphs[w->cur].exec, w->st);
    } else {
        whole_pass(m, ws, w);
    }
    cudaMemcpyAsync(w->bad_host, w->bad, (size_t)(ws->n_out + 1) * sizeof(unsigned long long),
                    cudaMemcpyDeviceToHost, w->st);
    cudaError_t e = cudaStreamSynchronize(w->st);
    if (e == cudaSuccess) e = cudaGetLastError();
    if (e != cudaSuccess) return cuda_fail(err, m->dir, "forward pass", e);
    if (w->prof) profile_report(w);
    if (w->bstat != CUBLAS_STATUS_SUCCESS)
        return sa3d_fail(err, SA3D_ERR_IO, "%s: cuBLAS failed in the forward pass (status %d)", m->dir, (int)w->bstat);
    if (w->bad_host[ws->n_out] != ~0ull)
        return sa3d_fail(err, SA3D_ERR_NUMERIC, "%s: pixel_values: non-finite value at index %llu", m->dir,
                         w->bad_host[ws->n_out]);
    for (int i = 0; i < ws->n_out; i++)
        if (w->bad_host[i] != ~0ull)
            return sa3d_fail(err, SA3D_ERR_NUMERIC, "%s: output %s: non-finite value at index %llu", m->dir,
                             ws->out[i].name, w->bad_host[i]);
    memset(ws->out_stale, 1, (size_t)ws->n_out);
    if (ws->flags & SA3D_WS_NO_DOWNLOAD) return SA3D_OK;
    return cuda_download(ws, -1, err);
}

extern "C" const sa3d_backend sa3d_backend_cuda = {
    "cuda", cuda_model_init, cuda_model_release, cuda_workspace_fit, cuda_workspace_release, cuda_forward,
    cuda_download, cuda_host_alloc, cuda_host_free,
};
