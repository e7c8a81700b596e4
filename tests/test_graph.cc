// The network graph and the layers of the complete op set: the model text (names, from=, add, concat, repeat),
// shapes and parameter counts (ResNets against torchvision), whole-network gradients against finite
// differences, model files with batchnorm state, optimizers, schedules and the loss options.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

extern "C" {
#include "cnn/cnn.h"
#include "core/nn/net.h"
#include "core/nn/optim.h"
#include "core/rng.h"
}
#include "tests/fixtures.h"
#include "tests/util.h"

namespace {

using Backend = cnntest::CpuBackend;

std::string model_path(const char *name) { return std::string(CNN_SOURCE_DIR) + "/samples/models/" + name; }

using cnntest::read_tensor;
using cnntest::write_tensor;
using cnntest::check_gradients;

std::string shape_of(const cnn_layer *l) {
  char buf[64];
  cnn_shape_format(&l->out, buf, sizeof buf);
  return buf;
}

cnn_layer *find_layer(cnn_net *net, const char *name) {
  for (int i = 0; i < net->nlayers; i++)
    if (!strcmp(net->layers[i]->name, name)) return net->layers[i];
  return nullptr;
}

// ---- parameter counts and shapes --------------------------------------------------------------------------

struct Count {
  const char *file;
  int64_t trainable;  // torchvision / the papers
};

TEST(GraphModels, ResNetParameterCountsMatchTorchvision) {
  Backend be;
  // torchvision.models.resnet18/34/50: 11,689,512 / 21,797,672 / 25,557,032; ResNet-20 (CIFAR): 0.27M
  const Count counts[] = {{"resnet18.cnn", 11689512}, {"resnet34.cnn", 21797672}, {"resnet50.cnn", 25557032},
                          {"resnet20_32.cnn", 272474}, {"resnet20_28.cnn", 272186}, {"seed_cnn_bn.cnn", 164074}};
  for (const auto &c : counts) {
    cnn_net *net = nullptr;
    ASSERT_EQ(cnn_net_from_file(model_path(c.file).c_str(), be.b, 1, &net), CNN_OK) << cnn_last_error();
    EXPECT_EQ(cnn_net_param_count(net), c.trainable) << c.file;
    // the running mean and variance: two per batchnorm channel, as many as gamma and beta
    int64_t bn = 0;
    for (int i = 0; i < net->nlayers; i++)
      if (net->layers[i]->ops == &cnn_batchnorm_layer_ops) bn += 2 * net->layers[i]->in.d[net->layers[i]->in.ndim - 1];
    EXPECT_EQ(cnn_net_state_count(net), bn) << c.file;
    cnn_net_destroy(net);
  }
}

TEST(GraphModels, SummaryShowsTrainableAndNonTrainableParameters) {
  std::string out;
  ASSERT_EQ(cnntest::run_cnn({"summary", model_path("resnet18.cnn")}, &out), 0) << out;
  for (const char *want : {"Trainable params: 11689512", "Non-trainable params: 9600", "Total params: 11699112",
                           "(None, 112, 112, 64)", "(None, 56, 56, 64)", "(None, 7, 7, 512)", "(None, 512)",
                           "(None, 1000)", "Connected to"})
    EXPECT_NE(out.find(want), std::string::npos) << want << "\n" << out;
  ASSERT_EQ(cnntest::run_cnn({"summary", model_path("resnet50.cnn")}, &out), 0) << out;
  EXPECT_NE(out.find("Trainable params: 25557032"), std::string::npos) << out;
  EXPECT_NE(out.find("(None, 7, 7, 2048)"), std::string::npos) << out;
}

TEST(GraphModels, ResNet20For28x28HasThePaperShapes) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_file(model_path("resnet20_28.cnn").c_str(), be.b, 1, &net), CNN_OK) << cnn_last_error();
  // stem (2 layers), stage 1 (3 blocks x 5), stages 2 and 3 (a projection block of 7, then 2 x 5), pool, dense
  ASSERT_EQ(net->nlayers, 2 + 15 + 17 + 17 + 2);
  for (int i = 0; i < net->nlayers; i++) {
    std::string want = i < 17 ? "(None, 28, 28, 16)" : i < 34 ? "(None, 14, 14, 32)" : i < 51 ? "(None, 7, 7, 64)"
                                                     : i == 51 ? "(None, 64)" : "(None, 10)";
    EXPECT_EQ(shape_of(net->layers[i]), want) << i << " " << net->layers[i]->name;
  }
  // 20 weighted layers: 19 3x3 convs and the dense (the 2 projection convs are not counted by the paper)
  int convs = 0, dense = 0, adds = 0;
  for (int i = 0; i < net->nlayers; i++) {
    convs += net->layers[i]->ops == &cnn_conv_layer_ops;
    dense += net->layers[i]->ops == &cnn_dense_layer_ops;
    adds += net->layers[i]->ops == &cnn_add_layer_ops;
  }
  EXPECT_EQ(convs, 19 + 2);
  EXPECT_EQ(dense, 1);
  EXPECT_EQ(adds, 9);
  // the first stage's adds take the block input: the stem's batchnorm, then the previous add
  cnn_layer *add0 = find_layer(net, "add"), *add1 = find_layer(net, "add_1");
  ASSERT_TRUE(add0 && add1);
  EXPECT_EQ(add0->ninputs, 2);
  EXPECT_STREQ(net->layers[add0->inputs[1]]->name, "batch_normalization");
  EXPECT_STREQ(net->layers[add1->inputs[1]]->name, "add");
  EXPECT_TRUE(net->output_softmax);
  cnn_net_destroy(net);
}

TEST(GraphText, ConvAndPoolOptionsGiveTheirShapes) {
  Backend be;
  const char *text =
      "input 16 16 8\n"
      "conv 8 3 dilation=2 padding=same name=dil\n"          // effective 5x5: same keeps 16
      "conv 16 3 groups=8 padding=1 bias=no name=depthwise\n" // 16 x 3 x 3 x 1
      "conv 4 3 padding=0,1,2,3 name=explicit\n"              // (16+0+2-3)+1=16, (16+1+3-3)+1=18
      "maxpool 3 2 padding=1 name=mp\n"                       // (16+2-3)/2+1=8, (18+2-3)/2+1=9
      "avgpool 2 padding=same\n"
      "conv 6 1 gelu\n"
      "batchnorm silu momentum=0.01 eps=0.001\n"
      "leaky_relu 0.2\n"
      "elu\n"
      "globalavgpool\n"
      "dropout 0.5\n"
      "dense 3 tanh\n"
      "sigmoid\n"
      "dense 2\n"
      "softmax\n";
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "opts.cnn", be.b, 1, &net), CNN_OK) << cnn_last_error();
  EXPECT_EQ(shape_of(find_layer(net, "dil")), "(None, 16, 16, 8)");
  EXPECT_EQ(shape_of(find_layer(net, "depthwise")), "(None, 16, 16, 16)");
  EXPECT_EQ(cnn_tensor_numel(find_layer(net, "depthwise")->params[0].value), 16 * 3 * 3 * 1);
  EXPECT_EQ(find_layer(net, "depthwise")->nparams, 1);
  EXPECT_EQ(shape_of(find_layer(net, "explicit")), "(None, 16, 18, 4)");
  EXPECT_EQ(shape_of(find_layer(net, "mp")), "(None, 8, 9, 4)");
  EXPECT_EQ(shape_of(find_layer(net, "global_average_pooling2d")), "(None, 6)");
  cnn_layer *bn = find_layer(net, "batch_normalization");
  ASSERT_TRUE(bn);
  EXPECT_EQ(bn->act, CNN_ACT_SILU);
  EXPECT_FLOAT_EQ(((cnn_batchnorm_layer *)bn)->momentum, 0.01f);
  EXPECT_FLOAT_EQ(find_layer(net, "activation")->act_alpha, 0.2f);
  EXPECT_EQ(find_layer(net, "activation_1")->act, CNN_ACT_ELU);
  EXPECT_FLOAT_EQ(find_layer(net, "activation_1")->act_alpha, 1.0f);
  EXPECT_TRUE(net->output_softmax);
  EXPECT_EQ(cnn_net_num_outputs(net), 2);
  cnn_net_destroy(net);
}

// What issue #14 met: `linear` as a layer of its own (the identity, as the README lists it among the activations),
// global max pooling, and an activation written after a line's options.
TEST(GraphText, LinearGlobalMaxPoolAndActivationsAfterOptions) {
  Backend be;
  const char *text =
      "input 6 5 3\n"
      "conv 4 3 stride=1 padding=same relu name=c\n"
      "conv 4 3 padding=same name=c2 leaky_relu alpha=0.2\n"
      "globalmaxpool name=g\n"
      "linear\n"
      "dense 4 bias=no tanh\n"
      "add activation linear\n"
      "dense 2\n";
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "lin.cnn", be.b, 1, &net), CNN_OK) << cnn_last_error();
  EXPECT_EQ(find_layer(net, "c")->act, CNN_ACT_RELU);
  EXPECT_EQ(find_layer(net, "c2")->act, CNN_ACT_LEAKY_RELU);
  EXPECT_FLOAT_EQ(find_layer(net, "c2")->act_alpha, 0.2f);
  cnn_layer *g = find_layer(net, "g");
  ASSERT_TRUE(g);
  EXPECT_EQ(g->ops, &cnn_globalmaxpool_layer_ops);
  EXPECT_STREQ(g->ops->type_name, "GlobalMaxPooling2D");
  EXPECT_EQ(shape_of(g), "(None, 4)");
  cnn_layer *lin = find_layer(net, "activation");
  ASSERT_TRUE(lin);
  EXPECT_EQ(lin->ops, &cnn_act_layer_ops);
  EXPECT_EQ(lin->act, CNN_ACT_NONE);
  EXPECT_EQ(find_layer(net, "dense")->act, CNN_ACT_TANH);
  EXPECT_EQ(find_layer(net, "add")->act, CNN_ACT_NONE);
  cnn_net_destroy(net);

  // global max pooling is the max over height and width, per channel and image; linear passes it on unchanged
  const char *pool_only = "input 3 4 2\nglobalmaxpool\nlinear\n";
  ASSERT_EQ(cnn_net_from_text(pool_only, "pool.cnn", be.b, 1, &net), CNN_OK) << cnn_last_error();
  std::vector<float> images(2 * 3 * 4 * 2);
  for (size_t i = 0; i < images.size(); i++) images[i] = (float)((i * 37) % 23) - 11.0f;
  std::vector<int32_t> labels = {0, 1};
  cnn_dataset ds{};
  ds.n = 2, ds.h = 3, ds.w = 4, ds.c = 2, ds.images = images.data(), ds.labels = labels.data(), ds.num_classes = 2;
  ASSERT_EQ(cnn_net_stage_batch(net, &ds, nullptr, 0, 2), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_forward(net, 0), CNN_OK) << cnn_last_error();
  std::vector<float> y = read_tensor(net->acts[net->nlayers - 1]);
  ASSERT_EQ(y.size(), 4u);
  for (int n = 0; n < 2; n++)
    for (int c = 0; c < 2; c++) {
      float m = -1e30f;
      for (int hw = 0; hw < 12; hw++) m = std::max(m, images[(size_t)(n * 12 + hw) * 2 + c]);
      EXPECT_EQ(y[n * 2 + c], m) << "image " << n << ", channel " << c;
    }
  cnn_net_destroy(net);
}

TEST(GraphText, RepeatSuffixesNamesAndResolvesReferencesPerIteration) {
  Backend be;
  const char *text =
      "input 8 8 4\n"
      "repeat 2 name=x\n"
      "  conv 4 3 padding=same name=a\n"
      "  repeat 2\n"
      "    conv 4 1 name=b\n"
      "  end\n"
      "  add x relu name=sum\n"
      "end\n"
      "name trunk\n"
      "conv 2 1 name=left\n"
      "conv 3 1 from=trunk name=right\n"
      "concat left right\n"
      "flatten\n"
      "dense 2\n";
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "rep.cnn", be.b, 1, &net), CNN_OK) << cnn_last_error();
  std::vector<std::string> names;
  for (int i = 0; i < net->nlayers; i++) names.push_back(net->layers[i]->name);
  std::vector<std::string> want = {"a_1", "b_1_1", "b_1_2", "sum_1", "a_2", "b_2_1", "b_2_2", "sum_2",
                                   "left", "right", "concatenate", "flatten", "dense"};
  EXPECT_EQ(names, want);
  // sum_1 adds the network input; sum_2 adds sum_1 (the output entering iteration 2)
  EXPECT_EQ(net->layers[3]->inputs[0], 2);
  EXPECT_EQ(net->layers[3]->inputs[1], -1);
  EXPECT_EQ(net->layers[7]->inputs[1], 3);
  EXPECT_EQ(net->layers[9]->inputs[0], 7);  // from=trunk
  EXPECT_EQ(shape_of(net->layers[10]), "(None, 8, 8, 5)");
  EXPECT_EQ(net->layers[10]->inputs[0], 8);
  EXPECT_EQ(net->layers[10]->inputs[1], 9);
  EXPECT_EQ(net->layers[8]->line, 10);  // lines stay those of the text
  EXPECT_EQ(net->layers[5]->line, 5);
  cnn_net_destroy(net);
}

struct BadCase {
  const char *text;
  const char *message;
};

TEST(GraphText, MalformedGraphDefinitionsNameTheLineAndProblem) {
  Backend be;
  const BadCase cases[] = {
      {"input 8 8 1\nconv 4 3\nadd nope\nflatten\ndense 2\n", "g.cnn:3: add: no layer named 'nope'"},
      {"input 8 8 1\nconv 4 3 from=zzz\nflatten\ndense 2\n", "g.cnn:2: conv: no layer named 'zzz'"},
      {"input 8 8 1\nconv 4 3 name=a\nconv 5 1\nadd a\nflatten\ndense 2\n", "g.cnn: line 4: add needs equal shapes"},
      {"input 8 8 1\nconv 4 3 name=a\nconv 4 1 from=input name=b\nconcat a b\nflatten\ndense 2\n",
       "line 4: concat needs shapes that differ only in channels"},
      {"input 8 8 1\nconcat input\nflatten\ndense 2\n", "g.cnn:2: concat: expected 'concat NAME NAME"},
      {"input 8 8 1\nadd\nflatten\ndense 2\n", "g.cnn:2: add: expected 'add NAME [NAME] [ACTIVATION]'"},
      {"input 8 8 1\nrepeat 2\nconv 1 1\n", "g.cnn:2: repeat: this 'repeat' has no 'end'"},
      {"input 8 8 1\nconv 1 1\nend\n", "g.cnn:3: end: 'end' without a 'repeat'"},
      {"input 8 8 1\nrepeat 0\nend\n", "g.cnn:2: repeat: expected 'repeat COUNT [name=NAME]'"},
      {"input 8 8 1\nrepeat 2 3\nend\n", "g.cnn:2: repeat: expected 'repeat COUNT"},
      {"input 8 8 1\nflatten\ndropout 1.5\ndense 2\n", "g.cnn:3: dropout: rate: '1.5' is not a number in [0, 1)"},
      {"input 8 8 1\nflatten\ndropout\ndense 2\n", "g.cnn:3: dropout: expected 'dropout RATE'"},
      {"input 8 8 1\nconv 4 3 name=a\nconv 4 3 from=input\nflatten\ndense 2\n",
       "g.cnn:2: the output of layer 'a' is never used"},
      {"input 8 8 1\nbatchnorm swish\nflatten\ndense 2\n", "g.cnn:2: batchnorm: unknown activation 'swish'"},
      {"input 8 8 1\nbatchnorm momentum=2\nflatten\ndense 2\n", "momentum must be in [0, 1]"},
      {"input 8 8 1\nconv 4 3 padding=1,2\nflatten\ndense 2\n", "padding must be 'valid', 'same', N or T,L,B,R"},
      {"input 8 8 3\nconv 4 3 groups=2\nflatten\ndense 2\n", "line 2: conv groups=2 must divide the 3 input channels"},
      {"input 8 8 1\nconv 4 3 name=relu\nflatten\ndense 2\n", "name 'relu' must start with a letter"},
      {"input 8 8 1\nconv 4 3 name=input\nflatten\ndense 2\n", "name 'input' must start"},
      {"input 8 8 1\nname 9x\nflatten\ndense 2\n", "g.cnn:2: name: expected 'name NAME'"},
      {"input 8 8 1\nconv 4 3 name=a\nname a\nflatten\ndense 2\n", "g.cnn:3: name: layer name 'a' is already used on line 2"},
      {"input 8 8 1\nrepeat 2\nconv 4 3 name=a\nend\nconv 4 3 name=a_2\nflatten\ndense 2\n",
       "g.cnn:5: conv: layer name 'a_2' is already used on line 3"},
      {"input 8 8 1\nflatten\ndense 4\nsoftmax\ndense 2\n", "g.cnn:5: dense: softmax (line 4) must be on the last layer"},
      {"input 8 8 1\nsoftmax\n", "softmax needs a flat input"},
      {"input 8 8 1\nflatten\nrelu 0.5\ndense 2\n", "g.cnn:3: relu: expected 'relu [options]'"},
      {"input 8 8 1\nflatten\nleaky_relu x\ndense 2\n", "g.cnn:3: leaky_relu: alpha: 'x' is not a number"},
      {"input 8 8 1\nflatten\ndense 4 l2=-1\ndense 2\n", "g.cnn:3: dense: l2 must be a number >= 0, got '-1'"},
      {"input 8 8 1\nmaxpool 2 padding=2\nflatten\ndense 2\n", "line 2: maxpool padding must be smaller than the 2x2 window"},
      {"input 8 8 1\nflatten\nglobalavgpool\ndense 2\n", "globalavgpool needs an image input"},
      {"input 8 8 1\nflatten\nglobalmaxpool\ndense 2\n", "globalmaxpool needs an image input"},
      {"input 8 8 1\nglobalmaxpool 2\ndense 2\n", "g.cnn:2: globalmaxpool: globalmaxpool takes no arguments, got '2'"},
      {"input 8 8 1\nconv 4 3 stride=1 4\nflatten\ndense 2\n",
       "g.cnn:2: conv: positional argument '4' after options: put options last (only an activation may follow them)"},
      {"input 8 8 1\nconv 4 3 stride=1 swish\nflatten\ndense 2\n", "positional argument 'swish' after options"},
      {"input 8 8 1\nlinear 0.5\nflatten\ndense 2\n", "g.cnn:2: linear: expected 'linear [options]'"},
      {"input 8 8 1\nconv 4 3 dilation=0\nflatten\ndense 2\n", "dilation must be N or HxW"},
      {"input 8 8 1\nflatten\ndense 4 from=nowhere\ndense 2\n", "g.cnn:3: dense: no layer named 'nowhere'"},
      {"input 8 8 1\nrepeat 1000\nrepeat 1000\nconv 1 1\nend\nend\nflatten\ndense 2\n", "expand to more than"},
  };
  for (const auto &c : cases) cnntest::expect_refused_definition(be.b, c.text, "g.cnn", c.message);
}

// ---- gradients ------------------------------------------------------------------------------------------------

// A batch of n random images with labels.
using Batch = cnntest::RandomTask;

// A residual net with batchnorm, a projection shortcut, concat, dropout (fixed seed and step: a fixed mask),
// GELU/SiLU kept pre-activations, and an output used by two consumers.
const char *kResidualNet =
    "input 6 6 2\n"
    "conv 4 3 padding=same bias=no name=stem\n"
    "batchnorm relu name=x\n"
    "conv 4 3 gelu padding=1\n"
    "batchnorm\n"
    "add x silu name=r1\n"
    "conv 6 3 stride=2 padding=1 bias=no\n"
    "batchnorm tanh name=main\n"
    "conv 6 1 stride=2 from=r1\n"
    "add main name=r2\n"
    "conv 2 1 elu from=r1 stride=2\n"
    "concat r2 conv2d_4\n"
    "dropout 0.3\n"
    "globalavgpool\n"
    "dense 5 elu\n"
    "dense 3 silu\n"
    "dense 3\n";

TEST(GraphGradients, ResidualNetWithBatchnormConcatAndDropoutMatchesFiniteDifferences) {
  Backend be;
  Batch batch(4, 6, 6, 2, 3, 7);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kResidualNet, "res", be.b, 3, &net), CNN_OK) << cnn_last_error();
  net->step = 5;
  ASSERT_EQ(cnn_net_stage_batch(net, &batch.ds, nullptr, 0, 4), CNN_OK) << cnn_last_error();
  check_gradients(net, 4, 8, 0.05);
  cnn_net_destroy(net);
}

// Residual blocks whose last batchnorm computes the add and its activation (core/nn/net.c, fuse_batchnorm_add): an
// identity block whose input also feeds its first convolution, and a projection block; the gradients of both add
// inputs (one of them through the shortcut) and of the batchnorm still match finite differences. Smooth activations
// (ELU, tanh): with ReLU's kinks central differences at this step size miss by more, fused or not.
// The gradients of a network from its text, on a batch of 4 (6x6x2, 3 classes) drawn from `seed`, against finite
// differences; with fused_adds >= 0, first that the rewrite fused that many adds.
void check_text_gradients(const char *text, uint64_t seed, int fused_adds = -1) {
  Backend be;
  Batch batch(4, 6, 6, 2, 3, seed);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "gradients", be.b, 3, &net), CNN_OK) << cnn_last_error();
  if (fused_adds >= 0) {
    int fused = 0;
    for (int i = 0; i < net->nlayers; i++) fused += net->layers[i]->ops == &cnn_add_layer_ops && net->layers[i]->fused;
    EXPECT_EQ(fused, fused_adds);
  }
  ASSERT_EQ(cnn_net_stage_batch(net, &batch.ds, nullptr, 0, 4), CNN_OK) << cnn_last_error();
  check_gradients(net, 4, 8, 0.05);
  cnn_net_destroy(net);
}

TEST(GraphGradients, BatchnormFusedWithTheResidualAddMatchesFiniteDifferences) {
  const char *text =
      "input 6 6 2\n"
      "conv 4 3 padding=same bias=no\n"
      "batchnorm elu name=x\n"
      "conv 4 3 padding=same bias=no\n"
      "batchnorm\n"
      "add x elu name=r1\n"
      "conv 6 3 stride=2 padding=1 bias=no\n"
      "batchnorm name=main\n"
      "conv 6 1 stride=2 bias=no from=r1\n"
      "batchnorm\n"
      "add main tanh\n"
      "globalavgpool\n"
      "dense 3\n";
  check_text_gradients(text, 8, 2);
}

// Batchnorm with an activation whose gradient needs its input (GELU, SiLU): the layer keeps the pre-activation and
// runs the activation's gradient before batchnorm's backward, which has no activation then; batchnorm with tanh
// and ELU applies the gradient inside its own passes. All of them against finite differences.
TEST(GraphGradients, BatchnormWithEveryKindOfActivationMatchesFiniteDifferences) {
  const char *text =
      "input 6 6 2\n"
      "conv 4 3 padding=same bias=no\n"
      "batchnorm gelu\n"
      "conv 4 3 padding=same bias=no\n"
      "batchnorm tanh\n"
      "conv 4 3 padding=same bias=no\n"
      "batchnorm silu\n"
      "conv 3 1 bias=no\n"
      "batchnorm elu\n"
      "globalavgpool\n"
      "dense 3\n";
  check_text_gradients(text, 9);
}

// Global max pooling and a linear (identity) layer in a network: the gradient goes to each channel's maximum only.
TEST(GraphGradients, GlobalMaxPoolAndLinearLayersMatchFiniteDifferences) {
  const char *text =
      "input 6 6 2\n"
      "conv 4 3 padding=same tanh\n"
      "conv 5 3 stride=1 padding=same elu\n"
      "globalmaxpool\n"
      "linear\n"
      "dense 3\n";
  check_text_gradients(text, 11);
}

// A view (flatten) feeding two consumers and an add of one output with itself: every gradient is summed.
TEST(GraphGradients, OutputsWithSeveralConsumersSumTheirGradients) {
  Backend be;
  Batch batch(4, 4, 4, 2, 3, 2);
  const char *text =
      "input 4 4 2\n"
      "conv 3 3 padding=same\n"
      "flatten name=f\n"
      "dense 6 tanh name=a\n"
      "dense 6 sigmoid from=f name=b\n"
      "add a b name=s\n"
      "add s s\n"
      "dense 3\n";
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(text, "multi", be.b, 6, &net), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_stage_batch(net, &batch.ds, nullptr, 0, 4), CNN_OK);
  check_gradients(net, 4, 8, 0.02);
  EXPECT_GE(net->nscratch, 1);
  cnn_net_destroy(net);
}

TEST(GraphGradients, LabelSmoothingAndClassWeightsKeepGradientsConsistent) {
  Backend be;
  Batch batch(5, 6, 6, 2, 3, 9);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text(kResidualNet, "res", be.b, 4, &net), CNN_OK) << cnn_last_error();
  float w[3] = {0.5f, 2.0f, 1.0f};
  ASSERT_EQ(cnn_net_set_loss_options(net, 0.1f, w, 3), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_stage_batch(net, &batch.ds, nullptr, 0, 5), CNN_OK);
  check_gradients(net, 5, 8, 0.05);
  // the per-sample loss: w[label] * (-sum_j target_j log p_j), target = 0.9 onehot + 0.1 / 3
  ASSERT_EQ(cnn_net_forward(net, 1), CNN_OK);
  ASSERT_EQ(cnn_net_loss(net, 1), CNN_OK);
  std::vector<float> probs = read_tensor(net->probs), losses = read_tensor(net->losses);
  for (int i = 0; i < 5; i++) {
    double want = 0;
    for (int j = 0; j < 3; j++) want -= ((j == batch.labels[i] ? 0.9 : 0.0) + 0.1 / 3) * std::log(probs[i * 3 + j]);
    EXPECT_NEAR(losses[i], w[batch.labels[i]] * want, 1e-4) << i;
  }
  EXPECT_NE(cnn_net_set_loss_options(net, 1.0f, nullptr, 0), CNN_OK);
  EXPECT_NE(cnn_net_set_loss_options(net, 0.0f, w, 2), CNN_OK);
  cnn_net_destroy(net);
}

TEST(GraphGradients, L1AndL2PenaltiesAreAddedToTheWeightGradient) {
  Backend be;
  Batch batch(3, 4, 4, 1, 2, 3);
  const char *plain = "input 4 4 1\nconv 2 3 name=c\nflatten\ndense 2 name=d\n";
  const char *reg = "input 4 4 1\nconv 2 3 l2=0.25 name=c\nflatten\ndense 2 l1=0.5 name=d\n";
  cnn_net *a = nullptr, *b = nullptr;
  ASSERT_EQ(cnn_net_from_text(plain, "p", be.b, 2, &a), CNN_OK);
  ASSERT_EQ(cnn_net_from_text(reg, "r", be.b, 2, &b), CNN_OK) << cnn_last_error();
  for (cnn_net *n : {a, b}) {
    ASSERT_EQ(cnn_net_stage_batch(n, &batch.ds, nullptr, 0, 3), CNN_OK);
    ASSERT_EQ(cnn_net_forward(n, 1), CNN_OK);
    ASSERT_EQ(cnn_net_loss(n, 1), CNN_OK);
    ASSERT_EQ(cnn_net_backward(n), CNN_OK) << cnn_last_error();
  }
  std::vector<float> w = read_tensor(a->layers[0]->params[0].value), ga = read_tensor(a->layers[0]->params[0].grad),
                     gb = read_tensor(b->layers[0]->params[0].grad);
  for (size_t i = 0; i < w.size(); i++) EXPECT_NEAR(gb[i], ga[i] + 2 * 0.25 * w[i], 1e-6) << i;
  w = read_tensor(a->layers[2]->params[0].value);
  ga = read_tensor(a->layers[2]->params[0].grad);
  gb = read_tensor(b->layers[2]->params[0].grad);
  for (size_t i = 0; i < w.size(); i++) EXPECT_NEAR(gb[i], ga[i] + 0.5 * (w[i] > 0 ? 1 : -1), 1e-6) << i;
  // biases carry no penalty
  EXPECT_EQ(read_tensor(a->layers[2]->params[1].grad), read_tensor(b->layers[2]->params[1].grad));
  cnn_net_destroy(a);
  cnn_net_destroy(b);
}

TEST(GraphLayers, DropoutIsTheIdentityAtInferenceAndScalesKeptValuesInTraining) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 1 1 1000\nflatten\ndropout 0.4\ndense 2\n", "d", be.b, 1, &net), CNN_OK);
  Batch batch(2, 1, 1000, 1, 2, 1);
  batch.ds.h = 1;
  batch.ds.w = 1;
  batch.ds.c = 1000;
  ASSERT_EQ(cnn_net_stage_batch(net, &batch.ds, nullptr, 0, 2), CNN_OK);
  ASSERT_EQ(cnn_net_forward(net, 0), CNN_OK);
  EXPECT_EQ(read_tensor(net->acts[1]), batch.images);
  ASSERT_EQ(cnn_net_forward(net, 1), CNN_OK) << cnn_last_error();
  std::vector<float> y = read_tensor(net->acts[1]);
  int dropped = 0;
  for (size_t i = 0; i < y.size(); i++) {
    if (y[i] == 0.0f) dropped++;
    else EXPECT_FLOAT_EQ(y[i], batch.images[i] / 0.6f);
  }
  EXPECT_NEAR(dropped / 2000.0, 0.4, 0.05);
  // the same step gives the same mask; the next step another
  ASSERT_EQ(cnn_net_forward(net, 1), CNN_OK);
  EXPECT_EQ(read_tensor(net->acts[1]), y);
  net->step++;
  ASSERT_EQ(cnn_net_forward(net, 1), CNN_OK);
  EXPECT_NE(read_tensor(net->acts[1]), y);
  cnn_net_destroy(net);
}

TEST(GraphGradients, ResNet20RunsForwardAndBackwardWithFiniteGradients) {
  Backend be;
  Batch batch(4, 32, 32, 3, 10, 3);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_file(model_path("resnet20_32.cnn").c_str(), be.b, 1, &net), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_stage_batch(net, &batch.ds, nullptr, 0, 4), CNN_OK);
  ASSERT_EQ(cnn_net_forward(net, 1), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_loss(net, 1), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_backward(net), CNN_OK) << cnn_last_error();
  for (int i = 0; i < net->nlayers; i++)
    for (int p = 0; p < net->layers[i]->nparams; p++) {
      double s2 = 0;
      for (float g : read_tensor(net->layers[i]->params[p].grad)) s2 += (double)g * g;
      EXPECT_TRUE(std::isfinite(s2)) << net->layers[i]->params[p].name;
      EXPECT_GT(s2, 0) << net->layers[i]->params[p].name;
    }
  cnn_net_destroy(net);
}

// ---- model files ---------------------------------------------------------------------------------------------

TEST(GraphFiles, BatchnormRunningStatisticsSurviveSaveAndLoad) {
  Backend be;
  cnntest::TempDir dir;
  cnn_net *net = nullptr, *back = nullptr;
  ASSERT_EQ(cnn_net_from_text(kResidualNet, "res", be.b, 3, &net), CNN_OK);
  Batch batch(8, 6, 6, 2, 3, 1);
  ASSERT_EQ(cnn_net_stage_batch(net, &batch.ds, nullptr, 0, 8), CNN_OK);
  for (int i = 0; i < 3; i++) ASSERT_EQ(cnn_net_forward(net, 1), CNN_OK) << cnn_last_error();  // moves the stats
  cnn_layer *bn = find_layer(net, "x");
  std::vector<float> mean = read_tensor(bn->state[0].value), var = read_tensor(bn->state[1].value);
  EXPECT_STREQ(bn->state[0].name, "x.running_mean");
  EXPECT_STREQ(bn->state[1].name, "x.running_var");
  EXPECT_NE(mean, std::vector<float>(mean.size(), 0.0f));
  std::string path = dir.file("res.safetensors");
  ASSERT_EQ(cnn_net_save(net, path.c_str()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_load(path.c_str(), be.b, &back), CNN_OK) << cnn_last_error();
  cnn_layer *bn2 = find_layer(back, "x");
  EXPECT_EQ(read_tensor(bn2->state[0].value), mean);
  EXPECT_EQ(read_tensor(bn2->state[1].value), var);
  std::vector<float> p1(8 * 3), p2(8 * 3);
  ASSERT_EQ(cnn_net_predict(net, batch.images.data(), 8, p1.data()), CNN_OK) << cnn_last_error();
  ASSERT_EQ(cnn_net_predict(back, batch.images.data(), 8, p2.data()), CNN_OK) << cnn_last_error();
  EXPECT_EQ(p1, p2);
  // inference uses the running statistics: a batch of one gives the same probabilities as within the batch
  std::vector<float> one(3);
  ASSERT_EQ(cnn_net_predict(back, batch.images.data() + 72, 1, one.data()), CNN_OK);
  for (int j = 0; j < 3; j++) EXPECT_NEAR(one[j], p2[3 + j], 1e-5);
  cnn_net_destroy(net);
  cnn_net_destroy(back);
}

// ---- optimizers and schedules ------------------------------------------------------------------------------

struct OneParam {
  Backend be;
  cnn_net *net = nullptr;
  cnn_optimizer *opt = nullptr;
  OneParam(const cnn_train_config &cfg) {
    EXPECT_EQ(cnn_net_from_text("input 1 1 2\nflatten\ndense 1 bias=no\n", "o", be.b, 1, &net), CNN_OK);
    EXPECT_EQ(cnn_optimizer_create(net, &cfg, &opt), CNN_OK) << cnn_last_error();
  }
  ~OneParam() {
    cnn_optimizer_destroy(opt);
    cnn_net_destroy(net);
  }
  cnn_param *p() { return &net->layers[1]->params[0]; }
};

cnn_train_config config(cnn_optimizer_kind kind) {
  cnn_train_config c;
  cnn_train_config_defaults(&c);
  c.optimizer = kind;
  c.lr = 0.1f;
  c.progress = nullptr;
  return c;
}

TEST(GraphOptimizers, UpdatesMatchHandComputations) {
  const std::vector<float> w0 = {1.0f, -2.0f}, g1 = {0.5f, 0.25f}, g2 = {-1.0f, 2.0f};
  struct Case {
    cnn_optimizer_kind kind;
    int nesterov;
    float momentum, wd;
  };
  for (Case c : {Case{CNN_OPTIM_SGD, 1, 0.9f, 0.01f}, Case{CNN_OPTIM_ADAMW, 0, 0, 0.05f},
                 Case{CNN_OPTIM_ADAM, 0, 0, 0.05f}, Case{CNN_OPTIM_RMSPROP, 0, 0.5f, 0.01f}}) {
    cnn_train_config cfg = config(c.kind);
    cfg.nesterov = c.nesterov;
    cfg.momentum = c.momentum;
    cfg.weight_decay = c.wd;
    OneParam o(cfg);
    write_tensor(o.p()->value, w0);
    double w[2] = {w0[0], w0[1]}, m[2] = {0, 0}, v[2] = {0, 0};
    for (int t = 1; t <= 2; t++) {
      const std::vector<float> &g = t == 1 ? g1 : g2;
      write_tensor(o.p()->grad, g);
      ASSERT_EQ(cnn_optimizer_step(o.opt), CNN_OK) << cnn_last_error();
      for (int i = 0; i < 2; i++) {
        double gi = g[i], lr = 0.1;
        if (c.kind == CNN_OPTIM_SGD) {  // PyTorch: v = mu v + g; p -= lr (g + mu v)
          gi += c.wd * w[i];
          m[i] = c.momentum * m[i] + gi;
          w[i] -= lr * (gi + c.momentum * m[i]);
        } else if (c.kind == CNN_OPTIM_RMSPROP) {  // PyTorch: sq = rho sq + (1-rho) g^2; b = mu b + g/(sqrt(sq)+eps)
          gi += c.wd * w[i];
          v[i] = 0.9 * v[i] + 0.1 * gi * gi;
          m[i] = c.momentum * m[i] + gi / (std::sqrt(v[i]) + 1e-7);
          w[i] -= lr * m[i];
        } else {
          int decoupled = c.kind == CNN_OPTIM_ADAMW;
          if (!decoupled) gi += c.wd * w[i];
          m[i] = 0.9 * m[i] + 0.1 * gi;
          v[i] = 0.999 * v[i] + 0.001 * gi * gi;
          double upd = (m[i] / (1 - std::pow(0.9, t))) / (std::sqrt(v[i] / (1 - std::pow(0.999, t))) + 1e-7);
          if (decoupled) upd += c.wd * w[i];
          w[i] -= lr * upd;
        }
      }
    }
    std::vector<float> got = read_tensor(o.p()->value);
    for (int i = 0; i < 2; i++) EXPECT_NEAR(got[i], w[i], 1e-5) << "optimizer " << c.kind << " element " << i;
  }
}

TEST(GraphOptimizers, ClippingScalesGradientsToTheGlobalNorm) {
  OneParam o(config(CNN_OPTIM_SGD));
  write_tensor(o.p()->grad, {3.0f, 4.0f});
  double norm = 0;
  ASSERT_EQ(cnn_optimizer_clip(o.opt, 10.0f, &norm), CNN_OK) << cnn_last_error();
  EXPECT_DOUBLE_EQ(norm, 5.0);
  EXPECT_EQ(read_tensor(o.p()->grad), (std::vector<float>{3.0f, 4.0f}));  // under the limit: untouched
  ASSERT_EQ(cnn_optimizer_clip(o.opt, 1.0f, &norm), CNN_OK);
  std::vector<float> g = read_tensor(o.p()->grad);
  EXPECT_NEAR(g[0], 0.6, 1e-6);
  EXPECT_NEAR(g[1], 0.8, 1e-6);
}

// The CPU backend updates all parameters with one multi-tensor call: frozen layers stay out of it, and an update
// or a norm that fails names the parameter it failed on, with no parameter updated.
TEST(GraphOptimizers, OneCallUpdatesAllButFrozenLayersAndAFailureNamesItsParameter) {
  Backend be;
  ASSERT_NE(be.b->ops->adam_update_multi, nullptr);
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 1 1 2\nflatten\ndense 3\ndense 1\n", "f", be.b, 1, &net), CNN_OK);
  ASSERT_EQ(net->nlayers, 3);  // flatten, dense 3, dense 1
  cnn_layer *frozen = net->layers[1], *live = net->layers[2];
  ASSERT_EQ(frozen->nparams, 2);
  ASSERT_EQ(live->nparams, 2);
  frozen->frozen = 1;
  cnn_optimizer *opt = nullptr;
  const cnn_train_config cfg = config(CNN_OPTIM_ADAM);
  ASSERT_EQ(cnn_optimizer_create(net, &cfg, &opt), CNN_OK) << cnn_last_error();
  ASSERT_EQ(opt->nparams, 2);
  for (cnn_layer *l : {frozen, live})
    for (int p = 0; p < 2; p++)
      write_tensor(l->params[p].grad, std::vector<float>(cnn_tensor_numel(l->params[p].grad), 1.0f));
  const std::vector<float> fw = read_tensor(frozen->params[0].value), lw = read_tensor(live->params[0].value);
  ASSERT_EQ(cnn_optimizer_step(opt), CNN_OK) << cnn_last_error();
  EXPECT_EQ(read_tensor(frozen->params[0].value), fw);
  std::vector<float> lw1 = read_tensor(live->params[0].value);
  ASSERT_EQ(lw1.size(), lw.size());
  for (size_t i = 0; i < lw.size(); i++) EXPECT_NEAR(lw1[i], lw[i] - 0.1f, 1e-6) << i;  // Adam's first step: lr

  cnn_tensor *bad = live->params[1].grad;
  bad->dtype = CNN_BF16;  // a gradient the CPU backend cannot use
  EXPECT_EQ(cnn_optimizer_step(opt), CNN_ERR_UNSUPPORTED);
  std::string msg = cnn_last_error();
  EXPECT_NE(msg.find(std::string("optimizer update of ") + live->params[1].name), std::string::npos) << msg;
  EXPECT_EQ(read_tensor(live->params[0].value), lw1) << "the weights were updated although their bias's update failed";
  double norm = -1;
  EXPECT_EQ(cnn_optimizer_clip(opt, 1.0f, &norm), CNN_ERR_UNSUPPORTED);
  msg = cnn_last_error();
  EXPECT_NE(msg.find(std::string("gradient norm of ") + live->params[1].name), std::string::npos) << msg;
  bad->dtype = CNN_F32;
  ASSERT_EQ(cnn_optimizer_clip(opt, 1e9f, &norm), CNN_OK) << cnn_last_error();
  EXPECT_DOUBLE_EQ(norm, 2.0);  // the 4 gradients of 1 of the live layer: 3 weights and 1 bias
  cnn_optimizer_destroy(opt);
  cnn_net_destroy(net);
}

TEST(GraphSchedules, LearningRatesMatchHandComputations) {
  cnn_train_config c = config(CNN_OPTIM_SGD);
  c.lr = 1.0f;
  c.epochs = 10;
  EXPECT_FLOAT_EQ(cnn_lr_at(&c, 7), 1.0f);
  c.lr_schedule = CNN_LR_STEP;
  c.lr_step_epochs = 3;
  c.lr_gamma = 0.5f;
  for (int e = 0; e < 10; e++) EXPECT_FLOAT_EQ(cnn_lr_at(&c, e), std::pow(0.5f, e / 3)) << e;
  c.lr_schedule = CNN_LR_COSINE;
  c.warmup_epochs = 2;
  EXPECT_FLOAT_EQ(cnn_lr_at(&c, 0), 1.0f / 3);  // warm-up: (e + 1) / (warmup + 1)
  EXPECT_FLOAT_EQ(cnn_lr_at(&c, 1), 2.0f / 3);
  EXPECT_FLOAT_EQ(cnn_lr_at(&c, 2), 1.0f);
  EXPECT_NEAR(cnn_lr_at(&c, 6), 0.5, 1e-6);  // halfway through the 8 cosine epochs
  EXPECT_NEAR(cnn_lr_at(&c, 9), 0.5 * (1 + std::cos(M_PI * 7 / 8)), 1e-6);
}

// A random 8x8 batch turned into the quadrant task: its noise dimmed, a 3x3 square at the label's quadrant.
struct Quadrants8 : cnntest::RandomTask {
  Quadrants8(int n, uint64_t seed) : RandomTask(n, 8, 8, 1, 4, seed) {
    for (int i = 0; i < n; i++) {
      int k = labels[i];
      float *img = &images[(size_t)i * 64];
      for (int p = 0; p < 64; p++) img[p] *= 0.3f;
      for (int y = 0; y < 3; y++)
        for (int x = 0; x < 3; x++) img[((k / 2) * 4 + y) * 8 + (k % 2) * 4 + x] = 1.0f;
    }
  }
};

const char *kBnNet =
    "input 8 8 1\n"
    "conv 4 3 padding=same bias=no\n"
    "batchnorm relu name=s\n"
    "conv 4 3 padding=same bias=no\n"
    "batchnorm\n"
    "add s relu\n"
    "maxpool 2\n"
    "flatten\n"
    "dropout 0.2\n"
    "dense 4\n";

TEST(GraphTraining, PlateauReducesTheLearningRateWhenValidationLossStalls) {
  Backend be;
  cnn_net *net = nullptr;
  ASSERT_EQ(cnn_net_from_text("input 8 8 1\nflatten\ndense 4\n", "p", be.b, 1, &net), CNN_OK);
  Quadrants8 train(64, 1), val(32, 2);
  cnn_train_config c = config(CNN_OPTIM_SGD);
  c.lr = 1e-30f;  // far below an ulp of the weights: nothing changes, the validation loss stalls exactly
  c.epochs = 4;
  c.reduce_on_plateau = 1;
  c.plateau_patience = 1;
  c.plateau_factor = 0.5f;
  std::vector<cnn_epoch_stats> h(4);
  ASSERT_EQ(cnn_train(net, &train.ds, &val.ds, &c, h.data()), CNN_OK) << cnn_last_error();
  EXPECT_FLOAT_EQ((float)h[0].lr, 1e-30f);
  EXPECT_FLOAT_EQ((float)h[1].lr, 1e-30f);
  EXPECT_FLOAT_EQ((float)h[2].lr, 0.5e-30f);
  EXPECT_FLOAT_EQ((float)h[3].lr, 0.25e-30f);
  cnn_net_destroy(net);
}

std::vector<float> all_weights(cnn_net *net) {
  std::vector<float> all;
  for (int i = 0; i < net->nlayers; i++) {
    for (int p = 0; p < net->layers[i]->nparams; p++) {
      auto v = read_tensor(net->layers[i]->params[p].value);
      all.insert(all.end(), v.begin(), v.end());
    }
    for (int p = 0; p < net->layers[i]->nstate; p++) {
      auto v = read_tensor(net->layers[i]->state[p].value);
      all.insert(all.end(), v.begin(), v.end());
    }
  }
  return all;
}

cnn_status train_bn(cnn_backend *b, cnn_optimizer_kind kind, uint64_t seed, std::vector<float> *weights,
                    double *acc) {
  Quadrants8 train(400, 1), val(200, 2);
  cnn_net *net = nullptr;
  cnn_status st = cnn_net_from_text(kBnNet, "bn", b, seed, &net);
  if (st != CNN_OK) return st;
  cnn_train_config c = config(kind);
  c.lr = kind == CNN_OPTIM_SGD ? 0.05f : 3e-3f;
  c.epochs = 3;
  c.batch_size = 32;
  c.seed = seed;
  c.deterministic = 1;
  c.clip_norm = 5.0f;
  c.label_smoothing = 0.05f;
  c.balanced_class_weights = 1;
  c.lr_schedule = CNN_LR_COSINE;
  c.warmup_epochs = 1;
  c.weight_decay = 1e-4f;
  std::vector<cnn_epoch_stats> h(3);
  st = cnn_train(net, &train.ds, &val.ds, &c, h.data());
  if (st == CNN_OK) {
    *weights = all_weights(net);
    *acc = h.back().val_accuracy;
  }
  cnn_net_destroy(net);
  return st;
}

TEST(GraphTraining, DeterministicRunsGiveBitIdenticalWeights) {
  Backend be;
  std::vector<float> a, b, c;
  double acc = 0;
  ASSERT_EQ(train_bn(be.b, CNN_OPTIM_ADAMW, 4, &a, &acc), CNN_OK) << cnn_last_error();
  ASSERT_EQ(train_bn(be.b, CNN_OPTIM_ADAMW, 4, &b, &acc), CNN_OK) << cnn_last_error();
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * 4), 0);
  ASSERT_EQ(train_bn(be.b, CNN_OPTIM_ADAMW, 5, &c, &acc), CNN_OK);
  EXPECT_NE(std::memcmp(a.data(), c.data(), a.size() * 4), 0);
}

TEST(GraphTraining, EveryOptimizerTrainsAResidualBatchnormNet) {
  Backend be;
  for (cnn_optimizer_kind k : {CNN_OPTIM_SGD, CNN_OPTIM_ADAM, CNN_OPTIM_ADAMW, CNN_OPTIM_RMSPROP}) {
    std::vector<float> w;
    double acc = 0;
    ASSERT_EQ(train_bn(be.b, k, 1, &w, &acc), CNN_OK) << cnn_last_error();
    EXPECT_GT(acc, 0.9) << "optimizer " << k;
  }
}

}  // namespace
