/* conv: 2-D convolution over NHWC with OHWI weights (grouped and dilated), optional bias and an activation:
 * fused into the backend op when its gradient needs only the output, else applied as a separate op on a kept
 * pre-activation (GELU, SiLU). */
#include "core/error.h"
#include "core/nn/layer.h"
#include "core/op_check.h"
#include "core/ops.h"

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

/* conv2d in direction dir (cnn_layer_ops.op) */
static cnn_status conv_op(cnn_layer *l, int dir, const cnn_layer_io *io)
{
    cnn_conv_layer *c = (cnn_conv_layer *)l;
    const cnn_conv2d_args a = {
        .plan = &l->plan,
        .x = io->x, .y = io->y, .dy = io->dy, .dx = io->dx, .dw = io->dw, .db = io->db,
        .w = cnn_param_compute(&l->params[0]),
        .b = c->use_bias ? l->params[1].value : NULL,
        .stride_h = c->stride_h, .stride_w = c->stride_w,
        .pad_top = c->pad_top, .pad_left = c->pad_left, .pad_bottom = c->pad_bottom, .pad_right = c->pad_right,
        .dilation_h = c->dilation_h, .dilation_w = c->dilation_w, .groups = c->groups,
        .act = io->act, .act_alpha = l->act_alpha,
    };
    return dir == CNN_OP_FWD            ? cnn_op_conv2d_forward(l->backend, &a)
           : dir == CNN_OP_BWD_WEIGHTS ? cnn_op_conv2d_backward_filter(l->backend, &a)
                                       : cnn_op_conv2d_backward_data(l->backend, &a);
}

CNN_WEIGHTED_LAYER_OPS(conv, "Conv2D", "conv2d");
