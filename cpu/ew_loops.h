/* Activation loops of the CPU backend with the activation a compile-time constant in each loop.
 *
 * core/ew_math.h takes the activation as an argument and switches on it. Called in a loop with a run-time
 * activation, that switch stays inside the loop: no vectorization, and ReLU's `x > 0` becomes a data-dependent
 * branch that mispredicts on half the elements. Measured on ResNet-20 (28x28x16 maps, batch 64, 2 threads): a
 * batchnorm with ReLU took 2.7 ms against 0.85 ms without. Here each case calls the shared math with a constant
 * activation, so the compiler folds the switch and vectorizes (ReLU becomes a max); the math itself is still
 * core/ew_math.h's, the one the CUDA backend runs.
 *
 * Spans are split over the OpenMP team by cnn_cpu_span_range: every element is computed the same way whatever
 * the split, so results do not depend on the thread count. */
#ifndef CNN_CPU_EW_LOOPS_H
#define CNN_CPU_EW_LOOPS_H

#include <omp.h>
#include <stdint.h>

#include "core/ew_math.h"

/* The calling thread's share [*lo, *hi) of n items inside a parallel region (contiguous, in thread order). */
static inline void cnn_cpu_span_range(int64_t n, int64_t *lo, int64_t *hi)
{
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    *lo = n * t / nt;
    *hi = n * (t + 1) / nt;
}

/* One loop per activation: BODY uses the constant K_ACT. */
#define CNN_CPU_ACT_CASES(act, BODY)                                                                               \
    switch (act) {                                                                                                 \
    case CNN_ACT_NONE: { const cnn_act K_ACT = CNN_ACT_NONE; BODY; } break;                                        \
    case CNN_ACT_RELU: { const cnn_act K_ACT = CNN_ACT_RELU; BODY; } break;                                        \
    case CNN_ACT_LEAKY_RELU: { const cnn_act K_ACT = CNN_ACT_LEAKY_RELU; BODY; } break;                            \
    default: { const cnn_act K_ACT = (act); BODY; } break; /* exp/erf-based: the call dominates the switch */     \
    }

/* y[i] = act(x[i]), i < n (y may alias x). */
static inline void cnn_cpu_act_span(cnn_act act, float alpha, const float *x, float *y, int64_t n)
{
    CNN_CPU_ACT_CASES(act, for (int64_t i = 0; i < n; i++) y[i] = cnn_act_apply(K_ACT, alpha, x[i]))
}

/* dx[i] = act'(y[i]) dy[i] for activations whose gradient follows from the output (dx may alias dy). */
static inline void cnn_cpu_act_grad_y_span(cnn_act act, float alpha, const float *y, const float *dy, float *dx,
                                           int64_t n)
{
    CNN_CPU_ACT_CASES(act, for (int64_t i = 0; i < n; i++) dx[i] = cnn_act_grad_from_y(K_ACT, alpha, y[i], dy[i]))
}

/* Rows of (rows, c): y = act((x - center[j]) * scale[j] + shift[j]) per channel j (batchnorm's normalization), or
 * with res (rows, c) not NULL y = act(((x - center[j]) * scale[j] + shift[j]) + res): the residual add of a block,
 * rounded as a separate add of the normalized value would be. */
static inline void cnn_cpu_affine_act_rows(cnn_act act, float alpha, const float *x, const float *res, float *y,
                                           const float *center, const float *scale, const float *shift, int64_t rows,
                                           int64_t c)
{
    if (res) {
        CNN_CPU_ACT_CASES(act, for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * c;
            const float *rr = res + r * c;
            float *yr = y + r * c;
            for (int64_t j = 0; j < c; j++) {
                const float v = (xr[j] - center[j]) * scale[j] + shift[j];
                yr[j] = cnn_act_apply(K_ACT, alpha, v + rr[j]);
            }
        })
        return;
    }
    CNN_CPU_ACT_CASES(act, for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        for (int64_t j = 0; j < c; j++) yr[j] = cnn_act_apply(K_ACT, alpha, (xr[j] - center[j]) * scale[j] + shift[j]);
    })
}

#endif
