/* Fuzz target for the safetensors reader (STYLE.md section 10): any bytes given to sa3d_st_open_memory must
 * either be rejected with a status or yield a handle whose every tensor and metadata entry can be used. The
 * checks below abort on an inconsistent handle, so the fuzzer reports it as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "semalign3d/safetensors.h"

#define MAX_READ_ELEMS (1u << 20)   /* larger tensors are checked but not converted */

static float buf[MAX_READ_ELEMS];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sa3d_safetensors *st = NULL;
    sa3d_error err;
    if (sa3d_st_open_memory(&st, data, size, "fuzz", &err) != SA3D_OK) {
        if (st || !memchr(err.msg, '\0', sizeof err.msg) || strncmp(err.msg, "fuzz", 4) != 0) abort();
        return 0;
    }
    volatile float sink = 0.0f;
    const uint8_t *end = data + size;
    for (int i = 0; i < sa3d_st_count(st); i++) {
        const sa3d_st_tensor *t = sa3d_st_get(st, i);
        if (!t || sa3d_st_find(st, t->name) != t) abort();
        if (t->ndim < 0 || t->ndim > SA3D_ST_MAX_DIMS) abort();
        if (t->nbytes != t->numel * sa3d_dtype_size(t->dtype)) abort();
        const uint8_t *p = t->data;
        if (t->nbytes && (p < data || p > end || (size_t)(end - p) < t->nbytes)) abort();
        if (t->numel > MAX_READ_ELEMS) continue;
        if (sa3d_st_read_f32(t, buf, t->numel, &err) != SA3D_OK) abort();
        for (size_t j = 0; j < t->numel; j++) sink += buf[j];
    }
    for (int i = 0; i < sa3d_st_metadata_count(st); i++) {
        const char *k = sa3d_st_metadata_key(st, i);
        const char *v = k ? sa3d_st_metadata(st, k) : NULL;
        if (!v) abort();
        sink += (float)strlen(v);
    }
    (void)sink;
    sa3d_st_close(st);
    return 0;
}
