/* Data-parallel training, the trainer's side (core/dist.c): weights broadcast from rank 0, gradients averaged in
 * buckets, sums of metrics. Every function takes a NULL or one-rank context and then does nothing. */
#ifndef CNN_CORE_DIST_H
#define CNN_CORE_DIST_H

#include "cnn/dist.h"
#include "cnn/train.h"
#include "core/net.h"
#include "core/optim.h"

/* Copies rank 0's weights and non-trainable state (batchnorm running statistics) to every rank; with state_only,
 * the state alone. */
cnn_status cnn_dist_broadcast_net(cnn_dist *d, cnn_net *net, int state_only);

/* Replaces every gradient of opt's parameters by the average over ranks of the per-rank gradients weighted by
 * their images: sum_r n_r g_r / sum_r n_r, which is the gradient one process would compute on the union of the
 * shards (each g_r is the mean over rank r's n_local images; a rank without images adds zeros). Buckets of about
 * cfg.bucket_bytes go in a fixed order (the last layers' first), the next packed while the previous one travels.
 * *update is set to 0 when no rank had an image (the step is skipped everywhere), else 1. */
cnn_status cnn_dist_reduce_grads(cnn_dist *d, cnn_optimizer *opt, int n_local, int *update);

/* The config a rank trains with: rank 0's is cfg; the others' is a copy in *local without the outputs (progress,
 * logs, plots, saved models, checkpoints), which rank 0 alone writes. */
const cnn_train_config *cnn_dist_train_config(const cnn_train_config *cfg, cnn_train_config *local);

/* The contiguous part [*first, *first + *count) of n samples that this rank takes (balanced: counts differ by at
 * most one). */
void cnn_dist_shard_range(const cnn_dist *d, int64_t n, int64_t *first, int64_t *count);

/* Checkpoints: a run of several ranks writes "ranks=N" in its settings; a resume with another number of ranks is
 * refused with a message saying why (the shards and the global batch follow from it). */
void cnn_dist_fingerprint_line(const cnn_dist *d, char *line, size_t cap);
cnn_status cnn_dist_check_resume(const char *path, const char *stored, const char *now);

#endif
