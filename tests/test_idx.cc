// IDX files and datasets (core/data/idx.h, cnn/data.h): round trips, every malformed-file case, named datasets,
// splitting, statistics, and the real Fashion-MNIST when it is installed.
#include <sys/stat.h>
#include <zlib.h>

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "cnn/data.h"
#include "core/data/idx.h"
#include "tests/util.h"

using cnntest::TempDir;
using cnntest::write_file;

namespace {

std::string idx_bytes(int type, const std::vector<uint32_t> &dims, const std::string &data) {
  std::string s;
  s += '\0';
  s += '\0';
  s += (char)type;
  s += (char)dims.size();
  for (uint32_t d : dims) {
    s += (char)(d >> 24);
    s += (char)(d >> 16);
    s += (char)(d >> 8);
    s += (char)d;
  }
  return s + data;
}

std::string gzip(const std::string &raw) {
  z_stream zs = {};
  EXPECT_EQ(deflateInit2(&zs, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&zs, raw.size()) + 64, '\0');
  zs.next_in = (Bytef *)raw.data();
  zs.avail_in = (uInt)raw.size();
  zs.next_out = (Bytef *)&out[0];
  zs.avail_out = (uInt)out.size();
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// n images of h x w whose pixel values are i * 7 + p (mod 256), labels i % classes.
std::string image_data(uint32_t n, uint32_t h, uint32_t w) {
  std::string d;
  for (uint32_t i = 0; i < n * h * w; i++) d += (char)((i * 7) & 0xff);
  return d;
}

std::string label_data(uint32_t n, int classes) {
  std::string d;
  for (uint32_t i = 0; i < n; i++) d += (char)(i % classes);
  return d;
}

bool contains(const std::string &haystack, const std::string &needle) {
  return haystack.find(needle) != std::string::npos;
}

std::string last_error() { return cnn_last_error(); }

// Reads an IDX file; returns the status and leaves the message in cnn_last_error().
cnn_status read_idx(const std::string &path, cnn_idx *idx) { return cnn_idx_read(path.c_str(), 0, idx); }

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// the IDX reader

TEST(Idx, ReadsRawAndGzipAlike) {
  TempDir dir;
  std::string bytes = idx_bytes(0x08, {3, 2, 4}, image_data(3, 2, 4));
  write_file(dir.file("raw"), bytes);
  write_file(dir.file("gz"), gzip(bytes));
  for (const char *name : {"raw", "gz"}) {
    cnn_idx idx;
    ASSERT_EQ(read_idx(dir.file(name), &idx), CNN_OK) << last_error();
    EXPECT_EQ(idx.ndim, 3);
    EXPECT_EQ(idx.dims[0], 3);
    EXPECT_EQ(idx.dims[1], 2);
    EXPECT_EQ(idx.dims[2], 4);
    ASSERT_EQ(idx.size, 24u);
    EXPECT_EQ(std::string((char *)idx.data, idx.size), image_data(3, 2, 4));
    cnn_idx_free(&idx);
    EXPECT_EQ(idx.data, nullptr);
  }
  cnn_idx_free(nullptr);
}

TEST(Idx, WrongMagicIsFormatError) {
  TempDir dir;
  std::string bytes = idx_bytes(0x08, {2}, "ab");
  bytes[0] = 0x01;
  write_file(dir.file("bad-magic"), bytes);
  cnn_idx idx;
  EXPECT_EQ(read_idx(dir.file("bad-magic"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "bad-magic")) << last_error();
  EXPECT_TRUE(contains(last_error(), "magic")) << last_error();
}

TEST(Idx, OtherElementTypesAreRefusedByName) {
  TempDir dir;
  write_file(dir.file("floats"), idx_bytes(0x0D, {1}, "abcd"));
  cnn_idx idx;
  EXPECT_EQ(read_idx(dir.file("floats"), &idx), CNN_ERR_UNSUPPORTED);
  EXPECT_TRUE(contains(last_error(), "floats")) << last_error();
  EXPECT_TRUE(contains(last_error(), "f32")) << last_error();
  write_file(dir.file("weird"), idx_bytes(0x07, {1}, "a"));
  EXPECT_EQ(read_idx(dir.file("weird"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "0x07")) << last_error();
}

TEST(Idx, TruncatedHeaderIsFormatError) {
  TempDir dir;
  cnn_idx idx;
  write_file(dir.file("short"), std::string("\0\0\x08", 3));
  EXPECT_EQ(read_idx(dir.file("short"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "short")) << last_error();
  EXPECT_TRUE(contains(last_error(), "truncated header")) << last_error();
  // 3 dimensions declared, 1.5 given
  std::string bytes = idx_bytes(0x08, {2, 2, 2}, "").substr(0, 10);
  write_file(dir.file("dims"), bytes);
  EXPECT_EQ(read_idx(dir.file("dims"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "truncated header")) << last_error();
  write_file(dir.file("dims.gz"), gzip(bytes));
  EXPECT_EQ(read_idx(dir.file("dims.gz"), &idx), CNN_ERR_FORMAT);
  write_file(dir.file("empty"), "");
  EXPECT_EQ(read_idx(dir.file("empty"), &idx), CNN_ERR_FORMAT);
}

TEST(Idx, ZeroOrTooManyDimensionsAreRefused) {
  TempDir dir;
  cnn_idx idx;
  write_file(dir.file("rank0"), idx_bytes(0x08, {}, ""));
  EXPECT_EQ(read_idx(dir.file("rank0"), &idx), CNN_ERR_FORMAT);
  write_file(dir.file("rank5"), idx_bytes(0x08, {1, 1, 1, 1, 1}, "a"));
  EXPECT_EQ(read_idx(dir.file("rank5"), &idx), CNN_ERR_UNSUPPORTED);
  EXPECT_TRUE(contains(last_error(), "rank5")) << last_error();
}

TEST(Idx, TruncatedDataIsFormatErrorRawAndGzip) {
  TempDir dir;
  std::string bytes = idx_bytes(0x08, {4, 28, 28}, image_data(4, 28, 28));
  std::string cut = bytes.substr(0, bytes.size() - 100);
  write_file(dir.file("cut-raw"), cut);
  cnn_idx idx;
  EXPECT_EQ(read_idx(dir.file("cut-raw"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "cut-raw")) << last_error();
  EXPECT_TRUE(contains(last_error(), "truncated")) << last_error();
  EXPECT_TRUE(contains(last_error(), "4x28x28")) << last_error();
  EXPECT_TRUE(contains(last_error(), "3036")) << last_error();  // 4*784 - 100 bytes of data arrived

  // a complete gzip stream of a cut file
  write_file(dir.file("cut-content.gz"), gzip(cut));
  EXPECT_EQ(read_idx(dir.file("cut-content.gz"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "truncated")) << last_error();

  // a gzip stream cut in the middle, and one cut inside its 8-byte trailer
  std::string gz = gzip(bytes);
  write_file(dir.file("cut-stream.gz"), gz.substr(0, gz.size() / 2));
  EXPECT_EQ(read_idx(dir.file("cut-stream.gz"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "cut-stream.gz")) << last_error();
  EXPECT_TRUE(contains(last_error(), "truncated")) << last_error();
  write_file(dir.file("cut-trailer.gz"), gz.substr(0, gz.size() - 3));
  EXPECT_EQ(read_idx(dir.file("cut-trailer.gz"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "cut-trailer.gz")) << last_error();
}

TEST(Idx, CorruptGzipStreamIsFormatError) {
  TempDir dir;
  std::string bytes = idx_bytes(0x08, {16, 28, 28}, image_data(16, 28, 28));
  std::string gz = gzip(bytes);
  cnn_idx idx;

  // a wrong CRC-32 in the trailer: only noticed once the stream ends
  std::string bad_crc = gz;
  bad_crc[gz.size() - 8] ^= 0x55;
  write_file(dir.file("crc.gz"), bad_crc);
  EXPECT_EQ(read_idx(dir.file("crc.gz"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "crc.gz")) << last_error();
  EXPECT_TRUE(contains(last_error(), "corrupt")) << last_error();

  // garbage in the deflate data
  std::string garbage = gz;
  for (size_t i = 20; i < 60 && i < garbage.size(); i++) garbage[i] = (char)0xff;
  write_file(dir.file("garbage.gz"), garbage);
  EXPECT_EQ(read_idx(dir.file("garbage.gz"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "garbage.gz")) << last_error();
}

TEST(Idx, TrailingDataIsFormatError) {
  TempDir dir;
  std::string bytes = idx_bytes(0x08, {2, 2}, "abcd") + "x";
  write_file(dir.file("trailing"), bytes);
  write_file(dir.file("trailing.gz"), gzip(bytes));
  cnn_idx idx;
  for (const char *name : {"trailing", "trailing.gz"}) {
    EXPECT_EQ(read_idx(dir.file(name), &idx), CNN_ERR_FORMAT);
    EXPECT_TRUE(contains(last_error(), name)) << last_error();
    EXPECT_TRUE(contains(last_error(), "after")) << last_error();
  }
}

TEST(Idx, AbsurdDimensionsAreRefusedBeforeAllocating) {
  TempDir dir;
  cnn_idx idx;
  write_file(dir.file("huge"), idx_bytes(0x08, {0xffffffffu, 0xffffffffu, 0xffffffffu}, "abc"));
  EXPECT_EQ(read_idx(dir.file("huge"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "limit")) << last_error();
  // within the limit, but the file holds 3 bytes of 1.5 GB: truncated, and quickly
  write_file(dir.file("claims"), idx_bytes(0x08, {2000000, 28, 28}, "abc"));
  EXPECT_EQ(read_idx(dir.file("claims"), &idx), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "truncated")) << last_error();
  // a caller's own limit
  write_file(dir.file("small"), idx_bytes(0x08, {10, 10}, std::string(100, 'a')));
  EXPECT_EQ(cnn_idx_read(dir.file("small").c_str(), 99, &idx), CNN_ERR_FORMAT);
  ASSERT_EQ(cnn_idx_read(dir.file("small").c_str(), 100, &idx), CNN_OK);
  cnn_idx_free(&idx);
}

TEST(Idx, MissingFileIsNotFound) {
  TempDir dir;
  cnn_idx idx;
  EXPECT_EQ(read_idx(dir.file("absent"), &idx), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(contains(last_error(), "absent")) << last_error();
}

// ---------------------------------------------------------------------------------------------------------------
// cnn_dataset_load_idx

TEST(Dataset, LoadIdxScalesPixelsAndCountsClasses) {
  TempDir dir;
  write_file(dir.file("img"), idx_bytes(0x08, {5, 3, 2}, image_data(5, 3, 2)));
  write_file(dir.file("lab.gz"), gzip(idx_bytes(0x08, {5}, label_data(5, 4))));
  cnn_dataset *ds = nullptr;
  ASSERT_EQ(cnn_dataset_load_idx(dir.file("img").c_str(), dir.file("lab.gz").c_str(), &ds), CNN_OK)
      << last_error();
  EXPECT_EQ(ds->n, 5);
  EXPECT_EQ(ds->h, 3);
  EXPECT_EQ(ds->w, 2);
  EXPECT_EQ(ds->c, 1);
  EXPECT_EQ(ds->num_classes, 4);
  EXPECT_EQ(ds->class_names, nullptr);
  std::string pix = image_data(5, 3, 2);
  // held as the file's 8-bit pixels, read as p / 255
  EXPECT_EQ(ds->images, nullptr);
  ASSERT_NE(ds->pixels, nullptr);
  std::vector<float> values(6);
  for (size_t i = 0; i < pix.size(); i++) {
    EXPECT_EQ(ds->pixels[i], (unsigned char)pix[i]);
    if (i % 6 == 0) cnn_dataset_image(ds, (int64_t)(i / 6), values.data());
    EXPECT_EQ(values[i % 6], (float)(unsigned char)pix[i] / 255.0f);
  }
  for (int i = 0; i < 5; i++) EXPECT_EQ(ds->labels[i], i % 4);
  cnn_dataset_destroy(ds);
  cnn_dataset_destroy(nullptr);
}

TEST(Dataset, LoadIdxAcceptsColourImages) {
  TempDir dir;
  write_file(dir.file("img"), idx_bytes(0x08, {2, 2, 2, 3}, image_data(2, 2, 6)));
  write_file(dir.file("lab"), idx_bytes(0x08, {2}, std::string("\x00\x00", 2)));
  cnn_dataset *ds = nullptr;
  ASSERT_EQ(cnn_dataset_load_idx(dir.file("img").c_str(), dir.file("lab").c_str(), &ds), CNN_OK);
  EXPECT_EQ(ds->c, 3);
  EXPECT_EQ(ds->num_classes, 1);  // all labels 0: one class, not zero
  cnn_dataset_destroy(ds);
}

TEST(Dataset, CountMismatchNamesBothFiles) {
  TempDir dir;
  write_file(dir.file("images-idx3"), idx_bytes(0x08, {3, 2, 2}, image_data(3, 2, 2)));
  write_file(dir.file("labels-idx1"), idx_bytes(0x08, {2}, label_data(2, 2)));
  cnn_dataset *ds = nullptr;
  EXPECT_EQ(cnn_dataset_load_idx(dir.file("images-idx3").c_str(), dir.file("labels-idx1").c_str(), &ds),
            CNN_ERR_FORMAT);
  EXPECT_EQ(ds, nullptr);
  std::string e = last_error();
  EXPECT_TRUE(contains(e, "images-idx3") && contains(e, "labels-idx1")) << e;
  EXPECT_TRUE(contains(e, "3 images") && contains(e, "2 labels")) << e;
}

TEST(Dataset, WrongRanksAndEmptyFilesAreRefused) {
  TempDir dir;
  cnn_dataset *ds = nullptr;
  write_file(dir.file("img1"), idx_bytes(0x08, {4}, "abcd"));
  write_file(dir.file("lab"), idx_bytes(0x08, {4}, label_data(4, 2)));
  EXPECT_EQ(cnn_dataset_load_idx(dir.file("img1").c_str(), dir.file("lab").c_str(), &ds), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "img1")) << last_error();
  write_file(dir.file("img"), idx_bytes(0x08, {4, 1, 1}, "abcd"));
  write_file(dir.file("lab2"), idx_bytes(0x08, {2, 2}, label_data(4, 2)));
  EXPECT_EQ(cnn_dataset_load_idx(dir.file("img").c_str(), dir.file("lab2").c_str(), &ds), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "lab2")) << last_error();
  write_file(dir.file("none"), idx_bytes(0x08, {0, 28, 28}, ""));
  write_file(dir.file("lab0"), idx_bytes(0x08, {0}, ""));
  EXPECT_EQ(cnn_dataset_load_idx(dir.file("none").c_str(), dir.file("lab0").c_str(), &ds), CNN_ERR_FORMAT);
  write_file(dir.file("flat"), idx_bytes(0x08, {4, 0, 28}, ""));
  EXPECT_EQ(cnn_dataset_load_idx(dir.file("flat").c_str(), dir.file("lab").c_str(), &ds), CNN_ERR_FORMAT);
  EXPECT_EQ(cnn_dataset_load_idx(dir.file("img").c_str(), dir.file("missing").c_str(), &ds), CNN_ERR_NOT_FOUND);
  EXPECT_EQ(ds, nullptr);
}

// ---------------------------------------------------------------------------------------------------------------
// cnn_dataset_load

namespace {

void write_mnist_dir(const std::string &dir, uint32_t ntrain, uint32_t ntest, int classes, bool gz) {
  auto put = [&](const std::string &name, const std::string &bytes) {
    write_file(dir + "/" + name + (gz ? ".gz" : ""), gz ? gzip(bytes) : bytes);
  };
  put("train-images-idx3-ubyte", idx_bytes(0x08, {ntrain, 28, 28}, image_data(ntrain, 28, 28)));
  put("train-labels-idx1-ubyte", idx_bytes(0x08, {ntrain}, label_data(ntrain, classes)));
  put("t10k-images-idx3-ubyte", idx_bytes(0x08, {ntest, 28, 28}, image_data(ntest, 28, 28)));
  put("t10k-labels-idx1-ubyte", idx_bytes(0x08, {ntest}, label_data(ntest, classes)));
}

}  // namespace

TEST(Dataset, LoadNamedDatasetFromDirectory) {
  TempDir dir;
  write_mnist_dir(dir.path(), 30, 12, 10, true);
  cnn_dataset *ds = nullptr;
  ASSERT_EQ(cnn_dataset_load(("fashion-mnist:" + dir.path()).c_str(), "train", &ds), CNN_OK) << last_error();
  EXPECT_EQ(ds->n, 30);
  EXPECT_EQ(ds->num_classes, 10);
  ASSERT_NE(ds->class_names, nullptr);
  EXPECT_STREQ(ds->class_names[0], "T-shirt/top");
  EXPECT_STREQ(ds->class_names[9], "Ankle boot");
  cnn_dataset_destroy(ds);

  TempDir raw;
  write_mnist_dir(raw.path(), 30, 12, 3, false);  // uncompressed files; only 3 classes used
  ASSERT_EQ(cnn_dataset_load(("mnist:" + raw.path()).c_str(), "test", &ds), CNN_OK) << last_error();
  EXPECT_EQ(ds->n, 12);
  EXPECT_EQ(ds->num_classes, 10);  // MNIST has ten classes whatever a small file uses
  EXPECT_EQ(ds->class_names, nullptr);
  cnn_dataset_destroy(ds);
}

TEST(Dataset, MissingDirectoryOrFileSaysHowToGetTheData) {
  TempDir dir;
  cnn_dataset *ds = nullptr;
  std::string missing = dir.file("not-here");
  EXPECT_EQ(cnn_dataset_load(("fashion-mnist:" + missing).c_str(), "train", &ds), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(contains(last_error(), missing)) << last_error();
  EXPECT_TRUE(contains(last_error(), "sudo apt-get install dataset-fashion-mnist")) << last_error();
  EXPECT_EQ(cnn_dataset_load(("mnist:" + missing).c_str(), "train", &ds), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(contains(last_error(), "train-images-idx3-ubyte")) << last_error();

  // the directory exists but a file is missing
  write_mnist_dir(dir.path(), 4, 4, 10, true);
  ASSERT_EQ(remove(dir.file("t10k-labels-idx1-ubyte.gz").c_str()), 0);
  EXPECT_EQ(cnn_dataset_load(("fashion-mnist:" + dir.path()).c_str(), "test", &ds), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(contains(last_error(), "t10k-labels-idx1-ubyte")) << last_error();
  EXPECT_TRUE(contains(last_error(), "apt-get")) << last_error();
  EXPECT_EQ(ds, nullptr);
}

TEST(Dataset, MissingDefaultDirectoryMessageMentionsTheDebianPackage) {
  struct stat sb;
  if (stat(CNN_FASHION_MNIST_DIR, &sb) == 0) GTEST_SKIP() << CNN_FASHION_MNIST_DIR << " is installed here";
  cnn_dataset *ds = nullptr;
  EXPECT_EQ(cnn_dataset_load("fashion-mnist", "train", &ds), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(contains(last_error(), "install it with: sudo apt-get install dataset-fashion-mnist")) << last_error();
}

TEST(Dataset, BadSpecsAndSplitsAreRefused) {
  cnn_dataset *ds = nullptr;
  EXPECT_EQ(cnn_dataset_load("cifar-10", "train", &ds), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(contains(last_error(), "cifar-10")) << last_error();
  EXPECT_EQ(cnn_dataset_load("fashion-mnistx", "train", &ds), CNN_ERR_NOT_FOUND);
  EXPECT_EQ(cnn_dataset_load("mnist", "train", &ds), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_dataset_load("mnist:", "train", &ds), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_dataset_load("fashion-mnist", "validation", &ds), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(contains(last_error(), "validation")) << last_error();
  EXPECT_EQ(cnn_dataset_load(nullptr, "train", &ds), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(ds, nullptr);
}

TEST(Dataset, LabelsOutsideTheTenClassesAreRefused) {
  TempDir dir;
  write_mnist_dir(dir.path(), 20, 4, 12, false);
  cnn_dataset *ds = nullptr;
  EXPECT_EQ(cnn_dataset_load(("mnist:" + dir.path()).c_str(), "train", &ds), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "train-labels-idx1-ubyte")) << last_error();
  EXPECT_TRUE(contains(last_error(), "label 10")) << last_error();
}

// ---------------------------------------------------------------------------------------------------------------
// splitting and statistics

namespace {

// A dataset of n 1x1x1 images whose pixel identifies the sample: pixel i / 1000, label i % 3.
cnn_dataset *numbered_dataset(int n, TempDir &dir) {
  std::string pix, lab;
  for (int i = 0; i < n; i++) {
    pix += (char)i;
    lab += (char)(i % 3);
  }
  write_file(dir.file("img"), idx_bytes(0x08, {(uint32_t)n, 1, 1}, pix));
  write_file(dir.file("lab"), idx_bytes(0x08, {(uint32_t)n}, lab));
  cnn_dataset *ds = nullptr;
  EXPECT_EQ(cnn_dataset_load_idx(dir.file("img").c_str(), dir.file("lab").c_str(), &ds), CNN_OK);
  return ds;
}

std::vector<int> ids(const cnn_dataset *ds) {
  std::vector<int> v;
  for (int64_t i = 0; i < ds->n; i++) v.push_back(ds->pixels[i]);
  return v;
}

}  // namespace

TEST(Dataset, SplitIsDeterministicDisjointAndComplete) {
  TempDir dir;
  cnn_dataset *ds = numbered_dataset(100, dir);
  ASSERT_NE(ds, nullptr);
  cnn_dataset *t1, *v1, *t2, *v2, *t3, *v3;
  ASSERT_EQ(cnn_dataset_split(ds, 0.2, 42, &t1, &v1), CNN_OK) << last_error();
  ASSERT_EQ(cnn_dataset_split(ds, 0.2, 42, &t2, &v2), CNN_OK);
  ASSERT_EQ(cnn_dataset_split(ds, 0.2, 43, &t3, &v3), CNN_OK);
  EXPECT_EQ(t1->n, 80);
  EXPECT_EQ(v1->n, 20);
  EXPECT_EQ(ids(t1), ids(t2));
  EXPECT_EQ(ids(v1), ids(v2));
  EXPECT_NE(ids(v1), ids(v3));

  std::set<int> all;
  for (int id : ids(t1)) all.insert(id);
  for (int id : ids(v1)) EXPECT_EQ(all.count(id), 0u) << "sample " << id << " is on both sides";
  for (int id : ids(v1)) all.insert(id);
  EXPECT_EQ(all.size(), 100u);
  // labels travel with their images; the original is untouched
  for (int64_t i = 0; i < v1->n; i++) EXPECT_EQ(v1->labels[i], ids(v1)[i] % 3);
  for (int i = 0; i < 100; i++) EXPECT_EQ(ids(ds)[i], i);
  EXPECT_EQ(t1->num_classes, 3);

  for (auto *p : {t1, v1, t2, v2, t3, v3}) cnn_dataset_destroy(p);
  cnn_dataset_destroy(ds);
}

TEST(Dataset, SplitKeepsClassNamesAndRefusesBadFractions) {
  TempDir dir;
  write_mnist_dir(dir.path(), 10, 2, 10, true);
  cnn_dataset *ds = nullptr, *t = nullptr, *v = nullptr;
  ASSERT_EQ(cnn_dataset_load(("fashion-mnist:" + dir.path()).c_str(), "train", &ds), CNN_OK);
  ASSERT_EQ(cnn_dataset_split(ds, 0.01, 1, &t, &v), CNN_OK);
  EXPECT_EQ(v->n, 1);  // at least one sample on each side
  EXPECT_EQ(t->n, 9);
  ASSERT_NE(v->class_names, nullptr);
  EXPECT_STREQ(v->class_names[8], "Bag");
  cnn_dataset_destroy(t);
  cnn_dataset_destroy(v);
  for (double f : {0.0, 1.0, -0.5, 2.0, (double)NAN}) {
    EXPECT_EQ(cnn_dataset_split(ds, f, 1, &t, &v), CNN_ERR_INVALID_ARG) << f;
    EXPECT_EQ(t, nullptr);
    EXPECT_EQ(v, nullptr);
  }
  cnn_dataset_destroy(ds);
}

TEST(Dataset, StatsAndStandardize) {
  TempDir dir;
  // two 1x2 RGB images: channel 0 = {0, 51, 102, 153}, channel 1 constant 255, channel 2 = {0, 0, 255, 255}
  std::string pix = {0, (char)255, 0, 51, (char)255, 0, 102, (char)255, (char)255, (char)153, (char)255, (char)255};
  write_file(dir.file("img"), idx_bytes(0x08, {2, 1, 2, 3}, pix));
  write_file(dir.file("lab"), idx_bytes(0x08, {2}, std::string("\x01\x00", 2)));
  cnn_dataset *ds = nullptr;
  ASSERT_EQ(cnn_dataset_load_idx(dir.file("img").c_str(), dir.file("lab").c_str(), &ds), CNN_OK);
  float mean[3], std_[3];
  ASSERT_EQ(cnn_dataset_stats(ds, mean, std_), CNN_OK);
  EXPECT_NEAR(mean[0], 0.3f, 1e-6);
  EXPECT_NEAR(std_[0], std::sqrt((0.09 + 0.01 + 0.01 + 0.09) / 4), 1e-6);
  EXPECT_NEAR(mean[1], 1.0f, 1e-6);
  EXPECT_NEAR(std_[1], 0.0f, 1e-6);
  EXPECT_NEAR(mean[2], 0.5f, 1e-6);
  EXPECT_NEAR(std_[2], 0.5f, 1e-6);

  // a zero std is refused and nothing changes
  EXPECT_EQ(cnn_dataset_standardize(ds, mean, std_), CNN_ERR_INVALID_ARG);
  std::vector<float> first((size_t)ds->h * ds->w * ds->c);
  cnn_dataset_image(ds, 0, first.data());
  EXPECT_EQ(first[0], 0.0f);
  std_[1] = 1.0f;
  ASSERT_EQ(cnn_dataset_standardize(ds, mean, std_), CNN_OK);
  float m2[3], s2[3];
  ASSERT_EQ(cnn_dataset_stats(ds, m2, s2), CNN_OK);
  EXPECT_NEAR(m2[0], 0.0f, 1e-6);
  EXPECT_NEAR(s2[0], 1.0f, 1e-5);
  EXPECT_NEAR(m2[2], 0.0f, 1e-6);
  EXPECT_NEAR(s2[2], 1.0f, 1e-5);
  EXPECT_NEAR(ds->images[0], -0.3f / std::sqrt(0.05f), 1e-5);
  float bad[3] = {0, NAN, 0};
  float one[3] = {1, 1, 1};
  EXPECT_EQ(cnn_dataset_standardize(ds, bad, one), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_dataset_stats(nullptr, m2, s2), CNN_ERR_INVALID_ARG);
  cnn_dataset_destroy(ds);
}

// ---------------------------------------------------------------------------------------------------------------
// the real thing

TEST(Dataset, FashionMnistLoadsWhenInstalled) {
  struct stat sb;
  if (stat(CNN_FASHION_MNIST_DIR, &sb) != 0)
    GTEST_SKIP() << "Fashion-MNIST is not installed (sudo apt-get install dataset-fashion-mnist)";
  struct {
    const char *split;
    int64_t n;
  } splits[] = {{"train", 60000}, {"test", 10000}};
  for (const auto &s : splits) {
    cnn_dataset *ds = nullptr;
    ASSERT_EQ(cnn_dataset_load("fashion-mnist", s.split, &ds), CNN_OK) << last_error();
    EXPECT_EQ(ds->n, s.n);
    EXPECT_EQ(ds->h, 28);
    EXPECT_EQ(ds->w, 28);
    EXPECT_EQ(ds->c, 1);
    EXPECT_EQ(ds->num_classes, 10);
    ASSERT_NE(ds->class_names, nullptr);
    EXPECT_STREQ(ds->class_names[1], "Trouser");
    ASSERT_NE(ds->pixels, nullptr);  // 8-bit: 47 MB for the training set, not 188
    int lo = 255, hi = 0;
    for (int64_t i = 0; i < ds->n * 28 * 28; i++) {
      lo = std::min(lo, (int)ds->pixels[i]);
      hi = std::max(hi, (int)ds->pixels[i]);
    }
    EXPECT_EQ(lo, 0);
    EXPECT_EQ(hi, 255);
    std::vector<int64_t> per_class(10, 0);
    for (int64_t i = 0; i < ds->n; i++) {
      ASSERT_GE(ds->labels[i], 0);
      ASSERT_LT(ds->labels[i], 10);
      per_class[ds->labels[i]]++;
    }
    for (int k = 0; k < 10; k++) EXPECT_EQ(per_class[k], s.n / 10) << "class " << k;  // balanced by design
    cnn_dataset_destroy(ds);
  }
}
