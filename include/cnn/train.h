/* cnn.c — training and evaluation. */
#ifndef CNN_TRAIN_H
#define CNN_TRAIN_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/data.h"
#include "cnn/net.h"
#include "cnn/pipeline.h"
#include "cnn/prune.h"
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

/* The metric the callbacks watch (early stopping, save-best, the best checkpoint, reduce-on-plateau), as Keras'
 * `monitor`: losses improve downwards, accuracies upwards. The val_ metrics fall back to the training ones when
 * there is no validation set. */
typedef enum cnn_monitor {
    CNN_MONITOR_VAL_LOSS = 0,
    CNN_MONITOR_VAL_ACCURACY,
    CNN_MONITOR_LOSS,
    CNN_MONITOR_ACCURACY,
} cnn_monitor;

/* L-infinity adversarial attacks (cnn/explain.h has the functions): eps and alpha in [0, 1] pixel units, before
 * the model's normalization. */
typedef enum cnn_attack_method {
    CNN_ATTACK_FGSM = 0, /* Goodfellow et al. 2015: x + eps * sign(grad), one step */
    CNN_ATTACK_PGD,      /* Madry et al. 2018: `steps` steps of alpha * sign(grad), each projected on the eps-ball */
    CNN_ATTACK_METHOD_COUNT
} cnn_attack_method;

typedef struct cnn_attack_config {
    cnn_attack_method method;
    float eps;         /* the L-infinity radius, in [0, 1] */
    int steps;         /* PGD: iterations (default 10) */
    float alpha;       /* PGD: the step; <= 0: 2.5 * eps / steps (Madry et al.) */
    int random_start;  /* PGD: start from a uniform point of the eps-ball (clipped to [0, 1]) */
    uint64_t seed;     /* the random start of image i is drawn from (seed, its index) alone */
} cnn_attack_config;

typedef struct cnn_epoch_stats {
    int epoch;             /* 1-based */
    double loss;           /* mean training loss over the epoch */
    double accuracy;       /* training accuracy over the epoch */
    int has_val;
    double val_loss, val_accuracy;
    double seconds;        /* wall time of the epoch's training steps */
    double images_per_sec; /* training images / seconds */
    double lr;             /* the learning rate of the epoch */
    double wall_time;      /* seconds since 1970 (UTC) when the epoch ended: TensorBoard's wall_time */
    double data_wait;      /* seconds the trainer waited for the loader's batches during the epoch */
    int64_t bad_files;     /* bad image files skipped so far */
    int64_t skipped_steps; /* fp16: steps skipped in the epoch because the gradients overflowed */
    float loss_scale;      /* fp16: the loss scale at the end of the epoch (1 otherwise) */
    double sparsity;       /* pruning: share of zero weights among the pruned tensors at the epoch's end; < 0: off */
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

    /* callbacks (Keras' EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, CSVLogger, TensorBoard): one monitored
     * metric; an epoch improves on the best when it beats it by more than min_delta */
    cnn_monitor monitor;         /* default CNN_MONITOR_VAL_LOSS */
    float min_delta;             /* default 0 */
    int early_stopping;          /* 1: stop when early_stopping_patience epochs in a row did not improve */
    int early_stopping_patience; /* default 0: stop at the first epoch that does not improve (Keras) */
    int restore_best_weights;    /* 1: end with the weights (and batchnorm statistics) of the best epoch */
    const char *save_best;       /* a model file written (atomically) whenever the monitored metric improves */
    const char *csv_log;         /* a CSV file, one row per epoch, rewritten after each */
    const char *tensorboard_dir; /* TensorBoard event files in DIR/train and DIR/validation */
    const char *plot;            /* a PNG of the loss and accuracy curves, written when training ends */

    /* checkpoints (README, "Checkpoints and resume"): everything needed to continue exactly, in one safetensors
     * file each, DIR/ckpt-<step>.safetensors, written atomically with a checksum; DIR/best.safetensors holds the
     * best epoch's */
    const char *checkpoint_dir;
    int checkpoint_every;        /* every this many epochs (steps with checkpoint_in_steps); 0: 1 epoch */
    int checkpoint_in_steps;     /* 1: checkpoint_every counts optimizer steps */
    int keep_checkpoints;        /* the newest K are kept (default 3), and best.safetensors */
    const char *resume_from;     /* a checkpoint file (cnn_checkpoint_find) to continue from exactly */
    const char *run_args;        /* the run's settings as a program gave them (cnn train: "--flag value" lines),
                                  * kept in checkpoints for it to continue the run with (cnn_checkpoint_run_args);
                                  * NULL: none. Not compared on resume: the settings that change the arithmetic are */

    /* the data pipeline (cnn/pipeline.h; README, "Data"): batches come from a loader whose worker threads decode,
     * augment and normalize them ahead of the trainer; the order of epoch e depends on (seed, e) alone */
    const cnn_augment *augment;  /* training augmentation; NULL: none */
    cnn_sampler sampler;         /* default CNN_SAMPLER_SHUFFLE; oversample / undersample balance the classes */
    int workers, prefetch;       /* loader threads and ring depth; 0: cnn_loader_default_workers(), 2 per worker */
    int resize_h, resize_w;      /* images are resized to this, then cropped to the model's input (centre; random
                                  * with augment crop); 0: the input size */
    long long max_pixels;        /* image files whose header declares more pixels are bad files; 0: 64 megapixels */
    int strict;                  /* 1: a bad image file stops training; 0: skipped with a warning */
    FILE *warnings;              /* where bad files are reported (default stderr) */

    /* adversarial training (README "Trust"): with `adversarial`, a share adv_ratio of every batch (its first
     * images, the batch being shuffled) is replaced by adversarial versions made against the current weights in
     * inference mode (Goodfellow et al. 2015's mixed FGSM: ratio 0.5; Madry et al. 2018's PGD: ratio 1). Random
     * starts depend on (attack.seed, the image's draw in the run) alone, so that resume stays exact. */
    int adversarial;             /* 1: on */
    cnn_attack_config attack;    /* the attack (cnn_attack_config_defaults, then eps, steps, ...) */
    float adv_ratio;             /* in (0, 1]; 0: 0.5 for FGSM, 1 for PGD */

    /* knowledge distillation (cnn/compress.h; README "Distillation"): with a teacher, the loss is
     * distill_alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - distill_alpha) * cross-entropy,
     * the teacher (caller-owned, same classes and input channels, any architecture and input size) in inference mode
     * on each training batch. Checkpoints record a checksum of it: resume needs the same teacher. */
    cnn_net *teacher;            /* NULL: none */
    float distill_alpha;         /* in [0, 1] (default 0.9) */
    float temperature;           /* T > 0 (default 4) */
    cnn_prune_config prune;      /* magnitude pruning (cnn/prune.h; README "Pruning"); off by default */
    /* data-parallel training (cnn/dist.h; README, "Data-parallel training"): each rank trains on its part of every
     * global batch of (ranks x batch_size) draws and the gradients are averaged across ranks; rank 0 alone writes
     * the outputs (progress, logs, plots, saved models, checkpoints). NULL: one process. */
    struct cnn_dist *dist;
} cnn_train_config;

/* epochs 10, batch 64, Adam (lr 1e-3, betas 0.9/0.999, eps 1e-8 as Kingma & Ba and PyTorch), SGD momentum 0.9, seed 0, progress
 * on stderr, monitor val_loss, 3 checkpoints kept. */
CNN_API void cnn_train_config_defaults(cnn_train_config *cfg);

/* "adam", "adamw", "sgd" or "rmsprop"; an unknown name gives CNN_ERR_INVALID_ARG with a message listing them. */
CNN_API cnn_status cnn_optimizer_parse(const char *name, cnn_optimizer_kind *out);
/* The name cnn_optimizer_parse takes; "?" for a value outside the enum. */
CNN_API const char *cnn_optimizer_name(cnn_optimizer_kind kind);
/* "constant", "step" or "cosine"; an unknown name gives CNN_ERR_INVALID_ARG with a message listing them. */
CNN_API cnn_status cnn_lr_schedule_parse(const char *name, cnn_lr_schedule *out);
/* The name cnn_lr_schedule_parse takes; "?" for a value outside the enum. */
CNN_API const char *cnn_lr_schedule_name(cnn_lr_schedule schedule);
/* "val_loss", "val_accuracy", "loss" or "accuracy"; an unknown name gives CNN_ERR_INVALID_ARG with a message
 * listing them. */
CNN_API cnn_status cnn_monitor_parse(const char *name, cnn_monitor *out);
/* The name cnn_monitor_parse takes; "?" for a value outside the enum. */
CNN_API const char *cnn_monitor_name(cnn_monitor monitor);
/* The tensors the size of the trainable weights that the optimizer keeps (cnn_memory_config.optimizer_slots):
 * Adam and AdamW 2 (the moments), RMSprop 1 (the mean square) or 2 with a momentum, SGD 1 (the velocity) with a
 * momentum, 0 without. */
CNN_API int cnn_optimizer_slots(cnn_optimizer_kind kind, float momentum);

/* The learning rate of 0-based epoch `epoch` before the plateau factor. */
CNN_API float cnn_lr_at(const cnn_train_config *cfg, int epoch);

/* Trains `net` on `train` (images in [0, 1]; the net applies its own normalization), evaluating on `val` (may be
 * NULL) after each epoch. `history` (may be NULL) receives cfg->epochs entries; those of epochs early stopping
 * left out have epoch 0. With cfg->resume_from, the checkpoint's weights, frozen layers, optimizer state,
 * schedule position, RNG state, data position, monitors and history are restored first: the checkpoint must hold
 * net's definition and have been written with the same training settings and data (a differing one is named). */
CNN_API cnn_status cnn_train(cnn_net *net, const cnn_dataset *train, const cnn_dataset *val,
                             const cnn_train_config *cfg, cnn_epoch_stats *history);

/* ---- a training loop of your own (samples/train.c): one step at a time ----
 *
 * A trainer holds the optimizer's state for `net` (cfg: the optimizer and its settings, lr, weight decay, gradient
 * clipping, label smoothing, class weights; the batch size sets the memory checked at creation; the epoch, data,
 * schedule and callback fields are the caller's business). Each step runs forward, the loss, backward and the
 * update on one batch, exactly as a step of cnn_train does (the same function runs both). */
typedef struct cnn_trainer cnn_trainer;
CNN_API cnn_status cnn_trainer_create(cnn_net *net, const cnn_train_config *cfg, cnn_trainer **out);
/* One step on n images (host, NHWC, values in [0, 1]: the net applies its own normalization) with their labels.
 * *loss (may be NULL) receives the batch's mean loss, *correct (may be NULL) how many images the net classified
 * right before the update. n may differ from step to step (buffers grow, within the memory limit). */
CNN_API cnn_status cnn_trainer_step(cnn_trainer *t, const float *images, const int32_t *labels, int n, double *loss,
                                    int *correct);
/* The learning rate of the next steps (a schedule of your own); cfg->lr at first. */
CNN_API cnn_status cnn_trainer_set_lr(cnn_trainer *t, float lr);
CNN_API float cnn_trainer_lr(const cnn_trainer *t);
/* Steps taken (updates skipped by fp16's loss scaling included). */
CNN_API int64_t cnn_trainer_steps(const cnn_trainer *t);
CNN_API void cnn_trainer_destroy(cnn_trainer *t);

typedef struct cnn_metrics {
    int num_classes;
    int64_t n;
    double loss, accuracy;
    int64_t *confusion;    /* num_classes x num_classes, row = true class, column = predicted */
    double *precision, *recall, *f1; /* per class */
    int64_t *support;      /* true samples per class */
    double macro_precision, macro_recall, macro_f1;
    /* computed by cnn_metrics_compute and cnn_evaluate_source_ex (zero and NULL after cnn_evaluate): */
    double weighted_precision, weighted_recall, weighted_f1; /* per-class figures weighted by support (sklearn's
                                                              * average='weighted') */
    int top_k;                /* the k of top_k_accuracy; 0: not computed */
    double top_k_accuracy;    /* share of samples whose label is among the k most probable classes (ties: a class
                               * counts as above the label only when strictly more probable) */
    double *auc;              /* per class: one-vs-rest ROC AUC of its probability (ties count a half); NaN when
                               * the class has no sample or every sample */
    double macro_auc;         /* mean of the defined per-class AUCs (NaN when none is) */
    int ece_bins;             /* equal-width bins of the top probability, right-closed ((b-1)/B, b/B] */
    double ece;               /* expected calibration error: sum_b n_b / n |accuracy_b - confidence_b| (Guo et al.
                               * 2017) */
    int64_t *bin_count;       /* per bin: samples */
    double *bin_accuracy, *bin_confidence; /* per bin: accuracy and mean top probability (0 for an empty bin) */
} cnn_metrics;

/* What cnn_evaluate_source_ex and cnn_metrics_compute add: top_k (default 5, at most the classes) and ece_bins
 * (default 15, Guo et al.'s). */
typedef struct cnn_metrics_options {
    int top_k;
    int ece_bins;
} cnn_metrics_options;

/* ---- checkpoints ---- */

typedef struct cnn_checkpoint_info {
    int epoch;             /* epochs completed */
    int64_t samples_done;  /* draws of the next epoch already trained on */
    int64_t epoch_samples; /* draws in an epoch (the training set's size unless a balancing sampler is used) */
    int64_t step;          /* optimizer steps taken */
    int finished;          /* early stopping ended the run */
} cnn_checkpoint_info;

/* Checks a checkpoint file: a valid safetensors file in the cnn.c checkpoint format whose checksum matches, and,
 * when `net` is not NULL, holding net's definition. `info` (may be NULL) receives its position. */
CNN_API cnn_status cnn_checkpoint_verify(const char *path, const cnn_net *net, cnn_checkpoint_info *info);

/* The newest valid checkpoint of a directory: DIR/ckpt-<step>.safetensors from the highest step down, and
 * DIR/best.safetensors in its place by step. Each refused file (corrupt, truncated, foreign, another model's)
 * gets a line on `log` (may be NULL) saying why, and the next older one is tried. *path receives a new string
 * (free it). CNN_ERR_NOT_FOUND when none is valid. */
CNN_API cnn_status cnn_checkpoint_find(const char *dir, const cnn_net *net, FILE *log, char **path,
                                       cnn_checkpoint_info *info);

/* The run_args (cnn_train_config) a valid checkpoint was written with: *out receives a new string (free it), or
 * NULL when the checkpoint has none (written without, or by an older cnn.c). */
CNN_API cnn_status cnn_checkpoint_run_args(const char *path, char **out);

/* cnn_train on sources (cnn/pipeline.h): in-memory data or image files decoded on demand. The sources must hold
 * labels below the model's outputs; in-memory images must have the model's input shape. */
CNN_API cnn_status cnn_train_source(cnn_net *net, const cnn_source *train, const cnn_source *val,
                                    const cnn_train_config *cfg,
                                    cnn_epoch_stats *history);

/* Loss, accuracy, confusion matrix and per-class precision, recall and F1 of `net` on `ds`. */
CNN_API cnn_status cnn_evaluate(cnn_net *net, const cnn_dataset *ds, int batch_size, cnn_metrics **out);
/* The same on a source; `data` (may be NULL) gives the loader settings (resize, workers, max pixels, strict,
 * warnings); no augmentation is applied. */
CNN_API cnn_status cnn_evaluate_source(cnn_net *net, const cnn_source *src, const cnn_train_config *data,
                                       int batch_size,
                                       cnn_metrics **out);
/* cnn_evaluate_source with the metrics that need every probability: weighted averages, top-k accuracy, per-class
 * ROC AUC, the expected calibration error and its reliability bins. `opt` may be NULL (the defaults). */
CNN_API cnn_status cnn_evaluate_source_ex(cnn_net *net, const cnn_source *src, const cnn_train_config *data,
                                          int batch_size,
                                          const cnn_metrics_options *opt, cnn_metrics **out);
/* Every metric from n samples' class probabilities (n x k, rows summing to 1) and labels; losses (n, may be NULL:
 * -log p[label], at least 1e-30) give the loss. */
CNN_API cnn_status cnn_metrics_compute(const float *probs, const float *losses, const int32_t *labels, int64_t n, int k,
                                       const cnn_metrics_options *opt, cnn_metrics **out);
/* PNG pictures of the metrics: the confusion matrix (rows true, columns predicted; cells shaded by the row's share,
 * with counts) and the reliability diagram (accuracy against confidence per bin, the diagonal, the ECE). The
 * second needs cnn_metrics_compute's bins. */
CNN_API cnn_status cnn_metrics_plot_confusion(const cnn_metrics *m, const cnn_net *net, const char *path);
CNN_API cnn_status cnn_metrics_plot_reliability(const cnn_metrics *m, const char *path);
CNN_API void cnn_metrics_destroy(cnn_metrics *m);
/* Prints the metrics as a report: totals, a per-class table and the confusion matrix. */
CNN_API void cnn_metrics_print(const cnn_metrics *m, const cnn_net *net, FILE *out);

#ifdef __cplusplus
}
#endif
#endif
