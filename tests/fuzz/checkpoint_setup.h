/* The training run that the checkpoint harness resumes (tests/fuzz/fuzz_checkpoint.c), shared with the seed
 * generator (make_seeds.c) so that the seed checkpoints were written by exactly this run.
 *
 * A resume checks that the checkpoint was written with the same settings and data as the run that resumes it (a
 * fingerprint of the configuration, the training set's size, image shape and labels): a harness resuming with
 * anything else would stop there and never reach the restore of the optimizer, the position and the history. */
#ifndef CNN_TESTS_FUZZ_CHECKPOINT_SETUP_H
#define CNN_TESTS_FUZZ_CHECKPOINT_SETUP_H

#include <stdint.h>
#include <string.h>

#include "cnn/train.h"

/* Samples in the training set. */
#define FUZZ_CKPT_SAMPLES 4
/* Epochs of the run; a checkpoint of a later epoch is refused. */
#define FUZZ_CKPT_EPOCHS 3

/* The settings: the defaults, with a small batch, the best weights kept (their tensors are in the checkpoint),
 * and no output. */
static inline void fuzz_checkpoint_config(cnn_train_config *cfg)
{
    cnn_train_config_defaults(cfg);
    cfg->epochs = FUZZ_CKPT_EPOCHS;
    cfg->batch_size = 2;
    cfg->seed = 1;
    cfg->restore_best_weights = 1;
    cfg->progress = NULL;
    cfg->warnings = NULL;
    cfg->workers = 1;
}

/* The training set's labels for a network of `outputs` classes; its images are the network's input shape. */
static inline void fuzz_checkpoint_labels(int outputs, int32_t labels[FUZZ_CKPT_SAMPLES])
{
    for (int i = 0; i < FUZZ_CKPT_SAMPLES; i++) labels[i] = outputs > 0 ? i % outputs : 0;
}

#endif
