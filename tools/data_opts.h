/* The data pipeline's command-line options, shared by cnn train and cnn eval: augmentation, sampler, loader
 * threads and ring, resizing, the decoding limit, strictness, normalization, the test set. Public API only. */
#ifndef CNN_TOOLS_DATA_OPTS_H
#define CNN_TOOLS_DATA_OPTS_H

#include <stdint.h>

#include "cnn/cnn.h"
#include "tools/cli.h"

typedef struct cli_data_opts {
    const char *augment, *sampler, *resize, *mean, *std, *test_data;
    int workers, prefetch, strict;
    int limit;                /* --limit: the first N samples of each split; 0: all */
    uint64_t max_pixels;
    cnn_augment aug;          /* parsed by cli_data_apply */
    char augment_from[512];   /* the model's augment line, when it was used */
} cli_data_opts;

/* The flags of training (all) and of evaluation (the loader's), as entries of a cli_flag table. */
#define CLI_DATA_LOADER_FLAGS(o)                                                                                      \
    {"resize", CLI_STRING, &(o).resize, "HxW       resize images to this, then crop the model's input (centre; "     \
                                        "random with augment crop); default: the model's (cnn train stores it), else none", 0, 0, 0},              \
    {"workers", CLI_INT, &(o).workers, "N         data loader threads (default: half the cores, 1 to 8)", 0, 256, 0}, \
    {"prefetch", CLI_INT, &(o).prefetch, "N         batches prepared ahead (default: 2 per worker, <= 512 MiB, >= 4)", 2, \
     1024, 0},                                                                                                        \
    {"max-pixels", CLI_U64, &(o).max_pixels, "N         images larger than N pixels are bad files (default 67108864)", \
     0, 0, 0},                                                                                                        \
    {"strict", CLI_BOOL, &(o).strict, "          stop at the first bad image file (default: skip it with a warning)", \
     0, 0, 0},                                                                                                        \
    {"limit", CLI_INT, &(o).limit, "N         a quick run: only the first N samples of each split (training, "      \
                                   "validation, test) (default: all)", 1, 2147483647, 0}

#define CLI_DATA_TRAIN_FLAGS(o)                                                                                       \
    CLI_DATA_LOADER_FLAGS(o),                                                                                         \
    {"augment", CLI_STRING, &(o).augment, "LIST      training augmentation, e.g. flip=h,rotate=0.05,zoom=0.1,"        \
                                          "shift=0.1,erase=0.5 (default: the model's augment line; none: off)", 0, 0, \
     0},                                                                                                              \
    {"sampler", CLI_STRING, &(o).sampler, "NAME      shuffle, sequential (the data's order, every epoch), oversample " \
                                          "(or balanced) or undersample (default shuffle)", 0, 0, 0},                 \
    {"mean", CLI_STRING, &(o).mean, "LIST      per-channel mean to normalize by (with --std; stored in the model)",   \
     0, 0, 0},                                                                                                        \
    {"std", CLI_STRING, &(o).std, "LIST      per-channel standard deviation (with --mean)", 0, 0, 0},                 \
    {"test-data", CLI_STRING, &(o).test_data, "SPEC      the test set (default: the test split of --data, if any)",  \
     0, 0, 0}

/* Puts the options into cfg (augmentation from the model's definition when --augment is absent); net may be NULL
 * for evaluation. Prints a message and returns 2 on a bad value, else 0. */
int cli_data_apply(const char *command, cli_data_opts *o, cnn_train_config *cfg, const cnn_net *net);

/* The loader settings of cfg for net's input (for cnn_source_stats). */
void cli_loader_config(const cnn_train_config *cfg, const cnn_net *net, cnn_loader_config *lc);

/* "--mean/--std" given (*given = 1) or, with `compute`, computed from the source; stored in the model. Returns the
 * exit status (0, 1 or 2) after printing what went wrong. */
int cli_data_normalization(const char *command, const cli_data_opts *o, int compute, const cnn_source *train,
                           const cnn_train_config *cfg, cnn_net *net);

/* --limit: keeps the first o->limit samples of src (NULL: nothing to do); prints a message and returns 1 on
 * failure, else 0. */
int cli_data_limit(const char *command, const cli_data_opts *o, cnn_source *src);

/* Opens a split of a spec that may lack it: a test set given on its own (folder:DIR, csv:FILE) is that spec's
 * "train" split when it has no "test" one. */
cnn_status cli_open_test(const char *spec, cnn_source **out);

/* Prints the class counts of a source on stderr ("class counts (training): ..."), and what the sampler draws; for
 * imbalanced classes, the sampler and the class weights as a hint, unless the loss is already weighted. */
void cli_report_classes(const char *command, const char *what, const cnn_source *src, cnn_sampler sampler,
                        int weighted);

#endif
