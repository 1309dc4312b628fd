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
// Per axis, one of four strategies computes a sample's window:
// * EXACT_UNIFORM: equal-width bins, edges placed arithmetically (e_j = lo + j / scale);
// * EXACT_EDGES: any increasing edges, the window found by binary search;
// * HARD: an axis binned hard inside a soft histogram (numpy's rule): one bin, no gradients;
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
#include <type_traits>
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
enum KernelId : int64_t { GAUSSIAN = 0, LOGISTIC = 1, BOX = 2, TRIANGULAR = 3, EPANECHNIKOV = 4, BSPLINE = 5, BSPLINE2 = 6 };

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
// Compact kernels: half-widths of the box, triangular and Epanechnikov kernels; knot spacings of
// the cubic and quadratic B-splines.
constexpr double BOX_A = 1.7320508075688772, TRI_A = 2.4494897427831781, EPA_A = 2.2360679774997897;
constexpr double BSP_B = 1.7320508075688772, BSP2_B = 2.0;

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
  } else if constexpr (K == BSPLINE) {
    double a = std::min(std::fabs(z) / BSP_B, 2.0), b = 2.0 - a;
    double half = a < 1.0 ? a * (2.0 / 3.0 - a * a / 3.0 + a * a * a / 8.0) : 0.5 - b * b * b * b / 24.0;
    return 0.5 + (z > 0 ? half : (z < 0 ? -half : 0.0));
  } else {  // quadratic B-spline, t = |z|/2: H(t) = 3t/4 - t^3/3 below 1/2, 1/2 - (3/2 - t)^3/6 below 3/2
    double t = std::min(std::fabs(z) / BSP2_B, 1.5), b = 1.5 - t;
    double half = t < 0.5 ? t * (0.75 - t * t / 3.0) : 0.5 - b * b * b / 6.0;
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
  } else if constexpr (K == BSPLINE) {
    double a = std::fabs(z) / BSP_B, b = std::max(2.0 - a, 0.0);
    return (a < 1.0 ? 2.0 / 3.0 - a * a + 0.5 * a * a * a : b * b * b / 6.0) / BSP_B;
  } else {
    double t = std::fabs(z) / BSP2_B, b = std::max(1.5 - t, 0.0);
    return (t < 0.5 ? 0.75 - t * t : 0.5 * b * b) / BSP2_B;
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
    case BSPLINE: cdf_in_place<BSPLINE>(z, n); break;
    default: cdf_in_place<BSPLINE2>(z, n); break;
  }
}

SOFTHIST_HOT void eval_pdf(int64_t kernel, const double* z, double* out, int64_t n) {
  switch (kernel) {
    case GAUSSIAN: pdf_of<GAUSSIAN>(z, out, n); break;
    case LOGISTIC: pdf_of<LOGISTIC>(z, out, n); break;
    case BOX: pdf_of<BOX>(z, out, n); break;
    case TRIANGULAR: pdf_of<TRIANGULAR>(z, out, n); break;
    case EPANECHNIKOV: pdf_of<EPANECHNIKOV>(z, out, n); break;
    case BSPLINE: pdf_of<BSPLINE>(z, out, n); break;
    default: pdf_of<BSPLINE2>(z, out, n); break;
  }
}

// Dot products with eight partial sums and a fixed tree at the end: they vectorize, and the
// per-sample reductions stay short (a plain running sum is a chain of n dependent adds).
inline double tree8(const double* acc) {
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

inline double dot(const double* a, const double* b, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
#pragma omp simd
    for (int k = 0; k < 8; ++k) acc[k] += a[j + k] * b[j + k];
  }
  for (int k = 0; j < n; ++j, ++k) acc[k] += a[j] * b[j];
  return tree8(acc);
}

// Eight doubles as one value (GCC/clang vector extension): each target clone compiles it to its
// own registers (one AVX-512 register, two AVX2 ones, four SSE2 ones), so sums that live in it
// stay in registers instead of going through memory.
typedef double v8d __attribute__((vector_size(64)));
typedef float v8f __attribute__((vector_size(32)));

inline v8d load8(const double* p) {
  v8d v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(double* p, v8d v) { std::memcpy(p, &v, sizeof v); }

inline double sum8(v8d v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

inline v8d load8(const float* p) {
  v8f v;
  std::memcpy(&v, p, sizeof v);
  return __builtin_convertvector(v, v8d);
}

// Table rows are (value, step) pairs of w8 floats each (w8 a multiple of 8), interpolated in
// float64: eight columns from j of the row at t are row[j..] + t * row[w8 + j..].
inline v8d lerp8(const float* row, int64_t w8, int64_t j, double t) { return load8(row + j) + t * load8(row + w8 + j); }

// Eight partial sums of sum_j G[j] * (the row at t)[j].
inline v8d row_dot8(const double* G, const float* row, int64_t w8, double t) {
  v8d acc = load8(G) * lerp8(row, w8, 0, t);
  for (int64_t j = 8; j < w8; j += 8) acc += load8(G + j) * lerp8(row, w8, j, t);
  return acc;
}

// out[i, :] = factor * (row q_i at t_i) for a (Q, 2, w8) float table.
SOFTHIST_HOT void lerp_rows(const float* tab, int64_t w8, const int32_t* q, const float* t, int64_t m, double factor, double* out) {
  for (int64_t i = 0; i < m; ++i) {
    const float* row = tab + int64_t(q[i]) * 2 * w8;
    for (int64_t j = 0; j < w8; j += 8) store8(out + i * w8 + j, factor * lerp8(row, w8, j, t[i]));
  }
}

// --------------------------------------------------------------------------------- the plan
enum Kind : int64_t { EXACT_UNIFORM = 0, EXACT_EDGES = 1, TABLE = 2, HARD = 3 };
constexpr int64_t INTS_PER_AXIS = 6;    // kind, kernel, bins, width, q, reach
constexpr int64_t FLOATS_PER_AXIS = 4;  // lo, scale, bandwidth, support
constexpr int64_t BLOCK = 256;          // samples whose windows are computed together
constexpr int64_t LANES = 4;            // interleaved partial histograms of one-axis forwards (a power of 2)

// Lanes for a histogram of `cells` 8-byte cells: LANES interleaved copies while they fit in L1
// (sample i adds into copy i % LANES, so consecutive samples rarely update the same cell, whose
// store would stall the next load), one copy past that, where the extra traffic costs more.
inline int64_t lanes_for(int64_t cells) { return LANES * cells <= 4096 ? LANES : 1; }

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
      STD_TORCH_CHECK(a.q >= 1 && (a.q & (a.q - 1)) == 0 && a.width == 2 * a.reach + 1, "softhist: bad table plan");
      STD_TORCH_CHECK((a.bins + 2 * a.reach) * a.q < (int64_t(1) << 31), "softhist: table grid past 2^31 points");
      a.cells = (a.width + 7) / 8 * 8;
      a.pad = 2 * a.reach;
      a.extent = a.bins + 2 * a.pad + (a.cells - a.width);
      int64_t size = a.q * 2 * a.cells;
      a.mass = tab + table_used, a.du = a.mass + size, a.dhb = a.du + size;
      table_used += 3 * size;
    } else if (a.kind == HARD) {
      a.cells = 1;
      a.pad = 0;
      a.extent = a.bins;
    } else {
      STD_TORCH_CHECK(a.width >= 2 && a.width <= a.bins + 1, "softhist: exact windows hold 2 to bins + 1 edges");
      a.cells = a.width - 1;
      a.pad = 0;
      a.extent = a.bins;
    }
    p.axes.push_back(a);
  }
  STD_TORCH_CHECK(edges_used == edges.numel() && table_used <= tables.numel(), "softhist: edges or tables do not match the plan");
  for (const Axis& a : p.axes) STD_TORCH_CHECK(a.extent < (int64_t(1) << 30), "softhist: at most 2^30 bins per axis");
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
// One axis's windows for a block of samples: the first stored bin of each, and per window bin
// its mass and, for the backward pass, the mass's derivatives in x and h (data units). Exact
// axes also keep z and f(z) at the window edges (for edge gradients).
struct AxisWindows {
  std::vector<int32_t> first;
  std::vector<double> mass, dx, dh, z, cdf, dens;
  std::vector<int32_t> q;
  std::vector<float> t;
  explicit AxisWindows(const Axis& a)
      : first(BLOCK), mass(BLOCK * a.cells), dx(BLOCK * a.cells), dh(BLOCK * a.cells), q(BLOCK), t(BLOCK) {
    if (a.kind == EXACT_UNIFORM || a.kind == EXACT_EDGES) z.resize(BLOCK * a.width), cdf.resize(BLOCK * a.width), dens.resize(BLOCK * a.width);
  }
};

struct Wants {
  bool mass, x, h, edges;
};

// One coordinate of a block of samples (stride D), as float64.
template <typename scalar_t>
void load_coordinates(const scalar_t* xs, int64_t D, int64_t m, double* out) {
  for (int64_t i = 0; i < m; ++i) out[i] = double(xs[i * D]);
}

// The last k in [-1, B] with e_k <= v (upper_bound - 1) for non-decreasing edges e_0..e_B, v
// finite. A guess from equal widths, checked against the edges, answers for equal-width bins
// and near them without a search; other edges fall back to binary search.
struct EdgeSearch {
  const double* e;
  int64_t B;
  double inv_width;  // 0 where the span cannot be inverted: every guess is checked anyway
  EdgeSearch(const double* edges, int64_t bins) : e(edges), B(bins) {
    const double inv = double(bins) / (edges[bins] - edges[0]);
    inv_width = std::isfinite(inv) ? inv : 0.0;
  }
  int64_t last_at_or_below(double v) const {
    const double g = (v - e[0]) * inv_width;
    const int64_t k = int64_t(std::floor(g >= -1.0 ? std::min(g, double(B)) : -1.0));  // NaN: -1
    if ((k < 0 || e[k] <= v) && (k == B || v < e[k + 1])) return k;
    return int64_t(std::upper_bound(e, e + B + 1, v) - e) - 1;
  }
};

// A sample's position on a table axis's grid of Q points per bin, counted from the stored first
// bin: g = ((x - lo) * scale + J) * Q. Its integer part k holds both the stored first bin of the
// window (k / Q: the bin J below the sample's, stored 2J further) and the table row (k mod Q);
// the fraction g - k interpolates between rows. Q is a power of two, so the split is a shift and
// a mask, and a block's positions are one vectorized pass. Samples out of reach (or NaN) are
// parked at g = 0, a real row, so later passes need no branch.
struct TableGrid {
  double lo, scale, J, Q, top;  // top = (B + 2J) Q < 2^31 (make_plan)
  int shift;
  int32_t mask;
  explicit TableGrid(const Axis& a)
      : lo(a.lo), scale(a.scale), J(double(a.reach)), Q(double(a.q)), top((double(a.bins) + 2.0 * J) * Q),
        shift(__builtin_ctzll(uint64_t(a.q))), mask(int32_t(a.q - 1)) {}
  // Whether x reaches a bin; its window's stored first bin, table row and interpolation weight.
  bool locate(double x, int32_t& bin, int32_t& q, float& t) const {
    const double g = ((x - lo) * scale + J) * Q;
    const bool ok = (g >= 0.0) & (g < top);  // false for NaN
    const double parked = ok ? g : 0.0, whole = std::floor(parked);  // floor, not a cast: GCC vectorizes it
    const int32_t k = int32_t(whole);
    bin = k >> shift;
    q = k & mask;
    t = float(parked - whole);
    return ok;
  }
};

// Windows of m samples with coordinates xs along one axis; clears valid[i] for samples too far
// from the range (or NaN) to put mass in any bin.
SOFTHIST_HOT void axis_windows(const Axis& a, const double* xs, int64_t m, AxisWindows& w, uint8_t* valid, Wants want) {
  // Raw, unaliased pointers: stores through the vectors would make the compiler reload them.
  int32_t* __restrict first = w.first.data();
  const double B = double(a.bins), lo = a.lo, scale = a.scale;
  if (a.kind == TABLE) {
    const TableGrid grid(a);
    int32_t* __restrict q = w.q.data();
    float* __restrict t = w.t.data();
#pragma omp simd
    for (int64_t i = 0; i < m; ++i) valid[i] &= uint8_t(grid.locate(xs[i], first[i], q[i], t[i]));
    if (want.mass) lerp_rows(a.mass, a.cells, q, t, m, 1.0, w.mass.data());
    if (want.x) lerp_rows(a.du, a.cells, q, t, m, scale, w.dx.data());
    if (want.h) lerp_rows(a.dhb, a.cells, q, t, m, scale, w.dh.data());
    return;
  }
  if (a.kind == HARD) {  // the indicator of the sample's bin, e_k <= x < e_{k+1} (the last bin closed)
    const double* e = a.edges;
    const EdgeSearch search(e, a.bins);
    for (int64_t i = 0; i < m; ++i) {
      const double v = xs[i];
      const bool ok = v >= e[0] && v <= e[a.bins];  // false for NaN
      first[i] = int32_t(ok ? std::min(search.last_at_or_below(v), a.bins - 1) : 0);
      w.mass[i] = 1.0, w.dx[i] = 0.0, w.dh[i] = 0.0;
      valid[i] &= uint8_t(ok);
    }
    return;
  }
  const int64_t K = a.width, C = a.cells;
  double* __restrict z = w.z.data();
  if (a.kind == EXACT_UNIFORM) {
    const double hb = a.h * scale, reach = a.support * hb, inv_hb = 1.0 / hb, last = double(a.bins + 1 - K);
    for (int64_t i = 0; i < m; ++i) {
      double u = (xs[i] - lo) * scale;
      bool ok = u > -reach && u < B + reach;
      u = ok ? u : 0.0;
      double s = clamp(std::floor(u - reach), 0.0, last);
      first[i] = int32_t(s);
      for (int64_t p = 0; p < K; ++p) z[i * K + p] = (s + double(p) - u) * inv_hb;
      valid[i] &= uint8_t(ok);
    }
  } else {
    const double* e = a.edges;
    const double reach = a.support * a.h, inv_h = 1.0 / a.h;
    const EdgeSearch search(e, a.bins);
    for (int64_t i = 0; i < m; ++i) {
      double v = xs[i];
      bool ok = v > e[0] - reach && v < e[a.bins] + reach;
      v = ok ? v : e[0];
      int64_t s = search.last_at_or_below(v - reach);
      s = std::min(std::max<int64_t>(s, 0), a.bins + 1 - K);
      first[i] = int32_t(s);
      for (int64_t p = 0; p < K; ++p) z[i * K + p] = (e[s + p] - v) * inv_h;
      valid[i] &= uint8_t(ok);
    }
  }
  if (want.mass) {  // F at the K edges, differenced into K - 1 bin masses
    double* __restrict F = w.cdf.data();
    double* __restrict mass = w.mass.data();
    std::copy(z, z + m * K, F);
    eval_cdf(a.kernel, F, m * K);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t p = 0; p + 1 < K; ++p) mass[i * C + p] = F[i * K + p + 1] - F[i * K + p];
  }
  if (want.x || want.h || want.edges) {
    // With z = (e - x)/h: d mass_p/dx = -(f_{p+1} - f_p)/h, d mass_p/dh = -(z_{p+1} f_{p+1} - z_p f_p)/h.
    double* __restrict f = w.dens.data();
    double* __restrict dx = w.dx.data();
    double* __restrict dh = w.dh.data();
    eval_pdf(a.kernel, z, f, m * K);
    const double inv_h = 1.0 / a.h;
    for (int64_t i = 0; want.x && i < m; ++i) {
      const double* fi = f + i * K;
      for (int64_t p = 0; p + 1 < K; ++p) dx[i * C + p] = -(fi[p + 1] - fi[p]) * inv_h;
    }
    for (int64_t i = 0; want.h && i < m; ++i) {
      const double* zi = z + i * K;
      const double* fi = f + i * K;
      for (int64_t p = 0; p + 1 < K; ++p) dh[i * C + p] = -(zi[p + 1] * fi[p + 1] - zi[p] * fi[p]) * inv_h;
    }
  }
}

// ----------------------------------------------------------------------------- the scatters
SOFTHIST_HOT void scatter_1d(double* hist, int64_t lanes, int64_t lane_size, const AxisWindows& w0, int64_t c0, const double* wt,
                             const uint8_t* valid, int64_t m) {
  for (int64_t i = 0; i < m; ++i) {
    if (!valid[i]) continue;
    double* h = hist + (i & (lanes - 1)) * lane_size + w0.first[i];
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
    if (c1 == 8) {  // the common table window: one vector per row
      const v8d b = load8(a1);
      for (int64_t j = 0; j < c0; ++j) store8(h + j * stride0, load8(h + j * stride0) + (wt[i] * a0[j]) * b);
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

// ------------------------------------------------------------------ one table axis (1-D)
// The common case, kept free of the general window buffers: float32 samples (tables serve
// float32 and narrower), one vectorized pass for a block's positions, then per-sample rows.
struct TableBlock {
  int32_t bin[BLOCK], q[BLOCK];
  float t[BLOCK];
  double w[BLOCK];  // the sample's weight, 0 where it reaches no bin
  uint8_t valid[BLOCK];
};

SOFTHIST_HOT void table_positions(const Axis& a, const float* xs, const float* wt, int64_t m, TableBlock& b) {
  const TableGrid grid(a);
  int32_t* __restrict bin = b.bin;
  int32_t* __restrict q = b.q;
  float* __restrict t = b.t;
  double* __restrict w = b.w;
  uint8_t* __restrict valid = b.valid;
#pragma omp simd
  for (int64_t i = 0; i < m; ++i) {
    const double wi = wt ? double(wt[i]) : 1.0;
    const bool ok = grid.locate(double(xs[i]), bin[i], q[i], t[i]);
    w[i] = ok ? wi : 0.0;
    valid[i] = uint8_t(ok);
  }
}

// Forward: each sample adds w * (row + t * step) into its window.
SOFTHIST_HOT void table_1d_forward(const Axis& a, const TableBlock& b, int64_t m, double* hist, int64_t lanes, int64_t lane_size) {
  const int64_t w8 = a.cells, row_size = 2 * w8;
  for (int64_t i = 0; i < m; ++i) {
    const float* row = a.mass + b.q[i] * row_size;
    double* h = hist + (i & (lanes - 1)) * lane_size + b.bin[i];
    for (int64_t j = 0; j < w8; j += 8) store8(h + j, load8(h + j) + b.w[i] * lerp8(row, w8, j, b.t[i]));
  }
}

// Backward: per sample, the dot of the cells' gradients with an interpolated row, in float64.
// Two sweeps: eight partial sums per sample into P (short dependency chains let many samples be
// in flight), then their sums times the sample's factor (0 where it reaches no bin).
SOFTHIST_HOT void table_1d_dots(const Axis& a, const TableBlock& b, const float* tab, const double* g, int64_t m, double* P) {
  const int64_t w8 = a.cells, row_size = 2 * w8;
  for (int64_t i = 0; i < m; ++i) store8(P + 8 * i, row_dot8(g + b.bin[i], tab + b.q[i] * row_size, w8, b.t[i]));
}

// dL/dx = w scale (du row . G), dL/dw = (mass row . G), dL/dh += w scale (dhb row . G).
SOFTHIST_HOT void table_1d_backward(const Axis& a, const TableBlock& b, const double* g, int64_t m, bool need_w, bool need_h, double* P,
                                    float* gx, float* gw, double* gh) {
  if (gx) {
    table_1d_dots(a, b, a.du, g, m, P);
    for (int64_t i = 0; i < m; ++i) gx[i] = b.valid[i] ? float(sum8(load8(P + 8 * i)) * (b.w[i] * a.scale)) : 0.0f;
  }
  if (need_w) {
    table_1d_dots(a, b, a.mass, g, m, P);
    for (int64_t i = 0; i < m; ++i) gw[i] = b.valid[i] ? float(sum8(load8(P + 8 * i))) : 0.0f;
  }
  if (need_h) {
    table_1d_dots(a, b, a.dhb, g, m, P);
    double s = 0.0;
    for (int64_t i = 0; i < m; ++i) s += b.valid[i] ? sum8(load8(P + 8 * i)) * (b.w[i] * a.scale) : 0.0;
    *gh += s;
  }
}

// With many samples per bin, the backward of a one-axis table is cheaper through gradient tables:
// GV[n, q] = sum_j G[n + j] * row_q[j] at every grid point (stored base bin n, sub-position q),
// after which each sample interpolates two values instead of dotting a row. Same values: the
// rows are linear in q between grid points, so the interpolation commutes with the dot product.
SOFTHIST_HOT void gradient_table(const Axis& a, const float* tab, const double* g, double* gv) {
  const int64_t w8 = a.cells, Q = a.q, span = a.bins + 2 * a.reach;
  torch::stable::parallel_for(0, span, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t q = 0; q <= Q; ++q) {  // q = Q: the last row at t = 1
        gv[n * (Q + 1) + q] = sum8(row_dot8(g + n, tab + std::min(q, Q - 1) * 2 * w8, w8, q == Q ? 1.0 : 0.0));
      }
    }
  });
}

SOFTHIST_HOT void gtable_1d_backward(const Axis& a, const TableBlock& b, int64_t m, const double* gvx, const double* gvw,
                                     const double* gvh, float* gx, float* gw, double* gh) {
  const int64_t stride = a.q + 1;
  double sum_h = 0.0;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t k = int64_t(b.bin[i]) * stride + b.q[i];
    const double t = b.t[i], w = b.w[i] * a.scale;
    const bool ok = b.valid[i];
    if (gvx) gx[i] = ok ? float(w * (gvx[k] + t * (gvx[k + 1] - gvx[k]))) : 0.0f;
    if (gvw) gw[i] = ok ? float(gvw[k] + t * (gvw[k + 1] - gvw[k])) : 0.0f;
    if (gvh) sum_h += ok ? w * (gvh[k] + t * (gvh[k + 1] - gvh[k])) : 0.0;
  }
  *gh += sum_h;
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
  const int64_t D = p.dims, lanes = D == 1 ? lanes_for(p.stored) : 1, size = lanes * p.stored;  // 2-D: no gain measured
  const int64_t chunks = chunks_per_row(p, size), units = p.rows * chunks;
  std::unique_ptr<double[]> partial(new double[units * size]);  // each unit zeroes its own
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight ? weight->const_data_ptr<scalar_t>() : nullptr;
  const std::vector<int64_t> offsets = D > 2 ? window_offsets(p) : std::vector<int64_t>{};
  torch::stable::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    std::vector<AxisWindows> ws;
    for (const Axis& a : p.axes) ws.emplace_back(a);
    std::vector<uint8_t> valid(BLOCK);
    std::vector<double> wt(BLOCK), coords(BLOCK), vals(offsets.size() + 1);
    std::unique_ptr<TableBlock> tb(new TableBlock);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t row = u / chunks, k = u % chunks;
      double* hist = partial.get() + u * size;
      std::fill(hist, hist + size, 0.0);
      const int64_t begin = row * p.n + k * p.n / chunks, end = row * p.n + (k + 1) * p.n / chunks;
      for (int64_t a = begin; a < end; a += BLOCK) {
        const int64_t m = std::min(BLOCK, end - a);
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (D == 1 && p.axes[0].kind == TABLE) {
            table_positions(p.axes[0], xp + a, wp ? wp + a : nullptr, m, *tb);
            table_1d_forward(p.axes[0], *tb, m, hist, lanes, p.stored);
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
      const double* src = partial.get() + row * chunks * size + crop[c % p.cells];
      double s = 0.0;
      for (int64_t k = 0; k < chunks * lanes; ++k) s += src[k * p.stored];
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
    const v8d g = load8(G + j * stride);
    u += a0[j] * g;
    if (x0) xs += x0[j] * g;
    if (h0) hs += h0[j] * g;
  }
  const v8d b = load8(a1);
  return {sum8(b * u), x0 ? sum8(b * xs) : 0.0, x1 ? sum8(load8(x1) * u) : 0.0, h0 ? sum8(b * hs) : 0.0, h1 ? sum8(load8(h1) * u) : 0.0};
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
    cell_gradients(p, grow, ws, i, dA, prefix, A_of);
    gw[i] = need.w ? dot(A_of[0], ws[0].mass.data() + i * p.axes[0].cells, p.axes[0].cells) : 0.0;
    for (int64_t d = 0; d < D; ++d) {
      const Axis& ax = p.axes[d];
      const double* A = A_of[d];
      const int64_t C = ax.cells;
      gx[i * D + d] = need.x ? w * dot(A, ws[d].dx.data() + i * C, C) : 0.0;
      if (need.h) gh[d] += w * dot(A, ws[d].dh.data() + i * C, C);
      if (need.edges[d]) {  // dL/de_p = (w/h) (A[p-1] - A[p]) f(z_p)
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
  // The cells' gradients, padded like the stored histogram, in float64.
  std::vector<double> g(p.rows * p.stored, 0.0);
  {
    const scalar_t* gp = grad.const_data_ptr<scalar_t>();
    const std::vector<int64_t> crop = crop_offsets(p);
    for (int64_t r = 0; r < p.rows; ++r)
      for (int64_t c = 0; c < p.cells; ++c) g[r * p.stored + crop[c]] = double(gp[r * p.cells + c]);
  }
  const int64_t per_unit = D + edge_total;  // per unit: grad_h (D), then grad_edges
  const int64_t chunks = chunks_per_row(p, per_unit), units = p.rows * chunks;
  std::vector<double> partial(units * per_unit, 0.0);
  Tensor grad_x = torch::stable::new_empty(x, {need.x ? p.rows * p.n * D : 0});
  Tensor grad_w = torch::stable::new_empty(x, {need.w ? p.rows * p.n : 0});
  scalar_t* gx = need.x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr;
  scalar_t* gw = need.w ? grad_w.mutable_data_ptr<scalar_t>() : nullptr;
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const scalar_t* wp = weight ? weight->const_data_ptr<scalar_t>() : nullptr;
  const bool masses = D > 1 || need.w;
  // Gradient tables for one table axis, when building them costs less than the per-sample dots.
  const Axis& a0 = p.axes[0];
  const int64_t gv_size = a0.kind == TABLE ? (a0.bins + 2 * a0.reach) * (a0.q + 1) : 0;
  const bool gtable = D == 1 && a0.kind == TABLE && 4 * p.rows * gv_size <= p.rows * p.n && gv_size <= (int64_t(1) << 21);
  std::vector<double> gvs(gtable ? 3 * p.rows * gv_size : 0);
  if (gtable) {
    for (int64_t r = 0; r < p.rows; ++r) {
      double* gv = gvs.data() + 3 * r * gv_size;
      if (need.x) gradient_table(a0, a0.du, g.data() + r * p.stored, gv);
      if (need.w) gradient_table(a0, a0.mass, g.data() + r * p.stored, gv + gv_size);
      if (need.h) gradient_table(a0, a0.dhb, g.data() + r * p.stored, gv + 2 * gv_size);
    }
  }

  torch::stable::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    std::vector<AxisWindows> ws;
    std::vector<std::vector<double>> dA;
    int64_t widest = 0;
    for (const Axis& a : p.axes) widest = std::max(widest, a.cells);
    for (const Axis& a : p.axes) ws.emplace_back(a), dA.emplace_back(widest + 1, 0.0);
    std::vector<uint8_t> valid(BLOCK);
    std::vector<double> wt(BLOCK), coords(BLOCK), prefix(D + 1 + (D == 2 ? p.axes[1].cells : 0)), block_gx(BLOCK * D), block_gw(BLOCK);
    std::vector<double> dots(8 * BLOCK);
    std::unique_ptr<TableBlock> tb(new TableBlock);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t row = u / chunks, k = u % chunks;
      double* gh = partial.data() + u * per_unit;
      const double* grow = g.data() + row * p.stored;
      const int64_t begin = row * p.n + k * p.n / chunks, end = row * p.n + (k + 1) * p.n / chunks;
      for (int64_t a = begin; a < end; a += BLOCK) {
        const int64_t m = std::min(BLOCK, end - a);
        if constexpr (std::is_same_v<scalar_t, float>) {
          if (D == 1 && a0.kind == TABLE) {  // writes its float32 gradients itself
            table_positions(a0, xp + a, wp ? wp + a : nullptr, m, *tb);
            float* gx_block = gx ? gx + a : nullptr;
            float* gw_block = gw ? gw + a : nullptr;
            if (gtable) {
              const double* gv = gvs.data() + 3 * row * gv_size;
              gtable_1d_backward(a0, *tb, m, gx ? gv : nullptr, gw ? gv + gv_size : nullptr, need.h ? gv + 2 * gv_size : nullptr,
                                 gx_block, gw_block, gh);
            } else {
              table_1d_backward(a0, *tb, grow, m, gw != nullptr, need.h, dots.data(), gx_block, gw_block, gh);
            }
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
    }
  });
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

// ---------------------------------------------------------------------------- hard counts op
// Exact counts: each sample's cell by torch.histc's arithmetic in the input's dtype (equal-width
// axes under the "histc" rule: truncate (x - lo) * B / (hi - lo), each operation rounded as torch
// rounds it) or by numpy's comparison with the edges (e_k <= x < e_{k+1}, the last bin closed;
// float64 compares exactly what the promoted dtype compares). Unweighted counts sum in int64,
// weights in float64; per chunk, added in chunk order.
template <typename scalar_t>
int64_t histc_bin(scalar_t x, scalar_t lo, scalar_t hi, scalar_t bins, int64_t B, bool& ok) {
  ok = x >= lo && x <= hi;  // false for NaN
  scalar_t pos = (x - lo) * bins;
  pos = pos / (hi - lo);
  if (pos != pos) pos = 0;  // nan_to_num
  pos = std::min(std::max(pos, scalar_t(0)), bins);
  return std::min(int64_t(pos), B - 1);
}

template <typename scalar_t>
Tensor hard_impl(const Tensor& x, const std::optional<Tensor>& weight, const double* e, const std::vector<int64_t>& bins,
                 const std::vector<double>& ranges, bool histc_rule) {
  const int64_t rows = x.size(0), n = x.size(1), D = x.size(2);
  std::vector<int64_t> strides(D, 1), offsets(D, 0);
  int64_t cells = 1, edge_total = 0;
  for (int64_t d = D - 1; d >= 0; --d) strides[d] = cells, cells *= bins[d];
  for (int64_t d = 0; d < D; ++d) offsets[d] = edge_total, edge_total += bins[d] + 1;
  int64_t chunks = std::max<int64_t>(1, std::min<int64_t>((n + 65535) / 65536, 64 / std::max<int64_t>(rows, 1)));
  chunks = std::min<int64_t>(chunks, std::max<int64_t>(1, (int64_t(32) << 20) / std::max<int64_t>(8 * rows * cells, 1)));
  const int64_t units = rows * chunks, lanes = lanes_for(cells), size = lanes * cells;  // sorted or constant data
  const bool weighted = weight.has_value();
  std::vector<int64_t> counts(weighted ? 0 : units * size, 0);
  std::vector<double> sums(weighted ? units * size : 0, 0.0);
  const scalar_t* xp = x.const_data_ptr<scalar_t>();
  const double* wp = weighted ? weight->const_data_ptr<double>() : nullptr;
  torch::stable::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    int64_t cell[BLOCK];
    uint8_t inside[BLOCK];
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t row = u / chunks, k = u % chunks;
      const int64_t begin = row * n + k * n / chunks, end = row * n + (k + 1) * n / chunks;
      for (int64_t a = begin; a < end; a += BLOCK) {
        const int64_t m = std::min(BLOCK, end - a);
        std::fill(cell, cell + m, int64_t(0));
        std::fill(inside, inside + m, uint8_t(1));
        for (int64_t d = 0; d < D; ++d) {  // each axis over the block: a loop per rule, no per-sample switch
          const scalar_t* xs = xp + a * D + d;
          const int64_t B = bins[d], stride = strides[d];
          if (histc_rule) {
            const scalar_t lo = scalar_t(ranges[2 * d]), hi = scalar_t(ranges[2 * d + 1]), fb = scalar_t(B);
            for (int64_t i = 0; i < m; ++i) {
              bool ok;
              cell[i] += histc_bin<scalar_t>(xs[i * D], lo, hi, fb, B, ok) * stride;
              inside[i] &= uint8_t(ok);
            }
          } else {
            const double* ed = e + offsets[d];
            const EdgeSearch search(ed, B);
            for (int64_t i = 0; i < m; ++i) {  // numpy's rule: e_k <= v < e_{k+1}, the last bin closed
              const double v = double(xs[i * D]);
              const bool ok = v >= ed[0] && v <= ed[B];  // false for NaN
              cell[i] += ok ? std::min(search.last_at_or_below(v), B - 1) * stride : 0;
              inside[i] &= uint8_t(ok);
            }
          }
        }
        if (weighted) {
          double* sum = sums.data() + u * size;
          for (int64_t i = 0; i < m; ++i) sum[(i & (lanes - 1)) * cells + cell[i]] += inside[i] ? wp[a + i] : 0.0;
        } else {
          int64_t* count = counts.data() + u * size;
          for (int64_t i = 0; i < m; ++i) count[(i & (lanes - 1)) * cells + cell[i]] += inside[i];
        }
      }
    }
  });
  std::vector<int64_t> sizes{rows};
  for (int64_t b : bins) sizes.push_back(b);
  Tensor out = torch::stable::new_empty(x, sizes, ScalarType::Double);
  double* op = out.mutable_data_ptr<double>();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cells; ++c) {
      if (weighted) {
        double s = 0.0;
        for (int64_t k = 0; k < chunks * lanes; ++k) s += sums[(r * chunks * lanes + k) * cells + c];
        op[r * cells + c] = s;
      } else {
        int64_t s = 0;
        for (int64_t k = 0; k < chunks * lanes; ++k) s += counts[(r * chunks * lanes + k) * cells + c];
        op[r * cells + c] = double(s);
      }
    }
  return out;
}

Tensor hard_histogram(Tensor x, std::optional<Tensor> weight, Tensor edges, std::vector<int64_t> bins, std::vector<double> ranges,
                      bool histc_rule) {
  STD_TORCH_CHECK(x.dim() == 3 && x.is_contiguous() && edges.is_contiguous(), "softhist: x must be contiguous (rows, n, D)");
  STD_TORCH_CHECK(int64_t(bins.size()) == x.size(2) && int64_t(ranges.size()) == 2 * x.size(2), "softhist: one entry per axis expected");
  STD_TORCH_CHECK(edges.scalar_type() == ScalarType::Double, "softhist: edges must be float64");
  int64_t total = 0;
  for (int64_t b : bins) total += b + 1;
  STD_TORCH_CHECK(edges.numel() == total, "softhist: edges do not match the bins");
  if (weight)
    STD_TORCH_CHECK(weight->scalar_type() == ScalarType::Double && weight->is_contiguous() && weight->numel() == x.size(0) * x.size(1),
                    "softhist: weight must be contiguous float64 (rows, n)");
  const double* e = edges.const_data_ptr<double>();
  if (x.scalar_type() == ScalarType::Double) return hard_impl<double>(x, weight, e, bins, ranges, histc_rule);
  STD_TORCH_CHECK(x.scalar_type() == ScalarType::Float, "softhist: x must be float32 or float64");
  return hard_impl<float>(x, weight, e, bins, ranges, histc_rule);
}

}  // namespace

STABLE_TORCH_LIBRARY(softhist, m) {
  m.def("soft_histogram(Tensor x, Tensor? weight, Tensor edges, Tensor tables, int[] axis_ints, float[] axis_floats) -> Tensor");
  m.def(
      "soft_histogram_backward(Tensor grad, Tensor x, Tensor? weight, Tensor edges, Tensor tables, int[] axis_ints, "
      "float[] axis_floats, int[] needs) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("hard_histogram(Tensor x, Tensor? weight, Tensor edges, int[] bins, float[] ranges, bool histc_rule) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(softhist, CPU, m) {
  m.impl("soft_histogram", TORCH_BOX(&soft_histogram));
  m.impl("soft_histogram_backward", TORCH_BOX(&soft_histogram_backward));
  m.impl("hard_histogram", TORCH_BOX(&hard_histogram));
}

// `import softhist._C` loads this library (and so registers the ops); the module itself is empty.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", "softhist's native CPU kernels (torch.ops.softhist)", -1, nullptr};
  return PyModule_Create(&module);
}
