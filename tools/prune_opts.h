/* cnn train's pruning flags (README "Pruning"), kept apart so that cnn train's flag table only names them. Public
 * API only. */
#ifndef CNN_TOOLS_PRUNE_OPTS_H
#define CNN_TOOLS_PRUNE_OPTS_H

#include "cnn/cnn.h"
#include "tools/cli.h"

typedef struct cli_prune_opts {
    const char *method;    /* --prune magnitude */
    const char *structure; /* --prune-structure */
    float initial, target; /* CLI_PRUNE_UNSET: not given */
    int begin, end, frequency;
} cli_prune_opts;

#define CLI_PRUNE_UNSET (-1e30f)
#define CLI_PRUNE_UNSET_STEP (-2147483647 - 1)
#define CLI_PRUNE_OPTS_INIT {NULL, NULL, CLI_PRUNE_UNSET, CLI_PRUNE_UNSET, CLI_PRUNE_UNSET_STEP, CLI_PRUNE_UNSET_STEP, \
                             CLI_PRUNE_UNSET_STEP}

#define CLI_PRUNE_FLAGS(o)                                                                                            \
    {"prune", CLI_STRING, &(o).method, "NAME      pruning during training: magnitude (the weights of least |w|, on " \
                                       "TF-MOT's polynomial schedule)", 0, 0, 0},                                    \
    {"target-sparsity", CLI_FLOAT, &(o).target, "S         pruning: the final share of zero weights per layer, in "  \
                                                "[0, 1) (default 0.5)", -1e29, 1e29, 0},                             \
    {"initial-sparsity", CLI_FLOAT, &(o).initial, "S         pruning: the share at the begin step, in [0, 1) "      \
                                                  "(default 0)", -1e29, 1e29, 0},                                    \
    {"prune-begin-step", CLI_INT, &(o).begin, "B         pruning: the first step that prunes (default 0)",          \
     -2147483647, 2147483647, 0},                                                                                     \
    {"prune-end-step", CLI_INT, &(o).end, "E         pruning: the step that reaches the target (default: 3/4 of the " \
                                          "run's steps)", -2147483647, 2147483647, 0},                               \
    {"prune-frequency", CLI_INT, &(o).frequency, "F         pruning: masks recomputed every F steps from B "         \
                                                 "(default 100)", -2147483647, 2147483647, 0},                       \
    {"prune-structure", CLI_STRING, &(o).structure, "NAME      pruning: unstructured (default), channel (whole conv " \
                                                    "filters, for cnn prune --strip) or 2:4", 0, 0, 0}

/* Puts the flags into cfg->prune. Prints a message naming the flag and returns 2 on a bad value (or a pruning flag
 * without --prune), else 0. */
int cli_prune_apply(const char *command, const cli_prune_opts *o, cnn_train_config *cfg);

#endif
