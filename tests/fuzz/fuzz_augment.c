/* Fuzz harness: the augmentation spec (cnn_augment_parse: `cnn train --augment`, a model's augment line).
 *
 * The input is the spec text. A spec that parses is formatted (cnn_augment_format, the canonical text that
 * checkpoints compare) and parsed again, which must give the same settings; then a small image is augmented with
 * them. The input is also read as a model definition's augment line (cnn_augment_from_definition). */
#include <stdlib.h>
#include <string.h>

#include "cnn/pipeline.h"
#include "fuzz.h"

/* The settings that matter: an inactive spec augments nothing whatever its fill says, and the erase value only
 * matters with erasing. */
static cnn_augment effective(const cnn_augment *a)
{
    cnn_augment e;
    cnn_augment_defaults(&e);
    if (!cnn_augment_active(a)) return e;
    e = *a;
    if (!(e.erase > 0.0f)) e.erase_value = -1.0f;
    return e;
}

static int same(const cnn_augment *x, const cnn_augment *y)
{
    cnn_augment a = effective(x), b = effective(y);
    return a.flip_h == b.flip_h && a.flip_v == b.flip_v && a.rotate == b.rotate && a.zoom == b.zoom &&
           a.shift_h == b.shift_h && a.shift_w == b.shift_w && a.crop == b.crop && a.crop_pad == b.crop_pad &&
           a.brightness == b.brightness && a.contrast == b.contrast && a.erase == b.erase &&
           a.erase_value == b.erase_value && a.fill == b.fill && a.fill_value == b.fill_value;
}

static void check_spec(const char *text, size_t size)
{
    cnn_augment a, again;
    char canon[512], canon2[512];
    if (cnn_augment_parse(text, &a) != CNN_OK) return;
    cnn_augment_format(&a, canon, sizeof canon);
    fuzz_check(cnn_augment_parse(canon, &again) == CNN_OK, "the canonical text of a spec does not parse");
    fuzz_check(same(&a, &again), "the canonical text of a spec parses to other settings");
    cnn_augment_format(&again, canon2, sizeof canon2);
    fuzz_check(!strcmp(canon, canon2), "the canonical text is not canonical (formatting it again changes it)");

    /* a small image, augmented; its shape from the input size so that odd shapes come up too */
    int h = 1 + (int)(size % 7), w = 1 + (int)(size / 7 % 9), c = size % 2 ? 3 : 1;
    float img[8 * 10 * 3];
    for (int i = 0; i < h * w * c; i++) img[i] = (float)(i % 17) / 16.0f;
    fuzz_check(cnn_augment_image(&a, (uint64_t)size, img, h, w, c) == CNN_OK, "augmenting a small image failed");
    /* bilinear weights are rounded: a pixel may pass 1 by an ulp or so */
    for (int i = 0; i < h * w * c; i++)
        fuzz_check(img[i] >= -1e-5f && img[i] <= 1.0f + 1e-5f, "an augmented pixel left [0, 1]");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    char *text = fuzz_text(data, size);
    check_spec(text, size);

    /* the same text as a model definition: its augment line, when there is one */
    char line[1024];
    const char *spec = cnn_augment_from_definition(text, line, sizeof line);
    if (spec) {
        fuzz_check(strlen(spec) < sizeof line, "the augment line overran its buffer");
        check_spec(spec, size);
    }
    free(text);
    return 0;
}
