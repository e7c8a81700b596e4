/* 2-D max and average pooling on the CPU with oneDNN, NHWC.
 *
 * Average pooling divides by the number of real (non-padding) elements in each window
 * (dnnl_pooling_avg_exclude_padding, the PyTorch count_include_pad=False convention). Max pooling in training
 * keeps oneDNN's workspace (the argmax of each window) in the plan entry; backward reads it, and refuses to run
 * unless the most recent forward through the same plan was a training forward of the same shapes. */
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cpu/dnnl_util.h"

typedef struct cnn_cpu_pool_key {
    int64_t n, h, w, c, oh, ow;
    int32_t mode, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right;
} cnn_cpu_pool_key;

typedef struct cnn_cpu_pool_entry {
    cnn_cpu_pool_key key;
    int ready;
    dnnl_memory_desc_t x_md, y_md;
    dnnl_dims_t strides, kernel, pad_l, pad_r;
    dnnl_alg_kind_t alg;
    cnn_cpu_prim fwd; /* variant: 1 when built for training (then, for max pooling, it owns the workspace) */
    cnn_cpu_prim bwd;
} cnn_cpu_pool_entry;

static void cnn_cpu_pool_entry_destroy(void *p)
{
    cnn_cpu_pool_entry *e = p;
    cnn_cpu_prim_destroy(&e->fwd);
    cnn_cpu_prim_destroy(&e->bwd);
    free(e);
}

/* Checks x-like (x, or dx in backward) and y-like (y, or dy) tensors and the window; fills the key. */
static cnn_status cnn_cpu_pool_check(const cnn_pool2d_args *a, int backward, cnn_cpu_pool_key *k, const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_tensor *xt = backward ? a->dx : a->x;
    const cnn_tensor *yt = backward ? a->dy : a->y;
    const char *xn = backward ? "dx" : "x";
    const char *yn = backward ? "dy" : "y";
    cnn_pool2d_sizes s;

    memset(k, 0, sizeof *k);
    if ((unsigned)a->mode >= CNN_POOL_MODE_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: unknown pooling mode %d", "", op, (int)a->mode);
    CNN_TRY(cnn_cpu_check_f32(xt, op, xn));
    CNN_TRY(cnn_cpu_check_f32(yt, op, yn));
    CNN_TRY(cnn_pool2d_check(a, backward, "", op, &s));
    k->n = s.n;
    k->h = s.h;
    k->w = s.w;
    k->c = s.c;
    k->oh = s.oh;
    k->ow = s.ow;
    k->mode = a->mode;
    k->kernel_h = a->kernel_h;
    k->kernel_w = a->kernel_w;
    k->stride_h = a->stride_h;
    k->stride_w = a->stride_w;
    k->pad_top = a->pad_top;
    k->pad_left = a->pad_left;
    k->pad_bottom = a->pad_bottom;
    k->pad_right = a->pad_right;
    int64_t yshape[4] = {k->n, k->oh, k->ow, k->c};
    CNN_TRY(cnn_cpu_check_shape(yt, 4, yshape, op, yn));
fail:
    return st;
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
    CNN_TRY(cnn_cpu_pool_check(a, backward, &key, op));
    CNN_TRY(cnn_cpu_plan_entry(slot, CNN_CPU_PLAN_POOL, &key, sizeof key, sizeof(cnn_cpu_pool_entry),
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
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", op);
    CNN_TRY(cnn_cpu_pool_entry_get(a, 0, slot, &e, op));

    int training = a->training != 0;
    /* from here on, the workspace of any earlier forward is stale */
    (*slot)->last_forward = NULL;
    if (!e->fwd.built || e->fwd.variant != (uint64_t)training)
        CNN_TRY(cnn_cpu_pool_build_fwd(ctx, e, training, what));
    void *data[2] = {a->x->data, a->y->data};
    CNN_TRY(cnn_cpu_prim_run(ctx, &e->fwd, data, e->fwd.workspace, what));
    if (training) (*slot)->last_forward = e;
fail:
    cnn_cpu_plan_destroy(b, tmp);
    return st;
}

cnn_status cnn_cpu_pool2d_backward(cnn_backend *b, const cnn_pool2d_args *a)
{
    static const char *op = "pool2d_backward";
    static const char *what = "pooling backward";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_plan **slot = a && a->plan ? a->plan : &tmp;
    cnn_cpu_pool_entry *e = NULL;
    dnnl_primitive_desc_t hint = NULL;
    char s1[CNN_CPU_SHAPE_BUF];
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", op);
    if (a->mode == CNN_POOL_MAX && !a->plan)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: max-pool backward needs the plan slot that its training forward "
                         "filled (plan is NULL)", op);
    CNN_TRY(cnn_cpu_pool_entry_get(a, 1, slot, &e, op));

    int is_max = a->mode == CNN_POOL_MAX;
    if (is_max && ((*slot)->last_forward != e || !e->fwd.built || !e->fwd.variant || !e->fwd.workspace)) {
        st = cnn_error(CNN_ERR_INVALID_ARG,
                       "%s: max-pool backward for dx %s needs the argmax of a training forward (training = 1) of "
                       "the same shapes as the last forward through this plan; there was none",
                       op, cnn_cpu_shape_str(a->dx, s1, sizeof s1));
        goto fail;
    }
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
    cnn_cpu_plan_destroy(b, tmp);
    return st;
}
