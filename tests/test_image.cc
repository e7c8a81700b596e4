// Image decoding, conversion and resizing (cnn_image_load, core/data/image.h), and PNG writing.
#include <zlib.h>

#include <gtest/gtest.h>

#include <stb_image.h>
#include <stb_image_write.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cnn/data.h"
#include "core/data/image.h"
#include "tests/util.h"

using cnntest::TempDir;

namespace {

std::string last_error() { return cnn_last_error(); }

bool contains(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

std::vector<float> load(const std::string &path, int h, int w, int c, cnn_status *st) {
  std::vector<float> out((size_t)h * w * c, -1.0f);
  *st = cnn_image_load(path.c_str(), h, w, c, out.data());
  return out;
}

float u8(int v) { return (float)v / 255.0f; }

void be32(std::string &s, uint32_t v) {
  for (int i = 3; i >= 0; i--) s += (char)(v >> (8 * i));
}

// A PNG signature and IHDR chunk (valid CRC) declaring w x h pixels of 8-bit `color_type`, and nothing else.
std::string png_header(uint32_t w, uint32_t h, int color_type) {
  std::string s("\x89PNG\r\n\x1a\n", 8);
  std::string chunk = "IHDR";
  be32(chunk, w);
  be32(chunk, h);
  chunk += (char)8;
  chunk += (char)color_type;
  chunk += std::string(3, '\0');
  be32(s, 13);
  s += chunk;
  be32(s, (uint32_t)crc32(0, (const Bytef *)chunk.data(), (uInt)chunk.size()));
  return s;
}

}  // namespace

TEST(Image, PngGrayLoadsExactly) {
  TempDir dir;
  unsigned char px[6] = {0, 50, 100, 150, 200, 255};  // 3 wide, 2 high
  ASSERT_TRUE(stbi_write_png(dir.file("g.png").c_str(), 3, 2, 1, px, 3));
  cnn_status st;
  auto out = load(dir.file("g.png"), 2, 3, 1, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  for (int i = 0; i < 6; i++) EXPECT_EQ(out[i], u8(px[i])) << i;
  // gray to 3 channels: replicated
  out = load(dir.file("g.png"), 2, 3, 3, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  for (int i = 0; i < 6; i++)
    for (int k = 0; k < 3; k++) EXPECT_EQ(out[i * 3 + k], u8(px[i]));
}

TEST(Image, RgbToRgbIsExactAndToGrayIsBt601Luma) {
  TempDir dir;
  unsigned char px[2 * 2 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};
  ASSERT_TRUE(stbi_write_png(dir.file("c.png").c_str(), 2, 2, 3, px, 6));
  ASSERT_TRUE(stbi_write_bmp(dir.file("c.bmp").c_str(), 2, 2, 3, px));
  for (const char *name : {"c.png", "c.bmp"}) {
    cnn_status st;
    auto rgb = load(dir.file(name), 2, 2, 3, &st);
    ASSERT_EQ(st, CNN_OK) << name << ": " << last_error();
    for (int i = 0; i < 12; i++) EXPECT_EQ(rgb[i], u8(px[i])) << name << " " << i;
    auto gray = load(dir.file(name), 2, 2, 1, &st);
    ASSERT_EQ(st, CNN_OK) << last_error();
    for (int i = 0; i < 4; i++) {
      float want = (0.299f * px[3 * i] + 0.587f * px[3 * i + 1] + 0.114f * px[3 * i + 2]) / 255.0f;
      EXPECT_NEAR(gray[i], want, 1e-6) << name << " " << i;
    }
    EXPECT_NEAR(gray[0], 0.299f, 1e-6);
  }
}

TEST(Image, AlphaIsDropped) {
  TempDir dir;
  unsigned char px[2 * 4] = {200, 100, 50, 0, 10, 20, 30, 128};  // fully transparent, half transparent
  ASSERT_TRUE(stbi_write_png(dir.file("a.png").c_str(), 2, 1, 4, px, 8));
  cnn_status st;
  auto rgb = load(dir.file("a.png"), 1, 2, 3, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  EXPECT_EQ(rgb[0], u8(200));
  EXPECT_EQ(rgb[1], u8(100));
  EXPECT_EQ(rgb[5], u8(30));
  unsigned char ga[2 * 2] = {77, 0, 99, 255};
  ASSERT_TRUE(stbi_write_png(dir.file("ga.png").c_str(), 2, 1, 2, ga, 4));
  auto g = load(dir.file("ga.png"), 1, 2, 1, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  EXPECT_EQ(g[0], u8(77));
  EXPECT_EQ(g[1], u8(99));
}

TEST(Image, JpegDecodesCloseToTheOriginal) {
  TempDir dir;
  std::vector<unsigned char> px(16 * 16 * 3);
  for (size_t i = 0; i < px.size(); i += 3) px[i] = 200, px[i + 1] = 120, px[i + 2] = 40;
  ASSERT_TRUE(stbi_write_jpg(dir.file("c.jpg").c_str(), 16, 16, 3, px.data(), 100));
  cnn_status st;
  auto out = load(dir.file("c.jpg"), 16, 16, 3, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  for (int i = 0; i < 16 * 16; i++) {
    EXPECT_NEAR(out[3 * i], u8(200), 4 / 255.0);
    EXPECT_NEAR(out[3 * i + 1], u8(120), 4 / 255.0);
    EXPECT_NEAR(out[3 * i + 2], u8(40), 4 / 255.0);
  }
}

TEST(Image, ShrinkingAveragesAreas) {
  TempDir dir;
  unsigned char row4[4] = {0, 100, 200, 255};
  ASSERT_TRUE(stbi_write_png(dir.file("r4.png").c_str(), 4, 1, 1, row4, 4));
  cnn_status st;
  auto out = load(dir.file("r4.png"), 1, 2, 1, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  EXPECT_NEAR(out[0], (u8(0) + u8(100)) / 2, 1e-6);
  EXPECT_NEAR(out[1], (u8(200) + u8(255)) / 2, 1e-6);
  // 3 -> 2: each output covers 1.5 inputs
  unsigned char row3[3] = {30, 90, 240};
  ASSERT_TRUE(stbi_write_png(dir.file("r3.png").c_str(), 3, 1, 1, row3, 3));
  out = load(dir.file("r3.png"), 1, 2, 1, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  EXPECT_NEAR(out[0], (u8(30) + 0.5f * u8(90)) / 1.5f, 1e-6);
  EXPECT_NEAR(out[1], (0.5f * u8(90) + u8(240)) / 1.5f, 1e-6);
  // 4x4 -> 1x1: the mean of everything
  unsigned char sq[16];
  float sum = 0;
  for (int i = 0; i < 16; i++) sum += u8(sq[i] = (unsigned char)(i * 16));
  ASSERT_TRUE(stbi_write_png(dir.file("sq.png").c_str(), 4, 4, 1, sq, 4));
  out = load(dir.file("sq.png"), 1, 1, 1, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  EXPECT_NEAR(out[0], sum / 16, 1e-6);
}

TEST(Image, EnlargingIsBilinearWithHalfPixelCenters) {
  TempDir dir;
  unsigned char row[2] = {40, 200};
  ASSERT_TRUE(stbi_write_png(dir.file("r2.png").c_str(), 2, 1, 1, row, 2));
  cnn_status st;
  auto out = load(dir.file("r2.png"), 1, 4, 1, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  float a = u8(40), b = u8(200);
  // output centers 0.5, 1.5, 2.5, 3.5 map to input positions -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
  EXPECT_NEAR(out[0], a, 1e-6);
  EXPECT_NEAR(out[1], 0.75f * a + 0.25f * b, 1e-6);
  EXPECT_NEAR(out[2], 0.25f * a + 0.75f * b, 1e-6);
  EXPECT_NEAR(out[3], b, 1e-6);
  // the same vertically, with 3 channels (gray replicated), and a width kept as is
  unsigned char col[2] = {40, 200};
  ASSERT_TRUE(stbi_write_png(dir.file("c2.png").c_str(), 1, 2, 1, col, 1));
  out = load(dir.file("c2.png"), 4, 1, 3, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  EXPECT_NEAR(out[3 * 1 + 2], 0.75f * a + 0.25f * b, 1e-6);
  EXPECT_NEAR(out[3 * 3], b, 1e-6);
}

TEST(Image, AxesResizeIndependently) {
  // 4 wide x 1 high -> 2 wide x 2 high: area along x, bilinear (here: replication) along y
  float src[4 * 3];
  for (int i = 0; i < 12; i++) src[i] = (float)i;
  float dst[2 * 2 * 3];
  ASSERT_EQ(cnn_image_resize(src, 1, 4, 3, dst, 2, 2), CNN_OK) << last_error();
  for (int y = 0; y < 2; y++)
    for (int k = 0; k < 3; k++) {
      EXPECT_NEAR(dst[(y * 2 + 0) * 3 + k], (src[0 + k] + src[3 + k]) / 2, 1e-6);
      EXPECT_NEAR(dst[(y * 2 + 1) * 3 + k], (src[6 + k] + src[9 + k]) / 2, 1e-6);
    }
  EXPECT_EQ(cnn_image_resize(src, 1, 4, 3, dst, 0, 2), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_image_resize(nullptr, 1, 4, 3, dst, 1, 2), CNN_ERR_INVALID_ARG);
}

TEST(Image, ResizePreservesConstantImagesAtAnyScale) {
  std::vector<float> src(37 * 23 * 3, 0.625f);
  for (int dh : {1, 5, 23, 40, 97})
    for (int dw : {1, 7, 37, 64}) {
      std::vector<float> dst((size_t)dh * dw * 3);
      ASSERT_EQ(cnn_image_resize(src.data(), 37, 23, 3, dst.data(), dh, dw), CNN_OK);
      for (float v : dst) ASSERT_NEAR(v, 0.625f, 1e-6) << dh << "x" << dw;
    }
}

TEST(Image, MalformedFilesAreRefusedByName) {
  TempDir dir;
  unsigned char px[64 * 64];
  for (int i = 0; i < 64 * 64; i++) px[i] = (unsigned char)(i * 31);
  ASSERT_TRUE(stbi_write_png(dir.file("full.png").c_str(), 64, 64, 1, px, 64));
  std::string png = cnntest::read_file(dir.file("full.png"));
  cnntest::write_file(dir.file("cut.png"), png.substr(0, png.size() / 2));
  cnntest::write_file(dir.file("empty.png"), "");
  cnntest::write_file(dir.file("notes.png"), "this is not an image\n");
  cnntest::write_file(dir.file("anim.gif"), std::string("GIF89a\x01\x00\x01\x00\x00\x00\x00", 13));
  cnntest::write_file(dir.file("bad.bmp"), "BM" + std::string(10, '\xff'));
  cnntest::write_file(dir.file("sig.png"), std::string("\x89PNG\r\n\x1a\n", 8));
  struct {
    const char *name;
    cnn_status want;
    const char *says;
  } cases[] = {
      {"cut.png", CNN_ERR_FORMAT, "PNG"},
      {"empty.png", CNN_ERR_FORMAT, "empty"},
      {"notes.png", CNN_ERR_UNSUPPORTED, "text"},
      {"anim.gif", CNN_ERR_UNSUPPORTED, "GIF"},
      {"bad.bmp", CNN_ERR_FORMAT, "BMP"},
      {"sig.png", CNN_ERR_FORMAT, "PNG"},
      {"missing.png", CNN_ERR_NOT_FOUND, "missing.png"},
  };
  for (const auto &c : cases) {
    cnn_status st;
    load(dir.file(c.name), 8, 8, 1, &st);
    EXPECT_EQ(st, c.want) << c.name << ": " << last_error();
    EXPECT_TRUE(contains(last_error(), c.name)) << last_error();
    EXPECT_TRUE(contains(last_error(), c.says)) << last_error();
  }
}

TEST(Image, HugeDimensionsAreRefusedBeforeDecoding) {
  TempDir dir;
  // 10000 x 10000 gray: 100 megapixels, which stb_image itself would try to decode
  cnntest::write_file(dir.file("big.png"), png_header(10000, 10000, 0));
  cnn_status st;
  load(dir.file("big.png"), 4, 4, 1, &st);
  EXPECT_EQ(st, CNN_ERR_UNSUPPORTED) << last_error();
  EXPECT_TRUE(contains(last_error(), "big.png")) << last_error();
  EXPECT_TRUE(contains(last_error(), "10000x10000")) << last_error();
  EXPECT_TRUE(contains(last_error(), "limit")) << last_error();
  // beyond what stb_image accepts at all
  cnntest::write_file(dir.file("bigger.png"), png_header(1u << 20, 1u << 20, 2));
  load(dir.file("bigger.png"), 4, 4, 1, &st);
  EXPECT_EQ(st, CNN_ERR_UNSUPPORTED) << last_error();
  EXPECT_TRUE(contains(last_error(), "bigger.png")) << last_error();
  // the same for JPEG (a frame header of 65535 x 65535) and BMP (20000 x 20000, top-down)
  std::string jpg("\xff\xd8\xff\xe0\x00\x04\x00\x00\xff\xc0\x00\x0b\x08\xff\xff\xff\xff\x01\x01\x11\x00", 21);
  cnntest::write_file(dir.file("big.jpg"), jpg);
  load(dir.file("big.jpg"), 4, 4, 1, &st);
  EXPECT_EQ(st, CNN_ERR_UNSUPPORTED) << last_error();
  EXPECT_TRUE(contains(last_error(), "65535x65535")) << last_error();
  std::string bmp = "BM" + std::string(12, '\0');
  for (uint32_t v : {40u, 20000u, (uint32_t)-20000})
    for (int i = 0; i < 4; i++) bmp += (char)(v >> (8 * i));
  bmp += std::string(40, '\0');
  cnntest::write_file(dir.file("big.bmp"), bmp);
  load(dir.file("big.bmp"), 4, 4, 1, &st);
  EXPECT_EQ(st, CNN_ERR_UNSUPPORTED) << last_error();
  EXPECT_TRUE(contains(last_error(), "20000x20000")) << last_error();
  // a small valid header but no image data: dimensions pass, decoding fails
  cnntest::write_file(dir.file("nodata.png"), png_header(8, 8, 0));
  load(dir.file("nodata.png"), 4, 4, 1, &st);
  EXPECT_EQ(st, CNN_ERR_FORMAT) << last_error();
}

TEST(Image, BadArgumentsAreRefused) {
  float out[16];
  EXPECT_EQ(cnn_image_load("x.png", 2, 2, 2, out), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_image_load("x.png", 0, 2, 1, out), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_image_load("x.png", 2, 2, 1, nullptr), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_image_load(nullptr, 2, 2, 1, out), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_image_load("x.png", 100000, 100000, 1, out), CNN_ERR_INVALID_ARG);
}

TEST(Image, WritePngRoundTrips) {
  TempDir dir;
  std::string path = dir.file("plot.png");
  unsigned char px[5 * 3 * 3];
  for (int i = 0; i < 45; i++) px[i] = (unsigned char)(i * 5);
  ASSERT_EQ(cnn_image_write_png(path.c_str(), 5, 3, 3, px), CNN_OK) << last_error();
  std::string bytes = cnntest::read_file(path);
  int w = 0, h = 0, n = 0;
  unsigned char *back = stbi_load_from_memory((const stbi_uc *)bytes.data(), (int)bytes.size(), &w, &h, &n, 0);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(w, 5);
  EXPECT_EQ(h, 3);
  EXPECT_EQ(n, 3);
  EXPECT_EQ(memcmp(back, px, sizeof px), 0);
  stbi_image_free(back);
  // and through cnn_image_load
  cnn_status st;
  auto out = load(path, 3, 5, 3, &st);
  ASSERT_EQ(st, CNN_OK) << last_error();
  for (int i = 0; i < 45; i++) EXPECT_EQ(out[i], u8(px[i]));

  EXPECT_EQ(cnn_image_write_png(path.c_str(), 0, 3, 3, px), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_image_write_png(path.c_str(), 5, 3, 5, px), CNN_ERR_INVALID_ARG);
  EXPECT_NE(cnn_image_write_png(dir.file("no/dir.png").c_str(), 5, 3, 3, px), CNN_OK);
}
