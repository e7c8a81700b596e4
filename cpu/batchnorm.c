/* Batch normalization on the CPU (Ioffe & Szegedy 2015) with PyTorch's semantics, as our own OpenMP kernels.
 *
 * x is (N, H, W, C) or (N, C) (any rank 2..4): channel c is the last dim, and the statistics run over the
 * M = numel / C rows before it. Training normalizes with the biased batch variance and updates the running
 * statistics with the unbiased one; inference normalizes with the running statistics. A residual (the add that
 * ends a residual block) and an activation whose gradient needs no input are applied in the same pass; backward
 * takes dy w.r.t. the output and applies the activation's gradient inside its two passes (storing it as the
 * residual's gradient when asked), with no pass of its own.
 *
 * Why not oneDNN's batch normalization: its NHWC forward needs a separate pass for any activation other than
 * ReLU anyway, it does not update running statistics (and has no unbiased variance), and these loops are memory
 * bound either way. Reductions go through a fixed number of row chunks summed in order, in double, so results do
 * not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ew_math.h"
#include "core/op_check.h"
#include "cpu/dnnl_util.h"
#include "cpu/ew_loops.h"
#include "cpu/ops.h"

/* Row chunks of a per-channel reduction: enough to keep 64 threads busy, few enough that the partials
 * (chunks x 2 x C doubles) stay small. */
#define CNN_CPU_BN_CHUNKS 64
/* below this many elements the loops run on one thread (see CNN_CPU_PARALLEL_MIN in eltwise.c) */
#define CNN_CPU_BN_PARALLEL_MIN 16384

/* The gradient side of a backward reduction: g = act'(y) dy per element (dy itself when act is NONE, and y is then
 * unused), also stored into dres when that is not NULL. */
typedef struct cnn_cpu_bn_grad {
    const float *dy, *y;
    float *dres;
    cnn_act act;
    float alpha;
} cnn_cpu_bn_grad;

/* Rows [lo, hi) of the backward sums: p1 += g, p2 += g (x - center), with g as cnn_cpu_bn_grad says. g is the very
 * float the activation's backward op would have written (core/ew_math.h's expression), so fusing it here changes
 * no bit of the result. */
static void cnn_cpu_bn_grad_rows(const cnn_cpu_bn_grad *gr, const float *x, const double *center, int64_t lo,
                                 int64_t hi, int64_t c, double *p1, double *p2)
{
    const float alpha = gr->alpha;
    float *dres = gr->dres;
    /* g goes to dres, or else to a block on the stack, before the sums read it: two loops that GCC vectorizes, where
     * in one loop ReLU's select stays a branch (mispredicted on half of the elements) */
    enum { BLOCK = 256 };
    float tmp[BLOCK];
    for (int64_t r = lo; r < hi; r++)
        for (int64_t j0 = 0; j0 < c; j0 += BLOCK) {
            const int64_t o = r * c + j0, n = c - j0 < BLOCK ? c - j0 : BLOCK;
            const float *xr = x + o, *g = gr->dy + o;
            if (gr->act != CNN_ACT_NONE || dres) {
                float *gw = dres ? dres + o : tmp;
                cnn_cpu_act_grad_y_span(gr->act, alpha, gr->act == CNN_ACT_NONE ? g : gr->y + o, g, gw, n);
                g = gw;
            }
            const double *cr = center + j0;
            double *q1 = p1 + j0, *q2 = p2 + j0;
            for (int64_t j = 0; j < n; j++) {
                q1[j] += g[j];
                q2[j] += g[j] * (xr[j] - cr[j]);
            }
        }
}

/* Per-channel sums over the m rows of (m, c):
 *   grad == NULL:  s1 = sum (x - center), s2 = sum (x - center)^2, one pass; with `center` a sample of the channel,
 *                  mean = center + s1 / m and var = s2 / m - (s1 / m)^2 lose nothing to cancellation in double (the
 *                  shifted-data algorithm: Chan, Golub & LeVeque 1983)
 *   grad:          s1 = sum g, s2 = sum g (x - center), g = act'(y) dy (cnn_cpu_bn_grad_rows) */
static cnn_status cnn_cpu_bn_reduce(const cnn_cpu_bn_grad *grad, const float *x, const double *center, int64_t m,
                                    int64_t c, double *s1, double *s2, const char *op)
{
    const int64_t chunks = m < CNN_CPU_BN_CHUNKS ? m : CNN_CPU_BN_CHUNKS;
    double *partial = calloc((size_t)(chunks * 2 * c), sizeof *partial);
    if (!partial) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for partial sums", op);
#pragma omp parallel for schedule(static) if (m * c >= CNN_CPU_BN_PARALLEL_MIN)
    for (int64_t k = 0; k < chunks; k++) {
        double *p1 = partial + k * 2 * c, *p2 = p1 + c;
        const int64_t lo = m * k / chunks, hi = m * (k + 1) / chunks;
        if (grad) {
            cnn_cpu_bn_grad_rows(grad, x, center, lo, hi, c, p1, p2);
            continue;
        }
        for (int64_t r = lo; r < hi; r++) {
            const float *xr = x + r * c;
            for (int64_t j = 0; j < c; j++) {
                const double d = xr[j] - center[j];
                p1[j] += d;
                p2[j] += d * d;
            }
        }
    }
    for (int64_t j = 0; j < c; j++) {
        double a = 0.0, b = 0.0;
        for (int64_t k = 0; k < chunks; k++) {
            a += partial[k * 2 * c + j];
            b += partial[k * 2 * c + c + j];
        }
        s1[j] = a;
        if (s2) s2[j] = b;
    }
    free(partial);
    return CNN_OK;
}

/* A direction of batchnorm over m rows of c channels, with its per-channel arrays: 3 x c doubles in d, and floats
 * in f (as many as it asked cnn_cpu_bn_run for). */
typedef cnn_status (*cnn_cpu_bn_step)(const cnn_batchnorm_args *a, int64_t m, int64_t c, double *d, float *f,
                                      const char *op);

/* Both directions: the sizes, one block for the per-channel arrays (3 x c doubles, then `floats` x c floats), then
 * `step`. */
static cnn_status cnn_cpu_bn_run(const cnn_batchnorm_args *a, int floats, cnn_cpu_bn_step step, const char *op)
{
    int64_t m = 0, c = 0;
    cnn_batchnorm_dims(a, &m, &c); /* checked by core/ops.c */
    double *d = malloc((size_t)c * (3 * sizeof(double) + (size_t)floats * sizeof(float)));
    if (!d) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for %lld channels", op, (long long)c);
    const cnn_status st = step(a, m, c, d, (float *)(d + 3 * c), op);
    free(d);
    return st;
}

static cnn_status cnn_cpu_bn_forward(const cnn_batchnorm_args *a, int64_t m, int64_t c, double *d, float *f,
                                     const char *op)
{
    cnn_status st = CNN_OK;
    double *mean = d, *var = d + c, *center_d = d + 2 * c;
    float *scale = f, *shift = f + c, *center = f + 2 * c;
    const float *x = a->x->data;
    const float *gamma = a->gamma ? a->gamma->data : NULL, *beta = a->beta ? a->beta->data : NULL;
    if (a->training) {
        /* one pass over x, shifted by its first row: no cancellation when |mean| >> std (a pass less than
         * mean-then-centered-squares; the statistics are memory-bound) */
        double *k = center_d;
        for (int64_t j = 0; j < c; j++) k[j] = x[j];
        CNN_TRY(cnn_cpu_bn_reduce(NULL, x, k, m, c, mean, var, op));
        for (int64_t j = 0; j < c; j++) cnn_bn_moments(mean[j], var[j], k[j], m, &mean[j], &var[j]);
    } else {
        const float *rm = a->running_mean->data, *rv = a->running_var->data;
        for (int64_t j = 0; j < c; j++) {
            mean[j] = rm[j];
            var[j] = rv[j];
        }
    }
    for (int64_t j = 0; j < c; j++) {
        const double invstd = cnn_bn_forward_coef(mean[j], var[j], a->eps, gamma ? gamma[j] : 1.0, &scale[j],
                                                  &center[j]);
        shift[j] = beta ? beta[j] : 0.0f;
        if (a->training && a->save_mean) ((float *)a->save_mean->data)[j] = (float)mean[j];
        if (a->training && a->save_invstd) ((float *)a->save_invstd->data)[j] = (float)invstd;
    }
    if (a->training && a->running_mean) {
        float *rm = a->running_mean->data, *rv = a->running_var->data;
        for (int64_t j = 0; j < c; j++) cnn_bn_running_update(&rm[j], &rv[j], mean[j], var[j], a->momentum, m);
    }
    float *y = a->y->data;
    const float *res = a->residual ? a->residual->data : NULL;
    const cnn_act act = a->act;
    const float alpha = a->act_alpha;
#pragma omp parallel if (m * c >= CNN_CPU_BN_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cnn_cpu_span_range(m, &lo, &hi);
        cnn_cpu_affine_act_rows(act, alpha, x + lo * c, res ? res + lo * c : NULL, y + lo * c, center, scale, shift,
                                hi - lo, c);
    }
fail:
    return st;
}

static cnn_status cnn_cpu_bn_backward(const cnn_batchnorm_args *a, int64_t m, int64_t c, double *d, float *f,
                                      const char *op)
{
    cnn_status st = CNN_OK;
    double *center = d, *sum_dy = d + c, *sum_dy_xc = d + 2 * c;
    float *invstd = f, *coef = f + c; /* coef: 4 x c, for dx */
    for (int64_t j = 0; j < c; j++) {
        if (a->training) {
            center[j] = ((const float *)a->save_mean->data)[j];
            invstd[j] = ((const float *)a->save_invstd->data)[j];
        } else {
            center[j] = ((const float *)a->running_mean->data)[j];
            invstd[j] = (float)cnn_bn_invstd(((const float *)a->running_var->data)[j], a->eps);
        }
    }
    const float *x = a->x->data;
    const float *gamma = a->gamma ? a->gamma->data : NULL;
    const cnn_cpu_bn_grad grad = {.dy = a->dy->data, .y = a->act == CNN_ACT_NONE ? NULL : a->y->data,
                                  .dres = a->dresidual ? a->dresidual->data : NULL, .act = a->act,
                                  .alpha = a->act_alpha};
    CNN_TRY(cnn_cpu_bn_reduce(&grad, x, center, m, c, sum_dy, sum_dy_xc, op));
    for (int64_t j = 0; j < c; j++) {
        if (a->dgamma) ((float *)a->dgamma->data)[j] = (float)(sum_dy_xc[j] * invstd[j]);
        if (a->dbeta) ((float *)a->dbeta->data)[j] = (float)sum_dy[j];
    }
    if (a->dx) {
        /* dx = gs (g - k0 - (x - mu) k1) per channel (cnn_bn_backward_coef) */
        float *gs = coef, *k0 = coef + c, *k1 = coef + 2 * c, *mu = coef + 3 * c;
        for (int64_t j = 0; j < c; j++)
            cnn_bn_backward_coef(a->training, sum_dy[j], sum_dy_xc[j], center[j], invstd[j], gamma ? gamma[j] : 1.0,
                                 m, &gs[j], &k0[j], &k1[j], &mu[j]);
        /* g = act'(y) dy once more, or as the sums stored it in dres; every input of dx went into the sums above,
         * so dx may alias dy */
        float *dx = a->dx->data;
        const cnn_act act = grad.dres ? CNN_ACT_NONE : grad.act;
        const float *dy = grad.dres ? grad.dres : grad.dy, *y = act == CNN_ACT_NONE ? dy : grad.y;
        const float alpha = grad.alpha;
#pragma omp parallel if (m * c >= CNN_CPU_BN_PARALLEL_MIN)
        {
            int64_t lo, hi;
            cnn_cpu_span_range(m, &lo, &hi);
            CNN_CPU_ACT_CASES(act, for (int64_t r = lo; r < hi; r++) {
                const int64_t o = r * c;
                for (int64_t j = 0; j < c; j++) {
                    const float g = cnn_act_grad_from_y(K_ACT, alpha, y[o + j], dy[o + j]);
                    dx[o + j] = gs[j] * (g - k0[j] - (x[o + j] - mu[j]) * k1[j]);
                }
            })
        }
    }
fail:
    return st;
}

cnn_status cnn_cpu_batchnorm_forward(cnn_backend *b, const cnn_batchnorm_args *a)
{
    (void)b;
    return cnn_cpu_bn_run(a, 3, cnn_cpu_bn_forward, "batchnorm_forward");
}

cnn_status cnn_cpu_batchnorm_backward(cnn_backend *b, const cnn_batchnorm_args *a)
{
    (void)b;
    return cnn_cpu_bn_run(a, a->dx ? 5 : 1, cnn_cpu_bn_backward, "batchnorm_backward");
}
