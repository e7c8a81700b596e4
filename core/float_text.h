/* Floats written as text that reads back as the same float: settings in checkpoints and canonical option strings. */
#ifndef CNN_CORE_FLOAT_TEXT_H
#define CNN_CORE_FLOAT_TEXT_H

#include <stdio.h>
#include <stdlib.h>

/* The shortest of %.{min_digits}g .. %.9g that reads back as v (%.9g always does) in buf[0..n); returns buf. %g drops
 * trailing zeros: 0.01f is "0.01", not "0.00999999978". */
static inline const char *cnn_float_text(char *buf, size_t n, float v, int min_digits)
{
    for (int p = min_digits; p <= 9; p++) {
        snprintf(buf, n, "%.*g", p, (double)v);
        if (strtof(buf, NULL) == v) break;
    }
    return buf;
}

#endif
