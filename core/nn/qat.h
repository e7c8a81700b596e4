/* The hooks of quantization-aware training (core/nn/qat.c) in the network: fake quantization of the weights and
 * the outputs during the forward pass, straight-through gradients in the backward pass (include/cnn/compress.h). */
#ifndef CNN_CORE_NN_QAT_H
#define CNN_CORE_NN_QAT_H

#include "cnn/compress.h"
#include "core/nn/net.h"

/* cnn_net_build's hook for a definition with `qat`: checks the network and declares the `qat_range` state of each
 * layer whose output is quantized (and `qat_input_range` on the first layer, for the input). */
cnn_status cnn_qat_declare(cnn_net *net);

/* cnn_net_forward's hooks: before the layers (the weights swapped for their fake-quantized versions, the input
 * quantized; training updates the ranges) and after layer i (its output quantized, and in training its
 * straight-through mask kept). After an inference forward the float weights are back at once; after a training
 * forward they come back with cnn_qat_restore (the trainer calls it before the optimizer step). */
cnn_status cnn_qat_forward_begin(cnn_net *net, int training);
cnn_status cnn_qat_forward_layer(cnn_net *net, int i, int training);
cnn_status cnn_qat_forward_end(cnn_net *net, int training);
/* cnn_net_backward's hook before layer i's backward: its output gradient zeroed where the value was clipped. */
cnn_status cnn_qat_backward_layer(cnn_net *net, int i);
/* Puts the float (master) weights back; nothing to do when they are there. */
cnn_status cnn_qat_restore(cnn_net *net);
void cnn_qat_free(cnn_net *net);

/* The range [lo, hi] the model learned for the output of layer `layer` (-1: the network input); 0 when it has none
 * or never saw a batch. */
int cnn_qat_range(const cnn_net *net, int layer, float *lo, float *hi);
/* The same for what cnn_quantize's lowering calls a layer's output: l NULL for the input, and a convolution folded
 * with its batchnorm has the batchnorm's range. */
int cnn_qat_layer_range(const cnn_net *net, const cnn_layer *l, float *lo, float *hi);

#endif
