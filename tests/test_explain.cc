// Trust: gradients with respect to the input and to layer outputs (include/cnn/explain.h) through every layer
// type, against finite differences of the network and of float64 references; they leave the training state alone.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "cnn/explain.h"
#include "core/net.h"
#include "core/rng.h"
}
#include "tests/fixtures.h"
#include "tests/reference.h"

namespace {

using Backend = cnntest::CpuBackend;

std::vector<float> read(const cnn_tensor *t) {
  std::vector<float> v(cnn_tensor_numel(t));
  EXPECT_EQ(cnn_tensor_read(t, v.data(), v.size() * 4), CNN_OK);
  return v;
}

void write(cnn_tensor *t, const std::vector<float> &v) { ASSERT_EQ(cnn_tensor_write(t, v.data(), v.size() * 4), CNN_OK); }

std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  cnn_rng r;
  cnn_rng_seed(&r, seed);
  std::vector<float> v(n);
  for (auto &x : v) x = lo + (hi - lo) * cnn_rng_uniform(&r);
  return v;
}

// Batchnorm layers get running statistics, gamma and beta away from their initial values, so that inference
// normalization is not the identity.
void perturb_batchnorm(cnn_net *net, uint64_t seed) {
  for (int i = 0; i < net->nlayers; i++) {
    cnn_layer *l = net->layers[i];
    if (l->ops != &cnn_batchnorm_layer_ops) continue;
    size_t c = (size_t)cnn_tensor_numel(l->state[0].value);
    write(l->state[0].value, uniform(c, seed + 4 * i, -0.3f, 0.3f));
    write(l->state[1].value, uniform(c, seed + 4 * i + 1, 0.5f, 2.0f));
    write(l->params[0].value, uniform(c, seed + 4 * i + 2, 0.5f, 1.5f));
    write(l->params[1].value, uniform(c, seed + 4 * i + 3, -0.2f, 0.2f));
  }
}

// f(x) = sum_i sum_k d[i][k] logits_i(x), in double over the network's float logits.
double objective(cnn_grad *g, const std::vector<float> &x, int n, int k, const std::vector<float> &d) {
  std::vector<float> logits((size_t)n * k);
  EXPECT_EQ(cnn_grad_forward(g, x.data(), n, logits.data(), nullptr), CNN_OK) << cnn_last_error();
  double s = 0;
  for (size_t j = 0; j < logits.size(); j++) s += (double)d[j] * logits[j];
  return s;
}

// The input gradient of a network from its text against central differences of the network itself, as a relative
// L2 error over every input element (ReLU and max-pool kinks make single elements unreliable: Caffe's checker
// skips them; the norm absorbs the few that cross one).
void check_input_gradient(const char *text, uint64_t seed, double tolerance, bool normalize = false) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "input_gradient", be.b, seed, &net), CNN_OK) << cnn_last_error();
  perturb_batchnorm(net, seed);
  net->step = 3;  // dropout's mask would depend on it; at inference there is none
  int h, w, c;
  cnn_net_input_shape(net, &h, &w, &c);
  if (normalize) {
    std::vector<float> mean(c), stdev(c);
    for (int j = 0; j < c; j++) {
      mean[j] = 0.2f + 0.1f * j;
      stdev[j] = 0.25f + 0.2f * j;
    }
    ASSERT_EQ(cnn_net_set_normalization(net, c, mean.data(), stdev.data()), CNN_OK);
  }
  const int n = 2, k = cnn_net_num_outputs(net);
  const size_t per = (size_t)h * w * c;
  std::vector<float> x = uniform(n * per, seed + 100, 0.0f, 1.0f), d = uniform((size_t)n * k, seed + 200, -1.0f, 1.0f);
  cnn_grad *g = nullptr;
  ASSERT_EQ(cnn_grad_create(net, n, &g), CNN_OK) << cnn_last_error();
  std::vector<float> dx(n * per);
  ASSERT_EQ(cnn_grad_forward(g, x.data(), n, nullptr, nullptr), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_grad_backward(g, d.data(), dx.data(), -1, nullptr), CNN_OK) << cnn_last_error();
  const float eps = 1e-3f;
  double diff2 = 0, num2 = 0;
  for (size_t i = 0; i < x.size(); i++) {
    const float orig = x[i];
    x[i] = orig + eps;
    double fp = objective(g, x, n, k, d);
    x[i] = orig - eps;
    double fm = objective(g, x, n, k, d);
    x[i] = orig;
    double numeric = (fp - fm) / (2.0 * eps);
    diff2 += (numeric - dx[i]) * (numeric - dx[i]);
    num2 += numeric * numeric + (double)dx[i] * dx[i];
  }
  EXPECT_GT(num2, 1e-8) << "the gradient is zero: nothing was checked";
  EXPECT_LT(std::sqrt(diff2 / (num2 + 1e-30)), tolerance) << text;
  cnn_grad_destroy(g);
  cnn_net_destroy(net);
}

TEST(InputGradients, ConvolutionsWithStridePaddingDilationAndGroupsMatchFiniteDifferences) {
  check_input_gradient(
      "input 7 7 2\n"
      "conv 4 3 tanh stride=2 padding=1\n"
      "conv 4 3 elu dilation=2 padding=same groups=2\n"
      "conv 3 1 sigmoid\n"
      "flatten\n"
      "dense 3\n",
      11, 1e-2);
}

TEST(InputGradients, PoolingLayersMatchFiniteDifferences) {
  check_input_gradient(
      "input 8 8 2\n"
      "conv 3 3 relu padding=same\n"
      "maxpool 2\n"
      "conv 4 3 leaky_relu padding=same\n"
      "avgpool 2\n"
      "conv 4 1 silu\n"
      "globalavgpool\n"
      "dense 3\n",
      12, 2e-2);
}

TEST(InputGradients, DenseLayersAndEveryActivationMatchFiniteDifferences) {
  check_input_gradient(
      "input 3 3 2\n"
      "flatten\n"
      "dense 8 gelu\n"
      "dense 8 silu\n"
      "dense 8 elu\n"
      "dense 8 tanh\n"
      "dense 8 sigmoid\n"
      "dense 8 leaky_relu\n"
      "dense 4 softmax\n",
      13, 1e-2);
}

TEST(InputGradients, BatchnormAtInferenceAndDropoutMatchFiniteDifferences) {
  check_input_gradient(
      "input 6 6 2\n"
      "conv 4 3 padding=same bias=no\n"
      "batchnorm gelu\n"
      "dropout 0.5\n"
      "conv 4 3 padding=same bias=no\n"
      "batchnorm tanh\n"
      "globalavgpool\n"
      "batchnorm\n"
      "dense 3\n",
      14, 1e-2);
}

TEST(InputGradients, ResidualAddsConcatAndFusedBatchnormMatchFiniteDifferences) {
  check_input_gradient(
      "input 6 6 2\n"
      "conv 4 3 padding=same bias=no name=stem\n"
      "batchnorm elu name=x\n"
      "conv 4 3 padding=same bias=no\n"
      "batchnorm\n"
      "add x elu name=r1\n"
      "conv 6 3 tanh stride=2 padding=1 name=main\n"
      "conv 6 1 stride=2 from=r1\n"
      "add main name=r2\n"
      "conv 2 1 elu from=r1 stride=2\n"
      "concat r2 conv2d_4\n"
      "tanh\n"
      "globalavgpool\n"
      "dense 3\n",
      15, 1e-2);
}

// The network input used by two layers (its gradient is a sum) and the model's normalization (the gradient is
// with respect to the [0, 1] pixels, so divided by the std).
TEST(InputGradients, AnInputWithTwoConsumersAndNormalizationMatchFiniteDifferences) {
  check_input_gradient(
      "input 5 5 3\n"
      "conv 2 3 tanh padding=same name=a\n"
      "conv 2 1 elu from=input\n"
      "add a\n"
      "flatten\n"
      "dense 3\n",
      16, 1e-2, true);
}

// A small convolutional net written again in float64 (tests/reference.cc): the engine's input gradient against
// central differences of the float64 forward pass, element by element.
TEST(InputGradients, MatchFiniteDifferencesOfAFloat64Reference) {
  Backend be;
  cnn_net *net = nullptr;
  const char *text =
      "input 6 6 2\n"
      "conv 3 3 tanh\n"
      "flatten\n"
      "dense 4\n";
  ASSERT_EQ(cnn_net_from_text(text, "ref", be.b, 5, &net), CNN_OK) << cnn_last_error();
  const int n = 2, k = 4;
  std::vector<float> x = uniform(n * 72, 7, 0.0f, 1.0f), d = uniform(n * k, 8, -1.0f, 1.0f);
  cnnref::Vec cw, cb, dw, db;
  for (float v : read(net->layers[0]->params[0].value)) cw.push_back(v);
  for (float v : read(net->layers[0]->params[1].value)) cb.push_back(v);
  for (float v : read(net->layers[2]->params[0].value)) dw.push_back(v);
  for (float v : read(net->layers[2]->params[1].value)) db.push_back(v);
  cnnref::Conv2d p;
  p.n = n, p.h = 6, p.w = 6, p.c = 2, p.o = 3, p.kh = 3, p.kw = 3;
  auto f = [&](const cnnref::Vec &xd) {
    cnnref::Vec y = cnnref::activation(CNN_ACT_TANH, 0.0, cnnref::conv2d_forward(p, xd, cw, cb));
    cnnref::Vec z = cnnref::dense_forward(n, 48, k, y, dw, db, false);
    double s = 0;
    for (size_t j = 0; j < z.size(); j++) s += d[j] * z[j];
    return s;
  };
  cnn_grad *g = nullptr;
  ASSERT_EQ(cnn_grad_create(net, n, &g), CNN_OK) << cnn_last_error();
  std::vector<float> dx(x.size());
  ASSERT_EQ(cnn_grad_forward(g, x.data(), n, nullptr, nullptr), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_grad_backward(g, d.data(), dx.data(), -1, nullptr), CNN_OK) << cnn_last_error();
  cnnref::Vec xd(x.begin(), x.end());
  for (size_t i = 0; i < xd.size(); i++) {
    const double orig = xd[i], eps = 1e-6;
    xd[i] = orig + eps;
    double fp = f(xd);
    xd[i] = orig - eps;
    double fm = f(xd);
    xd[i] = orig;
    EXPECT_NEAR(dx[i], (fp - fm) / (2 * eps), 1e-4 + 1e-3 * std::fabs((fp - fm) / (2 * eps))) << "element " << i;
  }
  cnn_grad_destroy(g);
  cnn_net_destroy(net);
}

// The weights' gradients, batchnorm's running statistics, the training step and the trainer's gradient buffers
// are what they were before an input-gradient pass.
TEST(InputGradients, LeaveTheWeightGradientsAndTheTrainingStateAlone) {
  Backend be;
  cnn_net *net = nullptr;
  const char *text =
      "input 6 6 1\n"
      "conv 3 3 bias=no\n"
      "batchnorm relu\n"
      "dropout 0.3\n"
      "flatten\n"
      "dense 3\n";
  ASSERT_EQ(cnn_net_from_text(text, "state", be.b, 2, &net), CNN_OK) << cnn_last_error();
  perturb_batchnorm(net, 9);
  net->step = 17;
  std::vector<std::vector<float>> before;
  int t = 0;
  for (int i = 0; i < net->nlayers; i++) {
    cnn_layer *l = net->layers[i];
    for (int p = 0; p < l->nparams; p++) {
      write(l->params[p].grad, uniform((size_t)cnn_tensor_numel(l->params[p].grad), 50 + t++, -9.0f, 9.0f));
      before.push_back(read(l->params[p].grad));
    }
    for (int s = 0; s < l->nstate; s++) before.push_back(read(l->state[s].value));
  }
  cnn_grad *g = nullptr;
  ASSERT_EQ(cnn_grad_create(net, 3, &g), CNN_OK) << cnn_last_error();
  std::vector<float> x = uniform(3 * 36, 4, 0.0f, 1.0f), d(9, 1.0f), dx(x.size());
  ASSERT_EQ(cnn_grad_forward(g, x.data(), 3, nullptr, nullptr), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_grad_backward(g, d.data(), dx.data(), 0, std::vector<float>(3 * 48).data()), CNN_OK)
      << cnn_last_error();
  double norm = 0;
  for (float v : dx) norm += std::fabs(v);
  EXPECT_GT(norm, 0.0);
  t = 0;
  for (int i = 0; i < net->nlayers; i++) {
    cnn_layer *l = net->layers[i];
    for (int p = 0; p < l->nparams; p++) EXPECT_EQ(read(l->params[p].grad), before[t++]) << l->params[p].name;
    for (int s = 0; s < l->nstate; s++) EXPECT_EQ(read(l->state[s].value), before[t++]) << l->state[s].name;
    EXPECT_EQ(l->infer_grad, 0) << l->name;
  }
  EXPECT_EQ(net->step, 17u);
  cnn_grad_destroy(g);
  cnn_net_destroy(net);
}

// conv -> global average pool -> dense (no activation): the gradient of logit K with respect to the convolution's
// output is W[K][channel] / (H x W) at every position, by hand.
TEST(InputGradients, LayerOutputGradientMatchesTheHandComputedValue) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 5 5 1\nconv 3 3 relu padding=same\nglobalavgpool\ndense 4\n", "layer", be.b, 3,
                              &net),
            CNN_OK)
      << cnn_last_error();
  int conv = cnn_net_layer_find(net, "conv2d");
  ASSERT_EQ(conv, 0);
  EXPECT_EQ(cnn_net_last_conv(net), 0);
  EXPECT_EQ(cnn_net_layer_find(net, "nope"), -1);
  int h, w, c, nd;
  EXPECT_EQ(cnn_net_layer_shape(net, conv, &h, &w, &c, &nd), 75);
  EXPECT_EQ(h * 100 + w * 10 + c, 553);
  std::vector<float> wd = read(net->layers[2]->params[0].value);  // (4, 3)
  cnn_grad *g = nullptr;
  ASSERT_EQ(cnn_grad_create(net, 1, &g), CNN_OK) << cnn_last_error();
  std::vector<float> x = uniform(25, 1, 0.0f, 1.0f), d = {0, 0, 1, 0}, lg(75);
  ASSERT_EQ(cnn_grad_forward(g, x.data(), 1, nullptr, nullptr), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_grad_backward(g, d.data(), nullptr, conv, lg.data()), CNN_OK) << cnn_last_error();
  for (int p = 0; p < 25; p++)
    for (int ch = 0; ch < 3; ch++) EXPECT_NEAR(lg[p * 3 + ch], wd[2 * 3 + ch] / 25.0f, 1e-7) << p << " " << ch;
  cnn_grad_destroy(g);
  cnn_net_destroy(net);
}

}  // namespace
