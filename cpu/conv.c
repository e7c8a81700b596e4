/* 2-D convolution on the CPU with oneDNN: forward (bias and activation fused), backward data, backward filter.
 *
 * Layouts: x, y (N, H, W, C) = oneDNN nhwc; weights (O, KH, KW, C/G) = oneDNN ohwi with logical dims
 * {O, C, KH, KW}, or with groups gohwi (= abdec) with logical dims {G, O/G, C/G, KH, KW}, since O = g*(O/G) + o
 * is outermost in our tensor. oneDNN picks the weights' format itself (tag any) and the entry keeps the reorder
 * from OHWI; activations stay NHWC, which its brgemm kernels read directly (see CNN_CPU_CONV_ACT_ANY).
 * Each plan entry holds the primitives for one shape key, built on first use. */
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cpu/dnnl_util.h"
#include "cpu/ops.h"

/* 1: let oneDNN pick the activations' format too and reorder NHWC <-> its format at every call. Measured on
 * Sapphire Rapids (2 threads) with the seed CNN's three convolutions at batch 64: NHWC was as fast or faster for
 * every op (forward of the 1-channel first layer 2x faster), so activations stay NHWC. */
#ifndef CNN_CPU_CONV_ACT_ANY
#define CNN_CPU_CONV_ACT_ANY 0
#endif

/* forward convolutions with at least this many bytes of weights prefer oneDNN's direct jit kernel (see below) */
#define CNN_CPU_CONV_JIT_WEIGHTS (4 << 20)

/* the sizes and parameters that cnn_conv2d_check fills in */
typedef cnn_conv2d_sizes cnn_cpu_conv_key;

typedef struct cnn_cpu_conv_entry {
    cnn_cpu_conv_key key;
    int ready;
    dnnl_memory_desc_t x_md, w_md, b_md, y_md; /* our plain layouts */
    dnnl_memory_desc_t x_any, w_any, y_any;    /* what the primitives are asked for */
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    dnnl_primitive_desc_t hint; /* forward-training descriptor that the backward ones are created against */
    cnn_cpu_prim fwd, bwd_data, bwd_filter;
} cnn_cpu_conv_entry;

/* the values of core/op_check.h's directions, which cnn_conv2d_check takes */
enum {
    CNN_CPU_CONV_FWD = CNN_OP_FWD,
    CNN_CPU_CONV_BWD_DATA = CNN_OP_BWD_DATA,
    CNN_CPU_CONV_BWD_FILTER = CNN_OP_BWD_WEIGHTS,
};

static int64_t cnn_cpu_conv_weight_bytes(const cnn_cpu_conv_key *k)
{
    return k->o * (k->c / k->groups) * k->kh * k->kw * (int64_t)sizeof(float);
}

static void cnn_cpu_conv_entry_destroy(void *p)
{
    cnn_cpu_conv_entry *e = p;
    cnn_cpu_prim_destroy(&e->fwd);
    cnn_cpu_prim_destroy(&e->bwd_data);
    cnn_cpu_prim_destroy(&e->bwd_filter);
    if (e->hint) dnnl_primitive_desc_destroy(e->hint);
    free(e);
}

// ---------------------------------------------------------------------------------------------------------------
// plan entries

static cnn_status cnn_cpu_conv_prepare(cnn_cpu_conv_entry *e, const char *what)
{
    cnn_status st = CNN_OK;
    const cnn_cpu_conv_key *k = &e->key;
    if (e->ready) return CNN_OK;
    int64_t x_dims[4] = {k->n, k->c, k->h, k->w};
    int64_t y_dims[4] = {k->n, k->o, k->oh, k->ow};
    int64_t b_dims[1] = {k->o};
    CNN_TRY(cnn_cpu_md(&e->x_md, 4, x_dims, dnnl_nhwc, what));
    CNN_TRY(cnn_cpu_md(&e->y_md, 4, y_dims, dnnl_nhwc, what));
    CNN_TRY(cnn_cpu_md(&e->b_md, 1, b_dims, dnnl_a, what));
    CNN_TRY(cnn_cpu_md(&e->x_any, 4, x_dims, CNN_CPU_CONV_ACT_ANY ? dnnl_format_tag_any : dnnl_nhwc, what));
    CNN_TRY(cnn_cpu_md(&e->y_any, 4, y_dims, CNN_CPU_CONV_ACT_ANY ? dnnl_format_tag_any : dnnl_nhwc, what));
    if (k->groups == 1) {
        int64_t w_dims[4] = {k->o, k->c, k->kh, k->kw};
        CNN_TRY(cnn_cpu_md(&e->w_md, 4, w_dims, dnnl_ohwi, what));
        CNN_TRY(cnn_cpu_md(&e->w_any, 4, w_dims, dnnl_format_tag_any, what));
    } else {
        int64_t w_dims[5] = {k->groups, k->o / k->groups, k->c / k->groups, k->kh, k->kw};
        CNN_TRY(cnn_cpu_md(&e->w_md, 5, w_dims, dnnl_gohwi, what));
        CNN_TRY(cnn_cpu_md(&e->w_any, 5, w_dims, dnnl_format_tag_any, what));
    }
    e->strides[0] = k->stride_h;
    e->strides[1] = k->stride_w;
    e->dilates[0] = k->dilation_h - 1; /* oneDNN counts the holes: 0 is a dense kernel */
    e->dilates[1] = k->dilation_w - 1;
    e->pad_l[0] = k->pad_top;
    e->pad_l[1] = k->pad_left;
    e->pad_r[0] = k->pad_bottom;
    e->pad_r[1] = k->pad_right;
    e->ready = 1;
fail:
    return st;
}

static cnn_status cnn_cpu_conv_hint(cnn_cpu_ctx *ctx, cnn_cpu_conv_entry *e, const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_convolution_desc_t cd;
    if (e->hint) return CNN_OK;
    CNN_CPU_DNNL(what, dnnl_dilated_convolution_forward_desc_init, &cd, dnnl_forward_training,
                 dnnl_convolution_direct, &e->x_any, &e->w_any, NULL, &e->y_any, e->strides, e->dilates, e->pad_l,
                 e->pad_r);
    CNN_CPU_DNNL(what, dnnl_primitive_desc_create, &e->hint, &cd, NULL, ctx->engine, NULL);
fail:
    return st;
}

static cnn_status cnn_cpu_conv_entry_get(const cnn_conv2d_args *a, int dir, cnn_plan **tmp, cnn_cpu_conv_entry **out,
                                         const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cpu_conv_key key;
    void *e = NULL;
    cnn_conv2d_sizes_of(a, dir, &key); /* checked by core/ops.c */
    CNN_TRY(cnn_plan_entry(a->plan ? a->plan : tmp, CNN_PLAN_CONV, CNN_CPU_PLAN_SLOTS, &key, sizeof key,
                           sizeof(cnn_cpu_conv_entry), cnn_cpu_conv_entry_destroy, &e, op));
    CNN_TRY(cnn_cpu_conv_prepare(e, op));
    *out = e;
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the ops

cnn_status cnn_cpu_conv2d_forward(cnn_backend *b, const cnn_conv2d_args *a)
{
    static const char *op = "conv2d_forward";
    static const char *what = "convolution forward";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_cpu_conv_entry *e = NULL;
    dnnl_primitive_attr_t attr = NULL;
    CNN_TRY(cnn_cpu_conv_entry_get(a, CNN_CPU_CONV_FWD, &tmp, &e, op));

    int has_b = a->b != NULL;
    uint64_t variant = (uint64_t)has_b | cnn_cpu_act_variant(a->act, a->act_alpha) << 1;
    if (!e->fwd.built || e->fwd.variant != variant) {
        dnnl_convolution_desc_t cd;
        CNN_CPU_DNNL(what, dnnl_dilated_convolution_forward_desc_init, &cd, dnnl_forward_training,
                     dnnl_convolution_direct, &e->x_any, &e->w_any, has_b ? &e->b_md : NULL, &e->y_any, e->strides,
                     e->dilates, e->pad_l, e->pad_r);
        CNN_TRY(cnn_cpu_act_attr(a->act, a->act_alpha, &attr, what));
        cnn_cpu_arg_spec specs[4] = {
            {DNNL_ARG_SRC, dnnl_query_src_md, 0, &e->x_md, 0},
            {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &e->w_md, 0},
            {DNNL_ARG_DST, dnnl_query_dst_md, 0, &e->y_md, 1},
            {DNNL_ARG_BIAS, dnnl_query_weights_md, 1, &e->b_md, 0},
        };
        /* oneDNN 2.6 picks brgconv first, but with 4 MiB of weights or more (ResNet-18's 512-channel stage) its
         * direct jit kernel is 1.6x faster (4x4x512 -> 512 at batch 64, 2 threads: 13.7 against 22.3 ms); below,
         * they are within 10% of each other. A rule on the shape keeps the choice, and so the results,
         * reproducible (no timing). */
        const int64_t w_bytes = cnn_cpu_conv_weight_bytes(&e->key);
        CNN_TRY(cnn_cpu_prim_build_prefer(ctx, &e->fwd, &cd, attr, NULL, specs, 3 + has_b, 0,
                                          w_bytes >= CNN_CPU_CONV_JIT_WEIGHTS ? "jit:avx512_core" : NULL, what));
        e->fwd.variant = variant;
    }
    void *data[4] = {a->x->data, a->w->data, a->y->data, has_b ? a->b->data : NULL};
    e->fwd.arg[1].version = a->w->version; /* the weights' reorder is cached while they do not change */
    CNN_TRY(cnn_cpu_prim_run(ctx, &e->fwd, data, NULL, what));
fail:
    if (attr) dnnl_primitive_attr_destroy(attr);
    cnn_plan_destroy(b, tmp);
    return st;
}

cnn_status cnn_cpu_conv2d_backward_data(cnn_backend *b, const cnn_conv2d_args *a)
{
    static const char *op = "conv2d_backward_data";
    static const char *what = "convolution backward data";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_cpu_conv_entry *e = NULL;
    CNN_TRY(cnn_cpu_conv_entry_get(a, CNN_CPU_CONV_BWD_DATA, &tmp, &e, op));

    if (!e->bwd_data.built) {
        dnnl_convolution_desc_t cd;
        CNN_TRY(cnn_cpu_conv_hint(ctx, e, what));
        CNN_CPU_DNNL(what, dnnl_dilated_convolution_backward_data_desc_init, &cd, dnnl_convolution_direct,
                     &e->x_any, &e->w_any, &e->y_any, e->strides, e->dilates, e->pad_l, e->pad_r);
        cnn_cpu_arg_spec specs[3] = {
            {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &e->y_md, 0},
            {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &e->w_md, 0},
            {DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, &e->x_md, 1},
        };
        CNN_TRY(cnn_cpu_prim_build(ctx, &e->bwd_data, &cd, NULL, e->hint, specs, 3, 0, what));
    }
    void *data[3] = {a->dy->data, a->w->data, a->dx->data};
    CNN_TRY(cnn_cpu_prim_run(ctx, &e->bwd_data, data, NULL, what));
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}

cnn_status cnn_cpu_conv2d_backward_filter(cnn_backend *b, const cnn_conv2d_args *a)
{
    static const char *op = "conv2d_backward_filter";
    static const char *what = "convolution backward weights";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_cpu_conv_entry *e = NULL;
    CNN_TRY(cnn_cpu_conv_entry_get(a, CNN_CPU_CONV_BWD_FILTER, &tmp, &e, op));

    int has_db = a->db != NULL;
    if (!e->bwd_filter.built || e->bwd_filter.variant != (uint64_t)has_db) {
        dnnl_convolution_desc_t cd;
        CNN_TRY(cnn_cpu_conv_hint(ctx, e, what));
        CNN_CPU_DNNL(what, dnnl_dilated_convolution_backward_weights_desc_init, &cd, dnnl_convolution_direct,
                     &e->x_any, &e->w_any, has_db ? &e->b_md : NULL, &e->y_any, e->strides, e->dilates, e->pad_l,
                     e->pad_r);
        cnn_cpu_arg_spec specs[4] = {
            {DNNL_ARG_SRC, dnnl_query_src_md, 0, &e->x_md, 0},
            {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &e->y_md, 0},
            {DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, 0, &e->w_md, 1},
            {DNNL_ARG_DIFF_BIAS, dnnl_query_diff_weights_md, 1, &e->b_md, 1},
        };
        CNN_TRY(cnn_cpu_prim_build(ctx, &e->bwd_filter, &cd, NULL, e->hint, specs, 3 + has_db, 0, what));
        e->bwd_filter.variant = has_db;
    }
    void *data[4] = {a->x->data, a->dy->data, a->dw->data, has_db ? a->db->data : NULL};
    CNN_TRY(cnn_cpu_prim_run(ctx, &e->bwd_filter, data, NULL, what));
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}
