/* Optimizers: they own their state (momentum, Adam moments) per parameter and update through backend ops. */
#ifndef CNN_CORE_OPTIM_H
#define CNN_CORE_OPTIM_H

#include "cnn/train.h"
#include "core/net.h"

typedef struct cnn_optimizer {
    cnn_train_config cfg;
    cnn_backend *backend;
    int nparams;
    cnn_param **params;
    cnn_tensor **m;  /* SGD velocity / Adam first moment */
    cnn_tensor **v;  /* Adam second moment */
    int64_t step;
} cnn_optimizer;

cnn_status cnn_optimizer_create(cnn_net *net, const cnn_train_config *cfg, cnn_optimizer **out);
/* One update of every parameter from its grad. */
cnn_status cnn_optimizer_step(cnn_optimizer *opt);
void cnn_optimizer_destroy(cnn_optimizer *opt);

#endif
