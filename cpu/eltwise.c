/* Elementwise ops on the CPU: activations, softmax cross-entropy, optimizer updates (SGD, Adam, RMSprop; of one
 * tensor or of a list in one parallel loop), add, scale, sums of squares, dropout, fill.
 *
 * The math lives in core/ew_math.h (shared with the CUDA backend); this file only schedules it over OpenMP
 * threads. Loops run serially below CNN_CPU_PARALLEL_MIN elements, where waking the thread team costs more than
 * the work. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ew_math.h"
#include "core/op_check.h"
#include "cpu/dnnl_util.h"
#include "cpu/ew_loops.h"
#include "cpu/ops.h"

/* About 16K floats (64 KiB): below this a parallel region's fork/join (~1-2 us) outweighs the loop. */
#define CNN_CPU_PARALLEL_MIN 16384

// ---------------------------------------------------------------------------------------------------------------
// activations

cnn_status cnn_cpu_act_forward(cnn_backend *b, const cnn_act_args *a)
{
    (void)b;
    const float *x = a->x->data;
    float *y = a->y->data;
    const int64_t n = cnn_tensor_numel(a->x);
    const cnn_act act = a->act;
    const float alpha = a->alpha;
#pragma omp parallel if (n >= CNN_CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cnn_cpu_span_range(n, &lo, &hi);
        cnn_cpu_act_span(act, alpha, x + lo, y + lo, hi - lo);
    }
    return CNN_OK;
}

cnn_status cnn_cpu_act_backward(cnn_backend *b, const cnn_act_args *a)
{
    (void)b;
    const float *dy = a->dy->data;
    float *dx = a->dx->data;
    const int64_t n = cnn_tensor_numel(a->dy);
    const cnn_act act = a->act;
    const float alpha = a->alpha;
    if (act == CNN_ACT_NONE) {
        if (dx != dy && n > 0) memmove(dx, dy, (size_t)n * sizeof(float));
        return CNN_OK;
    }
    if (cnn_act_grad_needs_input(act)) {
        const float *x = a->x->data;
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
        for (int64_t i = 0; i < n; i++) dx[i] = cnn_act_grad_from_x(act, alpha, x[i], dy[i]);
    } else {
        const float *y = a->y->data;
#pragma omp parallel if (n >= CNN_CPU_PARALLEL_MIN)
        {
            int64_t lo, hi;
            cnn_cpu_span_range(n, &lo, &hi);
            cnn_cpu_act_grad_y_span(act, alpha, y + lo, dy + lo, dx + lo, hi - lo);
        }
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// softmax cross-entropy

cnn_status cnn_cpu_softmax_xent(cnn_backend *b, const cnn_softmax_xent_args *a)
{
    static const char *op = "softmax_xent on cpu";
    (void)b;
    /* checked by core/ops.c, but for the values of the labels and weights, which are data */
    const int64_t n = a->logits->shape[0], k = a->logits->shape[1];
    const float *cw = a->class_weights ? a->class_weights->data : NULL;
    for (int64_t j = 0; cw && j < k; j++)
        if (!(cw[j] > 0.0f && isfinite(cw[j])))
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: class weight %lld is %g; weights must be positive and finite",
                             op, (long long)j, (double)cw[j]);
    const int32_t *labels = a->labels ? a->labels->data : NULL;
    /* every label is checked before anything is written */
    for (int64_t i = 0; labels && i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: label %d of sample %lld is outside [0, %lld)", op, labels[i],
                             (long long)i, (long long)k);

    const float *logits = a->logits->data;
    float *probs = a->probs ? a->probs->data : NULL;
    float *losses = a->losses ? a->losses->data : NULL;
    float *dlogits = a->dlogits ? a->dlogits->data : NULL;
    const float scale = a->grad_scale;
    /* target = (1 - s) onehot + s / K; loss = w[label] * (log sum exp(z) - sum_j target_j z_j) */
    const double smooth = a->label_smoothing;
    double on_target, off_target;
    CNN_XENT_TARGETS(double, smooth, k, on_target, off_target);
#pragma omp parallel for schedule(static) if (n * k >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *x = logits + i * k;
        const int32_t label = labels ? labels[i] : 0;
        const double weight = cw ? cw[label] : 1.0;
        float m = x[0];
        for (int64_t j = 1; j < k; j++) m = x[j] > m ? x[j] : m;
        /* read every logit before any output (which may alias logits) is written */
        double sum = 0.0; /* max-subtracted, so every term is in (0, 1] and the sum in [1, K] */
        double target_dot = 0.0; /* sum_j target_j (z_j - m) */
        for (int64_t j = 0; j < k; j++) {
            const double d = (double)x[j] - m;
            sum += exp(d);
            if (smooth != 0.0) target_dot += off_target * d;
        }
        if (labels) target_dot += (on_target - off_target) * ((double)x[label] - m);
        const double log_sum = log(sum);
        if (losses) losses[i] = (float)(weight * (log_sum - target_dot));
        if (probs || dlogits) {
            const double inv_sum = 1.0 / sum;
            const float gs = (float)(scale * weight);
            for (int64_t j = 0; j < k; j++) {
                const double p = exp((double)x[j] - m) * inv_sum;
                if (dlogits) {
                    const double target = j == label ? on_target : off_target;
                    dlogits[i * k + j] = gs * (float)(p - target);
                }
                if (probs) probs[i * k + j] = (float)p;
            }
        }
    }
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates: an element loop per optimizer, run over one tensor (the per-tensor entries) or
// over the chunks of a list of tensors (the multi entries); the same loop either way, so the same bits

/* Elements per work item of a multi-tensor op: 32 KiB of f32, large next to the cost of handing out an item and
 * small enough that many small tensors and a few large ones spread evenly over the threads. */
#define CNN_CPU_MULTI_CHUNK 8192

/* An element loop over [lo, hi) of one tensor; `args` is the op's args struct. */
typedef void (*cnn_cpu_span_fn)(const void *args, int64_t lo, int64_t hi);

/* first[i] = the first chunk (of `chunk` elements) of tensor i when the tensors' chunks are numbered in list order;
 * first[n] = the number of chunks. The caller frees *first. */
static cnn_status cnn_cpu_chunks_make(const int64_t *counts, int n, int64_t chunk, int64_t **first, const char *op)
{
    *first = malloc((size_t)(n + 1) * sizeof **first);
    if (!*first) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for %d tensors", op, n);
    int64_t c = 0;
    for (int i = 0; i < n; i++) {
        (*first)[i] = c;
        c += (counts[i] + chunk - 1) / chunk;
    }
    (*first)[n] = c;
    return CNN_OK;
}

/* The tensor that chunk c belongs to: the last i with first[i] <= c (tensors without elements own no chunk and are
 * passed over, as the next tensor starts at the same chunk). */
static int cnn_cpu_chunk_owner(const int64_t *first, int n, int64_t c)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        if (first[mid] <= c) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

/* span over every element of every tensor of `list` (n elements `size` bytes apart, counts[i] elements each),
 * in chunks shared by one thread team */
static cnn_status cnn_cpu_multi_run(const void *list, size_t size, const int64_t *counts, int n, cnn_cpu_span_fn span,
                                    const char *op)
{
    int64_t *first = NULL, total = 0;
    cnn_status st = cnn_cpu_chunks_make(counts, n, CNN_CPU_MULTI_CHUNK, &first, op);
    if (st != CNN_OK) return st;
    for (int i = 0; i < n; i++) total += counts[i];
    const int64_t chunks = first[n];
    const unsigned char *base = list;
#pragma omp parallel for schedule(static) if (total >= CNN_CPU_PARALLEL_MIN)
    for (int64_t c = 0; c < chunks; c++) {
        const int t = cnn_cpu_chunk_owner(first, n, c);
        const int64_t lo = (c - first[t]) * CNN_CPU_MULTI_CHUNK;
        const int64_t hi = lo + CNN_CPU_MULTI_CHUNK < counts[t] ? lo + CNN_CPU_MULTI_CHUNK : counts[t];
        span(base + (size_t)t * size, lo, hi);
    }
    free(first);
    return CNN_OK;
}

/* span over the n elements of one tensor */
static void cnn_cpu_single_run(const void *args, int64_t n, cnn_cpu_span_fn span)
{
#pragma omp parallel if (n >= CNN_CPU_PARALLEL_MIN)
    {
        int64_t lo, hi;
        cnn_cpu_span_range(n, &lo, &hi);
        span(args, lo, hi);
    }
}

static void cnn_cpu_sgd_span(const void *args, int64_t lo, int64_t hi)
{
    const cnn_sgd_args *a = args;
    float *p = a->param->data;
    const float *g = a->grad->data;
    float *v = a->momentum != 0.0f ? (float *)a->velocity->data : NULL;
    const float lr = a->lr, mu = a->momentum, wd = a->weight_decay, gs = a->grad_scale;
    const int nesterov = a->nesterov;
    for (int64_t i = lo; i < hi; i++) {
        float unused = 0.0f; /* cnn_sgd_step leaves the velocity alone when mu == 0 */
        cnn_sgd_step(&p[i], g[i] * gs, v ? &v[i] : &unused, lr, mu, wd, nesterov);
    }
}

static void cnn_cpu_adam_span(const void *args, int64_t lo, int64_t hi)
{
    const cnn_adam_args *a = args;
    float *p = a->param->data, *m = a->m->data, *v = a->v->data;
    const float *g = a->grad->data;
    const float lr = a->lr, b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay;
    const float bc1 = a->bias_correction1, bc2 = a->bias_correction2, gs = a->grad_scale;
    const int decoupled = a->decoupled;
    for (int64_t i = lo; i < hi; i++)
        cnn_adam_step(&p[i], g[i] * gs, &m[i], &v[i], lr, b1, b2, eps, wd, decoupled, bc1, bc2);
}

static void cnn_cpu_rmsprop_span(const void *args, int64_t lo, int64_t hi)
{
    const cnn_rmsprop_args *a = args;
    float *p = a->param->data, *sq = a->sq->data;
    float *mom = a->momentum != 0.0f ? (float *)a->mom->data : NULL;
    const float *g = a->grad->data;
    const float lr = a->lr, rho = a->rho, eps = a->eps, mu = a->momentum, wd = a->weight_decay, gs = a->grad_scale;
    for (int64_t i = lo; i < hi; i++) {
        float unused = 0.0f; /* cnn_rmsprop_step leaves the momentum alone when mu == 0 */
        cnn_rmsprop_step(&p[i], g[i] * gs, &sq[i], mom ? &mom[i] : &unused, lr, rho, eps, mu, wd);
    }
}

cnn_status cnn_cpu_sgd_update(cnn_backend *b, const cnn_sgd_args *a)
{
    (void)b;
    cnn_cpu_single_run(a, cnn_tensor_numel(a->param), cnn_cpu_sgd_span);
    return CNN_OK;
}

cnn_status cnn_cpu_adam_update(cnn_backend *b, const cnn_adam_args *a)
{
    (void)b;
    cnn_cpu_single_run(a, cnn_tensor_numel(a->param), cnn_cpu_adam_span);
    return CNN_OK;
}

cnn_status cnn_cpu_rmsprop_update(cnn_backend *b, const cnn_rmsprop_args *a)
{
    (void)b;
    cnn_cpu_single_run(a, cnn_tensor_numel(a->param), cnn_cpu_rmsprop_span);
    return CNN_OK;
}

/* The multi entries, whose lists core/ops.c has checked: one run over every element of every tensor. The structs
 * of the three optimizers start with their param (the element count of each). */
_Static_assert(offsetof(cnn_sgd_args, param) == 0 && offsetof(cnn_adam_args, param) == 0 &&
                   offsetof(cnn_rmsprop_args, param) == 0,
               "every update's args start with param");

static cnn_status cnn_cpu_update_multi(const void *list, size_t size, int n, cnn_cpu_span_fn span, const char *op)
{
    cnn_status st = CNN_OK;
    int64_t *counts = calloc((size_t)(n > 0 ? n : 1), sizeof *counts);
    if (!counts) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for %d tensors", op, n);
    const unsigned char *base = list;
    for (int i = 0; i < n; i++) {
        const cnn_tensor *param;
        memcpy(&param, base + (size_t)i * size, sizeof param);
        counts[i] = cnn_tensor_numel(param);
    }
    st = cnn_cpu_multi_run(list, size, counts, n, span, op);
    free(counts);
    return st;
}

cnn_status cnn_cpu_sgd_update_multi(cnn_backend *b, const cnn_sgd_args *list, int n, int *failed)
{
    (void)b;
    if (failed) *failed = -1;
    return cnn_cpu_update_multi(list, sizeof *list, n, cnn_cpu_sgd_span, "sgd_update_multi on cpu");
}

cnn_status cnn_cpu_adam_update_multi(cnn_backend *b, const cnn_adam_args *list, int n, int *failed)
{
    (void)b;
    if (failed) *failed = -1;
    return cnn_cpu_update_multi(list, sizeof *list, n, cnn_cpu_adam_span, "adam_update_multi on cpu");
}

cnn_status cnn_cpu_rmsprop_update_multi(cnn_backend *b, const cnn_rmsprop_args *list, int n, int *failed)
{
    (void)b;
    if (failed) *failed = -1;
    return cnn_cpu_update_multi(list, sizeof *list, n, cnn_cpu_rmsprop_span, "rmsprop_update_multi on cpu");
}

// ---------------------------------------------------------------------------------------------------------------
// add, scale, sum of squares

cnn_status cnn_cpu_add(cnn_backend *b, const cnn_add_args *a)
{
    (void)b;
    const float *x1 = a->a->data, *x2 = a->b->data;
    float *y = a->y->data;
    const float alpha = a->alpha, beta = a->beta;
    const int64_t n = cnn_tensor_numel(a->y);
    /* element i of y depends on element i of a and b only, so y may alias either */
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = alpha * x1[i] + beta * x2[i];
    return CNN_OK;
}

cnn_status cnn_cpu_scale(cnn_backend *b, cnn_tensor *t, float alpha)
{
    (void)b;
    float *x = t->data;
    const int64_t n = cnn_tensor_numel(t);
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) x[i] *= alpha;
    return CNN_OK;
}

/* Elements per partial sum of sum_squares: the partials are fixed by the data alone (not by the thread count or
 * timing) and added in order, so the result is bit-for-bit reproducible. 8K floats is 32 KiB, an L1's worth. */
#define CNN_CPU_SUMSQ_CHUNK 8192

/* sum of x[i]^2 over [lo, hi), in order, in double: one partial sum */
static double cnn_cpu_sumsq_span(const float *x, int64_t lo, int64_t hi)
{
    double s = 0.0;
    for (int64_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
    return s;
}

cnn_status cnn_cpu_sum_squares(cnn_backend *b, const cnn_tensor *t, double *out)
{
    static const char *op = "sum_squares on cpu";
    (void)b;
    const float *x = t->data;
    const int64_t n = cnn_tensor_numel(t);
    const int64_t chunks = (n + CNN_CPU_SUMSQ_CHUNK - 1) / CNN_CPU_SUMSQ_CHUNK;
    if (chunks <= 1) {
        *out = cnn_cpu_sumsq_span(x, 0, n);
        return CNN_OK;
    }
    double *partial = malloc((size_t)chunks * sizeof *partial);
    if (!partial)
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for %lld partial sums", op, (long long)chunks);
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t c = 0; c < chunks; c++) {
        const int64_t lo = c * CNN_CPU_SUMSQ_CHUNK;
        partial[c] = cnn_cpu_sumsq_span(x, lo, lo + CNN_CPU_SUMSQ_CHUNK < n ? lo + CNN_CPU_SUMSQ_CHUNK : n);
    }
    double s = 0.0;
    for (int64_t c = 0; c < chunks; c++) s += partial[c];
    free(partial);
    *out = s;
    return CNN_OK;
}

/* The chunks of every tensor form one parallel loop; each tensor's partials are then added in order, as
 * cnn_cpu_sum_squares adds them (a sum of nonnegative terms starting from 0.0 equals its first term). */
cnn_status cnn_cpu_sum_squares_multi(cnn_backend *b, const cnn_tensor *const *ts, int n, double *out, int *failed)
{
    static const char *op = "sum_squares_multi on cpu";
    cnn_status st = CNN_OK;
    int64_t *counts = NULL, *first = NULL;
    double *partial = NULL;
    (void)b;
    if (failed) *failed = -1;
    counts = malloc((size_t)n * sizeof *counts);
    if (!counts) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for %d tensors", op, n);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        counts[i] = cnn_tensor_numel(ts[i]);
        total += counts[i];
    }
    CNN_TRY(cnn_cpu_chunks_make(counts, n, CNN_CPU_SUMSQ_CHUNK, &first, op));
    const int64_t chunks = first[n];
    partial = malloc((size_t)(chunks ? chunks : 1) * sizeof *partial);
    if (!partial) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory for %lld partial sums", op, (long long)chunks);
        goto fail;
    }
#pragma omp parallel for schedule(static) if (total >= CNN_CPU_PARALLEL_MIN)
    for (int64_t c = 0; c < chunks; c++) {
        const int t = cnn_cpu_chunk_owner(first, n, c);
        const int64_t lo = (c - first[t]) * CNN_CPU_SUMSQ_CHUNK;
        const int64_t hi = lo + CNN_CPU_SUMSQ_CHUNK < counts[t] ? lo + CNN_CPU_SUMSQ_CHUNK : counts[t];
        partial[c] = cnn_cpu_sumsq_span(ts[t]->data, lo, hi);
    }
    for (int i = 0; i < n; i++) {
        double s = 0.0;
        for (int64_t c = first[i]; c < first[i + 1]; c++) s += partial[c];
        out[i] = s;
    }
fail:
    free(partial);
    free(first);
    free(counts);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// dropout

/* out = keep(i) ? in / (1 - rate) : 0; forward and backward are the same map. `out` may alias `in`. */
static void cnn_cpu_dropout_run(const float *in, float *out, int64_t n, float rate, uint64_t seed, uint64_t offset)
{
    if (rate == 0.0f) {
        if (out != in && n > 0) memmove(out, in, (size_t)n * sizeof(float));
        return;
    }
    const float inv_keep = 1.0f / (1.0f - rate);
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        out[i] = cnn_dropout_keep(seed, offset + (uint64_t)i, rate) ? in[i] * inv_keep : 0.0f;
}

cnn_status cnn_cpu_dropout_forward(cnn_backend *b, const cnn_dropout_args *a)
{
    (void)b;
    cnn_cpu_dropout_run(a->x->data, a->y->data, cnn_tensor_numel(a->x), a->rate, a->seed, a->offset);
    return CNN_OK;
}

cnn_status cnn_cpu_dropout_backward(cnn_backend *b, const cnn_dropout_args *a)
{
    (void)b;
    cnn_cpu_dropout_run(a->dy->data, a->dx->data, cnn_tensor_numel(a->dy), a->rate, a->seed, a->offset);
    return CNN_OK;
}

// ---------------------------------------------------------------------------------------------------------------
// fill

cnn_status cnn_cpu_fill(cnn_backend *b, cnn_tensor *t, float value)
{
    (void)b;
    const int64_t n = cnn_tensor_numel(t);
    if (value == 0.0f && !signbit(value)) {
        /* all-zero bytes are 0 in every dtype */
        if (n > 0) memset(t->data, 0, cnn_tensor_bytes(t));
        return CNN_OK;
    }
    float *x = t->data; /* F32: core/ops.c checked */
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = value;
    return CNN_OK;
}
