/* The training loop and evaluation: batches, forward, loss, backward, optimizer, metrics, progress. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/explain.h"
#include "cnn/pipeline.h"
#include "core/compress/compress.h"
#include "core/compress/prune.h"
#include "core/data/loader.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/free_list.h"
#include "core/names.h"
#include "core/nn/optim.h"
#include "core/nn/qat.h"
#include "core/ops.h"
#include "core/progress.h"
#include "core/train/checkpoint.h"
#include "core/train/dist.h"

static const char *const optimizer_names[] = {"adam", "sgd", "adamw", "rmsprop"}; /* in cnn_optimizer_kind order */
CNN_NAME_TABLE_FUNCTIONS(cnn_optimizer_parse, cnn_optimizer_name, cnn_optimizer_kind, optimizer_names,
                         "adam, adamw, sgd, rmsprop")

static const char *const schedule_names[] = {"constant", "step", "cosine"}; /* in cnn_lr_schedule order */
_Static_assert(CNN_LR_COSINE + 1 == sizeof schedule_names / sizeof *schedule_names, "a name per schedule");
CNN_NAME_TABLE_FUNCTIONS(cnn_lr_schedule_parse, cnn_lr_schedule_name, cnn_lr_schedule, schedule_names,
                         "constant, step, cosine")

static const char *const monitor_names[] = {"val_loss", "val_accuracy", "loss", "accuracy"}; /* cnn_monitor order */
_Static_assert(CNN_MONITOR_ACCURACY + 1 == sizeof monitor_names / sizeof *monitor_names, "a name per monitor");
CNN_NAME_TABLE_FUNCTIONS(cnn_monitor_parse, cnn_monitor_name, cnn_monitor, monitor_names,
                         "val_loss, val_accuracy, loss, accuracy")

void cnn_train_config_defaults(cnn_train_config *c)
{
    memset(c, 0, sizeof *c);
    c->epochs = 10;
    c->batch_size = 64;
    c->optimizer = CNN_OPTIM_ADAM;
    c->lr = 1e-3f;
    c->momentum = 0.9f;
    c->beta1 = 0.9f;   /* Kingma & Ba 2015 */
    c->beta2 = 0.999f;
    c->eps = 1e-8f;    /* Kingma & Ba 2015 and PyTorch (Keras uses 1e-7) */
    c->rho = 0.9f;     /* Keras' RMSprop default */
    c->lr_step_epochs = 10;
    c->lr_gamma = 0.1f;
    c->plateau_patience = 2;
    c->plateau_factor = 0.1f;
    c->progress = stderr;
    c->keep_checkpoints = 3;
    c->warnings = stderr;
    cnn_attack_config_defaults(&c->attack); /* used only with c->adversarial */
    c->distill_alpha = CNN_DISTILL_DEFAULT_ALPHA; /* used only with c->teacher */
    c->temperature = CNN_DISTILL_DEFAULT_TEMPERATURE;
    cnn_prune_config_defaults(&c->prune);   /* off */
}

float cnn_lr_at(const cnn_train_config *c, int epoch)
{
    if (epoch < c->warmup_epochs) return c->lr * (float)(epoch + 1) / (float)(c->warmup_epochs + 1);
    int e = epoch - c->warmup_epochs, span = c->epochs - c->warmup_epochs;
    switch (c->lr_schedule) {
    case CNN_LR_STEP:
        return c->lr * powf(c->lr_gamma, (float)(e / (c->lr_step_epochs > 0 ? c->lr_step_epochs : 1)));
    case CNN_LR_COSINE:
        return span > 0 ? c->lr * 0.5f * (1.0f + cosf(3.14159265358979f * (float)e / (float)span)) : c->lr;
    default:
        return c->lr;
    }
}

/* Balanced class weights (sklearn's "balanced"): n / (classes * count(c)); 1 for a class without samples. */
static void balanced_weights(const cnn_dataset *ds, int k, float *w)
{
    for (int c = 0; c < k; c++) w[c] = 0.0f;
    for (int64_t i = 0; i < ds->n; i++) w[ds->labels[i]] += 1.0f;
    for (int c = 0; c < k; c++) w[c] = w[c] > 0.0f ? (float)ds->n / ((float)k * w[c]) : 1.0f;
}

cnn_status cnn_train_check_config(const cnn_train_config *c)
{
    if (c->epochs < 1 || c->batch_size < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "epochs (%d) and batch size (%d) must be at least 1", c->epochs,
                         c->batch_size);
    if ((unsigned)c->optimizer > CNN_OPTIM_RMSPROP || (unsigned)c->lr_schedule > CNN_LR_COSINE)
        return cnn_error(CNN_ERR_INVALID_ARG, "unknown optimizer (%d) or learning-rate schedule (%d)",
                         (int)c->optimizer, (int)c->lr_schedule);
    if (c->warmup_epochs < 0 || !(c->clip_norm >= 0.0f) ||
        (c->lr_schedule == CNN_LR_STEP && (c->lr_step_epochs < 1 || !(c->lr_gamma > 0.0f))) ||
        (c->reduce_on_plateau && (c->plateau_patience < 0 || !(c->plateau_factor > 0.0f && c->plateau_factor < 1.0f))))
        return cnn_error(CNN_ERR_INVALID_ARG, "schedule settings out of range: warm-up epochs >= 0, clip norm >= 0, "
                                              "step epochs >= 1 and gamma > 0, patience >= 0 and plateau factor in (0, 1)");
    if (c->adversarial) {
        cnn_status st = cnn_attack_check(&c->attack);
        if (st != CNN_OK) return cnn_error_prefix(st, "adversarial training: ");
        if (!(c->adv_ratio >= 0.0f && c->adv_ratio <= 1.0f))
            return cnn_error(CNN_ERR_INVALID_ARG, "adversarial training: the adversarial share of a batch must be in "
                             "(0, 1] (0: the method's default), got %g", (double)c->adv_ratio);
    }
    if (c->teacher && (!(c->distill_alpha >= 0.0f && c->distill_alpha <= 1.0f) || !(c->temperature > 0.0f)))
        return cnn_error(CNN_ERR_INVALID_ARG, "distillation: alpha must be in [0, 1] (got %g) and the temperature "
                         "> 0 (got %g)", (double)c->distill_alpha, (double)c->temperature);
    if (!(c->label_smoothing >= 0.0f && c->label_smoothing < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "label smoothing must be in [0, 1), got %g", (double)c->label_smoothing);
    if ((unsigned)c->monitor > CNN_MONITOR_ACCURACY || !(c->min_delta >= 0.0f) || c->early_stopping_patience < 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "callback settings out of range: a known monitor (%d), min delta >= 0 "
                                              "(%g), patience >= 0 (%d)", (int)c->monitor, (double)c->min_delta,
                         c->early_stopping_patience);
    if (c->prune.enabled) {
        cnn_status st = cnn_prune_check(&c->prune);
        if (st != CNN_OK) return st;
    }
    if (c->checkpoint_dir && (c->checkpoint_every < 0 || c->keep_checkpoints < 1))
        return cnn_error(CNN_ERR_INVALID_ARG, "checkpoints: every N >= 1 (%d) and keeping at least 1 (%d)",
                         c->checkpoint_every, c->keep_checkpoints);
    return CNN_OK;
}

/* Loss sum and correct predictions of the batch just computed; probs and losses read back to the host. */
static cnn_status batch_results(cnn_net *net, float *probs, float *losses, const int32_t *labels, double *loss_sum,
                                int64_t *correct, int64_t *confusion)
{
    int n = net->batch, k = cnn_net_num_outputs(net);
    cnn_status st = cnn_tensor_read(net->probs, probs, (size_t)n * k * sizeof(float));
    if (st == CNN_OK) st = cnn_tensor_read(net->losses, losses, (size_t)n * sizeof(float));
    if (st != CNN_OK) return st;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        int label = labels[i], best = cnn_argmax(p, k);
        *correct += best == label;
        *loss_sum += losses[i];
        if (confusion) confusion[(size_t)label * k + best]++;
    }
    if (!isfinite(*loss_sum))
        return cnn_error(CNN_ERR_NUMERIC, "the loss became %g: lower the learning rate", *loss_sum);
    return CNN_OK;
}

static cnn_status check_data(const cnn_net *net, const cnn_dataset *ds, const char *what)
{
    int h, w, c;
    cnn_net_input_shape(net, &h, &w, &c);
    if (!ds || ds->n < 1) return cnn_error(CNN_ERR_INVALID_ARG, "the %s set is empty", what);
    if (ds->h != h || ds->w != w || ds->c != c)
        return cnn_error(CNN_ERR_SHAPE, "the %s set has %dx%dx%d images but the model (%s) takes %dx%dx%d", what, ds->h,
                         ds->w, ds->c, net->source, h, w, c);
    int k = cnn_net_num_outputs(net);
    for (int64_t i = 0; i < ds->n; i++)
        if (ds->labels[i] < 0 || ds->labels[i] >= k)
            return cnn_error(CNN_ERR_SHAPE, "the %s set has label %d at sample %lld but the model has %d outputs", what,
                             ds->labels[i], (long long)i, k);
    return CNN_OK;
}

/* Loss, correct count and (optionally) the confusion matrix of net over ds, in batches. */
static cnn_status run_eval(cnn_net *net, const cnn_dataset *ds, int batch, double *loss, double *acc,
                           int64_t *confusion)
{
    int k = cnn_net_num_outputs(net);
    float *probs = malloc((size_t)batch * k * sizeof *probs);
    float *losses = malloc((size_t)batch * sizeof *losses);
    cnn_status st = CNN_OK;
    double loss_sum = 0.0;
    int64_t correct = 0;
    if (!probs || !losses) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    for (int64_t first = 0; first < ds->n; first += batch) {
        int n = (int)(ds->n - first < batch ? ds->n - first : batch);
        CNN_TRY(cnn_net_stage_batch(net, ds, NULL, first, n));
        CNN_TRY(cnn_net_forward(net, 0));
        CNN_TRY(cnn_net_loss(net, 0));
        CNN_TRY(batch_results(net, probs, losses, net->host_labels, &loss_sum, &correct, confusion));
    }
    *loss = loss_sum / (double)ds->n;
    *acc = (double)correct / (double)ds->n;
fail:
    free(probs);
    free(losses);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the data pipeline

/* Largest channel count whose normalization the loader applies (it takes 1 or 3). */
#define NORM_MAX_CHANNELS 16

/* The loader settings for `net` from the training config: the model's input shape and normalization, the
 * augmentation and sampler in training only. */
static void loader_config(const cnn_net *net, const cnn_train_config *cfg, int training, int batch,
                          cnn_loader_config *lc, float *mean, float *std)
{
    cnn_loader_config_for_net(lc, net, cfg, batch);
    if (cfg) {
        lc->seed = cfg->seed;
        if (!cfg->workers) lc->workers = cnn_dist_loader_workers(cfg->dist); /* ranks share the cores */
    }
    lc->sampler = training ? cfg->sampler : CNN_SAMPLER_SEQUENTIAL;
    lc->augment = training ? cfg->augment : NULL;
    lc->epochs = training ? cfg->epochs : 0;
    if (training && cnn_dist_size(cfg->dist) > 1) { /* this rank's part of each global batch */
        lc->shards = cnn_dist_size(cfg->dist);
        lc->shard = cnn_dist_rank(cfg->dist);
    }
    if (lc->c <= NORM_MAX_CHANNELS && cnn_net_normalization(net, mean, std)) {
        lc->mean = mean;
        lc->std = std;
    }
    /* page-locked batches where the backend has them, for the training loader's asynchronous uploads */
    lc->backend = training ? net->backend : NULL;
}

/* What the checkpoints and the class weights read of a training set: the dataset of an in-memory source, or for
 * files a stand-in with the count, the model's image shape and the labels (no images). */
static const cnn_dataset *dataset_of(const cnn_source *src, const cnn_net *net, cnn_dataset *shim)
{
    const cnn_dataset *ds = cnn_source_dataset(src);
    if (ds) return ds;
    memset(shim, 0, sizeof *shim);
    shim->n = cnn_source_count(src);
    cnn_net_input_shape(net, &shim->h, &shim->w, &shim->c);
    shim->labels = (int32_t *)cnn_source_labels(src);
    shim->num_classes = cnn_source_num_classes(src);
    return shim;
}

static cnn_status check_source(const cnn_net *net, const cnn_source *src, const char *what)
{
    if (!src || cnn_source_count(src) < 1) return cnn_error(CNN_ERR_INVALID_ARG, "the %s set is empty", what);
    const cnn_dataset *ds = cnn_source_dataset(src);
    if (ds) return check_data(net, ds, what);
    int k = cnn_net_num_outputs(net);
    if (cnn_source_num_classes(src) > k)
        return cnn_error(CNN_ERR_SHAPE, "the %s set has %d classes but the model (%s) has %d outputs", what,
                         cnn_source_num_classes(src), net->source, k);
    return CNN_OK;
}

/* Loss, accuracy and (optionally) the confusion matrix over one pass of an evaluation loader. */
static cnn_status run_eval_loader(cnn_net *net, cnn_loader *l, double *loss, double *acc, int64_t *confusion)
{
    int k = cnn_net_num_outputs(net);
    cnn_status st = CNN_OK;
    cnn_batch *b = NULL;
    int64_t batches = cnn_loader_batches_per_epoch(l), seen = 0, correct = 0;
    int most = 1;
    double loss_sum = 0.0;
    float *probs = NULL, *losses = NULL;
    /* each pass takes the next epoch: the sequential order is the same in every epoch, and the batches the workers
     * prepared after the last pass are the first ones of this one */
    int epoch;
    int64_t at;
    cnn_loader_tell(l, &epoch, &at);
    if (at != 0) CNN_TRY(cnn_loader_seek(l, epoch + 1, 0));
    for (int64_t i = 0; i < batches; i++) {
        CNN_TRY(cnn_loader_next(l, &b));
        if (b->n > most || !probs) {
            most = b->n > most ? b->n : most;
            free(probs);
            free(losses);
            probs = malloc((size_t)most * k * sizeof *probs);
            losses = malloc((size_t)most * sizeof *losses);
            if (!probs || !losses) {
                st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
                goto fail;
            }
        }
        if (b->n) {
            CNN_TRY(cnn_net_stage_host(net, b->images, b->labels, b->n));
            CNN_TRY(cnn_net_forward(net, 0));
            CNN_TRY(cnn_net_loss(net, 0));
            CNN_TRY(batch_results(net, probs, losses, b->labels, &loss_sum, &correct, confusion));
            seen += b->n;
        }
        cnn_loader_release(l, b);
        b = NULL;
    }
    if (!seen) {
        st = cnn_error(CNN_ERR_FORMAT, "no image of the evaluation set could be read");
        goto fail;
    }
    *loss = loss_sum / (double)seen;
    *acc = (double)correct / (double)seen;
fail:
    if (b) cnn_loader_release(l, b);
    free(probs);
    free(losses);
    return st;
}

/* Evaluation of a source: in memory, the batches are staged directly; files go through `l`. */
static cnn_status eval_source(cnn_net *net, const cnn_source *src, cnn_loader *l, int batch, double *loss, double *acc,
                              int64_t *confusion)
{
    const cnn_dataset *ds = cnn_source_dataset(src);
    if (ds) return run_eval(net, ds, batch, loss, acc, confusion);
    return run_eval_loader(net, l, loss, acc, confusion);
}

// ---------------------------------------------------------------------------------------------------------------
// callbacks and checkpoints around the loop

static int monitor_up(cnn_monitor m) { return m == CNN_MONITOR_VAL_ACCURACY || m == CNN_MONITOR_ACCURACY; }

/* The monitored value of an epoch; val_ metrics fall back to the training ones without a validation set. */
static double monitored(const cnn_epoch_stats *e, cnn_monitor m)
{
    switch (m) {
    case CNN_MONITOR_VAL_LOSS: return e->has_val ? e->val_loss : e->loss;
    case CNN_MONITOR_VAL_ACCURACY: return e->has_val ? e->val_accuracy : e->accuracy;
    case CNN_MONITOR_ACCURACY: return e->accuracy;
    default: return e->loss;
    }
}

/* Keras' rule: better than the best by more than min_delta. */
static int improves(double v, double best, const cnn_train_config *c)
{
    return monitor_up(c->monitor) ? v > best + c->min_delta : v < best - c->min_delta;
}

static cnn_status write_checkpoint(const cnn_train_config *cfg, const char *name, const cnn_net *net,
                                   const cnn_optimizer *opt, const cnn_train_state *s, const cnn_dataset *train)
{
    char file[64];
    if (name) snprintf(file, sizeof file, "%s", name);
    else snprintf(file, sizeof file, CNN_CHECKPOINT_NAME, (long long)net->step);
    size_t n = strlen(cfg->checkpoint_dir) + strlen(file) + 2;
    char *path = malloc(n);
    if (!path) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    snprintf(path, n, "%s/%s", cfg->checkpoint_dir, file);
    cnn_status st = cnn_checkpoint_write(path, net, opt, s, cfg, train);
    if (st == CNN_OK && !name) st = cnn_checkpoint_prune(cfg->checkpoint_dir, (int64_t)net->step, cfg->keep_checkpoints);
    if (st != CNN_OK) cnn_error_prefix(st, "checkpoint: ");
    free(path);
    return st;
}

/* Early stopping, save-best, reduce-on-plateau and the best weights, after epoch `e` (its stats in *es). Sets
 * *is_best when the epoch improved on the best. */
static cnn_status update_monitors(cnn_net *net, cnn_train_state *s, const cnn_train_config *cfg,
                                  const cnn_epoch_stats *es, int *is_best)
{
    cnn_status st = CNN_OK;
    double v = monitored(es, cfg->monitor);
    *is_best = improves(v, s->best, cfg);
    if (*is_best) {
        s->best = v;
        s->best_epoch = es->epoch;
        s->wait = 0;
        if (cfg->save_best && (st = cnn_net_save(net, cfg->save_best)) != CNN_OK)
            return cnn_error_prefix(st, "save-best: ");
        if (cfg->restore_best_weights) {
            if (!s->best_weights) {
                s->best_weights_len = cnn_net_saved_floats(net);
                s->best_weights = malloc((size_t)(s->best_weights_len ? s->best_weights_len : 1) * sizeof(float));
                if (!s->best_weights) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the best weights");
            }
            CNN_TRY(cnn_net_snapshot(net, s->best_weights));
        }
    } else if (cfg->early_stopping && ++s->wait >= cfg->early_stopping_patience) {
        s->finished = 1; /* Keras: stop once `patience` epochs in a row brought no improvement (0: the first) */
    }
    if (cfg->reduce_on_plateau) { /* Keras' ReduceLROnPlateau, without cooldown */
        if (improves(v, s->plateau_best, cfg)) {
            s->plateau_best = v;
            s->plateau_wait = 0;
        } else if (++s->plateau_wait >= cfg->plateau_patience) {
            s->plateau_scale *= cfg->plateau_factor;
            s->plateau_wait = 0;
        }
    }
fail:
    return st;
}

static cnn_status write_logs(const cnn_train_config *cfg, const cnn_train_state *s)
{
    cnn_status st = CNN_OK;
    if (cfg->csv_log && (st = cnn_csv_log_write(cfg->csv_log, s->history, s->epoch)) != CNN_OK)
        return cnn_error_prefix(st, "csv log: ");
    if (cfg->tensorboard_dir) st = cnn_tensorboard_write(cfg->tensorboard_dir, s->run_started, s->history, s->epoch);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// dynamic loss scaling (fp16)

/* Micikevicius et al. 2018, as PyTorch's GradScaler: the loss was multiplied by the scale, so the gradients are; a
 * step whose gradients overflowed is skipped and the scale halved; after CNN_LOSS_SCALE_WINDOW clean steps in a
 * row it doubles. The optimizer unscales (grad_scale = 1 / scale). */
#define CNN_LOSS_SCALE_WINDOW 2000
#define CNN_LOSS_SCALE_MAX 16777216.0f /* 2^24 */
#define CNN_LOSS_SCALE_MIN 1.0f

static cnn_status loss_scale_step(cnn_net *net, cnn_optimizer *opt, int *apply, int64_t *skipped)
{
    int finite = 1;
    cnn_status st = cnn_optimizer_grads_finite(opt, &finite);
    if (st != CNN_OK) return st;
    opt->grad_scale = 1.0f / net->loss_scale;
    *apply = finite;
    if (!finite) {
        (*skipped)++;
        net->scale_clean_steps = 0;
        if (net->loss_scale > CNN_LOSS_SCALE_MIN) net->loss_scale *= 0.5f;
        return CNN_OK;
    }
    if (++net->scale_clean_steps >= CNN_LOSS_SCALE_WINDOW) {
        net->scale_clean_steps = 0;
        if (net->loss_scale < CNN_LOSS_SCALE_MAX) net->loss_scale *= 2.0f; /* from the next step on */
    }
    return CNN_OK;
}

cnn_status cnn_train_update(cnn_net *net, cnn_optimizer *opt, float clip_norm, int64_t *skipped)
{
    cnn_status st = CNN_OK;
    int apply = 1;
    int64_t unused = 0;
    if (net->precision == CNN_PRECISION_FP16) CNN_TRY(loss_scale_step(net, opt, &apply, skipped ? skipped : &unused));
    CNN_TRY(cnn_qat_restore(net)); /* the optimizer updates the float weights, not their fake-quantized copies */
    if (apply) {
        if (clip_norm > 0.0f) CNN_TRY(cnn_optimizer_clip(opt, clip_norm, NULL));
        CNN_TRY(cnn_optimizer_step(opt));
    }
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the loop

cnn_status cnn_train(cnn_net *net, const cnn_dataset *train, const cnn_dataset *val, const cnn_train_config *cfg,
                     cnn_epoch_stats *history)
{
    cnn_source *t = NULL, *v = NULL;
    cnn_status st = CNN_OK;
    if (!train) return cnn_error(CNN_ERR_INVALID_ARG, "the training set is empty");
    CNN_TRY(cnn_source_from_dataset((cnn_dataset *)train, 0, &t)); /* borrowed: the source does not change it */
    if (val) CNN_TRY(cnn_source_from_dataset((cnn_dataset *)val, 0, &v));
    st = cnn_train_source(net, t, v, cfg, history);
fail:
    cnn_source_destroy(t);
    cnn_source_destroy(v);
    return st;
}

/* the batch size of validation (when the training batch is smaller) */
#define VAL_BATCH 256

/* Images whose pixels the data profile averages: all of an in-memory set, a stratified sample of this many files */
#define PROFILE_SAMPLES 4096

/* The training set's data profile (cnn_net_set_data_profile), stored with the model for the server's drift
 * monitoring: each class's share of the samples, and each channel's pixel mean and std as the model sees images
 * before normalization (in-memory sets exactly; file sets over a stratified sample of PROFILE_SAMPLES files, drawn
 * by its own seed: training's random streams are not touched). */
static cnn_status set_data_profile(cnn_net *net, const cnn_source *src, const cnn_train_config *cfg)
{
    int h, w, c, k = cnn_net_num_outputs(net), ks = cnn_source_num_classes(src);
    cnn_net_input_shape(net, &h, &w, &c);
    int64_t n = cnn_source_count(src);
    /* cnn_source_class_counts writes the source's classes, which may be more than the model's outputs */
    int64_t *counts = calloc((size_t)(ks > k ? ks : k), sizeof *counts);
    float *v = malloc((size_t)(2 * c + k) * sizeof *v);
    cnn_source *rest = NULL, *sample = NULL;
    cnn_status st = CNN_OK;
    if (!counts || !v) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    cnn_source_class_counts(src, counts);
    for (int j = 0; j < k; j++) v[2 * c + j] = (float)((double)counts[j] / (double)n);
    float norm_mean[NORM_MAX_CHANNELS], norm_std[NORM_MAX_CHANNELS];
    cnn_loader_config lc;
    loader_config(net, cfg, 0, 64, &lc, norm_mean, norm_std);
    lc.warnings = NULL; /* training reports each bad file once; this pass would report it again */
    const cnn_source *from = src;
    if (!cnn_source_dataset(src) && n > PROFILE_SAMPLES) {
        CNN_TRY(cnn_source_split(src, (double)PROFILE_SAMPLES / (double)n, cfg->seed ^ 0x70726f66696c65ULL, &rest,
                                 &sample));
        from = sample;
    }
    CNN_TRY(cnn_source_stats(from, &lc, v, v + c));
    st = cnn_net_set_data_profile(net, c, v, v + c, k, v + 2 * c);
fail:
    if (st != CNN_OK) st = cnn_error_prefix(st, "the training set's data profile: ");
    cnn_source_destroy(rest);
    cnn_source_destroy(sample);
    free(counts);
    free(v);
    return st;
}

/* Adversarial training: the first round(ratio x n) images of a loader batch (normalized as the model says) become
 * adversarial versions made on their [0, 1] pixels against the current weights; then the batch is staged again
 * (the attack's passes went through the network's buffers). `first`: the draw of the batch's first image in the
 * run, which seeds the random starts. */
static cnn_status adversarial_batch(cnn_net *net, cnn_grad *g, const cnn_train_config *cfg, cnn_batch *b,
                                    int64_t first, float *pix, float *adv)
{
    const float ratio = cfg->adv_ratio > 0.0f ? cfg->adv_ratio : cfg->attack.method == CNN_ATTACK_PGD ? 1.0f : 0.5f;
    int m = (int)lround((double)ratio * b->n);
    if (m < 1) m = 1;
    int h, w, c;
    cnn_net_input_shape(net, &h, &w, &c);
    const size_t per = (size_t)h * w * c, total = (size_t)m * per;
    float mean[NORM_MAX_CHANNELS] = {0}, std[NORM_MAX_CHANNELS];
    for (int j = 0; j < NORM_MAX_CHANNELS; j++) std[j] = 1.0f;
    if (c <= NORM_MAX_CHANNELS) cnn_net_normalization(net, mean, std);
    for (size_t i = 0; i < total; i++) pix[i] = b->images[i] * std[i % (size_t)c] + mean[i % (size_t)c];
    cnn_status st = cnn_attack_images(g, &cfg->attack, pix, b->labels, m, first, adv);
    if (st != CNN_OK) return cnn_error_prefix(st, "adversarial training: ");
    for (size_t i = 0; i < total; i++) b->images[i] = (adv[i] - mean[i % (size_t)c]) / std[i % (size_t)c];
    return cnn_net_stage_host(net, b->images, b->labels, b->n);
}

/* One run of cnn_train_source: what it sets up once and frees at the end. */
typedef struct train_loop {
    cnn_net *net;
    const cnn_train_config *cfg; /* the caller's, or rank_cfg (cnn_dist_train_config: rank 0 alone writes) */
    cnn_train_config rank_cfg;
    const cnn_source *train_src, *val_src;
    const cnn_source *val_part;  /* this rank's part of val_src: val_shard, or val_src itself */
    const cnn_dataset *train;    /* the training set, or shim for a set of files */
    cnn_dataset shim;
    cnn_train_state s;
    cnn_st_file *resume;
    cnn_optimizer *opt;
    float *weights;              /* balanced class weights, or NULL */
    float *probs, *losses;       /* a batch's results on the host */
    cnn_source *val_shard;
    cnn_loader *loader, *val_loader;
    cnn_batch *cur, *next;       /* the batch of the step, and the one uploaded ahead of it */
    cnn_grad *adv_grad;          /* adversarial training: the attack's buffers and its [0, 1] images */
    float *adv_pix, *adv_out;
    cnn_distill *distill;
    int ranks, bs, steps, every, eval_batch, async;
    int64_t epoch_len;           /* draws per epoch */
    int64_t gbs;                 /* draws per step, all ranks together */
    int64_t val_count;           /* this rank's validation samples */
} train_loop;

/* One epoch in progress: its clock, bar and running figures. */
typedef struct train_epoch {
    int epoch; /* 1-based */
    cnn_progress bar;
    double t0;
    int64_t here;    /* samples this process trained on in this epoch (a resumed epoch started earlier) */
    int64_t skipped; /* fp16 steps skipped for an overflow in this epoch */
    cnn_loader_stats ls0;
    double teacher0;
    char metrics[192];
} train_epoch;

/* The arguments checked, the training state made (or reopened from the checkpoint to resume), and the memory a
 * step needs checked before any of it is allocated. */
static cnn_status loop_check(train_loop *L)
{
    const cnn_train_config *cfg = L->cfg;
    cnn_net *net = L->net;
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_train_check_config(cfg));
    CNN_TRY(check_source(net, L->train_src, "training"));
    if (L->val_src) CNN_TRY(check_source(net, L->val_src, "validation"));
    L->train = dataset_of(L->train_src, net, &L->shim);
    CNN_TRY(cnn_train_state_init(&L->s, cfg, L->train->n));
    CNN_TRY(set_data_profile(net, L->train_src, cfg));
    /* resuming: weights and frozen layers first, for the optimizer's state follows the trainable set */
    if (cfg->resume_from) CNN_TRY(cnn_checkpoint_open(cfg->resume_from, net, cfg, L->train, &L->resume));
    if (cnn_net_param_count(net) == 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: no trainable weights (every layer with weights is frozen)",
                         net->source);
    /* a training step at the batch size, with the optimizer's state, must fit before any of it is allocated; the
     * buffers made from here on are checked as training's. Validation runs in batches of up to VAL_BATCH (or the
     * training batch): the buffers grow to that, so it must fit too. */
    const int slots = cnn_optimizer_slots(cfg->optimizer, cfg->momentum);
    const int64_t val_n = L->val_src ? cnn_source_count(L->val_src) : 0;
    const int64_t val_batch = cfg->batch_size > VAL_BATCH ? cfg->batch_size : VAL_BATCH;
    int64_t most = val_n < val_batch ? val_n : val_batch;
    if (most < cfg->batch_size) most = cfg->batch_size;
    if ((st = cnn_net_check_memory(net, (int)most, 1, slots)) != CNN_OK) {
        if (most > cfg->batch_size)
            st = cnn_error_prefix(st, "validation runs in batches of %lld, and the buffers grow to them: ",
                                  (long long)most);
        return st;
    }
    cnn_net_set_memory_use(net, 1, slots);
fail:
    return st;
}

/* The optimizer (with the resumed state), the network as every rank starts it, the loss options and the host
 * buffers of a batch's results. */
static cnn_status loop_setup(train_loop *L)
{
    const cnn_train_config *cfg = L->cfg;
    cnn_net *net = L->net;
    cnn_status st = CNN_OK;
    CNN_TRY(cnn_optimizer_create(net, cfg, &L->opt));
    /* before a restore: its masks */
    if (cfg->prune.enabled) CNN_TRY(cnn_pruner_create(net, &cfg->prune, &L->s.pruner));
    if (L->resume) {
        CNN_TRY(cnn_checkpoint_restore(L->resume, cfg->resume_from, net, L->opt, &L->s, cfg));
        cnn_st_free(L->resume);
        L->resume = NULL;
    }
    if (cfg->checkpoint_dir) CNN_TRY(cnn_make_dirs(cfg->checkpoint_dir));
    /* every rank starts from rank 0's weights and statistics */
    CNN_TRY(cnn_dist_broadcast_net(cfg->dist, net, 0));
    CNN_TRY(cnn_dist_attach_net(cfg->dist, net)); /* --sync-batchnorm: statistics over all ranks */
    /* mixed precision: the 16-bit weight copies follow whatever was loaded into the master weights */
    CNN_TRY(cnn_net_sync_compute_weights(net));
    /* a backend that can choose between faster and reproducible algorithms (CUDA) is told which */
    CNN_TRY(cnn_op_set_deterministic(net->backend, cfg->deterministic));
    int k = cnn_net_num_outputs(net), bs = L->bs;
    if (cfg->balanced_class_weights) {
        L->weights = malloc((size_t)k * sizeof *L->weights);
        if (!L->weights) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        balanced_weights(L->train, k, L->weights);
    }
    CNN_TRY(cnn_net_set_loss_options(net, cfg->label_smoothing, L->weights ? L->weights : cfg->class_weights, k));
    L->probs = malloc((size_t)bs * k * sizeof *L->probs);
    L->losses = malloc((size_t)bs * sizeof *L->losses);
    if (!L->probs || !L->losses) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a batch of %d", bs);
fail:
    return st;
}

/* The loaders (page-locked batches on backends that have them, normalized as the model says), the buffers of a
 * full batch, the adversarial and distillation helpers, and the epoch's size in steps. */
static cnn_status loop_data(train_loop *L)
{
    const cnn_train_config *cfg = L->cfg;
    cnn_net *net = L->net;
    cnn_status st = CNN_OK;
    const int bs = L->bs;
    float mean[NORM_MAX_CHANNELS], std[NORM_MAX_CHANNELS];
    cnn_loader_config lc;
    L->eval_batch = bs > VAL_BATCH ? bs : VAL_BATCH;
    L->val_count = L->val_src ? cnn_source_count(L->val_src) : 0;
    if (L->val_src && L->ranks > 1) { /* each rank evaluates its contiguous part; the sums are added across ranks */
        int64_t first;
        cnn_dist_shard_range(cfg->dist, L->val_count, &first, &L->val_count);
        CNN_TRY(cnn_source_range(L->val_src, first, L->val_count, &L->val_shard));
    }
    L->val_part = L->val_shard ? L->val_shard : L->val_src;
    if (L->val_count && (!L->val_src || !cnn_source_dataset(L->val_src))) {
        loader_config(net, cfg, 0, L->eval_batch, &lc, mean, std);
        if (L->val_part) CNN_TRY(cnn_loader_create(L->val_part, &lc, &L->val_loader));
    }
    loader_config(net, cfg, 1, bs, &lc, mean, std);
    CNN_TRY(cnn_loader_create(L->train_src, &lc, &L->loader));
    /* buffers for a full batch now: an upload ahead of its step must not find them rebuilt */
    CNN_TRY(cnn_net_set_batch(net, bs));
    L->async = cnn_net_can_upload_async(net);
    if (cfg->adversarial) { /* the attack's gradient buffers and its [0, 1] images, for a full batch */
        CNN_TRY(cnn_grad_create(net, bs, &L->adv_grad));
        size_t per = (size_t)(net->input.d[0] * net->input.d[1] * net->input.d[2]);
        L->adv_pix = malloc((size_t)bs * per * sizeof *L->adv_pix);
        L->adv_out = malloc((size_t)bs * per * sizeof *L->adv_out);
        if (!L->adv_pix || !L->adv_out)
            return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for adversarial batches of %d", bs);
    }
    if (cfg->teacher) CNN_TRY(cnn_distill_create(net, cfg, bs, &L->distill));
    L->epoch_len = cnn_loader_epoch_size(L->loader);
    L->steps = (int)cnn_loader_batches_per_epoch(L->loader);
    L->gbs = (int64_t)bs * L->ranks;
    L->s.n = L->epoch_len; /* draws per epoch: the unit of samples_done (a balancing sampler draws more or fewer) */
    if (L->s.samples_done > L->epoch_len)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: %lld draws of the epoch are done, but an epoch has %lld",
                         cfg->resume_from, (long long)L->s.samples_done, (long long)L->epoch_len);
    if (L->s.pruner)
        CNN_TRY(cnn_pruner_start(L->s.pruner, net, (int64_t)cfg->epochs * L->steps, cfg->resume_from != NULL));
    L->every = cfg->checkpoint_every > 0 ? cfg->checkpoint_every : 1;
fail:
    return st;
}

/* The progress bar's figures after a step: " - loss: ... - accuracy: ... - data wait: ..." and those of fp16,
 * distillation and pruning. */
static void step_metrics(const train_loop *L, train_epoch *E)
{
    const cnn_train_state *s = &L->s;
    char *m = E->metrics;
    const size_t size = sizeof E->metrics;
    cnn_loader_stats ls;
    cnn_loader_get_stats(L->loader, &ls);
    int len = snprintf(m, size, " - loss: %.4f - accuracy: %.4f - data wait: %.1fs",
                       s->seen ? s->loss_sum / (double)s->seen : 0.0,
                       s->seen ? (double)s->correct / (double)s->seen : 0.0, ls.wait_seconds - E->ls0.wait_seconds);
    if (L->net->precision == CNN_PRECISION_FP16 && len > 0 && (size_t)len < size)
        len += snprintf(m + len, size - (size_t)len, " - skipped: %lld - loss scale: %g", (long long)E->skipped,
                        (double)L->net->loss_scale);
    if (L->distill && len > 0 && (size_t)len < size) /* the teacher's share of the step times */
        len += snprintf(m + len, size - (size_t)len, " - teacher: %.1fs",
                        cnn_distill_teacher_seconds(L->distill) - E->teacher0);
    if (s->pruner && len > 0 && (size_t)len < size)
        snprintf(m + len, size - (size_t)len, " - sparsity: %.3f", cnn_pruner_sparsity(s->pruner));
}

/* Step `step` of the epoch: the batch staged (unless uploaded ahead), made adversarial, trained on, the next one
 * uploaded while the device computes, the running figures and the bar updated, a checkpoint every N steps. */
static cnn_status train_step(train_loop *L, train_epoch *E, int step)
{
    const cnn_train_config *cfg = L->cfg;
    cnn_net *net = L->net;
    cnn_train_state *s = &L->s;
    cnn_status st = CNN_OK;
    const int64_t left = L->epoch_len - (int64_t)step * L->gbs;
    const int64_t drawn = left < L->gbs ? left : L->gbs;
    if (!L->cur) { /* else the previous step uploaded it already */
        CNN_TRY(cnn_loader_next(L->loader, &L->cur));
        if (L->cur->n) CNN_TRY(cnn_net_stage_host(net, L->cur->images, L->cur->labels, L->cur->n));
    }
    int n = L->cur->n; /* 0 when every file of the batch was bad */
    if (n && L->adv_grad)
        CNN_TRY(adversarial_batch(net, L->adv_grad, cfg, L->cur,
                                  (int64_t)(E->epoch - 1) * L->epoch_len + (int64_t)step * L->gbs +
                                      (int64_t)cnn_dist_rank(cfg->dist) * L->bs,
                                  L->adv_pix, L->adv_out));
    const cnn_step_extras extras = {L->distill, L->cur->images, cfg->dist, s->pruner};
    int update;
    CNN_TRY(cnn_train_batch(net, L->opt, cfg, &extras, n, &E->skipped, &update));
    /* while the device computes: the next batch is uploaded on the copy stream */
    if (update && L->async && step + 1 < L->steps) {
        CNN_TRY(cnn_loader_next(L->loader, &L->next));
        if (L->next->n) CNN_TRY(cnn_net_upload_async(net, L->next->images, L->next->labels, L->next->n));
    }
    if (n) CNN_TRY(batch_results(net, L->probs, L->losses, L->cur->labels, &s->loss_sum, &s->correct, NULL));
    cnn_loader_release(L->loader, L->cur);
    L->cur = NULL;
    if (L->next) {
        if (L->next->n) CNN_TRY(cnn_net_stage_uploaded(net));
        L->cur = L->next;
        L->next = NULL;
    }
    s->seen += n;
    s->samples_done += drawn;
    E->here += n;
    step_metrics(L, E);
    cnn_progress_update(&E->bar, step + 1, E->metrics, (double)E->here / (cnn_now_seconds() - E->t0));
    if (cfg->checkpoint_dir && cfg->checkpoint_in_steps && net->step % (uint64_t)L->every == 0)
        CNN_TRY(write_checkpoint(cfg, NULL, net, L->opt, s, L->train));
fail:
    return st;
}

/* The steps of the next epoch, from the data position of a resumed run. */
static cnn_status run_epoch(train_loop *L, train_epoch *E)
{
    const cnn_train_config *cfg = L->cfg;
    cnn_train_state *s = &L->s;
    cnn_status st = CNN_OK;
    memset(E, 0, sizeof *E);
    E->epoch = s->epoch + 1;
    if (cfg->progress) fprintf(cfg->progress, "Epoch %d/%d\n", E->epoch, cfg->epochs);
    if (!s->epoch_started) { /* the loader's order of epoch e is a function of (seed, e): nothing to draw here */
        s->epoch_started = 1;
        s->samples_done = 0;
        s->loss_sum = 0.0;
        s->correct = s->seen = 0;
    }
    L->opt->lr = cnn_lr_at(cfg, E->epoch - 1) * s->plateau_scale;
    cnn_progress_start(&E->bar, cfg->progress, L->steps);
    E->t0 = cnn_now_seconds();
    /* the data position: batch samples_done / bs of this epoch (samples_done counts draws, skipped bad files
     * included); the loader is moved only when it is not there already (a seek drops prepared batches) */
    int first_step = (int)(s->samples_done / L->gbs), at_epoch;
    int64_t at_batch;
    cnn_loader_tell(L->loader, &at_epoch, &at_batch);
    /* (a checkpoint of an epoch's last step resumes with no step left: straight to the epoch's end) */
    if (first_step < L->steps && (at_epoch != E->epoch - 1 || at_batch != first_step))
        CNN_TRY(cnn_loader_seek(L->loader, E->epoch - 1, first_step));
    cnn_loader_get_stats(L->loader, &E->ls0);
    E->teacher0 = cnn_distill_teacher_seconds(L->distill);
    for (int step = first_step; step < L->steps; step++) CNN_TRY(train_step(L, E, step));
    CNN_TRY(cnn_backend_sync(L->net->backend));
fail:
    return st;
}

/* The validation loss and accuracy of the epoch over all ranks, into es; its text for the progress line in extra. */
static cnn_status validate(train_loop *L, cnn_epoch_stats *es, char *extra, size_t size)
{
    const cnn_train_config *cfg = L->cfg;
    cnn_status st = CNN_OK;
    /* several ranks: rank 0's batchnorm statistics everywhere (as DDP's broadcast_buffers), then each rank
     * evaluates its part and the sums are added */
    CNN_TRY(cnn_dist_broadcast_net(cfg->dist, L->net, 1));
    if (L->val_count)
        CNN_TRY(eval_source(L->net, L->val_part, L->val_loader, L->eval_batch, &es->val_loss, &es->val_accuracy, NULL));
    if (L->ranks > 1) {
        double v[3] = {0.0, 0.0, (double)L->val_count};
        if (L->val_count) {
            v[0] = es->val_loss * (double)L->val_count;
            v[1] = es->val_accuracy * (double)L->val_count;
        }
        CNN_TRY(cnn_dist_sum(cfg->dist, v, 3, "the sum of the validation metrics"));
        es->val_loss = v[0] / v[2];
        es->val_accuracy = v[1] / v[2];
    }
    es->has_val = 1;
    snprintf(extra, size, " - val_loss: %.4f - val_accuracy: %.4f", es->val_loss, es->val_accuracy);
fail:
    return st;
}

/* The epoch's end: its figures over all ranks, validation, the progress line, the callbacks (early stopping,
 * save-best, reduce-on-plateau, logs, checkpoints) and the caller's on_epoch_end. */
static cnn_status end_epoch(train_loop *L, train_epoch *E)
{
    const cnn_train_config *cfg = L->cfg;
    cnn_net *net = L->net;
    cnn_train_state *s = &L->s;
    cnn_status st = CNN_OK;
    const int epoch = E->epoch;
    /* the epoch's figures over all ranks (one process: its own) */
    double sums[4] = {s->loss_sum, (double)s->correct, (double)s->seen, (double)E->here};
    CNN_TRY(cnn_dist_sum(cfg->dist, sums, 4, "the sum of the epoch's training metrics"));
    if (!sums[2]) return cnn_error(CNN_ERR_FORMAT, "no image of the training set could be read in epoch %d", epoch);
    cnn_epoch_stats es = {.epoch = epoch};
    es.seconds = cnn_now_seconds() - E->t0;
    es.loss = sums[0] / sums[2];
    es.accuracy = sums[1] / sums[2];
    es.images_per_sec = es.seconds > 0.0 ? sums[3] / es.seconds : 0.0;
    cnn_loader_stats ls1;
    cnn_loader_get_stats(L->loader, &ls1);
    es.data_wait = ls1.wait_seconds - E->ls0.wait_seconds;
    es.bad_files = ls1.bad_files;
    es.skipped_steps = E->skipped;
    es.loss_scale = net->loss_scale;
    es.sparsity = s->pruner ? cnn_pruner_sparsity(s->pruner) : -1.0;
    char extra[96] = "";
    if (L->val_src) CNN_TRY(validate(L, &es, extra, sizeof extra));
    if (!E->metrics[0] || L->ranks > 1) /* several ranks: the bar showed rank 0's part; the line ends with all's */
        snprintf(E->metrics, sizeof E->metrics, " - loss: %.4f - accuracy: %.4f", es.loss, es.accuracy);
    cnn_progress_finish(&E->bar, E->metrics, es.images_per_sec, extra);
    es.lr = L->opt->lr;
    es.wall_time = cnn_wall_seconds();
    int is_best;
    CNN_TRY(update_monitors(net, s, cfg, &es, &is_best));
    s->history[epoch - 1] = es;
    s->epoch = epoch;
    s->epoch_started = 0;
    s->samples_done = 0;
    CNN_TRY(write_logs(cfg, s));
    if (cfg->checkpoint_dir) {
        if (is_best) CNN_TRY(write_checkpoint(cfg, CNN_CHECKPOINT_BEST, net, L->opt, s, L->train));
        if (!cfg->checkpoint_in_steps && (epoch % L->every == 0 || epoch == cfg->epochs || s->finished))
            CNN_TRY(write_checkpoint(cfg, NULL, net, L->opt, s, L->train));
    }
    if (s->finished && cfg->progress)
        fprintf(cfg->progress, "Early stopping: %s has not improved for %d epoch%s (best %.4f at epoch %d)\n",
                cnn_monitor_name(cfg->monitor), s->wait, s->wait == 1 ? "" : "s", s->best, s->best_epoch);
    if (cfg->on_epoch_end) cfg->on_epoch_end(&es, cfg->user);
fail:
    return st;
}

/* After the last epoch: the best weights restored, the plot, the history for the caller. */
static cnn_status loop_finish(train_loop *L, cnn_epoch_stats *history)
{
    const cnn_train_config *cfg = L->cfg;
    cnn_train_state *s = &L->s;
    cnn_status st = CNN_OK;
    if (cfg->restore_best_weights && s->best_weights && s->best_epoch != s->epoch) {
        CNN_TRY(cnn_net_restore_snapshot(L->net, s->best_weights));
        if (s->pruner) CNN_TRY(cnn_pruner_apply(s->pruner, L->net)); /* the model ends with the run's last masks */
        if (cfg->progress)
            fprintf(cfg->progress, "Restoring the weights of epoch %d, the best (%s %.4f)\n", s->best_epoch,
                    cnn_monitor_name(cfg->monitor), s->best);
    }
    if (cfg->plot && s->epoch > 0) CNN_TRY(cnn_plot_write(cfg->plot, s->history, s->epoch));
    if (history) memcpy(history, s->history, (size_t)cfg->epochs * sizeof *history);
fail:
    return st;
}

static void loop_free(train_loop *L)
{
    cnn_net *net = L->net;
    cnn_dist_detach_net(net);
    cnn_qat_restore(net); /* a step that failed between forward and update leaves the float weights too */
    cnn_distill_destroy(L->distill);
    cnn_grad_destroy(L->adv_grad);
    free(L->adv_pix);
    free(L->adv_out);
    cnn_net_set_memory_use(net, 0, 0); /* the optimizer's state goes now */
    cnn_loader_destroy(L->loader);     /* held batches go with it */
    cnn_loader_destroy(L->val_loader);
    cnn_source_destroy(L->val_shard);
    cnn_net_set_loss_options(net, 0.0f, NULL, 0);
    cnn_st_free(L->resume);
    cnn_train_state_free(&L->s);
    free(L->weights);
    free(L->probs);
    free(L->losses);
    cnn_optimizer_destroy(L->opt);
}

cnn_status cnn_train_source(cnn_net *net, const cnn_source *train_src, const cnn_source *val_src,
                            const cnn_train_config *cfg, cnn_epoch_stats *history)
{
    cnn_status st = CNN_OK;
    train_loop L = {.net = net, .train_src = train_src, .val_src = val_src};
    L.cfg = cnn_dist_train_config(cfg, &L.rank_cfg); /* rank 0 alone writes the outputs */
    L.ranks = cnn_dist_size(L.cfg->dist);
    L.bs = L.cfg->batch_size;
    CNN_TRY(loop_check(&L));
    CNN_TRY(loop_setup(&L));
    CNN_TRY(loop_data(&L));
    while (L.s.epoch < L.cfg->epochs && !L.s.finished) {
        train_epoch E;
        CNN_TRY(run_epoch(&L, &E));
        CNN_TRY(end_epoch(&L, &E));
    }
    CNN_TRY(loop_finish(&L, history));
fail:
    loop_free(&L);
    return st;
}

/* ---- evaluation ------------------------------------------------------------------------------------------- */

static cnn_status evaluate_with(cnn_net *net, const cnn_dataset *ds, cnn_loader *l, int batch_size, cnn_metrics **out);

cnn_status cnn_evaluate_source(cnn_net *net, const cnn_source *src, const cnn_train_config *data, int batch_size,
                               cnn_metrics **out)
{
    *out = NULL;
    if (batch_size < 1) return cnn_error(CNN_ERR_INVALID_ARG, "batch size must be at least 1, got %d", batch_size);
    const cnn_dataset *ds = cnn_source_dataset(src);
    if (ds) return cnn_evaluate(net, ds, batch_size, out);
    cnn_status st = check_source(net, src, "evaluation");
    if (st != CNN_OK) return st;
    cnn_train_config defaults;
    if (!data) {
        cnn_train_config_defaults(&defaults);
        data = &defaults;
    }
    float mean[NORM_MAX_CHANNELS], std[NORM_MAX_CHANNELS];
    cnn_loader_config lc;
    loader_config(net, data, 0, batch_size, &lc, mean, std);
    cnn_loader *l = NULL;
    if ((st = cnn_loader_create(src, &lc, &l)) != CNN_OK) return st;
    st = evaluate_with(net, NULL, l, batch_size, out);
    cnn_loader_destroy(l);
    return st;
}

void cnn_metrics_destroy(cnn_metrics *m)
{
    if (!m) return;
    CNN_FREE_ALL(m->confusion, m->precision, m->recall, m->f1, m->support, m->auc, m->bin_count, m->bin_accuracy,
                 m->bin_confidence, m);
}

cnn_status cnn_metrics_alloc(int k, cnn_metrics **out)
{
    cnn_metrics *m = calloc(1, sizeof *m);
    if (m) {
        m->num_classes = k;
        m->confusion = calloc((size_t)k * k, sizeof *m->confusion);
        m->precision = calloc((size_t)k, sizeof *m->precision);
        m->recall = calloc((size_t)k, sizeof *m->recall);
        m->f1 = calloc((size_t)k, sizeof *m->f1);
        m->support = calloc((size_t)k, sizeof *m->support);
    }
    if (!m || !m->confusion || !m->precision || !m->recall || !m->f1 || !m->support) {
        cnn_metrics_destroy(m);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the metrics of %d classes", k);
    }
    *out = m;
    return CNN_OK;
}

void cnn_metrics_from_confusion(cnn_metrics *m)
{
    const int k = m->num_classes;
    m->n = 0;
    for (int i = 0; i < k * k; i++) m->n += m->confusion[i]; /* the images read (bad files are skipped) */
    m->macro_precision = m->macro_recall = m->macro_f1 = 0.0;
    /* Per class: precision = TP / predicted, recall = TP / true; 0 where the denominator is 0 (sklearn's
     * zero_division=0). Macro averages are unweighted means over classes. */
    for (int c = 0; c < k; c++) {
        int64_t tp = m->confusion[(size_t)c * k + c], predicted = 0, actual = 0;
        for (int j = 0; j < k; j++) {
            predicted += m->confusion[(size_t)j * k + c];
            actual += m->confusion[(size_t)c * k + j];
        }
        m->support[c] = actual;
        m->precision[c] = predicted ? (double)tp / (double)predicted : 0.0;
        m->recall[c] = actual ? (double)tp / (double)actual : 0.0;
        double pr = m->precision[c] + m->recall[c];
        m->f1[c] = pr > 0 ? 2.0 * m->precision[c] * m->recall[c] / pr : 0.0;
        m->macro_precision += m->precision[c] / k;
        m->macro_recall += m->recall[c] / k;
        m->macro_f1 += m->f1[c] / k;
    }
}

/* The metrics of `net` on `ds` (in memory) or, when ds is NULL, on one pass of the loader `l`. */
static cnn_status evaluate_with(cnn_net *net, const cnn_dataset *ds, cnn_loader *l, int batch_size, cnn_metrics **out)
{
    cnn_metrics *m;
    cnn_status st = cnn_metrics_alloc(cnn_net_num_outputs(net), &m);
    if (st != CNN_OK) return st;
    st = ds ? run_eval(net, ds, batch_size, &m->loss, &m->accuracy, m->confusion)
            : run_eval_loader(net, l, &m->loss, &m->accuracy, m->confusion);
    if (st != CNN_OK) {
        cnn_metrics_destroy(m);
        return st;
    }
    cnn_metrics_from_confusion(m);
    *out = m;
    return CNN_OK;
}

cnn_status cnn_evaluate(cnn_net *net, const cnn_dataset *ds, int batch_size, cnn_metrics **out)
{
    *out = NULL;
    if (batch_size < 1) return cnn_error(CNN_ERR_INVALID_ARG, "batch size must be at least 1, got %d", batch_size);
    cnn_status st = check_data(net, ds, "evaluation");
    if (st != CNN_OK) return st;
    return evaluate_with(net, ds, NULL, batch_size, out);
}

void cnn_metrics_print(const cnn_metrics *m, const cnn_net *net, FILE *out)
{
    int k = m->num_classes;
    fprintf(out, "samples: %lld  loss: %.4f  accuracy: %.4f\n\n", (long long)m->n, m->loss, m->accuracy);
    fprintf(out, "%-4s %-14s %9s %9s %9s %8s%s\n", "id", "class", "precision", "recall", "f1", "support",
            m->auc ? "   roc auc" : "");
    for (int c = 0; c < k; c++) {
        const char *name = cnn_net_class_name(net, c);
        fprintf(out, "%-4d %-14.14s %9.4f %9.4f %9.4f %8lld", c, name ? name : "-", m->precision[c], m->recall[c],
                m->f1[c], (long long)m->support[c]);
        if (m->auc) fprintf(out, " %9.4f", m->auc[c]);
        fputc('\n', out);
    }
    fprintf(out, "%-19s %9.4f %9.4f %9.4f %8lld", "macro avg", m->macro_precision, m->macro_recall, m->macro_f1,
            (long long)m->n);
    if (m->auc) {
        fprintf(out, " %9.4f\n%-19s %9.4f %9.4f %9.4f %8lld\n\n", m->macro_auc, "weighted avg", m->weighted_precision,
                m->weighted_recall, m->weighted_f1, (long long)m->n);
        fprintf(out, "top-%d accuracy: %.4f  expected calibration error (%d bins): %.4f\n\n", m->top_k,
                m->top_k_accuracy, m->ece_bins, m->ece);
    } else {
        fprintf(out, "\n\n");
    }
    fprintf(out, "confusion matrix (rows: true class, columns: predicted class)\n      ");
    for (int c = 0; c < k; c++) fprintf(out, "%6d", c);
    fputc('\n', out);
    for (int r = 0; r < k; r++) {
        fprintf(out, "%6d", r);
        for (int c = 0; c < k; c++) fprintf(out, "%6lld", (long long)m->confusion[(size_t)r * k + c]);
        fputc('\n', out);
    }
}
