// Exact counts: each sample's cell by torch.histc's arithmetic in the input's dtype (equal-width
// axes under the "histc" rule: truncate (x - lo) * B / (hi - lo), each operation rounded as torch
// rounds it) or by numpy's comparison with the edges (e_k <= x < e_{k+1}, the last bin closed;
// float64 compares exactly what the promoted dtype compares). Unweighted counts sum in int64,
// weights in float64; per chunk, added in chunk order.
#include "ops.h"

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "plan.h"
#include "simd.h"
#include "windows.h"

namespace softhist::native {

using torch::headeronly::ScalarType;

template <typename scalar_t>
SOFTHIST_INLINE int64_t histc_bin(scalar_t x, scalar_t lo, scalar_t hi, scalar_t bins, int64_t B, bool& ok) {
  ok = (x >= lo) & (x <= hi);  // false for NaN
  scalar_t pos = (x - lo) * bins;
  pos = pos / (hi - lo);
  if (pos != pos) pos = 0;  // nan_to_num
  pos = std::min(std::max(pos, scalar_t(0)), bins);
  return std::min(int64_t(pos), B - 1);
}

// torch.histc's rule along one axis for a block of m samples (stride D): cell[i] += bin * stride,
// inside[i] &= whether the sample counts. One loop without branches, so it vectorizes (the
// division included); one clone per ISA for each input dtype.
template <typename scalar_t>
SOFTHIST_INLINE void histc_axis(const scalar_t* xs, int64_t D, int64_t m, scalar_t lo, scalar_t hi, int64_t B, int64_t stride,
                                int64_t* __restrict cell, uint8_t* __restrict inside) {
  const scalar_t fb = scalar_t(B);
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    bool ok;
    cell[i] += histc_bin<scalar_t>(xs[i * D], lo, hi, fb, B, ok) * stride;
    inside[i] &= uint8_t(ok);
  }
}
SOFTHIST_HOT void histc_axis_f32(const float* xs, int64_t D, int64_t m, float lo, float hi, int64_t B, int64_t stride, int64_t* cell,
                                 uint8_t* inside) {
  histc_axis<float>(xs, D, m, lo, hi, B, stride, cell, inside);
}
SOFTHIST_HOT void histc_axis_f64(const double* xs, int64_t D, int64_t m, double lo, double hi, int64_t B, int64_t stride, int64_t* cell,
                                 uint8_t* inside) {
  histc_axis<double>(xs, D, m, lo, hi, B, stride, cell, inside);
}

// Adds each counted sample into its lane's copy of the histogram (i % lanes).
SOFTHIST_HOT void count_block(const int64_t* cell, const uint8_t* inside, int64_t m, int64_t lanes, int64_t cells, int64_t* count) {
  for (int64_t i = 0; i < m; ++i) count[(i & (lanes - 1)) * cells + cell[i]] += inside[i];
}

template <typename scalar_t>
Tensor hard_impl(const Tensor& x, const std::optional<Tensor>& weight, const double* e, const std::vector<int64_t>& bins,
                 const std::vector<double>& ranges, bool histc_rule) {
  const int64_t rows = x.size(0), n = x.size(1), D = x.size(2);
  std::vector<int64_t> strides(D, 1), offsets(D, 0);
  int64_t cells = 1, edge_total = 0;
  for (int64_t d = D - 1; d >= 0; --d) strides[d] = cells, cells = checked_mul(cells, bins[d], "histogram cells");
  checked_mul(rows, cells, "rows x histogram cells");
  for (int64_t d = 0; d < D; ++d) offsets[d] = edge_total, edge_total += bins[d] + 1;
  // Interleaved copies (sorted or constant data) only for long rows and small histograms: a count
  // is one aligned 8-byte add, whose store forwards to the next load, so copies buy less here.
  const int64_t lanes = n >= 8 * cells && LANES * cells <= 4096 ? LANES : 1, size = lanes * cells;
  const int64_t chunks = chunks_per_row(rows, n, size), units = rows * chunks;
  const bool weighted = weight.has_value();
  // As in the soft forward (soft_forward.cpp): one chunk per row goes through a thread's scratch
  // straight into the output; several chunks keep one partial each, summed in chunk order.
  const bool direct = chunks == 1;
  const int64_t stored = direct ? 0 : checked_mul(units, size, "partial histograms");
  std::vector<int64_t> counts(weighted ? 0 : stored, 0);
  std::vector<double> sums(weighted ? stored : 0, 0.0);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const double* wp = weighted ? weight->const_data_ptr<double>() : nullptr;
  std::vector<int64_t> sizes{rows};
  for (int64_t b : bins) sizes.push_back(b);
  Tensor out = torch::stable::new_empty(x, sizes, ScalarType::Double);
  double* op = out.mutable_data_ptr<double>();
  // int64 counts or float64 sums: the copies added into the first in copy order (vector loops;
  // each copy is read once), then written out.
  auto merge_row = [&](auto* src, int64_t copies, int64_t row) {
    for (int64_t k = 1; k < copies; ++k)
#pragma omp simd
      for (int64_t c = 0; c < cells; ++c) src[c] += src[k * cells + c];
    double* to = op + row * cells;
#pragma omp simd
    for (int64_t c = 0; c < cells; ++c) to[c] = double(src[c]);
  };
  std::vector<EdgeSearch> searches;  // numpy's rule: one lookup per axis, built once
  if (!histc_rule)
    for (int64_t d = 0; d < D; ++d) searches.emplace_back(e + offsets[d], bins[d]);
  torch::stable::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    int64_t cell[BLOCK];
    uint8_t inside[BLOCK];
    std::vector<int64_t> own_counts(direct && !weighted ? size : 0);
    std::vector<double> own_sums(direct && weighted ? size : 0);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t row = direct ? u : u / chunks, k = direct ? 0 : u % chunks;  // no divisions per short row
      int64_t* count = direct ? own_counts.data() : counts.data() + u * size;
      double* sum = direct ? own_sums.data() : sums.data() + u * size;
      if (direct) weighted ? std::fill(sum, sum + size, 0.0) : std::fill(count, count + size, int64_t(0));
      const int64_t begin = row * n + (direct ? 0 : k * n / chunks), end = direct ? begin + n : row * n + (k + 1) * n / chunks;
      for (int64_t a = begin; a < end; a += BLOCK) {
        const int64_t m = std::min(BLOCK, end - a);
        std::fill(cell, cell + m, int64_t(0));
        std::fill(inside, inside + m, uint8_t(1));
        for (int64_t d = 0; d < D; ++d) {  // each axis over the block: a loop per rule, no per-sample switch
          const scalar_t* xs = xp + a * D + d;
          const int64_t B = bins[d], stride = strides[d];
          if (histc_rule) {
            const scalar_t lo = scalar_t(ranges[2 * d]), hi = scalar_t(ranges[2 * d + 1]);
            if constexpr (std::is_same_v<scalar_t, float>) histc_axis_f32(xs, D, m, lo, hi, B, stride, cell, inside);
            else histc_axis_f64(xs, D, m, lo, hi, B, stride, cell, inside);
          } else {
            const double* ed = e + offsets[d];
            const EdgeSearch& search = searches[d];
            for (int64_t i = 0; i < m; ++i) {  // numpy's rule: e_k <= v < e_{k+1}, the last bin closed
              const double v = double(xs[i * D]);
              const bool ok = v >= ed[0] && v <= ed[B];  // false for NaN
              cell[i] += ok ? std::min(search.last_at_or_below(v), B - 1) * stride : 0;
              inside[i] &= uint8_t(ok);
            }
          }
        }
        if (weighted) {
          for (int64_t i = 0; i < m; ++i) sum[(i & (lanes - 1)) * cells + cell[i]] += inside[i] ? wp[a + i] : 0.0;
        } else {
          count_block(cell, inside, m, lanes, cells, count);
        }
      }
      if (direct) weighted ? merge_row(sum, lanes, row) : merge_row(count, lanes, row);
    }
  });
  if (!direct) {
    torch::stable::parallel_for(0, rows, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        weighted ? merge_row(sums.data() + r * chunks * size, chunks * lanes, r)
                 : merge_row(counts.data() + r * chunks * size, chunks * lanes, r);
    });
  }
  return out;
}

Tensor hard_histogram(Tensor x, std::optional<Tensor> weight, Tensor edges, std::vector<int64_t> bins, std::vector<double> ranges,
                      bool histc_rule) {
  STD_TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && edges.is_contiguous(), "softhist: x must be contiguous (rows, n, D)");
  STD_TORCH_CHECK(int64_t(bins.size()) == x.size(2) && int64_t(ranges.size()) == 2 * x.size(2), "softhist: one entry per axis expected");
  STD_TORCH_CHECK(edges.scalar_type() == ScalarType::Double, "softhist: edges must be float64");
  int64_t total = 0;
  for (int64_t b : bins) {
    STD_TORCH_CHECK(b >= 1 && b < (int64_t(1) << 30), "softhist: 1 to 2^30 bins per axis, got ", b);
    total += b + 1;
  }
  STD_TORCH_CHECK(edges.numel() == total || (histc_rule && edges.numel() == 0), "softhist: edges do not match the bins (histc's rule reads none)");
  if (weight)
    STD_TORCH_CHECK(weight->scalar_type() == ScalarType::Double && weight->is_contiguous() && weight->numel() == x.size(0) * x.size(1),
                    "softhist: weight must be contiguous float64 (rows, n)");
  const double* e = edges.numel() ? edges.const_data_ptr<double>() : nullptr;
  if (x.scalar_type() == ScalarType::Double) return hard_impl<double>(x, weight, e, bins, ranges, histc_rule);
  STD_TORCH_CHECK(x.scalar_type() == ScalarType::Float, "softhist: x must be float32 or float64");
  return hard_impl<float>(x, weight, e, bins, ranges, histc_rule);
}

}  // namespace softhist::native
