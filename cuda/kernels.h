/* Our CUDA kernels, as C-callable launchers (defined in kernels.cu). Each queues its kernel on `stream` and
 * returns the launch status (cudaGetLastError); execution errors surface at a later call, as CUDA's do.
 *
 * Layouts: images (N, H, W, C) row-major; matrices (rows, cols) row-major. Sizes are element counts. The
 * elementwise math comes from core/ew_math.h, shared with the CPU backend. */
#ifndef CNN_CUDA_KERNELS_H
#define CNN_CUDA_KERNELS_H

#include <stdint.h>

#include <cuda_runtime.h>

#include "core/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Errors found inside kernels, in host-mapped memory: the first one wins, the host reads it after a sync. */
typedef struct cnn_cuda_deferred {
    int code;       /* 0: none; CNN_CUDA_DEFERRED_* */
    int label;      /* the offending label */
    int64_t sample; /* its sample */
    int64_t limit;  /* the number of classes */
} cnn_cuda_deferred;

enum { CNN_CUDA_DEFERRED_NONE = 0, CNN_CUDA_DEFERRED_BAD_LABEL = 1 };

/* x[0..n) = value */
cudaError_t cnn_cuda_launch_fill(cudaStream_t stream, float *x, int64_t n, float value);

/* y = act(x); dx = act'(.) * dy from the input (from_x, GELU and SiLU) or the output xy (dx may alias dy) */
cudaError_t cnn_cuda_launch_act_forward(cudaStream_t stream, cnn_act act, float alpha, const float *x, float *y,
                                        int64_t n);
cudaError_t cnn_cuda_launch_act_backward(cudaStream_t stream, cnn_act act, float alpha, int from_x, const float *xy,
                                         const float *dy, float *dx, int64_t n);

/* In place on y (rows, cols): y = act(y + b[col]); b may be NULL. */
cudaError_t cnn_cuda_launch_bias_act(cudaStream_t stream, float *y, const float *b, int64_t rows, int64_t cols,
                                     cnn_act act, float alpha);

/* Column sums of x (rows, cols) into out[cols]. `partial` holds cnn_cuda_col_sum_scratch(rows, cols) floats. */
int64_t cnn_cuda_col_sum_scratch(int64_t rows, int64_t cols);
cudaError_t cnn_cuda_launch_col_sum(cudaStream_t stream, const float *x, int64_t rows, int64_t cols, float *out,
                                    float *partial);

/* Softmax cross-entropy per row of logits (n, k), labels i32 (n). Any of probs, losses, dlogits may be NULL.
 * A label outside [0, k) makes that row's outputs NaN and is recorded in *deferred. */
cudaError_t cnn_cuda_launch_softmax_xent(cudaStream_t stream, const float *logits, const int32_t *labels, int64_t n,
                                         int64_t k, float *probs, float *losses, float *dlogits, float grad_scale,
                                         cnn_cuda_deferred *deferred);

/* Optimizer steps over n elements; velocity may be NULL when momentum == 0. */
cudaError_t cnn_cuda_launch_sgd(cudaStream_t stream, float *param, const float *grad, float *velocity, int64_t n,
                                float lr, float momentum, float weight_decay, int nesterov, float grad_scale);
cudaError_t cnn_cuda_launch_adam(cudaStream_t stream, float *param, const float *grad, float *m, float *v, int64_t n,
                                 float lr, float beta1, float beta2, float eps, float weight_decay, int decoupled,
                                 float bc1, float bc2, float grad_scale);

/* Geometry of an NHWC window op (pooling), or of explicit padding. */
typedef struct cnn_cuda_window {
    int64_t n, h, w, c;   /* input */
    int64_t oh, ow;       /* output */
    int kh, kw, sh, sw;   /* window and stride */
    int pad_top, pad_left, pad_bottom, pad_right;
} cnn_cuda_window;

/* xp (N, H + top + bottom, W + left + right, C) = x zero-padded; and the inverse crop. */
cudaError_t cnn_cuda_launch_pad(cudaStream_t stream, const float *x, float *xp, const cnn_cuda_window *g);
cudaError_t cnn_cuda_launch_crop(cudaStream_t stream, const float *xp, float *x, const cnn_cuda_window *g);

/* Pooling for the windows cuDNN cannot describe (asymmetric padding). Max: padding never wins, ties go to the
 * first element in row-major window order; average: over the window's real (non-padding) elements. Backward
 * gathers (no atomics): each dx element sums the dy of the windows it wins (max) or belongs to (average). */
cudaError_t cnn_cuda_launch_pool_forward(cudaStream_t stream, cnn_pool_mode mode, const float *x, float *y,
                                         const cnn_cuda_window *g);
cudaError_t cnn_cuda_launch_pool_backward(cudaStream_t stream, cnn_pool_mode mode, const float *x, const float *dy,
                                          float *dx, const cnn_cuda_window *g);

#ifdef __cplusplus
}
#endif
#endif
