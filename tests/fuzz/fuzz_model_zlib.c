/* Fuzz harness: zlib-compressed model files (core/io/zfile.c, README "Pruning"), as every loader reads them.
 *
 * The input is the file after its 8-byte magic (the harness puts that in front, so that every input reaches the
 * decoder): the inflated size (u64, little-endian), then the zlib stream. The file is inflated directly and
 * through cnn_st_read, and loaded as a network on the CPU backend. The seeds in corpus/model_zlib are the model
 * files of corpus/model_file, compressed. */
#include <stdlib.h>
#include <string.h>

#include "cnn/net.h"
#include "core/io/safetensors.h"
#include "core/io/zfile.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    unsigned char *file = malloc(size + 8);
    if (!file) return 0;
    memcpy(file, CNN_ZFILE_MAGIC, 8);
    if (size) memcpy(file + 8, data, size);

    unsigned char *raw = NULL;
    size_t len = 0;
    if (cnn_zfile_inflate(file, size + 8, "fuzz", &raw, &len) == CNN_OK) {
        uint64_t said = 0;
        for (int i = 7; i >= 0; i--) said = (said << 8) | data[i];
        fuzz_check(raw && len == said && raw[len] == '\0', "the inflated size is not the one the header gave");
        free(raw);
    } else {
        fuzz_check(raw == NULL && len == 0, "a failed inflate left a buffer");
    }

    char path[4096];
    snprintf(path, sizeof path, "%s", fuzz_write_file("model.safetensors", file, size + 8));
    free(file);
    cnn_st_file *f = NULL;
    if (cnn_st_read(path, &f) == CNN_OK) {
        for (int i = 0; i < f->count; i++)
            fuzz_check(f->tensors[i].offset <= f->data_size && f->tensors[i].nbytes <= f->data_size - f->tensors[i].offset,
                       "a tensor past the inflated buffer");
        cnn_st_free(f);
    } else {
        fuzz_check(f == NULL, "a failed read left a file");
    }
    cnn_net *net = NULL;
    if (cnn_net_load(path, fuzz_backend(), &net) == CNN_OK) {
        fuzz_check(cnn_net_num_outputs(net) >= 1, "a loaded network without outputs");
        cnn_net_destroy(net);
    } else {
        fuzz_check(net == NULL, "a failed load left a network");
    }
    return 0;
}
