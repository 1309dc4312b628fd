// One table axis (1-D): a sample's masses depend only on its position f in its base bin, so they
// are read from a (Q, W) table of exact masses at f = q/Q (or on the grid of the table's
// pieces, TableGrid) and linearly interpolated (as are their derivatives in x and h). Q is sized in Python so the interpolation error stays below float32
// resolution. Windows are W = 2J + 1 bins around the base bin, padded to a multiple of 8.
#include "table_1d.h"

#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <cmath>

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

// Forward: each sample adds w * (row + t * step) into its window.
SOFTHIST_HOT void table_1d_forward(const Axis& a, const TableBlock& b, int64_t m, double* hist, int64_t lanes, int64_t lane_size) {
  const int64_t w8 = a.cells, row_size = 2 * w8;
  for (int64_t i = 0; i < m; ++i) {
    const float* row = a.mass + b.q[i] * row_size;
    double* h = hist + (i & (lanes - 1)) * lane_size + b.bin[i];
    if (!std::isfinite(b.w[i])) {  // rare: the weight goes only where the row's mass is not 0
      for (int64_t j = 0; j < w8; j += 8) {
        double r[8];
        SOFTHIST_AT8(r) = SOFTHIST_LERP8(row, w8, j, b.t[i]);
        for (int k = 0; k < 8; ++k) h[j + k] += weighted(b.w[i], r[k]);
      }
      continue;
    }
    for (int64_t j = 0; j < w8; j += 8) SOFTHIST_AT8(h + j) += b.w[i] * SOFTHIST_LERP8F(row, w8, j, b.t[i]);
  }
}

// Backward: per sample, the dot of the cells' gradients with an interpolated row, in float64.
// Two sweeps: eight partial sums per sample into P (short dependency chains let many samples be
// in flight), then their sums times the sample's factor (0 where it reaches no bin).
SOFTHIST_HOT void table_1d_dots(const Axis& a, const TableBlock& b, const float* tab, const double* g, int64_t m, double* P) {
  const int64_t w8 = a.cells, row_size = 2 * w8;
  for (int64_t i = 0; i < m; ++i) row_dot8(P + 8 * i, g + b.bin[i], tab + b.q[i] * row_size, w8, b.t[i]);
}

// dL/dx = w scale (du row . G), dL/dw = (mass row . G), dL/dh += w scale (dhb row . G).
SOFTHIST_HOT void table_1d_backward(const Axis& a, const TableBlock& b, const double* g, int64_t m, bool need_w, bool need_h, double* P,
                                    float* gx, float* gw, double* gh) {
  if (gx) {
    table_1d_dots(a, b, a.du, g, m, P);
    for (int64_t i = 0; i < m; ++i) gx[i] = b.valid[i] ? float(sum8(SOFTHIST_LOAD8(P + 8 * i)) * (b.w[i] * a.scale)) : 0.0f;
  }
  if (need_w) {
    table_1d_dots(a, b, a.mass, g, m, P);
    for (int64_t i = 0; i < m; ++i) gw[i] = b.valid[i] ? float(sum8(SOFTHIST_LOAD8(P + 8 * i))) : 0.0f;
  }
  if (need_h) {
    table_1d_dots(a, b, a.dhb, g, m, P);
    double s = 0.0;
    for (int64_t i = 0; i < m; ++i) s += b.valid[i] ? sum8(SOFTHIST_LOAD8(P + 8 * i)) * (b.w[i] * a.scale) : 0.0;
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

}  // namespace softhist::native
