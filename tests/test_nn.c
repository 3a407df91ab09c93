/* Networks: parity of every model fixture directory with its Hugging Face reference outputs, kernel twins,
 * determinism, a forward pass that allocates nothing, and config/loader rejections. */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/nn.h"
#include "semalign3d/safetensors.h"
#include "t.h"
#include "nn/model.h"
#include "tensor/kernels.h"

/* STYLE.md section 7: network output vs HF reference, optimised kernel vs ref_ twin. */
#define PARITY_REL 1e-4

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

/* Max |a - b| and its index. */
static double max_err(const float *a, const float *b, size_t n, size_t *worst) {
    double m = -1.0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) { m = d; *worst = i; }   /* NaN counts as worst */
    }
    return m;
}

static float *read_all(const sa3d_st_tensor *t) {
    float *x = malloc(t->numel * sizeof(float) + 1);
    sa3d_error err;
    if (x && sa3d_st_read_f32(t, x, t->numel, &err) != SA3D_OK) { free(x); return NULL; }
    return x;
}

/* Runs one model fixture: every reference tensor but pixel_values must match the output of the same name. */
static int check_model_fixture(const char *dir, const char *name) {
    sa3d_error err = { 0 };
    char ref_path[8192];
    snprintf(ref_path, sizeof ref_path, "%s/reference.safetensors", dir);
    sa3d_safetensors *ref = NULL;
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    float *pixels = NULL;
    int checked = 0;
    T_OK(sa3d_st_open(&ref, ref_path, &err), &err);
    if (!ref) return 0;
    sa3d_model_params p = sa3d_model_params_default();
    T_OK(sa3d_model_open(&m, dir, &p, &err), &err);
    const sa3d_st_tensor *px = sa3d_st_find(ref, "pixel_values");
    T_CHECK(px && px->ndim == 4 && px->shape[0] == 1);
    if (!m || !px || px->ndim != 4) goto done;
    int H = (int)px->shape[2], W = (int)px->shape[3];
    pixels = read_all(px);
    T_OK(sa3d_workspace_new(&ws, m, H, W, SA3D_WS_HIDDEN_STATES, &err), &err);
    if (!ws) goto done;
    T_OK(sa3d_model_forward(m, ws, pixels, &err), &err);
    for (int i = 0; i < sa3d_st_count(ref); i++) {
        const sa3d_st_tensor *rt = sa3d_st_get(ref, i);
        if (!strcmp(rt->name, "pixel_values")) continue;
        const sa3d_tensor_view *o = sa3d_workspace_output(ws, rt->name);
        if (!o) { T_FAIL("%s: reference key %s has no output", name, rt->name); continue; }
        size_t n = sa3d_tensor_view_numel(o);
        int same = o->ndim == rt->ndim;
        for (int d = 0; d < o->ndim && same; d++) same = o->shape[d] == rt->shape[d];
        if (!same) { T_FAIL("%s: %s: shape differs from the reference", name, rt->name); continue; }
        float *want = read_all(rt);
        size_t worst;
        double e = max_err(o->data, want, n, &worst), bound = PARITY_REL * fmax(1.0, max_abs(want, n));
        printf("  %-34s %-20s max|err| %.3g  bound %.3g  worst index %zu\n", name, rt->name, e, bound, worst);
        if (!(e <= bound)) T_FAIL("%s: %s: max error %.6g > %.6g at index %zu (got %.9g, want %.9g)", name, rt->name,
                                  e, bound, worst, (double)o->data[worst], (double)want[worst]);
        free(want);
        checked++;
    }
    T_CHECK(checked > 0);
done:
    free(pixels);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    sa3d_st_close(ref);
    return checked;
}

static void case_parity(void) {
    char **dirs;
    int n_dirs = t_model_fixture_dirs(&dirs);
    if (n_dirs < 0) { T_FAIL("fixture root %s cannot be opened", t_fixtures_root()); return; }
    for (int i = 0; i < n_dirs; i++) {
        const char *slash = strrchr(dirs[i], '/');
        check_model_fixture(dirs[i], slash ? slash + 1 : dirs[i]);
        free(dirs[i]);
    }
    free(dirs);
    printf("  %d model fixture directories under %s\n", n_dirs, t_fixtures_root());
    T_CHECK(n_dirs > 0);
}

static void fill_random(float *x, size_t n, uint64_t seed, float scale) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        x[i] = scale * ((float)(s >> 40) / (float)(1u << 24) * 2.0f - 1.0f);
    }
}

static void case_attention_twin(void) {
    int T = 157, H = 3, Dh = 16, ld = H * Dh;
    size_t n = (size_t)T * ld;
    float *q = malloc(n * 4), *k = malloc(n * 4), *v = malloc(n * 4), *o = malloc(n * 4), *r = malloc(n * 4);
    /* scratch for one thread while two run: the pass keeps to the one block it has (ASan sees a write past it) */
    float *scores = malloc(sa3d_attention_scratch_floats(T, 1) * 4);
    fill_random(q, n, 1, 2.0f); fill_random(k, n, 2, 2.0f); fill_random(v, n, 3, 1.0f);
    sa3d_set_threads(2);
    sa3d_attention(o, q, k, v, T, H, Dh, ld, 0.25f, scores, 1);
    sa3d_set_threads(0);
    sa3d_ref_attention(r, q, k, v, T, H, Dh, ld, 0.25f);
    size_t worst;
    double e = max_err(o, r, n, &worst);
    printf("  attention vs ref: max|err| %.3g\n", e);
    T_CHECK(e <= PARITY_REL);
    free(q); free(k); free(v); free(o); free(r); free(scores);
}

static void case_conv_twin(void) {
    /* kernel, padding, stride, width: the DPT's 3x3 (stride 1 and 2) and shapes whose padding reaches past a
     * whole row of the input (widths 1 and 2 with a 5x5 kernel: some kernel columns read no input column) */
    static const int cases[][4] = { { 3, 1, 1, 17 }, { 3, 1, 2, 17 }, { 3, 0, 1, 17 }, { 1, 0, 1, 17 },
                                    { 5, 2, 2, 17 }, { 3, 2, 1, 16 }, { 5, 3, 1, 2 },  { 5, 2, 3, 2 },
                                    { 5, 2, 1, 1 },  { 5, 2, 2, 1 } };
    int Ci = 5, H = 23, Co = 7;
    for (size_t t = 0; t < sizeof cases / sizeof cases[0]; t++) {
        int k = cases[t][0], pad = cases[t][1], stride = cases[t][2], W = cases[t][3];
        int Ho = (H + 2 * pad - k) / stride + 1, Wo = (W + 2 * pad - k) / stride + 1, K = Ci * k * k;
        float *in = malloc((size_t)Ci * H * W * 4), *w = malloc((size_t)Co * K * 4), *b = malloc((size_t)Co * 4);
        float *o = malloc((size_t)Co * Ho * Wo * 4), *r = malloc((size_t)Co * Ho * Wo * 4);
        float *col = malloc((size_t)K * Wo * 2 * 4);   /* two output rows: forces many bands */
        fill_random(in, (size_t)Ci * H * W, 4, 1.0f);
        fill_random(w, (size_t)Co * K, 5, 0.5f);
        fill_random(b, Co, 6, 1.0f);
        sa3d_conv2d(o, in, w, b, Ci, H, W, Co, k, stride, pad, col, (size_t)K * Wo * 2);
        sa3d_ref_conv2d(r, in, w, b, Ci, H, W, Co, k, stride, pad);
        size_t worst;
        double e = max_err(o, r, (size_t)Co * Ho * Wo, &worst);
        printf("  conv2d %dx%d pad %d stride %d width %d vs ref: max|err| %.3g\n", k, k, pad, stride, W, e);
        T_CHECK(e <= PARITY_REL);
        free(in); free(w); free(b); free(o); free(r); free(col);
    }
}

/* First model fixture directory whose config names the given model_type, or NULL. */
static const char *find_fixture(const char *model_type, char *buf, size_t n) {
    const char *root = t_fixtures_root();
    DIR *d = opendir(root);
    struct dirent *e;
    const char *found = NULL;
    while (d && (e = readdir(d)) && !found) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s/config.json", root, e->d_name);
        char *text = NULL;
        sa3d_error err;
        if (sa3d_read_file(path, 1 << 20, &text, NULL, &err) != SA3D_OK) continue;
        cJSON *cfg = cJSON_Parse(text);
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(cfg, "model_type");   /* top level only */
        if (cJSON_IsString(mt) && !strcmp(mt->valuestring, model_type)) {
            snprintf(buf, n, "%s/%s", root, e->d_name);
            found = buf;
        }
        cJSON_Delete(cfg);
        sa3d_free(text);
    }
    if (d) closedir(d);
    return found;
}

/* The first fixture of model_type, opened on the CPU; NULL (the case failed) when there is none or it fails. */
static sa3d_model *open_fixture(const char *model_type) {
    char dir[4096];
    sa3d_error err;
    sa3d_model *m = NULL;
    if (!find_fixture(model_type, dir, sizeof dir)) T_FAIL("no %s fixture", model_type);
    else T_OK(sa3d_model_open(&m, dir, NULL, &err), &err);
    return m;
}

/* Same inputs twice: bit-identical; a forward pass performs no allocation through sa3d_malloc. */
static void case_determinism_no_alloc(void) {
    const char *types[] = { "dinov2", "depth_anything" };
    for (int k = 0; k < 2; k++) {
        sa3d_error err;
        sa3d_model *m = open_fixture(types[k]);
        sa3d_workspace *ws = NULL;
        if (!m) continue;
        int H = 98, W = 126;
        T_OK(sa3d_workspace_new(&ws, m, H, W, 0, &err), &err);
        size_t n = (size_t)3 * H * W;
        float *px = malloc(n * 4);
        fill_random(px, n, 7, 2.0f);
        const sa3d_tensor_view *o = sa3d_workspace_output_at(ws, 0);
        size_t numel = sa3d_tensor_view_numel(o);
        float *first = malloc(numel * 4);
        long live = sa3d_alloc_live_blocks();
        sa3d_alloc_fail_after(1);   /* any allocation inside forward would fail it */
        T_OK(sa3d_model_forward(m, ws, px, &err), &err);
        sa3d_alloc_fail_after(0);
        T_CHECK(sa3d_alloc_live_blocks() == live);
        memcpy(first, o->data, numel * 4);
        T_OK(sa3d_model_forward(m, ws, px, &err), &err);
        T_CHECK(memcmp(first, o->data, numel * 4) == 0);
        free(first);
        free(px);
        sa3d_workspace_free(ws);
        sa3d_model_free(m);
    }
}

/* 1 thread against 2, and against 8 (more than the cores of most test machines: the attention scratch is sized
 * for the cores, not for the threads asked, and the pass keeps to it): the linear layers' BLAS may split sums
 * differently, so equal within the parity bound; attention, norms and activations do not depend on the thread
 * count. */
static void case_threads(void) {
    char dir[4096];
    if (!find_fixture("dinov2", dir, sizeof dir)) { T_FAIL("no dinov2 fixture"); return; }
    sa3d_error err;
    float *out[3] = { NULL, NULL, NULL };
    const int threads[3] = { 1, 2, 8 };
    size_t numel = 0;
    int H = 140, W = 98;
    float *px = malloc((size_t)3 * H * W * 4);
    fill_random(px, (size_t)3 * H * W, 11, 2.0f);
    for (int k = 0; k < 3; k++) {
        sa3d_model_params p = sa3d_model_params_default();
        p.n_threads = threads[k];
        sa3d_model *m = NULL;
        sa3d_workspace *ws = NULL;
        T_OK(sa3d_model_open(&m, dir, &p, &err), &err);
        if (!m) break;
        T_OK(sa3d_workspace_new(&ws, m, H, W, 0, &err), &err);
        T_OK(sa3d_model_forward(m, ws, px, &err), &err);
        const sa3d_tensor_view *o = sa3d_workspace_output(ws, "last_hidden_state");
        numel = (size_t)o->shape[1] * (size_t)o->shape[2];
        out[k] = malloc(numel * 4);
        memcpy(out[k], o->data, numel * 4);
        sa3d_workspace_free(ws);
        sa3d_model_free(m);
    }
    for (int k = 1; k < 3 && out[0] && out[k]; k++) {
        size_t worst;
        double e = max_err(out[0], out[k], numel, &worst), bound = PARITY_REL * fmax(1.0, max_abs(out[0], numel));
        printf("  1 vs %d threads: max|diff| %.3g (bound %.3g)\n", threads[k], e, bound);
        T_CHECK(e <= bound);
    }
    for (int k = 0; k < 3; k++) free(out[k]);
    free(px);
}

/* Copies a fixture model folder into a temp dir with a replaced config.json. */
static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (f) { fputs(text, f); fclose(f); }
}

static void expect_config_error(const char *model_dir, const char *config, sa3d_status want, const char *needle) {
    char tmp[] = "/tmp/sa3d_nn_XXXXXX";
    if (!mkdtemp(tmp)) { T_FAIL("mkdtemp"); return; }
    char path[512], src[4200];
    snprintf(path, sizeof path, "%s/config.json", tmp);
    write_text(path, config);
    snprintf(src, sizeof src, "%s/model.safetensors", model_dir);
    char dst[512];
    snprintf(dst, sizeof dst, "%s/model.safetensors", tmp);
    if (symlink(src, dst) != 0) { T_FAIL("symlink"); return; }
    sa3d_model *m = (sa3d_model *)1;
    sa3d_error err = { 0 };
    T_STATUS(sa3d_model_open(&m, tmp, NULL, &err), want, &err);
    T_CHECK(m == NULL);
    T_CONTAINS(err.msg, needle);
    unlink(dst);
    unlink(path);
    rmdir(tmp);
}

static void case_config_errors(void) {
    char dir[4096];
    if (!find_fixture("dinov2", dir, sizeof dir)) { T_FAIL("no dinov2 fixture"); return; }
    expect_config_error(dir, "{", SA3D_ERR_FORMAT, "config.json: not valid JSON");
    expect_config_error(dir, "[1, 2]", SA3D_ERR_FORMAT, "expected a JSON object");
    expect_config_error(dir, "{\"model_type\": \"vit\"}", SA3D_ERR_UNSUPPORTED, "model_type: unsupported value vit");
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 32, \"num_attention_heads\": 5}",
                        SA3D_ERR_UNSUPPORTED, "num_attention_heads");
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": \"big\"}", SA3D_ERR_FORMAT, "hidden_size");
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 32, \"num_attention_heads\": 4, "
                             "\"hidden_act\": \"mish\"}", SA3D_ERR_UNSUPPORTED, "hidden_act: unsupported value mish");
    /* the checkpoint has 3 layers of width 32: a config asking for width 64 names the first mismatching key */
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 64, \"num_attention_heads\": 4, "
                             "\"image_size\": 56, \"num_hidden_layers\": 3}", SA3D_ERR_FORMAT, "wrong shape");
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 32, \"num_attention_heads\": 4, "
                             "\"image_size\": 56, \"num_hidden_layers\": 4}", SA3D_ERR_FORMAT,
                        "model.safetensors: tensor 'encoder.layer.3.norm1.weight' is missing");
    expect_config_error(dir, "{\"model_type\": \"depth_anything\", \"backbone_config\": {\"model_type\": \"dinov2\", "
                             "\"out_indices\": [1, 2]}}", SA3D_ERR_UNSUPPORTED, "exactly 4 stages");
    expect_config_error(dir, "{\"model_type\": \"depth_anything\", \"backbone_config\": {\"model_type\": \"dinov2\", "
                             "\"out_indices\": [1,2,3,4], \"reshape_hidden_states\": false}, \"neck_hidden_sizes\": [8,16,24,32], "
                             "\"reassemble_factors\": [4, 2, 1, 0.3]}", SA3D_ERR_UNSUPPORTED, "reassemble_factors");
    expect_config_error(dir, "{\"model_type\": \"depth_anything\", \"depth_estimation_type\": \"absolute\", "
                             "\"backbone_config\": {\"model_type\": \"dinov2\", \"out_indices\": [1,2,3,4], "
                             "\"reshape_hidden_states\": false}, \"neck_hidden_sizes\": [8,16,24,32], "
                             "\"reassemble_factors\": [4, 2, 1, 0.5]}", SA3D_ERR_UNSUPPORTED, "depth_estimation_type");
    /* sizes that leave nothing to lay out, and numbers too large for an int (fuzz_config found these) */
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 32, \"num_attention_heads\": 4, "
                             "\"image_size\": 10}", SA3D_ERR_FORMAT, "image_size: smaller than patch_size");
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 1, \"num_attention_heads\": 1, "
                             "\"mlp_ratio\": 0.5}", SA3D_ERR_FORMAT, "mlp_ratio: gives an MLP narrower");
    expect_config_error(dir, "{\"model_type\": \"depth_anything\", \"backbone_config\": {\"model_type\": \"dinov2\", "
                             "\"out_indices\": [1, 2, 3, 1e30]}}", SA3D_ERR_FORMAT, "out_indices: expected integers");
    expect_config_error(dir, "{\"model_type\": \"depth_anything\", \"backbone_config\": {\"model_type\": \"dinov2\", "
                             "\"out_features\": [\"stage1\", \"stage99999999999999999999\"]}}", SA3D_ERR_FORMAT,
                        "out_features: expected names");
    expect_config_error(dir, "{\"model_type\": \"depth_anything\", \"backbone_config\": {\"model_type\": \"dinov2\", "
                             "\"out_indices\": [1,2,3,4], \"reshape_hidden_states\": false}, \"neck_hidden_sizes\": [8,16,24,32], "
                             "\"reassemble_factors\": [4, 2, 1, 1e-5]}", SA3D_ERR_UNSUPPORTED, "reassemble_factors");
    /* what Hugging Face refuses or cannot run is refused, never run with a guessed meaning */
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 32, \"num_attention_heads\": 4, "
                             "\"num_channels\": 4}", SA3D_ERR_UNSUPPORTED, "num_channels: unsupported value 4");
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 32, \"num_attention_heads\": 4, "
                             "\"num_channels\": 1}", SA3D_ERR_UNSUPPORTED, "num_channels: unsupported value 1");
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 32, \"num_attention_heads\": 4, "
                             "\"hidden_act\": 5}", SA3D_ERR_FORMAT, "hidden_act: expected a string");
    expect_config_error(dir, "{\"model_type\": \"dinov2\", \"hidden_size\": 32, \"num_attention_heads\": 4, "
                             "\"hidden_act\": null}", SA3D_ERR_FORMAT, "hidden_act: expected a string");
#define DA_BB(x) "{\"model_type\": \"depth_anything\", \"backbone_config\": {" x "}}"
    expect_config_error(dir, DA_BB("\"model_type\": \"dinov2\", \"out_indices\": [4, 3, 2, 1]"), SA3D_ERR_FORMAT,
                        "backbone_config.out_indices: stages must increase");
    expect_config_error(dir, DA_BB("\"model_type\": \"dinov2\", \"out_indices\": [4, 4, 4, 4]"), SA3D_ERR_FORMAT,
                        "backbone_config.out_indices: stages must increase");
    expect_config_error(dir, DA_BB("\"model_type\": \"dinov2\", \"out_features\": [\"stage2\", \"stage1\", "
                                   "\"stage3\", \"stage4\"]"), SA3D_ERR_FORMAT,
                        "backbone_config.out_features: stages must increase");
    expect_config_error(dir, DA_BB("\"model_type\": \"dinov2\", \"out_indices\": [1, 2, 3, 4], \"out_features\": "
                                   "[\"stage1\", \"stage2\", \"stage3\", \"stage5\"]"), SA3D_ERR_FORMAT,
                        "out_features: names other stages than out_indices");
    expect_config_error(dir, DA_BB("\"out_indices\": [1, 2, 3, 4], \"reshape_hidden_states\": false"),
                        SA3D_ERR_FORMAT, "backbone_config.model_type: missing");
    expect_config_error(dir, DA_BB("\"model_type\": \"dinov2\", \"out_indices\": [1, 2, 3, 4]"),
                        SA3D_ERR_UNSUPPORTED, "backbone_config.reshape_hidden_states: unsupported value true");
#undef DA_BB
    /* missing folder */
    sa3d_model *m;
    sa3d_error err;
    T_STATUS(sa3d_model_open(&m, "/nonexistent/model", NULL, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, "/nonexistent/model/config.json");
}

static void case_bad_inputs(void) {
    char dir[4096];
    if (!find_fixture("dinov2", dir, sizeof dir)) { T_FAIL("no dinov2 fixture"); return; }
    sa3d_error err;
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    T_OK(sa3d_model_open(&m, dir, NULL, &err), &err);
    if (!m) return;
    T_STATUS(sa3d_workspace_new(&ws, m, 13, 28, 0, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_workspace_new(&ws, m, 28, 100000, 0, &err), SA3D_ERR_ARG, &err);
    T_OK(sa3d_workspace_new(&ws, m, 28, 28, 0, &err), &err);
    float px[3 * 28 * 28] = { 0 };
    px[100] = NAN;
    T_STATUS(sa3d_model_forward(m, ws, px, &err), SA3D_ERR_NUMERIC, &err);
    T_CONTAINS(err.msg, "pixel_values: non-finite value at index 100");
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
}

/* A batch of three images gives, for every output, exactly what three single-image passes give. */
static void case_batch(void) {
    const char *types[] = { "dinov2", "depth_anything" };
    for (int k = 0; k < 2; k++) {
        sa3d_error err;
        sa3d_model *m = open_fixture(types[k]);
        sa3d_workspace *one = NULL, *three = NULL;
        if (!m) continue;
        int H = 70, W = 84, B = 3;
        T_OK(sa3d_workspace_new(&one, m, H, W, SA3D_WS_HIDDEN_STATES, &err), &err);
        T_OK(sa3d_workspace_new_batch(&three, m, H, W, B, SA3D_WS_HIDDEN_STATES, &err), &err);
        if (!one || !three) { sa3d_workspace_free(one); sa3d_model_free(m); continue; }
        size_t n_img = (size_t)3 * H * W;
        float *px = malloc(B * n_img * 4);
        fill_random(px, B * n_img, 11, 2.0f);
        T_OK(sa3d_model_forward(m, three, px, &err), &err);
        T_CHECK(sa3d_workspace_n_outputs(one) == sa3d_workspace_n_outputs(three));
        for (int b = 0; b < B; b++) {
            T_OK(sa3d_model_forward(m, one, px + b * n_img, &err), &err);
            for (int i = 0; i < sa3d_workspace_n_outputs(one); i++) {
                const sa3d_tensor_view *o1 = sa3d_workspace_output_at(one, i), *o3 = sa3d_workspace_output_at(three, i);
                size_t per = 1;
                for (int d = 1; d < o1->ndim; d++) per *= (size_t)o1->shape[d];
                T_CHECK(o1->shape[0] == 1 && o3->shape[0] == B);
                if (memcmp(o1->data, o3->data + b * per, per * 4))
                    T_FAIL("%s: output %s of image %d differs in the batch", types[k], o1->name, b);
            }
        }
        sa3d_workspace *bad = NULL;
        T_STATUS(sa3d_workspace_new_batch(&bad, m, H, W, 0, 0, &err), SA3D_ERR_ARG, &err);
        T_CHECK(bad == NULL);
        free(px);
        sa3d_workspace_free(one);
        sa3d_workspace_free(three);
        sa3d_model_free(m);
    }
}

/* Runs ws (B images of H x W, pixels through its sa3d_workspace_input buffer) and a new workspace made for that
 * size on the same pixels: every output must be the same, name, shape and bits. */
static void expect_same_as_new(sa3d_model *m, sa3d_workspace *ws, int B, int H, int W, unsigned flags,
                               const char *what) {
    sa3d_error err;
    sa3d_workspace *fresh = NULL;
    size_t n = (size_t)B * 3 * H * W;
    float *px = malloc(n * sizeof(float)), *in = sa3d_workspace_input(ws);
    T_CHECK(in != NULL);
    if (!px || !in) { free(px); return; }
    fill_random(px, n, (uint64_t)(H * 1000 + W), 2.0f);
    memcpy(in, px, n * sizeof(float));
    T_OK(sa3d_model_forward(m, ws, NULL, &err), &err);
    T_OK(sa3d_workspace_download_output(ws, sa3d_workspace_output_at(ws, 0)->name, &err), &err);   /* no-op here */
    T_STATUS(sa3d_workspace_download_output(ws, "no_such_output", &err), SA3D_ERR_ARG, &err);
    T_OK(sa3d_workspace_new_batch(&fresh, m, H, W, B, flags, &err), &err);
    if (fresh) T_OK(sa3d_model_forward(m, fresh, px, &err), &err);
    T_CHECK(fresh && sa3d_workspace_n_outputs(ws) == sa3d_workspace_n_outputs(fresh));
    for (int i = 0; fresh && i < sa3d_workspace_n_outputs(fresh); i++) {
        const sa3d_tensor_view *a = sa3d_workspace_output_at(ws, i), *b = sa3d_workspace_output_at(fresh, i);
        size_t numel = sa3d_tensor_view_numel(b);
        if (!a || strcmp(a->name, b->name) || a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof a->shape) ||
            memcmp(a->data, b->data, numel * sizeof(float)))
            T_FAIL("%s: batch %d, %d x %d: output %s differs from a new workspace's", what, B, H, W, b->name);
    }
    sa3d_workspace_free(fresh);
    free(px);
}

/* One workspace resized through larger and smaller sizes gives at each size what a workspace made for it gives,
 * keeps its memory when shrinking, rejects a bad size without harm, and after running out of memory refuses
 * passes until a resize succeeds. */
static void case_resize(void) {
    static const int sizes[][2] = { { 70, 84 }, { 98, 126 }, { 42, 56 }, { 98, 126 }, { 98, 126 }, { 70, 84 } };
    const char *types[] = { "dinov2", "depth_anything" };
    for (int k = 0; k < 2; k++) {
        sa3d_error err;
        sa3d_model *m = open_fixture(types[k]);
        if (!m) continue;
        for (int B = 1; B <= 2; B++) {
            unsigned flags = B == 1 ? SA3D_WS_HIDDEN_STATES : 0;
            sa3d_workspace *ws = NULL;
            T_OK(sa3d_workspace_new_batch(&ws, m, sizes[0][0], sizes[0][1], B, flags, &err), &err);
            if (!ws) continue;
            size_t held = 0;
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
                int H = sizes[i][0], W = sizes[i][1];
                T_OK(sa3d_workspace_resize(ws, H, W, &err), &err);
                if (i == 1) held = sa3d_workspace_bytes(ws);
                if (i > 1) T_CHECK(sa3d_workspace_bytes(ws) == held);   /* the largest size's memory, kept */
                expect_same_as_new(m, ws, B, H, W, flags, types[k]);
            }
            T_STATUS(sa3d_workspace_resize(ws, 13, 28, &err), SA3D_ERR_ARG, &err);
            T_CONTAINS(err.msg, "each side must be in [14, 16384]");
            expect_same_as_new(m, ws, B, 70, 84, flags, types[k]);
            sa3d_alloc_fail_after(1);
            T_STATUS(sa3d_workspace_resize(ws, 140, 154, &err), SA3D_ERR_NOMEM, &err);
            sa3d_alloc_fail_after(0);
            T_CHECK(sa3d_workspace_n_outputs(ws) == 0);
            T_STATUS(sa3d_model_forward(m, ws, NULL, &err), SA3D_ERR_NOMEM, &err);
            T_CONTAINS(err.msg, "last resize failed");
            T_OK(sa3d_workspace_resize(ws, 140, 154, &err), &err);
            expect_same_as_new(m, ws, B, 140, 154, flags, types[k]);
            sa3d_workspace_free(ws);
        }
        sa3d_model_free(m);
    }
}

/* Forward a DINOv2 fixture at H x W with the given positions rule; last_hidden_state copied out (malloc'd), and
 * the model id. NULL when the fixture cannot run. */
static float *forward_positions(const char *dir, const char *positions, int H, int W, size_t *numel, char id[17]) {
    sa3d_model_params p = sa3d_model_params_default();
    p.positions = positions;
    sa3d_model *m = NULL;
    sa3d_workspace *ws = NULL;
    sa3d_error err;
    float *out = NULL, *px = malloc((size_t)3 * H * W * 4);
    T_OK(sa3d_model_open(&m, dir, &p, &err), &err);
    if (m && px && !sa3d_workspace_new(&ws, m, H, W, 0, &err)) {
        fill_random(px, (size_t)3 * H * W, 5, 2.0f);
        T_OK(sa3d_model_forward(m, ws, px, &err), &err);
        const sa3d_tensor_view *o = sa3d_workspace_output(ws, "last_hidden_state");
        *numel = sa3d_tensor_view_numel(o);
        if ((out = malloc(*numel * 4))) memcpy(out, o->data, *numel * 4);
        snprintf(id, 17, "%s", sa3d_model_id(m));
    }
    free(px);
    sa3d_workspace_free(ws);
    sa3d_model_free(m);
    return out;
}

/* Keys' cubic convolution weight (A = -0.75, PyTorch's bicubic) at distance x. */
static double keys_w(double x) {
    const double A = -0.75;
    x = fabs(x);
    if (x >= 2.0) return 0.0;
    return x <= 1.0 ? ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0 : ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
}

/* PyTorch's bicubic of the ramp in[j] = j at input coordinate c, taps inside the grid. */
static double ramp_bicubic(double c) {
    double i = floor(c), t = c - i, v = 0.0;
    for (int k = -1; k <= 2; k++) v += keys_w(t - k) * (i + k);
    return v;
}

/* PyTorch's bicubic of channel d of a [G*G][D] grid (row-major positions) at input (ry, rx), taps clamped. */
static double grid_bicubic(const float *pos, int G, size_t D, size_t d, double ry, double rx) {
    double iy = floor(ry), ix = floor(rx), v = 0.0;
    for (int a = -1; a <= 2; a++)
        for (int b = -1; b <= 2; b++) {
            int y = (int)iy + a, x = (int)ix + b;
            y = y < 0 ? 0 : y >= G ? G - 1 : y;
            x = x < 0 ? 0 : x >= G ? G - 1 : x;
            v += keys_w(ry - iy - a) * keys_w(rx - ix - b) * (double)pos[((size_t)y * G + x) * D + d];
        }
    return v;
}

/* positions "hub": the original release's scale_factor rule (sa3d_model_params.positions). The resize samples
 * input (o + 0.5) G / (g + 0.1) - 0.5, not (o + 0.5) G / g - 0.5: on a ramp, away from the borders, the output is
 * the cubic of that coordinate (ramp_bicubic, written out here). The model's outputs then differ from "hf" where
 * the grid is resized, equal it where it is not (a square input of the checkpoint's grid) and for with-registers
 * models (whose release resizes as Hugging Face does), and the model id tells the rules apart. */
static void case_positions_hub(void) {
    enum { G = 37, g = 60 };
    float in[G * G], out[g * g], hf[g * g];
    for (int y = 0; y < G; y++)
        for (int x = 0; x < G; x++) in[y * G + x] = (float)x;   /* a ramp along the width */
    float s_hub = (float)(1.0 / ((g + 0.1) / G));
    sa3d_resize_bicubic_scaled(out, in, 1, G, G, g, g, s_hub, s_hub);
    sa3d_resize_bicubic(hf, in, 1, G, G, g, g, 0, NULL);
    double worst = 0.0, apart = 0.0;
    for (int o = 2; o < g - 3; o++) {   /* taps inside the grid */
        double want = ramp_bicubic((o + 0.5) * G / (g + 0.1) - 0.5);
        double want_hf = ramp_bicubic((o + 0.5) * G / (double)g - 0.5);
        worst = fmax(worst, fabs((double)out[17 * g + o] - want));
        worst = fmax(worst, fabs((double)hf[17 * g + o] - want_hf));
        apart = fmax(apart, fabs((double)out[17 * g + o] - (double)hf[17 * g + o]));
    }
    printf("  37 -> 60 ramp: max|out - bicubic at the rule's coordinate| %.2g (both rules); hub vs hf up to %.3f\n",
           worst, apart);
    T_CHECK(worst <= 1e-4 && apart > 0.05);
    char dir[4096];
    if (!find_fixture("dinov2", dir, sizeof dir)) { T_FAIL("no dinov2 fixture"); return; }
    size_t n1 = 0, n2 = 0;
    char id1[17] = "", id2[17] = "";
    float *a = forward_positions(dir, "hf", 70, 98, &n1, id1), *b = forward_positions(dir, "hub", 70, 98, &n2, id2);
    double diff = a && b && n1 == n2 ? max_err(a, b, n1, &(size_t){ 0 }) : 0.0;
    printf("  dinov2 at 70 x 98 (grid 5 x 7 from 4 x 4): hub vs hf max|diff| %.3g; ids %s / %s\n", diff, id1, id2);
    T_CHECK(diff > 1e-3 && strcmp(id1, id2) != 0);
    free(a); free(b);
    /* the positions of a 5 x 7 grid against the bicubic written out, rows at 4 / 5.1 and columns at 4 / 7.1 input
     * cells per output cell (the release's "w" is the image height: each axis by its own grid) */
    sa3d_model_params hp = sa3d_model_params_default();
    hp.positions = "hub";
    sa3d_model *hm = NULL;
    sa3d_error herr;
    T_OK(sa3d_model_open(&hm, dir, &hp, &herr), &herr);
    if (hm) {
        const sa3d_vit_config *c = sa3d_model_vit_config(hm);
        int Gp = c->pos_grid, gh = 5, gw = 7;
        size_t D = (size_t)c->hidden_size;
        float *pos = malloc((1 + (size_t)gh * gw) * D * 4), *grid = malloc(D * ((size_t)Gp * Gp + (size_t)gh * gw) * 4);
        if (pos && grid) {
            sa3d_vit_positions(hm, gh, gw, 0, pos, grid, NULL);
            const float *stored = hm->vw.pos + D;   /* past the CLS position */
            double err_right = 0.0, err_swapped = 0.0, mag = 0.0;
            for (int y = 0; y < gh; y++)
                for (int x = 0; x < gw; x++)
                    for (size_t d = 0; d < D; d++) {
                        double got = (double)pos[(1 + (size_t)y * gw + x) * D + d];
                        double ry = (y + 0.5) * Gp / (gh + 0.1) - 0.5, rx = (x + 0.5) * Gp / (gw + 0.1) - 0.5;
                        double sy = (y + 0.5) * Gp / (gw + 0.1) - 0.5, sx = (x + 0.5) * Gp / (gh + 0.1) - 0.5;
                        err_right = fmax(err_right, fabs(got - grid_bicubic(stored, Gp, D, d, ry, rx)));
                        err_swapped = fmax(err_swapped, fabs(got - grid_bicubic(stored, Gp, D, d, sy, sx)));
                        mag = fmax(mag, fabs(got));
                    }
            printf("  hub positions of a 5 x 7 grid: max|err| %.2g (%.2g with the axes' scales swapped), max|pos| "
                   "%.2g\n", err_right, err_swapped, mag);
            T_CHECK(err_right <= 1e-5 * fmax(1.0, mag) && err_swapped > 1e-3 * mag);
        }
        free(pos);
        free(grid);
        sa3d_model_free(hm);
    }
    a = forward_positions(dir, "hf", 56, 56, &n1, id1);   /* the checkpoint's own grid: nothing is resized */
    b = forward_positions(dir, "hub", 56, 56, &n2, id2);
    T_CHECK(a && b && n1 == n2 && memcmp(a, b, n1 * 4) == 0);
    free(a); free(b);
    if (!find_fixture("dinov2_with_registers", dir, sizeof dir)) { T_FAIL("no registers fixture"); return; }
    a = forward_positions(dir, "hf", 70, 98, &n1, id1);
    b = forward_positions(dir, "hub", 70, 98, &n2, id2);
    T_CHECK(a && b && n1 == n2 && memcmp(a, b, n1 * 4) == 0 && !strcmp(id1, id2));
    free(a); free(b);
    sa3d_model_params p = sa3d_model_params_default();
    p.positions = "timm";
    sa3d_model *m = NULL;
    sa3d_error err;
    T_STATUS(sa3d_model_open(&m, dir, &p, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "positions 'timm': expected hf or hub");
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "every model fixture matches its reference", case_parity },
        { "2.1", "blocked attention equals the naive twin", case_attention_twin },
        { "2.2", "banded im2col conv2d equals the naive twin", case_conv_twin },
        { "3.1", "forward is deterministic and allocates nothing", case_determinism_no_alloc },
        { "3.2", "1, 2 and 8 threads agree", case_threads },
        { "3.3", "a batch equals single-image passes", case_batch },
        { "3.4", "a resized workspace equals one made for the size", case_resize },
        { "4.1", "config and checkpoint mismatches are named", case_config_errors },
        { "4.2", "bad sizes and NaN pixels are rejected", case_bad_inputs },
        { "5.1", "positions by the original release's rule (hub)", case_positions_hub },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
