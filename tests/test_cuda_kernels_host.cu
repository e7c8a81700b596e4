// The bodies of the vectorized CUDA kernels (cuda/kernels_ew.cuh), run on the host: nvcc compiles them here as
// host code, and each test plays every thread of a launch in turn, for several launch sizes, then compares with a
// plain loop. This needs nvcc but no GPU, so it runs wherever the CUDA backend is built. It checks what a GPU
// could not show any better: that the 16-byte vector path and the element path write every element once, the same
// bits as the plain loop, nothing past the end, for shapes whose rows, channels and lengths are not multiples of
// the vector width or of the thread count.
//
// What it cannot check is the GPU's own arithmetic (FMA contraction) and the shared-memory combine of the
// batchnorm sums: tests/test_cuda.cc runs the kernels on the device against the CPU backend.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda/kernels_ew.cuh"

namespace {

// 16-byte aligned host buffers of n elements plus kGuard sentinel elements
const int64_t kGuard = 16;

template <typename T> struct Buffer {
    explicit Buffer(int64_t n) : n(n)
    {
        const size_t bytes = ((size_t)(n + kGuard) * sizeof(T) + 15) / 16 * 16;
        p.reset(static_cast<T *>(std::aligned_alloc(16, bytes)));
        for (int64_t i = 0; i < n + kGuard; i++) p.get()[i] = cnn_ew_io<T>::store(-12345.0f);
    }
    T *data() { return p.get(); }
    float get(int64_t i) const { return cnn_ew_io<T>::load(p.get()[i]); }
    void set(int64_t i, float v) { p.get()[i] = cnn_ew_io<T>::store(v); }
    void random(uint32_t seed, float lo, float hi)
    {
        for (int64_t i = 0; i < n; i++) {
            seed = seed * 1664525u + 1013904223u;
            set(i, lo + (hi - lo) * (float)(seed >> 8) / 16777216.0f);
        }
    }
    void copy_from(const Buffer &o) { std::memcpy(p.get(), o.p.get(), (size_t)(n + kGuard) * sizeof(T)); }
    bool same_bits(const Buffer &o, int64_t *where) const
    {
        for (int64_t i = 0; i < n + kGuard; i++)
            if (std::memcmp(&p.get()[i], &o.p.get()[i], sizeof(T))) {
                *where = i;
                return false;
            }
        return true;
    }
    int64_t n;
    std::unique_ptr<T, decltype(&std::free)> p{nullptr, &std::free};
};

std::vector<float> random_floats(int64_t n, uint32_t seed, float lo, float hi)
{
    std::vector<float> v((size_t)n);
    for (auto &x : v) {
        seed = seed * 22695477u + 1u;
        x = lo + (hi - lo) * (float)(seed >> 8) / 16777216.0f;
    }
    return v;
}

// thread counts of a launch: fewer threads than vectors (grid-stride loops), one per vector, more than needed,
// and counts that are not multiples of a row's vector count
std::vector<int64_t> thread_counts(int64_t vectors, int64_t least)
{
    std::vector<int64_t> out;
    for (int64_t nt : {least, least + 1, 2 * least + 3, vectors, vectors + 5, (int64_t)256})
        if (nt >= least && nt >= 1) out.push_back(nt);
    return out;
}

template <typename T> class CudaKernelBodies : public ::testing::Test {};
using Types = ::testing::Types<float, __half, __nv_bfloat16>;
TYPED_TEST_SUITE(CudaKernelBodies, Types);

const cnn_act kActs[] = {CNN_ACT_NONE, CNN_ACT_RELU, CNN_ACT_LEAKY_RELU, CNN_ACT_GELU};

TYPED_TEST(CudaKernelBodies, BatchnormApplyVectorAndElementPathsMatchThePlainLoop)
{
    using T = TypeParam;
    const int W = cnn_ew_width<T>::value;
    for (int64_t c : {(int64_t)W, (int64_t)2 * W, (int64_t)24, (int64_t)64, (int64_t)3 * W + W}) {
        for (int64_t m : {1, 5, 37}) {
            Buffer<T> x(m * c), res(m * c);
            x.random(7u + (uint32_t)c, -3.0f, 3.0f);
            res.random(11u + (uint32_t)m, -1.0f, 1.0f);
            const std::vector<float> center = random_floats(c, 1, -1.0f, 1.0f), scale = random_floats(c, 2, 0.1f, 2.0f),
                                     shift = random_floats(c, 3, -0.5f, 0.5f);
            for (cnn_act act : kActs) {
                for (int with_res = 0; with_res < 2; with_res++) {
                    Buffer<T> want(m * c);
                    for (int64_t r = 0; r < m; r++)
                        for (int64_t j = 0; j < c; j++) {
                            const int64_t i = r * c + j;
                            float u = (x.get(i) - center[j]) * scale[j] + shift[j];
                            if (with_res) u += res.get(i);
                            want.set(i, cnn_act_apply(act, 0.1f, u));
                        }
                    for (int vec = 0; vec < 2; vec++) {
                        const int V = vec ? W : 1;
                        if (c % V) continue;
                        for (int64_t nt : thread_counts(m * c / V, c / V)) {
                            Buffer<T> y(m * c);
                            for (int64_t t = 0; t < nt; t++) {
                                const T *rp = with_res ? res.data() : nullptr;
                                if (vec)
                                    cnn_ew_bn_apply<T, cnn_ew_width<T>::value>(t, nt, x.data(), rp, y.data(), m, c,
                                                                             center.data(), scale.data(),
                                                                             shift.data(), act, 0.1f);
                                else
                                    cnn_ew_bn_apply<T, 1>(t, nt, x.data(), rp, y.data(), m, c, center.data(),
                                                          scale.data(), shift.data(), act, 0.1f);
                            }
                            int64_t at = -1;
                            EXPECT_TRUE(y.same_bits(want, &at))
                                << "c " << c << " m " << m << " act " << act << " residual " << with_res << " V "
                                << V << " threads " << nt << ": element " << at << " is " << y.get(at)
                                << ", the plain loop gives " << want.get(at);
                        }
                    }
                }
            }
        }
    }
}

TYPED_TEST(CudaKernelBodies, BatchnormApplyInPlaceMatches)
{
    using T = TypeParam;
    const int W = cnn_ew_width<T>::value;
    const int64_t m = 9, c = 4 * W;
    Buffer<T> x(m * c), want(m * c);
    x.random(5, -2.0f, 2.0f);
    const std::vector<float> center = random_floats(c, 4, -1.0f, 1.0f), scale = random_floats(c, 5, 0.5f, 1.5f),
                             shift = random_floats(c, 6, -0.5f, 0.5f);
    const int64_t nt1 = c + 3, ntv = c / W + 3; /* at least a row's vectors, as the launchers guarantee */
    for (int64_t t = 0; t < nt1; t++)
        cnn_ew_bn_apply<T, 1>(t, nt1, x.data(), nullptr, want.data(), m, c, center.data(), scale.data(),
                              shift.data(), CNN_ACT_RELU, 0.0f);
    for (int64_t t = 0; t < ntv; t++) /* y aliases x */
        cnn_ew_bn_apply<T, cnn_ew_width<T>::value>(t, ntv, x.data(), nullptr, x.data(), m, c, center.data(),
                                                   scale.data(), shift.data(), CNN_ACT_RELU, 0.0f);
    int64_t at = -1;
    EXPECT_TRUE(x.same_bits(want, &at)) << "element " << at;
}

// the activations whose gradient follows from y, which batchnorm's backward applies itself (NONE: dy as it is)
const cnn_act kYActs[] = {CNN_ACT_NONE, CNN_ACT_RELU, CNN_ACT_ELU, CNN_ACT_TANH};

// g = act'(y) dy as the activation's backward op stores it into a T tensor: what the fused kernels must use
template <typename T> float grad_through(cnn_act act, float y, float dy)
{
    if (act == CNN_ACT_NONE) return dy;
    return cnn_ew_io<T>::load(cnn_ew_io<T>::store(cnn_act_grad_from_y(act, 0.3f, y, dy)));
}

TYPED_TEST(CudaKernelBodies, BatchnormDxVectorAndElementPathsMatchThePlainLoopAlsoInPlace)
{
    using T = TypeParam;
    const int W = cnn_ew_width<T>::value;
    for (int64_t c : {(int64_t)W, (int64_t)40, (int64_t)2 * W + W}) {
        for (int64_t m : {1, 6, 29}) {
            Buffer<T> x(m * c), dy(m * c), y(m * c);
            x.random(3u + (uint32_t)m, -2.0f, 2.0f);
            dy.random(9u + (uint32_t)c, -1.0f, 1.0f);
            y.random(13u + (uint32_t)c, -1.0f, 2.0f); /* both sides of ReLU's kink */
            const std::vector<float> coef = random_floats(4 * c, 8, -1.0f, 1.0f);
            for (cnn_act act : kYActs) {
                Buffer<T> want(m * c);
                for (int64_t r = 0; r < m; r++)
                    for (int64_t j = 0; j < c; j++) {
                        const int64_t i = r * c + j;
                        const float g = grad_through<T>(act, y.get(i), dy.get(i));
                        want.set(i, coef[j] * (g - coef[c + j] - (x.get(i) - coef[3 * c + j]) * coef[2 * c + j]));
                    }
                for (int vec = 0; vec < 2; vec++) {
                    const int V = vec ? W : 1;
                    if (c % V) continue;
                    for (int64_t nt : thread_counts(m * c / V, c / V)) {
                        for (int in_place = 0; in_place < 2; in_place++) {
                            Buffer<T> dx(m * c);
                            if (in_place) dx.copy_from(dy);
                            const T *g = in_place ? dx.data() : dy.data();
                            const T *yp = act == CNN_ACT_NONE ? nullptr : y.data();
                            for (int64_t t = 0; t < nt; t++) {
                                if (vec)
                                    cnn_ew_bn_dx<T, cnn_ew_width<T>::value>(t, nt, x.data(), g, yp, act, 0.3f,
                                                                            dx.data(), m, c, coef.data());
                                else
                                    cnn_ew_bn_dx<T, 1>(t, nt, x.data(), g, yp, act, 0.3f, dx.data(), m, c,
                                                       coef.data());
                            }
                            if (in_place) /* the guard holds dy's sentinels, the same as want's */
                                for (int64_t i = m * c; i < m * c + kGuard; i++) ASSERT_EQ(dx.get(i), want.get(i));
                            int64_t at = -1;
                            EXPECT_TRUE(dx.same_bits(want, &at))
                                << "c " << c << " m " << m << " act " << act << " V " << V << " threads " << nt
                                << " in place " << in_place << ": element " << at;
                        }
                    }
                }
            }
        }
    }
}

// The sums, with the backward's gradient through the activation (act'(y) dy, also stored into dres, every element
// once, nothing past the end; dres over dy in place as well)
TYPED_TEST(CudaKernelBodies, BatchnormSumsOfEveryThreadAddUpToTheColumnSums)
{
    using T = TypeParam;
    const int W = cnn_ew_width<T>::value;
    const int64_t c = 3 * W, m = 53;
    Buffer<T> x(m * c), dy(m * c), y(m * c);
    x.random(21, 5.0f, 9.0f); /* far from 0: the shift matters */
    dy.random(22, -1.0f, 1.0f);
    y.random(23, -1.0f, 2.0f);
    const std::vector<float> cf = random_floats(c, 9, 5.0f, 9.0f);
    const std::vector<double> center(cf.begin(), cf.end());
    for (int shifted = 0; shifted < 2; shifted++) {
        for (cnn_act act : kYActs) {
            if (shifted && act != CNN_ACT_NONE) continue;
            std::vector<double> want1((size_t)c, 0.0), want2((size_t)c, 0.0);
            Buffer<T> want_g(m * c);
            for (int64_t j = 0; j < c; j++) {
                const double k = shifted ? (double)x.get(j) : center[j];
                for (int64_t r = 0; r < m; r++) {
                    const float gf = grad_through<T>(act, y.get(r * c + j), dy.get(r * c + j));
                    want_g.set(r * c + j, gf);
                    const double v = x.get(r * c + j), g = gf;
                    want1[j] += shifted ? v - k : g;
                    want2[j] += shifted ? (v - k) * (v - k) : g * (v - k);
                }
            }
            // a block of `step` threads down each column vector, over two chunks of rows, as the kernel runs them
            for (int vec = 0; vec < 2; vec++) {
                const int V = vec ? W : 1;
                for (int64_t step : {1, 4, 8}) {
                    for (int in_place = 0; in_place < (shifted ? 1 : 2); in_place++) {
                        Buffer<T> dres(m * c), dyc(m * c);
                        dyc.copy_from(dy);
                        T *rp = shifted ? nullptr : in_place ? dyc.data() : dres.data();
                        const T *yp = act == CNN_ACT_NONE ? nullptr : y.data();
                        std::vector<double> got1((size_t)c, 0.0), got2((size_t)c, 0.0);
                        for (int64_t col = 0; col < c; col += V)
                            for (int64_t r0 : {(int64_t)0, (int64_t)20})
                                for (int64_t ty = 0; ty < step; ty++) {
                                    double s1[16] = {0}, s2[16] = {0};
                                    const int64_t r1 = r0 == 0 ? 20 : m;
                                    if (vec)
                                        cnn_ew_bn_sums<T, cnn_ew_width<T>::value>(
                                            shifted, x.data(), dyc.data(), yp, act, 0.3f, rp, center.data(), c, col,
                                            r0 + ty, r1, step, s1, s2);
                                    else
                                        cnn_ew_bn_sums<T, 1>(shifted, x.data(), dyc.data(), yp, act, 0.3f, rp,
                                                             center.data(), c, col, r0 + ty, r1, step, s1, s2);
                                    for (int j = 0; j < V; j++) {
                                        got1[(size_t)(col + j)] += s1[j];
                                        got2[(size_t)(col + j)] += s2[j];
                                    }
                                }
                        const std::string where = "shifted " + std::to_string(shifted) + " act " +
                                                  std::to_string((int)act) + " V " + std::to_string(V) + " step " +
                                                  std::to_string(step) + " in place " + std::to_string(in_place);
                        for (int64_t j = 0; j < c; j++) {
                            EXPECT_NEAR(got1[j], want1[j], 1e-9 * (1.0 + std::fabs(want1[j])))
                                << where << " channel " << j;
                            EXPECT_NEAR(got2[j], want2[j], 1e-9 * (1.0 + std::fabs(want2[j])))
                                << where << " channel " << j;
                        }
                        if (shifted) {
                            int64_t at = -1;
                            EXPECT_TRUE(dyc.same_bits(dy, &at)) << where << ": dy written at " << at;
                            continue;
                        }
                        /* dres: g everywhere, the sentinels past the end untouched */
                        const Buffer<T> &got = in_place ? dyc : dres;
                        for (int64_t i = 0; i < m * c; i++)
                            ASSERT_EQ(got.get(i), want_g.get(i)) << where << ": dres element " << i;
                        for (int64_t i = m * c; i < m * c + kGuard; i++)
                            ASSERT_EQ(got.get(i), in_place ? dy.get(i) : cnn_ew_round<T>(-12345.0f)) << where << ": guard " << i;
                    }
                }
            }
        }
    }
}

// the flat bodies: activation forward and backward, add
template <typename T, int V> void flat_run(int which, int64_t nt, Buffer<T> &a, Buffer<T> &b, Buffer<T> &y, int64_t n,
                                           cnn_act act)
{
    for (int64_t t = 0; t < nt; t++) {
        if (which == 0) cnn_ew_act_forward<T, V>(t, nt, act, 0.2f, a.data(), y.data(), n);
        else if (which == 1) cnn_ew_act_backward<T, V>(t, nt, act, 0.2f, cnn_act_grad_needs_input(act), a.data(),
                                                      b.data(), y.data(), n);
        else cnn_ew_add<T, V>(t, nt, a.data(), b.data(), y.data(), n, 0.5f, -1.5f);
    }
}

TYPED_TEST(CudaKernelBodies, FlatKernelsWriteEveryElementOnceAndNothingPastTheEnd)
{
    using T = TypeParam;
    const int W = cnn_ew_width<T>::value;
    const char *names[] = {"act_forward", "act_backward", "add"};
    for (int which = 0; which < 3; which++) {
        for (int64_t n : {(int64_t)0, (int64_t)1, (int64_t)W - 1, (int64_t)W, (int64_t)W + 1, (int64_t)1003}) {
            Buffer<T> a(n), b(n);
            a.random(31u + (uint32_t)n, -3.0f, 3.0f);
            b.random(37u + (uint32_t)n, -1.0f, 1.0f);
            for (cnn_act act : kActs) {
                Buffer<T> want(n);
                for (int64_t i = 0; i < n; i++) {
                    const float u = a.get(i), v = b.get(i);
                    float r;
                    if (which == 0) r = cnn_act_apply(act, 0.2f, u);
                    else if (which == 1)
                        r = cnn_act_grad_needs_input(act) ? cnn_act_grad_from_x(act, 0.2f, u, v)
                                                          : cnn_act_grad_from_y(act, 0.2f, u, v);
                    else r = 0.5f * u + -1.5f * v;
                    want.set(i, r);
                }
                for (int vec = 0; vec < 2; vec++) {
                    const int V = vec ? W : 1;
                    for (int64_t nt : thread_counts((n + V - 1) / V, 1)) {
                        Buffer<T> y(n);
                        if (vec) flat_run<T, cnn_ew_width<T>::value>(which, nt, a, b, y, n, act);
                        else flat_run<T, 1>(which, nt, a, b, y, n, act);
                        int64_t at = -1;
                        EXPECT_TRUE(y.same_bits(want, &at)) << names[which] << " n " << n << " act " << act << " V "
                                                            << V << " threads " << nt << ": element " << at;
                    }
                }
                if (which == 2) break; /* add has no activation */
            }
        }
    }
}

// In place, as the layers call them: the activation's gradient over dy (dx == dy), the gradient sum into its first
// operand (y == a), and the activation over its input (y == x); the same bits as out of place.
TYPED_TEST(CudaKernelBodies, FlatKernelsInPlaceMatchOutOfPlace)
{
    using T = TypeParam;
    const int W = cnn_ew_width<T>::value;
    const int64_t n = 8 * W + 3, nt = 5;
    for (int which = 0; which < 3; which++) {
        Buffer<T> a(n), b(n), want(n), in_place(n);
        a.random(51, -3.0f, 3.0f);
        b.random(53, -1.0f, 1.0f);
        flat_run<T, cnn_ew_width<T>::value>(which, nt, a, b, want, n, CNN_ACT_GELU);
        Buffer<T> &target = which == 1 ? b : a; /* dx over dy; y over x or over a */
        in_place.copy_from(target);
        for (int64_t t = 0; t < nt; t++) {
            T *p = in_place.data();
            if (which == 0) cnn_ew_act_forward<T, cnn_ew_width<T>::value>(t, nt, CNN_ACT_GELU, 0.2f, p, p, n);
            else if (which == 1)
                cnn_ew_act_backward<T, cnn_ew_width<T>::value>(t, nt, CNN_ACT_GELU, 0.2f, 1, a.data(), p, p, n);
            else cnn_ew_add<T, cnn_ew_width<T>::value>(t, nt, p, b.data(), p, n, 0.5f, -1.5f);
        }
        for (int64_t i = 0; i < n; i++) ASSERT_EQ(in_place.get(i), want.get(i)) << "kernel " << which << " element " << i;
    }
}

} // namespace
