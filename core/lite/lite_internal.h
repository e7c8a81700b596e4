/* What libcnn's quantizer and the tests use of cnn-lite beyond its public header (include/cnn/lite.h). */
#ifndef CNN_CORE_LITE_INTERNAL_H
#define CNN_CORE_LITE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/lite.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Called after each float op of a pass with its output (n images' worth, `count` floats). */
typedef void (*cnn_lite_observer)(void *ctx, int op, const float *y, size_t count);

/* cnn_lite_logits, calling `obs` after each op that computes in float (calibration). */
cnn_lite_status cnn_lite_run_observed(cnn_lite *m, const float *normalized, int n, float *logits,
                                      cnn_lite_observer obs, void *ctx, char *err, size_t errlen);
int cnn_lite_num_ops(const cnn_lite *m);

/* An int8 convolution or dense op, for an accelerator that computes it. */
typedef struct cnn_lite_qop {
    int dense;
    int h, w, c, oh, ow, oc;
    int kh, kw, sh, sw, dh, dw, groups, pt, pl, pb, pr;
    int32_t x_zp;
    const int8_t *wt; /* OHWI, or (oc, h * w * c) */
    const int32_t *bias, *mult, *shift; /* oc each (bias may be NULL) */
    int32_t y_zp, y_min, y_max;
} cnn_lite_qop;

/* Writes the n x oh x ow x oc int8 outputs of op i into y as cnn-lite would (the exact sums, + bias in 64 bits,
 * rescaled with lq_scale, + y_zp, clamped) and returns 1; or returns 0 to leave the op to cnn-lite's C kernels. */
typedef int (*cnn_lite_accel)(void *ctx, int i, const cnn_lite_qop *q, const int8_t *x, int n, int8_t *y);
void cnn_lite_set_accel(cnn_lite *m, cnn_lite_accel fn, void *ctx);

/* One op of an opened model, for a backend that compiles the whole graph (cpu/qprog.c). The kinds and activations
 * are numbered as cnn-lite numbers them. Pointers are into the model's arena (valid while it is open). */
enum { CNN_LITE_OP_INPUT = 0, CNN_LITE_OP_CONV, CNN_LITE_OP_DENSE, CNN_LITE_OP_MAXPOOL, CNN_LITE_OP_AVGPOOL,
       CNN_LITE_OP_GAP, CNN_LITE_OP_FLATTEN, CNN_LITE_OP_ADD, CNN_LITE_OP_CONCAT, CNN_LITE_OP_ACT, CNN_LITE_OP_SCALE,
       CNN_LITE_OP_SOFTMAX };
enum { CNN_LITE_ACT_NONE = 0, CNN_LITE_ACT_RELU, CNN_LITE_ACT_LEAKY, CNN_LITE_ACT_ELU, CNN_LITE_ACT_SIGMOID,
       CNN_LITE_ACT_TANH, CNN_LITE_ACT_GELU, CNN_LITE_ACT_SILU };

typedef struct cnn_lite_op_info {
    int kind;
    int in[8], nin;
    int h, w, c, flat;  /* the output, per sample */
    int kh, kw, sh, sw, dh, dw, groups, pt, pl, pb, pr;
    int act;
    float alpha;
    int q;              /* int8 output: scale, zp, and the clamp (ReLU's floor) */
    float scale;
    int32_t zp, act_min, act_max;
    const int8_t *w8;   /* int8 conv/dense weights (OHWI, or (n, features)) */
    const int32_t *b32; /* their int32 biases, or NULL */
    const int32_t *mult, *shift; /* conv/dense: per output channel; add/concat: per input, then the output's */
    const float *wf, *bf;        /* float weights and biases (dynamic and fp16 dequantized), or NULL */
    const int8_t *lut;  /* int8 add: the output code of every pair of input codes, by (uint8)a << 8 | (uint8)b */
} cnn_lite_op_info;

/* Op i (0 <= i < cnn_lite_num_ops) into *info. */
void cnn_lite_op(const cnn_lite *m, int i, cnn_lite_op_info *info);
/* 1 when the model computes in int8 (mode int8), else 0 (float32). */
int cnn_lite_is_int8(const cnn_lite *m);

#ifdef __cplusplus
}
#endif
#endif
