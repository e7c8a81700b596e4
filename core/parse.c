/* Strict parsing of sizes in text (core/parse.h). */
#include "core/parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

int cnn_parse_dims(const char *text, int n, long max, int *out)
{
    int v[4];
    if (!text || n < 1 || n > 4) return 0;
    const char *s = text;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)*s)) return 0; /* no sign, no space */
        char *end;
        errno = 0;
        long x = strtol(s, &end, 10);
        if (errno || x < 1 || x > max || x > 0x7fffffffL) return 0;
        v[i] = (int)x;
        if (i + 1 < n && *end != 'x') return 0;
        s = end + (i + 1 < n);
    }
    if (*s) return 0;
    for (int i = 0; i < n; i++) out[i] = v[i];
    return 1;
}
