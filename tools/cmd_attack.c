/* cnn attack: adversarial versions of images (FGSM, PGD) written as PNG beside the originals as the model sees them,
 * with the predictions before and after, a grid of the pairs and an index CSV. Image files are attacked on the
 * model's prediction (or --class), data-set samples on their labels. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/explain.h"
#include "tools/adv_opts.h"
#include "tools/cli.h"
#include "tools/cli_common.h"

#define MAX_IMAGES 4096

/* An image in [0, 1] (h, w, c) as an 8-bit PNG. */
static cnn_status write_image(const char *path, const float *img, int h, int w, int c)
{
    size_t n = (size_t)h * w * c;
    unsigned char *px = malloc(n);
    if (!px) return CNN_ERR_NO_MEMORY;
    for (size_t i = 0; i < n; i++) {
        float v = img[i] < 0.0f ? 0.0f : img[i] > 1.0f ? 1.0f : img[i];
        px[i] = (unsigned char)lrintf(v * 255.0f);
    }
    cnn_status st = cnn_png_write(path, w, h, c, px);
    free(px);
    return st;
}

int cmd_attack(int argc, char **argv)
{
    const char *model = NULL, *device = NULL, *method = "fgsm", *out = "attack", *data = NULL, *split = "test";
    float eps = CLI_EPS_UNSET, alpha = 0.0f;
    int steps = 10, random_start = 0, samples = 16, target = -1;
    uint64_t seed = 1;
    int64_t max_memory = 0;
    cli_flag flags[] = {
        CLI_MODEL_FLAG(model),
        {"attack", CLI_STRING, &method, "NAME      fgsm or pgd (default fgsm)", 0, 0, 0},
        {"eps", CLI_FLOAT, &eps, "E         required: the L-infinity radius in [0, 1] pixel units, before "
                                 "normalization", -1e29, 1e29, 0},
        {"steps", CLI_INT, &steps, "K         pgd: iterations (default 10)", 1, 100000, 0},
        {"alpha", CLI_FLOAT, &alpha, "A         pgd: the step (default 2.5 * eps / steps)", 0, 1, 0},
        {"random-start", CLI_BOOL, &random_start, "          pgd: start from a random point of the eps-ball", 0, 0, 0},
        {"seed", CLI_U64, &seed, "S         pgd's random start (default 1)", 0, 0, 0},
        {"class", CLI_INT, &target, "K         image files: the label to attack (default: the model's prediction)", -1,
         1e9, 0},
        {"out", CLI_STRING, &out, "DIR       where the images go (default attack)", 0, 0, 0},
        CLI_INPUT_FLAGS("attack", data, split, samples, MAX_IMAGES),
        CLI_DEVICE_FLAG(device),
        CLI_MAX_MEMORY_FLAG(max_memory),
        CLI_END,
    };
    static char *images[MAX_IMAGES];
    int nfiles;
    int rc = cli_parse("attack", "--model FILE --eps E [--attack fgsm|pgd] [--out DIR] IMAGE... | --data SPEC", flags,
                       argc, argv, images, MAX_IMAGES, &nfiles);
    if (rc) return rc == 1 ? 0 : rc;
    if (!model) {
        fprintf(stderr, "cnn attack: --model FILE is required\n");
        return 2;
    }
    if ((!data && nfiles == 0) || (data && nfiles > 0)) {
        fprintf(stderr, "cnn attack: give IMAGE files or --data SPEC (one of them)\n");
        return 2;
    }
    cnn_attack_config cfg;
    cnn_attack_config_defaults(&cfg);
    const cli_adv_opts given = {
        .method = method, .eps = eps, .alpha = alpha, .steps = steps, .random_start = random_start};
    if ((rc = cli_attack_apply("attack", "attack", "required", &given, seed, &cfg)) != 0) return rc;
    cli_apply_max_memory(max_memory);

    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    cnn_grad *grad = NULL;
    cli_inputs in = {0};
    float *x = NULL, *adv = NULL, *probs = NULL, *pairs = NULL;
    int32_t *labels = NULL;
    char (*stems)[160] = NULL;
    char *csv = NULL;
    cnn_status st;
    int failures = 0;
    rc = 1;
    if ((rc = cli_open_model("attack", device, model, max_memory, &backend, &net)) != 0) goto done;
    rc = 1;
    const int k = cnn_net_num_outputs(net);
    if ((rc = cli_check_class("attack", target, model, k)) != 0) goto done;
    if ((rc = cli_inputs_open("attack", &in, net, data, split, samples, images, nfiles, 1)) != 0 ||
        (rc = cli_make_out_dir("attack", out)) != 0)
        goto done;
    rc = 1;
    const int h = in.h, w = in.w, c = in.c, n = in.n;
    const size_t per = (size_t)h * w * c;
    x = malloc((size_t)n * per * sizeof *x);
    adv = malloc((size_t)n * per * sizeof *adv);
    pairs = malloc((size_t)n * 2 * per * sizeof *pairs);
    probs = malloc((size_t)n * k * sizeof *probs);
    labels = malloc((size_t)n * sizeof *labels);
    stems = malloc((size_t)n * sizeof *stems);
    csv = malloc((size_t)n * 256 + 128);
    if (!x || !adv || !pairs || !probs || !labels || !stems || !csv) {
        fprintf(stderr, "cnn attack: out of memory\n");
        goto done;
    }
    /* the images as the model sees them (resized, cropped), in [0, 1]; bad files are reported and skipped */
    int m = 0;
    for (int i = 0; i < n; i++) {
        int64_t index;
        st = cli_inputs_load(&in, i, stems[m], sizeof stems[m], x + (size_t)m * per, &index);
        if (data) labels[m] = cnn_source_labels(in.src)[index];
        if (st != CNN_OK) {
            cli_fail("attack", data ? "sample" : images[i], st);
            failures++;
            continue;
        }
        m++;
    }
    if (!m) goto done;
    if ((st = cnn_grad_create(net, m < 64 ? m : 64, &grad)) != CNN_OK) {
        rc = cli_fail("attack", st == CNN_ERR_NO_MEMORY ? cli_memory_what(max_memory) : "--model", st);
        goto done;
    }
    if ((st = cnn_net_predict(net, x, m, probs)) != CNN_OK) {
        rc = cli_fail("attack", "prediction", st);
        goto done;
    }
    if (!data)
        for (int i = 0; i < m; i++) labels[i] = target >= 0 ? target : cnn_argmax(probs + (size_t)i * k, k);
    if ((st = cnn_attack_images(grad, &cfg, x, labels, m, 0, adv)) != CNN_OK) {
        rc = cli_fail("attack", "--attack", st);
        goto done;
    }
    float *before = malloc((size_t)m * k * sizeof *before);
    if (!before) {
        fprintf(stderr, "cnn attack: out of memory\n");
        goto done;
    }
    memcpy(before, probs, (size_t)m * k * sizeof *before);
    if ((st = cnn_net_predict(net, adv, m, probs)) != CNN_OK) {
        free(before);
        rc = cli_fail("attack", "prediction", st);
        goto done;
    }
    size_t len = (size_t)sprintf(csv, "image,label,predicted,predicted_prob,adversarial_predicted,adversarial_prob,"
                                      "max_abs_change\n");
    int flipped = 0;
    for (int i = 0; i < m; i++) {
        char path[1200];
        const float *xi = x + (size_t)i * per, *ai = adv + (size_t)i * per;
        double change = 0.0;
        for (size_t j = 0; j < per; j++) change = fmax(change, fabs((double)ai[j] - xi[j]));
        memcpy(pairs + (size_t)(2 * i) * per, xi, per * sizeof *pairs);
        memcpy(pairs + (size_t)(2 * i + 1) * per, ai, per * sizeof *pairs);
        int p0 = cnn_argmax(before + (size_t)i * k, k), p1 = cnn_argmax(probs + (size_t)i * k, k);
        flipped += p0 == labels[i] && p1 != labels[i];
        snprintf(path, sizeof path, "%s/%s.png", out, stems[i]);
        st = write_image(path, xi, h, w, c);
        if (st == CNN_OK) {
            snprintf(path, sizeof path, "%s/%s.adv.png", out, stems[i]);
            st = write_image(path, ai, h, w, c);
        }
        if (st != CNN_OK) {
            free(before);
            rc = cli_fail("attack", path, st);
            goto done;
        }
        const char *n0 = cnn_net_class_name(net, p0), *n1 = cnn_net_class_name(net, p1);
        printf("%s: label %d, predicted %s (%d) %.4f -> adversarial %s (%d) %.4f, max change %.4f\n", stems[i],
               labels[i], n0 ? n0 : "-", p0, (double)before[(size_t)i * k + p0], n1 ? n1 : "-", p1,
               (double)probs[(size_t)i * k + p1], change);
        len += (size_t)snprintf(csv + len, 256, "%s,%d,%d,%.6f,%d,%.6f,%.6f\n", stems[i], labels[i], p0,
                                (double)before[(size_t)i * k + p0], p1, (double)probs[(size_t)i * k + p1], change);
    }
    free(before);
    char path[1200];
    snprintf(path, sizeof path, "%s/pairs.png", out);
    if ((st = cnn_image_write_grid(path, pairs, 2 * m, h, w, c, 2)) != CNN_OK) {
        rc = cli_fail("attack", path, st);
        goto done;
    }
    snprintf(path, sizeof path, "%s/attack.csv", out);
    const void *parts[1] = {csv};
    size_t sizes[1] = {len};
    if ((st = cnn_write_file_atomic(path, parts, sizes, 1)) != CNN_OK) {
        rc = cli_fail("attack", path, st);
        goto done;
    }
    fprintf(stderr, "cnn attack: %s eps %g: %d of %d images changed from their label to another class; %s/pairs.png "
                    "(original | adversarial), %s/attack.csv\n", method, (double)eps, flipped, m, out, out);
    rc = failures ? 1 : 0;
done:
    free(x);
    free(adv);
    free(pairs);
    free(probs);
    free(labels);
    free(stems);
    free(csv);
    cnn_grad_destroy(grad);
    cli_inputs_close(&in);
    cli_close_model(backend, net);
    return rc;
}
