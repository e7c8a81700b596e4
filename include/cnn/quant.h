/* cnn.c — post-training quantization: a trained model to a model for cnn-lite and the CPU's int8 kernels.
 *
 * cnn_quantize lowers a network to cnn-lite's ops (batchnorm folded into the convolution before it, dropout gone)
 * and writes it in one of TFLite's modes:
 *   - int8: full integer: weights int8, symmetric, per output channel; activations int8 with a scale and a zero
 *     point per tensor, from calibration on images of the training set (min-max, a percentile, or the entropy
 *     (KL) threshold TensorRT picks); biases int32; requantization fused into each conv, dense and add with its
 *     ReLU; max pooling, flatten and global pooling in int8; the softmax in float at the end;
 *   - dynamic: int8 weights (per channel), float activations: no calibration;
 *   - fp16: half-size weights, computed in float32;
 *   - float: the lowered float model (for cnn-lite).
 * The file is a safetensors file that cnn_net_load (eval, predict, summary) and cnn-lite (include/cnn/lite.h) run.
 * README.md, "Quantization and cnn-lite". */
#ifndef CNN_QUANT_H
#define CNN_QUANT_H

#include <stdint.h>
#include <stdio.h>

#include "cnn/net.h"
#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cnn_quant_mode { CNN_QUANT_INT8 = 0, CNN_QUANT_DYNAMIC, CNN_QUANT_FP16, CNN_QUANT_FLOAT } cnn_quant_mode;

typedef enum cnn_calib_method {
    CNN_CALIB_MINMAX = 0,  /* each tensor's smallest and largest value over the calibration images */
    CNN_CALIB_PERCENTILE,  /* the `percentile` and 100 - `percentile` quantiles of its values */
    CNN_CALIB_ENTROPY,     /* the range whose 8-bit version loses the least information (KL divergence, TensorRT) */
} cnn_calib_method;

typedef struct cnn_quant_config {
    cnn_quant_mode mode;
    cnn_calib_method method;
    double percentile;          /* CNN_CALIB_PERCENTILE: default 99.99 */
    const float *calib_images;  /* int8: calib_n images in the model's input shape, pixels in [0, 1] (the model's
                                 * normalization is applied here), as cnn predict prepares files */
    int64_t calib_n;
    const char *calib_source;   /* recorded in the file's metadata (e.g. "fashion-mnist, 1000 images") */
} cnn_quant_config;

/* "int8", "dynamic", "fp16", "float" (and back: CNN_ERR_INVALID_ARG naming them) */
CNN_API const char *cnn_quant_mode_name(cnn_quant_mode mode);
CNN_API cnn_status cnn_quant_mode_parse(const char *name, cnn_quant_mode *out);
/* "minmax", "percentile", "entropy" (and back) */
CNN_API const char *cnn_calib_method_name(cnn_calib_method method);
CNN_API cnn_status cnn_calib_method_parse(const char *name, cnn_calib_method *out);

CNN_API void cnn_quant_config_defaults(cnn_quant_config *cfg);

/* Quantizes `net` (a trained float model) as cfg says and writes the model to out_path atomically. Layers int8 does
 * not cover (sigmoid, tanh, GELU and the other non-ReLU activations, a batchnorm that follows no convolution) are
 * CNN_ERR_UNSUPPORTED naming the layer: such models quantize in the dynamic mode. */
CNN_API cnn_status cnn_quantize(const cnn_net *net, const cnn_quant_config *cfg, const char *out_path);

/* When path is a quantized file, prints its ops (output shapes, weight dtypes and bytes, scales and zero points) to
 * out and sets *printed; otherwise prints nothing. */
CNN_API cnn_status cnn_quant_summary(const char *path, FILE *out, int *printed);

/* 1 when the network was loaded from a quantized file (it runs on the CPU, for inference only). */
CNN_API int cnn_net_is_quantized(const cnn_net *net);
/* Its mode ("int8", "dynamic", "fp16", "float"), or NULL for a float network. */
CNN_API const char *cnn_net_quant_mode(const cnn_net *net);

#ifdef __cplusplus
}
#endif
#endif
