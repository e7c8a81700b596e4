/* The network: a directed acyclic graph of layers in topological order (each layer names its inputs; the
 * default is the previous line), the activation and gradient buffers, and the steps the trainer drives (stage a
 * batch, forward, loss, backward). */
#ifndef CNN_CORE_NET_H
#define CNN_CORE_NET_H

#include "cnn/data.h"
#include "cnn/net.h"
#include "core/nn/layer.h"

struct cnn_net {
    cnn_backend *backend;
    char *definition;      /* the model text, kept for model files */
    char *source;          /* where it came from, for messages */
    cnn_shape input;       /* (H, W, C) */
    cnn_layer **layers;
    int nlayers;
    int output_softmax;    /* the last layer's "softmax": its output is logits, probabilities come from the loss */
    uint64_t seed;         /* initialization seed; layers derive their dropout seeds from it */
    uint64_t step;         /* training steps taken: dropout masks differ per step (cnn_train advances it) */
    float label_smoothing; /* loss options, set by the trainer */
    cnn_precision precision; /* cnn_net_set_precision; FP32 by default */
    cnn_dtype compute;     /* activations and gradients: F32, or F16 / BF16 under mixed precision */
    float loss_scale;      /* the loss (and so every gradient) is multiplied by this; 1 except under FP16 */
    int scale_clean_steps; /* FP16: steps without an overflow since the scale last changed */
    cnn_tensor *input_lp;  /* the staged batch (input_t, always F32) cast to `compute`, when that is not F32 */
    cnn_tensor *class_weights; /* (K) or NULL */

    int capacity;          /* batch size the buffers hold */
    int batch;             /* current batch size */
    cnn_tensor *input_t;   /* (N, H, W, C) */
    cnn_tensor **acts;     /* acts[i]: output of layer i (a view for view layers) */
    cnn_tensor **grads;    /* grads[i]: gradient w.r.t. acts[i]; NULL where nothing upstream needs it */
    cnn_tensor **gscratch; /* where a second consumer's gradient goes before it is added in (largest act each) */
    int nscratch;
    cnn_tensor **gpool;    /* the memory of grads[]: gradients whose lifetimes do not overlap share a buffer */
    int npool;
    cnn_tensor *labels;    /* (N) i32 */
    cnn_tensor *probs;     /* (N, K) */
    cnn_tensor *losses;    /* (N) */
    float *host_batch;     /* (N, H, W, C) staging for gather + normalization */
    int32_t *host_labels;  /* (N) */
    /* asynchronous uploads (backends with write_async): two device buffers each, used in turn, into which the
     * loader's next batch is copied while the current one computes; then copied into input_t / labels on the
     * compute stream (views of input_t stay valid) */
    cnn_tensor *input_spare[2], *labels_spare[2];
    int spare_next;        /* the buffer the next upload goes to */
    int spare_ready;       /* the buffer holding the last upload, and its batch size; -1: none */
    int spare_n;

    /* What the memory checks of cnn_net_set_batch count (cnn_net_set_memory_use): inference by default; training
     * with the optimizer's state while the trainer or the benchmark runs one. */
    int memory_training;
    int memory_slots;

    char **class_names;    /* num outputs entries or NULL */
    int has_norm;
    float *norm_mean, *norm_std; /* input channels each */
    int resize_h, resize_w;      /* images are resized to this, then centre-cropped to the input; 0: none */
    /* The training set's profile (cnn_net_set_data_profile): what the model server compares its traffic with */
    int has_profile;
    float *profile_mean, *profile_std; /* input channels each, in the [0, 1] pixel scale before normalization */
    float *class_freq;                 /* num outputs entries, summing to 1 */

    /* Quantization-aware training (core/nn/qat.c): the definition's `qat` line, and the host state of its fake
     * quantization (made at the first forward) */
    int qat;
    struct cnn_qat *qat_state;

    /* Profiling (cnn_bench_run with per_layer): when set, forward and backward sync the backend around every
     * layer and store its seconds here (nlayers each; views get 0); backward's includes the gradient sums. */
    double *prof_fwd, *prof_bwd;

    /* Data-parallel training (core/train/dist.c): when set, backward calls it after layer i's backward (layer i and
     * every later one are done, their weight gradients final: penalties aside); a failure stops backward. */
    cnn_status (*grads_ready)(void *user, int layer);
    void *grads_ready_user;
};

/* Parses the definition text into net->layers (no parameters yet). Defined in core/model_text.c. */
cnn_status cnn_model_parse(cnn_net *net, const char *text, const char *source);

/* The definition with its repeat blocks unrolled (the names they suffix spelled out, a 'name' line for each
 * iteration's name=): one line per layer or directive, parsing to the same network. *layer_line (nlayers entries)
 * gives each layer's 0-based line in it. Both malloc'ed. Defined in core/model_text.c. */
cnn_status cnn_model_expand(const char *text, const char *source, char **expanded, int **layer_line, int *nlayers);

/* Reads a definition file (text, at most 1 MiB) into *text (malloc'ed). */
cnn_status cnn_read_definition(const char *path, char **text);

/* Sets the network's seed and the per-layer seeds derived from it (dropout masks); checkpoints restore it. */
void cnn_net_set_seed(cnn_net *net, uint64_t seed);

/* The layer whose memory layer i's output is (following views: flatten, softmax, a fused add); -1: the network
 * input. */
int cnn_net_view_root(const cnn_net *net, int i);
/* The layers whose outputs layer l reads (-1: the network input), in the order its forward and backward get
 * them (its inputs, then a fused batchnorm's residual); returns how many (at most CNN_LAYER_MAX_INPUTS). */
int cnn_net_layer_sources(const cnn_layer *l, int *src);

/* Shape inference for parsed layers: their output shapes and declared parameters (no memory: cnn_net_from_text
 * allocates them once the budget allows), sizes checked in 64-bit arithmetic; then the rewrites. */
cnn_status cnn_net_build(cnn_net *net);

/* Parses and builds a network that only describes: shapes, names and parameter shapes, no memory on any backend
 * (backend may be NULL). What the memory estimate plans on; cnn_net_from_text goes on to allocate. Such a network
 * may be summarized, counted and estimated, nothing else. */
cnn_status cnn_net_describe(const char *text, const char *source, cnn_backend *backend, uint64_t seed,
                            cnn_net **out);

/* The activation and gradient buffers, per image (cnn_net_set_batch allocates them times the batch size; the
 * memory estimate counts them). */
typedef struct cnn_buffer_plan {
    char *has_grad;     /* per layer: its output gets a gradient (a view: when its source's does) */
    int *slot;          /* per layer: the pooled buffer its gradient lives in (-1: none, or a view) */
    int64_t *pool;      /* per pooled buffer: elements per image */
    int npool;
    int nscratch;       /* scratch gradients (a second consumer's, before it is added in) */
    int64_t largest;    /* elements per image of the largest non-view output: each scratch gradient's size */
} cnn_buffer_plan;
cnn_status cnn_net_plan_buffers(const cnn_net *net, cnn_buffer_plan *plan);
void cnn_buffer_plan_free(cnn_buffer_plan *plan);

/* What cnn_net_set_batch checks against the memory limit before it allocates: training with `optimizer_slots`
 * tensors of optimizer state per weight (training = 1), or inference (0, the default). */
void cnn_net_set_memory_use(cnn_net *net, int training, int optimizer_slots);
/* CNN_OK when the network fits in the memory limit (cnn_memory_limit) at `batch` in that mode; else
 * CNN_ERR_NO_MEMORY with cnn_memory_check's message, prefixed with the source. Allocates nothing on the backend. */
cnn_status cnn_net_check_memory(const cnn_net *net, int batch, int training, int optimizer_slots);

/* Makes the buffers hold a batch of n (growing when needed) and sets every batch dim to n. */
cnn_status cnn_net_set_batch(cnn_net *net, int n);

/* Gathers samples idx[0..n) of ds (all of 0..n when idx is NULL, starting at `first`), applies the model's
 * normalization and uploads images and labels. */
cnn_status cnn_net_stage_batch(cnn_net *net, const cnn_dataset *ds, const int64_t *idx, int64_t first, int n);

/* Uploads n ready images (already normalized: the loader applies the model's normalization) and labels. */
cnn_status cnn_net_stage_host(cnn_net *net, const float *images, const int32_t *labels, int n);
/* 1 when the backend uploads asynchronously (write_async); then cnn_net_upload_async may stage the next batch
 * while the current one computes. */
int cnn_net_can_upload_async(const cnn_net *net);
/* Queues the upload of the next batch (images and labels in page-locked memory that stays unchanged until the
 * batch's step was waited for) into a spare buffer, without touching the current batch. Two uploads may be
 * queued before a step was waited for, no more (the spares are used in turn). */
cnn_status cnn_net_upload_async(cnn_net *net, const float *images, const int32_t *labels, int n);
/* Makes the last cnn_net_upload_async the current batch (device copies queued on the compute stream). */
cnn_status cnn_net_stage_uploaded(cnn_net *net);

cnn_status cnn_net_forward(cnn_net *net, int training);
/* Softmax cross-entropy of the last layer's output against the staged labels: fills net->probs and
 * net->losses, and with `with_grad` the last gradient (the mean loss's). */
cnn_status cnn_net_loss(cnn_net *net, int with_grad);
/* Backward through every layer in reverse order; gradients of outputs with several consumers are summed. Then
 * adds the layers' l1/l2 penalty gradients. */
cnn_status cnn_net_backward(cnn_net *net);

/* Rewrites the 16-bit weight copies from the f32 master weights (after they were loaded or changed from outside
 * the optimizer); nothing to do at FP32 and TF32. */
cnn_status cnn_net_sync_compute_weights(cnn_net *net);

/* Freezes exactly the first `count` layers (cnn_net_freeze's core; checkpoints restore it). */
cnn_status cnn_net_freeze_count(cnn_net *net, int count);

/* Non-trainable element count: state (batchnorm statistics) and the weights of frozen layers. */
int64_t cnn_net_state_count(const cnn_net *net);

/* Loss options for training: label smoothing in [0, 1) and per-class weights (k floats, or NULL for none). */
cnn_status cnn_net_set_loss_options(cnn_net *net, float label_smoothing, const float *class_weights, int k);

#endif
