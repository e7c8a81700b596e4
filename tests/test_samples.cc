// The sample programs of samples/, built by CMake, run as a user would: samples/predict.c classifies images with a
// model file through the public API and prints what cnn_net_predict gives for them; samples/train.c trains with a
// loop of its own on the step API (cnn_trainer), which gives cnn_train's weights bit for bit when it takes the same
// batches; bad arguments and files give the documented exit statuses and name what is wrong.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <stb_image_write.h>

extern "C" {
#include "cnn/cnn.h"
#include "core/nn/net.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::TempDir;

using cnntest::has;

// Runs a program with arguments (quoted), returns its exit status; stdout and stderr into *out.
int run(const std::string &cmd, std::string *out) {
  FILE *p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  out->clear();
  char buf[512];
  while (fgets(buf, sizeof buf, p)) *out += buf;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *kNet =
    "input 12 12 1\n"
    "conv 4 3 relu padding=same\n"
    "maxpool 2\n"
    "flatten\n"
    "dense 5 softmax\n";

TEST(Samples, PredictPrintsWhatTheLibraryPredicts) {
  TempDir dir;
  cnn_backend *be = nullptr;
  ASSERT_EQ(cnn_backend_create("cpu", &be), CNN_OK);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "sample", be, 5, &net), CNN_OK) << cnn_last_error();
  const char *names[] = {"zero", "one", "two", "three", "four"};
  ASSERT_EQ(cnn_net_set_class_names(net, 5, names), CNN_OK);
  float mean = 0.4f, sd = 0.25f;
  ASSERT_EQ(cnn_net_set_normalization(net, 1, &mean, &sd), CNN_OK);
  const std::string model = dir.file("m.safetensors");
  ASSERT_EQ(cnn_net_save(net, model.c_str()), CNN_OK) << cnn_last_error();
  // two 16x16 images (resized to 12x12 by the loader and by the sample alike)
  std::vector<std::string> pngs;
  for (int i = 0; i < 2; i++) {
    std::vector<unsigned char> px(16 * 16);
    for (size_t j = 0; j < px.size(); j++) px[j] = (unsigned char)((j * (7 + 11 * i) + 13 * i) % 256);
    pngs.push_back(dir.file("img" + std::to_string(i) + ".png"));
    ASSERT_NE(stbi_write_png(pngs[i].c_str(), 16, 16, 1, px.data(), 16), 0);
  }
  std::vector<float> x(2 * 144), probs(2 * 5);
  for (int i = 0; i < 2; i++) ASSERT_EQ(cnn_image_load(pngs[i].c_str(), 12, 12, 1, x.data() + i * 144), CNN_OK);
  ASSERT_EQ(cnn_net_predict(net, x.data(), 2, probs.data()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
  cnn_backend_destroy(be);

  std::string out;
  ASSERT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + pngs[0] + "' '" + pngs[1] + "' --top 5", &out), 0) << out;
  for (int i = 0; i < 2; i++) {
    EXPECT_TRUE(has(out, pngs[i] + "\n")) << out;
    for (int j = 0; j < 5; j++) {  // every class with the library's probability, to the printed digits
      char line[128];
      snprintf(line, sizeof line, "  %d  %-20s %.4f\n", j, names[j], (double)probs[i * 5 + j]);
      EXPECT_TRUE(has(out, line)) << line << "in\n" << out;
    }
  }
  // the first image's most likely class is printed first
  int best = 0;
  for (int j = 1; j < 5; j++)
    if (probs[j] > probs[best]) best = j;
  char first[128];
  snprintf(first, sizeof first, "%s\n  %d  ", pngs[0].c_str(), best);
  EXPECT_TRUE(has(out, first)) << out;

  // usage errors: 2; a file that is not there: 1, naming it
  EXPECT_EQ(run("'" SAMPLE_PREDICT "'", &out), 2) << out;
  EXPECT_TRUE(has(out, "usage")) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + pngs[0] + "' --top 0", &out), 2) << out;
  EXPECT_TRUE(has(out, "--top")) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + pngs[0] + "' --colour", &out), 2) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + dir.file("none.safetensors") + "' '" + pngs[0] + "'", &out), 1) << out;
  EXPECT_TRUE(has(out, "none.safetensors")) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + dir.file("none.png") + "'", &out), 1) << out;
  EXPECT_TRUE(has(out, "none.png")) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + pngs[0] + "' --device tpu", &out), 1) << out;
  EXPECT_TRUE(has(out, "tpu")) << out;
}

// cnn_train with the sequential sampler and cnn_trainer_step on the same batches in the same order: the same
// weights, bit for bit (one step function runs both), with normalization, label smoothing and clipping on.
TEST(Trainer, StepsOnTheSameBatchesGiveCnnTrainsWeights) {
  cnntest::CpuBackend be;
  cnntest::Quadrants q(200, 3);
  std::vector<std::vector<float>> weights;
  for (int way = 0; way < 2; way++) {
    cnn_net *net = nullptr;
    ASSERT_EQ(cnn_net_from_text(kNet, "trainer", be.b, 11, &net), CNN_OK) << cnn_last_error();
    float mean = 0.3f, sd = 0.2f;
    ASSERT_EQ(cnn_net_set_normalization(net, 1, &mean, &sd), CNN_OK);
    cnn_train_config cfg = cnntest::quiet_train_config(1, 32);
    cfg.sampler = CNN_SAMPLER_SEQUENTIAL;
    cfg.label_smoothing = 0.1f;
    cfg.clip_norm = 1.0f;
    if (way == 0) {
      ASSERT_EQ(cnn_train(net, &q.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
    } else {
      cnn_trainer *t = nullptr;
      ASSERT_EQ(cnn_trainer_create(net, &cfg, &t), CNN_OK) << cnn_last_error();
      for (int at = 0; at < 200; at += 32) {
        int n = std::min(32, 200 - at), correct = -1;
        double loss = -1;
        ASSERT_EQ(cnn_trainer_step(t, q.images.data() + (size_t)at * 144, q.labels.data() + at, n, &loss, &correct),
                  CNN_OK) << cnn_last_error();
        EXPECT_GT(loss, 0.0);
        EXPECT_GE(correct, 0);
        EXPECT_LE(correct, n);
      }
      EXPECT_EQ(cnn_trainer_steps(t), 7);
      // bad calls name what is wrong
      int32_t bad = 9;
      EXPECT_EQ(cnn_trainer_step(t, q.images.data(), &bad, 1, nullptr, nullptr), CNN_ERR_INVALID_ARG);
      EXPECT_NE(std::string(cnn_last_error()).find("label 9"), std::string::npos) << cnn_last_error();
      EXPECT_EQ(cnn_trainer_set_lr(t, -1.0f), CNN_ERR_INVALID_ARG);
      EXPECT_EQ(cnn_trainer_lr(t), 1e-3f);
      cnn_trainer_destroy(t);
      cnn_trainer *pruning = nullptr;  // pruning's schedule is cnn_train's: refused, not ignored
      cnn_train_config pc = cfg;
      pc.prune.enabled = 1;
      EXPECT_EQ(cnn_trainer_create(net, &pc, &pruning), CNN_ERR_UNSUPPORTED);
      EXPECT_NE(std::string(cnn_last_error()).find("pruning"), std::string::npos) << cnn_last_error();
      EXPECT_EQ(pruning, nullptr);
    }
    std::vector<float> w;
    for (int i = 0; i < net->nlayers; i++)
      for (int p = 0; p < net->layers[i]->nparams; p++) {
        const cnn_tensor *x = net->layers[i]->params[p].value;
        std::vector<float> v((size_t)cnn_tensor_numel(x));
        ASSERT_EQ(cnn_tensor_read(x, v.data(), v.size() * 4), CNN_OK);
        w.insert(w.end(), v.begin(), v.end());
      }
    weights.push_back(w);
    cnn_net_destroy(net);
  }
  ASSERT_FALSE(weights[0].empty());
  ASSERT_EQ(weights[0].size(), weights[1].size());
  EXPECT_EQ(std::memcmp(weights[0].data(), weights[1].data(), weights[0].size() * 4), 0);
}

// samples/train.c on the quadrant task as IDX files: epochs with a halved learning rate, the test accuracy, and a
// model file that gives that accuracy when loaded.
TEST(Samples, TrainRunsItsOwnLoopAndSavesAModel) {
  TempDir dir;
  cnntest::write_quadrant_idx(dir.path(), "train", 400, 5);
  cnntest::write_quadrant_idx(dir.path(), "t10k", 100, 6);
  cnntest::write_file(dir.file("net.cnn"), kNet);
  const std::string model = dir.file("m.safetensors");
  std::string out;
  ASSERT_EQ(run("'" SAMPLE_TRAIN "' '" + dir.file("net.cnn") + "' '" + model + "' --data 'mnist:" + dir.path() +
                    "' --epochs 3 --batch 16 --lr 0.004",
                &out),
            0)
      << out;
  EXPECT_TRUE(has(out, "epoch 1/3: lr 0.004 ")) << out;
  EXPECT_TRUE(has(out, "epoch 3/3: lr 0.001 ")) << out;
  size_t at = out.find("test accuracy ");
  ASSERT_NE(at, std::string::npos) << out;
  double acc = std::stod(out.substr(at + 14));
  EXPECT_GT(acc, 0.6) << out;  // chance is 0.25
  EXPECT_TRUE(has(out, "(100 images, 75 steps)")) << out;
  cnn_backend *be = nullptr;
  ASSERT_EQ(cnn_backend_create("cpu", &be), CNN_OK);
  cnn_net *net = nullptr;
  cnn_dataset *test = nullptr;
  ASSERT_EQ(cnn_net_load(model.c_str(), be, &net), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_dataset_load(("mnist:" + dir.path()).c_str(), "test", &test), CNN_OK) << cnn_last_error();
  cnn_metrics *m = nullptr;
  ASSERT_EQ(cnn_evaluate(net, test, 64, &m), CNN_OK) << cnn_last_error();
  char printed[32];
  snprintf(printed, sizeof printed, "test accuracy %.4f", m->accuracy);
  EXPECT_TRUE(has(out, printed)) << printed << " in\n" << out;
  cnn_metrics_destroy(m);
  cnn_dataset_destroy(test);
  cnn_net_destroy(net);
  cnn_backend_destroy(be);

  EXPECT_EQ(run("'" SAMPLE_TRAIN "' '" + dir.file("net.cnn") + "'", &out), 2) << out;
  EXPECT_EQ(run("'" SAMPLE_TRAIN "' '" + dir.file("net.cnn") + "' '" + model + "' --epochs 0", &out), 2) << out;
  EXPECT_TRUE(has(out, "--epochs")) << out;
  EXPECT_EQ(run("'" SAMPLE_TRAIN "' '" + dir.file("net.cnn") + "' '" + model + "' --data 'mnist:" + dir.file("none") +
                    "'",
                &out),
            1)
      << out;
  EXPECT_TRUE(has(out, "none")) << out;
}

}  // namespace
