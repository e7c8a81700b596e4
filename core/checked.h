/* Checked 64-bit size arithmetic: every product and sum of sizes that comes from a definition or a file (shapes,
 * element counts, byte counts, batch multiples) goes through these, so that an absurd size is an error and never a
 * wrapped-around small number. Each returns 1 and stores the result, or returns 0 (overflow, or a negative operand)
 * and leaves *out unchanged. */
#ifndef CNN_CORE_CHECKED_H
#define CNN_CORE_CHECKED_H

#include <stdint.h>

static inline int cnn_mul_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return 0;
    *out = r;
    return 1;
}

static inline int cnn_add_i64(int64_t a, int64_t b, int64_t *out)
{
    int64_t r;
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) return 0;
    *out = r;
    return 1;
}

/* a * b, or INT64_MAX when that overflows: for totals that are only compared with a limit */
static inline int64_t cnn_mul_sat(int64_t a, int64_t b)
{
    int64_t r;
    return cnn_mul_i64(a, b, &r) ? r : INT64_MAX;
}

/* a + b, or INT64_MAX when that overflows */
static inline int64_t cnn_add_sat(int64_t a, int64_t b)
{
    int64_t r;
    return cnn_add_i64(a, b, &r) ? r : INT64_MAX;
}

#endif
