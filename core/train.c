/* The training loop and evaluation: batches, forward, loss, backward, optimizer, metrics, progress. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/optim.h"
#include "core/progress.h"

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

static cnn_status check_config(const cnn_train_config *c)
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
    if (!(c->label_smoothing >= 0.0f && c->label_smoothing < 1.0f))
        return cnn_error(CNN_ERR_INVALID_ARG, "label smoothing must be in [0, 1), got %g", (double)c->label_smoothing);
    return CNN_OK;
}

/* Loss sum and correct predictions of the batch just computed; probs and losses read back to the host. */
static cnn_status batch_results(cnn_net *net, float *probs, float *losses, double *loss_sum, int64_t *correct,
                                int64_t *confusion)
{
    int n = net->batch, k = cnn_net_num_outputs(net);
    cnn_status st = cnn_tensor_read(net->probs, probs, (size_t)n * k * sizeof(float));
    if (st == CNN_OK) st = cnn_tensor_read(net->losses, losses, (size_t)n * sizeof(float));
    if (st != CNN_OK) return st;
    for (int i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        int best = 0;
        for (int j = 1; j < k; j++)
            if (p[j] > p[best]) best = j;
        int label = net->host_labels[i];
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
        CNN_TRY(batch_results(net, probs, losses, &loss_sum, &correct, confusion));
    }
    *loss = loss_sum / (double)ds->n;
    *acc = (double)correct / (double)ds->n;
fail:
    free(probs);
    free(losses);
    return st;
}

cnn_status cnn_train(cnn_net *net, const cnn_dataset *train, const cnn_dataset *val, const cnn_train_config *cfg,
                     cnn_epoch_stats *history)
{
    cnn_status st = CNN_OK;
    cnn_optimizer *opt = NULL;
    int64_t *idx = NULL;
    float *probs = NULL, *losses = NULL;
    float *weights = NULL;
    CNN_TRY(check_config(cfg));
    CNN_TRY(check_data(net, train, "training"));
    if (val) CNN_TRY(check_data(net, val, "validation"));
    CNN_TRY(cnn_optimizer_create(net, cfg, &opt));
    int k = cnn_net_num_outputs(net), bs = cfg->batch_size;
    if (cfg->balanced_class_weights) {
        weights = malloc((size_t)k * sizeof *weights);
        if (!weights) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
            goto fail;
        }
        balanced_weights(train, k, weights);
    }
    CNN_TRY(cnn_net_set_loss_options(net, cfg->label_smoothing, weights ? weights : cfg->class_weights, k));
    double best_val = INFINITY;
    int since_best = 0;
    float plateau_scale = 1.0f;
    idx = malloc((size_t)train->n * sizeof *idx);
    probs = malloc((size_t)bs * k * sizeof *probs);
    losses = malloc((size_t)bs * sizeof *losses);
    if (!idx || !probs || !losses) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for %lld sample indices", (long long)train->n);
        goto fail;
    }
    for (int64_t i = 0; i < train->n; i++) idx[i] = i;
    cnn_rng rng;
    cnn_rng_seed(&rng, cfg->seed);
    int steps = (int)((train->n + bs - 1) / bs);
    for (int epoch = 1; epoch <= cfg->epochs; epoch++) {
        if (cfg->progress) fprintf(cfg->progress, "Epoch %d/%d\n", epoch, cfg->epochs);
        cnn_rng_shuffle(&rng, idx, train->n);
        opt->lr = cnn_lr_at(cfg, epoch - 1) * plateau_scale;
        cnn_progress bar;
        cnn_progress_start(&bar, cfg->progress, steps);
        double loss_sum = 0.0, t0 = cnn_now_seconds();
        int64_t correct = 0, seen = 0;
        char metrics[128];
        for (int s = 0; s < steps; s++) {
            int64_t first = (int64_t)s * bs;
            int n = (int)(train->n - first < bs ? train->n - first : bs);
            CNN_TRY(cnn_net_stage_batch(net, train, idx + first, 0, n));
            CNN_TRY(cnn_net_forward(net, 1));
            CNN_TRY(cnn_net_loss(net, 1));
            CNN_TRY(cnn_net_backward(net));
            if (cfg->clip_norm > 0.0f) CNN_TRY(cnn_optimizer_clip(opt, cfg->clip_norm, NULL));
            CNN_TRY(cnn_optimizer_step(opt));
            net->step++;
            CNN_TRY(batch_results(net, probs, losses, &loss_sum, &correct, NULL));
            seen += n;
            snprintf(metrics, sizeof metrics, " - loss: %.4f - accuracy: %.4f", loss_sum / (double)seen,
                     (double)correct / (double)seen);
            cnn_progress_update(&bar, s + 1, metrics, (double)seen / (cnn_now_seconds() - t0));
        }
        CNN_TRY(cnn_backend_sync(net->backend));
        cnn_epoch_stats es = {.epoch = epoch};
        es.seconds = cnn_now_seconds() - t0;
        es.loss = loss_sum / (double)seen;
        es.accuracy = (double)correct / (double)seen;
        es.images_per_sec = (double)seen / es.seconds;
        char extra[96] = "";
        if (val) {
            CNN_TRY(run_eval(net, val, bs > 256 ? bs : 256, &es.val_loss, &es.val_accuracy, NULL));
            es.has_val = 1;
            snprintf(extra, sizeof extra, " - val_loss: %.4f - val_accuracy: %.4f", es.val_loss, es.val_accuracy);
        }
        cnn_progress_finish(&bar, metrics, es.images_per_sec, extra);
        es.lr = opt->lr;
        if (cfg->reduce_on_plateau) { /* Keras' ReduceLROnPlateau on val_loss (training loss without a val set) */
            double watched = val ? es.val_loss : es.loss;
            if (watched < best_val) {
                best_val = watched;
                since_best = 0;
            } else if (++since_best >= cfg->plateau_patience) {
                plateau_scale *= cfg->plateau_factor;
                since_best = 0;
            }
        }
        if (history) history[epoch - 1] = es;
        if (cfg->on_epoch_end) cfg->on_epoch_end(&es, cfg->user);
    }
fail:
    cnn_net_set_loss_options(net, 0.0f, NULL, 0);
    free(weights);
    free(idx);
    free(probs);
    free(losses);
    cnn_optimizer_destroy(opt);
    return st;
}

/* ---- evaluation ------------------------------------------------------------------------------------------- */

void cnn_metrics_destroy(cnn_metrics *m)
{
    if (!m) return;
    free(m->confusion);
    free(m->precision);
    free(m->recall);
    free(m->f1);
    free(m->support);
    free(m);
}

cnn_status cnn_evaluate(cnn_net *net, const cnn_dataset *ds, int batch_size, cnn_metrics **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    if (batch_size < 1) return cnn_error(CNN_ERR_INVALID_ARG, "batch size must be at least 1, got %d", batch_size);
    CNN_TRY(check_data(net, ds, "evaluation"));
    int k = cnn_net_num_outputs(net);
    cnn_metrics *m = calloc(1, sizeof *m);
    if (!m) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    m->num_classes = k;
    m->n = ds->n;
    m->confusion = calloc((size_t)k * k, sizeof *m->confusion);
    m->precision = calloc((size_t)k, sizeof *m->precision);
    m->recall = calloc((size_t)k, sizeof *m->recall);
    m->f1 = calloc((size_t)k, sizeof *m->f1);
    m->support = calloc((size_t)k, sizeof *m->support);
    if (!m->confusion || !m->precision || !m->recall || !m->f1 || !m->support) {
        cnn_metrics_destroy(m);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
    }
    st = run_eval(net, ds, batch_size, &m->loss, &m->accuracy, m->confusion);
    if (st != CNN_OK) {
        cnn_metrics_destroy(m);
        return st;
    }
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
    *out = m;
    return CNN_OK;
fail:
    return st;
}

void cnn_metrics_print(const cnn_metrics *m, const cnn_net *net, FILE *out)
{
    int k = m->num_classes;
    fprintf(out, "samples: %lld  loss: %.4f  accuracy: %.4f\n\n", (long long)m->n, m->loss, m->accuracy);
    fprintf(out, "%-4s %-14s %9s %9s %9s %8s\n", "id", "class", "precision", "recall", "f1", "support");
    for (int c = 0; c < k; c++) {
        const char *name = cnn_net_class_name(net, c);
        fprintf(out, "%-4d %-14.14s %9.4f %9.4f %9.4f %8lld\n", c, name ? name : "-", m->precision[c], m->recall[c],
                m->f1[c], (long long)m->support[c]);
    }
    fprintf(out, "%-19s %9.4f %9.4f %9.4f %8lld\n\n", "macro avg", m->macro_precision, m->macro_recall, m->macro_f1,
            (long long)m->n);
    fprintf(out, "confusion matrix (rows: true class, columns: predicted class)\n      ");
    for (int c = 0; c < k; c++) fprintf(out, "%6d", c);
    fputc('\n', out);
    for (int r = 0; r < k; r++) {
        fprintf(out, "%6d", r);
        for (int c = 0; c < k; c++) fprintf(out, "%6lld", (long long)m->confusion[(size_t)r * k + c]);
        fputc('\n', out);
    }
}
