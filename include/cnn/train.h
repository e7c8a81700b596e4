/* cnn.c — training and evaluation. */
#ifndef CNN_TRAIN_H
#define CNN_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/data.h"
#include "cnn/net.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cnn_optimizer_kind {
    CNN_OPTIM_ADAM = 0,
    CNN_OPTIM_SGD,     /* with momentum, optionally Nesterov (PyTorch's formulation) */
    CNN_OPTIM_ADAMW,   /* Adam with decoupled weight decay (Loshchilov & Hutter 2019) */
    CNN_OPTIM_RMSPROP, /* Tieleman & Hinton 2012, PyTorch's formulation (eps outside the square root) */
} cnn_optimizer_kind;

typedef enum cnn_lr_schedule {
    CNN_LR_CONSTANT = 0,
    CNN_LR_STEP,   /* lr * gamma^floor(epoch / step_epochs) */
    CNN_LR_COSINE, /* lr * (1 + cos(pi * epoch / epochs)) / 2 after the warm-up (Loshchilov & Hutter 2017) */
} cnn_lr_schedule;

typedef struct cnn_epoch_stats {
    int epoch;             /* 1-based */
    double loss;           /* mean training loss over the epoch */
    double accuracy;       /* training accuracy over the epoch */
    int has_val;
    double val_loss, val_accuracy;
    double seconds;        /* wall time of the epoch's training steps */
    double images_per_sec; /* training images / seconds */
    double lr;             /* the learning rate of the epoch */
} cnn_epoch_stats;

typedef void (*cnn_epoch_callback)(const cnn_epoch_stats *stats, void *user);

typedef struct cnn_train_config {
    int epochs;
    int batch_size;
    cnn_optimizer_kind optimizer;
    float lr;
    float momentum;       /* SGD */
    int nesterov;         /* SGD */
    float beta1, beta2, eps; /* Adam, AdamW; eps also RMSprop's */
    float rho;            /* RMSprop's squared-gradient average (0.9, Keras' default) */
    float weight_decay;   /* L2 added to the gradient (SGD, Adam, RMSprop); decoupled decay for AdamW */
    /* learning-rate schedule, evaluated once per epoch (0-based e): warm-up, then the schedule, times the
     * plateau factor; cnn_lr_at computes it */
    cnn_lr_schedule lr_schedule;
    int lr_step_epochs;   /* CNN_LR_STEP: epochs per decay (default 10) */
    float lr_gamma;       /* CNN_LR_STEP: decay factor (default 0.1) */
    int warmup_epochs;    /* linear warm-up: lr * (e + 1) / (warmup + 1) for e < warmup */
    int reduce_on_plateau;   /* 1: lr *= plateau_factor after plateau_patience epochs without a lower val loss */
    int plateau_patience;    /* default 2 */
    float plateau_factor;    /* default 0.1 */
    float clip_norm;      /* > 0: gradients scaled so that their global L2 norm is at most this */
    float label_smoothing;      /* in [0, 1) */
    const float *class_weights; /* num outputs floats, or NULL */
    int balanced_class_weights; /* 1: class_weights = n / (classes * count(class)) from the training labels */
    int deterministic;    /* 1: bit-identical runs for one seed (README, "Reproducibility"); the CPU backend always is */
    uint64_t seed;        /* shuffling */
    FILE *progress;       /* Keras-style progress bar goes here; NULL for silence */
    cnn_epoch_callback on_epoch_end;
    void *user;
} cnn_train_config;

/* epochs 10, batch 64, Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8 as Kingma & Ba and PyTorch), SGD momentum 0.9, seed 0, progress
 * on stderr. */
void cnn_train_config_defaults(cnn_train_config *cfg);

/* The learning rate of 0-based epoch `epoch` before the plateau factor. */
float cnn_lr_at(const cnn_train_config *cfg, int epoch);

/* Trains `net` on `train` (images in [0, 1]; the net applies its own normalization), evaluating on `val` (may be
 * NULL) after each epoch. `history` (may be NULL) receives cfg->epochs entries. */
cnn_status cnn_train(cnn_net *net, const cnn_dataset *train, const cnn_dataset *val, const cnn_train_config *cfg,
                     cnn_epoch_stats *history);

typedef struct cnn_metrics {
    int num_classes;
    int64_t n;
    double loss, accuracy;
    int64_t *confusion;    /* num_classes x num_classes, row = true class, column = predicted */
    double *precision, *recall, *f1; /* per class */
    int64_t *support;      /* true samples per class */
    double macro_precision, macro_recall, macro_f1;
} cnn_metrics;

/* Loss, accuracy, confusion matrix and per-class precision, recall and F1 of `net` on `ds`. */
cnn_status cnn_evaluate(cnn_net *net, const cnn_dataset *ds, int batch_size, cnn_metrics **out);
void cnn_metrics_destroy(cnn_metrics *m);
/* Prints the metrics as a report: totals, a per-class table and the confusion matrix. */
void cnn_metrics_print(const cnn_metrics *m, const cnn_net *net, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
