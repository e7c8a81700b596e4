// Sample sources (cnn/pipeline.h, core/data/source.c): image folders, CSV lists, CIFAR binary batches, named specs;
// the stratified split and the samplers' epoch orders (core/data/sampling.c); image decoding limits and the
// libjpeg-turbo path (core/data/image.c, core/data/jpeg.c).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cnn/pipeline.h"
#include "core/data/image.h"
#include "core/data/sampling.h"
#include "tests/util.h"

using cnntest::TempDir;
using cnntest::write_file;

namespace {

std::string last_error() { return cnn_last_error(); }
bool contains(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

void mkdir_p(const std::string &path) { ASSERT_EQ(system(("mkdir -p '" + path + "'").c_str()), 0); }

// A small gray PNG whose pixels are all `v`.
void write_png(const std::string &path, int w, int h, int v) {
  std::vector<unsigned char> px((size_t)w * h, (unsigned char)v);
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, 1, px.data(), w)) << path;
}

std::vector<std::string> paths_of(const cnn_source *s) {
  std::vector<std::string> v;
  for (int64_t i = 0; i < cnn_source_count(s); i++) v.push_back(cnn_source_path(s, i));
  return v;
}

std::vector<int> labels_of(const cnn_source *s) {
  return std::vector<int>(cnn_source_labels(s), cnn_source_labels(s) + cnn_source_count(s));
}

// One CIFAR record: label byte(s), then the R, G and B planes; pixel p of plane k is (seed + 3 * p + k) % 256.
std::string cifar_record(std::vector<int> labels, int seed) {
  std::string r;
  for (int l : labels) r += (char)l;
  for (int k = 0; k < 3; k++)
    for (int p = 0; p < 1024; p++) r += (char)((seed + 3 * p + k) & 0xff);
  return r;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// folders

TEST(FolderSource, ClassesAreSortedFolderNamesAndFilesAreFoundRecursivelyInOrder) {
  TempDir dir;
  for (const char *c : {"zebra", "ant", "Moth"}) mkdir_p(dir.file(c));
  mkdir_p(dir.file("ant/nested/deeper"));
  write_png(dir.file("zebra/b.png"), 2, 2, 1);
  write_png(dir.file("zebra/a.PNG"), 2, 2, 1);
  write_png(dir.file("ant/nested/deeper/x.png"), 2, 2, 1);
  write_png(dir.file("ant/c.png"), 2, 2, 1);
  write_png(dir.file("Moth/m.jpeg"), 2, 2, 1);  // the content decides the format, not the name
  write_file(dir.file("ant/notes.txt"), "not taken");
  write_file(dir.file("ant/.hidden.png"), "hidden");
  write_file(dir.file("README"), "beside the class folders");
  cnn_source *s = nullptr;
  ASSERT_EQ(cnn_source_from_folder(dir.path().c_str(), &s), CNN_OK) << last_error();
  ASSERT_EQ(cnn_source_num_classes(s), 3);
  EXPECT_STREQ(cnn_source_class_name(s, 0), "Moth");  // byte order: upper case first, as Python's sorted()
  EXPECT_STREQ(cnn_source_class_name(s, 1), "ant");
  EXPECT_STREQ(cnn_source_class_name(s, 2), "zebra");
  std::vector<std::string> want = {dir.file("Moth/m.jpeg"), dir.file("ant/c.png"), dir.file("ant/nested/deeper/x.png"),
                                   dir.file("zebra/a.PNG"), dir.file("zebra/b.png")};
  EXPECT_EQ(paths_of(s), want);
  EXPECT_EQ(labels_of(s), (std::vector<int>{0, 1, 1, 2, 2}));
  EXPECT_EQ(cnn_source_ignored_files(s), 2);  // notes.txt and README; hidden files are not counted
  EXPECT_EQ(cnn_source_dataset(s), nullptr);
  std::vector<int64_t> counts(3);
  cnn_source_class_counts(s, counts.data());
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 2, 2}));
  cnn_source_destroy(s);
}

TEST(FolderSource, EmptyOrMissingFoldersAreRefusedByName) {
  TempDir dir;
  cnn_source *s = nullptr;
  EXPECT_EQ(cnn_source_from_folder(dir.file("nope").c_str(), &s), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(contains(last_error(), "nope")) << last_error();
  EXPECT_EQ(cnn_source_from_folder(dir.path().c_str(), &s), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "no class folders")) << last_error();
  mkdir_p(dir.file("a"));
  write_file(dir.file("a/x.txt"), "text");
  EXPECT_EQ(cnn_source_from_folder(dir.path().c_str(), &s), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "no images")) << last_error();
  EXPECT_EQ(s, nullptr);
}

TEST(FolderSource, NamedSpecFindsTrainAndTestSubfolders) {
  TempDir dir;
  for (const char *p : {"train/a", "train/b", "test/a", "test/b"}) mkdir_p(dir.file(p));
  write_png(dir.file("train/a/1.png"), 2, 2, 0);
  write_png(dir.file("train/b/1.png"), 2, 2, 0);
  write_png(dir.file("train/b/2.png"), 2, 2, 0);
  write_png(dir.file("test/b/1.png"), 2, 2, 0);
  std::string spec = "folder:" + dir.path();
  EXPECT_TRUE(cnn_source_has_split(spec.c_str(), "train"));
  EXPECT_TRUE(cnn_source_has_split(spec.c_str(), "test"));
  cnn_source *s = nullptr;
  ASSERT_EQ(cnn_source_open(spec.c_str(), "train", &s), CNN_OK) << last_error();
  EXPECT_EQ(cnn_source_count(s), 3);
  cnn_source_destroy(s);
  ASSERT_EQ(cnn_source_open(spec.c_str(), "test", &s), CNN_OK) << last_error();
  EXPECT_EQ(cnn_source_count(s), 1);
  EXPECT_EQ(labels_of(s), std::vector<int>{1});
  cnn_source_destroy(s);

  // a plain class folder is a training set without a test split
  std::string plain = "folder:" + dir.file("train");
  EXPECT_FALSE(cnn_source_has_split(plain.c_str(), "test"));
  EXPECT_EQ(cnn_source_open(plain.c_str(), "test", &s), CNN_ERR_NOT_FOUND);
  EXPECT_EQ(cnn_source_open(plain.c_str(), "validation", &s), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_source_open("folder:", "train", &s), CNN_ERR_INVALID_ARG);
}

// ---------------------------------------------------------------------------------------------------------------
// CSV lists

TEST(CsvSource, NamedLabelsAreSortedIntoIndicesAndPathsAreRelativeToTheList) {
  TempDir dir;
  mkdir_p(dir.file("img"));
  write_file(dir.file("list.csv"),
             "path,label\n"
             "# a comment\n"
             "img/1.png,dog\r\n"
             "\n"
             "\"img/with,comma.png\", cat\n"
             "/abs/3.png,dog\n"
             "\"img/q\"\"uote.png\",bird\n");
  cnn_source *s = nullptr;
  ASSERT_EQ(cnn_source_from_csv(dir.file("list.csv").c_str(), &s), CNN_OK) << last_error();
  ASSERT_EQ(cnn_source_num_classes(s), 3);
  EXPECT_STREQ(cnn_source_class_name(s, 0), "bird");
  EXPECT_STREQ(cnn_source_class_name(s, 1), "cat");
  EXPECT_STREQ(cnn_source_class_name(s, 2), "dog");
  EXPECT_EQ(paths_of(s), (std::vector<std::string>{dir.file("img/1.png"), dir.file("img/with,comma.png"), "/abs/3.png",
                                                   dir.file("img/q\"uote.png")}));
  EXPECT_EQ(labels_of(s), (std::vector<int>{2, 1, 2, 0}));
  cnn_source_destroy(s);
}

TEST(CsvSource, NumericLabelsGiveMaxPlusOneClasses) {
  TempDir dir;
  write_file(dir.file("l.csv"), "a.png,3\nb.png,0\n");
  cnn_source *s = nullptr;
  ASSERT_EQ(cnn_source_from_csv(dir.file("l.csv").c_str(), &s), CNN_OK) << last_error();
  EXPECT_EQ(cnn_source_num_classes(s), 4);
  EXPECT_EQ(cnn_source_class_name(s, 0), nullptr);
  EXPECT_EQ(labels_of(s), (std::vector<int>{3, 0}));
  cnn_source_destroy(s);
  // the spec form is a training set only
  std::string spec = "csv:" + dir.file("l.csv");
  EXPECT_TRUE(cnn_source_has_split(spec.c_str(), "train"));
  EXPECT_FALSE(cnn_source_has_split(spec.c_str(), "test"));
  ASSERT_EQ(cnn_source_open(spec.c_str(), "train", &s), CNN_OK) << last_error();
  cnn_source_destroy(s);
}

TEST(CsvSource, MalformedListsAreRefusedWithTheLine) {
  TempDir dir;
  struct {
    const char *text;
    const char *says;
  } cases[] = {
      {"a.png,1\nb.png,cat\n", ":2:"},
      {"a.png\n", "expected 'path,label'"},
      {"a.png,1,2\n", "more than two fields"},
      {"\"a.png,1\n", "quote"},
      {"a.png,\n", "no label"},
      {"# only a comment\n", "no 'path,label' lines"},
  };
  for (const auto &c : cases) {
    write_file(dir.file("bad.csv"), c.text);
    cnn_source *s = nullptr;
    EXPECT_EQ(cnn_source_from_csv(dir.file("bad.csv").c_str(), &s), CNN_ERR_FORMAT) << c.text;
    EXPECT_TRUE(contains(last_error(), c.says)) << c.text << ": " << last_error();
    EXPECT_TRUE(contains(last_error(), "bad.csv")) << last_error();
    EXPECT_EQ(s, nullptr);
  }
  cnn_source *s = nullptr;
  EXPECT_EQ(cnn_source_from_csv(dir.file("missing.csv").c_str(), &s), CNN_ERR_NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------------------------
// CIFAR

TEST(Cifar, TenClassBatchesLoadAsNhwcWithClassNames) {
  TempDir dir;
  for (int f = 1; f <= 5; f++) {
    std::string batch;
    for (int r = 0; r < 2; r++) batch += cifar_record({(f + r) % 10}, f * 10 + r);
    write_file(dir.file("data_batch_" + std::to_string(f) + ".bin"), batch);
  }
  write_file(dir.file("test_batch.bin"), cifar_record({9}, 7));
  cnn_dataset *ds = nullptr;
  ASSERT_EQ(cnn_dataset_load(("cifar10:" + dir.path()).c_str(), "train", &ds), CNN_OK) << last_error();
  EXPECT_EQ(ds->n, 10);
  EXPECT_EQ(ds->h, 32);
  EXPECT_EQ(ds->w, 32);
  EXPECT_EQ(ds->c, 3);
  EXPECT_EQ(ds->num_classes, 10);
  EXPECT_EQ(ds->labels[0], 1);
  EXPECT_EQ(ds->labels[9], 6);  // file 5, record 1
  ASSERT_NE(ds->class_names, nullptr);
  EXPECT_STREQ(ds->class_names[0], "airplane");
  EXPECT_STREQ(ds->class_names[9], "truck");
  // image 3 is file 2, record 1: seed 21; pixel (y, x) channel k is plane k's entry y * 32 + x
  for (int p : {0, 1, 33, 1023})
    for (int k = 0; k < 3; k++)
      EXPECT_EQ(ds->pixels[(size_t)3 * 3072 + (size_t)p * 3 + k], (21 + 3 * p + k) & 0xff) << p;
  cnn_dataset_destroy(ds);

  write_file(dir.file("batches.meta.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n");
  ASSERT_EQ(cnn_dataset_load(("cifar10:" + dir.path()).c_str(), "test", &ds), CNN_OK) << last_error();
  EXPECT_EQ(ds->n, 1);
  EXPECT_STREQ(ds->class_names[9], "j");
  cnn_dataset_destroy(ds);
}

TEST(Cifar, HundredClassFileHasFineAndCoarseLabelsAndTheArchiveFolderIsFound) {
  TempDir dir;
  mkdir_p(dir.file("cifar-100-binary"));
  write_file(dir.file("cifar-100-binary/train.bin"), cifar_record({19, 99}, 1) + cifar_record({3, 42}, 2));
  write_file(dir.file("cifar-100-binary/test.bin"), cifar_record({0, 0}, 3));
  cnn_dataset *ds = nullptr;
  ASSERT_EQ(cnn_dataset_load(("cifar100:" + dir.path()).c_str(), "train", &ds), CNN_OK) << last_error();
  EXPECT_EQ(ds->num_classes, 100);
  EXPECT_EQ(ds->labels[0], 99);
  EXPECT_EQ(ds->labels[1], 42);
  EXPECT_EQ(ds->class_names, nullptr);  // no fine_label_names.txt
  cnn_dataset_destroy(ds);
  ASSERT_EQ(cnn_dataset_load(("cifar100-coarse:" + dir.path()).c_str(), "train", &ds), CNN_OK) << last_error();
  EXPECT_EQ(ds->num_classes, 20);
  EXPECT_EQ(ds->labels[0], 19);
  EXPECT_EQ(ds->labels[1], 3);
  cnn_dataset_destroy(ds);
}

TEST(Cifar, BadBatchesAreRefusedByName) {
  TempDir dir;
  cnn_dataset *ds = nullptr;
  EXPECT_EQ(cnn_dataset_load(("cifar10:" + dir.path()).c_str(), "test", &ds), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(contains(last_error(), "test_batch.bin")) << last_error();
  EXPECT_TRUE(contains(last_error(), "cifar-10-binary.tar.gz")) << last_error();
  write_file(dir.file("test_batch.bin"), cifar_record({1}, 0).substr(0, 3000));
  EXPECT_EQ(cnn_dataset_load(("cifar10:" + dir.path()).c_str(), "test", &ds), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "test_batch.bin")) << last_error();
  write_file(dir.file("test_batch.bin"), cifar_record({1}, 0) + cifar_record({10}, 0));
  EXPECT_EQ(cnn_dataset_load(("cifar10:" + dir.path()).c_str(), "test", &ds), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "record 1 has label 10")) << last_error();
  EXPECT_EQ(cnn_dataset_load("cifar10", "test", &ds), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_dataset_load(("cifar10:" + dir.file("none")).c_str(), "test", &ds), CNN_ERR_NOT_FOUND);
  EXPECT_EQ(ds, nullptr);
}

// ---------------------------------------------------------------------------------------------------------------
// the stratified split

TEST(Split, ValidationKeepsEachClassShareAndIsReproducible) {
  // 90 samples of class 0, 30 of class 1, 8 of class 2, interleaved
  std::vector<int32_t> labels;
  for (int i = 0; i < 128; i++) labels.push_back(i % 16 < 11 ? 0 : i % 16 < 15 ? 1 : 2);
  int64_t n = (int64_t)labels.size();
  std::vector<int64_t> counts(3);
  cnn_count_classes(labels.data(), n, 3, counts.data());
  ASSERT_EQ(counts, (std::vector<int64_t>{88, 32, 8}));
  std::vector<int64_t> a(n), b(n), c(n);
  int64_t ta, tb, tc;
  ASSERT_EQ(cnn_split_stratified(labels.data(), n, 0.25, 7, a.data(), &ta), CNN_OK) << last_error();
  ASSERT_EQ(cnn_split_stratified(labels.data(), n, 0.25, 7, b.data(), &tb), CNN_OK);
  ASSERT_EQ(cnn_split_stratified(labels.data(), n, 0.25, 8, c.data(), &tc), CNN_OK);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(n - ta, 32);  // round(128 * 0.25)
  std::vector<int64_t> val_counts(3);
  for (int64_t i = ta; i < n; i++) val_counts[labels[a[i]]]++;
  EXPECT_EQ(val_counts, (std::vector<int64_t>{22, 8, 2}));  // a quarter of each class
  // a partition, each side ascending
  std::set<int64_t> all(a.begin(), a.end());
  EXPECT_EQ((int64_t)all.size(), n);
  EXPECT_TRUE(std::is_sorted(a.begin(), a.begin() + ta));
  EXPECT_TRUE(std::is_sorted(a.begin() + ta, a.end()));
}

TEST(Split, FileSourcesSplitByClassToo) {
  TempDir dir;
  for (const char *cls : {"a", "b"}) mkdir_p(dir.file(cls));
  for (int i = 0; i < 8; i++) write_png(dir.file("a/" + std::to_string(i) + ".png"), 1, 1, 0);
  for (int i = 0; i < 2; i++) write_png(dir.file("b/" + std::to_string(i) + ".png"), 1, 1, 0);
  cnn_source *s = nullptr, *t = nullptr, *v = nullptr;
  ASSERT_EQ(cnn_source_from_folder(dir.path().c_str(), &s), CNN_OK) << last_error();
  ASSERT_EQ(cnn_source_split(s, 0.5, 3, &t, &v), CNN_OK) << last_error();
  EXPECT_EQ(cnn_source_count(t), 5);
  EXPECT_EQ(cnn_source_count(v), 5);
  std::vector<int64_t> vc(2);
  cnn_source_class_counts(v, vc.data());
  EXPECT_EQ(vc, (std::vector<int64_t>{4, 1}));
  EXPECT_STREQ(cnn_source_class_name(v, 1), "b");
  std::set<std::string> both;
  for (auto &p : paths_of(t)) both.insert(p);
  for (auto &p : paths_of(v)) EXPECT_EQ(both.count(p), 0u) << p;
  cnn_source_destroy(t);
  cnn_source_destroy(v);
  EXPECT_EQ(cnn_source_split(s, 1.5, 3, &t, &v), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(t, nullptr);
  cnn_source_destroy(s);
}

// cnn_source_limit (cnn train --limit): the first n samples, in order, with the whole set's classes; a borrowed
// dataset is copied, never cut short under its owner.
TEST(Limit, KeepsTheFirstSamplesOfFileAndInMemorySources) {
  TempDir dir;
  for (const char *cls : {"a", "b", "c"}) mkdir_p(dir.file(cls));
  for (int i = 0; i < 4; i++) write_png(dir.file("a/" + std::to_string(i) + ".png"), 1, 1, 0);
  write_png(dir.file("b/0.png"), 1, 1, 0);
  write_png(dir.file("c/0.png"), 1, 1, 0);
  cnn_source *s = nullptr;
  ASSERT_EQ(cnn_source_from_folder(dir.path().c_str(), &s), CNN_OK) << last_error();
  const std::vector<std::string> all = paths_of(s);
  ASSERT_EQ(cnn_source_limit(s, 3), CNN_OK) << last_error();
  EXPECT_EQ(cnn_source_count(s), 3);
  EXPECT_EQ(paths_of(s), std::vector<std::string>(all.begin(), all.begin() + 3));
  EXPECT_EQ(cnn_source_num_classes(s), 3);  // class c has no sample left, and is still a class
  EXPECT_STREQ(cnn_source_class_name(s, 2), "c");
  ASSERT_EQ(cnn_source_limit(s, 10), CNN_OK);  // more than there are: all of them
  EXPECT_EQ(cnn_source_count(s), 3);
  EXPECT_EQ(cnn_source_limit(s, -1), CNN_ERR_INVALID_ARG);
  cnn_source_destroy(s);

  std::vector<float> images(5 * 2 * 2 * 1);
  for (size_t i = 0; i < images.size(); i++) images[i] = (float)i;
  std::vector<int32_t> labels = {0, 1, 2, 1, 0};
  cnn_dataset ds{};
  ds.n = 5, ds.h = 2, ds.w = 2, ds.c = 1, ds.images = images.data(), ds.labels = labels.data(), ds.num_classes = 3;
  ASSERT_EQ(cnn_source_from_dataset(&ds, 0, &s), CNN_OK) << last_error();
  ASSERT_EQ(cnn_source_limit(s, 2), CNN_OK) << last_error();
  EXPECT_EQ(ds.n, 5);  // the caller's dataset is untouched
  const cnn_dataset *head = cnn_source_dataset(s);
  ASSERT_NE(head, nullptr);
  EXPECT_NE(head, &ds);
  EXPECT_EQ(head->n, 2);
  EXPECT_EQ(std::vector<float>(head->images, head->images + 8), std::vector<float>(images.begin(), images.begin() + 8));
  EXPECT_EQ(head->labels[1], 1);
  EXPECT_EQ(cnn_source_count(s), 2);
  EXPECT_EQ(cnn_source_num_classes(s), 3);
  ASSERT_EQ(cnn_source_limit(s, 1), CNN_OK);  // now its own: cut short in place
  EXPECT_EQ(cnn_source_dataset(s)->n, 1);
  EXPECT_EQ(cnn_source_count(s), 1);
  cnn_source_destroy(s);
}

// ---------------------------------------------------------------------------------------------------------------
// samplers

TEST(Sampler, ShuffleIsAPermutationPerEpochFromSeedAndEpochAlone) {
  std::vector<int32_t> labels(50, 0);
  int64_t *o1, *o2, *o3, n1, n2, n3;
  ASSERT_EQ(cnn_epoch_order(CNN_SAMPLER_SHUFFLE, labels.data(), 50, 1, 5, 3, &o1, &n1), CNN_OK);
  ASSERT_EQ(cnn_epoch_order(CNN_SAMPLER_SHUFFLE, labels.data(), 50, 1, 5, 3, &o2, &n2), CNN_OK);
  ASSERT_EQ(cnn_epoch_order(CNN_SAMPLER_SHUFFLE, labels.data(), 50, 1, 5, 4, &o3, &n3), CNN_OK);
  ASSERT_EQ(n1, 50);
  std::vector<int64_t> a(o1, o1 + 50), b(o2, o2 + 50), c(o3, o3 + 50);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::sort(a.begin(), a.end());
  for (int i = 0; i < 50; i++) EXPECT_EQ(a[i], i);
  free(o1);
  free(o2);
  free(o3);
  ASSERT_EQ(cnn_epoch_order(CNN_SAMPLER_SEQUENTIAL, labels.data(), 50, 1, 5, 3, &o1, &n1), CNN_OK);
  for (int i = 0; i < 50; i++) EXPECT_EQ(o1[i], i);
  free(o1);
}

TEST(Sampler, OversamplingDrawsEveryClassAsOftenAsTheLargest) {
  // class 0: 10 samples, class 1: 3, class 2: none, class 3: 1
  std::vector<int32_t> labels(10, 0);
  for (int i = 0; i < 3; i++) labels.push_back(1);
  labels.push_back(3);
  int64_t n = (int64_t)labels.size();
  EXPECT_EQ(cnn_epoch_length(CNN_SAMPLER_OVERSAMPLE, labels.data(), n, 4), 30);
  EXPECT_EQ(cnn_epoch_length(CNN_SAMPLER_UNDERSAMPLE, labels.data(), n, 4), 3);
  int64_t *o, count;
  ASSERT_EQ(cnn_epoch_order(CNN_SAMPLER_OVERSAMPLE, labels.data(), n, 4, 1, 0, &o, &count), CNN_OK);
  ASSERT_EQ(count, 30);
  std::map<int64_t, int> times;
  std::vector<int> per_class(4);
  for (int64_t i = 0; i < count; i++) {
    times[o[i]]++;
    per_class[labels[o[i]]]++;
  }
  EXPECT_EQ(per_class, (std::vector<int>{10, 10, 0, 10}));
  for (int i = 0; i < 10; i++) EXPECT_EQ(times[i], 1);  // the largest class: each once
  for (int i = 10; i < 13; i++) EXPECT_TRUE(times[i] == 3 || times[i] == 4) << times[i];  // 10 = 3 + 3 + 4
  EXPECT_EQ(times[13], 10);
  free(o);
  ASSERT_EQ(cnn_epoch_order(CNN_SAMPLER_UNDERSAMPLE, labels.data(), n, 4, 1, 0, &o, &count), CNN_OK);
  ASSERT_EQ(count, 3);
  std::vector<int> under(4);
  for (int64_t i = 0; i < count; i++) under[labels[o[i]]]++;
  EXPECT_EQ(under, (std::vector<int>{1, 1, 0, 1}));
  free(o);
}

TEST(Sampler, NamesParse) {
  cnn_sampler s;
  ASSERT_EQ(cnn_sampler_parse("balanced", &s), CNN_OK);
  EXPECT_EQ(s, CNN_SAMPLER_OVERSAMPLE);
  ASSERT_EQ(cnn_sampler_parse("undersample", &s), CNN_OK);
  EXPECT_STREQ(cnn_sampler_name(s), "undersample");
  EXPECT_EQ(cnn_sampler_parse("weighted", &s), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(contains(last_error(), "weighted")) << last_error();
}

// ---------------------------------------------------------------------------------------------------------------
// decoding

TEST(Decode, PixelLimitIsConfigurableAndCheckedBeforeDecoding) {
  TempDir dir;
  write_png(dir.file("100x80.png"), 100, 80, 9);
  cnn_image_u8 img;
  ASSERT_EQ(cnn_image_decode_file(dir.file("100x80.png").c_str(), 8000, 0, 0, &img), CNN_OK) << last_error();
  EXPECT_EQ(img.w, 100);
  EXPECT_EQ(img.h, 80);
  cnn_image_u8_free(&img);
  EXPECT_EQ(cnn_image_decode_file(dir.file("100x80.png").c_str(), 7999, 0, 0, &img), CNN_ERR_UNSUPPORTED);
  EXPECT_TRUE(contains(last_error(), "100x80")) << last_error();
  EXPECT_TRUE(contains(last_error(), "7999")) << last_error();
  EXPECT_EQ(img.pixels, nullptr);
}

TEST(Decode, JpegDecoderMatchesTheOriginalAndScalesDownWhenAsked) {
  TempDir dir;
  const int w = 64, h = 48;
  std::vector<unsigned char> px((size_t)w * h * 3);
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++) {
      unsigned char *p = &px[((size_t)y * w + x) * 3];
      p[0] = (unsigned char)(x * 4);
      p[1] = (unsigned char)(y * 5);
      p[2] = 128;
    }
  ASSERT_TRUE(stbi_write_jpg(dir.file("g.jpg").c_str(), w, h, 3, px.data(), 95));
  cnn_image_u8 img;
  ASSERT_EQ(cnn_image_decode_file(dir.file("g.jpg").c_str(), 0, 0, 0, &img), CNN_OK) << last_error();
  ASSERT_EQ(img.w, w);
  ASSERT_EQ(img.h, h);
  ASSERT_EQ(img.n, 3);
  double err = 0;
  for (size_t i = 0; i < px.size(); i++) err += std::fabs((double)img.pixels[i] - px[i]);
  EXPECT_LT(err / (double)px.size(), 3.0) << img.decoder;  // quality 95 of a smooth gradient
  EXPECT_STREQ(img.decoder, cnn_image_have_libjpeg_turbo() ? "libjpeg-turbo" : "stb_image");
  cnn_image_u8_free(&img);
  // wanting 16x12 at most lets libjpeg-turbo decode at 1/4 scale; stb_image always decodes in full
  ASSERT_EQ(cnn_image_decode_file(dir.file("g.jpg").c_str(), 0, 12, 16, &img), CNN_OK) << last_error();
  if (cnn_image_have_libjpeg_turbo()) {
    EXPECT_EQ(img.w, 16);
    EXPECT_EQ(img.h, 12);
    // the mean colour survives the scaling
    double red = 0;
    for (int i = 0; i < 16 * 12; i++) red += img.pixels[i * 3];
    EXPECT_NEAR(red / (16 * 12), 4 * (w - 1) / 2.0, 4.0);
  } else {
    EXPECT_EQ(img.w, w);
  }
  cnn_image_u8_free(&img);
  // 17x13 needs more than a quarter: half scale (32x24)
  ASSERT_EQ(cnn_image_decode_file(dir.file("g.jpg").c_str(), 0, 13, 17, &img), CNN_OK) << last_error();
  EXPECT_EQ(img.w, cnn_image_have_libjpeg_turbo() ? 32 : w);
  cnn_image_u8_free(&img);
}

TEST(Decode, TruncatedJpegIsRefusedByName) {
  TempDir dir;
  std::vector<unsigned char> px(64 * 64 * 3);
  for (size_t i = 0; i < px.size(); i++) px[i] = (unsigned char)(i * 13);
  ASSERT_TRUE(stbi_write_jpg(dir.file("full.jpg").c_str(), 64, 64, 3, px.data(), 90));
  std::string jpg = cnntest::read_file(dir.file("full.jpg"));
  write_file(dir.file("cut.jpg"), jpg.substr(0, jpg.size() / 2));
  cnn_image_u8 img;
  cnn_status st = cnn_image_decode_file(dir.file("cut.jpg").c_str(), 0, 0, 0, &img);
  if (!cnn_image_have_libjpeg_turbo() && st == CNN_OK) {
    cnn_image_u8_free(&img);
    GTEST_SKIP() << "stb_image decodes this truncated JPEG (libjpeg-turbo is not in this build)";
  }
  EXPECT_EQ(st, CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "cut.jpg")) << last_error();
  EXPECT_TRUE(contains(last_error(), "truncated")) << last_error();
}
