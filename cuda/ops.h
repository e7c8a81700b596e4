/* The CUDA backend's ops: the functions cuda/backend.c puts in its table, defined in the other files of cuda/.
 * Each definition's file includes this header, so that a changed signature is a compile error
 * (-Wmissing-prototypes). docs/ARCHITECTURE.md, "Adding an op". */
#ifndef CNN_CUDA_OPS_H
#define CNN_CUDA_OPS_H

#include "core/backend_ops.h"

CNN_BACKEND_OPS(cnn_cuda)
cnn_status cnn_cuda_cast(cnn_backend *, cnn_tensor *, const cnn_tensor *);
cnn_status cnn_cuda_nonfinite(cnn_backend *, const cnn_tensor *const *, int, int *);
cnn_status cnn_cuda_host_alloc(cnn_backend *, size_t, void **); /* transfer.c */
void cnn_cuda_host_free(cnn_backend *, void *);
cnn_status cnn_cuda_write_async(cnn_backend *, cnn_tensor *, const void *, size_t);

#endif
