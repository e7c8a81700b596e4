// The dispatch layer (core/ops.c): every call to the backend table is checked once there, before the backend
// runs, and every error names the op and the backend. A spy backend (the CPU backend's table with some entries
// replaced by counters) shows what reaches a backend and what does not.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/backend.h"
#include "core/ops.h"
}

namespace {

int g_calls = 0;  // how many times a spy entry ran

cnn_status spy_conv(cnn_backend *, const cnn_conv2d_args *) { return g_calls++, CNN_OK; }
cnn_status spy_act(cnn_backend *, const cnn_act_args *) { return g_calls++, CNN_OK; }
cnn_status spy_sgd_multi(cnn_backend *, const cnn_sgd_args *, int, int *failed) {
  if (failed) *failed = -1;
  return g_calls++, CNN_OK;
}

// The CPU backend's table with the spies in, computing in `dtypes`; tensors made with `b` live on it.
struct Spy {
  cnn_backend *cpu = nullptr;
  cnn_backend_ops ops{};
  cnn_backend b{};
  explicit Spy(unsigned dtypes = 1u << CNN_F32) {
    EXPECT_EQ(cnn_backend_create("cpu", &cpu), CNN_OK) << cnn_last_error();
    ops = *cpu->ops;
    ops.name = "spy";
    ops.float_dtypes = dtypes;
    ops.conv2d_forward = spy_conv;
    ops.act_forward = spy_act;
    ops.sgd_update_multi = spy_sgd_multi;
    ops.batchnorm_forward = nullptr;  // an entry this backend lacks
    b.ops = &ops;
    b.ctx = cpu->ctx;
    std::snprintf(b.name, sizeof b.name, "spy");
    g_calls = 0;
  }
  ~Spy() { cnn_backend_destroy(cpu); }
};

// A tensor in host memory, described as living on `b`.
struct T {
  cnn_tensor t{};
  std::vector<unsigned char> bytes;
  T(cnn_backend *b, std::vector<int64_t> shape, cnn_dtype dt = CNN_F32) {
    t.backend = b;
    t.dtype = dt;
    t.ndim = (int)shape.size();
    for (size_t i = 0; i < shape.size(); i++) t.shape[i] = shape[i];
    bytes.assign(cnn_tensor_bytes(&t) + 1, 0);
    t.data = bytes.data();
  }
  cnn_tensor *p() { return &t; }
};

// st is `want` and the message starts with "<op> on <backend>:" and contains every part.
void expect_error(cnn_status st, cnn_status want, const std::string &prefix, std::vector<std::string> parts = {}) {
  EXPECT_EQ(st, want) << cnn_last_error();
  const std::string msg = cnn_last_error();
  EXPECT_EQ(msg.rfind(prefix, 0), 0u) << "message: " << msg << "\nexpected to start with: " << prefix;
  for (const std::string &p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

cnn_conv2d_args conv_args(T &x, T &w, T &y) {
  cnn_conv2d_args a{};
  a.x = x.p(), a.w = w.p(), a.y = y.p();
  a.stride_h = a.stride_w = a.dilation_h = a.dilation_w = a.groups = 1;
  return a;
}

TEST(Dispatch, GoodArgumentsReachTheBackendOnce) {
  Spy s;
  T x(&s.b, {2, 5, 5, 3}), w(&s.b, {4, 3, 3, 3}), y(&s.b, {2, 3, 3, 4});
  cnn_conv2d_args a = conv_args(x, w, y);
  ASSERT_EQ(cnn_op_conv2d_forward(&s.b, &a), CNN_OK) << cnn_last_error();
  EXPECT_EQ(g_calls, 1);
}

TEST(Dispatch, BadArgumentsNeverReachTheBackendAndTheMessageNamesOpAndBackend) {
  Spy s;
  T x(&s.b, {2, 5, 5, 3}), w(&s.b, {4, 3, 3, 2}), y(&s.b, {2, 3, 3, 4});
  cnn_conv2d_args a = conv_args(x, w, y);
  expect_error(cnn_op_conv2d_forward(&s.b, &a), CNN_ERR_SHAPE, "conv2d_forward on spy: ", {"w", "(4, 3, 3, 2)"});
  expect_error(cnn_op_conv2d_forward(&s.b, nullptr), CNN_ERR_INVALID_ARG, "conv2d_forward on spy: ",
               {"args is NULL"});
  a.w = nullptr;
  expect_error(cnn_op_conv2d_forward(&s.b, &a), CNN_ERR_INVALID_ARG, "conv2d_forward on spy: ", {"w is missing"});
  T w_ok(&s.b, {4, 3, 3, 3});
  a.w = w_ok.p();
  a.stride_h = 0;
  expect_error(cnn_op_conv2d_forward(&s.b, &a), CNN_ERR_INVALID_ARG, "conv2d_forward on spy: ", {"stride 0x1"});
  a.stride_h = 1;
  x.t.data = nullptr;
  expect_error(cnn_op_conv2d_forward(&s.b, &a), CNN_ERR_INVALID_ARG, "conv2d_forward on spy: ", {"x has no data"});
  EXPECT_EQ(g_calls, 0);
}

TEST(Dispatch, TensorsOnAnotherBackendAreRejected) {
  Spy s;
  T x(s.cpu, {2, 5, 5, 3}), w(&s.b, {4, 3, 3, 3}), y(&s.b, {2, 3, 3, 4});
  cnn_conv2d_args a = conv_args(x, w, y);
  expect_error(cnn_op_conv2d_forward(&s.b, &a), CNN_ERR_INVALID_ARG, "conv2d_forward on spy: ",
               {"x lives on backend 'cpu'"});
  EXPECT_EQ(g_calls, 0);
}

TEST(Dispatch, DtypesFollowTheBackendsComputeDtypes) {
  {
    Spy s;  // F32 only, as the CPU backend
    T x(&s.b, {6}, CNN_F16), y(&s.b, {6}, CNN_F16);
    cnn_act_args a{};
    a.act = CNN_ACT_RELU, a.x = x.p(), a.y = y.p();
    expect_error(cnn_op_act_forward(&s.b, &a), CNN_ERR_UNSUPPORTED, "act_forward on spy: ", {"F16", "F32 only"});
    EXPECT_EQ(g_calls, 0);
  }
  Spy s(1u << CNN_F32 | 1u << CNN_F16);  // as CUDA computes
  T x(&s.b, {6}, CNN_F16), y(&s.b, {6}, CNN_F16), y32(&s.b, {6});
  cnn_act_args a{};
  a.act = CNN_ACT_RELU, a.x = x.p(), a.y = y.p();
  ASSERT_EQ(cnn_op_act_forward(&s.b, &a), CNN_OK) << cnn_last_error();
  EXPECT_EQ(g_calls, 1);
  a.y = y32.p();  // one dtype within a call
  expect_error(cnn_op_act_forward(&s.b, &a), CNN_ERR_INVALID_ARG, "act_forward on spy: ", {"F32", "F16", "agree"});
  EXPECT_EQ(g_calls, 1);
}

TEST(Dispatch, AMissingEntryIsUnsupportedNamingOpAndBackend) {
  Spy s;
  T x(&s.b, {4, 3});
  cnn_batchnorm_args a{};
  a.x = x.p();
  expect_error(cnn_op_batchnorm_forward(&s.b, &a), CNN_ERR_UNSUPPORTED, "", {"spy", "batchnorm_forward"});
  EXPECT_FALSE(cnn_op_has(&s.b, "cast"));  // the CPU backend's table has no cast
  EXPECT_TRUE(cnn_op_has(&s.b, "sgd_update_multi"));
  EXPECT_FALSE(cnn_op_has(&s.b, "no_such_entry"));
  expect_error(cnn_op_cast(&s.b, x.p(), x.p()), CNN_ERR_UNSUPPORTED, "", {"spy", "cast"});
}

TEST(Dispatch, MultiTensorListsAreCheckedElementByElementBeforeTheBackendRuns) {
  Spy s;
  T p0(&s.b, {5}), g0(&s.b, {5}), p1(&s.b, {6}), g1(&s.b, {7});
  cnn_sgd_args list[2] = {};
  list[0].param = p0.p(), list[0].grad = g0.p(), list[0].lr = 0.1f, list[0].grad_scale = 1.0f;
  list[1] = list[0];
  list[1].param = p1.p(), list[1].grad = g1.p();
  int failed = -2;
  expect_error(cnn_op_sgd_update_multi(&s.b, list, 2, &failed), CNN_ERR_SHAPE, "sgd_update_multi list[1] on spy: ",
               {"grad", "(7)", "(6)"});
  EXPECT_EQ(failed, 1);
  list[1].lr = 0.2f;
  expect_error(cnn_op_sgd_update_multi(&s.b, list, 2, &failed), CNN_ERR_INVALID_ARG, "sgd_update_multi on spy: ",
               {"list[1].lr"});
  EXPECT_EQ(failed, 1);
  EXPECT_EQ(g_calls, 0);
  T g1_ok(&s.b, {6});
  list[1].lr = 0.1f, list[1].grad = g1_ok.p();
  ASSERT_EQ(cnn_op_sgd_update_multi(&s.b, list, 2, &failed), CNN_OK) << cnn_last_error();
  EXPECT_EQ(failed, -1);
  EXPECT_EQ(g_calls, 1);
}

TEST(Dispatch, TransfersAreCheckedAgainstTheTensor) {
  cnn_backend *cpu = nullptr;
  ASSERT_EQ(cnn_backend_create("cpu", &cpu), CNN_OK) << cnn_last_error();
  T t(cpu, {3});
  float host[4] = {1, 2, 3, 4};
  expect_error(cnn_op_write(cpu, t.p(), host, sizeof host), CNN_ERR_INVALID_ARG, "write on cpu: ",
               {"16 bytes", "12"});
  ASSERT_EQ(cnn_op_write(cpu, t.p(), host, 3 * sizeof(float)), CNN_OK) << cnn_last_error();
  T u(cpu, {4});
  expect_error(cnn_op_copy(cpu, u.p(), t.p()), CNN_ERR_SHAPE, "copy on cpu: ", {"(3)", "(4)"});
  T i(cpu, {3}, CNN_I32);
  expect_error(cnn_op_fill(cpu, i.p(), 1.0f), CNN_ERR_UNSUPPORTED, "fill on cpu: ", {"I32", "only zero"});
  EXPECT_EQ(cnn_op_fill(cpu, i.p(), 0.0f), CNN_OK) << cnn_last_error();
  cnn_backend_destroy(cpu);
}

}  // namespace
