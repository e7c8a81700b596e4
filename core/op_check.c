/* Device-independent argument checks of conv2d, pool2d, dense, batchnorm, concat and the multi-tensor optimizer
 * updates (see op_check.h). */
#include "core/op_check.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"

const char *cnn_op_shape_str(const cnn_tensor *t, char *buf, size_t size)
{
    if (!t) {
        snprintf(buf, size, "(missing)");
        return buf;
    }
    size_t len = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < t->ndim && i < CNN_MAX_DIMS && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (len < size) snprintf(buf + len, size - len, ")");
    return buf;
}

const char *cnn_op_act_name(cnn_act act)
{
    static const char *const names[] = {
        [CNN_ACT_NONE] = "none", [CNN_ACT_RELU] = "ReLU", [CNN_ACT_LEAKY_RELU] = "leaky ReLU", [CNN_ACT_ELU] = "ELU",
        [CNN_ACT_SIGMOID] = "sigmoid", [CNN_ACT_TANH] = "tanh", [CNN_ACT_GELU] = "GELU", [CNN_ACT_SILU] = "SiLU",
    };
    _Static_assert(sizeof names / sizeof names[0] == CNN_ACT_COUNT, "a name for every cnn_act");
    return (unsigned)act < CNN_ACT_COUNT ? names[act] : "?";
}

cnn_status cnn_op_check_act(cnn_act act, float alpha, int fused, const char *prefix, const char *op)
{
    if ((unsigned)act >= CNN_ACT_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: unknown activation %d", prefix, op, (int)act);
    if (act == CNN_ACT_LEAKY_RELU && !(alpha > 0.0f && alpha < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: leaky ReLU slope alpha %g must be in (0, 1)", prefix, op,
                         (double)alpha);
    if (act == CNN_ACT_ELU && !(alpha > 0.0f && isfinite(alpha)))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: ELU alpha %g must be positive and finite", prefix, op,
                         (double)alpha);
    if (fused && cnn_act_grad_needs_input(act))
        return cnn_error(CNN_ERR_INVALID_ARG,
                         "%s%s: %s cannot be fused (its gradient needs the pre-activation input); apply it as a "
                         "separate op",
                         prefix, op, cnn_op_act_name(act));
    return CNN_OK;
}

cnn_status cnn_op_check_dims(const cnn_tensor *t, int ndim, const int64_t *shape, const char *prefix,
                                    const char *op, const char *name)
{
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (same) return CNN_OK;
    char got[CNN_OP_SHAPE_BUF], want[CNN_OP_SHAPE_BUF];
    cnn_tensor w = {.ndim = ndim};
    for (int i = 0; i < ndim && i < CNN_MAX_DIMS; i++) w.shape[i] = shape[i];
    return cnn_error(CNN_ERR_SHAPE, "%s%s: %s has shape %s, expected %s", prefix, op, name,
                     cnn_op_shape_str(t, got, sizeof got), cnn_op_shape_str(&w, want, sizeof want));
}

/* the x/w/y-like tensors of direction `dir` and the bias, from the fields that conv2d and dense args share */
static int cnn_op_tensors(int dir, const cnn_tensor *x, const cnn_tensor *dx, const cnn_tensor *w,
                          const cnn_tensor *dw, const cnn_tensor *y, const cnn_tensor *dy, const cnn_tensor *b,
                          const cnn_tensor *db, const cnn_tensor **ts, const char **names)
{
    const cnn_tensor *bias = dir == CNN_OP_FWD ? b : dir == CNN_OP_BWD_WEIGHTS ? db : NULL;
    ts[0] = dir == CNN_OP_BWD_DATA ? dx : x;
    ts[1] = dir == CNN_OP_BWD_WEIGHTS ? dw : w;
    ts[2] = dir == CNN_OP_FWD ? y : dy;
    names[0] = dir == CNN_OP_BWD_DATA ? "dx" : "x";
    names[1] = dir == CNN_OP_BWD_WEIGHTS ? "dw" : "w";
    names[2] = dir == CNN_OP_FWD ? "y" : "dy";
    if (!bias) return 3;
    ts[3] = bias;
    names[3] = dir == CNN_OP_FWD ? "b" : "db";
    return 4;
}

int cnn_conv2d_tensors(const cnn_conv2d_args *a, int dir, const cnn_tensor **ts, const char **names)
{
    return cnn_op_tensors(dir, a->x, a->dx, a->w, a->dw, a->y, a->dy, a->b, a->db, ts, names);
}

int cnn_dense_tensors(const cnn_dense_args *a, int dir, const cnn_tensor **ts, const char **names)
{
    return cnn_op_tensors(dir, a->x, a->dx, a->w, a->dw, a->y, a->dy, a->b, a->db, ts, names);
}

const char *cnn_conv2d_sizes_str(const cnn_conv2d_sizes *s, char *buf, size_t size)
{
    snprintf(buf, size,
             "x (%lld, %lld, %lld, %lld), w (%lld, %lld, %lld, %lld), stride %dx%d, padding %d,%d,%d,%d, dilation "
             "%dx%d, groups %d",
             (long long)s->n, (long long)s->h, (long long)s->w, (long long)s->c, (long long)s->o, (long long)s->kh,
             (long long)s->kw, (long long)(s->groups > 0 ? s->c / s->groups : s->c), s->stride_h, s->stride_w,
             s->pad_top, s->pad_left, s->pad_bottom, s->pad_right, s->dilation_h, s->dilation_w, s->groups);
    return buf;
}

/* Winograd F(4x4, 3x3) (oneDNN's jit_wino_4x3, AVX-512 only) computes a 3x3 stride-1 convolution with 4x fewer
 * multiplications than the direct kernels, at the price of transforms and of rounding errors a few times larger
 * (1e-6 to 1.5e-6 of the largest value against a float64 reference, the direct kernels 3e-7 to 1e-6). Measured on
 * Zen 4, 1 and 2 threads, every direction of the shapes of ResNet-20, ResNet-18 and the seed CNN (bench/RESULTS.md,
 * "Session 12"; bench/conv_algo_bench.c), it is 1.2x to 2.6x faster than the direct kernels where this rule lets it
 * run, and slower where the rule stops it:
 * - channels in and out multiples of 16 (oneDNN's condition) and at least 32; or 16 (in or out) only in the
 *   window where it measured faster in every direction: outputs of 20 to 28 pixels a side and 32 images or more
 *   (ResNet-20 on 28 x 28 images: 1.2x to 1.8x). Outside it, with 16 channels, oneDNN's blocking made it 0.6x to
 *   1.6x the direct kernels' speed, slowest where the 4 x 4 tiles of a row are a power of two (8, 16, 30 and 32
 *   pixels: 0.65x to 0.9x) and at batch 16 (backward weights 0.7x to 0.8x);
 * - outputs of at least 4 x 4 (one tile): on 2 x 2 it was 2 to 3x slower;
 * - at least 1024 output pixels a call (batch x height x width): each call transforms the weights again, which
 *   small calls do not repay (ResNet-20's 7 x 7 stages at batch 1 to 4: 0.3x to 0.7x; batch 8 at 14 x 14: 1.3x);
 * - backward data only with padding 1 on every side: with padding 0 it convolves dy over 2 more pixels a side
 *   (0.25x to 1.1x).
 * A rule on the shape keeps the choice, and so the results, reproducible (no timing). The CPU backend applies it
 * (cpu/conv.c) and the memory estimate counts Winograd's scratchpad by it (core/nn/memory.c). */
int cnn_conv2d_winograd_shape(const cnn_conv2d_sizes *k, int dir)
{
    const int wide = k->c >= 32 && k->o >= 32;
    const int narrow = (k->c == 16 || k->o == 16) && k->n >= 32 && k->oh >= 20 && k->oh <= 28 && k->ow >= 20 &&
                       k->ow <= 28;
    const int common = k->groups == 1 && k->kh == 3 && k->kw == 3 && k->stride_h == 1 && k->stride_w == 1 &&
                       k->dilation_h == 1 && k->dilation_w == 1 && k->c % 16 == 0 && k->o % 16 == 0 &&
                       (wide || narrow) && k->oh >= 4 && k->ow >= 4 && k->n * k->oh * k->ow >= 1024;
    if (dir != CNN_OP_BWD_DATA) return common;
    return common && k->pad_top == 1 && k->pad_left == 1 && k->pad_bottom == 1 && k->pad_right == 1;
}

cnn_status cnn_conv2d_check(const cnn_conv2d_args *a, int dir, const char *prefix, const char *op,
                            cnn_conv2d_sizes *s)
{
    const cnn_tensor *ts[CNN_OP_MAX_TENSORS] = {0};
    const char *names[CNN_OP_MAX_TENSORS] = {0};
    const int nt = cnn_conv2d_tensors(a, dir, ts, names);
    const cnn_tensor *xt = ts[0], *wt = ts[1], *yt = ts[2];
    const char *xn = names[0], *wn = names[1], *yn = names[2];
    char s1[CNN_OP_SHAPE_BUF], s2[CNN_OP_SHAPE_BUF];
    cnn_status st = CNN_OK;

    memset(s, 0, sizeof *s); /* padding too: the backends memcmp their plan keys */
    if (dir == CNN_OP_FWD) CNN_TRY(cnn_op_check_act(a->act, a->act_alpha, 1, prefix, op));
    if (a->stride_h < 1 || a->stride_w < 1 || a->dilation_h < 1 || a->dilation_w < 1 || a->groups < 1 ||
        a->pad_top < 0 || a->pad_left < 0 || a->pad_bottom < 0 || a->pad_right < 0)
        return cnn_error(CNN_ERR_INVALID_ARG,
                         "%s%s: bad parameters: stride %dx%d, dilation %dx%d, groups %d, padding %d,%d,%d,%d (top, "
                         "left, bottom, right)",
                         prefix, op, a->stride_h, a->stride_w, a->dilation_h, a->dilation_w, a->groups, a->pad_top,
                         a->pad_left, a->pad_bottom, a->pad_right);
    if (xt->ndim != 4 || wt->ndim != 4 || yt->ndim != 4)
        return cnn_error(CNN_ERR_SHAPE,
                         "%s%s: %s %s and %s %s must be rank 4 (N, H, W, C) and %s rank 4 (O, KH, KW, C/groups)",
                         prefix, op, xn, cnn_op_shape_str(xt, s1, sizeof s1), yn, cnn_op_shape_str(yt, s2, sizeof s2),
                         wn);
    cnn_conv2d_sizes_of(a, dir, s);
    if (s->n < 1 || s->h < 1 || s->w < 1 || s->c < 1 || s->o < 1 || s->kh < 1 || s->kw < 1)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: empty tensor: %s %s, %s %s", prefix, op, xn,
                         cnn_op_shape_str(xt, s1, sizeof s1), wn, cnn_op_shape_str(wt, s2, sizeof s2));
    if (s->c % a->groups || s->o % a->groups)
        return cnn_error(CNN_ERR_SHAPE,
                         "%s%s: groups %d must divide the input channels of %s %s and the filters of %s %s", prefix,
                         op, a->groups, xn, cnn_op_shape_str(xt, s1, sizeof s1), wn,
                         cnn_op_shape_str(wt, s2, sizeof s2));
    if (wt->shape[3] != s->c / a->groups)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s must have C/groups = %lld input channels to match %s %s", prefix,
                         op, wn, cnn_op_shape_str(wt, s1, sizeof s1), (long long)(s->c / a->groups), xn,
                         cnn_op_shape_str(xt, s2, sizeof s2));
    if (s->oh < 1 || s->ow < 1)
        return cnn_error(CNN_ERR_SHAPE,
                         "%s%s: the %lldx%lld kernel (dilation %dx%d) does not fit in %s %s with padding %d,%d,%d,%d",
                         prefix, op, (long long)s->kh, (long long)s->kw, a->dilation_h, a->dilation_w, xn,
                         cnn_op_shape_str(xt, s1, sizeof s1), a->pad_top, a->pad_left, a->pad_bottom, a->pad_right);
    const int64_t yshape[4] = {s->n, s->oh, s->ow, s->o};
    CNN_TRY(cnn_op_check_dims(yt, 4, yshape, prefix, op, yn));
    if (nt > 3) CNN_TRY(cnn_op_check_dims(ts[3], 1, &s->o, prefix, op, names[3]));
fail:
    return st;
}

cnn_status cnn_pool2d_check(const cnn_pool2d_args *a, int backward, const char *prefix, const char *op,
                            cnn_pool2d_sizes *s)
{
    const cnn_tensor *xt = backward ? a->dx : a->x;
    const cnn_tensor *yt = backward ? a->dy : a->y;
    const char *xn = backward ? "dx" : "x";
    const char *yn = backward ? "dy" : "y";
    char s1[CNN_OP_SHAPE_BUF];

    memset(s, 0, sizeof *s); /* padding too: the backends memcmp their plan keys */
    if ((unsigned)a->mode >= CNN_POOL_MODE_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: unknown pooling mode %d", prefix, op, (int)a->mode);
    if (a->kernel_h < 1 || a->kernel_w < 1 || a->stride_h < 1 || a->stride_w < 1 || a->pad_top < 0 ||
        a->pad_left < 0 || a->pad_bottom < 0 || a->pad_right < 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: bad window: kernel %dx%d, stride %dx%d, padding %d,%d,%d,%d",
                         prefix, op, a->kernel_h, a->kernel_w, a->stride_h, a->stride_w, a->pad_top, a->pad_left,
                         a->pad_bottom, a->pad_right);
    /* a window made only of padding would have no maximum and nothing to average */
    if (a->pad_top >= a->kernel_h || a->pad_bottom >= a->kernel_h || a->pad_left >= a->kernel_w ||
        a->pad_right >= a->kernel_w)
        return cnn_error(CNN_ERR_INVALID_ARG,
                         "%s%s: padding %d,%d,%d,%d (top, left, bottom, right) must be smaller than the %dx%d kernel",
                         prefix, op, a->pad_top, a->pad_left, a->pad_bottom, a->pad_right, a->kernel_h, a->kernel_w);
    if (xt->ndim != 4)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s must be rank 4 (N, H, W, C)", prefix, op, xn,
                         cnn_op_shape_str(xt, s1, sizeof s1));
    cnn_pool2d_sizes_of(a, backward, s);
    if (s->n < 1 || s->h < 1 || s->w < 1 || s->c < 1)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s is empty", prefix, op, xn, cnn_op_shape_str(xt, s1, sizeof s1));
    if (s->oh < 1 || s->ow < 1)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: the %dx%d window does not fit in %s %s with padding %d,%d,%d,%d",
                         prefix, op, a->kernel_h, a->kernel_w, xn, cnn_op_shape_str(xt, s1, sizeof s1), a->pad_top,
                         a->pad_left, a->pad_bottom, a->pad_right);
    const int64_t yshape[4] = {s->n, s->oh, s->ow, s->c};
    return cnn_op_check_dims(yt, 4, yshape, prefix, op, yn);
}

cnn_status cnn_dense_check(const cnn_dense_args *a, int dir, const char *prefix, const char *op, cnn_dense_sizes *s)
{
    const cnn_tensor *ts[CNN_OP_MAX_TENSORS] = {0};
    const char *names[CNN_OP_MAX_TENSORS] = {0};
    const int nt = cnn_dense_tensors(a, dir, ts, names);
    const cnn_tensor *xt = ts[0], *wt = ts[1];
    const char *xn = names[0], *wn = names[1];
    char s1[CNN_OP_SHAPE_BUF], s2[CNN_OP_SHAPE_BUF];
    cnn_status st = CNN_OK;

    memset(s, 0, sizeof *s);
    if (dir == CNN_OP_FWD) CNN_TRY(cnn_op_check_act(a->act, a->act_alpha, 1, prefix, op));
    if (xt->ndim < 2)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s must have rank 2 to 4 with the batch first", prefix, op, xn,
                         cnn_op_shape_str(xt, s1, sizeof s1));
    if (wt->ndim != 2)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s must be (OUT, IN)", prefix, op, wn,
                         cnn_op_shape_str(wt, s1, sizeof s1));
    cnn_dense_sizes_of(a, dir, s);
    if (s->n < 1 || s->in < 1 || s->out < 1)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: empty tensor: %s %s, %s %s", prefix, op, xn,
                         cnn_op_shape_str(xt, s1, sizeof s1), wn, cnn_op_shape_str(wt, s2, sizeof s2));
    if (wt->shape[1] != s->in)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s has %lld inputs per sample but %s is %s", prefix, op, xn,
                         cnn_op_shape_str(xt, s1, sizeof s1), (long long)s->in, wn,
                         cnn_op_shape_str(wt, s2, sizeof s2));
    const int64_t yshape[2] = {s->n, s->out};
    CNN_TRY(cnn_op_check_dims(ts[2], 2, yshape, prefix, op, names[2]));
    if (nt > 3) CNN_TRY(cnn_op_check_dims(ts[3], 1, &s->out, prefix, op, names[3]));
    if (dir == CNN_OP_BWD_DATA && a->x) CNN_TRY(cnn_op_check_dims(a->dx, a->x->ndim, a->x->shape, prefix, op, "dx"));
fail:
    return st;
}

static cnn_status cnn_op_check_vec(const cnn_tensor *t, int64_t c, const char *prefix, const char *op,
                                   const char *name)
{
    char s1[CNN_OP_SHAPE_BUF];
    if (t->ndim == 1 && t->shape[0] == c) return CNN_OK;
    return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s must be (%lld), one per channel", prefix, op, name,
                     cnn_op_shape_str(t, s1, sizeof s1), (long long)c);
}

static cnn_status cnn_op_check_like(const cnn_tensor *t, const cnn_tensor *ref, const char *prefix, const char *op,
                                    const char *name, const char *ref_name)
{
    char s1[CNN_OP_SHAPE_BUF], s2[CNN_OP_SHAPE_BUF];
    int same = t->ndim == ref->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = t->shape[d] == ref->shape[d];
    if (same) return CNN_OK;
    return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s must have the shape of %s %s", prefix, op, name,
                     cnn_op_shape_str(t, s1, sizeof s1), ref_name, cnn_op_shape_str(ref, s2, sizeof s2));
}

int cnn_batchnorm_tensors(const cnn_batchnorm_args *a, int backward, const cnn_tensor **ts, const char **names)
{
    const cnn_tensor *all[CNN_BATCHNORM_MAX_TENSORS] = {
        a->x,           a->gamma,          backward ? NULL : a->beta, a->running_mean, a->running_var,
        a->save_mean,   a->save_invstd,    backward && a->act == CNN_ACT_NONE ? NULL : a->y,
        backward ? a->dy : NULL, backward ? a->dx : NULL, backward ? a->dgamma : NULL,
        backward ? a->dbeta : NULL, backward ? NULL : a->residual, backward ? a->dresidual : NULL};
    static const char *const all_names[CNN_BATCHNORM_MAX_TENSORS] = {
        "x", "gamma", "beta", "running_mean", "running_var", "save_mean", "save_invstd", "y", "dy", "dx", "dgamma",
        "dbeta", "residual", "dresidual"};
    int n = 0;
    for (int i = 0; i < CNN_BATCHNORM_MAX_TENSORS; i++) {
        /* x, dy and y (forward, and backward through an activation) are required: listed even when NULL, so that
         * the caller's check names them */
        if (!all[i] && !(i == 0 || (i == 7 && (!backward || a->act != CNN_ACT_NONE)) || (i == 8 && backward)))
            continue;
        ts[n] = all[i];
        names[n] = all_names[i];
        n++;
    }
    return n;
}

cnn_status cnn_batchnorm_check(const cnn_batchnorm_args *a, int backward, const char *prefix, const char *op,
                               int64_t *m_out, int64_t *c_out)
{
    cnn_status st = CNN_OK;
    char s1[CNN_OP_SHAPE_BUF];
    if (a->x->ndim < 2 || a->x->ndim > 4)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: x %s must be (N, H, W, C) or (N, C)", prefix, op,
                         cnn_op_shape_str(a->x, s1, sizeof s1));
    const int64_t c = a->x->shape[a->x->ndim - 1];
    if (c < 1)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: x %s has no channels", prefix, op,
                         cnn_op_shape_str(a->x, s1, sizeof s1));
    const int64_t m = cnn_tensor_numel(a->x) / c;
    if (a->gamma) CNN_TRY(cnn_op_check_vec(a->gamma, c, prefix, op, "gamma"));
    if (!backward && a->beta) CNN_TRY(cnn_op_check_vec(a->beta, c, prefix, op, "beta"));
    if (!(a->eps > 0.0f && isfinite(a->eps)))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: eps %g must be positive", prefix, op, (double)a->eps);
    if (a->training && m < 2)
        return cnn_error(CNN_ERR_SHAPE, "%s%s: training needs more than one value per channel; x is %s", prefix, op,
                         cnn_op_shape_str(a->x, s1, sizeof s1));
    /* running statistics: read by inference, updated by training forward (optional there) */
    const int need_running = !a->training;
    const int update_running = !backward && a->training && (a->running_mean || a->running_var);
    if (need_running || update_running) {
        if (!a->running_mean || !a->running_var)
            return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: %s needs both running_mean and running_var", prefix, op,
                             need_running ? "inference" : "updating the running statistics");
        CNN_TRY(cnn_op_check_vec(a->running_mean, c, prefix, op, "running_mean"));
        CNN_TRY(cnn_op_check_vec(a->running_var, c, prefix, op, "running_var"));
    }
    if (a->training) {
        if (backward && (!a->save_mean || !a->save_invstd))
            return cnn_error(CNN_ERR_INVALID_ARG,
                             "%s%s: training-mode backward needs save_mean and save_invstd from the forward", prefix,
                             op);
        if (a->save_mean) CNN_TRY(cnn_op_check_vec(a->save_mean, c, prefix, op, "save_mean"));
        if (a->save_invstd) CNN_TRY(cnn_op_check_vec(a->save_invstd, c, prefix, op, "save_invstd"));
    }
    CNN_TRY(cnn_op_check_act(a->act, a->act_alpha, 1, prefix, op));
    if (!backward || a->act != CNN_ACT_NONE) CNN_TRY(cnn_op_check_like(a->y, a->x, prefix, op, "y", "x"));
    if (!backward) {
        if (a->residual) CNN_TRY(cnn_op_check_like(a->residual, a->x, prefix, op, "residual", "x"));
        if (a->training && !(a->momentum >= 0.0f && a->momentum <= 1.0f))
            return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: momentum %g must be in [0, 1]", prefix, op,
                             (double)a->momentum);
    } else {
        CNN_TRY(cnn_op_check_like(a->dy, a->x, prefix, op, "dy", "x"));
        if (a->dx) CNN_TRY(cnn_op_check_like(a->dx, a->x, prefix, op, "dx", "x"));
        if (a->dresidual) CNN_TRY(cnn_op_check_like(a->dresidual, a->x, prefix, op, "dresidual", "x"));
        if (a->dgamma) CNN_TRY(cnn_op_check_vec(a->dgamma, c, prefix, op, "dgamma"));
        if (a->dbeta) CNN_TRY(cnn_op_check_vec(a->dbeta, c, prefix, op, "dbeta"));
    }
    *m_out = m;
    *c_out = c;
fail:
    return st;
}

cnn_status cnn_concat_check(const cnn_concat_args *a, int backward, const char *prefix, const char *op,
                            int64_t *channels, int64_t *rows)
{
    char s1[CNN_OP_SHAPE_BUF], s2[CNN_OP_SHAPE_BUF];
    if (a->n < 1 || a->n > CNN_CONCAT_MAX)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: n = %d inputs; it must be in [1, %d]", prefix, op, a->n,
                         CNN_CONCAT_MAX);
    const cnn_tensor *whole = backward ? a->dy : a->y;
    const char *whole_name = backward ? "dy" : "y";
    if (!whole) return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: %s is missing", prefix, op, whole_name);
    int64_t total = 0;
    for (int i = 0; i < a->n; i++) {
        const int is_dx = backward && a->dxs[i];
        const cnn_tensor *t = is_dx ? a->dxs[i] : a->xs[i];
        if (!t) {
            if (backward)
                return cnn_error(CNN_ERR_INVALID_ARG,
                                 "%s%s: dxs[%d] and xs[%d] are both NULL: the width of part %d is unknown", prefix,
                                 op, i, i, i);
            return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: xs[%d] is missing", prefix, op, i);
        }
        int same = t->ndim == whole->ndim;
        for (int d = 0; same && d + 1 < t->ndim; d++) same = t->shape[d] == whole->shape[d];
        if (!same)
            return cnn_error(CNN_ERR_SHAPE, "%s%s: %s[%d] %s must match %s %s in every dim but the last", prefix, op,
                             is_dx ? "dxs" : "xs", i, cnn_op_shape_str(t, s1, sizeof s1), whole_name,
                             cnn_op_shape_str(whole, s2, sizeof s2));
        channels[i] = t->shape[t->ndim - 1];
        total += channels[i];
    }
    if (total != whole->shape[whole->ndim - 1])
        return cnn_error(CNN_ERR_SHAPE, "%s%s: %s %s has %lld channels, but the parts have %lld together", prefix, op,
                         whole_name, cnn_op_shape_str(whole, s1, sizeof s1),
                         (long long)whole->shape[whole->ndim - 1], (long long)total);
    *rows = total ? cnn_tensor_numel(whole) / total : 0;
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// multi-tensor optimizer updates: one set of hyperparameters for the whole list

typedef struct cnn_op_hyper_field {
    const char *name;
    size_t offset;
    int is_int; /* else float */
} cnn_op_hyper_field;

#define CNN_OP_FLOAT(type, field) {#field, offsetof(type, field), 0}
#define CNN_OP_INT(type, field) {#field, offsetof(type, field), 1}

static const cnn_op_hyper_field cnn_op_sgd_fields[] = {
    CNN_OP_FLOAT(cnn_sgd_args, lr),           CNN_OP_FLOAT(cnn_sgd_args, momentum),
    CNN_OP_FLOAT(cnn_sgd_args, weight_decay), CNN_OP_INT(cnn_sgd_args, nesterov),
    CNN_OP_FLOAT(cnn_sgd_args, grad_scale),
};

static const cnn_op_hyper_field cnn_op_adam_fields[] = {
    CNN_OP_FLOAT(cnn_adam_args, lr),           CNN_OP_FLOAT(cnn_adam_args, beta1),
    CNN_OP_FLOAT(cnn_adam_args, beta2),        CNN_OP_FLOAT(cnn_adam_args, eps),
    CNN_OP_FLOAT(cnn_adam_args, weight_decay), CNN_OP_INT(cnn_adam_args, decoupled),
    CNN_OP_FLOAT(cnn_adam_args, bias_correction1), CNN_OP_FLOAT(cnn_adam_args, bias_correction2),
    CNN_OP_FLOAT(cnn_adam_args, grad_scale),
};

static const cnn_op_hyper_field cnn_op_rmsprop_fields[] = {
    CNN_OP_FLOAT(cnn_rmsprop_args, lr),       CNN_OP_FLOAT(cnn_rmsprop_args, rho),
    CNN_OP_FLOAT(cnn_rmsprop_args, eps),      CNN_OP_FLOAT(cnn_rmsprop_args, momentum),
    CNN_OP_FLOAT(cnn_rmsprop_args, weight_decay), CNN_OP_FLOAT(cnn_rmsprop_args, grad_scale),
};

#define CNN_OP_COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* list[i] (elements `size` bytes apart) against list[0], field by field; bits, so that a NaN equals itself */
static cnn_status cnn_op_multi_check(const void *list, size_t size, int n, const cnn_op_hyper_field *fields,
                                     int nfields, const char *prefix, const char *op, int *failed)
{
    *failed = -1;
    if (!list) return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: list is NULL", prefix, op);
    if (n < 1) return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: n is %d; a list has at least 1 element", prefix, op, n);
    const unsigned char *first = list;
    for (int i = 1; i < n; i++) {
        const unsigned char *el = first + (size_t)i * size;
        for (int f = 0; f < nfields; f++) {
            const size_t at = fields[f].offset, bytes = fields[f].is_int ? sizeof(int) : sizeof(float);
            if (memcmp(el + at, first + at, bytes) == 0) continue;
            *failed = i;
            if (fields[f].is_int) {
                int want, got;
                memcpy(&want, first + at, sizeof want);
                memcpy(&got, el + at, sizeof got);
                return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: list[%d].%s is %d but list[0].%s is %d; the elements "
                                 "of one call share their hyperparameters", prefix, op, i, fields[f].name, got,
                                 fields[f].name, want);
            }
            float want, got;
            char want_s[32], got_s[32];
            memcpy(&want, first + at, sizeof want);
            memcpy(&got, el + at, sizeof got);
            /* short numbers, unless they hide the difference (9 significant digits tell every float apart) */
            snprintf(want_s, sizeof want_s, "%g", (double)want);
            snprintf(got_s, sizeof got_s, "%g", (double)got);
            if (!strcmp(want_s, got_s)) {
                snprintf(want_s, sizeof want_s, "%.9g", (double)want);
                snprintf(got_s, sizeof got_s, "%.9g", (double)got);
            }
            return cnn_error(CNN_ERR_INVALID_ARG, "%s%s: list[%d].%s is %s but list[0].%s is %s; the elements of "
                             "one call share their hyperparameters", prefix, op, i, fields[f].name, got_s,
                             fields[f].name, want_s);
        }
    }
    return CNN_OK;
}

cnn_status cnn_sgd_multi_check(const cnn_sgd_args *list, int n, const char *prefix, const char *op, int *failed)
{
    return cnn_op_multi_check(list, sizeof *list, n, cnn_op_sgd_fields, CNN_OP_COUNT_OF(cnn_op_sgd_fields), prefix,
                              op, failed);
}

cnn_status cnn_adam_multi_check(const cnn_adam_args *list, int n, const char *prefix, const char *op, int *failed)
{
    return cnn_op_multi_check(list, sizeof *list, n, cnn_op_adam_fields, CNN_OP_COUNT_OF(cnn_op_adam_fields), prefix,
                              op, failed);
}

cnn_status cnn_rmsprop_multi_check(const cnn_rmsprop_args *list, int n, const char *prefix, const char *op,
                                   int *failed)
{
    return cnn_op_multi_check(list, sizeof *list, n, cnn_op_rmsprop_fields, CNN_OP_COUNT_OF(cnn_op_rmsprop_fields),
                              prefix, op, failed);
}

// ---------------------------------------------------------------------------------------------------------------
// sizes of calls already checked (the backends' side of the dispatch layer): what the checks above fill in

void cnn_conv2d_sizes_of(const cnn_conv2d_args *a, int dir, cnn_conv2d_sizes *s)
{
    const cnn_tensor *xt = dir == CNN_OP_BWD_DATA ? a->dx : a->x;
    const cnn_tensor *wt = dir == CNN_OP_BWD_WEIGHTS ? a->dw : a->w;
    memset(s, 0, sizeof *s); /* padding too: the backends memcmp their plan keys */
    s->n = xt->shape[0];
    s->h = xt->shape[1];
    s->w = xt->shape[2];
    s->c = xt->shape[3];
    s->o = wt->shape[0];
    s->kh = wt->shape[1];
    s->kw = wt->shape[2];
    s->oh = cnn_window_out(s->h, (int)s->kh, a->stride_h, a->pad_top, a->pad_bottom, a->dilation_h);
    s->ow = cnn_window_out(s->w, (int)s->kw, a->stride_w, a->pad_left, a->pad_right, a->dilation_w);
    s->stride_h = a->stride_h;
    s->stride_w = a->stride_w;
    s->pad_top = a->pad_top;
    s->pad_left = a->pad_left;
    s->pad_bottom = a->pad_bottom;
    s->pad_right = a->pad_right;
    s->dilation_h = a->dilation_h;
    s->dilation_w = a->dilation_w;
    s->groups = a->groups;
}

void cnn_pool2d_sizes_of(const cnn_pool2d_args *a, int backward, cnn_pool2d_sizes *s)
{
    const cnn_tensor *xt = backward ? a->dx : a->x;
    memset(s, 0, sizeof *s);
    s->n = xt->shape[0];
    s->h = xt->shape[1];
    s->w = xt->shape[2];
    s->c = xt->shape[3];
    s->oh = cnn_window_out(s->h, a->kernel_h, a->stride_h, a->pad_top, a->pad_bottom, 1);
    s->ow = cnn_window_out(s->w, a->kernel_w, a->stride_w, a->pad_left, a->pad_right, 1);
    s->mode = a->mode;
    s->kernel_h = a->kernel_h;
    s->kernel_w = a->kernel_w;
    s->stride_h = a->stride_h;
    s->stride_w = a->stride_w;
    s->pad_top = a->pad_top;
    s->pad_left = a->pad_left;
    s->pad_bottom = a->pad_bottom;
    s->pad_right = a->pad_right;
}

void cnn_dense_sizes_of(const cnn_dense_args *a, int dir, cnn_dense_sizes *s)
{
    const cnn_tensor *xt = dir == CNN_OP_BWD_DATA ? a->dx : a->x;
    const cnn_tensor *wt = dir == CNN_OP_BWD_WEIGHTS ? a->dw : a->w;
    memset(s, 0, sizeof *s);
    s->n = xt->shape[0];
    s->in = 1;
    for (int i = 1; i < xt->ndim; i++) s->in *= xt->shape[i];
    s->out = wt->shape[0];
}

void cnn_batchnorm_dims(const cnn_batchnorm_args *a, int64_t *m, int64_t *c)
{
    *c = a->x->shape[a->x->ndim - 1];
    *m = cnn_tensor_numel(a->x) / *c;
}

void cnn_concat_parts(const cnn_concat_args *a, int backward, int64_t *channels, int64_t *rows)
{
    const cnn_tensor *whole = backward ? a->dy : a->y;
    int64_t total = 0;
    for (int i = 0; i < a->n; i++) {
        const cnn_tensor *t = backward && a->dxs[i] ? a->dxs[i] : a->xs[i];
        channels[i] = t->shape[t->ndim - 1];
        total += channels[i];
    }
    *rows = total ? cnn_tensor_numel(whole) / total : 0;
}
