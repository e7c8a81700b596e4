/* 2-D max and average pooling on the GPU, NHWC: cuDNN where it can describe the window, our kernels where not.
 *
 * cuDNN's pooling descriptor pads symmetrically; SAME padding is asymmetric whenever the window overhangs by an
 * odd amount (pad_bottom = pad_top + 1). Those windows run on our kernels (kernels.cu), which take any padding
 * (explicit padding would not do: a padded zero could win a max or count in an average). The two paths agree on
 * the semantics, which are the CPU backend's:
 * - max: padding never wins (cuDNN: CUDNN_POOLING_MAX_DETERMINISTIC; ours: first maximum in window order);
 * - average: over the real (non-padding) elements of each window (CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING,
 *   PyTorch's count_include_pad=False).
 *
 * 16-bit (F16, BF16) data goes to cuDNN too; should cuDNN refuse it, the plan entry falls back to our kernels
 * (which compute in float) for good.
 *
 * Max-pool backward recomputes which element won from the forward's input x and output y. The layer passes both;
 * a caller that does not gets the ones of the most recent training forward through the same plan, as the CPU
 * backend keeps its argmax there. */
#include <stdlib.h>
#include <string.h>

#include "core/op_check.h"
#include "cuda/cuda_util.h"
#include "cuda/ops.h"

typedef struct cnn_cuda_pool_key {
    cnn_pool2d_sizes s; /* the sizes and parameters that cnn_pool2d_check fills in */
    int32_t dtype;
} cnn_cuda_pool_key;

typedef struct cnn_cuda_pool_entry {
    cnn_cuda_pool_key key;
    int ready;
    int use_cudnn; /* 0: our kernels (asymmetric padding) */
    cnn_cuda_window g;
    cudnnTensorDescriptor_t xd, yd;
    cudnnPoolingDescriptor_t pd;
} cnn_cuda_pool_entry;

static const float cnn_cuda_one = 1.0f, cnn_cuda_zero = 0.0f;

static void cnn_cuda_pool_entry_destroy(void *p)
{
    cnn_cuda_pool_entry *e = p;
    if (e->xd) cudnnDestroyTensorDescriptor(e->xd);
    if (e->yd) cudnnDestroyTensorDescriptor(e->yd);
    if (e->pd) cudnnDestroyPoolingDescriptor(e->pd);
    free(e);
}

/* the key of a call core/ops.c has checked */
static void cnn_cuda_pool_key_of(const cnn_pool2d_args *a, int backward, cnn_cuda_pool_key *k)
{
    memset(k, 0, sizeof *k);
    cnn_pool2d_sizes_of(a, backward, &k->s);
    k->dtype = (backward ? a->dx : a->x)->dtype;
}

static cnn_status cnn_cuda_pool_prepare(cnn_cuda_pool_entry *e, const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_cuda_pool_key *k = &e->key;
    if (e->ready) return CNN_OK;
    e->g = (cnn_cuda_window){.n = k->s.n, .h = k->s.h, .w = k->s.w, .c = k->s.c, .oh = k->s.oh, .ow = k->s.ow,
                             .kh = k->s.kernel_h, .kw = k->s.kernel_w, .sh = k->s.stride_h, .sw = k->s.stride_w,
                             .pad_top = k->s.pad_top, .pad_left = k->s.pad_left,
                             .pad_bottom = k->s.pad_bottom, .pad_right = k->s.pad_right};
    /* cuDNN's legacy descriptors count in int */
    e->use_cudnn = k->s.pad_top == k->s.pad_bottom && k->s.pad_left == k->s.pad_right &&
                   k->s.n * k->s.h * k->s.w * k->s.c <= INT32_MAX;
    if (e->use_cudnn) {
        /* an entry whose preparation failed half-way is prepared again: keep what was made */
        if (!e->xd) CNN_CUDA_DNN(op, cudnnCreateTensorDescriptor, &e->xd);
        if (!e->yd) CNN_CUDA_DNN(op, cudnnCreateTensorDescriptor, &e->yd);
        if (!e->pd) CNN_CUDA_DNN(op, cudnnCreatePoolingDescriptor, &e->pd);
        const cudnnDataType_t dt = cnn_cuda_dnn_type((cnn_dtype)k->dtype);
        CNN_CUDA_DNN(op, cudnnSetTensor4dDescriptor, e->xd, CUDNN_TENSOR_NHWC, dt, (int)k->s.n, (int)k->s.c,
                     (int)k->s.h, (int)k->s.w);
        CNN_CUDA_DNN(op, cudnnSetTensor4dDescriptor, e->yd, CUDNN_TENSOR_NHWC, dt, (int)k->s.n, (int)k->s.c,
                     (int)k->s.oh, (int)k->s.ow);
        /* NaN propagates: a NaN input should surface, not be skipped by the max */
        CNN_CUDA_DNN(op, cudnnSetPooling2dDescriptor, e->pd,
                     k->s.mode == CNN_POOL_MAX ? CUDNN_POOLING_MAX_DETERMINISTIC
                                               : CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING,
                     CUDNN_PROPAGATE_NAN, k->s.kernel_h, k->s.kernel_w, k->s.pad_top, k->s.pad_left, k->s.stride_h,
                     k->s.stride_w);
        int dn = 0, dc = 0, dh = 0, dw = 0;
        CNN_CUDA_DNN(op, cudnnGetPooling2dForwardOutputDim, e->pd, e->xd, &dn, &dc, &dh, &dw);
        /* cuDNN rounds the output size down, as we do; should it ever disagree, our kernels take the window */
        if (dn != k->s.n || dc != k->s.c || dh != k->s.oh || dw != k->s.ow) e->use_cudnn = 0;
    }
    e->ready = 1;
fail:
    return st;
}

static cnn_status cnn_cuda_pool_entry_get(cnn_backend *b, const cnn_pool2d_args *a, int backward, cnn_plan **slot,
                                          cnn_cuda_ctx **ctx, cnn_cuda_pool_entry **out, const char *op)
{
    cnn_status st = CNN_OK;
    cnn_cuda_pool_key key;
    void *e = NULL;
    cnn_cuda_pool_key_of(a, backward, &key);
    CNN_TRY(cnn_cuda_enter(b, ctx, op));
    CNN_TRY(cnn_plan_entry(slot, CNN_PLAN_POOL, CNN_CUDA_PLAN_SLOTS, &key, sizeof key,
                           sizeof(cnn_cuda_pool_entry), cnn_cuda_pool_entry_destroy, &e, op));
    CNN_TRY(cnn_cuda_pool_prepare(e, op));
    *out = e;
fail:
    return st;
}

cnn_status cnn_cuda_pool2d_forward(cnn_backend *b, const cnn_pool2d_args *a)
{
    static const char *op = "pool2d_forward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_plan *tmp = NULL;
    cnn_plan **slot = a && a->plan ? a->plan : &tmp;
    cnn_cuda_pool_entry *e = NULL;
    CNN_TRY(cnn_cuda_pool_entry_get(b, a, 0, slot, &ctx, &e, op));

    /* from here on, what an earlier forward left for backward is stale */
    (*slot)->last_forward = NULL;
    if (e->use_cudnn) {
        cudnnStatus_t ds = cudnnPoolingForward(ctx->cudnn, e->pd, &cnn_cuda_one, e->xd, a->x->data, &cnn_cuda_zero,
                                               e->yd, a->y->data);
        /* a cuDNN that refuses 16-bit pooling for this window: our kernels take it from now on */
        if (ds != CUDNN_STATUS_SUCCESS && e->key.dtype != CNN_F32) e->use_cudnn = 0;
        else CNN_TRY(cnn_cuda_dnn_status(ds, op, "cudnnPoolingForward"));
    }
    if (!e->use_cudnn)
        CNN_CUDA_RT(op, cnn_cuda_launch_pool_forward, ctx->compute, (cnn_pool_mode)e->key.s.mode, a->x->data,
                    a->y->data, e->key.dtype, &e->g);
    if (a->training) {
        (*slot)->last_forward = e;
        (*slot)->last_x = a->x->data;
        (*slot)->last_y = a->y->data;
    }
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}

cnn_status cnn_cuda_pool2d_backward(cnn_backend *b, const cnn_pool2d_args *a)
{
    static const char *op = "pool2d_backward";
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_plan *tmp = NULL;
    cnn_plan **slot = a && a->plan ? a->plan : &tmp;
    cnn_cuda_pool_entry *e = NULL;
    char s1[CNN_OP_SHAPE_BUF];
    CNN_TRY(cnn_cuda_pool_entry_get(b, a, 1, slot, &ctx, &e, op));

    /* the forward's input and output: given, or remembered from the last training forward */
    const void *x = NULL, *y = NULL;
    if (a->x && a->y) {
        x = a->x->data;
        y = a->y->data;
    } else if ((*slot)->last_forward == e) {
        x = (*slot)->last_x;
        y = (*slot)->last_y;
    }
    const int is_max = e->key.s.mode == CNN_POOL_MAX;
    if (is_max && !x) {
        st = cnn_error(CNN_ERR_INVALID_ARG,
                       "cuda %s: max-pool backward for dx %s needs the forward's x and y, or a training forward "
                       "(training = 1) of the same shapes as the last forward through this plan; there was none",
                       op, cnn_op_shape_str(a->dx, s1, sizeof s1));
        goto fail;
    }
    int done = 0;
    if (e->use_cudnn && x) {
        cudnnStatus_t ds = cudnnPoolingBackward(ctx->cudnn, e->pd, &cnn_cuda_one, e->yd, y, e->yd, a->dy->data, e->xd,
                                                x, &cnn_cuda_zero, e->xd, a->dx->data);
        if (ds != CUDNN_STATUS_SUCCESS && e->key.dtype != CNN_F32) e->use_cudnn = 0;
        else CNN_TRY(cnn_cuda_dnn_status(ds, op, "cudnnPoolingBackward"));
        done = e->use_cudnn;
    }
    if (!done) {
        /* our kernels; average pooling needs neither x nor y */
        CNN_CUDA_RT(op, cnn_cuda_launch_pool_backward, ctx->compute, (cnn_pool_mode)e->key.s.mode, x, a->dy->data,
                    a->dx->data, e->key.dtype, &e->g);
    }
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}
