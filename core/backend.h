/* The backend interface: a table of function pointers plus a context (DESIGN.md, "The backend interface").
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

typedef enum cnn_act {
    CNN_ACT_NONE = 0,
    CNN_ACT_RELU,
    CNN_ACT_COUNT
} cnn_act;

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
    cnn_act act;                /* applied after bias in forward */
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
    cnn_act act;
} cnn_dense_args;

typedef struct cnn_act_args {
    cnn_act act;
    const cnn_tensor *x;  /* input; backward of ReLU does not need it and may get NULL */
    cnn_tensor *y;        /* forward output; backward reads it (ReLU: dx = dy * (y > 0)) */
    const cnn_tensor *dy;
    cnn_tensor *dx;       /* may alias dy */
} cnn_act_args;

typedef struct cnn_softmax_xent_args {
    const cnn_tensor *logits; /* (N, K) */
    const cnn_tensor *labels; /* (N) i32, each in [0, K) */
    cnn_tensor *probs;        /* (N, K) softmax, or NULL */
    cnn_tensor *losses;       /* (N) f32 per-sample cross-entropy, or NULL */
    cnn_tensor *dlogits;      /* (N, K) grad_scale * (probs - onehot), or NULL */
    float grad_scale;         /* 1/N for the mean loss, times the loss scale under fp16 */
} cnn_softmax_xent_args;

typedef struct cnn_sgd_args {
    cnn_tensor *param;
    const cnn_tensor *grad;
    cnn_tensor *velocity; /* same shape; NULL when momentum == 0 */
    float lr, momentum, weight_decay;
    int nesterov;
    float grad_scale; /* grad is multiplied by this first (1, or 1/loss_scale) */
} cnn_sgd_args;

typedef struct cnn_adam_args {
    cnn_tensor *param;
    const cnn_tensor *grad;
    cnn_tensor *m, *v;
    float lr, beta1, beta2, eps, weight_decay;
    int decoupled;             /* 1: AdamW decay; 0: L2 added to the gradient */
    float bias_correction1;    /* 1 - beta1^t */
    float bias_correction2;    /* 1 - beta2^t */
    float grad_scale;
} cnn_adam_args;

typedef struct cnn_backend_ops {
    const char *name;
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

/* Shape helpers shared by layers and backends. */
/* Output size of a window op along one axis; returns -1 when the window does not fit. */
int64_t cnn_window_out(int64_t in, int kernel, int stride, int pad_before, int pad_after, int dilation);

#ifdef __cplusplus
}
#endif
#endif
