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
cnn_status cnn_net_from_text(const char *text, const char *source, cnn_backend *backend, uint64_t seed,
                             cnn_net **out);
/* The same, reading the definition from a file. */
cnn_status cnn_net_from_file(const char *path, cnn_backend *backend, uint64_t seed, cnn_net **out);
void cnn_net_destroy(cnn_net *net);

/* Prints a Keras-style table (layer name and type, output shape, parameter count, inputs) and the totals:
 * trainable, non-trainable (batchnorm running statistics) and their sum. */
void cnn_net_summary(const cnn_net *net, FILE *out);

/* Trainable parameters (the non-trainable batchnorm running statistics are not counted). */
int64_t cnn_net_param_count(const cnn_net *net);
void cnn_net_input_shape(const cnn_net *net, int *h, int *w, int *c);
int cnn_net_num_outputs(const cnn_net *net);
const char *cnn_net_definition(const cnn_net *net); /* borrowed */
cnn_backend *cnn_net_backend(const cnn_net *net);   /* borrowed */

/* Class names (n == cnn_net_num_outputs) stored with the model; copied. */
cnn_status cnn_net_set_class_names(cnn_net *net, int n, const char *const *names);
/* Borrowed; NULL when the model has no name for class i. */
const char *cnn_net_class_name(const cnn_net *net, int i);

/* Per-channel input normalization x' = (x - mean) / std, stored with the model so that eval and predict apply
 * what training applied. c == input channels. */
cnn_status cnn_net_set_normalization(cnn_net *net, int c, const float *mean, const float *std);
/* 1 and the values when set, else 0. */
int cnn_net_normalization(const cnn_net *net, float *mean, float *std);

/* The size images are resized to before the centre crop to the input (`cnn train --resize`), stored with the model
 * so that eval and predict see images as training did. h and w at least the input's; 0 and 0 clear it. */
cnn_status cnn_net_set_resize(cnn_net *net, int h, int w);
/* 1 and the size when set, else 0. */
int cnn_net_resize(const cnn_net *net, int *h, int *w);

/* Class probabilities for n images in [0, 1] (host, NHWC, the model's input shape, NOT yet normalized: the
 * model's normalization is applied here) into probs (host, n x outputs). */
cnn_status cnn_net_predict(cnn_net *net, const float *images, int64_t n, float *probs);

/* Writes the model file atomically: weights as F32 tensors named "<layer>.weight" / "<layer>.bias" (batchnorm:
 * ".gamma", ".beta" and the state ".running_mean", ".running_var"), the definition, class names and
 * normalization in __metadata__. */
cnn_status cnn_net_save(const cnn_net *net, const char *path);
/* Loads a model file written by cnn_net_save onto `backend`; a checkpoint (cnn_train's checkpoint_dir) loads too,
 * as the model it holds, after its checksum is verified. */
cnn_status cnn_net_load(const char *path, cnn_backend *backend, cnn_net **out);

/* ---- precision ---- */

/* Sets the arithmetic the network trains and runs in (cnn_precision, cnn/backend.h). FP16 and BF16 (mixed
 * precision) make the activations, gradients and the weights convolutions and dense layers compute with 16-bit,
 * with f32 master weights that the optimizer updates and model files store; TF32 keeps f32 tensors and lets the
 * backend round convolution and matrix-product operands to TF32. Anything but FP32 needs a backend that offers it
 * (CUDA): CNN_ERR_UNSUPPORTED otherwise, with a message. L1 penalties are FP32/TF32 only. Call it after the
 * network is made or loaded, before training or inference; it may be called again. */
cnn_status cnn_net_set_precision(cnn_net *net, cnn_precision precision);
cnn_precision cnn_net_precision(const cnn_net *net);

/* ---- transfer learning ---- */

/* Freezes the layers up to and including the one named `upto` (the names `cnn summary` shows), in definition
 * order, and unfreezes the rest; a number N freezes the first N layers; NULL or "" unfreezes all. Frozen layers
 * get no gradients and no optimizer state, their batchnorm statistics stay as they are (batchnorm runs in
 * inference mode, as Keras does for trainable=False), and cnn_net_param_count and the summary count their
 * weights as non-trainable. *count (may be NULL) receives the number of frozen layers. An unknown name gives
 * CNN_ERR_NOT_FOUND; leaving no layer with weights to train CNN_ERR_INVALID_ARG. */
cnn_status cnn_net_freeze(cnn_net *net, const char *upto, int *count);
/* The number of frozen layers (they form a prefix). */
int cnn_net_frozen_layers(const cnn_net *net);

/* Copies every weight and state tensor of `src` into the tensor of `dst` with the same name and shape.
 * *copied and *kept (may be NULL) count dst's tensors copied and left as they were. */
cnn_status cnn_net_copy_weights(cnn_net *dst, const cnn_net *src, int *copied, int *kept);

/* A new network on net's backend: net's definition with its classifier (the last dense layer) given `classes`
 * outputs and freshly initialized from `seed`; every other weight and the normalization copied, class names
 * dropped. The classifier must be on a line of its own (not inside a repeat block). */
cnn_status cnn_net_replace_head(const cnn_net *net, int classes, uint64_t seed, cnn_net **out);

/* Loads weights trained elsewhere: a PyTorch state_dict saved as safetensors
 * (safetensors.torch.save_file(model.state_dict(), path)) of a torchvision ResNet, into a definition in the same
 * layout (samples/models/resnet18.cnn, resnet34.cnn, resnet50.cnn). Names map as torchvision's: conv1/bn1,
 * layerS.B.convJ/bnJ, layerS.B.downsample.0/.1, fc; batchnorm weight/bias are gamma/beta. Conv weights are
 * converted from OIHW to OHWI, F16 and BF16 to F32; "num_batches_tracked" and a "module." prefix are ignored.
 * Every tensor of the network must be in the file with its shape, and every tensor of the file must be used;
 * messages name the tensor. */
cnn_status cnn_net_import_torch(cnn_net *net, const char *path);

/* Initializes `net` for fine-tuning from a file: a cnn.c model or checkpoint (the tensors with the same name and
 * shape are copied, cnn_net_copy_weights, and its normalization when net has none) or a PyTorch state_dict
 * (cnn_net_import_torch; an RGB net without normalization gets ImageNet's mean and std, which torchvision's
 * weights expect). *copied and *kept (may be NULL) count net's tensors copied and left as initialized. */
cnn_status cnn_net_init_from(cnn_net *net, const char *path, int *copied, int *kept);

#ifdef __cplusplus
}
#endif
#endif
