/* Optimizers: they own their state (momentum, Adam moments, RMSprop averages) per parameter and update through
 * backend ops. */
#ifndef CNN_CORE_OPTIM_H
#define CNN_CORE_OPTIM_H

#include "cnn/train.h"
#include "core/nn/net.h"

typedef struct cnn_optimizer {
    cnn_train_config cfg;
    cnn_backend *backend;
    int nparams;
    cnn_param **params;
    cnn_tensor **m;  /* SGD velocity / Adam first moment / RMSprop momentum */
    cnn_tensor **v;  /* Adam second moment / RMSprop mean square */
    int64_t step;
    float lr;        /* the learning rate of the next step (the trainer's schedule sets it; cfg.lr at first) */
    float grad_scale; /* the gradients are multiplied by this before use: 1 / the loss scale (1 without one) */
} cnn_optimizer;

cnn_status cnn_optimizer_create(cnn_net *net, const cnn_train_config *cfg, cnn_optimizer **out);
/* Scales every gradient by max_norm / norm when their global L2 norm (of the gradients times grad_scale) exceeds
 * max_norm (PyTorch's clip_grad_norm_); *norm (may be NULL) receives the norm before clipping. */
cnn_status cnn_optimizer_clip(cnn_optimizer *opt, float max_norm, double *norm);
/* One update of every parameter from its grad (times grad_scale); under mixed precision the 16-bit weight copies
 * are rewritten from the updated f32 master weights in the same pass. */
cnn_status cnn_optimizer_step(cnn_optimizer *opt);
/* *finite = 0 when some gradient holds an infinity or a NaN (mixed precision: the step must be skipped and the
 * loss scale lowered), else 1. Synchronizes. */
cnn_status cnn_optimizer_grads_finite(cnn_optimizer *opt, int *finite);
void cnn_optimizer_destroy(cnn_optimizer *opt);

/* What a training step does after backward (core/train/train.c): under FP16, the overflow check and the loss scale's
 * update (a step with overflowed gradients is skipped and counted in *skipped, which may be NULL); then clipping
 * (clip_norm > 0) and the optimizer's update. */
cnn_status cnn_train_update(cnn_net *net, cnn_optimizer *opt, float clip_norm, int64_t *skipped);

/* What cnn_train adds to a step (all NULL for cnn_trainer_step): distillation's loss (the teacher sees `images`,
 * the staged batch as the loader gave it), the average of the gradients across ranks, the pruner's masks. */
struct cnn_distill;
struct cnn_pruner;
typedef struct cnn_step_extras {
    struct cnn_distill *distill;
    const float *images;
    struct cnn_dist *dist;
    struct cnn_pruner *pruner;
} cnn_step_extras;

/* One training step on the staged batch of n images: forward, the loss, backward (none when n is 0: a rank without
 * images still joins the gradients' average), the average across ranks, cnn_train_update, net->step + 1 and the
 * pruner's masks. *updated: whether the weights were updated (not when no rank had images). cnn_train's loop and
 * cnn_trainer_step both run it (core/train/step.c). */
cnn_status cnn_train_batch(cnn_net *net, cnn_optimizer *opt, const cnn_train_config *cfg, const cnn_step_extras *x,
                           int n, int64_t *skipped, int *updated);

/* The settings' ranges (cnn_train and cnn_trainer_create refuse what is out of them, naming it). */
cnn_status cnn_train_check_config(const cnn_train_config *cfg);

#endif
