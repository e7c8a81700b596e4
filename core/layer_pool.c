/* maxpool / avgpool: 2-D pooling windows over NHWC. */
#include "core/error.h"
#include "core/layer.h"

static cnn_status pool_init(cnn_layer *l)
{
    cnn_pool_layer *p = (cnn_pool_layer *)l;
    if (l->in.ndim != 3)
        return cnn_error(CNN_ERR_SHAPE, "line %d: %s needs an image input (H, W, C), got a flat one", l->line,
                         l->ops->kind);
    int64_t h = l->in.d[0], w = l->in.d[1];
    if (p->same_padding) {
        cnn_same_padding(h, p->kernel_h, p->stride_h, &p->pad_top, &p->pad_bottom);
        cnn_same_padding(w, p->kernel_w, p->stride_w, &p->pad_left, &p->pad_right);
    } else {
        p->pad_top = p->pad_bottom = p->pad_left = p->pad_right = 0;
    }
    int64_t oh = cnn_window_out(h, p->kernel_h, p->stride_h, p->pad_top, p->pad_bottom, 1);
    int64_t ow = cnn_window_out(w, p->kernel_w, p->stride_w, p->pad_left, p->pad_right, 1);
    if (oh < 1 || ow < 1)
        return cnn_error(CNN_ERR_SHAPE, "line %d: %s window %dx%d does not fit the %lldx%lld input", l->line,
                         l->ops->kind, p->kernel_h, p->kernel_w, (long long)h, (long long)w);
    l->out = (cnn_shape){3, {oh, ow, l->in.d[2]}};
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

static cnn_status pool_forward(cnn_layer *l, const cnn_tensor *x, cnn_tensor *y, int training)
{
    cnn_pool2d_args a = pool_args(l);
    a.x = x;
    a.y = y;
    a.training = training;
    return l->backend->ops->pool2d_forward(l->backend, &a);
}

static cnn_status pool_backward(cnn_layer *l, const cnn_tensor *x, const cnn_tensor *y, cnn_tensor *dy,
                                cnn_tensor *dx)
{
    if (!dx) return CNN_OK; /* no parameters: nothing to do as the first layer */
    cnn_pool2d_args a = pool_args(l);
    a.x = x;
    a.y = (cnn_tensor *)y;
    a.dy = dy;
    a.dx = dx;
    a.training = 1;
    return l->backend->ops->pool2d_backward(l->backend, &a);
}

const cnn_layer_ops cnn_maxpool_layer_ops = {
    .kind = "maxpool",
    .type_name = "MaxPooling2D",
    .name_prefix = "max_pooling2d",
    .init = pool_init,
    .forward = pool_forward,
    .backward = pool_backward,
};

const cnn_layer_ops cnn_avgpool_layer_ops = {
    .kind = "avgpool",
    .type_name = "AveragePooling2D",
    .name_prefix = "average_pooling2d",
    .init = pool_init,
    .forward = pool_forward,
    .backward = pool_backward,
};
