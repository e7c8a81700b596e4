/* dense: fully connected, (N, IN) x (OUT, IN)^T + bias, with an activation (fused where its gradient needs only
 * the output, else a separate op on a kept pre-activation); and flatten, a view. */
#include "core/checked.h"
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/op_check.h"
#include "core/ops.h"

static cnn_status dense_init(cnn_layer *l)
{
    cnn_dense_layer *d = (cnn_dense_layer *)l;
    if (l->in.ndim != 1)
        return cnn_error(CNN_ERR_SHAPE, "line %d: dense needs a flat input: add 'flatten' before it", l->line);
    int64_t in = l->in.d[0];
    l->out = (cnn_shape){1, {d->units, 0, 0}};
    int64_t wshape[2] = {d->units, in};
    cnn_init init = cnn_layer_weight_init(l);
    cnn_status st = cnn_layer_add_param(l, "weight", 2, wshape, init, in, d->units);
    if (st == CNN_OK && d->use_bias) {
        int64_t bshape[1] = {d->units};
        st = cnn_layer_add_param(l, "bias", 1, bshape, CNN_INIT_ZEROS, in, d->units);
    }
    return st;
}

/* dense in direction dir (cnn_layer_ops.op) */
static cnn_status dense_op(cnn_layer *l, int dir, const cnn_layer_io *io)
{
    const cnn_dense_args a = {
        .plan = &l->plan,
        .x = io->x, .y = io->y, .dy = io->dy, .dx = io->dx, .dw = io->dw, .db = io->db,
        .w = cnn_param_compute(&l->params[0]),
        .b = l->nparams > 1 ? l->params[1].value : NULL,
        .act = io->act, .act_alpha = l->act_alpha,
    };
    return dir == CNN_OP_FWD            ? cnn_op_dense_forward(l->backend, &a)
           : dir == CNN_OP_BWD_WEIGHTS ? cnn_op_dense_backward_weights(l->backend, &a)
                                       : cnn_op_dense_backward_data(l->backend, &a);
}

CNN_WEIGHTED_LAYER_OPS(dense, "Dense", "dense");

static cnn_status flatten_init(cnn_layer *l)
{
    int64_t n = 1;
    for (int i = 0; i < l->in.ndim; i++)
        if (!cnn_mul_i64(n, l->in.d[i], &n))
            return cnn_error(CNN_ERR_SHAPE, "line %d: flatten: the input's element count overflows 64-bit arithmetic",
                             l->line);
    l->out = (cnn_shape){1, {n, 0, 0}};
    return CNN_OK;
}

CNN_VIEW_LAYER_OPS(flatten, "Flatten", "flatten");
