/* Gradients all-reduced by NCCL on the CUDA backend's compute stream (core/train/dist.c calls it; README, "Data-parallel
 * training"). Built with the CUDA backend when NCCL is found (CNN_HAVE_NCCL). */
#ifndef CNN_CUDA_NCCL_H
#define CNN_CUDA_NCCL_H

#include "core/nn/optim.h"

/* NCCL_UNIQUE_ID_BYTES: the communicator id that rank 0 makes and MPI carries to the others */
#define CNN_NCCL_ID_BYTES 128

typedef struct cnn_nccl cnn_nccl;

/* 1 when b is the CUDA backend. */
int cnn_nccl_backend_is_cuda(const cnn_backend *b);
cnn_status cnn_nccl_unique_id(unsigned char *id);
/* A communicator of `ranks` ranks on b's device (created without blocking, polled against `timeout` seconds).
 * deterministic: NCCL's ring algorithm with the simple protocol (NCCL_ALGO, NCCL_PROTO, unless set), whose
 * reduction order is fixed for a given number of ranks and message size. */
cnn_status cnn_nccl_create(cnn_backend *b, const unsigned char *id, int ranks, int rank, int deterministic,
                           double timeout, cnn_nccl **out);
/* Every gradient of opt becomes sum over ranks of scale_r x gradient_r (ncclRedOpCreatePreMulSum with this rank's
 * scale), in groups of about bucket_bytes, enqueued on the compute stream; then waits for them, at most `timeout`
 * seconds (a timeout aborts the communicator and says so). 16-bit gradients travel as they are. */
cnn_status cnn_nccl_allreduce_grads(cnn_nccl *c, cnn_optimizer *opt, float scale, size_t bucket_bytes, double timeout);
void cnn_nccl_destroy(cnn_nccl *c);

#endif
