/* The trainer's state between steps, and checkpoints of it (internal).
 *
 * Everything that decides what training does next lives in cnn_train_state (plus the weights, the optimizer's
 * moments and step, and net->step, which seeds dropout): a checkpoint writes all of it, and a run resumed from it
 * continues bit for bit as the uninterrupted run would have (README, "Checkpoints and resume").
 *
 * Every random choice of training is a function of a seed and a position, so that the position is all the
 * RNG state there is: the loader's sample order of epoch e and each image's augmentation depend on (seed, e,
 * draw), dropout masks on (layer seed, step, element), the layer seeds on the network's seed.
 *
 * A checkpoint is a model file (core/nn/model_file.h) in the format "cnn.c checkpoint" with more tensors,
 *
 *     optimizer/m/<param>, optimizer/v/<param>   the optimizer's moments (those it has)
 *     best/<tensor>                              with restore_best_weights: every weight at the best epoch
 *     prune/mask/<param>                         with pruning: the masks (u8, 1 = kept)
 *
 * and metadata (numbers as text, exact: %.17g for doubles): the position (epoch, epoch_started, samples_done,
 * step, optimizer_step), the running sums of the epoch, the monitors, the history as JSON, the
 * training settings that change the arithmetic ("train_config", compared on resume), the program's settings as
 * it gave them ("run_args", when given: not compared, cnn train --resume continues with them), FP16's loss scale and
 * its clean-step count, the network's seed (dropout masks) and a checksum. The weights are the F32 master
 * weights; mixed precision's 16-bit copies are derived from them after a restore. New state joins as new "<group>/<name>" tensors or metadata keys;
 * a reader ignores what it does not know. */
#ifndef CNN_CORE_CHECKPOINT_H
#define CNN_CORE_CHECKPOINT_H

#include <stdint.h>

#include "cnn/train.h"
#include "core/io/safetensors.h"
#include "core/nn/optim.h"

#define CNN_CHECKPOINT_VERSION "1"
/* The files of a checkpoint directory: one per step written, and the best epoch's. */
#define CNN_CHECKPOINT_NAME "ckpt-%012lld.safetensors"
#define CNN_CHECKPOINT_BEST "best.safetensors"

typedef struct cnn_train_state {
    /* where the run is */
    int epoch;              /* epochs completed */
    int epoch_started;      /* 1: samples_done draws of the next epoch are trained on (the running sums hold them) */
    int64_t samples_done;
    double loss_sum;        /* the running sums of the epoch in progress */
    int64_t correct, seen;
    int64_t n;              /* draws per epoch (the loader's epoch size) */
    /* the monitors */
    float plateau_scale;    /* reduce-on-plateau's factor on the schedule's learning rate */
    double plateau_best;
    int plateau_wait;
    double best;            /* early stopping, save-best and the best checkpoint */
    int best_epoch;         /* 1-based; 0: none yet */
    int wait;
    int finished;           /* early stopping ended the run */
    float *best_weights;    /* restore_best_weights: every saved tensor at best_epoch, concatenated; or NULL */
    int64_t best_weights_len;
    cnn_epoch_stats *history; /* cfg->epochs entries */
    double run_started;     /* wall clock at the start of the run: names the TensorBoard files */
    struct cnn_pruner *pruner; /* pruning's masks (core/compress/prune.h), or NULL */
} cnn_train_state;

/* Allocates the history, sets the monitors to "nothing yet". */
cnn_status cnn_train_state_init(cnn_train_state *s, const cnn_train_config *cfg, int64_t n);
void cnn_train_state_free(cnn_train_state *s);

/* The number of floats every saved tensor of the net takes (the size of best_weights). */
int64_t cnn_net_saved_floats(const cnn_net *net);
/* Copies every saved tensor to the host (dst) or back (src), in model-file order. */
cnn_status cnn_net_snapshot(const cnn_net *net, float *dst);
cnn_status cnn_net_restore_snapshot(cnn_net *net, const float *src);

/* Writes a checkpoint of the whole state to `path`. */
cnn_status cnn_checkpoint_write(const char *path, const cnn_net *net, const cnn_optimizer *opt,
                                const cnn_train_state *s, const cnn_train_config *cfg, const cnn_dataset *train);

/* Opens a checkpoint for resuming: verifies it, checks that it holds net's definition and was written with the
 * same settings and data (naming what differs), and restores the weights and the frozen layers. */
cnn_status cnn_checkpoint_open(const char *path, cnn_net *net, const cnn_train_config *cfg,
                               const cnn_dataset *train, cnn_st_file **out);
/* Restores the optimizer's state and the trainer's from an opened checkpoint. */
cnn_status cnn_checkpoint_restore(const cnn_st_file *f, const char *path, cnn_net *net, cnn_optimizer *opt,
                                  cnn_train_state *s, const cnn_train_config *cfg);

/* Writes `path` as the newest checkpoint of `dir`, then keeps the newest cfg->keep_checkpoints: older
 * ckpt-*.safetensors are removed, files of a step beyond this one (an abandoned future: refused on resume) are
 * renamed *.stale, and temporary files left by a killed writer are removed. */
cnn_status cnn_checkpoint_prune(const char *dir, int64_t step, int keep);

/* ---- callbacks (core/train/callbacks.c) ---- */

/* Rewrites the CSV log: a header and one row per epoch of history[0..n). */
cnn_status cnn_csv_log_write(const char *path, const cnn_epoch_stats *history, int n);
/* Rewrites the TensorBoard event files of the run started at `run_started` (seconds since 1970) under
 * dir/train and, when an epoch has validation metrics, dir/validation. */
cnn_status cnn_tensorboard_write(const char *dir, double run_started, const cnn_epoch_stats *history, int n);
/* Writes a PNG of the loss and accuracy curves (training, and validation when present). */
cnn_status cnn_plot_write(const char *path, const cnn_epoch_stats *history, int n);

/* Seconds since 1970, UTC. */
double cnn_wall_seconds(void);

#endif
