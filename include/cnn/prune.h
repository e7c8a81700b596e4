/* cnn.c — magnitude pruning during training (README, "Pruning"): the schedule, the structures, and the strip of
 * channel-pruned convolutions into a physically smaller model. */
#ifndef CNN_PRUNE_H
#define CNN_PRUNE_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/net.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cnn_prune_structure {
    CNN_PRUNE_UNSTRUCTURED = 0, /* single weights, the smallest |w| of each layer */
    CNN_PRUNE_CHANNEL,          /* whole channel groups of convs, across adds and concats (README "Pruning") */
    CNN_PRUNE_2_4,              /* in every group of 4 consecutive input weights of an output unit, the 2 smallest */
    CNN_PRUNE_STRUCTURE_COUNT
} cnn_prune_structure;

/* TF-MOT's PolynomialDecay schedule (power 3): between begin_step B and end_step E, every `frequency` steps (and at
 * E itself), each pruned layer is set to the sparsity
 *     s(t) = s_f + (s_i - s_f) * (1 - (t - B) / (E - B))^3
 * of its weights, zeroing those of least magnitude; the masks stay in force on every step after. */
typedef struct cnn_prune_config {
    int enabled;                 /* 1: prune while training */
    cnn_prune_structure structure;
    float initial_sparsity;      /* s_i in [0, 1) (default 0) */
    float target_sparsity;       /* s_f in [0, 1) (default 0.5); 2:4 is 0.5 by construction */
    int64_t begin_step;          /* B >= 0 (default 0) */
    int64_t end_step;            /* E > B; < 0: three quarters of the run's steps (the default) */
    int64_t frequency;           /* F >= 1 (default 100, TF-MOT's) */
} cnn_prune_config;

/* Off; unstructured, 0 -> 0.5, from step 0 to 3/4 of the run, every 100 steps. */
CNN_API void cnn_prune_config_defaults(cnn_prune_config *cfg);
/* CNN_ERR_INVALID_ARG naming the setting out of range (nothing to check when not enabled). */
CNN_API cnn_status cnn_prune_check(const cnn_prune_config *cfg);
/* "unstructured", "channel" or "2:4". */
CNN_API cnn_status cnn_prune_structure_parse(const char *name, cnn_prune_structure *out);
CNN_API const char *cnn_prune_structure_name(cnn_prune_structure s);
/* E of a run of total_steps steps: cfg->end_step, or (end_step < 0) max(B + 1, 3/4 of total_steps). */
CNN_API int64_t cnn_prune_end_step(const cnn_prune_config *cfg, int64_t total_steps);
/* The schedule's sparsity at step t (E resolved: end_step >= 0); 0.5 from B on for 2:4. */
CNN_API double cnn_prune_sparsity_at(const cnn_prune_config *cfg, int64_t step);
/* 1 when the masks are recomputed at step t: B <= t <= E and ((t - B) % F == 0 or t == E). */
CNN_API int cnn_prune_updates_at(const cnn_prune_config *cfg, int64_t step);

/* Zero weights of layer `layer`'s weight tensor (conv and dense layers; 0 of 0 for the others). */
CNN_API cnn_status cnn_net_layer_sparsity(const cnn_net *net, int layer, int64_t *zeros, int64_t *total);

/* A network without the pruned channels of its convolutions. Channels that meet are removed together (README
 * "Pruning", channel groups): through batchnorms, activations with f(0) = 0, dropout, pooling and flatten, across the
 * inputs of residual adds and into a concat's output at the input's offset. A group whose convs' filters and biases
 * and batchnorms' gamma and beta are all exactly zero loses the channel in every member (at least one channel
 * stays per conv), and the convs and dense layers that read it lose the matching inputs. The new definition is the
 * old one with its repeat blocks unrolled and the narrower filter counts; it computes the same outputs up to
 * summation order. *removed receives the conv channels removed (may be NULL). CNN_ERR_INVALID_ARG when no channel
 * can go. */
CNN_API cnn_status cnn_net_strip(const cnn_net *net, cnn_backend *backend, cnn_net **out, int64_t *removed);

/* cnn_net_save with the file deflated by zlib (README "Pruning": the zeros of a pruned model take little room):
 * every loader reads it (cnn_net_load, cnn eval/predict/summary/serve, --init-from); tools outside cnn.c that
 * read safetensors do not. */
CNN_API cnn_status cnn_net_save_compressed(const cnn_net *net, const char *path);

#ifdef __cplusplus
}
#endif
#endif
