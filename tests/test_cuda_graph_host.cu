// cuDNN's graph API descriptors of our convolutions (cuda/conv_graph.c), built and finalized on the host: cuDNN
// checks every attribute's type and count and each operation's shapes when a descriptor is finalized, which needs
// no GPU (only the operation graph, the heuristics and the plans need a handle). So this runs wherever the CUDA
// backend is built, and a wrong attribute or a stride that disagrees with the shapes fails here, not first on a
// device. tests/test_cuda.cc runs the whole path on a GPU against the CPU backend.
#include <gtest/gtest.h>

#include <string>

#include "cuda/conv_graph.h"

namespace {

struct Case {
  int64_t n, h, w, c, o, kh, kw;
  int stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w, groups;
};

cnn_conv2d_sizes sizes(const Case &k) {
  cnn_conv2d_sizes s = {};
  s.n = k.n, s.h = k.h, s.w = k.w, s.c = k.c, s.o = k.o, s.kh = k.kh, s.kw = k.kw;
  s.stride_h = k.stride_h, s.stride_w = k.stride_w, s.pad_top = k.pad_top, s.pad_left = k.pad_left;
  s.pad_bottom = k.pad_bottom, s.pad_right = k.pad_right, s.dilation_h = k.dilation_h, s.dilation_w = k.dilation_w;
  s.groups = k.groups;
  s.oh = (k.h + k.pad_top + k.pad_bottom - k.dilation_h * (k.kh - 1) - 1) / k.stride_h + 1;
  s.ow = (k.w + k.pad_left + k.pad_right - k.dilation_w * (k.kw - 1) - 1) / k.stride_w + 1;
  return s;
}

// ResNet-50's kinds of layers, SAME with a stride (asymmetric), dilation, groups and depthwise
const Case kCases[] = {
    {256, 224, 224, 3, 64, 7, 7, 2, 2, 3, 3, 3, 3, 1, 1, 1},    // the stem
    {256, 56, 56, 64, 256, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1},    // 1x1
    {256, 56, 56, 128, 128, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1},   // 3x3 stride 2
    {3, 9, 9, 4, 8, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 1},           // SAME, stride 2, odd image: asymmetric
    {2, 9, 9, 4, 6, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 1},           // dilation 2
    {3, 6, 7, 4, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 2},           // groups 2
    {4, 6, 6, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 8},           // depthwise
};

TEST(CudaConvGraph, DescriptorsOfEveryDirectionAndDtypeFinalize) {
  for (const Case &k : kCases) {
    const cnn_conv2d_sizes s = sizes(k);
    for (cnn_dtype dt : {CNN_F32, CNN_F16, CNN_BF16}) {
      for (int dir : {CNN_OP_FWD, CNN_OP_BWD_DATA, CNN_OP_BWD_WEIGHTS}) {
        for (int64_t align : {4, 16}) {
          SCOPED_TRACE("x (" + std::to_string(k.n) + ", " + std::to_string(k.h) + ", " + std::to_string(k.w) + ", " +
                       std::to_string(k.c) + ") o " + std::to_string(k.o) + " groups " + std::to_string(k.groups) +
                       " dtype " + cnn_dtype_name(dt) + " direction " + std::to_string(dir) + " alignment " +
                       std::to_string(align));
          const cnn_cuda_conv_graph_spec spec = {&s, dt, 0, 0, dir};
          cnn_cuda_conv_graph_op o;
          ASSERT_EQ(cnn_cuda_conv_graph_op_make(&spec, align, &o, "test"), CNN_OK) << cnn_last_error();
          for (auto *t : o.tensors) EXPECT_NE(t, nullptr);
          EXPECT_NE(o.conv, nullptr);
          EXPECT_NE(o.operation, nullptr);
          cnn_cuda_conv_graph_op_destroy(&o);
          EXPECT_EQ(o.operation, nullptr);
        }
      }
    }
  }
}

// cuDNN checks the operation's shapes when it is finalized: an output one row too tall is refused, and the error
// names the call, so that a descriptor bug cannot pass the test above unseen.
TEST(CudaConvGraph, AnOutputOfTheWrongSizeIsRefused) {
  cnn_conv2d_sizes s = sizes(kCases[1]);
  s.oh += 1;
  const cnn_cuda_conv_graph_spec spec = {&s, CNN_F16, 0, 0, CNN_OP_FWD};
  cnn_cuda_conv_graph_op o;
  EXPECT_NE(cnn_cuda_conv_graph_op_make(&spec, 16, &o, "test"), CNN_OK);
  EXPECT_NE(std::string(cnn_last_error()).find("cudnnBackendFinalize"), std::string::npos) << cnn_last_error();
  EXPECT_EQ(o.operation, nullptr) << "a failed build leaves nothing to destroy";
  cnn_clear_error();
}

TEST(CudaConvGraph, TheApiVariableTakesAutoGraphOrLegacyAndNamesItselfOtherwise) {
  cnn_cuda_conv_api api = CNN_CUDA_CONV_API_LEGACY;
  EXPECT_EQ(cnn_cuda_conv_api_parse(nullptr, &api), CNN_OK);
  EXPECT_EQ(api, CNN_CUDA_CONV_API_AUTO);
  EXPECT_EQ(cnn_cuda_conv_api_parse("graph", &api), CNN_OK);
  EXPECT_EQ(api, CNN_CUDA_CONV_API_GRAPH);
  EXPECT_EQ(cnn_cuda_conv_api_parse("legacy", &api), CNN_OK);
  EXPECT_EQ(api, CNN_CUDA_CONV_API_LEGACY);
  EXPECT_EQ(cnn_cuda_conv_api_parse("auto", &api), CNN_OK);
  EXPECT_EQ(api, CNN_CUDA_CONV_API_AUTO);
  EXPECT_EQ(cnn_cuda_conv_api_parse("fast", &api), CNN_ERR_INVALID_ARG);
  EXPECT_NE(std::string(cnn_last_error()).find("CNN_CUDNN_CONV"), std::string::npos) << cnn_last_error();
  cnn_clear_error();
}

// When a direction is planned: the first time, and again when tensors come better aligned than the plan assumed
// (engines that need the alignment were left out of it); a plan serves tensors at least as aligned as it assumed.
TEST(CudaConvGraph, PlansAreRemadeForBetterAlignedTensorsAndServeAsAlignedOnes) {
  alignas(16) static char buf[64];
  void *a16[CNN_CUDA_GRAPH_TENSORS] = {buf, buf + 16, buf + 32};
  void *a4[CNN_CUDA_GRAPH_TENSORS] = {buf, buf + 20, buf + 32};
  cnn_cuda_conv_graph g = {};
  EXPECT_TRUE(cnn_cuda_conv_graph_needs_plan(&g, a4)) << "never planned";
  EXPECT_FALSE(cnn_cuda_conv_graph_usable(&g, a16));
  g.state = 1, g.align = 4;
  EXPECT_FALSE(cnn_cuda_conv_graph_needs_plan(&g, a4));
  EXPECT_TRUE(cnn_cuda_conv_graph_usable(&g, a4));
  EXPECT_TRUE(cnn_cuda_conv_graph_needs_plan(&g, a16)) << "a plan for 4-byte alignment, tensors at 16";
  g.align = 16;
  EXPECT_FALSE(cnn_cuda_conv_graph_needs_plan(&g, a16));
  EXPECT_TRUE(cnn_cuda_conv_graph_usable(&g, a16));
  EXPECT_FALSE(cnn_cuda_conv_graph_needs_plan(&g, a4)) << "less aligned tensors take the legacy API, no re-plan";
  EXPECT_FALSE(cnn_cuda_conv_graph_usable(&g, a4));
  g.state = -1, g.align = 4;  // no engine at 4 bytes: one may exist at 16
  EXPECT_TRUE(cnn_cuda_conv_graph_needs_plan(&g, a16));
  EXPECT_FALSE(cnn_cuda_conv_graph_needs_plan(&g, a4));
  EXPECT_FALSE(cnn_cuda_conv_graph_usable(&g, a4));
}

}  // namespace
