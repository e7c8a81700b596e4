/* Elementwise ops on the CPU: activations, softmax cross-entropy, optimizer updates, fill.
 *
 * The math lives in core/ew_math.h (shared with the CUDA backend); this file only schedules it over OpenMP
 * threads. Loops run serially below CNN_CPU_PARALLEL_MIN elements, where waking the thread team costs more than
 * the work. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/ew_math.h"
#include "cpu/dnnl_util.h"

/* About 16K floats (64 KiB): below this a parallel region's fork/join (~1-2 us) outweighs the loop. */
#define CNN_CPU_PARALLEL_MIN 16384

static cnn_status cnn_cpu_check_same_count(const cnn_tensor *t, const cnn_tensor *ref, const char *op,
                                           const char *name, const char *ref_name)
{
    if (cnn_tensor_numel(t) == cnn_tensor_numel(ref)) return CNN_OK;
    char s1[CNN_CPU_SHAPE_BUF], s2[CNN_CPU_SHAPE_BUF];
    return cnn_error(CNN_ERR_SHAPE, "%s: %s %s must have as many elements as %s %s", op, name,
                     cnn_cpu_shape_str(t, s1, sizeof s1), ref_name, cnn_cpu_shape_str(ref, s2, sizeof s2));
}

// ---------------------------------------------------------------------------------------------------------------
// activations

cnn_status cnn_cpu_act_forward(cnn_backend *b, const cnn_act_args *a)
{
    static const char *op = "act_forward";
    cnn_status st = CNN_OK;
    (void)b;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", op);
    if ((unsigned)a->act >= CNN_ACT_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: unknown activation %d", op, (int)a->act);
    CNN_TRY(cnn_cpu_check_f32(a->x, op, "x"));
    CNN_TRY(cnn_cpu_check_f32(a->y, op, "y"));
    CNN_TRY(cnn_cpu_check_same_count(a->y, a->x, op, "y", "x"));
    const float *x = a->x->data;
    float *y = a->y->data;
    const int64_t n = cnn_tensor_numel(a->x);
    const cnn_act act = a->act;
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = cnn_act_apply(act, x[i]);
fail:
    return st;
}

cnn_status cnn_cpu_act_backward(cnn_backend *b, const cnn_act_args *a)
{
    static const char *op = "act_backward";
    cnn_status st = CNN_OK;
    (void)b;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", op);
    if ((unsigned)a->act >= CNN_ACT_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: unknown activation %d", op, (int)a->act);
    CNN_TRY(cnn_cpu_check_f32(a->dy, op, "dy"));
    CNN_TRY(cnn_cpu_check_f32(a->dx, op, "dx"));
    CNN_TRY(cnn_cpu_check_same_count(a->dx, a->dy, op, "dx", "dy"));
    const float *dy = a->dy->data;
    float *dx = a->dx->data;
    const int64_t n = cnn_tensor_numel(a->dy);
    if (a->act == CNN_ACT_NONE) {
        if (dx != dy && n > 0) memmove(dx, dy, (size_t)n * sizeof(float));
        return CNN_OK;
    }
    /* every activation here has its gradient expressed through its output y */
    CNN_TRY(cnn_cpu_check_f32(a->y, op, "y"));
    CNN_TRY(cnn_cpu_check_same_count(a->y, a->dy, op, "y", "dy"));
    const float *y = a->y->data;
    const cnn_act act = a->act;
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] = cnn_act_grad_from_y(act, y[i], dy[i]);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// softmax cross-entropy

cnn_status cnn_cpu_softmax_xent(cnn_backend *b, const cnn_softmax_xent_args *a)
{
    static const char *op = "softmax_xent";
    cnn_status st = CNN_OK;
    char s1[CNN_CPU_SHAPE_BUF], s2[CNN_CPU_SHAPE_BUF];
    (void)b;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", op);
    CNN_TRY(cnn_cpu_check_f32(a->logits, op, "logits"));
    if (a->logits->ndim != 2)
        return cnn_error(CNN_ERR_SHAPE, "%s: logits %s must be (N, K)", op,
                         cnn_cpu_shape_str(a->logits, s1, sizeof s1));
    const int64_t n = a->logits->shape[0], k = a->logits->shape[1];
    if (k < 1)
        return cnn_error(CNN_ERR_SHAPE, "%s: logits %s have no classes", op,
                         cnn_cpu_shape_str(a->logits, s1, sizeof s1));
    if (!a->labels) return cnn_error(CNN_ERR_INVALID_ARG, "%s: labels are missing", op);
    if (a->labels->dtype != CNN_I32)
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: labels have dtype %s; they must be I32", op,
                         cnn_dtype_name(a->labels->dtype));
    if (a->labels->ndim != 1 || a->labels->shape[0] != n)
        return cnn_error(CNN_ERR_SHAPE, "%s: labels %s must be (N) = (%lld) to match logits %s", op,
                         cnn_cpu_shape_str(a->labels, s1, sizeof s1), (long long)n,
                         cnn_cpu_shape_str(a->logits, s2, sizeof s2));
    if (!a->labels->data && n > 0) return cnn_error(CNN_ERR_INVALID_ARG, "%s: labels have no data", op);
    int64_t nk[2] = {n, k}, n1[1] = {n};
    if (a->probs) {
        CNN_TRY(cnn_cpu_check_f32(a->probs, op, "probs"));
        CNN_TRY(cnn_cpu_check_shape(a->probs, 2, nk, op, "probs"));
    }
    if (a->dlogits) {
        CNN_TRY(cnn_cpu_check_f32(a->dlogits, op, "dlogits"));
        CNN_TRY(cnn_cpu_check_shape(a->dlogits, 2, nk, op, "dlogits"));
    }
    if (a->losses) {
        CNN_TRY(cnn_cpu_check_f32(a->losses, op, "losses"));
        CNN_TRY(cnn_cpu_check_shape(a->losses, 1, n1, op, "losses"));
    }
    const int32_t *labels = a->labels->data;
    /* every label is checked before anything is written */
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: label %d of sample %lld is outside [0, %lld)", op, labels[i],
                             (long long)i, (long long)k);

    const float *logits = a->logits->data;
    float *probs = a->probs ? a->probs->data : NULL;
    float *losses = a->losses ? a->losses->data : NULL;
    float *dlogits = a->dlogits ? a->dlogits->data : NULL;
    const float scale = a->grad_scale;
#pragma omp parallel for schedule(static) if (n * k >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float *x = logits + i * k;
        const int32_t label = labels[i];
        const float x_label = x[label]; /* read before any output (which may alias logits) is written */
        float m = x[0];
        for (int64_t j = 1; j < k; j++) m = x[j] > m ? x[j] : m;
        double sum = 0.0; /* max-subtracted, so every term is in (0, 1] and the sum in [1, K] */
        for (int64_t j = 0; j < k; j++) sum += exp((double)x[j] - m);
        const double log_sum = log(sum);
        if (losses) losses[i] = (float)(log_sum - ((double)x_label - m));
        if (probs || dlogits) {
            const double inv_sum = 1.0 / sum;
            for (int64_t j = 0; j < k; j++) {
                const float p = (float)(exp((double)x[j] - m) * inv_sum);
                if (probs) probs[i * k + j] = p;
                if (dlogits) dlogits[i * k + j] = scale * (p - (j == label ? 1.0f : 0.0f));
            }
        }
    }
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// optimizer updates

cnn_status cnn_cpu_sgd_update(cnn_backend *b, const cnn_sgd_args *a)
{
    static const char *op = "sgd_update";
    cnn_status st = CNN_OK;
    (void)b;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", op);
    CNN_TRY(cnn_cpu_check_f32(a->param, op, "param"));
    CNN_TRY(cnn_cpu_check_f32(a->grad, op, "grad"));
    CNN_TRY(cnn_cpu_check_same_count(a->grad, a->param, op, "grad", "param"));
    if (a->momentum != 0.0f) {
        if (!a->velocity)
            return cnn_error(CNN_ERR_INVALID_ARG, "%s: momentum %g needs a velocity tensor", op, (double)a->momentum);
        CNN_TRY(cnn_cpu_check_f32(a->velocity, op, "velocity"));
        CNN_TRY(cnn_cpu_check_same_count(a->velocity, a->param, op, "velocity", "param"));
    }
    float *p = a->param->data;
    const float *g = a->grad->data;
    float *v = a->momentum != 0.0f ? (float *)a->velocity->data : NULL;
    const int64_t n = cnn_tensor_numel(a->param);
    const float lr = a->lr, mu = a->momentum, wd = a->weight_decay, gs = a->grad_scale;
    const int nesterov = a->nesterov;
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        float unused = 0.0f; /* cnn_sgd_step leaves the velocity alone when mu == 0 */
        cnn_sgd_step(&p[i], g[i] * gs, v ? &v[i] : &unused, lr, mu, wd, nesterov);
    }
fail:
    return st;
}

cnn_status cnn_cpu_adam_update(cnn_backend *b, const cnn_adam_args *a)
{
    static const char *op = "adam_update";
    cnn_status st = CNN_OK;
    (void)b;
    if (!a) return cnn_error(CNN_ERR_INVALID_ARG, "%s: args is NULL", op);
    CNN_TRY(cnn_cpu_check_f32(a->param, op, "param"));
    CNN_TRY(cnn_cpu_check_f32(a->grad, op, "grad"));
    CNN_TRY(cnn_cpu_check_f32(a->m, op, "m"));
    CNN_TRY(cnn_cpu_check_f32(a->v, op, "v"));
    CNN_TRY(cnn_cpu_check_same_count(a->grad, a->param, op, "grad", "param"));
    CNN_TRY(cnn_cpu_check_same_count(a->m, a->param, op, "m", "param"));
    CNN_TRY(cnn_cpu_check_same_count(a->v, a->param, op, "v", "param"));
    if (!(a->bias_correction1 > 0.0f) || !(a->bias_correction2 > 0.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: bias corrections %g and %g must be > 0 (1 - beta^t with t >= 1)", op,
                         (double)a->bias_correction1, (double)a->bias_correction2);
    float *p = a->param->data, *m = a->m->data, *v = a->v->data;
    const float *g = a->grad->data;
    const int64_t n = cnn_tensor_numel(a->param);
    const float lr = a->lr, b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay;
    const float bc1 = a->bias_correction1, bc2 = a->bias_correction2, gs = a->grad_scale;
    const int decoupled = a->decoupled;
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++)
        cnn_adam_step(&p[i], g[i] * gs, &m[i], &v[i], lr, b1, b2, eps, wd, decoupled, bc1, bc2);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// fill

cnn_status cnn_cpu_fill(cnn_backend *b, cnn_tensor *t, float value)
{
    static const char *op = "fill";
    (void)b;
    if (!t) return cnn_error(CNN_ERR_INVALID_ARG, "%s: tensor is missing", op);
    const int64_t n = cnn_tensor_numel(t);
    if (n > 0 && !t->data) return cnn_error(CNN_ERR_INVALID_ARG, "%s: tensor has no data", op);
    if (t->backend && t->backend->ops != &cnn_cpu_ops)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: the tensor lives on backend '%s'", op, t->backend->name);
    if (value == 0.0f && !signbit(value)) {
        /* all-zero bytes are 0 in every dtype */
        if (n > 0) memset(t->data, 0, cnn_tensor_bytes(t));
        return CNN_OK;
    }
    if (t->dtype != CNN_F32)
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: filling a %s tensor with %g is not supported (only zero)", op,
                         cnn_dtype_name(t->dtype), (double)value);
    float *x = t->data;
#pragma omp parallel for schedule(static) if (n >= CNN_CPU_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) x[i] = value;
    return CNN_OK;
}
