/* The GeoAware-SC feature-only matcher (METHOD.md 6.2 step 4 and 7.1): cosine similarity of the source cell's
 * feature with every target cell in one fixed-order product (tensor/kernels.h), then the window soft-argmax, mapped back with GeoAware's
 * keypoint padding convention. SemAlign3D's matcher falls back to this when an alignment is implausible. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/eval.h"
#include "semalign3d/match.h"
#include "tensor/kernels.h"
#include "baseline_internal.h"

sa3d_baseline_params sa3d_baseline_params_default(void) {
    sa3d_baseline_params p = { 7, 0.02f, (size_t)2 << 30, SA3D_FLIP_OFF };
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

long sa3d_features_normalize_copy(float *restrict dst, const float *restrict src, int C, int n_cells) {
    /* The same arithmetic as sa3d_features_normalize (double sums in channel order, one float inverse per cell,
     * one product), so both give bit-identical maps; reading src twice beats copying it first (23.5 ms a file
     * for copy + normalise + finiteness scan, bench_eval). */
    double *ss = calloc((size_t)n_cells, sizeof *ss);
    if (!ss) {
        memcpy(dst, src, (size_t)C * n_cells * sizeof(float));
        sa3d_features_normalize(dst, C, n_cells);
    } else {
        for (int c = 0; c < C; c++) {
            const float *row = src + (size_t)c * n_cells;
            for (int i = 0; i < n_cells; i++) ss[i] += (double)row[i] * (double)row[i];
        }
        float *inv = (float *)ss;   /* as in sa3d_features_normalize */
        for (int i = 0; i < n_cells; i++) inv[i] = (float)(1.0 / (sqrt(ss[i]) + 1e-10));
        for (int c = 0; c < C; c++) {
            const float *row = src + (size_t)c * n_cells;
            float *out = dst + (size_t)c * n_cells;
            for (int i = 0; i < n_cells; i++) out[i] = row[i] * inv[i];
        }
        /* A non-finite input makes its cell's inverse 0 or NaN, and then inf * 0 or NaN reaches dst; a finite
         * cell gives |dst| <= 1. So one scan of the n_cells inverses proves the map finite; only a bad map pays
         * for the full scan that finds the first bad index. */
        int all_finite = 1;
        for (int i = 0; i < n_cells; i++) all_finite &= inv[i] != 0.0f && isfinite(inv[i]);
        free(ss);
        if (all_finite) return -1;
    }
    size_t n = (size_t)C * n_cells;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(dst[i])) return (long)i;
    return -1;
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

const char *sa3d_baseline_bad_option(const sa3d_baseline_params *p) {
    if (p->window_radius < 0 || p->window_radius > SA3D_WINDOW_MAX_RADIUS)
        return "baseline.window_radius (0..1000)";
    if (!(p->temperature >= 1e-6f && p->temperature <= 1e6f)) return "baseline.temperature ([1e-6, 1e6])";
    if (p->adapt_flip < SA3D_FLIP_OFF || p->adapt_flip > SA3D_FLIP_MUTUAL_NN)
        return "baseline.adapt_flip (0 off, 1 mask, 2 mutual-nn)";
    return NULL;
}

sa3d_status sa3d_baseline_params_check(const sa3d_baseline_params *p, sa3d_error *err) {
    if (!p) return sa3d_fail(err, SA3D_ERR_ARG, "baseline: no parameters (sa3d_baseline_params_default gives them)");
    const char *bad = sa3d_baseline_bad_option(p);
    return bad ? sa3d_fail(err, SA3D_ERR_ARG, "baseline: option %s out of range", bad) : SA3D_OK;
}

size_t sa3d_baseline_work_floats(int C, int g, int n) { return (size_t)n * ((size_t)C + (size_t)g * g); }

/* clamped before the cast: a float beyond int's range (or NaN) has no defined conversion */
static int clamp_cell(float v, int g) { return !(v >= 0.0f) ? 0 : v >= (float)g ? g - 1 : (int)v; }

size_t sa3d_baseline_query_cell(float x, float y, int input_size, int g) {
    float cell_px = (float)input_size / (float)g;
    return (size_t)clamp_cell(floorf(y / cell_px), g) * g + (size_t)clamp_cell(floorf(x / cell_px), g);
}

sa3d_status sa3d_queries_check(const float (*kps)[2], int n, const char *who, sa3d_error *err) {
    long bad = n > 0 ? sa3d_first_nonfinite(&kps[0][0], (size_t)n * 2) : -1;
    if (bad >= 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: query %ld is (%g, %g)", who, bad / 2, (double)kps[bad / 2][0],
                         (double)kps[bad / 2][1]);
    return SA3D_OK;
}

sa3d_status sa3d_match_baseline_cells(const sa3d_feature_map *src, const sa3d_feature_map *trg, const size_t *cells_q,
                                      int n, const sa3d_baseline_params *p, float (*pred)[2], float *work,
                                      sa3d_error *err) {
    if (src->C != trg->C || src->g != trg->g || src->g <= 0 || n < 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "baseline match: feature maps differ (C %d vs %d, grid %d vs %d)",
                         src->C, trg->C, src->g, trg->g);
    if (sa3d_baseline_params_check(p, err) != SA3D_OK) return SA3D_ERR_ARG;
    if (n == 0) return SA3D_OK;
    int C = src->C, g = src->g, cells = g * g;
    float *q = work, *S = work + (size_t)n * C;   /* q[n][C], S[n][g*g] */
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++) q[(size_t)i * C + c] = src->data[(size_t)c * cells + cells_q[i]];
    /* S[n][cells] = q[n][C] . trg[C][cells]: cosine similarity (both unit). The fixed-order product, not
     * cblas_sgemm: each element must not depend on n or on the row's place, so that the batched matcher
     * (all queries of a target in one product) gives these very bits. */
    sa3d_gemm_fixed_order(S, q, trg->data, n, C, cells);
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

sa3d_status sa3d_match_baseline(const sa3d_feature_map *src, const sa3d_feature_map *trg, const float (*src_kps)[2],
                                int n, const sa3d_baseline_params *p, float (*pred)[2], float *work,
                                sa3d_error *err) {
    if (n <= 0 || src->g <= 0) return sa3d_match_baseline_cells(src, trg, NULL, n, p, pred, work, err);
    sa3d_status qs = sa3d_queries_check(src_kps, n, "baseline match", err);
    if (qs) return qs;
    size_t cells_q[SA3D_MAX_KPS];
    for (int done = 0; done < n; done += SA3D_MAX_KPS) {   /* a row's bits do not depend on the row count */
        int k = n - done < SA3D_MAX_KPS ? n - done : SA3D_MAX_KPS;
        for (int i = 0; i < k; i++) {
            float x, y;
            sa3d_geoaware_to_square(src->img_w, src->img_h, src->input_size, src_kps[done + i][0],
                                    src_kps[done + i][1], &x, &y);
            cells_q[i] = sa3d_baseline_query_cell(x, y, src->input_size, src->g);
        }
        sa3d_status s = sa3d_match_baseline_cells(src, trg, cells_q, k, p, pred + done, work, err);
        if (s) return s;
    }
    return SA3D_OK;
}

/* ---- the matcher over a dataset: a per-category feature cache ---- */

/* An image's map (id, mirror flag) and, for the adaptive flip's mask metric, its mask cells (NULL until needed). */
typedef struct cached_map { char id[64]; int flip; sa3d_map map; unsigned char *mask; } cached_map;

struct sa3d_baseline_matcher {
    sa3d_provider *features;
    int input_size;
    sa3d_baseline_params p;
    char category[32];
    cached_map **maps;           /* each entry allocated on its own, so pointers to it stay valid */
    int n_maps, cap_maps;
    float *work;
    size_t work_floats;
    struct { long loads; double load_s, match_s; } batch;   /* sa3d_baseline_matcher_batch_stats */
    /* p.adapt_flip: sa3d_baseline_matcher_use_flip's dataset kind and mask provider, and the decisions so far */
    int flip_ready;
    sa3d_dataset_kind kind;
    sa3d_provider *masks;
    long flip_pairs, flipped;
};

sa3d_status sa3d_baseline_matcher_new(sa3d_baseline_matcher **out, sa3d_provider *features, int input_size,
                                      const sa3d_baseline_params *p, sa3d_error *err) {
    *out = NULL;
    if (input_size <= 0) return sa3d_fail(err, SA3D_ERR_ARG, "baseline matcher: input size %d", input_size);
    if (p && sa3d_baseline_params_check(p, err) != SA3D_OK) return SA3D_ERR_ARG;
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
        sa3d_free(bm->maps[i]->mask);
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

sa3d_status sa3d_baseline_matcher_use_flip(sa3d_baseline_matcher *bm, sa3d_dataset_kind kind, sa3d_provider *masks,
                                           sa3d_error *err) {
    if (bm->p.adapt_flip == SA3D_FLIP_MASK && !masks)
        return sa3d_fail(err, SA3D_ERR_ARG, "baseline matcher: the adaptive flip's mask metric needs masks");
    bm->kind = kind;
    bm->masks = masks;
    bm->flip_ready = 1;
    return SA3D_OK;
}

static sa3d_status get_entry(sa3d_baseline_matcher *bm, const char *cat, const char *id, int flip, cached_map **out,
                             sa3d_error *err) {
    if (strcmp(bm->category, cat) != 0) {   /* a new category: the previous one's maps are not needed again */
        drop_maps(bm);
        snprintf(bm->category, sizeof bm->category, "%s", cat);
    }
    for (int i = 0; i < bm->n_maps; i++)
        if (!strcmp(bm->maps[i]->id, id) && bm->maps[i]->flip == flip) {
            *out = bm->maps[i];
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
    c->flip = flip;
    sa3d_status s = sa3d_provider_get(bm->features, cat, id, flip, &c->map, err);
    if (!s && c->map.h != c->map.w)
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: feature map is %d x %d, not square", cat, id, c->map.h, c->map.w);
    if (s) {
        free(c->map.data);
        sa3d_free(c);
        return s;
    }
    bm->maps[bm->n_maps++] = c;
    *out = c;
    return SA3D_OK;
}

/* The mask cells of image (id, flip) of size W x H, loaded once. */
static sa3d_status get_mask(sa3d_baseline_matcher *bm, cached_map *c, const char *cat, int W, int H,
                            sa3d_error *err) {
    if (c->mask) return SA3D_OK;
    sa3d_map m;
    sa3d_status s = sa3d_provider_get(bm->masks, cat, c->id, c->flip, &m, err);
    if (s) return s;
    if (m.c != 1 || m.w != W || m.h != H) {
        free(m.data);
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: mask is %d x %d, the annotation says %d x %d", cat, c->id, m.w,
                         m.h, W, H);
    }
    if (!(c->mask = sa3d_malloc(SA3D_FLIP_MASK_RES * SA3D_FLIP_MASK_RES))) {
        free(m.data);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", cat, c->id);
    }
    sa3d_flip_mask_cells(c->mask, m.data, W, H, bm->input_size);
    free(m.data);
    return SA3D_OK;
}

/* GeoAware's adaptive flip of one pair whose plain matches are in pred (baseline_flip.c): src and trg are the maps
 * of the cache entries cs and ct. */
static sa3d_status adapt_flip(sa3d_baseline_matcher *bm, const sa3d_pair *pair, cached_map *cs, cached_map *ct,
                              const sa3d_feature_map *src, const sa3d_feature_map *trg, float (*pred)[2],
                              sa3d_error *err) {
    if (!bm->flip_ready)
        return sa3d_fail(err, SA3D_ERR_ARG, "baseline matcher: adaptive flip on, but no flip maps given "
                         "(sa3d_baseline_matcher_use_flip)");
    int fmap[SA3D_MAX_KPS];
    if (sa3d_flip_map(bm->kind, pair->category, fmap) < 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "pair %s: no left-right flip map for category '%s'", pair->id,
                         pair->category);
    cached_map *cf;
    sa3d_status s = get_entry(bm, pair->category, pair->src, 1, &cf, err);
    if (s) return s;
    if (cf->map.c != cs->map.c || cf->map.h != cs->map.h)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: mirrored feature map is %d x %d x %d, the image's %d x %d x %d",
                         pair->category, pair->src, cf->map.c, cf->map.h, cf->map.w, cs->map.c, cs->map.h, cs->map.w);
    if (bm->p.adapt_flip == SA3D_FLIP_MASK &&
        ((s = get_mask(bm, cs, pair->category, pair->src_size[0], pair->src_size[1], err)) ||
         (s = get_mask(bm, cf, pair->category, pair->src_size[0], pair->src_size[1], err)) ||
         (s = get_mask(bm, ct, pair->category, pair->trg_size[0], pair->trg_size[1], err))))
        return s;
    sa3d_feature_map fl = *src;
    fl.data = cf->map.data;
    sa3d_flip_inputs in = { src, &fl, trg, cs->mask, cf->mask, ct->mask, (const float (*)[2])pair->src_kps,
                            pair->kp_ids, pair->n_kps, fmap };
    sa3d_flip_decision d;
    if ((s = sa3d_baseline_adapt_flip(&in, &bm->p, pred, bm->work, &d, err))) return s;
    bm->flip_pairs++;
    bm->flipped += d.flipped;
    return SA3D_OK;
}

sa3d_status sa3d_baseline_matcher_match(void *ctx, const sa3d_pair *pair, float (*pred)[2], sa3d_error *err) {
    sa3d_baseline_matcher *bm = ctx;
    cached_map *cs, *ct;
    sa3d_status s;
    if ((s = get_entry(bm, pair->category, pair->src, 0, &cs, err)) ||
        (s = get_entry(bm, pair->category, pair->trg, 0, &ct, err)))
        return s;
    const sa3d_map *ms = &cs->map, *mt = &ct->map;
    sa3d_feature_map src = { ms->c, ms->h, ms->data, pair->src_size[0], pair->src_size[1], bm->input_size };
    sa3d_feature_map trg = { mt->c, mt->h, mt->data, pair->trg_size[0], pair->trg_size[1], bm->input_size };
    size_t need = sa3d_baseline_work_floats(src.C, src.g, pair->n_kps);
    if (need > bm->work_floats) {
        sa3d_free(bm->work);
        bm->work_floats = 0;
        if (!(bm->work = sa3d_malloc(need * sizeof(float)))) return sa3d_fail(err, SA3D_ERR_NOMEM, "baseline matcher: out of memory");
        bm->work_floats = need;
    }
    s = sa3d_match_baseline(&src, &trg, (const float (*)[2])pair->src_kps, pair->n_kps, &bm->p, pred, bm->work, err);
    if (s || bm->p.adapt_flip == SA3D_FLIP_OFF) return s;
    return adapt_flip(bm, pair, cs, ct, &src, &trg, pred, err);
}

/* ---- many pairs at once, grouped by target image (METHOD.md 6.2 step 4, same arithmetic as above) ----
 *
 * Per pair, the product q[n][C] x F_trg[C][g*g] reads the whole 11 MB target map for about 8 queries, so the
 * split costs one map read per pair (12,234) plus one file load per image and pair. Here every image is
 * loaded once (in parallel when the provider allows it), each source image hands its queries to every pair
 * that uses it, and each target image runs one product for all queries that map onto it. Every element is
 * the same fixed-order dot product of the same unit vectors as in sa3d_match_baseline (which is why neither
 * uses cblas_sgemm, whose rounding depends on the row's place), and the soft-argmax sees the same row, so
 * the predictions equal the per-pair path's (tests/test_eval.c checks this byte for byte). */

#define BATCH_MAX_ROWS 1024   /* queries per product: bounds S at 1024 x g*g floats (14.7 MB for g = 60) */

typedef struct batch_ref { const char *cat, *id; int pair, role; } batch_ref;   /* role 0 source, 1 target */

static int cmp_ref(const void *a, const void *b) {
    const batch_ref *x = a, *y = b;
    int c = strcmp(x->cat, y->cat);
    if (!c) c = strcmp(x->id, y->id);
    if (!c) c = x->role - y->role;
    if (!c) c = x->pair - y->pair;
    return c;
}

typedef struct batch_image {
    const char *cat, *id;
    int first_ref, n_src, n_trg;      /* refs[first_ref ..] : n_src source refs, then n_trg target refs */
    int keep;                         /* map kept from pass 1 to pass 2 */
    float *map;                       /* [C][g*g], normalised; NULL when not resident */
    sa3d_status status;
    sa3d_error err;
} batch_image;

typedef struct batch_ctx {
    sa3d_baseline_matcher *bm;
    const sa3d_pair *const *pairs;
    const batch_ref *refs;
    size_t *qoff;                     /* [n_pairs] first row of each pair in q */
    float *q;                         /* [total keypoints][C] */
    int C, g;
} batch_ctx;

/* Writes the queries of every pair that has im as its source (rows qoff[pair] ..., which no other image
 * writes), each the cell sa3d_match_baseline picks. Channel-outer: one pass down the map's rows instead of
 * one column walk with a 14 KB stride per query. */
static void gather_queries(batch_ctx *bc, const batch_image *im, const float *map) {
    int C = bc->C, g = bc->g, cells = g * g, in = bc->bm->input_size;
    size_t cell[SA3D_MAX_KPS];
    for (int r = 0; r < im->n_src; r++) {
        int pi = bc->refs[im->first_ref + r].pair;
        const sa3d_pair *pr = bc->pairs[pi];
        for (int k = 0; k < pr->n_kps; k++) {
            float x, y;
            sa3d_geoaware_to_square(pr->src_size[0], pr->src_size[1], in, pr->src_kps[k][0], pr->src_kps[k][1], &x,
                                    &y);
            cell[k] = sa3d_baseline_query_cell(x, y, in, g);
        }
        float *q = bc->q + bc->qoff[pi] * (size_t)C;
        for (int c = 0; c < C; c++) {
            const float *row = map + (size_t)c * cells;
            for (int k = 0; k < pr->n_kps; k++) q[(size_t)k * C + c] = row[cell[k]];
        }
    }
}

/* Image im's map from its provider item into im->map, the failure into im's own error slot (so that threads never
 * share one); with want_queries, also gathers its queries. */
static void batch_take(batch_ctx *bc, batch_image *im, sa3d_provider_item *it, int want_queries) {
    sa3d_map m = it->map;
    if ((im->status = it->status)) {
        im->err = it->err;
        return;
    }
    if (m.h != m.w || (bc->C && (m.c != bc->C || m.h != bc->g))) {
        im->status = sa3d_fail(&im->err, SA3D_ERR_FORMAT, "%s/%s: feature map is %d x %d x %d; expected %d x %d x %d",
                               im->cat, im->id, m.c, m.h, m.w, bc->C, bc->g, bc->g);
        free(m.data);
        return;
    }
    if (want_queries) gather_queries(bc, im, m.data);
    im->map = m.data;
}

enum { BATCH_LOAD_CHUNK = 16 };   /* maps asked of the provider at once */

/* Loads list[0..n) by sa3d_provider_get_many, BATCH_LOAD_CHUNK images a call (served on every core, or decoded on
 * every core ahead of the network); with want_queries, gathers their queries and keeps only the maps marked keep.
 * Returns the first failure in list order. */
static sa3d_status batch_load_all(batch_ctx *bc, batch_image *ims, const int *list, int n, int want_queries,
                                  sa3d_error *err) {
    sa3d_provider_item it[BATCH_LOAD_CHUNK];
    for (int c = 0; c < n; c += BATCH_LOAD_CHUNK) {
        int k = n - c < BATCH_LOAD_CHUNK ? n - c : BATCH_LOAD_CHUNK;
        for (int i = 0; i < k; i++)
            it[i] = (sa3d_provider_item){ .category = ims[list[c + i]].cat, .id = ims[list[c + i]].id, .flip = 0 };
        sa3d_provider_get_many(bc->bm->features, it, k, NULL);
        #pragma omp parallel for schedule(static) if (k > 1)
        for (int i = 0; i < k; i++) batch_take(bc, &ims[list[c + i]], &it[i], want_queries);
        bc->bm->batch.loads += k;
        for (int i = 0; i < k; i++) {
            batch_image *im = &ims[list[c + i]];
            if (im->status) {
                if (err) *err = im->err;
                return im->status;
            }
            if (want_queries && !im->keep) {
                free(im->map);
                im->map = NULL;
            }
        }
    }
    return SA3D_OK;
}

/* All queries whose target is im: gathered rows, one product per BATCH_MAX_ROWS, soft-argmax per row. */
static sa3d_status batch_match_target(batch_ctx *bc, const batch_image *im, float (*pred)[SA3D_MAX_KPS][2],
                                      float *qt, float *S, int *row_pair, int *row_kp) {
    int C = bc->C, g = bc->g, cells = g * g;
    const sa3d_baseline_params *p = &bc->bm->p;
    float cell_t = (float)bc->bm->input_size / (float)g;
    int r = 0, rows = 0;
    while (r < im->n_trg || rows > 0) {
        /* fill up to BATCH_MAX_ROWS rows with whole pairs (a pair has at most SA3D_MAX_KPS < BATCH_MAX_ROWS) */
        while (r < im->n_trg) {
            int pi = bc->refs[im->first_ref + im->n_src + r].pair;
            int nk = bc->pairs[pi]->n_kps;
            if (rows + nk > BATCH_MAX_ROWS) break;
            memcpy(qt + (size_t)rows * C, bc->q + bc->qoff[pi] * (size_t)C, (size_t)nk * C * sizeof(float));
            for (int k = 0; k < nk; k++) { row_pair[rows + k] = pi; row_kp[rows + k] = k; }
            rows += nk;
            r++;
        }
        if (rows > 0) {
            sa3d_gemm_fixed_order(S, qt, im->map, rows, C, cells);   /* [rows][C] x [C][cells], one product */
            #pragma omp parallel for schedule(static)
            for (int i = 0; i < rows; i++) {
                const sa3d_pair *pr = bc->pairs[row_pair[i]];
                int ax, ay;
                float sx, sy;
                sa3d_window_soft_argmax(S + (size_t)i * cells, g, g, p->window_radius, p->temperature, &ax, &ay, &sx,
                                        &sy);
                float *out = pred[row_pair[i]][row_kp[i]];
                sa3d_geoaware_from_square(pr->trg_size[0], pr->trg_size[1], bc->bm->input_size, (sx + 0.5f) * cell_t,
                                          (sy + 0.5f) * cell_t, &out[0], &out[1]);
            }
        }
        rows = 0;
    }
    return SA3D_OK;
}

sa3d_status sa3d_baseline_matcher_match_batch(void *ctx, const sa3d_pair *const *pairs, int n,
                                              float (*pred)[SA3D_MAX_KPS][2], sa3d_error *err) {
    sa3d_baseline_matcher *bm = ctx;
    if (n < 0) return sa3d_fail(err, SA3D_ERR_ARG, "baseline batch: %d pairs", n);
    if (n == 0) return SA3D_OK;
    if (bm->p.adapt_flip != SA3D_FLIP_OFF) {   /* per pair: its pose distances dominate, and need its source */
        for (int i = 0; i < n; i++) {
            memset(pred[i], 0, sizeof pred[i]);
            sa3d_status s = sa3d_baseline_matcher_match(bm, pairs[i], pred[i], err);
            if (s) return s;
        }
        return SA3D_OK;
    }
    sa3d_status s = SA3D_OK;
    batch_ref *refs = sa3d_malloc((size_t)2 * n * sizeof *refs);
    batch_image *ims = sa3d_calloc((size_t)2 * n, sizeof *ims);
    int *list = sa3d_malloc((size_t)2 * n * sizeof *list);
    size_t *qoff = sa3d_malloc((size_t)n * sizeof *qoff);
    float *q = NULL, *qt = NULL, *S = NULL;
    int *row_pair = NULL, *row_kp = NULL, n_ims = 0;
    if (!refs || !ims || !list || !qoff) { s = sa3d_fail(err, SA3D_ERR_NOMEM, "baseline batch: out of memory"); goto out; }
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        refs[2 * i] = (batch_ref){ pairs[i]->category, pairs[i]->src, i, 0 };
        refs[2 * i + 1] = (batch_ref){ pairs[i]->category, pairs[i]->trg, i, 1 };
        qoff[i] = total;
        total += (size_t)pairs[i]->n_kps;
        memset(pred[i], 0, sizeof pred[i]);
    }
    /* distinct images in (category, id) order: the order of loads and products never depends on threads */
    qsort(refs, (size_t)2 * n, sizeof *refs, cmp_ref);
    for (int i = 0; i < 2 * n; i++) {
        if (i == 0 || strcmp(refs[i].cat, refs[i - 1].cat) || strcmp(refs[i].id, refs[i - 1].id)) {
            ims[n_ims].cat = refs[i].cat;
            ims[n_ims].id = refs[i].id;
            ims[n_ims].first_ref = i;
            n_ims++;
        }
        if (refs[i].role == 0) ims[n_ims - 1].n_src++;
        else ims[n_ims - 1].n_trg++;
    }
    batch_ctx bc = { bm, pairs, refs, qoff, NULL, 0, 0 };

    /* The first source image alone: it fixes C and g, hence the query buffer and the number of maps that fit
     * in the memory budget. */
    double t0 = sa3d_now();
    int first = 0;
    while (ims[first].n_src == 0) first++;   /* every pair has a source */
    sa3d_map m0;
    if ((s = sa3d_provider_get(bm->features, ims[first].cat, ims[first].id, 0, &m0, err))) goto out;
    bm->batch.loads++;
    if (m0.h != m0.w) {
        free(m0.data);
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: feature map is %d x %d, not square", ims[first].cat,
                      ims[first].id, m0.h, m0.w);
        goto out;
    }
    bc.C = m0.c;
    bc.g = m0.h;
    size_t map_bytes = (size_t)bc.C * bc.g * bc.g * sizeof(float), need;
    if (!sa3d_mul_ok(total ? total : 1, (size_t)bc.C * sizeof(float), &need) || !(q = sa3d_malloc(need)) ||
        !(qt = sa3d_malloc((size_t)BATCH_MAX_ROWS * bc.C * sizeof(float))) ||
        !(S = sa3d_malloc((size_t)BATCH_MAX_ROWS * bc.g * bc.g * sizeof(float))) ||
        !(row_pair = sa3d_malloc(BATCH_MAX_ROWS * sizeof *row_pair)) ||
        !(row_kp = sa3d_malloc(BATCH_MAX_ROWS * sizeof *row_kp))) {
        free(m0.data);
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "baseline batch: out of memory for %zu queries", total);
        goto out;
    }
    bc.q = q;
    ims[first].map = m0.data;
    gather_queries(&bc, &ims[first], ims[first].map);
    /* Budget: the first `kept` target images (in order) stay in memory from pass 1 to pass 2; the others are
     * loaded again in pass 2, `kept` (at least 1) at a time. */
    size_t budget_maps = bm->p.max_cache_bytes / map_bytes;
    int kept = budget_maps > (size_t)INT_MAX ? INT_MAX : (int)budget_maps, k_left = kept;
    for (int i = 0; i < n_ims; i++)
        if (ims[i].n_trg > 0 && k_left > 0) { ims[i].keep = 1; k_left--; }
    if (!ims[first].keep) {
        free(ims[first].map);
        ims[first].map = NULL;
    }
    /* pass 1: every other image that is a source or a kept target */
    int nl = 0;
    for (int i = 0; i < n_ims; i++)
        if (i != first && (ims[i].n_src > 0 || ims[i].keep)) list[nl++] = i;
    if ((s = batch_load_all(&bc, ims, list, nl, 1, err))) goto out;
    bm->batch.load_s += sa3d_now() - t0;
    /* pass 2: targets in order; the ones not kept are reloaded in groups of max(kept, 1) */
    int group = kept > 0 ? kept : 1;
    for (int i = 0; i < n_ims && !s;) {
        int j = i, nr = 0;
        while (j < n_ims && nr < group) {
            if (ims[j].n_trg > 0 && !ims[j].map) list[nr++] = j;
            j++;
        }
        t0 = sa3d_now();
        if ((s = batch_load_all(&bc, ims, list, nr, 0, err))) goto out;
        double t1 = sa3d_now();
        bm->batch.load_s += t1 - t0;
        for (; i < j; i++) {
            if (ims[i].n_trg > 0) batch_match_target(&bc, &ims[i], pred, qt, S, row_pair, row_kp);
            free(ims[i].map);
            ims[i].map = NULL;
        }
        bm->batch.match_s += sa3d_now() - t1;
    }
out:
    for (int i = 0; ims && i < n_ims; i++) free(ims[i].map);
    sa3d_free(refs);
    sa3d_free(ims);
    sa3d_free(list);
    sa3d_free(qoff);
    sa3d_free(q);
    sa3d_free(qt);
    sa3d_free(S);
    sa3d_free(row_pair);
    sa3d_free(row_kp);
    return s;
}

sa3d_baseline_batch_stats sa3d_baseline_matcher_batch_stats(const sa3d_baseline_matcher *bm) {
    sa3d_baseline_batch_stats st = { bm->batch.loads, bm->batch.load_s, bm->batch.match_s, bm->flip_pairs,
                                     bm->flipped };
    return st;
}
