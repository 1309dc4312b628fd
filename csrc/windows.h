// A block of samples' windows along one axis: where each window starts, and the masses (and
// their derivatives) of its bins, computed by the axis's strategy (plan.h).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

#include "plan.h"

namespace softhist::native {

struct Wants {
  bool mass, x, h, edges;
};

// One coordinate of a block of samples (stride D), as float64.
template <typename scalar_t>
void load_coordinates(const scalar_t* xs, int64_t D, int64_t m, double* out) {
  for (int64_t i = 0; i < m; ++i) out[i] = double(xs[i * D]);
}

// The last k in [-1, B] with e_k <= v (upper_bound - 1) for non-decreasing edges e_0..e_B, v
// finite. A lookup over M equal cells of [e_0, e_B] (M = 4B, at most 2^20) holds, per cell, the
// last edge at or below the cell's start: a sample's cell gives its answer after a step or two
// forward, for equal-width and non-uniform edges alike (x^1.5 edges: 1-2 steps instead of a
// binary search that mispredicts at every level). A long walk falls back to binary search, and
// a step back covers cell starts rounded past v. Built once per call: O(M + B).
struct EdgeSearch {
  const double* e;
  int64_t B;
  double lo = 0.0, inv = 0.0;  // lookup cells per data unit (0: no lookup, binary search only)
  std::vector<int32_t> start;  // start[c] = the last k with e_k <= lo + c / inv (-1 where none)
  EdgeSearch(const double* edges, int64_t bins) : e(edges), B(bins) {
    const int64_t M = std::min<int64_t>(4 * bins, int64_t(1) << 20);
    const double cells = double(M) / (edges[bins] - edges[0]);
    if (!(std::isfinite(cells) && cells > 0.0)) return;
    lo = edges[0], inv = cells;
    start.resize(M);
    int64_t k = -1;
    for (int64_t c = 0; c < M; ++c) {
      const double t = lo + double(c) / inv;
      while (k < B && e[k + 1] <= t) ++k;
      start[c] = int32_t(k);
    }
  }
  int64_t last_at_or_below(double v) const {
    if (inv == 0.0) return int64_t(std::upper_bound(e, e + B + 1, v) - e) - 1;
    const double g = (v - lo) * inv;
    const int64_t last = int64_t(start.size()) - 1;
    int64_t k = start[g > 0.0 ? std::min<int64_t>(int64_t(g), last) : 0];
    while (k >= 0 && e[k] > v) --k;  // a cell start rounded past v, or v below e_0
    for (int steps = 0; k < B && e[k + 1] <= v; ++k)
      if (++steps > 8) return int64_t(std::upper_bound(e + k + 1, e + B + 1, v) - e) - 1;
    return k;
  }
};

// One axis's windows for a block of samples: the first stored bin of each, and per window bin
// its mass (its membership value, centre or mass, normalized where asked) and, for the backward
// pass, the mass's derivatives in x and h (data units). Exact axes also keep z and f(z) at the
// window edges (for edge gradients); centre and normalized axes keep each bin's derivatives in
// its lower and upper edge instead (lo, hi), and centre axes z, f and f' at the bin centres.
struct AxisWindows {
  std::vector<int32_t> first;
  std::vector<double> mass, dx, dh, z, cdf, dens;
  std::vector<double> zc, fc, dfc, lo, hi;
  std::vector<int32_t> q;
  std::vector<float> t;
  std::unique_ptr<EdgeSearch> search;
  std::vector<int32_t> own;      // EXACT_EDGES: edges of the sample's own support (<= width)
  std::vector<double> packed;    // EXACT_EDGES: their z, then F or f, packed  // EXACT_EDGES and HARD axes: built once per thread and call
  AxisWindows(const Axis& a, int64_t block);  // windows of up to `block` samples
};

// A sample's position on a table axis's grid of Q points per bin, counted from the stored first
// bin: g = ((x - lo) * scale + J) * Q. Its integer part k holds both the stored first bin of the
// window (k / Q: the bin J below the sample's, stored 2J further) and the table row (k mod Q);
// the fraction g - k interpolates between rows. Q is a power of two, so the split is a shift and
// a mask, and a block's positions are one vectorized pass. Samples out of reach (or NaN) are
// parked at g = 0, a real row, so later passes need no branch.
//
// A table in pieces (kernels whose density or its derivative jumps) splits the sample's
// position f in its bin at cut1 and cut2, where a window edge crosses a jump and the masses
// change polynomial: piece s on [c_s, c_{s+1}) holds n_s rows at spacing (c_{s+1} - c_s) / n_s
// from row r_s, then one more (so f rounded onto c_{s+1} reads the piece's own polynomial), and
// the sample reads row r_s + floor(g) at g = (f - c_s) n_s / (c_{s+1} - c_s).
struct TableGrid {
  double lo, scale, J, Q, span, top;  // span = B + 2J grid bins, top = span Q < 2^31 (make_plan)
  int shift;
  int32_t mask;
  bool pieces;
  double cut[3], density[3];  // per piece: start in the bin, rows per bin width
  int32_t row[3];             // per piece: first row
  explicit TableGrid(const Axis& a)
      : lo(a.lo), scale(a.scale), J(double(a.reach)), Q(double(a.q)), span(double(a.bins) + 2.0 * J), top(span * Q),
        shift(__builtin_ctzll(uint64_t(a.q))), mask(int32_t(a.q - 1)), pieces(a.cut1 < 1.0),
        cut{0.0, a.cut1, a.cut2}, row{0, int32_t(a.row1), int32_t(a.row2)} {
    const double end[3] = {a.cut1, a.cut2, 1.0};
    const int64_t after[3] = {a.row1, a.row2, a.q};
    for (int s = 0; s < 3; ++s) density[s] = end[s] > cut[s] ? double(after[s] - row[s] - 1) / (end[s] - cut[s]) : 0.0;
  }
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
  // The same for a table in pieces: the piece by two comparisons, then its own grid.
  bool locate_pieces(double x, int32_t& bin, int32_t& q, float& t) const {
    const double u = (x - lo) * scale + J;
    const bool ok = (u >= 0.0) & (u < span);  // false for NaN
    const double parked = ok ? u : 0.0, whole = std::floor(parked), f = parked - whole;  // f exact, in [0, 1)
    const bool p1 = f >= cut[1], p2 = f >= cut[2];
    const double start = p2 ? cut[2] : p1 ? cut[1] : 0.0, per = p2 ? density[2] : p1 ? density[1] : density[0];
    const double g = (f - start) * per, rows = std::floor(g);  // f >= start: g >= 0
    bin = int32_t(whole);
    q = (p2 ? row[2] : p1 ? row[1] : 0) + int32_t(rows);
    t = float(g - rows);
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
