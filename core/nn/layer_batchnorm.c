/* batchnorm: per-channel normalization with learned gamma/beta and running statistics (non-trainable state); in
 * training the statistics may come from elsewhere (cnn_bn_sync: --sync-batchnorm's, over all ranks). */
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"

enum { BN_BUF_MEAN = 0, BN_BUF_INVSTD, BN_BUF_SCRATCH };

static cnn_status batchnorm_init(cnn_layer *l)
{
    int64_t c = l->in.d[l->in.ndim - 1];
    int64_t shape[1] = {c};
    l->out = l->in;
    cnn_status st = cnn_layer_add_param(l, "gamma", 1, shape, CNN_INIT_ONES, c, c);
    if (st == CNN_OK) st = cnn_layer_add_param(l, "beta", 1, shape, CNN_INIT_ZEROS, c, c);
    if (st == CNN_OK) st = cnn_layer_add_state(l, "running_mean", 1, shape, CNN_INIT_ZEROS);
    if (st == CNN_OK) st = cnn_layer_add_state(l, "running_var", 1, shape, CNN_INIT_ONES);
    return st;
}

static cnn_batchnorm_args batchnorm_args(cnn_layer *l, cnn_tensor *mean, cnn_tensor *invstd)
{
    cnn_batchnorm_layer *bn = (cnn_batchnorm_layer *)l;
    return (cnn_batchnorm_args){
        .plan = &l->plan,
        .gamma = l->params[0].value, .beta = l->params[1].value,
        .running_mean = l->state[0].value, .running_var = l->state[1].value,
        .save_mean = mean, .save_invstd = invstd,
        .momentum = bn->momentum, .eps = bn->eps,
        .act = cnn_act_grad_needs_input(l->act) ? CNN_ACT_NONE : l->act,
        .act_alpha = l->act_alpha,
    };
}

static cnn_status batchnorm_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    cnn_backend *b = l->backend;
    cnn_status st = CNN_OK;
    cnn_tensor mean, invstd, buf, *pre; /* (C), (C): batch statistics kept for backward; (like y) pre-activation */
    CNN_TRY(cnn_layer_buffer(l, BN_BUF_MEAN, l->params[0].value, &mean));
    CNN_TRY(cnn_layer_buffer(l, BN_BUF_INVSTD, l->params[0].value, &invstd));
    CNN_TRY(cnn_layer_pre_act(l, BN_BUF_SCRATCH, y, &buf, &pre));
    cnn_batchnorm_args a = batchnorm_args(l, &mean, &invstd);
    a.x = x[0];
    a.residual = l->fused ? x[1] : NULL;
    a.y = pre ? pre : y;
    a.training = training;
    const cnn_bn_sync *sync = &((cnn_batchnorm_layer *)l)->sync;
    CNN_TRY(training && sync->forward ? sync->forward(sync->ctx, b, &a) : cnn_op_batchnorm_forward(b, &a));
    if (pre) CNN_TRY(cnn_layer_act_forward(l, pre, y));
fail:
    return st;
}

static cnn_status batchnorm_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y,
                                     cnn_tensor *dy, cnn_tensor *const *dx)
{
    cnn_backend *b = l->backend;
    cnn_status st = CNN_OK;
    cnn_tensor mean, invstd, scratch, *prep = NULL;
    CNN_TRY(cnn_layer_buffer(l, BN_BUF_MEAN, l->params[0].value, &mean));
    CNN_TRY(cnn_layer_buffer(l, BN_BUF_INVSTD, l->params[0].value, &invstd));
    CNN_TRY(cnn_layer_pre_act(l, BN_BUF_SCRATCH, y, &scratch, &prep));
    /* An activation whose gradient follows from y is the op's (batchnorm_args): it applies it inside its own passes
     * and, with a fused residual, stores it as the residual's gradient (the gradient w.r.t. the sum). One whose
     * gradient needs the pre-activation input (GELU, SiLU) runs first, in place, as an op of its own; the op then
     * has no activation and stores dy itself as the residual's gradient (the rewrite never fuses those, but the
     * result would hold). */
    if (prep) CNN_TRY(cnn_layer_act_backward(l, prep, y, dy));
    cnn_batchnorm_args a = batchnorm_args(l, &mean, &invstd);
    a.x = x[0];
    a.y = (cnn_tensor *)y;
    a.dy = dy;
    a.dresidual = l->fused ? dx[1] : NULL;
    /* after an inference forward (input gradients): through the running statistics, the weights' gradients kept */
    a.dgamma = l->infer_grad ? NULL : l->params[0].grad;
    a.dbeta = l->infer_grad ? NULL : l->params[1].grad;
    a.training = !l->infer_grad;
    a.dx = dx[0]; /* NULL when x needs no gradient: the op then skips its dx pass */
    CNN_TRY(cnn_op_batchnorm_backward(b, &a));
    const cnn_bn_sync *sync = &((cnn_batchnorm_layer *)l)->sync;
    if (a.training && sync->backward) CNN_TRY(sync->backward(sync->ctx, &a));
fail:
    return st;
}

CNN_LAYER_OPS(batchnorm, "BatchNormalization", "batch_normalization");
