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
    int label;      /* the offending label, or class */
    int64_t sample; /* its sample */
    int64_t limit;  /* the number of classes */
    float value;    /* the offending class weight */
} cnn_cuda_deferred;

enum { CNN_CUDA_DEFERRED_NONE = 0, CNN_CUDA_DEFERRED_BAD_LABEL = 1, CNN_CUDA_DEFERRED_BAD_WEIGHT = 2 };

/* Data types: activations, gradients and low-precision weight copies are F32, F16 or BF16 (`dt` arguments, a
 * cnn_dtype); kernels load them as float, compute in float (the core/ew_math.h functions) and round to nearest
 * even when they store. Parameters (biases, batchnorm's), master weights, statistics and optimizer state are F32. */

/* x[0..n) = value */
cudaError_t cnn_cuda_launch_fill(cudaStream_t stream, void *x, int dt, int64_t n, float value);
/* dst = src converted (dt to dt) */
cudaError_t cnn_cuda_launch_cast(cudaStream_t stream, const void *src, int src_dt, void *dst, int dst_dt, int64_t n);

/* y = act(x); dx = act'(.) * dy from the input (from_x, GELU and SiLU) or the output xy (dx may alias dy) */
cudaError_t cnn_cuda_launch_act_forward(cudaStream_t stream, cnn_act act, float alpha, const void *x, void *y, int dt,
                                        int64_t n);
cudaError_t cnn_cuda_launch_act_backward(cudaStream_t stream, cnn_act act, float alpha, int from_x, const void *xy,
                                         const void *dy, void *dx, int dt, int64_t n);

/* In place on y (rows, cols): y = act(y + b[col]); b (f32) may be NULL. */
cudaError_t cnn_cuda_launch_bias_act(cudaStream_t stream, void *y, int dt, const float *b, int64_t rows, int64_t cols,
                                     cnn_act act, float alpha);

/* Column sums of x (rows, cols) into out[cols] (f32). `partial` holds cnn_cuda_col_sum_scratch(rows, cols) floats. */
int64_t cnn_cuda_col_sum_scratch(int64_t rows, int64_t cols);
cudaError_t cnn_cuda_launch_col_sum(cudaStream_t stream, const void *x, int dt, int64_t rows, int64_t cols, float *out,
                                    float *partial);

/* Softmax cross-entropy per row of logits (n, k) (dt), labels i32 (n) or NULL (probabilities only), with optional
 * class weights (k, f32) and label smoothing; probs and losses f32, dlogits dt; any output may be NULL. A label
 * outside [0, k), or a class weight that is not positive and finite, makes that row's outputs NaN and is recorded
 * in *deferred. */
cudaError_t cnn_cuda_launch_softmax_xent(cudaStream_t stream, const void *logits, int dt, const int32_t *labels,
                                         int64_t n, int64_t k, float *probs, float *losses, void *dlogits,
                                         float grad_scale, const float *class_weights, float label_smoothing,
                                         cnn_cuda_deferred *deferred);

/* Optimizer steps over n elements: param (f32 master) from grad (grad_dt, times grad_scale); when param_lp is not
 * NULL, the updated value is also stored there in lp_dt (the low-precision copy the layers compute with).
 * velocity / mom may be NULL when momentum == 0. */
typedef struct cnn_cuda_opt_io {
    float *param;
    const void *grad;
    int grad_dt;
    void *param_lp;
    int lp_dt;
    int64_t n;
    float grad_scale;
} cnn_cuda_opt_io;
cudaError_t cnn_cuda_launch_sgd(cudaStream_t stream, const cnn_cuda_opt_io *io, float *velocity, float lr,
                                float momentum, float weight_decay, int nesterov);
cudaError_t cnn_cuda_launch_adam(cudaStream_t stream, const cnn_cuda_opt_io *io, float *m, float *v, float lr,
                                 float beta1, float beta2, float eps, float weight_decay, int decoupled, float bc1,
                                 float bc2);
cudaError_t cnn_cuda_launch_rmsprop(cudaStream_t stream, const cnn_cuda_opt_io *io, float *sq, float *mom, float lr,
                                    float rho, float eps, float momentum, float weight_decay);

/* The same steps over a list of tensors in one launch. `table` (device memory) holds `count` descriptors, one per
 * tensor with elements, in list order; block b of the launch updates elements [(b - first) * CNN_CUDA_MULTI_CHUNK,
 * + CNN_CUDA_MULTI_CHUNK) of the tensor whose blocks [first, first + ceil(n / CNN_CUDA_MULTI_CHUNK)) hold b, and
 * `blocks` is the total. Each element is computed as by the per-tensor kernels (the same code), so the results are
 * the same bits. The hyperparameters are the launch's; s1, s2 are the state: sgd velocity (NULL when momentum is
 * 0) and unused; adam m and v; rmsprop sq and mom (NULL when momentum is 0). */
#define CNN_CUDA_MULTI_CHUNK 4096
typedef struct cnn_cuda_opt_desc {
    float *param;
    const void *grad;
    void *param_lp; /* or NULL */
    float *s1, *s2;
    int64_t n;
    int64_t first;
    int grad_dt, lp_dt;
} cnn_cuda_opt_desc;
cudaError_t cnn_cuda_launch_sgd_multi(cudaStream_t stream, const cnn_cuda_opt_desc *table, int count, int64_t blocks,
                                      float grad_scale, float lr, float momentum, float weight_decay, int nesterov);
cudaError_t cnn_cuda_launch_adam_multi(cudaStream_t stream, const cnn_cuda_opt_desc *table, int count, int64_t blocks,
                                       float grad_scale, float lr, float beta1, float beta2, float eps,
                                       float weight_decay, int decoupled, float bc1, float bc2);
cudaError_t cnn_cuda_launch_rmsprop_multi(cudaStream_t stream, const cnn_cuda_opt_desc *table, int count,
                                          int64_t blocks, float grad_scale, float lr, float rho, float eps,
                                          float momentum, float weight_decay);

/* Geometry of an NHWC window op (pooling), or of explicit padding. */
typedef struct cnn_cuda_window {
    int64_t n, h, w, c;   /* input */
    int64_t oh, ow;       /* output */
    int kh, kw, sh, sw;   /* window and stride */
    int pad_top, pad_left, pad_bottom, pad_right;
} cnn_cuda_window;

/* xp (N, H + top + bottom, W + left + right, C) = x zero-padded; and the inverse crop. */
cudaError_t cnn_cuda_launch_pad(cudaStream_t stream, const void *x, void *xp, int dt, const cnn_cuda_window *g);
cudaError_t cnn_cuda_launch_crop(cudaStream_t stream, const void *xp, void *x, int dt, const cnn_cuda_window *g);

/* Pooling for the windows cuDNN cannot describe (asymmetric padding), and for 16-bit data. Max: padding never
 * wins, ties go to the first element in row-major window order; average: over the window's real (non-padding)
 * elements. Backward gathers (no atomics): each dx element sums the dy of the windows it wins (max) or belongs to
 * (average). */
cudaError_t cnn_cuda_launch_pool_forward(cudaStream_t stream, cnn_pool_mode mode, const void *x, void *y, int dt,
                                         const cnn_cuda_window *g);
cudaError_t cnn_cuda_launch_pool_backward(cudaStream_t stream, cnn_pool_mode mode, const void *x, const void *dy,
                                          void *dx, int dt, const cnn_cuda_window *g);

/* ---- ops of the complete op set ---- */

/* Dropout (forward and backward are the same map): out[i] = keep(seed, offset + i) ? in[i] / (1 - rate) : 0.
 * out may alias in. */
cudaError_t cnn_cuda_launch_dropout(cudaStream_t stream, const void *in, void *out, int dt, int64_t n, float rate,
                                    uint64_t seed, uint64_t offset);

/* y = alpha * a + beta * b, each with its own dtype (y may alias a or b); x *= alpha */
cudaError_t cnn_cuda_launch_add(cudaStream_t stream, const void *a, int a_dt, const void *b, int b_dt, void *y,
                                int y_dt, int64_t n, float alpha, float beta);
cudaError_t cnn_cuda_launch_scale(cudaStream_t stream, void *x, int dt, int64_t n, float alpha);

/* Sum of squares: partial[k] = sum of x[i]^2 (in double) over chunk k of CNN_CUDA_SUMSQ_CHUNK elements, in a
 * fixed order, so the partials do not depend on timing; the caller adds them in order. */
#define CNN_CUDA_SUMSQ_CHUNK 8192
cudaError_t cnn_cuda_launch_sum_squares(cudaStream_t stream, const void *x, int dt, int64_t n, double *partial);
/* The same partials for a list of tensors in one launch: `table` (device memory) holds `count` descriptors, one per
 * tensor with elements; partial[first + k] is chunk k of that tensor, exactly as cnn_cuda_launch_sum_squares
 * computes it, and `blocks` is the total number of chunks. */
typedef struct cnn_cuda_sumsq_desc {
    const void *x;
    int64_t n;
    int64_t first;
    int dt;
    int unused; /* 0: makes the padding a member, since tables are compared bytewise */
} cnn_cuda_sumsq_desc;
cudaError_t cnn_cuda_launch_sum_squares_multi(cudaStream_t stream, const cnn_cuda_sumsq_desc *table, int count,
                                              int64_t blocks, double *partial);

/* *flag = 1 when any of x[0..n) is an infinity or a NaN (left alone otherwise). */
cudaError_t cnn_cuda_launch_nonfinite(cudaStream_t stream, const void *x, int dt, int64_t n, int *flag);

/* Channel concatenation, one part at a time: the part (rows, part_cols) is columns [at, at + part_cols) of the
 * whole (rows, whole_cols). to_whole: part -> whole (forward); else whole -> part (backward). Same dtype. */
cudaError_t cnn_cuda_launch_concat_part(cudaStream_t stream, void *whole, void *part, int dt, int64_t rows,
                                        int64_t whole_cols, int64_t part_cols, int64_t at, int to_whole);

/* Batch normalization over the rows of x (m, c) (dt), per channel, in double:
 *   mode SHIFTED_MOMENTS:  s1 = sum (x - k), s2 = sum (x - k)^2 with k = x's first row (center, dy, y, dres
 *                          unused)
 *   mode GRAD:             s1 = sum g, s2 = sum g (x - center), g = act'(y) dy rounded to dt (dy when act is NONE;
 *                          y is then unused), also stored into dres (dt) when that is not NULL
 * `partial` holds cnn_cuda_bn_scratch(m, c) doubles. The chunking is fixed by m alone, so results do not depend
 * on timing. */
enum { CNN_CUDA_BN_SHIFTED_MOMENTS = 0, CNN_CUDA_BN_GRAD };
int64_t cnn_cuda_bn_scratch(int64_t m, int64_t c);
cudaError_t cnn_cuda_launch_bn_reduce(cudaStream_t stream, int mode, const void *x, const void *dy, const void *y,
                                      cnn_act act, float alpha, void *dres, int dt, const double *center, int64_t m,
                                      int64_t c, double *s1, double *s2, double *partial);

/* Per-channel forward coefficients (one thread per channel), the CPU backend's expressions:
 *   training: from the SHIFTED_MOMENTS sums s1, s2 of x (dt), mean = k + s1 / m and the biased
 *   var = max(s2 / m - (s1 / m)^2, 0); inference: running_mean/var (x, s1 and s2 unused).
 *   invstd = 1 / sqrt(var + eps); scale = gamma * invstd; shift = beta; center = mean (float).
 *   training also writes save_mean/save_invstd (when not NULL) and updates the running statistics (when not NULL)
 *   with the unbiased variance. All f32. */
cudaError_t cnn_cuda_launch_bn_forward_coef(cudaStream_t stream, int training, const void *x, int dt,
                                            const double *s1, const double *s2, int64_t m, int64_t c,
                                            const float *running_mean_in, const float *running_var_in,
                                            const float *gamma, const float *beta, float eps, float momentum,
                                            float *running_mean, float *running_var, float *save_mean,
                                            float *save_invstd, float *scale, float *shift, float *center);
/* y = act((x - center[c]) * scale[c] + shift[c] + res) over (m, c); res (dt) may be NULL */
cudaError_t cnn_cuda_launch_bn_apply(cudaStream_t stream, const void *x, const void *res, void *y, int dt, int64_t m,
                                     int64_t c, const float *center, const float *scale, const float *shift,
                                     cnn_act act, float alpha);
/* Backward: center (double) and invstd from the saved batch statistics (training) or the running ones. */
cudaError_t cnn_cuda_launch_bn_backward_stats(cudaStream_t stream, int training, const float *save_mean,
                                              const float *save_invstd, const float *running_mean,
                                              const float *running_var, float eps, int64_t c, double *center,
                                              float *invstd);
/* dgamma = s2 * invstd, dbeta = s1 (when not NULL); coef = (gs, k0, k1, mu) x c for the dx pass */
cudaError_t cnn_cuda_launch_bn_backward_coef(cudaStream_t stream, int training, const double *s1, const double *s2,
                                             const double *center, const float *invstd, const float *gamma,
                                             int64_t m, int64_t c, float *dgamma, float *dbeta, float *coef);
/* dx = gs (g - k0 - (x - mu) k1) per channel, g = act'(y) dy as bn_reduce computes it; dx may alias dy */
cudaError_t cnn_cuda_launch_bn_dx(cudaStream_t stream, const void *x, const void *dy, const void *y, cnn_act act,
                                  float alpha, void *dx, int dt, int64_t m, int64_t c, const float *coef);

#ifdef __cplusplus
}
#endif
#endif
