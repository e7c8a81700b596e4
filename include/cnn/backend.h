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

/* The arithmetic a network trains and runs in (cnn_net_set_precision, `--precision`):
 *   FP32  f32 everywhere, no tensor-core rounding (the default; the only one on the CPU backend)
 *   TF32  f32 tensors; cuDNN and cuBLAS may round the operands of convolutions and matrix products to TF32
 *         (10-bit mantissa) on tensor cores (CUDA, Ampere and later)
 *   FP16, BF16  mixed precision (CUDA): activations, gradients and the weights convolutions and dense layers
 *         compute with are 16-bit; the optimizer keeps f32 master weights; batchnorm statistics, biases and the
 *         loss stay f32. FP16 uses dynamic loss scaling (cnn_train). */
typedef enum cnn_precision {
    CNN_PRECISION_FP32 = 0,
    CNN_PRECISION_TF32,
    CNN_PRECISION_FP16,
    CNN_PRECISION_BF16,
    CNN_PRECISION_COUNT
} cnn_precision;

/* "fp32", "tf32", "fp16", "bf16" */
CNN_API const char *cnn_precision_name(cnn_precision p);
/* Parses one of those names; CNN_ERR_INVALID_ARG naming the known ones otherwise. */
CNN_API cnn_status cnn_precision_parse(const char *name, cnn_precision *out);

/* Creates a backend from a name: "cpu", "cuda" or "cuda:N". NULL or "auto" picks cuda when it is built in and
 * a GPU is present, else cpu. Unknown names give CNN_ERR_NOT_FOUND with the list of known ones. */
CNN_API cnn_status cnn_backend_create(const char *name, cnn_backend **out);
CNN_API void cnn_backend_destroy(cnn_backend *backend);

/* "cpu", "cuda", ... Borrowed from the backend. */
CNN_API const char *cnn_backend_name(const cnn_backend *backend);
/* A one-line description of the device, e.g. "CPU, 2 threads, oneDNN 2.6.3 (avx512_core_amx)". Borrowed. */
CNN_API const char *cnn_backend_description(const cnn_backend *backend);

/* Waits for all work queued on the backend. */
CNN_API cnn_status cnn_backend_sync(cnn_backend *backend);

/* Comma-separated names of the backends compiled into this library, e.g. "cpu,cuda". */
CNN_API const char *cnn_backends_available(void);

#ifdef __cplusplus
}
#endif
#endif
