#define _POSIX_C_SOURCE 200809L
#include "tools/report.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

typedef struct sbuf {
    char *s;
    size_t len, cap;
    int failed;
} sbuf;

static void put(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (b->failed) return;
        va_start(ap, fmt);
        int n = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = 1;
            return;
        }
        if (b->s && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? b->cap * 2 : 4096) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = 1;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

/* JSON has no NaN or infinity: write null. */
static void put_num(sbuf *b, double v)
{
    if (isfinite(v)) put(b, "%.6g", v);
    else put(b, "null");
}

static void put_str(sbuf *b, const char *s)
{
    put(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') put(b, "\\%c", c);
        else if (c < 0x20) put(b, "\\u%04x", c);
        else put(b, "%c", c);
    }
    put(b, "\"");
}

double report_peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

cnn_status report_write_json(const char *path, const cnn_epoch_stats *history, int epochs, const cnn_metrics *m,
                             const cnn_net *net)
{
    return report_write_json_extra(path, history, epochs, m, net, NULL);
}

cnn_status report_write_json_extra(const char *path, const cnn_epoch_stats *history, int epochs,
                                   const cnn_metrics *m, const cnn_net *net, const char *extra)
{
    sbuf b = {0};
    put(&b, "{\n  \"history\": [");
    for (int i = 0; history && i < epochs; i++) {
        const cnn_epoch_stats *e = &history[i];
        put(&b, "%s\n    {\"epoch\": %d, \"loss\": ", i ? "," : "", e->epoch);
        put_num(&b, e->loss);
        put(&b, ", \"accuracy\": ");
        put_num(&b, e->accuracy);
        if (e->has_val) {
            put(&b, ", \"val_loss\": ");
            put_num(&b, e->val_loss);
            put(&b, ", \"val_accuracy\": ");
            put_num(&b, e->val_accuracy);
        }
        put(&b, ", \"lr\": ");
        put_num(&b, e->lr);
        put(&b, ", \"images_per_sec\": ");
        put_num(&b, e->images_per_sec);
        put(&b, ", \"seconds\": ");
        put_num(&b, e->seconds);
        put(&b, ", \"data_wait\": ");
        put_num(&b, e->data_wait);
        put(&b, "}");
    }
    if (!m) { /* no test set */
        put(&b, "%s],\n  \"test\": null,\n  \"peak_rss_mib\": ", history && epochs ? "\n  " : "");
        goto tail;
    }
    put(&b, "%s],\n  \"test\": {\"samples\": %lld, \"loss\": ", history && epochs ? "\n  " : "", (long long)m->n);
    put_num(&b, m->loss);
    put(&b, ", \"accuracy\": ");
    put_num(&b, m->accuracy);
    put(&b, ", \"macro_precision\": ");
    put_num(&b, m->macro_precision);
    put(&b, ", \"macro_recall\": ");
    put_num(&b, m->macro_recall);
    put(&b, ", \"macro_f1\": ");
    put_num(&b, m->macro_f1);
    if (m->auc) { /* the metrics that need every probability (cnn_evaluate_source_ex) */
        put(&b, ", \"weighted_precision\": ");
        put_num(&b, m->weighted_precision);
        put(&b, ", \"weighted_recall\": ");
        put_num(&b, m->weighted_recall);
        put(&b, ", \"weighted_f1\": ");
        put_num(&b, m->weighted_f1);
        put(&b, ", \"top_k\": %d, \"top_k_accuracy\": ", m->top_k);
        put_num(&b, m->top_k_accuracy);
        put(&b, ", \"macro_auc\": ");
        put_num(&b, m->macro_auc);
        put(&b, ", \"ece\": ");
        put_num(&b, m->ece);
        put(&b, ",\n    \"reliability\": [");
        for (int i = 0; i < m->ece_bins; i++) {
            put(&b, "%s\n      {\"bin\": %d, \"upper\": ", i ? "," : "", i);
            put_num(&b, (double)(i + 1) / m->ece_bins);
            put(&b, ", \"count\": %lld, \"accuracy\": ", (long long)m->bin_count[i]);
            put_num(&b, m->bin_accuracy[i]);
            put(&b, ", \"confidence\": ");
            put_num(&b, m->bin_confidence[i]);
            put(&b, "}");
        }
        put(&b, "\n    ]");
    }
    put(&b, ",\n    \"per_class\": [");
    for (int c = 0; c < m->num_classes; c++) {
        const char *name = cnn_net_class_name(net, c);
        put(&b, "%s\n      {\"class\": %d, \"name\": ", c ? "," : "", c);
        if (name) put_str(&b, name);
        else put(&b, "null");
        put(&b, ", \"precision\": ");
        put_num(&b, m->precision[c]);
        put(&b, ", \"recall\": ");
        put_num(&b, m->recall[c]);
        put(&b, ", \"f1\": ");
        put_num(&b, m->f1[c]);
        put(&b, ", \"support\": %lld", (long long)m->support[c]);
        if (m->auc) {
            put(&b, ", \"roc_auc\": ");
            put_num(&b, m->auc[c]);
        }
        put(&b, "}");
    }
    put(&b, "\n    ],\n    \"confusion_matrix\": [");
    for (int r = 0; r < m->num_classes; r++) {
        put(&b, "%s\n      [", r ? "," : "");
        for (int c = 0; c < m->num_classes; c++)
            put(&b, "%s%lld", c ? ", " : "", (long long)m->confusion[(size_t)r * m->num_classes + c]);
        put(&b, "]");
    }
    put(&b, "\n    ]\n  },\n  \"peak_rss_mib\": ");
tail:
    if (extra && !b.failed) { /* before "peak_rss_mib": */
        b.len -= strlen("\"peak_rss_mib\": ");
        put(&b, "%s,\n  \"peak_rss_mib\": ", extra);
    }
    put_num(&b, report_peak_rss_mib());
    put(&b, "\n}\n");
    cnn_status st;
    if (b.failed) {
        fprintf(stderr, "out of memory while writing %s\n", path);
        st = CNN_ERR_NO_MEMORY;
    } else {
        const void *parts[1] = {b.s};
        size_t sizes[1] = {b.len};
        st = cnn_write_file_atomic(path, parts, sizes, 1);
    }
    free(b.s);
    return st;
}
