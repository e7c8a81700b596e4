// The model definition text, the network it builds, summary, and model files.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/io/safetensors.h"
#include "core/nn/net.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using Backend = cnntest::CpuBackend;

std::string seed_path() { return std::string(CNN_SOURCE_DIR) + "/samples/models/seed_cnn.cnn"; }

std::string summary_of(cnn_net *net) {
  char *buf = nullptr;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  cnn_net_summary(net, f);
  fclose(f);
  std::string s(buf, len);
  free(buf);
  return s;
}

TEST(ModelText, SeedCnnHasKerasShapesAndParameterCount) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_file(seed_path().c_str(), be.b, 1, &net), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_param_count(net), 163850);
  EXPECT_EQ(cnn_net_num_outputs(net), 10);
  std::string s = summary_of(net);
  for (const char *want : {"conv2d (Conv2D)", "(None, 26, 26, 32)", "max_pooling2d (MaxPooling2D)", "(None, 13, 13, 32)",
                           "conv2d_1 (Conv2D)", "(None, 11, 11, 64)", "(None, 5, 5, 64)", "(None, 3, 3, 128)",
                           "(None, 1, 1, 128)", "flatten (Flatten)", "(None, 128)", "dense (Dense)", "(None, 512)",
                           "dense_1 (Dense)", "(None, 10)", "Total params: 163850", "66048", "5130"})
    EXPECT_NE(s.find(want), std::string::npos) << "missing '" << want << "' in\n" << s;
  cnn_net_destroy(net);
}

TEST(ModelText, SamePaddingStridesOptionsAndNames) {
  Backend be;
  const char *text =
      "input 9 7 3   # comment\n"
      "\n"
      "conv 4 3x5 relu stride=2 padding=same bias=no name=stem\n"
      "avgpool 2 1 padding=same\n"
      "maxpool 3x2 stride=2x1\n"
      "flatten\n"
      "dense 6 linear\n"
      "dense 2 softmax\n";
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "t.cnn", be.b, 1, &net), CNN_OK) << cnn_last_error();
  ASSERT_EQ(net->nlayers, 6);
  EXPECT_STREQ(net->layers[0]->name, "stem");
  // same padding, stride 2: ceil(9/2)=5, ceil(7/2)=4
  EXPECT_EQ(net->layers[0]->out.d[0], 5);
  EXPECT_EQ(net->layers[0]->out.d[1], 4);
  EXPECT_EQ(net->layers[0]->nparams, 1);  // bias=no
  EXPECT_EQ(net->layers[1]->out.d[0], 5);  // same padding, stride 1
  EXPECT_EQ(net->layers[2]->out.d[0], 2);  // (5-3)/2+1
  EXPECT_EQ(net->layers[2]->out.d[1], 3);  // (4-2)/1+1
  EXPECT_EQ(net->layers[3]->out.d[0], 2 * 3 * 4);
  EXPECT_TRUE(net->output_softmax);
  EXPECT_EQ(cnn_net_param_count(net), 4 * 3 * 5 * 3 + (24 * 6 + 6) + (6 * 2 + 2));
  cnn_net_destroy(net);
}

struct BadCase {
  const char *text;
  const char *message;  // a part of the expected message
};

TEST(ModelText, MalformedDefinitionsNameTheLineAndProblem) {
  Backend be;
  const BadCase cases[] = {
      {"", "no 'input"},
      {"conv 3 3\n", "t.cnn:1: conv: the first line must be 'input"},
      {"input 28 28\n", "t.cnn:1: input: expected 'input HEIGHT WIDTH CHANNELS'"},
      {"input 28 x 1\n", "'x' is not a size"},
      {"input 28 28 1\ninput 28 28 1\n", "t.cnn:2: input: the input is already defined"},
      {"input 28 28 1\n", "no layers"},
      {"input 28 28 1\nconvv 3 3\n", "t.cnn:2: convv: unknown layer type 'convv'"},
      {"input 28 28 1\nconv abc 3\n", "t.cnn:2: conv: filters: 'abc' is not an integer"},
      {"input 28 28 1\nconv 0 3\n", "filters: '0'"},
      {"input 28 28 1\nconv 8 3x\n", "kernel: '3x'"},
      {"input 28 28 1\nconv 8 3 swish\n", "unknown activation 'swish'"},
      {"input 28 28 1\nconv 8 3 stride=0\n", "stride must be"},
      {"input 28 28 1\nconv 8 3 padding=full\n", "padding must be 'valid', 'same', N or T,L,B,R"},
      {"input 28 28 1\nconv 8 3 color=red\n", "unknown option 'color'"},
      {"input 28 28 1\nconv 8 3 init=zeros\n", "init must be 'he' or 'glorot', got 'zeros'"},
      {"input 28 28 1\nmaxpool 2 init=he\n", "unknown option 'init'"},
      // an activation may follow the options (test_graph.cc); nothing else may
      {"input 28 28 1\nconv 8 3 stride=2 3\n", "positional argument '3' after options"},
      {"input 28 28 1\nconv 8 3 name=a\nconv 8 3 name=a\n", "t.cnn:3: conv: layer name 'a' is already used on line 2"},
      {"input 28 28 1\nconv 8 99999999999\n", "kernel"},
      {"input 4 4 1\nconv 8 5\nflatten\ndense 2\n", "does not fit"},
      {"input 28 28 1\ndense 10\n", "dense needs a flat input"},
      {"input 28 28 1\nflatten\nconv 8 3\n", "conv needs an image input"},
      {"input 28 28 1\nflatten\ndense 10 softmax\ndense 3\n", "softmax (line 3) must be on the last layer"},
      {"input 28 28 1\nconv 8 3 softmax\nflatten\ndense 2\n", "softmax belongs on the last dense layer"},
      {"input 28 28 1\nconv 8 3\n", "must end in a flat layer"},
      {"input 28 28 1\nflatten x\ndense 2\n", "flatten takes no arguments"},
      {"input 28 28 1\nmaxpool 2 2 stride=2\nflatten\ndense 2\n", "the stride is given twice"},
  };
  for (const auto &c : cases) cnntest::expect_refused_definition(be.b, c.text, "t.cnn", c.message);
}

TEST(ModelText, MissingAndBinaryFilesAreRefused) {
  Backend be;
  cnntest::TempDir dir;
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_net_from_file(dir.file("nope.cnn").c_str(), be.b, 1, &net), CNN_ERR_IO);
  EXPECT_NE(std::string(cnn_last_error()).find("nope.cnn"), std::string::npos);
  cnntest::write_file(dir.file("bin.cnn"), std::string("input 28 28 1\0\x01\x02", 16));
  EXPECT_EQ(cnn_net_from_file(dir.file("bin.cnn").c_str(), be.b, 1, &net), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("binary"), std::string::npos);
}

std::vector<float> random_images(int n, int per, unsigned seed) {
  std::vector<float> v((size_t)n * per);
  for (auto &x : v) {
    seed = seed * 1664525u + 1013904223u;
    x = (float)(seed >> 8) / 16777216.0f;
  }
  return v;
}

// He normal has std sqrt(2 / fan_in); Glorot uniform is bounded by sqrt(6 / (fan_in + fan_out)).
TEST(ModelText, InitOptionChoosesTheWeightDistribution) {
  Backend be;
  cnn_net *net = nullptr;
  const char *text = "input 1 1 400\nflatten\ndense 400 relu\ndense 400 relu init=glorot\ndense 400 init=he\n";
  ASSERT_EQ(cnn_net_from_text(text, "init.cnn", be.b, 5, &net), CNN_OK) << cnn_last_error();
  double want_std[3] = {std::sqrt(2.0 / 400), std::sqrt(6.0 / 800) / std::sqrt(3.0), std::sqrt(2.0 / 400)};
  double want_max[3] = {1e9, std::sqrt(6.0 / 800), 1e9};
  for (int i = 0; i < 3; i++) {
    cnn_param *p = &net->layers[i + 1]->params[0];
    std::vector<float> w(400 * 400);
    ASSERT_EQ(cnn_tensor_read(p->value, w.data(), w.size() * 4), CNN_OK);
    double s2 = 0, mx = 0;
    for (float v : w) {
      s2 += (double)v * v;
      mx = std::fmax(mx, std::fabs(v));
    }
    EXPECT_NEAR(std::sqrt(s2 / w.size()), want_std[i], 0.02 * want_std[i]) << p->name;
    EXPECT_LE(mx, want_max[i]) << p->name;
    if (i != 1) {
      EXPECT_GT(mx, std::sqrt(6.0 / 800)) << p->name << ": a normal has tails beyond the uniform's bound";
    }
  }
  cnn_net_destroy(net);
}

TEST(ModelFile, SaveLoadRoundTripGivesIdenticalPredictionsAndMetadata) {
  Backend be;
  cnntest::TempDir dir;
  cnn_net *net = nullptr, *back = nullptr;
  ASSERT_EQ(cnn_net_from_file(seed_path().c_str(), be.b, 7, &net), CNN_OK) << cnn_last_error();
  std::vector<std::string> names = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"};
  std::vector<const char *> cnames;
  for (auto &s : names) cnames.push_back(s.c_str());
  ASSERT_EQ(cnn_net_set_class_names(net, 10, cnames.data()), CNN_OK);
  float mean = 0.25f, stdv = 0.5f;
  ASSERT_EQ(cnn_net_set_normalization(net, 1, &mean, &stdv), CNN_OK);
  int rh = 0, rw = 0;
  EXPECT_EQ(cnn_net_resize(net, &rh, &rw), 0);
  EXPECT_EQ(cnn_net_set_resize(net, 27, 32), CNN_ERR_INVALID_ARG);  // smaller than the 28x28 input
  EXPECT_NE(std::string(cnn_last_error()).find("28x28"), std::string::npos) << cnn_last_error();
  ASSERT_EQ(cnn_net_set_resize(net, 32, 30), CNN_OK) << cnn_last_error();
  std::string path = dir.file("m.safetensors");
  ASSERT_EQ(cnn_net_save(net, path.c_str()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_load(path.c_str(), be.b, &back), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_param_count(back), 163850);
  EXPECT_STREQ(cnn_net_class_name(back, 3), "three");
  float m2 = 0, s2 = 0;
  ASSERT_TRUE(cnn_net_normalization(back, &m2, &s2));
  EXPECT_EQ(m2, mean);
  EXPECT_EQ(s2, stdv);
  ASSERT_EQ(cnn_net_resize(back, &rh, &rw), 1);
  EXPECT_EQ(rh, 32);
  EXPECT_EQ(rw, 30);
  auto images = random_images(5, 28 * 28, 3);
  std::vector<float> p1(50), p2(50);
  ASSERT_EQ(cnn_net_predict(net, images.data(), 5, p1.data()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_predict(back, images.data(), 5, p2.data()), CNN_OK) << cnn_last_error();
  for (int i = 0; i < 50; i++) EXPECT_EQ(p1[i], p2[i]) << i;
  for (int i = 0; i < 5; i++) {
    double sum = 0;
    for (int j = 0; j < 10; j++) sum += p1[i * 10 + j];
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
  cnn_net_destroy(net);
  cnn_net_destroy(back);
}

TEST(ModelFile, ForeignOrMismatchedFilesAreRefused) {
  Backend be;
  cnntest::TempDir dir;
  cnn_net *net = nullptr;
  // a safetensors file that is not a cnn.c model
  float w[4] = {1, 2, 3, 4};
  int64_t shape[1] = {4};
  cnn_st_entry e = {"x", CNN_F32, 1, shape, w};
  std::string foreign = dir.file("foreign.safetensors");
  ASSERT_EQ(cnn_st_write(foreign.c_str(), &e, 1, nullptr, nullptr, 0), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_load(foreign.c_str(), be.b, &net), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("not a cnn.c model"), std::string::npos) << cnn_last_error();
  // a model whose tensor has the wrong shape for its definition
  const char *keys[] = {"format", "definition"};
  const char *vals[] = {"cnn.c model", "input 2 2 1\nflatten\ndense 3\n"};
  int64_t wshape[2] = {3, 5};
  std::vector<float> zeros(15);
  int64_t bshape[1] = {3};
  cnn_st_entry two[2] = {{"dense.weight", CNN_F32, 2, wshape, zeros.data()}, {"dense.bias", CNN_F32, 1, bshape, zeros.data()}};
  std::string bad = dir.file("bad.safetensors");
  ASSERT_EQ(cnn_st_write(bad.c_str(), two, 2, keys, vals, 2), CNN_OK) << cnn_last_error();
  EXPECT_EQ(cnn_net_load(bad.c_str(), be.b, &net), CNN_ERR_SHAPE);
  EXPECT_NE(std::string(cnn_last_error()).find("dense.weight"), std::string::npos) << cnn_last_error();
  // a tensor missing
  ASSERT_EQ(cnn_st_write(bad.c_str(), two + 1, 1, keys, vals, 2), CNN_OK);
  EXPECT_EQ(cnn_net_load(bad.c_str(), be.b, &net), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("'dense.weight' is missing"), std::string::npos) << cnn_last_error();
  // a bad definition inside the file names the file
  const char *vals2[] = {"cnn.c model", "input 2 2 1\nwhat\n"};
  ASSERT_EQ(cnn_st_write(bad.c_str(), two, 2, keys, vals2, 2), CNN_OK);
  EXPECT_EQ(cnn_net_load(bad.c_str(), be.b, &net), CNN_ERR_FORMAT);
  EXPECT_NE(std::string(cnn_last_error()).find("bad.safetensors (definition):2"), std::string::npos) << cnn_last_error();
  EXPECT_EQ(net, nullptr);
  // a malformed or impossible stored resize names the field
  const char *rkeys[] = {"format", "definition", "resize"};
  for (const char *resize : {"12", "12x12x3", "1x1", "axb"}) {
    const char *rvals[] = {"cnn.c model", "input 2 3 1\nflatten\ndense 3\n", resize};
    int64_t w6[2] = {3, 6};
    std::vector<float> z(18);
    cnn_st_entry ok[2] = {{"dense.weight", CNN_F32, 2, w6, z.data()}, {"dense.bias", CNN_F32, 1, bshape, z.data()}};
    ASSERT_EQ(cnn_st_write(bad.c_str(), ok, 2, rkeys, rvals, 3), CNN_OK) << cnn_last_error();
    cnn_status st = cnn_net_load(bad.c_str(), be.b, &net);
    EXPECT_NE(st, CNN_OK) << resize;
    EXPECT_NE(std::string(cnn_last_error()).find("'resize'"), std::string::npos) << resize << ": " << cnn_last_error();
    EXPECT_EQ(net, nullptr);
  }
}

TEST(Argmax, TheFirstOfTheLargest) {
  const float v[] = {0.1f, 0.7f, 0.2f, 0.7f};
  EXPECT_EQ(cnn_argmax(v, 4), 1);  // ties: the first
  EXPECT_EQ(cnn_argmax(v, 1), 0);
  const float w[] = {-3.0f, -1.0f, -2.0f};
  EXPECT_EQ(cnn_argmax(w, 3), 1);
}

}  // namespace
