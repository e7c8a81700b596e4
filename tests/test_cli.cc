// The cnn program as a user meets it: bad flags and inputs give a message naming the culprit and a non-zero
// exit; the seed CNN trains on Fashion-MNIST, evaluates and classifies an image.
#include <gtest/gtest.h>
#include <stb_image_write.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::run_cnn;

const std::string kSeed = std::string(CNN_SOURCE_DIR) + "/samples/models/seed_cnn.cnn";

using cnntest::has;

TEST(Cli, HelpAndUnknownCommands) {
  std::string out;
  EXPECT_EQ(run_cnn({"--help"}, &out), 0);
  EXPECT_TRUE(has(out, "train")) << out;
  EXPECT_EQ(run_cnn({"frobnicate"}, &out), 2);
  EXPECT_TRUE(has(out, "unknown command 'frobnicate'")) << out;
  EXPECT_EQ(run_cnn({}, &out), 2);
  EXPECT_EQ(run_cnn({"train", "--help"}, &out), 0);
  EXPECT_TRUE(has(out, "--metrics-json")) << out;
  // the plateau callback follows --monitor, as every callback does
  EXPECT_TRUE(has(out, "--plateau-factor when the --monitor metric stalls")) << out;
  EXPECT_FALSE(has(out, "val loss stalls")) << out;
  EXPECT_TRUE(has(out, "shuffle, sequential (the data's order, every epoch), oversample")) << out;
}

TEST(Cli, BadFlagsNameTheFlag) {
  const std::vector<cnntest::RefusedArgs> cases = {
      {{"train", "--model", kSeed, "--epochz", "3"}, "unknown flag '--epochz'"},
      {{"train", "--model", kSeed, "--epochs", "three"}, "--epochs: 'three' is not an integer"},
      {{"train", "--model", kSeed, "--epochs", "0"}, "--epochs: '0' is not an integer from 1"},
      {{"train", "--model", kSeed, "--lr", "fast"}, "--lr: 'fast' is not a number"},
      {{"train", "--model", kSeed, "--lr", "nan"}, "--lr: 'nan' is not a number"},
      {{"train", "--model", kSeed, "--batch"}, "--batch needs a value"},
      {{"train", "--model", kSeed, "--optimizer", "adagrad"},
       "--optimizer: 'adagrad' is not one of adam, adamw, sgd, rmsprop"},
      {{"train", "--model", kSeed, "--lr-schedule", "linear"}, "--lr-schedule: 'linear' is not one of constant, step"},
      {{"train", "--model", kSeed, "--class-weights", "1,x"}, "--class-weights: expected 'balanced' or"},
      {{"train", "--model", kSeed, "--class-weights", "1;2"}, "--class-weights: expected a ',' after weight 1"},
      {{"train", "--model", kSeed, "--nesterov"}, "--nesterov needs --optimizer sgd"},
      {{"train", "--model", kSeed, "--label-smoothing", "1"}, "--label-smoothing: '1' is not"},
      {{"train", "--model", kSeed, "--warmup-epochs", "-1"}, "--warmup-epochs: '-1' is not"},
      {{"train", "--model", kSeed, "--seed", "-4"}, "--seed: '-4' is not a non-negative integer"},
      {{"train", "--model", kSeed, "--epochs", "1", "--epochs", "2"}, "--epochs is given twice"},
      {{"train", "--epochs", "1"}, "--model FILE is required"},
      {{"train", "--model", kSeed, "-e", "1"}, "unknown option '-e'"},
      {{"train", "--model", kSeed, "--quiet=yes"}, "--quiet takes no value"},
      {{"train", "--model", kSeed, "stray"}, "unexpected argument 'stray'"},
      {{"train", "--model", kSeed, "--device", "tpu"}, "unknown device 'tpu'"},
      {{"eval"}, "--model FILE is required"},
      {{"predict", "--model", "m.safetensors"}, "at least one IMAGE"},
      {{"summary"}, "expected one MODEL"},
  };
  cnntest::expect_refused({}, cases, 0);
}

// A value that no run could take (an unknown device or precision, a bad augmentation list or split) is a usage
// error, exit status 2 as the README promises, in every command that takes the flag; a missing file stays 1.
TEST(Cli, BadFlagValuesExitWithTheUsageStatus) {
  const std::vector<cnntest::RefusedArgs> cases = {
      {{"train", "--model", kSeed, "--device", "tpu"}, "--device: unknown device 'tpu'"},
      {{"train", "--model", kSeed, "--device", "cpu:7"}, "--device:"},
      {{"train", "--model", kSeed, "--precision", "fp8"}, "--precision: unknown precision 'fp8'"},
      {{"train", "--model", kSeed, "--device", "cpu", "--precision", "fp16"}, "--precision: precision fp16 needs"},
      {{"train", "--model", kSeed, "--augment", "wobble=1"}, "--augment: augment: unknown key 'wobble'"},
      {{"train", "--model", kSeed, "--augment", "zoom=7"}, "--augment: augment: zoom=7"},
      {{"augment-preview", "--augment", "wobble=1"}, "--augment: augment: unknown key 'wobble'"},
      {{"augment-preview", "--augment", "flip=h", "--split", "val"}, "--split: 'val' is not one of train, test"},
      {{"eval", "--model", "m.safetensors", "--split", "val"}, "--split: 'val' is not one of train, test"},
      {{"predict", "--model", kSeed, "--device", "tpu", "x.png"}, "--device: unknown device 'tpu'"},
      {{"explain", "--model", kSeed, "--device", "tpu", "x.png"}, "--device: unknown device 'tpu'"},
      {{"attack", "--model", kSeed, "--eps", "0.1", "--device", "tpu", "x.png"}, "--device: unknown device 'tpu'"},
      {{"bench", "--model", kSeed, "--precision", "fp8"}, "--precision: unknown precision 'fp8'"},
      {{"bench", "--model", kSeed, "--device", "cpu", "--precision", "bf16"}, "--precision: precision bf16 needs"},
  };
  cnntest::expect_refused({}, cases, 2);
}

TEST(Cli, MissingDatasetSaysHowToGetIt) {
  cnntest::TempDir dir;
  std::string out;
  EXPECT_EQ(run_cnn({"train", "--model", kSeed, "--data", "fashion-mnist:" + dir.path(), "--epochs", "1"}, &out), 1);
  EXPECT_TRUE(has(out, dir.path())) << out;
  EXPECT_TRUE(has(out, "--data")) << out;
}

TEST(Cli, BadModelDefinitionNamesTheLine) {
  cnntest::TempDir dir;
  cnntest::write_file(dir.file("bad.cnn"), "input 28 28 1\nconv 32 3 relu\nmaxpool two\n");
  std::string out;
  EXPECT_EQ(run_cnn({"summary", dir.file("bad.cnn")}, &out), 1);
  EXPECT_TRUE(has(out, "bad.cnn:3: maxpool: size: 'two'")) << out;
  EXPECT_EQ(run_cnn({"train", "--model", dir.file("bad.cnn"), "--epochs", "1"}, &out), 1);
  EXPECT_TRUE(has(out, "bad.cnn:3")) << out;
}

TEST(Cli, SummaryPrintsTotals) {
  std::string out;
  ASSERT_EQ(run_cnn({"summary", kSeed}, &out), 0) << out;
  EXPECT_TRUE(has(out, "Total params: 163850")) << out;
}

TEST(Cli, CorruptModelFilesAreRefused) {
  cnntest::TempDir dir;
  cnntest::write_file(dir.file("junk.safetensors"), "this is not a model");
  std::string out;
  EXPECT_EQ(run_cnn({"eval", "--model", dir.file("junk.safetensors")}, &out), 1);
  EXPECT_TRUE(has(out, "junk.safetensors")) << out;
  EXPECT_EQ(run_cnn({"predict", "--model", dir.file("none.safetensors"), "x.png"}, &out), 1);
  EXPECT_TRUE(has(out, "none.safetensors")) << out;
}

// The foundation's end-to-end check: one epoch of the seed CNN on Fashion-MNIST reaches at least 80% test
// accuracy; the saved model evaluates to the same accuracy and classifies a PNG of a test image.
TEST(EndToEnd, SeedCnnOneEpochOnFashionMnist) {
  if (access(CNN_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0)
    GTEST_SKIP() << "Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)";
  cnntest::TempDir dir;
  std::string model = dir.file("seed.safetensors"), json = dir.file("metrics.json"), out;
  ASSERT_EQ(run_cnn({"train", "--model", kSeed, "--epochs", "1", "--batch", "64", "--lr", "0.001", "--seed", "1",
                     "--out", model, "--metrics-json", json},
                    &out),
            0)
      << out;
  std::string metrics = cnntest::read_file(json);
  double test_acc = cnntest::metrics_test_accuracy(json);
  ASSERT_GE(test_acc, 0.0) << "no test accuracy in " << metrics;
  EXPECT_GE(test_acc, 0.80) << out;
  EXPECT_TRUE(has(metrics, "\"val_accuracy\"")) << metrics;
  EXPECT_TRUE(has(metrics, "\"confusion_matrix\"")) << metrics;
  EXPECT_TRUE(has(out, "img/s")) << out;

  ASSERT_EQ(run_cnn({"eval", "--model", model}, &out), 0) << out;
  char want[64];
  snprintf(want, sizeof want, "accuracy: %.4f", test_acc);
  EXPECT_TRUE(has(out, want)) << "expected " << want << " in " << out;
  EXPECT_TRUE(has(out, "Ankle boot")) << out;
  EXPECT_TRUE(has(out, "confusion matrix")) << out;

  // a trouser from the test set, written as a PNG: the top class should be Trouser
  cnn_dataset *test = nullptr;
  ASSERT_EQ(cnn_dataset_load("fashion-mnist", "test", &test), CNN_OK) << cnn_last_error();
  int64_t idx = -1;
  for (int64_t i = 0; i < test->n && idx < 0; i++)
    if (test->labels[i] == 1) idx = i;
  ASSERT_GE(idx, 0);
  std::vector<unsigned char> px(28 * 28);
  ASSERT_NE(test->pixels, nullptr);
  for (int i = 0; i < 28 * 28; i++) px[i] = test->pixels[idx * 784 + i];
  cnn_dataset_destroy(test);
  std::string png = dir.file("trouser.png");
  ASSERT_NE(stbi_write_png(png.c_str(), 28, 28, 1, px.data(), 28), 0);
  cnntest::write_file(dir.file("broken.png"), "\x89PNG\r\n\x1a\n broken");
  ASSERT_EQ(run_cnn({"predict", "--model", model, "--top", "2", png, dir.file("broken.png")}, &out), 1) << out;
  EXPECT_TRUE(has(out, "1. Trouser")) << out;
  EXPECT_TRUE(has(out, "broken.png")) << out;
}

}  // namespace
