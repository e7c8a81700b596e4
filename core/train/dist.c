/* Data-parallel training over MPI (cnn/dist.h, core/train/dist.h): Horovod's model. Each rank trains on its shard of the
 * global batch; before the update the gradients are averaged across ranks in buckets (PyTorch DDP's
 * bucket_cap_mb) that start during backward, as soon as their layers are done (a hook in cnn_net_backward), so
 * that every rank takes the same step from the same weights. --sync-batchnorm is core/train/dist_bn.c, the evaluation
 * across ranks core/dist_eval.c.
 *
 * Rules:
 *   - every MPI call's return code is checked (the communicators return errors instead of aborting) and becomes a
 *     cnn_status with MPI's message; nothing here exits or aborts, except cnn_dist_abort, which a program calls;
 *   - no collective waits without a bound: each one is nonblocking and polled against cfg.timeout. To say which
 *     rank is late, every rank announces each collective it enters to every other rank on a communicator of its
 *     own (a heartbeat of one integer), and repeats it every HEARTBEAT_PERIOD while it waits; at a timeout, the
 *     ranks whose announcement of that collective has not arrived are named, and those that arrived but have
 *     not been heard from since (stopped or died inside the collective);
 *   - sums are either MPI's (MPI_Iallreduce, whose order the library picks) or, with cfg.deterministic and for
 *     every metric, gathered and added in rank order, which is the same on every rank and in every run.
 *
 * With CUDA and NCCL, gradients are all-reduced on the GPU on the compute stream instead (cuda/nccl.c). */
#define _POSIX_C_SOURCE 200809L

#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/error.h"
#include "core/train/dist.h"

#if CNN_HAVE_MPI
#include <mpi.h>
#endif
#if CNN_HAVE_NCCL
#include "cuda/nccl.h"
#endif

/* PyTorch DDP's default bucket_cap_mb */
#define DEFAULT_BUCKET_BYTES ((size_t)25 << 20)
/* NCCL's and PyTorch's default collective timeouts are 30 minutes; training steps are far shorter */
#define DEFAULT_TIMEOUT 300.0
/* MPI counts are ints: larger tensors go in chunks of this many elements */
#define MPI_CHUNK ((int64_t)1 << 30)
/* a wait polls this many times without sleeping, then sleeps this long between polls */
#define POLL_SPINS 64
#define POLL_SLEEP_NS 50000L
/* a waiting rank repeats its heartbeat this often (seconds); a rank not heard from for HEARTBEAT_SILENT periods
 * while the others wait has stopped answering */
#define HEARTBEAT_PERIOD 0.5
#define HEARTBEAT_SILENT 4
/* gradient buckets in flight at once (each holds up to bucket_bytes) */
#define MAX_SLOTS 4
/* heartbeats are tagged so that they never match anything else on their communicator */
#define HEARTBEAT_TAG 7301

void cnn_dist_config_defaults(cnn_dist_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->timeout = DEFAULT_TIMEOUT;
    cfg->bucket_bytes = DEFAULT_BUCKET_BYTES;
}

int cnn_dist_available(void)
{
#if CNN_HAVE_MPI
    return 1;
#else
    return 0;
#endif
}

int cnn_dist_launched(void)
{
    /* OpenMPI's mpirun, PMIx (OpenMPI 5, srun --mpi=pmix), PMI-1/2 (MPICH's hydra, srun --mpi=pmi2) */
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", NULL};
    for (int i = 0; vars[i]; i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

struct cnn_dist {
    cnn_dist_config cfg;
    int rank, size, local_rank, local_size; /* local: among the ranks of this machine */
#if CNN_HAVE_MPI
    int owns_mpi;         /* this context called MPI_Init, and finalizes MPI */
    MPI_Comm comm;        /* the collectives */
    MPI_Comm hb;          /* the heartbeats */
    int64_t round;        /* collectives entered */
    int64_t *hb_out;      /* per rank: the value of the announcement sent to it (MPI owns it until sent) */
    int64_t *hb_in;       /* per rank: the announcement being received */
    int64_t *hb_seen;     /* per rank: the newest collective it announced */
    double *hb_heard;     /* per rank: when a heartbeat of it last arrived (CLOCK_MONOTONIC seconds) */
    MPI_Request *hb_send, *hb_recv;
    float *buf[MAX_SLOTS];    /* the buckets in flight, bucket b in slot b % nslots */
    float *gather[MAX_SLOTS]; /* deterministic: size x bucket, what every rank sent */
    MPI_Request req[MAX_SLOTS];
    size_t cap;           /* floats each buf holds */
    int nslots;           /* buckets in flight at most: MAX_SLOTS, 2 with --deterministic (its gathers hold size x) */
    /* the reduction of the current step, from cnn_dist_grads_begin to cnn_dist_grads_end */
    cnn_optimizer *opt;
    float scale;          /* this rank's share of the step's images */
    int update;           /* some rank had images */
    int nccl_step;        /* the CUDA backend: NCCL reduces after backward */
    int nb, nb_cap;       /* buckets, and the room for them */
    struct bucket *bk;    /* in the order they start (the last parameters first) */
    int *bk_ready;        /* per bucket: the lowest layer holding one of its parameters; final after its backward */
    int next_start, next_finish;
    int lowest;           /* the lowest layer with parameters: after its backward, backward's work is done */
    int64_t started_early, started_all; /* buckets started while backward still had layers with weights to do,
                                         * and in all (cnn_dist_overlap_counts) */
#endif
#if CNN_HAVE_NCCL
    cnn_nccl *nccl;       /* created at the first reduction on a CUDA backend */
#endif
};

int cnn_dist_rank(const cnn_dist *d) { return d ? d->rank : 0; }
int cnn_dist_size(const cnn_dist *d) { return d ? d->size : 1; }
int cnn_dist_local_rank(const cnn_dist *d) { return d ? d->local_rank : 0; }
int cnn_dist_sync_batchnorm(const cnn_dist *d) { return d && d->size > 1 && d->cfg.sync_batchnorm; }

int cnn_dist_loader_workers(const cnn_dist *d)
{
    if (!d || d->size < 2 || d->local_size < 2) return 0;
    int w = cnn_loader_default_workers() / d->local_size;
    return w < 1 ? 1 : w;
}

void cnn_dist_shard_range(const cnn_dist *d, int64_t n, int64_t *first, int64_t *count)
{
    int r = cnn_dist_rank(d), size = cnn_dist_size(d);
    *first = n * r / size;
    *count = n * (r + 1) / size - *first;
}

const cnn_train_config *cnn_dist_train_config(const cnn_train_config *cfg, cnn_train_config *local)
{
    if (cnn_dist_rank(cfg->dist) == 0) return cfg;
    *local = *cfg;
    local->progress = NULL;
    local->save_best = NULL;
    local->csv_log = NULL;
    local->tensorboard_dir = NULL;
    local->plot = NULL;
    local->checkpoint_dir = NULL;
    return local;
}

void cnn_dist_fingerprint_line(const cnn_dist *d, char *line, size_t cap)
{
    if (cnn_dist_size(d) > 1) snprintf(line, cap, "ranks=%d\n", cnn_dist_size(d));
    else if (cap) line[0] = '\0';
}

/* The N of a fingerprint's "ranks=N" line (a checkpoint's text: any bytes); 1 without one, -1 for a value that is
 * not a count. */
static int fingerprint_ranks(const char *text)
{
    const char *p = strstr(text, "\nranks=");
    if (p) p += 7;
    else if (!strncmp(text, "ranks=", 6)) p = text + 6;
    else return 1;
    char *end;
    long v = strtol(p, &end, 10);
    return end != p && v >= 1 && v <= INT_MAX ? (int)v : -1;
}

cnn_status cnn_dist_check_resume(const char *path, const char *stored, const char *now)
{
    int was = fingerprint_ranks(stored), is = fingerprint_ranks(now);
    if (was == is) return CNN_OK;
    return cnn_error(CNN_ERR_INVALID_ARG, "%s was written by a run of %d rank%s, this run has %d: resume with the same "
                                          "number of ranks (mpirun -np %d): the global batch (ranks x --batch), the "
                                          "shards and the data position follow from it (--init-from starts a new run "
                                          "from its weights with any number)",
                     path, was, was == 1 ? "" : "s", is, was);
}

#if !CNN_HAVE_MPI

cnn_status cnn_dist_init(const cnn_dist_config *cfg, cnn_dist **out)
{
    (void)cfg;
    *out = NULL;
    return cnn_error(CNN_ERR_UNSUPPORTED, "this build has no MPI (CMake option CNN_MPI; apt-get install "
                                          "libopenmpi-dev openmpi-bin): it trains in one process only");
}
cnn_status cnn_dist_sum(cnn_dist *d, double *v, int n, const char *what)
{
    (void)d, (void)v, (void)n, (void)what;
    return CNN_OK;
}
cnn_status cnn_dist_barrier(cnn_dist *d, const char *what)
{
    (void)d, (void)what;
    return CNN_OK;
}
void cnn_dist_abort(cnn_dist *d, int code) { (void)d, (void)code; }
void cnn_dist_finalize(cnn_dist *d) { free(d); }
cnn_status cnn_dist_broadcast_net(cnn_dist *d, cnn_net *net, int state_only)
{
    (void)d, (void)net, (void)state_only;
    return CNN_OK;
}
cnn_status cnn_dist_reduce_grads(cnn_dist *d, cnn_optimizer *opt, int n_local, int *update)
{
    (void)d, (void)opt;
    *update = n_local > 0;
    return CNN_OK;
}
cnn_status cnn_dist_grads_begin(cnn_dist *d, cnn_net *net, cnn_optimizer *opt, int n_local)
{
    (void)d, (void)net, (void)opt, (void)n_local;
    return CNN_OK;
}
cnn_status cnn_dist_grads_end(cnn_dist *d, cnn_net *net, int n_local, int *update)
{
    (void)d, (void)net;
    *update = n_local > 0;
    return CNN_OK;
}
void cnn_dist_overlap_counts(const cnn_dist *d, int64_t *early, int64_t *all)
{
    (void)d;
    *early = *all = 0;
}

#else

// ---------------------------------------------------------------------------------------------------------------
// errors, time and the heartbeat

static cnn_status mpi_fail(int rc, const char *what)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error %d", rc);
    return cnn_error(CNN_ERR_BACKEND, "MPI: %s: %s", what, text);
}

#define MPI_TRY(call, what)                                  \
    do {                                                     \
        int rc_ = (call);                                    \
        if (rc_ != MPI_SUCCESS) {                            \
            st = mpi_fail(rc_, what);                        \
            goto fail;                                       \
        }                                                    \
    } while (0)

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Takes in the announcements that have arrived (each peer has one receive posted at a time). */
static cnn_status drain_heartbeats(cnn_dist *d)
{
    cnn_status st = CNN_OK;
    for (int p = 0; p < d->size; p++) {
        if (p == d->rank) continue;
        for (int k = 0; k < 64; k++) { /* bounded: at most one announcement per collective is in flight */
            int done = 0;
            MPI_TRY(MPI_Test(&d->hb_recv[p], &done, MPI_STATUS_IGNORE), "heartbeat receive");
            if (!done) break;
            if (d->hb_in[p] > d->hb_seen[p]) d->hb_seen[p] = d->hb_in[p];
            d->hb_heard[p] = now_seconds();
            MPI_TRY(MPI_Irecv(&d->hb_in[p], 1, MPI_INT64_T, p, HEARTBEAT_TAG, d->hb, &d->hb_recv[p]),
                    "heartbeat receive");
        }
    }
fail:
    return st;
}

/* Tells every peer that this rank is in collective number `round`. A send still under way (a peer that stopped
 * reading) is not doubled: its newer value goes once the older one is out. */
static cnn_status send_heartbeats(cnn_dist *d)
{
    cnn_status st = CNN_OK;
    for (int p = 0; p < d->size; p++) {
        if (p == d->rank) continue;
        int done = 1;
        if (d->hb_send[p] != MPI_REQUEST_NULL)
            MPI_TRY(MPI_Test(&d->hb_send[p], &done, MPI_STATUS_IGNORE), "heartbeat send");
        if (!done) continue;
        d->hb_out[p] = d->round;
        MPI_TRY(MPI_Isend(&d->hb_out[p], 1, MPI_INT64_T, p, HEARTBEAT_TAG, d->hb, &d->hb_send[p]), "heartbeat send");
    }
    st = drain_heartbeats(d);
fail:
    return st;
}

/* Enters collective number ++round, telling every peer. */
static cnn_status announce(cnn_dist *d)
{
    d->round++;
    return send_heartbeats(d);
}

/* The ranks that have not announced the current collective (silent = 0), or that did but have not been heard from
 * for HEARTBEAT_SILENT periods (silent = 1), as "1, 5" in late (cap > 16); returns how many. */
static int late_ranks(const cnn_dist *d, int silent, char *late, size_t cap)
{
    size_t len = 0;
    int nlate = 0;
    const double stale = now_seconds() - HEARTBEAT_SILENT * HEARTBEAT_PERIOD;
    late[0] = '\0';
    for (int p = 0; p < d->size && len < cap - 16; p++) {
        if (p == d->rank) continue;
        int arrived = d->hb_seen[p] >= d->round;
        if (silent ? !(arrived && d->hb_heard[p] < stale) : arrived) continue;
        len += (size_t)snprintf(late + len, cap - len, "%s%d", nlate ? ", " : "", p);
        nlate++;
    }
    return nlate;
}

/* Completes *req, polling it against the timeout; at the timeout, names the ranks that have not announced the
 * current collective (dead or hanging). */
static cnn_status wait_request(cnn_dist *d, MPI_Request *req, const char *what)
{
    cnn_status st = CNN_OK;
    const double start = now_seconds(), deadline = start + d->cfg.timeout;
    double next_drain = start, next_beat = start + HEARTBEAT_PERIOD;
    for (long spins = 0;; spins++) {
        int done = 0;
        MPI_TRY(MPI_Test(req, &done, MPI_STATUS_IGNORE), what);
        if (done) return CNN_OK;
        double t = now_seconds();
        if (t >= next_drain) {
            CNN_TRY(drain_heartbeats(d));
            next_drain = t + 0.01;
        }
        if (t >= next_beat) { /* still here: a peer that waits too hears it */
            CNN_TRY(send_heartbeats(d));
            next_beat = t + HEARTBEAT_PERIOD;
        }
        if (t >= deadline) break;
        /* poll hot for the first tries (a collective among ranks that arrive together takes microseconds), then
         * sleep 50 us between tries: a rank waiting for a slower peer leaves the cores to it (on a machine with
         * more ranks and threads than cores, spinning ranks slowed the others) */
        if (spins > POLL_SPINS) nanosleep(&(struct timespec){0, POLL_SLEEP_NS}, NULL);
    }
    char late[256], silent[256];
    int nlate = late_ranks(d, 0, late, sizeof late), nsilent = late_ranks(d, 1, silent, sizeof silent);
    if (nlate)
        return cnn_error(CNN_ERR_BACKEND, "rank %d: %s did not complete within the collective timeout (%g s): rank%s %s "
                                          "did not arrive (died or hangs); the run stops",
                         d->rank, what, d->cfg.timeout, nlate == 1 ? "" : "s", late);
    if (nsilent)
        return cnn_error(CNN_ERR_BACKEND, "rank %d: %s did not complete within the collective timeout (%g s): rank%s %s "
                                          "stopped answering inside it (died or hangs); the run stops",
                         d->rank, what, d->cfg.timeout, nsilent == 1 ? "" : "s", silent);
    return cnn_error(CNN_ERR_BACKEND, "rank %d: %s did not complete within the collective timeout (%g s), though every "
                                      "rank arrived (the MPI transport stalled); the run stops",
                     d->rank, what, d->cfg.timeout);
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// life cycle

cnn_status cnn_dist_init(const cnn_dist_config *cfg, cnn_dist **out)
{
    cnn_status st = CNN_OK;
    *out = NULL;
    if (cfg && !(cfg->timeout > 0.0 && cfg->timeout <= 1e7))
        return cnn_error(CNN_ERR_INVALID_ARG, "the collective timeout must be in (0, 1e7] seconds, got %g", cfg->timeout);
    cnn_dist *d = calloc(1, sizeof *d);
    if (!d) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    if (cfg) d->cfg = *cfg;
    else cnn_dist_config_defaults(&d->cfg);
    if (d->cfg.bucket_bytes < sizeof(float)) d->cfg.bucket_bytes = DEFAULT_BUCKET_BYTES;
    d->comm = d->hb = MPI_COMM_NULL;
    d->nslots = d->cfg.deterministic ? 2 : MAX_SLOTS;
    for (int i = 0; i < MAX_SLOTS; i++) d->req[i] = MPI_REQUEST_NULL;
    int inited = 0, provided = 0;
    MPI_TRY(MPI_Initialized(&inited), "MPI_Initialized");
    /* the trainer calls MPI from one thread at a time (the loader's workers never do) */
    if (!inited) {
        MPI_TRY(MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
        d->owns_mpi = 1;
    }
    MPI_TRY(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    MPI_TRY(MPI_Comm_dup(MPI_COMM_WORLD, &d->comm), "MPI_Comm_dup");
    MPI_TRY(MPI_Comm_dup(MPI_COMM_WORLD, &d->hb), "MPI_Comm_dup");
    MPI_TRY(MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    MPI_TRY(MPI_Comm_set_errhandler(d->hb, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    MPI_TRY(MPI_Comm_rank(d->comm, &d->rank), "MPI_Comm_rank");
    MPI_TRY(MPI_Comm_size(d->comm, &d->size), "MPI_Comm_size");
    MPI_Comm local = MPI_COMM_NULL;
    MPI_TRY(MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &local), "MPI_Comm_split_type");
    int lr = 0, ls = 1;
    int rc = MPI_Comm_rank(local, &lr);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(local, &ls);
    MPI_Comm_free(&local);
    if (rc != MPI_SUCCESS) {
        st = mpi_fail(rc, "MPI_Comm_rank (node-local)");
        goto fail;
    }
    d->local_rank = lr;
    d->local_size = ls;
    d->hb_out = calloc((size_t)d->size, sizeof *d->hb_out);
    d->hb_in = calloc((size_t)d->size, sizeof *d->hb_in);
    d->hb_seen = calloc((size_t)d->size, sizeof *d->hb_seen);
    d->hb_heard = calloc((size_t)d->size, sizeof *d->hb_heard);
    d->hb_send = malloc((size_t)d->size * sizeof *d->hb_send);
    d->hb_recv = malloc((size_t)d->size * sizeof *d->hb_recv);
    if (!d->hb_out || !d->hb_in || !d->hb_seen || !d->hb_heard || !d->hb_send || !d->hb_recv) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %d ranks", d->size);
        goto fail;
    }
    for (int p = 0; p < d->size; p++) {
        d->hb_send[p] = d->hb_recv[p] = MPI_REQUEST_NULL;
        d->hb_heard[p] = now_seconds();
    }
    for (int p = 0; p < d->size; p++)
        if (p != d->rank)
            MPI_TRY(MPI_Irecv(&d->hb_in[p], 1, MPI_INT64_T, p, HEARTBEAT_TAG, d->hb, &d->hb_recv[p]),
                    "heartbeat receive");
    *out = d;
    return CNN_OK;
fail:
    cnn_dist_finalize(d);
    return st;
}

void cnn_dist_abort(cnn_dist *d, int code)
{
    if (d && d->size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

void cnn_dist_finalize(cnn_dist *d)
{
    if (!d) return;
    int fin = 0;
    MPI_Finalized(&fin);
#if CNN_HAVE_NCCL
    cnn_nccl_destroy(d->nccl);
#endif
    if (!fin) {
        /* the posted heartbeat receives are cancelled; the sends have completed or go with the communicator */
        if (d->hb_recv)
            for (int p = 0; p < d->size; p++)
                if (d->hb_recv[p] != MPI_REQUEST_NULL) {
                    MPI_Cancel(&d->hb_recv[p]);
                    MPI_Request_free(&d->hb_recv[p]);
                }
        if (d->hb_send)
            for (int p = 0; p < d->size; p++)
                if (d->hb_send[p] != MPI_REQUEST_NULL) MPI_Request_free(&d->hb_send[p]);
        if (d->hb != MPI_COMM_NULL) MPI_Comm_free(&d->hb);
        if (d->comm != MPI_COMM_NULL) MPI_Comm_free(&d->comm);
        if (d->owns_mpi) MPI_Finalize();
    }
    free(d->hb_out);
    free(d->hb_in);
    free(d->hb_seen);
    free(d->hb_heard);
    free(d->hb_send);
    free(d->hb_recv);
    for (int i = 0; i < MAX_SLOTS; i++) {
        free(d->buf[i]);
        free(d->gather[i]);
    }
    free(d->bk);
    free(d->bk_ready);
    free(d);
}

// ---------------------------------------------------------------------------------------------------------------
// small collectives

cnn_status cnn_dist_sum(cnn_dist *d, double *v, int n, const char *what)
{
    if (!d || d->size < 2 || n < 1) return CNN_OK;
    cnn_status st = CNN_OK;
    MPI_Request req = MPI_REQUEST_NULL;
    double *all = malloc((size_t)n * (size_t)d->size * sizeof *all);
    if (!all) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory");
    CNN_TRY(announce(d));
    MPI_TRY(MPI_Iallgather(v, n, MPI_DOUBLE, all, n, MPI_DOUBLE, d->comm, &req), what);
    CNN_TRY(wait_request(d, &req, what));
    for (int i = 0; i < n; i++) { /* in rank order: the same sum on every rank */
        double s = 0.0;
        for (int r = 0; r < d->size; r++) s += all[(size_t)r * n + i];
        v[i] = s;
    }
fail:
    free(all);
    return st;
}

cnn_status cnn_dist_barrier(cnn_dist *d, const char *what)
{
    if (!d || d->size < 2) return CNN_OK;
    cnn_status st = CNN_OK;
    MPI_Request req = MPI_REQUEST_NULL;
    CNN_TRY(announce(d));
    MPI_TRY(MPI_Ibarrier(d->comm, &req), what);
    CNN_TRY(wait_request(d, &req, what));
fail:
    return st;
}

static cnn_status grow_buffers(cnn_dist *d, size_t floats)
{
    if (floats <= d->cap) return CNN_OK;
    for (int i = 0; i < d->nslots; i++) {
        free(d->buf[i]);
        free(d->gather[i]);
        d->buf[i] = malloc(floats * sizeof(float));
        d->gather[i] = d->cfg.deterministic ? malloc(floats * (size_t)d->size * sizeof(float)) : NULL;
        if (!d->buf[i] || (d->cfg.deterministic && !d->gather[i])) {
            d->cap = 0;
            return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for gradient buckets of %zu floats", floats);
        }
    }
    d->cap = floats;
    return CNN_OK;
}

/* Broadcasts a tensor's contents from rank 0 (through host memory, in chunks MPI's int counts can take). */
static cnn_status broadcast_tensor(cnn_dist *d, cnn_tensor *t, const char *name)
{
    cnn_status st = CNN_OK;
    if (t->dtype != CNN_F32)
        return cnn_error(CNN_ERR_UNSUPPORTED, "broadcast of %s: only f32 tensors are broadcast (it is %s)", name,
                         cnn_dtype_name(t->dtype));
    int64_t n = cnn_tensor_numel(t);
    st = grow_buffers(d, (size_t)(n < MPI_CHUNK ? n : MPI_CHUNK));
    if (st != CNN_OK) return st;
    float *host = n <= (int64_t)d->cap ? d->buf[0] : malloc((size_t)n * sizeof *host);
    if (!host) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %s", name);
    if (d->rank == 0) CNN_TRY(cnn_tensor_read(t, host, (size_t)n * sizeof *host));
    for (int64_t at = 0; at < n; at += MPI_CHUNK) {
        int count = (int)(n - at < MPI_CHUNK ? n - at : MPI_CHUNK);
        MPI_Request req = MPI_REQUEST_NULL;
        MPI_TRY(MPI_Ibcast(host + at, count, MPI_FLOAT, 0, d->comm, &req), "weight broadcast");
        CNN_TRY(wait_request(d, &req, "the broadcast of the weights from rank 0"));
    }
    if (d->rank != 0) CNN_TRY(cnn_tensor_write(t, host, (size_t)n * sizeof *host));
fail:
    if (host != d->buf[0]) free(host);
    return st;
}

cnn_status cnn_dist_broadcast_net(cnn_dist *d, cnn_net *net, int state_only)
{
    if (!d || d->size < 2) return CNN_OK;
    cnn_status st = CNN_OK;
    CNN_TRY(announce(d));
    for (int i = 0; i < net->nlayers; i++) {
        cnn_layer *l = net->layers[i];
        for (int k = 0; !state_only && k < l->nparams; k++)
            if (l->params[k].value) CNN_TRY(broadcast_tensor(d, l->params[k].value, l->params[k].name));
        for (int k = 0; k < l->nstate; k++)
            if (l->state[k].value) CNN_TRY(broadcast_tensor(d, l->state[k].value, l->state[k].name));
    }
fail:
    return st;
}

// ---------------------------------------------------------------------------------------------------------------
// gradients

/* Parameters [first, last) of opt (in reverse order: the last layers' gradients, which backward finishes first,
 * go first) make one bucket. */
typedef struct bucket {
    int first, last;
    size_t floats;
} bucket;

/* The next bucket from parameter index `from` down (opt->params[from - 1], ...). */
static bucket next_bucket(const cnn_optimizer *opt, int from, size_t cap)
{
    bucket b = {from, from, 0};
    while (b.first > 0) {
        size_t n = (size_t)cnn_tensor_numel(opt->params[b.first - 1]->grad);
        if (b.floats && b.floats + n > cap) break;
        b.floats += n;
        b.first--;
    }
    return b;
}

static cnn_status pack(const cnn_optimizer *opt, const bucket *b, float scale, float *buf)
{
    cnn_status st = CNN_OK;
    size_t at = 0;
    for (int i = b->last - 1; i >= b->first; i--) {
        cnn_tensor *g = opt->params[i]->grad;
        size_t n = (size_t)cnn_tensor_numel(g);
        if (g->dtype != CNN_F32)
            return cnn_error(CNN_ERR_UNSUPPORTED, "the MPI gradient reduction takes f32 gradients; %s's are %s (16-bit "
                             "gradients are reduced by NCCL on the CUDA backend)", opt->params[i]->name,
                             cnn_dtype_name(g->dtype));
        if (scale == 0.0f) {
            memset(buf + at, 0, n * sizeof *buf); /* no image here: zeros, whatever the stale gradient holds */
        } else {
            CNN_TRY(cnn_tensor_read(g, buf + at, n * sizeof *buf));
            if (scale != 1.0f)
                for (size_t j = 0; j < n; j++) buf[at + j] *= scale;
        }
        at += n;
    }
fail:
    return st;
}

static cnn_status unpack(const cnn_optimizer *opt, const bucket *b, const float *buf)
{
    cnn_status st = CNN_OK;
    size_t at = 0;
    for (int i = b->last - 1; i >= b->first; i--) {
        cnn_tensor *g = opt->params[i]->grad;
        size_t n = (size_t)cnn_tensor_numel(g);
        CNN_TRY(cnn_tensor_write(g, buf + at, n * sizeof *buf));
        at += n;
    }
fail:
    return st;
}

static cnn_status start_bucket(cnn_dist *d, int slot, size_t floats, MPI_Request *req)
{
    cnn_status st = CNN_OK;
    if (floats > (size_t)MPI_CHUNK)
        return cnn_error(CNN_ERR_UNSUPPORTED, "a gradient of %zu floats is larger than one MPI message", floats);
    if (d->cfg.deterministic)
        MPI_TRY(MPI_Iallgather(d->buf[slot], (int)floats, MPI_FLOAT, d->gather[slot], (int)floats, MPI_FLOAT, d->comm,
                               req), "gradient gather");
    else
        MPI_TRY(MPI_Iallreduce(MPI_IN_PLACE, d->buf[slot], (int)floats, MPI_FLOAT, MPI_SUM, d->comm, req),
                "gradient all-reduce");
fail:
    return st;
}

static cnn_status finish_bucket(cnn_dist *d, int slot, size_t floats, MPI_Request *req)
{
    cnn_status st = wait_request(d, req, d->cfg.deterministic ? "the gradient gather" : "the gradient all-reduce");
    if (st != CNN_OK || !d->cfg.deterministic) return st;
    float *out = d->buf[slot];
    const float *all = d->gather[slot];
    for (size_t j = 0; j < floats; j++) { /* rank order, on every rank */
        float s = all[j];
        for (int r = 1; r < d->size; r++) s += all[(size_t)r * floats + j];
        out[j] = s;
    }
    return CNN_OK;
}

/* Waits for bucket next_finish and writes its sums back into the gradients. */
static cnn_status finish_next(cnn_dist *d)
{
    cnn_status st = CNN_OK;
    const int b = d->next_finish, slot = b % d->nslots;
    CNN_TRY(finish_bucket(d, slot, d->bk[b].floats, &d->req[slot]));
    CNN_TRY(unpack(d->opt, &d->bk[b], d->buf[slot]));
    d->next_finish++;
fail:
    return st;
}

/* Packs bucket next_start into its slot and starts its reduction; when the slot still holds an older bucket in
 * flight, that one is finished first. */
static cnn_status start_next(cnn_dist *d)
{
    cnn_status st = CNN_OK;
    const int b = d->next_start, slot = b % d->nslots;
    if (b - d->next_finish >= d->nslots) CNN_TRY(finish_next(d));
    CNN_TRY(pack(d->opt, &d->bk[b], d->scale, d->buf[slot]));
    CNN_TRY(start_bucket(d, slot, d->bk[b].floats, &d->req[slot]));
    d->next_start++;
    d->started_all++;
fail:
    return st;
}

/* The backward hook (cnn_net.grads_ready): layer `layer` and every one after it are done, so the buckets whose
 * parameters all lie there are final and start now, in their fixed order; the ones in flight are tested, which
 * is what moves a nonblocking collective along in an MPI library without a progress thread. */
static cnn_status grads_ready(void *user, int layer)
{
    cnn_dist *d = user;
    cnn_status st = CNN_OK;
    while (d->next_start < d->nb && d->bk_ready[d->next_start] >= layer) {
        CNN_TRY(start_next(d));
        if (layer > d->lowest) d->started_early++;
    }
    for (int b = d->next_finish; b < d->next_start; b++) {
        int done = 0;
        MPI_TRY(MPI_Test(&d->req[b % d->nslots], &done, MPI_STATUS_IGNORE), "gradient reduction");
    }
fail:
    return st;
}

/* The buckets of opt's parameters (from the last one down, about bucket_bytes each, as before), and for each the
 * lowest layer of net holding one of its parameters (-1, never early, without net). */
static cnn_status plan_buckets(cnn_dist *d, const cnn_net *net, const cnn_optimizer *opt)
{
    size_t cap = d->cfg.bucket_bytes / sizeof(float), largest = 0, all = 0;
    for (int i = 0; i < opt->nparams; i++) {
        size_t n = (size_t)cnn_tensor_numel(opt->params[i]->grad);
        if (n > largest) largest = n;
        all += n;
    }
    size_t want = all < cap ? all : cap; /* a small model needs no 25 MiB buffers */
    cnn_status st = grow_buffers(d, largest > want ? largest : want);
    if (st != CNN_OK) return st;
    d->nb = 0;
    d->lowest = -1;
    for (int from = opt->nparams; from > 0; from = d->bk[d->nb - 1].first) {
        if (d->nb == d->nb_cap) {
            int grow = d->nb_cap ? 2 * d->nb_cap : 16;
            bucket *bk = realloc(d->bk, (size_t)grow * sizeof *bk);
            if (bk) d->bk = bk;
            int *ready = realloc(d->bk_ready, (size_t)grow * sizeof *ready);
            if (ready) d->bk_ready = ready;
            if (!bk || !ready) return cnn_error(CNN_ERR_NO_MEMORY, "out of memory for %d gradient buckets", grow);
            d->nb_cap = grow;
        }
        d->bk[d->nb] = next_bucket(opt, from, cap);
        int lowest = -1;
        for (int p = d->bk[d->nb].first; net && p < d->bk[d->nb].last; p++) {
            int owner = -1;
            for (int i = 0; i < net->nlayers && owner < 0; i++)
                for (int k = 0; k < net->layers[i]->nparams; k++)
                    if (&net->layers[i]->params[k] == opt->params[p]) owner = i;
            if (owner < 0) { /* not a layer's parameter: the bucket waits for the end of backward */
                lowest = -1;
                break;
            }
            if (lowest < 0 || owner < lowest) lowest = owner;
        }
        d->bk_ready[d->nb] = lowest;
        if (lowest >= 0 && (d->lowest < 0 || lowest < d->lowest)) d->lowest = lowest;
        d->nb++;
    }
    return CNN_OK;
}

/* Penalties (l1, l2) are added to gradients after the whole backward (cnn_net_backward): a net with any keeps its
 * buckets for the end, so that what is summed is what was summed before. */
static int has_penalties(const cnn_net *net)
{
    for (int i = 0; i < net->nlayers; i++) {
        const cnn_layer *l = net->layers[i];
        if (l->nparams && !l->frozen && (l->l1 != 0.0f || l->l2 != 0.0f)) return 1;
    }
    return 0;
}

cnn_status cnn_dist_grads_begin(cnn_dist *d, cnn_net *net, cnn_optimizer *opt, int n_local)
{
    if (!d || d->size < 2) return CNN_OK;
    cnn_status st = CNN_OK;
    d->opt = opt;
    d->nb = d->next_start = d->next_finish = 0;
    d->nccl_step = 0;
    /* the images of the step on every rank: the weights of the average, and whether there is a step at all */
    double total = (double)n_local;
    CNN_TRY(cnn_dist_sum(d, &total, 1, "the image count of the step"));
    d->update = total > 0.0;
    if (!d->update || opt->nparams == 0) return CNN_OK;
    d->scale = (float)((double)n_local / total);
#if CNN_HAVE_NCCL
    if (cnn_nccl_backend_is_cuda(opt->backend)) {
        d->nccl_step = 1;
        return CNN_OK;
    }
#endif
    CNN_TRY(plan_buckets(d, net, opt));
    CNN_TRY(announce(d));
    if (net && n_local > 0 && !has_penalties(net)) {
        net->grads_ready = grads_ready;
        net->grads_ready_user = d;
    }
fail:
    return st;
}

#if CNN_HAVE_NCCL
static cnn_status nccl_reduce(cnn_dist *d, cnn_optimizer *opt)
{
    cnn_status st = CNN_OK;
    if (!d->nccl) {
        /* rank 0 makes the communicator's id; MPI carries it to the others */
        unsigned char id[CNN_NCCL_ID_BYTES];
        if (d->rank == 0) CNN_TRY(cnn_nccl_unique_id(id));
        MPI_Request r = MPI_REQUEST_NULL;
        MPI_TRY(MPI_Ibcast(id, CNN_NCCL_ID_BYTES, MPI_BYTE, 0, d->comm, &r), "NCCL id broadcast");
        CNN_TRY(wait_request(d, &r, "the broadcast of the NCCL id"));
        CNN_TRY(cnn_nccl_create(opt->backend, id, d->size, d->rank, d->cfg.deterministic, d->cfg.timeout, &d->nccl));
    }
    CNN_TRY(announce(d));
    st = cnn_nccl_allreduce_grads(d->nccl, opt, d->scale, d->cfg.bucket_bytes, d->cfg.timeout);
    if (st != CNN_OK) { /* the heartbeats say who did not come */
        char late[256];
        if (drain_heartbeats(d) == CNN_OK && (late_ranks(d, 0, late, sizeof late) || late_ranks(d, 1, late, sizeof late)))
            st = cnn_error_prefix(st, "rank %d: rank(s) %s did not arrive or stopped answering: ", d->rank, late);
    }
fail:
    return st;
}
#endif

cnn_status cnn_dist_grads_end(cnn_dist *d, cnn_net *net, int n_local, int *update)
{
    if (net) {
        net->grads_ready = NULL;
        net->grads_ready_user = NULL;
    }
    *update = n_local > 0;
    if (!d || d->size < 2) return CNN_OK;
    cnn_status st = CNN_OK;
    *update = d->update;
    if (!d->update || d->opt->nparams == 0) return CNN_OK;
#if CNN_HAVE_NCCL
    if (d->nccl_step) return nccl_reduce(d, d->opt);
#endif
    while (d->next_start < d->nb) CNN_TRY(start_next(d));
    while (d->next_finish < d->next_start) CNN_TRY(finish_next(d));
fail:
    return st;
}

cnn_status cnn_dist_reduce_grads(cnn_dist *d, cnn_optimizer *opt, int n_local, int *update)
{
    *update = n_local > 0;
    cnn_status st = cnn_dist_grads_begin(d, NULL, opt, n_local);
    return st != CNN_OK ? st : cnn_dist_grads_end(d, NULL, n_local, update);
}

void cnn_dist_overlap_counts(const cnn_dist *d, int64_t *early, int64_t *all)
{
    *early = d ? d->started_early : 0;
    *all = d ? d->started_all : 0;
}

#endif
