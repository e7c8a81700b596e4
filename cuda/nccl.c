/* Gradients all-reduced by NCCL on the compute stream (cuda/nccl.h). Every NCCL call's result is checked; the
 * communicator is non-blocking (ncclConfig_t.blocking = 0), so that no call can hang the process: each one is
 * polled with ncclCommGetAsyncError against the collective timeout, and a communicator that does not finish in
 * time is aborted (ncclCommAbort) with a message. */
#define _POSIX_C_SOURCE 200809L

#include "cuda/nccl.h"

#if CNN_HAVE_NCCL

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nccl.h>

#include "cuda/cuda_util.h"

_Static_assert(CNN_NCCL_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "the id size MPI carries is NCCL's");

struct cnn_nccl {
    cnn_backend *backend;
    ncclComm_t comm;
    cudaEvent_t done;  /* recorded after the step's all-reduces */
};

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static cnn_status nccl_fail(ncclResult_t r, ncclComm_t comm, const char *call)
{
    const char *last = comm ? ncclGetLastError(comm) : NULL;
    return cnn_error(CNN_ERR_BACKEND, "NCCL: %s failed: %s%s%s", call, ncclGetErrorString(r), last && *last ? ": " : "",
                     last ? last : "");
}

/* A call on the non-blocking communicator: ncclInProgress is polled until the communicator settles, at most until
 * `deadline`. */
static cnn_status settle(cnn_nccl *c, ncclResult_t r, const char *call, double deadline)
{
    while (r == ncclInProgress) {
        if (now_seconds() > deadline) {
            ncclCommAbort(c->comm);
            c->comm = NULL;
            return cnn_error(CNN_ERR_BACKEND, "NCCL: %s did not complete within the collective timeout: a rank died "
                                              "or hangs; the communicator was aborted", call);
        }
        ncclResult_t a = ncclCommGetAsyncError(c->comm, &r);
        if (a != ncclSuccess) return nccl_fail(a, c->comm, "ncclCommGetAsyncError");
    }
    return r == ncclSuccess ? CNN_OK : nccl_fail(r, c->comm, call);
}

int cnn_nccl_backend_is_cuda(const cnn_backend *b) { return b && b->ops == &cnn_cuda_ops; }

cnn_status cnn_nccl_unique_id(unsigned char *id)
{
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) return nccl_fail(r, NULL, "ncclGetUniqueId");
    memcpy(id, u.internal, CNN_NCCL_ID_BYTES);
    return CNN_OK;
}

cnn_status cnn_nccl_create(cnn_backend *b, const unsigned char *id, int ranks, int rank, int deterministic,
                           double timeout, cnn_nccl **out)
{
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    cnn_nccl *c = NULL;
    *out = NULL;
    CNN_TRY(cnn_cuda_enter(b, &ctx, "nccl"));
    c = calloc(1, sizeof *c);
    if (!c) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    c->backend = b;
    if (deterministic) { /* one algorithm and protocol: the same reduction order in every run (unless the user chose) */
        setenv("NCCL_ALGO", "Ring", 0);
        setenv("NCCL_PROTO", "Simple", 0);
    }
    ncclUniqueId u;
    memcpy(u.internal, id, CNN_NCCL_ID_BYTES);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&c->comm, ranks, u, rank, &config);
    if (r != ncclSuccess && r != ncclInProgress) {
        st = nccl_fail(r, c->comm, "ncclCommInitRankConfig");
        goto fail;
    }
    CNN_TRY(settle(c, r, "ncclCommInitRankConfig", now_seconds() + timeout));
    CNN_CUDA_RT("nccl", cudaEventCreateWithFlags, &c->done, cudaEventDisableTiming);
    *out = c;
    return CNN_OK;
fail:
    cnn_nccl_destroy(c);
    return st;
}

/* NCCL's type of a gradient, and the scalar of PreMulSum in that type (binary16 / bfloat16 bits of `scale`, a
 * normal number in (0, 1]: round to nearest even). */
static cnn_status nccl_type(cnn_dtype dt, float scale, ncclDataType_t *type, void *scalar)
{
    uint32_t bits;
    memcpy(&bits, &scale, sizeof bits);
    switch (dt) {
    case CNN_F32:
        *type = ncclFloat32;
        memcpy(scalar, &scale, sizeof scale);
        return CNN_OK;
    case CNN_BF16: {
        uint16_t h = (uint16_t)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
        *type = ncclBfloat16;
        memcpy(scalar, &h, sizeof h);
        return CNN_OK;
    }
    case CNN_F16: {
        int e = (int)((bits >> 23) & 0xffu) - 127 + 15;
        uint32_t m = bits & 0x7fffffu;
        uint16_t h;
        if (scale == 0.0f || e < 1) h = 0; /* the scales are at least 1 / images of the step: never this small */
        else {
            uint32_t r = m >> 13, rest = m & 0x1fffu;
            if (rest > 0x1000u || (rest == 0x1000u && (r & 1u))) r++;
            h = (uint16_t)(((uint32_t)e << 10) + r); /* a carry out of the mantissa bumps the exponent, as it should */
        }
        *type = ncclFloat16;
        memcpy(scalar, &h, sizeof h);
        return CNN_OK;
    }
    default:
        return cnn_error(CNN_ERR_UNSUPPORTED, "NCCL: gradients of type %s", cnn_dtype_name(dt));
    }
}

cnn_status cnn_nccl_allreduce_grads(cnn_nccl *c, cnn_optimizer *opt, float scale, size_t bucket_bytes, double timeout)
{
    cnn_status st = CNN_OK;
    cnn_cuda_ctx *ctx = NULL;
    if (!c || !c->comm) return cnn_error(CNN_ERR_BACKEND, "NCCL: no communicator (aborted after an earlier failure)");
    if (!(scale >= 0.0f && scale <= 1.0f)) return cnn_error(CNN_ERR_INVALID_ARG, "NCCL: gradient scale %g", (double)scale);
    CNN_TRY(cnn_cuda_enter(c->backend, &ctx, "nccl"));
    const double deadline = now_seconds() + timeout;
    /* one op per dtype and step: PreMulSum takes this rank's scale as a host value */
    ncclRedOp_t ops[3];
    int made[3] = {0, 0, 0};
    size_t in_group = 0;
    int open = 0;
    for (int i = opt->nparams - 1; i >= 0; i--) { /* the last layers' gradients first, as backward finishes them */
        cnn_tensor *g = opt->params[i]->grad;
        int slot = g->dtype == CNN_F32 ? 0 : g->dtype == CNN_F16 ? 1 : 2;
        ncclDataType_t type = ncclFloat32;
        unsigned char scalar[4];
        CNN_TRY(nccl_type(g->dtype, scale, &type, scalar));
        if (!made[slot]) {
            ncclResult_t r = ncclRedOpCreatePreMulSum(&ops[slot], scalar, type, ncclScalarHostImmediate, c->comm);
            CNN_TRY(settle(c, r, "ncclRedOpCreatePreMulSum", deadline));
            made[slot] = 1;
        }
        if (!open) {
            CNN_TRY(settle(c, ncclGroupStart(), "ncclGroupStart", deadline));
            open = 1;
        }
        size_t count = (size_t)cnn_tensor_numel(g);
        ncclResult_t r = ncclAllReduce(g->data, g->data, count, type, ops[slot], c->comm, ctx->compute);
        if (r != ncclSuccess && r != ncclInProgress) {
            st = nccl_fail(r, c->comm, "ncclAllReduce");
            goto fail;
        }
        in_group += count * cnn_dtype_size(g->dtype);
        if (in_group >= bucket_bytes || i == 0) { /* a bucket: one fused launch */
            open = 0;
            in_group = 0;
            CNN_TRY(settle(c, ncclGroupEnd(), "ncclGroupEnd", deadline));
        }
    }
    CNN_CUDA_RT("nccl", cudaEventRecord, c->done, ctx->compute);
    /* bounded wait: a peer that died leaves the all-reduce unfinished forever */
    for (;;) {
        cudaError_t e = cudaEventQuery(c->done);
        if (e == cudaSuccess) break;
        if (e != cudaErrorNotReady) CNN_TRY(cnn_cuda_rt_status(e, "nccl", "cudaEventQuery"));
        ncclResult_t async = ncclSuccess;
        ncclResult_t r = ncclCommGetAsyncError(c->comm, &async);
        if (r != ncclSuccess) CNN_TRY(nccl_fail(r, c->comm, "ncclCommGetAsyncError"));
        if (async != ncclSuccess && async != ncclInProgress) CNN_TRY(nccl_fail(async, c->comm, "ncclAllReduce"));
        if (now_seconds() > deadline) {
            ncclCommAbort(c->comm);
            c->comm = NULL;
            st = cnn_error(CNN_ERR_BACKEND, "NCCL: the gradient all-reduce did not complete within the collective "
                                            "timeout (%g s); the communicator was aborted", timeout);
            goto fail;
        }
        nanosleep(&(struct timespec){0, 50000}, NULL);
    }
fail:
    for (int k = 0; k < 3; k++)
        if (made[k] && c->comm) ncclRedOpDestroy(ops[k], c->comm);
    return st;
}

void cnn_nccl_destroy(cnn_nccl *c)
{
    if (!c) return;
    if (c->done) cudaEventDestroy(c->done);
    if (c->comm) {
        /* finalize flushes outstanding work; a communicator that cannot is aborted */
        ncclResult_t f = ncclCommFinalize(c->comm);
        if (f == ncclSuccess || f == ncclInProgress) {
            ncclResult_t state = ncclInProgress;
            double deadline = now_seconds() + 10.0;
            while (state == ncclInProgress && now_seconds() < deadline) ncclCommGetAsyncError(c->comm, &state);
            if (state == ncclSuccess) ncclCommDestroy(c->comm);
            else ncclCommAbort(c->comm);
        } else {
            ncclCommAbort(c->comm);
        }
    }
    free(c);
}

#else
/* a build without NCCL: nothing here (ISO C wants a declaration in every file) */
typedef int cnn_nccl_unused;
#endif
