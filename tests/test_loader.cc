// The asynchronous loader (cnn/pipeline.h, core/data/loader.c): batches independent of the worker count, epochs as
// permutations, seeking, normalization, resizing and cropping of files, bad files (skipped with one warning each,
// or stopping the run in strict mode), the ring's limits, statistics.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "cnn/cnn.h"
#include "core/backend.h"
extern "C" {
#include "core/nn/net.h"
}
#include "tests/util.h"

using cnntest::TempDir;
using cnntest::write_file;

namespace {

std::string last_error() { return cnn_last_error(); }
bool contains(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

// n images of h x w x c; pixel values identify the sample (i / n) and position; labels i % classes.
cnn_dataset *numbered(int n, int h, int w, int c, int classes) {
  cnn_dataset *ds = (cnn_dataset *)calloc(1, sizeof *ds);
  ds->n = n;
  ds->h = h;
  ds->w = w;
  ds->c = c;
  size_t per = (size_t)h * w * c;
  ds->images = (float *)malloc((size_t)n * per * sizeof(float));
  ds->labels = (int32_t *)malloc((size_t)n * sizeof(int32_t));
  for (int i = 0; i < n; i++) {
    for (size_t p = 0; p < per; p++) ds->images[i * per + p] = (float)((i * 31 + p * 7) % 251) / 250.0f;
    ds->labels[i] = i % classes;
  }
  ds->num_classes = classes;
  return ds;
}

struct Batch {
  int epoch;
  int64_t index;
  std::vector<int64_t> samples;
  std::vector<int32_t> labels;
  std::vector<float> images;
  bool operator==(const Batch &o) const {
    return epoch == o.epoch && index == o.index && samples == o.samples && labels == o.labels && images == o.images;
  }
};

cnn_loader_config config(int batch, int h, int w, int c) {
  cnn_loader_config cfg;
  cnn_loader_config_defaults(&cfg);
  cfg.batch_size = batch;
  cfg.h = h;
  cfg.w = w;
  cfg.c = c;
  cfg.seed = 11;
  return cfg;
}

// The next `count` batches of a loader, copied.
std::vector<Batch> take(cnn_loader *l, int count, const cnn_loader_config &cfg) {
  std::vector<Batch> out;
  size_t per = (size_t)cfg.h * cfg.w * cfg.c;
  for (int i = 0; i < count; i++) {
    cnn_batch *b = nullptr;
    cnn_status st = cnn_loader_next(l, &b);
    EXPECT_EQ(st, CNN_OK) << last_error();
    if (st != CNN_OK) break;
    Batch x{b->epoch, b->index, std::vector<int64_t>(b->samples, b->samples + b->n),
            std::vector<int32_t>(b->labels, b->labels + b->n), std::vector<float>(b->images, b->images + b->n * per)};
    out.push_back(x);
    cnn_loader_release(l, b);
  }
  return out;
}

std::vector<Batch> run(const cnn_source *src, cnn_loader_config cfg, int workers, int prefetch, int count) {
  cfg.workers = workers;
  cfg.prefetch = prefetch;
  cnn_loader *l = nullptr;
  EXPECT_EQ(cnn_loader_create(src, &cfg, &l), CNN_OK) << last_error();
  if (!l) return {};
  auto out = take(l, count, cfg);
  cnn_loader_destroy(l);
  return out;
}

void write_gray_png(const std::string &path, int w, int h, int seed) {
  std::vector<unsigned char> px((size_t)w * h);
  for (size_t i = 0; i < px.size(); i++) px[i] = (unsigned char)(seed * 40 + i * 3);
  ASSERT_TRUE(stbi_write_png(path.c_str(), w, h, 1, px.data(), w)) << path;
}

}  // namespace

TEST(Loader, BatchesAreTheSameWhateverTheWorkerCountAndPrefetch) {
  cnn_dataset *ds = numbered(103, 6, 6, 3, 4);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(ds, 1, &src), CNN_OK) << last_error();
  cnn_augment a;
  ASSERT_EQ(cnn_augment_parse("flip=hv,rotate=0.1,zoom=0.1,shift=0.1,crop=2,brightness=0.1,contrast=0.1,erase=0.5", &a),
            CNN_OK);
  cnn_loader_config cfg = config(10, 6, 6, 3);
  cfg.augment = &a;
  auto one = run(src, cfg, 1, 2, 33);  // 11 batches an epoch, 3 epochs
  ASSERT_EQ(one.size(), 33u);
  EXPECT_EQ(one[10].samples.size(), 3u);  // the short last batch
  EXPECT_EQ(one[11].epoch, 1);
  EXPECT_EQ(one[11].index, 0);
  for (auto [workers, prefetch] : {std::pair{3, 5}, std::pair{8, 0}, std::pair{2, 16}})
    EXPECT_TRUE(run(src, cfg, workers, prefetch, 33) == one) << workers << " workers, prefetch " << prefetch;
  // another seed gives other batches
  cfg.seed = 12;
  EXPECT_FALSE(run(src, cfg, 2, 4, 33) == one);
  cnn_source_destroy(src);
}

TEST(Loader, EachEpochDrawsEverySampleOnceWithItsLabelAndImage) {
  cnn_dataset *ds = numbered(50, 2, 3, 1, 5);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(ds, 0, &src), CNN_OK);
  cnn_loader_config cfg = config(8, 2, 3, 1);
  cnn_loader *l = nullptr;
  ASSERT_EQ(cnn_loader_create(src, &cfg, &l), CNN_OK) << last_error();
  EXPECT_EQ(cnn_loader_epoch_size(l), 50);
  EXPECT_EQ(cnn_loader_batches_per_epoch(l), 7);
  std::vector<int64_t> orders[2];
  for (const Batch &b : take(l, 14, cfg)) {
    for (size_t i = 0; i < b.samples.size(); i++) {
      int64_t s = b.samples[i];
      orders[b.epoch].push_back(s);
      EXPECT_EQ(b.labels[i], ds->labels[s]);
      for (int p = 0; p < 6; p++) ASSERT_EQ(b.images[i * 6 + p], ds->images[s * 6 + p]);
    }
  }
  EXPECT_NE(orders[0], orders[1]);
  for (auto &o : orders) {
    std::sort(o.begin(), o.end());
    ASSERT_EQ(o.size(), 50u);
    for (int i = 0; i < 50; i++) EXPECT_EQ(o[i], i);
  }
  cnn_loader_stats stats;
  cnn_loader_get_stats(l, &stats);
  EXPECT_EQ(stats.batches, 14);
  EXPECT_EQ(stats.images, 100);
  EXPECT_EQ(stats.bad_files, 0);
  EXPECT_GE(stats.wait_seconds, 0.0);
  cnn_loader_destroy(l);
  cnn_source_destroy(src);
  cnn_dataset_destroy(ds);
}

TEST(Loader, SeekingResumesAnyBatchOfAnyEpochExactly) {
  cnn_dataset *ds = numbered(40, 4, 4, 1, 2);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(ds, 1, &src), CNN_OK);
  cnn_augment a;
  ASSERT_EQ(cnn_augment_parse("flip=h,shift=0.2,erase=0.5", &a), CNN_OK);
  cnn_loader_config cfg = config(6, 4, 4, 1);
  cfg.augment = &a;
  auto all = run(src, cfg, 2, 4, 21);  // 7 batches an epoch, 3 epochs
  cnn_loader *l = nullptr;
  cfg.workers = 3;
  ASSERT_EQ(cnn_loader_create(src, &cfg, &l), CNN_OK);
  take(l, 2, cfg);  // workers are busy ahead when the seek comes
  ASSERT_EQ(cnn_loader_seek(l, 1, 4), CNN_OK) << last_error();
  auto resumed = take(l, 10, cfg);
  EXPECT_TRUE(std::equal(resumed.begin(), resumed.end(), all.begin() + 11));
  // a held batch forbids seeking; bad positions are refused
  cnn_batch *held = nullptr;
  ASSERT_EQ(cnn_loader_next(l, &held), CNN_OK);
  EXPECT_EQ(cnn_loader_seek(l, 0, 0), CNN_ERR_INVALID_ARG);
  cnn_loader_release(l, held);
  EXPECT_EQ(cnn_loader_seek(l, 0, 7), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_loader_seek(l, -1, 0), CNN_ERR_INVALID_ARG);
  ASSERT_EQ(cnn_loader_seek(l, 0, 0), CNN_OK);
  EXPECT_TRUE(take(l, 3, cfg) == std::vector<Batch>(all.begin(), all.begin() + 3));
  cnn_loader_destroy(l);
  // one sample on its own is the same as in its batch
  std::vector<float> one(16);
  const Batch &b = all[9];  // epoch 1, batch 2
  ASSERT_EQ(cnn_loader_load_sample(src, &cfg, b.samples[1], 1, 2 * 6 + 1, one.data()), CNN_OK) << last_error();
  EXPECT_TRUE(std::equal(one.begin(), one.end(), b.images.begin() + 16));
  cnn_source_destroy(src);
}

TEST(Loader, NormalizationAndChannelConversionApply) {
  cnn_dataset *ds = numbered(5, 2, 2, 1, 1);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(ds, 0, &src), CNN_OK);
  cnn_loader_config cfg = config(5, 2, 2, 3);  // gray data for an RGB model: replicated
  cfg.sampler = CNN_SAMPLER_SEQUENTIAL;
  float mean[3] = {0.5f, 0.25f, 0.0f}, std[3] = {0.5f, 2.0f, 1.0f};
  cfg.mean = mean;
  cfg.std = std;
  auto b = run(src, cfg, 2, 0, 1);
  ASSERT_EQ(b.size(), 1u);
  for (int i = 0; i < 5; i++)
    for (int p = 0; p < 4; p++)
      for (int k = 0; k < 3; k++)
        EXPECT_FLOAT_EQ(b[0].images[(i * 4 + p) * 3 + k], (ds->images[i * 4 + p] - mean[k]) / std[k]);
  std[1] = 0.0f;
  cnn_loader *l = nullptr;
  EXPECT_EQ(cnn_loader_create(src, &cfg, &l), CNN_ERR_INVALID_ARG);
  cnn_source_destroy(src);
  cnn_dataset_destroy(ds);
}

TEST(Loader, FilesAreDecodedResizedThenCentreCroppedForEvaluation) {
  TempDir dir;
  ASSERT_EQ(system(("mkdir -p " + dir.file("a") + " " + dir.file("b")).c_str()), 0);
  write_gray_png(dir.file("a/x.png"), 40, 30, 1);
  std::vector<unsigned char> rgb(20 * 20 * 3);
  for (size_t i = 0; i < rgb.size(); i++) rgb[i] = (unsigned char)(i % 256);
  ASSERT_TRUE(stbi_write_bmp(dir.file("b/y.bmp").c_str(), 20, 20, 3, rgb.data()));
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_folder(dir.path().c_str(), &src), CNN_OK) << last_error();
  cnn_loader_config cfg = config(2, 16, 16, 3);
  cfg.resize_h = 20;
  cfg.resize_w = 24;
  cfg.sampler = CNN_SAMPLER_SEQUENTIAL;
  auto b = run(src, cfg, 2, 0, 1);
  ASSERT_EQ(b.size(), 1u);
  ASSERT_EQ(b[0].labels, (std::vector<int32_t>{0, 1}));
  // the same as cnn_image_load to the resize size, then the centre 16x16 (rows 2.., columns 4..)
  for (int i = 0; i < 2; i++) {
    std::vector<float> full(20 * 24 * 3);
    ASSERT_EQ(cnn_image_load(i ? dir.file("b/y.bmp").c_str() : dir.file("a/x.png").c_str(), 20, 24, 3, full.data()),
              CNN_OK);
    for (int y = 0; y < 16; y++)
      for (int x = 0; x < 16; x++)
        for (int k = 0; k < 3; k++)
          ASSERT_EQ(b[0].images[((i * 16 + y) * 16 + x) * 3 + k], full[((y + 2) * 24 + x + 4) * 3 + k]) << i;
  }
  cfg.resize_h = 10;  // smaller than the crop
  cnn_loader *l = nullptr;
  EXPECT_EQ(cnn_loader_create(src, &cfg, &l), CNN_ERR_INVALID_ARG);
  cnn_source_destroy(src);
}

// A folder of good and bad files: each bad file is skipped with one warning (however many epochs meet it), the
// count is kept, the batches are the same for any worker count, and nothing crashes.
TEST(Loader, BadFilesAreSkippedWithOneWarningEach) {
  TempDir dir;
  ASSERT_EQ(system(("mkdir -p " + dir.file("good") + " " + dir.file("bad")).c_str()), 0);
  for (int i = 0; i < 5; i++) write_gray_png(dir.file("good/" + std::to_string(i) + ".png"), 12, 12, i);
  std::vector<unsigned char> px(12 * 12 * 3, 77);
  ASSERT_TRUE(stbi_write_jpg(dir.file("good/j.jpg").c_str(), 12, 12, 3, px.data(), 90));
  write_gray_png(dir.file("bad/full.png"), 64, 64, 3);
  std::string png = cnntest::read_file(dir.file("bad/full.png"));
  write_file(dir.file("bad/truncated.png"), png.substr(0, png.size() / 2));
  std::remove(dir.file("bad/full.png").c_str());
  write_file(dir.file("bad/empty.png"), "");
  write_file(dir.file("bad/text.jpg"), "this is not an image\n");
  // a PNG header declaring 10000 x 10000 pixels, and a real image over the configured limit
  std::string huge("\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x27\x10\0\0\x27\x10\x08\0\0\0\0\0\0\0\0", 33);
  write_file(dir.file("bad/huge.png"), huge);
  write_gray_png(dir.file("bad/large.png"), 60, 60, 1);
  ASSERT_EQ(symlink(dir.file("nowhere.png").c_str(), dir.file("bad/unreadable.png").c_str()), 0);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_folder(dir.path().c_str(), &src), CNN_OK) << last_error();
  ASSERT_EQ(cnn_source_count(src), 12);

  std::vector<Batch> first;
  for (int workers : {1, 4}) {
    std::string log = dir.file("warnings" + std::to_string(workers) + ".txt");
    FILE *warn = fopen(log.c_str(), "w");
    ASSERT_NE(warn, nullptr);
    cnn_loader_config cfg = config(4, 12, 12, 1);
    cfg.max_pixels = 3000;  // 60 x 60 = 3600 is over it
    cfg.warnings = warn;
    cfg.workers = workers;
    cnn_loader *l = nullptr;
    ASSERT_EQ(cnn_loader_create(src, &cfg, &l), CNN_OK) << last_error();
    auto batches = take(l, 9, cfg);  // 3 epochs
    cnn_loader_stats stats;
    cnn_loader_get_stats(l, &stats);
    cnn_loader_destroy(l);
    fclose(warn);
    EXPECT_EQ(stats.bad_files, 6);
    int per_epoch[3] = {0, 0, 0};
    for (auto &b : batches) {
      per_epoch[b.epoch] += (int)b.samples.size();
      for (int32_t label : b.labels) EXPECT_EQ(label, 1);  // "good" sorts after "bad"
    }
    for (int e = 0; e < 3; e++) EXPECT_EQ(per_epoch[e], 6) << e;
    std::string text = cnntest::read_file(log);
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 6) << text;
    for (const char *name : {"truncated.png", "empty.png", "text.jpg", "huge.png", "large.png", "unreadable.png"})
      EXPECT_TRUE(contains(text, name)) << name << " in:\n" << text;
    if (first.empty()) first = batches;
    else EXPECT_TRUE(batches == first);
  }
  cnn_source_destroy(src);
}

TEST(Loader, StrictModeStopsAtTheFirstBadFileWithItsName) {
  TempDir dir;
  ASSERT_EQ(system(("mkdir -p " + dir.file("c")).c_str()), 0);
  for (int i = 0; i < 3; i++) write_gray_png(dir.file("c/" + std::to_string(i) + ".png"), 4, 4, i);
  write_file(dir.file("c/3-broken.png"), "\x89PNG\r\n\x1a\n");
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_folder(dir.path().c_str(), &src), CNN_OK) << last_error();
  cnn_loader_config cfg = config(2, 4, 4, 1);
  cfg.sampler = CNN_SAMPLER_SEQUENTIAL;
  cfg.strict = 1;
  cnn_loader *l = nullptr;
  ASSERT_EQ(cnn_loader_create(src, &cfg, &l), CNN_OK);
  cnn_batch *b = nullptr;
  ASSERT_EQ(cnn_loader_next(l, &b), CNN_OK) << last_error();
  cnn_loader_release(l, b);
  EXPECT_EQ(cnn_loader_next(l, &b), CNN_ERR_FORMAT);
  EXPECT_TRUE(contains(last_error(), "3-broken.png")) << last_error();
  cnn_loader_stats stats;
  cnn_loader_get_stats(l, &stats);
  EXPECT_EQ(stats.bad_files, 1);
  cnn_loader_destroy(l);
  cnn_source_destroy(src);
}

TEST(Loader, TheRingAndTheEpochLimitAreEnforced) {
  cnn_dataset *ds = numbered(20, 1, 1, 1, 2);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(ds, 1, &src), CNN_OK);
  cnn_loader_config cfg = config(5, 1, 1, 1);
  cfg.prefetch = 3;
  cfg.epochs = 1;
  cnn_loader *l = nullptr;
  ASSERT_EQ(cnn_loader_create(src, &cfg, &l), CNN_OK);
  cnn_batch *a = nullptr, *b = nullptr, *c = nullptr;
  ASSERT_EQ(cnn_loader_next(l, &a), CNN_OK);
  ASSERT_EQ(cnn_loader_next(l, &b), CNN_OK);
  EXPECT_EQ(cnn_loader_next(l, &c), CNN_ERR_INVALID_ARG);  // two held of a ring of three
  EXPECT_TRUE(contains(last_error(), "release")) << last_error();
  cnn_loader_release(l, a);
  cnn_loader_release(l, b);
  take(l, 2, cfg);
  EXPECT_EQ(cnn_loader_next(l, &c), CNN_ERR_INVALID_ARG);  // past the one epoch
  cnn_loader_destroy(l);
  cfg.prefetch = 1;
  EXPECT_EQ(cnn_loader_create(src, &cfg, &l), CNN_ERR_INVALID_ARG);
  cfg.prefetch = 0;
  cfg.batch_size = 0;
  EXPECT_EQ(cnn_loader_create(src, &cfg, &l), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(l, nullptr);
  cnn_source_destroy(src);
}

TEST(Loader, OversamplingBalancesTheClassesOfEachEpoch) {
  cnn_dataset *ds = numbered(30, 1, 1, 1, 1);
  for (int i = 0; i < 30; i++) ds->labels[i] = i < 27 ? 0 : 1;  // 27 : 3
  ds->num_classes = 2;
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(ds, 1, &src), CNN_OK);
  cnn_loader_config cfg = config(9, 1, 1, 1);
  cfg.sampler = CNN_SAMPLER_OVERSAMPLE;
  cnn_loader *l = nullptr;
  ASSERT_EQ(cnn_loader_create(src, &cfg, &l), CNN_OK);
  EXPECT_EQ(cnn_loader_epoch_size(l), 54);
  int counts[2] = {0, 0};
  for (auto &b : take(l, 6, cfg))
    for (int32_t label : b.labels) counts[label]++;
  EXPECT_EQ(counts[0], 27);
  EXPECT_EQ(counts[1], 27);
  cnn_loader_destroy(l);
  cnn_source_destroy(src);
}

TEST(Loader, SourceStatisticsAreThoseOfTheDeliveredImages) {
  cnn_dataset *ds = numbered(30, 4, 4, 3, 3);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(ds, 0, &src), CNN_OK);
  cnn_loader_config cfg = config(7, 4, 4, 3);
  float mean[3], std[3], dmean[3], dstd[3];
  ASSERT_EQ(cnn_source_stats(src, &cfg, mean, std), CNN_OK) << last_error();
  ASSERT_EQ(cnn_dataset_stats(ds, dmean, dstd), CNN_OK);
  for (int k = 0; k < 3; k++) {
    EXPECT_EQ(mean[k], dmean[k]);
    EXPECT_EQ(std[k], dstd[k]);
  }
  // through the loader (no resize, a centre crop of 2x2): the statistics of the crops
  cfg.h = cfg.w = 2;
  cfg.resize_h = cfg.resize_w = 4;
  ASSERT_EQ(cnn_source_stats(src, &cfg, mean, std), CNN_OK) << last_error();
  double sum = 0, sq = 0;
  for (int i = 0; i < 30; i++)
    for (int y = 1; y < 3; y++)
      for (int x = 1; x < 3; x++) {
        double v = ds->images[((i * 4 + y) * 4 + x) * 3 + 1];
        sum += v;
        sq += v * v;
      }
  double m = sum / 120, s = std::sqrt(sq / 120 - m * m);
  EXPECT_NEAR(mean[1], m, 1e-6);
  EXPECT_NEAR(std[1], s, 1e-5);
  cnn_source_destroy(src);
  cnn_dataset_destroy(ds);
}

// On a CUDA device (skipped elsewhere): the ring in page-locked memory, and the trainer's asynchronous uploads
// (the next batch copied on the copy stream into a spare buffer while the current one computes, then staged)
// put exactly the loader's bytes into the network's input and labels, batch after batch.
TEST(Loader, AsynchronousUploadsStageExactlyTheLoadersBatches) {
  if (std::string(cnn_backends_available()).find("cuda") == std::string::npos)
    GTEST_SKIP() << "this build has no CUDA backend";
  cnn_backend *cuda = nullptr;
  if (cnn_backend_create("cuda", &cuda) != CNN_OK) GTEST_SKIP() << "no CUDA device: " << last_error();
  ASSERT_NE(cuda->ops->host_alloc, nullptr);
  ASSERT_NE(cuda->ops->write_async, nullptr);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 4 4 1\nflatten\ndense 2\n", "tiny", cuda, 1, &net), CNN_OK) << last_error();
  ASSERT_TRUE(cnn_net_can_upload_async(net));
  cnn_dataset *ds = numbered(45, 4, 4, 1, 2);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(ds, 1, &src), CNN_OK);
  cnn_augment a;
  ASSERT_EQ(cnn_augment_parse("flip=hv", &a), CNN_OK);
  cnn_loader_config cfg = config(8, 4, 4, 1);
  cfg.augment = &a;
  cfg.backend = cuda;
  cnn_loader *l = nullptr;
  ASSERT_EQ(cnn_loader_create(src, &cfg, &l), CNN_OK) << last_error();
  ASSERT_EQ(cnn_net_set_batch(net, 8), CNN_OK);
  cnn_batch *cur = nullptr, *next = nullptr;
  ASSERT_EQ(cnn_loader_next(l, &cur), CNN_OK);
  ASSERT_EQ(cnn_net_stage_host(net, cur->images, cur->labels, cur->n), CNN_OK) << last_error();
  for (int step = 0; step < 12; step++) {  // 6 batches an epoch (the last one of 5), two epochs
    ASSERT_EQ(cnn_net_forward(net, 0), CNN_OK) << last_error();
    ASSERT_EQ(cnn_loader_next(l, &next), CNN_OK);
    ASSERT_EQ(cnn_net_upload_async(net, next->images, next->labels, next->n), CNN_OK) << last_error();
    // what the current step sees is still the current batch
    std::vector<float> x((size_t)cur->n * 16);
    std::vector<int32_t> y(cur->n);
    ASSERT_EQ(cnn_tensor_read(net->input_t, x.data(), x.size() * sizeof(float)), CNN_OK) << last_error();
    ASSERT_EQ(cnn_tensor_read(net->labels, y.data(), y.size() * sizeof(int32_t)), CNN_OK);
    EXPECT_TRUE(std::equal(x.begin(), x.end(), cur->images)) << "step " << step;
    EXPECT_TRUE(std::equal(y.begin(), y.end(), cur->labels)) << "step " << step;
    cnn_loader_release(l, cur);
    ASSERT_EQ(cnn_net_stage_uploaded(net), CNN_OK) << last_error();
    EXPECT_EQ(net->batch, next->n);
    cur = next;
  }
  cnn_loader_release(l, cur);
  cnn_loader_destroy(l);
  cnn_source_destroy(src);
  cnn_net_destroy(net);
  cnn_backend_destroy(cuda);
}
