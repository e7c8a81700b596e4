// Checkpoints, resume, fine-tuning and callbacks as the cnn program offers them: training killed with SIGKILL at
// random moments and resumed ends bit-identical to an uninterrupted run with the same loss curve; a corrupt
// checkpoint is refused and the previous one used; the program says whether it resumes or fine-tunes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/rng.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

extern char **environ;

namespace {

using cnntest::run_cnn;
using cnntest::TempDir;

using cnntest::has;

const char *kModel =
    "input 12 12 1\n"
    "conv 16 3 padding=same bias=no\n"
    "batchnorm relu\n"
    "maxpool 2\n"
    "conv 16 3 relu\n"
    "flatten\n"
    "dropout 0.25\n"
    "dense 4 softmax\n";

struct Fixture {
  TempDir dir;
  std::string data, model;
  Fixture() {
    data = dir.file("data");
    model = dir.file("model.cnn");
    cnntest::write_idx_squares(data, 600, 64, 7);
    cnntest::write_file(model, kModel);
  }
  std::vector<std::string> train_args(int epochs) const {
    return {"train", "--model", model, "--data", "mnist:" + data, "--epochs", std::to_string(epochs), "--batch", "16",
            "--seed", "3", "--val-split", "0.2", "--deterministic", "--quiet"};
  }
};

bool any_checkpoint(const std::string &dir) {
  DIR *d = opendir(dir.c_str());
  if (!d) return false;
  bool found = false;
  while (dirent *e = readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("ckpt-", 0) == 0 && n.size() > 12 && n.substr(n.size() - 12) == ".safetensors") found = true;
  }
  closedir(d);
  return found;
}

// Starts the cnn program with output to `log`; returns its pid.
pid_t spawn_cnn(const std::vector<std::string> &args, const std::string &log) {
  std::vector<char *> argv;
  std::string tool = CNN_TOOL_PATH;
  argv.push_back(&tool[0]);
  std::vector<std::string> copy = args;
  for (auto &a : copy) argv.push_back(&a[0]);
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, tool.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

// The CSV without its seconds column: the loss curve, which must be identical.
std::string curve(const std::string &csv) {
  std::istringstream in(csv);
  std::string line, out;
  while (std::getline(in, line)) out += line.substr(0, line.rfind(',')) + "\n";
  return out;
}

TEST(Resume, TrainingKilledAtRandomMomentsResumesBitIdentical) {
  setenv("OMP_NUM_THREADS", "1", 1);  // one thread count for every run (README, "Reproducibility")
  Fixture fx;
  const int epochs = 5;
  auto common = fx.train_args(epochs);
  for (const char *a : {"--checkpoint-every", "4steps"}) common.push_back(a);
  // the uninterrupted run
  std::string ref_dir = fx.dir.file("ref"), ref_model = fx.dir.file("ref.safetensors"), ref_csv = fx.dir.file("ref.csv");
  auto args = common;
  for (const std::string &a : {std::string("--checkpoint-dir"), ref_dir, std::string("--out"), ref_model,
                               std::string("--csv-log"), ref_csv})
    args.push_back(a);
  auto t0 = std::chrono::steady_clock::now();
  std::string out;
  ASSERT_EQ(run_cnn(args, &out), 0) << out;
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::string want_model = cnntest::read_file(ref_model), want_curve = curve(cnntest::read_file(ref_csv));
  ASSERT_FALSE(want_model.empty());

  cnn_rng r;
  cnn_rng_seed(&r, 2024);
  int kills = 0, resumed = 0;
  // three chains at least, more (up to six) while fewer than three runs were killed before they ended: a busy
  // machine can make the reference run slow and the later ones fast
  for (int chain = 0; chain < 6 && (chain < 3 || kills < 3 || resumed < 2); chain++) {
    std::string tag = std::to_string(chain), dir = fx.dir.file("ckpt" + tag), model = fx.dir.file("m" + tag),
                csv = fx.dir.file("log" + tag + ".csv"), log = fx.dir.file("log" + tag + ".txt");
    int killed_here = 0, finished = 0;
    for (int attempt = 0; attempt < 8 && !finished; attempt++) {
      auto a = common;
      for (const std::string &x : {std::string("--checkpoint-dir"), dir, std::string("--out"), model,
                                   std::string("--csv-log"), csv})
        a.push_back(x);
      if (any_checkpoint(dir)) {
        a.push_back("--resume");
        a.push_back(dir);
        resumed++;
      }
      pid_t pid = spawn_cnn(a, log);
      ASSERT_GT(pid, 0);
      if (killed_here < 2) {  // kill at a random moment of the run's expected span, twice per chain
        double at = total * (0.1 + 0.6 * cnn_rng_uniform(&r));
        std::this_thread::sleep_for(std::chrono::duration<double>(at));
        kill(pid, SIGKILL);
      }
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
        killed_here++;
        kills++;
        continue;
      }
      ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cnntest::read_file(log);
      finished = 1;
    }
    ASSERT_TRUE(finished) << cnntest::read_file(log);
    EXPECT_TRUE(cnntest::read_file(model) == want_model) << "chain " << chain << " ended with other weights\n"
                                                         << cnntest::read_file(log);
    EXPECT_EQ(curve(cnntest::read_file(csv)), want_curve) << "chain " << chain;
  }
  EXPECT_GE(kills, 3) << "too few runs were killed before they ended; the test did not test much";
  EXPECT_GE(resumed, 2) << "too few kills left a checkpoint to resume from";
}

TEST(Resume, CorruptNewestCheckpointIsRefusedAndThePreviousUsed) {
  Fixture fx;
  std::string dir = fx.dir.file("ckpt"), out;
  auto args = fx.train_args(2);
  for (const std::string &a : {std::string("--checkpoint-dir"), dir, std::string("--out"), fx.dir.file("m")})
    args.push_back(a);
  ASSERT_EQ(run_cnn(args, &out), 0) << out;
  // 480 training images, batch 16: 30 steps an epoch, a checkpoint after each epoch
  std::string newest = dir + "/ckpt-000000000060.safetensors";
  std::string bytes = cnntest::read_file(newest);
  ASSERT_GT(bytes.size(), 1000u);
  bytes[bytes.size() - 10] ^= 1;
  cnntest::write_file(newest, bytes);
  // the best epoch's checkpoint is as new when epoch 2 was the best: spoil it too, so that epoch 1's is next
  std::string best = cnntest::read_file(dir + "/best.safetensors");
  if (best.find("\"step\":\"60\"") != std::string::npos) {
    best[best.size() - 10] ^= 1;
    cnntest::write_file(dir + "/best.safetensors", best);
  }
  args = fx.train_args(3);
  for (const std::string &a : {std::string("--resume"), dir, std::string("--out"), fx.dir.file("m")})
    args.push_back(a);
  ASSERT_EQ(run_cnn(args, &out), 0) << out;
  EXPECT_TRUE(has(out, "refusing checkpoint " + newest + ": checksum mismatch")) << out;
  EXPECT_TRUE(has(out, "trying the previous one")) << out;
  EXPECT_TRUE(has(out, "resuming from " + dir + "/ckpt-000000000030.safetensors (epoch 1 of 3 done, step 30)")) << out;
  EXPECT_TRUE(has(out, "restoring the weights, optimizer state")) << out;

  // nothing valid at all: a clear failure
  TempDir empty;
  args = fx.train_args(1);
  args.push_back("--resume");
  args.push_back(empty.path());
  EXPECT_EQ(run_cnn(args, &out), 1) << out;
  EXPECT_TRUE(has(out, "--resume: " + empty.path() + ": no valid checkpoint")) << out;
}

// A checkpoint keeps the run's flags: `--resume DIR` alone continues the run with them (its data, epochs,
// learning rate, output file, ...) and ends with the weights of the uninterrupted run; a flag given again that
// changes the arithmetic is refused, naming the setting.
TEST(Resume, ResumeAloneContinuesWithTheRunsSettings) {
  Fixture fx;
  std::string dir = fx.dir.file("ckpt"), model = fx.dir.file("m.safetensors"), out;
  auto args = fx.train_args(2);
  for (const std::string &a : {std::string("--lr"), std::string("0.003"), std::string("--optimizer"),
                               std::string("sgd"), std::string("--checkpoint-dir"), dir, std::string("--out"), model})
    args.push_back(a);
  ASSERT_EQ(run_cnn(args, &out), 0) << out;
  const std::string want = cnntest::read_file(model);
  ASSERT_FALSE(want.empty());
  // back to the end of epoch 1 (480 training images, batch 16: step 30), as if the run had been killed there
  ASSERT_EQ(remove((dir + "/ckpt-000000000060.safetensors").c_str()), 0);
  remove((dir + "/best.safetensors").c_str());
  remove(model.c_str());
  ASSERT_EQ(run_cnn({"train", "--resume", dir, "--quiet"}, &out), 0) << out;
  EXPECT_TRUE(has(out, "--resume: continuing with the run's settings from " + dir + "/ckpt-000000000030.safetensors: "
                       "--data mnist:" + fx.data + " --epochs 2 --batch 16 --seed 3 --val-split 0.2 "
                       "--deterministic --lr 0.003 --optimizer sgd --out " + model)) << out;
  EXPECT_TRUE(has(out, "resuming from " + dir + "/ckpt-000000000030.safetensors (epoch 1 of 2 done, step 30)")) << out;
  EXPECT_TRUE(cnntest::read_file(model) == want) << "the resumed run ended with other weights\n" << out;

  // what a resumed run writes keeps the settings too; a flag given again must agree with them
  ASSERT_EQ(remove((dir + "/ckpt-000000000060.safetensors").c_str()), 0);
  remove((dir + "/best.safetensors").c_str());
  EXPECT_NE(run_cnn({"train", "--resume", dir, "--quiet", "--lr", "0.1"}, &out), 0) << out;
  EXPECT_TRUE(has(out, "was written with lr=0.003, this run has lr=0.1")) << out;
  EXPECT_NE(run_cnn({"train", "--resume", dir, "--quiet", "--optimizer", "adam"}, &out), 0) << out;
  EXPECT_TRUE(has(out, "was written with optimizer=sgd, this run has optimizer=adam")) << out;
  // flags that leave the arithmetic alone may change: more epochs, another output file
  ASSERT_EQ(run_cnn({"train", "--resume", dir, "--quiet", "--epochs", "3", "--out", fx.dir.file("m3")}, &out), 0)
      << out;
  EXPECT_TRUE(has(out, "(epoch 1 of 3 done, step 30)")) << out;
  EXPECT_TRUE(has(out, "model written to " + fx.dir.file("m3"))) << out;
}

TEST(Resume, BadFlagsNameTheFlag) {
  Fixture fx;
  const std::vector<cnntest::RefusedArgs> cases = {
      {{"--resume", "d", "--init-from", "m.safetensors"}, "--resume continues a run"},
      {{"--freeze", "conv2d"}, "--freeze fine-tunes a trained network: give it with --init-from"},
      {{"--replace-head", "3"}, "--replace-head fine-tunes a trained network"},
      {{"--replace-head", "0", "--init-from", "m"}, "--replace-head: '0' is not an integer from 1"},
      {{"--checkpoint-dir", "d", "--checkpoint-every", "3hours"}, "--checkpoint-every: '3hours' is not N"},
      {{"--checkpoint-every", "3"}, "--checkpoint-every needs --checkpoint-dir"},
      {{"--monitor", "val_f1"}, "--monitor: 'val_f1' is not one of val_loss"},
      {{"--early-stopping", "-1"}, "--early-stopping: '-1' is not an integer"},
      {{"--keep-checkpoints", "0", "--checkpoint-dir", "d"}, "--keep-checkpoints: '0' is not an integer from 1"},
      {{"--init-from", "/nonexistent/model.safetensors"}, "--init-from: /nonexistent/model.safetensors"},
  };
  cnntest::expect_refused(fx.train_args(1), cases, 0);
}

// Fine-tuning: a new run from the weights of a trained model with a new head and frozen layers: the program says
// so, the frozen layer's weights are those of the base model, the others moved.
TEST(FineTune, InitFromReplaceHeadAndFreezeSayWhatTheyDo) {
  Fixture fx;
  std::string base = fx.dir.file("base.safetensors"), tuned = fx.dir.file("tuned.safetensors"), out;
  auto args = fx.train_args(1);
  args.push_back("--out");
  args.push_back(base);
  ASSERT_EQ(run_cnn(args, &out), 0) << out;
  args = fx.train_args(1);
  for (const std::string &a : {std::string("--init-from"), base, std::string("--replace-head"), std::string("4"),
                               std::string("--freeze"), std::string("batch_normalization"), std::string("--out"), tuned})
    args.push_back(a);
  auto it = std::find(args.begin(), args.end(), std::string("--model"));
  args.erase(it, it + 2);  // the definition comes from the base model
  ASSERT_EQ(run_cnn(args, &out), 0) << out;
  EXPECT_TRUE(has(out, "fine-tuning: a new run (fresh optimizer state, schedule from epoch 1) from the weights of " +
                           base))
      << out;
  EXPECT_TRUE(has(out, "new classifier for 4 classes; 2 layers frozen, up to batch_normalization")) << out;
  EXPECT_FALSE(has(out, "resuming")) << out;

  cnn_backend *be = nullptr;
  ASSERT_EQ(cnn_backend_create("cpu", &be), CNN_OK);
  cnn_net *a = nullptr, *b = nullptr;
  ASSERT_EQ(cnn_net_load(base.c_str(), be, &a), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_load(tuned.c_str(), be, &b), CNN_OK) << cnn_last_error();
  // compare through model files' tensors: the frozen conv and batchnorm kept every value
  std::string sa = cnntest::read_file(base), sb = cnntest::read_file(tuned);
  cnn_net_destroy(a);
  cnn_net_destroy(b);
  cnn_backend_destroy(be);
  auto tensor_bytes = [](const std::string &file, const std::string &name) {
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | (unsigned char)file[i];
    std::string header = file.substr(8, hlen);
    size_t at = header.find("\"" + name + "\"");
    if (at == std::string::npos) return std::string();
    size_t offs = header.find("data_offsets\":[", at) + 15;
    size_t begin = std::stoull(header.substr(offs)), end = std::stoull(header.substr(header.find(',', offs) + 1));
    return file.substr(8 + hlen + begin, end - begin);
  };
  for (const char *name : {"conv2d.weight", "batch_normalization.gamma", "batch_normalization.running_mean"}) {
    std::string x = tensor_bytes(sa, name);
    ASSERT_FALSE(x.empty()) << name;
    EXPECT_EQ(x, tensor_bytes(sb, name)) << name << " is frozen";
  }
  EXPECT_NE(tensor_bytes(sa, "conv2d_1.weight"), tensor_bytes(sb, "conv2d_1.weight"));
}

TEST(Callbacks, CommandLineWritesLogsPlotAndStopsEarly) {
  Fixture fx;
  std::string csv = fx.dir.file("log.csv"), tb = fx.dir.file("tb"), png = fx.dir.file("curves.png"),
              best = fx.dir.file("best.safetensors"), json = fx.dir.file("m.json"), out;
  auto args = fx.train_args(6);
  args.pop_back();  // not --quiet: the early-stopping note goes to the progress output
  for (const std::string &a : {std::string("--csv-log"), csv, std::string("--tensorboard"), tb, std::string("--plot"),
                               png, std::string("--save-best"), best, std::string("--early-stopping"),
                               std::string("1"), std::string("--min-delta"), std::string("100"),
                               std::string("--restore-best-weights"), std::string("--metrics-json"), json,
                               std::string("--out"), fx.dir.file("m.safetensors")})
    args.push_back(a);
  ASSERT_EQ(run_cnn(args, &out), 0) << out;
  EXPECT_TRUE(has(out, "Early stopping: val_loss has not improved for 1 epoch (best")) << out;
  EXPECT_TRUE(has(out, "Restoring the weights of epoch 1")) << out;
  std::string log = cnntest::read_file(csv);
  EXPECT_EQ(std::count(log.begin(), log.end(), '\n'), 3) << log;  // header, epochs 1 and 2
  std::string metrics = cnntest::read_file(json);
  EXPECT_TRUE(has(metrics, "\"epoch\": 2")) << metrics;
  EXPECT_FALSE(has(metrics, "\"epoch\": 3")) << metrics;
  EXPECT_GT(cnntest::read_file(png).size(), 1000u);
  EXPECT_GT(cnntest::read_file(best).size(), 1000u);
  DIR *d = opendir((tb + "/train").c_str());
  ASSERT_NE(d, nullptr);
  int events = 0;
  while (dirent *e = readdir(d)) events += std::string(e->d_name).rfind("events.out.tfevents.", 0) == 0;
  closedir(d);
  EXPECT_EQ(events, 1);
}

}  // namespace
