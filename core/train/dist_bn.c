/* --sync-batchnorm (core/train/dist.h; README, "Data-parallel training"): batchnorm with the statistics of the whole
 * global batch, as PyTorch's SyncBatchNorm. Forward adds each rank's per-channel sum and sum of squares; backward
 * adds the two per-channel gradient sums (the dbeta and dgamma of the rank's images) and corrects dx. Both go
 * through host memory and cnn_dist_sum (rank order: the same numbers on every rank, run after run), so any
 * backend takes part; the normalization itself stays the backend's op (its inference form, fed the global
 * statistics), with the residual and activation it fuses.
 *
 * The math. With M rows of the global batch (images x H x W), mean mu and biased variance var of channel c,
 * s = 1 / sqrt(var + eps) and xhat = (x - mu) s, one process of the global batch has
 *   dx = gamma s (g - sum(g) / M - xhat sum(g xhat) / M),  g = the gradient w.r.t. the normalized output,
 * where g carries the loss's 1 / N_images. A rank's g carries 1 / n_r instead (its loss is the mean over its
 * images): in its scale, sum(g) / M becomes (sum_s n_s S_s / N) / m_r with S_s = rank s's own sum and m_r its
 * rows, i.e. the image-weighted average of the ranks' sums over the rank's own rows. The backend's training
 * backward, given the global mu and s, computes dx with its own S_r / m_r; the difference is an affine function of
 * x per channel, added here. dgamma and dbeta need nothing: the gradient reduction averages them with the same
 * weights (core/train/dist.c). */
#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "core/nn/layer.h"
#include "core/ops.h"
#include "core/train/dist.h"

static cnn_status sync_forward(void *d, cnn_backend *b, const cnn_batchnorm_args *a)
{
    return cnn_dist_bn_forward(d, b, a);
}

static cnn_status sync_backward(void *d, const cnn_batchnorm_args *a) { return cnn_dist_bn_backward(d, a); }

cnn_status cnn_dist_attach_net(cnn_dist *d, cnn_net *net)
{
    if (!cnn_dist_sync_batchnorm(d)) return CNN_OK;
    const cnn_bn_sync sync = {sync_forward, sync_backward, d};
    for (int i = 0; i < net->nlayers; i++)
        if (net->layers[i]->ops == &cnn_batchnorm_layer_ops) ((cnn_batchnorm_layer *)net->layers[i])->sync = sync;
    return CNN_OK;
}

void cnn_dist_detach_net(cnn_net *net)
{
    const cnn_bn_sync none = {0};
    for (int i = 0; net && i < net->nlayers; i++)
        if (net->layers[i]->ops == &cnn_batchnorm_layer_ops) ((cnn_batchnorm_layer *)net->layers[i])->sync = none;
}

static cnn_status f32_only(const cnn_tensor *t, const char *what)
{
    if (t->dtype == CNN_F32) return CNN_OK;
    return cnn_error(CNN_ERR_UNSUPPORTED, "--sync-batchnorm: the batchnorm %s is %s; synchronized statistics take "
                                          "f32 tensors (train without --precision fp16, or without --sync-batchnorm)",
                     what, cnn_dtype_name(t->dtype));
}

/* Host memory for the per-channel and per-element values of one call. */
typedef struct bn_host {
    float *x, *out;  /* numel: x, and dx (backward) */
    float *ch;       /* 5 x C floats */
    double *sums;    /* 2 C + 1 doubles */
} bn_host;

static cnn_status bn_host_alloc(bn_host *h, int64_t numel, int64_t c, int with_out)
{
    h->x = malloc((size_t)numel * sizeof *h->x);
    h->out = with_out ? malloc((size_t)numel * sizeof *h->out) : NULL;
    h->ch = malloc((size_t)c * 5 * sizeof *h->ch);
    h->sums = calloc((size_t)(2 * c + 1), sizeof *h->sums);
    if (!h->x || (with_out && !h->out) || !h->ch || !h->sums)
        return cnn_error(CNN_ERR_NO_MEMORY, "--sync-batchnorm: out of host memory for %lld values", (long long)numel);
    return CNN_OK;
}

static void bn_host_free(bn_host *h)
{
    free(h->x);
    free(h->out);
    free(h->ch);
    free(h->sums);
}

cnn_status cnn_dist_bn_forward(cnn_dist *d, cnn_backend *b, const cnn_batchnorm_args *a)
{
    cnn_status st = CNN_OK;
    bn_host h = {0};
    CNN_TRY(f32_only(a->x, "input"));
    CNN_TRY(f32_only(a->running_mean, "running mean"));
    const int64_t c = cnn_tensor_numel(a->running_mean), numel = cnn_tensor_numel(a->x);
    if (c < 1 || numel % c) {
        st = cnn_error(CNN_ERR_INVALID_ARG, "--sync-batchnorm: %lld values are not rows of %lld channels",
                       (long long)numel, (long long)c);
        goto fail;
    }
    const int64_t m = numel / c;
    CNN_TRY(bn_host_alloc(&h, numel, c, 0));
    float *rm = h.ch, *rv = h.ch + c, *mean = h.ch + 2 * c, *var = h.ch + 3 * c;
    CNN_TRY(cnn_tensor_read(a->x, h.x, (size_t)numel * sizeof *h.x));
    CNN_TRY(cnn_tensor_read(a->running_mean, rm, (size_t)c * sizeof *rm));
    CNN_TRY(cnn_tensor_read(a->running_var, rv, (size_t)c * sizeof *rv));
    /* shifted by the running mean, which every rank holds alike: no cancellation when |mean| >> std */
    double *s1 = h.sums, *s2 = h.sums + c;
    for (int64_t r = 0; r < m; r++) {
        const float *xr = h.x + r * c;
        for (int64_t j = 0; j < c; j++) {
            const double dv = (double)xr[j] - (double)rm[j];
            s1[j] += dv;
            s2[j] += dv * dv;
        }
    }
    h.sums[2 * c] = (double)m;
    CNN_TRY(cnn_dist_sum(d, h.sums, (int)(2 * c + 1), "the batchnorm statistics (--sync-batchnorm)"));
    const double rows = h.sums[2 * c];
    for (int64_t j = 0; j < c; j++) {
        const double dm = s1[j] / rows, v = s2[j] / rows - dm * dm;
        mean[j] = (float)((double)rm[j] + dm);
        var[j] = (float)(v > 0.0 ? v : 0.0); /* biased: what normalizes */
    }
    /* the backend normalizes with the global statistics, in its inference form: save_mean and save_invstd hold
     * the mean and the variance for the call, then the mean and invstd that backward reads */
    CNN_TRY(cnn_tensor_write(a->save_mean, mean, (size_t)c * sizeof *mean));
    CNN_TRY(cnn_tensor_write(a->save_invstd, var, (size_t)c * sizeof *var));
    cnn_batchnorm_args e = *a;
    e.training = 0;
    e.running_mean = a->save_mean;
    e.running_var = a->save_invstd;
    CNN_TRY(cnn_op_batchnorm_forward(b, &e));
    /* the running statistics, as the backend's training forward updates them (PyTorch: unbiased variance), with
     * the global count */
    const double mom = a->momentum, unbias = rows > 1.0 ? rows / (rows - 1.0) : 1.0;
    for (int64_t j = 0; j < c; j++) {
        rm[j] = (float)((1.0 - mom) * rm[j] + mom * mean[j]);
        rv[j] = (float)((1.0 - mom) * rv[j] + mom * (double)var[j] * unbias);
        var[j] = (float)(1.0 / sqrt((double)var[j] + (double)a->eps)); /* now invstd */
    }
    CNN_TRY(cnn_tensor_write(a->save_invstd, var, (size_t)c * sizeof *var));
    CNN_TRY(cnn_tensor_write(a->running_mean, rm, (size_t)c * sizeof *rm));
    CNN_TRY(cnn_tensor_write(a->running_var, rv, (size_t)c * sizeof *rv));
fail:
    bn_host_free(&h);
    return st;
}

cnn_status cnn_dist_bn_backward(cnn_dist *d, const cnn_batchnorm_args *a)
{
    if (!a->dx) return CNN_OK;
    cnn_status st = CNN_OK;
    bn_host h = {0};
    if (!a->dgamma || !a->dbeta)
        return cnn_error(CNN_ERR_UNSUPPORTED, "--sync-batchnorm: a batchnorm layer without weight gradients (frozen) "
                                              "cannot share its batch's gradient sums");
    CNN_TRY(f32_only(a->x, "input"));
    CNN_TRY(f32_only(a->dx, "input gradient"));
    const int64_t c = cnn_tensor_numel(a->save_mean), numel = cnn_tensor_numel(a->x);
    const int64_t m = numel / c, images = a->x->shape[0];
    CNN_TRY(bn_host_alloc(&h, numel, c, 1));
    float *gamma = h.ch, *mu = h.ch + c, *s = h.ch + 2 * c, *dbeta = h.ch + 3 * c, *dgamma = h.ch + 4 * c;
    CNN_TRY(cnn_tensor_read(a->gamma, gamma, (size_t)c * sizeof *gamma));
    CNN_TRY(cnn_tensor_read(a->save_mean, mu, (size_t)c * sizeof *mu));
    CNN_TRY(cnn_tensor_read(a->save_invstd, s, (size_t)c * sizeof *s));
    /* this rank's sums (sum dy as dbeta, sum dy xhat as dgamma), weighted by its images */
    CNN_TRY(cnn_tensor_read(a->dbeta, dbeta, (size_t)c * sizeof *dbeta));
    CNN_TRY(cnn_tensor_read(a->dgamma, dgamma, (size_t)c * sizeof *dgamma));
    for (int64_t j = 0; j < c; j++) {
        h.sums[j] = (double)images * dbeta[j];
        h.sums[c + j] = (double)images * dgamma[j];
    }
    h.sums[2 * c] = (double)images;
    CNN_TRY(cnn_dist_sum(d, h.sums, (int)(2 * c + 1), "the batchnorm gradient sums (--sync-batchnorm)"));
    const double all = h.sums[2 * c];
    /* per channel: dx += A + B (x - mu) with A = gamma s (dbeta_r - Dbeta) / m_r and B = gamma s^2 (dgamma_r -
     * Dgamma) / m_r; A and B take the places of dbeta and dgamma */
    for (int64_t j = 0; j < c; j++) {
        const double gs = (double)gamma[j] * s[j];
        dbeta[j] = (float)(gs * ((double)dbeta[j] - h.sums[j] / all) / (double)m);
        dgamma[j] = (float)(gs * s[j] * ((double)dgamma[j] - h.sums[c + j] / all) / (double)m);
    }
    CNN_TRY(cnn_tensor_read(a->x, h.x, (size_t)numel * sizeof *h.x));
    CNN_TRY(cnn_tensor_read(a->dx, h.out, (size_t)numel * sizeof *h.out));
    for (int64_t r = 0; r < m; r++) {
        const float *xr = h.x + r * c;
        float *dr = h.out + r * c;
        for (int64_t j = 0; j < c; j++) dr[j] += dbeta[j] + dgamma[j] * (xr[j] - mu[j]);
    }
    CNN_TRY(cnn_tensor_write(a->dx, h.out, (size_t)numel * sizeof *h.out));
fail:
    bn_host_free(&h);
    return st;
}
