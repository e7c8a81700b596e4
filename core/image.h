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
