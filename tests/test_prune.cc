// Pruning (README "Pruning"): the schedule against TF-MOT's formula; the masks of each structure pick what they
// say; pruned weights stay exactly zero through every optimizer step of every optimizer; masks survive resume bit
// for bit; a stripped channel-pruned model computes what the masked one did; bad settings are refused by name.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <dirent.h>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/compress/prune.h"
#include "core/io/safetensors.h"
#include "core/io/zfile.h"
#include "core/nn/net.h"
#include "core/rng.h"
#include "core/train/checkpoint.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::TempDir;
using Backend = cnntest::CpuBackend;
using Synthetic = cnntest::Quadrants;  // 12x12x1 images, 4 classes

// two prunable layers besides the classifier: the conv (through its batchnorm and pooling) and the first dense
const char *kNet =
    "input 12 12 1\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm relu\n"
    "maxpool 2\n"
    "conv 8 3 padding=same\n"
    "relu\n"
    "maxpool 2\n"
    "flatten\n"
    "dense 16 relu\n"
    "dense 4 softmax\n";

using cnntest::read_tensor;
using cnntest::write_tensor;
std::vector<float> weights_of(const cnn_net *net) { return cnntest::saved_weights(net); }

cnn_train_config base_config() {
  cnn_train_config cfg = cnntest::quiet_train_config(3, 32);
  cfg.lr = 3e-3f;
  cfg.seed = 5;
  cfg.prune.enabled = 1;
  cfg.prune.target_sparsity = 0.7f;
  cfg.prune.begin_step = 2;
  cfg.prune.end_step = 12;
  cfg.prune.frequency = 3;
  return cfg;
}

std::vector<std::string> checkpoints_in(const std::string &dir) {
  std::vector<std::string> out;
  DIR *d = opendir(dir.c_str());
  if (!d) return out;
  while (dirent *e = readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("ckpt-", 0) == 0) out.push_back(n);
  }
  closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

// Random values in [lo, hi) for every element of a parameter.
void randomize(cnn_param *p, uint64_t seed, float lo, float hi) {
  cnn_rng rng;
  cnn_rng_seed(&rng, seed);
  std::vector<float> v((size_t)cnn_tensor_numel(p->value));
  for (auto &x : v) x = lo + (hi - lo) * cnn_rng_uniform(&rng);
  write_tensor(p->value, v);
}

// ---------------------------------------------------------------------------------------------------------------

TEST(PruneSchedule, SparsityAtEachStepIsTfMotsPolynomialDecay) {
  cnn_prune_config c;
  cnn_prune_config_defaults(&c);
  c.enabled = 1;
  c.initial_sparsity = 0.1f;
  c.target_sparsity = 0.8f;
  c.begin_step = 10;
  c.end_step = 110;
  c.frequency = 20;
  ASSERT_EQ(cnn_prune_check(&c), CNN_OK);
  for (int64_t t : {0, 9, 10, 11, 30, 60, 99, 110, 111, 5000}) {
    double p = std::min(1.0, std::max(0.0, (double)(t - 10) / 100.0));
    double want = 0.8 + (0.1 - 0.8) * std::pow(1.0 - p, 3.0);
    EXPECT_NEAR(cnn_prune_sparsity_at(&c, t), want, 1e-6) << "step " << t;
  }
  EXPECT_NEAR(cnn_prune_sparsity_at(&c, 60), 0.7125, 1e-6);  // halfway: s_f - (s_f - s_i) / 8
  EXPECT_NEAR(cnn_prune_sparsity_at(&c, 10), 0.1, 1e-6);
  EXPECT_NEAR(cnn_prune_sparsity_at(&c, 110), 0.8, 1e-6);
  std::vector<int64_t> updates;
  for (int64_t t = 0; t < 200; t++)
    if (cnn_prune_updates_at(&c, t)) updates.push_back(t);
  EXPECT_EQ(updates, (std::vector<int64_t>{10, 30, 50, 70, 90, 110}));
  c.end_step = 105;  // not on the frequency's grid: E itself still updates, so that the target is reached
  updates.clear();
  for (int64_t t = 0; t < 200; t++)
    if (cnn_prune_updates_at(&c, t)) updates.push_back(t);
  EXPECT_EQ(updates, (std::vector<int64_t>{10, 30, 50, 70, 90, 105}));
  // the default end: three quarters of the run, after the begin step
  c.end_step = -1;
  EXPECT_EQ(cnn_prune_end_step(&c, 1000), 750);
  c.begin_step = 800;
  EXPECT_EQ(cnn_prune_end_step(&c, 1000), 801);
  c.structure = CNN_PRUNE_2_4;
  c.end_step = 900;
  EXPECT_EQ(cnn_prune_sparsity_at(&c, 799), 0.0);
  EXPECT_EQ(cnn_prune_sparsity_at(&c, 800), 0.5);
}

TEST(PruneSchedule, BadSettingsAreRefusedByName) {
  auto refused = [](void (*change)(cnn_prune_config *), const char *part) {
    cnn_prune_config c;
    cnn_prune_config_defaults(&c);
    c.enabled = 1;
    change(&c);
    EXPECT_EQ(cnn_prune_check(&c), CNN_ERR_INVALID_ARG) << part;
    EXPECT_NE(std::string(cnn_last_error()).find(part), std::string::npos) << cnn_last_error();
  };
  refused([](cnn_prune_config *c) { c->target_sparsity = 1.0f; }, "target sparsity must be in [0, 1)");
  refused([](cnn_prune_config *c) { c->target_sparsity = -0.1f; }, "target sparsity");
  refused([](cnn_prune_config *c) { c->target_sparsity = NAN; }, "target sparsity");
  refused([](cnn_prune_config *c) { c->initial_sparsity = 1.5f; }, "initial sparsity must be in [0, 1)");
  refused([](cnn_prune_config *c) { c->initial_sparsity = 0.6f; }, "above the target");
  refused([](cnn_prune_config *c) { c->begin_step = 10, c->end_step = 10; }, "must come after the begin step");
  refused([](cnn_prune_config *c) { c->begin_step = 10, c->end_step = 3; }, "must come after the begin step");
  refused([](cnn_prune_config *c) { c->begin_step = -1; }, "begin step must be >= 0");
  refused([](cnn_prune_config *c) { c->frequency = 0; }, "frequency must be at least 1");
  refused([](cnn_prune_config *c) { c->structure = (cnn_prune_structure)7; }, "unknown structure");
  cnn_prune_structure s;
  EXPECT_EQ(cnn_prune_structure_parse("2:4", &s), CNN_OK);
  EXPECT_EQ(s, CNN_PRUNE_2_4);
  EXPECT_EQ(cnn_prune_structure_parse("block", &s), CNN_ERR_INVALID_ARG);
  // and training refuses them before it starts
  Backend be;
  Synthetic train(64, 1);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "bad", be.b, 1, &net), CNN_OK) << cnn_last_error();
  cnn_train_config cfg = base_config();
  cfg.prune.end_step = 1;
  EXPECT_EQ(cnn_train(net, &train.ds, nullptr, &cfg, nullptr), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("end step"), std::string::npos) << cnn_last_error();
  cnn_net_destroy(net);
}

TEST(PruneCli, BadFlagsExitTwoNamingTheFlag) {
  struct Case {
    std::vector<std::string> args;
    const char *says;
  } cases[] = {
      {{"--prune", "magnitude", "--target-sparsity", "1"}, "--target-sparsity: must be in [0, 1)"},
      {{"--prune", "magnitude", "--target-sparsity", "-0.5"}, "--target-sparsity: must be in [0, 1)"},
      {{"--prune", "magnitude", "--initial-sparsity", "0.9", "--target-sparsity", "0.5"}, "--initial-sparsity"},
      {{"--prune", "magnitude", "--prune-begin-step", "100", "--prune-end-step", "50"},
       "--prune-end-step: 50 is not after the begin step 100"},
      {{"--prune", "magnitude", "--prune-frequency", "0"}, "--prune-frequency: must be at least 1"},
      {{"--prune", "magnitude", "--prune-structure", "block"}, "--prune-structure: 'block' is not one of"},
      {{"--prune", "lottery"}, "--prune: 'lottery' is not a pruning method"},
      {{"--prune", "magnitude", "--prune-structure", "2:4", "--target-sparsity", "0.7"}, "2:4 sparsity is 50%"},
      {{"--target-sparsity", "0.5"}, "--target-sparsity: needs --prune magnitude"},
  };
  for (const auto &c : cases) {
    std::vector<std::string> args = {"train", "--model", std::string(CNN_SOURCE_DIR) + "/samples/models/seed_cnn.cnn"};
    args.insert(args.end(), c.args.begin(), c.args.end());
    std::string out;
    EXPECT_EQ(cnntest::run_cnn(args, &out), 2) << out;
    EXPECT_NE(out.find(c.says), std::string::npos) << out;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// the masks

TEST(PruneMasks, UnstructuredZeroesTheSmallestMagnitudesOfEachLayer) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "masks", be.b, 4, &net), CNN_OK) << cnn_last_error();
  cnn_prune_config c;
  cnn_prune_config_defaults(&c);
  c.enabled = 1;
  c.initial_sparsity = c.target_sparsity = 0.6f;  // s(0) = 0.6
  c.end_step = 10;
  std::vector<std::vector<float>> before;
  for (int i = 0; i < net->nlayers; i++)
    before.push_back(net->layers[i]->nparams ? read_tensor(net->layers[i]->params[0].value) : std::vector<float>());
  cnn_pruner *p = nullptr;
  ASSERT_EQ(cnn_pruner_create(net, &c, &p), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_pruner_start(p, net, 100, 0), CNN_OK) << cnn_last_error();
  int pruned_layers = 0;
  for (int i = 0; i < net->nlayers; i++) {
    const cnn_layer *l = net->layers[i];
    if (l->ops != &cnn_conv_layer_ops && l->ops != &cnn_dense_layer_ops) continue;
    std::vector<float> w = read_tensor(l->params[0].value), b = before[(size_t)i];
    int64_t zeros = std::count(w.begin(), w.end(), 0.0f);
    if (i == net->nlayers - 1) {  // the classifier stays dense
      EXPECT_EQ(zeros, 0);
      continue;
    }
    pruned_layers++;
    EXPECT_EQ(zeros, (int64_t)std::floor(0.6 * (double)w.size())) << l->name;
    // every zeroed weight had a magnitude no larger than every kept one
    float largest_cut = 0.0f, smallest_kept = INFINITY;
    for (size_t k = 0; k < w.size(); k++) {
      if (w[k] == 0.0f) largest_cut = std::max(largest_cut, std::fabs(b[k]));
      else {
        smallest_kept = std::min(smallest_kept, std::fabs(b[k]));
        EXPECT_EQ(w[k], b[k]);
      }
    }
    EXPECT_LE(largest_cut, smallest_kept) << l->name;
  }
  EXPECT_EQ(pruned_layers, 3);
  EXPECT_NEAR(cnn_pruner_sparsity(p), 0.6, 0.01);
  cnn_pruner_destroy(p);
  cnn_net_destroy(net);
}

TEST(PruneMasks, TwoFourKeepsTheTwoLargestOfEveryFourInputWeights) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "2:4", be.b, 4, &net), CNN_OK) << cnn_last_error();
  cnn_prune_config c;
  cnn_prune_config_defaults(&c);
  c.enabled = 1;
  c.structure = CNN_PRUNE_2_4;
  c.end_step = 10;
  std::vector<std::vector<float>> before;
  for (int i = 0; i < net->nlayers; i++)
    before.push_back(net->layers[i]->nparams ? read_tensor(net->layers[i]->params[0].value) : std::vector<float>());
  cnn_pruner *p = nullptr;
  ASSERT_EQ(cnn_pruner_create(net, &c, &p), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_pruner_start(p, net, 100, 0), CNN_OK) << cnn_last_error();
  int groups = 0;
  for (int i = 0; i + 1 < net->nlayers; i++) {
    const cnn_layer *l = net->layers[i];
    if (l->ops != &cnn_conv_layer_ops && l->ops != &cnn_dense_layer_ops) continue;
    std::vector<float> w = read_tensor(l->params[0].value), b = before[(size_t)i];
    const int64_t rows = l->params[0].value->shape[0], len = (int64_t)w.size() / rows;
    // conv (8, 3, 3, 1): 9 inputs per filter, a trailing group of 1; (8, 3, 3, 8): 72; dense (16, 72): 72
    for (int64_t r = 0; r < rows; r++)
      for (int64_t g = 0; g < len; g += 4) {
        int64_t n = std::min<int64_t>(4, len - g), kept = 0;
        float min_kept = INFINITY, max_cut = 0.0f;
        for (int64_t k = 0; k < n; k++) {
          size_t at = (size_t)(r * len + g + k);
          if (w[at] != 0.0f) kept++, min_kept = std::min(min_kept, std::fabs(b[at]));
          else max_cut = std::max(max_cut, std::fabs(b[at]));
        }
        EXPECT_EQ(kept, std::min<int64_t>(n, 2)) << l->name << " row " << r << " group " << g;
        EXPECT_LE(max_cut, min_kept);
        groups++;
      }
  }
  EXPECT_GT(groups, 300);
  cnn_pruner_destroy(p);
  cnn_net_destroy(net);
}

TEST(PruneMasks, ChannelZeroesWholeFiltersRankedByNormTimesGammaWithTheirBiasAndBatchnorm) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "channel", be.b, 4, &net), CNN_OK) << cnn_last_error();
  cnn_layer *conv = net->layers[0], *bn = net->layers[1], *conv2 = net->layers[3];
  randomize(&bn->params[0], 11, -2.0f, 2.0f);  // gamma: some small ones make their filters lose
  randomize(&bn->params[1], 12, -1.0f, 1.0f);
  randomize(&conv2->params[1], 13, -1.0f, 1.0f);  // the second conv's bias
  std::vector<float> w = read_tensor(conv->params[0].value), g = read_tensor(bn->params[0].value);
  std::vector<std::pair<double, int>> score;
  for (int o = 0; o < 8; o++) {
    double ss = 0.0;
    for (int k = 0; k < 9; k++) ss += (double)w[(size_t)(o * 9 + k)] * w[(size_t)(o * 9 + k)];
    score.push_back({std::sqrt(ss) * std::fabs(g[(size_t)o]), o});
  }
  std::sort(score.begin(), score.end());
  cnn_prune_config c;
  cnn_prune_config_defaults(&c);
  c.enabled = 1;
  c.structure = CNN_PRUNE_CHANNEL;
  c.initial_sparsity = c.target_sparsity = 0.5f;
  c.end_step = 10;
  cnn_pruner *p = nullptr;
  ASSERT_EQ(cnn_pruner_create(net, &c, &p), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_pruner_start(p, net, 100, 0), CNN_OK) << cnn_last_error();
  std::vector<float> w2 = read_tensor(conv->params[0].value), g2 = read_tensor(bn->params[0].value),
                     b2 = read_tensor(bn->params[1].value);
  for (int r = 0; r < 8; r++) {
    int o = score[(size_t)r].second;
    bool cut = r < 4;
    for (int k = 0; k < 9; k++) EXPECT_EQ(w2[(size_t)(o * 9 + k)] == 0.0f, cut) << "filter " << o;
    EXPECT_EQ(g2[(size_t)o] == 0.0f, cut) << o;
    EXPECT_EQ(b2[(size_t)o] == 0.0f, cut) << o;
  }
  // the second conv (bias, no batchnorm) lost 4 whole filters and their biases
  std::vector<float> cw = read_tensor(conv2->params[0].value), cb = read_tensor(conv2->params[1].value);
  int zero_filters = 0;
  for (int o = 0; o < 8; o++) {
    bool all = std::all_of(cw.begin() + o * 72, cw.begin() + (o + 1) * 72, [](float x) { return x == 0.0f; });
    zero_filters += all;
    EXPECT_EQ(all, cb[(size_t)o] == 0.0f) << o;
  }
  EXPECT_EQ(zero_filters, 4);
  // dense layers are not channel-pruned
  std::vector<float> dw = read_tensor(net->layers[7]->params[0].value);
  EXPECT_EQ(std::count(dw.begin(), dw.end(), 0.0f), 0);
  cnn_pruner_destroy(p);
  cnn_net_destroy(net);
}

// ---------------------------------------------------------------------------------------------------------------
// training

// Checkpoints after every step; in each, every weight the masks remove is exactly zero, while the optimizer's
// moments of some of those weights are not (the update would have moved them: the re-applied mask is what holds
// them at zero), and the run ends at the target sparsity.
void zeros_stay_zero(cnn_optimizer_kind kind, float momentum, int nesterov) {
  Backend be;
  Synthetic train(192, 1);
  TempDir dir;
  cnn_train_config cfg = base_config();
  cfg.optimizer = kind;
  cfg.momentum = momentum;
  cfg.nesterov = nesterov;
  cfg.weight_decay = 1e-2f;
  cfg.checkpoint_dir = dir.path().c_str();
  cfg.checkpoint_every = 1;
  cfg.checkpoint_in_steps = 1;
  cfg.keep_checkpoints = 1000;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "zeros", be.b, 3, &net), CNN_OK) << cnn_last_error();
  std::vector<cnn_epoch_stats> hist(cfg.epochs);
  ASSERT_EQ(cnn_train(net, &train.ds, nullptr, &cfg, hist.data()), CNN_OK) << cnn_last_error();
  EXPECT_NEAR(hist.back().sparsity, 0.7, 0.01);
  EXPECT_LT(hist.front().sparsity, hist.back().sparsity);
  auto files = checkpoints_in(dir.path());
  ASSERT_EQ(files.size(), 18u);  // 6 steps an epoch
  int64_t masked_checked = 0, moving_moments = 0;
  for (const auto &f : files) {
    cnn_st_file *st = nullptr;
    ASSERT_EQ(cnn_st_read(dir.file(f).c_str(), &st), CNN_OK) << cnn_last_error();
    int masks = 0;
    for (int i = 0; i < st->count; i++) {
      std::string name = st->tensors[i].name;
      if (name.rfind("prune/mask/", 0) != 0) continue;
      masks++;
      std::string param = name.substr(11);
      const cnn_st_tensor *w = cnn_st_find(st, param.c_str());
      ASSERT_NE(w, nullptr) << param;
      const uint8_t *m = (const uint8_t *)cnn_st_data(st, &st->tensors[i]);
      std::vector<float> wv(w->nbytes / 4);
      std::memcpy(wv.data(), cnn_st_data(st, w), w->nbytes);
      // SGD's velocity, Adam's first moment, RMSprop's mean square
      const std::string slot = kind == CNN_OPTIM_RMSPROP ? "optimizer/v/" : "optimizer/m/";
      const cnn_st_tensor *mom = cnn_st_find(st, (slot + param).c_str());
      std::vector<float> mv;
      if (mom) {
        mv.resize(mom->nbytes / 4);
        std::memcpy(mv.data(), cnn_st_data(st, mom), mom->nbytes);
      }
      for (size_t k = 0; k < wv.size(); k++)
        if (!m[k]) {
          ASSERT_EQ(wv[k], 0.0f) << f << " " << param << "[" << k << "]";
          masked_checked++;
          if (!mv.empty() && mv[k] != 0.0f) moving_moments++;
        }
    }
    EXPECT_EQ(masks, 3) << f;
    cnn_st_free(st);
  }
  EXPECT_GT(masked_checked, 10000);
  EXPECT_GT(moving_moments, 100);  // the optimizer alone would have moved them
  // the final model holds the zeros too
  int64_t zeros = 0, total = 0;
  for (int i = 0; i + 1 < net->nlayers; i++) {
    int64_t z, t;
    ASSERT_EQ(cnn_net_layer_sparsity(net, i, &z, &t), CNN_OK);
    zeros += z;
    total += t;
  }
  EXPECT_NEAR((double)zeros / (double)total, 0.7, 0.01);
  cnn_net_destroy(net);
}

TEST(PruneTraining, ZerosStayZeroUnderSgdWithMomentumAndWeightDecay) { zeros_stay_zero(CNN_OPTIM_SGD, 0.9f, 0); }
TEST(PruneTraining, ZerosStayZeroUnderNesterovSgd) { zeros_stay_zero(CNN_OPTIM_SGD, 0.9f, 1); }
TEST(PruneTraining, ZerosStayZeroUnderAdamWithWeightDecay) { zeros_stay_zero(CNN_OPTIM_ADAM, 0.9f, 0); }
TEST(PruneTraining, ZerosStayZeroUnderAdamW) { zeros_stay_zero(CNN_OPTIM_ADAMW, 0.9f, 0); }
TEST(PruneTraining, ZerosStayZeroUnderRmspropWithMomentum) { zeros_stay_zero(CNN_OPTIM_RMSPROP, 0.9f, 0); }

// Resuming from a checkpoint of every third step (before, during and after the schedule) ends bit-identical to
// the uninterrupted run, masks and sparsity curve included; each structure.
void resume_exact(cnn_prune_structure s, const char *text = kNet) {
  Backend be;
  Synthetic train(192, 1), val(64, 2);
  TempDir dir;
  cnn_train_config cfg = base_config();
  cfg.prune.structure = s;
  if (s == CNN_PRUNE_2_4) cfg.prune.target_sparsity = 0.5f;
  cnntest::keep_every_checkpoint(&cfg, dir.path(), 3);
  std::vector<cnn_epoch_stats> want;
  std::vector<float> want_w;
  ASSERT_NO_FATAL_FAILURE(cnntest::train_fresh(text, be.b, 3, &train.ds, &val.ds, cfg, &want, &want_w));
  EXPECT_GT(want.back().sparsity, 0.2);
  auto files = checkpoints_in(dir.path());
  ASSERT_EQ(files.size(), 6u);
  ASSERT_NO_FATAL_FAILURE(
      cnntest::expect_resumes_match(text, be.b, &train.ds, &val.ds, cfg, dir.path(), files, want, want_w));
  // a checkpoint without its masks is refused by name (the settings say pruning, the tensors are gone)
  cnn_train_config plain = cfg;
  plain.prune.enabled = 0;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "resume", be.b, 99, &net), CNN_OK);
  std::string path = dir.file(files[0]);
  plain.resume_from = path.c_str();
  TempDir other;
  plain.checkpoint_dir = other.path().c_str();
  EXPECT_EQ(cnn_train(net, &train.ds, &val.ds, &plain, nullptr), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("prune="), std::string::npos) << cnn_last_error();
  cnn_net_destroy(net);
}

TEST(PruneTraining, ResumeIsBitIdenticalUnstructured) { resume_exact(CNN_PRUNE_UNSTRUCTURED); }
TEST(PruneTraining, ResumeIsBitIdenticalChannel) { resume_exact(CNN_PRUNE_CHANNEL); }
TEST(PruneTraining, ResumeIsBitIdenticalTwoFour) { resume_exact(CNN_PRUNE_2_4); }
TEST(PruneTraining, ResumeIsBitIdenticalChannelThroughAResidualAdd) {
  // the masks of the stem's and the block's convs and batchnorms, one group per channel of the residual stream
  resume_exact(CNN_PRUNE_CHANNEL,
               "input 12 12 1\n"
               "conv 8 3 padding=same bias=no\n"
               "batchnorm relu name=s\n"
               "conv 8 3 padding=same bias=no\n"
               "batchnorm\n"
               "add s relu\n"
               "maxpool 2\n"
               "conv 8 3 relu\n"
               "globalavgpool\n"
               "dense 4 softmax\n");
}

// ---------------------------------------------------------------------------------------------------------------
// the strip

// Channel-prunes `text`'s network at 50% (random batchnorm parameters and statistics, so that they matter), then
// strips it: the outputs agree within 1e-5 and the stripped network has fewer parameters. Returns the channels
// removed.
int64_t strip_matches(const std::string &text, int h, int w, int c, const char *what,
                      std::vector<int64_t> *widths = nullptr) {
  Backend be;
  cnn_net *net = nullptr, *small = nullptr;
  EXPECT_EQ(cnn_net_from_text(text.c_str(), what, be.b, 7, &net), CNN_OK) << cnn_last_error();
  if (!net) return -1;
  uint64_t seed = 100;
  for (int i = 0; i < net->nlayers; i++) {
    cnn_layer *l = net->layers[i];
    if (l->ops != &cnn_batchnorm_layer_ops) continue;
    randomize(&l->params[0], seed++, 0.2f, 1.5f);
    randomize(&l->params[1], seed++, -0.5f, 0.5f);
    randomize(&l->state[0], seed++, -0.3f, 0.3f);
    randomize(&l->state[1], seed++, 0.5f, 2.0f);
  }
  cnn_prune_config cfg;
  cnn_prune_config_defaults(&cfg);
  cfg.enabled = 1;
  cfg.structure = CNN_PRUNE_CHANNEL;
  cfg.initial_sparsity = cfg.target_sparsity = 0.5f;
  cfg.end_step = 10;
  cnn_pruner *p = nullptr;
  EXPECT_EQ(cnn_pruner_create(net, &cfg, &p), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_pruner_start(p, net, 100, 0), CNN_OK) << cnn_last_error();
  cnn_pruner_destroy(p);
  const int n = 6, k = cnn_net_num_outputs(net);
  std::vector<float> images((size_t)n * h * w * c);
  cnn_rng rng;
  cnn_rng_seed(&rng, 5);
  for (auto &x : images) x = cnn_rng_uniform(&rng);
  std::vector<float> a((size_t)n * k), b((size_t)n * k);
  EXPECT_EQ(cnn_net_predict(net, images.data(), n, a.data()), CNN_OK) << cnn_last_error();
  int64_t removed = 0;
  EXPECT_EQ(cnn_net_strip(net, be.b, &small, &removed), CNN_OK) << what << ": " << cnn_last_error();
  if (!small) {
    cnn_net_destroy(net);
    return -1;
  }
  EXPECT_EQ(cnn_net_predict(small, images.data(), n, b.data()), CNN_OK) << cnn_last_error();
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); i++) worst = std::max(worst, (double)std::fabs(a[i] - b[i]));
  EXPECT_LE(worst, 1e-5) << what;
  EXPECT_LT(cnn_net_param_count(small), cnn_net_param_count(net)) << what;
  if (widths)
    for (int i = 0; i < small->nlayers; i++) widths->push_back(small->layers[i]->out.d[small->layers[i]->out.ndim - 1]);
  // the stripped model saves, loads and computes the same again (its definition is the narrower one)
  TempDir dir;
  std::string file = dir.file("small.safetensors");
  EXPECT_EQ(cnn_net_save(small, file.c_str()), CNN_OK) << cnn_last_error();
  cnn_net *back = nullptr;
  EXPECT_EQ(cnn_net_load(file.c_str(), be.b, &back), CNN_OK) << cnn_last_error();
  if (back) {
    std::vector<float> d((size_t)n * k);
    EXPECT_EQ(cnn_net_predict(back, images.data(), n, d.data()), CNN_OK);
    EXPECT_EQ(std::memcmp(d.data(), b.data(), d.size() * sizeof(float)), 0);
    cnn_net_destroy(back);
  }
  cnn_net_destroy(small);
  cnn_net_destroy(net);
  return removed;
}

TEST(PruneStrip, StrippedConvNetComputesWhatTheMaskedOneDid) {
  // conv 0 (batchnorm) feeds conv 3 (bias, relu), which feeds the dense layer through pooling and flatten
  EXPECT_EQ(strip_matches(kNet, 12, 12, 1, "small"), 8);
}

TEST(PruneStrip, StrippedResNet20ComputesWhatTheMaskedOneDid) {
  std::string text = cnntest::read_file(std::string(CNN_SOURCE_DIR) + "/samples/models/resnet20_28.cnn");
  // every conv but the classifier loses half its filters: the 9 blocks' first convs on their own, and the residual
  // stream of each stage (the stem or projection and the blocks' second convs, through the adds) as one group
  EXPECT_EQ(strip_matches(text, 28, 28, 1, "resnet20"), (16 + 16 * 6 + 32 * 7 + 64 * 7) / 2);
}

TEST(PruneStrip, ConvsAroundAConcatLoseTheirChannelsAndTheConcatTheMatchingOnes) {
  const char *text =
      "input 10 10 3\n"
      "conv 8 3 padding=same bias=no name=a1\n"
      "batchnorm relu\n"
      "conv 6 3 padding=same relu name=a2\n"   // feeds the concat: 3 of 6 go, channels 0..5 of the concat
      "conv 8 1 relu from=input name=b1\n"     // feeds the concat: 4 of 8 go, channels 6..13 of the concat
      "concat a2 b1\n"
      "conv 12 3 padding=same bias=no\n"       // reads the concat: its matching inputs go
      "batchnorm relu\n"
      "conv 8 3 stride=2 relu\n"               // feeds globalavgpool -> dense
      "globalavgpool\n"
      "dense 5 softmax\n";
  EXPECT_EQ(strip_matches(text, 10, 10, 3, "concat"), 4 + 3 + 4 + 6 + 4);
}

// Residual adds chained (an identity shortcut through two adds), a concat of the residual stream with two convs,
// a batchnorm over the concat, and an add of that with a conv of the concat's width: the channel groups cross the
// adds and the concat (with its offsets), and the stripped network still computes what the masked one did.
const char *kResidualConcat =
    "input 10 10 3\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm relu name=s1\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm\n"
    "add s1 relu name=s2\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm\n"
    "add s2 relu name=s3\n"
    "conv 6 3 padding=same relu name=a\n"
    "conv 4 1 relu from=s3 name=b\n"
    "concat s3 a b\n"
    "batchnorm relu name=cat\n"
    "conv 18 1 bias=no from=s3\n"
    "batchnorm\n"
    "add cat relu\n"
    "maxpool 2\n"
    "conv 10 3 relu\n"
    "flatten\n"
    "dense 5 softmax\n";

TEST(PruneStrip, ResidualAddsAndAConcatAreStrippedConsistently) {
  std::vector<int64_t> w;  // per layer of the stripped model, its output channels
  const int64_t removed = strip_matches(kResidualConcat, 10, 10, 3, "residual+concat", &w);
  ASSERT_EQ(w.size(), 19u);
  // the residual stream through both adds keeps the same channels in the stem and both blocks
  EXPECT_EQ(w[0], w[2]);
  EXPECT_EQ(w[0], w[5]);
  EXPECT_EQ(w[4], w[0]);
  EXPECT_EQ(w[7], w[0]);
  // the concat is the kept channels of its inputs; the conv added to it follows them all
  EXPECT_EQ(w[10], w[0] + w[8] + w[9]);
  EXPECT_EQ(w[12], w[10]);
  EXPECT_EQ(w[14], w[10]);
  // one family (the 18 channels of the last add: the stream's 8, a's 6, b's 4) lost half its groups, every conv a
  // channel at least; the conv before flatten (its own family) half of its 10
  EXPECT_EQ((8 - w[0]) + (6 - w[8]) + (4 - w[9]), 9);
  EXPECT_GE(std::min({w[0], w[8], w[9]}), 1);
  EXPECT_EQ(w[16], 5);
  EXPECT_EQ(removed, 3 * (8 - w[0]) + (6 - w[8]) + (4 - w[9]) + (18 - w[12]) + 5);
}

// The channels a channel-pruned residual network zeroes: for every add, the same channels in every input (gamma and
// beta of the batchnorms that feed it, or the zero channels of the add before it).
std::vector<int> zero_channels(const cnn_net *net, int i) {
  const cnn_layer *l = net->layers[i];
  if (l->ops == &cnn_add_layer_ops) return zero_channels(net, l->inputs[0]);
  std::vector<int> z;
  if (l->ops != &cnn_batchnorm_layer_ops) return z;
  std::vector<float> g = read_tensor(l->params[0].value), b = read_tensor(l->params[1].value);
  for (size_t c = 0; c < g.size(); c++)
    if (g[c] == 0.0f && b[c] == 0.0f) z.push_back((int)c);
  return z;
}

TEST(PruneMasks, ChannelsMeetingAtAnAddArePrunedTogetherInEveryBranch) {
  Backend be;
  std::string text = cnntest::read_file(std::string(CNN_SOURCE_DIR) + "/samples/models/resnet20_28.cnn");
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text.c_str(), "resnet20", be.b, 3, &net), CNN_OK) << cnn_last_error();
  uint64_t seed = 40;
  for (int i = 0; i < net->nlayers; i++)
    if (net->layers[i]->ops == &cnn_batchnorm_layer_ops) randomize(&net->layers[i]->params[0], seed++, 0.1f, 2.0f);
  cnn_prune_config c;
  cnn_prune_config_defaults(&c);
  c.enabled = 1;
  c.structure = CNN_PRUNE_CHANNEL;
  c.initial_sparsity = c.target_sparsity = 0.5f;
  c.end_step = 10;
  cnn_pruner *p = nullptr;
  ASSERT_EQ(cnn_pruner_create(net, &c, &p), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_pruner_start(p, net, 100, 0), CNN_OK) << cnn_last_error();
  int adds = 0;
  for (int i = 0; i < net->nlayers; i++) {
    const cnn_layer *l = net->layers[i];
    if (l->ops != &cnn_add_layer_ops) continue;
    adds++;
    std::vector<int> first = zero_channels(net, l->inputs[0]);
    EXPECT_EQ((int64_t)first.size(), l->out.d[2] / 2) << l->name;
    for (int k = 1; k < l->ninputs; k++) EXPECT_EQ(zero_channels(net, l->inputs[k]), first) << l->name;
    // and the conv before each input batchnorm lost the same filters
    for (int k = 0; k < l->ninputs; k++) {
      const cnn_layer *bn = net->layers[l->inputs[k]];
      if (bn->ops != &cnn_batchnorm_layer_ops) continue;
      const cnn_layer *conv = net->layers[bn->inputs[0]];
      ASSERT_EQ(conv->ops, &cnn_conv_layer_ops);
      std::vector<float> w = read_tensor(conv->params[0].value);
      const size_t len = w.size() / (size_t)l->out.d[2];
      for (int ch = 0; ch < l->out.d[2]; ch++) {
        bool zero = std::all_of(w.begin() + ch * len, w.begin() + (ch + 1) * len, [](float x) { return x == 0.0f; });
        EXPECT_EQ(zero, std::count(first.begin(), first.end(), ch) == 1) << conv->name << " filter " << ch;
      }
    }
  }
  EXPECT_EQ(adds, 9);
  EXPECT_NEAR(cnn_pruner_sparsity(p), 0.5, 1e-9);  // half of every conv's filters (but the classifier's)
  cnn_pruner_destroy(p);
  cnn_net_destroy(net);
}

// What makes a group stay: a conv whose output meets the network input at an add, a conv with a sigmoid (f(0) != 0),
// a conv whose output is the network's (the classifier); the others may go, each conv a family of its own here.
TEST(PruneMasks, GroupsThatMeetTheInputOrASigmoidStay) {
  Backend be;
  const char *text =
      "input 8 8 4\n"
      "conv 4 3 padding=same\n"            // 0: added to the network input: stays
      "add input relu\n"                   // 1
      "conv 6 3 padding=same sigmoid\n"    // 2: sigmoid: stays
      "conv 5 3 padding=same relu\n"       // 3: may go
      "conv 3 1\n"                         // 4: through global pooling to the dense layer: may go
      "globalavgpool\n"                    // 5
      "dense 2 softmax\n";                 // 6: the classifier
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "stay", be.b, 1, &net), CNN_OK) << cnn_last_error();
  cnn_prune_groups g;
  ASSERT_EQ(cnn_prune_groups_build(net, &g), CNN_OK) << cnn_last_error();
  auto groups_of = [&](int layer) {
    int64_t n = 0;
    for (int64_t s = g.off[layer]; s < g.off[layer + 1]; s++) n += g.gid[s] >= 0;
    return n;
  };
  EXPECT_EQ(groups_of(0), 0);
  EXPECT_EQ(groups_of(1), 0);
  EXPECT_EQ(groups_of(2), 0);
  EXPECT_EQ(groups_of(3), 5);
  EXPECT_EQ(groups_of(4), 3);
  EXPECT_EQ(groups_of(5), 3);  // the pooled channels are the conv's
  EXPECT_EQ(groups_of(6), 0);
  for (int64_t s = g.off[net->nlayers]; s < g.off[net->nlayers + 1]; s++) EXPECT_EQ(g.gid[s], -1);  // the input
  EXPECT_EQ(g.ngroups, 8);
  EXPECT_EQ(g.nfamilies, 2);
  cnn_prune_groups_free(&g);
  cnn_net_destroy(net);
}

// A group is ranked by the sum over its convs of filter norm (times |gamma|, none here): two convs meeting at an
// add, 4 channels, the 2 groups of least summed norm go, in both convs, biases included.
TEST(PruneMasks, AGroupIsRankedByTheSummedNormsOfItsFilters) {
  Backend be;
  const char *text =
      "input 6 6 2\n"
      "conv 4 3 padding=same relu name=a\n"
      "conv 4 3 padding=same\n"
      "add a relu\n"
      "conv 3 1 relu\n"
      "globalavgpool\n"
      "dense 2 softmax\n";
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "ranked", be.b, 9, &net), CNN_OK) << cnn_last_error();
  cnn_layer *a = net->layers[0], *b = net->layers[1];
  // filter norms chosen so that neither conv alone ranks the groups as their sum does
  const float na[4] = {1.0f, 4.0f, 2.5f, 0.5f}, nb[4] = {3.0f, 0.5f, 0.5f, 2.0f};  // sums 4, 4.5, 3, 2.5
  for (int which = 0; which < 2; which++) {
    cnn_layer *l = which ? b : a;
    const float *norms = which ? nb : na;
    std::vector<float> w = read_tensor(l->params[0].value);
    const size_t len = w.size() / 4;
    for (size_t o = 0; o < 4; o++) {
      double ss = 0.0;
      for (size_t k = 0; k < len; k++) ss += (double)w[o * len + k] * w[o * len + k];
      for (size_t k = 0; k < len; k++) w[o * len + k] *= (float)(norms[o] / std::sqrt(ss));
    }
    write_tensor(l->params[0].value, w);
    randomize(&l->params[1], 20 + which, 0.1f, 1.0f);
  }
  cnn_prune_config c;
  cnn_prune_config_defaults(&c);
  c.enabled = 1;
  c.structure = CNN_PRUNE_CHANNEL;
  c.initial_sparsity = c.target_sparsity = 0.5f;
  c.end_step = 10;
  cnn_pruner *p = nullptr;
  ASSERT_EQ(cnn_pruner_create(net, &c, &p), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_pruner_start(p, net, 100, 0), CNN_OK) << cnn_last_error();
  const bool cut[4] = {false, false, true, true};  // sums 3 and 2.5 are the least
  for (cnn_layer *l : {a, b}) {
    std::vector<float> w = read_tensor(l->params[0].value), bias = read_tensor(l->params[1].value);
    const size_t len = w.size() / 4;
    for (size_t o = 0; o < 4; o++) {
      bool zero = std::all_of(w.begin() + o * len, w.begin() + (o + 1) * len, [](float x) { return x == 0.0f; });
      EXPECT_EQ(zero, cut[o]) << l->name << " filter " << o;
      EXPECT_EQ(bias[o] == 0.0f, cut[o]) << l->name << " bias " << o;
    }
  }
  cnn_pruner_destroy(p);
  cnn_net_destroy(net);
}

// Training a residual network with a concat under channel pruning (Adam with weight decay: the update moves the
// masked weights): every group's channels end exactly zero in all its members, and the strip of the trained model
// computes what it did.
TEST(PruneTraining, ResidualGroupsStayZeroThroughTrainingAndStrip) {
  Backend be;
  Synthetic train(192, 1);
  const std::string text =
      "input 12 12 1\n"
      "conv 8 3 padding=same bias=no\n"
      "batchnorm relu name=s1\n"
      "conv 8 3 padding=same bias=no\n"
      "batchnorm\n"
      "add s1 relu name=s2\n"
      "conv 4 3 padding=same relu name=a\n"
      "concat s2 a\n"
      "maxpool 2\n"
      "conv 8 3 relu\n"
      "globalavgpool\n"
      "dense 4 softmax\n";
  cnn_train_config cfg = base_config();
  cfg.prune.structure = CNN_PRUNE_CHANNEL;
  cfg.prune.target_sparsity = 0.5f;
  cfg.optimizer = CNN_OPTIM_ADAMW;
  cfg.weight_decay = 1e-2f;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text.c_str(), "trained", be.b, 3, &net), CNN_OK) << cnn_last_error();
  std::vector<cnn_epoch_stats> hist(cfg.epochs);
  ASSERT_EQ(cnn_train(net, &train.ds, nullptr, &cfg, hist.data()), CNN_OK) << cnn_last_error();
  EXPECT_NEAR(hist.back().sparsity, 0.5, 1e-9);
  // the residual stream: 4 of 8 channels zero in the stem's and the block's batchnorm alike
  std::vector<int> z1 = zero_channels(net, 1), z2 = zero_channels(net, 3);
  EXPECT_EQ(z1.size(), 4u);
  EXPECT_EQ(z1, z2);
  // the stripped model: 4 + 4 + 2 + 4 channels fewer, the same outputs
  cnn_net *small = nullptr;
  int64_t removed = 0;
  ASSERT_EQ(cnn_net_strip(net, be.b, &small, &removed), CNN_OK) << cnn_last_error();
  EXPECT_EQ(removed, 4 + 4 + 2 + 4);
  EXPECT_EQ(small->layers[6]->out.d[2], 4 + 2);  // the concat: the kept channels of both inputs
  std::vector<float> a((size_t)train.images.size() / 144 * 4), b(a.size());
  const int n = (int)(a.size() / 4);
  ASSERT_EQ(cnn_net_predict(net, train.images.data(), n, a.data()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_predict(small, train.images.data(), n, b.data()), CNN_OK) << cnn_last_error();
  for (size_t i = 0; i < a.size(); i++) ASSERT_NEAR(a[i], b[i], 1e-5) << i;
  cnn_net_destroy(small);
  cnn_net_destroy(net);
}

TEST(PruneStrip, AModelWithoutPrunedChannelsIsRefusedClearly) {
  Backend be;
  cnn_net *net = nullptr, *small = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "dense", be.b, 1, &net), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_strip(net, be.b, &small, nullptr), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(small, nullptr);
  EXPECT_NE(std::string(cnn_last_error()).find("no pruned channel to strip"), std::string::npos) << cnn_last_error();
  cnn_net_destroy(net);
  // and the command says so, with exit 1; a missing flag is a usage error
  TempDir dir;
  std::string model = dir.file("m.safetensors"), out;
  ASSERT_EQ(cnntest::run_cnn({"train", "--model", std::string(CNN_SOURCE_DIR) + "/samples/models/seed_cnn.cnn",
                              "--epochs", "1", "--limit", "64", "--quiet", "--out", model}, &out), 0) << out;
  EXPECT_EQ(cnntest::run_cnn({"prune", "--strip", "--model", model, "--out", dir.file("s.safetensors")}, &out), 1);
  EXPECT_NE(out.find("no pruned channel to strip"), std::string::npos) << out;
  EXPECT_EQ(cnntest::run_cnn({"prune", "--model", model, "--out", dir.file("s.safetensors")}, &out), 2);
  EXPECT_NE(out.find("--strip or --compress is required"), std::string::npos) << out;
}


// ---------------------------------------------------------------------------------------------------------------
// compressed model files

TEST(PruneFile, CompressedModelRoundTripsAndShrinks) {
  Backend be;
  cnn_net *net = nullptr, *back = nullptr, *plain_back = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "zfile", be.b, 4, &net), CNN_OK) << cnn_last_error();
  cnn_prune_config c;
  cnn_prune_config_defaults(&c);
  c.enabled = 1;
  c.initial_sparsity = c.target_sparsity = 0.8f;
  c.end_step = 10;
  cnn_pruner *p = nullptr;
  ASSERT_EQ(cnn_pruner_create(net, &c, &p), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_pruner_start(p, net, 100, 0), CNN_OK) << cnn_last_error();
  cnn_pruner_destroy(p);
  TempDir dir;
  std::string plain = dir.file("plain.safetensors"), packed = dir.file("packed.safetensors");
  ASSERT_EQ(cnn_net_save(net, plain.c_str()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_save_compressed(net, packed.c_str()), CNN_OK) << cnn_last_error();
  std::string a = cnntest::read_file(plain), b = cnntest::read_file(packed);
  EXPECT_EQ(b.compare(0, 8, CNN_ZFILE_MAGIC), 0);
  EXPECT_LT(b.size(), a.size() / 2) << a.size() << " -> " << b.size();
  // the compressed file reads back as the very same safetensors bytes, and loads to the same weights
  unsigned char *raw = nullptr;
  size_t len = 0;
  ASSERT_EQ(cnn_zfile_inflate((const unsigned char *)b.data(), b.size(), "packed", &raw, &len), CNN_OK)
      << cnn_last_error();
  EXPECT_EQ(std::string((const char *)raw, len), a);
  free(raw);
  ASSERT_EQ(cnn_net_load(packed.c_str(), be.b, &back), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_load(plain.c_str(), be.b, &plain_back), CNN_OK) << cnn_last_error();
  EXPECT_EQ(weights_of(back), weights_of(net));
  EXPECT_EQ(weights_of(plain_back), weights_of(net));
  cnn_net_destroy(back);
  cnn_net_destroy(plain_back);
  cnn_net_destroy(net);
}

TEST(PruneFile, BadCompressedFilesAreRefusedWithoutCrashOrHugeAllocations) {
  // a good compressed file to damage
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "zbad", be.b, 4, &net), CNN_OK) << cnn_last_error();
  TempDir dir;
  std::string good = dir.file("good.safetensors");
  ASSERT_EQ(cnn_net_save_compressed(net, good.c_str()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
  const std::string g = cnntest::read_file(good);
  auto with_size = [&](uint64_t size) {
    std::string s = g;
    for (int i = 0; i < 8; i++) s[(size_t)(8 + i)] = (char)(size >> (8 * i));
    return s;
  };
  uint64_t real = 0;
  for (int i = 15; i >= 8; i--) real = (real << 8) | (unsigned char)g[(size_t)i];
  struct Case {
    std::string bytes;
    const char *says;
  } cases[] = {
      {with_size((uint64_t)1 << 62), "cannot hold"},           // would be a huge allocation
      {with_size((uint64_t)(g.size() - 16) * 1033), "cannot hold"},  // more than deflate can give
      {with_size(3), "cannot hold"},
      {with_size(real + 1), "inflates to"},
      {with_size(real - 1), "longer than the header says"},
      {g.substr(0, g.size() - 9), "corrupt or truncated"},
      {g + "trailing", "follow the zlib stream"},
      {g.substr(0, 12), "16-byte header"},
      {g.substr(0, 16) + std::string(64, 'x'), "corrupt or truncated"},
  };
  for (const auto &c : cases) {
    std::string path = dir.file("bad.safetensors");
    cnntest::write_file(path, c.bytes);
    cnn_st_file *f = nullptr;
    EXPECT_EQ(cnn_st_read(path.c_str(), &f), CNN_ERR_FORMAT) << c.says;
    EXPECT_EQ(f, nullptr);
    EXPECT_NE(std::string(cnn_last_error()).find(c.says), std::string::npos) << cnn_last_error();
    cnn_net *n2 = nullptr;
    EXPECT_NE(cnn_net_load(path.c_str(), be.b, &n2), CNN_OK);
    EXPECT_EQ(n2, nullptr);
  }
}

// The command line end to end: a pruned run's model file is compressed, loads in eval, and summary shows its
// sparsity per layer; the metrics JSON carries the sparsity of each epoch.
TEST(PruneCli, TrainWritesACompressedSparseModelThatEvalAndSummaryRead) {
  TempDir dir;
  std::string model = dir.file("m.safetensors"), json = dir.file("m.json"), out;
  ASSERT_EQ(cnntest::run_cnn({"train", "--model", std::string(CNN_SOURCE_DIR) + "/samples/models/seed_cnn.cnn",
                              "--epochs", "2", "--limit", "256", "--batch", "32", "--prune", "magnitude",
                              "--target-sparsity", "0.75", "--prune-frequency", "2", "--out", model,
                              "--metrics-json", json}, &out), 0) << out;
  EXPECT_NE(out.find("sparsity: 0.7"), std::string::npos) << out;  // the progress line
  EXPECT_NE(out.find("(zlib-compressed)"), std::string::npos) << out;
  EXPECT_EQ(cnntest::read_file(model).compare(0, 8, CNN_ZFILE_MAGIC), 0);
  std::string j = cnntest::read_file(json);
  EXPECT_NE(j.find("\"sparsity\": 0.7"), std::string::npos) << j;
  ASSERT_EQ(cnntest::run_cnn({"eval", "--model", model, "--limit", "100"}, &out), 0) << out;
  EXPECT_NE(out.find("accuracy"), std::string::npos) << out;
  ASSERT_EQ(cnntest::run_cnn({"summary", model}, &out), 0) << out;
  EXPECT_NE(out.find("Weight sparsity"), std::string::npos) << out;
  EXPECT_NE(out.find("conv2d_1"), std::string::npos) << out;
  EXPECT_NE(out.find("75.00%"), std::string::npos) << out;
}

}  // namespace
