// One axis of explicit edges, float32 samples (see edges_1d.h). A sample x with bandwidth h puts
// mass F(z_{k+1}) - F(z_k) in bin k, z_k = (e_k - x) / h, and only bins whose edges straddle the
// support [-T, T] get any: the walk starts at the last edge with z <= -T (found through the
// EdgeSearch lookup, a step or two) and stops at the first edge with z >= T, so each sample costs
// its own edges (x^1.5 edges at the default bandwidth: ~9 on average), not the widest window.
//
// Smooth kernels (Gaussian, logistic) read F and f = F' from a cubic Hermite table in z on [-T, T]
// (nodes every 1/32): on each interval of width s, F is the cubic matching F and f at both ends,
// whose error is at most s^4/384 max|F''''| (Gaussian: (1/32)^4 / 384 * 0.55 = 1.4e-9), and f is
// the cubic matching f and f' (error (1/32)^4 / 384 * max|f''''| = 3.0e-9 for the Gaussian) --
// float64 arithmetic throughout, far inside the float32 resolution of the results. Compact
// kernels use their closed forms (a few flops; a table would smooth their jumps in f).
#include "edges_1d.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"
#include "simd.h"

namespace softhist::native {

namespace {

// Per interval c: F(z) = F0 + t (F1 + t (F2 + t F3)) and f(z) = f0 + t (...), t = (z - z_c) / s in
// [0, 1]: eight doubles, one cache line. The cubic Hermite on [0, 1] with values y0, y1 and
// slopes (in t) d0, d1 has coefficients y0, d0, 3 (y1 - y0) - 2 d0 - d1, 2 (y0 - y1) + d0 + d1.
struct CdfTable {
  double T = 0.0, inv_step = 0.0, last = 0.0;  // last: the final interval's index
  std::vector<double> c;
};

constexpr double TABLE_STEP = 1.0 / 32.0;

template <int K>
double pdf_slope(double z) {  // f'(z) inside the support
  if constexpr (K == GAUSSIAN) {
    return -z * pdf<K>(z);  // f ~ exp(-z^2 / 2)
  } else {  // logistic: f ~ sech^2(a z), f' = -2 a tanh(a z) f
    return -2.0 * LOGI_A * std::tanh(LOGI_A * z) * pdf<K>(z);
  }
}

template <int K>
CdfTable build_table(double T) {
  CdfTable t;
  const int64_t n = int64_t(std::ceil(2.0 * T / TABLE_STEP));
  const double s = 2.0 * T / double(n);
  t.T = T, t.inv_step = 1.0 / s, t.last = double(n - 1);
  t.c.resize(8 * n);
  auto hermite = [](double* out, double y0, double y1, double d0, double d1) {
    out[0] = y0, out[1] = d0, out[2] = 3.0 * (y1 - y0) - 2.0 * d0 - d1, out[3] = 2.0 * (y0 - y1) + d0 + d1;
  };
  for (int64_t k = 0; k < n; ++k) {
    const double z0 = -T + double(k) * s, z1 = k + 1 == n ? T : -T + double(k + 1) * s;
    // The support's ends exactly: F = 0 and 1 there (the walk's first and last edges).
    const double F0 = k == 0 ? 0.0 : cdf<K>(z0), F1 = k + 1 == n ? 1.0 : cdf<K>(z1);
    // f at the ends: the limit from inside (pdf<K> is 0 at |z| = T itself, outside the cut).
    const double f0 = pdf<K>(std::nextafter(z0, 0.0)), f1 = pdf<K>(std::nextafter(z1, 0.0));
    hermite(&t.c[8 * k], F0, F1, s * f0, s * f1);
    hermite(&t.c[8 * k + 4], f0, f1, s * pdf_slope<K>(z0), s * pdf_slope<K>(z1));
  }
  return t;
}

const CdfTable& table_of(int64_t kernel) {
  static const CdfTable gaussian = build_table<GAUSSIAN>(GAUSS_T), logistic = build_table<LOGISTIC>(LOGI_T);
  return kernel == GAUSSIAN ? gaussian : logistic;
}

// F(z) and, where asked, f(z): from the table (smooth kernels) or the closed form (K >= BOX).
template <int K>
struct Kernel {
  const CdfTable* tab;
  SOFTHIST_INLINE double F(double z) const {
    if constexpr (K == GAUSSIAN || K == LOGISTIC) {
      double t;
      const double* c = at(z, t);
      return c[0] + t * (c[1] + t * (c[2] + t * c[3]));
    } else {
      return cdf<K>(z);
    }
  }
  SOFTHIST_INLINE double Ff(double z, double& f) const {
    if constexpr (K == GAUSSIAN || K == LOGISTIC) {
      double t;
      const double* c = at(z, t);
      f = std::fabs(z) < tab->T ? c[4] + t * (c[5] + t * (c[6] + t * c[7])) : 0.0;
      return c[0] + t * (c[1] + t * (c[2] + t * c[3]));
    } else {
      f = pdf<K>(z);
      return cdf<K>(z);
    }
  }
  SOFTHIST_INLINE const double* at(double z, double& t) const {
    const double u = (clamp(z, -tab->T, tab->T) + tab->T) * tab->inv_step;
    const double k = std::min(std::floor(u), tab->last);
    t = u - k;
    return tab->c.data() + 8 * int64_t(k);
  }
};

// The sample's first edge: the last with e_k <= x - T h, within [0, B - 1].
SOFTHIST_INLINE int64_t first_edge(const EdgeSearch& search, double v, double reach, int64_t B) {
  return std::min(std::max<int64_t>(search.last_at_or_below(v - reach), 0), B - 1);
}

template <int K>
SOFTHIST_INLINE void forward_k(const Axis& a, const EdgeSearch& search, const float* xs, const float* wt, int64_t m, double* hist,
                               int64_t lanes, int64_t lane_size) {
  const Kernel<K> ker{K == GAUSSIAN || K == LOGISTIC ? &table_of(K) : nullptr};
  const double* e = a.edges;
  const int64_t B = a.bins;
  const double T = a.support, reach = T * a.h, inv_h = 1.0 / a.h, lo = e[0] - reach, hi = e[B] + reach;
  for (int64_t i = 0; i < m; ++i) {
    const double v = double(xs[i]), w = wt ? double(wt[i]) : 1.0;
    if (!(v > lo && v < hi)) continue;  // reaches no bin (or NaN)
    double* h = hist + (i & (lanes - 1)) * lane_size;
    int64_t k = first_edge(search, v, reach, B);
    double F0 = ker.F((e[k] - v) * inv_h);
    const bool finite = std::isfinite(w);
    for (; k < B; ++k) {
      const double z = (e[k + 1] - v) * inv_h, F1 = ker.F(z);
      h[k] += finite ? w * (F1 - F0) : weighted(w, F1 - F0);
      F0 = F1;
      if (z >= T) break;
    }
  }
}

// Per sample, with G the cells' gradients and the walk as above (bins k of the sample's edges):
//   dL/dw = sum_k G_k (F_{k+1} - F_k),  dL/dx = -(w/h) sum_k G_k (f_{k+1} - f_k),
//   dL/dh = -(w/h) sum_k G_k (z_{k+1} f_{k+1} - z_k f_k),  dL/de_k = (w/h) (A_{k-1} - A_k) f_k,
// A_k = G_k on the walk's bins and 0 outside (as the general exact path's window).
template <int K>
SOFTHIST_INLINE void backward_k(const Axis& a, const EdgeSearch& search, const float* xs, const float* wt, const double* g, int64_t m,
                                float* gx, float* gw, double* gh, double* ge) {
  const Kernel<K> ker{K == GAUSSIAN || K == LOGISTIC ? &table_of(K) : nullptr};
  const double* e = a.edges;
  const int64_t B = a.bins;
  const double T = a.support, reach = T * a.h, inv_h = 1.0 / a.h, lo = e[0] - reach, hi = e[B] + reach;
  double sum_h = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    const double v = double(xs[i]), w = wt ? double(wt[i]) : 1.0;
    if (!(v > lo && v < hi)) {
      if (gx) gx[i] = 0.0f;
      if (gw) gw[i] = 0.0f;
      continue;
    }
    int64_t k = first_edge(search, v, reach, B);
    double z0 = (e[k] - v) * inv_h, f0, F0 = ker.Ff(z0, f0);
    double sw = 0.0, sx = 0.0, sh = 0.0, before = 0.0;  // before: A_{k-1}
    const double wh = w * inv_h;
    for (; k < B; ++k) {
      double f1;
      const double z1 = (e[k + 1] - v) * inv_h, F1 = ker.Ff(z1, f1), G = g[k];
      sw += G * (F1 - F0);
      sx += G * (f1 - f0);
      sh += G * (z1 * f1 - z0 * f0);
      if (ge) ge[k] += wh * (before - G) * f0;
      before = G, z0 = z1, F0 = F1, f0 = f1;
      if (z1 >= T) {
        ++k;
        break;
      }
    }
    if (ge) ge[k] += wh * before * f0;  // the walk's last edge (f0 = 0 where it reached z >= T)
    if (gx) gx[i] = float(-wh * sx);
    if (gw) gw[i] = float(sw);
    sum_h += -wh * sh;
  }
  if (gh) *gh += sum_h;
}

}  // namespace

SOFTHIST_HOT void edges_1d_forward(const Axis& a, const EdgeSearch& search, const float* xs, const float* wt, int64_t m, double* hist,
                                   int64_t lanes, int64_t lane_size) {
  switch (a.kernel) {
    case GAUSSIAN: forward_k<GAUSSIAN>(a, search, xs, wt, m, hist, lanes, lane_size); break;
    case LOGISTIC: forward_k<LOGISTIC>(a, search, xs, wt, m, hist, lanes, lane_size); break;
    case BOX: forward_k<BOX>(a, search, xs, wt, m, hist, lanes, lane_size); break;
    case TRIANGULAR: forward_k<TRIANGULAR>(a, search, xs, wt, m, hist, lanes, lane_size); break;
    case EPANECHNIKOV: forward_k<EPANECHNIKOV>(a, search, xs, wt, m, hist, lanes, lane_size); break;
    case BSPLINE: forward_k<BSPLINE>(a, search, xs, wt, m, hist, lanes, lane_size); break;
    default: forward_k<BSPLINE2>(a, search, xs, wt, m, hist, lanes, lane_size); break;
  }
}

SOFTHIST_HOT void edges_1d_backward(const Axis& a, const EdgeSearch& search, const float* xs, const float* wt, const double* g,
                                    int64_t m, float* gx, float* gw, double* gh, double* ge) {
  switch (a.kernel) {
    case GAUSSIAN: backward_k<GAUSSIAN>(a, search, xs, wt, g, m, gx, gw, gh, ge); break;
    case LOGISTIC: backward_k<LOGISTIC>(a, search, xs, wt, g, m, gx, gw, gh, ge); break;
    case BOX: backward_k<BOX>(a, search, xs, wt, g, m, gx, gw, gh, ge); break;
    case TRIANGULAR: backward_k<TRIANGULAR>(a, search, xs, wt, g, m, gx, gw, gh, ge); break;
    case EPANECHNIKOV: backward_k<EPANECHNIKOV>(a, search, xs, wt, g, m, gx, gw, gh, ge); break;
    case BSPLINE: backward_k<BSPLINE>(a, search, xs, wt, g, m, gx, gw, gh, ge); break;
    default: backward_k<BSPLINE2>(a, search, xs, wt, g, m, gx, gw, gh, ge); break;
  }
}

}  // namespace softhist::native
