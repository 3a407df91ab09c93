/* Plumbing shared by the synthetic dataset writers (see synth_io.h). */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/rng.h"
#include "semalign3d/safetensors.h"
#include "synth/synth_io.h"

void sa3d_sb_printf(sa3d_sbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) { b->failed = 1; return; }
        if (b->s && b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
        size_t cap = (b->cap ? 2 * b->cap : 1024) + (size_t)n;
        char *ns = sa3d_realloc(b->s, cap);
        if (!ns) { b->failed = 1; return; }
        b->s = ns;
        b->cap = cap;
    }
}

sa3d_status sa3d_sb_write(const char *path, const sa3d_sbuf *b, sa3d_error *err) {
    if (b->failed) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    return sa3d_write_file_atomic(path, b->s ? b->s : "", b->len, err);
}

sa3d_status sa3d_path_fmt(char *buf, size_t n, sa3d_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf, n, fmt, ap);
    va_end(ap);
    if (k < 0 || (size_t)k >= n) return sa3d_fail(err, SA3D_ERR_ARG, "%s...: path too long", buf);
    return SA3D_OK;
}

/* Staging folders are root/.partial-XXXXXX: inside root, so moving their entries up is a rename on one file
 * system whatever root is ("." , a link, a mount point), and root keeps its owner and mode. */
#define STAGE_PREFIX ".partial-"

static int is_stage_name(const char *name) { return !strncmp(name, STAGE_PREFIX, strlen(STAGE_PREFIX)); }

sa3d_status sa3d_synth_check_root(const char *root, sa3d_error *err) {
    struct stat st;
    if (stat(root, &st) != 0) return SA3D_OK;
    if (!S_ISDIR(st.st_mode)) return sa3d_fail(err, SA3D_ERR_ARG, "%s: exists and is not a directory", root);
    DIR *d = opendir(root);
    if (!d) return sa3d_fail(err, SA3D_ERR_IO, "%s: cannot open: %s", root, strerror(errno));
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)   /* a killed run's staging folder does not count */
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && !is_stage_name(e->d_name)) entries++;
    closedir(d);
    if (entries)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: not empty; the synthetic dataset is written only into a new or empty "
                         "directory", root);
    return SA3D_OK;
}

/* ---- the SPair-71k layout ---- */

const char *const sa3d_synth_split_names[SA3D_SYNTH_N_SPLITS] = { "trn", "val", "test" };

static const struct { const char *dir, *suffix; } folders_spec[SA3D_SYNTH_N_FOLDERS] = {
    [SA3D_SYNTH_IMAGE_ANNOTATION] = { "ImageAnnotation", ".json" },
    [SA3D_SYNTH_JPEG_IMAGES] = { "JPEGImages", ".jpg" },
    [SA3D_SYNTH_SEGMENTATION] = { "Segmentation", ".png" },
    [SA3D_SYNTH_FEATURES] = { "Features", ".features.safetensors" },   /* as `semalign3d features` names it */
    [SA3D_SYNTH_DEPTH] = { "Depth", ".depth.safetensors" },            /* as `semalign3d depth` names it */
    [SA3D_SYNTH_GROUND_TRUTH] = { "GroundTruth", ".json" },
};

sa3d_status sa3d_synth_folder_path(char *buf, size_t n, const char *root, sa3d_synth_folder folder,
                                   sa3d_error *err) {
    return sa3d_path_fmt(buf, n, err, "%s/%s", root, folders_spec[folder].dir);
}

sa3d_status sa3d_synth_image_path(char *buf, size_t n, const char *root, sa3d_synth_folder folder,
                                  const char *category, const char *id, sa3d_error *err) {
    return sa3d_path_fmt(buf, n, err, "%s/%s/%s/%s%s", root, folders_spec[folder].dir, category, id,
                         folders_spec[folder].suffix);
}

sa3d_status sa3d_synth_make_tree(const char *root, unsigned folders, const char *(*category_name)(int index),
                                 int n_categories, sa3d_error *err) {
    char path[4096];
    sa3d_status s;
    for (int c = 0; c < n_categories; c++)
        for (int f = 0; f < SA3D_SYNTH_N_FOLDERS; f++)
            if ((folders & SA3D_SYNTH_FOLDER_BIT(f)) &&
                ((s = sa3d_path_fmt(path, sizeof path, err, "%s/%s/%s", root, folders_spec[f].dir,
                                    category_name(c))) ||
                 (s = sa3d_mkdirs(path, err))))
                return s;
    for (int sp = 0; sp < SA3D_SYNTH_N_SPLITS; sp++)
        if ((s = sa3d_path_fmt(path, sizeof path, err, "%s/PairAnnotation/%s", root,
                               sa3d_synth_split_names[sp])) ||
            (s = sa3d_mkdirs(path, err)))
            return s;
    if ((s = sa3d_path_fmt(path, sizeof path, err, "%s/Layout/large", root)) || (s = sa3d_mkdirs(path, err)))
        return s;
    return SA3D_OK;
}

/* ---- SPair records ---- */

sa3d_status sa3d_synth_write_image_record(const char *root, const sa3d_synth_image_record *im,
                                          sa3d_error *err) {
    char path[4096];
    sa3d_status s = sa3d_synth_image_path(path, sizeof path, root, SA3D_SYNTH_IMAGE_ANNOTATION, im->category,
                                          im->id, err);
    if (s) return s;
    sa3d_sbuf b = { 0 };
    sa3d_sb_printf(&b, "{\"filename\": \"%s.jpg\", \"src_database\": \"%s\", \"src_annotation\": \"%s\", "
                   "\"src_image\": \"rendered\", \"image_width\": %d, \"image_height\": %d, "
                   "\"image_depth\": 3, \"category\": \"%s\", \"pose\": \"%s\", \"truncated\": %d, "
                   "\"occluded\": %d, \"difficult\": 0, \"bndbox\": [%d, %d, %d, %d], \"kps\": {",
                   im->id, im->database, im->annotation, im->width, im->height, im->category, im->pose,
                   im->truncated, im->occluded, im->bbox[0], im->bbox[1], im->bbox[2], im->bbox[3]);
    for (int k = 0; k < im->n_kps; k++) {
        if (im->vis[k])
            sa3d_sb_printf(&b, "%s\"%d\": [%d, %d]", k ? ", " : "", k, im->kp[2 * k], im->kp[2 * k + 1]);
        else sa3d_sb_printf(&b, "%s\"%d\": null", k ? ", " : "", k);
    }
    sa3d_sb_printf(&b, "}, \"azimuth_id\": %d}\n", im->azimuth_id);
    s = sa3d_sb_write(path, &b, err);
    sa3d_free(b.s);
    return s;
}

void sa3d_synth_pair_id(char *buf, size_t n, const sa3d_synth_pair_record *pr) {
    snprintf(buf, n, "%06d-%s-%s:%s", pr->num, pr->src.id, pr->trg.id, pr->src.category);
}

static long bbox_area(const int *bbox) { return (long)(bbox[2] - bbox[0]) * (bbox[3] - bbox[1]); }

typedef enum pair_kps_list { SRC_KPS, TRG_KPS, KPS_IDS } pair_kps_list;

/* One of the three keypoint lists of a pair record, over the keys visible in both images. */
static void pair_kps(sa3d_sbuf *b, const sa3d_synth_pair_record *pr, int n_kps, pair_kps_list list) {
    const sa3d_synth_image_record *a = &pr->src, *t = &pr->trg;
    int first = 1;
    for (int k = 0; k < n_kps; k++) {
        if (!a->vis[k] || !t->vis[k]) continue;
        if (list == KPS_IDS) sa3d_sb_printf(b, "%s\"%d\"", first ? "" : ", ", k);
        else {
            const int *kp = list == SRC_KPS ? a->kp : t->kp;
            sa3d_sb_printf(b, "%s[%d, %d]", first ? "" : ", ", kp[2 * k], kp[2 * k + 1]);
        }
        first = 0;
    }
}

sa3d_status sa3d_synth_write_pair_record(const char *root, int split, const sa3d_synth_pair_record *pr,
                                         sa3d_error *err) {
    const sa3d_synth_image_record *a = &pr->src, *t = &pr->trg;
    char id[160], path[4096];
    sa3d_synth_pair_id(id, sizeof id, pr);
    sa3d_status s = sa3d_path_fmt(path, sizeof path, err, "%s/PairAnnotation/%s/%s.json", root,
                                  sa3d_synth_split_names[split], id);
    if (s) return s;
    int d = abs(a->azimuth_id - t->azimuth_id);
    d = d > 4 ? 8 - d : d;
    long area_a = bbox_area(a->bbox), area_t = bbox_area(t->bbox);
    double ratio = area_a > area_t ? (double)area_a / (double)(area_t > 0 ? area_t : 1)
                                   : (double)area_t / (double)(area_a > 0 ? area_a : 1);
    int viewpoint = d == 0 ? 0 : (d <= 2 ? 1 : 2), scale = ratio < 1.5 ? 0 : (ratio < 2.5 ? 1 : 2);
    int n_kps = a->n_kps < t->n_kps ? a->n_kps : t->n_kps;
    sa3d_sbuf b = { 0 };
    sa3d_sb_printf(&b, "{\"pair_id\": %d, \"filename\": \"%s\", \"src_imname\": \"%s.jpg\", "
                   "\"trg_imname\": \"%s.jpg\", \"src_imsize\": [%d, %d, 3], \"trg_imsize\": [%d, %d, 3], "
                   "\"src_bndbox\": [%d, %d, %d, %d], \"trg_bndbox\": [%d, %d, %d, %d], "
                   "\"category\": \"%s\", \"src_pose\": \"%s\", \"trg_pose\": \"%s\", \"src_kps\": [",
                   pr->num, id, a->id, t->id, a->width, a->height, t->width, t->height, a->bbox[0],
                   a->bbox[1], a->bbox[2], a->bbox[3], t->bbox[0], t->bbox[1], t->bbox[2], t->bbox[3],
                   a->category, a->pose, t->pose);
    pair_kps(&b, pr, n_kps, SRC_KPS);
    sa3d_sb_printf(&b, "], \"trg_kps\": [");
    pair_kps(&b, pr, n_kps, TRG_KPS);
    sa3d_sb_printf(&b, "], \"kps_ids\": [");
    pair_kps(&b, pr, n_kps, KPS_IDS);
    sa3d_sb_printf(&b, "], \"mirror\": %d, \"viewpoint_variation\": %d, \"scale_variation\": %d, "
                   "\"truncation\": %d, \"occlusion\": %d}\n",
                   pr->mirror, viewpoint, scale, a->truncated + 2 * t->truncated,
                   a->occluded + 2 * t->occluded);
    s = sa3d_sb_write(path, &b, err);
    sa3d_free(b.s);
    return s;
}

/* ---- pairs ---- */

/* `count` pairs of one split and category into out. */
static sa3d_status draw_pairs(const sa3d_synth_pair_plan *plan, int split, int category, int count,
                              sa3d_synth_pair *out, sa3d_error *err) {
    int n = plan->images_per_category, first = category * n;
    int *valid = sa3d_malloc((size_t)n * n * sizeof *valid);
    if (!valid) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory for pairs", plan->label);
    int n_valid = plan->candidates(plan->ctx, split, category, valid, err);
    if (n_valid <= 0) {
        sa3d_free(valid);
        return err && err->code ? err->code : SA3D_ERR_ARG;
    }
    sa3d_rng r = sa3d_rng_for(plan->seed, plan->tag, (uint64_t)split * 64 + (uint64_t)category);
    int remaining = n_valid;
    for (int i = 0; i < count; i++) {   /* valid[0 .. remaining) are the candidates not drawn yet */
        if (remaining == 0) remaining = n_valid;
        int j = sa3d_rng_int(&r, 0, remaining - 1), v = valid[j];
        valid[j] = valid[remaining - 1];
        valid[--remaining] = v;
        out[i].src = first + v / n;
        out[i].trg = first + v % n;
    }
    sa3d_free(valid);
    return SA3D_OK;
}

sa3d_status sa3d_synth_make_pairs(const sa3d_synth_pair_plan *plan,
                                  sa3d_synth_pair *pairs[SA3D_SYNTH_N_SPLITS],
                                  int n_pairs[SA3D_SYNTH_N_SPLITS], sa3d_error *err) {
    sa3d_status s;
    for (int sp = 0; sp < SA3D_SYNTH_N_SPLITS; sp++) {
        int total = plan->totals[sp], at = 0;
        if (total && !(pairs[sp] = sa3d_calloc((size_t)total, sizeof(sa3d_synth_pair))))
            return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory for %d pairs", plan->label, total);
        for (int c = 0; c < plan->n_categories; c++) {
            int count = total / plan->n_categories + (c < total % plan->n_categories);
            if (count && (s = draw_pairs(plan, sp, c, count, pairs[sp] + at, err))) return s;
            at += count;
        }
        for (int i = 0; i < at; i++) pairs[sp][i].num = i + 1;
        n_pairs[sp] = at;
    }
    return SA3D_OK;
}

/* ---- feature maps ---- */

sa3d_status sa3d_synth_write_features(const char *root, const char *category, const char *id, const float *F,
                                      const float *Ff, int C, int g, int input_size, const char *note,
                                      sa3d_error *err) {
    /* the input convention `semalign3d features` records */
    static const char *const convention = "geoaware-sc: fit into square, centred, zero pad";
    int64_t shape[3] = { C, g, g };
    char path[4096], image[256], size_s[16];
    sa3d_st_writer *w = NULL;
    snprintf(image, sizeof image, "JPEGImages/%s/%s.jpg", category, id);
    snprintf(size_s, sizeof size_s, "%d", input_size);
    sa3d_status s = sa3d_synth_image_path(path, sizeof path, root, SA3D_SYNTH_FEATURES, category, id, err);
    if (s) return s;
    if (!(w = sa3d_st_writer_new())) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    if (!(s = sa3d_st_writer_add_f32(w, "feature_map", 3, shape, F, err)) &&
        !(Ff && (s = sa3d_st_writer_add_f32(w, "feature_map_flip", 3, shape, Ff, err))) &&
        !(s = sa3d_st_writer_set_metadata(w, "semalign3d_version", sa3d_version(), err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "model_id", "synthetic", err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "model_dir", "-", err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "image", image, err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "size", size_s, err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "flip", Ff ? "1" : "0", err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "convention", convention, err)) &&
        !(s = sa3d_st_writer_set_metadata(w, "synthetic", note, err)))
        s = sa3d_st_writer_write(w, path, err);
    sa3d_st_writer_free(w);
    return s;
}

/* ---- writing a dataset ---- */

/* The first failure of a parallel loop: the smallest item index among the items that failed. */
typedef struct first_error { int failed; long index; sa3d_error err; } first_error;

static void first_error_note(first_error *fe, long index, const sa3d_error *e) {
    #pragma omp critical(sa3d_synth_first_error)
    {
        if (!fe->failed || index < fe->index) {
            fe->index = index;
            fe->err = *e;
        }
        fe->failed = 1;
    }
}

static int first_error_any(first_error *fe) {
    int f;
    #pragma omp critical(sa3d_synth_first_error)
    f = fe->failed;
    return f;
}

static sa3d_status write_items(const sa3d_synth_writer *w, sa3d_error *err) {
    first_error fe;
    memset(&fe, 0, sizeof fe);
    /* dynamic: images differ in cost (synth3d ray-casts every pixel, and sizes vary) */
    #pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < w->n_images; i++) {
        if (first_error_any(&fe)) continue;
        sa3d_error e = { SA3D_OK, "" };
        if (w->cancel && w->cancel(w->cancel_user)) sa3d_fail(&e, SA3D_ERR_CANCELLED, "cancelled");
        if (e.code || w->write_image(w->ctx, i, &e)) first_error_note(&fe, i, &e);
    }
    for (int sp = 0; sp < SA3D_SYNTH_N_SPLITS && !fe.failed; sp++) {
        #pragma omp parallel for schedule(static)
        for (int i = 0; i < w->n_pairs[sp]; i++) {
            if (first_error_any(&fe)) continue;
            sa3d_error e = { SA3D_OK, "" };
            sa3d_synth_pair_record r;
            w->pair_record(w->ctx, sp, i, &r);
            if (w->cancel && w->cancel(w->cancel_user)) sa3d_fail(&e, SA3D_ERR_CANCELLED, "cancelled");
            if (e.code || sa3d_synth_write_pair_record(w->root, sp, &r, &e)) first_error_note(&fe, i, &e);
        }
    }
    if (fe.failed) {
        if (err) *err = fe.err;
        return fe.err.code ? fe.err.code : SA3D_ERR_IO;
    }
    return SA3D_OK;
}

/* Layout/large/<split>.txt: the pair ids of each split, one a line, in numbering order. */
static sa3d_status write_layout_lists(const sa3d_synth_writer *w, sa3d_error *err) {
    char path[4096], id[160];
    sa3d_status s;
    for (int sp = 0; sp < SA3D_SYNTH_N_SPLITS; sp++) {
        if ((s = sa3d_path_fmt(path, sizeof path, err, "%s/Layout/large/%s.txt", w->root,
                               sa3d_synth_split_names[sp])))
            return s;
        sa3d_sbuf b = { 0 };
        for (int i = 0; i < w->n_pairs[sp]; i++) {
            sa3d_synth_pair_record r;
            w->pair_record(w->ctx, sp, i, &r);
            sa3d_synth_pair_id(id, sizeof id, &r);
            sa3d_sb_printf(&b, "%s\n", id);
        }
        s = sa3d_sb_write(path, &b, err);
        sa3d_free(b.s);
        if (s) return s;
    }
    return SA3D_OK;
}

sa3d_status sa3d_synth_write_dataset(const sa3d_synth_writer *w, sa3d_error *err) {
    char path[4096];
    sa3d_status s;
    if (w->cancel && w->cancel(w->cancel_user)) return sa3d_fail(err, SA3D_ERR_CANCELLED, "cancelled");
    if ((s = sa3d_mkdirs(w->root, err)) ||
        (s = sa3d_synth_make_tree(w->root, w->folders, w->category_name, w->n_categories, err)) ||
        (s = write_items(w, err)) || (s = write_layout_lists(w, err)) ||
        (s = sa3d_path_fmt(path, sizeof path, err, "%s/synth_params.json", w->root)))
        return s;
    return sa3d_write_file_atomic(path, w->manifest, strlen(w->manifest), err);
}

sa3d_status sa3d_synth_stage_begin(char *stage, size_t n, const char *root, int *created, sa3d_error *err) {
    struct stat sb;
    *created = stat(root, &sb) != 0;
    sa3d_status s = sa3d_mkdirs(root, err);
    if (s) return s;
    DIR *d = opendir(root);   /* staging folders of runs that were killed: ours, inside an otherwise empty root */
    if (!d) return sa3d_fail(err, SA3D_ERR_IO, "%s: cannot open: %s", root, strerror(errno));
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        char old[4200];
        if (is_stage_name(e->d_name) && !sa3d_path_fmt(old, sizeof old, NULL, "%s/%s", root, e->d_name))
            sa3d_remove_tree(old);
    }
    closedir(d);
    if ((s = sa3d_path_fmt(stage, n, err, "%s/" STAGE_PREFIX "XXXXXX", root))) return s;
    if (!mkdtemp(stage)) return sa3d_fail(err, SA3D_ERR_IO, "%s: cannot create: %s", stage, strerror(errno));
    return SA3D_OK;
}

sa3d_status sa3d_synth_stage_end(const char *stage, const char *root, int created, sa3d_status s, sa3d_error *err) {
    char name[32][256];   /* the stage's entries, read before any moves (a folder changing under readdir may skip) */
    int n = 0;
    unsigned char moved[32] = { 0 };
    if (s == SA3D_OK) {
        DIR *d = opendir(stage);
        if (!d) s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot open: %s", stage, strerror(errno));
        for (struct dirent *e; s == SA3D_OK && d && (e = readdir(d)) != NULL;) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            if (n == 32 || strlen(e->d_name) >= sizeof name[0])
                s = sa3d_fail(err, SA3D_ERR_IO, "%s: unexpected entry %.100s", stage, e->d_name);
            else
                snprintf(name[n++], sizeof name[0], "%s", e->d_name);
        }
        if (d) closedir(d);
    }
    for (int last = 0; s == SA3D_OK && last < 2; last++)   /* synth_params.json, which marks a whole dataset, last */
        for (int k = 0; s == SA3D_OK && k < n; k++) {
            if ((strcmp(name[k], "synth_params.json") == 0) != last) continue;
            char from[4200], to[4200];
            if ((s = sa3d_path_fmt(from, sizeof from, err, "%s/%s", stage, name[k])) ||
                (s = sa3d_path_fmt(to, sizeof to, err, "%s/%s", root, name[k])))
                break;
            if (rename(from, to) != 0)
                s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot move it into %s: %s", from, root, strerror(errno));
            else
                moved[k] = 1;
        }
    for (int k = 0; s != SA3D_OK && k < n; k++) {   /* a move failed: take out what this run moved in */
        char path[4200];
        if (moved[k] && !sa3d_path_fmt(path, sizeof path, NULL, "%s/%s", root, name[k])) sa3d_remove_tree(path);
    }
    sa3d_remove_tree(stage);
    if (s != SA3D_OK && created) rmdir(root);   /* empty again: as it was, absent */
    return s;
}
