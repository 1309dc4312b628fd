// Two table axes (2-D joint histograms, float32 samples): the 1-D table path's rows, one per axis,
// and their outer product, kept free of the general window buffers.
#pragma once

#include <cstdint>

#include "plan.h"

namespace softhist::native {

// A block's grid positions on both axes (TableGrid, windows.h) and weights.
struct TableBlock2D {
  int32_t bin0[BLOCK], q0[BLOCK], bin1[BLOCK], q1[BLOCK];
  float t0[BLOCK], t1[BLOCK];
  double w[BLOCK];       // the sample's weight, 0 where it reaches no bin
  int32_t valid[BLOCK];  // 32-bit like bin and q, so the positions loop vectorizes
};

// Grid positions and weights of m samples xs (pairs: x0, x1), weights wt (or none).
void table_2d_positions(const Axis& a0, const Axis& a1, const float* xs, const float* wt, int64_t m, TableBlock2D& b);
// Forward: each sample adds w * (row0 outer row1) into its window of `hist` (row stride stride0).
void table_2d_forward(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, double* hist, int64_t stride0);
// Backward from the cells' gradients g (row stride stride0): dL/dx (pairs) into gx, dL/dw into
// gw (each where not null), dL/dh per axis added into gh[0..2) where need_h.
void table_2d_backward(const Axis& a0, const Axis& a1, const TableBlock2D& b, int64_t m, const double* g, int64_t stride0,
                       bool need_h, float* gx, float* gw, double* gh);

}  // namespace softhist::native
