// The plan of one call: per axis, the strategy, window and table the Python side chose
// (src/softhist/_cpp_backend.py), and the sizes derived from them. Every size product is checked
// for overflow here, before anything is allocated.
#pragma once

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/util/Exception.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <vector>

namespace softhist::native {

using torch::stable::Tensor;

// How an axis computes a sample's window:
// * EXACT_UNIFORM: equal-width bins, edges placed arithmetically (e_j = lo + j / scale);
// * EXACT_EDGES: any increasing edges, the window found by search;
// * TABLE: equal-width bins, masses read from a (Q, W) sub-bin table and interpolated (kernels
//   whose density or its derivative jumps: a table in up to three pieces of the bin, TableGrid;
//   a kernel never cut: the table holds the near bins, a far grid the others, far_1d.h);
// * HARD: an axis binned hard inside a soft histogram (numpy's rule): one bin, no gradients.
enum Kind : int64_t { EXACT_UNIFORM = 0, EXACT_EDGES = 1, TABLE = 2, HARD = 3 };

// What a window bin holds (exact axes; a table's rows hold either):
// * MASS: the kernel's mass in the bin, F(z_{k+1}) - F(z_k) with z = (e - x)/h at its edges;
// * CENTER: the density at the bin centre times the bin width, (Delta_k / h) f((c_k - x)/h).
// `normalize` divides each sample's values by their sum over its window (see normalize_windows).
enum Membership : int64_t { MASS = 0, CENTER = 1 };

// The per-axis fields the Python side sends, as the op's int[] and float[] arguments, axis after
// axis, in this order. src/softhist/_cpp_backend.py (NativeAxis) mirrors these two lists; a test
// reads them from this file.
#define SOFTHIST_AXIS_INTS(X) X(kind) X(kernel) X(bins) X(width) X(q) X(reach) X(membership) X(normalize) X(row1) X(row2) X(far) X(far_pad)
#define SOFTHIST_AXIS_FLOATS(X) X(lo) X(scale) X(h) X(support) X(cut1) X(cut2)

struct AxisPlan {
#define SOFTHIST_INT_FIELD(name) int64_t name = 0;
#define SOFTHIST_FLOAT_FIELD(name) double name = 0.0;
  SOFTHIST_AXIS_INTS(SOFTHIST_INT_FIELD)    // kind, kernel id, bins, window width: edges K (exact) or bins W = 2J + 1 (table),
                                            // table rows Q, reach J, membership, normalize (0 or 1),
                                            // first rows of table pieces 1 and 2,
                                            // never-cut kernels: far grid intervals per bin S (0: none) and margin E (far_1d.h)
  SOFTHIST_AXIS_FLOATS(SOFTHIST_FLOAT_FIELD)  // range start, bins per data unit (uniform axes), bandwidth, kernel support T
                                              // (inf: never cut), starts of table pieces 1 and 2 in the bin (1: no such piece)
#undef SOFTHIST_INT_FIELD
#undef SOFTHIST_FLOAT_FIELD
};

#define SOFTHIST_COUNT_FIELD(name) +1
constexpr int64_t INTS_PER_AXIS = 0 SOFTHIST_AXIS_INTS(SOFTHIST_COUNT_FIELD);
constexpr int64_t FLOATS_PER_AXIS = 0 SOFTHIST_AXIS_FLOATS(SOFTHIST_COUNT_FIELD);
#undef SOFTHIST_COUNT_FIELD

struct Axis : AxisPlan {
  int64_t cells = 0;             // bins per window as stored: K - 1 (exact), W rounded up to 8 (table), 1 (hard)
  int64_t pad = 0, extent = 0;   // padding bins each side; stored extent (table windows write into the padding)
  const double* edges = nullptr;                               // bins + 1
  const float *mass = nullptr, *du = nullptr, *dhb = nullptr;  // table rows (Q, 2, cells): mass, d/du, d/dhb (bin units)
  const float* sums = nullptr;   // (3, Q, 2): each row's sums of values and of steps, in the mass, du, dhb tables
  const float *far_mass = nullptr, *far_du = nullptr, *far_dhb = nullptr;  // far blocks (2 bins + 2E - 1, S + 1) each (far_1d.h)
};

struct Plan {
  std::vector<Axis> axes;
  int64_t dims = 0, rows = 0, n = 0;
  std::vector<int64_t> strides;  // of the stored (padded) cells
  int64_t stored = 1;            // stored cells per row
  int64_t cells = 1;             // histogram cells per row
  int64_t edge_total = 0;        // edges of every axis
  int64_t window_cells = 1;      // cells of one sample's window (product over axes)
  int64_t block = 1;             // samples whose windows are computed together (window_block)
};

constexpr int64_t BLOCK = 256;  // samples whose windows are computed together, at most
constexpr int64_t WINDOW_VALUES = 1 << 16;  // values per window buffer of a block, at most (512 KiB)
constexpr int64_t LANES = 4;    // interleaved partial histograms of one-axis passes (a power of 2)

// a * b, or a clear error where it overflows int64 (never a crash or a short allocation).
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t r = 0;
  STD_TORCH_CHECK(!__builtin_mul_overflow(a, b, &r), "softhist: the ", what, " (", a, " x ", b, ") overflow int64");
  return r;
}

// Lanes for a one-axis histogram of `cells` 8-byte cells fed by `samples` samples: interleaved
// copies (sample i adds into copy i % lanes), so consecutive samples rarely update the same cells:
// a window's 64-byte store, split across cache lines, cannot be forwarded to the next sample's
// load of the same cells, which then waits for it (sorted data, 4096 bins: 2.3x uniform data's
// time with one copy, 1.4x with two, 0.93x with four). Four while they fit in 256 KiB (L2; uniform
// data at 4096 bins pays 7% for leaving L1) and there are samples enough to pay for zeroing and
// summing them; two for short rows (16 samples: 2.1x one long row's time per sample with two
// copies, 2.4x with four, 3.2x with one); one below 8 samples.
inline int64_t lanes_for(int64_t cells, int64_t samples) {
  if (LANES * cells > 32768 || samples < 8) return 1;
  return samples >= cells ? LANES : 2;
}

// The one chunking rule of soft and hard passes: a row's samples are cut into chunks of at least
// 32K samples, at most 64 per row, whose partials (`doubles` each) stay within 32 MiB together.
// A function of the shapes alone, so the summation order never depends on the thread count.
inline int64_t chunks_per_row(int64_t rows, int64_t n, int64_t doubles) {
  const int64_t by_samples = std::max<int64_t>(1, (n + 32767) / 32768);
  const int64_t by_rows = std::max<int64_t>(1, 64 / std::max<int64_t>(rows, 1));
  int64_t all = 0;  // doubles of one partial per row (saturated: past int64 means one chunk)
  if (__builtin_mul_overflow(std::max<int64_t>(rows, 1), std::max<int64_t>(doubles, 1), &all)) all = INT64_MAX;
  const int64_t by_memory = std::max<int64_t>(1, (int64_t(4) << 20) / all);
  return std::min({by_samples, by_rows, by_memory});
}

Plan make_plan(const Tensor& x, const Tensor& edges, const Tensor& tables, const std::vector<int64_t>& ints,
               const std::vector<double>& floats);

// Stored offset of each histogram cell (the padding dropped), and of each cell of a sample's
// window relative to its first cell.
std::vector<int64_t> crop_offsets(const Plan& p);
std::vector<int64_t> window_offsets(const Plan& p);

}  // namespace softhist::native
