#include "tests/fixtures.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cmath>
#include <cstring>

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>

extern "C" {
#include "core/nn/net.h"
#include "core/rng.h"
#include "core/train/checkpoint.h"
}
#include "tests/util.h"

namespace cnntest {

CpuBackend::CpuBackend() { EXPECT_EQ(cnn_backend_create("cpu", &b), CNN_OK) << cnn_last_error(); }

CpuBackend::~CpuBackend() { cnn_backend_destroy(b); }

HostDataset::HostDataset(int n, int h, int w, int c, int num_classes)
    : images((size_t)n * h * w * c), labels((size_t)n) {
  ds.n = n;
  ds.h = h;
  ds.w = w;
  ds.c = c;
  ds.images = images.data();
  ds.labels = labels.data();
  ds.num_classes = num_classes;
}

RandomTask::RandomTask(int n, int h, int w, int c, int num_classes, uint64_t seed)
    : HostDataset(n, h, w, c, num_classes) {
  cnn_rng r;
  cnn_rng_seed(&r, seed);
  for (float &x : images) x = cnn_rng_uniform(&r);
  for (int32_t &l : labels) l = (int32_t)cnn_rng_below(&r, (uint32_t)num_classes);
}

Quadrants::Quadrants(int n, uint64_t seed) : HostDataset(n, 12, 12, 1, 4) {
  cnn_rng r;
  cnn_rng_seed(&r, seed);
  for (int i = 0; i < n; i++) {
    const int k = (int)cnn_rng_below(&r, 4);
    labels[i] = k;
    float *img = &images[(size_t)i * 144];
    for (int p = 0; p < 144; p++) img[p] = 0.3f * cnn_rng_uniform(&r);
    const int y0 = (k / 2) * 6 + 1 + (int)cnn_rng_below(&r, 3), x0 = (k % 2) * 6 + 1 + (int)cnn_rng_below(&r, 3);
    for (int y = 0; y < 3; y++)
      for (int x = 0; x < 3; x++) img[(y0 + y) * 12 + x0 + x] = 0.7f + 0.3f * cnn_rng_uniform(&r);
  }
}

static void put_be32(std::string *s, uint32_t v) {
  for (int i = 3; i >= 0; i--) s->push_back((char)((v >> (8 * i)) & 0xff));
}

void write_quadrant_idx(const std::string &dir, const std::string &prefix, int n, uint64_t seed) {
  const Quadrants quad(n, seed);
  std::string img, lab;
  put_be32(&img, 0x803);
  put_be32(&img, (uint32_t)n);
  put_be32(&img, 12);
  put_be32(&img, 12);
  for (float v : quad.images) img.push_back((char)(unsigned char)std::lround(v * 255.0f));
  put_be32(&lab, 0x801);
  put_be32(&lab, (uint32_t)n);
  for (int32_t l : quad.labels) lab.push_back((char)l);
  write_file(dir + "/" + prefix + "-images-idx3-ubyte", img);
  write_file(dir + "/" + prefix + "-labels-idx1-ubyte", lab);
}

void write_idx_squares(const std::string &dir, int ntrain, int ntest, uint64_t seed) {
  ASSERT_EQ(mkdir(dir.c_str(), 0755), 0) << dir << ": " << strerror(errno);
  cnn_rng r;
  cnn_rng_seed(&r, seed);
  for (int split = 0; split < 2; split++) {
    int n = split ? ntest : ntrain;
    std::string images, labels;
    put_be32(&images, 0x00000803);
    put_be32(&images, (uint32_t)n);
    put_be32(&images, 12);
    put_be32(&images, 12);
    put_be32(&labels, 0x00000801);
    put_be32(&labels, (uint32_t)n);
    for (int i = 0; i < n; i++) {
      int k = (int)cnn_rng_below(&r, 4);
      labels += (char)k;
      unsigned char img[144];
      for (auto &p : img) p = (unsigned char)cnn_rng_below(&r, 90);
      int y0 = (k / 2) * 6 + 1 + (int)cnn_rng_below(&r, 3), x0 = (k % 2) * 6 + 1 + (int)cnn_rng_below(&r, 3);
      for (int y = 0; y < 3; y++)
        for (int x = 0; x < 3; x++) img[(y0 + y) * 12 + x0 + x] = (unsigned char)(170 + cnn_rng_below(&r, 86));
      images.append((const char *)img, 144);
    }
    std::string prefix = dir + (split ? "/t10k-" : "/train-");
    write_file(prefix + "images-idx3-ubyte", images);
    write_file(prefix + "labels-idx1-ubyte", labels);
  }
}

std::vector<float> read_tensor(const cnn_tensor *t) {
  std::vector<float> v((size_t)cnn_tensor_numel(t));
  EXPECT_EQ(cnn_tensor_read(t, v.data(), v.size() * sizeof(float)), CNN_OK) << cnn_last_error();
  return v;
}

void write_tensor(cnn_tensor *t, const std::vector<float> &v) {
  ASSERT_EQ(cnn_tensor_write(t, v.data(), v.size() * sizeof(float)), CNN_OK) << cnn_last_error();
}

std::vector<float> saved_weights(const cnn_net *net) {
  std::vector<float> w((size_t)cnn_net_saved_floats(net));
  EXPECT_EQ(cnn_net_snapshot(net, w.data()), CNN_OK) << cnn_last_error();
  return w;
}

std::vector<std::string> list_dir(const std::string &dir, bool hidden) {
  std::vector<std::string> names;
  DIR *d = opendir(dir.c_str());
  if (!d) return names;
  while (dirent *e = readdir(d)) {
    const std::string n = e->d_name;
    if (n != "." && n != ".." && (hidden || n[0] != '.')) names.push_back(n);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

void train_resumed(const char *net_text, cnn_backend *b, const cnn_dataset *train, const cnn_dataset *val,
                   const cnn_train_config &cfg, const std::string &path, std::vector<cnn_epoch_stats> *history,
                   std::vector<float> *weights) {
  TempDir other;
  cnn_train_config rc = cfg;
  rc.resume_from = path.c_str();
  rc.checkpoint_dir = other.path().c_str();
  train_fresh(net_text, b, 99, train, val, rc, history, weights);
}

void train_fresh(const char *net_text, cnn_backend *b, uint64_t seed, const cnn_dataset *train,
                 const cnn_dataset *val, const cnn_train_config &cfg, std::vector<cnn_epoch_stats> *history,
                 std::vector<float> *weights) {
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(net_text, "resume", b, seed, &net), CNN_OK) << cnn_last_error();
  history->assign((size_t)cfg.epochs, cnn_epoch_stats{});
  const cnn_status st = cnn_train(net, train, val, &cfg, history->data());
  if (st == CNN_OK) *weights = saved_weights(net);
  cnn_net_destroy(net);
  ASSERT_EQ(st, CNN_OK) << (cfg.resume_from ? cfg.resume_from : "") << ": " << cnn_last_error();
}

void keep_every_checkpoint(cnn_train_config *cfg, const std::string &dir, int steps) {
  cfg->checkpoint_dir = dir.c_str();
  cfg->checkpoint_every = steps;
  cfg->checkpoint_in_steps = 1;
  cfg->keep_checkpoints = 1000;
}

void expect_resumes_match(const char *net_text, cnn_backend *b, const cnn_dataset *train, const cnn_dataset *val,
                          const cnn_train_config &cfg, const std::string &dir, const std::vector<std::string> &files,
                          const std::vector<cnn_epoch_stats> &want, const std::vector<float> &want_w) {
  for (const auto &f : files) {
    std::vector<cnn_epoch_stats> got;
    std::vector<float> got_w;
    ASSERT_NO_FATAL_FAILURE(train_resumed(net_text, b, train, val, cfg, dir + "/" + f, &got, &got_w));
    ASSERT_EQ(got_w.size(), want_w.size());
    EXPECT_EQ(std::memcmp(got_w.data(), want_w.data(), want_w.size() * sizeof(float)), 0) << "from " << f;
    for (int e = 0; e < cfg.epochs; e++) {
      EXPECT_EQ(got[e].epoch, e + 1) << f;
      EXPECT_EQ(got[e].loss, want[e].loss) << f << " epoch " << e + 1;
      EXPECT_EQ(got[e].accuracy, want[e].accuracy) << f << " epoch " << e + 1;
      EXPECT_EQ(got[e].val_loss, want[e].val_loss) << f << " epoch " << e + 1;
      EXPECT_EQ(got[e].lr, want[e].lr) << f << " epoch " << e + 1;
      EXPECT_EQ(got[e].sparsity, want[e].sparsity) << f << " epoch " << e + 1;
    }
  }
}

std::vector<std::string> checkpoints_in(const std::string &dir) {
  std::vector<std::string> out;
  for (const auto &n : list_dir(dir, false))
    if (n.rfind("ckpt-", 0) == 0 && n.size() > 12 && n.substr(n.size() - 12) == ".safetensors") out.push_back(n);
  return out;
}

void expect_contains_all(const std::string &text, std::initializer_list<const char *> parts) {
  for (const char *part : parts) EXPECT_NE(text.find(part), std::string::npos) << "no '" << part << "' in:\n" << text;
}

void expect_refused(const std::vector<std::string> &base, const std::vector<RefusedArgs> &cases, int status) {
  for (const auto &c : cases) {
    std::vector<std::string> args = base;
    args.insert(args.end(), c.args.begin(), c.args.end());
    std::string out;
    const int rc = run_cnn(args, &out);
    if (status) EXPECT_EQ(rc, status) << out;
    else EXPECT_NE(rc, 0) << out;
    EXPECT_TRUE(has(out, c.message)) << "expected '" << c.message << "' in: " << out;
  }
}

void expect_refused_definition(cnn_backend *b, const char *text, const char *name, const char *message) {
  cnn_net *net = nullptr;
  cnn_status st = cnn_net_from_text(text, name, b, 1, &net);
  EXPECT_NE(st, CNN_OK) << text;
  EXPECT_EQ(net, nullptr);
  EXPECT_NE(std::string(cnn_last_error()).find(message), std::string::npos)
      << "definition:\n" << text << "message: " << cnn_last_error() << "\nexpected: " << message;
}

double mean_loss(cnn_net *net, int n) {
  EXPECT_EQ(cnn_net_forward(net, 1), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_loss(net, 1), CNN_OK) << cnn_last_error();
  std::vector<float> losses(n);
  EXPECT_EQ(cnn_tensor_read(net->losses, losses.data(), n * sizeof(float)), CNN_OK);
  double s = 0;
  for (float l : losses) s += l;
  return s / n;
}

void check_gradients(cnn_net *net, int n, int samples, double tolerance, int *checked) {
  ASSERT_EQ(cnn_net_forward(net, 1), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_loss(net, 1), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_backward(net), CNN_OK) << cnn_last_error();
  cnn_rng pick;
  cnn_rng_seed(&pick, 5);
  const float eps = 1e-2f;
  for (int li = 0; li < net->nlayers; li++) {
    cnn_layer *l = net->layers[li];
    for (int pi = 0; pi < l->nparams; pi++) {
      cnn_param *p = &l->params[pi];
      int64_t count = cnn_tensor_numel(p->value);
      std::vector<float> w = read_tensor(p->value), g = read_tensor(p->grad);
      ASSERT_EQ(w.size(), (size_t)count);
      ASSERT_EQ(g.size(), (size_t)count);
      double num2 = 0, diff2 = 0;
      for (int t = 0; t < samples; t++) {
        int64_t i = cnn_rng_below(&pick, (uint32_t)count);
        float orig = w[i];
        w[i] = orig + eps;
        ASSERT_NO_FATAL_FAILURE(write_tensor(p->value, w));
        double lp = mean_loss(net, n);
        w[i] = orig - eps;
        ASSERT_NO_FATAL_FAILURE(write_tensor(p->value, w));
        double lm = mean_loss(net, n);
        w[i] = orig;
        ASSERT_NO_FATAL_FAILURE(write_tensor(p->value, w));
        double numeric = (lp - lm) / (2.0 * eps);
        num2 += numeric * numeric + g[i] * (double)g[i];
        diff2 += (numeric - g[i]) * (numeric - g[i]);
        if (checked) ++*checked;
      }
      EXPECT_LT(std::sqrt(diff2 / (num2 + 1e-12)), tolerance) << p->name;
    }
  }
}

cnn_train_config quiet_train_config(int epochs, int batch_size) {
  cnn_train_config cfg = defaults_of(cnn_train_config_defaults);
  cfg.epochs = epochs;
  cfg.batch_size = batch_size;
  cfg.progress = nullptr;
  return cfg;
}

cnn_attack_config attack_config(cnn_attack_method method, float eps, int steps) {
  cnn_attack_config cfg = defaults_of(cnn_attack_config_defaults);
  cfg.method = method;
  cfg.eps = eps;
  cfg.steps = steps;
  return cfg;
}

}  // namespace cnntest
