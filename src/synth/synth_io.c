/* Plumbing shared by the synthetic dataset writers (see synth_io.h). */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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

sa3d_status sa3d_synth_check_root(const char *root, sa3d_error *err) {
    struct stat st;
    if (stat(root, &st) != 0) return SA3D_OK;
    if (!S_ISDIR(st.st_mode)) return sa3d_fail(err, SA3D_ERR_ARG, "%s: exists and is not a directory", root);
    DIR *d = opendir(root);
    if (!d) return sa3d_fail(err, SA3D_ERR_IO, "%s: cannot open: %s", root, strerror(errno));
    int entries = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) entries++;
    closedir(d);
    if (entries)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: not empty; the synthetic dataset is written only into a new or empty "
                         "directory", root);
    return SA3D_OK;
}

void sa3d_first_error_note(sa3d_first_error *fe, long index, const sa3d_error *e) {
    #pragma omp critical(sa3d_synth_first_error)
    {
        if (!fe->failed || index < fe->index) {
            fe->index = index;
            fe->err = *e;
        }
        fe->failed = 1;
    }
}

int sa3d_first_error_any(sa3d_first_error *fe) {
    int f;
    #pragma omp critical(sa3d_synth_first_error)
    f = fe->failed;
    return f;
}

/* ---- the SPair-71k layout ---- */

const char *const sa3d_synth_split_names[SA3D_SYNTH_N_SPLITS] = { "trn", "val", "test" };

static const struct { const char *dir, *suffix; } folders_spec[SA3D_SYNTH_N_FOLDERS] = {
    [SA3D_SYNTH_IMAGE_ANNOTATION] = { "ImageAnnotation", ".json" },
    [SA3D_SYNTH_JPEG_IMAGES] = { "JPEGImages", ".jpg" },
    [SA3D_SYNTH_SEGMENTATION] = { "Segmentation", ".png" },
    [SA3D_SYNTH_FEATURES] = { "Features", ".features.safetensors" },   /* as `semalign3d features` names them */
    [SA3D_SYNTH_DEPTH] = { "Depth", ".depth.safetensors" },            /* as `semalign3d depth` names them */
    [SA3D_SYNTH_GROUND_TRUTH] = { "GroundTruth", ".json" },
};

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
                ((s = sa3d_path_fmt(path, sizeof path, err, "%s/%s/%s", root, folders_spec[f].dir, category_name(c))) ||
                 (s = sa3d_mkdirs(path, err))))
                return s;
    for (int sp = 0; sp < SA3D_SYNTH_N_SPLITS; sp++)
        if ((s = sa3d_path_fmt(path, sizeof path, err, "%s/PairAnnotation/%s", root, sa3d_synth_split_names[sp])) ||
            (s = sa3d_mkdirs(path, err)))
            return s;
    if ((s = sa3d_path_fmt(path, sizeof path, err, "%s/Layout/large", root)) || (s = sa3d_mkdirs(path, err))) return s;
    return SA3D_OK;
}
