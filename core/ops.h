/* The dispatch layer: the only caller of the backend table's entries (docs/ARCHITECTURE.md, "The dispatch layer").
 *
 * Every function here takes the backend and the entry's arguments, checks them once, device-independently, and
 * then calls the backend's entry, which trusts them:
 * - the backend has the entry (else CNN_ERR_UNSUPPORTED), the args and the tensors the call uses are there;
 * - every tensor lives on this backend, has a rank in [1, CNN_MAX_DIMS] and data when it has elements;
 * - dtypes: activation-like tensors in one of the backend's compute dtypes (cnn_backend_ops.float_dtypes) and of
 *   one dtype within a call; parameters other than weights, master weights, optimizer state, statistics and
 *   losses F32; labels I32;
 * - shapes agree with each other and the op's parameters are valid (core/op_check.c).
 * Every message names the op and the backend: "conv2d_forward on cuda: w has shape (4, 3, 3, 2), expected ...".
 * What only a backend can know (a oneDNN primitive that cannot be created, a cuDNN status, 32-bit size limits,
 * a label out of range found on the device) stays in the backend and its messages. */
#ifndef CNN_CORE_OPS_H
#define CNN_CORE_OPS_H

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when the backend has the optional entry named `entry` ("write_async", "sgd_update_multi", "cast", ...): a
 * caller that can do without it asks first; calling a missing entry is CNN_ERR_UNSUPPORTED naming op and backend */
int cnn_op_has(const cnn_backend *b, const char *entry);

/* ---- memory ---- */
cnn_status cnn_op_alloc(cnn_backend *b, size_t bytes, void **ptr);
void cnn_op_free(cnn_backend *b, void *ptr);
cnn_status cnn_op_write(cnn_backend *b, cnn_tensor *dst, const void *host, size_t bytes);
cnn_status cnn_op_read(cnn_backend *b, const cnn_tensor *src, void *host, size_t bytes);
cnn_status cnn_op_copy(cnn_backend *b, cnn_tensor *dst, const cnn_tensor *src);
cnn_status cnn_op_fill(cnn_backend *b, cnn_tensor *dst, float value);
cnn_status cnn_op_sync(cnn_backend *b);
void cnn_op_plan_destroy(cnn_backend *b, cnn_plan *plan);
void cnn_op_destroy(cnn_backend *b);
cnn_status cnn_op_host_alloc(cnn_backend *b, size_t bytes, void **ptr);
void cnn_op_host_free(cnn_backend *b, void *ptr);
cnn_status cnn_op_write_async(cnn_backend *b, cnn_tensor *dst, const void *host, size_t bytes);

/* ---- compute ---- */
cnn_status cnn_op_conv2d_forward(cnn_backend *b, const cnn_conv2d_args *a);
cnn_status cnn_op_conv2d_backward_data(cnn_backend *b, const cnn_conv2d_args *a);
cnn_status cnn_op_conv2d_backward_filter(cnn_backend *b, const cnn_conv2d_args *a);
cnn_status cnn_op_pool2d_forward(cnn_backend *b, const cnn_pool2d_args *a);
cnn_status cnn_op_pool2d_backward(cnn_backend *b, const cnn_pool2d_args *a);
cnn_status cnn_op_dense_forward(cnn_backend *b, const cnn_dense_args *a);
cnn_status cnn_op_dense_backward_data(cnn_backend *b, const cnn_dense_args *a);
cnn_status cnn_op_dense_backward_weights(cnn_backend *b, const cnn_dense_args *a);
cnn_status cnn_op_act_forward(cnn_backend *b, const cnn_act_args *a);
cnn_status cnn_op_act_backward(cnn_backend *b, const cnn_act_args *a);
cnn_status cnn_op_softmax_xent(cnn_backend *b, const cnn_softmax_xent_args *a);
cnn_status cnn_op_batchnorm_forward(cnn_backend *b, const cnn_batchnorm_args *a);
cnn_status cnn_op_batchnorm_backward(cnn_backend *b, const cnn_batchnorm_args *a);
cnn_status cnn_op_dropout_forward(cnn_backend *b, const cnn_dropout_args *a);
cnn_status cnn_op_dropout_backward(cnn_backend *b, const cnn_dropout_args *a);
cnn_status cnn_op_add(cnn_backend *b, const cnn_add_args *a);
cnn_status cnn_op_concat_forward(cnn_backend *b, const cnn_concat_args *a);
cnn_status cnn_op_concat_backward(cnn_backend *b, const cnn_concat_args *a);
cnn_status cnn_op_scale(cnn_backend *b, cnn_tensor *x, float alpha);

/* ---- optimizers ---- */
cnn_status cnn_op_sgd_update(cnn_backend *b, const cnn_sgd_args *a);
cnn_status cnn_op_adam_update(cnn_backend *b, const cnn_adam_args *a);
cnn_status cnn_op_rmsprop_update(cnn_backend *b, const cnn_rmsprop_args *a);
cnn_status cnn_op_sum_squares(cnn_backend *b, const cnn_tensor *x, double *out);
cnn_status cnn_op_sgd_update_multi(cnn_backend *b, const cnn_sgd_args *list, int n, int *failed);
cnn_status cnn_op_adam_update_multi(cnn_backend *b, const cnn_adam_args *list, int n, int *failed);
cnn_status cnn_op_rmsprop_update_multi(cnn_backend *b, const cnn_rmsprop_args *list, int n, int *failed);
cnn_status cnn_op_sum_squares_multi(cnn_backend *b, const cnn_tensor *const *ts, int n, double *out, int *failed);

/* ---- precision ---- */
/* set_precision and set_deterministic: a backend without the entry computes in FP32 only / is always
 * deterministic; cnn_op_set_precision then accepts only FP32, cnn_op_set_deterministic always succeeds */
cnn_status cnn_op_set_precision(cnn_backend *b, cnn_precision precision);
cnn_status cnn_op_set_deterministic(cnn_backend *b, int on);
cnn_status cnn_op_cast(cnn_backend *b, cnn_tensor *dst, const cnn_tensor *src);
cnn_status cnn_op_nonfinite(cnn_backend *b, const cnn_tensor *const *ts, int n, int *any);

/* ---- quantized models ---- */
cnn_status cnn_op_qconv_s32(cnn_backend *b, const cnn_qconv_args *a);
cnn_status cnn_op_qprog_create(cnn_backend *b, const struct cnn_lite *m, int batch, int exact, cnn_qprog **out);
cnn_status cnn_op_qprog_run(cnn_backend *b, cnn_qprog *p, const float *x, float *scores);
void cnn_op_qprog_destroy(cnn_backend *b, cnn_qprog *p);

#ifdef __cplusplus
}
#endif
#endif
