/* dense: fully connected, (N, IN) x (OUT, IN)^T + bias, with an activation (fused where its gradient needs only
 * the output, else a separate op on a kept pre-activation); and flatten, a view. */
#include "core/checked.h"
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"

enum { DENSE_BUF_PRE = 0 };

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

static cnn_dense_args dense_args(cnn_layer *l)
{
    int fused = !cnn_act_grad_needs_input(l->act);
    return (cnn_dense_args){
        .plan = &l->plan,
        .w = cnn_param_compute(&l->params[0]),
        .b = l->nparams > 1 ? l->params[1].value : NULL,
        .act = fused ? l->act : CNN_ACT_NONE,
        .act_alpha = l->act_alpha,
    };
}

static cnn_status dense_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    (void)training;
    cnn_status st = CNN_OK;
    cnn_tensor buf, *pre; /* (N, OUT) before the activation */
    CNN_TRY(cnn_layer_pre_act(l, DENSE_BUF_PRE, y, &buf, &pre));
    cnn_dense_args a = dense_args(l);
    a.x = x[0];
    a.y = pre ? pre : y;
    CNN_TRY(cnn_op_dense_forward(l->backend, &a));
    if (pre) CNN_TRY(cnn_layer_act_forward(l, pre, y));
fail:
    return st;
}

static cnn_status dense_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                                 cnn_tensor *const *dx)
{
    cnn_backend *b = l->backend;
    cnn_status st = CNN_OK;
    cnn_tensor buf, *pre;
    CNN_TRY(cnn_layer_pre_act(l, DENSE_BUF_PRE, y, &buf, &pre));
    CNN_TRY(cnn_layer_act_backward(l, pre, y, dy));
    cnn_dense_args a = dense_args(l);
    a.x = x[0];
    a.dy = dy;
    a.dw = l->params[0].grad;
    a.db = l->nparams > 1 ? l->params[1].grad : NULL;
    if (!l->infer_grad) CNN_TRY(cnn_op_dense_backward_weights(b, &a));
    if (dx[0]) {
        a.dx = dx[0];
        CNN_TRY(cnn_op_dense_backward_data(b, &a));
    }
fail:
    return st;
}

CNN_LAYER_OPS(dense, "Dense", "dense");

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
