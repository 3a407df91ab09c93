/* Counted, 64-byte aligned allocation with a fault-injection hook for tests (STYLE.md section 5).
 * Each block carries a 64-byte header holding its size, so realloc can copy and the live count stays exact. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base.h"

#define HDR 64

static atomic_long live_blocks;
static atomic_long fail_countdown;   /* 0 = never fail; otherwise fail when it reaches 1 */

void sa3d_alloc_fail_after(long n) { atomic_store(&fail_countdown, n); }
long sa3d_alloc_live_blocks(void) { return atomic_load(&live_blocks); }

static int should_fail(void) {
    long c = atomic_load(&fail_countdown);
    while (c > 0) {
        if (atomic_compare_exchange_weak(&fail_countdown, &c, c - 1)) return c == 1;
    }
    return 0;
}

void *sa3d_malloc(size_t size) {
    if (size > SIZE_MAX - HDR || should_fail()) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, HDR, size + HDR) != 0) return NULL;
    *(size_t *)p = size;
    atomic_fetch_add(&live_blocks, 1);
    return (char *)p + HDR;
}

void *sa3d_calloc(size_t n, size_t size) {
    size_t total;
    if (!sa3d_mul_ok(n, size, &total)) return NULL;
    void *p = sa3d_malloc(total);
    if (p) memset(p, 0, total);
    return p;
}

void *sa3d_realloc(void *p, size_t size) {
    if (!p) return sa3d_malloc(size);
    size_t old = *(size_t *)((char *)p - HDR);
    void *q = sa3d_malloc(size);
    if (!q) return NULL;
    memcpy(q, p, old < size ? old : size);
    sa3d_free(p);
    return q;
}

void sa3d_free(void *p) {
    if (!p) return;
    atomic_fetch_sub(&live_blocks, 1);
    free((char *)p - HDR);
}

char *sa3d_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = sa3d_malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int sa3d_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int sa3d_mul3_ok(size_t a, size_t b, size_t c, size_t *out) {
    size_t ab;
    return sa3d_mul_ok(a, b, &ab) && sa3d_mul_ok(ab, c, out);
}
