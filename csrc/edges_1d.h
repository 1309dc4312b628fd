// One axis of explicit (non-uniform) edges, float32 samples, a smooth kernel (Gaussian, logistic):
// a fused per-sample loop over the sample's own edges, the kernel's CDF and density read from a
// cubic table. float64 samples and the compact kernels keep the general exact path (their closed
// forms, vectorized over a block's edges there, cost more called edge by edge: 77 against 61 ms
// for the Epanechnikov kernel's forward and backward at 1M samples).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels.h"
#include "plan.h"
#include "windows.h"

namespace softhist::native {

// Whether a plan takes this path: one EXACT_EDGES axis with a smooth kernel, float32 samples.
inline bool edges_1d_serves(const Plan& p, bool float32) {
  const Axis& a = p.axes[0];  // mass membership, samples not normalized: the walk sums CDF differences
  return float32 && p.dims == 1 && a.kind == EXACT_EDGES && (a.kernel == GAUSSIAN || a.kernel == LOGISTIC) && a.membership == MASS && !a.normalize;
}

// Per thread and call: the edges' lookup (a grid of cells half the narrowest bin wide) and the edges padded with PAD copies of
// the last, so the walk reads whole groups of eight past it.
struct EdgeWalk {
  static constexpr int64_t PAD = 8;
  EdgeSearch search;             // where the grid below would be too fine
  std::vector<double> padded;
  std::vector<int32_t> start;    // per grid cell: the last edge at or below its start (empty: no grid)
  double inv = 0.0;              // grid cells per data unit, from e_0
  explicit EdgeWalk(const Axis& a);
};

// Forward: each of m samples adds w * (F(z_{k+1}) - F(z_k)) into bin k of lane i % lanes, for its
// edges k from the last at or below x - T h up to the first at or past x + T h.
void edges_1d_forward(const Axis& a, const EdgeWalk& walk, const float* xs, const float* wt, int64_t m, double* hist,
                      int64_t lanes, int64_t lane_size);
// Backward of m samples with the cells' gradients g: dL/dx and dL/dw into gx and gw (either may be
// null), dL/dh added into *gh (null: not asked), dL/dedges added into ge (null: not asked).
void edges_1d_backward(const Axis& a, const EdgeWalk& walk, const float* xs, const float* wt, const double* g, int64_t m,
                       float* gx, float* gw, double* gh, double* ge);

}  // namespace softhist::native
