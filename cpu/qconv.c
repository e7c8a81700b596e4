/* int8 convolution and dense layers on the CPU with oneDNN (its VNNI kernels on processors that have them), for
 * the quantized models cnn-lite runs (core/quant/layer_lite.c): oneDNN computes the int32 sums of (x - x_zp) * w, and
 * the rescaling to int8 is cnn-lite's own integer arithmetic (core/lite/lite_quant.h), in parallel here, so that
 * results are bit for bit those of its C kernels.
 *
 * oneDNN multiplies u8 activations by s8 weights into s32. An int8 code x becomes u = x + 128, and the zero point
 * z = x_zp + 128; the input is copied into a buffer padded with z on every side, and the primitive runs without
 * padding; every tap then holds an activation or the zero point, so
 *     sum (x - x_zp) * w = sum u * w - z * sum w        (sum w over each output channel's taps, kept per plan)
 * exactly, padding included. A dense layer is an inner product with the same correction. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/lite/lite_quant.h"
#include "cpu/dnnl_util.h"
#include "cpu/ops.h"

typedef struct qkey {
    cnn_qconv_args shape; /* the sizes only: the pointers are zeroed */
} qkey;

typedef struct qentry {
    qkey key;
    cnn_cpu_prim prim;
    dnnl_memory_desc_t x_md, w_md, y_md;
    uint8_t *xpad;           /* n x (h + pt + pb) x (w + pl + pr) x c */
    int32_t *acc;            /* n x oh x ow x oc */
    int32_t *wsum;           /* oc */
    const int8_t *wsum_of;   /* the weights wsum was computed from */
    cnn_cpu_requant rq;      /* its offsets: bias - z * wsum */
    const int8_t *off_of;
    const int32_t *off_bias;
    const int32_t *rq_of, *rq_shift_of;
} qentry;

static void qentry_destroy(void *p)
{
    qentry *e = p;
    cnn_cpu_prim_destroy(&e->prim);
    free(e->xpad);
    free(e->acc);
    free(e->wsum);
    cnn_cpu_requant_free(&e->rq);
    free(e);
}

static cnn_status build(cnn_cpu_ctx *ctx, qentry *e, const char *what)
{
    cnn_status st = CNN_OK;
    const cnn_qconv_args *k = &e->key.shape;
    int64_t ph = k->h + k->pt + k->pb, pw = k->w + k->pl + k->pr;
    if (k->dense) {
        int64_t features = (int64_t)k->h * k->w * k->c;
        int64_t xd[2] = {k->n, features}, wd[2] = {k->oc, features}, yd[2] = {k->n, k->oc};
        CNN_TRY(cnn_cpu_md_dt(&e->x_md, 2, xd, dnnl_u8, dnnl_nc, what));
        CNN_TRY(cnn_cpu_md_dt(&e->w_md, 2, wd, dnnl_s8, dnnl_oi, what));
        CNN_TRY(cnn_cpu_md_dt(&e->y_md, 2, yd, dnnl_s32, dnnl_nc, what));
        dnnl_memory_desc_t w_any;
        CNN_TRY(cnn_cpu_md_dt(&w_any, 2, wd, dnnl_s8, dnnl_format_tag_any, what));
        dnnl_inner_product_desc_t d;
        CNN_CPU_DNNL(what, dnnl_inner_product_forward_desc_init, &d, dnnl_forward_inference, &e->x_md, &w_any, NULL,
                     &e->y_md);
        cnn_cpu_arg_spec specs[3] = {
            {DNNL_ARG_SRC, dnnl_query_src_md, 0, &e->x_md, 0},
            {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &e->w_md, 0},
            {DNNL_ARG_DST, dnnl_query_dst_md, 0, &e->y_md, 1},
        };
        CNN_TRY(cnn_cpu_prim_build(ctx, &e->prim, &d, NULL, NULL, specs, 3, 0, what));
    } else {
        int64_t xd[4] = {k->n, k->c, ph, pw}, yd[4] = {k->n, k->oc, k->oh, k->ow};
        CNN_TRY(cnn_cpu_md_dt(&e->x_md, 4, xd, dnnl_u8, dnnl_nhwc, what));
        CNN_TRY(cnn_cpu_md_dt(&e->y_md, 4, yd, dnnl_s32, dnnl_nhwc, what));
        dnnl_memory_desc_t w_any;
        if (k->groups == 1) {
            int64_t wd[4] = {k->oc, k->c, k->kh, k->kw};
            CNN_TRY(cnn_cpu_md_dt(&e->w_md, 4, wd, dnnl_s8, dnnl_ohwi, what));
            CNN_TRY(cnn_cpu_md_dt(&w_any, 4, wd, dnnl_s8, dnnl_format_tag_any, what));
        } else {
            int64_t wd[5] = {k->groups, k->oc / k->groups, k->c / k->groups, k->kh, k->kw};
            CNN_TRY(cnn_cpu_md_dt(&e->w_md, 5, wd, dnnl_s8, dnnl_gohwi, what));
            CNN_TRY(cnn_cpu_md_dt(&w_any, 5, wd, dnnl_s8, dnnl_format_tag_any, what));
        }
        dnnl_dims_t strides = {k->sh, k->sw}, dilates = {k->dh - 1, k->dw - 1}, pad = {0, 0};
        dnnl_convolution_desc_t d;
        CNN_CPU_DNNL(what, dnnl_dilated_convolution_forward_desc_init, &d, dnnl_forward_inference,
                     dnnl_convolution_direct, &e->x_md, &w_any, NULL, &e->y_md, strides, dilates, pad, pad);
        cnn_cpu_arg_spec specs[3] = {
            {DNNL_ARG_SRC, dnnl_query_src_md, 0, &e->x_md, 0},
            {DNNL_ARG_WEIGHTS, dnnl_query_weights_md, 0, &e->w_md, 0},
            {DNNL_ARG_DST, dnnl_query_dst_md, 0, &e->y_md, 1},
        };
        CNN_TRY(cnn_cpu_prim_build(ctx, &e->prim, &d, NULL, NULL, specs, 3, 0, what));
    }
    size_t xbytes = (size_t)k->n * (size_t)(k->dense ? (int64_t)k->h * k->w * k->c : ph * pw * k->c);
    e->xpad = malloc(xbytes ? xbytes : 1);
    e->acc = malloc((size_t)k->n * k->oh * k->ow * k->oc * sizeof *e->acc);
    e->wsum = malloc((size_t)k->oc * sizeof *e->wsum);
    if (!e->xpad || !e->acc || !e->wsum) st = cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what);
fail:
    return st;
}

cnn_status cnn_cpu_requant_init(cnn_cpu_requant *r, int oc, const int32_t *mult, const int32_t *shift,
                                const char *what)
{
    r->oc = oc;
    r->k = malloc((size_t)(oc > 0 ? oc : 1) * 5 * sizeof *r->k);
    r->mf = malloc((size_t)(oc > 0 ? oc : 1) * sizeof *r->mf);
    if (!r->k || !r->mf) {
        cnn_cpu_requant_free(r);
        return cnn_error(CNN_ERR_NO_MEMORY, "%s: out of host memory", what);
    }
    for (int o = 0; o < oc; o++) { /* lq_scale's constants, per channel */
        int total = 31 - shift[o];
        r->k[o] = 0;
        r->k[oc + o] = mult[o];
        r->k[2 * oc + o] = total > 0 ? (int64_t)1 << (total - 1) : 0;
        r->k[3 * oc + o] = total > 0;
        r->k[4 * oc + o] = total;
        r->mf[o] = (float)ldexp((double)mult[o], -total); /* exact in double, then rounded once */
    }
    return CNN_OK;
}

void cnn_cpu_requant_free(cnn_cpu_requant *r)
{
    free(r->k);
    free(r->mf);
    r->k = NULL;
    r->mf = NULL;
}

/* One output channel of cnn-lite's requant() (+ offset in 64 bits, saturated to int32, rescaled by lq_scale, + zero
 * point, clamped), in portable C, lq_scale with its per-channel constants precomputed in k:
 * floor((p + half - [p < 0]) / 2^total). */
static inline uint8_t requant_one(int32_t sum, const int64_t *k, int oc, int o, int32_t y_zp, int32_t y_min,
                                  int32_t y_max)
{
    int64_t acc = (int64_t)sum + k[o];
    acc = acc > INT32_MAX ? INT32_MAX : acc < INT32_MIN ? INT32_MIN : acc;
    int64_t p = acc * k[oc + o];
    int64_t q = ((p + k[2 * oc + o] - ((p >> 63) & k[3 * oc + o])) >> k[4 * oc + o]) + y_zp; /* below 2^34 */
    return (uint8_t)(q < y_min ? y_min : q > y_max ? y_max : q);
}

/* Rows of output channels, in portable C. */
static void requant_block_c(const int32_t *sum, uint8_t *y, int64_t rows, int oc, const int64_t *k, int32_t y_zp,
                            int32_t y_min, int32_t y_max)
{
    for (int64_t r = 0; r < rows; r++)
        for (int o = 0; o < oc; o++) y[r * oc + o] = requant_one(sum[r * oc + o], k, oc, o, y_zp, y_min, y_max);
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CNN_REQUANT_AVX512 1
/* The same with AVX-512F, 16 channels a step, in float where float decides the result and in integers where it might
 * not, so equal to requant_block_c bit for bit (tests/test_quant.cc checks both against lq_scale):
 *  - the sum plus the offset in int32 (exact: both below 2^30 in magnitude; rows where a sum is not, and groups where
 *    an offset is not, take the integer path);
 *  - times M = mult 2^-total in float: the conversion of the sum, M's own rounding and the product's each err by at
 *    most 2^-24 relative, so y is within 1.8e-7 |y| of the exact product, within 1e-4 where it is not clamped to
 *    [y_min - y_zp, y_max - y_zp] (|y| <= 512);
 *  - rounded to nearest: the exact product rounded half away from zero, unless y lies within 2^-12 (2.4e-4) of a
 *    half, where that row's outputs of the group are recomputed in integers (requant_one): on real sums a few in a
 *    thousand rows.
 * Three times faster than the 64-bit lanes (vpmuldq) this replaced: 0.15 against 0.46 ns an output (bench/RESULTS.md). */
__attribute__((target("avx512f"))) static void requant_block_avx512(const int32_t *sum, uint8_t *y, int64_t rows,
                                                                    int oc, const int64_t *k, const float *mf,
                                                                    int32_t y_zp, int32_t y_min, int32_t y_max)
{
    const __m512 lo = _mm512_set1_ps((float)(y_min - y_zp)), hi = _mm512_set1_ps((float)(y_max - y_zp));
    const __m512 near_half = _mm512_set1_ps(0.5f - 0x1p-12f);
    const __m512i zp = _mm512_set1_epi32(y_zp), big = _mm512_set1_epi32((1 << 30) - 1);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    for (int g = 0; g < oc; g += 16) {
        const int n = oc - g < 16 ? oc - g : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1);
        __mmask16 wide = 0;
        for (int o = 0; o < n; o++)
            if (k[g + o] >= (1 << 30) || k[g + o] <= -(1 << 30)) wide = m;
        const __m512i off = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64((__mmask8)m, k + g))),
            _mm512_cvtepi64_epi32(_mm512_maskz_loadu_epi64((__mmask8)(m >> 8), k + g + 8)), 1);
        const __m512 M = _mm512_maskz_loadu_ps(m, mf + g);
        for (int64_t r = 0; r < rows; r++) {
            const int32_t *s = sum + r * oc + g;
            uint8_t *yr = y + r * oc + g;
            __m512i x = _mm512_maskz_loadu_epi32(m, s);
            __mmask16 redo = wide | _mm512_mask_cmpgt_epu32_mask(m, _mm512_abs_epi32(x), big);
            __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(x, off)), M);
            v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
            __m512 rv = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512 d = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(_mm512_sub_ps(v, rv)), abs_mask));
            redo |= _mm512_mask_cmp_ps_mask(m, d, near_half, _CMP_GE_OQ);
            __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(rv), zp);
            if (n == 16) _mm_storeu_si128((__m128i *)yr, _mm512_cvtepi32_epi8(q));
            else _mm512_mask_cvtepi32_storeu_epi8(yr, m, q);
            for (; redo; redo &= (__mmask16)(redo - 1)) {
                int o = __builtin_ctz(redo);
                yr[o] = requant_one(s[o], k, oc, g + o, y_zp, y_min, y_max);
            }
        }
    }
}
#endif

/* (for the tests: the portable kernel whatever the processor) */
void cnn_cpu_requant_rows_c(const cnn_cpu_requant *r, const int32_t *sum, uint8_t *y, int64_t pixels)
{
    requant_block_c(sum, y, pixels, r->oc, r->k, r->y_zp, r->y_min, r->y_max);
}

void cnn_cpu_requant_rows(const cnn_cpu_requant *r, const int32_t *sum, uint8_t *y, int64_t pixels)
{
    const int oc = r->oc;
    const int64_t *k = r->k;
    const int32_t y_zp = r->y_zp, y_min = r->y_min, y_max = r->y_max;
    const int64_t chunk = 64, chunks = (pixels + chunk - 1) / chunk;
#ifdef CNN_REQUANT_AVX512
    const int avx512 = __builtin_cpu_supports("avx512f");
#endif
#pragma omp parallel for schedule(static) if (pixels * oc > 32768)
    for (int64_t c = 0; c < chunks; c++) {
        int64_t at = c * chunk, rows = pixels - at < chunk ? pixels - at : chunk;
#ifdef CNN_REQUANT_AVX512
        if (avx512) {
            requant_block_avx512(sum + at * oc, y + at * oc, rows, oc, k, r->mf, y_zp, y_min, y_max);
            continue;
        }
#endif
        requant_block_c(sum + at * oc, y + at * oc, rows, oc, k, y_zp, y_min, y_max);
    }
}

cnn_status cnn_cpu_qconv_s32(cnn_backend *b, const cnn_qconv_args *a)
{
    static const char *what = "int8 convolution";
    cnn_status st = CNN_OK;
    cnn_cpu_ctx *ctx = cnn_cpu_ctx_of(b);
    cnn_plan *tmp = NULL;
    if (!a->plan || !a->y || !a->mult || !a->shift)
        return cnn_error(CNN_ERR_INVALID_ARG, "%s: a plan, an output and the rescaling are needed", what);
    if (!cnn_cpu_exact_int8())
        return cnn_error(CNN_ERR_UNSUPPORTED, "%s: this processor has no VNNI: oneDNN's int8 sums would not be exact",
                         what);
    qkey key;
    memset(&key, 0, sizeof key);
    cnn_qconv_args *k0 = &key.shape; /* the sizes, field by field: padding bytes stay zero for memcmp */
    k0->dense = a->dense, k0->n = a->n, k0->h = a->h, k0->w = a->w, k0->c = a->c, k0->oh = a->oh, k0->ow = a->ow;
    k0->oc = a->oc, k0->kh = a->kh, k0->kw = a->kw, k0->sh = a->sh, k0->sw = a->sw, k0->dh = a->dh, k0->dw = a->dw;
    k0->groups = a->groups, k0->pt = a->pt, k0->pl = a->pl, k0->pb = a->pb, k0->pr = a->pr;
    void *ev = NULL;
    CNN_TRY(cnn_plan_entry(a->plan ? a->plan : &tmp, CNN_PLAN_QCONV, CNN_CPU_PLAN_SLOTS, &key, sizeof key,
                           sizeof(qentry), qentry_destroy, &ev, what));
    qentry *e = ev;
    if (!e->prim.built) CNN_TRY(build(ctx, e, what));
    const cnn_qconv_args *k = &e->key.shape;
    int cg = k->c / (k->dense ? 1 : k->groups);
    int64_t taps = k->dense ? (int64_t)k->h * k->w * k->c : (int64_t)k->kh * k->kw * cg;
    if (e->wsum_of != a->wt) { /* sum w per output channel, over its taps */
        for (int o = 0; o < k->oc; o++) {
            int32_t s = 0;
            for (int64_t t = 0; t < taps; t++) s += a->wt[(size_t)o * taps + t];
            e->wsum[o] = s;
        }
        e->wsum_of = a->wt;
        e->off_of = NULL;
    }
    uint8_t z = (uint8_t)(a->x_zp + 128);
    if (k->dense) {
        size_t count = (size_t)k->n * taps;
        for (size_t i = 0; i < count; i++) e->xpad[i] = (uint8_t)(a->x[i] + 128);
    } else {
        int64_t ph = k->h + k->pt + k->pb, pw = k->w + k->pl + k->pr;
        for (int bi = 0; bi < k->n; bi++)
            for (int64_t y = 0; y < ph; y++) {
                uint8_t *row = e->xpad + (((size_t)bi * ph + y) * pw) * k->c;
                int64_t iy = y - k->pt;
                if (iy < 0 || iy >= k->h) {
                    memset(row, z, (size_t)pw * k->c);
                    continue;
                }
                memset(row, z, (size_t)k->pl * k->c);
                const int8_t *src = a->x + (((size_t)bi * k->h + iy) * k->w) * k->c;
                uint8_t *dst = row + (size_t)k->pl * k->c;
                for (size_t i = 0; i < (size_t)k->w * k->c; i++) dst[i] = (uint8_t)(src[i] + 128);
                memset(dst + (size_t)k->w * k->c, z, (size_t)k->pr * k->c);
            }
    }
    void *data[3] = {e->xpad, (void *)a->wt, e->acc};
    e->prim.arg[1].version = a->w_version; /* the reordered weights are kept while the pointer and version stay */
    CNN_TRY(cnn_cpu_prim_run(ctx, &e->prim, data, NULL, what));
    const int oc = k->oc;
    if (e->rq_of != a->mult || e->rq_shift_of != a->shift) {
        cnn_cpu_requant_free(&e->rq);
        CNN_TRY(cnn_cpu_requant_init(&e->rq, oc, a->mult, a->shift, what));
        e->rq_of = a->mult;
        e->rq_shift_of = a->shift;
        e->off_of = NULL;
    }
    /* per channel: the zero point's correction and the bias as one offset */
    if (e->off_of != a->wt || e->off_bias != a->bias) {
        for (int o = 0; o < oc; o++) e->rq.k[o] = (a->bias ? (int64_t)a->bias[o] : 0) - (int64_t)z * e->wsum[o];
        e->off_of = a->wt;
        e->off_bias = a->bias;
    }
    e->rq.y_zp = a->y_zp, e->rq.y_min = a->y_min, e->rq.y_max = a->y_max; /* int8 codes: the bytes are int8_t's */
    cnn_cpu_requant_rows(&e->rq, e->acc, (uint8_t *)a->y, (int64_t)k->n * k->oh * k->ow);
fail:
    cnn_plan_destroy(b, tmp);
    return st;
}
