// The CPU backend's fast paths give the results of the plain ones:
// - it keeps convolution and dense weights in oneDNN's layout between calls while their version
//   (cnn_tensor.version) stays the same: every way the library changes weights must show in the next forward;
// - convolutions with 4 MiB of weights or more run on another oneDNN kernel (cpu/conv.c);
// - 3x3 stride-1 convolutions run as Winograd F(4x4, 3x3) in the shapes cpu/conv.c's rule names, where the
//   processor has it, unless CNN_CPU_WINOGRAD=0.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/backend.h"
#include "core/nn/net.h"
#include "core/ops.h"
#include "core/rng.h"
}
#include "tests/fixtures.h"
#include "tests/op_util.h"
#include "tests/reference.h"
#include "tests/util.h"

namespace {

const char *kNet =
    "input 10 10 3\n"
    "conv 16 3 relu padding=same\n"
    "maxpool 2\n"
    "conv 32 3 relu\n"
    "flatten\n"
    "dense 24 relu\n"
    "dense 5 softmax\n";

using Backend = cnntest::CpuBackend;

// n noisy images of the net's input size, 5 classes
struct Data : cnntest::RandomTask {
  explicit Data(int n) : RandomTask(n, 10, 10, 3, 5, 42) {}
};

std::vector<float> predict(cnn_net *net, const Data &d) {
  std::vector<float> p(d.labels.size() * 5);
  EXPECT_EQ(cnn_net_predict(net, d.images.data(), (int64_t)d.labels.size(), p.data()), CNN_OK) << cnn_last_error();
  return p;
}

bool same(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Halves every weight of every conv and dense layer through cnn_tensor_write.
void halve_weights(cnn_net *net) {
  for (int i = 0; i < net->nlayers; i++)
    for (int p = 0; p < net->layers[i]->nparams; p++) {
      cnn_tensor *t = net->layers[i]->params[p].value;
      std::vector<float> w(cnn_tensor_numel(t));
      ASSERT_EQ(cnn_tensor_read(t, w.data(), w.size() * 4), CNN_OK);
      for (float &v : w) v *= 0.5f;
      ASSERT_EQ(cnn_tensor_write(t, w.data(), w.size() * 4), CNN_OK);
    }
}

TEST(WeightCache, ParametersAreTrackedAndWritesRenewTheirVersion) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "cache", be.b, 1, &net), CNN_OK) << cnn_last_error();
  cnn_tensor *w = net->layers[0]->params[0].value;
  uint64_t v0 = w->version;
  EXPECT_NE(v0, 0u);
  std::vector<float> host(cnn_tensor_numel(w));
  ASSERT_EQ(cnn_tensor_read(w, host.data(), host.size() * 4), CNN_OK);
  ASSERT_EQ(cnn_tensor_write(w, host.data(), host.size() * 4), CNN_OK);
  EXPECT_GT(w->version, v0);
  // a tensor made outside a network is untracked, and stays so when written
  cnn_tensor *t = nullptr;
  int64_t shape[1] = {4};
  ASSERT_EQ(cnn_tensor_create(be.b, CNN_F32, 1, shape, &t), CNN_OK);
  float four[4] = {1, 2, 3, 4};
  ASSERT_EQ(cnn_tensor_write(t, four, sizeof four), CNN_OK);
  EXPECT_EQ(t->version, 0u);
  cnn_tensor_destroy(t);
  cnn_net_destroy(net);
}

TEST(WeightCache, InferenceSeesWeightsWrittenBetweenCalls) {
  Backend be;
  Data d(3);
  cnn_net *a = nullptr, *b = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "cache", be.b, 1, &a), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_from_text(kNet, "cache", be.b, 1, &b), CNN_OK) << cnn_last_error();
  std::vector<float> before = predict(a, d), again = predict(a, d);
  EXPECT_TRUE(same(before, again)); // the cached weights give what the first call gave
  halve_weights(a);
  halve_weights(b); // b never ran with the old weights
  std::vector<float> after = predict(a, d), fresh = predict(b, d);
  EXPECT_FALSE(same(before, after)) << "the forward used the cached, old weights";
  EXPECT_TRUE(same(after, fresh));
  cnn_net_destroy(a);
  cnn_net_destroy(b);
}

TEST(WeightCache, InferenceAfterTrainingUsesTheUpdatedWeights) {
  Backend be;
  cnntest::TempDir dir;
  Data train(96), val(32), probe(4);
  cnn_net *a = nullptr, *b = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "cache", be.b, 1, &a), CNN_OK) << cnn_last_error();
  cnn_train_config c = cnntest::quiet_train_config(2, 16);
  c.lr = 1e-2f;
  // the validation pass after each epoch runs inference between optimizer steps
  ASSERT_EQ(cnn_train(a, &train.ds, &val.ds, &c, nullptr), CNN_OK) << cnn_last_error();
  std::string path = dir.file("m.safetensors");
  ASSERT_EQ(cnn_net_save(a, path.c_str()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_load(path.c_str(), be.b, &b), CNN_OK) << cnn_last_error();
  EXPECT_TRUE(same(predict(a, probe), predict(b, probe)));
  cnn_net_destroy(a);
  cnn_net_destroy(b);
}

// A CPU backend created with CNN_CPU_WINOGRAD set to `value` (nullptr: unset), the variable restored after.
struct CpuBackendWith {
  cnn_backend *b = nullptr;
  cnn_status st;
  explicit CpuBackendWith(const char *value) {
    const char *old = std::getenv("CNN_CPU_WINOGRAD");
    const std::string saved = old ? old : "";
    if (value)
      setenv("CNN_CPU_WINOGRAD", value, 1);
    else
      unsetenv("CNN_CPU_WINOGRAD");
    st = cnn_backend_create("cpu", &b);
    if (old)
      setenv("CNN_CPU_WINOGRAD", saved.c_str(), 1);
    else
      unsetenv("CNN_CPU_WINOGRAD");
  }
  ~CpuBackendWith() { cnn_backend_destroy(b); }
  CpuBackendWith(const CpuBackendWith &) = delete;
  CpuBackendWith &operator=(const CpuBackendWith &) = delete;
};

// One 3x3 stride-1 convolution of n x h x h x c images to o channels (padding `pad`) and its seeded inputs: the
// same for every backend and for the reference.
struct ConvCase {
  int n, h, c, o, pad, oh;
  std::vector<float> x, w, bias, dy;
  ConvCase(int n_, int h_, int c_, int o_, int pad_)
      : n(n_), h(h_), c(c_), o(o_), pad(pad_), oh(h_ + 2 * pad_ - 2), x((size_t)n * h * h * c),
        w((size_t)o * 9 * c), bias(o), dy((size_t)n * oh * oh * o) {
    cnn_rng r;
    cnn_rng_seed(&r, 11);
    for (float &v : x) v = cnn_rng_uniform(&r) - 0.5f;
    for (float &v : w) v = (cnn_rng_uniform(&r) - 0.5f) * 0.2f;
    for (float &v : bias) v = cnn_rng_uniform(&r) - 0.5f;
    for (float &v : dy) v = cnn_rng_uniform(&r) - 0.5f;
  }
};

// y (ReLU fused in the forward), dx, dw and db of the case on backend b.
std::vector<std::vector<float>> conv_three_ways(cnn_backend *b, const ConvCase &k) {
  const int64_t xs[4] = {k.n, k.h, k.h, k.c}, ws[4] = {k.o, 3, 3, k.c}, bs[1] = {k.o}, ys[4] = {k.n, k.oh, k.oh, k.o};
  cnn_tensor *tx = nullptr, *tw = nullptr, *tb = nullptr, *ty = nullptr, *tdy = nullptr, *tdx = nullptr,
             *tdw = nullptr, *tdb = nullptr;
  std::vector<std::vector<float>> out = {std::vector<float>(k.dy.size()), std::vector<float>(k.x.size()),
                                         std::vector<float>(k.w.size()), std::vector<float>(k.bias.size())};
  EXPECT_EQ(cnn_tensor_create(b, CNN_F32, 4, xs, &tx), CNN_OK);
  EXPECT_EQ(cnn_tensor_create(b, CNN_F32, 4, ws, &tw), CNN_OK);
  EXPECT_EQ(cnn_tensor_create(b, CNN_F32, 1, bs, &tb), CNN_OK);
  EXPECT_EQ(cnn_tensor_create(b, CNN_F32, 4, ys, &ty), CNN_OK);
  EXPECT_EQ(cnn_tensor_create(b, CNN_F32, 4, ys, &tdy), CNN_OK);
  EXPECT_EQ(cnn_tensor_create(b, CNN_F32, 4, xs, &tdx), CNN_OK);
  EXPECT_EQ(cnn_tensor_create(b, CNN_F32, 4, ws, &tdw), CNN_OK);
  EXPECT_EQ(cnn_tensor_create(b, CNN_F32, 1, bs, &tdb), CNN_OK);
  EXPECT_EQ(cnn_tensor_write(tx, k.x.data(), k.x.size() * 4), CNN_OK);
  EXPECT_EQ(cnn_tensor_write(tw, k.w.data(), k.w.size() * 4), CNN_OK);
  EXPECT_EQ(cnn_tensor_write(tb, k.bias.data(), k.bias.size() * 4), CNN_OK);
  EXPECT_EQ(cnn_tensor_write(tdy, k.dy.data(), k.dy.size() * 4), CNN_OK);
  cnn_plan *plan = nullptr;
  cnn_conv2d_args a{};
  a.plan = &plan, a.x = tx, a.w = tw, a.b = tb, a.y = ty, a.dy = tdy, a.dx = tdx, a.dw = tdw, a.db = tdb;
  a.stride_h = a.stride_w = 1, a.pad_top = a.pad_left = a.pad_bottom = a.pad_right = k.pad;
  a.dilation_h = a.dilation_w = 1, a.groups = 1, a.act = CNN_ACT_RELU;
  EXPECT_EQ(cnn_op_conv2d_forward(b, &a), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_op_conv2d_backward_data(b, &a), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_op_conv2d_backward_filter(b, &a), CNN_OK) << cnn_last_error();
  const cnn_tensor *from[4] = {ty, tdx, tdw, tdb};
  for (int i = 0; i < 4; i++) EXPECT_EQ(cnn_tensor_read(from[i], out[i].data(), out[i].size() * 4), CNN_OK);
  cnn_op_plan_destroy(b, plan);
  for (cnn_tensor *t : {tx, tw, tb, ty, tdy, tdx, tdw, tdb}) cnn_tensor_destroy(t);
  return out;
}

// The float64 reference of conv_three_ways's four results: y with the ReLU, then dx, dw and db for dy taken as the
// gradient of the pre-activation (what the backward ops take: test_ops.cc).
std::vector<std::vector<double>> conv_three_ways_reference(const ConvCase &cc) {
  const int n = cc.n, h = cc.h, c = cc.c, o = cc.o, pad = cc.pad, oh = cc.oh, k = 3;
  const std::vector<double> x = cnntest::to_double(cc.x), w = cnntest::to_double(cc.w),
                            bias = cnntest::to_double(cc.bias), dy = cnntest::to_double(cc.dy);
  std::vector<double> y(dy.size()), dx(x.size()), dw(w.size()), db(bias.size());
  for (int b = 0; b < n; b++)
    for (int i = 0; i < oh; i++)
      for (int j = 0; j < oh; j++)
        for (int m = 0; m < o; m++) {
          const size_t yi = (((size_t)b * oh + i) * oh + j) * o + m;
          double s = bias[m];
          for (int u = 0; u < k; u++)
            for (int v = 0; v < k; v++) {
              const int hi = i + u - pad, wi = j + v - pad;
              if (hi < 0 || hi >= h || wi < 0 || wi >= h) continue;
              for (int q = 0; q < c; q++)
                s += x[(((size_t)b * h + hi) * h + wi) * c + q] * w[(((size_t)m * k + u) * k + v) * c + q];
            }
          y[yi] = s > 0 ? s : 0;
          const double g = dy[yi];
          db[m] += g;
          for (int u = 0; u < k; u++)
            for (int v = 0; v < k; v++) {
              const int hi = i + u - pad, wi = j + v - pad;
              if (hi < 0 || hi >= h || wi < 0 || wi >= h) continue;
              for (int q = 0; q < c; q++) {
                dx[(((size_t)b * h + hi) * h + wi) * c + q] += g * w[(((size_t)m * k + u) * k + v) * c + q];
                dw[(((size_t)m * k + u) * k + v) * c + q] += g * x[(((size_t)b * h + hi) * h + wi) * c + q];
              }
            }
        }
  return {y, dx, dw, db};
}

TEST(CpuConv, WinogradRunsWhereTheRuleSaysAndMatchesTheFloat64Reference) {
  // Every direction of the shapes the rule of cpu/conv.c sends to Winograd and of some it keeps direct, on the
  // default backend and on one with CNN_CPU_WINOGRAD=0: both within 1e-5 of the float64 reference (relative to the
  // largest value, as the op table measures), and on an AVX-512 processor (where oneDNN has Winograd) the two
  // differ in their bits exactly where the rule picks Winograd.
  // (The op table, test_ops.cc, checks Winograd shapes' forward too; finite differences of shapes this large are
  // beyond its budget, hence the backward references here.)
  CpuBackendWith on(nullptr), off("0");
  ASSERT_EQ(on.st, CNN_OK) << cnn_last_error();
  ASSERT_EQ(off.st, CNN_OK) << cnn_last_error();
  EXPECT_EQ(std::string(cnn_backend_description(on.b)).find("Winograd off"), std::string::npos);
  EXPECT_NE(std::string(cnn_backend_description(off.b)).find("Winograd off"), std::string::npos);
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const struct {
    int n, h, c, o, pad;
    bool wino[4];  // y, dx, dw, db: which the rule runs as Winograd
  } cases[] = {
      {4, 16, 32, 48, 1, {true, true, true, true}},      // ResNet's SAME convolutions
      {9, 13, 32, 64, 0, {true, false, true, true}},     // the seed CNN's second: backward data stays direct (pad 0)
      {32, 22, 16, 16, 1, {true, true, true, true}},     // 16 channels inside the window (20 to 28 a side, 32+)
      {32, 16, 16, 32, 1, {false, false, false, false}}, // and outside it (16 a side): direct
      {4, 16, 16, 16, 1, {false, false, false, false}},  // and at batch 4: direct
      {64, 5, 32, 32, 0, {false, false, false, false}},  // 3 x 3 outputs, under a tile: direct
      {2, 16, 32, 32, 1, {false, false, false, false}},  // 512 output pixels, under 1024: direct
  };
  const char *names[4] = {"y", "dx", "dw", "db"};
  for (const auto &k : cases) {
    const ConvCase cc(k.n, k.h, k.c, k.o, k.pad);
    const auto a = conv_three_ways(on.b, cc), b = conv_three_ways(off.b, cc);
    const auto want = conv_three_ways_reference(cc);
    for (int i = 0; i < 4; i++) {
      SCOPED_TRACE(std::string(names[i]) + " of " + std::to_string(k.c) + " -> " + std::to_string(k.o) + " channels, " +
                   std::to_string(k.n) + " x " + std::to_string(k.h) + " x " + std::to_string(k.h) + ", padding " +
                   std::to_string(k.pad));
      ASSERT_EQ(a[i].size(), want[i].size());
      ASSERT_EQ(b[i].size(), want[i].size());
      const double ea = cnnref::max_rel_error(a[i], want[i]), eb = cnnref::max_rel_error(b[i], want[i]);
      printf("%s of %d x %d x %d x %d -> %d, padding %d: relative error %.2g (default), %.2g (Winograd off)\n",
             names[i], k.n, k.h, k.h, k.c, k.o, k.pad, ea, eb);
      EXPECT_LT(ea, 1e-5) << "default backend";
      EXPECT_LT(eb, 1e-5) << "CNN_CPU_WINOGRAD=0";
      // db is dy summed whatever the algorithm; with Winograd on in backward weights oneDNN may still sum it apart
      if (i == 3) continue;
      if (avx512) {
        EXPECT_EQ(!same(a[i], b[i]), k.wino[i]);
      }
    }
  }
}

TEST(CpuConv, WinogradSwitchRejectsValuesItDoesNotKnow) {
  CpuBackendWith bad("no");
  EXPECT_EQ(bad.st, CNN_ERR_INVALID_ARG);
  EXPECT_EQ(bad.b, nullptr);
  EXPECT_NE(std::string(cnn_last_error()).find("CNN_CPU_WINOGRAD"), std::string::npos) << cnn_last_error();
  for (const char *v : {"0", "off", "1", "on", ""}) {
    CpuBackendWith ok(v);
    EXPECT_EQ(ok.st, CNN_OK) << v << ": " << cnn_last_error();
  }
}

TEST(CpuConv, LargeWeightsKernelMatchesAPlainLoop) {
  // 3x3, 512 -> 512 channels: 9.4 MB of weights, over the threshold; 4x4 images with padding 1 (ResNet-18's last
  // stage), ReLU fused; checked against the float64 reference convolution (tests/reference.cc's plain loop).
  // Winograd off: it would take this shape (the test above checks that path).
  const int n = 2, h = 4, c = 512, o = 512, k = 3;
  CpuBackendWith be("0");
  ASSERT_EQ(be.st, CNN_OK) << cnn_last_error();
  cnn_rng r;
  cnn_rng_seed(&r, 3);
  std::vector<float> x((size_t)n * h * h * c), w((size_t)o * k * k * c), bias(o), y((size_t)n * h * h * o);
  for (float &v : x) v = cnn_rng_uniform(&r) - 0.5f;
  for (float &v : w) v = (cnn_rng_uniform(&r) - 0.5f) * 0.05f;
  for (float &v : bias) v = cnn_rng_uniform(&r) - 0.5f;
  cnn_tensor *tx = nullptr, *tw = nullptr, *tb = nullptr, *ty = nullptr;
  int64_t xs[4] = {n, h, h, c}, ws[4] = {o, k, k, c}, bs[1] = {o}, ys[4] = {n, h, h, o};
  ASSERT_EQ(cnn_tensor_create(be.b, CNN_F32, 4, xs, &tx), CNN_OK);
  ASSERT_EQ(cnn_tensor_create(be.b, CNN_F32, 4, ws, &tw), CNN_OK);
  ASSERT_EQ(cnn_tensor_create(be.b, CNN_F32, 1, bs, &tb), CNN_OK);
  ASSERT_EQ(cnn_tensor_create(be.b, CNN_F32, 4, ys, &ty), CNN_OK);
  ASSERT_EQ(cnn_tensor_write(tx, x.data(), x.size() * 4), CNN_OK);
  ASSERT_EQ(cnn_tensor_write(tw, w.data(), w.size() * 4), CNN_OK);
  ASSERT_EQ(cnn_tensor_write(tb, bias.data(), bias.size() * 4), CNN_OK);
  cnn_plan *plan = nullptr;
  cnn_conv2d_args a{};
  a.plan = &plan, a.x = tx, a.w = tw, a.b = tb, a.y = ty;
  a.stride_h = a.stride_w = 1, a.pad_top = a.pad_left = a.pad_bottom = a.pad_right = 1;
  a.dilation_h = a.dilation_w = 1, a.groups = 1, a.act = CNN_ACT_RELU;
  ASSERT_EQ(cnn_op_conv2d_forward(be.b, &a), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_tensor_read(ty, y.data(), y.size() * 4), CNN_OK);
  cnnref::Conv2d p = cnntest::conv_params(n, h, h, c, o, k, k, 1, 1);
  p.relu = true;
  const cnnref::Vec want =
      cnnref::conv2d_forward(p, cnntest::to_double(x), cnntest::to_double(w), cnntest::to_double(bias));
  double worst = 0;
  for (size_t i = 0; i < want.size(); i++)
    worst = std::fmax(worst, std::fabs(y[i] - want[i]) / (1.0 + std::fabs(want[i])));
  EXPECT_LT(worst, 1e-4);
  cnn_op_plan_destroy(be.b, plan);
  cnn_tensor_destroy(tx);
  cnn_tensor_destroy(tw);
  cnn_tensor_destroy(tb);
  cnn_tensor_destroy(ty);
}

}  // namespace
