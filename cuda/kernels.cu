// Our CUDA kernels: fill and casts, activations, bias + activation epilogue, column sums (bias gradients), softmax
// cross-entropy, the optimizers (per tensor, and over a table of tensors in one launch), explicit padding, pooling,
// dropout, add, concat, sums of squares (likewise), finiteness checks and batch normalization.
//
// The math of the elementwise ops is core/ew_math.h, the same functions the CPU backend runs (compiled here as
// __host__ __device__): this file only schedules them. Activation-like data is f32, f16 or bf16, loaded as float,
// computed in float and rounded to nearest even on the way out. The kernels that carry most of a large network's
// traffic (batchnorm, activations, add) are templates on the element type with their bodies in kernels_ew.cuh,
// 16 bytes a load where the pointers allow; the others take the cnn_dtype at run time (the branch is the same for
// every thread). Launchers are C-callable (kernels.h) and return the launch status; nothing here allocates or
// synchronizes.
#include <math.h>
#include <stdint.h>

#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "core/ew_math.h"
#include "cuda/kernels.h"
#include "cuda/kernels_ew.cuh"

// ---------------------------------------------------------------------------------------------------------------
// launch geometry, loads and stores

// 256 threads: 8 warps, a common default that keeps every SM busy for memory-bound elementwise kernels.
static const int kBlock = 256;
// Grid-stride loops past this many blocks: 16K blocks x 256 threads is several waves on any current GPU.
static const int64_t kMaxBlocks = 16384;

static unsigned cnn_cuda_blocks(int64_t n)
{
    int64_t b = (n + kBlock - 1) / kBlock;
    if (b > kMaxBlocks) b = kMaxBlocks;
    return (unsigned)(b < 1 ? 1 : b);
}

#define CNN_CUDA_GRID_STRIDE(i, n)                                                            \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                  \
         i += (int64_t)gridDim.x * blockDim.x)

// this thread's index in the launch, and the launch's thread count: the (t, nt) of kernels_ew.cuh's bodies
#define CNN_CUDA_THREAD ((int64_t)blockIdx.x * blockDim.x + threadIdx.x)
#define CNN_CUDA_THREADS ((int64_t)gridDim.x * blockDim.x)

static bool cnn_cuda_aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// Runs L<T>::run(args...) for the element type of the cnn_dtype dt (f16, bf16, else f32).
template <template <typename> class L, typename... A> static cudaError_t cnn_cuda_by_dtype(int dt, A... args)
{
    if (dt == CNN_F16) return L<__half>::run(args...);
    if (dt == CNN_BF16) return L<__nv_bfloat16>::run(args...);
    return L<float>::run(args...);
}

// The launch of a kernel templated on the vector width (kernels_ew.cuh): launch(std::integral_constant<int, V>)
// with V the 16-byte width of T when `vec` (every pointer aligned, and for per-channel kernels c a multiple of it),
// else 1; then the launch's status.
template <typename T, typename L> static cudaError_t cnn_cuda_vec_or_elem(bool vec, L launch)
{
    if (vec) launch(std::integral_constant<int, cnn_ew_width<T>::value>());
    else launch(std::integral_constant<int, 1>());
    return cudaGetLastError();
}

// Blocks for a flat kernel over n elements in vectors of V.
static unsigned cnn_cuda_vec_blocks(int64_t n, int v) { return cnn_cuda_blocks((n + v - 1) / v); }

// Blocks for a per-channel kernel over (m, c) in cv vectors a row: one thread a vector up to the cap, and never
// fewer threads than a row has vectors (kernels_ew.cuh: nt >= cv).
static unsigned cnn_cuda_channel_blocks(int64_t m, int64_t cv)
{
    const int64_t least = (cv + kBlock - 1) / kBlock;
    const int64_t b = cnn_cuda_blocks(m * cv);
    return (unsigned)(b > least ? b : least);
}

static __device__ __forceinline__ float ld(const void *p, int dt, int64_t i)
{
    if (dt == CNN_F16) return __half2float(static_cast<const __half *>(p)[i]);
    if (dt == CNN_BF16) return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    return static_cast<const float *>(p)[i];
}

static __device__ __forceinline__ void st(void *p, int dt, int64_t i, float v)
{
    if (dt == CNN_F16) static_cast<__half *>(p)[i] = __float2half_rn(v);
    else if (dt == CNN_BF16) static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v);
    else static_cast<float *>(p)[i] = v;
}

// ---------------------------------------------------------------------------------------------------------------
// fill, cast, activations, bias + activation

static __global__ void cnn_cuda_fill_kernel(void *x, int dt, int64_t n, float value)
{
    CNN_CUDA_GRID_STRIDE(i, n) st(x, dt, i, value);
}

static __global__ void cnn_cuda_cast_kernel(const void *src, int sdt, void *dst, int ddt, int64_t n)
{
    CNN_CUDA_GRID_STRIDE(i, n) st(dst, ddt, i, ld(src, sdt, i));
}

template <typename T, int V>
static __global__ void cnn_cuda_act_forward_kernel(cnn_act act, float alpha, const T *x, T *y, int64_t n)
{
    cnn_ew_act_forward<T, V>(CNN_CUDA_THREAD, CNN_CUDA_THREADS, act, alpha, x, y, n);
}

template <typename T> struct cnn_cuda_act_forward_launch {
    static cudaError_t run(cudaStream_t stream, cnn_act act, float alpha, const void *x, void *y, int64_t n)
    {
        const T *xt = static_cast<const T *>(x);
        T *yt = static_cast<T *>(y);
        return cnn_cuda_vec_or_elem<T>(cnn_cuda_aligned16(x) && cnn_cuda_aligned16(y), [&](auto v) {
            constexpr int V = decltype(v)::value;
            cnn_cuda_act_forward_kernel<T, V><<<cnn_cuda_vec_blocks(n, V), kBlock, 0, stream>>>(act, alpha, xt, yt, n);
        });
    }
};

template <typename T, int V>
static __global__ void cnn_cuda_act_backward_kernel(cnn_act act, float alpha, int from_x, const T *xy, const T *dy,
                                                    T *dx, int64_t n)
{
    cnn_ew_act_backward<T, V>(CNN_CUDA_THREAD, CNN_CUDA_THREADS, act, alpha, from_x, xy, dy, dx, n);
}

template <typename T> struct cnn_cuda_act_backward_launch {
    static cudaError_t run(cudaStream_t stream, cnn_act act, float alpha, int from_x, const void *xy, const void *dy,
                           void *dx, int64_t n)
    {
        const T *xyt = static_cast<const T *>(xy), *dyt = static_cast<const T *>(dy);
        T *dxt = static_cast<T *>(dx);
        const bool vec = cnn_cuda_aligned16(xy) && cnn_cuda_aligned16(dy) && cnn_cuda_aligned16(dx);
        return cnn_cuda_vec_or_elem<T>(vec, [&](auto v) {
            constexpr int V = decltype(v)::value;
            cnn_cuda_act_backward_kernel<T, V><<<cnn_cuda_vec_blocks(n, V), kBlock, 0, stream>>>(act, alpha, from_x,
                                                                                              xyt, dyt, dxt, n);
        });
    }
};

// y (rows, cols), b (cols) or NULL
static __global__ void cnn_cuda_bias_act_kernel(void *y, int dt, const float *b, int64_t rows, int64_t cols,
                                                cnn_act act, float alpha)
{
    const int64_t n = rows * cols;
    CNN_CUDA_GRID_STRIDE(i, n)
    {
        float v = ld(y, dt, i);
        if (b) v += b[i % cols];
        st(y, dt, i, cnn_act_apply(act, alpha, v));
    }
}

extern "C" cudaError_t cnn_cuda_launch_fill(cudaStream_t stream, void *x, int dt, int64_t n, float value)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_fill_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(x, dt, n, value);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_cast(cudaStream_t stream, const void *src, int src_dt, void *dst, int dst_dt,
                                            int64_t n)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_cast_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(src, src_dt, dst, dst_dt, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_act_forward(cudaStream_t stream, cnn_act act, float alpha, const void *x,
                                                   void *y, int dt, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    return cnn_cuda_by_dtype<cnn_cuda_act_forward_launch>(dt, stream, act, alpha, x, y, n);
}

extern "C" cudaError_t cnn_cuda_launch_act_backward(cudaStream_t stream, cnn_act act, float alpha, int from_x,
                                                    const void *xy, const void *dy, void *dx, int dt, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    return cnn_cuda_by_dtype<cnn_cuda_act_backward_launch>(dt, stream, act, alpha, from_x, xy, dy, dx, n);
}

extern "C" cudaError_t cnn_cuda_launch_bias_act(cudaStream_t stream, void *y, int dt, const float *b, int64_t rows,
                                                int64_t cols, cnn_act act, float alpha)
{
    if (rows <= 0 || cols <= 0) return cudaSuccess;
    cnn_cuda_bias_act_kernel<<<cnn_cuda_blocks(rows * cols), kBlock, 0, stream>>>(y, dt, b, rows, cols, act, alpha);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// column sums: bias gradients of conv (rows = N*OH*OW) and dense (rows = N)
//
// Pass 1: a 32 x 8 block sums one chunk of rows for 32 adjacent columns (a warp reads contiguous bytes), into
// partial (chunks, cols). Pass 2 sums the chunks. With one chunk, pass 1 writes the result directly.

enum { kColTx = 32, kColTy = 8 };
// at least this many rows per chunk (fewer would make pass 2 the larger one) and at most this many chunks
static const int64_t kColMinRows = 256;
static const int64_t kColMaxChunks = 1024;

static int64_t cnn_cuda_col_chunk_rows(int64_t rows)
{
    int64_t per = (rows + kColMaxChunks - 1) / kColMaxChunks;
    return per < kColMinRows ? kColMinRows : per;
}

static int64_t cnn_cuda_col_chunks(int64_t rows)
{
    int64_t per = cnn_cuda_col_chunk_rows(rows);
    return (rows + per - 1) / per;
}

static __global__ void cnn_cuda_col_sum_partial_kernel(const void *x, int dt, int64_t rows, int64_t cols,
                                                       int64_t rows_per_chunk, float *out)
{
    __shared__ float s[kColTy][kColTx + 1];
    const int64_t col = (int64_t)blockIdx.x * kColTx + threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    float acc = 0.0f;
    if (col < cols)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += kColTy) acc += ld(x, dt, r * cols + col);
    s[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0) {
        float t = 0.0f;
        for (int k = 0; k < kColTy; k++) t += s[k][threadIdx.x];
        if (col < cols) out[(int64_t)blockIdx.y * cols + col] = t;
    }
}

static __global__ void cnn_cuda_col_sum_final_kernel(const float *partial, int64_t chunks, int64_t cols, float *out)
{
    CNN_CUDA_GRID_STRIDE(col, cols)
    {
        float t = 0.0f;
        for (int64_t k = 0; k < chunks; k++) t += partial[k * cols + col];
        out[col] = t;
    }
}

extern "C" int64_t cnn_cuda_col_sum_scratch(int64_t rows, int64_t cols)
{
    int64_t chunks = cnn_cuda_col_chunks(rows);
    return chunks > 1 ? chunks * cols : 0;
}

extern "C" cudaError_t cnn_cuda_launch_col_sum(cudaStream_t stream, const void *x, int dt, int64_t rows, int64_t cols,
                                               float *out, float *partial)
{
    if (cols <= 0) return cudaSuccess;
    if (rows <= 0) return cnn_cuda_launch_fill(stream, out, CNN_F32, cols, 0.0f);
    const int64_t per = cnn_cuda_col_chunk_rows(rows);
    const int64_t chunks = cnn_cuda_col_chunks(rows);
    dim3 block(kColTx, kColTy);
    dim3 grid((unsigned)((cols + kColTx - 1) / kColTx), (unsigned)chunks);
    cnn_cuda_col_sum_partial_kernel<<<grid, block, 0, stream>>>(x, dt, rows, cols, per, chunks > 1 ? partial : out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || chunks == 1) return e;
    cnn_cuda_col_sum_final_kernel<<<cnn_cuda_blocks(cols), kBlock, 0, stream>>>(partial, chunks, cols, out);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// softmax cross-entropy: one warp per row, the CPU backend's expressions (in float here, double there)

static const int kWarp = 32;
static const int kRowsPerBlock = 256 / 32;

static __device__ float cnn_cuda_warp_max(float v)
{
    for (int off = kWarp / 2; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
    return v;
}

static __device__ float cnn_cuda_warp_sum(float v)
{
    for (int off = kWarp / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    return v;
}

static __device__ void cnn_cuda_defer(cnn_cuda_deferred *d, int code, int label, int64_t sample, int64_t limit,
                                      float value)
{
    if (atomicCAS(&d->code, CNN_CUDA_DEFERRED_NONE, code) == CNN_CUDA_DEFERRED_NONE) {
        d->label = label;
        d->sample = sample;
        d->limit = limit;
        d->value = value;
        __threadfence_system();
    }
}

static __global__ void cnn_cuda_softmax_xent_kernel(const void *logits, int dt, const int32_t *labels, int64_t n,
                                                    int64_t k, float *probs, float *losses, void *dlogits,
                                                    float scale, const float *cw, float smooth,
                                                    cnn_cuda_deferred *deferred)
{
    const int64_t row = (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (row >= n) return; // the whole warp: row is uniform across it
    const int64_t base = row * k;
    const int32_t label = labels ? labels[row] : 0;
    const float weight = cw ? cw[label >= 0 && label < k ? label : 0] : 1.0f;
    const int bad_label = label < 0 || label >= k;
    const int bad_weight = !bad_label && !(weight > 0.0f && isfinite(weight));
    if (bad_label || bad_weight) {
        if (lane == 0) {
            if (bad_label) cnn_cuda_defer(deferred, CNN_CUDA_DEFERRED_BAD_LABEL, label, row, k, 0.0f);
            else cnn_cuda_defer(deferred, CNN_CUDA_DEFERRED_BAD_WEIGHT, label, row, k, weight);
            if (losses) losses[row] = nanf("");
        }
        for (int64_t j = lane; j < k; j += kWarp) {
            if (probs) probs[base + j] = nanf("");
            if (dlogits) st(dlogits, dt, base + j, nanf(""));
        }
        return;
    }
    // target = (1 - s) onehot + s / K; loss = w[label] * (log sum exp(z - m) - sum_j target_j (z_j - m))
    float on_target, off_target;
    CNN_XENT_TARGETS(float, smooth, k, on_target, off_target);
    // read before any output is written; the shuffles below order every lane's reads before any lane's writes
    const float x_label = ld(logits, dt, base + label);
    float m = -INFINITY;
    for (int64_t j = lane; j < k; j += kWarp) m = fmaxf(m, ld(logits, dt, base + j));
    m = cnn_cuda_warp_max(m);
    float s = 0.0f, dot = 0.0f;
    for (int64_t j = lane; j < k; j += kWarp) {
        const float d = ld(logits, dt, base + j) - m;
        s += expf(d);
        dot += off_target * d;
    }
    s = cnn_cuda_warp_sum(s); // max-subtracted: every term in (0, 1], the sum in [1, K]
    dot = smooth != 0.0f ? cnn_cuda_warp_sum(dot) : 0.0f;
    if (labels) dot += (on_target - off_target) * (x_label - m);
    if (losses && lane == 0) losses[row] = weight * (logf(s) - dot);
    if (probs || dlogits) {
        const float inv = 1.0f / s, gs = scale * weight;
        for (int64_t j = lane; j < k; j += kWarp) {
            const float p = expf(ld(logits, dt, base + j) - m) * inv;
            if (probs) probs[base + j] = p;
            if (dlogits) st(dlogits, dt, base + j, gs * (p - (j == label ? on_target : off_target)));
        }
    }
}

extern "C" cudaError_t cnn_cuda_launch_softmax_xent(cudaStream_t stream, const void *logits, int dt,
                                                    const int32_t *labels, int64_t n, int64_t k, float *probs,
                                                    float *losses, void *dlogits, float grad_scale,
                                                    const float *class_weights, float label_smoothing,
                                                    cnn_cuda_deferred *deferred)
{
    if (n <= 0 || k <= 0) return cudaSuccess;
    const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    cnn_cuda_softmax_xent_kernel<<<(unsigned)blocks, kRowsPerBlock * kWarp, 0, stream>>>(
        logits, dt, labels, n, k, probs, losses, dlogits, grad_scale, class_weights, label_smoothing, deferred);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates: the f32 master weights, then their low-precision copy

// One element of each optimizer, for the per-tensor and the multi-tensor kernels alike (the same code, so the same
// bits): the step on the f32 master, then its low-precision copy.
static __device__ __forceinline__ void cnn_cuda_sgd_elem(const cnn_cuda_opt_io &io, float *v, int64_t i, float lr,
                                                         float mu, float wd, int nesterov)
{
    const float g = ld(io.grad, io.grad_dt, i) * io.grad_scale;
    // without a velocity (mu == 0, which cnn_sgd_step leaves alone) a register stands in; a pointer that may point
    // at either would put the velocity through local memory
    if (v) {
        cnn_sgd_step(&io.param[i], g, &v[i], lr, mu, wd, nesterov);
    } else {
        float unused = 0.0f;
        cnn_sgd_step(&io.param[i], g, &unused, lr, mu, wd, nesterov);
    }
    if (io.param_lp) st(io.param_lp, io.lp_dt, i, io.param[i]);
}

static __device__ __forceinline__ void cnn_cuda_adam_elem(const cnn_cuda_opt_io &io, float *m, float *v, int64_t i,
                                                          float lr, float b1, float b2, float eps, float wd,
                                                          int decoupled, float bc1, float bc2)
{
    cnn_adam_step(&io.param[i], ld(io.grad, io.grad_dt, i) * io.grad_scale, &m[i], &v[i], lr, b1, b2, eps, wd,
                  decoupled, bc1, bc2);
    if (io.param_lp) st(io.param_lp, io.lp_dt, i, io.param[i]);
}

static __device__ __forceinline__ void cnn_cuda_rmsprop_elem(const cnn_cuda_opt_io &io, float *sq, float *mom,
                                                             int64_t i, float lr, float rho, float eps, float mu,
                                                             float wd)
{
    const float g = ld(io.grad, io.grad_dt, i) * io.grad_scale;
    if (mom) { // as in cnn_cuda_sgd_elem: the momentum stays in a register when there is none (mu == 0)
        cnn_rmsprop_step(&io.param[i], g, &sq[i], &mom[i], lr, rho, eps, mu, wd);
    } else {
        float unused = 0.0f;
        cnn_rmsprop_step(&io.param[i], g, &sq[i], &unused, lr, rho, eps, mu, wd);
    }
    if (io.param_lp) st(io.param_lp, io.lp_dt, i, io.param[i]);
}

static __global__ void cnn_cuda_sgd_kernel(cnn_cuda_opt_io io, float *v, float lr, float mu, float wd, int nesterov)
{
    CNN_CUDA_GRID_STRIDE(i, io.n) cnn_cuda_sgd_elem(io, v, i, lr, mu, wd, nesterov);
}

static __global__ void cnn_cuda_adam_kernel(cnn_cuda_opt_io io, float *m, float *v, float lr, float b1, float b2,
                                            float eps, float wd, int decoupled, float bc1, float bc2)
{
    CNN_CUDA_GRID_STRIDE(i, io.n) cnn_cuda_adam_elem(io, m, v, i, lr, b1, b2, eps, wd, decoupled, bc1, bc2);
}

static __global__ void cnn_cuda_rmsprop_kernel(cnn_cuda_opt_io io, float *sq, float *mom, float lr, float rho,
                                               float eps, float mu, float wd)
{
    CNN_CUDA_GRID_STRIDE(i, io.n) cnn_cuda_rmsprop_elem(io, sq, mom, i, lr, rho, eps, mu, wd);
}

extern "C" cudaError_t cnn_cuda_launch_sgd(cudaStream_t stream, const cnn_cuda_opt_io *io, float *velocity, float lr,
                                           float momentum, float weight_decay, int nesterov)
{
    if (io->n <= 0) return cudaSuccess;
    cnn_cuda_sgd_kernel<<<cnn_cuda_blocks(io->n), kBlock, 0, stream>>>(*io, momentum != 0.0f ? velocity : NULL, lr,
                                                                       momentum, weight_decay, nesterov);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_adam(cudaStream_t stream, const cnn_cuda_opt_io *io, float *m, float *v,
                                            float lr, float beta1, float beta2, float eps, float weight_decay,
                                            int decoupled, float bc1, float bc2)
{
    if (io->n <= 0) return cudaSuccess;
    cnn_cuda_adam_kernel<<<cnn_cuda_blocks(io->n), kBlock, 0, stream>>>(*io, m, v, lr, beta1, beta2, eps,
                                                                        weight_decay, decoupled, bc1, bc2);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_rmsprop(cudaStream_t stream, const cnn_cuda_opt_io *io, float *sq, float *mom,
                                               float lr, float rho, float eps, float momentum, float weight_decay)
{
    if (io->n <= 0) return cudaSuccess;
    cnn_cuda_rmsprop_kernel<<<cnn_cuda_blocks(io->n), kBlock, 0, stream>>>(*io, sq, momentum != 0.0f ? mom : NULL, lr,
                                                                           rho, eps, momentum, weight_decay);
    return cudaGetLastError();
}

// The multi-tensor updates: block b works on one chunk of one tensor, found by a binary search of the table.

// The entry of `table` (count >= 1 entries, `first` strictly increasing) whose blocks hold block b: the last with
// first <= b.
template <typename Desc>
static __device__ __forceinline__ const Desc &cnn_cuda_table_owner(const Desc *table, int count, int64_t b)
{
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (table[mid].first <= b) lo = mid;
        else hi = mid - 1;
    }
    return table[lo];
}

// This block's tensor as the per-tensor kernels see it, and its chunk [*lo, *hi).
static __device__ __forceinline__ cnn_cuda_opt_io cnn_cuda_multi_chunk(const cnn_cuda_opt_desc *table, int count,
                                                                       float grad_scale, float **s1, float **s2,
                                                                       int64_t *lo, int64_t *hi)
{
    const cnn_cuda_opt_desc &d = cnn_cuda_table_owner(table, count, (int64_t)blockIdx.x);
    *lo = ((int64_t)blockIdx.x - d.first) * CNN_CUDA_MULTI_CHUNK;
    *hi = *lo + CNN_CUDA_MULTI_CHUNK < d.n ? *lo + CNN_CUDA_MULTI_CHUNK : d.n;
    *s1 = d.s1;
    *s2 = d.s2;
    return cnn_cuda_opt_io{d.param, d.grad, d.grad_dt, d.param_lp, d.lp_dt, d.n, grad_scale};
}

static __global__ void cnn_cuda_sgd_multi_kernel(const cnn_cuda_opt_desc *table, int count, float gs, float lr,
                                                 float mu, float wd, int nesterov)
{
    float *v, *unused;
    int64_t lo, hi;
    const cnn_cuda_opt_io io = cnn_cuda_multi_chunk(table, count, gs, &v, &unused, &lo, &hi);
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x) cnn_cuda_sgd_elem(io, v, i, lr, mu, wd, nesterov);
}

static __global__ void cnn_cuda_adam_multi_kernel(const cnn_cuda_opt_desc *table, int count, float gs, float lr,
                                                  float b1, float b2, float eps, float wd, int decoupled, float bc1,
                                                  float bc2)
{
    float *m, *v;
    int64_t lo, hi;
    const cnn_cuda_opt_io io = cnn_cuda_multi_chunk(table, count, gs, &m, &v, &lo, &hi);
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
        cnn_cuda_adam_elem(io, m, v, i, lr, b1, b2, eps, wd, decoupled, bc1, bc2);
}

static __global__ void cnn_cuda_rmsprop_multi_kernel(const cnn_cuda_opt_desc *table, int count, float gs, float lr,
                                                     float rho, float eps, float mu, float wd)
{
    float *sq, *mom;
    int64_t lo, hi;
    const cnn_cuda_opt_io io = cnn_cuda_multi_chunk(table, count, gs, &sq, &mom, &lo, &hi);
    for (int64_t i = lo + threadIdx.x; i < hi; i += blockDim.x)
        cnn_cuda_rmsprop_elem(io, sq, mom, i, lr, rho, eps, mu, wd);
}

// A grid of `blocks` blocks, when it fits in gridDim.x.
static bool cnn_cuda_multi_grid(int count, int64_t blocks)
{
    return count >= 1 && blocks >= 1 && blocks <= 0x7fffffff;
}

extern "C" cudaError_t cnn_cuda_launch_sgd_multi(cudaStream_t stream, const cnn_cuda_opt_desc *table, int count,
                                                 int64_t blocks, float grad_scale, float lr, float momentum,
                                                 float weight_decay, int nesterov)
{
    if (!cnn_cuda_multi_grid(count, blocks)) return cudaErrorInvalidValue;
    cnn_cuda_sgd_multi_kernel<<<(unsigned)blocks, kBlock, 0, stream>>>(table, count, grad_scale, lr, momentum,
                                                                        weight_decay, nesterov);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_adam_multi(cudaStream_t stream, const cnn_cuda_opt_desc *table, int count,
                                                  int64_t blocks, float grad_scale, float lr, float beta1, float beta2,
                                                  float eps, float weight_decay, int decoupled, float bc1, float bc2)
{
    if (!cnn_cuda_multi_grid(count, blocks)) return cudaErrorInvalidValue;
    cnn_cuda_adam_multi_kernel<<<(unsigned)blocks, kBlock, 0, stream>>>(table, count, grad_scale, lr, beta1, beta2,
                                                                         eps, weight_decay, decoupled, bc1, bc2);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_rmsprop_multi(cudaStream_t stream, const cnn_cuda_opt_desc *table, int count,
                                                     int64_t blocks, float grad_scale, float lr, float rho, float eps,
                                                     float momentum, float weight_decay)
{
    if (!cnn_cuda_multi_grid(count, blocks)) return cudaErrorInvalidValue;
    cnn_cuda_rmsprop_multi_kernel<<<(unsigned)blocks, kBlock, 0, stream>>>(table, count, grad_scale, lr, rho, eps,
                                                                            momentum, weight_decay);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// explicit padding (convolutions with asymmetric padding run on a padded copy)

// The (n, h, w, c) of element i of an NHWC tensor of height hh, width ww and cc channels.
static __device__ void cnn_cuda_nhwc_index(int64_t i, int64_t hh, int64_t ww, int64_t cc, int64_t *n, int64_t *h,
                                           int64_t *w, int64_t *c)
{
    *c = i % cc;
    int64_t t = i / cc;
    *w = t % ww;
    t /= ww;
    *h = t % hh;
    *n = t / hh;
}

static __global__ void cnn_cuda_pad_kernel(const void *x, void *xp, int dt, cnn_cuda_window g)
{
    const int64_t hp = g.h + g.pad_top + g.pad_bottom, wp = g.w + g.pad_left + g.pad_right;
    const int64_t total = g.n * hp * wp * g.c;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        int64_t n, h, w, c;
        cnn_cuda_nhwc_index(i, hp, wp, g.c, &n, &h, &w, &c);
        h -= g.pad_top;
        w -= g.pad_left;
        st(xp, dt, i, (h >= 0 && h < g.h && w >= 0 && w < g.w) ? ld(x, dt, ((n * g.h + h) * g.w + w) * g.c + c) : 0.0f);
    }
}

static __global__ void cnn_cuda_crop_kernel(const void *xp, void *x, int dt, cnn_cuda_window g)
{
    const int64_t hp = g.h + g.pad_top + g.pad_bottom, wp = g.w + g.pad_left + g.pad_right;
    const int64_t total = g.n * g.h * g.w * g.c;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        int64_t n, h, w, c;
        cnn_cuda_nhwc_index(i, g.h, g.w, g.c, &n, &h, &w, &c);
        st(x, dt, i, ld(xp, dt, ((n * hp + h + g.pad_top) * wp + w + g.pad_left) * g.c + c));
    }
}

extern "C" cudaError_t cnn_cuda_launch_pad(cudaStream_t stream, const void *x, void *xp, int dt,
                                           const cnn_cuda_window *g)
{
    const int64_t total = g->n * (g->h + g->pad_top + g->pad_bottom) * (g->w + g->pad_left + g->pad_right) * g->c;
    if (total <= 0) return cudaSuccess;
    cnn_cuda_pad_kernel<<<cnn_cuda_blocks(total), kBlock, 0, stream>>>(x, xp, dt, *g);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_crop(cudaStream_t stream, const void *xp, void *x, int dt,
                                            const cnn_cuda_window *g)
{
    const int64_t total = g->n * g->h * g->w * g->c;
    if (total <= 0) return cudaSuccess;
    cnn_cuda_crop_kernel<<<cnn_cuda_blocks(total), kBlock, 0, stream>>>(xp, x, dt, *g);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// pooling with any padding

// Calls f(kh * KW + kw, value) for each real (non-padding) element of window (oh, ow) for channel c of sample n,
// in row-major window order.
template <typename F>
static __device__ void cnn_cuda_window_each(const void *x, int dt, const cnn_cuda_window &g, int64_t n, int64_t oh,
                                            int64_t ow, int64_t c, F f)
{
    const int64_t h0 = oh * g.sh - g.pad_top, w0 = ow * g.sw - g.pad_left;
    for (int i = 0; i < g.kh; i++) {
        const int64_t h = h0 + i;
        if (h < 0 || h >= g.h) continue;
        for (int j = 0; j < g.kw; j++) {
            const int64_t w = w0 + j;
            if (w >= 0 && w < g.w) f(i * g.kw + j, ld(x, dt, ((n * g.h + h) * g.w + w) * g.c + c));
        }
    }
}

// Index (kh * KW + kw) of the max of window (oh, ow) for channel c of sample n; -1 when the window holds only
// padding (the checks on the host rule that out).
static __device__ int cnn_cuda_window_argmax(const void *x, int dt, const cnn_cuda_window &g, int64_t n, int64_t oh,
                                             int64_t ow, int64_t c, float *best_out)
{
    int best_i = -1;
    float best = 0.0f;
    cnn_cuda_window_each(x, dt, g, n, oh, ow, c, [&](int at, float v) {
        if (best_i < 0 || v > best) {
            best = v;
            best_i = at;
        }
    });
    *best_out = best;
    return best_i;
}

// The number of real (non-padding) elements of window (oh, ow).
static __device__ int cnn_cuda_window_count(const cnn_cuda_window &g, int64_t oh, int64_t ow)
{
    const int64_t h0 = oh * g.sh - g.pad_top, w0 = ow * g.sw - g.pad_left;
    const int64_t h1 = h0 + g.kh < g.h ? h0 + g.kh : g.h, w1 = w0 + g.kw < g.w ? w0 + g.kw : g.w;
    const int64_t hh = h1 - (h0 > 0 ? h0 : 0), ww = w1 - (w0 > 0 ? w0 : 0);
    return (int)((hh > 0 ? hh : 0) * (ww > 0 ? ww : 0));
}

static __global__ void cnn_cuda_pool_forward_kernel(cnn_pool_mode mode, const void *x, void *y, int dt,
                                                    cnn_cuda_window g)
{
    const int64_t total = g.n * g.oh * g.ow * g.c;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        int64_t n, oh, ow, c;
        cnn_cuda_nhwc_index(i, g.oh, g.ow, g.c, &n, &oh, &ow, &c);
        if (mode == CNN_POOL_MAX) {
            float best;
            int at = cnn_cuda_window_argmax(x, dt, g, n, oh, ow, c, &best);
            st(y, dt, i, at < 0 ? nanf("") : best);
        } else {
            float s = 0.0f;
            cnn_cuda_window_each(x, dt, g, n, oh, ow, c, [&](int, float v) { s += v; });
            const int count = cnn_cuda_window_count(g, oh, ow);
            st(y, dt, i, count > 0 ? s / (float)count : nanf(""));
        }
    }
}

static __global__ void cnn_cuda_pool_backward_kernel(cnn_pool_mode mode, const void *x, const void *dy, void *dx,
                                                     int dt, cnn_cuda_window g)
{
    const int64_t total = g.n * g.h * g.w * g.c;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        int64_t n, h, w, c;
        cnn_cuda_nhwc_index(i, g.h, g.w, g.c, &n, &h, &w, &c);
        // windows (oh, ow) whose span [oh*sh - top, oh*sh - top + kh) holds h, and likewise for w
        const int64_t hp = h + g.pad_top, wp = w + g.pad_left;
        const int64_t oh_lo = hp - g.kh + 1 <= 0 ? 0 : (hp - g.kh + 1 + g.sh - 1) / g.sh;
        const int64_t ow_lo = wp - g.kw + 1 <= 0 ? 0 : (wp - g.kw + 1 + g.sw - 1) / g.sw;
        const int64_t oh_hi = hp / g.sh < g.oh - 1 ? hp / g.sh : g.oh - 1;
        const int64_t ow_hi = wp / g.sw < g.ow - 1 ? wp / g.sw : g.ow - 1;
        float acc = 0.0f;
        for (int64_t oh = oh_lo; oh <= oh_hi; oh++) {
            for (int64_t ow = ow_lo; ow <= ow_hi; ow++) {
                const float d = ld(dy, dt, ((n * g.oh + oh) * g.ow + ow) * g.c + c);
                if (mode == CNN_POOL_MAX) {
                    float best;
                    const int at = cnn_cuda_window_argmax(x, dt, g, n, oh, ow, c, &best);
                    const int mine = (int)((hp - oh * g.sh) * g.kw + (wp - ow * g.sw));
                    if (at == mine) acc += d;
                } else {
                    const int count = cnn_cuda_window_count(g, oh, ow);
                    if (count > 0) acc += d / (float)count;
                }
            }
        }
        st(dx, dt, i, acc);
    }
}

extern "C" cudaError_t cnn_cuda_launch_pool_forward(cudaStream_t stream, cnn_pool_mode mode, const void *x, void *y,
                                                    int dt, const cnn_cuda_window *g)
{
    const int64_t total = g->n * g->oh * g->ow * g->c;
    if (total <= 0) return cudaSuccess;
    cnn_cuda_pool_forward_kernel<<<cnn_cuda_blocks(total), kBlock, 0, stream>>>(mode, x, y, dt, *g);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_pool_backward(cudaStream_t stream, cnn_pool_mode mode, const void *x,
                                                     const void *dy, void *dx, int dt, const cnn_cuda_window *g)
{
    const int64_t total = g->n * g->h * g->w * g->c;
    if (total <= 0) return cudaSuccess;
    cnn_cuda_pool_backward_kernel<<<cnn_cuda_blocks(total), kBlock, 0, stream>>>(mode, x, dy, dx, dt, *g);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// dropout, add, scale

static __global__ void cnn_cuda_dropout_kernel(const void *in, void *out, int dt, int64_t n, float rate,
                                               float inv_keep, uint64_t seed, uint64_t offset)
{
    CNN_CUDA_GRID_STRIDE(i, n)
    st(out, dt, i, cnn_dropout_keep(seed, offset + (uint64_t)i, rate) ? ld(in, dt, i) * inv_keep : 0.0f);
}

extern "C" cudaError_t cnn_cuda_launch_dropout(cudaStream_t stream, const void *in, void *out, int dt, int64_t n,
                                               float rate, uint64_t seed, uint64_t offset)
{
    if (n <= 0) return cudaSuccess;
    if (rate == 0.0f) {
        if (out == in) return cudaSuccess;
        return cudaMemcpyAsync(out, in, (size_t)n * (dt == CNN_F32 ? 4 : 2), cudaMemcpyDeviceToDevice, stream);
    }
    // the CPU backend's expression: 1 / (1 - rate) in float, then one multiply
    const float inv_keep = 1.0f / (1.0f - rate);
    cnn_cuda_dropout_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(in, out, dt, n, rate, inv_keep, seed, offset);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_add_kernel(const void *a, int adt, const void *b, int bdt, void *y, int ydt,
                                           int64_t n, float alpha, float beta)
{
    CNN_CUDA_GRID_STRIDE(i, n) st(y, ydt, i, alpha * ld(a, adt, i) + beta * ld(b, bdt, i));
}

template <typename T, int V>
static __global__ void cnn_cuda_add_same_kernel(const T *a, const T *b, T *y, int64_t n, float alpha, float beta)
{
    cnn_ew_add<T, V>(CNN_CUDA_THREAD, CNN_CUDA_THREADS, a, b, y, n, alpha, beta);
}

template <typename T> struct cnn_cuda_add_same_launch {
    static cudaError_t run(cudaStream_t stream, const void *a, const void *b, void *y, int64_t n, float alpha,
                           float beta)
    {
        const T *at = static_cast<const T *>(a), *bt = static_cast<const T *>(b);
        T *yt = static_cast<T *>(y);
        const bool vec = cnn_cuda_aligned16(a) && cnn_cuda_aligned16(b) && cnn_cuda_aligned16(y);
        return cnn_cuda_vec_or_elem<T>(vec, [&](auto v) {
            constexpr int V = decltype(v)::value;
            cnn_cuda_add_same_kernel<T, V><<<cnn_cuda_vec_blocks(n, V), kBlock, 0, stream>>>(at, bt, yt, n, alpha,
                                                                                          beta);
        });
    }
};

static __global__ void cnn_cuda_scale_kernel(void *x, int dt, int64_t n, float alpha)
{
    CNN_CUDA_GRID_STRIDE(i, n) st(x, dt, i, ld(x, dt, i) * alpha);
}

extern "C" cudaError_t cnn_cuda_launch_add(cudaStream_t stream, const void *a, int a_dt, const void *b, int b_dt,
                                           void *y, int y_dt, int64_t n, float alpha, float beta)
{
    if (n <= 0) return cudaSuccess;
    if (a_dt == y_dt && b_dt == y_dt) /* the common case: gradients summed at a branch, in one dtype */
        return cnn_cuda_by_dtype<cnn_cuda_add_same_launch>(y_dt, stream, a, b, y, n, alpha, beta);
    cnn_cuda_add_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(a, a_dt, b, b_dt, y, y_dt, n, alpha, beta);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_scale(cudaStream_t stream, void *x, int dt, int64_t n, float alpha)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_scale_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(x, dt, n, alpha);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// sum of squares: one block per fixed chunk, a fixed-shape tree in shared memory; finiteness

// The partial sum of x[lo, hi) (at most one chunk) by this block, in thread 0's *out.
static __device__ __forceinline__ void cnn_cuda_sum_squares_chunk(const void *x, int dt, int64_t lo, int64_t hi,
                                                                  double *out)
{
    __shared__ double s[kBlock];
    double acc = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += kBlock) {
        const double v = ld(x, dt, i);
        acc += v * v;
    }
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int half = kBlock / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = s[0];
}

static __global__ void cnn_cuda_sum_squares_kernel(const void *x, int dt, int64_t n, double *partial)
{
    const int64_t lo = (int64_t)blockIdx.x * CNN_CUDA_SUMSQ_CHUNK;
    const int64_t hi = lo + CNN_CUDA_SUMSQ_CHUNK < n ? lo + CNN_CUDA_SUMSQ_CHUNK : n;
    cnn_cuda_sum_squares_chunk(x, dt, lo, hi, &partial[blockIdx.x]);
}

static __global__ void cnn_cuda_sum_squares_multi_kernel(const cnn_cuda_sumsq_desc *table, int count,
                                                         double *partial)
{
    const cnn_cuda_sumsq_desc &d = cnn_cuda_table_owner(table, count, (int64_t)blockIdx.x);
    const int64_t lo = ((int64_t)blockIdx.x - d.first) * CNN_CUDA_SUMSQ_CHUNK;
    const int64_t hi = lo + CNN_CUDA_SUMSQ_CHUNK < d.n ? lo + CNN_CUDA_SUMSQ_CHUNK : d.n;
    cnn_cuda_sum_squares_chunk(d.x, d.dt, lo, hi, &partial[blockIdx.x]);
}

extern "C" cudaError_t cnn_cuda_launch_sum_squares(cudaStream_t stream, const void *x, int dt, int64_t n,
                                                   double *partial)
{
    if (n <= 0) return cudaSuccess;
    const int64_t chunks = (n + CNN_CUDA_SUMSQ_CHUNK - 1) / CNN_CUDA_SUMSQ_CHUNK;
    if (chunks > 0x7fffffff) return cudaErrorInvalidValue;
    cnn_cuda_sum_squares_kernel<<<(unsigned)chunks, kBlock, 0, stream>>>(x, dt, n, partial);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_sum_squares_multi(cudaStream_t stream, const cnn_cuda_sumsq_desc *table,
                                                         int count, int64_t blocks, double *partial)
{
    if (!cnn_cuda_multi_grid(count, blocks)) return cudaErrorInvalidValue;
    cnn_cuda_sum_squares_multi_kernel<<<(unsigned)blocks, kBlock, 0, stream>>>(table, count, partial);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_nonfinite_kernel(const void *x, int dt, int64_t n, int *flag)
{
    int bad = 0;
    CNN_CUDA_GRID_STRIDE(i, n) bad |= !isfinite(ld(x, dt, i));
    if (__syncthreads_or(bad) && threadIdx.x == 0) *flag = 1;
}

extern "C" cudaError_t cnn_cuda_launch_nonfinite(cudaStream_t stream, const void *x, int dt, int64_t n, int *flag)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_nonfinite_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(x, dt, n, flag);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// channel concatenation, one part per launch

static __global__ void cnn_cuda_concat_part_kernel(void *whole, void *part, int dt, int64_t rows, int64_t whole_cols,
                                                   int64_t part_cols, int64_t at, int to_whole)
{
    const int64_t total = rows * part_cols;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        const int64_t r = i / part_cols, j = i % part_cols;
        const int64_t w = r * whole_cols + at + j;
        if (to_whole) st(whole, dt, w, ld(part, dt, i));
        else st(part, dt, i, ld(whole, dt, w));
    }
}

extern "C" cudaError_t cnn_cuda_launch_concat_part(cudaStream_t stream, void *whole, void *part, int dt, int64_t rows,
                                                   int64_t whole_cols, int64_t part_cols, int64_t at, int to_whole)
{
    if (rows <= 0 || part_cols <= 0) return cudaSuccess;
    cnn_cuda_concat_part_kernel<<<cnn_cuda_blocks(rows * part_cols), kBlock, 0, stream>>>(
        whole, part, dt, rows, whole_cols, part_cols, at, to_whole);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// batch normalization: per-channel reductions in double over fixed row chunks (the column-sum scheme above), then
// one thread per channel for the coefficients, then elementwise passes. The expressions are the CPU backend's
// (cpu/batchnorm.c).

// Block: tx column vectors by ty rows (tx * ty <= kBlock). Each thread sums its rows of the chunk
// (cnn_ew_bn_sums), then the block's first row of threads adds the ty sums of its column in a fixed order.
template <typename T, int V>
static __global__ void cnn_cuda_bn_partial_kernel(int mode, const T *x, const T *dy, const T *y, cnn_act act,
                                                  float alpha, T *dres, const double *center, int64_t m, int64_t c,
                                                  int64_t rows_per_chunk, double *partial)
{
    __shared__ double sh1[kBlock * V], sh2[kBlock * V];
    const int64_t cv = c / V, jv = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < m ? r0 + rows_per_chunk : m;
    double a[V], b[V];
    for (int j = 0; j < V; j++) a[j] = b[j] = 0.0;
    if (jv < cv)
        cnn_ew_bn_sums<T, V>(mode == CNN_CUDA_BN_SHIFTED_MOMENTS, x, dy, y, act, alpha, dres, center, c, jv * V,
                             r0 + threadIdx.y, r1, blockDim.y, a, b);
    // channel j of thread `tid` at j * kBlock + tid: adjacent threads in adjacent words (no bank conflicts)
    const unsigned tid = threadIdx.y * blockDim.x + threadIdx.x;
    for (int j = 0; j < V; j++) {
        sh1[j * kBlock + tid] = a[j];
        sh2[j * kBlock + tid] = b[j];
    }
    __syncthreads();
    if (threadIdx.y == 0 && jv < cv) {
        for (int j = 0; j < V; j++) {
            double t1 = 0.0, t2 = 0.0;
            for (unsigned k = 0; k < blockDim.y; k++) {
                t1 += sh1[j * kBlock + k * blockDim.x + threadIdx.x];
                t2 += sh2[j * kBlock + k * blockDim.x + threadIdx.x];
            }
            partial[(int64_t)blockIdx.y * 2 * c + jv * V + j] = t1;
            partial[(int64_t)blockIdx.y * 2 * c + c + jv * V + j] = t2;
        }
    }
}

template <typename T> struct cnn_cuda_bn_partial_launch {
    static cudaError_t run(cudaStream_t stream, int mode, const void *x, const void *dy, const void *y, cnn_act act,
                           float alpha, void *dres, const double *center, int64_t m, int64_t c, double *partial)
    {
        const int W = cnn_ew_width<T>::value;
        const bool grad = mode == CNN_CUDA_BN_GRAD;
        const bool vec = c % W == 0 && cnn_cuda_aligned16(x) &&
                         (!grad || (cnn_cuda_aligned16(dy) && cnn_cuda_aligned16(y) && cnn_cuda_aligned16(dres)));
        // ty threads down each column, from c alone: when c % W == 0 both paths split a channel's rows alike and
        // add them in the same order, so the sums do not depend on the pointers' alignment
        const int64_t cw = c % W == 0 ? c / W : c;
        const unsigned ty = (unsigned)kBlock / (unsigned)(cw < (int64_t)kColTx ? cw : (int64_t)kColTx);
        const int64_t cv = vec ? c / W : c;
        const unsigned tx = cv < (int64_t)(kBlock / ty) ? (unsigned)cv : (unsigned)kBlock / ty;
        dim3 block(tx, ty);
        dim3 grid((unsigned)((cv + tx - 1) / tx), (unsigned)cnn_cuda_col_chunks(m));
        const T *xt = static_cast<const T *>(x), *dyt = static_cast<const T *>(dy), *yt = static_cast<const T *>(y);
        T *rt = static_cast<T *>(dres);
        const int64_t per = cnn_cuda_col_chunk_rows(m);
        return cnn_cuda_vec_or_elem<T>(vec, [&](auto v) {
            cnn_cuda_bn_partial_kernel<T, decltype(v)::value><<<grid, block, 0, stream>>>(
                mode, xt, dyt, yt, act, alpha, rt, center, m, c, per, partial);
        });
    }
};

static __global__ void cnn_cuda_bn_final_kernel(const double *partial, int64_t chunks, int64_t c, double *s1,
                                                double *s2)
{
    CNN_CUDA_GRID_STRIDE(col, c)
    {
        double t1 = 0.0, t2 = 0.0;
        for (int64_t k = 0; k < chunks; k++) {
            t1 += partial[k * 2 * c + col];
            t2 += partial[k * 2 * c + c + col];
        }
        s1[col] = t1;
        s2[col] = t2;
    }
}

extern "C" int64_t cnn_cuda_bn_scratch(int64_t m, int64_t c) { return cnn_cuda_col_chunks(m) * 2 * c; }

extern "C" cudaError_t cnn_cuda_launch_bn_reduce(cudaStream_t stream, int mode, const void *x, const void *dy,
                                                 const void *y, cnn_act act, float alpha, void *dres, int dt,
                                                 const double *center, int64_t m, int64_t c, double *s1, double *s2,
                                                 double *partial)
{
    if (c <= 0) return cudaSuccess;
    if (m <= 0) {
        cudaError_t e = cudaMemsetAsync(s1, 0, (size_t)c * sizeof(double), stream);
        if (e != cudaSuccess) return e;
        return cudaMemsetAsync(s2, 0, (size_t)c * sizeof(double), stream);
    }
    const int64_t chunks = cnn_cuda_col_chunks(m);
    cudaError_t e = cnn_cuda_by_dtype<cnn_cuda_bn_partial_launch>(dt, stream, mode, x, dy, y, act, alpha, dres,
                                                                  center, m, c, partial);
    if (e != cudaSuccess) return e;
    cnn_cuda_bn_final_kernel<<<cnn_cuda_blocks(c), kBlock, 0, stream>>>(partial, chunks, c, s1, s2);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_bn_forward_coef_kernel(int training, const void *x, int dt, const double *s1,
                                                       const double *s2, int64_t m, int64_t c,
                                                       const float *running_mean_in, const float *running_var_in,
                                                       const float *gamma, const float *beta, float eps,
                                                       float momentum, float *running_mean, float *running_var,
                                                       float *save_mean, float *save_invstd, float *scale,
                                                       float *shift, float *center)
{
    CNN_CUDA_GRID_STRIDE(j, c)
    {
        double mean, var;
        if (training) {
            // the moments of x shifted by its first row (cnn_cuda_bn_partial_kernel)
            cnn_bn_moments(s1[j], s2[j], (double)ld(x, dt, j), m, &mean, &var);
        } else {
            mean = running_mean_in[j];
            var = running_var_in[j];
        }
        const double invstd = cnn_bn_forward_coef(mean, var, eps, gamma ? gamma[j] : 1.0, &scale[j], &center[j]);
        shift[j] = beta ? beta[j] : 0.0f;
        if (training && save_mean) save_mean[j] = (float)mean;
        if (training && save_invstd) save_invstd[j] = (float)invstd;
        if (training && running_mean) cnn_bn_running_update(&running_mean[j], &running_var[j], mean, var, momentum, m);
    }
}

extern "C" cudaError_t cnn_cuda_launch_bn_forward_coef(cudaStream_t stream, int training, const void *x, int dt,
                                                       const double *s1, const double *s2, int64_t m, int64_t c,
                                                       const float *running_mean_in, const float *running_var_in,
                                                       const float *gamma, const float *beta, float eps,
                                                       float momentum, float *running_mean, float *running_var,
                                                       float *save_mean, float *save_invstd, float *scale,
                                                       float *shift, float *center)
{
    if (c <= 0) return cudaSuccess;
    cnn_cuda_bn_forward_coef_kernel<<<cnn_cuda_blocks(c), kBlock, 0, stream>>>(
        training, x, dt, s1, s2, m, c, running_mean_in, running_var_in, gamma, beta, eps, momentum, running_mean,
        running_var, save_mean, save_invstd, scale, shift, center);
    return cudaGetLastError();
}

template <typename T, int V>
static __global__ void cnn_cuda_bn_apply_kernel(const T *x, const T *res, T *y, int64_t m, int64_t c,
                                                const float *center, const float *scale, const float *shift,
                                                cnn_act act, float alpha)
{
    cnn_ew_bn_apply<T, V>(CNN_CUDA_THREAD, CNN_CUDA_THREADS, x, res, y, m, c, center, scale, shift, act, alpha);
}

template <typename T> struct cnn_cuda_bn_apply_launch {
    static cudaError_t run(cudaStream_t stream, const void *x, const void *res, void *y, int64_t m, int64_t c,
                           const float *center, const float *scale, const float *shift, cnn_act act, float alpha)
    {
        const T *xt = static_cast<const T *>(x), *rt = static_cast<const T *>(res);
        T *yt = static_cast<T *>(y);
        const bool vec = c % cnn_ew_width<T>::value == 0 && cnn_cuda_aligned16(x) && cnn_cuda_aligned16(res) &&
                         cnn_cuda_aligned16(y);
        return cnn_cuda_vec_or_elem<T>(vec, [&](auto v) {
            constexpr int V = decltype(v)::value;
            cnn_cuda_bn_apply_kernel<T, V><<<cnn_cuda_channel_blocks(m, c / V), kBlock, 0, stream>>>(
                xt, rt, yt, m, c, center, scale, shift, act, alpha);
        });
    }
};

extern "C" cudaError_t cnn_cuda_launch_bn_apply(cudaStream_t stream, const void *x, const void *res, void *y, int dt,
                                                int64_t m, int64_t c, const float *center, const float *scale,
                                                const float *shift, cnn_act act, float alpha)
{
    if (m <= 0 || c <= 0) return cudaSuccess;
    return cnn_cuda_by_dtype<cnn_cuda_bn_apply_launch>(dt, stream, x, res, y, m, c, center, scale, shift, act, alpha);
}

static __global__ void cnn_cuda_bn_backward_stats_kernel(int training, const float *save_mean,
                                                         const float *save_invstd, const float *running_mean,
                                                         const float *running_var, float eps, int64_t c,
                                                         double *center, float *invstd)
{
    CNN_CUDA_GRID_STRIDE(j, c)
    {
        if (training) {
            center[j] = save_mean[j];
            invstd[j] = save_invstd[j];
        } else {
            center[j] = running_mean[j];
            invstd[j] = (float)cnn_bn_invstd(running_var[j], eps);
        }
    }
}

extern "C" cudaError_t cnn_cuda_launch_bn_backward_stats(cudaStream_t stream, int training, const float *save_mean,
                                                         const float *save_invstd, const float *running_mean,
                                                         const float *running_var, float eps, int64_t c,
                                                         double *center, float *invstd)
{
    if (c <= 0) return cudaSuccess;
    cnn_cuda_bn_backward_stats_kernel<<<cnn_cuda_blocks(c), kBlock, 0, stream>>>(
        training, save_mean, save_invstd, running_mean, running_var, eps, c, center, invstd);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_bn_backward_coef_kernel(int training, const double *s1, const double *s2,
                                                        const double *center, const float *invstd,
                                                        const float *gamma, int64_t m, int64_t c, float *dgamma,
                                                        float *dbeta, float *coef)
{
    CNN_CUDA_GRID_STRIDE(j, c)
    {
        if (dgamma) dgamma[j] = (float)(s2[j] * invstd[j]);
        if (dbeta) dbeta[j] = (float)s1[j];
        cnn_bn_backward_coef(training, s1[j], s2[j], center[j], invstd[j], gamma ? gamma[j] : 1.0, m, &coef[j],
                             &coef[c + j], &coef[2 * c + j], &coef[3 * c + j]);
    }
}

extern "C" cudaError_t cnn_cuda_launch_bn_backward_coef(cudaStream_t stream, int training, const double *s1,
                                                        const double *s2, const double *center, const float *invstd,
                                                        const float *gamma, int64_t m, int64_t c, float *dgamma,
                                                        float *dbeta, float *coef)
{
    if (c <= 0) return cudaSuccess;
    cnn_cuda_bn_backward_coef_kernel<<<cnn_cuda_blocks(c), kBlock, 0, stream>>>(training, s1, s2, center, invstd,
                                                                                gamma, m, c, dgamma, dbeta, coef);
    return cudaGetLastError();
}

template <typename T, int V>
static __global__ void cnn_cuda_bn_dx_kernel(const T *x, const T *dy, const T *y, cnn_act act, float alpha, T *dx,
                                             int64_t m, int64_t c, const float *coef)
{
    cnn_ew_bn_dx<T, V>(CNN_CUDA_THREAD, CNN_CUDA_THREADS, x, dy, y, act, alpha, dx, m, c, coef);
}

template <typename T> struct cnn_cuda_bn_dx_launch {
    static cudaError_t run(cudaStream_t stream, const void *x, const void *dy, const void *y, cnn_act act,
                           float alpha, void *dx, int64_t m, int64_t c, const float *coef)
    {
        const T *xt = static_cast<const T *>(x), *dyt = static_cast<const T *>(dy), *yt = static_cast<const T *>(y);
        T *dxt = static_cast<T *>(dx);
        const bool vec = c % cnn_ew_width<T>::value == 0 && cnn_cuda_aligned16(x) && cnn_cuda_aligned16(dy) &&
                         cnn_cuda_aligned16(y) && cnn_cuda_aligned16(dx);
        return cnn_cuda_vec_or_elem<T>(vec, [&](auto v) {
            constexpr int V = decltype(v)::value;
            cnn_cuda_bn_dx_kernel<T, V><<<cnn_cuda_channel_blocks(m, c / V), kBlock, 0, stream>>>(
                xt, dyt, yt, act, alpha, dxt, m, c, coef);
        });
    }
};

extern "C" cudaError_t cnn_cuda_launch_bn_dx(cudaStream_t stream, const void *x, const void *dy, const void *y,
                                             cnn_act act, float alpha, void *dx, int dt, int64_t m, int64_t c,
                                             const float *coef)
{
    if (m <= 0 || c <= 0) return cudaSuccess;
    return cnn_cuda_by_dtype<cnn_cuda_bn_dx_launch>(dt, stream, x, dy, y, act, alpha, dx, m, c, coef);
}
