/* cnn.c — status codes and error messages.
 *
 * Every function that can fail returns a cnn_status (CNN_OK == 0) and hands results back through
 * out-parameters. cnn_status_string() names a code; cnn_last_error() gives the calling thread's message for
 * the most recent failure: what failed, and which file, line, field, flag or layer. */
#ifndef CNN_STATUS_H
#define CNN_STATUS_H

/* The functions of the public API: the only symbols libcnn.so exports (the library is built with hidden
 * visibility; everything else is internal). */
#if defined(__GNUC__) || defined(__clang__)
#define CNN_API __attribute__((visibility("default")))
#else
#define CNN_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cnn_status {
    CNN_OK = 0,
    CNN_ERR_INVALID_ARG,  /* a bad argument, flag or option value */
    CNN_ERR_NO_MEMORY,    /* host or device allocation failed */
    CNN_ERR_IO,           /* a file could not be opened, read or written */
    CNN_ERR_FORMAT,       /* a file's contents are malformed or truncated */
    CNN_ERR_SHAPE,        /* tensor shapes do not fit together */
    CNN_ERR_UNSUPPORTED,  /* the backend or build lacks this op, dtype or format */
    CNN_ERR_BACKEND,      /* the backend library (oneDNN, CUDA, cuDNN, cuBLAS) reported a failure */
    CNN_ERR_NOT_FOUND,    /* a named thing (dataset, tensor, backend, layer) does not exist */
    CNN_ERR_NUMERIC,      /* NaN or infinity where a finite value is required */
    CNN_STATUS_COUNT
} cnn_status;

/* A short, static name for a status code ("invalid argument", ...). */
CNN_API const char *cnn_status_string(cnn_status status);

/* This thread's message for the last failure; "" when none. Borrowed: valid until the next failing call on
 * this thread. */
CNN_API const char *cnn_last_error(void);

/* Forget this thread's last message. */
CNN_API void cnn_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif
