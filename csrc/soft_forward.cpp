// The soft-histogram forward pass of any number of axes: each sample's window cells (the outer
// product of its per-axis masses, times its weight) added into a partial histogram.
#include "ops.h"

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "plan.h"
#include "edges_1d.h"
#include "far_1d.h"
#include "simd.h"
#include "table_1d.h"
#include "table_2d.h"
#include "windows.h"

namespace softhist::native {

using torch::headeronly::ScalarType;

SOFTHIST_HOT void scatter_1d(double* hist, int64_t lanes, int64_t lane_size, const AxisWindows& w0, int64_t c0, const double* wt,
                             const uint8_t* valid, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    if (!valid[i]) continue;
    double* h = hist + (i & (lanes - 1)) * lane_size + w0.first[i];
    const double* a = w0.mass.data() + i * c0;
    const double wi = wt[i];
    if (!std::isfinite(wi)) {
      for (int64_t j = 0; j < c0; ++j) h[j] += weighted(wi, a[j]);
      continue;
    }
#pragma omp simd
    for (int64_t j = 0; j < c0; ++j) h[j] += wi * a[j];
  }
}

SOFTHIST_HOT void scatter_2d(double* hist, int64_t stride0, const AxisWindows& w0, int64_t c0, const AxisWindows& w1,
                             int64_t c1, const double* wt, const uint8_t* valid, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    if (!valid[i]) continue;
    const double* a0 = w0.mass.data() + i * c0;
    const double* a1 = w1.mass.data() + i * c1;
    double* h = hist + w0.first[i] * stride0 + w1.first[i];
    if (!std::isfinite(wt[i])) {
      for (int64_t j = 0; j < c0; ++j)
        for (int64_t k = 0; k < c1; ++k) h[j * stride0 + k] += weighted(wt[i], a0[j] * a1[k]);
      continue;
    }
    if (c1 == 8) {  // the common table window: one vector per row
      const v8d b = SOFTHIST_LOAD8(a1);
      for (int64_t j = 0; j < c0; ++j) SOFTHIST_AT8(h + j * stride0) += (wt[i] * a0[j]) * b;
      continue;
    }
    for (int64_t j = 0; j < c0; ++j) {
      const double c = wt[i] * a0[j];
      double* hr = h + j * stride0;
#pragma omp simd
      for (int64_t k = 0; k < c1; ++k) hr[k] += c * a1[k];
    }
  }
}

// Any D: each sample's window cells as an outer product, added at precomputed cell offsets.
void scatter_nd(double* hist, const Plan& p, const std::vector<AxisWindows>& ws, const std::vector<int64_t>& offsets,
                const double* wt, const uint8_t* valid, int64_t m, std::vector<double>& vals) {
  for (int64_t i = 0; i < m; ++i) {
    if (!valid[i]) continue;
    int64_t base = 0, count = 1;
    const bool finite = std::isfinite(wt[i]);
    vals[0] = finite ? wt[i] : 1.0;  // a non-finite weight is applied per cell, below
    for (int64_t d = 0; d < p.dims; ++d) {
      const int64_t c = p.axes[d].cells;
      const double* a = ws[d].mass.data() + i * c;
      for (int64_t r = count - 1; r >= 0; --r)
        for (int64_t j = c - 1; j >= 0; --j) vals[r * c + j] = vals[r] * a[j];
      count *= c;
      base += ws[d].first[i] * p.strides[d];
    }
    double* h = hist + base;
    if (finite)
      for (int64_t c = 0; c < count; ++c) h[offsets[c]] += vals[c];
    else
      for (int64_t c = 0; c < count; ++c) h[offsets[c]] += weighted(wt[i], vals[c]);
  }
}

// Short rows on one plain table axis (table_1d_rows_forward): rows of at most SHORT_ROW samples
// are taken a block's worth at a time, each in its own copy of at most SHORT_COPIES doubles
// together (L1), so a row costs its samples and cells, not a pass and copies of its own.
constexpr int64_t SHORT_ROW = 64;
constexpr int64_t SHORT_COPIES = 4096;

// Short rows' copies (table_1d_rows_forward, `size` doubles apart) cropped into the float32
// output, each copy zeroed again for the next group: whole where its windows would cover it,
// else window by window.
SOFTHIST_HOT void crop_short_rows(const Axis& a, const TableBlock& b, int64_t rows, int64_t n, double* copies, int64_t size, float* out) {
  const int64_t bins = a.bins, w8 = a.cells;
  for (int64_t r = 0; r < rows; ++r) {
    double* copy = copies + r * size;
    const double* at = copy + a.pad;
    float* to = out + r * bins;
#pragma omp simd
    for (int64_t c = 0; c < bins; ++c) to[c] = float(at[c]);
    if (n * w8 >= size) {
#pragma omp simd
      for (int64_t c = 0; c < size; ++c) copy[c] = 0.0;
      continue;
    }
    for (int64_t i = r * n; i < (r + 1) * n; ++i)
      for (int64_t c = 0; c < w8; c += 8) SOFTHIST_AT8(copy + b.bin[i] + c) = v8d{};
  }
}

template <typename scalar_t>
Tensor forward_impl(const Tensor& x, const std::optional<Tensor>& weight, const Plan& p) {
  const bool plain_table = std::is_same_v<scalar_t, float> && p.dims == 1 && p.axes[0].kind == TABLE && !p.axes[0].normalize &&
                           p.axes[0].far == 0;
  // Rows per group (at least two, so that a row's consecutive windows are apart), or 1: no groups.
  int64_t group = plain_table && p.n >= 1 && p.n <= SHORT_ROW ? std::min(BLOCK / p.n, SHORT_COPIES / p.stored) : 1;
  group = group >= 2 ? group : 1;
  const int64_t D = p.dims, lanes = D == 1 && group == 1 ? lanes_for(p.stored, p.n) : 1, size = lanes * p.stored;  // 2-D: no gain measured
  const int64_t chunks = chunks_per_row(p.rows, p.n, size), units = group > 1 ? (p.rows + group - 1) / group : p.rows * chunks;
  // One chunk per row (many rows, or short ones): each row accumulates in its thread's scratch
  // and is cropped into the output at once, so memory and work stay O(threads x size + rows x
  // cells), not O(rows x size). Several chunks: one partial each, summed in chunk order below.
  const bool direct = chunks == 1;
  std::unique_ptr<double[]> partial(new double[direct ? 0 : checked_mul(units, size, "partial histograms")]);
  std::vector<int64_t> sizes{p.rows};
  for (const Axis& a : p.axes) sizes.push_back(a.bins);
  Tensor out = torch::stable::new_empty(x, sizes);
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  // The cells of `row` from its `count` stored copies (lanes, or chunks x lanes), in copy order.
  auto crop_row = [&](double* src, int64_t count, int64_t row, int64_t c0, int64_t c1) {
    if (D == 1) {  // one axis: contiguous cells after the padding, the copies summed into the
      // first in copy order (the same sums as below, in vector loops; the copies are read once)
      double* at = src + p.axes[0].pad;
      for (int64_t k = 1; k < count; ++k)
#pragma omp simd
        for (int64_t c = c0; c < c1; ++c) at[c] += at[k * p.stored + c];
      scalar_t* to = op + row * p.cells;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) to[c] = scalar_t(at[c]);
      return;
    }
    // Several axes: along a run of the last axis's bins, stored cells are contiguous too; each
    // run's first stored cell is sum_d (k_d + pad_d) * stride_d of its bins k_d (no table of
    // offsets, which would take 8 bytes per cell).
    const int64_t last = p.axes[D - 1].bins;
    for (int64_t c = c0; c < c1;) {
      int64_t rest = c / last, start = p.axes[D - 1].pad + c % last;
      for (int64_t d = D - 2; d >= 0; --d) start += (rest % p.axes[d].bins + p.axes[d].pad) * p.strides[d], rest /= p.axes[d].bins;
      const int64_t end = std::min(c1, c - c % last + last);
      for (; c < end; ++c, ++start) {
        double s = 0.0;
        for (int64_t k = 0; k < count; ++k) s += src[k * p.stored + start];
        op[row * p.cells + c] = scalar_t(s);
      }
    }
  };
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight ? weight->const_data_ptr<scalar_t>() : nullptr;
  const std::vector<int64_t> offsets = D > 2 ? window_offsets(p) : std::vector<int64_t>{};
  // One or two float32 table axes read their block of positions alone; other plans need the windows.
  const bool table_1d = std::is_same_v<scalar_t, float> && D == 1 && p.axes[0].kind == TABLE;
  const bool table_2d = std::is_same_v<scalar_t, float> && D == 2 && p.axes[0].kind == TABLE && p.axes[1].kind == TABLE;
  const bool tables = table_1d || table_2d;
  const bool edges_1d = edges_1d_serves(p, std::is_same_v<scalar_t, float>);  // one float32 axis of explicit edges: edges_1d.cpp
  // Many samples per unit: through the node grid (the samples' moments, then per edge), built once per call.
  const bool edge_nodes = edges_1d && edges_nodes_pay(p.axes[0], p.n / chunks, p.rows * p.n);
  std::unique_ptr<EdgeNodes> nodes(edge_nodes ? new EdgeNodes(p.axes[0], false) : nullptr);
  // A never-cut kernel's far grid (far_1d.h): one per unit, applied to its row once the row's
  // samples are in (several chunks: their grids summed in chunk order first, below).
  const bool far = table_1d && p.axes[0].far != 0;
  const int64_t far_size = far ? far_grid_size(p.axes[0]) : 0;
  std::unique_ptr<double[]> far_partial(new double[far && !direct ? checked_mul(units, far_size, "far grids") : 0]);
  auto run = [&](int64_t u0, int64_t u1) {
    std::vector<AxisWindows> ws;
    std::unique_ptr<EdgeWalk> walk(edges_1d ? new EdgeWalk(p.axes[0]) : nullptr);
    std::vector<double> moments(edge_nodes ? nodes->moments() : 0);
    if (!tables && !edges_1d) for (const Axis& a : p.axes) ws.emplace_back(a, p.block);
    const int64_t block = tables ? BLOCK : p.block;
    std::vector<uint8_t> valid(tables ? 0 : block);
    std::vector<double> wt(tables ? 0 : block), coords(tables ? 0 : block), vals(offsets.size() + 1);
    std::unique_ptr<TableBlock> tb(table_1d ? new TableBlock : nullptr);
    std::unique_ptr<TableEnds> ends(table_1d && p.axes[0].normalize ? new TableEnds(p.axes[0]) : nullptr);
    std::unique_ptr<TableBlock2D> tb2(table_2d ? new TableBlock2D : nullptr);
    // A float64 output without padding is its own scratch: the same sums, no copy of the row.
    const bool in_output = std::is_same_v<scalar_t, double> && direct && lanes == 1 && p.stored == p.cells;
    std::unique_ptr<double[]> scratch(new double[direct && !in_output ? group * size : 0]);
    std::unique_ptr<double[]> far_scratch(new double[far && direct ? far_size : 0]);
    if (group > 1) std::fill(scratch.get(), scratch.get() + group * size, 0.0);  // kept zero between groups, below
    for (int64_t u = u0; u < u1; ++u) {
      if constexpr (std::is_same_v<scalar_t, float>) {
        if (group > 1) {  // rows r0..r1, one block, a copy each: added, cropped, and their windows zeroed again
          const int64_t r0 = u * group, rows = std::min(p.rows - r0, group), m = rows * p.n;
          table_positions(p.axes[0], xp + r0 * p.n, wp ? wp + r0 * p.n : nullptr, m, *tb);
          table_1d_rows_forward(p.axes[0], *tb, rows, p.n, scratch.get(), size);
          crop_short_rows(p.axes[0], *tb, rows, p.n, scratch.get(), size, op + r0 * p.cells);
          continue;
        }
      }
      const int64_t row = direct ? u : u / chunks, k = direct ? 0 : u % chunks;  // no divisions per short row
      double* hist = direct ? scratch.get() : partial.get() + u * size;
      if constexpr (std::is_same_v<scalar_t, double>) hist = in_output ? op + row * p.cells : hist;
      std::fill(hist, hist + size, 0.0);
      std::fill(moments.begin(), moments.end(), 0.0);
      double* far_grid = !far ? nullptr : direct ? far_scratch.get() : far_partial.get() + u * far_size;
      if (far_grid) std::fill(far_grid, far_grid + far_size, 0.0);
      const int64_t begin = row * p.n + (direct ? 0 : k * p.n / chunks), end = direct ? begin + p.n : row * p.n + (k + 1) * p.n / chunks;
      for (int64_t a = begin; a < end; a += block) {
        const int64_t m = std::min(block, end - a);
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (table_1d) {
            table_positions(p.axes[0], xp + a, wp ? wp + a : nullptr, m, *tb);
            // Normalized samples (TableEnds): those whose window meets a range end take the exact
            // windows; the others, by mass, are normalized already (their window holds the
            // kernel's whole support), by centre divided by their row sums.
            if (ends) table_1d_split_ends(p.axes[0], *tb, m, xp + a, wp ? wp + a : nullptr, *ends);
            table_1d_forward(p.axes[0], *tb, m, hist, lanes, p.stored, ends && p.axes[0].membership == CENTER);
            if (ends) table_1d_ends_forward(p.axes[0], *ends, hist, lanes, p.stored);
            if (far_grid) far_1d_spread(p.axes[0], *tb, xp + a, wp ? wp + a : nullptr, m, far_grid, hist + p.axes[0].pad);
            continue;
          }
          if (table_2d) {
            table_2d_positions(p.axes[0], p.axes[1], xp + a * 2, wp ? wp + a : nullptr, m, *tb2);
            table_2d_forward(p.axes[0], p.axes[1], *tb2, m, hist, p.strides[0]);
            continue;
          }
          if (edge_nodes) {
            edges_1d_moments(p.axes[0], *walk, *nodes, xp + a, wp ? wp + a : nullptr, m, moments.data(), hist, lanes, p.stored);
            continue;
          }
          if (edges_1d) {
            edges_1d_forward(p.axes[0], *walk, xp + a, wp ? wp + a : nullptr, m, hist, lanes, p.stored);
            continue;
          }
        }
        block_weights(wp ? wp + a : nullptr, m, wt.data());
        std::fill(valid.begin(), valid.begin() + m, uint8_t(1));
        for (int64_t d = 0; d < D; ++d) {
          load_coordinates(xp + a * D + d, D, m, coords.data());
          axis_windows(p.axes[d], coords.data(), m, ws[d], valid.data(), {true, false, false, false});
        }
        if (D == 1) scatter_1d(hist, lanes, p.stored, ws[0], p.axes[0].cells, wt.data(), valid.data(), m);
        else if (D == 2) scatter_2d(hist, p.strides[0], ws[0], p.axes[0].cells, ws[1], p.axes[1].cells, wt.data(), valid.data(), m);
        else scatter_nd(hist, p, ws, offsets, wt.data(), valid.data(), m, vals);
      }
      if (edge_nodes) edges_1d_nodes_forward(p.axes[0], *nodes, moments.data(), hist);
      if (far_grid && direct) far_1d_apply(p.axes[0], far_grid, hist + p.axes[0].pad);
      if (direct && !in_output) crop_row(hist, lanes, row, 0, p.cells);
    }
  };
  // A single unit runs here: no pool hand-off for small calls.
  if (units == 1) run(0, 1);
  else torch::stable::parallel_for(0, units, 1, run);
  if (far && !direct) {  // each row's far grids, in chunk order, applied to its first partial
    torch::stable::parallel_for(0, p.rows, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        double* first = far_partial.get() + row * chunks * far_size;
        for (int64_t k = 1; k < chunks; ++k)
#pragma omp simd
          for (int64_t j = 0; j < far_size; ++j) first[j] += first[k * far_size + j];
        far_1d_apply(p.axes[0], first, partial.get() + row * chunks * size + p.axes[0].pad);
      }
    });
  }
  if (!direct) {  // each row's partials, in chunk order
    torch::stable::parallel_for(0, p.rows * p.cells, 4096, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1;) {
        const int64_t row = c / p.cells, end = std::min(c1, (row + 1) * p.cells);
        crop_row(partial.get() + row * chunks * size, chunks * lanes, row, c - row * p.cells, end - row * p.cells);
        c = end;
      }
    });
  }
  return out;
}

Tensor soft_histogram(Tensor x, std::optional<Tensor> weight, Tensor edges, Tensor tables, std::vector<int64_t> ints,
                      std::vector<double> floats) {
  Plan p = make_plan(x, edges, tables, ints, floats);
  if (weight) STD_TORCH_CHECK(weight->scalar_type() == x.scalar_type() && weight->is_contiguous() && weight->numel() == p.rows * p.n,
                              "softhist: weight must be contiguous (rows, n) in x's dtype");
  if (x.scalar_type() == ScalarType::Double) return forward_impl<double>(x, weight, p);
  STD_TORCH_CHECK(x.scalar_type() == ScalarType::Float, "softhist: x must be float32 or float64");
  return forward_impl<float>(x, weight, p);
}

}  // namespace softhist::native
