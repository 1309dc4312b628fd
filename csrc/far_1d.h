// The far bins of a never-cut kernel (Cauchy) on one float32 table axis. The table holds a
// sample's near bins n - J .. n + J (n its base bin); the bins past them, |k - n| > J, come from a
// far grid of S + 1 points per bin (f = s/S) spanning the range and E bins each side:
// * forward: each sample spreads its weight over four points of its bin with cubic Lagrange
//   weights (far_1d_spread); bin k then adds sum_{n,s} grid[n, s] m(k - n, s/S) (far_1d_apply),
//   m read from the plan's far blocks (one contiguous run per bin: see _build_far in
//   src/softhist/_cpp_backend.py, where S is sized and the error bound derived);
// * backward: dL/dx_i = w_i scale sum_k G_k dm_k/du(u_i), dL/dw_i = sum_k G_k m_k(u_i) and
//   dL/dh += w_i scale sum_k G_k dm_k/dhb(u_i) are functions of the sample's place alone: each is
//   evaluated at the grid points once per row (far_1d_gradients: V[n, s] = sum_k G_k m(k - n, s/S),
//   the transposed product) and interpolated per sample with the same weights (far_1d_backward),
//   then added to the near table's gradients.
// Samples past the grid's margin take their exact memberships (O(bins) each); non-finite ones none.
#pragma once

#include <cstdint>

#include "plan.h"
#include "table_1d.h"

namespace softhist::native {

// Doubles of one far grid (bins + 2E)(S + 1).
inline int64_t far_grid_size(const Axis& a) { return (a.bins + 2 * a.far_pad) * (a.far + 1); }
// Adds m samples' weights into `grid` (zeroed by the caller) and, for samples past the margin, their
// exact memberships into `hist` (the row's bins, unpadded); b: their table positions (table_positions).
void far_1d_spread(const Axis& a, const TableBlock& b, const float* xs, const float* wt, int64_t m, double* grid, double* hist);
// hist[k] += the far memberships of bin k from `grid`.
void far_1d_apply(const Axis& a, const double* grid, double* hist);
// From the row's cell gradients g (its bins, unpadded): the grid functions of dL/dw (vw), dL/du
// (vx) and dL/dhb (vh), each far_grid_size doubles, those not asked for (null) skipped.
void far_1d_gradients(const Axis& a, const double* g, double* vw, double* vx, double* vh);
// Adds the far parts to m samples' gradients (gx, gw: the near table's, or null) and to *gh (or null).
void far_1d_backward(const Axis& a, const TableBlock& b, const float* xs, const float* wt, int64_t m, const double* g, const double* vw,
                     const double* vx, const double* vh, float* gx, float* gw, double* gh);

}  // namespace softhist::native
