// One table axis (1-D, float32 samples): the common case, kept free of the general window buffers.
#pragma once

#include <cstdint>

#include "plan.h"
#include "windows.h"

namespace softhist::native {

// The common case, kept free of the general window buffers: float32 samples (tables serve
// float32 and narrower), one vectorized pass for a block's positions, then per-sample rows.
struct TableBlock {
  int32_t bin[BLOCK], q[BLOCK];
  float t[BLOCK];
  double w[BLOCK];  // the sample's weight, 0 where it reaches no bin
  int32_t valid[BLOCK];  // 32-bit like bin and q: the positions loop vectorizes 16 samples at a time (uint8 made it 64)
};

// Grid positions and weights of a block of m samples (weight 0 where a sample reaches no bin).
void table_positions(const Axis& a, const float* xs, const float* wt, int64_t m, TableBlock& b);
// Forward: each sample adds w * (row + t * step) into its window, in lane i % lanes;
// divide_by_sums: each row divided by its sum (normalized centre rows; see TableEnds).
void table_1d_forward(const Axis& a, const TableBlock& b, int64_t m, double* hist, int64_t lanes, int64_t lane_size,
                      bool divide_by_sums = false);
// Forward of `rows` short rows of n samples in one block (sample r * n + j is row r's j-th), row r
// adding into its own copy at hist + r * stride, in sample order; plain (not normalized) samples.
void table_1d_rows_forward(const Axis& a, const TableBlock& b, int64_t rows, int64_t n, double* hist, int64_t stride);
// Backward through per-sample dots with the cells' gradients, g in float64 and gf the same in
// float32 (P: BLOCK scratch doubles).
void table_1d_backward(const Axis& a, const TableBlock& b, const double* g, const float* gf, int64_t m, bool need_w, bool need_h,
                       double* P, float* gx, float* gw, double* gh);
// Backward through gradient tables GV[n, q] (few bins, many samples).
void gradient_table(const Axis& a, const float* tab, const double* g, double* gv);
void gtable_1d_backward(const Axis& a, const TableBlock& b, int64_t m, const double* gvx, const double* gvw, const double* gvh,
                        float* gx, float* gw, double* gh);

// Normalized samples (normalize_samples) on a table axis: each sample's values divided by their
// sum S over the bins of the range. A sample whose window lies inside the range (stored first bin
// in [2J, B - 1], that is real bins n - J .. n + J all inside) reaches every column of its row:
// by mass, its window holds the kernel's whole support, S = F(T) - F(-T) = 1 and dS = 0, so its
// row is normalized already; by centre, S is the interpolated row's sum, and its derivatives the
// derivative rows' sums (the table's row sums). A sample whose window meets a range end takes the
// exact windows instead (windows.cpp): its S can be small, and the table's absolute error would
// grow by 1/S. Its place in the block is kept in `index`.
struct TableEnds {
  Axis exact;  // the same axis, as exact windows (EXACT_UNIFORM)
  AxisWindows ws;
  int64_t count = 0;
  int32_t index[BLOCK];
  double x[BLOCK], w[BLOCK];
  uint8_t valid[BLOCK];
  explicit TableEnds(const Axis& a);
};

// Moves the samples whose window meets a range end from the block (valid 0, weight 0) into `e`
// (forward and backward alike).
void table_1d_split_ends(const Axis& a, TableBlock& b, int64_t m, const float* xs, const float* wt, TableEnds& e);
// Forward of the samples split off: their exact normalized windows, each in its own lane.
void table_1d_ends_forward(const Axis& a, TableEnds& e, double* hist, int64_t lanes, int64_t lane_size);
// Backward of the samples left in the block, normalized by their row sums; gv: the gradient tables
// of the du, mass and dhb rows (null: per-sample dots with g).
void table_1d_backward_normalized(const Axis& a, const TableBlock& b, const double* g, int64_t m, const double* const gv[3], bool need_x,
                                  bool need_w, bool need_h, float* gx, float* gw, double* gh);
// Backward of the samples split off (gx, gw: the block's).
void table_1d_ends_backward(const Axis& a, TableEnds& e, const double* g, bool need_x, bool need_w, bool need_h, float* gx, float* gw,
                            double* gh);

}  // namespace softhist::native
