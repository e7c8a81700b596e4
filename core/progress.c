#define _POSIX_C_SOURCE 200809L
#include "core/progress.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

#define BAR_WIDTH 30
#define REDRAW_SECONDS 0.1

double cnn_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void format_duration(double s, char *buf, size_t n)
{
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
    else if (t >= 60) snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

void cnn_progress_start(cnn_progress *p, FILE *out, int total)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->total = total > 0 ? total : 1;
    p->tty = out && isatty(fileno(out));
    p->start = cnn_now_seconds();
    p->last_draw = -1.0;
}

static void draw(cnn_progress *p, int done, const char *timing, const char *metrics, double ips, const char *extra,
                 int final)
{
    char bar[BAR_WIDTH + 1];
    int filled = (int)((long long)done * BAR_WIDTH / p->total);
    for (int i = 0; i < BAR_WIDTH; i++) bar[i] = i < filled ? '=' : '.';
    if (filled < BAR_WIDTH && filled > 0) bar[filled - 1] = '>';
    if (done >= p->total) memset(bar, '=', BAR_WIDTH);
    bar[BAR_WIDTH] = '\0';
    int width = snprintf(NULL, 0, "%d", p->total);
    char rate[48] = "";
    if (ips >= 0) snprintf(rate, sizeof rate, " - %.0f img/s", ips);
    fprintf(p->out, "%s%*d/%d [%s] - %s%s%s%s%s", p->tty ? "\r" : "", width, done, p->total, bar, timing,
            metrics ? metrics : "", rate, extra ? extra : "", p->tty ? "\033[K" : "");
    if (final || !p->tty) fputc('\n', p->out);
    fflush(p->out);
}

void cnn_progress_update(cnn_progress *p, int done, const char *metrics, double ips)
{
    if (!p->out) return;
    double now = cnn_now_seconds();
    if (p->tty) {
        if (now - p->last_draw < REDRAW_SECONDS && done < p->total) return;
    } else {
        int quarter = (int)((long long)done * 4 / p->total);
        if (quarter == p->last_quarter || done >= p->total) return;
        p->last_quarter = quarter;
    }
    p->last_draw = now;
    double elapsed = now - p->start;
    double eta = done > 0 ? elapsed / done * (p->total - done) : 0.0;
    char t[32], timing[48];
    format_duration(eta, t, sizeof t);
    snprintf(timing, sizeof timing, "ETA: %s", t);
    draw(p, done, timing, metrics, ips, NULL, 0);
}

void cnn_progress_finish(cnn_progress *p, const char *metrics, double ips, const char *extra)
{
    if (!p->out) return;
    double elapsed = cnn_now_seconds() - p->start;
    char t[32], timing[64];
    format_duration(elapsed, t, sizeof t);
    snprintf(timing, sizeof timing, "%s %.0fms/step", t, 1000.0 * elapsed / p->total);
    draw(p, p->total, timing, metrics, ips, extra, 1);
}
