/* Channel concatenation on the CPU: y (..., C0 + C1 + ...) from xs[i] (..., Ci) that agree on every other dim, and
 * backward, which splits dy into the dxs. Rows (the product of the leading dims) are copied in parallel. */
#include <stdio.h>
#include <string.h>

#include "core/op_check.h"
#include "cpu/dnnl_util.h"
#include "cpu/ops.h"

#define CNN_CPU_CONCAT_PARALLEL_MIN 16384 /* elements; see CNN_CPU_PARALLEL_MIN in eltwise.c */

static void cnn_cpu_concat_run(const cnn_concat_args *a, int backward)
{
    int64_t channels[CNN_CONCAT_MAX], rows = 0;
    cnn_concat_parts(a, backward, channels, &rows); /* checked by core/ops.c */
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
}

cnn_status cnn_cpu_concat_forward(cnn_backend *b, const cnn_concat_args *a)
{
    (void)b;
    cnn_cpu_concat_run(a, 0);
    return CNN_OK;
}

cnn_status cnn_cpu_concat_backward(cnn_backend *b, const cnn_concat_args *a)
{
    (void)b;
    cnn_cpu_concat_run(a, 1);
    return CNN_OK;
}
