// Helpers shared by the op suites (test_ops.cc's conformance table, test_ops_cpu.cc, test_cuda.cc): random inputs,
// 16-bit rounding, finite differences of the float64 references, the comparison against another backend, and the
// convolution shapes every backend is checked over.
#pragma once

#include <stddef.h>

#include <functional>
#include <random>
#include <vector>

#include "cnn/tensor.h"
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

// Normalized mean squared error of `got` against `want`, sum((got - want)^2) / sum(want^2) (the plain squared
// error for an all-zero `want`); NaN when the sizes differ or either holds a NaN or an infinity.
double nmse(const std::vector<float> &got, const std::vector<float> &want);

// A convolution of (N, H, W, C) with O kernels of KH x KW, the same stride, padding and dilation on both axes.
cnnref::Conv2d conv_params(int n, int h, int w, int c, int o, int kh, int kw, int stride = 1, int pad = 0,
                           int dilation = 1, int groups = 1);

// The convolutions every backend is checked over: hand-picked ones (odd sizes, both padding kinds, every
// parameter, the seed CNN's layers) then seeded random ones; every third with the fused ReLU.
std::vector<cnnref::Conv2d> conv_shapes();

}  // namespace cnntest
