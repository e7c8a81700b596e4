/* Image files: decoding PNG, JPEG and BMP with stb_image (Debian's libstb holds the implementation, so the
 * header is included without STB_IMAGE_IMPLEMENTATION), channel conversion, resizing, PNG writing.
 *
 * Rules: the format is sniffed from the first bytes and only PNG, JPEG and BMP are decoded (stb_image also
 * accepts TGA, whose lack of a magic number makes any garbage "decodable"); the dimensions are read from the
 * header and checked against CNN_IMAGE_MAX_PIXELS before anything is decoded. */
#include "core/data/image.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>
#include <stb_image_write.h>
#include <zlib.h>

#include "cnn/data.h"
#include "cnn/pipeline.h"
#include "core/data/augment.h"
#include "core/error.h"
#include "core/fileio.h"
#include "core/grow.h"

/* ITU-R BT.601 luma weights (also what PIL's convert("L") uses). */
#define LUMA_R 0.299f
#define LUMA_G 0.587f
#define LUMA_B 0.114f

// ---------------------------------------------------------------------------------------------------------------
// format sniffing

typedef enum { FMT_OTHER = 0, FMT_PNG, FMT_JPEG, FMT_BMP } image_format;

static const char *const format_names[] = {"image", "PNG", "JPEG", "BMP"};

static image_format sniff(const unsigned char *p, size_t n)
{
    static const unsigned char png[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n >= 8 && !memcmp(p, png, 8)) return FMT_PNG;
    if (n >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff) return FMT_JPEG;
    if (n >= 2 && p[0] == 'B' && p[1] == 'M') return FMT_BMP;
    return FMT_OTHER;
}

/* What a file that is not PNG, JPEG or BMP looks like, for the message. */
static void describe_other(const unsigned char *p, size_t n, char *buf, size_t size)
{
    static const struct {
        const char *magic;
        size_t len;
        const char *what;
    } known[] = {
        {"GIF87a", 6, "a GIF image"},
        {"GIF89a", 6, "a GIF image"},
        {"II*\0", 4, "a TIFF image"},
        {"MM\0*", 4, "a TIFF image"},
        {"8BPS", 4, "a Photoshop (PSD) image"},
        {"#?RADIANCE", 10, "a Radiance HDR image"},
        {"#?RGBE", 6, "a Radiance HDR image"},
        {"qoif", 4, "a QOI image"},
        {"\0\0\1\0", 4, "a Windows icon (ICO)"},
        {"\x1f\x8b", 2, "gzip-compressed data"},
        {"%PDF", 4, "a PDF document"},
        {"\x89PNG", 4, "a damaged PNG (its signature is incomplete)"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (n >= known[i].len && !memcmp(p, known[i].magic, known[i].len)) {
            snprintf(buf, size, "%s", known[i].what);
            return;
        }
    if (n >= 12 && !memcmp(p, "RIFF", 4) && !memcmp(p + 8, "WEBP", 4)) {
        snprintf(buf, size, "a WebP image");
        return;
    }
    if (n >= 3 && p[0] == 'P' && p[1] >= '1' && p[1] <= '7' && (p[2] == '\n' || p[2] == ' ' || p[2] == '\r')) {
        snprintf(buf, size, "a Netpbm (PBM/PGM/PPM/PAM) image");
        return;
    }
    size_t look = n < 512 ? n : 512, text = 0;
    for (size_t i = 0; i < look; i++)
        if ((p[i] >= 0x20 && p[i] < 0x7f) || p[i] == '\n' || p[i] == '\r' || p[i] == '\t' || p[i] >= 0x80) text++;
    if (look > 0 && text == look) {
        snprintf(buf, size, "a text file");
        return;
    }
    size_t len = (size_t)snprintf(buf, size, "an unknown format (first bytes");
    for (size_t i = 0; i < n && i < 8 && len < size; i++) len += (size_t)snprintf(buf + len, size - len, " %02x", p[i]);
    if (len < size) snprintf(buf + len, size - len, ")");
}

/* The dimensions a PNG, JPEG or BMP header declares, read here because stbi_info_from_memory tries every format
 * in turn and its failure reason is that of the last one tried, not of the format the file claims to be.
 * Returns 0 when the header is too short or odd; stb_image then has the last word. */
static int header_dims(image_format fmt, const unsigned char *p, size_t n, long long *w, long long *h)
{
#define BE16(q) (((unsigned)(q)[0] << 8) | (unsigned)(q)[1])
#define BE32(q) (((uint32_t)(q)[0] << 24) | ((uint32_t)(q)[1] << 16) | ((uint32_t)(q)[2] << 8) | (uint32_t)(q)[3])
#define LE16(q) ((unsigned)(q)[0] | ((unsigned)(q)[1] << 8))
#define LE32(q) ((uint32_t)(q)[0] | ((uint32_t)(q)[1] << 8) | ((uint32_t)(q)[2] << 16) | ((uint32_t)(q)[3] << 24))
    if (fmt == FMT_PNG) { /* signature, then the IHDR chunk: length, "IHDR", width, height (big-endian) */
        if (n < 24 || memcmp(p + 12, "IHDR", 4) != 0) return 0;
        *w = BE32(p + 16);
        *h = BE32(p + 20);
        return 1;
    }
    if (fmt == FMT_BMP) { /* file header (14 bytes), then the DIB header: its size, width, height */
        if (n < 26) return 0;
        if (LE32(p + 14) == 12) { /* OS/2 BITMAPCOREHEADER: 16-bit sizes */
            *w = LE16(p + 18);
            *h = LE16(p + 20);
        } else {
            *w = (int32_t)LE32(p + 18);
            *h = (int32_t)LE32(p + 22);
            if (*h < 0) *h = -*h; /* top-down rows */
        }
        return 1;
    }
    /* JPEG: walk the marker segments up to the first start-of-frame (SOF0-15 but DHT, JPG, DAC) */
    size_t i = 2;
    while (i + 4 <= n) {
        if (p[i] != 0xff) return 0;
        unsigned m = p[i + 1];
        if (m == 0xff) { /* fill byte */
            i++;
            continue;
        }
        if (m == 0x01 || (m >= 0xd0 && m <= 0xd8)) { /* markers without a length */
            i += 2;
            continue;
        }
        if (m == 0xd9 || m == 0xda) return 0; /* end of image, start of scan: no frame header before */
        size_t len = BE16(p + i + 2);
        if (len < 2) return 0;
        if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
            if (i + 9 > n) return 0;
            *h = BE16(p + i + 5);
            *w = BE16(p + i + 7);
            return 1;
        }
        i += 2 + len;
    }
    return 0;
}

/* A PNG chunk that declares more bytes than the file has left, written to why[]: stb_image grows its buffer to a
 * declared IDAT length before it reads the data (a 200-byte file asked for 2 GiB). Checked up to IEND; 0 when
 * every chunk fits. */
static int png_problem(const unsigned char *p, size_t n, char *why, size_t size)
{
    size_t i = 8;
    while (n - i >= 8) {
        uint32_t len = BE32(p + i);
        const unsigned char *type = p + i + 4;
        if ((uint64_t)len + 12 > n - i) {
            char t[5];
            for (int k = 0; k < 4; k++) t[k] = type[k] >= 0x20 && type[k] < 0x7f ? (char)type[k] : '?';
            t[4] = '\0';
            snprintf(why, size, "chunk '%s' at byte %zu declares %u bytes, past the end of the file (%zu bytes)", t, i,
                     len, n);
            return 1;
        }
        if (!memcmp(type, "IEND", 4)) return 0;
        i += 12 + (size_t)len;
    }
    return 0;
}

/* What is wrong with a BMP that stb_image would decode anyway, reading past the file or its palette into
 * memory it never wrote (the pixels would then be whatever that memory held): a header longer than the file, a
 * compression stb_image does not implement, pixel rows beyond the end of the file (a 59-byte file declaring 30
 * megapixels), or a palette index beyond the palette. NULL when none of that is the case, or when the header is
 * too odd for these checks (stb_image then has the last word). Bounded by the file's size. */
static const char *bmp_problem(const unsigned char *p, size_t n)
{
    if (n < 18) return NULL;
    uint32_t dib = LE32(p + 14), offset = LE32(p + 10);
    if (dib != 12 && dib < 40) return NULL;
    if (dib > n - 14) return "the file is shorter than its header";
    if (offset > n) return "the pixel data would start past the end of the file";
    int64_t w, h;
    unsigned bpp;
    uint32_t compression = 0;
    if (dib == 12) { /* OS/2 BITMAPCOREHEADER: 16-bit sizes, 3-byte palette entries */
        w = LE16(p + 18);
        h = LE16(p + 20);
        bpp = LE16(p + 24);
    } else {
        w = (int32_t)LE32(p + 18);
        h = (int32_t)LE32(p + 22);
        bpp = LE16(p + 28);
        compression = LE32(p + 30);
    }
    if (compression != 0 && !(compression == 3 && (bpp == 16 || bpp == 32)))
        return "its compression is not supported (only uncompressed BMPs, and bit fields of 16 and 32 bits)";
    if (w <= 0 || h == 0 || (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)) return NULL;
    if (h < 0) h = -h;
    uint64_t row = (((uint64_t)w * bpp + 31) / 32) * 4;
    if (row > (uint64_t)(n - offset) / (uint64_t)h) /* row * h > n - offset, without the product */
        return "the file is shorter than the pixel rows its header declares";
    if (bpp > 8) return NULL;
    /* stb_image reads the palette that fits between the header and the pixels, into an array it does not clear */
    uint64_t entry = dib == 12 ? 3 : 4, start = 14 + (uint64_t)dib;
    uint64_t colors = offset > start ? (offset - start) / entry : 0;
    if (colors >= (1u << bpp)) return NULL;
    for (int64_t y = 0; y < h; y++) {
        const unsigned char *r = p + offset + (uint64_t)y * row;
        for (int64_t x = 0; x < w; x++) {
            unsigned idx = bpp == 8 ? r[x] : bpp == 4 ? (r[x / 2] >> (x % 2 ? 0 : 4)) & 15 : (r[x / 8] >> (7 - x % 8)) & 1;
            if (idx >= colors) return "a pixel's palette index is beyond the palette";
        }
    }
    return NULL;
}

#undef BE16
#undef BE32
#undef LE16
#undef LE32

// ---------------------------------------------------------------------------------------------------------------
// resizing

/* For one axis: output pixel i is the sum over k < count[i] of weight[i * taps + k] * input[first[i] + k]. */
typedef struct axis_plan {
    int taps;
    int *first;
    int *count;
    float *weight;
} axis_plan;

static void axis_plan_free(axis_plan *p)
{
    free(p->first);
    free(p->count);
    free(p->weight);
    memset(p, 0, sizeof *p);
}

static cnn_status axis_plan_make(int in, int out, axis_plan *p)
{
    memset(p, 0, sizeof *p);
    double scale = (double)in / (double)out;
    /* shrinking: an output pixel covers `scale` inputs, touching at most ceil(scale) + 1 of them */
    p->taps = out >= in ? 2 : (int)ceil(scale) + 1;
    p->first = malloc((size_t)out * sizeof *p->first);
    p->count = malloc((size_t)out * sizeof *p->count);
    p->weight = calloc((size_t)out * (size_t)p->taps, sizeof *p->weight);
    if (!p->first || !p->count || !p->weight) {
        axis_plan_free(p);
        return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for resizing weights");
    }
    for (int i = 0; i < out; i++) {
        float *wt = p->weight + (size_t)i * (size_t)p->taps;
        if (out == in) {
            p->first[i] = i;
            p->count[i] = 1;
            wt[0] = 1.0f;
        } else if (out > in) {
            /* bilinear, half-pixel centers: output center i + 0.5 maps to input coordinate (i + 0.5) * scale, i.e.
             * to the position (i + 0.5) * scale - 0.5 between input centers; clamped at the edges */
            double x = ((double)i + 0.5) * scale - 0.5;
            if (x < 0.0) x = 0.0;
            int x0 = (int)x;
            if (x0 >= in - 1) {
                p->first[i] = in - 1;
                p->count[i] = 1;
                wt[0] = 1.0f;
            } else {
                double frac = x - (double)x0;
                p->first[i] = x0;
                p->count[i] = 2;
                wt[0] = (float)(1.0 - frac);
                wt[1] = (float)frac;
            }
        } else {
            /* area: output pixel i covers input interval [i * scale, (i + 1) * scale); each input pixel j weighs
             * the length of its overlap with that interval, over the interval's length */
            double start = (double)i * scale, end = (double)(i + 1) * scale;
            if (end > in) end = in;
            int j0 = (int)floor(start), j1 = (int)ceil(end);
            if (j1 > in) j1 = in;
            if (j1 - j0 > p->taps) j1 = j0 + p->taps; /* cannot happen; keeps the writes inside the row */
            double total = 0.0;
            int k = 0;
            for (int j = j0; j < j1; j++) {
                double lo = start > j ? start : j, hi = end < j + 1 ? end : j + 1;
                double overlap = hi - lo;
                if (overlap <= 0.0) continue;
                if (k == 0) p->first[i] = j;
                wt[j - p->first[i]] = (float)overlap;
                k = j - p->first[i] + 1;
                total += overlap;
            }
            if (k == 0) { /* degenerate rounding: fall back to the nearest pixel */
                p->first[i] = j0 < in ? j0 : in - 1;
                wt[0] = 1.0f;
                k = 1;
                total = 1.0;
            }
            p->count[i] = k;
            for (int t = 0; t < k; t++) wt[t] = (float)(wt[t] / total);
        }
    }
    return CNN_OK;
}

/* Where the resizer reads its input rows: row y of the source as sw * c floats, in `scratch` when it has to be
 * made (converted from 8-bit pixels) or straight from a float image. */
typedef const float *(*row_fn)(const void *ctx, int y, float *scratch);

typedef struct float_rows {
    const float *src;
    size_t row;
} float_rows;

static const float *float_row(const void *ctx, int y, float *scratch)
{
    (void)scratch;
    const float_rows *f = ctx;
    return f->src + (size_t)y * f->row;
}

typedef struct u8_rows {
    const cnn_image_u8 *img;
    int c;
} u8_rows;

static const float *u8_row(const void *ctx, int y, float *scratch)
{
    const u8_rows *u = ctx;
    cnn_image_u8 row = *u->img;
    row.pixels = u->img->pixels + (size_t)y * (size_t)row.w * (size_t)row.n;
    row.h = 1;
    cnn_image_u8_to_float(&row, u->c, scratch);
    return scratch;
}

/* Separable resize, streamed: each source row is read once, resized horizontally, and added with its weight into
 * the output rows that use it. Memory is the output plus one source row and one resized row: a tall source (a
 * 5 x 6,000,000 BMP) costs no more than a square one, whatever its height. Each output value is
 * sum_t w[t] * in[first + t], accumulated in the order of t (source rows come in increasing order); the loops are
 * arranged so that the compiler can vectorize over channels and columns without changing that order. */
static cnn_status resize_rows(row_fn rows, const void *ctx, int sh, int sw, int c, float *dst, int dh, int dw)
{
    cnn_status st = CNN_OK;
    axis_plan px = {0}, py = {0};
    float *line = NULL, *hrow = NULL;
    size_t row_in = (size_t)sw * (size_t)c, row_out = (size_t)dw * (size_t)c;

    line = malloc(row_in * sizeof *line);
    /* the horizontal result: straight into dst when the height does not change */
    hrow = dh == sh || dw == sw ? NULL : malloc(row_out * sizeof *hrow);
    if (!line || (dh != sh && dw != sw && !hrow)) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory resizing %dx%d to %dx%d", sh, sw, dh, dw);
        goto fail;
    }
    if (dw != sw) CNN_TRY(axis_plan_make(sw, dw, &px));
    if (dh != sh) {
        CNN_TRY(axis_plan_make(sh, dh, &py));
        for (size_t i = 0; i < (size_t)dh * row_out; i++) dst[i] = 0.0f;
    }
    int lo = 0; /* the first output row that source rows from y on may still feed */
    for (int y = 0; y < sh; y++) {
        const float *in = rows(ctx, y, line);
        const float *h = in; /* row y resized horizontally */
        if (dw != sw) {
            float *o = dh == sh ? dst + (size_t)y * row_out : hrow;
            for (int x = 0; x < dw; x++) {
                const float *wt = px.weight + (size_t)x * (size_t)px.taps;
                const float *base = in + (size_t)px.first[x] * (size_t)c;
                float *ox = o + (size_t)x * (size_t)c;
                if (c == 3) { /* RGB, the common case, with the channel loop unrolled */
                    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
                    for (int t = 0; t < px.count[x]; t++, base += 3) {
                        a0 += wt[t] * base[0];
                        a1 += wt[t] * base[1];
                        a2 += wt[t] * base[2];
                    }
                    ox[0] = a0;
                    ox[1] = a1;
                    ox[2] = a2;
                    continue;
                }
                for (int k = 0; k < c; k++) ox[k] = 0.0f;
                for (int t = 0; t < px.count[x]; t++)
                    for (int k = 0; k < c; k++) ox[k] += wt[t] * base[(size_t)t * (size_t)c + (size_t)k];
            }
            h = o;
        }
        if (dh == sh) {
            if (dw == sw) memcpy(dst + (size_t)y * row_out, in, row_out * sizeof *dst);
            continue;
        }
        while (lo < dh && py.first[lo] + py.count[lo] <= y) lo++;
        for (int oy = lo; oy < dh && py.first[oy] <= y; oy++) {
            int t = y - py.first[oy];
            if (t >= py.count[oy]) continue;
            const float w = py.weight[(size_t)oy * (size_t)py.taps + (size_t)t];
            float *o = dst + (size_t)oy * row_out;
            for (size_t i = 0; i < row_out; i++) o[i] += w * h[i];
        }
    }

fail:
    axis_plan_free(&px);
    axis_plan_free(&py);
    free(hrow);
    free(line);
    return st;
}

/* The buffers are the output (dh x dw x c floats), one source row and the axis weights (about sh + dh and
 * sw + dw floats). */
static cnn_status resize_check(const char *what, int sh, int sw, int c, int dh, int dw)
{
    if (sh <= 0 || sw <= 0 || dh <= 0 || dw <= 0 || c <= 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: bad arguments (%dx%dx%d to %dx%d)", what, sh, sw, c, dh, dw);
    size_t mh = (size_t)(sh > dh ? sh : dh), mw = (size_t)(sw > dw ? sw : dw);
    if (mw > SIZE_MAX / sizeof(float) / mh / (size_t)c / 2)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: %dx%dx%d to %dx%d does not fit in memory", what, sh, sw, c, dh, dw);
    return CNN_OK;
}

cnn_status cnn_image_resize(const float *src, int sh, int sw, int c, float *dst, int dh, int dw)
{
    if (!src || !dst) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_resize: bad arguments (no image)");
    cnn_status st = resize_check("cnn_image_resize", sh, sw, c, dh, dw);
    if (st != CNN_OK) return st;
    float_rows f = {src, (size_t)sw * (size_t)c};
    return resize_rows(float_row, &f, sh, sw, c, dst, dh, dw);
}

cnn_status cnn_image_resize_u8(const cnn_image_u8 *img, int c, float *dst, int dh, int dw)
{
    if (!img || !img->pixels || !dst || img->n < 1 || img->n > 4)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_resize_u8: bad arguments (no image)");
    cnn_status st = resize_check("cnn_image_resize_u8", img->h, img->w, c, dh, dw);
    if (st != CNN_OK) return st;
    u8_rows u = {img, c};
    return resize_rows(u8_row, &u, img->h, img->w, c, dst, dh, dw);
}

// ---------------------------------------------------------------------------------------------------------------
// decoding

void cnn_image_u8_free(cnn_image_u8 *img)
{
    if (!img) return;
    free(img->pixels); /* stb_image allocates with malloc (STBI_MALLOC's default), as core/data/jpeg.c does */
    memset(img, 0, sizeof *img);
}

static cnn_status decode_stb(const unsigned char *file, size_t len, const char *path, image_format fmt,
                             long long max_pixels, cnn_image_u8 *out);

/* A palette PNG whose PLTE chunk has fewer than 256 entries, copied with the palette padded to 256 black entries:
 * stb_image expands pixels through a 256-entry palette on its stack that it fills only as far as PLTE goes, so an
 * index past the palette read memory it never wrote (the same file decoded to other colours each time). With the
 * padding such pixels are black, as libpng decodes them (its "palette index exceeding num_palette" is a benign
 * error). *out stays NULL when the file needs no copy; returns 0 when out of memory. */
static int png_pad_palette(const unsigned char *p, size_t n, unsigned char **out, size_t *out_len)
{
    *out = NULL;
    if (n < 33 || p[25] != 3) return 1; /* IHDR's colour type: 3 is indexed colour */
    size_t i = 8;
    while (n - i >= 12) { /* png_problem checked that every chunk up to IEND fits in the file */
        uint32_t len = (uint32_t)p[i] << 24 | (uint32_t)p[i + 1] << 16 | (uint32_t)p[i + 2] << 8 | p[i + 3];
        if (!memcmp(p + i + 4, "IEND", 4) || (uint64_t)len + 12 > n - i) return 1;
        if (memcmp(p + i + 4, "PLTE", 4)) {
            i += 12 + (size_t)len;
            continue;
        }
        if (len >= 768 || len % 3) return 1; /* full, or malformed: stb_image has the last word */
        size_t grown = n + (768 - len);
        unsigned char *c = malloc(grown);
        if (!c) return 0;
        memcpy(c, p, i);
        unsigned char *chunk = c + i;
        chunk[0] = 0;
        chunk[1] = 0;
        chunk[2] = 768 >> 8;
        chunk[3] = 768 & 0xff;
        memcpy(chunk + 4, "PLTE", 4);
        memcpy(chunk + 8, p + i + 8, len);
        memset(chunk + 8 + len, 0, 768 - len);
        uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), chunk + 4, 4 + 768);
        unsigned char *tail = chunk + 8 + 768; /* after the length, the type and the data: the CRC, then the rest */
        tail[0] = (unsigned char)(crc >> 24);
        tail[1] = (unsigned char)(crc >> 16);
        tail[2] = (unsigned char)(crc >> 8);
        tail[3] = (unsigned char)crc;
        memcpy(tail + 4, p + i + 12 + len, n - i - 12 - len);
        *out = c;
        *out_len = grown;
        return 1;
    }
    return 1;
}

int cnn_image_have_libjpeg_turbo(void)
{
#ifdef CNN_HAVE_LIBJPEG_TURBO
    return 1;
#else
    return 0;
#endif
}

cnn_status cnn_image_decode_memory(const unsigned char *file, size_t len, const char *path, long long max_pixels,
                                   int want_h, int want_w, cnn_image_u8 *out)
{
    memset(out, 0, sizeof *out);
    if (max_pixels <= 0) max_pixels = CNN_IMAGE_MAX_PIXELS;
    if (len == 0) return cnn_error(CNN_ERR_FORMAT, "%s: the file is empty", path);
    if (len > (size_t)INT_MAX) /* stb_image takes an int length */
        return cnn_error(CNN_ERR_FORMAT, "%s: %zu bytes is too large for an image file", path, len);
    image_format fmt = sniff(file, len);
    if (fmt == FMT_OTHER) {
        char what[128];
        describe_other(file, len, what, sizeof what);
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: looks like %s; only PNG, JPEG and BMP images are supported", path,
                         what);
    }
    const char *fname = format_names[fmt];

    long long hw = 0, hh = 0;
    if (header_dims(fmt, file, len, &hw, &hh)) {
        if (hw <= 0 || hh <= 0)
            return cnn_error(CNN_ERR_FORMAT, "%s: the %s header declares %lldx%lld pixels: not an image size", path,
                             fname, hw, hh);
        if (hw > max_pixels / hh) /* hw * hh > max_pixels, without the product (each side may be near 2^32) */
            return cnn_error(CNN_ERR_UNSUPPORTED, "%s: the %s header declares %lldx%lld pixels, above the limit of "
                             "%lld", path, fname, hw, hh, max_pixels);
    }
    if (fmt == FMT_JPEG && cnn_image_have_libjpeg_turbo())
        return cnn_jpeg_decode(file, len, path, max_pixels, want_h, want_w, out);

    const char *bad_bmp = fmt == FMT_BMP ? bmp_problem(file, len) : NULL;
    if (bad_bmp) return cnn_error(CNN_ERR_FORMAT, "%s: corrupt BMP: %s", path, bad_bmp);
    char why[160];
    if (fmt == FMT_PNG && png_problem(file, len, why, sizeof why))
        return cnn_error(CNN_ERR_FORMAT, "%s: corrupt PNG: %s", path, why);
    if (fmt != FMT_PNG) return decode_stb(file, len, path, fmt, max_pixels, out);
    unsigned char *padded = NULL;
    size_t padded_len = 0;
    if (!png_pad_palette(file, len, &padded, &padded_len))
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory for the PNG's palette", path);
    cnn_status st = decode_stb(padded ? padded : file, padded ? padded_len : len, path, fmt, max_pixels, out);
    free(padded);
    return st;
}

/* stb_image's part of cnn_image_decode_memory: the header once more, then the pixels. */
static cnn_status decode_stb(const unsigned char *file, size_t len, const char *path, image_format fmt,
                             long long max_pixels, cnn_image_u8 *out)
{
    const char *fname = format_names[fmt];
    int sw = 0, sh = 0, comp = 0;
    if (!stbi_info_from_memory(file, (int)len, &sw, &sh, &comp))
        return cnn_error(CNN_ERR_FORMAT, "%s: corrupt or truncated %s header (stb_image cannot read it)", path, fname);
    if (fmt == FMT_BMP && sh < 0 && sh != INT_MIN) sh = -sh; /* stb_image reports a top-down BMP's height as is */
    if (sw <= 0 || sh <= 0 || (long long)sw * sh > max_pixels)
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: the %s header declares %dx%d pixels, above the limit of %lld", path,
                         fname, sw, sh, max_pixels);

    /* another thread (or a caller) may have asked stb_image to flip images; this thread never wants that */
    stbi_set_flip_vertically_on_load_thread(0);
    int x = 0, y = 0, n = 0;
    unsigned char *pix = stbi_load_from_memory(file, (int)len, &x, &y, &n, 0);
    if (!pix) {
        const char *why = stbi_failure_reason();
        return cnn_error(CNN_ERR_FORMAT, "%s: corrupt or truncated %s (stb_image: %s)", path, fname, why ? why : "?");
    }
    if (x != sw || y != sh || n < 1 || n > 4) {
        stbi_image_free(pix);
        return cnn_error(CNN_ERR_FORMAT, "%s: decoded %dx%d with %d channels, but the header said %dx%d", path, x, y,
                         n, sw, sh);
    }
    out->pixels = pix;
    out->w = x;
    out->h = y;
    out->n = n;
    out->decoder = "stb_image";
    return CNN_OK;
}

cnn_status cnn_image_decode_file(const char *path, long long max_pixels, int want_h, int want_w, cnn_image_u8 *out)
{
    unsigned char *file = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    cnn_status st = cnn_read_file(path, CNN_IMAGE_MAX_FILE_BYTES, &file, &len);
    if (st == CNN_OK) st = cnn_image_decode_memory(file, len, path, max_pixels, want_h, want_w, out);
    free(file);
    return st;
}

/* v / 255 for every byte: the exactly rounded quotients, without a division each */
static float byte_scale[256];
static pthread_once_t byte_scale_once = PTHREAD_ONCE_INIT;

static void byte_scale_init(void)
{
    for (int v = 0; v < 256; v++) byte_scale[v] = (float)v / 255.0f;
}

void cnn_image_u8_to_float(const cnn_image_u8 *img, int c, float *out)
{
    /* Alpha (n == 2 or 4) is dropped: the colour channels are taken as stored, as PIL's convert("RGB") /
     * convert("L") do, not composited on any background. */
    pthread_once(&byte_scale_once, byte_scale_init);
    const float *scale = byte_scale;
    size_t npix = (size_t)img->w * (size_t)img->h;
    int n = img->n;
    const unsigned char *p = img->pixels;
    if (n == c) {
        for (size_t i = 0; i < npix * (size_t)c; i++) out[i] = scale[p[i]];
        return;
    }
    if ((n == 2 && c == 1) || (n == 4 && c == 3)) { /* a copy, skipping alpha */
        for (size_t i = 0; i < npix; i++, p += n, out += c)
            for (int k = 0; k < c; k++) out[k] = scale[p[k]];
        return;
    }
    for (size_t i = 0; i < npix; i++, p += n, out += c) {
        if (n <= 2) { /* gray, gray + alpha */
            float v = scale[p[0]];
            for (int k = 0; k < c; k++) out[k] = v;
        } else if (c == 3) {
            out[0] = scale[p[0]];
            out[1] = scale[p[1]];
            out[2] = scale[p[2]];
        } else {
            out[0] = (LUMA_R * (float)p[0] + LUMA_G * (float)p[1] + LUMA_B * (float)p[2]) / 255.0f;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// loading

cnn_status cnn_image_load(const char *path, int h, int w, int c, float *out)
{
    cnn_status st = CNN_OK;
    cnn_image_u8 img = {0};

    if (!path || !out || h <= 0 || w <= 0 || (c != 1 && c != 3))
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_load(%s): bad arguments (%dx%dx%d; c must be 1 or 3)",
                         path ? path : "", h, w, c);
    if ((long long)h * w > CNN_IMAGE_MAX_PIXELS)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_load(%s): output size %dx%d is above the limit of %lld "
                         "pixels", path, h, w, CNN_IMAGE_MAX_PIXELS);
    CNN_TRY(cnn_image_decode_file(path, CNN_IMAGE_MAX_PIXELS, h, w, &img));
    CNN_TRY(cnn_image_resize_u8(&img, c, out, h, w));
fail:
    cnn_image_u8_free(&img);
    return st;
}

cnn_status cnn_image_load_crop(const char *path, int rh, int rw, int h, int w, int c, float *out)
{
    if (rh == h && rw == w) return cnn_image_load(path, h, w, c, out);
    if (!out || h <= 0 || w <= 0 || rh < h || rw < w)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_load_crop(%s): cannot crop %dx%d out of %dx%d",
                         path ? path : "", h, w, rh, rw);
    if ((long long)rh * rw > CNN_IMAGE_MAX_PIXELS)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_load_crop(%s): resize %dx%d is above the limit of %lld "
                         "pixels", path ? path : "", rh, rw, CNN_IMAGE_MAX_PIXELS);
    float *resized = malloc((size_t)rh * rw * (size_t)(c > 0 ? c : 1) * sizeof *resized);
    if (!resized) return cnn_error(CNN_ERR_NO_MEMORY, "%s: no memory to resize to %dx%d", path ? path : "", rh, rw);
    cnn_status st = cnn_image_load(path, rh, rw, c, resized);
    if (st == CNN_OK) {
        int oy, ox;
        cnn_crop_origin(rh, rw, h, w, 0, 0, NULL, &oy, &ox);
        cnn_crop_image(resized, rh, rw, c, out, h, w, oy, ox, CNN_FILL_CONSTANT, 0.0f);
    }
    free(resized);
    return st;
}

cnn_status cnn_image_load_crop_memory(const unsigned char *data, size_t len, const char *name, long long max_pixels,
                                      int rh, int rw, int h, int w, int c, float *out)
{
    cnn_status st = CNN_OK;
    cnn_image_u8 img = {0};
    float *resized = NULL;
    if (!data || !out || h <= 0 || w <= 0 || rh < h || rw < w || (c != 1 && c != 3))
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_load_crop_memory(%s): bad arguments (crop %dx%dx%d out of "
                         "%dx%d; c must be 1 or 3)", name ? name : "", h, w, c, rh, rw);
    if ((long long)rh * rw > CNN_IMAGE_MAX_PIXELS)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_load_crop_memory(%s): resize %dx%d is above the limit of %lld "
                         "pixels", name ? name : "", rh, rw, CNN_IMAGE_MAX_PIXELS);
    /* the steps of cnn_image_load_crop (cnn_image_load, then the centre crop), on bytes in memory */
    CNN_TRY(cnn_image_decode_memory(data, len, name, max_pixels, rh, rw, &img));
    if (rh == h && rw == w) {
        CNN_TRY(cnn_image_resize_u8(&img, c, out, h, w));
    } else {
        resized = malloc((size_t)rh * rw * (size_t)c * sizeof *resized);
        if (!resized) {
            st = cnn_error(CNN_ERR_NO_MEMORY, "%s: no memory to resize to %dx%d", name, rh, rw);
            goto fail;
        }
        CNN_TRY(cnn_image_resize_u8(&img, c, resized, rh, rw));
        int oy, ox;
        cnn_crop_origin(rh, rw, h, w, 0, 0, NULL, &oy, &ox);
        cnn_crop_image(resized, rh, rw, c, out, h, w, oy, ox, CNN_FILL_CONSTANT, 0.0f);
    }
fail:
    free(resized);
    cnn_image_u8_free(&img);
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// writing

typedef struct png_sink {
    unsigned char *data;
    size_t len, cap;
    int failed;
} png_sink;

static void png_sink_write(void *context, void *data, int size)
{
    png_sink *s = context;
    if (s->failed || size <= 0) return;
    if (cnn_array_grow(&s->data, &s->cap, s->len + (size_t)size, 1, 4096) != CNN_OK) {
        s->failed = 1;
        return;
    }
    memcpy(s->data + s->len, data, (size_t)size);
    s->len += (size_t)size;
}

cnn_status cnn_image_write_png(const char *path, int w, int h, int c, const unsigned char *pixels)
{
    if (!path || !pixels || w <= 0 || h <= 0 || c < 1 || c > 4)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_write_png(%s): bad arguments (%dx%d, %d channels)",
                         path ? path : "", w, h, c);
    /* stb_image_write computes sizes in int; this limit keeps (w * c + 1) * h far below INT_MAX */
    if ((long long)w * h > CNN_IMAGE_MAX_PIXELS / 4 || (long long)w * c >= (1 << 24))
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_write_png(%s): %dx%d is too large to write", path, w, h);
    png_sink sink = {0};
    int ok = stbi_write_png_to_func(png_sink_write, &sink, w, h, c, pixels, w * c);
    if (!ok || sink.failed) {
        free(sink.data);
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory encoding a %dx%d PNG", path, w, h);
    }
    const void *parts[1] = {sink.data};
    size_t sizes[1] = {sink.len};
    cnn_status st = cnn_write_file_atomic(path, parts, sizes, 1);
    free(sink.data);
    return st;
}

cnn_status cnn_image_write_grid(const char *path, const float *images, int n, int h, int w, int c, int cols)
{
    enum { BORDER = 2, GRAY = 128 };
    if (!path || !images || n < 1 || h < 1 || w < 1 || (c != 1 && c != 3) || cols < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_image_write_grid(%s): bad arguments (%d images of %dx%dx%d, %d "
                         "columns)", path ? path : "", n, h, w, c, cols);
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    long long gw = (long long)cols * (w + BORDER) + BORDER, gh = (long long)rows * (h + BORDER) + BORDER;
    if (gw * gh > CNN_IMAGE_MAX_PIXELS / 4 || gw >= (1 << 20))
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: a grid of %lldx%lld pixels is too large", path, gw, gh);
    unsigned char *px = malloc((size_t)(gw * gh * c));
    if (!px) return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory for a %lldx%lld grid", path, gw, gh);
    memset(px, GRAY, (size_t)(gw * gh * c));
    for (int i = 0; i < n; i++) {
        int gy = BORDER + (i / cols) * (h + BORDER), gx = BORDER + (i % cols) * (w + BORDER);
        const float *img = images + (size_t)i * h * w * c;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int k = 0; k < c; k++) {
                    float v = img[((size_t)y * w + x) * c + k];
                    if (!(v >= 0.0f)) v = 0.0f; /* NaN too */
                    else if (v > 1.0f) v = 1.0f;
                    px[((size_t)(gy + y) * gw + gx + x) * c + k] = (unsigned char)lrintf(v * 255.0f);
                }
    }
    cnn_status st = cnn_image_write_png(path, (int)gw, (int)gh, c, px);
    free(px);
    return st;
}
