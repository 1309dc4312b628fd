// Reading and checking a call's plan (see plan.h).
#include "plan.h"

#include <torch/headeronly/core/ScalarType.h>

#include <cmath>

#include "kernels.h"

namespace softhist::native {

using torch::headeronly::ScalarType;

Plan make_plan(const Tensor& x, const Tensor& edges, const Tensor& tables, const std::vector<int64_t>& ints,
               const std::vector<double>& floats) {
  STD_TORCH_CHECK(x.dim() == 3, "softhist: x must be (rows, n, D)");
  STD_TORCH_CHECK(x.is_contiguous() && edges.is_contiguous() && tables.is_contiguous(), "softhist: inputs must be contiguous");
  STD_TORCH_CHECK(edges.scalar_type() == ScalarType::Double, "softhist: edges must be float64");
  STD_TORCH_CHECK(tables.scalar_type() == ScalarType::Float, "softhist: tables must be float32");
  Plan p;
  p.rows = x.size(0);
  p.n = x.size(1);
  p.dims = x.size(2);
  STD_TORCH_CHECK(p.dims >= 1, "softhist: x needs at least one axis");
  STD_TORCH_CHECK(int64_t(ints.size()) == INTS_PER_AXIS * p.dims && int64_t(floats.size()) == FLOATS_PER_AXIS * p.dims,
                  "softhist: one plan entry per axis expected");
  // Edges are read only by EXACT_EDGES and HARD axes; a plan without them may send none.
  const bool no_edges = edges.numel() == 0;
  const double* e = no_edges ? nullptr : edges.const_data_ptr<double>();
  const float* tab = tables.const_data_ptr<float>();
  int64_t table_used = 0;
  for (int64_t d = 0; d < p.dims; ++d) {
    Axis a;
    const int64_t* in = ints.data() + INTS_PER_AXIS * d;
    const double* fl = floats.data() + FLOATS_PER_AXIS * d;
#define SOFTHIST_READ_INT(name) a.name = *in++;
#define SOFTHIST_READ_FLOAT(name) a.name = *fl++;
    SOFTHIST_AXIS_INTS(SOFTHIST_READ_INT)
    SOFTHIST_AXIS_FLOATS(SOFTHIST_READ_FLOAT)
#undef SOFTHIST_READ_INT
#undef SOFTHIST_READ_FLOAT
    STD_TORCH_CHECK(a.bins >= 1 && a.bins < (int64_t(1) << 30) && a.width >= 1, "softhist: bad axis plan (1 to 2^30 bins per axis)");
    a.edges = no_edges ? nullptr : e + p.edge_total;
    p.edge_total += a.bins + 1;
    if (a.kind == TABLE) {
      // One piece: Q = 2^k rows per bin. Pieces: rows [0, row1), [row1, row2), [row2, Q) on
      // [0, cut1), [cut1, cut2), [cut2, 1), each of at least two rows (its own, then one more).
      auto piece_ok = [](int64_t rows, double start, double end) { return start == end ? rows == 0 : start < end && rows >= 2; };
      const bool one_piece = a.cut1 == 1.0 && a.cut2 == 1.0 && (a.q & (a.q - 1)) == 0;
      const bool pieces = piece_ok(a.row1, 0.0, a.cut1) && piece_ok(a.row2 - a.row1, a.cut1, a.cut2) && piece_ok(a.q - a.row2, a.cut2, 1.0);
      STD_TORCH_CHECK(a.q >= 1 && a.q <= (int64_t(1) << 20) && a.reach >= 0 && a.reach < (int64_t(1) << 20) && a.width == 2 * a.reach + 1 &&
                          (one_piece || pieces),
                      "softhist: bad table plan");
      STD_TORCH_CHECK((a.bins + 2 * a.reach) * (a.q + 1) < (int64_t(1) << 31), "softhist: table grid past 2^31 points");
      a.cells = (a.width + 7) / 8 * 8;
      a.pad = 2 * a.reach;
      a.extent = a.bins + 2 * a.pad + (a.cells - a.width);
      const int64_t size = a.q * 2 * a.cells;
      a.mass = tab + table_used, a.du = a.mass + size, a.dhb = a.du + size, a.sums = a.dhb + size;
      table_used += 3 * size + 3 * 2 * a.q;
      if (a.far != 0) {  // a never-cut kernel's far grid (far_1d.h): one float32 axis, points 0..S of 3 or more intervals per bin
        STD_TORCH_CHECK(a.kernel == CAUCHY && p.dims == 1 && x.scalar_type() == ScalarType::Float && a.far >= 3 && a.far <= 1024 &&
                            a.far_pad > a.reach && a.far_pad < (int64_t(1) << 20),
                        "softhist: bad far grid plan");
        checked_mul(checked_mul(a.bins + 2 * a.far_pad, a.far + 1, "far grid points"), a.bins, "far grid x bins");
        const int64_t far_size = (2 * a.bins + 2 * a.far_pad - 1) * (a.far + 1);
        a.far_mass = tab + table_used, a.far_du = a.far_mass + far_size, a.far_dhb = a.far_du + far_size;
        table_used += 3 * far_size;
      }
    } else if (a.kind == HARD) {
      a.cells = 1;
      a.extent = a.bins;
    } else {
      STD_TORCH_CHECK(a.kind == EXACT_UNIFORM || a.kind == EXACT_EDGES, "softhist: unknown axis kind ", a.kind);
      STD_TORCH_CHECK(a.width >= 2 && a.width <= a.bins + 1, "softhist: exact windows hold 2 to bins + 1 edges");
      a.cells = a.width - 1;
      a.extent = a.bins;
    }
    STD_TORCH_CHECK(a.kernel >= 0 && a.kernel <= 7, "softhist: unknown kernel id ", a.kernel);
    STD_TORCH_CHECK((a.membership == MASS || a.membership == CENTER) && (a.normalize == 0 || a.normalize == 1) &&
                        (a.kind != TABLE || a.normalize == 0 || (p.dims == 1 && x.scalar_type() == ScalarType::Float)),
                    "softhist: bad membership or normalization (normalized tables: one float32 axis)");
    STD_TORCH_CHECK(a.far == 0 || (a.kind == TABLE && a.normalize == 0), "softhist: a far grid goes with a table of samples not normalized");
    STD_TORCH_CHECK(a.support > 0.0 && (std::isfinite(a.support) || a.kind == HARD || (a.kind != TABLE && a.width == a.bins + 1) ||
                                        (a.kind == TABLE && a.far != 0)),
                    "softhist: a kernel that is never cut takes windows of the whole axis");
    STD_TORCH_CHECK(!no_edges || a.kind == EXACT_UNIFORM || a.kind == TABLE, "softhist: this axis reads its edges; none were given");
    p.axes.push_back(a);
  }
  STD_TORCH_CHECK((no_edges || p.edge_total == edges.numel()) && table_used <= tables.numel(), "softhist: edges or tables do not match the plan");
  // Every product sized from here on: cells, stored cells and window cells per row, and the
  // same over rows (outputs, gradients). Checked once, so later arithmetic cannot wrap.
  p.strides.assign(p.dims, 1);
  for (int64_t d = p.dims - 1; d >= 0; --d) {
    p.strides[d] = p.stored;
    p.stored = checked_mul(p.stored, p.axes[d].extent, "histogram cells (with window padding)");
    p.cells = checked_mul(p.cells, p.axes[d].bins, "histogram cells");
    p.window_cells = checked_mul(p.window_cells, p.axes[d].cells, "cells of one sample's window");
  }
  checked_mul(p.rows, p.stored, "rows x histogram cells");
  checked_mul(checked_mul(p.rows, p.n, "rows x samples"), p.dims, "samples x axes");
  // Window buffers (z, F, f, masses, derivatives: a few per axis and thread) stay bounded
  // whatever the bandwidth: wide windows take smaller blocks, down to one sample.
  int64_t widest = 1;
  for (const Axis& a : p.axes) widest = std::max({widest, a.width, a.cells});
  p.block = std::clamp<int64_t>(WINDOW_VALUES / widest, 1, BLOCK);
  return p;
}

// Offsets of the cells of a box that spans count(d) cells from start(d) along each axis d, in
// the row-major layout of p.strides.
template <class Count, class Start>
static std::vector<int64_t> box_offsets(const Plan& p, Count count, Start start) {
  std::vector<int64_t> offsets{0};
  for (int64_t d = 0; d < p.dims; ++d) {
    std::vector<int64_t> next;
    next.reserve(offsets.size() * count(d));
    for (int64_t o : offsets)
      for (int64_t k = 0; k < count(d); ++k) next.push_back(o + (start(d) + k) * p.strides[d]);
    offsets.swap(next);
  }
  return offsets;
}

std::vector<int64_t> window_offsets(const Plan& p) {
  return box_offsets(p, [&](int64_t d) { return p.axes[d].cells; }, [](int64_t) { return int64_t(0); });
}

std::vector<int64_t> crop_offsets(const Plan& p) {
  return box_offsets(p, [&](int64_t d) { return p.axes[d].bins; }, [&](int64_t d) { return p.axes[d].pad; });
}

}  // namespace softhist::native
