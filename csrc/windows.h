// A block of samples' windows along one axis: where each window starts, and the masses (and
// their derivatives) of its bins, computed by the axis's strategy (plan.h).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "plan.h"

namespace softhist::native {

// One axis's windows for a block of samples: the first stored bin of each, and per window bin
// its mass and, for the backward pass, the mass's derivatives in x and h (data units). Exact
// axes also keep z and f(z) at the window edges (for edge gradients).
struct AxisWindows {
  std::vector<int32_t> first;
  std::vector<double> mass, dx, dh, z, cdf, dens;
  std::vector<int32_t> q;
  std::vector<float> t;
  explicit AxisWindows(const Axis& a)
      : first(BLOCK), mass(BLOCK * a.cells), dx(BLOCK * a.cells), dh(BLOCK * a.cells), q(BLOCK), t(BLOCK) {
    if (a.kind == EXACT_UNIFORM || a.kind == EXACT_EDGES) z.resize(BLOCK * a.width), cdf.resize(BLOCK * a.width), dens.resize(BLOCK * a.width);
  }
};

struct Wants {
  bool mass, x, h, edges;
};

// One coordinate of a block of samples (stride D), as float64.
template <typename scalar_t>
void load_coordinates(const scalar_t* xs, int64_t D, int64_t m, double* out) {
  for (int64_t i = 0; i < m; ++i) out[i] = double(xs[i * D]);
}

// The last k in [-1, B] with e_k <= v (upper_bound - 1) for non-decreasing edges e_0..e_B, v
// finite. A guess from equal widths, checked against the edges, answers for equal-width bins
// and near them without a search; other edges fall back to binary search.
struct EdgeSearch {
  const double* e;
  int64_t B;
  double inv_width;  // 0 where the span cannot be inverted: every guess is checked anyway
  EdgeSearch(const double* edges, int64_t bins) : e(edges), B(bins) {
    const double inv = double(bins) / (edges[bins] - edges[0]);
    inv_width = std::isfinite(inv) ? inv : 0.0;
  }
  int64_t last_at_or_below(double v) const {
    const double g = (v - e[0]) * inv_width;
    const int64_t k = int64_t(std::floor(g >= -1.0 ? std::min(g, double(B)) : -1.0));  // NaN: -1
    if ((k < 0 || e[k] <= v) && (k == B || v < e[k + 1])) return k;
    return int64_t(std::upper_bound(e, e + B + 1, v) - e) - 1;
  }
};

// A sample's position on a table axis's grid of Q points per bin, counted from the stored first
// bin: g = ((x - lo) * scale + J) * Q. Its integer part k holds both the stored first bin of the
// window (k / Q: the bin J below the sample's, stored 2J further) and the table row (k mod Q);
// the fraction g - k interpolates between rows. Q is a power of two, so the split is a shift and
// a mask, and a block's positions are one vectorized pass. Samples out of reach (or NaN) are
// parked at g = 0, a real row, so later passes need no branch.
struct TableGrid {
  double lo, scale, J, Q, top;  // top = (B + 2J) Q < 2^31 (make_plan)
  int shift;
  int32_t mask;
  explicit TableGrid(const Axis& a)
      : lo(a.lo), scale(a.scale), J(double(a.reach)), Q(double(a.q)), top((double(a.bins) + 2.0 * J) * Q),
        shift(__builtin_ctzll(uint64_t(a.q))), mask(int32_t(a.q - 1)) {}
  // Whether x reaches a bin; its window's stored first bin, table row and interpolation weight.
  bool locate(double x, int32_t& bin, int32_t& q, float& t) const {
    const double g = ((x - lo) * scale + J) * Q;
    const bool ok = (g >= 0.0) & (g < top);  // false for NaN
    const double parked = ok ? g : 0.0, whole = std::floor(parked);  // floor, not a cast: GCC vectorizes it
    const int32_t k = int32_t(whole);
    bin = k >> shift;
    q = k & mask;
    t = float(parked - whole);
    return ok;
  }
};

// A sample's weight w times a window cell's mass, for a non-finite w (inf, NaN): the cells its
// kernel does not reach (mass 0) get nothing, as in hard counts, where 0 * inf would give NaN.
// Finite weights take the plain product (w * 0 = 0), and the hot loops branch once per sample.
inline double weighted(double w, double mass) { return mass != 0.0 ? w * mass : 0.0; }

// Windows of m samples with coordinates xs along one axis; clears valid[i] for samples too far
// from the range (or NaN) to put mass in any bin.
void axis_windows(const Axis& a, const double* xs, int64_t m, AxisWindows& w, uint8_t* valid, Wants want);

template <typename scalar_t>
void block_weights(const scalar_t* w, int64_t m, double* out) {
  for (int64_t i = 0; i < m; ++i) out[i] = w ? double(w[i]) : 1.0;
}

}  // namespace softhist::native
