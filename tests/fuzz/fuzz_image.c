/* Fuzz harness: image decoding (PNG, JPEG, BMP; cnn_image_decode_memory in core/data/image.c, libjpeg-turbo in
 * core/data/jpeg.c when the build has it) and the resize that cnn_image_load applies after it.
 *
 * The input is the image file. It is decoded with a cap of 64K pixels (the header is checked against it before
 * decoding: a 4-byte header cannot make a run allocate gigabytes) and, as cnn_image_load does, with the output
 * size as the JPEG scaling hint; the image is then converted to floats and resized to a small output whose size
 * and channels come from the input's length, and loaded again through cnn_image_load_crop_memory (the loader's and
 * the server's path, resized and cropped). Decoded pixels and resized values are checked. */
#include <stdlib.h>
#include <string.h>

#include "core/data/image.h"
#include "fuzz.h"

/* Pixels a header may declare: 64K (256 x 256), 256 KiB as RGBA. */
#define FUZZ_IMAGE_MAX_PIXELS (1LL << 16)

/* The weights and sums of a resize are rounded: shrinking 31747 rows to 8 gave 1.00002 (an area average sums
 * thousands of terms); weights that do not add up to 1 would miss by far more than 1%. */
static void check_range(const float *v, int n)
{
    for (int i = 0; i < n; i++) fuzz_check(v[i] >= -0.01f && v[i] <= 1.01f, "a resized value left [0, 1]");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    /* the output, as a model's input: 1 to 29 rows, 1 to 31 columns, gray or RGB */
    int dh = 1 + (int)(size % 29), dw = 1 + (int)(size / 29 % 31), c = size / 899 % 2 ? 3 : 1;
    cnn_image_u8 img;
    if (cnn_image_decode_memory(data, size, "fuzz-image", FUZZ_IMAGE_MAX_PIXELS, dh, dw, &img) != CNN_OK) {
        fuzz_check(img.pixels == NULL, "a failed decode left pixels");
        return 0;
    }
    fuzz_check(img.pixels && img.w >= 1 && img.h >= 1 && img.n >= 1 && img.n <= 4, "a decoded image of no shape");
    fuzz_check((long long)img.w * img.h <= FUZZ_IMAGE_MAX_PIXELS, "a decoded image above the pixel cap");
    fuzz_check(img.decoder != NULL, "a decoded image names no decoder");

    /* every decoded byte is there (ASan reads the buffer to its end) and the float conversion stays in [0, 1] */
    size_t npix = (size_t)img.w * (size_t)img.h;
    float *full = malloc(npix * 3 * sizeof *full);
    fuzz_check(full != NULL, "out of memory");
    cnn_image_u8_to_float(&img, c, full);
    for (size_t i = 0; i < npix * (size_t)c; i++) fuzz_check(full[i] >= 0.0f && full[i] <= 1.0f, "a pixel left [0, 1]");
    free(full);

    float out[29 * 31 * 3], again[29 * 31 * 3];
    fuzz_check(cnn_image_resize_u8(&img, c, out, dh, dw) == CNN_OK, "resizing a decoded image failed");
    cnn_image_u8_free(&img);
    check_range(out, dh * dw * c);

    /* the loader's and the server's path in one call, resized larger and centre-cropped (cnn train --resize) when
     * the input's length says so */
    int rh = dh + (int)(size % 3), rw = dw + (int)(size % 5);
    fuzz_check(cnn_image_load_crop_memory(data, size, "fuzz-image", FUZZ_IMAGE_MAX_PIXELS, rh, rw, dh, dw, c, again) ==
                   CNN_OK, "an image that decodes does not load");
    check_range(again, dh * dw * c);
    /* without the crop both paths decode and resize alike: the same values, bit for bit (a decoder reading memory
     * it never wrote, as stb_image did for BMPs past their palette, gives other values each time) */
    if (rh == dh && rw == dw)
        fuzz_check(!memcmp(out, again, (size_t)(dh * dw * c) * sizeof *out), "the same image decoded twice differs");
    return 0;
}
