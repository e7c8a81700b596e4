// The CPU backend's fast paths give the results of the plain ones:
// - it keeps convolution and dense weights in oneDNN's layout between calls while their version
//   (cnn_tensor.version) stays the same: every way the library changes weights must show in the next forward;
// - convolutions with 4 MiB of weights or more run on another oneDNN kernel (cpu/conv.c).
#include <gtest/gtest.h>

#include <cmath>
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

TEST(CpuConv, LargeWeightsKernelMatchesAPlainLoop) {
  // 3x3, 512 -> 512 channels: 9.4 MB of weights, over the threshold; 4x4 images with padding 1 (ResNet-18's last
  // stage), ReLU fused; checked against the float64 reference convolution (tests/reference.cc's plain loop)
  const int n = 2, h = 4, c = 512, o = 512, k = 3;
  Backend be;
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
