/* Reports the cnn program writes: the --metrics-json file. */
#ifndef CNN_TOOLS_REPORT_H
#define CNN_TOOLS_REPORT_H

#include "cnn/cnn.h"

/* Writes {"history": [...], "test": {...}, "peak_rss_mib": ...} atomically. history may be NULL (eval); test may
 * be NULL (a data set without a test split: "test": null). */
cnn_status report_write_json(const char *path, const cnn_epoch_stats *history, int epochs, const cnn_metrics *test,
                             const cnn_net *net);

/* The same with `extra` (may be NULL): more members of the top-level object, JSON text such as
 * "\"attack\": {...}", written before "peak_rss_mib". */
cnn_status report_write_json_extra(const char *path, const cnn_epoch_stats *history, int epochs,
                                   const cnn_metrics *test, const cnn_net *net, const char *extra);

/* Peak resident memory of this process in MiB. */
double report_peak_rss_mib(void);

#endif
