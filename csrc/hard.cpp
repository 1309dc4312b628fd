// Exact counts: each sample's cell by torch.histc's arithmetic in the input's dtype (equal-width
// axes under the "histc" rule: truncate (x - lo) * B / (hi - lo), each operation rounded as torch
// rounds it) or by numpy's comparison with the edges (e_k <= x < e_{k+1}, the last bin closed;
// float64 compares exactly what the promoted dtype compares). Unweighted counts sum in int64
// (or in the output, where its dtype holds them exactly), weights in float64; per chunk, added in
// chunk order; written in the caller's dtype.
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

// Adds each counted sample into its lane's copy of the histogram (i % lanes); cell[i] holds the
// sample's row offset too. Counts go into int64, or straight into a float output where every
// count is exact (at most 2^24 samples per row in float32, 2^53 in float64).
template <typename acc_t>
SOFTHIST_INLINE void count_into(const int64_t* cell, const uint8_t* inside, int64_t m, int64_t lanes, int64_t cells, acc_t* count) {
  for (int64_t i = 0; i < m; ++i) count[(i & (lanes - 1)) * cells + cell[i]] += acc_t(inside[i]);
}
SOFTHIST_HOT void count_block(const int64_t* cell, const uint8_t* inside, int64_t m, int64_t lanes, int64_t cells, int64_t* count) {
  count_into(cell, inside, m, lanes, cells, count);
}
SOFTHIST_HOT void count_block(const int64_t* cell, const uint8_t* inside, int64_t m, int64_t lanes, int64_t cells, float* count) {
  count_into(cell, inside, m, lanes, cells, count);
}
SOFTHIST_HOT void count_block(const int64_t* cell, const uint8_t* inside, int64_t m, int64_t lanes, int64_t cells, double* count) {
  count_into(cell, inside, m, lanes, cells, count);
}

// Samples whose rows are binned together: short rows are taken GROUP samples' worth at a time,
// so a row costs its cells and samples, not a pass of its own (65,536 rows of one sample).
constexpr int64_t GROUP = 1024;
// Cells of a group's int64/float64 scratch, at most, where it cannot count in the output.
constexpr int64_t GROUP_CELLS = 1 << 15;

// Counts in the output's dtype `out_t` (float32 or float64): each row's int64 counts (float64
// weight sums) written once, rounded once, as the float64 result converted would be; or, where
// that is exact, counted in the output itself, which then is all the memory a call uses beyond
// O(samples), at any bin count.
template <typename scalar_t, typename out_t>
Tensor hard_impl(const Tensor& x, const std::optional<Tensor>& weight, const double* e, const std::vector<int64_t>& bins,
                 const std::vector<double>& ranges, bool histc_rule, ScalarType dtype) {
  const int64_t rows = x.size(0), n = x.size(1), D = x.size(2);
  std::vector<int64_t> strides(D, 1), offsets(D, 0);
  int64_t cells = 1, edge_total = 0;
  for (int64_t d = D - 1; d >= 0; --d) strides[d] = cells, cells = checked_mul(cells, bins[d], "histogram cells");
  checked_mul(rows, cells, "rows x histogram cells");
  for (int64_t d = 0; d < D; ++d) offsets[d] = edge_total, edge_total += bins[d] + 1;
  // Interleaved copies (sorted or constant data) only for long rows and small histograms: a count
  // is one aligned 8-byte add, whose store forwards to the next load, so copies buy less here.
  const int64_t lanes = n >= 8 * cells && LANES * cells <= 4096 ? LANES : 1, size = lanes * cells;
  const int64_t chunks = chunks_per_row(rows, n, size);
  const bool weighted = weight.has_value();
  // As in the soft forward (soft_forward.cpp): one chunk per row bins groups of whole rows
  // (direct); several chunks keep one bounded partial each (chunks_per_row), summed in chunk order.
  const bool direct = chunks == 1;
  // Direct rows count in the output where its dtype holds every count exactly (unweighted), or
  // sum there where it is float64 (weighted, in the same sample order as a float64 scratch).
  const int64_t exact = std::is_same_v<out_t, float> ? int64_t(1) << 24 : int64_t(1) << 53;
  const bool in_output = direct && lanes == 1 && (weighted ? std::is_same_v<out_t, double> : n <= exact);
  const int64_t group = direct && lanes == 1 ? std::clamp<int64_t>(GROUP / std::max<int64_t>(n, 1), 1, std::max<int64_t>(1, GROUP_CELLS / cells)) : 1;
  const int64_t units = direct ? (rows + group - 1) / group : rows * chunks;
  const int64_t stored = direct ? 0 : checked_mul(units, size, "partial histograms");
  std::vector<int64_t> counts(weighted ? 0 : stored, 0);
  std::vector<double> sums(weighted ? stored : 0, 0.0);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const double* wp = weighted ? weight->const_data_ptr<double>() : nullptr;
  std::vector<int64_t> sizes{rows};
  for (int64_t b : bins) sizes.push_back(b);
  Tensor out = torch::stable::new_empty(x, sizes, dtype);
  out_t* op = out.mutable_data_ptr<out_t>();
  // int64 counts or float64 sums: the copies added into the first in copy order (vector loops;
  // each copy is read once), then written out.
  auto merge_row = [&](auto* src, int64_t copies, int64_t row) {
    for (int64_t k = 1; k < copies; ++k)
#pragma omp simd
      for (int64_t c = 0; c < cells; ++c) src[c] += src[k * cells + c];
    out_t* to = op + row * cells;
#pragma omp simd
    for (int64_t c = 0; c < cells; ++c) to[c] = out_t(src[c]);
  };
  std::vector<EdgeSearch> searches;  // numpy's rule: one lookup per axis, built once
  if (!histc_rule)
    for (int64_t d = 0; d < D; ++d) searches.emplace_back(e + offsets[d], bins[d]);
  auto run = [&](int64_t u0, int64_t u1) {
    int64_t cell[BLOCK];
    uint8_t inside[BLOCK];
    const int64_t scratch = direct && !in_output ? group * size : 0;
    std::vector<int64_t> own_counts(weighted ? 0 : scratch);
    std::vector<double> own_sums(weighted ? scratch : 0);
    for (int64_t u = u0; u < u1; ++u) {
      // Direct: rows r0..r1 (whole); chunked: chunk k of row r0.
      const int64_t r0 = direct ? u * group : u / chunks, r1 = direct ? std::min(rows, r0 + group) : r0 + 1, k = direct ? 0 : u % chunks;
      int64_t* count = in_output ? nullptr : direct ? own_counts.data() : counts.data() + u * size;
      double* sum = in_output ? nullptr : direct ? own_sums.data() : sums.data() + u * size;
      out_t* into = in_output ? op + r0 * cells : nullptr;
      if (in_output) std::fill(into, into + (r1 - r0) * cells, out_t(0));
      else if (direct) weighted ? std::fill(sum, sum + (r1 - r0) * size, 0.0) : std::fill(count, count + (r1 - r0) * size, int64_t(0));
      const int64_t begin = direct ? r0 * n : r0 * n + k * n / chunks, end = direct ? r1 * n : r0 * n + (k + 1) * n / chunks;
      for (int64_t a = begin; a < end; a += BLOCK) {
        const int64_t m = std::min(BLOCK, end - a);
        if (group == 1) {
          std::fill(cell, cell + m, int64_t(0));
        } else {  // each sample's row within the group: one division per block
          int64_t r = a / n - r0, at = a % n;
          for (int64_t i = 0; i < m; ++i) {
            cell[i] = r * size;
            if (++at == n) at = 0, ++r;
          }
        }
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
          double* to = sum;
          if constexpr (std::is_same_v<out_t, double>) to = in_output ? into : sum;  // in_output: out_t is double
          for (int64_t i = 0; i < m; ++i) to[(i & (lanes - 1)) * cells + cell[i]] += inside[i] ? wp[a + i] : 0.0;
        } else {
          in_output ? count_block(cell, inside, m, lanes, cells, into) : count_block(cell, inside, m, lanes, cells, count);
        }
      }
      if (direct && !in_output)
        for (int64_t r = r0; r < r1; ++r)
          weighted ? merge_row(sum + (r - r0) * size, lanes, r) : merge_row(count + (r - r0) * size, lanes, r);
    }
  };
  if (units == 1) run(0, 1);  // no pool hand-off for small calls
  else torch::stable::parallel_for(0, units, 1, run);
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
                      bool histc_rule, ScalarType dtype) {
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
  STD_TORCH_CHECK(dtype == ScalarType::Float || dtype == ScalarType::Double, "softhist: counts come as float32 or float64");
  STD_TORCH_CHECK(x.scalar_type() == ScalarType::Float || x.scalar_type() == ScalarType::Double, "softhist: x must be float32 or float64");
  const double* e = edges.numel() ? edges.const_data_ptr<double>() : nullptr;
  const bool x64 = x.scalar_type() == ScalarType::Double, out64 = dtype == ScalarType::Double;
  if (x64) return out64 ? hard_impl<double, double>(x, weight, e, bins, ranges, histc_rule, dtype)
                        : hard_impl<double, float>(x, weight, e, bins, ranges, histc_rule, dtype);
  return out64 ? hard_impl<float, double>(x, weight, e, bins, ranges, histc_rule, dtype)
               : hard_impl<float, float>(x, weight, e, bins, ranges, histc_rule, dtype);
}

}  // namespace softhist::native
