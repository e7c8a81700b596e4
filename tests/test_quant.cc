// Quantization and cnn-lite: int8 ops against integer references, the requantization against exact arithmetic,
// weights per channel against float64, the calibration methods on known distributions, batchnorm folding, cnn-lite
// against libcnn, and bad models, bad calibration sets and small arenas.
#include <gtest/gtest.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "cnn/cnn.h"
#include "cnn/lite.h"
#include "core/backend.h"
#include "core/lite/lite_internal.h"
#include "core/lite/lite_quant.h"
#include "core/nn/net.h"
#include "core/ops.h"
extern "C" {  // (C headers without their own extern "C")
#include "core/nn/model_file.h"
#include "cpu/dnnl_util.h"
}
#include "core/io/safetensors.h"
#include "core/quant/quant_internal.h"
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::TempDir;

using cnntest::has;

// A w x h gray PNG of one value, in its folder (made).
void write_gray_png(const std::string &path, int w, int h, int value) {
  ASSERT_EQ(system(("mkdir -p '" + path.substr(0, path.rfind('/')) + "'").c_str()), 0);
  std::vector<unsigned char> px((size_t)w * h);
  for (size_t i = 0; i < px.size(); i++) px[i] = (unsigned char)((value + 3 * i) % 256);
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, 1, px.data(), w));
}

// ---- a cnn-lite file built by hand ----------------------------------------------------------------------------

struct Tensor {
  std::string name;
  cnn_dtype dtype;
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;
};

template <typename T>
Tensor tensor(const std::string &name, cnn_dtype dtype, std::vector<int64_t> shape, const std::vector<T> &v) {
  Tensor t{name, dtype, shape, std::vector<unsigned char>(v.size() * sizeof(T))};
  std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
  return t;
}

std::vector<unsigned char> lite_file(const std::string &mode, const std::string &graph, const std::vector<Tensor> &ts,
                                     const std::vector<std::pair<std::string, std::string>> &extra = {}) {
  std::vector<cnn_st_entry> entries;
  for (const Tensor &t : ts)
    entries.push_back({t.name.c_str(), t.dtype, (int)t.shape.size(), t.shape.data(), t.bytes.data()});
  std::vector<const char *> keys = {"format", "mode", "graph"}, values = {"cnn.c lite", mode.c_str(), graph.c_str()};
  for (auto &kv : extra) keys.push_back(kv.first.c_str()), values.push_back(kv.second.c_str());
  unsigned char *buf = nullptr;
  size_t len = 0;
  EXPECT_EQ(cnn_st_serialize(entries.data(), (int)entries.size(), keys.data(), values.data(), (int)keys.size(), &buf,
                             &len),
            CNN_OK)
      << cnn_last_error();
  std::vector<unsigned char> out(buf, buf + len);
  free(buf);
  return out;
}

// An opened cnn-lite model with its arena.
struct Lite {
  std::vector<unsigned char> arena;
  cnn_lite *m = nullptr;
  cnn_lite_status st = CNN_LITE_OK;
  char err[256] = "";
  Lite(const std::vector<unsigned char> &file, int batch) {
    size_t need = 0;
    st = cnn_lite_arena_size(file.data(), file.size(), batch, &need, err, sizeof err);
    if (st != CNN_LITE_OK) return;
    arena.resize(need);
    st = cnn_lite_open(file.data(), file.size(), batch, arena.data(), arena.size(), &m, err, sizeof err);
  }
};

// ---- the requantization -------------------------------------------------------------------------------------------

// x * M rounded, from m * 2^shift, in exact (128-bit) arithmetic: round half away from zero.
int64_t exact_scale(int32_t x, int32_t m, int shift) {
  __int128 num = (__int128)x * m;  // x * m / 2^(31 - shift)
  int down = 31 - shift;
  if (down <= 0) return (int64_t)(num << -down);
  __int128 half = (__int128)1 << (down - 1), q = (num >= 0 ? num + half : num - half) / ((__int128)1 << down);
  return (int64_t)q;
}

TEST(QuantMath, RequantizationIsTheExactProductRoundedHalfAwayFromZero) {
  std::mt19937 rng(7);
  int off = 0, n = 0;
  for (int i = 0; i < 200000; i++) {
    double M = std::ldexp(std::uniform_real_distribution<double>(0.5, 1.0)(rng),
                          std::uniform_int_distribution<int>(-30, 8)(rng));
    int32_t m;
    int shift;
    lq_quantize_multiplier(M, &m, &shift);
    ASSERT_GE(m, 1 << 30);
    ASSERT_NEAR(std::ldexp((double)m, shift - 31), M, M * 1e-9);
    int32_t x = std::uniform_int_distribution<int32_t>(-(1 << 20), 1 << 20)(rng);
    int64_t want = exact_scale(x, m, shift), got = lq_scale(x, m, shift);
    ASSERT_EQ(got, want) << x << " * " << M;
    off += got != want;
    n++;
  }
  EXPECT_EQ(off, 0) << "one rounding: exactly the exact product's";
  // M a power of two: a shift with rounding half away from zero
  int32_t m;
  int shift;
  lq_quantize_multiplier(0.25, &m, &shift);
  for (int32_t x : {-7, -6, -5, -2, -1, 0, 1, 2, 5, 6, 7, 1000001})
    EXPECT_EQ(lq_scale(x, m, shift), (int32_t)(x >= 0 ? (x + 2) / 4 : -((-x + 2) / 4))) << x;
  lq_quantize_multiplier(0.0, &m, &shift);
  EXPECT_EQ(lq_scale(123456, m, shift), 0);
}

TEST(QuantMath, QuantizeDequantizeRoundTripsWithinHalfAStepAndKeepsZeroExact) {
  std::mt19937 rng(3);
  for (int t = 0; t < 200; t++) {
    float lo = std::uniform_real_distribution<float>(-5, 1)(rng), hi = lo + std::uniform_real_distribution<float>(0.01f, 8)(rng);
    float scale;
    int32_t zp;
    lq_choose_params(lo, hi, &scale, &zp);
    ASSERT_GE(zp, -128);
    ASSERT_LE(zp, 127);
    // zero is exactly representable: padding and ReLU's floor
    EXPECT_EQ(scale * (float)(lq_quantize(0.0f, scale, zp) - zp), 0.0f);
    for (int i = 0; i < 100; i++) {
      double v = std::uniform_real_distribution<double>(std::min(lo, 0.0f), std::max(hi, 0.0f))(rng);
      int8_t q = lq_quantize((float)v, scale, zp);
      EXPECT_LE(std::fabs((double)scale * (q - zp) - v), 0.5 * scale * (1 + 1e-5) + 1e-7) << v;
    }
  }
}

// ---- int8 ops against integer references ----------------------------------------------------------------------------

// The input quantized with scale 1 and zero point `zp`: integer pixels go in exactly.
std::string q_input(int h, int w, int c, int zp) {
  return "input h=" + std::to_string(h) + " w=" + std::to_string(w) + " c=" + std::to_string(c) + " q=1," +
         std::to_string(zp) + "\n";
}

// cnn-lite's requantization of a 64-bit sum: saturated to int32, scaled by m 2^shift (lq_scale), + zp_out, clamped
// to [lo, 127]
int8_t requant_code(int64_t acc, int32_t m, int shift, int32_t zp_out, int32_t lo) {
  const int64_t a = std::min<int64_t>(INT32_MAX, std::max<int64_t>(INT32_MIN, acc));
  return (int8_t)std::min<int64_t>(127, std::max<int64_t>(lo, (int64_t)lq_scale((int32_t)a, m, shift) + zp_out));
}

int8_t requant_ref(int64_t acc, double M, int32_t zp_out, int32_t lo) {
  int32_t m;
  int shift;
  lq_quantize_multiplier(M, &m, &shift);
  return requant_code(acc, m, shift, zp_out, lo);
}

TEST(LiteInt8, ConvolutionEqualsAnInt32ReferenceExactly) {
  // 2 images of 7x6x4, conv 5 filters 3x2, stride 2x1, dilation 1x2, padding 1,0,1,2, groups 1, ReLU
  const int H = 7, W = 6, C = 4, N = 5, KH = 3, KW = 2, SH = 2, SW = 1, DH = 1, DW = 2, PT = 1, PL = 0, PB = 1, PR = 2;
  const int OH = (H + PT + PB - (DH * (KH - 1) + 1)) / SH + 1, OW = (W + PL + PR - (DW * (KW - 1) + 1)) / SW + 1;
  const int zp_in = -3, zp_out = 5;
  const float s_out = 37.0f;
  std::mt19937 rng(11);
  std::vector<int8_t> w(N * KH * KW * C);
  for (auto &v : w) v = (int8_t)std::uniform_int_distribution<int>(-127, 127)(rng);
  std::vector<float> wscale(N);
  for (auto &s : wscale) s = std::uniform_real_distribution<float>(0.5f, 2.0f)(rng);
  std::vector<int32_t> bias(N);
  for (auto &b : bias) b = std::uniform_int_distribution<int>(-5000, 5000)(rng);
  char line[512];
  snprintf(line, sizeof line,
           "conv in=0 k=%d,%d s=%d,%d d=%d,%d g=1 pad=%d,%d,%d,%d n=%d w=c.weight b=c.bias act=relu out=%d,%d,%d "
           "q=%.9g,%d\n",
           KH, KW, SH, SW, DH, DW, PT, PL, PB, PR, N, OH, OW, N, (double)s_out, zp_out);
  auto file = lite_file("int8", q_input(H, W, C, zp_in) + line + "flatten in=1 out=" + std::to_string(OH * OW * N) + "\n",
                        {tensor("c.weight", CNN_I8, {N, KH, KW, C}, w), tensor("c.weight.scale", CNN_F32, {N}, wscale),
                         tensor("c.bias", CNN_I32, {N}, bias)});
  Lite lite(file, 2);
  ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
  std::vector<int32_t> code(2 * H * W * C);  // the int8 codes; the real values fed are code - zp_in (scale 1)
  for (auto &v : code) v = std::uniform_int_distribution<int>(-128, 127)(rng);
  std::vector<float> x(code.size());
  for (size_t i = 0; i < x.size(); i++) x[i] = (float)(code[i] - zp_in);
  std::vector<float> out(2 * OH * OW * N);
  ASSERT_EQ(cnn_lite_logits(lite.m, x.data(), 2, out.data(), lite.err, sizeof lite.err), CNN_LITE_OK) << lite.err;
  int checked = 0;
  for (int b = 0; b < 2; b++)
    for (int oy = 0; oy < OH; oy++)
      for (int ox = 0; ox < OW; ox++)
        for (int o = 0; o < N; o++) {
          int64_t acc = bias[o];
          for (int ky = 0; ky < KH; ky++)
            for (int kx = 0; kx < KW; kx++) {
              int iy = oy * SH - PT + ky * DH, ix = ox * SW - PL + kx * DW;
              if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
              for (int c = 0; c < C; c++)
                acc += ((int64_t)code[((b * H + iy) * W + ix) * C + c] - zp_in) * w[((o * KH + ky) * KW + kx) * C + c];
            }
          int8_t want = requant_ref(acc, 1.0 * wscale[o] / s_out, zp_out, zp_out);
          float got = out[((b * OH + oy) * OW + ox) * N + o];  // dequantized: s_out * (q - zp_out)
          ASSERT_EQ(got, s_out * (float)(want - zp_out)) << b << " " << oy << " " << ox << " " << o;
          checked++;
        }
  EXPECT_EQ(checked, 2 * OH * OW * N);
}

TEST(LiteInt8, DensePoolingAddAndConcatEqualIntegerReferencesExactly) {
  // input 4x4x3 -> maxpool 2 (1), avgpool 3 s1 pad 1 (2), add(1-like? no) ... : a small graph of every int8 op
  const int zp_in = 7;
  std::mt19937 rng(5);
  std::vector<int32_t> code(4 * 4 * 3);
  for (auto &v : code) v = std::uniform_int_distribution<int>(-128, 127)(rng);
  std::vector<float> x(code.size());
  for (size_t i = 0; i < x.size(); i++) x[i] = (float)(code[i] - zp_in);
  std::vector<int8_t> w(6 * 12);
  for (auto &v : w) v = (int8_t)std::uniform_int_distribution<int>(-127, 127)(rng);
  std::vector<float> ws(6, 0.75f);
  std::vector<int32_t> b = {100, -200, 0, 5, -5, 1234};
  std::string g = q_input(4, 4, 3, zp_in) +
                  "maxpool in=0 k=2,2 s=2,2 pad=0,0,0,0 out=2,2,3\n"       // 1
                  "avgpool in=0 k=3,3 s=2,2 pad=1,1,0,0 out=2,2,3\n"       // 2: padding excluded from the count
                  "add in=1,2 act=relu out=2,2,3 q=1.5,-10\n"             // 3
                  "concat in=1,2 out=2,2,6 q=0.5,3\n"                     // 4
                  "gap in=4 out=6\n"                                      // 5
                  "flatten in=3 out=12\n"                                 // 6
                  "dense in=6 n=6 w=d.weight b=d.bias out=6 q=20,-1\n";  // 7
  auto file = lite_file("int8", g, {tensor("d.weight", CNN_I8, {6, 12}, w), tensor("d.weight.scale", CNN_F32, {6}, ws),
                                    tensor("d.bias", CNN_I32, {6}, b)});
  Lite lite(file, 1);
  ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
  std::vector<float> out(6);
  ASSERT_EQ(cnn_lite_logits(lite.m, x.data(), 1, out.data(), lite.err, sizeof lite.err), CNN_LITE_OK) << lite.err;
  auto X = [&](int y, int xx, int c) { return code[(y * 4 + xx) * 3 + c]; };
  int32_t mp[2][2][3], ap[2][2][3], ad[2][2][3], cc[2][2][6];
  for (int oy = 0; oy < 2; oy++)
    for (int ox = 0; ox < 2; ox++)
      for (int c = 0; c < 3; c++) {
        int32_t m = -128, s = 0, n = 0;
        for (int ky = 0; ky < 2; ky++)
          for (int kx = 0; kx < 2; kx++) m = std::max(m, X(oy * 2 + ky, ox * 2 + kx, c));
        for (int ky = 0; ky < 3; ky++)
          for (int kx = 0; kx < 3; kx++) {
            int iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx;
            if (iy < 0 || iy >= 4 || ix < 0 || ix >= 4) continue;
            s += X(iy, ix, c);
            n++;
          }
        mp[oy][ox][c] = m;
        ap[oy][ox][c] = s > 0 ? (s + n / 2) / n : (s - n / 2) / n;  // round half away from zero
      }
  // add: TFLite's: each input << 20, times s_i / (2 max s), summed, times 2 max s / (2^20 s_out); inputs' scale 1
  for (int oy = 0; oy < 2; oy++)
    for (int ox = 0; ox < 2; ox++)
      for (int c = 0; c < 3; c++) {
        int32_t m1, m2, mo;
        int s1, s2, so;
        lq_quantize_multiplier(1.0 / 2.0, &m1, &s1);
        lq_quantize_multiplier(1.0 / 2.0, &m2, &s2);
        lq_quantize_multiplier(2.0 / (1048576.0 * 1.5), &mo, &so);
        int32_t a = lq_scale((mp[oy][ox][c] - zp_in) * (1 << 20), m1, s1) + lq_scale((ap[oy][ox][c] - zp_in) * (1 << 20), m2, s2);
        ad[oy][ox][c] = std::min(127, std::max(-10, lq_scale(a, mo, so) - 10));
        // concat: (x - zp_in) * 1 / 0.5 + 3
        int32_t mc;
        int sc;
        lq_quantize_multiplier(2.0, &mc, &sc);
        cc[oy][ox][c] = std::min(127, std::max(-128, lq_scale(mp[oy][ox][c] - zp_in, mc, sc) + 3));
        cc[oy][ox][c + 3] = std::min(127, std::max(-128, lq_scale(ap[oy][ox][c] - zp_in, mc, sc) + 3));
        EXPECT_EQ(cc[oy][ox][c], std::min(127, std::max(-128, 2 * (mp[oy][ox][c] - zp_in) + 3)));  // exact: M = 2
      }
  (void)cc;
  // dense over the flattened add (scale 1.5, zp -10), weights scale 0.75, output scale 20, zp -1
  for (int o = 0; o < 6; o++) {
    int64_t acc = b[o];
    for (int i = 0; i < 12; i++) acc += (int64_t)(ad[i / 6][(i / 3) % 2][i % 3] + 10) * w[o * 12 + i];
    int8_t want = requant_ref(acc, 1.5 * 0.75 / 20.0, -1, -128);
    EXPECT_EQ(out[o], 20.0f * (float)(want + 1)) << o;
  }
}

// ---- the compiled graph (cpu/qprog.c) against the integer references and cnn-lite -------------------------------

bool vnni() { return __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni"); }

// The class scores of n inputs through the CPU backend's compiled graph of a cnn-lite file; false (with the
// status) when it was not compiled.
bool compiled_scores(const std::vector<unsigned char> &file, int n, const std::vector<float> &x, std::vector<float> &out,
                     cnn_status *st, int exact = 1) {
  Lite lite(file, 1);
  EXPECT_EQ(lite.st, CNN_LITE_OK) << lite.err;
  if (lite.st != CNN_LITE_OK) return false;
  cnntest::CpuBackend be;
  cnn_qprog *prog = nullptr;
  *st = cnn_op_qprog_create(be.b, lite.m, n, exact, &prog);
  if (*st != CNN_OK) return false;
  out.assign((size_t)n * cnn_lite_num_classes(lite.m), 0.0f);
  *st = cnn_op_qprog_run(be.b, prog, x.data(), out.data());
  cnn_op_qprog_destroy(be.b, prog);
  return *st == CNN_OK;
}

// Convolutions and dense layers in the compiled graph with exact requantization (oneDNN's int32 sums, cnn-lite's
// requantization): every output code equal to the exact int32 reference; with the default, fused one (oneDNN
// rescales in float and rounds to nearest even, cnn-lite in Q31 and half away from zero), within one of it. Inputs with and without a zero point (after a ReLU the u8 zero point is
// 0; folded into the bias without padding, oneDNN's source zero point with it), padding, stride, dilation, groups,
// ReLU's floor at a zero point other than -128, no activation. The `big` cases have sums above 2^24 (where one of
// oneDNN's kernels would round them through float), spread around the bias so that an output step is 1/32 to
// 1/128 of a sum's unit: a sum off by one changes codes; with a zero point and padding there they are refused.
TEST(CompiledInt8, ConvolutionsAndDenseEqualTheInt32ReferenceBitForBit) {
  if (!vnni()) GTEST_SKIP() << "no VNNI: quantized models run cnn-lite's path here";
  struct Case {
    int H, W, C, N, KH, KW, SH, SW, DH, DW, PT, PL, PB, PR, G, zp_in, zp_out, relu, dense, big;
  };
  const Case cases[] = {
      {7, 6, 4, 5, 3, 2, 2, 1, 1, 2, 1, 0, 1, 2, 1, -3, 5, 1, 0, 0},      // a zero point in, padding, ReLU's floor at 5
      {9, 9, 16, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, -128, -128, 1, 0, 0}, // after a ReLU: u8 zero point 0
      {8, 8, 8, 12, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 4, -128, 17, 0, 0, 0},   // groups, no activation
      {5, 5, 3, 7, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 1, 20, -50, 0, 0, 0},     // 1x1, a zero point in (folded)
      {6, 5, 8, 16, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, 9, -2, 1, 0, 0},      // unpadded, a zero point in (folded)
      {3, 4, 6, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, -128, 3, 1, 1, 0},     // dense after a ReLU
      {3, 4, 6, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 11, -7, 0, 1, 0},      // dense with a zero point in
      {9, 9, 64, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, -128, 0, 0, 0, 1},   // sums > 2^24, padded
      {6, 6, 64, 16, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0, 1, -100, 0, 0, 0, 1},   // sums > 2^24, a zero point in (folded)
      {3, 4, 64, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, -120, 0, 0, 1, 1},   // dense, sums > 2^24
      {6, 6, 64, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, -100, 0, 0, 0, 1},   // sums > 2^24, a zero point, padded: refused
  };
  std::mt19937 rng(23);
  int total = 0, big_codes = 0, fused_total = 0, fused_off = 0;
  for (const Case &k : cases) {
    SCOPED_TRACE("case " + std::to_string(&k - cases));
    int OH = 1, OW = 1, cg = k.C / k.G, ng = k.N / k.G;
    if (!k.dense) {
      OH = (k.H + k.PT + k.PB - (k.DH * (k.KH - 1) + 1)) / k.SH + 1;
      OW = (k.W + k.PL + k.PR - (k.DW * (k.KW - 1) + 1)) / k.SW + 1;
    }
    const int taps = k.dense ? k.H * k.W * k.C : k.KH * k.KW * cg;
    const float s_out = k.big ? 64.0f : 0.37f * (float)taps;
    std::vector<int8_t> w((size_t)k.N * taps);
    for (auto &v : w) v = (int8_t)(k.big ? std::uniform_int_distribution<int>(126, 127)(rng)
                                         : std::uniform_int_distribution<int>(-127, 127)(rng));
    std::vector<float> wscale(k.N);
    for (auto &v : wscale) v = std::uniform_real_distribution<float>(0.5f, 2.0f)(rng);
    std::vector<int32_t> bias(k.N);
    for (auto &v : bias) v = std::uniform_int_distribution<int>(-5000, 5000)(rng);
    if (k.big)  // minus the mean sum of a whole window: codes 126 or 127 less the zero point, weights 126 or 127
      for (auto &v : bias) v = (int32_t)-std::llround((126.5 - k.zp_in) * 126.5 * taps);
    char line[512];
    if (k.dense)
      snprintf(line, sizeof line, "flatten in=0 out=%d\ndense in=1 n=%d w=c.weight b=c.bias%s out=%d q=%.9g,%d\n",
               k.H * k.W * k.C, k.N, k.relu ? " act=relu" : "", k.N, (double)s_out, k.zp_out);
    else
      snprintf(line, sizeof line,
               "conv in=0 k=%d,%d s=%d,%d d=%d,%d g=%d pad=%d,%d,%d,%d n=%d w=c.weight b=c.bias%s out=%d,%d,%d "
               "q=%.9g,%d\nflatten in=1 out=%d\n",
               k.KH, k.KW, k.SH, k.SW, k.DH, k.DW, k.G, k.PT, k.PL, k.PB, k.PR, k.N, k.relu ? " act=relu" : "", OH, OW,
               k.N, (double)s_out, k.zp_out, OH * OW * k.N);
    std::vector<int64_t> wshape = k.dense ? std::vector<int64_t>{k.N, taps} : std::vector<int64_t>{k.N, k.KH, k.KW, cg};
    auto file = lite_file("int8", q_input(k.H, k.W, k.C, k.zp_in) + line,
                          {tensor("c.weight", CNN_I8, wshape, w), tensor("c.weight.scale", CNN_F32, {k.N}, wscale),
                           tensor("c.bias", CNN_I32, {k.N}, bias)});
    const int B = 3;
    std::vector<int32_t> code((size_t)B * k.H * k.W * k.C);
    for (auto &v : code) v = k.big ? std::uniform_int_distribution<int>(126, 127)(rng)
                                   : std::uniform_int_distribution<int>(-128, 127)(rng);
    std::vector<float> x(code.size());
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)(code[i] - k.zp_in);
    std::vector<float> got;
    cnn_status st;
    if (k.big && k.zp_in != -128 && k.PT + k.PL + k.PB + k.PR > 0 && !k.dense) {
      EXPECT_FALSE(compiled_scores(file, B, x, got, &st));
      EXPECT_EQ(st, CNN_ERR_UNSUPPORTED) << cnn_last_error();
      EXPECT_TRUE(has(cnn_last_error(), "zero point")) << cnn_last_error();
      continue;
    }
    for (int exact : {1, 0}) {
    if (!exact && k.big) continue;
    SCOPED_TRACE(exact ? "exact requantization" : "fused requantization");
    ASSERT_TRUE(compiled_scores(file, B, x, got, &st, exact)) << cnn_status_string(st) << ": " << cnn_last_error();
    ASSERT_EQ(got.size(), (size_t)B * OH * OW * k.N);
    for (int b = 0; b < B; b++)
      for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++)
          for (int o = 0; o < k.N; o++) {
            int64_t acc = bias[o];
            if (k.dense) {
              for (int t = 0; t < taps; t++) acc += ((int64_t)code[(size_t)b * taps + t] - k.zp_in) * w[(size_t)o * taps + t];
            } else {
              for (int ky = 0; ky < k.KH; ky++)
                for (int kx = 0; kx < k.KW; kx++) {
                  int iy = oy * k.SH - k.PT + ky * k.DH, ix = ox * k.SW - k.PL + kx * k.DW;
                  if (iy < 0 || iy >= k.H || ix < 0 || ix >= k.W) continue;  // padding: the real 0
                  for (int c = 0; c < cg; c++)
                    acc += ((int64_t)code[(((size_t)b * k.H + iy) * k.W + ix) * k.C + (o / ng) * cg + c] - k.zp_in) *
                           w[(((size_t)o * k.KH + ky) * k.KW + kx) * cg + c];
                }
            }
            int want = requant_ref(acc, 1.0 * wscale[o] / s_out, k.zp_out, k.relu ? k.zp_out : -128);
            float g = got[(((size_t)b * OH + oy) * OW + ox) * k.N + o];
            int q = (int)std::lround(g / s_out) + k.zp_out;  // back to the code
            ASSERT_FLOAT_EQ(g, s_out * (float)(q - k.zp_out));
            if (exact) {
              ASSERT_EQ(q, want) << b << " " << oy << " " << ox << " " << o;
              total++;
              big_codes += k.big && acc - bias[o] > (1 << 24) && want > -128 && want < 127;
            } else {  // oneDNN rescales in float and rounds to nearest even: one step at most
              ASSERT_LE(std::abs(q - want), 1) << b << " " << oy << " " << ox << " " << o;
              fused_total++;
              fused_off += q != want;
            }
          }
    }
  }
  printf("compiled int8, exact: %d codes equal to the int32 reference, %d unsaturated from sums above 2^24; "
         "fused: %d of %d one from it\n", total, big_codes, fused_off, fused_total);
  EXPECT_GT(big_codes, 1000) << "too few codes to see a sum off by one";
  EXPECT_LE(fused_off * 100, fused_total) << "more than 1% of the fused codes off by one: not rounding alone";
}

// The shared requantization kernel (cpu/qconv.c: qconv_s32's and the exact compiled graph's), its AVX-512 and its
// portable C versions, against cnn-lite's arithmetic (lq_scale) element by element: sums at the int32 extremes,
// offsets that saturate the sum, multipliers of 0, about 2^-31 (a shift of 62) to 3 (a shift above 0), channel counts
// that are and are not multiples of 8, int8 and u8 codes, ReLU's floor.
TEST(CompiledInt8, RequantizationKernelEqualsLqScaleBitForBit) {
  std::mt19937 rng(77);
  const double Ms[] = {1e-12, 7e-10, 3e-10, 0.0004, 0.0173, 0.49999, 0.75, 1.0, 2.9};  // 0, shifts -30 and -31, ...
  int checked = 0;
  for (int oc : {1, 7, 8, 13, 32}) {
    for (int u8 : {0, 1}) {
      SCOPED_TRACE("oc " + std::to_string(oc) + (u8 ? " u8" : " int8"));
      std::vector<int32_t> mult(oc), shift(oc);
      for (int c = 0; c < oc; c++) {
        double M = Ms[std::uniform_int_distribution<int>(0, 8)(rng)] * std::uniform_real_distribution<double>(0.9, 1.1)(rng);
        int sh;
        lq_quantize_multiplier(M, &mult[c], &sh);
        shift[c] = sh;
      }
      cnn_cpu_requant r;
      ASSERT_EQ(cnn_cpu_requant_init(&r, oc, mult.data(), shift.data(), "test"), CNN_OK);
      std::vector<int64_t> off(oc);
      for (auto &v : off) {
        int kind = std::uniform_int_distribution<int>(0, 3)(rng);
        v = kind == 0 ? 0 : kind == 1 ? std::uniform_int_distribution<int64_t>(-100000, 100000)(rng)
                                      : std::uniform_int_distribution<int64_t>(-3000000000LL, 3000000000LL)(rng);
      }
      for (int c = 0; c < oc; c++) r.k[c] = off[c];
      int32_t zp = std::uniform_int_distribution<int>(-128, 127)(rng), lo = std::uniform_int_distribution<int>(0, 1)(rng) ? zp : -128;
      r.y_zp = zp + (u8 ? 128 : 0), r.y_min = lo + (u8 ? 128 : 0), r.y_max = 127 + (u8 ? 128 : 0);
      const int64_t pixels = 100;  // a chunk of 64 rows and a rest
      std::vector<int32_t> sum((size_t)pixels * oc);
      for (auto &v : sum) {
        int kind = std::uniform_int_distribution<int>(0, 4)(rng);
        v = kind == 0 ? INT32_MAX : kind == 1 ? INT32_MIN
                      : kind == 2 ? std::uniform_int_distribution<int32_t>(-1000, 1000)(rng)
                                  : std::uniform_int_distribution<int32_t>(INT32_MIN, INT32_MAX)(rng);
      }
      std::vector<uint8_t> fast((size_t)pixels * oc), plain((size_t)pixels * oc);
      cnn_cpu_requant_rows(&r, sum.data(), fast.data(), pixels);
      cnn_cpu_requant_rows_c(&r, sum.data(), plain.data(), pixels);
      for (int64_t p = 0; p < pixels; p++)
        for (int c = 0; c < oc; c++) {
          uint8_t want = (uint8_t)(requant_code((int64_t)sum[p * oc + c] + off[c], mult[c], shift[c], zp, lo) + (u8 ? 128 : 0));
          ASSERT_EQ(fast[p * oc + c], want) << p << " " << c;
          ASSERT_EQ(plain[p * oc + c], want) << p << " " << c;
          checked++;
        }
      cnn_cpu_requant_free(&r);
    }
  }
  EXPECT_EQ(checked, 2 * 100 * (1 + 7 + 8 + 13 + 32));
}

// The AVX-512 kernel rounds in float and recomputes in integers where float might not decide: products that are
// exactly a half, a little above or below one (by less than float's error and by a little more), sums and offsets at
// and beyond 2^30 (whose int32 sum would overflow), at realistic multipliers (1e-5 to 0.3; and powers of two, whose products can be exactly a half)
// and channel counts with and without a partial group of 16; every output against lq_scale, and the portable kernel.
TEST(CompiledInt8, RequantizationKernelNearHalvesEqualsLqScale) {
  std::mt19937 rng(78);
  int checked = 0, halves = 0, near = 0;
  for (int oc : {16, 21, 48}) {
    std::vector<int32_t> mult(oc), shift(oc);
    std::vector<double> M(oc);
    for (int c = 0; c < oc; c++) {
      int sh;
      double m = c % 3 == 0 ? std::ldexp(1.0, -std::uniform_int_distribution<int>(2, 16)(rng))
                            : std::pow(10.0, std::uniform_real_distribution<double>(-5.0, -0.5)(rng));
      lq_quantize_multiplier(m, &mult[c], &sh);
      shift[c] = sh;
      M[c] = std::ldexp((double)mult[c], sh - 31);  // exactly what lq_scale multiplies by
    }
    cnn_cpu_requant r;
    ASSERT_EQ(cnn_cpu_requant_init(&r, oc, mult.data(), shift.data(), "test"), CNN_OK);
    std::vector<int64_t> off(oc);
    for (int c = 0; c < oc; c++) {
      // beyond 2^30 (a whole group in integers) in the first group only; +-2^30 (with a sum of 2^30 the int32 add
      // would overflow) and +-(2^30 - 1) (the float path, no overflow) in the groups after it
      const int64_t sign = c % 2 ? 1 : -1;
      off[c] = c < 8 && c % 7 == 6 ? (int64_t)3 << 30
               : c >= 16 && c % 7 == 5 ? sign * ((int64_t)1 << 30)
               : c >= 16 && c % 7 == 4 ? sign * (((int64_t)1 << 30) - 1)
                                       : std::uniform_int_distribution<int64_t>(-50000, 50000)(rng);
      r.k[c] = off[c];
    }
    int32_t zp = std::uniform_int_distribution<int>(-128, 127)(rng);
    r.y_zp = zp + 128, r.y_min = 0, r.y_max = 255;
    const int64_t pixels = 300;
    std::vector<int32_t> sum((size_t)pixels * oc);
    for (int64_t p = 0; p < pixels; p++)
      for (int c = 0; c < oc; c++) {
        // a target product near j + 1/2 for a code j within the output's range, and the sum whose product is nearest
        double j = std::uniform_int_distribution<int>(-128 - zp, 126 - zp)(rng);
        int kind = std::uniform_int_distribution<int>(0, 6)(rng);
        double target = j + 0.5 + (kind == 0 ? 0.0 : kind == 1 ? 1e-6 : kind == 2 ? -1e-6 : kind == 3 ? 3e-4 : -3e-4);
        int64_t s = std::llround(target / M[c]) - off[c];
        if (kind == 5) s = std::uniform_int_distribution<int32_t>(INT32_MIN, INT32_MAX)(rng);
        if (kind == 6) s = (p % 2 ? 1 : -1) * (((int64_t)1 << 30) - (p / 2) % 2);  // +-2^30 and +-(2^30 - 1)
        s = std::min<int64_t>(INT32_MAX, std::max<int64_t>(INT32_MIN, s));
        sum[(size_t)p * oc + c] = (int32_t)s;
        int64_t a = std::min<int64_t>(INT32_MAX, std::max<int64_t>(INT32_MIN, s + off[c]));
        double frac = (double)a * M[c] - std::floor((double)a * M[c]);  // exact where M is a power of two
        halves += frac == 0.5;
        near += std::fabs(frac - 0.5) < 0x1p-12;
      }
    std::vector<uint8_t> fast((size_t)pixels * oc), plain((size_t)pixels * oc);
    cnn_cpu_requant_rows(&r, sum.data(), fast.data(), pixels);
    cnn_cpu_requant_rows_c(&r, sum.data(), plain.data(), pixels);
    for (int64_t p = 0; p < pixels; p++)
      for (int c = 0; c < oc; c++) {
        const uint8_t want = (uint8_t)(requant_code((int64_t)sum[p * oc + c] + off[c], mult[c], shift[c], zp, -128) + 128);
        ASSERT_EQ(fast[p * oc + c], want) << "oc " << oc << " pixel " << p << " channel " << c;
        ASSERT_EQ(plain[p * oc + c], want) << "oc " << oc << " pixel " << p << " channel " << c;
        checked++;
      }
    cnn_cpu_requant_free(&r);
  }
  EXPECT_EQ(checked, 300 * (16 + 21 + 48));
  EXPECT_GT(halves, 1000) << "too few products exactly a half";
  EXPECT_GT(near, 5000) << "too few products near a half: the test would not exercise the integer path";
}

// What the compiled graph computes itself (pooling, the add's table, concat, ReLU, the input's quantization) is
// cnn-lite's integer arithmetic on u8 codes: equal to cnn-lite's outputs exactly, at batch 1 and 5.
TEST(CompiledInt8, PoolingAddConcatAndReluEqualCnnLiteExactly) {
  if (!vnni()) GTEST_SKIP() << "no VNNI: quantized models run cnn-lite's path here";
  const std::string g = "input h=6 w=6 c=3 q=0.25,7\n"                   // 0: scale 0.25: fractional inputs round
                        "maxpool in=0 k=2,2 s=2,2 pad=0,0,0,0 out=3,3,3\n" // 1
                        "avgpool in=0 k=3,3 s=2,2 pad=1,1,1,1 out=3,3,3\n" // 2: padding excluded, counts 4, 6, 9
                        "add in=1,2 act=relu out=3,3,3 q=0.375,-10\n"      // 3
                        "act in=2 f=relu out=3,3,3\n"                      // 4
                        "concat in=1,2,3,4 out=3,3,12 q=0.5,3\n"          // 5
                        "avgpool in=5 k=2,2 s=1,1 pad=0,0,0,0 out=2,2,12\n" // 6: count 4, ties
                        "gap in=6 out=12\n"                               // 7
                        "concat in=7,7 out=24 q=0.3,-1\n"                 // 8
                        "flatten in=8 out=24\n";
  auto file = lite_file("int8", g, {});
  for (int n : {1, 5}) {
    SCOPED_TRACE("batch " + std::to_string(n));
    std::mt19937 rng(40 + n);
    std::vector<float> x((size_t)n * 6 * 6 * 3);
    for (auto &v : x) v = std::uniform_real_distribution<float>(-40.0f, 40.0f)(rng);
    Lite lite(file, n);
    ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
    std::vector<float> want((size_t)n * 24), got;
    ASSERT_EQ(cnn_lite_logits(lite.m, x.data(), n, want.data(), lite.err, sizeof lite.err), CNN_LITE_OK);
    cnn_status st;
    ASSERT_TRUE(compiled_scores(file, n, x, got, &st)) << cnn_last_error();
    for (size_t i = 0; i < want.size(); i++) ASSERT_EQ(got[i], want[i]) << i;
  }
}

// The compiled graph's own kernels against the integer arithmetic, exhaustively: the add of every pair of u8 codes
// against TFLite's scheme computed here from the ops' scales, for several scales, zero points and ReLU; the input's
// quantization against lq_quantize on ties, extremes, infinities and NaN.
// The exact graph max-pools a convolution's int32 sums before requantizing them where the pooling is the sum's only
// reader and unpadded (overlapping 3x3 windows at stride 2; 2x2 after a 1x1 convolution without ReLU); it must not
// where the convolution has a second reader (an add) or the pooling is padded. Each way bit for bit cnn-lite's.
TEST(CompiledInt8, MaxPoolingOfTheSumsBeforeRequantizingEqualsCnnLite) {
  if (!vnni()) GTEST_SKIP() << "no VNNI: quantized models run cnn-lite's path here";
  const float s1 = 350.0f, s2 = 1100.0f * s1, s5 = 1.5f * s2, s6 = 365.0f * s5;  // codes of about +-100
  char g[1024];
  snprintf(g, sizeof g,
           "conv in=0 k=3,3 s=1,1 d=1,1 g=1 pad=1,1,1,1 n=16 w=a.weight b=a.bias act=relu out=9,9,16 q=%.9g,-128\n"
           "maxpool in=1 k=3,3 s=2,2 pad=0,0,0,0 out=4,4,16\n"                      // 2: fused, overlapping
           "conv in=2 k=3,3 s=1,1 d=1,1 g=1 pad=1,1,1,1 n=16 w=b.weight b=b.bias out=4,4,16 q=%.9g,3\n"  // 3: 2 readers
           "maxpool in=3 k=2,2 s=1,1 pad=0,0,1,1 out=4,4,16\n"                      // 4: padded, not fused
           "add in=3,4 out=4,4,16 q=%.9g,-5\n"                                       // 5
           "conv in=5 k=1,1 s=1,1 d=1,1 g=1 pad=0,0,0,0 n=8 w=c.weight b=c.bias out=4,4,8 q=%.9g,9\n"  // 6
           "maxpool in=6 k=2,2 s=2,2 pad=0,0,0,0 out=2,2,8\n"                       // 7: fused, no ReLU
           "flatten in=7 out=32\n",
           (double)s1, (double)s2, (double)s5, (double)s6);
  std::mt19937 rng(81);
  std::vector<Tensor> ts;
  for (auto [name, n, taps] : {std::make_tuple("a", 16, 27), std::make_tuple("b", 16, 144), std::make_tuple("c", 8, 16)}) {
    std::vector<int8_t> w((size_t)n * taps);
    for (auto &v : w) v = (int8_t)std::uniform_int_distribution<int>(-127, 127)(rng);
    std::vector<float> ws(n);
    for (auto &v : ws) v = std::uniform_real_distribution<float>(0.5f, 2.0f)(rng);
    std::vector<int32_t> b(n);
    for (auto &v : b) v = std::uniform_int_distribution<int>(-3000, 3000)(rng);
    int k = taps == 16 ? 1 : 3;
    std::string s = name;
    ts.push_back(tensor(s + ".weight", CNN_I8, {n, k, k, taps / (k * k)}, w));
    ts.push_back(tensor(s + ".weight.scale", CNN_F32, {n}, ws));
    ts.push_back(tensor(s + ".bias", CNN_I32, {n}, b));
  }
  auto file = lite_file("int8", q_input(9, 9, 3, 5) + g, ts);
  for (int n : {1, 5}) {
    SCOPED_TRACE("batch " + std::to_string(n));
    std::vector<float> x((size_t)n * 9 * 9 * 3);
    for (auto &v : x) v = (float)std::uniform_int_distribution<int>(-133, 122)(rng);
    Lite lite(file, n);
    ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
    std::vector<float> want((size_t)n * 32), got;
    ASSERT_EQ(cnn_lite_logits(lite.m, x.data(), n, want.data(), lite.err, sizeof lite.err), CNN_LITE_OK);
    std::set<float> distinct(want.begin(), want.end());
    EXPECT_GT(distinct.size(), 10u) << "the outputs hardly vary: a weak comparison";
    cnn_status st;
    ASSERT_TRUE(compiled_scores(file, n, x, got, &st)) << cnn_last_error();
    for (size_t i = 0; i < want.size(); i++) ASSERT_EQ(got[i], want[i]) << i;
  }
}

TEST(CompiledInt8, AddAndQuantizationEqualTheIntegerArithmeticBitForBit) {
  struct Case {
    float sa, sb, so;
    int za, zb, zo;
    bool relu;
  };
  const Case cases[] = {{0.1f, 0.1f, 0.2f, -3, 4, 0, false},
                        {0.05f, 0.31f, 0.37f, -128, 17, -128, true},
                        {1.7f, 0.02f, 0.9f, 100, -100, 5, true},
                        {0.013f, 0.5f, 0.011f, 0, 0, -20, false}};
  std::vector<uint8_t> a(65536), b(65536), got(65536);
  for (int i = 0; i < 65536; i++) a[i] = (uint8_t)(i >> 8), b[i] = (uint8_t)i;
  for (const Case &k : cases) {
    SCOPED_TRACE(std::to_string(k.sa) + " " + std::to_string(k.sb) + " " + std::to_string(k.so));
    char g[512];
    snprintf(g, sizeof g,
             "input h=1 w=1 c=2 q=1,0\nact in=0 f=relu out=1,1,2\n"
             "concat in=0,1 out=1,1,4 q=%.9g,%d\nconcat in=0,1 out=1,1,4 q=%.9g,%d\n"
             "add in=2,3%s out=1,1,4 q=%.9g,%d\nflatten in=4 out=4\n",
             (double)k.sa, k.za, (double)k.sb, k.zb, k.relu ? " act=relu" : "", (double)k.so, k.zo);
    Lite lite(lite_file("int8", g, {}), 1);
    ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
    cnn_lite_op_info add, in_a, in_b;
    cnn_lite_op(lite.m, 4, &add);
    cnn_lite_op(lite.m, 2, &in_a);
    cnn_lite_op(lite.m, 3, &in_b);
    ASSERT_EQ(add.kind, CNN_LITE_OP_ADD);
    ASSERT_EQ(in_a.zp, k.za);
    auto kk = std::make_unique<cnn_cpu_qadd_k>();
    cnn_cpu_qadd_init(kk.get(), &add);
    cnn_cpu_qadd(kk.get(), a.data(), b.data(), got.data(), 65536);
    // against the integer arithmetic itself (add_code's, from the ops' scales), not cnn-lite's table
    int32_t ma, mb, mo;
    int sa, sb, so;
    double twice = 2.0 * std::max(k.sa, k.sb);
    lq_quantize_multiplier(k.sa / twice, &ma, &sa);
    lq_quantize_multiplier(k.sb / twice, &mb, &sb);
    lq_quantize_multiplier(twice / (1048576.0 * k.so), &mo, &so);
    for (int i = 0; i < 65536; i++) {
      int32_t ca = (int)a[i] - 128, cb = (int)b[i] - 128;
      int32_t v = lq_scale((ca - k.za) * (1 << 20), ma, sa) + lq_scale((cb - k.zb) * (1 << 20), mb, sb);
      int want = std::min(127, std::max(k.relu ? std::max(k.zo, -128) : -128, lq_scale(v, mo, so) + k.zo)) + 128;
      ASSERT_EQ(got[i], want) << "codes " << ca << " + " << cb;
    }
  }
  std::vector<float> x = {0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 0.49999997f, -0.49999997f, 126.5f, -128.5f,
                          8388607.5f, 8388608.0f, 1e30f, -1e30f, INFINITY, -INFINITY, NAN, 1e-40f, -0.0f, 0.0f};
  std::mt19937 rng(3);
  for (int i = 0; i < 5000; i++) x.push_back(std::uniform_real_distribution<float>(-300.0f, 300.0f)(rng));
  for (float scale : {1.0f, 0.5f, 0.1f, 3.0f, 1e-3f})
    for (int zp : {-128, -7, 0, 31, 127}) {
      std::vector<uint8_t> q(x.size());
      cnn_cpu_quantize_u8(x.data(), q.data(), (int64_t)x.size(), scale, zp);
      for (size_t i = 0; i < x.size(); i++)
        ASSERT_EQ(q[i], (uint8_t)(lq_quantize(x[i], scale, zp) + 128)) << x[i] << " / " << scale << " + " << zp;
    }
}

// A float model's graph through oneDNN's float kernels: within 1e-5 of cnn-lite's float C kernels, every fused
// activation included.
TEST(CompiledFloat, ConvolutionDenseAndActivationsMatchCnnLite) {
  std::mt19937 rng(8);
  auto rnd = [&](size_t count, float a) {
    std::vector<float> v(count);
    for (auto &e : v) e = std::uniform_real_distribution<float>(-a, a)(rng);
    return v;
  };
  for (const char *act : {"relu", "leaky_relu:0.2", "elu", "sigmoid", "tanh", "gelu", "silu", "none"}) {
    SCOPED_TRACE(act);
    std::string a = std::string(" act=") + act;
    std::string g = "input h=6 w=5 c=3\n"
                    "conv in=0 k=3,3 s=1,1 d=1,1 g=1 pad=1,1,1,1 n=4 w=c.weight b=c.bias" + a + " out=6,5,4\n"
                    "maxpool in=1 k=2,2 s=2,2 pad=0,0,0,0 out=3,2,4\n"
                    "scale in=2 w=s.w b=s.b out=3,2,4\n"
                    "add in=2,3 act=relu out=3,2,4\n"
                    "concat in=3,4 out=3,2,8\n"
                    "act in=5 f=tanh out=3,2,8\n"
                    "gap in=6 out=8\n"
                    "dense in=7 n=3 w=d.weight b=d.bias" + a + " out=3\n"
                    "softmax in=8 out=3\n";
    auto file = lite_file("float", g,
                          {tensor("c.weight", CNN_F32, {4, 3, 3, 3}, rnd(108, 0.5f)), tensor("c.bias", CNN_F32, {4}, rnd(4, 0.2f)),
                           tensor("s.w", CNN_F32, {4}, rnd(4, 2.0f)), tensor("s.b", CNN_F32, {4}, rnd(4, 1.0f)),
                           tensor("d.weight", CNN_F32, {3, 8}, rnd(24, 1.0f)), tensor("d.bias", CNN_F32, {3}, rnd(3, 0.5f))});
    const int n = 4;
    auto x = rnd((size_t)n * 90, 1.0f);
    Lite lite(file, n);
    ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
    std::vector<float> want(n * 3), got;
    ASSERT_EQ(cnn_lite_logits(lite.m, x.data(), n, want.data(), lite.err, sizeof lite.err), CNN_LITE_OK);
    cnn_status st;
    ASSERT_TRUE(compiled_scores(file, n, x, got, &st)) << cnn_last_error();
    for (int i = 0; i < n * 3; i++) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
  }
}

// ---- calibration --------------------------------------------------------------------------------------------------

TEST(Calibration, EachMethodOnKnownDistributions) {
  std::mt19937 rng(1);
  std::vector<float> u(400000);
  for (auto &v : u) v = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
  double lo, hi;
  ASSERT_EQ(cnn_calib_range(u.data(), u.size(), CNN_CALIB_MINMAX, 0, &lo, &hi), CNN_OK);
  EXPECT_NEAR(lo, 0.0, 1e-4);
  EXPECT_NEAR(hi, 1.0, 1e-4);
  ASSERT_EQ(cnn_calib_range(u.data(), u.size(), CNN_CALIB_PERCENTILE, 99.0, &lo, &hi), CNN_OK);
  EXPECT_NEAR(lo, 0.01, 2e-3);
  EXPECT_NEAR(hi, 0.99, 2e-3);
  std::vector<float> n(400000);
  for (auto &v : n) v = std::normal_distribution<float>(0.0f, 1.0f)(rng);
  ASSERT_EQ(cnn_calib_range(n.data(), n.size(), CNN_CALIB_PERCENTILE, 99.9, &lo, &hi), CNN_OK);
  EXPECT_NEAR(lo, -3.09, 0.05);
  EXPECT_NEAR(hi, 3.09, 0.05);
  // entropy: a few huge outliers among values in [0, 1] are clipped away; min-max keeps them
  std::vector<float> o = u;
  for (int i = 0; i < 20; i++) o.push_back(30.0f);
  ASSERT_EQ(cnn_calib_range(o.data(), o.size(), CNN_CALIB_MINMAX, 0, &lo, &hi), CNN_OK);
  EXPECT_EQ(hi, 30.0);
  ASSERT_EQ(cnn_calib_range(o.data(), o.size(), CNN_CALIB_ENTROPY, 0, &lo, &hi), CNN_OK);
  EXPECT_EQ(lo, 0.0);
  EXPECT_GT(hi, 0.9);
  EXPECT_LT(hi, 1.5);
  // symmetric data keep a symmetric range
  ASSERT_EQ(cnn_calib_range(n.data(), n.size(), CNN_CALIB_ENTROPY, 0, &lo, &hi), CNN_OK);
  EXPECT_NEAR(-lo, hi, 0.05 * hi);  // one threshold both ways (within the data's own range)
  EXPECT_GT(hi, 1.5);
  EXPECT_LT(hi, 5.0);
}

// ---- whole models: lowering, folding, modes, cnn-lite against libcnn ------------------------------------------------

const char kBnNet[] =
    "input 10 10 2\n"
    "conv 6 3 padding=same bias=no\n"
    "batchnorm relu\n"
    "maxpool 2\n"
    "name s\n"
    "conv 6 3 padding=1\n"
    "batchnorm\n"
    "add s relu\n"
    "conv 8 1\n"
    "globalavgpool\n"
    "dropout 0.5\n"
    "dense 4 softmax\n";

struct Model {
  cnntest::CpuBackend be;
  cnn_net *net = nullptr;
  Model(const char *text, uint64_t seed) {
    EXPECT_EQ(cnn_net_from_text(text, "test", be.b, seed, &net), CNN_OK) << cnn_last_error();
  }
  ~Model() { cnn_net_destroy(net); }
};

// Gives every batchnorm running statistics and affine parameters far from the identity.
void perturb_batchnorms(cnn_net *net, uint64_t seed) {
  std::mt19937 rng((unsigned)seed);
  for (int i = 0; i < net->nlayers; i++) {
    cnn_layer *l = net->layers[i];
    if (l->ops != &cnn_batchnorm_layer_ops) continue;
    int64_t c = cnn_tensor_numel(l->params[0].value);
    std::vector<float> g(c), b(c), m(c), v(c);
    for (int64_t k = 0; k < c; k++) {
      g[k] = std::uniform_real_distribution<float>(0.5f, 2.0f)(rng);
      b[k] = std::uniform_real_distribution<float>(-0.5f, 0.5f)(rng);
      m[k] = std::uniform_real_distribution<float>(-0.3f, 0.3f)(rng);
      v[k] = std::uniform_real_distribution<float>(0.2f, 3.0f)(rng);
    }
    ASSERT_EQ(cnn_tensor_write(l->params[0].value, g.data(), c * 4), CNN_OK);
    ASSERT_EQ(cnn_tensor_write(l->params[1].value, b.data(), c * 4), CNN_OK);
    ASSERT_EQ(cnn_tensor_write(l->state[0].value, m.data(), c * 4), CNN_OK);
    ASSERT_EQ(cnn_tensor_write(l->state[1].value, v.data(), c * 4), CNN_OK);
  }
}

std::vector<float> images(int n, int per, uint64_t seed) {
  std::mt19937 rng((unsigned)seed);
  std::vector<float> x((size_t)n * per);
  for (auto &v : x) v = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
  return x;
}

std::vector<unsigned char> read_bytes(const std::string &path) {
  std::string s = cnntest::read_file(path);
  return std::vector<unsigned char>(s.begin(), s.end());
}

// samples/models/<name>.cnn (weights from net_seed, batchnorms perturbed from bn_seed) quantized to int8, calibrated
// on calib_n random images: the file's path in tmp (check HasFailure()).
std::string quantize_sample(const char *name, const TempDir &tmp, uint64_t net_seed, uint64_t bn_seed, int calib_n,
                            uint64_t calib_seed) {
  std::string text = cnntest::read_file(std::string(CNN_SOURCE_DIR) + "/samples/models/" + name + ".cnn");
  Model m(text.c_str(), net_seed);
  if (!m.net) return "";
  perturb_batchnorms(m.net, bn_seed);
  std::string path = tmp.file("q.safetensors");
  auto calib = images(calib_n, 28 * 28, calib_seed);
  cnn_quant_config qc;
  cnn_quant_config_defaults(&qc);
  qc.mode = CNN_QUANT_INT8;
  qc.calib_images = calib.data();
  qc.calib_n = calib_n;
  EXPECT_EQ(cnn_quantize(m.net, &qc, path.c_str()), CNN_OK) << cnn_last_error();
  return path;
}

TEST(Quantize, FoldedFloatModelMatchesTheNetworkWithin1e5) {
  Model m(kBnNet, 3);
  perturb_batchnorms(m.net, 9);
  const float mean[] = {0.4f, 0.6f}, sd[] = {0.2f, 0.3f};
  ASSERT_EQ(cnn_net_set_normalization(m.net, 2, mean, sd), CNN_OK);
  TempDir tmp;
  std::string path = tmp.file("f.safetensors");
  cnn_quant_config qc;
  cnn_quant_config_defaults(&qc);
  qc.mode = CNN_QUANT_FLOAT;
  ASSERT_EQ(cnn_quantize(m.net, &qc, path.c_str()), CNN_OK) << cnn_last_error();
  // the lowering folded both batchnorms and dropped the dropout
  std::string file = cnntest::read_file(path);
  EXPECT_FALSE(has(file, "scale in=")) << "a batchnorm was not folded";
  EXPECT_TRUE(has(file, "\\ndense in=")) << "the dropout is gone: the dense reads the global pool";
  const int n = 16;
  auto x = images(n, 200, 4);
  std::vector<float> want(n * 4), got(n * 4);
  ASSERT_EQ(cnn_net_predict(m.net, x.data(), n, want.data()), CNN_OK);
  Lite lite(read_bytes(path), n);
  ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
  ASSERT_EQ(cnn_lite_predict(lite.m, x.data(), n, got.data(), lite.err, sizeof lite.err), CNN_LITE_OK);
  for (int i = 0; i < n * 4; i++) EXPECT_NEAR(got[i], want[i], 1e-5) << i;
  float mm[2], ss[2];
  ASSERT_EQ(cnn_lite_normalization(lite.m, mm, ss), 1);
  EXPECT_EQ(mm[1], 0.6f);
}

TEST(Quantize, EveryModeRunsInLibcnnAndCnnLiteAlike) {
  Model m(kBnNet, 5);
  perturb_batchnorms(m.net, 2);
  const char *names[] = {"a", "b", "c", "d"};
  ASSERT_EQ(cnn_net_set_class_names(m.net, 4, names), CNN_OK);
  TempDir tmp;
  auto calib = images(300, 200, 8);
  auto x = images(40, 200, 9);
  std::vector<float> ref(40 * 4);
  ASSERT_EQ(cnn_net_predict(m.net, x.data(), 40, ref.data()), CNN_OK);
  for (cnn_quant_mode mode : {CNN_QUANT_INT8, CNN_QUANT_DYNAMIC, CNN_QUANT_FP16, CNN_QUANT_FLOAT}) {
    SCOPED_TRACE(cnn_quant_mode_name(mode));
    std::string path = tmp.file(std::string(cnn_quant_mode_name(mode)) + ".safetensors");
    cnn_quant_config qc;
    cnn_quant_config_defaults(&qc);
    qc.mode = mode;
    qc.calib_images = calib.data();
    qc.calib_n = 300;
    ASSERT_EQ(cnn_quantize(m.net, &qc, path.c_str()), CNN_OK) << cnn_last_error();
    // libcnn loads it as any model: same input, classes and names
    cnntest::CpuBackend be;
    cnn_net *q = nullptr;
    ASSERT_EQ(cnn_net_load(path.c_str(), be.b, &q), CNN_OK) << cnn_last_error();
    EXPECT_TRUE(cnn_net_is_quantized(q));
    EXPECT_STREQ(cnn_net_quant_mode(q), cnn_quant_mode_name(mode));
    EXPECT_EQ(cnn_net_num_outputs(q), 4);
    EXPECT_STREQ(cnn_net_class_name(q, 2), "c");
    std::vector<float> lib(40 * 4), lite_probs(40 * 4), lib_scores(40 * 4), exact(40 * 4), exact_scores(40 * 4);
    cnn_net_quant_set_exact_requant(q, 0);  // oneDNN's fused requantization first
    ASSERT_EQ(cnn_net_predict(q, x.data(), 40, lib.data()), CNN_OK) << cnn_last_error();
    ASSERT_EQ(cnn_tensor_read(q->acts[0], lib_scores.data(), lib_scores.size() * sizeof(float)), CNN_OK);
    bool compiled = cnn_net_quant_ran_compiled(q);
    EXPECT_TRUE(compiled || (mode == CNN_QUANT_INT8 && !vnni())) << "the model was not compiled";
    // the compiled graph with cnn-lite's requantization
    std::vector<float> exact_rq(40 * 4), exact_rq_scores(40 * 4);
    cnn_net_quant_set_exact_requant(q, 1);
    ASSERT_EQ(cnn_net_predict(q, x.data(), 40, exact_rq.data()), CNN_OK) << cnn_last_error();
    EXPECT_EQ(cnn_net_quant_ran_compiled(q), compiled);
    ASSERT_EQ(cnn_tensor_read(q->acts[0], exact_rq_scores.data(), exact_rq_scores.size() * sizeof(float)), CNN_OK);
    // cnn-lite's own path in libcnn (its int8 sums from oneDNN, exact)
    cnn_net_quant_set_compiled(q, 0);
    ASSERT_EQ(cnn_net_predict(q, x.data(), 40, exact.data()), CNN_OK) << cnn_last_error();
    EXPECT_FALSE(cnn_net_quant_ran_compiled(q));
    ASSERT_EQ(cnn_tensor_read(q->acts[0], exact_scores.data(), exact_scores.size() * sizeof(float)), CNN_OK);
    // training or saving it is refused by name
    EXPECT_EQ(cnn_net_save(q, tmp.file("again.safetensors").c_str()), CNN_ERR_UNSUPPORTED);
    EXPECT_TRUE(has(cnn_last_error(), "written by cnn quantize")) << cnn_last_error();
    cnn_net_destroy(q);
    // cnn-lite alone gives the same probabilities as libcnn's exact path: the same code, the same integers
    Lite lite(read_bytes(path), 40);
    ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
    EXPECT_STREQ(cnn_lite_mode(lite.m), cnn_quant_mode_name(mode));
    EXPECT_STREQ(cnn_lite_class_name(lite.m, 3), "d");
    std::vector<float> lite_scores(40 * 4);
    ASSERT_EQ(cnn_lite_logits(lite.m, x.data(), 40, lite_scores.data(), lite.err, sizeof lite.err), CNN_LITE_OK);
    ASSERT_EQ(cnn_lite_predict(lite.m, x.data(), 40, lite_probs.data(), lite.err, sizeof lite.err), CNN_LITE_OK);
    for (int i = 0; i < 40 * 4; i++) ASSERT_NEAR(lite_probs[i], exact[i], 1e-6) << i;
    if (mode == CNN_QUANT_INT8) {
      for (int i = 0; i < 40 * 4; i++) ASSERT_EQ(lite_scores[i], exact_scores[i]) << i;
    }
    // the compiled path (cpu/qprog.c): int8 scores within one step of the output's scale fused, equal to cnn-lite's
    // bit for bit with its requantization (the default); float scores within 1e-5 (oneDNN's float kernels sum in
    // another order) either way
    cnn_lite_op_info last;
    cnn_lite_op(lite.m, cnn_lite_num_ops(lite.m) - 1, &last);
    if (last.kind == CNN_LITE_OP_SOFTMAX) cnn_lite_op(lite.m, last.in[0], &last);
    double step = mode == CNN_QUANT_INT8 ? last.scale * 1.0001 : 1e-5;
    int off = 0;
    for (int i = 0; i < 40 * 4; i++) {
      ASSERT_LE(std::fabs(lib_scores[i] - lite_scores[i]), step) << i;
      off += lib_scores[i] != lite_scores[i];
      if (mode == CNN_QUANT_INT8) ASSERT_EQ(exact_rq_scores[i], lite_scores[i]) << i;
      else ASSERT_LE(std::fabs(exact_rq_scores[i] - lite_scores[i]), 1e-5) << i;
    }
    if (mode == CNN_QUANT_INT8) printf("compiled int8 scores (fused): %d of %d a step from cnn-lite's\n", off, 40 * 4);
    for (int b = 0; b < 40; b++) {
      auto a = lib.begin() + b * 4, l = lite_probs.begin() + b * 4;
      EXPECT_EQ(std::max_element(a, a + 4) - a, std::max_element(l, l + 4) - l) << "image " << b;
    }
    // and the float network within what the mode costs
    double worst = 0;
    for (int i = 0; i < 40 * 4; i++) worst = std::max(worst, (double)std::fabs(lib[i] - ref[i]));
    double bound = mode == CNN_QUANT_FLOAT ? 1e-5 : mode == CNN_QUANT_FP16 ? 2e-3 : 0.06;
    EXPECT_LT(worst, bound);
    // sizes: int8 and dynamic about a quarter of the float file, fp16 about half
    if (mode != CNN_QUANT_FLOAT) {
      std::string fl = tmp.file("float-size.safetensors");
      cnn_quant_config fc = qc;
      fc.mode = CNN_QUANT_FLOAT;
      ASSERT_EQ(cnn_quantize(m.net, &fc, fl.c_str()), CNN_OK);
      double ratio = (double)cnntest::read_file(path).size() / (double)cnntest::read_file(fl).size();
      EXPECT_LT(ratio, mode == CNN_QUANT_FP16 ? 0.85 : 0.8) << "a small model: the header weighs much";
    }
  }
}

// Whole models quantized to int8, the seed CNN and ResNet-20 (its adds, projection shortcuts and global pooling):
// libcnn's compiled graph with cnn-lite's requantization (its default) gives cnn-lite's class scores bit for bit, at
// batch 1 and at batch 16 (its convolutions then run 2 to 16 images at a time; the seed CNN's max poolings on the sums).
TEST(CompiledInt8, SeedCnnAndResNet20WithExactRequantizationEqualCnnLiteBitForBit) {
  if (!vnni()) GTEST_SKIP() << "no VNNI: quantized models run cnn-lite's path here";
  for (const char *name : {"seed_cnn", "resnet20_28"}) {
    SCOPED_TRACE(name);
    TempDir tmp;
    const std::string path = quantize_sample(name, tmp, 11, 4, 200, 21);
    ASSERT_FALSE(HasFailure());
    const int n = 16;
    auto x = images(n, 28 * 28, 22);
    cnntest::CpuBackend be;
    cnn_net *q = nullptr;
    ASSERT_EQ(cnn_net_load(path.c_str(), be.b, &q), CNN_OK) << cnn_last_error();
    // (no cnn_net_quant_set_exact_requant: the exact requantization is the default)
    const int k = cnn_net_num_outputs(q);
    std::vector<float> probs((size_t)n * k), got((size_t)n * k), one((size_t)k), want((size_t)n * k);
    ASSERT_EQ(cnn_net_predict(q, x.data(), n, probs.data()), CNN_OK) << cnn_last_error();
    EXPECT_TRUE(cnn_net_quant_ran_compiled(q));
    ASSERT_EQ(cnn_tensor_read(q->acts[0], got.data(), got.size() * sizeof(float)), CNN_OK);
    Lite lite(read_bytes(path), n);
    ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
    ASSERT_EQ(cnn_lite_logits(lite.m, x.data(), n, want.data(), lite.err, sizeof lite.err), CNN_LITE_OK);
    std::set<float> distinct(want.begin(), want.end());
    EXPECT_GT(distinct.size(), 20u) << "the scores hardly vary: a weak comparison";
    for (size_t i = 0; i < want.size(); i++) ASSERT_EQ(got[i], want[i]) << "batch 16, score " << i;
    for (int b = 0; b < 3; b++) {  // batch 1: another compiled graph
      ASSERT_EQ(cnn_net_predict(q, x.data() + (size_t)b * 28 * 28, 1, probs.data()), CNN_OK) << cnn_last_error();
      EXPECT_TRUE(cnn_net_quant_ran_compiled(q));
      ASSERT_EQ(cnn_tensor_read(q->acts[0], one.data(), one.size() * sizeof(float)), CNN_OK);
      for (int j = 0; j < k; j++) ASSERT_EQ(one[j], want[(size_t)b * k + j]) << "batch 1, image " << b << ", score " << j;
    }
    cnn_net_destroy(q);
  }
}

// The exact compiled graph splits a batch into as many equal ranges as threads (the most that divide it), each run
// through the whole graph by one thread with one-thread primitives; else one range whose ops run in parallel. Either
// way every score is cnn-lite's bit for bit: 1 to 4 threads, batches that split 2, 3 or 4 ways (12, 8) and one that
// splits only at 1 or 7 threads (7), for both networks (the seed CNN's fused max poolings, ResNet-20's adds).
TEST(CompiledInt8, BatchRangesOnEveryThreadCountEqualCnnLiteBitForBit) {
  if (!vnni()) GTEST_SKIP() << "no VNNI: quantized models run cnn-lite's path here";
  const int before = cnn_num_threads();
  for (const char *name : {"seed_cnn", "resnet20_28"}) {
    SCOPED_TRACE(name);
    TempDir tmp;
    const auto file = read_bytes(quantize_sample(name, tmp, 12, 5, 100, 31));
    ASSERT_FALSE(HasFailure());
    for (int n : {12, 8, 7}) {
      auto x = images(n, 28 * 28, 32 + n);
      Lite lite(file, n);
      ASSERT_EQ(lite.st, CNN_LITE_OK) << lite.err;
      std::vector<float> want((size_t)n * 10), got;
      ASSERT_EQ(cnn_lite_logits(lite.m, x.data(), n, want.data(), lite.err, sizeof lite.err), CNN_LITE_OK);
      std::set<float> distinct(want.begin(), want.end());
      EXPECT_GT(distinct.size(), 10u) << "the scores hardly vary: a weak comparison";
      for (int threads : {1, 2, 3, 4}) {
        SCOPED_TRACE("batch " + std::to_string(n) + ", " + std::to_string(threads) + " threads");
        ASSERT_EQ(cnn_set_num_threads(threads), CNN_OK);
        cnn_status st;
        ASSERT_TRUE(compiled_scores(file, n, x, got, &st)) << cnn_status_string(st) << ": " << cnn_last_error();
        ASSERT_EQ(got.size(), want.size());
        for (size_t i = 0; i < want.size(); i++) ASSERT_EQ(got[i], want[i]) << "score " << i;
      }
    }
  }
  ASSERT_EQ(cnn_set_num_threads(before), CNN_OK);
}

TEST(Quantize, WeightsArePerChannelSymmetricAgainstFloat64) {
  Model m("input 6 6 1\nconv 3 3\nflatten\ndense 2 softmax\n", 4);
  TempDir tmp;
  std::string path = tmp.file("d.safetensors");
  cnn_quant_config qc;
  cnn_quant_config_defaults(&qc);
  qc.mode = CNN_QUANT_DYNAMIC;
  ASSERT_EQ(cnn_quantize(m.net, &qc, path.c_str()), CNN_OK) << cnn_last_error();
  cnn_st_file *f = nullptr;
  ASSERT_EQ(cnn_st_read(path.c_str(), &f), CNN_OK) << cnn_last_error();
  const cnn_st_tensor *w = cnn_st_find(f, "conv2d.weight"), *s = cnn_st_find(f, "conv2d.weight.scale");
  ASSERT_TRUE(w && s);
  std::vector<float> orig(27);
  ASSERT_EQ(cnn_tensor_read(m.net->layers[0]->params[0].value, orig.data(), 27 * 4), CNN_OK);
  std::vector<int8_t> q(27);
  std::vector<float> scale(3);
  std::memcpy(q.data(), cnn_st_data(f, w), 27);
  std::memcpy(scale.data(), cnn_st_data(f, s), 12);
  for (int c = 0; c < 3; c++) {
    double mx = 0;
    for (int k = 0; k < 9; k++) mx = std::max(mx, std::fabs((double)orig[c * 9 + k]));
    EXPECT_NEAR(scale[c], mx / 127.0, mx / 127.0 * 1e-6) << c;
    for (int k = 0; k < 9; k++) {
      EXPECT_LE(std::fabs((double)q[c * 9 + k] * scale[c] - orig[c * 9 + k]), scale[c] * 0.5 * (1 + 1e-6));
      EXPECT_GE(q[c * 9 + k], -127);
    }
  }
  cnn_st_free(f);
}

// ---- bad input ----------------------------------------------------------------------------------------------------

TEST(LiteBadInput, CorruptAndInconsistentModelsAndSmallArenasAreNamed) {
  std::vector<int8_t> w(2 * 4);
  std::vector<float> ws = {0.5f, 0.25f};
  std::vector<int32_t> b = {1, 2};
  auto make = [&](const std::string &qline, std::vector<float> scales, const std::string &shape_out) {
    return lite_file("int8", "input h=2 w=2 c=1 q=0.01,0\nflatten in=0 out=4\ndense in=1 n=2 w=d.weight b=d.bias out=" +
                                 shape_out + " " + qline + "\n",
                     {tensor("d.weight", CNN_I8, {2, 4}, w), tensor("d.weight.scale", CNN_F32, {(int64_t)scales.size()}, scales),
                      tensor("d.bias", CNN_I32, {2}, b)});
  };
  struct Case {
    std::vector<unsigned char> file;
    cnn_lite_status st;
    const char *message;
  } cases[] = {
      {make("q=0.1,0", ws, "2"), CNN_LITE_OK, ""},
      {make("q=0.1,0", {0.5f, 0.25f, 1.0f}, "2"), CNN_LITE_ERR_FORMAT, "one scale per output channel"},
      {make("q=0.1,0", {0.5f, 0.0f}, "2"), CNN_LITE_ERR_FORMAT, "scales must be finite and > 0"},
      {make("q=0.1,0", {0.5f, NAN}, "2"), CNN_LITE_ERR_FORMAT, "scales must be finite and > 0"},
      {make("q=0.1,300", ws, "2"), CNN_LITE_ERR_FORMAT, "a zero point in [-128, 127]"},
      {make("q=0,0", ws, "2"), CNN_LITE_ERR_FORMAT, "a finite scale > 0"},
      {make("q=0.1,0", ws, "3"), CNN_LITE_ERR_FORMAT, "out= does not match"},
      {make("", ws, "2"), CNN_LITE_ERR_FORMAT, "needs q=SCALE,ZP"},
      {lite_file("int8", "input h=2 w=2 c=1 q=1,0\nsigmoid in=0 out=2,2,1\n", {}), CNN_LITE_ERR_UNSUPPORTED, "unknown op 'sigmoid'"},
      {lite_file("int8", "input h=2 w=2 c=1 q=1,0\nact in=0 f=tanh out=2,2,1\n", {}), CNN_LITE_ERR_UNSUPPORTED,
       "int8 models take ReLU only"},
      {lite_file("float", "input h=2 w=2 c=1\ndense in=0 n=2 w=missing out=2\n", {}), CNN_LITE_ERR_FORMAT,
       "tensor missing is not in the file"},
      {lite_file("float", "input h=2 w=2 c=1\nflatten in=3 out=4\n", {}), CNN_LITE_ERR_FORMAT, "not a line before it"},
      {lite_file("int4", "input h=2 w=2 c=1\nflatten in=0 out=4\n", {}), CNN_LITE_ERR_FORMAT, "mode must be"},
      {lite_file("float", "input h=2 w=2 c=1\n", {}), CNN_LITE_ERR_FORMAT, "the graph has 1 lines"},
  };
  for (const Case &c : cases) {
    size_t need = 0;
    char err[256] = "";
    EXPECT_EQ(cnn_lite_arena_size(c.file.data(), c.file.size(), 4, &need, err, sizeof err), c.st) << err;
    EXPECT_TRUE(has(err, c.message)) << err << " (expected: " << c.message << ")";
  }
  // a good model: a truncated copy, a flipped header length, and an arena too small are named
  auto good = cases[0].file;
  for (size_t cut : {(size_t)0, (size_t)7, good.size() / 2, good.size() - 1}) {
    size_t need = 0;
    char err[256] = "";
    EXPECT_EQ(cnn_lite_arena_size(good.data(), cut, 1, &need, err, sizeof err), CNN_LITE_ERR_FORMAT) << cut;
    EXPECT_NE(err[0], '\0');
  }
  auto big = good;
  big[6] = 0x7f;
  size_t need = 0;
  char err[256] = "";
  EXPECT_EQ(cnn_lite_arena_size(big.data(), big.size(), 1, &need, err, sizeof err), CNN_LITE_ERR_FORMAT);
  EXPECT_TRUE(has(err, "header length")) << err;
  ASSERT_EQ(cnn_lite_arena_size(good.data(), good.size(), 8, &need, err, sizeof err), CNN_LITE_OK);
  std::vector<unsigned char> arena(need);
  cnn_lite *m = nullptr;
  EXPECT_EQ(cnn_lite_open(good.data(), good.size(), 8, arena.data(), need / 2, &m, err, sizeof err), CNN_LITE_ERR_ARENA);
  EXPECT_TRUE(has(err, "this model needs")) << err;
  // the model buffer may go once open returns: what is needed was copied
  auto copy = good;
  ASSERT_EQ(cnn_lite_open(copy.data(), copy.size(), 8, arena.data(), need, &m, err, sizeof err), CNN_LITE_OK) << err;
  std::fill(copy.begin(), copy.end(), 0xff);
  std::vector<float> x(4 * 9, 0.5f), p(9 * 2);
  EXPECT_EQ(cnn_lite_predict(m, x.data(), 9, p.data(), err, sizeof err), CNN_LITE_ERR_ARG);
  EXPECT_TRUE(has(err, "from 1 to the max_batch of 8")) << err;
  ASSERT_EQ(cnn_lite_predict(m, x.data(), 4, p.data(), err, sizeof err), CNN_LITE_OK) << err;
  for (int i = 0; i < 4; i++) EXPECT_NEAR(p[2 * i] + p[2 * i + 1], 1.0f, 1e-6);
}

TEST(QuantizeCli, ModesCalibrationAndBadInputAreReported) {
  TempDir tmp;
  // a gray 8x8 model and a folder of 8x8 gray and RGB images
  Model m("input 8 8 1\nconv 4 3 relu\nmaxpool 2\nflatten\ndense 3 softmax\n", 2);
  std::string model = tmp.file("m.safetensors");
  ASSERT_EQ(cnn_net_save(m.net, model.c_str()), CNN_OK);
  std::string gray = tmp.file("gray"), rgb = tmp.file("rgb");
  for (int cls = 0; cls < 3; cls++) {
    write_gray_png(gray + "/c" + std::to_string(cls) + "/a.png", 8, 8, 40 * cls);
    write_gray_png(gray + "/c" + std::to_string(cls) + "/b.png", 8, 8, 40 * cls + 20);
  }
  std::string out;
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", model, "--out", tmp.file("q.safetensors"), "--calib-data",
                              "folder:" + gray, "--calib-method", "percentile"},
                             &out),
            0)
      << out;
  EXPECT_TRUE(has(out, "(int8, percentile calibration on 6 images of folder:")) << out;
  EXPECT_EQ(cnntest::run_cnn({"eval", "--model", tmp.file("q.safetensors"), "--data", "folder:" + gray}, &out), 0) << out;
  EXPECT_TRUE(has(out, "samples: 6")) << out;
  EXPECT_EQ(cnntest::run_cnn({"predict", "--model", tmp.file("q.safetensors"), gray + "/c1/a.png"}, &out), 0) << out;
  // cnn bench runs it with either requantization; another word is a usage error naming the flag
  for (const char *rq : {"fused", "exact"})
    EXPECT_EQ(cnntest::run_cnn({"bench", "--model", tmp.file("q.safetensors"), "--mode", "infer", "--batch", "2",
                                "--device", "cpu", "--iters", "2", "--repeats", "1", "--quiet", "--int8-requant", rq},
                               &out),
              0)
        << out;
  EXPECT_EQ(cnntest::run_cnn({"bench", "--model", tmp.file("q.safetensors"), "--int8-requant", "float"}, &out), 2);
  EXPECT_TRUE(has(out, "--int8-requant")) << out;
  EXPECT_EQ(cnntest::run_cnn({"summary", tmp.file("q.safetensors")}, &out), 0) << out;
  EXPECT_TRUE(has(out, "int8")) << out;
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", model, "--out", tmp.file("d.safetensors"), "--mode", "dynamic"},
                             &out),
            0)
      << out;
  // bad values and inputs
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", model, "--out", tmp.file("x"), "--mode", "int4"}, &out), 2);
  EXPECT_TRUE(has(out, "--mode")) << out;
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", model, "--out", tmp.file("x"), "--calib-method", "kl"}, &out), 2);
  EXPECT_TRUE(has(out, "--calib-method")) << out;
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", model}, &out), 2);
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", tmp.file("q.safetensors"), "--out", tmp.file("x"), "--mode",
                              "dynamic"},
                             &out),
            2);
  EXPECT_TRUE(has(out, "already quantized")) << out;
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", model, "--out", tmp.file("x"), "--calib-data",
                              "folder:" + tmp.file("none")},
                             &out),
            1);
  EXPECT_TRUE(has(out, "--calib-data")) << out;
  // calibration images that do not fit the model: Fashion-MNIST's gray ones for an RGB model
  if (cnn_source_has_split("fashion-mnist", "train")) {
    Model rgbm("input 8 8 3\nconv 4 3 relu\nflatten\ndense 3 softmax\n", 2);
    std::string rm = tmp.file("rgb.safetensors");
    ASSERT_EQ(cnn_net_save(rgbm.net, rm.c_str()), CNN_OK);
    EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", rm, "--out", tmp.file("x"), "--calib-data", "fashion-mnist"},
                               &out),
              2);
    EXPECT_TRUE(has(out, "--calib-data fashion-mnist: its images have 1 channel, the model takes 3")) << out;
  }
  // a model with a sigmoid: int8 refuses by layer, dynamic takes it
  Model s("input 8 8 1\nconv 4 3 sigmoid\nflatten\ndense 3 softmax\n", 2);
  std::string sm = tmp.file("s.safetensors");
  ASSERT_EQ(cnn_net_save(s.net, sm.c_str()), CNN_OK);
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", sm, "--out", tmp.file("x"), "--calib-data", "folder:" + gray},
                             &out),
            1);
  EXPECT_TRUE(has(out, "layer conv2d: int8 covers")) << out;
  EXPECT_TRUE(has(out, "--mode dynamic")) << out;
  EXPECT_EQ(cnntest::run_cnn({"quantize", "--model", sm, "--out", tmp.file("sd.safetensors"), "--mode", "dynamic"},
                             &out),
            0)
      << out;
}

// ---- portability: cnn-lite alone, natively and as a 32-bit program, and the sample ----------------------------------

TEST(LitePortable, TheSameOutputsNativelyIn32BitsAndInLibcnnAndTheSampleClassifies) {
  TempDir tmp;
  Model m(kBnNet, 12);
  perturb_batchnorms(m.net, 4);
  const char *names[] = {"north", "south", "east", "west"};
  ASSERT_EQ(cnn_net_set_class_names(m.net, 4, names), CNN_OK);
  auto calib = images(200, 200, 1);
  const int n = 24;
  auto x = images(n, 200, 2);
  std::string raw = tmp.file("images.f32");
  cnntest::write_file(raw, std::string((const char *)x.data(), x.size() * sizeof(float)));
  for (cnn_quant_mode mode : {CNN_QUANT_INT8, CNN_QUANT_FLOAT}) {
    SCOPED_TRACE(cnn_quant_mode_name(mode));
    std::string path = tmp.file(std::string(cnn_quant_mode_name(mode)) + ".safetensors");
    cnn_quant_config qc;
    cnn_quant_config_defaults(&qc);
    qc.mode = mode;
    qc.calib_images = calib.data();
    qc.calib_n = 200;
    ASSERT_EQ(cnn_quantize(m.net, &qc, path.c_str()), CNN_OK) << cnn_last_error();
    cnntest::CpuBackend be;
    cnn_net *q = nullptr;
    ASSERT_EQ(cnn_net_load(path.c_str(), be.b, &q), CNN_OK) << cnn_last_error();
    std::vector<float> lib(n * 4);
    ASSERT_EQ(cnn_net_predict(q, x.data(), n, lib.data()), CNN_OK);
    cnn_net_destroy(q);
    std::vector<std::string> programs = {LITE_SELFTEST};
    if (std::string(LITE_SELFTEST32).empty())
      printf("no 32-bit build of cnn-lite here (gcc-multilib): the native one only\n");
    else
      programs.push_back(LITE_SELFTEST32);
    std::vector<std::vector<float>> outs;
    for (const std::string &prog : programs) {
      std::string out = tmp.file("out.f32");
      std::string cmd = "'" + prog + "' '" + path + "' '" + raw + "' " + std::to_string(n) + " '" + out + "'";
      ASSERT_EQ(system(cmd.c_str()), 0) << cmd;
      std::string bytes = cnntest::read_file(out);
      ASSERT_EQ(bytes.size(), (size_t)n * 4 * sizeof(float));
      outs.emplace_back(n * 4);
      std::memcpy(outs.back().data(), bytes.data(), bytes.size());
      for (int i = 0; i < n * 4; i++) ASSERT_NEAR(outs.back()[i], lib[i], 1e-6) << prog << " " << i;
      for (int b = 0; b < n; b++) {
        auto a = outs.back().begin() + b * 4, l = lib.begin() + b * 4;
        EXPECT_EQ(std::max_element(a, a + 4) - a, std::max_element(l, l + 4) - l) << prog << " image " << b;
      }
    }
    if (outs.size() == 2 && mode == CNN_QUANT_INT8) {
      // the integer part is the same on both ABIs: the class scores before the float softmax agree exactly, so
      // the probabilities differ by the libm's expf at most
      for (int i = 0; i < n * 4; i++) EXPECT_NEAR(outs[0][i], outs[1][i], 2e-7) << i;
    }
  }
  // the sample classifies a PNG with the int8 model, as libcnn does
  write_gray_png(tmp.file("img/x/a.png"), 10, 10, 90);
  write_gray_png(tmp.file("img/y/b.png"), 10, 10, 20);
  Model g("input 10 10 1\nconv 4 3 relu\nmaxpool 2\nflatten\ndense 3 softmax\n", 6);
  const char *gnames[] = {"cat", "dog", "bird"};
  ASSERT_EQ(cnn_net_set_class_names(g.net, 3, gnames), CNN_OK);
  std::string gm = tmp.file("g.safetensors"), gq = tmp.file("g.int8.safetensors");
  ASSERT_EQ(cnn_net_save(g.net, gm.c_str()), CNN_OK);
  std::string out;
  ASSERT_EQ(cnntest::run_cnn({"quantize", "--model", gm, "--out", gq, "--calib-data", "folder:" + tmp.file("img")}, &out),
            0)
      << out;
  ASSERT_EQ(cnntest::run_cnn({"predict", "--model", gq, "--top", "1", tmp.file("img/x/a.png")}, &out), 0) << out;
  std::string want;
  for (const char *nm : gnames)
    if (has(out, nm)) want = nm;
  ASSERT_FALSE(want.empty()) << out;
  FILE *p = popen(("'" LITE_CLASSIFY "' '" + gq + "' '" + tmp.file("img/x/a.png") + "' 1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string sample;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) sample += buf;
  EXPECT_EQ(pclose(p), 0) << sample;
  EXPECT_TRUE(has(sample, "int8 model, 10x10x1 input")) << sample;
  EXPECT_TRUE(has(sample, want)) << "cnn predict:\n" << out << "lite_classify:\n" << sample;
}

}  // namespace
