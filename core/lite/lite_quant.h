/* The integer arithmetic of int8 models, shared by cnn-lite, libcnn's quantizer and the tests (portable C99).
 *
 * A tensor's real value is scale * (q - zero_point). Activations are int8 with a zero point (asymmetric, per
 * tensor); weights are int8 with zero point 0 (symmetric, per output channel, in [-127, 127]); biases are int32
 * with scale input_scale * weight_scale[c]. A convolution accumulates (x - x_zp) * w in int32 and rescales the sum
 * by the real multiplier M = input_scale * weight_scale[c] / output_scale, held as a Q31 fixed-point number and a
 * power of two (TFLite's scheme: M = m * 2^shift, m in [2^30, 2^31)), applied with one rounding, so that every
 * result is exact integer arithmetic, the same on every machine. */
#ifndef CNN_CORE_LITE_QUANT_H
#define CNN_CORE_LITE_QUANT_H

#include <math.h>
#include <stdint.h>

/* M as m * 2^shift with m a Q31 number in [2^30, 2^31) (0 when M is 0); M must be finite, >= 0 and < 2^31. Shifts
 * below -31 (M < 2^-32) give 0. */
static inline void lq_quantize_multiplier(double M, int32_t *m, int *shift)
{
    if (!(M > 0.0)) {
        *m = 0;
        *shift = 0;
        return;
    }
    int e;
    double f = frexp(M, &e); /* M = f * 2^e, f in [0.5, 1) */
    int64_t q = (int64_t)llround(f * 2147483648.0); /* f * 2^31 */
    if (q == ((int64_t)1 << 31)) {
        q /= 2;
        e++;
    }
    if (e < -31) { /* below what a Q31 and a 31-bit shift can say: 0 */
        q = 0;
        e = 0;
    }
    *m = (int32_t)q;
    *shift = e;
}

/* x * M for M = m * 2^shift (lq_quantize_multiplier), rounded once, half away from zero: the 64-bit product
 * x * m shifted right by 31 - shift (TFLite's single-rounding MultiplyByQuantizedMultiplier). Exact: the same as
 * rounding the exact product. |x| < 2^31 and m < 2^31, so the product fits in 63 bits. */
static inline int32_t lq_scale(int32_t x, int32_t m, int shift)
{
    int total = 31 - shift; /* 0 to 62 (shift <= 31: M < 2^31) */
    int64_t p = (int64_t)x * (int64_t)m;
    int64_t half = total > 0 ? (int64_t)1 << (total - 1) : 0;
    /* floor((p + half - [p < 0]) / 2^total): half away from zero, without a branch (vectorizes) */
    int64_t r = (p + half - (p < 0 && total > 0)) >> total;
    return (int32_t)(r > INT32_MAX ? INT32_MAX : r < INT32_MIN ? INT32_MIN : r);
}

static inline int32_t lq_clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The int8 code of a real value: round(v / scale) + zp, clamped to [-128, 127]. */
static inline int8_t lq_quantize(float v, float scale, int32_t zp)
{
    float q = roundf(v / scale) + (float)zp;
    return (int8_t)(!(q > -128.0f) ? -128 : q > 127.0f ? 127 : (int32_t)q); /* NaN: -128 */
}

/* Scale and zero point of an int8 tensor whose real values span [lo, hi] (widened to hold 0, as a zero padding
 * and ReLU's floor must be exact). */
static inline void lq_choose_params(float lo, float hi, float *scale, int32_t *zp)
{
    if (lo > 0.0f) lo = 0.0f;
    if (hi < 0.0f) hi = 0.0f;
    if (hi - lo < 1e-8f) hi = lo + 1e-8f;
    *scale = (hi - lo) / 255.0f;
    float z = -128.0f - lo / *scale;
    *zp = (int32_t)lq_clamp((int32_t)lrintf(z), -128, 127);
}

#endif
