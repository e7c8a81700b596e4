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

// ---------------------------------------------------------------------------------------------------------------
// dropout, add, scale, RMSprop

static __global__ void cnn_cuda_dropout_kernel(const float *in, float *out, int64_t n, float rate, float inv_keep,
                                               uint64_t seed, uint64_t offset)
{
    CNN_CUDA_GRID_STRIDE(i, n)
    out[i] = cnn_dropout_keep(seed, offset + (uint64_t)i, rate) ? in[i] * inv_keep : 0.0f;
}

extern "C" cudaError_t cnn_cuda_launch_dropout(cudaStream_t stream, const float *in, float *out, int64_t n, float rate,
                                               uint64_t seed, uint64_t offset)
{
    if (n <= 0) return cudaSuccess;
    if (rate == 0.0f) {
        if (out == in) return cudaSuccess;
        return cudaMemcpyAsync(out, in, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, stream);
    }
    // the CPU backend's expression: 1 / (1 - rate) in float, then one multiply
    const float inv_keep = 1.0f / (1.0f - rate);
    cnn_cuda_dropout_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(in, out, n, rate, inv_keep, seed, offset);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_add_kernel(const float *a, const float *b, float *y, int64_t n, float alpha,
                                           float beta)
{
    CNN_CUDA_GRID_STRIDE(i, n) y[i] = alpha * a[i] + beta * b[i];
}

static __global__ void cnn_cuda_scale_kernel(float *x, int64_t n, float alpha)
{
    CNN_CUDA_GRID_STRIDE(i, n) x[i] *= alpha;
}

extern "C" cudaError_t cnn_cuda_launch_add(cudaStream_t stream, const float *a, const float *b, float *y, int64_t n,
                                           float alpha, float beta)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_add_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(a, b, y, n, alpha, beta);
    return cudaGetLastError();
}

extern "C" cudaError_t cnn_cuda_launch_scale(cudaStream_t stream, float *x, int64_t n, float alpha)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_scale_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(x, n, alpha);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_rmsprop_kernel(float *p, const float *g, float *sq, float *mom, int64_t n, float lr,
                                               float rho, float eps, float mu, float wd, float gs)
{
    CNN_CUDA_GRID_STRIDE(i, n)
    {
        float unused = 0.0f; // cnn_rmsprop_step leaves the momentum alone when mu == 0
        cnn_rmsprop_step(&p[i], g[i] * gs, &sq[i], mom ? &mom[i] : &unused, lr, rho, eps, mu, wd);
    }
}

extern "C" cudaError_t cnn_cuda_launch_rmsprop(cudaStream_t stream, float *param, const float *grad, float *sq,
                                               float *mom, int64_t n, float lr, float rho, float eps, float momentum,
                                               float weight_decay, float grad_scale)
{
    if (n <= 0) return cudaSuccess;
    cnn_cuda_rmsprop_kernel<<<cnn_cuda_blocks(n), kBlock, 0, stream>>>(param, grad, sq, momentum != 0.0f ? mom : NULL,
                                                                       n, lr, rho, eps, momentum, weight_decay,
                                                                       grad_scale);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// sum of squares: one block per fixed chunk, a fixed-shape tree in shared memory

static __global__ void cnn_cuda_sum_squares_kernel(const float *x, int64_t n, double *partial)
{
    __shared__ double s[kBlock];
    const int64_t lo = (int64_t)blockIdx.x * CNN_CUDA_SUMSQ_CHUNK;
    const int64_t hi = lo + CNN_CUDA_SUMSQ_CHUNK < n ? lo + CNN_CUDA_SUMSQ_CHUNK : n;
    double acc = 0.0;
    for (int64_t i = lo + threadIdx.x; i < hi; i += kBlock) acc += (double)x[i] * (double)x[i];
    s[threadIdx.x] = acc;
    __syncthreads();
    for (int half = kBlock / 2; half > 0; half /= 2) {
        if (threadIdx.x < half) s[threadIdx.x] += s[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) partial[blockIdx.x] = s[0];
}

extern "C" cudaError_t cnn_cuda_launch_sum_squares(cudaStream_t stream, const float *x, int64_t n, double *partial)
{
    if (n <= 0) return cudaSuccess;
    const int64_t chunks = (n + CNN_CUDA_SUMSQ_CHUNK - 1) / CNN_CUDA_SUMSQ_CHUNK;
    if (chunks > 0x7fffffff) return cudaErrorInvalidValue;
    cnn_cuda_sum_squares_kernel<<<(unsigned)chunks, kBlock, 0, stream>>>(x, n, partial);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// channel concatenation, one part per launch

static __global__ void cnn_cuda_concat_part_kernel(float *whole, float *part, int64_t rows, int64_t whole_cols,
                                                   int64_t part_cols, int64_t at, int to_whole)
{
    const int64_t total = rows * part_cols;
    CNN_CUDA_GRID_STRIDE(i, total)
    {
        const int64_t r = i / part_cols, j = i % part_cols;
        float *w = whole + r * whole_cols + at + j;
        if (to_whole) *w = part[i];
        else part[i] = *w;
    }
}

extern "C" cudaError_t cnn_cuda_launch_concat_part(cudaStream_t stream, float *whole, float *part, int64_t rows,
                                                   int64_t whole_cols, int64_t part_cols, int64_t at, int to_whole)
{
    if (rows <= 0 || part_cols <= 0) return cudaSuccess;
    cnn_cuda_concat_part_kernel<<<cnn_cuda_blocks(rows * part_cols), kBlock, 0, stream>>>(
        whole, part, rows, whole_cols, part_cols, at, to_whole);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------------------------------
// batch normalization: per-channel reductions in double over fixed row chunks (the column-sum scheme above), then
// one thread per channel for the coefficients, then elementwise passes. The expressions are the CPU backend's
// (cpu/batchnorm.c).

static __global__ void cnn_cuda_bn_partial_kernel(int mode, const float *x, const float *dy, const double *center,
                                                  int64_t m, int64_t c, int64_t rows_per_chunk, double *partial)
{
    __shared__ double s1[kColTy][kColTx + 1];
    __shared__ double s2[kColTy][kColTx + 1];
    const int64_t col = (int64_t)blockIdx.x * kColTx + threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.y * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < m ? r0 + rows_per_chunk : m;
    double a = 0.0, b = 0.0;
    if (col < c) {
        const double ctr = mode == CNN_CUDA_BN_SUM ? 0.0 : center[col];
        for (int64_t r = r0 + threadIdx.y; r < r1; r += kColTy) {
            const float v = x[r * c + col];
            if (mode == CNN_CUDA_BN_SUM) {
                a += v;
            } else if (mode == CNN_CUDA_BN_CENTERED) {
                const double d = (double)v - ctr;
                a += d * d;
            } else {
                const float g = dy[r * c + col];
                a += g;
                b += (double)g * ((double)v - ctr);
            }
        }
    }
    s1[threadIdx.y][threadIdx.x] = a;
    s2[threadIdx.y][threadIdx.x] = b;
    __syncthreads();
    if (threadIdx.y == 0 && col < c) {
        double t1 = 0.0, t2 = 0.0;
        for (int k = 0; k < kColTy; k++) {
            t1 += s1[k][threadIdx.x];
            t2 += s2[k][threadIdx.x];
        }
        partial[(int64_t)blockIdx.y * 2 * c + col] = t1;
        partial[(int64_t)blockIdx.y * 2 * c + c + col] = t2;
    }
}

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
        if (s2) s2[col] = t2;
    }
}

extern "C" int64_t cnn_cuda_bn_scratch(int64_t m, int64_t c) { return cnn_cuda_col_chunks(m) * 2 * c; }

extern "C" cudaError_t cnn_cuda_launch_bn_reduce(cudaStream_t stream, int mode, const float *x, const float *dy,
                                                 const double *center, int64_t m, int64_t c, double *s1, double *s2,
                                                 double *partial)
{
    if (c <= 0) return cudaSuccess;
    if (m <= 0) {
        cudaError_t e = cudaMemsetAsync(s1, 0, (size_t)c * sizeof(double), stream);
        if (e != cudaSuccess || !s2) return e;
        return cudaMemsetAsync(s2, 0, (size_t)c * sizeof(double), stream);
    }
    const int64_t per = cnn_cuda_col_chunk_rows(m);
    const int64_t chunks = cnn_cuda_col_chunks(m);
    dim3 block(kColTx, kColTy);
    dim3 grid((unsigned)((c + kColTx - 1) / kColTx), (unsigned)chunks);
    cnn_cuda_bn_partial_kernel<<<grid, block, 0, stream>>>(mode, x, dy, center, m, c, per, partial);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    cnn_cuda_bn_final_kernel<<<cnn_cuda_blocks(c), kBlock, 0, stream>>>(partial, chunks, c, s1, s2);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_bn_mean_kernel(const double *s1, int64_t m, int64_t c, double *mean)
{
    CNN_CUDA_GRID_STRIDE(j, c) mean[j] = s1[j] / (double)m;
}

extern "C" cudaError_t cnn_cuda_launch_bn_mean(cudaStream_t stream, const double *s1, int64_t m, int64_t c,
                                               double *mean_out)
{
    if (c <= 0) return cudaSuccess;
    cnn_cuda_bn_mean_kernel<<<cnn_cuda_blocks(c), kBlock, 0, stream>>>(s1, m, c, mean_out);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_bn_forward_coef_kernel(int training, const double *mean_in, const double *s2,
                                                       int64_t m, int64_t c, const float *running_mean_in,
                                                       const float *running_var_in, const float *gamma,
                                                       const float *beta, float eps, float momentum,
                                                       float *running_mean, float *running_var, float *save_mean,
                                                       float *save_invstd, float *scale, float *shift, float *center)
{
    CNN_CUDA_GRID_STRIDE(j, c)
    {
        double mean, var;
        if (training) {
            mean = mean_in[j];
            var = s2[j] / (double)m; // biased: what normalizes
        } else {
            mean = running_mean_in[j];
            var = running_var_in[j];
        }
        const double invstd = 1.0 / sqrt(var + (double)eps);
        const double g = gamma ? gamma[j] : 1.0;
        scale[j] = (float)(g * invstd);
        shift[j] = beta ? beta[j] : 0.0f;
        center[j] = (float)mean;
        if (training && save_mean) save_mean[j] = (float)mean;
        if (training && save_invstd) save_invstd[j] = (float)invstd;
        if (training && running_mean) {
            const double mom = momentum, unbias = (double)m / (double)(m - 1);
            running_mean[j] = (float)((1.0 - mom) * running_mean[j] + mom * mean);
            running_var[j] = (float)((1.0 - mom) * running_var[j] + mom * var * unbias);
        }
    }
}

extern "C" cudaError_t cnn_cuda_launch_bn_forward_coef(cudaStream_t stream, int training, const double *mean,
                                                       const double *s2, int64_t m, int64_t c,
                                                       const float *running_mean_in, const float *running_var_in,
                                                       const float *gamma, const float *beta, float eps,
                                                       float momentum, float *running_mean, float *running_var,
                                                       float *save_mean, float *save_invstd, float *scale,
                                                       float *shift, float *center)
{
    if (c <= 0) return cudaSuccess;
    cnn_cuda_bn_forward_coef_kernel<<<cnn_cuda_blocks(c), kBlock, 0, stream>>>(
        training, mean, s2, m, c, running_mean_in, running_var_in, gamma, beta, eps, momentum, running_mean,
        running_var, save_mean, save_invstd, scale, shift, center);
    return cudaGetLastError();
}

static __global__ void cnn_cuda_bn_apply_kernel(const float *x, float *y, int64_t m, int64_t c, const float *center,
                                                const float *scale, const float *shift, cnn_act act, float alpha)
{
    const int64_t n = m * c;
    CNN_CUDA_GRID_STRIDE(i, n)
    {
        const int64_t j = i % c;
        y[i] = cnn_act_apply(act, alpha, (x[i] - center[j]) * scale[j] + shift[j]);
    }
}

extern "C" cudaError_t cnn_cuda_launch_bn_apply(cudaStream_t stream, const float *x, float *y, int64_t m, int64_t c,
                                                const float *center, const float *scale, const float *shift,
                                                cnn_act act, float alpha)
{
    if (m <= 0 || c <= 0) return cudaSuccess;
    cnn_cuda_bn_apply_kernel<<<cnn_cuda_blocks(m * c), kBlock, 0, stream>>>(x, y, m, c, center, scale, shift, act,
                                                                            alpha);
    return cudaGetLastError();
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
            invstd[j] = (float)(1.0 / sqrt((double)running_var[j] + (double)eps));
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
        const double s = invstd[j];
        coef[j] = (float)((gamma ? gamma[j] : 1.0) * s);
        coef[c + j] = training ? (float)(s1[j] / (double)m) : 0.0f;
        coef[2 * c + j] = training ? (float)(s2[j] * s * s / (double)m) : 0.0f;
        coef[3 * c + j] = (float)center[j];
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

static __global__ void cnn_cuda_bn_dx_kernel(const float *x, const float *dy, float *dx, int64_t m, int64_t c,
                                             const float *coef)
{
    const int64_t n = m * c;
    CNN_CUDA_GRID_STRIDE(i, n)
    {
        const int64_t j = i % c;
        dx[i] = coef[j] * (dy[i] - coef[c + j] - (x[i] - coef[3 * c + j]) * coef[2 * c + j]);
    }
}

extern "C" cudaError_t cnn_cuda_launch_bn_dx(cudaStream_t stream, const float *x, const float *dy, float *dx,
                                             int64_t m, int64_t c, const float *coef)
{
    if (m <= 0 || c <= 0) return cudaSuccess;
    cnn_cuda_bn_dx_kernel<<<cnn_cuda_blocks(m * c), kBlock, 0, stream>>>(x, dy, dx, m, c, coef);
    return cudaGetLastError();
}
