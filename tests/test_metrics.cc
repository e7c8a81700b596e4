// The metrics people read (cnn_metrics_compute, cnn eval --top-k --plots): ROC AUC, expected calibration error,
// top-k accuracy and weighted averages against values computed by hand; the pictures.
#include <gtest/gtest.h>
#include <stb_image.h>

#include <cmath>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using cnntest::has;

// Six samples of three classes with probabilities in eighths (exact in float, so that no bin edge is in doubt).
const std::vector<float> kProbs = {
    0.75f,  0.125f, 0.125f,  // label 0: predicted 0, confidence 0.75
    0.25f,  0.5f,   0.25f,   // label 1: predicted 1, 0.5
    0.125f, 0.25f,  0.625f,  // label 1: predicted 2, 0.625
    0.375f, 0.375f, 0.25f,   // label 0: a tie, the first class wins: predicted 0, 0.375
    0.25f,  0.25f,  0.5f,    // label 2: predicted 2, 0.5
    0.625f, 0.125f, 0.25f,   // label 2: predicted 0, 0.625
};
const std::vector<int32_t> kLabels = {0, 1, 1, 0, 2, 2};

TEST(Metrics, RocAucPerClassMatchesHandCountedPairs) {
  cnn_metrics *m = nullptr;
  ASSERT_EQ(cnn_metrics_compute(kProbs.data(), nullptr, kLabels.data(), 6, 3, nullptr, &m), CNN_OK) << cnn_last_error();
  // class 0: positives 0.75, 0.375 against negatives 0.25, 0.125, 0.25, 0.625: 4 + 3 of 8 pairs
  EXPECT_DOUBLE_EQ(m->auc[0], 7.0 / 8.0);
  // class 1: positives 0.5, 0.25 against 0.125, 0.375, 0.25, 0.125: 4 + (2 + a tie's half) of 8
  EXPECT_DOUBLE_EQ(m->auc[1], 6.5 / 8.0);
  // class 2: positives 0.5, 0.25 against 0.125, 0.25, 0.625, 0.25: 3 + (1 + two ties' halves) of 8
  EXPECT_DOUBLE_EQ(m->auc[2], 5.0 / 8.0);
  EXPECT_DOUBLE_EQ(m->macro_auc, (7.0 + 6.5 + 5.0) / 24.0);
  cnn_metrics_destroy(m);
}

TEST(Metrics, ExpectedCalibrationErrorMatchesHandComputedBins) {
  cnn_metrics_options opt = {.top_k = 2, .ece_bins = 4};
  cnn_metrics *m = nullptr;
  ASSERT_EQ(cnn_metrics_compute(kProbs.data(), nullptr, kLabels.data(), 6, 3, &opt, &m), CNN_OK) << cnn_last_error();
  ASSERT_EQ(m->ece_bins, 4);
  // bin (0.25, 0.5]: confidences 0.5, 0.375, 0.5, all right; bin (0.5, 0.75]: 0.75 right, 0.625 and 0.625 wrong
  EXPECT_EQ(m->bin_count[0], 0);
  EXPECT_EQ(m->bin_count[1], 3);
  EXPECT_EQ(m->bin_count[2], 3);
  EXPECT_EQ(m->bin_count[3], 0);
  EXPECT_DOUBLE_EQ(m->bin_accuracy[1], 1.0);
  EXPECT_DOUBLE_EQ(m->bin_confidence[1], 1.375 / 3.0);
  EXPECT_DOUBLE_EQ(m->bin_accuracy[2], 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(m->bin_confidence[2], 2.0 / 3.0);
  // 3/6 |1 - 1.375/3| + 3/6 |1/3 - 2/3| = 0.2708333 + 0.1666667
  EXPECT_NEAR(m->ece, 0.4375, 1e-12);
  EXPECT_DOUBLE_EQ(m->accuracy, 4.0 / 6.0);
  // top-2: the label of every sample is among its two most probable classes
  EXPECT_EQ(m->top_k, 2);
  EXPECT_DOUBLE_EQ(m->top_k_accuracy, 1.0);
  cnn_metrics_destroy(m);
  opt.top_k = 1;  // top-1 is the accuracy (ties counted for the label, as the argmax takes the first)
  ASSERT_EQ(cnn_metrics_compute(kProbs.data(), nullptr, kLabels.data(), 6, 3, &opt, &m), CNN_OK);
  EXPECT_DOUBLE_EQ(m->top_k_accuracy, 4.0 / 6.0);
  cnn_metrics_destroy(m);
}

// Two classes with supports 2 and 1: weighted averages differ from macro ones.
TEST(Metrics, WeightedAveragesWeighByTheSupport) {
  const std::vector<float> p = {0.75f, 0.25f, 0.25f, 0.75f, 0.25f, 0.75f};
  const std::vector<int32_t> y = {0, 0, 1};
  cnn_metrics *m = nullptr;
  ASSERT_EQ(cnn_metrics_compute(p.data(), nullptr, y.data(), 3, 2, nullptr, &m), CNN_OK) << cnn_last_error();
  EXPECT_EQ(m->top_k, 2) << "the default 5 is capped at the classes";
  EXPECT_DOUBLE_EQ(m->precision[0], 1.0);
  EXPECT_DOUBLE_EQ(m->precision[1], 0.5);
  EXPECT_DOUBLE_EQ(m->recall[0], 0.5);
  EXPECT_DOUBLE_EQ(m->recall[1], 1.0);
  EXPECT_DOUBLE_EQ(m->macro_precision, 0.75);
  EXPECT_DOUBLE_EQ(m->weighted_precision, 2.0 / 3.0 + 0.5 / 3.0);
  EXPECT_DOUBLE_EQ(m->weighted_recall, 2.0 / 3.0);
  EXPECT_NEAR(m->weighted_f1, 2.0 / 3.0, 1e-12);
  EXPECT_NEAR(m->loss, (2 * -std::log(0.75) - std::log(0.25)) / 3.0, 1e-7);
  EXPECT_EQ(m->confusion[1], 1);  // true 0 predicted 1
  cnn_metrics_destroy(m);
}

TEST(Metrics, UndefinedAucsAndBadInputsAreReported) {
  const std::vector<float> p = {0.75f, 0.25f, 0.5f, 0.5f};
  const std::vector<int32_t> y = {0, 0};
  cnn_metrics *m = nullptr;
  ASSERT_EQ(cnn_metrics_compute(p.data(), nullptr, y.data(), 2, 2, nullptr, &m), CNN_OK);
  EXPECT_TRUE(std::isnan(m->auc[0])) << "no negative sample";
  EXPECT_TRUE(std::isnan(m->auc[1])) << "no positive sample";
  EXPECT_TRUE(std::isnan(m->macro_auc));
  cnn_metrics_destroy(m);
  const std::vector<int32_t> bad = {0, 2};
  EXPECT_EQ(cnn_metrics_compute(p.data(), nullptr, bad.data(), 2, 2, nullptr, &m), CNN_ERR_INVALID_ARG);
  EXPECT_TRUE(has(cnn_last_error(), "sample 1 has label 2")) << cnn_last_error();
}

TEST(Metrics, PlotsAreWrittenAsPngs) {
  cnntest::TempDir dir;
  cnn_metrics *m = nullptr;
  ASSERT_EQ(cnn_metrics_compute(kProbs.data(), nullptr, kLabels.data(), 6, 3, nullptr, &m), CNN_OK);
  ASSERT_EQ(cnn_metrics_plot_confusion(m, nullptr, dir.file("c.png").c_str()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_metrics_plot_reliability(m, dir.file("r.png").c_str()), CNN_OK) << cnn_last_error();
  for (const char *f : {"c.png", "r.png"}) {
    int w, h, c;
    unsigned char *px = stbi_load(dir.file(f).c_str(), &w, &h, &c, 3);
    ASSERT_NE(px, nullptr) << f;
    int colored = 0;
    for (int i = 0; i < w * h; i++) colored += px[3 * i] != px[3 * i + 2];
    EXPECT_GT(colored, 100) << f << ": shaded cells or bars";
    stbi_image_free(px);
  }
  cnn_metrics_destroy(m);
}

// cnn eval on a small IDX set: the table shows the weighted averages, AUCs, top-k and ECE; --plots writes both
// pictures; --metrics-json has the new fields.
TEST(Metrics, EvalPrintsWritesAndPlotsThem) {
  cnntest::TempDir dir;
  auto be32 = [](std::string *s, uint32_t v) {
    for (int i = 3; i >= 0; i--) s->push_back((char)((v >> (8 * i)) & 0xff));
  };
  for (const char *prefix : {"train", "t10k"}) {
    std::string img, lab;
    be32(&img, 0x803), be32(&img, 40), be32(&img, 6), be32(&img, 6);
    for (int i = 0; i < 40 * 36; i++) img.push_back((char)((i * 37) % 256));
    be32(&lab, 0x801), be32(&lab, 40);
    for (int i = 0; i < 40; i++) lab.push_back((char)(i % 3));
    cnntest::write_file(dir.file(std::string(prefix) + "-images-idx3-ubyte"), img);
    cnntest::write_file(dir.file(std::string(prefix) + "-labels-idx1-ubyte"), lab);
  }
  cnn_backend *b = nullptr;
  ASSERT_EQ(cnn_backend_create("cpu", &b), CNN_OK);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 6 6 1\nconv 2 3 relu\nflatten\ndense 3\n", "m", b, 1, &net), CNN_OK);
  ASSERT_EQ(cnn_net_save(net, dir.file("m.safetensors").c_str()), CNN_OK);
  cnn_net_destroy(net);
  cnn_backend_destroy(b);
  std::string log;
  ASSERT_EQ(cnntest::run_cnn({"eval", "--model", dir.file("m.safetensors"), "--data", "mnist:" + dir.path(),
                              "--top-k", "2", "--plots", dir.file("plots"), "--metrics-json", dir.file("m.json"),
                              "--device", "cpu"},
                             &log),
            0)
      << log;
  cnntest::expect_contains_all(log,
                               {"weighted avg", "roc auc", "top-2 accuracy: ", "expected calibration error (15 bins)"});
  std::string json = cnntest::read_file(dir.file("m.json"));
  for (const char *field : {"\"weighted_f1\": ", "\"top_k\": 2", "\"macro_auc\": ", "\"ece\": ", "\"reliability\": [",
                            "\"roc_auc\": "})
    EXPECT_TRUE(has(json, field)) << field << " in " << json;
  for (const char *f : {"plots/confusion_matrix.png", "plots/reliability.png"}) {
    int w, h, c;
    unsigned char *px = stbi_load(dir.file(f).c_str(), &w, &h, &c, 3);
    EXPECT_NE(px, nullptr) << f;
    stbi_image_free(px);
  }
  EXPECT_EQ(cnntest::run_cnn({"eval", "--model", dir.file("m.safetensors"), "--data", "mnist:" + dir.path(), "--top-k",
                              "0"},
                             &log),
            2);
  EXPECT_TRUE(has(log, "--top-k")) << log;
}

}  // namespace
