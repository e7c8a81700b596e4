/* What libcnn's quantizer and the tests use of cnn-lite beyond its public header (include/cnn/lite.h). */
#ifndef CNN_CORE_LITE_INTERNAL_H
#define CNN_CORE_LITE_INTERNAL_H

#include <stddef.h>

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

#ifdef __cplusplus
}
#endif
#endif
