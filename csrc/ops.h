// softhist's native CPU engine: fused soft-histogram forward and backward passes and exact counts.
//
// Built on the LibTorch stable ABI (one binary loads in every torch from TORCH_TARGET_VERSION on)
// and registered as the private ops torch.ops.softhist._native_{soft, soft_backward, hard} (ops.cpp;
// their fake kernels live beside their one caller, src/softhist/_cpp_backend.py). The Python side
// plans each call: which strategy each axis takes, window widths, sub-bin tables (plan.h). Threads
// come from torch's own pool (torch::stable::parallel_for).
//
// Math (DESIGN.md, section 2). Along axis d a sample x with bandwidth h puts into bin
// [e_k, e_{k+1}) the mass a_k = F(z_{k+1}) - F(z_k), z_j = (e_j - x) / h, where F is the kernel's
// CDF (exactly 0 below -T and 1 above T; kernels.h). A cell of a D-dimensional histogram gets
// w * prod_d a_d, so a sample touches only the window of edges within T*h of it (windows.h).
// The backward pass is derived in soft_backward.cpp.
//
// Files: kernels.{h,cpp} the kernels' F and f; simd.h vector helpers; plan.{h,cpp} the call's
// plan and size checks; windows.{h,cpp} per-axis windows; table_1d.{h,cpp} and table_2d.{h,cpp}
// the 1-D and 2-D table paths; far_1d.{h,cpp} the far bins of a never-cut kernel on a table axis;
// edges_1d.{h,cpp} one axis of explicit edges (a walk over each sample's own edges);
// soft_forward.cpp, soft_backward.cpp any number of axes; hard.cpp exact counts; ops.cpp registration.
//
// Determinism: each row's samples are cut into a number of chunks that depends on the shapes
// only, never on the thread count (plan.h, chunks_per_row); each chunk accumulates into its own
// float64 partial, and the partials are summed in chunk order. Results are bit-identical across
// runs and thread counts.
#pragma once

#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

namespace softhist::native {

using torch::stable::Tensor;

// (rows, n, D) samples -> (rows, *bins) in x's dtype.
Tensor soft_histogram(Tensor x, std::optional<Tensor> weight, Tensor edges, Tensor tables, std::vector<int64_t> ints,
                      std::vector<double> floats);
// -> (grad_x (rows n D,) or empty, grad_w (rows n,) or empty, grad_h (D,) float64, grad_edges (all edges,) float64).
std::tuple<Tensor, Tensor, Tensor, Tensor> soft_histogram_backward(Tensor grad, Tensor x, std::optional<Tensor> weight, Tensor edges,
                                                                  Tensor tables, std::vector<int64_t> ints, std::vector<double> floats,
                                                                  std::vector<int64_t> needs);
// -> (rows, *bins) exact counts (or sums of float64 weights), as float64 results rounded once to
// `dtype` (float32 or float64).
Tensor hard_histogram(Tensor x, std::optional<Tensor> weight, Tensor edges, std::vector<int64_t> bins, std::vector<double> ranges,
                      bool histc_rule, torch::headeronly::ScalarType dtype);

}  // namespace softhist::native
