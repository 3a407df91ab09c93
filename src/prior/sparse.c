/* The canonical sparse keypoint cloud of METHOD.md 4.5 (sparse_pc_generator.py, topology.py): the seed edge, the
 * placement order, the relation subset of each step, the greedy placement on a 100^3 grid (the exact argmin of
 * L_geom on that grid), and the global AdamW refinement over all relations. The grid energies are screened in
 * float32 with the features of a whole grid line computed in one vectorised loop per relation (no candidates x
 * relations matrix), then the near-minimal candidates are re-evaluated in double through sa3d_geom_energy. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "prior/prior_internal.h"

#define EPSF 1e-6f              /* nrm(w) = w / (|w| + 1e-6), as in features.c */
#define TCLAMP 1e-6f            /* compute_log_prob_beta_fast clamp */
#define LINE_MAX 128            /* grid points per vectorised block along z */
#define PAIR_CHUNK 2048         /* relations per chunk of the refinement energy (fixed: thread-count independent) */
#define TET_CHUNK 1024
#define RECHECK_BATCH 1024     /* configurations per double re-evaluation call */

sa3d_sparse_params sa3d_sparse_params_default(void) {
    sa3d_sparse_params p = { 1.0, 100, 100, 20000, sa3d_adamw_params_default() };
    return p;
}

/* ---- step 1: seed edge ---------------------------------------------------------------------------------------- */

int sa3d_prior_seed_edge(int *v1, int *v2, const float *mode, const int32_t *e1, const int32_t *e2, size_t n_pairs,
                         int n, int find_farthest) {
    if (n_pairs == 0 || n < 2 || n > SA3D_PRIOR_MAX_SLOTS) return 0;
    int8_t M[SA3D_PRIOR_MAX_SLOTS][SA3D_PRIOR_MAX_SLOTS];
    memset(M, -1, sizeof M);
    for (size_t e = 0; e < n_pairs; e++) {
        float r = find_farthest ? mode[e] : 1.0f - mode[e];
        const int32_t *lo, *hi;   /* lo gets 0, hi gets 1 where still -1 */
        if (r < 0.5f) { lo = e1 + 2 * e; hi = e2 + 2 * e; }
        else if (r > 0.5f) { lo = e2 + 2 * e; hi = e1 + 2 * e; }
        else continue;
        M[lo[0]][lo[1]] = M[lo[1]][lo[0]] = 0;
        if (M[hi[0]][hi[1]] == -1) M[hi[0]][hi[1]] = M[hi[1]][hi[0]] = 1;
    }
    int best = -2;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            if (M[i][j] > best) { best = M[i][j]; *v1 = i; *v2 = j; }
    return 1;
}

/* ---- step 2: placement order ---------------------------------------------------------------------------------- */

static int in_edge(const int32_t *e, int k) { return e[0] == k || e[1] == k; }

int sa3d_prior_order(int32_t *order, const float *mode, const int32_t *e1, const int32_t *e2, size_t n_pairs, int n,
                     int v1, int v2) {
    uint8_t placed[SA3D_PRIOR_MAX_SLOTS] = { 0 }, cand[SA3D_PRIOR_MAX_SLOTS] = { 0 };
    for (size_t e = 0; e < n_pairs; e++) {
        cand[e1[2 * e]] = cand[e1[2 * e + 1]] = 1;
        cand[e2[2 * e]] = cand[e2[2 * e + 1]] = 1;
    }
    placed[v1] = placed[v2] = 1;
    int count = 0;
    for (;;) {
        int best = -1;
        float best_score = 0.0f;
        for (int k = 0; k < n; k++) {
            if (!cand[k] || placed[k]) continue;
            float score = 1.0f;
            int connected = 0;
            for (size_t e = 0; e < n_pairs; e++) {
                const int32_t *a = e1 + 2 * e, *b = e2 + 2 * e;
                int ka = in_edge(a, k), kb = in_edge(b, k);
                if (!ka && !kb) continue;
                int ec = placed[a[0]] + placed[a[1]] + placed[b[0]] + placed[b[1]];
                if (ec < 3) continue;
                connected = 1;
                float v = kb ? 1.0f - mode[e] : mode[e];   /* the e2 assignment wins when k is in both */
                if (v < score) score = v;
            }
            if (connected && (best < 0 || score < best_score)) { best = k; best_score = score; }
        }
        if (best < 0) break;
        order[count++] = best;
        placed[best] = 1;
    }
    return count;
}

/* ---- step 3.1: relation subset of one step -------------------------------------------------------------------- */

void sa3d_prior_subset(size_t *pair_idx, size_t *n_pair_idx, size_t *tet_idx, size_t *n_tet_idx,
                       const uint8_t *placed, int next, const sa3d_geom_terms *g, int n_max_comb) {
    size_t np = 0, nt = 0;
    for (size_t e = 0; e < g->n_pairs && np < (size_t)n_max_comb; e++) {
        const int32_t *a = g->e1 + 2 * e, *b = g->e2 + 2 * e;
        if (!in_edge(a, next) && !in_edge(b, next)) continue;
        if (placed[a[0]] + placed[a[1]] + placed[b[0]] + placed[b[1]] >= 3) pair_idx[np++] = e;
    }
    for (size_t k = 0; k < g->n_tets && nt < (size_t)n_max_comb; k++) {
        const int32_t *t = g->t + 3 * k;
        int32_t v = g->v[k];
        if (!(t[0] == next || t[1] == next || t[2] == next || v == next)) continue;
        if (placed[t[0]] + placed[t[1]] + placed[t[2]] + placed[v] >= 3) tet_idx[nt++] = k;
    }
    *n_pair_idx = np;
    *n_tet_idx = nt;
}

/* ---- step 3.3: grid placement ---------------------------------------------------------------------------------- */

/* logf for t in [1e-6, 1]: Cephes' polynomial after splitting off the exponent, written with plain arithmetic and
 * bit casts so that `omp simd` loops vectorise it (glibc's logf is a scalar call). Within 2 ulp. */
static inline float log_f32(float x) {
    int32_t i;
    memcpy(&i, &x, 4);
    float e = (float)(((i >> 23) & 0xff) - 126);
    i = (i & 0x007fffff) | 0x3f000000;   /* mantissa m in [0.5, 1) */
    float m;
    memcpy(&m, &i, 4);
    int small = m < 0.70710678f;
    e = small ? e - 1.0f : e;
    float f = small ? m + m - 1.0f : m - 1.0f;
    float z = f * f;
    float y = 7.0376836292e-2f;
    y = y * f - 1.1514610310e-1f;
    y = y * f + 1.1676998740e-1f;
    y = y * f - 1.2420140846e-1f;
    y = y * f + 1.4249322787e-1f;
    y = y * f - 1.6668057665e-1f;
    y = y * f + 2.0000714765e-1f;
    y = y * f - 2.4999993993e-1f;
    y = y * f + 3.3333331174e-1f;
    y = y * f * z;
    y += -2.12194440e-4f * e;
    y += -0.5f * z;
    return f + y + 0.693359375f * e;
}

static inline float clampt(float t) { return t < TCLAMP ? TCLAMP : t > 1.0f - TCLAMP ? 1.0f - TCLAMP : t; }

/* One relation feature's Beta term in float: (alpha - 1, beta - 1, lnB). */
typedef struct fbeta { float am1, bm1, lnb; } fbeta;
static fbeta fbeta_of(const sa3d_beta_term *b) {
    fbeta f = { (float)(b->alpha - 1.0), (float)(b->beta - 1.0), (float)b->lnb };
    return f;
}
/* A point of a relation is s x + c: the candidate (s = 1, c = 0) or a placed keypoint (s = 0, c = Y). */
typedef struct fpt { float s, c[3]; } fpt;
typedef struct gpair { fpt a0, a1, b0, b1; fbeta R, A; } gpair;
typedef struct gtet { fpt p[4]; fbeta x, y, z; } gtet;

static fpt fpt_of(const double *Y, int id, int next) {
    fpt p = { id == next ? 1.0f : 0.0f, { 0.0f, 0.0f, 0.0f } };
    if (id != next)
        for (int a = 0; a < 3; a++) p.c[a] = (float)Y[3 * id + a];
    return p;
}

/* Sum of the edge-pair log densities and of the tet log densities for the m candidates (X, Yc, z[i]) of one line. */
static void line_energy(float *sp, float *st, float X, float Yc, const float *z, int m, const gpair *gp, size_t np,
                        const gtet *gt, size_t nt) {
    for (int i = 0; i < m; i++) sp[i] = st[i] = 0.0f;
    for (size_t r = 0; r < np; r++) {
        const gpair *q = gp + r;
        float sa = q->a0.s - q->a1.s, sb = q->b0.s - q->b1.s;
        float cax = q->a0.c[0] - q->a1.c[0] + sa * X, cay = q->a0.c[1] - q->a1.c[1] + sa * Yc;
        float cbx = q->b0.c[0] - q->b1.c[0] + sb * X, cby = q->b0.c[1] - q->b1.c[1] + sb * Yc;
        float caz = q->a0.c[2] - q->a1.c[2], cbz = q->b0.c[2] - q->b1.c[2];
        float lnb = q->R.lnb + q->A.lnb;
        #pragma omp simd
        for (int i = 0; i < m; i++) {
            float az = caz + sa * z[i], bz = cbz + sb * z[i];
            float la = sqrtf(cax * cax + cay * cay + az * az), lb = sqrtf(cbx * cbx + cby * cby + bz * bz);
            float A = (cax * cbx + cay * cby + az * bz) / ((la + EPSF) * (lb + EPSF));
            float tR = clampt(la / (la + lb + EPSF)), tA = clampt((A + 1.0f) * 0.5f);
            sp[i] += q->R.am1 * log_f32(tR) + q->R.bm1 * log_f32(1.0f - tR) + q->A.am1 * log_f32(tA) +
                     q->A.bm1 * log_f32(1.0f - tA) - lnb;
        }
    }
    for (size_t r = 0; r < nt; r++) {
        const gtet *q = gt + r;
        float P[4][3], S[4];
        for (int j = 0; j < 4; j++) {
            S[j] = q->p[j].s;
            P[j][0] = q->p[j].c[0] + S[j] * X;
            P[j][1] = q->p[j].c[1] + S[j] * Yc;
            P[j][2] = q->p[j].c[2];
        }
        float lnb = q->x.lnb + q->y.lnb + q->z.lnb;
        #pragma omp simd
        for (int i = 0; i < m; i++) {
            float p0z = P[0][2] + S[0] * z[i];
            float e1x = P[1][0] - P[0][0], e1y = P[1][1] - P[0][1], e1z = P[1][2] + S[1] * z[i] - p0z;
            float e2x = P[2][0] - P[0][0], e2y = P[2][1] - P[0][1], e2z = P[2][2] + S[2] * z[i] - p0z;
            float wx = P[3][0] - P[0][0], wy = P[3][1] - P[0][1], wz = P[3][2] + S[3] * z[i] - p0z;
            float cx = e1y * e2z - e1z * e2y, cy = e1z * e2x - e1x * e2z, cz = e1x * e2y - e1y * e2x;
            float k = 1.0f / (sqrtf(cx * cx + cy * cy + cz * cz) + EPSF);
            float z1x = cx * k, z1y = cy * k, z1z = cz * k;                      /* z' = nrm(e1 x e2) */
            k = 1.0f / (sqrtf(e1x * e1x + e1y * e1y + e1z * e1z) + EPSF);
            float x1x = e1x * k, x1y = e1y * k, x1z = e1z * k;                   /* x' = nrm(e1) */
            float y1x = z1y * x1z - z1z * x1y, y1y = z1z * x1x - z1x * x1z, y1z = z1x * x1y - z1y * x1x;
            float kx = 1.0f / (sqrtf(x1x * x1x + x1y * x1y + x1z * x1z) + EPSF);
            float ky = 1.0f / (sqrtf(y1x * y1x + y1y * y1y + y1z * y1z) + EPSF);
            float kz = 1.0f / (sqrtf(z1x * z1x + z1y * z1y + z1z * z1z) + EPSF);
            float kw = 1.0f / (sqrtf(wx * wx + wy * wy + wz * wz) + EPSF);
            float dx = (wx * x1x + wy * x1y + wz * x1z) * kx * kw;
            float dy = (wx * y1x + wy * y1y + wz * y1z) * ky * kw;
            float dz = (wx * z1x + wy * z1y + wz * z1z) * kz * kw;
            float tx = clampt((dx + 1.0f) * 0.5f), ty = clampt((dy + 1.0f) * 0.5f), tz = clampt((dz + 1.0f) * 0.5f);
            st[i] += q->x.am1 * log_f32(tx) + q->x.bm1 * log_f32(1.0f - tx) + q->y.am1 * log_f32(ty) +
                     q->y.bm1 * log_f32(1.0f - ty) + q->z.am1 * log_f32(tz) + q->z.bm1 * log_f32(1.0f - tz) - lnb;
        }
    }
}

/* Scale of a term's float32 rounding error: |lnB| plus the largest |(a - 1) log t| + |(b - 1) log(1 - t)| on the
 * clamped range (|log 1e-6| < 14), plus the log-density slope (a + b) over a typical t times the feature's own
 * relative rounding. The margin below is 1e-5 of this (about 100 float32 ulps), far above the actual error. */
static double term_mag(const sa3d_beta_term *b) {
    return fabs(b->lnb) + 14.0 * (fabs(b->alpha - 1.0) + fabs(b->beta - 1.0)) + 10.0 * (b->alpha + b->beta);
}

sa3d_status sa3d_prior_grid_place(double *Y, long *flat, double *emin, int n, const uint8_t *placed, int next,
                                  const sa3d_geom_terms *sub, int use_tets, double cube_size, int cube_n,
                                  size_t *n_recheck, sa3d_error *err) {
    *flat = -1;
    if (n_recheck) *n_recheck = 0;
    *emin = 0.0;
    if (cube_n < 1 || cube_n > 4096)
        return sa3d_fail(err, SA3D_ERR_ARG, "grid placement: %d points per axis; expected 1 to 4096", cube_n);
    /* centre = mean of the placed points, as float32 (torch) */
    double c[3] = { 0, 0, 0 };
    int n_placed = 0;
    for (int k = 0; k < n; k++)
        if (placed[k]) {
            for (int a = 0; a < 3; a++) c[a] += Y[3 * k + a];
            n_placed++;
        }
    float grid[3][4096];
    for (int a = 0; a < 3; a++) {
        float ca = (float)(c[a] / (double)(n_placed ? n_placed : 1));
        double lo = (double)ca - cube_size / 2.0, hi = (double)ca + cube_size / 2.0;
        for (int i = 0; i < cube_n; i++)   /* torch.linspace, end points included */
            grid[a][i] = (float)(cube_n == 1 ? lo : lo + (hi - lo) * (double)i / (double)(cube_n - 1));
        c[a] = ca;
    }
    if (sub->n_pairs == 0) {   /* METHOD.md 4.5.3 step 5: no connected edge pair, put it at the centre */
        for (int a = 0; a < 3; a++) Y[3 * next + a] = c[a];
        return SA3D_OK;
    }
    size_t np = sub->n_pairs, nt = use_tets ? sub->n_tets : 0, N = (size_t)cube_n, NN = N * N, N3 = NN * N;
    gpair *gp = sa3d_malloc(np * sizeof *gp);
    gtet *gt = sa3d_malloc((nt ? nt : 1) * sizeof *gt);
    float *E = sa3d_malloc(N3 * sizeof(float));
    double *Yb = NULL, *eb = NULL;
    long *cand = NULL;
    sa3d_status st = SA3D_OK;
    if (!gp || !gt || !E) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "grid placement: out of memory"); goto done; }
    double mag = 0.0;
    for (size_t r = 0; r < np; r++) {
        gp[r].a0 = fpt_of(Y, sub->e1[2 * r], next);
        gp[r].a1 = fpt_of(Y, sub->e1[2 * r + 1], next);
        gp[r].b0 = fpt_of(Y, sub->e2[2 * r], next);
        gp[r].b1 = fpt_of(Y, sub->e2[2 * r + 1], next);
        gp[r].R = fbeta_of(&sub->ratio[r]);
        gp[r].A = fbeta_of(&sub->cosang[r]);
        mag += (term_mag(&sub->ratio[r]) + term_mag(&sub->cosang[r])) / (5.0 * (double)np);
    }
    for (size_t r = 0; r < nt; r++) {
        for (int j = 0; j < 3; j++) gt[r].p[j] = fpt_of(Y, sub->t[3 * r + j], next);
        gt[r].p[3] = fpt_of(Y, sub->v[r], next);
        gt[r].x = fbeta_of(&sub->cx[r]);
        gt[r].y = fbeta_of(&sub->cy[r]);
        gt[r].z = fbeta_of(&sub->cz[r]);
        mag += (term_mag(&sub->cx[r]) + term_mag(&sub->cy[r]) + term_mag(&sub->cz[r])) / (5.0 * (double)nt);
    }
    float wp = -1.0f / (5.0f * (float)np), wt = nt ? -1.0f / (5.0f * (float)nt) : 0.0f;
    #pragma omp parallel for schedule(static)
    for (size_t line = 0; line < NN; line++) {
        float sp[LINE_MAX], stt[LINE_MAX];
        float X = grid[0][line / N], Yc = grid[1][line % N];
        for (size_t z0 = 0; z0 < N; z0 += LINE_MAX) {
            int m = (int)(N - z0 < LINE_MAX ? N - z0 : LINE_MAX);
            line_energy(sp, stt, X, Yc, grid[2] + z0, m, gp, np, gt, nt);
            for (int i = 0; i < m; i++) E[line * N + z0 + (size_t)i] = wp * sp[i] + wt * stt[i];
        }
    }
    /* exact re-check: every candidate within the float32 error margin of the float32 minimum, in double */
    float fmin_ = INFINITY;
    for (size_t i = 0; i < N3; i++)
        if (E[i] < fmin_) fmin_ = E[i];
    if (!isfinite(fmin_)) {
        st = sa3d_fail(err, SA3D_ERR_NUMERIC, "grid placement of keypoint %d: no finite energy on the grid", next);
        goto done;
    }
    double margin = 1e-4 * (1.0 + fabs((double)fmin_)) + 1e-5 * mag;
    size_t nc = 0;
    for (size_t i = 0; i < N3; i++) nc += (double)E[i] <= (double)fmin_ + margin;
    cand = sa3d_malloc(nc * sizeof *cand);
    eb = sa3d_malloc(nc * sizeof(double));
    Yb = sa3d_malloc(RECHECK_BATCH * (size_t)n * 3 * sizeof(double));
    if (!cand || !Yb || !eb) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "grid placement: out of memory"); goto done; }
    nc = 0;
    for (size_t i = 0; i < N3; i++)
        if ((double)E[i] <= (double)fmin_ + margin) cand[nc++] = (long)i;
    for (size_t b0 = 0; b0 < nc; b0 += RECHECK_BATCH) {   /* batches of whole configurations, in double */
        size_t nb = nc - b0 < RECHECK_BATCH ? nc - b0 : RECHECK_BATCH;
        for (size_t j = 0; j < nb; j++) {
            double *y = Yb + j * (size_t)n * 3;
            size_t i = (size_t)cand[b0 + j];
            memcpy(y, Y, (size_t)n * 3 * sizeof(double));
            y[3 * next] = grid[0][i / NN];
            y[3 * next + 1] = grid[1][(i / N) % N];
            y[3 * next + 2] = grid[2][i % N];
        }
        sa3d_geom_energy(eb + b0, NULL, Yb, (int)nb, n, sub, use_tets);
    }
    double best = INFINITY;
    for (size_t i = 0; i < nc; i++)
        if (eb[i] < best) best = eb[i];
    for (size_t i = 0; i < nc; i++)   /* ties: the lowest flat index, as torch.argmin picks it */
        if (eb[i] - best <= SA3D_GRID_TIE_REL * fabs(best)) {
            size_t f = (size_t)cand[i];
            *flat = cand[i];
            *emin = eb[i];
            Y[3 * next] = grid[0][f / NN];
            Y[3 * next + 1] = grid[1][(f / N) % N];
            Y[3 * next + 2] = grid[2][f % N];
            break;
        }
    if (n_recheck) *n_recheck = nc;
done:
    sa3d_free(gp); sa3d_free(gt); sa3d_free(E); sa3d_free(cand); sa3d_free(Yb); sa3d_free(eb);
    return st;
}

/* ---- steps 1-4 --------------------------------------------------------------------------------------------------- */

sa3d_status sa3d_prior_sparse(double *anchors, const sa3d_geom_terms *g, const float *mode, int n,
                              const sa3d_sparse_params *p, sa3d_sparse_trace *trace, sa3d_error *err) {
    sa3d_sparse_trace local;
    if (!trace) trace = &local;
    memset(trace, 0, sizeof *trace);
    for (int k = 0; k < 3 * n; k++) anchors[k] = INFINITY;
    int v1, v2;
    if (!sa3d_prior_seed_edge(&v1, &v2, mode, g->e1, g->e2, g->n_pairs, n, 0))
        return sa3d_fail(err, SA3D_ERR_NUMERIC, "sparse cloud: no edge-pair relation survived the filter (METHOD.md "
                         "4.3); too few training instances show the keypoints together");
    trace->v1 = v1;
    trace->v2 = v2;
    trace->n_order = sa3d_prior_order(trace->order, mode, g->e1, g->e2, g->n_pairs, n, v1, v2);
    uint8_t placed[SA3D_PRIOR_MAX_SLOTS] = { 0 };
    for (int a = 0; a < 3; a++) {   /* +-(0.01, 0.01, 0.01) as float32 */
        anchors[3 * v1 + a] = (double)0.01f;
        anchors[3 * v2 + a] = -(double)0.01f;
    }
    placed[v1] = placed[v2] = 1;
    size_t *pi = sa3d_malloc(((size_t)p->n_max_comb + 1) * sizeof(size_t));
    size_t *ti = sa3d_malloc(((size_t)p->n_max_comb + 1) * sizeof(size_t));
    sa3d_beta_term *bt = sa3d_malloc(((size_t)p->n_max_comb + 1) * 5 * sizeof *bt);
    int32_t *ids = sa3d_malloc(((size_t)p->n_max_comb + 1) * 8 * sizeof(int32_t));
    sa3d_status st = SA3D_OK;
    if (!pi || !ti || !bt || !ids) { st = sa3d_fail(err, SA3D_ERR_NOMEM, "sparse cloud: out of memory"); goto done; }
    int n_placed = 2;
    for (int s = 0; s < trace->n_order; s++) {
        int next = trace->order[s];
        size_t np, nt, M = (size_t)p->n_max_comb;
        sa3d_prior_subset(pi, &np, ti, &nt, placed, next, g, p->n_max_comb);
        /* the subset as a compact term list */
        int32_t *e1 = ids, *e2 = ids + 2 * M, *t = ids + 4 * M, *v = ids + 7 * M;
        sa3d_beta_term *R = bt, *A = bt + M, *cx = bt + 2 * M, *cy = bt + 3 * M, *cz = bt + 4 * M;
        for (size_t i = 0; i < np; i++) {
            memcpy(e1 + 2 * i, g->e1 + 2 * pi[i], 2 * sizeof(int32_t));
            memcpy(e2 + 2 * i, g->e2 + 2 * pi[i], 2 * sizeof(int32_t));
            R[i] = g->ratio[pi[i]];
            A[i] = g->cosang[pi[i]];
        }
        for (size_t i = 0; i < nt; i++) {
            memcpy(t + 3 * i, g->t + 3 * ti[i], 3 * sizeof(int32_t));
            v[i] = g->v[ti[i]];
            cx[i] = g->cx[ti[i]];
            cy[i] = g->cy[ti[i]];
            cz[i] = g->cz[ti[i]];
        }
        sa3d_geom_terms sub = { np, e1, e2, R, A, nt, t, v, cx, cy, cz };
        st = sa3d_prior_grid_place(anchors, &trace->flat[s], &trace->emin[s], n, placed, next, &sub,
                                   n_placed >= 3, p->cube_size, p->cube_n, &trace->n_recheck[s], err);
        if (st) goto done;
        placed[next] = 1;
        n_placed++;
    }
    if (p->refine_iters > 0)
        st = sa3d_prior_refine(anchors, placed, n, g, p->refine_iters, &p->adam, &trace->refine_energy[0],
                               &trace->refine_energy[1], err);
done:
    sa3d_free(pi); sa3d_free(ti); sa3d_free(bt); sa3d_free(ids);
    return st;
}

/* ---- step 4: global refinement ---------------------------------------------------------------------------------- */

size_t sa3d_prior_energy_scratch(const sa3d_geom_terms *g, int n) {
    size_t nc = (g->n_pairs + PAIR_CHUNK - 1) / PAIR_CHUNK + (g->n_tets + TET_CHUNK - 1) / TET_CHUNK;
    return nc * ((size_t)n * 3 + 1) + 1;
}

double sa3d_prior_energy(double *grad, const double *Y, int n, const sa3d_geom_terms *g, double *buf) {
    size_t ncp = (g->n_pairs + PAIR_CHUNK - 1) / PAIR_CHUNK, nct = (g->n_tets + TET_CHUNK - 1) / TET_CHUNK;
    size_t nc = ncp + nct, stride = (size_t)n * 3 + 1;
    #pragma omp parallel for schedule(dynamic, 1)
    for (size_t c = 0; c < nc; c++) {
        sa3d_geom_terms v;
        memset(&v, 0, sizeof v);
        size_t lo, m, total;
        if (c < ncp) {
            lo = c * PAIR_CHUNK;
            total = g->n_pairs;
            m = total - lo < PAIR_CHUNK ? total - lo : PAIR_CHUNK;
            v.n_pairs = m;
            v.e1 = g->e1 + 2 * lo; v.e2 = g->e2 + 2 * lo;
            v.ratio = g->ratio + lo; v.cosang = g->cosang + lo;
        } else {
            lo = (c - ncp) * TET_CHUNK;
            total = g->n_tets;
            m = total - lo < TET_CHUNK ? total - lo : TET_CHUNK;
            v.n_tets = m;
            v.t = g->t + 3 * lo; v.v = g->v + lo;
            v.cx = g->cx + lo; v.cy = g->cy + lo; v.cz = g->cz + lo;
        }
        double *o = buf + c * stride, e;
        sa3d_geom_energy(&e, grad ? o + 1 : NULL, Y, 1, n, &v, 1);
        double w = (double)m / (double)total;   /* the chunk's mean becomes its share of the full mean */
        o[0] = e * w;
        if (grad)
            for (size_t i = 0; i < (size_t)n * 3; i++) o[1 + i] *= w;
    }
    double E = 0.0;
    if (grad) memset(grad, 0, (size_t)n * 3 * sizeof(double));
    for (size_t c = 0; c < nc; c++) {   /* fixed order */
        E += buf[c * stride];
        if (grad)
            for (size_t i = 0; i < (size_t)n * 3; i++) grad[i] += buf[c * stride + 1 + i];
    }
    return E;
}

sa3d_status sa3d_prior_refine(double *Y, const uint8_t *used, int n, const sa3d_geom_terms *g, int iters,
                              const sa3d_adamw_params *adam, double *e0, double *e1, sa3d_error *err) {
    int idx[SA3D_PRIOR_MAX_SLOTS], nu = 0;
    for (int k = 0; k < n; k++)
        if (used[k]) idx[nu++] = k;
    size_t nx = (size_t)nu * 3;
    double *buf = sa3d_malloc(sa3d_prior_energy_scratch(g, n) * sizeof(double));
    double *G = sa3d_malloc((size_t)n * 3 * sizeof(double));
    double *x = sa3d_malloc((nx + 1) * 4 * sizeof(double));
    if (!buf || !G || !x) {
        sa3d_free(buf); sa3d_free(G); sa3d_free(x);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "sparse refinement: out of memory");
    }
    double *m = x + nx, *v = m + nx, *gx = v + nx;
    memset(m, 0, 2 * nx * sizeof(double));
    for (int i = 0; i < nu; i++) memcpy(x + 3 * i, Y + 3 * idx[i], 3 * sizeof(double));
    sa3d_status st = SA3D_OK;
    double E = sa3d_prior_energy(NULL, Y, n, g, buf);
    if (e0) *e0 = E;
    for (long it = 1; it <= iters; it++) {
        E = sa3d_prior_energy(G, Y, n, g, buf);
        if (!isfinite(E)) {
            st = sa3d_fail(err, SA3D_ERR_NUMERIC, "sparse refinement: iteration %ld: L_geom is not finite", it);
            break;
        }
        for (int i = 0; i < nu; i++) memcpy(gx + 3 * i, G + 3 * idx[i], 3 * sizeof(double));
        sa3d_adamw_step(x, m, v, gx, nx, it, adam);
        for (int i = 0; i < nu; i++) memcpy(Y + 3 * idx[i], x + 3 * i, 3 * sizeof(double));
    }
    if (e1) *e1 = sa3d_prior_energy(NULL, Y, n, g, buf);
    sa3d_free(buf); sa3d_free(G); sa3d_free(x);
    return st;
}
