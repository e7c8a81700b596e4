/* cnn.c — compute backends.
 *
 * A backend is a device plus the library that computes on it: "cpu" (oneDNN and our own OpenMP kernels) or,
 * when the build found CUDA and cuDNN, "cuda" / "cuda:N". The same network and model file run on either. */
#ifndef CNN_BACKEND_H
#define CNN_BACKEND_H

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_backend cnn_backend;

/* Creates a backend from a name: "cpu", "cuda" or "cuda:N". NULL or "auto" picks cuda when it is built in and
 * a GPU is present, else cpu. Unknown names give CNN_ERR_NOT_FOUND with the list of known ones. */
cnn_status cnn_backend_create(const char *name, cnn_backend **out);
void cnn_backend_destroy(cnn_backend *backend);

/* "cpu", "cuda", ... Borrowed from the backend. */
const char *cnn_backend_name(const cnn_backend *backend);
/* A one-line description of the device, e.g. "CPU, 2 threads, oneDNN 2.6.3 (avx512_core_amx)". Borrowed. */
const char *cnn_backend_description(const cnn_backend *backend);

/* Waits for all work queued on the backend. */
cnn_status cnn_backend_sync(cnn_backend *backend);

/* Comma-separated names of the backends compiled into this library, e.g. "cpu,cuda". */
const char *cnn_backends_available(void);

#ifdef __cplusplus
}
#endif
#endif
