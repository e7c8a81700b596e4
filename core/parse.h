/* Strict parsing of sizes written as text by users and files ("36x36", "32x32x3"): every part a decimal integer
 * in [1, max], nothing else, no overflow (sscanf's %d has undefined behaviour past INT_MAX). */
#ifndef CNN_CORE_PARSE_H
#define CNN_CORE_PARSE_H

/* Parses n sizes separated by 'x' into out[0..n); returns 1 on success, 0 (out unchanged) otherwise. */
int cnn_parse_dims(const char *text, int n, long max, int *out);

#endif
