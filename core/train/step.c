/* The training step, and the public API that runs it one batch at a time (cnn_trainer, include/cnn/train.h):
 * forward, the loss, backward and the update, the same function cnn_train's loop calls. */
#include <stdlib.h>

#include "core/compress/compress.h"
#include "core/compress/prune.h"
#include "core/error.h"
#include "core/nn/optim.h"
#include "core/ops.h"
#include "core/train/dist.h"

cnn_status cnn_train_batch(cnn_net *net, cnn_optimizer *opt, const cnn_train_config *cfg, const cnn_step_extras *x,
                           int n, int64_t *skipped, int *updated)
{
    static const cnn_step_extras none = {0};
    cnn_status st = CNN_OK;
    if (!x) x = &none;
    int update = n > 0;
    *updated = 0;
    if (n) {
        CNN_TRY(cnn_net_forward(net, 1));
        CNN_TRY(x->distill ? cnn_distill_loss(x->distill, net, x->images, n) : cnn_net_loss(net, 1));
    }
    /* several ranks: every one joins the average, with or without images of its own; the gradient buckets start
     * while backward runs */
    if (x->dist) CNN_TRY(cnn_dist_grads_begin(x->dist, net, opt, n));
    if (n) st = cnn_net_backward(net);
    if (x->dist) {
        cnn_status end = cnn_dist_grads_end(x->dist, net, n, &update); /* removes the hook in any case */
        if (st == CNN_OK) st = end;
    }
    CNN_TRY(st);
    if (update) {
        CNN_TRY(cnn_train_update(net, opt, cfg->clip_norm, skipped));
        net->step++;
        if (x->pruner) CNN_TRY(cnn_pruner_step(x->pruner, net)); /* pruned weights back to exactly zero */
        *updated = 1;
    }
fail:
    return st;
}

struct cnn_trainer {
    cnn_net *net;
    cnn_optimizer *opt;
    cnn_train_config cfg;
    float *probs, *losses; /* the last batch's, read back for the loss and the count of right answers */
    int capacity;
    int64_t skipped;
};

cnn_status cnn_trainer_create(cnn_net *net, const cnn_train_config *cfg, cnn_trainer **out)
{
    cnn_status st = CNN_OK;
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_trainer_create: no output");
    *out = NULL;
    if (!net || !cfg) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_trainer_create: no network or no settings");
    CNN_TRY(cnn_train_check_config(cfg));
    if (cfg->teacher)
        return cnn_error(CNN_ERR_UNSUPPORTED, "cnn_trainer_create: distillation (a teacher) runs in cnn_train, not "
                         "one batch at a time");
    if (cfg->prune.enabled)
        return cnn_error(CNN_ERR_UNSUPPORTED, "cnn_trainer_create: pruning (its schedule counts cnn_train's steps) "
                         "runs in cnn_train, not one batch at a time");
    if (cfg->balanced_class_weights)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_trainer_create: balanced class weights need the training set: "
                         "compute them and give them as class_weights");
    if (cnn_net_param_count(net) == 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: no trainable weights (every layer with weights is frozen)",
                         net->source);
    const int slots = cnn_optimizer_slots(cfg->optimizer, cfg->momentum);
    CNN_TRY(cnn_net_check_memory(net, cfg->batch_size, 1, slots));
    cnn_net_set_memory_use(net, 1, slots);
    cnn_trainer *t = calloc(1, sizeof *t);
    if (!t) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    t->net = net;
    t->cfg = *cfg;
    *out = t;
    CNN_TRY(cnn_optimizer_create(net, cfg, &t->opt));
    CNN_TRY(cnn_net_sync_compute_weights(net));
    CNN_TRY(cnn_op_set_deterministic(net->backend, cfg->deterministic));
    CNN_TRY(cnn_net_set_loss_options(net, cfg->label_smoothing, cfg->class_weights, cnn_net_num_outputs(net)));
    return CNN_OK;
fail:
    cnn_trainer_destroy(*out);
    *out = NULL;
    return st;
}

cnn_status cnn_trainer_step(cnn_trainer *t, const float *images, const int32_t *labels, int n, double *loss,
                            int *correct)
{
    cnn_status st = CNN_OK;
    if (!t || !images || !labels || n < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_trainer_step: no trainer, images or labels, or %d images", n);
    cnn_net *net = t->net;
    int k = cnn_net_num_outputs(net);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return cnn_error(CNN_ERR_INVALID_ARG, "cnn_trainer_step: image %d has label %d; %s has %d classes", i,
                             (int)labels[i], net->source, k);
    if (n > t->capacity) {
        if (n > t->cfg.batch_size) CNN_TRY(cnn_net_check_memory(net, n, 1, cnn_optimizer_slots(t->cfg.optimizer,
                                                                                                t->cfg.momentum)));
        float *probs = realloc(t->probs, (size_t)n * k * sizeof *probs);
        if (probs) t->probs = probs;
        float *losses = realloc(t->losses, (size_t)n * sizeof *losses);
        if (losses) t->losses = losses;
        if (!probs || !losses) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a batch of %d", n);
        t->capacity = n;
    }
    /* the images through the net's normalization, as a one-batch view */
    int h, w, c;
    cnn_net_input_shape(net, &h, &w, &c);
    cnn_dataset view = {.n = n, .h = h, .w = w, .c = c, .images = (float *)images, .labels = (int32_t *)labels,
                        .num_classes = k};
    CNN_TRY(cnn_net_stage_batch(net, &view, NULL, 0, n));
    int updated;
    CNN_TRY(cnn_train_batch(net, t->opt, &t->cfg, NULL, n, &t->skipped, &updated));
    CNN_TRY(cnn_tensor_read(net->probs, t->probs, (size_t)n * k * sizeof(float)));
    CNN_TRY(cnn_tensor_read(net->losses, t->losses, (size_t)n * sizeof(float)));
    double sum = 0.0;
    int right = 0;
    for (int i = 0; i < n; i++) {
        const float *p = t->probs + (size_t)i * k;
        right += cnn_argmax(p, k) == labels[i];
        sum += t->losses[i];
    }
    if (loss) *loss = sum / n;
    if (correct) *correct = right;
fail:
    return st;
}

cnn_status cnn_trainer_set_lr(cnn_trainer *t, float lr)
{
    if (!t || !(lr > 0.0f) || lr > 1e3f)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_trainer_set_lr: the learning rate must be in (0, 1000], got %g",
                         (double)lr);
    t->opt->lr = lr;
    return CNN_OK;
}

float cnn_trainer_lr(const cnn_trainer *t) { return t ? t->opt->lr : 0.0f; }

int64_t cnn_trainer_steps(const cnn_trainer *t) { return t ? (int64_t)t->net->step : 0; }

void cnn_trainer_destroy(cnn_trainer *t)
{
    if (!t) return;
    cnn_optimizer_destroy(t->opt);
    free(t->probs);
    free(t->losses);
    free(t);
}
