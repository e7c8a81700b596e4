/* A training loop of your own on libcnn's public API: the data, the order, the schedule and the report are this
 * program's; each step (forward, loss, backward, update) is the library's, the same one `cnn train` runs.
 *
 *   train DEFINITION.cnn OUT.safetensors [--data SPEC] [--epochs N] [--batch B] [--lr LR] [--seed S]
 *
 * Loads the training and test splits of SPEC (default fashion-mnist), builds the network from the definition,
 * normalizes with the training set's mean and std, shuffles each epoch with its own generator, halves the learning
 * rate after every epoch (a schedule cnn train does not have), prints the loss and accuracy of each epoch and the
 * test accuracy, and saves the model. Exit status: 0, 1 for a failure, 2 for a usage error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnn/cnn.h"

static int fail(const char *what)
{
    fprintf(stderr, "train: %s: %s\n", what, cnn_last_error());
    return 1;
}

/* a small generator of our own for the shuffle (splitmix64) */
static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int parse_count(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end || v < lo || v > hi) {
        fprintf(stderr, "train: %s: '%s' is not an integer from %ld to %ld\n", flag, s, lo, hi);
        return 0;
    }
    *out = v;
    return 1;
}

int main(int argc, char **argv)
{
    const char *definition = NULL, *out = NULL, *data = "fashion-mnist";
    long epochs = 2, batch = 64, seed = 1;
    float lr = 1e-3f;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--data") && v) {
            data = v;
            i++;
        } else if (!strcmp(a, "--epochs") && v) {
            if (!parse_count(a, v, 1, 1000, &epochs)) return 2;
            i++;
        } else if (!strcmp(a, "--batch") && v) {
            if (!parse_count(a, v, 1, 65536, &batch)) return 2;
            i++;
        } else if (!strcmp(a, "--seed") && v) {
            if (!parse_count(a, v, 0, 1L << 30, &seed)) return 2;
            i++;
        } else if (!strcmp(a, "--lr") && v) {
            char *end;
            lr = strtof(v, &end);
            if (*end || !(lr > 0.0f) || lr > 10.0f) {
                fprintf(stderr, "train: --lr: '%s' is not a learning rate in (0, 10]\n", v);
                return 2;
            }
            i++;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "train: unknown flag %s (or it lacks its value)\n", a);
            return 2;
        } else if (!definition) {
            definition = a;
        } else if (!out) {
            out = a;
        } else {
            fprintf(stderr, "train: one definition and one output file, got '%s' too\n", a);
            return 2;
        }
    }
    if (!definition || !out) {
        fprintf(stderr, "usage: train DEFINITION.cnn OUT.safetensors [--data SPEC] [--epochs N] [--batch B] [--lr LR] "
                        "[--seed S]\n");
        return 2;
    }

    int rc = 0;
    cnn_backend *backend = NULL;
    cnn_net *net = NULL;
    cnn_dataset *train = NULL, *test = NULL;
    cnn_trainer *trainer = NULL;
    cnn_metrics *m = NULL;
    int64_t *order = NULL;
    float *x = NULL;
    int32_t *y = NULL;
    if (cnn_backend_create("cpu", &backend) != CNN_OK) return fail("cpu");
    if (cnn_dataset_load(data, "train", &train) != CNN_OK) {
        rc = fail(data);
        goto done;
    }
    if (cnn_dataset_load(data, "test", &test) != CNN_OK) {
        rc = fail(data);
        goto done;
    }
    if (cnn_net_from_file(definition, backend, (uint64_t)seed, &net) != CNN_OK) {
        rc = fail(definition);
        goto done;
    }
    int h, w, c;
    cnn_net_input_shape(net, &h, &w, &c);
    if (train->h != h || train->w != w || train->c != c) {
        fprintf(stderr, "train: %s has %dx%dx%d images, %s takes %dx%dx%d\n", data, train->h, train->w, train->c,
                definition, h, w, c);
        rc = 1;
        goto done;
    }
    float mean[3], std[3];
    if (c > 3 || cnn_dataset_stats(train, mean, std) != CNN_OK || cnn_net_set_normalization(net, c, mean, std) != CNN_OK) {
        rc = fail("normalization");
        goto done;
    }
    if (train->class_names)
        cnn_net_set_class_names(net, train->num_classes, (const char *const *)train->class_names);

    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    cfg.batch_size = (int)batch;
    cfg.lr = lr;
    if (cnn_trainer_create(net, &cfg, &trainer) != CNN_OK) {
        rc = fail("trainer");
        goto done;
    }
    size_t per = (size_t)h * w * c;
    order = malloc((size_t)train->n * sizeof *order);
    x = malloc((size_t)batch * per * sizeof *x);
    y = malloc((size_t)batch * sizeof *y);
    if (!order || !x || !y) {
        fprintf(stderr, "train: out of memory\n");
        rc = 1;
        goto done;
    }
    uint64_t rng = (uint64_t)seed;
    for (int64_t i = 0; i < train->n; i++) order[i] = i;
    for (int e = 0; e < epochs; e++) {
        for (int64_t i = train->n - 1; i > 0; i--) { /* Fisher-Yates */
            int64_t j = (int64_t)(next_random(&rng) % (uint64_t)(i + 1)), t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        double loss_sum = 0.0;
        int64_t right = 0;
        for (int64_t at = 0; at < train->n; at += batch) {
            int n = (int)(train->n - at < batch ? train->n - at : batch);
            for (int i = 0; i < n; i++) { /* the batch as values in [0, 1] (the dataset may hold 8-bit pixels) */
                cnn_dataset_image(train, order[at + i], x + (size_t)i * per);
                y[i] = train->labels[order[at + i]];
            }
            double loss;
            int correct;
            if (cnn_trainer_step(trainer, x, y, n, &loss, &correct) != CNN_OK) {
                rc = fail("step");
                goto done;
            }
            loss_sum += loss * n;
            right += correct;
        }
        printf("epoch %d/%ld: lr %g - loss %.4f - accuracy %.4f\n", e + 1, epochs, (double)cnn_trainer_lr(trainer),
               loss_sum / (double)train->n, (double)right / (double)train->n);
        fflush(stdout);
        if (cnn_trainer_set_lr(trainer, cnn_trainer_lr(trainer) * 0.5f) != CNN_OK) {
            rc = fail("learning rate");
            goto done;
        }
    }
    if (cnn_evaluate(net, test, 256, &m) != CNN_OK) {
        rc = fail("test set");
        goto done;
    }
    printf("test loss %.4f - test accuracy %.4f (%lld images, %lld steps)\n", m->loss, m->accuracy,
           (long long)m->n, (long long)cnn_trainer_steps(trainer));
    if (cnn_net_save(net, out) != CNN_OK) rc = fail(out);
done:
    free(order);
    free(x);
    free(y);
    cnn_metrics_destroy(m);
    cnn_trainer_destroy(trainer);
    cnn_dataset_destroy(train);
    cnn_dataset_destroy(test);
    cnn_net_destroy(net);
    cnn_backend_destroy(backend);
    return rc;
}
