/* The metrics people read beyond accuracy (cnn/train.h): weighted averages, top-k accuracy, one-vs-rest ROC AUC per
 * class, the expected calibration error with its reliability bins; an evaluation pass that keeps every probability
 * for them; and their pictures (the confusion matrix, the reliability diagram). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/explain.h"
#include "cnn/train.h"
#include "core/data/image.h"
#include "core/data/loader.h"
#include "core/draw.h"
#include "core/error.h"
#include "core/free_list.h"
#include "core/nn/net.h"
#include "core/train/dist.h"

#define DEFAULT_TOP_K 5
#define DEFAULT_ECE_BINS 15 /* Guo et al. 2017, "On calibration of modern neural networks" */

/* ---- the metrics ------------------------------------------------------------------------------------------ */

typedef struct scored {
    float score;
    int positive;
} scored;

static int by_score(const void *a, const void *b)
{
    float x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x > y) - (x < y);
}

/* One-vs-rest ROC AUC of class c: the Mann-Whitney statistic, the probability that a positive scores above a
 * negative, ties counting a half (average ranks). */
static double class_auc(const float *probs, const int32_t *labels, int64_t n, int k, int c, scored *buf)
{
    int64_t pos = 0;
    for (int64_t i = 0; i < n; i++) {
        buf[i].score = probs[(size_t)i * k + c];
        buf[i].positive = labels[i] == c;
        pos += buf[i].positive;
    }
    const int64_t neg = n - pos;
    if (pos == 0 || neg == 0) return NAN;
    qsort(buf, (size_t)n, sizeof *buf, by_score);
    double rank_sum = 0.0;
    for (int64_t i = 0; i < n;) {
        int64_t j = i;
        while (j < n && buf[j].score == buf[i].score) j++;
        double rank = 0.5 * (double)(i + 1 + j); /* the mean of ranks i+1 .. j */
        for (int64_t t = i; t < j; t++)
            if (buf[t].positive) rank_sum += rank;
        i = j;
    }
    return (rank_sum - 0.5 * (double)pos * (double)(pos + 1)) / ((double)pos * (double)neg);
}

static cnn_status alloc_metrics(int k, int bins, cnn_metrics **out)
{
    cnn_metrics *m;
    cnn_status st = cnn_metrics_alloc(k, &m);
    if (st != CNN_OK) return st;
    m->auc = calloc((size_t)k, sizeof *m->auc);
    m->bin_count = calloc((size_t)bins, sizeof *m->bin_count);
    m->bin_accuracy = calloc((size_t)bins, sizeof *m->bin_accuracy);
    m->bin_confidence = calloc((size_t)bins, sizeof *m->bin_confidence);
    if (!m->auc || !m->bin_count || !m->bin_accuracy || !m->bin_confidence) {
        cnn_metrics_destroy(m);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the metrics of %d classes", k);
    }
    m->ece_bins = bins;
    *out = m;
    return CNN_OK;
}

cnn_status cnn_metrics_compute(const float *probs, const float *losses, const int32_t *labels, int64_t n, int k,
                               const cnn_metrics_options *opt, cnn_metrics **out)
{
    *out = NULL;
    int top_k = opt && opt->top_k > 0 ? opt->top_k : DEFAULT_TOP_K;
    int bins = opt && opt->ece_bins > 0 ? opt->ece_bins : DEFAULT_ECE_BINS;
    if (n < 1 || k < 1) return cnn_error(CNN_ERR_INVALID_ARG, "metrics: %lld samples of %d classes", (long long)n, k);
    if (bins > 1000) return cnn_error(CNN_ERR_INVALID_ARG, "metrics: %d calibration bins (at most 1000)", bins);
    if (top_k > k) top_k = k;
    for (int64_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= k)
            return cnn_error(CNN_ERR_INVALID_ARG, "metrics: sample %lld has label %d; there are %d classes",
                             (long long)i, labels[i], k);
    cnn_metrics *m = NULL;
    cnn_status st = alloc_metrics(k, bins, &m);
    if (st != CNN_OK) return st;
    scored *buf = malloc((size_t)n * sizeof *buf);
    if (!buf) {
        cnn_metrics_destroy(m);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the AUC of %lld samples", (long long)n);
    }
    m->n = n;
    m->top_k = top_k;
    int64_t correct = 0, in_top = 0;
    double loss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const float *p = probs + (size_t)i * k;
        const int y = labels[i];
        int best = 0, above = 0;
        for (int j = 0; j < k; j++) {
            if (p[j] > p[best]) best = j;
            above += p[j] > p[y];
        }
        correct += best == y;
        in_top += above < top_k;
        m->confusion[(size_t)y * k + best]++;
        loss += losses ? (double)losses[i] : -log(fmax((double)p[y], 1e-30));
        /* calibration: the top probability's bin, right-closed ((b-1)/B, b/B] */
        double conf = p[best];
        int b = (int)ceil(conf * bins) - 1;
        b = b < 0 ? 0 : b >= bins ? bins - 1 : b;
        m->bin_count[b]++;
        m->bin_accuracy[b] += best == y;
        m->bin_confidence[b] += conf;
    }
    m->loss = loss / (double)n;
    m->accuracy = (double)correct / (double)n;
    m->top_k_accuracy = (double)in_top / (double)n;
    for (int b = 0; b < bins; b++) {
        if (!m->bin_count[b]) continue;
        m->bin_accuracy[b] /= (double)m->bin_count[b];
        m->bin_confidence[b] /= (double)m->bin_count[b];
        m->ece += (double)m->bin_count[b] / (double)n * fabs(m->bin_accuracy[b] - m->bin_confidence[b]);
    }
    /* per class and macro from the confusion matrix (every sample counted once: its n is n); weighted: by support */
    cnn_metrics_from_confusion(m);
    int defined = 0;
    for (int c = 0; c < k; c++) {
        double wgt = (double)m->support[c] / (double)n;
        m->weighted_precision += wgt * m->precision[c];
        m->weighted_recall += wgt * m->recall[c];
        m->weighted_f1 += wgt * m->f1[c];
        m->auc[c] = class_auc(probs, labels, n, k, c, buf);
        if (!isnan(m->auc[c])) {
            m->macro_auc += m->auc[c];
            defined++;
        }
    }
    m->macro_auc = defined ? m->macro_auc / defined : NAN;
    free(buf);
    *out = m;
    return CNN_OK;
}

/* ---- an evaluation pass that keeps the probabilities ------------------------------------------------------ */

#define NORM_MAX 16 /* channels whose normalization the loader applies */

cnn_status cnn_evaluate_source_ex(cnn_net *net, const cnn_source *src, const cnn_train_config *data, int batch_size,
                                  const cnn_metrics_options *opt, cnn_metrics **out)
{
    *out = NULL;
    if (batch_size < 1) return cnn_error(CNN_ERR_INVALID_ARG, "batch size must be at least 1, got %d", batch_size);
    const int k = cnn_net_num_outputs(net);
    const cnn_dataset *ds = cnn_source_dataset(src);
    const int64_t count = cnn_source_count(src);
    if (count < 1) return cnn_error(CNN_ERR_INVALID_ARG, "the evaluation set is empty");
    cnn_status st = CNN_OK;
    cnn_loader *l = NULL;
    cnn_batch *b = NULL;
    float *probs = malloc((size_t)count * k * sizeof *probs), *losses = malloc((size_t)count * sizeof *losses);
    int32_t *labels = malloc((size_t)count * sizeof *labels);
    int64_t seen = 0;
    if (!probs || !losses || !labels) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the probabilities of %lld samples", (long long)count);
        goto fail;
    }
    if (ds) {
        int h, w, c;
        cnn_net_input_shape(net, &h, &w, &c);
        if (ds->h != h || ds->w != w || ds->c != c) {
            st = cnn_error(CNN_ERR_SHAPE, "the evaluation set has %dx%dx%d images but the model (%s) takes %dx%dx%d",
                           ds->h, ds->w, ds->c, net->source, h, w, c);
            goto fail;
        }
    } else {
        float mean[NORM_MAX], std[NORM_MAX];
        cnn_loader_config lc;
        cnn_loader_config_for_net(&lc, net, data, batch_size);
        if (lc.c <= NORM_MAX && cnn_net_normalization(net, mean, std)) {
            lc.mean = mean;
            lc.std = std;
        }
        CNN_TRY(cnn_loader_create(src, &lc, &l));
    }
    int64_t batches = ds ? (count + batch_size - 1) / batch_size : cnn_loader_batches_per_epoch(l);
    for (int64_t i = 0; i < batches; i++) {
        int n;
        const int32_t *y;
        if (ds) {
            n = (int)(count - i * batch_size < batch_size ? count - i * batch_size : batch_size);
            CNN_TRY(cnn_net_stage_batch(net, ds, NULL, i * batch_size, n));
            y = ds->labels + i * batch_size;
        } else {
            CNN_TRY(cnn_loader_next(l, &b));
            n = b->n;
            y = b->labels;
            if (n) CNN_TRY(cnn_net_stage_host(net, b->images, b->labels, n));
        }
        if (n) {
            for (int j = 0; j < n; j++)
                if (y[j] < 0 || y[j] >= k) {
                    st = cnn_error(CNN_ERR_SHAPE, "the evaluation set has label %d but the model has %d outputs", y[j],
                                   k);
                    goto fail;
                }
            CNN_TRY(cnn_net_forward(net, 0));
            CNN_TRY(cnn_net_loss(net, 0));
            CNN_TRY(cnn_tensor_read(net->probs, probs + (size_t)seen * k, (size_t)n * k * sizeof(float)));
            CNN_TRY(cnn_tensor_read(net->losses, losses + seen, (size_t)n * sizeof(float)));
            memcpy(labels + seen, y, (size_t)n * sizeof *labels);
            seen += n;
        }
        if (b) {
            cnn_loader_release(l, b);
            b = NULL;
        }
    }
    if (!seen) {
        st = cnn_error(CNN_ERR_FORMAT, "no image of the evaluation set could be read");
        goto fail;
    }
    st = cnn_metrics_compute(probs, losses, labels, seen, k, opt, out);
fail:
    if (b) cnn_loader_release(l, b);
    cnn_loader_destroy(l);
    CNN_FREE_ALL(probs, losses, labels);
    return st;
}

/* ---- pictures --------------------------------------------------------------------------------------------- */

static const unsigned char INK[3] = {20, 20, 20}, GRID[3] = {200, 200, 200}, BLUE[3] = {40, 90, 200},
                           RED[3] = {210, 60, 50}, WHITE[3] = {255, 255, 255};

static cnn_status canvas(int w, int h, unsigned char **px)
{
    *px = malloc((size_t)w * h * 3);
    if (!*px) return cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for a %dx%d picture", w, h);
    memset(*px, 255, (size_t)w * h * 3);
    return CNN_OK;
}

cnn_status cnn_metrics_plot_confusion(const cnn_metrics *m, const cnn_net *net, const char *path)
{
    enum { CELL = 40, LEFT = 130, TOP = 40, BOTTOM = 30, RIGHT = 16 };
    const int k = m->num_classes;
    if (k < 1 || k > 200) return cnn_error(CNN_ERR_INVALID_ARG, "%s: a confusion matrix of %d classes", path, k);
    const int w = LEFT + k * CELL + RIGHT, h = TOP + k * CELL + BOTTOM;
    unsigned char *px;
    cnn_status st = canvas(w, h, &px);
    if (st != CNN_OK) return st;
    cnn_draw_text(px, w, h, LEFT, 10, "predicted class", 1, INK);
    for (int r = 0; r < k; r++) {
        char label[32];
        const char *name = net ? cnn_net_class_name(net, r) : NULL;
        snprintf(label, sizeof label, "%d %.*s", r, 17, name ? name : "");
        cnn_draw_text(px, w, h, 6, TOP + r * CELL + CELL / 2 - 3, label, 1, INK);
        snprintf(label, sizeof label, "%d", r);
        cnn_draw_text(px, w, h, LEFT + r * CELL + CELL / 2 - 3, TOP - 12, label, 1, INK);
        int64_t row = 0;
        for (int c = 0; c < k; c++) row += m->confusion[(size_t)r * k + c];
        for (int c = 0; c < k; c++) {
            int64_t v = m->confusion[(size_t)r * k + c];
            double share = row ? (double)v / (double)row : 0.0; /* the row's share: recall on the diagonal */
            unsigned char cell[3] = {(unsigned char)lrint(255 - 215 * share), (unsigned char)lrint(255 - 165 * share),
                                     (unsigned char)lrint(255 - 55 * share)};
            cnn_draw_rect(px, w, h, LEFT + c * CELL + 1, TOP + r * CELL + 1, CELL - 2, CELL - 2, cell);
            char count[24];
            snprintf(count, sizeof count, "%lld", (long long)v);
            int tw = cnn_draw_text_width(count, 1);
            cnn_draw_text(px, w, h, LEFT + c * CELL + (CELL - tw) / 2, TOP + r * CELL + CELL / 2 - 3, count, 1,
                          share > 0.5 ? WHITE : INK);
        }
    }
    cnn_draw_text(px, w, h, 6, h - 18, "rows: true class", 1, INK);
    st = cnn_image_write_png(path, w, h, 3, px);
    free(px);
    return st;
}

cnn_status cnn_metrics_plot_reliability(const cnn_metrics *m, const char *path)
{
    enum { W = 420, H = 420, L = 50, R = 20, T = 40, B = 50 };
    if (!m->bin_count || m->ece_bins < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: the reliability diagram needs cnn_metrics_compute's bins", path);
    unsigned char *px;
    cnn_status st = canvas(W, H, &px);
    if (st != CNN_OK) return st;
    const int pw = W - L - R, ph = H - T - B, bins = m->ece_bins;
    char text[64];
    snprintf(text, sizeof text, "reliability: ece %.4f (%d bins)", m->ece, bins);
    cnn_draw_text(px, W, H, L, 12, text, 1, INK);
    for (int t = 0; t <= 5; t++) { /* grid and ticks at 0, 0.2, ..., 1 */
        int x = L + pw * t / 5, y = T + ph - ph * t / 5;
        cnn_draw_line(px, W, H, L, y, L + pw, y, GRID);
        cnn_draw_line(px, W, H, x, T, x, T + ph, GRID);
        snprintf(text, sizeof text, "%.1f", t / 5.0);
        cnn_draw_text(px, W, H, x - 8, T + ph + 6, text, 1, INK);
        cnn_draw_text(px, W, H, L - 26, y - 3, text, 1, INK);
    }
    for (int b = 0; b < bins; b++) { /* accuracy per bin (blue), the gap to its mean confidence (red) */
        if (!m->bin_count[b]) continue;
        int x0 = L + pw * b / bins + 1, x1 = L + pw * (b + 1) / bins - 1;
        int ya = T + ph - (int)lrint(ph * m->bin_accuracy[b]), yc = T + ph - (int)lrint(ph * m->bin_confidence[b]);
        cnn_draw_rect(px, W, H, x0, ya, x1 - x0 + 1, T + ph - ya, BLUE);
        int lo = ya < yc ? ya : yc, hi = ya < yc ? yc : ya;
        for (int x = x0; x <= x1; x += 2) cnn_draw_line(px, W, H, x, lo, x, hi, RED);
    }
    cnn_draw_line(px, W, H, L, T + ph, L + pw, T, INK); /* perfect calibration */
    cnn_draw_line(px, W, H, L, T, L, T + ph, INK);
    cnn_draw_line(px, W, H, L, T + ph, L + pw, T + ph, INK);
    cnn_draw_text(px, W, H, L + pw / 2 - 60, H - 22, "confidence (top probability)", 1, INK);
    cnn_draw_text(px, W, H, 4, T - 14, "accuracy", 1, INK);
    st = cnn_image_write_png(path, W, H, 3, px);
    free(px);
    return st;
}
