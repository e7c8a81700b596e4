// Helpers shared by the op suites (test_ops.cc's conformance table, test_ops_cpu.cc, test_cuda.cc): random inputs,
// 16-bit rounding, finite differences of the float64 references, the comparison against another backend, and the
// convolution shapes every backend is checked over.
#pragma once

#include <gtest/gtest.h>
#include <stddef.h>
#include <string.h>

#include <functional>
#include <initializer_list>
#include <random>
#include <vector>

#include "cnn/status.h"
#include "cnn/tensor.h"
#include "core/backend.h"
#include "tests/reference.h"

namespace cnntest {

// Finite-difference step (the references are float64, so rounding error is ~1e-13 / step).
constexpr double kFdStep = 1e-3;

std::vector<float> random_floats(size_t n, std::mt19937 &rng, float lo = -1.0f, float hi = 1.0f);

// Rounds to nearest even to F16 or BF16, returned as a float (finite, normal-range inputs; F16 subnormals too);
// F32 is left as it is.
float round_to(float x, cnn_dtype dt);
std::vector<float> rounded(std::vector<float> v, cnn_dtype dt);

cnnref::Vec to_double(const std::vector<float> &v);
double dot(const cnnref::Vec &a, const cnnref::Vec &b);

// Central differences of loss(v) for every element of `v`; `skip(i)` marks points where the loss is not smooth
// within the step (those get NaN, to be left out of the comparison).
cnnref::Vec finite_differences(cnnref::Vec v, const std::function<double(const cnnref::Vec &)> &loss,
                               const std::function<bool(size_t)> &skip = nullptr);

// Expects `st` to be `want` with a message that contains every one of `parts`; clears the error.
void expect_error(cnn_status st, cnn_status want, std::initializer_list<const char *> parts);

// Normalized mean squared error of `got` against `want`, sum((got - want)^2) / sum(want^2) (the plain squared
// error for an all-zero `want`); NaN when the sizes differ or either holds a NaN or an infinity.
double nmse(const std::vector<float> &got, const std::vector<float> &want);

// A convolution of (N, H, W, C) with O kernels of KH x KW, the same stride, padding and dilation on both axes.
cnnref::Conv2d conv_params(int n, int h, int w, int c, int o, int kh, int kw, int stride = 1, int pad = 0,
                           int dilation = 1, int groups = 1);

// The convolutions every backend is checked over: hand-picked ones (odd sizes, both padding kinds, every
// parameter, the seed CNN's layers) then seeded random ones; every third with the fused ReLU.
std::vector<cnnref::Conv2d> conv_shapes();

// A tensor on any backend, allocated through it with sentinel bytes before and after the data (a stray write
// shows up in guards_intact()), float data filled with NaN (an element an op forgets shows up too).
class DeviceTensor {
 public:
  static constexpr size_t kGuard = 256;  // bytes each side: keeps the data as aligned as the allocation
  static constexpr unsigned char kSentinel = 0xA5;

  DeviceTensor(cnn_backend *b, const std::vector<int64_t> &shape, cnn_dtype dtype = CNN_F32) : b_(b) {
    memset(&t_, 0, sizeof t_);
    t_.backend = b, t_.dtype = dtype, t_.ndim = (int)shape.size();
    numel_ = 1;
    for (size_t i = 0; i < shape.size(); i++) t_.shape[i] = shape[i], numel_ *= (size_t)shape[i];
    bytes_ = numel_ * cnn_dtype_size(dtype);
    const cnn_status st = b->ops->alloc(b, bytes_ + 2 * kGuard, &base_);
    EXPECT_EQ(st, CNN_OK) << cnn_last_error();
    if (st != CNN_OK) return;
    t_.data = (unsigned char *)base_ + kGuard;
    std::vector<unsigned char> pattern(bytes_ + 2 * kGuard, kSentinel);
    EXPECT_EQ(b->ops->write(b, whole(), pattern.data(), pattern.size()), CNN_OK) << cnn_last_error();
    if (dtype == CNN_F32 || dtype == CNN_F16 || dtype == CNN_BF16)
      set(std::vector<float>(numel_, NAN));  // an element an op forgets shows up as NaN
  }
  ~DeviceTensor() {
    if (base_) b_->ops->free(b_, base_);
  }
  DeviceTensor(const DeviceTensor &) = delete;
  DeviceTensor &operator=(const DeviceTensor &) = delete;

  cnn_tensor *t() { return &t_; }
  size_t numel() const { return numel_; }

  // 16-bit tensors are written and read as floats through an f32 tensor and the backend's cast
  void set(const std::vector<float> &v) {
    ASSERT_EQ(v.size(), numel_);
    if (t_.dtype == CNN_F32) {
      ASSERT_EQ(b_->ops->write(b_, &t_, v.data(), bytes_), CNN_OK) << cnn_last_error();
      return;
    }
    DeviceTensor f(b_, shape());
    f.set(v);
    ASSERT_NE(b_->ops->cast, nullptr);
    ASSERT_EQ(b_->ops->cast(b_, &t_, f.t()), CNN_OK) << cnn_last_error();
  }
  void set_i32(const std::vector<int32_t> &v) {
    ASSERT_EQ(v.size(), numel_);
    ASSERT_EQ(b_->ops->write(b_, &t_, v.data(), bytes_), CNN_OK) << cnn_last_error();
  }
  std::vector<float> get() {
    if (t_.dtype != CNN_F32) {
      DeviceTensor f(b_, shape());
      EXPECT_EQ(b_->ops->cast(b_, f.t(), &t_), CNN_OK) << cnn_last_error();
      return f.get();
    }
    std::vector<float> v(numel_);
    EXPECT_EQ(b_->ops->read(b_, &t_, v.data(), bytes_), CNN_OK) << cnn_last_error();
    return v;
  }
  std::vector<int64_t> shape() const { return std::vector<int64_t>(t_.shape, t_.shape + t_.ndim); }
  // The sentinel bytes before and after the data are as they were.
  bool tail_intact() { return guards_intact(); }
  bool guards_intact() {
    std::vector<unsigned char> v(bytes_ + 2 * kGuard);
    if (b_->ops->read(b_, whole(), v.data(), v.size()) != CNN_OK) return false;
    for (size_t i = 0; i < kGuard; i++)
      if (v[i] != kSentinel || v[kGuard + bytes_ + i] != kSentinel) return false;
    return true;
  }

 private:
  cnn_tensor *whole() {
    memset(&all_, 0, sizeof all_);
    all_.backend = b_, all_.dtype = CNN_U8, all_.ndim = 1, all_.shape[0] = (int64_t)(bytes_ + 2 * kGuard);
    all_.data = base_;
    return &all_;
  }
  cnn_backend *b_;
  cnn_tensor t_, all_;
  void *base_ = nullptr;
  size_t numel_ = 0, bytes_ = 0;
};

// A plan slot that frees its plan through its backend.
struct Plan {
  cnn_backend *b;
  cnn_plan *p = nullptr;
  explicit Plan(cnn_backend *backend) : b(backend) {}
  ~Plan() {
    if (p) b->ops->plan_destroy(b, p);
  }
};

}  // namespace cnntest
