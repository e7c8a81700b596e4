/* Optimizers: they own their state (momentum, Adam moments, RMSprop averages) per parameter and update through
 * backend ops. */
#ifndef CNN_CORE_OPTIM_H
#define CNN_CORE_OPTIM_H

#include "cnn/train.h"
#include "core/net.h"

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

/* What a training step does after backward (core/train.c): under FP16, the overflow check and the loss scale's
 * update (a step with overflowed gradients is skipped and counted in *skipped, which may be NULL); then clipping
 * (clip_norm > 0) and the optimizer's update. */
cnn_status cnn_train_update(cnn_net *net, cnn_optimizer *opt, float clip_norm, int64_t *skipped);

/* One training step on the staged batch: forward, the loss, backward, cnn_train_update, net->step + 1. cnn_train's
 * loop and cnn_trainer_step both run it (core/step.c). */
cnn_status cnn_train_batch(cnn_net *net, cnn_optimizer *opt, const cnn_train_config *cfg, int64_t *skipped);

/* The settings' ranges (cnn_train and cnn_trainer_create refuse what is out of them, naming it). */
cnn_status cnn_train_check_config(const cnn_train_config *cfg);

#endif
