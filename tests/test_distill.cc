// Distillation and quantization-aware training (include/cnn/compress.h): the distillation loss and its gradient
// against a float64 reference and its finite differences, through the network with a teacher of another size;
// fake quantization against cnn-lite's quantize-dequantize and cnn_quantize's stored weights, bit for bit; the
// straight-through gradient against finite differences of the function it differentiates; the int8 model that
// cnn quantize makes of a QAT model against the fake-quantized float forward; ranges through save, load and resume;
// bad teachers, settings and networks.
#include <gtest/gtest.h>
#include <stb_image_write.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/compress/compress.h"
#include "core/data/image.h"
#include "core/io/safetensors.h"
#include "core/lite/lite_quant.h"
#include "core/nn/net.h"
#include "core/nn/qat.h"
}
#include "tests/fixtures.h"
#include "tests/reference.h"
#include "tests/util.h"

namespace {

using cnntest::CpuBackend;
using cnntest::TempDir;
using Vec = cnnref::Vec;

using cnntest::has;

struct NetDeleter {
  void operator()(cnn_net *n) const { cnn_net_destroy(n); }
};
using Net = std::unique_ptr<cnn_net, NetDeleter>;

Net make_net(const char *text, cnn_backend *b, uint64_t seed) {
  cnn_net *n = nullptr;
  EXPECT_EQ(cnn_net_from_text(text, "test", b, seed, &n), CNN_OK) << cnn_last_error();
  return Net(n);
}

using cnntest::read_tensor;
using cnntest::write_tensor;

Vec to_double(const std::vector<float> &v) { return Vec(v.begin(), v.end()); }

// The gradient of the float64 reference loss (cnnref::distill_loss) in the student's logits, by central differences.
Vec distill_fd_grad(int n, int k, const std::vector<float> &zs, const std::vector<float> &zt,
                    const std::vector<int32_t> &labels, const Vec &weights, double smoothing, double alpha,
                    double temperature) {
  Vec fd((size_t)n * k);
  const double h = 1e-5;
  for (size_t j = 0; j < fd.size(); j++) {
    Vec up = to_double(zs), down = up;
    up[j] += h;
    down[j] -= h;
    fd[j] = (cnnref::distill_loss(n, k, up, to_double(zt), labels, weights, smoothing, alpha, temperature, nullptr) -
             cnnref::distill_loss(n, k, down, to_double(zt), labels, weights, smoothing, alpha, temperature,
                                  nullptr)) / (2 * h);
  }
  return fd;
}

std::vector<float> uniform(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto &x : v) x = u(rng);
  return v;
}

// Every saved tensor of a network (weights, batchnorm statistics, QAT ranges), in order.
std::vector<float> saved_tensors(const cnn_net *net) {
  std::vector<float> all;
  for (int i = 0; i < net->nlayers; i++) {
    const cnn_layer *l = net->layers[i];
    for (int j = 0; j < l->nparams + l->nstate; j++) {
      auto v = read_tensor(j < l->nparams ? l->params[j].value : l->state[j - l->nparams].value);
      all.insert(all.end(), v.begin(), v.end());
    }
  }
  return all;
}

// ---- distillation ----------------------------------------------------------------------------------------------

// The combination of the cross-entropy part with the KL term: its per-sample losses against the float64 reference,
// its gradient against central differences of the reference's batch loss (label smoothing and class weights on).
TEST(Distill, CombinedLossAndGradientMatchTheFloat64ReferenceAndItsFiniteDifferences) {
  const int n = 4, k = 5;
  const double smoothing = 0.1, alpha = 0.7, temperature = 3.0;
  const Vec weights = {0.5, 1.0, 2.0, 1.0, 1.5};
  const std::vector<int32_t> labels = {0, 3, 2, 4};
  auto zs = uniform((size_t)n * k, 1, -4.0f, 4.0f), zt = uniform((size_t)n * k, 2, -6.0f, 6.0f);
  Vec ce, dce;
  cnnref::softmax_xent_weighted(n, k, to_double(zs), labels, weights, smoothing, &ce, &dce);
  std::vector<float> cef(ce.begin(), ce.end()), gradf((size_t)n * k);
  for (size_t j = 0; j < dce.size(); j++) gradf[j] = (float)(dce[j] / n);  // the mean loss's, as cnn_net_loss gives
  std::vector<float> loss(n), grad((size_t)n * k);
  cnn_distill_combine(n, k, zs.data(), zt.data(), (float)alpha, (float)temperature, cef.data(), gradf.data(),
                      1.0f / n, loss.data(), grad.data());
  Vec want_losses;
  cnnref::distill_loss(n, k, to_double(zs), to_double(zt), labels, weights, smoothing, alpha, temperature,
                       &want_losses);
  EXPECT_LT(cnnref::max_rel_error(loss, want_losses), 1e-6);
  EXPECT_LT(cnnref::max_rel_error(grad, distill_fd_grad(n, k, zs, zt, labels, weights, smoothing, alpha, temperature)),
            1e-5);
  // the ends: alpha 0 is the cross-entropy alone, alpha 1 the KL term alone (zero where the logits agree)
  cnn_distill_combine(n, k, zs.data(), zt.data(), 0.0f, 2.0f, cef.data(), gradf.data(), 1.0f / n, loss.data(),
                      grad.data());
  EXPECT_EQ(std::memcmp(grad.data(), gradf.data(), grad.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(loss.data(), cef.data(), loss.size() * sizeof(float)), 0);
  cnn_distill_combine(n, k, zs.data(), zs.data(), 1.0f, 2.0f, cef.data(), gradf.data(), 1.0f / n, loss.data(),
                      grad.data());
  for (int i = 0; i < n; i++) EXPECT_NEAR(loss[i], 0.0f, 1e-6f);
  for (float g : grad) EXPECT_NEAR(g, 0.0f, 1e-7f);
}

const char *kStudent =
    "input 6 6 1\n"
    "conv 3 3 relu\n"
    "flatten\n"
    "dense 4 softmax\n";
// another architecture and input size, with a batchnorm (inference mode must leave its statistics alone)
const char *kTeacher8 =
    "input 8 8 1\n"
    "conv 2 3\n"
    "batchnorm relu\n"
    "flatten\n"
    "dense 4 softmax\n";

// The trainer's path: the student's forward, the teacher's on the resized batch, the combined loss written into
// the network's losses and logits' gradient. The gradient against finite differences of the float64 reference at the
// student's logits, the teacher's logits taken from the teacher run on the resized pixels by cnn_net_predict.
TEST(Distill, NetworkLossWithAResizedTeacherMatchesFiniteDifferences) {
  CpuBackend be;
  Net s = make_net(kStudent, be.b, 1), t = make_net(kTeacher8, be.b, 2);
  const float smean = 0.2f, sstd = 0.5f, tmean = 0.1f, tstd = 2.0f;
  ASSERT_EQ(cnn_net_set_normalization(s.get(), 1, &smean, &sstd), CNN_OK);
  ASSERT_EQ(cnn_net_set_normalization(t.get(), 1, &tmean, &tstd), CNN_OK);
  // the teacher's batchnorm gets statistics of its own, which an inference pass must keep
  cnn_layer *bn = t->layers[1];
  write_tensor(bn->state[0].value, {0.3f, -0.2f});
  write_tensor(bn->state[1].value, {2.0f, 0.5f});
  const int n = 3, k = 4;
  const std::vector<int32_t> labels = {1, 0, 3};
  auto pix = uniform((size_t)n * 36, 3, 0.0f, 1.0f);
  std::vector<float> images(pix.size());
  for (size_t j = 0; j < pix.size(); j++) images[j] = (pix[j] - smean) / sstd;  // as the student's loader makes them
  const float cw[4] = {1.0f, 2.0f, 0.5f, 1.0f};
  ASSERT_EQ(cnn_net_set_loss_options(s.get(), 0.05f, cw, k), CNN_OK);
  cnn_train_config cfg;
  cnn_train_config_defaults(&cfg);
  cfg.teacher = t.get();
  cfg.distill_alpha = 0.6f;
  cfg.temperature = 2.5f;
  cnn_distill *d = nullptr;
  ASSERT_EQ(cnn_distill_create(s.get(), &cfg, n, &d), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_stage_host(s.get(), images.data(), labels.data(), n), CNN_OK);
  ASSERT_EQ(cnn_net_forward(s.get(), 1), CNN_OK);
  ASSERT_EQ(cnn_distill_loss(d, s.get(), images.data(), n), CNN_OK) << cnn_last_error();
  EXPECT_GE(cnn_distill_teacher_seconds(d), 0.0);
  cnn_distill_destroy(d);
  auto zs = read_tensor(s->acts[s->nlayers - 1]), grad = read_tensor(s->grads[s->nlayers - 1]);
  auto losses = read_tensor(s->losses);
  EXPECT_EQ(read_tensor(bn->state[0].value), (std::vector<float>{0.3f, -0.2f}));
  EXPECT_EQ(read_tensor(bn->state[1].value), (std::vector<float>{2.0f, 0.5f}));
  // the teacher on the pixels resized to 8x8 (bilinear up) and normalized as it wants (cnn_net_predict does)
  std::vector<float> big((size_t)n * 64), probs((size_t)n * k);
  for (int i = 0; i < n; i++)
    ASSERT_EQ(cnn_image_resize(pix.data() + i * 36, 6, 6, 1, big.data() + i * 64, 8, 8), CNN_OK);
  ASSERT_EQ(cnn_net_predict(t.get(), big.data(), n, probs.data()), CNN_OK);
  auto zt = read_tensor(t->acts[t->nlayers - 1]);
  const Vec w(cw, cw + 4);
  Vec want_losses;
  cnnref::distill_loss(n, k, to_double(zs), to_double(zt), labels, w, 0.05, 0.6, 2.5, &want_losses);
  EXPECT_LT(cnnref::max_rel_error(losses, want_losses), 1e-5);
  EXPECT_LT(cnnref::max_rel_error(grad, distill_fd_grad(n, k, zs, zt, labels, w, 0.05, 0.6, 2.5)), 1e-5);
}

const char *kQuadNet =
    "input 12 12 1\n"
    "conv 4 3 relu\n"
    "maxpool 2\n"
    "flatten\n"
    "dense 4 softmax\n";

cnn_train_config quick_config() {
  cnn_train_config cfg = cnntest::quiet_train_config(2, 32);
  cfg.workers = 1;
  cfg.seed = 5;
  return cfg;
}

// Distilled training is a function of the seed (bit-identical twice), differs from training alone, and its
// checkpoints resume only with the same teacher.
TEST(Distill, TrainingIsDeterministicAndResumeNeedsTheSameTeacher) {
  CpuBackend be;
  cnntest::Quadrants train(256, 1);
  Net teacher = make_net(kQuadNet, be.b, 9);
  cnn_train_config tc = quick_config();
  ASSERT_EQ(cnn_train(teacher.get(), &train.ds, nullptr, &tc, nullptr), CNN_OK) << cnn_last_error();
  TempDir dir;
  std::vector<float> runs[3];
  for (int r = 0; r < 3; r++) {
    Net s = make_net(kQuadNet, be.b, 3);
    cnn_train_config cfg = quick_config();
    if (r < 2) cfg.teacher = teacher.get();
    if (r == 0) cfg.checkpoint_dir = dir.path().c_str();
    ASSERT_EQ(cnn_train(s.get(), &train.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
    runs[r] = saved_tensors(s.get());
  }
  EXPECT_EQ(std::memcmp(runs[0].data(), runs[1].data(), runs[0].size() * sizeof(float)), 0);
  EXPECT_NE(std::memcmp(runs[0].data(), runs[2].data(), runs[0].size() * sizeof(float)), 0);
  // resuming the distilled run's checkpoint with another teacher is refused, naming the setting
  Net other = make_net(kQuadNet, be.b, 10), s = make_net(kQuadNet, be.b, 3);
  char *path = nullptr;
  ASSERT_EQ(cnn_checkpoint_find(dir.path().c_str(), s.get(), nullptr, &path, nullptr), CNN_OK);
  std::string ckpt = path;
  free(path);
  cnn_train_config cfg = quick_config();
  cfg.teacher = other.get();
  cfg.resume_from = ckpt.c_str();
  EXPECT_EQ(cnn_train(s.get(), &train.ds, nullptr, &cfg, nullptr), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "teacher_crc32c")) << cnn_last_error();
  cfg.teacher = teacher.get();
  EXPECT_EQ(cnn_train(s.get(), &train.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
}

TEST(Distill, BadTeachersAndSettingsAreRefused) {
  CpuBackend be;
  Net s = make_net(kStudent, be.b, 1);
  Net classes = make_net("input 6 6 1\nflatten\ndense 3 softmax\n", be.b, 1);
  Net channels = make_net("input 6 6 3\nflatten\ndense 4 softmax\n", be.b, 1);
  Net good = make_net(kTeacher8, be.b, 1);
  EXPECT_EQ(cnn_distill_check(s.get(), classes.get(), 0.5f, 2.0f), CNN_ERR_SHAPE);
  EXPECT_TRUE(has(cnn_last_error(), "3 classes")) << cnn_last_error();
  EXPECT_EQ(cnn_distill_check(s.get(), channels.get(), 0.5f, 2.0f), CNN_ERR_SHAPE);
  EXPECT_TRUE(has(cnn_last_error(), "input channels")) << cnn_last_error();
  EXPECT_EQ(cnn_distill_check(s.get(), good.get(), 1.5f, 2.0f), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_distill_check(s.get(), good.get(), -0.1f, 2.0f), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_distill_check(s.get(), good.get(), NAN, 2.0f), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_distill_check(s.get(), good.get(), 0.5f, 0.0f), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "temperature")) << cnn_last_error();
  EXPECT_EQ(cnn_distill_check(s.get(), good.get(), 0.5f, -1.0f), CNN_ERR_INVALID_ARG);
  EXPECT_EQ(cnn_distill_check(s.get(), good.get(), 0.0f, 2.0f), CNN_OK);
  EXPECT_EQ(cnn_distill_check(s.get(), good.get(), 1.0f, 2.0f), CNN_OK);
  // the trainer checks too
  cnntest::Quadrants train(64, 1);
  Net q = make_net(kQuadNet, be.b, 1);
  cnn_train_config cfg = quick_config();
  cfg.teacher = classes.get();
  EXPECT_NE(cnn_train(q.get(), &train.ds, nullptr, &cfg, nullptr), CNN_OK);
  cfg.teacher = q.get();
  cfg.temperature = 0.0f;
  EXPECT_EQ(cnn_train(q.get(), &train.ds, nullptr, &cfg, nullptr), CNN_ERR_INVALID_ARG);
  // the one-batch trainer has no teacher's pass: it says so rather than train without it
  cfg.teacher = good.get();
  cfg.temperature = 2.0f;
  cnn_trainer *tr = nullptr;
  EXPECT_EQ(cnn_trainer_create(q.get(), &cfg, &tr), CNN_ERR_UNSUPPORTED);
  EXPECT_TRUE(has(cnn_last_error(), "distillation")) << cnn_last_error();
  EXPECT_EQ(tr, nullptr);
}

// A folder data set of 8x8 gray PNGs, two classes, for the command line.
std::string png_folder(const TempDir &tmp) {
  std::string root = tmp.file("img");
  for (int c = 0; c < 2; c++) {
    std::string dir = root + "/c" + std::to_string(c);
    EXPECT_EQ(system(("mkdir -p '" + dir + "'").c_str()), 0);
    for (int i = 0; i < 8; i++) {
      std::vector<unsigned char> px(64);
      for (int j = 0; j < 64; j++) px[j] = (unsigned char)(((j < 32) == (c == 0) ? 200 : 30) + 5 * i);
      EXPECT_TRUE(stbi_write_png((dir + "/" + std::to_string(i) + ".png").c_str(), 8, 8, 1, px.data(), 8));
    }
  }
  return "folder:" + root;
}

TEST(Distill, CommandLineTrainsWithATeacherAndNamesBadFlags) {
  CpuBackend be;
  TempDir tmp;
  const std::string data = png_folder(tmp), student = tmp.file("s.cnn");
  cnntest::write_file(student, "input 8 8 1\nconv 2 3 relu\nflatten\ndense 2 softmax\n");
  Net t = make_net("input 10 10 1\nconv 2 3 relu\nflatten\ndense 2 softmax\n", be.b, 1);
  Net t3 = make_net("input 8 8 1\nflatten\ndense 3 softmax\n", be.b, 1);
  Net rgb = make_net("input 8 8 3\nflatten\ndense 2 softmax\n", be.b, 1);
  ASSERT_EQ(cnn_net_save(t.get(), tmp.file("t.safetensors").c_str()), CNN_OK);
  ASSERT_EQ(cnn_net_save(t3.get(), tmp.file("t3.safetensors").c_str()), CNN_OK);
  ASSERT_EQ(cnn_net_save(rgb.get(), tmp.file("rgb.safetensors").c_str()), CNN_OK);
  std::string out;
  const std::vector<std::string> base = {"train", "--model", student, "--data", data, "--epochs", "1", "--batch", "4",
                                         "--val-split", "0", "--out", tmp.file("m.safetensors")};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = base;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  ASSERT_EQ(cnntest::run_cnn(with({"--teacher", tmp.file("t.safetensors"), "--distill-alpha", "0.5",
                                   "--temperature", "2"}), &out), 0) << out;
  EXPECT_TRUE(has(out, "distillation from")) << out;
  EXPECT_TRUE(has(out, "resized to the teacher's input")) << out;
  EXPECT_TRUE(has(out, "teacher: ")) << out;  // the progress line's share of the teacher
  EXPECT_EQ(cnntest::run_cnn(with({"--teacher", tmp.file("t3.safetensors")}), &out), 2) << out;
  EXPECT_TRUE(has(out, "--teacher") && has(out, "3 classes")) << out;
  EXPECT_EQ(cnntest::run_cnn(with({"--teacher", tmp.file("rgb.safetensors")}), &out), 2) << out;
  EXPECT_TRUE(has(out, "--teacher") && has(out, "input channels")) << out;
  EXPECT_EQ(cnntest::run_cnn(with({"--teacher", tmp.file("t.safetensors"), "--distill-alpha", "1.5"}), &out), 2);
  EXPECT_TRUE(has(out, "--distill-alpha")) << out;
  EXPECT_EQ(cnntest::run_cnn(with({"--teacher", tmp.file("t.safetensors"), "--temperature", "0"}), &out), 2);
  EXPECT_TRUE(has(out, "--temperature")) << out;
  EXPECT_EQ(cnntest::run_cnn(with({"--teacher", tmp.file("t.safetensors"), "--temperature", "-3"}), &out), 2);
  EXPECT_EQ(cnntest::run_cnn(with({"--temperature", "3"}), &out), 2);
  EXPECT_TRUE(has(out, "--teacher")) << out;
  EXPECT_EQ(cnntest::run_cnn(with({"--teacher", tmp.file("missing.safetensors")}), &out), 1);
  EXPECT_TRUE(has(out, "--teacher")) << out;
  EXPECT_EQ(cnntest::run_cnn(with({"--qat", "--adversarial", "fgsm", "--eps", "0.1"}), &out), 2);
  EXPECT_TRUE(has(out, "--qat")) << out;
}

// ---- fake quantization -----------------------------------------------------------------------------------------

// scale * (q - zp) with cnn-lite's q, bit for bit, over values around every code of several grids, the clamped ends
// and the in-range flag (the unclamped code in [-128, 127]).
TEST(Qat, FakeQuantizationIsLiteQuantizeDequantizeBitForBit) {
  const float los[] = {-1.0f, 0.0f, -0.37f, -5.0f}, his[] = {1.0f, 6.0f, 0.05f, 0.0f};
  for (int g = 0; g < 4; g++) {
    float scale;
    int32_t zp;
    lq_choose_params(los[g], his[g], &scale, &zp);
    for (int code = -140; code <= 140; code++)
      for (float frac : {-0.5f, -0.49f, -0.25f, 0.0f, 0.25f, 0.5f, 0.51f}) {
        const float v = scale * ((float)(code - zp) + frac);
        int in = -1;
        const float got = cnn_fake_quant(v, scale, zp, &in);
        const float want = scale * (float)((int32_t)lq_quantize(v, scale, zp) - zp);
        ASSERT_EQ(std::memcmp(&got, &want, sizeof got), 0) << v;
        const double q = std::nearbyint((double)v / scale) + zp;  // only the clamped ends can differ in rounding
        if (std::fabs(q) < 127.0) {
          EXPECT_EQ(in, 1) << v;
        }
        if (q > 128.0 || q < -129.0) {
          EXPECT_EQ(in, 0) << v;
        }
      }
  }
}

// The weights QAT trains with are the ones cnn quantize stores, dequantized, bit for bit.
TEST(Qat, FakeQuantizedWeightsAreTheStoredInt8WeightsDequantized) {
  CpuBackend be;
  TempDir tmp;
  Net net = make_net("input 6 6 2\nconv 5 3 relu\nflatten\ndense 3 softmax\n", be.b, 4);
  auto w = read_tensor(net->layers[0]->params[0].value);
  w[7] = 0.0f;  // a few special values
  for (int k = 0; k < 18; k++) w[18 + k] = 0.0f;  // an all-zero channel (scale 1)
  write_tensor(net->layers[0]->params[0].value, w);
  cnn_quant_config qc;
  cnn_quant_config_defaults(&qc);
  qc.mode = CNN_QUANT_DYNAMIC;  // the same per-channel weights as int8, without calibration
  ASSERT_EQ(cnn_quantize(net.get(), &qc, tmp.file("d.safetensors").c_str()), CNN_OK) << cnn_last_error();
  cnn_st_file *f = nullptr;
  ASSERT_EQ(cnn_st_read(tmp.file("d.safetensors").c_str(), &f), CNN_OK);
  const cnn_st_tensor *q = cnn_st_find(f, "conv2d.weight"), *s = cnn_st_find(f, "conv2d.weight.scale");
  ASSERT_TRUE(q && s);
  std::vector<float> fq = w;
  cnn_fake_quant_weights(fq.data(), 5, 18);
  std::vector<int8_t> qi(90);
  std::vector<float> sc(5);
  ASSERT_EQ(q->nbytes, qi.size());
  ASSERT_EQ(s->nbytes, sc.size() * sizeof(float));
  std::memcpy(qi.data(), f->data + q->offset, q->nbytes);
  std::memcpy(sc.data(), f->data + s->offset, s->nbytes);
  for (int c = 0; c < 5; c++)
    for (int k = 0; k < 18; k++) {
      const float want = sc[c] * (float)qi[c * 18 + k];
      ASSERT_EQ(std::memcmp(&fq[c * 18 + k], &want, sizeof want), 0) << c << " " << k;
    }
  cnn_st_free(f);
}

const char *kQat =
    "input 5 5 1\n"
    "conv 2 3\n"
    "flatten\n"
    "dense 3 softmax\n"
    "qat\n";

// A QAT network's inference forward: the convolution's output is lite's quantize-dequantize, bit for bit, of the
// float convolution of the quantized input with the quantized weights (computed by a plain twin network); the
// float weights are back afterwards.
TEST(Qat, ForwardQuantizesInputWeightsAndOutputsExactly) {
  CpuBackend be;
  Net q = make_net(kQat, be.b, 6);
  ASSERT_TRUE(cnn_net_is_qat(q.get()));
  const int n = 4;
  auto x = uniform((size_t)n * 25, 7, 0.0f, 1.0f);
  std::vector<int32_t> labels(n, 1);
  ASSERT_EQ(cnn_net_stage_host(q.get(), x.data(), labels.data(), n), CNN_OK);
  ASSERT_EQ(cnn_net_forward(q.get(), 1), CNN_OK) << cnn_last_error();  // sets the ranges
  ASSERT_EQ(cnn_qat_restore(q.get()), CNN_OK);
  auto master = read_tensor(q->layers[0]->params[0].value);
  ASSERT_EQ(cnn_net_stage_host(q.get(), x.data(), labels.data(), n), CNN_OK);
  ASSERT_EQ(cnn_net_forward(q.get(), 0), CNN_OK) << cnn_last_error();
  auto got = read_tensor(q->acts[0]);
  EXPECT_EQ(read_tensor(q->layers[0]->params[0].value), master);  // inference puts the float weights back
  float in_lo, in_hi, lo, hi;
  ASSERT_TRUE(cnn_qat_range(q.get(), -1, &in_lo, &in_hi));
  ASSERT_TRUE(cnn_qat_range(q.get(), 0, &lo, &hi));
  EXPECT_EQ(in_lo, *std::min_element(x.begin(), x.end()));  // the first batch sets the ranges
  EXPECT_EQ(in_hi, *std::max_element(x.begin(), x.end()));
  // the twin: quantized input and weights given, the plain convolution, then quantize-dequantize
  Net plain = make_net("input 5 5 1\nconv 2 3\nflatten\ndense 3 softmax\n", be.b, 6);
  std::vector<float> wq = master;
  for (int c = 0; c < 2; c++) {  // per output channel, symmetric, written out from the spec
    float mx = 0.0f;
    for (int k = 0; k < 9; k++) mx = std::max(mx, std::fabs(wq[c * 9 + k]));
    const float s = mx > 0.0f ? mx / 127.0f : 1.0f;
    for (int k = 0; k < 9; k++) wq[c * 9 + k] = s * std::min(127.0f, std::max(-127.0f, std::round(wq[c * 9 + k] / s)));
  }
  write_tensor(plain->layers[0]->params[0].value, wq);
  write_tensor(plain->layers[0]->params[1].value, read_tensor(q->layers[0]->params[1].value));
  float s_in, s_out;
  int32_t z_in, z_out;
  lq_choose_params(in_lo, in_hi, &s_in, &z_in);
  lq_choose_params(lo, hi, &s_out, &z_out);
  std::vector<float> xq(x.size());
  for (size_t j = 0; j < x.size(); j++) xq[j] = s_in * (float)((int32_t)lq_quantize(x[j], s_in, z_in) - z_in);
  ASSERT_EQ(cnn_net_stage_host(plain.get(), xq.data(), labels.data(), n), CNN_OK);
  ASSERT_EQ(cnn_net_forward(plain.get(), 0), CNN_OK);
  auto y = read_tensor(plain->acts[0]);
  ASSERT_EQ(y.size(), got.size());
  for (size_t j = 0; j < y.size(); j++) {
    const float want = s_out * (float)((int32_t)lq_quantize(y[j], s_out, z_out) - z_out);
    ASSERT_EQ(std::memcmp(&got[j], &want, sizeof want), 0) << j << ": " << got[j] << " vs " << want;
  }
}

// The straight-through gradient is the exact gradient of the function in which each quantizer is the identity plus
// the constant rounding offset of the current point (and a constant where the value was clipped): central
// differences of that function, written in float64 with the reference ops, against the network's gradients.
TEST(Qat, StraightThroughGradientMatchesFiniteDifferencesOfItsFunction) {
  CpuBackend be;
  Net q = make_net(kQat, be.b, 8);
  const int n = 3, k = 3;
  auto x = uniform((size_t)n * 25, 9, 0.0f, 1.0f);
  const std::vector<int32_t> labels = {0, 2, 1};
  ASSERT_EQ(cnn_net_stage_host(q.get(), x.data(), labels.data(), n), CNN_OK);
  ASSERT_EQ(cnn_net_forward(q.get(), 1), CNN_OK);
  ASSERT_EQ(cnn_qat_restore(q.get()), CNN_OK);
  // a narrower range for the convolution's output: some values get clipped
  cnn_param *range = nullptr;
  for (int j = 0; j < q->layers[0]->nstate; j++)
    if (has(q->layers[0]->state[j].name, "qat_range")) range = &q->layers[0]->state[j];
  ASSERT_TRUE(range);
  auto r = read_tensor(range->value);
  write_tensor(range->value, {r[0] * 0.4f, r[1] * 0.4f});
  ASSERT_EQ(cnn_net_stage_host(q.get(), x.data(), labels.data(), n), CNN_OK);
  ASSERT_EQ(cnn_net_forward(q.get(), 1), CNN_OK);
  ASSERT_EQ(cnn_net_loss(q.get(), 1), CNN_OK);
  ASSERT_EQ(cnn_net_backward(q.get()), CNN_OK);
  ASSERT_EQ(cnn_qat_restore(q.get()), CNN_OK);
  cnn_layer *conv = q->layers[0], *dense = q->layers[2];
  std::vector<float> got;
  for (cnn_layer *l : {conv, dense})
    for (int p = 0; p < 2; p++) {
      auto g = read_tensor(l->params[p].grad);
      got.insert(got.end(), g.begin(), g.end());
    }
  const Vec w0 = to_double(read_tensor(conv->params[0].value)), b0 = to_double(read_tensor(conv->params[1].value));
  const Vec v0 = to_double(read_tensor(dense->params[0].value)), c0 = to_double(read_tensor(dense->params[1].value));
  float ranges[3][2];
  ASSERT_TRUE(cnn_qat_range(q.get(), -1, &ranges[0][0], &ranges[0][1]));
  ASSERT_TRUE(cnn_qat_range(q.get(), 0, &ranges[1][0], &ranges[1][1]));
  ASSERT_TRUE(cnn_qat_range(q.get(), 2, &ranges[2][0], &ranges[2][1]));
  float sc[3];
  int32_t zp[3];
  for (int i = 0; i < 3; i++) lq_choose_params(ranges[i][0], ranges[i][1], &sc[i], &zp[i]);
  auto fq = [&](int i, double v) { return (double)cnn_fake_quant((float)v, sc[i], zp[i], nullptr); };
  auto fqw = [](const Vec &w, int rows) {  // per-channel symmetric, in float as stored
    std::vector<float> f(w.begin(), w.end());
    cnn_fake_quant_weights(f.data(), rows, (int64_t)w.size() / rows);
    return to_double(f);
  };
  Vec xq(x.size());
  for (size_t j = 0; j < x.size(); j++) xq[j] = fq(0, x[j]);
  const Vec wq0 = fqw(w0, 2), vq0 = fqw(v0, 3);
  cnnref::Conv2d cp;
  cp.n = n, cp.h = 5, cp.w = 5, cp.c = 1, cp.o = 2, cp.kh = 3, cp.kw = 3;
  const Vec y0 = cnnref::conv2d_forward(cp, xq, wq0, b0);
  // the quantizer at the base point: offsets and the in-range mask
  auto ste = [&](int i, const Vec &base) {
    std::vector<std::pair<bool, double>> s(base.size());
    for (size_t j = 0; j < base.size(); j++) {
      int in = 0;
      const double f = cnn_fake_quant((float)base[j], sc[i], zp[i], &in);
      s[j] = {in != 0, in ? f - base[j] : f};
    }
    return s;
  };
  const auto ste_y = ste(1, y0);
  Vec yq0(y0.size());
  for (size_t j = 0; j < y0.size(); j++) yq0[j] = ste_y[j].first ? y0[j] + ste_y[j].second : ste_y[j].second;
  const auto ste_z = ste(2, cnnref::dense_forward(n, (int)(yq0.size() / n), k, yq0, vq0, c0, false));
  int clipped = 0;
  for (const auto &e : ste_y) clipped += !e.first;
  EXPECT_GT(clipped, 0);  // the narrow range clips some: the mask is exercised
  auto loss = [&](const Vec &w, const Vec &b, const Vec &v, const Vec &c) {
    Vec weff(w.size()), veff(v.size());
    for (size_t j = 0; j < w.size(); j++) weff[j] = w[j] + (wq0[j] - w0[j]);
    for (size_t j = 0; j < v.size(); j++) veff[j] = v[j] + (vq0[j] - v0[j]);
    Vec y = cnnref::conv2d_forward(cp, xq, weff, b);
    for (size_t j = 0; j < y.size(); j++) y[j] = ste_y[j].first ? y[j] + ste_y[j].second : ste_y[j].second;
    Vec z = cnnref::dense_forward(n, (int)(y.size() / n), k, y, veff, c, false);
    for (size_t j = 0; j < z.size(); j++) z[j] = ste_z[j].first ? z[j] + ste_z[j].second : ste_z[j].second;
    Vec losses;
    cnnref::softmax_xent(n, k, z, labels, nullptr, &losses);
    double m = 0.0;
    for (double l : losses) m += l / n;
    return m;
  };
  Vec fd;
  const double h = 1e-4;
  Vec *params[4];
  Vec w = w0, b = b0, v = v0, c = c0;
  params[0] = &w, params[1] = &b, params[2] = &v, params[3] = &c;
  for (Vec *p : params)
    for (size_t j = 0; j < p->size(); j++) {
      const double keep = (*p)[j];
      (*p)[j] = keep + h;
      const double up = loss(w, b, v, c);
      (*p)[j] = keep - h;
      const double down = loss(w, b, v, c);
      (*p)[j] = keep;
      fd.push_back((up - down) / (2 * h));
    }
  ASSERT_EQ(fd.size(), got.size());
  EXPECT_LT(cnnref::max_rel_error(got, fd), 1e-4);
}

// Quadrants, a convolution folded with its batchnorm (whose ReLU the max-pool takes), another with its ReLU: QAT
// training, cnn quantize with the learned ranges (no calibration images), and the int8 model against the fake-
// quantized float forward: the same classes wherever the float margin is above two logit steps, and most logits
// within one step.
TEST(Qat, Int8ConversionAgreesWithTheFakeQuantizedForward) {
  CpuBackend be;
  TempDir tmp;
  cnntest::Quadrants train(512, 1), test(256, 2);
  Net q = make_net(
      "input 12 12 1\n"
      "conv 4 3\n"
      "batchnorm relu\n"
      "maxpool 2\n"
      "conv 8 3 relu\n"
      "flatten\n"
      "dense 4 softmax\n"
      "qat\n",
      be.b, 3);
  cnn_train_config cfg = quick_config();
  cfg.epochs = 6;
  ASSERT_EQ(cnn_train(q.get(), &train.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  cnn_metrics *m = nullptr;
  ASSERT_EQ(cnn_evaluate(q.get(), &test.ds, 64, &m), CNN_OK);
  EXPECT_GT(m->accuracy, 0.85);  // it learned (chance: 0.25)
  cnn_metrics_destroy(m);
  cnn_quant_config qc;
  cnn_quant_config_defaults(&qc);  // int8, no calibration images
  const std::string path = tmp.file("q8.safetensors");
  ASSERT_EQ(cnn_quantize(q.get(), &qc, path.c_str()), CNN_OK) << cnn_last_error();
  cnn_net *lite = nullptr;
  ASSERT_EQ(cnn_net_load(path.c_str(), be.b, &lite), CNN_OK) << cnn_last_error();
  Net l(lite);
  const int n = (int)test.ds.n;
  std::vector<float> pf((size_t)n * 4), p8((size_t)n * 4);
  ASSERT_EQ(cnn_net_predict(q.get(), test.images.data(), n, pf.data()), CNN_OK);
  ASSERT_EQ(cnn_net_predict(l.get(), test.images.data(), n, p8.data()), CNN_OK);
  float lo, hi, step;
  int32_t zp;
  ASSERT_TRUE(cnn_qat_range(q.get(), 5, &lo, &hi));
  lq_choose_params(lo, hi, &step, &zp);
  int same = 0, decided = 0, within = 0;
  for (int i = 0; i < n; i++) {
    const float *a = &pf[(size_t)i * 4], *b = &p8[(size_t)i * 4];
    int ca = (int)(std::max_element(a, a + 4) - a), cb = (int)(std::max_element(b, b + 4) - b);
    // logit differences from log-probabilities (shifts cancel against the first class's)
    for (int j = 1; j < 4; j++)
      within += std::fabs((std::log(a[j]) - std::log(a[0])) - (std::log(b[j]) - std::log(b[0]))) <= 2.0f * step + 1e-4f;
    float second = 0.0f;
    for (int j = 0; j < 4; j++)
      if (j != ca) second = std::max(second, a[j]);
    if (std::log(a[ca]) - std::log(second) > 2.0f * step) {
      decided++;
      same += ca == cb;
    }
  }
  EXPECT_GT(decided, n / 2);
  EXPECT_EQ(same, decided);
  EXPECT_GE(within, 3 * n * 95 / 100);
}

// Ranges are state: a model file keeps them, and a resumed QAT run ends bit-identical to the uninterrupted one.
TEST(Qat, RangesSurviveSaveLoadAndResumeBitForBit) {
  CpuBackend be;
  TempDir dir, other, tmp;
  cnntest::Quadrants train(128, 1);
  const char *text = "input 12 12 1\nconv 4 3 relu\nmaxpool 2\nflatten\ndense 4 softmax\nqat\n";
  Net a = make_net(text, be.b, 3);
  cnn_train_config cfg = quick_config();
  cfg.checkpoint_dir = dir.path().c_str();
  cfg.checkpoint_every = 3;
  cfg.checkpoint_in_steps = 1;
  cfg.keep_checkpoints = 100;
  ASSERT_EQ(cnn_train(a.get(), &train.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  const auto want = saved_tensors(a.get());
  float lo, hi;
  ASSERT_TRUE(cnn_qat_range(a.get(), 0, &lo, &hi));
  EXPECT_EQ(lo, 0.0f);  // the ReLU's range (moved behind the max-pool in training), as the lowering wants it
  EXPECT_GT(hi, 0.0f);
  ASSERT_EQ(cnn_net_save(a.get(), tmp.file("m.safetensors").c_str()), CNN_OK);
  cnn_net *loaded = nullptr;
  ASSERT_EQ(cnn_net_load(tmp.file("m.safetensors").c_str(), be.b, &loaded), CNN_OK) << cnn_last_error();
  Net b(loaded);
  EXPECT_TRUE(cnn_net_is_qat(b.get()));
  EXPECT_EQ(saved_tensors(b.get()), want);
  const std::string ckpt = dir.file("ckpt-000000000006.safetensors");  // mid-run (epoch 2): 4 steps an epoch
  Net c = make_net(text, be.b, 77);
  cnn_train_config rc = cfg;
  rc.resume_from = ckpt.c_str();
  rc.checkpoint_dir = other.path().c_str();
  ASSERT_EQ(cnn_train(c.get(), &train.ds, nullptr, &rc, nullptr), CNN_OK) << cnn_last_error();
  const auto got = saved_tensors(c.get());
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
}

TEST(Qat, ConvertingAFloatNetworkKeepsItsWeightsAndSetsNoRange) {
  CpuBackend be;
  Net f = make_net(kQuadNet, be.b, 3);
  const float mean = 0.5f, sd = 0.25f;
  ASSERT_EQ(cnn_net_set_normalization(f.get(), 1, &mean, &sd), CNN_OK);
  cnn_net *out = nullptr;
  ASSERT_EQ(cnn_net_qat_convert(f.get(), 1, &out), CNN_OK) << cnn_last_error();
  Net q(out);
  EXPECT_TRUE(cnn_net_is_qat(q.get()));
  EXPECT_FALSE(cnn_net_is_qat(f.get()));
  for (int i = 0; i < f->nlayers; i++)
    for (int p = 0; p < f->layers[i]->nparams; p++)
      EXPECT_EQ(read_tensor(q->layers[i]->params[p].value), read_tensor(f->layers[i]->params[p].value));
  float m2, s2, lo, hi;
  ASSERT_TRUE(cnn_net_normalization(q.get(), &m2, &s2));
  EXPECT_EQ(m2, mean);
  EXPECT_FALSE(cnn_qat_range(q.get(), 0, &lo, &hi));
  EXPECT_EQ(cnn_net_qat_convert(q.get(), 1, &out), CNN_ERR_INVALID_ARG);
  // an untrained QAT model has nothing to convert with
  TempDir tmp;
  cnn_quant_config qc;
  cnn_quant_config_defaults(&qc);
  EXPECT_EQ(cnn_quantize(q.get(), &qc, tmp.file("x").c_str()), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "never trained")) << cnn_last_error();
}

TEST(Qat, NetworksItCannotCoverAreRefusedNamingTheLayer) {
  CpuBackend be;
  cnn_net *n = nullptr;
  // a residual block's end: the batchnorm fused with its add
  EXPECT_EQ(cnn_net_from_text("input 6 6 2\nname x\nconv 2 3 padding=1 bias=no\nbatchnorm\nadd x relu\nflatten\n"
                              "dense 2 softmax\nqat\n", "res", be.b, 1, &n), CNN_ERR_UNSUPPORTED);
  EXPECT_TRUE(has(cnn_last_error(), "fused")) << cnn_last_error();
  EXPECT_EQ(cnn_net_from_text("input 6 6 1\nconv 2 3 tanh\nflatten\ndense 2 softmax\nqat\n", "tanh", be.b, 1, &n),
            CNN_ERR_UNSUPPORTED);
  EXPECT_TRUE(has(cnn_last_error(), "conv2d")) << cnn_last_error();
  EXPECT_EQ(cnn_net_from_text("input 6 6 1\nflatten\nbatchnorm\ndense 2 softmax\nqat\n", "bn", be.b, 1, &n),
            CNN_ERR_UNSUPPORTED);
  EXPECT_EQ(cnn_net_from_text("input 6 6 1\nflatten\ndense 2 softmax\nqat yes\n", "x", be.b, 1, &n), CNN_ERR_FORMAT);
  EXPECT_EQ(n, nullptr);
}

TEST(Qat, CommandLineTrainsQuantizesWithTheLearnedRangesAndEvaluates) {
  CpuBackend be;
  TempDir tmp;
  const std::string data = png_folder(tmp), model = tmp.file("m.cnn");
  cnntest::write_file(model, "input 8 8 1\nconv 2 3 relu\nflatten\ndense 2 softmax\n");
  std::string out;
  ASSERT_EQ(cnntest::run_cnn({"train", "--model", model, "--data", data, "--epochs", "1", "--batch", "4",
                              "--val-split", "0", "--out", tmp.file("f.safetensors")}, &out), 0) << out;
  ASSERT_EQ(cnntest::run_cnn({"train", "--init-from", tmp.file("f.safetensors"), "--qat", "--data", data, "--epochs",
                              "1", "--batch", "4", "--val-split", "0", "--out", tmp.file("q.safetensors")}, &out), 0)
      << out;
  EXPECT_TRUE(has(out, "quantization-aware training")) << out;
  ASSERT_EQ(cnntest::run_cnn({"quantize", "--model", tmp.file("q.safetensors"), "--out", tmp.file("q8.safetensors")},
                             &out), 0) << out;
  EXPECT_TRUE(has(out, "learned ranges")) << out;
  ASSERT_EQ(cnntest::run_cnn({"eval", "--model", tmp.file("q8.safetensors"), "--data", data}, &out), 0) << out;
  ASSERT_EQ(cnntest::run_cnn({"summary", tmp.file("q8.safetensors")}, &out), 0) << out;
  EXPECT_TRUE(has(out, "quantization-aware")) << out;
}

}  // namespace
