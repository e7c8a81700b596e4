/* Reports the cnn program writes: the --metrics-json file. */
#ifndef CNN_TOOLS_REPORT_H
#define CNN_TOOLS_REPORT_H

#include "cnn/cnn.h"

/* Writes {"history": [...], "test": {...}, "peak_rss_mib": ...} atomically. history may be NULL (eval); test may
 * be NULL (a data set without a test split: "test": null). */
cnn_status report_write_json(const char *path, const cnn_epoch_stats *history, int epochs, const cnn_metrics *test,
                             const cnn_net *net);

/* cnn eval --attack: the attack and its result */
typedef struct report_attack {
    const char *method;
    double eps, alpha;
    int steps, random_start;
    cnn_attack_result result;
} report_attack;

/* The same with "attack": {...} (when attack is not NULL) before "peak_rss_mib". Written with core/io/json.c's
 * writer, the one JSON writer of the project. */
cnn_status report_write_json_extra(const char *path, const cnn_epoch_stats *history, int epochs,
                                   const cnn_metrics *test, const cnn_net *net, const report_attack *attack);

struct cnn_json_writer;
/* Finishes the document of w (core/io/json.h) and writes it to path atomically, ending with a line break. When the
 * writer failed (out of memory), prints "<failed>: <the error>" first; failed NULL: "cannot write <path>: ...". */
cnn_status report_json_save(struct cnn_json_writer *w, const char *path, const char *failed);

/* Peak resident memory of this process in MiB. */
double report_peak_rss_mib(void);

#endif
