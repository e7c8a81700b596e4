// Graph rewrites that must not change results: a ReLU that feeds only a max-pool is applied after the pooling
// (core/nn/net.c, relu_after_maxpool), and training then gives bit-identical weights to the same network with the ReLU
// as a layer of its own before the pool, which the rewrite leaves alone. Likewise a batchnorm followed by a residual
// add computes the add and its activation (fuse_batchnorm_add), against the same network with a dropout of rate 0
// (a copy) between the two, which keeps the rewrite from applying.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/nn/net.h"
#include "core/rng.h"
}
#include "tests/fixtures.h"

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

// The ends of residual blocks in every variant the rewrite takes: the residual is the network input (no gradient)
// and there is no activation; an identity block whose input also feeds the block's first convolution (gradients
// summed); a projection block, where the shortcut's batchnorm comes last and fuses; the batchnorm as the add's
// second input, without activation but with a gradient for the residual (it gets a copy).
const char *kResidualFused =
    "input 8 8 3\n"
    "conv 3 3 padding=same bias=no\n"
    "batchnorm\n"
    "add input\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm relu name=x\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm\n"
    "add x relu name=r1\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm name=main\n"
    "conv 8 1 bias=no from=r1\n"
    "batchnorm\n"
    "add main leaky_relu name=r2\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm name=b4\n"
    "add r2 b4\n"
    "globalavgpool\n"
    "dense 4 softmax\n";
const char *kResidualSeparate =
    "input 8 8 3\n"
    "conv 3 3 padding=same bias=no\n"
    "batchnorm\n"
    "dropout 0\n"
    "add input\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm relu name=x\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm\n"
    "dropout 0\n"
    "add x relu name=r1\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm name=main\n"
    "conv 8 1 bias=no from=r1\n"
    "batchnorm\n"
    "dropout 0\n"
    "add main leaky_relu name=r2\n"
    "conv 8 3 padding=same bias=no\n"
    "batchnorm\n"
    "dropout 0 name=b4\n"
    "add r2 b4\n"
    "globalavgpool\n"
    "dense 4 softmax\n";

struct Counts {
  int pools_with_relu = 0, fused_adds = 0;
};

// Trains the network of `text` for two epochs on random data (after freezing the layers up to `freeze`, when
// given) and returns its weights and its predictions.
std::vector<float> train_and_read(const char *text, int h, int c, Counts *counts, const char *freeze = nullptr) {
  cnn_backend *b = nullptr;
  cnn_net *net = nullptr;
  EXPECT_EQ(cnn_backend_create("cpu", &b), CNN_OK);
  EXPECT_EQ(cnn_net_from_text(text, "fusion", b, 5, &net), CNN_OK) << cnn_last_error();
  std::vector<float> out;
  if (!net) return out;
  if (freeze) {
    EXPECT_EQ(cnn_net_freeze(net, freeze, nullptr), CNN_OK) << cnn_last_error();
  }
  for (int i = 0; i < net->nlayers; i++) {
    const cnn_layer *l = net->layers[i];
    counts->pools_with_relu += l->ops == &cnn_maxpool_layer_ops && l->act == CNN_ACT_RELU;
    counts->fused_adds += l->ops == &cnn_add_layer_ops && cnn_layer_is_view(l);
  }
  const int n = 128;
  cnntest::HostDataset data(n, h, h, c, 4);
  cnn_rng r;
  cnn_rng_seed(&r, 9);
  for (float &v : data.images) v = cnn_rng_uniform(&r) - 0.5f;
  for (int32_t &l : data.labels) l = (int32_t)cnn_rng_below(&r, 4);
  cnn_train_config c = cnntest::quiet_train_config(2, 32);
  c.lr = 1e-2f;
  EXPECT_EQ(cnn_train(net, &data.ds, nullptr, &c, nullptr), CNN_OK) << cnn_last_error();
  for (int i = 0; i < net->nlayers; i++)
    for (int p = 0; p < net->layers[i]->nparams; p++) {
      cnn_tensor *t = net->layers[i]->params[p].value;
      std::vector<float> v(cnn_tensor_numel(t));
      EXPECT_EQ(cnn_tensor_read(t, v.data(), v.size() * 4), CNN_OK);
      out.insert(out.end(), v.begin(), v.end());
    }
  std::vector<float> probs((size_t)n * 4);
  EXPECT_EQ(cnn_net_predict(net, data.images.data(), n, probs.data()), CNN_OK);
  out.insert(out.end(), probs.begin(), probs.end());
  cnn_net_destroy(net);
  cnn_backend_destroy(b);
  return out;
}

TEST(Fusion, ReluMovedAfterMaxPoolTrainsBitIdentically) {
  Counts fused, separate;
  std::vector<float> a = train_and_read(kFused, 12, 1, &fused), b = train_and_read(kSeparate, 12, 1, &separate);
  EXPECT_EQ(fused.pools_with_relu, 2);    // both rewritten
  EXPECT_EQ(separate.pools_with_relu, 0); // a ReLU layer is left where it is
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

TEST(Fusion, BatchnormComputingTheResidualAddTrainsBitIdentically) {
  Counts fused, separate;
  std::vector<float> a = train_and_read(kResidualFused, 8, 3, &fused);
  std::vector<float> b = train_and_read(kResidualSeparate, 8, 3, &separate);
  EXPECT_EQ(fused.fused_adds, 4);    // every add rewritten
  EXPECT_EQ(separate.fused_adds, 0); // a layer between batchnorm and add keeps them apart
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

// Frozen batchnorms run in inference mode (running statistics) and fuse as well: the first two residual blocks
// frozen, the rest trained, the same bits as without the rewrite.
TEST(Fusion, FrozenBatchnormComputingTheResidualAddTrainsBitIdentically) {
  Counts fused, separate;
  std::vector<float> a = train_and_read(kResidualFused, 8, 3, &fused, "r1");
  std::vector<float> b = train_and_read(kResidualSeparate, 8, 3, &separate, "r1");
  Counts unfrozen_counts;
  std::vector<float> unfrozen = train_and_read(kResidualFused, 8, 3, &unfrozen_counts);
  EXPECT_EQ(fused.fused_adds, 4);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
  ASSERT_EQ(a.size(), unfrozen.size());
  EXPECT_NE(std::memcmp(a.data(), unfrozen.data(), a.size() * sizeof(float)), 0) << "freezing changed nothing";
}

// The rewrite leaves alone: a batchnorm with its own activation, one whose output has another consumer, and an add
// whose activation needs its input (GELU).
TEST(Fusion, BatchnormAndAddStayApartWhereTheRewriteDoesNotHold) {
  const char *texts[] = {
      "input 4 4 2\nconv 2 1\nbatchnorm relu\nadd input relu\nflatten\ndense 2\n",
      "input 4 4 2\nconv 2 1\nbatchnorm name=b\nadd input relu name=s\nadd b s\nflatten\ndense 2\n",
      "input 4 4 2\nconv 2 1\nbatchnorm\nadd input gelu\nflatten\ndense 2\n",
  };
  cnn_backend *b = nullptr;
  ASSERT_EQ(cnn_backend_create("cpu", &b), CNN_OK);
  for (const char *text : texts) {
    SCOPED_TRACE(text);
    cnn_net *net = nullptr;
    ASSERT_EQ(cnn_net_from_text(text, "apart", b, 1, &net), CNN_OK) << cnn_last_error();
    for (int i = 0; i < net->nlayers; i++) EXPECT_FALSE(net->layers[i]->fused) << net->layers[i]->name;
    cnn_net_destroy(net);
  }
  cnn_backend_destroy(b);
}

}  // namespace
