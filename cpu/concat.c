/* Channel concatenation on the CPU: y (..., C0 + C1 + ...) from xs[i] (..., Ci) that agree on every other dim, and
 * backward, which splits dy into the dxs. Rows (the product of the leading dims) are copied in parallel. */
#include <stdio.h>
#include <string.h>

#include "cpu/dnnl_util.h"

#define CNN_CPU_CONCAT_PARALLEL_MIN 16384 /* elements; see CNN_CPU_PARALLEL_MIN in eltwise.c */

/* Checks the parts (xs in forward; dxs, or xs where a dx is NULL, in backward) against the whole (y or dy), and
 * returns each part's channel count and the number of rows. */
static cnn_status cnn_cpu_concat_check(const cnn_concat_args *a, int backward, int64_t *channels, int64_t *rows,
                                       const char *op)
{
    cnn_status st = CNN_OK;
    char s1[CNN_CPU_SHAPE_BUF], s2[CNN_CPU_SHAPE_BUF], name[32];
    if (a->n < 1 || a->n > CNN_CONCAT_MAX)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: n = %d inputs; it must be in [1, %d]", op, a->n, CNN_CONCAT_MAX);
    const cnn_tensor *whole = backward ? a->dy : a->y;
    const char *whole_name = backward ? "dy" : "y";
    CNN_TRY(cnn_cpu_check_f32(whole, op, whole_name));
    int64_t total = 0;
    for (int i = 0; i < a->n; i++) {
        const cnn_tensor *t = backward && a->dxs[i] ? a->dxs[i] : a->xs[i];
        snprintf(name, sizeof name, "%s[%d]", backward && a->dxs[i] ? "dxs" : "xs", i);
        if (!t) {
            if (backward)
                return cnn_error(CNN_ERR_INVALID_ARG, "%s: dxs[%d] and xs[%d] are both NULL: the width of part %d "
                                 "is unknown", op, i, i, i);
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: xs[%d] is missing", op, i);
        }
        if (!backward || a->dxs[i]) CNN_TRY(cnn_cpu_check_f32(t, op, name));
        int same = t->ndim == whole->ndim;
        for (int d = 0; same && d + 1 < t->ndim; d++) same = t->shape[d] == whole->shape[d];
        if (!same)
            return cnn_error(CNN_ERR_SHAPE, "%s: %s %s must match %s %s in every dim but the last", op, name,
                             cnn_cpu_shape_str(t, s1, sizeof s1), whole_name, cnn_cpu_shape_str(whole, s2, sizeof s2));
        channels[i] = t->shape[t->ndim - 1];
        total += channels[i];
    }
    if (total != whole->shape[whole->ndim - 1])
        return cnn_error(CNN_ERR_SHAPE, "%s: %s %s has %lld channels, but the parts have %lld together", op, whole_name,
                         cnn_cpu_shape_str(whole, s1, sizeof s1), (long long)whole->shape[whole->ndim - 1],
                         (long long)total);
    *rows = total ? cnn_tensor_numel(whole) / total : 0;
fail:
    return st;
}

static cnn_status cnn_cpu_concat_run(const cnn_concat_args *a, int backward, const char *op)
{
    cnn_status st = CNN_OK;
    int64_t channels[CNN_CONCAT_MAX], rows = 0;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", op);
    CNN_TRY(cnn_cpu_concat_check(a, backward, channels, &rows, op));
    const cnn_tensor *whole = backward ? a->dy : a->y;
    const int64_t width = whole->shape[whole->ndim - 1];
    int64_t start = 0;
    for (int i = 0; i < a->n; i++) {
        const int64_t ci = channels[i], at = start;
        start += ci;
        if (backward && !a->dxs[i]) continue;
        float *w = whole->data;
        float *part = backward ? a->dxs[i]->data : a->xs[i]->data;
        const size_t bytes = (size_t)ci * sizeof(float);
#pragma omp parallel for schedule(static) if (rows * ci >= CNN_CPU_CONCAT_PARALLEL_MIN)
        for (int64_t r = 0; r < rows; r++) {
            if (backward)
                memcpy(part + r * ci, w + r * width + at, bytes);
            else
                memcpy(w + r * width + at, part + r * ci, bytes);
        }
    }
fail:
    return st;
}

cnn_status cnn_cpu_concat_forward(cnn_backend *b, const cnn_concat_args *a)
{
    (void)b;
    return cnn_cpu_concat_run(a, 0, "concat_forward");
}

cnn_status cnn_cpu_concat_backward(cnn_backend *b, const cnn_concat_args *a)
{
    (void)b;
    return cnn_cpu_concat_run(a, 1, "concat_backward");
}
