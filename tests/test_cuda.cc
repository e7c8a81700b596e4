// The CUDA backend beyond the op cases of test_ops.cc's table (which runs every op, in f32 and 16 bits, against
// the CPU backend): the backend itself, tensors and memory, plan caching across batch sizes, the vector and element
// kernel paths, cuDNN's two APIs, error paths, optimizers with 16-bit gradients and multi-tensor updates, TF32, and
// the seed CNN trained on both devices, whose loss curves must agree. Compared with the CPU as normalized mean
// squared error with a bound per op; no NaN anywhere; sentinel bytes after every CUDA output.
//
// Without a CUDA device (or in a build without the CUDA backend) every test that needs one is skipped with
// "no CUDA device: ..."; that happens only when creating the "cuda" backend says CNN_ERR_NOT_FOUND. Any other
// failure to create it fails the tests, and so does a missing device when CNN_REQUIRE_CUDA=1 is set (as
// bench/gpu_check.sh does on a GPU machine, where a skip would hide a driver or build problem).
#include <gtest/gtest.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cnn/cnn.h"
#include "cnn/explain.h"
#include "core/backend.h"
extern "C" {
#include "core/train/checkpoint.h"
}
#include "core/ops.h"
#include "core/rng.h"
#include "tests/fixtures.h"
#include "tests/op_util.h"
#include "tests/util.h"

namespace {

using cnntest::expect_error;
using cnntest::nmse;
using cnntest::random_floats;
using cnntest::round_to;
using cnntest::rounded;

// NMSE bounds: sum((cuda - cpu)^2) / sum(cpu^2). Elementwise ops compute the same f32 expressions on both sides
// (core/ew_math.h), so only libm-vs-CUDA math functions differ; conv and gemm sum in different orders (and may
// later run on tensor cores), hence the looser bound.
constexpr double kNmseElementwise = 1e-7;
constexpr double kNmseConvGemm = 5e-4;

cnn_backend *g_cuda = nullptr;
cnn_backend *g_cpu = nullptr;
std::string g_no_device;     // why there is no CUDA device (CNN_ERR_NOT_FOUND), else empty
std::string g_create_error;  // any other failure to create the cuda backend

void create_backends() {
  if (g_cuda || !g_no_device.empty() || !g_create_error.empty()) return;
  cnn_status st = cnn_backend_create("cuda", &g_cuda);
  if (st == CNN_ERR_NOT_FOUND) {
    g_no_device = cnn_last_error();
    g_cuda = nullptr;
  } else if (st != CNN_OK) {
    g_create_error = std::string(cnn_status_string(st)) + ": " + cnn_last_error();
    g_cuda = nullptr;
  }
  if (cnn_backend_create("cpu", &g_cpu) != CNN_OK) g_create_error += std::string(" cpu: ") + cnn_last_error();
}

std::string skip_message() {
  const std::string prefix = "no CUDA device";
  return g_no_device.compare(0, prefix.size(), prefix) == 0 ? g_no_device : prefix + ": " + g_no_device;
}

bool require_cuda() {
  const char *v = getenv("CNN_REQUIRE_CUDA");
  return v && *v && strcmp(v, "0") != 0;
}

class CudaOps : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { create_backends(); }
  static void TearDownTestSuite() {
    cnn_backend_destroy(g_cuda);
    cnn_backend_destroy(g_cpu);
    g_cuda = g_cpu = nullptr;
    g_no_device.clear();
    g_create_error.clear();
  }
  void SetUp() override {
    if (!g_no_device.empty() && require_cuda()) FAIL() << "CNN_REQUIRE_CUDA is set, but " << skip_message();
    if (!g_no_device.empty()) GTEST_SKIP() << skip_message();
    ASSERT_TRUE(g_create_error.empty()) << "creating the backends failed (not for want of a device): "
                                        << g_create_error;
    ASSERT_NE(g_cuda, nullptr);
    ASSERT_NE(g_cpu, nullptr);
    // every test starts from the backend's defaults, whatever the one before left set (a network's precision, a
    // training's determinism)
    if (g_cuda->ops->set_precision) {
      ASSERT_EQ(cnn_op_set_precision(g_cuda, CNN_PRECISION_FP32), CNN_OK) << cnn_last_error();
    }
    if (g_cuda->ops->set_deterministic) {
      ASSERT_EQ(cnn_op_set_deterministic(g_cuda, 0), CNN_OK) << cnn_last_error();
    }
  }
};

// tensors with sentinel bytes on both sides, on either backend (tests/op_util.h)
using DTensor = cnntest::DeviceTensor;

using Plan = cnntest::Plan;

// Expects `got` (cuda) to match `want` (cpu) within `bound`, with no NaN on either side.
void expect_match(const std::vector<float> &got, const std::vector<float> &want, double bound, const std::string &what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); i++) {
    ASSERT_FALSE(std::isnan(got[i])) << what << ": cuda output " << i << " is NaN";
    ASSERT_FALSE(std::isnan(want[i])) << what << ": cpu output " << i << " is NaN";
  }
  const double e = nmse(got, want);
  EXPECT_LE(e, bound) << what << ": NMSE " << e << " over " << got.size() << " values";
}

// Expects each output's sentinel bytes intact (its tail_intact()), naming the op and output that wrote past them.
void expect_tails_intact(const char *backend, std::initializer_list<std::pair<bool, const char *>> outputs) {
  for (const auto &o : outputs) EXPECT_TRUE(o.first) << backend << " " << o.second << ": wrote outside";
}

// ---------------------------------------------------------------------------------------------------------------
// cases

struct ConvCase {
  int n, h, w, c, o, kh, kw;
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int dilation_h = 1, dilation_w = 1;
  int groups = 1;
  bool bias = true, relu = false;

  int out_h() const { return (int)cnn_window_out(h, kh, stride_h, pad_top, pad_bottom, dilation_h); }
  int out_w() const { return (int)cnn_window_out(w, kw, stride_w, pad_left, pad_right, dilation_w); }
  std::vector<int64_t> x_shape() const { return {n, h, w, c}; }
  std::vector<int64_t> w_shape() const { return {o, kh, kw, c / groups}; }
  std::vector<int64_t> y_shape() const { return {n, out_h(), out_w(), o}; }
  cnn_conv2d_args args() const {
    cnn_conv2d_args a;
    memset(&a, 0, sizeof a);
    a.stride_h = stride_h, a.stride_w = stride_w;
    a.pad_top = pad_top, a.pad_left = pad_left, a.pad_bottom = pad_bottom, a.pad_right = pad_right;
    a.dilation_h = dilation_h, a.dilation_w = dilation_w;
    a.groups = groups;
    a.act = relu ? CNN_ACT_RELU : CNN_ACT_NONE;
    return a;
  }
  std::string str() const {
    std::ostringstream s;
    s << "x (" << n << ", " << h << ", " << w << ", " << c << ") w (" << o << ", " << kh << ", " << kw << ", "
      << c / groups << ") stride " << stride_h << "x" << stride_w << " pad " << pad_top << "," << pad_left << ","
      << pad_bottom << "," << pad_right << " dilation " << dilation_h << "x" << dilation_w << " groups " << groups
      << (bias ? " bias" : " no-bias") << (relu ? " relu" : "");
    return s.str();
  }
};

ConvCase conv(int n, int h, int w, int c, int o, int kh, int kw, int stride = 1, int pad = 0, int dilation = 1,
              int groups = 1) {
  ConvCase p{n, h, w, c, o, kh, kw};
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return p;
}

// The convolutions every backend is checked over (tests/op_util.h), with and without a bias.
std::vector<ConvCase> conv_cases() {
  std::vector<ConvCase> v;
  const std::vector<cnnref::Conv2d> shapes = cnntest::conv_shapes();
  for (size_t i = 0; i < shapes.size(); i++) {
    const cnnref::Conv2d &q = shapes[i];
    ConvCase p{q.n, q.h, q.w, q.c, q.o, q.kh, q.kw};
    p.stride_h = q.stride_h, p.stride_w = q.stride_w;
    p.pad_top = q.pad_top, p.pad_left = q.pad_left, p.pad_bottom = q.pad_bottom, p.pad_right = q.pad_right;
    p.dilation_h = q.dilation_h, p.dilation_w = q.dilation_w, p.groups = q.groups;
    p.relu = q.relu, p.bias = i % 4 != 2;
    v.push_back(p);
  }
  return v;
}

struct PoolCase {
  bool max;
  int n, h, w, c, kh, kw, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right;
  int out_h() const { return (int)cnn_window_out(h, kh, stride_h, pad_top, pad_bottom, 1); }
  int out_w() const { return (int)cnn_window_out(w, kw, stride_w, pad_left, pad_right, 1); }
  std::vector<int64_t> x_shape() const { return {n, h, w, c}; }
  std::vector<int64_t> y_shape() const { return {n, out_h(), out_w(), c}; }
  cnn_pool2d_args args() const {
    cnn_pool2d_args a;
    memset(&a, 0, sizeof a);
    a.mode = max ? CNN_POOL_MAX : CNN_POOL_AVG;
    a.kernel_h = kh, a.kernel_w = kw, a.stride_h = stride_h, a.stride_w = stride_w;
    a.pad_top = pad_top, a.pad_left = pad_left, a.pad_bottom = pad_bottom, a.pad_right = pad_right;
    return a;
  }
  std::string str() const {
    std::ostringstream s;
    s << (max ? "max" : "avg") << " x (" << n << ", " << h << ", " << w << ", " << c << ") kernel " << kh << "x"
      << kw << " stride " << stride_h << "x" << stride_w << " pad " << pad_top << "," << pad_left << ","
      << pad_bottom << "," << pad_right;
    return s.str();
  }
};

// ---------------------------------------------------------------------------------------------------------------
// the backend itself

TEST(CudaBackend, AutoPicksCudaExactlyWhenADeviceIsPresent) {
  cnn_backend *cuda = nullptr, *any = nullptr;
  cnn_status st = cnn_backend_create("cuda", &cuda);
  ASSERT_TRUE(st == CNN_OK || st == CNN_ERR_NOT_FOUND) << cnn_status_string(st) << ": " << cnn_last_error();
  ASSERT_EQ(cnn_backend_create("auto", &any), CNN_OK) << cnn_last_error();
  EXPECT_EQ(std::string(cnn_backend_name(any)).substr(0, 4), st == CNN_OK ? "cuda" : "cpu")
      << cnn_backend_description(any);
  cnn_backend_destroy(any);
  ASSERT_EQ(cnn_backend_create(nullptr, &any), CNN_OK) << cnn_last_error();
  EXPECT_EQ(std::string(cnn_backend_name(any)).substr(0, 4), st == CNN_OK ? "cuda" : "cpu");
  cnn_backend_destroy(any);
  cnn_backend_destroy(cuda);
}

TEST(CudaBackend, MalformedDeviceNamesAreRejectedWithoutADevice) {
  if (std::string(cnn_backends_available()).find("cuda") == std::string::npos) {
    if (require_cuda()) FAIL() << "CNN_REQUIRE_CUDA is set, but this build has no CUDA backend";
    GTEST_SKIP() << "no CUDA device: this build has no CUDA backend (" << cnn_backends_available() << ")";
  }
  cnn_backend *b = nullptr;
  expect_error(cnn_backend_create("cuda:x", &b), CNN_ERR_INVALID_ARG, {"cuda:x"});
  EXPECT_EQ(b, nullptr);
  expect_error(cnn_backend_create("cuda:", &b), CNN_ERR_INVALID_ARG, {"cuda:"});
  EXPECT_EQ(b, nullptr);
  // a device number past the last device is "not found", as is any device on a machine without one
  expect_error(cnn_backend_create("cuda:4096", &b), CNN_ERR_NOT_FOUND, {"no CUDA device"});
  EXPECT_EQ(b, nullptr);
}

// Without a driver the CUDA runtime says "driver version is insufficient": the message says what is missing.
TEST(CudaBackend, AMachineWithoutADriverIsToldSo) {
  if (std::string(cnn_backends_available()).find("cuda") == std::string::npos)
    GTEST_SKIP() << "this build has no CUDA backend (" << cnn_backends_available() << ")";
  if (access("/dev/nvidiactl", F_OK) == 0) GTEST_SKIP() << "this machine has an NVIDIA driver (/dev/nvidiactl)";
  cnn_backend *b = nullptr;
  expect_error(cnn_backend_create("cuda", &b), CNN_ERR_NOT_FOUND,
               {"no NVIDIA GPU or driver was found on this machine", "use --device cpu"});
  EXPECT_EQ(b, nullptr);
  EXPECT_EQ(std::string(cnn_last_error()).find("insufficient"), std::string::npos) << cnn_last_error();
}

TEST_F(CudaOps, BackendIsNamedAfterItsDeviceAndDescribesIt) {
  EXPECT_STREQ(cnn_backend_name(g_cuda), "cuda:0");
  std::string d = cnn_backend_description(g_cuda);
  EXPECT_EQ(d.rfind("CUDA device 0: ", 0), 0u) << d;
  EXPECT_NE(d.find("GiB"), std::string::npos) << d;
  EXPECT_NE(d.find("cuDNN 9."), std::string::npos) << d;
  EXPECT_NE(d.find("cuBLAS"), std::string::npos) << d;
  EXPECT_EQ(cnn_backend_sync(g_cuda), CNN_OK) << cnn_last_error();
}

TEST_F(CudaOps, TensorsRoundTripThroughWriteReadCopyAndFill) {
  int64_t shape[3] = {3, 5, 7};
  cnn_tensor *t = nullptr, *u = nullptr;
  ASSERT_EQ(cnn_tensor_create(g_cuda, CNN_F32, 3, shape, &t), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_tensor_create(g_cuda, CNN_F32, 3, shape, &u), CNN_OK) << cnn_last_error();
  std::vector<float> in(105), out(105, -1.0f);
  for (size_t i = 0; i < in.size(); i++) in[i] = (float)i * 0.5f - 7.0f;
  ASSERT_EQ(cnn_tensor_write(t, in.data(), in.size() * 4), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_op_copy(g_cuda, u, t), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_tensor_read(u, out.data(), out.size() * 4), CNN_OK) << cnn_last_error();
  EXPECT_EQ(in, out);
  expect_error(cnn_op_write(g_cuda, t, in.data(), 12), CNN_ERR_INVALID_ARG, {"12 bytes"});

  // a CPU tensor is not a CUDA tensor: transfers between backends are explicit, through the host
  DTensor c(g_cpu, {3, 5, 7});
  expect_error(cnn_op_copy(g_cuda, u, c.t()), CNN_ERR_INVALID_ARG, {"cpu"});
  expect_error(cnn_op_read(g_cuda, c.t(), out.data(), out.size() * 4), CNN_ERR_INVALID_ARG, {"cpu"});

  for (int64_t n : {1, 5, 100003}) {
    DTensor f(g_cuda, {n});
    ASSERT_EQ(cnn_op_fill(g_cuda, f.t(), 2.5f), CNN_OK) << cnn_last_error();
    for (float v : f.get()) ASSERT_EQ(v, 2.5f);
    ASSERT_EQ(cnn_op_fill(g_cuda, f.t(), 0.0f), CNN_OK) << cnn_last_error();
    for (float v : f.get()) ASSERT_EQ(v, 0.0f);
    EXPECT_TRUE(f.tail_intact()) << "fill wrote past the end of " << n << " floats";
  }
  DTensor fi(g_cuda, {9}, CNN_I32);
  ASSERT_EQ(cnn_op_fill(g_cuda, fi.t(), 0.0f), CNN_OK) << cnn_last_error();
  EXPECT_TRUE(fi.tail_intact());
  expect_error(cnn_op_fill(g_cuda, fi.t(), 1.0f), CNN_ERR_UNSUPPORTED, {"I32"});
  cnn_tensor_destroy(t);
  cnn_tensor_destroy(u);
}

TEST_F(CudaOps, RunningOutOfDeviceMemorySaysHowMuchWasAskedAndIsFree) {
  void *p = nullptr;
  // 1 PiB: more than any GPU has
  expect_error(cnn_op_alloc(g_cuda, (size_t)1 << 50, &p), CNN_ERR_NO_MEMORY,
               {"out of device memory", "MiB", "free", "smaller batch"});
  EXPECT_EQ(p, nullptr);
  // and the backend still works afterwards
  DTensor t(g_cuda, {4});
  t.set({1, 2, 3, 4});
  EXPECT_EQ(t.get(), std::vector<float>({1, 2, 3, 4}));
}

// ---------------------------------------------------------------------------------------------------------------
// convolution

// Runs the three directions on `b` and returns the outputs (y; dx; dw and db). Checks status and sentinel tails.
// With `status`, the first direction that fails leaves its status there (CNN_OK when none does) and its message in
// `error`, for the caller to check, and the outputs are then left empty.
struct ConvResult {
  std::vector<float> y, dx, dw, db;
};

ConvResult run_conv(cnn_backend *b, const ConvCase &p, const std::vector<float> &x, const std::vector<float> &w,
                    const std::vector<float> &bias, const std::vector<float> &dy, cnn_plan **plan,
                    cnn_dtype dt = CNN_F32, cnn_status *status = nullptr, std::string *error = nullptr) {
  ConvResult r;
  DTensor tx(b, p.x_shape(), dt), tw(b, p.w_shape(), dt), tb(b, {p.o}), ty(b, p.y_shape(), dt),
      tdy(b, p.y_shape(), dt), tdx(b, p.x_shape(), dt), tdw(b, p.w_shape(), dt), tdb(b, {p.o});
  tx.set(x), tw.set(w), tb.set(bias), tdy.set(dy);
  cnn_conv2d_args a = p.args();
  a.plan = plan;
  a.x = tx.t(), a.w = tw.t(), a.b = p.bias ? tb.t() : nullptr, a.y = ty.t();
  a.dy = tdy.t(), a.dx = tdx.t(), a.dw = tdw.t(), a.db = p.bias ? tdb.t() : nullptr;
  const char *name = b->ops->name;
  cnn_status (*const dirs[3])(cnn_backend *, const cnn_conv2d_args *) = {
      cnn_op_conv2d_forward, cnn_op_conv2d_backward_data, cnn_op_conv2d_backward_filter};
  if (status) *status = CNN_OK;
  for (auto dir : dirs) {
    const cnn_status st = dir(b, &a);
    if (!status) {
      EXPECT_EQ(st, CNN_OK) << name << ": " << cnn_last_error();
    } else if (st != CNN_OK) {
      *status = st;
      if (error) *error = cnn_last_error();
      return r;
    }
  }
  r.y = ty.get(), r.dx = tdx.get(), r.dw = tdw.get();
  if (p.bias) r.db = tdb.get();
  expect_tails_intact(name, {{ty.tail_intact(), "conv2d_forward: y"},
                            {tdx.tail_intact(), "conv2d_backward_data: dx"},
                            {tdw.tail_intact(), "conv2d_backward_filter: dw"},
                            {tdb.tail_intact(), "conv2d_backward_filter: db"}});
  return r;
}

// Random inputs of a conv case, drawn in the order x, w, bias, dy.
struct ConvInputs {
  std::vector<float> x, w, bias, dy;
};

ConvInputs conv_inputs(const ConvCase &p, std::mt19937 &rng) {
  ConvInputs in;
  in.x = random_floats((size_t)p.n * p.h * p.w * p.c, rng);
  in.w = random_floats((size_t)p.o * p.kh * p.kw * (p.c / p.groups), rng);
  in.bias = random_floats(p.o, rng);
  in.dy = random_floats((size_t)p.n * p.out_h() * p.out_w() * p.o, rng);
  return in;
}

// Batch sizes come and go (full and last batches of training and evaluation); past the plan's few slots the
// least recently used entry is evicted and rebuilt later; every call still computes what the CPU does.
TEST_F(CudaOps, Conv2dPlanFollowsChangingBatchSizes) {
  std::mt19937 rng(3);
  Plan gp(g_cuda);
  for (int n : {8, 3, 8, 3, 5, 8, 3, 1, 6, 7, 8, 2}) {
    ConvCase p = conv(n, 10, 10, 4, 8, 3, 3, 2);
    p.pad_bottom = p.pad_right = 1;
    SCOPED_TRACE(p.str());
    ConvInputs in = conv_inputs(p, rng);
    const auto &x = in.x, &w = in.w, &bias = in.bias, &dy = in.dy;
    Plan cp(g_cpu);
    ConvResult got = run_conv(g_cuda, p, x, w, bias, dy, &gp.p);
    ConvResult want = run_conv(g_cpu, p, x, w, bias, dy, &cp.p);
    expect_match(got.y, want.y, kNmseConvGemm, "y");
    expect_match(got.dx, want.dx, kNmseConvGemm, "dx");
    expect_match(got.dw, want.dw, kNmseConvGemm, "dw");
  }
}

// ---------------------------------------------------------------------------------------------------------------
// pooling

TEST_F(CudaOps, MaxPool2dBackwardWithoutForwardStateFails) {
  PoolCase p{true, 2, 6, 6, 3, 2, 2, 2, 2, 0, 0, 0, 0};
  Plan plan(g_cuda);
  DTensor dy(g_cuda, p.y_shape()), dx(g_cuda, p.x_shape());
  cnn_pool2d_args a = p.args();
  a.plan = &plan.p, a.dy = dy.t(), a.dx = dx.t();
  expect_error(cnn_op_pool2d_backward(g_cuda, &a), CNN_ERR_INVALID_ARG, {"max-pool backward", "training"});
  // an inference forward leaves nothing for backward either
  DTensor x(g_cuda, p.x_shape()), y(g_cuda, p.y_shape());
  std::mt19937 rng(5);
  x.set(random_floats(x.numel(), rng));
  a.x = x.t(), a.y = y.t(), a.training = 0;
  ASSERT_EQ(cnn_op_pool2d_forward(g_cuda, &a), CNN_OK) << cnn_last_error();
  a.x = nullptr, a.y = nullptr;
  expect_error(cnn_op_pool2d_backward(g_cuda, &a), CNN_ERR_INVALID_ARG, {"max-pool backward"});
}

// ---------------------------------------------------------------------------------------------------------------
// 16-bit data against the CPU backend's f32 on the same (rounded) inputs
//
// Both sides see inputs already rounded to the 16-bit type; the GPU accumulates in f32 and rounds its outputs, so
// what differs is mostly that last rounding: relative 2^-11 (F16) or 2^-8 (BF16) per value. The bounds below are
// several times the NMSE that rounding alone gives ((2^-11)^2 / 3 and (2^-8)^2 / 3).

constexpr double kNmseF16 = 2e-6;
constexpr double kNmseBF16 = 1e-4;

double lp_bound(cnn_dtype dt) { return dt == CNN_F16 ? kNmseF16 : kNmseBF16; }
const char *dt_name(cnn_dtype dt) { return cnn_dtype_name(dt); }

// ---------------------------------------------------------------------------------------------------------------
// dense

struct DenseCase {
  int n;
  std::vector<int64_t> x_per_sample;  // multiplied together: IN
  int out;
  bool bias;
  cnn_act act;  // one that dense fuses (its gradient needs only the output)
  int64_t in() const {
    int64_t v = 1;
    for (int64_t d : x_per_sample) v *= d;
    return v;
  }
  std::vector<int64_t> x_shape() const {
    std::vector<int64_t> s = {n};
    s.insert(s.end(), x_per_sample.begin(), x_per_sample.end());
    return s;
  }
  std::string str() const {
    return "N " + std::to_string(n) + " IN " + std::to_string(in()) + " OUT " + std::to_string(out) +
           (bias ? " bias " : " ") + act_name(act);
  }
  static const char *act_name(cnn_act a) {
    static const char *names[CNN_ACT_COUNT] = {"none", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "gelu", "silu"};
    return (unsigned)a < CNN_ACT_COUNT ? names[a] : "?";
  }
};

float act_alpha(cnn_act act) { return act == CNN_ACT_LEAKY_RELU ? 0.1f : act == CNN_ACT_ELU ? 1.3f : 0.0f; }

// Every activation dense fuses: ReLU goes to cuBLASLt's epilogue (with the bias), the others to our kernel after
// the product.
std::vector<cnn_act> fused_dense_acts() {
  std::vector<cnn_act> v;
  for (int i = 0; i < CNN_ACT_COUNT; i++)
    if (!cnn_act_grad_needs_input((cnn_act)i)) v.push_back((cnn_act)i);
  return v;
}

// Shapes: N = 1, odd sizes everywhere, IN from a rank-2 to rank-4 x, sizes that are not multiples of 8 (no vector
// loads) and larger ones (tensor-core tiles).
struct DenseShape {
  int n;
  std::vector<int64_t> x_per_sample;
  int out;
};
const std::vector<DenseShape> kDenseShapes = {
    {1, {1}, 1},   {3, {7}, 5},      {7, {3, 3, 2}, 10},      {64, {512}, 10},
    {1, {1152}, 512}, {129, {17}, 3}, {33, {3, 3, 128}, 512}, {5, {2, 3, 5}, 9},
};

// Every shape with at least `min_outputs` values in y, with and without a bias, under every fused activation.
std::vector<DenseCase> dense_cases(int64_t min_outputs = 1) {
  std::vector<DenseCase> v;
  for (const DenseShape &s : kDenseShapes)
    if ((int64_t)s.n * s.out >= min_outputs)
      for (cnn_act act : fused_dense_acts())
        for (bool bias : {true, false}) v.push_back({s.n, s.x_per_sample, s.out, bias, act});
  return v;
}

// Random inputs of a dense case, drawn in the order x, w, bias, dy; for a 16-bit run x, w and dy are rounded to
// its dtype, and so is the bias (f32 in the layer) that cuBLASLt's epilogue adds in that dtype.
struct DenseInputs {
  std::vector<float> x, w, bias, dy;
};

DenseInputs dense_inputs(const DenseCase &c, std::mt19937 &rng, cnn_dtype dt = CNN_F32) {
  DenseInputs in;
  in.x = random_floats((size_t)c.n * c.in(), rng);
  in.w = random_floats((size_t)c.out * c.in(), rng);
  in.bias = random_floats(c.out, rng);
  in.dy = random_floats((size_t)c.n * c.out, rng);
  if (dt != CNN_F32)
    in.x = rounded(in.x, dt), in.w = rounded(in.w, dt), in.bias = rounded(in.bias, dt), in.dy = rounded(in.dy, dt);
  return in;
}

// A tensor of `shape` whose data start `offset` elements into its allocation: a pointer off the 256-byte
// alignment that cudaMalloc gives and cuBLASLt assumes unless told otherwise.
class OffsetTensor {
 public:
  OffsetTensor(cnn_backend *b, const std::vector<int64_t> &shape, cnn_dtype dt, int64_t offset)
      : offset_(offset), buf_(b, {offset + numel(shape)}, dt) {
    view_ = *buf_.t();
    view_.ndim = (int)shape.size();
    for (size_t i = 0; i < shape.size(); i++) view_.shape[i] = shape[i];
    view_.data = (char *)view_.data + offset * (int64_t)cnn_dtype_size(dt);
  }
  cnn_tensor *t() { return &view_; }
  void set(const std::vector<float> &v) {
    std::vector<float> all((size_t)offset_, 0.0f);
    all.insert(all.end(), v.begin(), v.end());
    buf_.set(all);
  }
  std::vector<float> get() {
    std::vector<float> all = buf_.get();
    return std::vector<float>(all.begin() + offset_, all.end());
  }
  bool tail_intact() { return buf_.tail_intact(); }

 private:
  static int64_t numel(const std::vector<int64_t> &shape) {
    int64_t v = 1;
    for (int64_t d : shape) v *= d;
    return v;
  }
  int64_t offset_;
  DTensor buf_;
  cnn_tensor view_;
};

// The batchnorm, activation and add kernels take 16-byte vectors when every pointer allows and elements one at a
// time otherwise (cuda/kernels_ew.cuh); both paths must give the same bits, the batchnorm sums included (their rows
// are split alike on both). Tensors one element off the alignment take the element path.
TEST_F(CudaOps, VectorAndElementKernelPathsGiveTheSameBits) {
  std::mt19937 rng(43);
  const std::vector<int64_t> shape = {4, 5, 5, 32};
  const int64_t c = 32, n = 4 * 5 * 5 * 32;
  for (cnn_dtype dt : {CNN_F32, CNN_BF16}) {
    SCOPED_TRACE(dt_name(dt));
    auto x = rounded(random_floats(n, rng, -2.0f, 3.0f), dt), r = rounded(random_floats(n, rng), dt);
    auto dy = rounded(random_floats(n, rng), dt);
    auto gamma = random_floats(c, rng, 0.5f, 1.5f), beta = random_floats(c, rng);
    std::vector<float> out[2][8];
    for (int64_t offset : {0, 1}) {
      OffsetTensor tx(g_cuda, shape, dt, offset), tr(g_cuda, shape, dt, offset), ty(g_cuda, shape, dt, offset),
          tdy(g_cuda, shape, dt, offset), tdx(g_cuda, shape, dt, offset), ta(g_cuda, shape, dt, offset);
      DTensor tg(g_cuda, {c}), tb(g_cuda, {c}), tsm(g_cuda, {c}), tsi(g_cuda, {c}), tdg(g_cuda, {c}), tdb(g_cuda, {c});
      tx.set(x), tr.set(r), tdy.set(dy), tg.set(gamma), tb.set(beta);
      cnn_batchnorm_args a;
      memset(&a, 0, sizeof a);
      a.x = tx.t(), a.residual = tr.t(), a.y = ty.t(), a.gamma = tg.t(), a.beta = tb.t();
      a.save_mean = tsm.t(), a.save_invstd = tsi.t(), a.eps = 1e-5f, a.training = 1, a.act = CNN_ACT_RELU;
      ASSERT_EQ(cnn_op_batchnorm_forward(g_cuda, &a), CNN_OK) << cnn_last_error();
      a.dy = tdy.t(), a.dx = tdx.t(), a.dgamma = tdg.t(), a.dbeta = tdb.t();
      ASSERT_EQ(cnn_op_batchnorm_backward(g_cuda, &a), CNN_OK) << cnn_last_error();
      cnn_act_args g;
      memset(&g, 0, sizeof g);
      g.act = CNN_ACT_GELU, g.x = tx.t(), g.y = ta.t(), g.dy = tdy.t(), g.dx = tdy.t();
      ASSERT_EQ(cnn_op_act_forward(g_cuda, &g), CNN_OK) << cnn_last_error();
      ASSERT_EQ(cnn_op_act_backward(g_cuda, &g), CNN_OK) << cnn_last_error();  // in place, as layers do
      cnn_add_args s = {.a = tr.t(), .b = tx.t(), .y = tr.t(), .alpha = 0.5f, .beta = -2.0f};
      ASSERT_EQ(cnn_op_add(g_cuda, &s), CNN_OK) << cnn_last_error();
      const int k = (int)offset;
      out[k][0] = ty.get(), out[k][1] = tdx.get(), out[k][2] = tdg.get(), out[k][3] = tdb.get();
      out[k][4] = tsm.get(), out[k][5] = ta.get(), out[k][6] = tdy.get(), out[k][7] = tr.get();
      for (OffsetTensor *t : {&tx, &tr, &ty, &tdy, &tdx, &ta}) EXPECT_TRUE(t->tail_intact());
    }
    const char *names[8] = {"batchnorm y", "batchnorm dx", "dgamma", "dbeta", "save_mean", "gelu y", "gelu dx",
                            "add y"};
    for (int o = 0; o < 8; o++) EXPECT_EQ(out[0][o], out[1][o]) << names[o];
  }
}

struct DenseResult {
  std::vector<float> y, dx, dw, db;
};

// Forward, backward data and backward weights of c on b, in dtype dt (b and db are F32), every tensor `offset`
// elements into its allocation.
DenseResult run_dense(cnn_backend *b, const DenseCase &c, const DenseInputs &in, cnn_plan **plan,
                      cnn_dtype dt = CNN_F32, int64_t offset = 0) {
  DenseResult r;
  OffsetTensor tx(b, c.x_shape(), dt, offset), tw(b, {c.out, c.in()}, dt, offset), tb(b, {c.out}, CNN_F32, offset),
      ty(b, {c.n, c.out}, dt, offset), tdy(b, {c.n, c.out}, dt, offset), tdx(b, c.x_shape(), dt, offset),
      tdw(b, {c.out, c.in()}, dt, offset), tdb(b, {c.out}, CNN_F32, offset);
  tx.set(in.x), tw.set(in.w), tb.set(in.bias), tdy.set(in.dy);
  cnn_dense_args a;
  memset(&a, 0, sizeof a);
  a.plan = plan, a.x = tx.t(), a.w = tw.t(), a.b = c.bias ? tb.t() : nullptr, a.y = ty.t();
  a.act = c.act, a.act_alpha = act_alpha(c.act);
  a.dy = tdy.t(), a.dx = tdx.t(), a.dw = tdw.t(), a.db = c.bias ? tdb.t() : nullptr;
  const char *name = b->ops->name;
  EXPECT_EQ(cnn_op_dense_forward(b, &a), CNN_OK) << name << ": " << cnn_last_error();
  EXPECT_EQ(cnn_op_dense_backward_data(b, &a), CNN_OK) << name << ": " << cnn_last_error();
  EXPECT_EQ(cnn_op_dense_backward_weights(b, &a), CNN_OK) << name << ": " << cnn_last_error();
  r.y = ty.get(), r.dx = tdx.get(), r.dw = tdw.get();
  if (c.bias) r.db = tdb.get();
  expect_tails_intact(name, {{ty.tail_intact(), "dense_forward: y"},
                            {tdx.tail_intact(), "dense_backward_data: dx"},
                            {tdw.tail_intact(), "dense_backward_weights: dw"},
                            {tdb.tail_intact(), "dense_backward_weights: db"}});
  return r;
}

// The CUDA result of c (in dtype dt, through `plan`) against the CPU's in f32 on the same inputs. y, dx and dw
// within `bound`; db, an f32 sum, within the gemm bound.
void expect_dense_matches_cpu(const DenseCase &c, const DenseInputs &in, cnn_plan **plan, double bound,
                              cnn_dtype dt = CNN_F32, int64_t offset = 0) {
  Plan cp(g_cpu);
  DenseResult got = run_dense(g_cuda, c, in, plan, dt, offset);
  DenseResult want = run_dense(g_cpu, c, in, &cp.p);
  expect_match(got.y, want.y, bound, "dense_forward y");
  expect_match(got.dx, want.dx, bound, "dense_backward_data dx");
  expect_match(got.dw, want.dw, bound, "dense_backward_weights dw");
  if (c.bias) expect_match(got.db, want.db, kNmseConvGemm, "dense_backward_weights db");
}

// One plan (a layer's) over changing batch sizes, pointer alignments and dtypes: more keys than it keeps, so
// entries are dropped and made again.
TEST_F(CudaOps, DensePlanFollowsChangingBatchSizes) {
  std::mt19937 rng(8);
  Plan gp(g_cuda);
  const std::vector<int> batches = {32, 7, 32, 7, 1, 32, 129, 7, 1, 64, 3, 32};
  for (cnn_dtype dt : {CNN_F32, CNN_BF16, CNN_F32}) {
    for (size_t i = 0; i < batches.size(); i++) {
      for (cnn_act act : {CNN_ACT_RELU, CNN_ACT_TANH}) {
        const DenseCase c = {batches[i], {5, 6, 10}, 70, true, act};
        const int64_t offset = (int64_t)(i % 3 == 2);  // every third call off the 256-byte alignment
        SCOPED_TRACE(std::string(dt_name(dt)) + " " + c.str() + " offset " + std::to_string(offset));
        DenseInputs in = dense_inputs(c, rng, dt);
        expect_dense_matches_cpu(c, in, &gp.p, dt == CNN_F32 ? kNmseConvGemm : lp_bound(dt), dt, offset);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------
// elementwise: activations, softmax cross-entropy, optimizers

TEST_F(CudaOps, SoftmaxXentReportsALabelOutOfRangeAtTheNextRead) {
  DTensor tl(g_cuda, {4, 5}), tlab(g_cuda, {4}, CNN_I32), tloss(g_cuda, {4});
  tl.set(std::vector<float>(20, 0.5f));
  tlab.set_i32({0, 4, 5, 1});
  cnn_softmax_xent_args a;
  memset(&a, 0, sizeof a);
  a.logits = tl.t(), a.labels = tlab.t(), a.losses = tloss.t(), a.grad_scale = 1.0f;
  // the labels live on the device: the op is queued, and the error comes with the next read or sync
  ASSERT_EQ(cnn_op_softmax_xent(g_cuda, &a), CNN_OK) << cnn_last_error();
  std::vector<float> losses(4);
  expect_error(cnn_op_read(g_cuda, tloss.t(), losses.data(), 16), CNN_ERR_INVALID_ARG,
               {"label 5", "sample 2", "[0, 5)"});
  EXPECT_TRUE(std::isnan(losses[2]));
  // reported once; the backend goes on working
  EXPECT_EQ(cnn_backend_sync(g_cuda), CNN_OK) << cnn_last_error();
  tlab.set_i32({0, 4, 3, 1});
  ASSERT_EQ(cnn_op_softmax_xent(g_cuda, &a), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_op_read(g_cuda, tloss.t(), losses.data(), 16), CNN_OK) << cnn_last_error();
  for (float l : losses) EXPECT_NEAR(l, std::log(5.0f), 1e-6f);
}

TEST_F(CudaOps, SumSquaresMatchesCpuAndIsReproducible) {
  std::mt19937 rng(14);
  for (int64_t n : {1, 8192, 8193, 1000003}) {
    SCOPED_TRACE("n " + std::to_string(n));
    auto x = random_floats(n, rng, -3.0f, 3.0f);
    double got[2] = {0, 0}, again = 0;
    cnn_backend *bs[2] = {g_cuda, g_cpu};
    for (int k = 0; k < 2; k++) {
      DTensor t(bs[k], {n});
      t.set(x);
      ASSERT_EQ(cnn_op_sum_squares(bs[k], t.t(), &got[k]), CNN_OK) << bs[k]->name << ": " << cnn_last_error();
      if (k == 0) {
        ASSERT_EQ(cnn_op_sum_squares(bs[k], t.t(), &again), CNN_OK) << cnn_last_error();
      }
    }
    EXPECT_GT(got[1], 0.0);
    EXPECT_NEAR(got[0], got[1], 1e-12 * got[1]) << "both sum in double";
    EXPECT_EQ(memcmp(&got[0], &again, sizeof again), 0) << "two runs on the GPU differ: " << got[0] << " " << again;
  }
}

struct BnCase {
  std::vector<int64_t> shape;
  bool training, affine;
  cnn_act act;
  float shift;  // added to x: a mean far from zero tests the two-pass variance
};

// dx may alias dy (the layer does that), as on the CPU.
TEST_F(CudaOps, BatchnormBackwardInPlaceMatchesOutOfPlace) {
  std::mt19937 rng(17);
  const std::vector<int64_t> shape = {4, 6, 6, 24};
  const size_t n = 4 * 6 * 6 * 24;
  auto x = random_floats(n, rng), dy = random_floats(n, rng);
  std::vector<float> out[2];
  for (int in_place = 0; in_place < 2; in_place++) {
    DTensor tx(g_cuda, shape), ty(g_cuda, shape), tdy(g_cuda, shape), tdx(g_cuda, shape);
    DTensor tsm(g_cuda, {24}), tsi(g_cuda, {24});
    tx.set(x), tdy.set(dy);
    cnn_batchnorm_args a;
    memset(&a, 0, sizeof a);
    a.x = tx.t(), a.y = ty.t(), a.save_mean = tsm.t(), a.save_invstd = tsi.t(), a.eps = 1e-5f, a.training = 1;
    ASSERT_EQ(cnn_op_batchnorm_forward(g_cuda, &a), CNN_OK) << cnn_last_error();
    a.dy = tdy.t(), a.dx = in_place ? tdy.t() : tdx.t();
    ASSERT_EQ(cnn_op_batchnorm_backward(g_cuda, &a), CNN_OK) << cnn_last_error();
    out[in_place] = in_place ? tdy.get() : tdx.get();
  }
  EXPECT_EQ(out[0], out[1]);
}

// ---------------------------------------------------------------------------------------------------------------
// error paths

// Integer data is refused as unsupported; float tensors of different dtypes in one op as invalid.
TEST_F(CudaOps, OpsRejectIntegerDataAndMixedFloatDtypes) {
  ConvCase p = conv(1, 5, 5, 2, 3, 3, 3);
  DTensor x(g_cuda, p.x_shape(), CNN_F16), w(g_cuda, p.w_shape()), y(g_cuda, p.y_shape());
  cnn_conv2d_args ca = p.args();
  ca.x = x.t(), ca.w = w.t(), ca.y = y.t();
  expect_error(cnn_op_conv2d_forward(g_cuda, &ca), CNN_ERR_INVALID_ARG, {"conv2d_forward", "F16", "F32"});
  DTensor xi(g_cuda, p.x_shape(), CNN_I32);
  ca.x = xi.t();
  expect_error(cnn_op_conv2d_forward(g_cuda, &ca), CNN_ERR_UNSUPPORTED, {"conv2d_forward", "I32"});

  DTensor dx(g_cuda, {2, 4}, CNN_BF16), dw(g_cuda, {3, 4}), dy(g_cuda, {2, 3});
  cnn_dense_args da;
  memset(&da, 0, sizeof da);
  da.x = dx.t(), da.w = dw.t(), da.y = dy.t();
  expect_error(cnn_op_dense_forward(g_cuda, &da), CNN_ERR_INVALID_ARG, {"dense_forward", "BF16"});

  PoolCase pp{true, 1, 4, 4, 1, 2, 2, 2, 2, 0, 0, 0, 0};
  DTensor px(g_cuda, pp.x_shape(), CNN_I8), py(g_cuda, pp.y_shape());
  cnn_pool2d_args pa = pp.args();
  pa.x = px.t(), pa.y = py.t();
  expect_error(cnn_op_pool2d_forward(g_cuda, &pa), CNN_ERR_UNSUPPORTED, {"pool2d_forward", "I8"});

  DTensor ax(g_cuda, {5}, CNN_F16), ay(g_cuda, {5});
  cnn_act_args aa;
  memset(&aa, 0, sizeof aa);
  aa.act = CNN_ACT_RELU, aa.x = ax.t(), aa.y = ay.t();
  expect_error(cnn_op_act_forward(g_cuda, &aa), CNN_ERR_INVALID_ARG, {"act_forward", "F16"});

  DTensor sl(g_cuda, {2, 3}), slab(g_cuda, {2}, CNN_U8);
  cnn_softmax_xent_args sa;
  memset(&sa, 0, sizeof sa);
  sa.logits = sl.t(), sa.labels = slab.t(), sa.grad_scale = 1.0f;
  expect_error(cnn_op_softmax_xent(g_cuda, &sa), CNN_ERR_UNSUPPORTED, {"labels", "I32"});
}

TEST_F(CudaOps, ShapeMismatchesAreRejectedNamingTheTensor) {
  ConvCase p = conv(2, 6, 6, 3, 4, 3, 3);
  DTensor x(g_cuda, p.x_shape()), w(g_cuda, {4, 3, 3, 2}), y(g_cuda, p.y_shape());
  cnn_conv2d_args ca = p.args();
  ca.x = x.t(), ca.w = w.t(), ca.y = y.t();
  expect_error(cnn_op_conv2d_forward(g_cuda, &ca), CNN_ERR_SHAPE, {"w", "(4, 3, 3, 2)"});
  DTensor w2(g_cuda, p.w_shape()), ybad(g_cuda, {2, 4, 4, 5});
  ca.w = w2.t(), ca.y = ybad.t();
  expect_error(cnn_op_conv2d_forward(g_cuda, &ca), CNN_ERR_SHAPE, {"y", "(2, 4, 4, 5)", "(2, 4, 4, 4)"});

  DTensor dx(g_cuda, {2, 4}), dw(g_cuda, {3, 5}), dy(g_cuda, {2, 3});
  cnn_dense_args da;
  memset(&da, 0, sizeof da);
  da.x = dx.t(), da.w = dw.t(), da.y = dy.t();
  expect_error(cnn_op_dense_forward(g_cuda, &da), CNN_ERR_SHAPE, {"dense_forward", "(3, 5)"});

  PoolCase pp{true, 1, 4, 4, 1, 2, 2, 2, 2, 2, 0, 0, 0};  // padding as large as the window
  DTensor px(g_cuda, pp.x_shape()), py(g_cuda, {1, 3, 2, 1});
  cnn_pool2d_args pa = pp.args();
  pa.x = px.t(), pa.y = py.t();
  expect_error(cnn_op_pool2d_forward(g_cuda, &pa), CNN_ERR_INVALID_ARG, {"padding", "smaller"});

  DTensor bx(g_cuda, {2, 3, 3, 4}), by(g_cuda, {2, 3, 3, 4}), bg(g_cuda, {5});
  cnn_batchnorm_args ba;
  memset(&ba, 0, sizeof ba);
  ba.x = bx.t(), ba.y = by.t(), ba.gamma = bg.t(), ba.eps = 1e-5f, ba.training = 1;
  expect_error(cnn_op_batchnorm_forward(g_cuda, &ba), CNN_ERR_SHAPE, {"batchnorm_forward on cuda", "gamma", "(5)"});
  ba.gamma = nullptr, ba.training = 0;
  expect_error(cnn_op_batchnorm_forward(g_cuda, &ba), CNN_ERR_INVALID_ARG, {"running_mean"});

  DTensor c1(g_cuda, {2, 3, 3, 2}), c2(g_cuda, {2, 3, 4, 2}), cy(g_cuda, {2, 3, 3, 4});
  cnn_concat_args cc;
  memset(&cc, 0, sizeof cc);
  cc.n = 2, cc.xs[0] = c1.t(), cc.xs[1] = c2.t(), cc.y = cy.t();
  expect_error(cnn_op_concat_forward(g_cuda, &cc), CNN_ERR_SHAPE, {"xs[1]", "(2, 3, 4, 2)"});

  DTensor aa(g_cuda, {3, 4}), ab(g_cuda, {4, 3});
  cnn_add_args ad;
  memset(&ad, 0, sizeof ad);
  ad.a = aa.t(), ad.b = ab.t(), ad.y = aa.t(), ad.alpha = ad.beta = 1.0f;
  expect_error(cnn_op_add(g_cuda, &ad), CNN_ERR_SHAPE, {"add on cuda", "b", "(4, 3)"});
}

// ---------------------------------------------------------------------------------------------------------------
// training end to end: the seed CNN on both devices

// A synthetic 10-class task at the seed CNN's input size: a bright 4x4 square in one of ten cells (two rows of
// five) of a noisy 28x28 image, jittered by a pixel or two.
struct Synthetic : cnntest::HostDataset {
  Synthetic(int n, uint64_t seed) : HostDataset(n, 28, 28, 1, 10) {
    cnn_rng r;
    cnn_rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
      const int k = (int)cnn_rng_below(&r, 10);
      labels[i] = k;
      float *img = &images[(size_t)i * 784];
      for (int p = 0; p < 784; p++) img[p] = 0.3f * cnn_rng_uniform(&r);
      const int y0 = 4 + 12 * (k / 5) + (int)cnn_rng_below(&r, 3);
      const int x0 = 1 + 5 * (k % 5) + (int)cnn_rng_below(&r, 2);
      for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) img[(y0 + y) * 28 + x0 + x] = 0.7f + 0.3f * cnn_rng_uniform(&r);
    }
  }
};

// 4 epochs of 2048 images at batch 32: 256 steps of Adam. `text`: a model definition, else the seed CNN.
std::vector<cnn_epoch_stats> train_seed_cnn(cnn_backend *b, const Synthetic &train, const Synthetic &val,
                                            const char *text = nullptr, int epochs = 4) {
  cnn_net *net = nullptr;
  cnn_status st = text ? cnn_net_from_text(text, "test model", b, 42, &net)
                       : cnn_net_from_file(CNN_SOURCE_DIR "/samples/models/seed_cnn.cnn", b, 42, &net);
  EXPECT_EQ(st, CNN_OK) << b->name << ": " << cnn_last_error();
  if (st != CNN_OK) return {};
  cnn_train_config cfg;
  cnn_train_config_defaults(&cfg);
  cfg.epochs = epochs;
  cfg.batch_size = 32;
  cfg.optimizer = CNN_OPTIM_ADAM;
  cfg.lr = 1e-3f;
  cfg.seed = 7;
  cfg.progress = nullptr;
  std::vector<cnn_epoch_stats> hist(cfg.epochs);
  st = cnn_train(net, &train.ds, &val.ds, &cfg, hist.data());
  EXPECT_EQ(st, CNN_OK) << b->name << ": " << cnn_last_error();
  cnn_net_destroy(net);
  if (st != CNN_OK) return {};
  return hist;
}

TEST_F(CudaOps, SeedCnnTrainingLossCurveMatchesCpu) {
  Synthetic train(2048, 1), val(512, 2);
  std::vector<cnn_epoch_stats> gpu = train_seed_cnn(g_cuda, train, val);
  std::vector<cnn_epoch_stats> cpu = train_seed_cnn(g_cpu, train, val);
  ASSERT_EQ(gpu.size(), 4u);
  ASSERT_EQ(cpu.size(), 4u);
  for (size_t e = 0; e < gpu.size(); e++) {
    SCOPED_TRACE("epoch " + std::to_string(e + 1));
    ASSERT_TRUE(std::isfinite(gpu[e].loss) && std::isfinite(gpu[e].val_loss));
    // The same initial weights, batches and optimizer: the curves start together and drift apart only by f32
    // rounding, which training amplifies slowly. Relative bound plus a floor for losses near zero.
    const double tol = (e == 0 ? 0.02 : 0.10) * cpu[e].loss + 0.02;
    EXPECT_NEAR(gpu[e].loss, cpu[e].loss, tol) << "training loss: cuda " << gpu[e].loss << ", cpu " << cpu[e].loss;
    EXPECT_NEAR(gpu[e].val_loss, cpu[e].val_loss, 0.10 * cpu[e].val_loss + 0.02);
    EXPECT_NEAR(gpu[e].val_accuracy, cpu[e].val_accuracy, 0.03);
  }
  EXPECT_LT(gpu.back().loss, gpu.front().loss) << "the loss did not go down on the GPU";
  EXPECT_GT(gpu.back().val_accuracy, 0.9) << "the seed CNN did not learn the synthetic task on the GPU";
  EXPECT_GT(gpu.back().images_per_sec, 0.0);
}

// One epoch of the seed CNN on Fashion-MNIST (issue 4: "reaches the same accuracy as on the CPU, within 0.5
// points"), through the `cnn` program as a user runs it. Both devices start from the same weights and see the same
// batches, but cuDNN and oneDNN sum in different orders, and 844 Adam steps amplify that f32 rounding: one seed's
// test accuracy after one epoch moves by up to 0.7 points from rounding alone (the CPU backend at 1 and at 2
// threads, seeds 1-3: 0.69, 0.58 and 0.34 points apart; bench/RESULTS.md). So the devices are compared on the mean
// over ten seeds, each seed run on both: with pairs that far apart by rounding alone (a spread of about 0.56
// points), a mean of five would miss the 0.5-point bar about one run in twenty, a mean of ten about one in two
// hundred. Every single run must still be a sane one (>= 75%, within 2 points of its twin).
// The data: $CNN_TEST_FASHION_MNIST, else the Debian package's directory; skipped when neither holds it.
TEST_F(CudaOps, SeedCnnOneEpochOnFashionMnistReachesTheCpuAccuracy) {
  const char *env = getenv("CNN_TEST_FASHION_MNIST");
  const std::string data = env && *env ? env : CNN_FASHION_MNIST_DIR;
  if (access((data + "/train-images-idx3-ubyte.gz").c_str(), R_OK) != 0 &&
      access((data + "/train-images-idx3-ubyte").c_str(), R_OK) != 0)
    GTEST_SKIP() << "Fashion-MNIST is not in " << data << " (apt-get install dataset-fashion-mnist, or set "
                 << "CNN_TEST_FASHION_MNIST)";
  cnntest::TempDir dir;
  const char *devices[2] = {"cuda", "cpu"};
  double sum[2] = {0.0, 0.0};
  const int kSeeds = 10;
  for (int seed = 1; seed <= kSeeds; seed++) {
    double acc[2];
    for (int d = 0; d < 2; d++) {
      const std::string tag = std::string(devices[d]) + "_" + std::to_string(seed);
      const std::string json = dir.file(tag + ".json");
      std::string out;
      ASSERT_EQ(cnntest::run_cnn({"train", "--device", devices[d], "--model",
                                  CNN_SOURCE_DIR "/samples/models/seed_cnn.cnn", "--data", "fashion-mnist:" + data,
                                  "--epochs", "1", "--batch", "64", "--lr", "0.001", "--optimizer", "adam", "--seed",
                                  std::to_string(seed), "--quiet", "--out", dir.file(tag + ".safetensors"),
                                  "--metrics-json", json},
                                 &out),
                0)
          << out;
      acc[d] = cnntest::metrics_test_accuracy(json);
      ASSERT_GE(acc[d], 0.75) << tag << ": test accuracy after one epoch\n" << out;
      sum[d] += acc[d];
    }
    EXPECT_NEAR(acc[0], acc[1], 0.02) << "seed " << seed << ": cuda " << acc[0] << ", cpu " << acc[1];
    printf("seed %d: test accuracy cuda %.4f, cpu %.4f\n", seed, acc[0], acc[1]);
  }
  const double mean_cuda = sum[0] / kSeeds, mean_cpu = sum[1] / kSeeds;
  printf("mean of %d seeds: cuda %.4f, cpu %.4f (%+.2f points)\n", kSeeds, mean_cuda, mean_cpu,
         100.0 * (mean_cuda - mean_cpu));
  EXPECT_NEAR(mean_cuda, mean_cpu, 0.005) << "mean test accuracy over seeds 1-" << kSeeds << " after one epoch";
}

// Every layer kind of the complete op set in one small graph (batchnorm with fused activations, a residual add,
// a concat, GELU as its own op, dropout, average and global average pooling): the same curve on both devices.
// Dropout draws its mask from (seed, step), not from the device, so the same units drop on both.
TEST_F(CudaOps, GraphWithEveryLayerKindTrainsLikeCpu) {
  static const char *const kModel =
      "input 28 28 1\n"
      "conv 16 3 stride=2 padding=1 bias=no\n"
      "batchnorm relu name=stem\n"
      "conv 16 3 padding=1 bias=no\n"
      "batchnorm leaky_relu\n"
      "conv 16 3 padding=1\n"
      "batchnorm\n"
      "add stem relu name=res\n"
      "conv 8 1 gelu name=g\n"
      "conv 8 3 padding=1 from=res\n"
      "batchnorm elu name=e\n"
      "concat g e\n"
      "avgpool 2\n"
      "conv 32 3 silu padding=1\n"
      "globalavgpool\n"
      "dropout 0.2\n"
      "dense 10 softmax\n";
  Synthetic train(1024, 3), val(256, 4);
  std::vector<cnn_epoch_stats> gpu = train_seed_cnn(g_cuda, train, val, kModel, 3);
  std::vector<cnn_epoch_stats> cpu = train_seed_cnn(g_cpu, train, val, kModel, 3);
  ASSERT_EQ(gpu.size(), 3u);
  ASSERT_EQ(cpu.size(), 3u);
  for (size_t e = 0; e < gpu.size(); e++) {
    SCOPED_TRACE("epoch " + std::to_string(e + 1));
    ASSERT_TRUE(std::isfinite(gpu[e].loss) && std::isfinite(gpu[e].val_loss));
    EXPECT_NEAR(gpu[e].loss, cpu[e].loss, (e == 0 ? 0.02 : 0.10) * cpu[e].loss + 0.02)
        << "training loss: cuda " << gpu[e].loss << ", cpu " << cpu[e].loss;
    EXPECT_NEAR(gpu[e].val_loss, cpu[e].val_loss, 0.10 * cpu[e].val_loss + 0.02);
  }
  EXPECT_LT(gpu.back().loss, gpu.front().loss) << "the loss did not go down on the GPU";
}

// ---------------------------------------------------------------------------------------------------------------
// mixed precision: 16-bit data against the CPU backend's f32 on the same (rounded) inputs (bounds and rounding
// above, before the dense tests that use them too)

TEST_F(CudaOps, CastRoundsToNearestEvenBothWays) {
  std::mt19937 rng(30);
  std::vector<float> v = random_floats(10000, rng, -3.0f, 3.0f);
  // ties: halfway between two BF16 values (1 + 2^-8), two F16 values (1 + 2^-11), and F16 subnormals
  for (float t : {1.00390625f, 1.01171875f, -1.00390625f, 1.00048828125f, 1.00146484375f, 3e-6f, -4.5e-7f, 0.0f})
    v.push_back(t);
  for (cnn_dtype dt : {CNN_F16, CNN_BF16}) {
    SCOPED_TRACE(dt_name(dt));
    DTensor lp(g_cuda, {(int64_t)v.size()}, dt);
    lp.set(v);
    std::vector<float> back = lp.get();
    std::vector<float> want = rounded(v, dt);
    ASSERT_EQ(back.size(), want.size());
    for (size_t i = 0; i < v.size(); i++)
      ASSERT_EQ(back[i], want[i]) << "element " << i << ": " << v[i] << " came back as " << back[i];
    EXPECT_TRUE(lp.tail_intact());
  }
  DTensor h(g_cuda, {3}, CNN_F16);
  h.set({1e6f, -1e6f, NAN});
  std::vector<float> hv = h.get();
  EXPECT_TRUE(std::isinf(hv[0]) && hv[0] > 0);
  EXPECT_TRUE(std::isinf(hv[1]) && hv[1] < 0);
  EXPECT_TRUE(std::isnan(hv[2]));
}

// Activations after the product (not ReLU) read y rounded to 16 bits, whose error is relative to x w^T, not to
// the result: with a single output value, x w^T + b near 0 would make that error alone break the NMSE bound, so
// the shapes here have several outputs.
// Each way to cuDNN on its own ($CNN_CUDNN_CONV, read when a backend is created; conv_graph.h): the graph API with
// no fallback, and the legacy API; f32 and bf16, and each API's deterministic choice. The graph API must have an
// engine for every plain case (no groups, no dilation, the same padding on both sides) in every direction; for the
// others it may say it has none (then the default falls back to the legacy API, which
// Conv2dForwardAndBackwardMatchCpu covers), and the legacy API may have no deterministic algorithm for them, but
// neither may compute wrong. The cases refused are printed, for the device log.
TEST_F(CudaOps, Conv2dThroughTheGraphApiAndTheLegacyApiEachMatchCpu) {
  cnn_backend *bad = nullptr;
  setenv("CNN_CUDNN_CONV", "fastest", 1);
  expect_error(cnn_backend_create("cuda", &bad), CNN_ERR_INVALID_ARG, {"CNN_CUDNN_CONV", "fastest"});
  for (const char *api : {"graph", "legacy"}) {
    setenv("CNN_CUDNN_CONV", api, 1);
    setenv("CNN_CUDA_LOG", "1", 1);
    cnn_backend *b = nullptr;
    const cnn_status created = cnn_backend_create("cuda", &b);
    unsetenv("CNN_CUDNN_CONV");
    unsetenv("CNN_CUDA_LOG");
    ASSERT_EQ(created, CNN_OK) << cnn_last_error();
    {  // CNN_CUDA_LOG: the graph API says which engine a new plan took; the legacy API plans without a line
      const ConvCase p = conv(2, 8, 8, 8, 8, 3, 3, 1, 1);
      std::mt19937 rng(40);
      ConvInputs in = conv_inputs(p, rng);
      Plan gp(b);
      testing::internal::CaptureStderr();
      run_conv(b, p, in.x, in.w, in.bias, in.dy, &gp.p);
      const std::string log = testing::internal::GetCapturedStderr();
      if (!strcmp(api, "graph")) {
        EXPECT_NE(log.find("conv2d_forward F32 x (2, 8, 8, 8), w (8, 3, 3, 8), stride 1x1, padding 1,1,1,1"), std::string::npos) << log;
        EXPECT_NE(log.find(": graph API, engine "), std::string::npos) << log;
      } else {
        EXPECT_EQ(log, "");
      }
    }
    for (int deterministic = 0; deterministic < 2; deterministic++) {
      ASSERT_EQ(cnn_op_set_deterministic(b, deterministic), CNN_OK) << cnn_last_error();
      for (cnn_dtype dt : {CNN_F32, CNN_BF16}) {
        std::mt19937 rng(41);
        for (const ConvCase &p : conv_cases()) {
          SCOPED_TRACE(std::string("CNN_CUDNN_CONV=") + api + (deterministic ? " deterministic " : " ") +
                       dt_name(dt) + " " + p.str());
          ConvInputs in = conv_inputs(p, rng);
          in.x = rounded(in.x, dt), in.w = rounded(in.w, dt), in.dy = rounded(in.dy, dt);
          Plan gp(b), cp(g_cpu);
          cnn_status st = CNN_OK;
          std::string error;
          ConvResult got = run_conv(b, p, in.x, in.w, in.bias, in.dy, &gp.p, dt, &st, &error);
          const bool plain = p.groups == 1 && p.dilation_h == 1 && p.dilation_w == 1 &&
                             p.pad_top == p.pad_bottom && p.pad_left == p.pad_right;
          const bool graph = !strcmp(api, "graph");
          if (st != CNN_OK && !plain && (graph || deterministic)) {
            EXPECT_EQ(st, CNN_ERR_UNSUPPORTED) << error;
            const char *expected = graph ? "graph API has no engine" : "deterministic";
            EXPECT_NE(error.find(expected), std::string::npos) << error;
            printf("  refused (%s%s): %s\n", api, deterministic ? ", deterministic" : "", error.c_str());
            continue;
          }
          EXPECT_EQ(st, CNN_OK) << error;
          if (st != CNN_OK) continue;
          ConvResult want = run_conv(g_cpu, p, in.x, in.w, in.bias, in.dy, &cp.p);
          const double bound = dt == CNN_F32 ? kNmseConvGemm : lp_bound(dt);
          expect_match(got.y, want.y, bound, "conv2d_forward y");
          expect_match(got.dx, want.dx, bound, "conv2d_backward_data dx");
          expect_match(got.dw, want.dw, bound, "conv2d_backward_filter dw");
          if (p.bias) expect_match(got.db, want.db, kNmseConvGemm, "conv2d_backward_filter db (f32)");
        }
      }
    }
    cnn_backend_destroy(b);
  }
}

// A class weight that is not positive: reported at the next read, as a bad label is (the weighted, smoothed loss's
// values are rows of test_ops.cc's table).
TEST_F(CudaOps, SoftmaxXentReportsANonPositiveClassWeightAtTheNextRead) {
  DTensor tl(g_cuda, {2, 3}), tlab(g_cuda, {2}, CNN_I32), tloss(g_cuda, {2}), tcw(g_cuda, {3});
  tl.set({0, 1, 2, 3, 4, 5}), tlab.set_i32({0, 2}), tcw.set({1.0f, 1.0f, -1.0f});
  cnn_softmax_xent_args a;
  memset(&a, 0, sizeof a);
  a.logits = tl.t(), a.labels = tlab.t(), a.losses = tloss.t(), a.grad_scale = 1.0f, a.class_weights = tcw.t();
  ASSERT_EQ(cnn_op_softmax_xent(g_cuda, &a), CNN_OK) << cnn_last_error();
  std::vector<float> out(2);
  expect_error(cnn_op_read(g_cuda, tloss.t(), out.data(), sizeof(float) * 2), CNN_ERR_INVALID_ARG,
               {"class weight 2", "-1"});
}

// The optimizers take 16-bit gradients (times 1 / loss scale), keep f32 master weights, and rewrite the 16-bit copy.
TEST_F(CudaOps, OptimizersWith16BitGradientsUpdateF32MasterAndItsCopy) {
  std::mt19937 rng(36);
  const int64_t n = 5000;
  for (cnn_dtype dt : {CNN_F16, CNN_BF16}) {
    for (int which = 0; which < 3; which++) {  // adam, sgd with momentum, rmsprop
      SCOPED_TRACE(std::string(dt_name(dt)) + " optimizer " + std::to_string(which));
      auto p0 = random_floats(n, rng);
      std::vector<std::vector<float>> grads;
      for (int s = 0; s < 4; s++) grads.push_back(rounded(random_floats(n, rng, -100.0f, 100.0f), dt));
      const float gscale = 1.0f / 128.0f;  // as with a loss scale of 128
      std::vector<float> res[2], copy;
      cnn_backend *bs[2] = {g_cuda, g_cpu};
      for (int k = 0; k < 2; k++) {
        cnn_backend *b = bs[k];
        DTensor p(b, {n}), g(b, {n}, k == 0 ? dt : CNN_F32), s1(b, {n}), s2(b, {n}), lp(b, {n}, k == 0 ? dt : CNN_F32);
        p.set(p0);
        ASSERT_EQ(cnn_op_fill(b, s1.t(), 0.0f), CNN_OK);
        ASSERT_EQ(cnn_op_fill(b, s2.t(), 0.0f), CNN_OK);
        for (int t = 1; t <= 4; t++) {
          g.set(grads[t - 1]);
          cnn_tensor *plp = k == 0 ? lp.t() : nullptr;
          cnn_status st;
          if (which == 0) {
            cnn_adam_args a;
            memset(&a, 0, sizeof a);
            a.param = p.t(), a.grad = g.t(), a.param_lp = plp, a.m = s1.t(), a.v = s2.t(), a.lr = 1e-2f;
            a.beta1 = 0.9f, a.beta2 = 0.999f, a.eps = 1e-8f, a.grad_scale = gscale;
            a.bias_correction1 = (float)(1.0 - std::pow(0.9, t)), a.bias_correction2 = (float)(1.0 - std::pow(0.999, t));
            st = cnn_op_adam_update(b, &a);
          } else if (which == 1) {
            cnn_sgd_args a;
            memset(&a, 0, sizeof a);
            a.param = p.t(), a.grad = g.t(), a.param_lp = plp, a.velocity = s1.t(), a.lr = 1e-2f;
            a.momentum = 0.9f, a.nesterov = 1, a.weight_decay = 1e-4f, a.grad_scale = gscale;
            st = cnn_op_sgd_update(b, &a);
          } else {
            cnn_rmsprop_args a;
            memset(&a, 0, sizeof a);
            a.param = p.t(), a.grad = g.t(), a.param_lp = plp, a.sq = s1.t(), a.mom = s2.t(), a.lr = 1e-3f;
            a.rho = 0.9f, a.eps = 1e-7f, a.momentum = 0.5f, a.grad_scale = gscale;
            st = cnn_op_rmsprop_update(b, &a);
          }
          ASSERT_EQ(st, CNN_OK) << b->name << ": " << cnn_last_error();
        }
        res[k] = p.get();
        if (k == 0) copy = lp.get();
        EXPECT_TRUE(p.tail_intact() && lp.tail_intact()) << b->name;
      }
      expect_match(res[0], res[1], kNmseElementwise, "f32 master weights");
      ASSERT_EQ(copy.size(), res[0].size());
      for (int64_t i = 0; i < n; i++)
        ASSERT_EQ(copy[i], round_to(res[0][i], dt)) << "the 16-bit copy of element " << i << " is not the rounded master";
    }
  }
}

// The multi-tensor updates: one kernel over a list of tensors of odd sizes (around the kernel's 4096-element chunk,
// with 1 and 0 elements among them), some with 16-bit gradients and a 16-bit copy and the others f32 without one.
// Over several steps they give the bits of the per-tensor kernels (the same element code), and match the CPU.
TEST_F(CudaOps, MultiTensorUpdatesMatchPerTensorKernelsBitForBitAndCpu) {
  ASSERT_NE(g_cuda->ops->sgd_update_multi, nullptr);
  ASSERT_NE(g_cuda->ops->adam_update_multi, nullptr);
  ASSERT_NE(g_cuda->ops->rmsprop_update_multi, nullptr);
  const std::vector<int64_t> sizes = {4097, 0, 1, 4096, 70001, 3, 4095};
  const size_t nt = sizes.size();
  struct Case {
    const char *name;
    int which;  // 0 sgd, 1 adam, 2 rmsprop
    float momentum, wd;
    int nesterov, decoupled;
  };
  const Case cases[] = {{"sgd", 0, 0.0f, 0.0f, 0, 0},       {"sgd nesterov", 0, 0.9f, 5e-4f, 1, 0},
                        {"adam", 1, 0.0f, 1e-2f, 0, 0},     {"adamw", 1, 0.0f, 1e-2f, 0, 1},
                        {"rmsprop", 2, 0.0f, 1e-3f, 0, 0},  {"rmsprop momentum", 2, 0.5f, 1e-3f, 0, 0}};
  const float gscale = 1.0f / 128.0f;  // as with a loss scale of 128
  const int steps = 4;
  for (const Case &c : cases) {
    for (cnn_dtype dt : {CNN_F32, CNN_F16, CNN_BF16}) {
      SCOPED_TRACE(std::string(c.name) + " " + dt_name(dt));
      // the tensors at even positions compute in dt (16-bit grad and copy); the others in f32 without a copy
      auto low = [&](size_t i) { return dt != CNN_F32 && i % 2 == 0; };
      std::mt19937 rng(38);
      std::vector<std::vector<float>> p0(nt);
      std::vector<std::vector<std::vector<float>>> grads(steps, std::vector<std::vector<float>>(nt));
      for (size_t i = 0; i < nt; i++) p0[i] = random_floats((size_t)sizes[i], rng);
      for (int s = 0; s < steps; s++)
        for (size_t i = 0; i < nt; i++) {
          auto g = random_floats((size_t)sizes[i], rng, -100.0f, 100.0f);
          grads[s][i] = low(i) ? rounded(g, dt) : g;
        }
      // run 0: cuda, one multi call per step; 1: cuda, per tensor; 2: cpu, per tensor (f32 grads holding the
      // rounded values, no copy)
      std::vector<std::vector<float>> res[3][3], copy[2];
      for (int run = 0; run < 3; run++) {
        cnn_backend *b = run < 2 ? g_cuda : g_cpu;
        std::vector<std::unique_ptr<DTensor>> p, g, s1, s2, lp;
        for (size_t i = 0; i < nt; i++) {
          const bool l = run < 2 && low(i);
          p.emplace_back(new DTensor(b, {sizes[i]}));
          g.emplace_back(new DTensor(b, {sizes[i]}, l ? dt : CNN_F32));
          s1.emplace_back(new DTensor(b, {sizes[i]}));
          s2.emplace_back(new DTensor(b, {sizes[i]}));
          lp.emplace_back(new DTensor(b, {sizes[i]}, l ? dt : CNN_F32));
          p[i]->set(p0[i]);
          ASSERT_EQ(cnn_op_fill(b, s1[i]->t(), 0.0f), CNN_OK) << cnn_last_error();
          ASSERT_EQ(cnn_op_fill(b, s2[i]->t(), 0.0f), CNN_OK) << cnn_last_error();
        }
        for (int t = 1; t <= steps; t++) {
          for (size_t i = 0; i < nt; i++) g[i]->set(grads[t - 1][i]);
          std::vector<cnn_sgd_args> sl(nt);
          std::vector<cnn_adam_args> al(nt);
          std::vector<cnn_rmsprop_args> rl(nt);
          for (size_t i = 0; i < nt; i++) {
            cnn_tensor *plp = run < 2 && low(i) ? lp[i]->t() : nullptr;
            memset(&sl[i], 0, sizeof sl[i]);
            sl[i].param = p[i]->t(), sl[i].grad = g[i]->t(), sl[i].param_lp = plp;
            sl[i].velocity = c.momentum != 0.0f ? s1[i]->t() : nullptr;
            sl[i].lr = 1e-2f, sl[i].momentum = c.momentum, sl[i].weight_decay = c.wd, sl[i].nesterov = c.nesterov;
            sl[i].grad_scale = gscale;
            memset(&al[i], 0, sizeof al[i]);
            al[i].param = p[i]->t(), al[i].grad = g[i]->t(), al[i].param_lp = plp, al[i].m = s1[i]->t();
            al[i].v = s2[i]->t(), al[i].lr = 1e-2f, al[i].beta1 = 0.9f, al[i].beta2 = 0.999f, al[i].eps = 1e-8f;
            al[i].weight_decay = c.wd, al[i].decoupled = c.decoupled, al[i].grad_scale = gscale;
            al[i].bias_correction1 = (float)(1.0 - std::pow(0.9, t));
            al[i].bias_correction2 = (float)(1.0 - std::pow(0.999, t));
            memset(&rl[i], 0, sizeof rl[i]);
            rl[i].param = p[i]->t(), rl[i].grad = g[i]->t(), rl[i].param_lp = plp, rl[i].sq = s1[i]->t();
            rl[i].mom = c.momentum != 0.0f ? s2[i]->t() : nullptr;
            rl[i].lr = 1e-3f, rl[i].rho = 0.9f, rl[i].eps = 1e-7f, rl[i].momentum = c.momentum;
            rl[i].weight_decay = c.wd, rl[i].grad_scale = gscale;
          }
          if (run == 0) {
            int failed = -2;
            cnn_status st = c.which == 0   ? cnn_op_sgd_update_multi(b, sl.data(), (int)nt, &failed)
                            : c.which == 1 ? cnn_op_adam_update_multi(b, al.data(), (int)nt, &failed)
                                           : cnn_op_rmsprop_update_multi(b, rl.data(), (int)nt, &failed);
            ASSERT_EQ(st, CNN_OK) << cnn_last_error();
            EXPECT_EQ(failed, -1);
          } else {
            for (size_t i = 0; i < nt; i++) {
              cnn_status st = c.which == 0   ? cnn_op_sgd_update(b, &sl[i])
                              : c.which == 1 ? cnn_op_adam_update(b, &al[i])
                                             : cnn_op_rmsprop_update(b, &rl[i]);
              ASSERT_EQ(st, CNN_OK) << b->name << " tensor " << i << ": " << cnn_last_error();
            }
          }
        }
        for (size_t i = 0; i < nt; i++) {
          res[run][0].push_back(p[i]->get());
          res[run][1].push_back(s1[i]->get());
          res[run][2].push_back(s2[i]->get());
          if (run < 2) copy[run].push_back(low(i) ? lp[i]->get() : std::vector<float>());
          EXPECT_TRUE(p[i]->tail_intact() && s1[i]->tail_intact() && s2[i]->tail_intact() && lp[i]->tail_intact())
              << b->name << " tensor " << i;
        }
      }
      const char *what[3] = {"param", "first state", "second state"};
      for (size_t i = 0; i < nt; i++) {
        if (sizes[i] == 0) continue;
        SCOPED_TRACE("tensor " + std::to_string(i) + " of " + std::to_string(sizes[i]) + " elements");
        for (int k = 0; k < 3; k++) {
          ASSERT_EQ(res[0][k][i].size(), res[1][k][i].size());
          EXPECT_EQ(memcmp(res[0][k][i].data(), res[1][k][i].data(), res[0][k][i].size() * sizeof(float)), 0)
              << what[k] << ": the multi kernel differs from the per-tensor kernel";
          expect_match(res[0][k][i], res[2][k][i], kNmseElementwise, what[k]);
        }
        EXPECT_NE(res[0][0][i], p0[i]) << "the parameters did not move";
        if (!low(i)) continue;
        ASSERT_EQ(copy[0][i].size(), res[0][0][i].size());
        EXPECT_EQ(copy[0][i], copy[1][i]) << "16-bit copies of the multi and the per-tensor kernels";
        for (size_t e = 0; e < copy[0][i].size(); e++)
          ASSERT_EQ(copy[0][i][e], round_to(res[0][0][i][e], dt)) << "the 16-bit copy of element " << e;
      }
    }
  }
}

// One reduction over every tensor of a list, any float dtypes mixed: each tensor's sum is the bits of sum_squares
// on it, matches the CPU, and does not change from call to call, nor when the list (and its cached table) changes.
TEST_F(CudaOps, SumSquaresMultiMatchesPerTensorAndCpuAndIsReproducible) {
  ASSERT_NE(g_cuda->ops->sum_squares_multi, nullptr);
  std::mt19937 rng(39);
  const std::vector<int64_t> sizes = {8193, 1, 0, 1000003, 8192, 2};
  const cnn_dtype dts[] = {CNN_F32, CNN_F16, CNN_F32, CNN_F32, CNN_BF16, CNN_F32};
  const size_t nt = sizes.size();
  std::vector<std::unique_ptr<DTensor>> ts;
  std::vector<const cnn_tensor *> list;
  std::vector<double> want(nt), cpu(nt);
  for (size_t i = 0; i < nt; i++) {
    auto x = rounded(random_floats((size_t)sizes[i], rng, -3.0f, 3.0f), dts[i]);
    ts.emplace_back(new DTensor(g_cuda, {sizes[i]}, dts[i]));
    ts.back()->set(x);
    list.push_back(ts.back()->t());
    ASSERT_EQ(cnn_op_sum_squares(g_cuda, ts.back()->t(), &want[i]), CNN_OK) << cnn_last_error();
    DTensor c(g_cpu, {sizes[i]});
    c.set(x);
    ASSERT_EQ(cnn_op_sum_squares(g_cpu, c.t(), &cpu[i]), CNN_OK) << cnn_last_error();
  }
  for (int call = 0; call < 2; call++) {  // the second call finds its table on the device
    std::vector<double> got(nt, -1.0);
    int failed = -2;
    ASSERT_EQ(cnn_op_sum_squares_multi(g_cuda, list.data(), (int)nt, got.data(), &failed), CNN_OK)
        << cnn_last_error();
    EXPECT_EQ(failed, -1);
    for (size_t i = 0; i < nt; i++) {
      EXPECT_EQ(memcmp(&got[i], &want[i], sizeof(double)), 0)
          << "call " << call << " tensor " << i << ": " << got[i] << " against sum_squares' " << want[i];
      EXPECT_NEAR(got[i], cpu[i], 1e-12 * cpu[i]) << "tensor " << i << ": both sum in double";
    }
  }
  std::vector<double> part(nt - 2, -1.0);  // another list: a new table
  ASSERT_EQ(cnn_op_sum_squares_multi(g_cuda, list.data() + 2, (int)nt - 2, part.data(), nullptr), CNN_OK)
      << cnn_last_error();
  for (size_t i = 0; i + 2 < nt; i++) EXPECT_EQ(memcmp(&part[i], &want[i + 2], sizeof(double)), 0) << i;
  EXPECT_EQ(want[2], 0.0);
  EXPECT_GT(want[3], 0.0);

  DTensor bad(g_cuda, {4}, CNN_I32);
  const cnn_tensor *with_bad[3] = {list[0], list[1], bad.t()};
  int failed = -2;
  std::vector<double> out(3);
  expect_error(cnn_op_sum_squares_multi(g_cuda, with_bad, 3, out.data(), &failed), CNN_ERR_UNSUPPORTED,
               {"sum_squares_multi", "ts[2]", "I32"});
  EXPECT_EQ(failed, 2);
  expect_error(cnn_op_sum_squares_multi(g_cuda, with_bad, 0, out.data(), &failed), CNN_ERR_INVALID_ARG,
               {"n is 0"});
}

TEST_F(CudaOps, MultiTensorUpdatesRejectMismatchedHyperparametersAndBadElements) {
  DTensor p0(g_cuda, {5}), g0(g_cuda, {5}), v0(g_cuda, {5}), p1(g_cuda, {7}), g1(g_cuda, {6}, CNN_F16), v1(g_cuda, {7});
  std::vector<float> start(5, 1.0f);
  p0.set(start);
  cnn_sgd_args l[2];
  memset(l, 0, sizeof l);
  l[0].param = p0.t(), l[0].grad = g0.t(), l[0].velocity = v0.t();
  l[1].param = p1.t(), l[1].grad = g1.t(), l[1].velocity = v1.t();
  for (cnn_sgd_args &a : l) a.lr = 0.1f, a.momentum = 0.9f, a.grad_scale = 1.0f;
  l[1].momentum = 0.8f;
  int failed = -2;
  expect_error(cnn_op_sgd_update_multi(g_cuda, l, 2, &failed), CNN_ERR_INVALID_ARG,
               {"sgd_update_multi on cuda", "list[1].momentum", "0.8", "0.9"});
  EXPECT_EQ(failed, 1);
  l[1].momentum = 0.9f;
  expect_error(cnn_op_sgd_update_multi(g_cuda, l, 2, &failed), CNN_ERR_SHAPE,
               {"sgd_update_multi list[1] on cuda", "grad", "(6)", "(7)"});
  EXPECT_EQ(failed, 1);
  expect_error(cnn_op_sgd_update_multi(g_cuda, nullptr, 2, &failed), CNN_ERR_INVALID_ARG, {"list is NULL"});
  EXPECT_EQ(failed, -1);
  EXPECT_EQ(p0.get(), start) << "element 0 was updated although element 1 was rejected";
}

TEST_F(CudaOps, NonfiniteFindsInfinitiesAndNaNsIn16BitAndF32) {
  DTensor a(g_cuda, {1000}, CNN_F16), b(g_cuda, {70000}, CNN_BF16), c(g_cuda, {3});
  std::vector<float> big(1000, 0.5f), small(70000, -2.0f);
  a.set(big), b.set(small), c.set({1, 2, 3});
  const cnn_tensor *ts[3] = {a.t(), b.t(), c.t()};
  int any = -1;
  ASSERT_EQ(cnn_op_nonfinite(g_cuda, ts, 3, &any), CNN_OK) << cnn_last_error();
  EXPECT_EQ(any, 0);
  big[999] = 70000.0f;  // beyond F16's range: infinity once stored
  a.set(big);
  ASSERT_EQ(cnn_op_nonfinite(g_cuda, ts, 3, &any), CNN_OK) << cnn_last_error();
  EXPECT_EQ(any, 1);
  a.set(std::vector<float>(1000, 0.5f));
  small[69999] = NAN;
  b.set(small);
  ASSERT_EQ(cnn_op_nonfinite(g_cuda, ts, 3, &any), CNN_OK) << cnn_last_error();
  EXPECT_EQ(any, 1);
  b.set(std::vector<float>(70000, 1.0f));
  c.set({1, INFINITY, 3});
  ASSERT_EQ(cnn_op_nonfinite(g_cuda, ts, 3, &any), CNN_OK) << cnn_last_error();
  EXPECT_EQ(any, 1);
}

// Sets the CUDA backend's precision for a scope and puts FP32 back however the scope ends: an assertion that stops
// a test must not leave the tests after it at another precision.
class PrecisionScope {
 public:
  explicit PrecisionScope(cnn_precision p) : status_(cnn_op_set_precision(g_cuda, p)) {}
  ~PrecisionScope() { EXPECT_EQ(cnn_op_set_precision(g_cuda, CNN_PRECISION_FP32), CNN_OK) << cnn_last_error(); }
  PrecisionScope(const PrecisionScope &) = delete;
  PrecisionScope &operator=(const PrecisionScope &) = delete;
  cnn_status status() const { return status_; }

 private:
  cnn_status status_;
};

// TF32 lets cuDNN and cuBLAS(Lt) round f32 operands to a 10-bit mantissa: results stay within the conv/gemm bound.
// At precision FP32 no engine may round to TF32 (cuda/conv_graph.c leaves out tensor-core engines for f32): over
// 576-term sums of random values, plain f32 (FMA, Winograd or FFT) stays below 1e-9 NMSE from the CPU, where TF32's
// 10-bit mantissas give about 1e-7. Both APIs, each alone.
TEST_F(CudaOps, Fp32ConvolutionsDoNotRoundToTf32) {
  for (const char *api : {"graph", "legacy"}) {
    SCOPED_TRACE(std::string("CNN_CUDNN_CONV=") + api);
    setenv("CNN_CUDNN_CONV", api, 1);
    cnn_backend *b = nullptr;
    const cnn_status created = cnn_backend_create("cuda", &b);
    unsetenv("CNN_CUDNN_CONV");
    ASSERT_EQ(created, CNN_OK) << cnn_last_error();
    std::mt19937 rng(47);
    for (const ConvCase &p : {conv(8, 16, 16, 64, 64, 3, 3, 1, 1), conv(4, 28, 28, 64, 32, 3, 3)}) {
      SCOPED_TRACE(p.str());
      ConvInputs in = conv_inputs(p, rng);
      Plan gp(b), cp(g_cpu);
      ConvResult got = run_conv(b, p, in.x, in.w, in.bias, in.dy, &gp.p);
      ConvResult want = run_conv(g_cpu, p, in.x, in.w, in.bias, in.dy, &cp.p);
      expect_match(got.y, want.y, 1e-9, "fp32 conv2d_forward y");
      expect_match(got.dx, want.dx, 1e-9, "fp32 conv2d_backward_data dx");
      expect_match(got.dw, want.dw, 1e-9, "fp32 conv2d_backward_filter dw");
    }
    cnn_backend_destroy(b);
  }
}

TEST_F(CudaOps, Tf32ConvolutionsAndProductsStayCloseToCpu) {
  ASSERT_NE(g_cuda->ops->set_precision, nullptr);
  PrecisionScope tf32(CNN_PRECISION_TF32);
  ASSERT_EQ(tf32.status(), CNN_OK) << cnn_last_error();
  std::mt19937 rng(37);
  for (const ConvCase &p : {conv(8, 16, 16, 32, 64, 3, 3, 1, 1), conv(3, 13, 13, 32, 64, 3, 3), conv(2, 9, 9, 4, 6, 3, 3, 1, 2, 2)}) {
    SCOPED_TRACE(p.str());
    ConvInputs in = conv_inputs(p, rng);
    const auto &x = in.x, &w = in.w, &bias = in.bias, &dy = in.dy;
    Plan gp(g_cuda), cp(g_cpu);
    ConvResult got = run_conv(g_cuda, p, x, w, bias, dy, &gp.p);
    ConvResult want = run_conv(g_cpu, p, x, w, bias, dy, &cp.p);
    expect_match(got.y, want.y, kNmseConvGemm, "tf32 conv2d_forward y");
    expect_match(got.dx, want.dx, kNmseConvGemm, "tf32 conv2d_backward_data dx");
    expect_match(got.dw, want.dw, kNmseConvGemm, "tf32 conv2d_backward_filter dw");
  }
  for (const DenseCase &c : dense_cases()) {
    SCOPED_TRACE("tf32 " + c.str());
    DenseInputs in = dense_inputs(c, rng);
    Plan gp(g_cuda);
    expect_dense_matches_cpu(c, in, &gp.p, kNmseConvGemm);
  }
}

// The seed CNN and the every-layer graph train in BF16 and FP16 (with loss scaling) close to the CPU in f32.
std::vector<cnn_epoch_stats> train_model_at(cnn_backend *b, const Synthetic &train, const Synthetic &val,
                                            const char *text, cnn_precision prec, int epochs) {
  cnn_net *net = nullptr;
  cnn_status st = text ? cnn_net_from_text(text, "test model", b, 42, &net)
                       : cnn_net_from_file(CNN_SOURCE_DIR "/samples/models/seed_cnn.cnn", b, 42, &net);
  EXPECT_EQ(st, CNN_OK) << cnn_last_error();
  if (st != CNN_OK) return {};
  st = cnn_net_set_precision(net, prec);
  EXPECT_EQ(st, CNN_OK) << cnn_last_error();
  std::vector<cnn_epoch_stats> hist(epochs);
  if (st == CNN_OK) {
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    cfg.epochs = epochs, cfg.batch_size = 32, cfg.optimizer = CNN_OPTIM_ADAM, cfg.lr = 1e-3f, cfg.seed = 7;
    cfg.progress = nullptr;
    st = cnn_train(net, &train.ds, &val.ds, &cfg, hist.data());
    EXPECT_EQ(st, CNN_OK) << cnn_precision_name(prec) << ": " << cnn_last_error();
  }
  cnn_net_destroy(net);
  if (st != CNN_OK) return {};
  return hist;
}

TEST_F(CudaOps, MixedPrecisionTrainingFollowsTheF32Curve) {
  Synthetic train(2048, 1), val(512, 2);
  std::vector<cnn_epoch_stats> ref = train_model_at(g_cpu, train, val, nullptr, CNN_PRECISION_FP32, 3);
  ASSERT_EQ(ref.size(), 3u);
  for (cnn_precision prec : {CNN_PRECISION_BF16, CNN_PRECISION_FP16, CNN_PRECISION_TF32}) {
    SCOPED_TRACE(cnn_precision_name(prec));
    std::vector<cnn_epoch_stats> got = train_model_at(g_cuda, train, val, nullptr, prec, 3);
    ASSERT_EQ(got.size(), 3u);
    for (size_t e = 0; e < got.size(); e++) {
      SCOPED_TRACE("epoch " + std::to_string(e + 1));
      ASSERT_TRUE(std::isfinite(got[e].loss));
      EXPECT_NEAR(got[e].loss, ref[e].loss, 0.15 * ref[e].loss + 0.03) << "cuda " << got[e].loss << ", cpu f32 " << ref[e].loss;
      EXPECT_NEAR(got[e].val_accuracy, ref[e].val_accuracy, 0.05);
    }
    EXPECT_GT(got.back().val_accuracy, 0.9);
    if (prec == CNN_PRECISION_FP16) {
      EXPECT_GE(got.back().loss_scale, 1.0f);
      int64_t skipped = 0;
      for (const auto &e : got) skipped += e.skipped_steps;
      EXPECT_LT(skipped, 20) << "fp16 skipped " << skipped << " of 192 steps";
    }
  }
}


// --deterministic on the GPU: cuDNN's algorithms come from its heuristics (deterministic ones only, no timing), and
// our kernels reduce in a fixed order: two trainings of the same seed give the same model file, byte for byte.
TEST_F(CudaOps, DeterministicTrainingGivesBitIdenticalModels) {
  Synthetic train(1024, 5), val(256, 6);
  cnntest::TempDir dir;
  for (const char *model : {"seed_cnn.cnn", "seed_cnn_bn.cnn"}) {
    for (cnn_precision prec : {CNN_PRECISION_FP32, CNN_PRECISION_BF16}) {
      SCOPED_TRACE(std::string(model) + " " + cnn_precision_name(prec));
      std::string files[2];
      for (int run = 0; run < 2; run++) {
        cnn_net *net = nullptr;
        ASSERT_EQ(cnn_net_from_file((std::string(CNN_SOURCE_DIR "/samples/models/") + model).c_str(), g_cuda, 3,
                                    &net),
                  CNN_OK)
            << cnn_last_error();
        ASSERT_EQ(cnn_net_set_precision(net, prec), CNN_OK) << cnn_last_error();
        cnn_train_config cfg;
        cnn_train_config_defaults(&cfg);
        cfg.epochs = 2, cfg.batch_size = 32, cfg.lr = 1e-3f, cfg.seed = 11, cfg.deterministic = 1;
        cfg.progress = nullptr;
        std::vector<cnn_epoch_stats> hist(2);
        EXPECT_EQ(cnn_train(net, &train.ds, &val.ds, &cfg, hist.data()), CNN_OK) << cnn_last_error();
        files[run] = dir.file(std::string("run") + std::to_string(run) + ".safetensors");
        EXPECT_EQ(cnn_net_save(net, files[run].c_str()), CNN_OK) << cnn_last_error();
        cnn_net_destroy(net);
      }
      const std::string a = cnntest::read_file(files[0]), b = cnntest::read_file(files[1]);
      ASSERT_FALSE(a.empty());
      EXPECT_TRUE(a == b) << "two deterministic runs wrote different model files";
    }
  }
}

// Checkpoints on the GPU: a deterministic run writes one every 5 steps; resuming from a checkpoint in the middle
// of an epoch and from one at an epoch's end, into a network with other initial weights, ends bit-identical to
// the uninterrupted run, in f32 and in fp16 (whose dynamic loss scale and clean-step count the checkpoint must
// carry). The f32 checkpoint also resumes on the CPU: the same training continues there, to a close loss.
TEST_F(CudaOps, CheckpointsResumeBitIdenticalOnCudaAndContinueOnCpu) {
  Synthetic train(320, 7), val(128, 8);  // 10 steps an epoch at batch 32
  for (cnn_precision prec : {CNN_PRECISION_FP32, CNN_PRECISION_FP16}) {
    SCOPED_TRACE(cnn_precision_name(prec));
    cnntest::TempDir dir;
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    cfg.epochs = 2, cfg.batch_size = 32, cfg.lr = 1e-3f, cfg.seed = 13, cfg.deterministic = 1;
    cfg.progress = nullptr;
    cfg.checkpoint_dir = dir.path().c_str();
    cfg.checkpoint_every = 5;
    cfg.checkpoint_in_steps = 1;
    cfg.keep_checkpoints = 1000;
    auto make = [&](cnn_backend *b, uint64_t init_seed) {
      cnn_net *net = nullptr;
      EXPECT_EQ(cnn_net_from_file(CNN_SOURCE_DIR "/samples/models/seed_cnn_bn.cnn", b, init_seed, &net), CNN_OK)
          << cnn_last_error();
      if (net && b == g_cuda) {
        EXPECT_EQ(cnn_net_set_precision(net, prec), CNN_OK) << cnn_last_error();
      }
      return net;
    };
    auto weights = [](const cnn_net *net) {
      std::vector<float> w((size_t)cnn_net_saved_floats(net));
      EXPECT_EQ(cnn_net_snapshot(net, w.data()), CNN_OK) << cnn_last_error();
      return w;
    };
    cnn_net *ref = make(g_cuda, 3);
    ASSERT_NE(ref, nullptr);
    std::vector<cnn_epoch_stats> want(2);
    ASSERT_EQ(cnn_train(ref, &train.ds, &val.ds, &cfg, want.data()), CNN_OK) << cnn_last_error();
    const std::vector<float> want_w = weights(ref);
    cnn_net_destroy(ref);
    for (const char *ckpt : {"ckpt-000000000005.safetensors", "ckpt-000000000010.safetensors"}) {
      SCOPED_TRACE(ckpt);
      cnntest::TempDir other;
      const std::string path = dir.file(ckpt);
      cnn_train_config rc = cfg;
      rc.resume_from = path.c_str();
      rc.checkpoint_dir = other.path().c_str();
      cnn_net *net = make(g_cuda, 99);
      ASSERT_NE(net, nullptr);
      std::vector<cnn_epoch_stats> got(2);
      ASSERT_EQ(cnn_train(net, &train.ds, &val.ds, &rc, got.data()), CNN_OK) << cnn_last_error();
      const std::vector<float> got_w = weights(net);
      ASSERT_EQ(got_w.size(), want_w.size());
      EXPECT_EQ(memcmp(got_w.data(), want_w.data(), want_w.size() * sizeof(float)), 0)
          << "resumed on cuda, the weights differ from the uninterrupted run's";
      EXPECT_EQ(got[1].loss, want[1].loss);
      EXPECT_EQ(got[1].val_loss, want[1].val_loss);
      cnn_net_destroy(net);
      if (prec != CNN_PRECISION_FP32 || strcmp(ckpt, "ckpt-000000000010.safetensors") != 0) continue;
      // the same checkpoint, resumed on the CPU: epoch 2 runs there, from the GPU's weights and optimizer state
      cnntest::TempDir third;
      rc.checkpoint_dir = third.path().c_str();
      cnn_net *cpu_net = make(g_cpu, 99);
      ASSERT_NE(cpu_net, nullptr);
      std::vector<cnn_epoch_stats> on_cpu(2);
      ASSERT_EQ(cnn_train(cpu_net, &train.ds, &val.ds, &rc, on_cpu.data()), CNN_OK) << cnn_last_error();
      EXPECT_NEAR(on_cpu[1].loss, want[1].loss, 0.02 * want[1].loss + 1e-3) << "epoch 2 on cpu vs on cuda";
      EXPECT_NEAR(on_cpu[1].val_accuracy, want[1].val_accuracy, 0.03);
      cnn_net_destroy(cpu_net);
    }
  }
}

// Without CUDA (any build, any machine): the CPU backend refuses mixed precision with a message naming CUDA.
TEST(Precision, CpuBackendRefusesAllButFp32NamingCuda) {
  cnn_backend *cpu = nullptr;
  ASSERT_EQ(cnn_backend_create("cpu", &cpu), CNN_OK) << cnn_last_error();
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_file(CNN_SOURCE_DIR "/samples/models/seed_cnn.cnn", cpu, 1, &net), CNN_OK)
      << cnn_last_error();
  for (cnn_precision p : {CNN_PRECISION_TF32, CNN_PRECISION_FP16, CNN_PRECISION_BF16}) {
    expect_error(cnn_net_set_precision(net, p), CNN_ERR_UNSUPPORTED, {cnn_precision_name(p), "CUDA", "cpu"});
    EXPECT_EQ(cnn_net_precision(net), CNN_PRECISION_FP32);
  }
  EXPECT_EQ(cnn_net_set_precision(net, CNN_PRECISION_FP32), CNN_OK) << cnn_last_error();
  cnn_precision parsed;
  EXPECT_EQ(cnn_precision_parse("bf16", &parsed), CNN_OK);
  EXPECT_EQ(parsed, CNN_PRECISION_BF16);
  expect_error(cnn_precision_parse("fp8", &parsed), CNN_ERR_INVALID_ARG, {"fp8", "fp32, tf32, fp16, bf16"});
  cnn_net_destroy(net);
  cnn_backend_destroy(cpu);
}

// Input gradients, a layer's gradient, Grad-CAM and PGD (include/cnn/explain.h) on the CUDA backend against the CPU
// backend, on one model file holding every kind of layer: the same maps and adversarial images within the
// convolutions' bound.
TEST_F(CudaOps, InputGradientsGradCamAndPgdMatchCpu) {
  cnntest::TempDir dir;
  const char *text =
      "input 12 12 2\n"
      "conv 6 3 relu padding=same bias=no name=stem\n"
      "batchnorm\n"
      "conv 6 3 padding=same bias=no\n"
      "batchnorm\n"
      "add stem relu name=r\n"
      "maxpool 2\n"
      "conv 8 3 tanh padding=same name=c\n"
      "avgpool 2 from=r\n"
      "conv 8 1 elu name=d\n"
      "concat c d\n"
      "dropout 0.3\n"
      "globalavgpool\n"
      "dense 5\n";
  cnn_net *cpu = nullptr, *gpu = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "explain", g_cpu, 3, &cpu), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_save(cpu, dir.file("m.safetensors").c_str()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_load(dir.file("m.safetensors").c_str(), g_cuda, &gpu), CNN_OK) << cnn_last_error();
  const int n = 3, k = 5, per = 12 * 12 * 2;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<float> x(n * per), d(n * k);
  for (auto &v : x) v = u(rng);
  for (auto &v : d) v = 2 * u(rng) - 1;
  const int layer = cnn_net_layer_find(cpu, "c");
  ASSERT_GE(layer, 0);
  const int64_t lsize = cnn_net_layer_shape(cpu, layer, nullptr, nullptr, nullptr, nullptr);
  std::vector<float> dx[2], lg[2], cam[2], adv[2];
  cnn_net *nets[2] = {cpu, gpu};
  for (int b = 0; b < 2; b++) {
    cnn_grad *g = nullptr;
    ASSERT_EQ(cnn_grad_create(nets[b], n, &g), CNN_OK) << cnn_last_error();
    dx[b].resize(x.size());
    lg[b].resize(n * lsize);
    ASSERT_EQ(cnn_grad_forward(g, x.data(), n, nullptr, nullptr), CNN_OK) << cnn_last_error();
    ASSERT_EQ(cnn_grad_backward(g, d.data(), dx[b].data(), layer, lg[b].data()), CNN_OK) << cnn_last_error();
    cnn_explain_config cfg;
    cnn_explain_config_defaults(&cfg);
    cnn_explanation e{};
    ASSERT_EQ(cnn_explain_image(g, &cfg, x.data(), 1, &e), CNN_OK) << cnn_last_error();
    cam[b].assign(e.raw, e.raw + e.raw_h * e.raw_w);
    cnn_explanation_free(&e);
    cnn_attack_config ac = cnntest::attack_config(CNN_ATTACK_PGD, 0.05f, 3);
    ac.random_start = 1;
    std::vector<int32_t> labels = {0, 2, 4};
    adv[b].resize(x.size());
    ASSERT_EQ(cnn_attack_images(g, &ac, x.data(), labels.data(), n, 0, adv[b].data()), CNN_OK) << cnn_last_error();
    cnn_grad_destroy(g);
  }
  auto nmse = [](const std::vector<float> &a, const std::vector<float> &ref) {
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < a.size(); i++) {
      num += (a[i] - ref[i]) * (double)(a[i] - ref[i]);
      den += ref[i] * (double)ref[i];
    }
    return num / den;
  };
  EXPECT_LT(nmse(dx[1], dx[0]), kNmseConvGemm) << "input gradient";
  EXPECT_LT(nmse(lg[1], lg[0]), kNmseConvGemm) << "layer gradient";
  EXPECT_LT(nmse(cam[1], cam[0]), kNmseConvGemm) << "Grad-CAM";
  int differ = 0;  // PGD's signs may flip where a gradient is near zero
  for (size_t i = 0; i < x.size(); i++) differ += std::fabs(adv[1][i] - adv[0][i]) > 1e-4f;
  EXPECT_LT(differ, (int)x.size() / 50) << "PGD images";
  cnn_net_destroy(cpu);
  cnn_net_destroy(gpu);
}

}  // namespace
