/* The inputs, the --class check and the output folder of cnn attack and cnn explain. */
#include "tools/cli_common.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* "images/shirt 1.png" -> "shirt_1": the file name without directory and extension, [A-Za-z0-9._-] kept */
static void file_stem(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot > base ? (size_t)(dot - base) : strlen(base), j = 0;
    for (size_t i = 0; i < n && j + 1 < size; i++) {
        char c = base[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
        out[j++] = ok ? c : '_';
    }
    out[j] = '\0';
}

int cli_inputs_open(const char *command, cli_inputs *in, const cnn_net *net, const char *data, const char *split,
                    int samples, char **files, int nfiles, int labelled)
{
    memset(in, 0, sizeof *in);
    in->data = data;
    in->files = files;
    in->n = nfiles;
    cnn_net_input_shape(net, &in->h, &in->w, &in->c);
    in->rh = in->h;
    in->rw = in->w;
    cnn_net_resize(net, &in->rh, &in->rw);
    if (!data) return 0;
    cnn_status st = cnn_source_open(data, split, &in->src);
    if (st != CNN_OK) return cli_fail(command, "--data", st);
    cnn_loader_config_defaults(&in->lc);
    in->lc.h = in->h;
    in->lc.w = in->w;
    in->lc.c = in->c;
    if (in->rh != in->h || in->rw != in->w) {
        in->lc.resize_h = in->rh;
        in->lc.resize_w = in->rw;
    }
    in->count = cnn_source_count(in->src);
    in->n = samples < in->count ? samples : (int)in->count;
    if (in->n < 1 || (labelled && !cnn_source_labels(in->src))) {
        fprintf(stderr, "cnn %s: --data: %s has no %ssamples in its %s split\n", command, data,
                labelled ? "labelled " : "", split);
        return 1;
    }
    return 0;
}

cnn_status cli_inputs_load(const cli_inputs *in, int i, char *stem, size_t size, float *dst, int64_t *index)
{
    *index = 0;
    if (in->data) {
        *index = (int64_t)((double)i * (double)in->count / in->n);
        snprintf(stem, size, "%03d_sample%lld", i, (long long)*index);
        return cnn_loader_load_sample(in->src, &in->lc, *index, 0, *index, dst);
    }
    char base[128];
    file_stem(in->files[i], base, sizeof base);
    snprintf(stem, size, "%03d_%s", i, base);
    return cnn_image_load_crop(in->files[i], in->rh, in->rw, in->h, in->w, in->c, dst);
}

void cli_inputs_close(cli_inputs *in)
{
    cnn_source_destroy(in->src);
    in->src = NULL;
}

int cli_check_class(const char *command, int target, const char *model, int k)
{
    if (target < k) return 0;
    fprintf(stderr, "cnn %s: --class: %d is out of range: %s has %d classes (0 to %d)\n", command, target, model, k,
            k - 1);
    return 2;
}

int cli_make_out_dir(const char *command, const char *out)
{
    struct stat sb;
    if (mkdir(out, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "cnn %s: --out: cannot create the directory %s: %s\n", command, out, strerror(errno));
        return 1;
    }
    if (stat(out, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "cnn %s: --out: %s is not a directory\n", command, out);
        return 1;
    }
    return 0;
}
