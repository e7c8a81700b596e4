/* Image files (internal): decoding limits, resizing, and PNG writing for plots (training curves, confusion
 * matrices). Decoding for datasets is cnn_image_load in cnn/data.h. */
#ifndef CNN_CORE_IMAGE_H
#define CNN_CORE_IMAGE_H

#include <stddef.h>

#include "cnn/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest image decoded or written: 64 megapixels (an 8192 x 8192 photograph; 256 MiB as 8-bit RGBA). Anything
 * bigger in a training set is almost surely a corrupt or hostile header, and is refused before decoding. */
#define CNN_IMAGE_MAX_PIXELS ((long long)1 << 26)
/* Largest image file read: 256 MiB, far above any PNG, JPEG or BMP of CNN_IMAGE_MAX_PIXELS that is not padding. */
#define CNN_IMAGE_MAX_FILE_BYTES ((size_t)256 << 20)

/* A decoded image: h rows of w * n bytes, n = 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA. */
typedef struct cnn_image_u8 {
    unsigned char *pixels; /* owned; cnn_image_u8_free */
    int w, h, n;
    const char *decoder;   /* "stb_image" or "libjpeg-turbo", for messages and benchmarks */
} cnn_image_u8;

/* Decodes a PNG, JPEG or BMP held in memory (`name` names it in messages). The format is sniffed from the first
 * bytes; the header's dimensions are checked against `max_pixels` (<= 0: CNN_IMAGE_MAX_PIXELS) before decoding.
 * When want_h and want_w are > 0 and the build has libjpeg-turbo, a JPEG is decoded at the smallest DCT scale
 * (1/1, 1/2, 1/4, 1/8) that still has at least want_h x want_w pixels, as PIL's Image.draft does: the caller is
 * about to shrink it to that size anyway. Truncated files, other formats and bad headers give a status naming
 * `name`. */
cnn_status cnn_image_decode_memory(const unsigned char *data, size_t len, const char *name, long long max_pixels,
                                   int want_h, int want_w, cnn_image_u8 *out);
/* The same, reading `path` first (missing: CNN_ERR_NOT_FOUND; unreadable: CNN_ERR_IO). */
cnn_status cnn_image_decode_file(const char *path, long long max_pixels, int want_h, int want_w, cnn_image_u8 *out);
void cnn_image_u8_free(cnn_image_u8 *img);

/* Converts to `c` channels (1: BT.601 luma, 3: RGB; alpha dropped) as floats in [0, 1], h * w * c of them. */
void cnn_image_u8_to_float(const cnn_image_u8 *img, int c, float *out);

/* cnn_image_u8_to_float then cnn_image_resize, row by row (no full-size float copy); the same values bit for bit. */
cnn_status cnn_image_resize_u8(const cnn_image_u8 *img, int c, float *dst, int dh, int dw);

/* cnn_image_load_crop on an encoded image held in memory (`name` names it in messages): decoded with `max_pixels`
 * (<= 0: CNN_IMAGE_MAX_PIXELS) as the limit, converted to c channels, resized to rh x rw and centre-cropped to
 * h x w; the same floats, bit for bit, as cnn_image_load_crop gives for the file holding these bytes. */
cnn_status cnn_image_load_crop_memory(const unsigned char *data, size_t len, const char *name, long long max_pixels,
                                      int rh, int rw, int h, int w, int c, float *out);

/* 1 when JPEGs are decoded by libjpeg-turbo in this build. */
int cnn_image_have_libjpeg_turbo(void);

/* libjpeg-turbo's decoder (core/data/jpeg.c): `fmt_name` is "JPEG"; the dimensions were checked by the caller. Returns
 * CNN_ERR_UNSUPPORTED without a message when the build has no libjpeg-turbo. */
cnn_status cnn_jpeg_decode(const unsigned char *data, size_t len, const char *name, long long max_pixels, int want_h,
                           int want_w, cnn_image_u8 *out);

/* Resizes an (sh, sw, c) float image to (dh, dw, c), each axis on its own: bilinear interpolation with
 * half-pixel centers (align_corners=false, as PIL and TensorFlow 2) when the axis grows, area averaging (each
 * output pixel the mean of the input area it covers, as OpenCV's INTER_AREA) when it shrinks, a copy when it
 * keeps its size. `src` and `dst` must not overlap. */
cnn_status cnn_image_resize(const float *src, int sh, int sw, int c, float *dst, int dh, int dw);

/* Writes 8-bit pixels (h rows of w * c bytes, c = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) as a PNG file, atomically
 * (cnn_write_file_atomic). */
cnn_status cnn_image_write_png(const char *path, int w, int h, int c, const unsigned char *pixels);

#ifdef __cplusplus
}
#endif
#endif
