/* The GeoAware-SC feature-only matcher (METHOD.md 6.2 step 4 and 7.1): cosine similarity of the source cell's
 * feature with every target cell in one GEMM, then the window soft-argmax, mapped back with GeoAware's
 * keypoint padding convention. SemAlign3D's matcher falls back to this when an alignment is implausible. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/eval.h"
#include "semalign3d/match.h"

sa3d_baseline_params sa3d_baseline_params_default(void) {
    sa3d_baseline_params p = { 7, 0.02f };
    return p;
}

void sa3d_features_normalize(float *F, int C, int n_cells) {
    /* channel-major passes over [C][cells] (a cell-major loop strides 4 * n_cells bytes per step) */
    double *ss = calloc((size_t)n_cells, sizeof *ss);
    if (!ss) {   /* no scratch: the strided loop, same result */
        for (int i = 0; i < n_cells; i++) {
            double s = 0.0;
            for (int c = 0; c < C; c++) s += (double)F[(size_t)c * n_cells + i] * (double)F[(size_t)c * n_cells + i];
            float inv = (float)(1.0 / (sqrt(s) + 1e-10));
            for (int c = 0; c < C; c++) F[(size_t)c * n_cells + i] *= inv;
        }
        return;
    }
    for (int c = 0; c < C; c++) {
        const float *row = F + (size_t)c * n_cells;
        for (int i = 0; i < n_cells; i++) ss[i] += (double)row[i] * (double)row[i];
    }
    float *inv = (float *)ss;   /* reuse the buffer: inv[i] is written after ss[i] is read */
    for (int i = 0; i < n_cells; i++) inv[i] = (float)(1.0 / (sqrt(ss[i]) + 1e-10));
    for (int c = 0; c < C; c++) {
        float *row = F + (size_t)c * n_cells;
        for (int i = 0; i < n_cells; i++) row[i] *= inv[i];
    }
    free(ss);
}

/* GeoAware-SC utils preprocess_kps_pad: scale = size / max(w, h); the shorter side is centred with
 * offset int((size - new_side) / 2), new_side = round(size * short / long) (numpy rounds half to even). */
static void square_layout(int w, int h, int size, float *scale, float *ox, float *oy) {
    *scale = (float)size / (float)(w > h ? w : h);
    *ox = *oy = 0.0f;
    if (h < w) *oy = (float)((size - (int)nearbyint((double)size * h / w)) / 2);
    else if (w < h) *ox = (float)((size - (int)nearbyint((double)size * w / h)) / 2);
}

void sa3d_geoaware_to_square(int w, int h, int size, float u, float v, float *x, float *y) {
    float s, ox, oy;
    square_layout(w, h, size, &s, &ox, &oy);
    *x = u * s + ox;
    *y = v * s + oy;
}

void sa3d_geoaware_from_square(int w, int h, int size, float x, float y, float *u, float *v) {
    float s, ox, oy;
    square_layout(w, h, size, &s, &ox, &oy);
    *u = (x - ox) / s;
    *v = (y - oy) / s;
}

size_t sa3d_baseline_work_floats(int C, int g, int n) { return (size_t)n * ((size_t)C + (size_t)g * g); }

sa3d_status sa3d_match_baseline(const sa3d_feature_map *src, const sa3d_feature_map *trg, const float (*src_kps)[2],
                                int n, const sa3d_baseline_params *p, float (*pred)[2], float *work,
                                sa3d_error *err) {
    if (src->C != trg->C || src->g != trg->g || src->g <= 0 || n < 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "baseline match: feature maps differ (C %d vs %d, grid %d vs %d)",
                         src->C, trg->C, src->g, trg->g);
    if (n == 0) return SA3D_OK;
    int C = src->C, g = src->g, cells = g * g;
    float *q = work, *S = work + (size_t)n * C;   /* q[n][C], S[n][g*g] */
    float cell_px = (float)src->input_size / (float)g;
    for (int i = 0; i < n; i++) {
        float x, y;
        sa3d_geoaware_to_square(src->img_w, src->img_h, src->input_size, src_kps[i][0], src_kps[i][1], &x, &y);
        int cx = (int)floorf(x / cell_px), cy = (int)floorf(y / cell_px);
        cx = cx < 0 ? 0 : (cx >= g ? g - 1 : cx);
        cy = cy < 0 ? 0 : (cy >= g ? g - 1 : cy);
        for (int c = 0; c < C; c++) q[(size_t)i * C + c] = src->data[(size_t)c * cells + (size_t)cy * g + cx];
    }
    /* S[n][cells] = q[n][C] . trg[C][cells]: cosine similarity (both unit). A pair has ~8 keypoints: at that
     * size OpenBLAS is 3x slower on 2 threads than on 1 (measured by bench_eval), so small products run on one. */
    int blas_threads = openblas_get_num_threads();
    if (n < 64 && blas_threads > 1) openblas_set_num_threads(1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, cells, C, 1.0f, q, C, trg->data, cells, 0.0f, S, cells);
    if (n < 64 && blas_threads > 1) openblas_set_num_threads(blas_threads);
    float cell_t = (float)trg->input_size / (float)g;
    for (int i = 0; i < n; i++) {
        int ax, ay;
        float sx, sy;
        sa3d_window_soft_argmax(S + (size_t)i * cells, g, g, p->window_radius, p->temperature, &ax, &ay, &sx, &sy);
        /* cell centre in the square (cell * 14 + 7 for 840 / 60), then back to original pixels */
        sa3d_geoaware_from_square(trg->img_w, trg->img_h, trg->input_size, (sx + 0.5f) * cell_t, (sy + 0.5f) * cell_t,
                                  &pred[i][0], &pred[i][1]);
    }
    return SA3D_OK;
}

/* ---- the matcher over a dataset: a per-category feature cache ---- */

typedef struct cached_map { char id[64]; sa3d_map map; } cached_map;

struct sa3d_baseline_matcher {
    sa3d_provider *features;
    int input_size;
    sa3d_baseline_params p;
    char category[32];
    cached_map **maps;           /* each entry allocated on its own, so pointers to it stay valid */
    int n_maps, cap_maps;
    float *work;
    size_t work_floats;
};

sa3d_status sa3d_baseline_matcher_new(sa3d_baseline_matcher **out, sa3d_provider *features, int input_size,
                                      const sa3d_baseline_params *p, sa3d_error *err) {
    *out = NULL;
    if (input_size <= 0) return sa3d_fail(err, SA3D_ERR_ARG, "baseline matcher: input size %d", input_size);
    sa3d_baseline_matcher *bm = sa3d_calloc(1, sizeof *bm);
    if (!bm) return sa3d_fail(err, SA3D_ERR_NOMEM, "baseline matcher: out of memory");
    bm->features = features;
    bm->input_size = input_size;
    bm->p = p ? *p : sa3d_baseline_params_default();
    *out = bm;
    return SA3D_OK;
}

static void drop_maps(sa3d_baseline_matcher *bm) {
    for (int i = 0; i < bm->n_maps; i++) {
        free(bm->maps[i]->map.data);
        sa3d_free(bm->maps[i]);
    }
    bm->n_maps = 0;
}

void sa3d_baseline_matcher_free(sa3d_baseline_matcher *bm) {
    if (!bm) return;
    drop_maps(bm);
    sa3d_free(bm->maps);
    sa3d_free(bm->work);
    sa3d_free(bm);
}

static sa3d_status get_map(sa3d_baseline_matcher *bm, const char *cat, const char *id, const sa3d_map **out,
                           sa3d_error *err) {
    if (strcmp(bm->category, cat) != 0) {   /* a new category: the previous one's maps are not needed again */
        drop_maps(bm);
        snprintf(bm->category, sizeof bm->category, "%s", cat);
    }
    for (int i = 0; i < bm->n_maps; i++)
        if (!strcmp(bm->maps[i]->id, id)) {
            *out = &bm->maps[i]->map;
            return SA3D_OK;
        }
    if (bm->n_maps == bm->cap_maps) {
        int cap = bm->cap_maps ? 2 * bm->cap_maps : 64;
        cached_map **nm = sa3d_realloc(bm->maps, (size_t)cap * sizeof *nm);
        if (!nm) return sa3d_fail(err, SA3D_ERR_NOMEM, "baseline matcher: out of memory");
        bm->maps = nm;
        bm->cap_maps = cap;
    }
    cached_map *c = sa3d_calloc(1, sizeof *c);
    if (!c) return sa3d_fail(err, SA3D_ERR_NOMEM, "baseline matcher: out of memory");
    snprintf(c->id, sizeof c->id, "%s", id);
    sa3d_status s = sa3d_provider_get(bm->features, cat, id, 0, &c->map, err);
    if (!s && c->map.h != c->map.w)
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: feature map is %d x %d, not square", cat, id, c->map.h, c->map.w);
    if (s) {
        free(c->map.data);
        sa3d_free(c);
        return s;
    }
    bm->maps[bm->n_maps++] = c;
    *out = &c->map;
    return SA3D_OK;
}

sa3d_status sa3d_baseline_matcher_match(void *ctx, const sa3d_pair *pair, float (*pred)[2], sa3d_error *err) {
    sa3d_baseline_matcher *bm = ctx;
    const sa3d_map *ms, *mt;
    sa3d_status s;
    if ((s = get_map(bm, pair->category, pair->src, &ms, err)) || (s = get_map(bm, pair->category, pair->trg, &mt, err)))
        return s;
    sa3d_feature_map src = { ms->c, ms->h, ms->data, pair->src_size[0], pair->src_size[1], bm->input_size };
    sa3d_feature_map trg = { mt->c, mt->h, mt->data, pair->trg_size[0], pair->trg_size[1], bm->input_size };
    size_t need = sa3d_baseline_work_floats(src.C, src.g, pair->n_kps);
    if (need > bm->work_floats) {
        sa3d_free(bm->work);
        bm->work_floats = 0;
        if (!(bm->work = sa3d_malloc(need * sizeof(float)))) return sa3d_fail(err, SA3D_ERR_NOMEM, "baseline matcher: out of memory");
        bm->work_floats = need;
    }
    return sa3d_match_baseline(&src, &trg, (const float (*)[2])pair->src_kps, pair->n_kps, &bm->p, pred, bm->work, err);
}
