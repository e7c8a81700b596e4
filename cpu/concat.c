/* Channel concatenation on the CPU: y (..., C0 + C1 + ...) from xs[i] (..., Ci) that agree on every other dim, and
 * backward, which splits dy into the dxs. Rows (the product of the leading dims) are copied in parallel. */
#include <stdio.h>
#include <string.h>

#include "core/op_check.h"
#include "cpu/dnnl_util.h"
#include "cpu/ops.h"

#define CNN_CPU_CONCAT_PARALLEL_MIN 16384 /* elements; see CNN_CPU_PARALLEL_MIN in eltwise.c */

/* The whole, the shapes (core/op_check.c), then the dtype of every part that is touched. */
static cnn_status cnn_cpu_concat_check(const cnn_concat_args *a, int backward, int64_t *channels, int64_t *rows,
                                       const char *op)
{
    cnn_status st = CNN_OK;
    char name[32];
    CNN_TRY(cnn_cpu_check_f32(backward ? a->dy : a->y, op, backward ? "dy" : "y"));
    CNN_TRY(cnn_concat_check(a, backward, "", op, channels, rows));
    for (int i = 0; i < a->n; i++) {
        if (backward && !a->dxs[i]) continue;
        snprintf(name, sizeof name, "%s[%d]", backward ? "dxs" : "xs", i);
        CNN_TRY(cnn_cpu_check_f32(backward ? a->dxs[i] : a->xs[i], op, name));
    }
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
