/* A Keras-style progress bar: steps done, bar, elapsed and ETA, named metrics, images/s. On a terminal it
 * redraws one line in place (at most 10 times a second); into a file or pipe it writes a line every 25% so that
 * logs stay short. */
#ifndef CNN_CORE_PROGRESS_H
#define CNN_CORE_PROGRESS_H

#include <stdio.h>

typedef struct cnn_progress {
    FILE *out;
    int total;
    int tty;
    double start;
    double last_draw;
    int last_quarter;
} cnn_progress;

double cnn_now_seconds(void);

void cnn_progress_start(cnn_progress *p, FILE *out, int total);
/* `metrics` is a ready string (" - loss: 0.4 - accuracy: 0.8"); `images_per_sec` < 0 hides it. */
void cnn_progress_update(cnn_progress *p, int done, const char *metrics, double images_per_sec);
/* The final line of the epoch with `extra` (validation metrics) appended. */
void cnn_progress_finish(cnn_progress *p, const char *metrics, double images_per_sec, const char *extra);

#endif
