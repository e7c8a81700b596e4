#define _POSIX_C_SOURCE 200809L
/* What the trainer writes about its epochs: a CSV log (Keras' CSVLogger), TensorBoard event files and a PNG of
 * the curves. Each is rewritten whole, atomically, from the history: a resumed run rewrites what its checkpoint
 * knows, and a reader never sees half a file. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/crc32c.h"
#include "core/data/image.h"
#include "core/draw.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/io/json.h"
#include "core/train/checkpoint.h"

// ---------------------------------------------------------------------------------------------------------------
// CSV

/* The shortest %g that reads back as the same double; with `is_float` (the learning rate) the shortest that
 * reads back as the same float ("0.001", not "0.0010000000474974513"). */
static void append_exact(cnn_strbuf *b, double v, int is_float)
{
    char buf[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (is_float ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) break;
    }
    cnn_strbuf_appends(b, buf);
}

static cnn_status write_strbuf(const char *path, cnn_strbuf *b)
{
    if (b->status != CNN_OK) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory", path);
    const void *parts[1] = {b->data};
    size_t sizes[1] = {b->len};
    return cnn_write_file_atomic(path, parts, sizes, 1);
}

cnn_status cnn_csv_log_write(const char *path, const cnn_epoch_stats *h, int n)
{
    cnn_strbuf b;
    cnn_strbuf_init(&b);
    cnn_strbuf_appends(&b, "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n");
    for (int i = 0; i < n; i++) {
        cnn_strbuf_appendf(&b, "%d,", h[i].epoch);
        append_exact(&b, h[i].loss, 0);
        cnn_strbuf_appends(&b, ",");
        append_exact(&b, h[i].accuracy, 0);
        cnn_strbuf_appends(&b, ",");
        if (h[i].has_val) {
            append_exact(&b, h[i].val_loss, 0);
            cnn_strbuf_appends(&b, ",");
            append_exact(&b, h[i].val_accuracy, 0);
        } else {
            cnn_strbuf_appends(&b, ",");
        }
        cnn_strbuf_appends(&b, ",");
        append_exact(&b, h[i].lr, 1);
        cnn_strbuf_appendf(&b, ",%.3f\n", h[i].seconds);
    }
    cnn_status st = write_strbuf(path, &b);
    cnn_strbuf_free(&b);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// TensorBoard: TFRecord files of Event protocol buffers (tensorflow/core/util/event.proto, summary.proto)
//
//   record:  u64 length (LE), u32 masked CRC-32C of those 8 bytes, the bytes, u32 masked CRC-32C of the bytes
//   Event:   1 wall_time (double), 2 step (int64), 3 file_version (string) | 5 summary (Summary)
//   Summary: 1 value (repeated Value);  Value: 1 tag (string), 2 simple_value (float)

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_BYTES = 2, PB_FIXED32 = 5 };

static void pb_varint(cnn_strbuf *b, uint64_t v)
{
    unsigned char buf[10];
    size_t n = 0;
    do {
        buf[n++] = (unsigned char)((v & 0x7Fu) | (v > 0x7F ? 0x80u : 0u));
        v >>= 7;
    } while (v);
    cnn_strbuf_append(b, (const char *)buf, n);
}

static void pb_key(cnn_strbuf *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }

static void pb_fixed(cnn_strbuf *b, uint64_t bits, int bytes)
{
    unsigned char buf[8];
    for (int i = 0; i < bytes; i++) buf[i] = (unsigned char)(bits >> (8 * i));
    cnn_strbuf_append(b, (const char *)buf, (size_t)bytes);
}

static void pb_bytes(cnn_strbuf *b, int field, const char *data, size_t n)
{
    pb_key(b, field, PB_BYTES);
    pb_varint(b, n);
    cnn_strbuf_append(b, data, n);
}

static void pb_event_head(cnn_strbuf *e, double wall_time, int64_t step)
{
    uint64_t bits;
    memcpy(&bits, &wall_time, sizeof bits);
    pb_key(e, 1, PB_FIXED64);
    pb_fixed(e, bits, 8);
    if (step) {
        pb_key(e, 2, PB_VARINT);
        pb_varint(e, (uint64_t)step);
    }
}

static void tf_record(cnn_strbuf *out, const cnn_strbuf *data)
{
    unsigned char len[8];
    for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)data->len >> (8 * i));
    cnn_strbuf_append(out, (const char *)len, 8);
    pb_fixed(out, cnn_crc32c_mask(cnn_crc32c(0, len, 8)), 4);
    cnn_strbuf_append(out, data->data ? data->data : "", data->len);
    pb_fixed(out, cnn_crc32c_mask(cnn_crc32c(0, data->data ? data->data : "", data->len)), 4);
}

/* Appends a Summary.Value {tag, simple_value} to `summary`. */
static void pb_scalar(cnn_strbuf *summary, const char *tag, double value)
{
    cnn_strbuf v;
    cnn_strbuf_init(&v);
    pb_bytes(&v, 1, tag, strlen(tag));
    float f = (float)value;
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    pb_key(&v, 2, PB_FIXED32);
    pb_fixed(&v, bits, 4);
    if (v.status != CNN_OK) summary->status = v.status;
    else pb_bytes(summary, 1, v.data, v.len);
    cnn_strbuf_free(&v);
}

/* One event file: the file_version event, then one summary event per epoch (validation: only epochs with it). */
static cnn_status write_events(const char *dir, const char *sub, double run_started, const cnn_epoch_stats *h, int n,
                               int validation)
{
    cnn_strbuf out, ev, sum;
    cnn_strbuf_init(&out);
    char host[64] = "localhost", *path = NULL, *subdir = NULL;
    if (gethostname(host, sizeof host) != 0) strcpy(host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    size_t plen = strlen(dir) + strlen(sub) + strlen(host) + 80;
    subdir = malloc(plen);
    path = malloc(plen);
    cnn_status st = CNN_OK;
    if (!subdir || !path) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of host memory");
        goto fail;
    }
    snprintf(subdir, plen, "%s/%s", dir, sub);
    /* TensorBoard reads every file whose name holds "tfevents"; TensorFlow's pattern with our tag */
    snprintf(path, plen, "%s/events.out.tfevents.%lld.%s.cnn.v2", subdir, (long long)run_started, host);
    CNN_TRY(cnn_make_dirs(subdir));

    cnn_strbuf_init(&ev);
    pb_event_head(&ev, run_started, 0);
    pb_bytes(&ev, 3, "brain.Event:2", strlen("brain.Event:2"));
    tf_record(&out, &ev);
    cnn_strbuf_free(&ev);
    for (int i = 0; i < n; i++) {
        if (validation && !h[i].has_val) continue;
        cnn_strbuf_init(&sum);
        pb_scalar(&sum, "epoch_loss", validation ? h[i].val_loss : h[i].loss);
        pb_scalar(&sum, "epoch_accuracy", validation ? h[i].val_accuracy : h[i].accuracy);
        if (!validation) pb_scalar(&sum, "epoch_learning_rate", h[i].lr);
        cnn_strbuf_init(&ev);
        pb_event_head(&ev, h[i].wall_time, h[i].epoch);
        if (sum.status != CNN_OK) ev.status = sum.status;
        else pb_bytes(&ev, 5, sum.data, sum.len);
        tf_record(&out, &ev);
        if (ev.status != CNN_OK) out.status = ev.status;
        cnn_strbuf_free(&ev);
        cnn_strbuf_free(&sum);
    }
    st = write_strbuf(path, &out);
fail:
    cnn_strbuf_free(&out);
    free(subdir);
    free(path);
    return st;
}

cnn_status cnn_tensorboard_write(const char *dir, double run_started, const cnn_epoch_stats *h, int n)
{
    cnn_status st = write_events(dir, "train", run_started, h, n, 0);
    int has_val = 0;
    for (int i = 0; i < n; i++) has_val |= h[i].has_val;
    if (st == CNN_OK && has_val) st = write_events(dir, "validation", run_started, h, n, 1);
    if (st != CNN_OK) cnn_error_prefix(st, "--tensorboard %s: ", dir);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// the PNG plot: two panels (loss, accuracy), training and validation curves, axes with tick labels

#define PLOT_W 1000
#define PLOT_H 420
#define PANEL_W (PLOT_W / 2)
#define MARGIN_L 70
#define MARGIN_R 20
#define MARGIN_T 44
#define MARGIN_B 56
#define FONT_SCALE 2

static const unsigned char COLOR_TRAIN[3] = {31, 119, 180}; /* matplotlib's first two colors */
static const unsigned char COLOR_VAL[3] = {255, 127, 14};
static const unsigned char COLOR_AXIS[3] = {40, 40, 40};
static const unsigned char COLOR_GRID[3] = {225, 225, 225};

typedef struct canvas {
    unsigned char *px; /* PLOT_H rows of PLOT_W RGB pixels */
} canvas;

static void fill_rect(canvas *c, int x0, int y0, int w, int h, const unsigned char *rgb)
{
    cnn_draw_rect(c->px, PLOT_W, PLOT_H, x0, y0, w, h, rgb);
}

/* A 2-pixel-wide line: the 1-pixel line and its copies one pixel right, down, and both. */
static void line(canvas *c, int x0, int y0, int x1, int y1, const unsigned char *rgb)
{
    for (int k = 0; k < 4; k++)
        cnn_draw_line(c->px, PLOT_W, PLOT_H, x0 + (k & 1), y0 + (k >> 1), x1 + (k & 1), y1 + (k >> 1), rgb);
}

/* Draws text with its top-left corner at (x, y); returns its width in pixels. */
static int text(canvas *c, int x, int y, const char *s, const unsigned char *rgb)
{
    return cnn_draw_text(c->px, PLOT_W, PLOT_H, x, y, s, FONT_SCALE, rgb);
}

static int text_width(const char *s) { return cnn_draw_text_width(s, FONT_SCALE); }

/* One panel at x offset `ox`: values of epochs 1..n, training (a) and validation (b, when has_b). */
static void panel(canvas *c, int ox, const char *title, const double *a, const double *b, int has_b, int n)
{
    int x0 = ox + MARGIN_L, x1 = ox + PANEL_W - MARGIN_R, y0 = MARGIN_T, y1 = PLOT_H - MARGIN_B;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (isfinite(a[i])) lo = fmin(lo, a[i]), hi = fmax(hi, a[i]);
        if (has_b && isfinite(b[i])) lo = fmin(lo, b[i]), hi = fmax(hi, b[i]);
    }
    if (!(lo <= hi)) lo = 0.0, hi = 1.0;
    double pad = hi > lo ? 0.05 * (hi - lo) : fmax(fabs(hi) * 0.05, 0.05);
    lo -= pad;
    hi += pad;
    enum { YTICKS = 5 };
    char label[32];
    for (int t = 0; t < YTICKS; t++) {
        double v = lo + (hi - lo) * t / (YTICKS - 1);
        int y = y1 - (int)lround((double)(y1 - y0) * t / (YTICKS - 1));
        fill_rect(c, x0, y, x1 - x0, 1, COLOR_GRID);
        snprintf(label, sizeof label, "%.3g", v);
        text(c, x0 - 8 - text_width(label), y - 7, label, COLOR_AXIS);
    }
    int xstep = n > 10 ? (n + 9) / 10 : 1;
    for (int e = 1; e <= n; e += xstep) {
        int x = n > 1 ? x0 + (int)lround((double)(x1 - x0) * (e - 1) / (n - 1)) : (x0 + x1) / 2;
        fill_rect(c, x, y1, 1, 6, COLOR_AXIS);
        snprintf(label, sizeof label, "%d", e);
        text(c, x - text_width(label) / 2, y1 + 10, label, COLOR_AXIS);
    }
    text(c, (x0 + x1 - text_width("epoch")) / 2, y1 + 34, "epoch", COLOR_AXIS);
    text(c, (x0 + x1 - text_width(title)) / 2, 12, title, COLOR_AXIS);
    fill_rect(c, x0, y0, 1, y1 - y0 + 1, COLOR_AXIS);
    fill_rect(c, x0, y1, x1 - x0 + 1, 1, COLOR_AXIS);
    for (int k = 0; k < 1 + has_b; k++) {
        const double *v = k ? b : a;
        const unsigned char *rgb = k ? COLOR_VAL : COLOR_TRAIN;
        int px = 0, py = 0;
        for (int i = 0; i < n; i++) {
            int x = n > 1 ? x0 + (int)lround((double)(x1 - x0) * i / (n - 1)) : (x0 + x1) / 2;
            double f = isfinite(v[i]) ? (v[i] - lo) / (hi - lo) : 0.0;
            int y = y1 - (int)lround((double)(y1 - y0) * f);
            if (i) line(c, px, py, x, y, rgb);
            fill_rect(c, x - 3, y - 3, 7, 7, rgb);
            px = x;
            py = y;
        }
        /* the legend, top right */
        int ly = y0 + 8 + 22 * k, lx = x1 - 110;
        fill_rect(c, lx, ly + 6, 24, 3, rgb);
        text(c, lx + 32, ly, k ? "val" : "train", COLOR_AXIS);
    }
}

cnn_status cnn_plot_write(const char *path, const cnn_epoch_stats *h, int n)
{
    if (n < 1) return cnn_error(CNN_ERR_INVALID_ARG, "%s: no epoch to plot", path);
    canvas c = {malloc((size_t)PLOT_W * PLOT_H * 3)};
    double *v = malloc((size_t)n * 4 * sizeof *v);
    if (!c.px || !v) {
        free(c.px);
        free(v);
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory", path);
    }
    memset(c.px, 255, (size_t)PLOT_W * PLOT_H * 3);
    int has_val = 1;
    for (int i = 0; i < n; i++) {
        v[i] = h[i].loss;
        v[n + i] = h[i].val_loss;
        v[2 * n + i] = h[i].accuracy;
        v[3 * n + i] = h[i].val_accuracy;
        has_val &= h[i].has_val;
    }
    panel(&c, 0, "loss", v, v + n, has_val, n);
    panel(&c, PANEL_W, "accuracy", v + 2 * n, v + 3 * n, has_val, n);
    cnn_status st = cnn_image_write_png(path, PLOT_W, PLOT_H, 3, c.px);
    free(c.px);
    free(v);
    return st;
}
