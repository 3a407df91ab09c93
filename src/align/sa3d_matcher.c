/* SemAlign3D over a dataset (the `eval --method semalign3d` matcher): per image, the inputs of the aligner at
 * cell resolution - features, the mask's foreground share of each cell, the pseudo depth of each cell - then
 * one alignment per image, cached (an image takes part in many pairs), and per pair the match through both
 * alignments (match_sa3d.c). The last few decoded feature maps are kept too (an LRU of FEATURE_CACHE_MAPS),
 * so that a pair does not read again the maps its alignments were just computed on. */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "geom/geom.h"
#include "semalign3d/align.h"

sa3d_sa3d_matcher_params sa3d_sa3d_matcher_params_default(void) {
    sa3d_sa3d_matcher_params p;
    memset(&p, 0, sizeof p);   /* fields not set below are 0 (compare options by their text, not their bytes:
                                 * a struct returned by value need not keep its padding) */
    p.align = sa3d_align_params_default();
    p.match = sa3d_match_params_default();
    p.input_size = 840;
    return p;
}

/* The option table behind sa3d_sa3d_matcher_params_set / _field: name, type, offset. */
typedef struct param_field {
    const char *name;
    char type;                    /* 'i' int, 'u' uint64_t, 'd' double, 'f' float */
    size_t offset;
} param_field;

#define P_ALIGN(f, t) { "align." #f, t, offsetof(sa3d_sa3d_matcher_params, align.f) }
#define P_MATCH(f, t) { "match." #f, t, offsetof(sa3d_sa3d_matcher_params, match.f) }
static const param_field param_fields[] = {
    P_ALIGN(n_hyp, 'i'), P_ALIGN(n_iter, 'i'), P_ALIGN(lr, 'd'), P_ALIGN(seed, 'u'), P_ALIGN(rec_mode, 'i'),
    P_ALIGN(point_blur, 'i'), P_ALIGN(w_rec, 'd'), P_ALIGN(w_geom, 'd'), P_ALIGN(w_bg, 'd'), P_ALIGN(w_depth, 'd'),
    P_ALIGN(sigma_start, 'd'), P_ALIGN(sigma_end, 'd'), P_ALIGN(tau, 'd'), P_ALIGN(top_k, 'i'),
    P_ALIGN(outlier_logp, 'd'), P_ALIGN(sem_sd_floor, 'd'), P_ALIGN(use_tets, 'i'), P_ALIGN(max_pairs, 'i'),
    P_ALIGN(max_tets, 'i'), P_ALIGN(init_scale, 'd'), P_ALIGN(focal_init, 'd'), P_ALIGN(depth_default, 'd'),
    P_ALIGN(prune_at, 'd'), P_ALIGN(prune_keep, 'i'), P_ALIGN(w_sparse, 'd'), P_ALIGN(sparse_from, 'd'),
    P_ALIGN(dense_end, 'd'), P_ALIGN(sparse_outlier, 'd'), P_ALIGN(w_mirror, 'd'),
    P_MATCH(sigma, 'd'), P_MATCH(sem_sd_floor, 'd'), P_MATCH(max_query_dist, 'd'), P_MATCH(max_energy, 'd'),
    P_MATCH(min_fg_frac, 'd'), P_MATCH(knn, 'i'), P_MATCH(lift, 'i'), P_MATCH(lift_k, 'i'), P_MATCH(vis_radius, 'd'),
    P_MATCH(vis_tol, 'd'), P_MATCH(query_sem, 'i'), P_MATCH(query_temp, 'd'), P_MATCH(query_norm, 'i'),
    P_MATCH(anchor_snap, 'd'), P_MATCH(snap_front, 'i'), P_MATCH(soft_points, 'i'), P_MATCH(w_direct, 'd'),
    P_MATCH(baseline.window_radius, 'i'), P_MATCH(baseline.temperature, 'f'), P_MATCH(baseline.adapt_flip, 'i'),
};
#define N_PARAM_FIELDS ((int)(sizeof param_fields / sizeof param_fields[0]))

sa3d_status sa3d_sa3d_matcher_params_set(sa3d_sa3d_matcher_params *p, const char *assignment, sa3d_error *err) {
    const char *eq = assignment ? strchr(assignment, '=') : NULL;
    if (!eq) return sa3d_fail(err, SA3D_ERR_ARG, "option '%s': expected NAME=VALUE", assignment ? assignment : "");
    size_t len = (size_t)(eq - assignment);
    const param_field *f = NULL;
    for (int i = 0; i < N_PARAM_FIELDS && !f; i++)
        if (strlen(param_fields[i].name) == len && !strncmp(param_fields[i].name, assignment, len))
            f = &param_fields[i];
    if (!f)
        return sa3d_fail(err, SA3D_ERR_ARG, "option '%.*s': no such aligner or matcher option", (int)len,
                         assignment);
    const char *v = eq + 1;
    if (isspace((unsigned char)*v)) /* strtoull would skip it and then wrap " -1" to 2^64 - 1 */
        return sa3d_fail(err, SA3D_ERR_ARG, "option %s: '%s' starts with white space", f->name, v);
    char *end;
    errno = 0;
    unsigned char *field = (unsigned char *)p + f->offset;
    if (f->type == 'd' || f->type == 'f') {
        double x = strtod(v, &end);
        if (end == v || *end || !isfinite(x) || (f->type == 'f' && fabs(x) > (double)FLT_MAX))
            return sa3d_fail(err, SA3D_ERR_ARG, "option %s: '%s' is not a finite number", f->name, v);
        if (f->type == 'd') memcpy(field, &x, sizeof x);
        else { float y = (float)x; memcpy(field, &y, sizeof y); }
        return SA3D_OK;
    }
    if (f->type == 'u') {
        if (*v == '-') return sa3d_fail(err, SA3D_ERR_ARG, "option %s: '%s' is not a non-negative integer", f->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || errno == ERANGE)
            return sa3d_fail(err, SA3D_ERR_ARG, "option %s: '%s' is not a non-negative integer", f->name, v);
        uint64_t y = (uint64_t)x;
        memcpy(field, &y, sizeof y);
        return SA3D_OK;
    }
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno == ERANGE || x < INT_MIN || x > INT_MAX)
        return sa3d_fail(err, SA3D_ERR_ARG, "option %s: '%s' is not an integer", f->name, v);
    int y = (int)x;
    memcpy(field, &y, sizeof y);
    return SA3D_OK;
}

const char *sa3d_sa3d_matcher_params_field(const sa3d_sa3d_matcher_params *p, int i, char *value, size_t cap) {
    if (i < 0 || i >= N_PARAM_FIELDS) return NULL;
    const param_field *f = &param_fields[i];
    const unsigned char *field = (const unsigned char *)p + f->offset;
    if (value && cap > 0) {
        if (f->type == 'd') {   /* the shortest of %.15g / %.17g that reads back as the same double */
            double x, y;
            memcpy(&x, field, sizeof x);
            snprintf(value, cap, "%.15g", x);
            if (sscanf(value, "%lf", &y) != 1 || y != x) snprintf(value, cap, "%.17g", x);
        }
        else if (f->type == 'f') { float x; memcpy(&x, field, sizeof x); snprintf(value, cap, "%.9g", (double)x); }
        else if (f->type == 'u') {
            uint64_t x;
            memcpy(&x, field, sizeof x);
            snprintf(value, cap, "%llu", (unsigned long long)x);
        }
        else { int x; memcpy(&x, field, sizeof x); snprintf(value, cap, "%d", x); }
    }
    return f->name;
}

sa3d_status sa3d_image_to_cells(float *out, const float *img, int W, int H, int input_size, int g, float outside,
                                sa3d_error *err) {
    size_t cells = (size_t)g * g;
    double *sum = calloc(cells, sizeof *sum);
    int *count = calloc(cells, sizeof *count);
    if (!sum || !count) {   /* not a map of `outside`, which would align as if there were no evidence */
        free(sum);
        free(count);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory for %zu cells", cells);
    }
    float cell = (float)input_size / (float)g;
    for (int v = 0; v < H; v++)
        for (int u = 0; u < W; u++) {
            float x, y;
            sa3d_geoaware_to_square(W, H, input_size, (float)u, (float)v, &x, &y);
            int cx = (int)floorf(x / cell), cy = (int)floorf(y / cell);
            if (cx < 0 || cy < 0 || cx >= g || cy >= g) continue;
            sum[(size_t)cy * g + cx] += (double)img[(size_t)v * W + u];
            count[(size_t)cy * g + cx]++;
        }
    for (size_t c = 0; c < cells; c++) out[c] = count[c] ? (float)(sum[c] / count[c]) : outside;
    free(sum);
    free(count);
    return SA3D_OK;
}

typedef struct aligned_image {
    char *cat, *id;               /* the key, owned (whole: a truncated key could match another image) */
    sa3d_alignment *a;
} aligned_image;

/* How many decoded feature maps the matcher keeps. A pair uses each of its two maps twice - to align the
 * image (on its first pair) and to match - and eval walks a category's pairs in order, so its images come
 * back soon; a few maps catch that. Each map is C x g x g floats (11 MB for 768 channels at 60 x 60), so 8
 * stay small next to the rest of the process. At least 2: a pair holds both its maps at once, and loading the
 * second must not evict the first (used last, so LRU evicts another). */
#define FEATURE_CACHE_MAPS 8
_Static_assert(FEATURE_CACHE_MAPS >= 2, "a pair holds two feature maps at once");

typedef struct cached_features {
    char *cat, *id;               /* the key, owned; NULL in a free slot */
    sa3d_map map;                 /* owned, map.data freed with free() (sa3d_provider_get) */
    unsigned long last_use;       /* the matcher's use counter at the last load or hit */
} cached_features;

struct sa3d_sa3d_matcher {
    sa3d_provider *features, *masks, *depth;
    const sa3d_prior *const *priors;
    int n_priors;
    sa3d_sa3d_matcher_params p;
    aligned_image *cache;
    int n_cache, cap_cache;
    cached_features feature_cache[FEATURE_CACHE_MAPS];   /* LRU of decoded maps */
    unsigned long feature_uses;                          /* counter behind last_use */
    sa3d_sa3d_matcher_stats stats;
};

static void cached_features_clear(cached_features *c) {
    sa3d_free(c->cat);
    sa3d_free(c->id);
    free(c->map.data);
    memset(c, 0, sizeof *c);
}

sa3d_status sa3d_sa3d_matcher_params_check(const sa3d_sa3d_matcher_params *p, sa3d_error *err) {
    sa3d_status st = sa3d_align_params_check(&p->align, err);
    return st == SA3D_OK ? sa3d_match_params_check(&p->match, err) : st;
}

sa3d_status sa3d_sa3d_matcher_new(sa3d_sa3d_matcher **out, sa3d_provider *features, sa3d_provider *masks,
                                  sa3d_provider *depth, const sa3d_prior *const *priors, int n_priors,
                                  const sa3d_sa3d_matcher_params *p, sa3d_error *err) {
    *out = NULL;
    if (!features || !priors || n_priors < 1)
        return sa3d_fail(err, SA3D_ERR_ARG, "semalign3d matcher: features and at least one prior are required");
    if (p) {   /* before any work: options out of their domains or no GPU, no run */
        sa3d_status st = sa3d_sa3d_matcher_params_check(p, err);
        if (st == SA3D_OK) st = sa3d_align_device_check(p->align.device, err);
        if (st != SA3D_OK) return st;
    }
    sa3d_sa3d_matcher *m = sa3d_calloc(1, sizeof *m);
    if (!m) return sa3d_fail(err, SA3D_ERR_NOMEM, "semalign3d matcher: out of memory");
    m->features = features;
    m->masks = masks;
    m->depth = depth;
    m->priors = priors;
    m->n_priors = n_priors;
    m->p = p ? *p : sa3d_sa3d_matcher_params_default();
    *out = m;
    return SA3D_OK;
}

void sa3d_sa3d_matcher_free(sa3d_sa3d_matcher *m) {
    if (!m) return;
    for (int i = 0; i < m->n_cache; i++) {
        sa3d_alignment_free(m->cache[i].a);
        sa3d_free(m->cache[i].cat);
        sa3d_free(m->cache[i].id);
    }
    sa3d_free(m->cache);
    for (int i = 0; i < FEATURE_CACHE_MAPS; i++) cached_features_clear(&m->feature_cache[i]);
    sa3d_free(m);
}

sa3d_sa3d_matcher_stats sa3d_sa3d_matcher_get_stats(const sa3d_sa3d_matcher *m) { return m->stats; }

static const sa3d_prior *prior_of(const sa3d_sa3d_matcher *m, const char *cat) {
    for (int i = 0; i < m->n_priors; i++)
        if (!strcmp(m->priors[i]->category, cat)) return m->priors[i];
    return NULL;
}

/* The cached map of category/id, or NULL. */
static cached_features *cached_map(sa3d_sa3d_matcher *m, const char *cat, const char *id) {
    for (int i = 0; i < FEATURE_CACHE_MAPS; i++) {
        cached_features *c = &m->feature_cache[i];
        if (c->cat && !strcmp(c->cat, cat) && !strcmp(c->id, id)) return c;
    }
    return NULL;
}

/* The slot a new map goes into: a free one, else the least recently used. */
static cached_features *cache_slot(sa3d_sa3d_matcher *m) {
    cached_features *slot = &m->feature_cache[0];
    for (int i = 0; i < FEATURE_CACHE_MAPS && slot->cat; i++) {
        cached_features *c = &m->feature_cache[i];
        if (!c->cat || c->last_use < slot->last_use) slot = c;
    }
    return slot;
}

/* The feature map of an image in the form the aligner takes, from the cache or else from the provider (then
 * cached). F->data is borrowed from the cache: valid until a later load evicts it, which the very next load
 * never does (FEATURE_CACHE_MAPS >= 2 and LRU). With mirror, also the mirrored image's map, owned by the caller:
 * asked for in the same provider call as the image's, so that a computing provider decodes the image once and
 * runs both through one network pass (on a GPU). */
static sa3d_status load_features(sa3d_sa3d_matcher *m, const char *cat, const char *id, int W, int H,
                                 sa3d_feature_map *F, sa3d_map *mirror, sa3d_error *err) {
    cached_features *c = cached_map(m, cat, id);
    sa3d_provider_item it[2] = { { .category = cat, .id = id, .flip = 0 }, { .category = cat, .id = id, .flip = 1 } };
    sa3d_provider_item *want = c ? it + 1 : it;
    int n = !c + !!mirror;
    sa3d_status s = n ? sa3d_provider_get_many(m->features, want, n, err) : SA3D_OK;
    if (s && it[1].status && !it[0].status && err) {   /* the mirror failed, not the image */
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg);
        sa3d_fail(err, s, "%s (align.w_mirror needs the mirrored image's features; --set align.w_mirror=0 aligns "
                  "without them)", why);
    }
    if (!s && !c && it[0].map.h != it[0].map.w)
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: feature map %d x %d is not square", cat, id, it[0].map.h,
                      it[0].map.w);
    char *key_cat = NULL, *key_id = NULL;
    if (!s && !c && (!(key_cat = sa3d_strdup(cat)) || !(key_id = sa3d_strdup(id))))
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", cat, id);
    if (s) {
        sa3d_free(key_cat);
        sa3d_free(key_id);
        free(it[0].map.data);
        free(it[1].map.data);
        return s;
    }
    if (!c) {
        c = cache_slot(m);
        cached_features_clear(c);
        *c = (cached_features){ key_cat, key_id, it[0].map, 0 };
    }
    if (mirror) *mirror = it[1].map;
    c->last_use = ++m->feature_uses;
    *F = (sa3d_feature_map){ c->map.c, c->map.h, c->map.data, W, H, m->p.input_size };
    return SA3D_OK;
}

sa3d_status sa3d_align_cells(sa3d_provider *masks, sa3d_provider *depth, const char *cat, const char *id, int flip,
                             int W, int H, int input_size, int g, float **mask_c, float **depth_c, sa3d_error *err) {
    sa3d_map mask = { 0 }, disp = { 0 };
    float *z = NULL;
    sa3d_status s = SA3D_OK;
    if (masks && (s = sa3d_provider_get(masks, cat, id, flip, &mask, err))) goto done;
    if (depth && (s = sa3d_provider_get(depth, cat, id, flip, &disp, err))) goto done;
    if ((masks && (mask.w != W || mask.h != H)) || (depth && (disp.w != W || disp.h != H))) {
        int mw = masks && (mask.w != W || mask.h != H);
        s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s is %d x %d; the image is %d x %d", mw ? "mask" : "depth map",
                      mw ? mask.w : disp.w, mw ? mask.h : disp.h, W, H);
        goto done;
    }
    if ((masks && !(*mask_c = malloc((size_t)g * g * sizeof(float)))) ||
        (depth && !(*depth_c = malloc((size_t)g * g * sizeof(float)))) ||
        (depth && !(z = malloc((size_t)disp.w * disp.h * sizeof(float))))) {
        s = sa3d_fail(err, SA3D_ERR_NOMEM, "out of memory");
        goto done;
    }
    if (masks && (s = sa3d_image_to_cells(*mask_c, mask.data, mask.w, mask.h, input_size, g, 0.0f, err))) goto done;
    /* METHOD.md 3.2: z = 1 - 0.3 d / max d, averaged per cell */
    if (depth && !(s = sa3d_pseudo_depth_f32(z, disp.data, disp.h, disp.w, 0, err)))
        s = sa3d_image_to_cells(*depth_c, z, disp.w, disp.h, input_size, g, 1.0f, err);
done:
    if (s) sa3d_error_prefix(err, "%s/%s%s", cat, id, flip ? " (mirrored)" : "");
    free(z);
    free(mask.data);
    free(disp.data);
    return s;
}

/* The alignment of category/id, computed on first use. */
static sa3d_status alignment_of(sa3d_sa3d_matcher *m, const sa3d_prior *prior, const char *cat, const char *id,
                                int W, int H, const sa3d_alignment **out, sa3d_error *err) {
    for (int i = 0; i < m->n_cache; i++)
        if (!strcmp(m->cache[i].cat, cat) && !strcmp(m->cache[i].id, id)) { *out = m->cache[i].a; return SA3D_OK; }
    sa3d_feature_map F = { 0 }, Fm = { 0 };
    sa3d_map fm = { 0 };
    float *cells[4] = { NULL, NULL, NULL, NULL };   /* mask, depth; mirror's mask, depth */
    sa3d_alignment *a = NULL;
    sa3d_align_input in = { .F = &F }, mi = { .F = &Fm };
    int mirror = m->p.align.w_mirror > 0.0;   /* the mirrored image's map: read once here, not cached */
    sa3d_status s = load_features(m, cat, id, W, H, &F, mirror ? &fm : NULL, err);
    if (s || (s = sa3d_align_cells(m->masks, m->depth, cat, id, 0, W, H, m->p.input_size, F.g, &cells[0],
                                   &cells[1], err)))
        goto done;
    in.mask = cells[0];
    in.depth = cells[1];
    if (mirror) {
        Fm = (sa3d_feature_map){ fm.c, fm.h, fm.data, W, H, m->p.input_size };
        if (fm.h != fm.w || fm.h != F.g || fm.c != F.C) {
            s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s/%s: mirrored feature map %d x %d x %d differs from the image's",
                          cat, id, fm.c, fm.h, fm.w);
            goto done;
        }
        if ((s = sa3d_align_cells(m->masks, m->depth, cat, id, 1, W, H, m->p.input_size, F.g, &cells[2], &cells[3],
                                  err)))
            goto done;
        mi.mask = cells[2];
        mi.depth = cells[3];
        in.mirror = &mi;
    }
    if ((s = sa3d_align_image(&a, prior, &in, &m->p.align, err))) {
        sa3d_error_prefix(err, "%s/%s: alignment", cat, id);
        goto done;
    }
    if (m->n_cache == m->cap_cache) {
        int cap = m->cap_cache ? 2 * m->cap_cache : 64;
        aligned_image *c = sa3d_realloc(m->cache, (size_t)cap * sizeof *c);
        if (!c) goto nomem;
        m->cache = c;
        m->cap_cache = cap;
    }
    aligned_image *e = &m->cache[m->n_cache];
    e->cat = sa3d_strdup(cat);
    e->id = sa3d_strdup(id);
    if (!e->cat || !e->id) {
        sa3d_free(e->cat);
        sa3d_free(e->id);
        goto nomem;
    }
    m->n_cache++;
    e->a = a;
    a = NULL;
    *out = e->a;
    m->stats.alignments++;
    goto done;
nomem:
    s = sa3d_fail(err, SA3D_ERR_NOMEM, "%s/%s: out of memory", cat, id);
done:
    sa3d_alignment_free(a);
    free(fm.data);
    for (int i = 0; i < 4; i++) free(cells[i]);
    return s;
}

sa3d_status sa3d_sa3d_matcher_match(void *ctx, const sa3d_pair *pair, float (*pred)[2], sa3d_error *err) {
    sa3d_sa3d_matcher *m = ctx;
    const sa3d_prior *prior = prior_of(m, pair->category);
    if (!prior) return sa3d_fail(err, SA3D_ERR_ARG, "%s: no prior for category %s", pair->id, pair->category);
    const sa3d_alignment *a1, *a2;
    sa3d_feature_map F1 = { 0 }, F2 = { 0 };
    uint8_t fb[SA3D_MAX_KPS];
    sa3d_status s;
    if ((s = alignment_of(m, prior, pair->category, pair->src, pair->src_size[0], pair->src_size[1], &a1, err)) ||
        (s = alignment_of(m, prior, pair->category, pair->trg, pair->trg_size[0], pair->trg_size[1], &a2, err)) ||
        (s = load_features(m, pair->category, pair->src, pair->src_size[0], pair->src_size[1], &F1, NULL, err)) ||
        (s = load_features(m, pair->category, pair->trg, pair->trg_size[0], pair->trg_size[1], &F2, NULL, err)))
        return s;   /* F1 and F2 are borrowed from the feature cache: nothing to free */
    if ((s = sa3d_match_sa3d(prior, a1, &F1, a2, &F2, (const float (*)[2])pair->src_kps, pair->n_kps, &m->p.match,
                             pred, fb, err))) {
        sa3d_error_prefix(err, "%s", pair->id);
        return s;
    }
    for (int k = 0; k < pair->n_kps; k++) m->stats.fallbacks += fb[k];
    m->stats.queries += pair->n_kps;
    return SA3D_OK;
}

const sa3d_alignment *sa3d_sa3d_matcher_alignment(const sa3d_sa3d_matcher *m, const char *cat, const char *id) {
    for (int i = 0; i < m->n_cache; i++)
        if (!strcmp(m->cache[i].cat, cat) && !strcmp(m->cache[i].id, id)) return m->cache[i].a;
    return NULL;
}
