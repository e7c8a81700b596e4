/* Device-independent argument checks of the window, dense, batchnorm, concat and multi-tensor ops.
 *
 * The dispatch layer (core/ops.c) first checks that every tensor is there, on the backend and in a dtype it
 * computes, then calls these for the rest: the activation a forward may fuse, the op's parameters, ranks,
 * agreement of the shapes, the derived output size (cnn_window_out) and the output's and bias's shapes against it.
 * cnn_conv2d_tensors and cnn_dense_tensors list the tensors a call uses, with their names.
 *
 * Called by the dispatch layer (core/ops.c) only, with `op` naming the op and the backend ("conv2d_forward on cuda")
 * and an empty `prefix`: "<prefix><op>: ...". The tensors the direction uses must be present (ops.c checks them
 * first). */
#ifndef CNN_CORE_OP_CHECK_H
#define CNN_CORE_OP_CHECK_H

#include <stdint.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* "(2, 7, 5, 3)" into buf ("(missing)" for NULL) */
#define CNN_OP_SHAPE_BUF 96
const char *cnn_op_shape_str(const cnn_tensor *t, char *buf, size_t size);
/* t has exactly this shape; else CNN_ERR_SHAPE "<prefix><op>: <name> has shape (..), expected (..)" */
cnn_status cnn_op_check_dims(const cnn_tensor *t, int ndim, const int64_t *shape, const char *prefix, const char *op,
                             const char *name);

/* which tensors an op's call uses: x/w/y forward, dx/w/dy backward data, x/dw/dy backward weights (filter) */
enum { CNN_OP_FWD = 0, CNN_OP_BWD_DATA = 1, CNN_OP_BWD_WEIGHTS = 2 };

/* The activation is known and its alpha valid (leaky ReLU: 0 < alpha < 1; ELU: alpha > 0, finite). With `fused`,
 * also that its gradient needs no input (GELU and SiLU are then CNN_ERR_INVALID_ARG: a layer must apply them as
 * a separate op). */
cnn_status cnn_op_check_act(cnn_act act, float alpha, int fused, const char *prefix, const char *op);
/* a readable activation name for messages ("leaky ReLU", "GELU") */
const char *cnn_op_act_name(cnn_act act);

/* The tensors of a conv2d or dense call in direction `dir` (CNN_OP_*), with their names: [0] x-like (x, or dx
 * backward data), [1] w-like (w, or dw backward weights), [2] y-like (y, or dy), then [3] the bias (b forward, db
 * backward weights) when there is one. The first three are listed even when NULL, so that the caller's checks name
 * them. Returns how many (3 or 4). */
#define CNN_OP_MAX_TENSORS 4
int cnn_conv2d_tensors(const cnn_conv2d_args *a, int dir, const cnn_tensor **ts, const char **names);
int cnn_dense_tensors(const cnn_dense_args *a, int dir, const cnn_tensor **ts, const char **names);

/* The sizes of a call and its parameters. The check zero-fills the struct (padding too) before it fills it in, so
 * that a backend may use it as (the first member of) a memcmp-compared plan key. */
typedef struct cnn_conv2d_sizes {
    int64_t n, h, w, c, o, kh, kw, oh, ow;
    int32_t stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w, groups;
} cnn_conv2d_sizes;

/* "x (N, H, W, C), w (O, KH, KW, C/G), stride SHxSW, padding T,L,B,R, dilation DHxDW, groups G" into buf (for
 * messages and logs). */
#define CNN_CONV2D_SIZES_BUF 192
const char *cnn_conv2d_sizes_str(const cnn_conv2d_sizes *s, char *buf, size_t size);

/* 1 when the CPU backend runs direction dir (CNN_OP_*) of a convolution of these sizes as Winograd F(4x4, 3x3),
 * on a processor where oneDNN has it (AVX-512): the rule and the measurements behind it are in core/op_check.c. */
int cnn_conv2d_winograd_shape(const cnn_conv2d_sizes *k, int dir);

/* dir: CNN_OP_*; forward also checks the fused activation; y-like and the bias against the output size */
cnn_status cnn_conv2d_check(const cnn_conv2d_args *a, int dir, const char *prefix, const char *op,
                            cnn_conv2d_sizes *s);

typedef struct cnn_pool2d_sizes {
    int64_t n, h, w, c, oh, ow;
    int32_t mode, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right;
} cnn_pool2d_sizes;

/* the mode, the window, x-like (x, or dx when backward) and y-like (y, or dy) against the output size */
cnn_status cnn_pool2d_check(const cnn_pool2d_args *a, int backward, const char *prefix, const char *op,
                            cnn_pool2d_sizes *s);

typedef struct cnn_dense_sizes {
    int64_t n, in, out;
} cnn_dense_sizes;

/* dir: CNN_OP_*; forward also checks the fused activation; y-like and the bias against (N, OUT), backward data dx
 * against x when x is given */
cnn_status cnn_dense_check(const cnn_dense_args *a, int dir, const char *prefix, const char *op, cnn_dense_sizes *s);

/* Batch normalization: x (any rank 2..4, channels last), gamma/beta, eps, the running statistics where inference
 * reads them or training forward updates them, the saved statistics where training backward reads them; forward
 * also y, the residual (when given), the fused activation and the momentum; backward dy, dx, dgamma and dbeta (those present). Returns M (rows)
 * and C (channels). Every tensor it looks at must already be known to be on the backend, in f32: the caller checks
 * that for the tensors cnn_batchnorm_tensors lists. */
cnn_status cnn_batchnorm_check(const cnn_batchnorm_args *a, int backward, const char *prefix, const char *op,
                               int64_t *m, int64_t *c);
/* The tensors of a batchnorm call (direction `backward`) that are present, with their names, for the backend's own
 * checks; returns how many (at most CNN_BATCHNORM_MAX_TENSORS). */
#define CNN_BATCHNORM_MAX_TENSORS 14
int cnn_batchnorm_tensors(const cnn_batchnorm_args *a, int backward, const cnn_tensor **ts, const char **names);

/* Channel concatenation: n, the parts (xs forward; dxs, or xs where a dx is NULL, backward) against the whole (y or
 * dy). Returns each part's channel count and the number of rows. Shapes only: the caller then checks the dtype of
 * the whole and of every part it touches. */
cnn_status cnn_concat_check(const cnn_concat_args *a, int backward, const char *prefix, const char *op,
                            int64_t *channels, int64_t *rows);

/* Multi-tensor optimizer updates (the *_update_multi entries): `list` is not NULL, n >= 1, and the hyperparameters
 * of every element equal list[0]'s bit for bit (the message names the element and the field). *failed (not NULL)
 * receives the offending element, or -1. The backend then checks each element's tensors itself. */
cnn_status cnn_sgd_multi_check(const cnn_sgd_args *list, int n, const char *prefix, const char *op, int *failed);
cnn_status cnn_adam_multi_check(const cnn_adam_args *list, int n, const char *prefix, const char *op, int *failed);
cnn_status cnn_rmsprop_multi_check(const cnn_rmsprop_args *list, int n, const char *prefix, const char *op,
                                   int *failed);

/* The sizes of a call the dispatch layer has checked (core/ops.c): what the checks above fill in, without checking
 * again. A backend calls these on the arguments it is given, which it trusts. */
void cnn_conv2d_sizes_of(const cnn_conv2d_args *a, int dir, cnn_conv2d_sizes *s);
void cnn_pool2d_sizes_of(const cnn_pool2d_args *a, int backward, cnn_pool2d_sizes *s);
void cnn_dense_sizes_of(const cnn_dense_args *a, int dir, cnn_dense_sizes *s);
/* m: rows (every dim but the last), c: channels */
void cnn_batchnorm_dims(const cnn_batchnorm_args *a, int64_t *m, int64_t *c);
void cnn_concat_parts(const cnn_concat_args *a, int backward, int64_t *channels, int64_t *rows);

#ifdef __cplusplus
}
#endif

#endif
