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

typedef enum cnn_optimizer_kind { CNN_OPTIM_ADAM = 0, CNN_OPTIM_SGD } cnn_optimizer_kind;

typedef struct cnn_epoch_stats {
    int epoch;             /* 1-based */
    double loss;           /* mean training loss over the epoch */
    double accuracy;       /* training accuracy over the epoch */
    int has_val;
    double val_loss, val_accuracy;
    double seconds;        /* wall time of the epoch's training steps */
    double images_per_sec; /* training images / seconds */
} cnn_epoch_stats;

typedef void (*cnn_epoch_callback)(const cnn_epoch_stats *stats, void *user);

typedef struct cnn_train_config {
    int epochs;
    int batch_size;
    cnn_optimizer_kind optimizer;
    float lr;
    float momentum;       /* SGD */
    int nesterov;         /* SGD */
    float beta1, beta2, eps; /* Adam */
    float weight_decay;   /* L2 for SGD and Adam */
    uint64_t seed;        /* shuffling */
    FILE *progress;       /* Keras-style progress bar goes here; NULL for silence */
    cnn_epoch_callback on_epoch_end;
    void *user;
} cnn_train_config;

/* epochs 10, batch 64, Adam (lr 1e-3, betas 0.9/0.999, eps 1e-7 as Keras), SGD momentum 0.9, seed 0, progress
 * on stderr. */
void cnn_train_config_defaults(cnn_train_config *cfg);

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
