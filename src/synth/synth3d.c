/* Ground-truth 3D benchmark in the SPair-71k layout (synth3d.h): articulated ellipsoid quadrupeds seen from
 * cameras all around, rendered by exact ray casting (a z-buffer over the parts), with SPair records, the
 * ground truth per image, mirror-ambiguous GeoAware-frame feature maps (METHOD.md 3.1) and disparity-like
 * relative depth (METHOD.md 3.2). Owns its random streams (splitmix64 seeding xoshiro256**, one per item, so
 * the output does not depend on the thread count); every file goes through the io layer's atomic writers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "base/rng.h"
#include "synth/synth_io.h"
#include "semalign3d/data.h"
#include "semalign3d/image.h"
#include "semalign3d/match.h"
#include "semalign3d/safetensors.h"
#include "semalign3d/synth3d.h"

#define N_KEYS SA3D_SYNTH3D_MAX_SLOTS
#define MAX_PARTS SA3D_SYNTH3D_MAX_PARTS
#define N_CLASSES 6
#define JPEG_QUALITY 90
#define MAX_IMAGES 1000
#define MAX_PAIRS 999999
#define VIS_TOL 1e-6            /* relative depth tolerance of the visibility test */
#define VIS_OWN 0.5             /* depth slack behind the keypoint's own part: x its smallest semi-axis */
#define CHIRAL_WIDTH 0.08       /* tanh(q.x / this): the chirality term fades on the symmetry plane */
#define CLASS_WEIGHT 0.5f

static const double PI = 3.14159265358979323846;

/* ---- random streams (as spair_synth.c) -------------------------------------------------------------------- */

enum { TAG_SCENE = 101, TAG_RENDER, TAG_NOISE, TAG_TABLES, TAG_PAIRS };

static double symmetric(sa3d_rng *r) { return 2.0 * sa3d_rng_uniform(r) - 1.0; }   /* [-1, 1) */

/* ---- the object classes ------------------------------------------------------------------------------------ */

/* A part: an ellipsoid (centre `offset`, semi-axes `axes`) in its own frame, which hangs from the parent's
 * frame at `pivot` turned by the hinge angle about x. Parents precede children. */
typedef struct part_def {
    const char *name;
    int parent, mirror, cls;
    double pivot[3], hinge0, range;      /* degrees */
    double offset[3], axes[3];
} part_def;

typedef struct kp_def { int part; double dir[3]; } kp_def;   /* surface point offset + axes * dir / |dir| */

typedef struct shape_def {
    const char *name;                    /* SPair category */
    int n_parts;
    part_def parts[MAX_PARTS];
    int n_slots;
    kp_def kps[N_KEYS];
    unsigned char colour[N_CLASSES][3];  /* per part class */
} shape_def;

enum { P_BODY, P_NECK, P_HEAD, P_LEG_FL, P_LEG_FR, P_LEG_BL, P_LEG_BR, P_TAIL };

/* dog: SPair flip map [0 1] [2 3] [4 5] 6 7 8 [9 10] [11 12] 13 14 15 (METHOD.md 1.6). */
static const shape_def shapes[SA3D_SYNTH3D_N_CATEGORIES] = {
    { "dog", 8,
      { { "body", -1, P_BODY, 0, { 0, 0, 0 }, 0, 4, { 0, 0, 0 }, { 0.32, 0.30, 0.75 } },
        { "neck", P_BODY, P_NECK, 1, { 0, 0.12, 0.60 }, 50, 15, { 0, 0, 0.22 }, { 0.14, 0.14, 0.26 } },
        { "head", P_NECK, P_HEAD, 2, { 0, 0, 0.44 }, -60, 20, { 0, 0, 0.15 }, { 0.17, 0.16, 0.28 } },
        { "leg_front_left", P_BODY, P_LEG_FR, 3, { 0.18, -0.15, 0.50 }, 0, 25, { 0, -0.30, 0 }, { 0.09, 0.33, 0.09 } },
        { "leg_front_right", P_BODY, P_LEG_FL, 3, { -0.18, -0.15, 0.50 }, 0, 25, { 0, -0.30, 0 }, { 0.09, 0.33, 0.09 } },
        { "leg_back_left", P_BODY, P_LEG_BR, 4, { 0.18, -0.15, -0.50 }, 0, 25, { 0, -0.30, 0 }, { 0.09, 0.33, 0.09 } },
        { "leg_back_right", P_BODY, P_LEG_BL, 4, { -0.18, -0.15, -0.50 }, 0, 25, { 0, -0.30, 0 }, { 0.09, 0.33, 0.09 } },
        { "tail", P_BODY, P_TAIL, 5, { 0, 0.12, -0.70 }, 35, 30, { 0, 0, -0.25 }, { 0.05, 0.05, 0.27 } } },
      16,
      { { P_HEAD, { 0.55, 0.45, 0.70 } }, { P_HEAD, { -0.55, 0.45, 0.70 } },      /* 0, 1 eyes */
        { P_HEAD, { 0.55, 0.80, -0.25 } }, { P_HEAD, { -0.55, 0.80, -0.25 } },    /* 2, 3 ears */
        { P_LEG_FL, { 0, -0.7, 0.7 } }, { P_LEG_FR, { 0, -0.7, 0.7 } },             /* 4, 5 front paws */
        { P_HEAD, { 0, 0.10, 1 } },                                                /* 6 nose */
        { P_HEAD, { 0, -0.85, 0.50 } },                                            /* 7 chin */
        { P_BODY, { 0, 0.90, 0.45 } },                                             /* 8 withers */
        { P_LEG_BL, { 0, -0.7, 0.7 } }, { P_LEG_BR, { 0, -0.7, 0.7 } },             /* 9, 10 back paws */
        { P_BODY, { 0.85, 0.20, 0.50 } }, { P_BODY, { -0.85, 0.20, 0.50 } },      /* 11, 12 shoulders */
        { P_TAIL, { 0, 0.25, -1 } },                                                  /* 13 tail tip */
        { P_BODY, { 0, 1, -0.35 } },                                               /* 14 back */
        { P_BODY, { 0, -1, 0.05 } } },                                             /* 15 belly */
      { { 176, 124, 72 }, { 168, 118, 70 }, { 196, 148, 96 }, { 120, 84, 52 }, { 104, 72, 44 }, { 70, 46, 30 } } },
    /* horse: [0 1] [2 3] [4 5] [6 7] 8 9 [10 11] [12 13] 14 15 [16 17] [18 19] */
    { "horse", 8,
      { { "body", -1, P_BODY, 0, { 0, 0, 0 }, 0, 3, { 0, 0, 0 }, { 0.30, 0.32, 0.80 } },
        { "neck", P_BODY, P_NECK, 1, { 0, 0.15, 0.65 }, 55, 12, { 0, 0, 0.30 }, { 0.13, 0.16, 0.35 } },
        { "head", P_NECK, P_HEAD, 2, { 0, 0, 0.60 }, -85, 15, { 0, 0, 0.22 }, { 0.12, 0.13, 0.32 } },
        { "leg_front_left", P_BODY, P_LEG_FR, 3, { 0.17, -0.15, 0.60 }, 0, 20, { 0, -0.45, 0 }, { 0.08, 0.47, 0.08 } },
        { "leg_front_right", P_BODY, P_LEG_FL, 3, { -0.17, -0.15, 0.60 }, 0, 20, { 0, -0.45, 0 }, { 0.08, 0.47, 0.08 } },
        { "leg_back_left", P_BODY, P_LEG_BR, 4, { 0.17, -0.15, -0.60 }, 0, 20, { 0, -0.45, 0 }, { 0.08, 0.47, 0.08 } },
        { "leg_back_right", P_BODY, P_LEG_BL, 4, { -0.17, -0.15, -0.60 }, 0, 20, { 0, -0.45, 0 }, { 0.08, 0.47, 0.08 } },
        { "tail", P_BODY, P_TAIL, 5, { 0, 0.15, -0.78 }, -20, 20, { 0, 0, -0.30 }, { 0.06, 0.06, 0.32 } } },
      20,
      { { P_HEAD, { 0.60, 0.50, 0.55 } }, { P_HEAD, { -0.60, 0.50, 0.55 } },      /* 0, 1 eyes */
        { P_HEAD, { 0.45, 0.85, -0.35 } }, { P_HEAD, { -0.45, 0.85, -0.35 } },    /* 2, 3 ears */
        { P_LEG_FL, { 0, -0.10, 1 } }, { P_LEG_FR, { 0, -0.10, 1 } },             /* 4, 5 front knees */
        { P_LEG_FL, { 0, -0.7, 0.7 } }, { P_LEG_FR, { 0, -0.7, 0.7 } },             /* 6, 7 front hooves */
        { P_HEAD, { 0, -0.10, 1 } },                                               /* 8 nose */
        { P_NECK, { 0, 1, 0 } },                                                   /* 9 mane */
        { P_LEG_BL, { 0, -0.10, -1 } }, { P_LEG_BR, { 0, -0.10, -1 } },           /* 10, 11 hocks */
        { P_LEG_BL, { 0, -0.7, 0.7 } }, { P_LEG_BR, { 0, -0.7, 0.7 } },             /* 12, 13 back hooves */
        { P_TAIL, { 0, 0.25, -1 } },                                                  /* 14 tail tip */
        { P_BODY, { 0, 1, -0.20 } },                                               /* 15 back */
        { P_BODY, { 0.85, 0.25, 0.55 } }, { P_BODY, { -0.85, 0.25, 0.55 } },      /* 16, 17 shoulders */
        { P_BODY, { 0.85, 0.30, -0.55 } }, { P_BODY, { -0.85, 0.30, -0.55 } } },  /* 18, 19 hips */
      { { 120, 82, 54 }, { 112, 76, 50 }, { 128, 90, 60 }, { 84, 60, 40 }, { 76, 54, 36 }, { 40, 30, 24 } } },
};

const char *sa3d_synth3d_category(int i) {
    return i >= 0 && i < SA3D_SYNTH3D_N_CATEGORIES ? shapes[i].name : NULL;
}

/* ---- small linear algebra ------------------------------------------------------------------------------------ */

static void mat_vec(const double M[3][3], const double x[3], double y[3]) {
    for (int i = 0; i < 3; i++) y[i] = M[i][0] * x[0] + M[i][1] * x[1] + M[i][2] * x[2];
}
static void mat_t_vec(const double M[3][3], const double x[3], double y[3]) {
    for (int i = 0; i < 3; i++) y[i] = M[0][i] * x[0] + M[1][i] * x[1] + M[2][i] * x[2];
}
static void mat_mul(const double A[3][3], const double B[3][3], double C[3][3]) {
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) C[i][j] = A[i][0] * B[0][j] + A[i][1] * B[1][j] + A[i][2] * B[2][j];
}
static void normalize3(double v[3]) {
    double n = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    if (n > 0) for (int i = 0; i < 3; i++) v[i] /= n;
}
static void cross3(const double a[3], const double b[3], double c[3]) {
    c[0] = a[1] * b[2] - a[2] * b[1];
    c[1] = a[2] * b[0] - a[0] * b[2];
    c[2] = a[0] * b[1] - a[1] * b[0];
}
static double rad(double deg) { return deg * PI / 180.0; }

/* ---- posing and ray casting ---------------------------------------------------------------------------------- */

typedef struct posed {
    int n;
    double Rw[MAX_PARTS][3][3], Tw[MAX_PARTS][3], off[MAX_PARTS][3], ax[MAX_PARTS][3];
} posed;

/* World (object-frame) transforms of every part for the given overall size, part scales and hinges (degrees). */
static void pose_parts(const shape_def *sh, double size, const double *scale, const double *hinge, posed *out) {
    out->n = sh->n_parts;
    for (int p = 0; p < sh->n_parts; p++) {
        const part_def *pd = &sh->parts[p];
        double sp = size * scale[p], spar = pd->parent >= 0 ? size * scale[pd->parent] : size;
        double pivot[3] = { pd->pivot[0] * spar, pd->pivot[1] * spar, pd->pivot[2] * spar };
        double c = cos(rad(hinge[p])), s = sin(rad(hinge[p]));
        double Rx[3][3] = { { 1, 0, 0 }, { 0, c, -s }, { 0, s, c } };
        if (pd->parent >= 0) {
            mat_vec(out->Rw[pd->parent], pivot, out->Tw[p]);
            for (int i = 0; i < 3; i++) out->Tw[p][i] += out->Tw[pd->parent][i];
            mat_mul(out->Rw[pd->parent], Rx, out->Rw[p]);
        } else {
            memcpy(out->Tw[p], pivot, sizeof pivot);
            memcpy(out->Rw[p], Rx, sizeof Rx);
        }
        for (int i = 0; i < 3; i++) {
            out->off[p][i] = pd->offset[i] * sp;
            out->ax[p][i] = pd->axes[i] * sp;
        }
    }
}

static void pose_canonical(const shape_def *sh, posed *out) {
    double scale[MAX_PARTS], hinge[MAX_PARTS];
    for (int p = 0; p < MAX_PARTS; p++) {
        scale[p] = 1.0;
        hinge[p] = p < sh->n_parts ? sh->parts[p].hinge0 : 0.0;
    }
    pose_parts(sh, 1.0, scale, hinge, out);
}

/* Object-frame point of part p at unit-sphere coordinates e. */
static void part_point(const posed *P, int p, const double e[3], double X[3]) {
    double q[3];
    for (int i = 0; i < 3; i++) q[i] = P->off[p][i] + P->ax[p][i] * e[i];
    mat_vec(P->Rw[p], q, X);
    for (int i = 0; i < 3; i++) X[i] += P->Tw[p][i];
}

/* Per-scene ray caster: for part p, the unit-sphere point along the camera ray d = ((u-cx)/f, (v-cy)/f, 1) is
 * A[p] + Z N[p] d, Z the camera depth; the camera-frame normal there is G[p] e (unnormalised). */
typedef struct tracer {
    const sa3d_synth3d_scene *s;
    const shape_def *sh;
    posed inst, canon;
    double A[MAX_PARTS][3], N[MAX_PARTS][3][3], G[MAX_PARTS][3][3];
} tracer;

static void tracer_init(tracer *tr, const sa3d_synth3d_scene *s) {
    tr->s = s;
    tr->sh = &shapes[s->category];
    pose_parts(tr->sh, s->size, s->scale, s->hinge, &tr->inst);
    pose_canonical(tr->sh, &tr->canon);
    double O[3], mt[3] = { -s->t[0], -s->t[1], -s->t[2] };
    mat_t_vec(s->R, mt, O);   /* camera centre in the object frame */
    for (int p = 0; p < tr->inst.n; p++) {
        const double *ax = tr->inst.ax[p];
        double M[3][3], RwR[3][3];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) M[i][j] = tr->inst.Rw[p][j][i] / ax[i];   /* diag(1/ax) Rw^T */
        double d[3] = { O[0] - tr->inst.Tw[p][0], O[1] - tr->inst.Tw[p][1], O[2] - tr->inst.Tw[p][2] };
        mat_vec(M, d, tr->A[p]);
        for (int i = 0; i < 3; i++) tr->A[p][i] -= tr->inst.off[p][i] / ax[i];
        for (int i = 0; i < 3; i++)   /* N = M R^T */
            for (int j = 0; j < 3; j++) tr->N[p][i][j] = M[i][0] * s->R[j][0] + M[i][1] * s->R[j][1] + M[i][2] * s->R[j][2];
        mat_mul(s->R, tr->inst.Rw[p], RwR);   /* G = R Rw diag(1/ax) */
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) tr->G[p][i][j] = RwR[i][j] / ax[j];
    }
}

/* Nearest surface along the ray through (u, v): part index or -1; *Z its depth, e its unit-sphere point. */
static int trace(const tracer *tr, double u, double v, double *Z, double e[3]) {
    const sa3d_synth3d_scene *s = tr->s;
    double d[3] = { (u - s->cx) / s->focal, (v - s->cy) / s->focal, 1.0 }, best = HUGE_VAL;
    int hit = -1;
    for (int p = 0; p < tr->inst.n; p++) {
        double B[3];
        mat_vec(tr->N[p], d, B);
        const double *A = tr->A[p];
        double bb = B[0] * B[0] + B[1] * B[1] + B[2] * B[2], ab = A[0] * B[0] + A[1] * B[1] + A[2] * B[2];
        double cc = A[0] * A[0] + A[1] * A[1] + A[2] * A[2] - 1.0, disc = ab * ab - bb * cc;
        if (disc < 0.0 || bb <= 0.0) continue;
        double z = (-ab - sqrt(disc)) / bb;
        if (z <= 1e-9) z = (-ab + sqrt(disc)) / bb;   /* the camera inside a part: cannot happen in practice */
        if (z > 1e-9 && z < best) {
            best = z;
            hit = p;
        }
    }
    if (hit >= 0) {
        double B[3];
        mat_vec(tr->N[hit], d, B);
        for (int i = 0; i < 3; i++) e[i] = tr->A[hit][i] + best * B[i];
        *Z = best;
    }
    return hit;
}

int sa3d_synth3d_raycast(const sa3d_synth3d_scene *s, double u, double v, double *depth) {
    tracer tr;
    double e[3], Z;
    tracer_init(&tr, s);
    int p = trace(&tr, u, v, &Z, e);
    if (p >= 0 && depth) *depth = Z;
    return p;
}

static int keypoints_traced(const tracer *tr, double (*cam)[3], double (*uv)[2], unsigned char *vis) {
    const sa3d_synth3d_scene *s = tr->s;
    const shape_def *sh = tr->sh;
    for (int k = 0; k < sh->n_slots; k++) {
        double e[3] = { sh->kps[k].dir[0], sh->kps[k].dir[1], sh->kps[k].dir[2] }, X[3], C[3], eh[3], Zh;
        normalize3(e);
        part_point(&tr->inst, sh->kps[k].part, e, X);
        mat_vec(s->R, X, C);
        for (int i = 0; i < 3; i++) C[i] += s->t[i];
        double u = s->focal * C[0] / C[2] + s->cx, v = s->focal * C[1] / C[2] + s->cy;
        int visible = C[2] > 0.0 && u >= 0.0 && v >= 0.0 && u <= s->width - 1 && v <= s->height - 1;
        if (visible) {   /* the z-buffer test; a point just past its own part's silhouette still counts */
            int part = sh->kps[k].part, hit = trace(tr, u, v, &Zh, eh);
            const double *ax = tr->inst.ax[part];
            double slack = hit == part ? VIS_OWN * fmin(ax[0], fmin(ax[1], ax[2])) : 0.0;
            visible = hit >= 0 && Zh >= C[2] * (1.0 - VIS_TOL) - slack;
        }
        if (cam) memcpy(cam[k], C, sizeof C);
        if (uv) { uv[k][0] = u; uv[k][1] = v; }
        if (vis) vis[k] = (unsigned char)visible;
    }
    return sh->n_slots;
}

int sa3d_synth3d_keypoints(const sa3d_synth3d_scene *s, double (*cam)[3], double (*uv)[2], unsigned char *vis) {
    tracer tr;
    tracer_init(&tr, s);
    return keypoints_traced(&tr, cam, uv, vis);
}

/* ---- scenes ---------------------------------------------------------------------------------------------------- */

/* Look-at camera at (azimuth, elevation, roll) degrees and distance from target (object frame). */
static void look_at(sa3d_synth3d_scene *s, const double target[3]) {
    double az = rad(s->azimuth), el = rad(s->elevation), ro = rad(s->roll);
    double C[3] = { target[0] + s->distance * cos(el) * sin(az), target[1] + s->distance * sin(el),
                    target[2] + s->distance * cos(el) * cos(az) };
    double f[3] = { target[0] - C[0], target[1] - C[1], target[2] - C[2] }, up[3] = { 0, 1, 0 }, r[3], dn[3];
    normalize3(f);
    cross3(f, up, r);
    normalize3(r);
    cross3(f, r, dn);
    for (int i = 0; i < 3; i++) {
        s->R[0][i] = cos(ro) * r[i] + sin(ro) * dn[i];
        s->R[1][i] = -sin(ro) * r[i] + cos(ro) * dn[i];
        s->R[2][i] = f[i];
    }
    for (int i = 0; i < 3; i++)   /* t = -R C (written out: GCC's -fsanitize build misjudges mat_vec here) */
        s->t[i] = -(s->R[i][0] * C[0] + s->R[i][1] * C[1] + s->R[i][2] * C[2]);
}

void sa3d_synth3d_scene_canonical(int category, double azimuth, double elevation, double distance, double focal,
                                  int width, int height, sa3d_synth3d_scene *out) {
    memset(out, 0, sizeof *out);
    out->category = category >= 0 && category < SA3D_SYNTH3D_N_CATEGORIES ? category : 0;
    out->width = width;
    out->height = height;
    out->focal = focal;
    out->cx = (width - 1) / 2.0;
    out->cy = (height - 1) / 2.0;
    out->azimuth = azimuth;
    out->elevation = elevation;
    out->distance = distance;
    out->size = 1.0;
    const shape_def *sh = &shapes[out->category];
    for (int p = 0; p < MAX_PARTS; p++) {
        out->scale[p] = 1.0;
        out->hinge[p] = p < sh->n_parts ? sh->parts[p].hinge0 : 0.0;
    }
    double target[3] = { 0, 0, 0 };
    look_at(out, target);
}

void sa3d_synth3d_scene_mirror(const sa3d_synth3d_scene *in, sa3d_synth3d_scene *out) {
    sa3d_synth3d_scene m = *in;
    const shape_def *sh = &shapes[in->category];
    for (int p = 0; p < sh->n_parts; p++) {
        m.scale[p] = in->scale[sh->parts[p].mirror];
        m.hinge[p] = in->hinge[sh->parts[p].mirror];
    }
    static const double M[3] = { -1, 1, 1 };
    for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 3; j++) m.R[i][j] = M[i] * M[j] * in->R[i][j];
        m.t[i] = M[i] * in->t[i];
    }
    m.azimuth = in->azimuth > 0.0 ? 360.0 - in->azimuth : 0.0;
    m.roll = -in->roll;
    *out = m;
}

/* Unit-sphere directions of the 26 neighbours of the origin: the points that bound a part's projection. */
static void sample_dirs(double d[26][3]) {
    int n = 0;
    for (int i = -1; i <= 1; i++)
        for (int j = -1; j <= 1; j++)
            for (int k = -1; k <= 1; k++)
                if (i || j || k) {
                    d[n][0] = i; d[n][1] = j; d[n][2] = k;
                    normalize3(d[n]);
                    n++;
                }
}

/* Projected extent of the instance's sample points: [umin, vmin, umax, vmax]. */
static void projected_box(const sa3d_synth3d_scene *s, const posed *P, double box[4]) {
    double d[26][3];
    sample_dirs(d);
    box[0] = box[1] = HUGE_VAL;
    box[2] = box[3] = -HUGE_VAL;
    for (int p = 0; p < P->n; p++)
        for (int i = 0; i < 26; i++) {
            double X[3], C[3];
            part_point(P, p, d[i], X);
            mat_vec(s->R, X, C);
            for (int j = 0; j < 3; j++) C[j] += s->t[j];
            double z = C[2] > 1e-6 ? C[2] : 1e-6;
            double u = s->focal * C[0] / z + s->cx, v = s->focal * C[1] / z + s->cy;
            if (u < box[0]) box[0] = u;
            if (v < box[1]) box[1] = v;
            if (u > box[2]) box[2] = u;
            if (v > box[3]) box[3] = v;
        }
}

static sa3d_status check_params(const sa3d_synth3d_params *p, sa3d_error *err);

sa3d_status sa3d_synth3d_scene_of(const sa3d_synth3d_params *p, int index, sa3d_synth3d_scene *out,
                                  sa3d_error *err) {
    sa3d_status st;
    if (!p || !out) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_synth3d_scene_of: params or output missing");
    memset(out, 0, sizeof *out);
    if ((st = check_params(p, err))) return st;
    if (index < 0 || index >= p->n_categories * p->images_per_category)
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic 3D: image index %d out of range", index);
    sa3d_synth3d_scene *s = out;
    sa3d_rng r = sa3d_rng_for(p->seed, TAG_SCENE, (uint64_t)index);
    s->category = index / p->images_per_category;
    const shape_def *sh = &shapes[s->category];
    s->width = sa3d_rng_int(&r, p->min_side, p->max_side);
    s->height = sa3d_rng_int(&r, p->min_side, p->max_side);
    s->cx = (s->width - 1) / 2.0;
    s->cy = (s->height - 1) / 2.0;
    s->size = 1.0 + 0.1 * symmetric(&r);
    for (int q = 0; q < MAX_PARTS; q++) { s->scale[q] = 1.0; s->hinge[q] = 0.0; }
    for (int q = 0; q < sh->n_parts; q++) {
        double sc = 1.0 + (double)p->shape_variation * symmetric(&r);
        s->scale[q] = sh->parts[q].mirror < q ? s->scale[sh->parts[q].mirror] : sc;
        s->hinge[q] = sh->parts[q].hinge0 + sh->parts[q].range * (double)p->hinge_variation * symmetric(&r);
    }
    s->azimuth = 360.0 * sa3d_rng_uniform(&r);
    s->elevation = (double)p->elevation_min + ((double)p->elevation_max - (double)p->elevation_min) * sa3d_rng_uniform(&r);
    s->roll = (double)p->roll_max * symmetric(&r);
    int S = s->width > s->height ? s->width : s->height;
    s->focal = (1.2 + 1.8 * sa3d_rng_uniform(&r)) * S;
    double fill = 0.45 + 0.40 * sa3d_rng_uniform(&r), ox = symmetric(&r), oy = symmetric(&r);

    posed P;
    pose_parts(sh, s->size, s->scale, s->hinge, &P);
    double box[4], lo[3] = { HUGE_VAL, HUGE_VAL, HUGE_VAL }, hi[3] = { -HUGE_VAL, -HUGE_VAL, -HUGE_VAL }, d[26][3];
    sample_dirs(d);
    for (int q = 0; q < P.n; q++)
        for (int i = 0; i < 26; i++) {
            double X[3];
            part_point(&P, q, d[i], X);
            for (int j = 0; j < 3; j++) {
                if (X[j] < lo[j]) lo[j] = X[j];
                if (X[j] > hi[j]) hi[j] = X[j];
            }
        }
    double target[3] = { (lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2 };
    s->distance = 3.0 * s->focal / S;
    for (int it = 0; it < 6; it++) {   /* distance for the wanted fill (extent ~ 1 / distance) */
        look_at(s, target);
        projected_box(s, &P, box);
        double ext = fmax((box[2] - box[0]) / s->width, (box[3] - box[1]) / s->height), ratio = ext / fill;
        ratio = ratio < 0.5 ? 0.5 : (ratio > 2.0 ? 2.0 : ratio);
        s->distance *= ratio;
    }
    look_at(s, target);
    for (int it = 0; it < 3; it++) {   /* shift in the image plane: centred plus a random offset in the slack */
        projected_box(s, &P, box);
        double bw = box[2] - box[0], bh = box[3] - box[1];
        double want_u = s->cx + ox * 0.8 * fmax(0.0, (s->width - bw) / 2.0);
        double want_v = s->cy + oy * 0.8 * fmax(0.0, (s->height - bh) / 2.0);
        s->t[0] += (want_u - (box[0] + box[2]) / 2) * s->distance / s->focal;
        s->t[1] += (want_v - (box[1] + box[3]) / 2) * s->distance / s->focal;
    }
    return SA3D_OK;
}

/* ---- features --------------------------------------------------------------------------------------------------- */

/* The random tables of one category: two random Fourier feature banks, class codes and view vectors. */
typedef struct feat_tables {
    int C;
    float *Wa, *ba, *Wb, *bb;   /* [C][3], [C] */
    float *cls;                 /* [N_CLASSES][C] */
    float *view;                /* [3][C] */
    float *block;
} feat_tables;

static sa3d_status tables_make(feat_tables *t, const sa3d_synth3d_params *p, int category, sa3d_error *err) {
    int C = p->feature_channels;
    memset(t, 0, sizeof *t);
    t->C = C;
    if (!(t->block = sa3d_malloc((size_t)C * (3 + 1 + 3 + 1 + N_CLASSES + 3) * sizeof(float))))
        return sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic 3D: out of memory for the feature tables");
    t->Wa = t->block;
    t->ba = t->Wa + 3 * C;
    t->Wb = t->ba + C;
    t->bb = t->Wb + 3 * C;
    t->cls = t->bb + C;
    t->view = t->cls + N_CLASSES * C;
    sa3d_rng r = sa3d_rng_for(p->seed, TAG_TABLES, (uint64_t)category);
    for (int i = 0; i < 3 * C; i++) t->Wa[i] = p->feature_frequency * sa3d_rng_normal_portable(&r);
    for (int i = 0; i < C; i++) t->ba[i] = (float)(2.0 * PI * sa3d_rng_uniform(&r));
    for (int i = 0; i < 3 * C; i++) t->Wb[i] = p->feature_frequency * sa3d_rng_normal_portable(&r);
    for (int i = 0; i < C; i++) t->bb[i] = (float)(2.0 * PI * sa3d_rng_uniform(&r));
    for (int k = 0; k < N_CLASSES; k++) sa3d_rng_unit_vector(t->cls + (size_t)k * C, C, &r);
    for (int k = 0; k < 3; k++) sa3d_rng_unit_vector(t->view + (size_t)k * C, C, &r);
    return SA3D_OK;
}

/* out[C] = the (unnormalised, noise-free) feature of canonical point q of part class cls with camera normal n;
 * side = how much the object's left (+x) faces the camera (-R[2][0]). */
static void feature_at(const feat_tables *t, const sa3d_synth3d_params *p, const double q[3], int cls,
                       const double n[3], double side, float *out) {
    int C = t->C;
    float amp = sqrtf(2.0f / (float)C), sx = (float)fabs(q[0]), sy = (float)q[1], sz = (float)q[2];
    float chi = (p->chirality + p->view_weight * (float)side) * (float)tanh(q[0] / CHIRAL_WIDTH);
    float nx = (float)n[0], ny = (float)n[1], nz = (float)n[2];
    for (int c = 0; c < C; c++) {
        float a = amp * cosf(t->Wa[3 * c] * sx + t->Wa[3 * c + 1] * sy + t->Wa[3 * c + 2] * sz + t->ba[c]);
        float b = amp * cosf(t->Wb[3 * c] * sx + t->Wb[3 * c + 1] * sy + t->Wb[3 * c + 2] * sz + t->bb[c]);
        float v = nx * t->view[c] + ny * t->view[C + c] + nz * t->view[2 * C + c];
        out[c] = a + CLASS_WEIGHT * t->cls[(size_t)cls * C + c] + chi * b + 0.5f * p->view_weight * v;
    }
}

static void features_traced(const tracer *tr, const feat_tables *t, const sa3d_synth3d_params *p, int flip, sa3d_rng *rn,
                            float *F, float *tmp) {
    const sa3d_synth3d_scene *s = tr->s;
    int C = p->feature_channels, g = p->feature_grid, cells = g * g;
    float cell_px = (float)p->input_size / (float)g, nscale = p->feature_noise / sqrtf((float)C);
    for (int i = 0; i < cells; i++) {
        float x = ((float)(i % g) + 0.5f) * cell_px, y = ((float)(i / g) + 0.5f) * cell_px, u, v;
        sa3d_geoaware_from_square(s->width, s->height, p->input_size, x, y, &u, &v);
        int part = -1;
        double e[3], Z;
        if (u >= -0.5f && v >= -0.5f && u <= (float)s->width - 0.5f && v <= (float)s->height - 0.5f) {
            double uu = flip ? (double)(s->width - 1) - (double)u : (double)u;
            part = trace(tr, uu, (double)v, &Z, e);
        }
        if (part < 0) {
            sa3d_rng_unit_vector(tmp, C, rn);
        } else {
            double q[3], n[3];
            part_point(&tr->canon, part, e, q);
            mat_vec(tr->G[part], e, n);
            normalize3(n);
            double side = -s->R[2][0];
            if (flip) { q[0] = -q[0]; n[0] = -n[0]; side = -side; }
            feature_at(t, p, q, tr->sh->parts[part].cls, n, side, tmp);
            double ss = 0.0;
            for (int c = 0; c < C; c++) {
                tmp[c] += nscale * sa3d_rng_normal_portable(rn);
                ss += (double)tmp[c] * (double)tmp[c];
            }
            float inv = (float)(1.0 / sqrt(ss > 0.0 ? ss : 1.0));
            for (int c = 0; c < C; c++) tmp[c] *= inv;
        }
        for (int c = 0; c < C; c++) F[(size_t)c * cells + i] = tmp[c];
    }
}

sa3d_status sa3d_synth3d_feature_map(const sa3d_synth3d_params *p, const sa3d_synth3d_scene *s, int flip,
                                     uint64_t noise_stream, float *F, sa3d_error *err) {
    sa3d_status st;
    if (!p || !s || !F) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_synth3d_feature_map: argument missing");
    if ((st = check_params(p, err))) return st;
    if (s->category < 0 || s->category >= SA3D_SYNTH3D_N_CATEGORIES || s->width < 1 || s->height < 1)
        return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_synth3d_feature_map: bad scene");
    feat_tables t;
    if ((st = tables_make(&t, p, s->category, err))) return st;
    float *tmp = sa3d_malloc((size_t)p->feature_channels * sizeof(float));
    if (!tmp) {
        sa3d_free(t.block);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic 3D: out of memory");
    }
    tracer tr;
    tracer_init(&tr, s);
    sa3d_rng rn = sa3d_rng_for(p->seed, TAG_NOISE, noise_stream);
    features_traced(&tr, &t, p, flip != 0, &rn, F, tmp);
    sa3d_free(tmp);
    sa3d_free(t.block);
    return SA3D_OK;
}

/* ---- parameters ----------------------------------------------------------------------------------------------- */

sa3d_synth3d_params sa3d_synth3d_params_default(int difficulty) {
    static const float noise[3] = { 0.15f, 0.30f, 0.45f }, chir[3] = { 0.60f, 0.20f, 0.10f },
                       view[3] = { 0.25f, 0.70f, 0.90f }, shape[3] = { 0.05f, 0.10f, 0.15f },
                       hinge[3] = { 0.5f, 1.0f, 1.5f }, el0[3] = { 0, -15, -30 }, el1[3] = { 30, 45, 60 },
                       roll[3] = { 0, 5, 15 }, dn[3] = { 0.01f, 0.02f, 0.04f }, dd[3] = { 0.1f, 0.25f, 0.4f };
    int d = difficulty >= SA3D_SYNTH3D_EASY && difficulty <= SA3D_SYNTH3D_HARD ? difficulty : SA3D_SYNTH3D_MEDIUM;
    sa3d_synth3d_params p;
    memset(&p, 0, sizeof p);
    p.difficulty = d;
    p.n_categories = 1;
    p.images_per_category = 60;
    p.pairs_trn = 150;
    p.pairs_val = 30;
    p.pairs_test = 200;
    p.min_side = 192;
    p.max_side = 256;
    p.feature_channels = 64;
    p.feature_grid = 60;
    p.input_size = 840;
    p.feature_noise = noise[d];
    p.chirality = chir[d];
    p.view_weight = view[d];
    p.feature_frequency = 6.0f;
    p.shape_variation = shape[d];
    p.hinge_variation = hinge[d];
    p.elevation_min = el0[d];
    p.elevation_max = el1[d];
    p.roll_max = roll[d];
    p.depth_noise = dn[d];
    p.depth_distortion = dd[d];
    return p;
}

int sa3d_synth3d_difficulty_parse(const char *name) {
    static const char *const names[3] = { "easy", "medium", "hard" };
    for (int i = 0; name && i < 3; i++)
        if (!strcmp(name, names[i])) return i;
    return -1;
}

static sa3d_status check_int(const char *name, long v, long lo, long hi, sa3d_error *err) {
    if (v < lo || v > hi)
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic 3D: %s = %ld; expected %ld to %ld", name, v, lo, hi);
    return SA3D_OK;
}

static sa3d_status check_float(const char *name, float v, double lo, double hi, sa3d_error *err) {
    if (!((double)v >= lo && (double)v <= hi))
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic 3D: %s = %g; expected %g to %g", name, (double)v, lo, hi);
    return SA3D_OK;
}

static sa3d_status check_params(const sa3d_synth3d_params *p, sa3d_error *err) {
    sa3d_status s;
    if ((s = check_int("difficulty", p->difficulty, 0, 2, err)) ||
        (s = check_int("n_categories", p->n_categories, 1, SA3D_SYNTH3D_N_CATEGORIES, err)) ||
        (s = check_int("images_per_category", p->images_per_category, 12, MAX_IMAGES, err)) ||
        (s = check_int("pairs_trn", p->pairs_trn, 0, MAX_PAIRS, err)) ||
        (s = check_int("pairs_val", p->pairs_val, 0, MAX_PAIRS, err)) ||
        (s = check_int("pairs_test", p->pairs_test, 0, MAX_PAIRS, err)) ||
        (s = check_int("min_side", p->min_side, 64, 2048, err)) ||
        (s = check_int("max_side", p->max_side, p->min_side, 2048, err)) ||
        (s = check_int("feature_channels", p->feature_channels, 4, 4096, err)) ||
        (s = check_int("feature_grid", p->feature_grid, 4, 512, err)) ||
        (s = check_int("input_size", p->input_size, p->feature_grid, 16384, err)) ||
        (s = check_float("feature_noise", p->feature_noise, 0, 10, err)) ||
        (s = check_float("chirality", p->chirality, 0, 10, err)) ||
        (s = check_float("view_weight", p->view_weight, 0, 10, err)) ||
        (s = check_float("feature_frequency", p->feature_frequency, 0.1, 100, err)) ||
        (s = check_float("shape_variation", p->shape_variation, 0, 0.5, err)) ||
        (s = check_float("hinge_variation", p->hinge_variation, 0, 3, err)) ||
        (s = check_float("elevation_min", p->elevation_min, -89, 89, err)) ||
        (s = check_float("elevation_max", p->elevation_max, (double)p->elevation_min, 89, err)) ||
        (s = check_float("roll_max", p->roll_max, 0, 90, err)) ||
        (s = check_float("depth_noise", p->depth_noise, 0, 1, err)) ||
        (s = check_float("depth_distortion", p->depth_distortion, 0, 0.9, err)))
        return s;
    if (p->n_threads < 0) return sa3d_fail(err, SA3D_ERR_ARG, "synthetic 3D: n_threads = %d; expected >= 0", p->n_threads);
    return SA3D_OK;
}

/* ---- text output ---------------------------------------------------------------------------------------------- */


char *sa3d_synth3d_params_json(const sa3d_synth3d_params *p) {
    static const char *const dnames[3] = { "easy", "medium", "hard" };
    sa3d_sbuf b = { 0 };
    sa3d_sb_printf(&b, "{\"generator\": \"sa3d_synth3d_write\", \"semalign3d_version\": \"%s\", \"seed\": %llu, "
                  "\"difficulty\": \"%s\", \"n_categories\": %d, \"categories\": [",
              sa3d_version(), (unsigned long long)p->seed,
              p->difficulty >= 0 && p->difficulty < 3 ? dnames[p->difficulty] : "?", p->n_categories);
    for (int c = 0; c < p->n_categories && c < SA3D_SYNTH3D_N_CATEGORIES; c++)
        sa3d_sb_printf(&b, "%s\"%s\"", c ? ", " : "", shapes[c].name);
    sa3d_sb_printf(&b, "], \"images_per_category\": %d, \"pairs_trn\": %d, \"pairs_val\": %d, \"pairs_test\": %d, "
                  "\"min_side\": %d, \"max_side\": %d, \"feature_channels\": %d, \"feature_grid\": %d, "
                  "\"input_size\": %d, \"feature_noise\": %.9g, \"chirality\": %.9g, \"view_weight\": %.9g, "
                  "\"feature_frequency\": %.9g, \"shape_variation\": %.9g, \"hinge_variation\": %.9g, "
                  "\"elevation_min\": %.9g, \"elevation_max\": %.9g, \"roll_max\": %.9g, \"depth_noise\": %.9g, "
                  "\"depth_distortion\": %.9g}\n",
              p->images_per_category, p->pairs_trn, p->pairs_val, p->pairs_test, p->min_side, p->max_side,
              p->feature_channels, p->feature_grid, p->input_size, (double)p->feature_noise, (double)p->chirality,
              (double)p->view_weight, (double)p->feature_frequency, (double)p->shape_variation,
              (double)p->hinge_variation, (double)p->elevation_min, (double)p->elevation_max, (double)p->roll_max,
              (double)p->depth_noise, (double)p->depth_distortion);
    char *out = b.failed ? NULL : malloc(b.len + 1);
    if (out) memcpy(out, b.s, b.len + 1);
    sa3d_free(b.s);
    return out;
}

/* ---- the dataset ----------------------------------------------------------------------------------------------- */

typedef struct s3_image {
    char id[32];
    int split;                       /* 0 trn, 1 val, 2 test */
    sa3d_synth3d_scene scene;
    int azimuth_id;
    int kp[N_KEYS][2];
    unsigned char vis[N_KEYS];
    int bbox[4], truncated;          /* from the rendered mask */
} s3_image;

typedef struct s3 {
    const char *root;
    sa3d_synth3d_params p;
    int n_images;
    s3_image *images;
    feat_tables tables[SA3D_SYNTH3D_N_CATEGORIES];
    sa3d_synth_pair *pairs[SA3D_SYNTH_N_SPLITS];
    int n_pairs[SA3D_SYNTH_N_SPLITS];
} s3;

static const char *pose_name(int azimuth_id) {
    return azimuth_id == 0 ? "Frontal" : azimuth_id < 4 ? "Left" : azimuth_id == 4 ? "Rear" : "Right";
}

static int split_of(int j, int n) { return j < n / 2 ? 0 : (j < n / 2 + n / 6 ? 1 : 2); }

static void make_image(s3 *sy, int gi) {
    s3_image *im = &sy->images[gi];
    snprintf(im->id, sizeof im->id, "synth3d_%06d", gi + 1);
    im->split = split_of(gi % sy->p.images_per_category, sy->p.images_per_category);
    sa3d_error e;
    sa3d_synth3d_scene_of(&sy->p, gi, &im->scene, &e);   /* parameters already checked */
    im->azimuth_id = (int)floor(im->scene.azimuth / 45.0 + 0.5) % 8;
    double uv[N_KEYS][2];
    unsigned char vis[N_KEYS];
    int n = sa3d_synth3d_keypoints(&im->scene, NULL, uv, vis);
    for (int k = 0; k < n; k++) {
        im->vis[k] = vis[k];
        im->kp[k][0] = (int)floor(uv[k][0] + 0.5);
        im->kp[k][1] = (int)floor(uv[k][1] + 0.5);
    }
}

static int common_kps(const s3_image *a, const s3_image *b) {
    int n = 0;
    for (int k = 0; k < N_KEYS; k++) n += a->vis[k] && b->vis[k];
    return n;
}

/* sa3d_synth_pair_plan.candidates: the ordered pairs of one split's images of a category sharing a
 * keypoint. */
static int pair_candidates(void *ctx, int split, int ci, int *valid, sa3d_error *err) {
    const s3 *sy = ctx;
    int n = sy->p.images_per_category, first = ci * n, n_valid = 0;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
            if (a != b && split_of(a, n) == split && split_of(b, n) == split &&
                common_kps(&sy->images[first + a], &sy->images[first + b]) > 0)
                valid[n_valid++] = a * n + b;
    int in_split = 0;
    for (int a = 0; a < n; a++) in_split += split_of(a, n) == split;
    if (n_valid == 0)   /* few images in a split may all face different ways: more of them, or other views */
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic 3D: %s: no two of the %d %s images share a visible keypoint; "
                         "give more --images (%d per category now) or another --seed", shapes[ci].name, in_split,
                         sa3d_synth_split_names[split], n), -1;
    return n_valid;
}

/* Pixels: rendered RGB, mask and disparity; also fills the image's bbox and truncated flag. */
static sa3d_status render(const s3 *sy, const tracer *tr, int gi, s3_image *im, float *disp, sa3d_error *err) {
    const sa3d_synth3d_scene *s = &im->scene;
    const shape_def *sh = tr->sh;
    int W = s->width, H = s->height;
    size_t n = (size_t)W * H;
    uint8_t *rgb = sa3d_malloc(3 * n), *mask = sa3d_malloc(n);
    char path[4096];
    sa3d_status st = SA3D_OK;
    if (!rgb || !mask) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory for the image", sh->name, im->id);
        goto done;
    }
    sa3d_rng r = sa3d_rng_for(sy->p.seed, TAG_RENDER, (uint64_t)gi);
    int bg0[3], bg1[3];
    for (int i = 0; i < 3; i++) {
        bg0[i] = sa3d_rng_int(&r, 40, 220);
        bg1[i] = sa3d_rng_int(&r, 40, 220);
    }
    double gamma = 1.0 + (double)sy->p.depth_distortion * symmetric(&r), da = 0.5 + 1.5 * sa3d_rng_uniform(&r),
           db = 0.5 * sa3d_rng_uniform(&r), dnoise = (double)sy->p.depth_noise * da;
    double zn = s->distance - 1.6 * s->size, zf = s->distance + 1.6 * s->size;
    if (zn < 0.1 * s->distance) zn = 0.1 * s->distance;
    double L[3] = { -0.4, -0.5, -0.75 };
    normalize3(L);
    int x0 = W, y0 = H, x1 = -1, y1 = -1;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            double Z, e[3];
            int part = trace(tr, x, y, &Z, e);
            uint64_t v = sa3d_rng_u64(&r);
            float dn = sa3d_rng_normal_portable(&r);
            if (part < 0) {
                double a = (double)y / (H > 1 ? H - 1 : 1);
                for (int c = 0; c < 3; c++) {
                    int val = (int)floor(bg0[c] + a * (bg1[c] - bg0[c]) + 0.5) + (int)((v >> (8 * c)) & 0xFF) % 21 - 10;
                    rgb[3 * i + c] = (uint8_t)(val < 0 ? 0 : (val > 255 ? 255 : val));
                }
                mask[i] = 0;
                disp[i] = (float)(0.7 * db + dnoise * (double)dn);
                continue;
            }
            double nrm[3], q[3];
            mat_vec(tr->G[part], e, nrm);
            normalize3(nrm);
            part_point(&tr->canon, part, e, q);
            double lam = nrm[0] * L[0] + nrm[1] * L[1] + nrm[2] * L[2];
            double shade = (0.25 + 0.75 * (lam > 0 ? lam : 0)) * (0.85 + 0.15 * sin(9.0 * q[2] + 5.0 * q[1]));
            const unsigned char *col = sh->colour[sh->parts[part].cls];
            for (int c = 0; c < 3; c++) {
                int val = (int)floor(col[c] * shade * 1.3 + 0.5) + (int)((v >> (8 * c)) & 0xFF) % 7 - 3;
                rgb[3 * i + c] = (uint8_t)(val < 0 ? 0 : (val > 255 ? 255 : val));
            }
            mask[i] = 1;
            double rr = (1.0 / Z - 1.0 / zf) / (1.0 / zn - 1.0 / zf);
            rr = rr < 0 ? 0 : (rr > 1 ? 1 : rr);
            disp[i] = (float)(da * pow(rr, gamma) + db + dnoise * (double)dn);
            if (x < x0) x0 = x;
            if (y < y0) y0 = y;
            if (x > x1) x1 = x;
            if (y > y1) y1 = y;
        }
    if (x1 < 0) x0 = y0 = x1 = y1 = 0;
    im->bbox[0] = x0;
    im->bbox[1] = y0;
    im->bbox[2] = x1;
    im->bbox[3] = y1;
    im->truncated = x1 >= 0 && (x0 == 0 || y0 == 0 || x1 == W - 1 || y1 == H - 1);
    if (!(st = sa3d_synth_image_path(path, sizeof path, sy->root, SA3D_SYNTH_JPEG_IMAGES, sh->name, im->id,
                                     err)))
        st = sa3d_jpeg_write(path, rgb, W, H, 3, JPEG_QUALITY, err);
    if (!st && !(st = sa3d_synth_image_path(path, sizeof path, sy->root, SA3D_SYNTH_SEGMENTATION, sh->name,
                                            im->id, err)))
        st = sa3d_png_write(path, mask, W, H, 1, err);
done:
    sa3d_free(rgb);
    sa3d_free(mask);
    return st;
}

static sa3d_status write_depth(const s3 *sy, const s3_image *im, const float *disp, sa3d_error *err) {
    char path[4096];
    const char *cat = shapes[im->scene.category].name;
    sa3d_status st = sa3d_synth_image_path(path, sizeof path, sy->root, SA3D_SYNTH_DEPTH, cat, im->id, err);
    if (st) return st;
    sa3d_st_writer *w = sa3d_st_writer_new();
    if (!w) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    int64_t shape[2] = { im->scene.height, im->scene.width };
    if (!(st = sa3d_st_writer_add_f32(w, "depth", 2, shape, disp, err)) &&
        !(st = sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), err)) &&
        !(st = sa3d_st_writer_set_metadata(w, "model_id", "synthetic", err)) &&
        !(st = sa3d_st_writer_set_metadata(w, "synthetic", "relative disparity (sa3d_synth3d_write)", err)))
        st = sa3d_st_writer_write(w, path, err);
    sa3d_st_writer_free(w);
    return st;
}

static sa3d_status write_features(const s3 *sy, const tracer *tr, int gi, const s3_image *im, sa3d_error *err) {
    const sa3d_synth3d_params *p = &sy->p;
    const char *cat = shapes[im->scene.category].name;
    int C = p->feature_channels, g = p->feature_grid;
    size_t n = (size_t)C * g * g;
    float *F = sa3d_malloc(n * sizeof(float)), *Ff = sa3d_malloc(n * sizeof(float));
    float *tmp = sa3d_malloc((size_t)C * sizeof(float));
    sa3d_status st = SA3D_OK;
    if (!F || !Ff || !tmp) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory for the feature map", cat, im->id);
        goto done;
    }
    const feat_tables *t = &sy->tables[im->scene.category];
    sa3d_rng rn = sa3d_rng_for(p->seed, TAG_NOISE, 2 * (uint64_t)gi), rf = sa3d_rng_for(p->seed, TAG_NOISE, 2 * (uint64_t)gi + 1);
    features_traced(tr, t, p, 0, &rn, F, tmp);
    features_traced(tr, t, p, 1, &rf, Ff, tmp);
    st = sa3d_synth_write_features(sy->root, cat, im->id, F, Ff, C, g, p->input_size,
                                   "3D rendering, mirror-ambiguous (sa3d_synth3d_write)", err);
done:
    sa3d_free(F);
    sa3d_free(Ff);
    sa3d_free(tmp);
    return st;
}

/* The SPair records of an image and of a pair, from this generator's geometry. */
static void image_record(const s3_image *im, sa3d_synth_image_record *r) {
    *r = (sa3d_synth_image_record){ .id = im->id, .category = shapes[im->scene.category].name,
                                    .database = "semalign3d synthetic 3D", .annotation = "sa3d_synth3d_write",
                                    .pose = pose_name(im->azimuth_id), .width = im->scene.width,
                                    .height = im->scene.height, .azimuth_id = im->azimuth_id,
                                    .truncated = im->truncated, .occluded = 0, .n_kps = N_KEYS,
                                    .kp = &im->kp[0][0], .vis = im->vis };
    memcpy(r->bbox, im->bbox, sizeof r->bbox);
}

static int is_side(int az) { return az == 0 || az == 4 ? 0 : (az < 4 ? 1 : 2); }

static void pair_record(const s3 *sy, const sa3d_synth_pair *pr, sa3d_synth_pair_record *r) {
    const s3_image *a = &sy->images[pr->src], *t = &sy->images[pr->trg];
    r->num = pr->num;
    image_record(a, &r->src);
    image_record(t, &r->trg);
    int sa = is_side(a->azimuth_id), sb = is_side(t->azimuth_id);
    r->mirror = sa && sb && sa != sb;   /* seen from opposite sides; frontal and rear views never */
}

/* ImageAnnotation/<cat>/<id>.json; the slots past the category's n_slots are never visible. */
static sa3d_status write_image_record(const s3 *sy, const s3_image *im, sa3d_error *err) {
    sa3d_synth_image_record r;
    image_record(im, &r);
    return sa3d_synth_write_image_record(sy->root, &r, err);
}

/* GroundTruth/<cat>/<id>.json: camera, instance and every slot in 3D. */
static sa3d_status write_ground_truth(const s3 *sy, const tracer *tr, const s3_image *im, sa3d_error *err) {
    const sa3d_synth3d_scene *s = &im->scene;
    const shape_def *sh = tr->sh;
    char path[4096];
    sa3d_status st = sa3d_synth_image_path(path, sizeof path, sy->root, SA3D_SYNTH_GROUND_TRUTH, sh->name,
                                           im->id, err);
    if (st) return st;
    double cam[N_KEYS][3], uv[N_KEYS][2];
    unsigned char vis[N_KEYS];
    int n = keypoints_traced(tr, cam, uv, vis);
    sa3d_sbuf b = { 0 };
    sa3d_sb_printf(&b, "{\"image\": \"%s\", \"category\": \"%s\", \"width\": %d, \"height\": %d, \"focal\": %.17g, "
                  "\"principal_point\": [%.17g, %.17g], \"R\": [",
              im->id, sh->name, s->width, s->height, s->focal, s->cx, s->cy);
    for (int i = 0; i < 3; i++)
        sa3d_sb_printf(&b, "%s[%.17g, %.17g, %.17g]", i ? ", " : "", s->R[i][0], s->R[i][1], s->R[i][2]);
    sa3d_sb_printf(&b, "], \"t\": [%.17g, %.17g, %.17g], \"azimuth\": %.17g, \"elevation\": %.17g, \"roll\": %.17g, "
                  "\"distance\": %.17g, \"size\": %.17g, \"parts\": [",
              s->t[0], s->t[1], s->t[2], s->azimuth, s->elevation, s->roll, s->distance, s->size);
    for (int q = 0; q < sh->n_parts; q++) sa3d_sb_printf(&b, "%s\"%s\"", q ? ", " : "", sh->parts[q].name);
    sa3d_sb_printf(&b, "], \"part_scale\": [");
    for (int q = 0; q < sh->n_parts; q++) sa3d_sb_printf(&b, "%s%.17g", q ? ", " : "", s->scale[q]);
    sa3d_sb_printf(&b, "], \"hinge_deg\": [");
    for (int q = 0; q < sh->n_parts; q++) sa3d_sb_printf(&b, "%s%.17g", q ? ", " : "", s->hinge[q]);
    sa3d_sb_printf(&b, "], \"kps_cam\": {");
    for (int k = 0; k < n; k++) sa3d_sb_printf(&b, "%s\"%d\": [%.17g, %.17g, %.17g]", k ? ", " : "", k, cam[k][0], cam[k][1], cam[k][2]);
    sa3d_sb_printf(&b, "}, \"kps_uv\": {");
    for (int k = 0; k < n; k++) sa3d_sb_printf(&b, "%s\"%d\": [%.17g, %.17g]", k ? ", " : "", k, uv[k][0], uv[k][1]);
    sa3d_sb_printf(&b, "}, \"kps_visible\": {");
    for (int k = 0; k < n; k++) sa3d_sb_printf(&b, "%s\"%d\": %d", k ? ", " : "", k, vis[k]);
    sa3d_sb_printf(&b, "}}\n");
    st = sa3d_sb_write(path, &b, err);
    sa3d_free(b.s);
    return st;
}

/* ---- driver ------------------------------------------------------------------------------------------------------ */


/* sa3d_synth_writer callbacks (ctx = the s3). Everything of one image: pixels, depth, features, ground truth,
 * then the image record, which waits for the bbox of the rendered mask. */
static sa3d_status write_image_files(void *ctx, int gi, sa3d_error *err) {
    s3 *sy = ctx;
    s3_image *im = &sy->images[gi];
    tracer tr;
    tracer_init(&tr, &im->scene);
    float *disp = sa3d_malloc((size_t)im->scene.width * im->scene.height * sizeof(float));
    if (!disp) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory for the depth map", im->id);
    sa3d_status st;
    if (!(st = render(sy, &tr, gi, im, disp, err)) && !(st = write_depth(sy, im, disp, err)) &&
        !(st = write_features(sy, &tr, gi, im, err)) && !(st = write_ground_truth(sy, &tr, im, err)))
        st = write_image_record(sy, im, err);
    sa3d_free(disp);
    return st;
}

static void pair_record_at(const void *ctx, int split, int i, sa3d_synth_pair_record *out) {
    const s3 *sy = ctx;
    pair_record(sy, &sy->pairs[split][i], out);
}

static sa3d_status write_dataset(s3 *sy, const char *manifest, sa3d_error *err) {
    /* every image has all six per-category files */
    sa3d_synth_writer w = { .root = sy->root, .cancel = sy->p.cancel, .cancel_user = sy->p.cancel_user,
                            .folders = SA3D_SYNTH_ALL_FOLDERS,
                            .category_name = sa3d_synth3d_category, .n_categories = sy->p.n_categories,
                            .ctx = sy, .n_images = sy->n_images, .write_image = write_image_files,
                            .pair_record = pair_record_at, .manifest = manifest };
    memcpy(w.n_pairs, sy->n_pairs, sizeof w.n_pairs);
    return sa3d_synth_write_dataset(&w, err);
}

sa3d_status sa3d_synth3d_providers(sa3d_dataset *ds, const char *root, sa3d_provider **features,
                                   sa3d_provider **depth, sa3d_provider **masks, sa3d_error *err) {
    *features = *depth = *masks = NULL;
    char fdir[4096], ddir[4096];
    sa3d_provider_params pf = sa3d_provider_params_default(), pd = pf, pm = pf;
    pf.kind = pd.kind = SA3D_SOURCE_IMPORT;
    pf.import_dir = fdir;
    pf.input_size = 0;   /* the dataset's own, whatever it is: the caller's matcher says which size it reads at */
    pd.import_dir = ddir;
    pm.kind = SA3D_SOURCE_SEGMENTATION;
    sa3d_status s;
    if ((s = sa3d_synth_folder_path(fdir, sizeof fdir, root, SA3D_SYNTH_FEATURES, err)) ||
        (s = sa3d_synth_folder_path(ddir, sizeof ddir, root, SA3D_SYNTH_DEPTH, err)) ||
        (s = sa3d_feature_provider_new(features, ds, &pf, err)) || (s = sa3d_depth_provider_new(depth, ds, &pd, err)) ||
        (s = sa3d_mask_provider_new(masks, ds, &pm, err))) {
        sa3d_provider_free(*features);
        sa3d_provider_free(*depth);
        *features = *depth = NULL;
    }
    return s;
}

sa3d_status sa3d_synth3d_write(const char *root, const sa3d_synth3d_params *p, sa3d_error *err) {
    if (!root || !*root || !p) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_synth3d_write: root or params missing");
    sa3d_status st;
    if ((st = check_params(p, err))) return st;
    if (strlen(root) > 3000) return sa3d_fail(err, SA3D_ERR_ARG, "%.100s...: path too long", root);
    if ((st = sa3d_synth_check_root(root, err))) return st;
    char stage[3100];
    int created = 0;
    if ((st = sa3d_synth_stage_begin(stage, sizeof stage, root, &created, err))) return st;
    s3 sy;
    memset(&sy, 0, sizeof sy);
    sy.root = stage;   /* renamed to root once whole */
    sy.p = *p;
    sy.n_images = p->n_categories * p->images_per_category;
    if (!(sy.images = sa3d_calloc((size_t)sy.n_images, sizeof *sy.images))) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic 3D: out of memory");
        goto done;
    }
    for (int c = 0; c < p->n_categories; c++)
        if ((st = tables_make(&sy.tables[c], p, c, err))) goto done;
    sa3d_set_threads(p->n_threads);
    #pragma omp parallel for schedule(static)
    for (int gi = 0; gi < sy.n_images; gi++) make_image(&sy, gi);
    sa3d_synth_pair_plan plan = { .label = "synthetic 3D",
                                  .totals = { p->pairs_trn, p->pairs_val, p->pairs_test },
                                  .n_categories = p->n_categories,
                                  .images_per_category = p->images_per_category, .seed = p->seed,
                                  .tag = TAG_PAIRS, .ctx = &sy, .candidates = pair_candidates };
    if ((st = sa3d_synth_make_pairs(&plan, sy.pairs, sy.n_pairs, err))) goto done;   /* before writing */
    char *manifest = sa3d_synth3d_params_json(p);
    if (!manifest) {
        st = sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic 3D: out of memory");
        goto done;
    }
    st = write_dataset(&sy, manifest, err);
    free(manifest);
done:
    for (int c = 0; c < SA3D_SYNTH3D_N_CATEGORIES; c++) sa3d_free(sy.tables[c].block);
    sa3d_free(sy.images);
    for (int sp = 0; sp < SA3D_SYNTH_N_SPLITS; sp++) sa3d_free(sy.pairs[sp]);
    return sa3d_synth_stage_end(stage, root, created, st, err);
}
