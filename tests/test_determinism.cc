// Reproducibility on the CPU backend: two training runs with the same seed give bit-identical weights and
// running statistics, with 2 threads, in one process and in two separate processes (`cnn train
// --deterministic`), through every op with an OpenMP reduction (batchnorm statistics and gradients, gradient
// norms for clipping) and every oneDNN backward primitive the residual network uses.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/nn/net.h"
#include "core/rng.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

// A residual block with batchnorm, max pooling (which takes over the add's ReLU), dropout, average pooling and
// dense layers; 16 channels of 12x12 at batch 32 puts the batchnorm, pooling and elementwise loops above their
// single-thread thresholds (16,384 elements), so both threads take part.
const char *kNet =
    "input 12 12 1\n"
    "conv 16 3 padding=same bias=no\n"
    "batchnorm relu name=x\n"
    "conv 16 3 padding=same bias=no\n"
    "batchnorm\n"
    "add x relu\n"
    "maxpool 2\n"
    "conv 16 3 padding=1\n"
    "batchnorm relu\n"
    "dropout 0.25\n"
    "avgpool 2\n"
    "flatten\n"
    "dense 32 relu\n"
    "dense 4 softmax\n";

// Every parameter and state tensor of the network, in order.
std::vector<float> all_values(cnn_net *net) {
  std::vector<float> all;
  for (int i = 0; i < net->nlayers; i++) {
    cnn_layer *l = net->layers[i];
    std::vector<cnn_tensor *> ts;
    for (int p = 0; p < l->nparams; p++) ts.push_back(l->params[p].value);
    for (int p = 0; p < l->nstate; p++) ts.push_back(l->state[p].value);
    for (cnn_tensor *t : ts) {
      std::vector<float> v(cnn_tensor_numel(t));
      EXPECT_EQ(cnn_tensor_read(t, v.data(), v.size() * 4), CNN_OK);
      all.insert(all.end(), v.begin(), v.end());
    }
  }
  return all;
}

// Restores the thread count a test changed.
struct Threads {
  int before = cnn_num_threads();
  explicit Threads(int n) { EXPECT_EQ(cnn_set_num_threads(n), CNN_OK); }
  ~Threads() { cnn_set_num_threads(before); }
};

cnn_status train(uint64_t seed, std::vector<float> *out) {
  cnn_backend *b = nullptr;
  cnn_net *net = nullptr;
  const cnntest::Quadrants quad(256, 5);  // a bright 3x3 square in one quadrant of a noisy 12x12 image
  const cnn_dataset &ds = quad.ds;
  cnn_train_config c = cnntest::quiet_train_config(2, 32);
  c.lr = 3e-3f;
  c.seed = seed;
  c.deterministic = 1;
  c.clip_norm = 1.0f; // the gradient norm is a reduction too
  cnn_status st = cnn_backend_create("cpu", &b);
  if (st == CNN_OK) st = cnn_net_from_text(kNet, "det", b, seed, &net);
  if (st == CNN_OK) st = cnn_train(net, &ds, nullptr, &c, nullptr);
  if (st == CNN_OK) *out = all_values(net);
  cnn_net_destroy(net);
  cnn_backend_destroy(b);
  return st;
}

TEST(Determinism, SameSeedSameWeightsWithTwoThreads) {
  Threads two(2);
  ASSERT_EQ(cnn_num_threads(), 2);
  std::vector<float> a, b, c;
  ASSERT_EQ(train(3, &a), CNN_OK) << cnn_last_error();
  ASSERT_EQ(train(3, &b), CNN_OK) << cnn_last_error();
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  for (float v : a) ASSERT_TRUE(std::isfinite(v));
  // and the comparison can fail: another seed gives other weights
  ASSERT_EQ(train(4, &c), CNN_OK) << cnn_last_error();
  EXPECT_NE(std::memcmp(a.data(), c.data(), a.size() * sizeof(float)), 0);
}

// ---- two processes ---------------------------------------------------------------------------------------------

TEST(Determinism, TwoProcessesWithTwoThreadsWriteIdenticalModelFiles) {
  cnntest::TempDir dir;
  cnntest::write_quadrant_idx(dir.path(), "train", 320, 1);
  cnntest::write_quadrant_idx(dir.path(), "t10k", 64, 2);
  cnntest::write_file(dir.file("net.cnn"), kNet);
  // the child processes read their thread count from the environment
  const char *old = getenv("OMP_NUM_THREADS");
  std::string saved = old ? old : "";
  setenv("OMP_NUM_THREADS", "2", 1);
  auto run = [&](const std::string &seed, const std::string &out_name, std::string *out) {
    return cnntest::run_cnn({"train", "--model", dir.file("net.cnn"), "--data", "mnist:" + dir.path(), "--epochs",
                             "2", "--batch", "32", "--lr", "0.003", "--clip-norm", "1", "--seed", seed,
                             "--deterministic", "--quiet", "--device", "cpu", "--out", dir.file(out_name)},
                            out);
  };
  std::string out;
  int rc1 = run("7", "a.safetensors", &out);
  EXPECT_EQ(rc1, 0) << out;
  EXPECT_NE(out.find("2 threads"), std::string::npos) << out;
  int rc2 = run("7", "b.safetensors", &out);
  EXPECT_EQ(rc2, 0) << out;
  int rc3 = run("8", "c.safetensors", &out);
  EXPECT_EQ(rc3, 0) << out;
  if (old) setenv("OMP_NUM_THREADS", saved.c_str(), 1);
  else unsetenv("OMP_NUM_THREADS");
  std::string a = cnntest::read_file(dir.file("a.safetensors")), b = cnntest::read_file(dir.file("b.safetensors"));
  std::string c = cnntest::read_file(dir.file("c.safetensors"));
  ASSERT_GT(a.size(), 10000u);
  EXPECT_TRUE(a == b) << "same seed, two processes: the model files differ";
  EXPECT_FALSE(a == c) << "another seed gave the same model file";
}

}  // namespace
