// Plain, obviously correct float64 reference implementations of the backend ops, in our layouts, for the test
// suites: every backend is compared against these, and gradient checks take finite differences of them.
//
// Layouts (as in include/cnn/tensor.h): images (N, H, W, C); conv weights (O, KH, KW, C / groups) with output
// channel o in group o / (O / groups); dense weights (OUT, IN). No speed tricks: loops written the way the
// definitions read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/backend.h"  // cnn_act

namespace cnnref {

using Vec = std::vector<double>;

// Output size of a window op along one axis (same rule as cnn_window_out); -1 when the window does not fit.
int64_t window_out(int64_t in, int kernel, int stride, int pad_before, int pad_after, int dilation);

// ---- convolution ----

struct Conv2d {
  int n = 1, h = 1, w = 1, c = 1;  // input (N, H, W, C)
  int o = 1, kh = 1, kw = 1;       // weights (O, KH, KW, C / groups)
  int stride_h = 1, stride_w = 1;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int dilation_h = 1, dilation_w = 1;  // 1: dense kernel
  int groups = 1;
  bool relu = false;  // fused activation after the bias

  int out_h() const;
  int out_w() const;
  size_t x_size() const { return (size_t)n * h * w * c; }
  size_t w_size() const { return (size_t)o * kh * kw * (c / groups); }
  size_t y_size() const { return (size_t)n * out_h() * out_w() * o; }
};

// y (N, OH, OW, O) = act(conv(x, w) + b); an empty `b` means no bias.
Vec conv2d_forward(const Conv2d &p, const Vec &x, const Vec &w, const Vec &b);

// ---- pooling ----

struct Pool2d {
  bool max = true;  // false: average over the real (non-padding) elements of each window
  int n = 1, h = 1, w = 1, c = 1;
  int kh = 2, kw = 2;
  int stride_h = 2, stride_w = 2;
  int pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;

  int out_h() const;
  int out_w() const;
  size_t x_size() const { return (size_t)n * h * w * c; }
  size_t y_size() const { return (size_t)n * out_h() * out_w() * c; }
};

// y (N, OH, OW, C); padding never wins a max and never counts in an average.
Vec pool2d_forward(const Pool2d &p, const Vec &x);

// True when moving x[i] by up to +-eps could change which element wins some max-pool window that contains it
// (a tie or near-tie): finite differences are not valid there, as in Caffe's gradient checker.
bool pool2d_max_near_tie(const Pool2d &p, const Vec &x, size_t i, double eps);

// ---- dense ----

// y (N, OUT) = act(x (N, IN) w^T + b); an empty `b` means no bias.
Vec dense_forward(int n, int in, int out, const Vec &x, const Vec &w, const Vec &b, bool relu);

// ---- activations and loss ----

Vec relu(const Vec &x);

// Softmax cross-entropy of logits (N, K) with integer labels: fills `probs` (N, K) and `losses` (N) when not
// null. Stable (max-subtracted) log-sum-exp.
void softmax_xent(int n, int k, const Vec &logits, const std::vector<int32_t> &labels, Vec *probs, Vec *losses);

// Any activation of cnn_act, elementwise: y = act(x), alpha the leaky slope / ELU alpha.
double activation(cnn_act act, double alpha, double x);
Vec activation(cnn_act act, double alpha, const Vec &x);

// Softmax cross-entropy with class weights (empty: all 1) and label smoothing s: target = (1 - s) onehot + s / K,
// loss_i = w[label_i] * sum_j -target_j log p_j. Fills `losses` (N) and the gradient of sum_i losses_i w.r.t. the
// logits, `dlogits` (N, K), when not null.
void softmax_xent_weighted(int n, int k, const Vec &logits, const std::vector<int32_t> &labels, const Vec &weights,
                           double smoothing, Vec *losses, Vec *dlogits);

// ---- batch normalization over the last dim of an (M, C) view ----

// Training: normalizes with the batch mean and biased variance, fills `batch_mean` and `batch_var` (biased) when
// not null. Inference: normalizes with `mean` and `var`. Then y = act(gamma * xhat + beta).
Vec batchnorm_forward(int64_t m, int64_t c, const Vec &x, const Vec &gamma, const Vec &beta, const Vec &mean,
                      const Vec &var, double eps, bool training, cnn_act act, double alpha, Vec *batch_mean,
                      Vec *batch_var);

// ---- dropout, add, concat ----

// The keep decision of core/ew_math.h, written out again from its definition (SplitMix64 of the mixed seed).
bool dropout_keep(uint64_t seed, uint64_t counter, double rate);
Vec dropout_forward(const Vec &x, double rate, uint64_t seed, uint64_t offset);

// Channel concatenation of parts with `rows` rows each; widths[i] channels in part i.
Vec concat(int64_t rows, const std::vector<int64_t> &widths, const std::vector<Vec> &parts);

// ---- optimizers (PyTorch semantics, one step over all elements; grad is multiplied by grad_scale first) ----

void sgd_step(Vec &param, const Vec &grad, Vec &velocity, double lr, double momentum, double weight_decay,
              bool nesterov, double grad_scale);

// `t` is the 1-based step count; bias corrections are 1 - beta^t.
void adam_step(Vec &param, const Vec &grad, Vec &m, Vec &v, double lr, double beta1, double beta2, double eps,
               double weight_decay, bool decoupled, int t, double grad_scale);

// RMSprop: g = grad*grad_scale + wd*p; sq = rho sq + (1 - rho) g^2; with momentum mom = mu mom + g / (sqrt(sq)
// + eps) and p -= lr mom, else p -= lr g / (sqrt(sq) + eps).
void rmsprop_step(Vec &param, const Vec &grad, Vec &sq, Vec &mom, double lr, double rho, double eps,
                  double momentum, double weight_decay, double grad_scale);

// ---- knowledge distillation ----

// Hinton et al. 2015's loss, the mean over the batch of (1 - alpha) * softmax_xent_weighted's loss_i + alpha * T^2 *
// KL(softmax(teacher_i / T) || softmax(student_i / T)); the per-sample terms in `losses` when not null.
double distill_loss(int n, int k, const Vec &student, const Vec &teacher, const std::vector<int32_t> &labels,
                    const Vec &weights, double smoothing, double alpha, double temperature, Vec *losses);

// ---- comparisons ----

// max_i |got_i - want_i| / max(max_i |want_i|, floor): an error relative to the output's scale.
double max_rel_error(const std::vector<float> &got, const Vec &want, double floor = 1e-6);

}  // namespace cnnref
