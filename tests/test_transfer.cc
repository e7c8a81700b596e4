// Transfer learning: frozen layers keep their weights and batchnorm statistics and get neither gradients nor
// optimizer state; a replaced head is new while the body is kept; weights of a torchvision ResNet saved from
// PyTorch as safetensors load into samples/models/resnet18.cnn and resnet50.cnn and give the outputs of an
// independent NCHW reference of torchvision's network.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/io/safetensors.h"
#include "core/nn/net.h"
#include "core/nn/optim.h"
#include "core/rng.h"
#include "core/train/checkpoint.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::TempDir;

using Backend = cnntest::CpuBackend;

using cnntest::has;

using cnntest::read_tensor;

const char *kNet =
    "input 8 8 1\n"
    "conv 4 3 padding=same bias=no\n"
    "batchnorm relu\n"
    "conv 4 3 relu padding=same\n"
    "flatten\n"
    "dense 8 relu\n"
    "dense 5 softmax   # the head\n";

TEST(Freeze, FrozenLayersKeepWeightsAndStatisticsAndGetNoGradientsOrOptimizerState) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "freeze", be.b, 1, &net), CNN_OK) << cnn_last_error();
  int64_t all = cnn_net_param_count(net);
  int frozen = 0;
  ASSERT_EQ(cnn_net_freeze(net, "batch_normalization", &frozen), CNN_OK) << cnn_last_error();
  EXPECT_EQ(frozen, 2);
  EXPECT_EQ(cnn_net_frozen_layers(net), 2);
  EXPECT_EQ(cnn_net_param_count(net), all - 36 - 8);  // conv2d (4x3x3x1) and batchnorm's gamma, beta
  std::vector<std::vector<float>> before;
  for (int i = 0; i < net->nlayers; i++) {
    for (int p = 0; p < net->layers[i]->nparams; p++) before.push_back(read_tensor(net->layers[i]->params[p].value));
    for (int p = 0; p < net->layers[i]->nstate; p++) before.push_back(read_tensor(net->layers[i]->state[p].value));
  }
  cnntest::RandomTask data(64, 8, 8, 1, 5, 3);
  cnn_train_config cfg = cnntest::quiet_train_config(2, 16);
  ASSERT_EQ(cnn_train(net, &data.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  size_t k = 0;
  for (int i = 0; i < net->nlayers; i++) {
    const cnn_layer *l = net->layers[i];
    for (int p = 0; p < l->nparams + l->nstate; p++, k++) {
      const cnn_param *pr = p < l->nparams ? &l->params[p] : &l->state[p - l->nparams];
      if (i < 2) {
        EXPECT_EQ(read_tensor(pr->value), before[k]) << pr->name << " is frozen";
      } else if (p < l->nparams) {
        EXPECT_NE(read_tensor(pr->value), before[k]) << pr->name << " trains";
      }
    }
  }
  // no gradient buffers below the first trainable layer; the optimizer holds the trainable ones only
  EXPECT_EQ(net->grads[0], nullptr);
  EXPECT_EQ(net->grads[1], nullptr);
  EXPECT_NE(net->grads[2], nullptr);
  cnn_optimizer *opt = nullptr;
  ASSERT_EQ(cnn_optimizer_create(net, &cfg, &opt), CNN_OK);
  EXPECT_EQ(opt->nparams, 6);  // conv2d_1, dense, dense_1: weight and bias each
  for (int i = 0; i < opt->nparams; i++) EXPECT_EQ(std::string(opt->params[i]->name).find("batch"), std::string::npos);
  cnn_optimizer_destroy(opt);

  // unfreezing trains everything again
  ASSERT_EQ(cnn_net_freeze(net, nullptr, &frozen), CNN_OK);
  EXPECT_EQ(frozen, 0);
  EXPECT_EQ(cnn_net_param_count(net), all);
  ASSERT_EQ(cnn_train(net, &data.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  EXPECT_NE(read_tensor(net->layers[0]->params[0].value), before[0]);
  EXPECT_NE(net->grads[0], nullptr);
  cnn_net_destroy(net);
}

TEST(Freeze, NamesACountOrRefuses) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "freeze", be.b, 1, &net), CNN_OK);
  int n = -1;
  ASSERT_EQ(cnn_net_freeze(net, "3", &n), CNN_OK);
  EXPECT_EQ(n, 3);
  EXPECT_EQ(cnn_net_freeze(net, "conv2d_7", &n), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(has(cnn_last_error(), "no layer named 'conv2d_7'")) << cnn_last_error();
  EXPECT_EQ(cnn_net_freeze(net, "dense_1", &n), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "leaves no layer with weights to train")) << cnn_last_error();
  EXPECT_EQ(cnn_net_freeze(net, "99", &n), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_net_frozen_layers(net), 3);  // unchanged by the refusals
  cnn_net_destroy(net);
}

// A fine-tuned model file records its frozen prefix: loading restores it and cnn summary's estimate counts those
// weights as non-trainable; a model with nothing frozen is written as before (no key); a bad count is refused.
TEST(Freeze, TheModelFileKeepsTheFrozenLayers) {
  Backend be;
  TempDir dir;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "freeze", be.b, 1, &net), CNN_OK) << cnn_last_error();
  const int64_t all = cnn_net_param_count(net);
  const std::string plain = dir.path() + "/plain.safetensors", tuned = dir.path() + "/tuned.safetensors";
  ASSERT_EQ(cnn_net_save(net, plain.c_str()), CNN_OK) << cnn_last_error();
  int frozen = 0;
  ASSERT_EQ(cnn_net_freeze(net, "batch_normalization", &frozen), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_save(net, tuned.c_str()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);

  cnn_st_file *f = nullptr;
  ASSERT_EQ(cnn_st_read(plain.c_str(), &f), CNN_OK);
  EXPECT_EQ(cnn_st_meta(f, "frozen_layers"), nullptr);
  cnn_st_free(f);
  ASSERT_EQ(cnn_st_read(tuned.c_str(), &f), CNN_OK);
  ASSERT_NE(cnn_st_meta(f, "frozen_layers"), nullptr);
  EXPECT_STREQ(cnn_st_meta(f, "frozen_layers"), "2");

  ASSERT_EQ(cnn_net_load(tuned.c_str(), be.b, &net), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_frozen_layers(net), 2);
  EXPECT_EQ(cnn_net_param_count(net), all - 36 - 8);
  cnn_net_destroy(net);
  ASSERT_EQ(cnn_net_load(plain.c_str(), be.b, &net), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_frozen_layers(net), 0);
  cnn_net_destroy(net);

  cnn_memory_config mc{};
  mc.batch = 1;
  cnn_memory_estimate *e = nullptr;
  ASSERT_EQ(cnn_memory_estimate_file(tuned.c_str(), &mc, &e), CNN_OK) << cnn_last_error();
  EXPECT_EQ(e->trainable, all - 36 - 8);
  EXPECT_EQ(e->non_trainable, 36 + 8 + 8);  // the frozen weights and batchnorm's statistics
  cnn_memory_estimate_destroy(e);

  // the same file with a count past the network's layers, or not a number: refused, naming the key
  for (const char *bad : {"9", "-1", "two"}) {
    std::vector<const char *> keys, values;
    for (int i = 0; i < f->meta_count; i++) {
      keys.push_back(f->meta_keys[i]);
      values.push_back(strcmp(f->meta_keys[i], "frozen_layers") ? f->meta_values[i] : bad);
    }
    std::vector<cnn_st_entry> entries;
    for (int i = 0; i < f->count; i++)
      entries.push_back({f->tensors[i].name, f->tensors[i].dtype, f->tensors[i].ndim, f->tensors[i].shape,
                         f->data + f->tensors[i].offset});
    const std::string broken = dir.path() + "/broken.safetensors";
    ASSERT_EQ(cnn_st_write(broken.c_str(), entries.data(), (int)entries.size(), keys.data(), values.data(),
                           (int)keys.size()), CNN_OK) << cnn_last_error();
    EXPECT_NE(cnn_net_load(broken.c_str(), be.b, &net), CNN_OK) << bad;
    EXPECT_TRUE(has(cnn_last_error(), "frozen_layers")) << cnn_last_error();
    EXPECT_NE(cnn_memory_estimate_file(broken.c_str(), &mc, &e), CNN_OK) << bad;
    EXPECT_TRUE(has(cnn_last_error(), "frozen_layers")) << cnn_last_error();
  }
  cnn_st_free(f);
}

TEST(ReplaceHead, KeepsTheBodyAndGivesANewClassifier) {
  Backend be;
  cnn_net *net = nullptr, *fresh = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "head", be.b, 1, &net), CNN_OK);
  float mean = 0.5f, std = 0.25f;
  ASSERT_EQ(cnn_net_set_normalization(net, 1, &mean, &std), CNN_OK);
  ASSERT_EQ(cnn_net_replace_head(net, 3, 7, &fresh), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_num_outputs(fresh), 3);
  EXPECT_TRUE(has(cnn_net_definition(fresh), "dense 3 softmax   # the head")) << cnn_net_definition(fresh);
  for (int i = 0; i + 1 < net->nlayers; i++)
    for (int p = 0; p < net->layers[i]->nparams; p++)
      EXPECT_EQ(read_tensor(fresh->layers[i]->params[p].value), read_tensor(net->layers[i]->params[p].value)) << i;
  const cnn_layer *head = fresh->layers[fresh->nlayers - 1];
  EXPECT_EQ(head->params[0].value->shape[0], 3);
  EXPECT_EQ(head->params[0].value->shape[1], 8);
  float m2, s2;
  ASSERT_EQ(cnn_net_normalization(fresh, &m2, &s2), 1);
  EXPECT_EQ(m2, mean);
  // the same number of classes still gives a new (re-initialized) head
  cnn_net *same = nullptr;
  ASSERT_EQ(cnn_net_replace_head(net, 5, 8, &same), CNN_OK);
  EXPECT_NE(read_tensor(same->layers[same->nlayers - 1]->params[0].value),
            read_tensor(net->layers[net->nlayers - 1]->params[0].value));
  // init-from copies what fits: everything but the head
  int copied = 0, kept = 0;
  TempDir dir;
  ASSERT_EQ(cnn_net_save(net, dir.file("m.safetensors").c_str()), CNN_OK);
  cnn_net_destroy(same);
  same = nullptr;
  ASSERT_EQ(cnn_net_replace_head(net, 3, 9, &same), CNN_OK);
  ASSERT_EQ(cnn_net_init_from(same, dir.file("m.safetensors").c_str(), &copied, &kept), CNN_OK) << cnn_last_error();
  EXPECT_EQ(copied, 9);  // conv2d.weight, gamma, beta, running mean/var, conv2d_1 weight+bias, dense weight+bias
  EXPECT_EQ(kept, 2);    // the 3-class head
  cnn_net_destroy(same);
  cnn_net_destroy(fresh);
  cnn_net_destroy(net);
}

// ---- PyTorch state_dicts of torchvision ResNets ----------------------------------------------------------------

struct TorchTensor {
  std::string dtype = "F32";
  std::vector<int64_t> shape;
  std::vector<float> value;    // what the tensor means
  std::string bytes;           // how it is stored
};
using StateDict = std::map<std::string, TorchTensor>;

// safetensors by hand, names sorted (as safetensors.torch.save_file writes them), I64 allowed
void write_state_dict(const std::string &path, const StateDict &sd) {
  std::string header = "{\"__metadata__\":{\"format\":\"pt\"}", data;
  for (const auto &kv : sd) {
    header += ",\"" + kv.first + "\":{\"dtype\":\"" + kv.second.dtype + "\",\"shape\":[";
    for (size_t i = 0; i < kv.second.shape.size(); i++) header += (i ? "," : "") + std::to_string(kv.second.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + kv.second.bytes.size()) + "]}";
    data += kv.second.bytes;
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) out[i] = (char)((uint64_t)header.size() >> (8 * i));
  cnntest::write_file(path, out + header + data);
}

struct Builder {
  StateDict sd;
  cnn_rng rng;
  explicit Builder(uint64_t seed) { cnn_rng_seed(&rng, seed); }
  void f32(const std::string &name, std::vector<int64_t> shape, float scale, float offset, bool normal) {
    TorchTensor t;
    t.shape = shape;
    int64_t n = 1;
    for (auto d : shape) n *= d;
    t.value.resize((size_t)n);
    for (auto &v : t.value) v = offset + scale * (normal ? cnn_rng_normal(&rng) : 2.0f * cnn_rng_uniform(&rng) - 1.0f);
    t.bytes.assign((const char *)t.value.data(), t.value.size() * 4);
    sd[name] = std::move(t);
  }
  void conv(const std::string &name, int o, int i, int k) {
    f32(name + ".weight", {o, i, k, k}, std::sqrt(2.0f / (float)(i * k * k)), 0.0f, true);
  }
  void bn(const std::string &name, int c) {
    f32(name + ".weight", {c}, 0.3f, 1.0f, false);
    f32(name + ".bias", {c}, 0.1f, 0.0f, false);
    f32(name + ".running_mean", {c}, 0.1f, 0.0f, false);
    f32(name + ".running_var", {c}, 0.4f, 1.0f, false);
    TorchTensor t;  // PyTorch saves this I64 counter with every batchnorm
    t.dtype = "I64";
    t.bytes.assign(8, '\0');
    t.bytes[0] = 7;
    sd[name + ".num_batches_tracked"] = t;
  }
};

// torchvision.models.resnet18 (basic blocks) or resnet50 (bottlenecks, stride on the 3x3: "v1.5")
StateDict torchvision_resnet(bool bottleneck, uint64_t seed) {
  Builder b(seed);
  b.conv("conv1", 64, 3, 7);
  b.bn("bn1", 64);
  const int blocks18[4] = {2, 2, 2, 2}, blocks50[4] = {3, 4, 6, 3};
  int in = 64;
  for (int s = 0; s < 4; s++) {
    int width = 64 << s, out = bottleneck ? width * 4 : width;
    for (int k = 0; k < (bottleneck ? blocks50 : blocks18)[s]; k++) {
      std::string p = "layer" + std::to_string(s + 1) + "." + std::to_string(k);
      if (bottleneck) {
        b.conv(p + ".conv1", width, in, 1);
        b.bn(p + ".bn1", width);
        b.conv(p + ".conv2", width, width, 3);
        b.bn(p + ".bn2", width);
        b.conv(p + ".conv3", out, width, 1);
        b.bn(p + ".bn3", out);
      } else {
        b.conv(p + ".conv1", width, in, 3);
        b.bn(p + ".bn1", width);
        b.conv(p + ".conv2", width, width, 3);
        b.bn(p + ".bn2", width);
      }
      if (k == 0 && (s > 0 || bottleneck)) {
        b.conv(p + ".downsample.0", out, in, 1);
        b.bn(p + ".downsample.1", out);
      }
      in = out;
    }
  }
  b.f32("fc.weight", {1000, in}, 1.0f / std::sqrt((float)in), 0.0f, true);
  b.f32("fc.bias", {1000}, 0.1f, 0.0f, false);
  return b.sd;
}

// fc.weight as BF16 (the top half of each float) and fc.bias as F16 (sign, exponent 10..14, random mantissa):
// the import must widen both; the reference uses the values they denote.
void store_head_in_half_precision(StateDict *sd, uint64_t seed) {
  TorchTensor &w = (*sd)["fc.weight"];
  w.dtype = "BF16";
  w.bytes.clear();
  for (auto &v : w.value) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits &= 0xFFFF0000u;
    std::memcpy(&v, &bits, 4);
    w.bytes += (char)(bits >> 16);
    w.bytes += (char)(bits >> 24);
  }
  TorchTensor &bias = (*sd)["fc.bias"];
  bias.dtype = "F16";
  bias.bytes.clear();
  cnn_rng r;
  cnn_rng_seed(&r, seed);
  for (auto &v : bias.value) {
    uint32_t sign = cnn_rng_below(&r, 2), e = 10 + cnn_rng_below(&r, 5), m = cnn_rng_below(&r, 1024);
    uint16_t h = (uint16_t)(sign << 15 | e << 10 | m);
    v = (sign ? -1.0f : 1.0f) * std::ldexp(1.0f + (float)m / 1024.0f, (int)e - 15);
    bias.bytes += (char)(h & 0xFF);
    bias.bytes += (char)(h >> 8);
  }
}

// ---- the reference: torchvision's forward in eval mode, NCHW, OIHW weights, float64 ----

struct Map {
  int c, h, w;
  std::vector<double> v;  // (C, H, W)
  double &at(int ci, int y, int x) { return v[((size_t)ci * h + y) * w + x]; }
  double at(int ci, int y, int x) const { return v[((size_t)ci * h + y) * w + x]; }
};

struct Reference {
  const StateDict &sd;
  const std::vector<float> &t(const std::string &name) const { return sd.at(name).value; }

  Map conv(const Map &x, const std::string &name, int stride, int pad) const {
    const TorchTensor &wt = sd.at(name + ".weight");
    int o = (int)wt.shape[0], k = (int)wt.shape[2];
    Map y{o, (x.h + 2 * pad - k) / stride + 1, (x.w + 2 * pad - k) / stride + 1, {}};
    y.v.assign((size_t)y.c * y.h * y.w, 0.0);
    for (int oc = 0; oc < o; oc++)
      for (int oy = 0; oy < y.h; oy++)
        for (int ox = 0; ox < y.w; ox++) {
          double s = 0;
          for (int ic = 0; ic < x.c; ic++)
            for (int ky = 0; ky < k; ky++)
              for (int kx = 0; kx < k; kx++) {
                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                if (iy < 0 || ix < 0 || iy >= x.h || ix >= x.w) continue;
                s += (double)wt.value[(((size_t)oc * x.c + ic) * k + ky) * k + kx] * x.at(ic, iy, ix);
              }
          y.at(oc, oy, ox) = s;
        }
    return y;
  }
  Map bn(Map x, const std::string &name, bool relu) const {
    const auto &g = t(name + ".weight"), &b = t(name + ".bias"), &m = t(name + ".running_mean"),
               &var = t(name + ".running_var");
    for (int c = 0; c < x.c; c++)
      for (int i = 0; i < x.h * x.w; i++) {
        double &v = x.v[(size_t)c * x.h * x.w + i];
        v = (v - m[c]) / std::sqrt((double)var[c] + 1e-5) * g[c] + b[c];
        if (relu && v < 0) v = 0;
      }
    return x;
  }
  static Map maxpool(const Map &x) {  // 3x3, stride 2, padding 1
    Map y{x.c, (x.h - 1) / 2 + 1, (x.w - 1) / 2 + 1, {}};
    y.v.assign((size_t)y.c * y.h * y.w, -INFINITY);
    for (int c = 0; c < x.c; c++)
      for (int oy = 0; oy < y.h; oy++)
        for (int ox = 0; ox < y.w; ox++)
          for (int ky = 0; ky < 3; ky++)
            for (int kx = 0; kx < 3; kx++) {
              int iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx;
              if (iy >= 0 && ix >= 0 && iy < x.h && ix < x.w) y.at(c, oy, ox) = std::max(y.at(c, oy, ox), x.at(c, iy, ix));
            }
    return y;
  }
  static Map add_relu(Map a, const Map &b) {
    for (size_t i = 0; i < a.v.size(); i++) a.v[i] = std::max(0.0, a.v[i] + b.v[i]);
    return a;
  }
  Map block(const Map &x, const std::string &p, int stride, bool bottleneck) const {
    Map y;
    if (bottleneck) {
      y = bn(conv(x, p + ".conv1", 1, 0), p + ".bn1", true);
      y = bn(conv(y, p + ".conv2", stride, 1), p + ".bn2", true);
      y = bn(conv(y, p + ".conv3", 1, 0), p + ".bn3", false);
    } else {
      y = bn(conv(x, p + ".conv1", stride, 1), p + ".bn1", true);
      y = bn(conv(y, p + ".conv2", 1, 1), p + ".bn2", false);
    }
    Map id = sd.count(p + ".downsample.0.weight") ? bn(conv(x, p + ".downsample.0", stride, 0), p + ".downsample.1", false) : x;
    return add_relu(y, id);
  }
  std::vector<double> logits(const Map &image, bool bottleneck) const {
    Map x = maxpool(bn(conv(image, "conv1", 2, 3), "bn1", true));
    const int blocks18[4] = {2, 2, 2, 2}, blocks50[4] = {3, 4, 6, 3};
    for (int s = 0; s < 4; s++)
      for (int k = 0; k < (bottleneck ? blocks50 : blocks18)[s]; k++)
        x = block(x, "layer" + std::to_string(s + 1) + "." + std::to_string(k), k == 0 && s > 0 ? 2 : 1, bottleneck);
    const auto &w = t("fc.weight"), &b = t("fc.bias");
    std::vector<double> out(1000);
    for (int o = 0; o < 1000; o++) {
      double s = b[o];
      for (int c = 0; c < x.c; c++) {
        double mean = 0;
        for (int i = 0; i < x.h * x.w; i++) mean += x.v[(size_t)c * x.h * x.w + i];
        s += w[(size_t)o * x.c + c] * mean / (x.h * x.w);
      }
      out[o] = s;
    }
    return out;
  }
};

std::string sample_definition(const char *file, int size) {
  std::string text = cnntest::read_file(std::string(CNN_SOURCE_DIR) + "/samples/models/" + file);
  size_t at = text.find("input 224 224 3");
  EXPECT_NE(at, std::string::npos);
  text.replace(at, 15, "input " + std::to_string(size) + " " + std::to_string(size) + " 3");
  return text;
}

// Loads the state_dict into the sample definition as it is (224x224), then into the same layers at 32x32 and
// compares the class probabilities of two images with the reference's softmax.
void check_resnet(const char *file, bool bottleneck, uint64_t seed) {
  Backend be;
  TempDir dir;
  StateDict sd = torchvision_resnet(bottleneck, seed);
  if (!bottleneck) store_head_in_half_precision(&sd, seed + 1);
  std::string path = dir.file("resnet.safetensors");
  write_state_dict(path, sd);
  std::string sample = std::string(CNN_SOURCE_DIR) + "/samples/models/" + file;
  cnn_net *full = nullptr;
  ASSERT_EQ(cnn_net_from_file(sample.c_str(), be.b, 1, &full), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_import_torch(full, path.c_str()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(full);

  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(sample_definition(file, 32).c_str(), file, be.b, 1, &net), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_import_torch(net, path.c_str()), CNN_OK) << cnn_last_error();
  const int n = 2, hw = 32 * 32;
  std::vector<float> nhwc((size_t)n * hw * 3);
  cnn_rng r;
  cnn_rng_seed(&r, seed + 2);
  for (auto &v : nhwc) v = cnn_rng_uniform(&r);
  std::vector<float> probs((size_t)n * 1000);
  ASSERT_EQ(cnn_net_predict(net, nhwc.data(), n, probs.data()), CNN_OK) << cnn_last_error();
  Reference ref{sd};
  for (int i = 0; i < n; i++) {
    Map image{3, 32, 32, std::vector<double>((size_t)3 * hw)};
    for (int c = 0; c < 3; c++)
      for (int p = 0; p < hw; p++) image.v[(size_t)c * hw + p] = nhwc[((size_t)i * hw + p) * 3 + c];
    std::vector<double> z = ref.logits(image, bottleneck);
    double zmax = *std::max_element(z.begin(), z.end()), sum = 0;
    for (double v : z) sum += std::exp(v - zmax);
    double worst = 0, zspread = 0;
    int best = 0, best_ref = 0;
    for (int o = 0; o < 1000; o++) {
      // log-probabilities: a relative comparison, meaningful for the small probabilities of 1000 classes too
      double logp = z[o] - zmax - std::log(sum), got = probs[(size_t)i * 1000 + o];
      if (logp > -20) worst = std::max(worst, std::fabs(std::log(std::max(got, 1e-30)) - logp));
      if (probs[(size_t)i * 1000 + o] > probs[(size_t)i * 1000 + best]) best = o;
      if (z[o] > z[best_ref]) best_ref = o;
      zspread = std::max(zspread, std::fabs(z[o]));
    }
    EXPECT_GT(zspread, 1.0) << "the logits should not be trivially small";
    EXPECT_LT(worst, 2e-3) << file << " image " << i;
    EXPECT_EQ(best, best_ref) << file << " image " << i;
  }
  cnn_net_destroy(net);

  // the fine-tuning entry point takes the same file: every tensor copied, and ImageNet's normalization, which
  // torchvision's weights expect
  ASSERT_EQ(cnn_net_from_text(sample_definition(file, 32).c_str(), file, be.b, 1, &net), CNN_OK);
  int copied = 0, kept = -1, tensors = 0;
  for (int i = 0; i < net->nlayers; i++) tensors += net->layers[i]->nparams + net->layers[i]->nstate;
  ASSERT_EQ(cnn_net_init_from(net, path.c_str(), &copied, &kept), CNN_OK) << cnn_last_error();
  EXPECT_EQ(copied, tensors);
  EXPECT_EQ(kept, 0);
  float mean[3], std[3];
  ASSERT_EQ(cnn_net_normalization(net, mean, std), 1);
  EXPECT_EQ(mean[0], 0.485f);
  EXPECT_EQ(std[2], 0.225f);
  cnn_net_destroy(net);
}

TEST(TorchImport, ResNet18StateDictMatchesTheReference) { check_resnet("resnet18.cnn", false, 11); }

TEST(TorchImport, ResNet50StateDictMatchesTheReference) { check_resnet("resnet50.cnn", true, 21); }

TEST(TorchImport, NamesTheMissingMisshapenOrUnusedTensor) {
  Backend be;
  TempDir dir;
  std::string path = dir.file("bad.safetensors"), sample = std::string(CNN_SOURCE_DIR) + "/samples/models/resnet18.cnn";
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(sample_definition("resnet18.cnn", 32).c_str(), "resnet18", be.b, 1, &net), CNN_OK);
  StateDict sd = torchvision_resnet(false, 5);

  StateDict missing = sd;
  missing.erase("layer3.0.downsample.1.running_var");
  write_state_dict(path, missing);
  EXPECT_EQ(cnn_net_import_torch(net, path.c_str()), CNN_ERR_FORMAT);
  EXPECT_TRUE(has(cnn_last_error(), "'layer3.0.downsample.1.running_var' (for batch_normalization_")) << cnn_last_error();

  StateDict misshapen = sd;
  misshapen["layer2.1.conv2.weight"].shape = {128, 128, 1, 9};
  write_state_dict(path, misshapen);
  EXPECT_EQ(cnn_net_import_torch(net, path.c_str()), CNN_ERR_SHAPE);
  EXPECT_TRUE(has(cnn_last_error(), "'layer2.1.conv2.weight' has shape (128, 128, 1, 9)")) << cnn_last_error();
  EXPECT_TRUE(has(cnn_last_error(), "needs (128, 128, 3, 3)")) << cnn_last_error();

  StateDict extra = sd;
  extra["layer5.0.conv1.weight"] = sd["conv1.weight"];
  write_state_dict(path, extra);
  EXPECT_EQ(cnn_net_import_torch(net, path.c_str()), CNN_ERR_FORMAT);
  EXPECT_TRUE(has(cnn_last_error(), "'layer5.0.conv1.weight' has no place")) << cnn_last_error();

  // a definition that is not a ResNet is refused by name
  cnn_net *plain = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "plain", be.b, 1, &plain), CNN_OK);
  write_state_dict(path, sd);
  EXPECT_EQ(cnn_net_import_torch(plain, path.c_str()), CNN_ERR_UNSUPPORTED);
  EXPECT_TRUE(has(cnn_last_error(), "not torchvision's ResNet layout")) << cnn_last_error();
  cnn_net_destroy(plain);
  cnn_net_destroy(net);
}

}  // namespace
