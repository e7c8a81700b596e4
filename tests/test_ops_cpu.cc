// What the CPU backend does beyond the op cases of test_ops.cc's table (which checks every op's values and
// gradients against the float64 references): error paths, a layer's chain of fused ReLU and backward ops, batchnorm's
// fused forms bit for bit against the separate ops, the dropout mask's inputs, multi-tensor optimizer updates bit for
// bit against per-tensor ones, sentinel floats around the optimizers' outputs, and plan caching across batch sizes.
#include <gtest/gtest.h>
#include <omp.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
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
extern "C" {
#include "cpu/dnnl_util.h"  // struct cnn_plan, to check what the plan cache keeps
}

// The CPU backend's constructor, as the generated registry declares it.
extern "C" cnn_status cnn_cpu_backend_create(const char *spec, cnn_backend **out);

namespace {

using cnnref::Vec;
using cnntest::expect_error;
using cnntest::dot;
using cnntest::finite_differences;
using cnntest::random_floats;
using cnntest::to_double;

// Error bounds, relative to the largest magnitude of the reference output (cnnref::max_rel_error). f32 sums of a
// few hundred products stay within ~1e-6 of that scale (measured: at most 8e-7 here).
constexpr double kForwardTol = 5e-6;
// Gradients: the backend's f32 sums against float64 central differences of the reference.
constexpr double kGradTol = 5e-6;  // measured: at most 4e-7

// ---------------------------------------------------------------------------------------------------------------
// fixtures and helpers

cnn_backend *g_backend = nullptr;

class CpuOps : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_EQ(cnn_backend_create("cpu", &g_backend), CNN_OK) << cnn_last_error();
  }
  static void TearDownTestSuite() {
    cnn_backend_destroy(g_backend);
    g_backend = nullptr;
  }
  cnn_backend *b() const { return g_backend; }
  const cnn_backend_ops *ops() const { return g_backend->ops; }
};

// A host tensor on the CPU backend whose data has kGuard sentinel words (a NaN bit pattern no op produces) before
// and after it, to catch writes outside an output.
class GTensor {
 public:
  static constexpr size_t kGuard = 16;  // 64 bytes: keeps the data 64-byte aligned
  static constexpr uint32_t kSentinel = 0x7fa5c3e1u;

  GTensor(std::vector<int64_t> shape, cnn_dtype dtype = CNN_F32) {
    memset(&t_, 0, sizeof t_);
    t_.backend = g_backend;
    t_.dtype = dtype;
    t_.ndim = (int)shape.size();
    numel_ = 1;
    for (size_t i = 0; i < shape.size(); i++) {
      t_.shape[i] = shape[i];
      numel_ *= (size_t)shape[i];
    }
    data_bytes_ = numel_ * cnn_dtype_size(dtype);
    const size_t words = 2 * kGuard + (data_bytes_ + 3) / 4;
    storage_ = (uint32_t *)aligned_alloc(64, (words * 4 + 63) / 64 * 64);
    for (size_t i = 0; i < words; i++) storage_[i] = kSentinel;
    t_.data = storage_ + kGuard;
    t_.owns_data = 0;
    tail_ = (unsigned char *)t_.data + data_bytes_;
    tail_bytes_ = words * 4 - kGuard * 4 - data_bytes_;
  }
  ~GTensor() { free(storage_); }
  GTensor(const GTensor &) = delete;
  GTensor &operator=(const GTensor &) = delete;

  cnn_tensor *t() { return &t_; }
  size_t numel() const { return numel_; }
  float *f() { return (float *)t_.data; }
  int32_t *i32() { return (int32_t *)t_.data; }

  void set(const std::vector<float> &v) {
    ASSERT_EQ(v.size(), numel_);
    if (data_bytes_) memcpy(t_.data, v.data(), data_bytes_);  // an empty vector's data() may be NULL
  }
  std::vector<float> get() const {
    const float *p = (const float *)t_.data;
    return std::vector<float>(p, p + numel_);
  }
  // Every sentinel word before and after the data is as it was.
  bool guards_intact() const {
    for (size_t i = 0; i < kGuard; i++)
      if (storage_[i] != kSentinel) return false;
    const unsigned char *pattern = (const unsigned char *)&kSentinel;
    // the tail starts right after the data, possibly mid-word: compare against the word-aligned pattern
    for (size_t i = 0; i < tail_bytes_; i++) {
      const size_t offset = (size_t)(tail_ - (const unsigned char *)storage_) + i;
      if (tail_[i] != pattern[offset % 4]) return false;
    }
    return true;
  }

 private:
  cnn_tensor t_;
  uint32_t *storage_ = nullptr;
  size_t numel_ = 0, data_bytes_ = 0, tail_bytes_ = 0;
  unsigned char *tail_ = nullptr;
};

// A plan slot that frees its plan through the backend.
struct Plan {
  cnn_plan *p = nullptr;
  ~Plan() {
    if (p) cnn_op_plan_destroy(g_backend, p);
  }
};

// Relative error of an analytic gradient against finite differences over the points that were not skipped;
// `checked` receives how many points that was.
double grad_error(const std::vector<float> &got, const Vec &fd, size_t *checked) {
  std::vector<float> g;
  Vec want;
  for (size_t i = 0; i < fd.size(); i++) {
    if (std::isnan(fd[i])) continue;
    g.push_back(got[i]);
    want.push_back(fd[i]);
  }
  *checked = want.size();
  return cnnref::max_rel_error(g, want);
}

std::string describe(const cnnref::Conv2d &p, bool bias) {
  std::ostringstream s;
  s << "x (" << p.n << ", " << p.h << ", " << p.w << ", " << p.c << ") w (" << p.o << ", " << p.kh << ", " << p.kw
    << ", " << p.c / p.groups << ") stride " << p.stride_h << "x" << p.stride_w << " pad " << p.pad_top << ","
    << p.pad_left << "," << p.pad_bottom << "," << p.pad_right << " dilation " << p.dilation_h << "x"
    << p.dilation_w << " groups " << p.groups << (bias ? " bias" : " no-bias") << (p.relu ? " relu" : "");
  return s.str();
}

std::string describe(const cnnref::Pool2d &p) {
  std::ostringstream s;
  s << (p.max ? "max" : "avg") << " x (" << p.n << ", " << p.h << ", " << p.w << ", " << p.c << ") kernel " << p.kh
    << "x" << p.kw << " stride " << p.stride_h << "x" << p.stride_w << " pad " << p.pad_top << "," << p.pad_left
    << "," << p.pad_bottom << "," << p.pad_right;
  return s.str();
}

std::vector<cnnref::Pool2d> pool_cases() {
  std::vector<cnnref::Pool2d> v;
  auto add = [&](int n, int h, int w, int c, int k, int s, int pt, int pl, int pb, int pr) {
    for (bool max : {true, false}) {
      cnnref::Pool2d p;
      p.max = max, p.n = n, p.h = h, p.w = w, p.c = c, p.kh = p.kw = k, p.stride_h = p.stride_w = s;
      p.pad_top = pt, p.pad_left = pl, p.pad_bottom = pb, p.pad_right = pr;
      v.push_back(p);
    }
  };
  add(1, 7, 5, 3, 2, 2, 0, 0, 0, 0);
  add(5, 7, 5, 3, 3, 2, 1, 0, 2, 1);  // asymmetric padding, overlapping windows
  add(2, 9, 8, 4, 3, 3, 0, 1, 1, 0);
  add(3, 6, 6, 17, 2, 1, 1, 1, 0, 0);
  add(2, 26, 26, 32, 2, 2, 0, 0, 0, 0);  // the seed CNN's first pool at a small batch
  add(1, 1, 1, 5, 1, 1, 0, 0, 0, 0);
  cnnref::Pool2d p;
  p.max = true, p.n = 2, p.h = 7, p.w = 6, p.c = 3, p.kh = 3, p.kw = 2, p.stride_h = 2, p.stride_w = 1;
  p.pad_top = 2, p.pad_left = 1, p.pad_bottom = 1, p.pad_right = 0;
  v.push_back(p);
  p.max = false;
  v.push_back(p);
  // global pooling (globalavgpool, globalmaxpool): one window the size of the input; 5x7 runs the CPU's own
  // max-pool loops, 17x17 (289 elements, above their 256) oneDNN's
  for (int side : {0, 17})
    for (bool max : {true, false}) {
      cnnref::Pool2d g;
      g.max = max, g.n = 2, g.h = side ? side : 5, g.w = side ? side : 7, g.c = side ? 2 : 3;
      g.kh = g.stride_h = g.h, g.kw = g.stride_w = g.w;
      g.pad_top = g.pad_left = g.pad_bottom = g.pad_right = 0;
      v.push_back(g);
    }
  return v;
}

// Distinct values spaced well apart (a shuffled ramp), so that max-pool windows have no near ties.
std::vector<float> distinct_floats(size_t n, std::mt19937 &rng) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; i++) v[i] = -1.0f + 2.0f * (float)i / (float)std::max<size_t>(n, 1);
  std::shuffle(v.begin(), v.end(), rng);
  return v;
}

// ---------------------------------------------------------------------------------------------------------------
// op runners

struct ConvRun {
  cnnref::Conv2d p;
  bool bias;
  cnn_conv2d_args args() const {
    cnn_conv2d_args a;
    memset(&a, 0, sizeof a);
    a.stride_h = p.stride_h, a.stride_w = p.stride_w;
    a.pad_top = p.pad_top, a.pad_left = p.pad_left, a.pad_bottom = p.pad_bottom, a.pad_right = p.pad_right;
    a.dilation_h = p.dilation_h, a.dilation_w = p.dilation_w;
    a.groups = p.groups;
    a.act = p.relu ? CNN_ACT_RELU : CNN_ACT_NONE;
    return a;
  }
  std::vector<int64_t> x_shape() const { return {p.n, p.h, p.w, p.c}; }
  std::vector<int64_t> w_shape() const { return {p.o, p.kh, p.kw, p.c / p.groups}; }
  std::vector<int64_t> y_shape() const { return {p.n, p.out_h(), p.out_w(), p.o}; }
};

cnn_pool2d_args pool_args(const cnnref::Pool2d &p) {
  cnn_pool2d_args a;
  memset(&a, 0, sizeof a);
  a.mode = p.max ? CNN_POOL_MAX : CNN_POOL_AVG;
  a.kernel_h = p.kh, a.kernel_w = p.kw, a.stride_h = p.stride_h, a.stride_w = p.stride_w;
  a.pad_top = p.pad_top, a.pad_left = p.pad_left, a.pad_bottom = p.pad_bottom, a.pad_right = p.pad_right;
  return a;
}

// Runs conv2d_forward through `plan` and returns y; checks the status and y's sentinels.
std::vector<float> run_conv_forward(const ConvRun &r, const std::vector<float> &x, const std::vector<float> &w,
                                    const std::vector<float> &bias, cnn_plan **plan) {
  GTensor tx(r.x_shape()), tw(r.w_shape()), tb({r.p.o}), ty(r.y_shape());
  tx.set(x);
  tw.set(w);
  if (r.bias) tb.set(bias);
  cnn_conv2d_args a = r.args();
  a.plan = plan;
  a.x = tx.t(), a.w = tw.t(), a.b = r.bias ? tb.t() : nullptr, a.y = ty.t();
  cnn_status st = cnn_op_conv2d_forward(g_backend, &a);
  EXPECT_EQ(st, CNN_OK) << cnn_last_error();
  EXPECT_TRUE(ty.guards_intact()) << "conv2d_forward wrote outside y";
  return ty.get();
}

// Runs pool2d_forward in training mode on xv through `plan`, from *x into *y, and checks y against the reference;
// *a keeps the arguments, for a backward after it.
void run_pool_forward(const cnnref::Pool2d &p, const std::vector<float> &xv, cnn_plan **plan, GTensor *x, GTensor *y,
                      cnn_pool2d_args *a) {
  x->set(xv);
  *a = pool_args(p);
  a->plan = plan, a->x = x->t(), a->y = y->t(), a->training = 1;
  ASSERT_EQ(cnn_op_pool2d_forward(g_backend, a), CNN_OK) << cnn_last_error();
  EXPECT_LT(cnnref::max_rel_error(y->get(), cnnref::pool2d_forward(p, to_double(xv))), kForwardTol);
}

// ---------------------------------------------------------------------------------------------------------------
// (a) forward against the reference

TEST_F(CpuOps, BackendIsNamedCpuAndDescribesItself) {
  EXPECT_STREQ(cnn_backend_name(b()), "cpu");
  EXPECT_STREQ(ops()->name, "cpu");
  std::string d = cnn_backend_description(b());
  EXPECT_NE(d.find("CPU"), std::string::npos) << d;
  EXPECT_NE(d.find("oneDNN"), std::string::npos) << d;
  EXPECT_NE(d.find("thread"), std::string::npos) << d;
}

// ---------------------------------------------------------------------------------------------------------------
// (b) gradients against finite differences

// A layer's chain: forward with the fused ReLU, act_backward from y, then both conv backward ops; against
// finite differences of the reference with ReLU, skipping points whose step flips the sign of some pre-activation.
TEST_F(CpuOps, Conv2dWithFusedReluGradientChainMatchesFiniteDifferences) {
  std::mt19937 rng(9);
  cnnref::Conv2d p = cnntest::conv_params(2, 7, 6, 3, 4, 3, 3, 2, 1);
  p.relu = true;
  ConvRun r{p, true};
  auto x = random_floats(p.x_size(), rng), w = random_floats(p.w_size(), rng), bv = random_floats(p.o, rng),
       rr = random_floats(p.y_size(), rng);
  Plan plan;
  GTensor tx(r.x_shape()), tw(r.w_shape()), tb({p.o}), ty(r.y_shape()), tr(r.y_shape()), tdz(r.y_shape()),
      tdx(r.x_shape()), tdw(r.w_shape()), tdb({p.o});
  tx.set(x), tw.set(w), tb.set(bv), tr.set(rr);
  cnn_conv2d_args a = r.args();
  a.plan = &plan.p, a.x = tx.t(), a.w = tw.t(), a.b = tb.t(), a.y = ty.t();
  a.dy = tdz.t(), a.dx = tdx.t(), a.dw = tdw.t(), a.db = tdb.t();
  ASSERT_EQ(cnn_op_conv2d_forward(b(), &a), CNN_OK) << cnn_last_error();
  cnn_act_args aa;
  memset(&aa, 0, sizeof aa);
  aa.act = CNN_ACT_RELU, aa.y = ty.t(), aa.dy = tr.t(), aa.dx = tdz.t();
  ASSERT_EQ(cnn_op_act_backward(b(), &aa), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_op_conv2d_backward_data(b(), &a), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_op_conv2d_backward_filter(b(), &a), CNN_OK) << cnn_last_error();

  cnnref::Conv2d lin = p;
  lin.relu = false;
  const Vec xd = to_double(x), wd = to_double(w), bd = to_double(bv), rd = to_double(rr);
  // a step is valid when no pre-activation changes sign across [v - h, v + h]
  auto smooth = [&](const Vec &lo, const Vec &hi) {
    for (size_t j = 0; j < lo.size(); j++)
      if ((lo[j] > 0) != (hi[j] > 0)) return false;
    return true;
  };
  // the reference with operand k (0: x, 1: w, 2: b) replaced by v
  auto conv_with = [&](const cnnref::Conv2d &q, int k, const Vec &v) {
    return cnnref::conv2d_forward(q, k == 0 ? v : xd, k == 1 ? v : wd, k == 2 ? v : bd);
  };
  const struct {
    const Vec *value;
    const GTensor *grad;
    size_t min_checked;
  } operands[] = {{&xd, &tdx, p.x_size() * 3 / 4}, {&wd, &tdw, p.w_size() * 3 / 4}, {&bd, &tdb, 0}};
  for (int k = 0; k < 3; k++) {
    const Vec &v0 = *operands[k].value;
    Vec fd = finite_differences(
        v0, [&](const Vec &v) { return dot(conv_with(p, k, v), rd); },
        [&](size_t i) {
          Vec lo = v0, hi = v0;
          lo[i] -= cnntest::kFdStep, hi[i] += cnntest::kFdStep;
          return !smooth(conv_with(lin, k, lo), conv_with(lin, k, hi));
        });
    size_t checked;
    EXPECT_LT(grad_error(operands[k].grad->get(), fd, &checked), kGradTol) << "operand " << k;
    EXPECT_GT(checked, operands[k].min_checked) << "operand " << k;
  }
}

TEST_F(CpuOps, AvgPool2dBackwardNeedsNoForward) {
  std::mt19937 rng(13);
  cnnref::Pool2d p = pool_cases()[3];
  ASSERT_FALSE(p.max);
  auto x = random_floats(p.x_size(), rng), dy = random_floats(p.y_size(), rng);
  GTensor tdy({p.n, p.out_h(), p.out_w(), p.c}), tdx({p.n, p.h, p.w, p.c});
  tdy.set(dy);
  for (bool with_plan : {false, true}) {
    Plan plan;
    cnn_pool2d_args a = pool_args(p);
    a.plan = with_plan ? &plan.p : nullptr, a.dy = tdy.t(), a.dx = tdx.t();
    ASSERT_EQ(cnn_op_pool2d_backward(b(), &a), CNN_OK) << cnn_last_error();
    const Vec rd = to_double(dy);
    Vec fd = finite_differences(to_double(x), [&](const Vec &v) { return dot(cnnref::pool2d_forward(p, v), rd); });
    size_t checked;
    EXPECT_LT(grad_error(tdx.get(), fd, &checked), kGradTol);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// (c) sentinels of the ops outside test_ops.cc's table (whose runner guards every tensor of every case)

TEST_F(CpuOps, OptimizersAndCopyLeaveTheBytesAroundTheirOutputsUntouched) {
  std::mt19937 rng(16);
  GTensor op({41}), og({41}), ov({41}), om({41}), ov2({41});
  op.set(random_floats(41, rng)), og.set(random_floats(41, rng));
  ASSERT_EQ(cnn_op_fill(b(), ov.t(), 0.0f), CNN_OK);
  ASSERT_EQ(cnn_op_fill(b(), om.t(), 0.0f), CNN_OK);
  ASSERT_EQ(cnn_op_fill(b(), ov2.t(), 0.0f), CNN_OK);
  cnn_sgd_args sg;
  memset(&sg, 0, sizeof sg);
  sg.param = op.t(), sg.grad = og.t(), sg.velocity = ov.t(), sg.lr = 0.1f, sg.momentum = 0.9f, sg.grad_scale = 1.0f;
  ASSERT_EQ(cnn_op_sgd_update(b(), &sg), CNN_OK) << cnn_last_error();
  cnn_adam_args ad;
  memset(&ad, 0, sizeof ad);
  ad.param = op.t(), ad.grad = og.t(), ad.m = om.t(), ad.v = ov2.t(), ad.lr = 1e-3f, ad.beta1 = 0.9f;
  ad.beta2 = 0.999f, ad.eps = 1e-8f, ad.bias_correction1 = 0.1f, ad.bias_correction2 = 0.001f, ad.grad_scale = 1.0f;
  ASSERT_EQ(cnn_op_adam_update(b(), &ad), CNN_OK) << cnn_last_error();
  for (GTensor *t : {&op, &ov, &om, &ov2}) EXPECT_TRUE(t->guards_intact());

  GTensor cp({13}), cq({13});
  cp.set(random_floats(13, rng));
  ASSERT_EQ(cnn_op_copy(b(), cq.t(), cp.t()), CNN_OK);
  EXPECT_EQ(cq.get(), cp.get());
  EXPECT_TRUE(cq.guards_intact());
}

TEST_F(CpuOps, FillWritesEveryElementAndNothingElse) {
  for (int64_t n : {1, 5, 100003}) {
    GTensor t({n});
    ASSERT_EQ(cnn_op_fill(b(), t.t(), 2.5f), CNN_OK) << cnn_last_error();
    for (float v : t.get()) ASSERT_EQ(v, 2.5f);
    EXPECT_TRUE(t.guards_intact());
    ASSERT_EQ(cnn_op_fill(b(), t.t(), 0.0f), CNN_OK) << cnn_last_error();
    for (float v : t.get()) ASSERT_EQ(v, 0.0f);
  }
  GTensor ti({9}, CNN_I32);
  ASSERT_EQ(cnn_op_fill(b(), ti.t(), 0.0f), CNN_OK) << cnn_last_error();
  for (int i = 0; i < 9; i++) EXPECT_EQ(ti.i32()[i], 0);
  EXPECT_TRUE(ti.guards_intact());
}

TEST_F(CpuOps, TensorsRoundTripThroughWriteReadAndCopy) {
  int64_t shape[3] = {3, 5, 7};
  cnn_tensor *t = nullptr, *u = nullptr;
  ASSERT_EQ(cnn_tensor_create(b(), CNN_F32, 3, shape, &t), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_tensor_create(b(), CNN_F32, 3, shape, &u), CNN_OK) << cnn_last_error();
  EXPECT_EQ((uintptr_t)t->data % 64, 0u) << "CPU allocations are 64-byte aligned";
  std::vector<float> in(105), out(105, -1.0f);
  for (size_t i = 0; i < in.size(); i++) in[i] = (float)i * 0.5f;
  ASSERT_EQ(cnn_tensor_write(t, in.data(), in.size() * 4), CNN_OK);
  ASSERT_EQ(cnn_op_copy(b(), u, t), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_tensor_read(u, out.data(), out.size() * 4), CNN_OK);
  EXPECT_EQ(in, out);
  EXPECT_EQ(cnn_op_write(b(), t, in.data(), 12), CNN_ERR_INVALID_ARG);
  EXPECT_STRNE(cnn_last_error(), "");
  EXPECT_EQ(ops()->sync(b()), CNN_OK);
  cnn_tensor_destroy(t);
  cnn_tensor_destroy(u);
}

// ---------------------------------------------------------------------------------------------------------------
// (d) error paths

TEST_F(CpuOps, BackendCreateRejectsUnknownCpuSpecs) {
  cnn_backend *x = nullptr;
  expect_error(cnn_backend_create("cpu:1", &x), CNN_ERR_INVALID_ARG, {"cpu:1"});
  EXPECT_EQ(x, nullptr);
  expect_error(cnn_cpu_backend_create("cpux", &x), CNN_ERR_INVALID_ARG, {"cpux"});
  EXPECT_EQ(x, nullptr);
  ASSERT_EQ(cnn_cpu_backend_create("cpu", &x), CNN_OK) << cnn_last_error();
  cnn_backend_destroy(x);
  cnn_backend_destroy(nullptr);
}

TEST_F(CpuOps, OneDnnFailuresMapToStatusesNamingTheOpAndTheCall) {
  expect_error(cnn_cpu_dnnl_status(dnnl_unimplemented, "convolution forward", "dnnl_primitive_desc_create"),
               CNN_ERR_UNSUPPORTED, {"oneDNN convolution forward: dnnl_primitive_desc_create failed: unimplemented"});
  expect_error(cnn_cpu_dnnl_status(dnnl_out_of_memory, "pooling forward", "dnnl_memory_create"), CNN_ERR_NO_MEMORY,
               {"pooling forward", "dnnl_memory_create", "out of memory"});
  expect_error(cnn_cpu_dnnl_status(dnnl_runtime_error, "reorder", "dnnl_primitive_execute"), CNN_ERR_BACKEND,
               {"runtime error"});
  EXPECT_EQ(cnn_cpu_dnnl_status(dnnl_success, "x", "y"), CNN_OK);
}

TEST_F(CpuOps, Conv2dRejectsMismatchedShapes) {
  ConvRun r{cnntest::conv_params(2, 7, 5, 3, 4, 3, 3), true};
  Plan plan;
  GTensor x(r.x_shape()), w(r.w_shape()), bb({4}), y(r.y_shape());
  GTensor w_bad({4, 3, 3, 2}), y_bad({2, 5, 4, 4}), b_bad({5}), x_rank3({2, 7, 5});
  cnn_conv2d_args a = r.args();
  a.plan = &plan.p, a.x = x.t(), a.w = w.t(), a.b = bb.t(), a.y = y.t();
  a.w = w_bad.t();
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_SHAPE, {"conv2d_forward", "(4, 3, 3, 2)", "(2, 7, 5, 3)"});
  a.w = w.t(), a.y = y_bad.t();
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_SHAPE, {"(2, 5, 4, 4)", "(2, 5, 3, 4)"});
  a.y = y.t(), a.b = b_bad.t();
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_SHAPE, {"(5)", "(4)"});
  a.b = bb.t(), a.x = x_rank3.t();
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_SHAPE, {"rank 4"});
  a.x = x.t(), a.groups = 2;  // 3 input channels
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_SHAPE, {"groups 2"});
  a.groups = 1, a.stride_h = 0;
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_INVALID_ARG, {"stride"});
  a.stride_h = 1, a.dilation_w = 3;  // kernel spans 7 > 5
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_SHAPE, {"does not fit"});
  a.dilation_w = 1;
  // backward: dx must match what dy and w imply
  GTensor dy(r.y_shape()), dx_bad({2, 7, 6, 3}), dw_bad({4, 3, 2, 3});
  a.dy = dy.t(), a.dx = dx_bad.t();
  expect_error(cnn_op_conv2d_backward_data(b(), &a), CNN_ERR_SHAPE, {"conv2d_backward_data", "dy"});
  a.dw = dw_bad.t();
  expect_error(cnn_op_conv2d_backward_filter(b(), &a), CNN_ERR_SHAPE, {"conv2d_backward_filter"});
  // and after all that, the plan still works
  a.y = y.t();
  ASSERT_EQ(cnn_op_conv2d_forward(b(), &a), CNN_OK) << cnn_last_error();
}

TEST_F(CpuOps, DenseAndPoolRejectMismatchedShapes) {
  Plan dplan, pplan;
  GTensor x({4, 6}), w({3, 5}), y({4, 3}), x1({6});
  cnn_dense_args d;
  memset(&d, 0, sizeof d);
  d.plan = &dplan.p, d.x = x.t(), d.w = w.t(), d.y = y.t();
  expect_error(cnn_op_dense_forward(b(), &d), CNN_ERR_SHAPE, {"dense_forward", "(4, 6)", "(3, 5)"});
  d.x = x1.t();
  expect_error(cnn_op_dense_forward(b(), &d), CNN_ERR_SHAPE, {"rank"});

  GTensor px({2, 6, 6, 3}), py({2, 3, 2, 3});
  cnnref::Pool2d p;
  cnn_pool2d_args a = pool_args(p);
  a.plan = &pplan.p, a.x = px.t(), a.y = py.t();
  expect_error(cnn_op_pool2d_forward(b(), &a), CNN_ERR_SHAPE, {"pool2d_forward", "(2, 3, 2, 3)", "(2, 3, 3, 3)"});
  GTensor py2({2, 3, 3, 3});
  a.y = py2.t(), a.pad_top = 2;  // a window of padding only
  expect_error(cnn_op_pool2d_forward(b(), &a), CNN_ERR_INVALID_ARG, {"padding"});

  GTensor ax({10}), ay({11});
  cnn_act_args aa;
  memset(&aa, 0, sizeof aa);
  aa.act = CNN_ACT_RELU, aa.x = ax.t(), aa.y = ay.t();
  expect_error(cnn_op_act_forward(b(), &aa), CNN_ERR_SHAPE, {"(11)", "(10)"});
}

TEST_F(CpuOps, OpsRejectDtypesOtherThanF32) {
  ConvRun r{cnntest::conv_params(1, 5, 5, 2, 3, 3, 3), false};
  GTensor x(r.x_shape(), CNN_F16), w(r.w_shape()), y(r.y_shape());
  cnn_conv2d_args a = r.args();
  a.x = x.t(), a.w = w.t(), a.y = y.t();
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_UNSUPPORTED, {"conv2d_forward", "F16"});

  GTensor dx({2, 4}, CNN_BF16), dw({3, 4}), dy({2, 3});
  cnn_dense_args d;
  memset(&d, 0, sizeof d);
  d.x = dx.t(), d.w = dw.t(), d.y = dy.t();
  expect_error(cnn_op_dense_forward(b(), &d), CNN_ERR_UNSUPPORTED, {"dense_forward", "BF16"});

  GTensor px({1, 4, 4, 1}, CNN_I8), py({1, 2, 2, 1});
  cnnref::Pool2d pp;
  cnn_pool2d_args pa = pool_args(pp);
  pa.x = px.t(), pa.y = py.t();
  expect_error(cnn_op_pool2d_forward(b(), &pa), CNN_ERR_UNSUPPORTED, {"pool2d_forward", "I8"});

  GTensor ex({8}, CNN_F16), ey({8});
  cnn_act_args aa;
  memset(&aa, 0, sizeof aa);
  aa.act = CNN_ACT_RELU, aa.x = ex.t(), aa.y = ey.t();
  expect_error(cnn_op_act_forward(b(), &aa), CNN_ERR_UNSUPPORTED, {"act_forward", "F16"});

  GTensor sl({2, 3}), slab({2}, CNN_F32);
  cnn_softmax_xent_args sa;
  memset(&sa, 0, sizeof sa);
  sa.logits = sl.t(), sa.labels = slab.t();
  expect_error(cnn_op_softmax_xent(b(), &sa), CNN_ERR_UNSUPPORTED, {"softmax_xent", "labels", "F32"});

  GTensor sp({4}, CNN_F16), sg({4});
  cnn_sgd_args s;
  memset(&s, 0, sizeof s);
  s.param = sp.t(), s.grad = sg.t(), s.lr = 0.1f, s.grad_scale = 1.0f;
  expect_error(cnn_op_sgd_update(b(), &s), CNN_ERR_UNSUPPORTED, {"sgd_update", "F16"});

  GTensor fp({4}, CNN_F16);
  expect_error(cnn_op_fill(b(), fp.t(), 1.0f), CNN_ERR_UNSUPPORTED, {"fill", "F16"});
}

TEST_F(CpuOps, SoftmaxXentRejectsLabelsOutOfRangeNamingTheSample) {
  GTensor tl({5, 4}), tlab({5}, CNN_I32), tp({5, 4}), tloss({5}), td({5, 4});
  std::mt19937 rng(17);
  tl.set(random_floats(20, rng));
  for (int bad : {4, -1, 1000}) {
    int32_t labels[5] = {0, 1, 2, bad, 3};
    memcpy(tlab.i32(), labels, sizeof labels);
    cnn_softmax_xent_args a;
    memset(&a, 0, sizeof a);
    a.logits = tl.t(), a.labels = tlab.t(), a.probs = tp.t(), a.losses = tloss.t(), a.dlogits = td.t();
    a.grad_scale = 1.0f;
    expect_error(cnn_op_softmax_xent(b(), &a), CNN_ERR_INVALID_ARG, {"sample 3", std::to_string(bad).c_str()});
    // nothing was written
    for (GTensor *t : {&tp, &tloss, &td}) {
      EXPECT_TRUE(t->guards_intact());
      for (float v : t->get()) EXPECT_TRUE(std::isnan(v));
    }
  }
}

TEST_F(CpuOps, MaxPool2dBackwardWithoutTrainingForwardFails) {
  cnnref::Pool2d p = pool_cases()[0];
  ASSERT_TRUE(p.max);
  GTensor x({p.n, p.h, p.w, p.c}), y({p.n, p.out_h(), p.out_w(), p.c}), dy({p.n, p.out_h(), p.out_w(), p.c}),
      dx({p.n, p.h, p.w, p.c});
  std::mt19937 rng(18);
  x.set(random_floats(x.numel(), rng)), dy.set(random_floats(dy.numel(), rng));
  Plan plan;
  cnn_pool2d_args a = pool_args(p);
  a.plan = &plan.p, a.x = x.t(), a.y = y.t(), a.dy = dy.t(), a.dx = dx.t();
  // no forward at all
  expect_error(cnn_op_pool2d_backward(b(), &a), CNN_ERR_INVALID_ARG, {"pool2d_backward", "training"});
  // an inference forward
  a.training = 0;
  ASSERT_EQ(cnn_op_pool2d_forward(b(), &a), CNN_OK) << cnn_last_error();
  expect_error(cnn_op_pool2d_backward(b(), &a), CNN_ERR_INVALID_ARG, {"training"});
  // no plan slot
  a.training = 1;
  ASSERT_EQ(cnn_op_pool2d_forward(b(), &a), CNN_OK) << cnn_last_error();
  a.plan = nullptr;
  expect_error(cnn_op_pool2d_backward(b(), &a), CNN_ERR_INVALID_ARG, {"plan"});
  a.plan = &plan.p;
  // a training forward of other shapes came last
  cnnref::Pool2d q = p;
  q.n = 3;
  GTensor x3({q.n, q.h, q.w, q.c}), y3({q.n, q.out_h(), q.out_w(), q.c});
  x3.set(random_floats(x3.numel(), rng));
  cnn_pool2d_args a3 = a;
  a3.x = x3.t(), a3.y = y3.t();
  ASSERT_EQ(cnn_op_pool2d_forward(b(), &a3), CNN_OK) << cnn_last_error();
  expect_error(cnn_op_pool2d_backward(b(), &a), CNN_ERR_INVALID_ARG, {"training"});
  // and after a training forward of these shapes it works
  ASSERT_EQ(cnn_op_pool2d_forward(b(), &a), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_op_pool2d_backward(b(), &a), CNN_OK) << cnn_last_error();
}

TEST_F(CpuOps, OptimizersRejectMissingState) {
  GTensor p({4}), g({4}), v({5});
  cnn_sgd_args s;
  memset(&s, 0, sizeof s);
  s.param = p.t(), s.grad = g.t(), s.lr = 0.1f, s.momentum = 0.9f, s.grad_scale = 1.0f;
  expect_error(cnn_op_sgd_update(b(), &s), CNN_ERR_INVALID_ARG, {"velocity"});
  s.velocity = v.t();
  expect_error(cnn_op_sgd_update(b(), &s), CNN_ERR_SHAPE, {"(5)", "(4)"});
  cnn_adam_args a;
  memset(&a, 0, sizeof a);
  a.param = p.t(), a.grad = g.t(), a.m = nullptr, a.v = p.t();
  expect_error(cnn_op_adam_update(b(), &a), CNN_ERR_INVALID_ARG, {"adam_update", "m"});
}

TEST_F(CpuOps, PlanSlotOfAnotherOpIsRejected) {
  Plan plan;
  ConvRun r{cnntest::conv_params(1, 4, 4, 2, 2, 3, 3), false};
  std::mt19937 rng(19);
  run_conv_forward(r, random_floats(r.p.x_size(), rng), random_floats(r.p.w_size(), rng), {}, &plan.p);
  ASSERT_NE(plan.p, nullptr);
  GTensor x({1, 4, 4, 2}), y({1, 2, 2, 2});
  cnnref::Pool2d pp;
  cnn_pool2d_args a = pool_args(pp);
  a.plan = &plan.p, a.x = x.t(), a.y = y.t();
  expect_error(cnn_op_pool2d_forward(b(), &a), CNN_ERR_INVALID_ARG, {"plan", "conv2d"});
}

// ---------------------------------------------------------------------------------------------------------------
// (e) optimizers and plans

// The plan keeps the two most recently used shape keys: alternating the full batch and the last, smaller batch of
// an epoch builds primitives once per size; a third size evicts the least recently used one.
TEST_F(CpuOps, PlanKeepsTheTwoMostRecentBatchSizes) {
  std::mt19937 rng(24);
  Plan plan;
  const std::vector<int> sizes = {8, 3, 8, 3, 8, 5, 8, 3};
  const std::vector<uint64_t> built = {1, 2, 2, 2, 2, 3, 3, 4};  // 5 evicts 3 (older than 8), and so 3 returns
  for (size_t i = 0; i < sizes.size(); i++) {
    SCOPED_TRACE("call " + std::to_string(i) + ", N " + std::to_string(sizes[i]));
    ConvRun r{cnntest::conv_params(sizes[i], 6, 6, 3, 4, 3, 3), true};
    auto x = random_floats(r.p.x_size(), rng), w = random_floats(r.p.w_size(), rng), bv = random_floats(r.p.o, rng);
    auto y = run_conv_forward(r, x, w, bv, &plan.p);
    EXPECT_LT(cnnref::max_rel_error(y, cnnref::conv2d_forward(r.p, to_double(x), to_double(w), to_double(bv))),
              kForwardTol);
    ASSERT_NE(plan.p, nullptr);
    EXPECT_EQ(plan.p->entries_built, built[i]);
  }
}

// One plan slot per op fed a sequence of calls that differ in one parameter each (same batch size): every call
// gets primitives for its own shapes and parameters, never a stale entry.
TEST_F(CpuOps, PlansRebuildWhenAnyShapeOrParameterChanges) {
  std::mt19937 rng(23);
  Plan conv_plan;
  std::vector<cnnref::Conv2d> seq;
  cnnref::Conv2d p = cnntest::conv_params(4, 8, 7, 4, 6, 3, 3);
  seq.push_back(p);
  p.stride_w = 2, seq.push_back(p);
  p.pad_bottom = 1, seq.push_back(p);
  p.dilation_h = 2, seq.push_back(p);
  p.groups = 2, seq.push_back(p);
  p.relu = true, seq.push_back(p);
  p.h = 9, seq.push_back(p);
  p.o = 8, seq.push_back(p);
  p.kw = 2, seq.push_back(p);
  seq.push_back(seq[0]);
  for (size_t i = 0; i < seq.size(); i++) {
    for (bool bias : {true, false}) {
      ConvRun r{seq[i], bias};
      SCOPED_TRACE(describe(r.p, bias));
      auto x = random_floats(r.p.x_size(), rng), w = random_floats(r.p.w_size(), rng), bv = random_floats(r.p.o, rng);
      auto y = run_conv_forward(r, x, w, bv, &conv_plan.p);
      Vec want = cnnref::conv2d_forward(r.p, to_double(x), to_double(w), bias ? to_double(bv) : Vec());
      EXPECT_LT(cnnref::max_rel_error(y, want), kForwardTol);
    }
  }

  Plan pool_plan;
  std::vector<cnnref::Pool2d> pseq;
  cnnref::Pool2d q;
  q.n = 3, q.h = 8, q.w = 8, q.c = 4;
  pseq.push_back(q);
  q.max = false, pseq.push_back(q);
  q.stride_w = 1, pseq.push_back(q);
  q.pad_left = 1, pseq.push_back(q);
  q.kh = 3, pseq.push_back(q);
  q.c = 5, pseq.push_back(q);
  pseq.push_back(pseq[0]);
  for (const auto &pp : pseq) {
    SCOPED_TRACE(describe(pp));
    GTensor px({pp.n, pp.h, pp.w, pp.c}), py({pp.n, pp.out_h(), pp.out_w(), pp.c});
    cnn_pool2d_args a;
    ASSERT_NO_FATAL_FAILURE(run_pool_forward(pp, random_floats(pp.x_size(), rng), &pool_plan.p, &px, &py, &a));
  }

  Plan dense_plan;
  for (auto io : std::vector<std::pair<int, int>>{{12, 5}, {13, 5}, {13, 6}, {12, 5}}) {
    const int n = 4, in = io.first, out = io.second;
    GTensor x({n, in}), w({out, in}), y({n, out});
    auto xv = random_floats(x.numel(), rng), wv = random_floats(w.numel(), rng);
    x.set(xv), w.set(wv);
    cnn_dense_args a;
    memset(&a, 0, sizeof a);
    a.plan = &dense_plan.p, a.x = x.t(), a.w = w.t(), a.y = y.t();
    ASSERT_EQ(cnn_op_dense_forward(b(), &a), CNN_OK) << cnn_last_error();
    Vec want = cnnref::dense_forward(n, in, out, to_double(xv), to_double(wv), {}, false);
    EXPECT_LT(cnnref::max_rel_error(y.get(), want), kForwardTol);
  }
}

// Batch sizes 8, 3, 8, 5, 8 through one plan slot per op: every result matches the reference (the smaller last
// batch of an epoch, then the full batch again, then a third size that evicts an entry).
TEST_F(CpuOps, PlansAreReusedAndRebuiltWhenTheBatchSizeChanges) {
  std::mt19937 rng(22);
  Plan conv_plan, pool_plan, dense_plan;
  cnn_plan *first_conv_plan = nullptr;
  for (int n : {8, 3, 8, 5, 8, 3}) {
    SCOPED_TRACE("N " + std::to_string(n));
    // conv forward, then both backward ops
    ConvRun r{cnntest::conv_params(n, 9, 7, 4, 6, 3, 3, 2, 1), true};
    r.p.relu = true;
    auto x = random_floats(r.p.x_size(), rng), w = random_floats(r.p.w_size(), rng), bv = random_floats(r.p.o, rng);
    auto y = run_conv_forward(r, x, w, bv, &conv_plan.p);
    EXPECT_LT(cnnref::max_rel_error(y, cnnref::conv2d_forward(r.p, to_double(x), to_double(w), to_double(bv))),
              kForwardTol);
    if (!first_conv_plan) first_conv_plan = conv_plan.p;
    EXPECT_EQ(conv_plan.p, first_conv_plan) << "the slot keeps its plan; entries inside it change";
    {
      GTensor tw(r.w_shape()), tdy(r.y_shape()), tdx(r.x_shape());
      tw.set(w);
      auto dy = random_floats(r.p.y_size(), rng);
      tdy.set(dy);
      cnn_conv2d_args a = r.args();
      a.plan = &conv_plan.p, a.w = tw.t(), a.dy = tdy.t(), a.dx = tdx.t();
      ASSERT_EQ(cnn_op_conv2d_backward_data(b(), &a), CNN_OK) << cnn_last_error();
      // conv backward data is the adjoint: <dx, x'> = <dy, conv(x')> for any x'
      cnnref::Conv2d lin = r.p;
      lin.relu = false;
      auto xp = random_floats(r.p.x_size(), rng);
      double lhs = dot(to_double(tdx.get()), to_double(xp));
      double rhs = dot(to_double(dy), cnnref::conv2d_forward(lin, to_double(xp), to_double(w), {}));
      EXPECT_NEAR(lhs, rhs, 1e-4 * std::max(1.0, std::fabs(rhs)));
    }
    // pooling, training forward and backward
    cnnref::Pool2d pp;
    pp.n = n, pp.h = 8, pp.w = 6, pp.c = 5;
    GTensor px({pp.n, pp.h, pp.w, pp.c}), py({pp.n, pp.out_h(), pp.out_w(), pp.c});
    cnn_pool2d_args pa;
    ASSERT_NO_FATAL_FAILURE(run_pool_forward(pp, distinct_floats(pp.x_size(), rng), &pool_plan.p, &px, &py, &pa));
    GTensor pdy({pp.n, pp.out_h(), pp.out_w(), pp.c}), pdx({pp.n, pp.h, pp.w, pp.c});
    pdy.set(random_floats(pdy.numel(), rng));
    pa.dy = pdy.t(), pa.dx = pdx.t();
    ASSERT_EQ(cnn_op_pool2d_backward(b(), &pa), CNN_OK) << cnn_last_error();
    // max-pool backward routes each dy to its window's argmax: the sums agree
    double sdx = 0, sdy = 0;
    for (float v : pdx.get()) sdx += v;
    for (float v : pdy.get()) sdy += v;
    EXPECT_NEAR(sdx, sdy, 1e-4);
    // dense
    GTensor dx({n, 20}), dw({7, 20}), dbias({7}), dy({n, 7});
    auto dxv = random_floats(dx.numel(), rng), dwv = random_floats(dw.numel(), rng), dbv = random_floats(7, rng);
    dx.set(dxv), dw.set(dwv), dbias.set(dbv);
    cnn_dense_args da;
    memset(&da, 0, sizeof da);
    da.plan = &dense_plan.p, da.x = dx.t(), da.w = dw.t(), da.b = dbias.t(), da.y = dy.t(), da.act = CNN_ACT_RELU;
    ASSERT_EQ(cnn_op_dense_forward(b(), &da), CNN_OK) << cnn_last_error();
    EXPECT_LT(cnnref::max_rel_error(dy.get(), cnnref::dense_forward(n, 20, 7, to_double(dxv), to_double(dwv),
                                                                    to_double(dbv), true)),
              kForwardTol);
  }
}


// ---------------------------------------------------------------------------------------------------------------
// (f) the complete op set: activations with alpha, fused activations, batchnorm, dropout, add, concat, RMSprop,
// sum of squares, scale, weighted and smoothed softmax cross-entropy

struct ActCase {
  cnn_act act;
  float alpha;
  const char *name;
};
const ActCase kActs[] = {
    {CNN_ACT_RELU, 0.0f, "relu"},   {CNN_ACT_LEAKY_RELU, 0.1f, "leaky 0.1"}, {CNN_ACT_ELU, 1.0f, "elu 1"},
    {CNN_ACT_ELU, 0.5f, "elu 0.5"}, {CNN_ACT_SIGMOID, 0.0f, "sigmoid"},      {CNN_ACT_TANH, 0.0f, "tanh"},
    {CNN_ACT_GELU, 0.0f, "gelu"},   {CNN_ACT_SILU, 0.0f, "silu"},
};
// every float of a tensor still holds the sentinel NaN it was created with: nothing was written
bool untouched(const GTensor &t) {
  for (float v : t.get())
    if (!std::isnan(v)) return false;
  return t.guards_intact();
}

TEST_F(CpuOps, ActivationsCheckAlphaAndWhatTheirGradientNeeds) {
  GTensor x({5}), y({5}), dy({5}), dx({5});
  std::mt19937 rng(32);
  x.set(random_floats(5, rng)), dy.set(random_floats(5, rng));
  cnn_act_args a;
  memset(&a, 0, sizeof a);
  a.x = x.t(), a.y = y.t(), a.dy = dy.t(), a.dx = dx.t();
  for (float alpha : {0.0f, 1.0f, -0.5f, NAN}) {
    a.act = CNN_ACT_LEAKY_RELU, a.alpha = alpha;
    expect_error(cnn_op_act_forward(b(), &a), CNN_ERR_INVALID_ARG, {"act_forward", "leaky", "alpha"});
  }
  a.act = CNN_ACT_ELU, a.alpha = -1.0f;
  expect_error(cnn_op_act_backward(b(), &a), CNN_ERR_INVALID_ARG, {"act_backward", "ELU", "alpha"});
  a.act = (cnn_act)99, a.alpha = 0.0f;
  expect_error(cnn_op_act_forward(b(), &a), CNN_ERR_INVALID_ARG, {"unknown activation 99"});
  a.act = CNN_ACT_GELU, a.x = nullptr;
  expect_error(cnn_op_act_backward(b(), &a), CNN_ERR_INVALID_ARG, {"act_backward", "needs the input x"});
  a.act = CNN_ACT_SIGMOID, a.x = x.t(), a.y = nullptr;
  expect_error(cnn_op_act_backward(b(), &a), CNN_ERR_INVALID_ARG, {"act_backward", "needs the forward output y"});
  EXPECT_TRUE(untouched(y) && untouched(dx));
}

// (the fused activations' values are rows of test_ops.cc's table)
TEST_F(CpuOps, ConvAndDenseRejectFusedGeluAndSiluAndLeakyReluWithoutAlpha) {
  std::mt19937 rng(33);
  ConvRun r{cnntest::conv_params(2, 7, 5, 3, 4, 3, 3, 1, 1), true};
  auto x = random_floats(r.p.x_size(), rng), w = random_floats(r.p.w_size(), rng);
  const int n = 3, in = 11, out = 6;
  auto dxv = random_floats(n * in, rng), dwv = random_floats(out * in, rng);
  for (cnn_act act : {CNN_ACT_GELU, CNN_ACT_SILU}) {
    GTensor tx(r.x_shape()), tw(r.w_shape()), ty(r.y_shape());
    tx.set(x), tw.set(w);
    cnn_conv2d_args a = r.args();
    a.x = tx.t(), a.w = tw.t(), a.y = ty.t(), a.act = act;
    expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_INVALID_ARG, {"conv2d_forward", "separate op"});
    EXPECT_TRUE(untouched(ty));
    GTensor dx({n, in}), dw({out, in}), dy({n, out});
    dx.set(dxv), dw.set(dwv);
    cnn_dense_args d;
    memset(&d, 0, sizeof d);
    d.x = dx.t(), d.w = dw.t(), d.y = dy.t(), d.act = act;
    expect_error(cnn_op_dense_forward(b(), &d), CNN_ERR_INVALID_ARG, {"dense_forward", "separate op"});
    EXPECT_TRUE(untouched(dy));
  }
  GTensor tx(r.x_shape()), tw(r.w_shape()), ty(r.y_shape());
  cnn_conv2d_args a = r.args();
  a.x = tx.t(), a.w = tw.t(), a.y = ty.t(), a.act = CNN_ACT_LEAKY_RELU, a.act_alpha = 0.0f;
  expect_error(cnn_op_conv2d_forward(b(), &a), CNN_ERR_INVALID_ARG, {"conv2d_forward", "alpha"});
}

bool same_bits(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && (a.empty() || memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

// ---- batchnorm

struct BnTensors {
  std::vector<int64_t> shape;
  int64_t m, c;
  GTensor x, y, gamma, beta, rm, rv, sm, si, dy, dx, dgamma, dbeta;
  explicit BnTensors(std::vector<int64_t> s)
      : shape(s), m(count(s) / s.back()), c(s.back()), x(s), y(s), gamma({c}), beta({c}), rm({c}), rv({c}),
        sm({c}), si({c}), dy(s), dx(s), dgamma({c}), dbeta({c}) {}
  static int64_t count(const std::vector<int64_t> &s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
  }
  cnn_batchnorm_args args(bool training, float momentum = 0.1f, float eps = 1e-5f) {
    cnn_batchnorm_args a;
    memset(&a, 0, sizeof a);
    a.x = x.t(), a.y = y.t(), a.gamma = gamma.t(), a.beta = beta.t(), a.running_mean = rm.t(), a.running_var = rv.t();
    a.save_mean = sm.t(), a.save_invstd = si.t(), a.dy = dy.t(), a.dx = dx.t(), a.dgamma = dgamma.t();
    a.dbeta = dbeta.t(), a.momentum = momentum, a.eps = eps, a.training = training;
    return a;
  }
};

std::string shape_name(const std::vector<int64_t> &s) {
  std::string r = "(";
  for (size_t i = 0; i < s.size(); i++) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + ")";
}

TEST_F(CpuOps, BatchnormRunningStatisticsFollowPyTorchsUpdateByHand) {
  // x (4, 1) = {1, 2, 3, 6}: mean 3, biased variance 14/4 = 3.5, unbiased 14/3.
  BnTensors t({4, 1});
  t.x.set({1.0f, 2.0f, 3.0f, 6.0f});
  t.gamma.set({2.0f}), t.beta.set({1.0f}), t.rm.set({0.5f}), t.rv.set({2.0f});
  cnn_batchnorm_args a = t.args(true, 0.1f, 0.5f);  // eps 0.5: invstd = 1 / sqrt(3.5 + 0.5) = 0.5
  ASSERT_EQ(cnn_op_batchnorm_forward(b(), &a), CNN_OK) << cnn_last_error();
  EXPECT_FLOAT_EQ(t.rm.get()[0], 0.9f * 0.5f + 0.1f * 3.0f);               // 0.75
  EXPECT_FLOAT_EQ(t.rv.get()[0], 0.9f * 2.0f + 0.1f * 14.0f / 3.0f);       // 2.2667, not 2.15 (biased)
  EXPECT_FLOAT_EQ(t.sm.get()[0], 3.0f);
  EXPECT_FLOAT_EQ(t.si.get()[0], 0.5f);
  const std::vector<float> y = t.y.get();  // 2 (x - 3) 0.5 + 1 = x - 2
  const float want[4] = {-1.0f, 0.0f, 1.0f, 4.0f};
  for (int i = 0; i < 4; i++) EXPECT_NEAR(y[i], want[i], 1e-6);
  // momentum 1 replaces the running statistics with the batch's
  t.rm.set({0.5f}), t.rv.set({2.0f});
  a.momentum = 1.0f;
  ASSERT_EQ(cnn_op_batchnorm_forward(b(), &a), CNN_OK) << cnn_last_error();
  EXPECT_FLOAT_EQ(t.rm.get()[0], 3.0f);
  EXPECT_FLOAT_EQ(t.rv.get()[0], 14.0f / 3.0f);
}

// The activation's gradient inside batchnorm's backward gives bit for bit what the activation's own backward op,
// then batchnorm's without an activation, give: dx, dgamma, dbeta, and the gradient w.r.t. the sum (dresidual), in
// place (dx over dy) too. The network's bit-identical training with the fusion (test_fusion.cc) rests on this.
TEST_F(CpuOps, BatchnormBackwardThroughItsActivationEqualsTheSeparateOpsBitForBit) {
  std::mt19937 rng(47);
  const ActCase acts[] = {{CNN_ACT_NONE, 0.0f, "none"},   {CNN_ACT_RELU, 0.0f, "relu"},
                          {CNN_ACT_LEAKY_RELU, 0.1f, "leaky"}, {CNN_ACT_ELU, 1.0f, "elu"},
                          {CNN_ACT_SIGMOID, 0.0f, "sigmoid"}, {CNN_ACT_TANH, 0.0f, "tanh"}};
  for (const auto &s : std::vector<std::vector<int64_t>>{{4, 5, 3, 6}, {7, 3}, {8, 16, 16, 32}})
    for (int training = 0; training < 2; training++)
      for (const ActCase &act : acts) {
        SCOPED_TRACE(shape_name(s) + " " + act.name + (training ? " training" : " inference"));
        BnTensors t(s);
        GTensor r(s), dres(s), ds(s), dx2(s), dg2({t.c}), db2({t.c}), inplace(s);
        auto x = random_floats(t.x.numel(), rng, -3.0f, 3.0f), dy = random_floats(t.x.numel(), rng);
        t.x.set(x), t.dy.set(dy), r.set(random_floats(t.x.numel(), rng));
        t.gamma.set(random_floats(t.c, rng, 0.5f, 1.5f)), t.beta.set(random_floats(t.c, rng));
        t.rm.set(random_floats(t.c, rng)), t.rv.set(random_floats(t.c, rng, 0.5f, 2.0f));
        cnn_batchnorm_args a = t.args(training);
        a.residual = r.t(), a.act = act.act, a.act_alpha = act.alpha;
        ASSERT_EQ(cnn_op_batchnorm_forward(b(), &a), CNN_OK) << cnn_last_error();
        a.dresidual = dres.t();
        ASSERT_EQ(cnn_op_batchnorm_backward(b(), &a), CNN_OK) << cnn_last_error();
        EXPECT_EQ(t.dy.get(), dy) << "dy is an input";
        // the separate ops: the activation's gradient, then batchnorm with none
        cnn_act_args g;
        memset(&g, 0, sizeof g);
        g.act = act.act, g.alpha = act.alpha, g.y = t.y.t(), g.dy = t.dy.t(), g.dx = ds.t();
        if (act.act == CNN_ACT_NONE) ds.set(dy);
        else ASSERT_EQ(cnn_op_act_backward(b(), &g), CNN_OK) << cnn_last_error();
        cnn_batchnorm_args sa = a;
        sa.act = CNN_ACT_NONE, sa.dy = ds.t(), sa.dresidual = nullptr, sa.dx = dx2.t(), sa.dgamma = dg2.t();
        sa.dbeta = db2.t();
        ASSERT_EQ(cnn_op_batchnorm_backward(b(), &sa), CNN_OK) << cnn_last_error();
        EXPECT_TRUE(same_bits(t.dx.get(), dx2.get()));
        EXPECT_TRUE(same_bits(t.dgamma.get(), dg2.get()));
        EXPECT_TRUE(same_bits(t.dbeta.get(), db2.get()));
        EXPECT_TRUE(same_bits(dres.get(), ds.get()));
        for (GTensor *o : {&t.dx, &dres, &t.dgamma, &t.dbeta}) EXPECT_TRUE(o->guards_intact());
        // without dresidual (dx recomputes the gradient), in place over dy
        inplace.set(dy);
        a.dresidual = nullptr, a.dy = inplace.t(), a.dx = inplace.t();
        ASSERT_EQ(cnn_op_batchnorm_backward(b(), &a), CNN_OK) << cnn_last_error();
        EXPECT_TRUE(same_bits(inplace.get(), dx2.get()));
        // without dx: the parameter gradients alone
        a.dy = t.dy.t(), a.dx = nullptr;
        ASSERT_EQ(cnn_op_batchnorm_backward(b(), &a), CNN_OK) << cnn_last_error();
        EXPECT_TRUE(same_bits(t.dgamma.get(), dg2.get()));
      }
}

// The residual add fused into batchnorm (y = act(bn(x) + r), what the graph rewrite of a residual block's end runs)
// gives bit for bit what batchnorm, then add, then the activation give as separate ops, in training and inference,
// and leaves the residual alone. The network's bit-identical training (test_fusion.cc) rests on this.
TEST_F(CpuOps, BatchnormWithResidualEqualsBatchnormAddThenActivationBitForBit) {
  std::mt19937 rng(45);
  const ActCase acts[] = {{CNN_ACT_NONE, 0.0f, "none"}, {CNN_ACT_RELU, 0.0f, "relu"},
                          {CNN_ACT_LEAKY_RELU, 0.1f, "leaky"}, {CNN_ACT_ELU, 1.0f, "elu"},
                          {CNN_ACT_TANH, 0.0f, "tanh"}};
  for (const auto &s : std::vector<std::vector<int64_t>>{{4, 5, 3, 6}, {7, 3}, {8, 16, 16, 32}})
    for (int training = 0; training < 2; training++)
      for (const ActCase &act : acts) {
        SCOPED_TRACE(shape_name(s) + " " + act.name + (training ? " training" : " inference"));
        BnTensors fused(s), split(s);
        GTensor r(s);
        auto x = random_floats(fused.x.numel(), rng, -3.0f, 3.0f), res = random_floats(fused.x.numel(), rng);
        auto gamma = random_floats(fused.c, rng, 0.5f, 1.5f), beta = random_floats(fused.c, rng);
        auto rm = random_floats(fused.c, rng), rv = random_floats(fused.c, rng, 0.5f, 2.0f);
        for (BnTensors *t : {&fused, &split}) {
          t->x.set(x), t->gamma.set(gamma), t->beta.set(beta);
          t->rm.set(rm), t->rv.set(rv);
        }
        r.set(res);
        cnn_batchnorm_args a = fused.args(training);
        a.residual = r.t(), a.act = act.act, a.act_alpha = act.alpha;
        ASSERT_EQ(cnn_op_batchnorm_forward(b(), &a), CNN_OK) << cnn_last_error();
        cnn_batchnorm_args sa = split.args(training);
        ASSERT_EQ(cnn_op_batchnorm_forward(b(), &sa), CNN_OK) << cnn_last_error();
        cnn_add_args add = {.a = split.y.t(), .b = r.t(), .y = split.y.t(), .alpha = 1.0f, .beta = 1.0f};
        ASSERT_EQ(cnn_op_add(b(), &add), CNN_OK) << cnn_last_error();
        if (act.act != CNN_ACT_NONE) {
          cnn_act_args aa;
          memset(&aa, 0, sizeof aa);
          aa.act = act.act, aa.alpha = act.alpha, aa.x = split.y.t(), aa.y = split.y.t();
          ASSERT_EQ(cnn_op_act_forward(b(), &aa), CNN_OK) << cnn_last_error();
        }
        const std::vector<float> got = fused.y.get(), want = split.y.get();
        ASSERT_EQ(got.size(), want.size());
        EXPECT_EQ(memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
        EXPECT_TRUE(fused.y.guards_intact());
        EXPECT_EQ(r.get(), res);
        EXPECT_EQ(fused.rm.get(), split.rm.get());
        EXPECT_EQ(fused.rv.get(), split.rv.get());
        if (training) {
          EXPECT_EQ(fused.sm.get(), split.sm.get());
          EXPECT_EQ(fused.si.get(), split.si.get());
        }
      }
}

TEST_F(CpuOps, BatchnormRejectsBadArgumentsWithoutWriting) {
  BnTensors t({2, 3, 3, 4});
  std::mt19937 rng(44);
  t.x.set(random_floats(t.x.numel(), rng)), t.gamma.set(random_floats(4, rng)), t.beta.set(random_floats(4, rng));
  t.rm.set(random_floats(4, rng)), t.rv.set(random_floats(4, rng, 0.5f, 1.0f));
  cnn_batchnorm_args a = t.args(true);
  BnTensors one({1, 1, 1, 4});
  cnn_batchnorm_args o = one.args(true);
  expect_error(cnn_op_batchnorm_forward(b(), &o), CNN_ERR_SHAPE, {"batchnorm_forward", "more than one value"});
  GTensor g5({5});
  a.gamma = g5.t();
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_SHAPE, {"gamma", "(5)", "(4)"});
  a = t.args(false);
  a.running_var = nullptr;
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_INVALID_ARG, {"inference", "running_var"});
  a = t.args(true, 0.1f, 0.0f);
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_INVALID_ARG, {"eps"});
  a = t.args(true, 1.5f);
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_INVALID_ARG, {"momentum 1.5"});
  a = t.args(true);
  a.act = CNN_ACT_GELU;
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_INVALID_ARG, {"batchnorm_forward", "separate op"});
  GTensor wrong_y({2, 3, 4, 4});
  a = t.args(true);
  a.y = wrong_y.t();
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_SHAPE, {"y", "(2, 3, 4, 4)", "(2, 3, 3, 4)"});
  GTensor xh(t.shape, CNN_F16);
  a = t.args(true);
  a.x = xh.t();
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_UNSUPPORTED, {"batchnorm_forward", "F16"});
  GTensor wrong_r({2, 3, 3, 5});
  a = t.args(true);
  a.residual = wrong_r.t();
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_SHAPE, {"residual", "(2, 3, 3, 5)", "(2, 3, 3, 4)"});
  GTensor rh(t.shape, CNN_F16);
  a.residual = rh.t();
  expect_error(cnn_op_batchnorm_forward(b(), &a), CNN_ERR_UNSUPPORTED, {"batchnorm_forward", "residual"});
  a = t.args(true);
  a.save_invstd = nullptr;
  t.dy.set(random_floats(t.dy.numel(), rng));
  expect_error(cnn_op_batchnorm_backward(b(), &a), CNN_ERR_INVALID_ARG, {"batchnorm_backward", "save_invstd"});
  a = t.args(true);
  a.act = CNN_ACT_RELU, a.y = nullptr;  // backward through an activation reads y
  expect_error(cnn_op_batchnorm_backward(b(), &a), CNN_ERR_INVALID_ARG, {"batchnorm_backward", "y is missing"});
  a = t.args(true);
  a.act = CNN_ACT_GELU;
  expect_error(cnn_op_batchnorm_backward(b(), &a), CNN_ERR_INVALID_ARG, {"batchnorm_backward", "separate op"});
  a = t.args(true);
  a.dresidual = wrong_r.t();
  expect_error(cnn_op_batchnorm_backward(b(), &a), CNN_ERR_SHAPE, {"dresidual", "(2, 3, 3, 5)", "(2, 3, 3, 4)"});
  for (GTensor *g : {&t.y, &t.sm, &t.si, &t.dx, &t.dgamma, &t.dbeta}) EXPECT_TRUE(untouched(*g));
  EXPECT_EQ(cnn_op_batchnorm_forward(b(), nullptr), CNN_ERR_INVALID_ARG);
}

// ---- dropout

cnn_dropout_args dropout_args(GTensor &x, GTensor &y, float rate, uint64_t seed, uint64_t offset) {
  cnn_dropout_args a;
  memset(&a, 0, sizeof a);
  a.x = x.t(), a.y = y.t(), a.rate = rate, a.seed = seed, a.offset = offset;
  return a;
}

TEST_F(CpuOps, DropoutMaskDependsOnSeedAndOffsetOnly) {
  const int64_t n = 20000;
  std::vector<float> ones(n, 1.0f);
  auto mask = [&](uint64_t seed, uint64_t offset) {
    GTensor tx({n}), ty({n});
    tx.set(ones);
    cnn_dropout_args a = dropout_args(tx, ty, 0.5f, seed, offset);
    EXPECT_EQ(cnn_op_dropout_forward(b(), &a), CNN_OK) << cnn_last_error();
    std::vector<bool> m(n);
    for (int64_t i = 0; i < n; i++) m[i] = ty.get()[i] != 0.0f;
    return m;
  };
  auto differ = [&](const std::vector<bool> &p, const std::vector<bool> &q, int64_t shift) {
    int64_t d = 0;
    for (int64_t i = 0; i + shift < n; i++) d += p[i + shift] != q[i];
    return (double)d / (double)(n - shift);
  };
  const auto m0 = mask(7, 0);
  EXPECT_EQ(mask(7, 0), m0);                  // same seed and offset: same mask
  EXPECT_NEAR(differ(m0, mask(7, n), 0), 0.5, 0.03);  // the next offset block: a fresh mask
  EXPECT_NEAR(differ(m0, mask(8, 0), 0), 0.5, 0.03);  // neighbouring seeds are unrelated
  // the offset counts elements: offset 100 continues the stream where element 100 of offset 0 was
  EXPECT_EQ(differ(m0, mask(7, 100), 100), 0.0);
}

TEST_F(CpuOps, DropoutRateZeroIsIdentityAndRatesOutsideZeroOneAreRejected) {
  std::mt19937 rng(52);
  auto x = random_floats(1001, rng);
  GTensor tx({1001}), ty({1001});
  tx.set(x);
  cnn_dropout_args a = dropout_args(tx, ty, 0.0f, 5, 0);
  ASSERT_EQ(cnn_op_dropout_forward(b(), &a), CNN_OK) << cnn_last_error();
  EXPECT_EQ(ty.get(), x);
  GTensor fresh({1001});
  for (float rate : {1.0f, -0.1f, 1.5f, NAN}) {
    a = dropout_args(tx, fresh, rate, 5, 0);
    expect_error(cnn_op_dropout_forward(b(), &a), CNN_ERR_INVALID_ARG, {"dropout_forward", "rate"});
  }
  a.dy = tx.t(), a.dx = fresh.t();
  expect_error(cnn_op_dropout_backward(b(), &a), CNN_ERR_INVALID_ARG, {"dropout_backward", "rate"});
  EXPECT_TRUE(untouched(fresh));
  GTensor short_y({1000});
  a = dropout_args(tx, short_y, 0.5f, 5, 0);
  expect_error(cnn_op_dropout_forward(b(), &a), CNN_ERR_SHAPE, {"(1000)", "(1001)"});
}

// ---- add, concat, scale, sum of squares

// (its values, also in place, are rows of test_ops.cc's table)
TEST_F(CpuOps, AddRejectsMismatchedShapesWithoutWriting) {
  GTensor p({2, 3}), q({3, 2}), r({2, 3});
  cnn_add_args a{p.t(), q.t(), r.t(), 1.0f, 1.0f};
  expect_error(cnn_op_add(b(), &a), CNN_ERR_SHAPE, {"add", "(3, 2)", "(2, 3)"});
  EXPECT_TRUE(untouched(r));
}

TEST_F(CpuOps, ConcatRejectsPartsThatDoNotFit) {
  GTensor x0({2, 3, 4}), x1({2, 3, 5}), x2({2, 4, 5}), y({2, 3, 10}), dy({2, 3, 9});
  cnn_concat_args a;
  memset(&a, 0, sizeof a);
  a.n = 2, a.xs[0] = x0.t(), a.xs[1] = x1.t(), a.y = y.t();
  expect_error(cnn_op_concat_forward(b(), &a), CNN_ERR_SHAPE, {"concat_forward", "10 channels", "9"});
  a.xs[1] = x2.t(), a.y = dy.t();
  expect_error(cnn_op_concat_forward(b(), &a), CNN_ERR_SHAPE, {"xs[1]", "(2, 4, 5)", "every dim but the last"});
  a.n = 0;
  expect_error(cnn_op_concat_forward(b(), &a), CNN_ERR_INVALID_ARG, {"n = 0"});
  a.n = CNN_CONCAT_MAX + 1;
  expect_error(cnn_op_concat_forward(b(), &a), CNN_ERR_INVALID_ARG, {"n = 17"});
  a.n = 2, a.xs[1] = nullptr, a.dxs[1] = nullptr, a.dy = dy.t();
  expect_error(cnn_op_concat_backward(b(), &a), CNN_ERR_INVALID_ARG, {"concat_backward", "dxs[1]", "xs[1]"});
  EXPECT_TRUE(untouched(y));
}

// (its values are rows of test_ops.cc's table)
TEST_F(CpuOps, ScaleRefuses16BitTensors) {
  GTensor h({4}, CNN_F16);
  expect_error(cnn_op_scale(b(), h.t(), 2.0f), CNN_ERR_UNSUPPORTED, {"scale", "F16"});
}

TEST_F(CpuOps, SumSquaresAccumulatesInDoubleIndependentlyOfThreadCount) {
  std::mt19937 rng(63);
  for (int64_t n : {1, 1000, 1000003}) {
    SCOPED_TRACE("n " + std::to_string(n));
    auto x = random_floats(n, rng, -3.0f, 3.0f);
    x[0] = 1e4f;  // a large first term: float accumulation would lose the small ones
    GTensor t({n});
    t.set(x);
    long double want = 0.0L;
    for (float v : x) want += (long double)v * v;
    double got = -1.0;
    ASSERT_EQ(cnn_op_sum_squares(b(), t.t(), &got), CNN_OK) << cnn_last_error();
    EXPECT_NEAR(got, (double)want, 1e-12 * (double)want);
    const int threads = omp_get_max_threads();
    for (int th : {1, 3}) {
      omp_set_num_threads(th);
      double again = -1.0;
      ASSERT_EQ(cnn_op_sum_squares(b(), t.t(), &again), CNN_OK) << cnn_last_error();
      EXPECT_EQ(again, got) << th << " threads";  // bit for bit
    }
    omp_set_num_threads(threads);
  }
  double out = -1.0;
  GTensor h({4}, CNN_BF16);
  expect_error(cnn_op_sum_squares(b(), h.t(), &out), CNN_ERR_UNSUPPORTED, {"sum_squares", "BF16"});
  GTensor f({4});
  expect_error(cnn_op_sum_squares(b(), f.t(), nullptr), CNN_ERR_INVALID_ARG, {"sum_squares", "out"});
}

// (its steps against the reference are rows of test_ops.cc's table)
TEST_F(CpuOps, RmspropRejectsMissingStateAndRhoOfOneWithoutWriting) {
  GTensor p({4}), g({4}), sq({4});
  cnn_rmsprop_args a;
  memset(&a, 0, sizeof a);
  a.param = p.t(), a.grad = g.t(), a.sq = sq.t(), a.lr = 0.1f, a.rho = 0.9f, a.eps = 1e-8f, a.momentum = 0.9f;
  expect_error(cnn_op_rmsprop_update(b(), &a), CNN_ERR_INVALID_ARG, {"rmsprop_update", "mom"});
  a.momentum = 0.0f, a.rho = 1.0f;
  expect_error(cnn_op_rmsprop_update(b(), &a), CNN_ERR_INVALID_ARG, {"rmsprop_update", "rho"});
  a.rho = 0.9f, a.sq = nullptr;
  expect_error(cnn_op_rmsprop_update(b(), &a), CNN_ERR_INVALID_ARG, {"rmsprop_update", "sq"});
  EXPECT_TRUE(untouched(p));
}

// ---- softmax cross-entropy: class weights, label smoothing, probabilities only

TEST_F(CpuOps, SoftmaxXentWithoutLabelsGivesProbabilitiesOnly) {
  std::mt19937 rng(71);
  const int n = 4, k = 7;
  auto logits = random_floats(n * k, rng, -5.0f, 5.0f);
  GTensor tl({n, k}), tp({n, k}), tloss({n});
  tl.set(logits);
  cnn_softmax_xent_args a;
  memset(&a, 0, sizeof a);
  a.logits = tl.t(), a.probs = tp.t();
  ASSERT_EQ(cnn_op_softmax_xent(b(), &a), CNN_OK) << cnn_last_error();
  Vec probs;
  cnnref::softmax_xent(n, k, to_double(logits), std::vector<int32_t>(n, 0), &probs, nullptr);
  EXPECT_LT(cnnref::max_rel_error(tp.get(), probs), kForwardTol);
  EXPECT_TRUE(tp.guards_intact());
  a.losses = tloss.t();
  expect_error(cnn_op_softmax_xent(b(), &a), CNN_ERR_INVALID_ARG, {"softmax_xent", "labels are missing"});
  EXPECT_TRUE(untouched(tloss));
}

TEST_F(CpuOps, SoftmaxXentRejectsNonPositiveClassWeightsAndBadSmoothing) {
  GTensor tl({2, 3}), tlab({2}, CNN_I32), tw({3}), tw4({4}), tloss({2});
  std::mt19937 rng(72);
  tl.set(random_floats(6, rng));
  tlab.i32()[0] = 0, tlab.i32()[1] = 2;
  cnn_softmax_xent_args a;
  memset(&a, 0, sizeof a);
  a.logits = tl.t(), a.labels = tlab.t(), a.losses = tloss.t(), a.class_weights = tw.t(), a.grad_scale = 1.0f;
  for (float bad : {0.0f, -1.0f, NAN, INFINITY}) {
    tw.set({1.0f, 1.0f, bad});
    expect_error(cnn_op_softmax_xent(b(), &a), CNN_ERR_INVALID_ARG, {"softmax_xent", "class weight 2"});
  }
  tw.set({1.0f, 2.0f, 3.0f});
  for (float s : {1.0f, -0.1f, NAN}) {
    a.label_smoothing = s;
    expect_error(cnn_op_softmax_xent(b(), &a), CNN_ERR_INVALID_ARG, {"softmax_xent", "label smoothing"});
  }
  a.label_smoothing = 0.0f, a.class_weights = tw4.t();
  expect_error(cnn_op_softmax_xent(b(), &a), CNN_ERR_SHAPE, {"class_weights", "(4)", "(3)"});
  EXPECT_TRUE(untouched(tloss));
}

// ---------------------------------------------------------------------------------------------------------------
// multi-tensor optimizer updates and sums of squares

enum class OptKind { kSgd, kAdam, kRmsprop };

struct OptCase {
  const char *name;
  OptKind kind;
  float momentum, wd;
  int nesterov, decoupled;
};

const OptCase kOptCases[] = {
    {"sgd", OptKind::kSgd, 0.0f, 0.0f, 0, 0},
    {"sgd momentum", OptKind::kSgd, 0.9f, 0.0f, 0, 0},
    {"sgd nesterov weight decay", OptKind::kSgd, 0.9f, 5e-3f, 1, 0},
    {"adam L2", OptKind::kAdam, 0.0f, 1e-2f, 0, 0},
    {"adamw", OptKind::kAdam, 0.0f, 1e-2f, 0, 1},
    {"rmsprop", OptKind::kRmsprop, 0.0f, 1e-3f, 0, 0},
    {"rmsprop momentum", OptKind::kRmsprop, 0.5f, 1e-3f, 0, 0},
};

// Parameters, gradients and two state tensors per size, all on the CPU backend.
struct OptTensors {
  std::vector<std::unique_ptr<GTensor>> p, g, s1, s2;
  OptTensors(const std::vector<int64_t> &sizes, std::mt19937 &rng) {
    for (int64_t n : sizes) {
      for (auto *v : {&p, &g, &s1, &s2}) v->emplace_back(new GTensor({n}));
      p.back()->set(random_floats((size_t)n, rng));
      s1.back()->set(std::vector<float>((size_t)n, 0.0f));
      s2.back()->set(std::vector<float>((size_t)n, 0.0f));
    }
  }
  size_t size() const { return p.size(); }
};

cnn_sgd_args sgd_of(OptTensors &t, size_t i, const OptCase &c) {
  cnn_sgd_args a;
  memset(&a, 0, sizeof a);
  a.param = t.p[i]->t(), a.grad = t.g[i]->t(), a.velocity = c.momentum != 0.0f ? t.s1[i]->t() : nullptr;
  a.lr = 0.05f, a.momentum = c.momentum, a.weight_decay = c.wd, a.nesterov = c.nesterov, a.grad_scale = 0.5f;
  return a;
}

cnn_adam_args adam_of(OptTensors &t, size_t i, const OptCase &c, int step) {
  cnn_adam_args a;
  memset(&a, 0, sizeof a);
  a.param = t.p[i]->t(), a.grad = t.g[i]->t(), a.m = t.s1[i]->t(), a.v = t.s2[i]->t();
  a.lr = 1e-2f, a.beta1 = 0.9f, a.beta2 = 0.999f, a.eps = 1e-8f, a.weight_decay = c.wd, a.decoupled = c.decoupled;
  a.bias_correction1 = (float)(1.0 - std::pow(0.9, step)), a.bias_correction2 = (float)(1.0 - std::pow(0.999, step));
  a.grad_scale = 0.25f;
  return a;
}

cnn_rmsprop_args rmsprop_of(OptTensors &t, size_t i, const OptCase &c) {
  cnn_rmsprop_args a;
  memset(&a, 0, sizeof a);
  a.param = t.p[i]->t(), a.grad = t.g[i]->t(), a.sq = t.s1[i]->t(), a.mom = c.momentum != 0.0f ? t.s2[i]->t() : nullptr;
  a.lr = 1e-2f, a.rho = 0.9f, a.eps = 1e-7f, a.momentum = c.momentum, a.weight_decay = c.wd, a.grad_scale = 2.0f;
  return a;
}

// One step (step >= 1) of case c over every tensor of t: one multi call, or one per-tensor call per tensor.
cnn_status opt_step(cnn_backend *bk, OptTensors &t, const OptCase &c, int step, bool multi, int *failed) {
  const int n = (int)t.size();
  if (c.kind == OptKind::kSgd) {
    std::vector<cnn_sgd_args> list;
    for (size_t i = 0; i < t.size(); i++) list.push_back(sgd_of(t, i, c));
    if (multi) return cnn_op_sgd_update_multi(bk, list.data(), n, failed);
    for (auto &a : list)
      if (cnn_status st = cnn_op_sgd_update(bk, &a)) return st;
  } else if (c.kind == OptKind::kAdam) {
    std::vector<cnn_adam_args> list;
    for (size_t i = 0; i < t.size(); i++) list.push_back(adam_of(t, i, c, step));
    if (multi) return cnn_op_adam_update_multi(bk, list.data(), n, failed);
    for (auto &a : list)
      if (cnn_status st = cnn_op_adam_update(bk, &a)) return st;
  } else {
    std::vector<cnn_rmsprop_args> list;
    for (size_t i = 0; i < t.size(); i++) list.push_back(rmsprop_of(t, i, c));
    if (multi) return cnn_op_rmsprop_update_multi(bk, list.data(), n, failed);
    for (auto &a : list)
      if (cnn_status st = cnn_op_rmsprop_update(bk, &a)) return st;
  }
  return CNN_OK;
}

// Sizes around the chunk of the multi loops (8192) and the parallel threshold, with 1 and 0 elements among them.
const std::vector<int64_t> kMultiSizes = {1, 17, 0, 8191, 8192, 8193, 3, 40000, 5};

TEST_F(CpuOps, MultiTensorUpdatesAreBitIdenticalToPerTensorCalls) {
  ASSERT_NE(ops()->sgd_update_multi, nullptr);
  ASSERT_NE(ops()->adam_update_multi, nullptr);
  ASSERT_NE(ops()->rmsprop_update_multi, nullptr);
  const int threads = omp_get_max_threads();
  for (const OptCase &c : kOptCases) {
    for (int th : {1, 3}) {
      SCOPED_TRACE(std::string(c.name) + ", " + std::to_string(th) + " threads");
      omp_set_num_threads(th);
      std::mt19937 rng(64), rng2(64);
      OptTensors one(kMultiSizes, rng), all(kMultiSizes, rng2);  // the same start
      for (int step = 1; step <= 3; step++) {
        for (size_t i = 0; i < one.size(); i++) {
          auto g = random_floats(one.g[i]->numel(), rng);
          one.g[i]->set(g), all.g[i]->set(g);
        }
        ASSERT_EQ(opt_step(b(), one, c, step, false, nullptr), CNN_OK) << cnn_last_error();
        int failed = -2;
        ASSERT_EQ(opt_step(b(), all, c, step, true, &failed), CNN_OK) << cnn_last_error();
        EXPECT_EQ(failed, -1);
      }
      for (size_t i = 0; i < one.size(); i++) {
        SCOPED_TRACE("tensor " + std::to_string(i) + " of " + std::to_string(one.p[i]->numel()) + " elements");
        EXPECT_TRUE(same_bits(one.p[i]->get(), all.p[i]->get())) << "param";
        EXPECT_TRUE(same_bits(one.s1[i]->get(), all.s1[i]->get())) << "first state";
        EXPECT_TRUE(same_bits(one.s2[i]->get(), all.s2[i]->get())) << "second state";
        EXPECT_TRUE(all.p[i]->guards_intact() && all.s1[i]->guards_intact() && all.s2[i]->guards_intact());
        if (one.p[i]->numel() > 0) {  // the step did something: a test of two no-ops would pass too
          std::mt19937 fresh(64);
          OptTensors start(kMultiSizes, fresh);
          EXPECT_FALSE(same_bits(start.p[i]->get(), all.p[i]->get()));
        }
      }
    }
  }
  omp_set_num_threads(threads);
}

TEST_F(CpuOps, SumSquaresMultiEqualsEachTensorsSumSquaresBitForBit) {
  ASSERT_NE(ops()->sum_squares_multi, nullptr);
  std::mt19937 rng(65);
  const std::vector<int64_t> sizes = {8193, 1, 0, 1000003, 8192, 2};
  std::vector<std::unique_ptr<GTensor>> ts;
  std::vector<const cnn_tensor *> list;
  for (int64_t n : sizes) {
    ts.emplace_back(new GTensor({n}));
    ts.back()->set(random_floats((size_t)n, rng, -3.0f, 3.0f));
    list.push_back(ts.back()->t());
  }
  std::vector<double> want(sizes.size());
  for (size_t i = 0; i < sizes.size(); i++)
    ASSERT_EQ(cnn_op_sum_squares(b(), ts[i]->t(), &want[i]), CNN_OK) << cnn_last_error();
  const int threads = omp_get_max_threads();
  for (int th : {1, 2, 3}) {
    omp_set_num_threads(th);
    std::vector<double> got(sizes.size(), -1.0);
    int failed = -2;
    ASSERT_EQ(cnn_op_sum_squares_multi(b(), list.data(), (int)list.size(), got.data(), &failed), CNN_OK)
        << cnn_last_error();
    EXPECT_EQ(failed, -1);
    for (size_t i = 0; i < sizes.size(); i++)
      EXPECT_EQ(memcmp(&got[i], &want[i], sizeof(double)), 0)
          << "tensor " << i << ", " << th << " threads: " << got[i] << " against " << want[i];
  }
  omp_set_num_threads(threads);
  EXPECT_EQ(want[2], 0.0);
  EXPECT_GT(want[3], 0.0);
}

TEST_F(CpuOps, MultiTensorOpsRejectBadListsNamingTheElementAndWriteNothing) {
  std::mt19937 rng(66);
  OptTensors t({5, 7, 9}, rng);
  const auto p0 = t.p[0]->get();
  const OptCase sgd = kOptCases[2], adam = kOptCases[4], rms = kOptCases[6];
  std::vector<cnn_sgd_args> s;
  for (size_t i = 0; i < t.size(); i++) s.push_back(sgd_of(t, i, sgd));
  int failed = -2;
  expect_error(cnn_op_sgd_update_multi(b(), s.data(), 0, &failed), CNN_ERR_INVALID_ARG, {"sgd_update_multi", "n is 0"});
  EXPECT_EQ(failed, -1);
  expect_error(cnn_op_sgd_update_multi(b(), s.data(), -3, nullptr), CNN_ERR_INVALID_ARG, {"n is -3"});
  expect_error(cnn_op_sgd_update_multi(b(), nullptr, 3, &failed), CNN_ERR_INVALID_ARG, {"list is NULL"});
  s[2].lr = 0.06f;
  expect_error(cnn_op_sgd_update_multi(b(), s.data(), 3, &failed), CNN_ERR_INVALID_ARG, {"list[2].lr", "0.06"});
  EXPECT_EQ(failed, 2);
  s[2] = sgd_of(t, 2, sgd);
  s[1].nesterov = 0;
  expect_error(cnn_op_sgd_update_multi(b(), s.data(), 3, &failed), CNN_ERR_INVALID_ARG, {"list[1].nesterov"});
  EXPECT_EQ(failed, 1);
  s[1] = sgd_of(t, 1, sgd);
  s[1].grad = t.g[2]->t();  // 9 elements for a param of 7
  expect_error(cnn_op_sgd_update_multi(b(), s.data(), 3, &failed), CNN_ERR_SHAPE,
               {"sgd_update_multi list[1]", "grad", "(9)", "(7)"});
  EXPECT_EQ(failed, 1);
  s[1] = sgd_of(t, 1, sgd);
  s[2].velocity = nullptr;
  expect_error(cnn_op_sgd_update_multi(b(), s.data(), 3, &failed), CNN_ERR_INVALID_ARG, {"list[2]", "velocity"});
  EXPECT_EQ(failed, 2);
  s[2] = sgd_of(t, 2, sgd);
  s[1].param_lp = t.s2[1]->t();
  expect_error(cnn_op_sgd_update_multi(b(), s.data(), 3, &failed), CNN_ERR_UNSUPPORTED, {"list[1]", "param_lp"});
  EXPECT_EQ(failed, 1);

  std::vector<cnn_adam_args> a;
  for (size_t i = 0; i < t.size(); i++) a.push_back(adam_of(t, i, adam, 1));
  a[1].bias_correction2 = 0.5f;
  expect_error(cnn_op_adam_update_multi(b(), a.data(), 3, &failed), CNN_ERR_INVALID_ARG,
               {"adam_update_multi", "list[1].bias_correction2"});
  EXPECT_EQ(failed, 1);
  a[1] = adam_of(t, 1, adam, 1);
  a[2].v = nullptr;
  expect_error(cnn_op_adam_update_multi(b(), a.data(), 3, &failed), CNN_ERR_INVALID_ARG, {"list[2]", "v"});
  EXPECT_EQ(failed, 2);

  std::vector<cnn_rmsprop_args> r;
  for (size_t i = 0; i < t.size(); i++) r.push_back(rmsprop_of(t, i, rms));
  r[2].rho = 0.8f;
  expect_error(cnn_op_rmsprop_update_multi(b(), r.data(), 3, &failed), CNN_ERR_INVALID_ARG,
               {"rmsprop_update_multi", "list[2].rho"});
  EXPECT_EQ(failed, 2);
  EXPECT_TRUE(same_bits(t.p[0]->get(), p0)) << "an element was updated although the list was rejected";

  GTensor h({4}, CNN_BF16);
  const cnn_tensor *ts[3] = {t.g[0]->t(), h.t(), t.g[1]->t()};
  double out[3];
  expect_error(cnn_op_sum_squares_multi(b(), ts, 3, out, &failed), CNN_ERR_UNSUPPORTED,
               {"sum_squares_multi", "ts[1]", "BF16"});
  EXPECT_EQ(failed, 1);
  expect_error(cnn_op_sum_squares_multi(b(), ts, 0, out, &failed), CNN_ERR_INVALID_ARG, {"n is 0"});
  EXPECT_EQ(failed, -1);
  expect_error(cnn_op_sum_squares_multi(b(), nullptr, 3, out, nullptr), CNN_ERR_INVALID_ARG, {"ts is NULL"});
  expect_error(cnn_op_sum_squares_multi(b(), ts, 3, nullptr, nullptr), CNN_ERR_INVALID_ARG, {"out is NULL"});
}

}  // namespace
