/* The single-input activation layers (relu, ...), and softmax: a view that marks the output as logits. */
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"

static cnn_status act_init(cnn_layer *l)
{
    l->out = l->in;
    return CNN_OK;
}

static cnn_status act_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    (void)training;
    return cnn_layer_act_forward(l, x[0], y);
}

static cnn_status act_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                               cnn_tensor *const *dx)
{
    if (!dx[0]) return CNN_OK;
    cnn_backend *b = l->backend;
    cnn_act_args a = {.act = l->act, .alpha = l->act_alpha, .x = x[0], .y = (cnn_tensor *)y, .dy = dy, .dx = dx[0]};
    return cnn_op_act_backward(b, &a);
}

CNN_LAYER_OPS_OF(act, "activation", act, "Activation", "activation");

static cnn_status softmax_init(cnn_layer *l)
{
    if (l->in.ndim != 1)
        return cnn_error(CNN_ERR_SHAPE, "line %d: softmax needs a flat input of class scores (dense before it)",
                         l->line);
    l->out = l->in;
    return CNN_OK;
}

CNN_VIEW_LAYER_OPS(softmax, "Softmax", "softmax");
