/* The loader's helpers for the rest of the library (the loader itself is public: include/cnn/pipeline.h). */
#ifndef CNN_CORE_LOADER_H
#define CNN_CORE_LOADER_H

#include "cnn/pipeline.h"
#include "cnn/train.h"

/* The data settings of a training config that every loader of the run shares: the resize, the workers and
 * prefetch depth, the pixel limit, strictness and warnings. Nothing when cfg is NULL. */
void cnn_loader_config_take_data(cnn_loader_config *lc, const cnn_train_config *cfg);

/* The defaults, then batches of batch_size images of net's input shape drawn in order (sequential sampler), with the
 * data settings of cfg (cnn_loader_config_take_data): the start of every loader the library makes for a network. */
void cnn_loader_config_for_net(cnn_loader_config *lc, const cnn_net *net, const cnn_train_config *cfg, int batch_size);

#endif
