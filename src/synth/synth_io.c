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
