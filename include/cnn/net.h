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

/* Class probabilities for n images in [0, 1] (host, NHWC, the model's input shape, NOT yet normalized: the
 * model's normalization is applied here) into probs (host, n x outputs). */
cnn_status cnn_net_predict(cnn_net *net, const float *images, int64_t n, float *probs);

/* Writes the model file atomically: weights as F32 tensors named "<layer>.weight" / "<layer>.bias" (batchnorm:
 * ".gamma", ".beta" and the state ".running_mean", ".running_var"), the definition, class names and
 * normalization in __metadata__. */
cnn_status cnn_net_save(const cnn_net *net, const char *path);
/* Loads a model file written by cnn_net_save onto `backend`. */
cnn_status cnn_net_load(const char *path, cnn_backend *backend, cnn_net **out);

#ifdef __cplusplus
}
#endif
#endif
