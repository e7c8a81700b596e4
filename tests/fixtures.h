// Fixtures shared by the suites that build networks on the CPU backend: the backend, and the quadrant task.
#pragma once

#include <stdint.h>

#include <string>
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

// The quadrant task of n images (seed) as MNIST's IDX files DIR/PREFIX-images-idx3-ubyte and
// DIR/PREFIX-labels-idx1-ubyte (pixels rounded to 8 bits), for `--data mnist:DIR` (prefixes "train" and "t10k").
void write_quadrant_idx(const std::string &dir, const std::string &prefix, int n, uint64_t seed);

// Another quadrant task (3x3 bright squares drawn from cnn_rng(seed), ntrain then ntest images) as the IDX files
// of `--data mnist:DIR`: DIR/train-* and DIR/t10k-*.
void write_idx_squares(const std::string &dir, int ntrain, int ntest, uint64_t seed);

}  // namespace cnntest
