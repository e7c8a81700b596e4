// Float64 reference ops: see reference.h.
#include "tests/reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace cnnref {

int64_t window_out(int64_t in, int kernel, int stride, int pad_before, int pad_after, int dilation) {
  if (kernel < 1 || stride < 1 || dilation < 1 || pad_before < 0 || pad_after < 0) return -1;
  int64_t span = (int64_t)(kernel - 1) * dilation + 1;
  int64_t padded = in + pad_before + pad_after;
  if (padded < span) return -1;
  return (padded - span) / stride + 1;
}

// ---- convolution ----

int Conv2d::out_h() const { return (int)window_out(h, kh, stride_h, pad_top, pad_bottom, dilation_h); }
int Conv2d::out_w() const { return (int)window_out(w, kw, stride_w, pad_left, pad_right, dilation_w); }

Vec conv2d_forward(const Conv2d &p, const Vec &x, const Vec &w, const Vec &b) {
  const int oh_n = p.out_h(), ow_n = p.out_w();
  const int cg = p.c / p.groups, og = p.o / p.groups;
  if (oh_n < 1 || ow_n < 1 || x.size() != p.x_size() || w.size() != p.w_size() ||
      (!b.empty() && b.size() != (size_t)p.o))
    throw std::invalid_argument("cnnref::conv2d_forward: inconsistent sizes");
  Vec y(p.y_size());
  for (int n = 0; n < p.n; n++)
    for (int oy = 0; oy < oh_n; oy++)
      for (int ox = 0; ox < ow_n; ox++)
        for (int o = 0; o < p.o; o++) {
          const int g = o / og;
          double acc = b.empty() ? 0.0 : b[o];
          for (int ky = 0; ky < p.kh; ky++) {
            const int iy = oy * p.stride_h - p.pad_top + ky * p.dilation_h;
            if (iy < 0 || iy >= p.h) continue;
            for (int kx = 0; kx < p.kw; kx++) {
              const int ix = ox * p.stride_w - p.pad_left + kx * p.dilation_w;
              if (ix < 0 || ix >= p.w) continue;
              for (int ci = 0; ci < cg; ci++) {
                const double xv = x[(((size_t)n * p.h + iy) * p.w + ix) * p.c + (size_t)g * cg + ci];
                const double wv = w[(((size_t)o * p.kh + ky) * p.kw + kx) * cg + ci];
                acc += xv * wv;
              }
            }
          }
          if (p.relu && acc < 0.0) acc = 0.0;
          y[(((size_t)n * oh_n + oy) * ow_n + ox) * p.o + o] = acc;
        }
  return y;
}

// ---- pooling ----

int Pool2d::out_h() const { return (int)window_out(h, kh, stride_h, pad_top, pad_bottom, 1); }
int Pool2d::out_w() const { return (int)window_out(w, kw, stride_w, pad_left, pad_right, 1); }

Vec pool2d_forward(const Pool2d &p, const Vec &x) {
  const int oh_n = p.out_h(), ow_n = p.out_w();
  if (oh_n < 1 || ow_n < 1 || x.size() != p.x_size())
    throw std::invalid_argument("cnnref::pool2d_forward: inconsistent sizes");
  Vec y(p.y_size());
  for (int n = 0; n < p.n; n++)
    for (int oy = 0; oy < oh_n; oy++)
      for (int ox = 0; ox < ow_n; ox++)
        for (int c = 0; c < p.c; c++) {
          double best = -std::numeric_limits<double>::infinity(), sum = 0.0;
          int count = 0;
          for (int ky = 0; ky < p.kh; ky++) {
            const int iy = oy * p.stride_h - p.pad_top + ky;
            if (iy < 0 || iy >= p.h) continue;
            for (int kx = 0; kx < p.kw; kx++) {
              const int ix = ox * p.stride_w - p.pad_left + kx;
              if (ix < 0 || ix >= p.w) continue;
              const double v = x[(((size_t)n * p.h + iy) * p.w + ix) * p.c + c];
              best = std::max(best, v);
              sum += v;
              count++;
            }
          }
          if (count == 0) throw std::invalid_argument("cnnref::pool2d_forward: a window is all padding");
          y[(((size_t)n * oh_n + oy) * ow_n + ox) * p.c + c] = p.max ? best : sum / count;
        }
  return y;
}

bool pool2d_max_near_tie(const Pool2d &p, const Vec &x, size_t i, double eps) {
  if (!p.max) return false;
  const size_t c = i % p.c;
  const size_t ix_i = (i / p.c) % p.w;
  const size_t iy_i = (i / ((size_t)p.c * p.w)) % p.h;
  const size_t n = i / ((size_t)p.c * p.w * p.h);
  const int oh_n = p.out_h(), ow_n = p.out_w();
  for (int oy = 0; oy < oh_n; oy++)
    for (int ox = 0; ox < ow_n; ox++) {
      const int y0 = oy * p.stride_h - p.pad_top, x0 = ox * p.stride_w - p.pad_left;
      if ((int)iy_i < y0 || (int)iy_i >= y0 + p.kh || (int)ix_i < x0 || (int)ix_i >= x0 + p.kw) continue;
      // the window contains x[i]: find the largest other element
      double other = -std::numeric_limits<double>::infinity();
      for (int ky = 0; ky < p.kh; ky++)
        for (int kx = 0; kx < p.kw; kx++) {
          const int iy = y0 + ky, ix = x0 + kx;
          if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) continue;
          const size_t j = (((size_t)n * p.h + iy) * p.w + ix) * p.c + c;
          if (j != i) other = std::max(other, x[j]);
        }
      if (std::fabs(x[i] - other) <= 2 * eps) return true;
    }
  return false;
}

// ---- dense ----

Vec dense_forward(int n, int in, int out, const Vec &x, const Vec &w, const Vec &b, bool relu) {
  if (x.size() != (size_t)n * in || w.size() != (size_t)out * in || (!b.empty() && b.size() != (size_t)out))
    throw std::invalid_argument("cnnref::dense_forward: inconsistent sizes");
  Vec y((size_t)n * out);
  for (int i = 0; i < n; i++)
    for (int o = 0; o < out; o++) {
      double acc = b.empty() ? 0.0 : b[o];
      for (int k = 0; k < in; k++) acc += x[(size_t)i * in + k] * w[(size_t)o * in + k];
      if (relu && acc < 0.0) acc = 0.0;
      y[(size_t)i * out + o] = acc;
    }
  return y;
}

// ---- activations and loss ----

Vec relu(const Vec &x) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); i++) y[i] = x[i] > 0.0 ? x[i] : 0.0;
  return y;
}

void softmax_xent(int n, int k, const Vec &logits, const std::vector<int32_t> &labels, Vec *probs, Vec *losses) {
  if (logits.size() != (size_t)n * k || labels.size() != (size_t)n)
    throw std::invalid_argument("cnnref::softmax_xent: inconsistent sizes");
  if (probs) probs->assign((size_t)n * k, 0.0);
  if (losses) losses->assign(n, 0.0);
  for (int i = 0; i < n; i++) {
    const double *z = &logits[(size_t)i * k];
    const double m = *std::max_element(z, z + k);
    double sum = 0.0;
    for (int j = 0; j < k; j++) sum += std::exp(z[j] - m);
    const double lse = m + std::log(sum);
    if (losses) (*losses)[i] = lse - z[labels[i]];
    if (probs)
      for (int j = 0; j < k; j++) (*probs)[(size_t)i * k + j] = std::exp(z[j] - lse);
  }
}

double activation(cnn_act act, double alpha, double x) {
  switch (act) {
    case CNN_ACT_NONE: return x;
    case CNN_ACT_RELU: return x > 0.0 ? x : 0.0;
    case CNN_ACT_LEAKY_RELU: return x > 0.0 ? x : alpha * x;
    case CNN_ACT_ELU: return x > 0.0 ? x : alpha * (std::exp(x) - 1.0);
    case CNN_ACT_SIGMOID: return 1.0 / (1.0 + std::exp(-x));
    case CNN_ACT_TANH: return std::tanh(x);
    case CNN_ACT_GELU: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case CNN_ACT_SILU: return x / (1.0 + std::exp(-x));
    default: throw std::invalid_argument("cnnref::activation: unknown activation");
  }
}

Vec activation(cnn_act act, double alpha, const Vec &x) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); i++) y[i] = activation(act, alpha, x[i]);
  return y;
}

void softmax_xent_weighted(int n, int k, const Vec &logits, const std::vector<int32_t> &labels, const Vec &weights,
                           double smoothing, Vec *losses, Vec *dlogits) {
  if (logits.size() != (size_t)n * k || labels.size() != (size_t)n || (!weights.empty() && weights.size() != (size_t)k))
    throw std::invalid_argument("cnnref::softmax_xent_weighted: inconsistent sizes");
  Vec probs;
  softmax_xent(n, k, logits, labels, &probs, nullptr);
  if (losses) losses->assign(n, 0.0);
  if (dlogits) dlogits->assign((size_t)n * k, 0.0);
  for (int i = 0; i < n; i++) {
    const double w = weights.empty() ? 1.0 : weights[labels[i]];
    double loss = 0.0;
    for (int j = 0; j < k; j++) {
      const double target = (j == labels[i] ? 1.0 - smoothing : 0.0) + smoothing / k;
      const double p = probs[(size_t)i * k + j];
      loss -= target * std::log(p);
      if (dlogits) (*dlogits)[(size_t)i * k + j] = w * (p - target);
    }
    if (losses) (*losses)[i] = w * loss;
  }
}

// ---- batch normalization ----

Vec batchnorm_forward(int64_t m, int64_t c, const Vec &x, const Vec &gamma, const Vec &beta, const Vec &mean,
                      const Vec &var, double eps, bool training, cnn_act act, double alpha, Vec *batch_mean,
                      Vec *batch_var) {
  if (x.size() != (size_t)(m * c) || gamma.size() != (size_t)c || beta.size() != (size_t)c ||
      (!training && (mean.size() != (size_t)c || var.size() != (size_t)c)))
    throw std::invalid_argument("cnnref::batchnorm_forward: inconsistent sizes");
  Vec mu(c, 0.0), v(c, 0.0);
  if (training) {
    for (int64_t r = 0; r < m; r++)
      for (int64_t j = 0; j < c; j++) mu[j] += x[r * c + j] / m;
    for (int64_t r = 0; r < m; r++)
      for (int64_t j = 0; j < c; j++) v[j] += (x[r * c + j] - mu[j]) * (x[r * c + j] - mu[j]) / m;
  } else {
    mu = mean, v = var;
  }
  if (batch_mean) *batch_mean = mu;
  if (batch_var) *batch_var = v;
  Vec y(x.size());
  for (int64_t r = 0; r < m; r++)
    for (int64_t j = 0; j < c; j++)
      y[r * c + j] = activation(act, alpha, gamma[j] * (x[r * c + j] - mu[j]) / std::sqrt(v[j] + eps) + beta[j]);
  return y;
}

// ---- dropout, add, concat ----

namespace {
uint64_t splitmix64_mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

bool dropout_keep(uint64_t seed, uint64_t counter, double rate) {
  const uint64_t golden = 0x9E3779B97F4A7C15ull;  // 2^64 / phi, SplitMix64's increment
  const uint64_t h = splitmix64_mix(splitmix64_mix(seed ^ golden) + (counter + 1) * golden);
  const double u = (double)(h >> 32) / 4294967296.0;  // uniform in [0, 1) from the top 32 bits
  return u >= std::floor(rate * 4294967296.0) / 4294967296.0;
}

Vec dropout_forward(const Vec &x, double rate, uint64_t seed, uint64_t offset) {
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); i++) y[i] = dropout_keep(seed, offset + i, rate) ? x[i] / (1.0 - rate) : 0.0;
  return y;
}

Vec concat(int64_t rows, const std::vector<int64_t> &widths, const std::vector<Vec> &parts) {
  int64_t total = 0;
  for (int64_t w : widths) total += w;
  Vec y((size_t)(rows * total));
  for (int64_t r = 0; r < rows; r++) {
    int64_t at = 0;
    for (size_t i = 0; i < parts.size(); i++) {
      for (int64_t j = 0; j < widths[i]; j++) y[r * total + at + j] = parts[i][r * widths[i] + j];
      at += widths[i];
    }
  }
  return y;
}

// ---- optimizers ----

void sgd_step(Vec &param, const Vec &grad, Vec &velocity, double lr, double momentum, double weight_decay,
              bool nesterov, double grad_scale) {
  for (size_t i = 0; i < param.size(); i++) {
    double g = grad[i] * grad_scale + weight_decay * param[i];
    if (momentum != 0.0) {
      velocity[i] = momentum * velocity[i] + g;
      g = nesterov ? g + momentum * velocity[i] : velocity[i];
    }
    param[i] -= lr * g;
  }
}

void adam_step(Vec &param, const Vec &grad, Vec &m, Vec &v, double lr, double beta1, double beta2, double eps,
               double weight_decay, bool decoupled, int t, double grad_scale) {
  const double bc1 = 1.0 - std::pow(beta1, t), bc2 = 1.0 - std::pow(beta2, t);
  for (size_t i = 0; i < param.size(); i++) {
    double g = grad[i] * grad_scale;
    if (!decoupled) g += weight_decay * param[i];
    m[i] = beta1 * m[i] + (1.0 - beta1) * g;
    v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
    double update = (m[i] / bc1) / (std::sqrt(v[i] / bc2) + eps);
    if (decoupled) update += weight_decay * param[i];
    param[i] -= lr * update;
  }
}

void rmsprop_step(Vec &param, const Vec &grad, Vec &sq, Vec &mom, double lr, double rho, double eps,
                  double momentum, double weight_decay, double grad_scale) {
  for (size_t i = 0; i < param.size(); i++) {
    const double g = grad[i] * grad_scale + weight_decay * param[i];
    sq[i] = rho * sq[i] + (1.0 - rho) * g * g;
    const double step = g / (std::sqrt(sq[i]) + eps);
    if (momentum != 0.0) {
      mom[i] = momentum * mom[i] + step;
      param[i] -= lr * mom[i];
    } else {
      param[i] -= lr * step;
    }
  }
}

// ---- comparisons ----

double max_rel_error(const std::vector<float> &got, const Vec &want, double floor) {
  if (got.size() != want.size()) return std::numeric_limits<double>::infinity();
  double scale = floor, err = 0.0;
  for (size_t i = 0; i < want.size(); i++) {
    scale = std::max(scale, std::fabs(want[i]));
    const double d = std::fabs((double)got[i] - want[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::infinity();
    err = std::max(err, d);
  }
  return err / scale;
}

// ---- knowledge distillation ----

double distill_loss(int n, int k, const Vec &student, const Vec &teacher, const std::vector<int32_t> &labels,
                    const Vec &weights, double smoothing, double alpha, double temperature, Vec *losses) {
  if (student.size() != (size_t)n * k || teacher.size() != (size_t)n * k)
    throw std::invalid_argument("cnnref::distill_loss: inconsistent sizes");
  Vec ce;
  softmax_xent_weighted(n, k, student, labels, weights, smoothing, &ce, nullptr);
  if (losses) losses->assign(n, 0.0);
  double total = 0.0;
  for (int i = 0; i < n; i++) {
    // softmax of logits / T, written out from the definition
    Vec ps(k), pt(k);
    double ss = 0.0, st = 0.0;
    for (int j = 0; j < k; j++) {
      ps[j] = std::exp(student[(size_t)i * k + j] / temperature);
      pt[j] = std::exp(teacher[(size_t)i * k + j] / temperature);
      ss += ps[j];
      st += pt[j];
    }
    double kl = 0.0;
    for (int j = 0; j < k; j++) kl += pt[j] / st * std::log((pt[j] / st) / (ps[j] / ss));
    const double li = (1.0 - alpha) * ce[i] + alpha * temperature * temperature * kl;
    if (losses) (*losses)[i] = li;
    total += li / n;
  }
  return total;
}

}  // namespace cnnref
