// Two table axes (2-D): a sample's window is the outer product a0 (x) a1 of its two axes'
// masses, each read from its axis's (Q, W) table and interpolated as in the 1-D path
// (table_1d.cpp), in registers: nothing per sample goes through the general window buffers.
//
// Forward: the W0 window rows j of the sample each get (w a0_j) a1, one vector operation per
// eight cells of a1 (the rows of axis 0 past W0 are the table's zero padding and are skipped).
//
// Backward (soft_backward.cpp has the general derivation): with G_j the window's row j of cell
// gradients, one pass over the W0 rows gathers the three vectors
//   U = sum_j a0_j G_j,   X = sum_j da0_j/du0 G_j,   H = sum_j da0_j/dhb0 G_j,
// after which, in bin units u_d = (x_d - lo_d) scale_d and hb_d = h scale_d,
//   dL/dw = a1 . U,   dL/dx_0 = w scale_0 (a1 . X),   dL/dx_1 = w scale_1 (da1/du1 . U),
//   dL/dh_0 = w scale_0 (a1 . H),   dL/dh_1 = w scale_1 (da1/dhb1 . U).
#include "table_2d.h"

#include <algorithm>
#include <cmath>

#include "simd.h"
#include "windows.h"

namespace softhist::native {

constexpr int64_t MAX_CELLS = 128;  // a table window's stored bins, at most (reach < 64, plan.h)

// A table in pieces (a compact kernel) locates its row by its piece; the common case keeps the
// plain loop, which vectorizes.
template <bool PIECES0, bool PIECES1>
SOFTHIST_INLINE void locate_2d(const TableGrid& grid0, const TableGrid& grid1, const float* xs, int64_t m, TableBlock2D& b) {
  int32_t *__restrict bin0 = b.bin0, *__restrict q0 = b.q0, *__restrict bin1 = b.bin1, *__restrict q1 = b.q1;
  float *__restrict t0 = b.t0, *__restrict t1 = b.t1;
  int32_t* __restrict valid = b.valid;
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const double x0 = double(xs[2 * i]), x1 = double(xs[2 * i + 1]);
    const bool ok0 = PIECES0 ? grid0.locate_pieces(x0, bin0[i], q0[i], t0[i]) : grid0.locate(x0, bin0[i], q0[i], t0[i]);
    const bool ok1 = PIECES1 ? grid1.locate_pieces(x1, bin1[i], q1[i], t1[i]) : grid1.locate(x1, bin1[i], q1[i], t1[i]);
    valid[i] = int32_t(ok0 & ok1);
  }
}

SOFTHIST_HOT void table_2d_positions(const Axis& a0, const Axis& a1, const float* xs, const float* wt, int64_t m, TableBlock2D& b) {
  const TableGrid grid0(a0), grid1(a1);
  if (grid0.pieces)
    grid1.pieces ? locate_2d<true, true>(grid0, grid1, xs, m, b) : locate_2d<true, false>(grid0, grid1, xs, m, b);
  else
    grid1.pieces ? locate_2d<false, true>(grid0, grid1, xs, m, b) : locate_2d<false, false>(grid0, grid1, xs, m, b);
  double* __restrict w = b.w;
  const int32_t* __restrict valid = b.valid;
  // The weights in loops of their own: `wt ? wt[i] : 1` inside the loop above vectorizes into a
  // masked load from the null pointer, whose fault suppression costs a microcode assist per
  // vector on some cores (AMD Zen 4: 3x the whole forward pass's time).
  if (wt) {
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) w[i] = valid[i] ? double(wt[i]) : 0.0;
  } else {
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) w[i] = valid[i] ? 1.0 : 0.0;
  }
}

// out[0..c) = the table row q at t (c a multiple of 8).
SOFTHIST_INLINE void lerp_row(double* out, const float* tab, int64_t c, int32_t q, float t) {
  const float* row = tab + int64_t(q) * 2 * c;
  for (int64_t j = 0; j < c; j += 8) SOFTHIST_AT8(out + j) = SOFTHIST_LERP8F(row, c, j, t);
}

// Phase copies: a window's row of eight cells starts at any cell, so its 64-byte store usually
// spans two cache lines, which costs a store about twice an aligned one. With the row stride
// padded to a multiple of 8, a window starting at stored cell s (s mod 8 = its phase p) goes to
// copy p, shifted by p cells: there every row's eight cells are one aligned line. The copies
// are summed in phase order into the histogram once the unit's samples are in (fold).
// Copy p's cell c is at base + GAP + p (size - 1) + c: cells [0, p) of a copy are never written
// (its windows start at cells = p mod 8), and read back there fall into the zeroed gap of
// GAP - p >= 1 cells after the copy before.
constexpr int64_t PHASES = 8, GAP = 8;

bool Table2DCopies::fits(const Axis& a0, const Axis& a1, int64_t samples) {
  const int64_t cells = a0.extent * ((a1.extent + 7) / 8 * 8);
  return a1.cells == 8 && PHASES * cells * 8 <= COPIES_BYTES && samples >= cells;
}

Table2DCopies::Table2DCopies(const Axis& a0, const Axis& a1)
    : stride((a1.extent + 7) / 8 * 8), size(a0.extent * stride + GAP), rows(a0.extent), cols(a1.extent),
      mem(new double[PHASES * size + GAP + 8]) {
  base = mem.get() + (8 - (reinterpret_cast<uintptr_t>(mem.get()) / 8) % 8) % 8;  // 64-byte aligned
}

void Table2DCopies::clear() { std::fill(base, base + PHASES * size + GAP, 0.0); }

void Table2DCopies::fold(double* hist, int64_t stride0) const {
  for (int64_t p = 0; p < PHASES; ++p) {
    const double* copy = base + GAP + p * (size - 1);
    for (int64_t r = 0; r < rows; ++r)
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) hist[r * stride0 + c] += copy[r * stride + c];
  }
}

// EIGHT: both axes' stored windows are 8 cells (the common case): each sample's two rows stay in
// vector registers (no buffer in memory, whose stores would compete with the scatter's), then
// one multiply-add of eight doubles per window row; W7: axis 0's window is 7 bins (the default
// bandwidth's), that loop unrolled at compile time. COPIES: into phase copies (aligned stores)
// rather than the histogram itself.
template <bool EIGHT, bool W7, bool COPIES>
SOFTHIST_INLINE void forward_loop(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, double* hist, int64_t stride0,
                                  Table2DCopies* copies) {
  const int64_t c0 = EIGHT ? 8 : a0.cells, c1 = EIGHT ? 8 : a1.cells, W0 = W7 ? 7 : a0.width;
  if (COPIES) hist = copies->base + GAP, stride0 = copies->stride;
  const int64_t shift = COPIES ? copies->size - 1 : 0;
  double A[MAX_CELLS], B1[MAX_CELLS];
  for (int64_t i = 0; i < m; ++i) {
    if (!b.valid[i]) continue;
    const int64_t o = int64_t(b.bin0[i]) * stride0 + b.bin1[i];
    double* h = hist + (o & 7) * shift + o;
    const double w = b.w[i];
    if (EIGHT && std::isfinite(w)) {
      // Axis 0's row times the weight, w a0_j (the cells past W0 are the table's zeros), axis 1's row.
      const v8d a = w * SOFTHIST_LERP8F(a0.mass + int64_t(b.q0[i]) * 16, 8, 0, b.t0[i]);
      const v8d b1 = SOFTHIST_LERP8F(a1.mass + int64_t(b.q1[i]) * 16, 8, 0, b.t1[i]);
      for (int64_t j = 0; j < W0; ++j) {
        if (COPIES) *reinterpret_cast<v8d*>(h + j * stride0) += a[j] * b1;  // aligned
        else SOFTHIST_AT8(h + j * stride0) += a[j] * b1;
      }
      continue;
    }
    lerp_row(A, a0.mass, c0, b.q0[i], b.t0[i]);
    lerp_row(B1, a1.mass, c1, b.q1[i], b.t1[i]);
    if (!std::isfinite(w)) {  // rare: the weight goes only where the cell's mass is not 0
      for (int64_t j = 0; j < W0; ++j)
        for (int64_t k = 0; k < c1; ++k) h[j * stride0 + k] += weighted(w, A[j] * B1[k]);
      continue;
    }
    for (int64_t j = 0; j < W0; ++j) {
      const double c = w * A[j];
      for (int64_t k = 0; k < c1; k += 8) {
        if (COPIES) *reinterpret_cast<v8d*>(h + j * stride0 + k) += c * SOFTHIST_LOAD8(B1 + k);
        else SOFTHIST_AT8(h + j * stride0 + k) += c * SOFTHIST_LOAD8(B1 + k);
      }
    }
  }
}

SOFTHIST_HOT void table_2d_forward(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, double* hist, int64_t stride0,
                                   Table2DCopies* copies) {
  const bool eight = a0.cells == 8 && a1.cells == 8, w7 = eight && a0.width == 7;
  if (copies && w7) forward_loop<true, true, true>(a0, a1, b, m, hist, stride0, copies);
  else if (copies) forward_loop<false, false, true>(a0, a1, b, m, hist, stride0, copies);
  else if (w7) forward_loop<true, true, false>(a0, a1, b, m, hist, stride0, copies);
  else if (eight) forward_loop<true, false, false>(a0, a1, b, m, hist, stride0, copies);
  else forward_loop<false, false, false>(a0, a1, b, m, hist, stride0, copies);
}

template <int64_t FIXED1>
SOFTHIST_INLINE void backward_loop(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, const double* g, int64_t stride0,
                                   bool need_h, float* gx, float* gw, double* gh) {
  const int64_t c0 = a0.cells, c1 = FIXED1 ? FIXED1 : a1.cells, W0 = a0.width;
  double A[MAX_CELLS], X[MAX_CELLS], H[MAX_CELLS], U[MAX_CELLS], XU[MAX_CELLS], HU[MAX_CELLS], row[MAX_CELLS];
  double sum_h0 = 0.0, sum_h1 = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    if (!b.valid[i]) {
      if (gx) gx[2 * i] = 0.0f, gx[2 * i + 1] = 0.0f;
      if (gw) gw[i] = 0.0f;
      continue;
    }
    lerp_row(A, a0.mass, c0, b.q0[i], b.t0[i]);
    if (gx) lerp_row(X, a0.du, c0, b.q0[i], b.t0[i]);
    if (need_h) lerp_row(H, a0.dhb, c0, b.q0[i], b.t0[i]);
    const double* G = g + int64_t(b.bin0[i]) * stride0 + b.bin1[i];
    for (int64_t k = 0; k < c1; k += 8) SOFTHIST_AT8(U + k) = v8d{}, SOFTHIST_AT8(XU + k) = v8d{}, SOFTHIST_AT8(HU + k) = v8d{};
    for (int64_t j = 0; j < W0; ++j) {  // one pass over the window's gradients
      for (int64_t k = 0; k < c1; k += 8) {
        const v8d gj = SOFTHIST_LOAD8(G + j * stride0 + k);
        SOFTHIST_AT8(U + k) += A[j] * gj;
        if (gx) SOFTHIST_AT8(XU + k) += X[j] * gj;
        if (need_h) SOFTHIST_AT8(HU + k) += H[j] * gj;
      }
    }
    // Axis 1's rows against U, X, H: eight partial sums each, then their fixed tree.
    v8d sw = {}, sx0 = {}, sx1 = {}, sh0 = {}, sh1 = {};
    lerp_row(row, a1.mass, c1, b.q1[i], b.t1[i]);
    for (int64_t k = 0; k < c1; k += 8) {
      const v8d a = SOFTHIST_LOAD8(row + k);
      sw += a * SOFTHIST_LOAD8(U + k);
      sx0 += a * SOFTHIST_LOAD8(XU + k);
      sh0 += a * SOFTHIST_LOAD8(HU + k);
    }
    if (gx) {
      lerp_row(row, a1.du, c1, b.q1[i], b.t1[i]);
      for (int64_t k = 0; k < c1; k += 8) sx1 += SOFTHIST_LOAD8(row + k) * SOFTHIST_LOAD8(U + k);
    }
    if (need_h) {
      lerp_row(row, a1.dhb, c1, b.q1[i], b.t1[i]);
      for (int64_t k = 0; k < c1; k += 8) sh1 += SOFTHIST_LOAD8(row + k) * SOFTHIST_LOAD8(U + k);
    }
    const double w = b.w[i];
    if (gw) gw[i] = float(sum8(sw));
    if (gx) gx[2 * i] = float(sum8(sx0) * (w * a0.scale)), gx[2 * i + 1] = float(sum8(sx1) * (w * a1.scale));
    if (need_h) sum_h0 += sum8(sh0) * (w * a0.scale), sum_h1 += sum8(sh1) * (w * a1.scale);
  }
  if (need_h) gh[0] += sum_h0, gh[1] += sum_h1;
}

SOFTHIST_HOT void table_2d_backward(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, const double* g, int64_t stride0,
                                    bool need_h, float* gx, float* gw, double* gh) {
  if (a1.cells == 8) backward_loop<8>(a0, a1, b, m, g, stride0, need_h, gx, gw, gh);
  else backward_loop<0>(a0, a1, b, m, g, stride0, need_h, gx, gw, gh);
}

}  // namespace softhist::native
