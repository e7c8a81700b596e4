// The benchmark harness: cnn_bench_run's timings, FLOP counts and per-layer rows on a small residual network,
// the sgemm peak and thread-count calls, and `cnn bench` as a user meets it (its JSON parsed back, bad flags).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/io/json.h"
#include "core/nn/net.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::run_cnn;

using cnntest::has;

// conv -> batchnorm -> conv -> batchnorm -> add (a residual block), max-pool, flatten (a view), two dense layers
const char *kNet =
    "input 12 12 3\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm relu name=x\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm\n"
    "add x relu\n"
    "maxpool 2\n"
    "flatten\n"
    "dense 16 relu\n"
    "dense 5 softmax\n";

// Multiply-adds per image of the convolutions and dense layers of kNet.
const double kConv0Macs = 12 * 12 * 8 * (3 * 3 * 3), kConv1Macs = 12 * 12 * 8 * (3 * 3 * 8);
const double kDense0Macs = 6 * 6 * 8 * 16, kDense1Macs = 16 * 5;

// Forward + backward GFLOP of a training step of kNet for a batch of n: the first convolution computes no input
// gradient (its input is the network's), every other one does (backward = 2 x forward).
double train_gflop(int n) {
  return 2e-9 * n * (2 * kConv0Macs + 3 * (kConv1Macs + kDense0Macs + kDense1Macs));
}

using Backend = cnntest::CpuBackend;

cnn_bench_config small_config() {
  cnn_bench_config c = cnntest::defaults_of(cnn_bench_config_defaults);
  c.batch = 4;
  c.warmup = 1;
  c.iters = 3;
  c.repeats = 3;
  return c;
}

const cnn_bench_layer *find_row(const cnn_bench_result *r, const std::string &name) {
  for (int i = 0; i < r->nlayers; i++)
    if (name == r->layers[i].name) return &r->layers[i];
  return nullptr;
}

// The library's benchmark, run on kNet (seed 1) on the CPU backend.
struct Bench : ::testing::Test {
  Backend be;
  cnn_net *net = nullptr;
  void SetUp() override { ASSERT_EQ(cnn_net_from_text(kNet, "bench", be.b, 1, &net), CNN_OK) << cnn_last_error(); }
  void TearDown() override { cnn_net_destroy(net); }
};

// --mode's names: each reads back to its bit set and back; others are refused with the names listed.
TEST_F(Bench, ModeNamesParseToTheirBitSets) {
  const struct {
    const char *name;
    int modes;
  } cases[] = {{"train", CNN_BENCH_TRAIN}, {"infer", CNN_BENCH_INFER}, {"both", CNN_BENCH_TRAIN | CNN_BENCH_INFER}};
  for (const auto &c : cases) {
    int modes = 0;
    ASSERT_EQ(cnn_bench_modes_parse(c.name, &modes), CNN_OK) << c.name;
    EXPECT_EQ(modes, c.modes) << c.name;
    EXPECT_STREQ(cnn_bench_modes_name(c.modes), c.name);
  }
  int modes = 7;
  EXPECT_EQ(cnn_bench_modes_parse("all", &modes), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(modes, 7);
  EXPECT_STREQ(cnn_last_error(), "'all' is not one of train, infer, both");
  EXPECT_STREQ(cnn_bench_modes_name(0), "?");
  EXPECT_STREQ(cnn_bench_modes_name(4), "?");
}

TEST_F(Bench, TrainAndInferTimesFlopsAndPerLayerRows) {
  cnn_bench_config cfg = small_config();
  cfg.per_layer = 1;
  cnn_bench_result *r = nullptr;
  ASSERT_EQ(cnn_bench_run(net, &cfg, &r), CNN_OK) << cnn_last_error();
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->batch, 4);
  EXPECT_EQ(r->classes, 5);
  ASSERT_TRUE(r->ran_train && r->ran_infer);
  EXPECT_GT(r->train_step_ms_min, 0.0);
  EXPECT_LE(r->train_step_ms_min, r->train_step_ms_median);
  EXPECT_NEAR(r->train_images_per_sec, 4.0 / (r->train_step_ms_median * 1e-3), 1e-6 * r->train_images_per_sec);
  EXPECT_GT(r->infer_ms_min, 0.0);
  EXPECT_LE(r->infer_ms_min, r->infer_ms_median);
  EXPECT_NEAR(r->infer_images_per_sec, 4.0 / (r->infer_ms_median * 1e-3), 1e-6 * r->infer_images_per_sec);
  EXPECT_TRUE(std::isfinite(r->train_loss) && r->train_loss > 0.0) << r->train_loss;

  const double fwd = 2e-9 * 4 * (kConv0Macs + kConv1Macs + kDense0Macs + kDense1Macs);
  EXPECT_NEAR(r->fwd_gflop, fwd, 1e-12);
  EXPECT_NEAR(r->train_gflop, train_gflop(4), 1e-12);

  // one row per layer with work (flatten is a view, and so is the add: the batchnorm before it computes it), then
  // the loss and the optimizer
  int work = 0;
  for (int i = 0; i < net->nlayers; i++) work += !cnn_layer_is_view(net->layers[i]);
  ASSERT_EQ(r->nlayers, work + 2);
  EXPECT_STREQ(r->layers[r->nlayers - 2].name, "loss");
  EXPECT_STREQ(r->layers[r->nlayers - 1].name, "optimizer");
  EXPECT_STREQ(r->layers[r->nlayers - 1].type, "Adam");
  // SGD with momentum instead: its row, and a step that runs
  cnn_bench_result *sgd = nullptr;
  cfg.optimizer = CNN_OPTIM_SGD;
  ASSERT_EQ(cnn_bench_run(net, &cfg, &sgd), CNN_OK) << cnn_last_error();
  EXPECT_STREQ(sgd->layers[sgd->nlayers - 1].type, "SGD");
  EXPECT_TRUE(std::isfinite(sgd->train_loss)) << sgd->train_loss;
  cnn_bench_result_destroy(sgd);
  EXPECT_EQ(find_row(r, "flatten"), nullptr);
  EXPECT_EQ(find_row(r, "add"), nullptr);
  const cnn_bench_layer *c0 = find_row(r, "conv2d"), *c1 = find_row(r, "conv2d_1");
  const cnn_bench_layer *bn = find_row(r, "batch_normalization_1");
  ASSERT_TRUE(c0 && c1 && bn);
  EXPECT_STREQ(c0->type, "Conv2D");
  EXPECT_NEAR(c0->fwd_gflop, 2e-9 * 4 * kConv0Macs, 1e-15);
  EXPECT_NEAR(c0->bwd_gflop, c0->fwd_gflop, 1e-15);     // no input gradient
  EXPECT_NEAR(c1->bwd_gflop, 2 * c1->fwd_gflop, 1e-15); // input and weight gradients
  EXPECT_EQ(bn->fwd_gflop, 0.0); // no matrix products
  for (int i = 0; i < r->nlayers; i++) {
    EXPECT_GE(r->layers[i].fwd_ms, 0.0) << r->layers[i].name;
    EXPECT_GE(r->layers[i].bwd_ms, 0.0) << r->layers[i].name;
  }
  EXPECT_GT(c1->fwd_ms + c1->bwd_ms, 0.0);
  // the profiling hook is switched off again
  EXPECT_EQ(net->prof_fwd, nullptr);
  EXPECT_EQ(net->prof_bwd, nullptr);
  cnn_bench_result_destroy(r);
}

TEST_F(Bench, InferenceOnlyLeavesTrainingOutAndHasNoBackwardTimes) {
  cnn_bench_config cfg = small_config();
  cfg.modes = CNN_BENCH_INFER;
  cfg.batch = 1;
  cfg.per_layer = 1;
  cfg.classes = 3;
  cnn_bench_result *r = nullptr;
  ASSERT_EQ(cnn_bench_run(net, &cfg, &r), CNN_OK) << cnn_last_error();
  EXPECT_FALSE(r->ran_train);
  EXPECT_TRUE(r->ran_infer);
  EXPECT_EQ(r->classes, 3);
  EXPECT_EQ(r->train_step_ms_median, 0.0);
  ASSERT_GT(r->nlayers, 1);
  EXPECT_STREQ(r->layers[r->nlayers - 1].name, "loss"); // no optimizer row
  for (int i = 0; i < r->nlayers; i++) EXPECT_LT(r->layers[i].bwd_ms, 0.0) << r->layers[i].name;
  cnn_bench_result_destroy(r);
}

TEST_F(Bench, RejectsBadConfigurations) {
  cnn_bench_result *r = nullptr;
  cnn_bench_config c = small_config();
  c.batch = 0;
  EXPECT_EQ(cnn_bench_run(net, &c, &r), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "batch (0)")) << cnn_last_error();
  c = small_config();
  c.modes = 0;
  EXPECT_EQ(cnn_bench_run(net, &c, &r), CNN_ERR_INVALID_ARG);
  c = small_config();
  c.classes = 6;
  EXPECT_EQ(cnn_bench_run(net, &c, &r), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "6 classes")) << cnn_last_error();
  c = small_config();
  c.optimizer = (cnn_optimizer_kind)9;
  EXPECT_EQ(cnn_bench_run(net, &c, &r), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "optimizer")) << cnn_last_error();
  c = small_config();
  c.iters = 0;
  EXPECT_EQ(cnn_bench_run(net, &c, &r), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(r, nullptr);
  EXPECT_EQ(cnn_bench_run(net, &c, nullptr), CNN_ERR_INVALID_ARG);
  cnn_bench_result_destroy(nullptr);
}

TEST_F(Bench, SgemmPeakAndThreadCount) {
  double g = 0.0;
  ASSERT_EQ(cnn_bench_sgemm_peak(128, 2, &g), CNN_OK) << cnn_last_error();
  EXPECT_GT(g, 0.0);
  EXPECT_TRUE(std::isfinite(g));
  EXPECT_EQ(cnn_bench_sgemm_peak(8, 1, &g), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_bench_sgemm_peak(128, 0, &g), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_bench_sgemm_peak(128, 1, nullptr), CNN_ERR_INVALID_ARG);

  int before = cnn_num_threads();
  EXPECT_EQ(cnn_set_num_threads(0), CNN_ERR_INVALID_ARG);
  ASSERT_EQ(cnn_set_num_threads(1), CNN_OK);
  EXPECT_EQ(cnn_num_threads(), 1);
  ASSERT_EQ(cnn_set_num_threads(before), CNN_OK);
  EXPECT_EQ(cnn_num_threads(), before);
}

// ---- the command ----------------------------------------------------------------------------------------------

struct Json {
  cnn_json *root = nullptr;
  explicit Json(const std::string &text) {
    EXPECT_EQ(cnn_json_parse(text.data(), text.size(), &root), CNN_OK) << cnn_last_error() << "\n" << text;
  }
  ~Json() { cnn_json_free(root); }
};

double num(const cnn_json *obj, const char *key) {
  double v = NAN;
  EXPECT_TRUE(cnn_json_double(cnn_json_get(obj, key), &v)) << "no number '" << key << "'";
  return v;
}

std::string str(const cnn_json *obj, const char *key) {
  const char *s = cnn_json_string(cnn_json_get(obj, key), nullptr);
  EXPECT_NE(s, nullptr) << "no string '" << key << "'";
  return s ? s : "";
}

// `cnn bench` on kNet, written to DIR/net.cnn; its JSON report goes to DIR/bench.json.
struct BenchCli : ::testing::Test {
  cnntest::TempDir dir;
  std::string model = dir.file("net.cnn"), json = dir.file("bench.json");
  void SetUp() override { cnntest::write_file(model, kNet); }
  // `cnn bench --model MODEL` with `flags`: a fatal assertion unless it succeeds.
  void bench(const std::vector<std::string> &flags, std::string *out) {
    std::vector<std::string> args = {"bench", "--model", model};
    args.insert(args.end(), flags.begin(), flags.end());
    ASSERT_EQ(run_cnn(args, out), 0) << *out;
  }
};

TEST_F(BenchCli, JsonHasEverySectionWithSaneValues) {
  std::string out;
  ASSERT_NO_FATAL_FAILURE(bench({"--batch", "4", "--warmup", "1", "--iters", "3", "--repeats", "3", "--threads", "1",
                                 "--per-layer", "--json", json},
                                &out));
  // the table
  cnntest::expect_contains_all(out, {"images/s", "per layer", "conv2d_1"});
  // every share is a figure or "-" (a device without an sgemm peak to measure against), never "nan%"
  EXPECT_FALSE(has(out, "nan")) << out;
  EXPECT_TRUE(has(out, "%\n")) << out;

  Json j(cnntest::read_file(json));
  ASSERT_EQ(cnn_json_type_of(j.root), CNN_JSON_OBJECT);
  EXPECT_EQ(str(j.root, "model"), model);
  EXPECT_EQ(str(j.root, "device"), "cpu");
  EXPECT_EQ(num(j.root, "batch"), 4);
  EXPECT_EQ(num(j.root, "threads"), 1);
  EXPECT_EQ(num(j.root, "classes"), 5);
  EXPECT_EQ(str(j.root, "optimizer"), "adam");
  const cnn_json *train = cnn_json_get(j.root, "train"), *infer = cnn_json_get(j.root, "infer");
  ASSERT_EQ(cnn_json_type_of(train), CNN_JSON_OBJECT);
  ASSERT_EQ(cnn_json_type_of(infer), CNN_JSON_OBJECT);
  double step = num(train, "step_ms_median");
  EXPECT_GT(num(train, "step_ms_min"), 0.0);
  EXPECT_LE(num(train, "step_ms_min"), step);
  EXPECT_NEAR(num(train, "images_per_sec"), 4.0 / (step * 1e-3), 1e-3 * num(train, "images_per_sec"));
  EXPECT_NEAR(num(train, "gflop"), train_gflop(4), 1e-5 * train_gflop(4));
  EXPECT_NEAR(num(train, "gflops"), train_gflop(4) / (step * 1e-3), 1e-3 * num(train, "gflops"));
  double share = num(train, "peak_share");
  EXPECT_GT(share, 0.0);
  EXPECT_LT(share, 2.0); // a tiny network cannot come near the sgemm rate, let alone twice it
  double lat = num(infer, "latency_ms_median");
  EXPECT_GT(lat, 0.0);
  EXPECT_NEAR(num(infer, "images_per_sec"), 4.0 / (lat * 1e-3), 1e-3 * num(infer, "images_per_sec"));
  EXPECT_GT(num(j.root, "peak_rss_mib"), 1.0);
  EXPECT_LT(num(j.root, "peak_rss_mib"), 64 * 1024.0);
  EXPECT_GT(num(j.root, "sgemm_peak_gflops"), 0.1);

  const cnn_json *layers = cnn_json_get(j.root, "layers");
  ASSERT_EQ(cnn_json_type_of(layers), CNN_JSON_ARRAY);
  // conv2d, batch_normalization, conv2d_1, batch_normalization_1, max_pooling2d, dense, dense_1 (flatten is a
  // view, and so is the add, which batch_normalization_1 computes), loss, optimizer
  ASSERT_EQ(cnn_json_count(layers), 9u);
  double conv_gflop = -1, sum_ms = 0;
  for (size_t i = 0; i < cnn_json_count(layers); i++) {
    const cnn_json *l = cnn_json_at(layers, i);
    EXPECT_NE(str(l, "type"), "");
    EXPECT_GE(num(l, "fwd_ms"), 0.0);
    EXPECT_GE(num(l, "bwd_ms"), 0.0);
    EXPECT_GE(num(l, "gflops"), 0.0);
    sum_ms += num(l, "fwd_ms") + num(l, "bwd_ms");
    if (str(l, "name") == "conv2d_1") conv_gflop = num(l, "gflop");
  }
  EXPECT_GT(sum_ms, 0.0);
  EXPECT_NEAR(conv_gflop, 3 * 2e-9 * 4 * kConv1Macs, 1e-5 * conv_gflop); // 6 digits in the file
  EXPECT_EQ(str(cnn_json_at(layers, 8), "name"), "optimizer");
}

TEST_F(BenchCli, ModesLeaveOutWhatDidNotRun) {
  std::string out;
  ASSERT_NO_FATAL_FAILURE(bench(
      {"--batch", "2", "--mode", "train", "--warmup", "0", "--iters", "1", "--repeats", "1", "--quiet", "--json", json},
      &out));
  EXPECT_EQ(out, ""); // --quiet: nothing but errors
  {
    Json j(cnntest::read_file(json));
    EXPECT_NE(cnn_json_get(j.root, "train"), nullptr);
    EXPECT_EQ(cnn_json_get(j.root, "infer"), nullptr);
    EXPECT_EQ(cnn_json_get(j.root, "layers"), nullptr);
  }
  // a model file (.safetensors) works as well as a definition
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "bench", be.b, 1, &net), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_save(net, dir.file("net.safetensors").c_str()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
  ASSERT_EQ(run_cnn({"bench", "--model", dir.file("net.safetensors"), "--batch", "1", "--mode", "infer", "--iters",
                     "2", "--repeats", "1", "--per-layer", "--quiet", "--json", json},
                    &out),
            0)
      << out;
  Json j(cnntest::read_file(json));
  EXPECT_EQ(cnn_json_get(j.root, "train"), nullptr);
  ASSERT_NE(cnn_json_get(j.root, "infer"), nullptr);
  const cnn_json *layers = cnn_json_get(j.root, "layers");
  ASSERT_GT(cnn_json_count(layers), 0u);
  // inference has no backward: null, not a made-up number
  EXPECT_EQ(cnn_json_type_of(cnn_json_get(cnn_json_at(layers, 0), "bwd_ms")), CNN_JSON_NULL);
}

TEST_F(BenchCli, BadFlagsAndMissingModelsExitWithTwo) {
  cnntest::write_file(dir.file("bad.cnn"), "input 12 12 3\nconv 8 three\n");
  const std::vector<cnntest::RefusedArgs> no_model = {
      {{}, "--model FILE is required"},
      {{"--model", dir.file("none.cnn")}, "cannot open"},
      {{"--model", dir.file("bad.cnn")}, "bad.cnn:2"},
  };
  cnntest::expect_refused({"bench"}, no_model, 2);
  const std::vector<cnntest::RefusedArgs> bad_flags = {
      {{"--mode", "fast"}, "--mode: 'fast' is not one of train, infer, both"},
      {{"--batch", "0"}, "--batch: '0' is not an integer from 1"},
      {{"--iters", "0"}, "--iters: '0' is not an integer from 1"},
      {{"--repeats", "x"}, "--repeats: 'x' is not an integer"},
      {{"--warmup", "-1"}, "--warmup: '-1' is not an integer"},
      {{"--threads", "0"}, "--threads: '0' is not an integer from 1"},
      {{"--classes", "6"}, "--classes: 6 is more than the model's 5 outputs"},
      {{"--device", "tpu"}, "unknown device 'tpu'"},
      {{"--per-layer=yes"}, "--per-layer takes no value"},
      {{"--json"}, "--json needs a value"},
      {{"--itres", "3"}, "unknown flag '--itres'"},
      {{"--optimizer", "lamb"}, "--optimizer: 'lamb' is not one of adam, adamw, sgd"},
  };
  cnntest::expect_refused({"bench", "--model", model}, bad_flags, 2);
  std::string out;
  EXPECT_EQ(run_cnn({"bench", "--help"}, &out), 0);
  EXPECT_TRUE(has(out, "--per-layer")) << out;
}

}  // namespace
