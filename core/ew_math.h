/* Elementwise math, written once for every backend (docs/ARCHITECTURE.md, "Adding an op"): the CPU backend includes this header as plain
 * C, the CUDA backend as __host__ __device__ code. One definition of the math, two schedulers; the CPU tests
 * then cover the math the GPU runs. Scalars only: the loops live in the backends.
 *
 * Rules: plain C that nvcc also accepts; no libc calls besides <math.h>'s (expf, expm1f, erff, tanhf, sqrtf; sqrt
 * for the statistics computed in double); no globals. */
#ifndef CNN_CORE_EW_MATH_H
#define CNN_CORE_EW_MATH_H

#include <math.h>
#include <stdint.h>

#include "core/backend.h"

#if defined(__CUDACC__)
#define CNN_HD __host__ __device__ __forceinline__
#else
#define CNN_HD static inline
#endif

/* ---- activations ----
 *
 * cnn_act_apply: forward. `alpha` is the leaky ReLU slope or the ELU alpha, ignored by the others.
 * cnn_act_grad_from_y: dL/dx from the forward output y, for the activations where
 *     !cnn_act_grad_needs_input(act) (y determines x's side of every kink: leaky needs alpha > 0, ELU alpha > 0).
 *     For GELU and SiLU it returns NaN: they need cnn_act_grad_from_x.
 * cnn_act_grad_from_x: dL/dx from the forward input x, for every activation. */

/* 1 / sqrt(2) and 1 / sqrt(2 pi), for the exact GELU (Hendrycks & Gimpel 2016) */
#define CNN_EW_SQRT1_2 0.70710678118654752440f
#define CNN_EW_INV_SQRT_2PI 0.39894228040143267794f

/* Logistic sigmoid without overflow: exp() only ever sees a non-positive argument. */
CNN_HD float cnn_sigmoidf(float x)
{
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

CNN_HD float cnn_act_apply(cnn_act act, float alpha, float x)
{
    switch (act) {
    case CNN_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case CNN_ACT_LEAKY_RELU: return x > 0.0f ? x : alpha * x;
    case CNN_ACT_ELU: return x > 0.0f ? x : alpha * expm1f(x);
    case CNN_ACT_SIGMOID: return cnn_sigmoidf(x);
    case CNN_ACT_TANH: return tanhf(x);
    case CNN_ACT_GELU: return 0.5f * x * (1.0f + erff(x * CNN_EW_SQRT1_2));
    case CNN_ACT_SILU: return x * cnn_sigmoidf(x);
    default: return x;
    }
}

CNN_HD float cnn_act_grad_from_y(cnn_act act, float alpha, float y, float dy)
{
    switch (act) {
    case CNN_ACT_RELU: return y > 0.0f ? dy : 0.0f;
    case CNN_ACT_LEAKY_RELU: return y > 0.0f ? dy : alpha * dy;
    case CNN_ACT_ELU: return y > 0.0f ? dy : (y + alpha) * dy; /* d/dx alpha (e^x - 1) = alpha e^x = y + alpha */
    case CNN_ACT_SIGMOID: return y * (1.0f - y) * dy;
    case CNN_ACT_TANH: return (1.0f - y * y) * dy;
    case CNN_ACT_GELU:
    case CNN_ACT_SILU: return NAN; /* not a function of y */
    default: return dy;
    }
}

CNN_HD float cnn_act_grad_from_x(cnn_act act, float alpha, float x, float dy)
{
    switch (act) {
    case CNN_ACT_GELU: {
        const float cdf = 0.5f * (1.0f + erff(x * CNN_EW_SQRT1_2));
        const float pdf = CNN_EW_INV_SQRT_2PI * expf(-0.5f * x * x);
        return (cdf + x * pdf) * dy;
    }
    case CNN_ACT_SILU: {
        const float s = cnn_sigmoidf(x);
        return s * (1.0f + x * (1.0f - s)) * dy;
    }
    case CNN_ACT_ELU: return x > 0.0f ? dy : alpha * expf(x) * dy;
    default: return cnn_act_grad_from_y(act, alpha, cnn_act_apply(act, alpha, x), dy);
    }
}

/* ---- dropout: a counter-based keep mask ----
 *
 * Element `counter` of the stream `seed` is kept with probability 1 - rate. The 64-bit hash is SplitMix64's
 * output function (Steele, Lea & Flood 2014; constants from Stafford's "variant 13" mixer) applied to the
 * SplitMix64 state seed' + (counter + 1) * golden, where seed' is the mixed seed so that nearby seeds give
 * unrelated streams. Its top 32 bits are compared against rate * 2^32, so rates resolve to 2^-32. */

#define CNN_EW_GOLDEN64 0x9E3779B97F4A7C15ull

CNN_HD uint64_t cnn_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

CNN_HD uint64_t cnn_hash64(uint64_t seed, uint64_t counter)
{
    return cnn_mix64(cnn_mix64(seed ^ CNN_EW_GOLDEN64) + (counter + 1u) * CNN_EW_GOLDEN64);
}

/* 1: keep element `counter`; rate in [0, 1) (rate 0 keeps everything). */
CNN_HD int cnn_dropout_keep(uint64_t seed, uint64_t counter, float rate)
{
    /* rate < 1 in float is at most 1 - 2^-24, so the threshold is below 2^32 and exact */
    const uint64_t threshold = (uint64_t)(rate * 4294967296.0f);
    return (cnn_hash64(seed, counter) >> 32) >= threshold;
}

/* ---- optimizer updates, one parameter element at a time ---- */

/* SGD with momentum (PyTorch semantics: v = mu*v + g; p -= lr * (nesterov ? g + mu*v : v)). */
CNN_HD void cnn_sgd_step(float *p, float g, float *v, float lr, float mu, float wd, int nesterov)
{
    g += wd * *p;
    if (mu != 0.0f) {
        *v = mu * *v + g;
        g = nesterov ? g + mu * *v : *v;
    }
    *p -= lr * g;
}

/* Adam (Kingma & Ba 2015) with bias correction; decoupled weight decay is AdamW (Loshchilov & Hutter 2019). */
CNN_HD void cnn_adam_step(float *p, float g, float *m, float *v, float lr, float b1, float b2, float eps,
                          float wd, int decoupled, float bc1, float bc2)
{
    if (!decoupled) g += wd * *p;
    *m = b1 * *m + (1.0f - b1) * g;
    *v = b2 * *v + (1.0f - b2) * g * g;
    float mhat = *m / bc1;
    float vhat = *v / bc2;
    float upd = mhat / (sqrtf(vhat) + eps);
    if (decoupled) upd += wd * *p;
    *p -= lr * upd;
}

/* RMSprop (Hinton's lecture 6e) with PyTorch's semantics: g += wd*p; sq = rho*sq + (1-rho)*g^2; with momentum
 * mom = mu*mom + g / (sqrt(sq) + eps), p -= lr*mom; else p -= lr * g / (sqrt(sq) + eps). `mom` is not touched
 * when mu == 0 (it may then point to a dummy). */
CNN_HD void cnn_rmsprop_step(float *p, float g, float *sq, float *mom, float lr, float rho, float eps, float mu,
                             float wd)
{
    g += wd * *p;
    *sq = rho * *sq + (1.0f - rho) * g * g;
    const float step = g / (sqrtf(*sq) + eps);
    if (mu != 0.0f) {
        *mom = mu * *mom + step;
        *p -= lr * *mom;
    } else {
        *p -= lr * step;
    }
}

/* ---- softmax cross-entropy with label smoothing ---- */

/* The targets of label smoothing (Szegedy et al. 2016), target = (1 - s) onehot + s / K: `on` for the label's class,
 * `off` for each of the others. The loss of a sample is w[label] (log sum_j exp(z_j) - sum_j target_j z_j), the
 * gradient of logit j grad_scale w[label] (p_j - target_j). In the caller's precision T (double on the CPU, float
 * in the CUDA kernel), so that each keeps its bits. */
#define CNN_XENT_TARGETS(T, s, k, on, off)          \
    do {                                            \
        (off) = (T)(s) / (T)(k);                    \
        (on) = (T)1 - (T)(s) + (off);               \
    } while (0)

/* ---- batch normalization, one channel at a time (the CPU's loops and the CUDA kernels; statistics in double) ---- */

/* The batch's mean and biased variance (what normalizes) from the sums of x shifted by k over m rows:
 * s1 = sum (x - k), s2 = sum (x - k)^2; the shift keeps the sums from cancelling when |mean| >> std. */
CNN_HD void cnn_bn_moments(double s1, double s2, double k, int64_t m, double *mean, double *var)
{
    const double d = s1 / (double)m, v = s2 / (double)m - d * d;
    *mean = k + d;
    *var = v > 0.0 ? v : 0.0;
}

/* 1 / sqrt(var + eps) */
CNN_HD double cnn_bn_invstd(double var, float eps) { return 1.0 / sqrt(var + (double)eps); }

/* Forward: y = (x - center) * scale + beta, which subtracts the mean first and so keeps x's precision when
 * |mean| >> std. Returns invstd (training saves it). */
CNN_HD double cnn_bn_forward_coef(double mean, double var, float eps, double gamma, float *scale, float *center)
{
    const double invstd = cnn_bn_invstd(var, eps);
    *scale = (float)(gamma * invstd);
    *center = (float)mean;
    return invstd;
}

/* Training forward's update of the running statistics, PyTorch's: r = (1 - momentum) r + momentum * batch, with the
 * unbiased variance (m rows, m >= 2). */
CNN_HD void cnn_bn_running_update(float *running_mean, float *running_var, double mean, double var, double mom,
                                  int64_t m)
{
    const double unbias = (double)m / (double)(m - 1);
    *running_mean = (float)((1.0 - mom) * *running_mean + mom * mean);
    *running_var = (float)((1.0 - mom) * *running_var + mom * var * unbias);
}

/* Backward, from sum_dy = sum g and sum_dy_xc = sum g (x - mu) over m rows (g = act'(y) dy): training,
 * dx = gamma s (g - mean(g) - (x - mu) s^2 mean(g (x - mu))), s = invstd (the batch statistics depend on x);
 * inference, they are constants and dx = gamma s g. coef[0..3]: gamma s, mean(g), s^2 mean(g (x - mu)), mu; then
 * dx = coef[0] (g - coef[1] - (x - coef[3]) coef[2]). */
CNN_HD void cnn_bn_backward_coef(int training, double sum_dy, double sum_dy_xc, double center, float invstd,
                                 double gamma, int64_t m, float *gs, float *k0, float *k1, float *mu)
{
    const double s = invstd;
    *gs = (float)(gamma * s);
    *k0 = training ? (float)(sum_dy / (double)m) : 0.0f;
    *k1 = training ? (float)(sum_dy_xc * s * s / (double)m) : 0.0f;
    *mu = (float)center;
}

#endif
