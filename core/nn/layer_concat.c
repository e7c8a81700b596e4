/* concat: the inputs joined along the channel (last) axis. */
#include "core/checked.h"
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"

static cnn_status concat_init(cnn_layer *l)
{
    char s0[64], s1[64];
    cnn_shape out = l->ins[0];
    int last = out.ndim - 1;
    for (int k = 1; k < l->ninputs; k++) {
        cnn_shape s = l->ins[k];
        int ok = s.ndim == out.ndim;
        for (int d = 0; ok && d < last; d++) ok = s.d[d] == out.d[d];
        if (!ok) {
            cnn_shape_format(&l->ins[0], s0, sizeof s0);
            cnn_shape_format(&s, s1, sizeof s1);
            return cnn_error(CNN_ERR_SHAPE, "line %d: concat needs shapes that differ only in channels, got %s and %s",
                             l->line, s0, s1);
        }
        if (!cnn_add_i64(out.d[last], s.d[last], &out.d[last]))
            return cnn_error(CNN_ERR_SHAPE, "line %d: concat: the channel count overflows 64-bit arithmetic", l->line);
    }
    l->out = out;
    return CNN_OK;
}

static cnn_status concat_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    (void)training;
    cnn_backend *b = l->backend;
    cnn_concat_args a = {.n = l->ninputs, .y = y};
    for (int k = 0; k < l->ninputs; k++) a.xs[k] = x[k];
    return cnn_op_concat_forward(b, &a);
}

static cnn_status concat_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                                  cnn_tensor *const *dx)
{
    (void)y;
    cnn_backend *b = l->backend;
    cnn_concat_args a = {.n = l->ninputs, .dy = dy};
    int any = 0;
    for (int k = 0; k < l->ninputs; k++) {
        a.xs[k] = x[k];
        a.dxs[k] = dx[k];
        any |= dx[k] != NULL;
    }
    return any ? cnn_op_concat_backward(b, &a) : CNN_OK;
}

CNN_LAYER_OPS(concat, "Concatenate", "concatenate");
