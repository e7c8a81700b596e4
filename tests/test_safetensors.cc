// safetensors reading and writing (core/io/safetensors.h): round trips and every malformed header the reader
// must refuse.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/io/json.h"
#include "core/io/safetensors.h"
#include "tests/util.h"

using cnntest::TempDir;

namespace {

std::string le64(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; i++) s[i] = (char)(v >> (8 * i));
  return s;
}

// A file with this header text and `data_size` bytes of buffer.
std::string st_file(const std::string &header, size_t data_size) {
  return le64(header.size()) + header + std::string(data_size, '\x5a');
}

std::string last_error() { return cnn_last_error(); }

struct Reader {
  cnn_st_file *f = nullptr;
  cnn_status st;
  explicit Reader(const std::string &path) { st = cnn_st_read(path.c_str(), &f); }
  ~Reader() { cnn_st_free(f); }
};

}  // namespace

TEST(Safetensors, RoundTripOfEveryDtypeWithMetadata) {
  TempDir dir;
  std::string path = dir.file("model.safetensors");
  float f32[6] = {1.5f, -2, 3, 4, 5, 6.25f};
  uint16_t f16[4] = {0x3c00, 0xc000, 0x7bff, 0};
  uint16_t bf16[4] = {0x3f80, 0x4000, 0xbf80, 0x7f80};
  int32_t i32[3] = {-7, 0, 2147483647};
  uint8_t u8[5] = {0, 1, 2, 254, 255};
  int8_t i8[1] = {-128};
  float scalar = 42;
  int64_t s23[] = {2, 3}, s4[] = {4}, s22[] = {2, 2}, s3[] = {3}, s5[] = {5}, s1111[] = {1, 1, 1, 1}, s03[] = {0, 3};
  cnn_st_entry e[] = {
      {"conv1.weight", CNN_F32, 2, s23, f32}, {"half", CNN_F16, 1, s4, f16},     {"brain", CNN_BF16, 2, s22, bf16},
      {"labels", CNN_I32, 1, s3, i32},        {"bytes", CNN_U8, 1, s5, u8},      {"q", CNN_I8, 4, s1111, i8},
      {"scalar", CNN_F32, 0, nullptr, &scalar}, {"empty", CNN_F32, 2, s03, nullptr},
  };
  const char *keys[] = {"format", "model"};
  const char *values[] = {"pt", "input 28 28 1\n\"quoted\" \xc3\xa9"};
  ASSERT_EQ(cnn_st_write(path.c_str(), e, 8, keys, values, 2), CNN_OK) << last_error();

  std::string raw = cnntest::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; i--) n = (n << 8) | (unsigned char)raw[i];
  EXPECT_EQ(n % 8, 0u) << "the header is padded to a multiple of 8";
  EXPECT_EQ(raw.size(), 8 + n + 24 + 8 + 8 + 12 + 5 + 1 + 4);
  cnn_json *hdr = nullptr;
  ASSERT_EQ(cnn_json_parse(raw.data() + 8, n, &hdr), CNN_OK) << last_error();
  cnn_json_free(hdr);

  Reader r(path);
  ASSERT_EQ(r.st, CNN_OK) << last_error();
  EXPECT_EQ(r.f->count, 8);
  EXPECT_EQ(r.f->data_size, 24u + 8 + 8 + 12 + 5 + 1 + 4);
  EXPECT_STREQ(cnn_st_meta(r.f, "format"), "pt");
  EXPECT_STREQ(cnn_st_meta(r.f, "model"), values[1]);
  EXPECT_EQ(cnn_st_meta(r.f, "nope"), nullptr);
  for (const auto &entry : e) {
    const cnn_st_tensor *t = cnn_st_find(r.f, entry.name);
    ASSERT_NE(t, nullptr) << entry.name;
    EXPECT_EQ(t->dtype, entry.dtype) << entry.name;
    ASSERT_EQ(t->ndim, entry.ndim) << entry.name;
    size_t numel = 1;
    for (int k = 0; k < t->ndim; k++) {
      EXPECT_EQ(t->shape[k], entry.shape[k]);
      numel *= (size_t)entry.shape[k];
    }
    ASSERT_EQ(t->nbytes, numel * cnn_dtype_size(entry.dtype)) << entry.name;
    if (t->nbytes) {
      EXPECT_EQ(memcmp(cnn_st_data(r.f, t), entry.data, t->nbytes), 0) << entry.name;
    }
  }
  EXPECT_EQ(cnn_st_find(r.f, "missing"), nullptr);
  // tensors come in file order
  for (int i = 1; i < r.f->count; i++) EXPECT_GE(r.f->tensors[i].offset, r.f->tensors[i - 1].offset);
}

TEST(Safetensors, EmptyFileAndNoMetadata) {
  TempDir dir;
  std::string path = dir.file("empty.safetensors");
  ASSERT_EQ(cnn_st_write(path.c_str(), nullptr, 0, nullptr, nullptr, 0), CNN_OK) << last_error();
  Reader r(path);
  ASSERT_EQ(r.st, CNN_OK) << last_error();
  EXPECT_EQ(r.f->count, 0);
  EXPECT_EQ(r.f->meta_count, 0);
  EXPECT_EQ(r.f->data_size, 0u);
}

TEST(Safetensors, ReadsAForeignFileWithUnpaddedHeaderAndOtherKeyOrder) {
  TempDir dir;
  std::string path = dir.file("foreign.safetensors");
  std::string h = R"({"b":{"shape":[1],"data_offsets":[0,2],"dtype":"F16"},"a":{"dtype":"U8","shape":[3],)"
                  R"("data_offsets":[2,5]},"__metadata__":{}})";
  cnntest::write_file(path, st_file(h, 5));
  Reader r(path);
  ASSERT_EQ(r.st, CNN_OK) << last_error();
  ASSERT_EQ(r.f->count, 2);
  EXPECT_STREQ(r.f->tensors[0].name, "b");
  EXPECT_EQ(cnn_st_find(r.f, "a")->offset, 2u);
}

TEST(Safetensors, MalformedFilesAreFormatErrorsNamingFileAndField) {
  struct Case {
    const char *label;
    std::string bytes;
    const char *expect;  // a part of the message
  };
  const std::string F = R"("t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  std::vector<Case> cases = {
      {"short", std::string("\x10\0\0", 3), "8-byte"},
      {"header-past-end", le64(1000) + "{}", "more than"},
      {"header-over-cap", le64(200000000) + "{}", "limit"},
      {"not-json", st_file("{abc}", 0), "invalid JSON"},
      {"not-object", st_file("[1,2]", 0), "start with '{'"},
      {"zero-header", st_file("", 0), "start with '{'"},
      {"entry-not-object", st_file(R"({"t":5})", 0), "not an object"},
      {"no-dtype", st_file(R"({"t":{"shape":[2],"data_offsets":[0,8]}})", 8), "dtype"},
      {"no-shape", st_file(R"({"t":{"dtype":"F32","data_offsets":[0,8]}})", 8), "shape"},
      {"no-offsets", st_file(R"({"t":{"dtype":"F32","shape":[2]}})", 8), "data_offsets"},
      {"dtype-number", st_file(R"({"t":{"dtype":5,"shape":[2],"data_offsets":[0,8]}})", 8), "dtype"},
      {"unknown-dtype", st_file(R"({"t":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}})", 8), "F99"},
      {"shape-string", st_file(R"({"t":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", 8), "shape"},
      {"shape-fraction", st_file(R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", 8), "shape[0]"},
      {"rank-5", st_file(R"({"t":{"dtype":"U8","shape":[1,1,1,1,1],"data_offsets":[0,1]}})", 1), "rank"},
      {"negative-dim", st_file(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "negative"},
      {"overflow-dim",
       st_file(R"({"t":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})", 8),
       "overflow"},
      {"offsets-one", st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8), "data_offsets"},
      {"offsets-string", st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}})", 8),
       "data_offsets[0]"},
      {"offsets-negative", st_file(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[-4,-4]}})", 0),
       "data_offsets[0]"},
      {"begin-after-end", st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "after end"},
      {"end-beyond", st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "beyond"},
      {"wrong-bytes", st_file(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "take 8"},
      {"overlap",
       st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12),
       "overlaps"},
      {"gap",
       st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
               12),
       "gap"},
      {"trailing-buffer", st_file("{" + F + "}", 12), "belong to no tensor"},
      {"duplicate-name", st_file("{" + F + "," + F + "}", 8), "twice"},
      {"meta-not-object", st_file(R"({"__metadata__":[1]})", 0), "__metadata__"},
      {"meta-number", st_file(R"({"__metadata__":{"epoch":3}})", 0), "epoch"},
      {"nul-in-name", st_file(R"({"a\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1), "NUL"},
  };
  TempDir dir;
  for (const auto &c : cases) {
    std::string path = dir.file(std::string(c.label) + ".safetensors");
    cnntest::write_file(path, c.bytes);
    Reader r(path);
    EXPECT_EQ(r.st, CNN_ERR_FORMAT) << c.label << ": " << last_error();
    EXPECT_EQ(r.f, nullptr) << c.label;
    EXPECT_NE(last_error().find(path), std::string::npos) << c.label << ": " << last_error();
    EXPECT_NE(last_error().find(c.expect), std::string::npos) << c.label << ": " << last_error();
  }
}

TEST(Safetensors, ValidDtypesWithoutACnnTypeAreUnsupported) {
  TempDir dir;
  std::string path = dir.file("f64.safetensors");
  cnntest::write_file(path, st_file(R"({"t":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8));
  Reader r(path);
  EXPECT_EQ(r.st, CNN_ERR_UNSUPPORTED);
  EXPECT_NE(last_error().find("F64"), std::string::npos) << last_error();
  EXPECT_NE(last_error().find(path), std::string::npos) << last_error();
}

TEST(Safetensors, MissingFileIsNotFound) {
  TempDir dir;
  Reader r(dir.file("absent.safetensors"));
  EXPECT_EQ(r.st, CNN_ERR_NOT_FOUND);
  EXPECT_NE(last_error().find("absent.safetensors"), std::string::npos);
}

TEST(Safetensors, ZeroSizedTensorsMayShareAnOffset) {
  TempDir dir;
  std::string path = dir.file("zeros.safetensors");
  std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                  R"("z":{"dtype":"F32","shape":[0,5],"data_offsets":[4,4]},)"
                  R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})";
  cnntest::write_file(path, st_file(h, 6));
  Reader r(path);
  EXPECT_EQ(r.st, CNN_OK) << last_error();
}

TEST(Safetensors, WriterRefusesBadEntriesAndLeavesNoFile) {
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  float x[2] = {1, 2};
  int64_t s2[] = {2}, neg[] = {-1};
  struct {
    const char *label;
    cnn_st_entry e[2];
    int n;
  } cases[] = {
      {"duplicate", {{"w", CNN_F32, 1, s2, x}, {"w", CNN_F32, 1, s2, x}}, 2},
      {"metadata-name", {{"__metadata__", CNN_F32, 1, s2, x}}, 1},
      {"empty-name", {{"", CNN_F32, 1, s2, x}}, 1},
      {"negative", {{"w", CNN_F32, 1, neg, x}}, 1},
      {"dtype", {{"w", CNN_DTYPE_COUNT, 1, s2, x}}, 1},
      {"rank", {{"w", CNN_F32, CNN_MAX_DIMS + 1, s2, x}}, 1},
      {"no-data", {{"w", CNN_F32, 1, s2, nullptr}}, 1},
      {"utf8", {{"bad\xff", CNN_F32, 1, s2, x}}, 1},
  };
  for (const auto &c : cases) {
    EXPECT_EQ(cnn_st_write(path.c_str(), c.e, c.n, nullptr, nullptr, 0), CNN_ERR_INVALID_ARG) << c.label;
    EXPECT_NE(last_error().find(path), std::string::npos) << c.label << ": " << last_error();
  }
  cnn_st_entry ok = {"w", CNN_F32, 1, s2, x};
  const char *k2[] = {"a", "a"}, *v2[] = {"1", "2"};
  EXPECT_EQ(cnn_st_write(path.c_str(), &ok, 1, k2, v2, 2), CNN_ERR_INVALID_ARG);
  const char *k1[] = {"a"}, *vnull[] = {nullptr};
  EXPECT_EQ(cnn_st_write(path.c_str(), &ok, 1, k1, vnull, 1), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnntest::read_file(path), "");  // never created
}

TEST(Safetensors, RewriteReplacesAtomically) {
  TempDir dir;
  std::string path = dir.file("m.safetensors");
  float a[1] = {1}, b[2] = {2, 3};
  int64_t s1[] = {1}, s2[] = {2};
  cnn_st_entry ea = {"a", CNN_F32, 1, s1, a}, eb = {"b", CNN_F32, 1, s2, b};
  ASSERT_EQ(cnn_st_write(path.c_str(), &ea, 1, nullptr, nullptr, 0), CNN_OK);
  ASSERT_EQ(cnn_st_write(path.c_str(), &eb, 1, nullptr, nullptr, 0), CNN_OK);
  Reader r(path);
  ASSERT_EQ(r.st, CNN_OK) << last_error();
  EXPECT_EQ(cnn_st_find(r.f, "a"), nullptr);
  ASSERT_NE(cnn_st_find(r.f, "b"), nullptr);
}

TEST(Safetensors, DtypeNames) {
  cnn_dtype d;
  for (int i = 0; i < CNN_DTYPE_COUNT; i++) {
    const char *name = cnn_st_dtype_name((cnn_dtype)i);
    ASSERT_NE(name, nullptr);
    ASSERT_TRUE(cnn_st_dtype_from_name(name, &d));
    EXPECT_EQ(d, (cnn_dtype)i);
  }
  EXPECT_FALSE(cnn_st_dtype_from_name("F64", &d));
  EXPECT_FALSE(cnn_st_dtype_from_name(nullptr, &d));
}
