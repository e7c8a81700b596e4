/* The CPU backend's private toolkit: its context, the per-call-site plan cache and checked oneDNN calls (the ops'
 * arguments are checked by core/ops.c).
 *
 * Rules:
 * - Every oneDNN call goes through CNN_CPU_DNNL, which turns a dnnl_status_t into a cnn_status with a message
 *   naming the op and the call ("oneDNN convolution forward: dnnl_primitive_desc_create failed: unimplemented").
 * - Our tensors keep their plain layouts (NHWC, OHWI, (OUT, IN)); oneDNN may pick its own formats (tag "any"),
 *   and a cnn_cpu_arg then owns the primitive-side buffer and the reorder between the two, built once.
 * - A plan (struct cnn_plan) keeps the two most recently used shape keys of one call site, so that the smaller
 *   last batch of an epoch does not evict the full-batch primitives. */
#ifndef CNN_CPU_DNNL_UTIL_H
#define CNN_CPU_DNNL_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include <oneapi/dnnl/dnnl.h>

#include "core/backend.h"
#include "core/error.h"
#include "core/op_check.h"
#include "core/plan.h"

/* ---- the backend context ---- */

typedef struct cnn_cpu_ctx {
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    int threads;
    int winograd;         /* 1: 3x3 convolutions may run as Winograd (cpu/conv.c); CNN_CPU_WINOGRAD=0 turns it off */
    void *scratch;        /* the transient primitive-side buffers of the primitive running now (cnn_cpu_arg) */
    size_t scratch_size;
} cnn_cpu_ctx;

extern const cnn_backend_ops cnn_cpu_ops;

static inline cnn_cpu_ctx *cnn_cpu_ctx_of(cnn_backend *b) { return (cnn_cpu_ctx *)b->ctx; }

/* ---- checked oneDNN calls ---- */

/* Maps a oneDNN status to ours and records "oneDNN <what>: <call> failed: <reason>". */
cnn_status cnn_cpu_dnnl_status(dnnl_status_t s, const char *what, const char *call);
const char *cnn_cpu_dnnl_status_name(dnnl_status_t s);
const char *cnn_cpu_isa_name(dnnl_cpu_isa_t isa);

/* Calls a oneDNN function; on failure sets `st` and jumps to `fail`. `what` names the op for the message. */
#define CNN_CPU_DNNL(what, call, ...) CNN_TRY(cnn_cpu_dnnl_status(call(__VA_ARGS__), (what), #call))

/* 1 when oneDNN's int8 kernels here have VNNI (u8 x s8 summed straight into s32). Without it, they multiply in
 * 16-bit pairs that saturate, and oneDNN halves the weights to avoid that: sums would no longer be exact. */
int cnn_cpu_exact_int8(void);

/* Memory descriptor of an f32 tensor with the given logical dims (oneDNN order) and tag. */
cnn_status cnn_cpu_md(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_format_tag_t tag,
                      const char *what);
/* The same for a tensor of data type dt (the int8 kernels' u8, s8, s32). */
cnn_status cnn_cpu_md_dt(dnnl_memory_desc_t *md, int ndims, const int64_t *dims, dnnl_data_type_t dt,
                         dnnl_format_tag_t tag, const char *what);

/* ---- an argument of a primitive: our plain memory, and the primitive's own when its format differs ---- */

typedef struct cnn_cpu_arg {
    int id;                   /* DNNL_ARG_SRC, ... */
    int output;               /* 1: the primitive writes it */
    dnnl_memory_t user;       /* our plain layout; its data handle is set at every call */
    dnnl_memory_t inner;      /* the primitive's layout when it differs from ours, else NULL; its buffer is a share
                               * of the context's scratch (transient), or its own once a tracked input came */
    int transient;
    size_t inner_size;
    dnnl_primitive_t reorder; /* user -> inner for inputs, inner -> user for outputs */
    /* When the op says an input is a tracked tensor (cnn_tensor.version; forward weights), its reordered form gets
     * a buffer of its own and the reorder is skipped while the data and version are those of the last one:
     * inference reorders a network's weights once, not every call. */
    uint64_t version;         /* set by the op before each run: the input tensor's version (0: untracked) */
    const void *done_data;    /* what `inner` holds: the data and version it was reordered from */
    uint64_t done_version;
} cnn_cpu_arg;

#define CNN_CPU_MAX_ARGS 6
/* alignment of the shares of the context's scratch: a cache line, what oneDNN's own buffers use */
#define CNN_CPU_SCRATCH_ALIGN 64

/* A primitive with its descriptor and arguments, built once per shape key. */
typedef struct cnn_cpu_prim {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    int built;
    uint64_t variant; /* what it was built for beyond the key (bias, activation and its alpha, training) */
    int nargs;
    cnn_cpu_arg arg[CNN_CPU_MAX_ARGS];
    dnnl_memory_t workspace; /* owned; NULL when the primitive needs none */
    /* oneDNN's scratchpad, in user mode: a share of the context's scratch at each run. oneDNN's own (library mode)
     * is per thread, fixed when the primitive is created: a primitive created in one thread and run in another
     * (cnn serve warms its workers' networks up before their threads start) wrote through a null pointer. */
    dnnl_memory_t scratchpad; /* NULL when it needs none */
    size_t scratchpad_size;
} cnn_cpu_prim;

/* How one argument of a primitive is described when it is built. */
typedef struct cnn_cpu_arg_spec {
    int id;                        /* DNNL_ARG_* */
    dnnl_query_t query;            /* where the primitive's descriptor says its format, e.g. dnnl_query_src_md */
    int index;                     /* the query's index (1 for the bias among the weights) */
    const dnnl_memory_desc_t *md;  /* our plain layout */
    int output;
} cnn_cpu_arg_spec;

/* Creates the primitive descriptor for `op_desc` (with `attr` and backward `hint`, both may be NULL), the
 * primitive, and one cnn_cpu_arg per spec, with a reorder wherever oneDNN chose a format other than ours.
 * With `want_workspace`, allocates the workspace the descriptor asks for. On failure `p` is left empty. */
cnn_status cnn_cpu_prim_build(cnn_cpu_ctx *ctx, cnn_cpu_prim *p, const void *op_desc,
                              const_dnnl_primitive_attr_t attr, const_dnnl_primitive_desc_t hint,
                              const cnn_cpu_arg_spec *specs, int nargs, int want_workspace, const char *what);

/* Runs the primitive on our buffers (data[i] for arg i, in the order of the specs): reorders inputs that need it,
 * executes, reorders outputs back. `workspace`, when not NULL, is passed as DNNL_ARG_WORKSPACE. */
cnn_status cnn_cpu_prim_run(cnn_cpu_ctx *ctx, cnn_cpu_prim *p, void *const *data, dnnl_memory_t workspace,
                            const char *what);

/* cnn_cpu_prim_build with the first of oneDNN's implementations whose name starts with `prefer` (e.g.
 * "jit:avx512_core"), or its first choice when none does or `prefer` is NULL. */
cnn_status cnn_cpu_prim_build_prefer(cnn_cpu_ctx *ctx, cnn_cpu_prim *p, const void *op_desc,
                                     const_dnnl_primitive_attr_t attr, const_dnnl_primitive_desc_t hint,
                                     const cnn_cpu_arg_spec *specs, int nargs, int want_workspace, const char *prefer,
                                     const char *what);

/* The first of oneDNN's implementations of `op_desc` whose name starts with `prefer` (the caller destroys it), or
 * NULL when none does (the caller then takes oneDNN's first choice). */
dnnl_primitive_desc_t cnn_cpu_find_impl(cnn_cpu_ctx *ctx, const void *op_desc, const_dnnl_primitive_attr_t attr,
                                        const_dnnl_primitive_desc_t hint, const char *prefer);

void cnn_cpu_prim_destroy(cnn_cpu_prim *p);

/* The implementation oneDNN picked ("brgconv:avx512_core", ...), or "?". */
const char *cnn_cpu_prim_impl(const cnn_cpu_prim *p);

/* An attribute with an eltwise post-op for `act` (with its alpha), or NULL for CNN_ACT_NONE. Only activations
 * whose gradient needs no input (cnn_act_grad_needs_input) can be fused; check with cnn_op_check_act first. */
cnn_status cnn_cpu_act_attr(cnn_act act, float alpha, dnnl_primitive_attr_t *attr, const char *what);

/* A variant word for a fused activation: the act and the bits of its alpha (0 for acts without one). */
uint64_t cnn_cpu_act_variant(cnn_act act, float alpha);

/* ---- layers with weights (convolution, inner product): forward x, w (, b) -> y with a fused activation, backward
 *      data dy, w -> dx, backward weights x, dy -> dw (, db); a direction is core/op_check.h's CNN_OP_* ---- */

/* oneDNN's descriptor of one direction of such a layer */
typedef union cnn_cpu_wdesc {
    dnnl_convolution_desc_t conv;
    dnnl_inner_product_desc_t ip;
} cnn_cpu_wdesc;

/* Sets *d to the descriptor of direction `dir` of the layer `entry`, with the bias or without; forward is forward
 * training (the backward directions' hint is its descriptor without the bias). */
struct cnn_cpu_wentry;
typedef cnn_status (*cnn_cpu_wdesc_fn)(const struct cnn_cpu_wentry *entry, int dir, int bias, cnn_cpu_wdesc *d,
                                       const char *what);

/* The primitives of one shape key of such a layer, with our plain layouts. */
typedef struct cnn_cpu_wlayer {
    int ready;                  /* the layouts are set (cnn_cpu_wkind.prepare) */
    dnnl_memory_desc_t x_md, w_md, b_md, y_md;
    dnnl_primitive_desc_t hint; /* forward-training descriptor that the backward ones are created against */
    cnn_cpu_prim prim[3];       /* by direction */
} cnn_cpu_wlayer;

/* A plan entry of such a layer: the key first (core/plan.h compares and copies its first key_size bytes), then the
 * primitives. A kind's entry begins with one and adds what its descriptors need (plain data, nothing to free). */
typedef struct cnn_cpu_wentry {
    union {
        cnn_conv2d_sizes conv;
        cnn_dense_sizes dense;
    } key;
    cnn_cpu_wlayer l;
} cnn_cpu_wentry;

/* A kind of such layer: its plan entries (`entry_size` bytes, the key `key_size`), how a new entry's layouts are set,
 * its descriptors, and its ops' names by direction. */
typedef struct cnn_cpu_wkind {
    cnn_plan_kind plan;
    size_t key_size, entry_size;
    cnn_status (*prepare)(cnn_cpu_ctx *ctx, cnn_cpu_wentry *entry, const char *what);
    cnn_cpu_wdesc_fn desc;
    /* the implementation to prefer (cnn_cpu_prim_build_prefer) for a direction, or NULL; the function may be NULL */
    const char *(*prefer)(const cnn_cpu_wentry *entry, int dir);
    /* When building direction `dir` failed: 1 after switching that direction to a more general descriptor (which
     * is then built instead), 0 when there is none. May be NULL. */
    int (*fallback)(cnn_cpu_wentry *entry, int dir);
    const char *op[3];   /* "conv2d_forward", ... */
    const char *what[3]; /* oneDNN's names for messages: "convolution forward", ... */
} cnn_cpu_wkind;

/* What one call of a direction runs on: the op's tensors (those the direction does not use may be NULL; b and db
 * NULL when the layer has no bias) and the forward's fused activation. */
typedef struct cnn_cpu_wcall {
    int dir;
    const cnn_tensor *x, *w, *b, *y, *dy, *dx, *dw, *db;
    cnn_act act;
    float act_alpha;
} cnn_cpu_wcall;

/* Runs direction c->dir of a layer of kind k: the entry for `key` in *plan (or in a plan of its own when plan is
 * NULL), its primitive built on first use or when the bias or the activation changed. */
cnn_status cnn_cpu_wlayer_op(cnn_backend *b, const cnn_cpu_wkind *k, cnn_plan **plan, const void *key,
                             const cnn_cpu_wcall *c);

/* The three ops of a layer of kind `kind` (a cnn_cpu_wkind) whose arguments (args_t) have cnn_cpu_wcall's tensors
 * and whose key (key_t) sizes_of(args, direction, &key) makes: kind_run, then fwd, bwd_data and bwd_weights. */
#define CNN_CPU_WLAYER_OPS(kind, args_t, key_t, sizes_of, fwd, bwd_data, bwd_weights)                                 \
    static cnn_status kind##_run(cnn_backend *b, const args_t *a, int dir)                                            \
    {                                                                                                                  \
        key_t key;                                                                                                     \
        sizes_of(a, dir, &key); /* checked by core/ops.c */                                                            \
        const cnn_cpu_wcall c = {dir, a->x, a->w, a->b, a->y, a->dy, a->dx, a->dw, a->db, a->act, a->act_alpha};       \
        return cnn_cpu_wlayer_op(b, &kind, a->plan, &key, &c);                                                         \
    }                                                                                                                  \
    cnn_status fwd(cnn_backend *b, const args_t *a) { return kind##_run(b, a, CNN_OP_FWD); }                          \
    cnn_status bwd_data(cnn_backend *b, const args_t *a) { return kind##_run(b, a, CNN_OP_BWD_DATA); }                \
    cnn_status bwd_weights(cnn_backend *b, const args_t *a) { return kind##_run(b, a, CNN_OP_BWD_WEIGHTS); }

/* ---- plans (core/plan.h): two entries, so that the smaller last batch of an epoch does not evict the full-batch
 *      primitives ---- */

#define CNN_CPU_PLAN_SLOTS 2

/* ---- the kernels of quantized models' compiled graphs (cpu/qprog.c) that the tests check exactly ---- */

struct cnn_lite_op_info;
/* An int8 add: cnn-lite's table of every pair of codes (cnn_lite_op_info.lut), re-indexed for u8 codes. */
typedef struct cnn_cpu_qadd_k {
    uint8_t lut[65536];
} cnn_cpu_qadd_k;
void cnn_cpu_qadd_init(cnn_cpu_qadd_k *k, const struct cnn_lite_op_info *o);
/* y = the add of a and b, u8 codes (int8 + 128), bit for bit cnn-lite's */
void cnn_cpu_qadd(const cnn_cpu_qadd_k *k, const uint8_t *a, const uint8_t *b, uint8_t *y, int64_t count);
/* y = lq_quantize(x, scale, zp) + 128, bit for bit */
void cnn_cpu_quantize_u8(const float *x, uint8_t *y, int64_t count, float scale, int32_t zp);

/* cnn-lite's requantization of an int8 conv's or dense's int32 sums (core/lite/lite.c, requant()), per output
 * channel: the sum + an offset in 64 bits (the bias, less any zero-point correction), saturated to int32, rescaled
 * by lq_scale, + the output zero point, clamped. The stored byte is the clamped value cast to uint8_t: int8 codes
 * (y_zp, y_min, y_max as cnn-lite's) or u8 codes (each + 128). Shared by qconv_s32 and the compiled graph. */
typedef struct cnn_cpu_requant {
    int oc;
    int32_t y_zp, y_min, y_max;
    int64_t *k; /* 5 x oc: offset, multiplier, half, negative adjustment, shift (lq_scale's, precomputed) */
    float *mf;  /* oc: the multipliers as floats (multiplier 2^-shift rounded once), for the AVX-512 kernel */
} cnn_cpu_requant;
/* Allocates k for oc channels and sets lq_scale's constants from mult and shift; the offsets are 0. */
cnn_status cnn_cpu_requant_init(cnn_cpu_requant *r, int oc, const int32_t *mult, const int32_t *shift,
                                const char *what);
void cnn_cpu_requant_free(cnn_cpu_requant *r);
/* y[p * oc + c] from sum[p * oc + c] for `pixels` rows of oc channels, the rows in parallel */
void cnn_cpu_requant_rows(const cnn_cpu_requant *r, const int32_t *sum, uint8_t *y, int64_t pixels);
/* the same in portable C, whatever the processor (the above uses AVX-512 where there is): for the tests */
void cnn_cpu_requant_rows_c(const cnn_cpu_requant *r, const int32_t *sum, uint8_t *y, int64_t pixels);

#endif
