/* cnn augment-preview: a PNG grid of augmented samples, so that a user can see what the network will see. Each
 * row is one sample: first as evaluation sees it (resized, centre-cropped), then as several training epochs
 * would augment it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"

static const char *USAGE = "--data SPEC --augment LIST [--model FILE | --size HxWxC] [--out FILE] [options]";

int cmd_augment_preview(int argc, char **argv)
{
    const char *data = "fashion-mnist", *augment_text = NULL, *model = NULL, *size = NULL, *resize = NULL;
    const char *out = "augment.png", *split = "train";
    int samples = 6, variants = 8, limit = 0;
    uint64_t seed = 1;
    cli_flag flags[] = {
        {"data", CLI_STRING, &data, "SPEC      the images (as cnn train --data; default fashion-mnist)", 0, 0, 0},
        {"split", CLI_STRING, &split, "NAME      train or test (default train)", 0, 0, 0},
        {"augment", CLI_STRING, &augment_text, "LIST      e.g. flip=h,rotate=0.05,zoom=0.1,shift=0.1,erase=0.5 "
                                               "(default: the model's augment line)", 0, 0, 0},
        {"model", CLI_STRING, &model, "FILE      a model definition or file: its input size and augment line", 0, 0,
         0},
        {"size", CLI_STRING, &size, "HxWxC     the image size without --model (default: the data's, or 64x64x3)", 0,
         0, 0},
        {"resize", CLI_STRING, &resize, "HxW       resize to this before cropping to the size (as cnn train)", 0, 0,
         0},
        {"samples", CLI_INT, &samples, "N         rows: samples spread over the data set (default 6)", 1, 256, 0},
        {"limit", CLI_INT, &limit, "N         only the first N samples of the data set (default: all)", 1,
         2147483647, 0},
        {"variants", CLI_INT, &variants, "K         augmented versions per sample (default 8)", 1, 64, 0},
        {"seed", CLI_U64, &seed, "S         seed of the augmentation (default 1)", 0, 0, 0},
        {"out", CLI_STRING, &out, "FILE      the PNG to write (default augment.png)", 0, 0, 0},
        CLI_END,
    };
    int rc = cli_parse_flags("augment-preview", USAGE, flags, argc, argv);
    if (rc) return rc == 1 ? 0 : rc;
    if ((rc = cli_check_split("augment-preview", split)) != 0) return rc;

    cnn_status st;
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    cnn_source *src = NULL;
    float *grid = NULL;
    rc = 1;
    int h = 0, w = 0, c = 0;
    cnn_loader_config cfg;
    cnn_loader_config_defaults(&cfg);
    char from_model[1024];
    const char *model_augment = NULL;
    if (model) {
        size_t len = strlen(model);
        int is_file = len > 12 && !strcmp(model + len - 12, ".safetensors");
        if ((st = cnn_backend_create("cpu", &backend)) != CNN_OK ||
            (st = is_file ? cnn_net_load(model, backend, &net) : cnn_net_from_file(model, backend, 0, &net)) != CNN_OK) {
            rc = cli_fail("augment-preview", "--model", st);
            goto done;
        }
        cnn_net_input_shape(net, &h, &w, &c);
        model_augment = cnn_augment_from_definition(cnn_net_definition(net), from_model, sizeof from_model);
    }
    if (size && sscanf(size, "%dx%dx%d", &h, &w, &c) != 3) {
        fprintf(stderr, "cnn augment-preview: --size: expected HxWxC, e.g. 32x32x3, got '%s'\n", size);
        rc = 2;
        goto done;
    }
    if (resize && sscanf(resize, "%dx%d", &cfg.resize_h, &cfg.resize_w) != 2) {
        fprintf(stderr, "cnn augment-preview: --resize: expected HxW, e.g. 36x36, got '%s'\n", resize);
        rc = 2;
        goto done;
    }
    if (!augment_text) augment_text = model_augment;
    if (!augment_text) {
        fprintf(stderr, "cnn augment-preview: --augment LIST is required (or a --model with an augment line)\n");
        rc = 2;
        goto done;
    }
    cnn_augment aug;
    if ((st = cnn_augment_parse(augment_text, &aug)) != CNN_OK) {
        rc = cli_fail_value("augment-preview", "--augment", st);
        goto done;
    }
    if ((st = cnn_source_open(data, split, &src)) != CNN_OK) {
        rc = cli_fail("augment-preview", "--data", st);
        goto done;
    }
    if (limit && (st = cnn_source_limit(src, limit)) != CNN_OK) {
        rc = cli_fail("augment-preview", "--limit", st);
        goto done;
    }
    const cnn_dataset *ds = cnn_source_dataset(src);
    if (!h) {
        h = ds ? ds->h : 64;
        w = ds ? ds->w : 64;
        c = ds ? ds->c : 3;
    }
    cfg.h = h;
    cfg.w = w;
    cfg.c = c;
    cfg.seed = seed;
    int64_t count = cnn_source_count(src);
    if (samples > count) samples = (int)count;
    int cols = variants + 1;
    size_t per = (size_t)h * w * c;
    grid = malloc((size_t)samples * cols * per * sizeof *grid);
    if (!grid) {
        fprintf(stderr, "cnn augment-preview: out of memory\n");
        goto done;
    }
    for (int r = 0; r < samples; r++) {
        int64_t index = (int64_t)((double)r * (double)count / samples); /* spread over the data (and classes) */
        for (int v = 0; v < cols; v++) {
            cfg.augment = v ? &aug : NULL;
            /* variant v: the augmentation of this sample as the index-th draw of epoch v - 1 */
            st = cnn_loader_load_sample(src, &cfg, index, v ? v - 1 : 0, index, grid + ((size_t)r * cols + v) * per);
            if (st != CNN_OK) {
                rc = cli_fail("augment-preview", "sample", st);
                goto done;
            }
        }
    }
    if ((st = cnn_image_write_grid(out, grid, samples * cols, h, w, c, cols)) != CNN_OK) {
        rc = cli_fail("augment-preview", "--out", st);
        goto done;
    }
    char canon[512];
    cnn_augment_format(&aug, canon, sizeof canon);
    fprintf(stderr, "cnn augment-preview: %s: %d sample%s (rows) of %dx%dx%d, the evaluation view then %d augmented "
                    "version%s (%s)\n", out, samples, cli_s(samples), h, w, c, variants, cli_s(variants), canon);
    rc = 0;
done:
    free(grid);
    cnn_source_destroy(src);
    cli_close_model(backend, net);
    return rc;
}
