/* Fuzz harness: checkpoints (`cnn train --resume`; core/train/checkpoint.c over core/io/safetensors.c and core/nn/model_file.c).
 *
 * The input is the checkpoint file. It is verified as it is (format, version, checksum); then, so that the fuzzer
 * gets past the checksum, a copy whose checksum is made right (the file parsed and written again with the
 * checksum of its contents) is verified, loaded as a model (the network from its definition), and resumed as
 * cnn_train_source does: opened against the run of checkpoint_setup.h (its settings and a training set of the
 * network's input shape), then the optimizer's state, the position, the monitors, the history and the best
 * weights restored. The seeds in corpus/checkpoint are checkpoints of that run (make_seeds.c).
 *
 * With FUZZ_CHECKPOINT_EXPECT_RESTORE=1 in the environment every input must restore: the ctest test
 * fuzz_checkpoint_seeds_restore runs the seeds so, and fails when they no longer reach the restore (a changed
 * format or setup: write new seeds with fuzz_make_seeds). */
#include <stdlib.h>
#include <string.h>

#include "checkpoint_setup.h"
#include "cnn/net.h"
#include "core/nn/model_file.h"
#include "core/nn/optim.h"
#include "core/train/checkpoint.h"
#include "fuzz.h"

/* Networks with more weights are not resumed: the optimizer's state is two copies of them. */
#define FUZZ_CKPT_MAX_PARAMS ((int64_t)1 << 20)

/* Writes the file `f` again as `name`, with the checksum of its contents; returns its path, or NULL when the file
 * cannot be written back (a name or value the writer refuses). */
static const char *with_right_checksum(const cnn_st_file *f, const char *name)
{
    char sum[32];
    snprintf(sum, sizeof sum, "crc32c:%08x", cnn_file_checksum(f));
    cnn_st_entry *entries = calloc((size_t)f->count + 1, sizeof *entries);
    const char **keys = calloc((size_t)f->meta_count + 1, sizeof *keys);
    const char **values = calloc((size_t)f->meta_count + 1, sizeof *values);
    fuzz_check(entries && keys && values, "out of memory");
    for (int i = 0; i < f->count; i++) {
        const cnn_st_tensor *t = &f->tensors[i];
        entries[i] = (cnn_st_entry){t->name, t->dtype, t->ndim, t->shape, cnn_st_data(f, t)};
    }
    int nmeta = 0, have = 0;
    for (int i = 0; i < f->meta_count; i++) {
        keys[nmeta] = f->meta_keys[i];
        values[nmeta] = f->meta_values[i];
        if (!strcmp(keys[nmeta], CNN_CHECKSUM_KEY)) values[nmeta] = sum, have = 1;
        nmeta++;
    }
    if (!have) keys[nmeta] = CNN_CHECKSUM_KEY, values[nmeta++] = sum;
    const char *path = fuzz_path(name);
    cnn_status st = cnn_st_write(path, entries, f->count, keys, values, nmeta);
    free(entries);
    free(keys);
    free(values);
    return st == CNN_OK ? path : NULL;
}

/* Resumes the run of checkpoint_setup.h from `path`; 1 when everything was restored. */
static int resume(const char *path)
{
    int restored = 0;
    cnn_net *net = NULL;
    cnn_st_file *f = NULL;
    cnn_optimizer *opt = NULL;
    cnn_train_state s = {0};
    cnn_train_config cfg;
    fuzz_checkpoint_config(&cfg);

    if (cnn_net_load(path, fuzz_backend(), &net) != CNN_OK) return 0;
    if (cnn_net_param_count(net) > FUZZ_CKPT_MAX_PARAMS) goto done;
    int32_t labels[FUZZ_CKPT_SAMPLES];
    fuzz_checkpoint_labels(cnn_net_num_outputs(net), labels);
    cnn_dataset train = {.n = FUZZ_CKPT_SAMPLES, .labels = labels, .num_classes = cnn_net_num_outputs(net)};
    cnn_net_input_shape(net, &train.h, &train.w, &train.c);

    if (cnn_train_state_init(&s, &cfg, train.n) != CNN_OK) goto done;
    if (cnn_checkpoint_open(path, net, &cfg, &train, &f) != CNN_OK) goto done;
    fuzz_check(f != NULL, "an opened checkpoint without its file");
    if (cnn_optimizer_create(net, &cfg, &opt) != CNN_OK) goto done;
    if (cnn_checkpoint_restore(f, path, net, opt, &s, &cfg) != CNN_OK) goto done;
    fuzz_check(s.epoch >= 0 && s.epoch <= cfg.epochs, "a restored epoch out of range");
    fuzz_check(s.samples_done >= 0, "a negative position restored");
    fuzz_check(s.best_epoch >= 0 && s.best_epoch <= s.epoch, "a best epoch after the last one");
    restored = 1;
done:
    cnn_optimizer_destroy(opt);
    cnn_st_free(f);
    cnn_train_state_free(&s);
    cnn_net_destroy(net);
    return restored;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > FUZZ_MAX_INPUT) return 0;
    const char *expect = getenv("FUZZ_CHECKPOINT_EXPECT_RESTORE");
    int must_restore = expect && !strcmp(expect, "1");
    char path[4096];
    snprintf(path, sizeof path, "%s", fuzz_write_file("ckpt.safetensors", data, size));

    cnn_checkpoint_info info;
    cnn_status as_is = cnn_checkpoint_verify(path, NULL, &info);
    if (as_is == CNN_OK)
        fuzz_check(info.epoch >= 0 && info.samples_done >= 0 && info.samples_done <= info.epoch_samples,
                   "a verified checkpoint's position is out of range");

    cnn_st_file *f = NULL;
    if (cnn_st_read(path, &f) != CNN_OK) {
        fuzz_check(as_is != CNN_OK && !must_restore, "a checkpoint that verifies does not read");
        return 0;
    }
    const char *fixed = with_right_checksum(f, "fixed.safetensors");
    cnn_st_free(f);
    int restored = 0;
    if (fixed) {
        char fixed_path[4096];
        snprintf(fixed_path, sizeof fixed_path, "%s", fixed);
        if (cnn_checkpoint_verify(fixed_path, NULL, &info) == CNN_OK) restored = resume(fixed_path);
    }
    if (must_restore) fuzz_check(restored, "a seed checkpoint does not restore");
    return 0;
}
