/* 2-D max and average pooling on the CPU, NHWC: max pooling with our own OpenMP loops, average pooling (and max
 * pooling over windows of more than 256 elements) with oneDNN.
 *
 * Average pooling divides by the number of real (non-padding) elements in each window
 * (dnnl_pooling_avg_exclude_padding, the PyTorch count_include_pad=False convention). Max pooling in training
 * keeps the argmax of each window (our loops: the window position, one byte per output element; oneDNN: its
 * workspace) in the plan entry; backward reads it, and refuses to run unless the most recent forward through the
 * same plan was a training forward of the same shapes. Padding never wins; among equal maxima the first in
 * row-major window order does.
 *
 * Why our own max pooling: oneDNN 2.6's NHWC max pooling (jit:avx512_core) took 0.6 ms forward and 0.5 ms
 * backward for the seed CNN's 26x26x32 -> 13x13 at batch 64 on 2 threads; these loops take 0.19 and 0.30 ms. */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cpu/dnnl_util.h"
#include "cpu/ops.h"

/* the sizes and parameters that cnn_pool2d_check fills in */
typedef cnn_pool2d_sizes cnn_cpu_pool_key;

typedef struct cnn_cpu_pool_entry {
    cnn_cpu_pool_key key;
    int ready;
    dnnl_memory_desc_t x_md, y_md;
    dnnl_dims_t strides, kernel, pad_l, pad_r;
    dnnl_alg_kind_t alg;
    cnn_cpu_prim fwd; /* variant: 1 when built for training (then, for max pooling, it owns the workspace) */
    cnn_cpu_prim bwd;
    uint8_t *argmax;  /* our max pooling: (N, OH, OW, C) window positions of the last training forward */
    int argmax_valid;
} cnn_cpu_pool_entry;

static void cnn_cpu_pool_entry_destroy(void *p)
{
    cnn_cpu_pool_entry *e = p;
    cnn_cpu_prim_destroy(&e->fwd);
    cnn_cpu_prim_destroy(&e->bwd);
    free(e->argmax);
    free(e);
}

// ---------------------------------------------------------------------------------------------------------------
// our max pooling

/* Windows of up to 256 elements: a window position fits in the byte the argmax keeps. */
#define CNN_CPU_MAXPOOL_WINDOW_MAX 256
/* below this many output elements the loops run on one thread (see CNN_CPU_PARALLEL_MIN in eltwise.c) */
#define CNN_CPU_POOL_PARALLEL_MIN 16384

static int cnn_cpu_pool_is_own(const cnn_cpu_pool_key *k)
{
    return k->mode == CNN_POOL_MAX && k->kernel_h * k->kernel_w <= CNN_CPU_MAXPOOL_WINDOW_MAX;
}

/* The 2x2 windows of stride 2 without padding (most CNNs' pooling) get loops of their own: half the time of the
 * general loops below (0.19 against 0.40 ms forward, 0.30 against 0.44 ms backward for the seed CNN's 26x26x32
 * at batch 64 on 2 threads). */
static int cnn_cpu_maxpool_is_2x2(const cnn_cpu_pool_key *k)
{
    return k->kernel_h == 2 && k->kernel_w == 2 && k->stride_h == 2 && k->stride_w == 2 && !k->pad_top &&
           !k->pad_left && !k->pad_bottom && !k->pad_right;
}

/* One output row of 2x2 windows: `top` and `bottom` are the two input rows (w x c), y and a the row's maxima and
 * positions (ow x c). Not inlined, with restrict: the compiler then vectorizes the compare-and-select over the
 * channels (inlined into the general loop it kept a scalar loop with branches, 4x slower). */
__attribute__((noinline)) static void cnn_cpu_maxpool_2x2_fwd(const float *restrict top, const float *restrict bottom,
                                                              float *restrict y, uint8_t *restrict a, int64_t ow,
                                                              int64_t c)
{
    for (int64_t o = 0; o < ow; o++) {
        const float *x0 = top + 2 * o * c, *x1 = x0 + c, *x2 = bottom + 2 * o * c, *x3 = x2 + c;
        for (int64_t j = 0; j < c; j++) {
            float m = x0[j];
            uint8_t p = 0;
            if (x1[j] > m) m = x1[j], p = 1;
            if (x2[j] > m) m = x2[j], p = 2;
            if (x3[j] > m) m = x3[j], p = 3;
            y[o * c + j] = m;
            if (a) a[o * c + j] = p;
        }
    }
}

/* dy routed back through one output row of 2x2 windows: every element of the two input rows that a window covers
 * is written (dy or 0). */
__attribute__((noinline)) static void cnn_cpu_maxpool_2x2_bwd(const float *restrict g, const uint8_t *restrict a,
                                                              float *restrict top, float *restrict bottom, int64_t ow,
                                                              int64_t c)
{
    for (int64_t o = 0; o < ow; o++) {
        float *x0 = top + 2 * o * c, *x1 = x0 + c, *x2 = bottom + 2 * o * c, *x3 = x2 + c;
        for (int64_t j = 0; j < c; j++) {
            const float v = g[o * c + j];
            const uint8_t p = a[o * c + j];
            x0[j] = p == 0 ? v : 0.0f;
            x1[j] = p == 1 ? v : 0.0f;
            x2[j] = p == 2 ? v : 0.0f;
            x3[j] = p == 3 ? v : 0.0f;
        }
    }
}

/* Channels per block of the general forward: a block's maxima and positions stay in registers over a window. */
#define CNN_CPU_MAXPOOL_BLOCK 16

/* y = the max of each window, arg (may be NULL) = its position in the window (row-major, padding included in
 * the numbering). Padding is skipped: every window holds at least one real element (pads < window). */
static void cnn_cpu_maxpool_forward(const cnn_cpu_pool_key *k, const float *x, float *y, uint8_t *arg)
{
    const int64_t rows = k->n * k->oh, c = k->c, two = cnn_cpu_maxpool_is_2x2(k);
#pragma omp parallel for schedule(static) if (rows * k->ow * c >= CNN_CPU_POOL_PARALLEL_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t n = r / k->oh, oh = r % k->oh;
        const int64_t h0 = oh * k->stride_h - k->pad_top;
        const int64_t hlo = h0 < 0 ? 0 : h0, hhi = h0 + k->kernel_h < k->h ? h0 + k->kernel_h : k->h;
        if (two) {
            const float *top = x + (n * k->h + 2 * oh) * k->w * c;
            cnn_cpu_maxpool_2x2_fwd(top, top + k->w * c, y + r * k->ow * c, arg ? arg + r * k->ow * c : NULL, k->ow,
                                    c);
            continue;
        }
        for (int64_t ow = 0; ow < k->ow; ow++) {
            float *yo = y + (r * k->ow + ow) * c;
            uint8_t *ao = arg ? arg + (r * k->ow + ow) * c : NULL;
            const int64_t w0 = ow * k->stride_w - k->pad_left;
            const int64_t wlo = w0 < 0 ? 0 : w0, whi = w0 + k->kernel_w < k->w ? w0 + k->kernel_w : k->w;
            int64_t off[CNN_CPU_MAXPOOL_WINDOW_MAX];
            uint8_t pos[CNN_CPU_MAXPOOL_WINDOW_MAX];
            int np = 0;
            for (int64_t h = hlo; h < hhi; h++)
                for (int64_t w = wlo; w < whi; w++, np++) {
                    off[np] = ((n * k->h + h) * k->w + w) * c;
                    pos[np] = (uint8_t)((h - h0) * k->kernel_w + (w - w0));
                }
            for (int64_t j0 = 0; j0 < c; j0 += CNN_CPU_MAXPOOL_BLOCK) {
                const int64_t nb = c - j0 < CNN_CPU_MAXPOOL_BLOCK ? c - j0 : CNN_CPU_MAXPOOL_BLOCK;
                float m[CNN_CPU_MAXPOOL_BLOCK];
                uint8_t a[CNN_CPU_MAXPOOL_BLOCK];
                for (int64_t q = 0; q < nb; q++) {
                    m[q] = x[off[0] + j0 + q];
                    a[q] = pos[0];
                }
                for (int i = 1; i < np; i++) {
                    const float *xp = x + off[i] + j0;
                    for (int64_t q = 0; q < nb; q++) {
                        const int gt = xp[q] > m[q]; /* the first maximum wins */
                        m[q] = gt ? xp[q] : m[q];
                        a[q] = gt ? pos[i] : a[q];
                    }
                }
                memcpy(yo + j0, m, (size_t)nb * sizeof *m);
                if (ao) memcpy(ao + j0, a, (size_t)nb);
            }
        }
    }
}

/* dx = dy routed to each window's argmax, summed where windows overlap; one image per iteration, so the sums
 * run in a fixed order whatever the threads. */
static void cnn_cpu_maxpool_backward(const cnn_cpu_pool_key *k, const float *dy, const uint8_t *arg, float *dx)
{
    const int64_t c = k->c, per_x = k->h * k->w * c, per_y = k->oh * k->ow * c, two = cnn_cpu_maxpool_is_2x2(k);
#pragma omp parallel for schedule(static) if (k->n * per_y >= CNN_CPU_POOL_PARALLEL_MIN)
    for (int64_t n = 0; n < k->n; n++) {
        float *dxn = dx + n * per_x;
        if (two) { /* every element inside a window is written once; an odd last row or column is zeroed */
            for (int64_t oh = 0; oh < k->oh; oh++) {
                float *top = dxn + 2 * oh * k->w * c;
                const int64_t o = n * per_y + oh * k->ow * c;
                cnn_cpu_maxpool_2x2_bwd(dy + o, arg + o, top, top + k->w * c, k->ow, c);
                if (k->w > 2 * k->ow)
                    for (int64_t h = 2 * oh; h < 2 * oh + 2; h++)
                        memset(dxn + (h * k->w + 2 * k->ow) * c, 0, (size_t)((k->w - 2 * k->ow) * c) * sizeof *dxn);
            }
            if (k->h > 2 * k->oh)
                memset(dxn + 2 * k->oh * k->w * c, 0, (size_t)((k->h - 2 * k->oh) * k->w * c) * sizeof *dxn);
            continue;
        }
        memset(dxn, 0, (size_t)per_x * sizeof *dxn);
        for (int64_t oh = 0; oh < k->oh; oh++)
            for (int64_t ow = 0; ow < k->ow; ow++) {
                const int64_t h0 = oh * k->stride_h - k->pad_top, w0 = ow * k->stride_w - k->pad_left;
                const int64_t o = n * per_y + (oh * k->ow + ow) * c;
                for (int64_t j = 0; j < c; j++) {
                    const int pos = arg[o + j];
                    const int64_t h = h0 + pos / k->kernel_w, w = w0 + pos % k->kernel_w;
                    dxn[(h * k->w + w) * c + j] += dy[o + j];
                }
            }
    }
}

static cnn_status cnn_cpu_pool_prepare(cnn_cpu_pool_entry *e, const char *what)
{
    cnn_status st = CNN_OK;
    const cnn_cpu_pool_key *k = &e->key;
    if (e->ready) return CNN_OK;
    int64_t x_dims[4] = {k->n, k->c, k->h, k->w};
    int64_t y_dims[4] = {k->n, k->c, k->oh, k->ow};
    CNN_TRY(cnn_cpu_md(&e->x_md, 4, x_dims, dnnl_nhwc, what));
    CNN_TRY(cnn_cpu_md(&e->y_md, 4, y_dims, dnnl_nhwc, what));
    e->strides[0] = k->stride_h;
    e->strides[1] = k->stride_w;
    e->kernel[0] = k->kernel_h;
    e->kernel[1] = k->kernel_w;
    e->pad_l[0] = k->pad_top;
    e->pad_l[1] = k->pad_left;
    e->pad_r[0] = k->pad_bottom;
    e->pad_r[1] = k->pad_right;
    e->alg = k->mode == CNN_POOL_MAX ? dnnl_pooling_max : dnnl_pooling_avg_exclude_padding;
    e->ready = 1;
fail:
    return st;
}

static cnn_status cnn_cpu_pool_entry_get(const cnn_pool2d_args *a, int backward, cnn_plan **slot,
                                         cnn_cpu_pool_entry **out, const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cpu_pool_key key;
    void *e = NULL;
    cnn_pool2d_sizes_of(a, backward, &key); /* checked by core/ops.c */
    CNN_TRY(cnn_plan_entry(slot, CNN_PLAN_POOL, CNN_CPU_PLAN_SLOTS, &key, sizeof key, sizeof(cnn_cpu_pool_entry),
                           cnn_cpu_pool_entry_destroy, &e, op));
    CNN_TRY(cnn_cpu_pool_prepare(e, op));
    *out = e;
fail:
    return st;
}

static cnn_status cnn_cpu_pool_build_fwd(cnn_cpu_ctx *ctx, cnn_cpu_pool_entry *e, int training, const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_pooling_desc_t pd;
    CNN_CPU_DNNL(what, dnnl_pooling_forward_desc_init, &pd, training ? dnnl_forward_training : dnnl_forward_inference,
                 e->alg, &e->x_md, &e->y_md, e->strides, e->kernel, e->pad_l, e->pad_r);
    cnn_cpu_arg_spec specs[2] = {
        {DNNL_ARG_SRC, dnnl_query_src_md, 0, &e->x_md, 0},
        {DNNL_ARG_DST, dnnl_query_dst_md, 0, &e->y_md, 1},
    };
    CNN_TRY(cnn_cpu_prim_build(ctx, &e->fwd, &pd, NULL, NULL, specs, 2, training, what));
    e->fwd.variant = training;
fail:
    return st;
}

cnn_status cnn_cpu_pool2d_forward(cnn_backend *b, const cnn_pool2d_args *a)
{
    static const char *op = "pool2d_forward";
    static const char *what = "pooling forward";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_plan **slot = a && a->plan ? a->plan : &tmp;
    cnn_cpu_pool_entry *e = NULL;
    CNN_TRY(cnn_cpu_pool_entry_get(a, 0, slot, &e, op));

    int training = a->training != 0;
    /* from here on, the workspace of any earlier forward is stale */
    (*slot)->last_forward = NULL;
    if (cnn_cpu_pool_is_own(&e->key)) {
        const int64_t outputs = e->key.n * e->key.oh * e->key.ow * e->key.c;
        e->argmax_valid = 0;
        if (training && !e->argmax && !(e->argmax = malloc((size_t)outputs))) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for the argmax of %lld outputs", op,
                           (long long)outputs);
            goto fail;
        }
        cnn_cpu_maxpool_forward(&e->key, a->x->data, a->y->data, training ? e->argmax : NULL);
        e->argmax_valid = training;
    } else {
        if (!e->fwd.built || e->fwd.variant != (uint64_t)training)
            CNN_TRY(cnn_cpu_pool_build_fwd(ctx, e, training, what));
        void *data[2] = {a->x->data, a->y->data};
        CNN_TRY(cnn_cpu_prim_run(ctx, &e->fwd, data, e->fwd.workspace, what));
    }
    if (training) (*slot)->last_forward = e;
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}

static cnn_status cnn_cpu_pool_onednn_backward(cnn_cpu_ctx *ctx, cnn_cpu_pool_entry *e, const cnn_pool2d_args *a,
                                               int is_max, const char *what);

cnn_status cnn_cpu_pool2d_backward(cnn_backend *b, const cnn_pool2d_args *a)
{
    static const char *op = "pool2d_backward";
    static const char *what = "pooling backward";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_plan **slot = a && a->plan ? a->plan : &tmp;
    cnn_cpu_pool_entry *e = NULL;
    char s1[CNN_OP_SHAPE_BUF];
    if (a->mode == CNN_POOL_MAX && !a->plan)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: max-pool backward needs the plan slot that its training forward "
                         "filled (plan is NULL)", op);
    CNN_TRY(cnn_cpu_pool_entry_get(a, 1, slot, &e, op));

    int is_max = a->mode == CNN_POOL_MAX, own = cnn_cpu_pool_is_own(&e->key);
    if (is_max && ((*slot)->last_forward != e ||
                   (own ? !e->argmax_valid : !e->fwd.built || !e->fwd.variant || !e->fwd.workspace))) {
        st = cnn_error(CNN_ERR_INVALID_ARG,
                       "%s: max-pool backward for dx %s needs the argmax of a training forward (training = 1) of "
                       "the same shapes as the last forward through this plan; there was none",
                       op, cnn_op_shape_str(a->dx, s1, sizeof s1));
        goto fail;
    }
    if (own) {
        cnn_cpu_maxpool_backward(&e->key, a->dy->data, e->argmax, a->dx->data);
    } else {
        CNN_TRY(cnn_cpu_pool_onednn_backward(ctx, e, a, is_max, what));
    }
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}

/* oneDNN's pooling backward (average pooling; max pooling over large windows, from the forward's workspace) */
static cnn_status cnn_cpu_pool_onednn_backward(cnn_cpu_ctx *ctx, cnn_cpu_pool_entry *e, const cnn_pool2d_args *a,
                                               int is_max, const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_primitive_desc_t hint = NULL;
    if (!e->bwd.built) {
        dnnl_pooling_desc_t pd;
        const_dnnl_primitive_desc_t fwd_pd = e->fwd.built && e->fwd.variant ? e->fwd.pd : NULL;
        if (!fwd_pd) {
            /* average pooling needs no forward state, but oneDNN wants a forward descriptor as a hint */
            CNN_CPU_DNNL(what, dnnl_pooling_forward_desc_init, &pd, dnnl_forward_training, e->alg, &e->x_md,
                         &e->y_md, e->strides, e->kernel, e->pad_l, e->pad_r);
            CNN_CPU_DNNL(what, dnnl_primitive_desc_create, &hint, &pd, NULL, ctx->engine, NULL);
            fwd_pd = hint;
        }
        CNN_CPU_DNNL(what, dnnl_pooling_backward_desc_init, &pd, e->alg, &e->x_md, &e->y_md, e->strides, e->kernel,
                     e->pad_l, e->pad_r);
        cnn_cpu_arg_spec specs[2] = {
            {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &e->y_md, 0},
            {DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, &e->x_md, 1},
        };
        CNN_TRY(cnn_cpu_prim_build(ctx, &e->bwd, &pd, NULL, fwd_pd, specs, 2, 0, what));
    }
    void *data[2] = {a->dy->data, a->dx->data};
    CNN_TRY(cnn_cpu_prim_run(ctx, &e->bwd, data, is_max ? e->fwd.workspace : NULL, what));
fail:
    if (hint) dnnl_primitive_desc_destroy(hint);
    return st;
}
