/* What the commands that run a trained model on images share (cnn attack, cnn explain): their input flags, the
 * --class check, the output folder, and the inputs (image files or samples spread over a data set) as the model
 * sees them. Public API only. */
#ifndef CNN_TOOLS_CLI_COMMON_H
#define CNN_TOOLS_CLI_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "cnn/cnn.h"
#include "tools/cli.h"

/* --data, --split and --samples of a command that takes image files or samples of a data set; `verb` names what
 * it does to them ("attack", "explain") */
#define CLI_INPUT_FLAGS(verb, data, split, samples, most)                                                             \
    {"data", CLI_STRING, &(data), "SPEC      " verb " samples of a data set (as cnn eval --data) instead of files",  \
     0, 0, 0},                                                                                                        \
    {"split", CLI_STRING, &(split), "NAME      train or test (default test)", 0, 0, 0},                               \
    {"samples", CLI_INT, &(samples), "N         with --data: N samples spread over the set (default 16)", 1, most, 0}

/* The inputs of such a command: image files, or `n` samples spread evenly over a data set's split. */
typedef struct cli_inputs {
    const char *data;     /* --data SPEC, or NULL: the files */
    char **files;
    cnn_source *src;      /* --data's split */
    cnn_loader_config lc; /* its samples as the model sees them */
    int64_t count;        /* samples in src */
    int n;                /* inputs */
    int h, w, c;          /* the model's input */
    int rh, rw;           /* the size images are resized to before the centre crop (the model's) */
} cli_inputs;

/* The inputs for net: with data, its split opened (at most `samples` of it, and some: labelled ones when
 * `labelled`), else the nfiles files. Prints a message naming the flag and returns 1 on failure, else 0;
 * cli_inputs_close frees them either way. */
int cli_inputs_open(const char *command, cli_inputs *in, const cnn_net *net, const char *data, const char *split,
                    int samples, char **files, int nfiles, int labelled);

/* Input i as the model sees it, in [0, 1] (h x w x c floats at dst); its name for output files in stem
 * ("007_sample1234" or "007_<the file's stem>"), its sample index in *index (0 for files). */
cnn_status cli_inputs_load(const cli_inputs *in, int i, char *stem, size_t size, float *dst, int64_t *index);

void cli_inputs_close(cli_inputs *in);

/* 0 when --class (target, -1: not given) is below the k classes of the model file `model`, else a message and 2. */
int cli_check_class(const char *command, int target, const char *model, int k);

/* The folder --out names, created when it is not there; 0, or a message and 1. */
int cli_make_out_dir(const char *command, const char *out);

#endif
