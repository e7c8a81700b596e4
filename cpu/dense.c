/* Dense (fully connected) layers on the CPU with oneDNN inner product: y = act(x w^T + b).
 *
 * x is any rank-2..4 tensor with N first, read as (N, IN) with IN the product of the other dims (a flattened
 * NHWC activation); w is (OUT, IN) = oneDNN oi; y is (N, OUT) = nc. */
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cpu/dnnl_util.h"
#include "cpu/ops.h"

/* 1: let oneDNN pick the weights' format (reordered from (OUT, IN) at every call). Measured on the seed CNN's
 * dense layers at batch 64: forward no faster, backward 1.3-2x slower than the plain layout, which its gemm-based
 * inner product reads directly. */
#ifndef CNN_CPU_DENSE_WEIGHTS_ANY
#define CNN_CPU_DENSE_WEIGHTS_ANY 0
#endif

/* the sizes that cnn_dense_check fills in */
typedef cnn_dense_sizes cnn_cpu_dense_key;

typedef struct cnn_cpu_dense_entry {
    cnn_cpu_dense_key key;
    int ready;
    dnnl_memory_desc_t x_md, w_md, b_md, y_md;
    dnnl_memory_desc_t w_any;
    dnnl_primitive_desc_t hint;
    cnn_cpu_prim fwd, bwd_data, bwd_weights;
} cnn_cpu_dense_entry;

/* the values of core/op_check.h's directions, which cnn_dense_check takes */
enum {
    CNN_CPU_DENSE_FWD = CNN_OP_FWD,
    CNN_CPU_DENSE_BWD_DATA = CNN_OP_BWD_DATA,
    CNN_CPU_DENSE_BWD_WEIGHTS = CNN_OP_BWD_WEIGHTS,
};

static void cnn_cpu_dense_entry_destroy(void *p)
{
    cnn_cpu_dense_entry *e = p;
    cnn_cpu_prim_destroy(&e->fwd);
    cnn_cpu_prim_destroy(&e->bwd_data);
    cnn_cpu_prim_destroy(&e->bwd_weights);
    if (e->hint) dnnl_primitive_desc_destroy(e->hint);
    free(e);
}

static cnn_status cnn_cpu_dense_entry_get(const cnn_dense_args *a, int dir, cnn_plan **tmp,
                                          cnn_cpu_dense_entry **out, const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cpu_dense_key key;
    void *p = NULL;
    cnn_dense_sizes_of(a, dir, &key); /* checked by core/ops.c */
    CNN_TRY(cnn_plan_entry(a->plan ? a->plan : tmp, CNN_PLAN_DENSE, CNN_CPU_PLAN_SLOTS, &key, sizeof key,
                           sizeof(cnn_cpu_dense_entry), cnn_cpu_dense_entry_destroy, &p, op));
    cnn_cpu_dense_entry *e = p;
    if (!e->ready) {
        int64_t x_dims[2] = {key.n, key.in};
        int64_t w_dims[2] = {key.out, key.in};
        int64_t b_dims[1] = {key.out};
        int64_t y_dims[2] = {key.n, key.out};
        CNN_TRY(cnn_cpu_md(&e->x_md, 2, x_dims, dnnl_nc, op));
        CNN_TRY(cnn_cpu_md(&e->w_md, 2, w_dims, dnnl_oi, op));
        CNN_TRY(cnn_cpu_md(&e->w_any, 2, w_dims, CNN_CPU_DENSE_WEIGHTS_ANY ? dnnl_format_tag_any : dnnl_oi, op));
        CNN_TRY(cnn_cpu_md(&e->b_md, 1, b_dims, dnnl_a, op));
        CNN_TRY(cnn_cpu_md(&e->y_md, 2, y_dims, dnnl_nc, op));
        e->ready = 1;
    }
    *out = e;
fail:
    return st;
}

static cnn_status cnn_cpu_dense_hint(cnn_cpu_ctx *ctx, cnn_cpu_dense_entry *e, const char *what)
{
    cnn_status st = CNN_OK;
    dnnl_inner_product_desc_t d;
    if (e->hint) return CNN_OK;
    CNN_CPU_DNNL(what, dnnl_inner_product_forward_desc_init, &d, dnnl_forward_training, &e->x_md, &e->w_any, NULL,
                 &e->y_md);
    CNN_CPU_DNNL(what, dnnl_primitive_desc_create, &e->hint, &d, NULL, ctx->engine, NULL);
fail:
    return st;
}

cnn_status cnn_cpu_dense_forward(cnn_backend *b, const cnn_dense_args *a)
{
    static const char *op = "dense_forward";
    static const char *what = "inner product forward";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_cpu_dense_entry *e = NULL;
    dnnl_primitive_attr_t attr = NULL;
    CNN_TRY(cnn_cpu_dense_entry_get(a, CNN_CPU_DENSE_FWD, &tmp, &e, op));

    int has_b = a->b != NULL;
    uint64_t variant = (uint64_t)has_b | cnn_cpu_act_variant(a->act, a->act_alpha) << 1;
    if (!e->fwd.built || e->fwd.variant != variant) {
        dnnl_inner_product_desc_t d;
        CNN_CPU_DNNL(what, dnnl_inner_product_forward_desc_init, &d, dnnl_forward_training, &e->x_md, &e->w_any,
                     has_b ? &e->b_md : NULL, &e->y_md);
        CNN_TRY(cnn_cpu_act_attr(a->act, a->act_alpha, &attr, what));
        cnn_cpu_arg_spec specs[4] = {
            {DNNL_ARG_SRC, dnnl_query_src_md, 0, &e->x_md, 0},
            {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &e->w_md, 0},
            {DNNL_ARG_DST, dnnl_query_dst_md, 0, &e->y_md, 1},
            {DNNL_ARG_BIAS, dnnl_query_weights_md, 1, &e->b_md, 0},
        };
        CNN_TRY(cnn_cpu_prim_build(ctx, &e->fwd, &d, attr, NULL, specs, 3 + has_b, 0, what));
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

cnn_status cnn_cpu_dense_backward_data(cnn_backend *b, const cnn_dense_args *a)
{
    static const char *op = "dense_backward_data";
    static const char *what = "inner product backward data";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_cpu_dense_entry *e = NULL;
    CNN_TRY(cnn_cpu_dense_entry_get(a, CNN_CPU_DENSE_BWD_DATA, &tmp, &e, op));

    if (!e->bwd_data.built) {
        dnnl_inner_product_desc_t d;
        CNN_TRY(cnn_cpu_dense_hint(ctx, e, what));
        CNN_CPU_DNNL(what, dnnl_inner_product_backward_data_desc_init, &d, &e->x_md, &e->w_any, &e->y_md);
        cnn_cpu_arg_spec specs[3] = {
            {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &e->y_md, 0},
            {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &e->w_md, 0},
            {DNNL_ARG_DIFF_SRC, dnnl_query_diff_src_md, 0, &e->x_md, 1},
        };
        CNN_TRY(cnn_cpu_prim_build(ctx, &e->bwd_data, &d, NULL, e->hint, specs, 3, 0, what));
    }
    void *data[3] = {a->dy->data, a->w->data, a->dx->data};
    CNN_TRY(cnn_cpu_prim_run(ctx, &e->bwd_data, data, NULL, what));
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}

cnn_status cnn_cpu_dense_backward_weights(cnn_backend *b, const cnn_dense_args *a)
{
    static const char *op = "dense_backward_weights";
    static const char *what = "inner product backward weights";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    cnn_cpu_dense_entry *e = NULL;
    CNN_TRY(cnn_cpu_dense_entry_get(a, CNN_CPU_DENSE_BWD_WEIGHTS, &tmp, &e, op));

    int has_db = a->db != NULL;
    if (!e->bwd_weights.built || e->bwd_weights.variant != (uint64_t)has_db) {
        dnnl_inner_product_desc_t d;
        CNN_TRY(cnn_cpu_dense_hint(ctx, e, what));
        CNN_CPU_DNNL(what, dnnl_inner_product_backward_weights_desc_init, &d, &e->x_md, &e->w_any,
                     has_db ? &e->b_md : NULL, &e->y_md);
        cnn_cpu_arg_spec specs[4] = {
            {DNNL_ARG_SRC, dnnl_query_src_md, 0, &e->x_md, 0},
            {DNNL_ARG_DIFF_DST, dnnl_query_diff_dst_md, 0, &e->y_md, 0},
            {DNNL_ARG_DIFF_WEIGHTS, dnnl_query_diff_weights_md, 0, &e->w_md, 1},
            {DNNL_ARG_DIFF_BIAS, dnnl_query_diff_weights_md, 1, &e->b_md, 1},
        };
        CNN_TRY(cnn_cpu_prim_build(ctx, &e->bwd_weights, &d, NULL, e->hint, specs, 3 + has_db, 0, what));
        e->bwd_weights.variant = has_db;
    }
    void *data[4] = {a->x->data, a->dy->data, a->dw->data, has_db ? a->db->data : NULL};
    CNN_TRY(cnn_cpu_prim_run(ctx, &e->bwd_weights, data, NULL, what));
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}
