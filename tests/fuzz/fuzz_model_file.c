/* Fuzz harness: model files (safetensors with cnn.c's metadata; core/io/safetensors.c, core/nn/model_file.c), loaded as
 * `cnn predict --model`, `cnn eval` and `cnn summary` load them, and as `cnn train --init-from` reads them.
 *
 * The input is the file. It is read as safetensors (strictly, and keeping foreign dtypes as the PyTorch import
 * does); loaded as a network on the CPU backend (definition, weights, class names, normalization, resize), whose
 * stored settings are then checked and summarized; and used to initialize a small fixed network for fine-tuning
 * (cnn_net_init_from: same-named tensors copied, or a PyTorch state_dict imported). The seeds in
 * corpus/model_file are model files of small networks (make_seeds.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/net.h"
#include "core/io/safetensors.h"
#include "fuzz.h"

/* The network that --init-from initializes: small, with the tensor names a small model file has. */
static const char fine_tune_definition[] = "input 4 4 1\nconv 2 3 relu\nflatten\ndense 2 softmax\n";

static void check_st(const cnn_st_file *f)
{
    for (int i = 0; i < f->count; i++) {
        const cnn_st_tensor *t = &f->tensors[i];
        fuzz_check(t->name && cnn_st_find(f, t->name) == t, "a tensor is not found by its name");
        fuzz_check(t->offset <= f->data_size && t->nbytes <= f->data_size - t->offset, "a tensor past the buffer");
        if (t->nbytes) {
            /* the bytes are there (ASan reads them) */
            const unsigned char *p = cnn_st_data(f, t);
            unsigned x = p[0] ^ p[t->nbytes - 1];
            (void)x;
        }
    }
    for (int i = 0; i < f->meta_count; i++)
        fuzz_check(cnn_st_meta(f, f->meta_keys[i]) != NULL, "a metadata key is not found");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s", fuzz_write_file("model.safetensors", data, size));

    cnn_st_file *f = NULL;
    if (cnn_st_read(path, &f) == CNN_OK) {
        check_st(f);
        cnn_st_free(f);
    } else {
        fuzz_check(f == NULL, "a failed read left a file");
    }
    if (cnn_st_read_ex(path, CNN_ST_KEEP_FOREIGN, &f) == CNN_OK) {
        check_st(f);
        cnn_st_free(f);
    }

    cnn_net *net = NULL;
    if (cnn_net_load(path, fuzz_backend(), &net) == CNN_OK) {
        int h, w, c, rh, rw;
        cnn_net_input_shape(net, &h, &w, &c);
        int outputs = cnn_net_num_outputs(net);
        fuzz_check(h >= 1 && w >= 1 && c >= 1 && outputs >= 1, "a loaded network of no shape");
        for (int i = 0; i < outputs; i++) (void)cnn_net_class_name(net, i);
        if (c <= 64) {
            float mean[64], std[64];
            if (cnn_net_normalization(net, mean, std))
                for (int k = 0; k < c; k++) fuzz_check(isfinite(mean[k]) && std[k] > 0.0f, "a stored normalization is unusable");
        }
        if (cnn_net_resize(net, &rh, &rw)) fuzz_check(rh >= h && rw >= w, "a stored resize smaller than the input");
        cnn_net_summary(net, fuzz_devnull());
        cnn_net_destroy(net);
    } else {
        fuzz_check(net == NULL, "a failed load left a network");
    }

    cnn_net *tune = NULL;
    fuzz_check(cnn_net_from_text(fine_tune_definition, "fine-tune", fuzz_backend(), 1, &tune) == CNN_OK,
               "the fine-tuning network does not build");
    int copied = 0, kept = 0;
    if (cnn_net_init_from(tune, path, &copied, &kept) == CNN_OK)
        fuzz_check(copied >= 0 && kept >= 0, "negative tensor counts");
    cnn_net_destroy(tune);
    return 0;
}
