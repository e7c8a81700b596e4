/* The hooks of distillation (core/compress/distill.c) in the trainer (include/cnn/compress.h has what it computes;
 * quantization-aware training's hooks in the network are core/nn/qat.h). */
#ifndef CNN_CORE_COMPRESS_H
#define CNN_CORE_COMPRESS_H

#include "cnn/compress.h"
#include "cnn/train.h"
#include "core/nn/net.h"

/* ---- distillation (core/compress/distill.c) ---- */

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

#endif
