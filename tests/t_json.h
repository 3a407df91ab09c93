/* Reading the reference JSON files of ../shared/fixtures/semalign3d-reference in tests: members by dotted path,
 * nested arrays flattened row-major. A missing key is a test failure (T_FAIL) and gives NULL / empty arrays. */
#ifndef SA3D_T_JSON_H
#define SA3D_T_JSON_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "t.h"

/* Object member by dotted path ("inputs.project.f"); NULL (and a failure) when absent. */
__attribute__((unused)) static const cJSON *jget(const cJSON *o, const char *path) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    for (char *save = NULL, *tok = strtok_r(buf, ".", &save); tok && cur; tok = strtok_r(NULL, ".", &save))
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    if (!cur) T_FAIL("reference key '%s' missing", path);
    return cur;
}

/* Flattens nested arrays of numbers or booleans, row-major; depth capped (no input-driven recursion). */
__attribute__((unused)) static size_t jflat_rec(double *out, size_t cap, size_t n, const cJSON *a, int depth) {
    if (depth > 8) return n;
    if (cJSON_IsArray(a)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, a) n = jflat_rec(out, cap, n, e, depth + 1);
        return n;
    }
    if (n < cap) out[n] = cJSON_IsBool(a) ? (cJSON_IsTrue(a) ? 1.0 : 0.0) : a->valuedouble;
    return n + 1;
}
__attribute__((unused)) static size_t jcount(const cJSON *a) { return a ? jflat_rec(NULL, 0, 0, a, 0) : 0; }

/* Malloc'd flat copy of the array at path (one spare element; empty when absent); *n gets the count. */
__attribute__((unused)) static double *jarr(const cJSON *o, const char *path, size_t *n) {
    const cJSON *a = jget(o, path);
    size_t c = jcount(a);
    double *v = calloc(c + 1, sizeof(double));
    if (a) jflat_rec(v, c, 0, a, 0);
    if (n) *n = c;
    return v;
}
__attribute__((unused)) static int32_t *to_i32(const double *v, size_t n) {
    int32_t *o = calloc(n + 1, sizeof(int32_t));
    for (size_t i = 0; i < n; i++) o[i] = (int32_t)v[i];
    return o;
}
__attribute__((unused)) static int32_t *jarr_i32(const cJSON *o, const char *path, size_t *n) {
    size_t c;
    double *d = jarr(o, path, &c);
    int32_t *v = to_i32(d, c);
    free(d);
    if (n) *n = c;
    return v;
}
/* Shape of a nested array: dims outermost first; returns the rank. */
__attribute__((unused)) static int jshape(const cJSON *a, int *dims, int max) {
    int r = 0;
    while (a && cJSON_IsArray(a) && r < max) {
        dims[r++] = cJSON_GetArraySize(a);
        a = cJSON_GetArrayItem(a, 0);
    }
    return r;
}

#endif
