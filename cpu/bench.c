/* The host side of benchmarking: the CPU backend's thread count and the machine's sgemm rate, the yardstick
 * `cnn bench` measures achieved GFLOP/s against (include/cnn/bench.h). */
#define _POSIX_C_SOURCE 200809L
#include <omp.h>
#include <stdlib.h>
#include <time.h>

#include "cnn/bench.h"
#include "cpu/dnnl_util.h"

cnn_status cnn_set_num_threads(int n)
{
    if (n < 1) return cnn_error(CNN_ERR_INVALID_ARG, "thread count must be at least 1, got %d", n);
    omp_set_num_threads(n);
    return CNN_OK;
}

int cnn_num_threads(void) { return omp_get_max_threads(); }

static double cnn_cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

cnn_status cnn_bench_sgemm_peak(int n, int repeats, double *gflops)
{
    cnn_status st = CNN_OK;
    float *a = NULL, *b = NULL, *c = NULL;
    if (!gflops) return cnn_error(CNN_ERR_INVALID_ARG, "cnn_bench_sgemm_peak: gflops is NULL");
    *gflops = 0.0;
    /* 16384^2 floats is 1 GiB a matrix: far above what measuring a peak needs */
    if (n < 16 || n > 16384 || repeats < 1)
        return cnn_error(CNN_ERR_INVALID_ARG, "sgemm peak: size %d must be in [16, 16384] and repeats %d >= 1", n,
                         repeats);
    size_t count = (size_t)n * (size_t)n;
    a = malloc(count * sizeof *a);
    b = malloc(count * sizeof *b);
    c = malloc(count * sizeof *c);
    if (!a || !b || !c) {
        st = cnn_error(CNN_ERR_NO_MEMORY, "sgemm peak: out of host memory for three %dx%d matrices", n, n);
        goto fail;
    }
    /* small values without denormals; the result is not looked at */
    for (size_t i = 0; i < count; i++) {
        a[i] = (float)(i % 7) * 0.125f - 0.375f;
        b[i] = (float)(i % 5) * 0.25f - 0.5f;
        c[i] = 0.0f;
    }
    double best = 0.0, flop = 2.0 * (double)n * (double)n * (double)n;
    for (int r = 0; r <= repeats; r++) { /* r == 0: warm-up (oneDNN's kernel generation, page faults) */
        double t0 = cnn_cpu_now();
        CNN_CPU_DNNL("sgemm", dnnl_sgemm, 'N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = cnn_cpu_now() - t0;
        if (r > 0 && dt > 0.0 && flop / dt > best) best = flop / dt;
    }
    *gflops = best * 1e-9;
fail:
    free(a);
    free(b);
    free(c);
    return st;
}
