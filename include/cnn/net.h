/* cnn.c — networks: built from a model definition text, run forward, saved to and loaded from model files.
 *
 * A model definition is a text file, one layer a line (samples/models/seed_cnn.cnn; residual networks name
 * outputs and add them back, see samples/models/resnet20_32.cnn):
 *
 *     input   28 28 1
 *     conv    32 3 relu
 *     maxpool 2
 *     flatten
 *     dense   10 softmax
 *
 * The reference of the format is in README.md. A model file is one safetensors file holding the weights and,
 * in its __metadata__, the definition text, the class names and the input normalization. */
#ifndef CNN_NET_H
#define CNN_NET_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/backend.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_net cnn_net;

/* Parses a definition and builds the network on `backend` with freshly initialized weights (He normal for
 * layers followed by ReLU, Glorot uniform otherwise; biases zero) drawn from `seed`. `source` names the text
 * in error messages ("seed_cnn.cnn:4: conv: ..."). */
CNN_API cnn_status cnn_net_from_text(const char *text, const char *source, cnn_backend *backend, uint64_t seed,
                                     cnn_net **out);
/* The same, reading the definition from a file. */
CNN_API cnn_status cnn_net_from_file(const char *path, cnn_backend *backend, uint64_t seed, cnn_net **out);
CNN_API void cnn_net_destroy(cnn_net *net);

/* Prints a Keras-style table (layer name and type, output shape, parameter count, inputs) and the totals:
 * trainable, non-trainable (batchnorm running statistics) and their sum. */
CNN_API void cnn_net_summary(const cnn_net *net, FILE *out);

/* Trainable parameters (the non-trainable batchnorm running statistics are not counted). */
CNN_API int64_t cnn_net_param_count(const cnn_net *net);
CNN_API void cnn_net_input_shape(const cnn_net *net, int *h, int *w, int *c);
CNN_API int cnn_net_num_outputs(const cnn_net *net);
CNN_API const char *cnn_net_definition(const cnn_net *net); /* borrowed */
CNN_API cnn_backend *cnn_net_backend(const cnn_net *net);   /* borrowed */

/* Class names (n == cnn_net_num_outputs) stored with the model; copied. */
CNN_API cnn_status cnn_net_set_class_names(cnn_net *net, int n, const char *const *names);
/* Borrowed; NULL when the model has no name for class i. */
CNN_API const char *cnn_net_class_name(const cnn_net *net, int i);

/* Per-channel input normalization x' = (x - mean) / std, stored with the model so that eval and predict apply
 * what training applied. c == input channels. */
CNN_API cnn_status cnn_net_set_normalization(cnn_net *net, int c, const float *mean, const float *std);
/* 1 and the values when set, else 0. */
CNN_API int cnn_net_normalization(const cnn_net *net, float *mean, float *std);

/* The training set's data profile, stored with the model: each input channel's mean and std over its pixels (in
 * the [0, 1] scale, before normalization; c == input channels) and each class's share of the samples (k == outputs,
 * summing to 1). cnn_train sets it from the training data; the model server compares what it serves with it
 * (drift monitoring, README "Serving"). */
CNN_API cnn_status cnn_net_set_data_profile(cnn_net *net, int c, const float *mean, const float *std, int k,
                                            const float *class_freq);
/* 1 and the values (any pointer may be NULL) when the model has a profile, else 0. */
CNN_API int cnn_net_data_profile(const cnn_net *net, float *mean, float *std, float *class_freq);

/* The size images are resized to before the centre crop to the input (`cnn train --resize`), stored with the model
 * so that eval and predict see images as training did. h and w at least the input's; 0 and 0 clear it. */
CNN_API cnn_status cnn_net_set_resize(cnn_net *net, int h, int w);
/* 1 and the size when set, else 0. */
CNN_API int cnn_net_resize(const cnn_net *net, int *h, int *w);

/* Class probabilities for n images in [0, 1] (host, NHWC, the model's input shape, NOT yet normalized: the
 * model's normalization is applied here) into probs (host, n x outputs). */
CNN_API cnn_status cnn_net_predict(cnn_net *net, const float *images, int64_t n, float *probs);
/* The index of the largest of v[0..k-1] (the first of equal ones): the predicted class of a row of probabilities. */
CNN_API int cnn_argmax(const float *v, int k);

/* Writes the model file atomically: weights as F32 tensors named "<layer>.weight" / "<layer>.bias" (batchnorm:
 * ".gamma", ".beta" and the state ".running_mean", ".running_var"), the definition, class names and
 * normalization in __metadata__. */
CNN_API cnn_status cnn_net_save(const cnn_net *net, const char *path);
/* Loads a model file written by cnn_net_save onto `backend`; a checkpoint (cnn_train's checkpoint_dir) loads too,
 * as the model it holds, after its checksum is verified. */
CNN_API cnn_status cnn_net_load(const char *path, cnn_backend *backend, cnn_net **out);

/* ---- memory budget ----
 *
 * Before a network allocates anything, its memory is computed from its shapes alone, and it is refused when that
 * exceeds the memory limit: cnn_net_from_text (and so cnn_net_from_file and cnn_net_load) checks one image in
 * inference before it allocates the weights, cnn_net_set_batch checks the batch before it allocates the
 * activations, and training checks a training step with its optimizer's state before it allocates that. A refusal
 * is CNN_ERR_NO_MEMORY whose message names what was asked, the limit, the three largest consumers and the largest
 * batch size that fits. The figures are for the CPU backend; every size is computed in checked 64-bit arithmetic
 * (a definition whose sizes overflow is CNN_ERR_SHAPE naming the source, the line and the layer).
 *
 * What is exact and what is approximated (the byte counts of training and inference):
 *   exact: the weights, biases and batchnorm statistics (and their 16-bit copies under mixed precision), the
 *     weights' gradients, the optimizer's state, every layer output, the buffers layers keep (pre-activations of
 *     GELU and SiLU, batchnorm's batch statistics), the pooled gradients of the activations and the scratch
 *     gradients of outputs with several consumers, the staged batch (images on the device and on the host, labels,
 *     probabilities, losses): what the network allocates, byte for byte;
 *   approximated ("workspace"): what the backend keeps beside them: on the CPU, oneDNN's reordered copies of the
 *     convolution weights (one for the forward pass, one more for backward data, and the largest weight gradient
 *     in training), 1 byte per max-pool output for its argmax in training; plus the host copy a parameter is
 *     initialized through (the largest one). oneDNN's own scratchpads, the CUDA backend's cuDNN workspaces and the
 *     process itself (code, libraries, thread stacks) are not counted.
 * Inference counts what an inference pass touches: the network also reserves the gradient buffers, which only
 * training writes (address space, not resident memory, on the CPU). Everything that scales with the batch does so
 * linearly: total = fixed + batch * per image, exactly. */

/* What an estimate is for. */
typedef struct cnn_memory_config {
    int batch;           /* images per step, >= 1 */
    int optimizer_slots; /* tensors the size of the trainable weights that the optimizer keeps, 0 to 2:
                          * cnn_optimizer_slots() (cnn/train.h) gives it for an optimizer */
} cnn_memory_config;

/* One layer's share, in bytes at the batch size. */
typedef struct cnn_memory_row {
    char name[64];            /* as cnn_net_summary shows it */
    const char *type;         /* "Conv2D", ...; static */
    int line;                 /* in the definition */
    char shape[64];           /* the output shape: "(None, 26, 26, 32)" */
    char *connected;          /* its inputs when they are not the previous line ("add_1, conv2d_5"), else NULL */
    int64_t params;           /* elements of its weights and state */
    int64_t trainable;        /* elements of its trainable weights (0 when it is frozen) */
    int64_t param_bytes;      /* its weights and state, with their 16-bit copies under mixed precision */
    int64_t grad_bytes;       /* training: its trainable weights' gradients */
    int64_t optimizer_bytes;  /* training: the optimizer's state for them */
    int64_t activation_bytes; /* its output (0 for a view of another layer's output: flatten, softmax, a fused add) */
    int64_t scratch_bytes;    /* buffers it keeps in both modes: a GELU/SiLU pre-activation, batchnorm statistics */
    int64_t backward_bytes;   /* training only, approximated: what the backend keeps for its backward (argmax) */
    int64_t train_bytes;      /* the sum of the above for a training step */
    int64_t infer_bytes;      /* the sum for inference: param, activation and scratch bytes */
} cnn_memory_row;

/* One mode's totals, in bytes at the batch size. */
typedef struct cnn_memory_totals {
    int64_t param_bytes;           /* weights and state of every layer */
    int64_t grad_bytes;            /* training: the weights' gradients */
    int64_t optimizer_bytes;       /* training: optimizer state */
    int64_t activation_bytes;      /* layer outputs */
    int64_t scratch_bytes;         /* what layers keep beside them (the rows' scratch, and backward bytes in training) */
    int64_t activation_grad_bytes; /* training: the activations' gradients (pooled) and scratch gradients */
    int64_t batch_bytes;           /* the staged batch: images on the device and the host, labels, probabilities */
    int64_t workspace_bytes;       /* approximated: the backend's copies and workspaces, the initialization copy */
    int64_t total_bytes;           /* their sum; INT64_MAX when it overflows */
    int64_t fixed_bytes;           /* the part that does not depend on the batch */
    int64_t per_image_bytes;       /* total = fixed + batch * per image */
} cnn_memory_totals;

typedef struct cnn_memory_estimate {
    char *source;              /* the definition's name, for messages */
    int batch, optimizer_slots;
    int nlayers;
    cnn_memory_row *layers;    /* in definition order */
    char input_shape[64];      /* the network input: "(None, 28, 28, 1)" */
    int64_t trainable;         /* trainable parameters (cnn_net_param_count) */
    int64_t non_trainable;     /* batchnorm statistics and frozen weights (elements) */
    cnn_memory_totals train;   /* a training step: forward, loss, backward, optimizer update */
    cnn_memory_totals infer;   /* inference: forward and softmax */
} cnn_memory_estimate;

/* The estimate of a definition text (as cnn_net_from_text reads it; `source` names it in messages), computed
 * without allocating anything but the description: parse errors and sizes that overflow are reported as
 * cnn_net_from_text reports them. The estimate assumes f32 arithmetic. Free it with cnn_memory_estimate_destroy. */
CNN_API cnn_status cnn_memory_estimate_text(const char *text, const char *source, const cnn_memory_config *cfg,
                                            cnn_memory_estimate **out);
/* The same for a file: a model definition, or a model or checkpoint file (.safetensors: the definition it holds;
 * its tensors are read but not checked against it). */
CNN_API cnn_status cnn_memory_estimate_file(const char *path, const cnn_memory_config *cfg, cnn_memory_estimate **out);
/* The estimate of a network as it is (its precision, frozen layers and backend's staging). */
CNN_API cnn_status cnn_net_memory_estimate(const cnn_net *net, const cnn_memory_config *cfg, cnn_memory_estimate **out);
CNN_API void cnn_memory_estimate_destroy(cnn_memory_estimate *estimate);

/* The largest batch size whose training (training = 1) or inference (0) total fits in `limit` bytes, so that
 * the total at it is <= limit < the total at it + 1; 0 when not even one image fits. */
CNN_API int64_t cnn_memory_max_batch(const cnn_memory_estimate *estimate, int training, int64_t limit);
/* CNN_OK when the training (1) or inference (0) total fits in `limit` bytes (<= 0: cnn_memory_limit()); else
 * CNN_ERR_NO_MEMORY with a message: the bytes needed at the batch size, the limit, the three largest consumers
 * (layers, the activations' gradients, the batch, the workspaces) and the largest batch size that fits (or that
 * none does, with what the parameters alone need). */
CNN_API cnn_status cnn_memory_check(const cnn_memory_estimate *estimate, int training, int64_t limit);
/* Prints the summary table (as cnn_net_summary), then the memory table: per layer its parameter bytes, its
 * activation bytes in training and inference and its training total at the batch size; then both totals broken
 * down, and how they compare with `limit` (<= 0: cnn_memory_limit()), with the largest batch that fits. */
CNN_API void cnn_memory_print(const cnn_memory_estimate *estimate, int64_t limit, FILE *out);

/* The memory limit every check uses, in bytes, for the whole process: `bytes` > 0 sets it, 0 goes back to the
 * default, 80% of the memory available when the default is first asked for (cnn_memory_available). */
CNN_API void cnn_set_memory_limit(int64_t bytes);
CNN_API int64_t cnn_memory_limit(void);
/* The memory available to this process now: MemAvailable of /proc/meminfo, or less when a cgroup (v2) limit
 * leaves less; else the free pages (sysconf); else 4 GiB. */
CNN_API int64_t cnn_memory_available(void);
/* Writes `bytes` as "1.5 GiB" (binary units, 3 significant digits) into buf; returns buf. */
CNN_API const char *cnn_memory_format(int64_t bytes, char *buf, size_t size);

/* ---- precision ---- */

/* Sets the arithmetic the network trains and runs in (cnn_precision, cnn/backend.h). FP16 and BF16 (mixed
 * precision) make the activations, gradients and the weights convolutions and dense layers compute with 16-bit,
 * with f32 master weights that the optimizer updates and model files store; TF32 keeps f32 tensors and lets the
 * backend round convolution and matrix-product operands to TF32. Anything but FP32 needs a backend that offers it
 * (CUDA): CNN_ERR_UNSUPPORTED otherwise, with a message. L1 penalties are FP32/TF32 only. Call it after the
 * network is made or loaded, before training or inference; it may be called again. */
CNN_API cnn_status cnn_net_set_precision(cnn_net *net, cnn_precision precision);
CNN_API cnn_precision cnn_net_precision(const cnn_net *net);

/* ---- transfer learning ---- */

/* Freezes the layers up to and including the one named `upto` (the names `cnn summary` shows), in definition
 * order, and unfreezes the rest; a number N freezes the first N layers; NULL or "" unfreezes all. Frozen layers
 * get no gradients and no optimizer state, their batchnorm statistics stay as they are (batchnorm runs in
 * inference mode, as Keras does for trainable=False), and cnn_net_param_count and the summary count their
 * weights as non-trainable. *count (may be NULL) receives the number of frozen layers. An unknown name gives
 * CNN_ERR_NOT_FOUND; leaving no layer with weights to train CNN_ERR_INVALID_ARG. */
CNN_API cnn_status cnn_net_freeze(cnn_net *net, const char *upto, int *count);
/* The number of frozen layers (they form a prefix). */
CNN_API int cnn_net_frozen_layers(const cnn_net *net);

/* Copies every weight and state tensor of `src` into the tensor of `dst` with the same name and shape.
 * *copied and *kept (may be NULL) count dst's tensors copied and left as they were. */
CNN_API cnn_status cnn_net_copy_weights(cnn_net *dst, const cnn_net *src, int *copied, int *kept);

/* A new network on net's backend: net's definition with its classifier (the last dense layer) given `classes`
 * outputs and freshly initialized from `seed`; every other weight and the normalization copied, class names
 * dropped. The classifier must be on a line of its own (not inside a repeat block). */
CNN_API cnn_status cnn_net_replace_head(const cnn_net *net, int classes, uint64_t seed, cnn_net **out);

/* Loads weights trained elsewhere: a PyTorch state_dict saved as safetensors
 * (safetensors.torch.save_file(model.state_dict(), path)) of a torchvision ResNet, into a definition in the same
 * layout (samples/models/resnet18.cnn, resnet34.cnn, resnet50.cnn). Names map as torchvision's: conv1/bn1,
 * layerS.B.convJ/bnJ, layerS.B.downsample.0/.1, fc; batchnorm weight/bias are gamma/beta. Conv weights are
 * converted from OIHW to OHWI, F16 and BF16 to F32; "num_batches_tracked" and a "module." prefix are ignored.
 * Every tensor of the network must be in the file with its shape, and every tensor of the file must be used;
 * messages name the tensor. */
CNN_API cnn_status cnn_net_import_torch(cnn_net *net, const char *path);

/* Initializes `net` for fine-tuning from a file: a cnn.c model or checkpoint (the tensors with the same name and
 * shape are copied, cnn_net_copy_weights, and its normalization when net has none) or a PyTorch state_dict
 * (cnn_net_import_torch; an RGB net without normalization gets ImageNet's mean and std, which torchvision's
 * weights expect). *copied and *kept (may be NULL) count net's tensors copied and left as initialized. */
CNN_API cnn_status cnn_net_init_from(cnn_net *net, const char *path, int *copied, int *kept);

#ifdef __cplusplus
}
#endif
#endif
