// The sample programs of samples/, built by CMake, run as a user would: samples/predict.c classifies images with a
// model file through the public API and prints what cnn_net_predict gives for them; bad arguments and files give
// the documented exit statuses and name what is wrong.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <vector>

#include <stb_image_write.h>

extern "C" {
#include "cnn/cnn.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::TempDir;

bool has(const std::string &s, const std::string &part) { return s.find(part) != std::string::npos; }

// Runs a program with arguments (quoted), returns its exit status; stdout and stderr into *out.
int run(const std::string &cmd, std::string *out) {
  FILE *p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  out->clear();
  char buf[512];
  while (fgets(buf, sizeof buf, p)) *out += buf;
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *kNet =
    "input 12 12 1\n"
    "conv 4 3 relu padding=same\n"
    "maxpool 2\n"
    "flatten\n"
    "dense 5 softmax\n";

TEST(Samples, PredictPrintsWhatTheLibraryPredicts) {
  TempDir dir;
  cnn_backend *be = nullptr;
  ASSERT_EQ(cnn_backend_create("cpu", &be), CNN_OK);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kNet, "sample", be, 5, &net), CNN_OK) << cnn_last_error();
  const char *names[] = {"zero", "one", "two", "three", "four"};
  ASSERT_EQ(cnn_net_set_class_names(net, 5, names), CNN_OK);
  float mean = 0.4f, sd = 0.25f;
  ASSERT_EQ(cnn_net_set_normalization(net, 1, &mean, &sd), CNN_OK);
  const std::string model = dir.file("m.safetensors");
  ASSERT_EQ(cnn_net_save(net, model.c_str()), CNN_OK) << cnn_last_error();
  // two 16x16 images (resized to 12x12 by the loader and by the sample alike)
  std::vector<std::string> pngs;
  for (int i = 0; i < 2; i++) {
    std::vector<unsigned char> px(16 * 16);
    for (size_t j = 0; j < px.size(); j++) px[j] = (unsigned char)((j * (7 + 11 * i) + 13 * i) % 256);
    pngs.push_back(dir.file("img" + std::to_string(i) + ".png"));
    ASSERT_NE(stbi_write_png(pngs[i].c_str(), 16, 16, 1, px.data(), 16), 0);
  }
  std::vector<float> x(2 * 144), probs(2 * 5);
  for (int i = 0; i < 2; i++) ASSERT_EQ(cnn_image_load(pngs[i].c_str(), 12, 12, 1, x.data() + i * 144), CNN_OK);
  ASSERT_EQ(cnn_net_predict(net, x.data(), 2, probs.data()), CNN_OK) << cnn_last_error();
  cnn_net_destroy(net);
  cnn_backend_destroy(be);

  std::string out;
  ASSERT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + pngs[0] + "' '" + pngs[1] + "' --top 5", &out), 0) << out;
  for (int i = 0; i < 2; i++) {
    EXPECT_TRUE(has(out, pngs[i] + "\n")) << out;
    for (int j = 0; j < 5; j++) {  // every class with the library's probability, to the printed digits
      char line[128];
      snprintf(line, sizeof line, "  %d  %-20s %.4f\n", j, names[j], (double)probs[i * 5 + j]);
      EXPECT_TRUE(has(out, line)) << line << "in\n" << out;
    }
  }
  // the first image's most likely class is printed first
  int best = 0;
  for (int j = 1; j < 5; j++)
    if (probs[j] > probs[best]) best = j;
  char first[128];
  snprintf(first, sizeof first, "%s\n  %d  ", pngs[0].c_str(), best);
  EXPECT_TRUE(has(out, first)) << out;

  // usage errors: 2; a file that is not there: 1, naming it
  EXPECT_EQ(run("'" SAMPLE_PREDICT "'", &out), 2) << out;
  EXPECT_TRUE(has(out, "usage")) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + pngs[0] + "' --top 0", &out), 2) << out;
  EXPECT_TRUE(has(out, "--top")) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + pngs[0] + "' --colour", &out), 2) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + dir.file("none.safetensors") + "' '" + pngs[0] + "'", &out), 1) << out;
  EXPECT_TRUE(has(out, "none.safetensors")) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + dir.file("none.png") + "'", &out), 1) << out;
  EXPECT_TRUE(has(out, "none.png")) << out;
  EXPECT_EQ(run("'" SAMPLE_PREDICT "' '" + model + "' '" + pngs[0] + "' --device tpu", &out), 1) << out;
  EXPECT_TRUE(has(out, "tpu")) << out;
}

}  // namespace
