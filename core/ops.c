/* The dispatch layer (see ops.h): one function per entry of the backend table, which checks the call once and
 * then hands it to the backend. docs/ARCHITECTURE.md, "The dispatch layer". */
#include "core/ops.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/op_check.h"

/* "sgd_update_multi list[12] on cuda" */
#define CNN_OPS_NAME_BUF 80

/* "<entry> on <backend>": what every message of a call starts with */
static const char *cnn_ops_name(const cnn_backend *b, const char *entry, char *buf)
{
    snprintf(buf, CNN_OPS_NAME_BUF, "%s on %s", entry, b->ops->name);
    return buf;
}

/* The backend is there and has the entry (`has`). */
static cnn_status cnn_ops_entry(const cnn_backend *b, int has, const char *entry)
{
    if (!b) return cnn_error(CNN_ERR_INVALID_ARG, "%s: the backend is NULL", entry);
    if (!has) return cnn_backend_lacks(b, entry);
    return CNN_OK;
}

/* the prologue of an op with an args struct: backend, entry, args; `op` receives the name for the messages */
#define CNN_OPS_BEGIN(b, entry, args, op)                                                         \
    do {                                                                                          \
        CNN_TRY(cnn_ops_entry((b), (b) && (b)->ops->entry != NULL, #entry));                      \
        cnn_ops_name((b), #entry, (op));                                                          \
        if (!(args)) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", (op));             \
    } while (0)

/* cnn_op_<entry>(b, a) for an entry whose arguments come in one struct: the backend has the entry, `a` is there,
 * check(b, a, dir, op) passes; then the backend runs the call. */
#define CNN_OPS_DISPATCH(entry, args_type, check, dir)             \
    cnn_status cnn_op_##entry(cnn_backend *b, const args_type *a) \
    {                                                             \
        cnn_status st = CNN_OK;                                   \
        char op[CNN_OPS_NAME_BUF];                                \
        CNN_OPS_BEGIN(b, entry, a, op);                           \
        CNN_TRY(check(b, a, dir, op));                            \
        st = b->ops->entry(b, a);                                 \
    fail:                                                         \
        return st;                                                \
    }

// ---------------------------------------------------------------------------------------------------------------
// tensors

/* present, on this backend, a rank in [1, CNN_MAX_DIMS], data when it has elements (any dtype) */
static cnn_status cnn_ops_tensor(const cnn_backend *b, const cnn_tensor *t, const char *op, const char *name)
{
    if (!t) return cnn_error(CNN_ERR_INVALID_ARG, "%s: %s is missing", op, name);
    if (t->backend ? t->backend->ops != b->ops : !b->ops->host_memory)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: %s lives on backend '%s', not on %s (copy it first)", op, name,
                         t->backend ? t->backend->name : "(none)", b->name);
    if (t->ndim < 1 || t->ndim > CNN_MAX_DIMS) return cnn_error(CNN_ERR_SHAPE, "%s: %s has rank %d", op, name, t->ndim);
    if (!t->data && cnn_tensor_numel(t) > 0) return cnn_error(CNN_ERR_INVALID_ARG, "%s: %s has no data", op, name);
    return CNN_OK;
}

static cnn_status cnn_ops_f32(const cnn_backend *b, const cnn_tensor *t, const char *op, const char *name)
{
    cnn_status st = cnn_ops_tensor(b, t, op, name);
    if (st == CNN_OK && t->dtype != CNN_F32)
        st = cnn_error(CNN_ERR_UNSUPPORTED, "%s: %s has dtype %s; it must be F32", op, name, cnn_dtype_name(t->dtype));
    return st;
}

static int cnn_ops_is_float(const cnn_backend *b, cnn_dtype dt)
{
    return (unsigned)dt < 32u && (b->ops->float_dtypes >> (unsigned)dt & 1u);
}

/* "F32 only", "F32, F16 or BF16": the backend's compute dtypes */
static const char *cnn_ops_float_names(const cnn_backend *b, char *buf, size_t size)
{
    const cnn_dtype order[] = {CNN_F32, CNN_F16, CNN_BF16};
    int count = 0, seen = 0;
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) count += cnn_ops_is_float(b, order[i]);
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof order / sizeof order[0] && len < size; i++) {
        if (!cnn_ops_is_float(b, order[i])) continue;
        seen++;
        const char *sep = seen == 1 ? "" : seen == count ? " or " : ", ";
        len += (size_t)snprintf(buf + len, size - len, "%s%s", sep, cnn_dtype_name(order[i]));
    }
    if (count == 1 && len < size) snprintf(buf + len, size - len, " only");
    return buf;
}

/* an activation-like tensor: in one of the backend's compute dtypes */
static cnn_status cnn_ops_float(const cnn_backend *b, const cnn_tensor *t, const char *op, const char *name)
{
    cnn_status st = cnn_ops_tensor(b, t, op, name);
    if (st != CNN_OK || cnn_ops_is_float(b, t->dtype)) return st;
    char dts[48];
    return cnn_error(CNN_ERR_UNSUPPORTED, "%s: %s has dtype %s; the %s backend computes this op in %s", op, name,
                     cnn_dtype_name(t->dtype), b->ops->name, cnn_ops_float_names(b, dts, sizeof dts));
}

static cnn_status cnn_ops_dtype(const cnn_tensor *t, cnn_dtype dt, const char *op, const char *name,
                                const char *ref_name)
{
    if (t->dtype == dt) return CNN_OK;
    return cnn_error(CNN_ERR_INVALID_ARG, "%s: %s has dtype %s but %s has %s; they must agree", op, name,
                     cnn_dtype_name(t->dtype), ref_name, cnn_dtype_name(dt));
}

static cnn_status cnn_ops_count(const cnn_tensor *t, const cnn_tensor *ref, const char *op, const char *name,
                                const char *ref_name)
{
    if (cnn_tensor_numel(t) == cnn_tensor_numel(ref)) return CNN_OK;
    char s1[CNN_OP_SHAPE_BUF], s2[CNN_OP_SHAPE_BUF];
    return cnn_error(CNN_ERR_SHAPE, "%s: %s %s must have as many elements as %s %s", op, name,
                     cnn_op_shape_str(t, s1, sizeof s1), ref_name, cnn_op_shape_str(ref, s2, sizeof s2));
}

/* a float tensor with ref's dtype and element count */
static cnn_status cnn_ops_like(const cnn_backend *b, const cnn_tensor *t, const cnn_tensor *ref, const char *op,
                               const char *name, const char *ref_name)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_float(b, t, op, name));
    CNN_TRY(cnn_ops_dtype(t, ref->dtype, op, name, ref_name));
    CNN_TRY(cnn_ops_count(t, ref, op, name, ref_name));
fail:
    return st;
}

/* an F32 tensor with ref's element count (optimizer state, master weights) */
static cnn_status cnn_ops_state(const cnn_backend *b, const cnn_tensor *t, const cnn_tensor *ref, const char *op,
                                const char *name, const char *ref_name)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_f32(b, t, op, name));
    CNN_TRY(cnn_ops_count(t, ref, op, name, ref_name));
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// memory

int cnn_op_has(const cnn_backend *b, const char *entry)
{
    if (!b || !entry) return 0;
    const cnn_backend_ops *o = b->ops;
    /* the optional entries */
    if (!strcmp(entry, "write_async")) return o->write_async != NULL;
    if (!strcmp(entry, "host_alloc")) return o->host_alloc != NULL && o->host_free != NULL;
    if (!strcmp(entry, "set_precision")) return o->set_precision != NULL;
    if (!strcmp(entry, "cast")) return o->cast != NULL;
    if (!strcmp(entry, "nonfinite")) return o->nonfinite != NULL;
    if (!strcmp(entry, "set_deterministic")) return o->set_deterministic != NULL;
    if (!strcmp(entry, "qconv_s32")) return o->qconv_s32 != NULL;
    if (!strcmp(entry, "qprog_create")) return o->qprog_create != NULL;
    if (!strcmp(entry, "sgd_update_multi")) return o->sgd_update_multi != NULL;
    if (!strcmp(entry, "adam_update_multi")) return o->adam_update_multi != NULL;
    if (!strcmp(entry, "rmsprop_update_multi")) return o->rmsprop_update_multi != NULL;
    if (!strcmp(entry, "sum_squares_multi")) return o->sum_squares_multi != NULL;
    if (!strcmp(entry, "sum_squares")) return o->sum_squares != NULL;
    if (!strcmp(entry, "scale")) return o->scale != NULL;
    if (!strcmp(entry, "rmsprop_update")) return o->rmsprop_update != NULL;
    if (!strcmp(entry, "add")) return o->add != NULL;
    return 0;
}

cnn_status cnn_op_alloc(cnn_backend *b, size_t bytes, void **ptr)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_entry(b, b && b->ops->alloc, "alloc"));
    if (!ptr) return cnn_error(CNN_ERR_INVALID_ARG, "alloc on %s: ptr is NULL", b->ops->name);
    st = b->ops->alloc(b, bytes, ptr);
fail:
    return st;
}

void cnn_op_free(cnn_backend *b, void *ptr)
{
    if (b && ptr) b->ops->free(b, ptr);
}

/* a transfer between host memory and t: t on this backend (this very device, for a device's memory), `bytes` its
 * size, buffers where there are bytes */
static cnn_status cnn_ops_transfer(const cnn_backend *b, const cnn_tensor *t, const void *host, size_t bytes,
                                   const char *op)
{
    if (!t) return cnn_error(CNN_ERR_INVALID_ARG, "%s: tensor is missing", op);
    if (b->ops->host_memory ? t->backend && t->backend->ops != b->ops : t->backend != b)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: the tensor lives on backend '%s', not '%s'", op,
                         t->backend ? t->backend->name : "(none)", b->name);
    if (bytes != cnn_tensor_bytes(t))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: %zu bytes given for a tensor of %zu", op, bytes,
                         cnn_tensor_bytes(t));
    if (bytes && (!host || !t->data)) return cnn_error(CNN_ERR_INVALID_ARG, "%s: NULL buffer", op);
    return CNN_OK;
}

cnn_status cnn_op_write(cnn_backend *b, cnn_tensor *dst, const void *host, size_t bytes)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    CNN_TRY(cnn_ops_entry(b, b && b->ops->write, "write"));
    CNN_TRY(cnn_ops_transfer(b, dst, host, bytes, cnn_ops_name(b, "write", op)));
    if (bytes) st = b->ops->write(b, dst, host, bytes); /* nothing to do, nothing to wait for */
fail:
    return st;
}

cnn_status cnn_op_read(cnn_backend *b, const cnn_tensor *src, void *host, size_t bytes)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    CNN_TRY(cnn_ops_entry(b, b && b->ops->read, "read"));
    CNN_TRY(cnn_ops_transfer(b, src, host, bytes, cnn_ops_name(b, "read", op)));
    st = b->ops->read(b, src, host, bytes);
fail:
    return st;
}

cnn_status cnn_op_copy(cnn_backend *b, cnn_tensor *dst, const cnn_tensor *src)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF], s1[CNN_OP_SHAPE_BUF], s2[CNN_OP_SHAPE_BUF];
    CNN_TRY(cnn_ops_entry(b, b && b->ops->copy, "copy"));
    cnn_ops_name(b, "copy", op);
    CNN_TRY(cnn_ops_tensor(b, src, op, "src"));
    CNN_TRY(cnn_ops_tensor(b, dst, op, "dst"));
    if (dst->dtype != src->dtype)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: dtypes differ (%s to %s)", op, cnn_dtype_name(src->dtype),
                         cnn_dtype_name(dst->dtype));
    if (cnn_tensor_numel(dst) != cnn_tensor_numel(src))
        return cnn_error(CNN_ERR_SHAPE, "%s: element counts differ (%s to %s)", op,
                         cnn_op_shape_str(src, s1, sizeof s1), cnn_op_shape_str(dst, s2, sizeof s2));
    st = b->ops->copy(b, dst, src);
fail:
    return st;
}

cnn_status cnn_op_fill(cnn_backend *b, cnn_tensor *t, float value)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    CNN_TRY(cnn_ops_entry(b, b && b->ops->fill, "fill"));
    cnn_ops_name(b, "fill", op);
    CNN_TRY(cnn_ops_tensor(b, t, op, "tensor"));
    /* all-zero bytes are 0 in every dtype; other values need a float dtype */
    if (!(value == 0.0f && !signbit(value)) && !cnn_ops_is_float(b, t->dtype))
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: filling a %s tensor with %g is not supported (only zero)", op,
                         cnn_dtype_name(t->dtype), (double)value);
    st = b->ops->fill(b, t, value);
fail:
    return st;
}

cnn_status cnn_op_sync(cnn_backend *b)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_entry(b, b && b->ops->sync, "sync"));
    st = b->ops->sync(b);
fail:
    return st;
}

void cnn_op_plan_destroy(cnn_backend *b, cnn_plan *plan)
{
    if (b && plan) b->ops->plan_destroy(b, plan);
}

void cnn_op_destroy(cnn_backend *b)
{
    if (b) b->ops->destroy(b);
}

cnn_status cnn_op_host_alloc(cnn_backend *b, size_t bytes, void **ptr)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_entry(b, cnn_op_has(b, "host_alloc"), "host_alloc"));
    if (!ptr) return cnn_error(CNN_ERR_INVALID_ARG, "host_alloc on %s: ptr is NULL", b->ops->name);
    st = b->ops->host_alloc(b, bytes, ptr);
fail:
    return st;
}

void cnn_op_host_free(cnn_backend *b, void *ptr)
{
    if (b && ptr && b->ops->host_free) b->ops->host_free(b, ptr);
}

cnn_status cnn_op_write_async(cnn_backend *b, cnn_tensor *dst, const void *host, size_t bytes)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    CNN_TRY(cnn_ops_entry(b, b && b->ops->write_async, "write_async"));
    CNN_TRY(cnn_ops_transfer(b, dst, host, bytes, cnn_ops_name(b, "write_async", op)));
    if (bytes) st = b->ops->write_async(b, dst, host, bytes);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// convolution and dense: x-like, w-like and y-like of one float dtype, the bias F32

static cnn_status cnn_ops_operands(const cnn_backend *b, const cnn_tensor *const *ts, const char *const *names, int n,
                                   const char *op)
{
    cnn_status st = CNN_OK;
    for (int i = 0; i < 3; i++) CNN_TRY(cnn_ops_float(b, ts[i], op, names[i]));
    CNN_TRY(cnn_ops_dtype(ts[1], ts[0]->dtype, op, names[1], names[0]));
    CNN_TRY(cnn_ops_dtype(ts[2], ts[0]->dtype, op, names[2], names[0]));
    if (n > 3) CNN_TRY(cnn_ops_f32(b, ts[3], op, names[3]));
fail:
    return st;
}

/* cnn_ops_<kind> (conv2d, dense): the operands (cnn_<kind>_tensors), then the shapes and parameters */
#define CNN_OPS_WEIGHTED(kind)                                                                                 \
    static cnn_status cnn_ops_##kind(const cnn_backend *b, const cnn_##kind##_args *a, int dir, const char *op) \
    {                                                                                                          \
        const cnn_tensor *ts[CNN_OP_MAX_TENSORS] = {0};                                                        \
        const char *names[CNN_OP_MAX_TENSORS] = {0};                                                           \
        cnn_##kind##_sizes s;                                                                                  \
        cnn_status st = cnn_ops_operands(b, ts, names, cnn_##kind##_tensors(a, dir, ts, names), op);           \
        return st != CNN_OK ? st : cnn_##kind##_check(a, dir, "", op, &s);                                     \
    }

CNN_OPS_WEIGHTED(conv2d)
CNN_OPS_WEIGHTED(dense)

CNN_OPS_DISPATCH(conv2d_forward, cnn_conv2d_args, cnn_ops_conv2d, CNN_OP_FWD)
CNN_OPS_DISPATCH(conv2d_backward_data, cnn_conv2d_args, cnn_ops_conv2d, CNN_OP_BWD_DATA)
CNN_OPS_DISPATCH(conv2d_backward_filter, cnn_conv2d_args, cnn_ops_conv2d, CNN_OP_BWD_WEIGHTS)
CNN_OPS_DISPATCH(dense_forward, cnn_dense_args, cnn_ops_dense, CNN_OP_FWD)
CNN_OPS_DISPATCH(dense_backward_data, cnn_dense_args, cnn_ops_dense, CNN_OP_BWD_DATA)
CNN_OPS_DISPATCH(dense_backward_weights, cnn_dense_args, cnn_ops_dense, CNN_OP_BWD_WEIGHTS)

// ---------------------------------------------------------------------------------------------------------------
// pooling

static cnn_status cnn_ops_pool2d(const cnn_backend *b, const cnn_pool2d_args *a, int backward, const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_tensor *xt = backward ? a->dx : a->x, *yt = backward ? a->dy : a->y;
    const char *xn = backward ? "dx" : "x", *yn = backward ? "dy" : "y";
    cnn_pool2d_sizes s;
    CNN_TRY(cnn_ops_float(b, xt, op, xn));
    CNN_TRY(cnn_ops_float(b, yt, op, yn));
    CNN_TRY(cnn_ops_dtype(yt, xt->dtype, op, yn, xn));
    CNN_TRY(cnn_pool2d_check(a, backward, "", op, &s));
    if (backward && a->x && a->y) { /* the forward's input and output, which a backend may use */
        CNN_TRY(cnn_ops_float(b, a->x, op, "x"));
        CNN_TRY(cnn_ops_float(b, a->y, op, "y"));
        CNN_TRY(cnn_ops_dtype(a->x, a->dx->dtype, op, "x", "dx"));
        CNN_TRY(cnn_ops_dtype(a->y, a->dx->dtype, op, "y", "dx"));
        CNN_TRY(cnn_op_check_dims(a->x, 4, a->dx->shape, "", op, "x"));
        CNN_TRY(cnn_op_check_dims(a->y, 4, a->dy->shape, "", op, "y"));
    }
fail:
    return st;
}

CNN_OPS_DISPATCH(pool2d_forward, cnn_pool2d_args, cnn_ops_pool2d, 0)
CNN_OPS_DISPATCH(pool2d_backward, cnn_pool2d_args, cnn_ops_pool2d, 1)

// ---------------------------------------------------------------------------------------------------------------
// activations, dropout, add, scale, concat

static cnn_status cnn_ops_act(const cnn_backend *b, const cnn_act_args *a, int backward, const char *op)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_op_check_act(a->act, a->alpha, 0, "", op));
    if (!backward) {
        CNN_TRY(cnn_ops_float(b, a->x, op, "x"));
        CNN_TRY(cnn_ops_like(b, a->y, a->x, op, "y", "x"));
        return CNN_OK;
    }
    CNN_TRY(cnn_ops_float(b, a->dy, op, "dy"));
    CNN_TRY(cnn_ops_like(b, a->dx, a->dy, op, "dx", "dy"));
    if (a->act != CNN_ACT_NONE) {
        const int from_x = cnn_act_grad_needs_input(a->act);
        const cnn_tensor *xy = from_x ? a->x : a->y;
        if (!xy)
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: the gradient of %s needs %s", op, cnn_op_act_name(a->act),
                             from_x ? "the input x" : "the forward output y");
        CNN_TRY(cnn_ops_like(b, xy, a->dy, op, from_x ? "x" : "y", "dy"));
    }
fail:
    return st;
}

CNN_OPS_DISPATCH(act_forward, cnn_act_args, cnn_ops_act, 0)
CNN_OPS_DISPATCH(act_backward, cnn_act_args, cnn_ops_act, 1)

static cnn_status cnn_ops_dropout(const cnn_backend *b, const cnn_dropout_args *a, int backward, const char *op)
{
    cnn_status st = CNN_OK;
    if (!(a->rate >= 0.0f && a->rate < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: rate %g must be in [0, 1)", op, (double)a->rate);
    const cnn_tensor *in = backward ? a->dy : a->x, *out = backward ? a->dx : a->y;
    CNN_TRY(cnn_ops_float(b, in, op, backward ? "dy" : "x"));
    CNN_TRY(cnn_ops_like(b, out, in, op, backward ? "dx" : "y", backward ? "dy" : "x"));
fail:
    return st;
}

CNN_OPS_DISPATCH(dropout_forward, cnn_dropout_args, cnn_ops_dropout, 0)
CNN_OPS_DISPATCH(dropout_backward, cnn_dropout_args, cnn_ops_dropout, 1)

/* a, b and y may each have any of the backend's float dtypes (L2 penalties add f32 weights into 16-bit gradients) */
static cnn_status cnn_ops_add(const cnn_backend *b, const cnn_add_args *a, int dir, const char *op)
{
    cnn_status st = CNN_OK;
    (void)dir;
    CNN_TRY(cnn_ops_float(b, a->a, op, "a"));
    CNN_TRY(cnn_ops_float(b, a->b, op, "b"));
    CNN_TRY(cnn_ops_float(b, a->y, op, "y"));
    CNN_TRY(cnn_op_check_dims(a->b, a->a->ndim, a->a->shape, "", op, "b"));
    CNN_TRY(cnn_op_check_dims(a->y, a->a->ndim, a->a->shape, "", op, "y"));
fail:
    return st;
}

CNN_OPS_DISPATCH(add, cnn_add_args, cnn_ops_add, 0)

cnn_status cnn_op_scale(cnn_backend *b, cnn_tensor *x, float alpha)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    CNN_TRY(cnn_ops_entry(b, b && b->ops->scale, "scale"));
    cnn_ops_name(b, "scale", op);
    CNN_TRY(cnn_ops_float(b, x, op, "x"));
    st = b->ops->scale(b, x, alpha);
fail:
    return st;
}

/* the whole, the shapes (core/op_check.c), then the dtype of every part that is touched */
static cnn_status cnn_ops_concat(const cnn_backend *b, const cnn_concat_args *a, int backward, const char *op)
{
    cnn_status st = CNN_OK;
    char name[32];
    int64_t channels[CNN_CONCAT_MAX], rows = 0;
    const cnn_tensor *whole = backward ? a->dy : a->y;
    const char *whole_name = backward ? "dy" : "y";
    CNN_TRY(cnn_ops_float(b, whole, op, whole_name));
    CNN_TRY(cnn_concat_check(a, backward, "", op, channels, &rows));
    for (int i = 0; i < a->n; i++) {
        if (backward && !a->dxs[i]) continue;
        const cnn_tensor *part = backward ? a->dxs[i] : a->xs[i];
        snprintf(name, sizeof name, "%s[%d]", backward ? "dxs" : "xs", i);
        CNN_TRY(cnn_ops_float(b, part, op, name));
        CNN_TRY(cnn_ops_dtype(part, whole->dtype, op, name, whole_name));
    }
fail:
    return st;
}

CNN_OPS_DISPATCH(concat_forward, cnn_concat_args, cnn_ops_concat, 0)
CNN_OPS_DISPATCH(concat_backward, cnn_concat_args, cnn_ops_concat, 1)

// ---------------------------------------------------------------------------------------------------------------
// batch normalization: x, y, residual, dy, dx and dresidual of one float dtype, the per-channel tensors F32

static cnn_status cnn_ops_batchnorm(const cnn_backend *b, const cnn_batchnorm_args *a, int backward, const char *op)
{
    cnn_status st = CNN_OK;
    const cnn_tensor *ts[CNN_BATCHNORM_MAX_TENSORS];
    const char *names[CNN_BATCHNORM_MAX_TENSORS];
    int64_t m = 0, c = 0;
    const int n = cnn_batchnorm_tensors(a, backward, ts, names);
    CNN_TRY(cnn_ops_float(b, a->x, op, "x"));
    for (int i = 0; i < n; i++) {
        const char *nm = names[i];
        if (!strcmp(nm, "x") || !strcmp(nm, "y") || !strcmp(nm, "residual") || !strcmp(nm, "dy") ||
            !strcmp(nm, "dx") || !strcmp(nm, "dresidual")) {
            CNN_TRY(cnn_ops_float(b, ts[i], op, nm));
            CNN_TRY(cnn_ops_dtype(ts[i], a->x->dtype, op, nm, "x"));
        } else {
            CNN_TRY(cnn_ops_f32(b, ts[i], op, nm));
        }
    }
    CNN_TRY(cnn_batchnorm_check(a, backward, "", op, &m, &c));
fail:
    return st;
}

CNN_OPS_DISPATCH(batchnorm_forward, cnn_batchnorm_args, cnn_ops_batchnorm, 0)
CNN_OPS_DISPATCH(batchnorm_backward, cnn_batchnorm_args, cnn_ops_batchnorm, 1)

// ---------------------------------------------------------------------------------------------------------------
// softmax cross-entropy

/* the labels' range and the weights' values are data: the backend checks them where they live */
static cnn_status cnn_ops_softmax_xent(const cnn_backend *b, const cnn_softmax_xent_args *a, int dir, const char *op)
{
    cnn_status st = CNN_OK;
    char s1[CNN_OP_SHAPE_BUF], s2[CNN_OP_SHAPE_BUF];
    (void)dir;
    CNN_TRY(cnn_ops_float(b, a->logits, op, "logits"));
    if (a->logits->ndim != 2)
        return cnn_error(CNN_ERR_SHAPE, "%s: logits %s must be (N, K)", op, cnn_op_shape_str(a->logits, s1, sizeof s1));
    const int64_t n = a->logits->shape[0], k = a->logits->shape[1];
    if (k < 1)
        return cnn_error(CNN_ERR_SHAPE, "%s: logits %s have no classes", op,
                         cnn_op_shape_str(a->logits, s1, sizeof s1));
    if (!a->labels && (a->losses || a->dlogits))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: labels are missing (only probabilities can be computed without)",
                         op);
    if (a->labels) {
        CNN_TRY(cnn_ops_tensor(b, a->labels, op, "labels"));
        if (a->labels->dtype != CNN_I32)
            return cnn_error(CNN_ERR_UNSUPPORTED, "%s: labels have dtype %s; they must be I32", op,
                             cnn_dtype_name(a->labels->dtype));
        if (a->labels->ndim != 1 || a->labels->shape[0] != n)
            return cnn_error(CNN_ERR_SHAPE, "%s: labels %s must be (N) = (%lld) to match logits %s", op,
                             cnn_op_shape_str(a->labels, s1, sizeof s1), (long long)n,
                             cnn_op_shape_str(a->logits, s2, sizeof s2));
    }
    if (!(a->label_smoothing >= 0.0f && a->label_smoothing < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: label smoothing %g must be in [0, 1)", op,
                         (double)a->label_smoothing);
    const int64_t nk[2] = {n, k}, n1[1] = {n}, k1[1] = {k};
    if (a->probs) {
        CNN_TRY(cnn_ops_f32(b, a->probs, op, "probs"));
        CNN_TRY(cnn_op_check_dims(a->probs, 2, nk, "", op, "probs"));
    }
    if (a->dlogits) {
        CNN_TRY(cnn_ops_float(b, a->dlogits, op, "dlogits"));
        CNN_TRY(cnn_ops_dtype(a->dlogits, a->logits->dtype, op, "dlogits", "logits"));
        CNN_TRY(cnn_op_check_dims(a->dlogits, 2, nk, "", op, "dlogits"));
    }
    if (a->losses) {
        CNN_TRY(cnn_ops_f32(b, a->losses, op, "losses"));
        CNN_TRY(cnn_op_check_dims(a->losses, 1, n1, "", op, "losses"));
    }
    if (a->class_weights) {
        CNN_TRY(cnn_ops_f32(b, a->class_weights, op, "class_weights"));
        CNN_TRY(cnn_op_check_dims(a->class_weights, 1, k1, "", op, "class_weights"));
    }
fail:
    return st;
}

CNN_OPS_DISPATCH(softmax_xent, cnn_softmax_xent_args, cnn_ops_softmax_xent, 0)

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates: F32 master weights and state, a grad in any float dtype, optionally the 16-bit copy

/* param, grad and param_lp of one update */
static cnn_status cnn_ops_opt_io(const cnn_backend *b, const cnn_tensor *param, const cnn_tensor *grad,
                                 const cnn_tensor *param_lp, const char *op)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_f32(b, param, op, "param"));
    CNN_TRY(cnn_ops_float(b, grad, op, "grad"));
    CNN_TRY(cnn_ops_count(grad, param, op, "grad", "param"));
    if (param_lp) {
        if (!(b->ops->float_dtypes & ~(1u << CNN_F32)))
            return cnn_error(CNN_ERR_UNSUPPORTED, "%s: param_lp given, but the %s backend has no 16-bit weight copies "
                             "(mixed precision needs CUDA)", op, b->ops->name);
        CNN_TRY(cnn_ops_float(b, param_lp, op, "param_lp"));
        CNN_TRY(cnn_ops_count(param_lp, param, op, "param_lp", "param"));
    }
fail:
    return st;
}

/* a momentum buffer, which must be there when momentum is not 0 */
static cnn_status cnn_ops_momentum_state(const cnn_backend *b, const cnn_tensor *t, float momentum,
                                         const cnn_tensor *param, const char *op, const char *name)
{
    if (momentum == 0.0f) return CNN_OK;
    if (!t) return cnn_error(CNN_ERR_INVALID_ARG, "%s: momentum %g needs a %s tensor", op, (double)momentum, name);
    return cnn_ops_state(b, t, param, op, name, "param");
}

static cnn_status cnn_ops_sgd(const cnn_backend *b, const cnn_sgd_args *a, int dir, const char *op)
{
    (void)dir;
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_opt_io(b, a->param, a->grad, a->param_lp, op));
    CNN_TRY(cnn_ops_momentum_state(b, a->velocity, a->momentum, a->param, op, "velocity"));
fail:
    return st;
}

static cnn_status cnn_ops_adam(const cnn_backend *b, const cnn_adam_args *a, int dir, const char *op)
{
    (void)dir;
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_opt_io(b, a->param, a->grad, a->param_lp, op));
    CNN_TRY(cnn_ops_state(b, a->m, a->param, op, "m", "param"));
    CNN_TRY(cnn_ops_state(b, a->v, a->param, op, "v", "param"));
    if (!(a->bias_correction1 > 0.0f) || !(a->bias_correction2 > 0.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: bias corrections %g and %g must be > 0 (1 - beta^t with t >= 1)", op,
                         (double)a->bias_correction1, (double)a->bias_correction2);
fail:
    return st;
}

static cnn_status cnn_ops_rmsprop(const cnn_backend *b, const cnn_rmsprop_args *a, int dir, const char *op)
{
    (void)dir;
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_opt_io(b, a->param, a->grad, a->param_lp, op));
    CNN_TRY(cnn_ops_state(b, a->sq, a->param, op, "sq", "param"));
    CNN_TRY(cnn_ops_momentum_state(b, a->mom, a->momentum, a->param, op, "momentum buffer (mom)"));
    if (!(a->rho >= 0.0f && a->rho < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: rho %g must be in [0, 1)", op, (double)a->rho);
    if (!(a->eps > 0.0f)) return cnn_error(CNN_ERR_INVALID_ARG, "%s: eps %g must be positive", op, (double)a->eps);
fail:
    return st;
}

CNN_OPS_DISPATCH(sgd_update, cnn_sgd_args, cnn_ops_sgd, 0)
CNN_OPS_DISPATCH(adam_update, cnn_adam_args, cnn_ops_adam, 0)
CNN_OPS_DISPATCH(rmsprop_update, cnn_rmsprop_args, cnn_ops_rmsprop, 0)

/* the multi-tensor updates: the shared hyperparameters (core/op_check.c), then every element as the per-tensor
 * entry checks it, named "<entry> list[i] on <backend>"; nothing is written unless every check passes */
#define CNN_OPS_UPDATE_MULTI(kind)                                                                             \
    cnn_status cnn_op_##kind##_update_multi(cnn_backend *b, const cnn_##kind##_args *list, int n, int *failed) \
    {                                                                                                          \
        cnn_status st = CNN_OK;                                                                                \
        char op[CNN_OPS_NAME_BUF];                                                                             \
        int bad = -1;                                                                                          \
        CNN_TRY(cnn_ops_entry(b, b && b->ops->kind##_update_multi, #kind "_update_multi"));                    \
        cnn_ops_name(b, #kind "_update_multi", op);                                                            \
        CNN_TRY(cnn_##kind##_multi_check(list, n, "", op, &bad));                                              \
        for (int i = 0; i < n; i++) {                                                                          \
            snprintf(op, sizeof op, #kind "_update_multi list[%d] on %s", i, b->ops->name);                    \
            if ((st = cnn_ops_##kind(b, &list[i], 0, op)) != CNN_OK) {                                         \
                bad = i;                                                                                       \
                goto fail;                                                                                     \
            }                                                                                                  \
        }                                                                                                      \
        st = b->ops->kind##_update_multi(b, list, n, &bad);                                                    \
    fail:                                                                                                      \
        if (failed) *failed = bad;                                                                             \
        return st;                                                                                             \
    }

CNN_OPS_UPDATE_MULTI(sgd)
CNN_OPS_UPDATE_MULTI(adam)
CNN_OPS_UPDATE_MULTI(rmsprop)

cnn_status cnn_op_sum_squares(cnn_backend *b, const cnn_tensor *x, double *out)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    CNN_TRY(cnn_ops_entry(b, b && b->ops->sum_squares, "sum_squares"));
    cnn_ops_name(b, "sum_squares", op);
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "%s: out is NULL", op);
    *out = 0.0;
    CNN_TRY(cnn_ops_float(b, x, op, "x"));
    st = b->ops->sum_squares(b, x, out);
fail:
    return st;
}

/* ts[0..n) each a float tensor named "ts[i]"; *failed: the one that is not */
static cnn_status cnn_ops_float_list(const cnn_backend *b, const cnn_tensor *const *ts, int n, const char *op,
                                     int *failed)
{
    char name[32];
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "ts[%d]", i);
        cnn_status st = cnn_ops_float(b, ts[i], op, name);
        if (st != CNN_OK) {
            *failed = i;
            return st;
        }
    }
    return CNN_OK;
}

cnn_status cnn_op_sum_squares_multi(cnn_backend *b, const cnn_tensor *const *ts, int n, double *out, int *failed)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    int bad = -1;
    CNN_TRY(cnn_ops_entry(b, b && b->ops->sum_squares_multi, "sum_squares_multi"));
    cnn_ops_name(b, "sum_squares_multi", op);
    if (!ts || !out) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "%s: %s is NULL", op, ts ? "out" : "ts");
        goto fail;
    }
    if (n < 1) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "%s: n is %d; a list has at least 1 element", op, n);
        goto fail;
    }
    for (int i = 0; i < n; i++) out[i] = 0.0;
    CNN_TRY(cnn_ops_float_list(b, ts, n, op, &bad));
    st = b->ops->sum_squares_multi(b, ts, n, out, &bad);
fail:
    if (failed) *failed = bad;
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// precision

cnn_status cnn_op_set_precision(cnn_backend *b, cnn_precision precision)
{
    if (!b) return cnn_error(CNN_ERR_INVALID_ARG, "set_precision: the backend is NULL");
    if ((unsigned)precision >= CNN_PRECISION_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "set_precision on %s: unknown precision %d", b->ops->name,
                         (int)precision);
    if (!b->ops->set_precision) {
        if (precision == CNN_PRECISION_FP32) return CNN_OK;
        return cnn_error(CNN_ERR_UNSUPPORTED, "set_precision on %s: the %s backend computes in fp32 only (%s needs "
                         "CUDA)", b->ops->name, b->ops->name, cnn_precision_name(precision));
    }
    return b->ops->set_precision(b, precision);
}

cnn_status cnn_op_set_deterministic(cnn_backend *b, int on)
{
    if (!b) return cnn_error(CNN_ERR_INVALID_ARG, "set_deterministic: the backend is NULL");
    return b->ops->set_deterministic ? b->ops->set_deterministic(b, on) : CNN_OK;
}

cnn_status cnn_op_cast(cnn_backend *b, cnn_tensor *dst, const cnn_tensor *src)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    CNN_TRY(cnn_ops_entry(b, b && b->ops->cast, "cast"));
    cnn_ops_name(b, "cast", op);
    CNN_TRY(cnn_ops_float(b, src, op, "src"));
    CNN_TRY(cnn_ops_float(b, dst, op, "dst"));
    CNN_TRY(cnn_ops_count(dst, src, op, "dst", "src"));
    st = b->ops->cast(b, dst, src);
fail:
    return st;
}

cnn_status cnn_op_nonfinite(cnn_backend *b, const cnn_tensor *const *ts, int n, int *any)
{
    cnn_status st = CNN_OK;
    char op[CNN_OPS_NAME_BUF];
    int bad = -1;
    CNN_TRY(cnn_ops_entry(b, b && b->ops->nonfinite, "nonfinite"));
    cnn_ops_name(b, "nonfinite", op);
    if (!any || (n > 0 && !ts)) return cnn_error(CNN_ERR_INVALID_ARG, "%s: NULL argument", op);
    *any = 0;
    if (n < 0) return cnn_error(CNN_ERR_INVALID_ARG, "%s: n is %d", op, n);
    CNN_TRY(cnn_ops_float_list(b, ts, n, op, &bad));
    st = b->ops->nonfinite(b, ts, n, any);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// quantized models (the backends check their own int8 arguments: cpu/qconv.c, cpu/qprog.c)

static cnn_status cnn_ops_qconv(const cnn_backend *b, const cnn_qconv_args *a, int dir, const char *op)
{
    (void)b, (void)a, (void)dir, (void)op;
    return CNN_OK;
}

CNN_OPS_DISPATCH(qconv_s32, cnn_qconv_args, cnn_ops_qconv, 0)

cnn_status cnn_op_qprog_create(cnn_backend *b, const struct cnn_lite *m, int batch, int exact, cnn_qprog **out)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_entry(b, b && b->ops->qprog_create, "qprog_create"));
    if (!m || !out || batch < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "qprog_create on %s: needs a model, an output and a batch >= 1 (got %d)",
                         b->ops->name, batch);
    st = b->ops->qprog_create(b, m, batch, exact, out);
fail:
    return st;
}

cnn_status cnn_op_qprog_run(cnn_backend *b, cnn_qprog *p, const float *x, float *scores)
{
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_ops_entry(b, b && b->ops->qprog_run, "qprog_run"));
    if (!p || !x || !scores)
        return cnn_error(CNN_ERR_INVALID_ARG, "qprog_run on %s: a compiled graph, inputs and outputs are needed",
                         b->ops->name);
    st = b->ops->qprog_run(b, p, x, scores);
fail:
    return st;
}

void cnn_op_qprog_destroy(cnn_backend *b, cnn_qprog *p)
{
    if (b && p && b->ops->qprog_destroy) b->ops->qprog_destroy(b, p);
}
