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

#ifdef __cplusplus
}
#endif
#endif
