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
    cnn_cpu_wentry w; /* the key, our plain layouts (x, w, b, y), the primitives */
    dnnl_memory_desc_t w_any;
} cnn_cpu_dense_entry;

static cnn_status cnn_cpu_dense_prepare(cnn_cpu_ctx *ctx, cnn_cpu_wentry *entry, const char *what)
{
    cnn_status st = CNN_OK;
    (void)ctx;
    cnn_cpu_dense_entry *e = (cnn_cpu_dense_entry *)entry;
    const cnn_cpu_dense_key *k = &entry->key.dense;
    int64_t x_dims[2] = {k->n, k->in};
    int64_t w_dims[2] = {k->out, k->in};
    int64_t b_dims[1] = {k->out};
    int64_t y_dims[2] = {k->n, k->out};
    CNN_TRY(cnn_cpu_md(&entry->l.x_md, 2, x_dims, dnnl_nc, what));
    CNN_TRY(cnn_cpu_md(&entry->l.w_md, 2, w_dims, dnnl_oi, what));
    CNN_TRY(cnn_cpu_md(&e->w_any, 2, w_dims, CNN_CPU_DENSE_WEIGHTS_ANY ? dnnl_format_tag_any : dnnl_oi, what));
    CNN_TRY(cnn_cpu_md(&entry->l.b_md, 1, b_dims, dnnl_a, what));
    CNN_TRY(cnn_cpu_md(&entry->l.y_md, 2, y_dims, dnnl_nc, what));
fail:
    return st;
}

static cnn_status cnn_cpu_dense_desc(const cnn_cpu_wentry *entry, int dir, int bias, cnn_cpu_wdesc *d,
                                     const char *what)
{
    cnn_status st = CNN_OK;
    const dnnl_memory_desc_t *x = &entry->l.x_md, *y = &entry->l.y_md, *b = bias ? &entry->l.b_md : NULL;
    const dnnl_memory_desc_t *w = &((const cnn_cpu_dense_entry *)entry)->w_any;
    if (dir == CNN_OP_FWD)
        CNN_CPU_DNNL(what, dnnl_inner_product_forward_desc_init, &d->ip, dnnl_forward_training, x, w, b, y);
    else if (dir == CNN_OP_BWD_DATA)
        CNN_CPU_DNNL(what, dnnl_inner_product_backward_data_desc_init, &d->ip, x, w, y);
    else
        CNN_CPU_DNNL(what, dnnl_inner_product_backward_weights_desc_init, &d->ip, x, w, b, y);
fail:
    return st;
}

static const cnn_cpu_wkind cnn_cpu_dense_kind = {
    CNN_PLAN_DENSE, sizeof(cnn_cpu_dense_key), sizeof(cnn_cpu_dense_entry), cnn_cpu_dense_prepare,
    cnn_cpu_dense_desc, NULL, NULL,
    {"dense_forward", "dense_backward_data", "dense_backward_weights"},
    {"inner product forward", "inner product backward data", "inner product backward weights"},
};

CNN_CPU_WLAYER_OPS(cnn_cpu_dense_kind, cnn_dense_args, cnn_cpu_dense_key, cnn_dense_sizes_of, cnn_cpu_dense_forward,
                   cnn_cpu_dense_backward_data, cnn_cpu_dense_backward_weights)
