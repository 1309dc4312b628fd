// The windows of a block of samples along one axis (see windows.h), for each strategy.
#include "windows.h"

#include "kernels.h"
#include "simd.h"

namespace softhist::native {

// out[i, :] = factor * (row q_i at t_i) for a (Q, 2, w8) float table.
SOFTHIST_HOT void lerp_rows(const float* tab, int64_t w8, const int32_t* q, const float* t, int64_t m, double factor, double* out) {
  for (int64_t i = 0; i < m; ++i) {
    const float* row = tab + int64_t(q[i]) * 2 * w8;
    for (int64_t j = 0; j < w8; j += 8) SOFTHIST_AT8(out + i * w8 + j) = factor * SOFTHIST_LERP8F(row, w8, j, t[i]);
  }
}

AxisWindows::AxisWindows(const Axis& a, int64_t block)
    : first(block), mass(block * a.cells + 8), dx(block * a.cells), dh(block * a.cells), q(block), t(block) {
  if (a.kind == EXACT_UNIFORM || a.kind == EXACT_EDGES)  // slack for the eight-wide writes and reads below
    z.resize(block * a.width + 8), cdf.resize(block * a.width + 8), dens.resize(block * a.width);
  if (a.kind == EXACT_EDGES || a.kind == HARD) search.reset(new EdgeSearch(a.edges, a.bins));
  if (a.kind == EXACT_EDGES) own.resize(block), packed.resize(2 * (block * a.width + 8) + 8);
  const bool exact = a.kind == EXACT_UNIFORM || a.kind == EXACT_EDGES;
  if (exact && a.membership == CENTER) {
    zc.resize(block * a.cells), fc.resize(block * a.cells), dfc.resize(block * a.cells);
    packed.resize(std::max<size_t>(packed.size(), block * a.cells));  // the bins' Delta/h
  }
  if (exact && (a.membership == CENTER || a.normalize)) lo.resize(block * a.cells), hi.resize(block * a.cells);
}

// Centre membership: bin p of a window holds a_p = s_p f(c_p) with s_p = Delta_p / h and
// c_p = (centre - x)/h, the midpoint of its edges' z. With d(c_p)/dx = -1/h, d(c_p)/dh = -c_p/h,
// d(s_p)/dh = -s_p/h, and the centre and width moving by 1/2 and -1 (lower edge) or +1 (upper):
//   da/dx = -s f'(c) / h,  da/dh = -s (f(c) + c f'(c)) / h,
//   da/de_lo = (-f(c) + s f'(c) / 2) / h,  da/de_hi = (f(c) + s f'(c) / 2) / h.
// Every bin of the window is evaluated (a bin past the sample's support has f(c) = 0).
SOFTHIST_HOT void centre_windows(const Axis& a, int64_t m, AxisWindows& w, Wants want) {
  const int64_t K = a.width, C = a.cells;
  const double inv_h = 1.0 / a.h, uniform_span = 1.0 / (a.h * a.scale);  // Delta/h of equal-width bins
  const double* __restrict z = w.z.data();
  double* __restrict zc = w.zc.data();
  double* __restrict span = w.packed.data();
  // Explicit edges: only the bins of each sample's own support (p + 1 < own, as for masses),
  // packed, then spread back into the window with zeros past them.
  const bool packed = a.kind == EXACT_EDGES;
  int64_t n = 0;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t c = packed ? std::clamp<int64_t>(w.own[i] - 1, 0, C) : C;
    const double* e = packed ? a.edges + w.first[i] : nullptr;
    const double* zi = z + i * K;
#pragma omp simd
    for (int64_t p = 0; p < c; ++p) {
      zc[n + p] = 0.5 * (zi[p] + zi[p + 1]);
      span[n + p] = e ? (e[p + 1] - e[p]) * inv_h : uniform_span;
    }
    n += c;
  }
  // Values and derivatives at packed index j; each output is spread back at once (in place,
  // last sample first: a sample's packed start is at or before its window's).
  auto spread = [&](double* out) {
    if (!packed) return;
    for (int64_t i = m - 1, at = n; i >= 0; --i) {
      const int64_t c = std::clamp<int64_t>(w.own[i] - 1, 0, C);
      at -= c;
      for (int64_t p = C - 1; p >= 0; --p) out[i * C + p] = p < c ? out[at + p] : 0.0;
    }
  };
  double* __restrict f = w.fc.data();
  double* __restrict df = w.dfc.data();
  eval_pdf(a.kernel, zc, f, n);
  double* __restrict mass = w.mass.data();
  if (want.mass) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) mass[j] = span[j] * f[j];
    spread(mass);
  }
  if (!(want.x || want.h || want.edges)) return;
  eval_dpdf(a.kernel, zc, df, n);
  double* __restrict dx = w.dx.data();
  double* __restrict dh = w.dh.data();
  double* __restrict lo = w.lo.data();
  double* __restrict hi = w.hi.data();
  if (want.edges) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) lo[j] = (0.5 * span[j] * df[j] - f[j]) * inv_h, hi[j] = (0.5 * span[j] * df[j] + f[j]) * inv_h;
    spread(lo), spread(hi);
  }
  if (want.x) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dx[j] = -span[j] * df[j] * inv_h;
    spread(dx);
  }
  if (want.h) {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) dh[j] = -span[j] * (f[j] + zc[j] * df[j]) * inv_h;
    spread(dh);
  }
}

// Per-sample normalization: n_p = a_p / S with S = sum_q a_q over the sample's window (every cell
// it reaches; a cell is a product over axes, so the cells' sum is the product of the axes' sums and
// normalizing each axis normalizes the cells). The quotient rule, for any parameter t:
//   dn_p/dt = (da_p/dt - n_p dS/dt) / S,   dS/dt = sum_q da_q/dt,
// so the x and h rows become (d_p - n_p sum_q d_q) / S. An edge e_q moves bin q - 1 (its upper
// edge), bin q (its lower edge) and S through both: with lo_p = da_p/de_p and hi_p = da_p/de_{p+1}
// divided by S here, dL/de_q = w ((A_{q-1} - Abar) hi_{q-1} + (A_q - Abar) lo_q), with A_p = dL/dn_p / w
// and Abar = sum_p n_p A_p (the backward pass, soft_backward.cpp). S = 0 (the sample reaches no
// cell): every value and derivative 0, so the sample adds nothing and gets a zero gradient.
SOFTHIST_HOT void normalize_windows(const Axis& a, int64_t m, AxisWindows& w, Wants want) {
  const int64_t K = a.width, C = a.cells;
  const double inv_h = 1.0 / a.h;
  for (int64_t i = 0; i < m; ++i) {
    double* mass = w.mass.data() + i * C;
    double S = 0.0;
    for (int64_t p = 0; p < C; ++p) S += mass[p];
    const double inv = S != 0.0 ? 1.0 / S : 0.0;
    for (int64_t p = 0; p < C; ++p) mass[p] *= inv;
    for (double* d : {want.x ? w.dx.data() : nullptr, want.h ? w.dh.data() : nullptr}) {
      if (!d) continue;
      d += i * C;
      double sum = 0.0;
      for (int64_t p = 0; p < C; ++p) sum += d[p];
      for (int64_t p = 0; p < C; ++p) d[p] = (d[p] - mass[p] * sum) * inv;
    }
    if (want.edges) {
      double *lo = w.lo.data() + i * C, *hi = w.hi.data() + i * C;
      if (a.membership == MASS) {  // lo_p = -f(z_p)/h, hi_p = f(z_{p+1})/h, from the edges' densities
        const double* f = w.dens.data() + i * K;
        for (int64_t p = 0; p < C; ++p) lo[p] = -f[p] * inv_h * inv, hi[p] = f[p + 1] * inv_h * inv;
      } else {
        for (int64_t p = 0; p < C; ++p) lo[p] *= inv, hi[p] *= inv;
      }
    }
  }
}

// The windows' values (and derivatives) as the axis's membership defines them, not normalized.
SOFTHIST_HOT void window_values(const Axis& a, const double* xs, int64_t m, AxisWindows& w, uint8_t* valid, Wants want) {
  // Raw, unaliased pointers: stores through the vectors would make the compiler reload them.
  int32_t* __restrict first = w.first.data();
  const double B = double(a.bins), lo = a.lo, scale = a.scale;
  if (a.kind == TABLE) {
    const TableGrid grid(a);
    int32_t* __restrict q = w.q.data();
    float* __restrict t = w.t.data();
    if (grid.pieces) {
      for (int64_t i = 0; i < m; ++i) valid[i] &= uint8_t(grid.locate_pieces(xs[i], first[i], q[i], t[i]));
    } else {
#pragma omp simd
      for (int64_t i = 0; i < m; ++i) valid[i] &= uint8_t(grid.locate(xs[i], first[i], q[i], t[i]));
    }
    if (want.mass) lerp_rows(a.mass, a.cells, q, t, m, 1.0, w.mass.data());
    if (want.x) lerp_rows(a.du, a.cells, q, t, m, scale, w.dx.data());
    if (want.h) lerp_rows(a.dhb, a.cells, q, t, m, scale, w.dh.data());
    return;
  }
  if (a.kind == HARD) {  // the indicator of the sample's bin, e_k <= x < e_{k+1} (the last bin closed)
    const double* e = a.edges;
    const EdgeSearch& search = *w.search;
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
  int32_t* __restrict own = w.own.data();
  if (a.kind == EXACT_UNIFORM) {
    const double hb = a.h * scale, reach = a.support * hb, inv_hb = 1.0 / hb, last = double(a.bins + 1 - K);
    for (int64_t i = 0; i < m; ++i) {
      double u = (xs[i] - lo) * scale;
      bool ok = u > -reach && u < B + reach;
      u = ok ? u : 0.0;
      double s = clamp(std::floor(u - reach), 0.0, last);
      first[i] = int32_t(s);
      if (K <= 8) {  // eight at once: the K values, then slots the next sample overwrites (z has slack)
        const v8d iota = {0, 1, 2, 3, 4, 5, 6, 7};
        SOFTHIST_AT8(z + i * K) = ((s + iota) - u) * inv_hb;
      } else {
        for (int64_t p = 0; p < K; ++p) z[i * K + p] = (s + double(p) - u) * inv_hb;
      }
      valid[i] &= uint8_t(ok);
    }
  } else {
    const double* e = a.edges;
    const double reach = a.support * a.h, inv_h = 1.0 / a.h;
    const EdgeSearch& search = *w.search;
    // The window is as wide as the narrowest bins need; this sample's own support ends at the
    // first edge with z >= T, and every edge after it has the same F (clamped at T) and f = 0.
    // Only the first `own` edges are evaluated: their z, packed sample after sample, are
    // computed eight at a time until a group holds an edge at or past T (the packed buffer has
    // 8 doubles of slack; a group's values past own are overwritten by the next sample's).
    const double T = a.support;
    double* __restrict zp = w.packed.data();
    for (int64_t i = 0, total = 0; i < m; ++i) {
      double v = xs[i];
      bool ok = v > e[0] - reach && v < e[a.bins] + reach;
      v = ok ? v : e[0];
      int64_t s = std::isfinite(reach) ? search.last_at_or_below(v - reach) : 0;  // a kernel never cut: the whole axis
      s = std::min(std::max<int64_t>(s, 0), a.bins + 1 - K);
      first[i] = int32_t(s);
      valid[i] &= uint8_t(ok);
      if (K <= 2 || a.membership == CENTER) {  // centre windows read each sample's z in its window's place
        for (int64_t p = 0; p < K; ++p) z[i * K + p] = (e[s + p] - v) * inv_h;
        // Its own support ends at the first edge at or past v + T h.
        const int64_t end = std::isfinite(reach) ? std::min(search.last_at_or_below(v + reach) + 1, a.bins) : a.bins;
        own[i] = int32_t(std::min(std::max<int64_t>(end - s + 1, 1), K));
        continue;
      }
      const double* es = e + s;
      double* out = zp + total;
      int64_t inside = 0;  // edges with z < T
      for (int64_t p = 0; p < K; p += 8) {
        int64_t count = 0;
        if (p + 8 <= K) {
          const v8d zs = (SOFTHIST_LOAD8(es + p) - v) * inv_h;
          SOFTHIST_AT8(out + p) = zs;
          for (int k = 0; k < 8; ++k) count += zs[k] < T;
        } else {
          for (int64_t k = p; k < K; ++k) count += (out[k] = (es[k] - v) * inv_h) < T;
        }
        inside += count;
        if (count < std::min<int64_t>(8, K - p)) break;
      }
      own[i] = int32_t(std::min(inside + 1, K));
      total += own[i];
    }
  }
  if (a.membership == CENTER) return centre_windows(a, m, w, want);
  if (a.kind == EXACT_EDGES && K > 2) {
    // Non-uniform edges: the kernel at each sample's own edges only, packed (z above, then F or f);
    // past them F holds its last value and f is 0, exactly what every later edge gives, so a
    // window bin p has mass and derivatives only while p + 1 < own. The buffers have 8 doubles
    // of slack: packing copies whole groups of 8, and the selects below read past a sample's own.
    double* __restrict zp = w.packed.data();
    double* __restrict vp = zp + m * K + 8;
    int64_t total = 0;
    for (int64_t i = 0; i < m; ++i) total += own[i];
    if (want.mass) {
      double* __restrict mass = w.mass.data();
      std::copy(zp, zp + total, vp);
      eval_cdf(a.kernel, vp, total);
      for (int64_t i = 0, at = 0; i < m; at += own[i], ++i) {
        const double* F = vp + at;
        const int64_t o = own[i];
#pragma omp simd
        for (int64_t p = 0; p < C; ++p) mass[i * C + p] = p + 1 < o ? F[p + 1] - F[p] : 0.0;
      }
    }
    if (want.x || want.h || want.edges) {
      eval_pdf(a.kernel, zp, vp, total);
      const double inv_h = 1.0 / a.h;
      double* __restrict dx = w.dx.data();
      double* __restrict dh = w.dh.data();
      double* __restrict dens = w.dens.data();
      for (int64_t i = 0, at = 0; i < m; at += own[i], ++i) {
        const double *f = vp + at, *zi = zp + at;
        const int64_t o = own[i];
        if (want.x)
#pragma omp simd
          for (int64_t p = 0; p < C; ++p) dx[i * C + p] = p + 1 < o ? -(f[p + 1] - f[p]) * inv_h : 0.0;
        if (want.h)
#pragma omp simd
          for (int64_t p = 0; p < C; ++p) dh[i * C + p] = p + 1 < o ? -(zi[p + 1] * f[p + 1] - zi[p] * f[p]) * inv_h : 0.0;
        if (want.edges)
#pragma omp simd
          for (int64_t p = 0; p < K; ++p) dens[i * K + p] = p < o ? f[p] : 0.0;
      }
    }
    return;
  }
  if (want.mass) {  // F at the K edges, differenced into K - 1 bin masses
    double* __restrict F = w.cdf.data();
    double* __restrict mass = w.mass.data();
    std::copy(z, z + m * K, F);
    eval_cdf(a.kernel, F, m * K);
    if (C <= 8) {  // eight at once, as z above (mass and F have slack)
      for (int64_t i = 0; i < m; ++i) SOFTHIST_AT8(mass + i * C) = SOFTHIST_LOAD8(F + i * K + 1) - SOFTHIST_LOAD8(F + i * K);
    } else {
      for (int64_t i = 0; i < m; ++i)
        for (int64_t p = 0; p + 1 < K; ++p) mass[i * C + p] = F[i * K + p + 1] - F[i * K + p];
    }
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

void axis_windows(const Axis& a, const double* xs, int64_t m, AxisWindows& w, uint8_t* valid, Wants want) {
  const bool normalize = a.normalize && (a.kind == EXACT_UNIFORM || a.kind == EXACT_EDGES);
  window_values(a, xs, m, w, valid, normalize ? Wants{true, want.x, want.h, want.edges} : want);
  if (normalize) normalize_windows(a, m, w, want);
}

}  // namespace softhist::native
