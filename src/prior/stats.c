/* Geometric relation statistics (METHOD.md 4.2, 4.3) and the sparse keypoints' features (4.5 step 5). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "prior/build.h"
#include "semalign3d/match.h"
#ifdef _OPENMP
#include <omp.h>
#endif

void sa3d_relation_stats_free(sa3d_relation_stats *st) {
    if (!st) return;
    sa3d_geom_relations_free(&st->rel);
    sa3d_free(st->pair_ratio);
    sa3d_free(st->pair_cos);
    sa3d_free(st->tet_c);
    sa3d_free(st->pair_count);
    sa3d_free(st->tet_count);
    memset(st, 0, sizeof *st);
}

/* A fit with no sample, or none that varies, stays uniform (1, 1): the filter then drops the relation. */
static void fit(double ab[2], const double *x, size_t n, double lo, double hi) {
    ab[0] = ab[1] = 1.0;
    if (n == 0) return;
    sa3d_error e;
    double a, b;
    if (sa3d_beta_fit(&a, &b, x, n, lo, hi, &e) == SA3D_OK) { ab[0] = a; ab[1] = b; }
}

sa3d_status sa3d_relation_stats_fit(sa3d_relation_stats *st, const double *P, const uint8_t *vis, int M, int n,
                                    sa3d_error *err) {
    memset(st, 0, sizeof *st);
    sa3d_status s = sa3d_geom_relations_make(&st->rel, n, err);
    if (s) return s;
    size_t np = st->rel.n_pairs, nt = st->rel.n_tets;
    st->pair_ratio = sa3d_malloc(np * sizeof *st->pair_ratio);
    st->pair_cos = sa3d_malloc(np * sizeof *st->pair_cos);
    st->tet_c = sa3d_malloc(nt * sizeof *st->tet_c);
    st->pair_count = sa3d_malloc(np * sizeof *st->pair_count);
    st->tet_count = sa3d_malloc(nt * sizeof *st->tet_count);
    int n_threads = 1;
#ifdef _OPENMP
    n_threads = omp_get_max_threads();
#endif
    double *buf = sa3d_malloc((size_t)M * 3 * sizeof(double) * (size_t)n_threads);   /* one slice per thread */
    if (!st->pair_ratio || !st->pair_cos || !st->tet_c || !st->pair_count || !st->tet_count || !buf) {
        sa3d_free(buf);
        sa3d_relation_stats_free(st);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "relation statistics: out of memory for %zu + %zu relations", np, nt);
    }
    const sa3d_geom_relations *R = &st->rel;
    /* Each relation is independent and writes only its own entries: the result is the same at any thread
     * count. Each thread gathers samples into its own slice of buf. */
    #pragma omp parallel num_threads(n_threads)
    {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        double *x0 = buf + (size_t)tid * 3 * M, *x1 = x0 + M, *x2 = x1 + M;
        #pragma omp for schedule(dynamic, 256)
        for (long r = 0; r < (long)np; r++) {
            const int32_t *a = R->e1 + 2 * r, *b = R->e2 + 2 * r;
            size_t c = 0;
            for (int m = 0; m < M; m++) {
                const uint8_t *v = vis + (size_t)m * n;
                if (!v[a[0]] || !v[a[1]] || !v[b[0]] || !v[b[1]]) continue;
                const double *Pm = P + (size_t)m * n * 3;
                double ea[3], eb[3];
                for (int d = 0; d < 3; d++) {
                    ea[d] = Pm[a[0] * 3 + d] - Pm[a[1] * 3 + d];
                    eb[d] = Pm[b[0] * 3 + d] - Pm[b[1] * 3 + d];
                }
                sa3d_edge_pair_fwd(&x1[c], &x0[c], ea, eb);   /* cosine, ratio */
                c++;
            }
            st->pair_count[r] = (int32_t)c;
            fit(st->pair_ratio[r], x0, c, 0.0, 1.0);
            fit(st->pair_cos[r], x1, c, -1.0, 1.0);
        }
        #pragma omp for schedule(dynamic, 256)
        for (long r = 0; r < (long)nt; r++) {
            const int32_t *t = R->t + 3 * r, v4 = R->v[r];
            size_t c = 0;
            for (int m = 0; m < M; m++) {
                const uint8_t *v = vis + (size_t)m * n;
                if (!v[t[0]] || !v[t[1]] || !v[t[2]] || !v[v4]) continue;
                const double *Pm = P + (size_t)m * n * 3;
                sa3d_tet_frame f;
                sa3d_tet_fwd(&f, &x0[c], &x1[c], &x2[c], Pm + t[0] * 3, Pm + t[1] * 3, Pm + t[2] * 3, Pm + v4 * 3);
                c++;
            }
            st->tet_count[r] = (int32_t)c;
            fit(st->tet_c[r][0], x0, c, -1.0, 1.0);
            fit(st->tet_c[r][1], x1, c, -1.0, 1.0);
            fit(st->tet_c[r][2], x2, c, -1.0, 1.0);
        }
    }
    sa3d_free(buf);
    return SA3D_OK;
}

sa3d_filter_params sa3d_filter_params_default(void) {
    sa3d_filter_params p = { 40, 0.01, 0.99 };
    return p;
}

static int peaked(const double ab[2]) { return ab[0] > 1.0 && ab[1] > 1.0; }

void sa3d_relation_filter(const sa3d_relation_stats *st, const uint8_t used[SA3D_MAX_KPS],
                          const sa3d_filter_params *p, uint8_t *keep_pair, uint8_t *keep_tet, size_t *n_pairs,
                          size_t *n_tets) {
    const sa3d_geom_relations *R = &st->rel;
    size_t kp = 0, kt = 0;
    for (size_t r = 0; r < R->n_pairs; r++) {
        const int32_t *a = R->e1 + 2 * r, *b = R->e2 + 2 * r;
        double mode = sa3d_beta_mode_f32((float)st->pair_ratio[r][0], (float)st->pair_ratio[r][1]);
        int keep = st->pair_count[r] >= p->min_samples && mode >= p->ratio_mode_lo && mode <= p->ratio_mode_hi &&
                   peaked(st->pair_ratio[r]) && peaked(st->pair_cos[r]) && used[a[0]] && used[a[1]] &&
                   used[b[0]] && used[b[1]];
        if (keep_pair) keep_pair[r] = (uint8_t)keep;
        kp += keep;
    }
    for (size_t r = 0; r < R->n_tets; r++) {
        const int32_t *t = R->t + 3 * r;
        int keep = st->tet_count[r] >= p->min_samples && peaked(st->tet_c[r][0]) && peaked(st->tet_c[r][1]) &&
                   peaked(st->tet_c[r][2]) && used[t[0]] && used[t[1]] && used[t[2]] && used[R->v[r]];
        if (keep_tet) keep_tet[r] = (uint8_t)keep;
        kt += keep;
    }
    *n_pairs = kp;
    *n_tets = kt;
}

void sa3d_relation_store(sa3d_prior *prior, const sa3d_relation_stats *st, const uint8_t *keep_pair,
                         const uint8_t *keep_tet) {
    const sa3d_geom_relations *R = &st->rel;
    size_t k = 0;
    for (size_t r = 0; r < R->n_pairs; r++) {
        if (!keep_pair[r]) continue;
        memcpy(prior->pair_e1 + 2 * k, R->e1 + 2 * r, 2 * sizeof(int32_t));
        memcpy(prior->pair_e2 + 2 * k, R->e2 + 2 * r, 2 * sizeof(int32_t));
        memcpy(prior->pair_ratio + 2 * k, st->pair_ratio[r], 2 * sizeof(double));
        memcpy(prior->pair_cos + 2 * k, st->pair_cos[r], 2 * sizeof(double));
        k++;
    }
    k = 0;
    for (size_t r = 0; r < R->n_tets; r++) {
        if (!keep_tet[r]) continue;
        memcpy(prior->tet_t + 3 * k, R->t + 3 * r, 3 * sizeof(int32_t));
        prior->tet_v[k] = R->v[r];
        memcpy(prior->tet_cx + 2 * k, st->tet_c[r][0], 2 * sizeof(double));
        memcpy(prior->tet_cy + 2 * k, st->tet_c[r][1], 2 * sizeof(double));
        memcpy(prior->tet_cz + 2 * k, st->tet_c[r][2], 2 * sizeof(double));
        k++;
    }
}

/* ---- sparse keypoint features ---- */

sa3d_status sa3d_feature_acc_init(sa3d_feature_acc *fa, int n_slots, int C, int cap, sa3d_error *err) {
    memset(fa, 0, sizeof *fa);
    size_t n;
    fa->count = sa3d_calloc((size_t)n_slots, sizeof *fa->count);
    if (!fa->count || !sa3d_mul3_ok((size_t)n_slots, (size_t)cap, (size_t)C * sizeof(float), &n) ||
        !(fa->samples = sa3d_malloc(n))) {
        sa3d_feature_acc_free(fa);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "keypoint features: out of memory for %d x %d x %d", n_slots, cap, C);
    }
    fa->n_slots = n_slots;
    fa->C = C;
    fa->cap = cap;
    return SA3D_OK;
}

void sa3d_feature_acc_free(sa3d_feature_acc *fa) {
    if (!fa) return;
    sa3d_free(fa->count);
    sa3d_free(fa->samples);
    memset(fa, 0, sizeof *fa);
}

void sa3d_feature_acc_add(sa3d_feature_acc *fa, const float *F, int g, int input_size, int W, int H,
                          const float (*kp)[2], const uint8_t *vis) {
    float cell = (float)input_size / (float)g;
    for (int k = 0; k < fa->n_slots; k++) {
        if (!vis[k] || fa->count[k] >= fa->cap) continue;
        float x, y;
        sa3d_geoaware_to_square(W, H, input_size, kp[k][0], kp[k][1], &x, &y);
        int cx = (int)floorf(x / cell), cy = (int)floorf(y / cell);
        cx = cx < 0 ? 0 : (cx >= g ? g - 1 : cx);
        cy = cy < 0 ? 0 : (cy >= g ? g - 1 : cy);
        float *dst = fa->samples + ((size_t)k * fa->cap + fa->count[k]) * fa->C;
        for (int c = 0; c < fa->C; c++) dst[c] = F[((size_t)c * g + cy) * g + cx];
        fa->count[k]++;
    }
}

void sa3d_feature_acc_finish(const sa3d_feature_acc *fa, sa3d_prior *prior) {
    int C = fa->C;
    for (int k = 0; k < fa->n_slots; k++) {
        float *mu = prior->anchor_feat + (size_t)k * C;
        int m = fa->count[k];
        if (m == 0) {
            memset(mu, 0, (size_t)C * sizeof(float));
            prior->anchor_attn_mean[k] = 0.5f;
            prior->anchor_attn_sd[k] = 0.01f;
            continue;
        }
        const float *smp = fa->samples + (size_t)k * fa->cap * C;
        double norm = 0.0;
        for (int c = 0; c < C; c++) {
            double sum = 0.0;
            for (int i = 0; i < m; i++) sum += (double)smp[(size_t)i * C + c];
            mu[c] = (float)(sum / m);
            norm += (double)mu[c] * (double)mu[c];
        }
        float inv = (float)(1.0 / (sqrt(norm) + 1e-10));
        for (int c = 0; c < C; c++) mu[c] *= inv;
        double s1 = 0.0, s2 = 0.0;
        for (int i = 0; i < m; i++) {
            double a = 0.0;
            for (int c = 0; c < C; c++) a += (double)smp[(size_t)i * C + c] * (double)mu[c];
            s1 += a;
            s2 += a * a;
        }
        double mean = s1 / m, var = m > 1 ? (s2 - m * mean * mean) / (m - 1) : 0.0;
        prior->anchor_attn_mean[k] = (float)mean;
        prior->anchor_attn_sd[k] = (float)sqrt(var > 0.0 ? var : 0.0);
    }
}
