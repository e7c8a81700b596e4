/* Adversarial attacks (include/cnn/explain.h): FGSM and PGD in the L-infinity ball of [0, 1] pixels, on the
 * cross-entropy of the true label, through cnn_grad's input gradients; and accuracy under attack over a source.
 *
 * The gradient of the cross-entropy with respect to the logits is softmax - onehot; only its sign reaches the
 * image, so no scale matters. sign(0) = 0, as torch.sign. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/explain.h"
#include "core/data/loader.h"
#include "core/error.h"
#include "core/nn/net.h"
#include "core/rng.h"

static const char *const ATTACK_NAMES[] = {"fgsm", "pgd"};
_Static_assert(sizeof ATTACK_NAMES / sizeof ATTACK_NAMES[0] == CNN_ATTACK_METHOD_COUNT, "a name per attack");

/* Random starts: image i's generator is seeded with seed ^ (i * this odd constant, a SplitMix64 increment) */
#define START_STREAM 0x9E3779B97F4A7C15ull

cnn_status cnn_attack_parse(const char *name, cnn_attack_method *out)
{
    for (int m = 0; name && m < CNN_ATTACK_METHOD_COUNT; m++)
        if (!strcmp(name, ATTACK_NAMES[m])) {
            *out = (cnn_attack_method)m;
            return CNN_OK;
        }
    return cnn_error(CNN_ERR_INVALID_ARG, "unknown attack '%s' (known: fgsm, pgd)", name ? name : "");
}

const char *cnn_attack_name(cnn_attack_method m)
{
    return m >= 0 && m < CNN_ATTACK_METHOD_COUNT ? ATTACK_NAMES[m] : "?";
}

void cnn_attack_config_defaults(cnn_attack_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->method = CNN_ATTACK_FGSM;
    cfg->eps = 8.0f / 255.0f; /* the usual CIFAR-10 budget (Madry et al.) */
    cfg->steps = 10;
    cfg->seed = 1;
}

cnn_status cnn_attack_check(const cnn_attack_config *cfg)
{
    if (cfg->method < 0 || cfg->method >= CNN_ATTACK_METHOD_COUNT)
        return cnn_error(CNN_ERR_INVALID_ARG, "attack: unknown method %d", (int)cfg->method);
    if (!(cfg->eps >= 0.0f && cfg->eps <= 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "attack: eps must be in [0, 1] (pixel units of [0, 1] images, before "
                         "normalization), got %g", (double)cfg->eps);
    if (cfg->method == CNN_ATTACK_PGD && cfg->steps < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "attack: PGD needs steps >= 1, got %d", cfg->steps);
    if (!isfinite(cfg->alpha) || cfg->alpha > 1.0f)
        return cnn_error(CNN_ERR_INVALID_ARG, "attack: alpha must be at most 1 (<= 0: 2.5 eps / steps), got %g",
                         (double)cfg->alpha);
    return CNN_OK;
}

static float clampf(float v, float lo, float hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The cross-entropy's gradient w.r.t. the logits for n images: softmax - onehot. */
static void xent_grad(const float *probs, const int32_t *labels, int n, int k, float *d)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < k; j++) d[(size_t)i * k + j] = probs[(size_t)i * k + j] - (j == labels[i] ? 1.0f : 0.0f);
}

static cnn_status attack_batch(cnn_grad *g, const cnn_attack_config *cfg, const float *x, const int32_t *labels,
                               int n, int64_t first, float *adv, float *probs, float *dlog, float *grad)
{
    cnn_status st = CNN_OK;
    cnn_net *net = cnn_grad_net(g);
    int h, w, c;
    cnn_net_input_shape(net, &h, &w, &c);
    const int k = cnn_net_num_outputs(net);
    const size_t per = (size_t)h * w * c, total = per * (size_t)n;
    const float eps = cfg->eps;
    const int steps = cfg->method == CNN_ATTACK_PGD ? cfg->steps : 1;
    const float alpha = cfg->method == CNN_ATTACK_FGSM ? eps : cfg->alpha > 0.0f ? cfg->alpha : 2.5f * eps / steps;
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return cnn_error(CNN_ERR_INVALID_ARG, "attack: image %lld has label %d; the model has %d classes",
                             (long long)(first + i), labels[i], k);
    memcpy(adv, x, total * sizeof *adv);
    if (cfg->method == CNN_ATTACK_PGD && cfg->random_start)
        for (int i = 0; i < n; i++) {
            cnn_rng r;
            cnn_rng_seed(&r, cfg->seed ^ ((uint64_t)(first + i) * START_STREAM));
            for (size_t j = 0; j < per; j++) {
                size_t o = (size_t)i * per + j;
                adv[o] = clampf(x[o] + eps * (2.0f * cnn_rng_uniform(&r) - 1.0f), 0.0f, 1.0f);
            }
        }
    for (int s = 0; s < steps; s++) {
        CNN_TRY(cnn_grad_forward(g, adv, n, NULL, probs));
        xent_grad(probs, labels, n, k, dlog);
        CNN_TRY(cnn_grad_backward(g, dlog, grad, -1, NULL));
        for (size_t o = 0; o < total; o++) {
            float sg = (float)((grad[o] > 0.0f) - (grad[o] < 0.0f));
            float v = clampf(adv[o] + alpha * sg, x[o] - eps, x[o] + eps); /* the eps-ball, then the image range */
            adv[o] = clampf(v, 0.0f, 1.0f);
        }
    }
fail:
    return st;
}

cnn_status cnn_attack_images(cnn_grad *g, const cnn_attack_config *cfg, const float *images, const int32_t *labels,
                             int64_t n, int64_t first, float *adv)
{
    cnn_status st = cnn_attack_check(cfg);
    if (st != CNN_OK) return st;
    cnn_net *net = cnn_grad_net(g);
    int h, w, c;
    cnn_net_input_shape(net, &h, &w, &c);
    const int k = cnn_net_num_outputs(net), cap = cnn_grad_capacity(g);
    const size_t per = (size_t)h * w * c;
    float *probs = malloc((size_t)cap * k * sizeof *probs), *dlog = malloc((size_t)cap * k * sizeof *dlog);
    float *grad = malloc((size_t)cap * per * sizeof *grad);
    if (!probs || !dlog || !grad) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for an attack on %d images", cap);
        goto fail;
    }
    for (int64_t i = 0; i < n; i += cap) {
        int b = (int)(n - i < cap ? n - i : cap);
        CNN_TRY(attack_batch(g, cfg, images + (size_t)i * per, labels + i, b, first + i, adv + (size_t)i * per, probs,
                             dlog, grad));
    }
fail:
    free(probs);
    free(dlog);
    free(grad);
    return st;
}

/* Adds a batch's correct predictions and cross-entropy. */
static void score(const float *probs, const int32_t *labels, int n, int k, int64_t *correct, double *loss)
{
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        *correct += cnn_argmax(p, k) == labels[i];
        *loss += -log(fmax((double)p[labels[i]], 1e-30));
    }
}

cnn_status cnn_evaluate_attack(cnn_net *net, const cnn_source *src, const cnn_train_config *data, int batch,
                               const cnn_attack_config *cfg, cnn_attack_result *out)
{
    cnn_status st = cnn_attack_check(cfg);
    memset(out, 0, sizeof *out);
    if (st != CNN_OK) return st;
    if (batch < 1) return cnn_error(CNN_ERR_INVALID_ARG, "attack: batch size must be at least 1, got %d", batch);
    cnn_grad *g = NULL;
    cnn_loader *l = NULL;
    cnn_batch *b = NULL;
    float *adv = NULL, *probs = NULL;
    const int k = cnn_net_num_outputs(net);
    int64_t clean_ok = 0, adv_ok = 0, seen = 0;
    double clean_loss = 0.0, adv_loss = 0.0;
    /* the loader without normalization: the attack works on [0, 1] pixels, cnn_grad normalizes */
    cnn_loader_config lc;
    cnn_loader_config_for_net(&lc, net, data, batch);
    lc.epochs = 1;
    const size_t per = (size_t)lc.h * lc.w * lc.c;
    CNN_TRY(cnn_grad_create(net, batch, &g));
    CNN_TRY(cnn_loader_create(src, &lc, &l));
    adv = malloc((size_t)batch * per * sizeof *adv);
    probs = malloc((size_t)batch * k * sizeof *probs);
    if (!adv || !probs) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a batch of %d", batch);
        goto fail;
    }
    int64_t batches = cnn_loader_batches_per_epoch(l), first = 0;
    for (int64_t i = 0; i < batches; i++) {
        CNN_TRY(cnn_loader_next(l, &b));
        if (b->n) {
            CNN_TRY(cnn_grad_forward(g, b->images, b->n, NULL, probs));
            score(probs, b->labels, b->n, k, &clean_ok, &clean_loss);
            CNN_TRY(cnn_attack_images(g, cfg, b->images, b->labels, b->n, first, adv));
            CNN_TRY(cnn_grad_forward(g, adv, b->n, NULL, probs));
            score(probs, b->labels, b->n, k, &adv_ok, &adv_loss);
            seen += b->n;
        }
        first += lc.batch_size;
        cnn_loader_release(l, b);
        b = NULL;
    }
    if (!seen) {
        st = cnn_error(CNN_ERR_FORMAT, "no image of the evaluation set could be read");
        goto fail;
    }
    out->n = seen;
    out->clean_accuracy = (double)clean_ok / (double)seen;
    out->adv_accuracy = (double)adv_ok / (double)seen;
    out->clean_loss = clean_loss / (double)seen;
    out->adv_loss = adv_loss / (double)seen;
fail:
    if (b) cnn_loader_release(l, b);
    cnn_loader_destroy(l);
    cnn_grad_destroy(g);
    free(adv);
    free(probs);
    return st;
}
