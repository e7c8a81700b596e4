// Data-parallel training (core/train/dist.c, README "Data-parallel training"): the loader's shards partition every epoch
// exactly as one process of the global batch sees it; under mpirun, 2 ranks of batch 32 end with the weights of 1
// process of batch 64 (to float rounding), --deterministic runs are bit-identical, one rank under mpirun is the
// one-process run, a rank that hangs or dies ends the run with a message naming it within the collective timeout,
// and a 2-rank run resumes exactly (and refuses another number of ranks). The MPI tests skip in a build without
// MPI; every process runs under `timeout` and is stopped at the end.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "cnn/dist.h"
#include "core/rng.h"
#include "core/train/checkpoint.h"
#include "core/train/dist.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::TempDir;

using cnntest::has;

// ---------------------------------------------------------------------------------------------------------------
// sharding, in one process

// The samples of every batch of `epochs` epochs of a loader over ds.
std::vector<std::vector<int64_t>> batches_of(const cnn_dataset &ds, int batch, int shards, int shard, int epochs) {
  cnn_source *src = nullptr;
  EXPECT_EQ(cnn_source_from_dataset(const_cast<cnn_dataset *>(&ds), 0, &src), CNN_OK) << cnn_last_error();
  cnn_loader_config lc;
  cnn_loader_config_defaults(&lc);
  lc.batch_size = batch;
  lc.h = ds.h;
  lc.w = ds.w;
  lc.c = ds.c;
  lc.seed = 11;
  lc.epochs = epochs;
  lc.workers = 2;
  lc.shards = shards;
  lc.shard = shard;
  cnn_loader *l = nullptr;
  std::vector<std::vector<int64_t>> out;
  EXPECT_EQ(cnn_loader_create(src, &lc, &l), CNN_OK) << cnn_last_error();
  if (l) {
    int64_t per_epoch = cnn_loader_batches_per_epoch(l);
    for (int64_t i = 0; i < per_epoch * epochs; i++) {
      cnn_batch *b = nullptr;
      if (cnn_loader_next(l, &b) != CNN_OK) {
        ADD_FAILURE() << cnn_last_error();
        break;
      }
      out.emplace_back(b->samples, b->samples + b->n);
      cnn_loader_release(l, b);
    }
  }
  cnn_loader_destroy(l);
  cnn_source_destroy(src);
  return out;
}

TEST(DistShards, RanksOfBatchBSeeExactlyTheSamplesOfOneProcessOfBatchNTimesB) {
  // 203 samples: the last global batch is short (203 = 3 x 64 + 11 for N = 2, b = 32; 203 = 2 x 96 + 11 for N = 3)
  cnntest::Quadrants q(203, 5);
  const int epochs = 3;
  for (int ranks : {2, 3}) {
    const int b = 32;
    auto whole = batches_of(q.ds, ranks * b, 1, 0, epochs);
    std::vector<std::vector<std::vector<int64_t>>> parts;
    for (int r = 0; r < ranks; r++) parts.push_back(batches_of(q.ds, b, ranks, r, epochs));
    ASSERT_FALSE(whole.empty());
    for (int r = 0; r < ranks; r++) ASSERT_EQ(parts[r].size(), whole.size()) << "rank " << r << " of " << ranks;
    for (size_t i = 0; i < whole.size(); i++) {
      std::vector<int64_t> joined;  // the shards in rank order: the global batch, contiguous parts
      for (int r = 0; r < ranks; r++) {
        joined.insert(joined.end(), parts[r][i].begin(), parts[r][i].end());
        EXPECT_LE(parts[r][i].size(), (size_t)b);
      }
      EXPECT_EQ(joined, whole[i]) << "batch " << i << ", " << ranks << " ranks";
    }
    // and every epoch is a permutation of the data: each sample once, over all ranks
    size_t per_epoch = whole.size() / epochs;
    for (int e = 0; e < epochs; e++) {
      std::multiset<int64_t> seen;
      for (int r = 0; r < ranks; r++)
        for (size_t i = e * per_epoch; i < (e + 1) * per_epoch; i++) seen.insert(parts[r][i].begin(), parts[r][i].end());
      ASSERT_EQ(seen.size(), (size_t)q.ds.n) << "epoch " << e;
      int64_t expect = 0;
      for (int64_t s : seen) EXPECT_EQ(s, expect++) << "epoch " << e;
    }
    // epochs differ (the order is a function of (seed, epoch))
    EXPECT_NE(whole[0], whole[per_epoch]);
  }
}

TEST(DistShards, ShardRangesPartitionAnyCount) {
  // without MPI a NULL context is one process: everything is rank 0's
  int64_t first = -1, count = -1;
  cnn_dist_shard_range(nullptr, 17, &first, &count);
  EXPECT_EQ(first, 0);
  EXPECT_EQ(count, 17);
  EXPECT_EQ(cnn_dist_size(nullptr), 1);
  EXPECT_EQ(cnn_dist_rank(nullptr), 0);
}

TEST(DistShards, BadShardSettingsAreRefused) {
  cnntest::Quadrants q(20, 1);
  cnn_source *src = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(&q.ds, 0, &src), CNN_OK);
  cnn_loader_config lc;
  cnn_loader_config_defaults(&lc);
  lc.h = q.ds.h;
  lc.w = q.ds.w;
  lc.c = q.ds.c;
  lc.shards = 2;
  lc.shard = 2;
  cnn_loader *l = nullptr;
  EXPECT_EQ(cnn_loader_create(src, &lc, &l), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "shard 2 of 2")) << cnn_last_error();
  lc.shard = -1;
  EXPECT_EQ(cnn_loader_create(src, &lc, &l), CNN_ERR_INVALID_ARG);
  cnn_source_destroy(src);
}

TEST(DistShards, SourceRangeKeepsTheSamplesInOrder) {
  cnntest::Quadrants q(10, 2);
  cnn_source *src = nullptr, *part = nullptr;
  ASSERT_EQ(cnn_source_from_dataset(&q.ds, 0, &src), CNN_OK);
  ASSERT_EQ(cnn_source_range(src, 3, 4, &part), CNN_OK) << cnn_last_error();
  const cnn_dataset *d = cnn_source_dataset(part);
  ASSERT_NE(d, nullptr);
  ASSERT_EQ(d->n, 4);
  size_t per = (size_t)q.ds.h * q.ds.w * q.ds.c;
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(d->labels[i], q.ds.labels[3 + i]);
    EXPECT_EQ(0, memcmp(d->images + i * per, q.ds.images + (3 + i) * per, per * sizeof(float)));
  }
  EXPECT_EQ(cnn_source_num_classes(part), cnn_source_num_classes(src));
  cnn_source_destroy(part);
  EXPECT_EQ(cnn_source_range(src, 8, 3, &part), CNN_ERR_INVALID_ARG);
  cnn_source_destroy(src);
}

TEST(DistShards, SrunWithoutMpiProcessManagementIsRefused) {
  // srun --ntasks 2 without --mpi=pmix: two copies that would each train alone and write the same files
  setenv("SLURM_STEP_ID", "0", 1);
  setenv("SLURM_NTASKS", "2", 1);
  std::string out;
  int rc = cnntest::run_cnn({"train", "--model", CNN_SOURCE_DIR "/samples/models/seed_cnn.cnn", "--quiet"}, &out);
  unsetenv("SLURM_STEP_ID");
  unsetenv("SLURM_NTASKS");
  EXPECT_EQ(rc, 2) << out;
  EXPECT_TRUE(has(out, "srun --mpi=pmix")) << out;
}

TEST(DistShards, ABuildWithoutMpiSaysSo) {
  if (cnn_dist_available()) GTEST_SKIP() << "this build has MPI";
  cnn_dist *d = reinterpret_cast<cnn_dist *>(1);
  EXPECT_EQ(cnn_dist_init(nullptr, &d), CNN_ERR_UNSUPPORTED);
  EXPECT_EQ(d, nullptr);
  EXPECT_TRUE(has(cnn_last_error(), "CNN_MPI")) << cnn_last_error();
}

// ---------------------------------------------------------------------------------------------------------------
// under mpirun

#ifdef CNN_MPIEXEC
// No batchnorm and no dropout: per-rank batch statistics and dropout masks would differ from one process's by
// design, not by rounding. Batchnorm is trained in the resume test.
const char *kModel =
    "input 12 12 1\n"
    "conv 8 3 relu\n"
    "maxpool 2\n"
    "conv 16 3 relu\n"
    "flatten\n"
    "dense 4 softmax\n";

const char *kModelBn =
    "input 12 12 1\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm relu\n"
    "maxpool 2\n"
    "flatten\n"
    "dense 4 softmax\n";

// The shell-quoted words.
std::string quoted(const std::vector<std::string> &args) {
  std::string cmd;
  for (const auto &a : args) {
    cmd += " '";
    for (char c : a) cmd += c == '\'' ? std::string("'\\''") : std::string(1, c);
    cmd += "'";
  }
  return cmd;
}

// `timeout LIMIT mpirun -np N cnn ARGS`: the exit status, stdout and stderr together in *out.
int run_mpi(int ranks, const std::vector<std::string> &args, std::string *out, int limit = 240) {
  std::string cmd = "timeout -k 5 " + std::to_string(limit) + " " CNN_MPIEXEC " --allow-run-as-root --oversubscribe -np " +
                    std::to_string(ranks) + " " CNN_TOOL_PATH + quoted(args) + " 2>&1";
  out->clear();
  FILE *p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out->append(buf, n);
  int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct MpiFixture : ::testing::Test {
  TempDir dir;
  std::string data, model, model_bn;
  void SetUp() override {
    // one thread per rank, idle threads asleep: the ranks share this machine's cores
    setenv("OMP_NUM_THREADS", "1", 1);
    setenv("OMP_WAIT_POLICY", "passive", 1);
    // under LeakSanitizer: the MPI library's own allocations at MPI_Init are not ours (suppressed by library; the
    // slow unwinder reaches the library's frames, and OpenMPI keeps its plugins loaded so that they have names)
    setenv("LSAN_OPTIONS",
           "suppressions=" CNN_SOURCE_DIR "/tests/lsan_mpi.supp:print_suppressions=0:fast_unwind_on_malloc=0", 1);
    setenv("OMPI_MCA_mca_base_component_disable_dlclose", "1", 1);
    data = dir.file("data");
    model = dir.file("model.cnn");
    model_bn = dir.file("model_bn.cnn");
    ASSERT_NO_FATAL_FAILURE(cnntest::write_idx_squares(data, 640, 64, 7));
    cnntest::write_file(model, kModel);
    cnntest::write_file(model_bn, kModelBn);
  }
  std::vector<std::string> train_args(const std::string &m, int batch, int epochs, const std::string &out) const {
    return {"train", "--model", m, "--data", "mnist:" + data, "--epochs", std::to_string(epochs), "--batch",
            std::to_string(batch), "--seed", "3", "--val-split", "0.2", "--lr", "0.003", "--quiet", "--out", out,
            "--collective-timeout", "60"};
  }
};

// The largest |a - b| / max|b| over the tensors of two model files of one definition.
double largest_relative_difference(const std::string &a, const std::string &b) {
  cnntest::CpuBackend cpu;
  cnn_net *na = nullptr, *nb = nullptr;
  EXPECT_EQ(cnn_net_load(a.c_str(), cpu.b, &na), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_load(b.c_str(), cpu.b, &nb), CNN_OK) << cnn_last_error();
  double worst = -1.0;
  if (na && nb) {
    int64_t n = cnn_net_saved_floats(na);
    EXPECT_EQ(n, cnn_net_saved_floats(nb));
    std::vector<float> va(n), vb(n);
    EXPECT_EQ(cnn_net_snapshot(na, va.data()), CNN_OK);
    EXPECT_EQ(cnn_net_snapshot(nb, vb.data()), CNN_OK);
    double diff = 0.0, scale = 0.0;
    for (int64_t i = 0; i < n; i++) {
      diff = std::max(diff, (double)std::fabs(va[i] - vb[i]));
      scale = std::max(scale, (double)std::fabs(vb[i]));
    }
    worst = scale > 0.0 ? diff / scale : diff;
  }
  cnn_net_destroy(na);
  cnn_net_destroy(nb);
  return worst;
}

TEST_F(MpiFixture, TwoRanksOfBatch32MatchOneProcessOfBatch64) {
  // 512 training images: 8 steps of the global batch of 64 in an epoch, 2 epochs
  std::string one = dir.file("one.safetensors"), two = dir.file("two.safetensors"), out;
  auto args = train_args(model, 64, 2, one);
  ASSERT_EQ(cnntest::run_cnn(args, &out), 0) << out;
  ASSERT_EQ(run_mpi(2, train_args(model, 32, 2, two), &out), 0) << out;
  EXPECT_TRUE(has(out, "data-parallel over 2 ranks")) << out;
  double rel = largest_relative_difference(two, one);
  std::printf("[ dist ] 2 ranks x batch 32 against 1 process x batch 64, 16 steps: largest difference %.3g of the "
              "largest weight\n", rel);
  RecordProperty("largest_relative_difference", std::to_string(rel));
  EXPECT_GE(rel, 0.0);
  EXPECT_LT(rel, 1e-4);  // float rounding of sums in another order, not another computation
  // and not trivially: the weights moved away from the initialization
  std::string zero = dir.file("zero.safetensors");
  ASSERT_EQ(cnntest::run_cnn({"train", "--model", model, "--data", "mnist:" + data, "--epochs", "1", "--batch", "64",
                              "--seed", "3", "--val-split", "0.2", "--lr", "1e-12", "--quiet", "--out", zero},
                             &out), 0) << out;
  EXPECT_GT(largest_relative_difference(one, zero), 1e-2);
}

// The number after "key": in a --metrics-json file, from the first occurrence at or after `from`
// (NaN when absent).
double json_number(const std::string &text, const std::string &key, size_t from = 0) {
  size_t at = text.find("\"" + key + "\":", from);
  if (at == std::string::npos) return std::nan("");
  return std::strtod(text.c_str() + at + key.size() + 3, nullptr);
}

// What --metrics-json says of the validation set (last epoch) and of the test set.
struct RunMetrics {
  double val_loss, val_accuracy, test_samples, test_loss, test_accuracy, test_macro_f1;
  std::vector<double> support;
};

RunMetrics metrics_of(const std::string &path) {
  std::string t = cnntest::read_file(path);
  RunMetrics m{};
  size_t last = t.rfind("\"epoch\":");
  m.val_loss = json_number(t, "val_loss", last);
  m.val_accuracy = json_number(t, "val_accuracy", last);
  size_t test = t.find("\"test\":");
  EXPECT_NE(test, std::string::npos) << t;
  if (test == std::string::npos) return m;
  m.test_samples = json_number(t, "samples", test);
  m.test_loss = json_number(t, "loss", test);
  m.test_accuracy = json_number(t, "accuracy", test);
  m.test_macro_f1 = json_number(t, "macro_f1", test);
  for (size_t at = t.find("\"support\":", test); at != std::string::npos; at = t.find("\"support\":", at + 1))
    m.support.push_back(json_number(t, "support", at));
  return m;
}

double rel(double a, double b) { return std::fabs(a - b) / std::max(std::fabs(b), 1e-12); }

TEST_F(MpiFixture, ValidationAndTestMetricsOfTwoRanksAreThoseOfOneProcess) {
  // each rank evaluates half of the 128 validation and 64 test images; the sums (loss, confusion matrix) are added.
  // With a learning rate of 1e-12 both runs end with the initial weights (to 1e-12), so the metrics of the whole
  // sets must agree to the rounding of the loss's sum: the reduction, not the training, is under test here.
  std::string one = dir.file("one.safetensors"), two = dir.file("two.safetensors"), out;
  std::string j1 = dir.file("one.json"), j2 = dir.file("two.json");
  auto a1 = train_args(model, 64, 1, one), a2 = train_args(model, 32, 1, two);
  for (auto *a : {&a1, &a2}) {
    auto lr = std::find(a->begin(), a->end(), std::string("--lr"));
    ASSERT_NE(lr, a->end());
    lr[1] = "1e-12";
    a->push_back("--metrics-json");
  }
  a1.push_back(j1);
  a2.push_back(j2);
  ASSERT_EQ(cnntest::run_cnn(a1, &out), 0) << out;
  ASSERT_EQ(run_mpi(2, a2, &out), 0) << out;
  EXPECT_TRUE(has(out, "test loss:")) << out;
  RunMetrics m1 = metrics_of(j1), m2 = metrics_of(j2);
  std::printf("[ dist ] metrics, 1 process / 2 ranks: val_loss %.9g / %.9g, val_accuracy %.6g / %.6g, test_loss "
              "%.9g / %.9g, test_accuracy %.6g / %.6g, test samples %g / %g\n", m1.val_loss, m2.val_loss,
              m1.val_accuracy, m2.val_accuracy, m1.test_loss, m2.test_loss, m1.test_accuracy, m2.test_accuracy,
              m1.test_samples, m2.test_samples);
  EXPECT_EQ(m1.test_samples, 64);
  EXPECT_EQ(m2.test_samples, 64);
  EXPECT_LT(rel(m2.val_loss, m1.val_loss), 1e-6);
  EXPECT_LT(rel(m2.test_loss, m1.test_loss), 1e-6);
  EXPECT_EQ(m2.val_accuracy, m1.val_accuracy);
  EXPECT_EQ(m2.test_accuracy, m1.test_accuracy);
  EXPECT_EQ(m2.test_macro_f1, m1.test_macro_f1);
  EXPECT_EQ(m2.support, m1.support);
  EXPECT_EQ(m1.support.size(), 4u);
}

TEST_F(MpiFixture, SyncBatchnormTwoRanksOfBatch32MatchOneProcessOfBatch64) {
  // a model with batchnorm: with --sync-batchnorm the 2 ranks normalize with the global batch's statistics, so
  // they train as one process of batch 64 (weights and running statistics, to float rounding); with each rank's
  // own statistics they do not
  std::string one = dir.file("one.safetensors"), sync = dir.file("sync.safetensors"), own = dir.file("own.safetensors");
  std::string j1 = dir.file("one.json"), j2 = dir.file("sync.json"), out;
  auto a1 = train_args(model_bn, 64, 2, one);
  a1.push_back("--metrics-json");
  a1.push_back(j1);
  ASSERT_EQ(cnntest::run_cnn(a1, &out), 0) << out;
  auto a2 = train_args(model_bn, 32, 2, sync);
  for (const char *a : {"--sync-batchnorm", "--metrics-json"}) a2.push_back(a);
  a2.push_back(j2);
  ASSERT_EQ(run_mpi(2, a2, &out), 0) << out;
  EXPECT_TRUE(has(out, "batchnorm statistics of all ranks")) << out;
  ASSERT_EQ(run_mpi(2, train_args(model_bn, 32, 2, own), &out), 0) << out;
  double with = largest_relative_difference(sync, one), without = largest_relative_difference(own, one);
  std::printf("[ dist ] batchnorm model, 2 ranks x batch 32 against 1 process x batch 64, 16 steps: largest "
              "difference %.3g with --sync-batchnorm, %.3g without\n", with, without);
  RecordProperty("sync_batchnorm_relative_difference", std::to_string(with));
  EXPECT_GE(with, 0.0);
  EXPECT_LT(with, 1e-4);
  EXPECT_GT(without, 1e-3);
  // and the validation and test metrics follow (trained weights: equal to their rounding)
  RunMetrics m1 = metrics_of(j1), m2 = metrics_of(j2);
  EXPECT_LT(rel(m2.val_loss, m1.val_loss), 1e-3);
  EXPECT_LT(rel(m2.test_loss, m1.test_loss), 1e-3);
  EXPECT_LE(std::fabs(m2.test_accuracy - m1.test_accuracy), 1.0 / 64 + 1e-12);
  EXPECT_EQ(m2.test_samples, 64);
}

TEST_F(MpiFixture, BucketsStartedDuringBackwardTrainAsOneBucketAfterIt) {
  // --bucket-mb 0.001 (262 floats): the gradients of the later layers travel while backward still runs on the
  // earlier ones, several buckets in flight; --bucket-mb 4096: one bucket, which can start only when backward is
  // done. The same sums either way: bit-identical model files (with and without batchnorm)
  for (const std::string &m : {model, model_bn}) {
    std::string small = dir.file("small.safetensors"), one = dir.file("one.safetensors"), out;
    auto a = train_args(m, 32, 1, small);
    for (const char *x : {"--bucket-mb", "0.001"}) a.push_back(x);
    ASSERT_EQ(run_mpi(2, a, &out), 0) << out;
    auto b = train_args(m, 32, 1, one);
    for (const char *x : {"--bucket-mb", "4096"}) b.push_back(x);
    ASSERT_EQ(run_mpi(2, b, &out), 0) << out;
    std::string ba = cnntest::read_file(small), bb = cnntest::read_file(one);
    ASSERT_FALSE(ba.empty());
    EXPECT_TRUE(ba == bb) << m << ": small buckets during backward and one bucket after it trained differently";
  }
}

TEST_F(MpiFixture, NcclTwoRanksOnTwoGpusMatchOneGpuOfTheGlobalBatch) {
  // the CUDA backend's path: gradients all-reduced by NCCL on the compute stream (cuda/nccl.c); each rank takes
  // cuda:<local rank>. Skipped without the CUDA backend or without 2 GPUs.
  if (!strstr(cnn_backends_available(), "cuda")) GTEST_SKIP() << "this build has no CUDA backend";
  cnn_backend *second = nullptr;
  if (cnn_backend_create("cuda:1", &second) != CNN_OK) GTEST_SKIP() << "fewer than 2 GPUs: " << cnn_last_error();
  cnn_backend_destroy(second);
  std::string one = dir.file("one.safetensors"), two = dir.file("two.safetensors"), out;
  auto args = train_args(model, 64, 2, one);
  for (const char *a : {"--device", "cuda:0", "--deterministic"}) args.push_back(a);
  ASSERT_EQ(cnntest::run_cnn(args, &out), 0) << out;
  auto dargs = train_args(model, 32, 2, two);
  for (const char *a : {"--device", "cuda", "--deterministic"}) dargs.push_back(a);
  ASSERT_EQ(run_mpi(2, dargs, &out), 0) << out;
  double rel = largest_relative_difference(two, one);
  std::printf("[ dist ] NCCL: 2 GPUs x batch 32 against 1 GPU x batch 64: largest difference %.3g\n", rel);
  EXPECT_GE(rel, 0.0);
  EXPECT_LT(rel, 1e-4);
}

TEST_F(MpiFixture, GradientAverageIsWeightedByImagesAndCarriesAnOverflowToEveryRank) {
  // tests/dist_selftest.c: weighted average, a rank without images, an infinity on one rank, a step without
  // images, small buckets and rank-order sums, each checked on both ranks
  std::string out, cmd = "timeout -k 5 120 " CNN_MPIEXEC " --allow-run-as-root --oversubscribe -np 2 " DIST_SELFTEST
                         " 2>&1";
  FILE *p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_TRUE(has(out, "rank 0: ok")) << out;
  EXPECT_TRUE(has(out, "rank 1: ok")) << out;
}

TEST_F(MpiFixture, DeterministicTwoRankRunsAreBitIdentical) {
  std::string a = dir.file("a.safetensors"), b = dir.file("b.safetensors"), out;
  auto args = train_args(model_bn, 16, 2, a);
  args.push_back("--deterministic");
  ASSERT_EQ(run_mpi(2, args, &out), 0) << out;
  EXPECT_TRUE(has(out, "summed in rank order")) << out;
  args[args.size() - 4] = b;  // --out
  ASSERT_EQ(args[args.size() - 5], "--out");
  ASSERT_EQ(run_mpi(2, args, &out), 0) << out;
  std::string ba = cnntest::read_file(a), bb = cnntest::read_file(b);
  ASSERT_FALSE(ba.empty());
  EXPECT_TRUE(ba == bb) << "two --deterministic 2-rank runs wrote different model files";
}

TEST_F(MpiFixture, OneRankUnderMpirunIsTheOneProcessRun) {
  std::string a = dir.file("a.safetensors"), b = dir.file("b.safetensors"), out;
  ASSERT_EQ(cnntest::run_cnn(train_args(model_bn, 32, 1, a), &out), 0) << out;
  ASSERT_EQ(run_mpi(1, train_args(model_bn, 32, 1, b), &out), 0) << out;
  EXPECT_FALSE(has(out, "data-parallel")) << out;
  EXPECT_TRUE(cnntest::read_file(a) == cnntest::read_file(b));
}

TEST_F(MpiFixture, ATwoRankRunResumesExactlyAndRefusesAnotherNumberOfRanks) {
  std::string ref = dir.file("ref.safetensors"), res = dir.file("res.safetensors"), ck = dir.file("ck"), out;
  auto args = train_args(model_bn, 16, 3, ref);
  args.push_back("--deterministic");
  ASSERT_EQ(run_mpi(2, args, &out), 0) << out;
  // the same run stopped after 2 epochs (--epochs is not part of the arithmetic), then resumed to 3
  auto first = train_args(model_bn, 16, 2, dir.file("half.safetensors"));
  for (const char *a : {"--deterministic", "--checkpoint-dir"}) first.push_back(a);
  first.push_back(ck);
  ASSERT_EQ(run_mpi(2, first, &out), 0) << out;
  ASSERT_EQ(run_mpi(2, {"train", "--resume", ck, "--epochs", "3", "--out", res, "--quiet"}, &out), 0) << out;
  EXPECT_TRUE(has(out, "resuming from")) << out;
  EXPECT_TRUE(cnntest::read_file(ref) == cnntest::read_file(res)) << "the resumed 2-rank run ended with other weights";
  // one process, or 3 ranks, cannot continue it: said plainly
  EXPECT_EQ(cnntest::run_cnn({"train", "--resume", ck, "--epochs", "3", "--out", res, "--quiet"}, &out), 1) << out;
  EXPECT_TRUE(has(out, "written by a run of 2 ranks, this run has 1")) << out;
  EXPECT_NE(run_mpi(3, {"train", "--resume", ck, "--epochs", "3", "--out", res, "--quiet"}, &out), 0) << out;
  EXPECT_TRUE(has(out, "written by a run of 2 ranks, this run has 3")) << out;
}

// The pid of the process whose environment holds OMPI_COMM_WORLD_RANK=rank and whose command is the cnn program,
// among the descendants of `parent` (mpirun); -1 when none.
pid_t find_rank(pid_t parent, int rank) {
  std::string want = "OMPI_COMM_WORLD_RANK=" + std::to_string(rank);
  DIR *d = opendir("/proc");
  if (!d) return -1;
  pid_t found = -1;
  while (dirent *e = readdir(d)) {
    pid_t pid = (pid_t)atoi(e->d_name);
    if (pid <= 0) continue;
    std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(st)), {});
    size_t close = stat.rfind(')');
    if (close == std::string::npos) continue;
    int ppid = 0;
    char state;
    if (sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2 || ppid != parent) continue;
    std::ifstream env("/proc/" + std::to_string(pid) + "/environ");
    std::string all((std::istreambuf_iterator<char>(env)), {});
    for (size_t at = 0; at < all.size();) {
      size_t end = all.find('\0', at);
      if (end == std::string::npos) end = all.size();
      if (all.compare(at, end - at, want) == 0) found = pid;
      at = end + 1;
    }
  }
  closedir(d);
  return found;
}

// Starts mpirun with 2 ranks in the background (output to log); waits until rank 0 has begun the first epoch;
// then sends `sig` to rank 1 and returns how long the run took to end after it and its output. Prints that time
// (rank 1 `what`) and expects the run to have ended, failed, within 30 s of the collective timeout.
void fault_run(MpiFixture *fx, int sig, const char *what, double timeout, double *seconds, std::string *log_text) {
  int status = 0;
  std::string log = fx->dir.file("fault.log");
  auto args = fx->train_args(fx->model, 16, 1000, fx->dir.file("never.safetensors"));
  args.erase(std::find(args.begin(), args.end(), "--quiet"));  // the progress says when training has begun
  args.back() = std::to_string(timeout);                        // --collective-timeout
  pid_t mpirun = fork();
  ASSERT_GE(mpirun, 0);
  if (mpirun == 0) {
    FILE *f = freopen(log.c_str(), "w", stdout);
    if (!f || dup2(fileno(stdout), 2) < 0) _exit(127);
    std::vector<std::string> words = {CNN_MPIEXEC, "--allow-run-as-root", "--oversubscribe", "-np", "2", CNN_TOOL_PATH};
    words.insert(words.end(), args.begin(), args.end());
    std::vector<char *> argv;
    for (auto &w : words) argv.push_back(&w[0]);
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  pid_t victim = -1;
  auto t0 = std::chrono::steady_clock::now();
  auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  while (since(t0) < 120) {  // bounded: training must have begun within two minutes
    if (has(cnntest::read_file(log), "Epoch 1/") && (victim = find_rank(mpirun, 1)) > 0) break;
    if (waitpid(mpirun, &status, WNOHANG) == mpirun) {
      ADD_FAILURE() << "mpirun ended before the fault: " << cnntest::read_file(log);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (victim <= 0) {
    kill(mpirun, SIGKILL);
    waitpid(mpirun, &status, 0);
    FAIL() << "rank 1 was not found or training did not begin: " << cnntest::read_file(log);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // well into the steps
  ASSERT_EQ(kill(victim, sig), 0);
  auto t1 = std::chrono::steady_clock::now();
  bool ended = false;
  while (since(t1) < timeout + 60) {  // bounded: the timeout plus the time MPI takes to end the job
    if (waitpid(mpirun, &status, WNOHANG) == mpirun) {
      ended = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  *seconds = since(t1);
  if (!ended) {
    kill(mpirun, SIGKILL);
    waitpid(mpirun, &status, 0);
  }
  kill(victim, SIGKILL);  // a stopped rank that MPI left behind
  *log_text = cnntest::read_file(log);
  EXPECT_TRUE(ended) << "the run did not end " << *seconds << " s after the fault:\n" << *log_text;
  std::printf("[ dist ] rank 1 %s: the run ended after %.1f s (collective timeout %.0f s)\n", what, *seconds, timeout);
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << *log_text;
  EXPECT_LT(*seconds, timeout + 30) << *log_text;
}

TEST_F(MpiFixture, AHangingRankStopsTheOthersWithinTheTimeoutNamingIt) {
  const double timeout = 5.0;
  double seconds = 0;
  std::string log;
  fault_run(this, SIGSTOP, "stopped (SIGSTOP)", timeout, &seconds, &log);
  EXPECT_GE(seconds, timeout - 0.5) << log;  // the timeout, not something else, ended it
  // stopped before it entered the step's collective, or inside it (after its heartbeat said it had arrived)
  EXPECT_TRUE(has(log, "rank 1 did not arrive") || has(log, "rank 1 stopped answering inside it")) << log;
  EXPECT_TRUE(has(log, "collective timeout (5 s)")) << log;
}

TEST_F(MpiFixture, AKilledRankEndsTheRunWithAMessageNamingIt) {
  double seconds = 0;
  std::string log;
  fault_run(this, SIGKILL, "killed (SIGKILL)", 10.0, &seconds, &log);
  // either our timeout ("rank 1 did not arrive") or the launcher, which saw it die ("process rank 1 ... signal 9")
  EXPECT_TRUE(has(log, "rank 1 did not arrive") || has(log, "rank 1 stopped answering") || has(log, "rank 1 with PID"))
      << log;
}

#else
TEST(DistRuns, AreSkippedWithoutMpi) {
  GTEST_SKIP() << "this build has no MPI (CNN_MPI): the runs under mpirun are left out";
}
#endif

}  // namespace
