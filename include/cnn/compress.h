/* cnn.c — model compression in training: knowledge distillation and quantization-aware training (README.md,
 * "Distillation" and "Quantization-aware training").
 *
 * Distillation (Hinton et al. 2015): cnn_train with cnn_train_config.teacher trains the student on
 *   loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross-entropy,
 * the teacher running in inference mode on the student's batch (augmented as the student sees it), resized to the
 * teacher's input when the sizes differ.
 *
 * Quantization-aware training (Jacob et al. 2018; PyTorch's and TF-MOT's fake quantization): a network whose
 * definition has the line `qat` trains through fake quantization to the int8 scheme of cnn_quantize: weights
 * symmetric per output channel (a convolution followed by a batchnorm quantizes the folded weights), activations per
 * tensor with a scale and a zero point at the outputs cnn-lite requantizes (the input, each convolution with its
 * batchnorm and ReLU, dense layers, adds, concats), straight-through gradients clipped outside the range. Activation
 * ranges are exponential moving averages of the batch minimum and maximum, kept in the model file (and checkpoints)
 * as each quantized layer's `qat_range` state; cnn_quantize in the int8 mode uses them instead of calibration. */
#ifndef CNN_COMPRESS_H
#define CNN_COMPRESS_H

#include <stdint.h>

#include "cnn/net.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- distillation ---- */

/* Hinton et al. 2015's weighting as in Tian et al. 2020 (RepDistiller): alpha 0.9, T 4 */
#define CNN_DISTILL_DEFAULT_ALPHA 0.9f
#define CNN_DISTILL_DEFAULT_TEMPERATURE 4.0f

/* CNN_OK when `teacher` can teach `student`: as many outputs (classes) and input channels, a float network, alpha in
 * [0, 1] and temperature > 0. Otherwise CNN_ERR_SHAPE (classes, channels) or CNN_ERR_INVALID_ARG with a message
 * naming what differs. */
CNN_API cnn_status cnn_distill_check(const cnn_net *student, const cnn_net *teacher, float alpha,
                                     float temperature);

/* The per-sample loss and its gradient w.r.t. the student's logits for one batch of n samples and k classes, in
 * float (what training computes): given the student's and the teacher's logits and the cross-entropy part already
 * computed (per-sample losses ce[n] and the gradient of the batch loss ce_grad[n * k], with label smoothing and class
 * weights as training applies them), loss[i] = (1 - alpha) ce[i] + alpha T^2 KL_i and
 * grad = (1 - alpha) ce_grad + grad_scale * alpha * T (softmax(s / T) - softmax(t / T)), grad_scale being the scale
 * of the cross-entropy gradient (loss scale / n). loss and grad may be ce and ce_grad. */
CNN_API void cnn_distill_combine(int n, int k, const float *student, const float *teacher, float alpha,
                                 float temperature, const float *ce, const float *ce_grad, float grad_scale,
                                 float *loss, float *grad);

/* ---- quantization-aware training ---- */

/* 1 when the network trains with fake quantization (its definition has the `qat` line). */
CNN_API int cnn_net_is_qat(const cnn_net *net);

/* A QAT copy of a float network: its definition with the `qat` line, its weights, state, normalization and resize;
 * activation ranges not yet seen (the first training batch sets them). CNN_ERR_UNSUPPORTED naming the layer when
 * int8 does not cover the network (cnn_quantize's rules) or fake quantization does not (a batchnorm fused with the
 * add after it, as ResNet's blocks end; an add of more than two inputs; a concat with an activation). */
CNN_API cnn_status cnn_net_qat_convert(const cnn_net *net, uint64_t seed, cnn_net **out);

/* The fake quantization of one value to an int8 grid (scale, zero point; cnn-lite's arithmetic): scale * (q - zp)
 * with q = lq_quantize(v, scale, zp). *in_range receives 1 when the unclamped code lies in [-128, 127] (where the
 * straight-through gradient passes). */
CNN_API float cnn_fake_quant(float v, float scale, int32_t zp, int *in_range);

/* Symmetric per-channel fake quantization of `rows` rows of `per` weights each, in place: each row to
 * scale * round(w / scale) with scale = max |w| / 127 (1 for an all-zero row), clamped to [-127, 127]: what
 * cnn_quantize stores, dequantized. */
CNN_API void cnn_fake_quant_weights(float *w, int64_t rows, int64_t per);

#ifdef __cplusplus
}
#endif
#endif
