// Untrusted input found by fuzzing (issue 13): model definitions and model files that overflowed the parser's
// buffers, images whose headers declare sizes that overflow or outgrow memory. Each case is one finding's
// reproduction: it must now give a clear error (or, for valid files, the right answer) with bounded memory.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/time.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/data/image.h"
#include "core/io/safetensors.h"
#include "core/parse.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using Backend = cnntest::CpuBackend;

std::string parse_error(const std::string &text) {
  Backend be;
  cnn_net *net = nullptr;
  cnn_status st = cnn_net_from_text(text.c_str(), "t.cnn", be.b, 1, &net);
  EXPECT_NE(st, CNN_OK) << text;
  EXPECT_EQ(net, nullptr);
  cnn_net_destroy(net);
  return cnn_last_error();
}

// A line that fits the 1023-character limit as written, but not once repeat adds its "_N" suffixes: 30 references
// to a 30-character name defined inside nested blocks. Before the fix the second level of expansion copied it into
// a 1024-byte stack array (a stack buffer overflow, SIGSEGV in the release build).
std::string long_repeat_definition() {
  std::string name(30, 'q');
  std::string refs;
  for (int i = 0; i < 30; i++) refs += " " + name;
  return "input 8 8 1\nflatten\nrepeat 2\nrepeat 2\nrepeat 2\nrelu name=" + name + "\nconcat" + refs +
         "\nend\nend\nend\ndense 10\n";
}

TEST(Hardening, RepeatExpansionPastTheLineLimitIsRefused) {
  std::string text = long_repeat_definition();
  ASSERT_LT(text.size(), 1300u);
  std::string msg = parse_error(text);
  EXPECT_NE(msg.find("t.cnn:7: concat: longer than 1023 characters once repeat adds its iteration suffixes"),
            std::string::npos)
      << msg;
}

TEST(Hardening, RepeatExpansionIsBoundedInLines) {
  // 12 s and 350 MB before the bound, 10 ms now
  std::string msg = parse_error("input 8 8 1\nflatten\nrepeat 65536\ndense 4\nend\ndense 10\n");
  EXPECT_NE(msg.find("t.cnn:3: repeat: the repeat blocks expand to more than 10000 lines"), std::string::npos) << msg;
  msg = parse_error("input 8 8 1\nflatten\nrepeat 100\nrepeat 101\ndense 4\nend\nend\ndense 10\n");
  EXPECT_NE(msg.find("expand to more than 10000 lines"), std::string::npos) << msg;
}

// A nest of repeat blocks around an empty one iterates 65536 x 2 x 2 ... times without adding a line, which the cap
// on lines does not bound (a fuzzer's timeout): an empty block is refused; with a body, every iteration adds a line.
TEST(Hardening, AnEmptyRepeatBlockIsRefusedSoNestsOfThemCannotSpin) {
  std::string msg = parse_error("input 8 8 1\nflatten\nrepeat 2\nrepeat 2\nrepeat 65536\nend\ndense 4\nend\nend\n"
                                "dense 10\n");
  EXPECT_NE(msg.find("t.cnn:5: repeat: this 'repeat' has nothing between it and its 'end'"), std::string::npos) << msg;
  // a named block may be empty: each iteration names its input, a line each, under the cap on lines
  msg = parse_error("input 8 8 1\nflatten\nrepeat 2\nrepeat 65536 name=x\nend\nend\ndense 10\n");
  EXPECT_NE(msg.find("expand to more than 10000 lines"), std::string::npos) << msg;
}

TEST(Hardening, InternalAliasDirectiveIsNotAcceptedFromFiles) {
  for (const char *line : {"@alias", "@alias x"}) {
    std::string msg = parse_error(std::string("input 8 8 1\nflatten name=x\n") + line + "\ndense 10\n");
    EXPECT_NE(msg.find("t.cnn:3: @alias: unknown layer type '@alias'"), std::string::npos) << msg;
  }
  // repeat's name= still works: the block's input is the previous iteration's output
  Backend be;
  cnn_net *net = nullptr;
  const char *ok = "input 8 8 1\nconv 4 3 relu padding=same\nrepeat 3 name=x\nconv 4 3 padding=same\nadd x relu\n"
                   "end\nflatten\ndense 10\n";
  ASSERT_EQ(cnn_net_from_text(ok, "ok.cnn", be.b, 1, &net), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
}

// The same overflowing definition inside a .safetensors model file of 1.3 KB: `cnn summary` and
// `cnn predict --model` died with SIGSEGV.
TEST(Hardening, OverflowingDefinitionInsideAModelFileIsRefused) {
  cnntest::TempDir dir;
  std::string path = dir.file("evil.safetensors");
  std::string def = long_repeat_definition();
  const char *keys[] = {"format", "definition"};
  const char *vals[] = {"cnn.c model", def.c_str()};
  float w[4] = {0, 0, 0, 0};
  int64_t shape[1] = {4};
  cnn_st_entry e = {"dense.bias", CNN_F32, 1, shape, w};
  ASSERT_EQ(cnn_st_write(path.c_str(), &e, 1, keys, vals, 2), CNN_OK) << cnn_last_error();
  Backend be;
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_net_load(path.c_str(), be.b, &net), CNN_ERR_FORMAT);
  EXPECT_EQ(net, nullptr);
  EXPECT_NE(std::string(cnn_last_error()).find("evil.safetensors (definition):7: concat: longer than 1023"),
            std::string::npos)
      << cnn_last_error();
  for (const char *cmd : {"summary", "predict"}) {
    std::vector<std::string> args = {cmd};
    if (std::string(cmd) == "predict") args = {"predict", "--model", path, path};
    else args.push_back(path);
    std::string out;
    EXPECT_EQ(cnntest::run_cnn(args, &out), 1) << out;  // 128 + 11 before the fix
    EXPECT_NE(out.find("longer than 1023 characters"), std::string::npos) << out;
  }
}

TEST(Hardening, ADefinitionWhereAModelFileIsExpectedIsNamedAsSuch) {
  std::string def = std::string(CNN_SOURCE_DIR) + "/samples/models/seed_cnn.cnn";
  Backend be;
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_net_load(def.c_str(), be.b, &net), CNN_ERR_FORMAT);
  std::string msg = cnn_last_error();
  EXPECT_NE(msg.find("seed_cnn.cnn is a model definition (text), not a trained model file"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("header length"), std::string::npos) << msg;
  std::string out;
  EXPECT_EQ(cnntest::run_cnn({"predict", "--model", def, def}, &out), 1) << out;
  EXPECT_NE(out.find("is a model definition (text), not a trained model file"), std::string::npos) << out;
  // other text is named as text, not given a header length
  cnntest::TempDir dir;
  cnntest::write_file(dir.file("notes.safetensors"), "these are my notes, not a model\n");
  cnn_st_file *f = nullptr;
  EXPECT_EQ(cnn_st_read(dir.file("notes.safetensors").c_str(), &f), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("a text file, not a safetensors file"), std::string::npos)
      << cnn_last_error();
}

// ---- images ----------------------------------------------------------------------------------------------------

void put16(std::string &s, unsigned v) {
  s += (char)(v & 0xff);
  s += (char)((v >> 8) & 0xff);
}
void put32(std::string &s, uint32_t v) {
  for (int i = 0; i < 4; i++) s += (char)((v >> (8 * i)) & 0xff);
}

// A 24-bit BMP (BITMAPINFOHEADER) of w x h pixels, pixel (x, y) = (x * 40 + y, y * 7, 100) from the top row; a
// negative height stores the rows top-down. `data` false: the header only, as a hostile file would be.
std::string bmp(int w, int h, bool data = true) {
  int ah = h < 0 ? -h : h;
  if (!data) ah = 0;
  size_t row = ((size_t)w * 3 + 3) / 4 * 4;
  std::string px;
  if (data) {
    px.assign(row * (size_t)ah, '\0');
    for (int r = 0; r < ah; r++) {
      int y = h < 0 ? r : ah - 1 - r;  // the image row stored at file row r
      for (int x = 0; x < w; x++) {
        unsigned char *p = (unsigned char *)&px[(size_t)r * row + (size_t)x * 3];
        p[0] = 100;                    // B
        p[1] = (unsigned char)(y * 7);  // G
        p[2] = (unsigned char)(x * 40 + y);  // R
      }
    }
  }
  std::string s = "BM";
  put32(s, (uint32_t)(54 + px.size()));
  put32(s, 0);
  put32(s, 54);
  put32(s, 40);
  put32(s, (uint32_t)w);
  put32(s, (uint32_t)h);
  put16(s, 1);
  put16(s, 24);
  put32(s, 0);
  put32(s, (uint32_t)px.size());
  put32(s, 2835);
  put32(s, 2835);
  put32(s, 0);
  put32(s, 0);
  return s + px;
}

cnn_status decode(const std::string &bytes, cnn_image_u8 *img) {
  return cnn_image_decode_memory((const unsigned char *)bytes.data(), bytes.size(), "x.img", 0, 0, 0, img);
}

TEST(Hardening, TopDownBmpDecodesLikeItsBottomUpTwin) {
  cnn_image_u8 td{}, bu{};
  ASSERT_EQ(decode(bmp(3, -2), &td), CNN_OK) << cnn_last_error();  // was "3x-2 pixels, above the limit"
  ASSERT_EQ(decode(bmp(3, 2), &bu), CNN_OK) << cnn_last_error();
  ASSERT_EQ(td.w, 3);
  ASSERT_EQ(td.h, 2);
  ASSERT_EQ(td.n, 3);
  EXPECT_EQ(std::memcmp(td.pixels, bu.pixels, 3 * 2 * 3), 0);
  EXPECT_EQ(td.pixels[3 * 3 + 1 * 3 + 0], 1 * 40 + 1);  // row 1, column 1, red
  EXPECT_EQ(td.pixels[3 * 3 + 1 * 3 + 1], 7);
  cnn_image_u8_free(&td);
  cnn_image_u8_free(&bu);
}

TEST(Hardening, BmpHeadersThatCannotBeImagesAreRefusedBeforeDecoding) {
  cnn_image_u8 img{};
  // the finding: 59 bytes declaring 5 x 5,963,779 pixels (stb_image decoded it into 90 MB, then the resize asked
  // for 4.4 GiB)
  std::string tall = bmp(5, 5963779, false) + std::string(5, '\0');
  ASSERT_EQ(tall.size(), 59u);
  EXPECT_EQ(decode(tall, &img), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("x.img: corrupt BMP: the file is shorter than the pixel rows its header "
                                              "declares"),
            std::string::npos)
      << cnn_last_error();
  EXPECT_EQ(img.pixels, nullptr);
  EXPECT_EQ(decode(bmp(-4, 4, false), &img), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("declares -4x4 pixels: not an image size"), std::string::npos)
      << cnn_last_error();
  EXPECT_EQ(decode(bmp(4, 0, false), &img), CNN_ERR_FORMAT);
  // a height of -2^31 (whose negation overflows an int) is above any limit
  std::string min_height = bmp(1, 1, false);
  min_height.replace(22, 4, std::string("\0\0\0\x80", 4));
  EXPECT_NE(decode(min_height, &img), CNN_OK);
  EXPECT_EQ(img.pixels, nullptr);
}

std::string png_header(uint32_t w, uint32_t h) {
  std::string s("\x89PNG\r\n\x1a\n", 8);
  s += std::string("\0\0\0\x0d", 4) + "IHDR";
  for (uint32_t v : {w, h})
    for (int i = 3; i >= 0; i--) s += (char)((v >> (8 * i)) & 0xff);
  s += std::string("\x08\x02\0\0\0", 5);
  s += std::string(4, '\0');  // CRC: the size check comes first
  return s;
}

TEST(Hardening, PngDimensionsNearTwoToThe32AreAboveTheLimitWithoutOverflow) {
  cnn_image_u8 img{};
  // width * height overflowed a signed 64-bit product (UBSan), and the release build gave the wrong reason
  for (auto wh : {std::pair<uint32_t, uint32_t>{0xffffffffu, 0xffffffffu}, {0x80000000u, 0x80000000u},
                  {0xffffffffu, 3u}, {1u, 0x80000001u}}) {
    EXPECT_EQ(decode(png_header(wh.first, wh.second), &img), CNN_ERR_UNSUPPORTED);
    EXPECT_NE(std::string(cnn_last_error()).find("above the limit of 67108864"), std::string::npos) << cnn_last_error();
  }
  EXPECT_EQ(decode(png_header(0, 5), &img), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("0x5 pixels: not an image size"), std::string::npos) << cnn_last_error();
  // with a caller's limit near the top of the range, the check still cannot overflow
  std::string h = png_header(0xffffffffu, 0xffffffffu);
  EXPECT_EQ(cnn_image_decode_memory((const unsigned char *)h.data(), h.size(), "x.png", INT64_MAX / 2, 0, 0, &img),
            CNN_ERR_UNSUPPORTED);
}

// Resizing a tall image keeps memory near the output size: before, the horizontal pass held source height x target
// width x channels floats (2,000,000 x 64 x 3 x 4 bytes = 1.5 GB here). The values are those of resizing in one go.
TEST(Hardening, ResizingATallImageStreamsItsRows) {
  const int w = 5, h = 2000000;
  cnntest::TempDir dir;
  std::string path = dir.file("tall.bmp");
  cnntest::write_file(path, bmp(w, h));
  // a 64x64x3 model for predict
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 64 64 3\nconv 2 3 stride=8\nflatten\ndense 3\n", "m.cnn", be.b, 1, &net), CNN_OK)
      << cnn_last_error();
  std::string model = dir.file("m.safetensors");
  ASSERT_EQ(cnn_net_save(net, model.c_str()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
  std::string out;
  ASSERT_EQ(cnntest::run_cnn({"predict", "--model", model, path}, &out), 0) << out;
  struct rusage ru{};
  ASSERT_EQ(getrusage(RUSAGE_CHILDREN, &ru), 0);
  // the file (32 MB), its pixels (30 MB) and the process's own libraries; 1.5 GB more before the fix
  EXPECT_LT(ru.ru_maxrss, 700 * 1024) << "peak RSS of cnn predict: " << ru.ru_maxrss / 1024 << " MiB";

  // the streamed resize equals the float resize of the whole image, bit for bit
  cnn_image_u8 img{};
  std::string small = bmp(5, 700);
  ASSERT_EQ(decode(small, &img), CNN_OK) << cnn_last_error();
  std::vector<float> full((size_t)img.w * img.h * 3), a(16 * 4 * 3), b(16 * 4 * 3);
  cnn_image_u8_to_float(&img, 3, full.data());
  for (auto dims : {std::pair<int, int>{16, 4}, {16, 5}, {700, 4}, {1000, 3}, {2, 1}}) {
    size_t n = (size_t)dims.first * dims.second * 3;
    a.assign(n, -1.0f);
    b.assign(n, -2.0f);
    ASSERT_EQ(cnn_image_resize_u8(&img, 3, a.data(), dims.first, dims.second), CNN_OK) << cnn_last_error();
    ASSERT_EQ(cnn_image_resize(full.data(), img.h, img.w, 3, b.data(), dims.first, dims.second), CNN_OK);
    EXPECT_EQ(std::memcmp(a.data(), b.data(), n * sizeof(float)), 0) << dims.first << "x" << dims.second;
    // against a float64 area average along the height (the width is 5 -> dims.second)
    if (dims.second == 5 && dims.first < 700) {
      double scale = 700.0 / dims.first;
      for (int y = 0; y < dims.first; y++) {
        double lo = y * scale, hi = (y + 1) * scale, sum = 0;
        for (int r = (int)lo; r < (int)std::ceil(hi) && r < 700; r++) {
          double ov = std::min(hi, r + 1.0) - std::max(lo, (double)r);
          sum += ov * full[((size_t)r * 5 + 2) * 3 + 1];
        }
        EXPECT_NEAR(a[((size_t)y * 5 + 2) * 3 + 1], sum / scale, 1e-5) << "row " << y;
      }
    }
  }
  cnn_image_u8_free(&img);
}

}  // namespace

namespace {

// Sizes in flags and model metadata were read with sscanf's %d, undefined past INT_MAX and lenient about what
// follows.
TEST(Hardening, SizesInTextAreParsedStrictly) {
  int d[3] = {-1, -1, -1};
  EXPECT_EQ(cnn_parse_dims("36x40", 2, 65536, d), 1);
  EXPECT_EQ(d[0], 36);
  EXPECT_EQ(d[1], 40);
  EXPECT_EQ(cnn_parse_dims("32x32x3", 3, 65536, d), 1);
  EXPECT_EQ(d[2], 3);
  for (const char *bad : {"", "36", "36x", "x36", "36x40x", "36x40 ", " 36x40", "+36x40", "-36x40", "0x4", "36x0",
                          "65537x2", "99999999999x2", "2x99999999999999999999", "36X40", "3.5x4", "36x40x3"}) {
    d[0] = d[1] = -7;
    EXPECT_EQ(cnn_parse_dims(bad, 2, 65536, d), 0) << bad;
    EXPECT_EQ(d[0], -7) << bad;
  }
  // through a model file's 'resize' metadata
  cnntest::TempDir dir;
  const char *keys[] = {"format", "definition", "resize"};
  const char *vals[] = {"cnn.c model", "input 2 3 1\nflatten\ndense 3\n", "4294967298x4"};
  int64_t w6[2] = {3, 6}, b3[1] = {3};
  std::vector<float> z(18);
  cnn_st_entry e[2] = {{"dense.weight", CNN_F32, 2, w6, z.data()}, {"dense.bias", CNN_F32, 1, b3, z.data()}};
  std::string path = dir.file("m.safetensors");
  ASSERT_EQ(cnn_st_write(path.c_str(), e, 2, keys, vals, 3), CNN_OK) << cnn_last_error();
  Backend be;
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_net_load(path.c_str(), be.b, &net), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("metadata 'resize' must be HxW"), std::string::npos) << cnn_last_error();
  EXPECT_EQ(net, nullptr);
}

}  // namespace

namespace {

// Finding 3 through a model file: a 1 KB file whose definition declares a 4 GiB dense layer made cnn_net_load
// allocate and initialize every parameter before it found the tensors missing. Whatever the memory limit, a file
// cannot hold more parameters than its tensors have values.
TEST(Hardening, AModelFileDeclaringMoreParametersThanItHoldsIsRefusedBeforeBuilding) {
  cnntest::TempDir dir;
  std::string path = dir.file("huge.safetensors");
  const char *keys[] = {"format", "definition"};
  const char *vals[] = {"cnn.c model", "input 1 1 65536\nflatten\ndense 16384\n"};
  std::vector<float> bias(16384);
  int64_t shape[1] = {16384};
  cnn_st_entry e = {"dense.bias", CNN_F32, 1, shape, bias.data()};
  ASSERT_EQ(cnn_st_write(path.c_str(), &e, 1, keys, vals, 2), CNN_OK) << cnn_last_error();
  cnn_set_memory_limit(INT64_MAX / 4);  // a limit that lets the network through: the file must still be refused
  Backend be;
  cnn_net *net = nullptr;
  struct rusage before{}, after{};
  ASSERT_EQ(getrusage(RUSAGE_SELF, &before), 0);
  EXPECT_EQ(cnn_net_load(path.c_str(), be.b, &net), CNN_ERR_FORMAT);
  ASSERT_EQ(getrusage(RUSAGE_SELF, &after), 0);
  cnn_set_memory_limit(0);
  EXPECT_EQ(net, nullptr);
  EXPECT_NE(std::string(cnn_last_error())
                .find("huge.safetensors: its definition has 1073758208 parameters, but its tensors hold 16384 values"),
            std::string::npos)
      << cnn_last_error();
  // building first allocated and initialized 4 GiB of weights (RSS grew by as much)
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024) << "peak RSS grew by " << (after.ru_maxrss - before.ru_maxrss) / 1024 << " MiB";
}

}  // namespace

namespace {

std::string read_regression(const std::string &name) {
  return cnntest::read_file(std::string(CNN_SOURCE_DIR) + "/tests/fuzz/regressions/" + name);
}

// stb_image decodes some broken BMPs anyway, from memory it never wrote: the same bytes decoded twice gave
// different pixels (valgrind: uninitialised values from a stack allocation in libstb). Found by the image harness.
TEST(Hardening, BmpsThatStbWouldFillFromUninitialisedMemoryAreRefused) {
  cnn_image_u8 img{};
  // 34 bytes, a 40-byte header cut short and a compression field of garbage
  EXPECT_EQ(decode(read_regression("image/crash-bmp-short-header-uninitialised-pixels"), &img), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("corrupt BMP: the file is shorter than its header"), std::string::npos)
      << cnn_last_error();
  // a well-formed 8-bit BMP whose pixels index past its 4-colour palette
  EXPECT_EQ(decode(read_regression("image/bmp-palette-index-beyond-palette-uninitialised"), &img), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("corrupt BMP: a pixel's palette index is beyond the palette"),
            std::string::npos)
      << cnn_last_error();
  EXPECT_EQ(img.pixels, nullptr);
  // RLE compression (stb_image has none) is named
  std::string rle = bmp(2, 2);
  rle[30] = 1;
  EXPECT_EQ(decode(rle, &img), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("its compression is not supported"), std::string::npos)
      << cnn_last_error();
  // the same palette file with the indices inside the palette decodes, to the palette's colours
  std::string ok = read_regression("image/bmp-palette-index-beyond-palette-uninitialised");
  uint32_t offset = (uint8_t)ok[10] | (uint8_t)ok[11] << 8;
  for (size_t i = offset; i < ok.size(); i++) ok[i] = (char)((uint8_t)ok[i] % 4);
  ASSERT_EQ(decode(ok, &img), CNN_OK) << cnn_last_error();
  cnn_image_u8 again{};
  ASSERT_EQ(decode(ok, &again), CNN_OK);
  EXPECT_EQ(std::memcmp(img.pixels, again.pixels, (size_t)img.w * img.h * img.n), 0);
  cnn_image_u8_free(&img);
  cnn_image_u8_free(&again);
}

// A model file whose normalization is infinite loaded, and made every prediction NaN (mean) or every input zero
// (std). Found by the model_file harness.
TEST(Hardening, InfiniteNormalizationInAModelFileIsRefused) {
  cnntest::TempDir dir;
  Backend be;
  for (const char *name : {"model_file/crash-normalization-mean-inf", "model_file/normalization-std-inf"}) {
    std::string path = dir.file("m.safetensors");
    cnntest::write_file(path, read_regression(name));
    cnn_net *net = nullptr;
    EXPECT_EQ(cnn_net_load(path.c_str(), be.b, &net), CNN_ERR_INVALID_ARG) << name;
    EXPECT_NE(std::string(cnn_last_error()).find("std must be finite and > 0, mean finite"), std::string::npos)
        << cnn_last_error();
    EXPECT_EQ(net, nullptr);
  }
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 2 2 2\nflatten\ndense 2\n", "n.cnn", be.b, 1, &net), CNN_OK);
  const float mean[2] = {0.5f, 0.5f}, std_ok[2] = {0.25f, 0.25f};
  const float inf = INFINITY;
  const float mean_inf[2] = {0.5f, -inf}, std_inf[2] = {0.25f, inf};
  EXPECT_EQ(cnn_net_set_normalization(net, 2, mean_inf, std_ok), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_net_set_normalization(net, 2, mean, std_inf), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_net_set_normalization(net, 2, mean, std_ok), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
}

}  // namespace

namespace {

// Found by the image harness once the BMP cases were closed: stb_image grows its buffer to the length an IDAT
// chunk declares before reading it (a 200-byte PNG asked for 2 GiB), and expands a palette PNG through a 256-entry
// palette that it fills only as far as the file's PLTE goes.
TEST(Hardening, PngChunksPastTheFileAndIndicesPastThePaletteAreHandled) {
  cnn_image_u8 img{}, again{};
  EXPECT_EQ(decode(read_regression("image/oom-png-idat-length-past-the-end"), &img), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("corrupt PNG: chunk 'IDAT' at byte"), std::string::npos)
      << cnn_last_error();
  EXPECT_NE(std::string(cnn_last_error()).find("past the end of the file"), std::string::npos) << cnn_last_error();
  EXPECT_EQ(img.pixels, nullptr);
  // a 6x4 image with a 4-colour palette and indices beyond it: the same pixels every time, black past the palette
  std::string pal = read_regression("image/crash-png-palette-index-beyond-palette");
  ASSERT_EQ(decode(pal, &img), CNN_OK) << cnn_last_error();
  ASSERT_EQ(decode(pal, &again), CNN_OK) << cnn_last_error();
  ASSERT_EQ(img.w, 6);
  ASSERT_EQ(img.h, 4);
  ASSERT_EQ(img.n, 3);
  EXPECT_EQ(std::memcmp(img.pixels, again.pixels, 6 * 4 * 3), 0);
  // every pixel is one of the palette's four colours or black
  const unsigned char palette[5][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {9, 9, 9}, {0, 0, 0}};
  int black = 0;
  for (int i = 0; i < 6 * 4; i++) {
    const unsigned char *px = img.pixels + 3 * i;
    int found = -1;
    for (int k = 0; k < 5 && found < 0; k++)
      if (!std::memcmp(px, palette[k], 3)) found = k;
    EXPECT_GE(found, 0) << "pixel " << i << ": " << (int)px[0] << "," << (int)px[1] << "," << (int)px[2];
    black += found == 4;
  }
  EXPECT_GT(black, 0);  // the file has indices past its palette
  cnn_image_u8_free(&img);
  cnn_image_u8_free(&again);
}

}  // namespace
