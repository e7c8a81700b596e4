/* dropout: inverted dropout with a counter-based mask, the identity at inference. */
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"

/* Masks of different steps never share counters: the offset advances by 2^32 a step (tensors stay below 2^32
 * elements per layer and batch). */
#define DROPOUT_STEP_STRIDE (1ull << 32)

static cnn_status dropout_init(cnn_layer *l)
{
    l->out = l->in;
    return CNN_OK;
}

static cnn_status dropout_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    cnn_backend *b = l->backend;
    cnn_dropout_layer *d = (cnn_dropout_layer *)l;
    if (!training || d->rate == 0.0f) return cnn_op_copy(b, y, x[0]);
    cnn_dropout_args a = {.x = x[0], .y = y, .rate = d->rate, .seed = l->seed, .offset = l->step * DROPOUT_STEP_STRIDE};
    return cnn_op_dropout_forward(b, &a);
}

static cnn_status dropout_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                                   cnn_tensor *const *dx)
{
    (void)x;
    (void)y;
    cnn_backend *b = l->backend;
    cnn_dropout_layer *d = (cnn_dropout_layer *)l;
    if (!dx[0]) return CNN_OK;
    if (d->rate == 0.0f || l->infer_grad) return cnn_op_copy(b, dx[0], dy); /* infer_grad: the inference identity */
    cnn_dropout_args a = {.dy = dy, .dx = dx[0], .rate = d->rate, .seed = l->seed,
                          .offset = l->step * DROPOUT_STEP_STRIDE};
    return cnn_op_dropout_backward(b, &a);
}

CNN_LAYER_OPS(dropout, "Dropout", "dropout");
