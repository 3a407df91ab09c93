/* The clustering half of the dense cloud (METHOD.md 4.6 b; dense_pc_generator.cluster_merged_pc): seeded k-means++
 * then Lloyd's k-means with Hamerly's bounds (same fixed point as plain Lloyd, most distance evaluations skipped),
 * the 1000-nearest-neighbour feature statistics of each centre, and the barycentric rig of a canonical point
 * collapsed to one weight per keypoint slot (prior.h). Every loop writes per-item results, so the output is
 * bit-identical at any thread count; sums over points run in index order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "base/rng.h"
#include "prior/prior_internal.h"

#define TAG_KMEANS 0x6b6d65616e73ull   /* random stream of the k-means++ seeding */

static inline double d2(const double *a, const double *b) {
    double x = a[0] - b[0], y = a[1] - b[1], z = a[2] - b[2];
    return x * x + y * y + z * z;
}

/* Nearest and second-nearest centre of x (first index on ties). */
static void nearest2(int32_t *a, double *u, double *l, const double *x, const double *C, int k) {
    double b1 = HUGE_VAL, b2 = HUGE_VAL;
    int i1 = 0;
    for (int j = 0; j < k; j++) {
        double d = d2(x, C + 3 * j);
        if (d < b1) { b2 = b1; b1 = d; i1 = j; }
        else if (d < b2) b2 = d;
    }
    *a = i1;
    *u = sqrt(b1);
    *l = sqrt(b2);
}

int sa3d_kmeans(double *C, int32_t *assign, const double *X, size_t N, int k, uint64_t seed, int max_iter,
                double tol, sa3d_error *err) {
    if (k < 1 || N < (size_t)k) {
        sa3d_fail(err, SA3D_ERR_ARG, "k-means: k = %d with %zu points; expected 1 <= k <= points", k, N);
        return -1;
    }
    double *D = sa3d_malloc(N * sizeof(double)), *u = sa3d_malloc(N * sizeof(double));
    double *l = sa3d_malloc(N * sizeof(double)), *S = sa3d_malloc((size_t)k * 4 * sizeof(double));
    double *Cn = sa3d_malloc((size_t)k * 3 * sizeof(double)), *cnt = sa3d_malloc((size_t)k * sizeof(double));
    if (!D || !u || !l || !S || !Cn || !cnt) {
        sa3d_free(D); sa3d_free(u); sa3d_free(l); sa3d_free(S); sa3d_free(Cn); sa3d_free(cnt);
        sa3d_fail(err, SA3D_ERR_NOMEM, "k-means: out of memory (%zu points)", N);
        return -1;
    }
    /* k-means++: the first centre uniform, each next one with probability proportional to D^2 */
    sa3d_rng rng = sa3d_rng_for(seed, TAG_KMEANS, 0);
    size_t first = (size_t)(sa3d_rng_uniform(&rng) * (double)N);
    if (first >= N) first = N - 1;
    memcpy(C, X + 3 * first, 3 * sizeof(double));
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) D[i] = d2(X + 3 * i, C);
    for (int c = 1; c < k; c++) {
        double total = 0.0;
        for (size_t i = 0; i < N; i++) total += D[i];
        double r = sa3d_rng_uniform(&rng) * total, acc = 0.0;
        size_t pick = N - 1;
        if (total > 0.0) {
            for (size_t i = 0; i < N; i++) {
                acc += D[i];
                if (acc > r && D[i] > 0.0) { pick = i; break; }
            }
        } else {   /* every point sits on a centre already: any point will do */
            pick = (size_t)(sa3d_rng_uniform(&rng) * (double)N);
            if (pick >= N) pick = N - 1;
        }
        double *cc = C + 3 * c;
        memcpy(cc, X + 3 * pick, 3 * sizeof(double));
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < N; i++) {
            double d = d2(X + 3 * i, cc);
            if (d < D[i]) D[i] = d;
        }
    }
    /* tolerance as sklearn: tol x the mean per-axis variance of the data */
    double mean[3] = { 0, 0, 0 }, var = 0.0;
    for (size_t i = 0; i < N; i++)
        for (int a = 0; a < 3; a++) mean[a] += X[3 * i + a];
    for (int a = 0; a < 3; a++) mean[a] /= (double)N;
    for (size_t i = 0; i < N; i++)
        for (int a = 0; a < 3; a++) var += (X[3 * i + a] - mean[a]) * (X[3 * i + a] - mean[a]);
    double tol_abs = tol * var / (3.0 * (double)N);

    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < N; i++) nearest2(assign + i, u + i, l + i, X + 3 * i, C, k);
    int it = 0;
    while (it < max_iter) {
        it++;
        /* M step: means in point order (deterministic); an empty cluster keeps its centre */
        memset(Cn, 0, (size_t)k * 3 * sizeof(double));
        memset(cnt, 0, (size_t)k * sizeof(double));
        for (size_t i = 0; i < N; i++) {
            int a = assign[i];
            cnt[a] += 1.0;
            for (int d = 0; d < 3; d++) Cn[3 * a + d] += X[3 * i + d];
        }
        double shift2 = 0.0, pmax = 0.0;
        for (int j = 0; j < k; j++) {
            double p = 0.0;
            if (cnt[j] > 0.0) {
                for (int d = 0; d < 3; d++) Cn[3 * j + d] /= cnt[j];
                p = sqrt(d2(Cn + 3 * j, C + 3 * j));
                memcpy(C + 3 * j, Cn + 3 * j, 3 * sizeof(double));
            }
            S[k + j] = p;   /* S[k..2k): how far each centre moved */
            shift2 += p * p;
            if (p > pmax) pmax = p;
        }
        /* Hamerly's bounds follow the moves: u up by its centre's move, l down by the largest move */
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < N; i++) {
            u[i] += S[k + assign[i]];
            l[i] -= pmax;
        }
        /* E step: s_j = half the distance to the nearest other centre; a point whose upper bound is below both its
         * lower bound and s_j cannot change cluster */
        #pragma omp parallel for schedule(static)
        for (int j = 0; j < k; j++) {
            double m = HUGE_VAL;
            for (int q = 0; q < k; q++)
                if (q != j) {
                    double d = d2(C + 3 * j, C + 3 * q);
                    if (d < m) m = d;
                }
            S[j] = 0.5 * sqrt(m);
        }
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < N; i++) {
            double m = fmax(S[assign[i]], l[i]);
            if (u[i] <= m) continue;
            u[i] = sqrt(d2(X + 3 * i, C + 3 * assign[i]));
            if (u[i] <= m) continue;
            nearest2(assign + i, u + i, l + i, X + 3 * i, C, k);
        }
        if (shift2 <= tol_abs) break;
    }
    sa3d_free(D); sa3d_free(u); sa3d_free(l); sa3d_free(S); sa3d_free(Cn); sa3d_free(cnt);
    return it;
}

/* ---- neighbourhood statistics --------------------------------------------------------------------------------------- */

/* Quickselect with a three-way partition: the value of rank r (0-based) among v[0..n) (v is reordered). */
static double select_rank(double *v, size_t n, size_t r) {
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        double pivot = v[lo + (hi - lo) / 2], t;
        size_t lt = lo, i = lo, gt = hi;   /* [lo, lt) < pivot, [lt, i) == pivot, [gt, hi) > pivot */
        while (i < gt) {
            if (v[i] < pivot) { t = v[lt]; v[lt++] = v[i]; v[i++] = t; }
            else if (v[i] > pivot) { t = v[--gt]; v[gt] = v[i]; v[i] = t; }
            else i++;
        }
        if (r < lt) hi = lt;
        else if (r >= gt) lo = gt;
        else return pivot;
    }
    return v[r];
}

sa3d_status sa3d_dense_stats(float *feat /* [m][C] */, float *attn_mean /* [m] */, float *attn_sd /* [m] */,
                             const double *centres /* [m][3] */, int m, const double *X /* [N][3] */,
                             const float *F /* [N][C] */, size_t N, int C, int K, sa3d_error *err) {
    if (K < 1 || N < 1) return sa3d_fail(err, SA3D_ERR_ARG, "dense statistics: %zu points, %d neighbours", N, K);
    size_t Kz = (size_t)K < N ? (size_t)K : N;
    int fail = 0;
    #pragma omp parallel
    {
        double *d = sa3d_malloc(N * sizeof(double)), *tmp = sa3d_malloc(N * sizeof(double));
        double *acc = sa3d_malloc((size_t)C * sizeof(double));
        size_t *nb = sa3d_malloc(Kz * sizeof(size_t));
        if (!d || !tmp || !acc || !nb) {
            #pragma omp atomic write
            fail = 1;
        }
        #pragma omp for schedule(dynamic, 4)
        for (int c = 0; c < m; c++) {
            if (!d || !tmp || !acc || !nb) continue;
            const double *x = centres + 3 * c;
            for (size_t i = 0; i < N; i++) tmp[i] = d[i] = d2(x, X + 3 * i);
            double thr = select_rank(tmp, N, Kz - 1);
            size_t below = 0, cnt = 0;
            for (size_t i = 0; i < N; i++) below += d[i] < thr;
            size_t ties = Kz - below;   /* of the points at exactly the threshold, the lowest indices */
            for (size_t i = 0; i < N; i++) {
                if (d[i] < thr) nb[cnt++] = i;
                else if (d[i] == thr && ties > 0) { nb[cnt++] = i; ties--; }
            }
            memset(acc, 0, (size_t)C * sizeof(double));
            for (size_t q = 0; q < cnt; q++) {
                const float *f = F + nb[q] * (size_t)C;
                for (int ch = 0; ch < C; ch++) acc[ch] += (double)f[ch];
            }
            double nrm = 0.0;
            for (int ch = 0; ch < C; ch++) nrm += acc[ch] * acc[ch];
            nrm = sqrt(nrm);
            float *fc = feat + (size_t)c * (size_t)C;
            for (int ch = 0; ch < C; ch++) fc[ch] = (float)(nrm > 0.0 ? acc[ch] / nrm : 0.0);
            double s = 0.0, s2 = 0.0;
            for (size_t q = 0; q < cnt; q++) {
                const float *f = F + nb[q] * (size_t)C;
                double a = 0.0;
                for (int ch = 0; ch < C; ch++) a += (double)fc[ch] * (double)f[ch];
                s += a;
                s2 += a * a;
            }
            double mu = s / (double)cnt, var = s2 / (double)cnt - mu * mu;   /* population variance */
            attn_mean[c] = (float)mu;
            attn_sd[c] = (float)sqrt(var > 0.0 ? var : 0.0);
        }
        sa3d_free(d); sa3d_free(tmp); sa3d_free(acc); sa3d_free(nb);
    }
    if (fail) return sa3d_fail(err, SA3D_ERR_NOMEM, "dense statistics: out of memory (%zu points)", N);
    return SA3D_OK;
}

/* ---- the collapsed rig ---------------------------------------------------------------------------------------------- */

sa3d_status sa3d_dense_rig(float *rig /* [m][n] */, uint8_t *in_hull /* [m] */, const double *pts /* [m][3] */,
                           int m, const double *info /* [SA3D_TET_INFO][T] */, const int32_t *tets /* [T][4] slot ids */,
                           size_t T, int n, sa3d_error *err) {
    int fail = 0;
    #pragma omp parallel
    {
        double *b = sa3d_malloc((T ? T : 1) * 4 * sizeof(double)), *w = sa3d_malloc((T ? T : 1) * sizeof(double));
        uint8_t *ins = sa3d_malloc(T ? T : 1);
        if (!b || !w || !ins) {
            #pragma omp atomic write
            fail = 1;
        }
        #pragma omp for schedule(dynamic, 4)
        for (int i = 0; i < m; i++) {
            if (!b || !w || !ins) continue;
            const double *x = pts + 3 * i;
            float *row = rig + (size_t)i * (size_t)n;
            uint8_t any = 0;
            for (int k = 0; k < n; k++) row[k] = 0.0f;
            if (T) {
                sa3d_tet_bary(b, x, 1, info, T);
                sa3d_tet_inside(ins, &any, b, 1, T, SA3D_TET_THRESH);
            }
            in_hull[i] = any;
            if (!any) continue;
            sa3d_tet_weights(w, x, 1, info, ins, T);
            double acc[SA3D_PRIOR_MAX_SLOTS] = { 0 };
            for (size_t t = 0; t < T; t++)   /* rig[k] = sum_T w_T sum_j [T_j = k] b_Tj (prior.h) */
                if (w[t] != 0.0)
                    for (int j = 0; j < 4; j++) acc[tets[4 * t + j]] += w[t] * b[4 * t + j];
            for (int k = 0; k < n; k++) row[k] = (float)acc[k];
        }
        sa3d_free(b); sa3d_free(w); sa3d_free(ins);
    }
    if (fail) return sa3d_fail(err, SA3D_ERR_NOMEM, "dense rig: out of memory (%zu tetrahedra)", T);
    return SA3D_OK;
}
