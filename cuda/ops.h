/* The CUDA backend's ops: the functions cuda/backend.c puts in its table, defined in the other files of cuda/.
 * Each definition's file includes this header, so that a changed signature is a compile error
 * (-Wmissing-prototypes). docs/ARCHITECTURE.md, "Adding an op". */
#ifndef CNN_CUDA_OPS_H
#define CNN_CUDA_OPS_H

#include "core/backend.h"

cnn_status cnn_cuda_backend_create(const char *spec, cnn_backend **out);
int cnn_cuda_backend_available(void);

cnn_status cnn_cuda_conv2d_forward(cnn_backend *, const cnn_conv2d_args *);
cnn_status cnn_cuda_conv2d_backward_data(cnn_backend *, const cnn_conv2d_args *);
cnn_status cnn_cuda_conv2d_backward_filter(cnn_backend *, const cnn_conv2d_args *);
cnn_status cnn_cuda_pool2d_forward(cnn_backend *, const cnn_pool2d_args *);
cnn_status cnn_cuda_pool2d_backward(cnn_backend *, const cnn_pool2d_args *);
cnn_status cnn_cuda_dense_forward(cnn_backend *, const cnn_dense_args *);
cnn_status cnn_cuda_dense_backward_data(cnn_backend *, const cnn_dense_args *);
cnn_status cnn_cuda_dense_backward_weights(cnn_backend *, const cnn_dense_args *);
cnn_status cnn_cuda_act_forward(cnn_backend *, const cnn_act_args *);
cnn_status cnn_cuda_act_backward(cnn_backend *, const cnn_act_args *);
cnn_status cnn_cuda_softmax_xent(cnn_backend *, const cnn_softmax_xent_args *);
cnn_status cnn_cuda_sgd_update(cnn_backend *, const cnn_sgd_args *);
cnn_status cnn_cuda_adam_update(cnn_backend *, const cnn_adam_args *);
cnn_status cnn_cuda_fill(cnn_backend *, cnn_tensor *, float);
cnn_status cnn_cuda_batchnorm_forward(cnn_backend *, const cnn_batchnorm_args *);
cnn_status cnn_cuda_batchnorm_backward(cnn_backend *, const cnn_batchnorm_args *);
cnn_status cnn_cuda_dropout_forward(cnn_backend *, const cnn_dropout_args *);
cnn_status cnn_cuda_dropout_backward(cnn_backend *, const cnn_dropout_args *);
cnn_status cnn_cuda_add(cnn_backend *, const cnn_add_args *);
cnn_status cnn_cuda_concat_forward(cnn_backend *, const cnn_concat_args *);
cnn_status cnn_cuda_concat_backward(cnn_backend *, const cnn_concat_args *);
cnn_status cnn_cuda_rmsprop_update(cnn_backend *, const cnn_rmsprop_args *);
cnn_status cnn_cuda_sum_squares(cnn_backend *, const cnn_tensor *, double *);
cnn_status cnn_cuda_scale(cnn_backend *, cnn_tensor *, float);
cnn_status cnn_cuda_cast(cnn_backend *, cnn_tensor *, const cnn_tensor *);
cnn_status cnn_cuda_nonfinite(cnn_backend *, const cnn_tensor *const *, int, int *);
cnn_status cnn_cuda_sgd_update_multi(cnn_backend *, const cnn_sgd_args *, int, int *);
cnn_status cnn_cuda_adam_update_multi(cnn_backend *, const cnn_adam_args *, int, int *);
cnn_status cnn_cuda_rmsprop_update_multi(cnn_backend *, const cnn_rmsprop_args *, int, int *);
cnn_status cnn_cuda_sum_squares_multi(cnn_backend *, const cnn_tensor *const *, int, double *, int *);
cnn_status cnn_cuda_host_alloc(cnn_backend *, size_t, void **); /* transfer.c */
void cnn_cuda_host_free(cnn_backend *, void *);
cnn_status cnn_cuda_write_async(cnn_backend *, cnn_tensor *, const void *, size_t);

#endif
