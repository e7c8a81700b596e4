/* Data-parallel training, the trainer's side (core/train/dist.c): weights broadcast from rank 0, gradients averaged in
 * buckets, sums of metrics. Every function takes a NULL or one-rank context and then does nothing. */
#ifndef CNN_CORE_DIST_H
#define CNN_CORE_DIST_H

#include "cnn/dist.h"
#include "cnn/train.h"
#include "core/backend.h"
#include "core/nn/net.h"
#include "core/nn/optim.h"

/* Copies rank 0's weights and non-trainable state (batchnorm running statistics) to every rank; with state_only,
 * the state alone. */
cnn_status cnn_dist_broadcast_net(cnn_dist *d, cnn_net *net, int state_only);

/* Replaces every gradient of opt's parameters by the average over ranks of the per-rank gradients weighted by
 * their images: sum_r n_r g_r / sum_r n_r, which is the gradient one process would compute on the union of the
 * shards (each g_r is the mean over rank r's n_local images; a rank without images adds zeros). Buckets of about
 * cfg.bucket_bytes go in a fixed order (the last layers' first), the next packed while the previous one travels.
 * *update is set to 0 when no rank had an image (the step is skipped everywhere), else 1. */
cnn_status cnn_dist_reduce_grads(cnn_dist *d, cnn_optimizer *opt, int n_local, int *update);

/* The same reduction, overlapped with backward as PyTorch DDP does it: cnn_dist_grads_begin (before
 * cnn_net_backward, on every rank, with or without images) sums the step's image count and plans the buckets;
 * on the CPU path it then points net's grads_ready hook at the reduction, so that a bucket starts
 * (MPI_Iallreduce, or the gather of --deterministic) as soon as backward has finished every layer its
 * parameters belong to, up to 4 in flight (2 with --deterministic). cnn_dist_grads_end (after backward)
 * removes the hook, starts the buckets left and waits for all of them. The buckets, their order and their sums
 * are those of cnn_dist_reduce_grads, so the result is the same bit for bit; only the time they start differs.
 * A net with l1/l2 penalties (added after the whole backward) and the NCCL path reduce at the end. With a
 * NULL net, begin + end is cnn_dist_reduce_grads. */
cnn_status cnn_dist_grads_begin(cnn_dist *d, cnn_net *net, cnn_optimizer *opt, int n_local);
cnn_status cnn_dist_grads_end(cnn_dist *d, cnn_net *net, int n_local, int *update);
/* Buckets started during backward, and buckets started in all, since cnn_dist_init (0 for NULL). */
void cnn_dist_overlap_counts(const cnn_dist *d, int64_t *early, int64_t *all);

/* The config a rank trains with: rank 0's is cfg; the others' is a copy in *local without the outputs (progress,
 * logs, plots, saved models, checkpoints), which rank 0 alone writes. */
const cnn_train_config *cnn_dist_train_config(const cnn_train_config *cfg, cnn_train_config *local);

/* The contiguous part [*first, *first + *count) of n samples that this rank takes (balanced: counts differ by at
 * most one). */
void cnn_dist_shard_range(const cnn_dist *d, int64_t n, int64_t *first, int64_t *count);

/* The loader workers of each rank when --workers is not given: the one-process default (half the cores) shared by
 * the ranks of this machine, at least 1 (0: one process, the loader's own default). */
int cnn_dist_loader_workers(const cnn_dist *d);

/* Checkpoints: a run of several ranks writes "ranks=N" in its settings; a resume with another number of ranks is
 * refused with a message saying why (the shards and the global batch follow from it). */
void cnn_dist_fingerprint_line(const cnn_dist *d, char *line, size_t cap);
cnn_status cnn_dist_check_resume(const char *path, const char *stored, const char *now);

/* --sync-batchnorm (core/train/dist_bn.c). cnn_dist_attach_net points every batchnorm layer of net at d when d's config
 * asks for synchronized statistics and there are several ranks (else it does nothing); cnn_dist_detach_net
 * undoes it. While attached, a training forward of such a layer runs cnn_dist_bn_forward instead of the
 * backend's op, and its backward runs cnn_dist_bn_backward after the backend's op: every rank must then run the
 * same forwards and backwards (a rank without images in a step would keep the others waiting until the
 * collective timeout). */
cnn_status cnn_dist_attach_net(cnn_dist *d, cnn_net *net);
void cnn_dist_detach_net(cnn_net *net);
int cnn_dist_sync_batchnorm(const cnn_dist *d);
/* The training forward over all ranks: the per-channel sum and sum of squares of x (shifted by the running mean,
 * which every rank holds alike) are added across ranks; the mean and biased variance of the global batch then
 * normalize x (through the backend's inference op, residual and activation included), are stored in
 * a->save_mean and a->save_invstd, and update the running statistics (unbiased with the global count). */
cnn_status cnn_dist_bn_forward(cnn_dist *d, cnn_backend *b, const cnn_batchnorm_args *a);
/* After the backend's training backward on this rank's images: dx is corrected to the gradient through the
 * global batch's statistics. The backend used this rank's sums S_r = (sum dy, sum dy xhat), as dbeta and dgamma;
 * the global batch's are the image-weighted average S = sum_r n_r S_r / sum_r n_r (in this rank's loss scale,
 * the same average the gradient reduction makes of dbeta and dgamma), so
 *   dx += gamma invstd ((dbeta_r - Dbeta) + (x - mean) invstd (dgamma_r - Dgamma)) / m_r
 * per channel, m_r = this rank's rows. Does nothing when dx is NULL (the same on every rank). */
cnn_status cnn_dist_bn_backward(cnn_dist *d, const cnn_batchnorm_args *a);

/* The per-class figures, n and the macro averages of m from its confusion matrix (core/train/train.c): what
 * cnn_dist_evaluate_source recomputes from the confusion matrix of all ranks. */
void cnn_metrics_from_confusion(cnn_metrics *m);

/* Metrics of k classes with their confusion matrix and per-class arrays zeroed (core/train/train.c), the start of
 * every evaluation's metrics (cnn_evaluate_*, cnn_metrics_compute, cnn_dist_evaluate_source). */
cnn_status cnn_metrics_alloc(int k, cnn_metrics **out);

#endif
