/* Augmentation with Keras preprocessing-layer semantics (RandomFlip, RandomRotation, RandomZoom,
 * RandomTranslation, RandomCrop, RandomBrightness, RandomContrast) plus random erasing (Zhong et al. 2017), on
 * float images in [0, 1], NHWC, one image at a time. Every random number comes from one generator seeded by the
 * caller, drawn in a fixed order, so an image's augmentation depends on its seed alone.
 *
 * The geometric transforms (rotation, zoom, translation) are composed into one affine map, applied backwards
 * (each output pixel samples the input bilinearly at its preimage) with the fill mode outside the image, as
 * Keras' ImageProjectiveTransform does. Order: flips, the affine map, brightness, contrast, erasing. */
#include "core/data/augment.h"

#include <ctype.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/float_text.h"

#define TWO_PI 6.283185307179586
/* Random erasing's area fraction and aspect-ratio ranges and attempts (Zhong et al. 2017; torchvision's
 * RandomErasing defaults). */
#define ERASE_AREA_MIN 0.02
#define ERASE_AREA_MAX 0.33
#define ERASE_RATIO_MIN 0.3
#define ERASE_RATIO_MAX 3.3
#define ERASE_ATTEMPTS 10
/* Largest crop padding accepted: far beyond the 4 pixels of the usual CIFAR recipe. */
#define MAX_CROP_PAD 4096

void cnn_augment_defaults(cnn_augment *a)
{
    memset(a, 0, sizeof *a);
    a->fill = CNN_FILL_REFLECT; /* Keras' default fill_mode */
    a->erase_value = -1.0f;     /* random values */
}

int cnn_augment_active(const cnn_augment *a)
{
    return a && (a->flip_h || a->flip_v || a->rotate > 0.0f || a->zoom > 0.0f || a->shift_h > 0.0f ||
                 a->shift_w > 0.0f || a->crop || a->brightness > 0.0f || a->contrast > 0.0f || a->erase > 0.0f);
}

// ---------------------------------------------------------------------------------------------------------------
// parsing and formatting

static int parse_number(const char *s, double lo, double hi, float *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !isfinite(v) || v < lo || v > hi) return 0;
    *out = (float)v;
    return 1;
}

static cnn_status bad_value(const char *key, const char *value, const char *want)
{
    return cnn_error(CNN_ERR_INVALID_ARG, "augment: %s=%s: %s", key, value, want);
}

/* The keys that take one number from 0 to `hi`. */
typedef struct number_key {
    const char *key, *alias;
    double hi;
    size_t offset; /* of the float in cnn_augment */
    const char *want;
} number_key;

static const number_key NUMBER_KEYS[] = {
    {"rotate", "rotation", 1, offsetof(cnn_augment, rotate), "expected a fraction of a full turn, 0 to 1"},
    {"zoom", NULL, 0.99, offsetof(cnn_augment, zoom), "expected a factor from 0 to 0.99"},
    {"brightness", NULL, 1, offsetof(cnn_augment, brightness), "expected a factor from 0 to 1"},
    {"contrast", NULL, 1, offsetof(cnn_augment, contrast), "expected a factor from 0 to 1"},
    {"erase", NULL, 1, offsetof(cnn_augment, erase), "expected a probability from 0 to 1"},
    {"fill_value", NULL, 1, offsetof(cnn_augment, fill_value), "expected a value from 0 to 1"},
};

static cnn_status parse_item(cnn_augment *a, const char *key, const char *value)
{
    int has = value != NULL;
    if (!value) value = "";
    if (!strcmp(key, "flip")) {
        if (!strcmp(value, "h") || !strcmp(value, "horizontal")) a->flip_h = 1;
        else if (!strcmp(value, "v") || !strcmp(value, "vertical")) a->flip_v = 1;
        else if (!strcmp(value, "hv") || !strcmp(value, "vh") || !strcmp(value, "both") ||
                 !strcmp(value, "horizontal_and_vertical"))
            a->flip_h = a->flip_v = 1;
        else return bad_value(key, value, "expected h, v or hv");
        return CNN_OK;
    }
    if (!strcmp(key, "crop")) {
        a->crop = 1;
        if (!has) return CNN_OK;
        float pad;
        if (!parse_number(value, 0, MAX_CROP_PAD, &pad) || pad != floorf(pad))
            return bad_value(key, value, "expected the padding in pixels (an integer from 0), or crop alone");
        a->crop_pad = (int)pad;
        return CNN_OK;
    }
    if (!has) return cnn_error(CNN_ERR_INVALID_ARG, "augment: '%s' needs a value (%s=...)", key, key);
    if (!strcmp(key, "shift") || !strcmp(key, "translate")) {
        /* F (both axes) or HxW; a copy of any length (a fixed buffer would cut "...x0.2" off a long H) */
        size_t n = strlen(value);
        char *hw = malloc(n + 1);
        if (!hw) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
        memcpy(hw, value, n + 1);
        char *x = strchr(hw, 'x');
        if (x) *x = '\0';
        int ok = parse_number(hw, 0, 1, &a->shift_h) && parse_number(x ? x + 1 : hw, 0, 1, &a->shift_w);
        free(hw);
        if (!ok) return bad_value(key, value, "expected a fraction of the size from 0 to 1, or HxW fractions");
        return CNN_OK;
    }
    for (size_t i = 0; i < sizeof NUMBER_KEYS / sizeof NUMBER_KEYS[0]; i++) {
        const number_key *k = &NUMBER_KEYS[i];
        if (strcmp(key, k->key) && (!k->alias || strcmp(key, k->alias))) continue;
        float *field = (float *)((char *)a + k->offset);
        if (!parse_number(value, 0, k->hi, field)) return bad_value(key, value, k->want);
        return CNN_OK;
    }
    if (!strcmp(key, "erase_value")) {
        if (!strcmp(value, "random")) a->erase_value = -1.0f;
        else if (!parse_number(value, 0, 1, &a->erase_value))
            return bad_value(key, value, "expected random or a value from 0 to 1");
        return CNN_OK;
    }
    if (!strcmp(key, "fill")) {
        if (!strcmp(value, "reflect")) a->fill = CNN_FILL_REFLECT;
        else if (!strcmp(value, "constant")) a->fill = CNN_FILL_CONSTANT;
        else if (!strcmp(value, "nearest")) a->fill = CNN_FILL_NEAREST;
        else return bad_value(key, value, "expected reflect, constant or nearest");
        return CNN_OK;
    }
    return cnn_error(CNN_ERR_INVALID_ARG, "augment: unknown key '%s' (known: flip, rotate, zoom, shift, crop, "
                     "brightness, contrast, erase, erase_value, fill, fill_value)", key);
}

cnn_status cnn_augment_parse(const char *text, cnn_augment *out)
{
    cnn_augment a;
    cnn_augment_defaults(&a);
    if (!out) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_augment_parse: no output");
    *out = a;
    if (!text) return CNN_OK;
    size_t len = strlen(text);
    char *buf = malloc(len + 1);
    if (!buf) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    memcpy(buf, text, len + 1);
    cnn_status st = CNN_OK;
    char *rest = buf;
    while (*rest == ' ') rest++;
    if (!strcmp(rest, "none")) rest += 4;
    while (st == CNN_OK && *rest) {
        char *item = rest, *comma = strchr(rest, ',');
        if (comma) {
            *comma = '\0';
            rest = comma + 1;
        } else {
            rest += strlen(rest);
        }
        while (isspace((unsigned char)*item)) item++;
        size_t il = strlen(item);
        while (il && isspace((unsigned char)item[il - 1])) item[--il] = '\0';
        if (!*item) {
            st = cnn_error(CNN_ERR_INVALID_ARG, "augment: empty item in '%s'", text);
            break;
        }
        char *eq = strchr(item, '=');
        if (eq) *eq = '\0';
        st = parse_item(&a, item, eq ? eq + 1 : NULL);
    }
    free(buf);
    if (st == CNN_OK) *out = a;
    return st;
}

/* The shortest of %.6g .. %.9g that reads back as the same float: "0.05", and every digit of "0.123456789" that the
 * float holds, so that the canonical text parses back to the same settings. */
static const char *float_text(char *buf, size_t n, float v) { return cnn_float_text(buf, n, v, 6); }

void cnn_augment_format(const cnn_augment *a, char *buf, size_t size)
{
    size_t len = 0;
    char f1[32], f2[32];
    buf[0] = '\0';
#define PUT(...)                                                                                   \
    do {                                                                                           \
        if (len < size) len += (size_t)snprintf(buf + len, size - len, "%s", len ? "," : "");       \
        if (len < size) len += (size_t)snprintf(buf + len, size - len, __VA_ARGS__);               \
    } while (0)
    if (a->flip_h || a->flip_v) PUT("flip=%s", a->flip_h && a->flip_v ? "hv" : a->flip_h ? "h" : "v");
    if (a->rotate > 0.0f) PUT("rotate=%s", float_text(f1, sizeof f1, a->rotate));
    if (a->zoom > 0.0f) PUT("zoom=%s", float_text(f1, sizeof f1, a->zoom));
    if (a->shift_h > 0.0f || a->shift_w > 0.0f) {
        if (a->shift_h == a->shift_w) PUT("shift=%s", float_text(f1, sizeof f1, a->shift_h));
        else PUT("shift=%sx%s", float_text(f1, sizeof f1, a->shift_h), float_text(f2, sizeof f2, a->shift_w));
    }
    if (a->crop) {
        if (a->crop_pad) PUT("crop=%d", a->crop_pad);
        else PUT("crop");
    }
    if (a->brightness > 0.0f) PUT("brightness=%s", float_text(f1, sizeof f1, a->brightness));
    if (a->contrast > 0.0f) PUT("contrast=%s", float_text(f1, sizeof f1, a->contrast));
    if (a->erase > 0.0f) {
        PUT("erase=%s", float_text(f1, sizeof f1, a->erase));
        if (a->erase_value >= 0.0f) PUT("erase_value=%s", float_text(f1, sizeof f1, a->erase_value));
    }
    if (!len) {
        snprintf(buf, size, "none");
        return;
    }
    if (a->fill != CNN_FILL_REFLECT) PUT("fill=%s", a->fill == CNN_FILL_CONSTANT ? "constant" : "nearest");
    if (a->fill_value != 0.0f) PUT("fill_value=%s", float_text(f1, sizeof f1, a->fill_value));
#undef PUT
}

const char *cnn_augment_from_definition(const char *definition, char *buf, size_t size)
{
    if (!definition || !buf || !size) return NULL;
    const char *found = NULL;
    for (const char *line = definition; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *p = line, *stop = line + len;
        while (p < stop && isspace((unsigned char)*p)) p++;
        if (stop - p > 7 && !strncmp(p, "augment", 7) && isspace((unsigned char)p[7])) {
            /* "augment LIST [LIST...]  # comment": the items joined with commas */
            size_t at = 0;
            p += 7;
            while (p < stop && *p != '#') {
                while (p < stop && isspace((unsigned char)*p)) p++;
                if (p >= stop || *p == '#') break;
                const char *tok = p;
                while (p < stop && !isspace((unsigned char)*p) && *p != '#') p++;
                size_t tl = (size_t)(p - tok);
                if (at && at + 1 < size) buf[at++] = ',';
                if (at + tl >= size) tl = size - 1 - at;
                memcpy(buf + at, tok, tl);
                at += tl;
            }
            buf[at] = '\0';
            found = buf;
        }
        line = end ? end + 1 : NULL;
    }
    return found;
}

// ---------------------------------------------------------------------------------------------------------------
// cropping

void cnn_crop_origin(int sh, int sw, int h, int w, int random, int pad, cnn_rng *rng, int *oy, int *ox)
{
    if (!random) {
        *oy = (sh - h) / 2;
        *ox = (sw - w) / 2;
        return;
    }
    *oy = -pad + (int)cnn_rng_below(rng, (uint32_t)(sh - h + 2 * pad + 1));
    *ox = -pad + (int)cnn_rng_below(rng, (uint32_t)(sw - w + 2 * pad + 1));
}

void cnn_crop_image(const float *src, int sh, int sw, int c, float *dst, int h, int w, int oy, int ox,
                    cnn_fill_mode fill, float fill_value)
{
    for (int y = 0; y < h; y++) {
        int sy = cnn_fill_index(oy + y, sh, fill);
        float *o = dst + (size_t)y * w * c;
        if (sy >= 0 && ox >= 0 && ox + w <= sw) { /* the common case: a row inside the image */
            memcpy(o, src + ((size_t)sy * sw + (size_t)ox) * c, (size_t)w * c * sizeof *o);
            continue;
        }
        for (int x = 0; x < w; x++) {
            int sx = cnn_fill_index(ox + x, sw, fill);
            for (int k = 0; k < c; k++)
                o[(size_t)x * c + k] = sy < 0 || sx < 0 ? fill_value : src[((size_t)sy * sw + sx) * c + k];
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// the transforms

static float uniform_pm(cnn_rng *r, float f) { return (2.0f * cnn_rng_uniform(r) - 1.0f) * f; }

static void flip(float *img, int h, int w, int c, int horizontal, int vertical)
{
    if (horizontal)
        for (int y = 0; y < h; y++) {
            float *row = img + (size_t)y * w * c;
            for (int x = 0; x < w / 2; x++)
                for (int k = 0; k < c; k++) {
                    float t = row[(size_t)x * c + k];
                    row[(size_t)x * c + k] = row[(size_t)(w - 1 - x) * c + k];
                    row[(size_t)(w - 1 - x) * c + k] = t;
                }
        }
    if (vertical) {
        size_t row = (size_t)w * c;
        for (int y = 0; y < h / 2; y++) {
            float *a = img + (size_t)y * row, *b = img + (size_t)(h - 1 - y) * row;
            for (size_t i = 0; i < row; i++) {
                float t = a[i];
                a[i] = b[i];
                b[i] = t;
            }
        }
    }
}

/* dst(x, y) = src at (ax * x + bx * y + cx, ay * x + by * y + cy), bilinear, with the fill mode outside. */
static void affine(const float *src, float *dst, int h, int w, int c, double ax, double bx, double cx, double ay,
                   double by, double cy, cnn_fill_mode fill, float fill_value)
{
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            double sx = ax * x + bx * y + cx, sy = ay * x + by * y + cy;
            double fx0 = floor(sx), fy0 = floor(sy);
            float fx = (float)(sx - fx0), fy = (float)(sy - fy0);
            /* far outside (a huge zoom-out or shift): clamp before converting to int */
            int x0 = fx0 < -1e6 ? -1000000 : fx0 > 1e6 ? 1000000 : (int)fx0;
            int y0 = fy0 < -1e6 ? -1000000 : fy0 > 1e6 ? 1000000 : (int)fy0;
            int xs[2] = {cnn_fill_index(x0, w, fill), cnn_fill_index(x0 + 1, w, fill)};
            int ys[2] = {cnn_fill_index(y0, h, fill), cnn_fill_index(y0 + 1, h, fill)};
            float wts[4] = {(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy};
            float *o = dst + ((size_t)y * w + x) * c;
            for (int k = 0; k < c; k++) {
                float acc = 0.0f;
                for (int j = 0; j < 4; j++) {
                    int px = xs[j & 1], py = ys[j >> 1];
                    float v = px < 0 || py < 0 ? fill_value : src[((size_t)py * w + px) * c + k];
                    acc += wts[j] * v;
                }
                o[k] = acc;
            }
        }
    }
}

static float clip01(float v) { return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; }

cnn_status cnn_augment_image(const cnn_augment *a, uint64_t seed, float *img, int h, int w, int c)
{
    if (!a || !img || h <= 0 || w <= 0 || c <= 0)
        return cnn_error(CNN_ERR_INVALID_ARG, "cnn_augment_image: bad arguments (%dx%dx%d)", h, w, c);
    cnn_rng r;
    cnn_rng_seed(&r, seed);
    size_t count = (size_t)h * w * c;

    /* the draws, always in this order */
    int fh = a->flip_h && (cnn_rng_u32(&r) & 1u), fv = a->flip_v && (cnn_rng_u32(&r) & 1u);
    double angle = a->rotate > 0.0f ? (double)uniform_pm(&r, a->rotate) * TWO_PI : 0.0;
    double zoom = a->zoom > 0.0f ? 1.0 + (double)uniform_pm(&r, a->zoom) : 1.0;
    double ty = a->shift_h > 0.0f ? (double)uniform_pm(&r, a->shift_h) * h : 0.0;
    double tx = a->shift_w > 0.0f ? (double)uniform_pm(&r, a->shift_w) * w : 0.0;

    flip(img, h, w, c, fh, fv);
    if (angle != 0.0 || zoom != 1.0 || tx != 0.0 || ty != 0.0) {
        /* preimage of output (x, y): undo the translation, the rotation, then scale by the zoom about the centre */
        double cxm = (w - 1) * 0.5, cym = (h - 1) * 0.5, co = cos(angle), si = sin(angle);
        /* p = C + zoom * R(-angle) * (q - C - t) */
        double ax = zoom * co, bx = zoom * si, ay = -zoom * si, by = zoom * co;
        double dx = -cxm - tx, dy = -cym - ty;
        double cx = cxm + ax * dx + bx * dy, cy = cym + ay * dx + by * dy;
        float *tmp = malloc(count * sizeof *tmp);
        if (!tmp) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory augmenting a %dx%dx%d image", h, w, c);
        memcpy(tmp, img, count * sizeof *tmp);
        affine(tmp, img, h, w, c, ax, bx, cx, ay, by, cy, a->fill, a->fill_value);
        free(tmp);
    }
    if (a->brightness > 0.0f) {
        float delta = uniform_pm(&r, a->brightness);
        for (size_t i = 0; i < count; i++) img[i] = clip01(img[i] + delta);
    }
    if (a->contrast > 0.0f) {
        float factor = 1.0f + uniform_pm(&r, a->contrast);
        for (int k = 0; k < c; k++) {
            double sum = 0.0;
            for (size_t i = (size_t)k; i < count; i += (size_t)c) sum += img[i];
            float mean = (float)(sum / (double)((size_t)h * w));
            for (size_t i = (size_t)k; i < count; i += (size_t)c) img[i] = clip01((img[i] - mean) * factor + mean);
        }
    }
    if (a->erase > 0.0f && cnn_rng_uniform(&r) < a->erase) {
        double area = (double)h * w;
        for (int attempt = 0; attempt < ERASE_ATTEMPTS; attempt++) {
            double target = area * (ERASE_AREA_MIN + (ERASE_AREA_MAX - ERASE_AREA_MIN) * cnn_rng_uniform(&r));
            double lr = log(ERASE_RATIO_MIN) + (log(ERASE_RATIO_MAX) - log(ERASE_RATIO_MIN)) * cnn_rng_uniform(&r);
            double ratio = exp(lr);
            int eh = (int)lround(sqrt(target * ratio)), ew = (int)lround(sqrt(target / ratio));
            if (eh < 1 || ew < 1 || eh >= h || ew >= w) continue;
            int y0 = (int)cnn_rng_below(&r, (uint32_t)(h - eh + 1)), x0 = (int)cnn_rng_below(&r, (uint32_t)(w - ew + 1));
            for (int y = y0; y < y0 + eh; y++)
                for (int x = x0; x < x0 + ew; x++)
                    for (int k = 0; k < c; k++)
                        img[((size_t)y * w + x) * c + k] = a->erase_value >= 0.0f ? a->erase_value : cnn_rng_uniform(&r);
            break;
        }
    }
    return CNN_OK;
}
