/* cnn.c — data-parallel training over MPI (README, "Data-parallel training").
 *
 * N processes (ranks), launched by mpirun or srun, each train the same model on their own shard of every global
 * batch; gradients are averaged across ranks before each update, so every rank takes the same step. A process that
 * was not started by an MPI launcher, or a build without MPI, trains alone as before. */
#ifndef CNN_DIST_H
#define CNN_DIST_H

#include <stddef.h>

#include "cnn/status.h"
#include "cnn/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cnn_dist cnn_dist;

typedef struct cnn_dist_config {
    double timeout;       /* seconds a collective waits for the slowest rank before the run stops with a message
                           * naming the ranks that did not arrive (default 300) */
    int deterministic;    /* 1: each bucket is gathered and summed in rank order, so two runs with the same number
                           * of ranks give bit-identical results; 0: MPI_Iallreduce (the library picks the order) */
    size_t bucket_bytes;  /* gradients travel in buckets of about this many bytes (default 25 MiB, PyTorch DDP's
                           * bucket_cap_mb) */
    int sync_batchnorm;   /* 1: batchnorm layers normalize with the statistics of the whole global batch (the
                           * per-channel sums of every rank, added in forward and in backward: PyTorch's
                           * SyncBatchNorm); 0: each rank its own batch's (DDP's default) */
} cnn_dist_config;

/* timeout 300 s, not deterministic, 25 MiB buckets, per-rank batchnorm statistics. */
CNN_API void cnn_dist_config_defaults(cnn_dist_config *cfg);

/* 1 when this build has MPI (CMake option CNN_MPI). */
CNN_API int cnn_dist_available(void);
/* 1 when the environment says an MPI launcher started this process (mpirun, mpiexec, srun with PMI/PMIx). */
CNN_API int cnn_dist_launched(void);

/* Initializes MPI (thread level FUNNELED) unless the program did, and reads the rank, the number of ranks and the local rank (the rank
 * among those on the same machine: MPI_COMM_TYPE_SHARED). CNN_ERR_UNSUPPORTED in a build without MPI. */
CNN_API cnn_status cnn_dist_init(const cnn_dist_config *cfg, cnn_dist **out);
/* 0 and 1 (and local rank 0) for NULL: one process alone. */
CNN_API int cnn_dist_rank(const cnn_dist *d);
CNN_API int cnn_dist_size(const cnn_dist *d);
CNN_API int cnn_dist_local_rank(const cnn_dist *d);
/* Sums n doubles across ranks (in rank order: the same result on every rank, run after run); `what` names it in
 * a timeout's message. A NULL d leaves v as it is. */
CNN_API cnn_status cnn_dist_sum(cnn_dist *d, double *v, int n, const char *what);
/* The metrics of `net` on `src` (as cnn_evaluate_source) with the work split across ranks: rank 0's batchnorm
 * statistics go to every rank, each rank evaluates its contiguous 1/N of src, and the sums (loss, confusion
 * matrix) are added across ranks in rank order, so every rank receives the metrics one process would compute on
 * the whole of src (to float rounding of the loss). Every rank must call it. A NULL d: cnn_evaluate_source. */
CNN_API cnn_status cnn_dist_evaluate_source(cnn_dist *d, cnn_net *net, const cnn_source *src,
                                            const cnn_train_config *data, int batch_size, cnn_metrics **out);
/* Waits for every rank (bounded by the timeout). */
CNN_API cnn_status cnn_dist_barrier(cnn_dist *d, const char *what);
/* Ends every rank of the run now (MPI_Abort): for a program whose rank failed while the others may wait in a
 * collective. Does nothing for NULL or one rank. */
CNN_API void cnn_dist_abort(cnn_dist *d, int code);
/* Frees d, and finalizes MPI when cnn_dist_init initialized it (NULL: nothing). */
CNN_API void cnn_dist_finalize(cnn_dist *d);

#ifdef __cplusplus
}
#endif
#endif
