// Augmentation (cnn/pipeline.h, core/data/augment.c): parsing, the fill modes, each transform's defining property,
// and reproducibility from the seed.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "cnn/pipeline.h"
#include "core/data/augment.h"

namespace {

std::string last_error() { return cnn_last_error(); }
bool contains(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

cnn_augment parse(const char *text) {
  cnn_augment a;
  EXPECT_EQ(cnn_augment_parse(text, &a), CNN_OK) << text << ": " << last_error();
  return a;
}

// An (h, w, c) image whose values are distinct: (y * w + x) * c + k, scaled into [0, 1).
std::vector<float> ramp(int h, int w, int c) {
  std::vector<float> v((size_t)h * w * c);
  for (size_t i = 0; i < v.size(); i++) v[i] = (float)i / (float)v.size();
  return v;
}

std::vector<float> augmented(const cnn_augment &a, uint64_t seed, std::vector<float> img, int h, int w, int c) {
  EXPECT_EQ(cnn_augment_image(&a, seed, img.data(), h, w, c), CNN_OK) << last_error();
  return img;
}

}  // namespace

TEST(Augment, ParsesTheIssueExampleAndFormatsItBack) {
  cnn_augment a = parse("flip=h,rotate=0.05,zoom=0.1,shift=0.1");
  EXPECT_EQ(a.flip_h, 1);
  EXPECT_EQ(a.flip_v, 0);
  EXPECT_FLOAT_EQ(a.rotate, 0.05f);
  EXPECT_FLOAT_EQ(a.zoom, 0.1f);
  EXPECT_FLOAT_EQ(a.shift_h, 0.1f);
  EXPECT_FLOAT_EQ(a.shift_w, 0.1f);
  EXPECT_EQ(a.fill, CNN_FILL_REFLECT);
  EXPECT_TRUE(cnn_augment_active(&a));
  const char *texts[] = {"flip=hv,shift=0.1x0.2,crop=4,brightness=0.2,contrast=0.3,erase=0.5,erase_value=0,fill=constant,"
                         "fill_value=0.5",
                         "flip=v,crop,fill=nearest", "none"};
  for (const char *t : texts) {
    cnn_augment x = parse(t), y;
    char buf[512];
    cnn_augment_format(&x, buf, sizeof buf);
    EXPECT_EQ(std::string(buf), std::string(t));
    ASSERT_EQ(cnn_augment_parse(buf, &y), CNN_OK) << buf;
    EXPECT_EQ(std::memcmp(&x, &y, sizeof x), 0) << buf;
  }
  cnn_augment empty = parse("");
  EXPECT_FALSE(cnn_augment_active(&empty));
  cnn_augment sp = parse(" flip=h , erase=1 ");
  EXPECT_EQ(sp.flip_h, 1);
  EXPECT_EQ(sp.erase, 1.0f);
}

TEST(Augment, TheCanonicalTextKeepsEveryDigitTheSettingsHold) {
  // %g's six digits would give rotate=0.123457, another float than the one parsed
  const char *text = "rotate=0.123456789,zoom=0.7777777,shift=0.3333333x0.1,brightness=0.010000001,contrast=0.99999,"
                     "erase=0.2,erase_value=0.87654321,fill=constant,fill_value=0.1234567";
  cnn_augment a = parse(text), b;
  char buf[512];
  cnn_augment_format(&a, buf, sizeof buf);
  ASSERT_EQ(cnn_augment_parse(buf, &b), CNN_OK) << buf;
  EXPECT_EQ(std::memcmp(&a, &b, sizeof a), 0) << buf;
  EXPECT_TRUE(contains(buf, "rotate=0.12345679,")) << buf;
  // short values keep their short text (checkpoints compare it)
  cnn_augment c = parse("rotate=0.05,shift=0.1x0.2");
  cnn_augment_format(&c, buf, sizeof buf);
  EXPECT_STREQ(buf, "rotate=0.05,shift=0.1x0.2");
}

TEST(Augment, ALongShiftHeightKeepsItsWidth) {
  std::string h = "0.1" + std::string(80, '0') + "1";
  cnn_augment a = parse(("shift=" + h + "x0.5").c_str());
  EXPECT_FLOAT_EQ(a.shift_h, 0.1f);
  EXPECT_FLOAT_EQ(a.shift_w, 0.5f);
}

TEST(Augment, BadItemsAreRefusedNamingTheKey) {
  struct {
    const char *text, *says;
  } cases[] = {{"flip=x", "flip=x"},       {"rotate=2", "rotate=2"}, {"zoom=-0.1", "zoom"},
               {"shift=0.1x", "shift"},    {"wobble=1", "wobble"},   {"crop=1.5", "crop"},
               {"erase", "erase"},         {"flip=h,,zoom=0.1", "empty item"}, {"fill=wrap", "fill"}};
  for (const auto &c : cases) {
    cnn_augment a;
    EXPECT_EQ(cnn_augment_parse(c.text, &a), CNN_ERR_INVALID_ARG) << c.text;
    EXPECT_TRUE(contains(last_error(), c.says)) << c.text << ": " << last_error();
  }
}

TEST(Augment, TheModelDefinitionsTrainingSectionGivesTheDefault) {
  char buf[256];
  const char *text = "input 28 28 1\nconv 8 3\n# training\naugment flip=h shift=0.1  # and a comment\nflatten\n";
  ASSERT_NE(cnn_augment_from_definition(text, buf, sizeof buf), nullptr);
  EXPECT_STREQ(buf, "flip=h,shift=0.1");
  EXPECT_EQ(cnn_augment_from_definition("input 1 1 1\naugmented 3\n", buf, sizeof buf), nullptr);
}

TEST(Augment, FillModesMapIndicesAsKerasDoes) {
  // n = 4: (d c b a | a b c d | d c b a) for reflect
  int reflect[] = {2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0};  // i = -3 .. 7
  for (int i = -3; i <= 7; i++) EXPECT_EQ(cnn_fill_index(i, 4, CNN_FILL_REFLECT), reflect[i + 3]) << i;
  for (int i = -3; i <= 7; i++) EXPECT_EQ(cnn_fill_index(i, 4, CNN_FILL_NEAREST), i < 0 ? 0 : i > 3 ? 3 : i) << i;
  for (int i = -3; i <= 7; i++) EXPECT_EQ(cnn_fill_index(i, 4, CNN_FILL_CONSTANT), i < 0 || i > 3 ? -1 : i) << i;
  EXPECT_EQ(cnn_fill_index(-1000001, 4, CNN_FILL_REFLECT), 0);  // 1000001 = 125000 * 8 + 1: mirror of -1 -> 0
  EXPECT_EQ(cnn_fill_index(5, 1, CNN_FILL_REFLECT), 0);
}

TEST(Augment, FlipsAreExactMirrorsAndHappenHalfTheTime) {
  const int h = 3, w = 4, c = 2;
  auto img = ramp(h, w, c);
  cnn_augment a = parse("flip=h");
  int flipped = 0;
  for (uint64_t seed = 0; seed < 200; seed++) {
    auto out = augmented(a, seed, img, h, w, c);
    if (out == img) continue;
    flipped++;
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        for (int k = 0; k < c; k++) ASSERT_EQ(out[(y * w + x) * c + k], img[(y * w + (w - 1 - x)) * c + k]);
  }
  EXPECT_GT(flipped, 70);
  EXPECT_LT(flipped, 130);
  cnn_augment v = parse("flip=v");
  for (uint64_t seed = 0; seed < 20; seed++) {
    auto out = augmented(v, seed, img, h, w, c);
    if (out == img) continue;
    for (int y = 0; y < h; y++)
      for (int i = 0; i < w * c; i++) ASSERT_EQ(out[y * w * c + i], img[(h - 1 - y) * w * c + i]);
  }
}

TEST(Augment, SameSeedSameImageOtherSeedOtherImage) {
  auto img = ramp(9, 9, 3);
  cnn_augment a = parse("flip=hv,rotate=0.1,zoom=0.2,shift=0.1,brightness=0.2,contrast=0.2,erase=0.5");
  EXPECT_EQ(augmented(a, 42, img, 9, 9, 3), augmented(a, 42, img, 9, 9, 3));
  EXPECT_NE(augmented(a, 42, img, 9, 9, 3), augmented(a, 43, img, 9, 9, 3));
}

TEST(Augment, RotationAndZoomKeepTheCentreAndConstantImagesStayConstant) {
  const int n = 9;  // odd: the centre is a pixel
  auto img = ramp(n, n, 1);
  cnn_augment a = parse("rotate=0.5,zoom=0.5");
  int changed = 0;
  for (uint64_t seed = 0; seed < 50; seed++) {
    auto out = augmented(a, seed, img, n, n, 1);
    EXPECT_NEAR(out[(n / 2) * n + n / 2], img[(n / 2) * n + n / 2], 1e-6) << seed;
    changed += out != img;
  }
  EXPECT_GT(changed, 45);
  // reflect and nearest fills bring in no value that was not there; a constant image stays constant
  std::vector<float> flat(n * n * 3, 0.25f);
  for (const char *t : {"rotate=0.5,zoom=0.5,shift=0.5", "rotate=0.3,zoom=0.9,shift=0.5,fill=nearest"})
    for (uint64_t seed = 0; seed < 20; seed++)
      for (float v : augmented(parse(t), seed, flat, n, n, 3)) ASSERT_NEAR(v, 0.25f, 1e-6) << t;
}

TEST(Augment, ShiftMovesTheContentAndConstantFillComesIn) {
  // a one-pixel-wide bright column; a horizontal shift moves it, and constant fill brings zeros in
  const int h = 5, w = 20;
  std::vector<float> img((size_t)h * w, 0.5f);
  for (int y = 0; y < h; y++) img[y * w + 10] = 1.0f;
  cnn_augment a = parse("shift=0x0.25,fill=constant,fill_value=0");
  int moved = 0, filled = 0;
  for (uint64_t seed = 0; seed < 30; seed++) {
    auto out = augmented(a, seed, img, h, w, 1);
    // every row is the same (no vertical shift), and the brightest value sits in one or two adjacent columns
    int best = 0;
    for (int x = 1; x < w; x++)
      if (out[x] > out[best]) best = x;
    for (int y = 1; y < h; y++)
      for (int x = 0; x < w; x++) ASSERT_FLOAT_EQ(out[y * w + x], out[x]);
    moved += best != 10;
    filled += out[0] < 0.5f - 1e-6f || out[w - 1] < 0.5f - 1e-6f;  // the zeros of the fill came in at an edge
  }
  EXPECT_GT(moved, 10);
  EXPECT_GT(filled, 10);
}

TEST(Augment, BrightnessAddsOneDeltaAndClips) {
  std::vector<float> img = {0.5f, 0.5f, 0.5f, 0.98f};
  cnn_augment a = parse("brightness=0.2");
  bool clipped = false;
  for (uint64_t seed = 0; seed < 100; seed++) {
    auto out = augmented(a, seed, img, 2, 2, 1);
    float d = out[0] - 0.5f;
    EXPECT_LE(std::fabs(d), 0.2f + 1e-6f);
    EXPECT_FLOAT_EQ(out[1] - 0.5f, d);
    EXPECT_FLOAT_EQ(out[3], std::fmin(0.98f + d, 1.0f));
    clipped |= out[3] == 1.0f;
  }
  EXPECT_TRUE(clipped);
}

TEST(Augment, ContrastScalesAboutEachChannelsMean) {
  // two channels; values near the middle so nothing clips at factor 1.2
  std::vector<float> img = {0.4f, 0.1f, 0.5f, 0.2f, 0.6f, 0.3f, 0.5f, 0.2f};
  cnn_augment a = parse("contrast=0.2");
  for (uint64_t seed = 0; seed < 20; seed++) {
    auto out = augmented(a, seed, img, 2, 2, 2);
    float f = (out[4] - out[0]) / (0.6f - 0.4f);
    EXPECT_GE(f, 0.8f - 1e-5f);
    EXPECT_LE(f, 1.2f + 1e-5f);
    for (int k = 0; k < 2; k++) {
      float m = 0;
      for (int p = 0; p < 4; p++) m += out[p * 2 + k];
      EXPECT_NEAR(m / 4, k ? 0.2f : 0.5f, 1e-6);
    }
    EXPECT_NEAR(out[1] - 0.2f, f * (0.1f - 0.2f), 1e-6);  // the same factor on channel 1
  }
}

TEST(Augment, ErasingFillsOneRectangleOfTwoToAThirdOfTheArea) {
  const int h = 20, w = 30;
  std::vector<float> ones((size_t)h * w, 1.0f);
  cnn_augment a = parse("erase=1,erase_value=0");
  for (uint64_t seed = 0; seed < 100; seed++) {
    auto out = augmented(a, seed, ones, h, w, 1);
    int y0 = h, y1 = -1, x0 = w, x1 = -1, zeros = 0;
    for (int y = 0; y < h; y++)
      for (int x = 0; x < w; x++)
        if (out[y * w + x] == 0.0f) {
          zeros++;
          y0 = std::min(y0, y), y1 = std::max(y1, y), x0 = std::min(x0, x), x1 = std::max(x1, x);
        }
    ASSERT_GT(zeros, 0) << seed;  // with 10 attempts, some rectangle fits this image every time
    EXPECT_EQ(zeros, (y1 - y0 + 1) * (x1 - x0 + 1)) << "not one rectangle, seed " << seed;
    EXPECT_GE(zeros, (int)std::floor(0.02 * h * w * 0.8));
    EXPECT_LE(zeros, (int)std::ceil(0.33 * h * w * 1.2));
  }
  // random values by default, in [0, 1]
  auto noisy = augmented(parse("erase=1"), 3, std::vector<float>((size_t)h * w, 2.0f), h, w, 1);
  int changed = 0;
  for (float v : noisy)
    if (v != 2.0f) {
      changed++;
      EXPECT_GE(v, 0.0f);
      EXPECT_LT(v, 1.0f);
    }
  EXPECT_GT(changed, 0);
  // probability 0.5: some images are left alone
  int untouched = 0;
  for (uint64_t seed = 0; seed < 100; seed++) untouched += augmented(parse("erase=0.5"), seed, ones, h, w, 1) == ones;
  EXPECT_GT(untouched, 30);
  EXPECT_LT(untouched, 70);
}

TEST(Augment, CropsTakeTheCentreOrARandomWindowOfThePaddedImage) {
  const int sh = 6, sw = 8;
  auto img = ramp(sh, sw, 1);
  std::vector<float> out(4 * 4);
  int oy, ox;
  cnn_crop_origin(sh, sw, 4, 4, 0, 0, nullptr, &oy, &ox);
  EXPECT_EQ(oy, 1);
  EXPECT_EQ(ox, 2);
  cnn_crop_image(img.data(), sh, sw, 1, out.data(), 4, 4, oy, ox, CNN_FILL_REFLECT, 0);
  for (int y = 0; y < 4; y++)
    for (int x = 0; x < 4; x++) EXPECT_EQ(out[y * 4 + x], img[(y + 1) * sw + x + 2]);
  // random corners cover [-pad, sh - h + pad] and no further
  cnn_rng r;
  cnn_rng_seed(&r, 9);
  int lo = 100, hi = -100;
  for (int i = 0; i < 500; i++) {
    cnn_crop_origin(sh, sw, 4, 4, 1, 2, &r, &oy, &ox);
    lo = std::min(lo, oy), hi = std::max(hi, oy);
    EXPECT_GE(ox, -2);
    EXPECT_LE(ox, sw - 4 + 2);
  }
  EXPECT_EQ(lo, -2);
  EXPECT_EQ(hi, sh - 4 + 2);
  // outside the image: the fill mode (constant 0.5 here)
  cnn_crop_image(img.data(), sh, sw, 1, out.data(), 4, 4, -1, -1, CNN_FILL_CONSTANT, 0.5f);
  EXPECT_EQ(out[0], 0.5f);
  EXPECT_EQ(out[5], img[0]);
  cnn_crop_image(img.data(), sh, sw, 1, out.data(), 4, 4, -1, -1, CNN_FILL_REFLECT, 0.5f);
  EXPECT_EQ(out[0], img[0]);  // reflect about the edge repeats the border pixel
  EXPECT_EQ(out[1], img[0]);
}
