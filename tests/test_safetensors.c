/* safetensors: writer/reader round trip for every dtype, exact F16/BF16 conversion, every fixture file,
 * sharded checkpoints, corrupt files built here (each must fail with a specific status and a message naming
 * the file) and allocation-fault injection (every failure clean, nothing leaked). */
#define _XOPEN_SOURCE 700   /* nftw */
#include <ftw.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/base.h"
#include "semalign3d/safetensors.h"
#include "t.h"

/* ---------------------------------------------------------------------------------------------------- */
/* helpers */

static char g_tmp[64];

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static void rm_tmp(void) {
    if (g_tmp[0]) nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A private temp directory under /tmp, removed at exit. */
static const char *tmpdir(void) {
    if (!g_tmp[0]) {
        snprintf(g_tmp, sizeof g_tmp, "/tmp/sa3d_test_st_XXXXXX");
        if (!mkdtemp(g_tmp)) { perror("mkdtemp"); exit(1); }
        atexit(rm_tmp);
    }
    return g_tmp;
}

static void tmp_path(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir(), name); }

static void make_dir(char *out, size_t n, const char *name) {
    tmp_path(out, n, name);
    if (mkdir(out, 0700) != 0) T_FAIL("mkdir %s failed", out);
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    int ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

static uint8_t *read_bytes(const char *path, size_t *n) {
    char *p = NULL;
    sa3d_error err;
    if (sa3d_read_file(path, (size_t)1 << 30, &p, n, &err) != SA3D_OK) return NULL;
    uint8_t *q = malloc(*n + 1);
    if (q) memcpy(q, p, *n + 1);
    sa3d_free(p);
    return q;
}

/* A safetensors image: header length hlen (as stored), header text, then data_len pattern bytes. */
static uint8_t *make_st_hlen(uint64_t hlen, const char *header, size_t data_len, size_t *n) {
    size_t hn = strlen(header);
    *n = 8 + hn + data_len;
    uint8_t *b = malloc(*n);
    if (!b) { perror("malloc"); exit(1); }
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, header, hn);
    for (size_t i = 0; i < data_len; i++) b[8 + hn + i] = (uint8_t)(i * 7 + 1);
    return b;
}

static uint8_t *make_st(const char *header, size_t data_len, size_t *n) {
    return make_st_hlen(strlen(header), header, data_len, n);
}

static int n_negative;

/* Writes bytes to <tmp>/<tag>.safetensors; opening it (file and memory) must fail with `want`, set *out to
 * NULL and give a message naming the file (or the label) and containing needle. */
static void expect_bad_bytes(const char *tag, const uint8_t *b, size_t n, sa3d_status want,
                             const char *needle) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.safetensors", tmpdir(), tag);
    if (!write_bytes(path, b, n)) { T_FAIL("%s: cannot write", path); return; }
    sa3d_safetensors *st = (sa3d_safetensors *)&n;   /* must be reset to NULL */
    sa3d_error err = { 0 };
    T_STATUS(sa3d_st_open(&st, path, &err), want, &err);
    T_CHECK(st == NULL);
    T_CONTAINS(err.msg, path);
    if (needle) T_CONTAINS(err.msg, needle);
    if (n_negative++ < 1000) printf("       %-22s %s\n", tag, err.msg);
    sa3d_st_close(st == (sa3d_safetensors *)&n ? NULL : st);
    st = (sa3d_safetensors *)&n;
    sa3d_error err2 = { 0 };
    T_STATUS(sa3d_st_open_memory(&st, b, n, tag, &err2), want, &err2);
    T_CHECK(st == NULL);
    T_CONTAINS(err2.msg, tag);
    if (needle) T_CONTAINS(err2.msg, needle);
    remove(path);
}

static void expect_bad(const char *tag, const char *header, size_t data_len, sa3d_status want,
                       const char *needle) {
    size_t n;
    uint8_t *b = make_st(header, data_len, &n);
    expect_bad_bytes(tag, b, n, want, needle);
    free(b);
}

static void expect_good(const char *tag, const char *header, size_t data_len, int n_tensors) {
    size_t n;
    uint8_t *b = make_st(header, data_len, &n);
    sa3d_safetensors *st = NULL;
    sa3d_error err = { 0 };
    T_OK(sa3d_st_open_memory(&st, b, n, tag, &err), &err);
    T_CHECK(sa3d_st_count(st) == n_tensors);
    sa3d_st_close(st);
    free(b);
}

static float bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* A tensor record over caller memory, for conversion tests without a file. */
static sa3d_st_tensor mem_tensor(sa3d_dtype dt, const void *data, size_t numel) {
    sa3d_st_tensor t;
    memset(&t, 0, sizeof t);
    t.name = "mem";
    t.file = "<test>";
    t.dtype = dt;
    t.ndim = 1;
    t.shape[0] = (int64_t)numel;
    t.numel = numel;
    t.data = data;
    t.nbytes = numel * sa3d_dtype_size(dt);
    return t;
}

/* Reads a whole tensor as float (malloc; NULL on failure). */
static float *read_all(const sa3d_st_tensor *t) {
    float *x = malloc(t->numel * sizeof(float) + 1);
    sa3d_error err = { 0 };
    if (!x) return NULL;
    sa3d_status s = sa3d_st_read_f32(t, x, t->numel, &err);
    if (s != SA3D_OK) {
        T_FAIL("read_f32 '%s': %s", t->name, err.msg);
        free(x);
        return NULL;
    }
    return x;
}

/* ---------------------------------------------------------------------------------------------------- */
/* 1. round trip and conversion */

static const float rt_f32[6] = { -2.0f, -0.5f, 1.0f, 2.5f, 1e-30f, 3.0e38f };
static const uint16_t rt_f16[5] = { 0x3c00, 0xc000, 0x0001, 0x7c00, 0x8000 };
static const float rt_f16_want[5] = { 1.0f, -2.0f, 0x1p-24f, INFINITY, -0.0f };
static const uint16_t rt_bf16[3] = { 0x3f80, 0xc040, 0x0001 };
static const float rt_bf16_want[3] = { 1.0f, -3.0f, 0x1p-133f };
static const double rt_f64[3] = { 0.1, -1e300, 1.0 + 0x1p-24 + 0x1p-50 };
static const int64_t rt_i64[3] = { -5, (int64_t)1 << 40, ((int64_t)1 << 62) + 1 };
static const int32_t rt_i32[3] = { -7, 2147483647, 16777217 };
static const int16_t rt_i16[2] = { -32768, 32767 };
static const int8_t rt_i8[3] = { -128, 0, 127 };
static const uint8_t rt_u8[2] = { 0, 255 };
static const uint8_t rt_bool[3] = { 0, 1, 1 };
static const float rt_scalar = 42.0f;
#define RT_QUOTE "a \"q\" \\ \n\t\x01 \xc3\xa9"   /* needs JSON escapes; UTF-8 passes through */

/* Writes the round-trip file with every dtype, a scalar, a zero-size tensor and metadata. */
static sa3d_status write_roundtrip(const char *path, sa3d_error *err) {
    sa3d_status s = SA3D_ERR_NOMEM;
    sa3d_st_writer *w = sa3d_st_writer_new();
    if (!w) return sa3d_fail(err, SA3D_ERR_NOMEM, "writer_new failed");
    const int64_t s23[2] = { 2, 3 }, s5[1] = { 5 }, s3[1] = { 3 }, s2[1] = { 2 }, s05[2] = { 0, 5 };
    if ((s = sa3d_st_writer_add_f32(w, "f32", 2, s23, rt_f32, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "f16", SA3D_DTYPE_F16, 1, s5, rt_f16, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "bf16", SA3D_DTYPE_BF16, 1, s3, rt_bf16, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "f64", SA3D_DTYPE_F64, 1, s3, rt_f64, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "i64", SA3D_DTYPE_I64, 1, s3, rt_i64, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "i32", SA3D_DTYPE_I32, 1, s3, rt_i32, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "i16", SA3D_DTYPE_I16, 1, s2, rt_i16, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "i8", SA3D_DTYPE_I8, 1, s3, rt_i8, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "u8", SA3D_DTYPE_U8, 1, s2, rt_u8, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add(w, "bool", SA3D_DTYPE_BOOL, 1, s3, rt_bool, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add_f32(w, "scalar", 0, NULL, &rt_scalar, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_add_f32(w, "empty", 2, s05, NULL, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_set_metadata(w, "format", "pt", err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_set_metadata(w, "quote", RT_QUOTE, err)) != SA3D_OK) goto done;
    if ((s = sa3d_st_writer_set_metadata(w, "version", "old", err)) != SA3D_OK) goto done;
    /* Setting a key again replaces its value. */
    if ((s = sa3d_st_writer_set_metadata(w, "version", sa3d_version(), err)) != SA3D_OK) goto done;
    s = sa3d_st_writer_write(w, path, err);
done:
    sa3d_st_writer_free(w);
    return s;
}

static void check_values(const sa3d_safetensors *st, const char *name, const float *want, size_t n) {
    const sa3d_st_tensor *t = sa3d_st_find(st, name);
    if (!t) { T_FAIL("tensor '%s' not found", name); return; }
    T_CHECK(t->numel == n);
    if (t->numel != n) return;
    float *x = read_all(t);
    for (size_t i = 0; x && i < n; i++) {
        if (f32_bits(x[i]) != f32_bits(want[i]) && !(isnan(x[i]) && isnan(want[i])))
            T_FAIL("%s[%zu] = %.9g (0x%08x), expected %.9g (0x%08x)", name, i, (double)x[i], f32_bits(x[i]),
                   (double)want[i], f32_bits(want[i]));
    }
    free(x);
}

static void case_roundtrip(void) {
    char path[512];
    sa3d_error err = { 0 };
    tmp_path(path, sizeof path, "roundtrip.safetensors");
    T_OK(write_roundtrip(path, &err), &err);
    sa3d_safetensors *st = NULL;
    T_OK(sa3d_st_open(&st, path, &err), &err);
    if (!st) return;
    static const char *order[] = { "f32", "f16", "bf16", "f64", "i64", "i32", "i16", "i8", "u8", "bool",
                                   "scalar", "empty" };
    static const sa3d_dtype dts[] = { SA3D_DTYPE_F32, SA3D_DTYPE_F16, SA3D_DTYPE_BF16, SA3D_DTYPE_F64,
                                      SA3D_DTYPE_I64, SA3D_DTYPE_I32, SA3D_DTYPE_I16, SA3D_DTYPE_I8,
                                      SA3D_DTYPE_U8, SA3D_DTYPE_BOOL, SA3D_DTYPE_F32, SA3D_DTYPE_F32 };
    T_CHECK(sa3d_st_count(st) == 12);
    for (int i = 0; i < 12 && i < sa3d_st_count(st); i++) {
        const sa3d_st_tensor *t = sa3d_st_get(st, i);
        if (strcmp(t->name, order[i]) != 0) T_FAIL("tensor %d is '%s', expected '%s'", i, t->name, order[i]);
        T_CHECK(t->dtype == dts[i]);
        T_CHECK(sa3d_st_find(st, order[i]) == t);
        T_CHECK(strcmp(t->file, path) == 0);
        T_CHECK(t->nbytes == t->numel * sa3d_dtype_size(t->dtype));
    }
    T_CHECK(sa3d_st_get(st, -1) == NULL && sa3d_st_get(st, 12) == NULL);
    const sa3d_st_tensor *t = sa3d_st_find(st, "f32");
    T_CHECK(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && t->numel == 6);
    t = sa3d_st_find(st, "scalar");
    T_CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 4);
    t = sa3d_st_find(st, "empty");
    T_CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 5 && t->numel == 0 && t->nbytes == 0);
    if (t) T_OK(sa3d_st_read_f32(t, NULL, 0, &err), &err);

    check_values(st, "f32", rt_f32, 6);
    check_values(st, "f16", rt_f16_want, 5);
    check_values(st, "bf16", rt_bf16_want, 3);
    const float f64_want[3] = { 0.1f, -INFINITY, 0x1.000002p0f };   /* round to nearest, not truncation */
    check_values(st, "f64", f64_want, 3);
    const float i64_want[3] = { -5.0f, 0x1p40f, 0x1p62f };
    check_values(st, "i64", i64_want, 3);
    const float i32_want[3] = { -7.0f, 0x1p31f, 16777216.0f };     /* ties to even */
    check_values(st, "i32", i32_want, 3);
    const float i16_want[2] = { -32768.0f, 32767.0f };
    check_values(st, "i16", i16_want, 2);
    const float i8_want[3] = { -128.0f, 0.0f, 127.0f };
    check_values(st, "i8", i8_want, 3);
    const float u8_want[2] = { 0.0f, 255.0f };
    check_values(st, "u8", u8_want, 2);
    const float bool_want[3] = { 0.0f, 1.0f, 1.0f };
    check_values(st, "bool", bool_want, 3);
    check_values(st, "scalar", &rt_scalar, 1);

    T_CHECK(sa3d_st_metadata_count(st) == 3);
    const char *v = sa3d_st_metadata(st, "format");
    T_CHECK(v && strcmp(v, "pt") == 0);
    v = sa3d_st_metadata(st, "quote");
    T_CHECK(v && strcmp(v, RT_QUOTE) == 0);
    v = sa3d_st_metadata(st, "version");
    T_CHECK(v && strcmp(v, sa3d_version()) == 0);
    T_CHECK(sa3d_st_metadata(st, "absent") == NULL && sa3d_st_find(st, "absent") == NULL);
    T_CHECK(sa3d_st_metadata_key(st, 0) && strcmp(sa3d_st_metadata_key(st, 0), "format") == 0);
    T_CHECK(sa3d_st_metadata_key(st, 3) == NULL);
    sa3d_st_close(st);

    /* Layout as huggingface/safetensors writes it: data section 8-byte aligned, header padded with spaces. */
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    T_CHECK(b != NULL);
    if (b) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
        T_CHECK(hl % 8 == 0 && 8 + hl <= n);
        T_CHECK(b[8] == '{');
        size_t e = (size_t)hl + 8;
        while (e > 8 && b[e - 1] == ' ') e--;
        T_CHECK(e > 8 && b[e - 1] == '}');
        T_CHECK(hl + 8 - e < 8);
        free(b);
    }
    printf("       wrote and read back %s\n", path);
}

static void case_overwrite(void) {
    char path[512], bad[512];
    sa3d_error err = { 0 };
    tmp_path(path, sizeof path, "overwrite.safetensors");
    T_OK(write_roundtrip(path, &err), &err);
    sa3d_st_writer *w = sa3d_st_writer_new();
    const float x[2] = { 7.0f, 8.0f };
    const int64_t shp[1] = { 2 };
    T_OK(sa3d_st_writer_add_f32(w, "x", 1, shp, x, &err), &err);
    T_OK(sa3d_st_writer_write(w, path, &err), &err);
    /* A destination in a missing folder fails with SA3D_ERR_IO naming it and leaves nothing behind. */
    tmp_path(bad, sizeof bad, "no_such_dir/out.safetensors");
    T_STATUS(sa3d_st_writer_write(w, bad, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, "no_such_dir/out.safetensors");
    sa3d_st_writer_free(w);
    sa3d_safetensors *st = NULL;
    T_OK(sa3d_st_open(&st, path, &err), &err);
    T_CHECK(sa3d_st_count(st) == 1);
    check_values(st, "x", x, 2);
    sa3d_st_close(st);
    /* No temp file is left beside the output. */
    char tmpl[600];
    snprintf(tmpl, sizeof tmpl, "%s.tmp.%ld", path, (long)getpid());
    T_CHECK(!sa3d_file_exists(tmpl));
}

/* Reference binary16 decoding through double arithmetic, independent of the library's bit manipulation. */
static float f16_ref(uint16_t h) {
    int sign = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v;
    if (e == 0) v = ldexp((double)m, -24);
    else if (e == 31) v = m ? (double)NAN : (double)INFINITY;
    else v = ldexp(1024.0 + m, e - 25);
    return (float)(sign ? -v : v);
}

static void case_f16(void) {
    static uint16_t h[65536];
    static float out[65536];
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    sa3d_st_tensor t = mem_tensor(SA3D_DTYPE_F16, h, 65536);
    sa3d_error err = { 0 };
    T_OK(sa3d_st_read_f32(&t, out, 65536, &err), &err);
    int bad = 0;
    for (int i = 0; i < 65536; i++) {
        float r = f16_ref((uint16_t)i);
        uint32_t ob = f32_bits(out[i]);
        if (isnan(r)) {   /* NaN keeps sign and payload: the 10 mantissa bits move to the top of 23 */
            uint32_t want = ((uint32_t)(i >> 15) << 31) | 0x7f800000u | ((uint32_t)(i & 1023) << 13);
            if (ob != want && bad++ < 5) T_FAIL("f16 0x%04x -> 0x%08x, expected NaN 0x%08x", i, ob, want);
        } else if (ob != f32_bits(r) && bad++ < 5) {
            T_FAIL("f16 0x%04x -> %.9g, expected %.9g", i, (double)out[i], (double)r);
        }
    }
    /* Known values (IEEE 754 binary16 table). */
    T_CHECK(out[0x3c00] == 1.0f && out[0xc000] == -2.0f && out[0x7bff] == 65504.0f);
    T_CHECK(out[0x0001] == 0x1p-24f && out[0x03ff] == 0x1.ff8p-15f && out[0x0400] == 0x1p-14f);
    T_CHECK(out[0x3555] == 0x1.554p-2f && out[0x7c00] == INFINITY && out[0xfc00] == -INFINITY);
    T_CHECK(isnan(out[0x7e00]) && out[0x8000] == 0.0f && signbit(out[0x8000]));
    printf("       all 65536 F16 values exact (%d mismatches)\n", bad);
}

static void case_bf16(void) {
    static uint16_t h[65536];
    static float out[65536];
    for (int i = 0; i < 65536; i++) h[i] = (uint16_t)i;
    sa3d_st_tensor t = mem_tensor(SA3D_DTYPE_BF16, h, 65536);
    sa3d_error err = { 0 };
    T_OK(sa3d_st_read_f32(&t, out, 65536, &err), &err);
    int bad = 0;
    for (int i = 0; i < 65536; i++)
        if (f32_bits(out[i]) != (uint32_t)i << 16 && bad++ < 5)
            T_FAIL("bf16 0x%04x -> 0x%08x", i, f32_bits(out[i]));
    T_CHECK(out[0x3f80] == 1.0f && out[0xc040] == -3.0f && out[0x4049] == 0x1.92p1f);
    T_CHECK(out[0x0001] == 0x1p-133f && out[0x7f80] == INFINITY && isnan(out[0x7fc0]));
    T_CHECK(out[0x7f7f] == bits_f32(0x7f7f0000u));
    printf("       all 65536 BF16 values exact (%d mismatches)\n", bad);
}

static void case_read_args(void) {
    const float x[3] = { 1.0f, 2.0f, 3.0f };
    float y[4];
    sa3d_st_tensor t = mem_tensor(SA3D_DTYPE_F32, x, 3);
    t.name = "weights.q";
    sa3d_error err = { 0 };
    T_STATUS(sa3d_st_read_f32(&t, y, 4, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "weights.q");
    T_CONTAINS(err.msg, "<test>");
    T_STATUS(sa3d_st_read_f32(&t, NULL, 3, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_read_f32(NULL, y, 3, &err), SA3D_ERR_ARG, &err);
    /* Unaligned F32 data is read through memcpy. */
    unsigned char raw[13];
    memcpy(raw + 1, x, sizeof x);
    t.data = raw + 1;
    T_OK(sa3d_st_read_f32(&t, y, 3, &err), &err);
    T_CHECK(y[0] == 1.0f && y[1] == 2.0f && y[2] == 3.0f);
    T_CHECK(sa3d_dtype_size(SA3D_DTYPE_BF16) == 2 && sa3d_dtype_size((sa3d_dtype)99) == 0);
    T_CHECK(strcmp(sa3d_dtype_name(SA3D_DTYPE_BOOL), "BOOL") == 0);
    T_CHECK(sa3d_st_count(NULL) == 0 && sa3d_st_find(NULL, "x") == NULL);
    sa3d_st_close(NULL);
    sa3d_checkpoint_close(NULL);
    sa3d_st_writer_free(NULL);
}

/* sa3d_st_read_f32_finite: finite data reads as sa3d_st_read_f32 does; a NaN, an infinity or an F64 beyond the
 * float range (inf after conversion) is refused naming file, tensor and index; argument errors pass through. */
static void case_read_finite(void) {
    float x[4] = { 1.0f, -2.0f, 0x1p-149f, 3.0e38f }, y[4];
    sa3d_st_tensor t = mem_tensor(SA3D_DTYPE_F32, x, 4);
    t.name = "pixel_values";
    sa3d_error err = { 0 };
    T_OK(sa3d_st_read_f32_finite(&t, y, 4, &err), &err);
    T_CHECK(memcmp(x, y, sizeof x) == 0);
    x[2] = NAN;
    T_STATUS(sa3d_st_read_f32_finite(&t, y, 4, &err), SA3D_ERR_NUMERIC, &err);
    T_CONTAINS(err.msg, "<test>: tensor 'pixel_values': non-finite value at index 2");
    x[2] = 0.0f;
    x[0] = -INFINITY;
    T_STATUS(sa3d_st_read_f32_finite(&t, y, 4, &err), SA3D_ERR_NUMERIC, &err);
    T_CONTAINS(err.msg, "at index 0");
    double d[2] = { 1.0, 1e300 };
    sa3d_st_tensor td = mem_tensor(SA3D_DTYPE_F64, d, 2);
    T_STATUS(sa3d_st_read_f32_finite(&td, y, 2, &err), SA3D_ERR_NUMERIC, &err);
    T_CONTAINS(err.msg, "at index 1");
    T_STATUS(sa3d_st_read_f32_finite(&t, y, 3, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_read_f32_finite(NULL, y, 3, &err), SA3D_ERR_ARG, &err);
}

static void case_many(void) {
    enum { N = 1000 };
    static float v[N];
    static char names[N][32];
    sa3d_error err = { 0 };
    sa3d_st_writer *w = sa3d_st_writer_new();
    const int64_t one[1] = { 1 };
    for (int k = 0; k < N; k++) {
        int i = (int)(((unsigned)k * 7919u) % N);   /* a permutation: names not added in sorted order */
        snprintf(names[i], sizeof names[i], "encoder.layer.%d.weight", i);
        v[i] = (float)i;
        T_OK(sa3d_st_writer_add_f32(w, names[i], 1, one, &v[i], &err), &err);
    }
    char path[512];
    tmp_path(path, sizeof path, "many.safetensors");
    T_OK(sa3d_st_writer_write(w, path, &err), &err);
    sa3d_st_writer_free(w);
    sa3d_safetensors *st = NULL;
    T_OK(sa3d_st_open(&st, path, &err), &err);
    T_CHECK(sa3d_st_count(st) == N);
    int found = 0;
    for (int i = 0; st && i < N; i++) {
        const sa3d_st_tensor *t = sa3d_st_find(st, names[i]);
        float x = -1.0f;
        if (t && sa3d_st_read_f32(t, &x, 1, &err) == SA3D_OK && x == (float)i) found++;
    }
    T_CHECK(found == N);
    T_CHECK(sa3d_st_find(st, "encoder.layer.1000.weight") == NULL && sa3d_st_find(st, "") == NULL);
    sa3d_st_close(st);
}

/* ---------------------------------------------------------------------------------------------------- */
/* 2. fixtures */

static int n_fixture_files;

static int visit_fixture(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)ftw;
    size_t n = strlen(p), suf = strlen(".safetensors");
    if (flag != FTW_F || n < suf || strcmp(p + n - suf, ".safetensors") != 0) return 0;
    n_fixture_files++;
    sa3d_safetensors *st = NULL;
    sa3d_error err = { 0 };
    T_OK(sa3d_st_open(&st, p, &err), &err);
    if (!st) return 0;
    size_t elems = 0;
    for (int i = 0; i < sa3d_st_count(st); i++) {
        const sa3d_st_tensor *t = sa3d_st_get(st, i);
        T_CHECK(sa3d_st_find(st, t->name) == t);
        float *x = read_all(t);
        if (x && t->dtype == SA3D_DTYPE_F32) T_CHECK(memcmp(x, t->data, t->nbytes) == 0);
        elems += t->numel;
        free(x);
    }
    /* The memory entry point agrees with the file one. */
    size_t len;
    uint8_t *b = read_bytes(p, &len);
    sa3d_safetensors *sm = NULL;
    if (b) T_OK(sa3d_st_open_memory(&sm, b, len, p, &err), &err);
    T_CHECK(sm && sa3d_st_count(sm) == sa3d_st_count(st));
    sa3d_st_close(sm);
    free(b);
    printf("       %-70s %4d tensors %9zu elements %d metadata\n", p, sa3d_st_count(st), elems,
           sa3d_st_metadata_count(st));
    sa3d_st_close(st);
    return 0;
}

static int visit_ckpt(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)ftw;
    if (flag != FTW_D) return 0;
    char *f = sa3d_path_join(p, "model.safetensors");
    if (f && sa3d_file_exists(f)) {
        sa3d_checkpoint *ck = NULL;
        sa3d_error err = { 0 };
        T_OK(sa3d_checkpoint_open(&ck, p, &err), &err);
        T_CHECK(ck && sa3d_checkpoint_count(ck) > 0);
        for (int i = 0; i < sa3d_checkpoint_count(ck); i++) {
            const sa3d_st_tensor *t = sa3d_checkpoint_get(ck, i);
            T_CHECK(sa3d_checkpoint_find(ck, t->name) == t);
        }
        sa3d_checkpoint_close(ck);
    }
    sa3d_free(f);
    return 0;
}

static void case_fixtures(void) {
    const char *root = t_fixtures_root();
    n_fixture_files = 0;
    if (nftw(root, visit_fixture, 16, FTW_PHYS) != 0) T_FAIL("cannot walk fixture root %s", root);
    if (n_fixture_files == 0) T_FAIL("no *.safetensors file under the fixture root %s", root);
}

static void case_fixture_checkpoints(void) {
    const char *root = t_fixtures_root();
    if (nftw(root, visit_ckpt, 16, FTW_PHYS) != 0) T_FAIL("cannot walk fixture root %s", root);
}

/* ---------------------------------------------------------------------------------------------------- */
/* 3. checkpoints */

static const float sh_a[4] = { 1, 2, 3, 4 }, sh_b[2] = { -1, -2 }, sh_c[3] = { 10, 20, 30 }, sh_d[1] = { 5 };

static sa3d_status write_shard(const char *dir, const char *file, const char *n1, const float *x1, int64_t s1,
                               const char *n2, const float *x2, int64_t s2, sa3d_error *err) {
    sa3d_st_writer *w = sa3d_st_writer_new();
    if (!w) return sa3d_fail(err, SA3D_ERR_NOMEM, "writer_new");
    char *path = sa3d_path_join(dir, file);
    sa3d_status s = SA3D_ERR_NOMEM;
    if (!path) goto done;
    if ((s = sa3d_st_writer_add_f32(w, n1, 1, &s1, x1, err)) != SA3D_OK) goto done;
    if (n2 && (s = sa3d_st_writer_add_f32(w, n2, 1, &s2, x2, err)) != SA3D_OK) goto done;
    s = sa3d_st_writer_write(w, path, err);
done:
    sa3d_free(path);
    sa3d_st_writer_free(w);
    return s;
}

static void write_text(const char *dir, const char *file, const char *text) {
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    if (!write_bytes(path, text, strlen(text))) T_FAIL("cannot write %s", path);
}

#define SHARD1 "model-00001-of-00002.safetensors"
#define SHARD2 "model-00002-of-00002.safetensors"
#define INDEX "model.safetensors.index.json"
#define GOOD_INDEX "{\"metadata\": {\"total_size\": 40}, \"weight_map\": {\"a\": \"" SHARD1 "\", \"c\": \"" \
    SHARD2 "\", \"b\": \"" SHARD1 "\", \"d\": \"" SHARD2 "\"}}"

/* A folder with two shards and an index; returns 0 if building it failed. */
static int make_sharded(char *dir, size_t n, const char *name) {
    sa3d_error err = { 0 };
    int before = t_failures;
    make_dir(dir, n, name);
    T_OK(write_shard(dir, SHARD1, "a", sh_a, 4, "b", sh_b, 2, &err), &err);
    T_OK(write_shard(dir, SHARD2, "c", sh_c, 3, "d", sh_d, 1, &err), &err);
    write_text(dir, INDEX, GOOD_INDEX);
    return t_failures == before;
}

static void case_sharded(void) {
    char dir[512];
    if (!make_sharded(dir, sizeof dir, "ck_sharded")) return;
    sa3d_checkpoint *ck = NULL;
    sa3d_error err = { 0 };
    T_OK(sa3d_checkpoint_open(&ck, dir, &err), &err);
    if (!ck) return;
    T_CHECK(sa3d_checkpoint_count(ck) == 4);
    static const char *names[4] = { "a", "b", "c", "d" };
    static const char *files[4] = { SHARD1, SHARD1, SHARD2, SHARD2 };
    const float *want[4] = { sh_a, sh_b, sh_c, sh_d };
    for (int i = 0; i < 4; i++) {
        const sa3d_st_tensor *t = sa3d_checkpoint_find(ck, names[i]);
        T_CHECK(t != NULL && sa3d_checkpoint_get(ck, i) == t);   /* shard order, then header order */
        if (!t) continue;
        T_CONTAINS(t->file, files[i]);
        float *x = read_all(t);
        for (size_t j = 0; x && j < t->numel; j++) T_CHECK(x[j] == want[i][j]);
        free(x);
    }
    T_CHECK(sa3d_checkpoint_find(ck, "e") == NULL && sa3d_checkpoint_get(ck, 4) == NULL);
    sa3d_checkpoint_close(ck);
}

static void case_single(void) {
    char dir[512];
    sa3d_error err = { 0 };
    make_dir(dir, sizeof dir, "ck_single");
    T_OK(write_shard(dir, "model.safetensors", "w", sh_a, 4, NULL, NULL, 0, &err), &err);
    sa3d_checkpoint *ck = NULL;
    T_OK(sa3d_checkpoint_open(&ck, dir, &err), &err);
    T_CHECK(sa3d_checkpoint_count(ck) == 1 && sa3d_checkpoint_find(ck, "w") != NULL);
    T_CHECK(ck && strstr(sa3d_checkpoint_source(ck), "/model.safetensors") &&
            !strstr(sa3d_checkpoint_source(ck), INDEX));   /* the file a missing tensor's message names */
    sa3d_checkpoint_close(ck);
    /* With both present, the index wins. */
    T_OK(write_shard(dir, SHARD1, "a", sh_a, 4, "b", sh_b, 2, &err), &err);
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \"" SHARD1 "\"}}");
    T_OK(sa3d_checkpoint_open(&ck, dir, &err), &err);
    T_CHECK(sa3d_checkpoint_count(ck) == 2 && sa3d_checkpoint_find(ck, "w") == NULL);
    T_CHECK(ck && strstr(sa3d_checkpoint_source(ck), "/" INDEX));
    sa3d_checkpoint_close(ck);
}

/* Opening dir must fail with want and a message containing needle1 and needle2. */
static void expect_bad_ckpt(const char *dir, sa3d_status want, const char *needle1, const char *needle2) {
    sa3d_checkpoint *ck = (sa3d_checkpoint *)&want;
    sa3d_error err = { 0 };
    T_STATUS(sa3d_checkpoint_open(&ck, dir, &err), want, &err);
    T_CHECK(ck == NULL);
    if (needle1) T_CONTAINS(err.msg, needle1);
    if (needle2) T_CONTAINS(err.msg, needle2);
    printf("       %s\n", err.msg);
}

static void case_ckpt_negative(void) {
    char dir[512], idx[600], p[700];
    if (!make_sharded(dir, sizeof dir, "ck_bad")) return;
    snprintf(idx, sizeof idx, "%s/%s", dir, INDEX);

    /* 3.3a missing shard */
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"z\": \"model-missing.safetensors\"}}");
    snprintf(p, sizeof p, "%s/model-missing.safetensors", dir);
    expect_bad_ckpt(dir, SA3D_ERR_IO, idx, p);
    /* 3.3b bad shard names */
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": \"../" SHARD1 "\"}}");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "bad shard name");
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": \"sub/" SHARD1 "\"}}");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "bad shard name");
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": \"\"}}");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "bad shard name");
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": 3}}");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "weight_map.a");
    /* 3.3c tensor listed but missing from its shard */
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"c\": \"" SHARD1 "\"}}");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "weight_map.c");
    /* 3.3d a tensor in two shards (b is also written into shard 2) */
    sa3d_error err = { 0 };
    T_OK(write_shard(dir, SHARD2, "c", sh_c, 3, "b", sh_b, 2, &err), &err);
    write_text(dir, INDEX,
               "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"b\": \"" SHARD1 "\", \"c\": \"" SHARD2 "\"}}");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, "tensor 'b'", SHARD2);
    T_OK(write_shard(dir, SHARD2, "c", sh_c, 3, "d", sh_d, 1, &err), &err);
    /* 3.3e tensor listed twice, index not JSON, no weight_map, not an object */
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": \"" SHARD1 "\", \"a\": \"" SHARD1 "\"}}");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "listed twice");
    write_text(dir, INDEX, "{\"weight_map\": {\"a\": ");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "not valid JSON");
    write_text(dir, INDEX, "{\"metadata\": {}}");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "weight_map");
    write_text(dir, INDEX, "[]");
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, "not a JSON object");
    /* 3.3f a corrupt shard: its own message, with the index as context */
    snprintf(p, sizeof p, "%s/%s", dir, SHARD1);
    write_text(dir, SHARD1, "garbage");
    write_text(dir, INDEX, GOOD_INDEX);
    expect_bad_ckpt(dir, SA3D_ERR_FORMAT, idx, p);
    /* 3.3g a folder with no checkpoint */
    char empty[512];
    make_dir(empty, sizeof empty, "ck_empty");
    expect_bad_ckpt(empty, SA3D_ERR_IO, empty, "model.safetensors");
    /* the index back in order opens again */
    T_OK(write_shard(dir, SHARD1, "a", sh_a, 4, "b", sh_b, 2, &err), &err);
    sa3d_checkpoint *ck = NULL;
    T_OK(sa3d_checkpoint_open(&ck, dir, &err), &err);
    sa3d_checkpoint_close(ck);
}

/* ---------------------------------------------------------------------------------------------------- */
/* 4. corrupt single files */

/* One header entry, and a header holding only tensor 'a'. */
#define ENT(name, dt, shape, offs) \
    "\"" name "\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" offs "}"
#define ONE(dt, shape, offs) "{" ENT("a", dt, shape, offs) "}"
#define A_F32_8 ENT("a", "F32", "[2]", "[0,8]")

static void case_truncated(void) {
    char path[512];
    sa3d_error err = { 0 };
    tmp_path(path, sizeof path, "trunc_src.safetensors");
    T_OK(write_roundtrip(path, &err), &err);
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    if (!b) { T_FAIL("cannot read %s", path); return; }
    int before = n_negative;
    n_negative = 1000;   /* too many to print */
    for (size_t k = 0; k < n; k++) {
        char tag[64];
        snprintf(tag, sizeof tag, "trunc_%zu", k);
        expect_bad_bytes(tag, b, k, SA3D_ERR_FORMAT, k == 0 ? "empty" : k < 8 ? "too short" : NULL);
    }
    n_negative = before;
    printf("       every truncation of the %zu-byte round-trip file rejected\n", n);
    /* A byte appended to the data section is a gap the tensors do not cover. */
    uint8_t *c = malloc(n + 1);
    memcpy(c, b, n);
    c[n] = 0;
    expect_bad_bytes("trunc_extra", c, n + 1, SA3D_ERR_FORMAT, "do not cover");
    free(c);
    free(b);
}

static void case_header_length(void) {
    const char *h = "{" A_F32_8 "}";
    size_t n;
    uint8_t *b = make_st_hlen(strlen(h) + 9, h, 8, &n);
    expect_bad_bytes("hlen_past_end", b, n, SA3D_ERR_FORMAT, "runs past the end");
    free(b);
    b = make_st_hlen((uint64_t)1 << 63, h, 8, &n);
    expect_bad_bytes("hlen_2e63", b, n, SA3D_ERR_FORMAT, "too large");
    free(b);
    b = make_st_hlen(UINT64_MAX, h, 8, &n);
    expect_bad_bytes("hlen_max", b, n, SA3D_ERR_FORMAT, "too large");
    free(b);
    b = make_st_hlen((uint64_t)SA3D_ST_MAX_HEADER + 1, h, 8, &n);
    expect_bad_bytes("hlen_limit", b, n, SA3D_ERR_FORMAT, "too large");
    free(b);
    b = make_st_hlen(3, h, 8, &n);   /* "{\"a" */
    expect_bad_bytes("hlen_short", b, n, SA3D_ERR_FORMAT, "not valid JSON");
    free(b);
    expect_bad_bytes("empty_file", (const uint8_t *)"", 0, SA3D_ERR_FORMAT, "empty");
    expect_bad_bytes("seven_bytes", (const uint8_t *)"\x02\0\0\0\0\0\0", 7, SA3D_ERR_FORMAT, "too short");
}

static void case_not_json(void) {
    expect_bad("json_cut", "{\"a\":{\"dtype\":", 0, SA3D_ERR_FORMAT, "not valid JSON");
    expect_bad("json_word", "hello", 0, SA3D_ERR_FORMAT, "not valid JSON");
    expect_bad("json_zero_len", "", 0, SA3D_ERR_FORMAT, "not valid JSON");
    expect_bad("json_trailing", "{} x", 0, SA3D_ERR_FORMAT, "unexpected characters");
    expect_bad("json_two", "{}{}", 0, SA3D_ERR_FORMAT, "unexpected characters");
    size_t n;
    uint8_t *b = make_st("{}\1\1", 0, &n);
    b[10] = 0;   /* a NUL after the object is not padding */
    expect_bad_bytes("json_nul", b, n, SA3D_ERR_FORMAT, "unexpected characters");
    free(b);
    expect_bad("json_array", "[1, 2]", 0, SA3D_ERR_FORMAT, "not a JSON object");
    expect_bad("json_string", "\"str\"", 0, SA3D_ERR_FORMAT, "not a JSON object");
    expect_bad("json_number", "42", 0, SA3D_ERR_FORMAT, "not a JSON object");
    expect_bad("json_null", "null", 0, SA3D_ERR_FORMAT, "not a JSON object");
    /* Valid edge cases: no tensors at all, trailing space padding, unknown fields. */
    expect_good("good_empty", "{}", 0, 0);
    expect_good("good_padded", "{" A_F32_8 "}   \n ", 8, 1);
    expect_good("good_extra_field",
                "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}", 8, 1);
}

static void case_fields(void) {
    expect_bad("entry_number", "{\"a\":5}", 0, SA3D_ERR_FORMAT, "tensor 'a': entry is not an object");
    expect_bad("no_dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, SA3D_ERR_FORMAT,
               "missing field 'dtype'");
    expect_bad("no_shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, SA3D_ERR_FORMAT,
               "missing field 'shape'");
    expect_bad("no_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, SA3D_ERR_FORMAT,
               "missing field 'data_offsets'");
    expect_bad("dup_field",
               "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
               SA3D_ERR_FORMAT, "appears twice");
    expect_bad("dtype_number", "{\"a\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
               SA3D_ERR_FORMAT, "dtype has the wrong type");
    expect_bad("shape_string", "{\"a\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", 8,
               SA3D_ERR_FORMAT, "shape has the wrong type");
    expect_bad("shape_elem_string", ONE("F32", "[\"2\"]", "[0,8]"), 8,
               SA3D_ERR_FORMAT, "shape[0]");
    expect_bad("offsets_object", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{}}}", 8,
               SA3D_ERR_FORMAT, "data_offsets has the wrong type");
    expect_bad("offsets_one", ONE("F32", "[2]", "[8]"), 8,
               SA3D_ERR_FORMAT, "expected 2 entries, got 1");
    expect_bad("offsets_three", ONE("F32", "[2]", "[0,4,8]"), 8,
               SA3D_ERR_FORMAT, "expected 2 entries, got 3");
    expect_bad("offsets_string", ONE("F32", "[2]", "[\"0\",8]"), 8,
               SA3D_ERR_FORMAT, "data_offsets[0]");
    expect_bad("offsets_negative", ONE("F32", "[2]", "[-8,0]"), 8,
               SA3D_ERR_FORMAT, "data_offsets[0]");
    expect_bad("offsets_fraction", ONE("F32", "[2]", "[0,7.5]"), 8,
               SA3D_ERR_FORMAT, "data_offsets[1]");
    expect_bad("dtype_unknown", ONE("Q7", "[2]", "[0,8]"), 8,
               SA3D_ERR_FORMAT, "unknown dtype");
    expect_bad("dtype_lower", ONE("f32", "[2]", "[0,8]"), 8,
               SA3D_ERR_FORMAT, "got 'f32'");
    expect_bad("dtype_u32", ONE("U32", "[2]", "[0,8]"), 8,
               SA3D_ERR_UNSUPPORTED, "U32");
}

static void case_dims(void) {
    expect_bad("dim_negative", ONE("F32", "[-1]", "[0,0]"), 0,
               SA3D_ERR_FORMAT, "got -1");
    expect_bad("dim_fraction", ONE("F32", "[1.5]", "[0,4]"), 4,
               SA3D_ERR_FORMAT, "got 1.5");
    expect_bad("dim_huge", ONE("F32", "[1e16]", "[0,4]"), 4,
               SA3D_ERR_FORMAT, "shape[0]");
    expect_bad("dim_1e300", ONE("F32", "[2,1e300]", "[0,4]"), 4,
               SA3D_ERR_FORMAT, "shape[1]");
    expect_bad("dim_bool", ONE("F32", "[true]", "[0,4]"), 4,
               SA3D_ERR_FORMAT, "got a boolean");
    expect_bad("dims_nine", ONE("F32", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4,
               SA3D_ERR_FORMAT, "expected at most 8, got 9");
    expect_bad("numel_overflow",
               ONE("F32", "[4294967296,4294967296,16]", "[0,0]"), 0,
               SA3D_ERR_FORMAT, "overflows");
    expect_bad("bytes_overflow", ONE("F32", "[4294967296,1073741824]", "[0,0]"),
               0, SA3D_ERR_FORMAT, "byte size overflows");
    expect_bad("shape_vs_bytes", ONE("F32", "[3]", "[0,8]"), 8,
               SA3D_ERR_FORMAT, "expected 12 bytes (F32 [3]), got 8");
    expect_bad("dtype_vs_bytes", ONE("F16", "[2]", "[0,8]"), 8,
               SA3D_ERR_FORMAT, "expected 4 bytes (F16 [2]), got 8");
    expect_bad("zero_dim_bytes", ONE("F32", "[0,3]", "[0,4]"), 4,
               SA3D_ERR_FORMAT, "expected 0 bytes");
    /* Largest exact dim is accepted when the product is 0; 2^53 itself is fine as a JSON integer. */
    expect_good("dim_2e53_zero", ONE("F32", "[0,9007199254740992]", "[0,0]"),
                0, 1);
}

static void case_offsets(void) {
    expect_bad("offset_past_end", ONE("F32", "[2]", "[0,100]"), 8,
               SA3D_ERR_FORMAT, "outside the 8-byte data section");
    expect_bad("offset_reversed", ONE("F32", "[2]", "[8,0]"), 8,
               SA3D_ERR_FORMAT, "reversed");
    expect_bad("offset_overlap",
               "{" A_F32_8 "," ENT("b", "U8", "[3]", "[4,7]") "}", 8,
               SA3D_ERR_FORMAT, "overlap tensor 'a'");
    expect_bad("offset_same", "{" A_F32_8 "," ENT("b", "F32", "[2]", "[0,8]") "}", 8,
               SA3D_ERR_FORMAT, "overlap");
    expect_bad("offset_gap", "{" A_F32_8 "," ENT("b", "U8", "[3]", "[9,12]") "}", 12,
               SA3D_ERR_FORMAT, "tensor 'b': gap in the data section");
    expect_bad("offset_lead_gap", ONE("F32", "[2]", "[4,12]"), 12,
               SA3D_ERR_FORMAT, "expected begin 0, got 4");
    expect_bad("offset_trailing", "{" A_F32_8 "}", 10, SA3D_ERR_FORMAT, "expected 10 bytes covered, got 8");
    expect_bad("only_metadata", "{\"__metadata__\":{}}", 4, SA3D_ERR_FORMAT, "do not cover");
    /* A zero-size tensor may sit at the boundary between two others, as huggingface/safetensors allows. */
    expect_good("zero_size_between",
                "{" A_F32_8 ",\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
                "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[8,10]}}", 10, 3);
}

static void case_names_metadata(void) {
    expect_bad("dup_name", "{" A_F32_8 "," ENT("a", "F32", "[2]", "[8,16]") "}", 16,
               SA3D_ERR_FORMAT, "tensor 'a': name appears twice");
    expect_bad("meta_number", "{\"__metadata__\":{\"k\":5}," A_F32_8 "}", 8, SA3D_ERR_FORMAT,
               "__metadata__.k has the wrong type");
    expect_bad("meta_array", "{\"__metadata__\":[]," A_F32_8 "}", 8, SA3D_ERR_FORMAT,
               "__metadata__ has the wrong type");
    expect_bad("meta_twice", "{\"__metadata__\":{},\"__metadata__\":{}," A_F32_8 "}", 8, SA3D_ERR_FORMAT,
               "__metadata__ appears twice");
    expect_bad("meta_dup_key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}," A_F32_8 "}", 8, SA3D_ERR_FORMAT,
               "__metadata__.k appears twice");
    expect_bad("meta_null", "{\"__metadata__\":{\"k\":null}," A_F32_8 "}", 8, SA3D_ERR_FORMAT, "got null");
}

static void case_io_errors(void) {
    char path[512];
    sa3d_error err = { 0 };
    sa3d_safetensors *st = NULL;
    tmp_path(path, sizeof path, "does_not_exist.safetensors");
    T_STATUS(sa3d_st_open(&st, path, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, path);
    T_CHECK(st == NULL);
    T_STATUS(sa3d_st_open(&st, tmpdir(), &err), SA3D_ERR_IO, &err);   /* a directory */
    T_CONTAINS(err.msg, tmpdir());
    T_STATUS(sa3d_st_open_memory(&st, NULL, 5, "nullbuf", &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_open(NULL, path, &err), SA3D_ERR_ARG, &err);
}

static void case_writer_args(void) {
    sa3d_error err = { 0 };
    sa3d_st_writer *w = sa3d_st_writer_new();
    const float x[4] = { 0 };
    const int64_t s2[1] = { 2 }, neg[2] = { 2, -1 }, big[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };
    const int64_t huge[3] = { (int64_t)1 << 40, (int64_t)1 << 40, (int64_t)1 << 40 };
    T_OK(sa3d_st_writer_add_f32(w, "x", 1, s2, x, &err), &err);
    T_STATUS(sa3d_st_writer_add_f32(w, "x", 1, s2, x, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "'x'");
    T_STATUS(sa3d_st_writer_add_f32(w, "n", 2, neg, x, &err), SA3D_ERR_ARG, &err);
    T_CONTAINS(err.msg, "negative");
    T_STATUS(sa3d_st_writer_add_f32(w, "b", 9, big, x, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_writer_add_f32(w, "b", -1, big, x, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_writer_add_f32(w, "h", 3, huge, x, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_writer_add_f32(w, "d", 1, s2, NULL, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_writer_add_f32(w, "__metadata__", 1, s2, x, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_writer_add_f32(w, "", 1, s2, x, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_writer_add(w, "t", (sa3d_dtype)42, 1, s2, x, &err), SA3D_ERR_ARG, &err);
    T_STATUS(sa3d_st_writer_set_metadata(w, "k", NULL, &err), SA3D_ERR_ARG, &err);
    /* Rejected adds left the writer usable: it writes exactly the one good tensor. */
    char path[512];
    tmp_path(path, sizeof path, "writer_args.safetensors");
    T_OK(sa3d_st_writer_write(w, path, &err), &err);
    sa3d_st_writer_free(w);
    sa3d_safetensors *st = NULL;
    T_OK(sa3d_st_open(&st, path, &err), &err);
    T_CHECK(sa3d_st_count(st) == 1);
    sa3d_st_close(st);
}

/* ---------------------------------------------------------------------------------------------------- */
/* 5. fault injection */

/* Runs op with the Nth allocation failing, N = 1, 2, ...: every result must be SA3D_OK or SA3D_ERR_NOMEM and
 * every failure must free everything; stops at the first success. */
static void fault_loop(const char *what, sa3d_status (*op)(void *ctx, sa3d_error *err), void *ctx) {
    long live0 = sa3d_alloc_live_blocks();
    int n;
    for (n = 1; n < 10000; n++) {
        sa3d_error err = { 0 };
        sa3d_alloc_fail_after(n);
        sa3d_status s = op(ctx, &err);
        sa3d_alloc_fail_after(0);
        long live = sa3d_alloc_live_blocks();
        if (live != live0) T_FAIL("%s: fault at allocation %d leaked %ld blocks", what, n, live - live0);
        if (s == SA3D_OK) break;
        if (s != SA3D_ERR_NOMEM) {
            T_FAIL("%s: fault at allocation %d gave %s: %s", what, n, sa3d_status_name(s), err.msg);
            break;
        }
    }
    printf("       %-28s clean at each of %d failing allocations\n", what, n - 1);
    T_CHECK(n > 1);
}

static sa3d_status op_open(void *ctx, sa3d_error *err) {
    sa3d_safetensors *st = NULL;
    sa3d_status s = sa3d_st_open(&st, ctx, err);
    if (s == SA3D_OK) T_CHECK(sa3d_st_count(st) == 12 && sa3d_st_metadata_count(st) == 3);
    else T_CHECK(st == NULL);
    sa3d_st_close(st);
    return s;
}

typedef struct mem_ctx { const uint8_t *b; size_t n; } mem_ctx;

static sa3d_status op_open_memory(void *ctx, sa3d_error *err) {
    const mem_ctx *m = ctx;
    sa3d_safetensors *st = NULL;
    sa3d_status s = sa3d_st_open_memory(&st, m->b, m->n, "mem", err);
    sa3d_st_close(st);
    return s;
}

static sa3d_status op_checkpoint(void *ctx, sa3d_error *err) {
    sa3d_checkpoint *ck = NULL;
    sa3d_status s = sa3d_checkpoint_open(&ck, ctx, err);
    if (s == SA3D_OK) T_CHECK(sa3d_checkpoint_count(ck) == 4);
    else T_CHECK(ck == NULL);
    sa3d_checkpoint_close(ck);
    return s;
}

static sa3d_status op_write(void *ctx, sa3d_error *err) {
    return write_roundtrip(ctx, err);
}

static sa3d_status op_write_many_meta(void *ctx, sa3d_error *err) {
    sa3d_st_writer *w = sa3d_st_writer_new();
    if (!w) return sa3d_fail(err, SA3D_ERR_NOMEM, "writer_new");
    sa3d_status s = SA3D_OK;
    const int64_t one[1] = { 1 };
    static const float v = 1.0f;
    for (int i = 0; i < 40 && s == SA3D_OK; i++) {   /* enough to grow both tables more than once */
        char name[32];
        snprintf(name, sizeof name, "t%d", i);
        s = sa3d_st_writer_add_f32(w, name, 1, one, &v, err);
        if (s == SA3D_OK) s = sa3d_st_writer_set_metadata(w, name, "value", err);
    }
    if (s == SA3D_OK) s = sa3d_st_writer_write(w, ctx, err);
    sa3d_st_writer_free(w);
    return s;
}

static void case_faults(void) {
    char path[512], out[512], dir[512];
    sa3d_error err = { 0 };
    tmp_path(path, sizeof path, "fault.safetensors");
    T_OK(write_roundtrip(path, &err), &err);
    fault_loop("sa3d_st_open", op_open, path);
    size_t n;
    uint8_t *b = read_bytes(path, &n);
    mem_ctx m = { b, n };
    if (b) fault_loop("sa3d_st_open_memory", op_open_memory, &m);
    free(b);
    if (make_sharded(dir, sizeof dir, "ck_fault")) fault_loop("sa3d_checkpoint_open", op_checkpoint, dir);
    tmp_path(out, sizeof out, "fault_out.safetensors");
    fault_loop("writer (round-trip file)", op_write, out);
    fault_loop("writer (40 tensors + meta)", op_write_many_meta, out);
    char tmpl[600];
    snprintf(tmpl, sizeof tmpl, "%s.tmp.%ld", out, (long)getpid());
    T_CHECK(!sa3d_file_exists(tmpl));
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "round trip: every dtype, scalar, zero-size, metadata, layout", case_roundtrip },
        { "1.2", "writer replaces the file atomically; bad folder is IO", case_overwrite },
        { "1.3", "F16 to F32 exact for all 65536 values", case_f16 },
        { "1.4", "BF16 to F32 exact for all 65536 values", case_bf16 },
        { "1.5", "read_f32 arguments, unaligned data, NULL handles", case_read_args },
        { "1.6", "read_f32_finite refuses NaN, inf, F64 overflow", case_read_finite },
        { "1.7", "1000 tensors added out of order: find each", case_many },
        { "2.1", "every fixture *.safetensors opens and reads", case_fixtures },
        { "2.2", "every fixture folder opens as a checkpoint", case_fixture_checkpoints },
        { "3.1", "sharded checkpoint: 2 shards + index", case_sharded },
        { "3.2", "single-file checkpoint; index wins over model.safetensors", case_single },
        { "3.3", "bad checkpoints: shard missing/bad name/tensor absent/twice", case_ckpt_negative },
        { "4.1", "every truncation rejected", case_truncated },
        { "4.2", "header length past the end, huge, short; tiny files", case_header_length },
        { "4.3", "header not JSON, not an object, trailing bytes", case_not_json },
        { "4.4", "entries: missing fields, wrong types, unknown dtype", case_fields },
        { "4.5", "dims: negative, fractional, huge, too many, overflow, size", case_dims },
        { "4.6", "offsets: out of range, reversed, overlap, gaps, trailing", case_offsets },
        { "4.7", "duplicate names, bad metadata", case_names_metadata },
        { "4.8", "missing file, directory, bad arguments", case_io_errors },
        { "4.9", "writer rejects bad tensors and stays usable", case_writer_args },
        { "5.1", "allocation faults: open, memory, checkpoint, writer", case_faults },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
