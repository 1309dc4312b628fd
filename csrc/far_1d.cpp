// The far grid of a never-cut kernel on one table axis (see far_1d.h).
#include "far_1d.h"

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "simd.h"
#include "table_1d.h"
#include "windows.h"

namespace softhist::native {

namespace {

// A sample's place: on the grid (its stencil's first point and four weights), past the margin
// (its position u in bins, for the exact memberships), or nowhere (NaN, infinite).
enum Where { ON_GRID, PAST, NOWHERE };

struct Place {
  int64_t at, n;  // the stencil's first grid point, the base bin
  double l[4];
  double u;       // the position in bins
};

// The base bin n as the table finds it (TableGrid::locate: floor((x - lo) scale + J), the same
// rounding), so near and far bins never overlap nor leave a gap. In the bin, at g = f S, the
// stencil's points b..b+3 with b = clamp(floor g - 1, 0, S - 3) (one-sided at the bin's ends), and
// the Lagrange weights at tau = g - b in [0, 3]: l_i = prod_{j != i} (tau - j) / (i - j).
inline Where place(const Axis& a, float x, Place& p) {
  const double J = double(a.reach), v = (double(x) - a.lo) * a.scale + J;
  if (!std::isfinite(v)) return NOWHERE;
  const double whole = std::floor(v), n = whole - J;
  p.u = (double(x) - a.lo) * a.scale;
  if (n < -double(a.far_pad) || n >= double(a.bins + a.far_pad)) return PAST;
  p.n = int64_t(n);
  const double S = double(a.far), g = (v - whole) * S;
  const double b = std::clamp(std::floor(g) - 1.0, 0.0, S - 3.0), t = g - b;
  p.at = (p.n + a.far_pad) * (a.far + 1) + int64_t(b);
  p.l[0] = -(t - 1.0) * (t - 2.0) * (t - 3.0) * (1.0 / 6.0);
  p.l[1] = t * (t - 2.0) * (t - 3.0) * 0.5;
  p.l[2] = -t * (t - 1.0) * (t - 3.0) * 0.5;
  p.l[3] = t * (t - 1.0) * (t - 2.0) * (1.0 / 6.0);
  return ON_GRID;
}

inline double weight_of(const float* wt, int64_t i) { return wt ? double(wt[i]) : 1.0; }

// Exact membership of bin k of a sample at u (bins), and its derivatives in u and hb: a mass
// F(z_1) - F(z_0), z_j = (k + j - u) / hb, with -(f(z_1) - f(z_0)) / hb and -(z_1 f(z_1) - z_0 f(z_0)) / hb;
// a centre membership f(c) / hb, c = (k + 1/2 - u) / hb, with -f'(c) / hb^2 and -(f(c) + c f'(c)) / hb^2,
// f'(c) = -2 c f(c)^2 pi for the Cauchy density f = 1 / (pi (1 + c^2)).
struct Exact {
  double m, du, dhb;
};

inline Exact exact(const Axis& a, double u, int64_t k) {
  const double hb = a.h * a.scale, r = 1.0 / hb;
  if (a.membership == CENTER) {
    const double c = (double(k) + 0.5 - u) * r, f = pdf<CAUCHY>(c), slope = -2.0 * c * f * f / INV_PI;
    return {f * r, -slope * r * r, -(f + c * slope) * r * r};
  }
  const double z0 = (double(k) - u) * r, z1 = (double(k) + 1.0 - u) * r, f0 = pdf<CAUCHY>(z0), f1 = pdf<CAUCHY>(z1);
  return {cdf<CAUCHY>(z1) - cdf<CAUCHY>(z0), -(f1 - f0) * r, -(z1 * f1 - z0 * f0) * r};
}

}  // namespace

// The grid places of a block whose table positions are in b (bin = n + J, f = (q + t) / Q): the
// stencil's first point and weights as place() computes them, in one vectorized pass.
struct FarBlock {
  int32_t at[BLOCK];
  double l[4][BLOCK];
};

SOFTHIST_INLINE void far_places(const Axis& a, const TableBlock& b, int64_t m, FarBlock& fb) {
  const double S = double(a.far), per_q = double(a.far) / double(a.q), top = S - 3.0;
  const int32_t offset = int32_t(a.far_pad - a.reach), points = int32_t(a.far + 1);
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const double g = (double(b.q[i]) + double(b.t[i])) * per_q;
    const double first = std::min(std::max(std::floor(g) - 1.0, 0.0), top), t = g - first;
    fb.at[i] = (b.bin[i] + offset) * points + int32_t(first);
    fb.l[0][i] = -(t - 1.0) * (t - 2.0) * (t - 3.0) * (1.0 / 6.0);
    fb.l[1][i] = t * (t - 2.0) * (t - 3.0) * 0.5;
    fb.l[2][i] = -t * (t - 1.0) * (t - 3.0) * 0.5;
    fb.l[3][i] = t * (t - 1.0) * (t - 2.0) * (1.0 / 6.0);
  }
}

// A sample the table does not place (past its grid, NaN) or of a non-finite weight: place() and
// the exact memberships where it is past the far grid too.
SOFTHIST_INLINE void spread_one(const Axis& a, float x, double w, double* grid, double* hist) {
  Place p;
  const Where where = place(a, x, p);
  if (where == NOWHERE) return;
  if (where == PAST || !std::isfinite(w)) {  // exact; a non-finite weight only where the mass is not 0 (weighted)
    for (int64_t k = 0; k < a.bins; ++k)
      if (where == PAST || std::abs(k - p.n) > a.reach) hist[k] += weighted(w, exact(a, p.u, k).m);
    return;
  }
  for (int j = 0; j < 4; ++j) grid[p.at + j] += w * p.l[j];
}

SOFTHIST_HOT void far_1d_spread(const Axis& a, const TableBlock& b, const float* xs, const float* wt, int64_t m, double* grid,
                                double* hist) {
  FarBlock fb;
  far_places(a, b, m, fb);
  for (int64_t i = 0; i < m; ++i) {
    if (!b.valid[i] || !std::isfinite(b.w[i])) {
      spread_one(a, xs[i], weight_of(wt, i), grid, hist);
      continue;
    }
    double* to = grid + fb.at[i];
    const double w = b.w[i];
    to[0] += w * fb.l[0][i], to[1] += w * fb.l[1][i], to[2] += w * fb.l[2][i], to[3] += w * fb.l[3][i];
  }
}

// Bin k against block bins - 1 - k of the far blocks (_build_far): one dot product of the grid.
SOFTHIST_HOT void far_1d_apply(const Axis& a, const double* grid, double* hist) {
  const int64_t size = far_grid_size(a), per = a.far + 1;
  for (int64_t k = 0; k < a.bins; ++k) {
    const float* row = a.far_mass + (a.bins - 1 - k) * per;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < size; ++j) s += grid[j] * double(row[j]);
    hist[k] += s;
  }
}

// The transposed product: V += G_k * (bin k's run of blocks), bin after bin, in parallel over
// slices of the grid (each point's sum in bin order whatever the thread count).
SOFTHIST_HOT void far_1d_gradients(const Axis& a, const double* g, double* vw, double* vx, double* vh) {
  const int64_t size = far_grid_size(a), per = a.far + 1;
  double* const outs[3] = {vw, vx, vh};
  const float* const blocks[3] = {a.far_mass, a.far_du, a.far_dhb};
  torch::stable::parallel_for(0, size, 4096, [&](int64_t j0, int64_t j1) {
    for (int o = 0; o < 3; ++o) {
      double* v = outs[o];
      if (!v) continue;
      std::fill(v + j0, v + j1, 0.0);
      for (int64_t k = 0; k < a.bins; ++k) {
        const float* row = blocks[o] + (a.bins - 1 - k) * per;
        const double gk = g[k];
#pragma omp simd
        for (int64_t j = j0; j < j1; ++j) v[j] += gk * double(row[j]);
      }
    }
  });
}

SOFTHIST_HOT void far_1d_backward(const Axis& a, const TableBlock& b, const float* xs, const float* wt, int64_t m, const double* g,
                                  const double* vw, const double* vx, const double* vh, float* gx, float* gw, double* gh) {
  FarBlock fb;
  far_places(a, b, m, fb);
  double sum_h = 0.0;
  auto at = [&](const double* v, int64_t i) {
    const double* p = v + fb.at[i];
    return fb.l[0][i] * p[0] + fb.l[1][i] * p[1] + fb.l[2][i] * p[2] + fb.l[3][i] * p[3];
  };
  for (int64_t i = 0; i < m; ++i) {
    double dw = 0.0, dx = 0.0, dh = 0.0, w = b.w[i];
    if (b.valid[i]) {
      if (vw) dw = at(vw, i);
      if (vx) dx = at(vx, i);
      if (vh) dh = at(vh, i);
    } else {  // past the table's grid (or NaN): place() on the far grid, or the exact memberships
      Place p;
      const Where where = place(a, xs[i], p);
      if (where == NOWHERE) continue;
      w = weight_of(wt, i);
      if (where == PAST) {
        for (int64_t k = 0; k < a.bins; ++k) {
          const Exact e = exact(a, p.u, k);
          dw += g[k] * e.m, dx += g[k] * e.du, dh += g[k] * e.dhb;
        }
      } else {
        auto on = [&](const double* v) { return v ? p.l[0] * v[p.at] + p.l[1] * v[p.at + 1] + p.l[2] * v[p.at + 2] + p.l[3] * v[p.at + 3] : 0.0; };
        dw = on(vw), dx = on(vx), dh = on(vh);
      }
    }
    w *= a.scale;
    if (gx) gx[i] = float(double(gx[i]) + w * dx);
    if (gw) gw[i] = float(double(gw[i]) + dw);
    sum_h += w * dh;
  }
  if (gh) *gh += sum_h;
}

}  // namespace softhist::native
