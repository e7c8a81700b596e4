// Checkpoints and callbacks on the library's side: a run resumed from any of its checkpoints ends with the
// weights and curve of the uninterrupted run; bad checkpoints are refused and the previous one used; early
// stopping, save-best, reduce-on-plateau, the CSV log, TensorBoard files and the PNG plot do what they say.
#include <gtest/gtest.h>
#include <stb_image.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/crc32c.h"
#include "core/nn/net.h"
#include "core/rng.h"
#include "core/train/checkpoint.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::TempDir;

using Backend = cnntest::CpuBackend;

using Synthetic = cnntest::Quadrants; // a bright 3x3 square in one quadrant of a noisy 12x12 image

// Batchnorm (running statistics) and dropout (masks seeded by the step) make resuming a real test.
const char *kNet =
    "input 12 12 1\n"
    "conv 6 3 padding=same bias=no\n"
    "batchnorm relu\n"
    "maxpool 2\n"
    "flatten\n"
    "dropout 0.3\n"
    "dense 16 relu\n"
    "dense 4 softmax\n";

using cnntest::saved_weights;

cnn_train_config base_config() {
  cnn_train_config cfg = cnntest::quiet_train_config(3, 32);
  cfg.lr = 3e-3f;
  cfg.seed = 5;
  return cfg;
}

std::vector<std::string> list_dir(const std::string &dir) { return cnntest::list_dir(dir, false); }

using cnntest::checkpoints_in;

using cnntest::has;

TEST(Crc32c, MatchesTheStandardCheckValueAndExtends) {
  EXPECT_EQ(cnn_crc32c(0, "123456789", 9), 0xE3069283u);
  const char text[] = "the quick brown fox jumps over the lazy dog, twice: the quick brown fox";
  size_t n = sizeof text - 1;
  for (size_t cut = 0; cut <= n; cut += 7)
    EXPECT_EQ(cnn_crc32c(cnn_crc32c(0, text, cut), text + cut, n - cut), cnn_crc32c(0, text, n)) << cut;
  EXPECT_EQ(cnn_crc32c_mask(0), 0xa282ead8u);
}

// The uninterrupted run writes a checkpoint every 3 steps, half of them after an epoch's last step (6 steps an
// epoch); resuming from each (a fresh network with other initial weights, as after a crash) must end
// bit-identical, with the same loss curve.
TEST(Checkpoint, ResumingFromAnyCheckpointMatchesTheUninterruptedRun) {
  Backend be;
  Synthetic train(192, 1), val(64, 2);
  TempDir dir;
  cnn_train_config cfg = base_config();
  cfg.reduce_on_plateau = 1;
  cfg.plateau_patience = 1;
  cfg.plateau_factor = 0.5f;
  cfg.min_delta = 1.0f;  // only epoch 1 improves: the plateau fires after epoch 2, its state must survive too
  cnntest::keep_every_checkpoint(&cfg, dir.path(), 3);
  std::vector<cnn_epoch_stats> want;
  std::vector<float> want_w;
  ASSERT_NO_FATAL_FAILURE(cnntest::train_fresh(kNet, be.b, 3, &train.ds, &val.ds, cfg, &want, &want_w));
  EXPECT_LT(want.back().lr, cfg.lr);  // the plateau did fire

  auto files = checkpoints_in(dir.path());
  ASSERT_EQ(files.size(), 6u);  // steps 3, 6, ..., 18
  ASSERT_NO_FATAL_FAILURE(
      cnntest::expect_resumes_match(kNet, be.b, &train.ds, &val.ds, cfg, dir.path(), files, want, want_w));
}

TEST(Checkpoint, KeepsTheNewestAndTheBestAndLeavesNoTemporaryFiles) {
  Backend be;
  Synthetic train(96, 1), val(32, 2);
  TempDir dir;
  cnn_train_config cfg = base_config();
  cfg.epochs = 4;
  cfg.checkpoint_dir = dir.path().c_str();
  cfg.keep_checkpoints = 2;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "keep", be.b, 3, &net), CNN_OK);
  ASSERT_EQ(cnn_train(net, &train.ds, &val.ds, &cfg, nullptr), CNN_OK) << cnn_last_error();
  // 3 steps an epoch: checkpoints at steps 3, 6, 9, 12; the newest two stay
  std::vector<std::string> want = {"best.safetensors", "ckpt-000000000009.safetensors",
                                   "ckpt-000000000012.safetensors"};
  EXPECT_EQ(list_dir(dir.path()), want);
  cnn_checkpoint_info info;
  ASSERT_EQ(cnn_checkpoint_verify(dir.file(want[2]).c_str(), net, &info), CNN_OK) << cnn_last_error();
  EXPECT_EQ(info.epoch, 4);
  EXPECT_EQ(info.step, 12);
  EXPECT_EQ(info.samples_done, 0);
  // a checkpoint is also a model: eval and fine-tuning can read it
  cnn_net *loaded = nullptr;
  ASSERT_EQ(cnn_net_load(dir.file(want[2]).c_str(), be.b, &loaded), CNN_OK) << cnn_last_error();
  EXPECT_EQ(saved_weights(loaded), saved_weights(net));
  cnn_net_destroy(loaded);
  cnn_net_destroy(net);
}

// Flips one byte of the newest, truncates the next, plants a model file and another model's checkpoint under
// newer names: the search refuses each with its reason and settles on the newest good one.
TEST(Checkpoint, CorruptTruncatedAndForeignCheckpointsAreRefused) {
  Backend be;
  Synthetic train(96, 1);
  TempDir dir, other;
  cnn_train_config cfg = base_config();
  cfg.checkpoint_dir = dir.path().c_str();
  cfg.checkpoint_every = 1;
  cfg.checkpoint_in_steps = 1;
  cfg.keep_checkpoints = 100;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "bad", be.b, 3, &net), CNN_OK);
  ASSERT_EQ(cnn_train(net, &train.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  auto files = checkpoints_in(dir.path());
  ASSERT_EQ(files.size(), 9u);  // steps 1..9
  // without a validation set the best epoch is the last: its checkpoint would be found first (tested above)
  std::remove(dir.file("best.safetensors").c_str());
  // the newest: one byte of the tensor data flipped
  std::string newest = cnntest::read_file(dir.file(files[8]));
  newest[newest.size() - 100] ^= 0x10;
  cnntest::write_file(dir.file(files[8]), newest);
  // the next: cut in half
  std::string second = cnntest::read_file(dir.file(files[7]));
  cnntest::write_file(dir.file(files[7]), second.substr(0, second.size() / 2));
  // a model file and another model's checkpoint, named as newer checkpoints
  ASSERT_EQ(cnn_net_save(net, dir.file("ckpt-000000000100.safetensors").c_str()), CNN_OK);
  const char *kOther = "input 12 12 1\nflatten\ndense 4 softmax\n";
  cnn_net *small = nullptr;
  ASSERT_EQ(cnn_net_from_text(kOther, "other", be.b, 1, &small), CNN_OK);
  cnn_train_config oc = base_config();
  oc.epochs = 1;
  oc.checkpoint_dir = other.path().c_str();
  ASSERT_EQ(cnn_train(small, &train.ds, nullptr, &oc, nullptr), CNN_OK) << cnn_last_error();
  cnntest::write_file(dir.file("ckpt-000000000200.safetensors"),
                      cnntest::read_file(other.file("ckpt-000000000003.safetensors")));
  cnn_net_destroy(small);

  char *log_text = nullptr;
  size_t log_len = 0;
  FILE *log = open_memstream(&log_text, &log_len);
  char *found = nullptr;
  cnn_checkpoint_info info;
  ASSERT_EQ(cnn_checkpoint_find(dir.path().c_str(), net, log, &found, &info), CNN_OK) << cnn_last_error();
  fclose(log);
  std::string msgs(log_text, log_len);
  free(log_text);
  EXPECT_EQ(std::string(found), dir.file(files[6])) << msgs;
  EXPECT_EQ(info.step, 7);
  free(found);
  EXPECT_TRUE(has(msgs, files[8] + ": checksum mismatch")) << msgs;
  EXPECT_TRUE(has(msgs, files[7] + ": tensor")) << msgs;  // its tensors reach beyond the end of the file
  EXPECT_TRUE(has(msgs, "beyond")) << msgs;
  EXPECT_TRUE(has(msgs, "ckpt-000000000100.safetensors: not a cnn.c checkpoint (format \"cnn.c model\")")) << msgs;
  EXPECT_TRUE(has(msgs, "ckpt-000000000200.safetensors: holds another model")) << msgs;

  // resuming from what was found works; the refused newer files are set aside by the next checkpoint written
  cnn_train_config rc = cfg;
  std::string from = dir.file(files[6]);
  rc.resume_from = from.c_str();
  ASSERT_EQ(cnn_train(net, &train.ds, nullptr, &rc, nullptr), CNN_OK) << cnn_last_error();
  auto after = list_dir(dir.path());
  EXPECT_NE(std::find(after.begin(), after.end(), "ckpt-000000000100.safetensors.stale"), after.end());
  EXPECT_EQ(std::find(after.begin(), after.end(), "ckpt-000000000100.safetensors"), after.end());
  cnn_net_destroy(net);

  TempDir empty;
  EXPECT_EQ(cnn_checkpoint_find(empty.path().c_str(), nullptr, nullptr, &found, nullptr), CNN_ERR_NOT_FOUND);
  EXPECT_TRUE(has(cnn_last_error(), "no valid checkpoint")) << cnn_last_error();
}

TEST(Checkpoint, ResumeRefusesOtherSettingsOrAnotherModel) {
  Backend be;
  Synthetic train(96, 1);
  TempDir dir;
  cnn_train_config cfg = base_config();
  cfg.epochs = 1;
  cfg.checkpoint_dir = dir.path().c_str();
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "settings", be.b, 3, &net), CNN_OK);
  ASSERT_EQ(cnn_train(net, &train.ds, nullptr, &cfg, nullptr), CNN_OK) << cnn_last_error();
  std::string path = dir.file("ckpt-000000000003.safetensors");
  cnn_train_config rc = cfg;
  rc.epochs = 2;
  rc.resume_from = path.c_str();
  rc.lr = 0.01f;
  EXPECT_EQ(cnn_train(net, &train.ds, nullptr, &rc, nullptr), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "written with lr=0.003")) << cnn_last_error();
  EXPECT_TRUE(has(cnn_last_error(), "this run has lr=0.01")) << cnn_last_error();
  rc.lr = cfg.lr;
  Synthetic fewer(64, 1);
  EXPECT_EQ(cnn_train(net, &fewer.ds, nullptr, &rc, nullptr), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "training_samples=96")) << cnn_last_error();
  cnn_net *other = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 12 12 1\nflatten\ndense 4\n", "other", be.b, 1, &other), CNN_OK);
  EXPECT_EQ(cnn_train(other, &train.ds, nullptr, &rc, nullptr), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "holds another model")) << cnn_last_error();
  // the same settings go on: epoch 2 of 2
  std::vector<cnn_epoch_stats> h(2);
  ASSERT_EQ(cnn_train(net, &train.ds, nullptr, &rc, h.data()), CNN_OK) << cnn_last_error();
  EXPECT_EQ(h[0].epoch, 1);
  EXPECT_EQ(h[1].epoch, 2);
  cnn_net_destroy(other);
  cnn_net_destroy(net);
}

// ---- callbacks ------------------------------------------------------------------------------------------------

struct EpochWeights {
  cnn_net *net;
  std::vector<std::vector<float>> after;  // weights at the end of each epoch
};

void record_weights(const cnn_epoch_stats *, void *user) {
  auto *r = static_cast<EpochWeights *>(user);
  r->after.push_back(saved_weights(r->net));
}

// min_delta so large that only the first epoch counts as an improvement: patience 2 stops after epoch 3; the
// weights and the save-best file are those of epoch 1; reduce-on-plateau (patience 1) halves the rate twice.
TEST(Callbacks, EarlyStoppingSaveBestRestoreAndPlateauFollowTheMonitor) {
  Backend be;
  Synthetic train(96, 1), val(32, 2);
  TempDir dir;
  std::string best = dir.file("best.safetensors");
  cnn_train_config cfg = base_config();
  cfg.epochs = 6;
  cfg.monitor = CNN_MONITOR_VAL_ACCURACY;
  cfg.min_delta = 10.0f;
  cfg.early_stopping = 1;
  cfg.early_stopping_patience = 2;
  cfg.restore_best_weights = 1;
  cfg.save_best = best.c_str();
  cfg.reduce_on_plateau = 1;
  cfg.plateau_patience = 1;
  cfg.plateau_factor = 0.5f;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "early", be.b, 3, &net), CNN_OK);
  EpochWeights rec{net, {}};
  cfg.on_epoch_end = record_weights;
  cfg.user = &rec;
  std::vector<cnn_epoch_stats> h(cfg.epochs);
  ASSERT_EQ(cnn_train(net, &train.ds, &val.ds, &cfg, h.data()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(rec.after.size(), 3u);
  EXPECT_EQ(h[2].epoch, 3);
  EXPECT_EQ(h[3].epoch, 0);  // not run
  EXPECT_EQ(h[0].lr, (double)cfg.lr);
  EXPECT_EQ(h[1].lr, (double)cfg.lr);
  EXPECT_EQ(h[2].lr, (double)(cfg.lr * 0.5f));
  EXPECT_NE(rec.after[0], rec.after[2]);
  EXPECT_EQ(saved_weights(net), rec.after[0]);  // restored
  cnn_net *saved = nullptr;
  ASSERT_EQ(cnn_net_load(best.c_str(), be.b, &saved), CNN_OK) << cnn_last_error();
  EXPECT_EQ(saved_weights(saved), rec.after[0]);
  cnn_net_destroy(saved);
  cnn_net_destroy(net);
}

TEST(Callbacks, CsvLogHoldsEveryEpochExactly) {
  Backend be;
  Synthetic train(96, 1), val(32, 2);
  TempDir dir;
  std::string csv = dir.file("log.csv");
  cnn_train_config cfg = base_config();
  cfg.csv_log = csv.c_str();
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "csv", be.b, 3, &net), CNN_OK);
  std::vector<cnn_epoch_stats> h(cfg.epochs);
  ASSERT_EQ(cnn_train(net, &train.ds, &val.ds, &cfg, h.data()), CNN_OK) << cnn_last_error();
  std::istringstream in(cnntest::read_file(csv));
  std::string line;
  std::getline(in, line);
  EXPECT_EQ(line, "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds");
  for (int e = 0; e < cfg.epochs; e++) {
    ASSERT_TRUE(std::getline(in, line)) << e;
    std::vector<std::string> f;
    std::stringstream ls(line);
    for (std::string cell; std::getline(ls, cell, ',');) f.push_back(cell);
    ASSERT_EQ(f.size(), 7u) << line;
    EXPECT_EQ(std::stoi(f[0]), e + 1);
    EXPECT_EQ(std::strtod(f[1].c_str(), nullptr), h[e].loss) << line;
    EXPECT_EQ(std::strtod(f[2].c_str(), nullptr), h[e].accuracy) << line;
    EXPECT_EQ(std::strtod(f[3].c_str(), nullptr), h[e].val_loss) << line;
    EXPECT_EQ(std::strtod(f[4].c_str(), nullptr), h[e].val_accuracy) << line;
    EXPECT_EQ(std::strtof(f[5].c_str(), nullptr), (float)h[e].lr) << line;  // a float, written as the shortest
    EXPECT_LE(f[5].size(), 12u) << line;
  }
  EXPECT_FALSE(std::getline(in, line));
  cnn_net_destroy(net);
}

// ---- TensorBoard: an independent reader of TFRecord framing and the few protobuf fields we write ----

struct Scalar {
  std::string tag;
  float value;
};
struct Event {
  double wall_time = 0;
  int64_t step = 0;
  std::string file_version;
  std::vector<Scalar> scalars;
};

uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

bool varint(const std::string &s, size_t *pos, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; *pos < s.size() && shift < 64; shift += 7) {
    unsigned char b = (unsigned char)s[(*pos)++];
    v |= (uint64_t)(b & 0x7F) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

// Calls f(field, wire, varint value, bytes) for every field of a message; false on malformed input.
template <typename F>
bool fields(const std::string &m, F f) {
  size_t pos = 0;
  while (pos < m.size()) {
    uint64_t key, v = 0;
    std::string bytes;
    if (!varint(m, &pos, &key)) return false;
    int wire = (int)(key & 7);
    if (wire == 0) {
      if (!varint(m, &pos, &v)) return false;
    } else if (wire == 1 || wire == 5) {
      size_t n = wire == 1 ? 8 : 4;
      if (pos + n > m.size()) return false;
      v = le((const unsigned char *)m.data() + pos, (int)n);
      pos += n;
    } else if (wire == 2) {
      uint64_t n;
      if (!varint(m, &pos, &n) || pos + n > m.size()) return false;
      bytes = m.substr(pos, n);
      pos += n;
    } else {
      return false;
    }
    f((int)(key >> 3), wire, v, bytes);
  }
  return true;
}

std::vector<Event> read_events(const std::string &path) {
  std::string data = cnntest::read_file(path);
  std::vector<Event> events;
  size_t pos = 0;
  while (pos < data.size()) {
    const unsigned char *p = (const unsigned char *)data.data() + pos;
    EXPECT_LE(pos + 12, data.size());
    if (pos + 12 > data.size()) break;
    uint64_t len = le(p, 8);
    EXPECT_EQ(le(p + 8, 4), cnn_crc32c_mask(cnn_crc32c(0, p, 8))) << "length CRC of record " << events.size();
    EXPECT_LE(pos + 16 + len, data.size());
    if (pos + 16 + len > data.size()) break;
    std::string body = data.substr(pos + 12, len);
    EXPECT_EQ(le(p + 12 + len, 4), cnn_crc32c_mask(cnn_crc32c(0, body.data(), len))) << "data CRC";
    Event e;
    bool ok = fields(body, [&](int field, int wire, uint64_t v, const std::string &bytes) {
      if (field == 1 && wire == 1) std::memcpy(&e.wall_time, &v, 8);
      if (field == 2 && wire == 0) e.step = (int64_t)v;
      if (field == 3 && wire == 2) e.file_version = bytes;
      if (field == 5 && wire == 2)
        fields(bytes, [&](int f2, int w2, uint64_t, const std::string &value) {
          if (f2 != 1 || w2 != 2) return;
          Scalar s{"", NAN};
          fields(value, [&](int f3, int w3, uint64_t v3, const std::string &b3) {
            if (f3 == 1 && w3 == 2) s.tag = b3;
            if (f3 == 2 && w3 == 5) {
              uint32_t bits = (uint32_t)v3;
              std::memcpy(&s.value, &bits, 4);
            }
          });
          e.scalars.push_back(s);
        });
    });
    EXPECT_TRUE(ok) << "record " << events.size() << " is not a valid protobuf";
    events.push_back(e);
    pos += 16 + len;
  }
  return events;
}

float scalar(const Event &e, const std::string &tag) {
  for (const auto &s : e.scalars)
    if (s.tag == tag) return s.value;
  ADD_FAILURE() << "no scalar " << tag << " at step " << e.step;
  return NAN;
}

TEST(Callbacks, TensorBoardEventFilesParseBackWithValidCrcs) {
  Backend be;
  Synthetic train(96, 1), val(32, 2);
  TempDir dir;
  std::string tb = dir.file("tb");
  cnn_train_config cfg = base_config();
  cfg.tensorboard_dir = tb.c_str();
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "tb", be.b, 3, &net), CNN_OK);
  std::vector<cnn_epoch_stats> h(cfg.epochs);
  ASSERT_EQ(cnn_train(net, &train.ds, &val.ds, &cfg, h.data()), CNN_OK) << cnn_last_error();
  for (const char *sub : {"train", "validation"}) {
    auto files = list_dir(tb + "/" + sub);
    ASSERT_EQ(files.size(), 1u) << sub;
    EXPECT_EQ(files[0].rfind("events.out.tfevents.", 0), 0u) << files[0];
    auto ev = read_events(tb + "/" + sub + "/" + files[0]);
    ASSERT_EQ(ev.size(), (size_t)cfg.epochs + 1) << sub;
    EXPECT_EQ(ev[0].file_version, "brain.Event:2");
    EXPECT_GT(ev[0].wall_time, 1.6e9);
    bool validation = std::string(sub) == "validation";
    for (int e = 0; e < cfg.epochs; e++) {
      const Event &x = ev[e + 1];
      EXPECT_EQ(x.step, e + 1);
      EXPECT_EQ(x.wall_time, h[e].wall_time);
      EXPECT_EQ(scalar(x, "epoch_loss"), (float)(validation ? h[e].val_loss : h[e].loss));
      EXPECT_EQ(scalar(x, "epoch_accuracy"), (float)(validation ? h[e].val_accuracy : h[e].accuracy));
      if (!validation) {
        EXPECT_EQ(scalar(x, "epoch_learning_rate"), (float)h[e].lr);
      }
      EXPECT_EQ(x.scalars.size(), validation ? 2u : 3u);
    }
  }
  cnn_net_destroy(net);
}

// The plot: a 1000x420 PNG; the training curve (blue) in both panels, the validation curve (orange) too, and
// in the loss panel the curve falls from left to right.
TEST(Callbacks, PlotShowsTrainingAndValidationCurves) {
  Backend be;
  Synthetic train(200, 1), val(64, 2);
  TempDir dir;
  std::string png = dir.file("curves.png");
  cnn_train_config cfg = base_config();
  cfg.epochs = 4;
  cfg.plot = png.c_str();
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "plot", be.b, 3, &net), CNN_OK);
  std::vector<cnn_epoch_stats> h(cfg.epochs);
  ASSERT_EQ(cnn_train(net, &train.ds, &val.ds, &cfg, h.data()), CNN_OK) << cnn_last_error();
  ASSERT_LT(h[3].loss, h[0].loss);
  int w, hgt, c;
  unsigned char *px = stbi_load(png.c_str(), &w, &hgt, &c, 3);
  ASSERT_NE(px, nullptr) << stbi_failure_reason();
  EXPECT_EQ(w, 1000);
  EXPECT_EQ(hgt, 420);
  auto is = [&](int x, int y, int r, int g, int b) {
    const unsigned char *p = px + ((size_t)y * w + x) * 3;
    return p[0] == r && p[1] == g && p[2] == b;
  };
  int blue[2] = {0, 0}, orange[2] = {0, 0};
  double blue_left_y = 0, blue_right_y = 0;
  int nl = 0, nr = 0;
  for (int y = 0; y < hgt; y++)
    for (int x = 0; x < w; x++) {
      int panel = x < 500;
      if (is(x, y, 31, 119, 180)) {
        blue[panel]++;
        if (panel && x < 180 && y > 60) blue_left_y += y, nl++;   // the loss curve's start (not the legend)
        if (panel && x > 330 && y > 90) blue_right_y += y, nr++;  // and its end, below the legend
      }
      if (is(x, y, 255, 127, 14)) orange[panel]++;
    }
  stbi_image_free(px);
  EXPECT_GT(blue[1], 200);
  EXPECT_GT(blue[0], 200);
  EXPECT_GT(orange[1], 200);
  EXPECT_GT(orange[0], 200);
  ASSERT_GT(nl, 0);
  ASSERT_GT(nr, 0);
  EXPECT_LT(blue_left_y / nl, blue_right_y / nr);  // image rows grow downwards: a falling loss ends lower
  cnn_net_destroy(net);
}

}  // namespace
