#define _POSIX_C_SOURCE 200809L
#include "tools/report.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "core/io/json.h"

double report_peak_rss_mib(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1.0;
    return (double)ru.ru_maxrss / 1024.0; /* Linux reports KiB */
}

/* "key": number (NaN and infinities are null: JSON has neither) */
static void put_num(cnn_json_writer *w, const char *key, double v)
{
    cnn_json_write_key(w, key);
    cnn_json_write_number(w, v);
}

static void put_int(cnn_json_writer *w, const char *key, int64_t v)
{
    cnn_json_write_key(w, key);
    cnn_json_write_int(w, v);
}

static void put_history(cnn_json_writer *w, const cnn_epoch_stats *history, int epochs)
{
    cnn_json_write_key(w, "history");
    cnn_json_write_begin_array(w);
    for (int i = 0; history && i < epochs; i++) {
        const cnn_epoch_stats *e = &history[i];
        cnn_json_write_begin_object(w);
        put_int(w, "epoch", e->epoch);
        put_num(w, "loss", e->loss);
        put_num(w, "accuracy", e->accuracy);
        if (e->has_val) {
            put_num(w, "val_loss", e->val_loss);
            put_num(w, "val_accuracy", e->val_accuracy);
        }
        put_num(w, "lr", e->lr);
        put_num(w, "images_per_sec", e->images_per_sec);
        put_num(w, "seconds", e->seconds);
        put_num(w, "data_wait", e->data_wait);
        if (e->sparsity >= 0.0) put_num(w, "sparsity", e->sparsity); /* pruning */
        cnn_json_write_end_object(w);
    }
    cnn_json_write_end_array(w);
}

static void put_test(cnn_json_writer *w, const cnn_metrics *m, const cnn_net *net)
{
    cnn_json_write_key(w, "test");
    if (!m) { /* no test set */
        cnn_json_write_null(w);
        return;
    }
    cnn_json_write_begin_object(w);
    put_int(w, "samples", m->n);
    put_num(w, "loss", m->loss);
    put_num(w, "accuracy", m->accuracy);
    put_num(w, "macro_precision", m->macro_precision);
    put_num(w, "macro_recall", m->macro_recall);
    put_num(w, "macro_f1", m->macro_f1);
    if (m->auc) { /* the metrics that need every probability (cnn_evaluate_source_ex) */
        put_num(w, "weighted_precision", m->weighted_precision);
        put_num(w, "weighted_recall", m->weighted_recall);
        put_num(w, "weighted_f1", m->weighted_f1);
        put_int(w, "top_k", m->top_k);
        put_num(w, "top_k_accuracy", m->top_k_accuracy);
        put_num(w, "macro_auc", m->macro_auc);
        put_num(w, "ece", m->ece);
        cnn_json_write_key(w, "reliability");
        cnn_json_write_begin_array(w);
        for (int i = 0; i < m->ece_bins; i++) {
            cnn_json_write_begin_object(w);
            put_int(w, "bin", i);
            put_num(w, "upper", (double)(i + 1) / m->ece_bins);
            put_int(w, "count", m->bin_count[i]);
            put_num(w, "accuracy", m->bin_accuracy[i]);
            put_num(w, "confidence", m->bin_confidence[i]);
            cnn_json_write_end_object(w);
        }
        cnn_json_write_end_array(w);
    }
    cnn_json_write_key(w, "per_class");
    cnn_json_write_begin_array(w);
    for (int c = 0; c < m->num_classes; c++) {
        cnn_json_write_begin_object(w);
        put_int(w, "class", c);
        cnn_json_write_key(w, "name");
        cnn_json_write_string(w, cnn_net_class_name(net, c)); /* null when unnamed */
        put_num(w, "precision", m->precision[c]);
        put_num(w, "recall", m->recall[c]);
        put_num(w, "f1", m->f1[c]);
        put_int(w, "support", m->support[c]);
        if (m->auc) put_num(w, "roc_auc", m->auc[c]);
        cnn_json_write_end_object(w);
    }
    cnn_json_write_end_array(w);
    cnn_json_write_key(w, "confusion_matrix");
    cnn_json_write_begin_array(w);
    for (int r = 0; r < m->num_classes; r++) {
        cnn_json_write_begin_array(w);
        for (int c = 0; c < m->num_classes; c++) cnn_json_write_int(w, m->confusion[(size_t)r * m->num_classes + c]);
        cnn_json_write_end_array(w);
    }
    cnn_json_write_end_array(w);
    cnn_json_write_end_object(w);
}

static void put_attack(cnn_json_writer *w, const report_attack *a)
{
    cnn_json_write_key(w, "attack");
    cnn_json_write_begin_object(w);
    cnn_json_write_key(w, "method");
    cnn_json_write_string(w, a->method);
    put_num(w, "eps", a->eps);
    put_int(w, "steps", a->steps);
    put_num(w, "alpha", a->alpha);
    cnn_json_write_key(w, "random_start");
    cnn_json_write_bool(w, a->random_start);
    put_int(w, "samples", a->result.n);
    put_num(w, "clean_accuracy", a->result.clean_accuracy);
    put_num(w, "accuracy", a->result.adv_accuracy);
    put_num(w, "clean_loss", a->result.clean_loss);
    put_num(w, "loss", a->result.adv_loss);
    cnn_json_write_end_object(w);
}

cnn_status report_write_json(const char *path, const cnn_epoch_stats *history, int epochs, const cnn_metrics *m,
                             const cnn_net *net)
{
    return report_write_json_extra(path, history, epochs, m, net, NULL);
}

cnn_status report_write_json_extra(const char *path, const cnn_epoch_stats *history, int epochs,
                                   const cnn_metrics *m, const cnn_net *net, const report_attack *attack)
{
    cnn_json_writer w;
    cnn_json_writer_init(&w, 2);
    cnn_json_write_begin_object(&w);
    put_history(&w, history, epochs);
    put_test(&w, m, net);
    if (attack) put_attack(&w, attack);
    put_num(&w, "peak_rss_mib", report_peak_rss_mib());
    cnn_json_write_end_object(&w);
    return report_json_save(&w, path, NULL);
}

cnn_status report_json_save(cnn_json_writer *w, const char *path, const char *failed)
{
    char *text = NULL;
    size_t len = 0;
    cnn_status st = cnn_json_writer_finish(w, &text, &len);
    if (st != CNN_OK) {
        if (failed) fprintf(stderr, "%s: %s\n", failed, cnn_last_error());
        else fprintf(stderr, "cannot write %s: %s\n", path, cnn_last_error());
        return st;
    }
    const void *parts[2] = {text, "\n"};
    size_t sizes[2] = {len, 1};
    st = cnn_write_file_atomic(path, parts, sizes, 2);
    free(text);
    return st;
}
