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
    cnn_cpu_wentry w;                       /* the key, our plain layouts (x, w, b, y), the primitives */
    dnnl_memory_desc_t x_any, w_any, y_any; /* what the direct primitives are asked for */
    dnnl_memory_desc_t x_blk, y_blk;        /* and the Winograd ones: activations in oneDNN's blocked layout */
    dnnl_dims_t strides, dilates, pad_l, pad_r;
    dnnl_alg_kind_t alg[3];                 /* by direction: dnnl_convolution_direct or _winograd */
} cnn_cpu_conv_entry;

static int64_t cnn_cpu_conv_weight_bytes(const cnn_cpu_conv_key *k)
{
    return k->o * (k->c / k->groups) * k->kh * k->kw * (int64_t)sizeof(float);
}

static cnn_status cnn_cpu_conv_desc(const cnn_cpu_wentry *entry, int dir, int bias, cnn_cpu_wdesc *d,
                                    const char *what);

/* Chooses each direction's algorithm: Winograd where cnn_conv2d_winograd_shape (core/op_check.c: which shapes, and
 * the measurements behind it) and oneDNN both allow it (the descriptors without bias or activation;
 * cnn_cpu_conv_fallback handles those), else direct. Keeps the forward descriptor as the backward ones' hint. */
static cnn_status cnn_cpu_conv_choose(cnn_cpu_ctx *ctx, cnn_cpu_conv_entry *e, const char *what)
{
    cnn_status st = CNN_OK;
    const cnn_cpu_conv_key *k = &e->w.key.conv;
    dnnl_primitive_desc_t fwd = NULL, pd = NULL;
    cnn_cpu_wdesc d;
    for (int dir = 0; dir < 3; dir++) e->alg[dir] = dnnl_convolution_direct;
    if (!ctx->winograd || !cnn_conv2d_winograd_shape(k, CNN_OP_FWD)) return CNN_OK;
    e->alg[CNN_OP_FWD] = dnnl_convolution_winograd;
    CNN_TRY(cnn_cpu_conv_desc(&e->w, CNN_OP_FWD, 0, &d, what));
    if (dnnl_primitive_desc_create(&fwd, &d, NULL, ctx->engine, NULL) != dnnl_success) { /* not on this processor */
        e->alg[CNN_OP_FWD] = dnnl_convolution_direct;
        return CNN_OK;
    }
    for (int dir = CNN_OP_BWD_DATA; dir <= CNN_OP_BWD_WEIGHTS; dir++) {
        if (!cnn_conv2d_winograd_shape(k, dir)) continue;
        e->alg[dir] = dnnl_convolution_winograd;
        CNN_TRY(cnn_cpu_conv_desc(&e->w, dir, 0, &d, what));
        if (dnnl_primitive_desc_create(&pd, &d, NULL, ctx->engine, fwd) != dnnl_success)
            e->alg[dir] = dnnl_convolution_direct;
        if (pd) dnnl_primitive_desc_destroy(pd);
        pd = NULL;
    }
    e->w.l.hint = fwd; /* what cnn_cpu_wlayer_run would create: the forward descriptor without the bias */
    fwd = NULL;
fail:
    if (fwd) dnnl_primitive_desc_destroy(fwd);
    return st;
}

/* A Winograd direction oneDNN cannot build with the call's bias or fused activation (it fuses ReLU, not the
 * others) runs direct. */
static int cnn_cpu_conv_fallback(cnn_cpu_wentry *entry, int dir)
{
    cnn_cpu_conv_entry *e = (cnn_cpu_conv_entry *)entry;
    if (e->alg[dir] != dnnl_convolution_winograd) return 0;
    e->alg[dir] = dnnl_convolution_direct;
    return 1;
}

// ---------------------------------------------------------------------------------------------------------------
// plan entries

static cnn_status cnn_cpu_conv_prepare(cnn_cpu_ctx *ctx, cnn_cpu_wentry *entry, const char *what)
{
    cnn_status st = CNN_OK;
    cnn_cpu_conv_entry *e = (cnn_cpu_conv_entry *)entry;
    const cnn_cpu_conv_key *k = &entry->key.conv;
    int64_t x_dims[4] = {k->n, k->c, k->h, k->w};
    int64_t y_dims[4] = {k->n, k->o, k->oh, k->ow};
    int64_t b_dims[1] = {k->o};
    CNN_TRY(cnn_cpu_md(&entry->l.x_md, 4, x_dims, dnnl_nhwc, what));
    CNN_TRY(cnn_cpu_md(&entry->l.y_md, 4, y_dims, dnnl_nhwc, what));
    CNN_TRY(cnn_cpu_md(&entry->l.b_md, 1, b_dims, dnnl_a, what));
    CNN_TRY(cnn_cpu_md(&e->x_any, 4, x_dims, CNN_CPU_CONV_ACT_ANY ? dnnl_format_tag_any : dnnl_nhwc, what));
    CNN_TRY(cnn_cpu_md(&e->y_any, 4, y_dims, CNN_CPU_CONV_ACT_ANY ? dnnl_format_tag_any : dnnl_nhwc, what));
    CNN_TRY(cnn_cpu_md(&e->x_blk, 4, x_dims, dnnl_format_tag_any, what));
    CNN_TRY(cnn_cpu_md(&e->y_blk, 4, y_dims, dnnl_format_tag_any, what));
    if (k->groups == 1) {
        int64_t w_dims[4] = {k->o, k->c, k->kh, k->kw};
        CNN_TRY(cnn_cpu_md(&entry->l.w_md, 4, w_dims, dnnl_ohwi, what));
        CNN_TRY(cnn_cpu_md(&e->w_any, 4, w_dims, dnnl_format_tag_any, what));
    } else {
        int64_t w_dims[5] = {k->groups, k->o / k->groups, k->c / k->groups, k->kh, k->kw};
        CNN_TRY(cnn_cpu_md(&entry->l.w_md, 5, w_dims, dnnl_gohwi, what));
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
    CNN_TRY(cnn_cpu_conv_choose(ctx, e, what));
    /* 16 channels: oneDNN's blocked layout is our NHWC, byte for byte; said so, the Winograd directions reorder
     * nothing (a direct direction of the entry then copies, NHWC being what it is asked for) */
    if (e->alg[CNN_OP_FWD] == dnnl_convolution_winograd) {
        if (k->c == 16) CNN_TRY(cnn_cpu_md(&entry->l.x_md, 4, x_dims, dnnl_nChw16c, what));
        if (k->o == 16) CNN_TRY(cnn_cpu_md(&entry->l.y_md, 4, y_dims, dnnl_nChw16c, what));
    }
fail:
    return st;
}

static cnn_status cnn_cpu_conv_desc(const cnn_cpu_wentry *entry, int dir, int bias, cnn_cpu_wdesc *d, const char *what)
{
    cnn_status st = CNN_OK;
    const cnn_cpu_conv_entry *e = (const cnn_cpu_conv_entry *)entry;
    const dnnl_memory_desc_t *b_md = bias ? &entry->l.b_md : NULL;
    const dnnl_alg_kind_t alg = e->alg[dir];
    const int wino = alg == dnnl_convolution_winograd;
    const dnnl_memory_desc_t *x = wino ? &e->x_blk : &e->x_any, *y = wino ? &e->y_blk : &e->y_any;
    if (dir == CNN_OP_FWD)
        CNN_CPU_DNNL(what, dnnl_dilated_convolution_forward_desc_init, &d->conv, dnnl_forward_training, alg, x,
                     &e->w_any, b_md, y, e->strides, e->dilates, e->pad_l, e->pad_r);
    else if (dir == CNN_OP_BWD_DATA)
        CNN_CPU_DNNL(what, dnnl_dilated_convolution_backward_data_desc_init, &d->conv, alg, x, &e->w_any, y,
                     e->strides, e->dilates, e->pad_l, e->pad_r);
    else
        CNN_CPU_DNNL(what, dnnl_dilated_convolution_backward_weights_desc_init, &d->conv, alg, x, &e->w_any, b_md,
                     y, e->strides, e->dilates, e->pad_l, e->pad_r);
fail:
    return st;
}

/* oneDNN 2.6 picks brgconv first, but with 4 MiB of weights or more (ResNet-18's 512-channel stage) its direct jit
 * kernel is 1.6x faster forward (4x4x512 -> 512 at batch 64, 2 threads: 13.7 against 22.3 ms); below, they are
 * within 10% of each other. A rule on the shape keeps the choice, and so the results, reproducible (no timing). */
static const char *cnn_cpu_conv_prefer(const cnn_cpu_wentry *entry, int dir)
{
    const cnn_cpu_conv_entry *e = (const cnn_cpu_conv_entry *)entry;
    return dir == CNN_OP_FWD && e->alg[dir] == dnnl_convolution_direct &&
                   cnn_cpu_conv_weight_bytes(&entry->key.conv) >= CNN_CPU_CONV_JIT_WEIGHTS
               ? "jit:avx512_core"
               : NULL;
}

// ---------------------------------------------------------------------------------------------------------------
// the ops

static const cnn_cpu_wkind cnn_cpu_conv_kind = {
    CNN_PLAN_CONV, sizeof(cnn_cpu_conv_key), sizeof(cnn_cpu_conv_entry), cnn_cpu_conv_prepare, cnn_cpu_conv_desc,
    cnn_cpu_conv_prefer, cnn_cpu_conv_fallback,
    {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_filter"},
    {"convolution forward", "convolution backward data", "convolution backward weights"},
};

CNN_CPU_WLAYER_OPS(cnn_cpu_conv_kind, cnn_conv2d_args, cnn_cpu_conv_key, cnn_conv2d_sizes_of, cnn_cpu_conv2d_forward,
                   cnn_cpu_conv2d_backward_data, cnn_cpu_conv2d_backward_filter)
