/* The CPU backend's ops: the functions cpu/backend.c puts in its table, defined in the other files of cpu/.
 * Each definition's file includes this header, so that a changed signature is a compile error
 * (-Wmissing-prototypes). docs/ARCHITECTURE.md, "Adding an op". */
#ifndef CNN_CPU_OPS_H
#define CNN_CPU_OPS_H

#include "core/backend.h"

cnn_status cnn_cpu_backend_create(const char *spec, cnn_backend **out);
int cnn_cpu_backend_available(void);

cnn_status cnn_cpu_conv2d_forward(cnn_backend *, const cnn_conv2d_args *);
cnn_status cnn_cpu_qconv_s32(cnn_backend *, const cnn_qconv_args *);
cnn_status cnn_cpu_qprog_create(cnn_backend *, const struct cnn_lite *, int, int, cnn_qprog **);
cnn_status cnn_cpu_qprog_run(cnn_backend *, cnn_qprog *, const float *, float *);
void cnn_cpu_qprog_destroy(cnn_backend *, cnn_qprog *);
cnn_status cnn_cpu_conv2d_backward_data(cnn_backend *, const cnn_conv2d_args *);
cnn_status cnn_cpu_conv2d_backward_filter(cnn_backend *, const cnn_conv2d_args *);
cnn_status cnn_cpu_pool2d_forward(cnn_backend *, const cnn_pool2d_args *);
cnn_status cnn_cpu_pool2d_backward(cnn_backend *, const cnn_pool2d_args *);
cnn_status cnn_cpu_dense_forward(cnn_backend *, const cnn_dense_args *);
cnn_status cnn_cpu_dense_backward_data(cnn_backend *, const cnn_dense_args *);
cnn_status cnn_cpu_dense_backward_weights(cnn_backend *, const cnn_dense_args *);
cnn_status cnn_cpu_act_forward(cnn_backend *, const cnn_act_args *);
cnn_status cnn_cpu_act_backward(cnn_backend *, const cnn_act_args *);
cnn_status cnn_cpu_softmax_xent(cnn_backend *, const cnn_softmax_xent_args *);
cnn_status cnn_cpu_sgd_update(cnn_backend *, const cnn_sgd_args *);
cnn_status cnn_cpu_adam_update(cnn_backend *, const cnn_adam_args *);
cnn_status cnn_cpu_fill(cnn_backend *, cnn_tensor *, float);
cnn_status cnn_cpu_batchnorm_forward(cnn_backend *, const cnn_batchnorm_args *);
cnn_status cnn_cpu_batchnorm_backward(cnn_backend *, const cnn_batchnorm_args *);
cnn_status cnn_cpu_dropout_forward(cnn_backend *, const cnn_dropout_args *);
cnn_status cnn_cpu_dropout_backward(cnn_backend *, const cnn_dropout_args *);
cnn_status cnn_cpu_add(cnn_backend *, const cnn_add_args *);
cnn_status cnn_cpu_concat_forward(cnn_backend *, const cnn_concat_args *);
cnn_status cnn_cpu_concat_backward(cnn_backend *, const cnn_concat_args *);
cnn_status cnn_cpu_rmsprop_update(cnn_backend *, const cnn_rmsprop_args *);
cnn_status cnn_cpu_sum_squares(cnn_backend *, const cnn_tensor *, double *);
cnn_status cnn_cpu_scale(cnn_backend *, cnn_tensor *, float);
cnn_status cnn_cpu_sgd_update_multi(cnn_backend *, const cnn_sgd_args *, int, int *);
cnn_status cnn_cpu_adam_update_multi(cnn_backend *, const cnn_adam_args *, int, int *);
cnn_status cnn_cpu_rmsprop_update_multi(cnn_backend *, const cnn_rmsprop_args *, int, int *);
cnn_status cnn_cpu_sum_squares_multi(cnn_backend *, const cnn_tensor *const *, int, double *, int *);

#endif
