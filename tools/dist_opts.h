/* cnn train's data-parallel side (README, "Data-parallel training"): MPI started when a launcher (mpirun, srun)
 * started the process, the GPU of the local rank, rank 0 alone talking. Kept apart so that cmd_train only calls
 * it. Public API only. */
#ifndef CNN_TOOLS_DIST_OPTS_H
#define CNN_TOOLS_DIST_OPTS_H

#include <stdio.h>

#include "cnn/cnn.h"
#include "cnn/dist.h"
#include "tools/cli.h"

typedef struct cli_dist_opts {
    float timeout;    /* --collective-timeout SECONDS */
    float bucket_mb;  /* --bucket-mb MB */
    int sync_bn;      /* --sync-batchnorm */
    cnn_dist *dist;   /* NULL: one process */
    FILE *err;        /* where a rank other than 0 reports its failure (its stderr is silenced) */
} cli_dist_opts;

#define CLI_DIST_OPTS_INIT {300.0f, 25.0f, 0, NULL, NULL}

#define CLI_DIST_FLAGS(o)                                                                                             \
    {"collective-timeout", CLI_FLOAT, &(o).timeout, "SECONDS   data-parallel runs: a rank that dies or hangs stops "  \
                                                    "the others after this long, naming it (default 300)", 0.001,    \
     1e7, 0},                                                                                                         \
    {"bucket-mb", CLI_FLOAT, &(o).bucket_mb, "MB        data-parallel runs: gradients travel in buckets of this size "\
                                             "(default 25, as PyTorch DDP)", 0.001, 4096, 0},        \
    {"sync-batchnorm", CLI_BOOL, &(o).sync_bn, "          data-parallel runs: batchnorm normalizes with the "      \
                                               "statistics of all ranks' images, not each rank's own", 0, 0, 0}

/* Under an MPI launcher: initializes MPI (--deterministic fixes the reduction order), puts the context into
 * cfg->dist when there are several ranks, and silences the progress and messages of every rank but 0. A lone
 * rank trains as one process. Returns 0, or the exit status of a failure (after its message). */
int cli_dist_start(const char *command, cli_dist_opts *o, cnn_train_config *cfg);
/* The device of this rank: with several ranks, "cuda" (or no --device where CUDA is the default) becomes
 * "cuda:<local rank>"; *owned receives a string to free, or NULL. */
const char *cli_dist_device(const cli_dist_opts *o, const char *device, char **owned);
/* 1 on the rank that writes files and prints results (rank 0, or one process). */
int cli_dist_writer(const cli_dist_opts *o);
/* Ends the run: with rc != 0 on several ranks, the rank's message goes to its real stderr and every rank is ended
 * (MPI_Abort: the others may wait in a collective); else MPI is finalized. Returns rc. */
int cli_dist_finish(const char *command, cli_dist_opts *o, int rc);

#endif
