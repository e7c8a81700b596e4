// The op conformance suite (docs/ARCHITECTURE.md, "Testing the ops"): one table of op cases (the op, its shapes and
// parameters, the dtype, the error bounds) and one runner that runs each case, forward and backward, on every
// backend this build has, in the manner of ggml's test-backend-ops:
// - the CPU backend against the float64 references of tests/reference.h: forward values, and gradients against
//   central finite differences of the reference;
// - every other backend against the CPU backend on the same inputs, as normalized mean squared error with a bound
//   per row (16-bit rows: the CPU computes in f32 on the inputs rounded to the row's dtype).
// Every output is filled with NaN before the op (an element it forgets shows up) and has sentinel bytes before and
// after it (a stray write shows up). A backend without a device here (CUDA on a machine without a GPU, or a build
// without it) skips its rows with "no CUDA device: ..."; CNN_REQUIRE_CUDA=1 makes that a failure instead.
//
// What is not an op case of this kind (error paths, plan caching, bit-identity of fused and separate ops, the
// backends' own features) stays in test_ops_cpu.cc and test_cuda.cc.
#include <gtest/gtest.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cnn/backend.h"
#include "cnn/status.h"
#include "cnn/tensor.h"
#include "core/backend.h"
#include "core/ops.h"
#include "tests/op_util.h"
#include "tests/reference.h"

namespace {

using cnnref::Vec;
using BTensor = cnntest::DeviceTensor;
using cnntest::conv_params;
using cnntest::conv_shapes;
using cnntest::dot;
using cnntest::finite_differences;
using cnntest::kFdStep;
using cnntest::nmse;
using cnntest::random_floats;
using cnntest::rounded;
using cnntest::to_double;

// ---------------------------------------------------------------------------------------------------------------
// bounds

// CPU against the reference, relative to the largest magnitude of the reference output (cnnref::max_rel_error):
// f32 sums of a few hundred products stay within ~1e-6 of that scale (measured: at most 8e-7).
constexpr double kForwardTol = 5e-6;
constexpr double kGradTol = 5e-6;  // the backend's f32 sums against float64 central differences

// Another backend against the CPU, NMSE = sum((got - cpu)^2) / sum(cpu^2). Elementwise ops compute the same f32
// expressions on both sides (core/ew_math.h), so only libm-vs-device math functions differ; conv and gemm sum in
// different orders, hence the looser bound. 16-bit rows: several times the NMSE that the output's rounding alone
// gives ((2^-11)^2 / 3 for F16, (2^-8)^2 / 3 for BF16).
constexpr double kNmseElementwise = 1e-7;
constexpr double kNmseConvGemm = 5e-4;
constexpr double kNmseF16 = 2e-6;
constexpr double kNmseBF16 = 1e-4;
constexpr double kExact = 0.0;  // bit for bit

double lp_bound(cnn_dtype dt) { return dt == CNN_F16 ? kNmseF16 : kNmseBF16; }

// ---------------------------------------------------------------------------------------------------------------
// the table

enum class Op { Conv2d, Pool2d, Dense, Act, SoftmaxXent, Batchnorm, Dropout, Add, Scale, Concat, Sgd, Adam, Rmsprop };
constexpr int kOpCount = 13;

const char *op_name(Op op) {
  static const char *names[kOpCount] = {"conv2d", "pool2d", "dense",  "act", "softmax_xent", "batchnorm", "dropout",
                                        "add",    "scale",  "concat", "sgd", "adam",         "rmsprop"};
  return names[(int)op];
}

// One row: the op and everything that picks its variant. Fields that an op does not read stay at their defaults.
struct OpCase {
  explicit OpCase(Op o) : op(o) {}
  Op op;
  cnn_dtype dtype = CNN_F32;       // 16-bit rows run only on backends that compute in them (not the CPU)
  double nmse = kNmseElementwise;  // bound against the CPU (the 16-bit rows: lp_bound)
  bool use_plan = true;            // conv, dense, pool: through a plan slot, or with none

  cnnref::Conv2d conv;  // conv: shapes and window (conv.relu: the fused ReLU)
  cnnref::Pool2d pool;  // pool
  bool bias = true;     // conv, dense

  std::vector<int64_t> shape;  // dense: x (N, ...); act, dropout, add, scale: x; batchnorm: x (..., C)
  int out = 0;                 // dense: OUT
  cnn_act act = CNN_ACT_NONE;  // dense, act, batchnorm: the (fused) activation
  float alpha = 0.0f;          // its alpha

  int n = 0, k = 0;          // softmax_xent: logits (N, K)
  bool weighted = false;     // softmax_xent: class weights
  float smoothing = 0.0f;    // softmax_xent: label smoothing
  float grad_scale = 1.0f;   // softmax_xent
  float logit_range = 3.0f;  // softmax_xent: logits uniform in +-range
  bool far_logits = false;   // softmax_xent: every 7th logit + 1000 (exp() without the max subtracted overflows)
  int leave_out = 0;         // softmax_xent: 0 every output, 1-3 probs, losses or dlogits left out

  bool training = true;   // batchnorm
  bool affine = true;     // batchnorm: gamma and beta (else none)
  bool residual = false;  // batchnorm: y = act(bn(x) + r)
  float shift = 0.0f;     // batchnorm: x centred here (the variance must not come from E[x^2] - E[x]^2)
  float spread = 2.0f;    // batchnorm: x uniform in shift +- spread
  float momentum = 0.1f, eps = 1e-5f;

  float rate = 0.0f;  // dropout
  uint64_t seed = 0, offset = 0;

  int alias = 0;      // add: 0 y apart, 1 y = a, 2 y = b; act, dropout, batchnorm: 1 dx = dy (in place)
  float beta = 0.0f;  // add: y = alpha a + beta b; scale: x *= alpha

  std::vector<int64_t> lead, widths;  // concat: every dim but the channels, and each part's channels

  // sgd, adam, rmsprop: `steps` updates of a parameter of `shape` from zeroed state, gradients times grad_scale
  int steps = 0;
  float lr = 0.0f, momentum_opt = 0.0f, weight_decay = 0.0f, rho = 0.0f, beta1 = 0.0f, beta2 = 0.0f, opt_eps = 0.0f;
  int nesterov = 0, decoupled = 0;

  std::string name() const;
};

std::string shape_str(const std::vector<int64_t> &s) {
  std::string r;
  for (size_t i = 0; i < s.size(); i++) r += (i ? "x" : "") + std::to_string(s[i]);
  return r;
}

const char *act_str(cnn_act a) {
  static const char *names[CNN_ACT_COUNT] = {"none", "relu", "leaky", "elu", "sigmoid", "tanh", "gelu", "silu"};
  return (unsigned)a < CNN_ACT_COUNT ? names[a] : "unknown";
}

std::string num(double v) {
  std::ostringstream s;
  s << v;
  std::string r = s.str();
  for (char &c : r) {
    if (c == '.') c = 'p';
    if (c == '-') c = 'm';
  }
  return r;
}

// A readable, unique-enough name (the runner adds the row number): the test's name in ctest.
std::string OpCase::name() const {
  std::ostringstream s;
  s << op_name(op) << "_";
  switch (op) {
    case Op::Conv2d: {
      const cnnref::Conv2d &p = conv;
      s << p.n << "x" << p.h << "x" << p.w << "x" << p.c << "_o" << p.o << "k" << p.kh << "x" << p.kw << "s"
        << p.stride_h << "x" << p.stride_w << "p" << p.pad_top << p.pad_left << p.pad_bottom << p.pad_right << "d"
        << p.dilation_h << "x" << p.dilation_w << "g" << p.groups << (bias ? "_bias" : "") << (p.relu ? "_relu" : "")
        << (act != CNN_ACT_NONE ? std::string("_") + act_str(act) + (alpha != 0.0f ? num(alpha) : "") : "");
      break;
    }
    case Op::Pool2d: {
      const cnnref::Pool2d &p = pool;
      s << (p.max ? "max_" : "avg_") << p.n << "x" << p.h << "x" << p.w << "x" << p.c << "_k" << p.kh << "x" << p.kw
        << "s" << p.stride_h << "x" << p.stride_w << "p" << p.pad_top << p.pad_left << p.pad_bottom << p.pad_right;
      break;
    }
    case Op::Dense:
      s << shape_str(shape) << "_out" << out << (bias ? "_bias_" : "_") << act_str(act);
      break;
    case Op::Act:
      s << act_str(act) << (alpha != 0.0f ? num(alpha) : "") << "_" << shape_str(shape) << (alias ? "_inplace" : "");
      break;
    case Op::SoftmaxXent:
      s << n << "x" << k << (weighted ? "_weighted" : "") << (smoothing > 0 ? "_smooth" + num(smoothing) : "")
        << (far_logits ? "_far" : "") << (leave_out ? "_without" + std::to_string(leave_out) : "");
      break;
    case Op::Batchnorm:
      s << shape_str(shape) << (training ? "_train" : "_infer") << (affine ? "" : "_noaffine") << "_" << act_str(act)
        << (residual ? "_residual" : "") << (shift != 0 ? "_shift" + num(shift) : "") << (alias ? "_inplace" : "");
      break;
    case Op::Dropout:
      s << shape_str(shape) << "_rate" << num(rate) << (alias ? "_inplace" : "");
      break;
    case Op::Add:
      s << shape_str(shape) << (alias == 1 ? "_y_is_a" : alias == 2 ? "_y_is_b" : "");
      break;
    case Op::Scale:
      s << shape_str(shape) << "_by" << num(alpha);
      break;
    case Op::Concat:
      s << shape_str(lead) << "_parts" << shape_str(widths);
      break;
    case Op::Sgd:
    case Op::Adam:
    case Op::Rmsprop:
      s << shape_str(shape) << "_steps" << steps << (momentum_opt != 0 ? "_mom" + num(momentum_opt) : "")
        << (nesterov ? "_nesterov" : "") << (decoupled ? "_decoupled" : "") << (rho != 0 ? "_rho" + num(rho) : "")
        << (weight_decay != 0 ? "_wd" + num(weight_decay) : "") << "_gscale" << num(grad_scale);
      break;
  }
  if (dtype != CNN_F32) s << "_" << cnn_dtype_name(dtype);
  if (!use_plan) s << "_noplan";
  return s.str();
}

cnnref::Pool2d pool(bool max, int n, int h, int w, int c, int kh, int kw, int sh, int sw, int pt, int pl, int pb,
                    int pr) {
  cnnref::Pool2d p;
  p.max = max, p.n = n, p.h = h, p.w = w, p.c = c, p.kh = kh, p.kw = kw, p.stride_h = sh, p.stride_w = sw;
  p.pad_top = pt, p.pad_left = pl, p.pad_bottom = pb, p.pad_right = pr;
  return p;
}

std::vector<cnnref::Pool2d> pool_shapes() {
  std::vector<cnnref::Pool2d> v;
  auto add = [&](int n, int h, int w, int c, int kh, int kw, int sh, int sw, int pt, int pl, int pb, int pr) {
    for (bool max : {true, false}) v.push_back(pool(max, n, h, w, c, kh, kw, sh, sw, pt, pl, pb, pr));
  };
  add(1, 4, 4, 1, 2, 2, 2, 2, 0, 0, 0, 0);
  add(1, 7, 5, 3, 2, 2, 2, 2, 0, 0, 0, 0);
  add(3, 7, 9, 5, 2, 2, 2, 2, 0, 0, 0, 0);     // odd sizes: the last row and column are dropped
  add(2, 26, 26, 32, 2, 2, 2, 2, 0, 0, 0, 0);  // the seed CNN's first pool at a small batch
  add(7, 26, 26, 32, 2, 2, 2, 2, 0, 0, 0, 0);  // and at an odd one
  add(2, 9, 9, 3, 3, 3, 2, 2, 1, 1, 1, 1);     // symmetric padding, overlapping windows
  add(2, 6, 7, 4, 3, 3, 1, 1, 1, 1, 1, 1);
  add(3, 7, 7, 2, 2, 2, 2, 2, 0, 0, 1, 1);  // SAME on an odd image: asymmetric
  add(5, 7, 5, 3, 3, 3, 2, 2, 1, 0, 2, 1);  // asymmetric padding, overlapping windows
  add(2, 9, 8, 4, 3, 3, 3, 3, 0, 1, 1, 0);
  add(3, 6, 6, 17, 2, 2, 1, 1, 1, 1, 0, 0);
  add(1, 5, 5, 2, 3, 3, 3, 3, 2, 2, 2, 2);  // windows mostly padding
  add(2, 7, 6, 3, 3, 2, 2, 1, 2, 1, 1, 0);  // non-square window and stride
  add(1, 1, 1, 5, 1, 1, 1, 1, 0, 0, 0, 0);
  // global pooling (globalavgpool, globalmaxpool): one window the size of the input; 5x7 runs the CPU's own
  // max-pool loops, 17x17 (289 elements, above their 256) oneDNN's
  add(2, 5, 7, 3, 5, 7, 5, 7, 0, 0, 0, 0);
  add(3, 5, 7, 6, 5, 7, 5, 7, 0, 0, 0, 0);
  add(2, 17, 17, 2, 17, 17, 17, 17, 0, 0, 0, 0);
  add(2, 17, 17, 4, 17, 17, 17, 17, 0, 0, 0, 0);
  return v;
}

// Dense shapes: N = 1, odd sizes everywhere, IN from a rank-2 to rank-4 x, sizes that are not multiples of 8 and
// larger ones (tensor-core tiles).
const std::vector<std::vector<int64_t>> kDenseX = {{1, 7},    {5, 7},    {4, 3, 3, 2}, {2, 5, 4},       {8, 128},
                                                   {8, 512},  {3, 1},    {1, 1},       {3, 7},          {7, 3, 3, 2},
                                                   {64, 512}, {1, 1152}, {129, 17},    {33, 3, 3, 128}, {5, 2, 3, 5}};
const int kDenseOut[] = {3, 3, 5, 1, 512, 10, 4, 1, 5, 10, 10, 512, 3, 512, 9};

float default_alpha(cnn_act act) { return act == CNN_ACT_LEAKY_RELU ? 0.1f : act == CNN_ACT_ELU ? 1.3f : 0.0f; }

std::vector<OpCase> build_table() {
  std::vector<OpCase> t;
  const cnn_dtype kLowp[] = {CNN_F16, CNN_BF16};

  // ---- conv2d: forward, backward data, backward filter (and bias), with and without a bias
  std::vector<cnnref::Conv2d> convs = conv_shapes();
  for (size_t i = 0; i < convs.size(); i++)
    for (bool bias : {true, false}) {
      OpCase c(Op::Conv2d);
      c.conv = convs[i], c.bias = bias, c.nmse = kNmseConvGemm;
      t.push_back(c);
      if (bias)
        for (cnn_dtype dt : kLowp) {  // 16 bits: db is an f32 sum (the runner bounds it by kNmseConvGemm)
          c.dtype = dt, c.nmse = lp_bound(dt);
          t.push_back(c);
        }
    }
  for (cnnref::Conv2d p : {conv_params(3, 6, 7, 4, 6, 3, 3, 2, 1, 1, 2), conv_params(3, 9, 9, 4, 8, 3, 3, 1, 1),
                           conv_params(2, 8, 8, 6, 6, 2, 2)}) {
    if (p.kh == 2) p.pad_bottom = p.pad_right = 1;
    p.relu = p.groups == 2;
    OpCase c(Op::Conv2d);
    c.conv = p, c.use_plan = false, c.nmse = kNmseConvGemm;
    t.push_back(c);
  }

  struct FusedAct {
    cnn_act act;
    float alpha;
  };
  for (FusedAct f : {FusedAct{CNN_ACT_LEAKY_RELU, 0.2f}, FusedAct{CNN_ACT_LEAKY_RELU, 0.05f},
                     FusedAct{CNN_ACT_ELU, 0.7f}, FusedAct{CNN_ACT_ELU, 1.3f}, FusedAct{CNN_ACT_SIGMOID, 0.0f},
                     FusedAct{CNN_ACT_TANH, 0.0f}, FusedAct{CNN_ACT_RELU, 0.0f}}) {
    OpCase c(Op::Conv2d);
    c.conv = conv_params(2, 7, 5, 3, 4, 3, 3, 1, 1), c.act = f.act, c.alpha = f.alpha, c.nmse = kNmseConvGemm;
    t.push_back(c);
  }

  // ---- pool2d: training forward, backward (given x and y, and from what the plan kept)
  for (const cnnref::Pool2d &p : pool_shapes()) {
    OpCase c(Op::Pool2d);
    c.pool = p;
    t.push_back(c);
    if (p.n * p.h * p.w * p.c <= 256)
      for (cnn_dtype dt : kLowp) {
        c.dtype = dt, c.nmse = lp_bound(dt);
        t.push_back(c);
      }
  }
  {
    OpCase c(Op::Pool2d);
    c.pool = pool(false, 2, 9, 8, 4, 3, 3, 3, 3, 0, 1, 1, 0);
    c.use_plan = false;  // average pooling needs nothing from a forward
    t.push_back(c);
  }

  // ---- dense: every shape under every fused activation, with and without a bias
  for (size_t s = 0; s < kDenseX.size(); s++)
    for (int ai = 0; ai < CNN_ACT_COUNT; ai++) {
      const cnn_act act = (cnn_act)ai;
      if (cnn_act_grad_needs_input(act)) continue;  // dense fuses only these
      for (bool bias : {true, false}) {
        OpCase c(Op::Dense);
        c.shape = kDenseX[s], c.out = kDenseOut[s], c.bias = bias, c.act = act, c.alpha = default_alpha(act);
        c.nmse = kNmseConvGemm;
        t.push_back(c);
        // 16 bits: several outputs (an activation after the product reads y rounded to 16 bits, whose error is
        // relative to x w^T, not to the result)
        if (c.shape[0] * c.out >= 2)
          for (cnn_dtype dt : kLowp) {
            c.dtype = dt, c.nmse = lp_bound(dt);
            t.push_back(c);
          }
      }
    }
  for (size_t s : {0, 2}) {
    OpCase c(Op::Dense);
    c.shape = kDenseX[s], c.out = kDenseOut[s], c.act = CNN_ACT_RELU, c.use_plan = false, c.nmse = kNmseConvGemm;
    t.push_back(c);
  }

  // ---- activations, forward and backward (in place: dx over dy, as layers do)
  struct ActRow {
    cnn_act act;
    float alpha;
  };
  const ActRow acts[] = {{CNN_ACT_NONE, 0.0f}, {CNN_ACT_RELU, 0.0f}, {CNN_ACT_LEAKY_RELU, 0.1f}, {CNN_ACT_ELU, 1.0f},
                         {CNN_ACT_ELU, 0.5f},  {CNN_ACT_ELU, 1.3f},  {CNN_ACT_SIGMOID, 0.0f},    {CNN_ACT_TANH, 0.0f},
                         {CNN_ACT_GELU, 0.0f}, {CNN_ACT_SILU, 0.0f}};
  for (const ActRow &a : acts)
    for (int64_t n : {1, 37, 2001, 65537})
      for (int in_place : {0, 1}) {
        OpCase c(Op::Act);
        c.act = a.act, c.alpha = a.alpha, c.shape = {n}, c.alias = in_place;
        t.push_back(c);
      }
  for (const ActRow &a : acts)
    if (a.act != CNN_ACT_NONE && a.alpha != 0.5f && a.alpha != 1.3f)
      for (cnn_dtype dt : kLowp) {
        OpCase c(Op::Act);
        c.act = a.act, c.alpha = a.act == CNN_ACT_LEAKY_RELU ? 0.1f : a.alpha, c.shape = {4 * 6 * 6 * 20};
        c.dtype = dt, c.nmse = 4 * lp_bound(dt);  // backward from the rounded y: twice the rounding
        t.push_back(c);
      }

  // ---- softmax cross-entropy: probabilities, per-sample losses and the logits' gradient
  struct XentRow {
    int n, k;
    float range;
    bool far;
  };
  for (XentRow r :
       {XentRow{1, 1, 30, true}, XentRow{1, 2, 3, false}, XentRow{1, 10, 30, true}, XentRow{5, 3, 30, true},
        XentRow{3, 10, 8, false}, XentRow{7, 10, 3, false}, XentRow{7, 33, 8, false}, XentRow{64, 10, 30, true},
        XentRow{3, 1000, 30, true}, XentRow{5, 1000, 8, false}, XentRow{1025, 2, 8, false}}) {
    OpCase c(Op::SoftmaxXent);
    c.n = r.n, c.k = r.k, c.logit_range = r.range, c.far_logits = r.far, c.grad_scale = 1.0f / (float)r.n;
    t.push_back(c);
    if (r.n == 64 || r.k == 33)
      for (int leave_out = 1; leave_out <= 3; leave_out++) {
        c.leave_out = leave_out;
        t.push_back(c);
      }
  }
  for (auto nk : std::vector<std::pair<int, int>>{{6, 5}, {64, 10}, {65, 7}})
    for (bool weighted : {false, true})
      for (float smoothing : {0.0f, 0.1f, 0.2f}) {
        OpCase c(Op::SoftmaxXent);
        c.n = nk.first, c.k = nk.second, c.weighted = weighted, c.smoothing = smoothing, c.grad_scale = 0.37f;
        if (nk.first == 65) c.logit_range = 5.0f;
        t.push_back(c);
      }
  for (cnn_dtype dt : kLowp) {  // the logits and their gradient in 16 bits, scaled as under fp16 loss scaling
    OpCase c(Op::SoftmaxXent);
    c.n = 37, c.k = 10, c.logit_range = 6.0f, c.weighted = true, c.smoothing = 0.1f, c.grad_scale = 1024.0f / 37;
    c.dtype = dt, c.nmse = lp_bound(dt);
    t.push_back(c);
  }

  // ---- batchnorm: training (batch statistics, running ones updated) and inference, through its activation, with
  // the residual add fused
  struct BnRow {
    std::vector<int64_t> shape;
    bool training, affine;
    cnn_act act;
    float alpha, shift;
    bool residual;
  };
  // clang-format off
  const BnRow bns[] = {
      // x far from 0 (the variance must not come from E[x^2] - E[x]^2), training; each under four activations below
      {{4, 5, 3, 6}, true, true, CNN_ACT_NONE, 0, 30, false}, {{7, 3}, true, true, CNN_ACT_RELU, 0, 30, false},
      {{8, 16, 16, 32}, true, true, CNN_ACT_LEAKY_RELU, 0.1f, 30, false},
      {{2, 1, 1, 5}, true, true, CNN_ACT_TANH, 0, 30, false},
      // inference: the running statistics, left alone
      {{3, 4, 5, 7}, false, true, CNN_ACT_ELU, 1, 0, false}, {{1, 9}, false, true, CNN_ACT_ELU, 1, 0, false},
      {{1, 1, 1, 4}, false, true, CNN_ACT_ELU, 1, 0, false},
      // small enough for finite differences of dx through the batch statistics, in both modes, through smooth
      // activations
      {{3, 2, 3, 4}, true, true, CNN_ACT_NONE, 0, 0, false}, {{6, 5}, true, true, CNN_ACT_NONE, 0, 0, false},
      {{3, 1, 1, 3}, true, true, CNN_ACT_NONE, 0, 0, false}, {{3, 2, 3, 4}, false, true, CNN_ACT_NONE, 0, 0, false},
      {{6, 5}, false, true, CNN_ACT_NONE, 0, 0, false}, {{3, 2, 3, 4}, true, true, CNN_ACT_TANH, 0, 0, false},
      {{6, 5}, true, true, CNN_ACT_ELU, 1, 0, false}, {{3, 1, 1, 3}, true, true, CNN_ACT_SIGMOID, 0, 0, false},
      {{3, 2, 3, 4}, false, true, CNN_ACT_TANH, 0, 0, false}, {{6, 5}, false, true, CNN_ACT_ELU, 1, 0, false},
      {{3, 1, 1, 3}, false, true, CNN_ACT_SIGMOID, 0, 0, false},
      // without gamma and beta; large ones; C not a multiple of the vector width
      {{2, 3, 5, 7}, true, true, CNN_ACT_NONE, 0, 0, false}, {{2, 3, 5, 7}, false, true, CNN_ACT_RELU, 0, 0, false},
      {{5, 33}, true, false, CNN_ACT_LEAKY_RELU, 0.2f, 0, false}, {{5, 33}, false, false, CNN_ACT_NONE, 0, 0, false},
      {{8, 28, 28, 32}, true, true, CNN_ACT_RELU, 0, 0, false}, {{3, 7, 7, 130}, true, true, CNN_ACT_ELU, 1, 50, false},
      {{64, 14, 14, 64}, true, true, CNN_ACT_SIGMOID, 0, 0, false},
      {{2, 1, 1, 3}, true, true, CNN_ACT_TANH, 0, 0, false},
      {{16, 7, 7, 256}, false, true, CNN_ACT_RELU, 0, 3, false},
      // the residual add fused (y = act(bn(x) + r)), means far from zero too
      {{4, 6, 6, 20}, true, true, CNN_ACT_RELU, 0, 0, true}, {{4, 6, 6, 20}, false, true, CNN_ACT_RELU, 0, 0, true},
      {{8, 14, 14, 64}, true, true, CNN_ACT_NONE, 0, 20, true},
      {{3, 5, 5, 130}, true, true, CNN_ACT_LEAKY_RELU, 0.2f, 0, true},
      {{16, 7, 7, 256}, true, true, CNN_ACT_RELU, 0, 1000, true}, {{7, 33}, true, true, CNN_ACT_ELU, 1, -5, true},
      {{3, 2, 3, 4}, true, true, CNN_ACT_TANH, 0, 0, true}, {{6, 5}, false, true, CNN_ACT_SIGMOID, 0, 0, true},
      // 20 channels take the CUDA kernels' element path, 40 their 16-byte vector path
      {{4, 6, 6, 20}, true, true, CNN_ACT_RELU, 0, 0, false}, {{4, 6, 3, 40}, true, true, CNN_ACT_RELU, 0, 0, false},
  };
  // clang-format on

  std::vector<BnRow> bn_rows;
  for (const BnRow &r : bns) {
    bn_rows.push_back(r);
    if (r.shift == 30)  // each of the four shapes under each of four activations
      for (cnn_act act : {CNN_ACT_NONE, CNN_ACT_RELU, CNN_ACT_LEAKY_RELU, CNN_ACT_TANH})
        if (act != r.act) {
          BnRow q = r;
          q.act = act, q.alpha = act == CNN_ACT_LEAKY_RELU ? 0.1f : 0.0f;
          bn_rows.push_back(q);
        }
  }
  for (const BnRow &r : bn_rows) {
    OpCase c(Op::Batchnorm);
    c.shape = r.shape, c.training = r.training, c.affine = r.affine, c.act = r.act, c.alpha = r.alpha;
    c.shift = r.shift, c.residual = r.residual;
    c.spread = r.shift == 30 ? 6.0f : 2.0f, c.eps = r.shift == 30 ? 1e-3f : 1e-5f;
    c.momentum = t.size() % 2 ? 0.1f : 0.01f;
    t.push_back(c);
    if (r.shape.size() == 4 && r.shape[0] * r.shape[1] * r.shape[2] * r.shape[3] <= 72) {
      c.alias = 1;  // dx over dy
      t.push_back(c);
      c.alias = 0;
    }
    // 16 bits: x near 1000 keeps no fraction at all; the large-shift rows are f32 rows
    if (std::fabs(r.shift) <= 20 &&
        (r.residual || r.shape == std::vector<int64_t>{4, 6, 6, 20} || r.shape == std::vector<int64_t>{4, 6, 3, 40}))
      for (cnn_dtype dt : kLowp) {
        c.dtype = dt, c.nmse = lp_bound(dt);
        t.push_back(c);
      }
  }

  // ---- dropout (the mask is a hash of (seed, offset + i): bit for bit on every backend), add, scale, concat
  for (int64_t n : {1, 1000, 70001, 100000})
    for (float rate : {0.0f, 0.1f, 0.3f, 0.5f, 0.9f})
      for (int in_place : {0, 1}) {
        OpCase c(Op::Dropout);
        c.shape = {n}, c.rate = rate, c.seed = 0x1234567890ull, c.offset = 977, c.alias = in_place, c.nmse = kExact;
        t.push_back(c);
      }
  for (cnn_dtype dt : kLowp) {
    OpCase c(Op::Dropout);
    c.shape = {4 * 6 * 6 * 20}, c.rate = 0.25f, c.seed = 99, c.offset = 5, c.dtype = dt, c.nmse = lp_bound(dt);
    t.push_back(c);
  }
  for (int64_t n : {1, 5, 4097, 70001, 100000})
    for (int alias = 0; alias < 3; alias++) {
      OpCase c(Op::Add);
      c.shape = {n}, c.alias = alias, c.alpha = 0.75f, c.beta = -1.5f;
      t.push_back(c);
    }
  for (cnn_dtype dt : kLowp) {  // a 16-bit gradient plus f32 weights: an L2 penalty
    OpCase c(Op::Add);
    c.shape = {4 * 6 * 6 * 20}, c.alias = 1, c.alpha = 1.0f, c.beta = 0.02f, c.dtype = dt, c.nmse = lp_bound(dt);
    t.push_back(c);
  }
  for (int64_t n : {1, 4097, 100000})
    for (float s : {-3.0f, 0.5f}) {
      OpCase c(Op::Scale);
      c.shape = {n}, c.alpha = s;
      t.push_back(c);
    }
  for (cnn_dtype dt : kLowp) {
    OpCase c(Op::Scale);
    c.shape = {2880}, c.alpha = 0.5f, c.dtype = dt, c.nmse = kExact;  // scaling by 0.5 is exact
    t.push_back(c);
  }
  struct ConcatRow {
    std::vector<int64_t> lead, widths;
  };
  for (const ConcatRow &r : {ConcatRow{{2, 3, 4}, {1, 5, 2}}, ConcatRow{{20000}, {3, 1}}, ConcatRow{{3}, {4}},
                             ConcatRow{{2, 3, 5}, {1, 6, 3}}, ConcatRow{{7}, {4, 1}}, ConcatRow{{1, 1, 1}, {2}},
                             ConcatRow{{4, 9, 9}, {16, 32, 8, 3}}, ConcatRow{{4, 6, 6}, {20, 10}}}) {
    OpCase c(Op::Concat);
    c.lead = r.lead, c.widths = r.widths, c.nmse = kExact;  // a copy: bit for bit
    t.push_back(c);
    if (r.widths == std::vector<int64_t>{20, 10})
      for (cnn_dtype dt : kLowp) {
        c.dtype = dt;
        t.push_back(c);
      }
  }

  // ---- optimizers: several steps from zeroed state (PyTorch's semantics)
  struct SgdRow {
    float momentum, wd;
    int nesterov;
    float grad_scale;
  };
  for (SgdRow r : {SgdRow{0.0f, 0.0f, 0, 1.0f}, SgdRow{0.9f, 0.0f, 0, 1.0f}, SgdRow{0.9f, 5e-4f, 1, 0.5f},
                   SgdRow{0.5f, 1e-2f, 0, 2.0f}})
    for (int64_t n : {17, 70000, 70001}) {  // 70000: above the CPU's parallel threshold
      OpCase c(Op::Sgd);
      c.shape = {n}, c.steps = 5, c.lr = 0.05f, c.momentum_opt = r.momentum, c.weight_decay = r.wd;
      c.nesterov = r.nesterov, c.grad_scale = r.grad_scale;
      t.push_back(c);
    }
  for (int decoupled : {0, 1})
    for (int64_t n : {3, 33333}) {
      OpCase c(Op::Adam);
      c.shape = {n}, c.steps = 6, c.lr = 1e-2f, c.beta1 = 0.9f, c.beta2 = 0.999f, c.opt_eps = 1e-8f;
      c.weight_decay = 1e-2f, c.decoupled = decoupled, c.grad_scale = 0.25f;
      t.push_back(c);
    }
  struct RmspropRow {
    float rho, momentum, wd, grad_scale, eps;
    int64_t n;
    int steps;
  };
  for (RmspropRow r :
       {RmspropRow{0.99f, 0.0f, 0.0f, 1.0f, 1e-8f, 70000, 5}, RmspropRow{0.9f, 0.9f, 1e-2f, 0.5f, 1e-8f, 70000, 5},
        RmspropRow{0.0f, 0.5f, 0.0f, 2.0f, 1e-8f, 70000, 5}, RmspropRow{0.9f, 0.0f, 1e-3f, 0.5f, 1e-7f, 3, 6},
        RmspropRow{0.9f, 0.0f, 1e-3f, 0.5f, 1e-7f, 33333, 6}, RmspropRow{0.9f, 0.9f, 1e-3f, 0.5f, 1e-7f, 3, 6},
        RmspropRow{0.9f, 0.9f, 1e-3f, 0.5f, 1e-7f, 33333, 6}}) {
    OpCase c(Op::Rmsprop);
    c.shape = {r.n}, c.steps = r.steps, c.lr = r.n == 70000 ? 0.01f : 1e-2f, c.rho = r.rho, c.momentum_opt = r.momentum;
    c.weight_decay = r.wd, c.grad_scale = r.grad_scale, c.opt_eps = r.eps;
    t.push_back(c);
  }

  // ---- conv2d in the shapes the CPU backend runs as Winograd F(4x4, 3x3) (cpu/conv.c; on processors with
  //      AVX-512): 3x3 stride 1, 32+ channels (or 16 in a window of sizes), 1024+ output pixels. Last in the
  //      table, so that the rows before keep their seeds.
  for (cnnref::Conv2d p : {conv_params(4, 16, 16, 32, 48, 3, 3, 1, 1), conv_params(20, 9, 7, 64, 32, 3, 3, 1, 1),
                           conv_params(16, 10, 10, 32, 32, 3, 3),  // SAME (every direction), and VALID
                           conv_params(32, 22, 22, 16, 16, 3, 3, 1, 1)})  // 16 channels, in the window
    for (bool bias : {true, false}) {
      OpCase c(Op::Conv2d);
      c.conv = p, c.conv.relu = bias, c.bias = bias, c.nmse = kNmseConvGemm;
      t.push_back(c);
    }
  // fused activations: oneDNN's Winograd fuses only ReLU, the others fall back to the direct kernels (one path for
  // all of them: tanh's row is left out, whose forward over 288-term sums sits at kForwardTol on the direct kernel)
  for (FusedAct f : {FusedAct{CNN_ACT_LEAKY_RELU, 0.2f}, FusedAct{CNN_ACT_ELU, 0.7f}, FusedAct{CNN_ACT_SIGMOID, 0.0f},
                     FusedAct{CNN_ACT_RELU, 0.0f}}) {
    OpCase c(Op::Conv2d);
    c.conv = conv_params(32, 6, 6, 32, 32, 3, 3, 1, 1), c.act = f.act, c.alpha = f.alpha, c.nmse = kNmseConvGemm;
    t.push_back(c);
  }
  return t;
}

const std::vector<OpCase> &table() {
  static const std::vector<OpCase> t = build_table();
  return t;
}

// ---------------------------------------------------------------------------------------------------------------
// backends

// Every backend the runner knows; those that a build lacks, or that find no device here, skip their rows.
const char *const kBackends[] = {"cpu", "cuda"};

struct BackendSlot {
  cnn_backend *b = nullptr;
  std::string skip;   // CNN_ERR_NOT_FOUND: no such device here (or not in this build)
  std::string error;  // any other failure to create it
  bool tried = false;
};

BackendSlot &slot(const std::string &name) {
  static BackendSlot slots[sizeof kBackends / sizeof kBackends[0]];
  size_t i = 0;
  while (i < sizeof kBackends / sizeof kBackends[0] && name != kBackends[i]) i++;
  BackendSlot &s = slots[i];
  if (!s.tried) {
    s.tried = true;
    const cnn_status st = cnn_backend_create(name.c_str(), &s.b);
    if (st == CNN_ERR_NOT_FOUND) {
      s.skip = cnn_last_error();
      s.b = nullptr;
    } else if (st != CNN_OK) {
      s.error = std::string(cnn_status_string(st)) + ": " + cnn_last_error();
      s.b = nullptr;
    }
  }
  return s;
}

bool require_cuda() {
  const char *v = getenv("CNN_REQUIRE_CUDA");
  return v && *v && strcmp(v, "0") != 0;
}

// ---------------------------------------------------------------------------------------------------------------
// the one place that calls the ops: through the dispatch layer (core/ops.h), as the engine does

enum class Call {
  Conv2dForward,
  Conv2dBackwardData,
  Conv2dBackwardFilter,
  Pool2dForward,
  Pool2dBackward,
  DenseForward,
  DenseBackwardData,
  DenseBackwardWeights,
  ActForward,
  ActBackward,
  SoftmaxXent,
  BatchnormForward,
  BatchnormBackward,
  DropoutForward,
  DropoutBackward,
  Add,
  Scale,
  ConcatForward,
  ConcatBackward,
  SgdUpdate,
  AdamUpdate,
  RmspropUpdate
};

// scale's arguments, which the table passes one by one
struct ScaleArgs {
  cnn_tensor *x;
  float alpha;
};

cnn_status call_op(cnn_backend *b, Call op, const void *args) {
  switch (op) {
    case Call::Conv2dForward:
      return cnn_op_conv2d_forward(b, (const cnn_conv2d_args *)args);
    case Call::Conv2dBackwardData:
      return cnn_op_conv2d_backward_data(b, (const cnn_conv2d_args *)args);
    case Call::Conv2dBackwardFilter:
      return cnn_op_conv2d_backward_filter(b, (const cnn_conv2d_args *)args);
    case Call::Pool2dForward:
      return cnn_op_pool2d_forward(b, (const cnn_pool2d_args *)args);
    case Call::Pool2dBackward:
      return cnn_op_pool2d_backward(b, (const cnn_pool2d_args *)args);
    case Call::DenseForward:
      return cnn_op_dense_forward(b, (const cnn_dense_args *)args);
    case Call::DenseBackwardData:
      return cnn_op_dense_backward_data(b, (const cnn_dense_args *)args);
    case Call::DenseBackwardWeights:
      return cnn_op_dense_backward_weights(b, (const cnn_dense_args *)args);
    case Call::ActForward:
      return cnn_op_act_forward(b, (const cnn_act_args *)args);
    case Call::ActBackward:
      return cnn_op_act_backward(b, (const cnn_act_args *)args);
    case Call::SoftmaxXent:
      return cnn_op_softmax_xent(b, (const cnn_softmax_xent_args *)args);
    case Call::BatchnormForward:
      return cnn_op_batchnorm_forward(b, (const cnn_batchnorm_args *)args);
    case Call::BatchnormBackward:
      return cnn_op_batchnorm_backward(b, (const cnn_batchnorm_args *)args);
    case Call::DropoutForward:
      return cnn_op_dropout_forward(b, (const cnn_dropout_args *)args);
    case Call::DropoutBackward:
      return cnn_op_dropout_backward(b, (const cnn_dropout_args *)args);
    case Call::Add:
      return cnn_op_add(b, (const cnn_add_args *)args);
    case Call::Scale:
      return cnn_op_scale(b, ((const ScaleArgs *)args)->x, ((const ScaleArgs *)args)->alpha);
    case Call::ConcatForward:
      return cnn_op_concat_forward(b, (const cnn_concat_args *)args);
    case Call::ConcatBackward:
      return cnn_op_concat_backward(b, (const cnn_concat_args *)args);
    case Call::SgdUpdate:
      return cnn_op_sgd_update(b, (const cnn_sgd_args *)args);
    case Call::AdamUpdate:
      return cnn_op_adam_update(b, (const cnn_adam_args *)args);
    case Call::RmspropUpdate:
      return cnn_op_rmsprop_update(b, (const cnn_rmsprop_args *)args);
  }
  return CNN_ERR_INVALID_ARG;
}

// ---------------------------------------------------------------------------------------------------------------
// tensors with sentinel bytes on both sides, on any backend

using Plan = cnntest::Plan;

// ---------------------------------------------------------------------------------------------------------------
// inputs, outputs

// Distinct values spaced well apart (a shuffled ramp): max-pool windows have no near ties. In 16 bits, multiples
// of 2^-7 below 1 in magnitude, which the type holds exactly (the cases are small enough).
std::vector<float> distinct_floats(size_t n, std::mt19937 &rng, cnn_dtype dt) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; i++)
    v[i] =
        dt == CNN_F32 ? -1.0f + 2.0f * (float)i / (float)std::max<size_t>(n, 1) : ((float)i - (float)n / 2.0f) / 128.0f;
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

int64_t numel(const std::vector<int64_t> &s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

// Named host vectors: a case's inputs (drawn once, shared by every backend) or a backend's outputs.
struct Named {
  std::vector<std::pair<std::string, std::vector<float>>> v;
  std::vector<int32_t> labels;
  std::vector<float> &operator[](const std::string &k) {
    for (auto &e : v)
      if (e.first == k) return e.second;
    v.emplace_back(k, std::vector<float>());
    return v.back().second;
  }
  const std::vector<float> &at(const std::string &k) const {
    for (auto &e : v)
      if (e.first == k) return e.second;
    ADD_FAILURE() << "no " << k;
    static const std::vector<float> none;
    return none;
  }
};

// A case's inputs, from a seed of its own; what the row's 16-bit dtype would round is rounded here, so that every
// backend starts from the same values.
Named make_inputs(const OpCase &c, uint32_t seed) {
  std::mt19937 rng(seed);
  Named in;
  const cnn_dtype dt = c.dtype;
  switch (c.op) {
    case Op::Conv2d:
      in["x"] = rounded(random_floats(c.conv.x_size(), rng), dt);
      in["w"] = rounded(random_floats(c.conv.w_size(), rng), dt);
      in["b"] = random_floats(c.conv.o, rng);
      in["dy"] = rounded(random_floats(c.conv.y_size(), rng), dt);
      break;
    case Op::Pool2d:
      in["x"] = distinct_floats(c.pool.x_size(), rng, dt);
      in["dy"] = rounded(random_floats(c.pool.y_size(), rng), dt);
      break;
    case Op::Dense: {
      const int64_t n = c.shape[0], inner = numel(c.shape) / n;
      in["x"] = rounded(random_floats(n * inner, rng), dt);
      in["w"] = rounded(random_floats((size_t)c.out * inner, rng), dt);
      in["b"] = rounded(random_floats(c.out, rng), dt);  // cuBLASLt's epilogue adds it in the row's dtype
      in["dy"] = rounded(random_floats((size_t)n * c.out, rng), dt);
      break;
    }
    case Op::Act: {
      const int64_t n = c.shape[0];
      auto x = random_floats(n, rng, -4.0f, 4.0f);
      if (n > 2) x[0] = -100.0f, x[1] = 100.0f;  // saturated ends: no overflow to inf or NaN
      in["x"] = rounded(x, dt);
      in["dy"] = rounded(random_floats(n, rng), dt);
      break;
    }
    case Op::SoftmaxXent: {
      auto logits = random_floats((size_t)c.n * c.k, rng, -c.logit_range, c.logit_range);
      if (c.far_logits)
        for (size_t i = 0; i < logits.size(); i += 7) logits[i] += 1000.0f;
      in["logits"] = rounded(logits, dt);
      in.labels.resize(c.n);
      for (auto &l : in.labels) l = std::uniform_int_distribution<int32_t>(0, c.k - 1)(rng);
      in["weights"] = random_floats(c.k, rng, 0.2f, 3.0f);
      break;
    }
    case Op::Batchnorm: {
      const int64_t n = numel(c.shape), ch = c.shape.back();
      in["x"] = rounded(random_floats(n, rng, c.shift - c.spread, c.shift + c.spread), dt);
      in["r"] = rounded(random_floats(n, rng, -1.5f, 1.5f), dt);
      in["dy"] = rounded(random_floats(n, rng), dt);
      in["gamma"] = random_floats(ch, rng, 0.5f, 1.5f);
      in["beta"] = random_floats(ch, rng);
      in["running_mean"] = random_floats(ch, rng, c.shift - 0.5f, c.shift + 0.5f);
      in["running_var"] = random_floats(ch, rng, 0.5f, 2.0f);
      break;
    }
    case Op::Dropout:
      in["x"] = rounded(random_floats(numel(c.shape), rng, 0.5f, 1.5f), dt);  // never 0: a 0 in y means dropped
      in["dy"] = rounded(random_floats(numel(c.shape), rng), dt);
      break;
    case Op::Add:
      in["a"] = rounded(random_floats(numel(c.shape), rng), dt);
      in["b"] = random_floats(numel(c.shape), rng);  // f32 on every backend (weights in an L2 penalty)
      break;
    case Op::Scale:
      in["x"] = rounded(random_floats(numel(c.shape), rng, -3.0f, 3.0f), dt);
      break;
    case Op::Concat: {
      const int64_t rows = numel(c.lead);
      int64_t total = 0;
      for (size_t i = 0; i < c.widths.size(); i++) {
        in["x" + std::to_string(i)] = rounded(random_floats((size_t)(rows * c.widths[i]), rng), dt);
        total += c.widths[i];
      }
      in["dy"] = rounded(random_floats((size_t)(rows * total), rng), dt);
      break;
    }
    case Op::Sgd:
    case Op::Adam:
    case Op::Rmsprop:
      in["param"] = random_floats(numel(c.shape), rng);
      for (int k = 0; k < c.steps; k++) in["grad" + std::to_string(k)] = random_floats(numel(c.shape), rng);
      break;
  }
  return in;
}

// ---------------------------------------------------------------------------------------------------------------
// running a case on one backend

#define CALL(b, op, args)                                                             \
  do {                                                                                \
    const cnn_status st_ = call_op(b, op, args);                                      \
    ASSERT_EQ(st_, CNN_OK) << b->ops->name << " " << #op << ": " << cnn_last_error(); \
  } while (0)

// Every output that the op wrote, read back; every tensor's sentinels checked. `dt` is the row's dtype on this
// backend (f32 on the CPU). Results go to `out`.
void run_case(cnn_backend *b, const OpCase &c, const Named &in, cnn_dtype dt, Named &out) {
  std::vector<BTensor *> all;  // every tensor, for the sentinel check at the end
  std::vector<std::unique_ptr<BTensor>> owned;
  auto tensor = [&](const std::vector<int64_t> &shape, cnn_dtype d = CNN_F32) {
    owned.emplace_back(new BTensor(b, shape, d));
    all.push_back(owned.back().get());
    return owned.back().get();
  };
  // x, y, dy and dx of an elementwise op, x and dy set from the inputs
  auto elementwise = [&]() {
    std::array<BTensor *, 4> t = {tensor(c.shape, dt), tensor(c.shape, dt), tensor(c.shape, dt), tensor(c.shape, dt)};
    t[0]->set(in.at("x")), t[2]->set(in.at("dy"));
    return t;
  };
  Plan plan(b);
  cnn_plan **pp = c.use_plan ? &plan.p : nullptr;
  switch (c.op) {
    case Op::Conv2d: {
      const cnnref::Conv2d &p = c.conv;
      const std::vector<int64_t> xs = {p.n, p.h, p.w, p.c}, ws = {p.o, p.kh, p.kw, p.c / p.groups},
                                 ys = {p.n, p.out_h(), p.out_w(), p.o};
      BTensor *x = tensor(xs, dt), *w = tensor(ws, dt), *bias = tensor({p.o}), *y = tensor(ys, dt),
              *dy = tensor(ys, dt), *dx = tensor(xs, dt), *dw = tensor(ws, dt), *db = tensor({p.o});
      x->set(in.at("x")), w->set(in.at("w")), bias->set(in.at("b")), dy->set(in.at("dy"));
      cnn_conv2d_args a;
      memset(&a, 0, sizeof a);
      a.plan = pp, a.stride_h = p.stride_h, a.stride_w = p.stride_w;
      a.pad_top = p.pad_top, a.pad_left = p.pad_left, a.pad_bottom = p.pad_bottom, a.pad_right = p.pad_right;
      a.dilation_h = p.dilation_h, a.dilation_w = p.dilation_w, a.groups = p.groups;
      a.act = p.relu ? CNN_ACT_RELU : c.act, a.act_alpha = c.alpha;
      a.x = x->t(), a.w = w->t(), a.b = c.bias ? bias->t() : nullptr, a.y = y->t();
      a.dy = dy->t(), a.dx = dx->t(), a.dw = dw->t(), a.db = c.bias ? db->t() : nullptr;
      CALL(b, Call::Conv2dForward, &a);
      CALL(b, Call::Conv2dBackwardData, &a);
      CALL(b, Call::Conv2dBackwardFilter, &a);
      out["y"] = y->get(), out["dx"] = dx->get(), out["dw"] = dw->get();
      if (c.bias) {
        out["db"] = db->get();
      } else {
        for (float v : db->get()) EXPECT_TRUE(std::isnan(v)) << "no db asked for: its memory stays untouched";
      }
      if (pp) {  // the second call runs on what the plan cached
        CALL(b, Call::Conv2dForward, &a);
        CALL(b, Call::Conv2dBackwardFilter, &a);
        out["y (cached plan)"] = y->get(), out["dw (cached plan)"] = dw->get();
      }
      break;
    }
    case Op::Pool2d: {
      const cnnref::Pool2d &p = c.pool;
      const std::vector<int64_t> xs = {p.n, p.h, p.w, p.c}, ys = {p.n, p.out_h(), p.out_w(), p.c};
      BTensor *x = tensor(xs, dt), *y = tensor(ys, dt), *dy = tensor(ys, dt), *dx = tensor(xs, dt),
              *dx2 = tensor(xs, dt), *y0 = tensor(ys, dt);
      x->set(in.at("x")), dy->set(in.at("dy"));
      cnn_pool2d_args a;
      memset(&a, 0, sizeof a);
      a.mode = p.max ? CNN_POOL_MAX : CNN_POOL_AVG;
      a.kernel_h = p.kh, a.kernel_w = p.kw, a.stride_h = p.stride_h, a.stride_w = p.stride_w;
      a.pad_top = p.pad_top, a.pad_left = p.pad_left, a.pad_bottom = p.pad_bottom, a.pad_right = p.pad_right;
      a.plan = pp;
      if (pp || !p.max) {
        a.x = x->t(), a.y = y0->t(), a.training = 0;  // inference forward
        CALL(b, Call::Pool2dForward, &a);
        out["y (inference)"] = y0->get();
      }
      if (!pp && !p.max) {  // average pooling's backward needs no forward state
        a.x = nullptr, a.y = nullptr, a.dy = dy->t(), a.dx = dx->t();
        CALL(b, Call::Pool2dBackward, &a);
        out["dx"] = dx->get();
        break;
      }
      a.x = x->t(), a.y = y->t(), a.training = 1;
      CALL(b, Call::Pool2dForward, &a);
      a.dy = dy->t(), a.dx = dx->t();
      CALL(b, Call::Pool2dBackward, &a);
      out["y"] = y->get(), out["dx"] = dx->get();
      if (pp) {  // the layer's way without x and y: the backend uses what its plan kept
        a.x = nullptr, a.y = nullptr, a.dx = dx2->t();
        CALL(b, Call::Pool2dBackward, &a);
        out["dx (from the plan)"] = dx2->get();
      }
      break;
    }
    case Op::Dense: {
      const int64_t n = c.shape[0], inner = numel(c.shape) / n;
      BTensor *x = tensor(c.shape, dt), *w = tensor({c.out, inner}, dt), *bias = tensor({c.out}),
              *y = tensor({n, c.out}, dt), *dy = tensor({n, c.out}, dt), *dx = tensor(c.shape, dt),
              *dw = tensor({c.out, inner}, dt), *db = tensor({c.out});
      x->set(in.at("x")), w->set(in.at("w")), bias->set(in.at("b")), dy->set(in.at("dy"));
      cnn_dense_args a;
      memset(&a, 0, sizeof a);
      a.plan = pp, a.x = x->t(), a.w = w->t(), a.b = c.bias ? bias->t() : nullptr, a.y = y->t();
      a.act = c.act, a.act_alpha = c.alpha;
      a.dy = dy->t(), a.dx = dx->t(), a.dw = dw->t(), a.db = c.bias ? db->t() : nullptr;
      CALL(b, Call::DenseForward, &a);
      CALL(b, Call::DenseBackwardData, &a);
      CALL(b, Call::DenseBackwardWeights, &a);
      out["y"] = y->get(), out["dx"] = dx->get(), out["dw"] = dw->get();
      if (c.bias) out["db"] = db->get();
      if (pp) {
        CALL(b, Call::DenseForward, &a);
        out["y (cached plan)"] = y->get();
        a.plan = nullptr;
        CALL(b, Call::DenseForward, &a);
        CALL(b, Call::DenseBackwardWeights, &a);
        out["y (no plan)"] = y->get(), out["dw (no plan)"] = dw->get();
      }
      break;
    }
    case Op::Act: {
      auto [x, y, dy, dx] = elementwise();
      cnn_act_args a;
      memset(&a, 0, sizeof a);
      a.act = c.act, a.alpha = c.alpha, a.x = x->t(), a.y = y->t();
      CALL(b, Call::ActForward, &a);
      // what backward may read: the input for GELU and SiLU, the output for the others
      if (cnn_act_grad_needs_input(c.act))
        a.y = nullptr;
      else
        a.x = nullptr;
      a.dy = dy->t(), a.dx = c.alias ? dy->t() : dx->t();
      CALL(b, Call::ActBackward, &a);
      out["y"] = y->get(), out["dx"] = c.alias ? dy->get() : dx->get();
      break;
    }
    case Op::SoftmaxXent: {
      BTensor *logits = tensor({c.n, c.k}, dt), *labels = tensor({c.n}, CNN_I32), *probs = tensor({c.n, c.k}),
              *losses = tensor({c.n}), *dl = tensor({c.n, c.k}, dt), *weights = tensor({c.k});
      logits->set(in.at("logits")), labels->set_i32(in.labels), weights->set(in.at("weights"));
      cnn_softmax_xent_args a;
      memset(&a, 0, sizeof a);
      a.logits = logits->t(), a.labels = labels->t();
      a.probs = c.leave_out == 1 ? nullptr : probs->t();
      a.losses = c.leave_out == 2 ? nullptr : losses->t();
      a.dlogits = c.leave_out == 3 ? nullptr : dl->t();
      a.grad_scale = c.grad_scale, a.class_weights = c.weighted ? weights->t() : nullptr;
      a.label_smoothing = c.smoothing;
      CALL(b, Call::SoftmaxXent, &a);
      if (a.probs) out["probs"] = probs->get();
      if (a.losses) out["losses"] = losses->get();
      if (a.dlogits) out["dlogits"] = dl->get();
      break;
    }
    case Op::Batchnorm: {
      const int64_t ch = c.shape.back();
      BTensor *x = tensor(c.shape, dt), *r = tensor(c.shape, dt), *y = tensor(c.shape, dt), *dy = tensor(c.shape, dt),
              *dx = tensor(c.shape, dt), *dr = tensor(c.shape, dt);
      BTensor *g = tensor({ch}), *be = tensor({ch}), *rm = tensor({ch}), *rv = tensor({ch}), *sm = tensor({ch}),
              *si = tensor({ch}), *dg = tensor({ch}), *db = tensor({ch});
      x->set(in.at("x")), r->set(in.at("r")), dy->set(in.at("dy")), g->set(in.at("gamma")), be->set(in.at("beta"));
      rm->set(in.at("running_mean")), rv->set(in.at("running_var"));
      cnn_batchnorm_args a;
      memset(&a, 0, sizeof a);
      a.x = x->t(), a.y = y->t(), a.residual = c.residual ? r->t() : nullptr;
      a.gamma = c.affine ? g->t() : nullptr, a.beta = c.affine ? be->t() : nullptr;
      a.running_mean = rm->t(), a.running_var = rv->t();
      a.save_mean = c.training ? sm->t() : nullptr, a.save_invstd = c.training ? si->t() : nullptr;
      a.momentum = c.momentum, a.eps = c.eps, a.training = c.training, a.act = c.act, a.act_alpha = c.alpha;
      CALL(b, Call::BatchnormForward, &a);
      out["y"] = y->get(), out["running_mean"] = rm->get(), out["running_var"] = rv->get();
      if (c.training) {
        out["save_mean"] = sm->get(), out["save_invstd"] = si->get();
      } else {
        for (BTensor *u : {sm, si})
          for (float v : u->get()) EXPECT_TRUE(std::isnan(v)) << "inference writes no batch statistics";
      }
      a.dy = dy->t(), a.dx = c.alias ? dy->t() : dx->t(), a.dresidual = c.residual ? dr->t() : nullptr;
      a.dgamma = c.affine ? dg->t() : nullptr, a.dbeta = c.affine ? db->t() : nullptr;
      CALL(b, Call::BatchnormBackward, &a);
      out["dx"] = c.alias ? dy->get() : dx->get();
      if (c.residual) out["dresidual"] = dr->get();
      if (c.affine) out["dgamma"] = dg->get(), out["dbeta"] = db->get();
      if (c.affine && !c.alias) {  // dx may be left out: the parameters' gradients stay what they were
        BTensor *dg2 = tensor({ch});
        a.dx = nullptr, a.dresidual = nullptr, a.dgamma = dg2->t();
        CALL(b, Call::BatchnormBackward, &a);
        EXPECT_EQ(dg2->get(), out.at("dgamma")) << "dgamma without dx";
      }
      if (c.residual) {
        EXPECT_EQ(r->get(), in.at("r")) << "the residual is an input";
      }
      if (!c.alias) {
        EXPECT_EQ(dy->get(), in.at("dy")) << "dy is an input";
      }
      break;
    }
    case Op::Dropout: {
      auto [x, y, dy, dx] = elementwise();
      cnn_dropout_args a;
      memset(&a, 0, sizeof a);
      a.x = x->t(), a.y = c.alias ? x->t() : y->t(), a.dy = dy->t(), a.dx = c.alias ? dy->t() : dx->t();
      a.rate = c.rate, a.seed = c.seed, a.offset = c.offset;
      CALL(b, Call::DropoutForward, &a);
      CALL(b, Call::DropoutBackward, &a);
      out["y"] = c.alias ? x->get() : y->get(), out["dx"] = c.alias ? dy->get() : dx->get();
      break;
    }
    case Op::Add: {
      BTensor *ta = tensor(c.shape, dt), *tb = tensor(c.shape), *ty = tensor(c.shape, dt);
      ta->set(in.at("a")), tb->set(in.at("b"));
      cnn_add_args a = {ta->t(), tb->t(), c.alias == 1 ? ta->t() : c.alias == 2 ? tb->t() : ty->t(), c.alpha, c.beta};
      CALL(b, Call::Add, &a);
      out["y"] = c.alias == 1 ? ta->get() : c.alias == 2 ? tb->get() : ty->get();
      break;
    }
    case Op::Scale: {
      BTensor *x = tensor(c.shape, dt);
      x->set(in.at("x"));
      const ScaleArgs a = {x->t(), c.alpha};
      CALL(b, Call::Scale, &a);
      out["y"] = x->get();
      break;
    }
    case Op::Concat: {
      std::vector<int64_t> ys = c.lead;
      int64_t total = 0;
      for (int64_t w : c.widths) total += w;
      ys.push_back(total);
      BTensor *y = tensor(ys, dt), *dy = tensor(ys, dt);
      dy->set(in.at("dy"));
      cnn_concat_args a;
      memset(&a, 0, sizeof a);
      a.n = (int)c.widths.size(), a.y = y->t(), a.dy = dy->t();
      std::vector<BTensor *> dxs;
      for (size_t i = 0; i < c.widths.size(); i++) {
        std::vector<int64_t> s = c.lead;
        s.push_back(c.widths[i]);
        BTensor *x = tensor(s, dt);
        dxs.push_back(tensor(s, dt));
        x->set(in.at("x" + std::to_string(i)));
        a.xs[i] = x->t();
        a.dxs[i] = i == 1 ? nullptr : dxs[i]->t();  // a part without a gradient is skipped
      }
      CALL(b, Call::ConcatForward, &a);
      CALL(b, Call::ConcatBackward, &a);
      out["y"] = y->get();
      for (size_t i = 0; i < c.widths.size(); i++) {
        if (i == 1) {
          for (float v : dxs[i]->get()) EXPECT_TRUE(std::isnan(v)) << "dxs[1] is NULL: nothing is written there";
        } else {
          out["dx" + std::to_string(i)] = dxs[i]->get();
        }
      }
      break;
    }
    case Op::Sgd:  // below: they run several steps
    case Op::Adam:
    case Op::Rmsprop:
      break;
  }
  if (c.op == Op::Sgd || c.op == Op::Adam || c.op == Op::Rmsprop) {
    const std::vector<float> zeros(numel(c.shape), 0.0f);
    BTensor *p = tensor(c.shape), *g = tensor(c.shape), *s1 = tensor(c.shape), *s2 = tensor(c.shape);
    p->set(in.at("param")), s1->set(zeros), s2->set(zeros);
    const bool mom = c.momentum_opt != 0.0f;
    for (int k = 0; k < c.steps; k++) {
      g->set(in.at("grad" + std::to_string(k)));
      if (c.op == Op::Sgd) {
        cnn_sgd_args a;
        memset(&a, 0, sizeof a);
        a.param = p->t(), a.grad = g->t(), a.velocity = mom ? s1->t() : nullptr, a.lr = c.lr;
        a.momentum = c.momentum_opt, a.weight_decay = c.weight_decay, a.nesterov = c.nesterov;
        a.grad_scale = c.grad_scale;
        CALL(b, Call::SgdUpdate, &a);
      } else if (c.op == Op::Adam) {
        cnn_adam_args a;
        memset(&a, 0, sizeof a);
        a.param = p->t(), a.grad = g->t(), a.m = s1->t(), a.v = s2->t(), a.lr = c.lr, a.beta1 = c.beta1;
        a.beta2 = c.beta2, a.eps = c.opt_eps, a.weight_decay = c.weight_decay, a.decoupled = c.decoupled;
        a.bias_correction1 = (float)(1.0 - std::pow((double)c.beta1, k + 1));
        a.bias_correction2 = (float)(1.0 - std::pow((double)c.beta2, k + 1));
        a.grad_scale = c.grad_scale;
        CALL(b, Call::AdamUpdate, &a);
      } else {
        cnn_rmsprop_args a;
        memset(&a, 0, sizeof a);
        a.param = p->t(), a.grad = g->t(), a.sq = s1->t(), a.mom = mom ? s2->t() : nullptr, a.lr = c.lr;
        a.rho = c.rho, a.eps = c.opt_eps, a.momentum = c.momentum_opt, a.weight_decay = c.weight_decay;
        a.grad_scale = c.grad_scale;
        CALL(b, Call::RmspropUpdate, &a);
      }
    }
    out["param"] = p->get();
    if (c.op == Op::Sgd && mom) out["velocity"] = s1->get();
    if (c.op == Op::Adam) out["m"] = s1->get(), out["v"] = s2->get();
    if (c.op == Op::Rmsprop) {
      out["sq"] = s1->get();
      if (mom) out["mom"] = s2->get();
    }
  }
  for (size_t i = 0; i < all.size(); i++)
    EXPECT_TRUE(all[i]->guards_intact()) << b->ops->name << ": tensor " << i << " of the case was written outside";
}

// ---------------------------------------------------------------------------------------------------------------
// the CPU against the float64 reference

// The same for an elementwise f: the loss sum_i f(x_i) dy_i moves with x_i alone.
Vec elementwise_differences(const Vec &x, const Vec &dy, const std::function<double(double)> &f,
                            const std::function<bool(size_t)> &skip = nullptr) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); i++)
    g[i] = skip && skip(i) ? NAN : (f(x[i] + kFdStep) - f(x[i] - kFdStep)) / (2 * kFdStep) * dy[i];
  return g;
}

// One expectation on a CPU output: the reference values (NaN: a point left out), the bound, and how many points
// must be compared at least.
struct Want {
  std::string name;
  Vec v;
  double tol;
  bool per_element = false;  // each value against its own magnitude (max(1, |want|)) instead of the largest
  double min_share = 1.0;    // share of the points that must be compared (the rest were skipped near kinks)
};

// Finite differences cost one reference forward per input element: checked up to this many multiply-adds.
constexpr double kFdBudget = 4e7;

std::vector<Want> reference(const OpCase &c, const Named &in, const Named &got) {
  std::vector<Want> w;
  switch (c.op) {
    case Op::Conv2d: {
      const cnnref::Conv2d &p = c.conv;
      cnnref::Conv2d lin = p;
      lin.relu = false;  // backward ops take the gradient w.r.t. the pre-activation output
      const Vec xd = to_double(in.at("x")), wd = to_double(in.at("w")), rd = to_double(in.at("dy"));
      const Vec bd = c.bias ? to_double(in.at("b")) : Vec();
      const Vec y = c.act != CNN_ACT_NONE ? cnnref::activation(c.act, c.alpha, cnnref::conv2d_forward(lin, xd, wd, bd))
                                          : cnnref::conv2d_forward(p, xd, wd, bd);
      w.push_back({"y", y, kForwardTol});
      if (c.use_plan) w.push_back({"y (cached plan)", y, kForwardTol});
      const double cost = (double)(p.x_size() + p.w_size()) * p.y_size() * p.kh * p.kw * (p.c / p.groups);
      if (cost > kFdBudget) break;
      w.push_back(
          {"dx", finite_differences(xd, [&](const Vec &v) { return dot(cnnref::conv2d_forward(lin, v, wd, bd), rd); }),
           kGradTol});
      Vec dw = finite_differences(wd, [&](const Vec &v) { return dot(cnnref::conv2d_forward(lin, xd, v, bd), rd); });
      w.push_back({"dw", dw, kGradTol});
      if (c.use_plan) w.push_back({"dw (cached plan)", dw, kGradTol});
      if (c.bias)
        w.push_back(
            {"db",
             finite_differences(bd, [&](const Vec &v) { return dot(cnnref::conv2d_forward(lin, xd, wd, v), rd); }),
             kGradTol});
      break;
    }
    case Op::Pool2d: {
      const cnnref::Pool2d &p = c.pool;
      const Vec xd = to_double(in.at("x")), rd = to_double(in.at("dy"));
      const Vec y = cnnref::pool2d_forward(p, xd);
      if (c.use_plan || !p.max) w.push_back({"y (inference)", y, kForwardTol});
      if (c.use_plan || p.max) w.push_back({"y", y, kForwardTol});
      if (p.x_size() > 5000) break;
      Vec fd = finite_differences(
          xd, [&](const Vec &v) { return dot(cnnref::pool2d_forward(p, v), rd); },
          [&](size_t i) { return cnnref::pool2d_max_near_tie(p, xd, i, kFdStep); });
      w.push_back({"dx", fd, kGradTol, false, 0.9});
      if (c.use_plan) w.push_back({"dx (from the plan)", fd, kGradTol, false, 0.9});
      break;
    }
    case Op::Dense: {
      const int n = (int)c.shape[0], inner = (int)(numel(c.shape) / n);
      const Vec xd = to_double(in.at("x")), wd = to_double(in.at("w")), rd = to_double(in.at("dy"));
      const Vec bd = c.bias ? to_double(in.at("b")) : Vec();
      const Vec y = cnnref::activation(c.act, c.alpha, cnnref::dense_forward(n, inner, c.out, xd, wd, bd, false));
      // f32 sums of IN products: their rounding grows with IN (measured 1.5e-5 at IN 1152 under tanh, whose
      // outputs are small against the sums)
      const double tol = kForwardTol * std::max(1.0, inner / 256.0);
      w.push_back({"y", y, tol});
      if (c.use_plan) w.push_back({"y (cached plan)", y, tol}), w.push_back({"y (no plan)", y, tol});
      if ((double)n * inner * c.out > 200000) break;
      auto lin = [&](const Vec &x, const Vec &wt, const Vec &b) {
        return dot(cnnref::dense_forward(n, inner, c.out, x, wt, b, false), rd);
      };
      w.push_back({"dx", finite_differences(xd, [&](const Vec &v) { return lin(v, wd, bd); }), kGradTol});
      w.push_back({"dw", finite_differences(wd, [&](const Vec &v) { return lin(xd, v, bd); }), kGradTol});
      if (c.bias) w.push_back({"db", finite_differences(bd, [&](const Vec &v) { return lin(xd, wd, v); }), kGradTol});
      if (c.use_plan) w.push_back({"dw (no plan)", w[w.size() - (c.bias ? 2 : 1)].v, kGradTol});
      break;
    }
    case Op::Act: {
      const Vec xd = to_double(in.at("x")), rd = to_double(in.at("dy"));
      const bool exact = c.act == CNN_ACT_NONE || c.act == CNN_ACT_RELU;  // a copy or a comparison: exact
      w.push_back({"y", cnnref::activation(c.act, c.alpha, xd), exact ? 0.0 : 1e-6, !exact});
      const bool kink = c.act == CNN_ACT_RELU || c.act == CNN_ACT_LEAKY_RELU || c.act == CNN_ACT_ELU;
      w.push_back({"dx",
                   elementwise_differences(
                       xd, rd, [&](double v) { return cnnref::activation(c.act, c.alpha, v); },
                       [&](size_t i) { return kink && std::fabs(xd[i]) <= 2 * kFdStep; }),
                   2e-5, false, xd.size() > 2 ? 0.9 : 0.0});
      break;
    }
    case Op::SoftmaxXent: {
      const Vec ld = to_double(in.at("logits"));
      const Vec wd = c.weighted ? to_double(in.at("weights")) : Vec();
      Vec probs, losses, dl;
      if (c.weighted || c.smoothing > 0) {
        cnnref::softmax_xent(c.n, c.k, ld, in.labels, &probs, nullptr);  // probabilities ignore the weights
        cnnref::softmax_xent_weighted(c.n, c.k, ld, in.labels, wd, c.smoothing, &losses, &dl);
      } else {  // the plain loss, stable for the far logits: dlogits = probs - onehot
        cnnref::softmax_xent(c.n, c.k, ld, in.labels, &probs, &losses);
        dl = probs;
        for (int i = 0; i < c.n; i++) dl[(size_t)i * c.k + in.labels[i]] -= 1.0;
      }
      for (auto &v : dl) v *= c.grad_scale;
      if (c.leave_out != 1) w.push_back({"probs", probs, kForwardTol});
      if (c.leave_out != 2) w.push_back({"losses", losses, 1e-5, true});  // ~1000 with far logits
      if (c.leave_out == 3) break;
      w.push_back({"dlogits", dl, kForwardTol});
      if (c.n * c.k > 100) break;
      Vec fd = finite_differences(ld, [&](const Vec &v) {
        Vec l;
        if (c.weighted || c.smoothing > 0)
          cnnref::softmax_xent_weighted(c.n, c.k, v, in.labels, wd, c.smoothing, &l, nullptr);
        else
          cnnref::softmax_xent(c.n, c.k, v, in.labels, nullptr, &l);
        double s = 0.0;
        for (double x : l) s += x;
        return c.grad_scale * s;
      });
      w.push_back({"dlogits", fd, kGradTol});
      break;
    }
    case Op::Batchnorm: {
      const int64_t ch = c.shape.back(), m = numel(c.shape) / ch;
      const Vec xd = to_double(in.at("x")), rd = to_double(in.at("dy")), resd = to_double(in.at("r"));
      const Vec gd = c.affine ? to_double(in.at("gamma")) : Vec(ch, 1.0),
                bd = c.affine ? to_double(in.at("beta")) : Vec(ch, 0.0);
      const Vec rm0 = to_double(in.at("running_mean")), rv0 = to_double(in.at("running_var"));
      // y = act(bn(x) + r): the reference's batchnorm without its activation, the residual, then the activation
      auto forward = [&](const Vec &x, const Vec &g, const Vec &b, const Vec &r, Vec *mean, Vec *var) {
        Vec y = cnnref::batchnorm_forward(m, ch, x, g, b, rm0, rv0, c.eps, c.training,
                                          c.residual ? CNN_ACT_NONE : c.act, c.alpha, mean, var);
        if (!c.residual) return y;
        for (size_t i = 0; i < y.size(); i++) y[i] += r[i];
        return cnnref::activation(c.act, c.alpha, y);
      };
      Vec mean, var;
      // two values per channel whose spread may be near sqrt(eps): xhat is ill-conditioned in the f32 mean
      w.push_back({"y", forward(xd, gd, bd, resd, &mean, &var), c.training && m < 3 ? 1e-4 : 2e-5});
      if (c.training) {
        Vec invstd(ch), rm(ch), rv(ch);
        for (int64_t j = 0; j < ch; j++) {
          invstd[j] = 1.0 / std::sqrt(var[j] + c.eps);
          rm[j] = (1.0 - c.momentum) * rm0[j] + c.momentum * mean[j];
          rv[j] = (1.0 - c.momentum) * rv0[j] + c.momentum * var[j] * m / (m - 1.0);  // unbiased
        }
        w.push_back({"save_mean", mean, 1e-6});
        w.push_back({"save_invstd", invstd, 1e-6});
        w.push_back({"running_mean", rm, 1e-6});
        if (m > 1) w.push_back({"running_var", rv, 1e-6});
      } else {
        w.push_back({"running_mean", rm0, 0.0});  // inference leaves the running statistics alone
        w.push_back({"running_var", rv0, 0.0});
      }
      // with two values per channel xhat is +-1 whatever x is, and dx only eps's doing: no finite differences
      if (numel(c.shape) > 500 || (c.training && m < 3)) break;
      // finite differences hold where the activation is smooth; ReLU-like kinks are skipped near the fold
      const bool kink = c.act == CNN_ACT_RELU || c.act == CNN_ACT_LEAKY_RELU || c.act == CNN_ACT_ELU;
      if (kink && c.act != CNN_ACT_ELU) break;  // a kink moves with every x in training: covered against the CPU
      auto loss = [&](const Vec &x, const Vec &g, const Vec &b, const Vec &r) {
        return dot(forward(x, g, b, r, nullptr, nullptr), rd);
      };
      const double share = kink ? 0.9 : 1.0;
      w.push_back(
          {"dx", finite_differences(xd, [&](const Vec &v) { return loss(v, gd, bd, resd); }), 2e-5, false, share});
      if (c.residual)
        w.push_back({"dresidual", finite_differences(resd, [&](const Vec &v) { return loss(xd, gd, bd, v); }), 2e-5,
                     false, share});
      if (c.affine) {
        w.push_back({"dgamma", finite_differences(gd, [&](const Vec &v) { return loss(xd, v, bd, resd); }), 2e-5});
        w.push_back({"dbeta", finite_differences(bd, [&](const Vec &v) { return loss(xd, gd, v, resd); }), 2e-5});
      }
      break;
    }
    case Op::Dropout: {
      w.push_back({"y", cnnref::dropout_forward(to_double(in.at("x")), c.rate, c.seed, c.offset), 1e-6});
      w.push_back({"dx", cnnref::dropout_forward(to_double(in.at("dy")), c.rate, c.seed, c.offset), 1e-6});
      if (numel(c.shape) >= 1000) {  // the kept share is about 1 - rate (5 binomial standard deviations)
        size_t kept = 0;
        for (float v : got.at("y")) kept += v != 0.0f;
        const double n = (double)numel(c.shape), sd = std::sqrt(c.rate * (1.0 - c.rate) / n);
        EXPECT_NEAR(kept / n, 1.0 - c.rate, 5 * sd + 1e-9) << "kept share";
      }
      break;
    }
    case Op::Add: {
      const auto &a = in.at("a"), &b = in.at("b");
      Vec y(a.size());
      for (size_t i = 0; i < a.size(); i++) y[i] = (double)c.alpha * a[i] + (double)c.beta * b[i];
      w.push_back({"y", y, 1e-6});
      break;
    }
    case Op::Scale: {
      Vec y;
      for (float v : in.at("x")) y.push_back(v * c.alpha);  // one f32 product: exact
      w.push_back({"y", y, 0.0});
      break;
    }
    case Op::Concat: {
      const int64_t rows = numel(c.lead);
      std::vector<Vec> parts;
      for (size_t i = 0; i < c.widths.size(); i++) parts.push_back(to_double(in.at("x" + std::to_string(i))));
      w.push_back({"y", cnnref::concat(rows, c.widths, parts), 0.0});
      // backward splits dy: part i's channels of every row
      const Vec dy = to_double(in.at("dy"));
      int64_t total = 0, start = 0;
      for (int64_t wd : c.widths) total += wd;
      for (size_t i = 0; i < c.widths.size(); i++) {
        Vec dx;
        for (int64_t r = 0; r < rows; r++)
          for (int64_t j = 0; j < c.widths[i]; j++) dx.push_back(dy[r * total + start + j]);
        start += c.widths[i];
        if (i != 1) w.push_back({"dx" + std::to_string(i), dx, 0.0});
      }
      break;
    }
    case Op::Sgd:
    case Op::Adam:
    case Op::Rmsprop: {
      const size_t n = (size_t)numel(c.shape);
      Vec p = to_double(in.at("param")), s1(n, 0.0), s2(n, 0.0);
      for (int k = 0; k < c.steps; k++) {
        const Vec g = to_double(in.at("grad" + std::to_string(k)));
        if (c.op == Op::Sgd)
          cnnref::sgd_step(p, g, s1, c.lr, c.momentum_opt, c.weight_decay, c.nesterov, c.grad_scale);
        else if (c.op == Op::Adam)
          cnnref::adam_step(p, g, s1, s2, c.lr, c.beta1, c.beta2, c.opt_eps, c.weight_decay, c.decoupled, k + 1,
                            c.grad_scale);
        else
          cnnref::rmsprop_step(p, g, s1, s2, c.lr, c.rho, c.opt_eps, c.momentum_opt, c.weight_decay, c.grad_scale);
      }
      const double tol = c.op == Op::Adam ? 1e-5 : 1e-6;  // Adam divides by sqrt(v) + eps: its f32 error is larger
      w.push_back({"param", p, tol});
      const bool mom = c.momentum_opt != 0.0f;
      if (c.op == Op::Sgd && mom) w.push_back({"velocity", s1, tol});
      if (c.op == Op::Adam) w.push_back({"m", s1, tol}), w.push_back({"v", s2, tol});
      if (c.op == Op::Rmsprop) {
        w.push_back({"sq", s1, tol});
        if (mom) w.push_back({"mom", s2, tol});
      }
      break;
    }
  }
  return w;
}

void expect_matches_reference(const Named &got, const std::vector<Want> &wants) {
  for (const Want &w : wants) {
    SCOPED_TRACE(w.name);
    const std::vector<float> &g = got.at(w.name);
    ASSERT_EQ(g.size(), w.v.size());
    std::vector<float> gs;
    Vec ws;
    for (size_t i = 0; i < g.size(); i++) {
      if (std::isnan(w.v[i])) continue;  // left out (near a kink or a tie)
      ASSERT_TRUE(std::isfinite(g[i])) << "element " << i << " is " << g[i];
      gs.push_back(g[i]);
      ws.push_back(w.v[i]);
    }
    EXPECT_GE((double)gs.size(), w.min_share * (double)g.size()) << "too few points compared";
    if (w.per_element) {
      for (size_t i = 0; i < gs.size(); i++)
        ASSERT_NEAR(gs[i], ws[i], w.tol * std::max(1.0, std::fabs(ws[i]))) << "element " << i;
    } else if (w.tol == 0.0) {
      for (size_t i = 0; i < gs.size(); i++) ASSERT_EQ((double)gs[i], ws[i]) << "element " << i;
    } else {
      EXPECT_LT(cnnref::max_rel_error(gs, ws), w.tol);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// another backend against the CPU

// The bound of one output of a row: f32 statistics and parameter gradients of a 16-bit row keep f32 bounds.
double bound_of(const OpCase &c, const std::string &name) {
  if (c.dtype == CNN_F32 || c.nmse == kExact) return c.nmse;
  if (name == "db" || name == "dgamma" || name == "dbeta")  // f32 sums (of 16-bit products with a residual)
    return c.op != Op::Batchnorm ? kNmseConvGemm : c.residual ? c.nmse : kNmseElementwise;
  if (c.op == Op::Act && name == "y") return lp_bound(c.dtype);  // the row's 4x is for backward from a rounded y
  if (name.rfind("running", 0) == 0 || name.rfind("save", 0) == 0 || name == "probs" || name == "losses")
    return kNmseElementwise;
  return c.nmse;
}

void expect_matches_cpu(const OpCase &c, const Named &got, const Named &cpu) {
  ASSERT_EQ(got.v.size(), cpu.v.size());
  for (const auto &e : cpu.v) {
    SCOPED_TRACE(e.first);
    const std::vector<float> &g = got.at(e.first), &w = e.second;
    ASSERT_EQ(g.size(), w.size());
    for (size_t i = 0; i < g.size(); i++) {
      ASSERT_FALSE(std::isnan(g[i])) << "output " << i << " is NaN";
      ASSERT_FALSE(std::isnan(w[i])) << "the CPU's output " << i << " is NaN";
    }
    const double bound = bound_of(c, e.first);
    if (bound == kExact) {
      for (size_t i = 0; i < g.size(); i++)
        ASSERT_EQ(memcmp(&g[i], &w[i], sizeof(float)), 0) << i << ": " << g[i] << ", cpu " << w[i];
    } else {
      EXPECT_LE(nmse(g, w), bound) << "NMSE over " << g.size() << " values";
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// the runner: one test per (backend, row)

struct Param {
  std::string backend;
  size_t row;
};

// What gtest prints for a test's parameter (ctest shows it beside the name): the backend and the row.
void PrintTo(const Param &p, std::ostream *os) { *os << p.backend << " row " << p.row; }

std::vector<Param> params(const char *backend) {
  std::vector<Param> v;
  for (size_t i = 0; i < table().size(); i++)
    // the CPU computes in f32 only: a 16-bit row's CPU side is the baseline of the other backends
    if (strcmp(backend, "cpu") != 0 || table()[i].dtype == CNN_F32) v.push_back({backend, i});
  return v;
}

std::string param_name(const ::testing::TestParamInfo<Param> &info) {
  return std::to_string(info.param.row) + "_" + table()[info.param.row].name();
}

class OpConformance : public ::testing::TestWithParam<Param> {};

TEST_P(OpConformance, MatchesTheReferenceOrTheCpu) {
  const Param &pr = GetParam();
  const OpCase &c = table()[pr.row];
  BackendSlot &s = slot(pr.backend);
  if (!s.skip.empty()) {
    if (require_cuda()) FAIL() << "CNN_REQUIRE_CUDA is set, but " << pr.backend << ": " << s.skip;
    const std::string prefix = "no CUDA device";
    GTEST_SKIP() << (s.skip.compare(0, prefix.size(), prefix) == 0 ? s.skip : prefix + ": " + s.skip);
  }
  ASSERT_TRUE(s.error.empty()) << "creating the " << pr.backend << " backend failed: " << s.error;
  BackendSlot &cpu = slot("cpu");
  ASSERT_TRUE(cpu.error.empty() && cpu.b) << cpu.error;
  if (s.b->ops->set_precision) {
    ASSERT_EQ(cnn_op_set_precision(s.b, CNN_PRECISION_FP32), CNN_OK) << cnn_last_error();
  }

  const Named in = make_inputs(c, 1000u + (uint32_t)pr.row);
  Named base;
  run_case(cpu.b, c, in, CNN_F32, base);
  if (HasFatalFailure()) return;
  if (s.b == cpu.b) {
    expect_matches_reference(base, reference(c, in, base));
    return;
  }
  Named got;
  run_case(s.b, c, in, c.dtype, got);
  if (HasFatalFailure()) return;
  expect_matches_cpu(c, got, base);
}

INSTANTIATE_TEST_SUITE_P(cpu, OpConformance, ::testing::ValuesIn(params("cpu")), param_name);
INSTANTIATE_TEST_SUITE_P(cuda, OpConformance, ::testing::ValuesIn(params("cuda")), param_name);

// The table covers what it says: every op, both 16-bit dtypes, each of the parameters that picks a kernel path.
TEST(OpTable, CoversEveryOpDtypeAndParameter) {
  int per_op[kOpCount] = {0}, lowp = 0, groups = 0, dilated = 0, asymmetric = 0, residual = 0, smoothing = 0,
      inference = 0, noplan = 0;
  for (const OpCase &c : table()) {
    per_op[(int)c.op]++;
    lowp += c.dtype != CNN_F32;
    groups += c.op == Op::Conv2d && c.conv.groups > 1;
    dilated += c.op == Op::Conv2d && (c.conv.dilation_h > 1 || c.conv.dilation_w > 1);
    asymmetric += c.op == Op::Conv2d && c.conv.pad_top != c.conv.pad_bottom;
    residual += c.op == Op::Batchnorm && c.residual;
    inference += c.op == Op::Batchnorm && !c.training;
    smoothing += c.op == Op::SoftmaxXent && c.smoothing > 0;
    noplan += !c.use_plan;
  }
  for (int i = 0; i < kOpCount; i++) EXPECT_GT(per_op[i], 0) << op_name((Op)i);
  EXPECT_GE(per_op[(int)Op::Conv2d], 160);
  EXPECT_GE(lowp, 50);
  EXPECT_GT(groups, 5);
  EXPECT_GT(dilated, 5);
  EXPECT_GT(asymmetric, 5);
  EXPECT_GT(residual, 3);
  EXPECT_GT(inference, 3);
  EXPECT_GT(smoothing, 3);
  EXPECT_GT(noplan, 3);
}

}  // namespace
