/* MATLAB level-5 MAT-file reader, the subset PF-PASCAL's Annotations/<category>/<id>.mat files need (kps):
 * the 128-byte header, then data elements; a numeric 2-D miMATRIX (any storage type: MATLAB stores a double
 * array of small integers as int8/uint16 and so on), plain or inside a zlib-compressed miCOMPRESSED element.
 * Layout per the MathWorks "MAT-File Format" document (level 5). Every size is checked against the bytes
 * present before use; a file may belong to an attacker. (Belongs in src/io if other layers ever need it.) */
#include <stdint.h>
#include <string.h>
#include <zlib.h>
#include "base/base.h"
#include "data/records.h"

enum {
    MI_INT8 = 1,
    MI_UINT8,
    MI_INT16,
    MI_UINT16,
    MI_INT32,
    MI_UINT32,
    MI_SINGLE,
    MI_DOUBLE = 9,
    MI_INT64 = 12,
    MI_UINT64,
    MI_MATRIX,
    MI_COMPRESSED
};
enum { MX_DOUBLE = 6, MX_UINT64 = 15 }; /* numeric array classes are 6..15 */

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct mat_tag {
    uint32_t type, nbytes;
    size_t data; /* offset of the data */
    size_t next; /* offset of the next element (padded to 8 bytes when asked, clamped to the end;
                                    top-level elements are not padded, as scipy's reader reads them) */
} mat_tag;

/* Reads the tag at pos (normal or small-element form); 0 when it does not fit in n bytes. */
static int read_tag(const unsigned char *b, size_t n, size_t pos, int pad, mat_tag *t) {
    if (pos > n || n - pos < 8) return 0;
    uint32_t w = rd32(b + pos);
    if (w >> 16) { /* small data element: 2-byte size, 2-byte type, 4 bytes of data */
        t->type = w & 0xffffu;
        t->nbytes = w >> 16;
        if (t->nbytes > 4) return 0;
        t->data = pos + 4;
        t->next = pos + 8;
        return 1;
    }
    t->type = w;
    t->nbytes = rd32(b + pos + 4);
    t->data = pos + 8;
    if (t->nbytes > n - t->data) return 0;
    size_t end = t->data + t->nbytes;
    if (pad) end = end + 7 < end ? n : (end + 7) & ~(size_t)7;
    t->next = end < n ? end : n;
    return 1;
}

static size_t type_size(uint32_t type) {
    switch (type) {
    case MI_INT8:
    case MI_UINT8: return 1;
    case MI_INT16:
    case MI_UINT16: return 2;
    case MI_INT32:
    case MI_UINT32:
    case MI_SINGLE: return 4;
    case MI_DOUBLE:
    case MI_INT64:
    case MI_UINT64: return 8;
    default: return 0;
    }
}

static double value_at(const unsigned char *p, uint32_t type) {
    uint64_t u = 0;
    size_t k = type_size(type);
    for (size_t i = 0; i < k; i++) u |= (uint64_t)p[i] << (8 * i);
    switch (type) {
    case MI_INT8: return (double)(int8_t)u;
    case MI_UINT8: return (double)(uint8_t)u;
    case MI_INT16: return (double)(int16_t)u;
    case MI_UINT16: return (double)(uint16_t)u;
    case MI_INT32: return (double)(int32_t)u;
    case MI_UINT32: return (double)(uint32_t)u;
    case MI_SINGLE: {
        uint32_t w = (uint32_t)u;
        float f;
        memcpy(&f, &w, sizeof f);
        return (double)f;
    }
    case MI_DOUBLE: {
        double d;
        memcpy(&d, &u, sizeof d);
        return d;
    }
    case MI_INT64: return (double)(int64_t)u;
    default: return (double)u;
    }
}

/* The header of a miMATRIX element's contents e[0..n): array flags, dimensions and name. Returns 0 when
 * malformed; on success name and name_len point into e, *pos is the offset of the real part. */
typedef struct mat_header {
    uint32_t cls;
    int complex;
    int64_t rows, cols;
    const char *name;
    size_t name_len;
    size_t pos;
} mat_header;

static int read_header(const unsigned char *e, size_t n, mat_header *h) {
    mat_tag t;
    if (!read_tag(e, n, 0, 1, &t) || t.type != MI_UINT32 || t.nbytes < 8) return 0;
    uint32_t flags = rd32(e + t.data);
    h->cls = flags & 0xffu;
    h->complex = (flags >> 11) & 1u;
    size_t pos = t.next;
    if (!read_tag(e, n, pos, 1, &t) || t.type != MI_INT32 || t.nbytes < 8 || t.nbytes % 4) return 0;
    h->rows = (int32_t)rd32(e + t.data);
    h->cols = (int32_t)rd32(e + t.data + 4);
    if (h->rows < 0 || h->cols < 0) return 0;
    for (uint32_t i = 2; i < t.nbytes / 4; i++) /* trailing dimensions must be 1: a 2-D matrix */
        if ((int32_t)rd32(e + t.data + 4 * i) != 1) return 0;
    pos = t.next;
    if (!read_tag(e, n, pos, 1, &t) || (t.type != MI_INT8 && t.type != MI_UINT8)) return 0;
    h->name = (const char *)(e + t.data);
    h->name_len = t.nbytes;
    h->pos = t.next;
    return 1;
}

static int name_is(const mat_header *h, const char *name) {
    return h->name_len == strlen(name) && memcmp(h->name, name, h->name_len) == 0;
}

/* The real part of a matching variable into a fresh row-major array. */
static sa3d_status read_values(const unsigned char *e, size_t n, const mat_header *h, const char *file,
                               const char *name, size_t max_values, double **out, int *rows, int *cols,
                               sa3d_error *err) {
    if (h->cls < MX_DOUBLE || h->cls > MX_UINT64)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: not a numeric matrix (MATLAB class %u)", file, name,
                         h->cls);
    if (h->complex)
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: %s: complex values are not supported", file, name);
    size_t count;
    if (!sa3d_mul_ok((size_t)h->rows, (size_t)h->cols, &count) || count > max_values ||
        (size_t)h->rows > max_values ||
        (size_t)h->cols > max_values) /* also bounds the loops of a 0 x N matrix */
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: %lld x %lld values; at most %zu expected", file, name,
                         (long long)h->rows, (long long)h->cols, max_values);
    mat_tag t;
    size_t es;
    if (count == 0) {
        t.type = MI_DOUBLE;
        t.nbytes = 0;
        t.data = 0;
    } else if (!read_tag(e, n, h->pos, 1, &t) || !(es = type_size(t.type)) || t.nbytes != count * es) {
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: real part missing or not %zu numbers", file, name,
                         count);
    }
    double *v = sa3d_malloc((count ? count : 1) * sizeof *v);
    if (!v) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: %s: out of memory", file, name);
    es = type_size(t.type);
    for (size_t c = 0; c < (size_t)h->cols; c++) /* MATLAB is column-major */
        for (size_t r = 0; r < (size_t)h->rows; r++)
            v[r * (size_t)h->cols + c] = value_at(e + t.data + (c * (size_t)h->rows + r) * es, t.type);
    *out = v;
    *rows = (int)h->rows;
    *cols = (int)h->cols;
    return SA3D_OK;
}

/* Inflates up to cap bytes of a zlib stream; *got receives the count. Returns 0 on a corrupt stream (a stream
 * still going at cap is fine: the caller asked for a prefix). */
static int inflate_prefix(const unsigned char *src, size_t n, unsigned char *dst, size_t cap, size_t *got) {
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) return 0;
    int ok = 1;
    size_t in_done = 0, out_done = 0;
    while (out_done < cap) {
        size_t in_left = n - in_done, out_left = cap - out_done;
        z.next_in = (Bytef *)(uintptr_t)(src + in_done);
        z.avail_in = in_left > UINT32_MAX ? UINT32_MAX : (uInt)in_left;
        z.next_out = dst + out_done;
        z.avail_out = out_left > UINT32_MAX ? UINT32_MAX : (uInt)out_left;
        uInt ai = z.avail_in, ao = z.avail_out;
        int r = inflate(&z, Z_NO_FLUSH);
        in_done += ai - z.avail_in;
        out_done += ao - z.avail_out;
        if (r == Z_STREAM_END) break;
        if (r != Z_OK && !(r == Z_BUF_ERROR && out_done == cap)) {
            ok = 0;
            break;
        }
        if (ai == z.avail_in && ao == z.avail_out) {
            ok = 0;
            break;
        } /* no progress: truncated stream */
    }
    inflateEnd(&z);
    *got = out_done;
    return ok;
}

sa3d_status sa3d_mat_read_matrix(const unsigned char *buf, size_t len, const char *file, const char *name,
                                 size_t max_values, double **out, int *rows, int *cols, sa3d_error *err) {
    *out = NULL;
    *rows = *cols = 0;
    if (len < 128) return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %zu bytes; not a level-5 MAT file", file, len);
    if (len >= 10 && !memcmp(buf, "MATLAB 7.3", 10))
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: MAT v7.3 (HDF5) files are not supported", file);
    if (buf[126] == 'M' && buf[127] == 'I')
        return sa3d_fail(err, SA3D_ERR_UNSUPPORTED, "%s: big-endian MAT files are not supported", file);
    if (buf[126] != 'I' || buf[127] != 'M' || buf[124] != 0x00 || buf[125] != 0x01)
        return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: header: not a level-5 MAT file", file);
    size_t pos = 128;
    while (pos < len) {
        mat_tag t;
        mat_header h;
        if (!read_tag(buf, len, pos, 0, &t))
            return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: data element at byte %zu: truncated", file, pos);
        if (t.type == MI_MATRIX) {
            if (read_header(buf + t.data, t.nbytes, &h) && name_is(&h, name))
                return read_values(buf + t.data, t.nbytes, &h, file, name, max_values, out, rows, cols, err);
        } else if (t.type == MI_COMPRESSED) {
            /* inflate the start first: the inner tag and the matrix header name the variable */
            unsigned char head[512];
            size_t got = 0;
            if (!inflate_prefix(buf + t.data, t.nbytes, head, sizeof head, &got) || got < 8)
                return sa3d_fail(err, SA3D_ERR_FORMAT,
                                 "%s: compressed element at byte %zu: corrupt or truncated "
                                 "zlib data",
                                 file, pos);
            uint32_t inner_type = rd32(head), inner_bytes = rd32(head + 4);
            size_t part = got - 8 < inner_bytes ? got - 8 : inner_bytes;
            if (inner_type == MI_MATRIX && read_header(head + 8, part, &h) && name_is(&h, name)) {
                size_t want = (size_t)inner_bytes + 8, have = 0;
                size_t cap = 4096 + max_values * 8;
                if (want > cap)
                    return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: %zu bytes; at most %zu expected", file,
                                     name, want, cap);
                unsigned char *e = sa3d_malloc(want);
                if (!e) return sa3d_fail(err, SA3D_ERR_NOMEM, "%s: %s: out of memory", file, name);
                sa3d_status s;
                if (!inflate_prefix(buf + t.data, t.nbytes, e, want, &have) || have != want)
                    s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: compressed data truncated or corrupt", file,
                                  name);
                else if (!read_header(e + 8, want - 8, &h))
                    s = sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: malformed matrix header", file, name);
                else
                    s = read_values(e + 8, want - 8, &h, file, name, max_values, out, rows, cols, err);
                sa3d_free(e);
                return s;
            }
        }
        pos = t.next;
    }
    return sa3d_fail(err, SA3D_ERR_FORMAT, "%s: %s: no such numeric variable", file, name);
}
