/* cnn.c — benchmarking a network on synthetic data: training-step and inference speed, per-layer forward and
 * backward times, FLOP counts, and the machine's sgemm peak to measure them against. `cnn bench` is built on
 * this.
 *
 * Inputs are uniform random images of the model's input shape and uniform random labels, staged once: the
 * data pipeline is not measured. A training step is forward, softmax cross-entropy, backward and an optimizer
 * update (Adam by default; lr 1e-3, the defaults of cnn_train_config, e.g. SGD momentum 0.9); inference is the eval-mode forward and the softmax. Times are wall-clock
 * seconds between backend syncs, so they hold on any backend. */
#ifndef CNN_BENCH_H
#define CNN_BENCH_H

#include <stdint.h>

#include "cnn/net.h"
#include "cnn/status.h"
#include "cnn/train.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { CNN_BENCH_TRAIN = 1, CNN_BENCH_INFER = 2 }; /* cnn_bench_config.modes: a bit set */

typedef struct cnn_bench_config {
    int batch;     /* images per step */
    int modes;     /* CNN_BENCH_TRAIN | CNN_BENCH_INFER */
    int warmup;    /* untimed steps first: primitives built, memory touched, caches warm */
    int iters;     /* timed steps per repeat */
    int repeats;   /* training: one time per repeat (synced once at its end), step time = time / iters;
                      inference: every call is timed on its own (synced), iters * repeats of them */
    int classes;   /* labels drawn from [0, classes); 0: the model's outputs */
    int per_layer; /* 1: afterwards, iters more steps with every layer timed between backend syncs */
    uint64_t seed; /* weights are the net's; this seeds the images and labels */
    cnn_optimizer_kind optimizer; /* the training step's update */
} cnn_bench_config;

/* batch 64, both modes, warm-up 3, 10 iterations, 5 repeats, classes from the model, no per-layer, seed 1, Adam. */
CNN_API void cnn_bench_config_defaults(cnn_bench_config *cfg);
/* cnn_bench_config.modes from "train", "infer" or "both"; an unknown name gives CNN_ERR_INVALID_ARG with a message
 * listing them. */
CNN_API cnn_status cnn_bench_modes_parse(const char *name, int *modes);
/* The name cnn_bench_modes_parse takes for a bit set; "?" for one it does not name. */
CNN_API const char *cnn_bench_modes_name(int modes);

typedef struct cnn_bench_layer {
    char name[64];           /* the layer's name ("conv2d_1"), or "loss", "optimizer" */
    char type[32];           /* "Conv2D", ..., "SoftmaxCrossEntropy", "Adam" */
    double fwd_ms, bwd_ms;   /* medians over the profiled steps; bwd_ms < 0: not measured (inference only) */
    double fwd_gflop;        /* per batch, 2 x multiply-adds (convolutions and dense layers; 0 for the rest) */
    double bwd_gflop;        /* backward data (when the input needs a gradient) + backward weights */
} cnn_bench_layer;

typedef struct cnn_bench_result {
    int batch, classes;
    int ran_train, ran_infer;
    double train_step_ms_median, train_step_ms_min, train_images_per_sec; /* per step of `batch` images */
    double infer_ms_median, infer_ms_min, infer_images_per_sec;          /* per forward of `batch` images */
    double fwd_gflop, train_gflop; /* whole network per batch: forward; forward + backward */
    double train_loss;             /* mean loss of the last training step (finite when the step computed) */
    int nlayers;                   /* per_layer: layers with work (views left out), then loss and optimizer */
    cnn_bench_layer *layers;       /* owned by the result; NULL without per_layer */
} cnn_bench_result;

/* Runs the benchmark on `net` (on its backend). The net's weights change (training steps). */
CNN_API cnn_status cnn_bench_run(cnn_net *net, const cnn_bench_config *cfg, cnn_bench_result **out);
CNN_API void cnn_bench_result_destroy(cnn_bench_result *result);

/* The machine's single-precision matrix-multiply rate in GFLOP/s: the best of `repeats` square sgemm calls of
 * size n (after one warm-up call) through oneDNN on the host, with the CPU backend's threads. Allocates
 * 3 n^2 floats while it runs. */
CNN_API cnn_status cnn_bench_sgemm_peak(int n, int repeats, double *gflops);

/* Threads of the CPU backend (OpenMP and oneDNN) for work started from the calling thread; call before
 * creating the backend. The default is OMP_NUM_THREADS, else the number of cores. */
CNN_API cnn_status cnn_set_num_threads(int n);
CNN_API int cnn_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
