/* conv: 2-D convolution over NHWC with OHWI weights (grouped and dilated), optional bias and an activation:
 * fused into the backend op when its gradient needs only the output, else applied as a separate op on a kept
 * pre-activation (GELU, SiLU). */
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"

enum { CONV_BUF_PRE = 0 };

static cnn_status conv_init(cnn_layer *l)
{
    cnn_conv_layer *c = (cnn_conv_layer *)l;
    if (l->in.ndim != 3)
        return cnn_error(CNN_ERR_SHAPE, "line %d: conv needs an image input (H, W, C), got a flat one: add it "
                                        "before flatten", l->line);
    int64_t h = l->in.d[0], w = l->in.d[1], ch = l->in.d[2];
    if (ch % c->groups || c->filters % c->groups)
        return cnn_error(CNN_ERR_SHAPE, "line %d: conv groups=%d must divide the %lld input channels and the %d "
                                        "filters", l->line, c->groups, (long long)ch, c->filters);
    int ekh = (c->kernel_h - 1) * c->dilation_h + 1, ekw = (c->kernel_w - 1) * c->dilation_w + 1;
    if (c->same_padding == CNN_PAD_SAME) {
        cnn_same_padding(h, ekh, c->stride_h, &c->pad_top, &c->pad_bottom);
        cnn_same_padding(w, ekw, c->stride_w, &c->pad_left, &c->pad_right);
    } else if (c->same_padding == CNN_PAD_VALID) {
        c->pad_top = c->pad_bottom = c->pad_left = c->pad_right = 0;
    }
    int64_t oh = cnn_window_out(h, c->kernel_h, c->stride_h, c->pad_top, c->pad_bottom, c->dilation_h);
    int64_t ow = cnn_window_out(w, c->kernel_w, c->stride_w, c->pad_left, c->pad_right, c->dilation_w);
    if (oh < 1 || ow < 1)
        return cnn_error(CNN_ERR_SHAPE, "line %d: conv kernel %dx%d does not fit the %lldx%lld input", l->line,
                         c->kernel_h, c->kernel_w, (long long)h, (long long)w);
    l->out = (cnn_shape){3, {oh, ow, c->filters}};
    int64_t cg = ch / c->groups;
    int64_t fan_in = (int64_t)c->kernel_h * c->kernel_w * cg;
    int64_t fan_out = (int64_t)c->kernel_h * c->kernel_w * c->filters / c->groups;
    int64_t wshape[4] = {c->filters, c->kernel_h, c->kernel_w, cg};
    cnn_init init = cnn_layer_weight_init(l);
    cnn_status st = cnn_layer_add_param(l, "weight", 4, wshape, init, fan_in, fan_out);
    if (st == CNN_OK && c->use_bias) {
        int64_t bshape[1] = {c->filters};
        st = cnn_layer_add_param(l, "bias", 1, bshape, CNN_INIT_ZEROS, fan_in, fan_out);
    }
    return st;
}

static cnn_conv2d_args conv_args(cnn_layer *l)
{
    cnn_conv_layer *c = (cnn_conv_layer *)l;
    int fused = !cnn_act_grad_needs_input(l->act);
    return (cnn_conv2d_args){
        .plan = &l->plan,
        .w = cnn_param_compute(&l->params[0]),
        .b = c->use_bias ? l->params[1].value : NULL,
        .stride_h = c->stride_h, .stride_w = c->stride_w,
        .pad_top = c->pad_top, .pad_left = c->pad_left, .pad_bottom = c->pad_bottom, .pad_right = c->pad_right,
        .dilation_h = c->dilation_h, .dilation_w = c->dilation_w, .groups = c->groups,
        .act = fused ? l->act : CNN_ACT_NONE,
        .act_alpha = l->act_alpha,
    };
}

static cnn_status conv_forward(cnn_layer *l, const cnn_tensor *const *x, cnn_tensor *y, int training)
{
    (void)training;
    cnn_status st = CNN_OK;
    cnn_tensor buf, *pre; /* (N, OH, OW, O) before the activation, kept for backward */
    CNN_TRY(cnn_layer_pre_act(l, CONV_BUF_PRE, y, &buf, &pre));
    cnn_conv2d_args a = conv_args(l);
    a.x = x[0];
    a.y = pre ? pre : y;
    CNN_TRY(cnn_op_conv2d_forward(l->backend, &a));
    if (pre) CNN_TRY(cnn_layer_act_forward(l, pre, y));
fail:
    return st;
}

static cnn_status conv_backward(cnn_layer *l, const cnn_tensor *const *x, const cnn_tensor *y, cnn_tensor *dy,
                                cnn_tensor *const *dx)
{
    cnn_backend *b = l->backend;
    cnn_status st = CNN_OK;
    cnn_tensor buf, *pre;
    CNN_TRY(cnn_layer_pre_act(l, CONV_BUF_PRE, y, &buf, &pre));
    CNN_TRY(cnn_layer_act_backward(l, pre, y, dy));
    cnn_conv2d_args a = conv_args(l);
    a.x = x[0];
    a.dy = dy;
    a.dw = l->params[0].grad;
    a.db = l->nparams > 1 ? l->params[1].grad : NULL;
    if (!l->infer_grad) CNN_TRY(cnn_op_conv2d_backward_filter(b, &a));
    if (dx[0]) {
        a.dx = dx[0];
        CNN_TRY(cnn_op_conv2d_backward_data(b, &a));
    }
fail:
    return st;
}

CNN_LAYER_OPS(conv, "Conv2D", "conv2d");
