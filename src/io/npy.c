/* NumPy .npy reader (imported feature maps): magic, version, the Python-literal header dict ('descr',
 * 'fortran_order', 'shape'), then raw little-endian data. Every number is validated before use. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/providers.h"

/* Finds 'key': in the header and returns a pointer just after the colon and spaces, or NULL. */
static const char *dict_value(const char *h, size_t n, const char *key) {
    size_t k = strlen(key);
    for (size_t i = 0; i + k + 2 < n; i++) {
        if ((h[i] == '\'' || h[i] == '"') && !memcmp(h + i + 1, key, k) && h[i + 1 + k] == h[i]) {
            size_t j = i + k + 2;
            while (j < n && h[j] == ' ') j++;
            if (j >= n || h[j] != ':') return NULL;
            j++;
            while (j < n && h[j] == ' ') j++;
            return j < n ? h + j : NULL;
        }
    }
    return NULL;
}

static float half_to_float(uint16_t hbits) {
    uint32_t sign = (uint32_t)(hbits >> 15) << 31, exp = (hbits >> 10) & 31u, man = hbits & 1023u, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else {   /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 1024u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 1023u) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

sa3d_status sa3d_npy_parse(const void *buf, size_t len, const char *label, float **data, int *ndim, long long dims[4],
                           sa3d_error *err) {
    const unsigned char *b = buf;
    *data = NULL;
    *ndim = 0;
    if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: not a .npy file", label);
    int major = b[6];
    size_t hlen, off;
    if (major == 1) { hlen = (size_t)b[8] | ((size_t)b[9] << 8); off = 10; }
    else if (major == 2 || major == 3) {
        if (len < 12) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: truncated header", label);
        hlen = (size_t)b[8] | ((size_t)b[9] << 8) | ((size_t)b[10] << 16) | ((size_t)b[11] << 24);
        off = 12;
    } else return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: .npy version %d", label, major);
    if (hlen > len - off || hlen > (1u << 20)) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: header length %zu past the end", label, hlen);
    const char *h = (const char *)b + off;
    const char *d = dict_value(h, hlen, "descr"), *fo = dict_value(h, hlen, "fortran_order"),
               *sh = dict_value(h, hlen, "shape");
    if (!d || !fo || !sh) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: header lacks descr, fortran_order or shape", label);
    size_t rest = hlen - (size_t)(d - h);
    size_t item;
    int kind;   /* 0 f4, 1 f2, 2 f8 */
    if (rest >= 5 && !memcmp(d + 1, "<f4", 3)) { item = 4; kind = 0; }
    else if (rest >= 5 && !memcmp(d + 1, "<f2", 3)) { item = 2; kind = 1; }
    else if (rest >= 5 && !memcmp(d + 1, "<f8", 3)) { item = 8; kind = 2; }
    else return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: dtype %.8s (expected <f4, <f2 or <f8)", label, d);
    if ((size_t)(hlen - (size_t)(fo - h)) < 5 || memcmp(fo, "False", 5) != 0)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: fortran_order must be False", label);
    if (*sh != '(') return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: shape is not a tuple", label);
    const char *p = sh + 1, *end = h + hlen;
    size_t numel = 1;
    int nd = 0;
    for (;;) {
        while (p < end && (*p == ' ' || *p == ',')) p++;
        if (p >= end) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: unterminated shape", label);
        if (*p == ')') break;
        if (!isdigit((unsigned char)*p)) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: bad shape entry", label);
        long long v = 0;
        while (p < end && isdigit((unsigned char)*p)) {
            if (v > (1ll << 40)) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: absurd dimension", label);
            v = v * 10 + (*p++ - '0');
        }
        if (nd == 4) return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: more than 4 dimensions", label);
        dims[nd++] = v;
        if (!sa3d_mul_ok(numel, (size_t)v, &numel)) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: shape overflows", label);
    }
    size_t bytes;
    if (!sa3d_mul_ok(numel, item, &bytes) || bytes > len - off - hlen)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: data section holds %zu bytes, the shape needs more", label,
                         len - off - hlen);
    float *out = malloc(numel * sizeof(float) + 1);
    if (!out) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: out of memory", label);
    const unsigned char *src = b + off + hlen;
    for (size_t i = 0; i < numel; i++) {
        if (kind == 0) memcpy(out + i, src + 4 * i, 4);
        else if (kind == 1) { uint16_t v; memcpy(&v, src + 2 * i, 2); out[i] = half_to_float(v); }
        else { double v; memcpy(&v, src + 8 * i, 8); out[i] = (float)v; }
    }
    *data = out;
    *ndim = nd;
    return SA3D_OK;
}

sa3d_status sa3d_npy_read(const char *path, float **data, int *ndim, long long dims[4], sa3d_error *err) {
    char *buf;
    size_t len;
    sa3d_status s = sa3d_read_file(path, (size_t)4 << 30, &buf, &len, err);
    if (s) return s;
    s = sa3d_npy_parse(buf, len, path, data, ndim, dims, err);
    sa3d_free(buf);
    return s;
}
