/* JPEG decoding with libjpeg-turbo (Debian libjpeg62-turbo-dev), used instead of stb_image when the build finds
 * it: it decodes baseline and progressive JPEGs 1.4 times as fast (SIMD IDCT and colour conversion; see
 * bench/RESULTS.md), and its DCT scaling decodes a large JPEG at 1/2, 1/4 or 1/8 of its size for the cost of a
 * small one when the loader is about to shrink it anyway.
 *
 * libjpeg reports fatal errors through error_exit, which must not return: it longjmps back here. Warnings come
 * through emit_message; "premature end of JPEG file" (a truncated file, which libjpeg pads with gray) is an error
 * for us, as it is for PIL unless ImageFile.LOAD_TRUNCATED_IMAGES is set. */
#include "core/data/image.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#ifdef CNN_HAVE_LIBJPEG_TURBO

#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE and size_t first */

#include <jerror.h>
#include <jpeglib.h>

typedef struct jpeg_fail {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
    int truncated;
} jpeg_fail;

static void jpeg_fail_exit(j_common_ptr cinfo)
{
    jpeg_fail *f = (jpeg_fail *)cinfo->err;
    cinfo->err->format_message(cinfo, f->message);
    longjmp(f->jump, 1);
}

static void jpeg_fail_message(j_common_ptr cinfo, int level)
{
    if (level >= 0) return; /* trace messages */
    jpeg_fail *f = (jpeg_fail *)cinfo->err;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) f->truncated = 1;
    cinfo->err->num_warnings++;
}

/* The largest power-of-two reduction (up to 8, libjpeg's limit) that keeps at least want_h x want_w pixels. */
static unsigned dct_scale(unsigned w, unsigned h, int want_h, int want_w)
{
    unsigned d = 1;
    if (want_h <= 0 || want_w <= 0) return 1;
    while (d < 8 && (w + 2 * d - 1) / (2 * d) >= (unsigned)want_w && (h + 2 * d - 1) / (2 * d) >= (unsigned)want_h)
        d *= 2;
    return d;
}

cnn_status cnn_jpeg_decode(const unsigned char *data, size_t len, const char *name, long long max_pixels, int want_h,
                           int want_w, cnn_image_u8 *out)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_fail fail;
    /* written between setjmp and a possible longjmp, read after it: volatile (C11 7.13.2.1) */
    unsigned char *volatile pixels = NULL;
    volatile int created = 0;

    memset(out, 0, sizeof *out);
    memset(&fail, 0, sizeof fail);
    cinfo.err = jpeg_std_error(&fail.mgr);
    fail.mgr.error_exit = jpeg_fail_exit;
    fail.mgr.emit_message = jpeg_fail_message;
    if (setjmp(fail.jump)) {
        if (created) jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return cnn_error(CNN_ERR_FORMAT, "%s: corrupt or truncated JPEG (libjpeg-turbo: %s)", name, fail.message);
    }
    jpeg_create_decompress(&cinfo);
    created = 1;
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    unsigned w = cinfo.image_width, h = cinfo.image_height;
    if (w == 0 || h == 0 || (long long)w * (long long)h > max_pixels) {
        jpeg_destroy_decompress(&cinfo);
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: the JPEG header declares %ux%u pixels, above the limit of %lld",
                         name, w, h, max_pixels);
    }
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: a CMYK JPEG; only grayscale and colour (YCbCr, RGB) JPEGs are "
                         "supported", name);
    }
    cinfo.out_color_space = cinfo.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = dct_scale(w, h, want_h, want_w);
    jpeg_start_decompress(&cinfo);
    unsigned ow = cinfo.output_width, oh = cinfo.output_height;
    int n = cinfo.output_components;
    size_t row = (size_t)ow * (size_t)n;
    pixels = malloc(row * oh);
    if (!pixels) {
        jpeg_destroy_decompress(&cinfo);
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of memory for %ux%u pixels", name, ow, oh);
    }
    while (cinfo.output_scanline < oh) {
        JSAMPROW r = pixels + (size_t)cinfo.output_scanline * row;
        jpeg_read_scanlines(&cinfo, &r, 1);
    }
    if (fail.truncated) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return cnn_error(CNN_ERR_FORMAT, "%s: truncated JPEG (libjpeg-turbo: premature end of the data)", name);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->pixels = pixels;
    out->w = (int)ow;
    out->h = (int)oh;
    out->n = n;
    out->decoder = "libjpeg-turbo";
    return CNN_OK;
}

#else

cnn_status cnn_jpeg_decode(const unsigned char *data, size_t len, const char *name, long long max_pixels, int want_h,
                           int want_w, cnn_image_u8 *out)
{
    (void)data, (void)len, (void)name, (void)max_pixels, (void)want_h, (void)want_w;
    memset(out, 0, sizeof *out);
    return CNN_ERR_UNSUPPORTED;
}

#endif
