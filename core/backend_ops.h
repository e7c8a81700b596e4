/* The ops that every backend defines, declared from the backend's prefix: CNN_BACKEND_OPS(cnn_cpu) declares
 * cnn_cpu_backend_create, cnn_cpu_conv2d_forward, ... A backend's ops.h declares them with it, then its own; each
 * definition's file includes that header, so that a changed signature is a compile error (-Wmissing-prototypes).
 * docs/ARCHITECTURE.md, "Adding an op". */
#ifndef CNN_CORE_BACKEND_OPS_H
#define CNN_CORE_BACKEND_OPS_H

#include "core/backend.h"

#define CNN_BACKEND_OPS(p)                                                                                             \
    cnn_status p##_backend_create(const char *spec, cnn_backend **out);                                                \
    int p##_backend_available(void);                                                                                   \
    cnn_status p##_conv2d_forward(cnn_backend *, const cnn_conv2d_args *);                                             \
    cnn_status p##_conv2d_backward_data(cnn_backend *, const cnn_conv2d_args *);                                       \
    cnn_status p##_conv2d_backward_filter(cnn_backend *, const cnn_conv2d_args *);                                     \
    cnn_status p##_pool2d_forward(cnn_backend *, const cnn_pool2d_args *);                                             \
    cnn_status p##_pool2d_backward(cnn_backend *, const cnn_pool2d_args *);                                            \
    cnn_status p##_dense_forward(cnn_backend *, const cnn_dense_args *);                                               \
    cnn_status p##_dense_backward_data(cnn_backend *, const cnn_dense_args *);                                         \
    cnn_status p##_dense_backward_weights(cnn_backend *, const cnn_dense_args *);                                      \
    cnn_status p##_act_forward(cnn_backend *, const cnn_act_args *);                                                   \
    cnn_status p##_act_backward(cnn_backend *, const cnn_act_args *);                                                  \
    cnn_status p##_softmax_xent(cnn_backend *, const cnn_softmax_xent_args *);                                         \
    cnn_status p##_sgd_update(cnn_backend *, const cnn_sgd_args *);                                                    \
    cnn_status p##_adam_update(cnn_backend *, const cnn_adam_args *);                                                  \
    cnn_status p##_fill(cnn_backend *, cnn_tensor *, float);                                                           \
    cnn_status p##_batchnorm_forward(cnn_backend *, const cnn_batchnorm_args *);                                       \
    cnn_status p##_batchnorm_backward(cnn_backend *, const cnn_batchnorm_args *);                                      \
    cnn_status p##_dropout_forward(cnn_backend *, const cnn_dropout_args *);                                           \
    cnn_status p##_dropout_backward(cnn_backend *, const cnn_dropout_args *);                                          \
    cnn_status p##_add(cnn_backend *, const cnn_add_args *);                                                           \
    cnn_status p##_concat_forward(cnn_backend *, const cnn_concat_args *);                                             \
    cnn_status p##_concat_backward(cnn_backend *, const cnn_concat_args *);                                            \
    cnn_status p##_rmsprop_update(cnn_backend *, const cnn_rmsprop_args *);                                            \
    cnn_status p##_sum_squares(cnn_backend *, const cnn_tensor *, double *);                                           \
    cnn_status p##_scale(cnn_backend *, cnn_tensor *, float);                                                          \
    cnn_status p##_sgd_update_multi(cnn_backend *, const cnn_sgd_args *, int, int *);                                  \
    cnn_status p##_adam_update_multi(cnn_backend *, const cnn_adam_args *, int, int *);                                \
    cnn_status p##_rmsprop_update_multi(cnn_backend *, const cnn_rmsprop_args *, int, int *);                          \
    cnn_status p##_sum_squares_multi(cnn_backend *, const cnn_tensor *const *, int, double *, int *);

#endif
