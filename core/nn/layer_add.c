/* add: the sum of several inputs of one shape (a residual connection), with an optional activation. */
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"

enum { ADD_BUF_PRE = 0 };

static int same_shape(const cnn_shape *a, const cnn_shape *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->d[d] != b->d[d]) return 0;
    return 1;
}

static cnn_status add_init(cnn_layer *l)
{
    char s0[64], s1[64];
    for (int k = 1; k < l->ninputs; k++)
        if (!same_shape(&l->ins[0], &l->ins[k])) {
            cnn_shape_format(&l->ins[0], s0, sizeof s0);
            cnn_shape_format(&l->ins[k], s1, sizeof s1);
            return cnn_error(CNN_ERR_SHAPE, "line %d: add needs equal shapes, got %s and %s (a projection shortcut "
                                            "makes them match: conv 1x1 with the stride and filters of the block)",
                             l->line, s0, s1);
        }
    l->out = l->ins[0];
    return CNN_OK;
}

static cnn_status add_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    (void)training;
    cnn_backend *b = l->backend;
    cnn_status st = CNN_OK;
    /* the sum goes straight into y, the activation then in place, unless its gradient needs the sum itself
     * (GELU, SiLU): a buffer of the output's size less for every residual add */
    cnn_tensor pre, *sum = y;
    if (cnn_act_grad_needs_input(l->act)) {
        CNN_TRY(cnn_layer_buffer(l, ADD_BUF_PRE, y, &pre));
        sum = &pre;
    }
    cnn_add_args a = {.a = x[0], .b = x[1], .y = sum, .alpha = 1.0f, .beta = 1.0f};
    CNN_TRY(cnn_op_add(b, &a));
    for (int k = 2; k < l->ninputs; k++) {
        a = (cnn_add_args){.a = sum, .b = x[k], .y = sum, .alpha = 1.0f, .beta = 1.0f};
        CNN_TRY(cnn_op_add(b, &a));
    }
    if (l->act != CNN_ACT_NONE) CNN_TRY(cnn_layer_act_forward(l, sum, y));
fail:
    return st;
}

static cnn_status add_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                               cnn_tensor *const *dx)
{
    (void)x;
    cnn_backend *b = l->backend;
    cnn_status st = CNN_OK;
    int first = 0; /* the activation's gradient goes straight into the first input's gradient, then is copied */
    while (first < l->ninputs && !dx[first]) first++;
    if (first == l->ninputs) return CNN_OK;
    if (l->act != CNN_ACT_NONE) {
        cnn_tensor pre, *prep = NULL;
        if (cnn_act_grad_needs_input(l->act)) {
            CNN_TRY(cnn_layer_buffer(l, ADD_BUF_PRE, y, &pre));
            prep = &pre;
        }
        cnn_act_args a = {.act = l->act, .alpha = l->act_alpha, .x = prep, .y = (cnn_tensor *)y, .dy = dy,
                          .dx = dx[first]};
        CNN_TRY(cnn_op_act_backward(b, &a));
    } else {
        CNN_TRY(cnn_op_copy(b, dx[first], dy));
    }
    for (int k = first + 1; k < l->ninputs; k++)
        if (dx[k]) CNN_TRY(cnn_op_copy(b, dx[k], dx[first]));
fail:
    return st;
}

CNN_LAYER_OPS(add, "Add", "add");
