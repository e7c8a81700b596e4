/* Internal error helpers: set this thread's message and return the status, in one expression. */
#ifndef CNN_CORE_ERROR_H
#define CNN_CORE_ERROR_H

#include "cnn/status.h"

#if defined(__GNUC__)
#define CNN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CNN_PRINTF(a, b)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Records a printf-style message for this thread and returns `status`:
 *     return cnn_error(CNN_ERR_FORMAT, "%s: truncated header", path); */
cnn_status cnn_error(cnn_status status, const char *fmt, ...) CNN_PRINTF(2, 3);

/* Prefixes this thread's message with more context ("layer conv2d_1: " + old message); returns `status`. */
cnn_status cnn_error_prefix(cnn_status status, const char *fmt, ...) CNN_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif

/* Evaluate a cnn_status expression; on failure jump to `fail` with `st` set. */
#define CNN_TRY(expr)                   \
    do {                                \
        st = (expr);                    \
        if (st != CNN_OK) goto fail;    \
    } while (0)

#endif
