/* The hooks of distillation (core/distill.c) and quantization-aware training (core/qat.c) in the trainer and the
 * network (include/cnn/compress.h has what they compute). */
#ifndef CNN_CORE_COMPRESS_H
#define CNN_CORE_COMPRESS_H

#include "cnn/compress.h"
#include "cnn/train.h"
#include "core/net.h"

/* ---- distillation (core/distill.c) ---- */

typedef struct cnn_distill cnn_distill;

/* The trainer's distiller for cfg->teacher (checked with cnn_distill_check) and batches of up to `batch`. */
cnn_status cnn_distill_create(const cnn_net *student, const cnn_train_config *cfg, int batch, cnn_distill **out);
void cnn_distill_destroy(cnn_distill *d);

/* The training loss of the batch staged in `student` (forward done): the teacher's forward on `images` (the n
 * images as the student's loader made them: normalized as the student's input), then cnn_net_loss's cross-entropy
 * combined with the KL term into net->losses and the logits' gradient. */
cnn_status cnn_distill_loss(cnn_distill *d, cnn_net *student, const float *images, int n);

/* Seconds spent in the teacher's forward passes so far (part of each step's wall time). */
double cnn_distill_teacher_seconds(const cnn_distill *d);

/* A checksum of the teacher's definition and weights, for checkpoints: resuming needs the same teacher. */
uint32_t cnn_distill_teacher_crc(const cnn_net *teacher);

/* ---- quantization-aware training (core/qat.c) ---- */

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
