// softhist's native CPU engine: fused soft-histogram forward and backward passes.
//
// Built on the LibTorch stable ABI (one binary loads in every torch from TORCH_TARGET_VERSION on)
// and registered as torch.ops.softhist.{soft_histogram, soft_histogram_backward}. The Python side
// (src/softhist/_cpp_backend.py) plans each call: which strategy each axis takes, window widths,
// sub-bin tables. Threads come from torch's own pool (torch::stable::parallel_for).
//
// Math (DESIGN.md, section 2). Along axis d a sample x with bandwidth h puts into bin
// [e_k, e_{k+1}) the mass a_k = F(z_{k+1}) - F(z_k), z_j = (e_j - x) / h, where F is the kernel's
// CDF (exactly 0 below -T and 1 above T). A cell of a D-dimensional histogram gets w * prod_d a_d.
// A sample therefore touches only the window of edges within T*h of it.
//
// Backward, with G the cells' gradients and A_d[k] = sum over the window cells with k_d = k of
// G * prod_{e != d} a_e (so dL/da_{d,k} = w * A_d[k]):
//   dL/dF_j = w * (A[j-1] - A[j])      (A is zero outside the window)
//   dL/dz_j = dL/dF_j * f(z_j)          (f = F', the kernel's density)
//   dL/dx = -(1/h) sum_j dL/dz_j,  dL/de_j = (1/h) dL/dz_j,  dL/dh = -(1/h) sum_j z_j dL/dz_j,
//   dL/dw = sum_k A_0[k] a_{0,k}  (= sum over cells of G * prod_d a_d).
//
// Per axis, one of three strategies computes a sample's window:
// * EXACT_UNIFORM: equal-width bins, edges placed arithmetically (e_j = lo + j / scale);
// * EXACT_EDGES: any increasing edges, the window found by binary search;
// * TABLE: equal-width bins. A sample's masses depend only on its position f in its base bin, so
//   they are read from a (Q, W) table of exact masses at f = q/Q and linearly interpolated (as are
//   their derivatives in x and h). Q is sized in Python so the interpolation error stays below
//   float32 resolution. Windows are W = 2J + 1 bins around the base bin, padded to a multiple of 8.
// Exact windows are capped at the axis's B + 1 edges and start inside [0, B + 1 - K], so their
// cells are always real bins; table windows write into 2J padding bins on each side.
//
// Determinism: each row's samples are cut into a number of chunks that depends on the shapes
// only, never on the thread count; each chunk accumulates into its own float64 partial, and the
// partials are summed in chunk order. Results are bit-identical across runs and thread counts.

#include <Python.h>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

// x86-64 builds carry AVX-512, AVX2 and baseline versions of the hot loops; the loader picks one.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define SOFTHIST_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SOFTHIST_HOT
#endif

namespace {

using torch::stable::Tensor;
using torch::headeronly::ScalarType;

// ------------------------------------------------------------------------------------ kernels
// The same kernels as src/softhist/kernels.py, each of unit variance. Kernel ids follow
// _cpp_backend.KERNEL_IDS.
enum KernelId : int64_t { GAUSSIAN = 0, LOGISTIC = 1, BOX = 2, TRIANGULAR = 3, EPANECHNIKOV = 4, BSPLINE = 5 };

// Chebyshev series from scripts/chebyshev_coefficients.py: erf(t) = t * sum ERF_i T_i(2t^2/S - 1)
// on t^2 <= S = 5.3^2/2 (error 4.5e-14); exp(-v) = sum EXP_i T_i(2v/V - 1) on v <= V = 9.2 pi/sqrt3
// (error 6.6e-15). libm's erf and exp are scalar calls; these polynomials vectorize.
constexpr double ERF[23] = {
    0.50735983636859938, -0.34768808964590092, 0.1557856672557372, -0.069698796992139933,
    0.029615641795395407, -0.011754833789988603, 0.0043332346831837162, -0.001481892195517837,
    0.0004706542564584313, -0.00013912868778325133, 3.8382454499408574e-05, -9.9107988414803917e-06,
    2.4022235615744148e-06, -5.481314754601781e-07, 1.1806116034880893e-07, -2.4065837105433681e-08,
    4.6539271813004621e-09, -8.5575307079918799e-10, 1.4993684045296748e-10, -2.5081767584358737e-11,
    4.013309920452461e-12, -6.1531516358816365e-13, 9.056912024432699e-14};
constexpr double EXP[27] = {
    0.14034409955377786, -0.26328732763821844, 0.21757606366175836, -0.15897778776964558,
    0.1032512182778817, -0.059977126684256317, 0.031366168266133983, -0.014864757370043218,
    0.0064237370353632502, -0.0025461770424367583, 0.00093068104093074072, -0.00031525812814862155,
    9.9411444750463224e-05, -2.9301248009956345e-05, 8.1026964473854727e-06, -2.1092873352669295e-06,
    5.1849390374209309e-07, -1.2069136140213042e-07, 2.6671819108029627e-08, -5.6091864834978649e-09,
    1.1250252724000811e-09, -2.1563052304676011e-10, 3.9568375508576533e-11, -6.9632947276371647e-12,
    1.1771073576316395e-12, -1.9137257494456019e-13, 2.9978399686052147e-14};
constexpr double ERF_S = 5.3 * 5.3 / 2.0;
constexpr double EXP_V = 16.686954150954801;  // 9.2 * pi / sqrt(3)

template <int N>
constexpr double chebyshev(double x, const double (&c)[N]) {  // Clenshaw's recurrence
  double b1 = 0.0, b2 = 0.0;
#pragma GCC unroll 32
  for (int k = N - 1; k > 0; --k) {
    double b0 = c[k] + 2.0 * x * b1 - b2;
    b2 = b1;
    b1 = b0;
  }
  return c[0] + x * b1 - b2;
}
constexpr double erf_poly(double t) { return t * chebyshev(t * t * (2.0 / ERF_S) - 1.0, ERF); }
constexpr double exp_neg(double v) { return chebyshev(v * (2.0 / EXP_V) - 1.0, EXP); }
inline double clamp(double v, double lo, double hi) { return std::min(std::max(v, lo), hi); }

// Gaussian, cut at T = 5.3 and renormalized: F = 1/2 + erf(z/sqrt2) / (2 erf(T/sqrt2)).
constexpr double SQRT1_2 = 0.70710678118654752440;
constexpr double GAUSS_T = 5.3;
constexpr double GAUSS_G = erf_poly(GAUSS_T * SQRT1_2);
constexpr double GAUSS_PDF = 0.39894228040143267794 / GAUSS_G;
// Logistic of unit variance, cut at T = 9.2: F = 1/2 + tanh(a z) / (2 tanh(a T)), a = pi / (2 sqrt3);
// tanh(y) = (1 - e) / (1 + e) and sech^2(y) = 4e / (1 + e)^2 with e = exp(-2|y|).
constexpr double LOGI_A = 0.90689968211710892;
constexpr double LOGI_T = 9.2;
constexpr double LOGI_G = (1.0 - exp_neg(2.0 * LOGI_A * LOGI_T)) / (1.0 + exp_neg(2.0 * LOGI_A * LOGI_T));
// Compact kernels: half-widths of the box, triangular and Epanechnikov kernels; B-spline knot spacing.
constexpr double BOX_A = 1.7320508075688772, TRI_A = 2.4494897427831781, EPA_A = 2.2360679774997897;
constexpr double BSP_B = 1.7320508075688772;

template <int K>
inline double cdf(double z) {
  if constexpr (K == GAUSSIAN) {
    return 0.5 + erf_poly(clamp(z, -GAUSS_T, GAUSS_T) * SQRT1_2) * (0.5 / GAUSS_G);
  } else if constexpr (K == LOGISTIC) {
    double y = clamp(z, -LOGI_T, LOGI_T) * LOGI_A;
    double e = exp_neg(2.0 * std::fabs(y));
    return 0.5 + std::copysign((1.0 - e) / (1.0 + e), y) * (0.5 / LOGI_G);
  } else if constexpr (K == BOX) {
    return clamp((z + BOX_A) * (0.5 / BOX_A), 0.0, 1.0);
  } else if constexpr (K == TRIANGULAR) {
    double t = clamp(z / TRI_A, -1.0, 1.0);
    return 0.5 + t - 0.5 * t * std::fabs(t);
  } else if constexpr (K == EPANECHNIKOV) {
    double t = clamp(z / EPA_A, -1.0, 1.0);
    return 0.5 + 0.75 * t - 0.25 * t * t * t;
  } else {
    double a = std::min(std::fabs(z) / BSP_B, 2.0), b = 2.0 - a;
    double half = a < 1.0 ? a * (2.0 / 3.0 - a * a / 3.0 + a * a * a / 8.0) : 0.5 - b * b * b * b / 24.0;
    return 0.5 + (z > 0 ? half : (z < 0 ? -half : 0.0));
  }
}

template <int K>
inline double pdf(double z) {
  if constexpr (K == GAUSSIAN) {
    double zc = clamp(z, -GAUSS_T, GAUSS_T);
    return std::fabs(z) < GAUSS_T ? exp_neg(0.5 * zc * zc) * GAUSS_PDF : 0.0;
  } else if constexpr (K == LOGISTIC) {
    double e = exp_neg(2.0 * LOGI_A * std::fabs(clamp(z, -LOGI_T, LOGI_T)));
    return std::fabs(z) < LOGI_T ? LOGI_A * 4.0 * e / ((1.0 + e) * (1.0 + e)) * (0.5 / LOGI_G) : 0.0;
  } else if constexpr (K == BOX) {
    return std::fabs(z) < BOX_A ? 0.5 / BOX_A : 0.0;
  } else if constexpr (K == TRIANGULAR) {
    return std::max(1.0 - std::fabs(z) / TRI_A, 0.0) / TRI_A;
  } else if constexpr (K == EPANECHNIKOV) {
    double t = z / EPA_A;
    return (0.75 / EPA_A) * std::max(1.0 - t * t, 0.0);
  } else {
    double a = std::fabs(z) / BSP_B, b = std::max(2.0 - a, 0.0);
    return (a < 1.0 ? 2.0 / 3.0 - a * a + 0.5 * a * a * a : b * b * b / 6.0) / BSP_B;
  }
}

template <int K>
void cdf_in_place(double* z, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) z[i] = cdf<K>(z[i]);
}

template <int K>
void pdf_of(const double* z, double* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = pdf<K>(z[i]);
}

SOFTHIST_HOT void eval_cdf(int64_t kernel, double* z, int64_t n) {
  switch (kernel) {
    case GAUSSIAN: cdf_in_place<GAUSSIAN>(z, n); break;
    case LOGISTIC: cdf_in_place<LOGISTIC>(z, n); break;
    case BOX: cdf_in_place<BOX>(z, n); break;
    case TRIANGULAR: cdf_in_place<TRIANGULAR>(z, n); break;
    case EPANECHNIKOV: cdf_in_place<EPANECHNIKOV>(z, n); break;
    default: cdf_in_place<BSPLINE>(z, n); break;
  }
}

SOFTHIST_HOT void eval_pdf(int64_t kernel, const double* z, double* out, int64_t n) {
  switch (kernel) {
    case GAUSSIAN: pdf_of<GAUSSIAN>(z, out, n); break;
    case LOGISTIC: pdf_of<LOGISTIC>(z, out, n); break;
    case BOX: pdf_of<BOX>(z, out, n); break;
    case TRIANGULAR: pdf_of<TRIANGULAR>(z, out, n); break;
    case EPANECHNIKOV: pdf_of<EPANECHNIKOV>(z, out, n); break;
    default: pdf_of<BSPLINE>(z, out, n); break;
  }
}

// Table rows: out[i, :] = tab[q_i, 0, :] + t_i * tab[q_i, 1, :] for a (Q, 2, W8) float table.
SOFTHIST_HOT void lerp_rows(const float* tab, int64_t w8, const int32_t* q, const float* t, int64_t m, double* out) {
  for (int64_t i = 0; i < m; ++i) {
    const float* row = tab + int64_t(q[i]) * 2 * w8;
    const float ti = t[i];
    double* o = out + i * w8;
#pragma omp simd
    for (int64_t j = 0; j < w8; ++j) o[j] = double(row[j] + ti * row[w8 + j]);
  }
}

// --------------------------------------------------------------------------------- the plan
enum Kind : int64_t { EXACT_UNIFORM = 0, EXACT_EDGES = 1, TABLE = 2 };
constexpr int64_t INTS_PER_AXIS = 6;    // kind, kernel, bins, width, q, reach
constexpr int64_t FLOATS_PER_AXIS = 4;  // lo, scale, bandwidth, support
constexpr int64_t BLOCK = 256;          // samples whose windows are computed together

struct Axis {
  int64_t kind, kernel, bins;
  int64_t width;   // window: edges K (exact) or bins W = 2J + 1 (table)
  int64_t cells;   // bins per window as stored: K - 1 (exact), W rounded up to 8 (table)
  int64_t q, reach, pad, extent;  // table grid Q, reach J; pad bins each side; stored extent
  double lo, scale, h, support;
  const double* edges;  // bins + 1
  const float *mass, *du, *dhb;  // table rows (Q, 2, cells): mass, d/du, d/dhb (bin units)
};

struct Plan {
  std::vector<Axis> axes;
  int64_t dims = 0, rows = 0, n = 0;
  std::vector<int64_t> strides;  // of the stored (padded) cells
  int64_t stored = 1;            // stored cells per row
  int64_t cells = 1;             // histogram cells per row
};

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
  STD_TORCH_CHECK(int64_t(ints.size()) == INTS_PER_AXIS * p.dims && int64_t(floats.size()) == FLOATS_PER_AXIS * p.dims,
                  "softhist: one plan entry per axis expected");
  const double* e = edges.const_data_ptr<double>();
  const float* tab = tables.const_data_ptr<float>();
  int64_t edges_used = 0, table_used = 0;
  for (int64_t d = 0; d < p.dims; ++d) {
    Axis a{};
    const int64_t* in = ints.data() + INTS_PER_AXIS * d;
    const double* fl = floats.data() + FLOATS_PER_AXIS * d;
    a.kind = in[0], a.kernel = in[1], a.bins = in[2], a.width = in[3], a.q = in[4], a.reach = in[5];
    a.lo = fl[0], a.scale = fl[1], a.h = fl[2], a.support = fl[3];
    STD_TORCH_CHECK(a.bins >= 1 && a.width >= 1, "softhist: bad axis plan");
    a.edges = e + edges_used;
    edges_used += a.bins + 1;
    if (a.kind == TABLE) {
      STD_TORCH_CHECK(a.q >= 1 && a.width == 2 * a.reach + 1, "softhist: bad table plan");
      a.cells = (a.width + 7) / 8 * 8;
      a.pad = 2 * a.reach;
      a.extent = a.bins + 2 * a.pad + (a.cells - a.width);
      int64_t size = a.q * 2 * a.cells;
      a.mass = tab + table_used, a.du = a.mass + size, a.dhb = a.du + size;
      table_used += 3 * size;
    } else {
      STD_TORCH_CHECK(a.width >= 2 && a.width <= a.bins + 1, "softhist: exact windows hold 2 to bins + 1 edges");
      a.cells = a.width - 1;
      a.pad = 0;
      a.extent = a.bins;
    }
    p.axes.push_back(a);
  }
  STD_TORCH_CHECK(edges_used == edges.numel() && table_used <= tables.numel(), "softhist: edges or tables do not match the plan");
  p.strides.assign(p.dims, 1);
  for (int64_t d = p.dims - 1; d >= 0; --d) {
    p.strides[d] = p.stored;
    p.stored *= p.axes[d].extent;
    p.cells *= p.axes[d].bins;
  }
  return p;
}

// Chunks per row: at least 32K samples each, at most 64 per row, partials within 32 MiB.
// A function of the shapes alone, so the summation order never depends on the thread count.
int64_t chunks_per_row(const Plan& p, int64_t doubles_per_chunk) {
  int64_t by_samples = std::max<int64_t>(1, (p.n + 32767) / 32768);
  int64_t by_rows = std::max<int64_t>(1, 64 / std::max<int64_t>(p.rows, 1));
  int64_t by_memory = std::max<int64_t>(1, (int64_t(32) << 20) / std::max<int64_t>(8 * p.rows * doubles_per_chunk, 1));
  return std::min({by_samples, by_rows, by_memory});
}

// ------------------------------------------------------------------------------ the windows
// One axis's windows for a block of samples: first stored bin, masses, and for the backward
// pass the z values and densities (exact) or derivative rows (table).
struct AxisWindows {
  std::vector<int64_t> first;
  std::vector<double> mass, z, cdf, dens, du, dhb;
  std::vector<int32_t> q;
  std::vector<float> t;
  explicit AxisWindows(const Axis& a) : first(BLOCK), mass(BLOCK * a.cells), q(BLOCK), t(BLOCK) {
    if (a.kind != TABLE) z.resize(BLOCK * a.width), cdf.resize(BLOCK * a.width), dens.resize(BLOCK * a.width);
    else du.resize(BLOCK * a.cells), dhb.resize(BLOCK * a.cells);
  }
};

struct Wants {
  bool mass, x, h, edges;
};

// Windows along axis d of samples [0, m) of `xs` (stride D); clears valid[i] for samples too
// far from the range (or NaN) to put mass in any bin.
template <typename scalar_t>
void axis_windows(const Axis& a, const scalar_t* xs, int64_t D, int64_t m, AxisWindows& w, uint8_t* valid, Wants want) {
  const int64_t B = a.bins;
  if (a.kind == TABLE) {
    const double J = double(a.reach);
    for (int64_t i = 0; i < m; ++i) {
      double u = (double(xs[i * D]) - a.lo) * a.scale;
      bool ok = u >= -J && u < double(B) + J;  // false for NaN
      u = ok ? u : 0.0;
      double base = std::floor(u), g = (u - base) * double(a.q);
      int32_t qi = std::min(int32_t(g), int32_t(a.q - 1));
      w.first[i] = int64_t(base) + a.reach;  // (base - J) + pad
      w.q[i] = qi;
      w.t[i] = float(g - double(qi));
      valid[i] &= ok;
    }
    if (want.mass) lerp_rows(a.mass, a.cells, w.q.data(), w.t.data(), m, w.mass.data());
    if (want.x) lerp_rows(a.du, a.cells, w.q.data(), w.t.data(), m, w.du.data());
    if (want.h) lerp_rows(a.dhb, a.cells, w.q.data(), w.t.data(), m, w.dhb.data());
    return;
  }
  const int64_t K = a.width;
  const double inv_h = 1.0 / a.h;
  double* z = w.z.data();
  if (a.kind == EXACT_UNIFORM) {
    const double hb = a.h * a.scale, reach = a.support * hb, inv_hb = 1.0 / hb;
    for (int64_t i = 0; i < m; ++i) {
      double u = (double(xs[i * D]) - a.lo) * a.scale;
      bool ok = u > -reach && u < double(B) + reach;
      u = ok ? u : 0.0;
      double s = clamp(std::floor(u - reach), 0.0, double(B + 1 - K));
      w.first[i] = int64_t(s);
      for (int64_t p = 0; p < K; ++p) z[i * K + p] = (s + double(p) - u) * inv_hb;
      valid[i] &= ok;
    }
  } else {
    const double* e = a.edges;
    const double reach = a.support * a.h;
    for (int64_t i = 0; i < m; ++i) {
      double v = double(xs[i * D]);
      bool ok = v > e[0] - reach && v < e[B] + reach;
      v = ok ? v : e[0];
      int64_t s = int64_t(std::upper_bound(e, e + B + 1, v - reach) - e) - 1;
      s = std::min(std::max<int64_t>(s, 0), B + 1 - K);
      w.first[i] = s;
      for (int64_t p = 0; p < K; ++p) z[i * K + p] = (e[s + p] - v) * inv_h;
      valid[i] &= ok;
    }
  }
  if (want.x || want.h || want.edges) eval_pdf(a.kernel, z, w.dens.data(), m * K);
  if (want.mass) {
    // F at the K edges, differenced into K - 1 bin masses.
    double* F = w.cdf.data();
    std::copy(z, z + m * K, F);
    eval_cdf(a.kernel, F, m * K);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t p = 0; p + 1 < K; ++p) w.mass[i * a.cells + p] = F[i * K + p + 1] - F[i * K + p];
  }
}

// ----------------------------------------------------------------------------- the scatters
SOFTHIST_HOT void scatter_1d(double* hist, const AxisWindows& w0, int64_t c0, const double* wt, const uint8_t* valid, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    if (!valid[i]) continue;
    double* h = hist + w0.first[i];
    const double* a = w0.mass.data() + i * c0;
    const double wi = wt[i];
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
    vals[0] = wt[i];
    for (int64_t d = 0; d < p.dims; ++d) {
      const int64_t c = p.axes[d].cells;
      const double* a = ws[d].mass.data() + i * c;
      for (int64_t r = count - 1; r >= 0; --r)
        for (int64_t j = c - 1; j >= 0; --j) vals[r * c + j] = vals[r] * a[j];
      count *= c;
      base += ws[d].first[i] * p.strides[d];
    }
    double* h = hist + base;
    for (int64_t c = 0; c < count; ++c) h[offsets[c]] += vals[c];
  }
}

std::vector<int64_t> window_offsets(const Plan& p) {
  std::vector<int64_t> offsets{0};
  for (int64_t d = 0; d < p.dims; ++d) {
    std::vector<int64_t> next;
    for (int64_t o : offsets)
      for (int64_t j = 0; j < p.axes[d].cells; ++j) next.push_back(o + j * p.strides[d]);
    offsets.swap(next);
  }
  return offsets;
}

// Stored offset of each histogram cell (the padding dropped).
std::vector<int64_t> crop_offsets(const Plan& p) {
  std::vector<int64_t> offsets{0};
  for (int64_t d = 0; d < p.dims; ++d) {
    std::vector<int64_t> next;
    next.reserve(offsets.size() * p.axes[d].bins);
    for (int64_t o : offsets)
      for (int64_t k = 0; k < p.axes[d].bins; ++k) next.push_back(o + (p.axes[d].pad + k) * p.strides[d]);
    offsets.swap(next);
  }
  return offsets;
}

template <typename scalar_t>
void block_weights(const scalar_t* w, int64_t m, double* out) {
  for (int64_t i = 0; i < m; ++i) out[i] = w ? double(w[i]) : 1.0;
}

// ------------------------------------------------------------------------------- forward op
template <typename scalar_t>
Tensor forward_impl(const Tensor& x, const std::optional<Tensor>& weight, const Plan& p) {
  const int64_t chunks = chunks_per_row(p, p.stored), units = p.rows * chunks, D = p.dims;
  std::unique_ptr<double[]> partial(new double[units * p.stored]);  // each unit zeroes its own
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight ? weight->const_data_ptr<scalar_t>() : nullptr;
  const std::vector<int64_t> offsets = D > 2 ? window_offsets(p) : std::vector<int64_t>{};
  torch::stable::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    std::vector<AxisWindows> ws;
    for (const Axis& a : p.axes) ws.emplace_back(a);
    std::vector<uint8_t> valid(BLOCK);
    std::vector<double> wt(BLOCK), vals(offsets.size() + 1);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t row = u / chunks, k = u % chunks;
      double* hist = partial.get() + u * p.stored;
      std::fill(hist, hist + p.stored, 0.0);
      const int64_t begin = row * p.n + k * p.n / chunks, end = row * p.n + (k + 1) * p.n / chunks;
      for (int64_t a = begin; a < end; a += BLOCK) {
        const int64_t m = std::min(BLOCK, end - a);
        std::fill(valid.begin(), valid.begin() + m, uint8_t(1));
        for (int64_t d = 0; d < D; ++d) axis_windows(p.axes[d], xp + a * D + d, D, m, ws[d], valid.data(), {true, false, false, false});
        block_weights(wp ? wp + a : nullptr, m, wt.data());
        if (D == 1) scatter_1d(hist, ws[0], p.axes[0].cells, wt.data(), valid.data(), m);
        else if (D == 2) scatter_2d(hist, p.strides[0], ws[0], p.axes[0].cells, ws[1], p.axes[1].cells, wt.data(), valid.data(), m);
        else scatter_nd(hist, p, ws, offsets, wt.data(), valid.data(), m, vals);
      }
    }
  });
  // Sum each row's partials in chunk order.
  std::vector<int64_t> sizes{p.rows};
  for (const Axis& a : p.axes) sizes.push_back(a.bins);
  Tensor out = torch::stable::new_empty(x, sizes);
  scalar_t* op = out.mutable_data_ptr<scalar_t>();
  const std::vector<int64_t> crop = crop_offsets(p);
  torch::stable::parallel_for(0, p.rows * p.cells, 4096, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t row = c / p.cells;
      const double* src = partial.get() + row * chunks * p.stored + crop[c % p.cells];
      double s = 0.0;
      for (int64_t k = 0; k < chunks; ++k) s += src[k * p.stored];
      op[c] = scalar_t(s);
    }
  });
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

// ------------------------------------------------------------------------------ backward op
// A_d for one sample: dA[d][k] = sum over its window cells with k_d = k of G * prod_{e != d} a_e.
void cell_gradients(const Plan& p, const double* g, const std::vector<AxisWindows>& ws, int64_t i,
                    std::vector<std::vector<double>>& dA, std::vector<double>& prefix) {
  const int64_t D = p.dims;
  int64_t base = 0;
  for (int64_t d = 0; d < D; ++d) {
    base += ws[d].first[i] * p.strides[d];
    std::fill(dA[d].begin(), dA[d].begin() + p.axes[d].cells, 0.0);
  }
  if (D == 1) {
    const double* gr = g + base;
    for (int64_t j = 0; j < p.axes[0].cells; ++j) dA[0][j] = gr[j];
    return;
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

template <typename scalar_t>
std::tuple<Tensor, Tensor, Tensor, Tensor> backward_impl(const Tensor& grad, const Tensor& x, const std::optional<Tensor>& weight,
                                                         const Plan& p, const std::vector<int64_t>& needs) {
  const int64_t D = p.dims;
  const bool need_x = needs[0], need_w = needs[1], need_h = needs[2];
  std::vector<bool> need_e(D);
  int64_t edge_total = 0;
  std::vector<int64_t> edge_offset(D, 0);
  for (int64_t d = 0; d < D; ++d) {
    need_e[d] = needs[3 + d];
    STD_TORCH_CHECK(!need_e[d] || p.axes[d].kind != TABLE, "softhist: edge gradients need an exact axis");
    edge_offset[d] = edge_total;
    edge_total += p.axes[d].bins + 1;
  }
  // The cells' gradients, padded like the stored histogram, in float64.
  std::vector<double> g(p.rows * p.stored, 0.0);
  {
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const std::vector<int64_t> crop = crop_offsets(p);
    for (int64_t r = 0; r < p.rows; ++r)
      for (int64_t c = 0; c < p.cells; ++c) g[r * p.stored + crop[c]] = double(gp[r * p.cells + c]);
  }
  const int64_t per_unit = D + (edge_total + 1);
  const int64_t chunks = chunks_per_row(p, per_unit), units = p.rows * chunks;
  std::vector<double> partial(units * per_unit, 0.0);  // per unit: grad_h (D), then grad_edges
  Tensor grad_x = torch::stable::new_empty(x, {need_x ? p.rows * p.n * D : 0});
  Tensor grad_w = torch::stable::new_empty(x, {need_w ? p.rows * p.n : 0});
  scalar_t* gx = need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* gw = need_w ? grad_w.mutable_data_ptr<scalar_t>() : nullptr;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight ? weight->const_data_ptr<scalar_t>() : nullptr;
  bool any_edges = false;
  for (bool e : need_e) any_edges = any_edges || e;
  const Wants want{D > 1 || need_w, need_x, need_h, any_edges};

  torch::stable::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    std::vector<AxisWindows> ws;
    std::vector<std::vector<double>> dA;
    for (const Axis& a : p.axes) ws.emplace_back(a), dA.emplace_back(a.cells + 1, 0.0);
    std::vector<uint8_t> valid(BLOCK);
    std::vector<double> wt(BLOCK), prefix(D + 1);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t row = u / chunks, k = u % chunks;
      double* gh = partial.data() + u * per_unit;
      double* ge = gh + D;
      const double* grow = g.data() + row * p.stored;
      const int64_t begin = row * p.n + k * p.n / chunks, end = row * p.n + (k + 1) * p.n / chunks;
      for (int64_t a = begin; a < end; a += BLOCK) {
        const int64_t m = std::min(BLOCK, end - a);
        std::fill(valid.begin(), valid.begin() + m, uint8_t(1));
        for (int64_t d = 0; d < D; ++d)
          axis_windows(p.axes[d], xp + a * D + d, D, m, ws[d], valid.data(), {want.mass, want.x, want.h, bool(need_e[d])});
        block_weights(wp ? wp + a : nullptr, m, wt.data());
        for (int64_t i = 0; i < m; ++i) {
          const int64_t s = a + i;
          if (!valid[i]) {
            if (need_x) for (int64_t d = 0; d < D; ++d) gx[s * D + d] = scalar_t(0);
            if (need_w) gw[s] = scalar_t(0);
            continue;
          }
          cell_gradients(p, grow, ws, i, dA, prefix);
          if (need_w) {
            const int64_t c0 = p.axes[0].cells;
            const double* a0 = ws[0].mass.data() + i * c0;
            double sw = 0.0;
            for (int64_t j = 0; j < c0; ++j) sw += dA[0][j] * a0[j];
            gw[s] = scalar_t(sw);
          }
          for (int64_t d = 0; d < D; ++d) {
            const Axis& ax = p.axes[d];
            const double* A = dA[d].data();
            double sx = 0.0, sh = 0.0;
            if (ax.kind == TABLE) {
              const double* du = ws[d].du.data() + i * ax.cells;
              const double* dh = ws[d].dhb.data() + i * ax.cells;
              if (need_x) for (int64_t j = 0; j < ax.cells; ++j) sx += A[j] * du[j];
              if (need_h) for (int64_t j = 0; j < ax.cells; ++j) sh += A[j] * dh[j];
              sx *= wt[i] * ax.scale;
              sh *= wt[i] * ax.scale;
            } else if (need_x || need_h || need_e[d]) {
              const int64_t K = ax.width;
              const double* z = ws[d].z.data() + i * K;
              const double* f = ws[d].dens.data() + i * K;
              const double c = wt[i] / ax.h;
              double* edge_grad = ge + edge_offset[d] + ws[d].first[i];
              for (int64_t q = 0; q < K; ++q) {
                const double dF = (q > 0 ? A[q - 1] : 0.0) - (q + 1 < K ? A[q] : 0.0);
                const double dz = c * dF * f[q];  // dL/dz_q / h
                sx -= dz;
                sh -= dz * z[q];
                if (need_e[d]) edge_grad[q] += dz;
              }
            }
            if (need_x) gx[s * D + d] = scalar_t(sx);
            if (need_h) gh[d] += sh;
          }
        }
      }
    }
  });
  Tensor grad_h = torch::stable::new_zeros(x, {need_h ? D : 0}, ScalarType::Double);
  Tensor grad_e = torch::stable::new_zeros(x, {any_edges ? edge_total : 0}, ScalarType::Double);
  double* hp = need_h ? grad_h.mutable_data_ptr<double>() : nullptr;
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

}  // namespace

STABLE_TORCH_LIBRARY(softhist, m) {
  m.def("soft_histogram(Tensor x, Tensor? weight, Tensor edges, Tensor tables, int[] axis_ints, float[] axis_floats) -> Tensor");
  m.def(
      "soft_histogram_backward(Tensor grad, Tensor x, Tensor? weight, Tensor edges, Tensor tables, int[] axis_ints, "
      "float[] axis_floats, int[] needs) -> (Tensor, Tensor, Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(softhist, CPU, m) {
  m.impl("soft_histogram", TORCH_BOX(&soft_histogram));
  m.impl("soft_histogram_backward", TORCH_BOX(&soft_histogram_backward));
}

// `import softhist._C` loads this library (and so registers the ops); the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "softhist's native CPU kernels (torch.ops.softhist)", -1, nullptr};
  return PyModule_Create(&module);
}
