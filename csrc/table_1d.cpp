// One table axis (1-D): a sample's masses depend only on its position f in its base bin, so they
// are read from a (Q, W) table of exact masses at f = q/Q (or on the grid of the table's
// pieces, TableGrid) and linearly interpolated (as are their derivatives in x and h). Q is sized in Python so the interpolation error stays below float32
// resolution. Windows are W = 2J + 1 bins around the base bin, padded to a multiple of 8.
#include "table_1d.h"

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "simd.h"
#include "windows.h"

namespace softhist::native {

// One pass per block, in four versions (table in pieces or not, weights or not): a `wt ? wt[i] : 1`
// inside the vectorized loop becomes a masked load that, with wt null, faults (suppressed: one
// microcode assist per vector, twice the time of the whole forward pass).
template <bool PIECES, bool WEIGHTED>
SOFTHIST_INLINE void positions(const TableGrid& grid, const float* xs, const float* wt, int64_t m, TableBlock& b) {
  int32_t* __restrict bin = b.bin;
  int32_t* __restrict q = b.q;
  float* __restrict t = b.t;
  double* __restrict w = b.w;
  int32_t* __restrict valid = b.valid;
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const bool ok = PIECES ? grid.locate_pieces(double(xs[i]), bin[i], q[i], t[i]) : grid.locate(double(xs[i]), bin[i], q[i], t[i]);
    w[i] = ok ? (WEIGHTED ? double(wt[i]) : 1.0) : 0.0;
    valid[i] = int32_t(ok);
  }
}

SOFTHIST_HOT void table_positions(const Axis& a, const float* xs, const float* wt, int64_t m, TableBlock& b) {
  const TableGrid grid(a);
  if (grid.pieces) wt ? positions<true, true>(grid, xs, wt, m, b) : positions<true, false>(grid, xs, wt, m, b);
  else wt ? positions<false, true>(grid, xs, wt, m, b) : positions<false, false>(grid, xs, wt, m, b);
}

// The sum of table `k`'s row q at t (0 mass, 1 du, 2 dhb), from the rows' sums of values and steps.
SOFTHIST_INLINE double row_sum(const Axis& a, int k, int32_t q, float t) {
  const float* s = a.sums + (int64_t(k) * a.q + q) * 2;
  return double(s[0]) + double(t) * double(s[1]);
}

// Whether every weight of a block is finite, in one vector loop (w - w is 0 exactly when w is finite).
SOFTHIST_INLINE bool all_finite(const double* w, int64_t m) {
  int32_t finite = 1;
#pragma omp simd reduction(& : finite)
  for (int64_t i = 0; i < m; ++i) finite &= int32_t(w[i] - w[i] == 0.0);
  return finite;
}

// Adds w times the row interpolated at t into the window h; a non-finite weight (rare) goes only
// where the row's mass is not 0.
inline void add_row(double* h, const float* row, int64_t w8, float t, double w) {
  if (!std::isfinite(w)) {
    for (int64_t j = 0; j < w8; j += 8) {
      double r[8];
      SOFTHIST_AT8(r) = SOFTHIST_LERP8(row, w8, j, t);
      for (int k = 0; k < 8; ++k) h[j + k] += weighted(w, r[k]);
    }
    return;
  }
  for (int64_t j = 0; j < w8; j += 8) SOFTHIST_AT8(h + j) += w * SOFTHIST_LERP8F(row, w8, j, t);
}

// Each sample adds w * (row + t * step) into its window; NORMALIZED (centre rows): each row is
// divided by its sum (table_1d.h; the samples at an end are split off before, weight 0 here).
template <bool NORMALIZED>
SOFTHIST_INLINE void forward_rows(const Axis& a, const TableBlock& b, int64_t m, double* hist, int64_t lanes, int64_t lane_size) {
  const int64_t w8 = a.cells, row_size = 2 * w8;
  // The common case first: finite weights and an 8-cell window, a loop with no branch but its
  // own. It takes four samples a turn, one per lane (i % lanes of i % 4), with the lanes' and the
  // table's pointers in locals (the stores, through an aliasing type, would make the compiler
  // reload a.mass per sample).
  if (!NORMALIZED && w8 == 8 && all_finite(b.w, m)) {
    const float* const mass = a.mass;
    double* const lane[4] = {hist, hist + (1 & (lanes - 1)) * lane_size, hist + (2 & (lanes - 1)) * lane_size,
                             hist + (3 & (lanes - 1)) * lane_size};
    int64_t i = 0;
    for (; i + 4 <= m; i += 4)
      for (int k = 0; k < 4; ++k)
        SOFTHIST_AT8(lane[k] + b.bin[i + k]) += b.w[i + k] * SOFTHIST_LERP8F(mass + b.q[i + k] * 16, 8, 0, b.t[i + k]);
    for (; i < m; ++i) SOFTHIST_AT8(lane[i & 3] + b.bin[i]) += b.w[i] * SOFTHIST_LERP8F(mass + b.q[i] * 16, 8, 0, b.t[i]);
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    double w = b.w[i];
    if (NORMALIZED) {
      const double S = row_sum(a, 0, b.q[i], b.t[i]);
      w = S != 0.0 ? w / S : 0.0;
    }
    add_row(hist + (i & (lanes - 1)) * lane_size + b.bin[i], a.mass + b.q[i] * row_size, w8, b.t[i], w);
  }
}

SOFTHIST_HOT void table_1d_forward(const Axis& a, const TableBlock& b, int64_t m, double* hist, int64_t lanes, int64_t lane_size,
                                   bool divide_by_sums) {
  if (divide_by_sums) forward_rows<true>(a, b, m, hist, lanes, lane_size);
  else forward_rows<false>(a, b, m, hist, lanes, lane_size);
}

// Short rows, each with its own copy: the samples go round the rows (sample j of every row, then
// sample j + 1), so consecutive windows land in different copies and a row's next window reads
// its copy `rows` stores later, when the last one has left the store buffer (one copy per row
// with the samples in row order waits on each split 64-byte store). Each row still adds its
// samples in order, into one copy: the same sums whatever the grouping of rows.
SOFTHIST_HOT void table_1d_rows_forward(const Axis& a, const TableBlock& b, int64_t rows, int64_t n, double* hist, int64_t stride) {
  const int64_t w8 = a.cells, row_size = 2 * w8;
  const float* const mass = a.mass;
  if (w8 == 8 && all_finite(b.w, rows * n)) {  // the common case: one vector per sample, no branch
    for (int64_t j = 0; j < n; ++j)
      for (int64_t r = 0, i = j; r < rows; ++r, i += n)
        SOFTHIST_AT8(hist + r * stride + b.bin[i]) += b.w[i] * SOFTHIST_LERP8F(mass + b.q[i] * 16, 8, 0, b.t[i]);
    return;
  }
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t r = 0, i = j; r < rows; ++r, i += n) add_row(hist + r * stride + b.bin[i], mass + b.q[i] * row_size, w8, b.t[i], b.w[i]);
  }
}

// Backward: per sample, the dot of the cells' gradients with an interpolated row:
// S[i] = sum_j G[bin + j] * row(q, t)[j]. Eight samples at a time: their eight products with
// the row's first 8 cells (the rest added in) are eight vectors, summed by three rounds of
// shuffles and adds into one vector of eight dots (about 6 operations for eight samples, where
// reducing each vector alone takes 6 per sample). Each sample's sum follows the tree
// ((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7)), which sum8_pairs repeats for the tail.
//
// In two precisions. Float64 (V = v8d, G in float64) for the bandwidth's gradient: one sum over
// all samples, whose terms can cancel to a small total. Float32 (V = v8f, G in float32) for the
// per-sample gradients of x and the weights: G in float32 is exact (the cells' gradients come in
// x's dtype, float32 on this path), the row is rounded to float32 already (SOFTHIST_LERP8F), and
// each product and each of the tree's three adds rounds once more, so with u = 2^-24
// |error| <= 5 u sum_j |G_j row_j| (against u for the row alone): 3e-7 of the sample's terms'
// sizes, inside the 2e-6 bound, which is relative to the largest gradient. Eight float products
// fill one 256-bit vector, and the tree takes one shuffle or add where float64 takes two (AVX2)
// or a double-pumped one, with no widening of the rows (four instructions per row with GCC 12).
template <typename V>
SOFTHIST_INLINE auto sum8_pairs(const V& v) { return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])); }

// p = eight products G[j..j+8) * row(t)[j..j+8), in p's precision.
SOFTHIST_INLINE void row_times(v8d& p, const double* G, const float* row, int64_t w8, int64_t j, float t) {
  p = SOFTHIST_LOAD8(G + j) * SOFTHIST_LERP8F(row, w8, j, t);
}
SOFTHIST_INLINE void row_times(v8f& p, const float* G, const float* row, int64_t w8, int64_t j, float t) {
  p = SOFTHIST_LOAD8F(G + j) * (SOFTHIST_LOAD8F(row + j) + t * SOFTHIST_LOAD8F(row + w8 + j));
}
SOFTHIST_INLINE void store8(double* S, const v8d& v) { SOFTHIST_AT8(S) = v; }
SOFTHIST_INLINE void store8(float* S, const v8f& v) { SOFTHIST_AT8F(S) = v; }

// Sample i's products with its row, folded into 8 lanes: acc[k] = sum_j G[bin + 8j + k] * row[8j + k].
template <typename V, typename E>
SOFTHIST_INLINE void row_products(V& acc, const E* g, const float* tab, const TableBlock& b, int64_t i, int64_t w8) {
  const E* G = g + b.bin[i];
  const float* row = tab + b.q[i] * 2 * w8;
  row_times(acc, G, row, w8, 0, b.t[i]);
  for (int64_t j = 8; j < w8; j += 8) {
    V p;
    row_times(p, G, row, w8, j, b.t[i]);
    acc += p;
  }
}

template <typename V, typename E>
SOFTHIST_INLINE void dots(const Axis& a, const TableBlock& b, const float* tab, const E* g, int64_t m, E* S) {
  const int64_t w8 = a.cells;
  int64_t i = 0;
  for (; i + 8 <= m; i += 8) {
    V p0, p1, p2, p3, p4, p5, p6, p7;
    row_products(p0, g, tab, b, i, w8), row_products(p1, g, tab, b, i + 1, w8), row_products(p2, g, tab, b, i + 2, w8);
    row_products(p3, g, tab, b, i + 3, w8), row_products(p4, g, tab, b, i + 4, w8), row_products(p5, g, tab, b, i + 5, w8);
    row_products(p6, g, tab, b, i + 6, w8), row_products(p7, g, tab, b, i + 7, w8);
    // Round 1: lane 2k + r of aK holds sample 2K + r's cells 2k and 2k + 1, added.
    const V a0 = __builtin_shufflevector(p0, p1, 0, 8, 2, 10, 4, 12, 6, 14) + __builtin_shufflevector(p0, p1, 1, 9, 3, 11, 5, 13, 7, 15);
    const V a1 = __builtin_shufflevector(p2, p3, 0, 8, 2, 10, 4, 12, 6, 14) + __builtin_shufflevector(p2, p3, 1, 9, 3, 11, 5, 13, 7, 15);
    const V a2 = __builtin_shufflevector(p4, p5, 0, 8, 2, 10, 4, 12, 6, 14) + __builtin_shufflevector(p4, p5, 1, 9, 3, 11, 5, 13, 7, 15);
    const V a3 = __builtin_shufflevector(p6, p7, 0, 8, 2, 10, 4, 12, 6, 14) + __builtin_shufflevector(p6, p7, 1, 9, 3, 11, 5, 13, 7, 15);
    // Round 2: lanes 0-3 of bK hold samples 4K..4K+3's cells 0-3 summed, lanes 4-7 their cells 4-7.
    const V b0 = __builtin_shufflevector(a0, a1, 0, 1, 8, 9, 4, 5, 12, 13) + __builtin_shufflevector(a0, a1, 2, 3, 10, 11, 6, 7, 14, 15);
    const V b1 = __builtin_shufflevector(a2, a3, 0, 1, 8, 9, 4, 5, 12, 13) + __builtin_shufflevector(a2, a3, 2, 3, 10, 11, 6, 7, 14, 15);
    // Round 3: lane k holds sample i + k's whole sum.
    store8(S + i, __builtin_shufflevector(b0, b1, 0, 1, 2, 3, 8, 9, 10, 11) + __builtin_shufflevector(b0, b1, 4, 5, 6, 7, 12, 13, 14, 15));
  }
  for (; i < m; ++i) {
    V p0;
    row_products(p0, g, tab, b, i, w8);
    S[i] = sum8_pairs(p0);
  }
}

SOFTHIST_HOT void table_1d_dots(const Axis& a, const TableBlock& b, const float* tab, const double* g, int64_t m, double* S) {
  dots<v8d>(a, b, tab, g, m, S);
}
SOFTHIST_HOT void table_1d_dots(const Axis& a, const TableBlock& b, const float* tab, const float* g, int64_t m, float* S) {
  dots<v8f>(a, b, tab, g, m, S);
}

// dL/dx = w scale (du row . G), dL/dw = (mass row . G), dL/dh += w scale (dhb row . G), the first
// two through float32 dots with gf (G in float32), the last through float64 dots with g. The
// loops over a block read the sums through restrict pointers: a float output could otherwise
// alias the block's float t[], and the loops would not vectorize (one sample per iteration).
SOFTHIST_HOT void table_1d_backward(const Axis& a, const TableBlock& b, const double* g, const float* gf, int64_t m, bool need_w, bool need_h,
                                    double* P, float* gx, float* gw, double* gh) {
  const double* __restrict w = b.w;
  const int32_t* __restrict valid = b.valid;
  const double scale = a.scale;
  float Pf[BLOCK];
  if (gx) {
    table_1d_dots(a, b, a.du, gf, m, Pf);
    const float* __restrict S = Pf;
    float* __restrict out = gx;
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) out[i] = valid[i] ? float(double(S[i]) * (w[i] * scale)) : 0.0f;
  }
  if (need_w) {
    table_1d_dots(a, b, a.mass, gf, m, Pf);
    const float* __restrict S = Pf;
    float* __restrict out = gw;
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) out[i] = valid[i] ? S[i] : 0.0f;
  }
  if (need_h) {
    table_1d_dots(a, b, a.dhb, g, m, P);
    const double* __restrict S = P;
    double s = 0.0;
    for (int64_t i = 0; i < m; ++i) s += valid[i] ? S[i] * (w[i] * scale) : 0.0;
    *gh += s;
  }
}

// With many samples per bin, the backward of a one-axis table is cheaper through gradient tables:
// GV[n, q] = sum_j G[n + j] * row_q[j] at every grid point (stored base bin n, sub-position q),
// after which each sample interpolates two values instead of dotting a row. Same values: the
// rows are linear in q between grid points, so the interpolation commutes with the dot product.
SOFTHIST_HOT void gradient_table(const Axis& a, const float* tab, const double* g, double* gv) {
  const int64_t w8 = a.cells, Q = a.q, span = a.bins + 2 * a.reach;
  torch::stable::parallel_for(0, span, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t q = 0; q <= Q; ++q) {  // q = Q: the last row at t = 1
        double acc[8];
        row_dot8(acc, g + n, tab + std::min(q, Q - 1) * 2 * w8, w8, q == Q ? 1.0 : 0.0);
        gv[n * (Q + 1) + q] = sum8(SOFTHIST_LOAD8(acc));
      }
    }
  });
}

SOFTHIST_HOT void gtable_1d_backward(const Axis& a, const TableBlock& b, int64_t m, const double* gvx, const double* gvw,
                                     const double* gvh, float* gx, float* gw, double* gh) {
  const int64_t stride = a.q + 1;
  double sum_h = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t k = int64_t(b.bin[i]) * stride + b.q[i];
    const double t = b.t[i], w = b.w[i] * a.scale;
    const bool ok = b.valid[i];
    if (gvx) gx[i] = ok ? float(w * (gvx[k] + t * (gvx[k + 1] - gvx[k]))) : 0.0f;
    if (gvw) gw[i] = ok ? float(gvw[k] + t * (gvw[k + 1] - gvw[k])) : 0.0f;
    if (gvh) sum_h += ok ? w * (gvh[k] + t * (gvh[k + 1] - gvh[k])) : 0.0;
  }
  *gh += sum_h;
}

// The table axis as exact windows: K = ceil(2 T hb) + 2 edges (capped at the axis), as the
// Python plan gives EXACT_UNIFORM axes.
static Axis exact_axis(const Axis& a) {
  Axis e = a;
  e.kind = EXACT_UNIFORM;
  e.width = std::clamp<int64_t>(int64_t(std::ceil(2.0 * a.support * (a.h * a.scale))) + 2, 2, a.bins + 1);
  e.q = e.reach = e.row1 = e.row2 = 0;
  e.cut1 = e.cut2 = 1.0;
  e.cells = e.width - 1;
  e.pad = 0;
  e.extent = a.bins;
  e.mass = e.du = e.dhb = nullptr;
  return e;
}

TableEnds::TableEnds(const Axis& a) : exact(exact_axis(a)), ws(exact, BLOCK) {}

// A sample in the table's reach meets a range end where its stored first bin is below 2J or past
// B - 1 (TableEnds). One vector pass flags them (a few in a hundred), then a scan reads the flags
// eight at a time (one 64-bit word) and moves the few it finds.
SOFTHIST_HOT void table_1d_split_ends(const Axis& a, TableBlock& b, int64_t m, const float* xs, const float* wt, TableEnds& e) {
  uint8_t flag[BLOCK + 8] = {};
  const int32_t low = int32_t(2 * a.reach), high = int32_t(a.bins - 1);
  const int32_t* __restrict bin = b.bin;
  const int32_t* __restrict valid = b.valid;
  int32_t any = 0;
#pragma omp simd reduction(| : any)
  for (int64_t i = 0; i < m; ++i) {
    const int32_t end = valid[i] & int32_t((bin[i] < low) | (bin[i] > high));
    flag[i] = uint8_t(end);
    any |= end;
  }
  e.count = 0;
  if (!any) return;
  for (int64_t i0 = 0; i0 < m; i0 += 8) {
    uint64_t word;
    std::memcpy(&word, flag + i0, 8);
    if (word == 0) continue;
    for (int64_t i = i0; i < std::min(i0 + 8, m); ++i) {
      if (!flag[i]) continue;
      e.index[e.count] = int32_t(i), e.x[e.count] = double(xs[i]), e.w[e.count] = wt ? double(wt[i]) : 1.0;
      ++e.count;
      b.valid[i] = 0, b.w[i] = 0.0;
    }
  }
}

SOFTHIST_HOT void table_1d_ends_forward(const Axis& a, TableEnds& e, double* hist, int64_t lanes, int64_t lane_size) {
  if (e.count == 0) return;
  std::fill(e.valid, e.valid + e.count, uint8_t(1));
  axis_windows(e.exact, e.x, e.count, e.ws, e.valid, {true, false, false, false});
  const int64_t C = e.exact.cells;
  for (int64_t k = 0; k < e.count; ++k) {
    if (!e.valid[k]) continue;
    double* h = hist + (e.index[k] & (lanes - 1)) * lane_size + a.pad + e.ws.first[k];
    const double* v = e.ws.mass.data() + k * C;
    const double w = e.w[k];
    if (std::isfinite(w))
      for (int64_t j = 0; j < C; ++j) h[j] += w * v[j];
    else
      for (int64_t j = 0; j < C; ++j) h[j] += weighted(w, v[j]);
  }
}

// With n_p = a_p / S, S = sum_q a_q, and for a parameter t (u or hb) the quotient rule
// dn_p/dt = (da_p/dt - n_p dS/dt) / S, dS/dt = sum_q da_q/dt: with G the cells' gradients and
// Abar = sum_p n_p G_p = (mass row . G) / S,
//   dL/dw = Abar,   dL/dt = w (dt row . G - Abar sum_q da_q/dt) / S,
// the u and hb rows times scale for x and h (as table_1d_backward). The block's row dots come
// first, each row's in one pass: from the gradient tables where given (interpolated as
// gtable_1d_backward does), else eight samples at a time (table_1d_dots); then the quotients.
SOFTHIST_HOT void table_1d_backward_normalized(const Axis& a, const TableBlock& b, const double* g, int64_t m, const double* const gv[3],
                                               bool need_x, bool need_w, bool need_h, float* gx, float* gw, double* gh) {
  const int64_t stride = a.q + 1;
  double dots[3][BLOCK];  // the du, mass and dhb rows' dots with G
  auto row_dots = [&](int k, const float* tab) {
    const double* __restrict v = gv[k];
    if (!v) return table_1d_dots(a, b, tab, g, m, dots[k]);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t at = int64_t(b.bin[i]) * stride + b.q[i];
      dots[k][i] = v[at] + double(b.t[i]) * (v[at + 1] - v[at]);
    }
  };
  row_dots(1, a.mass);
  if (need_x) row_dots(0, a.du);
  if (need_h) row_dots(2, a.dhb);
  // The quotients, branch-free so the loops vectorize (the row sums gathered by q): a sample with
  // S = 0 (out of reach, split off, or reaching no cell) gets no gradient.
  const float* __restrict s0 = a.sums;
  const float* __restrict s1 = a.sums + 2 * a.q;
  const float* __restrict s2 = a.sums + 4 * a.q;
  const int32_t* __restrict valid = b.valid;
  const int32_t* __restrict q = b.q;
  const float* __restrict t = b.t;
  const double* __restrict wb = b.w;
  const double* __restrict du = dots[0];
  const double scale = a.scale;
  double inv[BLOCK], bar[BLOCK];
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const double S = double(s0[2 * q[i]]) + double(t[i]) * double(s0[2 * q[i] + 1]);
    const bool ok = valid[i] && S != 0.0;
    inv[i] = (ok ? 1.0 : 0.0) / (ok ? S : 1.0);
    bar[i] = ok ? dots[1][i] * inv[i] : 0.0;
  }
  if (need_w) {
    float* __restrict out = gw;
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) out[i] = float(bar[i]);
  }
  if (need_x) {
    float* __restrict out = gx;
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) {
      const double dS = double(s1[2 * q[i]]) + double(t[i]) * double(s1[2 * q[i] + 1]);
      out[i] = inv[i] != 0.0 ? float(wb[i] * scale * (du[i] - bar[i] * dS) * inv[i]) : 0.0f;
    }
  }
  if (need_h) {
    double sum_h = 0.0;
    for (int64_t i = 0; i < m; ++i) {
      if (inv[i] == 0.0) continue;
      const double dS = double(s2[2 * q[i]]) + double(t[i]) * double(s2[2 * q[i] + 1]);
      sum_h += wb[i] * scale * (dots[2][i] - bar[i] * dS) * inv[i];
    }
    *gh += sum_h;
  }
}

// The exact windows' derivatives are in data units and normalized already (normalize_windows):
// dL/dx = w (dx . G), dL/dw = mass . G, dL/dh = w (dh . G), as backward_block's one exact axis.
SOFTHIST_HOT void table_1d_ends_backward(const Axis& a, TableEnds& e, const double* g, bool need_x, bool need_w, bool need_h, float* gx,
                                         float* gw, double* gh) {
  if (e.count == 0) return;
  std::fill(e.valid, e.valid + e.count, uint8_t(1));
  axis_windows(e.exact, e.x, e.count, e.ws, e.valid, {need_w, need_x, need_h, false});
  const int64_t C = e.exact.cells;
  double sum_h = 0.0;
  for (int64_t k = 0; k < e.count; ++k) {
    const int64_t i = e.index[k];
    const bool ok = e.valid[k];
    const double* A = g + a.pad + e.ws.first[k];
    if (need_x) gx[i] = ok ? float(e.w[k] * dot(A, e.ws.dx.data() + k * C, C)) : 0.0f;
    if (need_w) gw[i] = ok ? float(dot(A, e.ws.mass.data() + k * C, C)) : 0.0f;
    if (need_h && ok) sum_h += e.w[k] * dot(A, e.ws.dh.data() + k * C, C);
  }
  *gh += sum_h;
}

}  // namespace softhist::native
