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
} cnn_optimizer;

cnn_status cnn_optimizer_create(cnn_net *net, const cnn_train_config *cfg, cnn_optimizer **out);
/* Scales every gradient by max_norm / norm when their global L2 norm exceeds max_norm (PyTorch's
 * clip_grad_norm_); *norm (may be NULL) receives the norm before clipping. */
cnn_status cnn_optimizer_clip(cnn_optimizer *opt, float max_norm, double *norm);
/* One update of every parameter from its grad. */
cnn_status cnn_optimizer_step(cnn_optimizer *opt);
void cnn_optimizer_destroy(cnn_optimizer *opt);

#endif
