// The bodies of the memory-bound kernels that dominate a large network's step besides the convolutions: batch
// normalization (statistics, normalize + residual + activation, dx), activations forward and backward, and add.
// Each body is a __host__ __device__ function of (thread index t, thread count nt), templated on the element type
// T (float, __half, __nv_bfloat16) and the vector width V:
// - V = 16 / sizeof(T) (8 halves or 4 floats): one 16-byte load or store per vector. A launcher picks it when every
//   pointer is 16-byte aligned and, for the per-channel kernels, the channel count is a multiple of V;
// - V = 1: the same body, one element at a time, for everything else.
// kernels.cu launches them on the GPU; tests/test_cuda_kernels_host.cu runs the very same bodies on the host over every (t, nt)
// of a launch, where they are checked against plain loops, without a GPU.
//
// Per-channel kernels over x (m, c) (m = N * H * W rows, channels last) give each thread one vector of channels for
// all the rows it visits, so the channel index is computed once per thread, not once per element, and the
// per-channel coefficients stay in registers.
#ifndef CNN_CUDA_KERNELS_EW_CUH
#define CNN_CUDA_KERNELS_EW_CUH

#include <stdint.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/ew_math.h"

// ---------------------------------------------------------------------------------------------------------------
// element types and vectors

template <typename T> struct cnn_ew_io;
template <> struct cnn_ew_io<float> {
    static CNN_HD float load(float v) { return v; }
    static CNN_HD float store(float v) { return v; }
};
template <> struct cnn_ew_io<__half> {
    static CNN_HD float load(__half v) { return __half2float(v); }
    static CNN_HD __half store(float v) { return __float2half_rn(v); }
};
template <> struct cnn_ew_io<__nv_bfloat16> {
    static CNN_HD float load(__nv_bfloat16 v) { return __bfloat162float(v); }
    static CNN_HD __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};

// the widest vector: 16 bytes, one LDG.128 / STG.128
template <typename T> struct cnn_ew_width {
    static const int value = 16 / (int)sizeof(T);
};

// V elements aligned to their size, so that the compiler emits one load or store for all of them
template <typename T, int V> struct alignas(sizeof(T) * V) cnn_ew_pack {
    T v[V];
};

// out[0..V) = p[i..i+V) as floats; p + i must be aligned to V elements
template <typename T, int V> CNN_HD void cnn_ew_load(const T *p, int64_t i, float *out)
{
    const cnn_ew_pack<T, V> k = *reinterpret_cast<const cnn_ew_pack<T, V> *>(p + i);
    for (int j = 0; j < V; j++) out[j] = cnn_ew_io<T>::load(k.v[j]);
}

// p[i..i+V) = in[0..V) rounded to T (nearest even)
template <typename T, int V> CNN_HD void cnn_ew_store(T *p, int64_t i, const float *in)
{
    cnn_ew_pack<T, V> k;
    for (int j = 0; j < V; j++) k.v[j] = cnn_ew_io<T>::store(in[j]);
    *reinterpret_cast<cnn_ew_pack<T, V> *>(p + i) = k;
}

// v as a T would hold it: what a value read back from a tensor of T is, for float math that fuses away a store
template <typename T> CNN_HD float cnn_ew_round(float v) { return cnn_ew_io<T>::load(cnn_ew_io<T>::store(v)); }

// The gradient through a batchnorm's fused activation: g = act'(y) dy from y, rounded to T as the activation's own
// backward op would have stored it (so that the fused op gives its bits); dy itself when act is NONE (y unused).
template <typename T, int V>
CNN_HD void cnn_ew_act_grad_y(cnn_act act, float alpha, const T *y, int64_t i, float *g)
{
    if (act == CNN_ACT_NONE) return;
    float yv[V];
    cnn_ew_load<T, V>(y, i, yv);
    for (int j = 0; j < V; j++) g[j] = cnn_ew_round<T>(cnn_act_grad_from_y(act, alpha, yv[j], g[j]));
}

// ---------------------------------------------------------------------------------------------------------------
// flat elementwise bodies over n elements: thread t takes vectors t, t + nt, ...; then the n % V elements past the
// last whole vector one at a time

template <typename T, int V>
CNN_HD void cnn_ew_act_forward(int64_t t, int64_t nt, cnn_act act, float alpha, const T *x, T *y, int64_t n)
{
    const int64_t whole = n / V * V;
    for (int64_t i = t * V; i < whole; i += nt * V) {
        float v[V];
        cnn_ew_load<T, V>(x, i, v);
        for (int j = 0; j < V; j++) v[j] = cnn_act_apply(act, alpha, v[j]);
        cnn_ew_store<T, V>(y, i, v);
    }
    for (int64_t i = whole + t; i < n; i += nt) {
        float v;
        cnn_ew_load<T, 1>(x, i, &v);
        v = cnn_act_apply(act, alpha, v);
        cnn_ew_store<T, 1>(y, i, &v);
    }
}

// from_x: the gradient comes from the activation's input (GELU, SiLU), else from its output; dx may alias dy
template <typename T, int V>
CNN_HD void cnn_ew_act_backward(int64_t t, int64_t nt, cnn_act act, float alpha, int from_x, const T *xy,
                                const T *dy, T *dx, int64_t n)
{
    const int64_t whole = n / V * V;
    for (int64_t i = t * V; i < whole; i += nt * V) {
        float v[V], g[V];
        cnn_ew_load<T, V>(xy, i, v);
        cnn_ew_load<T, V>(dy, i, g);
        for (int j = 0; j < V; j++)
            g[j] = from_x ? cnn_act_grad_from_x(act, alpha, v[j], g[j]) : cnn_act_grad_from_y(act, alpha, v[j], g[j]);
        cnn_ew_store<T, V>(dx, i, g);
    }
    for (int64_t i = whole + t; i < n; i += nt) {
        float v, g;
        cnn_ew_load<T, 1>(xy, i, &v);
        cnn_ew_load<T, 1>(dy, i, &g);
        g = from_x ? cnn_act_grad_from_x(act, alpha, v, g) : cnn_act_grad_from_y(act, alpha, v, g);
        cnn_ew_store<T, 1>(dx, i, &g);
    }
}

// y = alpha a + beta b, all of one type; y may alias a or b
template <typename T, int V>
CNN_HD void cnn_ew_add(int64_t t, int64_t nt, const T *a, const T *b, T *y, int64_t n, float alpha, float beta)
{
    const int64_t whole = n / V * V;
    for (int64_t i = t * V; i < whole; i += nt * V) {
        float u[V], v[V];
        cnn_ew_load<T, V>(a, i, u);
        cnn_ew_load<T, V>(b, i, v);
        for (int j = 0; j < V; j++) u[j] = alpha * u[j] + beta * v[j];
        cnn_ew_store<T, V>(y, i, u);
    }
    for (int64_t i = whole + t; i < n; i += nt) {
        float u, v;
        cnn_ew_load<T, 1>(a, i, &u);
        cnn_ew_load<T, 1>(b, i, &v);
        u = alpha * u + beta * v;
        cnn_ew_store<T, 1>(y, i, &u);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// per-channel bodies over x (m, c), c a multiple of V: with cv = c / V vectors a row, thread t keeps channels
// [(t % cv) V, (t % cv) V + V) and visits rows t / cv, t / cv + nt / cv, ...; the launch has nt >= cv, and the
// last nt % cv threads have nothing to do

// y = act((x - center) scale + shift [+ residual]), the CPU backend's expression; y may alias x
template <typename T, int V>
CNN_HD void cnn_ew_bn_apply(int64_t t, int64_t nt, const T *x, const T *res, T *y, int64_t m, int64_t c,
                            const float *center, const float *scale, const float *shift, cnn_act act, float alpha)
{
    const int64_t cv = c / V, stride = nt / cv;
    if (t >= stride * cv) return;
    const int64_t col = t % cv * V;
    float ce[V], sc[V], sh[V];
    for (int j = 0; j < V; j++) {
        ce[j] = center[col + j];
        sc[j] = scale[col + j];
        sh[j] = shift[col + j];
    }
    for (int64_t r = t / cv; r < m; r += stride) {
        const int64_t i = r * c + col;
        float v[V], rv[V];
        cnn_ew_load<T, V>(x, i, v);
        if (res) cnn_ew_load<T, V>(res, i, rv);
        for (int j = 0; j < V; j++) {
            float u = (v[j] - ce[j]) * sc[j] + sh[j];
            if (res) u += rv[j];
            v[j] = cnn_act_apply(act, alpha, u);
        }
        cnn_ew_store<T, V>(y, i, v);
    }
}

// dx = coef0 (g - coef1 - (x - coef3) coef2), g = act'(y) dy (cnn_ew_act_grad_y), coef (4, c) from the backward
// statistics; dx may alias dy
template <typename T, int V>
CNN_HD void cnn_ew_bn_dx(int64_t t, int64_t nt, const T *x, const T *dy, const T *y, cnn_act act, float alpha,
                         T *dx, int64_t m, int64_t c, const float *coef)
{
    const int64_t cv = c / V, stride = nt / cv;
    if (t >= stride * cv) return;
    const int64_t col = t % cv * V;
    float k0[V], k1[V], k2[V], k3[V];
    for (int j = 0; j < V; j++) {
        k0[j] = coef[col + j];
        k1[j] = coef[c + col + j];
        k2[j] = coef[2 * c + col + j];
        k3[j] = coef[3 * c + col + j];
    }
    for (int64_t r = t / cv; r < m; r += stride) {
        const int64_t i = r * c + col;
        float xv[V], g[V];
        cnn_ew_load<T, V>(x, i, xv);
        cnn_ew_load<T, V>(dy, i, g);
        cnn_ew_act_grad_y<T, V>(act, alpha, y, i, g);
        for (int j = 0; j < V; j++) g[j] = k0[j] * (g[j] - k1[j] - (xv[j] - k3[j]) * k2[j]);
        cnn_ew_store<T, V>(dx, i, g);
    }
}

// One thread's share of the batchnorm sums for channels [col, col + V) over rows r0, r0 + step, ... < r1, in
// double, added to s1[0..V), s2[0..V):
// - CNN_CUDA_BN_SHIFTED_MOMENTS: d = x - x[first row], s1 += d, s2 += d^2 (the forward statistics);
// - CNN_CUDA_BN_GRAD: s1 += g, s2 += g (x - center) (the backward statistics; center per channel), g = act'(y) dy
//   (cnn_ew_act_grad_y), also stored into dres when that is not NULL (every element is visited once).
// The expressions are the CPU backend's (cpu/batchnorm.c); the mode values are kernels.h's.
template <typename T, int V>
CNN_HD void cnn_ew_bn_sums(int shifted, const T *x, const T *dy, const T *y, cnn_act act, float alpha, T *dres,
                           const double *center, int64_t c, int64_t col, int64_t r0, int64_t r1, int64_t step,
                           double *s1, double *s2)
{
    double ctr[V];
    if (shifted) {
        float first[V];
        cnn_ew_load<T, V>(x, col, first);
        for (int j = 0; j < V; j++) ctr[j] = (double)first[j];
    } else {
        for (int j = 0; j < V; j++) ctr[j] = center[col + j];
    }
    for (int64_t r = r0; r < r1; r += step) {
        const int64_t i = r * c + col;
        float v[V];
        cnn_ew_load<T, V>(x, i, v);
        if (shifted) {
            for (int j = 0; j < V; j++) {
                const double d = (double)v[j] - ctr[j];
                s1[j] += d;
                s2[j] += d * d;
            }
        } else {
            float g[V];
            cnn_ew_load<T, V>(dy, i, g);
            cnn_ew_act_grad_y<T, V>(act, alpha, y, i, g);
            if (dres) cnn_ew_store<T, V>(dres, i, g);
            for (int j = 0; j < V; j++) {
                s1[j] += g[j];
                s2[j] += (double)g[j] * ((double)v[j] - ctr[j]);
            }
        }
    }
}

#endif
