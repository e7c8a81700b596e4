// The data pipeline from the command line: cnn train on image folders and CSV lists (class counts, bad files,
// --strict, --sampler, augmentation from the flag or the model's augment line), cnn eval on a folder, and
// cnn augment-preview.
#include <gtest/gtest.h>

#include <stb_image.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "tests/fixtures.h"
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

// DIR/{train,test}/{bright,dark}: bright images are light, dark ones dark; PNG, JPEG and BMP mixed. Then the files
// `bad` (path in DIR, contents) that are not good images.
void write_folders(const TempDir &dir, std::initializer_list<std::pair<const char *, const char *>> bad = {}) {
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
  for (const auto &f : bad) write_file(dir.file(f.first), f.second);
}

}  // namespace

TEST(DataCli, TrainsOnAFolderReportsClassCountsAndSkipsBadFiles) {
  TempDir dir;
  write_folders(dir, {{"data/train/dark/broken.png", "not a png"}, {"data/train/bright/empty.jpg", ""}});
  std::string out;
  int rc = run_cnn({"train", "--model", dir.file("model.cnn"), "--data", "folder:" + dir.file("data"), "--epochs", "2",
                    "--batch", "4", "--lr", "0.01", "--augment", "flip=h,shift=0.1", "--workers", "2", "--val-split",
                    "0.25", "--resize", "10x10", "--out", dir.file("m.safetensors"), "--quiet"},
                   &out);
  ASSERT_EQ(rc, 0) << out;
  cnntest::expect_contains_all(
      out, {"class counts (training): 0 bright: 9, 1 dark: 10", "augmentation: flip=h,shift=0.1",
            "warning: skipping a bad file", "broken.png", "empty.jpg", "2 bad image files skipped", "test accuracy"});
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

// Counts of one read as one: "1 bad image file", not "1 files".
TEST(DataCli, MessagesCountOneInTheSingular) {
  TempDir dir;
  write_folders(dir, {{"data/train/dark/broken.png", "not a png"}, {"data/train/dark/notes.txt", "not an image"}});
  std::string out;
  int rc = run_cnn({"train", "--model", dir.file("model.cnn"), "--data", "folder:" + dir.file("data"), "--epochs", "1",
                    "--batch", "4", "--val-split", "0", "--resize", "10x10", "--out", dir.file("m.safetensors"),
                    "--quiet"},
                   &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "1 file without an image extension (.jpg, .jpeg, .png, .bmp) was left out")) << out;
  EXPECT_TRUE(contains(out, "; 1 bad image file skipped")) << out;
  rc = run_cnn({"augment-preview", "--data", "folder:" + dir.file("data"), "--size", "8x8x3", "--samples", "1",
                "--variants", "1", "--augment", "flip=h", "--out", dir.file("g.png")},
               &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, ": 1 sample (rows) of 8x8x3, the evaluation view then 1 augmented version (flip=h)"))
      << out;
}

// --limit N: a quick run on the first N samples of each split (training, validation, test), in train, eval and
// augment-preview.
TEST(DataCli, LimitTakesTheFirstSamplesOfEachSplit) {
  TempDir dir;
  write_folders(dir);
  std::string out;
  int rc = run_cnn({"train", "--model", dir.file("model.cnn"), "--data", "folder:" + dir.file("data"), "--epochs", "1",
                    "--batch", "4", "--val-split", "0.5", "--limit", "5", "--resize", "10x10", "--out",
                    dir.file("m.safetensors"), "--quiet"},
                   &out);
  ASSERT_EQ(rc, 0) << out;
  cnntest::expect_contains_all(
      out, {"--limit 5: a quick run on the first 5 samples of each split", "5 training images, 5 validation, 5 test"});
  // the first 5 of the training half are bright: the folder lists bright before dark
  EXPECT_TRUE(contains(out, "class counts (training): 0 bright: 5, 1 dark: 0")) << out;
  rc = run_cnn({"eval", "--model", dir.file("m.safetensors"), "--data", "folder:" + dir.file("data"), "--limit", "3"},
               &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, "samples: 3")) << out;
  rc = run_cnn({"augment-preview", "--data", "folder:" + dir.file("data"), "--size", "8x8x3", "--limit", "2",
                "--augment", "flip=h", "--out", dir.file("g.png")},
               &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(out, ": 2 samples (rows)")) << out;
  rc = run_cnn({"train", "--model", dir.file("model.cnn"), "--limit", "0"}, &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_TRUE(contains(out, "--limit: '0' is not an integer from 1")) << out;
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
  cnntest::expect_contains_all(out, {"class counts (training): 0 bright: 12, 1 dark: 3",
                                     "the oversample sampler draws 12 of each of the 2 classes per epoch (24 images)",
                                     "augmentation: flip=hv,erase=0.5 (the model's augment line)",
                                     "normalizing inputs by mean", "test accuracy"});

  // the imbalance gets a hint, unless the loss is weighted already
  const std::vector<std::string> plain = {"train", "--model", dir.file("model.cnn"), "--data",
                                          "csv:" + dir.file("train.csv"), "--epochs", "1", "--batch", "4",
                                          "--val-split", "0", "--out", dir.file("w.safetensors"), "--quiet"};
  ASSERT_EQ(run_cnn(plain, &out), 0) << out;
  EXPECT_TRUE(contains(out, "the classes are imbalanced (3 to 12): consider --sampler oversample or --class-weights "
                            "balanced")) << out;
  for (const char *weights : {"balanced", "1,4"}) {
    std::vector<std::string> args = plain;
    args.insert(args.end(), {"--class-weights", weights});
    ASSERT_EQ(run_cnn(args, &out), 0) << out;
    EXPECT_FALSE(contains(out, "consider")) << out;
  }

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

// `cnn train --resize` is stored in the model: cnn eval without --resize evaluates as with it, and cnn predict
// prepares each image the same way (resize, then centre crop), so its probabilities give eval's loss back. The
// images make the crop matter: "ring" has a bright 2-pixel border around a dark centre, "spot" the reverse; resized
// from 10x10 to 14x14, the centred 8x8 crop sees little of the border, while resizing straight to 8x8 keeps it.
TEST(DataCli, TheTrainingResizeIsStoredAndUsedByEvalAndPredict) {
  TempDir dir;
  std::vector<std::string> test_images;
  std::vector<int> labels;
  const char *classes[2] = {"ring", "spot"};
  for (const char *split : {"train", "test"})
    for (int cls = 0; cls < 2; cls++) {
      const std::string sub = dir.file(std::string("data/") + split + "/" + classes[cls]);
      ASSERT_EQ(system(("mkdir -p " + sub).c_str()), 0);
      for (int i = 0; i < (split[1] == 'r' ? 12 : 3); i++) {
        std::vector<unsigned char> px(10 * 10 * 3);
        for (int y = 0; y < 10; y++)
          for (int x = 0; x < 10; x++) {
            const bool border = y < 2 || y >= 8 || x < 2 || x >= 8;
            const int base = (border != (cls == 1)) ? 200 : 30;
            for (int ch = 0; ch < 3; ch++) px[(y * 10 + x) * 3 + ch] = (unsigned char)(base + (x * 3 + y * 5 + i) % 20);
          }
        const std::string path = sub + "/" + std::to_string(i) + ".png";
        ASSERT_TRUE(stbi_write_png(path.c_str(), 10, 10, 3, px.data(), 30));
        if (split[1] == 'e') {
          test_images.push_back(path);
          labels.push_back(cls);
        }
      }
    }
  write_file(dir.file("model.cnn"), kModel);
  std::string out;
  int rc = run_cnn({"train", "--model", dir.file("model.cnn"), "--data", "folder:" + dir.file("data"), "--epochs", "4",
                    "--batch", "4", "--lr", "0.01", "--val-split", "0", "--resize", "14x14", "--seed", "3", "--out",
                    dir.file("m.safetensors"), "--quiet"},
                   &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_TRUE(contains(cnntest::read_file(dir.file("m.safetensors")), "\"resize\":\"14x14\"")) << "no resize metadata";

  std::string stored, given, plain;
  const std::string data = "folder:" + dir.file("data");
  ASSERT_EQ(run_cnn({"eval", "--model", dir.file("m.safetensors"), "--data", data}, &stored), 0) << stored;
  ASSERT_EQ(run_cnn({"eval", "--model", dir.file("m.safetensors"), "--data", data, "--resize", "14x14"}, &given), 0)
      << given;
  EXPECT_EQ(stored, given);
  ASSERT_EQ(run_cnn({"eval", "--model", dir.file("m.safetensors"), "--data", data, "--resize", "8x8"}, &plain), 0)
      << plain;
  const size_t at = stored.find("loss: "), plain_at = plain.find("loss: ");
  ASSERT_NE(at, std::string::npos) << stored;
  ASSERT_NE(plain_at, std::string::npos) << plain;
  const double eval_loss = std::stod(stored.substr(at + 6)), plain_loss = std::stod(plain.substr(plain_at + 6));
  EXPECT_GT(std::fabs(eval_loss - plain_loss), 0.01) << "the resize made no difference: " << stored << plain;

  // predict every test image: the mean of -log p(its class) is eval's loss, not the loss without the resize
  std::vector<std::string> args = {"predict", "--model", dir.file("m.safetensors"), "--top", "2"};
  args.insert(args.end(), test_images.begin(), test_images.end());
  ASSERT_EQ(run_cnn(args, &out), 0) << out;
  double loss = 0.0;
  size_t pos = 0;
  for (size_t k = 0; k < labels.size(); k++) {
    pos = out.find(test_images[k], pos);
    ASSERT_NE(pos, std::string::npos) << out;
    double p[2] = {-1.0, -1.0};
    for (int r = 0; r < 2; r++) {
      pos = out.find("(class ", pos);
      ASSERT_NE(pos, std::string::npos) << out;
      const int cls = out[pos + 7] - '0';
      ASSERT_TRUE(cls == 0 || cls == 1) << out;
      const size_t close = out.find(')', pos);
      p[cls] = std::stod(out.substr(close + 1));
      pos = close;
    }
    loss -= std::log(std::max(p[labels[k]], 1e-4));
  }
  loss /= (double)labels.size();
  EXPECT_NEAR(loss, eval_loss, 1e-3) << out << stored;
}
