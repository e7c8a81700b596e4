// The data pipeline from the command line: cnn train on image folders and CSV lists (class counts, bad files,
// --strict, --sampler, augmentation from the flag or the model's augment line), cnn eval on a folder, and
// cnn augment-preview.
#include <gtest/gtest.h>

#include <stb_image.h>
#include <stb_image_write.h>

#include <string>
#include <vector>

#include "tests/util.h"

using cnntest::run_cnn;
using cnntest::TempDir;
using cnntest::write_file;

namespace {

bool contains(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

const char *kModel =
    "input 8 8 3\n"
    "conv 4 3 relu padding=same\n"
    "globalavgpool\n"
    "dense 2\n";

// DIR/{train,test}/{bright,dark}: bright images are light, dark ones dark; PNG, JPEG and BMP mixed.
void write_folders(const TempDir &dir) {
  ASSERT_EQ(system(("mkdir -p " + dir.file("data/train/bright") + " " + dir.file("data/train/dark") + " " +
                    dir.file("data/test/bright") + " " + dir.file("data/test/dark"))
                       .c_str()),
            0);
  std::vector<unsigned char> px(10 * 10 * 3);
  for (const char *split : {"train", "test"})
    for (int cls = 0; cls < 2; cls++)
      for (int i = 0; i < (split[1] == 'r' ? 12 : 4); i++) {
        for (size_t p = 0; p < px.size(); p++) px[p] = (unsigned char)(cls ? 20 + (p * 7 + i) % 40 : 190 + (p * 5 + i) % 60);
        std::string base = dir.file(std::string("data/") + split + "/" + (cls ? "dark/" : "bright/") + std::to_string(i));
        if (i % 3 == 0) ASSERT_TRUE(stbi_write_png((base + ".png").c_str(), 10, 10, 3, px.data(), 30));
        else if (i % 3 == 1) ASSERT_TRUE(stbi_write_jpg((base + ".jpg").c_str(), 10, 10, 3, px.data(), 90));
        else ASSERT_TRUE(stbi_write_bmp((base + ".bmp").c_str(), 10, 10, 3, px.data()));
      }
  write_file(dir.file("model.cnn"), kModel);
}

}  // namespace

TEST(DataCli, TrainsOnAFolderReportsClassCountsAndSkipsBadFiles) {
  TempDir dir;
  write_folders(dir);
  write_file(dir.file("data/train/dark/broken.png"), "not a png");
  write_file(dir.file("data/train/bright/empty.jpg"), "");
  std::string out;
  int rc = run_cnn({"train", "--model", dir.file("model.cnn"), "--data", "folder:" + dir.file("data"), "--epochs", "2",
                    "--batch", "4", "--lr", "0.01", "--augment", "flip=h,shift=0.1", "--workers", "2", "--val-split",
                    "0.25", "--resize", "10x10", "--out", dir.file("m.safetensors"), "--quiet"},
                   &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "class counts (training): 0 bright: 9, 1 dark: 10")) << out;
  EXPECT_TRUE(contains(out, "augmentation: flip=h,shift=0.1")) << out;
  EXPECT_TRUE(contains(out, "warning: skipping a bad file")) << out;
  EXPECT_TRUE(contains(out, "broken.png")) << out;
  EXPECT_TRUE(contains(out, "empty.jpg")) << out;
  EXPECT_TRUE(contains(out, "2 bad image files skipped")) << out;
  EXPECT_TRUE(contains(out, "test accuracy")) << out;
  // one warning per file, whichever epochs and sets met it
  size_t warnings = 0;
  for (size_t at = 0; (at = out.find("warning: skipping", at)) != std::string::npos; at++) warnings++;
  EXPECT_EQ(warnings, 2u) << out;

  // cnn eval on the folder's test split, with the same resize
  rc = run_cnn({"eval", "--model", dir.file("m.safetensors"), "--data", "folder:" + dir.file("data"), "--resize",
                "10x10"},
               &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "samples: 8")) << out;
  EXPECT_TRUE(contains(out, "bright")) << out;

  // --strict stops at the first bad file, naming it
  rc = run_cnn({"train", "--model", dir.file("model.cnn"), "--data", "folder:" + dir.file("data/train"), "--epochs",
                "1", "--batch", "4", "--strict", "--val-split", "0", "--out", dir.file("s.safetensors"), "--quiet"},
               &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(contains(out, "broken.png") || contains(out, "empty.jpg")) << out;
  EXPECT_TRUE(contains(out, "no test set")) << out;
}

TEST(DataCli, CsvListsSamplersAndTheModelsAugmentLine) {
  TempDir dir;
  write_folders(dir);
  // an imbalanced list: 12 bright, 3 dark
  std::string csv = "path,label\n";
  for (int i = 0; i < 12; i++)
    csv += "data/train/bright/" + std::to_string(i) + (i % 3 == 0 ? ".png" : i % 3 == 1 ? ".jpg" : ".bmp") + ",bright\n";
  for (int i = 0; i < 3; i++)
    csv += "data/train/dark/" + std::to_string(i) + (i % 3 == 0 ? ".png" : i % 3 == 1 ? ".jpg" : ".bmp") + ",dark\n";
  write_file(dir.file("train.csv"), csv);
  write_file(dir.file("aug.cnn"), std::string(kModel) + "augment flip=hv erase=0.5   # the training section\n");
  std::string out;
  int rc = run_cnn({"train", "--model", dir.file("aug.cnn"), "--data", "csv:" + dir.file("train.csv"), "--test-data",
                    "folder:" + dir.file("data/test"), "--epochs", "1", "--batch", "4", "--sampler", "oversample",
                    "--val-split", "0", "--normalize", "--out", dir.file("m.safetensors"), "--quiet"},
                   &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "class counts (training): 0 bright: 12, 1 dark: 3")) << out;
  EXPECT_TRUE(contains(out, "the oversample sampler draws 12 of each of the 2 classes per epoch (24 images)")) << out;
  EXPECT_TRUE(contains(out, "augmentation: flip=hv,erase=0.5 (the model's augment line)")) << out;
  EXPECT_TRUE(contains(out, "normalizing inputs by mean")) << out;
  EXPECT_TRUE(contains(out, "test accuracy")) << out;

  rc = run_cnn({"train", "--model", dir.file("aug.cnn"), "--data", "csv:" + dir.file("train.csv"), "--augment",
                "wobble=1", "--quiet"},
               &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_TRUE(contains(out, "--augment")) << out;
  EXPECT_TRUE(contains(out, "wobble")) << out;
  rc = run_cnn({"train", "--model", dir.file("aug.cnn"), "--data", "csv:" + dir.file("train.csv"), "--sampler", "x"},
               &out);
  EXPECT_EQ(rc, 2) << out;
  write_file(dir.file("bad.cnn"), std::string(kModel) + "augment zoom=7\n");
  rc = run_cnn({"train", "--model", dir.file("bad.cnn"), "--data", "csv:" + dir.file("train.csv")}, &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(contains(out, "bad.cnn:5")) << out;
}

TEST(DataCli, AugmentPreviewWritesAGridOfTheEvaluationViewAndAugmentedVersions) {
  TempDir dir;
  write_folders(dir);
  std::string out;
  int rc = run_cnn({"augment-preview", "--data", "folder:" + dir.file("data"), "--size", "16x16x3", "--samples", "3",
                    "--variants", "4", "--augment", "flip=h,rotate=0.1,erase=0.5", "--out", dir.file("grid.png")},
                   &out);
  ASSERT_EQ(rc, 0) << out;
  int w = 0, h = 0, n = 0;
  unsigned char *px = stbi_load(dir.file("grid.png").c_str(), &w, &h, &n, 0);
  ASSERT_NE(px, nullptr);
  EXPECT_EQ(w, 5 * (16 + 2) + 2);  // 1 + 4 columns with 2-pixel borders
  EXPECT_EQ(h, 3 * (16 + 2) + 2);
  EXPECT_EQ(n, 3);
  stbi_image_free(px);
  // the model gives the size and the augmentation
  write_file(dir.file("aug.cnn"), std::string(kModel) + "augment flip=h\n");
  rc = run_cnn({"augment-preview", "--data", "folder:" + dir.file("data"), "--model", dir.file("aug.cnn"), "--out",
                dir.file("g2.png")},
               &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "of 8x8x3")) << out;
  EXPECT_TRUE(contains(out, "(flip=h)")) << out;
  rc = run_cnn({"augment-preview", "--data", "folder:" + dir.file("data"), "--size", "8x8"}, &out);
  EXPECT_EQ(rc, 2) << out;
  rc = run_cnn({"augment-preview", "--data", "folder:" + dir.file("data"), "--size", "8x8x3", "--out",
                dir.file("g3.png")},
               &out);
  EXPECT_EQ(rc, 2) << out;  // no --augment and no model
}
