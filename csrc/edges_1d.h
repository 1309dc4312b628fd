// One axis of explicit (non-uniform) edges, float32 samples, a smooth kernel (Gaussian, logistic):
// a fused per-sample loop over the sample's own edges, the kernel's CDF and density read from a
// cubic table; with many samples per unit, cubic Hermite moments on a grid of nodes in x instead
// (EdgeNodes). float64 samples and the compact kernels keep the general exact path (their closed
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

// Many samples per call: sums over samples through a grid of nodes in x (edges_1d.cpp). Per call,
// the kernel at each edge e_k and the L nodes of its row (those within T h of e_k, plus one each
// side): z, F(z), f(z) and f'(z) (the last only with `slopes`, for a backward pass).
struct EdgeNodes {
  int64_t P = 0, L = 0;  // grid intervals, nodes per edge row
  double x0 = 0.0, s = 0.0, inv_s = 0.0, lo = 0.0, hi = 0.0;  // first node, node spacing, reach of the samples
  double fT = 0.0;                  // f at the cut, from inside
  std::vector<int32_t> first;       // per edge: its row's first node
  std::vector<double> z, F, f, df;  // (bins + 1, L)
  // The same rows as (value, s x slope) pairs in x, the moments' layout (2 L each): F (forward),
  // f and the continuous part of z f (backward; edges_1d.cpp).
  std::vector<double> mass, dens, zdens;
  // Backward: per node p, 1 + the last edge at or below x_p - T h and 1 + the last below x_p + T h
  // (0 for none), and the edges with +inf after e_B: a sample steps on from its node's.
  std::vector<int32_t> cuts;  // (P + 1, 2)
  std::vector<double> ends;   // bins + 2
  EdgeNodes(const Axis& a, bool slopes);
  int64_t moments() const { return 2 * (P + L + 2); }  // doubles of one unit's moments (zero past the last node)
};
// Whether the node grid pays at n samples per unit (rows x n in all): its per-call and per-unit
// work, O((bins + 1) L) and O(P), against ~4x cheaper samples, its memory O((bins + 1) L + P).
bool edges_nodes_pay(const Axis& a, int64_t n_unit, int64_t total);
// Forward: adds m samples' Hermite moments into AB (samples with a non-finite weight walk into hist).
void edges_1d_moments(const Axis& a, const EdgeWalk& walk, const EdgeNodes& nd, const float* xs, const float* wt, int64_t m,
                      double* AB, double* hist, int64_t lanes, int64_t lane_size);
// Forward, once per unit: the moments' bin masses added into hist.
void edges_1d_nodes_forward(const Axis& a, const EdgeNodes& nd, const double* AB, double* hist);
// Backward, once per row of cells' gradients g: the node values (value, s x slope) of dL/dx / w
// (its part continuous in x) and dL/dw (each null where not asked), 2 (P + 1) doubles each.
void edges_1d_node_values(const Axis& a, const EdgeNodes& nd, const double* g, double* vx, double* vw);
// Backward of m samples: gx and gw from the node values; with AB (edge or bandwidth gradients
// asked) the samples' moments added into it. Samples with a non-finite weight walk (into gh, ge).
void edges_1d_nodes_backward(const Axis& a, const EdgeWalk& walk, const EdgeNodes& nd, const float* xs, const float* wt,
                             const double* g, int64_t m, const double* vx, const double* vw, float* gx, float* gw, double* AB,
                             double* gh, double* ge);
// Backward, once per unit: the bandwidth's and edges' gradients of the unit's moments added into
// *gh and ge (either null where not asked).
void edges_1d_nodes_sums(const Axis& a, const EdgeNodes& nd, const double* g, const double* AB, double* gh, double* ge);

}  // namespace softhist::native
