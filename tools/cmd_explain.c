/* cnn explain: why a model predicts what it predicts. For each image (files, or samples of a data set): a PNG with
 * the image, the heat map and the overlay, the predicted and the explained class with their probabilities; the
 * heat map and the raw attribution as .npy files; a contact sheet of all the panels; a CSV index. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/explain.h"
#include "tools/cli.h"
#include "tools/cli_common.h"

#define MAX_IMAGES 4096
#define SHEET_COLS 4 /* panels per row of the contact sheet */

typedef struct panel {
    unsigned char *rgb;
    int w, h;
} panel;

static const char *class_label(const cnn_net *net, int k, char *buf, size_t size)
{
    const char *name = cnn_net_class_name(net, k);
    if (name && name[0]) snprintf(buf, size, "%s (%d)", name, k);
    else snprintf(buf, size, "class %d", k);
    return buf;
}

/* The contact sheet: the panels in rows of SHEET_COLS on white, 8 pixels apart. */
static cnn_status write_sheet(const char *path, const panel *p, int n)
{
    enum { PAD = 8 };
    int cols = n < SHEET_COLS ? n : SHEET_COLS, rows = (n + cols - 1) / cols;
    int pw = p[0].w, ph = p[0].h;
    long long w = (long long)cols * (pw + PAD) + PAD, h = (long long)rows * (ph + PAD) + PAD;
    if (w * h > (1LL << 28)) {
        fprintf(stderr, "cnn explain: the contact sheet of %d panels (%lldx%lld) is too large; not written\n", n, w, h);
        return CNN_ERR_INVALID_ARG;
    }
    unsigned char *px = malloc((size_t)(w * h * 3));
    if (!px) {
        fprintf(stderr, "cnn explain: out of memory for the contact sheet\n");
        return CNN_ERR_NO_MEMORY;
    }
    memset(px, 255, (size_t)(w * h * 3));
    for (int i = 0; i < n; i++) {
        int ox = PAD + (i % cols) * (pw + PAD), oy = PAD + (i / cols) * (ph + PAD);
        for (int y = 0; y < ph; y++) memcpy(px + (((size_t)(oy + y) * w + ox) * 3), p[i].rgb + (size_t)y * pw * 3,
                                            (size_t)pw * 3);
    }
    cnn_status st = cnn_png_write(path, (int)w, (int)h, 3, px);
    free(px);
    return st;
}

int cmd_explain(int argc, char **argv)
{
    const char *model = NULL, *device = NULL, *method_name = "gradcam", *layer_name = NULL, *out = "explain";
    const char *data = NULL, *split = "test";
    int target = -1, samples = 16, steps = 32, noise_samples = 25, window = 0, stride = 0, scale = 4, batch = 32;
    float noise = 0.15f, baseline = 0.0f;
    uint64_t seed = 1;
    int64_t max_memory = 0;
    cli_flag flags[] = {
        CLI_MODEL_FLAG(model),
        {"method", CLI_STRING, &method_name, "NAME      gradcam, gradcam++, saliency, smoothgrad, integrated-gradients "
                                             "or occlusion (default gradcam)", 0, 0, 0},
        {"layer", CLI_STRING, &layer_name, "NAME      Grad-CAM's layer, as cnn summary names it (default: the last "
                                           "convolution)", 0, 0, 0},
        {"class", CLI_INT, &target, "K         the class to explain (default: the predicted one)", -1, 1e9, 0},
        {"out", CLI_STRING, &out, "DIR       where the pictures and maps go (default explain)", 0, 0, 0},
        CLI_INPUT_FLAGS("explain", data, split, samples, MAX_IMAGES),
        {"steps", CLI_INT, &steps, "N         integrated gradients: points on the path (default 32)", 1, 100000, 0},
        {"noise-samples", CLI_INT, &noise_samples, "N         smoothgrad: noisy copies (default 25)", 1, 100000, 0},
        {"noise", CLI_FLOAT, &noise, "X         smoothgrad: noise std in [0, 1] pixel units (default 0.15)", 0, 10, 0},
        {"baseline", CLI_FLOAT, &baseline, "X         integrated gradients' baseline and occlusion's patch value "
                                           "(default 0: black)", 0, 1, 0},
        {"window", CLI_INT, &window, "N         occlusion: patch side in pixels (default: a seventh of the input)", 0,
         1e6, 0},
        {"stride", CLI_INT, &stride, "N         occlusion: patch step (default: half the window)", 0, 1e6, 0},
        {"scale", CLI_INT, &scale, "S         pixels per input pixel in the pictures (default 4)", 1, 64, 0},
        {"batch", CLI_INT, &batch, "N         images per pass (smoothgrad, integrated gradients, occlusion; default "
                                   "32)", 1, 4096, 0},
        {"seed", CLI_U64, &seed, "S         smoothgrad's noise (default 1)", 0, 0, 0},
        CLI_DEVICE_FLAG(device),
        CLI_MAX_MEMORY_FLAG(max_memory),
        CLI_END,
    };
    static char *images[MAX_IMAGES];
    int nfiles;
    int rc = cli_parse("explain", "--model FILE [--method NAME] [--layer NAME] [--class K] [--out DIR] "
                       "IMAGE... | --data SPEC [--samples N]", flags, argc, argv, images, MAX_IMAGES, &nfiles);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model) {
        fprintf(stderr, "cnn explain: --model FILE is required\n");
        return 2;
    }
    if (!data && nfiles == 0) {
        fprintf(stderr, "cnn explain: give IMAGE files or --data SPEC\n");
        return 2;
    }
    if (data && nfiles > 0) {
        fprintf(stderr, "cnn explain: give IMAGE files or --data SPEC, not both\n");
        return 2;
    }
    cnn_explain_config cfg;
    cnn_explain_config_defaults(&cfg);
    if (cnn_explain_method_parse(method_name, &cfg.method) != CNN_OK) {
        fprintf(stderr, "cnn explain: --method: %s\n", cnn_last_error());
        return 2;
    }
    cfg.steps = steps;
    cfg.samples = noise_samples;
    cfg.noise = noise;
    cfg.baseline = baseline;
    cfg.window = window;
    cfg.stride = stride;
    cfg.seed = seed;
    cli_apply_max_memory(max_memory);

    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    cnn_grad *grad = NULL;
    cli_inputs in = {0};
    float *pixels = NULL;
    panel *panels = NULL;
    char *csv = NULL;
    size_t csv_len = 0, csv_cap = 0;
    int npanels = 0, failures = 0;
    cnn_status st;
    rc = 1;
    if ((rc = cli_open_model("explain", device, model, max_memory, &backend, &net)) != 0) goto done;
    rc = 1;
    if ((rc = cli_check_class("explain", target, model, cnn_net_num_outputs(net))) != 0) goto done;
    rc = 1;
    if (layer_name) {
        if (cfg.method != CNN_EXPLAIN_GRADCAM && cfg.method != CNN_EXPLAIN_GRADCAM_PP) {
            fprintf(stderr, "cnn explain: --layer: only gradcam and gradcam++ explain a layer, not %s\n", method_name);
            rc = 2;
            goto done;
        }
        cfg.layer = cnn_net_layer_find(net, layer_name);
        if (cfg.layer < 0) {
            fprintf(stderr, "cnn explain: --layer: %s has no layer named '%s' (cnn summary lists them:", model,
                    layer_name);
            for (int i = 0; i < cnn_net_num_layers(net); i++) fprintf(stderr, " %s", cnn_net_layer_name(net, i));
            fprintf(stderr, ")\n");
            rc = 2;
            goto done;
        }
        int nd = 0;
        cnn_net_layer_shape(net, cfg.layer, NULL, NULL, NULL, &nd);
        if (nd != 3) {
            fprintf(stderr, "cnn explain: --layer: layer %s's output is flat; %s needs a layer whose output is an "
                            "image "
                            "(a convolution, pooling, batchnorm or add before the flatten)\n", layer_name, method_name);
            rc = 2;
            goto done;
        }
    }
    if ((cfg.method == CNN_EXPLAIN_GRADCAM || cfg.method == CNN_EXPLAIN_GRADCAM_PP) && cfg.layer < 0 &&
        cnn_net_last_conv(net) < 0) {
        fprintf(stderr, "cnn explain: --method %s: %s has no convolution to explain; name a layer with an image "
                        "output (--layer) or use saliency, integrated-gradients or occlusion\n", method_name, model);
        rc = 2;
        goto done;
    }
    if ((st = cnn_grad_create(net, batch, &grad)) != CNN_OK) {
        rc = cli_fail("explain", st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "--batch", st);
        goto done;
    }
    if ((rc = cli_inputs_open("explain", &in, net, data, split, samples, images, nfiles, 0)) != 0 ||
        (rc = cli_make_out_dir("explain", out)) != 0)
        goto done;
    rc = 1;
    const int h = in.h, w = in.w, c = in.c, n = in.n;
    pixels = malloc((size_t)h * w * c * sizeof *pixels);
    panels = calloc((size_t)n, sizeof *panels);
    if (!pixels || !panels) {
        fprintf(stderr, "cnn explain: out of memory\n");
        goto done;
    }
    const char *layer_shown = NULL;
    for (int i = 0; i < n; i++) {
        char stem[160], what[512], path[1200], lines[4][128], a[96], b[96];
        int64_t index;
        st = cli_inputs_load(&in, i, stem, sizeof stem, pixels, &index);
        if (data) snprintf(what, sizeof what, "sample %lld of %s", (long long)index, data);
        else snprintf(what, sizeof what, "%s", images[i]);
        if (st != CNN_OK) { /* a bad image is reported and skipped */
            cli_fail("explain", what, st);
            failures++;
            continue;
        }
        cnn_explanation e;
        if ((st = cnn_explain_image(grad, &cfg, pixels, target, &e)) != CNN_OK) {
            rc = cli_fail("explain", what, st);
            goto done;
        }
        if (e.layer >= 0) layer_shown = cnn_net_layer_name(net, e.layer);
        snprintf(lines[0], sizeof lines[0], "predicted: %s %.3f", class_label(net, e.predicted, a, sizeof a),
                 (double)e.probs[e.predicted]);
        snprintf(lines[1], sizeof lines[1], "explained: %s %.3f", class_label(net, e.target, b, sizeof b),
                 (double)e.probs[e.target]);
        if (e.layer >= 0) snprintf(lines[2], sizeof lines[2], "%s at %s", method_name, layer_shown);
        else snprintf(lines[2], sizeof lines[2], "%s", method_name);
        int nlines = 3;
        if (data && cnn_source_labels(in.src)) {
            int label = cnn_source_labels(in.src)[index];
            snprintf(lines[3], sizeof lines[3], "true: %s", class_label(net, label, a, sizeof a));
            nlines = 4;
        }
        const char *lp[4] = {lines[0], lines[1], lines[2], lines[3]};
        panel *p = &panels[npanels];
        st = cnn_explain_render(&e, pixels, scale, lp, nlines, &p->rgb, &p->w, &p->h);
        if (st == CNN_OK) {
            npanels++;
            snprintf(path, sizeof path, "%s/%s.png", out, stem);
            st = cnn_png_write(path, p->w, p->h, 3, p->rgb);
        }
        if (st == CNN_OK) {
            int64_t shape2[2] = {e.h, e.w};
            snprintf(path, sizeof path, "%s/%s.npy", out, stem);
            st = cnn_npy_write(path, e.map, 2, shape2);
        }
        if (st == CNN_OK) {
            int64_t shape3[3] = {e.raw_h, e.raw_w, e.raw_c};
            snprintf(path, sizeof path, "%s/%s.raw.npy", out, stem);
            /* (h, w, c) per input element for the gradient methods, (h, w) for the maps of Grad-CAM and occlusion */
            int per_element = cfg.method == CNN_EXPLAIN_SALIENCY || cfg.method == CNN_EXPLAIN_SMOOTHGRAD ||
                              cfg.method == CNN_EXPLAIN_INTEGRATED_GRADIENTS;
            st = cnn_npy_write(path, e.raw, per_element ? 3 : 2, shape3);
        }
        /* the index: one CSV row per image */
        char row[1024];
        int len = snprintf(row, sizeof row, "%s,%s,%d,%.6f,%d,%.6f\n", stem, method_name, e.predicted,
                           (double)e.probs[e.predicted], e.target, (double)e.probs[e.target]);
        printf("%s: predicted %s %.4f, explained %s %.4f -> %s/%s.png\n", what,
               class_label(net, e.predicted, a, sizeof a),
               (double)e.probs[e.predicted], class_label(net, e.target, b, sizeof b), (double)e.probs[e.target], out,
               stem);
        cnn_explanation_free(&e);
        if (st != CNN_OK) {
            rc = cli_fail("explain", path, st);
            goto done;
        }
        if (csv_len + (size_t)len + 1 > csv_cap) {
            size_t cap = (csv_cap ? csv_cap * 2 : 4096) + (size_t)len;
            char *grown = realloc(csv, cap);
            if (!grown) {
                fprintf(stderr, "cnn explain: out of memory\n");
                goto done;
            }
            csv = grown;
            csv_cap = cap;
        }
        memcpy(csv + csv_len, row, (size_t)len);
        csv_len += (size_t)len;
    }
    if (npanels) {
        char path[1200];
        snprintf(path, sizeof path, "%s/contact_sheet.png", out);
        if ((st = write_sheet(path, panels, npanels)) != CNN_OK) {
            if (st != CNN_ERR_INVALID_ARG && st != CNN_ERR_NO_MEMORY) rc = cli_fail("explain", path, st);
            goto done;
        }
        static const char header[] = "image,method,predicted,predicted_prob,explained,explained_prob\n";
        const void *parts[2] = {header, csv};
        size_t sizes[2] = {sizeof header - 1, csv_len};
        snprintf(path, sizeof path, "%s/explanations.csv", out);
        if ((st = cnn_write_file_atomic(path, parts, sizes, 2)) != CNN_OK) {
            rc = cli_fail("explain", path, st);
            goto done;
        }
        fprintf(stderr, "cnn explain: %d image%s explained with %s%s%s; %s/contact_sheet.png, %s/explanations.csv\n",
                npanels, npanels == 1 ? "" : "s", method_name, layer_shown ? " at " : "",
                layer_shown ? layer_shown : "",
                out, out);
    }
    rc = failures ? 1 : 0;
done:
    for (int i = 0; panels && i < npanels; i++) free(panels[i].rgb);
    free(panels);
    free(csv);
    free(pixels);
    cnn_grad_destroy(grad);
    cli_inputs_close(&in);
    cli_close_model(backend, net);
    return rc;
}
