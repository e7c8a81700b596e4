// The memory budget (include/cnn/net.h, "memory budget"): definitions whose sizes are absurd are refused at once,
// before anything is allocated, in every path that builds a network (definition text, file, model file, the cnn
// program); the estimate matches what a network allocates (exactly for its own tensors, within a stated tolerance
// for the process's heap and resident memory); the largest batch that fits is exact; sizes that overflow 64-bit
// arithmetic are errors naming the layer.
#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/io/safetensors.h"
#include "core/nn/net.h"
#include "core/nn/optim.h"
#include "core/rng.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using Backend = cnntest::CpuBackend;

constexpr int64_t kMiB = 1 << 20;
constexpr int64_t kGiB = (int64_t)1 << 30;

// The 36-byte definition: 2^30 weights (4 GiB, and as much again for their gradient) behind three lines.
const char *kHuge36 = "input 1 1 65536\nflatten\ndense 16384\n";
// Its weights at the largest sizes a definition may write: 2^48 weights, 1 PiB, more than any machine has.
const char *kPetabyte = "input 65536 65536 1\nflatten\ndense 65536\n";
// Small weights, 6.4 GB of activations for one image (the 140-byte variant asks for 6.3 GB).
const char *kWideActivations =
    "# one 4096x4096 RGB image through 96 filters: a small network, a huge batch of one\n"
    "input 4096 4096 3\nconv 96 3 relu\nglobalavgpool\ndense 10\n";

std::string model_path(const char *name) { return std::string(CNN_SOURCE_DIR) + "/samples/models/" + name; }
using cnntest::has;

// Peak resident memory of the process so far, bytes.
int64_t peak_rss() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (int64_t)u.ru_maxrss * 1024;
}

// Resident memory now (VmRSS), bytes.
int64_t current_rss() {
  FILE *f = fopen("/proc/self/status", "r");
  long long kb = -1;
  char line[256];
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %lld kB", &kb) == 1) break;
  if (f) fclose(f);
  return kb * 1024;
}

// Bytes malloc holds for the program now (small chunks in use and mmap'ed ones).
int64_t heap_in_use() {
  struct mallinfo2 m = mallinfo2();
  return (int64_t)(m.uordblks + m.hblkhd);
}

// Restores the default limit when a test ends, whatever it set.
struct LimitGuard {
  ~LimitGuard() { cnn_set_memory_limit(0); }
};

// The largest peak RSS of the programs this test has run and waited for (the cnn program): load-independent
// evidence that a refusal came before the gigabytes were allocated, where a time bound would fail on a busy machine.
int64_t children_peak_rss() {
  struct rusage ru{};
  getrusage(RUSAGE_CHILDREN, &ru);
  return (int64_t)ru.ru_maxrss * 1024;
}

cnn_memory_estimate *estimate_text(const std::string &text, int batch, int slots) {
  cnn_memory_estimate *e = nullptr;
  cnn_memory_config cfg = {batch, slots};
  EXPECT_EQ(cnn_memory_estimate_text(text.c_str(), "test.cnn", &cfg, &e), CNN_OK) << cnn_last_error();
  return e;
}

// ---------------------------------------------------------------------------------------------------------------
// refusals before allocating

TEST(Budget, HugeDefinitionsAreRefusedFastWithoutAllocating) {
  LimitGuard guard;
  Backend be;
  const int64_t rss0 = peak_rss();
  struct Case {
    const char *text;
    int64_t limit;  // 0: the default
    const char *layer;
  } cases[] = {
      {kHuge36, kGiB, "layer 'dense' (line 3)"},
      {kWideActivations, kGiB, "layer 'conv2d' (line 3)"},
      {kPetabyte, 0, "layer 'dense' (line 3)"},
  };
  for (const auto &c : cases) {
    cnn_set_memory_limit(c.limit);
    cnn_net *net = nullptr;
    EXPECT_EQ(cnn_net_from_text(c.text, "huge.cnn", be.b, 1, &net), CNN_ERR_NO_MEMORY) << c.text;
    EXPECT_EQ(net, nullptr);
    const std::string msg = cnn_last_error();
    EXPECT_TRUE(has(msg, "huge.cnn: inference at batch 1 needs")) << msg;
    EXPECT_TRUE(has(msg, "more than the memory limit of")) << msg;
    EXPECT_TRUE(has(msg, c.layer)) << msg;
    if (c.limit) {
      EXPECT_TRUE(has(msg, "memory limit of 1.00 GiB")) << msg;
    }
    EXPECT_TRUE(has(msg, "no batch size fits")) << msg;
  }
  // the same through a file
  cnntest::TempDir dir;
  cnntest::write_file(dir.file("huge.cnn"), kHuge36);
  ASSERT_EQ(std::string(kHuge36).size(), 36u);
  cnn_set_memory_limit(2 * kGiB);
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_net_from_file(dir.file("huge.cnn").c_str(), be.b, 1, &net), CNN_ERR_NO_MEMORY);
  EXPECT_TRUE(has(cnn_last_error(), "huge.cnn: inference at batch 1 needs 8.00 GiB")) << cnn_last_error();
  // nothing of the gigabytes was ever allocated
  EXPECT_LT(peak_rss() - rss0, 64 * kMiB);
}

TEST(Budget, EstimatesOfHugeDefinitionsNeedNoMemory) {
  const int64_t rss0 = peak_rss();
  cnn_memory_estimate *e = estimate_text(kHuge36, 32, 2);
  ASSERT_NE(e, nullptr);
  const int64_t weights = (int64_t)16384 * 65536 * 4 + 16384 * 4;
  EXPECT_EQ(e->train.param_bytes, weights);
  EXPECT_EQ(e->train.grad_bytes, weights);
  EXPECT_EQ(e->train.optimizer_bytes, 2 * weights);
  EXPECT_EQ(e->infer.grad_bytes, 0);
  EXPECT_EQ(e->trainable, (int64_t)16384 * 65536 + 16384);
  cnn_memory_estimate_destroy(e);
  e = estimate_text(kPetabyte, 64, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->infer.param_bytes, ((int64_t)65536 * 65536 * 65536 + 65536) * 4);
  EXPECT_EQ(cnn_memory_max_batch(e, 0, cnn_memory_limit()), 0);
  cnn_memory_estimate_destroy(e);
  EXPECT_LT(peak_rss() - rss0, 16 * kMiB);
}

TEST(Budget, SizesThatOverflowAreShapeErrorsNamingTheLayer) {
  Backend be;
  struct Case {
    std::string text, want;
  } cases[] = {
      // 2^48 inputs times 65536 units: the weight's size is 2^66 bytes
      {"input 65536 65536 65536\nflatten\ndense 65536\n", "huge.cnn: layer dense (line 3): weight: a tensor of shape "
                                                          "(65536, 281474976710656)"},
      // concats of 16 outputs, four deep: 2^32 channels of 2^32 pixels
      {"input 65536 65536 65536\nname a\nconcat a a a a a a a a a a a a a a a a name=b\n"
       "concat b b b b b b b b b b b b b b b b name=c\nconcat c c c c c c c c c c c c c c c c name=d\n"
       "concat d d d d d d d d d d d d d d d d\nflatten\ndense 2\n",
       "huge.cnn:6: layer 'concatenate_3': its output (None, 65536, 65536, 4294967296) overflows 64-bit sizes"},
      // flat outputs summed past 2^63 elements by a concat
      {"input 65536 65536 65536\nflatten name=f\nconcat f f f f f f f f f f f f f f f f name=g\n"
       "concat g g g g g g g g g g g g g g g g name=h\nconcat h h h h h h h h h h h h h h h h name=i\n"
       "concat i i i i i i i i i i i i i i i i\ndense 2\n",
       "huge.cnn: line 6: concat: the channel count overflows 64-bit arithmetic"},
  };
  for (const auto &c : cases) {
    cnn_net *net = nullptr;
    EXPECT_EQ(cnn_net_from_text(c.text.c_str(), "huge.cnn", be.b, 1, &net), CNN_ERR_SHAPE) << c.text;
    EXPECT_TRUE(has(cnn_last_error(), c.want)) << cnn_last_error() << "\nexpected: " << c.want;
    cnn_memory_estimate *e = nullptr;
    cnn_memory_config cfg = {1, 0};
    EXPECT_EQ(cnn_memory_estimate_text(c.text.c_str(), "huge.cnn", &cfg, &e), CNN_ERR_SHAPE);
    EXPECT_EQ(e, nullptr);
  }
  // every layer at the largest sizes: each output fits, their sum (2^50 bytes an image, 9000 times) does not;
  // the totals saturate and are refused, never wrapped around to a small number
  std::string deep = "input 65536 65536 65536\n";
  for (int i = 0; i < 9000; i++) deep += "conv 65536 1\n";
  deep += "globalavgpool\ndense 2\n";
  cnn_memory_estimate *e = estimate_text(deep, 1, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->infer.total_bytes, INT64_MAX);
  EXPECT_EQ(cnn_memory_max_batch(e, 0, INT64_MAX - 1), 0);
  EXPECT_EQ(cnn_memory_check(e, 0, 64 * kGiB), CNN_ERR_NO_MEMORY);
  EXPECT_TRUE(has(cnn_last_error(), "needs more than 8 EiB")) << cnn_last_error();
  cnn_memory_estimate_destroy(e);
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_net_from_text(deep.c_str(), "deep.cnn", be.b, 1, &net), CNN_ERR_NO_MEMORY);
}

// A model file whose embedded definition is the huge one (its tensors those of a tiny model) is refused by every
// loader before the network allocates.
TEST(Budget, ModelFilesWithHugeDefinitionsAreRefusedBeforeAllocating) {
  LimitGuard guard;
  Backend be;
  cnntest::TempDir dir;
  // a tiny model, written as cnn train writes it
  cnn_net *tiny = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 2 2 1\nflatten\ndense 3\n", "tiny.cnn", be.b, 1, &tiny), CNN_OK);
  const std::string tiny_path = dir.file("tiny.safetensors");
  ASSERT_EQ(cnn_net_save(tiny, tiny_path.c_str()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(tiny);
  // the same file with the definition replaced
  cnn_st_file *f = nullptr;
  ASSERT_EQ(cnn_st_read(tiny_path.c_str(), &f), CNN_OK) << cnn_last_error();
  std::vector<cnn_st_entry> entries;
  for (int i = 0; i < f->count; i++) {
    const cnn_st_tensor *t = &f->tensors[i];
    entries.push_back({t->name, t->dtype, t->ndim, t->shape, cnn_st_data(f, t)});
  }
  std::vector<const char *> keys, values;
  for (int i = 0; i < f->meta_count; i++) {
    keys.push_back(f->meta_keys[i]);
    values.push_back(strcmp(f->meta_keys[i], "definition") ? f->meta_values[i] : kHuge36);
  }
  const std::string crafted = dir.file("crafted.safetensors");
  ASSERT_EQ(cnn_st_write(crafted.c_str(), entries.data(), (int)entries.size(), keys.data(), values.data(),
                         (int)keys.size()),
            CNN_OK)
      << cnn_last_error();
  for (int i = 0; i < f->meta_count; i++)
    if (!strcmp(f->meta_keys[i], "definition")) values[i] = kPetabyte;
  const std::string petabyte = dir.file("petabyte.safetensors");
  ASSERT_EQ(cnn_st_write(petabyte.c_str(), entries.data(), (int)entries.size(), keys.data(), values.data(),
                         (int)keys.size()),
            CNN_OK);
  cnn_st_free(f);

  const int64_t rss0 = peak_rss();
  cnn_net *net = nullptr;
  cnn_set_memory_limit(kGiB);
  EXPECT_EQ(cnn_net_load(crafted.c_str(), be.b, &net), CNN_ERR_NO_MEMORY);
  EXPECT_TRUE(has(cnn_last_error(), "crafted.safetensors (definition): inference at batch 1 needs 8.00 GiB"))
      << cnn_last_error();
  cnn_set_memory_limit(0);
  EXPECT_EQ(cnn_net_load(petabyte.c_str(), be.b, &net), CNN_ERR_NO_MEMORY);
  EXPECT_TRUE(has(cnn_last_error(), "petabyte.safetensors (definition): inference at batch 1 needs 2.00 PiB"))
      << cnn_last_error();
  EXPECT_EQ(net, nullptr);
  EXPECT_LT(peak_rss() - rss0, 64 * kMiB);

  // the cnn program: every command that reads a model file refuses it, and summary describes it without building
  std::string out;
  EXPECT_EQ(cnntest::run_cnn({"eval", "--model", crafted, "--max-memory", "1G"}, &out), 1) << out;
  EXPECT_TRUE(has(out, "cnn eval: --max-memory: ")) << out;
  EXPECT_TRUE(has(out, "crafted.safetensors (definition): inference at batch 256 needs")) << out;
  EXPECT_EQ(cnntest::run_cnn({"predict", "--model", petabyte, dir.file("none.png")}, &out), 1) << out;
  EXPECT_TRUE(has(out, "cnn predict: memory limit: ")) << out;
  EXPECT_EQ(cnntest::run_cnn({"bench", "--model", crafted, "--max-memory", "1G", "--quiet"}, &out), 1) << out;
  EXPECT_TRUE(has(out, "cnn bench: --max-memory: ")) << out;
  EXPECT_EQ(cnntest::run_cnn({"summary", crafted, "--max-memory", "1G"}, &out), 1) << out;
  EXPECT_TRUE(has(out, "Total params: 1073758208")) << out;
  EXPECT_TRUE(has(out, "cnn summary: --max-memory: ")) << out;
  EXPECT_TRUE(has(out, "crafted.safetensors (definition): inference at batch 1 needs 8.00 GiB")) << out;
  EXPECT_EQ(cnntest::run_cnn({"summary", petabyte}, &out), 1) << out;
  EXPECT_TRUE(has(out, "cnn summary: memory limit: ")) << out;
  EXPECT_LT(children_peak_rss(), kGiB);  // five processes, none of which allocates the network
}

// ---------------------------------------------------------------------------------------------------------------
// the estimate against what a network allocates

// What the network and the optimizer hold on the backend: every tensor that owns its memory, by its size.
int64_t owned(const cnn_tensor *t) { return t && t->owns_data ? (int64_t)cnn_tensor_bytes(t) : 0; }

int64_t allocated_bytes(const cnn_net *net, const cnn_optimizer *opt) {
  int64_t sum = owned(net->input_t) + owned(net->input_lp) + owned(net->labels) + owned(net->probs) +
                owned(net->losses) + owned(net->class_weights);
  for (int i = 0; i < 2; i++) sum += owned(net->input_spare[i]) + owned(net->labels_spare[i]);
  for (int i = 0; i < net->nlayers; i++) {
    const cnn_layer *l = net->layers[i];
    for (int p = 0; p < l->nparams; p++)
      sum += owned(l->params[p].value) + owned(l->params[p].grad) + owned(l->params[p].value_lp);
    for (int p = 0; p < l->nstate; p++) sum += owned(l->state[p].value);
    for (int b = 0; b < CNN_LAYER_MAX_BUFS; b++) sum += owned(l->bufs[b]);
    if (net->acts) sum += owned(net->acts[i]);
  }
  for (int i = 0; i < net->npool; i++) sum += owned(net->gpool[i]);
  for (int i = 0; i < net->nscratch; i++) sum += owned(net->gscratch[i]);
  for (int i = 0; opt && i < opt->nparams; i++) sum += owned(opt->m[i]) + owned(opt->v[i]);
  return sum;
}

// The part of a training estimate that the network and optimizer allocate as tensors: everything but the
// approximated workspaces, the max-pool argmax (backend-internal) and the host staging of the batch.
int64_t tensor_part(const cnn_memory_estimate *e, int64_t pixels) {
  int64_t argmax = 0;
  for (int i = 0; i < e->nlayers; i++) argmax += e->layers[i].backward_bytes;
  const cnn_memory_totals &t = e->train;
  const int64_t host = (int64_t)e->batch * (4 * pixels + 4);
  return t.param_bytes + t.grad_bytes + t.optimizer_bytes + t.activation_bytes + (t.scratch_bytes - argmax) +
         t.activation_grad_bytes + (t.batch_bytes - host);
}

// One training step of `net` at batch n on random images and labels; the optimizer is made here (Adam).
cnn_status train_step(cnn_net *net, int n, cnn_optimizer **opt) {
  int h, w, c;
  cnn_net_input_shape(net, &h, &w, &c);
  const int k = cnn_net_num_outputs(net);
  std::vector<float> images((size_t)n * h * w * c);
  std::vector<int32_t> labels(n);
  cnn_rng rng;
  cnn_rng_seed(&rng, 7);
  for (float &x : images) x = cnn_rng_uniform(&rng);
  for (int32_t &y : labels) y = (int32_t)cnn_rng_below(&rng, (uint32_t)k);
  cnn_train_config cfg;
  cnn_train_config_defaults(&cfg);
  cnn_status st = cnn_optimizer_create(net, &cfg, opt);
  if (st == CNN_OK) st = cnn_net_stage_host(net, images.data(), labels.data(), n);
  if (st == CNN_OK) st = cnn_net_forward(net, 1);
  if (st == CNN_OK) st = cnn_net_loss(net, 1);
  if (st == CNN_OK) st = cnn_net_backward(net);
  if (st == CNN_OK) st = cnn_optimizer_step(*opt);
  if (st == CNN_OK) st = cnn_backend_sync(net->backend);
  return st;
}

// Pre-activations kept for GELU and SiLU (conv, dense, an add), a concat, an unfused batchnorm, dropout.
const char *kGeluConcat =
    "input 12 12 3\n"
    "conv 8 3 gelu padding=same name=a\n"
    "conv 8 3 silu padding=same from=input name=b\n"
    "concat a b name=c\n"
    "conv 16 1 bias=no\n"
    "batchnorm\n"
    "add c gelu\n"
    "maxpool 2\n"
    "flatten\n"
    "dense 16 silu\n"
    "dropout 0.25\n"
    "dense 4 softmax\n";

TEST(Budget, EstimatesMatchTheTensorsANetworkAllocatesExactly) {
  Backend be;
  struct Case {
    std::string name, text;
  } cases[] = {
      {"seed_cnn", cnntest::read_file(model_path("seed_cnn.cnn"))},
      {"seed_cnn_bn", cnntest::read_file(model_path("seed_cnn_bn.cnn"))},
      {"resnet20_28", cnntest::read_file(model_path("resnet20_28.cnn"))},
      {"gelu_concat", kGeluConcat},
  };
  for (const auto &c : cases) {
    SCOPED_TRACE(c.name);
    cnn_net *net = nullptr;
    ASSERT_EQ(cnn_net_from_text(c.text.c_str(), c.name.c_str(), be.b, 1, &net), CNN_OK) << cnn_last_error();
    cnn_memory_estimate *e = nullptr;
    cnn_memory_config cfg = {8, cnn_optimizer_slots(CNN_OPTIM_ADAM, 0.9f)};
    ASSERT_EQ(cnn_net_memory_estimate(net, &cfg, &e), CNN_OK) << cnn_last_error();
    // the weights: exactly what was allocated, and counted as the summary counts them
    EXPECT_EQ(allocated_bytes(net, nullptr), e->train.param_bytes + e->train.grad_bytes);
    EXPECT_EQ(e->trainable, cnn_net_param_count(net));
    EXPECT_EQ(e->non_trainable, cnn_net_state_count(net));
    // after a training step: weights, gradients, optimizer state, activations, layer buffers, pooled gradients
    cnn_optimizer *opt = nullptr;
    ASSERT_EQ(train_step(net, 8, &opt), CNN_OK) << cnn_last_error();
    int h, w, ch;
    cnn_net_input_shape(net, &h, &w, &ch);
    EXPECT_EQ(allocated_bytes(net, opt), tensor_part(e, (int64_t)h * w * ch));
    // and the text's estimate is the network's
    cnn_memory_estimate *t = estimate_text(c.text, 8, 2);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->train.total_bytes, e->train.total_bytes);
    EXPECT_EQ(t->infer.total_bytes, e->infer.total_bytes);
    cnn_memory_estimate_destroy(t);
    cnn_memory_estimate_destroy(e);
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(net);
  }
}

// The whole estimate (with its approximated workspaces) against the process: the heap malloc holds and the
// resident memory a training step adds, and the resident memory of inference, for the seed CNN and ResNet-20 at
// batch 64, in a process that has run a network before (what it pays once is not the network's). The tolerance:
// within 15% of the estimate plus 4 MiB (oneDNN's primitive caches and JIT code are not estimated). Measured on the
// 2-core development machine (oneDNN, AVX-512, Winograd convolutions), this test alone as ctest runs it: seed CNN
// training 30.5 MiB estimated, 32.8 MiB of heap, 24.4 MiB resident; inference 17.0 MiB estimated, 16.2 MiB
// resident. ResNet-20 training 104.2 MiB estimated, 106.8 MiB of heap, 97.5 MiB resident; inference 83.7 MiB
// estimated, 83.3 MiB resident. (After the file's other tests, in one process, less becomes resident: their freed
// pages are reused.)
constexpr double kTolerance = 0.15;
constexpr double kSlack = 4.0 * kMiB;

TEST(Budget, EstimatesAreCloseToTheHeapAndResidentMemoryOfATrainingStep) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "AddressSanitizer's redzones, quarantine and shadow memory are not the program's";
#endif
  // every large block its own mapping, given back when freed: what one network leaves behind is not resident
  // memory the next one reuses (glibc would otherwise raise its mmap threshold as blocks are freed)
  mallopt(M_MMAP_THRESHOLD, 64 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
  {
    // what the process pays once, whatever the network: oneDNN's kernels and caches, OpenMP's threads
    Backend be;
    cnn_net *warm = nullptr;
    cnn_optimizer *opt = nullptr;
    ASSERT_EQ(cnn_net_from_text("input 8 8 1\nconv 4 3 relu\nmaxpool 2\nflatten\ndense 2\n", "warm", be.b, 1, &warm),
              CNN_OK);
    ASSERT_EQ(train_step(warm, 2, &opt), CNN_OK) << cnn_last_error();
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(warm);
  }
  for (const char *file : {"seed_cnn.cnn", "resnet20_28.cnn"}) {
    SCOPED_TRACE(file);
    const std::string text = cnntest::read_file(model_path(file));
    cnn_memory_estimate *e = estimate_text(text, 64, 2);
    ASSERT_NE(e, nullptr);
    // inference touches the weights, the activations and the batch; the gradient buffers the network reserves
    // stay untouched (heap, not resident memory)
    // (each measurement on a backend of its own: the backend's scratch, which holds the workspaces, is part of it)
    int64_t rss0 = current_rss();
    cnn_net *net = nullptr;
    Backend bi;
    ASSERT_EQ(cnn_net_from_text(text.c_str(), file, bi.b, 1, &net), CNN_OK) << cnn_last_error();
    std::vector<float> images((size_t)64 * 28 * 28, 0.5f), probs((size_t)64 * 10);
    ASSERT_EQ(cnn_net_predict(net, images.data(), 64, probs.data()), CNN_OK) << cnn_last_error();
    const int64_t infer_rss = current_rss() - rss0, infer_want = e->infer.total_bytes;
    cnn_net_destroy(net);
    // a training step: everything
    const int64_t heap0 = heap_in_use();
    rss0 = current_rss();
    Backend bt;
    ASSERT_EQ(cnn_net_from_text(text.c_str(), file, bt.b, 1, &net), CNN_OK) << cnn_last_error();
    cnn_optimizer *opt = nullptr;
    ASSERT_EQ(train_step(net, 64, &opt), CNN_OK) << cnn_last_error();
    const int64_t heap = heap_in_use() - heap0, rss = current_rss() - rss0, want = e->train.total_bytes;
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(net);
    printf("%s at batch 64: training: estimate %.2f MiB, heap +%.2f MiB, resident +%.2f MiB; inference: estimate "
           "%.2f MiB, resident +%.2f MiB\n", file, (double)want / kMiB, (double)heap / kMiB, (double)rss / kMiB,
           (double)infer_want / kMiB, (double)infer_rss / kMiB);
    EXPECT_NEAR((double)heap, (double)want, kTolerance * (double)want + kSlack);
    EXPECT_NEAR((double)rss, (double)want, kTolerance * (double)want + kSlack);
    EXPECT_NEAR((double)infer_rss, (double)infer_want, kTolerance * (double)infer_want + kSlack);
    cnn_memory_estimate_destroy(e);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// limits and batch sizes

TEST(Budget, TheLargestBatchThatFitsIsExact) {
  const std::string text = cnntest::read_file(model_path("resnet20_28.cnn"));
  cnn_memory_estimate *e64 = estimate_text(text, 64, 2);
  ASSERT_NE(e64, nullptr);
  for (int training = 0; training <= 1; training++) {
    const cnn_memory_totals &t = training ? e64->train : e64->infer;
    EXPECT_EQ(t.total_bytes, t.fixed_bytes + 64 * t.per_image_bytes);
    for (int64_t limit : {t.total_bytes, t.total_bytes - 1, t.total_bytes + 12345, (int64_t)3 * t.total_bytes / 7}) {
      const int64_t b = cnn_memory_max_batch(e64, training, limit);
      ASSERT_GE(b, 1);
      cnn_memory_estimate *at = estimate_text(text, (int)b, 2), *next = estimate_text(text, (int)b + 1, 2);
      ASSERT_NE(at, nullptr);
      ASSERT_NE(next, nullptr);
      const int64_t need = training ? at->train.total_bytes : at->infer.total_bytes;
      const int64_t more = training ? next->train.total_bytes : next->infer.total_bytes;
      EXPECT_LE(need, limit) << "batch " << b;
      EXPECT_GT(more, limit) << "batch " << b + 1;
      EXPECT_EQ(cnn_memory_check(at, training, limit), CNN_OK);
      EXPECT_EQ(cnn_memory_check(next, training, limit), CNN_ERR_NO_MEMORY);
      cnn_memory_estimate_destroy(at);
      cnn_memory_estimate_destroy(next);
    }
    // below what the weights alone need, nothing fits; between that and one image, neither
    EXPECT_EQ(cnn_memory_max_batch(e64, training, t.fixed_bytes - 1), 0);
    EXPECT_EQ(cnn_memory_max_batch(e64, training, t.fixed_bytes + t.per_image_bytes - 1), 0);
    EXPECT_EQ(cnn_memory_max_batch(e64, training, t.fixed_bytes + t.per_image_bytes), 1);
  }
  cnn_memory_estimate_destroy(e64);
}

TEST(Budget, RefusalsNameTheLargestConsumersAndTheBatchThatFits) {
  const std::string text = cnntest::read_file(model_path("seed_cnn.cnn"));
  cnn_memory_estimate *e = estimate_text(text, 64, 2), *e10 = estimate_text(text, 10, 2);
  ASSERT_NE(e, nullptr);
  ASSERT_NE(e10, nullptr);
  EXPECT_EQ(cnn_memory_check(e, 1, e10->train.total_bytes), CNN_ERR_NO_MEMORY);
  std::string msg = cnn_last_error();
  EXPECT_TRUE(has(msg, "test.cnn: a training step at batch 64 needs")) << msg;
  EXPECT_TRUE(has(msg, "the largest consumers: ")) << msg;
  EXPECT_TRUE(has(msg, "layer 'conv2d' (line 4)")) << msg;  // its 26x26x32 outputs
  EXPECT_TRUE(has(msg, "the activations' gradients")) << msg;
  EXPECT_TRUE(has(msg, "the largest batch size that fits is 10")) << msg;
  EXPECT_EQ(cnn_memory_check(e, 1, 1), CNN_ERR_NO_MEMORY);
  msg = cnn_last_error();
  EXPECT_TRUE(has(msg, "no batch size fits: the weights, their gradients, the optimizer's state and the "
                       "workspaces alone need")) << msg;
  EXPECT_EQ(cnn_memory_check(e, 0, e->infer.fixed_bytes + 1), CNN_ERR_NO_MEMORY);
  EXPECT_TRUE(has(cnn_last_error(), "no batch size fits: one image needs")) << cnn_last_error();
  EXPECT_EQ(cnn_memory_check(e, 0, e->infer.total_bytes), CNN_OK);
  cnn_memory_estimate_destroy(e);
  cnn_memory_estimate_destroy(e10);
}

TEST(Budget, BatchesAndTrainingAreCheckedBeforeTheyAllocate) {
  LimitGuard guard;
  Backend be;
  cnn_net *net = nullptr;
  const std::string text = "input 12 12 1\nconv 8 3 relu\nmaxpool 2\nflatten\ndense 4 softmax\n";
  ASSERT_EQ(cnn_net_from_text(text.c_str(), "quad.cnn", be.b, 1, &net), CNN_OK);
  cnn_memory_estimate *e16 = estimate_text(text, 16, 2);
  ASSERT_NE(e16, nullptr);
  // inference at 16 fits, at 17 not; a refused batch leaves nothing allocated
  cnn_set_memory_limit(e16->infer.total_bytes);
  EXPECT_EQ(cnn_net_set_batch(net, 16), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_set_batch(net, 17), CNN_ERR_NO_MEMORY);
  EXPECT_TRUE(has(cnn_last_error(), "quad.cnn: inference at batch 17 needs")) << cnn_last_error();
  EXPECT_TRUE(has(cnn_last_error(), "the largest batch size that fits is 16")) << cnn_last_error();
  EXPECT_EQ(net->acts, nullptr);
  // training at 16 needs the gradients and Adam's moments too: refused before the optimizer exists
  cnntest::Quadrants data(64, 3);
  cnn_train_config cfg;
  cnn_train_config_defaults(&cfg);
  cfg.epochs = 1;
  cfg.batch_size = 16;
  cfg.progress = nullptr;
  EXPECT_EQ(cnn_train(net, &data.ds, nullptr, &cfg, nullptr), CNN_ERR_NO_MEMORY);
  EXPECT_TRUE(has(cnn_last_error(), "quad.cnn: a training step at batch 16 needs")) << cnn_last_error();
  cnn_set_memory_limit(e16->train.total_bytes);
  EXPECT_EQ(cnn_train(net, &data.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  cnn_memory_estimate_destroy(e16);
  cnn_net_destroy(net);
}

TEST(Budget, OptimizerSlotsAreWhatTheOptimizersAllocate) {
  EXPECT_EQ(cnn_optimizer_slots(CNN_OPTIM_ADAM, 0.0f), 2);
  EXPECT_EQ(cnn_optimizer_slots(CNN_OPTIM_ADAMW, 0.9f), 2);
  EXPECT_EQ(cnn_optimizer_slots(CNN_OPTIM_SGD, 0.9f), 1);
  EXPECT_EQ(cnn_optimizer_slots(CNN_OPTIM_SGD, 0.0f), 0);
  EXPECT_EQ(cnn_optimizer_slots(CNN_OPTIM_RMSPROP, 0.0f), 1);
  EXPECT_EQ(cnn_optimizer_slots(CNN_OPTIM_RMSPROP, 0.5f), 2);
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_file(model_path("seed_cnn.cnn").c_str(), be.b, 1, &net), CNN_OK);
  struct Case {
    cnn_optimizer_kind kind;
    float momentum;
  } cases[] = {{CNN_OPTIM_ADAM, 0.9f}, {CNN_OPTIM_SGD, 0.9f}, {CNN_OPTIM_SGD, 0.0f}, {CNN_OPTIM_RMSPROP, 0.0f},
               {CNN_OPTIM_RMSPROP, 0.9f}};
  for (const auto &c : cases) {
    cnn_train_config cfg;
    cnn_train_config_defaults(&cfg);
    cfg.optimizer = c.kind;
    cfg.momentum = c.momentum;
    cnn_optimizer *opt = nullptr;
    ASSERT_EQ(cnn_optimizer_create(net, &cfg, &opt), CNN_OK);
    cnn_memory_estimate *e = nullptr;
    cnn_memory_config mc = {1, cnn_optimizer_slots(c.kind, c.momentum)};
    ASSERT_EQ(cnn_net_memory_estimate(net, &mc, &e), CNN_OK);
    int64_t state = 0;
    for (int i = 0; i < opt->nparams; i++) state += owned(opt->m[i]) + owned(opt->v[i]);
    EXPECT_EQ(e->train.optimizer_bytes, state) << cnn_optimizer_name(c.kind) << " " << c.momentum;
    cnn_memory_estimate_destroy(e);
    cnn_optimizer_destroy(opt);
  }
  cnn_net_destroy(net);
}

TEST(Budget, TheDefaultLimitComesFromTheAvailableMemory) {
  LimitGuard guard;
  const int64_t avail = cnn_memory_available();
  EXPECT_GT(avail, 0);
  cnn_set_memory_limit(0);
  const int64_t def = cnn_memory_limit();
  EXPECT_GT(def, 0);
  EXPECT_LE(def, avail);  // 80% of what was available when first asked
  cnn_set_memory_limit(123456789);
  EXPECT_EQ(cnn_memory_limit(), 123456789);
  cnn_set_memory_limit(0);
  EXPECT_EQ(cnn_memory_limit(), def);
  char buf[32];
  EXPECT_STREQ(cnn_memory_format(512, buf, sizeof buf), "512 B");
  EXPECT_STREQ(cnn_memory_format(1536 * kMiB, buf, sizeof buf), "1.50 GiB");
  EXPECT_STREQ(cnn_memory_format(INT64_MAX, buf, sizeof buf), "more than 8 EiB");
}

// ---------------------------------------------------------------------------------------------------------------
// the cnn program

TEST(BudgetCli, SummaryShowsTheMemoryAtTheBatchSize) {
  std::string out;
  ASSERT_EQ(cnntest::run_cnn({"summary", model_path("seed_cnn.cnn"), "--batch", "32", "--max-memory", "1G"}, &out), 0)
      << out;
  for (const char *want : {"Total params: 163850", "Memory at batch 32 (training with 2 optimizer tensors per weight)",
                           "Param bytes", "Act (train)", "conv2d (Conv2D)", "Training step at batch 32:",
                           "Inference at batch 32:", "optimizer state 1.25 MiB", "Memory limit 1.00 GiB: training fits "
                           "up to batch"})
    EXPECT_TRUE(has(out, want)) << want << "\n" << out;
  ASSERT_EQ(cnntest::run_cnn({"summary", model_path("seed_cnn.cnn"), "--optimizer", "sgd"}, &out), 0) << out;
  EXPECT_TRUE(has(out, "Memory at batch 64 (training with 1 optimizer tensor per weight)")) << out;
  EXPECT_TRUE(has(out, "(80% of the memory available)")) << out;
}

TEST(BudgetCli, SummaryRefusesWhatExceedsTheLimitAtOnce) {
  cnntest::TempDir dir;
  cnntest::write_file(dir.file("huge.cnn"), kHuge36);
  std::string out;
  // the table, then the refusal: nothing was allocated for the 4 GiB of weights
  EXPECT_EQ(cnntest::run_cnn({"summary", dir.file("huge.cnn"), "--max-memory", "1G"}, &out), 1) << out;
  EXPECT_LT(children_peak_rss(), kGiB);
  EXPECT_TRUE(has(out, "Total params: 1073758208")) << out;
  EXPECT_TRUE(has(out, "Training step at batch 64: 20.0 GiB")) << out;
  EXPECT_TRUE(has(out, "cnn summary: --max-memory: ")) << out;
  EXPECT_TRUE(has(out, "huge.cnn: inference at batch 1 needs 8.00 GiB, more than the memory limit of 1.00 GiB")) << out;
  EXPECT_TRUE(has(out, "layer 'dense' (line 3) 4.00 GiB")) << out;
  // fits one image in inference, not a training step at the batch: refused with --max-memory only
  EXPECT_EQ(cnntest::run_cnn({"summary", model_path("seed_cnn.cnn"), "--max-memory", "20M"}, &out), 1) << out;
  EXPECT_TRUE(has(out, "a training step at batch 64 needs")) << out;
  EXPECT_TRUE(has(out, "the largest batch size that fits is")) << out;
  EXPECT_EQ(cnntest::run_cnn({"summary", model_path("seed_cnn.cnn"), "--max-memory", "100K"}, &out), 1) << out;
  EXPECT_TRUE(has(out, "no batch size fits")) << out;
}

TEST(BudgetCli, BadValuesNameTheFlag) {
  const std::string seed = model_path("seed_cnn.cnn");
  const std::vector<cnntest::RefusedArgs> cases = {
      {{"summary", seed, "--max-memory", "12X"}, "--max-memory: '12X' is not a size"},
      {{"summary", seed, "--max-memory", "0"}, "--max-memory: '0' is not a size"},
      {{"summary", seed, "--max-memory", "-1G"}, "--max-memory: '-1G' is not a size"},
      {{"summary", seed, "--max-memory", "9999999T"}, "--max-memory: '9999999T' is not a size"},
      {{"summary", seed, "--batch", "0"}, "--batch: '0' is not an integer"},
      {{"summary", seed, "--optimizer", "adagrad"}, "--optimizer: 'adagrad' is not one of"},
      {{"train", "--model", seed, "--max-memory", "lots"}, "--max-memory: 'lots' is not a size"},
      {{"eval", "--model", "m.safetensors", "--max-memory", "1Q"}, "--max-memory: '1Q' is not a size"},
      {{"predict", "--model", "m.safetensors", "--max-memory", "", "x.png"}, "--max-memory: '' is not a size"},
      {{"bench", "--model", seed, "--max-memory", "1.5.G"}, "--max-memory: '1.5.G' is not a size"},
  };
  cnntest::expect_refused({}, cases, 2);
  // sizes the flag takes
  std::string out;
  for (const char *size : {"1073741824", "1024M", "1G", "1GiB", "1GB", "1g", "0.5T", "1.5GiB"}) {
    EXPECT_EQ(cnntest::run_cnn({"summary", seed, "--max-memory", size}, &out), 0) << size << ": " << out;
  }
}

TEST(BudgetCli, TrainAndBenchRefuseBeforeBuilding) {
  cnntest::TempDir dir;
  cnntest::write_file(dir.file("huge.cnn"), kHuge36);
  std::string out;
  EXPECT_EQ(cnntest::run_cnn({"train", "--model", dir.file("huge.cnn"), "--max-memory", "2G", "--epochs", "1"}, &out),
            1)
      << out;
  EXPECT_TRUE(has(out, "cnn train: --max-memory: ")) << out;
  EXPECT_TRUE(has(out, "a training step at batch 64 needs 20.0 GiB")) << out;
  EXPECT_EQ(cnntest::run_cnn({"bench", "--model", dir.file("huge.cnn"), "--max-memory", "2G"}, &out), 1) << out;
  EXPECT_TRUE(has(out, "cnn bench: --max-memory: ")) << out;
  EXPECT_LT(children_peak_rss(), kGiB);
  // a real model at a limit it fits at a smaller batch but not at 64
  EXPECT_EQ(cnntest::run_cnn({"bench", "--model", model_path("seed_cnn.cnn"), "--max-memory", "20M", "--mode", "train",
                              "--quiet"},
                             &out),
            1)
      << out;
  EXPECT_TRUE(has(out, "a training step at batch 64 needs")) << out;
  EXPECT_TRUE(has(out, "the largest batch size that fits is")) << out;
}

}  // namespace
