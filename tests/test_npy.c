/* The .npy reader: every dtype and shape form NumPy writes, and hostile headers rejected with the file named. */
#include <stdint.h>
#include <string.h>
#include "base/base.h"
#include "semalign3d/providers.h"
#include "t.h"

/* Builds a version-1 .npy in buf from a header dict and raw data; returns its length. */
static size_t make_npy(unsigned char *buf, const char *dict, const void *data, size_t n) {
    size_t hl = strlen(dict);
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)(hl & 255);
    buf[9] = (unsigned char)(hl >> 8);
    memcpy(buf + 10, dict, hl);
    memcpy(buf + 10 + hl, data, n);
    return 10 + hl + n;
}

static void case_valid(void) {
    unsigned char buf[512];
    float f[6] = { 1, 2, 3, 4, 5, -6.5f };
    size_t len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }\n", f, sizeof f);
    float *out = NULL;
    int nd;
    long long d[4];
    sa3d_error err;
    T_OK(sa3d_npy_parse(buf, len, "a.npy", &out, &nd, d, &err), &err);
    T_CHECK(nd == 3 && d[0] == 1 && d[1] == 2 && d[2] == 3);
    T_CHECK(out && out[5] == -6.5f);
    free(out);
    uint16_t h[3] = { 0x3c00, 0xc000, 0x0001 };   /* 1, -2, smallest subnormal */
    len = make_npy(buf, "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }", h, sizeof h);
    T_OK(sa3d_npy_parse(buf, len, "h.npy", &out, &nd, d, &err), &err);
    T_CHECK(nd == 1 && out[0] == 1.0f && out[1] == -2.0f);
    T_NEAR((double)out[2], 5.960464477539063e-08, 1e-20);
    free(out);
    double dv = 3.25;
    len = make_npy(buf, "{'descr': '<f8', 'fortran_order': False, 'shape': (), }", &dv, sizeof dv);
    T_OK(sa3d_npy_parse(buf, len, "s.npy", &out, &nd, d, &err), &err);
    T_CHECK(nd == 0 && out[0] == 3.25f);
    free(out);
}

static void expect_bad(const void *buf, size_t len, sa3d_status want, const char *needle) {
    float *out = (float *)1;
    int nd;
    long long d[4];
    sa3d_error err = { 0 };
    T_STATUS(sa3d_npy_parse(buf, len, "bad.npy", &out, &nd, d, &err), want, &err);
    T_CHECK(out == NULL);
    T_CONTAINS(err.msg, "bad.npy");
    T_CONTAINS(err.msg, needle);
}

static void case_hostile(void) {
    unsigned char buf[512];
    float f[4] = { 0 };
    size_t len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", f, sizeof f);
    for (size_t cut = 0; cut < len; cut++) {   /* every truncation fails cleanly */
        float *out = NULL;
        int nd;
        long long d[4];
        T_CHECK(sa3d_npy_parse(buf, cut, "t.npy", &out, &nd, d, NULL) != SA3D_OK && out == NULL);
    }
    expect_bad("PK\x03\x04", 4, SA3D_ERR_FORMAT, "not a .npy file");
    len = make_npy(buf, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", f, sizeof f);
    expect_bad(buf, len, SA3D_ERR_UNSUPPORTED, "dtype");
    len = make_npy(buf, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", f, sizeof f);
    expect_bad(buf, len, SA3D_ERR_UNSUPPORTED, "fortran_order");
    len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999, 99999999), }", f, sizeof f);
    expect_bad(buf, len, SA3D_ERR_FORMAT, "");
    len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f, sizeof f);
    expect_bad(buf, len, SA3D_ERR_FORMAT, "shape needs more");
    len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1), }", f, sizeof f);
    expect_bad(buf, len, SA3D_ERR_UNSUPPORTED, "more than 4 dimensions");
    len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, -2), }", f, sizeof f);
    expect_bad(buf, len, SA3D_ERR_FORMAT, "bad shape entry");
    len = make_npy(buf, "{'descr': '<f4', 'fortran_order': False}", f, sizeof f);
    expect_bad(buf, len, SA3D_ERR_FORMAT, "lacks");
    memcpy(buf, "\x93NUMPY\x01\x00\xff\xff", 10);
    expect_bad(buf, 10, SA3D_ERR_FORMAT, "header length");
    sa3d_error err;
    float *out;
    int nd;
    long long d[4];
    T_STATUS(sa3d_npy_read("/nonexistent/x.npy", &out, &nd, d, &err), SA3D_ERR_IO, &err);
    T_CONTAINS(err.msg, "/nonexistent/x.npy");
}

int main(int argc, char **argv) {
    static const t_case cases[] = {
        { "1.1", "f4, f2 (with subnormals), f8 scalars read", case_valid },
        { "2.1", "truncated and hostile headers are rejected", case_hostile },
    };
    return t_run(cases, (int)(sizeof cases / sizeof cases[0]), argc, argv);
}
