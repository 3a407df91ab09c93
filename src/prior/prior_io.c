/* The in-memory prior of include/semalign3d/prior.h: allocation, and its safetensors file (one tensor per field,
 * settings in __metadata__). Loading trusts nothing: every tensor must exist with the dtype and the exact shape
 * implied by the counts, and its values must be in range (finite, slot ids valid, Beta parameters positive),
 * so the aligner can use a loaded prior without further checks. Errors name the file and the tensor. */
#include <ctype.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "geom/geom.h"
#include "prior/prior_internal.h"
#include "semalign3d/prior.h"
#include "semalign3d/safetensors.h"

/* Caps on counts read from a file; larger priors are not produced by the builder and are refused as hostile. */
#define MAX_C 65536
#define MAX_DENSE 10000000
/* Canonical coordinates: the seed edge has length 0.035, a built cloud spans a few units; far beyond that, squared
 * distances and the camera's divisions lose all precision (the aligner would see inf or 0) */
#define MAX_COORD 1e6
#define MAX_COSINE 1.001f      /* attention means are means of cosines; float rounding may pass 1 by a little */
#define MAX_FOCAL SA3D_PRIOR_MAX_FOCAL   /* units of max(W, H); 20 is already a long telephoto */

/* ---- allocation -------------------------------------------------------------------------------------------- */

static void *zalloc(size_t n, size_t size, int *ok) {
    if (!*ok) return NULL;
    size_t b;
    if (!sa3d_mul_ok(n, size, &b)) { *ok = 0; return NULL; }
    void *p = sa3d_calloc(b ? b : 1, 1);
    if (!p) *ok = 0;
    return p;
}

sa3d_status sa3d_prior_alloc(sa3d_prior **out, int n_slots, int C, size_t n_pairs, size_t n_tets, int n_dense,
                             sa3d_error *err) {
    if (!out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_prior_alloc: out is NULL");
    *out = NULL;
    if (n_slots < 1 || n_slots > SA3D_PRIOR_MAX_SLOTS || C < 1 || C > MAX_C || n_dense < 0 || n_dense > MAX_DENSE ||
        n_pairs > ((size_t)1 << 40) || n_tets > ((size_t)1 << 40))
        return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_prior_alloc: counts out of range (n_slots %d in [1, %d], C %d in "
                         "[1, %d], n_dense %d in [0, %d])", n_slots, SA3D_PRIOR_MAX_SLOTS, C, MAX_C, n_dense, MAX_DENSE);
    sa3d_prior *p = sa3d_calloc(1, sizeof *p);
    if (!p) return sa3d_fail(err, SA3D_ERR_NOMEM, "sa3d_prior_alloc: out of memory");
    size_t n = (size_t)n_slots, c = (size_t)C, d = (size_t)n_dense;
    int ok = 1;
    p->n_slots = n_slots;
    p->C = C;
    p->n_pairs = n_pairs;
    p->n_tets = n_tets;
    p->n_dense = n_dense;
    p->used = zalloc(n, sizeof(int32_t), &ok);
    p->anchors = zalloc(n * 3, sizeof(double), &ok);
    p->anchor_feat = zalloc(n * c, sizeof(float), &ok);
    p->anchor_attn_mean = zalloc(n, sizeof(float), &ok);
    p->anchor_attn_sd = zalloc(n, sizeof(float), &ok);
    p->pair_e1 = zalloc(n_pairs * 2, sizeof(int32_t), &ok);
    p->pair_e2 = zalloc(n_pairs * 2, sizeof(int32_t), &ok);
    p->pair_ratio = zalloc(n_pairs * 2, sizeof(double), &ok);
    p->pair_cos = zalloc(n_pairs * 2, sizeof(double), &ok);
    p->tet_t = zalloc(n_tets * 3, sizeof(int32_t), &ok);
    p->tet_v = zalloc(n_tets, sizeof(int32_t), &ok);
    p->tet_cx = zalloc(n_tets * 2, sizeof(double), &ok);
    p->tet_cy = zalloc(n_tets * 2, sizeof(double), &ok);
    p->tet_cz = zalloc(n_tets * 2, sizeof(double), &ok);
    p->dense_xyz = zalloc(d * 3, sizeof(float), &ok);
    p->dense_feat = zalloc(d, c * sizeof(float), &ok);
    p->dense_attn_mean = zalloc(d, sizeof(float), &ok);
    p->dense_attn_sd = zalloc(d, sizeof(float), &ok);
    p->dense_weight = zalloc(d, sizeof(float), &ok);
    p->dense_anchor = zalloc(d, sizeof(int32_t), &ok);
    p->rig = zalloc(d, n * sizeof(float), &ok);
    if (!ok) {
        sa3d_prior_free(p);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "sa3d_prior_alloc: out of memory (n_slots %d, C %d, %zu pairs, %zu "
                         "tets, %d dense points)", n_slots, C, n_pairs, n_tets, n_dense);
    }
    *out = p;
    return SA3D_OK;
}

void sa3d_prior_free(sa3d_prior *p) {
    if (!p) return;
    void *arrays[] = { p->used, p->anchors, p->anchor_feat, p->anchor_attn_mean, p->anchor_attn_sd, p->pair_e1,
                       p->pair_e2, p->pair_ratio, p->pair_cos, p->tet_t, p->tet_v, p->tet_cx, p->tet_cy, p->tet_cz,
                       p->dense_xyz, p->dense_feat, p->dense_attn_mean, p->dense_attn_sd, p->dense_weight,
                       p->dense_anchor, p->rig, p->slot_flip };
    for (size_t i = 0; i < sizeof arrays / sizeof arrays[0]; i++) sa3d_free(arrays[i]);
    sa3d_free(p);
}

/* ---- the tensor table: one row per field, shapes in terms of the counts --------------------------------------- */

enum { D_N = -1, D_C = -2, D_P = -3, D_T = -4, D_D = -5, D_U = -6 };   /* symbolic dims: n_slots, C, ... n_used */

typedef struct field {
    const char *name;
    sa3d_dtype dtype;
    int ndim;
    int dims[2];   /* a symbol above or a literal size */
} field;

static const field FIELDS[] = {
    { "used", SA3D_DTYPE_I32, 1, { D_U, 0 } },
    { "anchors", SA3D_DTYPE_F64, 2, { D_N, 3 } },
    { "anchor_feat", SA3D_DTYPE_F32, 2, { D_N, D_C } },
    { "anchor_attn_mean", SA3D_DTYPE_F32, 1, { D_N, 0 } },
    { "anchor_attn_sd", SA3D_DTYPE_F32, 1, { D_N, 0 } },
    { "pair_e1", SA3D_DTYPE_I32, 2, { D_P, 2 } },
    { "pair_e2", SA3D_DTYPE_I32, 2, { D_P, 2 } },
    { "pair_ratio", SA3D_DTYPE_F64, 2, { D_P, 2 } },
    { "pair_cos", SA3D_DTYPE_F64, 2, { D_P, 2 } },
    { "tet_t", SA3D_DTYPE_I32, 2, { D_T, 3 } },
    { "tet_v", SA3D_DTYPE_I32, 1, { D_T, 0 } },
    { "tet_cx", SA3D_DTYPE_F64, 2, { D_T, 2 } },
    { "tet_cy", SA3D_DTYPE_F64, 2, { D_T, 2 } },
    { "tet_cz", SA3D_DTYPE_F64, 2, { D_T, 2 } },
    { "dense_xyz", SA3D_DTYPE_F32, 2, { D_D, 3 } },
    { "dense_feat", SA3D_DTYPE_F32, 2, { D_D, D_C } },
    { "dense_attn_mean", SA3D_DTYPE_F32, 1, { D_D, 0 } },
    { "dense_attn_sd", SA3D_DTYPE_F32, 1, { D_D, 0 } },
    { "dense_weight", SA3D_DTYPE_F32, 1, { D_D, 0 } },
    { "dense_anchor", SA3D_DTYPE_I32, 1, { D_D, 0 } },
    { "rig", SA3D_DTYPE_F32, 2, { D_D, D_N } },
};
#define N_FIELDS ((int)(sizeof FIELDS / sizeof FIELDS[0]))

static void **field_ptr(sa3d_prior *p, int i) {
    void **ptrs[N_FIELDS] = { (void **)&p->used, (void **)&p->anchors, (void **)&p->anchor_feat,
                              (void **)&p->anchor_attn_mean, (void **)&p->anchor_attn_sd, (void **)&p->pair_e1,
                              (void **)&p->pair_e2, (void **)&p->pair_ratio, (void **)&p->pair_cos,
                              (void **)&p->tet_t, (void **)&p->tet_v, (void **)&p->tet_cx, (void **)&p->tet_cy,
                              (void **)&p->tet_cz, (void **)&p->dense_xyz, (void **)&p->dense_feat,
                              (void **)&p->dense_attn_mean, (void **)&p->dense_attn_sd, (void **)&p->dense_weight,
                              (void **)&p->dense_anchor, (void **)&p->rig };
    return ptrs[i];
}

static int64_t dim_value(const sa3d_prior *p, int d) {
    switch (d) {
    case D_N: return p->n_slots;
    case D_C: return p->C;
    case D_P: return (int64_t)p->n_pairs;
    case D_T: return (int64_t)p->n_tets;
    case D_D: return p->n_dense;
    case D_U: return p->n_used;
    default: return d;
    }
}

/* ---- save --------------------------------------------------------------------------------------------------- */

sa3d_status sa3d_prior_save(const sa3d_prior *p, const char *path, const char *extra_json_meta, sa3d_error *err) {
    if (!p || !path) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_prior_save: %s is NULL", p ? "path" : "prior");
    if (p->n_used < 0 || p->n_used > p->n_slots)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: n_used %d outside [0, %d]", path, p->n_used, p->n_slots);
    sa3d_st_writer *w = sa3d_st_writer_new();
    if (!w) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    sa3d_status st = SA3D_OK;
    cJSON *extra = NULL;
    sa3d_prior *mp = (sa3d_prior *)p;   /* field_ptr only reads through it here */
    for (int i = 0; i < N_FIELDS && !st; i++) {
        int64_t shape[2];
        for (int d = 0; d < FIELDS[i].ndim; d++) shape[d] = dim_value(p, FIELDS[i].dims[d]);
        st = sa3d_st_writer_add(w, FIELDS[i].name, FIELDS[i].dtype, FIELDS[i].ndim, shape, *field_ptr(mp, i), err);
    }
    if (!st && p->slot_flip) {   /* optional: files written before it have none */
        int64_t shape[1] = { p->n_slots };
        st = sa3d_st_writer_add(w, "slot_flip", SA3D_DTYPE_I32, 1, shape, p->slot_flip, err);
    }
    char buf[64];
    if (!st) st = sa3d_st_writer_set_metadata(w, "format", SA3D_PRIOR_FORMAT, err);
    if (!st) st = sa3d_st_writer_set_metadata(w, "category", p->category, err);
    snprintf(buf, sizeof buf, "%" PRIu64, p->seed);
    if (!st) st = sa3d_st_writer_set_metadata(w, "seed", buf, err);
    snprintf(buf, sizeof buf, "%.17g", p->focal_mean);
    if (!st) st = sa3d_st_writer_set_metadata(w, "focal_mean", buf, err);
    snprintf(buf, sizeof buf, "%.17g", p->focal_sd);
    if (!st) st = sa3d_st_writer_set_metadata(w, "focal_sd", buf, err);
    snprintf(buf, sizeof buf, "%d", p->n_used);
    if (!st) st = sa3d_st_writer_set_metadata(w, "n_used", buf, err);
    if (!st) st = sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), err);
    if (!st && extra_json_meta) {
        extra = cJSON_Parse(extra_json_meta);
        if (!extra || !cJSON_IsObject(extra)) {
            st = sa3d_fail(err, SA3D_ERR_ARG, "%s: extra metadata is not a JSON object", path);
        } else {
            const cJSON *e;
            cJSON_ArrayForEach(e, extra) {
                if (!cJSON_IsString(e)) {
                    st = sa3d_fail(err, SA3D_ERR_ARG, "%s: extra metadata '%s' is not a string", path, e->string);
                    break;
                }
                if ((st = sa3d_st_writer_set_metadata(w, e->string, e->valuestring, err))) break;
            }
        }
    }
    if (!st) st = sa3d_st_writer_write(w, path, err);
    cJSON_Delete(extra);
    sa3d_st_writer_free(w);
    return st;
}

/* ---- load --------------------------------------------------------------------------------------------------- */

static const sa3d_st_tensor *need(const sa3d_safetensors *st, const char *label, const char *name, sa3d_dtype dt,
                                  sa3d_error *err) {
    const sa3d_st_tensor *t = sa3d_st_find(st, name);
    if (!t) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor '%s' missing", label, name);
        return NULL;
    }
    if (t->dtype != dt) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor '%s': dtype %s; expected %s", label, name,
                  sa3d_dtype_name(t->dtype), sa3d_dtype_name(dt));
        return NULL;
    }
    return t;
}

/* A count taken from dimension 0 of a tensor, with its other dims checked against fixed values. */
static int count_from(const sa3d_safetensors *st, const char *label, const char *name, sa3d_dtype dt, int ndim,
                      int64_t dim1, int64_t cap, int64_t *out, sa3d_error *err) {
    const sa3d_st_tensor *t = need(st, label, name, dt, err);
    if (!t) return 0;
    if (t->ndim != ndim || (ndim == 2 && dim1 >= 0 && t->shape[1] != dim1) || t->shape[0] > cap)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor '%s': shape of rank %d with dim 0 %" PRId64
                         "; expected rank %d, dim 0 <= %" PRId64 "%s", label, name, t->ndim,
                         t->ndim ? t->shape[0] : 0, ndim, cap, ndim == 2 && dim1 >= 0 ? " and dim 1 fixed" : ""),
               0;
    *out = t->shape[0];
    return 1;
}

static sa3d_status bad(sa3d_error *err, const char *label, const char *name, size_t idx, const char *what) {
    return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor '%s': element %zu: %s", label, name, idx, what);
}

int sa3d_prior_category_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof(((sa3d_prior *)0)->category)) return 0;
    for (size_t i = 0; i < n; i++)
        if (name[i] < 0x20 || name[i] > 0x7e || name[i] == '"' || name[i] == '\\' || name[i] == '/') return 0;
    return 1;
}

sa3d_status sa3d_prior_check_values(const sa3d_prior *p, const char *L, sa3d_error *err) {
    size_t n = (size_t)p->n_slots, C = (size_t)p->C, D = (size_t)p->n_dense;
    uint8_t is_used[SA3D_PRIOR_MAX_SLOTS] = { 0 };
    for (int i = 0; i < p->n_used; i++) {
        int32_t s = p->used[i];
        if (s < 0 || s >= p->n_slots) return bad(err, L, "used", (size_t)i, "slot id out of range");
        if (i > 0 && s <= p->used[i - 1]) return bad(err, L, "used", (size_t)i, "slot ids not increasing");
        is_used[s] = 1;
    }
    for (size_t k = 0; k < n; k++)
        for (int a = 0; a < 3; a++) {
            double v = p->anchors[3 * k + (size_t)a];
            if (is_used[k] ? !(fabs(v) <= MAX_COORD) : !(isinf(v) && v > 0))
                return bad(err, L, "anchors", 3 * k + (size_t)a,
                           is_used[k] ? "not finite and within +-1e6 for a used slot" : "not +inf for an unused slot");
        }
    for (size_t i = 0; i < n * C; i++)
        if (!isfinite(p->anchor_feat[i])) return bad(err, L, "anchor_feat", i, "not finite");
    for (size_t k = 0; k < n; k++) {
        if (!isfinite(p->anchor_attn_mean[k])) return bad(err, L, "anchor_attn_mean", k, "not finite");
        if (!(p->anchor_attn_sd[k] >= 0.0f) || !isfinite(p->anchor_attn_sd[k]))
            return bad(err, L, "anchor_attn_sd", k, "not a finite value >= 0");
    }
    struct { const char *name; const int32_t *v; size_t count; } ids[] = {
        { "pair_e1", p->pair_e1, 2 * p->n_pairs }, { "pair_e2", p->pair_e2, 2 * p->n_pairs },
        { "tet_t", p->tet_t, 3 * p->n_tets }, { "tet_v", p->tet_v, p->n_tets } };
    for (int j = 0; j < 4; j++)
        for (size_t i = 0; i < ids[j].count; i++)
            if (ids[j].v[i] < 0 || ids[j].v[i] >= p->n_slots) return bad(err, L, ids[j].name, i, "slot id out of range");
    struct { const char *name; const double *v; size_t count; } betas[] = {
        { "pair_ratio", p->pair_ratio, 2 * p->n_pairs }, { "pair_cos", p->pair_cos, 2 * p->n_pairs },
        { "tet_cx", p->tet_cx, 2 * p->n_tets }, { "tet_cy", p->tet_cy, 2 * p->n_tets },
        { "tet_cz", p->tet_cz, 2 * p->n_tets } };
    for (int j = 0; j < 5; j++)
        for (size_t i = 0; i < betas[j].count; i++) {
            if (!(betas[j].v[i] > 0.0) || !isfinite(betas[j].v[i]))
                return bad(err, L, betas[j].name, i, "Beta parameter not finite and positive");
            /* parameters near DBL_MAX pass the test above, but ln B(alpha, beta) overflows to inf - inf */
            if (i % 2 == 1 && !isfinite(sa3d_beta_lnb(betas[j].v[i - 1], betas[j].v[i])))
                return bad(err, L, betas[j].name, i - 1, "Beta parameters whose ln B(alpha, beta) is not finite");
        }
    struct { const char *name; const float *v; size_t count; } dense[] = {
        { "dense_xyz", p->dense_xyz, 3 * D }, { "dense_feat", p->dense_feat, D * C },
        { "dense_attn_mean", p->dense_attn_mean, D }, { "dense_attn_sd", p->dense_attn_sd, D },
        { "dense_weight", p->dense_weight, D }, { "rig", p->rig, D * n } };
    for (int j = 0; j < 6; j++)
        for (size_t i = 0; i < dense[j].count; i++)
            if (!isfinite(dense[j].v[i])) return bad(err, L, dense[j].name, i, "not finite");
    for (size_t i = 0; i < 3 * D; i++)
        if (!(fabs((double)p->dense_xyz[i]) <= MAX_COORD)) return bad(err, L, "dense_xyz", i, "outside +-1e6");
    for (size_t i = 0; i < D; i++) {   /* the rig contract of prior.h: affine rows over the used slots only */
        double sum = 0.0;
        for (size_t k = 0; k < n; k++) {
            double w = (double)p->rig[i * n + k];
            if (!is_used[k] && w != 0.0) return bad(err, L, "rig", i * n + k, "weight on an unused slot");
            sum += w;
        }
        if (!(fabs(sum - 1.0) <= 1e-3)) return bad(err, L, "rig", i * n, "row does not sum to 1");
    }
    for (size_t k = 0; k < n; k++)   /* means of cosines */
        if (!(fabsf(p->anchor_attn_mean[k]) <= MAX_COSINE))
            return bad(err, L, "anchor_attn_mean", k, "a mean cosine outside [-1, 1]");
    for (size_t i = 0; i < D; i++) {
        if (!(fabsf(p->dense_attn_mean[i]) <= MAX_COSINE))
            return bad(err, L, "dense_attn_mean", i, "a mean cosine outside [-1, 1]");
        if (p->dense_attn_sd[i] < 0.0f) return bad(err, L, "dense_attn_sd", i, "negative");
        if (p->dense_weight[i] < 0.0f) return bad(err, L, "dense_weight", i, "negative");
        int32_t a = p->dense_anchor[i];
        if (a < -1 || a >= p->n_slots || (a >= 0 && !is_used[a]))
            return bad(err, L, "dense_anchor", i, "neither -1 nor a used slot id");
    }
    for (size_t k = 0; k < n && p->slot_flip; k++) {
        int32_t f = p->slot_flip[k];
        if (f < 0 || f >= p->n_slots || p->slot_flip[f] != (int32_t)k)
            return bad(err, L, "slot_flip", k, "not an involution on the slots");
    }
    if (!(p->focal_mean > 0.0 && p->focal_mean <= MAX_FOCAL) || !(p->focal_sd >= 0.0 && p->focal_sd <= MAX_FOCAL))
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: __metadata__.focal_mean/focal_sd: %g/%g; expected a mean in (0, "
                         "%g] and an sd in [0, %g]", L, p->focal_mean, p->focal_sd, MAX_FOCAL, MAX_FOCAL);
    return SA3D_OK;
}

static int parse_double(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

static sa3d_status load_handle(sa3d_prior **out, const sa3d_safetensors *st, const char *L, sa3d_error *err) {
    const char *fmt = sa3d_st_metadata(st, "format");
    if (!fmt || strcmp(fmt, SA3D_PRIOR_FORMAT) != 0)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: __metadata__.format: expected \"%s\", got %s%s%s", L,
                         SA3D_PRIOR_FORMAT, fmt ? "\"" : "", fmt ? fmt : "none", fmt ? "\"" : "");
    int64_t n, C, P, T, D, U;
    if (!count_from(st, L, "anchors", SA3D_DTYPE_F64, 2, 3, SA3D_PRIOR_MAX_SLOTS, &n, err) ||
        !count_from(st, L, "anchor_feat", SA3D_DTYPE_F32, 2, -1, SA3D_PRIOR_MAX_SLOTS, &C, err) ||
        !count_from(st, L, "pair_e1", SA3D_DTYPE_I32, 2, 2, INT64_MAX, &P, err) ||
        !count_from(st, L, "tet_t", SA3D_DTYPE_I32, 2, 3, INT64_MAX, &T, err) ||
        !count_from(st, L, "dense_xyz", SA3D_DTYPE_F32, 2, 3, MAX_DENSE, &D, err) ||
        !count_from(st, L, "used", SA3D_DTYPE_I32, 1, -1, SA3D_PRIOR_MAX_SLOTS, &U, err))
        return err ? err->code : SA3D_ERR_FORMAT;
    C = sa3d_st_find(st, "anchor_feat")->shape[1];   /* dim 0 of anchor_feat is n; C is dim 1 */
    if (n < 1 || C < 1 || C > MAX_C || U > n)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor 'anchors'/'anchor_feat'/'used': counts n_slots %" PRId64
                         ", C %" PRId64 ", n_used %" PRId64 " out of range", L, n, C, U);
    sa3d_prior *p = NULL;
    sa3d_status s = sa3d_prior_alloc(&p, (int)n, (int)C, (size_t)P, (size_t)T, (int)D, err);
    if (s) return sa3d_error_prefix(err, "%s", L);
    p->n_used = (int)U;
    for (int i = 0; i < N_FIELDS; i++) {
        const sa3d_st_tensor *t = need(st, L, FIELDS[i].name, FIELDS[i].dtype, err);
        if (!t) goto fail;
        int shape_ok = t->ndim == FIELDS[i].ndim;
        for (int d = 0; d < FIELDS[i].ndim && shape_ok; d++)
            shape_ok = t->shape[d] == dim_value(p, FIELDS[i].dims[d]);
        if (!shape_ok) {
            char got[96] = "", want[96] = "";
            for (int d = 0; d < t->ndim && d < 4; d++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%" PRId64, d ? ", " : "", t->shape[d]);
            for (int d = 0; d < FIELDS[i].ndim; d++)
                snprintf(want + strlen(want), sizeof want - strlen(want), "%s%" PRId64, d ? ", " : "",
                         dim_value(p, FIELDS[i].dims[d]));
            sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor '%s': shape [%s]; expected [%s]", L, FIELDS[i].name, got,
                      want);
            goto fail;
        }
        if (t->nbytes) memcpy(*field_ptr(p, i), t->data, t->nbytes);   /* may be unaligned in the mapping */
    }
    const sa3d_st_tensor *tf = sa3d_st_find(st, "slot_flip");   /* optional */
    if (tf) {
        if (tf->dtype != SA3D_DTYPE_I32 || tf->ndim != 1 || tf->shape[0] != n) {
            sa3d_fail(err, SA3D_ERR_FORMAT, "%s: tensor 'slot_flip': expected int32 [%" PRId64 "]", L, n);
            goto fail;
        }
        if (!(p->slot_flip = sa3d_malloc((size_t)n * sizeof(int32_t)))) {
            sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", L);
            goto fail;
        }
        memcpy(p->slot_flip, tf->data, (size_t)n * sizeof(int32_t));
    }
    const char *cat = sa3d_st_metadata(st, "category"), *seed = sa3d_st_metadata(st, "seed");
    const char *fm = sa3d_st_metadata(st, "focal_mean"), *fs = sa3d_st_metadata(st, "focal_sd");
    const char *nu = sa3d_st_metadata(st, "n_used");
    if (!cat || strlen(cat) >= sizeof p->category || !seed || !fm || !fs || !nu) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s: __metadata__: category (< %zu chars), seed, focal_mean, focal_sd and "
                  "n_used are required", L, sizeof p->category);
        goto fail;
    }
    if (!sa3d_prior_category_ok(cat)) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s: __metadata__: category: not a category name (printable ASCII without "
                  "'\"', '\\' or '/')", L);
        goto fail;
    }
    snprintf(p->category, sizeof p->category, "%s", cat);
    char *end;
    errno = 0;
    unsigned long long sv = strtoull(seed, &end, 10);
    double nuv;
    if (errno || end == seed || *end || !isdigit((unsigned char)seed[0]) || !parse_double(fm, &p->focal_mean) ||
        !parse_double(fs, &p->focal_sd) || !parse_double(nu, &nuv) || nuv != (double)U) {
        sa3d_fail(err, SA3D_ERR_FORMAT, "%s: __metadata__: seed, focal_mean, focal_sd or n_used malformed (n_used "
                  "must equal the length of 'used', %" PRId64 ")", L, U);
        goto fail;
    }
    p->seed = (uint64_t)sv;
    if (sa3d_prior_check_values(p, L, err)) goto fail;
    *out = p;
    return SA3D_OK;
fail:
    sa3d_prior_free(p);
    return err ? err->code : SA3D_ERR_FORMAT;
}

sa3d_status sa3d_prior_load(sa3d_prior **out, const char *path, sa3d_error *err) {
    if (!out || !path) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_prior_load: %s is NULL", out ? "path" : "out");
    *out = NULL;
    sa3d_safetensors *st = NULL;
    sa3d_status s = sa3d_st_open(&st, path, err);
    if (s) return s;
    s = load_handle(out, st, path, err);
    sa3d_st_close(st);
    return s;
}

sa3d_status sa3d_prior_load_memory(sa3d_prior **out, const void *buf, size_t len, const char *label,
                                   sa3d_error *err) {
    if (!out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_prior_load_memory: out is NULL");
    *out = NULL;
    if (!label) label = "<memory>";
    sa3d_safetensors *st = NULL;
    sa3d_status s = sa3d_st_open_memory(&st, buf, len, label, err);
    if (s) return s;
    s = load_handle(out, st, label, err);
    sa3d_st_close(st);
    return s;
}
