/* The pruner: the masks of a training run (internal; cnn/prune.h has the schedule and the strip).
 *
 * Which weights: the weight tensors of conv and dense layers that are not frozen, except the last layer with
 * weights (the classifier stays dense, as TF-MOT's guides leave it). With the channel structure only the convs
 * cnn_net_strip can narrow, and with each of their masks the masks of the conv's bias and of the batchnorm right
 * after it (gamma and beta), so that a pruned channel outputs exactly zero.
 *
 * The trainer calls cnn_pruner_step after every optimizer step: the masks are recomputed when the schedule says
 * so, then applied (the weights they remove are set to zero), so that whatever the optimizer did (momentum, Adam's
 * moments, weight decay), a pruned weight is exactly zero at every forward pass. Checkpoints hold the masks as
 * "prune/mask/<param>" (u8, 1 = kept). */
#ifndef CNN_CORE_PRUNE_H
#define CNN_CORE_PRUNE_H

#include "cnn/prune.h"
#include "core/net.h"
#include "core/safetensors.h"

typedef struct cnn_pruner cnn_pruner;

cnn_status cnn_pruner_create(cnn_net *net, const cnn_prune_config *cfg, cnn_pruner **out);
void cnn_pruner_destroy(cnn_pruner *p);
/* Resolves E for a run of total_steps steps; a fresh run (resumed = 0) then gets the update of its current step
 * (net->step) when the schedule has one. */
cnn_status cnn_pruner_start(cnn_pruner *p, cnn_net *net, int64_t total_steps, int resumed);
/* After an optimizer step (net->step counts it): recompute the masks when the schedule updates at net->step, then
 * zero what they remove. */
cnn_status cnn_pruner_step(cnn_pruner *p, cnn_net *net);
/* Zero what the masks remove (after weights were restored from elsewhere: restore-best-weights). */
cnn_status cnn_pruner_apply(cnn_pruner *p, cnn_net *net);
/* Share of masked-out weights among the pruned weight tensors (biases and batchnorm parameters not counted). */
double cnn_pruner_sparsity(const cnn_pruner *p);

/* The masks as checkpoint tensors: entry i (0 <= i < cnn_pruner_masks) is param *name's mask, u8 of the param's
 * shape. */
int cnn_pruner_masks(const cnn_pruner *p);
const uint8_t *cnn_pruner_mask(const cnn_pruner *p, int i, const cnn_param **param);
/* Reads every mask back from a checkpoint ("prune/mask/<param>"), naming what is missing or of another size. */
cnn_status cnn_pruner_restore(cnn_pruner *p, const cnn_st_file *f, const char *path);

/* 1 when conv layer i's output channels may be removed (cnn_net_strip's rule, cnn/prune.h); *bn: the batchnorm
 * right after it, or -1. */
int cnn_prune_channel_ok(const cnn_net *net, int i, int *bn);

/* "structure=... initial=... target=... begin=... end=... frequency=..." for the checkpoint's training settings. */
void cnn_prune_describe(const cnn_prune_config *cfg, char *buf, size_t size);

#endif
