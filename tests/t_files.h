/* File-tree helpers for tests that write datasets: a fresh temporary folder, removal of a tree, the sorted
 * relative paths of every regular file under a root, and a whole file read. Needs _XOPEN_SOURCE 700 (nftw)
 * defined before the first include. */
#ifndef SA3D_T_FILES_H
#define SA3D_T_FILES_H

#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "t.h"

static int t_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(path);
}
__attribute__((unused)) static void rm_tree(const char *path) { nftw(path, t_rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

/* A new folder under $TMPDIR (or /tmp) into buf; buf is "" (and the case failed) when it cannot be made. */
__attribute__((unused)) static void make_tmp(char *buf, size_t n) {
    const char *t = getenv("TMPDIR");
    snprintf(buf, n, "%s/sa3d_test_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(buf)) { T_FAIL("mkdtemp %s failed", buf); buf[0] = '\0'; }
}

/* Relative paths of every regular file under a root, sorted (free with free_list). */
static char **t_list;
static int t_list_n, t_list_cap;
static size_t t_root_len;
static int t_collect(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)ftw;
    if (flag != FTW_F) return 0;
    if (t_list_n == t_list_cap) {
        t_list_cap = t_list_cap ? 2 * t_list_cap : 256;
        t_list = realloc(t_list, (size_t)t_list_cap * sizeof *t_list);
    }
    t_list[t_list_n++] = strdup(path + t_root_len + 1);
    return 0;
}
__attribute__((unused)) static char **list_files(const char *root, int *n) {
    t_list = NULL;
    t_list_n = t_list_cap = 0;
    t_root_len = strlen(root);
    nftw(root, t_collect, 16, FTW_PHYS);
    qsort(t_list, (size_t)t_list_n, sizeof *t_list, t_cmp_str);
    *n = t_list_n;
    return t_list;
}
__attribute__((unused)) static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

/* The whole file (sa3d_free it), NULL and a failure when unreadable. */
__attribute__((unused)) static char *slurp(const char *path, size_t *len) {
    char *text = NULL;
    sa3d_error err;
    if (sa3d_read_file(path, (size_t)1 << 30, &text, len, &err) != SA3D_OK) { T_FAIL("%s", err.msg); return NULL; }
    return text;
}

#endif
