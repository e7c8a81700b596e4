/* cnn.c — trust: gradients with respect to the input and to layer outputs, explanations (Grad-CAM, saliency,
 * integrated gradients, ...), adversarial attacks.
 *
 * Every function here runs the network in inference mode (batchnorm with its running statistics, dropout the
 * identity) and leaves the training state alone: the weights' gradients, the optimizer, batchnorm's running
 * statistics and the training step are not touched. What it overwrites is the network's activations of its last
 * forward pass (as cnn_net_predict does). Images are host NHWC floats in [0, 1] with the model's input shape,
 * not yet normalized (the model's normalization is applied inside, and gradients are with respect to the [0, 1]
 * pixels). The arithmetic must be fp32 or tf32 (cnn_net_set_precision); 16-bit networks are refused. */
#ifndef CNN_EXPLAIN_H
#define CNN_EXPLAIN_H

#include <stdint.h>

#include "cnn/net.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- layers by name ---- */

/* Layers in definition order, named as cnn_net_summary shows them ("conv2d_1", or the definition's name=). */
int cnn_net_num_layers(const cnn_net *net);
const char *cnn_net_layer_name(const cnn_net *net, int i); /* borrowed; NULL out of range */
const char *cnn_net_layer_kind(const cnn_net *net, int i); /* the definition keyword: "conv", "dense", ...; static */
/* The index of the layer named `name`, or -1. */
int cnn_net_layer_find(const cnn_net *net, const char *name);
/* The per-image output shape of layer i: *ndim 3 (h, w, c) or 1 (c features; h = w = 1). Returns the elements per
 * image, or -1 out of range. */
int64_t cnn_net_layer_shape(const cnn_net *net, int i, int *h, int *w, int *c, int *ndim);
/* The last convolution whose output is an image (Grad-CAM's default layer), or -1 when the model has none. */
int cnn_net_last_conv(const cnn_net *net);

/* ---- gradients ---- */

typedef struct cnn_grad cnn_grad;

/* Gradient buffers for `net`: one per layer output (a full set, unlike training's pooled ones) and the input's,
 * for up to max_batch images, on net's backend. The network must outlive it. */
cnn_status cnn_grad_create(cnn_net *net, int max_batch, cnn_grad **out);
void cnn_grad_destroy(cnn_grad *g);

/* Forward pass in inference mode on n images (1 <= n <= max_batch); logits and probs (host, n x outputs; either
 * may be NULL) receive the last layer's output and its softmax. */
cnn_status cnn_grad_forward(cnn_grad *g, const float *images, int n, float *logits, float *probs);

/* Backward pass after cnn_grad_forward from dlogits (host, n x outputs): the gradient of
 * sum_i sum_k dlogits[i][k] * logits[i][k]. input_grad (host, n x H x W x C; may be NULL) receives its gradient
 * with respect to the [0, 1] input pixels (through the model's normalization). With layer >= 0, layer_grad (host,
 * n x the layer's elements) receives its gradient with respect to that layer's output (after its activation). */
cnn_status cnn_grad_backward(cnn_grad *g, const float *dlogits, float *input_grad, int layer, float *layer_grad);

/* After cnn_grad_forward: layer i's output (host, n x its elements). */
cnn_status cnn_grad_layer_output(cnn_grad *g, int layer, float *out);

#ifdef __cplusplus
}
#endif
#endif
