/* oneDNN's direct and Winograd F(4x4, 3x3) kernels side by side, per convolution shape and direction: the
 * measurements behind the CPU backend's rule for when a 3x3 convolution runs as Winograd (core/op_check.c,
 * cnn_conv2d_winograd_shape). oneDNN alone, on the thread count OMP_NUM_THREADS gives: the direct kernels on
 * NHWC activations as the backend runs them, Winograd on the blocked layout it needs (the backend's reorders to and
 * from it are not timed here; `cnn bench` times whole networks).
 *
 * Usage: cnn_conv_algo_bench [N H C O PAD ...]   (groups of five; without arguments, the shapes of ResNet-20 at
 *                                                 28x28 and 32x32, the seed CNN and ResNet-18 at 224x224)
 * Prints one line per shape and direction: the fastest of 10 timed calls (after 2 warm-up calls) of each. */
#define _POSIX_C_SOURCE 200809L
#include <dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct shape {
    int n, h, c, o, pad;
} shape;

static const shape defaults[] = {
    {32, 28, 16, 16, 1}, {32, 14, 32, 32, 1}, {32, 7, 64, 64, 1},      /* ResNet-20, 28x28, batch 32 */
    {64, 28, 16, 16, 1}, {64, 14, 32, 32, 1}, {64, 7, 64, 64, 1},      /* and batch 64 */
    {64, 32, 16, 16, 1}, {64, 16, 32, 32, 1}, {64, 8, 64, 64, 1},      /* ResNet-20, 32x32 (CIFAR), batch 64 */
    {64, 13, 32, 64, 0}, {64, 5, 64, 128, 0},                          /* the seed CNN's 2nd and 3rd, batch 64 */
    {32, 56, 64, 64, 1}, {32, 28, 128, 128, 1}, {32, 14, 256, 256, 1}, /* ResNet-18, 224x224, batch 32 */
    {32, 7, 512, 512, 1},  {64, 2, 64, 64, 1},                          /* and 2x2 outputs */
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

#define CHECK(call)                                                                                                    \
    do {                                                                                                               \
        dnnl_status_t s_ = (call);                                                                                     \
        if (s_ != dnnl_success) {                                                                                      \
            fprintf(stderr, "%s failed: %d\n", #call, (int)s_);                                                        \
            best = -1.0;                                                                                               \
            goto fail;                                                                                                 \
        }                                                                                                              \
    } while (0)

/* The fastest of 10 calls of direction dir (0 forward, 1 backward data, 2 backward weights) with algorithm alg, in
 * ms; 0 when oneDNN has no such kernel here, -1 on an error. */
static double time_conv(dnnl_engine_t eng, dnnl_stream_t str, const shape *k, dnnl_alg_kind_t alg, int dir)
{
    const int oh = k->h + 2 * k->pad - 2;
    dnnl_dims_t xd = {k->n, k->c, k->h, k->h}, yd = {k->n, k->o, oh, oh}, wd = {k->o, k->c, 3, 3};
    dnnl_dims_t strides = {1, 1}, pad = {k->pad, k->pad};
    const dnnl_format_tag_t act = alg == dnnl_convolution_winograd ? dnnl_format_tag_any : dnnl_nhwc;
    dnnl_memory_desc_t xm, ym, wm;
    dnnl_convolution_desc_t fd, d;
    dnnl_primitive_desc_t fpd = NULL, pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t mem[3] = {NULL, NULL, NULL};
    double best = -1.0;
    CHECK(dnnl_memory_desc_init_by_tag(&xm, 4, xd, dnnl_f32, act));
    CHECK(dnnl_memory_desc_init_by_tag(&ym, 4, yd, dnnl_f32, act));
    CHECK(dnnl_memory_desc_init_by_tag(&wm, 4, wd, dnnl_f32, dnnl_format_tag_any));
    CHECK(dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, alg, &xm, &wm, NULL, &ym, strides, pad, pad));
    if (dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL) != dnnl_success) return 0.0;
    if (dir == 0) {
        pd = fpd;
        fpd = NULL;
    } else {
        if (dir == 1)
            CHECK(dnnl_convolution_backward_data_desc_init(&d, alg, &xm, &wm, &ym, strides, pad, pad));
        else
            CHECK(dnnl_convolution_backward_weights_desc_init(&d, alg, &xm, &wm, NULL, &ym, strides, pad, pad));
        if (dnnl_primitive_desc_create(&pd, &d, NULL, eng, fpd) != dnnl_success) {
            best = 0.0;
            goto fail;
        }
    }
    static const dnnl_query_t q[3][3] = {
        {dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_dst_md},
        {dnnl_query_diff_src_md, dnnl_query_weights_md, dnnl_query_diff_dst_md},
        {dnnl_query_src_md, dnnl_query_diff_weights_md, dnnl_query_diff_dst_md}};
    static const int ids[3][3] = {{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
                                  {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST},
                                  {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST}};
    dnnl_exec_arg_t args[3];
    for (int i = 0; i < 3; i++) {
        const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, q[dir][i], 0);
        float *p = NULL;
        CHECK(dnnl_memory_create(&mem[i], md, eng, DNNL_MEMORY_ALLOCATE));
        CHECK(dnnl_memory_get_data_handle(mem[i], (void **)&p));
        for (size_t j = 0; j < dnnl_memory_desc_get_size(md) / sizeof(float); j++)
            p[j] = (float)((j * 7 + i) % 11) * 0.1f;
        args[i].arg = ids[dir][i];
        args[i].memory = mem[i];
    }
    CHECK(dnnl_primitive_create(&prim, pd));
    best = 1e30;
    for (int r = 0; r < 12; r++) {
        const double t0 = now();
        CHECK(dnnl_primitive_execute(prim, str, 3, args));
        CHECK(dnnl_stream_wait(str));
        const double t = now() - t0;
        if (r >= 2 && t < best) best = t;
    }
    best *= 1e3;
fail:
    for (int i = 0; i < 3; i++)
        if (mem[i]) dnnl_memory_destroy(mem[i]);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (fpd) dnnl_primitive_desc_destroy(fpd);
    return best;
}

int main(int argc, char **argv)
{
    dnnl_engine_t eng = NULL;
    dnnl_stream_t str = NULL;
    const shape *shapes = defaults;
    int count = (int)(sizeof defaults / sizeof defaults[0]);
    shape *given = NULL;
    if (argc > 1) {
        if ((argc - 1) % 5 != 0) {
            fprintf(stderr, "usage: %s [N H C O PAD ...] (groups of five positive sizes; PAD 0 or 1)\n", argv[0]);
            return 2;
        }
        count = (argc - 1) / 5;
        given = calloc((size_t)count, sizeof *given);
        if (!given) return 1;
        for (int i = 0; i < count; i++) {
            int v[5];
            for (int j = 0; j < 5; j++) {
                char *end = NULL;
                const long x = strtol(argv[1 + 5 * i + j], &end, 10);
                if (!end || *end || x < (j == 4 ? 0 : 1) || x > (j == 4 ? 1 : 4096)) {
                    fprintf(stderr, "%s: '%s' is not a size (N, H, C, O from 1 to 4096; PAD 0 or 1)\n", argv[0],
                            argv[1 + 5 * i + j]);
                    free(given);
                    return 2;
                }
                v[j] = (int)x;
            }
            given[i] = (shape){v[0], v[1], v[2], v[3], v[4]};
            if (given[i].h + 2 * given[i].pad < 3) {
                fprintf(stderr, "%s: a %dx%d image with padding %d is smaller than the 3x3 kernel\n", argv[0],
                        given[i].h, given[i].h, given[i].pad);
                free(given);
                return 2;
            }
        }
        shapes = given;
    }
    if (dnnl_engine_create(&eng, dnnl_cpu, 0) != dnnl_success ||
        dnnl_stream_create(&str, eng, dnnl_stream_default_flags) != dnnl_success) {
        fprintf(stderr, "cannot create a oneDNN CPU engine and stream\n");
        free(given);
        return 1;
    }
    static const char *dirs[3] = {"forward", "backward data", "backward weights"};
    printf("| N | H | C -> O | padding | direction | direct ms | Winograd ms | direct / Winograd |\n");
    printf("|---|---|---|---|---|---:|---:|---:|\n");
    int rc = 0;
    for (int i = 0; i < count; i++)
        for (int dir = 0; dir < 3; dir++) {
            const shape *k = &shapes[i];
            const double a = time_conv(eng, str, k, dnnl_convolution_direct, dir);
            const double b = time_conv(eng, str, k, dnnl_convolution_winograd, dir);
            if (a < 0 || b < 0) rc = 1;
            printf("| %d | %d | %d -> %d | %d | %s | %.3f | ", k->n, k->h, k->c, k->o, k->pad, dirs[dir], a);
            if (b > 0)
                printf("%.3f | %.2f |\n", b, a / b);
            else
                printf("none | |\n");
        }
    dnnl_stream_destroy(str);
    dnnl_engine_destroy(eng);
    free(given);
    return rc;
}
