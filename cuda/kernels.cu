// Our CUDA kernels: fill, activations, bias + activation epilogue, column sums (bias gradients), softmax
// cross-entropy, SGD and Adam, explicit padding, and pooling for the windows cuDNN cannot describe.
//
// The math of the elementwise ops is core/ew_math.h, the same functions the CPU backend runs (compiled here as
// __host__ __device__): this file only schedules them. Launchers are C-callable (kernels.h) and return the
// launch status; nothing here allocates or synchronizes.
#include <math.h>
#include <stdint.h>

#include "core/ew_math.h"
#include "cuda/kernels.h"

// ---------------------------------------------------------------------------------------------------------------
// launch geometry

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

// ---------------------------------------------------------------------------------------------------------------
// fill, activations, bias + activation

static __global__ void cnn_cuda_fill_kernel(float *x, int64_t n, float value)
{
    CNN_CUDA_GRID_STRIDE(i, n) x[i] = value;
}

static __global__ void cnn_cuda_act_forward_kernel(cnn_act act, float alpha, const float *x, float *y, int64_t n)
{
    CNN_CUDA_GRID_STRIDE(i, n) y[i] = cnn_act_apply(act, alpha, x[i]);
}

/* from_x: the gradient comes from the input (GELU, SiLU), else from the output */
static __global__ void cnn_cuda_act_backward_kernel(cnn_act act, float alpha, int from_x, const float *xy,
                                                    const float *dy, float *dx, int64_t n)
{
    CNN_CUDA_GRID_STRIDE(i, n)
    dx[i] = from_x ? cnn_act_grad_from_x(act, alpha, xy[i], dy[i]) : cnn_act_grad_from_y(act, alpha, xy[i], dy[i]);
}

// y (rows, cols), b (cols) or NULL
static __global__ void cnn_cuda_bias_act_kernel(float *y, const float *b, int64_t rows, int64_t cols, cnn_act act,
                                                float alpha)
{
    const int64_t n = rows * cols;
    CNN_CUDA_GRID_STRIDE(i, n)
    {
        float v = y[i];
        if (b) v += b[i % cols];
        y[i] = cnn_act_apply(act, alpha, v);
    }
}

extern "C" cudaError_t cnn_cuda_launch_fill(cudaStream_t stream, float *x, int64_t n, float value)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_fill_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(x, n, value);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_act_forward(cudaStream_t stream, cnn_act act, float alpha, const float *x,
                                                   float *y, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_act_forward_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(act, alpha, x, y, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_act_backward(cudaStream_t stream, cnn_act act, float alpha, int from_x,
                                                    const float *xy, const float *dy, float *dx, int64_t n)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_act_backward_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(act, alpha, from_x, xy, dy, dx, n);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_bias_act(cudaStream_t stream, float *y, const float *b, int64_t rows,
                                                int64_t cols, cnn_act act, float alpha)
{
    if (rows <= 0 || cols <= 0) return cudaSuccess;
    cnn_cuda_bias_act_kernel<<<cnn_cuda_blocks(rows * cols), kBlock, 0, stream>>>(y, b, rows, cols, act, alpha);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// column sums: bias gradients of conv (rows = N*OH*OW) and dense (rows = N)
//
// Pass 1: a 32 x 8 block sums one chunk of rows for 32 adjacent columns (a warp reads 128 contiguous bytes),
// into partial (chunks, cols). Pass 2 sums the chunks. With one chunk, pass 1 writes the result directly.

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

static __global__ void cnn_cuda_col_sum_partial_kernel(const float *x, int64_t rows, int64_t cols, int64_t rows_per_chunk,
                                                float *out)
{
    __shared__ float s[kColTy][kColTx + 1];
    const int64_t col = (int64_t)blockIdx.x * kColTx + threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < rows ? r0 + rows_per_chunk : rows;
    float acc = 0.0f;
    if (col < cols)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += kColTy) acc += x[r * cols + col];
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

extern "C" cudaError_t cnn_cuda_launch_col_sum(cudaStream_t stream, const float *x, int64_t rows, int64_t cols,
                                               float *out, float *partial)
{
    if (cols <= 0) return cudaSuccess;
    if (rows <= 0) return cnn_cuda_launch_fill(stream, out, cols, 0.0f);
    const int64_t per = cnn_cuda_col_chunk_rows(rows);
    const int64_t chunks = cnn_cuda_col_chunks(rows);
    dim3 block(kColTx, kColTy);
    dim3 grid((unsigned)((cols + kColTx - 1) / kColTx), (unsigned)chunks);
    cnn_cuda_col_sum_partial_kernel<<<grid, block, 0, stream>>>(x, rows, cols, per, chunks > 1 ? partial : out);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess || chunks == 1) return e;
    cnn_cuda_col_sum_final_kernel<<<cnn_cuda_blocks(cols), kBlock, 0, stream>>>(partial, chunks, cols, out);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// softmax cross-entropy: one warp per row

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

static __global__ void cnn_cuda_softmax_xent_kernel(const float *logits, const int32_t *labels, int64_t n, int64_t k,
                                             float *probs, float *losses, float *dlogits, float scale,
                                             cnn_cuda_deferred *deferred)
{
    const int64_t row = (int64_t)blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
    const int lane = threadIdx.x % kWarp;
    if (row >= n) return; // the whole warp: row is uniform across it
    const float *x = logits + row * k;
    const int32_t label = labels[row];
    if (label < 0 || label >= k) {
        if (lane == 0) {
            if (atomicCAS(&deferred->code, CNN_CUDA_DEFERRED_NONE, CNN_CUDA_DEFERRED_BAD_LABEL) ==
                CNN_CUDA_DEFERRED_NONE) {
                deferred->label = label;
                deferred->sample = row;
                deferred->limit = k;
                __threadfence_system();
            }
            if (losses) losses[row] = nanf("");
        }
        for (int64_t j = lane; j < k; j += kWarp) {
            if (probs) probs[row * k + j] = nanf("");
            if (dlogits) dlogits[row * k + j] = nanf("");
        }
        return;
    }
    // read before any output (which may alias logits) is written; the shuffles below order every lane's reads
    // before any lane's writes
    const float x_label = x[label];
    float m = -INFINITY;
    for (int64_t j = lane; j < k; j += kWarp) m = fmaxf(m, x[j]);
    m = cnn_cuda_warp_max(m);
    float s = 0.0f;
    for (int64_t j = lane; j < k; j += kWarp) s += expf(x[j] - m);
    s = cnn_cuda_warp_sum(s); // max-subtracted: every term in (0, 1], the sum in [1, K]
    if (losses && lane == 0) losses[row] = logf(s) - (x_label - m);
    if (probs || dlogits) {
        const float inv = 1.0f / s;
        for (int64_t j = lane; j < k; j += kWarp) {
            const float p = expf(x[j] - m) * inv;
            if (probs) probs[row * k + j] = p;
            if (dlogits) dlogits[row * k + j] = scale * (p - (j == label ? 1.0f : 0.0f));
        }
    }
}

extern "C" cudaError_t cnn_cuda_launch_softmax_xent(cudaStream_t stream, const float *logits, const int32_t *labels,
                                                    int64_t n, int64_t k, float *probs, float *losses,
                                                    float *dlogits, float grad_scale, cnn_cuda_deferred *deferred)
{
    if (n <= 0 || k <= 0) return cudaSuccess;
    const int64_t blocks = (n + kRowsPerBlock - 1) / kRowsPerBlock;
    if (blocks > 0x7fffffff) return cudaErrorInvalidValue;
    cnn_cuda_softmax_xent_kernel<<<(unsigned)blocks, kRowsPerBlock * kWarp, 0, stream>>>(
        logits, labels, n, k, probs, losses, dlogits, grad_scale, deferred);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates

static __global__ void cnn_cuda_sgd_kernel(float *p, const float *g, float *v, int64_t n, float lr, float mu, float wd,
                                    int nesterov, float gs)
{
    CNN_CUDA_GRID_STRIDE(i, n)
    {
        float unused = 0.0f; // cnn_sgd_step leaves the velocity alone when mu == 0
        cnn_sgd_step(&p[i], g[i] * gs, v ? &v[i] : &unused, lr, mu, wd, nesterov);
    }
}

static __global__ void cnn_cuda_adam_kernel(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                                     float b2, float eps, float wd, int decoupled, float bc1, float bc2, float gs)
{
    CNN_CUDA_GRID_STRIDE(i, n) cnn_adam_step(&p[i], g[i] * gs, &m[i], &v[i], lr, b1, b2, eps, wd, decoupled, bc1, bc2);
}

extern "C" cudaError_t cnn_cuda_launch_sgd(cudaStream_t stream, float *param, const float *grad, float *velocity,
                                           int64_t n, float lr, float momentum, float weight_decay, int nesterov,
                                           float grad_scale)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_sgd_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(param, grad, momentum != 0.0f ? velocity : NULL,
                                                                   n, lr, momentum, weight_decay, nesterov,
                                                                   grad_scale);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_adam(cudaStream_t stream, float *param, const float *grad, float *m, float *v,
                                            int64_t n, float lr, float beta1, float beta2, float eps,
                                            float weight_decay, int decoupled, float bc1, float bc2, float grad_scale)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_adam_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(param, grad, m, v, n, lr, beta1, beta2, eps,
                                                                    weight_decay, decoupled, bc1, bc2, grad_scale);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// explicit padding (convolutions with asymmetric padding run on a padded copy)

static __global__ void cnn_cuda_pad_kernel(const float *x, float *xp, cnn_cuda_window g)
{
    const int64_t hp = g.h + g.pad_top + g.pad_bottom, wp = g.w + g.pad_left + g.pad_right;
    const int64_t total = g.n * hp * wp * g.c;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        int64_t c = i % g.c, t = i / g.c;
        int64_t w = t % wp - g.pad_left;
        t /= wp;
        int64_t h = t % hp - g.pad_top;
        int64_t n = t / hp;
        xp[i] = (h >= 0 && h < g.h && w >= 0 && w < g.w) ? x[((n * g.h + h) * g.w + w) * g.c + c] : 0.0f;
    }
}

static __global__ void cnn_cuda_crop_kernel(const float *xp, float *x, cnn_cuda_window g)
{
    const int64_t hp = g.h + g.pad_top + g.pad_bottom, wp = g.w + g.pad_left + g.pad_right;
    const int64_t total = g.n * g.h * g.w * g.c;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        int64_t c = i % g.c, t = i / g.c;
        int64_t w = t % g.w;
        t /= g.w;
        int64_t h = t % g.h;
        int64_t n = t / g.h;
        x[i] = xp[((n * hp + h + g.pad_top) * wp + w + g.pad_left) * g.c + c];
    }
}

extern "C" cudaError_t cnn_cuda_launch_pad(cudaStream_t stream, const float *x, float *xp, const cnn_cuda_window *g)
{
    const int64_t total = g->n * (g->h + g->pad_top + g->pad_bottom) * (g->w + g->pad_left + g->pad_right) * g->c;
    if (total <= 0) return cudaSuccess;
    cnn_cuda_pad_kernel<<<cnn_cuda_blocks(total), kBlock, 0, stream>>>(x, xp, *g);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_crop(cudaStream_t stream, const float *xp, float *x, const cnn_cuda_window *g)
{
    const int64_t total = g->n * g->h * g->w * g->c;
    if (total <= 0) return cudaSuccess;
    cnn_cuda_crop_kernel<<<cnn_cuda_blocks(total), kBlock, 0, stream>>>(xp, x, *g);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// pooling with any padding

// Index (kh * KW + kw) of the max of window (oh, ow) for channel c of sample n; -1 when the window holds only
// padding (the checks on the host rule that out).
static __device__ int cnn_cuda_window_argmax(const float *x, const cnn_cuda_window &g, int64_t n, int64_t oh, int64_t ow,
                                      int64_t c, float *best_out)
{
    const int64_t h0 = oh * g.sh - g.pad_top, w0 = ow * g.sw - g.pad_left;
    int best_i = -1;
    float best = 0.0f;
    for (int i = 0; i < g.kh; i++) {
        const int64_t h = h0 + i;
        if (h < 0 || h >= g.h) continue;
        for (int j = 0; j < g.kw; j++) {
            const int64_t w = w0 + j;
            if (w < 0 || w >= g.w) continue;
            const float v = x[((n * g.h + h) * g.w + w) * g.c + c];
            if (best_i < 0 || v > best) {
                best = v;
                best_i = i * g.kw + j;
            }
        }
    }
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

static __global__ void cnn_cuda_pool_forward_kernel(cnn_pool_mode mode, const float *x, float *y, cnn_cuda_window g)
{
    const int64_t total = g.n * g.oh * g.ow * g.c;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        int64_t c = i % g.c, t = i / g.c;
        int64_t ow = t % g.ow;
        t /= g.ow;
        int64_t oh = t % g.oh;
        int64_t n = t / g.oh;
        if (mode == CNN_POOL_MAX) {
            float best;
            int at = cnn_cuda_window_argmax(x, g, n, oh, ow, c, &best);
            y[i] = at < 0 ? nanf("") : best;
        } else {
            const int64_t h0 = oh * g.sh - g.pad_top, w0 = ow * g.sw - g.pad_left;
            float s = 0.0f;
            for (int a = 0; a < g.kh; a++) {
                const int64_t h = h0 + a;
                if (h < 0 || h >= g.h) continue;
                for (int b = 0; b < g.kw; b++) {
                    const int64_t w = w0 + b;
                    if (w >= 0 && w < g.w) s += x[((n * g.h + h) * g.w + w) * g.c + c];
                }
            }
            const int count = cnn_cuda_window_count(g, oh, ow);
            y[i] = count > 0 ? s / (float)count : nanf("");
        }
    }
}

static __global__ void cnn_cuda_pool_backward_kernel(cnn_pool_mode mode, const float *x, const float *dy, float *dx,
                                              cnn_cuda_window g)
{
    const int64_t total = g.n * g.h * g.w * g.c;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        int64_t c = i % g.c, t = i / g.c;
        int64_t w = t % g.w;
        t /= g.w;
        int64_t h = t % g.h;
        int64_t n = t / g.h;
        // windows (oh, ow) whose span [oh*sh - top, oh*sh - top + kh) holds h, and likewise for w
        const int64_t hp = h + g.pad_top, wp = w + g.pad_left;
        const int64_t oh_lo = hp - g.kh + 1 <= 0 ? 0 : (hp - g.kh + 1 + g.sh - 1) / g.sh;
        const int64_t ow_lo = wp - g.kw + 1 <= 0 ? 0 : (wp - g.kw + 1 + g.sw - 1) / g.sw;
        const int64_t oh_hi = hp / g.sh < g.oh - 1 ? hp / g.sh : g.oh - 1;
        const int64_t ow_hi = wp / g.sw < g.ow - 1 ? wp / g.sw : g.ow - 1;
        float acc = 0.0f;
        for (int64_t oh = oh_lo; oh <= oh_hi; oh++) {
            for (int64_t ow = ow_lo; ow <= ow_hi; ow++) {
                const float d = dy[((n * g.oh + oh) * g.ow + ow) * g.c + c];
                if (mode == CNN_POOL_MAX) {
                    float best;
                    const int at = cnn_cuda_window_argmax(x, g, n, oh, ow, c, &best);
                    const int mine = (int)((hp - oh * g.sh) * g.kw + (wp - ow * g.sw));
                    if (at == mine) acc += d;
                } else {
                    const int count = cnn_cuda_window_count(g, oh, ow);
                    if (count > 0) acc += d / (float)count;
                }
            }
        }
        dx[i] = acc;
    }
}

extern "C" cudaError_t cnn_cuda_launch_pool_forward(cudaStream_t stream, cnn_pool_mode mode, const float *x,
                                                    float *y, const cnn_cuda_window *g)
{
    const int64_t total = g->n * g->oh * g->ow * g->c;
    if (total <= 0) return cudaSuccess;
    cnn_cuda_pool_forward_kernel<<<cnn_cuda_blocks(total), kBlock, 0, stream>>>(mode, x, y, *g);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_pool_backward(cudaStream_t stream, cnn_pool_mode mode, const float *x,
                                                     const float *dy, float *dx, const cnn_cuda_window *g)
{
    const int64_t total = g->n * g->h * g->w * g->c;
    if (total <= 0) return cudaSuccess;
    cnn_cuda_pool_backward_kernel<<<cnn_cuda_blocks(total), kBlock, 0, stream>>>(mode, x, dy, dx, *g);
    return cudaGetLastError();
}
