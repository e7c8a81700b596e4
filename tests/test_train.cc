// Networks end to end on the CPU backend: gradients of the whole network against finite differences, training
// on a synthetic task, evaluation metrics against a hand count.
#include <gtest/gtest.h>

#include <cmath>
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

using Backend = cnntest::CpuBackend;

using Synthetic = cnntest::Quadrants; // a bright 3x3 square in one quadrant of a noisy 12x12 image

const char *kSmallNet =
    "input 12 12 1\n"
    "conv 8 3 relu padding=same\n"
    "maxpool 2\n"
    "conv 8 3 relu\n"
    "avgpool 2\n"
    "flatten\n"
    "dense 16 relu\n"
    "dense 4 softmax\n";

TEST(Network, ParameterGradientsMatchFiniteDifferences) {
  Backend be;
  Synthetic data(6, 11);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kSmallNet, "small", be.b, 3, &net), CNN_OK) << cnn_last_error();
  const int n = 6;
  ASSERT_EQ(cnn_net_stage_batch(net, &data.ds, nullptr, 0, n), CNN_OK) << cnn_last_error();
  int checked = 0;
  ASSERT_NO_FATAL_FAILURE(cnntest::check_gradients(net, n, 12, 0.05, &checked));
  EXPECT_EQ(checked, 12 * 8);
  cnn_net_destroy(net);
}

cnn_status train_small(cnn_backend *b, cnn_optimizer_kind kind, float lr, double *val_acc, cnn_net **out) {
  Synthetic train(1200, 1), val(400, 2);
  cnn_net *net = nullptr;
  cnn_status st = cnn_net_from_text(kSmallNet, "small", b, 9, &net);
  if (st != CNN_OK) return st;
  cnn_train_config cfg = cnntest::quiet_train_config(4, 32);
  cfg.optimizer = kind;
  cfg.lr = lr;
  std::vector<cnn_epoch_stats> hist(cfg.epochs);
  st = cnn_train(net, &train.ds, &val.ds, &cfg, hist.data());
  if (st == CNN_OK) {
    *val_acc = hist.back().val_accuracy;
    EXPECT_LT(hist.back().loss, hist.front().loss);
    EXPECT_GT(hist.back().images_per_sec, 0);
  }
  *out = net;
  return st;
}

TEST(Training, AdamLearnsSyntheticQuadrantTask) {
  Backend be;
  cnn_net *net = nullptr;
  double acc = 0;
  ASSERT_EQ(train_small(be.b, CNN_OPTIM_ADAM, 3e-3f, &acc, &net), CNN_OK) << cnn_last_error();
  EXPECT_GT(acc, 0.97);
  cnn_net_destroy(net);
}

// Training stores the training set's profile (per-channel pixel mean and std, class shares) for the server's drift
// monitoring: computed in float64 here, and kept by the model file.
TEST(Training, StoresTheTrainingSetsDataProfileInTheModel) {
  Backend be;
  Synthetic train(500, 4);
  for (int i = 0; i < 500; i++) train.labels[i] = i % 5 == 0 ? 3 : train.labels[i];  // uneven shares
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kSmallNet, "small", be.b, 9, &net), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_data_profile(net, nullptr, nullptr, nullptr), 0);
  cnn_train_config cfg = cnntest::quiet_train_config(1, 50);
  ASSERT_EQ(cnn_train(net, &train.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  float mean, sd, freq[4];
  ASSERT_EQ(cnn_net_data_profile(net, &mean, &sd, freq), 1);
  double sum = 0, sq = 0;
  for (float x : train.images) sum += x;
  double m = sum / (double)train.images.size();
  for (float x : train.images) sq += (x - m) * (x - m);
  EXPECT_NEAR(mean, m, 1e-6);
  EXPECT_NEAR(sd, std::sqrt(sq / (double)train.images.size()), 1e-5);
  for (int j = 0; j < 4; j++) {
    int count = 0;
    for (int32_t y : train.labels) count += y == j;
    EXPECT_FLOAT_EQ(freq[j], (float)count / 500.0f) << j;
  }
  // saved and loaded with the model
  cnntest::TempDir tmp;
  std::string path = tmp.file("m.safetensors");
  ASSERT_EQ(cnn_net_save(net, path.c_str()), CNN_OK) << cnn_last_error();
  cnn_net *back = nullptr;
  ASSERT_EQ(cnn_net_load(path.c_str(), be.b, &back), CNN_OK) << cnn_last_error();
  float mean2, sd2, freq2[4];
  ASSERT_EQ(cnn_net_data_profile(back, &mean2, &sd2, freq2), 1);
  EXPECT_EQ(mean2, mean);
  EXPECT_EQ(sd2, sd);
  for (int j = 0; j < 4; j++) EXPECT_EQ(freq2[j], freq[j]);
  cnn_net_destroy(back);
  // a profile that does not fit is refused by name
  const float bad_freq[4] = {0.5f, 0.5f, 0.5f, 0.5f};
  EXPECT_EQ(cnn_net_set_data_profile(net, 1, &mean, &sd, 4, bad_freq), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("sum to 2"), std::string::npos) << cnn_last_error();
  EXPECT_EQ(cnn_net_set_data_profile(net, 3, &mean, &sd, 4, freq), CNN_ERR_SHAPE);
  cnn_net_destroy(net);
}

TEST(Training, SgdMomentumLearnsSyntheticQuadrantTask) {
  Backend be;
  cnn_net *net = nullptr;
  double acc = 0;
  ASSERT_EQ(train_small(be.b, CNN_OPTIM_SGD, 0.05f, &acc, &net), CNN_OK) << cnn_last_error();
  EXPECT_GT(acc, 0.95);
  cnn_net_destroy(net);
}

TEST(Training, SameSeedGivesSameWeights) {
  Backend be;
  cnn_net *a = nullptr, *b = nullptr;
  double acc;
  ASSERT_EQ(train_small(be.b, CNN_OPTIM_ADAM, 3e-3f, &acc, &a), CNN_OK);
  ASSERT_EQ(train_small(be.b, CNN_OPTIM_ADAM, 3e-3f, &acc, &b), CNN_OK);
  cnn_param *pa = &a->layers[0]->params[0], *pb = &b->layers[0]->params[0];
  int64_t n = cnn_tensor_numel(pa->value);
  std::vector<float> wa(n), wb(n);
  ASSERT_EQ(cnn_tensor_read(pa->value, wa.data(), n * 4), CNN_OK);
  ASSERT_EQ(cnn_tensor_read(pb->value, wb.data(), n * 4), CNN_OK);
  // same seed, same thread count: bit-identical
  EXPECT_EQ(std::memcmp(wa.data(), wb.data(), n * 4), 0);
  cnn_net_destroy(a);
  cnn_net_destroy(b);
}

// A dataset held as 8-bit pixels (as the IDX and CIFAR loaders give it) trains to the same weights, bit for bit,
// as the same images held as f32 values p / 255, with normalization and a validation split: the values are
// converted per batch with the same arithmetic.
TEST(Training, EightBitPixelsTrainAsTheirFloatValues) {
  Backend be;
  const int n = 240, per = 12 * 12;
  cnntest::Quadrants q(n, 4);
  std::vector<uint8_t> pixels((size_t)n * per);
  std::vector<float> values(pixels.size());
  for (size_t i = 0; i < pixels.size(); i++) {
    pixels[i] = (uint8_t)std::lround(std::min(1.0f, std::max(0.0f, q.images[i])) * 255.0f);
    values[i] = (float)pixels[i] / 255.0f;
  }
  cnn_dataset u8 = q.ds, f32 = q.ds;
  u8.images = nullptr;
  u8.pixels = pixels.data();
  f32.images = values.data();
  std::vector<std::vector<float>> weights;
  for (cnn_dataset *ds : {&u8, &f32}) {
    cnn_dataset *train = nullptr, *val = nullptr;
    ASSERT_EQ(cnn_dataset_split(ds, 0.25, 7, &train, &val), CNN_OK) << cnn_last_error();
    EXPECT_EQ(train->pixels != nullptr, ds == &u8);  // the split keeps the form
    cnn_net *net = nullptr;
    ASSERT_EQ(cnn_net_from_text(kSmallNet, "small", be.b, 9, &net), CNN_OK) << cnn_last_error();
    float mean, sd;
    ASSERT_EQ(cnn_dataset_stats(train, &mean, &sd), CNN_OK);
    ASSERT_EQ(cnn_net_set_normalization(net, 1, &mean, &sd), CNN_OK);
    cnn_train_config cfg = cnntest::quiet_train_config(2, 32);
    ASSERT_EQ(cnn_train(net, train, val, &cfg, nullptr), CNN_OK) << cnn_last_error();
    cnn_metrics *m = nullptr;
    ASSERT_EQ(cnn_evaluate(net, val, 64, &m), CNN_OK) << cnn_last_error();
    std::vector<float> w;
    for (int i = 0; i < net->nlayers; i++)
      for (int p = 0; p < net->layers[i]->nparams; p++) {
        std::vector<float> t((size_t)cnn_tensor_numel(net->layers[i]->params[p].value));
        ASSERT_EQ(cnn_tensor_read(net->layers[i]->params[p].value, t.data(), t.size() * 4), CNN_OK);
        w.insert(w.end(), t.begin(), t.end());
      }
    w.push_back(mean);
    w.push_back(sd);
    w.push_back((float)m->loss);
    cnn_metrics_destroy(m);
    weights.push_back(w);
    cnn_net_destroy(net);
    cnn_dataset_destroy(train);
    cnn_dataset_destroy(val);
  }
  ASSERT_EQ(weights[0].size(), weights[1].size());
  EXPECT_EQ(std::memcmp(weights[0].data(), weights[1].data(), weights[0].size() * 4), 0);
}

TEST(Evaluation, MetricsMatchACountFromPredictions) {
  Backend be;
  cnn_net *net = nullptr;
  double acc;
  ASSERT_EQ(train_small(be.b, CNN_OPTIM_ADAM, 3e-3f, &acc, &net), CNN_OK);
  Synthetic test(300, 77);
  // make a few labels wrong on purpose so that every cell of the arithmetic is exercised
  for (int i = 0; i < 300; i += 10) test.labels[i] = (test.labels[i] + 1) % 4;
  cnn_metrics *m = nullptr;
  ASSERT_EQ(cnn_evaluate(net, &test.ds, 64, &m), CNN_OK) << cnn_last_error();
  std::vector<float> probs(300 * 4);
  ASSERT_EQ(cnn_net_predict(net, test.images.data(), 300, probs.data()), CNN_OK);
  long conf[4][4] = {};
  double loss = 0;
  for (int i = 0; i < 300; i++) {
    int best = 0;
    for (int j = 1; j < 4; j++)
      if (probs[i * 4 + j] > probs[i * 4 + best]) best = j;
    conf[test.labels[i]][best]++;
    loss -= std::log(std::fmax(probs[i * 4 + test.labels[i]], 1e-30f));
  }
  long correct = 0;
  for (int r = 0; r < 4; r++) {
    correct += conf[r][r];
    for (int c = 0; c < 4; c++) EXPECT_EQ(m->confusion[r * 4 + c], conf[r][c]) << r << "," << c;
  }
  EXPECT_NEAR(m->accuracy, correct / 300.0, 1e-12);
  EXPECT_NEAR(m->loss, loss / 300, 1e-3);
  double macro_f1 = 0;
  for (int c = 0; c < 4; c++) {
    long pred = 0, act = 0;
    for (int j = 0; j < 4; j++) {
      pred += conf[j][c];
      act += conf[c][j];
    }
    double p = pred ? (double)conf[c][c] / pred : 0, r = act ? (double)conf[c][c] / act : 0;
    EXPECT_NEAR(m->precision[c], p, 1e-12);
    EXPECT_NEAR(m->recall[c], r, 1e-12);
    EXPECT_EQ(m->support[c], act);
    macro_f1 += (p + r > 0 ? 2 * p * r / (p + r) : 0) / 4;
  }
  EXPECT_NEAR(m->macro_f1, macro_f1, 1e-12);
  EXPECT_LT(m->accuracy, 0.95);  // the flipped labels cap it near 0.9
  cnn_metrics_destroy(m);
  cnn_net_destroy(net);
}

TEST(Training, RejectsDataThatDoesNotFitTheModel) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kSmallNet, "small", be.b, 1, &net), CNN_OK);
  Synthetic data(10, 1);
  cnn_train_config cfg;
  cnn_train_config_defaults(&cfg);
  cfg.progress = nullptr;
  cfg.epochs = 1;
  data.ds.w = 11;  // wrong shape
  EXPECT_EQ(cnn_train(net, &data.ds, nullptr, &cfg, nullptr), CNN_ERR_SHAPE);
  EXPECT_NE(std::string(cnn_last_error()).find("12x12x1"), std::string::npos) << cnn_last_error();
  data.ds.w = 12;
  data.labels[3] = 7;  // beyond the 4 outputs
  EXPECT_EQ(cnn_train(net, &data.ds, nullptr, &cfg, nullptr), CNN_ERR_SHAPE);
  EXPECT_NE(std::string(cnn_last_error()).find("label 7 at sample 3"), std::string::npos) << cnn_last_error();
  data.labels[3] = 0;
  cfg.lr = -1;
  EXPECT_EQ(cnn_train(net, &data.ds, nullptr, &cfg, nullptr), CNN_ERR_INVALID_ARG);
  cnn_net_destroy(net);
}

// The names the command line gives: every value of each enum reads back from its name, and an unknown name is an
// invalid argument whose message lists the names.
TEST(Training, EnumNamesParseBackToTheirValues) {
  for (int i = CNN_OPTIM_ADAM; i <= CNN_OPTIM_RMSPROP; i++) {
    cnn_optimizer_kind k = CNN_OPTIM_ADAM;
    ASSERT_EQ(cnn_optimizer_parse(cnn_optimizer_name((cnn_optimizer_kind)i), &k), CNN_OK) << i;
    EXPECT_EQ(k, i);
  }
  for (int i = CNN_LR_CONSTANT; i <= CNN_LR_COSINE; i++) {
    cnn_lr_schedule s = CNN_LR_CONSTANT;
    ASSERT_EQ(cnn_lr_schedule_parse(cnn_lr_schedule_name((cnn_lr_schedule)i), &s), CNN_OK) << i;
    EXPECT_EQ(s, i);
  }
  for (int i = CNN_MONITOR_VAL_LOSS; i <= CNN_MONITOR_ACCURACY; i++) {
    cnn_monitor m = CNN_MONITOR_VAL_LOSS;
    ASSERT_EQ(cnn_monitor_parse(cnn_monitor_name((cnn_monitor)i), &m), CNN_OK) << i;
    EXPECT_EQ(m, i);
  }
  EXPECT_STREQ(cnn_lr_schedule_name(CNN_LR_COSINE), "cosine");
  EXPECT_STREQ(cnn_monitor_name(CNN_MONITOR_VAL_ACCURACY), "val_accuracy");
  EXPECT_STREQ(cnn_lr_schedule_name((cnn_lr_schedule)3), "?");
  EXPECT_STREQ(cnn_monitor_name((cnn_monitor)-1), "?");
  cnn_lr_schedule s = CNN_LR_STEP;
  EXPECT_EQ(cnn_lr_schedule_parse("linear", &s), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(s, CNN_LR_STEP);
  EXPECT_STREQ(cnn_last_error(), "'linear' is not one of constant, step, cosine");
  cnn_monitor m = CNN_MONITOR_LOSS;
  EXPECT_EQ(cnn_monitor_parse("val_acc", &m), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(m, CNN_MONITOR_LOSS);
  EXPECT_STREQ(cnn_last_error(), "'val_acc' is not one of val_loss, val_accuracy, loss, accuracy");
  EXPECT_EQ(cnn_monitor_parse(nullptr, &m), CNN_ERR_INVALID_ARG);
}

}  // namespace
