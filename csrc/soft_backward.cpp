// The soft-histogram backward pass: the gradients of x, the weights, the bandwidth and the edges
// from the cells' gradients, recomputing each sample's window (nothing of size N x B is saved).
//
// With G the cells' gradients and A_d[k] = sum over the window cells with k_d = k of
// G * prod_{e != d} a_e (so dL/da_{d,k} = w * A_d[k]):
//   dL/dF_j = w * (A[j-1] - A[j])      (A is zero outside the window)
//   dL/dz_j = dL/dF_j * f(z_j)          (f = F', the kernel's density)
//   dL/dx = -(1/h) sum_j dL/dz_j,  dL/de_j = (1/h) dL/dz_j,  dL/dh = -(1/h) sum_j z_j dL/dz_j,
//   dL/dw = sum_k A_0[k] a_{0,k}  (= sum over cells of G * prod_d a_d).
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
#include "edges_1d.h"
#include "far_1d.h"
#include "simd.h"
#include "table_1d.h"
#include "table_2d.h"
#include "windows.h"

namespace softhist::native {

using torch::headeronly::ScalarType;

// A_d for one sample: A[d][k] = sum over its window cells with k_d = k of G * prod_{e != d} a_e.
// With one axis, A[0] points into the gradient itself; otherwise it is computed into dA.
void cell_gradients(const Plan& p, const double* g, const std::vector<AxisWindows>& ws, int64_t i,
                    std::vector<std::vector<double>>& dA, std::vector<double>& prefix, const double** A) {
  const int64_t D = p.dims;
  int64_t base = 0;
  for (int64_t d = 0; d < D; ++d) base += ws[d].first[i] * p.strides[d];
  if (D == 1) {
    A[0] = g + base;
    return;
  }
  for (int64_t d = 0; d < D; ++d) {
    std::fill(dA[d].begin(), dA[d].begin() + p.axes[d].cells, 0.0);
    A[d] = dA[d].data();
  }
  if (D == 2) {
    const int64_t c0 = p.axes[0].cells, c1 = p.axes[1].cells;
    const double* a0 = ws[0].mass.data() + i * c0;
    const double* a1 = ws[1].mass.data() + i * c1;
    double* A1 = dA[1].data();
    for (int64_t j = 0; j < c0; ++j) {
      const double* gr = g + base + j * p.strides[0];
      double s = 0.0;
      const double aj = a0[j];
#pragma omp simd reduction(+ : s)
      for (int64_t k = 0; k < c1; ++k) {
        s += gr[k] * a1[k];
        A1[k] += gr[k] * aj;
      }
      dA[0][j] = s;
    }
    return;
  }
  // Any D: walk the window cells with an odometer; prefix[d] = prod_{e < d} a_e, suffix computed per cell.
  std::vector<int64_t> idx(D, 0);
  int64_t offset = 0;
  for (;;) {
    double v = g[base + offset];
    prefix[0] = 1.0;
    for (int64_t d = 0; d < D; ++d) prefix[d + 1] = prefix[d] * ws[d].mass[i * p.axes[d].cells + idx[d]];
    double suffix = 1.0;
    for (int64_t d = D - 1; d >= 0; --d) {
      dA[d][idx[d]] += v * prefix[d] * suffix;
      suffix *= ws[d].mass[i * p.axes[d].cells + idx[d]];
    }
    int64_t d = D - 1;
    for (; d >= 0; --d) {
      offset += p.strides[d];
      if (++idx[d] < p.axes[d].cells) break;
      offset -= idx[d] * p.strides[d];
      idx[d] = 0;
    }
    if (d < 0) break;
  }
}

struct Needs {
  bool x, w, h;
  std::vector<uint8_t> edges;        // per axis
  std::vector<int64_t> edge_offset;  // of each axis's edges in the edge gradient
};

// The two-axis backward of one sample with eight-bin windows and no edge gradients, with G its
// window of cell gradients (rows j of stride `stride`): U = sum_j a0_j G_j, X = sum_j dx0_j G_j,
// H = sum_j dh0_j G_j, then dL/dw = a1.U, dL/dx_0 = a1.X, dL/dx_1 = dx1.U, dL/dh_0 = a1.H,
// dL/dh_1 = dh1.U (before the sample's weight).
struct JointDots {
  double w, x0, x1, h0, h1;
};

inline JointDots joint_dots8(const double* G, int64_t stride, int64_t c0, const double* a0, const double* x0, const double* h0,
                             const double* a1, const double* x1, const double* h1) {
  v8d u = {}, xs = {}, hs = {};
  for (int64_t j = 0; j < c0; ++j) {
    const v8d g = SOFTHIST_LOAD8(G + j * stride);
    u += a0[j] * g;
    if (x0) xs += x0[j] * g;
    if (h0) hs += h0[j] * g;
  }
  const v8d b = SOFTHIST_LOAD8(a1);
  return {sum8(b * u), x0 ? sum8(b * xs) : 0.0, x1 ? sum8(SOFTHIST_LOAD8(x1) * u) : 0.0, h0 ? sum8(b * hs) : 0.0, h1 ? sum8(SOFTHIST_LOAD8(h1) * u) : 0.0};
}

// The backward pass of m samples whose windows are in ws: dL/dx (m, D) and dL/dw (m,) into gx
// and gw, dL/dh (D,) and dL/dedges added into gh and ge. Each is a dot of A_d (above) with the
// per-bin mass, dx or dh rows. Two axes without edge gradients skip A_0: with
// U[k] = sum_j a0_j G[j][k] and X[k] = sum_j dx0_j G[j][k] (vector accumulations),
// dL/dx_0 = w sum_k a1_k X[k], dL/dx_1 = w sum_k dx1_k U[k], dL/dw = sum_k a1_k U[k].
SOFTHIST_HOT void backward_block(const Plan& p, const double* grow, const std::vector<AxisWindows>& ws, const double* wt,
                                 const uint8_t* valid, int64_t m, const Needs& need, double* gx, double* gw, double* gh,
                                 double* ge, std::vector<std::vector<double>>& dA, std::vector<double>& prefix) {
  const int64_t D = p.dims;
  const double* As[8];
  std::vector<const double*> many(D > 8 ? D : 0);
  const double** A_of = D > 8 ? many.data() : As;
  bool any_edges = false;
  for (int64_t d = 0; d < D; ++d) any_edges = any_edges || need.edges[d];
  if (D == 1 && !any_edges) {  // one exact axis: A_0 is the gradient itself at the window
    const int64_t C = p.axes[0].cells;
    const AxisWindows& w0 = ws[0];
    double sum_h = 0.0;
    for (int64_t i = 0; i < m; ++i) {
      const double* A = grow + w0.first[i];
      const bool ok = valid[i];
      gx[i] = ok && need.x ? wt[i] * dot(A, w0.dx.data() + i * C, C) : 0.0;
      gw[i] = ok && need.w ? dot(A, w0.mass.data() + i * C, C) : 0.0;
      if (ok && need.h) sum_h += wt[i] * dot(A, w0.dh.data() + i * C, C);
    }
    gh[0] += sum_h;
    return;
  }
  for (int64_t i = 0; i < m; ++i) {
    if (!valid[i]) {
      for (int64_t d = 0; d < D; ++d) gx[i * D + d] = 0.0;
      gw[i] = 0.0;
      continue;
    }
    const double w = wt[i];
    if (D == 2 && !any_edges) {
      const int64_t c0 = p.axes[0].cells, c1 = p.axes[1].cells;
      const double *a0 = ws[0].mass.data() + i * c0, *x0 = ws[0].dx.data() + i * c0, *h0 = ws[0].dh.data() + i * c0;
      const double *a1 = ws[1].mass.data() + i * c1, *x1 = ws[1].dx.data() + i * c1, *h1 = ws[1].dh.data() + i * c1;
      if (c0 == 8 && c1 == 8) {
        const double* G8 = grow + ws[0].first[i] * p.strides[0] + ws[1].first[i];
        const JointDots r = joint_dots8(G8, p.strides[0], c0, a0, need.x ? x0 : nullptr, need.h ? h0 : nullptr, a1,
                                        need.x ? x1 : nullptr, need.h ? h1 : nullptr);
        gw[i] = r.w;
        gx[i * 2] = w * r.x0;
        gx[i * 2 + 1] = w * r.x1;
        if (need.h) gh[0] += w * r.h0, gh[1] += w * r.h1;
        continue;
      }
      double* U = dA[0].data();
      double* X = dA[1].data();
      double* H = prefix.data();
      std::fill(U, U + c1, 0.0), std::fill(X, X + c1, 0.0), std::fill(H, H + c1, 0.0);
      const double* G = grow + ws[0].first[i] * p.strides[0] + ws[1].first[i];
      for (int64_t j = 0; j < c0; ++j) {
        const double* gr = G + j * p.strides[0];
        const double aj = a0[j], xj = need.x ? x0[j] : 0.0, hj = need.h ? h0[j] : 0.0;
        if (need.h) {
#pragma omp simd
          for (int64_t k = 0; k < c1; ++k) U[k] += aj * gr[k], X[k] += xj * gr[k], H[k] += hj * gr[k];
        } else {
#pragma omp simd
          for (int64_t k = 0; k < c1; ++k) U[k] += aj * gr[k], X[k] += xj * gr[k];
        }
      }
      gw[i] = dot(a1, U, c1);
      gx[i * 2] = need.x ? w * dot(a1, X, c1) : 0.0;
      gx[i * 2 + 1] = need.x ? w * dot(x1, U, c1) : 0.0;
      if (need.h) gh[0] += w * dot(a1, H, c1), gh[1] += w * dot(h1, U, c1);
      continue;
    }
    cell_gradients(p, grow, ws, i, dA, prefix, A_of);  // masses read here are normalized where asked (windows.cpp)
    gw[i] = need.w ? dot(A_of[0], ws[0].mass.data() + i * p.axes[0].cells, p.axes[0].cells) : 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const Axis& ax = p.axes[d];
      const double* A = A_of[d];
      const int64_t C = ax.cells;
      gx[i * D + d] = need.x ? w * dot(A, ws[d].dx.data() + i * C, C) : 0.0;
      if (need.h) gh[d] += w * dot(A, ws[d].dh.data() + i * C, C);
      if (need.edges[d] && (ax.membership == CENTER || ax.normalize)) {
        // Each bin's derivatives in its lower and upper edge (windows.cpp, normalize_windows):
        // dL/de_q = w ((A[q-1] - Abar) hi[q-1] + (A[q] - Abar) lo[q]), Abar = sum_p n_p A[p] when normalized.
        const int64_t K = ax.width;
        const double *lo = ws[d].lo.data() + i * C, *hi = ws[d].hi.data() + i * C;
        const double bar = ax.normalize ? dot(A, ws[d].mass.data() + i * C, C) : 0.0;
        double* edge_grad = ge + need.edge_offset[d] + ws[d].first[i];
        for (int64_t q = 0; q < K; ++q)
          edge_grad[q] += w * ((q > 0 ? (A[q - 1] - bar) * hi[q - 1] : 0.0) + (q + 1 < K ? (A[q] - bar) * lo[q] : 0.0));
      } else if (need.edges[d]) {  // dL/de_p = (w/h) (A[p-1] - A[p]) f(z_p)
        const int64_t K = ax.width;
        const double* f = ws[d].dens.data() + i * K;
        double* edge_grad = ge + need.edge_offset[d] + ws[d].first[i];
        const double c = w / ax.h;
        for (int64_t q = 0; q < K; ++q) edge_grad[q] += c * ((q > 0 ? A[q - 1] : 0.0) - (q + 1 < K ? A[q] : 0.0)) * f[q];
      }
    }
  }
}

template <typename scalar_t>
std::tuple<Tensor, Tensor, Tensor, Tensor> backward_impl(const Tensor& grad, const Tensor& x, const std::optional<Tensor>& weight,
                                                         const Plan& p, const std::vector<int64_t>& flags) {
  const int64_t D = p.dims;
  Needs need{bool(flags[0]), bool(flags[1]), bool(flags[2]), std::vector<uint8_t>(D), std::vector<int64_t>(D)};
  int64_t edge_total = 0;
  bool any_edges = false;
  for (int64_t d = 0; d < D; ++d) {
    need.edges[d] = flags[3 + d] != 0;
    STD_TORCH_CHECK(!need.edges[d] || p.axes[d].kind == EXACT_UNIFORM || p.axes[d].kind == EXACT_EDGES,
                    "softhist: edge gradients need an exact axis");
    any_edges = any_edges || need.edges[d];
    need.edge_offset[d] = edge_total;
    edge_total += p.axes[d].bins + 1;
  }
  // The cells' gradients of row r, padded like the stored histogram, in float64 (one axis: the
  // padding, the bins and the tail, written once in vector loops).
  const scalar_t* gp = grad.const_data_ptr<scalar_t>();
  const std::vector<int64_t> crop = D == 1 ? std::vector<int64_t>{} : crop_offsets(p);
  auto padded_row = [&](int64_t r, double* to) {
    if (D == 1) {
      const int64_t pad = p.axes[0].pad, B = p.cells;
      std::fill(to, to + pad, 0.0);
#pragma omp simd
      for (int64_t c = 0; c < B; ++c) to[pad + c] = double(gp[r * B + c]);
      std::fill(to + pad + B, to + p.stored, 0.0);
    } else {
      std::fill(to, to + p.stored, 0.0);
      for (int64_t c = 0; c < p.cells; ++c) to[crop[c]] = double(gp[r * p.cells + c]);
    }
  };
  const int64_t per_unit = D + (any_edges ? edge_total : 0);  // per unit: grad_h (D), then grad_edges where asked
  const int64_t chunks = chunks_per_row(p.rows, p.n, per_unit), units = p.rows * chunks;
  std::vector<double> partial(checked_mul(units, per_unit, "partial gradients"), 0.0);
  Tensor grad_x = torch::stable::new_empty(x, {need.x ? p.rows * p.n * D : 0});
  Tensor grad_w = torch::stable::new_empty(x, {need.w ? p.rows * p.n : 0});
  scalar_t* gx = need.x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* gw = need.w ? grad_w.mutable_data_ptr<scalar_t>() : nullptr;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight ? weight->const_data_ptr<scalar_t>() : nullptr;
  const bool masses = D > 1 || need.w;
  // Gradient tables for one table axis, when building them costs less than the per-sample dots
  // and each stays within about 1 MB: a sample's random read of a table past the core's L2 costs
  // more than its dot with a cached row (4M samples, 256 bins, 2,048 rows a bin: 6.6 ns a sample
  // through a 4.3 MB table, against 3.5 through the dots).
  const Axis& a0 = p.axes[0];
  const int64_t gv_size = a0.kind == TABLE ? (a0.bins + 2 * a0.reach) * (a0.q + 1) : 0;
  const bool gtable = D == 1 && a0.kind == TABLE && 4 * p.rows * gv_size <= p.rows * p.n && gv_size <= (int64_t(1) << 17);
  // One unit per row (many rows, or short ones): each unit pads its row into its thread's scratch,
  // so memory stays O(threads x stored cells + rows x cells), as in the forward pass (196608
  // one-sample rows of a 16-bin table: 46 MB of padded rows otherwise). Several units per row,
  // or gradient tables: every row padded once, up front.
  const bool edges_1d = edges_1d_serves(p, std::is_same_v<scalar_t, float>);  // one float32 axis of explicit edges: edges_1d.cpp
  // Many samples per unit: through the node grid, its values per row built up front (edges_1d.cpp).
  const bool edge_nodes = edges_1d && edges_nodes_pay(a0, p.n / chunks, p.rows * p.n);
  std::unique_ptr<EdgeNodes> nodes(edge_nodes ? new EdgeNodes(a0, true) : nullptr);
  const bool per_row = chunks == 1 && !gtable && !edge_nodes;
  std::unique_ptr<double[]> g_store(new double[per_row ? 0 : checked_mul(p.rows, p.stored, "rows x histogram cells")]);
  double* const g = g_store.get();
  if (!per_row)
    for (int64_t r = 0; r < p.rows; ++r) padded_row(r, g + r * p.stored);
  const bool normalized = a0.kind == TABLE && a0.normalize;  // one float32 axis (make_plan)
  const bool mass_dots = need.w || (normalized && a0.membership == CENTER);  // centre samples divided by their sums read them
  std::vector<double> gvs(gtable ? 3 * p.rows * gv_size : 0);
  if (gtable) {
    for (int64_t r = 0; r < p.rows; ++r) {
      double* gv = gvs.data() + 3 * r * gv_size;
      if (need.x) gradient_table(a0, a0.du, g + r * p.stored, gv);
      if (mass_dots) gradient_table(a0, a0.mass, g + r * p.stored, gv + gv_size);
      if (need.h) gradient_table(a0, a0.dhb, g + r * p.stored, gv + 2 * gv_size);
    }
  }
  const int64_t nv = edge_nodes ? 2 * (nodes->P + 1) : 0;  // per row: node values of dL/dx and dL/dw
  std::vector<double> node_values(edge_nodes ? 2 * p.rows * nv : 0);
  for (int64_t r = 0; edge_nodes && r < p.rows; ++r) {
    double* v = node_values.data() + 2 * r * nv;
    edges_1d_node_values(a0, *nodes, g + r * p.stored, need.x ? v : nullptr, need.w ? v + nv : nullptr);
  }
  const bool sums = edge_nodes && (need.h || any_edges);  // through the units' moments

  // One or two float32 table axes write their gradients themselves; other plans need the windows.
  const bool table_1d = std::is_same_v<scalar_t, float> && D == 1 && a0.kind == TABLE;
  const bool table_2d = std::is_same_v<scalar_t, float> && D == 2 && a0.kind == TABLE && p.axes[1].kind == TABLE && !any_edges;
  const bool tables = table_1d || table_2d;
  const bool dots_1d = table_1d && !gtable && !(normalized && a0.membership == CENTER);  // table_1d_backward: G in float32 too
  // A never-cut kernel's far grid (far_1d.h): the grid functions of the gradients, per row (in
  // the unit itself where a row is one unit, else once per row up front: then rows <= 32).
  const bool far = table_1d && a0.far != 0;
  const int64_t far_size = far ? far_grid_size(a0) : 0;
  auto far_grids = [&](const double* g_row, double* v) {
    far_1d_gradients(a0, g_row + a0.pad, need.w ? v : nullptr, need.x ? v + far_size : nullptr, need.h ? v + 2 * far_size : nullptr);
  };
  std::vector<double> far_rows(far && chunks > 1 ? checked_mul(p.rows, 3 * far_size, "far grids") : 0);
  if (far && chunks > 1)
    for (int64_t r = 0; r < p.rows; ++r) far_grids(g + r * p.stored, far_rows.data() + r * 3 * far_size);
  auto run = [&](int64_t u0, int64_t u1) {
    std::vector<AxisWindows> ws;
    std::unique_ptr<EdgeWalk> walk(edges_1d ? new EdgeWalk(a0) : nullptr);
    std::vector<std::vector<double>> dA;
    int64_t widest = 0;
    for (const Axis& a : p.axes) widest = std::max(widest, a.cells);
    if (!tables && !edges_1d) for (const Axis& a : p.axes) ws.emplace_back(a, p.block), dA.emplace_back(widest + 1, 0.0);
    const int64_t block = tables ? BLOCK : p.block, buffers = tables ? 0 : p.block;
    std::vector<uint8_t> valid(buffers);
    std::vector<double> wt(buffers), coords(buffers), prefix(D + 1 + (D == 2 ? p.axes[1].cells : 0)), block_gx(buffers * D), block_gw(buffers);
    std::unique_ptr<double[]> dots(new double[table_1d ? BLOCK : 0]);
    std::unique_ptr<TableBlock> tb(table_1d ? new TableBlock : nullptr);
    std::unique_ptr<TableEnds> ends(table_1d && normalized ? new TableEnds(a0) : nullptr);
    std::unique_ptr<TableBlock2D> tb2(table_2d ? new TableBlock2D : nullptr);
    std::unique_ptr<double[]> scratch(new double[per_row ? p.stored : 0]);
    std::unique_ptr<float[]> growf(new float[dots_1d ? p.stored : 0]);
    std::vector<double> moments(sums ? nodes->moments() : 0);
    std::vector<double> far_unit(far && chunks == 1 ? 3 * far_size : 0);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t row = chunks == 1 ? u : u / chunks, k = chunks == 1 ? 0 : u % chunks;  // no divisions per short row
      double* gh = partial.data() + u * per_unit;
      if (per_row) padded_row(row, scratch.get());
      const double* grow = per_row ? scratch.get() : g + row * p.stored;
      for (int64_t c = 0; dots_1d && c < p.stored; ++c) growf[c] = float(grow[c]);  // exact: the gradients came in float32
      const double* fv = !far ? nullptr : chunks == 1 ? far_unit.data() : far_rows.data() + row * 3 * far_size;
      if (far && chunks == 1) far_grids(grow, far_unit.data());
      const int64_t begin = row * p.n + (chunks == 1 ? 0 : k * p.n / chunks);
      const int64_t end = chunks == 1 ? begin + p.n : row * p.n + (k + 1) * p.n / chunks;
      std::fill(moments.begin(), moments.end(), 0.0);
      for (int64_t a = begin; a < end; a += block) {
        const int64_t m = std::min(block, end - a);
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (table_1d) {
            table_positions(a0, xp + a, wp ? wp + a : nullptr, m, *tb);
            float* gx_block = gx ? gx + a : nullptr;
            float* gw_block = gw ? gw + a : nullptr;
            // Normalized samples: those whose window meets a range end are split off and take the
            // exact windows; the others, by mass, are normalized already (their window holds the
            // kernel's whole support: sum 1, derivatives summing to 0), by centre divided by their row sums.
            if (ends) table_1d_split_ends(a0, *tb, m, xp + a, wp ? wp + a : nullptr, *ends);
            if (ends && a0.membership == CENTER) {
              const double* gv = gtable ? gvs.data() + 3 * row * gv_size : nullptr;
              const double* const rows_gv[3] = {gv, gv ? gv + gv_size : nullptr, gv ? gv + 2 * gv_size : nullptr};
              table_1d_backward_normalized(a0, *tb, grow, m, rows_gv, gx != nullptr, gw != nullptr, need.h, gx_block, gw_block, gh);
            } else if (gtable) {
              const double* gv = gvs.data() + 3 * row * gv_size;
              gtable_1d_backward(a0, *tb, m, gx ? gv : nullptr, gw ? gv + gv_size : nullptr, need.h ? gv + 2 * gv_size : nullptr,
                                 gx_block, gw_block, gh);
            } else {
              table_1d_backward(a0, *tb, grow, growf.get(), m, gw != nullptr, need.h, dots.get(), gx_block, gw_block, gh);
            }
            if (ends) table_1d_ends_backward(a0, *ends, grow, gx != nullptr, gw != nullptr, need.h, gx_block, gw_block, gh);
            if (fv)
              far_1d_backward(a0, *tb, xp + a, wp ? wp + a : nullptr, m, grow + a0.pad, need.w ? fv : nullptr, need.x ? fv + far_size : nullptr,
                              need.h ? fv + 2 * far_size : nullptr, gx_block, gw_block, need.h ? gh : nullptr);
            continue;
          }
          if (table_2d) {
            table_2d_positions(a0, p.axes[1], xp + a * 2, wp ? wp + a : nullptr, m, *tb2);
            table_2d_backward(a0, p.axes[1], *tb2, m, grow, p.strides[0], need.h, gx ? gx + a * 2 : nullptr, gw ? gw + a : nullptr, gh);
            continue;
          }
          if (edge_nodes) {
            const double* v = node_values.data() + 2 * row * nv;
            edges_1d_nodes_backward(a0, *walk, *nodes, xp + a, wp ? wp + a : nullptr, grow, m, need.x ? v : nullptr,
                                    need.w ? v + nv : nullptr, gx ? gx + a : nullptr, gw ? gw + a : nullptr,
                                    sums ? moments.data() : nullptr, need.h ? gh : nullptr, any_edges ? gh + D : nullptr);
            continue;
          }
          if (edges_1d) {
            edges_1d_backward(a0, *walk, xp + a, wp ? wp + a : nullptr, grow, m, gx ? gx + a : nullptr, gw ? gw + a : nullptr,
                              need.h ? gh : nullptr, any_edges ? gh + D : nullptr);
            continue;
          }
        }
        block_weights(wp ? wp + a : nullptr, m, wt.data());
        std::fill(valid.begin(), valid.begin() + m, uint8_t(1));
        for (int64_t d = 0; d < D; ++d) {
          load_coordinates(xp + a * D + d, D, m, coords.data());
          axis_windows(p.axes[d], coords.data(), m, ws[d], valid.data(), {masses, need.x, need.h, bool(need.edges[d])});
        }
        backward_block(p, grow, ws, wt.data(), valid.data(), m, need, block_gx.data(), block_gw.data(), gh, gh + D, dA, prefix);
        if (gx) for (int64_t i = 0; i < m * D; ++i) gx[a * D + i] = scalar_t(block_gx[i]);
        if (gw) for (int64_t i = 0; i < m; ++i) gw[a + i] = scalar_t(block_gw[i]);
      }
      if (sums) edges_1d_nodes_sums(a0, *nodes, grow, moments.data(), need.h ? gh : nullptr, any_edges ? gh + D : nullptr);
    }
  };
  if (units == 1) run(0, 1);
  else torch::stable::parallel_for(0, units, 1, run);
  Tensor grad_h = torch::stable::new_zeros(x, {need.h ? D : 0}, ScalarType::Double);
  Tensor grad_e = torch::stable::new_zeros(x, {any_edges ? edge_total : 0}, ScalarType::Double);
  double* hp = need.h ? grad_h.mutable_data_ptr<double>() : nullptr;
  double* ep = any_edges ? grad_e.mutable_data_ptr<double>() : nullptr;
  for (int64_t u = 0; u < units; ++u) {  // unit order: deterministic
    const double* src = partial.data() + u * per_unit;
    if (hp) for (int64_t d = 0; d < D; ++d) hp[d] += src[d];
    if (ep) for (int64_t j = 0; j < edge_total; ++j) ep[j] += src[D + j];
  }
  return {grad_x, grad_w, grad_h, grad_e};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> soft_histogram_backward(Tensor grad, Tensor x, std::optional<Tensor> weight, Tensor edges,
                                                                  Tensor tables, std::vector<int64_t> ints, std::vector<double> floats,
                                                                  std::vector<int64_t> needs) {
  Plan p = make_plan(x, edges, tables, ints, floats);
  STD_TORCH_CHECK(int64_t(needs.size()) == 3 + p.dims, "softhist: needs = (x, weight, bandwidth, edges per axis)");
  STD_TORCH_CHECK(grad.scalar_type() == x.scalar_type() && grad.is_contiguous() && grad.numel() == p.rows * p.cells,
                  "softhist: grad must be contiguous (rows, *bins) in x's dtype");
  if (weight) STD_TORCH_CHECK(weight->scalar_type() == x.scalar_type() && weight->is_contiguous() && weight->numel() == p.rows * p.n,
                              "softhist: weight must be contiguous (rows, n) in x's dtype");
  if (x.scalar_type() == ScalarType::Double) return backward_impl<double>(grad, x, weight, p, needs);
  STD_TORCH_CHECK(x.scalar_type() == ScalarType::Float, "softhist: x must be float32 or float64");
  return backward_impl<float>(grad, x, weight, p, needs);
}

}  // namespace softhist::native
