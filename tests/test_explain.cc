// Trust: gradients with respect to the input and to layer outputs (include/cnn/explain.h) through every layer
// type, against finite differences of the network and of float64 references; they leave the training state alone.
#include <gtest/gtest.h>
#include <stb_image.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "cnn/explain.h"
#include "core/io/json.h"
#include "core/nn/net.h"
#include "core/rng.h"
}
#include "tests/fixtures.h"
#include "tests/reference.h"
#include "tests/util.h"

namespace {

using Backend = cnntest::CpuBackend;

using cnntest::read_tensor;
using cnntest::write_tensor;

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
    write_tensor(l->state[0].value, uniform(c, seed + 4 * i, -0.3f, 0.3f));
    write_tensor(l->state[1].value, uniform(c, seed + 4 * i + 1, 0.5f, 2.0f));
    write_tensor(l->params[0].value, uniform(c, seed + 4 * i + 2, 0.5f, 1.5f));
    write_tensor(l->params[1].value, uniform(c, seed + 4 * i + 3, -0.2f, 0.2f));
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
      "conv 4 1 silu name=c\n"
      "globalavgpool name=gap\n"
      "globalmaxpool from=c name=gmp\n"
      "concat gap gmp\n"
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
      "linear\n"
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
// d f / d v by central differences in float64 of f(v).
template <typename F>
cnnref::Vec numeric_gradient(const cnnref::Vec &v0, F f) {
  cnnref::Vec v = v0, g(v0.size());
  for (size_t i = 0; i < v.size(); i++) {
    const double orig = v[i], eps = 1e-6;
    v[i] = orig + eps;
    double fp = f(v);
    v[i] = orig - eps;
    double fm = f(v);
    v[i] = orig;
    g[i] = (fp - fm) / (2 * eps);
  }
  return g;
}

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
  for (float v : read_tensor(net->layers[0]->params[0].value)) cw.push_back(v);
  for (float v : read_tensor(net->layers[0]->params[1].value)) cb.push_back(v);
  for (float v : read_tensor(net->layers[2]->params[0].value)) dw.push_back(v);
  for (float v : read_tensor(net->layers[2]->params[1].value)) db.push_back(v);
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
  const cnnref::Vec num = numeric_gradient(cnnref::Vec(x.begin(), x.end()), f);
  for (size_t i = 0; i < num.size(); i++)
    EXPECT_NEAR(dx[i], num[i], 1e-4 + 1e-3 * std::fabs(num[i])) << "element " << i;
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
      write_tensor(l->params[p].grad, uniform((size_t)cnn_tensor_numel(l->params[p].grad), 50 + t++, -9.0f, 9.0f));
      before.push_back(read_tensor(l->params[p].grad));
    }
    for (int s = 0; s < l->nstate; s++) before.push_back(read_tensor(l->state[s].value));
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
    for (int p = 0; p < l->nparams; p++) EXPECT_EQ(read_tensor(l->params[p].grad), before[t++]) << l->params[p].name;
    for (int s = 0; s < l->nstate; s++) EXPECT_EQ(read_tensor(l->state[s].value), before[t++]) << l->state[s].name;
    EXPECT_EQ(l->infer_grad, 0) << l->name;
  }
  EXPECT_EQ(net->step, 17u);
  cnn_grad_destroy(g);
  cnn_net_destroy(net);
}

// The gradient buffers are counted against the memory limit before they are allocated.
TEST(InputGradients, BuffersAboveTheMemoryLimitAreRefusedWithAMessage) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 32 32 3\nconv 16 3 relu padding=same\nflatten\ndense 10\n", "big", be.b, 1, &net),
            CNN_OK);
  cnn_set_memory_limit(8 << 20);  // 8 MiB: 1000 images need 1000 x (3072 + 16384 + 10) floats = 74 MiB
  cnn_grad *g = nullptr;
  EXPECT_EQ(cnn_grad_create(net, 1000, &g), CNN_ERR_NO_MEMORY);
  EXPECT_NE(std::string(cnn_last_error()).find("1000 images need"), std::string::npos) << cnn_last_error();
  EXPECT_EQ(g, nullptr);
  EXPECT_EQ(cnn_grad_create(net, 4, &g), CNN_OK) << cnn_last_error();
  cnn_grad_destroy(g);
  cnn_set_memory_limit(0);
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
  std::vector<float> wd = read_tensor(net->layers[2]->params[0].value);  // (4, 3)
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

// ---- explanations against float64 computations ----------------------------------------------------------------

// A small net, written again in float64: conv 3x3 ReLU (7x7x2 -> 5x5x3), conv 3x3 tanh (-> 3x3x2), dense 4.
struct SmallNet {
  Backend be;
  cnn_net *net = nullptr;
  cnnref::Vec w1, b1, w2, b2, wd, bd;
  cnnref::Conv2d p1, p2;
  explicit SmallNet(const char *act1 = "relu") {
    std::string text = std::string("input 7 7 2\nconv 3 3 ") + act1 + "\nconv 2 3 tanh\nflatten\ndense 4\n";
    EXPECT_EQ(cnn_net_from_text(text.c_str(), "small", be.b, 21, &net), CNN_OK) << cnn_last_error();
    auto get = [&](int layer, int p, cnnref::Vec *v) {
      for (float x : read_tensor(net->layers[layer]->params[p].value)) v->push_back(x);
    };
    get(0, 0, &w1), get(0, 1, &b1), get(1, 0, &w2), get(1, 1, &b2), get(3, 0, &wd), get(3, 1, &bd);
    p1.h = p1.w = 7, p1.c = 2, p1.o = 3, p1.kh = p1.kw = 3, p1.relu = !strcmp(act1, "relu");
    p2.h = p2.w = 5, p2.c = 3, p2.o = 2, p2.kh = p2.kw = 3;
    if (strcmp(act1, "relu")) act = CNN_ACT_ELU;
  }
  ~SmallNet() { cnn_net_destroy(net); }
  cnn_act act = CNN_ACT_NONE;  // the first layer's when it is not ReLU (fused in p1 then)
  cnnref::Vec layer1(const cnnref::Vec &x) const {
    cnnref::Vec a = cnnref::conv2d_forward(p1, x, w1, b1);
    return act == CNN_ACT_NONE ? a : cnnref::activation(act, 1.0, a);
  }
  cnnref::Vec head(const cnnref::Vec &a) const {  // the logits from the first layer's output
    cnnref::Vec y = cnnref::activation(CNN_ACT_TANH, 0.0, cnnref::conv2d_forward(p2, a, w2, b2));
    return cnnref::dense_forward(1, 18, 4, y, wd, bd, false);
  }
  double logit(const cnnref::Vec &x, int k) const { return head(layer1(x))[k]; }
};

cnn_explanation explain(cnn_net *net, cnn_explain_method m, const std::vector<float> &x, int target, int cap = 8,
                        void (*tweak)(cnn_explain_config *) = nullptr) {
  cnn_explain_config cfg;
  cnn_explain_config_defaults(&cfg);
  cfg.method = m;
  if (tweak) tweak(&cfg);
  cnn_grad *g = nullptr;
  cnn_explanation e{};
  EXPECT_EQ(cnn_grad_create(net, cap, &g), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_explain_image(g, &cfg, x.data(), target, &e), CNN_OK) << cnn_last_error();
  cnn_grad_destroy(g);
  return e;
}

TEST(Explain, GradCamAndGradCamPlusPlusMatchFloat64Computations) {
  SmallNet s;
  std::vector<float> x = uniform(98, 31, 0.0f, 1.0f);
  cnnref::Vec xd(x.begin(), x.end());
  cnnref::Vec a = s.layer1(xd);  // (5, 5, 3): the first convolution's output
  int checked = 0;
  for (int target = 0; target < 4; target++) {
    cnnref::Vec g = numeric_gradient(a, [&](const cnnref::Vec &v) { return s.head(v)[target]; });
    for (int pp = 0; pp < 2; pp++) {
      std::vector<double> alpha(3, 0.0), cam(25);
      for (int ch = 0; ch < 3; ch++) {
        double sum_a = 0;
        for (int p = 0; p < 25; p++) sum_a += a[p * 3 + ch];
        for (int p = 0; p < 25; p++) {
          double gi = g[p * 3 + ch];
          if (!pp) alpha[ch] += gi / 25.0;
          else if (gi != 0.0) alpha[ch] += gi * gi / (2 * gi * gi + sum_a * gi * gi * gi) * std::max(gi, 0.0);
        }
      }
      double top = 0;
      for (int p = 0; p < 25; p++) {
        double v = 0;
        for (int ch = 0; ch < 3; ch++) v += alpha[ch] * a[p * 3 + ch];
        cam[p] = std::max(v, 0.0);
        top = std::max(top, cam[p]);
      }
      cnn_explanation e = explain(s.net, pp ? CNN_EXPLAIN_GRADCAM_PP : CNN_EXPLAIN_GRADCAM, x, target, 2,
                                  [](cnn_explain_config *c) { c->layer = 0; });
      ASSERT_EQ(e.raw_h * 10 + e.raw_w, 55);
      EXPECT_EQ(e.layer, 0);
      EXPECT_EQ(e.target, target);
      checked += top > 0;
      for (int p = 0; p < 25; p++)
        EXPECT_NEAR(e.raw[p], cam[p], 1e-4 * top + 1e-6) << (pp ? "Grad-CAM++ " : "Grad-CAM ") << target << " " << p;
      cnn_explanation_free(&e);
    }
  }
  EXPECT_GE(checked, 4) << "maps that are zero everywhere check little";
  // the default layer is the last convolution: (3, 3, 2)
  cnn_explanation e = explain(s.net, CNN_EXPLAIN_GRADCAM, x, -1);
  EXPECT_EQ(e.layer, 1);
  EXPECT_EQ(e.raw_h * 10 + e.raw_w, 33);
  cnn_explanation_free(&e);
}

// Grad-CAM at the first convolution (--layer) against float64, and its bilinear upsampling to the input size
// against PyTorch's rule (align_corners=False) written out for one pixel.
TEST(Explain, GradCamAtANamedLayerUpsamplesWithHalfPixelCentres) {
  SmallNet s;
  std::vector<float> x = uniform(98, 32, 0.0f, 1.0f);
  cnn_explanation e = explain(s.net, CNN_EXPLAIN_GRADCAM, x, 0, 4, [](cnn_explain_config *c) { c->layer = 0; });
  ASSERT_EQ(e.raw_h * 10 + e.raw_w, 55);
  ASSERT_EQ(e.h * 10 + e.w, 77);
  // output pixel (3, 4) of 7 from 5: source (3.5 * 5/7 - 0.5, 4.5 * 5/7 - 0.5) = (2.0, 2.714...)
  double sy = 3.5 * 5 / 7 - 0.5, sx = 4.5 * 5 / 7 - 0.5;
  int y0 = (int)sy, x0 = (int)sx;
  double ly = sy - y0, lx = sx - x0;
  auto r = [&](int y, int xx) { return (double)e.raw[y * 5 + xx]; };
  double expect = (1 - ly) * ((1 - lx) * r(y0, x0) + lx * r(y0, x0 + 1)) +
                  ly * ((1 - lx) * r(y0 + 1, x0) + lx * r(y0 + 1, x0 + 1));
  EXPECT_NEAR(e.map[3 * 7 + 4], expect, 1e-6);
  cnn_explanation_free(&e);
}

TEST(Explain, SaliencyMatchesAFloat64Gradient) {
  SmallNet s;
  std::vector<float> x = uniform(98, 33, 0.0f, 1.0f);
  cnnref::Vec xd(x.begin(), x.end());
  cnnref::Vec g = numeric_gradient(xd, [&](const cnnref::Vec &v) { return s.logit(v, 1); });
  cnn_explanation e = explain(s.net, CNN_EXPLAIN_SALIENCY, x, 1);
  double top = 0;
  for (double v : g) top = std::max(top, std::fabs(v));
  for (size_t i = 0; i < g.size(); i++) EXPECT_NEAR(e.raw[i], g[i], 1e-3 * top) << i;
  for (int p = 0; p < 49; p++)
    EXPECT_NEAR(e.map[p], std::max(std::fabs(g[2 * p]), std::fabs(g[2 * p + 1])), 1e-3 * top) << p;
  cnn_explanation_free(&e);
}

// Integrated gradients with a smooth net: completeness (the attributions sum to f(x) - f(baseline)) and the
// float64 midpoint rule with the same steps.
TEST(Explain, IntegratedGradientsSatisfyCompletenessAndMatchFloat64) {
  SmallNet s("elu");
  std::vector<float> x = uniform(98, 34, 0.0f, 1.0f);
  cnnref::Vec xd(x.begin(), x.end()), zero(98, 0.0);
  const int target = 3;
  cnn_explanation e = explain(s.net, CNN_EXPLAIN_INTEGRATED_GRADIENTS, x, target, 16,
                              [](cnn_explain_config *c) { c->steps = 64; });
  double sum = 0;
  for (int i = 0; i < 98; i++) sum += e.raw[i];
  const double delta = s.logit(xd, target) - s.logit(zero, target);
  EXPECT_NEAR(sum, delta, 0.01 * std::fabs(delta) + 1e-4) << "f(x) - f(0) = " << delta;
  cnn_explanation_free(&e);
  // 4 steps: the float64 midpoint rule, element by element
  e = explain(s.net, CNN_EXPLAIN_INTEGRATED_GRADIENTS, x, target, 3, [](cnn_explain_config *c) { c->steps = 4; });
  cnnref::Vec ig(98, 0.0);
  for (int k = 0; k < 4; k++) {
    cnnref::Vec p(98);
    for (int i = 0; i < 98; i++) p[i] = (k + 0.5) / 4 * xd[i];
    cnnref::Vec g = numeric_gradient(p, [&](const cnnref::Vec &v) { return s.logit(v, target); });
    for (int i = 0; i < 98; i++) ig[i] += g[i] / 4 * xd[i];
  }
  double top = 0;
  for (double v : ig) top = std::max(top, std::fabs(v));
  for (int i = 0; i < 98; i++) EXPECT_NEAR(e.raw[i], ig[i], 1e-3 * top) << i;
  cnn_explanation_free(&e);
}

// SmoothGrad without noise is saliency; with noise it is the same for the same seed and differs for another.
TEST(Explain, SmoothGradIsSaliencyWithoutNoiseAndDeterministicPerSeed) {
  SmallNet s;
  std::vector<float> x = uniform(98, 35, 0.0f, 1.0f);
  cnn_explanation sal = explain(s.net, CNN_EXPLAIN_SALIENCY, x, 0);
  cnn_explanation quiet = explain(s.net, CNN_EXPLAIN_SMOOTHGRAD, x, 0, 4, [](cnn_explain_config *c) { c->noise = 0; });
  for (int i = 0; i < 98; i++) EXPECT_NEAR(quiet.raw[i], sal.raw[i], 1e-6 + 1e-5 * std::fabs(sal.raw[i]));
  cnn_explanation a = explain(s.net, CNN_EXPLAIN_SMOOTHGRAD, x, 0, 7);
  cnn_explanation b = explain(s.net, CNN_EXPLAIN_SMOOTHGRAD, x, 0, 4);
  cnn_explanation c = explain(s.net, CNN_EXPLAIN_SMOOTHGRAD, x, 0, 7, [](cnn_explain_config *cf) { cf->seed = 2; });
  int differ = 0;
  for (int i = 0; i < 98; i++) {
    EXPECT_NEAR(a.raw[i], b.raw[i], 1e-6 + 1e-5 * std::fabs(a.raw[i])) << "batches of 7 and of 4, one seed";
    differ += std::fabs(a.raw[i] - c.raw[i]) > 1e-4;
  }
  EXPECT_GT(differ, 10);
  for (auto *e : {&sal, &quiet, &a, &b, &c}) cnn_explanation_free(e);
}

// Occlusion with 2x2 patches on a 7x7 input (stride 2: windows at 0, 2, 4 and 5 flush with the edge) against
// probabilities computed with cnn_net_predict, patch by patch.
TEST(Explain, OcclusionMatchesPredictionsOfOccludedImages) {
  SmallNet s;
  std::vector<float> x = uniform(98, 36, 0.0f, 1.0f);
  const int target = 1;
  cnn_explanation e = explain(s.net, CNN_EXPLAIN_OCCLUSION, x, target, 5, [](cnn_explain_config *c) {
    c->window = 2;
    c->stride = 2;
    c->baseline = 0.5f;
  });
  std::vector<float> probs(4);
  ASSERT_EQ(cnn_net_predict(s.net, x.data(), 1, probs.data()), CNN_OK);
  const double base = probs[target];
  std::vector<double> sum(49, 0.0), cnt(49, 0.0);
  const int origins[] = {0, 2, 4, 5};
  for (int oy : origins)
    for (int ox : origins) {
      std::vector<float> o = x;
      for (int y = oy; y < oy + 2; y++)
        for (int xx = ox; xx < ox + 2; xx++) o[(y * 7 + xx) * 2] = o[(y * 7 + xx) * 2 + 1] = 0.5f;
      ASSERT_EQ(cnn_net_predict(s.net, o.data(), 1, probs.data()), CNN_OK);
      for (int y = oy; y < oy + 2; y++)
        for (int xx = ox; xx < ox + 2; xx++) sum[y * 7 + xx] += base - probs[target], cnt[y * 7 + xx] += 1;
    }
  for (int p = 0; p < 49; p++) {
    ASSERT_GT(cnt[p], 0);
    EXPECT_NEAR(e.map[p], sum[p] / cnt[p], 1e-5) << p;
  }
  cnn_explanation_free(&e);
}

// ---- the sanity check of Adebayo et al. 2018 ---------------------------------------------------------------

double spearman(const std::vector<float> &a, const std::vector<float> &b) {
  auto ranks = [](const std::vector<float> &v) {
    std::vector<size_t> idx(v.size());
    std::iota(idx.begin(), idx.end(), 0);
    std::sort(idx.begin(), idx.end(), [&](size_t i, size_t j) { return v[i] < v[j]; });
    std::vector<double> r(v.size());
    for (size_t i = 0; i < idx.size(); i++) r[idx[i]] = (double)i;
    return r;
  };
  std::vector<double> ra = ranks(a), rb = ranks(b);
  double ma = 0, mb = 0;
  for (size_t i = 0; i < ra.size(); i++) ma += ra[i], mb += rb[i];
  ma /= ra.size(), mb /= rb.size();
  double sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < ra.size(); i++) {
    sab += (ra[i] - ma) * (rb[i] - mb), saa += (ra[i] - ma) * (ra[i] - ma), sbb += (rb[i] - mb) * (rb[i] - mb);
  }
  return sab / std::sqrt(saa * sbb + 1e-30);
}

// Shapes anywhere in a noisy 12x12 image: class 0 a 3x3 square, 1 a 1x5 horizontal bar, 2 a 5x1 vertical bar.
// `box` holds each image's object box, one pixel larger on every side (y0, x0, y1, x1, inclusive).
struct Shapes : cnntest::HostDataset {
  std::vector<int> box;
  Shapes(int n, uint64_t seed) : HostDataset(n, 12, 12, 1, 3), box((size_t)n * 4) {
    cnn_rng r;
    cnn_rng_seed(&r, seed);
    const int hs[3] = {3, 1, 5}, ws[3] = {3, 5, 1};
    for (int i = 0; i < n; i++) {
      const int k = (int)cnn_rng_below(&r, 3);
      labels[i] = k;
      float *img = &images[(size_t)i * 144];
      for (int p = 0; p < 144; p++) img[p] = 0.3f * cnn_rng_uniform(&r);
      const int y0 = (int)cnn_rng_below(&r, (uint32_t)(12 - hs[k] + 1));
      const int x0 = (int)cnn_rng_below(&r, (uint32_t)(12 - ws[k] + 1));
      for (int y = 0; y < hs[k]; y++)
        for (int x = 0; x < ws[k]; x++) img[(y0 + y) * 12 + x0 + x] = 0.8f + 0.2f * cnn_rng_uniform(&r);
      box[i * 4] = y0 - 1, box[i * 4 + 1] = x0 - 1, box[i * 4 + 2] = y0 + hs[k], box[i * 4 + 3] = x0 + ws[k];
    }
  }
};

// A net trained to tell shapes apart wherever they are: its Grad-CAM and saliency maps put their mass on the shape;
// after every weight is shuffled (a cascading randomization of all layers) the maps change, their rank correlation
// with the trained model's is low (Adebayo et al. 2018, "Sanity checks for saliency maps").
TEST(Explain, MapsOfATrainedAndAWeightShuffledModelDiffer) {
  Backend be;
  Shapes data(768, 3);
  cnn_net *net = nullptr;
  const char *text = "input 12 12 1\nconv 8 3 relu padding=same\nconv 8 3 relu padding=same\nglobalavgpool\ndense 3\n";
  ASSERT_EQ(cnn_net_from_text(text, "shapes", be.b, 1, &net), CNN_OK) << cnn_last_error();
  cnn_train_config cfg = cnntest::quiet_train_config(6, 32);
  cfg.lr = 0.01f;
  cfg.seed = 1;
  ASSERT_EQ(cnn_train(net, &data.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  const int nimg = 24;
  std::vector<float> probs(nimg * 3);
  ASSERT_EQ(cnn_net_predict(net, data.images.data(), nimg, probs.data()), CNN_OK);
  int correct = 0;
  for (int i = 0; i < nimg; i++)
    correct += std::max_element(&probs[i * 3], &probs[i * 3 + 3]) - &probs[i * 3] == data.labels[i];
  ASSERT_GE(correct, 20) << "the net did not learn the task; the check needs a trained model";
  auto maps = [&](cnn_explain_method m) {
    std::vector<std::vector<float>> out;
    cnn_grad *g = nullptr;
    EXPECT_EQ(cnn_grad_create(net, 4, &g), CNN_OK);
    cnn_explain_config c;
    cnn_explain_config_defaults(&c);
    c.method = m;
    for (int i = 0; i < nimg; i++) {
      cnn_explanation e{};
      std::vector<float> img(data.images.begin() + i * 144, data.images.begin() + (i + 1) * 144);
      EXPECT_EQ(cnn_explain_image(g, &c, img.data(), data.labels[i], &e), CNN_OK) << cnn_last_error();
      out.emplace_back(e.map, e.map + 144);
      cnn_explanation_free(&e);
    }
    cnn_grad_destroy(g);
    return out;
  };
  const cnn_explain_method methods[] = {CNN_EXPLAIN_GRADCAM, CNN_EXPLAIN_SALIENCY};
  std::vector<std::vector<float>> trained[2];
  for (int m = 0; m < 2; m++) {
    trained[m] = maps(methods[m]);
    double inside = 0, total = 0, area = 0;
    int peak_in = 0;
    for (int i = 0; i < nimg; i++) {
      const int *b = &data.box[i * 4];
      auto in_box = [&](int p) { return p / 12 >= b[0] && p / 12 <= b[2] && p % 12 >= b[1] && p % 12 <= b[3]; };
      for (int p = 0; p < 144; p++) {
        total += trained[m][i][p];
        if (in_box(p)) inside += trained[m][i][p], area += 1.0 / 144;
      }
      peak_in += in_box((int)(std::max_element(trained[m][i].begin(), trained[m][i].end()) - trained[m][i].begin()));
    }
    area /= nimg;  // the boxes' mean share of the image: what a map spread evenly would put inside
    // saliency is the noisier of the two (measured: 1.6x the even share, the peak on the shape in 14 of 24
    // images; Grad-CAM 2x and 18 or more)
    EXPECT_GT(inside / total, (m ? 1.3 : 2.0) * area) << cnn_explain_method_name(methods[m]);
    EXPECT_GE(peak_in, m ? nimg / 2 : nimg * 3 / 4)
        << cnn_explain_method_name(methods[m]) << ": the peak is on the shape";
  }
  cnn_rng r;
  cnn_rng_seed(&r, 99);
  for (int i = 0; i < net->nlayers; i++)
    for (int p = 0; p < net->layers[i]->nparams; p++) {
      std::vector<float> v = read_tensor(net->layers[i]->params[p].value);
      for (size_t j = v.size(); j > 1; j--) std::swap(v[j - 1], v[cnn_rng_below(&r, (uint32_t)j)]);
      write_tensor(net->layers[i]->params[p].value, v);
    }
  for (int m = 0; m < 2; m++) {
    std::vector<std::vector<float>> shuffled = maps(methods[m]);
    double rho = 0;
    for (int i = 0; i < nimg; i++) rho += spearman(trained[m][i], shuffled[i]);
    rho /= nimg;
    EXPECT_LT(rho, 0.5) << cnn_explain_method_name(methods[m]);
    EXPECT_NEAR(spearman(trained[m][0], trained[m][0]), 1.0, 1e-9);
  }
  cnn_net_destroy(net);
}

// ---- bad requests ---------------------------------------------------------------------------------------------

TEST(Explain, BadRequestsGetClearMessages) {
  SmallNet s;
  std::vector<float> x = uniform(98, 37, 0.0f, 1.0f);
  cnn_grad *g = nullptr;
  ASSERT_EQ(cnn_grad_create(s.net, 2, &g), CNN_OK);
  cnn_explain_config c;
  cnn_explain_config_defaults(&c);
  cnn_explanation e{};
  EXPECT_EQ(cnn_explain_image(g, &c, x.data(), 4, &e), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("class 4 is out of range: the model has 4 classes"), std::string::npos)
      << cnn_last_error();
  c.layer = 3;  // the dense layer: flat
  EXPECT_EQ(cnn_explain_image(g, &c, x.data(), 0, &e), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("dense"), std::string::npos) << cnn_last_error();
  c.layer = 9;
  EXPECT_EQ(cnn_explain_image(g, &c, x.data(), 0, &e), CNN_ERR_NOT_FOUND);
  cnn_explain_method m;
  EXPECT_EQ(cnn_explain_method_parse("lime", &m), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("integrated-gradients"), std::string::npos);
  ASSERT_EQ(cnn_explain_method_parse("gradcam++", &m), CNN_OK);
  EXPECT_EQ(m, CNN_EXPLAIN_GRADCAM_PP);
  cnn_grad_destroy(g);
  // no convolution: Grad-CAM is refused, saliency works
  Backend be;
  cnn_net *mlp = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 4 4 1\nflatten\ndense 3\n", "mlp.cnn", be.b, 1, &mlp), CNN_OK);
  ASSERT_EQ(cnn_grad_create(mlp, 1, &g), CNN_OK);
  cnn_explain_config_defaults(&c);
  std::vector<float> y(16, 0.5f);
  EXPECT_EQ(cnn_explain_image(g, &c, y.data(), -1, &e), CNN_ERR_NOT_FOUND);
  EXPECT_NE(std::string(cnn_last_error()).find("needs a convolution, and mlp.cnn has none"), std::string::npos)
      << cnn_last_error();
  c.method = CNN_EXPLAIN_SALIENCY;
  EXPECT_EQ(cnn_explain_image(g, &c, y.data(), -1, &e), CNN_OK) << cnn_last_error();
  cnn_explanation_free(&e);
  cnn_grad_destroy(g);
  cnn_net_destroy(mlp);
}

// ---- files ----------------------------------------------------------------------------------------------------

TEST(Explain, NpyFilesHaveNumpysHeaderAndTheFloats) {
  cnntest::TempDir dir;
  std::vector<float> v = {1.5f, -2.0f, 0.25f, 3.0f, 4.0f, 5.0f};
  int64_t shape[2] = {2, 3};
  ASSERT_EQ(cnn_npy_write(dir.file("a.npy").c_str(), v.data(), 2, shape), CNN_OK) << cnn_last_error();
  std::ifstream f(dir.file("a.npy"), std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size() % 64, 24u) << "a 64-byte aligned header, then 6 floats";
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  size_t hl = (unsigned char)bytes[8] | (unsigned char)bytes[9] << 8;
  ASSERT_EQ(10 + hl, bytes.size() - 24);
  std::string dict = bytes.substr(10, hl);
  EXPECT_NE(dict.find("'descr': '<f4'"), std::string::npos) << dict;
  EXPECT_NE(dict.find("'shape': (2, 3)"), std::string::npos) << dict;
  EXPECT_EQ(dict.back(), '\n');
  EXPECT_EQ(std::memcmp(bytes.data() + 10 + hl, v.data(), 24), 0);
}

TEST(Explain, RenderedPanelsShowTheImageTheMapAndTheOverlay) {
  SmallNet s;
  std::vector<float> x(98, 0.0f);
  cnn_explanation e = explain(s.net, CNN_EXPLAIN_SALIENCY, x, 0);
  for (int p = 0; p < 49; p++) e.map[p] = p == 0 ? 1.0f : 0.0f;  // one hot pixel: red under jet, the rest blue
  const char *lines[] = {"predicted: 0 (0.50)", "explained: 0"};
  unsigned char *rgb = nullptr;
  int w = 0, h = 0;
  ASSERT_EQ(cnn_explain_render(&e, x.data(), 2, lines, 2, &rgb, &w, &h), CNN_OK);
  EXPECT_EQ(w, 3 * 14 + 2 * 4 + 2 * 4);
  EXPECT_EQ(h, 14 + 2 * 4 + 2 * 10 + 4);
  auto px = [&](int y, int xx, int ch) { return (int)rgb[((size_t)y * w + xx) * 3 + ch]; };
  EXPECT_EQ(px(4, 4, 0), 0) << "the image is black";
  const int heat = 4 + 14 + 4, overlay = heat + 14 + 4;
  EXPECT_EQ(px(4, heat, 0), 128) << "jet(1) = (0.5, 0, 0)";
  EXPECT_EQ(px(4 + 2, heat + 2, 2), 128) << "jet(0) = (0, 0, 0.5)";
  EXPECT_EQ(px(4, overlay, 0), 64) << "half the image, half the heat";
  int dark = 0;
  for (int y = 4 + 14 + 4; y < h; y++)
    for (int xx = 0; xx < w; xx++) dark += px(y, xx, 0) == 0;
  EXPECT_GT(dark, 50) << "the caption is drawn";
  free(rgb);
  cnn_explanation_free(&e);
}

// ---- cnn explain ----------------------------------------------------------------------------------------------

using cnntest::has;

// A small convolutional model file and two PNG images in a temporary directory.
struct ExplainFiles {
  cnntest::TempDir dir;
  std::string model, mlp, img1, img2;
  ExplainFiles() {
    Backend be;
    cnn_net *net = nullptr;
    model = dir.file("m.safetensors");
    mlp = dir.file("mlp.safetensors");
    EXPECT_EQ(cnn_net_from_text("input 8 8 1\nconv 4 3 relu padding=same name=features\nmaxpool 2\nflatten\ndense 3\n",
                                "m", be.b, 1, &net),
              CNN_OK);
    const char *names[] = {"circle", "square", "bar"};
    EXPECT_EQ(cnn_net_set_class_names(net, 3, names), CNN_OK);
    EXPECT_EQ(cnn_net_save(net, model.c_str()), CNN_OK) << cnn_last_error();
    cnn_net_destroy(net);
    EXPECT_EQ(cnn_net_from_text("input 8 8 1\nflatten\ndense 3\n", "mlp", be.b, 1, &net), CNN_OK);
    EXPECT_EQ(cnn_net_save(net, mlp.c_str()), CNN_OK) << cnn_last_error();
    cnn_net_destroy(net);
    img1 = dir.file("one.png");
    img2 = dir.file("two words.png");
    std::vector<unsigned char> px(64);
    for (int i = 0; i < 64; i++) px[i] = (unsigned char)(i * 4);
    EXPECT_EQ(cnn_png_write(img1.c_str(), 8, 8, 1, px.data()), CNN_OK);
    EXPECT_EQ(cnn_png_write(img2.c_str(), 8, 8, 1, px.data()), CNN_OK);
  }
};

TEST(ExplainCli, WritesAPanelMapsAContactSheetAndAnIndexPerImage) {
  ExplainFiles f;
  const std::string out = f.dir.file("out");
  for (const char *m : {"gradcam", "gradcam++", "saliency", "smoothgrad", "integrated-gradients", "occlusion"}) {
    std::string log;
    std::vector<std::string> args = {"explain", "--model", f.model, "--method", m, "--out", out, "--device", "cpu",
                                     f.img1, f.img2};
    if (!strcmp(m, "gradcam")) args.insert(args.end(), {"--layer", "features", "--class", "2"});
    ASSERT_EQ(cnntest::run_cnn(args, &log), 0) << m << ": " << log;
    EXPECT_TRUE(has(log, "-> " + out + "/001_two_words.png")) << log;
    for (const char *name : {"000_one.png", "000_one.npy", "000_one.raw.npy", "001_two_words.png", "contact_sheet.png",
                             "explanations.csv"}) {
      struct stat sb;
      EXPECT_EQ(stat((out + "/" + name).c_str(), &sb), 0) << m << ": " << name;
    }
    std::string csv = cnntest::read_file(out + "/explanations.csv");
    EXPECT_TRUE(has(csv, std::string("000_one,") + m + ",")) << csv;
    if (!strcmp(m, "gradcam")) {
      EXPECT_TRUE(has(log, "explained bar (2)")) << log;
      EXPECT_TRUE(has(csv, ",2,")) << csv;
    }
  }
  int w, h, c;
  unsigned char *px = stbi_load((out + "/contact_sheet.png").c_str(), &w, &h, &c, 3);
  ASSERT_NE(px, nullptr);
  EXPECT_GT(w, 2 * 3 * 8 * 4);  // two panels of three pictures, scaled 4 times
  stbi_image_free(px);
}

TEST(ExplainCli, BadRequestsExitWithStatus2AndNameTheCulprit) {
  ExplainFiles f;
  struct Case {
    std::vector<std::string> args;
    int status;
    std::string message;
  } cases[] = {
      {{"explain", "--model", f.model, "--layer", "conv9", f.img1}, 2, "has no layer named 'conv9'"},
      {{"explain", "--model", f.model, "--class", "3", f.img1}, 2, "--class: 3 is out of range"},
      {{"explain", "--model", f.model, "--class", "-2", f.img1}, 2, "--class"},
      {{"explain", "--model", f.model, "--method", "lime", f.img1}, 2, "--method: unknown explanation method 'lime'"},
      {{"explain", "--model", f.mlp, f.img1}, 2, "has no convolution to explain"},
      {{"explain", "--model", f.model, "--layer", "dense", f.img1}, 2, "--layer: layer dense's output is flat"},
      {{"explain", "--model", f.model, "--method", "saliency", "--layer", "features", f.img1},
       2,
       "--layer: only gradcam"},
      {{"explain", "--model", f.model}, 2, "give IMAGE files or --data SPEC"},
      {{"explain", f.img1}, 2, "--model FILE is required"},
      {{"explain", "--model", f.dir.file("none.safetensors"), f.img1}, 1, "--model"},
      {{"explain", "--model", f.model, "--out", f.dir.file("o"), f.dir.file("missing.png")}, 1, "missing.png"},
  };
  for (const auto &cs : cases) {
    std::string log;
    EXPECT_EQ(cnntest::run_cnn(cs.args, &log), cs.status) << log;
    EXPECT_TRUE(has(log, cs.message)) << "wanted '" << cs.message << "' in: " << log;
  }
  // the mlp explains with saliency
  std::string log;
  EXPECT_EQ(cnntest::run_cnn({"explain", "--model", f.mlp, "--method", "saliency", "--out", f.dir.file("s"), f.img1},
                             &log),
            0)
      << log;
}

// ---- attacks --------------------------------------------------------------------------------------------------

double xent64(const SmallNet &s, const cnnref::Vec &x, int label) {
  cnnref::Vec z = s.head(s.layer1(x));
  double m = *std::max_element(z.begin(), z.end()), sum = 0;
  for (double v : z) sum += std::exp(v - m);
  return -(z[label] - m - std::log(sum));
}

// FGSM and three PGD steps against the same attacks written in float64 with finite-difference gradients of the
// cross-entropy: element by element, where the gradient's sign is clear (|g| above 1e-4 of the largest).
TEST(Attacks, FgsmAndPgdMatchAFloat64Reference) {
  SmallNet s;
  std::vector<float> x = uniform(98, 41, 0.0f, 1.0f);
  const int32_t label = 2;
  for (int method = 0; method < 2; method++) {
    const double eps = 0.05, alpha = 0.02;
    const int steps = method ? 3 : 1;
    cnnref::Vec x0(x.begin(), x.end()), a = x0;
    int unclear = 0;
    for (int t = 0; t < steps; t++) {
      cnnref::Vec g = numeric_gradient(a, [&](const cnnref::Vec &v) { return xent64(s, v, label); });
      double top = 0;
      for (double v : g) top = std::max(top, std::fabs(v));
      for (size_t i = 0; i < a.size(); i++) {
        if (std::fabs(g[i]) < 1e-4 * top) unclear++;
        double step = (method ? alpha : eps) * ((g[i] > 0) - (g[i] < 0));
        a[i] = std::min(std::max(a[i] + step, x0[i] - eps), x0[i] + eps);
        a[i] = std::min(std::max(a[i], 0.0), 1.0);
      }
    }
    EXPECT_LT(unclear, 5) << "too many near-zero gradients to compare signs";
    cnn_attack_config cfg = cnntest::attack_config(method ? CNN_ATTACK_PGD : CNN_ATTACK_FGSM, (float)eps, steps);
    cfg.alpha = (float)alpha;
    cnn_grad *g = nullptr;
    ASSERT_EQ(cnn_grad_create(s.net, 1, &g), CNN_OK);
    std::vector<float> adv(98);
    ASSERT_EQ(cnn_attack_images(g, &cfg, x.data(), &label, 1, 0, adv.data()), CNN_OK) << cnn_last_error();
    int differ = 0;
    for (size_t i = 0; i < adv.size(); i++) differ += std::fabs(adv[i] - a[i]) > 1e-5;
    EXPECT_LE(differ, unclear) << (method ? "PGD" : "FGSM");
    EXPECT_GT(xent64(s, cnnref::Vec(adv.begin(), adv.end()), label), xent64(s, x0, label)) << "the loss went up";
    cnn_grad_destroy(g);
  }
}

// Images at the edges of [0, 1], every attack, with and without random starts: every pixel stays in [0, 1] and
// within eps of its original; eps 0 changes nothing.
TEST(Attacks, NeverLeaveTheImageRangeOrTheEpsBall) {
  SmallNet s;
  const int n = 6;
  std::vector<float> x = uniform(n * 98, 42, 0.0f, 1.0f);
  for (size_t i = 0; i < x.size(); i++)
    if (i % 3 == 0) x[i] = (i / 3) % 2 ? 1.0f : 0.0f;
  std::vector<int32_t> labels = {0, 1, 2, 3, 0, 1};
  cnn_grad *g = nullptr;
  ASSERT_EQ(cnn_grad_create(s.net, 4, &g), CNN_OK);
  for (int method = 0; method < 2; method++)
    for (int rs = 0; rs < 2; rs++)
      for (float eps : {0.0f, 0.03f, 0.3f, 1.0f}) {
        cnn_attack_config cfg = cnntest::attack_config(method ? CNN_ATTACK_PGD : CNN_ATTACK_FGSM, eps, 5);
        cfg.random_start = rs;
        std::vector<float> adv(x.size(), -7.0f);
        ASSERT_EQ(cnn_attack_images(g, &cfg, x.data(), labels.data(), n, 0, adv.data()), CNN_OK) << cnn_last_error();
        for (size_t i = 0; i < x.size(); i++) {
          ASSERT_GE(adv[i], 0.0f) << i;
          ASSERT_LE(adv[i], 1.0f) << i;
          ASSERT_LE(std::fabs(adv[i] - x[i]), eps + 1e-6f) << i;
        }
        if (eps == 0.0f) {
          EXPECT_EQ(adv, x);
        }
      }
  cnn_grad_destroy(g);
}

// Random starts depend on (seed, index) alone: the same images attacked in passes of 1 or of 4 agree; another seed
// differs.
TEST(Attacks, RandomStartsAreDeterministicPerSeedAndIndex) {
  SmallNet s;
  std::vector<float> x = uniform(5 * 98, 43, 0.0f, 1.0f);
  std::vector<int32_t> labels = {0, 1, 2, 3, 0};
  cnn_attack_config cfg = cnntest::attack_config(CNN_ATTACK_PGD, 0.1f, 2);
  cfg.random_start = 1;
  auto run = [&](int cap, uint64_t seed) {
    cnn_grad *g = nullptr;
    EXPECT_EQ(cnn_grad_create(s.net, cap, &g), CNN_OK);
    cfg.seed = seed;
    std::vector<float> adv(x.size());
    EXPECT_EQ(cnn_attack_images(g, &cfg, x.data(), labels.data(), 5, 100, adv.data()), CNN_OK);
    cnn_grad_destroy(g);
    return adv;
  };
  std::vector<float> a = run(1, 5), b = run(4, 5), c = run(4, 6);
  for (size_t i = 0; i < a.size(); i++) EXPECT_NEAR(a[i], b[i], 1e-6) << i;
  EXPECT_NE(a, c);
}

TEST(Attacks, BadSettingsGetClearMessages) {
  cnn_attack_config cfg;
  cnn_attack_config_defaults(&cfg);
  cfg.eps = -0.1f;
  EXPECT_EQ(cnn_attack_check(&cfg), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("eps must be in [0, 1]"), std::string::npos) << cnn_last_error();
  cfg.eps = 0.1f;
  cfg.method = CNN_ATTACK_PGD;
  cfg.steps = 0;
  EXPECT_EQ(cnn_attack_check(&cfg), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("steps"), std::string::npos);
  cnn_attack_method m;
  EXPECT_EQ(cnn_attack_parse("cw", &m), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("unknown attack 'cw' (known: fgsm, pgd)"), std::string::npos);
  // a label outside the model's classes
  SmallNet s;
  cnn_grad *g = nullptr;
  ASSERT_EQ(cnn_grad_create(s.net, 1, &g), CNN_OK);
  cfg.steps = 1;
  std::vector<float> x(98, 0.5f), adv(98);
  int32_t label = 4;
  EXPECT_EQ(cnn_attack_images(g, &cfg, x.data(), &label, 1, 0, adv.data()), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("label 4"), std::string::npos) << cnn_last_error();
  cnn_grad_destroy(g);
}

// cnn eval --attack and cnn attack on a small IDX data set (the quadrant task) with a model trained on it.
TEST(AttackCli, EvalReportsAccuracyUnderAttackAndAttackWritesThePairs) {
  cnntest::TempDir dir;
  for (const char *prefix : {"train", "t10k"}) cnntest::write_quadrant_idx(dir.path(), prefix, 200, 7);
  cnntest::write_file(dir.file("net.cnn"), "input 12 12 1\nconv 4 3 relu\nmaxpool 2\nflatten\ndense 4\n");
  const std::string data = "mnist:" + dir.path(), model = dir.file("m.safetensors");
  std::string log;
  ASSERT_EQ(cnntest::run_cnn({"train", "--model", dir.file("net.cnn"), "--data", data, "--epochs", "3", "--quiet",
                              "--device", "cpu", "--out", model, "--normalize"},
                             &log),
            0)
      << log;
  ASSERT_EQ(cnntest::run_cnn({"eval", "--model", model, "--data", data, "--attack", "pgd", "--eps", "0.3", "--steps",
                              "5", "--random-start", "--metrics-json", dir.file("m.json"), "--device", "cpu"},
                             &log),
            0)
      << log;
  EXPECT_TRUE(has(log, "accuracy under attack")) << log;
  std::string json = cnntest::read_file(dir.file("m.json"));
  cnn_json *root = nullptr;
  ASSERT_EQ(cnn_json_parse(json.data(), json.size(), &root), CNN_OK) << cnn_last_error() << json;
  const cnn_json *atk = cnn_json_get(root, "attack");
  const char *method = cnn_json_string(cnn_json_get(atk, "method"), nullptr);
  EXPECT_STREQ(method ? method : "", "pgd") << json;
  int random_start = 0;
  EXPECT_TRUE(cnn_json_bool(cnn_json_get(atk, "random_start"), &random_start) && random_start) << json;
  int64_t samples = 0, steps = 0;
  EXPECT_TRUE(cnn_json_int64(cnn_json_get(atk, "samples"), &samples)) << json;
  EXPECT_EQ(samples, 200);
  EXPECT_TRUE(cnn_json_int64(cnn_json_get(atk, "steps"), &steps)) << json;
  EXPECT_EQ(steps, 5);
  double eps = 0, acc = -1, clean = -1;
  EXPECT_TRUE(cnn_json_double(cnn_json_get(atk, "eps"), &eps) && std::fabs(eps - 0.3) < 1e-6) << json;
  EXPECT_TRUE(cnn_json_double(cnn_json_get(atk, "accuracy"), &acc) && acc >= 0 && acc <= 1) << json;
  EXPECT_TRUE(cnn_json_double(cnn_json_get(atk, "clean_accuracy"), &clean) && clean >= 0 && clean <= 1) << json;
  cnn_json_free(root);
  ASSERT_EQ(cnntest::run_cnn({"attack", "--model", model, "--data", data, "--samples", "3", "--eps", "0.2", "--out",
                              dir.file("adv"), "--device", "cpu"},
                             &log),
            0)
      << log;
  for (const char *f : {"000_sample0.png", "000_sample0.adv.png", "pairs.png", "attack.csv"}) {
    struct stat sb;
    EXPECT_EQ(stat(dir.file(std::string("adv/") + f).c_str(), &sb), 0) << f;
  }
  // the adversarial PNG stays within eps of the original, in 8-bit steps
  int w, h, c, w2, h2, c2;
  unsigned char *a = stbi_load(dir.file("adv/000_sample0.png").c_str(), &w, &h, &c, 1);
  unsigned char *b = stbi_load(dir.file("adv/000_sample0.adv.png").c_str(), &w2, &h2, &c2, 1);
  ASSERT_TRUE(a && b);
  int most = 0, changed = 0;
  for (int i = 0; i < w * h; i++) most = std::max(most, std::abs(a[i] - b[i])), changed += a[i] != b[i];
  EXPECT_LE(most, 52) << "0.2 x 255 = 51, plus rounding";
  EXPECT_GT(changed, 10);
  stbi_image_free(a);
  stbi_image_free(b);
  const std::vector<cnntest::RefusedArgs> cases = {
      {{"eval", "--model", model, "--data", data, "--attack", "fgsm", "--eps", "-0.1"}, "--eps: must be from 0 to 1"},
      {{"eval", "--model", model, "--data", data, "--attack", "fgsm"}, "--eps: required with --attack"},
      {{"eval", "--model", model, "--data", data, "--attack", "cw", "--eps", "0.1"}, "--attack: unknown attack 'cw'"},
      {{"eval", "--model", model, "--data", data, "--eps", "0.1"}, "--eps: needs --attack"},
      {{"attack", "--model", model, "--data", data, "--eps", "1.5"}, "--eps: must be from 0 to 1"},
      {{"attack", "--model", model, "--data", data}, "--eps: required"},
      {{"attack", "--model", model, "--eps", "0.1", "--class", "4", dir.file("adv/000_sample0.png")},
       "--class: 4 is out of range"},
  };
  cnntest::expect_refused({}, cases, 2);
}

// ---- adversarial training -------------------------------------------------------------------------------------

// The quadrant task as IDX files (mnist:DIR) with a small model definition, for cnn train.
struct QuadrantFiles {
  cnntest::TempDir dir;
  std::string data, net;
  explicit QuadrantFiles(int ntrain = 300, int ntest = 100) {
    auto be32 = [](std::string *s, uint32_t v) {
      for (int i = 3; i >= 0; i--) s->push_back((char)((v >> (8 * i)) & 0xff));
    };
    const char *prefixes[] = {"train", "t10k"};
    for (int p = 0; p < 2; p++) {
      cnntest::Quadrants q(p ? ntest : ntrain, 11 + p);
      std::string img, lab;
      be32(&img, 0x803), be32(&img, (uint32_t)q.labels.size()), be32(&img, 12), be32(&img, 12);
      for (float v : q.images) img.push_back((char)(unsigned char)std::lround(v * 255.0f));
      be32(&lab, 0x801), be32(&lab, (uint32_t)q.labels.size());
      for (int32_t l : q.labels) lab.push_back((char)l);
      cnntest::write_file(dir.file(std::string(prefixes[p]) + "-images-idx3-ubyte"), img);
      cnntest::write_file(dir.file(std::string(prefixes[p]) + "-labels-idx1-ubyte"), lab);
    }
    data = "mnist:" + dir.path();
    net = dir.file("net.cnn");
    cnntest::write_file(net, "input 12 12 1\nconv 4 3 relu\nmaxpool 2\nconv 8 3 relu\nflatten\ndropout 0.2\ndense 4\n");
  }
  std::vector<std::string> train(const std::string &out, int epochs, std::vector<std::string> more) const {
    std::vector<std::string> a = {"train", "--model", net, "--data", data, "--epochs", std::to_string(epochs),
                                  "--batch", "32", "--quiet", "--device", "cpu", "--out", out, "--normalize",
                                  "--val-split", "0"};
    a.insert(a.end(), more.begin(), more.end());
    return a;
  }
};

// PGD training with random starts and FGSM training: two runs with one seed write identical model files; a run
// stopped after one epoch and resumed from its checkpoint writes the same file as one run of two epochs.
TEST(AdversarialTraining, IsDeterministicAndResumesExactly) {
  QuadrantFiles f;
  const std::vector<std::string> kinds[] = {
      {"--adversarial", "pgd", "--eps", "0.1", "--steps", "3", "--random-start", "--seed", "4"},
      {"--adversarial", "fgsm", "--eps", "0.2", "--adv-ratio", "0.5", "--seed", "4"}};
  for (const auto &adv : kinds) {
    std::string log;
    ASSERT_EQ(cnntest::run_cnn(f.train(f.dir.file("a.safetensors"), 2, adv), &log), 0) << log;
    ASSERT_EQ(cnntest::run_cnn(f.train(f.dir.file("b.safetensors"), 2, adv), &log), 0) << log;
    EXPECT_EQ(cnntest::read_file(f.dir.file("a.safetensors")), cnntest::read_file(f.dir.file("b.safetensors")))
        << adv[1];
    std::vector<std::string> first = adv, second = adv;
    const std::string ck = f.dir.file("ck-" + adv[1]);
    first.insert(first.end(), {"--checkpoint-dir", ck});
    second.insert(second.end(), {"--resume", ck});
    ASSERT_EQ(cnntest::run_cnn(f.train(f.dir.file("c.safetensors"), 1, first), &log), 0) << log;
    ASSERT_EQ(cnntest::run_cnn(f.train(f.dir.file("c.safetensors"), 2, second), &log), 0) << log;
    EXPECT_EQ(cnntest::read_file(f.dir.file("a.safetensors")), cnntest::read_file(f.dir.file("c.safetensors")))
        << adv[1] << ": resumed";
    // the checkpoint holds the adversarial settings: another eps is refused
    std::vector<std::string> other = second;
    for (size_t i = 0; i + 1 < other.size(); i++)
      if (other[i] == "--eps") other[i + 1] = "0.05";
    EXPECT_EQ(cnntest::run_cnn(f.train(f.dir.file("d.safetensors"), 2, other), &log), 1) << log;
    EXPECT_TRUE(has(log, "adv_eps")) << log;
  }
  // an adversarial run differs from a plain one
  std::string log;
  ASSERT_EQ(cnntest::run_cnn(f.train(f.dir.file("p.safetensors"), 2, {"--seed", "4"}), &log), 0) << log;
  EXPECT_NE(cnntest::read_file(f.dir.file("a.safetensors")), cnntest::read_file(f.dir.file("p.safetensors")));
}

// On the quadrant task, a PGD-trained model keeps its accuracy under PGD (eps 0.1) where a plainly trained one
// loses much of it (measured: 0.995 against 0.555).
TEST(AdversarialTraining, MakesTheModelMoreRobustUnderAttack) {
  QuadrantFiles f(1000, 200);
  std::string log;
  const std::vector<std::string> common = {"--lr", "0.003"};
  std::vector<std::string> adv = common;
  adv.insert(adv.end(), {"--adversarial", "pgd", "--eps", "0.1", "--steps", "4"});
  ASSERT_EQ(cnntest::run_cnn(f.train(f.dir.file("plain.safetensors"), 6, common), &log), 0) << log;
  ASSERT_EQ(cnntest::run_cnn(f.train(f.dir.file("robust.safetensors"), 6, adv), &log), 0) << log;
  auto accuracies = [&](const std::string &model) {
    std::string out;
    EXPECT_EQ(cnntest::run_cnn({"eval", "--model", model, "--data", f.data, "--attack", "pgd", "--eps", "0.1",
                                "--steps", "10", "--metrics-json", f.dir.file("e.json"), "--device", "cpu"},
                               &out),
              0)
        << out;
    std::string json = cnntest::read_file(f.dir.file("e.json"));
    size_t attack = json.find("\"attack\""), clean = json.find("\"clean_accuracy\": ", attack),
           at = json.find("\"accuracy\": ", attack);
    EXPECT_TRUE(attack != std::string::npos && clean != std::string::npos && at != std::string::npos) << json;
    if (attack == std::string::npos || clean == std::string::npos || at == std::string::npos)
      return std::make_pair(-1.0, -1.0);
    return std::make_pair(std::stod(json.substr(clean + 18)), std::stod(json.substr(at + 12)));
  };
  auto plain = accuracies(f.dir.file("plain.safetensors"));
  auto robust = accuracies(f.dir.file("robust.safetensors"));
  EXPECT_GE(robust.first, 0.9) << "the PGD-trained model's clean accuracy";
  EXPECT_GT(robust.second, plain.second + 0.2) << "under PGD: plain " << plain.second << ", PGD-trained "
                                               << robust.second;
}

TEST(AdversarialTraining, BadFlagsNameTheFlag) {
  QuadrantFiles f;
  const std::vector<cnntest::RefusedArgs> cases = {
      {{"--adversarial", "cw", "--eps", "0.1"}, "--adversarial: unknown attack 'cw'"},
      {{"--adversarial", "pgd"}, "--eps: required with --adversarial"},
      {{"--adversarial", "pgd", "--eps", "-1"}, "--eps: must be from 0 to 1"},
      {{"--adversarial", "fgsm", "--eps", "0.1", "--adv-ratio", "1.5"}, "--adv-ratio"},
      {{"--eps", "0.1"}, "--eps: needs --adversarial"},
  };
  cnntest::expect_refused(f.train(f.dir.file("x.safetensors"), 1, {}), cases, 2);
}

}  // namespace
