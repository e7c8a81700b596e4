/* A quantized model (an opened cnn-lite model, core/quant/layer_lite.c) compiled whole for the CPU at one batch size:
 * one oneDNN primitive per convolution and dense layer, built once, with its weights reordered once; every buffer
 * allocated here, none per call.
 *
 * int8 models: activations are held as uint8 codes u = q + 128 (oneDNN's VNNI kernels multiply u8 by s8), so an
 * activation's zero point becomes z = zp + 128, which is 0 for what follows a ReLU (calibration gives such tensors the
 * zero point -128). A convolution or dense layer is one u8 x s8 primitive, requantized one of two ways:
 *  - exact (the default; qprog_create's `exact`): the primitive computes the exact int32 sums of (u - z) w, a few
 *    images at a time (their sums within L2), and cnn-lite's requantization itself (cnn_cpu_requant_rows, cpu/qconv.c:
 *    + bias, the Q31 multiplier rounded half away from zero, + zero point, ReLU's clamp; in float where float decides
 *    the result, in integers where it might not) writes the next u8 code: the graph's outputs are then cnn-lite's bit
 *    for bit. z * sum w is folded into the bias where there is no padding (dense layers, unpadded convolutions), else
 *    given to oneDNN as a source zero point (padding stays the real 0). jit_int8 passes an s32 output through float,
 *    exact below 2^24: it is used only where 255 sum |w| < 2^24. A convolution read only by an unpadded max pooling
 *    hands the pooling its int32 sums, pooled (requantization is monotone: the same codes), and only the pooled sums
 *    are requantized.
 *  - fused: the primitive's output is already the next u8 code: per-output-channel output scales
 *    M = mult * 2^(shift - 31) (cnn-lite's own multipliers), the int32 bias and the output zero point folded into a
 *    float bias (b + (zp + 128) / M), ReLU's floor a clip post-op, the saturation to u8; an input zero point is a
 *    source zero point (convolutions) or in the bias (dense layers). oneDNN requantizes in float
 *    and rounds to nearest even, where cnn-lite (lite_quant.h) uses a Q31 multiplier and rounds half away from zero:
 *    a code may differ by one where the product lies within float precision of a half (tests/test_quant.cc), and
 *    over a deep network such differences compound (bench/RESULTS.md: ResNet-20).
 * Pooling, adds (cnn-lite's own table), concats, ReLUs and the input's quantization are cnn-lite's exact integer
 * arithmetic, on u8 codes, either way.
 *
 * Threads: exact int8 splits the batch into as many equal ranges as threads (the most, up to the thread count, that
 * divide the batch); each thread runs its range through the whole graph, with primitives built for one thread and its
 * own int32 sums, scratchpad, stream and src/dst memory objects (qp_range): one fork-join a batch. Per-layer
 * parallelism cost a few fork-joins a layer, and two threads could be slower than one (bench/RESULTS.md, session
 * 11). Otherwise (one range: batch 1, a batch no count divides, fused or float) every primitive and op runs in
 * parallel over the batch.
 *
 * float models (float, fp16 and dynamic, whose weights cnn-lite dequantized when it opened the file): the same
 * graph in float32, with oneDNN's f32 convolutions and inner products and their activations fused.
 *
 * What this cannot compile (a processor without VNNI, a shape oneDNN refuses, a zero rescaling factor when fused, a
 * padded convolution with an input zero point and sums oneDNN could round when exact) is
 * CNN_ERR_UNSUPPORTED: the layer then runs cnn-lite's own path, exact. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/lite/lite_internal.h"
#include "core/lite/lite_quant.h"
#include "cpu/dnnl_util.h"
#include "cpu/ops.h"

#define QP_ARGS 6

typedef struct qp_op {
    cnn_lite_op_info o;
    void *y;           /* the output: n x h x w x c u8 codes (int8 models) or floats; a flatten's is its input's */
    int owns_y;
    dnnl_primitive_t prim; /* convolutions and dense layers */
    dnnl_memory_t mem[4];  /* src, weights (oneDNN's layout, owned), bias, dst (exact int8: src and dst per range) */
    dnnl_memory_desc_t md[3]; /* exact int8: the src, dst and scratchpad of one run of the primitive (cb images) */
    dnnl_memory_t zp_mem;  /* the source zero point, when not 0 */
    int32_t src_zp;
    int cb;               /* int8 conv/dense: the images per run of its primitive (the batch in chunks) */
    int pool;             /* exact int8 conv: the max pooling that pools its int32 sums (its only reader), or 0 */
    int pooled;           /* that max pooling: computed by its convolution */
    float *bias;          /* float models */
    cnn_cpu_requant rq;   /* int8 models: cnn-lite's requantization of the primitive's int32 sums */
    dnnl_exec_arg_t args[QP_ARGS];
    int nargs;
    cnn_cpu_qadd_k *add; /* int8 add: its table */
} qp_op;

/* A part of the batch that one thread runs through the whole graph (exact int8), with what it writes alone. */
typedef struct qp_range {
    int b0, n;     /* its images */
    int32_t *acc;  /* the int32 sums of the conv or dense layer being run, for cb images (the largest's size): small
                    * enough to stay in cache between oneDNN's writes and the requantization's reads */
    int32_t *pacc; /* the max-pooled sums of such a run, where a max pooling is fused (the largest's size) */
    void *scratch; /* the primitives' scratchpad (the largest's size) */
    dnnl_stream_t stream;
    dnnl_memory_t *mem;    /* per op: its src, dst and scratchpad here */
    dnnl_exec_arg_t *args; /* per op: QP_ARGS arguments */
    cnn_status st;
    char err[256];
} qp_range;

struct cnn_qprog {
    int n, nops, final, int8, classes;
    int exact; /* int8: cnn-lite's requantization on oneDNN's int32 sums (else oneDNN's, fused, in float) */
    qp_op *ops;
    /* exact int8: the batch in nr equal ranges, one per thread, each run through the whole graph with one-thread
     * primitives: one fork-join a batch instead of a few per layer (else one range, and every op parallel) */
    int nr;
    qp_range *ranges;
};

static const size_t QP_ALIGN = 64;
/* an int8 conv's or dense's int32 sums per run of its primitive: this processor's L2 (1 MiB per core). A quarter of
 * it ran as fast on one thread but cost 1.2x on two, in fork-joins: the seed CNN's first convolution ran 2 images at a
 * time, 32 primitive calls, pooling and requantization passes a batch of 64 (bench/RESULTS.md) */
#define QP_CHUNK_BYTES ((size_t)1 << 20)

static void *qp_alloc(size_t bytes)
{
    return aligned_alloc(QP_ALIGN, (bytes + QP_ALIGN - 1) / QP_ALIGN * QP_ALIGN + QP_ALIGN);
}

void cnn_cpu_qprog_destroy(cnn_backend *b, cnn_qprog *p)
{
    (void)b;
    if (!p) return;
    for (int i = 0; p->ops && i < p->nops; i++) {
        qp_op *op = &p->ops[i];
        if (op->prim) dnnl_primitive_destroy(op->prim);
        for (int k = 0; k < 4; k++)
            if (op->mem[k]) dnnl_memory_destroy(op->mem[k]);
        if (op->zp_mem) dnnl_memory_destroy(op->zp_mem);
        free(op->add);
        free(op->bias);
        cnn_cpu_requant_free(&op->rq);
        if (op->owns_y) free(op->y);
    }
    free(p->ops);
    for (int r = 0; p->ranges && r < p->nr; r++) {
        qp_range *R = &p->ranges[r];
        for (int k = 0; R->mem && k < 3 * p->nops; k++)
            if (R->mem[k]) dnnl_memory_destroy(R->mem[k]);
        if (R->stream) dnnl_stream_destroy(R->stream);
        free(R->mem);
        free(R->args);
        free(R->acc);
        free(R->pacc);
        free(R->scratch);
    }
    free(p->ranges);
    free(p);
}

/* The eltwise post-op of a float model's activation. */
static int float_act(int act, float alpha, dnnl_alg_kind_t *alg, float *a)
{
    *a = 0.0f;
    switch (act) {
    case CNN_LITE_ACT_RELU: *alg = dnnl_eltwise_relu; return 1;
    case CNN_LITE_ACT_LEAKY: *alg = dnnl_eltwise_relu, *a = alpha; return 1;
    case CNN_LITE_ACT_ELU: *alg = dnnl_eltwise_elu, *a = alpha; return 1;
    case CNN_LITE_ACT_SIGMOID: *alg = dnnl_eltwise_logistic; return 1;
    case CNN_LITE_ACT_TANH: *alg = dnnl_eltwise_tanh; return 1;
    case CNN_LITE_ACT_GELU: *alg = dnnl_eltwise_gelu_erf; return 1;
    case CNN_LITE_ACT_SILU: *alg = dnnl_eltwise_swish, *a = 1.0f; return 1;
    default: return 0;
    }
}

/* A convolution or dense layer: its primitive, with the weights reordered once into oneDNN's layout. */
static cnn_status build_matmul(cnn_cpu_ctx *ctx, const cnn_qprog *p, qp_op *op, const qp_op *in, const char *what)
{
    cnn_status st = CNN_OK;
    const cnn_lite_op_info *o = &op->o, *i = &in->o;
    int dense = o->kind == CNN_LITE_OP_DENSE, q = p->int8;
    int fused = q && !p->exact; /* oneDNN requantizes: output scales, a float bias, the clip; u8 out */
    dnnl_data_type_t adt = q ? dnnl_u8 : dnnl_f32, wdt = q ? dnnl_s8 : dnnl_f32;
    dnnl_data_type_t ydt = fused ? dnnl_u8 : q ? dnnl_s32 : dnnl_f32;
    dnnl_memory_desc_t src_md, w_md, w_any, b_md, dst_md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL, rpd = NULL;
    dnnl_primitive_t reorder = NULL;
    dnnl_memory_t wuser = NULL;
    int exact = q && p->exact, oc = o->c, exact_f32 = 1, n = exact ? op->cb : p->n;
    float *scales = NULL;
    int64_t bd[1] = {oc};
    CNN_TRY(cnn_cpu_md_dt(&b_md, 1, bd, dnnl_f32, dnnl_a, what));
    if (dense) {
        int64_t features = (int64_t)i->h * i->w * i->c;
        int64_t xd[2] = {n, features}, wd[2] = {oc, features}, yd[2] = {n, oc};
        CNN_TRY(cnn_cpu_md_dt(&src_md, 2, xd, adt, dnnl_nc, what));
        CNN_TRY(cnn_cpu_md_dt(&w_md, 2, wd, wdt, dnnl_oi, what));
        CNN_TRY(cnn_cpu_md_dt(&w_any, 2, wd, wdt, dnnl_format_tag_any, what));
        CNN_TRY(cnn_cpu_md_dt(&dst_md, 2, yd, ydt, dnnl_nc, what));
    } else {
        int64_t xd[4] = {n, i->c, i->h, i->w}, yd[4] = {n, oc, o->h, o->w};
        CNN_TRY(cnn_cpu_md_dt(&src_md, 4, xd, adt, dnnl_nhwc, what));
        CNN_TRY(cnn_cpu_md_dt(&dst_md, 4, yd, ydt, dnnl_nhwc, what));
        if (o->groups == 1) {
            int64_t wd[4] = {oc, i->c, o->kh, o->kw};
            CNN_TRY(cnn_cpu_md_dt(&w_md, 4, wd, wdt, dnnl_ohwi, what));
            CNN_TRY(cnn_cpu_md_dt(&w_any, 4, wd, wdt, dnnl_format_tag_any, what));
        } else {
            int64_t wd[5] = {o->groups, oc / o->groups, i->c / o->groups, o->kh, o->kw};
            CNN_TRY(cnn_cpu_md_dt(&w_md, 5, wd, wdt, dnnl_gohwi, what));
            CNN_TRY(cnn_cpu_md_dt(&w_any, 5, wd, wdt, dnnl_format_tag_any, what));
        }
    }
    CNN_CPU_DNNL(what, dnnl_primitive_attr_create, &attr);
    CNN_CPU_DNNL(what, dnnl_post_ops_create, &po);
    if (fused) {
        /* u8 out = sat(round(M (acc + b) + zp + 128)) = sat(round(M (acc + b + (zp + 128) / M))), in float: within
         * one step of cnn-lite's Q31 rounding half away from zero (oneDNN rounds to nearest even) */
        op->bias = malloc((size_t)oc * sizeof *op->bias);
        scales = malloc((size_t)oc * sizeof *scales);
        if (!op->bias || !scales) CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what));
        int32_t zp_u = o->zp + 128;
        for (int c = 0; c < oc; c++) {
            double M = ldexp((double)o->mult[c], o->shift[c] - 31);
            if (!(M > 0.0))
                CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "%s: output channel %d has a rescaling factor of 0", what, c));
            scales[c] = (float)M;
            op->bias[c] = (float)((o->b32 ? (double)o->b32[c] : 0.0) + zp_u / (double)scales[c]);
        }
        CNN_CPU_DNNL(what, dnnl_primitive_attr_set_output_scales, attr, oc, 1 << 1, scales);
        int32_t lo = o->act_min + 128, hi = o->act_max + 128;
        if (lo > 0 || hi < 255)
            CNN_CPU_DNNL(what, dnnl_post_ops_append_eltwise, po, 1.0f, dnnl_eltwise_clip, (float)lo, (float)hi);
        op->src_zp = i->zp + 128;
        if (op->src_zp && dense) { /* no padding: sum (u - z) w = sum u w - z sum w, in the float bias
                                    * (oneDNN has no source zero points for inner products) */
            int64_t features = (int64_t)i->h * i->w * i->c;
            for (int c = 0; c < oc; c++) {
                int64_t ws = 0;
                for (int64_t t = 0; t < features; t++) ws += o->w8[(size_t)c * features + t];
                op->bias[c] = (float)((o->b32 ? (double)o->b32[c] : 0.0) - (double)op->src_zp * (double)ws +
                                      zp_u / (double)scales[c]);
            }
            op->src_zp = 0;
        }
        if (op->src_zp) {
            const int32_t runtime = DNNL_RUNTIME_S32_VAL;
            CNN_CPU_DNNL(what, dnnl_primitive_attr_set_zero_points, attr, DNNL_ARG_SRC, 1, 0, &runtime);
        }
    } else if (q) {
        /* the int32 sums of (u - z) w; then cnn-lite's requant() on them (cnn_cpu_requant_rows), into u8 codes */
        CNN_TRY(cnn_cpu_requant_init(&op->rq, oc, o->mult, o->shift, what));
        op->rq.y_zp = o->zp + 128, op->rq.y_min = o->act_min + 128, op->rq.y_max = o->act_max + 128;
        int64_t taps = dense ? (int64_t)i->h * i->w * i->c : (int64_t)o->kh * o->kw * (i->c / o->groups);
        int64_t most = 0;
        op->src_zp = i->zp + 128;
        /* no padding (every dense layer): sum (u - z) w = sum u w - z sum w, exactly, in the offset */
        int fold = dense || (o->pt == 0 && o->pl == 0 && o->pb == 0 && o->pr == 0);
        for (int c = 0; c < oc; c++) {
            int64_t ws = 0, wa = 0;
            for (int64_t t = 0; t < taps; t++) {
                int32_t w = o->w8[(size_t)c * taps + t];
                ws += w;
                wa += w < 0 ? -w : w;
            }
            most = wa > most ? wa : most;
            op->rq.k[c] = (o->b32 ? (int64_t)o->b32[c] : 0) - (fold ? (int64_t)op->src_zp * ws : 0);
        }
        if (fold) op->src_zp = 0;
        /* Some of oneDNN's int8 kernels (jit_int8) pass an s32 output through float: exact while every partial sum
         * is below 2^24 in magnitude, which |u|, |u - z| <= 255 bound by 255 sum |w|. Above that, only the kernels
         * that keep the sums in int32 (brgconv, brgemm, gemm; tests/test_quant.cc checks them at sums > 2^24). */
        exact_f32 = 255 * most < ((int64_t)1 << 24);
        if (!exact_f32 && op->src_zp)
            CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "%s: a padded convolution with sums up to %lld and a zero point",
                              what, (long long)(255 * most)));
        if (op->src_zp) {
            const int32_t runtime = DNNL_RUNTIME_S32_VAL;
            CNN_CPU_DNNL(what, dnnl_primitive_attr_set_zero_points, attr, DNNL_ARG_SRC, 1, 0, &runtime);
        }
    } else {
        op->bias = malloc((size_t)oc * sizeof *op->bias);
        if (!op->bias) CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what));
        for (int c = 0; c < oc; c++) op->bias[c] = o->bf ? o->bf[c] : 0.0f;
        dnnl_alg_kind_t alg = dnnl_eltwise_relu;
        float a = 0.0f;
        if (o->act != CNN_LITE_ACT_NONE) {
            if (!float_act(o->act, o->alpha, &alg, &a))
                CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "%s: activation %d has no oneDNN post-op", what, o->act));
            CNN_CPU_DNNL(what, dnnl_post_ops_append_eltwise, po, 1.0f, alg, a, 0.0f);
        }
    }
    CNN_CPU_DNNL(what, dnnl_primitive_attr_set_post_ops, attr, po);
    /* exact: each range's scratchpad, so that the ranges' threads run the primitive at once (cnn_cpu_qprog_run) */
    if (exact) CNN_CPU_DNNL(what, dnnl_primitive_attr_set_scratchpad_mode, attr, dnnl_scratchpad_mode_user);
    if (dense) {
        dnnl_inner_product_desc_t d;
        CNN_CPU_DNNL(what, dnnl_inner_product_forward_desc_init, &d, dnnl_forward_inference, &src_md, &w_any,
                     q && !fused ? NULL : &b_md, &dst_md);
        if (!exact_f32 && !(pd = cnn_cpu_find_impl(ctx, &d, attr, NULL, "brgemm")) &&
            !(pd = cnn_cpu_find_impl(ctx, &d, attr, NULL, "x64:gemm")))
            CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "%s: no int32 inner product for sums above 2^24", what));
        if (!pd) CNN_CPU_DNNL(what, dnnl_primitive_desc_create, &pd, &d, attr, ctx->engine, NULL);
    } else {
        dnnl_dims_t strides = {o->sh, o->sw}, dilates = {o->dh - 1, o->dw - 1}, pl = {o->pt, o->pl},
                    pr = {o->pb, o->pr};
        dnnl_convolution_desc_t d;
        CNN_CPU_DNNL(what, dnnl_dilated_convolution_forward_desc_init, &d, dnnl_forward_inference,
                     dnnl_convolution_direct, &src_md, &w_any, q && !fused ? NULL : &b_md, &dst_md, strides, dilates,
                     pl, pr);
        /* oneDNN's direct int8 kernels (jit_int8, jit_int8_1x1) before its first choice (brgconv): measured 1.3 to
         * 3 times faster on these small-channel layers (bench/RESULTS.md); a fixed choice, so runs repeat bit for
         * bit. Where their float pass could round a sum, brgconv or gemm. */
        if (q && exact_f32) pd = cnn_cpu_find_impl(ctx, &d, attr, NULL, "jit_int8");
        if (q && !exact_f32 && !(pd = cnn_cpu_find_impl(ctx, &d, attr, NULL, "brgconv")) &&
            !(pd = cnn_cpu_find_impl(ctx, &d, attr, NULL, "x64:gemm")))
            CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "%s: no int32 convolution for sums above 2^24", what));
        if (!pd) CNN_CPU_DNNL(what, dnnl_primitive_desc_create, &pd, &d, attr, ctx->engine, NULL);
    }
    /* our layouts for the activations (NHWC, nc): oneDNN must not pick its own there */
    const dnnl_memory_desc_t *qsrc = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *qdst = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *qw = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (!qsrc || !qdst || !qw || !dnnl_memory_desc_equal(qsrc, &src_md) || !dnnl_memory_desc_equal(qdst, &dst_md))
        CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "%s: oneDNN wants other activation layouts", what));
    CNN_CPU_DNNL(what, dnnl_primitive_create, &op->prim, pd);
    if (exact) { /* its src and dst: each range's (qprog_create) */
        const dnnl_memory_desc_t *scr = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        op->md[0] = src_md, op->md[1] = dst_md;
        if (scr) op->md[2] = *scr; /* (a zero descriptor where it needs none) */
        else memset(&op->md[2], 0, sizeof op->md[2]);
    } else {
        CNN_CPU_DNNL(what, dnnl_memory_create, &op->mem[0], &src_md, ctx->engine, in->y);
        CNN_CPU_DNNL(what, dnnl_memory_create, &op->mem[3], &dst_md, ctx->engine, op->y);
    }
    if (op->bias) CNN_CPU_DNNL(what, dnnl_memory_create, &op->mem[2], &b_md, ctx->engine, op->bias);
    /* the weights, once, into the primitive's layout */
    const void *w = q ? (const void *)o->w8 : (const void *)o->wf;
    CNN_CPU_DNNL(what, dnnl_memory_create, &op->mem[1], qw, ctx->engine, DNNL_MEMORY_ALLOCATE);
    CNN_CPU_DNNL(what, dnnl_memory_create, &wuser, &w_md, ctx->engine, (void *)w);
    CNN_CPU_DNNL(what, dnnl_reorder_primitive_desc_create, &rpd, &w_md, ctx->engine, qw, ctx->engine, NULL);
    CNN_CPU_DNNL(what, dnnl_primitive_create, &reorder, rpd);
    {
        dnnl_exec_arg_t r[2] = {{DNNL_ARG_FROM, wuser}, {DNNL_ARG_TO, op->mem[1]}};
        CNN_CPU_DNNL(what, dnnl_primitive_execute, reorder, ctx->stream, 2, r);
        CNN_CPU_DNNL(what, dnnl_stream_wait, ctx->stream);
    }
    op->args[0] = (dnnl_exec_arg_t){DNNL_ARG_SRC, op->mem[0]};
    op->args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, op->mem[1]};
    op->args[2] = (dnnl_exec_arg_t){DNNL_ARG_DST, op->mem[3]};
    op->nargs = 3;
    if (op->bias) op->args[op->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, op->mem[2]};
    if (q && op->src_zp) {
        dnnl_memory_desc_t zmd;
        int64_t one[1] = {1};
        CNN_TRY(cnn_cpu_md_dt(&zmd, 1, one, dnnl_s32, dnnl_a, what));
        CNN_CPU_DNNL(what, dnnl_memory_create, &op->zp_mem, &zmd, ctx->engine, &op->src_zp);
        op->args[op->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_ZERO_POINTS | DNNL_ARG_SRC, op->zp_mem};
    }
fail:
    if (reorder) dnnl_primitive_destroy(reorder);
    if (rpd) dnnl_primitive_desc_destroy(rpd);
    if (wuser) dnnl_memory_destroy(wuser);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    free(scales);
    return st;
}

/* A range's buffers, stream and memory objects (exact int8): its sums, its scratchpad, each primitive's src and dst. */
static cnn_status range_create(cnn_cpu_ctx *ctx, const cnn_qprog *p, qp_range *R, size_t most, size_t most_pooled,
                               const char *what)
{
    cnn_status st = CNN_OK;
    size_t scratch = 1;
    for (int i = 0; i <= p->final; i++)
        if (p->ops[i].prim) {
            size_t sz = dnnl_memory_desc_get_size(&p->ops[i].md[2]);
            scratch = sz > scratch ? sz : scratch;
        }
    R->acc = qp_alloc(most * sizeof *R->acc);
    R->pacc = most_pooled ? qp_alloc(most_pooled * sizeof *R->pacc) : NULL;
    R->scratch = qp_alloc(scratch);
    R->mem = calloc((size_t)p->nops * 3, sizeof *R->mem);
    R->args = calloc((size_t)p->nops * QP_ARGS, sizeof *R->args);
    if (!R->acc || (most_pooled && !R->pacc) || !R->scratch || !R->mem || !R->args)
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what);
    CNN_CPU_DNNL(what, dnnl_stream_create, &R->stream, ctx->engine, dnnl_stream_default_flags);
    for (int i = 0; i <= p->final; i++) {
        const qp_op *op = &p->ops[i];
        if (!op->prim) continue;
        dnnl_memory_t *m = &R->mem[3 * i];
        dnnl_exec_arg_t *a = &R->args[QP_ARGS * i];
        CNN_CPU_DNNL(what, dnnl_memory_create, &m[0], &op->md[0], ctx->engine, DNNL_MEMORY_NONE);
        CNN_CPU_DNNL(what, dnnl_memory_create, &m[1], &op->md[1], ctx->engine, (void *)R->acc);
        memcpy(a, op->args, (size_t)op->nargs * sizeof *a);
        a[0].memory = m[0], a[2].memory = m[1]; /* DNNL_ARG_SRC, DNNL_ARG_DST */
        if (dnnl_memory_desc_get_size(&op->md[2])) {
            CNN_CPU_DNNL(what, dnnl_memory_create, &m[2], &op->md[2], ctx->engine, R->scratch);
            a[op->nargs] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, m[2]};
        }
    }
fail:
    return st;
}

cnn_status cnn_cpu_qprog_create(cnn_backend *b, const struct cnn_lite *m, int batch, int exact, cnn_qprog **out)
{
    static const char *what = "quantized model";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    *out = NULL;
    int threads = omp_get_max_threads(), nr = 1;
    int int8 = cnn_lite_is_int8(m);
    if (int8 && !cnn_cpu_exact_int8())
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: this processor has no VNNI: oneDNN's int8 sums would not be exact",
                         what);
    cnn_qprog *p = calloc(1, sizeof *p);
    if (!p) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what);
    p->n = batch;
    p->int8 = int8;
    p->exact = int8 && exact;
    p->nops = cnn_lite_num_ops(m);
    p->classes = cnn_lite_num_classes(m);
    p->ops = calloc((size_t)p->nops, sizeof *p->ops);
    if (!p->ops) CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what));
    for (int i = 0; i < p->nops; i++) cnn_lite_op(m, i, &p->ops[i].o);
    p->final = p->nops - 1;
    if (p->ops[p->final].o.kind == CNN_LITE_OP_SOFTMAX) p->final = p->ops[p->final].o.in[0];
    size_t esize = int8 ? 1 : sizeof(float), most = 1, most_pooled = 0;
    int *readers = calloc((size_t)p->nops, sizeof *readers);
    if (!readers) CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what));
    for (int i = 0; i <= p->final; i++)
        for (int k = 0; k < p->ops[i].o.nin; k++) readers[p->ops[i].o.in[k]]++;
    for (int i = 0; p->exact && i <= p->final; i++) {
        /* A convolution read by an unpadded max pooling alone: the pooling takes the maximum of its int32 sums, and
         * the requantization (monotone in the sum per channel: M >= 0, saturation, rounding and clamp all
         * non-decreasing) runs on the pooled sums: max of requant = requant of max, exactly, with a quarter of the
         * requantization (2x2 pooling) and no pass over the u8 codes. */
        const cnn_lite_op_info *o = &p->ops[i].o;
        if (o->kind != CNN_LITE_OP_MAXPOOL || o->pt || o->pl || o->pb || o->pr) continue;
        int c = o->in[0];
        const cnn_lite_op_info *ci = &p->ops[c].o;
        if (ci->kind != CNN_LITE_OP_CONV || readers[c] != 1 || c == p->final || (o->h - 1) * o->sh >= ci->h ||
            (o->w - 1) * o->sw >= ci->w)
            continue;
        p->ops[c].pool = i;
        p->ops[i].pooled = 1;
    }
    free(readers);
    /* exact int8: as many ranges as threads (the most that divides the batch), one thread's primitives each */
    for (int d = threads < batch ? threads : batch; p->exact && d > 1 && nr == 1; d--)
        if (batch % d == 0) nr = d;
    p->nr = nr;
    if (!(p->ranges = calloc((size_t)nr, sizeof *p->ranges)))
        CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what));
    for (int r = 0; r < nr; r++) p->ranges[r].b0 = r * (batch / nr), p->ranges[r].n = batch / nr;
    const int per_range = batch / nr;
    for (int i = 0; p->exact && i <= p->final; i++) {
        qp_op *op = &p->ops[i];
        const cnn_lite_op_info *o = &op->o;
        if (o->kind != CNN_LITE_OP_CONV && o->kind != CNN_LITE_OP_DENSE) continue;
        /* the most images (a divisor of the range) whose sums fit in QP_CHUNK_BYTES, at least one */
        size_t per = (size_t)o->h * o->w * o->c;
        op->cb = 1;
        for (int d = per_range; d > 1; d--)
            if (per_range % d == 0 && (size_t)d * per * sizeof(int32_t) <= QP_CHUNK_BYTES) {
                op->cb = d;
                break;
            }
        if ((size_t)op->cb * per > most) most = (size_t)op->cb * per;
        if (op->pool) {
            const cnn_lite_op_info *po = &p->ops[op->pool].o;
            size_t pooled = (size_t)op->cb * po->h * po->w * po->c;
            most_pooled = pooled > most_pooled ? pooled : most_pooled;
        }
    }
    /* one thread's primitives where the ranges run in parallel (oneDNN sizes its work split to the threads then) */
    if (nr > 1) omp_set_num_threads(1);
    for (int i = 0; i <= p->final; i++) {
        qp_op *op = &p->ops[i];
        const cnn_lite_op_info *o = &op->o;
        if (o->kind == CNN_LITE_OP_SOFTMAX || (int8 && !o->q))
            CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "%s: op %d is not compiled", what, i));
        if (o->kind == CNN_LITE_OP_FLATTEN) { /* NHWC flattened is the same memory */
            op->y = p->ops[o->in[0]].y;
            continue;
        }
        if (!op->pool) { /* (a convolution whose max pooling it computes has no output of its own) */
            op->y = qp_alloc((size_t)batch * o->h * o->w * o->c * esize);
            if (!op->y) CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what));
            op->owns_y = 1;
        }
        if (o->kind == CNN_LITE_OP_CONV || o->kind == CNN_LITE_OP_DENSE) {
            CNN_TRY(build_matmul(ctx, p, op, &p->ops[o->in[0]], what));
        } else if (o->kind == CNN_LITE_OP_ADD && int8) {
            if (!(op->add = malloc(sizeof *op->add))) CNN_TRY(cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory", what));
            cnn_cpu_qadd_init(op->add, o);
        } else if (o->kind == CNN_LITE_OP_SCALE && (!o->wf || !o->bf)) {
            CNN_TRY(cnn_error(CNN_ERR_UNSUPPORTED, "%s: op %d has no weights", what, i));
        }
    }
    for (int r = 0; p->exact && r < nr; r++)
        CNN_TRY(range_create(ctx, p, &p->ranges[r], most, most_pooled, what));
    if (nr > 1) omp_set_num_threads(threads);
    *out = p;
    return CNN_OK;
fail:
    if (nr > 1) omp_set_num_threads(threads);
    cnn_cpu_qprog_destroy(b, p);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the ops computed here: cnn-lite's arithmetic (core/lite/lite.c), on u8 codes for int8 models

#define QP_PAR(work) if ((work) > 16384)

static float act_f(int act, float alpha, float v)
{
    switch (act) {
    case CNN_LITE_ACT_RELU: return v > 0.0f ? v : 0.0f;
    case CNN_LITE_ACT_LEAKY: return v > 0.0f ? v : alpha * v;
    case CNN_LITE_ACT_ELU: return v > 0.0f ? v : alpha * (expf(v) - 1.0f);
    case CNN_LITE_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case CNN_LITE_ACT_TANH: return tanhf(v);
    case CNN_LITE_ACT_GELU: return 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
    case CNN_LITE_ACT_SILU: return v / (1.0f + expf(-v));
    default: return v;
    }
}

/* lq_quantize(v, scale, zp) + 128 of every value, bit for bit: roundf as truncf and a step away from zero where
 * the fraction is at least a half (v / scale - truncf exact below 2^23, 0 above; infinities and NaN as roundf's). */
static void quantize_u8_c(const float *x, uint8_t *y, int64_t count, float scale, int32_t zp)
{
    for (int64_t j = 0; j < count; j++) {
        float r = x[j] / scale, t = truncf(r);
        t += fabsf(r - t) >= 0.5f ? copysignf(1.0f, r) : 0.0f;
        float q = t + (float)zp;
        y[j] = (uint8_t)((!(q > -128.0f) ? -128 : q > 127.0f ? 127 : (int32_t)q) + 128);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CNN_QUANTIZE_AVX512 1
/* The same, 16 values a step: gcc leaves the loop above scalar, about 0.5 ms of a batch-64 forward of either network
 * (64 x 784 values), 0.02 ms this way. vmaxps returns its second operand where either is NaN: NaN becomes -128. */
__attribute__((target("avx512f"))) static void quantize_u8_avx512(const float *x, uint8_t *y, int64_t count,
                                                                  float scale, int32_t zp)
{
    const __m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps((float)zp), half = _mm512_set1_ps(0.5f);
    const __m512 one = _mm512_set1_ps(1.0f), lo = _mm512_set1_ps(-128.0f), hi = _mm512_set1_ps(127.0f);
    const __m512i sign = _mm512_set1_epi32(INT32_MIN), magnitude = _mm512_set1_epi32(INT32_MAX);
    const __m512i u8 = _mm512_set1_epi32(128);
    for (int64_t j = 0; j < count; j += 16) {
        const __mmask16 m = count - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (count - j)) - 1);
        __m512 r = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + j), s);
        __m512 t = _mm512_roundscale_ps(r, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        __m512 frac = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_sub_ps(r, t)), magnitude));
        __m512 step = _mm512_castsi512_ps(
            _mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(r), sign), _mm512_castps_si512(one)));
        t = _mm512_mask_add_ps(t, _mm512_cmp_ps_mask(frac, half, _CMP_GE_OQ), t, step);
        __m512 q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(t, z), lo), hi);
        __m512i v = _mm512_add_epi32(_mm512_cvttps_epi32(q), u8);
        if (m == 0xffff) _mm_storeu_si128((__m128i *)(y + j), _mm512_cvtepi32_epi8(v));
        else _mm512_mask_cvtepi32_storeu_epi8(y + j, m, v);
    }
}
#endif

void cnn_cpu_quantize_u8(const float *x, uint8_t *y, int64_t count, float scale, int32_t zp)
{
#ifdef CNN_QUANTIZE_AVX512
    if (__builtin_cpu_supports("avx512f")) {
        quantize_u8_avx512(x, y, count, scale, zp);
        return;
    }
#endif
    quantize_u8_c(x, y, count, scale, zp);
}

void cnn_cpu_qadd_init(cnn_cpu_qadd_k *k, const cnn_lite_op_info *o)
{
    for (int a = 0; a < 256; a++)
        for (int b = 0; b < 256; b++)
            k->lut[a << 8 | b] = (uint8_t)((uint8_t)o->lut[(a ^ 0x80) << 8 | (b ^ 0x80)] ^ 0x80);
}

/* cnn-lite's int8 add on u8 codes: its table of every pair (add_code, core/lite/lite.c), re-indexed. A lookup is
 * ~1 ns here; computing the add (two rescalings and a 64-bit one per element, vectorized) measured 2x slower. */
void cnn_cpu_qadd(const cnn_cpu_qadd_k *k, const uint8_t *xa, const uint8_t *xb, uint8_t *y, int64_t count)
{
    const uint8_t *lut = k->lut;
    for (int64_t j = 0; j < count; j++) y[j] = lut[(size_t)xa[j] << 8 | xb[j]];
}

/* Max and average pooling (padding excluded from the count), and global average pooling: per output pixel, a
 * block of its channels together. int8: the average of the codes rounded half away from zero, as cnn-lite does. */
#define QP_POOL_BLOCK 256
static void pool(int q, int n, const cnn_lite_op_info *o, const cnn_lite_op_info *i, const void *xv, void *yv)
{
    int global = o->kind == CNN_LITE_OP_GAP, mx = o->kind == CNN_LITE_OP_MAXPOOL;
    int oh = global ? 1 : o->h, ow = global ? 1 : o->w, c = i->c;
    int kh = global ? i->h : o->kh, kw = global ? i->w : o->kw;
    int64_t rows = (int64_t)n * oh;
#pragma omp parallel for schedule(static) QP_PAR(rows * ow * c * kh * kw)
    for (int64_t r = 0; r < rows; r++) {
        int b = (int)(r / oh), oy = (int)(r % oh);
        int64_t acc[QP_POOL_BLOCK];
        for (int ox = 0; ox < ow; ox++)
            for (int c0 = 0; c0 < c; c0 += QP_POOL_BLOCK) {
                int cn = c - c0 < QP_POOL_BLOCK ? c - c0 : QP_POOL_BLOCK, count = 0;
                int y0 = global ? 0 : oy * o->sh - o->pt, x0 = global ? 0 : ox * o->sw - o->pl;
                size_t at = (((size_t)b * oh + oy) * ow + ox) * (size_t)c + (size_t)c0;
                uint8_t *yq = (uint8_t *)yv + at;
                float *yf = (float *)yv + at;
                for (int ch = 0; ch < cn; ch++) {
                    if (q) {
                        if (mx) yq[ch] = 0;
                        else acc[ch] = 0;
                    } else {
                        yf[ch] = mx ? -INFINITY : 0.0f;
                    }
                }
                for (int ky = 0; ky < kh; ky++) {
                    int iy = y0 + ky;
                    if (iy < 0 || iy >= i->h) continue;
                    for (int kx = 0; kx < kw; kx++) {
                        int ix = x0 + kx;
                        if (ix < 0 || ix >= i->w) continue;
                        size_t src = (((size_t)b * i->h + iy) * i->w + ix) * (size_t)c + (size_t)c0;
                        count++;
                        if (q) {
                            const uint8_t *xs = (const uint8_t *)xv + src;
                            if (mx)
                                for (int ch = 0; ch < cn; ch++) yq[ch] = xs[ch] > yq[ch] ? xs[ch] : yq[ch];
                            else
                                for (int ch = 0; ch < cn; ch++) acc[ch] += xs[ch];
                        } else {
                            const float *xs = (const float *)xv + src;
                            if (mx)
                                for (int ch = 0; ch < cn; ch++) yf[ch] = xs[ch] > yf[ch] ? xs[ch] : yf[ch];
                            else
                                for (int ch = 0; ch < cn; ch++) yf[ch] += xs[ch];
                        }
                    }
                }
                if (mx) continue;
                for (int ch = 0; ch < cn; ch++) {
                    if (q) {
                        int64_t s = acc[ch] - 128 * (int64_t)count; /* the sum of the int8 codes */
                        int64_t v = s > 0 ? (s + count / 2) / count : (s - count / 2) / count;
                        yq[ch] = (uint8_t)((v < -128 ? -128 : v > 127 ? 127 : v) + 128);
                    } else {
                        yf[ch] /= (float)count;
                    }
                }
            }
    }
}

/* An unpadded max pooling of n images' int32 sums (x: n x i->h x i->w x c) into y, whose every window holds at least
 * its first tap (qprog_create checks). */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void
max_pool_s32(const cnn_lite_op_info *o, const cnn_lite_op_info *i, const int32_t *x, int32_t *y, int n)
{
    const int oh = o->h, ow = o->w, c = i->c;
    const int64_t rows = (int64_t)n * oh;
#pragma omp parallel for schedule(static) QP_PAR(rows * ow * c * o->kh * o->kw)
    for (int64_t r = 0; r < rows; r++) {
        int b = (int)(r / oh), oy = (int)(r % oh);
        for (int ox = 0; ox < ow; ox++) {
            int32_t *yp = y + ((size_t)r * ow + ox) * c;
            int y0 = oy * o->sh, x0 = ox * o->sw;
            memcpy(yp, x + (((size_t)b * i->h + y0) * i->w + x0) * c, (size_t)c * sizeof *yp);
            for (int ky = 0; ky < o->kh && y0 + ky < i->h; ky++)
                for (int kx = 0; kx < o->kw && x0 + kx < i->w; kx++) {
                    const int32_t *xp = x + (((size_t)b * i->h + y0 + ky) * i->w + x0 + kx) * c;
                    for (int ch = 0; ch < c; ch++) yp[ch] = xp[ch] > yp[ch] ? xp[ch] : yp[ch];
                }
        }
    }
}

/* The images of one range (x and scores: theirs) through the whole graph; the ops' outputs at its images. */
static cnn_status run_range(cnn_cpu_ctx *ctx, cnn_qprog *p, qp_range *R, const float *x, float *scores)
{
    static const char *what = "quantized model";
    cnn_status st = CNN_OK;
    const int n = R->n, q = p->int8;
    /* an op's output (or input) at the range's first image */
#define QP_AT(o, y) ((char *)(y) + (size_t)R->b0 * (o)->h * (o)->w * (o)->c * (q ? 1 : sizeof(float)))
    for (int i = 0; i <= p->final; i++) {
        qp_op *op = &p->ops[i];
        const cnn_lite_op_info *o = &op->o;
        const qp_op *in = o->nin ? &p->ops[o->in[0]] : NULL;
        const void *xin = in ? QP_AT(&in->o, in->y) : NULL;
        void *yout = op->y ? QP_AT(o, op->y) : NULL;
        int64_t count = (int64_t)n * o->h * o->w * o->c;
        switch (o->kind) {
        case CNN_LITE_OP_INPUT:
            if (q) {
                uint8_t *y = yout;
                const int64_t chunk = 4096, chunks = (count + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) QP_PAR(count)
                for (int64_t c = 0; c < chunks; c++) {
                    int64_t at = c * chunk, len = count - at < chunk ? count - at : chunk;
                    cnn_cpu_quantize_u8(x + at, y + at, len, o->scale, o->zp);
                }
            } else {
                memcpy(yout, x, (size_t)count * sizeof(float));
            }
            break;
        case CNN_LITE_OP_CONV:
        case CNN_LITE_OP_DENSE:
            if (!p->exact) { /* the whole batch, one range */
                CNN_CPU_DNNL(what, dnnl_primitive_execute, op->prim, ctx->stream, op->nargs, op->args);
                CNN_CPU_DNNL(what, dnnl_stream_wait, ctx->stream); /* before the ops here read its output */
                break;
            }
            /* cb images at a time: their int32 sums, then cnn-lite's requantization of them while in cache */
            const size_t in_per = (size_t)in->o.h * in->o.w * in->o.c, out_per = (size_t)o->h * o->w * o->c;
            const int nargs = op->nargs + (R->mem[3 * i + 2] != NULL); /* and the range's scratchpad, if any */
            for (int b0 = 0; b0 < n; b0 += op->cb) {
                CNN_CPU_DNNL(what, dnnl_memory_set_data_handle, R->mem[3 * i], (uint8_t *)xin + (size_t)b0 * in_per);
                CNN_CPU_DNNL(what, dnnl_primitive_execute, op->prim, R->stream, nargs, &R->args[QP_ARGS * i]);
                CNN_CPU_DNNL(what, dnnl_stream_wait, R->stream);
                if (op->pool) {
                    const qp_op *pl = &p->ops[op->pool];
                    size_t pool_per = (size_t)pl->o.h * pl->o.w * pl->o.c;
                    max_pool_s32(&pl->o, o, R->acc, R->pacc, op->cb);
                    cnn_cpu_requant_rows(&op->rq, R->pacc, (uint8_t *)QP_AT(&pl->o, pl->y) + (size_t)b0 * pool_per,
                                         (int64_t)op->cb * pl->o.h * pl->o.w);
                    continue;
                }
                cnn_cpu_requant_rows(&op->rq, R->acc, (uint8_t *)yout + (size_t)b0 * out_per,
                                     (int64_t)op->cb * o->h * o->w);
            }
            break;
        case CNN_LITE_OP_MAXPOOL:
        case CNN_LITE_OP_AVGPOOL:
        case CNN_LITE_OP_GAP:
            if (op->pooled) break; /* by its convolution */
            pool(q, n, o, &in->o, xin, yout);
            break;
        case CNN_LITE_OP_FLATTEN:
            break;
        case CNN_LITE_OP_ADD: {
            const qp_op *b2 = &p->ops[o->in[1]];
            if (q) {
                const uint8_t *xa = xin, *xb = (const uint8_t *)QP_AT(&b2->o, b2->y);
                uint8_t *y = yout;
                const int64_t chunk = 4096, chunks = (count + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) QP_PAR(count)
                for (int64_t c = 0; c < chunks; c++) {
                    int64_t at = c * chunk, len = count - at < chunk ? count - at : chunk;
                    cnn_cpu_qadd(op->add, xa + at, xb + at, y + at, len);
                }
            } else {
                const float *xa = xin, *xb = (const float *)QP_AT(&b2->o, b2->y);
                float *y = yout;
                const int act = o->act;
                const float alpha = o->alpha;
                if (act == CNN_LITE_ACT_RELU) { /* inlined, as the plain sum: they vectorize */
#pragma omp parallel for schedule(static) QP_PAR(count)
                    for (int64_t j = 0; j < count; j++) {
                        float v = xa[j] + xb[j];
                        y[j] = v > 0.0f ? v : 0.0f;
                    }
                } else if (act == CNN_LITE_ACT_NONE) {
#pragma omp parallel for schedule(static) QP_PAR(count)
                    for (int64_t j = 0; j < count; j++) y[j] = xa[j] + xb[j];
                } else {
#pragma omp parallel for schedule(static) QP_PAR(count)
                    for (int64_t j = 0; j < count; j++) y[j] = act_f(act, alpha, xa[j] + xb[j]);
                }
            }
            break;
        }
        case CNN_LITE_OP_CONCAT: {
            int64_t pix = (int64_t)n * o->h * o->w;
            int at = 0;
            for (int k = 0; k < o->nin; k++) {
                const qp_op *s = &p->ops[o->in[k]];
                const int sc = s->o.c, oc = o->c;
                if (q) {
                    const uint8_t *xs = (const uint8_t *)QP_AT(&s->o, s->y);
                    uint8_t *y = (uint8_t *)yout + at;
                    const int32_t m = o->mult[k], sh = o->shift[k], zs = s->o.zp, zo = o->zp;
#pragma omp parallel for schedule(static) QP_PAR(pix * sc)
                    for (int64_t px = 0; px < pix; px++)
                        for (int ch = 0; ch < sc; ch++) {
                            int64_t v = (int64_t)lq_scale((int32_t)xs[px * sc + ch] - 128 - zs, m, sh) + zo;
                            y[px * oc + ch] = (uint8_t)((v < -128 ? -128 : v > 127 ? 127 : v) + 128);
                        }
                } else {
                    const float *xs = (const float *)QP_AT(&s->o, s->y);
                    float *y = (float *)yout + at;
#pragma omp parallel for schedule(static) QP_PAR(pix * sc)
                    for (int64_t px = 0; px < pix; px++) memcpy(y + px * oc, xs + px * sc, (size_t)sc * sizeof(float));
                }
                at += sc;
            }
            break;
        }
        case CNN_LITE_OP_ACT:
            if (q) {
                const uint8_t *xs = xin;
                uint8_t *y = yout;
                const int lo = o->act_min + 128, hi = o->act_max + 128;
#pragma omp parallel for schedule(static) QP_PAR(count)
                for (int64_t j = 0; j < count; j++) y[j] = (uint8_t)(xs[j] < lo ? lo : xs[j] > hi ? hi : xs[j]);
            } else {
                const float *xs = xin;
                float *y = yout;
                const int act = o->act;
                const float alpha = o->alpha;
#pragma omp parallel for schedule(static) QP_PAR(count)
                for (int64_t j = 0; j < count; j++) y[j] = act_f(act, alpha, xs[j]);
            }
            break;
        case CNN_LITE_OP_SCALE: {
            const float *xs = xin, *w = o->wf, *bb = o->bf;
            float *y = yout;
            const int c = o->c;
#pragma omp parallel for schedule(static) QP_PAR(count)
            for (int64_t j = 0; j < count; j++) y[j] = xs[j] * w[j % c] + bb[j % c];
            break;
        }
        default:
            return cnn_error(CNN_ERR_BACKEND, "%s: op %d of an unknown kind", what, i);
        }
    }
    const cnn_lite_op_info *last = &p->ops[p->final].o;
    const void *yl = QP_AT(last, p->ops[p->final].y);
#undef QP_AT
    size_t total = (size_t)n * (size_t)p->classes;
    for (size_t j = 0; j < total; j++)
        scores[j] = q ? last->scale * (float)((int32_t)((const uint8_t *)yl)[j] - 128 - last->zp)
                      : ((const float *)yl)[j];
fail:
    return st;
}

cnn_status cnn_cpu_qprog_run(cnn_backend *b, cnn_qprog *p, const float *x, float *scores)
{
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    const size_t in_per = (size_t)p->ops[0].o.h * p->ops[0].o.w * p->ops[0].o.c;
    if (p->nr == 1) return run_range(ctx, p, &p->ranges[0], x, scores);
    /* the ranges at once, a thread each (fewer threads take several); each keeps its own error message */
#pragma omp parallel num_threads(p->nr)
    for (int r = omp_get_thread_num(); r < p->nr; r += omp_get_num_threads()) {
        qp_range *R = &p->ranges[r];
        R->st = run_range(ctx, p, R, x + (size_t)R->b0 * in_per, scores + (size_t)R->b0 * p->classes);
        if (R->st != CNN_OK) snprintf(R->err, sizeof R->err, "%s", cnn_last_error());
    }
    for (int r = 0; r < p->nr; r++)
        if (p->ranges[r].st != CNN_OK) return cnn_error(p->ranges[r].st, "%s", p->ranges[r].err);
    return CNN_OK;
}
