/* The pruner: the masks of a training run (internal; cnn/prune.h has the schedule and the strip).
 *
 * Which weights: the weight tensors of conv and dense layers that are not frozen, except the last layer with
 * weights (the classifier stays dense, as TF-MOT's guides leave it). With the channel structure the channel groups
 * (cnn_prune_groups below): every conv and batchnorm with a channel in a group that may go gets masks (a conv's
 * filters and bias, a batchnorm's gamma and beta), and a group's channels are masked in all its members at once,
 * so that a pruned channel outputs exactly zero everywhere, through residual adds and concats.
 *
 * The trainer calls cnn_pruner_step after every optimizer step: the masks are recomputed when the schedule says
 * so, then applied (the weights they remove are set to zero), so that whatever the optimizer did (momentum, Adam's
 * moments, weight decay), a pruned weight is exactly zero at every forward pass. Checkpoints hold the masks as
 * "prune/mask/<param>" (u8, 1 = kept). */
#ifndef CNN_CORE_PRUNE_H
#define CNN_CORE_PRUNE_H

#include "cnn/prune.h"
#include "core/io/safetensors.h"
#include "core/nn/net.h"

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

/* The channel groups of channel pruning (core/compress/prune_groups.c): the channels that must be removed together, across
 * residual adds, concats and the layers that work per channel. Slots are the channels of every layer's output
 * (layer i's from off[i] to off[i + 1]) and of the network input (from off[nlayers]). */
typedef struct cnn_prune_groups {
    int nlayers;
    int64_t *off;      /* nlayers + 2 slot offsets */
    int64_t nslots;
    int64_t *gid;      /* per slot: its group, or -1 where the channel must stay */
    int *layer_of;     /* per slot: its layer (-1: the network input) */
    int64_t ngroups;   /* the groups that may go */
    int64_t *first;    /* ngroups + 1: group k's members are members[first[k] .. first[k + 1]) (slots, ascending) */
    int64_t *members;
    int *family;       /* per group: its family (the groups of the convs that share a group), 0 .. nfamilies - 1 */
    int nfamilies;
    int *bn_after;     /* per layer: the batchnorm that reads a conv's output (its gamma ranks the filters), or -1 */
} cnn_prune_groups;

cnn_status cnn_prune_groups_build(const cnn_net *net, cnn_prune_groups *g);
void cnn_prune_groups_free(cnn_prune_groups *g);
/* 1 when conv layer i may lose output channels: groups 1, not frozen, an activation with f(0) = 0, not the
 * classifier (the last layer with weights). */
int cnn_prune_conv_can_shrink(const cnn_net *net, int i);

/* "structure=... initial=... target=... begin=... end=... frequency=..." for the checkpoint's training settings. */
void cnn_prune_describe(const cnn_prune_config *cfg, char *buf, size_t size);

#endif
