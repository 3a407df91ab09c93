/* File helpers: whole-file reads with a size cap, atomic writes (temp file + fsync + rename), paths,
 * and the process-wide thread count for OpenMP and OpenBLAS. */
#define _XOPEN_SOURCE 700   /* POSIX 2008 with XSI: nftw */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "base.h"

FILE *sa3d_open_regular(const char *path, struct stat *st, sa3d_error *err) {
    /* O_NONBLOCK: a FIFO without a writer would block the open itself, before fstat could refuse it */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        sa3d_fail(err, SA3D_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    int regular = fstat(fd, st) == 0 && S_ISREG(st->st_mode);
    int flags = regular ? fcntl(fd, F_GETFL) : -1;   /* blocking reads again: POSIX leaves the flag's effect on */
    if (flags >= 0 && fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0) {   /* regular files unspecified */
        FILE *f = fdopen(fd, "rb");
        if (f) return f;
    }
    int e = errno;
    close(fd);
    sa3d_fail(err, SA3D_ERR_IO, "%s: %s", path, regular ? strerror(e) : "not a regular file");
    return NULL;
}

sa3d_status sa3d_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len, sa3d_error *err) {
    *out = NULL;
    if (out_len) *out_len = 0;
    struct stat st;
    FILE *f = sa3d_open_regular(path, &st, err);
    if (!f) return SA3D_ERR_IO;
    if ((uint64_t)st.st_size > max_bytes) {
        fclose(f);
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: file is %lld bytes, more than the %zu allowed", path,
                         (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size;
    char *buf = sa3d_malloc(n + 1);
    if (!buf) {
        fclose(f);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: cannot allocate %zu bytes", path, n + 1);
    }
    if (n && fread(buf, 1, n, f) != n) {
        fclose(f);
        sa3d_free(buf);
        return sa3d_fail(err, SA3D_ERR_IO, "%s: read failed", path);
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    if (out_len) *out_len = n;
    return SA3D_OK;
}

/* The temp files being written, for sa3d_atomic_remove_temps in a signal handler, which can neither lock nor
 * allocate: fixed slots, each claimed by a compare-and-swap (0 free -> 1 claimed), its path copied, then marked
 * full (2). A file without a free slot or with a longer path is written all the same, just not listed. */
#define TEMP_SLOTS 64
static char temp_path[TEMP_SLOTS][4352];
static int temp_state[TEMP_SLOTS];

static int temp_list(const char *tmp) {
    if (strlen(tmp) >= sizeof temp_path[0]) return 0;
    for (int k = 0; k < TEMP_SLOTS; k++) {
        int free_ = 0;
        if (__atomic_compare_exchange_n(&temp_state[k], &free_, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            memcpy(temp_path[k], tmp, strlen(tmp) + 1);
            __atomic_store_n(&temp_state[k], 2, __ATOMIC_RELEASE);
            return k + 1;
        }
    }
    return 0;
}

static void temp_unlist(int slot) {
    if (slot > 0) __atomic_store_n(&temp_state[slot - 1], 0, __ATOMIC_RELEASE);
}

void sa3d_atomic_remove_temps(void) {
    for (int k = 0; k < TEMP_SLOTS; k++)
        if (__atomic_load_n(&temp_state[k], __ATOMIC_ACQUIRE) == 2) unlink(temp_path[k]);
}

sa3d_status sa3d_atomic_open(sa3d_atomic_file *af, const char *path, sa3d_error *err) {
    memset(af, 0, sizeof *af);
    if (sa3d_dir_exists(path)) return sa3d_fail(err, SA3D_ERR_IO, "%s: is a directory, not a file name", path);
    size_t n = strlen(path) + 32;
    af->path = sa3d_strdup(path);
    af->tmp_path = sa3d_malloc(n);
    if (!af->path || !af->tmp_path) {
        sa3d_atomic_abort(af);
        return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", path);
    }
    snprintf(af->tmp_path, n, "%s.tmp.%ld", path, (long)getpid());
    af->slot = temp_list(af->tmp_path);   /* before the file exists: a signal in between finds nothing to remove */
    af->f = fopen(af->tmp_path, "wb");
    if (!af->f) {
        sa3d_status s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot create (as %s): %s", path, af->tmp_path,
                                  strerror(errno));
        sa3d_atomic_abort(af);
        return s;
    }
    return SA3D_OK;
}

sa3d_status sa3d_atomic_write(sa3d_atomic_file *af, const void *data, size_t n, sa3d_error *err) {
    if (n && fwrite(data, 1, n, af->f) != n)
        return sa3d_fail(err, SA3D_ERR_IO, "%s: write failed: %s", af->path, strerror(errno));
    return SA3D_OK;
}

sa3d_status sa3d_atomic_commit(sa3d_atomic_file *af, sa3d_error *err) {
    sa3d_status s = SA3D_OK;
    if (fflush(af->f) != 0 || fsync(fileno(af->f)) != 0)
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: flush failed: %s", af->path, strerror(errno));
    if (fclose(af->f) != 0 && s == SA3D_OK)
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: close failed: %s", af->path, strerror(errno));
    af->f = NULL;
    if (s == SA3D_OK && rename(af->tmp_path, af->path) != 0)
        s = sa3d_fail(err, SA3D_ERR_IO, "%s: cannot rename into place: %s", af->path, strerror(errno));
    if (s != SA3D_OK) remove(af->tmp_path);
    temp_unlist(af->slot);
    sa3d_free(af->tmp_path);
    sa3d_free(af->path);
    af->tmp_path = af->path = NULL;
    af->slot = 0;
    return s;
}

void sa3d_atomic_abort(sa3d_atomic_file *af) {
    if (af->f) fclose(af->f);
    if (af->tmp_path) remove(af->tmp_path);
    temp_unlist(af->slot);
    sa3d_free(af->tmp_path);
    sa3d_free(af->path);
    memset(af, 0, sizeof *af);
}

sa3d_status sa3d_write_file_atomic(const char *path, const void *data, size_t len, sa3d_error *err) {
    sa3d_atomic_file af;
    sa3d_status s = sa3d_atomic_open(&af, path, err);
    if (s) return s;
    if ((s = sa3d_atomic_write(&af, data, len, err))) {
        sa3d_atomic_abort(&af);
        return s;
    }
    return sa3d_atomic_commit(&af, err);
}

char *sa3d_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = sa3d_malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

int sa3d_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int sa3d_dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

void openblas_set_num_threads(int num_threads);   /* from OpenBLAS; declared here to keep cblas.h local */

int sa3d_set_threads(int n_threads) {
    int n = n_threads;
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
    return n;
}

double sa3d_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb; (void)type; (void)ftw;
    return remove(path) != 0 && errno != ENOENT;
}

int sa3d_remove_tree(const char *path) {
    struct stat sb;
    if (lstat(path, &sb) != 0) return errno == ENOENT ? 0 : -1;
    /* depth first, links not followed: what a link points to is not part of the tree */
    return nftw(path, remove_entry, 32, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -1;
}

sa3d_status sa3d_mkdirs(const char *path, sa3d_error *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return sa3d_fail(err, SA3D_ERR_ARG, "%s: path too long", path);
    for (char *q = buf + 1; *q; q++)
        if (*q == '/') {
            *q = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return sa3d_fail(err, SA3D_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
            *q = '/';
        }
    if (mkdir(buf, 0777) != 0) {
        int e = errno;   /* the check below calls stat(), which sets errno */
        if (!sa3d_dir_exists(buf))
            return sa3d_fail(err, SA3D_ERR_IO, "%s: cannot create directory: %s", buf,
                             e == EEXIST ? "exists and is not a directory" : strerror(e));
    }
    return SA3D_OK;
}
