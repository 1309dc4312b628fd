// One axis of explicit edges, float32 samples (see edges_1d.h). A sample x with bandwidth h puts
// mass F(z_{k+1}) - F(z_k) in bin k, z_k = (e_k - x) / h, and only bins whose edges straddle the
// support [-T, T] get any: the walk starts at the last edge with z <= -T (a lookup grid, below)
// and stops at the first edge with z >= T, so each sample costs its own edges (x^1.5 edges at
// the default bandwidth: ~7 on average), not the widest window.
//
// The kernel (Gaussian or logistic) gives F and f = F' from a cubic Hermite table in z on [-T, T]
// (nodes every 1/32): on each interval of width s, F is the cubic matching F and f at both ends,
// whose error is at most s^4/384 max|F''''| (Gaussian: (1/32)^4 / 384 * 0.55 = 1.4e-9), and f is
// the cubic matching f and f' (error (1/32)^4 / 384 * max|f''''| = 3.0e-9 for the Gaussian) --
// float64 arithmetic throughout, far inside the float32 resolution of the results.
#include "edges_1d.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels.h"
#include "simd.h"

namespace softhist::native {

// The lookup's cells are at most half the narrowest bin wide, so the interval from a cell's start
// to any value in it (widened by rounding) holds at most one edge: the answer is start[c] - 1,
// start[c] or start[c] + 1, settled by two comparisons and no branch. Edges too unequal for
// GRID_CELLS such cells keep the EdgeSearch (a step or two, then binary search).
constexpr int64_t GRID_CELLS = int64_t(1) << 21;

EdgeWalk::EdgeWalk(const Axis& a) : search(a.edges, a.bins), padded(a.edges, a.edges + a.bins + 1) {
  padded.resize(a.bins + 1 + PAD, a.edges[a.bins]);
  const double* e = a.edges;
  double narrowest = e[1] - e[0];
  for (int64_t k = 1; k < a.bins; ++k) narrowest = std::min(narrowest, e[k + 1] - e[k]);
  const double cells = std::ceil(2.0 * (e[a.bins] - e[0]) / narrowest);
  if (!(narrowest > 0.0 && cells >= 1.0 && cells <= double(GRID_CELLS))) return;
  const int64_t M = int64_t(cells);
  inv = double(M) / (e[a.bins] - e[0]);
  if (!(std::isfinite(inv) && inv > 0.0)) return;
  start.resize(M);
  for (int64_t c = 0, k = 0; c < M; ++c) {
    const double t = e[0] + double(c) / inv;
    while (k < a.bins && e[k + 1] <= t) ++k;
    start[c] = int32_t(k);
  }
}

namespace {

// Per interval c: F(z) = F0 + t (F1 + t (F2 + t F3)) and f(z) = f0 + t (...), t = (z - z_c) / s in
// [0, 1]: eight doubles, one cache line. The cubic Hermite on [0, 1] with values y0, y1 and
// slopes (in t) d0, d1 has coefficients y0, d0, 3 (y1 - y0) - 2 d0 - d1, 2 (y0 - y1) + d0 + d1.
// Interval 0 covers [-T - s, -T) with F = f = 0 and the last [T, T + s) with F = 1, f = 0: z
// clamped to [-T - s, T + s/2] then reads the kernel outside its cut from the table too (no
// select per lane); at |z| = T exactly f is the one-sided limit from inside (the float64 path's
// pdf gives 0 there; both are limits of a density that jumps at the cut).
struct CdfTable {
  double lo = 0.0, hi = 0.0, inv_step = 0.0;  // the clamp of z, intervals per unit of z
  std::vector<double> c;
};

constexpr double TABLE_STEP = 1.0 / 32.0;

template <int K>
double pdf_slope(double z) {  // f'(z) inside the support
  if constexpr (K == GAUSSIAN) {
    return -z * pdf<K>(z);  // f ~ exp(-z^2 / 2)
  } else {  // logistic: f ~ sech^2(a z), f' = -2 a tanh(a z) f
    return -2.0 * LOGI_A * std::tanh(LOGI_A * z) * pdf<K>(z);
  }
}

template <int K>
CdfTable build_table(double T) {
  CdfTable t;
  const int64_t n = int64_t(std::ceil(2.0 * T / TABLE_STEP));  // intervals inside the support
  const double s = 2.0 * T / double(n);
  t.lo = -T - s, t.hi = T + 0.5 * s, t.inv_step = 1.0 / s;
  t.c.assign(8 * (n + 2), 0.0);
  t.c[8 * (n + 1)] = 1.0;
  auto hermite = [](double* out, double y0, double y1, double d0, double d1) {
    out[0] = y0, out[1] = d0, out[2] = 3.0 * (y1 - y0) - 2.0 * d0 - d1, out[3] = 2.0 * (y0 - y1) + d0 + d1;
  };
  for (int64_t k = 0; k < n; ++k) {
    const double z0 = -T + double(k) * s, z1 = k + 1 == n ? T : -T + double(k + 1) * s;
    // The support's ends exactly: F = 0 and 1 there.
    const double F0 = k == 0 ? 0.0 : cdf<K>(z0), F1 = k + 1 == n ? 1.0 : cdf<K>(z1);
    // f at the ends: the limit from inside (pdf<K> is 0 at |z| = T itself, outside the cut).
    const double f0 = pdf<K>(std::nextafter(z0, 0.0)), f1 = pdf<K>(std::nextafter(z1, 0.0));
    hermite(&t.c[8 * (k + 1)], F0, F1, s * f0, s * f1);
    hermite(&t.c[8 * (k + 1) + 4], f0, f1, s * pdf_slope<K>(z0), s * pdf_slope<K>(z1));
  }
  return t;
}

const CdfTable& table_of(int64_t kernel) {
  static const CdfTable gaussian = build_table<GAUSSIAN>(GAUSS_T), logistic = build_table<LOGISTIC>(LOGI_T);
  return kernel == GAUSSIAN ? gaussian : logistic;
}

// The kernel's table.
template <int K>
struct Kernel {
  const CdfTable* tab;
};

// The sample's first edge: the last with e_k <= x - T h, within [0, B - 1] (x - T h < e_B here).
SOFTHIST_INLINE int64_t first_edge(const EdgeWalk& walk, double v, double reach, int64_t B) {
  const double q = v - reach;
  if (walk.start.empty()) return std::min(std::max<int64_t>(walk.search.last_at_or_below(q), 0), B - 1);
  const double* e = walk.padded.data();  // e[B + 1] = e_B > q: the step up stops there
  const double g = (q - e[0]) * walk.inv, top = double(walk.start.size() - 1);
  int64_t k = walk.start[int64_t(g > 0.0 ? (g < top ? g : top) : 0.0)];
  k -= int64_t(e[k] > q);  // a cell start rounded past q (k = -1: q below e_0)
  k = k < 0 ? 0 : k;
  k += int64_t(e[k + 1] <= q);
  return k < B - 1 ? k : B - 1;
}

// A sample's walk goes eight edges at a time, k..k+7 (seven bins), one vector evaluation of F
// (and f) each: the next group starts at k + 7. Most samples end in one group (x^1.5 edges at
// the default bandwidth: ~7 bins on average), and it ends where the group's last z is >= T (the
// z increase along the group) or the edges end. The edges are padded with e_B (PAD copies),
// so a group past the last edge reads z_B again: F unchanged, bins past B get mass 0 and are
// never written.
constexpr int64_t GROUP_EDGES = 8, GROUP_BINS = GROUP_EDGES - 1;

struct Group {
  double z[GROUP_EDGES], F[GROUP_EDGES], f[GROUP_EDGES];
};

typedef int32_t v8i __attribute__((vector_size(32)));

typedef double v4d __attribute__((vector_size(32)));
struct __attribute__((packed, may_alias)) v4d_unaligned {
  v4d v;
};

// Four coefficients (from `at` in each interval's eight) of the eight edges' intervals k[j], as
// four vectors c0..c3 across the edges: eight 32-byte loads and a 8 x 4 transpose in shuffles
// (lane-by-lane inserts cost four times as much).
SOFTHIST_INLINE void transpose_rows(const double* c, const v8i& k, int at, v8d& c0, v8d& c1, v8d& c2, v8d& c3) {
  v4d r[8];
#pragma GCC unroll 8
  for (int j = 0; j < 8; ++j) r[j] = reinterpret_cast<const v4d_unaligned*>(c + 8 * int64_t(k[j]) + at)->v;
  const v8d a = __builtin_shufflevector(r[0], r[1], 0, 1, 2, 3, 4, 5, 6, 7), b = __builtin_shufflevector(r[2], r[3], 0, 1, 2, 3, 4, 5, 6, 7);
  const v8d p = __builtin_shufflevector(r[4], r[5], 0, 1, 2, 3, 4, 5, 6, 7), q = __builtin_shufflevector(r[6], r[7], 0, 1, 2, 3, 4, 5, 6, 7);
  // ab0 = (c0 of rows 0-3, c1 of rows 0-3), ab1 = (c2 ..., c3 ...); likewise pq for rows 4-7.
  const v8d ab0 = __builtin_shufflevector(a, b, 0, 4, 8, 12, 1, 5, 9, 13), ab1 = __builtin_shufflevector(a, b, 2, 6, 10, 14, 3, 7, 11, 15);
  const v8d pq0 = __builtin_shufflevector(p, q, 0, 4, 8, 12, 1, 5, 9, 13), pq1 = __builtin_shufflevector(p, q, 2, 6, 10, 14, 3, 7, 11, 15);
  c0 = __builtin_shufflevector(ab0, pq0, 0, 1, 2, 3, 8, 9, 10, 11);
  c1 = __builtin_shufflevector(ab0, pq0, 4, 5, 6, 7, 12, 13, 14, 15);
  c2 = __builtin_shufflevector(ab1, pq1, 0, 1, 2, 3, 8, 9, 10, 11);
  c3 = __builtin_shufflevector(ab1, pq1, 4, 5, 6, 7, 12, 13, 14, 15);
}

// z, (MASS) F and (DENSITY) f at the eight edges e[0..8) of a group. Table kernels: one vector
// pass (the lookups are the only scalar part), only operators and builtins: calls into kernels.h
// would not inline into the target clones (another -march) and would keep the loop scalar.
template <int K, bool MASS, bool DENSITY>
SOFTHIST_INLINE void eval_group(const Kernel<K>& ker, const double* e, double v, double inv_h, Group& g) {
  {
    const CdfTable& tb = *ker.tab;
    const v8d z = (SOFTHIST_LOAD8(e) - v) * inv_h;
    const v8d zc = z < tb.lo ? tb.lo : z > tb.hi ? tb.hi : z, u = (zc - tb.lo) * tb.inv_step;
    const v8i k = __builtin_convertvector(u, v8i);  // u >= 0: truncation is floor
    const v8d t = u - __builtin_convertvector(k, v8d);
    const double* c = tb.c.data();
    v8d c0, c1, c2, c3;
    SOFTHIST_AT8(g.z) = z;
    if constexpr (MASS) {
      transpose_rows(c, k, 0, c0, c1, c2, c3);
      SOFTHIST_AT8(g.F) = c0 + t * (c1 + t * (c2 + t * c3));
    }
    if constexpr (DENSITY) {
      transpose_rows(c, k, 4, c0, c1, c2, c3);
      SOFTHIST_AT8(g.f) = c0 + t * (c1 + t * (c2 + t * c3));
    }
  }
}

// Group values v[1..8) - v[0..7) (lane 7: 0), the bins' differences, added times `by` into acc
// (vectors go through references: no v8d crosses a function boundary by value, simd.h).
SOFTHIST_INLINE void add_steps8(v8d& acc, const v8d& by, const double* values) {
  const v8d a = SOFTHIST_LOAD8(values);
  acc += by * (__builtin_shufflevector(a, a, 1, 2, 3, 4, 5, 6, 7, 7) - a);
}

// Three passes over a block, so no sample's work waits on a branch of another's: the first edges
// (independent loads), every sample's first group (no branch but the rare slow case), then the
// groups past the first of the samples that need them (x^1.5 edges: one in six samples). A
// sample's loop over its groups mispredicted once per sample with a variable count, and each
// misprediction emptied the pipeline of the samples in flight.
template <int K>
SOFTHIST_INLINE void forward_k(const Axis& a, const EdgeWalk& walk, const float* xs, const float* wt, int64_t m, double* hist,
                               int64_t lanes, int64_t lane_size) {
  const Kernel<K> ker{&table_of(K)};
  const double* e = walk.padded.data();
  const int64_t B = a.bins;
  const double T = a.support, reach = T * a.h, inv_h = 1.0 / a.h, lo = e[0] - reach, hi = e[B] + reach;
  Group g;
  int32_t first[BLOCK], rest[BLOCK];
  double vs[BLOCK], ws[BLOCK];
  for (int64_t b0 = 0; b0 < m; b0 += BLOCK) {
    const int64_t n = std::min<int64_t>(BLOCK, m - b0);
    for (int64_t i = 0; i < n; ++i) {  // samples out of reach (or NaN) parked at e_0 with weight 0
      const double v = double(xs[b0 + i]), w = wt ? double(wt[b0 + i]) : 1.0;
      const bool ok = v > lo && v < hi;
      vs[i] = ok ? v : e[0];
      ws[i] = ok ? w : 0.0;
      first[i] = int32_t(first_edge(walk, vs[i], reach, B));
    }
    int64_t later = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t k = first[i];
      const double v = vs[i], w = ws[i];
      eval_group<K, true, false>(ker, e + k, v, inv_h, g);
      double* hk = hist + ((b0 + i) & (lanes - 1)) * lane_size + k;
      if (k + GROUP_EDGES <= B && std::isfinite(w)) {  // eight cells, the eighth adding 0
        const v8d wv = w - v8d{};
        v8d cells = SOFTHIST_LOAD8(hk);
        add_steps8(cells, wv, g.F);
        SOFTHIST_AT8(hk) = cells;
      } else {
        for (int64_t j = 0; j < std::min<int64_t>(GROUP_BINS, B - k); ++j) hk[j] += weighted(w, g.F[j + 1] - g.F[j]);
      }
      rest[later] = int32_t(i);
      later += int64_t(g.z[GROUP_BINS] < T && k + GROUP_BINS < B && w != 0.0);
    }
    // Later groups cell by cell: an eight-cell load overlapping the first group's store would
    // wait for it to retire (no store forwarding across a partial overlap).
    for (int64_t r = 0; r < later; ++r) {
      const int64_t i = rest[r];
      const double v = vs[i], w = ws[i];
      double* h = hist + ((b0 + i) & (lanes - 1)) * lane_size;
      for (int64_t k = first[i] + GROUP_BINS;; k += GROUP_BINS) {
        eval_group<K, true, false>(ker, e + k, v, inv_h, g);
        for (int64_t j = 0; j < std::min<int64_t>(GROUP_BINS, B - k); ++j) h[k + j] += weighted(w, g.F[j + 1] - g.F[j]);
        if (g.z[GROUP_BINS] >= T || k + GROUP_BINS >= B) break;
      }
    }
  }
}

// Per sample, with G the cells' gradients and the walk as above (bins k of the sample's edges):
//   dL/dw = sum_k G_k (F_{k+1} - F_k),  dL/dx = -(w/h) sum_k G_k (f_{k+1} - f_k),
//   dL/dh = -(w/h) sum_k G_k (z_{k+1} f_{k+1} - z_k f_k),  dL/de_k = (w/h) (A_{k-1} - A_k) f_k,
// A_k = G_k on the walk's bins and 0 outside (as the general exact path's window). The sums
// are kept per lane of the groups and summed once per sample in a fixed order. MASS: dL/dw is
// asked (F is evaluated only then).
template <int K, bool MASS>
SOFTHIST_INLINE void backward_k(const Axis& a, const EdgeWalk& walk, const float* xs, const float* wt, const double* g, int64_t m,
                                float* gx, float* gw, double* gh, double* ge) {
  const Kernel<K> ker{&table_of(K)};
  const double* e = walk.padded.data();
  const int64_t B = a.bins;
  const double T = a.support, reach = T * a.h, inv_h = 1.0 / a.h, lo = e[0] - reach, hi = e[B] + reach;
  double sum_h = 0.0;
  Group q;
  double zf[GROUP_EDGES], G[GROUP_EDGES];
  for (int64_t i = 0; i < m; ++i) {
    const double v = double(xs[i]), w = wt ? double(wt[i]) : 1.0;
    if (!(v > lo && v < hi)) {
      if (gx) gx[i] = 0.0f;
      if (gw) gw[i] = 0.0f;
      continue;
    }
    const double wh = w * inv_h;
    v8d sw = {}, sx = {}, sh = {};
    double before = 0.0;  // A_{k-1}
    int64_t k = first_edge(walk, v, reach, B), bins = 0;
    for (;; k += GROUP_BINS) {
      eval_group<K, MASS, true>(ker, e + k, v, inv_h, q);
      bins = std::min<int64_t>(GROUP_BINS, B - k);
      if (k + GROUP_EDGES <= B) {
        const v8d zero = {}, all = SOFTHIST_LOAD8(g + k);
        SOFTHIST_AT8(G) = __builtin_shufflevector(all, zero, 0, 1, 2, 3, 4, 5, 6, 8);
      } else {
        for (int64_t j = 0; j < GROUP_EDGES; ++j) G[j] = j < bins ? g[k + j] : 0.0;
      }
      const v8d Gv = SOFTHIST_LOAD8(G);
      SOFTHIST_AT8(zf) = SOFTHIST_LOAD8(q.z) * SOFTHIST_LOAD8(q.f);
      if constexpr (MASS) add_steps8(sw, Gv, q.F);
      add_steps8(sx, Gv, q.f);
      add_steps8(sh, Gv, zf);
      if (ge) {
        for (int64_t j = 0; j < bins; ++j) ge[k + j] += wh * ((j ? G[j - 1] : before) - G[j]) * q.f[j];
      }
      before = G[bins - 1];
      if (q.z[GROUP_BINS] >= T || k + GROUP_BINS >= B) break;
    }
    if (ge) ge[k + bins] += wh * before * q.f[bins];  // the walk's last edge (f = 0 where z >= T)
    if (gx) gx[i] = float(-wh * sum8(sx));
    if (gw) gw[i] = float(sum8(sw));
    sum_h += -wh * sum8(sh);
  }
  if (gh) *gh += sum_h;
}

}  // namespace

SOFTHIST_HOT void edges_1d_forward(const Axis& a, const EdgeWalk& walk, const float* xs, const float* wt, int64_t m, double* hist,
                                   int64_t lanes, int64_t lane_size) {
  switch (a.kernel) {
    case GAUSSIAN: forward_k<GAUSSIAN>(a, walk, xs, wt, m, hist, lanes, lane_size); break;
    default: forward_k<LOGISTIC>(a, walk, xs, wt, m, hist, lanes, lane_size); break;  // edges_1d_serves
  }
}

SOFTHIST_HOT void edges_1d_backward(const Axis& a, const EdgeWalk& walk, const float* xs, const float* wt, const double* g,
                                    int64_t m, float* gx, float* gw, double* gh, double* ge) {
  switch (a.kernel) {
    case GAUSSIAN: gw ? backward_k<GAUSSIAN, true>(a, walk, xs, wt, g, m, gx, gw, gh, ge) : backward_k<GAUSSIAN, false>(a, walk, xs, wt, g, m, gx, gw, gh, ge); break;
    default:  // LOGISTIC (edges_1d_serves)
      gw ? backward_k<LOGISTIC, true>(a, walk, xs, wt, g, m, gx, gw, gh, ge) : backward_k<LOGISTIC, false>(a, walk, xs, wt, g, m, gx, gw, gh, ge);
      break;
  }
}

// ---- The node grid: sums over many samples at the cost of a few operations per sample ----
//
// Every quantity the passes sum over samples is sum_i w_i y(x_i) for a function y of the sample's
// position that is smooth on the scale of h: a bin's mass F(z_{k+1}) - F(z_k), the edge density
// f(z_k) / h, and z_k f(z_k) (z_k = (e_k - x) / h). On a grid of nodes x_p = x0 + p s, s = h / S,
// y on [x_p, x_{p+1}] is the cubic Hermite interpolant of y and y' at both ends, t = (x - x_p) / s:
//   y(x) ~ h00(t) y_p + h10(t) s y'_p + h01(t) y_{p+1} + h11(t) s y'_{p+1},
//   h00 = (1 + 2t)(1 - t)^2, h10 = t (1 - t)^2, h01 = t^2 (3 - 2t), h11 = t^2 (t - 1),
// with error at most s^4 / 384 max|y''''| = (1/S)^4 / 384 max|d^4 y / dz^4|: S = 32 gives 1.4e-9
// for the Gaussian's F (max|f'''| = 0.55) and 3.0e-9 / h for f (max|f''''| = 1.2); the logistic's
// higher derivatives are larger (S = 16 left 5e-7 of dL/dx; S = 32 leaves the float32 rounding). So
//   sum_i w_i y(x_i) ~ sum_p (A_p y_p + B_p s y'_p),
// where each sample adds w h00, w h10 to node p's moments (A_p, B_p) and w h01, w h11 to node
// p + 1's: four numbers per sample, whatever its window. The per-edge work is O(L) per unit:
//   forward: C_k = sum_i w_i F(z_k(x_i)) = sum_{p < first_k} A_p + sum_{row} (A_p F - B_p (s/h) f),
//            bin k = C_{k+1} - C_k (nodes below the row have z > T, F = 1; above it F = 0);
//   dL/de_k = (D_k / h) sum_i w_i f(z_k(x_i)) = (D_k / h) sum_{row} (A_p f - B_p (s/h) f'),
//   dL/dh = -(1/h) sum_k D_k sum_i w_i (z f)(z_k(x_i)),
// with D_k = G_{k-1} - G_k (G_{-1} = G_B = 0): the sums of backward_k above, by parts over the
// bins, sum_k G_k (y_{k+1} - y_k) = sum_k D_k y_k. The per-sample gradients are node values
//   dL/dx / w = psi(x) = -(1/h) sum_k D_k f(z_k),  psi' = (1/h^2) sum_k D_k f'(z_k),
//   dL/dw = omega(x) = sum_k D_k F(z_k),           omega' = psi,
// interpolated at the sample. The truncated density jumps by f(T) at |z| = T (Gaussian: 8e-7 of
// its peak), and z f by T f(T): interpolated across, a jump costs up to its size at the samples
// near it, 1e-6 of dL/dx, and 1e-5 of dL/dh after the cancellations of its sum. So both are split
// into a part continuous in x, through the nodes (kinks of f'(T) are left: (s/h) f'(T) / 8), and
// steps added per sample exactly:
//   f 1[|z| < T] = (f - f(T)) 1[|z| < T] + f(T) 1[|z| < T],
//     sum_{|z_k| < T} D_k = G_{a-1} - G_b;
//   z f 1[|z| < T] = c(z) - T f(T) (1[|z| < T] + 2 1[z >= T]), c = z f + T f(T) inside, 2 T f(T) for z >= T, 0 below,
//     sum_k D_k (1[|z_k| < T] + 2 1[z_k >= T]) = G_{a-1} - G_b + 2 G_b = G_{a-1} + G_b,
// a - 1 the last edge at or below x - T h and b the last below x + T h (two grid lookups), so
//   dL/dx = w (psi_c(x) - (f(T)/h) (G_{a-1} - G_b)),
//   dL/dh = -(1/h) sum_k D_k sum_{row} (A_p c - B_p (s/h) (f + z f')) - (1/h) 2 T f(T) sum_k D_k sum_{p < first_k} A_p
//           + (T f(T)/h) sum_i w_i (G_{a-1} + G_b).
// The edges' sums keep the jump: its error averages out over the samples near it (measured: as
// the walk's, 5e-8 of the largest).
constexpr int64_t NODES_PER_H = 32;

EdgeNodes::EdgeNodes(const Axis& a, bool slopes) {
  const int64_t B = a.bins;
  const double* e = a.edges;
  const double reach = a.support * a.h;
  s = a.h / double(NODES_PER_H), inv_s = 1.0 / s;
  lo = e[0] - reach, hi = e[B] + reach, x0 = lo;
  const double span = std::ceil((hi - lo) * inv_s);
  if (!(span >= 1.0 && span <= double(int64_t(1) << 30))) return;  // edges_nodes_pay said no before
  P = int64_t(span);
  L = int64_t(std::ceil(2.0 * reach * inv_s)) + 2;
  first.resize(B + 1);
  z.resize((B + 1) * L), f.resize((B + 1) * L), df.resize(slopes ? (B + 1) * L : 0);
  for (int64_t k = 0; k <= B; ++k) {  // the last node at or below e_k - T h: z >= T there and below
    const int64_t p0 = std::min<int64_t>(std::max<int64_t>(int64_t(std::floor((e[k] - reach - x0) * inv_s)), 0), P);
    first[k] = int32_t(p0);
    for (int64_t j = 0; j < L; ++j) z[k * L + j] = (e[k] - (x0 + double(p0 + j) * s)) / a.h;
  }
  F = z;
  eval_cdf(a.kernel, F.data(), int64_t(F.size()));
  eval_pdf(a.kernel, z.data(), f.data(), int64_t(f.size()));
  if (slopes) eval_dpdf(a.kernel, z.data(), df.data(), int64_t(df.size()));
  const double cut = std::nextafter(a.support, 0.0);
  eval_pdf(a.kernel, &cut, &fT, 1);
  // d/dx = -(1/h) d/dz: the slopes times s are -(s/h) f, -(s/h) f' and -(s/h) (f + z f').
  const double sh = s / a.h, T = a.support, TfT = T * fT;
  std::vector<double>& m0 = slopes ? dens : mass;
  m0.resize(2 * (B + 1) * L), zdens.resize(slopes ? 2 * (B + 1) * L : 0);
  for (int64_t c = 0; c < (B + 1) * L; ++c) {
    m0[2 * c] = slopes ? f[c] : F[c], m0[2 * c + 1] = -sh * (slopes ? df[c] : f[c]);
    if (slopes) {
      zdens[2 * c] = f[c] > 0.0 ? z[c] * f[c] + TfT : z[c] >= T ? 2.0 * TfT : 0.0;
      zdens[2 * c + 1] = -sh * (f[c] + z[c] * df[c]);
    }
  }
  if (!slopes) return;
  ends.assign(e, e + B + 1);
  ends.push_back(std::numeric_limits<double>::infinity());
  cuts.resize(2 * (P + 1));
  for (int64_t p = 0, ka = 0, kb = 0; p <= P; ++p) {
    const double x = x0 + double(p) * s;
    while (ends[ka] <= x - reach) ++ka;
    while (ends[kb] < x + reach) ++kb;
    cuts[2 * p] = int32_t(ka), cuts[2 * p + 1] = int32_t(kb);
  }
}

bool edges_nodes_pay(const Axis& a, int64_t n_unit, int64_t total) {
  if (!(a.h > 0.0) || !std::isfinite(a.support)) return false;
  const double reach = a.support * a.h, P = (a.edges[a.bins] - a.edges[0] + 2.0 * reach) / a.h * double(NODES_PER_H);
  const double row = (double(a.bins) + 1.0) * (2.0 * reach / a.h * double(NODES_PER_H) + 3.0);
  // row <= 2^19: the per-call rows (eight arrays of row doubles) within 32 MiB.
  return P <= double(n_unit) && P <= double(int64_t(1) << 22) && row <= double(int64_t(1) << 19) && 8.0 * double(n_unit) >= row &&
         double(total) >= 2.0 * row;
}

namespace {

// The sample's interval p and its Hermite weights (h00, h10, h01, h11) times w.
SOFTHIST_INLINE int64_t hermite(const EdgeNodes& nd, double v, double w, double* b) {
  const double u = (v - nd.x0) * nd.inv_s;
  const int64_t p = std::min<int64_t>(int64_t(u), nd.P - 1);  // u >= 0: truncation is floor
  const double t = u - double(p), r = 1.0 - t, t2 = t * t, r2 = r * r;
  b[0] = w * (1.0 + 2.0 * t) * r2, b[1] = w * t * r2, b[2] = w * t2 * (3.0 - 2.0 * t), b[3] = -w * t2 * r;
  return p;
}

}  // namespace

SOFTHIST_HOT void edges_1d_moments(const Axis& a, const EdgeWalk& walk, const EdgeNodes& nd, const float* xs, const float* wt,
                                   int64_t m, double* AB, double* hist, int64_t lanes, int64_t lane_size) {
  for (int64_t i = 0; i < m; ++i) {
    const double v = double(xs[i]), w = wt ? double(wt[i]) : 1.0;
    if (!(v > nd.lo && v < nd.hi)) continue;  // out of reach, or NaN
    if (!std::isfinite(w)) {  // only into the bins its kernel reaches: the walk
      edges_1d_forward(a, walk, xs + i, wt + i, 1, hist, lanes, lane_size);
      continue;
    }
    double b[4];
    double* at = AB + 2 * hermite(nd, v, w, b);
    at[0] += b[0], at[1] += b[1], at[2] += b[2], at[3] += b[3];
  }
}

SOFTHIST_HOT void edges_1d_nodes_forward(const Axis& a, const EdgeNodes& nd, const double* AB, double* hist) {
  const int64_t B = a.bins, L = nd.L;
  double below = 0.0, prev = 0.0;  // below: the A_p of the nodes under the current row
  int64_t p = 0;
  for (int64_t k = 0; k <= B; ++k) {
    for (; p < nd.first[k]; ++p) below += AB[2 * p];
    const double c = dot(AB + 2 * nd.first[k], nd.mass.data() + 2 * k * L, 2 * L) + below;
    if (k > 0) hist[k - 1] += c - prev;
    prev = c;
  }
}

SOFTHIST_HOT void edges_1d_node_values(const Axis& a, const EdgeNodes& nd, const double* g, double* vx, double* vw) {
  const int64_t B = a.bins, L = nd.L, n = 2 * (nd.P + 1);
  const double ih = 1.0 / a.h, s = nd.s;
  if (vx) std::fill(vx, vx + n, 0.0);
  if (vw) std::fill(vw, vw + n, 0.0);
  std::vector<double> step(vw ? nd.P + 2 : 0, 0.0);  // omega's F = 1 part: D_k at every node below edge k's row
  for (int64_t k = 0; k <= B; ++k) {
    const double D = (k > 0 ? g[k - 1] : 0.0) - (k < B ? g[k] : 0.0);
    if (D == 0.0) continue;
    const int64_t p0 = nd.first[k], rows = std::min<int64_t>(L, nd.P + 1 - p0);
    const double *F = nd.F.data() + k * L, *f = nd.f.data() + k * L, *df = nd.df.data() + k * L;
    if (vx) {  // f - f(T) inside the cut (f > 0 there), 0 outside
      double* o = vx + 2 * p0;
      for (int64_t j = 0; j < rows; ++j) o[2 * j] -= D * ih * (f[j] > 0.0 ? f[j] - nd.fT : 0.0), o[2 * j + 1] += D * s * ih * ih * df[j];
    }
    if (vw) {
      double* o = vw + 2 * p0;
      for (int64_t j = 0; j < rows; ++j) o[2 * j] += D * F[j], o[2 * j + 1] -= D * s * ih * f[j];
      step[0] += D, step[p0] -= D;
    }
  }
  if (vw) {
    double run = 0.0;
    for (int64_t p = 0; p <= nd.P; ++p) run += step[p], vw[2 * p] += run;
  }
}

SOFTHIST_HOT void edges_1d_nodes_backward(const Axis& a, const EdgeWalk& walk, const EdgeNodes& nd, const float* xs, const float* wt,
                                          const double* g, int64_t m, const double* vx, const double* vw, float* gx, float* gw,
                                          double* AB, double* gh, double* ge) {
  const int64_t B = a.bins;
  const double reach = a.support * a.h, step = nd.fT / a.h;
  const double* e = nd.ends.data();
  std::vector<double> G(B + 2, 0.0);  // G[k + 1] = G_k, 0 for k = -1 and B
  std::copy(g, g + B, G.begin() + 1);
  double sum_h = 0.0;  // the steps of dL/dh
  for (int64_t i = 0; i < m; ++i) {
    const double v = double(xs[i]), w = wt ? double(wt[i]) : 1.0;
    if (!(v > nd.lo && v < nd.hi)) {
      if (gx) gx[i] = 0.0f;
      if (gw) gw[i] = 0.0f;
      continue;
    }
    if (!std::isfinite(w)) {  // the walk's exact terms (an infinite weight times a zero density is no term)
      edges_1d_backward(a, walk, xs + i, wt + i, g, 1, gx ? gx + i : nullptr, gw ? gw + i : nullptr, gh, ge);
      continue;
    }
    double b[4];
    const int64_t p = hermite(nd, v, 1.0, b);
    auto at = [&](const double* V) { return b[0] * V[2 * p] + b[1] * V[2 * p + 1] + b[2] * V[2 * p + 2] + b[3] * V[2 * p + 3]; };
    if (gx || gh) {
      // From the node's cuts, the edges between x_p and x (where bins are narrower than s: a few).
      int64_t ka = nd.cuts[2 * p], kb = nd.cuts[2 * p + 1];
      while (e[ka] <= v - reach) ++ka;
      while (e[kb] < v + reach) ++kb;
      const double below = G[ka], above = G[kb];
      if (gx) gx[i] = float(w * (at(vx) - step * (below - above)));
      sum_h += w * (below + above);
    }
    if (gw) gw[i] = float(at(vw));
    if (AB) {
      double* o = AB + 2 * p;
      o[0] += w * b[0], o[1] += w * b[1], o[2] += w * b[2], o[3] += w * b[3];
    }
  }
  if (gh) *gh += a.support * step * sum_h;
}

SOFTHIST_HOT void edges_1d_nodes_sums(const Axis& a, const EdgeNodes& nd, const double* g, const double* AB, double* gh, double* ge) {
  const int64_t B = a.bins, L = nd.L;
  const double ih = 1.0 / a.h, TfT = a.support * nd.fT;
  double sum_h = 0.0, below = 0.0;  // below: the A_p of the nodes under the current row
  int64_t p = 0;
  for (int64_t k = 0; k <= B; ++k) {
    const double D = (k > 0 ? g[k - 1] : 0.0) - (k < B ? g[k] : 0.0);
    for (; gh && p < nd.first[k]; ++p) below += AB[2 * p];
    const double* ab = AB + 2 * nd.first[k];
    if (ge) ge[k] += D * ih * dot(ab, nd.dens.data() + 2 * k * L, 2 * L);
    if (gh) sum_h -= D * ih * (dot(ab, nd.zdens.data() + 2 * k * L, 2 * L) + 2.0 * TfT * below);
  }
  if (gh) *gh += sum_h;
}

}  // namespace softhist::native
