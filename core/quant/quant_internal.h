/* What the tests reach of the quantizer (core/quant/quantize.c) beyond include/cnn/quant.h. */
#ifndef CNN_CORE_QUANT_INTERNAL_H
#define CNN_CORE_QUANT_INTERNAL_H

#include <stddef.h>

#include "cnn/quant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The range a calibration method picks for n values: the same statistics and choice the quantizer makes per op. */
cnn_status cnn_calib_range(const float *v, size_t n, cnn_calib_method method, double percentile, double *lo,
                           double *hi);

#ifdef __cplusplus
}
#endif
#endif
