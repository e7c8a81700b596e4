// Graph rewrites that must not change results: a ReLU that feeds only a max-pool is applied after the pooling
// (core/net.c, relu_after_maxpool), and training then gives bit-identical weights to the same network with the ReLU
// as a layer of its own before the pool, which the rewrite leaves alone.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/net.h"
#include "core/rng.h"
}

namespace {

// conv with its ReLU fused, then max-pool (rewritten), and a batchnorm with ReLU before a pool with overlapping,
// padded windows (rewritten too)
const char *kFused =
    "input 12 12 1\n"
    "conv 8 3 relu padding=same\n"
    "maxpool 2\n"
    "conv 8 3 bias=no\n"
    "batchnorm relu\n"
    "maxpool 3 2 padding=1\n"
    "flatten\n"
    "dense 4 softmax\n";
// the same network with each ReLU as a layer of its own: weights are created in the same order and shapes, and
// the first convolution is told to use He initialization (init=he) as its fused ReLU gives it in kFused, so the two
// start from the same weights
const char *kSeparate =
    "input 12 12 1\n"
    "conv 8 3 padding=same init=he\n"
    "relu\n"
    "maxpool 2\n"
    "conv 8 3 bias=no\n"
    "batchnorm\n"
    "relu\n"
    "maxpool 3 2 padding=1\n"
    "flatten\n"
    "dense 4 softmax\n";

std::vector<float> train_and_read(const char *text, int *pools_with_relu) {
  cnn_backend *b = nullptr;
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_backend_create("cpu", &b), CNN_OK);
  EXPECT_EQ(cnn_net_from_text(text, "fusion", b, 5, &net), CNN_OK) << cnn_last_error();
  std::vector<float> out;
  if (!net) return out;
  *pools_with_relu = 0;
  for (int i = 0; i < net->nlayers; i++)
    *pools_with_relu += net->layers[i]->ops == &cnn_maxpool_layer_ops && net->layers[i]->act == CNN_ACT_RELU;
  const int n = 128;
  std::vector<float> images((size_t)n * 144);
  std::vector<int32_t> labels(n);
  cnn_rng r;
  cnn_rng_seed(&r, 9);
  for (float &v : images) v = cnn_rng_uniform(&r) - 0.5f;
  for (int32_t &l : labels) l = (int32_t)cnn_rng_below(&r, 4);
  cnn_dataset ds{};
  ds.n = n;
  ds.h = ds.w = 12;
  ds.c = 1;
  ds.images = images.data();
  ds.labels = labels.data();
  ds.num_classes = 4;
  cnn_train_config c;
  cnn_train_config_defaults(&c);
  c.epochs = 2;
  c.batch_size = 32;
  c.lr = 1e-2f;
  c.progress = nullptr;
  EXPECT_EQ(cnn_train(net, &ds, nullptr, &c, nullptr), CNN_OK) << cnn_last_error();
  for (int i = 0; i < net->nlayers; i++)
    for (int p = 0; p < net->layers[i]->nparams; p++) {
      cnn_tensor *t = net->layers[i]->params[p].value;
      std::vector<float> v(cnn_tensor_numel(t));
      EXPECT_EQ(cnn_tensor_read(t, v.data(), v.size() * 4), CNN_OK);
      out.insert(out.end(), v.begin(), v.end());
    }
  std::vector<float> probs((size_t)n * 4);
  EXPECT_EQ(cnn_net_predict(net, images.data(), n, probs.data()), CNN_OK);
  out.insert(out.end(), probs.begin(), probs.end());
  cnn_net_destroy(net);
  cnn_backend_destroy(b);
  return out;
}

TEST(Fusion, ReluMovedAfterMaxPoolTrainsBitIdentically) {
  int fused_pools = 0, separate_pools = 0;
  std::vector<float> a = train_and_read(kFused, &fused_pools), b = train_and_read(kSeparate, &separate_pools);
  EXPECT_EQ(fused_pools, 2);    // both rewritten
  EXPECT_EQ(separate_pools, 0); // a ReLU layer is left where it is
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

}  // namespace
