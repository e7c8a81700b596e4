// Fixtures shared by the suites that build networks on the CPU backend: the backend, and the quadrant task.
#pragma once

#include <stdint.h>

#include <vector>

#include "cnn/cnn.h"

namespace cnntest {

// The CPU backend for one test; a failure to create it fails the test.
struct CpuBackend {
  cnn_backend *b = nullptr;
  CpuBackend();
  ~CpuBackend();
  CpuBackend(const CpuBackend &) = delete;
  CpuBackend &operator=(const CpuBackend &) = delete;
};

// A synthetic 4-class task: a bright 3x3 square in one quadrant of a noisy 12x12 image (pixels in [0, 1]); the
// label is the quadrant. `ds` points into the vectors.
struct Quadrants {
  std::vector<float> images;
  std::vector<int32_t> labels;
  cnn_dataset ds{};
  Quadrants(int n, uint64_t seed);
  Quadrants(const Quadrants &) = delete;
  Quadrants &operator=(const Quadrants &) = delete;
};

}  // namespace cnntest
