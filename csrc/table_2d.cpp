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

// EIGHT: both axes' stored windows are 8 cells (the common case): each sample's two rows stay in
// vector registers (no buffer in memory, whose stores would compete with the scatter's), then
// one multiply-add of eight doubles per window row; W7: axis 0's window is 7 bins (the default
// bandwidth's), that loop unrolled at compile time.
template <bool EIGHT, bool W7>
SOFTHIST_INLINE void forward_loop(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, double* hist, int64_t stride0) {
  const int64_t c0 = EIGHT ? 8 : a0.cells, c1 = EIGHT ? 8 : a1.cells, W0 = W7 ? 7 : a0.width;
  double A[MAX_CELLS], B1[MAX_CELLS];
  for (int64_t i = 0; i < m; ++i) {
    if (!b.valid[i]) continue;
    double* h = hist + int64_t(b.bin0[i]) * stride0 + b.bin1[i];
    const double w = b.w[i];
    if (EIGHT && std::isfinite(w)) {
      // Axis 0's row times the weight, w a0_j (the cells past W0 are the table's zeros), axis 1's row.
      const v8d a = w * SOFTHIST_LERP8F(a0.mass + int64_t(b.q0[i]) * 16, 8, 0, b.t0[i]);
      const v8d b1 = SOFTHIST_LERP8F(a1.mass + int64_t(b.q1[i]) * 16, 8, 0, b.t1[i]);
      for (int64_t j = 0; j < W0; ++j) SOFTHIST_AT8(h + j * stride0) += a[j] * b1;
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
      for (int64_t k = 0; k < c1; k += 8) SOFTHIST_AT8(h + j * stride0 + k) += c * SOFTHIST_LOAD8(B1 + k);
    }
  }
}

SOFTHIST_HOT void table_2d_forward(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, double* hist, int64_t stride0) {
  const bool eight = a0.cells == 8 && a1.cells == 8;
  if (eight && a0.width == 7) forward_loop<true, true>(a0, a1, b, m, hist, stride0);
  else if (eight) forward_loop<true, false>(a0, a1, b, m, hist, stride0);
  else forward_loop<false, false>(a0, a1, b, m, hist, stride0);
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

// The eight sums sum8(p[0]), ..., sum8(p[7]) as one vector, each by sum8's own tree
// (x0 + x1) + (x2 + x3), x_l = v_l + v_{l+4}: three rounds of adding lanes paired across vectors
// instead of eight reductions of one vector each.
SOFTHIST_INLINE void sum8x8(v8d& out, const v8d* p) {
  v8d q[4], r[2];
  for (int k = 0; k < 4; ++k)  // lanes 0-3: p[2k]'s x_0..x_3; lanes 4-7: p[2k + 1]'s
    q[k] = __builtin_shufflevector(p[2 * k], p[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(p[2 * k], p[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15);
  for (int k = 0; k < 2; ++k)  // two lanes per vector p: x0 + x1, x2 + x3
    r[k] = __builtin_shufflevector(q[2 * k], q[2 * k + 1], 0, 2, 4, 6, 8, 10, 12, 14) +
           __builtin_shufflevector(q[2 * k], q[2 * k + 1], 1, 3, 5, 7, 9, 11, 13, 15);
  out = __builtin_shufflevector(r[0], r[1], 0, 2, 4, 6, 8, 10, 12, 14) + __builtin_shufflevector(r[0], r[1], 1, 3, 5, 7, 9, 11, 13, 15);
}

// Eight-cell windows on both axes (the common case), what is needed known at compile time: all
// rows and the sums U, X, H stay in vector registers; each window row of gradients is loaded once
// for all three. W7: axis 0's window is 7 bins, its loop unrolled. Sums over the rows j in two
// interleaved halves (even j, odd j; then added), so each sum's chain of multiply-adds is half as
// long. The final dot products of eight samples are reduced together (sum8x8). Samples that
// reach no bin run too (their positions are parked at row 0 of bin 0) and are given 0 after.
template <bool W7, bool GX, bool NEED_H>
SOFTHIST_INLINE void backward_eight(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, const double* g, int64_t stride0,
                                    float* gx, float* gw, double* gh) {
  const int64_t W0 = W7 ? 7 : a0.width;
  double sum_h0 = 0.0, sum_h1 = 0.0;
  v8d P[5][8];  // per sample of a group: the products whose sums are dL/dw, dL/dx_0, dL/dx_1, dL/dh_0, dL/dh_1 (unscaled)
  for (int64_t i0 = 0; i0 < m; i0 += 8) {
    const int64_t n = std::min<int64_t>(8, m - i0);
    for (int64_t s = 0; s < 8; ++s) {
      if (s >= n) {
        for (auto& q : P) q[s] = v8d{};
        continue;
      }
      const int64_t i = i0 + s, r0 = int64_t(b.q0[i]) * 16, r1 = int64_t(b.q1[i]) * 16;
      const float t0 = b.t0[i], t1 = b.t1[i];
      const v8d A = SOFTHIST_LERP8F(a0.mass + r0, 8, 0, t0);
      const v8d X = GX ? SOFTHIST_LERP8F(a0.du + r0, 8, 0, t0) : v8d{};
      const v8d H = NEED_H ? SOFTHIST_LERP8F(a0.dhb + r0, 8, 0, t0) : v8d{};
      const double* G = g + int64_t(b.bin0[i]) * stride0 + b.bin1[i];
      v8d U[2] = {}, XU[2] = {}, HU[2] = {};
      for (int64_t j = 0; j < W0; ++j) {  // one pass over the window's gradients
        const v8d gj = SOFTHIST_LOAD8(G + j * stride0);
        U[j & 1] += A[j] * gj;
        if (GX) XU[j & 1] += X[j] * gj;
        if (NEED_H) HU[j & 1] += H[j] * gj;
      }
      const v8d u = U[0] + U[1];
      const v8d row = SOFTHIST_LERP8F(a1.mass + r1, 8, 0, t1);  // axis 1's rows against U, X, H
      P[0][s] = row * u;
      if (GX) P[1][s] = row * (XU[0] + XU[1]), P[2][s] = SOFTHIST_LERP8F(a1.du + r1, 8, 0, t1) * u;
      if (NEED_H) P[3][s] = row * (HU[0] + HU[1]), P[4][s] = SOFTHIST_LERP8F(a1.dhb + r1, 8, 0, t1) * u;
    }
    v8d S[5];
    if (gw) sum8x8(S[0], P[0]);
    if (GX) sum8x8(S[1], P[1]), sum8x8(S[2], P[2]);
    if (NEED_H) sum8x8(S[3], P[3]), sum8x8(S[4], P[4]);
    for (int64_t s = 0; s < n; ++s) {
      const int64_t i = i0 + s;
      const bool ok = b.valid[i];
      const double w = b.w[i];
      if (gw) gw[i] = ok ? float(S[0][s]) : 0.0f;
      if (GX) gx[2 * i] = ok ? float(S[1][s] * (w * a0.scale)) : 0.0f, gx[2 * i + 1] = ok ? float(S[2][s] * (w * a1.scale)) : 0.0f;
      if (NEED_H && ok) sum_h0 += S[3][s] * (w * a0.scale), sum_h1 += S[4][s] * (w * a1.scale);
    }
  }
  if (NEED_H) gh[0] += sum_h0, gh[1] += sum_h1;
}

template <bool W7>
SOFTHIST_INLINE void backward_eight_needs(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, const double* g, int64_t stride0,
                                          bool need_h, float* gx, float* gw, double* gh) {
  if (gx && need_h) backward_eight<W7, true, true>(a0, a1, b, m, g, stride0, gx, gw, gh);
  else if (gx) backward_eight<W7, true, false>(a0, a1, b, m, g, stride0, gx, gw, gh);
  else if (need_h) backward_eight<W7, false, true>(a0, a1, b, m, g, stride0, gx, gw, gh);
  else backward_eight<W7, false, false>(a0, a1, b, m, g, stride0, gx, gw, gh);
}

SOFTHIST_HOT void table_2d_backward(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, const double* g, int64_t stride0,
                                    bool need_h, float* gx, float* gw, double* gh) {
  if (a0.cells == 8 && a1.cells == 8 && a0.width == 7) backward_eight_needs<true>(a0, a1, b, m, g, stride0, need_h, gx, gw, gh);
  else if (a0.cells == 8 && a1.cells == 8) backward_eight_needs<false>(a0, a1, b, m, g, stride0, need_h, gx, gw, gh);
  else if (a1.cells == 8) backward_loop<8>(a0, a1, b, m, g, stride0, need_h, gx, gw, gh);
  else backward_loop<0>(a0, a1, b, m, g, stride0, need_h, gx, gw, gh);
}

}  // namespace softhist::native
