/* Internal base layer: error helpers, counted allocation with fault injection, overflow-checked sizes,
 * file helpers (whole-file read, atomic write) and thread-count control. Not part of the public API. */
#ifndef SA3D_BASE_H
#define SA3D_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "semalign3d/status.h"

/* Fills err (if not NULL) with the formatted message and code; returns code. */
sa3d_status sa3d_fail(sa3d_error *err, sa3d_status code, const char *fmt, ...) SA3D_PRINTF(3, 4);
/* Prepends "<prefix>: " to err->msg (context added by a caller; the code is kept). Returns err->code. */
sa3d_status sa3d_error_prefix(sa3d_error *err, const char *fmt, ...) SA3D_PRINTF(2, 3);
/* Clears err to SA3D_OK with an empty message. */
void sa3d_error_clear(sa3d_error *err);

/* Allocation. All library memory goes through these; they align to 64 bytes and count live blocks.
 * sa3d_malloc returns NULL for size 0 as for failure only when size > 0 fails: size 0 gives a valid block. */
void *sa3d_malloc(size_t size);
void *sa3d_calloc(size_t n, size_t size);
void *sa3d_realloc(void *p, size_t size);      /* unaligned-preserving realloc: returns 64-byte aligned */
void sa3d_free(void *p);
char *sa3d_strdup(const char *s);
/* Test hooks: fail the Nth allocation from now (1 = the next one; 0 disables); live block count. */
void sa3d_alloc_fail_after(long n);
long sa3d_alloc_live_blocks(void);

/* Overflow-checked size products: return 1 and set *out on success, 0 on overflow. */
int sa3d_mul_ok(size_t a, size_t b, size_t *out);
int sa3d_mul3_ok(size_t a, size_t b, size_t c, size_t *out);

/* Reads a whole file into a NUL-terminated buffer owned by the caller (sa3d_free). max_bytes caps the size. */
sa3d_status sa3d_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, sa3d_error *err);
/* Opens path for reading only when it is a regular file (*st filled), else NULL with SA3D_ERR_IO naming it: a
 * directory would read as empty, a device never end, a FIFO without a writer block the open itself. */
struct stat;
FILE *sa3d_open_regular(const char *path, struct stat *st, sa3d_error *err);

/* Atomic output: write to "<path>.tmp.<pid>" in the same directory, then fsync + rename. On any failure the
 * temp file is removed and the old content of path (if any) stays. */
typedef struct sa3d_atomic_file {
    FILE *f;
    char *tmp_path;
    char *path;
    int slot;   /* 1 + its entry in the list of temp files being written (sa3d_atomic_remove_temps), 0 none */
} sa3d_atomic_file;
sa3d_status sa3d_atomic_open(sa3d_atomic_file *af, const char *path, sa3d_error *err);
sa3d_status sa3d_atomic_write(sa3d_atomic_file *af, const void *data, size_t n, sa3d_error *err);
sa3d_status sa3d_atomic_commit(sa3d_atomic_file *af, sa3d_error *err);   /* closes; renames into place */
void sa3d_atomic_abort(sa3d_atomic_file *af);                             /* closes; removes the temp file */
/* Removes every temp file an sa3d_atomic_file of this process is writing. Async-signal-safe: for a SIGINT or
 * SIGTERM handler that then ends the process, so that an interrupted write leaves no "<path>.tmp.<pid>". */
void sa3d_atomic_remove_temps(void);
/* The whole sequence for one buffer: open, write len bytes, commit (abort on failure). */
sa3d_status sa3d_write_file_atomic(const char *path, const void *data, size_t len, sa3d_error *err);

/* Joins dir and name with one '/'. Caller frees. NULL on allocation failure. */
char *sa3d_path_join(const char *dir, const char *name);
int sa3d_file_exists(const char *path);
/* mkdir -p: creates path and its missing parents (mode 0777 & umask); an existing directory is fine. */
sa3d_status sa3d_mkdirs(const char *path, sa3d_error *err);
int sa3d_dir_exists(const char *path);
/* Removes path and, for a folder, everything under it (links themselves, not their targets); 0, or -1 when
 * something stayed. A missing path is 0. */
int sa3d_remove_tree(const char *path);

/* FNV-1a over n bytes, continuing from h (SA3D_FNV_OFFSET to start): the cheap identities of a model, an image
 * file, a cache key. */
#define SA3D_FNV_OFFSET 1469598103934665603ull
static inline uint64_t sa3d_fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *q = (const unsigned char *)p;
    for (size_t i = 0; i < n; i++) h = (h ^ q[i]) * 1099511628211ull;
    return h;
}

/* Thread count: 0 means all online cores. Applies to OpenMP and OpenBLAS; returns the count used. */
int sa3d_set_threads(int n_threads);

/* Monotonic wall clock in seconds. */
double sa3d_now(void);

#endif
