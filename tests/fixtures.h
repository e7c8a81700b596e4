// Fixtures shared by the suites that build networks on the CPU backend: the backend, and the quadrant task.
#pragma once

#include <stdint.h>

#include <initializer_list>
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

// n images of h x w x c floats and their labels (all zero until a task fills them), and `ds` (num_classes classes)
// pointing into the vectors: the base of the synthetic tasks.
struct HostDataset {
  std::vector<float> images;
  std::vector<int32_t> labels;
  cnn_dataset ds{};
  HostDataset(int n, int h, int w, int c, int num_classes);
  HostDataset(const HostDataset &) = delete;
  HostDataset &operator=(const HostDataset &) = delete;
};

// Noise: every pixel uniform in [0, 1), every label uniform in [0, num_classes), drawn from cnn_rng(seed) (the
// pixels first).
struct RandomTask : HostDataset {
  RandomTask(int n, int h, int w, int c, int num_classes, uint64_t seed);
};

// A synthetic 4-class task: a bright 3x3 square in one quadrant of a noisy 12x12 image (pixels in [0, 1]); the
// label is the quadrant.
struct Quadrants : HostDataset {
  Quadrants(int n, uint64_t seed);
};

// The quadrant task of n images (seed) as MNIST's IDX files DIR/PREFIX-images-idx3-ubyte and
// DIR/PREFIX-labels-idx1-ubyte (pixels rounded to 8 bits), for `--data mnist:DIR` (prefixes "train" and "t10k").
void write_quadrant_idx(const std::string &dir, const std::string &prefix, int n, uint64_t seed);

// Another quadrant task (3x3 bright squares drawn from cnn_rng(seed), ntrain then ntest images) as the IDX files
// of `--data mnist:DIR`: DIR/train-* and DIR/t10k-*. Creates DIR (a fatal assertion when it cannot).
void write_idx_squares(const std::string &dir, int ntrain, int ntest, uint64_t seed);

// A tensor's elements on the host (an expectation fails when it cannot be read), and back into the tensor (a fatal
// assertion when it cannot be written).
std::vector<float> read_tensor(const cnn_tensor *t);
void write_tensor(cnn_tensor *t, const std::vector<float> &v);

// Every tensor a model file holds (weights and statistics), in model-file order.
std::vector<float> saved_weights(const cnn_net *net);

// The names in a directory, sorted; "." and ".." never, other names that start with '.' (temporary files) only
// with `hidden`. Empty when it cannot be read.
std::vector<std::string> list_dir(const std::string &dir, bool hidden);

// A fresh network from net_text (seed) trained under cfg: its history (cfg.epochs entries) and saved weights. Fatal
// assertions when it fails.
void train_fresh(const char *net_text, cnn_backend *b, uint64_t seed, const cnn_dataset *train,
                 const cnn_dataset *val, const cnn_train_config &cfg, std::vector<cnn_epoch_stats> *history,
                 std::vector<float> *weights);

// cfg writes a checkpoint into dir (which must outlive cfg) every `steps` steps and keeps them all.
void keep_every_checkpoint(cnn_train_config *cfg, const std::string &dir, int steps);

// The same from net_text (seed 99) trained from the checkpoint `path` (writing its own checkpoints to a temporary
// folder).
void train_resumed(const char *net_text, cnn_backend *b, const cnn_dataset *train, const cnn_dataset *val,
                   const cnn_train_config &cfg, const std::string &path, std::vector<cnn_epoch_stats> *history,
                   std::vector<float> *weights);

// Training from net_text resumed from each of the checkpoints `files` in `dir` (train_resumed) ends as the
// uninterrupted run did (want, want_w): the same weights bit for bit, and every epoch's number, loss, accuracy,
// validation loss, learning rate and sparsity.
void expect_resumes_match(const char *net_text, cnn_backend *b, const cnn_dataset *train, const cnn_dataset *val,
                          const cnn_train_config &cfg, const std::string &dir, const std::vector<std::string> &files,
                          const std::vector<cnn_epoch_stats> &want, const std::vector<float> &want_w);

// The checkpoints a run wrote in dir (ckpt-*.safetensors), sorted.
std::vector<std::string> checkpoints_in(const std::string &dir);

// Expects `text` (a program's output) to contain every one of `parts`; a failure names the part and shows the text.
void expect_contains_all(const std::string &text, std::initializer_list<const char *> parts);

// Arguments that the cnn program must refuse, and a part of its message.
struct RefusedArgs {
  std::vector<std::string> args;
  std::string message;
};

// Runs the cnn program with `base` then each case's arguments: it fails (with exit status `status` when that is
// not 0: 2 for a usage error) and its output holds the case's message.
void expect_refused(const std::vector<std::string> &base, const std::vector<RefusedArgs> &cases, int status);

// A model definition that cnn_net_from_text (as file `name`) must refuse, with `message` in the error.
void expect_refused_definition(cnn_backend *b, const char *text, const char *name, const char *message);

// The mean loss over the staged batch of n images: a training-mode forward, the loss with its training options.
double mean_loss(cnn_net *net, int n);

// Every parameter tensor's gradient at the staged batch of n images against central differences (step 1e-2) of
// mean_loss, at `samples` weights drawn per tensor, compared in aggregate per tensor: float32 differences through
// ReLUs and max-pools are noisy one by one. `checked` (when given) counts the weights compared.
void check_gradients(cnn_net *net, int n, int samples, double tolerance, int *checked = nullptr);

// A config struct as its C defaults function (cnn_..._config_defaults) fills it.
template <class Config>
Config defaults_of(void (*fill)(Config *)) {
  Config c;
  fill(&c);
  return c;
}

// cnn_train_config_defaults with `epochs` and `batch_size`, and no progress bar.
cnn_train_config quiet_train_config(int epochs, int batch_size);

// cnn_attack_config_defaults with the method, eps and steps given.
cnn_attack_config attack_config(cnn_attack_method method, float eps, int steps);

}  // namespace cnntest
