// One table axis (1-D, float32 samples): the common case, kept free of the general window buffers.
#pragma once

#include <cstdint>

#include "plan.h"

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
// Forward: each sample adds w * (row + t * step) into its window, in lane i % lanes.
void table_1d_forward(const Axis& a, const TableBlock& b, int64_t m, double* hist, int64_t lanes, int64_t lane_size);
// Backward through per-sample dots with the cells' gradients g (P: BLOCK scratch doubles).
void table_1d_backward(const Axis& a, const TableBlock& b, const double* g, int64_t m, bool need_w, bool need_h, double* P,
                       float* gx, float* gw, double* gh);
// Backward through gradient tables GV[n, q] (few bins, many samples).
void gradient_table(const Axis& a, const float* tab, const double* g, double* gv);
void gtable_1d_backward(const Axis& a, const TableBlock& b, int64_t m, const double* gvx, const double* gvw, const double* gvh,
                        float* gx, float* gw, double* gh);

}  // namespace softhist::native
