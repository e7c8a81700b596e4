/* Status names and the per-thread error message. */
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CNN_ERROR_MAX 1024

static _Thread_local char cnn_error_message[CNN_ERROR_MAX];

static const char *const cnn_status_names[] = {
    "ok",
    "invalid argument",
    "out of memory",
    "i/o error",
    "malformed data",
    "shape mismatch",
    "unsupported",
    "backend failure",
    "not found",
    "numeric error",
};
_Static_assert(sizeof(cnn_status_names) / sizeof(cnn_status_names[0]) == CNN_STATUS_COUNT,
               "cnn_status_names must name every cnn_status");

const char *cnn_status_string(cnn_status status)
{
    if ((int)status < 0 || status >= CNN_STATUS_COUNT) return "unknown status";
    return cnn_status_names[status];
}

const char *cnn_last_error(void) { return cnn_error_message; }

void cnn_clear_error(void) { cnn_error_message[0] = '\0'; }

cnn_status cnn_error(cnn_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cnn_error_message, sizeof cnn_error_message, fmt, ap);
    va_end(ap);
    return status;
}

cnn_status cnn_error_prefix(cnn_status status, const char *fmt, ...)
{
    char prefix[CNN_ERROR_MAX];
    char old[CNN_ERROR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, cnn_error_message, sizeof old);
    size_t plen = strlen(prefix), olen = strlen(old);
    if (plen > CNN_ERROR_MAX - 1) plen = CNN_ERROR_MAX - 1;
    if (olen > CNN_ERROR_MAX - 1 - plen) olen = CNN_ERROR_MAX - 1 - plen;
    memcpy(cnn_error_message, prefix, plen);
    memcpy(cnn_error_message + plen, old, olen);
    cnn_error_message[plen + olen] = '\0';
    return status;
}
