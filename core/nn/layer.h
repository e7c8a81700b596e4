/* Layers: a small vtable per layer type, implemented once on top of backend ops (never device code).
 *
 * Shapes here are per sample: (H, W, C) for images, (F) for features. The batch dimension is the network's. */
#ifndef CNN_CORE_LAYER_H
#define CNN_CORE_LAYER_H

#include <stdint.h>

#include "core/backend.h"
#include "core/rng.h"

#define CNN_LAYER_MAX_PARAMS 2
#define CNN_LAYER_MAX_STATE 3 /* batchnorm's statistics and, under QAT, its output's range */
#define CNN_LAYER_MAX_INPUTS CNN_CONCAT_MAX
#define CNN_LAYER_MAX_BUFS 3
#define CNN_NAME_MAX 64

typedef struct cnn_shape {
    int ndim;       /* 3: (H, W, C); 1: (F) */
    int64_t d[3];
} cnn_shape;

typedef enum cnn_init {
    CNN_INIT_ZEROS = 0,
    CNN_INIT_HE_NORMAL,      /* He et al. 2015: N(0, 2 / fan_in), for layers followed by ReLU */
    CNN_INIT_GLOROT_UNIFORM, /* Glorot & Bengio 2010: U(+-sqrt(6 / (fan_in + fan_out))), Keras' default */
    CNN_INIT_AUTO,           /* weights: He normal before a ReLU, Glorot uniform otherwise */
    CNN_INIT_ONES,           /* batchnorm gamma and running variance */
} cnn_init;

typedef struct cnn_param {
    char name[CNN_NAME_MAX];  /* "conv2d_1.weight" */
    cnn_tensor *value;
    cnn_tensor *grad;        /* NULL for non-trainable state (batchnorm running statistics); in the compute dtype
                              * under mixed precision for the weights that have value_lp */
    cnn_tensor *value_lp;    /* mixed precision: the 16-bit copy of a conv or dense weight the layer computes with
                              * (value stays the f32 master); NULL otherwise (cnn_net_set_precision) */
    cnn_init init;
    int64_t fan_in, fan_out;
} cnn_param;

typedef struct cnn_layer cnn_layer;

/* What one call of a layer's op (cnn_layer_ops.op) works on: the tensors its direction does not use are NULL. */
typedef struct cnn_layer_io {
    const cnn_tensor *x;
    cnn_tensor *y, *dy, *dx, *dw, *db;
    cnn_act act; /* the activation the op fuses: l->act, or none where l->act runs apart (cnn_layer_pre_act) */
} cnn_layer_io;

typedef struct cnn_layer_ops {
    const char *kind;        /* the definition keyword: "conv" */
    const char *type_name;   /* shown by summary: "Conv2D" */
    const char *name_prefix; /* layer names: "conv2d", "conv2d_1", ... */
    /* Checks the input shape, sets l->out and declares the parameters (l->params, l->nparams), allocating nothing:
     * shape inference alone, which the memory estimate runs on untrusted definitions. */
    cnn_status (*init)(cnn_layer *l);
    /* y = f(x[0], ..., x[ninputs - 1]). Every tensor has the batch as first dim. A fused batchnorm (cnn_layer.fused)
     * gets its residual as x[1] here and its gradient target as dx[1] in backward. */
    cnn_status (*forward)(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training);
    /* Given dy (may be overwritten), fills the params' grads and dx[k] for every input k; dx[k] is NULL where
     * no gradient is needed (the network input, or a branch without parameters upstream). */
    cnn_status (*backward)(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                           cnn_tensor *const *dx);
    void (*destroy)(cnn_layer *l); /* frees what the layer struct holds beyond the common part; may be NULL */
    /* A layer with weights whose forward and backward are cnn_layer_weighted_forward and _backward (conv, dense):
     * its backend op in direction dir (CNN_OP_FWD, CNN_OP_BWD_WEIGHTS or CNN_OP_BWD_DATA of core/op_check.h),
     * fusing l->act where cnn_act_grad_needs_input says it may. NULL for the other layers. */
    cnn_status (*op)(cnn_layer *l, int dir, const cnn_layer_io *io);
    /* 1: the output is the input's memory under another shape (flatten): no forward/backward work. */
    int is_view;
} cnn_layer_ops;

struct cnn_layer {
    const cnn_layer_ops *ops;
    char name[CNN_NAME_MAX];
    int line;              /* line of the definition, for messages */
    cnn_backend *backend;
    int inputs[CNN_LAYER_MAX_INPUTS]; /* producing layers' indices in the network; -1: the network input */
    int ninputs;
    cnn_shape ins[CNN_LAYER_MAX_INPUTS]; /* their per-sample shapes (set by the network before init) */
    cnn_shape in, out;     /* in == ins[0] */
    cnn_param params[CNN_LAYER_MAX_PARAMS];
    int nparams;
    cnn_param state[CNN_LAYER_MAX_STATE]; /* non-trainable, saved in model files (running statistics) */
    int nstate;
    cnn_plan *plan;        /* the backend's per-layer state */
    cnn_act act;
    float act_alpha;       /* leaky ReLU slope, ELU alpha */
    cnn_init weight_init;  /* from the definition's init= option; CNN_INIT_AUTO by default */
    float l1, l2;          /* penalties on the weights (params[0]) added to their gradient: l1*|w| + l2*w^2 */
    uint64_t seed;         /* per-layer seed (dropout), derived from the network's */
    uint64_t step;         /* training step, set by the network before forward (dropout masks) */
    /* Input gradients (core/nn/gradient.c): 1 while a backward pass follows an inference forward. Parameter
     * gradients are then left as they are (not computed), batchnorm differentiates through its running statistics
     * and dropout is the identity. */
    int infer_grad;
    int frozen;            /* transfer learning: no gradients, no optimizer updates; batchnorm runs in inference
                            * mode (its statistics stay as they are). Frozen layers form a prefix (cnn_net_freeze). */
    /* The batchnorm + add rewrite (core/nn/net.c, fuse_batchnorm_add) leaves `inputs` as defined (the summary and
     * transfer learning read them) and records the fusion here. A batchnorm with `fused` also computes the add after
     * it: y = act(bn(x) + the output of layer fused_src (-1: the network input)), act being the add's. An add with
     * `fused` is then a view of that batchnorm's output (fused_src: the batchnorm). */
    int fused;
    int fused_src;
    cnn_tensor *bufs[CNN_LAYER_MAX_BUFS]; /* layer-owned scratch (pre-activations), grown on demand */
};

/* What a layer computes with: the 16-bit copy under mixed precision, else the value itself. */
static inline cnn_tensor *cnn_param_compute(const cnn_param *p) { return p->value_lp ? p->value_lp : p->value; }

/* Declares a parameter of the given shape with its grad (cnn_tensor_describe: checked sizes, no memory yet; the
 * network allocates them with cnn_layer_materialize once its memory budget allows). */
cnn_status cnn_layer_add_param(cnn_layer *l, const char *suffix, int ndim, const int64_t *shape, cnn_init init,
                               int64_t fan_in, int64_t fan_out);
/* Declares a non-trainable state tensor (no grad) saved in model files as "<layer>.<suffix>"; as above. */
cnn_status cnn_layer_add_state(cnn_layer *l, const char *suffix, int ndim, const int64_t *shape, cnn_init init);
/* Allocates the memory of the declared parameters, their grads and the state on l->backend. */
cnn_status cnn_layer_materialize(cnn_layer *l);
/* Fills *view with the layer's scratch buffer `slot`, shaped like `like` (grown when too small). */
cnn_status cnn_layer_buffer(cnn_layer *l, int slot, const cnn_tensor *like, cnn_tensor *view);
/* Applies l->act (with l->act_alpha) from pre to y, and its gradient in place on dy; NULL ops are reported. */
cnn_status cnn_layer_act_forward(cnn_layer *l, const cnn_tensor *pre, cnn_tensor *y);
cnn_status cnn_layer_act_backward(cnn_layer *l, const cnn_tensor *pre, const cnn_tensor *y, cnn_tensor *dy);
/* Where the pre-activation output goes when l->act is applied apart from the op (its gradient needs the input,
 * cnn_act_grad_needs_input): *pre = buf, the view of scratch buffer `slot` shaped like y; else *pre = NULL (the op
 * fuses the activation and writes y itself). */
cnn_status cnn_layer_pre_act(cnn_layer *l, int slot, const cnn_tensor *y, cnn_tensor *buf, cnn_tensor **pre);
/* The forward and backward of a layer with weights, around its ops->op. Forward: the op writes y, or the
 * pre-activation kept in scratch buffer 0 when l->act runs apart from it (cnn_layer_pre_act), the activation then
 * writes y. Backward: the activation's gradient in place on dy, then the weights' gradients (not after an inference
 * forward: infer_grad) and dx[0] where it is wanted. */
cnn_status cnn_layer_weighted_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training);
cnn_status cnn_layer_weighted_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                                       cnn_tensor *const *dx);
/* Frees params and the plan; then the layer. */
void cnn_layer_destroy(cnn_layer *l);

/* The weight initialization of a layer: its init= option, or He normal before a ReLU and Glorot otherwise. */
cnn_init cnn_layer_weight_init(const cnn_layer *l);

/* Fills a parameter according to its init scheme. */
cnn_status cnn_param_initialize(cnn_param *p, cnn_rng *rng);

/* ---- layer constructors (core/layer_*.c); the parser fills their settings ---- */

typedef enum cnn_padding_mode { CNN_PAD_VALID = 0, CNN_PAD_SAME, CNN_PAD_EXPLICIT } cnn_padding_mode;

typedef struct cnn_conv_layer {
    cnn_layer base;
    int filters, kernel_h, kernel_w, stride_h, stride_w;
    int dilation_h, dilation_w, groups;
    int same_padding;      /* a cnn_padding_mode: TF/Keras "same", "valid", or the explicit pads below */
    int use_bias;
    int pad_top, pad_left, pad_bottom, pad_right; /* given (explicit) or derived in init */
} cnn_conv_layer;

typedef struct cnn_pool_layer {
    cnn_layer base;
    cnn_pool_mode mode;
    int kernel_h, kernel_w, stride_h, stride_w;
    int same_padding;      /* a cnn_padding_mode */
    int pad_top, pad_left, pad_bottom, pad_right;
    int global;            /* globalavgpool, globalmaxpool: the window is the whole input; the output is flat (C) */
} cnn_pool_layer;

/* Training statistics a batchnorm layer takes from elsewhere (--sync-batchnorm: all ranks', installed by
 * core/train/dist_bn.c): `forward` runs instead of the backend's training forward, `backward` after the backend's
 * backward. All NULL: the layer's own statistics. */
typedef struct cnn_bn_sync {
    cnn_status (*forward)(void *ctx, cnn_backend *b, const cnn_batchnorm_args *a);
    cnn_status (*backward)(void *ctx, const cnn_batchnorm_args *a);
    void *ctx;
} cnn_bn_sync;

typedef struct cnn_batchnorm_layer {
    cnn_layer base;
    float momentum, eps;
    cnn_bn_sync sync;
} cnn_batchnorm_layer;

typedef struct cnn_dropout_layer {
    cnn_layer base;
    float rate;
} cnn_dropout_layer;

typedef struct cnn_dense_layer {
    cnn_layer base;
    int units;
    int use_bias;
} cnn_dense_layer;

/* The ops table cnn_<name>_layer_ops of the layer kind `keyword` (the definition's), run by <fn>_init,
 * <fn>_forward and <fn>_backward; type (shown by summary) and prefix (of layer names) as Keras spells them.
 * CNN_LAYER_OPS: keyword and functions named for the table. */
#define CNN_LAYER_OPS_OF(name, keyword, fn, type, prefix)                                                       \
    const cnn_layer_ops cnn_##name##_layer_ops = {.kind = (keyword), .type_name = (type), .name_prefix = (prefix), \
                                                  .init = fn##_init, .forward = fn##_forward,                     \
                                                  .backward = fn##_backward}
#define CNN_LAYER_OPS(name, type, prefix) CNN_LAYER_OPS_OF(name, #name, name, type, prefix)
/* The ops table of a layer with weights: <name>_init and <name>_op, run by cnn_layer_weighted_forward/_backward. */
#define CNN_WEIGHTED_LAYER_OPS(name, type, prefix)                                                              \
    const cnn_layer_ops cnn_##name##_layer_ops = {.kind = #name, .type_name = (type), .name_prefix = (prefix), \
                                                  .init = name##_init, .forward = cnn_layer_weighted_forward,  \
                                                  .backward = cnn_layer_weighted_backward, .op = name##_op}
/* The ops table of a view layer (is_view): <name>_init only. */
#define CNN_VIEW_LAYER_OPS(name, type, prefix)                                                                   \
    const cnn_layer_ops cnn_##name##_layer_ops = {.kind = #name, .type_name = (type), .name_prefix = (prefix), \
                                                  .init = name##_init, .is_view = 1}

extern const cnn_layer_ops cnn_conv_layer_ops;
extern const cnn_layer_ops cnn_maxpool_layer_ops;
extern const cnn_layer_ops cnn_avgpool_layer_ops;
extern const cnn_layer_ops cnn_dense_layer_ops;
extern const cnn_layer_ops cnn_flatten_layer_ops;
extern const cnn_layer_ops cnn_globalavgpool_layer_ops;
extern const cnn_layer_ops cnn_globalmaxpool_layer_ops;
extern const cnn_layer_ops cnn_batchnorm_layer_ops;
extern const cnn_layer_ops cnn_act_layer_ops;     /* relu, leaky_relu, elu, sigmoid, tanh, gelu, silu, linear */
extern const cnn_layer_ops cnn_softmax_layer_ops; /* last layer only: marks the output as logits (a view) */
extern const cnn_layer_ops cnn_dropout_layer_ops;
extern const cnn_layer_ops cnn_add_layer_ops;
extern const cnn_layer_ops cnn_concat_layer_ops;
extern const cnn_layer_ops cnn_lite_layer_ops;   /* a whole quantized model (core/quant/layer_lite.c) */

/* 1 when the layer's output is another layer's memory: no forward/backward work (flatten, softmax, a fused add). */
static inline int cnn_layer_is_view(const cnn_layer *l)
{
    return l->ops->is_view || (l->fused && l->ops == &cnn_add_layer_ops);
}

/* The layer whose output a view shows (-1: the network input). */
static inline int cnn_layer_view_src(const cnn_layer *l) { return l->ops->is_view ? l->inputs[0] : l->fused_src; }

/* Activation names of the model text ("relu", "gelu", ...); NULL for none. */
const char *cnn_act_name(cnn_act act);

/* "same" padding as TensorFlow computes it: total = max((ceil(in/stride) - 1) * stride + k - in, 0), the extra
 * pixel at the end. */
void cnn_same_padding(int64_t in, int kernel, int stride, int *before, int *after);

/* Elements per sample of a shape (cnn_net_build checked that the product fits). */
int64_t cnn_shape_elements(const cnn_shape *s);

/* A tensor of n samples of shape s on backend b. */
cnn_status cnn_batch_tensor_create(cnn_backend *b, cnn_dtype dtype, const cnn_shape *s, int n, cnn_tensor **out);

/* A view of `of`'s memory as n samples of shape s: no memory of its own (of may have none yet). */
cnn_status cnn_batch_view_create(const cnn_tensor *of, const cnn_shape *s, int n, cnn_tensor **out);

/* A view of t's memory (on t's backend) with the shape and dtype of `like` (equal element counts). */
cnn_tensor cnn_view_like(const cnn_tensor *t, const cnn_tensor *like);

/* Formats a per-sample shape as Keras does: "(None, 26, 26, 32)". */
void cnn_shape_format(const cnn_shape *s, char *buf, size_t size);

#endif
