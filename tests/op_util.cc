// Helpers shared by the op suites (tests/op_util.h).
#include "tests/op_util.h"

#include <string.h>

#include <cmath>
#include <string>

namespace cnntest {

using cnnref::Vec;

std::vector<float> random_floats(size_t n, std::mt19937 &rng, float lo, float hi) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto &x : v) x = u(rng);
  return v;
}

float round_to(float x, cnn_dtype dt) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if (dt == CNN_BF16) {
    u += 0x7FFFu + ((u >> 16) & 1u);
    u &= 0xFFFF0000u;
  } else if (dt == CNN_F16) {
    const float a = std::fabs(x);
    if (a >= 65520.0f) return x > 0 ? INFINITY : -INFINITY;
    if (a < 6.103515625e-05f) return std::nearbyint(x * 16777216.0f) / 16777216.0f;  // subnormal: steps of 2^-24
    u += 0xFFFu + ((u >> 13) & 1u);
    u &= 0xFFFFE000u;
  }
  float r;
  memcpy(&r, &u, sizeof r);
  return r;
}

std::vector<float> rounded(std::vector<float> v, cnn_dtype dt) {
  if (dt != CNN_F32)
    for (auto &x : v) x = round_to(x, dt);
  return v;
}

Vec to_double(const std::vector<float> &v) { return Vec(v.begin(), v.end()); }

double dot(const Vec &a, const Vec &b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); i++) s += a[i] * b[i];
  return s;
}

Vec finite_differences(Vec v, const std::function<double(const Vec &)> &loss, const std::function<bool(size_t)> &skip) {
  Vec g(v.size());
  for (size_t i = 0; i < v.size(); i++) {
    if (skip && skip(i)) {
      g[i] = NAN;
      continue;
    }
    const double orig = v[i];
    v[i] = orig + kFdStep;
    const double lp = loss(v);
    v[i] = orig - kFdStep;
    const double lm = loss(v);
    v[i] = orig;
    g[i] = (lp - lm) / (2 * kFdStep);
  }
  return g;
}

void expect_error(cnn_status st, cnn_status want, std::initializer_list<const char *> parts) {
  EXPECT_EQ(st, want) << "got " << cnn_status_string(st) << ": " << cnn_last_error();
  const std::string msg = cnn_last_error();
  EXPECT_FALSE(msg.empty());
  for (const char *p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  cnn_clear_error();
}

double nmse(const std::vector<float> &got, const std::vector<float> &want) {
  if (got.size() != want.size()) return NAN;
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < got.size(); i++) {
    if (!std::isfinite(got[i]) || !std::isfinite(want[i])) return NAN;
    const double d = (double)got[i] - (double)want[i];
    num += d * d;
    den += (double)want[i] * want[i];
  }
  return den > 0.0 ? num / den : num;
}

cnnref::Conv2d conv_params(int n, int h, int w, int c, int o, int kh, int kw, int stride, int pad, int dilation,
                           int groups) {
  cnnref::Conv2d p;
  p.n = n, p.h = h, p.w = w, p.c = c, p.o = o, p.kh = kh, p.kw = kw;
  p.stride_h = p.stride_w = stride;
  p.pad_top = p.pad_left = p.pad_bottom = p.pad_right = pad;
  p.dilation_h = p.dilation_w = dilation;
  p.groups = groups;
  return p;
}

// `kernel_first`: the kernel's size drawn right after the image's (the order of test_cuda's draws), else after the
// channels (test_ops_cpu's).
static void random_convs(std::vector<cnnref::Conv2d> &v, uint32_t seed, size_t count, bool kernel_first) {
  std::mt19937 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  const size_t target = v.size() + count;
  while (v.size() < target) {
    cnnref::Conv2d q;
    q.n = pick(1, 5), q.h = pick(1, 10), q.w = pick(1, 10);
    if (kernel_first) q.kh = pick(1, 4), q.kw = pick(1, 4);
    q.groups = pick(1, 3);
    q.c = q.groups * pick(1, 4);
    q.o = q.groups * pick(1, 4);
    if (!kernel_first) q.kh = pick(1, 4), q.kw = pick(1, 4);
    q.stride_h = pick(1, 3), q.stride_w = pick(1, 3);
    q.dilation_h = pick(1, 2), q.dilation_w = pick(1, 2);
    q.pad_top = pick(0, 2), q.pad_left = pick(0, 2), q.pad_bottom = pick(0, 2), q.pad_right = pick(0, 2);
    if (q.out_h() < 1 || q.out_w() < 1) continue;
    v.push_back(q);
  }
}

// Hand-picked convolutions (odd sizes, both padding kinds, every parameter), then seeded random ones.
std::vector<cnnref::Conv2d> conv_shapes() {
  std::vector<cnnref::Conv2d> v;
  v.push_back(conv_params(1, 7, 5, 3, 4, 3, 3));
  cnnref::Conv2d p = conv_params(5, 7, 5, 3, 6, 3, 3, 2);
  p.pad_top = 1, p.pad_left = 0, p.pad_bottom = 2, p.pad_right = 1;  // asymmetric: an explicitly padded copy
  v.push_back(p);
  p = conv_params(3, 9, 9, 4, 8, 3, 3, 2);
  p.pad_bottom = 1, p.pad_right = 1;  // SAME with stride 2 on an odd image
  v.push_back(p);
  p = conv_params(5, 8, 8, 6, 6, 2, 2);
  p.pad_bottom = 1, p.pad_right = 1;  // SAME with an even kernel
  v.push_back(p);
  p = conv_params(2, 9, 8, 4, 4, 3, 2, 3);
  p.pad_top = 0, p.pad_left = 1, p.pad_bottom = 1, p.pad_right = 0;
  v.push_back(p);
  v.push_back(conv_params(2, 7, 7, 3, 5, 3, 3, 1, 1));     // SAME, symmetric
  v.push_back(conv_params(1, 11, 13, 8, 16, 5, 5, 2, 2));  // stride 2, pad 2
  v.push_back(conv_params(2, 9, 9, 4, 6, 3, 3, 1, 2, 2));  // dilation 2
  p = conv_params(3, 8, 7, 5, 4, 3, 2, 1, 0, 1);
  p.dilation_h = 2, p.dilation_w = 3, p.stride_w = 2;  // different dilation and stride per axis
  v.push_back(p);
  v.push_back(conv_params(3, 6, 7, 4, 6, 3, 3, 1, 1, 1, 2));  // groups 2
  p = conv_params(2, 8, 6, 5, 10, 3, 3, 2, 1, 1, 5);          // depthwise, multiplier 2, asymmetric
  p.pad_bottom = 0, p.pad_right = 0;
  v.push_back(p);
  v.push_back(conv_params(4, 6, 6, 8, 8, 3, 3, 1, 1, 1, 8));  // depthwise, multiplier 1
  v.push_back(conv_params(1, 5, 5, 1, 2, 1, 1));              // 1x1
  v.push_back(conv_params(5, 4, 3, 2, 3, 4, 3));              // kernel as large as the image
  v.push_back(conv_params(2, 28, 28, 1, 32, 3, 3));           // the seed CNN's layers at a small batch
  v.push_back(conv_params(2, 13, 13, 32, 64, 3, 3));
  v.push_back(conv_params(2, 5, 5, 64, 128, 3, 3));
  v.push_back(conv_params(7, 28, 28, 1, 32, 3, 3));  // and at an odd one
  v.push_back(conv_params(3, 13, 13, 32, 64, 3, 3));
  v.push_back(conv_params(3, 5, 5, 64, 128, 3, 3));
  random_convs(v, 20240531, 27, false);  // the two suites' random draws before this one
  random_convs(v, 20240601, 19, true);
  for (size_t i = 0; i < v.size(); i++) v[i].relu = i % 3 == 1;
  return v;
}

}  // namespace cnntest
