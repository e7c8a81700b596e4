/* Elementwise math, written once for every backend (DESIGN.md): the CPU backend includes this header as plain
 * C, the CUDA backend as __host__ __device__ code. One definition of the math, two schedulers; the CPU tests
 * then cover the math the GPU runs. Scalars only: the loops live in the backends. */
#ifndef CNN_CORE_EW_MATH_H
#define CNN_CORE_EW_MATH_H

#include <math.h>

#include "core/backend.h"

#if defined(__CUDACC__)
#define CNN_HD __host__ __device__ __forceinline__
#else
#define CNN_HD static inline
#endif

/* ---- activations: forward, and gradient from the forward output y (valid for every act here) ---- */

CNN_HD float cnn_act_apply(cnn_act act, float x)
{
    switch (act) {
    case CNN_ACT_RELU: return x > 0.0f ? x : 0.0f;
    default: return x;
    }
}

CNN_HD float cnn_act_grad_from_y(cnn_act act, float y, float dy)
{
    switch (act) {
    case CNN_ACT_RELU: return y > 0.0f ? dy : 0.0f;
    default: return dy;
    }
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

#endif
