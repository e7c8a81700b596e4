/* The backend interface: a table of function pointers plus a context (docs/ARCHITECTURE.md, "The backend table").
 *
 * Rules every backend follows:
 * - One entry per primitive; forward and backward are separate. Arguments come in structs.
 * - Tensors are NHWC; conv weights OHWI; dense weights (out, in). Ops compute in the tensors' dtype; a backend
 *   that lacks an op or dtype returns CNN_ERR_UNSUPPORTED with a message (no silent fallback to another device).
 * - Outputs are overwritten, never accumulated into.
 * - `plan` points to a slot owned by the caller (a layer) that the backend fills lazily with what it wants to
 *   keep per call site: primitives, descriptors, algorithm choices, workspaces, max-pool indices. The backend
 *   rebuilds it when the shapes change, and ops->plan_destroy frees it. A NULL `plan` means "no caching". The
 *   forward and backward calls of one layer share one slot (max-pool backward reads what forward stored).
 * - Every failure sets cnn_last_error() and returns a status; nothing aborts. */
#ifndef CNN_CORE_BACKEND_H
#define CNN_CORE_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/backend.h"
#include "cnn/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_plan cnn_plan; /* backend-defined */
typedef struct cnn_qprog cnn_qprog; /* backend-defined: a quantized model's graph compiled (qprog_create) */
struct cnn_lite;

typedef enum cnn_act {
    CNN_ACT_NONE = 0,
    CNN_ACT_RELU,
    CNN_ACT_LEAKY_RELU, /* x > 0 ? x : alpha * x (alpha: cnn_act_args.alpha, 0 < alpha < 1) */
    CNN_ACT_ELU,        /* x > 0 ? x : alpha * (exp(x) - 1) */
    CNN_ACT_SIGMOID,
    CNN_ACT_TANH,
    CNN_ACT_GELU,       /* exact, with erf (PyTorch's default GELU) */
    CNN_ACT_SILU,       /* x * sigmoid(x) */
    CNN_ACT_COUNT
} cnn_act;

/* 1 when the activation's gradient can be computed from its output alone (so a layer may fuse it and keep only
 * the output); GELU and SiLU need the input. */
static inline int cnn_act_grad_needs_input(cnn_act act) { return act == CNN_ACT_GELU || act == CNN_ACT_SILU; }

typedef enum cnn_pool_mode {
    CNN_POOL_MAX = 0,
    CNN_POOL_AVG,
    CNN_POOL_MODE_COUNT
} cnn_pool_mode;

typedef struct cnn_conv2d_args {
    cnn_plan **plan;
    const cnn_tensor *x;  /* (N, H, W, C) */
    const cnn_tensor *w;  /* (O, KH, KW, C / groups) */
    const cnn_tensor *b;  /* (O), or NULL for no bias */
    cnn_tensor *y;        /* forward: (N, OH, OW, O), after the fused activation */
    const cnn_tensor *dy; /* backward: (N, OH, OW, O), gradient w.r.t. the pre-activation output */
    cnn_tensor *dx;       /* backward_data: (N, H, W, C) */
    cnn_tensor *dw;       /* backward_filter: like w */
    cnn_tensor *db;       /* backward_filter: like b, or NULL */
    int stride_h, stride_w;
    int pad_top, pad_left, pad_bottom, pad_right;
    int dilation_h, dilation_w; /* 1: dense kernel */
    int groups;                 /* 1: ordinary convolution */
    cnn_act act;                /* applied after bias in forward; only acts whose gradient needs no input */
    float act_alpha;
} cnn_conv2d_args;

typedef struct cnn_pool2d_args {
    cnn_plan **plan;
    cnn_pool_mode mode;
    const cnn_tensor *x;  /* (N, H, W, C) */
    cnn_tensor *y;        /* (N, OH, OW, C) */
    const cnn_tensor *dy; /* backward */
    cnn_tensor *dx;       /* backward */
    int kernel_h, kernel_w;
    int stride_h, stride_w;
    int pad_top, pad_left, pad_bottom, pad_right;
    int training; /* forward: keep in *plan what backward needs */
} cnn_pool2d_args;

typedef struct cnn_dense_args {
    cnn_plan **plan;
    const cnn_tensor *x;  /* (N, IN): any shape whose first dim is N and whose other dims multiply to IN */
    const cnn_tensor *w;  /* (OUT, IN) */
    const cnn_tensor *b;  /* (OUT) or NULL */
    cnn_tensor *y;        /* forward: (N, OUT), after the fused activation */
    const cnn_tensor *dy; /* backward: (N, OUT), gradient w.r.t. the pre-activation output */
    cnn_tensor *dx;       /* backward_data: like x */
    cnn_tensor *dw;       /* backward_weights: like w */
    cnn_tensor *db;       /* backward_weights: like b, or NULL */
    cnn_act act;          /* only acts whose gradient needs no input */
    float act_alpha;
} cnn_dense_args;

typedef struct cnn_act_args {
    cnn_act act;
    float alpha;          /* leaky ReLU slope, ELU alpha */
    const cnn_tensor *x;  /* input; backward reads it for GELU and SiLU, may be NULL otherwise */
    cnn_tensor *y;        /* forward output; backward reads it for the other activations */
    const cnn_tensor *dy;
    cnn_tensor *dx;       /* may alias dy */
} cnn_act_args;

typedef struct cnn_softmax_xent_args {
    const cnn_tensor *logits; /* (N, K) */
    const cnn_tensor *labels; /* (N) i32, each in [0, K) */
    cnn_tensor *probs;        /* (N, K) softmax, or NULL */
    cnn_tensor *losses;       /* (N) f32 per-sample cross-entropy, or NULL */
    cnn_tensor *dlogits;      /* (N, K) grad_scale * w[label] * (probs - target), or NULL */
    float grad_scale;         /* 1/N for the mean loss, times the loss scale under fp16 */
    const cnn_tensor *class_weights; /* (K) f32 or NULL: sample loss and gradient scaled by w[label] */
    float label_smoothing;    /* target = (1 - s) * onehot + s / K (Szegedy et al. 2016); 0: none */
} cnn_softmax_xent_args;

typedef struct cnn_sgd_args {
    cnn_tensor *param;
    const cnn_tensor *grad;
    cnn_tensor *param_lp;       /* mixed precision: the 16-bit copy the layers compute with, rewritten from the updated
                                 * param; NULL otherwise. grad may then be 16-bit too. */
    cnn_tensor *velocity; /* same shape; NULL when momentum == 0 */
    float lr, momentum, weight_decay;
    int nesterov;
    float grad_scale; /* grad is multiplied by this first (1, or 1/loss_scale) */
} cnn_sgd_args;

typedef struct cnn_adam_args {
    cnn_tensor *param;
    const cnn_tensor *grad;
    cnn_tensor *param_lp;       /* mixed precision: the 16-bit copy the layers compute with, rewritten from the updated
                                 * param; NULL otherwise. grad may then be 16-bit too. */
    cnn_tensor *m, *v;
    float lr, beta1, beta2, eps, weight_decay;
    int decoupled;             /* 1: AdamW decay; 0: L2 added to the gradient */
    float bias_correction1;    /* 1 - beta1^t */
    float bias_correction2;    /* 1 - beta2^t */
    float grad_scale;
} cnn_adam_args;


typedef struct cnn_batchnorm_args {
    cnn_plan **plan;
    const cnn_tensor *x;        /* (N, H, W, C) or (N, C): normalized per channel C over all other dims */
    cnn_tensor *y;              /* like x, after the fused activation (backward reads it when act is not NONE) */
    const cnn_tensor *residual; /* forward: like x, or NULL: y = act(bn(x) + residual), the residual add of a block
                                 * fused */
    const cnn_tensor *gamma;    /* (C) */
    const cnn_tensor *beta;     /* (C) */
    cnn_tensor *running_mean;   /* (C): training forward updates r = (1 - momentum) r + momentum * batch */
    cnn_tensor *running_var;    /* (C): updated with the unbiased batch variance (PyTorch's convention) */
    cnn_tensor *save_mean;      /* (C): training forward stores the batch mean for backward */
    cnn_tensor *save_invstd;    /* (C): and 1 / sqrt(biased batch var + eps) */
    const cnn_tensor *dy;       /* backward: gradient w.r.t. y; the op applies act's gradient (from y) first */
    cnn_tensor *dx, *dgamma, *dbeta;
    cnn_tensor *dresidual;      /* backward: like x, or NULL: receives act'(y) dy, the gradient w.r.t. the sum
                                 * before the activation, which is the fused residual's gradient */
    float momentum;             /* 0.1 in PyTorch's convention (Keras' 0.99 == 0.01 here) */
    float eps;
    int training;               /* forward: 1 uses and stores batch statistics; 0 uses the running ones */
    cnn_act act;                /* one whose gradient follows from its output (cnn_act_grad_needs_input: 0) */
    float act_alpha;
} cnn_batchnorm_args;

/* Inverted dropout with a counter-based mask: element i of the flattened tensor is kept when
 * cnn_dropout_keep(seed, offset + i, rate) (core/ew_math.h), so backward recomputes the mask from (seed, offset)
 * and no mask is stored; y = keep ? x / (1 - rate) : 0. */
typedef struct cnn_dropout_args {
    const cnn_tensor *x;
    cnn_tensor *y;
    const cnn_tensor *dy;
    cnn_tensor *dx;
    float rate;                 /* in [0, 1) */
    uint64_t seed, offset;
} cnn_dropout_args;

/* y = alpha * a + beta * b, elementwise over equal shapes (residual add; gradient accumulation). y may alias
 * a or b. */
typedef struct cnn_add_args {
    const cnn_tensor *a, *b;
    cnn_tensor *y;
    float alpha, beta;
} cnn_add_args;

/* Channel concatenation of n NHWC (or (N, C)) tensors that agree on every dim but the last. backward splits dy
 * into the dxs (a NULL dxs[i] is skipped). */
#define CNN_CONCAT_MAX 16
typedef struct cnn_concat_args {
    int n;
    const cnn_tensor *xs[CNN_CONCAT_MAX];
    cnn_tensor *y;
    const cnn_tensor *dy;
    cnn_tensor *dxs[CNN_CONCAT_MAX];
} cnn_concat_args;

typedef struct cnn_rmsprop_args {
    cnn_tensor *param;
    const cnn_tensor *grad;
    cnn_tensor *param_lp;       /* mixed precision: the 16-bit copy the layers compute with, rewritten from the updated
                                 * param; NULL otherwise. grad may then be 16-bit too. */
    cnn_tensor *sq;             /* running mean of squared gradients */
    cnn_tensor *mom;            /* momentum buffer; NULL when momentum == 0 */
    float lr, rho, eps, momentum, weight_decay;
    float grad_scale;
} cnn_rmsprop_args;

/* An int8 convolution or dense layer of a quantized model (core/quant/layer_lite.c): for every output, the exact int32
 * sum of (x - x_zp) * w over its taps, plus its channel's bias (in 64 bits, saturated to int32), rescaled by the
 * channel's multiplier and shift, plus y_zp, clamped to [y_min, y_max]: cnn-lite's arithmetic (core/lite/lite_quant.h),
 * so that the int8 outputs are bit for bit those of its C kernels. x: n x h x w x c int8; wt: the int8 weights
 * (OHWI, or (oc, h * w * c) for dense); y: n x oh x ow x oc int8. */
typedef struct cnn_qconv_args {
    cnn_plan **plan; /* required */
    int dense;
    int n, h, w, c, oh, ow, oc;
    int kh, kw, sh, sw, dh, dw, groups, pt, pl, pb, pr;
    const int8_t *x;
    int32_t x_zp;
    const int8_t *wt;
    uint64_t w_version; /* with the pointer, what the backend's reordered weights are kept for */
    const int32_t *bias; /* oc, or NULL */
    const int32_t *mult, *shift; /* oc each */
    int32_t y_zp, y_min, y_max;
    int8_t *y;
} cnn_qconv_args;

typedef struct cnn_backend_ops {
    const char *name;
    /* What the dispatch layer (core/ops.c) checks every call against: the dtypes activation-like tensors may have,
     * a bit (1u << dtype) each (the CPU: F32; CUDA: F32, F16, BF16), and whether tensors live in host memory (a
     * tensor without a backend, a view of host memory, is then accepted). */
    unsigned float_dtypes;
    int host_memory;
    void (*destroy)(cnn_backend *);
    cnn_status (*alloc)(cnn_backend *, size_t bytes, void **ptr);
    void (*free)(cnn_backend *, void *ptr);
    /* host <-> tensor on this backend; bytes == cnn_tensor_bytes(t) */
    cnn_status (*write)(cnn_backend *, cnn_tensor *dst, const void *host, size_t bytes);
    cnn_status (*read)(cnn_backend *, const cnn_tensor *src, void *host, size_t bytes);
    /* tensor -> tensor, both on this backend, same dtype and element count */
    cnn_status (*copy)(cnn_backend *, cnn_tensor *dst, const cnn_tensor *src);
    cnn_status (*fill)(cnn_backend *, cnn_tensor *dst, float value);
    cnn_status (*sync)(cnn_backend *);
    void (*plan_destroy)(cnn_backend *, cnn_plan *plan);

    cnn_status (*conv2d_forward)(cnn_backend *, const cnn_conv2d_args *);
    cnn_status (*conv2d_backward_data)(cnn_backend *, const cnn_conv2d_args *);
    cnn_status (*conv2d_backward_filter)(cnn_backend *, const cnn_conv2d_args *); /* dw and db */

    cnn_status (*pool2d_forward)(cnn_backend *, const cnn_pool2d_args *);
    cnn_status (*pool2d_backward)(cnn_backend *, const cnn_pool2d_args *);

    cnn_status (*dense_forward)(cnn_backend *, const cnn_dense_args *);
    cnn_status (*dense_backward_data)(cnn_backend *, const cnn_dense_args *);
    cnn_status (*dense_backward_weights)(cnn_backend *, const cnn_dense_args *); /* dw and db */

    cnn_status (*act_forward)(cnn_backend *, const cnn_act_args *);
    cnn_status (*act_backward)(cnn_backend *, const cnn_act_args *);

    cnn_status (*softmax_xent)(cnn_backend *, const cnn_softmax_xent_args *);

    cnn_status (*sgd_update)(cnn_backend *, const cnn_sgd_args *);
    cnn_status (*adam_update)(cnn_backend *, const cnn_adam_args *);

    /* ---- entries added for the complete op set; a backend may leave them NULL, and callers must then report
     *      CNN_ERR_UNSUPPORTED naming the op and the backend (see cnn_backend_lacks) ---- */
    cnn_status (*batchnorm_forward)(cnn_backend *, const cnn_batchnorm_args *);
    cnn_status (*batchnorm_backward)(cnn_backend *, const cnn_batchnorm_args *); /* dx, dgamma, dbeta */
    cnn_status (*dropout_forward)(cnn_backend *, const cnn_dropout_args *);
    cnn_status (*dropout_backward)(cnn_backend *, const cnn_dropout_args *);
    cnn_status (*add)(cnn_backend *, const cnn_add_args *);
    cnn_status (*concat_forward)(cnn_backend *, const cnn_concat_args *);
    cnn_status (*concat_backward)(cnn_backend *, const cnn_concat_args *);
    cnn_status (*rmsprop_update)(cnn_backend *, const cnn_rmsprop_args *);
    /* *out = sum of x^2 over all elements, accumulated in double (gradient-norm clipping); synchronizes */
    cnn_status (*sum_squares)(cnn_backend *, const cnn_tensor *x, double *out);
    /* x *= alpha in place */
    cnn_status (*scale)(cnn_backend *, cnn_tensor *x, float alpha);

    /* ---- mixed precision; optional (a backend without them computes in FP32 only) ---- */
    /* The arithmetic of the ops that follow (cnn_precision): TF32 lets f32 convolutions and matrix products round
     * to TF32; FP16 and BF16 are accepted (the 16-bit tensors themselves choose their ops' types). */
    cnn_status (*set_precision)(cnn_backend *, cnn_precision precision);
    /* dst = src converted between F32, F16 and BF16 (round to nearest even), equal element counts */
    cnn_status (*cast)(cnn_backend *, cnn_tensor *dst, const cnn_tensor *src);
    /* *any = 1 when some element of ts[0..n) is an infinity or a NaN, else 0; synchronizes */
    cnn_status (*nonfinite)(cnn_backend *, const cnn_tensor *const *ts, int n, int *any);
    /* ---- quantized models; optional (without it cnn-lite's own C kernels compute the sums) ---- */
    cnn_status (*qconv_s32)(cnn_backend *, const cnn_qconv_args *);
    /* The whole graph of an opened cnn-lite model compiled for this backend at one batch size (cpu/qprog.c):
     * optional; CNN_ERR_UNSUPPORTED from create means "run cnn-lite's own path" (with qconv_s32). run: `batch`
     * normalized images in, their class scores (before the softmax) out. exact (int8 models): the requantization
     * is cnn-lite's own, so that the scores are its bit for bit; else the backend's fastest, within one step per op. */
    cnn_status (*qprog_create)(cnn_backend *, const struct cnn_lite *m, int batch, int exact, cnn_qprog **out);
    cnn_status (*qprog_run)(cnn_backend *, cnn_qprog *p, const float *x, float *scores);
    void (*qprog_destroy)(cnn_backend *, cnn_qprog *p);

    /* on: every op from now on gives bit-identical results for identical inputs, run after run (algorithms chosen
     * by fixed heuristics among the deterministic ones, rather than by timing). NULL: the backend always is. */
    cnn_status (*set_deterministic)(cnn_backend *, int on);

    /* ---- asynchronous uploads for the data loader; optional (the CPU backend leaves them NULL, and callers then
     *      use plain host memory and `write`) ---- */
    /* page-locked host memory, from which uploads run without staging and asynchronously */
    cnn_status (*host_alloc)(cnn_backend *, size_t bytes, void **ptr);
    void (*host_free)(cnn_backend *, void *ptr);
    /* Queues a host -> tensor copy (bytes == cnn_tensor_bytes(dst)) on the backend's copy stream, and makes the
     * work queued after it wait for the copy (an event the compute stream waits on): copy and compute overlap.
     * `host` (page-locked, from host_alloc) must stay unchanged until that work has been waited for (`sync`, or a
     * `read` after it), and `dst` must not be in use by work queued before. */
    cnn_status (*write_async)(cnn_backend *, cnn_tensor *dst, const void *host, size_t bytes);

    /* ---- multi-tensor optimizer updates and norms; optional (NULL: the caller loops over the per-tensor entries,
     *      as core/nn/optim.c does) ----
     * *_update_multi do what n calls of the per-tensor entry with list[0], ..., list[n-1] would do, with results
     * bit-identical to those calls, in a few launches (CUDA: one kernel for the whole list). n >= 1. Each element
     * is checked as the per-tensor entry checks it; the elements may differ in size (0 elements included), in the
     * grad's dtype and in having a param_lp or not, and no two may share memory. The hyperparameters (every field
     * but the tensors) must be equal, bit for bit, in all elements: they are shared by the launch, and a mismatch is
     * CNN_ERR_INVALID_ARG naming the element and the field. Every check runs before anything is written: when one
     * fails, no element is updated. `failed` may be NULL; else *failed receives the index of the element an error
     * is attributed to, or -1 (no error, a bad list or n, a failed launch). */
    cnn_status (*sgd_update_multi)(cnn_backend *, const cnn_sgd_args *list, int n, int *failed);
    cnn_status (*adam_update_multi)(cnn_backend *, const cnn_adam_args *list, int n, int *failed);
    cnn_status (*rmsprop_update_multi)(cnn_backend *, const cnn_rmsprop_args *list, int n, int *failed);
    /* out[i] = what sum_squares gives for ts[i] (bit-identical), i < n (n >= 1), with one synchronization for all;
     * *failed as above */
    cnn_status (*sum_squares_multi)(cnn_backend *, const cnn_tensor *const *ts, int n, double *out, int *failed);
} cnn_backend_ops;

struct cnn_backend {
    const cnn_backend_ops *ops;
    void *ctx;              /* backend-private */
    char name[16];          /* "cpu", "cuda:0" */
    char description[160];
};

/* How a backend is made; the list of compiled-in backends is generated by the build (backends.c). */
typedef struct cnn_backend_entry {
    const char *name;                                           /* "cpu", "cuda" */
    cnn_status (*create)(const char *spec, cnn_backend **out); /* spec: the full name, e.g. "cuda:1" */
    int (*available)(void);                                     /* 1 if usable on this machine now */
} cnn_backend_entry;

extern const cnn_backend_entry cnn_backend_registry[];
extern const int cnn_backend_registry_count;

/* Sets the message for an op the backend leaves NULL and returns CNN_ERR_UNSUPPORTED (core/ops.c calls it for
 * every entry it finds NULL). */
cnn_status cnn_backend_lacks(const cnn_backend *b, const char *op);

/* For a backend's create: a zeroed backend with `ops` and a zeroed context of ctx_size bytes (b->ctx); `kind` names
 * the backend in the out-of-memory message ("cpu", "cuda"). */
cnn_status cnn_backend_alloc(const cnn_backend_ops *ops, size_t ctx_size, const char *kind, cnn_backend **out);

/* Tensor versions (cnn_tensor.version): cnn_tensor_track gives a tensor its first version (a network's
 * parameters are tracked); cnn_tensor_touch renews the version of a tracked tensor after a write that did not go
 * through cnn_tensor_write (the optimizer's updates). A backend may cache data derived from a tracked tensor's
 * contents under (data, version); version 0 means untracked: never cache. */
void cnn_tensor_track(cnn_tensor *t);
void cnn_tensor_touch(cnn_tensor *t);

/* A tensor's description without its memory (data NULL): the shape is checked in 64-bit arithmetic (a byte size
 * that overflows gives CNN_ERR_SHAPE with the shape) and nothing is allocated on the backend, which may be NULL
 * while the tensor only describes (a network planned for its memory estimate). cnn_tensor_materialize then
 * allocates the memory on the tensor's backend; cnn_tensor_destroy frees either. */
cnn_status cnn_tensor_describe(cnn_backend *backend, cnn_dtype dtype, int ndim, const int64_t *shape,
                               cnn_tensor **out);
cnn_status cnn_tensor_materialize(cnn_tensor *t);

/* Shape helpers shared by layers and backends. */
/* Output size of a window op along one axis; returns -1 when the window does not fit. */
int64_t cnn_window_out(int64_t in, int kernel, int stride, int pad_before, int pad_after, int dilation);

#ifdef __cplusplus
}
#endif
#endif
