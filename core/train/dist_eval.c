/* Evaluation split across ranks (cnn/dist.h): each rank evaluates its contiguous 1/N of the set, and the sums that
 * make the metrics (the loss times the images, the confusion matrix) are added across ranks in rank order. The
 * confusion matrix's counts are exact in doubles up to 2^53 images. */
#include <stdlib.h>

#include "core/error.h"
#include "core/train/dist.h"

cnn_status cnn_dist_evaluate_source(cnn_dist *d, cnn_net *net, const cnn_source *src, const cnn_train_config *data,
                                    int batch_size, cnn_metrics **out)
{
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_dist_evaluate_source: no output");
    *out = NULL;
    if (cnn_dist_size(d) < 2) return cnn_evaluate_source(net, src, data, batch_size, out);
    cnn_status st = CNN_OK;
    cnn_source *part = NULL;
    cnn_metrics *m = NULL;
    double *sums = NULL;
    /* rank 0's batchnorm statistics everywhere (each rank's own after training without --sync-batchnorm) */
    CNN_TRY(cnn_dist_broadcast_net(d, net, 1));
    int64_t first, count;
    cnn_dist_shard_range(d, cnn_source_count(src), &first, &count);
    const int k = cnn_net_num_outputs(net);
    if (count) {
        CNN_TRY(cnn_source_range(src, first, count, &part));
        CNN_TRY(cnn_evaluate_source(net, part, data, batch_size, &m));
    } else {
        CNN_TRY(cnn_metrics_alloc(k, &m)); /* no image: this rank's part of the set is empty */
    }
    const size_t kk = (size_t)k * (size_t)k;
    sums = malloc((kk + 1) * sizeof *sums);
    if (!sums) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory for the metrics of %d classes", k);
        goto fail;
    }
    sums[0] = m->n ? m->loss * (double)m->n : 0.0;
    for (size_t i = 0; i < kk; i++) sums[1 + i] = (double)m->confusion[i];
    CNN_TRY(cnn_dist_sum(d, sums, (int)(kk + 1), "the sum of the evaluation metrics"));
    for (size_t i = 0; i < kk; i++) m->confusion[i] = (int64_t)sums[1 + i];
    cnn_metrics_from_confusion(m);
    int64_t correct = 0;
    for (int c = 0; c < k; c++) correct += m->confusion[(size_t)c * k + c];
    m->loss = m->n ? sums[0] / (double)m->n : 0.0;
    m->accuracy = m->n ? (double)correct / (double)m->n : 0.0;
    *out = m;
    m = NULL;
fail:
    free(sums);
    cnn_metrics_destroy(m);
    cnn_source_destroy(part);
    return st;
}
