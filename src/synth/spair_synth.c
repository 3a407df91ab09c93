/* Synthetic SPair-71k datasets with a known answer (synth.h): rendered images and masks, image and pair
 * records in the release's exact JSON layout (METHOD.md 1.1-1.6), Layout lists, and GeoAware-frame feature maps
 * whose keypoint cells hold per-keypoint codes (cells as in METHOD.md 2.4-2.5 and sa3d_match_baseline).
 * Owns its random streams (splitmix64 seeding xoshiro256**, one stream per item, so the output does not depend
 * on the thread count); every file goes through the io layer's atomic writers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "base/rng.h"
#include "synth/synth_io.h"
#include "semalign3d/data.h"
#include "semalign3d/image.h"
#include "semalign3d/match.h"
#include "semalign3d/synth.h"

#define N_KEYS 30            /* SPair records carry kps keys "0".."29" for every category (METHOD.md 1.2) */
#define CANON_RADIUS 0.40    /* canonical slots lie in this disk around the box centre (box units) */
#define CANON_MIN_SEP 0.10   /* minimum distance between two canonical slots (box units) */
#define JITTER 0.02          /* per-image displacement of a slot, each axis (box units) */
#define PLACE_TRIES 20       /* re-jitters of a keypoint whose feature cell is taken */
#define JPEG_QUALITY 90
#define MAX_IMAGES 1000      /* per category: the pair sampler keeps images^2 entries */
#define MAX_PAIRS 999999     /* per split: pair numbers have 6 digits */


/* ---- random streams: splitmix64 seeding xoshiro256** (STYLE.md 6), one per (tag, item) -------------------- */

enum { TAG_CATEGORY = 1, TAG_IMAGE, TAG_RENDER, TAG_BACKGROUND, TAG_NOISE, TAG_CODE, TAG_PAIRS };

/* ---- the dataset in memory --------------------------------------------------------------------------------- */

typedef struct synth_category {
    const char *name;
    int slots;                    /* METHOD.md 1.5 */
    int flip[SA3D_MAX_KPS];       /* METHOD.md 1.6 */
    unsigned char used[N_KEYS];   /* slot in use (bus 8, 9 and bicycle 11, 12 are not) */
    int n_used;
    double canon[N_KEYS][2];      /* canonical (a, b) of each slot in box units */
    float *codes;                 /* [N_KEYS][C] unit code vectors */
} synth_category;

typedef struct synth_image {
    char id[32];
    int cat;
    int w, h;
    int bbox[4];                  /* x_min, y_min, x_max, y_max */
    int mirrored, azimuth, truncated, occluded;
    int kp[N_KEYS][2];
    unsigned char vis[N_KEYS];
} synth_image;

typedef struct synth {
    const char *root;
    sa3d_synth_spair_params p;
    int n_cats, n_images;
    synth_category *cats;
    synth_image *images;
    sa3d_synth_pair *pairs[SA3D_SYNTH_N_SPLITS];
    int n_pairs[SA3D_SYNTH_N_SPLITS];
} synth;

/* ---- small helpers ---------------------------------------------------------------------------------------- */

/* Growing text buffer (sa3d_realloc; free with sa3d_free); on allocation failure `failed` is set and later
 * appends do nothing. */

/* The feature cell of original pixel (u, v), exactly as sa3d_match_baseline picks a query cell. */
static int cell_of(int w, int h, int size, int g, float u, float v) {
    float x, y, cell_px = (float)size / (float)g;
    sa3d_geoaware_to_square(w, h, size, u, v, &x, &y);
    int cx = (int)floorf(x / cell_px), cy = (int)floorf(y / cell_px);
    cx = cx < 0 ? 0 : (cx >= g ? g - 1 : cx);
    cy = cy < 0 ? 0 : (cy >= g ? g - 1 : cy);
    return cy * g + cx;
}

/* ---- parameters --------------------------------------------------------------------------------------------- */

sa3d_synth_spair_params sa3d_synth_spair_params_default(void) {
    sa3d_synth_spair_params p;
    memset(&p, 0, sizeof p);
    p.seed = 0;
    p.n_categories = 2;
    p.images_per_category = 6;
    p.pairs_trn = 12;
    p.pairs_val = 4;
    p.pairs_test = 8;
    p.min_side = 160;
    p.max_side = 320;
    p.kp_visible = 0.7f;
    p.feature_channels = 32;
    p.feature_grid = 60;
    p.input_size = 840;
    p.feature_noise = 0.1f;
    p.write_images = p.write_segmentations = p.write_features = p.write_flip_features = 1;
    p.n_threads = 0;
    return p;
}

static sa3d_status check_int(const char *name, long v, long lo, long hi, sa3d_error *err) {
    if (v < lo || v > hi)
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic SPair: %s = %ld; expected %ld to %ld", name, v, lo, hi);
    return SA3D_OK;
}

static sa3d_status check_params(const sa3d_synth_spair_params *p, sa3d_error *err) {
    sa3d_status s;
    if ((s = check_int("n_categories", p->n_categories, 1, SA3D_N_SPAIR_CATEGORIES, err)) ||
        (s = check_int("images_per_category", p->images_per_category, 2, MAX_IMAGES, err)) ||
        (s = check_int("pairs_trn", p->pairs_trn, 0, MAX_PAIRS, err)) ||
        (s = check_int("pairs_val", p->pairs_val, 0, MAX_PAIRS, err)) ||
        (s = check_int("pairs_test", p->pairs_test, 0, MAX_PAIRS, err)) ||
        (s = check_int("min_side", p->min_side, 32, 4096, err)) ||
        (s = check_int("max_side", p->max_side, p->min_side, 4096, err)) ||
        (s = check_int("feature_channels", p->feature_channels, 1, 4096, err)) ||
        (s = check_int("feature_grid", p->feature_grid, 1, 512, err)) ||
        (s = check_int("input_size", p->input_size, p->feature_grid, 16384, err)) ||
        (s = check_int("n_threads", p->n_threads, 0, 4096, err)) ||
        (s = check_int("write_images", p->write_images, 0, 1, err)) ||
        (s = check_int("write_segmentations", p->write_segmentations, 0, 1, err)) ||
        (s = check_int("write_features", p->write_features, 0, 1, err)) ||
        (s = check_int("write_flip_features", p->write_flip_features, 0, 1, err)))
        return s;
    if (!(p->kp_visible > 0.0f && p->kp_visible <= 1.0f))
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic SPair: kp_visible = %g; expected (0, 1]", (double)p->kp_visible);
    if (!(p->feature_noise >= 0.0f && p->feature_noise <= 10.0f))
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic SPair: feature_noise = %g; expected 0 to 10",
                         (double)p->feature_noise);
    return SA3D_OK;
}

char *sa3d_synth_spair_params_json(const sa3d_synth_spair_params *p) {
    sa3d_sbuf b = { 0 };
    sa3d_sb_printf(&b, "{\"generator\": \"sa3d_synth_spair_write\", \"semalign3d_version\": \"%s\", \"seed\": %llu, "
                  "\"n_categories\": %d, \"categories\": [", sa3d_version(), (unsigned long long)p->seed,
              p->n_categories);
    for (int c = 0; c < p->n_categories; c++) {
        const char *name = sa3d_spair_category(c);
        sa3d_sb_printf(&b, "%s\"%s\"", c ? ", " : "", name ? name : "?");
    }
    sa3d_sb_printf(&b, "], \"images_per_category\": %d, \"pairs_trn\": %d, \"pairs_val\": %d, \"pairs_test\": %d, "
                  "\"min_side\": %d, \"max_side\": %d, \"kp_visible\": %.9g, \"feature_channels\": %d, "
                  "\"feature_grid\": %d, \"input_size\": %d, \"feature_noise\": %.9g, \"write_images\": %d, "
                  "\"write_segmentations\": %d, \"write_features\": %d, \"write_flip_features\": %d}\n",
              p->images_per_category, p->pairs_trn, p->pairs_val, p->pairs_test, p->min_side, p->max_side,
              (double)p->kp_visible, p->feature_channels, p->feature_grid, p->input_size, (double)p->feature_noise,
              p->write_images != 0, p->write_segmentations != 0, p->write_features != 0,
              p->write_flip_features != 0);
    char *out = b.failed ? NULL : malloc(b.len + 1);   /* the caller frees with free() */
    if (out) memcpy(out, b.s, b.len + 1);
    sa3d_free(b.s);
    return out;
}

/* ---- geometry ------------------------------------------------------------------------------------------------ */

/* Slots, flip map, used slots, canonical layout and codes of category ci. */
static sa3d_status make_category(synth *sy, int ci, sa3d_error *err) {
    synth_category *c = &sy->cats[ci];
    c->name = sa3d_spair_category(ci);
    c->slots = c->name ? sa3d_spair_flip_map(c->name, c->flip) : -1;
    if (c->slots < 1 || c->slots > N_KEYS)
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic SPair: category %d: no flip map", ci);
    for (int k = 0; k < c->slots; k++) c->used[k] = 1;
    if (!strcmp(c->name, "bus")) c->used[8] = c->used[9] = 0;               /* METHOD.md 1.5 */
    if (!strcmp(c->name, "bicycle")) c->used[11] = c->used[12] = 0;
    for (int k = 0; k < c->slots; k++) c->n_used += c->used[k];

    sa3d_rng r = sa3d_rng_for(sy->p.seed, TAG_CATEGORY, (uint64_t)ci);
    double sep = CANON_MIN_SEP;
    for (int k = 0; k < c->slots; k++) {
        for (int tries = 0;; tries++) {
            if (tries == 2000) { sep *= 0.9; tries = 0; }   /* cannot happen for 30 slots; kept for safety */
            double a = 0.5 + CANON_RADIUS * (2.0 * sa3d_rng_uniform(&r) - 1.0);
            double b = 0.5 + CANON_RADIUS * (2.0 * sa3d_rng_uniform(&r) - 1.0);
            if ((a - 0.5) * (a - 0.5) + (b - 0.5) * (b - 0.5) > CANON_RADIUS * CANON_RADIUS) continue;
            int ok = 1;
            for (int j = 0; j < k && ok; j++) {
                double dx = a - c->canon[j][0], dy = b - c->canon[j][1];
                ok = dx * dx + dy * dy >= sep * sep;
            }
            if (ok) {
                c->canon[k][0] = a;
                c->canon[k][1] = b;
                break;
            }
        }
    }
    int C = sy->p.feature_channels;
    if (!(c->codes = sa3d_malloc((size_t)N_KEYS * C * sizeof(float))))
        return sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic SPair: %s: out of memory", c->name);
    for (int k = 0; k < N_KEYS; k++) {
        sa3d_rng rc = sa3d_rng_for(sy->p.seed, TAG_CODE, (uint64_t)ci * 64 + (uint64_t)k);
        sa3d_rng_unit_vector(c->codes + (size_t)k * C, C, &rc);
    }
    return SA3D_OK;
}

/* Size, bbox, flags and keypoints of global image gi (category ci). */
static void make_image(synth *sy, int ci, int gi) {
    const sa3d_synth_spair_params *p = &sy->p;
    const synth_category *c = &sy->cats[ci];
    synth_image *im = &sy->images[gi];
    sa3d_rng r = sa3d_rng_for(p->seed, TAG_IMAGE, (uint64_t)gi);
    snprintf(im->id, sizeof im->id, "synth_%06d", gi + 1);
    im->cat = ci;
    int w = im->w = sa3d_rng_int(&r, p->min_side, p->max_side);
    int h = im->h = sa3d_rng_int(&r, p->min_side, p->max_side);
    int bw = (int)floor((0.55 + 0.40 * sa3d_rng_uniform(&r)) * w + 0.5), bh = (int)floor((0.55 + 0.40 * sa3d_rng_uniform(&r)) * h + 0.5);
    int x0 = sa3d_rng_int(&r, 1, w - bw - 1 > 1 ? w - bw - 1 : 1), y0 = sa3d_rng_int(&r, 1, h - bh - 1 > 1 ? h - bh - 1 : 1);
    if (sa3d_rng_uniform(&r) < 0.15) {   /* flush with one border: a truncated object */
        switch (sa3d_rng_int(&r, 0, 3)) {
        case 0: x0 = 0; break;
        case 1: x0 = w - bw; break;
        case 2: y0 = 0; break;
        default: y0 = h - bh; break;
        }
    }
    if (x0 + bw > w) x0 = w - bw;
    if (y0 + bh > h) y0 = h - bh;
    im->bbox[0] = x0;
    im->bbox[1] = y0;
    im->bbox[2] = x0 + bw;
    im->bbox[3] = y0 + bh;
    im->truncated = x0 == 0 || y0 == 0 || x0 + bw == w || y0 + bh == h;
    im->mirrored = sa3d_rng_uniform(&r) < 0.5;
    im->azimuth = sa3d_rng_int(&r, 0, 7);
    im->occluded = sa3d_rng_uniform(&r) < 0.2;

    /* visibility: each used slot with probability kp_visible, then more than half of them */
    int count = 0, need = c->n_used / 2 + 1;
    for (int k = 0; k < N_KEYS; k++) {
        double u = sa3d_rng_uniform(&r);
        im->vis[k] = k < c->slots && c->used[k] && u < (double)p->kp_visible;
        count += im->vis[k];
    }
    while (count < need) {
        int k = sa3d_rng_int(&r, 0, c->slots - 1);
        if (c->used[k] && !im->vis[k]) {
            im->vis[k] = 1;
            count++;
        }
    }
    /* positions; a keypoint must own its feature cell in the image and in the mirrored image */
    int cells[N_KEYS] = { 0 }, mcells[N_KEYS] = { 0 }, g = p->feature_grid, S = p->input_size;
    for (int k = 0; k < N_KEYS; k++) {
        if (!im->vis[k]) continue;
        int j = im->mirrored ? c->flip[k] : k, placed = 0;
        for (int t = 0; t < PLACE_TRIES && !placed; t++) {
            double a = c->canon[j][0], b = c->canon[j][1];
            if (im->mirrored) a = 1.0 - a;
            a += JITTER * (2.0 * sa3d_rng_uniform(&r) - 1.0);
            b += JITTER * (2.0 * sa3d_rng_uniform(&r) - 1.0);
            int x = x0 + (int)floor(a * bw + 0.5), y = y0 + (int)floor(b * bh + 0.5);
            x = x < 0 ? 0 : (x > w - 1 ? w - 1 : x);
            y = y < 0 ? 0 : (y > h - 1 ? h - 1 : y);
            int cl = cell_of(w, h, S, g, (float)x, (float)y), mc = cell_of(w, h, S, g, (float)(w - 1 - x), (float)y);
            placed = 1;
            for (int i = 0; i < k && placed; i++)
                if (im->vis[i] && (cells[i] == cl || mcells[i] == mc)) placed = 0;
            if (placed) {
                im->kp[k][0] = x;
                im->kp[k][1] = y;
                cells[k] = cl;
                mcells[k] = mc;
            }
        }
        if (!placed) im->vis[k] = 0;
    }
}

static int common_kps(const synth_image *a, const synth_image *b) {
    int n = 0;
    for (int k = 0; k < N_KEYS; k++) n += a->vis[k] && b->vis[k];
    return n;
}

/* sa3d_synth_pair_plan.candidates: the ordered pairs of the category's images sharing a keypoint; the splits
 * share the images. */
static int pair_candidates(void *ctx, int split, int ci, int *valid, sa3d_error *err) {
    const synth *sy = ctx;
    (void)split;
    int n = sy->p.images_per_category, first = ci * n, n_valid = 0;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
            if (a != b && common_kps(&sy->images[first + a], &sy->images[first + b]) > 0) valid[n_valid++] = a * n + b;
    if (n_valid == 0)
        return sa3d_fail(err, SA3D_ERR_ARG, "synthetic SPair: %s: no two images share a visible keypoint",
                         sy->cats[ci].name), -1;
    return n_valid;
}

/* ---- records -------------------------------------------------------------------------------------------------- */

/* The SPair records of an image and of a pair, from this generator's geometry. */
static void image_record(const synth *sy, const synth_image *im, sa3d_synth_image_record *r) {
    *r = (sa3d_synth_image_record){ .id = im->id, .category = sy->cats[im->cat].name,
                                    .database = "semalign3d synthetic",
                                    .annotation = "sa3d_synth_spair_write",
                                    .pose = im->mirrored ? "Right" : "Left", .width = im->w, .height = im->h,
                                    .azimuth_id = im->azimuth, .truncated = im->truncated,
                                    .occluded = im->occluded, .n_kps = N_KEYS, .kp = &im->kp[0][0],
                                    .vis = im->vis };
    memcpy(r->bbox, im->bbox, sizeof r->bbox);
}

static void pair_record(const synth *sy, const sa3d_synth_pair *pr, sa3d_synth_pair_record *r) {
    const synth_image *a = &sy->images[pr->src], *t = &sy->images[pr->trg];
    r->num = pr->num;
    image_record(sy, a, &r->src);
    image_record(sy, t, &r->trg);
    r->mirror = a->mirrored != t->mirrored;   /* a "Right" image is the mirror of a "Left" one */
}

static sa3d_status write_image_record(const synth *sy, const synth_image *im, sa3d_error *err) {
    sa3d_synth_image_record r;
    image_record(sy, im, &r);
    return sa3d_synth_write_image_record(sy->root, &r, err);
}

/* ---- pixels ------------------------------------------------------------------------------------------------------ */

/* Inside the ellipse inscribed in the bbox, tested at the pixel centre in integer arithmetic. */
static int in_ellipse(const synth_image *im, int x, int y) {
    int64_t bw = im->bbox[2] - im->bbox[0], bh = im->bbox[3] - im->bbox[1];
    int64_t dx = 2 * (int64_t)x + 1 - im->bbox[0] - im->bbox[2], dy = 2 * (int64_t)y + 1 - im->bbox[1] - im->bbox[3];
    return dx * dx * bh * bh + dy * dy * bw * bw <= bw * bw * bh * bh;
}

static sa3d_status write_pixels(const synth *sy, int gi, sa3d_error *err) {
    const synth_image *im = &sy->images[gi];
    const char *cat = sy->cats[im->cat].name;
    size_t n = (size_t)im->w * im->h;
    uint8_t *rgb = sa3d_malloc(3 * n), *mask = sa3d_malloc(n);
    char path[4096];
    sa3d_status s = SA3D_OK;
    if (!rgb || !mask) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory for the image", cat, im->id);
        goto done;
    }
    sa3d_rng r = sa3d_rng_for(sy->p.seed, TAG_RENDER, (uint64_t)gi);
    int c1[3], c2[3], obj[3], period = sa3d_rng_int(&r, 8, 24);
    for (int i = 0; i < 3; i++) {
        c1[i] = sa3d_rng_int(&r, 40, 215);
        c2[i] = sa3d_rng_int(&r, 40, 215);
    }
    obj[0] = (im->cat * 97 + 60) % 200 + 30;   /* one colour per category */
    obj[1] = (im->cat * 53 + 120) % 200 + 30;
    obj[2] = (im->cat * 151 + 20) % 200 + 30;
    int bw = im->bbox[2] - im->bbox[0];
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) {
            size_t i = (size_t)y * im->w + x;
            uint64_t v = sa3d_rng_u64(&r);
            int inside = in_ellipse(im, x, y);
            const int *base = ((x / period + y / period) & 1) ? c1 : c2;
            mask[i] = (uint8_t)inside;
            for (int ch = 0; ch < 3; ch++) {
                int val = inside ? obj[ch] + 40 * (x - im->bbox[0]) / (bw > 0 ? bw : 1) - 20
                                 : base[ch] + (int)((v >> (8 * ch)) & 0xFF) % 25 - 12;
                rgb[3 * i + ch] = (uint8_t)(val < 0 ? 0 : (val > 255 ? 255 : val));
            }
        }
    for (int k = 0; k < N_KEYS; k++) {   /* keypoints as 5 x 5 dots, one colour per id */
        if (!im->vis[k]) continue;
        int col[3] = { (k * 67 + 30) & 255, (k * 131 + 80) & 255, (k * 29 + 160) & 255 };
        for (int y = im->kp[k][1] - 2; y <= im->kp[k][1] + 2; y++)
            for (int x = im->kp[k][0] - 2; x <= im->kp[k][0] + 2; x++)
                if (x >= 0 && y >= 0 && x < im->w && y < im->h)
                    for (int ch = 0; ch < 3; ch++) rgb[3 * ((size_t)y * im->w + x) + ch] = (uint8_t)col[ch];
    }
    if (sy->p.write_images &&
        (!(s = sa3d_synth_image_path(path, sizeof path, sy->root, SA3D_SYNTH_JPEG_IMAGES, cat, im->id, err))))
        s = sa3d_jpeg_write(path, rgb, im->w, im->h, 3, JPEG_QUALITY, err);
    if (!s && sy->p.write_segmentations &&
        (!(s = sa3d_synth_image_path(path, sizeof path, sy->root, SA3D_SYNTH_SEGMENTATION, cat, im->id,
                                     err))))
        s = sa3d_png_write(path, mask, im->w, im->h, 1, err);
done:
    sa3d_free(rgb);
    sa3d_free(mask);
    return s;
}

/* ---- features ---------------------------------------------------------------------------------------------------- */

/* F[C][cells] cell i = normalise(code + noise of norm sigma). */
static void put_code(float *F, int C, int cells, int cell, const float *code, float sigma, sa3d_rng *r, float *tmp) {
    double ss = 0.0;
    float scale = sigma / sqrtf((float)C);
    for (int c = 0; c < C; c++) {
        tmp[c] = code[c] + scale * sa3d_rng_normal_portable(r);
        ss += (double)tmp[c] * (double)tmp[c];
    }
    float inv = (float)(1.0 / sqrt(ss > 0.0 ? ss : 1.0));
    for (int c = 0; c < C; c++) F[(size_t)c * cells + cell] = tmp[c] * inv;
}

static sa3d_status write_features(const synth *sy, int gi, sa3d_error *err) {
    const synth_image *im = &sy->images[gi];
    const synth_category *cat = &sy->cats[im->cat];
    int C = sy->p.feature_channels, g = sy->p.feature_grid, S = sy->p.input_size, cells = g * g;
    int flip = sy->p.write_flip_features != 0;
    size_t n = (size_t)C * cells;
    float *F = sa3d_malloc(n * sizeof(float)), *Ff = flip ? sa3d_malloc(n * sizeof(float)) : NULL;
    float *tmp = sa3d_malloc((size_t)C * sizeof(float));
    sa3d_status s = SA3D_OK;
    if (!F || !tmp || (flip && !Ff)) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory for the feature map", cat->name, im->id);
        goto done;
    }
    sa3d_rng rb = sa3d_rng_for(sy->p.seed, TAG_BACKGROUND, (uint64_t)gi);
    for (int i = 0; i < cells; i++) {   /* background: independent random unit vectors */
        sa3d_rng_unit_vector(tmp, C, &rb);
        for (int c = 0; c < C; c++) F[(size_t)c * cells + i] = tmp[c];
    }
    if (flip)   /* the mirrored image's background: columns reversed */
        for (size_t row = 0; row < (size_t)C * g; row++)
            for (int x = 0; x < g; x++) Ff[row * g + x] = F[row * g + (g - 1 - x)];
    sa3d_rng rn = sa3d_rng_for(sy->p.seed, TAG_NOISE, 2 * (uint64_t)gi), rf = sa3d_rng_for(sy->p.seed, TAG_NOISE, 2 * (uint64_t)gi + 1);
    for (int k = 0; k < N_KEYS; k++) {
        if (!im->vis[k]) continue;
        int x = im->kp[k][0], y = im->kp[k][1];
        put_code(F, C, cells, cell_of(im->w, im->h, S, g, (float)x, (float)y), cat->codes + (size_t)k * C,
                 sy->p.feature_noise, &rn, tmp);
        if (flip)   /* in the mirrored image keypoint k is at (W - 1 - x, y) and carries label flip(k) */
            put_code(Ff, C, cells, cell_of(im->w, im->h, S, g, (float)(im->w - 1 - x), (float)y),
                     cat->codes + (size_t)cat->flip[k] * C, sy->p.feature_noise, &rf, tmp);
    }
    s = sa3d_synth_write_features(sy->root, cat->name, im->id, F, flip ? Ff : NULL, C, g, S,
                                  "codes at keypoint cells (sa3d_synth_spair_write)", err);
done:
    sa3d_free(F);
    sa3d_free(Ff);
    sa3d_free(tmp);
    return s;
}

/* ---- driver ------------------------------------------------------------------------------------------------------- */

/* sa3d_synth_writer callbacks (ctx = the synth). */
static sa3d_status write_image_files(void *ctx, int gi, sa3d_error *err) {
    const synth *sy = ctx;
    sa3d_status s = write_image_record(sy, &sy->images[gi], err);
    if (!s && (sy->p.write_images || sy->p.write_segmentations)) s = write_pixels(sy, gi, err);
    if (!s && sy->p.write_features) s = write_features(sy, gi, err);
    return s;
}

static void pair_record_at(const void *ctx, int split, int i, sa3d_synth_pair_record *out) {
    const synth *sy = ctx;
    pair_record(sy, &sy->pairs[split][i], out);
}

static sa3d_status write_dataset(synth *sy, const char *manifest, sa3d_error *err) {
    sa3d_synth_writer w = { .root = sy->root, .cancel = sy->p.cancel, .cancel_user = sy->p.cancel_user,
                            .category_name = sa3d_spair_category,
                            .n_categories = sy->n_cats, .ctx = sy, .n_images = sy->n_images,
                            .write_image = write_image_files, .pair_record = pair_record_at,
                            .manifest = manifest };
    /* the records always, pixels and features as the write flags say */
    w.folders = SA3D_SYNTH_FOLDER_BIT(SA3D_SYNTH_IMAGE_ANNOTATION);
    if (sy->p.write_images) w.folders |= SA3D_SYNTH_FOLDER_BIT(SA3D_SYNTH_JPEG_IMAGES);
    if (sy->p.write_segmentations) w.folders |= SA3D_SYNTH_FOLDER_BIT(SA3D_SYNTH_SEGMENTATION);
    if (sy->p.write_features) w.folders |= SA3D_SYNTH_FOLDER_BIT(SA3D_SYNTH_FEATURES);
    memcpy(w.n_pairs, sy->n_pairs, sizeof w.n_pairs);
    return sa3d_synth_write_dataset(&w, err);
}

sa3d_status sa3d_synth_spair_write(const char *root, const sa3d_synth_spair_params *p, sa3d_error *err) {
    if (!root || !*root || !p) return sa3d_fail(err, SA3D_ERR_ARG, "sa3d_synth_spair_write: root or params missing");
    sa3d_status s;
    if ((s = check_params(p, err))) return s;
    if (strlen(root) > 3000) return sa3d_fail(err, SA3D_ERR_ARG, "%.100s...: path too long", root);
    if ((s = sa3d_synth_check_root(root, err))) return s;
    char stage[3100];
    int created = 0;
    if ((s = sa3d_synth_stage_begin(stage, sizeof stage, root, &created, err))) return s;
    synth sy;
    memset(&sy, 0, sizeof sy);
    sy.root = stage;   /* renamed to root once whole */
    sy.p = *p;
    sy.n_cats = p->n_categories;
    sy.n_images = p->n_categories * p->images_per_category;
    sa3d_set_threads(p->n_threads);
    if (!(sy.cats = sa3d_calloc((size_t)sy.n_cats, sizeof *sy.cats)) ||
        !(sy.images = sa3d_calloc((size_t)sy.n_images, sizeof *sy.images))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic SPair: out of memory");
        goto done;
    }
    for (int c = 0; c < sy.n_cats; c++) {
        if ((s = make_category(&sy, c, err))) goto done;
        for (int j = 0; j < p->images_per_category; j++) make_image(&sy, c, c * p->images_per_category + j);
    }
    sa3d_synth_pair_plan plan = { .label = "synthetic SPair",
                                  .totals = { p->pairs_trn, p->pairs_val, p->pairs_test },
                                  .n_categories = sy.n_cats, .images_per_category = p->images_per_category,
                                  .seed = p->seed, .tag = TAG_PAIRS, .ctx = &sy,
                                  .candidates = pair_candidates };
    if ((s = sa3d_synth_make_pairs(&plan, sy.pairs, sy.n_pairs, err))) goto done;
    char *manifest = sa3d_synth_spair_params_json(p);
    if (!manifest) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "synthetic SPair: out of memory");
        goto done;
    }
    s = write_dataset(&sy, manifest, err);
    free(manifest);
done:
    if (sy.cats)
        for (int c = 0; c < sy.n_cats; c++) sa3d_free(sy.cats[c].codes);
    sa3d_free(sy.cats);
    sa3d_free(sy.images);
    for (int sp = 0; sp < SA3D_SYNTH_N_SPLITS; sp++) sa3d_free(sy.pairs[sp]);
    return sa3d_synth_stage_end(stage, root, created, s, err);
}
