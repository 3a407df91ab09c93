/* Status names and the error-message helpers every layer uses (STYLE.md section 4). */
#include <stdarg.h>
#include <string.h>
#include "base.h"

const char *sa3d_status_name(sa3d_status s) {
    switch (s) {
    case SA3D_OK: return "SA3D_OK";
    case SA3D_ERR_ARG: return "SA3D_ERR_ARG";
    case SA3D_ERR_IO: return "SA3D_ERR_IO";
    case SA3D_ERR_FORMAT: return "SA3D_ERR_FORMAT";
    case SA3D_ERR_UNSUPPORTED: return "SA3D_ERR_UNSUPPORTED";
    case SA3D_ERR_NOMEM: return "SA3D_ERR_NOMEM";
    case SA3D_ERR_NUMERIC: return "SA3D_ERR_NUMERIC";
    case SA3D_ERR_BACKEND: return "SA3D_ERR_BACKEND";
    case SA3D_ERR_CANCELLED: return "SA3D_ERR_CANCELLED";
    }
    return "SA3D_ERR_UNKNOWN";
}

const char *sa3d_version(void) { return "0.1.0"; }

sa3d_status sa3d_fail(sa3d_error *err, sa3d_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

sa3d_status sa3d_error_prefix(sa3d_error *err, const char *fmt, ...) {
    if (!err) return SA3D_OK;
    char prefix[256], old[sizeof err->msg];
    /* the combined message is cut at sizeof err->msg, which is fine for a one-line error */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t k = strlen(prefix);
    if (k > sizeof err->msg - 3) k = sizeof err->msg - 3;
    memcpy(err->msg, prefix, k);
    err->msg[k] = ':';
    err->msg[k + 1] = ' ';
    size_t rest = sizeof err->msg - k - 2;
    size_t n = strlen(old);
    if (n >= rest) n = rest - 1;
    memcpy(err->msg + k + 2, old, n);
    err->msg[k + 2 + n] = '\0';
    return err->code;
}

void sa3d_error_clear(sa3d_error *err) {
    if (!err) return;
    err->code = SA3D_OK;
    err->msg[0] = '\0';
}
