/* maxpool / avgpool: 2-D pooling windows over NHWC; globalavgpool / globalmaxpool: the mean / the max over H and W,
 * a flat (C) output (one window the size of the input, through the same pooling op). */
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"

static cnn_status pool_init(cnn_layer *l)
{
    cnn_pool_layer *p = (cnn_pool_layer *)l;
    if (l->in.ndim != 3)
        return cnn_error(CNN_ERR_SHAPE, "line %d: %s needs an image input (H, W, C), got a flat one", l->line,
                         l->ops->kind);
    int64_t h = l->in.d[0], w = l->in.d[1];
    if (p->global) {
        p->kernel_h = p->stride_h = (int)h;
        p->kernel_w = p->stride_w = (int)w;
        p->same_padding = CNN_PAD_VALID;
    }
    if (p->same_padding == CNN_PAD_SAME) {
        cnn_same_padding(h, p->kernel_h, p->stride_h, &p->pad_top, &p->pad_bottom);
        cnn_same_padding(w, p->kernel_w, p->stride_w, &p->pad_left, &p->pad_right);
    } else if (p->same_padding == CNN_PAD_VALID) {
        p->pad_top = p->pad_bottom = p->pad_left = p->pad_right = 0;
    } else if (p->pad_top >= p->kernel_h || p->pad_bottom >= p->kernel_h || p->pad_left >= p->kernel_w ||
               p->pad_right >= p->kernel_w) {
        return cnn_error(CNN_ERR_SHAPE, "line %d: %s padding must be smaller than the %dx%d window", l->line,
                         l->ops->kind, p->kernel_h, p->kernel_w);
    }
    int64_t oh = cnn_window_out(h, p->kernel_h, p->stride_h, p->pad_top, p->pad_bottom, 1);
    int64_t ow = cnn_window_out(w, p->kernel_w, p->stride_w, p->pad_left, p->pad_right, 1);
    if (oh < 1 || ow < 1)
        return cnn_error(CNN_ERR_SHAPE, "line %d: %s window %dx%d does not fit the %lldx%lld input", l->line,
                         l->ops->kind, p->kernel_h, p->kernel_w, (long long)h, (long long)w);
    l->out = p->global ? (cnn_shape){1, {l->in.d[2], 0, 0}} : (cnn_shape){3, {oh, ow, l->in.d[2]}};
    return CNN_OK;
}

static cnn_pool2d_args pool_args(cnn_layer *l)
{
    cnn_pool_layer *p = (cnn_pool_layer *)l;
    return (cnn_pool2d_args){
        .plan = &l->plan,
        .mode = p->mode,
        .kernel_h = p->kernel_h, .kernel_w = p->kernel_w,
        .stride_h = p->stride_h, .stride_w = p->stride_w,
        .pad_top = p->pad_top, .pad_left = p->pad_left, .pad_bottom = p->pad_bottom, .pad_right = p->pad_right,
    };
}

/* a global pool's flat (N, C) output seen as the (N, 1, 1, C) the pooling op writes */
static cnn_tensor as_image(const cnn_tensor *t)
{
    cnn_tensor v = *t;
    v.owns_data = 0;
    if (t->ndim == 2) {
        v.ndim = 4;
        v.shape[3] = t->shape[1];
        v.shape[1] = v.shape[2] = 1;
    }
    return v;
}

static cnn_status pool_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    cnn_pool2d_args a = pool_args(l);
    cnn_tensor yv = as_image(y);
    a.x = x[0];
    a.y = &yv;
    a.training = training;
    cnn_status st = cnn_op_pool2d_forward(l->backend, &a);
    /* an activation moved here from the layer before (net.c, relu_after_maxpool): in place, its gradient comes
     * from y */
    if (st == CNN_OK && l->act != CNN_ACT_NONE) st = cnn_layer_act_forward(l, y, y);
    return st;
}

static cnn_status pool_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                                cnn_tensor *const *dx)
{
    if (!dx[0]) return CNN_OK; /* no parameters: nothing to do when nothing upstream needs a gradient */
    if (l->act != CNN_ACT_NONE) {
        cnn_status st = cnn_layer_act_backward(l, NULL, y, dy);
        if (st != CNN_OK) return st;
    }
    cnn_pool2d_args a = pool_args(l);
    cnn_tensor yv = as_image(y), dyv = as_image(dy);
    a.x = x[0];
    a.y = &yv;
    a.dy = &dyv;
    a.dx = dx[0];
    a.training = 1;
    return cnn_op_pool2d_backward(l->backend, &a);
}

CNN_LAYER_OPS_OF(maxpool, "maxpool", pool, "MaxPooling2D", "max_pooling2d");
CNN_LAYER_OPS_OF(avgpool, "avgpool", pool, "AveragePooling2D", "average_pooling2d");
CNN_LAYER_OPS_OF(globalavgpool, "globalavgpool", pool, "GlobalAveragePooling2D", "global_average_pooling2d");
CNN_LAYER_OPS_OF(globalmaxpool, "globalmaxpool", pool, "GlobalMaxPooling2D", "global_max_pooling2d");
