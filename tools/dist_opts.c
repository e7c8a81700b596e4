/* cnn train's data-parallel side (tools/dist_opts.h). */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tools/dist_opts.h"

int cli_dist_start(const char *command, cli_dist_opts *o, cnn_train_config *cfg)
{
    if (!cnn_dist_launched()) {
        /* srun without an MPI plugin starts N independent copies, each of which would train alone and write the
         * same files */
        const char *tasks = getenv("SLURM_NTASKS");
        if (getenv("SLURM_STEP_ID") && tasks && atoi(tasks) > 1) {
            fprintf(stderr, "cnn %s: started by srun as one of %s tasks, but without MPI's process management: "
                            "launch with srun --mpi=pmix (or pmi2), or mpirun\n", command, tasks);
            return 2;
        }
        return 0;
    }
    if (!cnn_dist_available()) {
        const char *n = getenv("OMPI_COMM_WORLD_SIZE");
        if (!n) n = getenv("PMI_SIZE");
        if (n && atoi(n) > 1) {
            fprintf(stderr, "cnn %s: started as one of %s ranks, but this build has no MPI (CMake option CNN_MPI; "
                            "apt-get install libopenmpi-dev openmpi-bin): each would train alone\n", command, n);
            return 2;
        }
        return 0; /* a lone rank trains as one process */
    }
    cnn_dist_config dc;
    cnn_dist_config_defaults(&dc);
    dc.timeout = o->timeout;
    dc.deterministic = cfg->deterministic;
    dc.bucket_bytes = (size_t)((double)o->bucket_mb * 1048576.0);
    dc.sync_batchnorm = o->sync_bn;
    cnn_status st = cnn_dist_init(&dc, &o->dist);
    if (st != CNN_OK) return cli_fail(command, "MPI", st);
    if (cnn_dist_size(o->dist) < 2) { /* one rank: exactly the one-process run */
        cnn_dist_finalize(o->dist);
        o->dist = NULL;
        return 0;
    }
    cfg->dist = o->dist;
    int rank = cnn_dist_rank(o->dist);
    if (rank == 0) {
        fprintf(stderr, "cnn %s: data-parallel over %d ranks (MPI): global batch %d x %d = %lld, gradients averaged "
                        "in %g MB buckets%s,%s collective timeout %g s\n", command, cnn_dist_size(o->dist),
                cnn_dist_size(o->dist), cfg->batch_size, (long long)cnn_dist_size(o->dist) * cfg->batch_size,
                (double)o->bucket_mb, cfg->deterministic ? " summed in rank order (--deterministic)" : "",
                o->sync_bn ? " batchnorm statistics of all ranks (--sync-batchnorm)," : "", (double)o->timeout);
        return 0;
    }
    /* the other ranks say nothing (rank 0 speaks for the run) but their failures: stderr goes to /dev/null, and a
     * copy of the real one is kept for cli_dist_finish */
    int keep = dup(STDERR_FILENO);
    int null = open("/dev/null", O_WRONLY);
    if (keep >= 0) o->err = fdopen(keep, "w");
    if (null >= 0 && o->err) {
        fflush(stderr);
        dup2(null, STDERR_FILENO);
    }
    if (null >= 0) close(null);
    cfg->progress = NULL;
    return 0;
}

const char *cli_dist_device(const cli_dist_opts *o, const char *device, char **owned)
{
    *owned = NULL;
    if (!o->dist) return device;
    int want_cuda = device ? !strcmp(device, "cuda") : strstr(cnn_backends_available(), "cuda") != NULL;
    if (!device || !strcmp(device, "auto")) { /* the default: CUDA when a GPU is present */
        cnn_backend *probe = NULL;
        want_cuda = want_cuda && cnn_backend_create(NULL, &probe) == CNN_OK && !strcmp(cnn_backend_name(probe), "cuda");
        cnn_backend_destroy(probe);
    }
    if (!want_cuda) return device;
    char *name = malloc(32);
    if (!name) return device;
    snprintf(name, 32, "cuda:%d", cnn_dist_local_rank(o->dist));
    *owned = name;
    return name;
}

int cli_dist_writer(const cli_dist_opts *o) { return cnn_dist_rank(o->dist) == 0; }

int cli_dist_finish(const char *command, cli_dist_opts *o, int rc)
{
    if (!o->dist) return rc;
    if (rc != 0) {
        if (o->err) { /* rank 0 has said it already */
            fprintf(o->err, "cnn %s: rank %d of %d failed: %s\n", command, cnn_dist_rank(o->dist),
                    cnn_dist_size(o->dist), cnn_last_error());
            fflush(o->err);
        }
        cnn_dist_abort(o->dist, rc);
    }
    cnn_dist_finalize(o->dist);
    o->dist = NULL;
    if (o->err) fclose(o->err);
    o->err = NULL;
    return rc;
}
