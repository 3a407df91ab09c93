/* The aligner's energy kernel (align_cuda.cu launches it): align_energy.h's steps for one (hypothesis, view) per
 * block, and for view 0 L_geom's relation steps (geom.h). Device code only, apart from the host side. Include
 * after align_internal.h. */
#ifndef SA3D_ALIGN_KERNEL_CUH
#define SA3D_ALIGN_KERNEL_CUH

#ifndef AK_THREADS
#define AK_THREADS 256   /* threads per block: a power of two, at least 64 (the emulator runs it with 64) */
#endif

/* What one launch reads and writes besides the two contexts. Rows are view x B + b. */
typedef struct kparams {
    int B;
    sa3d_align_stage stage;
    const double *Y, *phi;     /* [B][n][3], [B] */
    const uint8_t *alive;      /* [B] */
    const int *twin;           /* [n] (with a mirror) */
    double *Ym;                /* [B][n][3] the mirrored poses (with a mirror) */
    double *work;              /* [rows][wd] */
    size_t wd;
    double *E, *terms, *gY, *gphi;   /* [rows], [rows][4], [rows][n][3], [rows] */
    /* L_geom (view 0's context holds the terms on the device): per hypothesis its value and gradient; the
     * relations' slot gradients [B][grd] and each used anchor's slots [vptr_j, vptr_j+1) of vent (relation x 4 +
     * slot, tets after pairs). geom = 0 (w_geom 0): eg and gg are zeros. */
    int geom;
    double *eg, *gg, *gr;              /* [B], [B][n][3], [B][grd] */
    size_t grd;
    const int *vptr, *vent;
} kparams;

/* red[r][0] = the sum of red[r][0..AK_THREADS) for r < m, in a fixed tree. Every thread of the block calls it. */
__device__ static void block_sum(double (*red)[AK_THREADS], int m, int t) {
    __syncthreads();
    for (int s = AK_THREADS / 2; s > 0; s >>= 1) {
        if (t < s)
            for (int r = 0; r < m; r++) red[r][t] += red[r][t + s];
        __syncthreads();
    }
}

/* L_sparse of appended anchor a with the window spread over the lanes of one warp (sa3d_ae_sparse_* steps). */
__device__ static void sparse_warp(const sa3d_align_ctx *c, int a, const sa3d_ae_stage *k, sa3d_ae_work w,
                                   int lane) {
    const double *lp = c->anc_lp + (size_t)a * c->cells;
    int i = c->anc_pt[a], g = c->g;
    double px = w.pr[2 * i], py = w.pr[2 * i + 1], R = k->r_sparse, o = c->p.sparse_outlier;
    long win[4];
    sa3d_ae_sparse_window(g, px, py, R, win);
    long wx = win[1] - win[0] + 1, wy = win[3] - win[2] + 1, cells = wx > 0 && wy > 0 ? wx * wy : 0;
    double mx = o, l, ex, ey;
    for (long e = lane; e < cells; e += 32)
        if (sa3d_ae_sparse_term(lp, g, win[0] + e % wx, win[2] + e / wx, px, py, R, k, &l, &ex, &ey) && l > mx)
            mx = l;
    for (int off = 16; off > 0; off >>= 1) mx = fmax(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    double sum = 0.0, sx = 0.0, sy = 0.0;
    for (long e = lane; e < cells; e += 32)
        if (sa3d_ae_sparse_term(lp, g, win[0] + e % wx, win[2] + e / wx, px, py, R, k, &l, &ex, &ey)) {
            double v = exp(l - mx);
            sum += v;
            sx += v * ex;
            sy += v * ey;
        }
    for (int off = 16; off > 0; off >>= 1) {
        sum += __shfl_xor_sync(0xffffffffu, sum, off);
        sx += __shfl_xor_sync(0xffffffffu, sx, off);
        sy += __shfl_xor_sync(0xffffffffu, sy, off);
    }
    if (lane == 0)
        w.lsp[a] = sa3d_ae_sparse_finish(mx, exp(o - mx) + sum, sx, sy, k->w_sparse * (1.0 / c->n_anc), k,
                                         w.sg + 2 * a);
}

/* L_geom of hypothesis b at its pose Y (as sa3d_geom_energy): a thread per relation, then each anchor's gradient
 * gathered over its slots in relation order, the log densities summed in a tree. */
__device__ static void geom_block(const sa3d_align_ctx *c, const kparams *P, int b, const double *Y,
                                  double (*red)[AK_THREADS], int t) {
    const sa3d_geom_terms *g = &c->gt;
    size_t np = g->n_pairs, nt = c->p.use_tets ? g->n_tets : 0;
    double *gr = P->gr + (size_t)b * P->grd, *gg = P->gg + (size_t)b * 3 * c->n;
    double wp = np ? -1.0 / (5.0 * (double)np) : 0.0, wt = nt ? -1.0 / (5.0 * (double)nt) : 0.0;
    double s[5] = { 0.0, 0.0, 0.0, 0.0, 0.0 }, lp[3];
    for (size_t e = (size_t)t; e < np; e += AK_THREADS) {
        sa3d_geom_pair(g, Y, e, wp, lp, (double (*)[3])(gr + 12 * e));
        s[0] += lp[0];
        s[1] += lp[1];
    }
    for (size_t k = (size_t)t; k < nt; k += AK_THREADS) {
        sa3d_geom_tet(g, Y, k, wt, lp, (double (*)[3])(gr + 12 * (np + k)));
        s[2] += lp[0];
        s[3] += lp[1];
        s[4] += lp[2];
    }
    __syncthreads();   /* every slot written; and thread 0 is done reading red */
    for (int j = t; j < c->n; j += AK_THREADS) {
        double g0 = 0.0, g1 = 0.0, g2 = 0.0;
        for (int e = P->vptr[j]; e < P->vptr[j + 1]; e++) {
            const double *d = gr + 3 * (size_t)P->vent[e];
            g0 += d[0];
            g1 += d[1];
            g2 += d[2];
        }
        gg[3 * j] = g0;
        gg[3 * j + 1] = g1;
        gg[3 * j + 2] = g2;
    }
    for (int r = 0; r < 5; r++) red[r][t] = s[r];
    block_sum(red, 5, t);
    if (t == 0) {
        double dp = (double)np, dt = (double)nt;
        double l_pairs = np ? -(red[0][0] / dp) + -(red[1][0] / dp) : 0.0;
        double l_tets = nt ? -(red[2][0] / dt) + -(red[3][0] / dt) + -(red[4][0] / dt) : 0.0;
        P->eg[b] = (l_pairs + l_tets) / 5.0;
    }
}

/* energy_one of hypothesis blockIdx.x on view blockIdx.y (0: the image, 1: its mirror at the mirrored pose); view
 * 0's blocks then add the hypothesis's L_geom. */
static __global__ void __launch_bounds__(AK_THREADS) energy_kernel(const sa3d_align_ctx *ctx, kparams P) {
    __shared__ double red[5][AK_THREADS];
    int b = blockIdx.x, view = blockIdx.y, t = threadIdx.x;
    if (!P.alive[b]) return;   /* the whole block */
    const sa3d_align_ctx *c = ctx + view;
    int n = c->n, N = c->N;
    size_t row = (size_t)view * P.B + b;
    sa3d_ae_work w = sa3d_ae_layout(c, P.work + row * P.wd);
    sa3d_ae_stage k = sa3d_ae_stage_make(c, &P.stage);
    double phi = P.phi[b];
    const double *Y = P.Y + (size_t)b * 3 * n;
    double *gY = P.gY + row * 3 * n;
    if (view == 1) {
        double *Ym = P.Ym + (size_t)b * 3 * n;
        for (int a = t; a < n; a += AK_THREADS) sa3d_ae_mirror_anchor(P.twin, Y, a, Ym);
        __syncthreads();
        Y = Ym;
    }
    for (int i = t; i < N; i += AK_THREADS) sa3d_ae_project(c, Y, phi, i, w);
    __syncthreads();
    double l_rec = 0.0, l_bg = 0.0, gp = 0.0;
    if (k.w_rec != 0.0 && c->p.rec_mode != SA3D_REC_POINT)
        for (int q = t; q < c->n_act; q += AK_THREADS) l_rec -= sa3d_ae_rec_cell(c, q, &k, w);
    if (k.w_sparse != 0.0)
        for (int a = t / 32; a < c->n_anc; a += AK_THREADS / 32) sparse_warp(c, a, &k, w, t % 32);
    __syncthreads();
    for (int i = t; i < N; i += AK_THREADS) {
        double lr, lb;
        gp -= sa3d_ae_point(c, i, phi, &k, w, &lr, &lb);
        l_rec -= lr;
        l_bg += lb;
    }
    __syncthreads();
    for (int a = t; a < n; a += AK_THREADS) sa3d_ae_anchor(c, a, w.X, gY + 3 * a);
    red[0][t] = l_rec;
    red[1][t] = l_bg;
    red[2][t] = gp;
    block_sum(red, 3, t);
    if (t == 0) {
        double L_rec = red[0][0], L_bg = red[1][0], L_sparse = 0.0;
        if (k.w_sparse != 0.0 && c->n_anc > 0) {
            double inv = 1.0 / c->n_anc;
            for (int a = 0; a < c->n_anc; a++) L_sparse += inv * w.lsp[a];
        }
        double L_depth = sa3d_ae_depth(c, Y, gY);   /* after the barriers: every anchor's gradient is written */
        P.E[row] = k.w_rec * L_rec + c->p.w_bg * L_bg + c->p.w_depth * L_depth + k.w_sparse * L_sparse;
        double *tr = P.terms + 4 * row;
        tr[0] = L_rec;
        tr[1] = L_bg;
        tr[2] = L_depth;
        tr[3] = L_sparse;
        P.gphi[row] = red[2][0];
    }
    if (view == 0 && P.geom) {
        geom_block(c, &P, b, Y, red, t);
    } else if (view == 0) {
        for (int j = t; j < 3 * n; j += AK_THREADS) P.gg[(size_t)b * 3 * n + j] = 0.0;
        if (t == 0) P.eg[b] = 0.0;
    }
}

/* Reading (a)'s candidate lists [cells][K] from the similarity maps: a thread per cell, the CPU's cell function.
 * Consecutive threads read consecutive cells of each S row. sv [cells][K] is scratch. */
__global__ static void candidates_kernel(const float *S, int N, int cells, const double *mu, const double *sd, int K,
                                         int *cand, double *lp, float *sv) {
    int q = blockIdx.x * blockDim.x + threadIdx.x;
    if (q >= cells) return;
    size_t o = (size_t)q * K;
    sa3d_align_cell_candidates(S, (size_t)cells, (size_t)q, N, mu, sd, K, cand + o, lp + o, sv + o);
}

#endif
